//! The LUN life cycle (Mode A) in the simulated kernel: create by every
//! naming form with the device's identity mirrored, remove, modify, the
//! refusals and their exact error strings, removal with commands in flight,
//! and no leaks.

use simkern::ctl::{self, Reply, Request};
use simkern::{Config, Machine, malloc, sys};

fn create(options: &[(&str, &str)]) -> Reply {
    let req = Request::Create { device_type: 0, size: 0, blocksize: 0, lun_id: None, serial: None, device_id: None };
    ctl::lun_request("passthrough", &req, options)
}

fn remove(lun_id: u32) -> Reply {
    ctl::lun_request("passthrough", &Request::Remove { lun_id }, &[])
}

#[test]
fn smoke() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    let r = create(&[("device", "da0")]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    let lun = r.created.unwrap().3;
    let inq = ctl::command(lun, &[0x12, 0, 0, 0, 96, 0], 96);
    assert_eq!(inq.status, 0, "{inq:?}");
    assert_eq!(&inq.data[8..16], b"SEAGATE ");
    let ua = ctl::command(lun, &[0, 0, 0, 0, 0, 0], 0);
    assert_eq!((ua.status, ua.sense[12], ua.sense[13]), (2, 0x29, 0x01), "power on");
    let ss = ctl::command(lun, &[0x1b, 0, 0, 0, 0, 0], 0);
    assert_eq!(ss.status, 0, "{ss:?}");
    let tur = ctl::command(lun, &[0, 0, 0, 0, 0, 0], 0);
    assert_eq!(tur.status, 2, "{tur:?}");
    let ss = ctl::command(lun, &[0x1b, 0, 0, 0, 1, 0], 0);
    assert_eq!(ss.status, 0, "{ss:?}");
    let tur = ctl::command(lun, &[0, 0, 0, 0, 0, 0], 0);
    assert_eq!(tur.status, 0, "{tur:?}");
    println!("{}", ctl::lun_list_xml());
    assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    m.kldunload().unwrap();
    assert_eq!(malloc::leaks(), Vec::<String>::new());
}

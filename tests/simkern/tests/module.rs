//! Loading and unloading ctlpass.ko in the simulated kernel: what attaches,
//! what detaches, what is refused, and that memory balances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use simkern::cam::{self, DeviceSpec, PeriphHold};
use simkern::devices::{Identity, RamDisk};
use simkern::{Config, Machine, ctl, linker, malloc, sys, sysctl};

const STANDARD_DEVLIST_LOADED: &str = "\
<SEAGATE ST4000NM0023 0004>        at scbus0 target 0 lun 0 (ctlpass0,da0,pass0)
<ATA Samsung SSD 870 2B6Q>         at scbus0 target 1 lun 0 (ctlpass1,da1,pass1)
<TSSTcorp CDDVDW SH-224DB SB00>    at scbus1 target 0 lun 0 (ctlpass2,cd0,pass2)
<FREEBSD CTLDISK 0001>             at scbus2 target 0 lun 0 (da2,pass3)
";

const STANDARD_DEVLIST_UNLOADED: &str = "\
<SEAGATE ST4000NM0023 0004>        at scbus0 target 0 lun 0 (da0,pass0)
<ATA Samsung SSD 870 2B6Q>         at scbus0 target 1 lun 0 (da1,pass1)
<TSSTcorp CDDVDW SH-224DB SB00>    at scbus1 target 0 lun 0 (cd0,pass2)
<FREEBSD CTLDISK 0001>             at scbus2 target 0 lun 0 (da2,pass3)
";

fn softc_size() -> u64 {
    std::mem::size_of::<ctlpass::periph::Softc>() as u64
}

/// The backend's sysctl context (`kern.cam.ctl.passthrough`), allocated at
/// load besides the softcs.
fn sysctl_ctx_size() -> u64 {
    std::mem::size_of::<ctlpass::sys::sysctl_ctx_list>() as u64
}

fn disk(serial: &str) -> DeviceSpec {
    let id = Identity {
        vendor: "HGST".into(),
        product: "HUH721212AL5200".into(),
        revision: "A3D0".into(),
        serial: serial.into(),
        naa: Some(0x5000_cca2_7b1c_0001),
        eui64: None,
    };
    DeviceSpec {
        target: 2,
        lun: 0,
        device: Arc::new(RamDisk::new(id, 1024, 512)),
    }
}

#[test]
fn load_attaches_to_every_scsi_device_but_ctls_own() {
    let m = Machine::boot(Config::standard());
    assert_eq!(m.devlist(), STANDARD_DEVLIST_UNLOADED);
    m.kldload().unwrap();
    assert_eq!(m.devlist(), STANDARD_DEVLIST_LOADED);
    assert_eq!(
        cam::periphs("ctlpass"),
        vec![(0, 0, 0, 0, 1, true), (1, 0, 1, 0, 1, true), (2, 1, 0, 0, 1, true)],
        "one valid periph per device, with only CAM's initial reference"
    );
    assert_eq!(m.modules(), ["kernel", "cam", "ctl", "ctlpass_backend", "ctlpass"]);
    assert_eq!(ctl::backends(), ["block", "ramdisk", "passthrough"]);
    let node = sysctl::list("kern.cam.ctl.passthrough");
    assert!(node[0].node);
    assert_eq!(node[0].descr, "CTL pass-through backend (ctlpass)");
    let dmesg = m.dmesg();
    assert!(dmesg.contains("ctlpass0: <SEAGATE ST4000NM0023 0004> Direct Access at scbus0 target 0 lun 0 (mpr0)\n"));
    assert!(dmesg.contains("ctlpass2: <TSSTcorp CDDVDW SH-224DB SB00> CD-ROM at scbus1 target 0 lun 0 (ahcich2)\n"));
    let stats = malloc::stats("ctlpass").expect("MALLOC_DEFINE registered the type");
    assert_eq!(
        (stats.in_use, stats.bytes, stats.requests),
        (4, 3 * softc_size() + sysctl_ctx_size(), 4),
        "three softcs and the sysctl context"
    );
}

#[test]
fn unload_detaches_everything_and_frees_all_memory() {
    let m = Machine::boot(Config::standard());
    let cam_periphs_before = malloc::stats("CAM periph").unwrap().in_use;
    m.kldload().unwrap();
    assert_eq!(malloc::stats("CAM periph").unwrap().in_use, cam_periphs_before + 3);
    m.kldunload().unwrap();
    assert_eq!(m.devlist(), STANDARD_DEVLIST_UNLOADED);
    assert!(cam::periphs("ctlpass").is_empty());
    assert!(!cam::driver_registered("ctlpass"));
    assert_eq!(ctl::backends(), ["block", "ramdisk"]);
    assert_eq!(m.modules(), ["kernel", "cam", "ctl"]);
    assert!(sysctl::list("kern.cam.ctl.passthrough").is_empty());
    assert_eq!(
        malloc::stats("ctlpass"),
        None,
        "MALLOC_DEFINE's type is destroyed at unload"
    );
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    assert_eq!(malloc::stats("CAM periph").unwrap().in_use, cam_periphs_before);
    for unit in 0..3 {
        assert!(m.dmesg().contains(&format!("ctlpass{unit}: detached\n")));
    }
}

#[test]
fn reload_works_and_allocations_balance_every_time() {
    let m = Machine::boot(Config::standard());
    for round in 0..3 {
        m.kldload().unwrap_or_else(|e| panic!("load {round}: errno {e}"));
        assert_eq!(m.devlist(), STANDARD_DEVLIST_LOADED, "round {round}");
        let stats = malloc::stats("ctlpass").unwrap();
        assert_eq!(
            (stats.in_use, stats.requests),
            (4, 4),
            "round {round}: softcs and the sysctl context"
        );
        m.kldunload().unwrap_or_else(|e| panic!("unload {round}: errno {e}"));
        assert_eq!(m.devlist(), STANDARD_DEVLIST_UNLOADED, "round {round}");
    }
    assert_eq!(malloc::leaks(), Vec::<String>::new());
}

#[test]
fn load_twice_and_unload_when_absent_are_refused() {
    let m = Machine::boot(Config::standard());
    assert_eq!(m.kldunload(), Err(sys::ENOENT as i32));
    m.kldload().unwrap();
    assert_eq!(m.kldload(), Err(sys::EEXIST as i32));
    assert_eq!(
        m.devlist(),
        STANDARD_DEVLIST_LOADED,
        "a refused second load changes nothing"
    );
}

#[test]
fn load_without_ctl_is_refused() {
    let m = Machine::boot(Config {
        ctl: false,
        ..Config::standard()
    });
    assert_eq!(m.kldload(), Err(sys::ENOENT as i32));
    assert!(
        m.dmesg()
            .contains("KLD ctlpass.ko: depends on ctl - not available or version mismatch\n")
    );
    assert!(!linker::is_loaded());
    assert_eq!(m.devlist(), STANDARD_DEVLIST_UNLOADED);
}

#[test]
fn a_backend_name_clash_leaves_the_periph_driver_working() {
    let m = Machine::boot(Config {
        extra_backends: vec!["passthrough"],
        ..Config::standard()
    });
    m.kldload().expect("the file loads even when one of its modules fails");
    let dmesg = m.dmesg();
    assert!(
        dmesg.contains("module_register_init: MOD_LOAD (ctlpass_backend,"),
        "{dmesg}"
    );
    assert!(dmesg.contains(") error -1\n"), "{dmesg}");
    assert!(
        dmesg.contains("passthrough backend shutdown error: 6\n"),
        "the backend refuses the MOD_UNLOAD that follows a failed registration: {dmesg}"
    );
    assert_eq!(m.modules(), ["kernel", "cam", "ctl", "ctlpass"]);
    assert_eq!(
        ctl::backends(),
        ["block", "ramdisk", "passthrough"],
        "the other backend is untouched"
    );
    assert_eq!(m.devlist(), STANDARD_DEVLIST_LOADED);
    m.kldunload().unwrap();
    assert_eq!(m.devlist(), STANDARD_DEVLIST_UNLOADED);
    assert_eq!(malloc::leaks(), Vec::<String>::new());
}

#[test]
fn devices_that_come_and_go_are_attached_and_detached() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    m.plug(0, disk("8DHKZ1AB"));
    assert!(
        m.devlist()
            .contains("<HGST HUH721212AL5200 A3D0>        at scbus0 target 2 lun 0 (ctlpass3,da3,pass4)\n")
    );
    m.unplug(0, 2, 0);
    assert!(!m.devlist().contains("HGST"));
    assert!(m.dmesg().contains("ctlpass3: detached\n"));
    assert_eq!(cam::periphs("ctlpass").len(), 3);
    m.plug(0, disk("8DHKZ1AB"));
    assert!(
        m.devlist().contains("(ctlpass3,da3,pass4)"),
        "the freed unit number is used again"
    );
    assert_eq!(
        malloc::stats("ctlpass").unwrap().in_use,
        5,
        "four softcs and the sysctl context"
    );
}

#[test]
fn a_device_back_while_its_old_periph_is_referenced_attaches_when_released() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    let hold = PeriphHold::acquire("ctlpass", 0).unwrap();
    m.unplug(0, 0, 0);
    assert_eq!(
        cam::periphs("ctlpass")[0],
        (0, 0, 0, 0, 1, false),
        "invalid, alive through our reference"
    );
    assert_eq!(
        PeriphHold::acquire("ctlpass", 0).err(),
        Some(sys::ENOENT as i32),
        "no new references once invalid"
    );
    m.plug(
        0,
        DeviceSpec {
            target: 0,
            ..disk("NEWDISK1")
        },
    );
    // FreeBSD lists invalidated periphs too: only the old ctlpass0 is there.
    assert!(
        m.devlist()
            .contains("<HGST HUH721212AL5200 A3D0>        at scbus0 target 0 lun 0 (da0,pass0,ctlpass0)\n")
    );
    assert_eq!(
        cam::periphs("ctlpass")[0],
        (0, 0, 0, 0, 1, false),
        "ctlpass's attachment is deferred"
    );
    drop(hold);
    assert!(m.dmesg().contains("ctlpass0: detached\n"));
    assert!(
        m.devlist().contains("at scbus0 target 0 lun 0 (ctlpass0,da0,pass0)\n"),
        "{}",
        m.devlist()
    );
    assert_eq!(cam::periphs("ctlpass")[0], (0, 0, 0, 0, 1, true));
}

#[test]
fn unload_waits_for_periph_references_to_be_released() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    let hold = PeriphHold::acquire("ctlpass", 1).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let unloader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let r = linker::kldunload();
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !done.load(Ordering::SeqCst),
        "unload must not finish while a periph is referenced"
    );
    assert_eq!(
        cam::periphs("ctlpass"),
        vec![(1, 0, 1, 0, 1, false)],
        "only the referenced periph is left"
    );
    drop(hold);
    assert_eq!(unloader.join().unwrap(), Ok(()));
    assert_eq!(m.devlist(), STANDARD_DEVLIST_UNLOADED);
    assert_eq!(malloc::leaks(), Vec::<String>::new());
}

#[test]
fn lun_requests_answer_with_an_error_string() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    // The ioctl number the crate computes is the one the C macro gives.
    assert_eq!(ctlpass::kern::ctl::CTL_LUN_REQ, unsafe { sys::simkern_ctl_lun_req });
    let mut req: sys::ctl_lun_req = unsafe { std::mem::zeroed() };
    req.reqtype = sys::CTL_LUNREQ_CREATE;
    // SAFETY: a CTL_LUN_REQ with a request that lives for the call.
    let rc = unsafe {
        ctlpass::kern::entry::ctlpass_be_ioctl(
            std::ptr::null_mut(),
            ctlpass::kern::ctl::CTL_LUN_REQ,
            (&raw mut req).cast(),
            0,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "errors travel in the request, not as an errno");
    assert_eq!(req.status, sys::CTL_LUN_ERROR);
    let text = unsafe { std::ffi::CStr::from_ptr(req.error_str.as_ptr()) }
        .to_str()
        .unwrap();
    assert_eq!(
        text,
        "option \"device\" is required (e.g. device=da3), or \"cam\", \"devid\" or \"serial\" (cam=0:1:0, devid=naa.5000c500a1b2c3d4, serial=Z1Z3ABCD)"
    );
    // SAFETY: an unknown command with no argument.
    let rc = unsafe {
        ctlpass::kern::entry::ctlpass_be_ioctl(std::ptr::null_mut(), 0, std::ptr::null_mut(), 0, std::ptr::null_mut())
    };
    assert_eq!(rc, sys::ENOTTY as i32);
}

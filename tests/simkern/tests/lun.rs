//! The LUN life cycle (Mode A) in the simulated kernel: a LUN shows its
//! device's identity to initiators, is created by every naming form,
//! removed (also with commands in flight) and modified; bad requests are
//! refused with their exact error strings; nothing leaks.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use simkern::ctl::{self, Reply, Request, Response};
use simkern::devices::{Cdrom, Command, Identity as DeviceIdentity, OtherType, RamDisk, ScsiDevice};
use simkern::remote::{Gated, IscsiDevice};
use simkern::{Config, Machine, malloc, sys};

// --- what an initiator sees ---

/// The identity a LUN or a device shows an initiator, read with the same
/// commands from both.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// Peripheral device type and RMB.
    device_type: (u8, bool),
    vendor: String,
    product: String,
    revision: String,
    /// VPD page 0x80, trailing spaces trimmed (CTL pads to 16 bytes).
    serial: String,
    /// The logical unit's NAA designator from VPD page 0x83.
    naa: Option<Vec<u8>>,
    /// READ CAPACITY: last LBA, block length, physical block exponent.
    capacity: (u64, u32, u8),
    /// Block limits (VPD page 0xB0) that ctlpass mirrors, normalised where
    /// CTL says the same thing differently (see `limits`).
    limits: Option<Limits>,
}

/// The block limits an initiator uses to size its commands.
#[derive(Debug, PartialEq, Eq)]
struct Limits {
    optimal_transfer_length: u32,
    max_unmap_lba_count: u32,
    max_unmap_descriptors: u32,
    /// In blocks; 0 ("not reported") and 1 (one block) mean the same, and
    /// CTL can only say the former (its unmap block exponent 0).
    unmap_granularity: u32,
    /// 0 means "no limit reported"; CTL says u64::MAX.
    max_write_same: u64,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_string()
}

/// Reads the identity through `run`, which sends a CDB and returns the
/// status and data.  A unit attention (power on, capacity change) is
/// reported once, as initiators see it, and retried.
fn seen(run: &dyn Fn(&[u8], usize) -> Response) -> Seen {
    let cmd = |cdb: &[u8], len: usize| {
        for _ in 0..3 {
            let r = run(cdb, len);
            if !(r.status == 2 && r.sense.get(2).is_some_and(|k| k & 0x0f == 6)) {
                return r;
            }
        }
        panic!("unit attention after three tries");
    };
    let inq = cmd(&[0x12, 0, 0, 0, 96, 0], 96);
    assert_eq!(inq.status, 0, "INQUIRY: {inq:?}");
    let vpd = |page: u8| {
        let r = cmd(&[0x12, 1, page, 1, 0, 0], 256);
        (r.status == 0).then_some(r.data)
    };
    let serial = vpd(0x80)
        .map(|p| text(&p[4..4 + usize::from(p[3])]).trim_start().to_string())
        .unwrap_or_default();
    let naa = vpd(0x83).and_then(|p| {
        let mut d = &p[4..];
        while d.len() >= 4 {
            let (len, association, kind) = (usize::from(d[3]), (d[1] >> 4) & 3, d[1] & 0x0f);
            if association == 0 && kind == 3 {
                return Some(d[4..4 + len].to_vec());
            }
            d = &d[4 + len..];
        }
        None
    });
    let rc16 = cmd(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], 32);
    let capacity = if rc16.status == 0 {
        (be64(&rc16.data), be32(&rc16.data[8..]), rc16.data[13] & 0x0f)
    } else {
        let rc10 = cmd(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
        assert_eq!(rc10.status, 0, "READ CAPACITY(10): {rc10:?}");
        (u64::from(be32(&rc10.data)), be32(&rc10.data[4..]), 0)
    };
    let limits = (inq.data[0] & 0x1f == 0).then(|| vpd(0xb0)).flatten().map(|p| {
        let p = [p, vec![0; 64]].concat();
        let max_write_same = be64(&p[36..]);
        Limits {
            optimal_transfer_length: be32(&p[12..]),
            max_unmap_lba_count: be32(&p[20..]),
            max_unmap_descriptors: be32(&p[24..]),
            unmap_granularity: be32(&p[28..]).max(1),
            max_write_same: if max_write_same == 0 { u64::MAX } else { max_write_same },
        }
    });
    Seen {
        device_type: (inq.data[0] & 0x1f, inq.data[1] & 0x80 != 0),
        vendor: text(&inq.data[8..16]),
        product: text(&inq.data[16..32]),
        revision: text(&inq.data[32..36]),
        serial,
        naa,
        capacity,
        limits,
    }
}

/// What an initiator sees of a device, sending the commands to it directly.
fn device_seen(device: &dyn ScsiDevice) -> Seen {
    seen(&|cdb, len| {
        let mut data = vec![0; len];
        let o = device.execute(Command {
            cdb,
            data_out: &[],
            data_in: &mut data,
        });
        data.truncate(o.transferred);
        Response {
            status: o.status,
            sense: o.sense,
            data,
        }
    })
}

/// What an initiator sees of LUN `lun`, through CTL.
fn lun_seen(lun: u32) -> Seen {
    seen(&|cdb, len| ctl::command(lun, cdb, len))
}

// --- the machine ---

fn identity(vendor: &str, product: &str, serial: &str, naa: Option<u64>) -> DeviceIdentity {
    DeviceIdentity {
        vendor: vendor.into(),
        product: product.into(),
        revision: "0100".into(),
        serial: serial.into(),
        naa,
        eui64: None,
    }
}

/// A thin-provisioned disk with 4K physical blocks.
fn thin_disk() -> Arc<RamDisk> {
    let id = identity("SEAGATE", "ST4000NM0023", "Z1Z3ABCD", Some(0x5000_c500_a1b2_c3d4));
    Arc::new(RamDisk::new(id, 16384, 512).with_physical_exponent(3).with_unmap(true))
}

/// A 4Kn disk with a serial number longer than CTL keeps.
fn long_serial_disk() -> Arc<RamDisk> {
    let id = identity(
        "ATA",
        "Samsung SSD 870",
        "S6PXNM0T123456X78901",
        Some(0x5002_5388_a0b1_c2d3),
    );
    Arc::new(RamDisk::new(id, 2048, 4096))
}

fn dvd() -> Arc<Cdrom> {
    Arc::new(Cdrom::new(
        identity("TSSTcorp", "CDDVDW SH-224DB", "R8RS6GAB123456", None),
        Some(vec![0; 2048 * 64]),
    ))
}

/// Devices on one SAS bus (mpr0, scbus0, maxio 1 MiB), in target order:
/// da0, da1, cd0, a tape (sa0, pass3), and what a test adds.
fn machine(extra: Vec<Arc<dyn ScsiDevice>>) -> Machine {
    let tape = OtherType {
        disk: RamDisk::new(identity("HP", "Ultrium 6-SCSI", "HU1234ABCD", None), 16, 512),
        device_type: 0x01,
    };
    let mut devices: Vec<Arc<dyn ScsiDevice>> = vec![thin_disk(), long_serial_disk(), dvd(), Arc::new(tape)];
    devices.extend(extra);
    let m = Machine::boot(Config::one_bus(1 << 20, 32, devices));
    m.kldload().unwrap();
    m
}

/// Unloads the module and checks that nothing is left allocated.
fn shut_down(m: Machine) {
    assert_eq!(ctl::luns(), Vec::<u32>::new(), "every LUN removed");
    m.kldunload().unwrap();
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    drop(m);
}

// --- requests ---

fn create_with(req: Request, options: &[(&str, &str)]) -> Reply {
    ctl::lun_request("passthrough", &req, options)
}

fn create_request() -> Request {
    create_asking(0, 0, 0, None)
}

/// A create request with ctladm's `-t`, `-s`, `-B` and `-l`.
fn create_asking(device_type: u8, size: u64, blocksize: u32, lun_id: Option<u32>) -> Request {
    Request::Create {
        device_type,
        size,
        blocksize,
        lun_id,
        serial: None,
        device_id: None,
    }
}

/// Creates a LUN with `options`; returns its number.
fn create(options: &[(&str, &str)]) -> u32 {
    let r = create_with(create_request(), options);
    assert_eq!(
        (r.status, r.error.as_str()),
        (sys::CTL_LUN_OK, ""),
        "create {options:?}"
    );
    r.created.unwrap().3
}

/// The error string of a refused create.
fn refused(req: Request, options: &[(&str, &str)]) -> String {
    let r = create_with(req, options);
    assert_eq!(r.status, sys::CTL_LUN_ERROR, "create {options:?} should fail: {r:?}");
    assert_eq!(r.created, None);
    r.error
}

fn remove(lun_id: u32) -> Reply {
    ctl::lun_request("passthrough", &Request::Remove { lun_id }, &[])
}

fn modify(lun_id: u32, size: u64) -> Reply {
    ctl::lun_request("passthrough", &Request::Modify { lun_id, size }, &[])
}

/// The value of element `name` of LUN `lun` in `ctladm devlist -x`.
fn element(lun: u32, name: &str) -> Option<String> {
    let xml = ctl::lun_list_xml();
    let start = xml.find(&format!("<lun id=\"{lun}\">"))?;
    let body = &xml[start..xml[start..].find("</lun>")? + start];
    let open = format!("<{name}>");
    let from = body.find(&open)? + open.len();
    Some(body[from..from + body[from..].find('<')?].to_string())
}

// --- tests ---

#[test]
fn a_lun_shows_the_identity_of_its_emulated_device() {
    let (disk, long, cd) = (thin_disk(), long_serial_disk(), dvd());
    let m = machine(Vec::new());
    for (name, device) in [("da0", &*disk as &dyn ScsiDevice), ("da1", &*long), ("cd0", &*cd)] {
        let lun = create(&[("device", name)]);
        let (on_lun, on_device) = (lun_seen(lun), device_seen(device));
        if name == "da1" {
            // CTL keeps 16 bytes of serial number: the unique tail, and
            // lun_info says what the whole one is.
            assert_eq!(on_lun.serial, "NM0T123456X78901");
            assert_eq!(element(lun, "device_serial").as_deref(), Some("S6PXNM0T123456X78901"));
            assert_eq!(
                Seen {
                    serial: on_device.serial.clone(),
                    ..on_lun
                },
                on_device,
                "{name}"
            );
        } else {
            assert_eq!(on_lun, on_device, "{name}");
            assert_eq!(element(lun, "device_serial"), None);
        }
        assert_eq!(element(lun, "periph").as_deref(), Some(name));
        assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    }
    let expected = Seen {
        device_type: (0, false),
        vendor: "SEAGATE".into(),
        product: "ST4000NM0023".into(),
        revision: "0100".into(),
        serial: "Z1Z3ABCD".into(),
        naa: Some(vec![0x50, 0x00, 0xc5, 0x00, 0xa1, 0xb2, 0xc3, 0xd4]),
        capacity: (16383, 512, 3),
        limits: Some(Limits {
            optimal_transfer_length: 128,
            max_unmap_lba_count: u32::MAX,
            max_unmap_descriptors: 256,
            unmap_granularity: 1,
            max_write_same: u64::MAX,
        }),
    };
    assert_eq!(
        device_seen(&*disk),
        expected,
        "the comparison above compared these values"
    );
    shut_down(m);
}

#[test]
fn every_naming_form_finds_the_same_device() {
    let m = machine(Vec::new());
    let forms: &[&[(&str, &str)]] = &[
        &[("device", "da0")],
        &[("device", "/dev/da0")],
        &[("device", "pass0")],
        &[("device", "ctlpass0")],
        &[("device", "cam=0:0:0")],
        &[("device", "devid=naa.5000c500a1b2c3d4")],
        &[("device", "devid=NAA.5000C500A1B2C3D4")],
        &[("device", "serial=Z1Z3ABCD")],
        &[("file", "/dev/da0")],
        // ctladm cuts a value at its next '=': these forms are options.
        &[("cam", "0:0:0")],
        &[("devid", "naa.5000c500a1b2c3d4")],
        &[("serial", "Z1Z3ABCD")],
    ];
    for options in forms {
        let lun = create(options);
        assert_eq!(element(lun, "periph").as_deref(), Some("da0"), "{options:?}");
        assert_eq!(element(lun, "cam_path").as_deref(), Some("0:0:0"));
        assert_eq!(element(lun, "devid").as_deref(), Some("naa.5000c500a1b2c3d4"));
        assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    }
    let lun = create(&[("device", "cd0")]);
    assert_eq!(element(lun, "periph").as_deref(), Some("cd0"));
    assert_eq!(element(lun, "mode").as_deref(), Some("A"));
    assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    shut_down(m);
}

#[test]
fn remove_and_create_again_and_numbers_asked_for() {
    let m = machine(Vec::new());
    let a = create(&[("device", "da0")]);
    let b = create(&[("device", "da1")]);
    assert_eq!((a, b), (0, 1));
    assert_eq!(remove(a).status, sys::CTL_LUN_OK);
    assert_eq!(ctl::luns(), [1]);
    assert_eq!(create(&[("device", "da0")]), 0, "the lowest free number again");
    let asked = create_asking(0, 0, 0, Some(7));
    let r = create_with(asked, &[("device", "cd0")]);
    assert_eq!(r.created.as_ref().map(|c| c.3), Some(7), "{r:?}");
    for lun in [0, 1, 7] {
        assert_eq!(
            remove(lun),
            Reply {
                status: sys::CTL_LUN_OK,
                error: String::new(),
                created: None
            }
        );
    }
    let r = remove(1);
    assert_eq!(
        (r.status, r.error.as_str()),
        (sys::CTL_LUN_ERROR, "no passthrough LUN 1")
    );
    shut_down(m);
}

#[test]
fn what_create_reports_back() {
    let m = machine(Vec::new());
    let r = create_with(create_request(), &[("device", "da1")]);
    assert_eq!(r.status, sys::CTL_LUN_OK);
    let (lun_type, size, blocksize, lun, serial, devid) = r.created.unwrap();
    assert_eq!((lun_type, size, blocksize, lun), (0, 2048 * 4096, 4096, 0));
    assert_eq!(serial, "NM0T123456X78901");
    assert_eq!(devid, "S6PXNM0T123456X78901");
    assert_eq!(element(lun, "size").as_deref(), Some("2048"));
    assert_eq!(element(lun, "blocksize").as_deref(), Some("4096"));
    assert_eq!(element(lun, "serial_number").as_deref(), Some("NM0T123456X78901"));
    assert_eq!(element(lun, "vendor").as_deref(), Some("ATA"));
    assert_eq!(element(lun, "sim").as_deref(), Some("mpr0"));
    assert_eq!(element(lun, "maxio").as_deref(), Some("1048576"));
    assert_eq!(element(lun, "ctlpass").as_deref(), Some("ctlpass1"));
    assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    shut_down(m);
}

#[test]
fn administrator_options_win_over_the_device() {
    let m = machine(Vec::new());
    let lun = create(&[("device", "da0"), ("vendor", "ACME"), ("readonly", "on")]);
    let seen = lun_seen(lun);
    assert_eq!((seen.vendor.as_str(), seen.product.as_str()), ("ACME", "ST4000NM0023"));
    // WRITE(10) of one block: CTL refuses it before the backend sees it.
    let w = ctl::command(lun, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0);
    assert_eq!(
        (w.status, w.sense[2] & 0x0f, w.sense[12]),
        (2, 0x07, 0x27),
        "DATA PROTECT, WRITE PROTECTED"
    );
    assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    shut_down(m);
}

#[test]
fn refusals_say_exactly_why() {
    let m = machine(Vec::new());
    let sized = |size| create_asking(0, size, 0, None);
    let blocks = |blocksize| create_asking(0, 0, blocksize, None);
    assert_eq!(refused(create_request(), &[("device", "da9")]), "no SCSI device da9");
    assert_eq!(
        refused(create_request(), &[("device", "cam=0:9:0")]),
        "no SCSI device with cam=0:9:0"
    );
    assert_eq!(
        refused(create_request(), &[("device", "serial=NOSUCH")]),
        "no SCSI device with serial=NOSUCH"
    );
    assert_eq!(
        refused(create_request(), &[("vendor", "X")]),
        "option \"device\" is required (e.g. device=da3), or \"cam\", \"devid\" or \"serial\" (cam=0:1:0, devid=naa.5000c500a1b2c3d4, serial=Z1Z3ABCD)"
    );
    assert_eq!(
        refused(create_request(), &[("device", "da0"), ("readonly", "yes")]),
        "option \"readonly\": \"yes\" is not \"on\" or \"off\""
    );
    assert_eq!(
        refused(create_request(), &[("device", "da0"), ("file", "/dev/da1")]),
        "options \"device\" (da0) and \"file\" (/dev/da1) disagree: name the device once"
    );
    assert_eq!(
        refused(create_request(), &[("device", "sda")]),
        "option \"device\": invalid device name \"sda\": no unit number"
    );
    assert_eq!(
        refused(create_request(), &[("device", "pass3")]),
        "sa0 is a Sequential Access device; without the CTL patch (Mode B) only Direct Access and CD-ROM devices can be exported"
    );
    assert_eq!(
        refused(sized(1_000_000), &[("device", "da0")]),
        "size 1000000 does not match da0: 16384 blocks of 512 bytes (8388608 bytes)"
    );
    assert_eq!(
        refused(blocks(4096), &[("device", "da0"), ("strict", "on")]),
        "blocksize 4096 does not match da0's 512-byte blocks (strict=on)"
    );
    assert_eq!(
        refused(create_asking(5, 0, 0, None), &[("device", "da0")]),
        "device type 5 was asked for, but da0 is a Direct Access device (0)"
    );
    // The equal size, and a block size that differs, are accepted; the
    // latter with a warning, the device's geometry winning.
    let r = create_with(sized(8_388_608), &[("device", "da0")]);
    assert_eq!((r.status, r.error.as_str()), (sys::CTL_LUN_OK, ""));
    assert_eq!(
        refused(create_request(), &[("device", "da0")]),
        "da0 is already exported as LUN 0"
    );
    assert_eq!(
        refused(create_request(), &[("device", "pass0")]),
        "da0 is already exported as LUN 0"
    );
    let r = create_with(blocks(2048), &[("device", "da1")]);
    assert_eq!(
        (r.status, r.error.as_str()),
        (
            sys::CTL_LUN_WARNING,
            "blocksize 2048 ignored: da1 has 4096-byte blocks (strict=on refuses this)"
        )
    );
    assert_eq!(r.created.map(|c| (c.2, c.3)), Some((4096, 1)));
    let r = ctl::lun_request("nosuch", &create_request(), &[("device", "da0")]);
    assert_eq!(
        (r.status, r.error.as_str()),
        (sys::CTL_LUN_ERROR, "Backend \"nosuch\" not found.")
    );
    for lun in [0, 1] {
        assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    }
    shut_down(m);
}

#[test]
fn modify_follows_a_device_that_grew() {
    let disk = Arc::new(RamDisk::new(
        identity("NETAPP", "LUN C-Mode", "80ZXC+Q1", Some(0x600a_0980_3830_4d37)),
        4096,
        512,
    ));
    let m = machine(vec![disk.clone()]);
    // The fifth device on the bus is da2 (pass4).
    let lun = create(&[("device", "da2")]);
    assert_eq!(lun_seen(lun).capacity.0, 4095);
    disk.resize(8192);
    let r = modify(lun, 0);
    assert_eq!((r.status, r.error.as_str()), (sys::CTL_LUN_OK, ""));
    // Every initiator is told, once.
    let ua = ctl::command(lun, &[0, 0, 0, 0, 0, 0], 0);
    assert_eq!(
        (ua.sense[12], ua.sense[13]),
        (0x2a, 0x09),
        "CAPACITY DATA HAS CHANGED: {ua:?}"
    );
    assert_eq!(lun_seen(lun).capacity, (8191, 512, 0));
    assert_eq!(element(lun, "size").as_deref(), Some("8192"));
    let r = modify(lun, 1 << 20);
    assert_eq!(
        (r.status, r.error.as_str()),
        (
            sys::CTL_LUN_ERROR,
            "size 1048576 does not match da2: 8192 blocks of 512 bytes (4194304 bytes)"
        )
    );
    assert_eq!(modify(lun, 4_194_304).status, sys::CTL_LUN_OK, "the device's own size");
    let r = modify(9, 0);
    assert_eq!(
        (r.status, r.error.as_str()),
        (sys::CTL_LUN_ERROR, "no passthrough LUN 9")
    );
    assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    shut_down(m);
}

#[test]
fn start_stop_reaches_the_device_and_ctl_follows() {
    let m = machine(Vec::new());
    let lun = create(&[("device", "da0")]);
    let tur = || ctl::command(lun, &[0, 0, 0, 0, 0, 0], 0);
    assert_eq!(tur().sense[12..14], [0x29, 0x01], "power on, once");
    assert_eq!(tur().status, 0);
    assert_eq!(ctl::command(lun, &[0x1b, 0, 0, 0, 0, 0], 0).status, 0, "STOP");
    let t = tur();
    assert_eq!(
        (t.status, t.sense[2] & 0x0f, t.sense[12], t.sense[13]),
        (2, 0x02, 0x04, 0x02),
        "NOT READY, INITIALIZING COMMAND REQUIRED"
    );
    assert_eq!(ctl::command(lun, &[0x1b, 0, 0, 0, 1, 0], 0).status, 0, "START");
    assert_eq!(tur().status, 0);
    assert_eq!(
        ctl::command(lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0).status,
        0,
        "SYNCHRONIZE CACHE"
    );
    assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    shut_down(m);
}

#[test]
fn removing_a_lun_waits_for_its_commands_in_flight() {
    let gate = Arc::new(Gated::new(RamDisk::new(
        identity("IBM", "2145", "0200A0B1", Some(0x6005_0768_0000_0001)),
        1024,
        512,
    )));
    let m = machine(vec![gate.clone()]);
    let lun = create(&[("device", "da2")]);
    assert_eq!(ctl::command(lun, &[0, 0, 0, 0, 0, 0], 0).sense[12], 0x29);
    gate.close();
    let sync = thread::spawn(move || ctl::command(lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0));
    assert!(
        gate.wait_held(1, Duration::from_secs(10)),
        "SYNCHRONIZE CACHE reaches the device"
    );
    let remover = thread::spawn(move || remove(lun));
    thread::sleep(Duration::from_millis(300));
    assert!(!remover.is_finished(), "remove returns only after lun_shutdown");
    assert_eq!(ctl::luns(), [lun], "CTL keeps the LUN while its command is in flight");
    assert_eq!(m.kldunload(), Err(sys::EBUSY as i32), "a LUN exists: unload refused");
    gate.open();
    assert_eq!(
        sync.join().unwrap().status,
        0,
        "the command in flight completes normally"
    );
    assert_eq!(remover.join().unwrap().status, sys::CTL_LUN_OK);
    assert_eq!(ctl::luns(), Vec::<u32>::new());
    shut_down(m);
}

#[test]
fn an_interrupted_remove_leaves_the_rest_to_lun_shutdown() {
    let gate = Arc::new(Gated::new(RamDisk::new(
        identity("IBM", "2145", "0200A0B2", None),
        1024,
        512,
    )));
    let m = machine(vec![gate.clone()]);
    let lun = create(&[("device", "da2")]);
    assert_eq!(ctl::command(lun, &[0, 0, 0, 0, 0, 0], 0).sense[12], 0x29, "power on");
    gate.close();
    let start = thread::spawn(move || ctl::command(lun, &[0x1b, 0, 0, 0, 1, 0], 0));
    assert!(gate.wait_held(1, Duration::from_secs(10)));
    let remover = thread::spawn(move || remove(lun));
    thread::sleep(Duration::from_millis(200));
    // ^C in ctladm: the sleep in the ioctl ends.
    simkern::lock::post_signal();
    let r = remover.join().unwrap();
    assert_eq!(
        (r.status, r.error.as_str()),
        (
            sys::CTL_LUN_ERROR,
            "interrupted; LUN 0 will be removed when its last I/O completes"
        )
    );
    assert_eq!(ctl::luns(), [lun]);
    let again = remove(lun);
    assert_eq!(
        (again.status, again.error.as_str()),
        (sys::CTL_LUN_ERROR, "LUN 0 is being removed")
    );
    gate.open();
    assert_eq!(start.join().unwrap().status, 0, "START STOP UNIT completes");
    // CTL takes the LUN off its list, then calls lun_shutdown, which frees
    // the device: wait for both.
    let mut again = None;
    for _ in 0..100 {
        let r = create_with(create_request(), &[("device", "da2")]);
        if r.status == sys::CTL_LUN_OK {
            again = Some(r);
            break;
        }
        assert_eq!(r.error, "da2 is already exported as LUN 0");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        again.and_then(|r| r.created).map(|c| c.3),
        Some(0),
        "lun_shutdown finished the removal"
    );
    assert_eq!(remove(0).status, sys::CTL_LUN_OK);
    shut_down(m);
}

#[test]
fn unload_is_refused_while_luns_exist() {
    let m = machine(Vec::new());
    let lun = create(&[("device", "cd0")]);
    assert_eq!(m.kldunload(), Err(sys::EBUSY as i32));
    assert_eq!(m.modules().last().map(String::as_str), Some("ctlpass"), "still loaded");
    let again = create_with(create_request(), &[("device", "da0")]);
    assert_eq!(again.status, sys::CTL_LUN_OK, "and still serving requests");
    for lun in [lun, again.created.unwrap().3] {
        assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    }
    shut_down(m);
}

/// The real devices of a tgtd on 127.0.0.1, through libiscsi.
#[test]
fn a_lun_shows_the_identity_of_a_real_device() {
    let tgt = match iscsi_lun::Tgt::start() {
        Ok(t) => t,
        Err(e) => panic!("tgtd is needed (scripts/install-deps.sh installs it): {e}"),
    };
    let connect = |lun| Arc::new(IscsiDevice::connect(&tgt.url(lun)).unwrap());
    let (disk, tape, cd) = (
        connect(iscsi_lun::Tgt::DISK),
        connect(iscsi_lun::Tgt::TAPE),
        connect(iscsi_lun::Tgt::CD),
    );
    let m = machine(vec![disk.clone(), tape.clone(), cd.clone()]);
    // Targets 4, 5 and 6: da2, a tape (sa1, pass5), cd1.
    for (name, device) in [("da2", &*disk as &dyn ScsiDevice), ("cd1", &*cd)] {
        let lun = create(&[("device", name)]);
        assert_eq!(lun_seen(lun), device_seen(device), "{name}");
        assert_eq!(remove(lun).status, sys::CTL_LUN_OK);
    }
    let seen = device_seen(&*disk);
    assert_eq!((seen.vendor.as_str(), seen.capacity), ("CTLPASS", (131071, 512, 3)));
    assert_eq!(
        refused(create_request(), &[("device", "pass5")]),
        "sa1 is a Sequential Access device; without the CTL patch (Mode B) only Direct Access and CD-ROM devices can be exported"
    );
    shut_down(m);
}

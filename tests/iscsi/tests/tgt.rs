//! The crate against a real target: each test starts its own tgtd (as root)
//! and sends commands to its disk, tape or CD-ROM through libiscsi.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iscsi_lun::{Error, IscsiLun, Response, Tgt};

/// SCSI status GOOD.
const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
const CHECK_CONDITION: u8 = 0x02;
/// Sense key UNIT ATTENTION.
const UNIT_ATTENTION: u8 = 0x6;
/// Sense key ILLEGAL REQUEST.
const ILLEGAL_REQUEST: u8 = 0x5;
/// Sense key NO SENSE.
const NO_SENSE: u8 = 0x0;

/// Starts a tgtd for one test.
fn start() -> Tgt {
    Tgt::start().unwrap_or_else(|e| panic!("{e}"))
}

/// Logs in to LUN `lun` of `tgt`.
fn connect(tgt: &Tgt, lun: u32) -> IscsiLun {
    IscsiLun::connect(&tgt.url(lun)).unwrap_or_else(|e| panic!("{}: {e}", tgt.url(lun)))
}

/// The sense key of fixed or descriptor format sense data.
fn sense_key(sense: &[u8]) -> Option<u8> {
    match sense.first()? & 0x7f {
        0x70 | 0x71 => sense.get(2).map(|b| b & 0x0f),
        0x72 | 0x73 => sense.get(1).map(|b| b & 0x0f),
        _ => None,
    }
}

/// Sends one command, again after a UNIT ATTENTION (a few times at most),
/// and fails the test on a transport error.
fn run(lun: &IscsiLun, cdb: &[u8], data_out: &[u8], data_in: &mut [u8]) -> Response {
    for _ in 0..4 {
        let r = lun
            .execute(cdb, data_out, data_in)
            .unwrap_or_else(|e| panic!("CDB {cdb:02x?}: {e}"));
        if r.status == CHECK_CONDITION && sense_key(&r.sense) == Some(UNIT_ATTENTION) {
            continue;
        }
        return r;
    }
    panic!("CDB {cdb:02x?}: UNIT ATTENTION does not clear");
}

/// Sends one command that must succeed.
fn run_good(lun: &IscsiLun, cdb: &[u8], data_out: &[u8], data_in: &mut [u8]) -> Response {
    let r = run(lun, cdb, data_out, data_in);
    assert_eq!(r.status, GOOD, "CDB {cdb:02x?}: {r:02x?}");
    r
}

/// READ(10) or WRITE(10) of `blocks` blocks at `lba`.
fn rw10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let n = blocks.to_be_bytes();
    [opcode, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0]
}

/// A 6-byte tape command (READ(6), WRITE(6), WRITE FILEMARKS(6)) with a
/// 24-bit length or count and the FIXED bit clear.
fn tape6(opcode: u8, count: u32) -> [u8; 6] {
    let c = count.to_be_bytes();
    [opcode, 0, c[1], c[2], c[3], 0]
}

/// Standard INQUIRY data (allocation length 255), trimmed to what was sent.
fn inquiry(lun: &IscsiLun) -> Vec<u8> {
    let mut buf = [0u8; 255];
    let r = run_good(lun, &[0x12, 0, 0, 0, 255, 0], &[], &mut buf);
    buf[..r.transferred].to_vec()
}

/// The Unit Serial Number VPD page's serial number (tgt pads it with leading spaces).
fn serial(lun: &IscsiLun) -> String {
    let mut buf = [0u8; 255];
    let r = run_good(lun, &[0x12, 1, 0x80, 0, 255, 0], &[], &mut buf);
    assert!(r.transferred >= 4 && buf[1] == 0x80, "{:02x?}", &buf[..r.transferred]);
    let len = usize::from(buf[3]).min(r.transferred - 4);
    String::from_utf8_lossy(&buf[4..4 + len]).trim().to_string()
}

/// An ASCII INQUIRY field without its padding.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_string()
}

#[test]
fn inquiry_reports_device_types_and_configured_identity() {
    let tgt = start();
    for (lun, ptype, product, sn) in [
        (Tgt::DISK, 0x00, "TGT-DISK", "CTLPASS-DISK-1"),
        (Tgt::TAPE, 0x01, "TGT-TAPE", "CTLPASS-TAPE-2"),
        (Tgt::CD, 0x05, "TGT-CD", "CTLPASS-CD-3"),
    ] {
        let l = connect(&tgt, lun);
        let inq = inquiry(&l);
        assert!(inq.len() >= 36, "LUN {lun}: {inq:02x?}");
        assert_eq!(inq[0], ptype, "LUN {lun}: peripheral qualifier and device type");
        assert_eq!(text(&inq[8..16]), "CTLPASS", "LUN {lun}: vendor");
        assert_eq!(text(&inq[16..32]), product, "LUN {lun}: product");
        assert_eq!(text(&inq[32..36]), "0185", "LUN {lun}: revision");
        assert_eq!(serial(&l), sn, "LUN {lun}: serial number");
    }
}

#[test]
fn disk_read_capacity_16() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    let mut buf = [0u8; 32];
    // SERVICE ACTION IN(16) / READ CAPACITY(16), allocation length 32.
    let r = run_good(
        &disk,
        &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
        &mut buf,
    );
    assert!(r.transferred >= 12, "{r:?}");
    let last_lba = u64::from_be_bytes(buf[0..8].try_into().unwrap());
    let block = u32::from_be_bytes(buf[8..12].try_into().unwrap());
    assert_eq!((last_lba, block), (131071, 512));
}

#[test]
fn disk_write_then_read_and_read_past_the_end() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    let pattern: Vec<u8> = (0..8 * 512u32).map(|i| (i * 7 + i / 512) as u8).collect();
    let w = run_good(&disk, &rw10(0x2a, 100, 8), &pattern, &mut []);
    assert_eq!(w.transferred, pattern.len());
    let mut back = vec![0u8; pattern.len()];
    let r = run_good(&disk, &rw10(0x28, 100, 8), &[], &mut back);
    assert_eq!(r.transferred, back.len());
    assert!(back == pattern, "READ(10) returned other data than WRITE(10) wrote");
    // The target really wrote its backing file.
    let image = std::fs::read(tgt.dir().join("disk.img")).unwrap();
    assert!(
        image[100 * 512..108 * 512] == pattern[..],
        "disk.img does not hold the pattern"
    );

    // One block past the last: ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    let mut buf = [0xa5u8; 512];
    let r = run(&disk, &rw10(0x28, 131072, 1), &[], &mut buf);
    assert_eq!(r.status, CHECK_CONDITION, "{r:02x?}");
    assert!(r.sense.len() >= 14, "{r:02x?}");
    assert_eq!(r.sense[0] & 0x7f, 0x70, "fixed format, current: {r:02x?}");
    assert_eq!(r.sense[2] & 0x0f, ILLEGAL_REQUEST, "{r:02x?}");
    assert_eq!((r.sense[12], r.sense[13]), (0x21, 0x00), "{r:02x?}");
    assert_eq!(r.transferred, 0, "{r:02x?}");
    assert!(buf.iter().all(|&b| b == 0xa5), "bytes not transferred were changed");
}

#[test]
fn tape_read_meets_the_filemark_written() {
    let tgt = start();
    let tape = connect(&tgt, Tgt::TAPE);
    let record: Vec<u8> = (0..512u32).map(|i| (i ^ 0x5a) as u8).collect();
    run_good(&tape, &[0x01, 0, 0, 0, 0, 0], &[], &mut []); // REWIND
    let w = run_good(&tape, &tape6(0x0a, 512), &record, &mut []); // WRITE(6), variable
    assert_eq!(w.transferred, 512);
    run_good(&tape, &tape6(0x10, 1), &[], &mut []); // WRITE FILEMARKS(6), 1
    run_good(&tape, &[0x01, 0, 0, 0, 0, 0], &[], &mut []); // REWIND

    let mut buf = vec![0u8; 512];
    let r = run_good(&tape, &tape6(0x08, 512), &[], &mut buf); // READ(6), variable
    assert_eq!(r.transferred, 512);
    assert!(buf == record, "READ(6) returned other data than WRITE(6) wrote");

    // The next READ meets the filemark: NO SENSE with FILEMARK, 00/01
    // FILEMARK DETECTED, and the residue (512) in the information field.
    let r = run(&tape, &tape6(0x08, 512), &[], &mut buf);
    assert_eq!(r.status, CHECK_CONDITION, "{r:02x?}");
    assert!(r.sense.len() >= 14, "{r:02x?}");
    assert_eq!(r.sense[0], 0xf0, "VALID, fixed format, current: {r:02x?}");
    assert_eq!(r.sense[2] & 0x80, 0x80, "FILEMARK: {r:02x?}");
    assert_eq!(r.sense[2] & 0x0f, NO_SENSE, "{r:02x?}");
    assert_eq!(
        u32::from_be_bytes(r.sense[3..7].try_into().unwrap()),
        512,
        "information: {r:02x?}"
    );
    assert_eq!((r.sense[12], r.sense[13]), (0x00, 0x01), "{r:02x?}");
    // tgt 1.0.85 sends a full buffer of zeros with it, and no residual.
    assert_eq!(r.transferred, 512, "{r:02x?}");
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn one_mib_transfers_span_many_pdus() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let w = run_good(&disk, &rw10(0x2a, 5000, 2048), &data, &mut []);
    assert_eq!(w.transferred, data.len());
    let mut back = vec![0u8; data.len()];
    let r = run_good(&disk, &rw10(0x28, 5000, 2048), &[], &mut back);
    assert_eq!(r.transferred, data.len());
    assert!(
        back == data,
        "READ(10) of 1 MiB returned other data than WRITE(10) wrote"
    );
}

#[test]
fn data_in_shorter_than_the_buffer() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    let mut buf = [0xeeu8; 255];
    let r = run_good(&disk, &[0x12, 0, 0, 0, 255, 0], &[], &mut buf);
    // Standard INQUIRY data is ADDITIONAL LENGTH + 5 bytes long.
    assert_eq!(r.transferred, usize::from(buf[4]) + 5, "{r:?}");
    assert!(r.transferred < buf.len(), "{r:?}");
    assert!(
        buf[r.transferred..].iter().all(|&b| b == 0xee),
        "bytes beyond the transfer were changed"
    );
}

#[test]
fn bad_cdbs_are_refused_before_sending() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    assert!(disk.execute(&[], &[], &mut []).is_err());
    assert!(disk.execute(&[0; 17], &[], &mut []).is_err());
    // The session is still usable.
    run_good(&disk, &[0; 6], &[], &mut []);
}

#[test]
fn concurrent_reads_on_one_session() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    let blocks: Vec<Vec<u8>> = (0..2u8).map(|t| vec![0x30 + t; 4096]).collect();
    for (t, data) in blocks.iter().enumerate() {
        run_good(&disk, &rw10(0x2a, 1000 * t as u32, 8), data, &mut []);
    }
    std::thread::scope(|scope| {
        for (t, data) in blocks.iter().enumerate() {
            let disk = &disk;
            scope.spawn(move || {
                for _ in 0..50 {
                    let mut buf = vec![0u8; 4096];
                    let r = run_good(disk, &rw10(0x28, 1000 * t as u32, 8), &[], &mut buf);
                    assert_eq!(r.transferred, 4096);
                    assert!(&buf == data, "thread {t} read other data");
                }
            });
        }
    });
}

#[test]
fn lun_reset_then_unit_attention() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    run_good(&disk, &[0; 6], &[], &mut []);
    disk.lun_reset().unwrap();
    let r = disk.execute(&[0; 6], &[], &mut []).unwrap();
    assert_eq!(r.status, CHECK_CONDITION, "{r:02x?}");
    assert_eq!(sense_key(&r.sense), Some(UNIT_ATTENTION), "{r:02x?}");
    assert_eq!(
        r.sense[12], 0x29,
        "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED: {r:02x?}"
    );
    run_good(&disk, &[0; 6], &[], &mut []);
}

#[test]
fn cd_read_capacity_10() {
    let tgt = start();
    let cd = connect(&tgt, Tgt::CD);
    let mut buf = [0u8; 8];
    let r = run_good(&cd, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], &mut buf);
    assert_eq!(r.transferred, 8);
    let last_lba = u32::from_be_bytes(buf[0..4].try_into().unwrap());
    let block = u32::from_be_bytes(buf[4..8].try_into().unwrap());
    assert_eq!((last_lba, block), (1023, 2048));
}

#[test]
fn connecting_to_a_closed_port_fails_quickly() {
    let port = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let r = IscsiLun::connect(&format!("iscsi://127.0.0.1:{port}/iqn.2026-11.org.ctlpass:tgt/1"));
    assert!(matches!(r, Err(Error(_))), "connected to a closed port");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(IscsiLun::connect("not a url").is_err());
    assert!(IscsiLun::connect("iscsi://127.0.0.1\0/x/1").is_err());
}

#[test]
fn commands_fail_without_hanging_once_the_target_is_gone() {
    let tgt = start();
    let disk = connect(&tgt, Tgt::DISK);
    run_good(&disk, &[0; 6], &[], &mut []);
    drop(tgt);
    let started = Instant::now();
    let mut buf = [0u8; 512];
    assert!(disk.execute(&rw10(0x28, 0, 1), &[], &mut buf).is_err());
    assert!(disk.execute(&[0; 6], &[], &mut []).is_err());
    assert!(disk.lun_reset().is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop(disk);
}

/// Whether process `pid` is gone (or a zombie).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
    }
}

#[test]
fn dropping_tgt_stops_its_daemon() {
    let tgt = start();
    let dir: PathBuf = tgt.dir().to_path_buf();
    let control = tgt.control();
    let pid: u32 = std::fs::read_to_string(dir.join("tgtd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!gone(pid));
    {
        let disk = connect(&tgt, Tgt::DISK);
        run_good(&disk, &[0; 6], &[], &mut []);
    }
    drop(tgt);
    assert!(gone(pid), "tgtd {pid} still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
    let show = Command::new("tgtadm")
        .args(["-C", &control.to_string(), "--op", "show", "--mode", "sys"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // tgtadm may also be missing from PATH (it is in /usr/sbin): then the pid check stands alone.
    if let Ok(status) = show {
        assert!(!status.success(), "tgtadm -C {control} still answers");
    }
}

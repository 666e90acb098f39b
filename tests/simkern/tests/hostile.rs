//! Hostile input, end to end: LUN requests from ctladm, ctld or a program
//! of their own with options missing, repeated, oversize, empty, not
//! UTF-8, unknown or unlistable, absurd sizes and LUN numbers, bad device
//! names, requests for LUNs that do not exist or are being removed, and
//! request types nobody defined; then CDBs from initiators that are
//! inconsistent, reserved-bit laden, unknown, too long for the device's
//! maxio, out of the LBA range, short of their data, or WRITE SAME, UNMAP
//! and COMPARE AND WRITE with absurd counts.
//!
//! Each row says exactly what comes back: the request's `error_str` and
//! status, or the command's status, sense bytes, residual and data; that
//! nothing was left behind (no LUN, no nvlist, no memory, nothing queued
//! on the periph); what the device itself received; and that the LUN
//! still reads back what was written afterwards.
//!
//! Where CTL answers before the backend, the row says so: in Mode A
//! (stock CTL) ctl.c decodes every CDB before a backend sees it
//! (`ctl_validate_command`: operation code, service action, the usage
//! mask of each CDB byte; the command functions: LBA range, transfer
//! length 0, WRITE SAME's and UNMAP's fields and parameter list; and
//! `ctl_datamove_done_process`: data-out shorter than the command needs),
//! so those rows prove the backend is not reached and the LUN keeps
//! working; the other rows are the backend's own (COMPARE AND WRITE
//! beyond what the device and the SIM take, splitting at maxio, UNMAP
//! lists beyond the device's limits).
//!
//! Checks are collected rather than asserted while a machine runs, so that
//! a failure still shuts the machine down and lists every row that failed.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ctlpass::backend::DeviceName;
use simkern::cam::fixed_sense;
use simkern::cdb::{cdb10, cdb16};
use simkern::ctl::frontend::Response;
use simkern::ctl::{self, Cmd, Reply, Request};
use simkern::devices::{CHECK_CONDITION, Command, GOOD, Identity, Outcome, RamDisk, ScsiDevice};
use simkern::remote::Gated;
use simkern::shell::Shell;
use simkern::{Config, Machine, malloc, manpage, nv, sys};

// --- collected checks ---

/// Failed checks, named by their row.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    /// Records a failure unless `got == want`.
    fn eq<T: PartialEq + Debug>(&mut self, row: &str, what: &str, got: T, want: T) {
        if got != want {
            self.0.push(format!("{row}: {what}: got {got:?}, want {want:?}"));
        }
    }

    /// Fails the test with every failure, if any.
    fn done(self, test: &str) {
        assert!(self.0.is_empty(), "{test}:\n  {}", self.0.join("\n  "));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// --- devices ---

fn identity(serial: &str, naa: u64) -> Identity {
    Identity {
        vendor: "SEAGATE".into(),
        product: "ST4000NM0023".into(),
        revision: "0004".into(),
        serial: serial.into(),
        naa: Some(naa),
        eui64: None,
    }
}

/// A thin-provisioned RAM disk that logs the commands it executes (not the
/// identity probes) and may report other Block Limits (VPD page 0xB0)
/// than its own: `(offset in the page, bytes)`.
struct Disk {
    inner: RamDisk,
    blocks: u64,
    block: usize,
    log: Mutex<Vec<Vec<u8>>>,
    limits: Vec<(usize, Vec<u8>)>,
}

impl Disk {
    fn new(serial: &str, naa: u64, blocks: u64, block: u32) -> Disk {
        Disk {
            inner: RamDisk::new(identity(serial, naa), blocks, block).with_unmap(true),
            blocks,
            block: block as usize,
            log: Mutex::default(),
            limits: Vec::new(),
        }
    }

    /// The device reports `bytes` at `offset` of its Block Limits page.
    fn with_limit(mut self, offset: usize, bytes: &[u8]) -> Disk {
        self.limits.push((offset, bytes.to_vec()));
        self
    }

    /// The commands executed since the last call.
    fn received(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *lock(&self.log))
    }

    /// `n` blocks at `lba`, read from the medium directly.
    fn peek(&self, lba: u64, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n * self.block];
        let o = self.inner.execute(Command {
            cdb: &cdb16(0x88, 0, lba, n as u32),
            data_out: &[],
            data_in: &mut buf,
        });
        assert_eq!(o.status, GOOD, "peek");
        buf
    }

    /// Writes `data` at `lba` on the medium directly.
    fn poke(&self, lba: u64, data: &[u8]) {
        let o = self.inner.execute(Command {
            cdb: &cdb16(0x8a, 0, lba, (data.len() / self.block) as u32),
            data_out: data,
            data_in: &mut [],
        });
        assert_eq!(o.status, GOOD, "poke");
    }

    /// What the device answers to `cmd` sent to it directly (not logged).
    fn direct(&self, cdb: &[u8], data_out: &[u8]) -> Outcome {
        self.inner.execute(Command {
            cdb,
            data_out,
            data_in: &mut [],
        })
    }
}

impl ScsiDevice for Disk {
    fn device_type(&self) -> u8 {
        self.inner.device_type()
    }

    fn identity(&self) -> &Identity {
        self.inner.identity()
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        let cdb = cmd.cdb.to_vec();
        let probe = matches!(cdb[0], 0x12 | 0x00 | 0x25 | 0x03) || (cdb[0] == 0x9e && cdb[1] == 0x10);
        if !probe {
            lock(&self.log).push(cdb.clone());
        }
        let data_in = cmd.data_in;
        let o = self.inner.execute(Command {
            cdb: cmd.cdb,
            data_out: cmd.data_out,
            data_in: &mut *data_in,
        });
        if cdb[0] == 0x12 && cdb[1] & 1 == 1 && cdb[2] == 0xb0 {
            for (at, bytes) in &self.limits {
                if let Some(d) = data_in.get_mut(*at..*at + bytes.len()) {
                    d.copy_from_slice(bytes);
                }
            }
        }
        o
    }
}

// --- CDBs, data and sense ---

/// COMPARE AND WRITE of `blocks` blocks at `lba`.
fn caw(lba: u64, blocks: u8) -> Vec<u8> {
    let mut c = cdb16(0x89, 0, lba, 0);
    c[13] = blocks;
    c
}

/// An UNMAP parameter list of `(lba, blocks)` descriptors, with its CDB.
fn unmap(descriptors: &[(u64, u32)]) -> (Vec<u8>, Vec<u8>) {
    let body = descriptors.len() * 16;
    let mut list = Vec::with_capacity(8 + body);
    list.extend_from_slice(&((body + 6) as u16).to_be_bytes());
    list.extend_from_slice(&(body as u16).to_be_bytes());
    list.extend_from_slice(&[0; 4]);
    for &(lba, n) in descriptors {
        list.extend_from_slice(&lba.to_be_bytes());
        list.extend_from_slice(&n.to_be_bytes());
        list.extend_from_slice(&[0; 4]);
    }
    let cdb = cdb10(0x42, 0, 0, list.len() as u16);
    (cdb, list)
}

/// `len` bytes of a pattern no two seeds share.
fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 9) as u8)
        .collect()
}

/// Fixed-format sense as CTL builds it, with a sense-key specific field.
fn sense_sks(key: u8, asc: u8, ascq: u8, sks: [u8; 3]) -> Vec<u8> {
    let mut s = fixed_sense(key, asc, ascq, None);
    s[15..18].copy_from_slice(&sks);
    s
}

const ILLEGAL_REQUEST: u8 = 0x05;
const ABORTED_COMMAND: u8 = 0x0b;

/// INVALID COMMAND OPERATION CODE (20/00), pointing at the operation code.
fn invalid_opcode() -> Vec<u8> {
    sense_sks(ILLEGAL_REQUEST, 0x20, 0x00, [0xc0, 0, 0])
}

/// INVALID FIELD IN CDB (24/00) pointing at `byte`, bit `bit`.
fn invalid_field(byte: u8, bit: u8) -> Vec<u8> {
    sense_sks(ILLEGAL_REQUEST, 0x24, 0x00, [0xc8 | bit, 0, byte])
}

/// LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00), INFORMATION if it fits.
fn out_of_range(info: Option<u32>) -> Vec<u8> {
    fixed_sense(ILLEGAL_REQUEST, 0x21, 0x00, info)
}

/// INVALID FIELD IN COMMAND INFORMATION UNIT (0E/03): data-out short of
/// what the command needs (ctl_datamove_done_process).
fn short_data_out() -> Vec<u8> {
    fixed_sense(ABORTED_COMMAND, 0x0e, 0x03, None)
}

// ======================================================================
// Part 1: LUN requests
// ======================================================================

/// Options as byte strings, as a request carries them.
type Options = Vec<(Vec<u8>, Vec<u8>)>;

fn opts(pairs: &[(&str, &str)]) -> Options {
    pairs
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn bytes(pairs: &[(&[u8], &[u8])]) -> Options {
    pairs.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

fn send(backend: &str, req: &Request, options: &Options) -> Reply {
    let pairs: Vec<(&[u8], &[u8])> = options.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    ctl::lun_request_bytes(backend, req, &pairs)
}

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

/// Memory in use, by malloc type (the whole kernel: ctlpass and CTL).
fn in_use() -> Vec<(String, u64)> {
    malloc::vmstat_m().into_iter().map(|t| (t.name, t.in_use)).collect()
}

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    luns: Vec<u32>,
    nvlists: usize,
    memory: Vec<(String, u64)>,
}

fn trace() -> Trace {
    Trace {
        luns: ctl::luns(),
        nvlists: nv::live(),
        memory: in_use(),
    }
}

/// Sends `req` and checks it is refused with exactly `want`, leaving
/// nothing behind.
fn refused(c: &mut Checks, row: &str, req: &Request, options: &Options, want: &str) {
    let before = trace();
    let r = send("passthrough", req, options);
    c.eq(row, "status", r.status, sys::CTL_LUN_ERROR);
    c.eq(row, "error_str", r.error.as_str(), want);
    c.eq(row, "error_str fits CTL's 160 bytes", r.error.len() < 160, true);
    // CTL's own message (ctl_lun_req) is not ctlpass's to document.
    let documented = want == CANNOT_UNPACK || manpage::documenting(&r.error).is_some();
    c.eq(row, "error_str in ctlpass(4)", documented, true);
    c.eq(row, "nothing created", r.created, None);
    c.eq(row, "nothing left behind", trace(), before);
}

/// Sends a create request that must succeed (status `status`, with
/// `error_str` `warning`); returns the LUN, or `None` after a failure.
fn created(c: &mut Checks, row: &str, req: &Request, options: &Options, status: u32, warning: &str) -> Option<u32> {
    let r = send("passthrough", req, options);
    c.eq(row, "status", r.status, status);
    c.eq(row, "error_str", r.error.as_str(), warning);
    let documented = warning.is_empty() || manpage::documenting(warning).is_some();
    c.eq(row, "warning in ctlpass(4)", documented, true);
    let lun = r.created.map(|x| x.3);
    c.eq(row, "created", lun.is_some(), true);
    lun
}

fn remove(lun: u32) -> Reply {
    ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[])
}

/// The element `name` of LUN `lun` in CTL's LUN list.
fn element(lun: u32, name: &str) -> Option<String> {
    let xml = ctl::lun_list_xml();
    let start = xml.find(&format!("<lun id=\"{lun}\">"))?;
    let body = &xml[start..xml[start..].find("</lun>")? + start];
    let open = format!("<{name}>");
    let from = body.find(&open)? + open.len();
    Some(body[from..from + body[from..].find('<')?].to_string())
}

/// da0 (a thin 512-byte disk), da1 (4Kn), on one SAS bus.
fn request_machine(extra: Vec<Arc<dyn ScsiDevice>>) -> Machine {
    let mut devices: Vec<Arc<dyn ScsiDevice>> = vec![
        Arc::new(Disk::new("Z1Z3ABCD", 0x5000_c500_a1b2_c3d4, 16384, 512)),
        Arc::new(Disk::new("S6PXNM0T", 0x5002_5388_a0b1_c2d3, 2048, 4096)),
    ];
    devices.extend(extra);
    boot(1 << 20, devices)
}

fn boot(maxio: u32, devices: Vec<Arc<dyn ScsiDevice>>) -> Machine {
    let m = Machine::boot(Config::one_bus(maxio, 32, devices));
    m.kldload().expect("kldload ctlpass");
    m
}

/// Unloads ctlpass and checks that every LUN is gone and nothing leaked.
fn shut_down(c: &mut Checks, m: Machine) {
    c.eq("shutdown", "LUNs left", ctl::luns(), Vec::new());
    c.eq("shutdown", "kldunload", m.kldunload(), Ok(()));
    c.eq("shutdown", "leaks", malloc::leaks(), Vec::<String>::new());
    drop(m);
}

/// The message for an option whose value CTL's LUN list cannot carry.
fn unlistable(option: &str, what: &str, shown: &str) -> String {
    format!("option \"{option}\": {what} in {shown} would make CTL's LUN list unreadable (ctladm devlist, ctld)")
}

fn bad_device(option: &str, shown: &str, why: &str) -> String {
    format!("option \"{option}\": invalid device name {shown}: {why}")
}

const NAME_CHARS: &str = "CTL's LUN list takes letters, digits, '_', '-', '.' and ':', first a letter or '_'";
const EXPECTED_ADDRESS: &str = "expected bus:target:lun, as camcontrol devlist shows (e.g. 0:1:0)";
const EXPECTED_DEVICE: &str = "expected a device like da3, cam=0:1:0, devid=naa.<hex> or serial=<serial>";
const MISSING_DEVICE: &str = "option \"device\" is required (e.g. device=da3), or \"cam\", \"devid\" or \"serial\" \
                              (cam=0:1:0, devid=naa.5000c500a1b2c3d4, serial=Z1Z3ABCD)";
const CANNOT_UNPACK: &str = "Cannot unpack args nvlist.";

/// The create requests refused for their options: `(row, options,
/// error_str)`.
fn refused_options() -> Vec<(&'static str, Options, String)> {
    let da0 = ("device", "da0");
    let long_unit = format!("da{}", "9".repeat(10_000));
    let long_serial = "S".repeat(300);
    vec![
        // Missing and empty.
        ("no options", Vec::new(), MISSING_DEVICE.into()),
        (
            "a misspelt device option",
            opts(&[("devcie", "da0")]),
            MISSING_DEVICE.into(),
        ),
        (
            "only CTL's options",
            opts(&[("vendor", "ACME"), ("readonly", "on")]),
            MISSING_DEVICE.into(),
        ),
        (
            "empty device",
            opts(&[("device", "")]),
            bad_device("device", "\"\"", "the name is empty"),
        ),
        (
            "empty file (ctld's path)",
            opts(&[("file", "")]),
            bad_device("file", "\"\"", "the name is empty"),
        ),
        (
            "empty cam",
            opts(&[("cam", "")]),
            bad_device("cam", "\"\"", EXPECTED_ADDRESS),
        ),
        (
            "empty devid",
            opts(&[("devid", "")]),
            bad_device("devid", "\"\"", "expected naa.<hex> or eui.<hex>"),
        ),
        (
            "empty serial",
            opts(&[("serial", "")]),
            bad_device("serial", "\"\"", "the serial number is empty"),
        ),
        (
            "empty readonly",
            opts(&[da0, ("readonly", "")]),
            "option \"readonly\": \"\" is not \"on\" or \"off\"".into(),
        ),
        (
            "empty ha_role",
            opts(&[da0, ("ha_role", "")]),
            "option \"ha_role\": \"\" is not \"primary\" or \"secondary\"".into(),
        ),
        (
            "strict in capitals",
            opts(&[da0, ("strict", "ON")]),
            "option \"strict\": \"ON\" is not \"on\" or \"off\"".into(),
        ),
        (
            "an empty name (ctladm -o =x)",
            opts(&[da0, ("", "x")]),
            "option name \"\": empty (ctladm -o takes name=value)".into(),
        ),
        // Oversize.
        (
            "a 10 KB device name",
            opts(&[("device", &long_unit)]),
            "option \"device\": the value has 10002 bytes, at most 1024 are taken".into(),
        ),
        (
            "a 10 KB vendor",
            opts(&[da0, ("vendor", &"V".repeat(10_000))]),
            "option \"vendor\": the value has 10000 bytes, at most 1024 are taken".into(),
        ),
        (
            "a value of 1025 bytes",
            opts(&[da0, ("product", &"P".repeat(1025))]),
            "option \"product\": the value has 1025 bytes, at most 1024 are taken".into(),
        ),
        (
            "a name of 65 bytes",
            opts(&[da0, (&"n".repeat(65), "x")]),
            "option name \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...\" (65 bytes): longer than 64 bytes"
                .into(),
        ),
        (
            "a 300-byte serial number",
            opts(&[("serial", &long_serial)]),
            bad_device(
                "serial",
                "\"SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS...\" (300 bytes)",
                "longer than any serial number CAM keeps (252 bytes)",
            ),
        ),
        (
            "a unit of 80 digits, shown shortened",
            opts(&[("file", &format!("/dev/da{}", "1".repeat(80)))]),
            bad_device(
                "file",
                "\"/dev/da11111111111111111111111111111111111111111...\" (87 bytes)",
                "the unit number is too large",
            ),
        ),
        (
            "1000 options",
            (0..1000)
                .map(|i| (format!("o{i}").into_bytes(), b"v".to_vec()))
                .chain([(b"device".to_vec(), b"da0".to_vec())])
                .collect(),
            "more than 256 options (CTL reads about thirty)".into(),
        ),
        // Not UTF-8, not text CTL can list.
        (
            "a device name not UTF-8",
            bytes(&[(b"device", b"da\xff0")]),
            "option \"device\" must be a string of UTF-8 text".into(),
        ),
        (
            "a vendor not UTF-8",
            bytes(&[(b"device", b"da0"), (b"vendor", b"\xff\xfe")]),
            "option \"vendor\" must be a string of UTF-8 text".into(),
        ),
        (
            "a name not UTF-8",
            bytes(&[(b"dev\xffice", b"da0")]),
            format!("option name \"dev\\xffice\": {NAME_CHARS}"),
        ),
        (
            "an unknown name not UTF-8",
            bytes(&[(b"device", b"da0"), (b"\xc3\x28", b"x")]),
            format!("option name \"\\xc3(\": {NAME_CHARS}"),
        ),
        (
            "a name with a space",
            opts(&[da0, ("read only", "on")]),
            format!("option name \"read only\": {NAME_CHARS}"),
        ),
        (
            "a name that is markup",
            opts(&[da0, ("<x>", "1")]),
            format!("option name \"<x>\": {NAME_CHARS}"),
        ),
        (
            "a name starting with a digit",
            opts(&[da0, ("1st", "1")]),
            format!("option name \"1st\": {NAME_CHARS}"),
        ),
        (
            "a vendor with '&'",
            opts(&[da0, ("vendor", "AT&T")]),
            unlistable("vendor", "'&'", "\"AT&T\""),
        ),
        (
            "a product with '<'",
            opts(&[da0, ("product", "a<b")]),
            unlistable("product", "'<'", "\"a<b\""),
        ),
        (
            "a value with a tab",
            opts(&[da0, ("vendor", "a\tb")]),
            unlistable("vendor", "control character \\x09", "\"a\\x09b\""),
        ),
        (
            "a device with a terminal escape",
            opts(&[("device", "da0\n\x1b[2J")]),
            unlistable("device", "control character \\x0a", "\"da0\\x0a\\x1b[2J\""),
        ),
        // Bad device names.
        (
            "da",
            opts(&[("device", "da")]),
            bad_device("device", "\"da\"", "no unit number"),
        ),
        (
            "da-1",
            opts(&[("device", "da-1")]),
            bad_device("device", "\"da-1\"", EXPECTED_DEVICE),
        ),
        (
            "DA0",
            opts(&[("device", "DA0")]),
            bad_device("device", "\"DA0\"", EXPECTED_DEVICE),
        ),
        (
            "da99999999999999999999",
            opts(&[("device", "da99999999999999999999")]),
            bad_device("device", "\"da99999999999999999999\"", "the unit number is too large"),
        ),
        (
            "da4294967296",
            opts(&[("device", "da4294967296")]),
            bad_device("device", "\"da4294967296\"", "the unit number is too large"),
        ),
        (
            "da03",
            opts(&[("device", "da03")]),
            bad_device("device", "\"da03\"", "the unit number has a leading zero"),
        ),
        (
            "da0x",
            opts(&[("device", "da0x")]),
            bad_device("device", "\"da0x\"", "the unit is not a number"),
        ),
        (
            "/dev/",
            opts(&[("device", "/dev/")]),
            bad_device("device", "\"/dev/\"", "the name is empty"),
        ),
        (
            "cam=1:2",
            opts(&[("device", "cam=1:2")]),
            bad_device("device", "\"cam=1:2\"", EXPECTED_ADDRESS),
        ),
        (
            "cam=a:b:c",
            opts(&[("device", "cam=a:b:c")]),
            bad_device("device", "\"cam=a:b:c\"", "bus, target and lun must be numbers"),
        ),
        (
            "cam=1:2:3:4",
            opts(&[("device", "cam=1:2:3:4")]),
            bad_device("device", "\"cam=1:2:3:4\"", EXPECTED_ADDRESS),
        ),
        (
            "cam=-1:0:0",
            opts(&[("device", "cam=-1:0:0")]),
            bad_device("device", "\"cam=-1:0:0\"", "bus, target and lun must be numbers"),
        ),
        (
            "cam=+1:0:0",
            opts(&[("cam", "+1:0:0")]),
            bad_device("cam", "\"+1:0:0\"", "bus, target and lun must be numbers"),
        ),
        (
            "cam=4294967296:0:0",
            opts(&[("device", "cam=4294967296:0:0")]),
            bad_device("device", "\"cam=4294967296:0:0\"", "bus, target or lun is out of range"),
        ),
        (
            "devid=",
            opts(&[("device", "devid=")]),
            bad_device("device", "\"devid=\"", "expected naa.<hex> or eui.<hex>"),
        ),
        (
            "devid=naa.zz",
            opts(&[("device", "devid=naa.zz")]),
            bad_device(
                "device",
                "\"devid=naa.zz\"",
                "expected naa.<hex> or eui.<hex> with 16, 24 or 32 hex digits",
            ),
        ),
        (
            "devid=xyz.<16 hex>",
            opts(&[("devid", "xyz.5000c500a1b2c3d4")]),
            bad_device(
                "devid",
                "\"xyz.5000c500a1b2c3d4\"",
                "expected naa.<hex> or eui.<hex> with 16, 24 or 32 hex digits",
            ),
        ),
        (
            "two options naming two devices",
            opts(&[("device", "da0"), ("file", "/dev/da1")]),
            "options \"device\" (da0) and \"file\" (/dev/da1) disagree: name the device once".into(),
        ),
        (
            "one device in two forms",
            opts(&[("device", "da0"), ("cam", "0:0:0")]),
            "options \"device\" (da0) and \"cam\" (0:0:0) both name the device: name it once".into(),
        ),
        (
            "no such device",
            opts(&[("device", "da9")]),
            "no SCSI device da9".into(),
        ),
        (
            "CAM's wildcard address",
            opts(&[("device", "cam=4294967295:4294967295:18446744073709551615")]),
            "no SCSI device with cam=4294967295:4294967295:18446744073709551615".into(),
        ),
        (
            "a 252-byte serial number no device has",
            opts(&[("serial", &"S".repeat(252))]),
            "no SCSI device with serial=SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS... (252 bytes)".into(),
        ),
        // NUL bytes and repeated names: CTL cannot unpack such a list
        // (nvlist_unpack), so the backend never sees them.
        (
            "a NUL in a value",
            bytes(&[(b"device", b"da0\0da1")]),
            CANNOT_UNPACK.into(),
        ),
        ("a NUL in a name", bytes(&[(b"dev\0ice", b"da0")]), CANNOT_UNPACK.into()),
        (
            "a name of NV_NAME_MAX bytes",
            opts(&[da0, (&"n".repeat(2048), "x")]),
            CANNOT_UNPACK.into(),
        ),
        (
            "device twice",
            opts(&[("device", "da0"), ("device", "da1")]),
            CANNOT_UNPACK.into(),
        ),
        (
            "readonly twice, the same",
            opts(&[da0, ("readonly", "on"), ("readonly", "on")]),
            CANNOT_UNPACK.into(),
        ),
    ]
}

#[test]
fn lun_requests_with_bad_options_are_refused_exactly_and_leave_nothing() {
    let rows = refused_options();
    assert_eq!(rows.len(), 57, "the report counts these rows");
    let mut c = Checks::default();
    let m = request_machine(Vec::new());
    for (row, options, want) in &rows {
        refused(&mut c, row, &Request::create(), options, want);
    }
    // After all that, the backend still creates, lists and removes.
    let da0 = opts(&[("device", "da0")]);
    if let Some(lun) = created(&mut c, "da0 after", &Request::create(), &da0, sys::CTL_LUN_OK, "") {
        c.eq("da0 after", "periph", element(lun, "periph").as_deref(), Some("da0"));
        c.eq("da0 after", "remove", remove(lun).status, sys::CTL_LUN_OK);
    }
    shut_down(&mut c, m);
    c.done("bad options");
}

#[test]
fn options_at_their_limits_and_unknown_options_are_kept_for_ctl() {
    let mut c = Checks::default();
    let m = request_machine(Vec::new());
    let da0 = (b"device".to_vec(), b"da0".to_vec());
    // (row, options, elements CTL's LUN list shows).
    let limits: Vec<(&str, Options, Options)> = vec![
        (
            "a value of 1024 bytes",
            vec![da0.clone(), (b"product".to_vec(), vec![b'P'; 1024])],
            opts(&[("product", &"P".repeat(1024))]),
        ),
        (
            "a name of 64 bytes",
            vec![da0.clone(), (vec![b'n'; 64], b"x".to_vec())],
            opts(&[(&"n".repeat(64), "x")]),
        ),
        (
            "256 options",
            (0..255)
                .map(|i| (format!("o{i}").into_bytes(), b"v".to_vec()))
                .chain([da0.clone()])
                .collect(),
            opts(&[("o254", "v")]),
        ),
        // ctl_backend_block.c leaves options it does not read to CTL, and
        // so does this backend: CTL and ctld have their own (ctld_name,
        // avail-threshold, ...).
        (
            "unknown options",
            opts(&[
                ("device", "da0"),
                ("ctld_name", "example_1"),
                ("avail-threshold", "1g"),
                ("x.y:z", "é ok > fine"),
            ]),
            opts(&[
                ("ctld_name", "example_1"),
                ("avail-threshold", "1g"),
                ("x.y:z", "é ok > fine"),
            ]),
        ),
        (
            "the same device named twice",
            opts(&[("device", "da0"), ("file", "/dev/da0")]),
            opts(&[("file", "/dev/da0")]),
        ),
    ];
    for (row, options, shown) in &limits {
        let Some(lun) = created(&mut c, row, &Request::create(), options, sys::CTL_LUN_OK, "") else {
            continue;
        };
        for (name, value) in shown {
            let name = String::from_utf8_lossy(name);
            let value = String::from_utf8_lossy(value).into_owned();
            c.eq(row, &name, element(lun, &name), Some(value));
        }
        c.eq(row, "remove", remove(lun).status, sys::CTL_LUN_OK);
    }
    shut_down(&mut c, m);
    c.done("limits");
}

#[test]
fn absurd_sizes_lun_numbers_and_identities_are_refused_or_ignored_with_a_warning() {
    let mut c = Checks::default();
    let m = request_machine(Vec::new());
    let da0 = opts(&[("device", "da0")]);
    let sized = |size| create_asking(0, size, 0, None);
    let numbered = |id| create_asking(0, 0, 0, Some(id));
    let beyond = |id: u32| {
        format!("LUN {id} is in use by another backend or beyond CTL's limit (kern.cam.ctl.max_luns; see dmesg)")
    };
    let rows: Vec<(&str, Request, Options, String)> = vec![
        (
            "-s 18446744073709551615",
            sized(u64::MAX),
            da0.clone(),
            "size 18446744073709551615 does not match da0: 16384 blocks of 512 bytes (8388608 bytes)".into(),
        ),
        (
            "-s 1",
            sized(1),
            da0.clone(),
            "size 1 does not match da0: 16384 blocks of 512 bytes (8388608 bytes)".into(),
        ),
        (
            "-B 4294967295 with strict=on",
            create_asking(0, 0, u32::MAX, None),
            opts(&[("device", "da0"), ("strict", "on")]),
            "blocksize 4294967295 does not match da0's 512-byte blocks (strict=on)".into(),
        ),
        (
            "-t 255",
            create_asking(255, 0, 0, None),
            da0.clone(),
            "device type 255 was asked for, but da0 is a Direct Access device (0)".into(),
        ),
        (
            "-l -1 (ctladm's strtoul)",
            numbered(u32::MAX),
            da0.clone(),
            beyond(u32::MAX),
        ),
        ("-l 16384", numbered(16384), da0.clone(), beyond(16384)),
        (
            "-l 1024 (CTL's default limit)",
            numbered(1024),
            da0.clone(),
            beyond(1024),
        ),
        (
            "-S with a control character",
            Request::Create {
                device_type: 0,
                size: 0,
                blocksize: 0,
                lun_id: None,
                serial: Some("AB\u{1}".into()),
                device_id: None,
            },
            da0.clone(),
            "the serial number (-S) has byte \\x01 at offset 2: only printable ASCII is taken".into(),
        ),
        (
            "-d with DEL",
            Request::Create {
                device_type: 0,
                size: 0,
                blocksize: 0,
                lun_id: None,
                serial: None,
                device_id: Some("\u{7f}".into()),
            },
            da0.clone(),
            "the device id (-d) has byte \\x7f at offset 0: only printable ASCII is taken".into(),
        ),
    ];
    for (row, req, options, want) in &rows {
        refused(&mut c, row, req, options, want);
    }
    // A block size that is not the device's is ignored with a warning (ctld
    // always sends one), however absurd; the device's geometry wins.
    for bs in [1, 513, u32::MAX] {
        let row = format!("-B {bs}");
        let warning = format!("blocksize {bs} ignored: da0 has 512-byte blocks (strict=on refuses this)");
        let req = create_asking(0, 0, bs, None);
        if let Some(lun) = created(&mut c, &row, &req, &da0, sys::CTL_LUN_WARNING, &warning) {
            c.eq(&row, "blocksize", element(lun, "blocksize").as_deref(), Some("512"));
            c.eq(&row, "remove", remove(lun).status, sys::CTL_LUN_OK);
        }
    }
    // The highest number CTL takes, then a number this backend's own LUN
    // holds, then one CTL's ramdisk backend holds.
    let top = created(&mut c, "-l 1023", &numbered(1023), &da0, sys::CTL_LUN_OK, "");
    c.eq("-l 1023", "number", top, Some(1023));
    refused(
        &mut c,
        "-l 1023 again, for da1",
        &numbered(1023),
        &opts(&[("device", "da1")]),
        "LUN 1023 is in use: it exports da0",
    );
    let rd = ctl::lun_request("ramdisk", &create_asking(0, 1 << 20, 512, Some(5)), &[]);
    c.eq("ramdisk LUN 5", "status", rd.status, sys::CTL_LUN_OK);
    refused(
        &mut c,
        "-l 5 (a ramdisk LUN's)",
        &numbered(5),
        &opts(&[("device", "da1")]),
        &beyond(5),
    );
    c.eq(
        "ramdisk LUN 5",
        "remove",
        ctl::lun_request("ramdisk", &Request::Remove { lun_id: 5 }, &[]).status,
        sys::CTL_LUN_OK,
    );
    if let Some(lun) = top {
        c.eq("-l 1023", "remove", remove(lun).status, sys::CTL_LUN_OK);
    }
    shut_down(&mut c, m);
    c.done("sizes and numbers");
}

#[test]
fn remove_modify_and_unknown_requests_name_the_lun_and_leave_nothing() {
    let gate = Arc::new(Gated::new(Disk::new("0200A0B1", 0x6005_0768_0000_0001, 1024, 512)));
    let mut c = Checks::default();
    let m = request_machine(vec![gate.clone()]);
    let remove_req = |lun_id| Request::Remove { lun_id };
    let modify_req = |lun_id| Request::Modify { lun_id, size: 0 };
    let rd = ctl::lun_request("ramdisk", &create_asking(0, 1 << 20, 512, Some(3)), &[]);
    c.eq("ramdisk LUN 3", "status", rd.status, sys::CTL_LUN_OK);
    let none = Options::new();
    let rows: Vec<(&str, Request, String)> = vec![
        ("remove 0, no LUN", remove_req(0), "no passthrough LUN 0".into()),
        (
            "remove -l -1",
            remove_req(u32::MAX),
            "no passthrough LUN 4294967295".into(),
        ),
        ("modify 16384", modify_req(16384), "no passthrough LUN 16384".into()),
        ("remove a ramdisk LUN", remove_req(3), "no passthrough LUN 3".into()),
        ("modify a ramdisk LUN", modify_req(3), "no passthrough LUN 3".into()),
        (
            "request type 3",
            Request::Raw { reqtype: 3 },
            "unknown LUN request type 3".into(),
        ),
        (
            "request type 4294967295",
            Request::Raw { reqtype: u32::MAX },
            "unknown LUN request type 4294967295".into(),
        ),
    ];
    for (row, req, want) in &rows {
        refused(&mut c, row, req, &none, want);
    }
    // A LUN being removed: its last command is held on the device, so the
    // remove request waits; other requests for it are refused meanwhile.
    let gated = opts(&[("device", "da2")]);
    if let Some(lun) = created(&mut c, "da2", &Request::create(), &gated, sys::CTL_LUN_OK, "") {
        let ua = ctl::command(lun, &[0; 6], 0);
        c.eq("da2", "power-on unit attention", ua.sense.get(12).copied(), Some(0x29));
        gate.close();
        let sync = std::thread::spawn(move || ctl::command(lun, &cdb10(0x35, 0, 0, 0), 0));
        c.eq(
            "held",
            "SYNCHRONIZE CACHE reaches the device",
            gate.wait_held(1, Duration::from_secs(10)),
            true,
        );
        let remover = std::thread::spawn(move || remove(lun));
        // CTL takes no new command for the LUN once the backend asked it
        // to remove the LUN (LOGICAL UNIT NOT SUPPORTED).
        let mut removing = false;
        for _ in 0..5000 {
            if ctl::command(lun, &[0; 6], 0).sense.get(12) == Some(&0x25) {
                removing = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        c.eq("remove", "under way", removing, true);
        let removing = format!("LUN {lun} is being removed");
        refused(&mut c, "remove twice", &remove_req(lun), &none, &removing);
        refused(&mut c, "modify while removed", &modify_req(lun), &none, &removing);
        refused(
            &mut c,
            "create on the device being removed",
            &Request::create(),
            &gated,
            &format!("da2 is already exported as LUN {lun}"),
        );
        gate.open();
        c.eq(
            "held",
            "SYNCHRONIZE CACHE",
            sync.join().map(|r| r.status).ok(),
            Some(GOOD),
        );
        c.eq(
            "held",
            "remove",
            remover.join().map(|r| r.status).ok(),
            Some(sys::CTL_LUN_OK),
        );
    }
    c.eq(
        "ramdisk LUN 3",
        "remove",
        ctl::lun_request("ramdisk", &remove_req(3), &[]).status,
        sys::CTL_LUN_OK,
    );
    shut_down(&mut c, m);
    c.done("remove and modify");
}

/// What an administrator types: ctladm refuses a repeated option itself
/// (nvlist_pack fails), so the kernel never sees it; an option CTL would
/// list unescaped breaks `ctladm devlist` for every LUN when a stock
/// backend (ramdisk) keeps it, and is refused by this one.
#[test]
fn ctladm_shows_the_refusals_and_devlist_keeps_working() {
    let script = "\
kldload ctlpass
! ctladm create -b passthrough -o device=da0 -o device=da1
! ctladm create -b passthrough -o device=da0 -o vendor=AT&T
! ctladm create -b passthrough -o device=da0 -o =x
! ctladm create -b passthrough -o device=da0 -l -1
! ctladm remove -b passthrough -l 4294967295
! ctladm modify -b passthrough -l 0 -s 1
ctladm create -b passthrough -o device=da0
ctladm devlist
ctladm create -b ramdisk -s 1m -o vendor=AT&T
! ctladm devlist
ctladm remove -b ramdisk -l 1
ctladm devlist
ctladm remove -b passthrough -l 0
kldunload ctlpass
";
    let expected = "\
# kldload ctlpass
# ! ctladm create -b passthrough -o device=da0 -o device=da1
ctladm: cctl_create_lun: error packing nvlist: File exists
# ! ctladm create -b passthrough -o device=da0 -o vendor=AT&T
ctladm: LUN creation error: option \"vendor\": '&' in \"AT&T\" would make CTL's LUN list unreadable (ctladm devlist, ctld)
# ! ctladm create -b passthrough -o device=da0 -o =x
ctladm: LUN creation error: option name \"\": empty (ctladm -o takes name=value)
# ! ctladm create -b passthrough -o device=da0 -l -1
ctladm: LUN creation error: LUN 4294967295 is in use by another backend or beyond CTL's limit (kern.cam.ctl.max_luns; see dmesg)
# ! ctladm remove -b passthrough -l 4294967295
ctladm: LUN removal error: no passthrough LUN 4294967295
# ! ctladm modify -b passthrough -l 0 -s 1
ctladm: LUN modification error: no passthrough LUN 0
# ctladm create -b passthrough -o device=da0
LUN created successfully
backend:       passthrough
device type:   0
LUN size:      8388608 bytes
blocksize      512 bytes
LUN ID:        0
Serial Number: Z1Z3ABCD
Device ID:     Z1Z3ABCD
# ctladm devlist
LUN Backend       Size (Blocks)   BS Serial Number    Device ID      \x20
  0 passthrough              16384  512 Z1Z3ABCD         Z1Z3ABCD       \x20
# ctladm create -b ramdisk -s 1m -o vendor=AT&T
LUN created successfully
backend:       ramdisk
device type:   0
LUN size:      1048576 bytes
blocksize      512 bytes
LUN ID:        1
Serial Number: MYSERIAL0000
Device ID:     MYDEVID0000
# ! ctladm devlist
ctladm: cctl_devlist: Unable to parse XML: unterminated entity in \"AT&T\"
# ctladm remove -b ramdisk -l 1
LUN 1 removed successfully
# ctladm devlist
LUN Backend       Size (Blocks)   BS Serial Number    Device ID      \x20
  0 passthrough              16384  512 Z1Z3ABCD         Z1Z3ABCD       \x20
# ctladm remove -b passthrough -l 0
LUN 0 removed successfully
# kldunload ctlpass
";
    let mut shell = Shell::new(Machine::boot(Config::standard()));
    let (transcript, ok) = shell.run_script(script, false);
    let mut c = Checks::default();
    c.eq("script", "every command did as the script says", ok, true);
    for (i, (got, want)) in transcript.lines().zip(expected.lines()).enumerate() {
        c.eq("transcript", &format!("line {}", i + 1), got, want);
    }
    c.eq(
        "transcript",
        "lines",
        transcript.lines().count(),
        expected.lines().count(),
    );
    drop(shell);
    c.eq("shutdown", "leaks", malloc::leaks(), Vec::<String>::new());
    c.done("ctladm");
}

// ======================================================================
// Part 2: CDBs from initiators
// ======================================================================

/// A booted machine with a passthrough LUN on one [`Disk`].
struct Lab {
    machine: Machine,
    lun: u32,
    disk: Arc<Disk>,
    checks: Checks,
    /// Rounds of the aftermath check, for its data.
    rounds: u8,
}

/// What an initiator must get back, and what the device must receive.
struct Want {
    status: u8,
    sense: Vec<u8>,
    residual: i64,
    /// The data received (`None`: not checked).
    data: Option<Vec<u8>>,
    /// The commands the device executed.
    device: Vec<Vec<u8>>,
}

impl Want {
    /// GOOD, the whole transfer, the device's commands.
    fn good(device: Vec<Vec<u8>>) -> Want {
        Want {
            status: GOOD,
            sense: Vec::new(),
            residual: 0,
            data: None,
            device,
        }
    }

    /// CHECK CONDITION with `sense` and `residual`, the device untouched.
    fn check(sense: Vec<u8>, residual: i64) -> Want {
        Want {
            status: CHECK_CONDITION,
            sense,
            residual,
            data: None,
            device: Vec::new(),
        }
    }

    fn residual(self, residual: i64) -> Want {
        Want { residual, ..self }
    }

    fn data(self, data: Vec<u8>) -> Want {
        Want {
            data: Some(data),
            ..self
        }
    }

    fn device(self, device: Vec<Vec<u8>>) -> Want {
        Want { device, ..self }
    }
}

impl Lab {
    /// A machine whose SIM takes `maxio` bytes, with a LUN on `disk`.
    fn new(maxio: u32, disk: Disk) -> Lab {
        let disk = Arc::new(disk);
        let machine = boot(maxio, vec![disk.clone()]);
        let r = ctl::lun_request("passthrough", &Request::create(), &[("cam", "0:0:0")]);
        assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
        let lun = r.created.map_or(0, |c| c.3);
        // The power-on unit attention, once.
        assert_eq!(ctl::command(lun, &[0; 6], 0).sense.get(12), Some(&0x29));
        disk.received();
        Lab {
            machine,
            lun,
            disk,
            checks: Checks::default(),
            rounds: 0,
        }
    }

    fn block(&self) -> usize {
        self.disk.block
    }

    /// Sends `cmd` and checks the response and the device's commands
    /// against `want`, then that the LUN still works.
    fn row(&mut self, row: &str, cmd: Cmd, want: Want) -> Response {
        let r = ctl::execute(self.lun, &cmd);
        let c = &mut self.checks;
        c.eq(row, "status", r.status, want.status);
        c.eq(row, "sense", &r.sense, &want.sense);
        c.eq(row, "residual", r.residual, want.residual);
        if let Some(data) = &want.data {
            c.eq(row, "data", r.data.len(), data.len());
            c.eq(row, "data equal", &r.data == data, true);
        }
        c.eq(row, "device received", self.disk.received(), want.device);
        self.still_works(row);
        r
    }

    /// Where the aftermath check writes: the last 8 blocks.
    fn probe_lba(&self) -> u64 {
        self.disk.blocks - 8
    }

    /// Writes a fresh pattern through the LUN to its last 8 blocks and
    /// reads it back; nothing may be left queued on the periph.
    fn still_works(&mut self, row: &str) {
        self.rounds = self.rounds.wrapping_add(1);
        let bs = self.block();
        let pattern = data(self.rounds, 8 * bs);
        let lba = self.probe_lba() as u32;
        let w = ctl::execute(self.lun, &Cmd::write(&cdb10(0x2a, 0, lba, 8), &pattern));
        let r = ctl::execute(self.lun, &Cmd::read(&cdb10(0x28, 0, lba, 8), 8 * bs));
        let c = &mut self.checks;
        c.eq(row, "then a WRITE", (w.status, w.residual), (GOOD, 0));
        c.eq(row, "then a READ", (r.status, r.residual), (GOOD, 0));
        c.eq(row, "reads back what was written", r.data == pattern, true);
        self.disk.received();
        let name = DeviceName::Address {
            path_id: 0,
            target_id: 0,
            lun_id: 0,
        };
        let queued = ctlpass::periph::find(&name).map(|p| {
            let q = ctlpass::periph::io::counts(&p);
            (q.incoming, q.active)
        });
        c.eq(row, "queued on the periph", queued, Some((0, 0)));
    }

    /// Removes the LUN, unloads, and fails the test with every failure.
    fn finish(mut self, test: &str) {
        let r = remove(self.lun);
        self.checks.eq("shutdown", "remove", r.status, sys::CTL_LUN_OK);
        shut_down(&mut self.checks, self.machine);
        self.checks.done(test);
    }
}

/// A 16384-block disk of 512-byte blocks that can unmap.
fn disk512() -> Disk {
    Disk::new("Z1Z3ABCD", 0x5000_c500_a1b2_c3d4, 16384, 512)
}

#[test]
fn unknown_opcodes_reserved_bits_and_odd_cdb_lengths_are_ctls_to_refuse() {
    let mut lab = Lab::new(64 * 1024, disk512());
    let bs = lab.block();
    let none = |cdb: &[u8]| Cmd::none(cdb);
    let mut extended = vec![0u8; 32];
    extended[0] = 0x7f;
    extended[7] = 24;
    let rows: Vec<(&str, Cmd, Want)> = vec![
        (
            "opcode 0x02",
            none(&[0x02, 0, 0, 0, 0, 0]),
            Want::check(invalid_opcode(), 0),
        ),
        (
            "vendor specific 0xc0",
            none(&[0xc0, 0, 0, 0, 0, 0]),
            Want::check(invalid_opcode(), 0),
        ),
        ("opcode 0xff", none(&[0xff; 16]), Want::check(invalid_opcode(), 0)),
        (
            "WRITE ATOMIC(16), no atomic blocks",
            Cmd::write(&cdb16(0x9c, 0, 0, 1), &vec![0; bs]),
            Want::check(invalid_opcode(), bs as i64),
        ),
        (
            "a 32-byte variable-length CDB",
            none(&extended),
            Want::check(invalid_opcode(), 0),
        ),
        (
            "SERVICE ACTION IN(16), service action 0x1f",
            Cmd::read(&cdb16(0x9e, 0x1f, 0, 0), 32),
            Want::check(sense_sks(ILLEGAL_REQUEST, 0x24, 0, [0xcc, 0, 1]), 32),
        ),
        (
            "READ(10), obsolete RELADR",
            Cmd::read(&cdb10(0x28, 0x01, 0, 1), bs),
            Want::check(invalid_field(1, 0), bs as i64),
        ),
        (
            "READ(16), RDPROTECT",
            Cmd::read(&cdb16(0x88, 0x20, 0, 1), bs),
            Want::check(invalid_field(1, 5), bs as i64),
        ),
        (
            "READ(10), vendor bits of CONTROL",
            Cmd::read(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0xc0], bs),
            Want::check(invalid_field(9, 7), bs as i64),
        ),
        (
            "WRITE SAME(10) with NDOB, which only (16) has",
            none(&cdb10(0x41, 0x01, 0, 8)),
            Want::check(invalid_field(1, 0), 0),
        ),
        (
            "COMPARE AND WRITE, byte 1 bit 0",
            Cmd::write(
                &{
                    let mut c = caw(0, 1);
                    c[1] = 0x01;
                    c
                },
                &vec![0; 2 * bs],
            ),
            Want::check(invalid_field(1, 0), 2 * bs as i64),
        ),
        (
            "UNMAP, byte 1 bit 1",
            Cmd::write(&cdb10(0x42, 0x02, 0, 24), &[0; 24]),
            Want::check(invalid_field(1, 1), 24),
        ),
        // iSCSI carries 16 CDB bytes, zero-padded: a 16-byte operation
        // code in 10 bytes is a transfer of 0 blocks at LBA 0x800.
        (
            "READ(16) in a 10-byte CDB",
            Cmd::read(&cdb10(0x88, 0, 0, 8), 8 * bs),
            Want::good(Vec::new()).residual(8 * bs as i64).data(Vec::new()),
        ),
        (
            "WRITE(16) in a 10-byte CDB",
            Cmd::write(&cdb10(0x8a, 0, 0, 8), &vec![0xee; 8 * bs]),
            Want::good(Vec::new()).residual(8 * bs as i64),
        ),
        (
            "READ(10) in a 6-byte CDB",
            Cmd::read(&[0x28, 0, 0, 0, 0, 0], 8 * bs),
            Want::good(Vec::new()).residual(8 * bs as i64).data(Vec::new()),
        ),
        (
            "READ(10) with 6 bytes of garbage after it",
            Cmd::read(&[&cdb10(0x28, 0, 40, 2)[..], &[0xa5; 6]].concat(), 2 * bs),
            Want::good(vec![cdb10(0x28, 0, 40, 2)]),
        ),
        (
            "SYNCHRONIZE CACHE(10) in a 32-byte CDB",
            none(&[&cdb10(0x35, 0, 8, 8)[..], &[0x5a; 22]].concat()),
            Want::good(vec![cdb10(0x35, 0, 8, 8)]),
        ),
        (
            "TEST UNIT READY with garbage after it",
            none(&[0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Want::good(Vec::new()),
        ),
    ];
    let count = rows.len();
    let (at_0, at_2048) = (data(0xa0, 8 * bs), data(0xa1, 8 * bs));
    lab.disk.poke(0, &at_0);
    lab.disk.poke(2048, &at_2048);
    for (row, cmd, want) in rows {
        lab.row(row, cmd, want);
    }
    lab.checks.eq("count", "rows", count, 18);
    lab.checks
        .eq("medium", "LBA 0 unchanged", lab.disk.peek(0, 8) == at_0, true);
    lab.checks
        .eq("medium", "LBA 0x800 unchanged", lab.disk.peek(2048, 8) == at_2048, true);
    lab.finish("CDBs CTL refuses");
}

#[test]
fn transfers_of_64_times_maxio_are_split_and_ranges_beyond_the_lun_are_ctls() {
    let mut lab = Lab::new(64 * 1024, disk512());
    let bs = lab.block();
    // 64 KiB of maxio: chunks of 128 blocks.
    let chunks = |op: u8, lba: u32, blocks: u32| -> Vec<Vec<u8>> {
        (0..blocks.div_ceil(128))
            .map(|i| cdb10(op, 0, lba + i * 128, (blocks - i * 128).min(128) as u16))
            .collect()
    };
    let big = data(1, 8192 * bs);
    lab.row(
        "WRITE(16) of 64 x maxio",
        Cmd::write(&cdb16(0x8a, 0, 0, 8192), &big),
        Want::good(chunks(0x2a, 0, 8192)),
    );
    lab.checks
        .eq("WRITE(16) of 64 x maxio", "medium", lab.disk.peek(0, 8192) == big, true);
    lab.row(
        "READ(16) of 64 x maxio",
        Cmd::read(&cdb16(0x88, 0, 0, 8192), 8192 * bs),
        Want::good(chunks(0x28, 0, 8192)).data(big.clone()),
    );
    let medium = lab.disk.peek(100, 8193);
    lab.row(
        "READ(12) of 64 x maxio + 1 block",
        Cmd::read(&[0xa8, 0, 0, 0, 0, 100, 0, 0, 0x20, 0x01, 0, 0], 8193 * bs),
        Want::good(chunks(0x28, 100, 8193)).data(medium),
    );
    lab.row(
        "READ(6) of 0 blocks, which is 256",
        Cmd::read(&[0x08, 0, 0, 0, 0, 0], 256 * bs),
        Want::good(chunks(0x28, 0, 256)).data(big[..256 * bs].to_vec()),
    );
    let end = Some(16384);
    let mut beyond = unmap(&[(100, 4), (16380, 10)]);
    let mut wrapping = unmap(&[(u64::MAX, 2)]);
    let rows: Vec<(&str, Cmd, Want)> = vec![
        (
            "READ(10) of 2 blocks at the last LBA",
            Cmd::read(&cdb10(0x28, 0, 16383, 2), 2 * bs),
            Want::check(out_of_range(end), 2 * bs as i64),
        ),
        (
            "READ(16) whose range wraps",
            Cmd::read(&cdb16(0x88, 0, u64::MAX, 2), 2 * bs),
            Want::check(out_of_range(None), 2 * bs as i64),
        ),
        (
            "WRITE(16) at the LBA after the last",
            Cmd::write(&cdb16(0x8a, 0, 16384, 1), &vec![0; bs]),
            Want::check(out_of_range(end), bs as i64),
        ),
        (
            "VERIFY(16) past the end",
            Cmd::none(&cdb16(0x8f, 0, 16000, 1000)),
            Want::check(out_of_range(end), 0),
        ),
        (
            "COMPARE AND WRITE past the end",
            Cmd::write(&caw(16383, 2), &vec![0; 4 * bs]),
            Want::check(out_of_range(end), 4 * bs as i64),
        ),
        (
            "WRITE SAME(16) of 4294967295 blocks",
            Cmd::write(&cdb16(0x93, 0, 0, u32::MAX), &vec![0; bs]),
            Want::check(out_of_range(end), bs as i64),
        ),
        (
            "GET LBA STATUS at the LBA after the last",
            Cmd::read(&cdb16(0x9e, 0x12, 16384, 32), 32),
            Want::check(out_of_range(end), 32),
        ),
        (
            "UNMAP with a descriptor past the end",
            Cmd::write(&beyond.0, &std::mem::take(&mut beyond.1)),
            Want::check(out_of_range(end), 0),
        ),
        (
            "UNMAP with a descriptor that wraps",
            Cmd::write(&wrapping.0, &std::mem::take(&mut wrapping.1)),
            Want::check(out_of_range(None), 0),
        ),
    ];
    for (row, cmd, want) in rows {
        lab.row(row, cmd, want);
    }
    // ctl_sync_cache has no wrap check: the device answers for itself.
    let sync = cdb16(0x91, 0, u64::MAX, 2);
    let direct = lab.disk.direct(&sync, &[]);
    lab.row(
        "SYNCHRONIZE CACHE(16) whose range wraps",
        Cmd::none(&sync),
        Want {
            status: direct.status,
            sense: direct.sense.clone(),
            residual: 0,
            data: None,
            device: vec![sync.clone()],
        },
    );
    lab.checks.eq(
        "the device's own answer",
        "sense key",
        direct.sense.get(2),
        Some(&ILLEGAL_REQUEST),
    );
    lab.checks.eq(
        "medium",
        "untouched by the refused",
        lab.disk.peek(0, 8192) == big,
        true,
    );
    lab.finish("maxio and ranges");
}

#[test]
fn data_out_short_of_the_command_ends_it_with_ctls_sense_and_writes_nothing_after() {
    let mut lab = Lab::new(64 * 1024, disk512());
    let bs = lab.block();
    let old = data(0x10, 400 * bs);
    lab.disk.poke(1000, &old);
    lab.row(
        "WRITE(10) of 8 blocks with 3",
        Cmd::write(&cdb10(0x2a, 0, 1000, 8), &data(0x11, 3 * bs)),
        Want::check(short_data_out(), -5 * bs as i64),
    );
    lab.checks.eq(
        "WRITE(10) of 8 blocks with 3",
        "medium unchanged",
        lab.disk.peek(1000, 8) == old[..8 * bs],
        true,
    );
    // The first 128-block chunk arrived whole and was written; the second
    // came short: nothing more reaches the medium.
    let new = data(0x12, 200 * bs);
    lab.row(
        "WRITE(16) of 300 blocks with 200",
        Cmd::write(&cdb16(0x8a, 0, 1000, 300), &new),
        Want::check(short_data_out(), -100 * bs as i64).device(vec![cdb10(0x2a, 0, 1000, 128)]),
    );
    let after = lab.disk.peek(1000, 300);
    lab.checks.eq(
        "WRITE(16) of 300 with 200",
        "first chunk written",
        after[..128 * bs] == new[..128 * bs],
        true,
    );
    lab.checks.eq(
        "WRITE(16) of 300 with 200",
        "nothing after it",
        after[128 * bs..] == old[128 * bs..300 * bs],
        true,
    );
    let rows: Vec<(&str, Cmd, Want)> = vec![
        (
            "COMPARE AND WRITE of 2 blocks with 3",
            Cmd::write(&caw(1000, 2), &vec![0; 3 * bs]),
            Want::check(short_data_out(), -(bs as i64)),
        ),
        (
            "WRITE SAME(10) without its block",
            Cmd::none(&cdb10(0x41, 0, 1000, 16)),
            Want::check(short_data_out(), -(bs as i64)),
        ),
        (
            "UNMAP of a 24-byte list with 8 bytes",
            Cmd::write(&cdb10(0x42, 0, 0, 24), &[0, 22, 0, 16, 0, 0, 0, 0]),
            Want::check(short_data_out(), -16),
        ),
        (
            "VERIFY(10) with BYTCHK of 4 blocks with 1",
            Cmd::write(&cdb10(0x2f, 0x02, 1000, 4), &vec![0; bs]),
            Want::check(short_data_out(), -3 * bs as i64),
        ),
        // CTL reads BYTCHK 11b as 01b and wants every block: a device
        // would compare one block with each.
        (
            "VERIFY(10) with BYTCHK 11b of 4 blocks with 1",
            Cmd::write(&cdb10(0x2f, 0x06, 1000, 4), &vec![0; bs]),
            Want::check(short_data_out(), -3 * bs as i64),
        ),
        (
            "WRITE AND VERIFY(10) of 4 blocks with 2",
            Cmd::write(&cdb10(0x2e, 0, 1000, 4), &vec![0; 2 * bs]),
            Want::check(short_data_out(), -2 * bs as i64),
        ),
    ];
    for (row, cmd, want) in rows {
        lab.row(row, cmd, want);
    }
    let medium = lab.disk.peek(1000, 300);
    lab.checks
        .eq("medium", "untouched by the short ones", medium == after, true);
    // More data than the command needs: the command takes what it needs.
    let two = data(0x13, 2 * bs);
    lab.row(
        "WRITE(10) of 1 block with 2",
        Cmd::write(&cdb10(0x2a, 0, 1000, 1), &two),
        Want::good(vec![cdb10(0x2a, 0, 1000, 1)]).residual(bs as i64),
    );
    let medium = lab.disk.peek(1000, 2);
    lab.checks.eq(
        "WRITE(10) of 1 with 2",
        "one block written",
        medium[..bs] == two[..bs],
        true,
    );
    lab.checks.eq(
        "WRITE(10) of 1 with 2",
        "not the next",
        medium[bs..] == after[bs..2 * bs],
        true,
    );
    lab.finish("short data-out");
}

/// An UNMAP CDB of `len` parameter bytes.
fn unmap_cdb(len: u16) -> Vec<u8> {
    cdb10(0x42, 0, 0, len)
}

/// The UNMAP commands the backend sends for `descriptors` descriptors of
/// one range each, in lists of at most `per` descriptors.
fn unmaps(descriptors: usize, per: usize) -> Vec<Vec<u8>> {
    (0..descriptors.div_ceil(per))
        .map(|i| unmap_cdb((8 + 16 * (descriptors - i * per).min(per)) as u16))
        .collect()
}

#[test]
fn unmap_and_write_same_with_absurd_lists_and_counts() {
    let mut lab = Lab::new(64 * 1024, disk512());
    let bs = lab.block();
    let no_sks = fixed_sense(ILLEGAL_REQUEST, 0x26, 0x00, None);
    let full = data(0x20, 16384 * bs);
    lab.disk.poke(0, &full);
    // CTL checks the parameter list (ctl_unmap) before the backend.
    let mut odd = unmap(&[(0, 8)]).1;
    odd[3] = 15;
    let mut long_header = unmap(&[(0, 8)]).1;
    long_header[1] = 200;
    lab.row(
        "UNMAP of 0 bytes",
        Cmd::none(&unmap_cdb(0)),
        Want::check(no_sks.clone(), 0),
    );
    lab.row(
        "UNMAP, descriptor length 15",
        Cmd::write(&unmap_cdb(24), &odd),
        Want::check(no_sks.clone(), 0),
    );
    lab.row(
        "UNMAP, data length beyond the list",
        Cmd::write(&unmap_cdb(24), &long_header),
        Want::check(no_sks, 0),
    );
    let (cdb, list) = unmap(&[(10, 0), (20, 0), (30, 0)]);
    lab.row(
        "UNMAP of zero-length descriptors",
        Cmd::write(&cdb, &list),
        Want::good(Vec::new()),
    );
    // The backend sends at most 255 descriptors a command (a page), and no
    // more than the device takes (256 here).
    let thousand: Vec<(u64, u32)> = (0..1000).map(|i| (i * 10, 5)).collect();
    let (cdb, list) = unmap(&thousand);
    lab.row(
        "UNMAP of 1000 descriptors",
        Cmd::write(&cdb, &list),
        Want::good(unmaps(1000, 255)),
    );
    let most: Vec<(u64, u32)> = (0..4095).map(|i| (i * 4, 1)).collect();
    let (cdb, list) = unmap(&most);
    lab.checks
        .eq("UNMAP of 4095 descriptors", "list length", list.len(), 65528);
    lab.row(
        "UNMAP of 4095 descriptors",
        Cmd::write(&cdb, &list),
        Want::good(unmaps(4095, 255)),
    );
    // The 4001st descriptor's block, and the three after it that no
    // descriptor names.
    let at = 4 * 4000;
    lab.checks.eq(
        "UNMAP of 4095 descriptors",
        "unmapped blocks read zeros",
        lab.disk.peek(at as u64, 1) == vec![0; bs],
        true,
    );
    lab.checks.eq(
        "UNMAP of 4095 descriptors",
        "the blocks between kept",
        lab.disk.peek(at as u64 + 1, 3) == full[(at + 1) * bs..(at + 4) * bs],
        true,
    );
    let (cdb, list) = unmap(&[(0, 16384)]);
    lab.row(
        "UNMAP of the whole LUN",
        Cmd::write(&cdb, &list),
        Want::good(unmaps(1, 255)),
    );
    let kept = lab.probe_lba() as usize;
    lab.checks.eq(
        "UNMAP of the whole LUN",
        "zeros",
        lab.disk.peek(0, kept) == vec![0; kept * bs],
        true,
    );
    // WRITE SAME: 0 blocks means to the last LBA.
    let block = data(0x21, bs);
    lab.row(
        "WRITE SAME(16) of 0 blocks from LBA 16000",
        Cmd::write(&cdb16(0x93, 0, 16000, 0), &block),
        Want::good(vec![cdb10(0x41, 0, 16000, 384)]),
    );
    lab.checks.eq(
        "WRITE SAME(16) to the end",
        "filled",
        lab.disk.peek(16000, 376) == block.repeat(376),
        true,
    );
    lab.row(
        "WRITE SAME(10) of 0 blocks from LBA 0",
        Cmd::write(&cdb10(0x41, 0, 0, 0), &block),
        Want::good(vec![cdb10(0x41, 0, 0, 16384)]),
    );
    lab.checks.eq(
        "WRITE SAME(10) to the end",
        "filled",
        lab.disk.peek(0, kept) == block.repeat(kept),
        true,
    );
    // ANCHOR without UNMAP: ctl_write_same points at bit 0 of byte 1
    // (ANCHOR is bit 4).
    lab.row(
        "WRITE SAME(16), ANCHOR without UNMAP",
        Cmd::write(&cdb16(0x93, 0x10, 0, 8), &block),
        Want::check(invalid_field(1, 0), bs as i64),
    );
    // With UNMAP it reaches the device, which has no ANCHOR: its answer.
    let anchored = cdb16(0x93, 0x18, 0, 8);
    let direct = lab.disk.direct(&anchored, &block);
    lab.row(
        "WRITE SAME(16), UNMAP and ANCHOR",
        Cmd::write(&anchored, &block),
        Want {
            status: direct.status,
            sense: direct.sense.clone(),
            residual: 0,
            data: None,
            device: vec![cdb10(0x41, 0x18, 0, 8)],
        },
    );
    lab.checks.eq(
        "UNMAP and ANCHOR",
        "the device's INVALID FIELD IN CDB",
        direct.sense.get(12),
        Some(&0x24),
    );
    lab.row(
        "WRITE SAME(16), NDOB and UNMAP",
        Cmd::none(&cdb16(0x93, 0x09, 300, 16)),
        Want::good(vec![cdb16(0x93, 0x09, 300, 16)]),
    );
    lab.checks.eq(
        "NDOB and UNMAP",
        "zeros",
        lab.disk.peek(300, 16) == vec![0; 16 * bs],
        true,
    );
    lab.finish("UNMAP and WRITE SAME");
}

#[test]
fn unmap_and_write_same_are_cut_to_the_devices_own_limits() {
    // MAXIMUM UNMAP LBA COUNT 8, MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT 2,
    // MAXIMUM WRITE SAME LENGTH 100.
    let disk = disk512()
        .with_limit(20, &8u32.to_be_bytes())
        .with_limit(24, &2u32.to_be_bytes())
        .with_limit(36, &100u64.to_be_bytes());
    let mut lab = Lab::new(1 << 20, disk);
    let bs = lab.block();
    lab.disk.poke(0, &data(0x30, 200 * bs));
    // CTL advertises the device's limits, but does not enforce them.
    let (cdb, list) = unmap(&[(0, 20), (100, 3)]);
    lab.row(
        "UNMAP of 20 and 3 blocks",
        Cmd::write(&cdb, &list),
        Want::good(vec![unmap_cdb(24), unmap_cdb(24), unmap_cdb(40)]),
    );
    lab.checks.eq(
        "UNMAP of 20 and 3 blocks",
        "zeros",
        lab.disk.peek(0, 20) == vec![0; 20 * bs],
        true,
    );
    lab.checks.eq(
        "UNMAP of 20 and 3 blocks",
        "zeros too",
        lab.disk.peek(100, 3) == vec![0; 3 * bs],
        true,
    );
    lab.checks.eq(
        "UNMAP of 20 and 3 blocks",
        "not between",
        lab.disk.peek(20, 80) == vec![0; 80 * bs],
        false,
    );
    let block = data(0x31, bs);
    lab.row(
        "WRITE SAME(16) of 250 blocks",
        Cmd::write(&cdb16(0x93, 0, 0, 250), &block),
        Want::good(vec![
            cdb10(0x41, 0, 0, 100),
            cdb10(0x41, 0, 100, 100),
            cdb10(0x41, 0, 200, 50),
        ]),
    );
    lab.checks.eq(
        "WRITE SAME of 250",
        "filled",
        lab.disk.peek(0, 250) == block.repeat(250),
        true,
    );
    // To the end is more than the device's limit: CTL refuses it
    // (write_same_max_lba, which the backend passes on), pointing at
    // NUMBER OF LOGICAL BLOCKS.
    lab.row(
        "WRITE SAME(16) of 0 blocks, to the end",
        Cmd::write(&cdb16(0x93, 0, 0, 0), &block),
        Want::check(sense_sks(ILLEGAL_REQUEST, 0x24, 0, [0xc0, 0, 10]), bs as i64),
    );
    lab.finish("device limits");
}

#[test]
fn compare_and_write_beyond_what_the_device_and_the_sim_take_is_refused_not_busy() {
    let compare_and_write = |lab: &mut Lab, row: &str, lba: u64, blocks: u8, want: Want| {
        let bs = lab.block();
        let n = usize::from(blocks);
        let current = lab.disk.peek(lba, n.max(1))[..n * bs].to_vec();
        let new = data(blocks, n * bs);
        let r = lab.row(
            row,
            Cmd::write(&caw(lba, blocks), &[current.clone(), new.clone()].concat()),
            want,
        );
        let written = r.status == GOOD && n > 0;
        let medium = lab.disk.peek(lba, n.max(1))[..n * bs].to_vec();
        let expected = if written { new } else { current };
        lab.checks.eq(row, "medium", medium == expected, true);
    };
    let refused = || Want::check(fixed_sense(ILLEGAL_REQUEST, 0x24, 0x00, None), 0);
    let caw_at = |lba: u64, blocks: u8| Want::good(vec![caw(lba, blocks)]);
    // maxio 64 KiB: both halves of at most 64 blocks of 512 bytes.
    let mut lab = Lab::new(64 * 1024, disk512());
    compare_and_write(&mut lab, "0 blocks", 0, 0, Want::good(Vec::new()));
    compare_and_write(&mut lab, "64 blocks", 0, 64, caw_at(0, 64));
    compare_and_write(&mut lab, "65 blocks", 0, 65, refused());
    compare_and_write(&mut lab, "255 blocks", 0, 255, refused());
    let bs = lab.block();
    let miscompare = [data(0x40, bs), data(0x41, bs)].concat();
    let direct = lab.disk.direct(&caw(7, 1), &miscompare);
    lab.row(
        "1 block that miscompares",
        Cmd::write(&caw(7, 1), &miscompare),
        Want {
            status: CHECK_CONDITION,
            sense: direct.sense.clone(),
            residual: 0,
            data: None,
            device: vec![caw(7, 1)],
        },
    );
    lab.checks.eq(
        "miscompare",
        "the device's MISCOMPARE",
        direct.sense.get(12..14),
        Some(&[0x1d, 0][..]),
    );
    let current = lab.disk.peek(9, 1);
    lab.row(
        "1 block with 2 blocks of data",
        Cmd::write(&caw(9, 1), &[current, data(0x42, bs), data(0x43, bs)].concat()),
        Want::good(vec![caw(9, 1)]).residual(bs as i64),
    );
    lab.checks
        .eq("1 block with 2", "written", lab.disk.peek(9, 1), data(0x42, bs));
    lab.finish("COMPARE AND WRITE, 512-byte blocks");
    // 4Kn behind 1 MiB of maxio: 255 blocks each way need 2 MiB, more than
    // a buffer holds; 128 fit.
    let mut lab = Lab::new(1 << 20, Disk::new("S6PXNM0T", 0x5002_5388_a0b1_c2d3, 2048, 4096));
    compare_and_write(&mut lab, "255 blocks of 4 KiB", 0, 255, refused());
    compare_and_write(&mut lab, "129 blocks of 4 KiB", 0, 129, refused());
    compare_and_write(&mut lab, "128 blocks of 4 KiB", 0, 128, caw_at(0, 128));
    lab.finish("COMPARE AND WRITE, 4Kn");
    // A device whose MAXIMUM COMPARE AND WRITE LENGTH is 4.
    let mut lab = Lab::new(1 << 20, disk512().with_limit(5, &[4]));
    compare_and_write(&mut lab, "5 blocks, the device takes 4", 0, 5, refused());
    compare_and_write(&mut lab, "4 blocks", 0, 4, caw_at(0, 4));
    lab.finish("COMPARE AND WRITE, the device's limit");
}

#[test]
fn get_lba_status_and_reads_with_odd_allocation_lengths() {
    let mut lab = Lab::new(64 * 1024, disk512());
    let bs = lab.block();
    lab.row(
        "GET LBA STATUS, allocation length 0",
        Cmd::read(&cdb16(0x9e, 0x12, 0, 0), 64),
        Want::good(vec![cdb16(0x9e, 0x12, 0, 0)]).residual(64).data(Vec::new()),
    );
    let gls = cdb16(0x9e, 0x12, 0, 24);
    let mut direct = vec![0u8; 24];
    let o = lab.disk.inner.execute(Command {
        cdb: &gls,
        data_out: &[],
        data_in: &mut direct,
    });
    lab.checks.eq("the device's LBA status", "length", o.transferred, 24);
    lab.row(
        "GET LBA STATUS, allocation length 4294967295",
        Cmd::read(&cdb16(0x9e, 0x12, 0, u32::MAX), 64),
        Want::good(vec![gls]).residual(40).data(direct),
    );
    let medium = lab.disk.peek(3, 1);
    lab.row(
        "READ(10) of 1 block into 3",
        Cmd::read(&cdb10(0x28, 0, 3, 1), 3 * bs),
        Want::good(vec![cdb10(0x28, 0, 3, 1)])
            .residual(2 * bs as i64)
            .data(medium),
    );
    lab.finish("allocation lengths");
}

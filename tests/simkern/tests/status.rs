//! The backend's completion-status table (`src/backend/reply.rs`: `next`
//! and `of`) proven row by row, end to end: a command from an initiator
//! goes through CTL's iSCSI port, the passthrough backend and CAM to a
//! simulated SIM that injects the row's fault, and the test checks what
//! the initiator gets back (status, sense, data, residual), what the
//! device saw, and that nothing is left queued, frozen or allocated; then
//! ten thousand mixed I/Os under random faults, each response predicted
//! from the faults its device commands meet.
//!
//! Checks are collected rather than asserted while a machine runs, so that
//! the machine always shuts down (a panic with it running would fail every
//! later test of this file) and a failure lists everything that went wrong,
//! named by its row.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ctlpass::backend::DeviceName;
use ctlpass::periph::io::QueueCounts;
use simkern::cam::{self, Count, DirectData, Effect, Fault, Match, fixed_sense};
use simkern::ctl::frontend::Response;
use simkern::ctl::{self, Cmd, Request};
use simkern::devices::{
    BUSY, CHECK_CONDITION, Command, GOOD, Identity, Outcome, RESERVATION_CONFLICT, RamDisk, ScsiDevice, TASK_SET_FULL,
};
use simkern::{Config, Machine, malloc, sys};

/// Bytes per block of the disk.
const BS: usize = 512;

/// Blocks of the disk (sparse: only written blocks take memory).
const DISK_BLOCKS: u64 = 1 << 22;

/// SCSI status CHECK CONDITION, short.
const CHECK: u8 = CHECK_CONDITION;

/// READ(10).
const READ_10: u8 = 0x28;
/// WRITE(10).
const WRITE_10: u8 = 0x2a;
/// VERIFY(10).
const VERIFY_10: u8 = 0x2f;
/// SYNCHRONIZE CACHE(10).
const SYNC_CACHE_10: u8 = 0x35;
/// REQUEST SENSE.
const REQUEST_SENSE: u8 = 0x03;

/// How many times the SIM sees a command it keeps bouncing
/// (`CAM_REQUEUE_REQ`) before the backend answers BUSY: the first attempt
/// and three resends.
const REQUEUE_ATTEMPTS: u64 = 4;

// --- the device ---

/// A RAM disk that logs the CDBs it executes.
struct Recorder {
    inner: RamDisk,
    log: Mutex<Vec<Vec<u8>>>,
}

/// Locks `m`, poisoned or not.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// A disk of [`DISK_BLOCKS`] zeroed blocks.
    fn new() -> Recorder {
        let identity = Identity {
            vendor: "SEAGATE".into(),
            product: "ST4000NM0023".into(),
            revision: "0004".into(),
            serial: "Z1Z3STAT".into(),
            naa: Some(0x5000_c500_a1b2_c3d5),
            eui64: None,
        };
        Recorder {
            inner: RamDisk::new(identity, DISK_BLOCKS, BS as u32),
            log: Mutex::default(),
        }
    }

    /// The CDBs the disk executed since the last call.
    fn take_log(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *lock(&self.log))
    }

    /// Reads `n` blocks at `lba` straight from the medium (empty if the
    /// disk refuses).
    fn peek(&self, lba: u64, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n * BS];
        let o = self.inner.execute(Command {
            cdb: &cdb16(0x88, lba, n as u32),
            data_out: &[],
            data_in: &mut buf,
        });
        if o.status == GOOD { buf } else { Vec::new() }
    }

    /// Writes `data` at `lba` straight to the medium; says whether the
    /// disk took it.
    fn poke(&self, lba: u64, data: &[u8]) -> bool {
        let o = self.inner.execute(Command {
            cdb: &cdb16(0x8a, lba, (data.len() / BS) as u32),
            data_out: data,
            data_in: &mut [],
        });
        o.status == GOOD
    }
}

impl ScsiDevice for Recorder {
    fn device_type(&self) -> u8 {
        self.inner.device_type()
    }

    fn identity(&self) -> &Identity {
        self.inner.identity()
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        lock(&self.log).push(cmd.cdb.to_vec());
        self.inner.execute(cmd)
    }
}

// --- CDBs and data ---

/// A 10-byte CDB: `op`, byte 1, LBA, length.
fn cdb10(op: u8, byte1: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![op, byte1, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
    c[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
    c
}

/// A 16-byte CDB: `op`, LBA, length.
fn cdb16(op: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// The content of `n` blocks from `lba` as written with `tag` (tag 0: the
/// preloaded content): each block starts with its LBA and the tag, so a
/// block in the wrong place or from the wrong write shows.
fn blocks(tag: u64, lba: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n * BS];
    for (i, b) in out.chunks_exact_mut(BS).enumerate() {
        let at = lba + i as u64;
        b[..8].copy_from_slice(&at.to_be_bytes());
        b[8..16].copy_from_slice(&tag.to_be_bytes());
        let seed = at.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tag.rotate_left(17);
        for (j, x) in b[16..].iter_mut().enumerate() {
            *x = (seed >> ((j % 8) * 8)) as u8 ^ j as u8;
        }
    }
    out
}

/// Descriptor-format sense data (response code 0x72) with an INFORMATION
/// descriptor holding `info`.
fn descriptor_sense(key: u8, asc: u8, ascq: u8, info: u64) -> Vec<u8> {
    let mut s = vec![0x72, key, asc, ascq, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0];
    s.extend_from_slice(&info.to_be_bytes());
    s
}

/// The sense data a device without anything to report returns to REQUEST
/// SENSE: NO SENSE.
fn no_sense() -> Vec<u8> {
    fixed_sense(0, 0, 0, None)
}

/// What the table says an initiator gets for a CAM transport status: the
/// SCSI status and the sense data CTL builds (fixed format, no
/// INFORMATION).
fn transport_reply(cam_status: u32) -> (u8, Vec<u8>) {
    match cam_status {
        sys::CAM_REQUEUE_REQ | sys::CAM_BUSY | sys::CAM_SCSI_BUSY | sys::CAM_RESRC_UNAVAIL => (BUSY, Vec::new()),
        sys::CAM_DEV_NOT_THERE | sys::CAM_SEL_TIMEOUT => (CHECK, fixed_sense(0x02, 0x04, 0x00, None)),
        sys::CAM_CMD_TIMEOUT => (CHECK, fixed_sense(0x0b, 0x2e, 0x02, None)),
        sys::CAM_REQ_ABORTED => (CHECK, fixed_sense(0x0b, 0x45, 0x00, None)),
        sys::CAM_UNCOR_PARITY => (CHECK, fixed_sense(0x0b, 0x47, 0x00, None)),
        sys::CAM_DATA_RUN_ERR => (CHECK, fixed_sense(0x0b, 0x4b, 0x00, None)),
        _ => (CHECK, fixed_sense(0x04, 0x44, 0x00, None)),
    }
}

/// A response in a line: status, sense, residual, and the data's length
/// and where it first differs from `want` (if given).
fn show(r: &Response, want: Option<&[u8]>) -> String {
    let diff = want
        .and_then(|w| {
            r.data
                .iter()
                .zip(w)
                .position(|(a, b)| a != b)
                .map(|i| format!(", first differing data byte {i}"))
        })
        .unwrap_or_default();
    format!(
        "status {:#04x}, sense {:02x?}, residual {}, {} data bytes{diff}",
        r.status,
        r.sense,
        r.residual,
        r.data.len()
    )
}

/// The ctlpass periph's queue counts for the device at 0:0:0, read from
/// the crate itself (`None` if there is no such periph).
fn periph_queues() -> Option<QueueCounts> {
    let name = DeviceName::Address {
        path_id: 0,
        target_id: 0,
        lun_id: 0,
    };
    let periph = ctlpass::periph::find(&name)?;
    let counts = ctlpass::periph::io::counts(&periph);
    drop(periph);
    Some(counts)
}

// --- the machine ---

/// A booted machine with a passthrough LUN on one [`Recorder`] disk, and
/// the checks that failed so far.
struct Lab {
    machine: Machine,
    lun: u32,
    disk: Arc<Recorder>,
    /// The LUN exists (booting went well).
    ready: bool,
    failures: Vec<String>,
}

impl Lab {
    /// Boots a machine whose SIM takes `maxio` bytes at once (32
    /// openings), with `preload` blocks from LBA 0 holding `blocks(0, ..)`,
    /// loads ctlpass, exports the disk and takes the power-on unit
    /// attention.
    fn boot(maxio: u32, preload: u64) -> Lab {
        let disk = Arc::new(Recorder::new());
        for lba in (0..preload).step_by(256) {
            let n = (preload - lba).min(256) as usize;
            assert!(disk.poke(lba, &blocks(0, lba, n)), "preloading LBA {lba}");
        }
        let machine = Machine::boot(Config::one_bus(maxio, 32, vec![disk.clone()]));
        let mut lab = Lab {
            machine,
            lun: 0,
            disk,
            ready: false,
            failures: Vec::new(),
        };
        if let Err(e) = lab.machine.kldload() {
            lab.failures.push(format!("kldload: {e}"));
            return lab;
        }
        let create = Request::create();
        let r = ctl::lun_request("passthrough", &create, &[("cam", "0:0:0")]);
        match r.created {
            Some(created) if r.status == sys::CTL_LUN_OK => {
                lab.lun = created.3;
                lab.ready = true;
            }
            _ => {
                lab.failures.push(format!("LUN creation: {r:?}"));
                return lab;
            }
        }
        let ua = ctl::execute(lab.lun, &Cmd::none(&[0; 6]));
        lab.expect("the power-on unit attention", ua.sense.get(12).copied(), Some(0x29));
        lab.disk.take_log();
        cam::reset_device_stats(0, 0, 0);
        lab
    }

    /// Whether booting failed (nothing else is worth trying then).
    fn broken(&self) -> bool {
        !self.ready
    }

    /// Records a failure of `what` unless `got == want`.
    fn expect<T: PartialEq + Debug>(&mut self, what: impl Display, got: T, want: T) {
        if got != want {
            self.failures.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// Records a failure of `what` unless `ok`.
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    /// Records a failure of `what` unless the response is `want`.
    fn expect_response(&mut self, what: impl Display, got: &Response, want: &Response) {
        if got != want {
            self.failures.push(format!(
                "{what}:\n    got  {}\n    want {}",
                show(got, Some(&want.data)),
                show(want, None)
            ));
        }
    }

    /// After a faulted command: the device queue is neither frozen nor
    /// busy, the periph's queues are empty, the device holds no sense data
    /// (a REQUEST SENSE sent to it directly says NO SENSE), and with the
    /// faults gone a READ of preloaded blocks returns them.
    fn settled(&mut self, row: &str) {
        let s = cam::device_stats(0, 0, 0);
        self.expect(
            format!("{row}: device queue (frozen, queued, in flight) afterwards"),
            (s.frozen, s.queued, s.in_flight),
            (0, 0, 0),
        );
        self.expect(
            format!("{row}: periph queues (incoming, active) afterwards"),
            periph_queues().map(|q| (q.incoming, q.active)),
            Some((0, 0)),
        );
        let rs = cam::execute_direct(0, 0, 0, &[REQUEST_SENSE, 0, 0, 0, 252, 0], DirectData::In(252));
        self.expect(format!("{row}: sense data the device still holds"), rs.data, no_sense());
        cam::clear_faults(0, 0, 0);
        let r = ctl::execute(self.lun, &Cmd::read(&cdb10(READ_10, 0, 0, 16), 16 * BS));
        let want = Response {
            data: blocks(0, 0, 16),
            ..Response::default()
        };
        self.expect_response(format!("{row}: the READ after it"), &r, &want);
        self.disk.take_log();
        cam::reset_device_stats(0, 0, 0);
    }

    /// Removes the LUN (promptly: nothing may be stuck), unloads ctlpass,
    /// checks that nothing leaked, and gives back the failures.
    fn shut_down(mut self) -> Vec<String> {
        if !self.broken() {
            let t = Instant::now();
            let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: self.lun }, &[]);
            let took = t.elapsed();
            self.expect("LUN removal", r.status, sys::CTL_LUN_OK);
            self.check(took < Duration::from_secs(2), || {
                format!("LUN removal took {took:?}: a command is stuck")
            });
            let unload = self.machine.kldunload();
            self.expect("kldunload", unload, Ok(()));
            self.expect("leaks", malloc::leaks(), Vec::<String>::new());
        }
        let Lab { machine, failures, .. } = self;
        drop(machine);
        failures
    }
}

/// Shuts `lab` down and fails the test with its failures, if any.
fn finish(lab: Lab, test: &str) {
    let failures = lab.shut_down();
    assert!(failures.is_empty(), "{test}:\n  {}", failures.join("\n  "));
}

// --- one row of the table ---

/// A row of the table: a fault on the device command, and what the
/// initiator and the device see.
struct Case {
    /// The row.
    row: &'static str,
    /// The SIM's fault.
    effect: Effect,
    /// How many times it fires.
    count: Count,
    /// The status and sense data the initiator gets.
    status: u8,
    sense: Vec<u8>,
    /// Bytes that move: a READ's data that reach the initiator; of a WRITE,
    /// the whole blocks among them reach the medium.
    moved: usize,
    /// Commands the SIM starts for it (the resends and a REQUEST SENSE
    /// included).
    started: u64,
    /// Times the device executes the READ or WRITE.
    ran: usize,
    /// Whether the row is also checked on a WRITE.
    write: bool,
}

/// The READ (and WRITE) of a row: 8 blocks.
const ROW_BLOCKS: usize = 8;
/// Where the row's READ reads (preloaded blocks).
const ROW_READ_LBA: u64 = 16;
/// Where the row's WRITE writes (blocks never written before).
const ROW_WRITE_LBA: u64 = 2048;

impl Case {
    /// A row whose fault leaves the command as if nothing happened.
    fn clean(row: &'static str, effect: Effect, count: Count, started: u64) -> Case {
        Case {
            row,
            effect,
            count,
            status: GOOD,
            sense: Vec::new(),
            moved: ROW_BLOCKS * BS,
            started,
            ran: 1,
            write: true,
        }
    }

    /// A row whose command fails with `status` and `sense` before the
    /// device executes it.
    fn failed(row: &'static str, effect: Effect, status: u8, sense: Vec<u8>) -> Case {
        Case {
            row,
            effect,
            count: Count::Once,
            status,
            sense,
            moved: 0,
            started: 1,
            ran: 0,
            write: true,
        }
    }

    /// A row whose CAM status `cam_status` fails the command as the table
    /// says.
    fn transport(row: &'static str, cam_status: u32) -> Case {
        let (status, sense) = transport_reply(cam_status);
        Case::failed(row, Effect::Cam(cam_status), status, sense)
    }
}

/// Checks `case` on a READ of preloaded blocks and, if the row says so, on
/// a WRITE, each followed by the checks of [`Lab::settled`].
fn row(case: Case) {
    let mut lab = Lab::boot(1 << 20, 64);
    if !lab.broken() {
        read_row(&mut lab, &case);
        lab.settled(&format!("{} (READ)", case.row));
        if case.write {
            write_row(&mut lab, &case);
            lab.settled(&format!("{} (WRITE)", case.row));
        }
    }
    finish(lab, case.row);
}

/// The READ of a row.
fn read_row(lab: &mut Lab, case: &Case) {
    let what = format!("{} (READ)", case.row);
    let n = ROW_BLOCKS as u64;
    let fault = Fault {
        when: Match::opcode(READ_10).lbas(ROW_READ_LBA..ROW_READ_LBA + n),
        count: case.count,
        effect: case.effect.clone(),
    };
    cam::inject(0, 0, 0, fault);
    let cdb = cdb10(READ_10, 0, ROW_READ_LBA, n as u32);
    let r = ctl::execute(lab.lun, &Cmd::read(&cdb, ROW_BLOCKS * BS));
    let stored = blocks(0, ROW_READ_LBA, ROW_BLOCKS);
    let want = Response {
        status: case.status,
        sense: case.sense.clone(),
        data: stored[..case.moved].to_vec(),
        residual: (ROW_BLOCKS * BS - case.moved) as i64,
    };
    lab.expect_response(&what, &r, &want);
    let s = cam::device_stats(0, 0, 0);
    lab.expect(format!("{what}: commands the SIM started"), s.started, case.started);
    lab.expect(
        format!("{what}: commands the device executed"),
        lab.disk.take_log(),
        vec![cdb; case.ran],
    );
}

/// The WRITE of a row.
fn write_row(lab: &mut Lab, case: &Case) {
    let what = format!("{} (WRITE)", case.row);
    let n = ROW_BLOCKS as u64;
    let fault = Fault {
        when: Match::opcode(WRITE_10).lbas(ROW_WRITE_LBA..ROW_WRITE_LBA + n),
        count: case.count,
        effect: case.effect.clone(),
    };
    cam::inject(0, 0, 0, fault);
    let data = blocks(1, ROW_WRITE_LBA, ROW_BLOCKS);
    let cdb = cdb10(WRITE_10, 0, ROW_WRITE_LBA, n as u32);
    let r = ctl::execute(lab.lun, &Cmd::write(&cdb, &data));
    let want = Response {
        status: case.status,
        sense: case.sense.clone(),
        data: Vec::new(),
        // What the device did not take, as it would be directly.
        residual: (ROW_BLOCKS * BS - case.moved) as i64,
    };
    lab.expect_response(&what, &r, &want);
    let s = cam::device_stats(0, 0, 0);
    lab.expect(format!("{what}: commands the SIM started"), s.started, case.started);
    // A WRITE cut short reaches the device as the whole blocks that came.
    let landed = case.moved / BS;
    let executed = if landed == ROW_BLOCKS {
        cdb
    } else {
        cdb10(WRITE_10, 0, ROW_WRITE_LBA, landed as u32)
    };
    lab.expect(
        format!("{what}: commands the device executed"),
        lab.disk.take_log(),
        vec![executed; case.ran],
    );
    let mut medium = data[..landed * BS].to_vec();
    medium.resize(ROW_BLOCKS * BS, 0);
    let on_disk = lab.disk.peek(ROW_WRITE_LBA, ROW_BLOCKS);
    lab.check(on_disk == medium, || {
        format!("{what}: the medium does not hold exactly the {landed} blocks written")
    });
}

// --- CAM_REQ_CMP ---

#[test]
fn req_cmp_without_a_fault_is_good_with_all_data() {
    // The baseline every other row is read against: a delay changes nothing.
    row(Case::clean(
        "CAM_REQ_CMP",
        Effect::Delay(Duration::from_millis(1)),
        Count::Once,
        1,
    ));
}

#[test]
fn req_cmp_with_a_short_transfer_is_good_with_the_residual_and_only_the_moved_bytes() {
    row(Case {
        moved: 3 * BS + 100,
        write: false,
        ..Case::clean(
            "CAM_REQ_CMP, short READ",
            Effect::short(3 * BS as u32 + 100),
            Count::Once,
            1,
        )
    });
}

#[test]
fn req_cmp_with_a_short_write_does_not_claim_the_whole_write() {
    // The SIM reports CAM_REQ_CMP with a residual: the device took 1636 of
    // the 4096 bytes (three whole blocks reach the medium).  Sent directly,
    // the initiator would see that residual; through the LUN it must learn
    // that the write is incomplete, by the residual or an error status,
    // never GOOD with nothing missing.
    let mut lab = Lab::boot(1 << 20, 64);
    let what = "CAM_REQ_CMP, short WRITE";
    let took = 3 * BS + 100;
    let n = ROW_BLOCKS as u64;
    cam::inject(
        0,
        0,
        0,
        Fault::new(
            Match::opcode(WRITE_10).lbas(ROW_WRITE_LBA..ROW_WRITE_LBA + n),
            Effect::short(took as u32),
        ),
    );
    let data = blocks(1, ROW_WRITE_LBA, ROW_BLOCKS);
    let r = ctl::execute(
        lab.lun,
        &Cmd::write(&cdb10(WRITE_10, 0, ROW_WRITE_LBA, n as u32), &data),
    );
    let direct_residual = (ROW_BLOCKS * BS - took) as i64;
    lab.check(r.status != GOOD || r.residual == direct_residual, || {
        format!(
            "{what}: got {}; want the device's residual {direct_residual} (or an error status)",
            show(&r, None)
        )
    });
    let mut medium = data[..3 * BS].to_vec();
    medium.resize(ROW_BLOCKS * BS, 0);
    let on_disk = lab.disk.peek(ROW_WRITE_LBA, ROW_BLOCKS);
    lab.check(on_disk == medium, || {
        format!("{what}: the medium does not hold exactly the 3 blocks the device took")
    });
    lab.settled(what);
    finish(lab, what);
}

// --- device status and sense, verbatim ---

#[test]
fn check_condition_with_fixed_autosense_passes_verbatim_with_its_information_field() {
    let sense = fixed_sense(0x03, 0x11, 0x00, Some(0x0001_2345));
    row(Case::failed(
        "CHECK CONDITION, fixed-format autosense",
        Effect::Status {
            status: CHECK,
            sense: sense.clone(),
        },
        CHECK,
        sense,
    ));
}

#[test]
fn check_condition_with_descriptor_autosense_passes_verbatim_with_its_information_field() {
    let sense = descriptor_sense(0x03, 0x11, 0x00, 0x0123_4567_89ab);
    row(Case::failed(
        "CHECK CONDITION, descriptor-format autosense",
        Effect::Status {
            status: CHECK,
            sense: sense.clone(),
        },
        CHECK,
        sense,
    ));
}

#[test]
fn check_condition_after_part_of_the_data_keeps_the_data_the_sense_and_the_residual() {
    // A medium error after 4 blocks: the device moved them (a READ returns
    // them, a WRITE wrote them), then CHECK CONDITION with the bad LBA.
    let sense = fixed_sense(0x03, 0x11, 0x00, Some(ROW_READ_LBA as u32 + 4));
    row(Case {
        moved: 4 * BS,
        ran: 1,
        ..Case::failed(
            "CHECK CONDITION after 4 blocks",
            Effect::Short {
                bytes: 4 * BS as u32,
                status: CHECK,
                sense: sense.clone(),
            },
            CHECK,
            sense,
        )
    });
}

#[test]
fn check_condition_without_autosense_is_answered_with_request_sense_data_in_fixed_format() {
    let sense = fixed_sense(0x04, 0x3e, 0x03, Some(0x1234));
    row(Case {
        started: 2,
        ..Case::failed(
            "CHECK CONDITION without autosense (fixed)",
            Effect::NoAutosense { sense: sense.clone() },
            CHECK,
            sense,
        )
    });
}

#[test]
fn check_condition_without_autosense_is_answered_with_request_sense_data_in_descriptor_format() {
    let sense = descriptor_sense(0x0b, 0x47, 0x03, 77);
    row(Case {
        started: 2,
        ..Case::failed(
            "CHECK CONDITION without autosense (descriptor)",
            Effect::NoAutosense { sense: sense.clone() },
            CHECK,
            sense,
        )
    });
}

#[test]
fn busy_passes_verbatim_without_sense() {
    row(Case::failed("BUSY", Effect::busy(), BUSY, Vec::new()));
}

#[test]
fn task_set_full_passes_verbatim_without_sense() {
    row(Case::failed(
        "TASK SET FULL",
        Effect::task_set_full(),
        TASK_SET_FULL,
        Vec::new(),
    ));
}

#[test]
fn reservation_conflict_passes_verbatim_without_sense() {
    row(Case::failed(
        "RESERVATION CONFLICT",
        Effect::reservation_conflict(),
        RESERVATION_CONFLICT,
        Vec::new(),
    ));
}

// --- CAM_REQUEUE_REQ: resent, then BUSY ---

#[test]
fn requeue_once_is_resent_transparently() {
    row(Case::clean(
        "CAM_REQUEUE_REQ once",
        Effect::Cam(sys::CAM_REQUEUE_REQ),
        Count::Once,
        2,
    ));
}

#[test]
fn requeue_three_times_is_still_resent_transparently() {
    row(Case::clean(
        "CAM_REQUEUE_REQ three times",
        Effect::Cam(sys::CAM_REQUEUE_REQ),
        Count::Times(3),
        REQUEUE_ATTEMPTS,
    ));
}

#[test]
fn requeue_four_times_is_busy() {
    row(Case {
        count: Count::Times(4),
        started: REQUEUE_ATTEMPTS,
        ..Case::transport("CAM_REQUEUE_REQ four times", sys::CAM_REQUEUE_REQ)
    });
}

#[test]
fn requeue_always_is_busy_after_three_resends() {
    row(Case {
        count: Count::Always,
        started: REQUEUE_ATTEMPTS,
        ..Case::transport("CAM_REQUEUE_REQ always", sys::CAM_REQUEUE_REQ)
    });
}

// --- CAM transport errors ---

#[test]
fn cam_busy_is_busy() {
    row(Case::transport("CAM_BUSY", sys::CAM_BUSY));
}

#[test]
fn cam_scsi_busy_is_busy() {
    row(Case::transport("CAM_SCSI_BUSY", sys::CAM_SCSI_BUSY));
}

#[test]
fn cam_resrc_unavail_is_busy() {
    row(Case::transport("CAM_RESRC_UNAVAIL", sys::CAM_RESRC_UNAVAIL));
}

#[test]
fn cam_dev_not_there_is_not_ready() {
    row(Case::transport("CAM_DEV_NOT_THERE", sys::CAM_DEV_NOT_THERE));
}

#[test]
fn cam_sel_timeout_is_not_ready() {
    row(Case::transport("CAM_SEL_TIMEOUT", sys::CAM_SEL_TIMEOUT));
}

#[test]
fn cam_cmd_timeout_is_an_aborted_command_and_a_write_is_not_retried() {
    // The WRITE row checks that the SIM started the timed-out WRITE once.
    row(Case::transport("CAM_CMD_TIMEOUT", sys::CAM_CMD_TIMEOUT));
}

#[test]
fn cam_req_aborted_is_an_aborted_command() {
    row(Case::transport("CAM_REQ_ABORTED", sys::CAM_REQ_ABORTED));
}

#[test]
fn cam_uncor_parity_is_a_scsi_parity_error() {
    row(Case::transport("CAM_UNCOR_PARITY", sys::CAM_UNCOR_PARITY));
}

#[test]
fn cam_data_run_err_is_a_data_phase_error() {
    row(Case::transport("CAM_DATA_RUN_ERR", sys::CAM_DATA_RUN_ERR));
}

#[test]
fn cam_req_cmp_err_is_an_internal_target_failure() {
    row(Case::transport("CAM_REQ_CMP_ERR", sys::CAM_REQ_CMP_ERR));
}

#[test]
fn cam_scsi_bus_reset_is_an_internal_target_failure() {
    row(Case::transport("CAM_SCSI_BUS_RESET", sys::CAM_SCSI_BUS_RESET));
}

// --- faults on a later chunk of a split transfer ---

/// Blocks of a split transfer: three chunks at a maxio of 64 KiB (128,
/// 128, 44).
const SPLIT_BLOCKS: usize = 300;
/// Blocks per chunk at a maxio of 64 KiB.
const CHUNK: usize = 128;

/// A fault on the second chunk of a split READ and WRITE, and what comes of
/// it: the status and sense, the bytes of the second chunk that move, the
/// commands the SIM starts, and whether the third chunk is sent.
struct SplitCase {
    row: &'static str,
    effect: Effect,
    status: u8,
    sense: Vec<u8>,
    /// Bytes of the second chunk that move (a READ's reach the initiator).
    moved: usize,
    /// Commands the SIM starts for the READ (and the WRITE).
    started: u64,
    /// Chunks the device executes (of the READ, and of the WRITE).
    ran: usize,
    /// Whether the transfer goes on after the second chunk.
    goes_on: bool,
    /// Whether the row is also checked on a WRITE.
    write: bool,
}

/// Checks `case` on a READ of [`SPLIT_BLOCKS`] preloaded blocks and on a
/// WRITE as long, at a maxio of 64 KiB.
fn split_row(case: SplitCase) {
    let mut lab = Lab::boot(64 * 1024, 1024);
    if lab.broken() {
        return finish(lab, case.row);
    }
    let second = (CHUNK as u64)..(2 * CHUNK as u64);
    let chunks = |op: u8, base: u64, sent: usize| -> Vec<Vec<u8>> {
        [(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, SPLIT_BLOCKS - 2 * CHUNK)]
            .iter()
            .take(sent)
            .map(|&(at, n)| cdb10(op, 0, base + at as u64, n as u32))
            .collect()
    };
    let ok = case.status == GOOD && case.goes_on;

    // The READ.
    let what = format!("{} on the second chunk (READ)", case.row);
    cam::inject(
        0,
        0,
        0,
        Fault::new(Match::opcode(READ_10).lbas(second.clone()), case.effect.clone()),
    );
    let edtl = SPLIT_BLOCKS * BS;
    let cdb = cdb10(READ_10, 0, 0, SPLIT_BLOCKS as u32);
    let r = ctl::execute(lab.lun, &Cmd::read(&cdb, edtl));
    let got = if ok { edtl } else { CHUNK * BS + case.moved };
    let want = Response {
        status: case.status,
        sense: case.sense.clone(),
        data: blocks(0, 0, SPLIT_BLOCKS)[..got].to_vec(),
        residual: (edtl - got) as i64,
    };
    lab.expect_response(&what, &r, &want);
    lab.expect(
        format!("{what}: commands the SIM started"),
        cam::device_stats(0, 0, 0).started,
        case.started,
    );
    lab.expect(
        format!("{what}: commands the device executed"),
        lab.disk.take_log(),
        chunks(READ_10, 0, case.ran),
    );
    lab.settled(&what);
    if !case.write {
        return finish(lab, case.row);
    }

    // The WRITE.
    let what = format!("{} on the second chunk (WRITE)", case.row);
    let base = 4096u64;
    cam::inject(
        0,
        0,
        0,
        Fault::new(
            Match::opcode(WRITE_10).lbas(base + second.start..base + second.end),
            case.effect.clone(),
        ),
    );
    let data = blocks(2, base, SPLIT_BLOCKS);
    let r = ctl::execute(
        lab.lun,
        &Cmd::write(&cdb10(WRITE_10, 0, base, SPLIT_BLOCKS as u32), &data),
    );
    // What the device did not take, as it would be directly.
    let taken = if ok { edtl } else { CHUNK * BS + case.moved };
    let want = Response {
        status: case.status,
        sense: case.sense.clone(),
        data: Vec::new(),
        residual: (edtl - taken) as i64,
    };
    lab.expect_response(&what, &r, &want);
    lab.expect(
        format!("{what}: commands the SIM started"),
        cam::device_stats(0, 0, 0).started,
        case.started,
    );
    let log = lab.disk.take_log();
    let writes = log.iter().filter(|c| c[0] == WRITE_10).count();
    lab.expect(
        format!("{what}: WRITEs the device executed (once per chunk sent, never again)"),
        writes,
        case.ran,
    );
    let landed = if ok { SPLIT_BLOCKS } else { CHUNK + case.moved / BS };
    let mut medium = data[..landed * BS].to_vec();
    medium.resize(SPLIT_BLOCKS * BS, 0);
    let on_disk = lab.disk.peek(base, SPLIT_BLOCKS);
    lab.check(on_disk == medium, || {
        format!("{what}: the medium does not hold exactly the first {landed} blocks")
    });
    lab.settled(&what);
    finish(lab, case.row);
}

#[test]
fn a_timeout_on_a_later_chunk_returns_the_chunks_before_it_and_their_residual() {
    let (status, sense) = transport_reply(sys::CAM_CMD_TIMEOUT);
    split_row(SplitCase {
        row: "CAM_CMD_TIMEOUT",
        effect: Effect::Cam(sys::CAM_CMD_TIMEOUT),
        status,
        sense,
        moved: 0,
        started: 2,
        ran: 1,
        goes_on: false,
        write: true,
    });
}

#[test]
fn check_condition_without_autosense_on_a_later_chunk_keeps_the_residual_of_the_chunks_before_it() {
    let sense = fixed_sense(0x04, 0x3e, 0x03, None);
    split_row(SplitCase {
        row: "CHECK CONDITION without autosense",
        effect: Effect::NoAutosense { sense: sense.clone() },
        status: CHECK,
        sense,
        moved: 0,
        started: 3,
        ran: 1,
        goes_on: false,
        write: true,
    });
}

#[test]
fn check_condition_with_autosense_on_a_later_chunk_returns_the_chunks_before_it() {
    let sense = fixed_sense(0x03, 0x11, 0x00, Some(CHUNK as u32 + 4));
    split_row(SplitCase {
        row: "CHECK CONDITION after 4 blocks",
        effect: Effect::Short {
            bytes: 4 * BS as u32,
            status: CHECK,
            sense: sense.clone(),
        },
        status: CHECK,
        sense,
        moved: 4 * BS,
        started: 2,
        ran: 2,
        goes_on: false,
        write: true,
    });
}

#[test]
fn a_later_chunk_of_a_read_that_moves_nothing_ends_it_with_good_and_the_residual() {
    // The device returns GOOD without data for the second chunk: the
    // initiator must not be told that all of it arrived.
    split_row(SplitCase {
        row: "CAM_REQ_CMP, nothing moved",
        effect: Effect::short(0),
        status: GOOD,
        sense: Vec::new(),
        moved: 0,
        started: 2,
        ran: 2,
        goes_on: false,
        write: false,
    });
}

#[test]
fn a_short_later_chunk_of_a_read_ends_it_with_good_and_the_residual() {
    split_row(SplitCase {
        row: "CAM_REQ_CMP, short",
        effect: Effect::short(1000),
        status: GOOD,
        sense: Vec::new(),
        moved: 1000,
        started: 2,
        ran: 2,
        goes_on: false,
        write: false,
    });
}

#[test]
fn a_requeued_later_chunk_is_resent_and_the_transfer_goes_on() {
    split_row(SplitCase {
        row: "CAM_REQUEUE_REQ once",
        effect: Effect::Cam(sys::CAM_REQUEUE_REQ),
        status: GOOD,
        sense: Vec::new(),
        moved: 0,
        started: 4,
        ran: 3,
        goes_on: true,
        write: true,
    });
}

// --- ten thousand I/Os under random faults ---

/// A small deterministic pseudo-random generator (SplitMix64).
struct Rng(u64);

impl Rng {
    /// The next 64 random bits.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Blocks from LBA 0 that the stress run reads, verifies and compares
/// (preloaded, never written during the run).
const STRESS_READ_BLOCKS: u64 = 16384;
/// Where the stress run's writes start: each writes blocks of its own.
const STRESS_WRITE_BASE: u64 = 1 << 20;
/// Commands of the stress run.
const STRESS_COMMANDS: usize = 10_000;
/// Commands per call of `ctl::run` (to bound the memory the responses
/// take), each batch at the queue depth.
const STRESS_BATCH: usize = 1000;
/// Commands in flight at once.
const STRESS_QUEUE_DEPTH: usize = 32;
/// The stress run's maxio: 128 blocks, so larger commands split.
const STRESS_MAXIO: u32 = 64 * 1024;
/// Blocks per device command of a split transfer.
const STRESS_CHUNK: u32 = STRESS_MAXIO / BS as u32;

/// One command of the stress run.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// READ(10) of preloaded blocks.
    Read { lba: u64, n: u32 },
    /// WRITE(10) of fresh blocks, with data tagged `tag`.
    Write { lba: u64, n: u32, tag: u64 },
    /// VERIFY(10) without data.
    Verify { lba: u64, n: u32 },
    /// VERIFY(10) with BYTCHK and the preloaded data (which matches).
    Compare { lba: u64, n: u32 },
    /// SYNCHRONIZE CACHE(10).
    Sync { lba: u64, n: u32 },
}

impl Op {
    /// The initiator's command.
    fn cmd(self) -> Cmd {
        match self {
            Op::Read { lba, n } => Cmd::read(&cdb10(READ_10, 0, lba, n), n as usize * BS),
            Op::Write { lba, n, tag } => Cmd::write(&cdb10(WRITE_10, 0, lba, n), &blocks(tag, lba, n as usize)),
            Op::Verify { lba, n } => Cmd::none(&cdb10(VERIFY_10, 0, lba, n)),
            Op::Compare { lba, n } => Cmd::write(&cdb10(VERIFY_10, 0x02, lba, n), &blocks(0, lba, n as usize)),
            Op::Sync { lba, n } => Cmd::none(&cdb10(SYNC_CACHE_10, 0, lba, n)),
        }
    }
}

/// The stress run's commands: 40% reads, 30% writes, 10% each of
/// verifies, compares and cache flushes; mostly small, some up to 300
/// blocks (split in up to three chunks).
fn stress_ops() -> Vec<Op> {
    let mut rng = Rng(0x5747_a7e5);
    let mut next_write = STRESS_WRITE_BASE;
    (0..STRESS_COMMANDS)
        .map(|i| {
            let n = match rng.below(100) {
                0..75 => 1 + rng.below(16),
                75..92 => 17 + rng.below(112),
                _ => 129 + rng.below(172),
            } as u32;
            let lba = rng.below(STRESS_READ_BLOCKS - u64::from(n));
            match rng.below(10) {
                0..4 => Op::Read { lba, n },
                4..7 => {
                    let lba = next_write;
                    next_write += u64::from(n) + 1;
                    Op::Write {
                        lba,
                        n,
                        tag: i as u64 + 1,
                    }
                }
                7 => Op::Verify { lba, n },
                8 => Op::Compare { lba, n },
                _ => Op::Sync { lba, n },
            }
        })
        .collect()
}

/// The stress run's faults, in injection order, all firing every time they
/// match: each picks device commands by a seeded hash of their CDB, about
/// 5% of them in all (the short transfers only READs), plus delays.
fn stress_faults() -> Vec<Fault> {
    let ops = [READ_10, WRITE_10, VERIFY_10, SYNC_CACHE_10];
    let on = |seed: u64, p: f64| Match::opcodes(&ops).random(seed, p);
    let reads = |seed: u64, p: f64| Match::opcode(READ_10).random(seed, p);
    let medium = fixed_sense(0x03, 0x11, 0x00, Some(0xabcd));
    [
        Fault::new(on(1, 0.01), Effect::Delay(Duration::from_micros(200))),
        Fault::new(
            on(2, 0.006),
            Effect::Status {
                status: CHECK,
                sense: medium.clone(),
            },
        ),
        Fault::new(
            on(3, 0.004),
            Effect::Status {
                status: CHECK,
                sense: descriptor_sense(0x0b, 0x47, 0x00, 99),
            },
        ),
        Fault::new(on(4, 0.004), Effect::busy()),
        Fault::new(on(5, 0.003), Effect::task_set_full()),
        Fault::new(on(6, 0.005), Effect::Cam(sys::CAM_REQUEUE_REQ)),
        Fault::new(on(7, 0.004), Effect::Cam(sys::CAM_CMD_TIMEOUT)),
        Fault::new(on(8, 0.002), Effect::Cam(sys::CAM_SEL_TIMEOUT)),
        Fault::new(on(9, 0.003), Effect::Cam(sys::CAM_REQ_CMP_ERR)),
        Fault::new(on(10, 0.002), Effect::Cam(sys::CAM_UNCOR_PARITY)),
        Fault::new(on(11, 0.002), Effect::Cam(sys::CAM_BUSY)),
        Fault::new(
            on(12, 0.005),
            Effect::NoAutosense {
                sense: fixed_sense(0x04, 0x3e, 0x03, Some(7)),
            },
        ),
        Fault::new(reads(13, 0.006), Effect::short(700)),
        Fault::new(reads(14, 0.004), Effect::medium_error(3 * BS as u32, 0xabcd)),
    ]
    .into_iter()
    .map(Fault::always)
    .collect()
}

/// What the SIM's counters should show ([`cam::DeviceStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    started: u64,
    executed: u64,
    faults: u64,
    completed: BTreeMap<u32, u64>,
}

impl Tally {
    /// One command the SIM started and completed with `cam_status`.
    fn attempt(&mut self, cam_status: u32, executed: bool, faults: u64) {
        self.started += 1;
        self.executed += u64::from(executed);
        self.faults += faults;
        *self.completed.entry(cam_status).or_default() += 1;
    }
}

/// How one device command ends, as the faults decide.
enum Fate {
    /// As if no fault: all its data moved, GOOD.
    Done,
    /// It moved `got` bytes and ended with `status` and `sense`.
    Partial { got: usize, status: u8, sense: Vec<u8> },
    /// It failed without moving data; the initiator gets `status` and
    /// `sense` (for a CHECK CONDITION without autosense, the sense REQUEST
    /// SENSE returns).
    Failed {
        status: u8,
        sense: Vec<u8>,
        no_autosense: bool,
        why: String,
    },
}

/// What the initiator should see of one stress command.
struct Want {
    status: u8,
    sense: Vec<u8>,
    /// NO SENSE is also right: a CHECK CONDITION without autosense whose
    /// REQUEST SENSE found the device's one held sense taken by another
    /// command's REQUEST SENSE (the device keeps one for all).
    or_no_sense: bool,
    /// Bytes of the READ's data that arrive.
    data: usize,
    residual: i64,
    /// Blocks of a WRITE that reach the medium.
    landed: u32,
    /// Which fault hit which device command.
    why: String,
}

/// The stress run's model: the faults, and the SIM counters the device
/// commands predicted so far add up to.
struct Model {
    faults: Vec<Fault>,
    tally: Tally,
}

impl Model {
    /// The fate of one device command `cdb` moving `len` bytes, as the
    /// faults decide it (the first non-delay fault that matches; delays add
    /// to the faults counted), counted in the tally with the backend's
    /// resends and REQUEST SENSE.
    fn send(&mut self, cdb: &[u8], len: usize) -> Fate {
        let is_delay = |f: &&Fault| matches!(f.effect, Effect::Delay(_));
        let delays = self
            .faults
            .iter()
            .filter(|f| is_delay(f) && f.when.matches(cdb))
            .count() as u64;
        let decided = self
            .faults
            .iter()
            .find(|f| !is_delay(f) && f.when.matches(cdb))
            .map(|f| f.effect.clone());
        let fired = delays + u64::from(decided.is_some());
        let t = &mut self.tally;
        let code = |status: u8| {
            if status == GOOD {
                sys::CAM_REQ_CMP
            } else {
                sys::CAM_SCSI_STATUS_ERROR
            }
        };
        match decided {
            None | Some(Effect::Delay(_)) => {
                t.attempt(sys::CAM_REQ_CMP, true, fired);
                Fate::Done
            }
            Some(Effect::Cam(s)) => {
                let attempts = if s == sys::CAM_REQUEUE_REQ { REQUEUE_ATTEMPTS } else { 1 };
                for _ in 0..attempts {
                    t.attempt(s, false, fired);
                }
                let (status, sense) = transport_reply(s);
                Fate::Failed {
                    status,
                    sense,
                    no_autosense: false,
                    why: format!("CAM status {s:#x}"),
                }
            }
            Some(Effect::Status { status, sense }) => {
                t.attempt(code(status), false, fired);
                Fate::Failed {
                    status,
                    sense,
                    no_autosense: false,
                    why: format!("SCSI status {status:#04x}"),
                }
            }
            Some(Effect::NoAutosense { sense }) => {
                t.attempt(sys::CAM_SCSI_STATUS_ERROR, false, fired);
                // The backend's REQUEST SENSE, which no fault matches.
                t.attempt(sys::CAM_REQ_CMP, true, 0);
                Fate::Failed {
                    status: CHECK,
                    sense,
                    no_autosense: true,
                    why: "CHECK CONDITION without autosense".into(),
                }
            }
            Some(Effect::Short { bytes, status, sense }) => {
                t.attempt(code(status), true, fired);
                let got = (bytes as usize).min(len);
                if status == GOOD && got == len {
                    Fate::Done
                } else {
                    Fate::Partial { got, status, sense }
                }
            }
        }
    }

    /// What the initiator should see of `op`, its device commands counted.
    fn predict(&mut self, op: Op) -> Want {
        let good = |data: usize| Want {
            status: GOOD,
            sense: Vec::new(),
            or_no_sense: false,
            data,
            residual: 0,
            landed: 0,
            why: String::new(),
        };
        let failed = |fate: Fate, data: usize, residual: i64, landed: u32, chunk: &[u8]| match fate {
            Fate::Done => good(data),
            Fate::Partial { got, status, sense } => Want {
                status,
                sense,
                or_no_sense: false,
                data: data + got,
                residual: residual - got as i64,
                landed,
                why: format!("{got} bytes, then status {status:#04x} on {chunk:02x?}"),
            },
            Fate::Failed {
                status,
                sense,
                no_autosense,
                why,
            } => Want {
                status,
                sense,
                or_no_sense: no_autosense,
                data,
                residual,
                landed,
                why: format!("{why} on {chunk:02x?}"),
            },
        };
        // A transfer chunk by chunk: READ moves data in, the others out
        // (all of it before the first chunk reaches the device).
        let mut transfer = |op: u8, byte1: u8, lba: u64, n: u32, read: bool| {
            let edtl = n as usize * BS;
            let mut done = 0u32;
            while done < n {
                let chunk = (n - done).min(STRESS_CHUNK);
                let cdb = cdb10(op, byte1, lba + u64::from(done), chunk);
                match self.send(&cdb, chunk as usize * BS) {
                    Fate::Done => done += chunk,
                    fate if read => {
                        let moved = done as usize * BS;
                        return failed(fate, moved, (edtl - moved) as i64, 0, &cdb);
                    }
                    // What the device did not take of a write is its
                    // residual, as it would be directly.
                    fate => return failed(fate, 0, (edtl - done as usize * BS) as i64, done, &cdb),
                }
            }
            Want {
                landed: n,
                ..good(if read { edtl } else { 0 })
            }
        };
        match op {
            Op::Read { lba, n } => transfer(READ_10, 0, lba, n, true),
            Op::Write { lba, n, .. } => transfer(WRITE_10, 0, lba, n, false),
            Op::Compare { lba, n } => transfer(VERIFY_10, 0x02, lba, n, false),
            Op::Verify { lba, n } | Op::Sync { lba, n } => {
                let opcode = if matches!(op, Op::Verify { .. }) {
                    VERIFY_10
                } else {
                    SYNC_CACHE_10
                };
                let cdb = cdb10(opcode, 0, lba, n);
                let fate = self.send(&cdb, 0);
                failed(fate, 0, 0, 0, &cdb)
            }
        }
    }
}

/// Whether response `r` to `op` is what `want` says; if not, which of
/// its parts differ and how.
fn judge(op: Op, r: &Response, want: &Want) -> Result<(), (String, String)> {
    let expected_data = match op {
        Op::Read { lba, .. } => blocks(0, lba, want.data / BS + 1)[..want.data].to_vec(),
        _ => Vec::new(),
    };
    let sense_ok = r.sense == want.sense || (want.or_no_sense && r.sense == no_sense());
    let differ: Vec<&str> = [
        (r.status != want.status, "status"),
        (!sense_ok, "sense"),
        (r.residual != want.residual, "residual"),
        (r.data != expected_data, "data"),
    ]
    .iter()
    .filter(|d| d.0)
    .map(|d| d.1)
    .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err((
        differ.join("+"),
        format!(
            "{op:?} ({}):\n      got  {}\n      want status {:#04x}, sense {:02x?}{}, residual {}, {} data bytes",
            if want.why.is_empty() { "no fault" } else { &want.why },
            show(r, Some(&expected_data)),
            want.status,
            want.sense,
            if want.or_no_sense { " (or NO SENSE)" } else { "" },
            want.residual,
            want.data
        ),
    ))
}

#[test]
fn ten_thousand_mixed_ios_at_queue_depth_32_with_five_percent_faults_complete_once() {
    let t0 = Instant::now();
    let mut lab = Lab::boot(STRESS_MAXIO, STRESS_READ_BLOCKS);
    if lab.broken() {
        return finish(lab, "stress");
    }
    cam::set_latency(0, 0, 0, Duration::from_micros(5));
    cam::set_openings(0, 0, 0, 32);
    let ops = stress_ops();
    let mut model = Model {
        faults: stress_faults(),
        tally: Tally::default(),
    };
    let wants: Vec<Want> = ops.iter().map(|&op| model.predict(op)).collect();
    for f in &model.faults {
        cam::inject(0, 0, 0, f.clone());
    }
    lab.disk.take_log();
    cam::reset_device_stats(0, 0, 0);
    let completions_before = ctl::completions().len();

    let mut answered = 0usize;
    let mut failed = 0usize;
    let mut no_sense_races = 0usize;
    let mut wrong: Vec<String> = Vec::new();
    let mut wrong_parts: BTreeMap<String, usize> = BTreeMap::new();
    for (batch, (ops, wants)) in ops.chunks(STRESS_BATCH).zip(wants.chunks(STRESS_BATCH)).enumerate() {
        let responses = ctl::run(lab.lun, ops.iter().map(|op| op.cmd()), STRESS_QUEUE_DEPTH);
        answered += responses.len();
        for (i, ((&op, want), r)) in ops.iter().zip(wants).zip(&responses).enumerate() {
            failed += usize::from(r.status != GOOD);
            no_sense_races += usize::from(want.or_no_sense && r.sense == no_sense());
            if let Err((parts, e)) = judge(op, r, want) {
                *wrong_parts.entry(parts).or_default() += 1;
                wrong.push(format!("command {}: {e}", batch * STRESS_BATCH + i));
            }
        }
    }
    let elapsed = t0.elapsed();

    // Exactly one response per command, and one backend completion each.
    lab.expect("responses", answered, STRESS_COMMANDS);
    lab.expect(
        "backend completions",
        ctl::completions().len() - completions_before,
        STRESS_COMMANDS,
    );
    lab.expect("I/Os CTL still holds", ctl::outstanding(), 0);
    if !wrong.is_empty() {
        lab.failures.push(format!(
            "{} of {STRESS_COMMANDS} responses are not the predicted ones (what differs: {wrong_parts:?}); \
             the first ones:\n    {}",
            wrong.len(),
            wrong.iter().take(8).cloned().collect::<Vec<_>>().join("\n    ")
        ));
    }
    let fraction = failed as f64 / STRESS_COMMANDS as f64;
    lab.check((0.01..=0.15).contains(&fraction), || {
        format!("{failed} of {STRESS_COMMANDS} commands failed: not about 5%")
    });
    let predicted_failures = wants.iter().filter(|w| w.status != GOOD).count();
    lab.expect("failed commands, as predicted", failed, predicted_failures);

    // What the device saw: each command (and chunk) once, resends and
    // REQUEST SENSEs as predicted, and nothing left anywhere.
    let s = cam::device_stats(0, 0, 0);
    let seen = Tally {
        started: s.started,
        executed: s.executed,
        faults: s.faults_applied,
        completed: s.completed.clone(),
    };
    lab.expect("the SIM's counters", seen, model.tally.clone());
    lab.check(s.max_in_flight > 1, || {
        format!("at most {} command in flight: no concurrency", s.max_in_flight)
    });
    lab.expect(
        "device queue (frozen, queued, in flight) at the end",
        (s.frozen, s.queued, s.in_flight),
        (0, 0, 0),
    );
    lab.expect(
        "periph queues (incoming, active) at the end",
        periph_queues().map(|q| (q.incoming, q.active)),
        Some((0, 0)),
    );

    // The medium: each write's blocks up to where it failed, then nothing.
    let mut bad_writes = Vec::new();
    for (&op, want) in ops.iter().zip(&wants) {
        let Op::Write { lba, n, tag } = op else { continue };
        let mut medium = blocks(tag, lba, want.landed as usize);
        medium.resize(n as usize * BS, 0);
        if lab.disk.peek(lba, n as usize) != medium {
            bad_writes.push(format!("{op:?}: want its first {} blocks written", want.landed));
        }
    }
    lab.check(bad_writes.is_empty(), || {
        format!(
            "{} writes left the medium wrong: {:?}",
            bad_writes.len(),
            &bad_writes[..bad_writes.len().min(5)]
        )
    });
    lab.disk.take_log();
    lab.settled("after the stress run");
    eprintln!(
        "stress: {STRESS_COMMANDS} commands in {elapsed:?}, {failed} failed ({:.1}%), {} device commands \
         started, {} faults fired, at most {} in flight, {no_sense_races} REQUEST SENSE races",
        fraction * 100.0,
        model.tally.started,
        model.tally.faults,
        s.max_in_flight
    );
    finish(lab, "ten thousand mixed I/Os");
}

//! Arbitrary command streams from the simulated initiator through a
//! passthrough LUN of the simulated kernel, with faults injected into the
//! device's commands and, if the input says so, a task management function
//! while they run: every command completes exactly once (the initiator
//! panics the kernel on a second completion or a lost one) with a status an
//! initiator can act on, sense data with CHECK CONDITION only and in a
//! format it can decode, no more data than it asked for; afterwards nothing
//! is left in CTL, the periph's queues or the device queue (once the device
//! has returned what an abort left running), the LUN goes away promptly,
//! and every allocation ctlpass made for it is freed.
//!
//! The machine boots once, with a disk (which can unmap) and a CD drive
//! behind a SIM that takes 64 KiB at once, so that larger transfers are
//! split.  Each input gets a LUN of its own (and the CD its medium back),
//! so that an input replays alone as it ran.
//!
//! Input: a header byte (bit 0: the CD rather than the disk; bits 1-3: the
//! queue depth, less one; bit 4: the port moves DATA-IN on its own
//! threads; bits 5-6: no task management, ABORT TASK SET, CLEAR TASK SET or
//! LUN RESET once a command is in CTL; bit 7: the LUN resets its device on
//! a LUN RESET, `reset=device`), a byte whose value modulo 4 is the number
//! of faults, 4 bytes for each (see [`fault`]), then commands to the end of
//! the input (see [`commands`]).

#![no_main]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ctlpass::backend::DeviceName;
use ctlpass::scsi::sense::{Sense, key};
use ctlpass_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use simkern::cam::{self, Effect, Fault, Match, fixed_sense};
use simkern::ctl::frontend::Response;
use simkern::ctl::{self, Cmd, Request, TaskAttr, Tmf};
use simkern::devices::{CHECK_CONDITION, Cdrom, Command, GOOD, Identity, RamDisk, ScsiDevice};
use simkern::{Config, Machine, malloc, sys};

/// The disk's target id (bus 0, LUN 0).
const DISK: u32 = 0;
/// The CD drive's.
const CD: u32 = 1;
/// Blocks of 512 bytes on the disk.
const DISK_BLOCKS: u64 = 4096;
/// Blocks of 2048 bytes on the CD.
const CD_BLOCKS: usize = 64;
/// The SIM's largest transfer.
const MAXIO: u32 = 64 * 1024;
/// Commands of one input, at most.
const MAX_COMMANDS: usize = 64;
/// An initiator's buffer, at most (four of the SIM's transfers).
const MAX_EDTL: usize = 4 * MAXIO as usize;
/// How long removing the LUN, or the device returning what an abort left
/// running, may take.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// The initiator's id in the port's nexus.
const INITIATOR: u32 = 0;

/// The SCSI statuses a target returns (SAM-5 5.3): GOOD, CHECK CONDITION,
/// CONDITION MET, BUSY, RESERVATION CONFLICT, TASK SET FULL, ACA ACTIVE and
/// TASK ABORTED.
const STATUSES: [u8; 8] = [0x00, 0x02, 0x04, 0x08, 0x18, 0x28, 0x30, 0x40];

/// CAM statuses a fault may end a device command with.
const CAM_STATUSES: [u32; 12] = [
    sys::CAM_REQUEUE_REQ,
    sys::CAM_BUSY,
    sys::CAM_SCSI_BUSY,
    sys::CAM_RESRC_UNAVAIL,
    sys::CAM_DEV_NOT_THERE,
    sys::CAM_SEL_TIMEOUT,
    sys::CAM_CMD_TIMEOUT,
    sys::CAM_REQ_ABORTED,
    sys::CAM_UNCOR_PARITY,
    sys::CAM_DATA_RUN_ERR,
    sys::CAM_REQ_CMP_ERR,
    sys::CAM_SCSI_BUS_RESET,
];

/// The CD drive, whose medium each input gets back.
static CD_DRIVE: OnceLock<Arc<Cdrom>> = OnceLock::new();

fn identity(serial: &str, naa: Option<u64>) -> Identity {
    Identity {
        vendor: "SEAGATE".into(),
        product: "ST4000NM0023".into(),
        revision: "0004".into(),
        serial: serial.into(),
        naa,
        eui64: None,
    }
}

/// Boots the machine and loads ctlpass, for the life of the process.
fn boot() {
    let image: Vec<u8> = (0..CD_BLOCKS * 2048).map(|i| (i / 2048) as u8 ^ i as u8).collect();
    let cd = CD_DRIVE.get_or_init(|| Arc::new(Cdrom::new(identity("R8RS6GAB", None), Some(image))));
    let disk = RamDisk::new(identity("Z1Z3FUZZ", Some(0x5000_c500_a1b2_c3d4)), DISK_BLOCKS, 512).with_unmap(true);
    // Targets DISK (0) and CD (1), in that order.
    let devices: Vec<Arc<dyn ScsiDevice>> = vec![Arc::new(disk), cd.clone()];
    let machine = Machine::boot(Config::one_bus(MAXIO, 32, devices));
    machine.kldload().expect("kldload ctlpass");
    // The machine's state is global; it runs until the process exits.
    std::mem::forget(machine);
}

/// A fault from 4 bytes: its effect, the operation code it applies to (0:
/// any), from which matching command on (1 to 16), and a parameter (bits
/// 0-5: blocks a short transfer moves; bits 6-7: once, twice, 8 times or
/// always).
fn fault(input: &mut Input<'_>) -> Fault {
    let (kind, opcode, nth, param) = (input.u8(), input.u8(), input.u8(), input.u8());
    let when = match opcode {
        0 => Match::any(),
        op => Match::opcode(op),
    }
    .nth(1 + u64::from(nth % 16));
    let bytes = u32::from(param & 0x3f) * 512;
    let effect = match kind % 22 {
        0 => Effect::check_condition(0x03, 0x11, 0x00),
        1 => Effect::check_condition(0x06, 0x29, 0x00),
        2 => Effect::check_condition(0x05, 0x24, 0x00),
        3 => {
            // Descriptor format, with an INFORMATION descriptor.
            let mut sense = vec![0x72, 0x03, 0x11, 0x00, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0];
            sense.extend_from_slice(&u64::from(nth).to_be_bytes());
            Effect::Status {
                status: CHECK_CONDITION,
                sense,
            }
        }
        4 => Effect::busy(),
        5 => Effect::task_set_full(),
        6 => Effect::reservation_conflict(),
        7 => Effect::NoAutosense {
            sense: fixed_sense(0x04, 0x44, 0x00, None),
        },
        8 => Effect::short(bytes),
        9 => Effect::medium_error(bytes, u32::from(nth)),
        k => Effect::Cam(CAM_STATUSES[usize::from(k - 10)]),
    };
    let f = Fault::new(when, effect);
    match param >> 6 {
        0 => f,
        1 => f.times(2),
        2 => f.times(8),
        _ => f.always(),
    }
}

/// Commands, each: a byte (bits 0-3: the CDB's length less 6, at most 10;
/// bits 4-5: no data, DATA-IN, DATA-OUT, no data; bits 6-7: SIMPLE,
/// ORDERED, HEAD OF QUEUE, untagged), the CDB, two bytes of expected data
/// transfer length (bytes, or with the top bit set 512-byte blocks; at most
/// [`MAX_EDTL`]) and, for DATA-OUT, a byte giving how many bytes of the
/// data follow (the rest is zeros).
fn commands(input: &mut Input<'_>) -> Vec<Cmd> {
    const TASKS: [TaskAttr; 4] = [
        TaskAttr::Simple,
        TaskAttr::Ordered,
        TaskAttr::HeadOfQueue,
        TaskAttr::Untagged,
    ];
    let mut cmds = Vec::new();
    while !input.is_empty() && cmds.len() < MAX_COMMANDS {
        let h = input.u8();
        let len = 6 + usize::from(h & 0x0f).min(10);
        let mut cdb = input.bytes(len).to_vec();
        cdb.resize(len, 0);
        let e = input.u16();
        let edtl = match e & 0x8000 {
            0 => usize::from(e),
            _ => usize::from(e & 0x7fff) * 512,
        }
        .min(MAX_EDTL);
        let mut cmd = match (h >> 4) & 0x03 {
            1 => Cmd::read(&cdb, edtl),
            2 => {
                let n = usize::from(input.u8());
                let mut data = input.bytes(n).to_vec();
                data.resize(edtl, 0);
                Cmd::write(&cdb, &data)
            }
            _ => Cmd::none(&cdb),
        };
        cmd.task = TASKS[usize::from(h >> 6)];
        cmds.push(cmd);
    }
    cmds
}

/// Gives the CD drive its medium back, unlocked, straight on the device.
fn reset_cd() {
    let cd = CD_DRIVE.get().expect("booted");
    for cdb in [[0x1e, 0, 0, 0, 0, 0], [0x1b, 0, 0, 0, 0x03, 0]] {
        let o = cd.execute(Command {
            cdb: &cdb,
            data_out: &[],
            data_in: &mut [],
        });
        assert_eq!(o.status, GOOD, "{cdb:02x?} on the CD drive");
    }
}

/// Exports the device at target `target` as a new LUN (which resets its
/// device on a LUN RESET if `reset`), and takes its power-on unit
/// attention.
fn create(target: u32, reset: bool) -> u32 {
    let address = format!("0:{target}:0");
    let reset = if reset { "device" } else { "none" };
    let r = ctl::lun_request(
        "passthrough",
        &Request::create(),
        &[("cam", &address), ("reset", reset)],
    );
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    let lun = r.created.expect("the LUN's parameters").3;
    let ua = ctl::execute(lun, &Cmd::none(&[0; 6]));
    let sense = Sense::parse(&ua.sense);
    assert_eq!(
        (ua.status, sense.map(|s| (s.key, s.asc))),
        (CHECK_CONDITION, Some((key::UNIT_ATTENTION, 0x29))),
        "the power-on unit attention"
    );
    lun
}

/// The checks of one command's response.
fn check(i: usize, cmd: &Cmd, r: &Response) {
    let what = || {
        format!(
            "command {i} {:02x?} ({} in, {} out): status {:#04x}, sense {:02x?}, {} bytes in, residual {}",
            cmd.cdb,
            cmd.data_in_len,
            cmd.data_out.len(),
            r.status,
            r.sense,
            r.data.len(),
            r.residual
        )
    };
    assert!(STATUSES.contains(&r.status), "{}", what());
    match r.status {
        GOOD => assert!(r.sense.is_empty(), "{}", what()),
        CHECK_CONDITION => assert!(Sense::parse(&r.sense).is_some(), "{}", what()),
        _ => {}
    }
    assert!(r.data.len() <= cmd.data_in_len, "{}", what());
}

/// What is left in CTL, the device queue (frozen, queued, in flight) and
/// the periph's queues (incoming, active).
fn left(target: u32) -> (usize, (u32, usize, usize), (usize, usize)) {
    let s = cam::device_stats(0, target, 0);
    let name = DeviceName::Address {
        path_id: 0,
        target_id: target,
        lun_id: 0,
    };
    let periph = ctlpass::periph::find(&name).expect("the device's ctlpass periph");
    let q = ctlpass::periph::io::counts(&periph);
    drop(periph);
    (
        ctl::outstanding(),
        (s.frozen, s.queued, s.in_flight),
        (q.incoming, q.active),
    )
}

/// Nothing is left in CTL, the device queue or the periph's queues, once
/// the device has returned the commands whose I/Os an abort completed
/// (within [`SETTLE_LIMIT`]).
fn settled(target: u32) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut now = left(target);
    while now != (0, (0, 0, 0), (0, 0)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        now = left(target);
    }
    assert_eq!(
        now,
        (0, (0, 0, 0), (0, 0)),
        "left in CTL, the device queue (frozen, queued, in flight) and the periph (incoming, active)"
    );
}

/// The task management function of the header's bits 5-6 on `lun`.
fn tmf(header: u8, lun: u32) -> Option<Tmf> {
    match (header >> 5) & 0x03 {
        0 => None,
        1 => Some(Tmf::AbortTaskSet {
            lun,
            initiator: INITIATOR,
        }),
        2 => Some(Tmf::ClearTaskSet { lun }),
        _ => Some(Tmf::LunReset {
            lun,
            initiator: INITIATOR,
        }),
    }
}

/// Sends `tmf` once a command is in CTL, unless the commands are all done
/// first.
fn manage(tmf: Tmf, finished: &AtomicBool) {
    while ctl::outstanding() == 0 {
        if finished.load(Ordering::Acquire) {
            return;
        }
        std::thread::yield_now();
    }
    ctl::task_management(tmf);
}

/// ctlpass's allocations in use.
fn in_use() -> u64 {
    malloc::stats("ctlpass").map_or(0, |s| s.in_use)
}

/// ctlpass's allocations in use once they are down to `want`, or when
/// [`SETTLE_LIMIT`] has passed: a request the periph's done task still
/// holds when the removal returns goes back to malloc(9) just after.
fn in_use_by(want: u64) -> u64 {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let n = in_use();
        if n == want || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fuzz_target!(init: boot(), |data: &[u8]| {
    let mut input = Input::new(data);
    let header = input.u8();
    let target = if header & 0x01 == 0 { DISK } else { CD };
    let queue_depth = 1 + usize::from((header >> 1) & 0x07);
    let faults: Vec<Fault> = (0..input.u8() % 4).map(|_| fault(&mut input)).collect();
    let cmds = commands(&mut input);

    if target == CD {
        reset_cd();
    }
    let before = in_use();
    let lun = create(target, header & 0x80 != 0);
    ctl::frontend::set_deferred_data_in(header & 0x10 != 0);
    for f in faults {
        cam::inject(0, target, 0, f);
    }
    let finished = AtomicBool::new(false);
    let responses = std::thread::scope(|s| {
        if let Some(t) = tmf(header, lun) {
            let finished = &finished;
            s.spawn(move || manage(t, finished));
        }
        let responses = ctl::run(lun, cmds.iter().cloned(), queue_depth);
        finished.store(true, Ordering::Release);
        responses
    });
    settled(target);
    cam::clear_faults(0, target, 0);
    ctl::frontend::set_deferred_data_in(false);
    assert_eq!(responses.len(), cmds.len());
    for (i, (cmd, r)) in cmds.iter().zip(&responses).enumerate() {
        check(i, cmd, r);
    }

    let t = Instant::now();
    let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "LUN removal: {r:?}");
    assert!(t.elapsed() < SETTLE_LIMIT, "LUN removal took {:?}", t.elapsed());
    settled(target);
    assert_eq!(in_use_by(before), before, "ctlpass's allocations once the LUN is gone");
    ctl::reset_datamove_stats();
});

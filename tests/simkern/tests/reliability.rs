//! What ctlpass does when things go wrong, under load.
//!
//! Task management on stock CTL: ABORT TASK, ABORT TASK SET, CLEAR TASK
//! SET, LUN RESET and I_T NEXUS RESET only set `CTL_FLAG_ABORT` on the I/Os
//! they hit, and the passthrough backend must notice.  Each test holds
//! commands on the device (a delay fault), or in the periph's `incoming`
//! queue (one opening, or no buffer left), sends a task management function
//! from the simulated initiator, and checks that every hit command ends
//! with TASK ABORTED long before the device would have finished it, the
//! others with their own status, each exactly once; that CAM was asked to
//! abort only the commands the device had; and that nothing is left
//! queued, frozen or allocated.
//!
//! Hot-unplug: a device pulled with commands on it and queued for it; the
//! LUN goes offline (or away, with `lost=remove`), its periph is freed,
//! and it binds to the device again when it returns, anywhere on the
//! buses.  And removal of a busy LUN followed by unload.
//!
//! The fault matrix: every CAM status class, CHECK CONDITION with each
//! sense key, BUSY, TASK SET FULL, RESERVATION CONFLICT, device loss,
//! allocation failure, data move failure and abort, on READ, WRITE,
//! SYNCHRONIZE CACHE, UNMAP and COMPARE AND WRITE, one at a time and 32 at
//! once: each command ends once with the status the table says, nothing
//! stays queued or frozen, and the LUN serves the same command afterwards.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctlpass::backend::DeviceName;
use ctlpass::periph::io::{AbortCounts, QueueCounts};
use simkern::cam::{self, DeviceSpec, Effect, Fault, Match, fixed_sense};
use simkern::cdb::cdb16;
use simkern::ctl::frontend::{self, Response};
use simkern::ctl::{self, Cmd, Request, Tmf};
use simkern::devices::{Identity, RamDisk, ScsiDevice};
use simkern::remote::Gated;
use simkern::{Config, Machine, malloc, sys};

/// SCSI status TASK ABORTED.
const TASK_ABORTED: u8 = 0x40;

/// How long a held command stays on the device: far longer than an abort
/// may take.
const HELD: Duration = Duration::from_secs(10);

/// The longest an abort may take to end a command: the scan runs every
/// 100 ms; the rest is margin for a loaded machine.
const PROMPT: Duration = Duration::from_secs(3);

fn disk(serial: &str, naa: u64) -> Arc<dyn ScsiDevice> {
    disk_of(serial, naa, 1 << 20)
}

fn disk_of(serial: &str, naa: u64, blocks: u64) -> Arc<dyn ScsiDevice> {
    Arc::new(
        RamDisk::new(
            Identity {
                vendor: "SEAGATE".into(),
                product: "ST4000NM0023".into(),
                revision: "0004".into(),
                serial: serial.into(),
                naa: Some(naa),
                eui64: None,
            },
            blocks,
            512,
        )
        .with_unmap(true),
    )
}

/// A machine with `n` disks (targets 0..n), the module loaded, a LUN on
/// each, and the power-on unit attention taken by initiators 0 and 1.
fn machine(n: u32) -> (Machine, Vec<u32>) {
    machine_with(n, &[])
}

/// [`machine`], with `options` for every LUN.
fn machine_with(n: u32, options: &[(&str, &str)]) -> (Machine, Vec<u32>) {
    let disks = (0..n)
        .map(|t| disk(&format!("Z1Z3TMF{t}"), 0x5000_c500_a1b2_d000 + u64::from(t)))
        .collect();
    machine_of(disks, options)
}

/// A machine with `disks` (targets 0..), the module loaded, a LUN on each
/// with `options`, and the power-on unit attention taken by initiators 0
/// and 1.
fn machine_of(disks: Vec<Arc<dyn ScsiDevice>>, options: &[(&str, &str)]) -> (Machine, Vec<u32>) {
    let n = disks.len() as u32;
    let m = Machine::boot(Config::one_bus(1 << 20, 32, disks));
    m.kldload().expect("kldload ctlpass");
    let luns = (0..n)
        .map(|t| {
            let cam = format!("0:{t}:0");
            let mut opts = vec![("cam", cam.as_str())];
            opts.extend_from_slice(options);
            let r = ctl::lun_request("passthrough", &Request::create(), &opts);
            assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
            let lun = r.created.expect("a LUN").3;
            for initiator in 0..2 {
                let r = ctl::execute(lun, &from(initiator, Cmd::none(&[0; 6])));
                assert_eq!(r.sense.get(12..14), Some(&[0x29, 0x01][..]), "power-on UA");
            }
            lun
        })
        .collect();
    (m, luns)
}

/// Removes the LUNs, unloads the module (which fails on a pending
/// callout) and checks that nothing leaked.
fn shut_down(m: Machine, luns: &[u32]) {
    for &lun in luns {
        let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
        assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    }
    unload_clean(m);
}

/// Unloads the module and checks that nothing leaked.
fn unload_clean(m: Machine) {
    m.kldunload().expect("kldunload ctlpass");
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    drop(m);
}

fn from(initiator: u32, cmd: Cmd) -> Cmd {
    Cmd { initiator, ..cmd }
}

fn read16(lba: u64, blocks: u32) -> Cmd {
    Cmd::read(&cdb16(0x88, 0, lba, blocks), blocks as usize * 512)
}

fn write16(lba: u64, data: &[u8]) -> Cmd {
    Cmd::write(&cdb16(0x8a, 0, lba, (data.len() / 512) as u32), data)
}

/// Holds the next `n` commands touching `lbas` on the device at target
/// `t` for [`HELD`].
fn hold(t: u32, lbas: std::ops::Range<u64>, n: u64) {
    cam::inject(
        0,
        t,
        0,
        Fault::new(Match::any().lbas(lbas), Effect::Delay(HELD)).times(n),
    );
}

/// A command sent from its own thread: its tag (0 if it was done before
/// it could be seen), its response and when it came.
struct Sent {
    tag: u64,
    thread: JoinHandle<(Response, Instant)>,
}

/// Sends `cmd` to `lun` from a new thread, and returns once CTL has it (or
/// it is done), so that tags follow the order of the calls.
fn send(lun: u32, cmd: Cmd) -> Sent {
    let before = ctl::tasks(lun).len();
    let thread = std::thread::spawn(move || {
        let r = ctl::execute(lun, &cmd);
        (r, Instant::now())
    });
    wait_for(
        || ctl::tasks(lun).len() > before || thread.is_finished(),
        "the command to reach CTL",
    );
    let tag = if thread.is_finished() {
        0
    } else {
        ctl::tasks(lun).last().map_or(0, |t| t.1)
    };
    Sent { tag, thread }
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(20), "waited 20 s for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// ABORT TASK for `sent`, which must hit it; its response, and how long
/// after the TMF it came.
fn abort_task(lun: u32, sent: Sent) -> (Response, Duration) {
    let t0 = Instant::now();
    let hit = ctl::task_management(Tmf::AbortTask {
        lun,
        initiator: 0,
        tag: sent.tag,
    });
    assert_eq!(hit, 1, "ABORT TASK of tag {}", sent.tag);
    // Bounded: a command the device holds until told must not hang the test.
    wait_for(|| sent.thread.is_finished(), "the aborted command to end");
    let (resp, when) = sent.thread.join().expect("the initiator thread");
    (resp, when - t0)
}

/// Holds a read of block 1000 on the device at target 0, aborts it with
/// ABORT TASK, and checks that it ends with TASK ABORTED at once.
fn abort_a_held_read(lun: u32) {
    hold(0, 1000..1001, 1);
    let held = send(lun, read16(1000, 1));
    wait_for(|| queues(0).active == 1, "the held read");
    let (resp, took) = abort_task(lun, held);
    aborted(&resp);
    assert!(took < PROMPT, "took {took:?}");
}

fn collect(sent: Vec<Sent>) -> Vec<(Response, Instant)> {
    sent.into_iter()
        .map(|s| s.thread.join().expect("the initiator thread"))
        .collect()
}

/// The periph's queues for the device at target `t`.
fn queues(t: u32) -> QueueCounts {
    let name = DeviceName::Address {
        path_id: 0,
        target_id: t,
        lun_id: 0,
    };
    let periph = ctlpass::periph::find(&name).expect("the periph");
    let counts = ctlpass::periph::io::counts(&periph);
    drop(periph);
    counts
}

fn assert_idle(t: u32) {
    let q = queues(t);
    assert_eq!((q.incoming, q.active), (0, 0), "periph queues of target {t}");
    assert_eq!(cam::frozen(0, t, 0), 0, "device queue of target {t} frozen");
}

fn aborted(r: &Response) {
    assert_eq!((r.status, r.sense.as_slice()), (TASK_ABORTED, &[][..]), "{r:?}");
}

fn good(r: &Response) {
    assert_eq!((r.status, r.sense.as_slice(), r.residual), (0, &[][..], 0), "{r:?}");
}

#[test]
fn abort_task_ends_a_command_the_device_runs() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    abort_a_held_read(lun);
    let s = cam::device_stats(0, 0, 0);
    assert_eq!((s.aborts_requested, s.aborted), (1, 1));
    assert_eq!(
        ctlpass::periph::io::abort_counts(),
        AbortCounts {
            sent: 1,
            ..AbortCounts::default()
        }
    );
    assert_eq!(s.completed.get(&sys::CAM_REQ_ABORTED), Some(&1));
    assert_idle(0);
    // The LUN goes on: the same read is served.
    let again = ctl::execute(lun, &read16(1000, 1));
    good(&again);
    assert_eq!(again.data, vec![0u8; 512]);
    shut_down(m, &luns);
}

#[test]
fn abort_task_ends_queued_commands_without_the_device() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    cam::set_openings(0, 0, 0, 1);
    hold(0, 1000..1001, 1);
    let held = send(lun, read16(1000, 1));
    wait_for(|| queues(0).active == 1, "the held read");
    let write = send(lun, write16(2000, &[0xa5; 4096]));
    let read = send(lun, read16(3000, 8));
    wait_for(|| queues(0).incoming == 2, "two commands waiting for a CCB");
    let started = cam::device_stats(0, 0, 0).started;
    let t0 = Instant::now();
    for tag in [write.tag, held.tag] {
        let abort = Tmf::AbortTask { lun, initiator: 0, tag };
        assert_eq!(ctl::task_management(abort), 1);
    }
    let r = collect(vec![held, write, read]);
    aborted(&r[0].0);
    aborted(&r[1].0);
    good(&r[2].0);
    assert!(r[1].1 - t0 < PROMPT, "took {:?}", r[1].1 - t0);
    // Only the held read was aborted in CAM; the write never reached the
    // device; the last read did, afterwards.
    let s = cam::device_stats(0, 0, 0);
    assert_eq!((s.aborts_requested, s.aborted), (1, 1));
    assert_eq!(s.started, started + 1);
    assert_eq!(ctl::execute(lun, &read16(2000, 8)).data, vec![0u8; 4096]);
    assert_idle(0);
    shut_down(m, &luns);
}

#[test]
fn abort_task_set_and_clear_task_set_hit_whom_they_should() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    hold(0, 1000..1004, 4);
    let a0 = send(lun, from(0, read16(1000, 1)));
    let b0 = send(lun, from(1, read16(1001, 1)));
    let a1 = send(lun, from(0, write16(1002, &[1; 512])));
    let b1 = send(lun, from(1, read16(1003, 1)));
    wait_for(|| queues(0).active == 4, "four held commands");
    let t0 = Instant::now();
    assert_eq!(ctl::task_management(Tmf::AbortTaskSet { lun, initiator: 0 }), 2);
    let r = collect(vec![a0, a1]);
    for (resp, when) in &r {
        aborted(resp);
        assert!(*when - t0 < PROMPT);
    }
    // Initiator 1's commands still run; CLEAR TASK SET ends them.
    assert_eq!(queues(0).active, 2);
    assert_eq!(ctl::task_management(Tmf::ClearTaskSet { lun }), 2);
    for (resp, when) in collect(vec![b0, b1]) {
        aborted(&resp);
        assert!(when - t0 < PROMPT * 2);
    }
    assert_eq!(cam::device_stats(0, 0, 0).aborted, 4);
    assert_idle(0);
    good(&ctl::execute(lun, &from(1, read16(1003, 1))));
    shut_down(m, &luns);
}

#[test]
fn lun_reset_ends_every_command_and_tells_every_initiator() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    hold(0, 1000..1003, 3);
    let sent = vec![
        send(lun, from(0, read16(1000, 1))),
        send(lun, from(1, read16(1001, 1))),
        send(lun, from(1, write16(1002, &[2; 512]))),
    ];
    wait_for(|| queues(0).active == 3, "three held commands");
    assert_eq!(ctl::task_management(Tmf::LunReset { lun, initiator: 0 }), 3);
    for (resp, _) in collect(sent) {
        aborted(&resp);
    }
    assert_idle(0);
    // Without reset=device, the device is not reset: each command is
    // aborted on its own.
    let s = cam::device_stats(0, 0, 0);
    assert_eq!((s.resets, s.aborts_requested), (0, 3));
    // Every initiator, the one that reset the LUN too, gets 29/00 once
    // (FreeBSD 15's ctl_lun_reset: ctl_est_ua_all(lun, -1, ...)).
    for initiator in [0, 1] {
        let ua = ctl::execute(lun, &from(initiator, Cmd::none(&[0; 6])));
        assert_eq!(
            (ua.sense[2] & 0xf, ua.sense[12], ua.sense[13]),
            (0x6, 0x29, 0x00),
            "{ua:?}"
        );
        good(&ctl::execute(lun, &from(initiator, Cmd::none(&[0; 6]))));
    }
    shut_down(m, &luns);
}

#[test]
fn with_reset_device_a_lun_reset_resets_the_device_once() {
    let (m, luns) = machine_with(1, &[("reset", "device")]);
    let lun = luns[0];
    hold(0, 1000..1003, 3);
    let sent = vec![
        send(lun, from(0, read16(1000, 1))),
        send(lun, from(1, read16(1001, 1))),
        send(lun, from(1, write16(1002, &[2; 512]))),
    ];
    wait_for(|| queues(0).active == 3, "three held commands");
    let t0 = Instant::now();
    assert_eq!(ctl::task_management(Tmf::LunReset { lun, initiator: 0 }), 3);
    for (resp, when) in collect(sent) {
        aborted(&resp);
        assert!(when - t0 < PROMPT);
    }
    // One XPT_RESET_DEV, and an XPT_ABORT for each command (the device
    // runs one at a time: two were still queued in CAM; the reset may have
    // ended the running one before its abort came).
    let s = cam::device_stats(0, 0, 0);
    assert_eq!((s.resets, s.aborts_requested), (1, 3));
    assert!(s.aborted >= 2, "{s:?}");
    // An abort that comes after the reset ended the command is refused;
    // its request is abandoned (its CCB is on its way back).
    let c = ctlpass::periph::io::abort_counts();
    assert_eq!((c.sent, c.resets, c.abandoned), (3, 1, c.refused));
    assert_idle(0);
    // The reset's unit attention, for the initiator that sent it too.
    let ua = ctl::execute(lun, &from(0, Cmd::none(&[0; 6])));
    assert_eq!(sense_of(&ua), (0x6, 0x29, 0x00), "{ua:?}");
    // ABORT TASK SET of one initiator does not reset the device.
    hold(0, 1000..1001, 1);
    let one = send(lun, from(0, read16(1000, 1)));
    wait_for(|| queues(0).active == 1, "a held command");
    assert_eq!(ctl::task_management(Tmf::AbortTaskSet { lun, initiator: 0 }), 1);
    aborted(&one.thread.join().expect("initiator").0);
    let s = cam::device_stats(0, 0, 0);
    assert_eq!((s.resets, s.aborts_requested), (1, 4));
    good(&ctl::execute(lun, &read16(1000, 1)));
    shut_down(m, &luns);
}

#[test]
fn i_t_nexus_reset_ends_the_initiators_commands_on_every_lun() {
    let (m, luns) = machine(2);
    hold(0, 1000..1001, 1);
    hold(1, 1000..1001, 1);
    let slow = Duration::from_millis(1500);
    cam::inject(0, 0, 0, Fault::new(Match::any().lbas(1001..1002), Effect::Delay(slow)));
    let mine = vec![
        send(luns[0], from(1, read16(1000, 1))),
        send(luns[1], from(1, read16(1000, 1))),
    ];
    let other = send(luns[0], from(0, read16(1001, 1)));
    wait_for(|| queues(0).active == 2 && queues(1).active == 1, "held commands");
    let t0 = Instant::now();
    assert_eq!(ctl::task_management(Tmf::ITNexusReset { initiator: 1 }), 2);
    for (resp, when) in collect(mine) {
        aborted(&resp);
        assert!(when - t0 < PROMPT);
    }
    // Initiator 0's command was not hit: it ends when the device is done.
    let (resp, _) = other.thread.join().expect("initiator 0");
    good(&resp);
    assert_eq!(cam::device_stats(0, 0, 0).aborted, 1);
    for &lun in &luns {
        let ua = ctl::execute(lun, &from(1, Cmd::none(&[0; 6])));
        assert_eq!((ua.sense[12], ua.sense[13]), (0x29, 0x07), "{ua:?}");
    }
    assert_idle(0);
    assert_idle(1);
    shut_down(m, &luns);
}

#[test]
fn a_command_waiting_for_a_buffer_is_aborted_at_once() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    cam::set_openings(0, 0, 0, 1);
    hold(0, 0..1, 1);
    let mib = vec![0x5a; 1 << 20];
    let started = cam::device_stats(0, 0, 0).started;
    let mut sent = vec![send(lun, write16(0, &mib))];
    wait_for(|| queues(0).active == 1, "the held write");
    // The pool holds 32 MiB: 31 more writes get a buffer and wait for a
    // CCB; the next two wait for a buffer.
    for i in 1..34u64 {
        sent.push(send(lun, write16(i * 2048, &mib)));
    }
    wait_for(|| queues(0).incoming == 33, "33 writes waiting");
    let last = sent.pop().expect("the last write");
    let (resp, took) = abort_task(lun, last);
    aborted(&resp);
    assert!(took < PROMPT, "took {took:?}");
    assert_eq!(queues(0).incoming, 32);
    // The rest goes with a CLEAR TASK SET; only the held write ever
    // reached the device.
    assert_eq!(ctl::task_management(Tmf::ClearTaskSet { lun }), 33);
    for (resp, _) in collect(sent) {
        aborted(&resp);
    }
    let s = cam::device_stats(0, 0, 0);
    assert_eq!((s.started - started, s.aborted), (1, 1));
    assert_idle(0);
    shut_down(m, &luns);
}

// --- abandoned commands: a SIM that cannot abort ---

/// A machine whose one disk (target 0) runs its commands behind a gate,
/// on a SIM that refuses to abort started commands (`CAM_UA_ABORT`), with
/// a LUN on it.
fn gated_machine() -> (Machine, u32, Arc<Gated<RamDisk>>) {
    let inner = RamDisk::new(
        Identity {
            vendor: "SEAGATE".into(),
            product: "ST4000NM0023".into(),
            revision: "0004".into(),
            serial: "Z1Z3GATE".into(),
            naa: Some(0x5000_c500_a1b2_e000),
            eui64: None,
        },
        1 << 20,
        512,
    );
    let gate = Arc::new(Gated::new(inner));
    let (m, luns) = machine_of(vec![gate.clone()], &[]);
    cam::set_abort_support(0, 0, 0, false);
    (m, luns[0], gate)
}

/// `kern.cam.ctl.passthrough.lun.<lun>.<name>`, a counter or a depth.
fn lun_sysctl(lun: u32, name: &str) -> u64 {
    match simkern::sysctl::get(&format!("kern.cam.ctl.passthrough.lun.{lun}.{name}")) {
        Ok(simkern::sysctl::Value::U64(v)) => v,
        Ok(simkern::sysctl::Value::U32(v)) => u64::from(v),
        other => panic!("{name}: {other:?}"),
    }
}

/// The LUN's `queue.active` and `queue.abandoned`.
fn active_abandoned(lun: u32) -> (u64, u64) {
    (lun_sysctl(lun, "queue.active"), lun_sysctl(lun, "queue.abandoned"))
}

/// The abort scan's figures: XPT_ABORTs sent, refused, requests abandoned.
fn abort_figures() -> (u64, u64, u64) {
    let c = ctlpass::periph::io::abort_counts();
    (c.sent, c.refused, c.abandoned)
}

/// Sends `cmd` and waits until the device holds it behind `gate`.
fn held_by(gate: &Gated<RamDisk>, lun: u32, cmd: Cmd) -> Sent {
    let sent = send(lun, cmd);
    assert!(
        gate.wait_held(1, Duration::from_secs(20)),
        "the command reaches the device"
    );
    sent
}

#[test]
fn abort_task_ends_a_read_the_sim_cannot_abort_at_once() {
    let (m, lun, gate) = gated_machine();
    // Two chunks (maxio is 1 MiB): the first is held.
    let pattern: Vec<u8> = (0..2 << 20).map(|i| (i % 253) as u8).collect();
    good(&ctl::execute(lun, &write16(4096, &pattern)));
    let read_before = lun_sysctl(lun, "bytes_read");
    let started = cam::device_stats(0, 0, 0).started;
    gate.close();
    let held = held_by(&gate, lun, read16(4096, 4096));
    let (resp, took) = abort_task(lun, held);
    aborted(&resp);
    assert!(resp.data.is_empty(), "no data with TASK ABORTED");
    assert!(took < PROMPT, "took {took:?}: the device still holds the read");
    assert_eq!(abort_figures(), (1, 1, 1));
    // The device still runs the read: the periph keeps the request, and
    // its buffer, for it; CTL does not.
    assert_eq!(active_abandoned(lun), (0, 1));
    assert_eq!(queues(0).active, 1);
    assert_eq!(ctl::tasks(lun), vec![], "CTL's OOA queue is empty");
    assert_eq!(lun_sysctl(lun, "aborts"), 1);
    assert_eq!(ctlpass::periph::io::abandoned_now(), 1);
    gate.open();
    wait_for(|| active_abandoned(lun) == (0, 0), "the abandoned read's CCB");
    assert_idle(0);
    assert_eq!(ctlpass::periph::io::abandoned_now(), 0);
    // Nothing of the read reached the initiator, and its second chunk was
    // never read.
    assert_eq!(lun_sysctl(lun, "bytes_read"), read_before);
    assert_eq!(cam::device_stats(0, 0, 0).started, started + 1);
    // The LUN goes on: the same read is served, whole.
    let again = ctl::execute(lun, &read16(4096, 4096));
    good(&again);
    assert!(again.data == pattern, "the data read again");
    shut_down(m, &[lun]);
}

#[test]
fn an_abandoned_write_moves_no_more_data() {
    let (m, lun, gate) = gated_machine();
    let written_before = lun_sysctl(lun, "bytes_written");
    gate.close();
    // Two chunks: the first is moved in and held on the device.
    let held = held_by(&gate, lun, write16(8192, &vec![0xa5; 2 << 20]));
    let (resp, took) = abort_task(lun, held);
    aborted(&resp);
    assert!(took < PROMPT, "took {took:?}");
    assert_eq!(active_abandoned(lun), (0, 1));
    gate.open();
    wait_for(|| active_abandoned(lun) == (0, 0), "the abandoned write's CCB");
    // The device wrote the chunk it had; the second was never moved in,
    // nor written.
    assert_eq!(lun_sysctl(lun, "bytes_written") - written_before, 1 << 20);
    let r = ctl::execute(lun, &read16(8192, 4096));
    good(&r);
    assert!(r.data[..1 << 20].iter().all(|&b| b == 0xa5), "the first chunk");
    assert!(r.data[1 << 20..].iter().all(|&b| b == 0), "the second chunk");
    assert_idle(0);
    shut_down(m, &[lun]);
}

#[test]
fn a_lun_reset_abandons_the_commands_the_sim_cannot_abort() {
    let (m, lun, gate) = gated_machine();
    gate.close();
    let held = held_by(&gate, lun, from(1, write16(200, &[7; 4096])));
    let t0 = Instant::now();
    assert_eq!(ctl::task_management(Tmf::LunReset { lun, initiator: 0 }), 1);
    wait_for(|| held.thread.is_finished(), "the reset command to end");
    let (resp, when) = held.thread.join().expect("the initiator thread");
    aborted(&resp);
    assert!(when - t0 < PROMPT, "took {:?}", when - t0);
    assert_eq!(abort_figures(), (1, 1, 1));
    assert_eq!(active_abandoned(lun), (0, 1));
    // The LUN is reset for CTL: every initiator learns of it now.
    for initiator in [1, 0] {
        let ua = ctl::execute(lun, &from(initiator, Cmd::none(&[0; 6])));
        assert_eq!(sense_of(&ua), (0x6, 0x29, 0x00), "{ua:?}");
    }
    gate.open();
    wait_for(|| active_abandoned(lun) == (0, 0), "the abandoned CCB");
    assert_idle(0);
    // The device did write what it had.
    let r = ctl::execute(lun, &from(0, read16(200, 8)));
    good(&r);
    assert_eq!(r.data, vec![7; 4096]);
    shut_down(m, &[lun]);
}

#[test]
fn a_lun_removed_with_an_abandoned_command_holds_unload_until_it_returns() {
    let (m, lun, gate) = gated_machine();
    gate.close();
    let held = held_by(&gate, lun, write16(300, &[9; 1 << 20]));
    let (resp, _) = abort_task(lun, held);
    aborted(&resp);
    // CTL has no I/O of the LUN left: the remove returns at once.
    let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    assert_eq!(ctl::luns(), Vec::<u32>::new());
    // The pools were trimmed but for what the device still has.
    let q = queues(0);
    assert_eq!((q.active, q.request_slots, q.buffer_bytes), (1, 1, 1 << 20));
    assert_eq!(m.kldunload(), Err(sys::EBUSY as i32), "a CCB is still out");
    assert_eq!(m.modules().last().map(String::as_str), Some("ctlpass"));
    gate.open();
    wait_for(|| ctlpass::periph::io::abandoned_now() == 0, "the abandoned CCB");
    let q = queues(0);
    assert_eq!((q.active, q.request_slots, q.buffer_bytes), (0, 0, 0), "trimmed");
    unload_clean(m);
}

#[test]
fn an_abandoned_command_keeps_a_pulled_devices_periph_until_its_ccb_returns() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    cam::set_abort_support(0, 0, 0, false);
    abort_a_held_read(lun);
    assert_eq!(active_abandoned(lun), (0, 1));
    // Pulled: the SIM ends the read with CAM_DEV_NOT_THERE, the LUN goes
    // offline, and the periph is freed once the CCB is back.
    m.unplug(0, 0, 0);
    wait_for(|| lun_state(lun).as_deref() == Some("offline"), "the LUN to go offline");
    wait_for(|| ctlpass_periphs(0).is_empty(), "the periph to be freed");
    assert_eq!(ctlpass::periph::io::abandoned_now(), 0);
    let s = cam::device_stats(0, 0, 0);
    assert_eq!(s.completed.get(&sys::CAM_DEV_NOT_THERE), Some(&1), "{s:?}");
    shut_down(m, &luns);
}

#[test]
fn an_aborted_write_same_waits_for_its_ccb() {
    let (m, lun, gate) = gated_machine();
    gate.close();
    // WRITE SAME(16) of 8 blocks: the device reads CTL's block itself.
    let mut cdb = vec![0x93, 0];
    cdb.extend_from_slice(&500u64.to_be_bytes());
    cdb.extend_from_slice(&8u32.to_be_bytes());
    cdb.extend_from_slice(&[0, 0]);
    let held = held_by(&gate, lun, Cmd::write(&cdb, &[0x3c; 512]));
    let hit = ctl::task_management(Tmf::AbortTask {
        lun,
        initiator: 0,
        tag: held.tag,
    });
    assert_eq!(hit, 1);
    // The scan refused to abandon it (under the periph lock the sysctl
    // takes too): CTL's buffer must outlive the command.
    wait_for(|| abort_figures().1 == 1, "the refused abort");
    assert_eq!(abort_figures(), (1, 1, 0));
    assert_eq!(active_abandoned(lun), (1, 0));
    assert!(!held.thread.is_finished(), "ended before its CCB came back");
    gate.open();
    aborted(&held.thread.join().expect("the initiator thread").0);
    assert_idle(0);
    shut_down(m, &[lun]);
}

// --- hot-unplug, rebind, removal under load ---

/// The ctlpass periphs at target `t` of bus 0: (unit, valid).
fn ctlpass_periphs(t: u32) -> Vec<(u32, bool)> {
    cam::periphs("ctlpass")
        .into_iter()
        .filter(|p| (p.1, p.2, p.3) == (0, t, 0))
        .map(|p| (p.0, p.5))
        .collect()
}

/// The `state` `ctladm devlist -v` shows for LUN `lun`.
fn lun_state(lun: u32) -> Option<String> {
    let xml = ctl::lun_list_xml();
    let start = xml.find(&format!("<lun id=\"{lun}\">"))?;
    let rest = &xml[start..];
    let rest = &rest[rest.find("<state>")? + 7..];
    Some(rest[..rest.find('<')?].to_owned())
}

fn sense_of(r: &Response) -> (u8, u8, u8) {
    (r.sense[2] & 0xf, r.sense[12], r.sense[13])
}

#[test]
fn an_unplugged_device_takes_its_lun_offline_and_its_periph_away() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    good(&ctl::execute(lun, &write16(4000, &[0x77; 4096])));
    cam::set_openings(0, 0, 0, 4);
    hold(0, 1000..1004, 4);
    let sent: Vec<Sent> = (0..6).map(|i| send(lun, read16(1000 + i, 1))).collect();
    wait_for(
        || queues(0).active == 4 && queues(0).incoming == 2,
        "4 running, 2 queued",
    );
    let t0 = Instant::now();
    m.unplug(0, 0, 0);
    // Every command ends, once, with NOT READY (LOGICAL UNIT NOT READY):
    // the device's four came back DEV_NOT_THERE, the queued two never ran.
    for (resp, when) in collect(sent) {
        assert_eq!(resp.status, 0x02, "{resp:?}");
        assert_eq!(sense_of(&resp), (0x2, 0x04, 0x00));
        assert!(when - t0 < PROMPT);
    }
    // The periph goes (CAM could attach a new one); the LUN stays,
    // offline, and CTL answers for it: not ready, intervention required
    // (a fixed disk without its medium).
    wait_for(|| ctlpass_periphs(0).is_empty(), "the periph to be freed");
    assert!(
        m.dmesg()
            .contains("ctlpass: LUN 0: da0 is lost; offline until it returns")
    );
    assert_eq!(lun_state(lun).as_deref(), Some("offline"));
    let r = ctl::execute(lun, &read16(4000, 8));
    assert_eq!((r.status, sense_of(&r)), (0x02, (0x2, 0x04, 0x03)), "{r:?}");
    // A modify that asks for nothing new succeeds (ctld sends one on
    // every reload); one asking for another size says why it cannot be.
    let r = ctl::lun_request("passthrough", &Request::Modify { lun_id: lun, size: 0 }, &[]);
    assert_eq!((r.status, r.error.as_str()), (sys::CTL_LUN_OK, ""));
    let r = ctl::lun_request(
        "passthrough",
        &Request::Modify {
            lun_id: lun,
            size: 4096,
        },
        &[],
    );
    assert_eq!(
        r.error,
        "size 4096 is not the LUN's 536870912 bytes, and da0 cannot say its capacity now"
    );
    assert_eq!(ctl::luns(), vec![lun]);
    shut_down(m, &luns);
}

#[test]
fn a_device_that_returns_anywhere_brings_its_lun_back() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    let pattern: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();
    good(&ctl::execute(lun, &write16(4000, &pattern)));
    // Keep the device's medium: unplug and plug the same disk back, at
    // another target.
    let device = cam::device_of(0, 0, 0).expect("the device");
    m.unplug(0, 0, 0);
    wait_for(|| lun_state(lun).as_deref() == Some("offline"), "the LUN to go offline");
    wait_for(|| ctlpass_periphs(0).is_empty(), "the periph to be freed");
    m.plug(
        0,
        DeviceSpec {
            target: 7,
            lun: 0,
            device,
        },
    );
    wait_for(|| lun_state(lun).as_deref() == Some("online"), "the LUN to come back");
    assert!(
        m.dmesg().contains("ctlpass: LUN 0: da0 is back; online"),
        "{}",
        m.dmesg()
    );
    // devlist -v shows where the device is now.
    let xml = ctl::lun_list_xml();
    assert!(xml.contains("<cam_path>0:7:0</cam_path>"), "{xml}");
    let r = ctl::execute(lun, &read16(4000, 8));
    good(&r);
    assert_eq!(r.data, pattern);
    // The same capacity: no unit attention.
    good(&ctl::execute(lun, &Cmd::none(&[0; 6])));
    // Again, and the disk returns larger: CAPACITY DATA HAS CHANGED.
    m.unplug(0, 7, 0);
    wait_for(|| ctlpass_periphs(7).is_empty(), "the periph to be freed");
    let bigger = disk_of("Z1Z3TMF0", 0x5000_c500_a1b2_d000, 1 << 21);
    m.plug(
        0,
        DeviceSpec {
            target: 3,
            lun: 0,
            device: bigger,
        },
    );
    wait_for(|| lun_state(lun).as_deref() == Some("online"), "the LUN to come back");
    let ua = ctl::execute(lun, &Cmd::none(&[0; 6]));
    assert_eq!(sense_of(&ua), (0x6, 0x2a, 0x09), "{ua:?}");
    let cap = ctl::execute(
        lun,
        &Cmd::read(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], 32),
    );
    assert_eq!(cap.data[..8], ((1u64 << 21) - 1).to_be_bytes());
    assert_idle(3);
    // Removed, the LUN gives the device up: it can be exported again.
    let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    let r = ctl::lun_request("passthrough", &Request::create(), &[("cam", "0:3:0")]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    shut_down(m, &[r.created.expect("a LUN").3]);
}

#[test]
fn lost_remove_removes_the_lun() {
    let (m, luns) = machine_with(1, &[("lost", "remove")]);
    hold(0, 1000..1001, 1);
    let held = send(luns[0], read16(1000, 1));
    wait_for(|| queues(0).active == 1, "the held read");
    m.unplug(0, 0, 0);
    let (resp, _) = held.thread.join().expect("initiator");
    assert_eq!(sense_of(&resp), (0x2, 0x04, 0x00));
    wait_for(|| ctl::luns().is_empty(), "the LUN to go");
    wait_for(|| ctlpass_periphs(0).is_empty(), "the periph to be freed");
    assert!(m.dmesg().contains("ctlpass: LUN 0: da0 is lost; removing the LUN"));
    unload_clean(m);
}

#[test]
fn a_busy_lun_removed_then_unloaded_leaves_nothing_behind() {
    let (m, luns) = machine(1);
    let lun = luns[0];
    assert_eq!(m.kldunload(), Err(sys::EBUSY as i32), "unload with a LUN is refused");
    let slow = Duration::from_millis(400);
    cam::inject(
        0,
        0,
        0,
        Fault::new(Match::any().lbas(0..64), Effect::Delay(slow)).times(8),
    );
    let sent: Vec<Sent> = (0..8).map(|i| send(lun, write16(i * 8, &[i as u8; 4096]))).collect();
    wait_for(|| queues(0).active == 8, "eight running writes");
    // Remove waits for the writes to finish, as CTL does.
    let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    for (resp, _) in collect(sent) {
        good(&resp);
    }
    m.kldunload().expect("kldunload ctlpass");
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    assert_eq!(simkern::callout::pending(), 0);
    drop(m);
}

// --- the fault matrix ---

/// A command of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Sync,
    Unmap,
    CompareAndWrite,
}

const KINDS: [Kind; 5] = [Kind::Read, Kind::Write, Kind::Sync, Kind::Unmap, Kind::CompareAndWrite];

impl Kind {
    /// The operation codes the device sees for it.
    fn opcodes(self) -> &'static [u8] {
        match self {
            Kind::Read => &[0x28, 0x88],
            Kind::Write => &[0x2a, 0x8a],
            Kind::Sync => &[0x35, 0x91],
            Kind::Unmap => &[0x42],
            Kind::CompareAndWrite => &[0x89],
        }
    }

    /// The `i`th command of this kind (each on its own blocks).
    fn cmd(self, i: u64) -> Cmd {
        match self {
            Kind::Read => read16(10_000 + i * 8, 8),
            Kind::Write => write16(20_000 + i * 8, &[i as u8; 4096]),
            Kind::Sync => {
                let lba = (30_000 + i * 8) as u32;
                let mut c = vec![0x35, 0];
                c.extend_from_slice(&lba.to_be_bytes());
                c.extend_from_slice(&[0, 0, 8, 0]);
                Cmd::none(&c)
            }
            Kind::Unmap => {
                let mut list = vec![0, 22, 0, 16, 0, 0, 0, 0];
                list.extend_from_slice(&(40_000 + i * 8).to_be_bytes());
                list.extend_from_slice(&8u32.to_be_bytes());
                list.extend_from_slice(&[0; 4]);
                Cmd::write(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list)
            }
            Kind::CompareAndWrite => {
                // Compare zeros with zeros, write zeros: GOOD on a healthy
                // device, and the blocks stay as they were.
                let mut c = vec![0x89, 0];
                c.extend_from_slice(&(50_000 + i).to_be_bytes());
                c.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
                Cmd::write(&c, &[0; 1024])
            }
        }
    }
}

/// What goes wrong in a cell.
#[derive(Clone, Debug)]
enum Trouble {
    /// The SIM ends the command with this CAM status.
    Cam(u32),
    /// The device answers with this status and sense.
    Status(u8, Vec<u8>),
    /// The device is pulled while the commands run.
    Loss,
    /// M_NOWAIT allocations of the module fail (on a LUN with empty pools).
    NoMemory,
    /// Every data move fails in the transport.
    Datamove,
    /// ABORT TASK SET while the commands run.
    Abort,
}

/// What the initiator must get.
#[derive(Clone, Debug, PartialEq)]
enum Want {
    Good,
    Verbatim(u8, Vec<u8>),
    Sense(u8, u8, u8),
    Busy,
    Aborted,
}

fn want(trouble: &Trouble, kind: Kind) -> Want {
    match trouble {
        Trouble::Cam(c) => match *c {
            sys::CAM_CMD_TIMEOUT => Want::Sense(0xb, 0x2e, 0x02),
            sys::CAM_REQ_ABORTED => Want::Sense(0xb, 0x45, 0x00),
            sys::CAM_UNCOR_PARITY => Want::Sense(0xb, 0x47, 0x00),
            sys::CAM_DATA_RUN_ERR => Want::Sense(0xb, 0x4b, 0x00),
            sys::CAM_DEV_NOT_THERE | sys::CAM_SEL_TIMEOUT => Want::Sense(0x2, 0x04, 0x00),
            sys::CAM_BUSY | sys::CAM_SCSI_BUSY | sys::CAM_RESRC_UNAVAIL | sys::CAM_REQUEUE_REQ => Want::Busy,
            _ => Want::Sense(0x4, 0x44, 0x00),
        },
        Trouble::Status(status, sense) => Want::Verbatim(*status, sense.clone()),
        Trouble::Loss => Want::Sense(0x2, 0x04, 0x00),
        Trouble::NoMemory => Want::Busy,
        Trouble::Datamove if kind == Kind::Sync => Want::Good,
        Trouble::Datamove => Want::Sense(0x4, 0x44, 0x00),
        Trouble::Abort => Want::Aborted,
    }
}

fn matches(r: &Response, w: &Want) -> bool {
    match w {
        Want::Good => r.status == 0 && r.sense.is_empty(),
        Want::Verbatim(status, sense) => r.status == *status && &r.sense == sense,
        Want::Sense(k, a, q) => r.status == 0x02 && r.sense.len() >= 14 && sense_of(r) == (*k, *a, *q),
        Want::Busy => r.status == 0x08 && r.sense.is_empty(),
        Want::Aborted => r.status == TASK_ABORTED,
    }
}

fn troubles() -> Vec<Trouble> {
    let mut v: Vec<Trouble> = [
        sys::CAM_CMD_TIMEOUT,
        sys::CAM_REQ_ABORTED,
        sys::CAM_UNCOR_PARITY,
        sys::CAM_DATA_RUN_ERR,
        sys::CAM_DEV_NOT_THERE,
        sys::CAM_SEL_TIMEOUT,
        sys::CAM_BUSY,
        sys::CAM_SCSI_BUSY,
        sys::CAM_RESRC_UNAVAIL,
        sys::CAM_REQUEUE_REQ,
        sys::CAM_REQ_CMP_ERR,
        sys::CAM_SCSI_BUS_RESET,
        sys::CAM_REQ_TERMIO,
        sys::CAM_AUTOSENSE_FAIL,
    ]
    .into_iter()
    .map(Trouble::Cam)
    .collect();
    for key in 0x0..=0xe {
        v.push(Trouble::Status(0x02, fixed_sense(key, 0x11, key, None)));
    }
    v.push(Trouble::Status(0x08, Vec::new()));
    v.push(Trouble::Status(0x28, Vec::new()));
    v.push(Trouble::Status(0x18, Vec::new()));
    v.extend([Trouble::Loss, Trouble::NoMemory, Trouble::Datamove, Trouble::Abort]);
    v
}

/// Runs one cell: `qd` commands of `kind` at once under `trouble` on LUN
/// `lun` (device at target 0); returns the LUN (a new one after
/// [`Trouble::NoMemory`]) and the failures seen.
fn cell(m: &Machine, lun: u32, trouble: &Trouble, kind: Kind, qd: u64) -> (u32, Vec<String>) {
    let mut lun = lun;
    let mut failures = Vec::new();
    let what = format!("{trouble:?} on {kind:?} at QD{qd}");
    let cmds: Vec<Cmd> = (0..qd).map(|i| kind.cmd(i)).collect();
    let hold_all = || {
        let f = Fault::new(Match::opcodes(kind.opcodes()), Effect::Delay(HELD)).always();
        cam::inject(0, 0, 0, f);
    };
    let responses = match trouble {
        Trouble::Cam(c) => {
            cam::inject(
                0,
                0,
                0,
                Fault::new(Match::opcodes(kind.opcodes()), Effect::Cam(*c)).always(),
            );
            ctl::run(lun, cmds, qd as usize)
        }
        Trouble::Status(status, sense) => {
            let effect = Effect::Status {
                status: *status,
                sense: sense.clone(),
            };
            cam::inject(0, 0, 0, Fault::new(Match::opcodes(kind.opcodes()), effect).always());
            ctl::run(lun, cmds, qd as usize)
        }
        Trouble::Datamove => {
            frontend::set_failing_moves(true);
            let r = ctl::run(lun, cmds, qd as usize);
            frontend::set_failing_moves(false);
            r
        }
        Trouble::NoMemory => {
            // A LUN of its own, whose pools are empty.
            let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
            assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
            let r = ctl::lun_request("passthrough", &Request::create(), &[("cam", "0:0:0")]);
            assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
            lun = r.created.expect("a LUN").3;
            for initiator in 0..2 {
                ctl::execute(lun, &from(initiator, Cmd::none(&[0; 6])));
            }
            malloc::fail_nowait("ctlpass", u64::MAX);
            let r = ctl::run(lun, cmds, qd as usize);
            malloc::fail_nowait("ctlpass", 0);
            r
        }
        Trouble::Loss | Trouble::Abort => {
            hold_all();
            let runner = std::thread::spawn(move || ctl::run(lun, cmds, qd as usize));
            wait_for(|| queues(0).active == qd as usize, "the commands to run");
            if matches!(trouble, Trouble::Loss) {
                let device = cam::device_of(0, 0, 0).expect("the device");
                m.unplug(0, 0, 0);
                let r = runner.join().expect("the initiator");
                wait_for(|| lun_state(lun).as_deref() == Some("offline"), "the LUN to go offline");
                wait_for(|| ctlpass_periphs(0).is_empty(), "the periph to be freed");
                m.plug(
                    0,
                    DeviceSpec {
                        target: 0,
                        lun: 0,
                        device,
                    },
                );
                wait_for(|| lun_state(lun).as_deref() == Some("online"), "the LUN to return");
                r
            } else {
                ctl::task_management(Tmf::AbortTaskSet { lun, initiator: 0 });
                runner.join().expect("the initiator")
            }
        }
    };
    cam::clear_faults(0, 0, 0);
    let w = want(trouble, kind);
    for (i, r) in responses.iter().enumerate() {
        if !matches(r, &w) {
            failures.push(format!(
                "{what}: command {i}: got status {:#04x} sense {:02x?}, want {w:?}",
                r.status, r.sense
            ));
        }
    }
    let q = queues(0);
    if (q.incoming, q.active, cam::frozen(0, 0, 0)) != (0, 0, 0) {
        failures.push(format!("{what}: left {q:?}, frozen {}", cam::frozen(0, 0, 0)));
    }
    let after = ctl::execute(lun, &kind.cmd(0));
    if !matches(&after, &Want::Good) {
        failures.push(format!("{what}: afterwards {kind:?} got {after:?}"));
    }
    (lun, failures)
}

#[test]
fn the_fault_matrix_ends_every_command_once_as_the_table_says() {
    let (m, luns) = machine(1);
    let mut lun = luns[0];
    let mut failures = Vec::new();
    let mut cells = 0;
    for trouble in troubles() {
        for kind in KINDS {
            for qd in [1, 32] {
                let (l, f) = cell(&m, lun, &trouble, kind, qd);
                lun = l;
                failures.extend(f);
                cells += 1;
            }
        }
    }
    assert_eq!(failures, Vec::<String>::new());
    // 14 CAM statuses, 15 sense keys, 3 other statuses, loss, memory,
    // data moves, abort; five commands; two queue depths.
    assert_eq!(cells, 36 * 5 * 2);
    shut_down(m, &[lun]);
}

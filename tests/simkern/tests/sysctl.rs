//! `kern.cam.ctl.passthrough`, as an administrator reads it with sysctl(8):
//! the module's tunables and mode, and each LUN's node, whose counters move
//! as the I/O that should move them runs (reads, writes, a CHECK CONDITION,
//! a timeout, a transport error, BUSY, no memory, an abort, a pulled
//! device), whose queue depths show commands a device holds, and whose
//! `ctl_conf` reads back, through ctl.conf's lexer, as the LUN's own
//! blocksize, serial number and device id.  The tunables are fetched from
//! the kernel environment at load and set with sysctl; bad values are
//! refused with EINVAL; a new LUN takes the pool size and lost policy of
//! the time.  Removal takes the LUN's node away; unload leaves no OID and
//! no memory.

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use simkern::cam::{self, Effect, Fault, Match};
use simkern::cdb::cdb16;
use simkern::ctl::frontend::Response;
use simkern::ctl::{self, Cmd, Request, Tmf};
use simkern::shell::Shell;
use simkern::sysctl::{self, Value};
use simkern::{Config, Machine, malloc, manpage, sys, taskqueue};

const TOP: &str = "kern.cam.ctl.passthrough";

/// The counters of a LUN's node, by name under `lun.<id>`.
const COUNTERS: [&str; 10] = [
    "commands",
    "bytes_read",
    "bytes_written",
    "errors.check_condition",
    "errors.transport",
    "errors.timeout",
    "errors.device_lost",
    "errors.resource",
    "aborts",
    "busy",
];

fn get(name: &str) -> Value {
    sysctl::get(name).unwrap_or_else(|e| panic!("sysctl {name}: errno {e}"))
}

fn lun_value(lun: u32, name: &str) -> Value {
    get(&format!("{TOP}.lun.{lun}.{name}"))
}

fn text(lun: u32, name: &str) -> String {
    match lun_value(lun, name) {
        Value::String(s) => s,
        v => panic!("{name} is {v:?}"),
    }
}

fn depth(lun: u32, queue: &str) -> u32 {
    match lun_value(lun, &format!("queue.{queue}")) {
        Value::U32(v) => v,
        v => panic!("queue.{queue} is {v:?}"),
    }
}

/// The per-LUN variables ctlpass(4) documents, under `lun.N.`.
fn documented_per_lun() -> Vec<String> {
    let prefix = format!("{TOP}.lun.N.");
    manpage::sysctls()
        .into_iter()
        .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

fn counters(lun: u32) -> BTreeMap<&'static str, u64> {
    COUNTERS
        .iter()
        .map(|&c| match lun_value(lun, c) {
            Value::U64(v) => (c, v),
            v => panic!("{c} is {v:?}"),
        })
        .collect()
}

/// Runs `f` and returns the counters that moved, and by how much.
fn moved<R>(lun: u32, f: impl FnOnce() -> R) -> (R, Vec<(&'static str, u64)>) {
    let before = counters(lun);
    let r = f();
    let after = counters(lun);
    let d = COUNTERS
        .iter()
        .filter(|c| after[*c] != before[*c])
        .map(|&c| (c, after[c] - before[c]))
        .collect();
    (r, d)
}

fn create(opts: &[(&str, &str)]) -> u32 {
    let r = ctl::lun_request("passthrough", &Request::create(), opts);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    let lun = r.created.expect("a LUN").3;
    // The power-on unit attention, which CTL answers itself.
    ctl::execute(lun, &Cmd::none(&[0; 6]));
    lun
}

fn remove(lun: u32) {
    let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
}

fn read16(lba: u64, blocks: u32, bs: usize) -> Cmd {
    Cmd::read(&cdb16(0x88, 0, lba, blocks), blocks as usize * bs)
}

fn write16(lba: u64, data: &[u8]) -> Cmd {
    Cmd::write(&cdb16(0x8a, 0, lba, (data.len() / 512) as u32), data)
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(20), "waited 20 s for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Holds the next `n` commands touching `lbas` on the device at target
/// `t` of bus 0, far longer than the test takes to end them otherwise.
fn hold(t: u32, lbas: std::ops::Range<u64>, n: u64) {
    let held = Effect::Delay(Duration::from_secs(10));
    cam::inject(0, t, 0, Fault::new(Match::any().lbas(lbas), held).times(n));
}

/// A command sent from its own thread, with its tag once CTL has it.
struct Sent {
    tag: u64,
    thread: JoinHandle<Response>,
}

fn send(lun: u32, cmd: Cmd) -> Sent {
    let before = ctl::tasks(lun).len();
    let thread = std::thread::spawn(move || ctl::execute(lun, &cmd));
    wait_for(|| ctl::tasks(lun).len() > before, "the command to reach CTL");
    let tag = ctl::tasks(lun).last().map_or(0, |t| t.1);
    Sent { tag, thread }
}

fn join(s: Sent) -> Response {
    s.thread.join().expect("the initiator thread")
}

#[test]
fn the_tree_after_load_and_create() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    let names = |prefix: &str| -> Vec<(String, bool)> {
        sysctl::list(prefix)
            .into_iter()
            .map(|e| (e.name[TOP.len()..].to_owned(), e.node))
            .collect()
    };
    let module = [
        ("", true),
        (".mode", false),
        (".pool_size", false),
        (".timeout", false),
        (".lost", false),
        (".lun", true),
    ];
    assert_eq!(names(TOP), module.map(|(n, d)| (n.to_owned(), d)));
    assert_eq!(get(&format!("{TOP}.mode")), Value::String("A".into()));
    assert_eq!(get(&format!("{TOP}.pool_size")), Value::U64(32 << 20));
    assert_eq!(get(&format!("{TOP}.timeout")), Value::U32(60_000));
    assert_eq!(get(&format!("{TOP}.lost")), Value::String("offline".into()));
    let lun = create(&[("device", "da0")]);
    let per_lun = [
        ("", true),
        (".device", false),
        (".state", false),
        (".commands", false),
        (".bytes_read", false),
        (".bytes_written", false),
        (".errors", true),
        (".errors.check_condition", false),
        (".errors.transport", false),
        (".errors.timeout", false),
        (".errors.device_lost", false),
        (".errors.resource", false),
        (".aborts", false),
        (".busy", false),
        (".queue", true),
        (".queue.incoming", false),
        (".queue.active", false),
        (".queue.abandoned", false),
        (".queue.done", false),
        (".ctl_conf", false),
    ];
    let node = format!("{TOP}.lun.{lun}");
    let got: Vec<(String, bool)> = sysctl::list(&node)
        .into_iter()
        .map(|e| (e.name[node.len()..].to_owned(), e.node))
        .collect();
    assert_eq!(got, per_lun.map(|(n, d)| (n.to_owned(), d)));
    // The tree is exactly what ctlpass(4) documents.
    let mut leaves: Vec<String> = module
        .iter()
        .chain(&per_lun)
        .filter(|(_, node)| !node)
        .map(|(n, _)| n.to_string())
        .collect();
    leaves.sort();
    let mut documented: Vec<String> = manpage::sysctls()
        .iter()
        .map(|n| n[TOP.len()..].replace(".lun.N", ""))
        .collect();
    documented.sort();
    assert_eq!(documented, leaves, "the sysctl variables of ctlpass(4)");
    assert_eq!(text(lun, "device"), "da0");
    assert_eq!(text(lun, "state"), "online");
    assert!(counters(lun).values().all(|&v| v == 0));
    // Read-only OIDs refuse writes (sysctl_root's EPERM); nodes are nodes.
    assert_eq!(sysctl::set(&format!("{TOP}.mode"), b"B"), Err(sys::EPERM as i32));
    assert_eq!(
        sysctl::set(&format!("{node}.commands"), &0u64.to_ne_bytes()),
        Err(sys::EPERM as i32)
    );
    assert_eq!(sysctl::get(&node), Err(sys::EISDIR as i32));
    remove(lun);
    assert!(sysctl::list(&node).is_empty(), "the LUN's node goes with it");
    assert_eq!(names(TOP), module.map(|(n, d)| (n.to_owned(), d)));
    m.kldunload().unwrap();
    assert!(sysctl::list(TOP).is_empty());
    assert_eq!(malloc::stats("sysctloid").map(|s| s.in_use), Some(0), "every OID freed");
    assert_eq!(malloc::leaks(), Vec::<String>::new());
}

#[test]
fn every_counter_moves_with_the_io_that_should_move_it() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    let lun = create(&[("device", "da0")]);
    let before = counters(lun);
    // No memory for the first request (a new LUN's pools are empty): BUSY.
    malloc::fail_nowait("ctlpass", u64::MAX);
    let (r, d) = moved(lun, || ctl::execute(lun, &read16(0, 1, 512)));
    malloc::fail_nowait("ctlpass", 0);
    assert_eq!(r.status, 0x08, "{r:?}");
    assert_eq!(d, [("commands", 1), ("errors.resource", 1)]);
    let (r, d) = moved(lun, || ctl::execute(lun, &read16(0, 8, 512)));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(d, [("commands", 1), ("bytes_read", 4096)]);
    let (r, d) = moved(lun, || ctl::execute(lun, &write16(8, &[0x5a; 4096])));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(d, [("commands", 1), ("bytes_written", 4096)]);
    let faults = [
        (
            Effect::check_condition(0x03, 0x11, 0x00),
            0x02,
            "errors.check_condition",
        ),
        (Effect::Cam(sys::CAM_CMD_TIMEOUT), 0x02, "errors.timeout"),
        (Effect::Cam(sys::CAM_SEL_TIMEOUT), 0x02, "errors.transport"),
        (Effect::busy(), 0x08, "busy"),
        (Effect::task_set_full(), 0x28, "busy"),
    ];
    for (effect, status, counter) in faults {
        cam::inject(0, 0, 0, Fault::new(Match::opcodes(&[0x28, 0x88]), effect.clone()));
        let (r, d) = moved(lun, || ctl::execute(lun, &read16(0, 1, 512)));
        assert_eq!(r.status, status, "{effect:?}: {r:?}");
        assert_eq!(d, [("commands", 1), (counter, 1)], "{effect:?}");
    }
    // ABORT TASK of a read the device holds.
    hold(0, 1000..1001, 1);
    let (r, d) = moved(lun, || {
        let held = send(lun, read16(1000, 1, 512));
        wait_for(|| depth(lun, "active") == 1, "the held read");
        let abort = Tmf::AbortTask {
            lun,
            initiator: 0,
            tag: held.tag,
        };
        assert_eq!(ctl::task_management(abort), 1);
        join(held)
    });
    assert_eq!(r.status, 0x40, "TASK ABORTED: {r:?}");
    assert_eq!(d, [("commands", 1), ("aborts", 1)]);
    // The device is pulled with a read on it.
    hold(0, 2000..2001, 1);
    let (r, d) = moved(lun, || {
        let held = send(lun, read16(2000, 1, 512));
        wait_for(|| depth(lun, "active") == 1, "the held read");
        m.unplug(0, 0, 0);
        join(held)
    });
    assert_eq!(r.status, 0x02, "{r:?}");
    assert_eq!(d, [("commands", 1), ("errors.device_lost", 1)]);
    wait_for(|| text(lun, "state") == "offline", "the LUN to go offline");
    assert_eq!(text(lun, "device"), "");
    // Every counter ctlpass(4) documents moved.
    let after = counters(lun);
    let unmoved: Vec<&str> = COUNTERS.iter().copied().filter(|c| after[c] == before[c]).collect();
    assert_eq!(unmoved, Vec::<&str>::new());
    let queues_and_state =
        |n: &String| n.starts_with("queue.") || ["device", "state", "ctl_conf"].contains(&n.as_str());
    let documented: Vec<String> = documented_per_lun()
        .into_iter()
        .filter(|n| !queues_and_state(n))
        .collect();
    assert_eq!(documented, COUNTERS.map(str::to_owned), "the counters of ctlpass(4)");
    remove(lun);
    m.kldunload().unwrap();
    assert_eq!(malloc::leaks(), Vec::<String>::new());
}

#[test]
fn queue_depths_show_what_a_gated_device_holds() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    let lun = create(&[("device", "da0")]);
    cam::set_openings(0, 0, 0, 1);
    hold(0, 1000..1001, 1);
    let held = send(lun, read16(1000, 1, 512));
    wait_for(|| depth(lun, "active") == 1, "the held read");
    let queued = [send(lun, read16(0, 1, 512)), send(lun, read16(1, 1, 512))];
    wait_for(|| depth(lun, "incoming") == 2, "two reads waiting for a CCB");
    assert_eq!((depth(lun, "active"), depth(lun, "abandoned")), (1, 0));
    assert_eq!(ctl::task_management(Tmf::AbortTaskSet { lun, initiator: 0 }), 3);
    assert_eq!(join(held).status, 0x40);
    for s in queued {
        assert_eq!(join(s).status, 0x40);
    }
    wait_for(|| depth(lun, "active") == 0, "the aborted read to return");
    for q in ["incoming", "active", "abandoned", "done"] {
        assert_eq!(depth(lun, q), 0, "{q}");
    }
    // A read the device finished waits in `done` while taskqueue_thread is
    // busy with another subsystem's task.
    let held = taskqueue::hold();
    let read = send(lun, read16(0, 1, 512));
    wait_for(|| depth(lun, "done") == 1, "the read waiting for the done task");
    assert_eq!((depth(lun, "incoming"), depth(lun, "active")), (0, 0));
    drop(held);
    assert_eq!(join(read).status, 0);
    assert_eq!(depth(lun, "done"), 0);
    // A read whose CCB the SIM cannot abort is abandoned when aborted: it
    // ends for the initiator, and waits in `abandoned` for the device.
    cam::set_abort_support(0, 0, 0, false);
    let slow = Effect::Delay(Duration::from_secs(3));
    cam::inject(0, 0, 0, Fault::new(Match::any().lbas(3000..3001), slow).times(1));
    let read = send(lun, read16(3000, 1, 512));
    wait_for(|| depth(lun, "active") == 1, "the slow read");
    let abort = Tmf::AbortTask {
        lun,
        initiator: 0,
        tag: read.tag,
    };
    assert_eq!(ctl::task_management(abort), 1);
    assert_eq!(join(read).status, 0x40, "TASK ABORTED");
    wait_for(|| depth(lun, "abandoned") == 1, "the abandoned read");
    assert_eq!(depth(lun, "active"), 0);
    wait_for(|| depth(lun, "abandoned") == 0, "the abandoned read's CCB");
    let seen = ["incoming", "active", "abandoned", "done"];
    let documented: Vec<String> = documented_per_lun()
        .into_iter()
        .filter_map(|n| n.strip_prefix("queue.").map(str::to_owned))
        .collect();
    assert_eq!(
        documented,
        seen.map(str::to_owned),
        "every queue of ctlpass(4) seen holding a request"
    );
    remove(lun);
    m.kldunload().unwrap();
}

#[test]
fn tunables_come_from_kenv_and_sysctl_and_bad_values_are_refused() {
    let m = Machine::boot(Config::standard());
    sysctl::kenv_set(&format!("{TOP}.timeout"), "45000");
    sysctl::kenv_set(&format!("{TOP}.pool_size"), "2M");
    sysctl::kenv_set(&format!("{TOP}.lost"), "remove");
    m.kldload().unwrap();
    assert_eq!(get(&format!("{TOP}.timeout")), Value::U32(45_000));
    assert_eq!(get(&format!("{TOP}.pool_size")), Value::U64(2 << 20));
    assert_eq!(get(&format!("{TOP}.lost")), Value::String("remove".into()));
    let einval = Err(sys::EINVAL as i32);
    let set_u64 = |name: &str, v: u64| sysctl::set(&format!("{TOP}.{name}"), &v.to_ne_bytes());
    let set_u32 = |name: &str, v: u32| sysctl::set(&format!("{TOP}.{name}"), &v.to_ne_bytes());
    assert_eq!(set_u64("pool_size", (1 << 20) - 1), einval);
    assert_eq!(set_u64("pool_size", (1 << 30) + 1), einval);
    assert_eq!(set_u32("timeout", 999), einval);
    assert_eq!(set_u32("timeout", 3_600_001), einval);
    assert_eq!(sysctl::set(&format!("{TOP}.lost"), b"later"), einval);
    assert_eq!(get(&format!("{TOP}.timeout")), Value::U32(45_000), "unchanged");
    // Data commands carry the timeout of the time.
    let da0 = create(&[("device", "da0")]);
    ctl::execute(da0, &read16(0, 1, 512));
    assert_eq!(set_u32("timeout", 5000), Ok(()));
    ctl::execute(da0, &read16(0, 1, 512));
    let timeouts = cam::device_stats(0, 0, 0).timeouts;
    assert_eq!(
        (timeouts.get(&45_000), timeouts.get(&5_000)),
        (Some(&1), Some(&1)),
        "{timeouts:?}"
    );
    // The LUN took lost=remove from the tunable: pulled, it goes.
    m.unplug(0, 0, 0);
    wait_for(|| ctl::luns().is_empty(), "the LUN to be removed");
    assert!(m.dmesg().contains("ctlpass: LUN 0: da0 is lost; removing the LUN\n"));
    assert!(sysctl::list(&format!("{TOP}.lun.{da0}")).is_empty());
    // A new LUN keeps at most pool_size bytes of buffers: with 1 MiB, a
    // read of 4 KiB waits behind a held read of 1 MiB.
    assert_eq!(set_u64("pool_size", 1 << 20), Ok(()));
    let da1 = create(&[("device", "da1"), ("lost", "offline")]);
    hold(1, 0..1, 1);
    let big = send(da1, read16(0, 256, 4096));
    wait_for(|| depth(da1, "active") == 1, "the held read");
    let small = send(da1, read16(500, 1, 4096));
    wait_for(|| depth(da1, "incoming") == 1, "the read waiting for a buffer");
    assert_eq!(depth(da1, "active"), 1);
    assert_eq!(ctl::task_management(Tmf::AbortTaskSet { lun: da1, initiator: 0 }), 2);
    assert_eq!((join(big).status, join(small).status), (0x40, 0x40));
    wait_for(|| depth(da1, "active") == 0, "the aborted read to return");
    remove(da1);
    m.kldunload().unwrap();
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    // A tunable the handler refuses keeps its default, as the kernel says.
    drop(m);
    let m = Machine::boot(Config::standard());
    sysctl::kenv_set(&format!("{TOP}.timeout"), "5");
    m.kldload().unwrap();
    assert_eq!(get(&format!("{TOP}.timeout")), Value::U32(60_000));
    assert!(
        m.dmesg()
            .contains(&format!("Setting sysctl {TOP}.timeout failed: 22\n"))
    );
}

/// ctl.conf(5) read back as ctld's lexer (usr.sbin/ctld/token.l) and
/// parser read a `lun` block: its name and its settings.
fn parse_ctl_conf(text: &str) -> (String, BTreeMap<String, String>) {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[1..];
        } else if c == '#' {
            rest = rest.find('\n').map_or("", |n| &rest[n..]);
        } else if c == '"' {
            let end = rest[1..].find('"').expect("a closing quote") + 1;
            assert!(end > 1, "an empty quoted string does not lex");
            tokens.push(rest[1..end].to_owned());
            rest = &rest[end + 1..];
        } else if c == '{' || c == '}' {
            tokens.push(c.to_string());
            rest = &rest[1..];
        } else {
            let bare = |c: char| c.is_ascii_alphanumeric() || ".-@_/:[]".contains(c);
            let end = rest.find(|c: char| !bare(c)).unwrap_or(rest.len());
            assert!(end > 0, "{c:?} is no ctl.conf token");
            tokens.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    assert_eq!((tokens[0].as_str(), tokens[2].as_str()), ("lun", "{"), "{tokens:?}");
    assert_eq!(tokens.last().map(String::as_str), Some("}"));
    let settings = tokens[3..tokens.len() - 1]
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect();
    (tokens[1].clone(), settings)
}

#[test]
fn ctl_conf_is_the_stanza_ctld_reads_back_unchanged() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    let disk = ctl::lun_request("passthrough", &Request::create(), &[("device", "da0")]);
    let (_, _, bs, disk, serial, devid) = disk.created.expect("a LUN");
    let stanza = text(disk, "ctl_conf");
    assert_eq!(
        stanza,
        "lun da0 {\n\tbackend passthrough\n\tpath da0\n\tblocksize 512\n\tserial \"Z1Z3ABCD\"\n\
         \tdevice-id \"Z1Z3ABCD\"\n}"
    );
    let (name, s) = parse_ctl_conf(&stanza);
    assert_eq!(name, "da0");
    assert_eq!(s["backend"], "passthrough");
    assert_eq!(
        (s["blocksize"].parse::<u32>().unwrap(), &s["serial"], &s["device-id"]),
        (bs, &serial, &devid)
    );
    // A CD named by serial number (a path that must be quoted), named for
    // ctld by a keyword (quoted too).
    let opts = [("serial", "R8RS6GAB123456"), ("ctld_name", "target")];
    let cd = ctl::lun_request("passthrough", &Request::create(), &opts);
    let (_, _, bs, cd, serial, devid) = cd.created.expect("a LUN");
    let stanza = text(cd, "ctl_conf");
    assert_eq!(
        stanza,
        "lun \"target\" {\n\tbackend passthrough\n\tpath \"serial=R8RS6GAB123456\"\n\tblocksize 2048\n\
         \tserial \"R8RS6GAB123456\"\n\tdevice-id \"R8RS6GAB123456\"\n}"
    );
    let (name, s) = parse_ctl_conf(&stanza);
    assert_eq!((name.as_str(), s["path"].as_str()), ("target", "serial=R8RS6GAB123456"));
    assert_eq!(
        (s["blocksize"].parse::<u32>().unwrap(), &s["serial"], &s["device-id"]),
        (bs, &serial, &devid)
    );
    // A serial number with a double quote cannot be written in ctl.conf.
    let quoted = Request::Create {
        device_type: 0,
        size: 0,
        blocksize: 0,
        lun_id: None,
        serial: Some("AB\"CD".into()),
        device_id: None,
    };
    let r = ctl::lun_request("passthrough", &quoted, &[("device", "da1")]);
    let odd = r.created.expect("a LUN").3;
    assert_eq!(
        text(odd, "ctl_conf"),
        format!("# ctl.conf(5) cannot express LUN {odd}: its serial number is no ctl.conf string")
    );
    for lun in [disk, cd, odd] {
        remove(lun);
    }
}

#[test]
fn the_shell_prints_and_sets_as_sysctl_and_kenv_do() {
    let mut sh = Shell::new(Machine::boot(Config::standard()));
    let mut run = |line: &str| sh.run(line);
    assert_eq!(
        run("kenv kern.cam.ctl.passthrough.timeout=30000"),
        Ok("kern.cam.ctl.passthrough.timeout=\"30000\"\n".into())
    );
    assert_eq!(run("kldload ctlpass"), Ok(String::new()));
    assert_eq!(
        run("sysctl kern.cam.ctl.passthrough"),
        Ok("kern.cam.ctl.passthrough.mode: A\n\
            kern.cam.ctl.passthrough.pool_size: 33554432\n\
            kern.cam.ctl.passthrough.timeout: 30000\n\
            kern.cam.ctl.passthrough.lost: offline\n"
            .into())
    );
    assert_eq!(
        run("sysctl -d kern.cam.ctl.passthrough.timeout"),
        Ok(
            "kern.cam.ctl.passthrough.timeout: Timeout of data commands sent to a device, in milliseconds \
            (1000-3600000)\n"
                .into()
        )
    );
    assert_eq!(
        run("sysctl kern.cam.ctl.passthrough.timeout=5"),
        Err("kern.cam.ctl.passthrough.timeout: 30000\n\
             sysctl: kern.cam.ctl.passthrough.timeout=5: Invalid argument\n"
            .into())
    );
    assert_eq!(
        run("sysctl kern.cam.ctl.passthrough.timeout=5000 kern.cam.ctl.passthrough.lost=remove"),
        Ok(
            "kern.cam.ctl.passthrough.timeout: 30000 -> 5000\nkern.cam.ctl.passthrough.lost: offline -> remove\n"
                .into()
        )
    );
    assert_eq!(
        run("sysctl kern.cam.ctl.passthrough.timeout=ten"),
        Err("sysctl: invalid uint32_t 'ten'\n".into())
    );
    assert_eq!(
        run("sysctl kern.cam.ctl.passthrough.mode=B"),
        Err("sysctl: oid 'kern.cam.ctl.passthrough.mode' is read only\n".into())
    );
    assert_eq!(
        run("sysctl kern.cam.ctl.passthrough.lun=1"),
        Err("sysctl: oid 'kern.cam.ctl.passthrough.lun' isn't a leaf node\n".into())
    );
    assert_eq!(
        run("sysctl kern.nothing"),
        Err("sysctl: unknown oid 'kern.nothing'\n".into())
    );
    assert_eq!(run("create -b passthrough -o device=da0").map(|_| ()), Ok(()));
    assert_eq!(
        run("sysctl kern.cam.ctl.passthrough.lun.0.device kern.cam.ctl.passthrough.lun.0.errors"),
        Ok("kern.cam.ctl.passthrough.lun.0.device: da0\n\
            kern.cam.ctl.passthrough.lun.0.errors.check_condition: 0\n\
            kern.cam.ctl.passthrough.lun.0.errors.transport: 0\n\
            kern.cam.ctl.passthrough.lun.0.errors.timeout: 0\n\
            kern.cam.ctl.passthrough.lun.0.errors.device_lost: 0\n\
            kern.cam.ctl.passthrough.lun.0.errors.resource: 0\n"
            .into())
    );
}

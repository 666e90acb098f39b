//! `make bench`: what the passthrough backend costs on the I/O path,
//! measured in the simulated kernel in one run.
//!
//! The same commands run directly (CCBs to the SIM, each completion sending
//! the next) and through a ctlpass LUN (the simulated iSCSI port, CTL, the
//! backend, its periph, CAM, the same SIM, each completion sending the
//! next), alternately, [`ROUNDS`] times; a row gives the median IOPS of each
//! and their ratio.  The device has a latency of 50 µs and 32 openings, and
//! moves data as a device's DMA does, without host CPU; the port moves it as
//! a transport placing data directly does (see `set_zero_copy`), so the
//! ratios measure the software path, not the simulator's memcpy.  The
//! 1 MiB rows run twice: on a device with a media rate (a 24 Gbit/s SAS
//! link), as a streaming device is, and in the summary; and with data
//! taking no time, which measures CPU on the path only.  Then:
//! data copies the backend made (data moves whose kernel buffer is not a
//! CCB's buffer) and malloc(9) calls of the module per I/O in steady state;
//! and, under `valgrind --tool=callgrind` where it is installed, the
//! instructions executed in ctlpass code per I/O with 1, 16 and 64 LUNs
//! busy at once.  The last line is machine-readable.

use std::arch::asm;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use simkern::cam::{self, DirectData};
use simkern::ctl::{self, Cmd, Request, frontend};
use simkern::devices::{Command, GOOD, Identity, Outcome, RamDisk, ScsiDevice};
use simkern::{Config, Machine, malloc, sys};

/// Times each row is measured, each way.
const ROUNDS: usize = 3;
/// The device's latency.
const LATENCY: Duration = Duration::from_micros(50);
/// The device's openings.
const OPENINGS: u32 = 32;
/// The media rate of the 1 MiB rows' device: a 24 Gbit/s SAS link's
/// 2.4 GB/s, the fastest a SCSI device attaches with.
const MEDIA_RATE: u64 = 2_400_000_000;
/// Block size and blocks of each disk.
const BS: usize = 512;
const BLOCKS: u64 = 1 << 21;
/// I/Os per LUN configuration under callgrind.
const CALLGRIND_IOS: usize = 3200;
/// LUN counts whose cost per I/O is compared.
const LUN_COUNTS: [usize; 3] = [1, 16, 64];

/// A disk whose READs and WRITEs take no host CPU for their data, as DMA
/// takes none: everything else is the emulated disk's.
struct DmaDisk(RamDisk);

impl ScsiDevice for DmaDisk {
    fn device_type(&self) -> u8 {
        self.0.device_type()
    }

    fn identity(&self) -> &Identity {
        self.0.identity()
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        match cmd.cdb.first() {
            Some(0x28 | 0x2a | 0x88 | 0x8a) => Outcome {
                status: GOOD,
                sense: Vec::new(),
                transferred: cmd.data_in.len().max(cmd.data_out.len()),
            },
            _ => self.0.execute(cmd),
        }
    }
}

/// A machine with `n` disks on one SIM (targets 0..n), the module loaded,
/// a LUN on each, and the power-on unit attentions taken; the LUN ids.
fn machine(n: usize) -> (Machine, Vec<u32>) {
    let devices = (0..n as u32)
        .map(|t| {
            Arc::new(DmaDisk(RamDisk::new(
                Identity {
                    vendor: "SIMDISK".into(),
                    product: "BENCH".into(),
                    revision: "0001".into(),
                    serial: format!("BENCH{t:04}"),
                    naa: Some(0x5000_c500_1000_0000 + u64::from(t)),
                    eui64: None,
                },
                BLOCKS,
                BS as u32,
            ))) as Arc<dyn ScsiDevice>
        })
        .collect();
    let m = Machine::boot(Config::one_bus(1 << 20, OPENINGS, devices));
    m.kldload().expect("kldload ctlpass");
    let luns = (0..n)
        .map(|t| {
            let req = Request::create();
            let r = ctl::lun_request("passthrough", &req, &[("cam", &format!("0:{t}:0"))]);
            assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
            let lun = r.created.expect("a created LUN").3;
            ctl::execute(lun, &Cmd::none(&[0; 6]));
            cam::set_latency(0, t as u32, 0, LATENCY);
            lun
        })
        .collect();
    frontend::set_zero_copy(true);
    (m, luns)
}

/// Removes the LUNs and unloads the module.
fn shut_down(m: Machine, luns: &[u32]) {
    for &lun in luns {
        let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
        assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    }
    m.kldunload().expect("kldunload ctlpass");
    drop(m);
}

/// READ(16) or WRITE(16).
fn rw16(write: bool, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![if write { 0x8a } else { 0x88 }, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&blocks.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

/// One row: `count` transfers of `size` bytes at queue depth `qd`.
struct Row {
    name: &'static str,
    size: usize,
    qd: usize,
    write: bool,
    sequential: bool,
    count: usize,
    /// The device's media rate in bytes per second (0: data takes no time).
    media_rate: u64,
}

const ROWS: [Row; 7] = [
    Row {
        name: "4 KiB random read, QD1",
        size: 4096,
        qd: 1,
        write: false,
        sequential: false,
        count: 4_000,
        media_rate: 0,
    },
    Row {
        name: "4 KiB random read, QD8",
        size: 4096,
        qd: 8,
        write: false,
        sequential: false,
        count: 30_000,
        media_rate: 0,
    },
    Row {
        name: "4 KiB random read, QD32",
        size: 4096,
        qd: 32,
        write: false,
        sequential: false,
        count: 90_000,
        media_rate: 0,
    },
    Row {
        name: "1 MiB sequential read, QD32",
        size: 1 << 20,
        qd: 32,
        write: false,
        sequential: true,
        count: 2_400,
        media_rate: MEDIA_RATE,
    },
    Row {
        name: "1 MiB sequential write, QD32",
        size: 1 << 20,
        qd: 32,
        write: true,
        sequential: true,
        count: 2_400,
        media_rate: MEDIA_RATE,
    },
    Row {
        name: "1 MiB seq. read, no media time",
        size: 1 << 20,
        qd: 32,
        write: false,
        sequential: true,
        count: 60_000,
        media_rate: 0,
    },
    Row {
        name: "1 MiB seq. write, no media time",
        size: 1 << 20,
        qd: 32,
        write: true,
        sequential: true,
        count: 60_000,
        media_rate: 0,
    },
];

impl Row {
    /// The CDBs of the row, in order.
    fn cdbs(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let blocks = (self.size / BS) as u64;
        let slots = BLOCKS / blocks;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..self.count as u64).map(move |i| {
            let slot = if self.sequential {
                i % slots
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % slots
            };
            rw16(self.write, slot * blocks, blocks as u32)
        })
    }
}

/// What a row measured.
struct Measured {
    direct: f64,
    ctlpass: f64,
    /// Data moves, and those whose buffer was not a CCB's.
    moves: usize,
    copies: usize,
    /// ctlpass's malloc(9) calls and the I/Os they served, in the rounds
    /// after the first.
    allocs: u64,
    steady_ios: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Calls to malloc(9) of the module's type so far.
fn module_allocations() -> u64 {
    malloc::stats("ctlpass").map_or(0, |s| s.requests)
}

fn run_direct(row: &Row, payload: &Arc<[u8]>) -> f64 {
    let cmds: Vec<(Vec<u8>, DirectData)> = row
        .cdbs()
        .map(|c| {
            let data = if row.write {
                DirectData::Out(payload.clone())
            } else {
                DirectData::In(row.size as u32)
            };
            (c, data)
        })
        .collect();
    let t = Instant::now();
    let results = cam::run_direct_with(0, 0, 0, cmds, row.qd, false);
    let iops = row.count as f64 / t.elapsed().as_secs_f64();
    assert!(results.iter().all(|r| r.is_ok()), "a direct command failed");
    iops
}

fn run_ctlpass(row: &Row, lun: u32, payload: &Arc<[u8]>) -> f64 {
    let cmds: Vec<Cmd> = row
        .cdbs()
        .map(|c| {
            if row.write {
                Cmd::write_shared(&c, payload.clone())
            } else {
                Cmd::read(&c, row.size)
            }
        })
        .collect();
    let t = Instant::now();
    let responses = ctl::run_with(lun, cmds, row.qd, false);
    let iops = row.count as f64 / t.elapsed().as_secs_f64();
    assert!(
        responses.iter().all(|r| r.status == 0 && r.residual == 0),
        "a command through ctlpass failed"
    );
    iops
}

fn measure(row: &Row, lun: u32) -> Measured {
    let payload: Arc<[u8]> = vec![0xa5; if row.write { row.size } else { 0 }].into();
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    let mut m = Measured {
        direct: 0.0,
        ctlpass: 0.0,
        moves: 0,
        copies: 0,
        allocs: 0,
        steady_ios: 0,
    };
    cam::set_media_rate(0, 0, 0, row.media_rate);
    for round in 0..ROUNDS {
        // Alternate which goes first, so that drift hits both alike.
        if round % 2 == 0 {
            direct.push(run_direct(row, &payload));
        }
        frontend::reset_datamove_stats();
        cam::reset_ccb_buffers(0, 0, 0);
        let before = module_allocations();
        through.push(run_ctlpass(row, lun, &payload));
        if round > 0 {
            m.allocs += module_allocations() - before;
            m.steady_ios += row.count as u64;
        }
        let moves = frontend::datamove_stats();
        let buffers = cam::ccb_buffers(0, 0, 0);
        if moves.segments_dropped == 0 && buffers.len() < cam::BUFFER_LOG_LEN {
            m.moves += moves.segments.len();
            m.copies += moves.segments.len() - moves.segments_within(&buffers);
        }
        if round % 2 == 1 {
            direct.push(run_direct(row, &payload));
        }
    }
    m.direct = median(direct);
    m.ctlpass = median(through);
    m
}

// --- callgrind ---

/// A Valgrind client request (valgrind.h's VALGRIND_DO_CLIENT_REQUEST on
/// amd64); a no-op when not running under Valgrind.
fn client_request(request: usize) {
    let args: [usize; 6] = [request, 0, 0, 0, 0, 0];
    let mut result: usize = 0;
    // SAFETY: the rotations of rdi sum to 128 bits and leave it unchanged;
    // `xchg rbx, rbx` changes nothing; Valgrind recognises the sequence and
    // reads the request from `args`.
    unsafe {
        asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") result,
            out("rdi") _,
            options(nostack)
        );
    }
    let _ = result;
}

/// callgrind.h: VG_USERREQ_TOOL_BASE('C','T').
const CALLGRIND_BASE: usize = (b'C' as usize) << 24 | (b'T' as usize) << 16;
const CALLGRIND_DUMP_STATS: usize = CALLGRIND_BASE;
const CALLGRIND_ZERO_STATS: usize = CALLGRIND_BASE + 1;

/// The child under callgrind: `n` LUNs, [`CALLGRIND_IOS`] 4 KiB reads
/// spread over them at once (64 in flight in all), counted alone.
fn callgrind_child(n: usize) {
    let (m, luns) = machine(n);
    for &t in &luns {
        cam::set_latency(0, t, 0, Duration::ZERO);
    }
    let per_lun = CALLGRIND_IOS / n;
    let qd = (64 / n).clamp(1, 32);
    let work = |count: usize| {
        std::thread::scope(|s| {
            for (i, &lun) in luns.iter().enumerate() {
                s.spawn(move || {
                    let cmds =
                        (0..count as u64).map(|k| Cmd::read(&rw16(false, (i as u64 * 4096 + k * 8) % BLOCKS, 8), 4096));
                    let r = ctl::run_with(lun, cmds, qd, false);
                    assert!(r.iter().all(|r| r.status == 0));
                });
            }
        });
    };
    // Warm the pools, then count.
    work(per_lun.min(64));
    client_request(CALLGRIND_ZERO_STATS);
    work(per_lun);
    client_request(CALLGRIND_DUMP_STATS);
    println!("ios {}", per_lun * n);
    shut_down(m, &luns);
}

/// Instructions per I/O in ctlpass code (the crate and its C shim) with
/// `n` LUNs, from a child run under callgrind; `None` without Valgrind.
fn callgrind_cost(n: usize) -> Option<f64> {
    let dir = std::env::temp_dir().join(format!("ctlpass-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join(format!("callgrind.{n}"));
    let exe = std::env::current_exe().ok()?;
    let child = Process::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=yes")
        .arg(format!("--callgrind-out-file={}.%p", out.display()))
        .arg(&exe)
        .arg("--callgrind-child")
        .arg(n.to_string())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&child.stdout);
    let ios: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ios "))?
        .trim()
        .parse()
        .ok()?;
    if !child.status.success() {
        eprintln!(
            "bench: callgrind child failed: {}",
            String::from_utf8_lossy(&child.stderr)
        );
        return None;
    }
    // The dump made by CALLGRIND_DUMP_STATS is the file ending in ".1".
    let dump = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let name = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with(&format!("callgrind.{n}.")) && name.ends_with(".1")
        })?;
    let text = std::fs::read_to_string(&dump).ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    Some(module_cost(&text) as f64 / ios)
}

/// The instructions executed in ctlpass code (the crate's functions and
/// its C shim's `ctlpass_*`) in a callgrind profile: the self cost of those
/// functions, leaving out the costs of the calls they make.
fn module_cost(profile: &str) -> u64 {
    let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let (mut ours, mut after_call, mut total) = (false, false, 0u64);
    for line in profile.lines() {
        if let Some(rest) = line.strip_prefix("fn=") {
            // "fn=(id) name" names a function; "fn=(id)" refers to it.
            let (id, name) = match rest.split_once(' ') {
                Some((id, name)) => {
                    names.insert(id.to_owned(), name.to_owned());
                    (id, name.to_owned())
                }
                None => (rest, names.get(rest).cloned().unwrap_or_default()),
            };
            let _ = id;
            ours = name.starts_with("ctlpass::")
                || name.starts_with("<ctlpass::")
                || (name.starts_with("ctlpass_") && !name.starts_with("ctlpass_bench"));
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            if let Some((id, name)) = rest.split_once(' ') {
                names.insert(id.to_owned(), name.to_owned());
            }
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '*')) {
            if std::mem::take(&mut after_call) {
                continue;
            }
            if ours && let Some(cost) = line.split_whitespace().nth(1).and_then(|c| c.parse::<u64>().ok()) {
                total += cost;
            }
        }
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--callgrind-child") {
        let n = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
        return callgrind_child(n);
    }
    let started = Instant::now();
    println!("ctlpass bench: device latency {LATENCY:?}, {OPENINGS} openings; median of {ROUNDS} rounds");
    println!(
        "{:<32} {:>12} {:>12} {:>7}",
        "workload", "direct IOPS", "ctlpass IOPS", "ratio"
    );
    let (m, luns) = machine(1);
    let results: Vec<(&Row, Measured)> = ROWS.iter().map(|row| (row, measure(row, luns[0]))).collect();
    shut_down(m, &luns);
    for (row, r) in &results {
        println!(
            "{:<32} {:>12.0} {:>12.0} {:>7.3}",
            row.name,
            r.direct,
            r.ctlpass,
            r.ctlpass / r.direct
        );
    }
    let ratio = |name: &str| {
        results
            .iter()
            .find(|(row, _)| row.name == name)
            .map_or(0.0, |(_, r)| r.ctlpass / r.direct)
    };
    let moves: usize = results.iter().map(|(_, r)| r.moves).sum();
    let copies: usize = results.iter().map(|(_, r)| r.copies).sum();
    let allocs: u64 = results.iter().map(|(_, r)| r.allocs).sum();
    let steady: u64 = results.iter().map(|(_, r)| r.steady_ios).sum();
    let ios: usize = results.iter().map(|(row, _)| row.count * ROUNDS).sum();
    let copies_per_io = copies as f64 / ios as f64;
    let allocs_per_io = allocs as f64 / steady as f64;
    println!("data moves checked: {moves}; made in a buffer other than the CCB's: {copies}");
    println!("module malloc(9) calls in steady state: {allocs} for {steady} I/Os");
    let costs: Vec<Option<f64>> = LUN_COUNTS.iter().map(|&n| callgrind_cost(n)).collect();
    for (n, c) in LUN_COUNTS.iter().zip(&costs) {
        match c {
            Some(c) => println!("instructions per I/O in ctlpass code, {n:>2} LUNs busy: {c:.0}"),
            None => println!("instructions per I/O in ctlpass code, {n:>2} LUNs busy: n/a (no valgrind)"),
        }
    }
    let lun_ratio = match (costs[0], costs[2]) {
        (Some(one), Some(many)) => format!("{:.3}", many / one),
        _ => "n/a".into(),
    };
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "bench: qd1_ratio={:.3} qd32_ratio={:.3} seq1m_read_ratio={:.3} seq1m_write_ratio={:.3} copies_per_io={} allocs_per_io={} lun64_vs_lun1={lun_ratio}",
        ratio("4 KiB random read, QD1"),
        ratio("4 KiB random read, QD32"),
        ratio("1 MiB sequential read, QD32"),
        ratio("1 MiB sequential write, QD32"),
        trim(copies_per_io),
        trim(allocs_per_io),
    );
}

/// A per-I/O figure: an integer when it is one, else three decimals.
fn trim(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

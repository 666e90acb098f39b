//! The soak: random I/O on several passthrough LUNs for a set time while
//! faults are injected, task management functions abort commands, and
//! devices are pulled and plugged back (their LUNs going offline and
//! binding again).  At the end every LUN is removed and the module
//! unloaded; the report says what happened and what was left behind.
//!
//! Every command completes exactly once (the simulated initiator panics
//! the kernel otherwise), with a status an initiator could get from the
//! faults of the run; a command that never completes stops the run (the
//! initiator waits a minute, then panics the kernel naming it).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cam::{self, DeviceSpec, Effect, Fault, Match, fixed_sense};
use crate::ctl::{self, Cmd, Request, Tmf};
use crate::devices::{Identity, RamDisk, ScsiDevice};
use crate::{Config, Machine, malloc, sys};

/// LUNs (and devices) of the soak.
pub const LUNS: u32 = 4;
/// Commands each LUN's initiator keeps in flight.
const QUEUE_DEPTH: usize = 8;
/// Commands sent per run of an initiator.
const BATCH: usize = 64;
/// Blocks of each disk.
const BLOCKS: u64 = 1 << 16;

/// What a soak did and left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// How long it ran.
    pub seconds: u64,
    /// Commands completed.
    pub ios: u64,
    /// Of which: GOOD.
    pub good: u64,
    /// Faults the SIMs applied.
    pub faults: u64,
    /// Task management functions sent (ABORT TASK SET, CLEAR TASK SET,
    /// LUN RESET).
    pub tmfs: u64,
    /// Commands that ended TASK ABORTED.
    pub aborted: u64,
    /// Devices pulled.
    pub unplugs: u64,
    /// LUNs that bound to their returning device.
    pub rebinds: u64,
    /// Commands whose status no fault of the run explains.
    pub unexpected: u64,
    /// Commands CTL still held once the initiators stopped.
    pub stuck: u64,
    /// Memory of the module (or CTL's I/Os) left once it was unloaded.
    pub leaks: Vec<String>,
}

impl Report {
    /// Whether the run left nothing behind and every status was explained.
    pub fn clean(&self) -> bool {
        self.unexpected == 0 && self.stuck == 0 && self.leaks.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soak: seconds={} ios={} good={} faults={} tmfs={} aborted={} unplugs={} rebinds={} unexpected={} stuck={} leaks={}",
            self.seconds,
            self.ios,
            self.good,
            self.faults,
            self.tmfs,
            self.aborted,
            self.unplugs,
            self.rebinds,
            self.unexpected,
            self.stuck,
            self.leaks.len()
        )
    }
}

/// A small xorshift generator: the run is random but repeatable per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn disk(t: u32) -> Arc<dyn ScsiDevice> {
    Arc::new(
        RamDisk::new(
            Identity {
                vendor: "SEAGATE".into(),
                product: "ST4000NM0023".into(),
                revision: "0004".into(),
                serial: format!("SOAK{t:04}"),
                naa: Some(0x5000_c500_50a4_0000 + u64::from(t)),
                eui64: None,
            },
            BLOCKS,
            512,
        )
        .with_unmap(true),
    )
}

fn rw16(op: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![op, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&blocks.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

/// A random command: READ, WRITE, SYNCHRONIZE CACHE or UNMAP of up to
/// 64 KiB.
fn command(rng: &mut Rng) -> Cmd {
    let blocks = 1 + rng.below(128) as u32;
    let lba = rng.below(BLOCKS - u64::from(blocks));
    match rng.below(10) {
        0..=4 => Cmd::read(&rw16(0x88, lba, blocks), blocks as usize * 512),
        5..=7 => Cmd::write(&rw16(0x8a, lba, blocks), &vec![rng.next() as u8; blocks as usize * 512]),
        8 => Cmd::none(&rw16(0x91, lba, blocks)),
        _ => {
            let mut list = vec![0, 22, 0, 16, 0, 0, 0, 0];
            list.extend_from_slice(&lba.to_be_bytes());
            list.extend_from_slice(&blocks.to_be_bytes());
            list.extend_from_slice(&[0; 4]);
            Cmd::write(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list)
        }
    }
}

/// A random fault for a few commands of a device.
fn fault(rng: &mut Rng) -> Fault {
    let effect = match rng.below(8) {
        0 => Effect::check_condition(0x3, 0x11, 0x00),
        1 => Effect::check_condition(0x4, 0x44, 0x00),
        2 => Effect::busy(),
        3 => Effect::task_set_full(),
        4 => Effect::Cam(sys::CAM_CMD_TIMEOUT),
        5 => Effect::Cam(sys::CAM_REQUEUE_REQ),
        6 => Effect::NoAutosense {
            sense: fixed_sense(0x1, 0x18, 0x00, None),
        },
        _ => Effect::Delay(Duration::from_millis(rng.below(200))),
    };
    Fault::new(Match::any().random(rng.next(), 0.05), effect).times(1 + rng.below(20))
}

/// Whether an initiator can get this status from the run's faults: GOOD,
/// CHECK CONDITION (the faults' sense, CTL's own, NOT READY while a device
/// is gone), BUSY, TASK SET FULL or TASK ABORTED.
fn explained(status: u8) -> bool {
    matches!(status, 0x00 | 0x02 | 0x08 | 0x28 | 0x40)
}

/// Runs the soak for `duration` with `seed`; returns its report.
pub fn run(duration: Duration, seed: u64) -> Report {
    let m = Machine::boot(Config::one_bus(128 * 1024, 16, (0..LUNS).map(disk).collect()));
    m.kldload().unwrap_or_else(|e| panic!("kldload ctlpass: errno {e}"));
    let luns: Vec<u32> = (0..LUNS)
        .map(|t| {
            let r = ctl::lun_request("passthrough", &Request::create(), &[("cam", &format!("0:{t}:0"))]);
            assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
            let lun = r.created.expect("a created LUN").3;
            ctl::execute(lun, &Cmd::none(&[0; 6]));
            cam::set_latency(0, t, 0, Duration::from_micros(50));
            lun
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let ios = Arc::new(AtomicU64::new(0));
    let good = Arc::new(AtomicU64::new(0));
    let aborted = Arc::new(AtomicU64::new(0));
    let unexpected = Arc::new(AtomicU64::new(0));
    let initiators: Vec<_> = luns
        .iter()
        .enumerate()
        .map(|(i, &lun)| {
            let (stop, ios, good, aborted, unexpected) = (
                stop.clone(),
                ios.clone(),
                good.clone(),
                aborted.clone(),
                unexpected.clone(),
            );
            let mut rng = Rng((seed ^ 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1)) | 1);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let cmds: Vec<Cmd> = (0..BATCH).map(|_| command(&mut rng)).collect();
                    for r in ctl::run_with(lun, cmds, QUEUE_DEPTH, false) {
                        ios.fetch_add(1, Ordering::Relaxed);
                        match r.status {
                            0x00 => good.fetch_add(1, Ordering::Relaxed),
                            0x40 => aborted.fetch_add(1, Ordering::Relaxed),
                            s if !explained(s) => unexpected.fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                    }
                }
            })
        })
        .collect();

    // The chaos: faults, task management, pulled devices.
    let mut rng = Rng(seed | 1);
    let (mut tmfs, mut unplugs, mut faults) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(20 + rng.below(80)));
        let t = rng.below(u64::from(LUNS)) as u32;
        let lun = luns[t as usize];
        match rng.below(20) {
            0..=11 => cam::inject(0, t, 0, fault(&mut rng)),
            12..=15 => {
                let tmf = match rng.below(3) {
                    0 => Tmf::AbortTaskSet { lun, initiator: 0 },
                    1 => Tmf::ClearTaskSet { lun },
                    _ => Tmf::LunReset { lun, initiator: 1 },
                };
                ctl::task_management(tmf);
                tmfs += 1;
            }
            _ => {
                // Pull the device, and plug it back once its ctlpass periph
                // is freed (its LUN meanwhile offline).
                let Some(device) = cam::device_of(0, t, 0) else {
                    continue;
                };
                faults += cam::device_stats(0, t, 0).faults_applied;
                m.unplug(0, t, 0);
                unplugs += 1;
                let t0 = Instant::now();
                while cam::periphs("ctlpass").iter().any(|p| (p.1, p.2, p.3) == (0, t, 0)) {
                    assert!(
                        t0.elapsed() < Duration::from_secs(60),
                        "the periph of 0:{t}:0 was never freed"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(rng.below(100)));
                m.plug(
                    0,
                    DeviceSpec {
                        target: t,
                        lun: 0,
                        device,
                    },
                );
                cam::set_latency(0, t, 0, Duration::from_micros(50));
            }
        }
    }
    // Devices plugged back at the end bind again before the initiators stop.
    let t0 = Instant::now();
    while (m.dmesg().matches("is back; online").count() as u64) < unplugs && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in initiators {
        t.join().expect("an initiator thread");
    }
    let stuck = ctl::outstanding() as u64;
    faults += (0..LUNS)
        .map(|t| cam::device_stats(0, t, 0).faults_applied)
        .sum::<u64>();
    for t in 0..LUNS {
        cam::clear_faults(0, t, 0);
    }
    let rebinds = m.dmesg().matches("is back; online").count() as u64;
    for lun in luns {
        let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
        assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    }
    m.kldunload().unwrap_or_else(|e| panic!("kldunload ctlpass: errno {e}"));
    let leaks = malloc::leaks();
    drop(m);
    Report {
        seconds: started.elapsed().as_secs(),
        ios: ios.load(Ordering::Relaxed),
        good: good.load(Ordering::Relaxed),
        faults,
        tmfs,
        aborted: aborted.load(Ordering::Relaxed),
        unplugs,
        rebinds,
        unexpected: unexpected.load(Ordering::Relaxed),
        stuck,
        leaks,
    }
}

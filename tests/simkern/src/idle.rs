//! How the simulated kernel's threads (each SIM, `taskqueue_thread`, the
//! iSCSI port's threads) wait for work: a thread that runs out of work
//! polls a [`Doorbell`] for [`POLL`], yielding the CPU between looks,
//! before it blocks.  Work handed over meanwhile is picked up without a
//! futex wake-up, which costs tens of µs on a virtual machine where a
//! kernel's wake-up costs a few: every hand-off between simulated kernel
//! threads is priced alike, the direct CCB path and the ctlpass path
//! included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an idle thread polls before it blocks.
pub const POLL: Duration = Duration::from_micros(200);

/// A counter bumped whenever a thread may have new work.
#[derive(Debug, Default)]
pub struct Doorbell(AtomicU64);

impl Doorbell {
    /// A doorbell that has not rung.
    pub const fn new() -> Doorbell {
        Doorbell(AtomicU64::new(0))
    }

    /// Says there may be new work.
    pub fn ring(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// What it has counted so far, to poll against.
    pub fn seen(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Whether it rang since `seen`.
    pub fn rang(&self, seen: u64) -> bool {
        self.seen() != seen
    }

    /// Polls, yielding the CPU between looks, until it rings after `seen`
    /// or `until`; says whether it rang.
    pub fn poll_until(&self, until: Instant, seen: u64) -> bool {
        while Instant::now() < until {
            if self.rang(seen) {
                return true;
            }
            std::thread::yield_now();
        }
        self.rang(seen)
    }

    /// Polls for [`POLL`] (see [`Doorbell::poll_until`]).
    pub fn poll(&self, seen: u64) -> bool {
        self.poll_until(Instant::now() + POLL, seen)
    }
}

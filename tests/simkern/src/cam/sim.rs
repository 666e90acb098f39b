//! The SIM behind each simulated device: the queue of `XPT_SCSI_IO` CCBs
//! the XPT hands it, and one thread per device that starts them in order
//! and completes them.
//!
//! - **Latency and openings.**  A device has a latency (zero by default)
//!   and openings (the bus's, or [`set_openings`]).  With a latency, a
//!   command completes `latency` after the SIM starts it and up to
//!   `openings` commands are in flight at once; the SIM thread starts every
//!   command it may (executing each on the emulated device at once, data
//!   and all), then sleeps until the earliest deadline or new work, and
//!   completes every command that is due in one batch.  With no latency the
//!   device runs one command at a time and completes it at once, as before.
//! - **Media rate.**  A device may also have a media rate
//!   ([`set_media_rate`]): the data of its commands then crosses one link
//!   at that rate, one command's after another, so a command completes when
//!   its latency has passed and its bytes have been moved.  Without one (the
//!   default) data takes no time, however large.
//!   The thread's Linux timer slack is 1 ns (`PR_SET_TIMERSLACK`), so a
//!   deadline is met within the kernel's wake-up latency; [`DeviceStats`]
//!   has how late the completions were.
//! - **Freezing.**  A CCB that completes with an error freezes the device
//!   queue once and carries `CAM_DEV_QFRZN` (as a SIM that calls
//!   `xpt_freeze_devq` on errors does): no further command starts until
//!   `cam_release_devq` has thawed it; commands already started go on.
//! - **Aborts** (`XPT_ABORT`, [`Sim::abort`]): a CCB not yet started is
//!   taken off the queue and completes with `CAM_REQ_ABORTED`, freezing
//!   the queue, as `xpt_action_default` does; a started one is ended at
//!   once with `CAM_REQ_ABORTED` (its data may have moved), or, on a SIM
//!   set to not abort started commands ([`set_abort_support`]), the abort
//!   is refused with `CAM_UA_ABORT` and the command completes as it would
//!   have.  Either way the completion comes from the SIM thread.
//! - **Resets** (`XPT_RESET_DEV`) end the commands the device runs with
//!   `CAM_REQ_ABORTED`, then complete.
//! - **Unplugging** ends the commands the device runs with
//!   `CAM_DEV_NOT_THERE`; commands started later get it at once.
//! - **Faults** ([`inject`], see `fault.rs`) are decided when a command
//!   starts, in start order.
//! - **Data** is `CAM_DATA_VADDR` (a kernel virtual address) or
//!   `CAM_DATA_SG` (`sglist_cnt` `bus_dma_segment_t` entries with kernel
//!   virtual addresses, as SIMs loading CCBs with `bus_dmamap_load_ccb`
//!   take).  The ranges of the last 100,000 CCBs are kept ([`ccb_buffers`]).
//! - **Sense.**  With autosense disabled (`CAM_DIS_AUTOSENSE`), or after
//!   an [`Effect::NoAutosense`](super::Effect::NoAutosense) fault, the
//!   device keeps the sense data and answers the next REQUEST SENSE with
//!   it.
//!
//! The SIM thread starts with the first command and ends after a second
//! without work, or when its device is freed.  Completion callbacks run on
//! it (as on a CAM done thread): they must not sleep waiting for another
//! command of the same device.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::ffi::{c_int, c_ulong};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::fault::{Action, Fault, Faults, shorten_write};
use super::{device_at, io, path_ref};
use crate::devices::{CHECK_CONDITION, Command, GOOD, Outcome, ScsiDevice};
use crate::fasthash::FastMap;
use crate::idle::Doorbell;
use crate::{kpanic, sys};

/// How long an idle SIM thread waits for work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(1);

/// The largest margin before a deadline that the SIM thread spins
/// through instead of sleeping.
const MAX_SPIN: Duration = Duration::from_micros(200);

/// How many CCBs' data buffers [`ccb_buffers`] remembers.
pub const BUFFER_LOG_LEN: usize = 100_000;

/// Upper bounds (exclusive, in µs) of the buckets of [`Lateness::buckets`];
/// the last bucket takes the rest.
pub const LATENESS_BOUNDS_US: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// REQUEST SENSE.
const REQUEST_SENSE: u8 = 0x03;

/// `PR_SET_TIMERSLACK` (linux/prctl.h).
const PR_SET_TIMERSLACK: c_int = 29;

unsafe extern "C" {
    /// prctl(2).
    fn prctl(option: c_int, ...) -> c_int;
}

thread_local! {
    /// Whether this thread is a SIM thread.
    static IN_SIM: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is a SIM thread (where completion callbacks
/// run, and which must not wait for its own device).
pub(super) fn in_sim_thread() -> bool {
    IN_SIM.with(Cell::get)
}

/// How late timed completions were: the time from a command's deadline to
/// the moment the SIM thread completed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lateness {
    /// Completions measured (those of commands with a latency or delay).
    pub count: u64,
    /// Their total lateness.
    pub total: Duration,
    /// The largest.
    pub max: Duration,
    /// How many fell in each bucket of [`LATENESS_BOUNDS_US`] (and, last,
    /// beyond it).
    pub buckets: [u64; LATENESS_BOUNDS_US.len() + 1],
}

impl Lateness {
    /// The mean lateness (zero if nothing was measured).
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        self.total / u32::try_from(self.count).unwrap_or(u32::MAX)
    }

    /// The smallest bucket bound (µs) that at least `fraction` of the
    /// completions were under, or `None` if that is beyond the last bound.
    pub fn quantile_bound_us(&self, fraction: f64) -> Option<u64> {
        let want = (self.count as f64 * fraction).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return LATENESS_BOUNDS_US.get(i).copied();
            }
        }
        None
    }

    fn record(&mut self, late: Duration) {
        self.count += 1;
        self.total += late;
        self.max = self.max.max(late);
        let us = late.as_micros();
        let i = LATENESS_BOUNDS_US
            .iter()
            .position(|&b| us < u128::from(b))
            .unwrap_or(LATENESS_BOUNDS_US.len());
        self.buckets[i] += 1;
    }
}

/// A device's SIM counters ([`device_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Commands the SIM started.
    pub started: u64,
    /// Commands started, by the timeout their CCB gave (`ccb_h.timeout`,
    /// milliseconds; recorded, not enforced: a fault times a command out).
    pub timeouts: BTreeMap<u32, u64>,
    /// Commands the device executed (faulted commands that were not
    /// executed are not counted; a REQUEST SENSE answered with held sense
    /// data is).
    pub executed: u64,
    /// Faults that fired (a command may have several: delays add up).
    pub faults_applied: u64,
    /// CCBs completed, by CAM status (`status & CAM_STATUS_MASK`).
    pub completed: BTreeMap<u32, u64>,
    /// CCBs completed with `CAM_REQ_CMP` or `CAM_SCSI_STATUS_ERROR`, by
    /// SCSI status.
    pub scsi_status: BTreeMap<u8, u64>,
    /// How many times the device queue is frozen now.
    pub frozen: u32,
    /// Commands queued and not started.
    pub queued: usize,
    /// Commands started and not completed.
    pub in_flight: usize,
    /// The most commands in flight at once.
    pub max_in_flight: usize,
    /// The device's latency.
    pub latency: Duration,
    /// The device's openings.
    pub openings: u32,
    /// How late timed completions were.
    pub lateness: Lateness,
    /// `XPT_ABORT`s asked of the device's CCBs.
    pub aborts_requested: u64,
    /// CCBs those aborts ended with `CAM_REQ_ABORTED`.
    pub aborted: u64,
    /// `XPT_RESET_DEV`s the device got.
    pub resets: u64,
}

/// The distinct data ranges of the last [`BUFFER_LOG_LEN`] CCBs.
#[derive(Default)]
struct BufferLog {
    ring: VecDeque<(usize, usize)>,
    counts: FastMap<(usize, usize), u32>,
}

impl BufferLog {
    fn record(&mut self, range: (usize, usize)) {
        if self.ring.len() == BUFFER_LOG_LEN
            && let Some(old) = self.ring.pop_front()
            && let Some(n) = self.counts.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&old);
            }
        }
        self.ring.push_back(range);
        *self.counts.entry(range).or_insert(0) += 1;
    }

    fn distinct(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = self.counts.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// A CCB's data as the SIM maps it: `(address, length)` ranges, one for
/// `CAM_DATA_VADDR`, one per segment for `CAM_DATA_SG`, none without data.
struct DataMap {
    ranges: Vec<(usize, usize)>,
}

impl DataMap {
    /// Maps the data of `csio`, `dxfer_len` bytes at most.
    ///
    /// # Safety
    ///
    /// `csio` is a CCB the SIM owns; for `CAM_DATA_SG`, `data_ptr` points
    /// at `sglist_cnt` segments.
    unsafe fn of(csio: &sys::ccb_scsiio) -> DataMap {
        let flags = csio.ccb_h.flags;
        let len = csio.dxfer_len as usize;
        let mut ranges = Vec::new();
        if len == 0 || flags & sys::CAM_DIR_MASK == sys::CAM_DIR_NONE {
            return DataMap { ranges };
        }
        match flags & sys::CAM_DATA_MASK {
            sys::CAM_DATA_VADDR => ranges.push((csio.data_ptr as usize, len)),
            sys::CAM_DATA_SG => {
                let n = usize::from(csio.sglist_cnt);
                let segs: &[sys::bus_dma_segment_t] = if n == 0 || csio.data_ptr.is_null() {
                    &[]
                } else {
                    // SAFETY: the caller's contract.
                    unsafe { std::slice::from_raw_parts(csio.data_ptr.cast::<sys::bus_dma_segment_t>(), n) }
                };
                let mut left = len;
                for s in segs {
                    if left == 0 {
                        break;
                    }
                    let l = usize::try_from(s.ds_len).unwrap_or(usize::MAX).min(left);
                    if l > 0 {
                        ranges.push((s.ds_addr as usize, l));
                    }
                    left -= l;
                }
            }
            other => kpanic!("CAM: data type {other:#x} not supported by the simulated SIM"),
        }
        DataMap { ranges }
    }

    fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.1).sum()
    }

    /// Copies `src` into the ranges, in order.
    ///
    /// # Safety
    ///
    /// The ranges are writable memory the CCB's issuer lent the SIM.
    unsafe fn scatter(&self, mut src: &[u8]) {
        for &(addr, len) in &self.ranges {
            let n = len.min(src.len());
            if n == 0 {
                break;
            }
            // SAFETY: the caller's contract; `src` is the SIM's own buffer.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, n) };
            src = &src[n..];
        }
    }

    /// Copies the first `dst.len()` bytes of the ranges into `dst`.
    ///
    /// # Safety
    ///
    /// The ranges are readable memory the CCB's issuer lent the SIM.
    unsafe fn gather(&self, mut dst: &mut [u8]) {
        for &(addr, len) in &self.ranges {
            let n = len.min(dst.len());
            if n == 0 {
                break;
            }
            // SAFETY: the caller's contract; `dst` is the SIM's own buffer.
            unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), n) };
            dst = &mut dst[n..];
        }
    }
}

/// How a command ended, written into its CCB when it completes.
struct Done {
    status: u32,
    scsi_status: u8,
    resid: u32,
    autosense: Option<Vec<u8>>,
}

impl Done {
    /// A completion that moved no data.
    fn nothing(status: u32, csio: &sys::ccb_scsiio) -> Done {
        Done {
            status,
            scsi_status: GOOD,
            resid: csio.dxfer_len,
            autosense: None,
        }
    }
}

/// A started command waiting for its deadline.
struct InFlight {
    deadline: Instant,
    seq: u64,
    ccb: usize,
    timed: bool,
    done: Done,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// What the SIM does with a command it starts.
enum Plan {
    /// What the faults decided.
    Run(Action),
    /// The device is gone: `CAM_DEV_NOT_THERE`.
    NotThere,
    /// A REQUEST SENSE answered with held sense data.
    SenseData(Vec<u8>),
}

/// A command the SIM thread took from the queue, to execute.
struct Start {
    ccb: usize,
    cdb: Vec<u8>,
    map: DataMap,
    plan: Plan,
    /// Latency plus fault delays.
    wait: Duration,
}

#[derive(Default)]
struct Counters {
    started: u64,
    timeouts: BTreeMap<u32, u64>,
    executed: u64,
    faults: u64,
    completed: BTreeMap<u32, u64>,
    scsi_status: BTreeMap<u8, u64>,
    max_in_flight: usize,
    lateness: Lateness,
    aborts_requested: u64,
    aborted: u64,
    resets: u64,
}

/// A device's SIM.
pub(super) struct Sim {
    label: String,
    state: Mutex<SimState>,
    wake: Condvar,
    /// Bumped (under the state lock) whenever there may be new work: a
    /// queued CCB, a thawed queue.  A spinning SIM thread watches it.
    work: Doorbell,
}

/// How late the SIM thread wakes from a timed sleep, learnt as it goes
/// (moving mean and mean deviation, in ns): it sleeps until a deadline
/// less a margin, then spins to the deadline.
struct WakeModel {
    mean: f64,
    dev: f64,
}

impl WakeModel {
    fn new() -> WakeModel {
        WakeModel {
            mean: 20_000.0,
            dev: 5_000.0,
        }
    }

    fn margin(&self) -> Duration {
        Duration::from_nanos((self.mean + 2.0 * self.dev).max(0.0) as u64).min(MAX_SPIN)
    }

    fn observe(&mut self, late: Duration) {
        let x = late.as_nanos().min(10_000_000) as f64;
        let err = x - self.mean;
        self.mean += err / 16.0;
        self.dev += (err.abs() - self.dev) / 16.0;
    }
}

struct SimState {
    /// Queued CCBs, not started.
    queue: VecDeque<usize>,
    /// Started CCBs, by deadline.
    in_flight: BinaryHeap<Reverse<InFlight>>,
    /// Started CCBs the SIM thread is executing now.
    executing: usize,
    frozen: u32,
    openings: u32,
    latency: Duration,
    /// Bytes per second the link moves; 0: data takes no time.
    media_rate: u64,
    /// When the link has moved the data of every started command.
    link_free: Option<Instant>,
    present: bool,
    /// Started commands can be aborted.
    aborts_started: bool,
    faults: Faults,
    /// Sense data the device holds for the next REQUEST SENSE.
    held_sense: Option<Vec<u8>>,
    counters: Counters,
    buffers: BufferLog,
    /// The SIM thread runs.
    thread: bool,
    /// It sleeps on `wake`.
    sleeping: bool,
    /// The device is freed: the thread ends.
    gone: bool,
    seq: u64,
}

impl Sim {
    /// The SIM of device `label` (`path:target:lun`), taking `openings`
    /// commands at once.
    pub(super) fn new(label: String, openings: u32) -> Arc<Sim> {
        Arc::new(Sim {
            label,
            state: Mutex::new(SimState {
                queue: VecDeque::new(),
                in_flight: BinaryHeap::new(),
                executing: 0,
                frozen: 0,
                openings: openings.max(1),
                latency: Duration::ZERO,
                media_rate: 0,
                link_free: None,
                present: true,
                aborts_started: true,
                faults: Faults::default(),
                held_sense: None,
                counters: Counters::default(),
                buffers: BufferLog::default(),
                thread: false,
                sleeping: false,
                gone: false,
                seq: 0,
            }),
            wake: Condvar::new(),
            work: Doorbell::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a CCB (`xpt_action` of an `XPT_SCSI_IO`).
    pub(super) fn queue(self: &Arc<Self>, ccb: *mut sys::ccb) {
        // SAFETY: a CCB its issuer set up and now hands to the XPT.
        unsafe { (*ccb).ccb_h.status = sys::CAM_REQ_INPROG };
        let mut st = self.lock();
        st.queue.push_back(ccb as usize);
        self.poke(st);
    }

    /// Gets the SIM thread going: starts it, or wakes it if it sleeps.
    fn poke(self: &Arc<Self>, mut st: MutexGuard<'_, SimState>) {
        if st.gone {
            return;
        }
        self.work.ring();
        if !st.thread {
            st.thread = true;
            drop(st);
            let sim = self.clone();
            std::thread::Builder::new()
                .name(format!("sim {}", self.label))
                .spawn(move || sim_thread(&sim))
                .unwrap_or_else(|e| kpanic!("cannot start a SIM thread: {e}"));
        } else if st.sleeping {
            st.sleeping = false;
            drop(st);
            self.wake.notify_one();
        }
    }

    /// `XPT_ABORT` of `victim`: returns the abort CCB's status.
    pub(super) fn abort(self: &Arc<Self>, victim: *mut sys::ccb) -> u32 {
        let mut st = self.lock();
        st.counters.aborts_requested += 1;
        let v = victim as usize;
        let now = Instant::now();
        if let Some(pos) = st.queue.iter().position(|&c| c == v) {
            st.queue.remove(pos);
            // SAFETY: a queued CCB, which the SIM owns until done.
            let done = Done::nothing(sys::CAM_REQ_ABORTED, unsafe { &(*victim).csio });
            let seq = st.seq;
            st.seq += 1;
            st.in_flight.push(Reverse(InFlight {
                deadline: now,
                seq,
                ccb: v,
                timed: false,
                done,
            }));
        } else if st.aborts_started && st.in_flight.iter().any(|f| f.0.ccb == v) {
            st.end_now(|ccb| ccb == v, sys::CAM_REQ_ABORTED);
        } else {
            return sys::CAM_UA_ABORT;
        }
        st.counters.aborted += 1;
        self.poke(st);
        sys::CAM_REQ_CMP
    }

    /// `XPT_RESET_DEV`: the device resets; the commands it runs end with
    /// `CAM_REQ_ABORTED` (their data may have moved), and then the reset
    /// CCB completes, from the SIM thread.
    pub(super) fn reset_device(self: &Arc<Self>, ccb: *mut sys::ccb) {
        // SAFETY: a CCB its issuer set up and now hands to the XPT.
        unsafe { (*ccb).ccb_h.status = sys::CAM_REQ_INPROG };
        let mut st = self.lock();
        st.counters.resets += 1;
        st.end_now(|_| true, sys::CAM_REQ_ABORTED);
        let now = Instant::now();
        let seq = st.seq;
        st.seq += 1;
        st.in_flight.push(Reverse(InFlight {
            deadline: now,
            seq,
            ccb: ccb as usize,
            timed: false,
            done: Done {
                status: sys::CAM_REQ_CMP,
                scsi_status: GOOD,
                resid: 0,
                autosense: None,
            },
        }));
        self.poke(st);
    }

    /// `cam_release_devq`: thaws the queue once unless `count_only`;
    /// returns the freeze count.
    pub(super) fn release(self: &Arc<Self>, count_only: bool) -> u32 {
        let mut st = self.lock();
        if !count_only {
            if st.frozen == 0 {
                drop(st);
                kpanic!("cam_release_devq: device queue not frozen");
            }
            st.frozen -= 1;
        }
        let count = st.frozen;
        if count == 0 && !st.queue.is_empty() {
            self.poke(st);
        }
        count
    }

    /// How many times the queue is frozen.
    pub(super) fn frozen(&self) -> u32 {
        self.lock().frozen
    }

    /// The device's openings.
    pub(super) fn openings(&self) -> u32 {
        self.lock().openings
    }

    /// The device came back or went away.
    /// The device comes or goes; when it goes, the commands it runs end
    /// at once with `CAM_DEV_NOT_THERE` (their data may have moved), as a
    /// SIM completes a removed target's commands.
    pub(super) fn set_present(self: &Arc<Self>, present: bool) {
        let mut st = self.lock();
        st.present = present;
        if present || st.in_flight.is_empty() {
            return;
        }
        st.end_now(|_| true, sys::CAM_DEV_NOT_THERE);
        self.poke(st);
    }

    /// The device is freed: the SIM thread ends.
    pub(super) fn shutdown(&self) {
        let mut st = self.lock();
        st.gone = true;
        drop(st);
        self.wake.notify_all();
    }
}

fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and only changes
    // the calling thread's timer slack.
    unsafe { prctl(PR_SET_TIMERSLACK, 1 as c_ulong) };
}

impl SimState {
    /// Ends the started commands whose CCB `which` picks now, with CAM
    /// status `status` (their data may have moved).
    fn end_now(&mut self, which: impl Fn(usize) -> bool, status: u32) {
        let now = Instant::now();
        let flights = std::mem::take(&mut self.in_flight);
        self.in_flight = flights
            .into_iter()
            .map(|Reverse(mut f)| {
                if which(f.ccb) {
                    f.deadline = now;
                    f.timed = false;
                    f.done.status = status;
                    f.done.scsi_status = GOOD;
                    f.done.autosense = None;
                }
                Reverse(f)
            })
            .collect();
    }

    /// Takes a queued CCB to start: maps its data, records its buffers,
    /// and decides what happens to it (device gone, held sense, faults)
    /// and how long after `now` it completes.
    fn prepare(&mut self, ccb: usize, now: Instant) -> Start {
        let ccb = ccb as *mut sys::ccb;
        // SAFETY: a queued XPT_SCSI_IO CCB, which the SIM owns until done.
        let csio = unsafe { &(*ccb).csio };
        let cdb_len = usize::from(csio.cdb_len);
        // SAFETY: CAM_CDB_POINTER selects the pointer member, which then
        // points at cdb_len bytes; otherwise the bytes are inline.
        let cdb: Vec<u8> = unsafe {
            if csio.ccb_h.flags & sys::CAM_CDB_POINTER != 0 {
                if csio.cdb_io.cdb_ptr.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(csio.cdb_io.cdb_ptr, cdb_len).to_vec()
                }
            } else {
                csio.cdb_io.cdb_bytes.get(..cdb_len).unwrap_or(&[]).to_vec()
            }
        };
        // SAFETY: as above; the issuer's data description.
        let map = unsafe { DataMap::of(csio) };
        for &r in &map.ranges {
            self.buffers.record(r);
        }
        self.counters.started += 1;
        *self.counters.timeouts.entry(csio.ccb_h.timeout).or_default() += 1;
        let mut wait = self.latency;
        let plan = if !self.present {
            Plan::NotThere
        } else if cdb.first() == Some(&REQUEST_SENSE)
            && let Some(sense) = self.held_sense.take()
        {
            Plan::SenseData(sense)
        } else {
            let (action, delay, fired) = self.faults.decide(&cdb);
            self.counters.faults += fired;
            wait += delay;
            if let Action::NoAutosense(sense) = &action {
                self.held_sense = Some(sense.clone());
            }
            Plan::Run(action)
        };
        if self.media_rate > 0 {
            // The data crosses the link once the latency has passed and the
            // link has moved the data of the commands started before.
            let moving = Duration::from_secs_f64(map.len() as f64 / self.media_rate as f64);
            let ready = (now + wait).max(self.link_free.unwrap_or(now));
            let done = ready + moving;
            self.link_free = Some(done);
            wait = done - now;
        }
        Start {
            ccb: ccb as usize,
            cdb,
            map,
            plan,
            wait,
        }
    }

    /// Completes a command whose deadline passed: writes its result into
    /// the CCB and, if it failed, freezes the queue.
    fn complete(&mut self, f: InFlight, now: Instant) -> usize {
        let ccb = f.ccb as *mut sys::ccb;
        // SAFETY: a started CCB, owned by the SIM until its callback.
        let csio = unsafe { &mut (*ccb).csio };
        let mut status = f.done.status;
        csio.scsi_status = f.done.scsi_status;
        csio.resid = f.done.resid;
        if let Some(sense) = f.done.autosense {
            let room = usize::from(csio.sense_len).min(std::mem::size_of_val(&csio.sense_data));
            let n = sense.len().min(room);
            // SAFETY: sense_data holds at least `room` bytes.
            unsafe { std::ptr::copy_nonoverlapping(sense.as_ptr(), (&raw mut csio.sense_data).cast::<u8>(), n) };
            csio.sense_resid = (usize::from(csio.sense_len) - n) as u8;
            status |= sys::CAM_AUTOSNS_VALID;
        }
        let code = status & sys::CAM_STATUS_MASK;
        if code != sys::CAM_REQ_CMP {
            self.frozen += 1;
            status |= sys::CAM_DEV_QFRZN;
        }
        csio.ccb_h.status = status;
        *self.counters.completed.entry(code).or_insert(0) += 1;
        if code == sys::CAM_REQ_CMP || code == sys::CAM_SCSI_STATUS_ERROR {
            *self.counters.scsi_status.entry(f.done.scsi_status).or_insert(0) += 1;
        }
        if f.timed {
            self.counters.lateness.record(now.saturating_duration_since(f.deadline));
        }
        f.ccb
    }
}

/// Panics the simulated kernel if the SIM thread unwinds (a completion
/// callback panicked): the device's commands would otherwise hang.
struct PanicOnUnwind;

impl Drop for PanicOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            kpanic!("a panic on a SIM thread (in a CCB completion callback?)");
        }
    }
}

/// The SIM thread of one device.
fn sim_thread(sim: &Arc<Sim>) {
    let _guard = PanicOnUnwind;
    set_timer_slack();
    IN_SIM.with(|c| c.set(true));
    let mut due: Vec<usize> = Vec::new();
    let mut starts: Vec<Start> = Vec::new();
    let mut started: Vec<(InFlight, bool, Option<Vec<u8>>)> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    let mut idle_since: Option<Instant> = None;
    let mut polled = false;
    let mut wake = WakeModel::new();
    let mut st = sim.lock();
    loop {
        if st.gone {
            st.thread = false;
            return;
        }
        let now = Instant::now();
        while st.in_flight.peek().is_some_and(|f| f.0.deadline <= now) {
            if let Some(Reverse(f)) = st.in_flight.pop() {
                let ccb = st.complete(f, now);
                due.push(ccb);
            }
        }
        let limit = if st.latency.is_zero() {
            1
        } else {
            st.openings.max(1) as usize
        };
        while st.frozen == 0 && st.in_flight.len() + starts.len() < limit {
            let Some(ccb) = st.queue.pop_front() else { break };
            let start = st.prepare(ccb, now);
            starts.push(start);
        }
        if due.is_empty() && starts.is_empty() {
            let seen = sim.work.seen();
            if let Some(deadline) = st.in_flight.peek().map(|f| f.0.deadline) {
                let margin = wake.margin();
                if deadline > now + margin + Duration::from_micros(2) {
                    let target = deadline - margin;
                    st.sleeping = true;
                    let (g, r) = sim
                        .wake
                        .wait_timeout(st, target - now)
                        .unwrap_or_else(|e| e.into_inner());
                    st = g;
                    st.sleeping = false;
                    if r.timed_out() {
                        wake.observe(Instant::now().saturating_duration_since(target));
                    }
                } else {
                    drop(st);
                    sim.work.poll_until(deadline, seen);
                    st = sim.lock();
                }
                continue;
            }
            if !polled {
                polled = true;
                drop(st);
                sim.work.poll(seen);
                st = sim.lock();
                continue;
            }
            let since = *idle_since.get_or_insert(now);
            let idle = now.saturating_duration_since(since);
            if idle >= IDLE_EXIT {
                st.thread = false;
                return;
            }
            st.sleeping = true;
            st = sim
                .wake
                .wait_timeout(st, IDLE_EXIT - idle)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            st.sleeping = false;
            continue;
        }
        polled = false;
        idle_since = None;
        st.executing = starts.len();
        let busy = st.in_flight.len() + starts.len();
        st.counters.max_in_flight = st.counters.max_in_flight.max(busy);
        let mut seq = st.seq;
        st.seq += starts.len() as u64;
        drop(st);

        for ccb in due.drain(..) {
            // SAFETY: a completed CCB, handed back to its issuer.
            unsafe { io::done(ccb as *mut sys::ccb) };
        }
        for s in starts.drain(..) {
            let t0 = Instant::now();
            // SAFETY: a started CCB the SIM owns, with its data lent to it.
            let (done, executed, held) = unsafe { perform(&s, &mut scratch) };
            started.push((
                InFlight {
                    deadline: t0 + s.wait,
                    seq,
                    ccb: s.ccb,
                    timed: !s.wait.is_zero(),
                    done,
                },
                executed,
                held,
            ));
            seq += 1;
        }

        st = sim.lock();
        st.executing = 0;
        for (f, executed, held) in started.drain(..) {
            st.counters.executed += u64::from(executed);
            if held.is_some() {
                st.held_sense = held;
            }
            st.in_flight.push(Reverse(f));
        }
    }
}

/// Carries out a started command: executes it on the device (or not, as
/// planned), moving its data.  Returns how it ended, whether the device
/// executed it, and sense data the device now holds for REQUEST SENSE.
///
/// # Safety
///
/// `s.ccb` is a started `XPT_SCSI_IO` CCB the SIM owns, whose data ranges
/// are memory its issuer lent the SIM.
unsafe fn perform(s: &Start, scratch: &mut Vec<u8>) -> (Done, bool, Option<Vec<u8>>) {
    let ccb = s.ccb as *mut sys::ccb;
    // SAFETY: the caller's contract.
    let csio = unsafe { &(*ccb).csio };
    let flags = csio.ccb_h.flags;
    let dir = flags & sys::CAM_DIR_MASK;
    let (limit, fault_status) = match &s.plan {
        Plan::NotThere => return (Done::nothing(sys::CAM_DEV_NOT_THERE, csio), false, None),
        Plan::Run(Action::Cam(status)) => return (Done::nothing(*status, csio), false, None),
        Plan::Run(Action::Status(status, sense)) => {
            let (done, held) = scsi_done(*status, sense.clone(), csio.dxfer_len, flags);
            return (done, false, held);
        }
        Plan::Run(Action::NoAutosense(_)) => {
            let done = Done {
                status: sys::CAM_SCSI_STATUS_ERROR,
                scsi_status: CHECK_CONDITION,
                resid: csio.dxfer_len,
                autosense: None,
            };
            return (done, false, None);
        }
        Plan::SenseData(sense) => {
            let n = if dir == sys::CAM_DIR_IN {
                let n = sense
                    .len()
                    .min(usize::from(s.cdb.get(4).copied().unwrap_or(0)))
                    .min(s.map.len());
                // SAFETY: the caller's contract.
                unsafe { s.map.scatter(&sense[..n]) };
                n
            } else {
                0
            };
            let done = Done {
                status: sys::CAM_REQ_CMP,
                scsi_status: GOOD,
                resid: csio.dxfer_len - n as u32,
                autosense: None,
            };
            return (done, true, None);
        }
        Plan::Run(Action::Execute) => (usize::MAX, None),
        Plan::Run(Action::Short(bytes, status, sense)) => (*bytes as usize, Some((*status, sense))),
    };
    let room = s.map.len().min(limit);
    let device = path_ref(csio.ccb_h.path).device.clone();
    let emulated = device.state().emulated.clone();
    let dxfer_len = csio.dxfer_len as usize;
    let short_write = match fault_status {
        Some(_) if dir == sys::CAM_DIR_OUT => shorten_write(&s.cdb, dxfer_len, room),
        _ => None,
    };
    let (cdb, room) = match &short_write {
        Some((cdb, n)) => (cdb.as_slice(), *n),
        None => (s.cdb.as_slice(), room),
    };
    let outcome = if short_write.as_ref().is_some_and(|w| w.1 == 0) {
        // Not one whole block arrived: nothing to write.
        None
    } else {
        // SAFETY: the caller's contract.
        Some(unsafe { exec(&*emulated, cdb, dir, &s.map, room, scratch) })
    };
    let Some((status, sense)) = fault_status else {
        let outcome = outcome.unwrap_or_else(|| kpanic!("SIM: a command not executed without a fault"));
        let resid = dxfer_len.saturating_sub(outcome.transferred.min(room)) as u32;
        let (done, held) = scsi_done(outcome.status, outcome.sense, resid, flags);
        return (done, true, held);
    };
    let moved = if dir == sys::CAM_DIR_OUT {
        s.map.len().min(limit)
    } else {
        outcome.as_ref().map_or(0, |o| o.transferred.min(room))
    };
    let (done, held) = scsi_done(status, sense.clone(), dxfer_len.saturating_sub(moved) as u32, flags);
    (done, outcome.is_some(), held)
}

/// Executes `cdb` on `emulated` with the first `room` bytes of the CCB's
/// data: in place when the data is one buffer, else through `scratch`
/// (gathered before a DATA-OUT, scattered after a DATA-IN, only the bytes
/// the device moved).
///
/// # Safety
///
/// The ranges of `map` are memory the CCB's issuer lent the SIM, holding
/// at least `room` bytes in all.
unsafe fn exec(
    emulated: &dyn ScsiDevice,
    cdb: &[u8],
    dir: u32,
    map: &DataMap,
    room: usize,
    scratch: &mut Vec<u8>,
) -> Outcome {
    if map.ranges.len() <= 1 {
        let buf: &mut [u8] = match map.ranges.first() {
            // SAFETY: the caller's contract: `room` bytes at `addr`.
            Some(&(addr, _)) if room > 0 => unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, room) },
            _ => &mut [],
        };
        return if dir == sys::CAM_DIR_OUT {
            emulated.execute(Command {
                cdb,
                data_out: buf,
                data_in: &mut [],
            })
        } else {
            emulated.execute(Command {
                cdb,
                data_out: &[],
                data_in: buf,
            })
        };
    }
    scratch.clear();
    scratch.resize(room, 0);
    if dir == sys::CAM_DIR_OUT {
        // SAFETY: the caller's contract.
        unsafe { map.gather(scratch) };
        emulated.execute(Command {
            cdb,
            data_out: scratch,
            data_in: &mut [],
        })
    } else {
        let outcome = emulated.execute(Command {
            cdb,
            data_out: &[],
            data_in: scratch,
        });
        // SAFETY: the caller's contract.
        unsafe { map.scatter(&scratch[..outcome.transferred.min(room)]) };
        outcome
    }
}

/// How a SIM reports SCSI status `status` with `sense`: `CAM_REQ_CMP` for
/// GOOD, else `CAM_SCSI_STATUS_ERROR`, with the sense as autosense data, or
/// held for REQUEST SENSE when the CCB disables autosense.
fn scsi_done(status: u8, sense: Vec<u8>, resid: u32, flags: u32) -> (Done, Option<Vec<u8>>) {
    let code = if status == GOOD {
        sys::CAM_REQ_CMP
    } else {
        sys::CAM_SCSI_STATUS_ERROR
    };
    let (autosense, held) = if sense.is_empty() {
        (None, None)
    } else if flags & sys::CAM_DIS_AUTOSENSE != 0 {
        (None, Some(sense))
    } else {
        (Some(sense), None)
    };
    (
        Done {
            status: code,
            scsi_status: status,
            resid,
            autosense,
        },
        held,
    )
}

// --- what tests and benchmarks use ---

fn sim_at(path_id: u32, target: u32, lun: u64) -> Arc<Sim> {
    device_at(path_id, target, lun).sim.clone()
}

/// Sets the latency of the device at `path_id:target:lun`: a command it
/// starts completes that long after (zero, the default, completes at once
/// and runs one command at a time).
pub fn set_latency(path_id: u32, target: u32, lun: u64, latency: Duration) {
    sim_at(path_id, target, lun).lock().latency = latency;
}

/// Sets the media rate of the device at `path_id:target:lun` in bytes per
/// second: the data of its commands crosses one link at that rate (0, the
/// default, moves data in no time).
pub fn set_media_rate(path_id: u32, target: u32, lun: u64, bytes_per_second: u64) {
    sim_at(path_id, target, lun).lock().media_rate = bytes_per_second;
}

/// Whether the SIM of the device at `path_id:target:lun` can abort a
/// command it has started (the default); without, `XPT_ABORT` of one is
/// refused with `CAM_UA_ABORT`.
pub fn set_abort_support(path_id: u32, target: u32, lun: u64, on: bool) {
    sim_at(path_id, target, lun).lock().aborts_started = on;
}

/// Sets the openings of the device at `path_id:target:lun` (the commands
/// it takes at once, and the CCBs a periph may hold for it), overriding
/// its bus's.  Periphs waiting for a CCB get one if the device now has
/// room.
pub fn set_openings(path_id: u32, target: u32, lun: u64, n: u32) {
    let device = device_at(path_id, target, lun);
    device.sim.lock().openings = n.max(1);
    io::run_allocqs(&device);
}

/// Injects a fault into the commands the device at `path_id:target:lun`
/// starts from now on.
pub fn inject(path_id: u32, target: u32, lun: u64, fault: Fault) {
    sim_at(path_id, target, lun).lock().faults.inject(fault);
}

/// Removes the device's injected faults (and the sense data it holds).
pub fn clear_faults(path_id: u32, target: u32, lun: u64) {
    let sim = sim_at(path_id, target, lun);
    let mut st = sim.lock();
    st.faults.clear();
    st.held_sense = None;
}

/// The SIM counters of the device at `path_id:target:lun`.
pub fn device_stats(path_id: u32, target: u32, lun: u64) -> DeviceStats {
    let sim = sim_at(path_id, target, lun);
    let st = sim.lock();
    let c = &st.counters;
    DeviceStats {
        started: c.started,
        timeouts: c.timeouts.clone(),
        executed: c.executed,
        faults_applied: c.faults,
        completed: c.completed.clone(),
        scsi_status: c.scsi_status.clone(),
        frozen: st.frozen,
        queued: st.queue.len(),
        in_flight: st.in_flight.len() + st.executing,
        max_in_flight: c.max_in_flight,
        latency: st.latency,
        openings: st.openings,
        lateness: c.lateness.clone(),
        aborts_requested: c.aborts_requested,
        aborted: c.aborted,
        resets: c.resets,
    }
}

/// Zeroes the device's counters (not its queue, freeze count or faults).
pub fn reset_device_stats(path_id: u32, target: u32, lun: u64) {
    sim_at(path_id, target, lun).lock().counters = Counters::default();
}

/// The distinct data buffers `(address, length)` of the last
/// [`BUFFER_LOG_LEN`] `XPT_SCSI_IO` CCBs the device's SIM started (one
/// range per segment for `CAM_DATA_SG`), in address order.
pub fn ccb_buffers(path_id: u32, target: u32, lun: u64) -> Vec<(usize, usize)> {
    sim_at(path_id, target, lun).lock().buffers.distinct()
}

/// Forgets the device's recorded CCB buffers.
pub fn reset_ccb_buffers(path_id: u32, target: u32, lun: u64) {
    sim_at(path_id, target, lun).lock().buffers = BufferLog::default();
}

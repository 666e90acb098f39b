//! The periph's I/O path, in four queues.  A request from the backend waits
//! in its periph's `incoming` queue for what it needs, a data buffer or a
//! CCB (CAM hands CCBs out as the device's openings allow); it is `active`
//! while the device runs its command; it comes back through the module's
//! `done` queue to a task that gives it to the backend with no lock held.
//! A request whose CTL I/O was completed while its command ran is
//! `abandoned` (still in `active`, without its I/O): it keeps its CCB, its
//! buffer (the device may still move data into or out of it) and a
//! reference to its periph until the CCB returns, when the done task
//! recycles it and releases the reference.
//!
//! Requests and buffers come from per-periph pools (the periph's device
//! backs one LUN), so the steady state allocates nothing; queues are linked
//! through the requests, so queueing never fails.
//!
//! Task management never reaches a backend: CTL only sets `CTL_FLAG_ABORT`
//! on the I/Os an ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LUN RESET or
//! I_T NEXUS RESET hits.  The backend looks at the flag whenever a request
//! comes back to it, and while requests are queued a scan runs every
//! [`SCAN_INTERVAL_MS`]: it completes aborted requests still waiting in
//! `incoming` at once, and asks CAM to abort (`XPT_ABORT`) the CCB of each
//! aborted request that is `active`, which then completes when its CCB
//! returns.  If CAM does not take the abort (many SIMs cannot abort a
//! command the device has started), the request is abandoned and its I/O
//! completed at once, as aborted, so that CTL need not wait for the device
//! (the commands it holds back behind the aborted one, a LUN reset, a LUN
//! removal); as pass(4) abandons the I/O of a closed descriptor
//! (sys/cam/scsi/scsi_pass.c), unload waits for abandoned CCBs.  A request
//! whose command carries CTL's own buffer (GET LBA STATUS, WRITE SAME) is
//! not abandoned: CTL frees that buffer when the I/O completes.  One
//! callout serves every LUN: a callout per periph would have to be drained
//! in the periph's destructor, which CAM may call where sleeping is not
//! allowed; the module's is drained at unload.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::backend::io::Work;
use crate::kern::alloc::KBox;
use crate::kern::callout::Callout;
use crate::kern::cam::{
    self, ActiveCcb, CamStatus, Data, Periph, PeriphLock, PeriphRef, ScsiCommand, ScsiResult, StartCcb,
};
use crate::kern::ctl::{BeLun, CtlIo};
use crate::kern::pool::{BufPool, KBuf, PoolError, Slab};
use crate::kern::queue::{Link, Linked, Stailq};
use crate::kern::sync::Mutex;
use crate::kern::task::Task;

use super::Softc;

/// Bytes of data buffers one LUN may hold at once by default
/// (`kern.cam.ctl.passthrough.pool_size`): enough for 32 commands of the
/// largest chunk (1 MiB), so that a device with 32 openings is kept busy
/// with large transfers.
pub const POOL_BUDGET: usize = 32 << 20;

/// What a request waits for in `incoming`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// A CCB, to send `command`.
    Ccb,
    /// A data buffer of this many bytes.
    Buffer(usize),
}

/// Why a request comes back to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Its command finished (`result`).
    DeviceDone,
    /// The buffer it waited for is attached (`buf`).
    BufferGranted,
}

/// One CTL I/O on its way through the device, with what it needs there.
pub struct Request {
    /// The CTL I/O it carries out; `None` once it was completed while its
    /// command still ran (abandoned).
    pub io: Option<CtlIo>,
    /// The backend's plan and progress.
    pub(crate) work: Work,
    /// The command to send, or last sent.
    pub command: ScsiCommand,
    /// How the last command ended.
    pub result: ScsiResult,
    /// The data buffer, while it has one.
    pub buf: Option<KBuf>,
    /// Why it came back to the backend.
    pub event: Event,
    /// How often its command was sent again (`CAM_REQUEUE_REQ`).
    pub resends: u8,
    /// The CCB of its command, while it is active.
    pub ccb: Option<ActiveCcb>,
    /// CAM was asked to abort that CCB.
    abort_sent: bool,
    /// The reference to its periph an abandoned request keeps until its
    /// CCB returns (the LUN's may be gone by then).
    hold: Option<PeriphRef>,
    want: Want,
    link: Link<Request>,
}

impl Request {
    /// Whether CTL aborted the request's I/O (a task management function).
    pub fn is_aborted(&self) -> bool {
        self.io.as_ref().is_some_and(CtlIo::is_aborted)
    }

    /// Whether CTL aborted it clearing a whole task set (see
    /// [`CtlIo::is_aborted_with_status`]).
    fn is_cleared(&self) -> bool {
        self.io.as_ref().is_some_and(CtlIo::is_aborted_with_status)
    }

    /// Whether its I/O was completed without it (see [`abandon`]).
    fn is_abandoned(&self) -> bool {
        self.io.is_none()
    }

    /// Whether its I/O may complete before its command does: unless the
    /// command carries CTL's buffer of the I/O, which CTL frees then.
    fn may_abandon(&self) -> bool {
        self.io.is_some() && !matches!(self.command.data, Data::InCtl(_) | Data::OutCtl(_))
    }
}

// SAFETY: `link` returns the `link` field.
unsafe impl Linked for Request {
    fn link(&self) -> &Link<Request> {
        &self.link
    }
}

/// The I/O state of one periph, protected by the periph's lock.
pub struct Locked {
    /// Requests waiting for a buffer or a CCB, in arrival order.
    incoming: Stailq<Request>,
    /// Requests whose command the device runs (their CCBs point at them).
    pub(crate) active: Stailq<Request>,
    /// Memory for requests.
    requests: Slab<Request>,
    /// Data buffers.
    bufs: BufPool,
}

impl Default for Locked {
    fn default() -> Locked {
        Locked {
            incoming: Stailq::new(),
            active: Stailq::new(),
            requests: Slab::new(),
            bufs: BufPool::new(POOL_BUDGET),
        }
    }
}

/// Sets how many bytes of data buffers the periph's device may keep (a
/// LUN is created or bound to it).
pub fn set_pool_size(periph: &Periph, bytes: usize) {
    if let Some(q) = periph.lock().locked() {
        q.bufs.set_budget(bytes);
    }
}

/// A LUN's requests in each queue now (`kern.cam.ctl.passthrough.lun.<id>
/// .queue`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// Waiting for a buffer or a CCB.
    pub incoming: u32,
    /// On the device.
    pub active: u32,
    /// On the device, their I/O completed without them (abandoned).
    pub abandoned: u32,
    /// Completed, waiting for the done task.
    pub done: u32,
}

/// The requests of `lun`, whose device `periph` is, in each queue.
pub fn depths(periph: &Periph, lun: &BeLun) -> QueueDepths {
    let mut d = QueueDepths::default();
    let count = |n: &mut u32| *n = n.saturating_add(1);
    if let Some(q) = periph.lock().locked() {
        d.incoming = u32::try_from(q.incoming.len()).unwrap_or(u32::MAX);
        q.active.find_mut(|r| {
            count(if r.is_abandoned() {
                &mut d.abandoned
            } else {
                &mut d.active
            });
            false
        });
    }
    DONE.lock().find_mut(|r| {
        if r.io.as_ref().is_some_and(|io| io.is_for(lun)) {
            count(&mut d.done);
        }
        false
    });
    d
}

/// How many requests each queue holds, and the pools' sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Waiting for a buffer or a CCB.
    pub incoming: usize,
    /// Running on the device.
    pub active: usize,
    /// Request slots allocated (in use and free).
    pub request_slots: usize,
    /// Buffer bytes allocated (in use and free).
    pub buffer_bytes: usize,
}

/// Completed requests, for the done task.
static DONE: Mutex<Stailq<Request>> = Mutex::new(Stailq::new());

/// Hands the requests of [`DONE`] to the backend.
static DONE_TASK: Task = Task::new(complete_done);

/// How often, in milliseconds, the abort scan runs while requests are
/// queued.
pub const SCAN_INTERVAL_MS: i32 = 100;

/// Runs the abort scan (from the softclock thread, where periphs cannot be
/// walked: it only queues [`SCAN_TASK`]).
static SCAN_CALLOUT: Callout = Callout::new(|| SCAN_TASK.enqueue());

/// The abort scan.
static SCAN_TASK: Task = Task::new(scan);

/// [`SCAN_CALLOUT`] is pending, or a scan is under way that arms it again
/// if requests remain.
static SCAN_ARMED: AtomicBool = AtomicBool::new(false);

/// XPT_ABORTs sent, and those CAM did not take (the CCB then completes as
/// it would have).
static ABORTS_SENT: AtomicU64 = AtomicU64::new(0);
static ABORTS_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Requests abandoned since load, and those whose CCB has not returned.
static ABANDONED: AtomicU64 = AtomicU64::new(0);
static ABANDONED_NOW: AtomicU64 = AtomicU64::new(0);
/// XPT_RESET_DEVs sent (LUNs with `reset=device`).
static RESETS_SENT: AtomicU64 = AtomicU64::new(0);

/// Module load: sets up the done queue, the abort scan and their tasks.
pub fn sysinit() {
    SCAN_ARMED.store(false, Ordering::Relaxed);
    ABORTS_SENT.store(0, Ordering::Relaxed);
    ABORTS_REFUSED.store(0, Ordering::Relaxed);
    ABANDONED.store(0, Ordering::Relaxed);
    ABANDONED_NOW.store(0, Ordering::Relaxed);
    RESETS_SENT.store(0, Ordering::Relaxed);
    // SAFETY: once per load, before any request exists; sysuninit destroyed
    // (or drained) the previous load's.
    unsafe {
        DONE.init(c"ctlpass done");
        DONE_TASK.init();
        SCAN_TASK.init();
        SCAN_CALLOUT.init();
    }
}

/// Module unload, once no request can exist: stops the abort scan, waits
/// for the done task to finish and tears the queue down.
pub fn sysuninit() {
    // A scan finds no periph now, so it does not arm the callout again.
    SCAN_CALLOUT.drain();
    SCAN_TASK.drain();
    SCAN_CALLOUT.drain();
    DONE_TASK.drain();
    // SAFETY: the task is drained and no periph is left to complete a
    // request, so nothing uses DONE.
    unsafe { DONE.destroy() };
}

/// A request for `io`, from the periph's pool; `io` comes back if there is
/// no memory for one (the backend then answers BUSY).
pub(crate) fn new_request(
    periph: &Periph,
    io: CtlIo,
    work: Work,
    command: ScsiCommand,
) -> Result<KBox<Request>, CtlIo> {
    let req = Request {
        io: None,
        work,
        command,
        result: ScsiResult::PENDING,
        buf: None,
        event: Event::DeviceDone,
        resends: 0,
        ccb: None,
        abort_sent: false,
        hold: None,
        want: Want::Ccb,
        link: Link::new(),
    };
    let mut lock = periph.lock();
    match lock.locked().map(|q| q.requests.room()) {
        Some(Ok(room)) => {
            let mut req = KBox::write(room, req);
            req.io = Some(io);
            Ok(req)
        }
        _ => Err(io),
    }
}

/// What [`buffer`] did.
pub enum Grant {
    /// The buffer is attached.
    Now(KBox<Request>),
    /// The request waits in `incoming` and comes back with
    /// [`Event::BufferGranted`].
    Later,
    /// No buffer can ever be had (too large, or no memory at all).
    Failed(KBox<Request>, PoolError),
}

/// Attaches a buffer of `len` bytes to `req`, now or when one is returned.
pub fn buffer(periph: &Periph, mut req: KBox<Request>, len: usize) -> Grant {
    let mut lock = periph.lock();
    let Some(q) = lock.locked() else {
        return Grant::Failed(req, PoolError::NoMemory);
    };
    // Requests waiting for a buffer already go first.
    let waiting = q.incoming.find_mut(|r| matches!(r.want, Want::Buffer(_))).is_some();
    let got = if waiting {
        Err(PoolError::Exhausted)
    } else {
        q.bufs.get(len)
    };
    match got {
        Ok(buf) => {
            req.buf = Some(buf);
            Grant::Now(req)
        }
        Err(PoolError::TooLarge) => Grant::Failed(req, PoolError::TooLarge),
        // Without memory and nothing in use that could come back, waiting
        // would never end.
        Err(PoolError::NoMemory) if q.bufs.allocated() == 0 => Grant::Failed(req, PoolError::NoMemory),
        Err(PoolError::Exhausted | PoolError::NoMemory) => {
            req.want = Want::Buffer(len);
            q.incoming.push_back(req);
            arm_scan();
            Grant::Later
        }
    }
}

/// Queues `req.command` for the periph's device; if the device is gone,
/// the request comes back as `CAM_DEV_NOT_THERE` would.
pub fn issue(periph: &Periph, mut req: KBox<Request>) {
    let mut lock = periph.lock();
    let valid = periph.softc().is_some_and(Softc::is_valid);
    match lock.locked() {
        Some(q) if valid => {
            req.want = Want::Ccb;
            q.incoming.push_back(req);
            arm_scan();
        }
        _ => {
            let mut gone = Stailq::new();
            gone.push_back(req);
            return finish_gone(gone);
        }
    }
    lock.schedule();
}

/// CAM gave the periph a CCB: send the first request that waits for one.
pub fn start(lock: &mut PeriphLock<'_>, ccb: StartCcb) {
    let Some(q) = lock.locked() else {
        return ccb.release(lock);
    };
    let Some(req) = q.incoming.remove_first(|r| r.want == Want::Ccb) else {
        return ccb.release(lock);
    };
    let more = q.incoming.find_mut(|r| r.want == Want::Ccb).is_some();
    ccb.scsi_io(lock, req);
    if more {
        lock.schedule();
    }
}

/// The device finished `req` (its CCB is released): hand it to the done
/// task (which recycles it if it was abandoned: releasing its periph
/// reference takes the lock held here, and may free the periph).
pub fn done(lock: &mut PeriphLock<'_>, mut req: KBox<Request>) {
    let _ = lock;
    req.event = Event::DeviceDone;
    DONE.lock().push_back(req);
    DONE_TASK.enqueue();
}

/// Returns `req`'s buffer and memory to the pools and gives back its I/O
/// for the backend to complete; requests waiting for a buffer may get one.
pub fn release(periph: &Periph, req: KBox<Request>) -> Option<CtlIo> {
    let mut lock = periph.lock();
    match lock.locked() {
        Some(q) => recycle(q, req),
        None => KBox::into_inner(req).io,
    }
}

/// The CCB of an abandoned request returned (done task, no lock held): its
/// buffer and memory go back to its periph's pools (trimmed if the periph
/// backs no LUN any more), then its periph reference.
fn bury(mut req: KBox<Request>) {
    let Some(periph) = req.hold.take() else {
        // Not abandoned by `abandon`, which cannot be: nothing to give back
        // but the memory.
        return drop(req);
    };
    {
        let mut lock = periph.lock();
        let backs_lun = periph.softc().is_some_and(Softc::backs_lun);
        if let Some(q) = lock.locked() {
            drop(recycle(q, req));
            if !backs_lun {
                q.trim();
            }
        }
    }
    drop(periph);
    ABANDONED_NOW.fetch_sub(1, Ordering::AcqRel);
}

fn recycle(q: &mut Locked, req: KBox<Request>) -> Option<CtlIo> {
    let mut req = q.requests.recycle(req);
    if let Some(buf) = req.buf.take() {
        q.bufs.put(buf);
        grant_waiting(q);
    }
    req.io.take()
}

/// Attaches buffers to the requests that wait for one, in order, as long as
/// the pool has room.
fn grant_waiting(q: &mut Locked) {
    let mut granted = Stailq::new();
    while let Some(Want::Buffer(len)) = q
        .incoming
        .find_mut(|r| matches!(r.want, Want::Buffer(_)))
        .map(|r| r.want)
    {
        let Ok(buf) = q.bufs.get(len) else { break };
        let Some(mut req) = q.incoming.remove_first(|r| matches!(r.want, Want::Buffer(_))) else {
            break;
        };
        req.buf = Some(buf);
        req.want = Want::Ccb;
        req.event = Event::BufferGranted;
        granted.push_back(req);
    }
    if !granted.is_empty() {
        DONE.lock().append(&mut granted);
        DONE_TASK.enqueue();
    }
}

/// The periph is invalidated: requests waiting for a CCB or a buffer will
/// never get one; they come back as if the device had gone.
pub fn invalidate(lock: &mut PeriphLock<'_>) {
    if let Some(q) = lock.locked() {
        finish_gone(q.incoming.take());
    }
}

/// Gives the pools' idle memory back (the LUN is gone; what abandoned
/// requests hold comes back when their CCBs do).
pub fn trim(periph: &Periph) {
    let mut lock = periph.lock();
    if let Some(q) = lock.locked() {
        q.trim();
    }
}

impl Locked {
    fn trim(&mut self) {
        self.requests.trim();
        self.bufs.trim();
    }
}

/// How many requests the periph's queues hold.
pub fn counts(periph: &Periph) -> QueueCounts {
    let mut lock = periph.lock();
    lock.locked().map_or(QueueCounts::default(), |q| QueueCounts {
        incoming: q.incoming.len(),
        active: q.active.len(),
        request_slots: q.requests.slots(),
        buffer_bytes: q.bufs.allocated(),
    })
}

fn finish_gone(reqs: Stailq<Request>) {
    finish_with(reqs, CamStatus::DEV_NOT_THERE);
}

/// Hands `reqs`, whose commands never ran, to the done task as if they had
/// ended with `status`.
fn finish_with(reqs: Stailq<Request>, status: CamStatus) {
    if reqs.is_empty() {
        return;
    }
    let mut ended = Stailq::new();
    for mut req in reqs {
        req.result = ScsiResult::new(status, 0, 0, &[]);
        req.event = Event::DeviceDone;
        ended.push_back(req);
    }
    DONE.lock().append(&mut ended);
    DONE_TASK.enqueue();
}

/// Makes sure an abort scan runs within [`SCAN_INTERVAL_MS`]: a request
/// was queued.
fn arm_scan() {
    if !SCAN_ARMED.load(Ordering::Relaxed) && !SCAN_ARMED.swap(true, Ordering::AcqRel) {
        SCAN_CALLOUT.reset((cam::hz().saturating_mul(SCAN_INTERVAL_MS) / 1000).max(1));
    }
}

/// The abort scan (a task): looks through every periph's queues for
/// requests whose I/O CTL aborted, and runs again later while any periph
/// has requests queued.
fn scan() {
    // Cleared first: a request queued from now on arms the callout itself.
    SCAN_ARMED.store(false, Ordering::Release);
    let mut busy = false;
    cam::for_each_periph(|periph| busy |= scan_periph(periph));
    if busy {
        arm_scan();
    }
}

/// Completes the aborted requests waiting in the periph's `incoming` and
/// sends `XPT_ABORT` for the CCB of each aborted `active` one (once),
/// abandoning it if CAM does not take the abort; returns whether the
/// periph still has requests to watch (abandoned ones need no scan).
fn scan_periph(periph: &PeriphRef) -> bool {
    let mut lock = periph.lock();
    let Some(q) = lock.locked() else { return false };
    let mut victims = Stailq::new();
    while let Some(req) = q.incoming.remove_first(Request::is_aborted) {
        victims.push_back(req);
    }
    finish_with(victims, CamStatus::REQ_ABORTED);
    // A LUN with `reset=device` whose every running command was aborted by
    // a task-set-wide TMF (LUN RESET, CLEAR TASK SET) resets the device
    // too, as the initiator asked of the logical unit; the commands are
    // still aborted one by one, for those the reset does not reach (queued
    // in CAM, not yet at the device).
    let resets = periph.softc().is_some_and(Softc::resets_device);
    let cleared = lock.locked().is_some_and(|q| {
        q.active.find_mut(|r| !r.abort_sent).is_some()
            && q.active.find_mut(|r| !r.is_abandoned() && !r.is_cleared()).is_none()
    });
    if resets && cleared && lock.reset_device().is_ok() {
        RESETS_SENT.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        let Some(q) = lock.locked() else { return false };
        let victim = q.active.find_mut(|r| !r.abort_sent && r.is_aborted()).map(|r| {
            r.abort_sent = true;
            (ptr::from_ref::<Request>(r), r.ccb)
        });
        match victim {
            Some((req, Some(ccb))) => {
                ABORTS_SENT.fetch_add(1, Ordering::Relaxed);
                if lock.abort(ccb) == CamStatus::REQ_CMP {
                    continue;
                }
                ABORTS_REFUSED.fetch_add(1, Ordering::Relaxed);
                if let Some(io) = abandon(&mut lock, periph, req) {
                    // CTL is called without the lock; the walk starts over.
                    drop(lock);
                    crate::backend::io::abandoned(io);
                    lock = periph.lock();
                }
            }
            Some((_, None)) => {}
            None => break,
        }
    }
    lock.locked()
        .is_some_and(|q| !q.incoming.is_empty() || q.active.find_mut(|r| !r.is_abandoned()).is_some())
}

/// Abandons the active request at `req` (if it may be): takes its I/O out
/// for the caller to complete, and a reference to `periph`, its periph,
/// which the request keeps until its CCB returns.
fn abandon(lock: &mut PeriphLock<'_>, periph: &PeriphRef, req: *const Request) -> Option<CtlIo> {
    let r = lock.locked()?.active.find_mut(|r| ptr::eq(r, req))?;
    if !r.may_abandon() {
        return None;
    }
    r.hold = Some(periph.clone());
    ABANDONED.fetch_add(1, Ordering::Relaxed);
    ABANDONED_NOW.fetch_add(1, Ordering::AcqRel);
    r.io.take()
}

/// Abandoned requests whose CCB has not returned (the module cannot be
/// unloaded while there are any).
pub fn abandoned_now() -> u64 {
    ABANDONED_NOW.load(Ordering::Acquire)
}

/// What the abort scan did since the module was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbortCounts {
    /// XPT_ABORTs sent.
    pub sent: u64,
    /// Of those, how many CAM did not take.
    pub refused: u64,
    /// Requests abandoned (an abort not taken, the I/O completed without
    /// waiting for the CCB).
    pub abandoned: u64,
    /// XPT_RESET_DEVs sent.
    pub resets: u64,
}

/// What the abort scan did since the module was loaded.
pub fn abort_counts() -> AbortCounts {
    AbortCounts {
        sent: ABORTS_SENT.load(Ordering::Relaxed),
        refused: ABORTS_REFUSED.load(Ordering::Relaxed),
        abandoned: ABANDONED.load(Ordering::Relaxed),
        resets: RESETS_SENT.load(Ordering::Relaxed),
    }
}

/// The done task: gives every finished request back to the backend, no
/// lock held.
fn complete_done() {
    loop {
        let batch = DONE.lock().take();
        if batch.is_empty() {
            return;
        }
        for req in batch {
            if req.is_abandoned() {
                bury(req);
            } else {
                crate::backend::io::resume(req);
            }
        }
    }
}

//! The periph's I/O path.  A request from the backend waits in its
//! periph's `incoming` queue until CAM gives the periph a CCB (as the
//! device's openings allow), is `active` while the device runs it, and
//! comes back through the module's `done` queue to a task that completes it
//! to CTL with no lock held.  Requests never wait on an allocation: the
//! queues are linked through the requests themselves.

use crate::kern::alloc::{KBox, Wait};
use crate::kern::cam::{CamStatus, Periph, PeriphLock, ScsiCommand, ScsiResult, StartCcb};
use crate::kern::ctl::CtlIo;
use crate::kern::queue::{Link, Linked, Stailq};
use crate::kern::sync::Mutex;
use crate::kern::task::Task;

use super::Softc;

/// One command of a CTL I/O on its way to the device and back.
pub struct Request {
    /// The CTL I/O it carries out.
    pub io: CtlIo,
    /// What is sent to the device.
    pub command: ScsiCommand,
    /// How it ended ([`ScsiResult::PENDING`] until it has).
    pub result: ScsiResult,
    link: Link<Request>,
}

// SAFETY: `link` returns the `link` field.
unsafe impl Linked for Request {
    fn link(&self) -> &Link<Request> {
        &self.link
    }
}

impl Request {
    /// A request for `io`, or `io` back if there is no memory for one (the
    /// caller then completes it with BUSY).
    pub fn new(io: CtlIo, command: ScsiCommand) -> Result<KBox<Request>, CtlIo> {
        match KBox::new_uninit(Wait::NoWait) {
            Ok(room) => Ok(KBox::write(
                room,
                Request {
                    io,
                    command,
                    result: ScsiResult::PENDING,
                    link: Link::new(),
                },
            )),
            Err(_) => Err(io),
        }
    }
}

/// The I/O state of one periph, protected by the periph's lock.
#[derive(Default)]
pub struct Locked {
    /// Requests waiting for a CCB.
    incoming: Stailq<Request>,
    /// Requests the device is running.
    active: u32,
}

/// Completed requests, for the done task.
static DONE: Mutex<Stailq<Request>> = Mutex::new(Stailq::new());

/// Completes the requests of [`DONE`] to CTL.
static DONE_TASK: Task = Task::new(complete_done);

/// Module load: sets up the done queue and its task.
pub fn sysinit() {
    // SAFETY: once per load, before any request exists; sysuninit destroyed
    // the previous load's.
    unsafe {
        DONE.init(c"ctlpass done");
        DONE_TASK.init();
    }
}

/// Module unload, once no request can exist: waits for the done task to
/// finish and tears the queue down.
pub fn sysuninit() {
    DONE_TASK.drain();
    // SAFETY: the task is drained and no periph is left to complete a
    // request, so nothing uses DONE.
    unsafe { DONE.destroy() };
}

/// Queues `req` for the periph's device; if the device is gone, the request
/// completes as `CAM_DEV_NOT_THERE` would.
pub fn submit(periph: &Periph, req: KBox<Request>) {
    let mut lock = periph.lock();
    let valid = periph.softc().is_some_and(Softc::is_valid);
    match lock.locked() {
        Some(q) if valid => q.incoming.push_back(req),
        _ => {
            let mut gone = Stailq::new();
            gone.push_back(req);
            return finish_gone(gone);
        }
    }
    lock.schedule();
}

/// CAM gave the periph a CCB: send the first incoming request with it.
pub fn start(lock: &mut PeriphLock<'_>, ccb: StartCcb) {
    let Some(q) = lock.locked() else {
        return ccb.release(lock);
    };
    let Some(req) = q.incoming.pop_front() else {
        return ccb.release(lock);
    };
    q.active += 1;
    let more = !q.incoming.is_empty();
    ccb.scsi_io(lock, req);
    if more {
        lock.schedule();
    }
}

/// The device finished `req` (its CCB is released): hand it to the done
/// task.
pub fn done(lock: &mut PeriphLock<'_>, req: KBox<Request>) {
    if let Some(q) = lock.locked() {
        q.active = q.active.saturating_sub(1);
    }
    DONE.lock().push_back(req);
    DONE_TASK.enqueue();
}

/// The periph is invalidated: requests still waiting for a CCB will never
/// get one; they complete as if the device had gone.
pub fn invalidate(lock: &mut PeriphLock<'_>) {
    if let Some(q) = lock.locked() {
        finish_gone(q.incoming.take());
    }
}

fn finish_gone(reqs: Stailq<Request>) {
    if reqs.is_empty() {
        return;
    }
    let mut gone = Stailq::new();
    for mut req in reqs {
        req.result = ScsiResult::new(CamStatus::DEV_NOT_THERE, 0, 0, &[]);
        gone.push_back(req);
    }
    DONE.lock().append(&mut gone);
    DONE_TASK.enqueue();
}

/// The done task: completes every finished request to CTL, no lock held.
fn complete_done() {
    loop {
        let batch = DONE.lock().take();
        if batch.is_empty() {
            return;
        }
        for req in batch {
            crate::backend::complete(req);
        }
    }
}

//! The CTL backend `passthrough`: LUNs whose storage is a real SCSI device
//! reached through a ctlpass periph.  Requests come from ctladm and ctld
//! (`CTL_LUN_REQ`); this module keeps the LUNs and the backend's life
//! cycle, `lun` creates, removes and modifies them.

mod identity;
mod lun;
mod options;
mod reply;

pub use lun::Lun;
pub use options::DeviceName;

use crate::kern::alloc::KBox;
use crate::kern::cam::ScsiCommand;
use crate::kern::ctl::{
    Completion, CtlIo, LunRef, LunReq, LunReqType, MediaEvent, Reply, SENSE_KEY_HARDWARE_ERROR, Sbuf,
};
use crate::kern::errno::Errno;
use crate::kern::queue::{Link, Linked, Stailq};
use crate::kern::sync::{Mutex, MutexGuard};
use crate::periph::{self, io::Request};
use crate::scsi::cdb::{self, Cdb, StartStop};

/// A LUN of this backend, from `ctl_add_lun` until its removal is done.
struct Entry {
    lun: LunRef,
    /// A remove request waits for `lun_shutdown`.
    waiter: bool,
    /// Being removed: no new request may use it.
    removing: bool,
    /// CTL called `lun_shutdown`.
    shut_down: bool,
    link: Link<Entry>,
}

impl Entry {
    fn new(lun: LunRef) -> Entry {
        Entry {
            lun,
            waiter: false,
            removing: false,
            shut_down: false,
            link: Link::new(),
        }
    }
}

// SAFETY: `link` returns the `link` field.
unsafe impl Linked for Entry {
    fn link(&self) -> &Link<Entry> {
        &self.link
    }
}

/// The backend's state, shared by every entry point.
struct Backend {
    /// Registered with CTL (between `init` and `shutdown`).
    registered: bool,
    /// Set once unload has begun: new LUN requests are refused.
    closing: bool,
    /// LUNs created and not yet removed.
    luns: Stailq<Entry>,
    /// LUN requests being processed (they may sleep, so unload waits).
    requests: u32,
}

impl Backend {
    const fn unloaded() -> Backend {
        Backend {
            registered: false,
            closing: false,
            luns: Stailq::new(),
            requests: 0,
        }
    }

    fn entry(&mut self, lun: &LunRef) -> Option<&mut Entry> {
        self.luns.find_mut(|e| e.lun.same(lun))
    }
}

static BACKEND: Mutex<Backend> = Mutex::new(Backend::unloaded());

fn lock() -> MutexGuard<'static, Backend> {
    BACKEND.lock()
}

/// Module load, before any entry point runs: sets up the backend's lock.
pub fn sysinit() {
    // SAFETY: runs once per module load, before anything locks BACKEND; the
    // previous load (if any) destroyed it in `sysuninit`.
    unsafe { BACKEND.init(c"ctlpass backend") };
    *lock() = Backend::unloaded();
}

/// Module unload, after every entry point has returned for the last time.
pub fn sysuninit() {
    // SAFETY: both modules are unloaded, so nothing uses BACKEND any more;
    // `sysinit` initialised it.
    unsafe { BACKEND.destroy() };
}

/// The backend is being registered with CTL: LUN requests may arrive.
pub fn init() -> Result<(), Errno> {
    *lock() = Backend {
        registered: true,
        ..Backend::unloaded()
    };
    Ok(())
}

/// Refuses to unload while LUNs or LUN requests exist; otherwise stops
/// taking requests.
pub fn quiesce() -> Result<(), Errno> {
    let mut be = lock();
    if !be.luns.is_empty() || be.requests > 0 {
        return Err(Errno::EBUSY);
    }
    be.closing = true;
    Ok(())
}

/// The backend is being deregistered from CTL (module unload); an error
/// keeps it registered.
///
/// CTL also calls this when registration failed (another backend has the
/// name "passthrough", or `init` failed): the module event handler answers
/// the failed MOD_LOAD with MOD_UNLOAD.  ctl_backend_deregister would then
/// unlink a backend that is not on its list, which faults; refusing here
/// stops it first.
pub fn shutdown() -> Result<(), Errno> {
    if !lock().registered {
        return Err(Errno::ENXIO);
    }
    quiesce()?;
    lock().registered = false;
    Ok(())
}

/// `CTL_LUN_REQ` from ctladm or ctld, in the requesting process (it may
/// sleep).  Results and errors are reported through the request's status
/// and error string.
pub fn lun_request(req: &mut LunReq<'_>) {
    {
        let mut be = lock();
        if !be.registered || be.closing {
            req.set_error(format_args!("the passthrough backend is being unloaded"));
            return;
        }
        be.requests += 1;
    }
    match req.reqtype() {
        Ok(LunReqType::Create) => lun::create(req),
        Ok(LunReqType::Remove) => lun::remove(req),
        Ok(LunReqType::Modify) => lun::modify(req),
        Err(raw) => req.set_error(format_args!("unknown LUN request type {raw}")),
    }
    lock().requests -= 1;
}

/// CTL has freed its side of a LUN (`lun_shutdown`): a remove request
/// waiting for it is woken; if none is (it was interrupted), the LUN goes
/// now.  CTL's reference is released here.
pub fn lun_shutdown(lun: LunRef) {
    let released = {
        let mut be = lock();
        let mut released = None;
        if let Some(entry) = be.entry(&lun) {
            entry.shut_down = true;
            if entry.waiter {
                crate::kern::sync::wakeup(lun.lun());
            } else {
                released = be.luns.remove_first(|e| e.lun.same(&lun));
            }
        }
        released
    };
    // The periph reference may be released here, without the lock.
    drop(released);
    drop(lun);
}

/// `lun_info`: the LUN's device, for `ctladm devlist -v`.  Called with
/// CTL's mutexes held: it must not sleep or lock.
pub fn lun_info(lun: &Lun, sb: &mut Sbuf) {
    lun.info(sb);
}

/// How long the device may take over the commands the backend sends, in
/// milliseconds: spinning a disk up or loading a medium takes longest.
const START_STOP_TIMEOUT: u32 = 120_000;
const SYNCHRONIZE_CACHE_TIMEOUT: u32 = 60_000;
const PREVENT_ALLOW_TIMEOUT: u32 = 10_000;

/// The timeout of a command the backend sends to the device as it came, or
/// `None` for the commands this stage does not carry yet.
fn forwarded(completion: Completion, cdb: &[u8]) -> Option<u32> {
    if completion != Completion::ConfigWrite {
        return None;
    }
    match cdb.first().copied()? {
        cdb::START_STOP_UNIT => Some(START_STOP_TIMEOUT),
        cdb::SYNCHRONIZE_CACHE_10 | cdb::SYNCHRONIZE_CACHE_16 => Some(SYNCHRONIZE_CACHE_TIMEOUT),
        cdb::PREVENT_ALLOW_MEDIUM_REMOVAL => Some(PREVENT_ALLOW_TIMEOUT),
        _ => None,
    }
}

/// An I/O for a LUN of this backend, from CTL's worker thread: START STOP
/// UNIT, SYNCHRONIZE CACHE and PREVENT ALLOW MEDIUM REMOVAL go to the
/// device; the data path comes with the next stage, and until then its
/// commands fail at once (INTERNAL TARGET FAILURE) rather than hang.
pub fn submit(io: CtlIo) {
    let internal = Reply::Sense {
        key: SENSE_KEY_HARDWARE_ERROR,
        asc: 0x44,
        ascq: 0x00,
    };
    let (Some(lun), Some(timeout_ms), Some(cdb)) = (io.lun(), forwarded(io.completion(), io.cdb()), Cdb::new(io.cdb()))
    else {
        return io.complete(internal);
    };
    let command = ScsiCommand {
        cdb,
        task_attribute: io.task_attribute(),
        timeout_ms,
    };
    match Request::new(io, command) {
        Ok(req) => periph::io::submit(lun.lun().periph(), req),
        Err(io) => io.complete(Reply::Busy),
    }
}

/// The device finished a request (from the done task, no lock held): a
/// successful START STOP UNIT changes CTL's view of the medium as it
/// changed the device's, then the I/O completes with the device's status.
pub fn complete(req: KBox<Request>) {
    let Request {
        io, command, result, ..
    } = KBox::into_inner(req);
    if result.is_ok()
        && let (Some(ss), Some(lun)) = (StartStop::parse(command.cdb.as_bytes()), io.lun())
    {
        for event in media_events(ss).into_iter().flatten() {
            lun.media_event(event);
        }
    }
    io.complete(reply::of(&result));
}

/// What CTL must be told after a successful START STOP UNIT, in order (as
/// CTL's ramdisk backend does it); nothing for a power condition change.
fn media_events(ss: StartStop) -> [Option<MediaEvent>; 2] {
    match ss {
        StartStop {
            power_condition: 1.., ..
        } => [None, None],
        StartStop {
            start: true,
            load_eject,
            ..
        } => [load_eject.then_some(MediaEvent::Loaded), Some(MediaEvent::Started)],
        StartStop {
            start: false,
            load_eject,
            ..
        } => [Some(MediaEvent::Stopped), load_eject.then_some(MediaEvent::Ejected)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_commands_reach_the_device_and_their_timeouts() {
        let w = Completion::ConfigWrite;
        assert_eq!(forwarded(w, &[0x1b, 0, 0, 0, 1, 0]), Some(START_STOP_TIMEOUT));
        assert_eq!(forwarded(w, &[0x35; 10]), Some(SYNCHRONIZE_CACHE_TIMEOUT));
        assert_eq!(forwarded(w, &[0x91; 16]), Some(SYNCHRONIZE_CACHE_TIMEOUT));
        assert_eq!(forwarded(w, &[0x1e, 0, 0, 0, 1, 0]), Some(PREVENT_ALLOW_TIMEOUT));
        assert_eq!(forwarded(w, &[0x42; 10]), None, "UNMAP needs the data path");
        assert_eq!(forwarded(Completion::DataSubmit, &[0x28; 10]), None);
        assert_eq!(forwarded(w, &[]), None);
    }

    #[test]
    fn start_stop_tells_ctl_what_changed_in_ramdisk_order() {
        let ss = |how| StartStop::parse(&[0x1b, 0, 0, 0, how, 0]).unwrap();
        use MediaEvent::*;
        assert_eq!(media_events(ss(0x01)), [None, Some(Started)]);
        assert_eq!(media_events(ss(0x03)), [Some(Loaded), Some(Started)]);
        assert_eq!(media_events(ss(0x00)), [Some(Stopped), None]);
        assert_eq!(media_events(ss(0x02)), [Some(Stopped), Some(Ejected)]);
        assert_eq!(media_events(ss(0x31)), [None, None]);
    }
}

//! The CTL backend `passthrough`: LUNs whose storage is a real SCSI device
//! reached through a ctlpass periph.  Requests come from ctladm and ctld
//! (`CTL_LUN_REQ`); this module keeps the LUNs and the backend's life
//! cycle, `lun` creates, removes and modifies them.

mod identity;
pub mod io;
mod lun;
mod options;
mod reply;

pub use lun::Lun;
pub use options::DeviceName;

use crate::kern::ctl::{LunRef, LunReq, LunReqType, Sbuf};
use crate::kern::errno::Errno;
use crate::kern::queue::{Link, Linked, Stailq};
use crate::kern::sync::{Mutex, MutexGuard};

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
    // The pools' memory goes back; the periph reference may be released
    // here, without the lock.
    crate::periph::io::trim(lun.lun().periph());
    drop(released);
    drop(lun);
}

/// `lun_info`: the LUN's device, for `ctladm devlist -v`.  Called with
/// CTL's mutexes held: it must not sleep or lock.
pub fn lun_info(lun: &Lun, sb: &mut Sbuf) {
    lun.info(sb);
}

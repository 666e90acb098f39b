//! The CTL backend `passthrough`: LUNs whose storage is a real SCSI device
//! reached through a ctlpass periph.

use core::pin::Pin;

use crate::kern::ctl::{Completion, CtlIo, LunReq, LunReqType};
use crate::kern::errno::Errno;
use crate::kern::sync::Mutex;

/// The backend's state, shared by every entry point.
struct Backend {
    /// Registered with CTL (between `init` and `shutdown`).
    registered: bool,
    /// Set once unload has begun: new LUN requests are refused.
    closing: bool,
    /// LUNs created and not yet shut down.
    luns: u32,
    /// LUN requests being processed (they may sleep, so unload waits).
    requests: u32,
}

impl Backend {
    const UNLOADED: Backend = Backend {
        registered: false,
        closing: false,
        luns: 0,
        requests: 0,
    };
}

static BACKEND: Mutex<Backend> = Mutex::new(Backend::UNLOADED);

fn backend() -> Pin<&'static Mutex<Backend>> {
    Pin::static_ref(&BACKEND)
}

/// Module load, before any entry point runs: sets up the backend's lock.
pub fn sysinit() {
    // SAFETY: runs once per module load, before anything locks BACKEND; the
    // previous load (if any) destroyed it in `sysuninit`.
    unsafe { backend().init(c"ctlpass backend") };
    *BACKEND.lock() = Backend::UNLOADED;
}

/// Module unload, after every entry point has returned for the last time.
pub fn sysuninit() {
    // SAFETY: both modules are unloaded, so nothing uses BACKEND any more;
    // `sysinit` initialised it.
    unsafe { backend().destroy() };
}

/// The backend is being registered with CTL: LUN requests may arrive.
pub fn init() -> Result<(), Errno> {
    *BACKEND.lock() = Backend {
        registered: true,
        ..Backend::UNLOADED
    };
    Ok(())
}

/// Refuses to unload while LUNs or LUN requests exist; otherwise stops
/// taking requests.
pub fn quiesce() -> Result<(), Errno> {
    let mut be = BACKEND.lock();
    if be.luns > 0 || be.requests > 0 {
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
    if !BACKEND.lock().registered {
        return Err(Errno::ENXIO);
    }
    quiesce()?;
    BACKEND.lock().registered = false;
    Ok(())
}

/// `CTL_LUN_REQ` from ctladm or ctld.  Errors are reported through the
/// request's status and error string.
pub fn lun_request(req: &mut LunReq<'_>) {
    {
        let mut be = BACKEND.lock();
        if !be.registered || be.closing {
            req.set_error(format_args!("the passthrough backend is being unloaded"));
            return;
        }
        be.requests += 1;
    }
    match req.reqtype() {
        Ok(LunReqType::Create | LunReqType::Remove | LunReqType::Modify) => {
            req.set_error(format_args!(
                "passthrough: LUN requests are not implemented in this version"
            ));
        }
        Err(raw) => req.set_error(format_args!("passthrough: unknown LUN request type {raw}")),
    }
    BACKEND.lock().requests -= 1;
}

/// An I/O for a LUN of this backend.  No LUN can exist in this version, so
/// CTL has none to send; should one arrive, it fails rather than hang.
pub fn submit(io: CtlIo, completion: Completion) {
    io.fail_internal(completion);
}

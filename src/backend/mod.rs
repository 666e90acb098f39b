//! The CTL backend `passthrough`: LUNs whose storage is a real SCSI device
//! reached through a ctlpass periph.  Requests come from ctladm and ctld
//! (`CTL_LUN_REQ`); this module keeps the LUNs and the backend's life
//! cycle, `lun` creates, removes and modifies them.

mod identity;
pub mod io;
mod lun;
pub mod options;
mod reply;
pub mod sysctl;

pub use lun::Lun;
pub use options::DeviceName;

use crate::kern::ctl::{LunRef, LunReq, LunReqType, MediaEvent, Sbuf};
use crate::kern::errno::Errno;
use crate::kern::nv::OwnedNvList;
use crate::kern::queue::{Link, Linked, Stailq};
use crate::kern::sync::{Mutex, MutexGuard};
use crate::kern::sysctl::SysctlCtx;
use crate::kern::task::Task;
use crate::printf;
use options::LostPolicy;

/// A LUN of this backend, from `ctl_add_lun` until its removal is done.
struct Entry {
    lun: LunRef,
    /// Where its device is now.
    place: lun::Place,
    /// A remove request waits for `lun_shutdown`.
    waiter: bool,
    /// Being removed: no new request may use it.
    removing: bool,
    /// CTL called `lun_shutdown`.
    shut_down: bool,
    /// The device was lost and the LUN let it go (until it returns).
    offline: bool,
    /// What becomes of the LUN when its device is lost (option `lost`).
    lost: LostPolicy,
    /// Reset the device when CTL clears the LUN's task set (`reset=device`).
    reset_device: bool,
    /// Option lists a modify replaced, which CTL may still be reading:
    /// freed with the entry, once CTL has shut the LUN down.
    retired: Stailq<Retired>,
    /// Its sysctl node (`kern.cam.ctl.passthrough.lun.<id>`), taken away
    /// and freed, where sleeping is allowed, before the LUN is removed.
    sysctl: Option<SysctlCtx<LunRef>>,
    link: Link<Entry>,
}

impl Entry {
    fn new(lun: LunRef, place: lun::Place, lost: LostPolicy, reset_device: bool) -> Entry {
        Entry {
            lun,
            place,
            waiter: false,
            removing: false,
            shut_down: false,
            offline: false,
            lost,
            reset_device,
            retired: Stailq::new(),
            sysctl: None,
            link: Link::new(),
        }
    }
}

/// A LUN's option list that a modify replaced.
struct Retired {
    _options: OwnedNvList,
    link: Link<Retired>,
}

impl Retired {
    fn new(options: OwnedNvList) -> Retired {
        Retired {
            _options: options,
            link: Link::new(),
        }
    }
}

// SAFETY: `link` returns the `link` field.
unsafe impl Linked for Retired {
    fn link(&self) -> &Link<Retired> {
        &self.link
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
    /// The module's sysctl OIDs, while registered.
    tree: Option<sysctl::ModuleTree>,
}

impl Backend {
    const fn unloaded() -> Backend {
        Backend {
            registered: false,
            closing: false,
            luns: Stailq::new(),
            requests: 0,
            tree: None,
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

/// Takes LUNs offline when their device is lost, and back online when it
/// returns.
static DEVICES_TASK: Task = Task::new(devices_changed_task);

/// Module load, before any entry point runs: sets up the backend's lock
/// and task.
pub fn sysinit() {
    // SAFETY: runs once per module load, before anything locks BACKEND or
    // queues the task; the previous load (if any) destroyed the lock and
    // drained the task in `sysuninit`.
    unsafe {
        BACKEND.init(c"ctlpass backend");
        DEVICES_TASK.init();
    }
    *lock() = Backend::unloaded();
}

/// Module unload, after every entry point has returned for the last time
/// and every periph is gone.
pub fn sysuninit() {
    DEVICES_TASK.drain();
    // SAFETY: both modules are unloaded, so nothing uses BACKEND any more;
    // `sysinit` initialised it.
    unsafe { BACKEND.destroy() };
}

/// The backend is being registered with CTL (module load, where sleeping
/// is allowed): its sysctl OIDs are added, then LUN requests may arrive.
pub fn init() -> Result<(), Errno> {
    let tree = sysctl::ModuleTree::new()?;
    *lock() = Backend {
        registered: true,
        tree: Some(tree),
        ..Backend::unloaded()
    };
    Ok(())
}

/// Refuses to unload while LUNs or LUN requests exist; otherwise stops
/// taking requests, and waits for the threads that completed a removed
/// LUN's last I/Os to let go of it (they hold it for a moment after CTL
/// shut it down).  Sleeps.
pub fn quiesce() -> Result<(), Errno> {
    {
        let mut be = lock();
        // An abandoned request keeps its periph, and module code runs when
        // its CCB returns.
        if !be.luns.is_empty() || be.requests > 0 || crate::periph::io::abandoned_now() > 0 {
            return Err(Errno::EBUSY);
        }
        be.closing = true;
    }
    while crate::kern::ctl::live_luns() > 0 {
        crate::kern::cam::pause(c"ctlpquie", 1);
    }
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
    let tree = {
        let mut be = lock();
        be.registered = false;
        be.tree.take()
    };
    // No LUN is left under `lun`: the OIDs go, without the lock.
    drop(tree);
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
        be.requests = be.requests.saturating_add(1);
    }
    match req.reqtype() {
        Ok(LunReqType::Create) => lun::create(req),
        Ok(LunReqType::Remove) => lun::remove(req),
        Ok(LunReqType::Modify) => lun::modify(req),
        Err(raw) => req.set_error(format_args!("unknown LUN request type {raw}")),
    }
    let mut be = lock();
    be.requests = be.requests.saturating_sub(1);
}

/// CTL has freed its side of a LUN (`lun_shutdown`): a remove request
/// waiting for it is woken; if none is (it was interrupted), the LUN goes
/// now.  CTL's reference is released here.
pub fn lun_shutdown(lun: LunRef) {
    // The device is free for another LUN, the pools' memory goes back and
    // the periph reference is released, without the lock.
    lun.lun().close_device();
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
    // Every reference held here goes before the lock: once a waiting remove
    // request runs on, or an unload finds no LUN, nothing of this call is
    // left to run but its return.  With the device closed, freeing the LUN
    // takes no other lock.
    drop(released);
    drop(lun);
    drop(be);
}

/// A ctlpass periph was invalidated (its device lost) or created (a device
/// arrived): the LUNs are looked at from a task.  Never sleeps.
pub fn devices_changed() {
    DEVICES_TASK.enqueue();
}

/// What a LUN needs after a device came or went.
enum Change {
    /// Its device (named so) is lost; the LUN goes offline, or is removed
    /// (and then comes with its sysctl node).
    Lost(LunRef, lun::Name, LostPolicy, Option<SysctlCtx<LunRef>>),
    /// It is offline, its old periph released: its device may be back
    /// (and is reset on CTL's task set clears, or not).
    Offline(LunRef, bool),
}

/// The next LUN whose device came or went after `done` of them were looked
/// at; a lost one is marked offline (or being removed) here.
fn next_change(skip: &mut u32) -> Option<Change> {
    let mut be = lock();
    let mut seen = 0u32;
    let entry = be.luns.find_mut(|e| {
        let wanted =
            !e.removing && (e.offline && e.lun.lun().device().is_released() || !e.offline && lun::lost(&e.lun));
        if wanted {
            seen = seen.saturating_add(1);
        }
        wanted && seen > *skip
    })?;
    if entry.offline {
        *skip = skip.saturating_add(1);
        return Some(Change::Offline(entry.lun.clone(), entry.reset_device));
    }
    let node = match entry.lost {
        LostPolicy::Offline => {
            entry.offline = true;
            None
        }
        LostPolicy::Remove => {
            entry.removing = true;
            entry.sysctl.take()
        }
    };
    Some(Change::Lost(entry.lun.clone(), entry.place.name, entry.lost, node))
}

/// The task behind [`devices_changed`]: takes offline (or removes) the LUNs
/// whose device is lost, letting their periph go so that CAM can free it,
/// and binds offline LUNs to their device when it is back.
fn devices_changed_task() {
    let mut skip = 0;
    while let Some(change) = next_change(&mut skip) {
        match change {
            Change::Lost(lun, name, lost, node) => {
                let remove = lost == LostPolicy::Remove;
                printf!(
                    "ctlpass: LUN {}: {} is lost; {}\n",
                    lun.id(),
                    name.as_str(),
                    if remove {
                        "removing the LUN"
                    } else {
                        "offline until it returns"
                    }
                );
                if remove {
                    drop(node);
                    lun.remove();
                } else {
                    lun.media_event(MediaEvent::Gone);
                }
                lun.lun().lose_device();
            }
            Change::Offline(lun, reset_device) => {
                if let Some(place) = lun::rebind(&lun, reset_device) {
                    if let Some(e) = lock().entry(&lun) {
                        e.offline = false;
                        e.place = place;
                    }
                    skip = skip.saturating_sub(1);
                }
            }
        }
    }
}

/// `lun_info`: the LUN's device, for `ctladm devlist -v`.  Called with
/// CTL's mutexes held: it must not sleep or lock.
pub fn lun_info(lun: &Lun, sb: &mut Sbuf) {
    // CTL holds its own mutexes: the backend's is taken after them, and
    // never held while calling into CTL.
    let place = lock()
        .luns
        .find_mut(|e| core::ptr::eq(e.lun.lun(), lun))
        .map(|e| e.place);
    lun.info(place.as_ref(), sb);
}

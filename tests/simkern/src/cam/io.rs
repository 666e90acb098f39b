//! CCBs and the commands they carry (sys/cam/cam_xpt.c, cam_periph.c):
//! allocation against the device's openings (`xpt_schedule`, and
//! `xpt_run_allocq` calling the periph's start routine), immediate CCBs
//! (`cam_periph_getccb`, `cam_periph_runccb`, which sends an `XPT_SCSI_IO`
//! through the device's SIM like any other and sleeps until
//! `cam_periph_done` wakes it), queued `XPT_SCSI_IO` handed to the
//! device's SIM (`sim.rs`), completion as the done threads do it (the
//! callback without the periph lock for `CAM_UNLOCKED`), and
//! `cam_release_devq`, which restarts a thawed queue.
//!
//! Simplification: `cam_periph_getccb` does not wait for an opening (the
//! synchronous probes ctlpass sends run beside its queued commands).

use std::ffi::c_int;
use std::sync::Arc;

use super::{Device, cam, path_ref, periph_device, xpt_action, xpt_setup_ccb};
use crate::lock::{_sleep, wakeup};
use crate::{kpanic, lock, sys};

/// `CAM_PRIORITY_NONE`, `(uint32_t)-1`, which bindgen cannot evaluate.
pub(super) const CAM_PRIORITY_NONE: u32 = u32::MAX;

/// A CCB as the simulated XPT allocates it: the CCB, then the periph it
/// was allocated for (FreeBSD finds it through the path).
#[repr(C)]
struct SimCcb {
    ccb: sys::ccb,
    periph: *mut sys::cam_periph,
}

/// Allocates a zeroed CCB (`M_CAMCCB`, `M_NOWAIT`) for `periph`, which
/// may be NULL (`xpt_alloc_ccb_nowait`).
fn alloc_ccb(periph: *mut sys::cam_periph) -> *mut sys::ccb {
    // SAFETY: a registered malloc type.
    let sim_ccb = unsafe {
        crate::malloc::simkern_malloc(
            std::mem::size_of::<SimCcb>(),
            cam().ccb_type as *mut sys::malloc_type,
            (sys::M_NOWAIT | sys::M_ZERO) as c_int,
        )
    }
    .cast::<SimCcb>();
    if sim_ccb.is_null() {
        kpanic!("xpt_get_ccb: out of CCBs");
    }
    // SAFETY: fresh memory for a SimCcb.
    unsafe {
        (*sim_ccb).periph = periph;
        &raw mut (*sim_ccb).ccb
    }
}

/// `xpt_alloc_ccb_nowait`: a zeroed CCB that belongs to no periph.
pub(super) fn alloc_ccb_nowait() -> *mut sys::ccb {
    alloc_ccb(std::ptr::null_mut())
}

/// `xpt_alloc_ccb_nowait`, as the module calls it.
#[unsafe(no_mangle)]
pub extern "C" fn xpt_alloc_ccb_nowait() -> *mut sys::ccb {
    alloc_ccb_nowait()
}

/// `xpt_free_ccb`, as the module calls it.
///
/// # Safety
///
/// `ccb` came from `xpt_alloc_ccb_nowait` and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xpt_free_ccb(ccb: *mut sys::ccb) {
    // SAFETY: the caller's contract.
    unsafe { free_ccb(ccb) }
}

/// `xpt_free_ccb`.
///
/// # Safety
///
/// `ccb` came from [`alloc_ccb_nowait`] and is not used afterwards.
pub(super) unsafe fn free_ccb(ccb: *mut sys::ccb) {
    // SAFETY: the caller's contract; allocated with this type.
    unsafe { crate::malloc::simkern_free(ccb.cast(), cam().ccb_type as *mut sys::malloc_type) };
}

/// Allocates a CCB for `periph` (xpt_get_ccb_nowait): counted in the
/// periph's `periph_allocated`, set up on its path.
///
/// # Safety
///
/// `periph` is live and its lock held.
unsafe fn get_ccb(periph: *mut sys::cam_periph, priority: u32) -> *mut sys::ccb {
    let ccb = alloc_ccb(periph);
    // SAFETY: a fresh CCB; the caller's contract for periph.
    unsafe {
        (*periph).periph_allocated += 1;
        xpt_setup_ccb(&raw mut (*ccb).ccb_h, (*periph).path, priority);
    }
    ccb
}

/// The periph a CCB was allocated for.
///
/// # Safety
///
/// `ccb` came from `get_ccb`.
unsafe fn ccb_periph(ccb: *mut sys::ccb) -> *mut sys::cam_periph {
    // SAFETY: the CCB is the first field of a SimCcb.
    unsafe { (*ccb.cast::<SimCcb>()).periph }
}

/// `xpt_schedule`: the periph wants a CCB at `priority`; its start routine
/// gets one now if the device has an opening, or when one frees up.
///
/// # Safety
///
/// `periph` is live and its lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xpt_schedule(periph: *mut sys::cam_periph, priority: u32) {
    if !periph_device(periph).mtx.owned() {
        kpanic!("xpt_schedule: periph lock not held");
    }
    // SAFETY: the caller's contract.
    unsafe {
        if priority < (*periph).scheduled_priority {
            (*periph).scheduled_priority = priority;
            run_allocq(periph);
        }
    }
}

/// `xpt_run_allocq`: while the periph is scheduled and under the device's
/// openings, allocate a CCB and call the start routine (which may schedule
/// again).  Re-entered calls return at once.
///
/// # Safety
///
/// `periph` is live and its lock held.
unsafe fn run_allocq(periph: *mut sys::cam_periph) {
    let device = periph_device(periph);
    // SAFETY: the caller's contract; the start routine is the driver's, called
    // with the lock held and a CCB allocated for the periph.
    unsafe {
        let p = periph;
        if (*p).periph_allocating != 0 {
            return;
        }
        super::cam_periph_doacquire(p);
        (*p).periph_allocating = 1;
        loop {
            let prio = (*p).scheduled_priority.min((*p).immediate_priority);
            if prio == CAM_PRIORITY_NONE || i64::from((*p).periph_allocated) >= i64::from(device.sim.openings()) {
                break;
            }
            let ccb = get_ccb(p, prio);
            (*p).scheduled_priority = CAM_PRIORITY_NONE;
            match (*p).periph_start {
                Some(start) => start(p, ccb),
                None => kpanic!("xpt_run_allocq: a periph without a start routine was scheduled"),
            }
        }
        (*p).periph_allocating = 0;
        super::cam_periph_release_locked(p);
    }
}

/// Runs the allocation queue of every periph of `device` (after its
/// openings grew), each with the periph lock held.
pub(super) fn run_allocqs(device: &Arc<Device>) {
    let _g = device.mtx.lock();
    let periphs: Vec<usize> = device.state().periphs.clone();
    for p in periphs {
        // SAFETY: periphs on the device's list are live; their lock (the
        // device's) is held.
        unsafe { run_allocq(p as *mut sys::cam_periph) };
    }
}

/// `cam_periph_getccb`: a CCB for an immediate request, set up on the
/// periph's path.  The caller holds the periph lock.
///
/// # Safety
///
/// `periph` is live and its lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_getccb(periph: *mut sys::cam_periph, priority: u32) -> *mut sys::ccb {
    if !periph_device(periph).mtx.owned() {
        kpanic!("cam_periph_getccb: periph lock not held");
    }
    // SAFETY: the caller's contract.
    unsafe { get_ccb(periph, priority) }
}

/// `cam_periph_runccb`: runs a CCB and sleeps until it completes (the
/// periph lock is released meanwhile).  An `XPT_SCSI_IO` goes through the
/// device's SIM like any queued CCB, its callback replaced by
/// `cam_periph_done`; the error routine, if any, runs on a failure and may
/// ask for another round (`ERESTART`).  A queue the command froze is
/// released.  With no error routine it returns 0 whatever happened; the
/// caller reads the CCB's status.
///
/// # Safety
///
/// `ccb` comes from `cam_periph_getccb`; the periph lock is held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_runccb(
    ccb: *mut sys::ccb,
    error_routine: Option<unsafe extern "C" fn(*mut sys::ccb, sys::cam_flags, u32) -> c_int>,
    camflags: sys::cam_flags,
    sense_flags: u32,
    _ds: *mut sys::devstat,
) -> c_int {
    // SAFETY: the caller's contract.  The header is read and written
    // through this pointer only while the CCB is not with the SIM.
    let h = unsafe { &raw mut (*ccb).ccb_h };
    // SAFETY: as above.
    let (path, flags, func_code) = unsafe { ((*h).path, (*h).flags, (*h).func_code) };
    let device = path_ref(path).device.clone();
    if !device.mtx.owned() {
        kpanic!("cam_periph_runccb: periph lock not held");
    }
    if flags & sys::CAM_UNLOCKED != 0 {
        kpanic!("cam_periph_runccb: CAM_UNLOCKED set on a CCB run synchronously");
    }
    lock::assert_may_sleep_holding(device.mtx.as_ptr(), "cam_periph_runccb");
    // SAFETY: the CCB is ours here (before xpt_action, and after ccb_wait).
    let failed = move || unsafe { (*h).status & sys::CAM_STATUS_MASK != sys::CAM_REQ_CMP };
    let mut error = 0;
    if func_code == sys::XPT_SCSI_IO {
        if super::sim::in_sim_thread() {
            kpanic!("cam_periph_runccb: called from a CCB completion (the SIM would wait for itself)");
        }
        // SAFETY: a set-up CCB on a valid path, handed to the XPT.
        unsafe {
            (*h).cbfcnp = Some(cam_periph_done);
            xpt_action(ccb);
        }
        loop {
            // SAFETY: the CCB was queued; the device lock is held.
            unsafe { ccb_wait(&device, ccb) };
            error = match error_routine {
                Some(routine) if failed() => {
                    // SAFETY: the CCB is ours; the caller's error routine,
                    // which may queue it again (ERESTART).
                    unsafe {
                        (*h).cbfcnp = Some(cam_periph_done);
                        routine(ccb, camflags, sense_flags)
                    }
                }
                _ => 0,
            };
            if error != sys::ERESTART {
                break;
            }
        }
    } else {
        // SAFETY: an immediate CCB.
        unsafe { xpt_action(ccb) };
        if let Some(routine) = error_routine
            && failed()
        {
            // SAFETY: the caller's error routine.
            error = unsafe { routine(ccb, camflags, sense_flags) };
        }
    }
    // SAFETY: the CCB is ours.
    unsafe {
        if (*h).status & sys::CAM_DEV_QFRZN != 0 {
            cam_release_devq(path, 0, 0, 0, 0);
            (*h).status &= !sys::CAM_DEV_QFRZN;
        }
    }
    error
}

/// `cam_periph_done`: the callback of a CCB run by `cam_periph_runccb`,
/// called with the periph lock held; it wakes the sleeper.
unsafe extern "C" fn cam_periph_done(_periph: *mut sys::cam_periph, ccb: *mut sys::ccb) {
    // SAFETY: a completed CCB its issuer sleeps on.
    unsafe {
        (*ccb).ccb_h.cbfcnp = None;
        wakeup((&raw const (*ccb).ccb_h.cbfcnp).cast());
    }
}

/// `cam_periph_ccbwait`: sleeps (releasing the periph lock) until
/// `cam_periph_done` has run.
///
/// # Safety
///
/// `ccb` was queued by `cam_periph_runccb`; the device lock is held.
unsafe fn ccb_wait(device: &Device, ccb: *mut sys::ccb) {
    // SAFETY: the callback field is written by cam_periph_done under the
    // device lock, which is held here between sleeps.
    while unsafe { (*ccb).ccb_h.cbfcnp.is_some() } {
        // SAFETY: the device lock is held, as the interlock; the wait
        // message is static.
        unsafe {
            _sleep(
                (&raw const (*ccb).ccb_h.cbfcnp).cast(),
                &raw mut (*device.mtx.as_ptr()).lock_object,
                0,
                c"cbwait".as_ptr(),
                0,
                0,
                0,
            )
        };
    }
}

/// `xpt_release_ccb`: returns a CCB (the periph lock must be held); the
/// freed opening may start the periph again.
///
/// # Safety
///
/// `ccb` came from the XPT and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xpt_release_ccb(ccb: *mut sys::ccb) {
    // SAFETY: the caller's contract.
    let periph = unsafe { ccb_periph(ccb) };
    if !periph_device(periph).mtx.owned() {
        kpanic!("xpt_release_ccb: periph lock not held");
    }
    // SAFETY: allocated by get_ccb with this type, for this live periph
    // (CCBs of a periph keep it from being freed only by the driver's own
    // references, as in FreeBSD).
    unsafe {
        crate::malloc::simkern_free(ccb.cast(), cam().ccb_type as *mut sys::malloc_type);
        (*periph).periph_allocated -= 1;
        run_allocq(periph);
    }
}

/// Queues an `XPT_SCSI_IO` for the device's SIM (xpt_action of a queued
/// CCB): it starts after the device's earlier commands, once its queue is
/// not frozen.
pub(super) fn queue_scsi(device: &Arc<Device>, ccb: *mut sys::ccb) {
    device.sim.queue(ccb);
}

/// The done thread's part of a completion: the periph's callback, with the
/// periph lock held unless the CCB says `CAM_UNLOCKED`.
///
/// # Safety
///
/// `ccb` is a completed queued CCB with a callback, allocated by the XPT.
pub(super) unsafe fn done(ccb: *mut sys::ccb) {
    // SAFETY: the caller's contract.
    unsafe {
        let h = &(*ccb).ccb_h;
        // A CCB allocated for no periph reports to its path's, as
        // xpt_done_process calls `cbfcnp(ccb_h->path->periph, ccb)`.
        let periph = match ccb_periph(ccb) {
            p if p.is_null() => path_ref(h.path).periph,
            p => p,
        };
        let Some(cb) = h.cbfcnp else {
            kpanic!("xpt_done: a queued CCB without a completion callback")
        };
        if h.flags & sys::CAM_UNLOCKED != 0 {
            cb(periph, ccb);
        } else {
            let device = path_ref(h.path).device.clone();
            let _g = device.mtx.lock();
            cb(periph, ccb);
        }
    }
}

/// `cam_release_devq`: thaws the device queue once (or only reports how
/// frozen it is, with `getcount_only`); returns the freeze count.  A
/// thawed queue with commands waiting runs again.
#[unsafe(no_mangle)]
pub extern "C" fn cam_release_devq(
    path: *mut sys::cam_path,
    _relsim_flags: u32,
    _opening_reduction: u32,
    _arg: u32,
    getcount_only: c_int,
) -> u32 {
    path_ref(path).device.sim.release(getcount_only != 0)
}

/// How many times the queue of the device at `path_id:target:lun` is
/// frozen (0 when every freeze was released).
pub fn frozen(path_id: u32, target: u32, lun: u64) -> u32 {
    let cam = cam();
    let st = cam.state();
    st.devices
        .iter()
        .find(|d| d.path_id == path_id && d.target == target && d.lun == lun)
        .map_or(0, |d| d.sim.frozen())
}

//! CCBs and the commands they carry (sys/cam/cam_xpt.c, cam_periph.c):
//! allocation against the device's openings (`xpt_schedule`, and
//! `xpt_run_allocq` calling the periph's start routine), immediate CCBs
//! (`cam_periph_getccb`, `cam_periph_runccb`), queued `XPT_SCSI_IO` run in
//! order by the device's SIM thread, completion as `xpt_done` and the done
//! threads do it (the queue frozen on error, the callback without the
//! periph lock for `CAM_UNLOCKED`), and `cam_release_devq`, which restarts
//! a thawed queue.
//!
//! Simplification: `cam_periph_getccb` does not wait for an opening (the
//! synchronous probes ctlpass sends run beside its queued commands).

use std::ffi::c_int;
use std::sync::Arc;

use super::{Device, cam, path_ref, periph_device, xpt_action, xpt_setup_ccb};
use crate::devices::{Command, GOOD};
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

/// Allocates a CCB for `periph` (xpt_get_ccb_nowait): counted in the
/// periph's `periph_allocated`, set up on its path.
///
/// # Safety
///
/// `periph` is live and its lock held.
unsafe fn get_ccb(periph: *mut sys::cam_periph, priority: u32) -> *mut sys::ccb {
    let cam = cam();
    // SAFETY: a registered malloc type.
    let sim_ccb = unsafe {
        crate::malloc::simkern_malloc(
            std::mem::size_of::<SimCcb>(),
            cam.ccb_type as *mut sys::malloc_type,
            (sys::M_NOWAIT | sys::M_ZERO) as c_int,
        )
    }
    .cast::<SimCcb>();
    if sim_ccb.is_null() {
        kpanic!("xpt_get_ccb: out of CCBs");
    }
    // SAFETY: fresh memory for a SimCcb; the caller's contract for periph.
    unsafe {
        (*sim_ccb).periph = periph;
        (*periph).periph_allocated += 1;
        let ccb = &raw mut (*sim_ccb).ccb;
        xpt_setup_ccb(&raw mut (*ccb).ccb_h, (*periph).path, priority);
        ccb
    }
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
            if prio == CAM_PRIORITY_NONE || i64::from((*p).periph_allocated) >= i64::from(device.state().openings) {
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
/// periph lock is released meanwhile), then releases the device queue if
/// the CCB froze it.  With no error routine it returns 0 whatever
/// happened; the caller reads the CCB's status.
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
    // SAFETY: the caller's contract.
    let h = unsafe { &mut (*ccb).ccb_h };
    let device = path_ref(h.path).device.clone();
    if !device.mtx.owned() {
        kpanic!("cam_periph_runccb: periph lock not held");
    }
    if h.flags & sys::CAM_UNLOCKED != 0 {
        kpanic!("cam_periph_runccb: CAM_UNLOCKED set on a CCB run synchronously");
    }
    lock::assert_may_sleep_holding(device.mtx.as_ptr(), "cam_periph_runccb");
    match h.func_code {
        sys::XPT_SCSI_IO => {
            device.mtx.unlock_raw();
            // SAFETY: an XPT_SCSI_IO CCB is a ccb_scsiio.
            execute_scsi(&device, unsafe { &mut (*ccb).csio });
            device.mtx.lock_raw();
        }
        // SAFETY: an immediate CCB.
        _ => unsafe { xpt_action(ccb) },
    }
    freeze_on_error(&device, h);
    let error = match error_routine {
        // SAFETY: the caller's error routine.
        Some(routine) => unsafe { routine(ccb, camflags, sense_flags) },
        None => 0,
    };
    if h.status & sys::CAM_DEV_QFRZN != 0 {
        cam_release_devq(h.path, 0, 0, 0, 0);
        h.status &= !sys::CAM_DEV_QFRZN;
    }
    error
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

/// Queues an `XPT_SCSI_IO` for the device's SIM thread (xpt_action of a
/// queued CCB): it runs after the device's earlier commands, once its queue
/// is not frozen.
pub(super) fn queue_scsi(device: &Arc<Device>, ccb: *mut sys::ccb) {
    // SAFETY: a CCB the periph set up.
    unsafe { (*ccb).ccb_h.status = sys::CAM_REQ_INPROG };
    device.state().sim_queue.push_back(ccb as usize);
    kick(device);
}

/// Starts the device's SIM thread if it has work and is not frozen.
fn kick(device: &Arc<Device>) {
    let mut st = device.state();
    if st.sim_running || st.frozen > 0 || st.sim_queue.is_empty() {
        return;
    }
    st.sim_running = true;
    let device = device.clone();
    std::thread::Builder::new()
        .name(format!("sim {}:{}:{}", device.path_id, device.target, device.lun))
        .spawn(move || sim_thread(&device))
        .unwrap_or_else(|e| kpanic!("cannot start a SIM thread: {e}"));
}

/// The device's SIM: runs queued commands in order until the queue is
/// empty or frozen, completing each as xpt_done and the done thread do.
fn sim_thread(device: &Arc<Device>) {
    loop {
        let next = {
            let mut st = device.state();
            let next = if st.frozen > 0 { None } else { st.sim_queue.pop_front() };
            if next.is_none() {
                st.sim_running = false;
            }
            next
        };
        let Some(ccb) = next else { return };
        let ccb = ccb as *mut sys::ccb;
        // SAFETY: a queued XPT_SCSI_IO CCB, owned by the XPT until done.
        unsafe {
            execute_scsi(device, &mut (*ccb).csio);
            freeze_on_error(device, &mut (*ccb).ccb_h);
            done(ccb);
        }
    }
}

/// The done thread's part of a completion: the periph's callback, with the
/// periph lock held unless the CCB says `CAM_UNLOCKED`.
///
/// # Safety
///
/// `ccb` is a completed queued CCB with a callback.
unsafe fn done(ccb: *mut sys::ccb) {
    // SAFETY: the caller's contract.
    unsafe {
        let h = &(*ccb).ccb_h;
        let periph = ccb_periph(ccb);
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
    let device = &path_ref(path).device;
    let count = {
        let mut st = device.state();
        if getcount_only == 0 {
            if st.frozen == 0 {
                kpanic!("cam_release_devq: device queue not frozen");
            }
            st.frozen -= 1;
        }
        st.frozen
    };
    kick(device);
    count
}

/// Carries out an `XPT_SCSI_IO` on the emulated device: the CDB, the data
/// (`CAM_DATA_VADDR`), then status, autosense and residual as a SIM
/// reports them.
fn execute_scsi(device: &Device, csio: &mut sys::ccb_scsiio) {
    let flags = csio.ccb_h.flags;
    let cdb_len = usize::from(csio.cdb_len);
    // SAFETY: CAM_CDB_POINTER selects the pointer member, which then points
    // at cdb_len bytes; otherwise the bytes are inline.
    let cdb: Vec<u8> = unsafe {
        if flags & sys::CAM_CDB_POINTER != 0 {
            std::slice::from_raw_parts(csio.cdb_io.cdb_ptr, cdb_len).to_vec()
        } else {
            csio.cdb_io.cdb_bytes.get(..cdb_len).unwrap_or(&[]).to_vec()
        }
    };
    if !device.state().present {
        csio.ccb_h.status = sys::CAM_DEV_NOT_THERE;
        return;
    }
    if flags & sys::CAM_DATA_MASK != sys::CAM_DATA_VADDR {
        kpanic!(
            "CAM: data type {:#x} not supported by the simulated SIM",
            flags & sys::CAM_DATA_MASK
        );
    }
    let len = csio.dxfer_len as usize;
    let dir = flags & sys::CAM_DIR_MASK;
    let buf: &mut [u8] = if len == 0 || dir == sys::CAM_DIR_NONE {
        &mut []
    } else {
        // SAFETY: a CCB's data pointer holds dxfer_len bytes.
        unsafe { std::slice::from_raw_parts_mut(csio.data_ptr, len) }
    };
    let emulated = device.state().emulated.clone();
    let outcome = if dir == sys::CAM_DIR_OUT {
        emulated.execute(Command {
            cdb: &cdb,
            data_out: buf,
            data_in: &mut [],
        })
    } else {
        emulated.execute(Command {
            cdb: &cdb,
            data_out: &[],
            data_in: buf,
        })
    };
    csio.scsi_status = outcome.status;
    csio.resid = (len - outcome.transferred.min(len)) as u32;
    if outcome.status == GOOD {
        csio.ccb_h.status = sys::CAM_REQ_CMP;
        return;
    }
    csio.ccb_h.status = sys::CAM_SCSI_STATUS_ERROR;
    if !outcome.sense.is_empty() && flags & sys::CAM_DIS_AUTOSENSE == 0 {
        let room = usize::from(csio.sense_len).min(std::mem::size_of_val(&csio.sense_data));
        let n = outcome.sense.len().min(room);
        // SAFETY: sense_data holds at least `room` bytes.
        unsafe { std::ptr::copy_nonoverlapping(outcome.sense.as_ptr(), (&raw mut csio.sense_data).cast(), n) };
        csio.sense_resid = (usize::from(csio.sense_len) - n) as u8;
        csio.ccb_h.status |= sys::CAM_AUTOSNS_VALID;
    }
}

/// What xpt_done does to a CCB that did not complete: freeze the
/// device's queue once and say so in the status.
fn freeze_on_error(device: &Device, h: &mut sys::ccb_hdr) {
    if h.status & sys::CAM_STATUS_MASK != sys::CAM_REQ_CMP && h.status & sys::CAM_DEV_QFRZN == 0 {
        device.state().frozen += 1;
        h.status |= sys::CAM_DEV_QFRZN;
    }
}

/// How many times the queue of the device at `path_id:target:lun` is
/// frozen (0 when every freeze was released).
pub fn frozen(path_id: u32, target: u32, lun: u64) -> u32 {
    let cam = cam();
    let st = cam.state();
    st.devices
        .iter()
        .find(|d| d.path_id == path_id && d.target == target && d.lun == lun)
        .map_or(0, |d| d.state().frozen)
}

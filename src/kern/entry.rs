//! The module's entry points: the functions the C shim's declarations
//! (kmod/ctlpass.h) name, turning the kernel's raw arguments into safe types
//! for `crate::backend` and `crate::periph`.

use core::ffi::{c_int, c_ulong, c_void};

use super::ctl::{CTL_LUN_REQ, Completion, CtlIo, LunReq, Sbuf, be_lun_of};
use super::errno::Errno;
use crate::{backend, periph, sys};

/// Module load, first of all (`SYSINIT` at `SI_SUB_LOCK`).
#[unsafe(no_mangle)]
pub extern "C" fn ctlpass_sysinit(_arg: *mut c_void) {
    periph::io::sysinit();
    backend::sysinit();
}

/// Module unload, last of all (`SYSUNINIT` at `SI_SUB_LOCK`).
#[unsafe(no_mangle)]
pub extern "C" fn ctlpass_sysuninit(_arg: *mut c_void) {
    backend::sysuninit();
    periph::io::sysuninit();
}

/// `ctl_backend_driver.init`, from `ctl_backend_register` at module load.
#[unsafe(no_mangle)]
pub extern "C" fn ctlpass_be_init() -> c_int {
    Errno::to_raw(backend::init())
}

/// `ctl_backend_driver.shutdown`, from `ctl_backend_deregister` at unload;
/// non-zero keeps the module loaded.
#[unsafe(no_mangle)]
pub extern "C" fn ctlpass_be_shutdown() -> c_int {
    Errno::to_raw(backend::shutdown())
}

/// # Safety
///
/// `io` is a SCSI I/O CTL hands the backend through the entry point
/// `completion` names.
unsafe fn submit(io: *mut sys::ctl_io, completion: Completion) -> c_int {
    // SAFETY: CTL hands the backend each SCSI I/O once, and it stays ours
    // until completed (the caller's contract).
    if let Some(io) = unsafe { CtlIo::from_ptr(io, completion) } {
        backend::io::submit(io);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// `ctl_backend_driver.data_submit`: READ, WRITE, VERIFY, COMPARE AND WRITE.
///
/// # Safety
///
/// Called by CTL with a SCSI I/O for a LUN of this backend.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctlpass_be_data_submit(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { submit(io, Completion::DataSubmit) }
}

/// `ctl_backend_driver.config_read`: GET LBA STATUS.
///
/// # Safety
///
/// Called by CTL with a SCSI I/O for a LUN of this backend.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctlpass_be_config_read(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { submit(io, Completion::ConfigRead) }
}

/// `ctl_backend_driver.config_write`: SYNCHRONIZE CACHE, WRITE SAME, UNMAP,
/// START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL.
///
/// # Safety
///
/// Called by CTL with a SCSI I/O for a LUN of this backend.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctlpass_be_config_write(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { submit(io, Completion::ConfigWrite) }
}

/// `ctl_backend_driver.ioctl`: CTL passes `CTL_LUN_REQ` requests naming this
/// backend, in the requesting process's context.
///
/// # Safety
///
/// For `CTL_LUN_REQ`, `addr` is NULL or a `struct ctl_lun_req` that is the
/// callee's for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctlpass_be_ioctl(
    _dev: *mut sys::cdev,
    cmd: c_ulong,
    addr: sys::caddr_t,
    _flag: c_int,
    _td: *mut sys::thread,
) -> c_int {
    if cmd != CTL_LUN_REQ || addr.is_null() {
        return Errno::ENOTTY.as_raw();
    }
    // SAFETY: for CTL_LUN_REQ, `addr` is the kernel copy of the caller's
    // struct ctl_lun_req, ours for the duration of the call.
    let mut req = unsafe { LunReq::from_ptr(addr.cast()) };
    backend::lun_request(&mut req);
    0
}

/// `ctl_backend_driver.lun_info`: extra XML elements for `ctladm devlist -v`.
/// Called with CTL's mutexes held, so it must not sleep.
///
/// # Safety
///
/// `be_lun` is NULL or a LUN of this backend (between `ctl_add_lun` and
/// `lun_shutdown`), `sb` NULL or an sbuf, both valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctlpass_be_lun_info(be_lun: *mut sys::ctl_be_lun, sb: *mut sys::sbuf) -> c_int {
    // SAFETY: the caller's contract.
    if let (false, Some(mut sb)) = (be_lun.is_null(), unsafe { Sbuf::from_ptr(sb) }) {
        // SAFETY: as above.
        backend::lun_info(unsafe { be_lun_of(be_lun) }.lun(), &mut sb);
    }
    0
}

/// `periph_driver.init`, from `periphdriver_register` at module load.
#[unsafe(no_mangle)]
pub extern "C" fn ctlpass_periph_init() {
    periph::init();
}

/// `periph_driver.deinit`, from `periphdriver_unregister` at unload;
/// non-zero keeps the module loaded.
#[unsafe(no_mangle)]
pub extern "C" fn ctlpass_periph_deinit() -> c_int {
    Errno::to_raw(periph::deinit())
}

/// Each entry point has the type its C prototype (kmod/ctlpass.h) declares.
const _: () = {
    let _: [unsafe extern "C" fn(*mut c_void); 4] = [
        sys::ctlpass_sysinit,
        ctlpass_sysinit,
        sys::ctlpass_sysuninit,
        ctlpass_sysuninit,
    ];
    let _: [unsafe extern "C" fn() -> c_int; 6] = [
        sys::ctlpass_be_init,
        ctlpass_be_init,
        sys::ctlpass_be_shutdown,
        ctlpass_be_shutdown,
        sys::ctlpass_periph_deinit,
        ctlpass_periph_deinit,
    ];
    let _: [unsafe extern "C" fn(*mut sys::ctl_io) -> c_int; 6] = [
        sys::ctlpass_be_data_submit,
        ctlpass_be_data_submit,
        sys::ctlpass_be_config_read,
        ctlpass_be_config_read,
        sys::ctlpass_be_config_write,
        ctlpass_be_config_write,
    ];
    let _: [unsafe extern "C" fn(*mut sys::cdev, c_ulong, sys::caddr_t, c_int, *mut sys::thread) -> c_int; 2] =
        [sys::ctlpass_be_ioctl, ctlpass_be_ioctl];
    let _: [unsafe extern "C" fn(*mut sys::ctl_be_lun, *mut sys::sbuf) -> c_int; 2] =
        [sys::ctlpass_be_lun_info, ctlpass_be_lun_info];
    let _: [unsafe extern "C" fn(); 2] = [sys::ctlpass_periph_init, ctlpass_periph_init];
};

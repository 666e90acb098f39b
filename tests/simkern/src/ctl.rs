//! CTL for the simulated kernel: backend registration (ctl_backend.c, with
//! its refusals and hazards) and the completion calls a backend makes.
//! CTL's own backends, `block` and `ramdisk`, are registered at boot.

use std::ffi::{CStr, c_int};
use std::sync::Mutex;

use crate::{console, kpanic, sys};

/// How the backend completed an I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// `ctl_data_submit_done`.
    DataSubmit,
    /// `ctl_config_read_done`.
    ConfigRead,
    /// `ctl_config_write_done`.
    ConfigWrite,
}

#[derive(Default)]
struct Ctl {
    /// Registered backends (softc->be_list), in registration order.
    backends: Vec<usize>,
    /// Backends the simulated kernel itself registered.
    builtin: Vec<usize>,
    /// I/Os completed by backends: (io, how).
    done: Vec<(usize, Done)>,
}

static CTL: Mutex<Option<Ctl>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Ctl) -> R) -> R {
    let mut guard = CTL.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Ctl::default))
}

fn name_of(be: *const sys::ctl_backend_driver) -> String {
    // SAFETY: a backend's name is a NUL-terminated array.
    unsafe { CStr::from_ptr((*be).name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Starts CTL with its built-in backends and `extra` stand-in backends
/// (for tests of name clashes).
pub(crate) fn boot(extra: &[&str]) {
    *CTL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Ctl::default());
    for name in ["block", "ramdisk"].iter().chain(extra) {
        // SAFETY: ctl_backend_driver is plain data.
        let mut be: Box<sys::ctl_backend_driver> = Box::new(unsafe { std::mem::zeroed() });
        for (dst, src) in be.name.iter_mut().zip(name.bytes()) {
            *dst = src as std::ffi::c_char;
        }
        let be = Box::into_raw(be);
        // SAFETY: a valid driver without init.
        if unsafe { ctl_backend_register(be) } != 0 {
            kpanic!("ctl: cannot register built-in backend {name}");
        }
        with(|c| c.builtin.push(be as usize));
    }
}

/// Stops CTL (after the module is unloaded).
pub(crate) fn shutdown() {
    for be in with(|c| std::mem::take(&mut c.builtin)) {
        with(|c| c.backends.retain(|&b| b != be));
        // SAFETY: allocated in boot and no longer registered.
        drop(unsafe { Box::from_raw(be as *mut sys::ctl_backend_driver) });
    }
}

/// The names of the registered backends.
pub fn backends() -> Vec<String> {
    with(|c| c.backends.iter().map(|&b| name_of(b as *const _)).collect())
}

/// The I/Os backends completed, in order.
pub fn completions() -> Vec<(usize, Done)> {
    with(|c| c.done.clone())
}

/// `ctl_backend_register`: -1 for a duplicate name; otherwise the backend's
/// `init` decides, and only then is it listed.
///
/// # Safety
///
/// `be` is a backend driver that outlives its registration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_backend_register(be: *mut sys::ctl_backend_driver) -> c_int {
    let name = name_of(be);
    if with(|c| c.backends.iter().any(|&b| name_of(b as *const _) == name)) {
        return -1;
    }
    // SAFETY: the caller's contract.
    if let Some(init) = unsafe { (*be).init } {
        // SAFETY: the backend's init.
        let error = unsafe { init() };
        if error != 0 {
            console::print(&format!("{name} backend init error: {error}\n"));
            return error;
        }
    }
    with(|c| c.backends.push(be as usize));
    0
}

/// `ctl_backend_deregister`: the backend's `shutdown` may refuse;
/// otherwise it is unlisted.  FreeBSD unlinks it with STAILQ_REMOVE, which
/// walks off the end of the list (a NULL dereference) for a backend that
/// was never registered; the simulated kernel panics there.
///
/// # Safety
///
/// `be` is a backend driver.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_backend_deregister(be: *mut sys::ctl_backend_driver) -> c_int {
    let name = name_of(be);
    // SAFETY: the caller's contract.
    if let Some(shutdown) = unsafe { (*be).shutdown } {
        // SAFETY: the backend's shutdown.
        let error = unsafe { shutdown() };
        if error != 0 {
            console::print(&format!("{name} backend shutdown error: {error}\n"));
            return error;
        }
    }
    if !with(|c| c.backends.contains(&(be as usize))) {
        kpanic!("page fault: ctl_backend_deregister: STAILQ_REMOVE of backend {name}, which is not registered");
    }
    with(|c| c.backends.retain(|&b| b != be as usize));
    0
}

/// `ctl_set_internal_failure`: CHECK CONDITION, HARDWARE ERROR, INTERNAL
/// TARGET FAILURE (0x44/0x00), fixed-format sense.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_internal_failure(ctsio: *mut sys::ctl_scsiio, _sks_valid: c_int, _retry_count: u16) {
    // SAFETY: the caller's contract.
    let io = unsafe { &mut *ctsio };
    let sense = (&raw mut io.sense_data).cast::<u8>();
    // SAFETY: scsi_sense_data holds at least 18 bytes.
    unsafe {
        std::ptr::write_bytes(sense, 0, std::mem::size_of_val(&io.sense_data));
        *sense = 0x70;
        *sense.add(2) = 0x04;
        *sense.add(7) = 10;
        *sense.add(12) = 0x44;
    }
    io.sense_len = 18;
    io.scsi_status = 0x02;
    io.io_hdr.status = sys::CTL_SCSI_ERROR | sys::CTL_AUTOSENSE;
}

fn complete(io: *mut sys::ctl_io, how: Done) {
    with(|c| c.done.push((io as usize, how)));
}

/// `ctl_data_submit_done`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_data_submit_done(io: *mut sys::ctl_io) {
    complete(io, Done::DataSubmit);
}

/// `ctl_config_read_done`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_config_read_done(io: *mut sys::ctl_io) {
    complete(io, Done::ConfigRead);
}

/// `ctl_config_write_done`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_config_write_done(io: *mut sys::ctl_io) {
    complete(io, Done::ConfigWrite);
}

/// Each simulated function has the type its C prototype declares.
const _: () = {
    let _: [unsafe extern "C" fn(*mut sys::ctl_backend_driver) -> c_int; 4] = [
        sys::ctl_backend_register,
        ctl_backend_register,
        sys::ctl_backend_deregister,
        ctl_backend_deregister,
    ];
    let _: [unsafe extern "C" fn(*mut sys::ctl_scsiio, c_int, u16); 2] =
        [sys::ctl_set_internal_failure, ctl_set_internal_failure];
    let _: [unsafe extern "C" fn(*mut sys::ctl_io); 6] = [
        sys::ctl_data_submit_done,
        ctl_data_submit_done,
        sys::ctl_config_read_done,
        ctl_config_read_done,
        sys::ctl_config_write_done,
        ctl_config_write_done,
    ];
};

//! CTL for the simulated kernel: backend registration (ctl_backend.c, with
//! its refusals and hazards), the LUNs backends add (ctl.c: numbering,
//! `ID_REQ`, removal deferred until the LUN's last I/O, `lun_shutdown`),
//! the LUN request and LUN list ioctls, and a frontend port through which
//! an initiator sends commands: CTL answers what it emulates itself
//! (`ctl_scsi`) and hands the rest to the backend, whose completion calls
//! end the command.  Each command must complete exactly once.
//! CTL's own backends, `block` and `ramdisk`, are registered at boot.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_int, c_void};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::ctl_scsi::{self, BackendLun, Disposition, Port};
use crate::devices::{BUSY, CHECK_CONDITION, GOOD};
use crate::sbuf::Sbuf;
use crate::{console, kpanic, lock, malloc, nv, sys};

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

/// CTL's limit on LUN numbers (`kern.cam.ctl.max_luns`, default 1024).
pub const MAX_LUNS: u32 = 1024;

/// How long an initiator waits for a command before the simulated kernel
/// declares it lost (a backend that never completes an I/O).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// What an initiator sees of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// SCSI status.
    pub status: u8,
    /// Sense data (for CHECK CONDITION).
    pub sense: Vec<u8>,
    /// DATA-IN bytes.
    pub data: Vec<u8>,
}

struct LunSlot {
    be_lun: usize,
    backend: usize,
    model: ctl_scsi::Lun,
    /// ctl_remove_lun was called: the LUN takes no new commands.
    removing: bool,
    /// Commands handed to the backend and not completed (the OOA queue).
    outstanding: u32,
}

type Completion = Arc<(Mutex<Option<Response>>, Condvar)>;

#[derive(Default)]
struct Ctl {
    /// Registered backends (softc->be_list), in registration order.
    backends: Vec<usize>,
    /// Backends the simulated kernel itself registered.
    builtin: Vec<usize>,
    /// I/Os completed by backends: (io, how).
    done: Vec<(usize, Done)>,
    /// LUNs by number.
    luns: BTreeMap<u32, LunSlot>,
    /// Commands in the backend, by I/O address: the LUN and who waits.
    pending: HashMap<usize, (u32, Completion)>,
    next_tag: u64,
    io_type: usize,
}

static CTL: Mutex<Option<Ctl>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Ctl) -> R) -> R {
    let mut guard = CTL.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Ctl::default))
}

/// The iSCSI target port initiators use in the simulator.
pub fn port() -> Port {
    Port {
        targ_port: 1,
        port_name: "iqn.2026-11.org.ctlpass:sim".into(),
        initiator_name: "iqn.2026-11.org.ctlpass:initiator".into(),
    }
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
    let io_type = malloc::define(c"ctlio") as usize;
    *CTL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Ctl {
        io_type,
        ..Ctl::default()
    });
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

/// `ctl_set_sense` (through `csrc/kern.c`, which takes its variadic
/// arguments): CHECK CONDITION with sense data in fixed format (CTL's
/// default: no LUN of the simulator sets D_SENSE), current or deferred.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn simkern_ctl_set_sense(
    ctsio: *mut sys::ctl_scsiio,
    current_error: c_int,
    sense_key: c_int,
    asc: c_int,
    ascq: c_int,
) {
    // SAFETY: the caller's contract.
    let io = unsafe { &mut *ctsio };
    let sense = (&raw mut io.sense_data).cast::<u8>();
    // SAFETY: scsi_sense_data holds at least 18 bytes.
    unsafe {
        std::ptr::write_bytes(sense, 0, std::mem::size_of_val(&io.sense_data));
        *sense = if current_error != 0 { 0x70 } else { 0x71 };
        *sense.add(2) = sense_key as u8 & 0x0f;
        *sense.add(7) = 10;
        *sense.add(12) = asc as u8;
        *sense.add(13) = ascq as u8;
    }
    io.sense_len = 18;
    io.scsi_status = CHECK_CONDITION;
    io.io_hdr.status = sys::CTL_SCSI_ERROR | sys::CTL_AUTOSENSE;
}

/// `ctl_set_success`: GOOD, no sense.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_success(ctsio: *mut sys::ctl_scsiio) {
    // SAFETY: the caller's contract.
    let io = unsafe { &mut *ctsio };
    io.scsi_status = GOOD;
    io.sense_len = 0;
    io.io_hdr.status = sys::CTL_SUCCESS;
}

/// `ctl_set_busy`: BUSY, no sense.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_busy(ctsio: *mut sys::ctl_scsiio) {
    // SAFETY: the caller's contract.
    let io = unsafe { &mut *ctsio };
    // SAFETY: plain data.
    io.sense_data = unsafe { std::mem::zeroed() };
    io.scsi_status = BUSY;
    io.sense_len = 0;
    io.io_hdr.status = sys::CTL_SCSI_ERROR;
}

/// A backend completed `io`: its initiator gets the status, the LUN's
/// outstanding count drops (a LUN being removed is shut down after its
/// last I/O), and completing an I/O twice, or one CTL never handed out,
/// stops the kernel.
fn complete(io: *mut sys::ctl_io, how: Done) {
    let (waiter, shutdown) = with(|c| {
        let Some((lun_id, waiter)) = c.pending.remove(&(io as usize)) else {
            kpanic!("{how:?}: I/O {io:p} is not outstanding (completed twice, or never submitted)");
        };
        c.done.push((io as usize, how));
        let mut shutdown = None;
        if let Some(slot) = c.luns.get_mut(&lun_id) {
            slot.outstanding -= 1;
            if slot.removing && slot.outstanding == 0 {
                shutdown = c.luns.remove(&lun_id).map(|s| s.be_lun);
            }
        }
        (waiter, shutdown)
    });
    // SAFETY: the I/O is live until its initiator frees it.
    let response = unsafe { response_of(io) };
    *waiter.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(response);
    waiter.1.notify_all();
    if let Some(be_lun) = shutdown {
        // SAFETY: a LUN removed with ctl_remove_lun whose last I/O is done.
        unsafe { shut_down(be_lun as *mut sys::ctl_be_lun) };
    }
}

/// What the initiator sees of a completed I/O.
///
/// # Safety
///
/// `io` is a live SCSI I/O.
unsafe fn response_of(io: *mut sys::ctl_io) -> Response {
    // SAFETY: the caller's contract.
    let s = unsafe { &(*io).scsiio };
    match s.io_hdr.status & sys::CTL_STATUS_MASK {
        sys::CTL_SUCCESS => Response {
            status: GOOD,
            sense: Vec::new(),
            data: Vec::new(),
        },
        sys::CTL_SCSI_ERROR => {
            let n = usize::from(s.sense_len).min(std::mem::size_of_val(&s.sense_data));
            // SAFETY: sense_data holds at least `n` bytes.
            let sense = unsafe { std::slice::from_raw_parts((&raw const s.sense_data).cast::<u8>(), n) }.to_vec();
            Response {
                status: s.scsi_status,
                sense,
                data: Vec::new(),
            }
        }
        other => kpanic!("a backend completed an I/O with status {other:#x}, which CTL cannot report"),
    }
}

/// `lun_shutdown`, as ctl_free_lun calls it: no lock held.
///
/// # Safety
///
/// `be_lun` is a LUN CTL no longer uses.
unsafe fn shut_down(be_lun: *mut sys::ctl_be_lun) {
    // SAFETY: the caller's contract.
    if let Some(f) = unsafe { (*be_lun).lun_shutdown } {
        // SAFETY: the backend's callback for its LUN.
        unsafe { f(be_lun) };
    }
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

// --- LUNs ---

/// The fields CTL reads from a backend's LUN.
///
/// # Safety
///
/// `be_lun` is valid.
unsafe fn backend_lun(be_lun: *const sys::ctl_be_lun) -> BackendLun {
    // SAFETY: the caller's contract.
    let b = unsafe { &*be_lun };
    BackendLun {
        lun_type: b.lun_type,
        flags: b.flags,
        maxlba: b.maxlba,
        blocksize: b.blocksize,
        pblockexp: b.pblockexp,
        pblockoff: b.pblockoff,
        ublockexp: b.ublockexp,
        ublockoff: b.ublockoff,
        atomicblock: b.atomicblock,
        opttxferlen: b.opttxferlen,
        serial_num: b.serial_num,
        device_id: b.device_id,
        options: if b.options.is_null() {
            Vec::new()
        } else {
            nv::pairs(b.options)
        },
    }
}

fn slot_of(c: &mut Ctl, be_lun: *const sys::ctl_be_lun) -> Option<&mut LunSlot> {
    c.luns.values_mut().find(|s| s.be_lun == be_lun as usize)
}

/// `ctl_add_lun`: synchronous.  The LUN number is `req_lun_id` with
/// `ID_REQ` (ENOSPC if taken or beyond the limit), else the lowest free;
/// CTL refuses types it does not serve (EINVAL).  It allocates with
/// M_WAITOK, so the caller must be able to sleep.
///
/// # Safety
///
/// `be_lun` is a filled-in LUN whose backend is registered; it stays valid
/// until its `lun_shutdown`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_add_lun(be_lun: *mut sys::ctl_be_lun) -> c_int {
    lock::assert_may_sleep("ctl_add_lun (M_WAITOK)");
    // SAFETY: the caller's contract.
    let be = unsafe { &mut *be_lun };
    // SAFETY: as above.
    let view = unsafe { backend_lun(be_lun) };
    let id = with(|c| {
        if be.flags & sys::CTL_LUN_FLAG_ID_REQ != 0 {
            (be.req_lun_id < MAX_LUNS && !c.luns.contains_key(&be.req_lun_id)).then_some(be.req_lun_id)
        } else {
            (0..MAX_LUNS).find(|n| !c.luns.contains_key(n))
        }
    });
    let Some(id) = id else { return sys::ENOSPC as c_int };
    let model = match ctl_scsi::Lun::add(id, &view) {
        Ok(m) => m,
        Err(e) => return e,
    };
    be.lun_id = id;
    be.ctl_lun = (id as usize + 1) as *mut c_void;
    with(|c| {
        c.luns.insert(
            id,
            LunSlot {
                be_lun: be_lun as usize,
                backend: be.be as usize,
                model,
                removing: false,
                outstanding: 0,
            },
        )
    });
    0
}

/// `ctl_remove_lun`: the LUN takes no new commands; it is shut down now
/// if no I/O is outstanding (before this returns), else after the last.
///
/// # Safety
///
/// `be_lun` was added with `ctl_add_lun`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_remove_lun(be_lun: *mut sys::ctl_be_lun) -> c_int {
    let now = with(|c| {
        let slot = slot_of(c, be_lun).unwrap_or_else(|| kpanic!("ctl_remove_lun: LUN {be_lun:p} is not CTL's"));
        slot.removing = true;
        let id = slot.model.id();
        (slot.outstanding == 0).then(|| c.luns.remove(&id))
    });
    if now.is_some() {
        // SAFETY: no I/O outstanding: CTL frees the LUN at once.
        unsafe { shut_down(be_lun) };
    }
    0
}

fn lun_event(be_lun: *mut sys::ctl_be_lun, what: &str, f: impl FnOnce(&mut ctl_scsi::Lun, &BackendLun)) -> c_int {
    // SAFETY: a LUN of a backend, valid while CTL holds it.
    let view = unsafe { backend_lun(be_lun) };
    with(|c| match slot_of(c, be_lun) {
        Some(slot) => {
            f(&mut slot.model, &view);
            0
        }
        None => kpanic!("{what}: LUN {be_lun:p} is not CTL's"),
    })
}

/// `ctl_lun_capacity_changed`: CAPACITY DATA HAS CHANGED for every
/// initiator.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_lun_capacity_changed(be_lun: *mut sys::ctl_be_lun) {
    lun_event(be_lun, "ctl_lun_capacity_changed", |m, v| m.capacity_changed(v));
}

/// `ctl_start_lun`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_start_lun(be_lun: *mut sys::ctl_be_lun) -> c_int {
    lun_event(be_lun, "ctl_start_lun", |m, _| m.start())
}

/// `ctl_stop_lun`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_stop_lun(be_lun: *mut sys::ctl_be_lun) -> c_int {
    lun_event(be_lun, "ctl_stop_lun", |m, _| m.stop())
}

/// `ctl_lun_no_media`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_lun_no_media(be_lun: *mut sys::ctl_be_lun) -> c_int {
    lun_event(be_lun, "ctl_lun_no_media", |m, _| m.no_media())
}

/// `ctl_lun_has_media`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_lun_has_media(be_lun: *mut sys::ctl_be_lun) -> c_int {
    lun_event(be_lun, "ctl_lun_has_media", |m, _| m.has_media())
}

/// `ctl_lun_ejected`.
#[unsafe(no_mangle)]
pub extern "C" fn ctl_lun_ejected(be_lun: *mut sys::ctl_be_lun) -> c_int {
    lun_event(be_lun, "ctl_lun_ejected", |m, _| m.ejected())
}

/// The numbers of the LUNs CTL holds, as `ctladm devlist` lists them: a
/// removed LUN stays until its last command completes.
pub fn luns() -> Vec<u32> {
    with(|c| c.luns.keys().copied().collect())
}

// --- the ioctls ---

/// What a `CTL_LUN_REQ` asks (ctladm create/remove/modify, or ctld).
#[derive(Clone, Debug)]
pub enum Request {
    /// Create a LUN.
    Create {
        /// `-t` (ctladm always sends a type: direct unless given).
        device_type: u8,
        /// `-s` in bytes (0: not given, or `auto`).
        size: u64,
        /// `-B` (0: not given).
        blocksize: u32,
        /// `-l`.
        lun_id: Option<u32>,
        /// `-S`.
        serial: Option<String>,
        /// `-d`.
        device_id: Option<String>,
    },
    /// Remove LUN `lun_id`.
    Remove {
        /// The LUN.
        lun_id: u32,
    },
    /// Modify LUN `lun_id`.
    Modify {
        /// The LUN.
        lun_id: u32,
        /// `-s` in bytes (0: re-read).
        size: u64,
    },
}

/// What came back: the request's status, error string and (for create)
/// the fields the backend wrote back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `ctl_lun_status`.
    pub status: u32,
    /// `error_str`.
    pub error: String,
    /// For create: device type, size in bytes, block size, LUN, serial
    /// number, device id.
    pub created: Option<(u8, u64, u32, u32, String, String)>,
}

fn c_array<const N: usize>(text: &str) -> [u8; N] {
    let mut a = [0u8; N];
    for (d, s) in a.iter_mut().zip(text.bytes().take(N - 1)) {
        *d = s;
    }
    a
}

fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The `CTL_LUN_REQ` ioctl as ctl.c handles it: the backend is found by
/// name, the options become an nvlist (empty if none), the backend's
/// ioctl runs, and the nvlist is destroyed.  Runs in the caller's thread
/// (the process's), which may sleep.
pub fn lun_request(backend: &str, request: &Request, options: &[(&str, &str)]) -> Reply {
    let be = with(|c| c.backends.iter().copied().find(|&b| name_of(b as *const _) == backend));
    let Some(be) = be.map(|b| b as *mut sys::ctl_backend_driver) else {
        return Reply {
            status: sys::CTL_LUN_ERROR,
            error: format!("Backend \"{backend}\" not found."),
            created: None,
        };
    };
    // SAFETY: struct ctl_lun_req is plain data.
    let mut req: sys::ctl_lun_req = unsafe { std::mem::zeroed() };
    for (d, s) in req.backend.iter_mut().zip(backend.bytes().take(31)) {
        *d = s as std::ffi::c_char;
    }
    match request {
        Request::Create {
            device_type,
            size,
            blocksize,
            lun_id,
            serial,
            device_id,
        } => {
            req.reqtype = sys::CTL_LUNREQ_CREATE;
            // SAFETY: the create member of a zeroed plain-data union.
            let c = unsafe { &mut req.reqdata.create };
            c.flags = sys::CTL_LUN_FLAG_DEV_TYPE;
            c.device_type = *device_type;
            c.lun_size_bytes = *size;
            c.blocksize_bytes = *blocksize;
            if let Some(id) = lun_id {
                c.flags |= sys::CTL_LUN_FLAG_ID_REQ;
                c.req_lun_id = *id;
            }
            if let Some(sn) = serial {
                c.flags |= sys::CTL_LUN_FLAG_SERIAL_NUM;
                c.serial_num = c_array(sn);
            }
            if let Some(id) = device_id {
                c.flags |= sys::CTL_LUN_FLAG_DEVID;
                c.device_id = c_array(id);
            }
        }
        Request::Remove { lun_id } => {
            req.reqtype = sys::CTL_LUNREQ_RM;
            req.reqdata.rm.lun_id = *lun_id;
        }
        Request::Modify { lun_id, size } => {
            req.reqtype = sys::CTL_LUNREQ_MODIFY;
            req.reqdata.modify.lun_id = *lun_id;
            req.reqdata.modify.lun_size_bytes = *size;
        }
    }
    req.args_nvl = nv::from_pairs(options.iter().copied());
    // SAFETY: the backend's ioctl with a CTL_LUN_REQ, as ctl_ioctl calls it.
    let rc = unsafe {
        match (*be).ioctl {
            Some(ioctl) => ioctl(
                std::ptr::null_mut(),
                sys::simkern_ctl_lun_req,
                (&raw mut req).cast(),
                0,
                std::ptr::null_mut(),
            ),
            None => sys::ENOTTY as c_int,
        }
    };
    // SAFETY: CTL destroys the unpacked arguments after the backend's ioctl.
    unsafe { nv::nvlist_destroy(req.args_nvl) };
    if rc != 0 {
        return Reply {
            status: sys::CTL_LUN_ERROR,
            error: format!("error issuing CTL_LUN_REQ ioctl: errno {rc}"),
            created: None,
        };
    }
    let created = (matches!(request, Request::Create { .. }) && req.status != sys::CTL_LUN_ERROR).then(|| {
        // SAFETY: a create request's union member.
        let c = unsafe { &req.reqdata.create };
        (
            c.device_type,
            c.lun_size_bytes,
            c.blocksize_bytes,
            c.req_lun_id,
            c_text(&c.serial_num),
            c_text(&c.device_id),
        )
    });
    Reply {
        status: req.status,
        error: c_text(&req.error_str.map(|b| b as u8)),
        created,
    }
}

/// Escapes CTL's way (ctl_sbuf_printf_esc): up to `size` bytes or the first
/// NUL, with `&`, `<` and `>` as entities.
fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take_while(|&&b| b != 0) {
        match b {
            b'&' => out.push_str("&amp;"),
            b'<' => out.push_str("&lt;"),
            b'>' => out.push_str("&gt;"),
            b => out.push(char::from(b)),
        }
    }
    out
}

/// The `CTL_LUN_LIST` XML, as ctl.c builds it: per LUN its backend, type,
/// size, block size, serial number and device id, then the backend's
/// `lun_info` (called with CTL's LUN lock held, so it must not sleep), then
/// one element per option.
pub fn lun_list_xml() -> String {
    let luns: Vec<(u32, usize, usize)> = with(|c| c.luns.iter().map(|(&id, s)| (id, s.be_lun, s.backend)).collect());
    let lun_lock = lock::KMutex::new(c"CTL LUN");
    let mut xml = String::from("<ctllunlist>\n");
    for (id, be_lun, backend) in luns {
        let (be_lun, backend) = (
            be_lun as *mut sys::ctl_be_lun,
            backend as *const sys::ctl_backend_driver,
        );
        // SAFETY: a LUN CTL holds, and its backend.
        let (b, view) = unsafe { (&*be_lun, backend_lun(be_lun)) };
        let size = if b.maxlba > 0 { b.maxlba + 1 } else { 0 };
        xml += &format!(
            "<lun id=\"{id}\">\n\t<backend_type>{}</backend_type>\n",
            name_of(backend)
        );
        xml += &format!(
            "\t<lun_type>{}</lun_type>\n\t<size>{size}</size>\n\t<blocksize>{}</blocksize>\n",
            b.lun_type, b.blocksize
        );
        xml += &format!("\t<serial_number>{}</serial_number>\n", escaped(&b.serial_num));
        xml += &format!("\t<device_id>{}</device_id>\n", escaped(&b.device_id));
        // SAFETY: the backend's callbacks for its LUN.
        if let Some(info) = unsafe { (*backend).lun_info } {
            let mut sb = Sbuf::new();
            let _held = lun_lock.lock();
            // SAFETY: as above, with an sbuf.
            unsafe { info(be_lun, sb.as_ptr()) };
            xml += sb.text();
        }
        for (name, value) in view.options {
            xml += &format!("\t<{name}>{value}</{name}>\n");
        }
        xml += "</lun>\n";
    }
    xml + "</ctllunlist>\n"
}

// --- the frontend: commands from an initiator ---

/// Sends one command from the simulator's initiator to LUN `lun_id` and
/// waits for its status, as an iSCSI initiator would.
pub fn command(lun_id: u32, cdb: &[u8], data_in_len: usize) -> Response {
    let mut data_in = vec![0u8; data_in_len];
    let port = port();
    let entered = with(|c| {
        let mapped: Vec<u32> = c.luns.iter().filter(|(_, s)| !s.removing).map(|(&id, _)| id).collect();
        let slot = c.luns.get_mut(&lun_id).filter(|s| !s.removing);
        let (be_lun, backend) = slot.as_ref().map_or((0, 0), |s| (s.be_lun, s.backend));
        let disposition = ctl_scsi::dispatch(slot.map(|s| &mut s.model), &port, 0, &mapped, cdb, &mut data_in);
        (disposition, be_lun, backend)
    });
    let (disposition, be_lun, backend) = entered;
    let (entry, lba_len) = match disposition {
        Disposition::Done(outcome) => {
            data_in.truncate(outcome.transferred);
            return Response {
                status: outcome.status,
                sense: outcome.sense,
                data: data_in,
            };
        }
        Disposition::DataSubmit { lba, len, flags, .. } => (Done::DataSubmit, Some((lba, len, flags))),
        Disposition::ConfigRead { lba, len } => (Done::ConfigRead, Some((lba, len, 0))),
        Disposition::ConfigWrite { lba_len, .. } => (Done::ConfigWrite, lba_len),
    };
    submit(
        lun_id,
        be_lun as *mut sys::ctl_be_lun,
        backend as *const sys::ctl_backend_driver,
        cdb,
        entry,
        lba_len,
    )
}

/// Hands a command to the backend, as CTL's worker thread does, and waits
/// for the backend to complete it.
fn submit(
    lun_id: u32,
    be_lun: *mut sys::ctl_be_lun,
    backend: *const sys::ctl_backend_driver,
    cdb: &[u8],
    entry: Done,
    lba_len: Option<(u64, u32, u32)>,
) -> Response {
    let io_type = with(|c| c.io_type) as *mut sys::malloc_type;
    // SAFETY: a registered malloc type; CTL's I/O pool does not sleep.
    let io = unsafe {
        malloc::simkern_malloc(
            std::mem::size_of::<sys::ctl_io>(),
            io_type,
            (sys::M_NOWAIT | sys::M_ZERO) as c_int,
        )
    }
    .cast::<sys::ctl_io>();
    // SAFETY: a fresh, zeroed I/O, ours until handed to the backend.
    unsafe {
        let s = &mut (*io).scsiio;
        s.io_hdr.io_type = sys::CTL_IO_SCSI;
        s.io_hdr.nexus = sys::ctl_nexus {
            initid: 0,
            targ_port: port().targ_port,
            targ_lun: lun_id,
            targ_mapped_lun: lun_id,
        };
        s.io_hdr.flags = sys::CTL_FLAG_DATA_NONE;
        s.io_hdr.status = sys::CTL_STATUS_NONE;
        s.io_hdr.ctl_private[sys::CTL_PRIV_LUN as usize].ptrs[0] = (lun_id as usize + 1) as *mut c_void;
        s.io_hdr.ctl_private[sys::CTL_PRIV_BACKEND_LUN as usize].ptrs[0] = be_lun.cast();
        if let Some((lba, len, flags)) = lba_len {
            let llf = (&raw mut s.io_hdr.ctl_private[sys::CTL_PRIV_LBA_LEN as usize]).cast::<sys::ctl_lba_len_flags>();
            *llf = sys::ctl_lba_len_flags { lba, len, flags };
        }
        let n = cdb.len().min(s.cdb.len());
        s.cdb[..n].copy_from_slice(&cdb[..n]);
        s.cdb_len = n as u8;
        s.tag_type = sys::CTL_TAG_SIMPLE;
        s.tag_num = with(|c| {
            c.next_tag += 1;
            c.next_tag
        });
    }
    let waiter: Completion = Arc::new((Mutex::new(None), Condvar::new()));
    with(|c| {
        c.pending.insert(io as usize, (lun_id, waiter.clone()));
        if let Some(slot) = c.luns.get_mut(&lun_id) {
            slot.outstanding += 1;
        }
    });
    // SAFETY: the backend's entry point for this kind of command, with an
    // I/O CTL would hand it.
    let rc = unsafe {
        match entry {
            Done::DataSubmit => (*backend).data_submit.map(|f| f(io)),
            Done::ConfigRead => (*backend).config_read.map(|f| f(io)),
            Done::ConfigWrite => (*backend).config_write.map(|f| f(io)),
        }
    };
    if rc != Some(sys::CTL_RETVAL_COMPLETE as c_int) {
        kpanic!("a backend returned {rc:?} from {entry:?}; CTL expects CTL_RETVAL_COMPLETE");
    }
    let (lock, cv) = &*waiter;
    let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
    while done.is_none() {
        let (guard, timeout) = cv
            .wait_timeout(done, COMMAND_DEADLINE)
            .unwrap_or_else(|e| e.into_inner());
        done = guard;
        if timeout.timed_out() && done.is_none() {
            kpanic!("an I/O on LUN {lun_id} was never completed by the backend ({entry:?})");
        }
    }
    let response = done.take().unwrap_or_else(|| kpanic!("lost completion"));
    drop(done);
    // SAFETY: completed; the initiator is done with it.
    unsafe { malloc::simkern_free(io.cast(), io_type) };
    response
}

/// Each simulated function has the type its C prototype declares.
const _: () = {
    let _: [unsafe extern "C" fn(*mut sys::ctl_backend_driver) -> c_int; 4] = [
        sys::ctl_backend_register,
        ctl_backend_register,
        sys::ctl_backend_deregister,
        ctl_backend_deregister,
    ];
    let _: [unsafe extern "C" fn(*mut sys::ctl_scsiio); 4] =
        [sys::ctl_set_success, ctl_set_success, sys::ctl_set_busy, ctl_set_busy];
    let _: [unsafe extern "C" fn(*mut sys::ctl_be_lun) -> c_int; 14] = [
        sys::ctl_add_lun,
        ctl_add_lun,
        sys::ctl_remove_lun,
        ctl_remove_lun,
        sys::ctl_start_lun,
        ctl_start_lun,
        sys::ctl_stop_lun,
        ctl_stop_lun,
        sys::ctl_lun_no_media,
        ctl_lun_no_media,
        sys::ctl_lun_has_media,
        ctl_lun_has_media,
        sys::ctl_lun_ejected,
        ctl_lun_ejected,
    ];
    let _: [unsafe extern "C" fn(*mut sys::ctl_be_lun); 2] = [sys::ctl_lun_capacity_changed, ctl_lun_capacity_changed];
    let _: [unsafe extern "C" fn(*mut sys::ctl_io); 6] = [
        sys::ctl_data_submit_done,
        ctl_data_submit_done,
        sys::ctl_config_read_done,
        ctl_config_read_done,
        sys::ctl_config_write_done,
        ctl_config_write_done,
    ];
};

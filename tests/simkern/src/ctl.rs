//! CTL for the simulated kernel: backend registration (ctl_backend.c, with
//! its refusals and hazards), the LUNs backends add (ctl.c: numbering,
//! `ID_REQ`, removal deferred until the LUN's last I/O, `lun_shutdown`),
//! the LUN request and LUN list ioctls, and CTL's I/O path as FreeBSD 15's
//! ctl.c runs it between a frontend port and a backend.
//!
//! The I/O path: the port ([`frontend`], an iSCSI target modelled on
//! cfiscsi) builds a `union ctl_io` for each command and queues it; CTL
//! runs its prechecks and its own command functions (`ctl_scsi`), answers
//! what it emulates, and hands the rest to the backend (`data_submit`,
//! `config_read`, `config_write`) with the arguments ctl.c puts in the I/O.
//! Data moves with `ctl_datamove`, which the port serves on its own
//! threads, and ends in `ctl_datamove_done` and the `be_move_done`
//! callback; CTL's own data-out commands (WRITE SAME's block, UNMAP's
//! list) move their data in through `ctl_config_move_done` before the
//! backend sees them.  The backend ends each I/O with
//! `ctl_data_submit_done`, `ctl_config_read_done` or
//! `ctl_config_write_done`, which continue it (`CTL_FLAG_IO_CONT`: COMPARE
//! AND WRITE's write, WRITE SAME's next piece), move config_read's data,
//! or complete it.  An I/O is completed exactly once; a backend that
//! completes one it does not hold stops the kernel.
//!
//! Followed (facts re-expressed, no code copied): `sys/cam/ctl/ctl.c` of
//! bsdjhb/freebsd at 0003f93699c1 (ctl_datamove, ctl_datamove_done,
//! ctl_datamove_done_process, ctl_config_move_done, ctl_data_submit_done,
//! ctl_config_write_done, ctl_config_read_done, ctl_cnw_cont,
//! ctl_write_same_cont, ctl_serseq_done, ctl_done and ctl_process_done),
//! `sys/cam/ctl/ctl_error.c` at 67b761ab7609 (the `ctl_set_*` helpers).
//!
//! CTL's own backends are registered at boot: `block` (a stand-in that
//! serves no LUN) and `ramdisk`, modelled on ctl_backend_ramdisk.c.

pub mod frontend;
pub mod ramdisk;

use std::collections::BTreeMap;
use std::ffi::{CStr, c_int, c_void};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};

pub use frontend::{
    Cmd, DatamoveStats, LunDatamoves, TaskAttr, datamove_stats, execute, reset_datamove_stats, run, run_with,
};

use crate::ctl_scsi::{self, BackendLun, Direction, Disposition, Port, Sense};
use crate::devices::{BUSY, CHECK_CONDITION, GOOD, Outcome};
use crate::fasthash::FastMap;
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

/// `port_status` ctl_datamove gives an aborted I/O.
pub const PORT_STATUS_ABORTED: u32 = 31337;

/// SCSI status TASK ABORTED (ctl_set_task_aborted).
pub const TASK_ABORTED: u8 = 0x40;

/// What an initiator sees of one command through [`command`] (the status,
/// the sense and the DATA-IN bytes; [`frontend::Response`] adds the
/// residual).
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
    /// Commands CTL took and has not completed (the OOA queue).
    outstanding: u32,
}

/// An I/O CTL took from the frontend and has not completed (on its LUN's
/// OOA queue).
struct Pending {
    lun: u32,
    /// Handed to the backend's entry point and not yet given back by a
    /// completion function.
    in_backend: bool,
}

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
    /// I/Os CTL holds, by address.
    pending: FastMap<usize, Pending>,
    /// The I/O pool's malloc type (`ctlio`).
    io_type: usize,
    /// M_CTL (`ctlmem`): the buffers CTL allocates itself.
    mem_type: usize,
    /// The port's initiators by id (`port->wwpn_iid`).
    initiators: Vec<InitiatorSlot>,
    /// A clock for [`InitiatorSlot::last_use`].
    uses: u64,
}

/// One initiator id of the port (`struct ctl_wwpn_iid`).
#[derive(Clone, Debug, Default)]
struct InitiatorSlot {
    /// Its name (the iSCSI initiator name and ISID), once it had one.
    name: Option<String>,
    /// Sessions using it.
    in_use: u32,
    /// When it was last released.
    last_use: u64,
}

/// `CTL_MAX_INIT_PER_PORT`: initiator ids per port.
const MAX_INIT_PER_PORT: usize = 2048;

static CTL: Mutex<Option<Ctl>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Ctl) -> R) -> R {
    let mut guard = CTL.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Ctl::default))
}

/// The iSCSI target port initiators use in the simulator.
pub fn port() -> Port {
    Port {
        targ_port: 1,
        port_name: "iqn.2026-11.org.freebsd.ctlpass:sim".into(),
        initiator_name: "iqn.2026-11.org.ctlpass:initiator".into(),
    }
}

fn name_of(be: *const sys::ctl_backend_driver) -> String {
    // SAFETY: a backend's name is a NUL-terminated array.
    unsafe { CStr::from_ptr((*be).name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The malloc type of CTL's I/Os (`ctlio`).
pub(crate) fn io_type() -> *mut sys::malloc_type {
    with(|c| c.io_type) as *mut sys::malloc_type
}

/// M_CTL (`ctlmem`).
fn mem_type() -> *mut sys::malloc_type {
    with(|c| c.mem_type) as *mut sys::malloc_type
}

/// Starts CTL with its built-in backends and `extra` stand-in backends
/// (for tests of name clashes), and the frontend's port.
pub(crate) fn boot(extra: &[&str]) {
    let io_type = malloc::define(c"ctlio") as usize;
    let mem_type = malloc::define(c"ctlmem") as usize;
    // Initiator id 0 is the simulator's own initiator ([`Cmd`]'s default),
    // always logged in.
    let builtin = InitiatorSlot {
        name: Some(port().initiator_name),
        in_use: 1,
        last_use: 0,
    };
    *CTL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Ctl {
        io_type,
        mem_type,
        initiators: vec![builtin],
        ..Ctl::default()
    });
    frontend::start_port();
    for name in ["block", "ramdisk"].iter().chain(extra) {
        let be = if *name == "ramdisk" {
            ramdisk::driver()
        } else {
            // SAFETY: ctl_backend_driver is plain data.
            let mut be: Box<sys::ctl_backend_driver> = Box::new(unsafe { std::mem::zeroed() });
            for (dst, src) in be.name.iter_mut().zip(name.bytes()) {
                *dst = src as std::ffi::c_char;
            }
            be
        };
        let be = Box::into_raw(be);
        // SAFETY: a valid driver; ramdisk's init only resets its state.
        if unsafe { ctl_backend_register(be) } != 0 {
            kpanic!("ctl: cannot register built-in backend {name}");
        }
        with(|c| c.builtin.push(be as usize));
    }
}

/// Stops CTL (after the module is unloaded): the ramdisk backend removes
/// the LUNs it has left, and the port's threads stop.
pub(crate) fn shutdown() {
    ramdisk::remove_all();
    for be in with(|c| std::mem::take(&mut c.builtin)) {
        with(|c| c.backends.retain(|&b| b != be));
        // SAFETY: allocated in boot and no longer registered.
        drop(unsafe { Box::from_raw(be as *mut sys::ctl_backend_driver) });
    }
    frontend::stop_port();
}

/// The names of the registered backends.
pub fn backends() -> Vec<String> {
    with(|c| c.backends.iter().map(|&b| name_of(b as *const _)).collect())
}

/// The I/Os backends completed, in order.
pub fn completions() -> Vec<(usize, Done)> {
    with(|c| c.done.clone())
}

/// How many I/Os CTL holds (on the OOA queues of all LUNs).
pub fn outstanding() -> usize {
    with(|c| c.pending.len())
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

/// Fills `ctsio` as ctl_set_sense does with `sense`: CHECK CONDITION,
/// fixed-format sense data, `CTL_SCSI_ERROR | CTL_AUTOSENSE`.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
unsafe fn set_sense(ctsio: *mut sys::ctl_scsiio, sense: &Sense) {
    let bytes = sense.fixed();
    // SAFETY: the caller's contract.
    unsafe { set_status(ctsio, CHECK_CONDITION, &bytes) };
}

/// A SCSI error status with `sense` (none for BUSY and the like).
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
unsafe fn set_status(ctsio: *mut sys::ctl_scsiio, status: u8, sense: &[u8]) {
    // SAFETY: the caller's contract.
    let io = unsafe { &mut *ctsio };
    let n = sense.len().min(std::mem::size_of_val(&io.sense_data));
    let dst = (&raw mut io.sense_data).cast::<u8>();
    // SAFETY: `n` bytes fit scsi_sense_data.
    unsafe {
        std::ptr::write_bytes(dst, 0, std::mem::size_of_val(&io.sense_data));
        std::ptr::copy_nonoverlapping(sense.as_ptr(), dst, n);
    }
    io.sense_len = n as u8;
    io.scsi_status = status;
    io.io_hdr.status = sys::CTL_SCSI_ERROR | if n > 0 { sys::CTL_AUTOSENSE } else { 0 };
}

/// The status of a command CTL answers itself (`ctl_scsi`'s outcome).
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
unsafe fn set_outcome(ctsio: *mut sys::ctl_scsiio, outcome: &Outcome) {
    if outcome.status == GOOD {
        // SAFETY: the caller's contract.
        unsafe { ctl_set_success(ctsio) };
    } else {
        // SAFETY: the caller's contract.
        unsafe { set_status(ctsio, outcome.status, &outcome.sense) };
    }
}

/// `ctl_set_invalid_field`: INVALID FIELD IN CDB (`command`) or IN
/// PARAMETER LIST, with a field pointer and bit pointer when valid.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_invalid_field(
    ctsio: *mut sys::ctl_scsiio,
    sks_valid: c_int,
    command: c_int,
    field: c_int,
    bit_valid: c_int,
    bit: c_int,
) {
    let bit = (bit_valid != 0).then_some(bit as u8);
    let mut sense = Sense::invalid_field(command != 0, field as u16, bit);
    if sks_valid == 0 {
        sense.sks = None;
    }
    // SAFETY: the caller's contract.
    unsafe { set_sense(ctsio, &sense) };
}

/// `ctl_set_invalid_field_ciu`: INVALID FIELD IN COMMAND INFORMATION UNIT
/// (0E/03), with the sense key FreeBSD's ctl_error.c gives it, ABORTED
/// COMMAND.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_invalid_field_ciu(ctsio: *mut sys::ctl_scsiio) {
    // SAFETY: the caller's contract.
    unsafe { set_sense(ctsio, &Sense::invalid_field_ciu()) };
}

/// `ctl_set_invalid_opcode`: INVALID COMMAND OPERATION CODE (20/00).
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_invalid_opcode(ctsio: *mut sys::ctl_scsiio) {
    // SAFETY: the caller's contract.
    unsafe { set_sense(ctsio, &Sense::invalid_opcode()) };
}

/// `ctl_set_internal_failure`: HARDWARE ERROR, INTERNAL TARGET FAILURE
/// (44/00), the retry count in the sense-key-specific bytes when valid.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_internal_failure(ctsio: *mut sys::ctl_scsiio, sks_valid: c_int, retry_count: u16) {
    // SAFETY: the caller's contract.
    unsafe { set_sense(ctsio, &Sense::internal_failure(sks_valid != 0, retry_count)) };
}

/// `ctl_set_lba_out_of_range`: LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00),
/// INFORMATION for a non-zero LBA.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_lba_out_of_range(ctsio: *mut sys::ctl_scsiio, lba: u64) {
    // SAFETY: the caller's contract.
    unsafe { set_sense(ctsio, &Sense::lba_out_of_range(lba)) };
}

/// `ctl_set_medium_error`: UNRECOVERED READ ERROR (11/00) for a read,
/// WRITE ERROR - AUTO REALLOCATION FAILED (0C/02) otherwise.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_medium_error(ctsio: *mut sys::ctl_scsiio, read: c_int) {
    let sense = if read != 0 {
        Sense::new(0x03, 0x11, 0x00)
    } else {
        Sense::new(0x03, 0x0C, 0x02)
    };
    // SAFETY: the caller's contract.
    unsafe { set_sense(ctsio, &sense) };
}

/// `ctl_set_aborted`: ABORTED COMMAND, SELECT OR RESELECT FAILURE (45/00).
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_aborted(ctsio: *mut sys::ctl_scsiio) {
    // SAFETY: the caller's contract.
    unsafe { set_sense(ctsio, &Sense::new(0x0B, 0x45, 0x00)) };
}

/// `ctl_set_task_aborted`: TASK ABORTED status, no sense,
/// `CTL_CMD_ABORTED`.
///
/// # Safety
///
/// `ctsio` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_set_task_aborted(ctsio: *mut sys::ctl_scsiio) {
    // SAFETY: the caller's contract.
    let io = unsafe { &mut *ctsio };
    io.scsi_status = TASK_ABORTED;
    io.sense_len = 0;
    io.io_hdr.status = sys::CTL_CMD_ABORTED;
}

/// `ctl_io_set_success` (FreeBSD 15): `ctl_set_success` for a SCSI I/O.
///
/// # Safety
///
/// `io` is a SCSI I/O.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_io_set_success(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    unsafe {
        if (*io).io_hdr.io_type != sys::CTL_IO_SCSI {
            kpanic!("ctl_io_set_success: I/O {io:p} is not a SCSI I/O");
        }
        ctl_set_success(&raw mut (*io).scsiio);
    }
}

// --- the I/O path ---

/// The flags of an I/O, which a task management function may change while
/// others use the I/O (CTL sets `CTL_FLAG_ABORT` under the LUN lock while
/// the backend holds the I/O).
///
/// # Safety
///
/// `io` is a live I/O.
unsafe fn flags_of<'a>(io: *mut sys::ctl_io) -> &'a AtomicU32 {
    // SAFETY: the caller's contract; the field is an aligned u32.
    unsafe { AtomicU32::from_ptr(&raw mut (*io).io_hdr.flags) }
}

/// The ctl_lba_len_flags in an I/O's private area (`ARGS(io)`).
///
/// # Safety
///
/// `io` is a live I/O.
unsafe fn args(io: *mut sys::ctl_io) -> *mut sys::ctl_lba_len_flags {
    // SAFETY: the caller's contract; ctl_priv holds 16 bytes, aligned for
    // the structure.
    unsafe { (&raw mut (*io).io_hdr.ctl_private[sys::CTL_PRIV_LBA_LEN as usize]).cast() }
}

/// Whether an I/O's status lets it go on: none yet, or success.
fn status_ok(status: u32) -> bool {
    matches!(status & sys::CTL_STATUS_MASK, sys::CTL_STATUS_NONE | sys::CTL_SUCCESS)
}

/// ctl_queue, ctl_scsiio_precheck and ctl_scsiio for an I/O the frontend
/// built (nexus, CDB, tag): `Ok` with CTL's own answer when it completes
/// the command without the backend (its data in `data_in`; the I/O stays
/// the frontend's), or `Err` with what CTL does with it, which the
/// frontend starts with [`start`] once it has attached its state.
///
/// # Safety
///
/// `io` is a SCSI I/O the frontend owns.
pub(crate) unsafe fn precheck(io: *mut sys::ctl_io, data_in: &mut [u8]) -> Result<Outcome, Disposition> {
    // SAFETY: the caller's contract.
    let (lun_id, initid, cdb) = unsafe {
        let s = &(*io).scsiio;
        let n = usize::from(s.cdb_len).min(s.cdb.len());
        (
            s.io_hdr.nexus.targ_mapped_lun,
            s.io_hdr.nexus.initid,
            s.cdb[..n].to_vec(),
        )
    };
    let (disposition, be_lun) = with(|c| {
        let mapped: Vec<u32> = if cdb.first() == Some(&0xA0) {
            c.luns.iter().filter(|(_, s)| !s.removing).map(|(&id, _)| id).collect()
        } else {
            Vec::new()
        };
        let slot = c.luns.get_mut(&lun_id).filter(|s| !s.removing);
        let be_lun = slot.as_ref().map_or(0, |s| s.be_lun);
        let disposition = ctl_scsi::dispatch(slot.map(|s| &mut s.model), &PORT, initid, &mapped, &cdb, data_in);
        if !matches!(disposition, Disposition::Done(_)) {
            if let Some(slot) = c.luns.get_mut(&lun_id) {
                slot.outstanding += 1;
            }
            c.pending.insert(
                io as usize,
                Pending {
                    lun: lun_id,
                    in_backend: false,
                },
            );
        }
        (disposition, be_lun)
    });
    let disposition = match disposition {
        Disposition::Done(outcome) => return Ok(outcome),
        other => other,
    };
    let dir = match ctl_scsi::direction(&cdb) {
        Direction::In => sys::CTL_FLAG_DATA_IN,
        Direction::Out => sys::CTL_FLAG_DATA_OUT,
        Direction::None => sys::CTL_FLAG_DATA_NONE,
    };
    // SAFETY: the I/O is CTL's now; nobody else uses it yet.
    unsafe {
        let h = &mut (*io).io_hdr;
        h.flags = (h.flags & !sys::CTL_FLAG_DATA_MASK) | dir;
        h.ctl_private[sys::CTL_PRIV_LUN as usize].ptrs[0] = (lun_id as usize + 1) as *mut c_void;
        h.ctl_private[sys::CTL_PRIV_BACKEND_LUN as usize].ptrs[0] = be_lun as *mut c_void;
    }
    Err(disposition)
}

/// Carries out what CTL decided for a command it holds (the end of the
/// command's ctl.c function): the backend's entry point with the
/// arguments ctl.c gives it, a data move into a buffer CTL allocates, or
/// completion.
///
/// # Safety
///
/// `io` is an I/O CTL holds and no one else uses.
pub(crate) unsafe fn start(io: *mut sys::ctl_io, disposition: Disposition) {
    // SAFETY: the caller's contract.
    unsafe {
        let s = &raw mut (*io).scsiio;
        match disposition {
            Disposition::Done(outcome) => {
                free_allocated(io);
                set_outcome(s, &outcome);
                done(io);
            }
            Disposition::DoneKeepingData(outcome) => {
                set_outcome(s, &outcome);
                done(io);
            }
            Disposition::DataSubmit {
                lba,
                len,
                flags,
                total_len,
                compare_and_write,
            } => {
                *args(io) = sys::ctl_lba_len_flags { lba, len, flags };
                (*s).kern_total_len = total_len;
                (*s).kern_rel_offset = 0;
                if compare_and_write {
                    flags_of(io).fetch_or(sys::CTL_FLAG_IO_CONT, Ordering::Relaxed);
                    (*s).io_cont = Some(ctl_cnw_cont);
                }
                to_backend(io, Done::DataSubmit);
            }
            Disposition::ConfigRead {
                lba,
                len,
                data,
                data_len,
            } => {
                let buf = allocate(data.len(), true);
                std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
                (*s).kern_data_ptr = buf;
                (*s).kern_rel_offset = 0;
                (*s).kern_sg_entries = 0;
                (*s).kern_data_len = data_len;
                (*s).kern_total_len = data_len;
                ctl_set_success(s);
                flags_of(io).fetch_or(sys::CTL_FLAG_ALLOCATED, Ordering::Relaxed);
                (*s).be_move_done = Some(ctl_config_move_done);
                *args(io) = sys::ctl_lba_len_flags { lba, len, flags: 0 };
                to_backend(io, Done::ConfigRead);
            }
            Disposition::ConfigWrite {
                lba_len,
                write_same_cont,
            } => {
                if let Some((lba, len, flags)) = lba_len {
                    *args(io) = sys::ctl_lba_len_flags { lba, len, flags };
                }
                if write_same_cont {
                    flags_of(io).fetch_or(sys::CTL_FLAG_IO_CONT, Ordering::Relaxed);
                    (*s).io_cont = Some(ctl_write_same_cont);
                }
                to_backend(io, Done::ConfigWrite);
            }
            Disposition::DataOut { len } => {
                (*s).kern_data_ptr = allocate(len as usize, false);
                (*s).kern_data_len = len;
                (*s).kern_total_len = len;
                (*s).kern_rel_offset = 0;
                (*s).kern_sg_entries = 0;
                flags_of(io).fetch_or(sys::CTL_FLAG_ALLOCATED, Ordering::Relaxed);
                (*s).be_move_done = Some(ctl_config_move_done);
                ctl_datamove(io);
            }
            Disposition::Unmap { offset, len, flags } => {
                let ptrlen = args(io).cast::<sys::ctl_ptr_len_flags>();
                *ptrlen = sys::ctl_ptr_len_flags {
                    ptr: (*s).kern_data_ptr.add(offset as usize),
                    len,
                    flags,
                };
                to_backend(io, Done::ConfigWrite);
            }
        }
    }
}

/// malloc(M_CTL, M_WAITOK), zeroed or not: a buffer CTL gives an I/O.
fn allocate(len: usize, zero: bool) -> *mut u8 {
    let flags = sys::M_WAITOK | if zero { sys::M_ZERO } else { 0 };
    // SAFETY: M_CTL is registered at boot.
    unsafe { malloc::simkern_malloc(len, mem_type(), flags as c_int) }.cast()
}

/// Frees the buffer CTL allocated for an I/O (`CTL_FLAG_ALLOCATED`).
///
/// # Safety
///
/// `io` is a live I/O whose ALLOCATED buffer, if any, is CTL's.
unsafe fn free_allocated(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    unsafe {
        if flags_of(io).fetch_and(!sys::CTL_FLAG_ALLOCATED, Ordering::Relaxed) & sys::CTL_FLAG_ALLOCATED != 0 {
            let buf = std::mem::replace(&mut (*io).scsiio.kern_data_ptr, std::ptr::null_mut());
            malloc::simkern_free(buf.cast(), mem_type());
        }
    }
}

/// Hands `io` to its LUN's backend through `entry`, as ctl.c's command
/// functions end.
///
/// # Safety
///
/// `io` is an I/O CTL holds, with its backend LUN set.
unsafe fn to_backend(io: *mut sys::ctl_io, entry: Done) {
    with(|c| match c.pending.get_mut(&(io as usize)) {
        Some(p) => p.in_backend = true,
        None => kpanic!("ctl: I/O {io:p} handed to a backend is not CTL's"),
    });
    // SAFETY: the caller's contract: the LUN and its backend outlive the
    // I/O.
    let rc = unsafe {
        let be_lun = (*io).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND_LUN as usize].ptrs[0].cast::<sys::ctl_be_lun>();
        let be = (*be_lun).be;
        let f = match entry {
            Done::DataSubmit => (*be).data_submit,
            Done::ConfigRead => (*be).config_read,
            Done::ConfigWrite => (*be).config_write,
        };
        let Some(f) = f else {
            kpanic!("backend {} has no entry point for {entry:?}", name_of(be));
        };
        f(io)
    };
    if rc != sys::CTL_RETVAL_COMPLETE as c_int {
        kpanic!("a backend returned {rc} from {entry:?}; CTL expects CTL_RETVAL_COMPLETE");
    }
}

/// A backend gives `io` back through `how`: it must hold it (completing an
/// I/O twice, or one CTL never handed out, stops the kernel).
fn backend_done(io: *mut sys::ctl_io, how: Done) {
    with(|c| {
        match c.pending.get_mut(&(io as usize)) {
            Some(p) if p.in_backend => p.in_backend = false,
            Some(_) => kpanic!("{how:?}: I/O {io:p} is not in the backend (completed twice)"),
            None => kpanic!("{how:?}: I/O {io:p} is not outstanding (completed twice, or never submitted)"),
        }
        c.done.push((io as usize, how));
    });
}

/// ctl_done and ctl_process_done: the I/O leaves its LUN's OOA queue (a
/// removed LUN whose last I/O it was is freed: `lun_shutdown`), an aborted
/// I/O gets TASK ABORTED, and the frontend sends the status and frees the
/// I/O (fe_done).
///
/// # Safety
///
/// `io` is an I/O CTL holds; it is gone when this returns.
unsafe fn done(io: *mut sys::ctl_io) {
    let shutdown = with(|c| {
        let Some(p) = c.pending.remove(&(io as usize)) else {
            kpanic!("ctl_done: I/O {io:p} is not outstanding (completed twice)");
        };
        let mut shutdown = None;
        if let Some(slot) = c.luns.get_mut(&p.lun) {
            slot.outstanding -= 1;
            if slot.removing && slot.outstanding == 0 {
                shutdown = c.luns.remove(&p.lun).map(|s| s.be_lun);
            }
        }
        shutdown
    });
    // SAFETY: the caller's contract.
    unsafe {
        if flags_of(io).load(Ordering::Relaxed) & sys::CTL_FLAG_ABORT != 0 {
            ctl_set_task_aborted(&raw mut (*io).scsiio);
        }
        if let Some(be_lun) = shutdown {
            shut_down(be_lun as *mut sys::ctl_be_lun);
        }
        frontend::done(io);
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

/// Whether a completion continues the I/O (`CTL_FLAG_IO_CONT`, not
/// aborted, status none or success).
///
/// # Safety
///
/// `io` is a live I/O.
unsafe fn continues(io: *mut sys::ctl_io) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        let flags = flags_of(io).load(Ordering::Relaxed);
        flags & sys::CTL_FLAG_IO_CONT != 0 && flags & sys::CTL_FLAG_ABORT == 0 && status_ok((*io).io_hdr.status)
    }
}

/// ctl_continue_io: the command's continuation, in the completing thread.
///
/// # Safety
///
/// `io` is an I/O CTL holds.
unsafe fn continue_io(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    let Some(f) = (unsafe { (*io).scsiio.io_cont }) else {
        kpanic!("ctl: I/O {io:p} has CTL_FLAG_IO_CONT but no io_cont");
    };
    // SAFETY: CTL's continuation for its own I/O.
    unsafe { f(io) };
}

/// `ctl_data_submit_done`: the backend is done with a data_submit; CTL
/// continues the I/O (COMPARE AND WRITE's write) or completes it.
///
/// # Safety
///
/// `io` is an I/O CTL handed the backend.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_data_submit_done(io: *mut sys::ctl_io) {
    backend_done(io, Done::DataSubmit);
    // SAFETY: the caller's contract; the I/O is CTL's again.
    unsafe {
        if continues(io) {
            continue_io(io);
        } else {
            done(io);
        }
    }
}

/// `ctl_config_write_done`: the backend is done with a config_write; CTL
/// continues the I/O (WRITE SAME's next piece) or frees the buffer it
/// allocated (`CTL_FLAG_ALLOCATED`) and completes it.
///
/// # Safety
///
/// `io` is an I/O CTL handed the backend.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_config_write_done(io: *mut sys::ctl_io) {
    backend_done(io, Done::ConfigWrite);
    // SAFETY: the caller's contract; the I/O is CTL's again.
    unsafe {
        if continues(io) {
            continue_io(io);
            return;
        }
        free_allocated(io);
        done(io);
    }
}

/// `ctl_config_read_done`: the backend is done with a config_read; after
/// an error or an abort CTL frees its buffer and completes the I/O,
/// otherwise it continues it or moves the data to the initiator (whose
/// `be_move_done`, `ctl_config_move_done`, completes it).
///
/// # Safety
///
/// `io` is an I/O CTL handed the backend.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_config_read_done(io: *mut sys::ctl_io) {
    backend_done(io, Done::ConfigRead);
    // SAFETY: the caller's contract; the I/O is CTL's again.
    unsafe {
        let flags = flags_of(io).load(Ordering::Relaxed);
        if flags & sys::CTL_FLAG_ABORT != 0 || !status_ok((*io).io_hdr.status) {
            free_allocated(io);
            done(io);
            return;
        }
        if flags & sys::CTL_FLAG_IO_CONT != 0 {
            continue_io(io);
            return;
        }
        ctl_datamove(io);
    }
}

/// ctl_cnw_cont: COMPARE AND WRITE's second pass, once the compare
/// succeeded: the status is reset, ARGS turns from COMPARE to WRITE, and
/// data_submit runs again.
///
/// # Safety
///
/// `io` is a COMPARE AND WRITE CTL holds.
unsafe extern "C" fn ctl_cnw_cont(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        (*io).io_hdr.status = sys::CTL_STATUS_NONE;
        flags_of(io).fetch_and(!sys::CTL_FLAG_IO_CONT, Ordering::Relaxed);
        let a = args(io);
        (*a).flags = ((*a).flags & !sys::CTL_LLF_COMPARE) | sys::CTL_LLF_WRITE;
        to_backend(io, Done::DataSubmit);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// ctl_write_same_cont: WRITE SAME to the last LBA, the next piece: ARGS
/// moves past the blocks done; the last piece (at most 2^32-1 blocks) ends
/// the continuation.
///
/// # Safety
///
/// `io` is a WRITE SAME CTL holds.
unsafe extern "C" fn ctl_write_same_cont(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: the caller's contract; the backend LUN outlives the I/O.
    unsafe {
        (*io).io_hdr.status = sys::CTL_STATUS_NONE;
        let a = args(io);
        (*a).lba += u64::from((*a).len);
        let be_lun = (*io).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND_LUN as usize].ptrs[0].cast::<sys::ctl_be_lun>();
        let left = (*be_lun).maxlba.wrapping_add(1).wrapping_sub((*a).lba);
        if left <= u64::from(u32::MAX) {
            flags_of(io).fetch_and(!sys::CTL_FLAG_IO_CONT, Ordering::Relaxed);
            (*a).len = left as u32;
        }
        to_backend(io, Done::ConfigWrite);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// `ctl_config_move_done`: the `be_move_done` of CTL's own data moves.
/// For DATA-IN, after an error or an abort, CTL frees its buffer and
/// completes the I/O; otherwise (data in from the initiator) it runs the
/// command's ctl.c function again with the data (ctl_scsiio), which hands
/// WRITE SAME and UNMAP to the backend's config_write from this thread,
/// the frontend's.
///
/// # Safety
///
/// `io` is an I/O CTL holds whose data move is done.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_config_move_done(io: *mut sys::ctl_io, _samethr: bool) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        let flags = flags_of(io).load(Ordering::Relaxed);
        if flags & sys::CTL_FLAG_DATA_MASK == sys::CTL_FLAG_DATA_IN
            || !status_ok((*io).io_hdr.status)
            || flags & sys::CTL_FLAG_ABORT != 0
        {
            free_allocated(io);
            done(io);
            return sys::CTL_RETVAL_COMPLETE as c_int;
        }
        let s = &(*io).scsiio;
        let cdb = s.cdb[..usize::from(s.cdb_len).min(s.cdb.len())].to_vec();
        let moved = (flags & sys::CTL_FLAG_ALLOCATED != 0).then(|| {
            let len = s.kern_total_len.saturating_sub(s.kern_data_resid) as usize;
            std::slice::from_raw_parts(s.kern_data_ptr.cast_const(), len)
        });
        let initid = s.io_hdr.nexus.initid;
        let disposition = with(|c| {
            let Some(lun) = c.pending.get(&(io as usize)).map(|p| p.lun) else {
                kpanic!("ctl_config_move_done: I/O {io:p} is not CTL's");
            };
            let Some(slot) = c.luns.get_mut(&lun) else {
                kpanic!("ctl_config_move_done: LUN {lun} of I/O {io:p} is gone");
            };
            ctl_scsi::resume(&mut slot.model, &PORT, initid, &cdb, moved)
        });
        start(io, disposition);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// `ctl_datamove`: the backend (or CTL) asks the frontend to move
/// `kern_data_len` bytes of `kern_data_ptr` (flat, or `kern_sg_entries`
/// `ctl_sg_entry` entries) at `kern_rel_offset` of the transfer, in the
/// I/O's direction.  `kern_data_resid` starts at `kern_data_len`.  An
/// aborted I/O fails at once (`port_status` 31337) and an empty move
/// succeeds at once, both calling `be_move_done` before this returns
/// (`samethr` true); otherwise the frontend moves the data on its own
/// thread and then calls `ctl_datamove_done`.
///
/// # Safety
///
/// `io` is an I/O CTL holds, set up for a data move, whose buffers stay
/// valid until `be_move_done`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_datamove(io: *mut sys::ctl_io) {
    if !with(|c| c.pending.contains_key(&(io as usize))) {
        kpanic!("ctl_datamove: I/O {io:p} is not CTL's (completed, or never submitted)");
    }
    // SAFETY: the caller's contract.
    unsafe {
        let s = &raw mut (*io).scsiio;
        (*s).kern_data_resid = (*s).kern_data_len;
        if flags_of(io).load(Ordering::Relaxed) & sys::CTL_FLAG_ABORT != 0 {
            let n = &(*io).io_hdr.nexus;
            console::print(&format!(
                "ctl_datamove: tag {:#x} on ({}:{}:{}) aborted\n",
                (*s).tag_num,
                n.initid,
                n.targ_port,
                n.targ_lun
            ));
            (*io).io_hdr.port_status = PORT_STATUS_ABORTED;
            done_process(io);
            be_move_done(io, true);
            return;
        }
        if (*s).kern_data_len == 0 {
            done_process(io);
            be_move_done(io, true);
            return;
        }
        frontend::datamove(io);
    }
}

/// `ctl_datamove_done` (FreeBSD 15): the frontend moved the data; CTL
/// turns a transport error (`port_status`) into INTERNAL TARGET FAILURE
/// and short DATA-OUT into INVALID FIELD IN COMMAND INFORMATION UNIT
/// (while the status is none or success), then calls `be_move_done`.
///
/// # Safety
///
/// `io` is an I/O whose data move is done.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_datamove_done(io: *mut sys::ctl_io, samethr: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        done_process(io);
        be_move_done(io, samethr);
    }
}

/// ctl_datamove_done_process.
///
/// # Safety
///
/// `io` is a live I/O.
unsafe fn done_process(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    unsafe {
        let h = &raw mut (*io).io_hdr;
        let s = &raw mut (*io).scsiio;
        (*h).num_dmas += 1;
        let ok = status_ok((*h).status);
        let out = flags_of(io).load(Ordering::Relaxed) & sys::CTL_FLAG_DATA_MASK == sys::CTL_FLAG_DATA_OUT;
        if (*h).port_status != 0 && ok {
            set_sense(s, &Sense::internal_failure(true, (*h).port_status as u16));
        } else if (*s).kern_data_resid != 0 && out && ok {
            set_sense(s, &Sense::invalid_field_ciu());
        }
    }
}

/// ctl_be_move_done: the I/O's `be_move_done`.
///
/// # Safety
///
/// `io` is an I/O whose data move is done.
unsafe fn be_move_done(io: *mut sys::ctl_io, samethr: bool) {
    // SAFETY: the caller's contract.
    let Some(f) = (unsafe { (*io).scsiio.be_move_done }) else {
        kpanic!("ctl_datamove: I/O {io:p} has no be_move_done");
    };
    // SAFETY: the callback its owner set for this move.
    unsafe { f(io, samethr) };
}

/// `ctl_serseq_done`: the backend lets commands serialized behind this one
/// go (`CTL_FLAG_SERSEQ_DONE`); the simulated CTL does not serialize, so
/// it only records it.
///
/// # Safety
///
/// `io` is an I/O CTL holds.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ctl_serseq_done(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    unsafe { flags_of(io).fetch_or(sys::CTL_FLAG_SERSEQ_DONE, Ordering::Relaxed) };
}

/// A task management function from an initiator (the iSCSI TASK
/// MANAGEMENT FUNCTION REQUEST).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tmf {
    /// ABORT TASK: the initiator's command with this tag on the LUN.
    AbortTask { lun: u32, initiator: u32, tag: u64 },
    /// ABORT TASK SET: the initiator's commands on the LUN.
    AbortTaskSet { lun: u32, initiator: u32 },
    /// CLEAR TASK SET: every command on the LUN.
    ClearTaskSet { lun: u32 },
    /// LUN RESET: every command on the LUN, and a unit attention (29/00)
    /// for every initiator.
    LunReset { lun: u32, initiator: u32 },
    /// I_T NEXUS RESET: the initiator's commands on every LUN, and a unit
    /// attention (29/07) for it.
    ITNexusReset { initiator: u32 },
    /// TARGET WARM RESET (ctl_target_reset): a LUN RESET of every LUN
    /// with a unit attention 29/03 for every initiator.
    TargetReset { initiator: u32 },
}

/// Carries out `tmf` as FreeBSD 15's ctl.c does (ctl_abort_task,
/// ctl_abort_task_set and ctl_abort_tasks_lun, ctl_lun_reset and
/// ctl_do_lun_reset, ctl_i_t_nexus_reset): it only sets `CTL_FLAG_ABORT`
/// on the I/Os it hits, with `CTL_FLAG_ABORT_STATUS` for those of other
/// nexuses (CLEAR TASK SET and LUN RESET hit every nexus), and establishes
/// the unit attentions; the backend is not told.  `ctl_datamove` fails the
/// data moves of an aborted I/O, and it completes with TASK ABORTED.
/// Returns how many I/Os were hit.
pub fn task_management(tmf: Tmf) -> usize {
    with(|c| {
        let mut hit = 0;
        for (&io, p) in &c.pending {
            let io = io as *mut sys::ctl_io;
            // SAFETY: a pending I/O is live; its nexus and tag are fixed.
            let (initid, tag) = unsafe { ((*io).io_hdr.nexus.initid, (*io).scsiio.tag_num) };
            let flags = match tmf {
                Tmf::AbortTask { lun, initiator, tag: t } if p.lun == lun && initid == initiator && tag == t => {
                    sys::CTL_FLAG_ABORT
                }
                Tmf::AbortTaskSet { lun, initiator } if p.lun == lun && initid == initiator => sys::CTL_FLAG_ABORT,
                Tmf::ClearTaskSet { lun } | Tmf::LunReset { lun, .. } if p.lun == lun => {
                    sys::CTL_FLAG_ABORT | sys::CTL_FLAG_ABORT_STATUS
                }
                Tmf::ITNexusReset { initiator } if initid == initiator => sys::CTL_FLAG_ABORT,
                Tmf::TargetReset { .. } => sys::CTL_FLAG_ABORT | sys::CTL_FLAG_ABORT_STATUS,
                _ => continue,
            };
            // SAFETY: CTL sets the flags under its lock while others use
            // the I/O, as ctl.c does.
            unsafe { flags_of(io).fetch_or(flags, Ordering::Relaxed) };
            hit += 1;
        }
        match tmf {
            Tmf::LunReset { lun, .. } => {
                if let Some(slot) = c.luns.get_mut(&lun) {
                    slot.model.reset(false);
                }
            }
            Tmf::TargetReset { .. } => {
                for slot in c.luns.values_mut() {
                    slot.model.reset(true);
                }
            }
            Tmf::ITNexusReset { initiator } => nexus_loss(c, initiator, false),
            _ => {}
        }
        hit
    })
}

/// ctl_i_t_nexus_loss: the initiator's commands are aborted (without
/// status: the nexus is its own) and every LUN forgets it (see
/// [`ctl_scsi::Lun::nexus_lost`]).
fn nexus_loss(c: &mut Ctl, initiator: u32, poweron: bool) {
    for &io in c.pending.keys() {
        let io = io as *mut sys::ctl_io;
        // SAFETY: a pending I/O is live; its nexus is fixed and CTL sets
        // its flags under its lock.
        unsafe {
            if (*io).io_hdr.nexus.initid == initiator {
                flags_of(io).fetch_or(sys::CTL_FLAG_ABORT, Ordering::Relaxed);
            }
        }
    }
    for slot in c.luns.values_mut() {
        slot.model.nexus_lost(initiator, poweron);
    }
}

/// `ctl_add_initiator` with no id asked for: the id this name had before,
/// else one never used, else the one released longest ago; `None` when
/// every id is in use.  Followed: `sys/cam/ctl/ctl.c` of bsdjhb/freebsd
/// (ctl_add_initiator, ctl_remove_initiator).
pub fn add_initiator(name: &str) -> Option<u32> {
    with(|c| {
        let known = c.initiators.iter().position(|s| s.name.as_deref() == Some(name));
        let index = match known {
            Some(i) => i,
            None if c.initiators.len() < MAX_INIT_PER_PORT => {
                c.initiators.push(InitiatorSlot::default());
                c.initiators.len() - 1
            }
            None => c
                .initiators
                .iter()
                .enumerate()
                .filter(|(_, s)| s.in_use == 0)
                .min_by_key(|(_, s)| s.last_use)
                .map(|(i, _)| i)?,
        };
        let slot = &mut c.initiators[index];
        slot.name = Some(name.to_owned());
        slot.in_use += 1;
        Some(index as u32)
    })
}

/// `ctl_remove_initiator`: a session of initiator `initiator` ended; when it
/// was the last, the nexus is lost (ctl_i_t_nexus_loss with POWER ON).
pub fn remove_initiator(initiator: u32) {
    with(|c| {
        c.uses += 1;
        let uses = c.uses;
        let Some(slot) = c.initiators.get_mut(initiator as usize).filter(|s| s.in_use > 0) else {
            kpanic!("ctl_remove_initiator: initiator {initiator} is not in use");
        };
        slot.in_use -= 1;
        slot.last_use = uses;
        if slot.in_use == 0 {
            nexus_loss(c, initiator, true);
        }
    });
}

/// The commands CTL holds on LUN `lun`: (initiator, tag), in tag order.
pub fn tasks(lun: u32) -> Vec<(u32, u64)> {
    let mut v: Vec<(u32, u64)> = with(|c| {
        c.pending
            .iter()
            .filter(|(_, p)| p.lun == lun)
            .map(|(&io, _)| {
                let io = io as *const sys::ctl_io;
                // SAFETY: a pending I/O is live; its nexus and tag are fixed.
                unsafe { ((*io).io_hdr.nexus.initid, (*io).scsiio.tag_num) }
            })
            .collect()
    });
    v.sort_by_key(|&(_, tag)| tag);
    v
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

/// The backend's `ctl_be_lun` of LUN `lun`, while CTL holds it.
pub fn be_lun_of(lun: u32) -> Option<*mut sys::ctl_be_lun> {
    with(|c| c.luns.get(&lun).map(|s| s.be_lun as *mut sys::ctl_be_lun))
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
        /// `-S`: the field's bytes, copied as strncpy(3) does (ctld's
        /// way: all 16 when it is that long, without a NUL; ctladm cuts
        /// its own to 15 first, as its strlcpy(3) does).
        serial: Option<String>,
        /// `-d`, copied the same way (64 bytes).
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
    /// A request type neither ctladm nor ctld sends (a program of its
    /// own), with the rest of the request zeroed.
    Raw {
        /// `reqtype`.
        reqtype: u32,
    },
}

impl Request {
    /// `ctladm create` with no option but the backend's: a direct-access
    /// LUN, size, block size, number, serial and device id left to the
    /// backend.
    pub fn create() -> Request {
        Request::Create {
            device_type: 0,
            size: 0,
            blocksize: 0,
            lun_id: None,
            serial: None,
            device_id: None,
        }
    }

    /// The `struct ctl_lun_req` a program fills for this request to
    /// `backend` (without its options), as CTL receives it.
    pub fn raw(&self, backend: &str) -> sys::ctl_lun_req {
        // SAFETY: struct ctl_lun_req is plain data.
        let mut req: sys::ctl_lun_req = unsafe { std::mem::zeroed() };
        for (d, s) in req.backend.iter_mut().zip(backend.bytes().take(31)) {
            *d = s as std::ffi::c_char;
        }
        match self {
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
            Request::Raw { reqtype } => req.reqtype = *reqtype,
        }
        req
    }
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

/// strncpy(3) into a field of `N` bytes: NUL padded, no NUL when full.
fn c_array<const N: usize>(text: &str) -> [u8; N] {
    let mut a = [0u8; N];
    for (d, s) in a.iter_mut().zip(text.bytes()) {
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
    let options: Vec<(&[u8], &[u8])> = options.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
    lun_request_bytes(backend, request, &options)
}

/// Bytes of an nvlist element name, NUL included, that nvlist_unpack takes
/// at most (libnv's `NV_NAME_MAX`).
pub const NV_NAME_MAX: usize = 2048;

/// [`lun_request`] with options of any bytes, as a program packs them
/// (ctladm passes its arguments on as they are).  CTL unpacks the list
/// with `nvlist_unpack`, which refuses a name given twice, a name or a
/// string with a NUL inside, and a name of [`NV_NAME_MAX`] bytes or more;
/// the request then fails before the backend sees it.
pub fn lun_request_bytes(backend: &str, request: &Request, options: &[(&[u8], &[u8])]) -> Reply {
    let be = with(|c| c.backends.iter().copied().find(|&b| name_of(b as *const _) == backend));
    let Some(be) = be.map(|b| b as *mut sys::ctl_backend_driver) else {
        return Reply {
            status: sys::CTL_LUN_ERROR,
            error: format!("Backend \"{backend}\" not found."),
            created: None,
        };
    };
    let unpackable = options.iter().enumerate().all(|(i, (name, value))| {
        !name.contains(&0)
            && !value.contains(&0)
            && name.len() < NV_NAME_MAX
            && !options[..i].iter().any(|(n, _)| n == name)
    });
    if !unpackable {
        return Reply {
            status: sys::CTL_LUN_ERROR,
            error: "Cannot unpack args nvlist.".into(),
            created: None,
        };
    }
    let mut req = request.raw(backend);
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

// --- the initiator's commands ---

/// The port CTL sees commands arrive on.
static PORT: LazyLock<Port> = LazyLock::new(port);

/// Sends one command without data-out from the simulator's initiator to
/// LUN `lun_id` and waits for its status, as an iSCSI initiator would
/// ([`execute`] with a SIMPLE task attribute, without the residual).
pub fn command(lun_id: u32, cdb: &[u8], data_in_len: usize) -> Response {
    let r = execute(lun_id, &Cmd::read(cdb, data_in_len));
    Response {
        status: r.status,
        sense: r.sense,
        data: r.data,
    }
}

/// Each simulated function has the type its C prototype declares.
const _: () = {
    let _: [unsafe extern "C" fn(*mut sys::ctl_backend_driver) -> c_int; 4] = [
        sys::ctl_backend_register,
        ctl_backend_register,
        sys::ctl_backend_deregister,
        ctl_backend_deregister,
    ];
    let _: [unsafe extern "C" fn(*mut sys::ctl_scsiio); 12] = [
        sys::ctl_set_success,
        ctl_set_success,
        sys::ctl_set_busy,
        ctl_set_busy,
        sys::ctl_set_invalid_field_ciu,
        ctl_set_invalid_field_ciu,
        sys::ctl_set_invalid_opcode,
        ctl_set_invalid_opcode,
        sys::ctl_set_aborted,
        ctl_set_aborted,
        sys::ctl_set_task_aborted,
        ctl_set_task_aborted,
    ];
    let _: [unsafe extern "C" fn(*mut sys::ctl_scsiio, c_int, c_int, c_int, c_int, c_int); 2] =
        [sys::ctl_set_invalid_field, ctl_set_invalid_field];
    let _: [unsafe extern "C" fn(*mut sys::ctl_scsiio, c_int, u16); 2] =
        [sys::ctl_set_internal_failure, ctl_set_internal_failure];
    let _: [unsafe extern "C" fn(*mut sys::ctl_scsiio, u64); 2] =
        [sys::ctl_set_lba_out_of_range, ctl_set_lba_out_of_range];
    let _: [unsafe extern "C" fn(*mut sys::ctl_scsiio, c_int); 2] = [sys::ctl_set_medium_error, ctl_set_medium_error];
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
    let _: [unsafe extern "C" fn(*mut sys::ctl_io); 12] = [
        sys::ctl_data_submit_done,
        ctl_data_submit_done,
        sys::ctl_config_read_done,
        ctl_config_read_done,
        sys::ctl_config_write_done,
        ctl_config_write_done,
        sys::ctl_datamove,
        ctl_datamove,
        sys::ctl_serseq_done,
        ctl_serseq_done,
        sys::ctl_io_set_success,
        ctl_io_set_success,
    ];
    let _: [unsafe extern "C" fn(*mut sys::ctl_io, bool); 2] = [sys::ctl_datamove_done, ctl_datamove_done];
    let _: [unsafe extern "C" fn(*mut sys::ctl_io, bool) -> c_int; 2] =
        [sys::ctl_config_move_done, ctl_config_move_done];
};

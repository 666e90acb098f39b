//! CTL, as the passthrough backend sees it: LUN requests from ctladm and
//! ctld, and the I/O CTL hands the backend.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_int};
use core::fmt::{self, Write};
use core::mem;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::alloc::{AllocError, KBox, Wait};
use super::errno::Errno;
use super::fmt::FmtBuf;
use super::nv::{NvList, OwnedNvList};
use crate::backend::Lun;
use crate::periph::io::Request;
use crate::scsi::cdb::TaskAttribute;
use crate::sys;

/// The `CTL_LUN_REQ` ioctl command, `_IOWR(CTL_MINOR, 0x21, struct
/// ctl_lun_req)` (bindgen cannot evaluate the macro).
pub const CTL_LUN_REQ: core::ffi::c_ulong = {
    let len = core::mem::size_of::<sys::ctl_lun_req>() as u64 & sys::IOCPARM_MASK as u64;
    (sys::IOC_INOUT as u64 | len << 16 | (sys::CTL_MINOR as u64) << 8 | 0x21) as core::ffi::c_ulong
};

// _IOC masks the length with IOCPARM_MASK: the structure must fit, or the
// command number would be wrong.
static_assertions::const_assert!(core::mem::size_of::<sys::ctl_lun_req>() <= sys::IOCPARM_MASK as usize);

/// What a `CTL_LUN_REQ` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LunReqType {
    /// `ctladm create`, or ctld adding a LUN.
    Create,
    /// `ctladm remove`, or ctld removing a LUN.
    Remove,
    /// `ctladm modify`, or ctld re-applying its configuration.
    Modify,
}

/// What a `CTL_LUNREQ_CREATE` asks for, as ctladm or ctld filled it.
#[derive(Clone, Copy, Debug)]
pub struct CreateParams {
    /// The peripheral device type, if given (`ctladm -t`, ctld `device-type`).
    pub device_type: Option<u8>,
    /// The size in bytes (0: unspecified).
    pub size_bytes: u64,
    /// The block size in bytes (0: unspecified).
    pub blocksize: u32,
    /// The LUN number asked for (`ctladm -l`).
    pub lun_id: Option<u32>,
    /// The serial number to show instead of the device's (`ctladm -S`).
    pub serial_num: Option<[u8; SERIAL_LEN]>,
    /// The device id to show instead of the device's (`ctladm -d`).
    pub device_id: Option<[u8; DEVICE_ID_LEN]>,
}

/// A `CTL_LUN_REQ` ioctl request (`struct ctl_lun_req`), answered through
/// its status and error string: CTL copies both back to ctladm or ctld,
/// which print the string.
pub struct LunReq<'a>(&'a mut sys::ctl_lun_req);

impl<'a> LunReq<'a> {
    /// # Safety
    ///
    /// `req` points to a `ctl_lun_req` that is valid and not otherwise
    /// accessed for `'a`.
    pub(super) unsafe fn from_ptr(req: *mut sys::ctl_lun_req) -> LunReq<'a> {
        // SAFETY: the caller's contract.
        LunReq(unsafe { &mut *req })
    }

    /// The request type, or the raw value if CTL sent one this backend does
    /// not know.
    pub fn reqtype(&self) -> Result<LunReqType, u32> {
        match self.0.reqtype {
            sys::CTL_LUNREQ_CREATE => Ok(LunReqType::Create),
            sys::CTL_LUNREQ_RM => Ok(LunReqType::Remove),
            sys::CTL_LUNREQ_MODIFY => Ok(LunReqType::Modify),
            other => Err(other),
        }
    }

    /// Fails the request with a message for the administrator
    /// (`CTL_LUN_ERROR`; ctladm prints "LUN creation error: <message>").
    pub fn set_error(&mut self, message: fmt::Arguments<'_>) {
        self.set(sys::CTL_LUN_ERROR, message);
    }

    /// Completes the request with a message about something it did not do
    /// as asked (`CTL_LUN_WARNING`; ctladm prints "LUN creation warning").
    pub fn set_warning(&mut self, message: fmt::Arguments<'_>) {
        self.set(sys::CTL_LUN_WARNING, message);
    }

    /// Completes the request (`CTL_LUN_OK`).
    pub fn set_ok(&mut self) {
        self.0.status = sys::CTL_LUN_OK;
    }

    /// The request's options (`-o name=value` of ctladm, the LUN's options
    /// and `path` of ctld), if it has any.
    pub fn args(&self) -> Option<NvList<'_>> {
        // SAFETY: CTL unpacked args_nvl for this request; it lives until the
        // ioctl returns, which the borrow of self outlives.
        unsafe { NvList::from_ptr(self.0.args_nvl) }
    }

    /// What a `CTL_LUNREQ_CREATE` asks for.
    pub fn create_params(&self) -> CreateParams {
        // SAFETY: for CREATE, `create` is the union's member; it is plain data.
        let p = unsafe { &self.0.reqdata.create };
        let flags = LunFlags::from_bits_retain(p.flags);
        CreateParams {
            device_type: (p.flags & sys::CTL_LUN_FLAG_DEV_TYPE != 0).then_some(p.device_type),
            size_bytes: p.lun_size_bytes,
            blocksize: p.blocksize_bytes,
            lun_id: flags.contains(LunFlags::ID_REQ).then_some(p.req_lun_id),
            serial_num: flags.contains(LunFlags::SERIAL_NUM).then_some(p.serial_num),
            device_id: flags.contains(LunFlags::DEVID).then_some(p.device_id),
        }
    }

    /// Tells ctladm what was created (it prints these fields back); ctld
    /// reads the LUN number.
    pub fn set_created(&mut self, lun: &LunRef, lun_type: u8) {
        let (maxlba, blocksize) = lun.geometry();
        // SAFETY: for CREATE, `create` is the union's member; the LUN's
        // be_lun fields are ours to read.
        unsafe {
            let p = &mut self.0.reqdata.create;
            p.device_type = lun_type;
            p.blocksize_bytes = blocksize;
            p.lun_size_bytes = maxlba.saturating_add(1).saturating_mul(u64::from(blocksize));
            p.req_lun_id = lun.id();
            p.serial_num = (*lun.raw()).serial_num;
            p.device_id = (*lun.raw()).device_id;
        }
        self.set_ok();
    }

    /// The LUN a `CTL_LUNREQ_RM` or `CTL_LUNREQ_MODIFY` names.
    pub fn lun_id(&self) -> u32 {
        // SAFETY: `rm` and `modify` both start with lun_id; plain data.
        unsafe { self.0.reqdata.rm.lun_id }
    }

    /// The size a `CTL_LUNREQ_MODIFY` asks for, in bytes (0: re-read).
    pub fn modify_size(&self) -> u64 {
        // SAFETY: for MODIFY, `modify` is the union's member.
        unsafe { self.0.reqdata.modify.lun_size_bytes }
    }

    /// Tells ctladm the LUN's size after a MODIFY.
    pub fn set_modified(&mut self, size_bytes: u64) {
        self.0.reqdata.modify.lun_size_bytes = size_bytes;
        self.set_ok();
    }

    fn set(&mut self, status: sys::ctl_lun_status, message: fmt::Arguments<'_>) {
        let mut text = FmtBuf::<{ sys::CTL_ERROR_STR_LEN as usize }>::new();
        // Writing to a FmtBuf never fails; it truncates.
        let _ = text.write_fmt(message);
        let bytes = text.as_c_str().to_bytes_with_nul();
        for (dst, &src) in self.0.error_str.iter_mut().zip(bytes) {
            *dst = src as core::ffi::c_char;
        }
        self.0.status = status;
    }

    /// The message set with [`LunReq::set_error`].
    pub fn error_str(&self) -> &[u8] {
        let s = &self.0.error_str;
        // SAFETY: c_char and u8 have the same size and alignment.
        let bytes: &[u8] = unsafe { &*(core::ptr::from_ref(s.as_slice()) as *const [u8]) };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        bytes.get(..end).unwrap_or(&[])
    }
}

/// An I/O CTL handed to the backend (`union ctl_io` of type SCSI), with the
/// call that must complete it.  It completes exactly once: through
/// [`CtlIo::complete`], or, if it is dropped, with an internal target
/// failure (so that a bug shows as an error, never as a hung command).
pub struct CtlIo {
    io: NonNull<sys::ctl_io>,
    completion: Completion,
}

// SAFETY: a CTL I/O belongs to whoever CTL handed it to, and may be completed
// from any thread.
unsafe impl Send for CtlIo {}

/// How CTL expects an I/O to be completed: through the call matching the
/// entry point that received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// `data_submit`: `ctl_data_submit_done`.
    DataSubmit,
    /// `config_read`: `ctl_config_read_done`.
    ConfigRead,
    /// `config_write`: `ctl_config_write_done`.
    ConfigWrite,
}

/// The status an I/O completes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// GOOD (`ctl_set_success`).
    Success,
    /// The device's own SCSI status and sense data, verbatim.
    Status {
        /// The SCSI status byte.
        status: u8,
        /// Sense data (empty if there is none).
        sense: &'a [u8],
    },
    /// BUSY without sense (`ctl_set_busy`): the initiator retries.
    Busy,
    /// CHECK CONDITION with sense built by CTL in the LUN's sense format
    /// (`ctl_set_sense`).
    Sense {
        /// Sense key.
        key: u8,
        /// Additional sense code.
        asc: u8,
        /// Additional sense code qualifier.
        ascq: u8,
    },
}

impl CtlIo {
    /// # Safety
    ///
    /// `io` is a SCSI I/O CTL handed to this backend through the entry point
    /// `completion` names, not yet completed; the `CtlIo` is its only handle.
    pub(super) unsafe fn from_ptr(io: *mut sys::ctl_io, completion: Completion) -> Option<CtlIo> {
        NonNull::new(io).map(|io| CtlIo { io, completion })
    }

    fn scsiio(&self) -> *mut sys::ctl_scsiio {
        // SAFETY: I/Os handed to a backend are SCSI I/Os, so `scsiio` is the
        // live member of the union; this only computes its address.
        unsafe { &raw mut (*self.io.as_ptr()).scsiio }
    }

    /// The entry point that received the I/O.
    pub fn completion(&self) -> Completion {
        self.completion
    }

    /// The CDB the initiator sent.
    pub fn cdb(&self) -> &[u8] {
        // SAFETY: the frontend filled cdb and cdb_len before CTL queued the
        // I/O; they do not change while the backend has it.
        let s = unsafe { &*self.scsiio() };
        s.cdb.get(..usize::from(s.cdb_len)).unwrap_or(&s.cdb)
    }

    /// The task attribute the initiator gave the command.
    pub fn task_attribute(&self) -> TaskAttribute {
        // SAFETY: as for `cdb`.
        match unsafe { (*self.scsiio()).tag_type } {
            sys::CTL_TAG_SIMPLE => TaskAttribute::Simple,
            sys::CTL_TAG_ORDERED => TaskAttribute::Ordered,
            sys::CTL_TAG_HEAD_OF_QUEUE => TaskAttribute::HeadOfQueue,
            sys::CTL_TAG_ACA => TaskAttribute::Aca,
            _ => TaskAttribute::Untagged,
        }
    }

    /// The LUN the I/O is for (`CTL_BACKEND_LUN`), with a reference.
    pub fn lun(&self) -> Option<LunRef> {
        // SAFETY: CTL set the backend LUN pointer before handing the I/O to
        // the backend; the LUN outlives its outstanding I/Os (CTL calls
        // lun_shutdown only after the last one completes), so it is live
        // while the new reference is counted.
        unsafe {
            let be_lun = (*self.io.as_ptr()).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND_LUN as usize].ptrs[0];
            let lun = NonNull::new(be_lun.cast::<BeLun>())?;
            lun.as_ref().refs.fetch_add(1, Ordering::Relaxed);
            Some(LunRef(lun))
        }
    }

    /// The range and flags CTL parsed from the CDB (ARGS): for data_submit,
    /// SYNCHRONIZE CACHE, WRITE SAME and GET LBA STATUS.
    pub fn lba_len(&self) -> LbaLen {
        // SAFETY: CTL filled the LBA_LEN private slot before handing the I/O
        // over; it is plain data, read unaligned as the union allows.
        let llf: sys::ctl_lba_len_flags = unsafe {
            (&raw const (*self.io.as_ptr()).io_hdr.ctl_private[sys::CTL_PRIV_LBA_LEN as usize])
                .cast::<sys::ctl_lba_len_flags>()
                .read_unaligned()
        };
        LbaLen {
            lba: llf.lba,
            len: llf.len,
            flags: llf.flags,
        }
    }

    /// For UNMAP: the block descriptors CTL checked (16 bytes each, in its
    /// buffer of the I/O) and the CDB's byte 1.
    pub fn unmap_descriptors(&self) -> (&[u8], u32) {
        // SAFETY: for UNMAP, CTL put a ctl_ptr_len_flags in the LBA_LEN slot,
        // pointing into its buffer of the I/O, which lives until the I/O
        // completes (the borrow of self).
        unsafe {
            let plf = (&raw const (*self.io.as_ptr()).io_hdr.ctl_private[sys::CTL_PRIV_LBA_LEN as usize])
                .cast::<sys::ctl_ptr_len_flags>()
                .read_unaligned();
            let bytes = if plf.ptr.is_null() {
                &[][..]
            } else {
                core::slice::from_raw_parts(plf.ptr, plf.len as usize)
            };
            (bytes, plf.flags)
        }
    }

    /// The buffer CTL gave the I/O (`kern_data_ptr`, `kern_data_len`): the
    /// data of WRITE SAME, the room for GET LBA STATUS.
    pub(crate) fn kern_data(&self) -> Option<(*mut u8, u32)> {
        // SAFETY: plain fields of the I/O, set by CTL for these commands.
        let (p, len, sg) = unsafe {
            (
                (*self.scsiio()).kern_data_ptr,
                (*self.scsiio()).kern_data_len,
                (*self.scsiio()).kern_sg_entries,
            )
        };
        (!p.is_null() && sg == 0).then_some((p, len))
    }

    /// Shortens the data CTL moves to the initiator when the I/O completes
    /// (GET LBA STATUS: what the device returned).
    pub fn set_data_len(&mut self, len: u32) {
        // SAFETY: the I/O is ours; these fields say what CTL moves.
        unsafe {
            let s = self.scsiio();
            (*s).kern_data_len = len.min((*s).kern_data_len);
            (*s).kern_total_len = (*s).kern_data_len;
        }
    }

    /// Sets how many bytes the whole transfer moved (`kern_total_len`),
    /// from which the frontend reports the residual, after the data moves.
    pub fn set_total_len(&mut self, len: u32) {
        // SAFETY: the I/O is ours; the field is read by the frontend when
        // the I/O completes.
        unsafe { (*self.scsiio()).kern_total_len = len };
    }

    /// Bytes the last data move took to or from the initiator
    /// (`kern_data_len` less `kern_data_resid`), once CTL called back.
    pub fn moved_bytes(&self) -> u32 {
        // SAFETY: plain fields of the I/O, ours again after the move.
        unsafe {
            (*self.scsiio())
                .kern_data_len
                .saturating_sub((*self.scsiio()).kern_data_resid)
        }
    }

    /// Whether the I/O is for `lun`, without taking a reference.
    pub fn is_for(&self, lun: &BeLun) -> bool {
        // SAFETY: the backend LUN slot CTL set before handing the I/O over.
        let be_lun = unsafe { (*self.io.as_ptr()).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND_LUN as usize].ptrs[0] };
        ptr::eq(be_lun.cast::<BeLun>(), lun)
    }

    /// Whether CTL aborted the I/O (ABORT TASK, LUN RESET...).
    pub fn is_aborted(&self) -> bool {
        // SAFETY: CTL only ever sets this flag; an unlocked read is benign.
        unsafe { ptr::read_volatile(&raw const (*self.io.as_ptr()).io_hdr.flags) & sys::CTL_FLAG_ABORT != 0 }
    }

    /// Whether CTL aborted the I/O with `CTL_FLAG_ABORT_STATUS`: for another
    /// initiator's TMF, or one that cleared the whole task set (CLEAR TASK
    /// SET, LUN RESET).
    pub fn is_aborted_with_status(&self) -> bool {
        let all = sys::CTL_FLAG_ABORT | sys::CTL_FLAG_ABORT_STATUS;
        // SAFETY: CTL only ever sets these flags; an unlocked read is benign.
        unsafe { ptr::read_volatile(&raw const (*self.io.as_ptr()).io_hdr.flags) & all == all }
    }

    /// Whether the I/O already has an error status (set by CTL or the
    /// frontend after a data move: a transport error, short data).
    pub fn has_error(&self) -> bool {
        // SAFETY: a plain field of the I/O, ours.
        let status = unsafe { (*self.io.as_ptr()).io_hdr.status } & sys::CTL_STATUS_MASK;
        status != sys::CTL_STATUS_NONE && status != sys::CTL_SUCCESS
    }

    /// Sets the I/O's status and hands it back to CTL.
    pub fn complete(self, reply: Reply<'_>) {
        let this = mem::ManuallyDrop::new(self);
        this.finish(Some(reply));
    }

    /// Hands the I/O back to CTL with the status it has (set by CTL or the
    /// frontend, e.g. after a failed data move).
    pub fn complete_as_is(self) {
        let this = mem::ManuallyDrop::new(self);
        this.finish(None);
    }

    fn finish(&self, reply: Option<Reply<'_>>) {
        let s = self.scsiio();
        // SAFETY: the I/O is ours until handed back below, exactly once (the
        // callers consume or drop the CtlIo); the ctl_set_* helpers fill the
        // status fields of a SCSI I/O.
        unsafe {
            match reply {
                None => {}
                Some(Reply::Success) => sys::ctl_set_success(s),
                Some(Reply::Status { status, sense }) => {
                    let room = mem::size_of_val(&(*s).sense_data);
                    let n = sense.len().min(room);
                    let dst = (&raw mut (*s).sense_data).cast::<u8>();
                    ptr::write_bytes(dst, 0, room);
                    ptr::copy_nonoverlapping(sense.as_ptr(), dst, n);
                    (*s).sense_len = n as u8;
                    (*s).scsi_status = status;
                    (*s).io_hdr.status = sys::CTL_SCSI_ERROR | if n > 0 { sys::CTL_AUTOSENSE } else { 0 };
                }
                Some(Reply::Busy) => sys::ctl_set_busy(s),
                Some(Reply::Sense { key, asc, ascq }) => sys::ctl_set_sense(
                    s,
                    1,
                    c_int::from(key),
                    c_int::from(asc),
                    c_int::from(ascq),
                    sys::SSD_ELEM_NONE as c_int,
                ),
            }
            let io = self.io.as_ptr();
            match self.completion {
                Completion::DataSubmit => sys::ctl_data_submit_done(io),
                Completion::ConfigRead => sys::ctl_config_read_done(io),
                Completion::ConfigWrite => sys::ctl_config_write_done(io),
            }
        }
    }
}

impl Drop for CtlIo {
    fn drop(&mut self) {
        crate::printf!("ctlpass: an I/O was dropped without a status; failing it\n");
        self.finish(Some(Reply::Sense {
            key: SENSE_KEY_HARDWARE_ERROR,
            asc: 0x44,
            ascq: 0x00,
        }));
    }
}

/// HARDWARE ERROR: with 0x44/0x00, INTERNAL TARGET FAILURE.
pub const SENSE_KEY_HARDWARE_ERROR: u8 = 0x04;

/// The range and flags CTL parsed from a CDB (`struct ctl_lba_len_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbaLen {
    /// First LBA.
    pub lba: u64,
    /// Blocks.
    pub len: u32,
    /// `CTL_LLF_*` for data_submit; the CDB's byte 1 for SYNCHRONIZE CACHE
    /// and WRITE SAME.
    pub flags: u32,
}

/// The `CTL_LLF_*` flags of a data_submit I/O.
pub mod llf {
    use crate::sys;

    /// Force unit access.
    pub const FUA: u32 = sys::CTL_LLF_FUA;
    /// Disable page out.
    pub const DPO: u32 = sys::CTL_LLF_DPO;
    /// A read.
    pub const READ: u32 = sys::CTL_LLF_READ;
    /// A write.
    pub const WRITE: u32 = sys::CTL_LLF_WRITE;
    /// A verify of the medium (no data).
    pub const VERIFY: u32 = sys::CTL_LLF_VERIFY;
    /// A compare with the initiator's data.
    pub const COMPARE: u32 = sys::CTL_LLF_COMPARE;
}

/// Hands CTL the first `len` bytes of `req`'s buffer to move to or from the
/// initiator (the direction CTL set for the command), at byte `offset` of
/// the transfer, which moves `total` bytes in all (less than CTL computed
/// when the device returned less: the initiator then sees the residual).
/// `req` is parked in the I/O until CTL calls `be_move_done`, possibly
/// before this returns, which hands it to `crate::backend::io::moved`.
/// Without an I/O or a large enough buffer, `req` comes back.
pub fn datamove(req: KBox<Request>, offset: u32, len: u32, total: u32) -> Result<(), KBox<Request>> {
    let (Some(io), Some(buf)) = (req.io.as_ref(), req.buf.as_ref()) else {
        return Err(req);
    };
    if len as usize > buf.len() {
        return Err(req);
    }
    let (io, data) = (io.io.as_ptr(), buf.as_ptr());
    // SAFETY: the I/O is ours until completed; the buffer stays attached to
    // the request, which is parked in the I/O's backend slot until
    // be_move_done takes it back, so the memory outlives the move.
    unsafe {
        let s = &raw mut (*io).scsiio;
        (*s).kern_data_ptr = data;
        (*s).kern_data_len = len;
        (*s).kern_sg_entries = 0;
        (*s).kern_rel_offset = offset;
        (*s).kern_total_len = total;
        (*s).kern_data_resid = 0;
        (*s).be_move_done = Some(be_move_done);
        (*io).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND as usize].ptrs[0] = KBox::into_raw(req).cast();
        sys::ctl_datamove(io);
    }
    Ok(())
}

/// Takes back the request parked in `io` by [`datamove`].
///
/// # Safety
///
/// `io` is an I/O [`datamove`] handed to CTL, whose data move is done.
unsafe fn parked(io: *mut sys::ctl_io) -> Option<KBox<Request>> {
    // SAFETY: the caller's contract: the slot holds the request datamove
    // parked, taken back once (the slot is cleared).
    unsafe {
        let slot = &raw mut (*io).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND as usize].ptrs[0];
        let req = NonNull::new((*slot).cast::<Request>())?;
        *slot = ptr::null_mut();
        Some(KBox::from_raw(req.as_ptr()))
    }
}

/// `be_move_done` (FreeBSD 15): the frontend moved the data (CTL has
/// already turned a transport error or short data into an error status).
#[cfg(not(freebsd14))]
unsafe extern "C" fn be_move_done(io: *mut sys::ctl_io, _samethr: bool) -> c_int {
    // SAFETY: CTL calls this once per datamove, for an I/O datamove set up.
    if let Some(req) = unsafe { parked(io) } {
        crate::backend::io::moved(req);
    }
    0
}

/// `be_move_done` (FreeBSD 14, which has no `ctl_datamove_done_process`):
/// as 14's block backend, a transport error becomes an internal failure
/// and short DATA-OUT an INVALID FIELD IN CIU, while the status is still
/// NONE or SUCCESS.
#[cfg(freebsd14)]
unsafe extern "C" fn be_move_done(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: CTL calls this once per datamove, for an I/O datamove set up;
    // the status fields are ours.
    unsafe {
        let s = &raw mut (*io).scsiio;
        let status = (*io).io_hdr.status & sys::CTL_STATUS_MASK;
        if status == sys::CTL_STATUS_NONE || status == sys::CTL_SUCCESS {
            if (*io).io_hdr.port_status != 0 {
                sys::ctl_set_internal_failure(s, 1, (*io).io_hdr.port_status as u16);
            } else if (*s).kern_data_resid != 0
                && (*io).io_hdr.flags & sys::CTL_FLAG_DATA_MASK == sys::CTL_FLAG_DATA_OUT
            {
                sys::ctl_set_invalid_field_ciu(s);
            }
        }
        if let Some(req) = parked(io) {
            crate::backend::io::moved(req);
        }
    }
    0
}

bitflags::bitflags! {
    /// The LUN flags a backend gives CTL (`ctl_backend_lun_flags`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LunFlags: u32 {
        /// `req_lun_id` is valid: CTL must use that LUN number.
        const ID_REQ = sys::CTL_LUN_FLAG_ID_REQ;
        /// The LUN starts stopped.
        const STOPPED = sys::CTL_LUN_FLAG_STOPPED;
        /// The LUN starts without a medium.
        const NO_MEDIA = sys::CTL_LUN_FLAG_NO_MEDIA;
        /// The LUN is primary in a CTL HA pair (and on a single node, where
        /// a LUN that is not is unavailable).
        const PRIMARY = sys::CTL_LUN_FLAG_PRIMARY;
        /// `serial_num` is valid.
        const SERIAL_NUM = sys::CTL_LUN_FLAG_SERIAL_NUM;
        /// `device_id` is valid.
        const DEVID = sys::CTL_LUN_FLAG_DEVID;
        /// The LUN supports UNMAP.
        const UNMAP = sys::CTL_LUN_FLAG_UNMAP;
        /// The LUN starts with its tray open.
        const EJECTED = sys::CTL_LUN_FLAG_EJECTED;
        /// CTL refuses writes (DATA PROTECT).
        const READONLY = sys::CTL_LUN_FLAG_READONLY;
    }
}

/// Bytes of a LUN's serial number (VPD page 0x80) in CTL.
pub const SERIAL_LEN: usize = sys::CTL_SN_LEN as usize;
/// Bytes of a LUN's T10 device id in CTL.
pub const DEVICE_ID_LEN: usize = sys::CTL_DEVID_LEN as usize;

/// How a LUN is presented to CTL: the `struct ctl_be_lun` fields CTL reads
/// to answer INQUIRY, READ CAPACITY and the rest itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeLunParams {
    /// Peripheral device type (`T_DIRECT`, `T_CDROM`).
    pub lun_type: u8,
    /// Flags.
    pub flags: LunFlags,
    /// The last LBA (0 without a medium).
    pub maxlba: u64,
    /// Bytes per block.
    pub blocksize: u32,
    /// Logical blocks per physical block exponent.
    pub pblockexp: u16,
    /// Lowest LBA aligned to a physical block.
    pub pblockoff: u16,
    /// Logical blocks per unmap block exponent.
    pub ublockexp: u16,
    /// Lowest LBA aligned to an unmap block.
    pub ublockoff: u16,
    /// Optimal transfer length, in blocks (0: not reported).
    pub opttxferlen: u32,
    /// Serial number for VPD page 0x80, NUL padded (CTL pads it with spaces).
    pub serial_num: [u8; SERIAL_LEN],
    /// T10 device id, NUL padded.
    pub device_id: [u8; DEVICE_ID_LEN],
}

/// A LUN to hand to CTL.
pub struct LunConfig {
    /// What CTL presents.
    pub params: BeLunParams,
    /// The LUN number asked for (with `ID_REQ`).
    pub req_lun_id: u32,
    /// String options CTL reads (vendor, product, naa, ...).
    pub options: OwnedNvList,
}

/// A LUN of this backend: CTL's `struct ctl_be_lun` and the backend's own
/// state, in one allocation whose address CTL keeps.  It is reached through
/// a [`LunRef`], or borrowed from an I/O CTL handed the backend.
#[repr(C)]
pub struct BeLun {
    be_lun: UnsafeCell<sys::ctl_be_lun>,
    refs: AtomicUsize,
    lun: Lun,
}

// SAFETY: the ctl_be_lun fields are written by this backend only through the
// methods below (atomic-width stores CTL tolerates) or by CTL under its own
// locks; `refs` is atomic and `lun` is Sync.
unsafe impl Sync for BeLun {}

/// A counted reference to a LUN.  CTL holds one from a successful
/// [`BeLun::add`] until it calls `lun_shutdown`; the LUN is freed with the
/// last reference.
pub struct LunRef(NonNull<BeLun>);

// SAFETY: the LUN's shared state is Sync (above); references may move
// between threads.
unsafe impl Send for LunRef {}
// SAFETY: as above.
unsafe impl Sync for LunRef {}

impl LunRef {
    /// A LUN not yet known to CTL, with one reference (this one).
    pub fn new(config: LunConfig, lun: Lun) -> Result<LunRef, AllocError> {
        let p = config.params;
        // SAFETY: struct ctl_be_lun is plain data; all-zeroes is valid.
        let mut be: sys::ctl_be_lun = unsafe { mem::zeroed() };
        be.lun_type = p.lun_type;
        be.flags = p.flags.bits();
        be.maxlba = p.maxlba;
        be.blocksize = p.blocksize;
        be.pblockexp = p.pblockexp;
        be.pblockoff = p.pblockoff;
        be.ublockexp = p.ublockexp;
        be.ublockoff = p.ublockoff;
        be.opttxferlen = p.opttxferlen;
        be.req_lun_id = config.req_lun_id;
        be.serial_num = p.serial_num;
        be.device_id = p.device_id;
        be.lun_shutdown = Some(lun_shutdown);
        be.be = &raw mut sys::ctlpass_backend_driver;
        let cell = BeLun {
            be_lun: UnsafeCell::new(be),
            refs: AtomicUsize::new(1),
            lun,
        };
        let cell = KBox::new(cell, Wait::WaitOk)?;
        LIVE_LUNS.fetch_add(1, Ordering::AcqRel);
        // The options are set last: from here on the cell owns them.
        // SAFETY: the cell is not shared yet.
        unsafe { (*cell.be_lun.get()).options = config.options.into_raw() };
        Ok(LunRef(NonNull::from(&*KBox::leak(cell))))
    }

    /// Whether two references name the same LUN.
    pub fn same(&self, other: &LunRef) -> bool {
        self.0 == other.0
    }
}

// SAFETY: a LunRef dereferences to the heap cell it counts, which stays put
// while any reference exists.
unsafe impl super::sysctl::Owner for LunRef {}

impl core::ops::Deref for LunRef {
    type Target = BeLun;
    fn deref(&self) -> &BeLun {
        // SAFETY: a counted reference keeps the LUN alive.
        unsafe { self.0.as_ref() }
    }
}

impl BeLun {
    fn raw(&self) -> *mut sys::ctl_be_lun {
        self.be_lun.get()
    }

    /// The backend's state.
    pub fn lun(&self) -> &Lun {
        &self.lun
    }

    /// The LUN number CTL gave it (after [`BeLun::add`]).
    pub fn id(&self) -> u32 {
        // SAFETY: written by CTL in ctl_add_lun, before it returned.
        unsafe { (*self.raw()).lun_id }
    }

    /// The string option `name` the LUN was created with (or the backend
    /// added), as CTL keeps it.
    pub fn option(&self, name: &CStr) -> Option<&CStr> {
        // SAFETY: the options list belongs to the LUN from `LunRef::new` to
        // its last reference and is never changed meanwhile.
        unsafe { NvList::from_ptr((*self.raw()).options) }?.get(name)
    }

    /// The serial number and device id CTL shows for the LUN (`serial_num`
    /// and `device_id`, up to their first NUL), as CTL's LUN list gives
    /// them to ctld.
    pub fn ids(&self) -> (&[u8], &[u8]) {
        fn until_nul(b: &[u8]) -> &[u8] {
            b.get(..b.iter().position(|&c| c == 0).unwrap_or(b.len()))
                .unwrap_or(&[])
        }
        // SAFETY: fields set before ctl_add_lun and never changed.
        let be = unsafe { &*self.raw() };
        (until_nul(&be.serial_num), until_nul(&be.device_id))
    }

    /// The LUN's current last LBA and block size.
    pub fn geometry(&self) -> (u64, u32) {
        // SAFETY: fields this backend writes; aligned 64-bit reads are atomic.
        unsafe {
            (
                ptr::read_volatile(&raw const (*self.raw()).maxlba),
                (*self.raw()).blocksize,
            )
        }
    }

    /// Hands the LUN to CTL (`ctl_add_lun`, which may sleep): it is enabled
    /// on every port, and CTL holds a reference until `lun_shutdown`.
    pub fn add(&self) -> Result<u32, Errno> {
        self.refs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a fully set up ctl_be_lun whose address stays valid while
        // CTL's reference exists.
        match Errno::result(unsafe { sys::ctl_add_lun(self.raw()) }) {
            Ok(()) => Ok(self.id()),
            Err(e) => {
                // CTL did not keep it.
                self.refs.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Asks CTL to remove the LUN (`ctl_remove_lun`): it is disabled at
    /// once and `lun_shutdown` follows when its last I/O completes, possibly
    /// before this returns.
    pub fn remove(&self) {
        // SAFETY: a LUN CTL holds; ctl_remove_lun always returns 0.
        unsafe { sys::ctl_remove_lun(self.raw()) };
    }

    /// The options CTL keeps for the LUN.
    pub fn options(&self) -> Option<NvList<'_>> {
        // SAFETY: the list CTL reads; this backend replaces it only with
        // [`BeLun::replace_options`], whose caller keeps the old one alive
        // until CTL is done with the LUN, and never changes a list in place.
        unsafe { NvList::from_ptr(ptr::read_volatile(&raw const (*self.raw()).options)) }
    }

    /// Replaces the options CTL keeps for the LUN (as CTL's own backends do
    /// on a modify) and returns the old list, which CTL may still be
    /// reading: the caller keeps it until CTL has shut the LUN down.
    pub fn replace_options(&self, options: OwnedNvList) -> Option<OwnedNvList> {
        // SAFETY: a pointer-sized aligned store, atomic on amd64; the old
        // list came from `into_raw` and is handed back to one owner.
        unsafe {
            let old = ptr::read_volatile(&raw const (*self.raw()).options);
            ptr::write_volatile(&raw mut (*self.raw()).options, options.into_raw());
            OwnedNvList::from_raw(old)
        }
    }

    /// Records a new geometry and tells CTL (`ctl_lun_capacity_changed`),
    /// which raises CAPACITY DATA HAS CHANGED for every initiator.
    pub fn capacity_changed(&self, maxlba: u64, pblockexp: u16, pblockoff: u16) {
        // SAFETY: fields CTL reads without locks: the 64-bit store is
        // atomic on amd64; then CTL is told.
        unsafe {
            ptr::write_volatile(&raw mut (*self.raw()).maxlba, maxlba);
            (*self.raw()).pblockexp = pblockexp;
            (*self.raw()).pblockoff = pblockoff;
            sys::ctl_lun_capacity_changed(self.raw());
        }
    }

    /// Tells CTL the medium state changed the way the device reported
    /// (`ctl_start_lun`, `ctl_stop_lun`, `ctl_lun_has_media`,
    /// `ctl_lun_ejected`), so that CTL's own answers (TEST UNIT READY, and
    /// its refusals of media access) agree with the device.  No lock may be
    /// held: CTL takes its own.
    pub fn media_event(&self, event: MediaEvent) {
        let f = match event {
            MediaEvent::Started => sys::ctl_start_lun,
            MediaEvent::Stopped => sys::ctl_stop_lun,
            MediaEvent::Loaded => sys::ctl_lun_has_media,
            MediaEvent::Ejected => sys::ctl_lun_ejected,
            MediaEvent::Gone => sys::ctl_lun_no_media,
        };
        // SAFETY: a LUN CTL holds (the caller has it from a reference or an
        // outstanding I/O); these always return 0.
        unsafe { f(self.raw()) };
    }
}

/// A change of a LUN's medium state CTL must know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// The unit was started (START STOP UNIT with START).
    Started,
    /// The unit was stopped.
    Stopped,
    /// A medium was loaded.
    Loaded,
    /// The medium was ejected.
    Ejected,
    /// The medium (here: the whole device) is gone.
    Gone,
}

impl Clone for LunRef {
    fn clone(&self) -> LunRef {
        self.refs.fetch_add(1, Ordering::Relaxed);
        LunRef(self.0)
    }
}

impl Drop for LunRef {
    fn drop(&mut self) {
        if self.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // SAFETY: the last reference: nothing else can reach the cell, which
        // came from KBox::leak; the options list is the cell's.
        unsafe {
            let cell = KBox::from_raw(self.0.as_ptr());
            drop(OwnedNvList::from_raw((*cell.be_lun.get()).options));
            drop(cell);
        }
        LIVE_LUNS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// LUN cells not yet freed: a thread that completed a LUN's last I/O may
/// still hold a reference for a moment after CTL shut the LUN down.
static LIVE_LUNS: AtomicUsize = AtomicUsize::new(0);

/// How many LUNs of this backend are still allocated.
pub fn live_luns() -> usize {
    LIVE_LUNS.load(Ordering::Acquire)
}

/// `ctl_be_lun.lun_shutdown`: CTL is done with the LUN (its last I/O
/// completed after `ctl_remove_lun`) and gives back its reference.
unsafe extern "C" fn lun_shutdown(be_lun: *mut sys::ctl_be_lun) {
    // SAFETY: be_lun is the first field of a BeLun (repr(C)) CTL held a
    // counted reference to since ctl_add_lun; that reference is now ours.
    let lun = LunRef(unsafe { NonNull::new_unchecked(be_lun.cast::<BeLun>()) });
    crate::backend::lun_shutdown(lun);
}

/// The LUN of a `ctl_be_lun` CTL passes back (lun_info, or an I/O's
/// `CTL_BACKEND_LUN`), borrowed for as long as CTL guarantees it lives.
///
/// # Safety
///
/// `be_lun` is a LUN of this backend, between `ctl_add_lun` and
/// `lun_shutdown`, for `'a`.
pub(super) unsafe fn be_lun_of<'a>(be_lun: *mut sys::ctl_be_lun) -> &'a BeLun {
    // SAFETY: the caller's contract; be_lun is a BeLun's first field.
    unsafe { &*be_lun.cast::<BeLun>() }
}

/// Where `lun_info` writes the XML elements `ctladm devlist -v` shows.
pub struct Sbuf(NonNull<sys::sbuf>);

impl Sbuf {
    /// # Safety
    ///
    /// `sb` is an sbuf CTL lends for the duration of the call.
    pub(super) unsafe fn from_ptr(sb: *mut sys::sbuf) -> Option<Sbuf> {
        NonNull::new(sb).map(Sbuf)
    }

    /// Appends `\t<name>value</name>\n` (indented like the elements CTL
    /// writes around it), escaping `&`, `<` and `>` in the value as CTL's
    /// XML needs.
    pub fn element(&mut self, name: &str, value: fmt::Arguments<'_>) {
        let mut text = FmtBuf::<256>::new();
        let _ = write!(text, "\t<{name}>");
        let _ = XmlEscaped(&mut text).write_fmt(value);
        let _ = writeln!(text, "</{name}>");
        // SAFETY: appending a C string to the lent sbuf.
        unsafe { sys::sbuf_cat(self.0.as_ptr(), text.as_c_str().as_ptr()) };
    }
}

/// Escapes what it writes for XML text.
struct XmlEscaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for XmlEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '&' => self.0.write_str("&amp;")?,
                '<' => self.0.write_str("&lt;")?,
                '>' => self.0.write_str("&gt;")?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

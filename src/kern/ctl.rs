//! CTL, as the passthrough backend sees it: LUN requests from ctladm and
//! ctld, and the I/O CTL hands the backend.

use core::fmt::{self, Write};
use core::ptr::NonNull;

use super::fmt::FmtBuf;
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

/// An I/O CTL handed to the backend (`union ctl_io` of type SCSI).
pub struct CtlIo(NonNull<sys::ctl_io>);

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

impl CtlIo {
    /// # Safety
    ///
    /// `io` is an I/O CTL handed to this backend and not yet completed; the
    /// `CtlIo` is its only handle.
    pub(super) unsafe fn from_ptr(io: *mut sys::ctl_io) -> Option<CtlIo> {
        NonNull::new(io).map(CtlIo)
    }

    /// Completes the I/O with CHECK CONDITION, HARDWARE ERROR / INTERNAL
    /// TARGET FAILURE (`ctl_set_internal_failure`).
    pub fn fail_internal(self, completion: Completion) {
        let io = self.0.as_ptr();
        // SAFETY: the I/O is ours until completed here, exactly once; CTL
        // I/Os handed to a backend are SCSI I/Os, so `scsiio` is the live
        // member of the union.
        unsafe {
            sys::ctl_set_internal_failure(&raw mut (*io).scsiio, 1, 0);
            match completion {
                Completion::DataSubmit => sys::ctl_data_submit_done(io),
                Completion::ConfigRead => sys::ctl_config_read_done(io),
                Completion::ConfigWrite => sys::ctl_config_write_done(io),
            }
        }
    }
}

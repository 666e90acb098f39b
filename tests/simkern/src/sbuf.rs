//! sbuf(9) for the simulated kernel: the growable strings CTL hands a
//! backend's `lun_info` to append XML to.  The module only appends; the
//! simulated CTL creates and reads them.

use std::ffi::{CStr, c_char, c_int};

use crate::sys;

/// An auto-extending sbuf and its text, at an address that does not move.
pub struct Sbuf(Box<Text>);

/// What a `struct sbuf` pointer points to in the simulated kernel.
#[derive(Default)]
struct Text(String);

impl Sbuf {
    /// An empty sbuf (`sbuf_new_auto`).
    pub fn new() -> Sbuf {
        Sbuf(Box::default())
    }

    /// The pointer a kernel function receives.
    pub fn as_ptr(&mut self) -> *mut sys::sbuf {
        (&raw mut *self.0).cast()
    }

    /// What was appended.
    pub fn text(&self) -> &str {
        &self.0.0
    }
}

impl Default for Sbuf {
    fn default() -> Self {
        Self::new()
    }
}

fn text<'a>(sb: *mut sys::sbuf) -> &'a mut String {
    // SAFETY: every sbuf the simulated kernel hands out is an Sbuf's Text.
    unsafe { &mut (*sb.cast::<Text>()).0 }
}

/// `sbuf_cat`.
///
/// # Safety
///
/// `sb` comes from an [`Sbuf`]; `s` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbuf_cat(sb: *mut sys::sbuf, s: *const c_char) -> c_int {
    // SAFETY: the caller's contract.
    text(sb).push_str(&unsafe { CStr::from_ptr(s) }.to_string_lossy());
    0
}

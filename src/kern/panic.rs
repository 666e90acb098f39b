//! The panic path: every Rust panic in the kernel module ends in panic(9)
//! with the panic's message and location.

use core::fmt::{self, Write};
use core::panic::Location;

use super::fmt::FmtBuf;
use crate::sys;

/// Longest panic message handed to panic(9); longer ones end in `...`.
pub const PANIC_MESSAGE_MAX: usize = 256;

/// Formats the message the kernel panics with.
pub fn panic_message(message: &dyn fmt::Display, location: Option<&Location<'_>>) -> FmtBuf<PANIC_MESSAGE_MAX> {
    let mut buf = FmtBuf::new();
    // Writing to a FmtBuf never fails; it truncates.
    let _ = match location {
        Some(l) => write!(buf, "ctlpass: {message} at {}:{}:{}", l.file(), l.line(), l.column()),
        None => write!(buf, "ctlpass: {message}"),
    };
    buf
}

/// Panics the kernel with `message`, through panic(9).
pub fn kernel_panic(message: &dyn fmt::Display, location: Option<&Location<'_>>) -> ! {
    let buf = panic_message(message, location);
    // SAFETY: "%s" consumes exactly one argument, a NUL-terminated string,
    // which `as_c_str` provides.  panic(9) does not return.
    unsafe { sys::panic(c"%s".as_ptr(), buf.as_c_str().as_ptr()) }
}

/// The kernel object's panic handler.  Hosted builds (the simulated kernel)
/// use std's, and route it here through a panic hook where they want the
/// kernel's behaviour.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic_handler(info: &core::panic::PanicInfo<'_>) -> ! {
    kernel_panic(&info.message(), info.location())
}

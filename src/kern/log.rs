//! Kernel messages through printf(9).

use core::fmt::{self, Write};

use super::fmt::FmtBuf;
use crate::sys;

/// Longest message `printf!` prints; longer ones end in `...`.
pub const MESSAGE_MAX: usize = 256;

/// Prints a formatted message on the console and in the kernel message
/// buffer, like printf(9), using Rust's formatting syntax.
///
/// ```ignore
/// printf!("ctlpass{}: attached to {}\n", unit, path);
/// ```
#[macro_export]
macro_rules! printf {
    ($($arg:tt)*) => {
        $crate::kern::log::print(::core::format_args!($($arg)*))
    };
}

/// Formats `args` into a bounded buffer and hands it to printf(9).
pub fn print(args: fmt::Arguments<'_>) {
    let mut buf = FmtBuf::<MESSAGE_MAX>::new();
    // Writing to a FmtBuf never fails; it truncates.
    let _ = buf.write_fmt(args);
    // SAFETY: "%s" consumes exactly one argument, a NUL-terminated string,
    // which `as_c_str` provides and which outlives the call.
    unsafe {
        sys::printf(c"%s".as_ptr(), buf.as_c_str().as_ptr());
    }
}

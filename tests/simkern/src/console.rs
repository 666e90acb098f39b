//! The console and kernel message buffer (`dmesg`), and kernel panics.

use std::ffi::{CStr, c_char};
use std::sync::Mutex;

static MSGBUF: Mutex<String> = Mutex::new(String::new());

/// Appends kernel output (from printf(9), through `csrc/kern.c`).
#[unsafe(no_mangle)]
pub extern "C" fn simkern_console_write(buf: *const c_char, len: usize) {
    // SAFETY: kern.c passes its formatting buffer and the length it wrote.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    let text = String::from_utf8_lossy(bytes);
    if std::env::var_os("SIMKERN_CONSOLE").is_some() {
        eprint!("{text}");
    }
    MSGBUF.lock().unwrap_or_else(|e| e.into_inner()).push_str(&text);
}

/// Prints a message as the kernel would.
pub fn print(text: &str) {
    simkern_console_write(text.as_ptr().cast(), text.len());
}

/// The kernel message buffer.
pub fn dmesg() -> String {
    MSGBUF.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Empties the message buffer (at boot).
pub(crate) fn clear() {
    MSGBUF.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// panic(9) (through `csrc/kern.c`): the simulated machine stops.  The
/// message goes to standard error with the end of the message buffer, and
/// the process aborts, so that a test expecting a panic sees it in a child
/// process (see `crate::child`) and any other test fails loudly.
///
/// # Safety
///
/// `msg` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn simkern_panic_message(msg: *const c_char) -> ! {
    // SAFETY: kern.c passes a NUL-terminated buffer.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    panic_now(&msg)
}

/// Panics the simulated kernel with `msg`.
pub fn panic_now(msg: &str) -> ! {
    let log = dmesg();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    eprintln!("--- simulated kernel message buffer (last lines) ---");
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
    eprintln!("panic: {msg}");
    eprintln!("{}", std::backtrace::Backtrace::force_capture());
    std::process::abort()
}

/// Panics the simulated kernel with a formatted message, like panic(9).
#[macro_export]
macro_rules! kpanic {
    ($($arg:tt)*) => { $crate::console::panic_now(&format!($($arg)*)) };
}

//! Kernel error numbers (sys/errno.h) as a typed error.

use core::ffi::c_int;
use core::fmt;

use crate::sys;

/// An error number from `sys/errno.h`, as the kernel's entry points return it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(c_int);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "` from sys/errno.h.")]
                pub const $name: Errno = Errno(sys::$name as c_int);
            )*

            /// The symbolic name of the error, if it is one ctlpass uses.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Errno::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos!(
    EPERM, ENOENT, EINTR, EIO, ENXIO, ENOMEM, EBUSY, EEXIST, ENODEV, EINVAL, ENOTTY, ENOSPC, EOPNOTSUPP, ERESTART,
);

impl Errno {
    /// The raw value, for returning to C.
    pub fn as_raw(self) -> c_int {
        self.0
    }

    /// Wraps a raw value returned by a kernel function; 0 is success.
    pub fn result(raw: c_int) -> Result<(), Errno> {
        if raw == 0 { Ok(()) } else { Err(Errno(raw)) }
    }

    /// Converts a result to the kernel's convention: 0 or an error number.
    pub fn to_raw(result: Result<(), Errno>) -> c_int {
        match result {
            Ok(()) => 0,
            Err(e) => e.0,
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

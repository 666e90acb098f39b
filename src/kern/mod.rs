//! Kernel support: the only code that touches the raw FreeBSD bindings
//! (`crate::sys`).  It wraps them in safe types for `crate::backend` and
//! `crate::periph`, and holds the entry points the C shim declares.

pub mod alloc;
pub mod callout;
pub mod cam;
pub mod ctl;
pub mod entry;
pub mod errno;
pub mod fmt;
pub mod log;
pub mod nv;
pub mod panic;
pub mod pool;
pub mod queue;
pub mod sync;
pub mod sysctl;
pub mod task;

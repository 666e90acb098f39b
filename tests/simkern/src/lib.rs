//! A simulated FreeBSD kernel that runs the real ctlpass crate on Linux.
//!
//! It implements, in Rust (and a little C for variadic functions), the
//! kernel functions ctlpass calls: malloc(9) with per-type statistics,
//! mutex(9) with WITNESS-like checks, the kernel linker and module events,
//! sysctl registration, CAM (buses, devices, async events, peripheral
//! drivers and periph reference counting) and CTL backend registration.
//! The module's C shim (`kmod/ctlpass.c`) is compiled for the host with
//! the real FreeBSD headers and linked in, so that `kldload` runs the same
//! SYSINITs and module event handlers a FreeBSD kernel would.
//!
//! Devices are emulated (`devices`); tests boot a [`Machine`] with them.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

// The kernel module this kernel runs: its C shim refers to its Rust entry
// points, which must be linked in even where no Rust code names them.
pub extern crate ctlpass;

pub mod callout;
pub mod cam;
pub mod cdb;
pub mod child;
pub mod console;
pub mod ctl;
pub mod ctl_scsi;
pub mod ctld;
pub mod devices;
pub mod fasthash;
pub mod idle;
pub mod iscsi;
pub mod linker;
pub mod lock;
pub mod machine;
pub mod malloc;
pub mod manpage;
pub mod nv;
pub mod remote;
pub mod sbuf;
pub mod shell;
pub mod soak;
pub mod sys;
pub mod sysctl;
pub mod taskqueue;

pub use machine::{Config, Machine};

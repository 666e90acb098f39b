//! ctlpass: exports real SCSI devices (disks, CDs, tapes, changers) through
//! FreeBSD's CAM Target Layer (CTL), so that iSCSI initiators see and drive
//! the physical device itself.
//!
//! The kernel module (`ctlpass.ko`) is this crate linked with a thin C shim
//! (`kmod/`).  It holds two kernel modules: the CAM peripheral driver
//! `ctlpass` ([`periph`]), which attaches to every SCSI device, and the CTL
//! backend `passthrough` ([`backend`]), which turns those devices into LUNs.
//!
//! Layers: [`scsi`] is pure SCSI logic; [`kern`] is the only code that
//! touches the raw bindings ([`sys`]); [`backend`] and [`periph`] use
//! `kern`'s safe types.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
// Integer arithmetic that could overflow, divide by zero or shift too far
// is written as checked, saturating or wrapping code: nothing in the kernel
// object may panic (scripts/audit-kobj.sh counts the panic call sites).
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

// Hosted builds (the simulated kernel and the tests) link the Rust standard
// library, which provides the panic handler and global allocator that the
// kernel object gets from `kern`.
#[cfg(not(target_os = "none"))]
extern crate std;

extern crate alloc;

pub mod backend;
pub mod kern;
pub mod periph;
pub mod scsi;
pub mod sys;

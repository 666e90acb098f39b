//! Pure SCSI logic (SPC/SBC/MMC/SSC/SMC): decoding and encoding of what
//! devices and initiators exchange.  No FFI and no `unsafe`: everything here
//! is tested and fuzzed on the host.

pub mod capacity;
pub mod cdb;
pub mod inquiry;
pub mod sbc;
pub mod sense;
pub mod vpd;

pub use inquiry::{Ascii, Inquiry, PeripheralType, Qualifier};

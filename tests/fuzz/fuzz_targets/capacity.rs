//! `scsi::capacity`: READ CAPACITY(10) and (16) data decode to the fields at
//! their SBC-4 offsets, or are refused as short or as having no block size;
//! a capacity encodes back to data that decodes the same; the block count
//! and byte size saturate instead of wrapping.

#![no_main]

use ctlpass::scsi::capacity::{self, Capacity, CapacityError};
use ctlpass_fuzz::be;
use libfuzzer_sys::fuzz_target;

/// READ CAPACITY(16) data (32 bytes) holding `c`.
fn encode_16(c: &Capacity) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0..8].copy_from_slice(&c.last_lba.to_be_bytes());
    d[8..12].copy_from_slice(&c.block_size.to_be_bytes());
    d[13] = c.physical_exponent;
    let [hi, lo] = c.lowest_aligned.to_be_bytes();
    d[14] = (if c.lbpme { 0x80 } else { 0 }) | hi;
    d[15] = lo;
    d
}

/// The checks every decoded capacity passes.
fn check(c: &Capacity) {
    assert_ne!(c.block_size, 0);
    assert_eq!(c.blocks(), c.last_lba.saturating_add(1));
    let bytes = u128::from(c.blocks()) * u128::from(c.block_size);
    assert_eq!(u128::from(c.bytes()), bytes.min(u128::from(u64::MAX)));
}

fuzz_target!(|data: &[u8]| {
    match capacity::parse_16(data) {
        Ok(c) => {
            assert!(data.len() >= 16);
            assert_eq!(c.last_lba, be::<8>(data, 0));
            assert_eq!(u64::from(c.block_size), be::<4>(data, 8));
            assert_eq!(c.physical_exponent, data[13] & 0x0f);
            assert_eq!(u64::from(c.lowest_aligned), be::<2>(data, 14) & 0x3fff);
            assert_eq!(c.lbpme, data[14] & 0x80 != 0);
            check(&c);
            assert_eq!(capacity::parse_16(&encode_16(&c)), Ok(c));
        }
        Err(CapacityError::Short(n)) => assert!(n == data.len() && n < 16),
        Err(e @ CapacityError::ZeroBlockSize) => {
            assert!(data.len() >= 16 && be::<4>(data, 8) == 0);
            assert!(!e.to_string().is_empty());
        }
    }
    match capacity::parse_10(data) {
        Ok(c) => {
            assert!(data.len() >= 8);
            assert_eq!(c.last_lba, be::<4>(data, 0));
            assert_eq!(u64::from(c.block_size), be::<4>(data, 4));
            assert_eq!((c.physical_exponent, c.lowest_aligned, c.lbpme), (0, 0, false));
            check(&c);
            let mut d = (c.last_lba as u32).to_be_bytes().to_vec();
            d.extend_from_slice(&c.block_size.to_be_bytes());
            assert_eq!(capacity::parse_10(&d), Ok(c));
        }
        Err(e @ CapacityError::Short(n)) => {
            assert!(n == data.len() && n < 8);
            assert!(e.to_string().contains(&n.to_string()));
        }
        Err(CapacityError::ZeroBlockSize) => assert!(data.len() >= 8 && be::<4>(data, 4) == 0),
    }
});

//! READ CAPACITY parameter data (SBC-4 5.20, 5.21).

use core::fmt;

/// The geometry of a direct-access or CD device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// The last logical block address.
    pub last_lba: u64,
    /// Bytes per logical block.
    pub block_size: u32,
    /// Logical blocks per physical block, as a power of two exponent.
    pub physical_exponent: u8,
    /// The lowest LBA aligned to a physical block.
    pub lowest_aligned: u16,
    /// Logical block provisioning management enabled (LBPME): the device
    /// can unmap.
    pub lbpme: bool,
}

impl Capacity {
    /// The number of logical blocks.
    pub fn blocks(&self) -> u64 {
        self.last_lba.saturating_add(1)
    }

    /// The capacity in bytes (saturating).
    pub fn bytes(&self) -> u64 {
        self.blocks().saturating_mul(u64::from(self.block_size))
    }
}

/// Parameter data that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacityError {
    /// Fewer bytes than the parameter data needs.
    Short(usize),
    /// A block size of zero.
    ZeroBlockSize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapacityError::Short(n) => write!(f, "READ CAPACITY returned only {n} bytes"),
            CapacityError::ZeroBlockSize => f.write_str("READ CAPACITY reports a block size of 0"),
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Decodes READ CAPACITY(16) data (at least 32 bytes... the first 16 carry
/// what ctlpass uses, so 16 suffice).
pub fn parse_16(data: &[u8]) -> Result<Capacity, CapacityError> {
    let short = CapacityError::Short(data.len());
    let last_lba = u64::from_be_bytes(data.get(0..8).and_then(|s| s.try_into().ok()).ok_or(short)?);
    let block_size = be32(data, 8).ok_or(short)?;
    let [b13, b14, b15] = match data.get(13..16) {
        Some(&[a, b, c]) => [a, b, c],
        _ => return Err(short),
    };
    if block_size == 0 {
        return Err(CapacityError::ZeroBlockSize);
    }
    Ok(Capacity {
        last_lba,
        block_size,
        physical_exponent: b13 & 0x0f,
        lowest_aligned: u16::from_be_bytes([b14 & 0x3f, b15]),
        lbpme: b14 & 0x80 != 0,
    })
}

/// Decodes READ CAPACITY(10) data.  A last LBA of 0xFFFFFFFF means the
/// device is too large for it (and READ CAPACITY(16) must be used).
pub fn parse_10(data: &[u8]) -> Result<Capacity, CapacityError> {
    let short = CapacityError::Short(data.len());
    let last_lba = be32(data, 0).ok_or(short)?;
    let block_size = be32(data, 4).ok_or(short)?;
    if block_size == 0 {
        return Err(CapacityError::ZeroBlockSize);
    }
    Ok(Capacity {
        last_lba: u64::from(last_lba),
        block_size,
        physical_exponent: 0,
        lowest_aligned: 0,
        lbpme: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capacity_16_fields() {
        let mut d = [0u8; 32];
        d[0..8].copy_from_slice(&0x1_2345_6789u64.to_be_bytes());
        d[8..12].copy_from_slice(&512u32.to_be_bytes());
        d[13] = 0x23; // P_I_EXPONENT 2, LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT 3
        d[14] = 0xc1; // LBPME, LBPRZ, lowest aligned LBA high bits 1
        d[15] = 0x02;
        let c = parse_16(&d).unwrap();
        assert_eq!(
            c,
            Capacity {
                last_lba: 0x1_2345_6789,
                block_size: 512,
                physical_exponent: 3,
                lowest_aligned: 0x0102,
                lbpme: true
            }
        );
        assert_eq!(c.blocks(), 0x1_2345_678a);
        assert_eq!(c.bytes(), 0x1_2345_678a * 512);
    }

    #[test]
    fn read_capacity_10_fields() {
        let c = parse_10(&[0, 0, 0x3f, 0xff, 0, 0, 0x10, 0]).unwrap();
        assert_eq!(c.last_lba, 0x3fff);
        assert_eq!(c.block_size, 4096);
        assert!(!c.lbpme);
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_16(&[0; 15]), Err(CapacityError::Short(15)));
        assert_eq!(parse_10(&[0; 7]), Err(CapacityError::Short(7)));
        assert_eq!(parse_10(&[0; 8]), Err(CapacityError::ZeroBlockSize));
        assert_eq!(parse_16(&[0; 32]), Err(CapacityError::ZeroBlockSize));
        let mut big = [0xffu8; 16];
        big[8..12].copy_from_slice(&4096u32.to_be_bytes());
        assert_eq!(parse_16(&big).unwrap().bytes(), u64::MAX, "saturates");
    }
}

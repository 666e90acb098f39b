//! The block commands (SBC-4) the backend sends for the I/O CTL hands it:
//! each regenerated from the range CTL parsed, in the shortest form that
//! holds it, keeping FUA and DPO; and the splitting of a transfer into
//! chunks the device takes and of UNMAP block descriptors into commands
//! within the device's limits.

use super::cdb::Cdb;

/// READ(10).
pub const READ_10: u8 = 0x28;
/// READ(16).
pub const READ_16: u8 = 0x88;
/// WRITE(10).
pub const WRITE_10: u8 = 0x2a;
/// WRITE(16).
pub const WRITE_16: u8 = 0x8a;
/// WRITE AND VERIFY(10).
pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
/// WRITE AND VERIFY(16).
pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
/// VERIFY(10).
pub const VERIFY_10: u8 = 0x2f;
/// VERIFY(16).
pub const VERIFY_16: u8 = 0x8f;
/// COMPARE AND WRITE.
pub const COMPARE_AND_WRITE: u8 = 0x89;
/// WRITE SAME(10).
pub const WRITE_SAME_10: u8 = 0x41;
/// WRITE SAME(16).
pub const WRITE_SAME_16: u8 = 0x93;
/// UNMAP.
pub const UNMAP: u8 = 0x42;
/// REQUEST SENSE.
pub const REQUEST_SENSE: u8 = 0x03;
/// SERVICE ACTION IN(16), whose service action 0x12 is GET LBA STATUS.
pub const SERVICE_ACTION_IN_16: u8 = 0x9e;

/// FUA in byte 1 of READ, WRITE and COMPARE AND WRITE.
const FUA: u8 = 0x08;
/// DPO in byte 1.
const DPO: u8 = 0x10;
/// WRITE SAME's byte 1: UNMAP.
pub const WS_UNMAP: u8 = 0x08;
/// WRITE SAME's byte 1: ANCHOR.
pub const WS_ANCHOR: u8 = 0x10;
/// WRITE SAME(16)'s byte 1: NDOB (no data-out buffer).
pub const WS_NDOB: u8 = 0x01;

/// Bytes of an UNMAP parameter list header.
pub const UNMAP_HEADER_LEN: usize = 8;
/// Bytes of an UNMAP block descriptor.
pub const UNMAP_DESCRIPTOR_LEN: usize = 16;

/// Cache and ordering hints of a transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// Force unit access.
    pub fua: bool,
    /// Disable page out.
    pub dpo: bool,
}

impl Hints {
    fn byte1(self) -> u8 {
        (if self.fua { FUA } else { 0 }) | (if self.dpo { DPO } else { 0 })
    }
}

/// A 10-byte or 16-byte CDB of the family `(op10, op16)` with `byte1`, for
/// `blocks` blocks at `lba`: the 10-byte form when the range fits it.
fn rw(op10: u8, op16: u8, byte1: u8, lba: u64, blocks: u32) -> Cdb {
    match (u32::try_from(lba), u16::try_from(blocks)) {
        (Ok(lba), Ok(blocks)) => {
            let [l0, l1, l2, l3] = lba.to_be_bytes();
            let [b0, b1] = blocks.to_be_bytes();
            Cdb::from_array([op10, byte1, l0, l1, l2, l3, 0, b0, b1, 0])
        }
        _ => rw16(op16, byte1, lba, blocks),
    }
}

/// The 16-byte CDB `op16` with `byte1` for `blocks` blocks at `lba`.
fn rw16(op16: u8, byte1: u8, lba: u64, blocks: u32) -> Cdb {
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lba.to_be_bytes();
    let [b0, b1, b2, b3] = blocks.to_be_bytes();
    Cdb::from_array([op16, byte1, l0, l1, l2, l3, l4, l5, l6, l7, b0, b1, b2, b3, 0, 0])
}

/// READ(10) or READ(16).
pub fn read(lba: u64, blocks: u32, hints: Hints) -> Cdb {
    rw(READ_10, READ_16, hints.byte1(), lba, blocks)
}

/// WRITE(10) or WRITE(16).
pub fn write(lba: u64, blocks: u32, hints: Hints) -> Cdb {
    rw(WRITE_10, WRITE_16, hints.byte1(), lba, blocks)
}

/// WRITE AND VERIFY(10) or (16), BYTCHK 0 (the medium is verified, the
/// data not compared again).
pub fn write_and_verify(lba: u64, blocks: u32, hints: Hints) -> Cdb {
    rw(
        WRITE_AND_VERIFY_10,
        WRITE_AND_VERIFY_16,
        if hints.dpo { DPO } else { 0 },
        lba,
        blocks,
    )
}

/// VERIFY(10) or (16); with `compare`, BYTCHK 01b: the initiator's data is
/// compared with the medium.
pub fn verify(lba: u64, blocks: u32, compare: bool, hints: Hints) -> Cdb {
    let byte1 = (if hints.dpo { DPO } else { 0 }) | (if compare { 0x02 } else { 0 });
    rw(VERIFY_10, VERIFY_16, byte1, lba, blocks)
}

/// COMPARE AND WRITE of `blocks` blocks (at most 255): `2 × blocks` blocks
/// of data, the compare half then the write half.
pub fn compare_and_write(lba: u64, blocks: u8, hints: Hints) -> Cdb {
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lba.to_be_bytes();
    Cdb::from_array([
        COMPARE_AND_WRITE,
        hints.byte1(),
        l0,
        l1,
        l2,
        l3,
        l4,
        l5,
        l6,
        l7,
        0,
        0,
        0,
        blocks,
        0,
        0,
    ])
}

/// WRITE SAME(10) or (16) with byte 1's UNMAP, ANCHOR and NDOB bits
/// (NDOB, and ranges beyond the 10-byte form, take the 16-byte form).
pub fn write_same(lba: u64, blocks: u32, byte1: u8) -> Cdb {
    let byte1 = byte1 & (WS_UNMAP | WS_ANCHOR | WS_NDOB);
    if byte1 & WS_NDOB != 0 {
        return rw16(WRITE_SAME_16, byte1, lba, blocks);
    }
    rw(WRITE_SAME_10, WRITE_SAME_16, byte1, lba, blocks)
}

/// UNMAP with a parameter list of `len` bytes; ANCHOR from byte 1 of the
/// initiator's CDB.
pub fn unmap(len: u16, anchor: bool) -> Cdb {
    let [n0, n1] = len.to_be_bytes();
    Cdb::from_array([UNMAP, u8::from(anchor), 0, 0, 0, 0, 0, n0, n1, 0])
}

/// GET LBA STATUS from `lba`, with room for `len` bytes.
pub fn get_lba_status(lba: u64, len: u32) -> Cdb {
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lba.to_be_bytes();
    let [n0, n1, n2, n3] = len.to_be_bytes();
    Cdb::from_array([
        SERVICE_ACTION_IN_16,
        0x12,
        l0,
        l1,
        l2,
        l3,
        l4,
        l5,
        l6,
        l7,
        n0,
        n1,
        n2,
        n3,
        0,
        0,
    ])
}

/// REQUEST SENSE for `len` bytes (fixed format).
pub fn request_sense(len: u8) -> Cdb {
    Cdb::from_array([REQUEST_SENSE, 0, 0, 0, len, 0])
}

/// The next piece of a transfer of `blocks` blocks of which `done` are
/// done, at most `max` blocks: its first block (relative) and length.
pub fn next_chunk(blocks: u32, done: u32, max: u32) -> Option<(u32, u32)> {
    let left = blocks.checked_sub(done).filter(|&l| l > 0)?;
    Some((done, left.min(max.max(1))))
}

/// What a device takes in one UNMAP command (VPD page 0xB0; 0 means no
/// limit was reported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapLimits {
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_lbas: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_descriptors: u32,
}

/// Where a split of UNMAP block descriptors has got to: the descriptor,
/// and blocks of it already covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapCursor {
    /// Index of the descriptor.
    pub index: usize,
    /// Blocks of it already sent.
    pub sent: u32,
}

/// Fills `out` with the next UNMAP parameter list from `descriptors` (16
/// bytes each, as the initiator sent them and CTL checked them), from
/// `cursor`, within `limits` and `out`'s room; returns the list's length
/// and the cursor after it, or `None` when every descriptor is sent.
/// Zero-length descriptors are skipped; a descriptor longer than the
/// device's LBA count is split.  `out` must have room for the header and
/// one descriptor (24 bytes): with less, `None` comes back at once, as if
/// every descriptor were sent.
pub fn next_unmap(
    descriptors: &[u8],
    cursor: UnmapCursor,
    limits: UnmapLimits,
    out: &mut [u8],
) -> Option<(usize, UnmapCursor)> {
    let room = out.len().saturating_sub(UNMAP_HEADER_LEN) / UNMAP_DESCRIPTOR_LEN;
    let max_descriptors = match limits.max_descriptors {
        0 => room,
        n => room.min(n as usize),
    };
    let max_lbas = if limits.max_lbas == 0 {
        u64::from(u32::MAX)
    } else {
        u64::from(limits.max_lbas)
    };
    let mut cur = cursor;
    let (mut count, mut lbas) = (0usize, 0u64);
    while count < max_descriptors && lbas < max_lbas {
        let start = cur.index.checked_mul(UNMAP_DESCRIPTOR_LEN)?;
        let Some(d) = descriptors.get(start..start.checked_add(UNMAP_DESCRIPTOR_LEN)?) else {
            break;
        };
        let (lba, len) = (be64(d, 0), be32(d, 8));
        let left = len.saturating_sub(cur.sent);
        if left == 0 {
            cur = UnmapCursor {
                index: cur.index.checked_add(1)?,
                sent: 0,
            };
            continue;
        }
        let take = u64::from(left).min(max_lbas.saturating_sub(lbas)) as u32;
        let at = count.checked_mul(UNMAP_DESCRIPTOR_LEN)?.checked_add(UNMAP_HEADER_LEN)?;
        let slot = out.get_mut(at..at.checked_add(UNMAP_DESCRIPTOR_LEN)?)?;
        slot.fill(0);
        slot.get_mut(0..8)?
            .copy_from_slice(&lba.wrapping_add(u64::from(cur.sent)).to_be_bytes());
        slot.get_mut(8..12)?.copy_from_slice(&take.to_be_bytes());
        count = count.saturating_add(1);
        lbas = lbas.saturating_add(u64::from(take));
        cur.sent = cur.sent.saturating_add(take);
        if cur.sent == len {
            cur = UnmapCursor {
                index: cur.index.checked_add(1)?,
                sent: 0,
            };
        }
    }
    if count == 0 {
        return None;
    }
    let body = count.checked_mul(UNMAP_DESCRIPTOR_LEN)?;
    let header = out.get_mut(..UNMAP_HEADER_LEN)?;
    header.fill(0);
    header
        .get_mut(0..2)?
        .copy_from_slice(&u16::try_from(body.checked_add(6)?).ok()?.to_be_bytes());
    header
        .get_mut(2..4)?
        .copy_from_slice(&u16::try_from(body).ok()?.to_be_bytes());
    Some((body.checked_add(UNMAP_HEADER_LEN)?, cur))
}

fn be64(d: &[u8], at: usize) -> u64 {
    d.get(at..at.saturating_add(8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn be32(d: &[u8], at: usize) -> u32 {
    d.get(at..at.saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const NONE: Hints = Hints { fua: false, dpo: false };

    #[test]
    fn reads_and_writes_take_the_shortest_form_that_holds_the_range() {
        assert_eq!(
            read(0x1234, 8, NONE).as_bytes(),
            [0x28, 0, 0, 0, 0x12, 0x34, 0, 0, 8, 0]
        );
        assert_eq!(
            read(0x1_0000_0000, 1, Hints { fua: true, dpo: true }).as_bytes(),
            [0x88, 0x18, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(
            read(0, 0x1_0000, NONE).as_bytes()[0],
            0x88,
            "65536 blocks need READ(16)"
        );
        assert_eq!(
            write(7, 0xffff, Hints { fua: true, dpo: false }).as_bytes(),
            [0x2a, 0x08, 0, 0, 0, 7, 0, 0xff, 0xff, 0]
        );
        assert_eq!(write(u64::from(u32::MAX) + 1, 2, NONE).as_bytes()[..2], [0x8a, 0]);
    }

    #[test]
    fn verify_and_write_and_verify() {
        assert_eq!(
            verify(5, 3, true, Hints { fua: true, dpo: true }).as_bytes(),
            [0x2f, 0x12, 0, 0, 0, 5, 0, 0, 3, 0]
        );
        assert_eq!(verify(5, 3, false, NONE).as_bytes()[1], 0);
        assert_eq!(
            write_and_verify(5, 3, Hints { fua: true, dpo: true }).as_bytes()[..2],
            [0x2e, 0x10]
        );
        assert_eq!(write_and_verify(1 << 40, 3, NONE).as_bytes()[0], 0x8e);
    }

    #[test]
    fn compare_and_write_and_write_same() {
        assert_eq!(
            compare_and_write(9, 2, Hints { fua: true, dpo: false }).as_bytes(),
            [0x89, 0x08, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0]
        );
        assert_eq!(
            write_same(1, 10, WS_UNMAP | 0xe0).as_bytes(),
            [0x41, 0x08, 0, 0, 0, 1, 0, 0, 10, 0]
        );
        assert_eq!(
            write_same(1, 10, WS_NDOB | WS_UNMAP).as_bytes()[..2],
            [0x93, 0x09],
            "NDOB needs the 16-byte form"
        );
        assert_eq!(write_same(1, 0x2_0000, 0).as_bytes()[10..14], [0, 2, 0, 0]);
    }

    #[test]
    fn other_commands() {
        assert_eq!(unmap(24, true).as_bytes(), [0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0]);
        assert_eq!(
            get_lba_status(3, 24).as_bytes(),
            [0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 24, 0, 0]
        );
        assert_eq!(request_sense(252).as_bytes(), [3, 0, 0, 0, 252, 0]);
    }

    #[test]
    fn chunks_cover_the_transfer() {
        assert_eq!(next_chunk(10, 0, 4), Some((0, 4)));
        assert_eq!(next_chunk(10, 8, 4), Some((8, 2)));
        assert_eq!(next_chunk(10, 10, 4), None);
        assert_eq!(next_chunk(3, 0, 0), Some((0, 1)), "at least a block");
    }

    fn descriptor(lba: u64, len: u32) -> Vec<u8> {
        let mut d = lba.to_be_bytes().to_vec();
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0; 4]);
        d
    }

    fn parse(list: &[u8]) -> Vec<(u64, u32)> {
        assert_eq!(usize::from(u16::from_be_bytes([list[0], list[1]])), list.len() - 2);
        assert_eq!(usize::from(u16::from_be_bytes([list[2], list[3]])), list.len() - 8);
        list[8..].chunks(16).map(|d| (be64(d, 0), be32(d, 8))).collect()
    }

    fn all(descs: &[u8], limits: UnmapLimits, room: usize) -> Vec<Vec<(u64, u32)>> {
        let mut out = std::vec![0u8; room];
        let mut cursor = UnmapCursor::default();
        let mut lists = Vec::new();
        while let Some((len, next)) = next_unmap(descs, cursor, limits, &mut out) {
            lists.push(parse(&out[..len]));
            cursor = next;
        }
        lists
    }

    #[test]
    fn unmap_descriptors_are_split_to_the_devices_limits() {
        let descs = [
            descriptor(0, 10),
            descriptor(100, 0),
            descriptor(200, 25),
            descriptor(300, 1),
        ]
        .concat();
        let unlimited = UnmapLimits::default();
        assert_eq!(
            all(&descs, unlimited, 4096),
            [[(0, 10), (200, 25), (300, 1)]],
            "zero-length skipped"
        );
        let two = UnmapLimits {
            max_lbas: 0,
            max_descriptors: 2,
        };
        assert_eq!(
            all(&descs, two, 4096),
            [std::vec![(0, 10), (200, 25)], std::vec![(300, 1)]]
        );
        let lbas = UnmapLimits {
            max_lbas: 12,
            max_descriptors: 0,
        };
        assert_eq!(
            all(&descs, lbas, 4096),
            [
                std::vec![(0, 10), (200, 2)],
                std::vec![(202, 12)],
                std::vec![(214, 11), (300, 1)]
            ]
        );
        assert_eq!(
            all(&descs, unlimited, 8 + 16),
            [[(0, 10)], [(200, 25)], [(300, 1)]],
            "room for one"
        );
        assert!(all(&descriptor(5, 0), unlimited, 4096).is_empty());
        assert!(
            all(&descs, unlimited, 8 + 15).is_empty(),
            "no room for a descriptor: no list (the caller's buffer is a page)"
        );
    }
}

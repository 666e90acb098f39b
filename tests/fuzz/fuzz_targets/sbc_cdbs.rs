//! `scsi::sbc`'s CDBs: each one ctlpass regenerates for the device, decoded
//! at its SBC-4 offsets, carries the LBA, length and flags it was built
//! from, in the 10-byte form exactly when the range fits it; it is a CDB of
//! its operation code's group length (so a transport's padding is trimmed
//! off it intact).  And the chunks of a transfer cover it, in order, each
//! within the device's limit.

#![no_main]

use ctlpass::scsi::cdb::{self, Cdb};
use ctlpass::scsi::sbc::{self, Hints};
use ctlpass_fuzz::{Input, be};
use libfuzzer_sys::fuzz_target;

/// The LBA and length of a 10- or 16-byte READ/WRITE-like CDB.
fn range(c: &[u8]) -> (u64, u64) {
    match c.len() {
        10 => (be::<4>(c, 2), be::<2>(c, 7)),
        _ => (be::<8>(c, 2), be::<4>(c, 10)),
    }
}

/// Checks a READ/WRITE-like CDB of the family `(op10, op16)` built for
/// `blocks` blocks at `lba` with `byte1`; `short` is whether the 10-byte
/// form must be used.
fn check_rw(c: &Cdb, (op10, op16): (u8, u8), byte1: u8, lba: u64, blocks: u32, short: bool) {
    let b = c.as_bytes();
    assert_eq!(b.len(), if short { 10 } else { 16 }, "{b:02x?}");
    assert_eq!(b[0], if short { op10 } else { op16 });
    assert_eq!(b[1], byte1);
    assert_eq!(range(b), (lba, u64::from(blocks)));
    let rest: &[u8] = if short { &[b[6], b[9]] } else { &b[14..] };
    assert!(rest.iter().all(|&x| x == 0), "group number and control: {b:02x?}");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let which = input.u8();
    let lba = input.u64();
    let blocks = input.u32();
    let flags = input.u8();
    let hints = Hints {
        fua: flags & 0x01 != 0,
        dpo: flags & 0x02 != 0,
    };
    let fua_dpo = (if hints.fua { 0x08 } else { 0 }) | (if hints.dpo { 0x10 } else { 0 });
    let dpo = if hints.dpo { 0x10 } else { 0 };
    let fits = u32::try_from(lba).is_ok() && u16::try_from(blocks).is_ok();
    let c = match which % 10 {
        0 => {
            let c = sbc::read(lba, blocks, hints);
            check_rw(&c, (sbc::READ_10, sbc::READ_16), fua_dpo, lba, blocks, fits);
            c
        }
        1 => {
            let c = sbc::write(lba, blocks, hints);
            check_rw(&c, (sbc::WRITE_10, sbc::WRITE_16), fua_dpo, lba, blocks, fits);
            c
        }
        2 => {
            let c = sbc::write_and_verify(lba, blocks, hints);
            let family = (sbc::WRITE_AND_VERIFY_10, sbc::WRITE_AND_VERIFY_16);
            check_rw(&c, family, dpo, lba, blocks, fits);
            c
        }
        3 => {
            let compare = flags & 0x04 != 0;
            let c = sbc::verify(lba, blocks, compare, hints);
            let byte1 = dpo | if compare { 0x02 } else { 0 };
            check_rw(&c, (sbc::VERIFY_10, sbc::VERIFY_16), byte1, lba, blocks, fits);
            c
        }
        4 => {
            let c = sbc::compare_and_write(lba, blocks as u8, hints);
            let b = c.as_bytes();
            assert_eq!((b.len(), b[0], b[1]), (16, sbc::COMPARE_AND_WRITE, fua_dpo));
            assert_eq!((be::<8>(b, 2), b[13]), (lba, blocks as u8));
            assert!(b[10..13].iter().chain(&b[14..]).all(|&x| x == 0));
            c
        }
        5 => {
            let c = sbc::write_same(lba, blocks, flags);
            let byte1 = flags & (sbc::WS_UNMAP | sbc::WS_ANCHOR | sbc::WS_NDOB);
            let short = fits && byte1 & sbc::WS_NDOB == 0;
            check_rw(&c, (sbc::WRITE_SAME_10, sbc::WRITE_SAME_16), byte1, lba, blocks, short);
            c
        }
        6 => {
            let len = blocks as u16;
            let anchor = flags & 0x01 != 0;
            let c = sbc::unmap(len, anchor);
            let b = c.as_bytes();
            assert_eq!((b.len(), b[0], b[1]), (10, sbc::UNMAP, u8::from(anchor)));
            assert_eq!(be::<2>(b, 7), u64::from(len), "PARAMETER LIST LENGTH");
            c
        }
        7 => {
            let c = sbc::get_lba_status(lba, blocks);
            let b = c.as_bytes();
            assert_eq!((b.len(), b[0], b[1]), (16, sbc::SERVICE_ACTION_IN_16, 0x12));
            assert_eq!((be::<8>(b, 2), be::<4>(b, 10)), (lba, u64::from(blocks)));
            c
        }
        8 => {
            let c = sbc::request_sense(flags);
            assert_eq!(c.as_bytes(), [sbc::REQUEST_SENSE, 0, 0, 0, flags, 0]);
            c
        }
        _ => {
            chunks(blocks, lba as u32, input.u32());
            return;
        }
    };
    assert_eq!(cdb::trimmed(c.as_bytes()), c.as_bytes(), "the group's length");
    assert_eq!(Cdb::new(c.as_bytes()), Some(c));
});

/// `next_chunk` for a transfer of `blocks` blocks with `done` done and a
/// limit of `max`; and, when there are not too many, all its chunks.
fn chunks(blocks: u32, done: u32, max: u32) {
    let limit = max.max(1);
    let want = (done < blocks).then(|| (done, (blocks - done).min(limit)));
    assert_eq!(sbc::next_chunk(blocks, done, max), want);
    if blocks / limit > 4096 {
        return;
    }
    let (mut at, mut n) = (0u32, 0u32);
    while let Some((start, len)) = sbc::next_chunk(blocks, at, max) {
        assert_eq!(start, at, "in order, without gaps");
        assert!(len >= 1 && len <= limit);
        at += len;
        n += 1;
    }
    assert_eq!(at, blocks, "the whole transfer");
    assert_eq!(n, blocks.div_ceil(limit));
}

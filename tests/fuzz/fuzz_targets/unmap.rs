//! `scsi::sbc::next_unmap`: the UNMAP block descriptors an initiator sent
//! (as CTL checked them: no range wraps past the last LBA) are batched into
//! parameter lists a device takes, in a buffer with room for at least one
//! descriptor (as `next_unmap` requires).  Each list has a correct header, holds
//! at least one descriptor and no more than the buffer's room and the
//! device's descriptor limit, covers no more blocks than its LBA limit,
//! and is full unless the descriptors ran out; the lists cover every
//! block of every descriptor exactly once, in order, and zero-length
//! descriptors are skipped.

#![no_main]

use ctlpass::scsi::sbc::{self, UNMAP_DESCRIPTOR_LEN, UNMAP_HEADER_LEN, UnmapCursor, UnmapLimits};
use ctlpass_fuzz::{Input, be};
use libfuzzer_sys::fuzz_target;

/// Lists after which the remaining blocks are not checked (a limit of a
/// few blocks and descriptors of billions would take too long).
const MAX_LISTS: usize = 1024;

/// The buffer the backend builds lists in (a page, UNMAP_LIST_LEN in
/// src/backend/io.rs) is the largest checked.
const MAX_ROOM: usize = 4096;

/// The smallest buffer `next_unmap` takes: a header and one descriptor.
const MIN_ROOM: usize = UNMAP_HEADER_LEN + UNMAP_DESCRIPTOR_LEN;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let limits = UnmapLimits {
        max_lbas: input.u32(),
        max_descriptors: input.u32(),
    };
    let out_len = MIN_ROOM + usize::from(input.u16()) % (MAX_ROOM - MIN_ROOM + 1);
    let anchor = input.flag();
    // The initiator's descriptors, with the range of each kept within the
    // LBA space as CTL's range check keeps it.
    let mut descriptors = input.rest().to_vec();
    descriptors.truncate(descriptors.len() / UNMAP_DESCRIPTOR_LEN * UNMAP_DESCRIPTOR_LEN);
    let mut wanted: Vec<(u64, u32)> = Vec::new();
    for d in descriptors.chunks_mut(UNMAP_DESCRIPTOR_LEN) {
        let len = be::<4>(d, 8) as u32;
        let lba = be::<8>(d, 0).min(u64::MAX - u64::from(len));
        d[..8].copy_from_slice(&lba.to_be_bytes());
        if len > 0 {
            wanted.push((lba, len));
        }
    }

    let room = out_len.saturating_sub(UNMAP_HEADER_LEN) / UNMAP_DESCRIPTOR_LEN;
    let max_count = match limits.max_descriptors {
        0 => room,
        n => room.min(n as usize),
    };
    let max_lbas = match limits.max_lbas {
        0 => u64::from(u32::MAX),
        n => u64::from(n),
    };
    let mut out = vec![0xa5u8; out_len];
    let mut cursor = UnmapCursor::default();
    // Where the lists have got to in `wanted`: the descriptor, and blocks
    // of it covered.
    let (mut want_index, mut want_done) = (0usize, 0u64);
    for _ in 0..MAX_LISTS {
        let Some((len, next)) = sbc::next_unmap(&descriptors, cursor, limits, &mut out) else {
            assert_eq!(want_index, wanted.len(), "None before every block was sent");
            return;
        };
        assert!((next.index, next.sent) > (cursor.index, cursor.sent), "progress");
        cursor = next;
        let list = &out[..len];
        assert!(len >= UNMAP_HEADER_LEN + UNMAP_DESCRIPTOR_LEN && len <= out_len);
        assert_eq!((len - UNMAP_HEADER_LEN) % UNMAP_DESCRIPTOR_LEN, 0);
        assert_eq!(be::<2>(list, 0) as usize, len - 2, "UNMAP DATA LENGTH");
        assert_eq!(
            be::<2>(list, 2) as usize,
            len - UNMAP_HEADER_LEN,
            "BLOCK DESCRIPTOR DATA LENGTH"
        );
        assert_eq!(be::<4>(list, 4), 0, "reserved");
        let count = (len - UNMAP_HEADER_LEN) / UNMAP_DESCRIPTOR_LEN;
        assert!(count <= max_count, "{count} descriptors, at most {max_count}");
        let mut lbas = 0u64;
        for piece in list[UNMAP_HEADER_LEN..].chunks(UNMAP_DESCRIPTOR_LEN) {
            let (lba, n) = (be::<8>(piece, 0), be::<4>(piece, 8));
            assert_eq!(be::<4>(piece, 12), 0, "reserved");
            assert!(n > 0, "an empty descriptor was sent");
            let &(want_lba, want_len) = wanted.get(want_index).expect("a block no descriptor asked for");
            assert_eq!(lba, want_lba + want_done, "the next blocks of descriptor {want_index}");
            assert!(
                want_done + n <= u64::from(want_len),
                "past the end of descriptor {want_index}"
            );
            want_done += n;
            if want_done == u64::from(want_len) {
                (want_index, want_done) = (want_index + 1, 0);
            }
            lbas += n;
        }
        assert!(lbas <= max_lbas, "{lbas} blocks, at most {max_lbas}");
        assert!(
            count == max_count || lbas == max_lbas || want_index == wanted.len(),
            "a list with room left ({count} of {max_count} descriptors, {lbas} of {max_lbas} blocks) before the end"
        );
        let cdb = sbc::unmap(len as u16, anchor);
        assert_eq!(be::<2>(cdb.as_bytes(), 7) as usize, len);
    }
});

//! `scsi::sense`: decoding agrees with the fields at their SPC-5 offsets in
//! either format (the INFORMATION descriptor found by walking the
//! descriptors independently), and sense data encoded from any values, in
//! fixed and in descriptor format behind another descriptor, decodes back
//! to them.

#![no_main]

use ctlpass::scsi::sense::{Sense, key};
use ctlpass_fuzz::{Input, be};
use libfuzzer_sys::fuzz_target;

/// The INFORMATION descriptor (type 0, VALID) of descriptor-format data, by
/// walking the descriptors within the ADDITIONAL SENSE LENGTH; a descriptor
/// cut short ends the walk without one.
fn information(data: &[u8]) -> Option<u64> {
    let end = (8 + usize::from(*data.get(7)?)).min(data.len());
    let mut at = 8;
    while at + 2 <= end {
        let (kind, len) = (data[at], usize::from(data[at + 1]));
        if at + 2 + len > end {
            return None;
        }
        if kind == 0 && len >= 10 && data[at + 2] & 0x80 != 0 {
            return Some(be::<8>(data, at + 4));
        }
        at += 2 + len;
    }
    None
}

/// Fixed-format sense data for `s` (whose INFORMATION fits 32 bits).
fn fixed(s: &Sense, info: u32) -> Vec<u8> {
    let mut d = vec![0u8; 18];
    let valid = if s.information.is_some() { 0x80 } else { 0 };
    d[0] = (if s.current { 0x70 } else { 0x71 }) | valid;
    d[2] = s.key;
    d[3..7].copy_from_slice(&info.to_be_bytes());
    d[7] = 10;
    d[12] = s.asc;
    d[13] = s.ascq;
    d
}

/// Descriptor-format sense data for `s`, with `other` (a descriptor of
/// another type) before its INFORMATION descriptor.
fn descriptor(s: &Sense, other: &[u8]) -> Vec<u8> {
    let mut d = vec![if s.current { 0x72 } else { 0x73 }, s.key, s.asc, s.ascq, 0, 0, 0, 0];
    d.extend_from_slice(other);
    if let Some(info) = s.information {
        d.extend_from_slice(&[0x00, 0x0a, 0x80, 0]);
        d.extend_from_slice(&info.to_be_bytes());
    }
    d[7] = (d.len() - 8) as u8;
    d
}

fuzz_target!(|data: &[u8]| {
    let at = |i: usize| data.get(i).copied().unwrap_or(0);
    let parsed = Sense::parse(data);
    match (data.first().map(|b| b & 0x7f), parsed) {
        (Some(code @ (0x70 | 0x71)), Some(s)) => {
            assert!(data.len() >= 3);
            assert_eq!(s.current, code == 0x70);
            assert_eq!((s.key, s.asc, s.ascq), (data[2] & 0x0f, at(12), at(13)));
            let valid = data[0] & 0x80 != 0;
            assert_eq!(s.information, valid.then(|| be::<4>(data, 3)));
        }
        (Some(code @ (0x72 | 0x73)), Some(s)) => {
            assert!(data.len() >= 2);
            assert_eq!(s.current, code == 0x72);
            assert_eq!((s.key, s.asc, s.ascq), (data[1] & 0x0f, at(2), at(3)));
            assert_eq!(s.information, information(data));
        }
        (Some(0x70 | 0x71), None) => assert!(data.len() < 3, "fixed format with a sense key"),
        (Some(0x72 | 0x73), None) => assert!(data.len() < 2, "descriptor format with a sense key"),
        (_, Some(s)) => panic!("{s:?} from data that is not sense data"),
        (_, None) => {}
    }
    if let Some(s) = parsed {
        assert!(s.key <= 0x0f);
        assert_eq!(s.is_illegal_request(), s.key == key::ILLEGAL_REQUEST);
        assert_eq!(s.is_medium_not_present(), s.key == key::NOT_READY && s.asc == 0x3a);
    }

    let mut input = Input::new(data);
    let want = Sense {
        current: input.flag(),
        key: input.u8() & 0x0f,
        asc: input.u8(),
        ascq: input.u8(),
        information: input.flag().then(|| input.u64()),
    };
    // Another descriptor first (a type other than INFORMATION's), of up to
    // 32 bytes of the input.
    let kind = input.u8().max(1);
    let len = usize::from(input.u8() % 33);
    let body = input.bytes(len);
    let mut other = vec![kind, body.len() as u8];
    other.extend_from_slice(body);
    assert_eq!(Sense::parse(&descriptor(&want, &other)), Some(want));
    if let Ok(info) = u32::try_from(want.information.unwrap_or(0)) {
        assert_eq!(Sense::parse(&fixed(&want, info)), Some(want));
    }
});

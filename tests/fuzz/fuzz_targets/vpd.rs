//! `scsi::vpd`: every page decoder agrees with the page read at its SPC-5
//! and SBC-4 offsets, bounded by its PAGE LENGTH and by the data; what it
//! returns lies within the data; a device id a device reports, written as
//! an administrator writes it, names that device (to the page and to the
//! `devid=` option); Block Limits encoded from any values decode back.

#![no_main]

use ctlpass::backend::DeviceName;
use ctlpass::scsi::vpd::{self, BlockLimits, DesignatorKind, DevId, Provisioning};
use ctlpass_fuzz::{Input, be, within};
use libfuzzer_sys::fuzz_target;

/// The body of page `page`: after the 4-byte header, at most PAGE LENGTH
/// bytes, at most what the data holds.
fn body(data: &[u8], page: u8) -> Option<&[u8]> {
    if data.len() < 4 || data[1] != page {
        return None;
    }
    let len = be::<2>(data, 2) as usize;
    Some(&data[4..(4 + len).min(data.len())])
}

/// The big-endian field of `n` bytes at page offset `at`, 0 unless the
/// body holds all of it.
fn field(body: &[u8], at: usize, n: usize) -> u64 {
    let start = at - 4;
    if body.len() >= start + n {
        body[start..start + n].iter().fold(0, |v, &b| v << 8 | u64::from(b))
    } else {
        0
    }
}

/// Designators as (code set, type byte, id), by walking the page.
fn designators(data: &[u8]) -> Vec<(u8, u8, &[u8])> {
    let mut rest = body(data, vpd::DEVICE_IDENTIFICATION).unwrap_or(&[]);
    let mut all = Vec::new();
    while rest.len() >= 4 && rest.len() >= 4 + usize::from(rest[3]) {
        let len = usize::from(rest[3]);
        all.push((rest[0] & 0x0f, rest[1], &rest[4..4 + len]));
        rest = &rest[4 + len..];
    }
    all
}

fn kind_of(type_byte: u8) -> DesignatorKind {
    match type_byte & 0x0f {
        1 => DesignatorKind::T10,
        2 => DesignatorKind::Eui64,
        3 => DesignatorKind::Naa,
        t => DesignatorKind::Other(t),
    }
}

fuzz_target!(|data: &[u8]| {
    let supported = body(data, vpd::SUPPORTED_PAGES);
    for page in [0x00, 0x80, 0x83, 0xb0, 0xb2, data.last().copied().unwrap_or(0)] {
        assert_eq!(vpd::supports(data, page), supported.is_some_and(|b| b.contains(&page)));
    }

    let serial = vpd::unit_serial_number(data);
    assert!(within(serial, data));
    let raw = body(data, vpd::UNIT_SERIAL_NUMBER).unwrap_or(&[]);
    let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    let start = raw.iter().position(|&b| b != b' ').unwrap_or(raw.len());
    let end = raw.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
    assert_eq!(serial, &raw[start..end]);

    let model = designators(data);
    let decoded: Vec<_> = vpd::designators(data).collect();
    assert_eq!(decoded.len(), model.len());
    for (d, &(code_set, type_byte, id)) in decoded.iter().zip(&model) {
        assert_eq!(d.kind, kind_of(type_byte));
        assert_eq!(d.association, (type_byte >> 4) & 0x03);
        assert_eq!(d.code_set, code_set);
        assert_eq!(d.id, id);
        assert!(within(d.id, data));
    }
    for kind in [DesignatorKind::T10, DesignatorKind::Eui64, DesignatorKind::Naa] {
        let first = model
            .iter()
            .find(|&&(_, t, _)| kind_of(t) == kind && (t >> 4) & 0x03 == 0)
            .map(|&(_, _, id)| id);
        assert_eq!(vpd::lu_designator(data, kind), first);
    }

    let devid = DevId::of(data);
    let naa = vpd::lu_designator(data, DesignatorKind::Naa);
    let eui = vpd::lu_designator(data, DesignatorKind::Eui64);
    assert_eq!(devid.map(|d| d.id), naa.or(eui));
    if let Some(d) = devid {
        assert_eq!(d.scheme, if naa.is_some() { "naa" } else { "eui" });
        let text = d.to_string();
        assert_eq!(text.len(), 4 + 2 * d.id.len());
        assert!(d.matches(&text), "{text}");
        assert!(d.matches(&text.to_ascii_uppercase()), "{text}");
        if let Some(other) = other_last_digit(&text) {
            assert!(!d.matches(&other), "{other} differs from {text}");
        }
        let option = format!("devid={text}");
        match DeviceName::parse(&option) {
            Ok(name) => {
                assert!([8, 12, 16].contains(&d.id.len()));
                assert_eq!(name, DeviceName::DevId(&option[6..]));
            }
            Err(e) => assert!(![8, 12, 16].contains(&d.id.len()), "{option}: {e}"),
        }
    }

    let limits = BlockLimits::parse(data);
    assert_eq!(limits.is_some(), body(data, vpd::BLOCK_LIMITS).is_some());
    if let (Some(l), Some(b)) = (limits, body(data, vpd::BLOCK_LIMITS)) {
        let alignment = field(b, 32, 4) as u32;
        let want = BlockLimits {
            max_compare_and_write: field(b, 5, 1) as u8,
            max_transfer: field(b, 8, 4) as u32,
            optimal_transfer: field(b, 12, 4) as u32,
            max_unmap_lba: field(b, 20, 4) as u32,
            max_unmap_descriptors: field(b, 24, 4) as u32,
            unmap_granularity: field(b, 28, 4) as u32,
            unmap_alignment: (alignment >> 31 != 0).then_some(alignment & 0x7fff_ffff),
            max_write_same: field(b, 36, 8),
        };
        assert_eq!(l, want);
    }

    let provisioning = Provisioning::parse(data);
    match body(data, vpd::LOGICAL_BLOCK_PROVISIONING) {
        Some(&[_, flags, ..]) => assert_eq!(
            provisioning,
            Some(Provisioning {
                unmap: flags & 0x80 != 0,
                write_same_16: flags & 0x40 != 0,
                write_same_10: flags & 0x20 != 0,
            })
        ),
        _ => assert_eq!(provisioning, None),
    }

    // Block Limits from values, in a page as SBC-4 lays it out.
    let mut input = Input::new(data);
    let want = BlockLimits {
        max_compare_and_write: input.u8(),
        max_transfer: input.u32(),
        optimal_transfer: input.u32(),
        max_unmap_lba: input.u32(),
        max_unmap_descriptors: input.u32(),
        unmap_granularity: input.u32(),
        unmap_alignment: input.flag().then(|| input.u32() & 0x7fff_ffff),
        max_write_same: input.u64(),
    };
    let mut page = vec![0u8; 64];
    page[1] = vpd::BLOCK_LIMITS;
    page[3] = 0x3c;
    page[5] = want.max_compare_and_write;
    page[8..12].copy_from_slice(&want.max_transfer.to_be_bytes());
    page[12..16].copy_from_slice(&want.optimal_transfer.to_be_bytes());
    page[20..24].copy_from_slice(&want.max_unmap_lba.to_be_bytes());
    page[24..28].copy_from_slice(&want.max_unmap_descriptors.to_be_bytes());
    page[28..32].copy_from_slice(&want.unmap_granularity.to_be_bytes());
    let alignment = want.unmap_alignment.map_or(0, |a| a | 0x8000_0000);
    page[32..36].copy_from_slice(&alignment.to_be_bytes());
    page[36..44].copy_from_slice(&want.max_write_same.to_be_bytes());
    assert_eq!(BlockLimits::parse(&page), Some(want));
});

/// `text` with its last hex digit changed, if it ends with one.
fn other_last_digit(text: &str) -> Option<String> {
    let mut t = text.to_string();
    let last = t.pop().filter(char::is_ascii_hexdigit)?;
    t.push(if last == '0' { '1' } else { '0' });
    Some(t)
}

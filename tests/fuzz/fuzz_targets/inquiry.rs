//! `scsi::inquiry`: standard INQUIRY data decodes to the fields at their
//! SPC-5 offsets (or is refused as short), encodes back to data that
//! decodes the same, and is displayed as CAM prints it: printable ASCII
//! only, trailing spaces and NULs dropped, anything else shown as `?`.

#![no_main]

use ctlpass::scsi::{Ascii, Inquiry, PeripheralType, Qualifier};
use libfuzzer_sys::fuzz_target;

/// What `Ascii` must show of `field`.
fn shown(field: &[u8]) -> String {
    let end = field.iter().rposition(|&b| b != b' ' && b != 0).map_or(0, |i| i + 1);
    field[..end]
        .iter()
        .map(|&b| if (0x20..0x7f).contains(&b) { char::from(b) } else { '?' })
        .collect()
}

/// Standard INQUIRY data (36 bytes) holding `inq`.
fn encode(inq: &Inquiry) -> Vec<u8> {
    let q = match inq.qualifier {
        Qualifier::Connected => 0,
        Qualifier::NotConnected => 1,
        Qualifier::NotSupported => 3,
        Qualifier::Other(q) => q,
    };
    let mut d = vec![0u8; Inquiry::MIN_LEN];
    d[0] = q << 5 | inq.device_type.0;
    d[1] = if inq.removable { 0x80 } else { 0 };
    d[2] = inq.version;
    d[7] = if inq.cmd_queue { 0x02 } else { 0 };
    d[8..16].copy_from_slice(&inq.vendor);
    d[16..32].copy_from_slice(&inq.product);
    d[32..36].copy_from_slice(&inq.revision);
    d
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(Ascii(data).to_string(), shown(data));

    let inq = match Inquiry::parse(data) {
        Ok(inq) => inq,
        Err(short) => {
            assert!(data.len() < Inquiry::MIN_LEN);
            assert_eq!(short.len, data.len());
            assert!(short.to_string().contains(&data.len().to_string()));
            return;
        }
    };
    assert!(data.len() >= Inquiry::MIN_LEN);
    let qualifier = match data[0] >> 5 {
        0 => Qualifier::Connected,
        1 => Qualifier::NotConnected,
        3 => Qualifier::NotSupported,
        q => Qualifier::Other(q),
    };
    assert_eq!(inq.qualifier, qualifier);
    assert_eq!(inq.device_type, PeripheralType(data[0] & 0x1f));
    assert!(!inq.device_type.name().is_empty());
    assert_eq!(inq.removable, data[1] & 0x80 != 0);
    assert_eq!(inq.version, data[2]);
    assert_eq!(inq.cmd_queue, data[7] & 0x02 != 0);
    assert_eq!(
        (&inq.vendor[..], &inq.product[..], &inq.revision[..]),
        (&data[8..16], &data[16..32], &data[32..36])
    );

    let description = inq.description().to_string();
    assert_eq!(
        description,
        format!(
            "<{} {} {}>",
            shown(&inq.vendor),
            shown(&inq.product),
            shown(&inq.revision)
        )
    );
    assert!(description.bytes().all(|b| (0x20..0x7f).contains(&b)));
    assert!(format!("{inq:?}").contains(&description));

    assert_eq!(Inquiry::parse(&encode(&inq)), Ok(inq));
});

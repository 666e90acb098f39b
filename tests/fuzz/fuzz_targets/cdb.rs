//! `scsi::cdb`: a CDB a device can take is kept byte for byte; trimming a
//! transport's padding keeps a prefix as long as the operation code's group
//! says; START STOP UNIT's fields are its bits; the probe CDBs ctlpass
//! builds carry what they were built from.

#![no_main]

use ctlpass::scsi::cdb::{self, CDB_MAX_LEN, Cdb, READ_CAPACITY_16_LEN, START_STOP_UNIT, StartStop};
use ctlpass_fuzz::{Input, be};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Cdb::new(data) {
        Some(c) => {
            assert!((6..=CDB_MAX_LEN).contains(&data.len()));
            assert_eq!(c.as_bytes(), data);
            assert_eq!(c.opcode(), data[0]);
            assert_eq!(Cdb::new(c.as_bytes()), Some(c));
        }
        None => assert!(!(6..=CDB_MAX_LEN).contains(&data.len())),
    }

    // SPC-5 4.2.5.1: groups 0, 1, 2, 4 and 5 have a fixed length.
    let group_len = match data.first().map(|op| op >> 5) {
        Some(0) => Some(6),
        Some(1 | 2) => Some(10),
        Some(4) => Some(16),
        Some(5) => Some(12),
        _ => None,
    };
    let t = cdb::trimmed(data);
    assert_eq!(t, &data[..t.len()], "a prefix");
    match group_len {
        Some(n) if data.len() >= n => assert_eq!(t.len(), n),
        _ => assert_eq!(t.len(), data.len(), "kept as given"),
    }
    assert_eq!(cdb::trimmed(t), t, "trimming twice changes nothing");

    match StartStop::parse(data) {
        Some(ss) => {
            assert!(data.len() >= 6 && data[0] == START_STOP_UNIT);
            assert_eq!(ss.power_condition, data[4] >> 4);
            assert_eq!(ss.start, data[4] & 0x01 != 0);
            assert_eq!(ss.load_eject, data[4] & 0x02 != 0);
        }
        None => assert!(data.len() < 6 || data[0] != START_STOP_UNIT),
    }

    let mut input = Input::new(data);
    let page = input.flag().then(|| input.u8());
    let len = input.u16();
    let inquiry = cdb::inquiry(page, len);
    assert_eq!(inquiry[0], 0x12);
    assert_eq!(inquiry[1] & 0x01 != 0, page.is_some(), "EVPD");
    assert_eq!(inquiry[2], page.unwrap_or(0), "PAGE CODE");
    assert_eq!(be::<2>(&inquiry, 3), u64::from(len), "ALLOCATION LENGTH");
    assert_eq!(cdb::trimmed(&inquiry), inquiry);
    let rc10 = cdb::read_capacity_10();
    assert_eq!((rc10[0], cdb::trimmed(&rc10)), (0x25, &rc10[..]));
    let rc16 = cdb::read_capacity_16();
    assert_eq!((rc16[0], rc16[1] & 0x1f), (0x9e, 0x10));
    assert_eq!(be::<4>(&rc16, 10), READ_CAPACITY_16_LEN as u64);
    assert_eq!(cdb::trimmed(&rc16), rc16);
});

//! Sense data (SPC-5 4.4): what a device says about a command that ended
//! in CHECK CONDITION.

/// Sense keys (SPC-5 Table 51) ctlpass names.
pub mod key {
    /// NO SENSE.
    pub const NO_SENSE: u8 = 0x0;
    /// NOT READY.
    pub const NOT_READY: u8 = 0x2;
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: u8 = 0x3;
    /// HARDWARE ERROR.
    pub const HARDWARE_ERROR: u8 = 0x4;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// DATA PROTECT.
    pub const DATA_PROTECT: u8 = 0x7;
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: u8 = 0xb;
    /// MISCOMPARE.
    pub const MISCOMPARE: u8 = 0xe;
}

/// The decoded core of sense data, in either format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// Current (true) or deferred error.
    pub current: bool,
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// The INFORMATION field, when valid.
    pub information: Option<u64>,
}

impl Sense {
    /// Decodes fixed (0x70/0x71) or descriptor (0x72/0x73) format sense
    /// data; `None` for anything else or data too short to hold a key.
    pub fn parse(data: &[u8]) -> Option<Sense> {
        let code = data.first()? & 0x7f;
        let at = |i: usize| data.get(i).copied().unwrap_or(0);
        match code {
            0x70 | 0x71 => {
                let key = data.get(2)? & 0x0f;
                let information =
                    (at(0) & 0x80 != 0).then(|| u64::from(u32::from_be_bytes([at(3), at(4), at(5), at(6)])));
                Some(Sense {
                    current: code == 0x70,
                    key,
                    asc: at(12),
                    ascq: at(13),
                    information,
                })
            }
            0x72 | 0x73 => {
                let key = data.get(1)? & 0x0f;
                Some(Sense {
                    current: code == 0x72,
                    key,
                    asc: at(2),
                    ascq: at(3),
                    information: descriptor_information(data),
                })
            }
            _ => None,
        }
    }

    /// ILLEGAL REQUEST: the device does not support what was asked.
    pub fn is_illegal_request(&self) -> bool {
        self.key == key::ILLEGAL_REQUEST
    }

    /// NOT READY, MEDIUM NOT PRESENT (ASC 0x3A).
    pub fn is_medium_not_present(&self) -> bool {
        self.key == key::NOT_READY && self.asc == 0x3a
    }
}

/// The INFORMATION sense data descriptor (type 0) with VALID set.
fn descriptor_information(data: &[u8]) -> Option<u64> {
    let len = usize::from(*data.get(7)?);
    let mut descriptors = data.get(8..8usize.saturating_add(len).min(data.len()))?;
    while let [kind, dlen, rest @ ..] = descriptors {
        let dlen = usize::from(*dlen);
        let body = rest.get(..dlen)?;
        if *kind == 0 && dlen >= 10 && body.first().is_some_and(|b| b & 0x80 != 0) {
            return Some(u64::from_be_bytes(body.get(2..10)?.try_into().ok()?));
        }
        descriptors = rest.get(dlen..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format() {
        let mut d = [0u8; 18];
        d[0] = 0xf0;
        d[2] = 0x05;
        d[3..7].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        d[7] = 10;
        d[12] = 0x21;
        let s = Sense::parse(&d).unwrap();
        assert_eq!(
            s,
            Sense {
                current: true,
                key: 5,
                asc: 0x21,
                ascq: 0,
                information: Some(0x10000)
            }
        );
        assert!(s.is_illegal_request());
        d[0] = 0x71;
        d[2] = 0x02;
        d[12] = 0x3a;
        let s = Sense::parse(&d).unwrap();
        assert!(!s.current);
        assert_eq!(s.information, None);
        assert!(s.is_medium_not_present());
    }

    #[test]
    fn descriptor_format() {
        let d = [
            0x72, 0x03, 0x11, 0x00, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34,
        ];
        assert_eq!(
            Sense::parse(&d),
            Some(Sense {
                current: true,
                key: 3,
                asc: 0x11,
                ascq: 0,
                information: Some(0x1234)
            })
        );
        assert_eq!(Sense::parse(&d[..4]).unwrap().information, None);
    }

    #[test]
    fn garbage_is_not_sense() {
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x70]), None);
        assert_eq!(Sense::parse(&[0x7f; 18]), None);
        let mut truncated = [0x72u8, 5, 0x24, 0, 0, 0, 0, 200, 0, 10, 0x80];
        assert_eq!(Sense::parse(&truncated).unwrap().asc, 0x24);
        truncated[8] = 7;
        assert_eq!(Sense::parse(&truncated).unwrap().information, None);
    }
}

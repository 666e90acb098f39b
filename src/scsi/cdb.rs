//! Command descriptor blocks: the ones ctlpass builds itself (the identity
//! probes it sends to a device when a LUN is created or modified), the
//! fields it reads from the ones initiators send, and a CDB as it travels
//! to the device.

/// START STOP UNIT (SBC-4 5.25).
pub const START_STOP_UNIT: u8 = 0x1b;
/// PREVENT ALLOW MEDIUM REMOVAL (SPC-5 6.17 / MMC).
pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
/// SYNCHRONIZE CACHE(10) (SBC-4 5.29).
pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
/// SYNCHRONIZE CACHE(16) (SBC-4 5.30).
pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;

/// The longest CDB ctlpass sends to a device (CAM's `IOCDBLEN`).
pub const CDB_MAX_LEN: usize = 16;

/// A CDB on its way to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cdb {
    bytes: [u8; CDB_MAX_LEN],
    len: u8,
}

impl Cdb {
    /// A copy of `bytes`, if it is a CDB length a device can take (6 to 16
    /// bytes).
    pub fn new(bytes: &[u8]) -> Option<Cdb> {
        if !(6..=CDB_MAX_LEN).contains(&bytes.len()) {
            return None;
        }
        let mut cdb = Cdb {
            bytes: [0; CDB_MAX_LEN],
            len: bytes.len() as u8,
        };
        cdb.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(cdb)
    }

    /// A CDB of `N` bytes (6 to 16, checked when compiled).
    pub const fn from_array<const N: usize>(a: [u8; N]) -> Cdb {
        const { assert!(N >= 6 && N <= CDB_MAX_LEN, "a CDB has 6 to 16 bytes") };
        let mut bytes = [0; CDB_MAX_LEN];
        let mut i = 0;
        while i < N {
            bytes[i] = a[i];
            i = i.saturating_add(1);
        }
        Cdb { bytes, len: N as u8 }
    }

    /// The CDB's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&self.bytes)
    }

    /// The operation code.
    pub fn opcode(&self) -> u8 {
        self.bytes[0]
    }
}

/// The CDB without the padding a transport adds (iSCSI always carries 16
/// bytes): as long as its operation code's group says (SPC-5 4.2.5.1), or
/// as given for the groups without a fixed length.
pub fn trimmed(cdb: &[u8]) -> &[u8] {
    let len = match cdb.first().map(|op| op >> 5) {
        Some(0) => 6,
        Some(1 | 2) => 10,
        Some(4) => 16,
        Some(5) => 12,
        _ => cdb.len(),
    };
    cdb.get(..len).unwrap_or(cdb)
}

/// The task attribute of a command (SAM-5 8.6): how the device may order
/// it among the others in its task set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskAttribute {
    /// No tag: the initiator sends one command at a time.
    Untagged,
    /// SIMPLE.
    Simple,
    /// ORDERED.
    Ordered,
    /// HEAD OF QUEUE.
    HeadOfQueue,
    /// ACA.
    Aca,
}

/// The fields of a START STOP UNIT CDB that change the medium's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartStop {
    /// POWER CONDITION (byte 4, bits 7-4); non-zero leaves START and LOEJ
    /// unused.
    pub power_condition: u8,
    /// START: make the medium ready (or, with LOEJ, load it).
    pub start: bool,
    /// LOEJ: load (with START) or eject the medium.
    pub load_eject: bool,
}

impl StartStop {
    /// The fields of `cdb`, if it is a START STOP UNIT.
    pub fn parse(cdb: &[u8]) -> Option<StartStop> {
        match cdb {
            [START_STOP_UNIT, _, _, _, how, _, ..] => Some(StartStop {
                power_condition: how >> 4,
                start: how & 0x01 != 0,
                load_eject: how & 0x02 != 0,
            }),
            _ => None,
        }
    }
}

/// INQUIRY (SPC-5 6.7): standard data, or the VPD page `page`, with
/// allocation length `len`.
pub fn inquiry(page: Option<u8>, len: u16) -> [u8; 6] {
    let [hi, lo] = len.to_be_bytes();
    match page {
        None => [0x12, 0, 0, hi, lo, 0],
        Some(p) => [0x12, 0x01, p, hi, lo, 0],
    }
}

/// READ CAPACITY(10) (SBC-4 5.20).
pub fn read_capacity_10() -> [u8; 10] {
    [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// READ CAPACITY(16) (SBC-4 5.21): SERVICE ACTION IN(16), service action
/// 0x10, allocation length 32.
pub fn read_capacity_16() -> [u8; 16] {
    [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]
}

/// Bytes of READ CAPACITY(16) parameter data ctlpass asks for.
pub const READ_CAPACITY_16_LEN: usize = 32;
/// Bytes of READ CAPACITY(10) parameter data.
pub const READ_CAPACITY_10_LEN: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_cdbs() {
        assert_eq!(inquiry(None, 36), [0x12, 0, 0, 0, 36, 0]);
        assert_eq!(inquiry(Some(0x83), 0x1ff), [0x12, 1, 0x83, 0x01, 0xff, 0]);
        assert_eq!(read_capacity_10(), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(read_capacity_16()[..2], [0x9e, 0x10]);
        assert_eq!(read_capacity_16()[13], 32);
    }

    #[test]
    fn cdb_lengths_a_device_takes() {
        assert_eq!(Cdb::new(&[0x00; 5]), None);
        assert_eq!(Cdb::new(&[0x00; 17]), None);
        let c = Cdb::new(&read_capacity_16()).unwrap();
        assert_eq!(c.as_bytes(), read_capacity_16());
        assert_eq!(c.opcode(), 0x9e);
        assert_eq!(
            Cdb::new(&[0x1b, 1, 0, 0, 3, 0]).unwrap().as_bytes(),
            [0x1b, 1, 0, 0, 3, 0]
        );
    }

    #[test]
    fn padding_is_trimmed_by_group() {
        let padded = |op: u8| {
            let mut c = [0u8; 16];
            c[0] = op;
            c
        };
        assert_eq!(trimmed(&padded(0x1b)).len(), 6);
        assert_eq!(trimmed(&padded(0x35)).len(), 10);
        assert_eq!(trimmed(&padded(0x5e)).len(), 10);
        assert_eq!(trimmed(&padded(0x91)).len(), 16);
        assert_eq!(trimmed(&padded(0xa8)).len(), 12);
        assert_eq!(trimmed(&padded(0x7f)).len(), 16, "variable length: as given");
        assert_eq!(trimmed(&padded(0xc0)).len(), 16, "vendor specific: as given");
        assert_eq!(trimmed(&[0x35, 0, 0]), [0x35, 0, 0], "shorter than its group: as given");
    }

    #[test]
    fn start_stop_fields() {
        let ss = |how| StartStop::parse(&[START_STOP_UNIT, 0, 0, 0, how, 0]).unwrap();
        assert_eq!(
            ss(0x01),
            StartStop {
                power_condition: 0,
                start: true,
                load_eject: false
            }
        );
        assert_eq!(
            ss(0x02),
            StartStop {
                power_condition: 0,
                start: false,
                load_eject: true
            }
        );
        assert_eq!(ss(0x33).power_condition, 3);
        assert_eq!(StartStop::parse(&[START_STOP_UNIT, 0, 0, 0]), None);
        assert_eq!(StartStop::parse(&[SYNCHRONIZE_CACHE_10, 0, 0, 0, 1, 0]), None);
    }
}

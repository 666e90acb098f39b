//! iSCSI PDUs (RFC 7143, section 11): the 48-byte Basic Header Segment,
//! its fields, and reading and writing whole PDUs (header, additional
//! header segments, data segment padded to 4 bytes; no digests).

use std::io::{self, Read, Write};

/// Bytes of a Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// The Initiator Task Tag or Target Transfer Tag that names no task.
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// The immediate delivery bit of byte 0.
pub const IMMEDIATE: u8 = 0x40;

/// The F (final) bit of byte 1.
pub const FINAL: u8 = 0x80;

/// Initiator opcodes (RFC 7143, 11.1.1).
pub mod op {
    /// NOP-Out.
    pub const NOP_OUT: u8 = 0x00;
    /// SCSI Command.
    pub const SCSI_COMMAND: u8 = 0x01;
    /// SCSI Task Management Function Request.
    pub const TASK_REQUEST: u8 = 0x02;
    /// Login Request.
    pub const LOGIN_REQUEST: u8 = 0x03;
    /// Text Request.
    pub const TEXT_REQUEST: u8 = 0x04;
    /// SCSI Data-Out.
    pub const DATA_OUT: u8 = 0x05;
    /// Logout Request.
    pub const LOGOUT_REQUEST: u8 = 0x06;
    /// NOP-In.
    pub const NOP_IN: u8 = 0x20;
    /// SCSI Response.
    pub const SCSI_RESPONSE: u8 = 0x21;
    /// SCSI Task Management Function Response.
    pub const TASK_RESPONSE: u8 = 0x22;
    /// Login Response.
    pub const LOGIN_RESPONSE: u8 = 0x23;
    /// Text Response.
    pub const TEXT_RESPONSE: u8 = 0x24;
    /// SCSI Data-In.
    pub const DATA_IN: u8 = 0x25;
    /// Logout Response.
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    /// Ready To Transfer.
    pub const R2T: u8 = 0x31;
    /// Reject.
    pub const REJECT: u8 = 0x3f;
}

/// One PDU: its Basic Header Segment and its data segment (unpadded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    /// The Basic Header Segment.
    pub bhs: [u8; BHS_LEN],
    /// The data segment.
    pub data: Vec<u8>,
}

/// Why a PDU could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The connection failed or closed (`UnexpectedEof` between PDUs).
    Io(io::Error),
    /// The data segment is longer than the receiver declared it takes
    /// (MaxRecvDataSegmentLength): a protocol error.
    TooLong {
        /// The PDU's header.
        bhs: Box<[u8; BHS_LEN]>,
        /// Its DataSegmentLength.
        len: usize,
    },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLong { len, .. } => write!(f, "a data segment of {len} bytes, more than declared"),
        }
    }
}

impl Pdu {
    /// A PDU of opcode `opcode` with a zeroed header otherwise.
    pub fn new(opcode: u8) -> Pdu {
        let mut bhs = [0; BHS_LEN];
        bhs[0] = opcode;
        Pdu { bhs, data: Vec::new() }
    }

    /// The opcode, without the immediate bit.
    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }

    /// Whether the immediate delivery bit is set.
    pub fn immediate(&self) -> bool {
        self.bhs[0] & IMMEDIATE != 0
    }

    /// Byte 1: the final bit and the opcode-specific flags.
    pub fn flags(&self) -> u8 {
        self.bhs[1]
    }

    /// The big-endian 32-bit field at byte `at`.
    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes([self.bhs[at], self.bhs[at + 1], self.bhs[at + 2], self.bhs[at + 3]])
    }

    /// Sets the big-endian 32-bit field at byte `at`.
    pub fn set_u32(&mut self, at: usize, value: u32) {
        self.bhs[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    /// The 8-byte LUN field (bytes 8-15).
    pub fn lun_field(&self) -> [u8; 8] {
        let mut lun = [0; 8];
        lun.copy_from_slice(&self.bhs[8..16]);
        lun
    }

    /// The Initiator Task Tag (bytes 16-19).
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }

    /// Reads one PDU, refusing a data segment longer than `max_data`.
    pub fn read(r: &mut impl Read, max_data: usize) -> Result<Pdu, ReadError> {
        let mut bhs = [0; BHS_LEN];
        r.read_exact(&mut bhs)?;
        let ahs = usize::from(bhs[4]) * 4;
        let len = usize::from(bhs[5]) << 16 | usize::from(bhs[6]) << 8 | usize::from(bhs[7]);
        if len > max_data {
            return Err(ReadError::TooLong {
                bhs: Box::new(bhs),
                len,
            });
        }
        // Additional header segments (an extended CDB, bidirectional
        // lengths) are read past: the commands they serve are refused.
        io::copy(&mut r.take(ahs as u64), &mut io::sink())?;
        let mut data = vec![0; len.next_multiple_of(4)];
        r.read_exact(&mut data)?;
        data.truncate(len);
        Ok(Pdu { bhs, data })
    }

    /// The PDU as sent: header with its DataSegmentLength, data, padding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = self.data.len();
        let mut out = Vec::with_capacity(BHS_LEN + len.next_multiple_of(4));
        out.extend_from_slice(&self.bhs);
        out[4] = 0;
        out[5..8].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&self.data);
        out.resize(BHS_LEN + len.next_multiple_of(4), 0);
        out
    }

    /// Writes the PDU.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.to_bytes())
    }
}

/// ctl_decode_lun (sys/cam/ctl/ctl.c): the CTL LUN number of a SAM LUN
/// field in the single-level formats iSCSI initiators use, peripheral
/// device addressing (LUN < 256) or flat space; `u32::MAX` (no such LUN)
/// for any other.
pub fn decode_lun(lun: [u8; 8]) -> u32 {
    let rest_zero = lun[2..].iter().all(|&b| b == 0);
    match lun[0] >> 6 {
        0 if lun[0] == 0 && rest_zero => u32::from(lun[1]),
        1 if rest_zero => u32::from(lun[0] & 0x3f) << 8 | u32::from(lun[1]),
        _ => u32::MAX,
    }
}

/// ctl_encode_lun: the LUN field of CTL LUN `lun` (peripheral device
/// addressing below 256, flat space up to 16383).
pub fn encode_lun(lun: u32) -> [u8; 8] {
    let mut field = [0; 8];
    if lun < 256 {
        field[1] = lun as u8;
    } else {
        field[0] = 0x40 | ((lun >> 8) & 0x3f) as u8;
        field[1] = lun as u8;
    }
    field
}

/// Serial number arithmetic (RFC 1982, 32 bits): whether `a` comes before
/// `b`.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdus_are_padded_and_read_back() {
        let mut p = Pdu::new(op::NOP_IN);
        p.bhs[1] = FINAL;
        p.set_u32(16, 0x1234_5678);
        p.data = b"hello".to_vec();
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), 48 + 8);
        assert_eq!(&bytes[5..8], &[0, 0, 5]);
        let back = Pdu::read(&mut &bytes[..], 8192).unwrap();
        assert_eq!(back.data, b"hello");
        assert_eq!(back.itt(), 0x1234_5678);
        assert!(matches!(
            Pdu::read(&mut &bytes[..], 4),
            Err(ReadError::TooLong { len: 5, .. })
        ));
    }

    #[test]
    fn luns_are_single_level() {
        assert_eq!(decode_lun(encode_lun(7)), 7);
        assert_eq!(encode_lun(300), [0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_lun(encode_lun(300)), 300);
        assert_eq!(decode_lun([0x01, 0, 0, 0, 0, 0, 0, 0]), u32::MAX);
        assert_eq!(decode_lun([0, 1, 0x40, 0, 0, 0, 0, 0]), u32::MAX);
    }

    #[test]
    fn serial_numbers_wrap() {
        assert!(sn_lt(1, 2));
        assert!(sn_lt(u32::MAX, 0));
        assert!(!sn_lt(2, 2));
        assert!(!sn_lt(5, 1));
    }
}

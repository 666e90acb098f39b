//! CDBs the tests send, built from their fields (SBC-4's 10- and 16-byte
//! layouts), independently of the parsers of `ctlpass::scsi`.

/// A 10-byte CDB: operation code, byte 1 (flags), 32-bit LBA at bytes
/// 2-5, 16-bit transfer length at bytes 7-8.
pub fn cdb10(op: u8, byte1: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op, byte1, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A 16-byte CDB: operation code, byte 1 (flags), 64-bit LBA at bytes
/// 2-9, 32-bit transfer length at bytes 10-13.
pub fn cdb16(op: u8, byte1: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![op, byte1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

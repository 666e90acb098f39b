//! Emulated SCSI logical units for the simulated CAM layer: a RAM-backed direct-access disk
//! ([`RamDisk`], SBC-4) and a CD/DVD drive ([`Cdrom`], MMC-6), both answering SPC-5 commands.
//!
//! A device takes a [`Command`] (the CDB and the data buffers as CAM delivers them) and answers
//! with an [`Outcome`]: the SCSI status, fixed-format sense data on CHECK CONDITION and the number
//! of bytes it moved. The devices are deterministic and no input makes them panic.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// SCSI status GOOD: the command completed successfully.
pub const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION: the command failed and the sense data tells why.
pub const CHECK_CONDITION: u8 = 0x02;
/// SCSI status BUSY: the logical unit cannot accept the command now.
pub const BUSY: u8 = 0x08;
/// SCSI status RESERVATION CONFLICT: another initiator holds a reservation.
pub const RESERVATION_CONFLICT: u8 = 0x18;
/// SCSI status TASK SET FULL: the logical unit has no room for another command.
pub const TASK_SET_FULL: u8 = 0x28;

const TYPE_DISK: u8 = 0x00;
const TYPE_CDROM: u8 = 0x05;
const CD_BLOCK: usize = 2048;

// Operation codes.
const TEST_UNIT_READY: u8 = 0x00;
const REQUEST_SENSE: u8 = 0x03;
const READ_6: u8 = 0x08;
const WRITE_6: u8 = 0x0A;
const INQUIRY: u8 = 0x12;
const MODE_SENSE_6: u8 = 0x1A;
const START_STOP_UNIT: u8 = 0x1B;
const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
const READ_CAPACITY_10: u8 = 0x25;
const READ_10: u8 = 0x28;
const WRITE_10: u8 = 0x2A;
const WRITE_AND_VERIFY_10: u8 = 0x2E;
const VERIFY_10: u8 = 0x2F;
const SYNCHRONIZE_CACHE_10: u8 = 0x35;
const WRITE_SAME_10: u8 = 0x41;
const UNMAP: u8 = 0x42;
const READ_TOC: u8 = 0x43;
const GET_CONFIGURATION: u8 = 0x46;
const MODE_SENSE_10: u8 = 0x5A;
const READ_16: u8 = 0x88;
const COMPARE_AND_WRITE: u8 = 0x89;
const WRITE_16: u8 = 0x8A;
const WRITE_AND_VERIFY_16: u8 = 0x8E;
const VERIFY_16: u8 = 0x8F;
const SYNCHRONIZE_CACHE_16: u8 = 0x91;
const WRITE_SAME_16: u8 = 0x93;
const SERVICE_ACTION_IN_16: u8 = 0x9E;
const REPORT_LUNS: u8 = 0xA0;
const READ_12: u8 = 0xA8;
const WRITE_12: u8 = 0xAA;

// Service actions of SERVICE ACTION IN(16).
const READ_CAPACITY_16: u8 = 0x10;
const GET_LBA_STATUS: u8 = 0x12;

// Sense keys.
const KEY_NO_SENSE: u8 = 0x0;
const KEY_NOT_READY: u8 = 0x2;
const KEY_ILLEGAL_REQUEST: u8 = 0x5;
const KEY_UNIT_ATTENTION: u8 = 0x6;
const KEY_DATA_PROTECT: u8 = 0x7;
const KEY_MISCOMPARE: u8 = 0xE;

// The conditions the devices report.
const NO_SENSE: Sense = Sense::new(KEY_NO_SENSE, 0x00, 0x00);
const PARAMETER_LIST_LENGTH_ERROR: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x1A, 0x00);
const INVALID_OPCODE: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x20, 0x00);
const LBA_OUT_OF_RANGE: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x21, 0x00);
const INVALID_FIELD_IN_CDB: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x24, 0x00);
const INVALID_FIELD_IN_PARAMETER_LIST: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x26, 0x00);
const SAVING_PARAMETERS_NOT_SUPPORTED: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x39, 0x00);
const MEDIUM_REMOVAL_PREVENTED: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x53, 0x02);
const MEDIUM_NOT_PRESENT: Sense = Sense::new(KEY_NOT_READY, 0x3A, 0x00);
const WRITE_PROTECTED: Sense = Sense::new(KEY_DATA_PROTECT, 0x27, 0x00);
const MEDIUM_MAY_HAVE_CHANGED: Sense = Sense::new(KEY_UNIT_ATTENTION, 0x28, 0x00);
const CAPACITY_DATA_HAS_CHANGED: Sense = Sense::new(KEY_UNIT_ATTENTION, 0x2A, 0x09);
const MISCOMPARE_DURING_VERIFY: Sense = Sense::new(KEY_MISCOMPARE, 0x1D, 0x00);

/// How a device identifies itself.
#[derive(Clone, Debug)]
pub struct Identity {
    /// T10 vendor identification: INQUIRY bytes 8..16, space padded, truncated to 8 bytes.
    pub vendor: String,
    /// Product identification: INQUIRY bytes 16..32, space padded, truncated to 16 bytes.
    pub product: String,
    /// Product revision level: INQUIRY bytes 32..36, space padded, truncated to 4 bytes.
    pub revision: String,
    /// Unit serial number for VPD page 0x80 (up to 250 bytes; longer values are truncated).
    pub serial: String,
    /// NAA designator (the full 64-bit value, NAA type 5 or 6) for VPD page 0x83, if any.
    pub naa: Option<u64>,
    /// EUI-64 designator for VPD page 0x83, if any.
    pub eui64: Option<u64>,
}

/// One command as CAM delivers it: the CDB, the data the initiator sends (DATA OUT, empty
/// otherwise) and room for the data the device returns (DATA IN; its length is the CCB's
/// dxfer_len, which may be smaller or larger than what the CDB's allocation/transfer length asks for).
pub struct Command<'a> {
    /// The command descriptor block.
    pub cdb: &'a [u8],
    /// The data the initiator sends (DATA OUT); empty for other commands.
    pub data_out: &'a [u8],
    /// Room for the data the device returns (DATA IN).
    pub data_in: &'a mut [u8],
}

/// What the device did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The SCSI status byte.
    pub status: u8,
    /// Fixed-format sense data when status is CHECK CONDITION; empty otherwise.
    ///
    /// The data has response code 0x70, 18 bytes and ADDITIONAL SENSE LENGTH 10.
    pub sense: Vec<u8>,
    /// Bytes the device wrote into data_in (DATA IN) or consumed from data_out (DATA OUT).
    pub transferred: usize,
}

/// A SCSI logical unit that executes commands.
pub trait ScsiDevice: Send + Sync {
    /// Peripheral device type (0x00 disk, 0x05 CD/DVD).
    fn device_type(&self) -> u8;
    /// How the device identifies itself in INQUIRY data.
    fn identity(&self) -> &Identity;
    /// Executes one command and reports status, sense data and the bytes moved.
    fn execute(&self, cmd: Command<'_>) -> Outcome;
}

/// A device of another type (a tape drive, a changer) as far as ctlpass
/// looks at it: a RAM disk whose standard INQUIRY data says it is of
/// `device_type`, with a removable medium.
pub struct OtherType {
    /// The disk that answers the commands.
    pub disk: RamDisk,
    /// The peripheral device type INQUIRY reports.
    pub device_type: u8,
}

impl ScsiDevice for OtherType {
    fn device_type(&self) -> u8 {
        self.device_type
    }

    fn identity(&self) -> &Identity {
        self.disk.identity()
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        let standard_inquiry = cmd.cdb.first() == Some(&0x12) && cmd.cdb.get(1) == Some(&0);
        let data_in = &mut *cmd.data_in;
        let o = self.disk.execute(Command {
            cdb: cmd.cdb,
            data_out: cmd.data_out,
            data_in: &mut *data_in,
        });
        if standard_inquiry && o.transferred > 0 {
            data_in[0] = self.device_type;
            data_in[1] |= 0x80;
        }
        o
    }
}

/// Why a command failed: sense key, ADDITIONAL SENSE CODE and qualifier, and an optional INFORMATION value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sense {
    key: u8,
    asc: u8,
    ascq: u8,
    info: Option<u64>,
}

impl Sense {
    const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            info: None,
        }
    }

    fn with_info(self, info: u64) -> Sense {
        Sense {
            info: Some(info),
            ..self
        }
    }

    /// Builds 18 bytes of fixed-format sense data.
    fn to_bytes(self) -> Vec<u8> {
        let mut sense = vec![0; 18];
        sense[0] = 0x70;
        sense[2] = self.key;
        // The fixed-format INFORMATION field has four bytes; a value that does not fit is not
        // reported and VALID stays zero.
        if let Some(info) = self.info.and_then(|info| u32::try_from(info).ok()) {
            sense[0] |= 0x80;
            sense[3..7].copy_from_slice(&info.to_be_bytes());
        }
        sense[7] = 10;
        sense[12] = self.asc;
        sense[13] = self.ascq;
        sense
    }
}

/// Bytes transferred on success, or the failure to report with CHECK CONDITION.
type Reply = Result<usize, Sense>;

/// A command handler: it gets the device state, the identity and the command.
type Handler<S> = fn(&mut S, &Identity, Command<'_>) -> Reply;

/// The state behind a device's mutex: its pending unit attention and its command set.
trait Unit: Sized {
    fn attention(&mut self) -> &mut Option<Sense>;
    /// The handler for a supported operation code, or None for INVALID COMMAND OPERATION CODE.
    fn handler(&self, opcode: u8) -> Option<Handler<Self>>;
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one command against a device state and turns the reply into an [`Outcome`].
fn execute_on<S: Unit>(state: &Mutex<S>, identity: &Identity, cmd: Command<'_>) -> Outcome {
    match dispatch(&mut *lock(state), identity, cmd) {
        Ok(transferred) => Outcome {
            status: GOOD,
            sense: Vec::new(),
            transferred,
        },
        Err(sense) => Outcome {
            status: CHECK_CONDITION,
            sense: sense.to_bytes(),
            transferred: 0,
        },
    }
}

/// Reports a pending unit attention, rejects unsupported opcodes and short CDBs, then runs the handler.
fn dispatch<S: Unit>(unit: &mut S, identity: &Identity, cmd: Command<'_>) -> Reply {
    let Some(&opcode) = cmd.cdb.first() else {
        return Err(INVALID_FIELD_IN_CDB);
    };
    if !matches!(opcode, INQUIRY | REPORT_LUNS | REQUEST_SENSE)
        && let Some(attention) = unit.attention().take()
    {
        return Err(attention);
    }
    let handler = unit.handler(opcode).ok_or(INVALID_OPCODE)?;
    if cmd.cdb.len() < cdb_len(opcode) {
        return Err(INVALID_FIELD_IN_CDB);
    }
    handler(unit, identity, cmd)
}

/// The CDB length an operation code's group implies (groups 3, 6 and 7 hold no supported command).
fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        5 => 12,
        _ => 16,
    }
}

/// Reads a big-endian unsigned field of up to eight bytes.
fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Reads a big-endian length field (at most four bytes) as a usize.
fn len_field(bytes: &[u8]) -> usize {
    usize::try_from(be(bytes)).unwrap_or(usize::MAX)
}

/// Encodes a length for a two-byte field.
fn be16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

/// Copies min(allocation length, room in data_in, available data) bytes to data_in and returns the count.
fn send(data_in: &mut [u8], allocation: usize, data: &[u8]) -> usize {
    let n = allocation.min(data_in.len()).min(data.len());
    data_in[..n].copy_from_slice(&data[..n]);
    n
}

/// Decodes the LOGICAL BLOCK ADDRESS and the block count of a block-addressed command.
///
/// A non-zero RDPROTECT/WRPROTECT/VRPROTECT field (byte 1 bits 7..5; reserved in READ(6)/WRITE(6)
/// and SYNCHRONIZE CACHE) is an invalid field: the media carry no protection information.
fn lba_and_count(cdb: &[u8]) -> Result<(u64, u64), Sense> {
    if cdb[1] & 0xE0 != 0 {
        return Err(INVALID_FIELD_IN_CDB);
    }
    Ok(match cdb[0] {
        COMPARE_AND_WRITE => (be(&cdb[2..10]), u64::from(cdb[13])),
        // READ(6)/WRITE(6): a transfer length of 0 means 256 blocks.
        READ_6 | WRITE_6 => (
            be(&cdb[1..4]) & 0x1F_FFFF,
            if cdb[4] == 0 { 256 } else { u64::from(cdb[4]) },
        ),
        opcode => match opcode >> 5 {
            1 | 2 => (be(&cdb[2..6]), be(&cdb[7..9])),
            5 => (be(&cdb[2..6]), be(&cdb[6..10])),
            _ => (be(&cdb[2..10]), be(&cdb[10..14])),
        },
    })
}

/// Fails with LOGICAL BLOCK ADDRESS OUT OF RANGE unless lba..lba+count lies within the medium.
///
/// INFORMATION carries the command's starting LBA (not the first LBA beyond the medium).
fn check_range(lba: u64, count: u64, blocks: u64) -> Result<(), Sense> {
    match lba.checked_add(count) {
        Some(end) if end <= blocks => Ok(()),
        _ => Err(LBA_OUT_OF_RANGE.with_info(lba)),
    }
}

/// Resolves a block count where 0 means "to the end of the medium", then range checks it.
fn count_to_end(lba: u64, count: u64, blocks: u64) -> Result<u64, Sense> {
    let count = match count {
        0 => blocks.checked_sub(lba).ok_or(LBA_OUT_OF_RANGE.with_info(lba))?,
        n => n,
    };
    check_range(lba, count, blocks)?;
    Ok(count)
}

/// Bytes of a count-block transfer that fit in room bytes.
fn transfer_len(count: u64, block_size: usize, room: usize) -> usize {
    usize::try_from(count.saturating_mul(block_size as u64)).map_or(room, |n| n.min(room))
}

/// The first count blocks of data_out, or INVALID FIELD IN CDB if the initiator sent fewer (a truncated data-out).
fn data_out_blocks(data_out: &[u8], count: u64, block_size: usize) -> Result<&[u8], Sense> {
    usize::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(block_size))
        .and_then(|n| data_out.get(..n))
        .ok_or(INVALID_FIELD_IN_CDB)
}

/// Pads or truncates text to a fixed-width, space-padded field.
fn text_field(text: &str, width: usize) -> Vec<u8> {
    let mut field: Vec<u8> = text.bytes().take(width).collect();
    field.resize(width, b' ');
    field
}

/// Builds a VPD page: the 4-byte header (with a two-byte PAGE LENGTH) followed by body.
fn vpd_page(device_type: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut page = vec![device_type, code];
    page.extend_from_slice(&be16(body.len()));
    page.extend_from_slice(body);
    page
}

/// INQUIRY: standard data, or a VPD page from the common ones (0x00, 0x80, 0x83) and the device's own pages.
fn inquiry(cmd: Command<'_>, identity: &Identity, device_type: u8, device_pages: Vec<Vec<u8>>) -> Reply {
    let cdb = cmd.cdb;
    let allocation = len_field(&cdb[3..5]);
    if cdb[1] & 0xFE != 0 {
        return Err(INVALID_FIELD_IN_CDB);
    }
    let data = if cdb[1] & 0x01 == 0 {
        if cdb[2] != 0 {
            return Err(INVALID_FIELD_IN_CDB);
        }
        standard_inquiry(identity, device_type)
    } else {
        match cdb[2] {
            0x00 => {
                let codes = [0x00, 0x80, 0x83]
                    .into_iter()
                    .chain(device_pages.iter().map(|page| page[1]));
                vpd_page(device_type, 0x00, &codes.collect::<Vec<u8>>())
            }
            0x80 => vpd_page(
                device_type,
                0x80,
                &identity.serial.as_bytes()[..identity.serial.len().min(250)],
            ),
            0x83 => vpd_page(device_type, 0x83, &designators(identity)),
            code => device_pages
                .into_iter()
                .find(|page| page[1] == code)
                .ok_or(INVALID_FIELD_IN_CDB)?,
        }
    };
    Ok(send(cmd.data_in, allocation, &data))
}

/// Standard INQUIRY data (96 bytes); a CD/DVD drive is removable, a disk supports command queuing.
fn standard_inquiry(identity: &Identity, device_type: u8) -> Vec<u8> {
    let cd = device_type == TYPE_CDROM;
    let mut data = vec![0; 96];
    data[0] = device_type;
    data[1] = if cd { 0x80 } else { 0x00 };
    data[2] = 0x07;
    data[3] = 0x02;
    data[4] = 91;
    data[7] = if cd { 0x00 } else { 0x02 };
    data[8..16].copy_from_slice(&text_field(&identity.vendor, 8));
    data[16..32].copy_from_slice(&text_field(&identity.product, 16));
    data[32..36].copy_from_slice(&text_field(&identity.revision, 4));
    data
}

/// Designation descriptors of VPD page 0x83, all with logical unit association.
///
/// The T10 vendor ID designator holds at most 247 serial bytes so its length fits its one-byte field.
fn designators(identity: &Identity) -> Vec<u8> {
    let mut list = Vec::new();
    if let Some(naa) = identity.naa {
        list.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
        list.extend_from_slice(&naa.to_be_bytes());
    }
    if let Some(eui64) = identity.eui64 {
        list.extend_from_slice(&[0x01, 0x02, 0x00, 0x08]);
        list.extend_from_slice(&eui64.to_be_bytes());
    }
    let mut t10 = text_field(&identity.vendor, 8);
    t10.extend(identity.serial.bytes().take(247));
    list.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
    list.extend(t10);
    list
}

/// REQUEST SENSE: always NO SENSE, since the devices use autosense and never hold deferred sense.
///
/// (The simulated SIM answers REQUEST SENSE itself when it holds sense data for the device: after a
/// CHECK CONDITION on a CCB with autosense disabled, or an injected fault without autosense.)
fn request_sense(cmd: Command<'_>) -> Reply {
    // DESC asks for descriptor-format sense data, which the devices do not support.
    if cmd.cdb[1] & 0x01 != 0 {
        return Err(INVALID_FIELD_IN_CDB);
    }
    Ok(send(cmd.data_in, usize::from(cmd.cdb[4]), &NO_SENSE.to_bytes()))
}

/// REPORT LUNS: LUN 0 is the only logical unit and there are no well-known logical units.
fn report_luns(cmd: Command<'_>) -> Reply {
    let lun_count: u32 = match cmd.cdb[2] {
        0x00 | 0x02 => 1,
        0x01 => 0,
        _ => return Err(INVALID_FIELD_IN_CDB),
    };
    let mut data = (8 * lun_count).to_be_bytes().to_vec();
    data.resize(8 + 8 * lun_count as usize, 0);
    Ok(send(cmd.data_in, len_field(&cmd.cdb[6..10]), &data))
}

/// MODE SENSE(6) and (10): the header, an optional short block descriptor and, if the device has it, the Caching page.
///
/// Saved values are not supported; changeable values show no changeable field.
fn mode_sense(cmd: Command<'_>, device_specific: u8, block_descriptor: Option<[u8; 8]>, caching: bool) -> Reply {
    let cdb = cmd.cdb;
    let ten = cdb[0] == MODE_SENSE_10;
    let dbd = cdb[1] & 0x08 != 0;
    let page_control = cdb[2] >> 6;
    let allocation = if ten {
        len_field(&cdb[7..9])
    } else {
        usize::from(cdb[4])
    };
    if page_control == 3 {
        return Err(SAVING_PARAMETERS_NOT_SUPPORTED);
    }
    let with_caching = match (cdb[2] & 0x3F, cdb[3]) {
        (0x08, 0x00) if caching => true,
        (0x3F, 0x00 | 0xFF) => caching,
        _ => return Err(INVALID_FIELD_IN_CDB),
    };
    let descriptor = block_descriptor.filter(|_| !dbd);
    let mut body = Vec::new();
    body.extend(descriptor.iter().flatten());
    if with_caching {
        let mut page = [0; 20];
        page[0] = 0x08;
        page[1] = 0x12;
        if page_control != 1 {
            page[2] = 0x04; // WCE
        }
        body.extend_from_slice(&page);
    }
    let descriptor_len = descriptor.map_or(0, |d| d.len());
    let mut data = if ten {
        let mut header = vec![0; 8];
        header[0..2].copy_from_slice(&be16(body.len() + 6));
        header[3] = device_specific;
        header[6..8].copy_from_slice(&be16(descriptor_len));
        header
    } else {
        vec![(body.len() + 3) as u8, 0, device_specific, descriptor_len as u8]
    };
    data.extend(body);
    Ok(send(cmd.data_in, allocation, &data))
}

/// READ CAPACITY(10): the last LBA (0xFFFFFFFF if it does not fit) and the block length.
fn read_capacity_10(cmd: Command<'_>, blocks: u64, block_size: u32) -> Reply {
    let cdb = cmd.cdb;
    // The obsolete LOGICAL BLOCK ADDRESS field must be zero unless PMI is set.
    if cdb[8] & 0x01 == 0 && be(&cdb[2..6]) != 0 {
        return Err(INVALID_FIELD_IN_CDB);
    }
    let last = u32::try_from(blocks.saturating_sub(1)).unwrap_or(u32::MAX);
    let mut data = [0; 8];
    data[..4].copy_from_slice(&last.to_be_bytes());
    data[4..].copy_from_slice(&block_size.to_be_bytes());
    Ok(send(cmd.data_in, data.len(), &data))
}

/// Sparse block storage: blocks never written, or last written with zeros, are absent
/// (deallocated) and read as zeros, so any capacity costs only the non-zero blocks.
struct Store {
    block_size: usize,
    blocks: u64,
    data: BTreeMap<u64, Box<[u8]>>,
}

impl Store {
    /// Fills out from consecutive blocks starting at lba (the last block may be partial).
    fn read(&self, lba: u64, out: &mut [u8]) {
        for (i, chunk) in out.chunks_mut(self.block_size).enumerate() {
            match self.data.get(&(lba + i as u64)) {
                Some(block) => chunk.copy_from_slice(&block[..chunk.len()]),
                None => chunk.fill(0),
            }
        }
    }

    /// Writes whole blocks starting at lba.
    fn write(&mut self, lba: u64, data: &[u8]) {
        for (i, block) in data.chunks(self.block_size).enumerate() {
            self.put(lba + i as u64, block);
        }
    }

    /// Writes one block at every LBA of lba..lba+count.
    fn fill(&mut self, lba: u64, count: u64, block: &[u8]) {
        if block.iter().all(|&b| b == 0) {
            self.deallocate(lba, count);
        } else {
            for lba in lba..lba + count {
                self.data.insert(lba, block.into());
            }
        }
    }

    fn put(&mut self, lba: u64, block: &[u8]) {
        if block.iter().all(|&b| b == 0) {
            self.data.remove(&lba);
        } else {
            self.data.insert(lba, block.into());
        }
    }

    fn deallocate(&mut self, lba: u64, count: u64) {
        let mapped: Vec<u64> = self.data.range(lba..lba + count).map(|(&lba, _)| lba).collect();
        for lba in mapped {
            self.data.remove(&lba);
        }
    }

    /// Offset of the first byte of expected that differs from the blocks starting at lba.
    fn mismatch(&self, lba: u64, expected: &[u8]) -> Option<usize> {
        let mut current = vec![0; expected.len()];
        self.read(lba, &mut current);
        current.iter().zip(expected).position(|(a, b)| a != b)
    }

    fn is_mapped(&self, lba: u64) -> bool {
        self.data.contains_key(&lba)
    }

    /// Number of blocks from lba on that share its mapped/deallocated status.
    fn run_length(&self, lba: u64) -> u64 {
        let mut following = self.data.range(lba..).map(|(&mapped, _)| mapped - lba);
        if self.is_mapped(lba) {
            following
                .enumerate()
                .take_while(|&(i, offset)| offset == i as u64)
                .count() as u64
        } else {
            following.next().unwrap_or(self.blocks - lba)
        }
    }

    fn resize(&mut self, blocks: u64) {
        self.data.split_off(&blocks);
        self.blocks = blocks;
    }
}

/// A RAM-backed direct-access block device (SBC-4).
pub struct RamDisk {
    identity: Identity,
    state: Mutex<DiskUnit>,
}

struct DiskUnit {
    store: Store,
    physical_exponent: u8,
    unmap: bool,
    attention: Option<Sense>,
}

impl RamDisk {
    /// Creates a disk of `blocks` zero-filled logical blocks of `block_size` bytes (512 or 4096 typical).
    ///
    /// # Panics
    ///
    /// If `block_size` is 0 or does not fit the 3-byte block length of a mode block descriptor.
    pub fn new(identity: Identity, blocks: u64, block_size: u32) -> RamDisk {
        assert!(
            (1..=0xFF_FFFF).contains(&block_size),
            "unsupported block size {block_size}"
        );
        let store = Store {
            block_size: block_size as usize,
            blocks,
            data: BTreeMap::new(),
        };
        let unit = DiskUnit {
            store,
            physical_exponent: 0,
            unmap: false,
            attention: None,
        };
        RamDisk {
            identity,
            state: Mutex::new(unit),
        }
    }

    /// Sets the logical blocks per physical block exponent reported by READ CAPACITY(16) (low 4 bits used; default 0).
    pub fn with_physical_exponent(mut self, exp: u8) -> RamDisk {
        self.unit().physical_exponent = exp & 0x0F;
        self
    }

    /// Turns thin provisioning on or off: LBPME in READ CAPACITY(16), VPD page 0xB2 and UNMAP (default off).
    pub fn with_unmap(mut self, on: bool) -> RamDisk {
        self.unit().unmap = on;
        self
    }

    /// Resizes the medium; the next command gets UNIT ATTENTION 2A/09 CAPACITY DATA HAS CHANGED once.
    pub fn resize(&self, blocks: u64) {
        let mut unit = lock(&self.state);
        unit.store.resize(blocks);
        unit.attention = Some(CAPACITY_DATA_HAS_CHANGED);
    }

    /// Number of logical blocks on the medium.
    pub fn blocks(&self) -> u64 {
        lock(&self.state).store.blocks
    }

    /// Logical block length in bytes.
    pub fn block_size(&self) -> u32 {
        lock(&self.state).store.block_size as u32
    }

    fn unit(&mut self) -> &mut DiskUnit {
        self.state.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ScsiDevice for RamDisk {
    fn device_type(&self) -> u8 {
        TYPE_DISK
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        execute_on(&self.state, &self.identity, cmd)
    }
}

impl Unit for DiskUnit {
    fn attention(&mut self) -> &mut Option<Sense> {
        &mut self.attention
    }

    fn handler(&self, opcode: u8) -> Option<Handler<Self>> {
        let handler: Handler<Self> = match opcode {
            TEST_UNIT_READY | START_STOP_UNIT => |_, _, _| Ok(0),
            REQUEST_SENSE => |_, _, cmd| request_sense(cmd),
            INQUIRY => |disk, identity, cmd| inquiry(cmd, identity, TYPE_DISK, disk.vpd_pages()),
            REPORT_LUNS => |_, _, cmd| report_luns(cmd),
            // DPOFUA: DPO and FUA are accepted (every write reaches the medium at once).
            MODE_SENSE_6 | MODE_SENSE_10 => |disk, _, cmd| mode_sense(cmd, 0x10, Some(disk.block_descriptor()), true),
            READ_CAPACITY_10 => |disk, _, cmd| read_capacity_10(cmd, disk.store.blocks, disk.block_size()),
            SERVICE_ACTION_IN_16 => |disk, _, cmd| match cmd.cdb[1] & 0x1F {
                READ_CAPACITY_16 => disk.read_capacity_16(cmd),
                GET_LBA_STATUS => disk.get_lba_status(cmd),
                _ => Err(INVALID_FIELD_IN_CDB),
            },
            READ_6 | READ_10 | READ_12 | READ_16 => |disk, _, cmd| disk.read(cmd),
            WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16 | WRITE_AND_VERIFY_10 | WRITE_AND_VERIFY_16 => {
                |disk, _, cmd| disk.write(cmd)
            }
            VERIFY_10 | VERIFY_16 => |disk, _, cmd| disk.verify(cmd),
            COMPARE_AND_WRITE => |disk, _, cmd| disk.compare_and_write(cmd),
            SYNCHRONIZE_CACHE_10 | SYNCHRONIZE_CACHE_16 => |disk, _, cmd| disk.synchronize_cache(cmd),
            WRITE_SAME_10 | WRITE_SAME_16 => |disk, _, cmd| disk.write_same(cmd),
            UNMAP if self.unmap => |disk, _, cmd| disk.unmap(cmd),
            _ => return None,
        };
        Some(handler)
    }
}

impl DiskUnit {
    fn block_size(&self) -> u32 {
        self.store.block_size as u32
    }

    /// The disk's own VPD pages: Block Limits, Block Device Characteristics and, when thin, Logical Block Provisioning.
    fn vpd_pages(&self) -> Vec<Vec<u8>> {
        let mut limits = vpd_page(TYPE_DISK, 0xB0, &[0; 0x3C]);
        limits[5] = 0xFF; // MAXIMUM COMPARE AND WRITE LENGTH
        // OPTIMAL TRANSFER LENGTH GRANULARITY: one physical block.
        limits[6..8].copy_from_slice(&(1u16 << self.physical_exponent).to_be_bytes());
        // MAXIMUM TRANSFER LENGTH (bytes 8..12) stays 0: no limit.
        limits[12..16].copy_from_slice(&128u32.to_be_bytes()); // OPTIMAL TRANSFER LENGTH
        if self.unmap {
            limits[20..24].copy_from_slice(&u32::MAX.to_be_bytes()); // MAXIMUM UNMAP LBA COUNT
            limits[24..28].copy_from_slice(&256u32.to_be_bytes()); // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
            limits[28..32].copy_from_slice(&1u32.to_be_bytes()); // OPTIMAL UNMAP GRANULARITY
        }
        let mut characteristics = vpd_page(TYPE_DISK, 0xB1, &[0; 0x3C]);
        characteristics[5] = 0x01; // MEDIUM ROTATION RATE: non-rotating medium
        let mut pages = vec![limits, characteristics];
        if self.unmap {
            // LBPU, LBPWS, LBPWS10 and LBPRZ 001b (deallocated blocks read as zeros); thin provisioned.
            pages.push(vpd_page(TYPE_DISK, 0xB2, &[0x00, 0xE4, 0x02, 0x00]));
        }
        pages
    }

    /// Short LBA mode parameter block descriptor: block count (0xFFFFFFFF if it does not fit) and block length.
    fn block_descriptor(&self) -> [u8; 8] {
        let mut descriptor = [0; 8];
        descriptor[..4].copy_from_slice(&u32::try_from(self.store.blocks).unwrap_or(u32::MAX).to_be_bytes());
        descriptor[4..].copy_from_slice(&self.block_size().to_be_bytes());
        descriptor
    }

    fn read_capacity_16(&mut self, cmd: Command<'_>) -> Reply {
        let cdb = cmd.cdb;
        // The obsolete LOGICAL BLOCK ADDRESS field must be zero unless PMI is set.
        if cdb[14] & 0x01 == 0 && be(&cdb[2..10]) != 0 {
            return Err(INVALID_FIELD_IN_CDB);
        }
        let mut data = [0; 32];
        data[..8].copy_from_slice(&self.store.blocks.saturating_sub(1).to_be_bytes());
        data[8..12].copy_from_slice(&self.block_size().to_be_bytes());
        data[13] = self.physical_exponent;
        if self.unmap {
            data[14] = 0xC0; // LBPME, LBPRZ
        }
        Ok(send(cmd.data_in, len_field(&cdb[10..14]), &data))
    }

    /// GET LBA STATUS: one descriptor from the starting LBA; a fully provisioned disk reports every block mapped.
    fn get_lba_status(&mut self, cmd: Command<'_>) -> Reply {
        let lba = be(&cmd.cdb[2..10]);
        let blocks = self.store.blocks;
        if lba >= blocks {
            return Err(LBA_OUT_OF_RANGE.with_info(lba));
        }
        let (status, run) = if self.unmap {
            (u8::from(!self.store.is_mapped(lba)), self.store.run_length(lba))
        } else {
            (0, blocks - lba)
        };
        let mut data = [0; 24];
        data[..4].copy_from_slice(&20u32.to_be_bytes());
        data[8..16].copy_from_slice(&lba.to_be_bytes());
        data[16..20].copy_from_slice(&u32::try_from(run).unwrap_or(u32::MAX).to_be_bytes());
        data[20] = status;
        Ok(send(cmd.data_in, len_field(&cmd.cdb[10..14]), &data))
    }

    fn read(&mut self, cmd: Command<'_>) -> Reply {
        let (lba, count) = lba_and_count(cmd.cdb)?;
        check_range(lba, count, self.store.blocks)?;
        let n = transfer_len(count, self.store.block_size, cmd.data_in.len());
        self.store.read(lba, &mut cmd.data_in[..n]);
        Ok(n)
    }

    /// WRITE and WRITE AND VERIFY (the verification of RAM cannot fail).
    fn write(&mut self, cmd: Command<'_>) -> Reply {
        let (lba, count) = lba_and_count(cmd.cdb)?;
        check_range(lba, count, self.store.blocks)?;
        let data = data_out_blocks(cmd.data_out, count, self.store.block_size)?;
        self.store.write(lba, data);
        Ok(data.len())
    }

    /// VERIFY: BYTCHK 00b checks nothing, 01b compares the data-out blocks and 11b one data-out block with each block.
    fn verify(&mut self, cmd: Command<'_>) -> Reply {
        let (lba, count) = lba_and_count(cmd.cdb)?;
        let bytchk = (cmd.cdb[1] >> 1) & 0x03;
        if bytchk == 2 {
            return Err(INVALID_FIELD_IN_CDB);
        }
        check_range(lba, count, self.store.blocks)?;
        if bytchk == 0 || count == 0 {
            return Ok(0);
        }
        let block_size = self.store.block_size;
        let (expected, offset) = if bytchk == 1 {
            let expected = data_out_blocks(cmd.data_out, count, block_size)?;
            (expected, self.store.mismatch(lba, expected).map(|at| at as u64))
        } else {
            let expected = data_out_blocks(cmd.data_out, 1, block_size)?;
            let offset = (0..count).find_map(|i| {
                let at = self.store.mismatch(lba + i, expected)?;
                Some(i * block_size as u64 + at as u64)
            });
            (expected, offset)
        };
        match offset {
            Some(at) => Err(MISCOMPARE_DURING_VERIFY.with_info(at)),
            None => Ok(expected.len()),
        }
    }

    /// COMPARE AND WRITE: the data-out holds n blocks to compare, then n blocks to write if all matched.
    fn compare_and_write(&mut self, cmd: Command<'_>) -> Reply {
        let (lba, count) = lba_and_count(cmd.cdb)?;
        check_range(lba, count, self.store.blocks)?;
        let data = data_out_blocks(cmd.data_out, 2 * count, self.store.block_size)?;
        let (expected, new) = data.split_at(data.len() / 2);
        if let Some(at) = self.store.mismatch(lba, expected) {
            return Err(MISCOMPARE_DURING_VERIFY.with_info(at as u64));
        }
        self.store.write(lba, new);
        Ok(data.len())
    }

    fn synchronize_cache(&mut self, cmd: Command<'_>) -> Reply {
        let (lba, count) = lba_and_count(cmd.cdb)?;
        count_to_end(lba, count, self.store.blocks)?;
        Ok(0)
    }

    /// WRITE SAME: one data-out block (zeros with NDOB) written to every block of the range.
    ///
    /// With the UNMAP bit, reads must still return that block, so a zero block deallocates the
    /// range and any other block is written; the obsolete bits and ANCHOR (unsupported) are rejected.
    fn write_same(&mut self, cmd: Command<'_>) -> Reply {
        let (lba, count) = lba_and_count(cmd.cdb)?;
        let flags = cmd.cdb[1];
        let ndob = cmd.cdb[0] == WRITE_SAME_16 && flags & 0x01 != 0;
        // ANCHOR (0x10) and the obsolete bits 2..1, plus bit 0 of WRITE SAME(10) (NDOB only exists in WRITE SAME(16)).
        let rejected = if cmd.cdb[0] == WRITE_SAME_16 { 0x16 } else { 0x17 };
        if flags & rejected != 0 || (flags & 0x08 != 0 && !self.unmap) {
            return Err(INVALID_FIELD_IN_CDB);
        }
        let count = count_to_end(lba, count, self.store.blocks)?;
        let zeros = vec![0; self.store.block_size];
        let block = if ndob {
            &zeros
        } else {
            data_out_blocks(cmd.data_out, 1, self.store.block_size)?
        };
        self.store.fill(lba, count, block);
        Ok(if ndob { 0 } else { block.len() })
    }

    /// UNMAP: deallocates the ranges of the block descriptors after checking all of them.
    fn unmap(&mut self, cmd: Command<'_>) -> Reply {
        // ANCHOR is not supported (ANC_SUP is zero).
        if cmd.cdb[1] & 0x01 != 0 {
            return Err(INVALID_FIELD_IN_CDB);
        }
        let length = len_field(&cmd.cdb[7..9]);
        match length {
            0 => return Ok(0),
            1..8 => return Err(PARAMETER_LIST_LENGTH_ERROR),
            _ => {}
        }
        let list = cmd.data_out.get(..length).ok_or(INVALID_FIELD_IN_CDB)?;
        // An incomplete last descriptor is ignored.
        let descriptors = &list[8..];
        let descriptors = descriptors.get(..len_field(&list[2..4])).unwrap_or(descriptors);
        let ranges: Vec<(u64, u64)> = descriptors
            .chunks_exact(16)
            .map(|d| (be(&d[..8]), be(&d[8..12])))
            .collect();
        if ranges.len() > 256 {
            return Err(INVALID_FIELD_IN_PARAMETER_LIST);
        }
        for &(lba, count) in &ranges {
            check_range(lba, count, self.store.blocks)?;
        }
        for (lba, count) in ranges {
            self.store.deallocate(lba, count);
        }
        Ok(length)
    }
}

/// A CD/DVD drive (MMC-6) with a read-only 2048-byte-block medium.
pub struct Cdrom {
    identity: Identity,
    state: Mutex<CdUnit>,
}

struct CdUnit {
    medium: Option<Vec<u8>>,
    /// The medium START STOP UNIT or [`Cdrom::eject`] ejected last, which a load brings back.
    ejected: Option<Vec<u8>>,
    prevent_removal: bool,
    attention: Option<Sense>,
}

/// Pads an image with zeros to a whole number of 2048-byte blocks.
fn whole_blocks(mut image: Vec<u8>) -> Vec<u8> {
    image.resize(image.len().div_ceil(CD_BLOCK) * CD_BLOCK, 0);
    image
}

impl Cdrom {
    /// Creates a drive with a medium of `image` (padded with zeros to a multiple of 2048 bytes) or no medium (None).
    pub fn new(identity: Identity, image: Option<Vec<u8>>) -> Cdrom {
        let unit = CdUnit {
            medium: image.map(whole_blocks),
            ejected: None,
            prevent_removal: false,
            attention: None,
        };
        Cdrom {
            identity,
            state: Mutex::new(unit),
        }
    }

    /// Loads a new medium; the next command gets UNIT ATTENTION 28/00 (MEDIUM MAY HAVE CHANGED) once.
    pub fn insert(&self, image: Vec<u8>) {
        let mut unit = lock(&self.state);
        unit.medium = Some(whole_blocks(image));
        unit.ejected = None;
        unit.attention = Some(MEDIUM_MAY_HAVE_CHANGED);
    }

    /// Removes the medium (a forced eject that ignores PREVENT ALLOW MEDIUM REMOVAL).
    pub fn eject(&self) {
        lock(&self.state).eject();
    }
}

impl ScsiDevice for Cdrom {
    fn device_type(&self) -> u8 {
        TYPE_CDROM
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        execute_on(&self.state, &self.identity, cmd)
    }
}

impl Unit for CdUnit {
    fn attention(&mut self) -> &mut Option<Sense> {
        &mut self.attention
    }

    fn handler(&self, opcode: u8) -> Option<Handler<Self>> {
        let handler: Handler<Self> = match opcode {
            TEST_UNIT_READY => |cd, _, _| cd.medium().map(|_| 0),
            REQUEST_SENSE => |_, _, cmd| request_sense(cmd),
            INQUIRY => |_, identity, cmd| inquiry(cmd, identity, TYPE_CDROM, Vec::new()),
            REPORT_LUNS => |_, _, cmd| report_luns(cmd),
            MODE_SENSE_6 | MODE_SENSE_10 => |_, _, cmd| mode_sense(cmd, 0x00, None, false),
            START_STOP_UNIT => |cd, _, cmd| cd.start_stop_unit(cmd),
            PREVENT_ALLOW_MEDIUM_REMOVAL => |cd, _, cmd| {
                cd.prevent_removal = cmd.cdb[4] & 0x01 != 0;
                Ok(0)
            },
            READ_CAPACITY_10 => |cd, _, cmd| read_capacity_10(cmd, cd.blocks()?, CD_BLOCK as u32),
            READ_10 | READ_12 => |cd, _, cmd| cd.read(cmd),
            WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16 | WRITE_AND_VERIFY_10 | WRITE_AND_VERIFY_16 => {
                |cd, _, _| cd.medium().and(Err(WRITE_PROTECTED))
            }
            GET_CONFIGURATION => |cd, _, cmd| cd.get_configuration(cmd),
            READ_TOC => |cd, _, cmd| cd.read_toc(cmd),
            _ => return None,
        };
        Some(handler)
    }
}

impl CdUnit {
    fn medium(&self) -> Result<&[u8], Sense> {
        self.medium.as_deref().ok_or(MEDIUM_NOT_PRESENT)
    }

    fn blocks(&self) -> Result<u64, Sense> {
        Ok((self.medium()?.len() / CD_BLOCK) as u64)
    }

    fn eject(&mut self) {
        if self.medium.is_some() {
            self.ejected = self.medium.take();
        }
    }

    /// START STOP UNIT: with POWER CONDITION 0 and LOEJ, START=0 ejects and START=1 loads the ejected medium.
    fn start_stop_unit(&mut self, cmd: Command<'_>) -> Reply {
        let flags = cmd.cdb[4];
        if flags >> 4 == 0 && flags & 0x02 != 0 {
            if flags & 0x01 == 0 {
                if self.prevent_removal {
                    return Err(MEDIUM_REMOVAL_PREVENTED);
                }
                self.eject();
            } else if self.medium.is_none() {
                self.medium = self.ejected.take();
            }
        }
        Ok(0)
    }

    fn read(&mut self, cmd: Command<'_>) -> Reply {
        let medium = self.medium()?;
        let (lba, count) = lba_and_count(cmd.cdb)?;
        check_range(lba, count, self.blocks()?)?;
        let n = transfer_len(count, CD_BLOCK, cmd.data_in.len());
        // The range check keeps lba * 2048 within the medium.
        let start = lba as usize * CD_BLOCK;
        cmd.data_in[..n].copy_from_slice(&medium[start..start + n]);
        Ok(n)
    }

    /// GET CONFIGURATION: only the feature header, with the CD-ROM profile current when a medium is loaded.
    fn get_configuration(&mut self, cmd: Command<'_>) -> Reply {
        // RT 11b is reserved.
        if cmd.cdb[1] & 0x03 == 0x03 {
            return Err(INVALID_FIELD_IN_CDB);
        }
        let profile: u16 = if self.medium.is_some() { 0x0008 } else { 0x0000 };
        let mut data = [0; 8];
        data[3] = 4; // DATA LENGTH: the bytes after the field
        data[6..8].copy_from_slice(&profile.to_be_bytes());
        Ok(send(cmd.data_in, len_field(&cmd.cdb[7..9]), &data))
    }

    /// READ TOC/PMA/ATIP format 0: track 1 (data, LBA 0) and the lead-out, in LBA or MSF form.
    fn read_toc(&mut self, cmd: Command<'_>) -> Reply {
        let blocks = self.blocks()?;
        let cdb = cmd.cdb;
        let msf = cdb[1] & 0x02 != 0;
        // A zero FORMAT field defers to the older format bits in the CONTROL byte.
        let format = match cdb[2] & 0x0F {
            0 => cdb[9] >> 6,
            format => format,
        };
        let tracks: &[(u8, u64)] = match (format, cdb[6]) {
            (0, 0 | 1) => &[(1, 0), (0xAA, blocks)],
            (0, 0xAA) => &[(0xAA, blocks)],
            _ => return Err(INVALID_FIELD_IN_CDB),
        };
        let mut data = vec![0, 0, 1, 1];
        for &(track, lba) in tracks {
            let address = if msf {
                msf_address(lba)
            } else {
                u32::try_from(lba).unwrap_or(u32::MAX).to_be_bytes()
            };
            data.extend_from_slice(&[0x00, 0x14, track, 0x00]); // ADR 1, CONTROL 4: data track
            data.extend_from_slice(&address);
        }
        let toc_len = be16(data.len() - 2);
        data[..2].copy_from_slice(&toc_len);
        Ok(send(cmd.data_in, len_field(&cdb[7..9]), &data))
    }
}

/// An LBA as a TOC MSF address (0, minutes, seconds, frames), with the 150-frame pregap; minutes saturate at 255.
fn msf_address(lba: u64) -> [u8; 4] {
    let frames = lba.saturating_add(150);
    [
        0,
        (frames / (60 * 75)).min(255) as u8,
        (frames / 75 % 60) as u8,
        (frames % 75) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            vendor: "ACME".into(),
            product: "RAMDISK WITH A LONG NAME".into(),
            revision: "1.0".into(),
            serial: "SN0001".into(),
            naa: Some(0x6001_4050_0000_0001),
            eui64: Some(0x0011_2233_4455_6677),
        }
    }

    fn disk() -> RamDisk {
        RamDisk::new(identity(), 1024, 512)
    }

    fn cd_image(blocks: usize) -> Vec<u8> {
        (0..blocks).flat_map(|i| vec![i as u8 + 1; CD_BLOCK]).collect()
    }

    fn cdrom() -> Cdrom {
        Cdrom::new(identity(), Some(cd_image(16)))
    }

    /// Runs a data-in (or no-data) command with a data_in of len bytes; returns the outcome and the bytes transferred.
    fn data_in(dev: &dyn ScsiDevice, cdb: &[u8], len: usize) -> (Outcome, Vec<u8>) {
        let mut buf = vec![0xEE; len];
        let outcome = dev.execute(Command {
            cdb,
            data_out: &[],
            data_in: &mut buf,
        });
        buf.truncate(outcome.transferred);
        (outcome, buf)
    }

    fn data_out(dev: &dyn ScsiDevice, cdb: &[u8], data: &[u8]) -> Outcome {
        dev.execute(Command {
            cdb,
            data_out: data,
            data_in: &mut [],
        })
    }

    fn good(transferred: usize) -> Outcome {
        Outcome {
            status: GOOD,
            sense: Vec::new(),
            transferred,
        }
    }

    fn check(key: u8, asc: u8, ascq: u8) -> Outcome {
        Outcome {
            status: CHECK_CONDITION,
            sense: Sense::new(key, asc, ascq).to_bytes(),
            transferred: 0,
        }
    }

    fn check_info(key: u8, asc: u8, ascq: u8, info: u32) -> Outcome {
        let mut sense = vec![0xF0, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0];
        sense[3..7].copy_from_slice(&info.to_be_bytes());
        Outcome {
            status: CHECK_CONDITION,
            sense,
            transferred: 0,
        }
    }

    fn rw6(opcode: u8, lba: u32, count: u8) -> Vec<u8> {
        let lba = lba.to_be_bytes();
        vec![opcode, lba[1] & 0x1F, lba[2], lba[3], count, 0]
    }

    fn rw10(opcode: u8, lba: u32, count: u16) -> Vec<u8> {
        let mut cdb = vec![opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&count.to_be_bytes());
        cdb
    }

    fn rw12(opcode: u8, lba: u32, count: u32) -> Vec<u8> {
        let mut cdb = vec![0; 12];
        cdb[0] = opcode;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[6..10].copy_from_slice(&count.to_be_bytes());
        cdb
    }

    fn rw16(opcode: u8, lba: u64, count: u32) -> Vec<u8> {
        let mut cdb = vec![0; 16];
        cdb[0] = opcode;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&count.to_be_bytes());
        cdb
    }

    fn inquiry_cdb(evpd: bool, page: u8, allocation: u16) -> Vec<u8> {
        let a = allocation.to_be_bytes();
        vec![INQUIRY, u8::from(evpd), page, a[0], a[1], 0]
    }

    fn vpd(dev: &dyn ScsiDevice, page: u8) -> Vec<u8> {
        let (outcome, data) = data_in(dev, &inquiry_cdb(true, page, 1024), 1024);
        assert_eq!(outcome.status, GOOD, "VPD page {page:#x}");
        data
    }

    fn pattern(blocks: usize, block_size: usize, seed: u8) -> Vec<u8> {
        (0..blocks * block_size).map(|i| (i % 251) as u8 ^ seed | 1).collect()
    }

    fn read_blocks(dev: &dyn ScsiDevice, lba: u64, count: u32, block_size: usize) -> Vec<u8> {
        let (outcome, data) = data_in(dev, &rw16(READ_16, lba, count), count as usize * block_size);
        assert_eq!(outcome, good(count as usize * block_size));
        data
    }

    fn service_action_in(action: u8, lba: u64, allocation: u32) -> Vec<u8> {
        let mut cdb = rw16(SERVICE_ACTION_IN_16, lba, allocation);
        cdb[1] = action;
        cdb
    }

    #[test]
    fn sense_data_is_fixed_format() {
        let outcome = disk().execute(Command {
            cdb: &[0xC0, 0, 0, 0, 0, 0],
            data_out: &[],
            data_in: &mut [],
        });
        assert_eq!(outcome.status, CHECK_CONDITION);
        assert_eq!(
            outcome.sense,
            [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0]
        );
        assert_eq!(outcome.transferred, 0);
    }

    #[test]
    fn unknown_opcodes_are_rejected() {
        for opcode in [
            0x01,
            0x7F,
            0xC0,
            0xFF,
            PREVENT_ALLOW_MEDIUM_REMOVAL,
            READ_TOC,
            GET_CONFIGURATION,
        ] {
            assert_eq!(
                data_in(&disk(), &[opcode; 16], 64).0,
                check(0x5, 0x20, 0x00),
                "disk {opcode:#x}"
            );
        }
        for opcode in [
            READ_6,
            READ_16,
            VERIFY_10,
            WRITE_SAME_16,
            UNMAP,
            COMPARE_AND_WRITE,
            SERVICE_ACTION_IN_16,
        ] {
            assert_eq!(
                data_in(&cdrom(), &[opcode; 16], 64).0,
                check(0x5, 0x20, 0x00),
                "cd {opcode:#x}"
            );
        }
        // UNMAP exists only on a thin-provisioned disk.
        assert_eq!(
            data_out(&disk(), &[UNMAP, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
            check(0x5, 0x20, 0x00)
        );
    }

    #[test]
    fn short_or_empty_cdbs_are_invalid_fields() {
        let disk = disk();
        assert_eq!(data_in(&disk, &[], 64).0, check(0x5, 0x24, 0x00));
        assert_eq!(
            data_in(&disk, &[READ_10, 0, 0, 0, 0, 0, 0, 0, 1], 512).0,
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(data_in(&disk, &[INQUIRY, 0, 0, 0, 36], 64).0, check(0x5, 0x24, 0x00));
        assert_eq!(
            data_in(&disk, &[SERVICE_ACTION_IN_16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0], 64).0,
            check(0x5, 0x24, 0x00)
        );
        // An unsupported opcode stays an unsupported opcode however short the CDB is.
        assert_eq!(data_in(&disk, &[0xC0], 64).0, check(0x5, 0x20, 0x00));
    }

    #[test]
    fn standard_inquiry_of_the_disk() {
        let (outcome, data) = data_in(&disk(), &inquiry_cdb(false, 0, 255), 255);
        assert_eq!(outcome, good(96));
        assert_eq!(data[..8], [0x00, 0x00, 0x07, 0x02, 91, 0x00, 0x00, 0x02]);
        assert_eq!(&data[8..16], b"ACME    ");
        assert_eq!(&data[16..32], b"RAMDISK WITH A L");
        assert_eq!(&data[32..36], b"1.0 ");
        assert!(data[36..].iter().all(|&b| b == 0));
    }

    #[test]
    fn standard_inquiry_of_the_cdrom() {
        let (outcome, data) = data_in(&cdrom(), &inquiry_cdb(false, 0, 96), 96);
        assert_eq!(outcome, good(96));
        assert_eq!(data[..8], [0x05, 0x80, 0x07, 0x02, 91, 0x00, 0x00, 0x00]);
        assert_eq!(&data[8..16], b"ACME    ");
    }

    #[test]
    fn inquiry_transfers_at_most_allocation_and_buffer() {
        let disk = disk();
        assert_eq!(data_in(&disk, &inquiry_cdb(false, 0, 36), 255).0, good(36));
        assert_eq!(data_in(&disk, &inquiry_cdb(false, 0, 255), 10).0, good(10));
        assert_eq!(data_in(&disk, &inquiry_cdb(false, 0, 0), 255).0, good(0));
        assert_eq!(data_in(&disk, &inquiry_cdb(true, 0x80, 0), 255).0, good(0));
        assert_eq!(
            data_in(&disk, &inquiry_cdb(true, 0x80, 4), 255).1,
            [0x00, 0x80, 0x00, 0x06]
        );
    }

    #[test]
    fn inquiry_rejects_bad_fields_and_pages() {
        let disk = disk();
        assert_eq!(
            data_in(&disk, &inquiry_cdb(false, 0x80, 255), 255).0,
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(
            data_in(&disk, &[INQUIRY, 0x02, 0, 0, 255, 0], 255).0,
            check(0x5, 0x24, 0x00)
        );
        for page in [0x01, 0x86, 0xB2, 0xB3, 0xFF] {
            assert_eq!(
                data_in(&disk, &inquiry_cdb(true, page, 255), 255).0,
                check(0x5, 0x24, 0x00),
                "{page:#x}"
            );
        }
        for page in [0xB0, 0xB1, 0xB2] {
            assert_eq!(
                data_in(&cdrom(), &inquiry_cdb(true, page, 255), 255).0,
                check(0x5, 0x24, 0x00),
                "{page:#x}"
            );
        }
    }

    #[test]
    fn vpd_supported_pages() {
        assert_eq!(vpd(&disk(), 0x00), [0x00, 0x00, 0x00, 5, 0x00, 0x80, 0x83, 0xB0, 0xB1]);
        assert_eq!(
            vpd(&disk().with_unmap(true), 0x00),
            [0x00, 0x00, 0x00, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
        );
        assert_eq!(vpd(&cdrom(), 0x00), [0x05, 0x00, 0x00, 3, 0x00, 0x80, 0x83]);
    }

    #[test]
    fn vpd_unit_serial_number() {
        assert_eq!(vpd(&disk(), 0x80), b"\x00\x80\x00\x06SN0001");
        assert_eq!(vpd(&cdrom(), 0x80), b"\x05\x80\x00\x06SN0001");
    }

    #[test]
    fn vpd_device_identification() {
        let expected = [
            &[0x00, 0x83, 0x00, 42][..],
            &[0x01, 0x03, 0x00, 0x08, 0x60, 0x01, 0x40, 0x50, 0x00, 0x00, 0x00, 0x01],
            &[0x01, 0x02, 0x00, 0x08, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77],
            &[0x02, 0x01, 0x00, 14],
            b"ACME    SN0001",
        ]
        .concat();
        assert_eq!(vpd(&disk(), 0x83), expected);
        let bare = Identity {
            naa: None,
            eui64: None,
            ..identity()
        };
        let expected = [&[0x05, 0x83, 0x00, 18, 0x02, 0x01, 0x00, 14][..], b"ACME    SN0001"].concat();
        assert_eq!(vpd(&Cdrom::new(bare, None), 0x83), expected);
    }

    #[test]
    fn long_serial_numbers_are_bounded() {
        let long = Identity {
            serial: "S".repeat(300),
            naa: None,
            eui64: None,
            ..identity()
        };
        let disk = RamDisk::new(long, 8, 512);
        let serial = vpd(&disk, 0x80);
        assert_eq!((serial.len(), serial[3]), (254, 250));
        let ids = vpd(&disk, 0x83);
        assert_eq!((ids.len(), &ids[2..4], ids[7]), (4 + 4 + 255, &[0x01, 0x03][..], 255));
    }

    #[test]
    fn vpd_block_limits() {
        let mut expected = vec![0; 64];
        expected[..4].copy_from_slice(&[0x00, 0xB0, 0x00, 0x3C]);
        expected[5] = 0xFF;
        expected[7] = 0x01;
        expected[15] = 128;
        assert_eq!(vpd(&disk(), 0xB0), expected);
        expected[7] = 0x08;
        expected[20..32].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0x00, 0, 0, 0, 1]);
        assert_eq!(vpd(&disk().with_unmap(true).with_physical_exponent(3), 0xB0), expected);
    }

    #[test]
    fn vpd_block_device_characteristics() {
        let mut expected = vec![0; 64];
        expected[..6].copy_from_slice(&[0x00, 0xB1, 0x00, 0x3C, 0x00, 0x01]);
        assert_eq!(vpd(&disk(), 0xB1), expected);
    }

    #[test]
    fn vpd_logical_block_provisioning() {
        assert_eq!(
            vpd(&disk().with_unmap(true), 0xB2),
            [0x00, 0xB2, 0x00, 0x04, 0x00, 0xE4, 0x02, 0x00]
        );
    }

    #[test]
    fn vpd_page_lengths_match_contents() {
        let devices: [&dyn ScsiDevice; 3] = [&disk(), &disk().with_unmap(true), &cdrom()];
        for dev in devices {
            let supported = vpd(dev, 0x00);
            for &page in &supported[4..] {
                let data = vpd(dev, page);
                assert_eq!(data[1], page);
                assert_eq!(
                    usize::from(u16::from_be_bytes([data[2], data[3]])),
                    data.len() - 4,
                    "{page:#x}"
                );
            }
        }
    }

    #[test]
    fn test_unit_ready() {
        assert_eq!(data_in(&disk(), &[TEST_UNIT_READY, 0, 0, 0, 0, 0], 0).0, good(0));
        assert_eq!(data_in(&cdrom(), &[TEST_UNIT_READY, 0, 0, 0, 0, 0], 0).0, good(0));
        let empty = Cdrom::new(identity(), None);
        assert_eq!(
            data_in(&empty, &[TEST_UNIT_READY, 0, 0, 0, 0, 0], 0).0,
            check(0x2, 0x3A, 0x00)
        );
    }

    #[test]
    fn request_sense_reports_no_sense() {
        let (outcome, data) = data_in(&disk(), &[REQUEST_SENSE, 0, 0, 0, 252, 0], 252);
        assert_eq!(outcome, good(18));
        assert_eq!(data, [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(data_in(&disk(), &[REQUEST_SENSE, 0, 0, 0, 8, 0], 252).0, good(8));
        assert_eq!(
            data_in(&disk(), &[REQUEST_SENSE, 1, 0, 0, 252, 0], 252).0,
            check(0x5, 0x24, 0x00)
        );
    }

    #[test]
    fn report_luns() {
        let cdb = [REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let (outcome, data) = data_in(&cdrom(), &cdb, 256);
        assert_eq!(outcome, good(16));
        assert_eq!(data, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let well_known = [REPORT_LUNS, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(data_in(&disk(), &well_known, 256).1, [0; 8]);
        let bad = [REPORT_LUNS, 0, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(data_in(&disk(), &bad, 256).0, check(0x5, 0x24, 0x00));
        let none = [REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(data_in(&disk(), &none, 256).0, good(0));
    }

    fn caching_page(wce: u8) -> Vec<u8> {
        let mut page = vec![0; 20];
        page[..3].copy_from_slice(&[0x08, 0x12, wce]);
        page
    }

    #[test]
    fn mode_sense_6_of_the_disk() {
        let disk = disk();
        let (outcome, data) = data_in(&disk, &[MODE_SENSE_6, 0, 0x08, 0, 255, 0], 255);
        assert_eq!(outcome, good(32));
        let expected = [
            &[31, 0, 0x10, 8, 0, 0, 0x04, 0x00, 0, 0, 0x02, 0x00][..],
            &caching_page(0x04),
        ]
        .concat();
        assert_eq!(data, expected);
        let (outcome, data) = data_in(&disk, &[MODE_SENSE_6, 0x08, 0x3F, 0, 255, 0], 255);
        assert_eq!(outcome, good(24));
        assert_eq!(data, [&[23, 0, 0x10, 0][..], &caching_page(0x04)].concat());
        // Changeable values: nothing can be changed.
        let (_, data) = data_in(&disk, &[MODE_SENSE_6, 0x08, 0x48, 0, 255, 0], 255);
        assert_eq!(data, [&[23, 0, 0x10, 0][..], &caching_page(0)].concat());
        assert_eq!(
            data_in(&disk, &[MODE_SENSE_6, 0x08, 0x3F, 0, 4, 0], 255).1,
            [23, 0, 0x10, 0]
        );
        assert_eq!(
            data_in(&disk, &[MODE_SENSE_6, 0x08, 0xC8, 0, 255, 0], 255).0,
            check(0x5, 0x39, 0x00)
        );
        assert_eq!(
            data_in(&disk, &[MODE_SENSE_6, 0, 0x0A, 0, 255, 0], 255).0,
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(
            data_in(&disk, &[MODE_SENSE_6, 0, 0x08, 1, 255, 0], 255).0,
            check(0x5, 0x24, 0x00)
        );
    }

    #[test]
    fn mode_sense_10_of_the_disk() {
        let disk = RamDisk::new(identity(), 0x1_0000_0000, 4096);
        let (outcome, data) = data_in(&disk, &[MODE_SENSE_10, 0, 0x3F, 0xFF, 0, 0, 0, 0, 255, 0], 255);
        assert_eq!(outcome, good(36));
        let header = [0, 34, 0, 0x10, 0, 0, 0, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0x00];
        assert_eq!(data, [&header[..], &caching_page(0x04)].concat());
        let (outcome, data) = data_in(&disk, &[MODE_SENSE_10, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0], 255);
        assert_eq!(outcome, good(28));
        assert_eq!(data[..8], [0, 26, 0, 0x10, 0, 0, 0, 0]);
    }

    #[test]
    fn mode_sense_of_the_cdrom() {
        let cd = cdrom();
        assert_eq!(data_in(&cd, &[MODE_SENSE_6, 0, 0x3F, 0, 255, 0], 255).1, [3, 0, 0, 0]);
        assert_eq!(
            data_in(&cd, &[MODE_SENSE_10, 0, 0x3F, 0, 0, 0, 0, 0, 255, 0], 255).1,
            [0, 6, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            data_in(&cd, &[MODE_SENSE_6, 0, 0x08, 0, 255, 0], 255).0,
            check(0x5, 0x24, 0x00)
        );
    }

    #[test]
    fn start_stop_and_prevent_allow() {
        let disk = disk();
        assert_eq!(data_in(&disk, &[START_STOP_UNIT, 0, 0, 0, 0x01, 0], 0).0, good(0));
        let prevent = [PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0];
        assert_eq!(data_in(&disk, &prevent, 0).0, check(0x5, 0x20, 0x00));

        let cd = cdrom();
        let tur = [TEST_UNIT_READY, 0, 0, 0, 0, 0];
        let eject = [START_STOP_UNIT, 0, 0, 0, 0x02, 0];
        let load = [START_STOP_UNIT, 0, 0, 0, 0x03, 0];
        assert_eq!(data_in(&cd, &prevent, 0).0, good(0));
        assert_eq!(data_in(&cd, &eject, 0).0, check(0x5, 0x53, 0x02));
        assert_eq!(data_in(&cd, &tur, 0).0, good(0));
        assert_eq!(
            data_in(&cd, &[PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0, 0], 0).0,
            good(0)
        );
        assert_eq!(data_in(&cd, &eject, 0).0, good(0));
        assert_eq!(data_in(&cd, &tur, 0).0, check(0x2, 0x3A, 0x00));
        assert_eq!(data_in(&cd, &load, 0).0, good(0));
        assert_eq!(data_in(&cd, &tur, 0).0, good(0));
        assert_eq!(data_in(&cd, &rw10(READ_10, 3, 1), CD_BLOCK).1, vec![4; CD_BLOCK]);
        // START without LOEJ neither ejects nor loads.
        assert_eq!(data_in(&cd, &[START_STOP_UNIT, 0, 0, 0, 0x00, 0], 0).0, good(0));
        assert_eq!(data_in(&cd, &tur, 0).0, good(0));
        cd.eject();
        assert_eq!(data_in(&cd, &tur, 0).0, check(0x2, 0x3A, 0x00));
        assert_eq!(data_in(&cd, &load, 0).0, good(0));
        assert_eq!(data_in(&cd, &tur, 0).0, good(0));
    }

    #[test]
    fn read_capacity_of_the_disk() {
        let disk = disk().with_physical_exponent(3).with_unmap(true);
        let rc10 = [READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (outcome, data) = data_in(&disk, &rc10, 8);
        assert_eq!(outcome, good(8));
        assert_eq!(data, [0, 0, 0x03, 0xFF, 0, 0, 0x02, 0x00]);
        assert_eq!(data_in(&disk, &rc10, 4).0, good(4));
        assert_eq!(
            data_in(&disk, &[READ_CAPACITY_10, 0, 0, 0, 0, 1, 0, 0, 0, 0], 8).0,
            check(0x5, 0x24, 0x00)
        );

        let (outcome, data) = data_in(&disk, &service_action_in(READ_CAPACITY_16, 0, 32), 64);
        assert_eq!(outcome, good(32));
        let mut expected = [0; 32];
        expected[..16].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0x03, 0xFF, 0, 0, 0x02, 0x00, 0, 0x03, 0xC0, 0]);
        assert_eq!(data, expected);
        assert_eq!(
            data_in(&disk, &service_action_in(READ_CAPACITY_16, 0, 12), 64).0,
            good(12)
        );
        assert_eq!(
            data_in(&disk, &service_action_in(0x11, 0, 32), 64).0,
            check(0x5, 0x24, 0x00)
        );

        let plain = RamDisk::new(identity(), 8, 512);
        let (_, data) = data_in(&plain, &service_action_in(READ_CAPACITY_16, 0, 32), 32);
        assert_eq!(data[8..16], [0, 0, 0x02, 0x00, 0, 0, 0, 0]);
    }

    #[test]
    fn read_capacity_of_a_huge_disk() {
        let disk = RamDisk::new(identity(), 0x2_0000_0000, 512);
        let rc10 = [READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(data_in(&disk, &rc10, 8).1, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x02, 0x00]);
        let (_, data) = data_in(&disk, &service_action_in(READ_CAPACITY_16, 0, 32), 32);
        assert_eq!(data[..8], [0, 0, 0, 0x01, 0xFF, 0xFF, 0xFF, 0xFF]);
        // The last block of a huge sparse disk is readable and writable.
        let last = 0x1_FFFF_FFFF;
        assert_eq!(data_out(&disk, &rw16(WRITE_16, last, 1), &[7; 512]), good(512));
        assert_eq!(read_blocks(&disk, last, 1, 512), vec![7; 512]);
        assert_eq!(data_in(&disk, &rw16(READ_16, last, 2), 1024).0.sense[2], 0x5);
    }

    #[test]
    fn write_then_read_in_every_cdb_size() {
        let disk = disk();
        let data = pattern(4, 512, 0x10);
        assert_eq!(data_out(&disk, &rw10(WRITE_10, 10, 4), &data), good(2048));
        assert_eq!(data_in(&disk, &rw10(READ_10, 10, 4), 2048).1, data);
        assert_eq!(data_in(&disk, &rw6(READ_6, 10, 4), 2048).1, data);
        assert_eq!(data_in(&disk, &rw12(READ_12, 10, 4), 2048).1, data);
        assert_eq!(data_in(&disk, &rw16(READ_16, 10, 4), 2048).1, data);

        let data = pattern(2, 512, 0x20);
        assert_eq!(data_out(&disk, &rw6(WRITE_6, 100, 2), &data), good(1024));
        assert_eq!(data_out(&disk, &rw12(WRITE_12, 200, 2), &data), good(1024));
        assert_eq!(data_out(&disk, &rw16(WRITE_16, 300, 2), &data), good(1024));
        for lba in [100, 200, 300] {
            assert_eq!(read_blocks(&disk, lba, 2, 512), data);
        }
        // Untouched blocks read as zeros.
        assert_eq!(read_blocks(&disk, 0, 1, 512), vec![0; 512]);
    }

    #[test]
    fn zero_transfer_lengths() {
        let disk = disk();
        let big = pattern(256, 512, 0x30);
        // READ(6)/WRITE(6): 0 means 256 blocks.
        assert_eq!(data_out(&disk, &rw6(WRITE_6, 0, 0), &big), good(256 * 512));
        assert_eq!(data_in(&disk, &rw6(READ_6, 0, 0), 256 * 512).1, big);
        // Elsewhere 0 means no data.
        assert_eq!(data_in(&disk, &rw10(READ_10, 0, 0), 512).0, good(0));
        assert_eq!(data_in(&disk, &rw16(READ_16, 1024, 0), 512).0, good(0));
        assert_eq!(data_out(&disk, &rw10(WRITE_10, 0, 0), &[]), good(0));
        assert_eq!(data_out(&disk, &rw12(WRITE_12, 0, 0), &[]), good(0));
    }

    #[test]
    fn out_of_range_lbas_report_the_starting_lba() {
        let disk = disk();
        assert_eq!(
            data_in(&disk, &rw10(READ_10, 1020, 5), 4096).0,
            check_info(0x5, 0x21, 0x00, 1020)
        );
        assert_eq!(
            data_in(&disk, &rw10(READ_10, 5000, 1), 4096).0,
            check_info(0x5, 0x21, 0x00, 5000)
        );
        assert_eq!(
            data_in(&disk, &rw6(READ_6, 1023, 2), 4096).0,
            check_info(0x5, 0x21, 0x00, 1023)
        );
        assert_eq!(
            data_in(&disk, &rw12(READ_12, 1025, 0), 4096).0,
            check_info(0x5, 0x21, 0x00, 1025)
        );
        assert_eq!(
            data_out(&disk, &rw10(WRITE_10, 1024, 1), &[1; 512]),
            check_info(0x5, 0x21, 0x00, 1024)
        );
        // An LBA that does not fit the four-byte INFORMATION field leaves VALID clear.
        assert_eq!(
            data_in(&disk, &rw16(READ_16, u64::MAX, 1), 512).0,
            check(0x5, 0x21, 0x00)
        );
        assert_eq!(
            data_in(&disk, &rw16(READ_16, 1, u32::MAX), 512).0,
            check_info(0x5, 0x21, 0x00, 1)
        );
    }

    #[test]
    fn truncated_data_out_changes_nothing() {
        let disk = disk();
        assert_eq!(
            data_out(&disk, &rw10(WRITE_10, 0, 2), &[9; 1023]),
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(data_out(&disk, &rw6(WRITE_6, 0, 0), &[9; 512]), check(0x5, 0x24, 0x00));
        assert_eq!(
            data_out(&disk, &rw16(WRITE_16, 0, u32::MAX >> 10), &[9; 512]),
            check_info(0x5, 0x21, 0x00, 0)
        );
        assert_eq!(read_blocks(&disk, 0, 2, 512), vec![0; 1024]);
        // Extra data-out bytes are not consumed.
        assert_eq!(data_out(&disk, &rw10(WRITE_10, 0, 1), &[9; 1000]), good(512));
    }

    #[test]
    fn short_and_long_data_in() {
        let disk = disk();
        let data = pattern(4, 512, 0x40);
        data_out(&disk, &rw10(WRITE_10, 0, 4), &data);
        let (outcome, got) = data_in(&disk, &rw10(READ_10, 0, 4), 1000);
        assert_eq!(outcome, good(1000));
        assert_eq!(got, data[..1000]);
        assert_eq!(data_in(&disk, &rw10(READ_10, 0, 4), 0).0, good(0));
        let (outcome, got) = data_in(&disk, &rw10(READ_10, 0, 2), 8192);
        assert_eq!(outcome, good(1024));
        assert_eq!(got, data[..1024]);
        let huge = RamDisk::new(identity(), u64::MAX, 4096);
        assert_eq!(data_in(&huge, &rw16(READ_16, 0, u32::MAX), 100).0, good(100));
    }

    #[test]
    fn protection_fields_are_rejected() {
        let mut cdb = rw10(READ_10, 0, 1);
        cdb[1] = 0x20;
        assert_eq!(data_in(&disk(), &cdb, 512).0, check(0x5, 0x24, 0x00));
        let mut cdb = rw16(WRITE_16, 0, 1);
        cdb[1] = 0x80;
        assert_eq!(data_out(&disk(), &cdb, &[1; 512]), check(0x5, 0x24, 0x00));
        // FUA and DPO are accepted.
        let mut cdb = rw10(WRITE_10, 0, 1);
        cdb[1] = 0x18;
        assert_eq!(data_out(&disk(), &cdb, &[1; 512]), good(512));
    }

    #[test]
    fn write_and_verify() {
        let disk = disk();
        let data = pattern(3, 512, 0x50);
        assert_eq!(data_out(&disk, &rw10(WRITE_AND_VERIFY_10, 7, 3), &data), good(1536));
        assert_eq!(data_out(&disk, &rw16(WRITE_AND_VERIFY_16, 70, 3), &data), good(1536));
        assert_eq!(read_blocks(&disk, 7, 3, 512), data);
        assert_eq!(read_blocks(&disk, 70, 3, 512), data);
        assert_eq!(
            data_out(&disk, &rw10(WRITE_AND_VERIFY_10, 1023, 3), &data),
            check_info(0x5, 0x21, 0, 1023)
        );
    }

    #[test]
    fn verify() {
        let disk = disk();
        let data = pattern(2, 512, 0x60);
        data_out(&disk, &rw10(WRITE_10, 5, 2), &data);
        let bytchk = |mut cdb: Vec<u8>, value: u8| {
            cdb[1] = value << 1;
            cdb
        };
        assert_eq!(data_out(&disk, &rw10(VERIFY_10, 5, 2), &[]), good(0));
        assert_eq!(data_out(&disk, &bytchk(rw10(VERIFY_10, 5, 2), 1), &data), good(1024));
        assert_eq!(data_out(&disk, &bytchk(rw16(VERIFY_16, 5, 2), 1), &data), good(1024));
        let mut wrong = data.clone();
        wrong[700] ^= 0xFF;
        wrong[900] ^= 0xFF;
        assert_eq!(
            data_out(&disk, &bytchk(rw10(VERIFY_10, 5, 2), 1), &wrong),
            check_info(0xE, 0x1D, 0x00, 700)
        );
        assert_eq!(
            data_out(&disk, &bytchk(rw10(VERIFY_10, 5, 2), 1), &data[..1000]),
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(
            data_out(&disk, &bytchk(rw10(VERIFY_10, 5, 2), 2), &data),
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(
            data_out(&disk, &bytchk(rw10(VERIFY_10, 2000, 1), 0), &[]),
            check_info(0x5, 0x21, 0x00, 2000)
        );
        // BYTCHK 11b: one block compared with every block of the range.
        data_out(&disk, &rw10(WRITE_10, 20, 3), &[0xAB; 1536]);
        data_out(&disk, &rw10(WRITE_10, 22, 1), &[&[0xAB; 10][..], &[0xAC; 502]].concat());
        assert_eq!(
            data_out(&disk, &bytchk(rw10(VERIFY_10, 20, 2), 3), &[0xAB; 512]),
            good(512)
        );
        assert_eq!(
            data_out(&disk, &bytchk(rw10(VERIFY_10, 20, 3), 3), &[0xAB; 512]),
            check_info(0xE, 0x1D, 0x00, 1024 + 10)
        );
    }

    fn compare_and_write_cdb(lba: u64, count: u8) -> Vec<u8> {
        let mut cdb = rw16(COMPARE_AND_WRITE, lba, 0);
        cdb[13] = count;
        cdb
    }

    #[test]
    fn compare_and_write() {
        let disk = disk();
        let old = pattern(2, 512, 0x70);
        let new = pattern(2, 512, 0x80);
        data_out(&disk, &rw10(WRITE_10, 40, 2), &old);
        let mut wrong = old.clone();
        wrong[513] ^= 1;
        let cdb = compare_and_write_cdb(40, 2);
        assert_eq!(
            data_out(&disk, &cdb, &[&wrong[..], &new].concat()),
            check_info(0xE, 0x1D, 0x00, 513)
        );
        assert_eq!(read_blocks(&disk, 40, 2, 512), old);
        assert_eq!(
            data_out(&disk, &cdb, &[&old[..], &new[..1000]].concat()),
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(data_out(&disk, &cdb, &[&old[..], &new].concat()), good(2048));
        assert_eq!(read_blocks(&disk, 40, 2, 512), new);
        assert_eq!(data_out(&disk, &compare_and_write_cdb(40, 0), &[]), good(0));
        assert_eq!(
            data_out(&disk, &compare_and_write_cdb(1023, 2), &[0; 2048]),
            check_info(0x5, 0x21, 0x00, 1023)
        );
    }

    #[test]
    fn synchronize_cache() {
        let disk = disk();
        assert_eq!(data_in(&disk, &rw10(SYNCHRONIZE_CACHE_10, 0, 0), 0).0, good(0));
        assert_eq!(data_in(&disk, &rw10(SYNCHRONIZE_CACHE_10, 1000, 24), 0).0, good(0));
        assert_eq!(data_in(&disk, &rw16(SYNCHRONIZE_CACHE_16, 1024, 0), 0).0, good(0));
        assert_eq!(
            data_in(&disk, &rw10(SYNCHRONIZE_CACHE_10, 1000, 25), 0).0,
            check_info(0x5, 0x21, 0x00, 1000)
        );
        assert_eq!(
            data_in(&disk, &rw16(SYNCHRONIZE_CACHE_16, 1025, 0), 0).0,
            check_info(0x5, 0x21, 0x00, 1025)
        );
    }

    #[test]
    fn write_same() {
        let disk = disk().with_unmap(true);
        let block = pattern(1, 512, 0x90);
        assert_eq!(data_out(&disk, &rw10(WRITE_SAME_10, 8, 3), &block), good(512));
        assert_eq!(
            read_blocks(&disk, 7, 5, 512),
            [&[0; 512][..], &block, &block, &block, &[0; 512]].concat()
        );
        // 0 blocks means to the end of the medium.
        assert_eq!(data_out(&disk, &rw16(WRITE_SAME_16, 1020, 0), &block), good(512));
        assert_eq!(read_blocks(&disk, 1020, 4, 512), block.repeat(4));
        // UNMAP with a zero block deallocates.
        let mut cdb = rw16(WRITE_SAME_16, 9, 1);
        cdb[1] = 0x08;
        assert_eq!(data_out(&disk, &cdb, &[0; 512]), good(512));
        assert_eq!(read_blocks(&disk, 8, 3, 512), [&block[..], &[0; 512], &block].concat());
        // NDOB writes zeros without data-out.
        cdb[1] = 0x09;
        cdb[2..10].copy_from_slice(&8u64.to_be_bytes());
        assert_eq!(data_out(&disk, &cdb, &[]), good(0));
        assert_eq!(read_blocks(&disk, 8, 1, 512), vec![0; 512]);
        assert_eq!(
            data_out(&disk, &rw10(WRITE_SAME_10, 0, 1), &block[..511]),
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(
            data_out(&disk, &rw10(WRITE_SAME_10, 1020, 5), &block),
            check_info(0x5, 0x21, 0x00, 1020)
        );
        let mut anchor = rw10(WRITE_SAME_10, 0, 1);
        anchor[1] = 0x18;
        assert_eq!(data_out(&disk, &anchor, &block), check(0x5, 0x24, 0x00));
        // Without thin provisioning the UNMAP bit is an invalid field.
        let mut cdb = rw10(WRITE_SAME_10, 0, 1);
        cdb[1] = 0x08;
        assert_eq!(data_out(&self::disk(), &cdb, &[0; 512]), check(0x5, 0x24, 0x00));
    }

    fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
        let mut list = vec![0; 8];
        list[..2].copy_from_slice(&(6 + 16 * ranges.len() as u16).to_be_bytes());
        list[2..4].copy_from_slice(&(16 * ranges.len() as u16).to_be_bytes());
        for &(lba, count) in ranges {
            list.extend_from_slice(&lba.to_be_bytes());
            list.extend_from_slice(&count.to_be_bytes());
            list.extend_from_slice(&[0; 4]);
        }
        list
    }

    fn unmap_cdb(length: u16) -> Vec<u8> {
        let mut cdb = rw10(UNMAP, 0, length);
        cdb[2..6].fill(0);
        cdb
    }

    #[test]
    fn unmap() {
        let disk = disk().with_unmap(true);
        data_out(&disk, &rw10(WRITE_10, 0, 16), &pattern(16, 512, 0xA0));
        let list = unmap_list(&[(2, 3), (10, 1)]);
        assert_eq!(data_out(&disk, &unmap_cdb(list.len() as u16), &list), good(40));
        let got = read_blocks(&disk, 0, 16, 512);
        for lba in 0..16 {
            let zero = got[lba * 512..(lba + 1) * 512].iter().all(|&b| b == 0);
            assert_eq!(zero, (2..5).contains(&lba) || lba == 10, "block {lba}");
        }
        // One range out of range: nothing is unmapped.
        let list = unmap_list(&[(0, 1), (1020, 5)]);
        assert_eq!(
            data_out(&disk, &unmap_cdb(list.len() as u16), &list),
            check_info(0x5, 0x21, 0x00, 1020)
        );
        assert_ne!(read_blocks(&disk, 0, 1, 512), vec![0; 512]);
        assert_eq!(data_out(&disk, &unmap_cdb(0), &[]), good(0));
        assert_eq!(data_out(&disk, &unmap_cdb(7), &list), check(0x5, 0x1A, 0x00));
        assert_eq!(data_out(&disk, &unmap_cdb(40), &list[..39]), check(0x5, 0x24, 0x00));
        let many = unmap_list(&[(0, 1); 257]);
        assert_eq!(
            data_out(&disk, &unmap_cdb(many.len() as u16), &many),
            check(0x5, 0x26, 0x00)
        );
        let mut anchor = unmap_cdb(0);
        anchor[1] = 0x01;
        assert_eq!(data_out(&disk, &anchor, &[]), check(0x5, 0x24, 0x00));
    }

    #[test]
    fn get_lba_status() {
        let disk = disk().with_unmap(true);
        data_out(&disk, &rw10(WRITE_10, 100, 4), &pattern(4, 512, 0xB0));
        data_out(&disk, &rw10(WRITE_10, 101, 1), &[0; 512]);
        let status = |lba: u64| data_in(&disk, &service_action_in(GET_LBA_STATUS, lba, 24), 24);
        let descriptor = |lba: u64, run: u32, state: u8| {
            let mut data = vec![0, 0, 0, 20, 0, 0, 0, 0];
            data.extend_from_slice(&lba.to_be_bytes());
            data.extend_from_slice(&run.to_be_bytes());
            data.extend_from_slice(&[state, 0, 0, 0]);
            data
        };
        assert_eq!(status(0), (good(24), descriptor(0, 100, 1)));
        assert_eq!(status(100).1, descriptor(100, 1, 0));
        assert_eq!(status(101).1, descriptor(101, 1, 1));
        assert_eq!(status(102).1, descriptor(102, 2, 0));
        assert_eq!(status(104).1, descriptor(104, 920, 1));
        assert_eq!(status(1023).1, descriptor(1023, 1, 1));
        assert_eq!(status(1024).0, check_info(0x5, 0x21, 0x00, 1024));
        assert_eq!(
            data_in(&disk, &service_action_in(GET_LBA_STATUS, 0, 16), 24).0,
            good(16)
        );
        // A fully provisioned disk has every block mapped.
        let plain = self::disk();
        assert_eq!(
            data_in(&plain, &service_action_in(GET_LBA_STATUS, 24, 24), 24).1,
            descriptor(24, 1000, 0)
        );
    }

    #[test]
    fn resize_raises_a_unit_attention_once() {
        let disk = disk();
        let tur = [TEST_UNIT_READY, 0, 0, 0, 0, 0];
        data_out(&disk, &rw10(WRITE_10, 1023, 1), &[5; 512]);
        disk.resize(2048);
        assert_eq!((disk.blocks(), disk.block_size()), (2048, 512));
        // INQUIRY, REPORT LUNS and REQUEST SENSE neither report nor clear it.
        assert_eq!(data_in(&disk, &inquiry_cdb(false, 0, 96), 96).0, good(96));
        assert_eq!(
            data_in(&disk, &[REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16).0,
            good(16)
        );
        assert_eq!(
            data_in(&disk, &[REQUEST_SENSE, 0, 0, 0, 18, 0], 18).1,
            NO_SENSE.to_bytes()
        );
        assert_eq!(data_in(&disk, &rw10(READ_10, 0, 1), 512).0, check(0x6, 0x2A, 0x09));
        assert_eq!(data_in(&disk, &tur, 0).0, good(0));
        assert_eq!(read_blocks(&disk, 2047, 1, 512), vec![0; 512]);
        assert_eq!(read_blocks(&disk, 1023, 1, 512), vec![5; 512]);
        // Shrinking discards the blocks beyond the new end; growing back shows zeros.
        disk.resize(1000);
        assert_eq!(data_in(&disk, &[0xC0], 0).0, check(0x6, 0x2A, 0x09));
        assert_eq!(
            data_in(&disk, &rw10(READ_10, 1000, 1), 512).0,
            check_info(0x5, 0x21, 0x00, 1000)
        );
        disk.resize(1024);
        assert_eq!(data_in(&disk, &tur, 0).0, check(0x6, 0x2A, 0x09));
        assert_eq!(read_blocks(&disk, 1023, 1, 512), vec![0; 512]);
    }

    #[test]
    fn medium_change_raises_a_unit_attention_once() {
        let cd = Cdrom::new(identity(), None);
        let tur = [TEST_UNIT_READY, 0, 0, 0, 0, 0];
        assert_eq!(data_in(&cd, &tur, 0).0, check(0x2, 0x3A, 0x00));
        cd.insert(cd_image(3));
        assert_eq!(data_in(&cd, &inquiry_cdb(false, 0, 96), 96).0, good(96));
        assert_eq!(data_in(&cd, &tur, 0).0, check(0x6, 0x28, 0x00));
        assert_eq!(data_in(&cd, &tur, 0).0, good(0));
        assert_eq!(data_in(&cd, &rw10(READ_10, 2, 1), CD_BLOCK).1, vec![3; CD_BLOCK]);
    }

    #[test]
    fn cdrom_reads() {
        let cd = cdrom();
        let rc10 = [READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(data_in(&cd, &rc10, 8).1, [0, 0, 0, 15, 0, 0, 0x08, 0x00]);
        let (outcome, data) = data_in(&cd, &rw10(READ_10, 1, 2), 2 * CD_BLOCK);
        assert_eq!(outcome, good(2 * CD_BLOCK));
        assert_eq!(data, [vec![2; CD_BLOCK], vec![3; CD_BLOCK]].concat());
        assert_eq!(data_in(&cd, &rw12(READ_12, 15, 1), CD_BLOCK).1, vec![16; CD_BLOCK]);
        assert_eq!(data_in(&cd, &rw12(READ_12, 15, 1), 100).0, good(100));
        assert_eq!(
            data_in(&cd, &rw10(READ_10, 15, 2), 2 * CD_BLOCK).0,
            check_info(0x5, 0x21, 0x00, 15)
        );
        // An image that is not whole blocks is padded with zeros.
        let odd = Cdrom::new(identity(), Some(vec![9; 3000]));
        assert_eq!(data_in(&odd, &rc10, 8).1, [0, 0, 0, 1, 0, 0, 0x08, 0x00]);
        assert_eq!(
            data_in(&odd, &rw10(READ_10, 1, 1), CD_BLOCK).1,
            [vec![9; 952], vec![0; 1096]].concat()
        );
    }

    #[test]
    fn cdrom_without_medium_is_not_ready() {
        let cd = Cdrom::new(identity(), None);
        let not_ready = check(0x2, 0x3A, 0x00);
        assert_eq!(
            data_in(&cd, &[READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8).0,
            not_ready
        );
        assert_eq!(data_in(&cd, &rw10(READ_10, 0, 1), CD_BLOCK).0, not_ready);
        assert_eq!(data_in(&cd, &rw12(READ_12, 0, 1), CD_BLOCK).0, not_ready);
        assert_eq!(data_in(&cd, &[READ_TOC, 0, 0, 0, 0, 0, 0, 0, 100, 0], 100).0, not_ready);
        assert_eq!(data_out(&cd, &rw10(WRITE_10, 0, 1), &[0; CD_BLOCK]), not_ready);
        assert_eq!(data_in(&cd, &inquiry_cdb(false, 0, 96), 96).0, good(96));
    }

    #[test]
    fn cdrom_writes_are_write_protected() {
        let cd = cdrom();
        for cdb in [
            rw6(WRITE_6, 0, 1),
            rw10(WRITE_10, 0, 1),
            rw12(WRITE_12, 0, 1),
            rw16(WRITE_16, 0, 1),
        ] {
            assert_eq!(data_out(&cd, &cdb, &[0; CD_BLOCK]), check(0x7, 0x27, 0x00));
        }
        assert_eq!(
            data_out(&cd, &rw10(WRITE_AND_VERIFY_10, 0, 1), &[0; CD_BLOCK]),
            check(0x7, 0x27, 0x00)
        );
        assert_eq!(data_in(&cd, &rw10(READ_10, 0, 1), CD_BLOCK).1, vec![1; CD_BLOCK]);
    }

    #[test]
    fn cdrom_get_configuration() {
        let cdb = [GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 64, 0];
        assert_eq!(
            data_in(&cdrom(), &cdb, 64),
            (good(8), vec![0, 0, 0, 4, 0, 0, 0x00, 0x08])
        );
        let empty = Cdrom::new(identity(), None);
        assert_eq!(data_in(&empty, &cdb, 64), (good(8), vec![0, 0, 0, 4, 0, 0, 0x00, 0x00]));
        assert_eq!(
            data_in(&empty, &[GET_CONFIGURATION, 3, 0, 0, 0, 0, 0, 0, 64, 0], 64).0,
            check(0x5, 0x24, 0x00)
        );
    }

    #[test]
    fn cdrom_read_toc() {
        let cd = cdrom();
        let toc = |msf: u8, track: u8, allocation: u8| [READ_TOC, msf, 0, 0, 0, 0, track, 0, allocation, 0];
        let (outcome, data) = data_in(&cd, &toc(0, 0, 100), 100);
        assert_eq!(outcome, good(20));
        assert_eq!(
            data,
            [0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x14, 0xAA, 0, 0, 0, 0, 16]
        );
        let (_, data) = data_in(&cd, &toc(0x02, 1, 100), 100);
        assert_eq!(
            data,
            [0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 2, 0, 0, 0x14, 0xAA, 0, 0, 0, 2, 16]
        );
        assert_eq!(
            data_in(&cd, &toc(0, 0xAA, 100), 100).1,
            [0, 10, 1, 1, 0, 0x14, 0xAA, 0, 0, 0, 0, 16]
        );
        assert_eq!(data_in(&cd, &toc(0, 0, 4), 100).1, [0, 18, 1, 1]);
        assert_eq!(data_in(&cd, &toc(0, 2, 100), 100).0, check(0x5, 0x24, 0x00));
        assert_eq!(
            data_in(&cd, &[READ_TOC, 0, 1, 0, 0, 0, 0, 0, 100, 0], 100).0,
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(
            data_in(&cd, &[READ_TOC, 0, 0, 0, 0, 0, 0, 0, 100, 0x40], 100).0,
            check(0x5, 0x24, 0x00)
        );
        assert_eq!(msf_address(4500 * 3 + 75 * 7 + 11 - 150), [0, 3, 7, 11]);
    }

    /// A xorshift64 generator: deterministic pseudo-random numbers without crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        /// A byte that is zero half the time, so random CDBs often address real blocks.
        fn byte(&mut self) -> u8 {
            let value = self.next();
            if value & 1 == 0 { 0 } else { (value >> 8) as u8 }
        }
    }

    #[test]
    fn random_commands_never_panic() {
        const OPCODES: [u8; 31] = [
            TEST_UNIT_READY,
            REQUEST_SENSE,
            READ_6,
            WRITE_6,
            INQUIRY,
            MODE_SENSE_6,
            START_STOP_UNIT,
            PREVENT_ALLOW_MEDIUM_REMOVAL,
            READ_CAPACITY_10,
            READ_10,
            WRITE_10,
            WRITE_AND_VERIFY_10,
            VERIFY_10,
            SYNCHRONIZE_CACHE_10,
            WRITE_SAME_10,
            UNMAP,
            READ_TOC,
            GET_CONFIGURATION,
            MODE_SENSE_10,
            READ_16,
            COMPARE_AND_WRITE,
            WRITE_16,
            WRITE_AND_VERIFY_16,
            VERIFY_16,
            SYNCHRONIZE_CACHE_16,
            WRITE_SAME_16,
            SERVICE_ACTION_IN_16,
            REPORT_LUNS,
            READ_12,
            WRITE_12,
            0xFF,
        ];
        const DATA_OUT: [u8; 12] = [
            WRITE_6,
            WRITE_10,
            WRITE_12,
            WRITE_16,
            WRITE_AND_VERIFY_10,
            WRITE_AND_VERIFY_16,
            VERIFY_10,
            VERIFY_16,
            COMPARE_AND_WRITE,
            WRITE_SAME_10,
            WRITE_SAME_16,
            UNMAP,
        ];
        let devices: [&dyn ScsiDevice; 4] = [
            &RamDisk::new(identity(), 64, 512).with_unmap(true),
            &RamDisk::new(identity(), 8, 4096).with_physical_exponent(0xFF),
            &Cdrom::new(identity(), Some(cd_image(8))),
            &Cdrom::new(identity(), None),
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5000 {
            let dev = devices[rng.below(4)];
            let mut cdb: Vec<u8> = (0..rng.below(21)).map(|_| rng.byte()).collect();
            if let Some(first) = cdb.first_mut().filter(|_| rng.below(4) != 0) {
                *first = OPCODES[rng.below(OPCODES.len() as u64)];
            }
            let out: Vec<u8> = (0..rng.below(9000)).map(|_| rng.byte()).collect();
            let mut buf = vec![0; rng.below(9000)];
            let room = buf.len();
            let outcome = dev.execute(Command {
                cdb: &cdb,
                data_out: &out,
                data_in: &mut buf,
            });
            match outcome.status {
                GOOD => assert!(outcome.sense.is_empty()),
                CHECK_CONDITION => assert_eq!((outcome.sense.len(), outcome.transferred), (18, 0)),
                status => panic!("unexpected status {status:#x}"),
            }
            let writes = cdb.first().is_some_and(|opcode| DATA_OUT.contains(opcode));
            let limit = if writes { out.len() } else { room };
            assert!(outcome.transferred <= limit, "{cdb:02x?}: {outcome:?}");
        }
    }
}

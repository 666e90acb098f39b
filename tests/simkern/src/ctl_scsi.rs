//! CTL's own handling of SCSI commands for a LUN (sys/cam/ctl/ctl.c): what
//! it answers itself from the backend's `ctl_be_lun` fields and options
//! (INQUIRY and its VPD pages, READ CAPACITY, MODE SENSE, REPORT LUNS, TEST
//! UNIT READY, REQUEST SENSE), what it checks before a backend sees a
//! command, and which backend entry point gets the rest.
//!
//! Modelled on FreeBSD 15 sources (facts re-expressed, no code copied):
//! `sys/cam/ctl/ctl.c` of bsdjhb/freebsd at 0003f93699c1 (precheck, LUN
//! check, command functions, VPD pages, mode page templates, ctl_add_lun),
//! `sys/cam/ctl/ctl_error.c` at 67b761ab7609 (sense builders, ctl_build_ua),
//! glebius/FreeBSD at f592f2b7fe34 for `ctl_cmd_table.c` (flags and usage
//! masks) and `ctl_private.h` (page_index_template, command flags), the
//! third-party copy page of `ctl_tpc.c` and the layouts of `scsi_all.h`.
//!
//! The model is a single-node CTL (no HA peer) behind one iSCSI port.
//! Commands CTL supports but this model does not (MODE SELECT, LOG SENSE,
//! PERSISTENT RESERVE, READ TOC, GET CONFIGURATION, REPORT TARGET PORT
//! GROUPS and the other MAINTENANCE IN, READ/WRITE BUFFER, EXTENDED COPY,
//! RESERVE/RELEASE, FORMAT UNIT, READ DEFECT DATA, WRITE ATOMIC, ...) are
//! answered INVALID COMMAND OPERATION CODE.

use crate::devices::{CHECK_CONDITION, GOOD, Outcome};

/// Peripheral device types CTL serves.
pub const T_DIRECT: u8 = 0x00;
/// Processor device.
pub const T_PROCESSOR: u8 = 0x03;
/// CD/DVD device.
pub const T_CDROM: u8 = 0x05;

/// `ctl_backend_lun_flags` (ctl_ioctl.h).
pub const LUN_FLAG_ID_REQ: u32 = 0x01;
/// The LUN starts stopped.
pub const LUN_FLAG_STOPPED: u32 = 0x02;
/// The LUN starts without a medium.
pub const LUN_FLAG_NO_MEDIA: u32 = 0x04;
/// HA primary.
pub const LUN_FLAG_PRIMARY: u32 = 0x08;
/// `serial_num` is valid.
pub const LUN_FLAG_SERIAL_NUM: u32 = 0x10;
/// `device_id` is valid.
pub const LUN_FLAG_DEVID: u32 = 0x20;
/// The device type came from the request.
pub const LUN_FLAG_DEV_TYPE: u32 = 0x40;
/// The LUN can unmap.
pub const LUN_FLAG_UNMAP: u32 = 0x80;
/// The tray is open.
pub const LUN_FLAG_EJECTED: u32 = 0x100;
/// Writes are refused.
pub const LUN_FLAG_READONLY: u32 = 0x200;

/// The fields of struct ctl_be_lun that CTL reads, and the LUN's string
/// options (its nvlist).
///
/// `Default` is implemented by hand below: the standard library derives it
/// only for arrays of at most 32 elements, and `device_id` has 64.
#[derive(Clone, Debug)]
pub struct BackendLun {
    /// Peripheral device type.
    pub lun_type: u8,
    /// `LUN_FLAG_*`.
    pub flags: u32,
    /// The last LBA.
    pub maxlba: u64,
    /// Bytes per block.
    pub blocksize: u32,
    /// Logical blocks per physical block exponent.
    pub pblockexp: u16,
    /// Lowest aligned LBA.
    pub pblockoff: u16,
    /// Logical blocks per unmap block exponent.
    pub ublockexp: u16,
    /// Lowest LBA aligned to an unmap block.
    pub ublockoff: u16,
    /// Blocks writable atomically.
    pub atomicblock: u32,
    /// Optimal transfer length in blocks.
    pub opttxferlen: u32,
    /// VPD 0x80 serial number, space padded.
    pub serial_num: [u8; 16],
    /// T10 device id, space padded.
    pub device_id: [u8; 64],
    /// String options, in order.
    pub options: Vec<(String, String)>,
}

/// The frontend port the initiator comes through (one iSCSI target in the
/// simulator).
#[derive(Clone, Debug)]
pub struct Port {
    /// CTL's port number.
    pub targ_port: u32,
    /// The iSCSI target name.
    pub port_name: String,
    /// The initiator's name.
    pub initiator_name: String,
}

/// What CTL does with one SCSI command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// CTL answered (data copied into `data_in`; `Outcome.transferred`
    /// bytes); after a data move in ([`resume`]) CTL frees its buffer
    /// first.
    Done(Outcome),
    /// data_submit, with the ctl_lba_len_flags CTL put in the I/O's private
    /// area and the total transfer (`kern_total_len`) in bytes.
    DataSubmit {
        /// First LBA.
        lba: u64,
        /// Blocks.
        len: u32,
        /// `CTL_LLF_*`.
        flags: u32,
        /// Bytes to move.
        total_len: u32,
        /// COMPARE AND WRITE: `CTL_FLAG_IO_CONT` with `ctl_cnw_cont`, which
        /// turns the compare into the write once the backend completes it.
        compare_and_write: bool,
    },
    /// config_read (GET LBA STATUS): CTL allocates `data` (its answer for a
    /// backend that cannot tell, `CTL_FLAG_ALLOCATED`), `data_len` bytes of
    /// which go to the initiator (`kern_data_len` and `kern_total_len`);
    /// ARGS has the LBA and `len`, the buffer's size.  The status is already
    /// GOOD (ctl_set_success) when the backend sees it.
    ConfigRead {
        /// The LBA asked about.
        lba: u64,
        /// `lbalen->len`: the buffer's size in bytes.
        len: u32,
        /// The buffer as CTL fills it.
        data: Vec<u8>,
        /// Bytes for the initiator: min(buffer, allocation length).
        data_len: u32,
    },
    /// config_write: SYNCHRONIZE CACHE and WRITE SAME with the
    /// ctl_lba_len_flags CTL filled (flags: the raw CDB byte 1, as ctl.c
    /// does; WRITE SAME with NUMBER OF BLOCKS 0 made explicit), START STOP
    /// UNIT and PREVENT ALLOW (`lba_len` None).
    ConfigWrite {
        /// (lba, len, flags) for SYNCHRONIZE CACHE and WRITE SAME.
        lba_len: Option<(u64, u32, u32)>,
        /// WRITE SAME to the last LBA beyond 2^32-1 blocks: `CTL_FLAG_IO_CONT`
        /// with `ctl_write_same_cont`, which issues the next 2^31 blocks.
        write_same_cont: bool,
    },
    /// CTL first moves `len` bytes of parameter data in from the initiator
    /// (WRITE SAME's block, UNMAP's list) into a buffer it allocates
    /// (`CTL_FLAG_ALLOCATED`, `be_move_done = ctl_config_move_done`), which
    /// then runs the command again: [`resume`].
    DataOut {
        /// Bytes to move in.
        len: u32,
    },
    /// UNMAP's validated list: config_write with `ctl_ptr_len_flags`
    /// pointing `offset` bytes into CTL's buffer (the first descriptor),
    /// `len` bytes of descriptors and the CDB's byte 1 as flags.
    Unmap {
        /// Offset of the first descriptor in the parameter data.
        offset: u32,
        /// Bytes of descriptors, trailing empty ones dropped.
        len: u32,
        /// CDB byte 1 (ANCHOR).
        flags: u32,
    },
    /// CTL completes the command after moving data in without freeing its
    /// buffer: ctl.c's `ctl_done` paths of ctl_write_same and ctl_unmap
    /// that skip the `free` (FreeBSD 15 leaks the buffer there).
    DoneKeepingData(Outcome),
}

/// The data direction of a command (the `CTL_FLAG_DATA_*` bits of its
/// ctl_cmd_table.c entry, which ctl_scsiio_precheck copies into the I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `CTL_FLAG_DATA_IN`: to the initiator.
    In,
    /// `CTL_FLAG_DATA_OUT`: from the initiator.
    Out,
    /// `CTL_FLAG_DATA_NONE`.
    None,
}

impl Default for BackendLun {
    fn default() -> Self {
        BackendLun {
            lun_type: T_DIRECT,
            flags: 0,
            maxlba: 0,
            blocksize: 0,
            pblockexp: 0,
            pblockoff: 0,
            ublockexp: 0,
            ublockoff: 0,
            atomicblock: 0,
            opttxferlen: 0,
            serial_num: [0; 16],
            device_id: [0; 64],
            options: Vec::new(),
        }
    }
}

impl BackendLun {
    /// The value of string option `name` (`dnvlist_get_string`); the last
    /// one wins, as a unique-name nvlist replaces earlier values.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `errno` EINVAL, what ctl_add_lun returns for a device type CTL does not
/// serve.
pub const EINVAL: i32 = 22;

// Sense keys (scsi_all.h).
const KEY_NOT_READY: u8 = 0x02;
const KEY_HARDWARE_ERROR: u8 = 0x04;
const KEY_ILLEGAL_REQUEST: u8 = 0x05;
const KEY_UNIT_ATTENTION: u8 = 0x06;
const KEY_DATA_PROTECT: u8 = 0x07;
const KEY_ABORTED_COMMAND: u8 = 0x0B;

// Fixed-format sense bits (scsi_all.h): VALID in byte 0, SKSV, C/D and BPV
// in the first sense-key-specific byte.
const SSD_CURRENT_ERROR: u8 = 0x70;
const SSD_ERRCODE_VALID: u8 = 0x80;
const SSD_SCS_VALID: u8 = 0x80;
const SSD_FIELDPTR_CMD: u8 = 0x40;
const SSD_BITPTR_VALID: u8 = 0x08;
/// Fixed-format sense data as the simulator's devices build it.
const FIXED_SENSE_LEN: usize = 18;

/// One CHECK CONDITION as ctl_error.c's `ctl_set_*` helpers build it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sense {
    pub(crate) key: u8,
    pub(crate) asc: u8,
    pub(crate) ascq: u8,
    /// INFORMATION (VALID is set only when it fits the 4-byte fixed field).
    pub(crate) info: Option<u64>,
    /// The three sense-key-specific bytes (15-17).
    pub(crate) sks: Option<[u8; 3]>,
}

impl Sense {
    /// Sense without INFORMATION or sense-key-specific bytes.
    pub(crate) const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            info: None,
            sks: None,
        }
    }

    /// ctl_set_invalid_field: INVALID FIELD IN CDB (24/00) or IN PARAMETER
    /// LIST (26/00) with a field pointer and an optional bit pointer.
    pub(crate) fn invalid_field(command: bool, field: u16, bit: Option<u8>) -> Sense {
        let mut sks0 = SSD_SCS_VALID;
        if command {
            sks0 |= SSD_FIELDPTR_CMD;
        }
        if let Some(bit) = bit {
            sks0 |= SSD_BITPTR_VALID | (bit & 0x07);
        }
        let [hi, lo] = field.to_be_bytes();
        let asc = if command { 0x24 } else { 0x26 };
        Sense {
            sks: Some([sks0, hi, lo]),
            ..Sense::new(KEY_ILLEGAL_REQUEST, asc, 0x00)
        }
    }

    /// ctl_set_invalid_opcode: 20/00 pointing at the operation code.
    pub(crate) fn invalid_opcode() -> Sense {
        Sense {
            sks: Some([SSD_SCS_VALID | SSD_FIELDPTR_CMD, 0, 0]),
            ..Sense::new(KEY_ILLEGAL_REQUEST, 0x20, 0x00)
        }
    }

    /// ctl_set_lba_out_of_range: 21/00, INFORMATION only for a non-zero LBA.
    pub(crate) fn lba_out_of_range(lba: u64) -> Sense {
        Sense {
            info: (lba != 0).then_some(lba),
            ..Sense::new(KEY_ILLEGAL_REQUEST, 0x21, 0x00)
        }
    }

    /// ctl_set_internal_failure: INTERNAL TARGET FAILURE (44/00), with the
    /// retry count as sense-key-specific bytes when `sks_valid`.
    pub(crate) fn internal_failure(sks_valid: bool, retry_count: u16) -> Sense {
        let [hi, lo] = retry_count.to_be_bytes();
        Sense {
            sks: sks_valid.then_some([SSD_SCS_VALID, hi, lo]),
            ..Sense::new(KEY_HARDWARE_ERROR, 0x44, 0x00)
        }
    }

    /// ctl_set_invalid_field_ciu: INVALID FIELD IN COMMAND INFORMATION UNIT
    /// (0E/03), which ctl_error.c reports as ABORTED COMMAND.
    pub(crate) const fn invalid_field_ciu() -> Sense {
        Sense::new(KEY_ABORTED_COMMAND, 0x0E, 0x03)
    }

    /// The 18 bytes of fixed-format sense data.
    pub(crate) fn fixed(&self) -> Vec<u8> {
        let mut sense = vec![0u8; FIXED_SENSE_LEN];
        sense[0] = SSD_CURRENT_ERROR;
        sense[2] = self.key & 0x0F;
        sense[7] = (FIXED_SENSE_LEN - 8) as u8;
        sense[12] = self.asc;
        sense[13] = self.ascq;
        if let Some(info) = self.info.and_then(|info| u32::try_from(info).ok()) {
            sense[0] |= SSD_ERRCODE_VALID;
            sense[3..7].copy_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = self.sks {
            sense[15..18].copy_from_slice(&sks);
        }
        sense
    }

    /// CHECK CONDITION with this sense, nothing transferred.
    fn outcome(&self) -> Disposition {
        Disposition::Done(self.fixed_outcome())
    }

    /// The initiator's view of this sense: CHECK CONDITION, nothing moved.
    pub(crate) fn fixed_outcome(&self) -> Outcome {
        Outcome {
            status: CHECK_CONDITION,
            sense: self.fixed(),
            transferred: 0,
        }
    }
}

const UNSUPPORTED_LUN: Sense = Sense::new(KEY_ILLEGAL_REQUEST, 0x25, 0x00);
const HW_WRITE_PROTECTED: Sense = Sense::new(KEY_DATA_PROTECT, 0x27, 0x01);
const LUN_STOPPED: Sense = Sense::new(KEY_NOT_READY, 0x04, 0x02);
const LUN_INT_REQD: Sense = Sense::new(KEY_NOT_READY, 0x04, 0x03);
const LUN_UNAVAIL: Sense = Sense::new(KEY_NOT_READY, 0x04, 0x0C);
const LUN_NO_MEDIA: Sense = Sense::new(KEY_NOT_READY, 0x3A, 0x01);
const LUN_EJECTED: Sense = Sense::new(KEY_NOT_READY, 0x3A, 0x02);

/// GOOD status with `transferred` bytes moved.
fn good(transferred: usize) -> Disposition {
    Disposition::Done(Outcome {
        status: GOOD,
        sense: Vec::new(),
        transferred,
    })
}

/// Moves what CTL built to the initiator: min(allocation length, buffer,
/// data) bytes, as ctl_datamove with `kern_data_len = min(len, alloc_len)`.
fn send_data(data: &[u8], alloc_len: usize, data_in: &mut [u8]) -> Disposition {
    let len = data.len().min(alloc_len).min(data_in.len());
    data_in[..len].copy_from_slice(&data[..len]);
    good(len)
}

// Unit attention types (ctl.h `ctl_ua_type`), a bit each; the lowest set
// bit is reported first.
const UA_POWERON: u32 = 0x0001;
const UA_TARG_RESET: u32 = 0x0004;
const UA_I_T_NEXUS_LOSS: u32 = 0x0008;
const UA_LUN_RESET: u32 = 0x0010;
const UA_LUN_CHANGE: u32 = 0x0020;
const UA_CAPACITY_CHANGE: u32 = 0x4000;
const UA_MEDIUM_CHANGE: u32 = 0x1_0000;

/// ctl_ua_to_ascq for the UAs the model raises: (ASC, ASCQ, UAs cleared by
/// reporting it).
fn ua_to_ascq(ua: u32) -> (u8, u8, u32) {
    match ua {
        // POWER ON OCCURRED; it clears every other pending UA.
        UA_POWERON => (0x29, 0x01, u32::MAX),
        // BUS DEVICE RESET FUNCTION OCCURRED; it clears every other pending
        // UA.
        UA_TARG_RESET => (0x29, 0x03, u32::MAX),
        // I_T NEXUS LOSS OCCURRED; it clears every other pending UA.
        UA_I_T_NEXUS_LOSS => (0x29, 0x07, u32::MAX),
        // POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (no code of its
        // own for a LUN reset).
        UA_LUN_RESET => (0x29, 0x00, ua),
        // REPORTED LUNS DATA HAS CHANGED
        UA_LUN_CHANGE => (0x3F, 0x0E, ua),
        // CAPACITY DATA HAS CHANGED
        UA_CAPACITY_CHANGE => (0x2A, 0x09, ua),
        // NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED
        _ => (0x28, 0x00, ua),
    }
}

// Command table flags (ctl_private.h `ctl_cmd_flags`).
const F_NO_SENSE: u32 = 0x0010;
const F_OK_ON_PROC: u32 = 0x0100;
const F_OK_ON_DIRECT: u32 = 0x0200;
const F_OK_ON_CDROM: u32 = 0x0400;
const F_OK_ON_BOTH: u32 = F_OK_ON_PROC | F_OK_ON_DIRECT | F_OK_ON_CDROM;
const F_OK_ON_NO_LUN: u32 = 0x0800;
const F_OK_ON_NO_MEDIA: u32 = 0x1000;
const F_OK_ON_UNAVAIL: u32 = 0x4000;
/// CTL_LUN_PAT_WRITE of the entry's error pattern, kept among the flags
/// here: such commands are refused on a read-only LUN.
const F_PAT_WRITE: u32 = 0x100_0000;

/// The ctl.c function that executes a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    TestUnitReady,
    RequestSense,
    ReadWrite,
    Inquiry,
    ModeSense,
    StartStop,
    PreventAllow,
    ReadCapacity,
    ReadCapacity16,
    GetLbaStatus,
    Verify,
    SyncCache,
    WriteSame,
    Unmap,
    CompareAndWrite,
    ReportLuns,
}

/// One `ctl_cmd_entry` of ctl_cmd_table.c: the executing function, its
/// flags and the usage mask of CDB bytes 1..length.
#[derive(Clone, Copy, Debug)]
struct Command {
    op: Op,
    flags: u32,
    usage: &'static [u8],
    dir: Direction,
}

impl Command {
    /// The CDB length (`ctl_cmd_entry.length`).
    fn length(&self) -> usize {
        self.usage.len() + 1
    }
}

/// ctl_get_cmd_entry for the opcodes modelled here; every other opcode is
/// reported as INVALID COMMAND OPERATION CODE.
fn command_entry(opcode: u8, byte1: u8) -> Result<Command, Sense> {
    const ANY: u32 = F_OK_ON_BOTH | F_OK_ON_NO_MEDIA;
    const DISK_READ: u32 = F_OK_ON_DIRECT | F_OK_ON_CDROM;
    const DISK_WRITE: u32 = F_OK_ON_DIRECT | F_PAT_WRITE;
    const NO_LUN: u32 = F_OK_ON_NO_LUN | F_OK_ON_BOTH | F_NO_SENSE | F_OK_ON_NO_MEDIA | F_OK_ON_UNAVAIL;
    let dir = table_direction(opcode);
    let entry = |op, flags, usage: &'static [u8]| Ok(Command { op, flags, usage, dir });
    match opcode {
        0x00 => entry(Op::TestUnitReady, F_OK_ON_BOTH, &[0, 0, 0, 0, 0x07]),
        0x03 => entry(Op::RequestSense, NO_LUN, &[0x01, 0, 0, 0xff, 0x07]),
        0x08 => entry(Op::ReadWrite, DISK_READ, &[0x1f, 0xff, 0xff, 0xff, 0x07]),
        0x0A => entry(Op::ReadWrite, DISK_WRITE, &[0x1f, 0xff, 0xff, 0xff, 0x07]),
        0x12 => entry(Op::Inquiry, NO_LUN, &[0xe1, 0xff, 0xff, 0xff, 0x07]),
        0x1A => entry(Op::ModeSense, ANY, &[0x08, 0xff, 0xff, 0xff, 0x07]),
        0x1B => entry(
            Op::StartStop,
            DISK_READ | F_OK_ON_NO_MEDIA,
            &[0x01, 0, 0x0f, 0xf7, 0x07],
        ),
        0x1E => entry(
            Op::PreventAllow,
            DISK_READ | F_OK_ON_NO_MEDIA,
            &[0x01, 0, 0, 0x03, 0x07],
        ),
        0x25 => entry(Op::ReadCapacity, DISK_READ, &[0, 0, 0, 0, 0, 0, 0, 0, 0x07]),
        0x28 => entry(
            Op::ReadWrite,
            DISK_READ,
            &[0x1a, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07],
        ),
        0x2A => entry(
            Op::ReadWrite,
            DISK_WRITE,
            &[0x1a, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07],
        ),
        0x2E => entry(
            Op::ReadWrite,
            DISK_WRITE,
            &[0x12, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07],
        ),
        0x2F => entry(
            Op::Verify,
            F_OK_ON_DIRECT,
            &[0x16, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07],
        ),
        0x35 => entry(
            Op::SyncCache,
            DISK_WRITE,
            &[0x06, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07],
        ),
        0x41 => entry(
            Op::WriteSame,
            DISK_WRITE,
            &[0x1a, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07],
        ),
        0x42 => entry(Op::Unmap, DISK_WRITE, &[1, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]),
        0x5A => entry(Op::ModeSense, ANY, &[0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07]),
        0x88 => entry(Op::ReadWrite, F_OK_ON_DIRECT, &LBA16_USAGE),
        0x89 => entry(
            Op::CompareAndWrite,
            DISK_WRITE,
            &[
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0, 0x07,
            ],
        ),
        0x8A => entry(Op::ReadWrite, DISK_WRITE, &LBA16_USAGE),
        0x8E => entry(Op::ReadWrite, DISK_WRITE, &LBA16_USAGE_BYTCHK),
        0x8F => entry(Op::Verify, F_OK_ON_DIRECT, &LBA16_USAGE_VERIFY),
        0x91 => entry(Op::SyncCache, DISK_WRITE, &LBA16_USAGE_SYNC),
        0x93 => entry(Op::WriteSame, DISK_WRITE, &LBA16_USAGE_WRITE_SAME),
        // SERVICE ACTION IN(16): a 5-bit service action in byte 1.
        0x9E => match byte1 & 0x1F {
            0x10 => entry(
                Op::ReadCapacity16,
                F_OK_ON_DIRECT,
                &[0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07],
            ),
            0x12 => entry(
                Op::GetLbaStatus,
                F_OK_ON_DIRECT,
                &[
                    0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07,
                ],
            ),
            _ => Err(Sense::invalid_field(true, 1, Some(4))),
        },
        0xA0 => entry(
            Op::ReportLuns,
            NO_LUN,
            &[0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07],
        ),
        0xA8 => entry(Op::ReadWrite, DISK_READ, &LBA12_USAGE),
        0xAA => entry(Op::ReadWrite, DISK_WRITE, &LBA12_USAGE),
        0xAE => entry(
            Op::ReadWrite,
            DISK_WRITE,
            &[0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07],
        ),
        0xAF => entry(
            Op::Verify,
            F_OK_ON_DIRECT,
            &[0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07],
        ),
        _ => Err(Sense::invalid_opcode()),
    }
}

/// The `CTL_FLAG_DATA_*` bits of the table entries modelled here.
fn table_direction(opcode: u8) -> Direction {
    match opcode {
        0x03 | 0x08 | 0x12 | 0x1A | 0x25 | 0x28 | 0x5A | 0x88 | 0x9E | 0xA0 | 0xA8 => Direction::In,
        0x0A | 0x2A | 0x2E | 0x2F | 0x41 | 0x42 | 0x89 | 0x8A | 0x8E | 0x8F | 0x93 | 0xAA | 0xAE | 0xAF => {
            Direction::Out
        }
        _ => Direction::None,
    }
}

/// The data direction ctl_scsiio_precheck copies from the command's table
/// entry into the I/O (`Direction::None` for a command CTL refuses).
pub fn direction(cdb: &[u8]) -> Direction {
    validate_command(cdb).map_or(Direction::None, |entry| entry.dir)
}

const LBA12_USAGE: [u8; 11] = [0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07];
const LBA16_USAGE: [u8; 15] = lba16_usage(0x1a);
const LBA16_USAGE_BYTCHK: [u8; 15] = lba16_usage(0x12);
const LBA16_USAGE_VERIFY: [u8; 15] = lba16_usage(0x16);
const LBA16_USAGE_SYNC: [u8; 15] = lba16_usage(0x06);
const LBA16_USAGE_WRITE_SAME: [u8; 15] = lba16_usage(0x1b);

/// The usage mask of a 16-byte LBA command whose byte 1 allows `byte1`.
const fn lba16_usage(byte1: u8) -> [u8; 15] {
    [
        byte1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07,
    ]
}

/// ctl_validate_command: the table entry, or the sense for an unsupported
/// opcode / service action, a reserved bit set, or a CDB shorter than the
/// opcode's length (bytes past that length are ignored).
fn validate_command(cdb: &[u8]) -> Result<Command, Sense> {
    let Some(&opcode) = cdb.first() else {
        return Err(Sense::invalid_opcode());
    };
    let entry = command_entry(opcode, cdb.get(1).copied().unwrap_or(0))?;
    let Some(bytes) = cdb.get(1..entry.length()) else {
        let field = u16::try_from(cdb.len()).unwrap_or(u16::MAX);
        return Err(Sense::invalid_field(true, field, None));
    };
    for (index, (&byte, &mask)) in bytes.iter().zip(entry.usage).enumerate() {
        let diff = byte & !mask;
        if diff != 0 {
            let bit = 7 - diff.leading_zeros() as u8;
            let field = u16::try_from(index + 1).unwrap_or(u16::MAX);
            return Err(Sense::invalid_field(true, field, Some(bit)));
        }
    }
    Ok(entry)
}

/// One CTL LUN (struct ctl_lun): the backend's `ctl_be_lun`, the media and
/// removal state, and the unit attentions pending per initiator.
#[derive(Clone, Debug)]
pub struct Lun {
    id: u32,
    be: BackendLun,
    stopped: bool,
    no_media: bool,
    ejected: bool,
    removable: bool,
    /// Initiators with PREVENT MEDIUM REMOVAL in effect (`lun->prevent`).
    prevent: std::collections::BTreeSet<u32>,
    /// The mode pages of this device type (ctl_init_page_index).
    mode_pages: Vec<ModePage>,
    /// Pending UA bits of the initiators seen so far; an initiator without
    /// an entry still has only the power-on UA, as ctl_build_ua allocates
    /// `pending_ua` lazily filled with CTL_UA_POWERON.
    pending_ua: std::collections::BTreeMap<u32, u32>,
}

impl Lun {
    /// ctl_add_lun: a LUN for a direct-access, processor or CD/DVD backend
    /// LUN, `Err(EINVAL)` for any other device type.
    pub fn add(lun_id: u32, be: &BackendLun) -> Result<Lun, i32> {
        if !matches!(be.lun_type, T_DIRECT | T_PROCESSOR | T_CDROM) {
            return Err(EINVAL);
        }
        let removable = match be.option("removable") {
            Some(value) => value == "on",
            None => be.lun_type == T_CDROM,
        };
        Ok(Lun {
            id: lun_id,
            be: be.clone(),
            stopped: be.flags & LUN_FLAG_STOPPED != 0,
            no_media: be.flags & LUN_FLAG_NO_MEDIA != 0,
            ejected: be.flags & LUN_FLAG_EJECTED != 0,
            removable,
            prevent: Default::default(),
            mode_pages: init_mode_pages(be),
            pending_ua: Default::default(),
        })
    }

    /// The LUN number CTL assigned.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The backend's LUN description as CTL currently sees it.
    pub fn backend(&self) -> &BackendLun {
        &self.be
    }

    /// ctl_lun_capacity_changed: the backend updated its size fields;
    /// CAPACITY DATA HAS CHANGED for every initiator.
    pub fn capacity_changed(&mut self, be: &BackendLun) {
        self.be = be.clone();
        self.establish_ua_all(UA_CAPACITY_CHANGE);
    }

    /// ctl_start_lun: clear the stopped state.
    pub fn start(&mut self) {
        self.stopped = false;
    }

    /// ctl_stop_lun: commands needing media get NOT READY, 04/02.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// ctl_lun_no_media: the medium is gone (tray closed).
    pub fn no_media(&mut self) {
        self.no_media = true;
    }

    /// ctl_lun_has_media: clears NO_MEDIA and EJECTED; a removable LUN
    /// reports MEDIUM CHANGE (28/00) to every initiator.
    pub fn has_media(&mut self) {
        self.no_media = false;
        self.ejected = false;
        if self.removable {
            self.establish_ua_all(UA_MEDIUM_CHANGE);
        }
    }

    /// ctl_lun_ejected: the tray is open.
    pub fn ejected(&mut self) {
        self.ejected = true;
    }

    /// What ctl_add_lun and ctl_free_lun raise on the other LUNs: REPORTED
    /// LUNS DATA HAS CHANGED (3F/0E) for every initiator.
    pub fn luns_changed(&mut self) {
        self.establish_ua_all(UA_LUN_CHANGE);
    }

    /// What ctl_lun_reset does to the LUN (sys/cam/ctl/ctl.c of
    /// bsdjhb/freebsd, FreeBSD 15): every initiator's PREVENT MEDIUM
    /// REMOVAL ends, and every initiator, the one that reset it too
    /// (`ctl_est_ua_all(lun, -1, ua_type)`), gets a LUN RESET unit
    /// attention (BUS DEVICE RESET for a target reset, ctl_target_reset).
    pub fn reset(&mut self, target: bool) {
        self.prevent.clear();
        self.establish_ua_all(if target { UA_TARG_RESET } else { UA_LUN_RESET });
    }

    /// What ctl_i_t_nexus_loss does to the LUN for an initiator: its
    /// PREVENT MEDIUM REMOVAL ends and it gets I_T NEXUS LOSS (an I_T
    /// NEXUS RESET, ctl_i_t_nexus_reset) or POWER ON (the initiator's last
    /// session ended, ctl_remove_initiator).
    pub fn nexus_lost(&mut self, initiator: u32, poweron: bool) {
        self.prevent.remove(&initiator);
        let ua = if poweron { UA_POWERON } else { UA_I_T_NEXUS_LOSS };
        *self.pending_ua.entry(initiator).or_insert(UA_POWERON) |= ua;
    }

    /// ctl_est_ua_all with no initiator excepted.
    fn establish_ua_all(&mut self, ua: u32) {
        for pending in self.pending_ua.values_mut() {
            *pending |= ua;
        }
    }

    /// ctl_build_ua: the highest-priority pending UA of `initiator` as
    /// sense, cleared by being reported.
    fn take_ua(&mut self, initiator: u32) -> Option<Sense> {
        let pending = self.pending_ua.entry(initiator).or_insert(UA_POWERON);
        if *pending == 0 {
            return None;
        }
        let ua = 1u32 << pending.trailing_zeros();
        let (asc, ascq, clear) = ua_to_ascq(ua);
        *pending &= !clear;
        Some(Sense::new(KEY_UNIT_ATTENTION, asc, ascq))
    }

    /// ctl_cmd_applicable: whether the entry serves this device type.
    fn applicable(&self, entry: &Command) -> bool {
        let needed = match self.be.lun_type {
            T_DIRECT => F_OK_ON_DIRECT,
            T_PROCESSOR => F_OK_ON_PROC,
            _ => F_OK_ON_CDROM,
        };
        entry.flags & needed != 0
    }

    /// ctl_scsiio_lun_check for a single-node CTL (no HA peer): a LUN the
    /// backend did not mark primary is unavailable (04/0C), then write
    /// protection, then the medium state.
    fn lun_check(&self, entry: &Command) -> Result<(), Sense> {
        if self.be.flags & LUN_FLAG_PRIMARY == 0 && entry.flags & F_OK_ON_UNAVAIL == 0 {
            return Err(LUN_UNAVAIL);
        }
        if entry.flags & F_PAT_WRITE != 0 {
            if self.be.flags & LUN_FLAG_READONLY != 0 {
                return Err(HW_WRITE_PROTECTED);
            }
            if self.current_page_byte(SMS_CONTROL_PAGE, 4) & SCP_SWP != 0 {
                return Err(Sense::new(KEY_DATA_PROTECT, 0x27, 0x02));
            }
        }
        if entry.flags & F_OK_ON_NO_MEDIA == 0 {
            if self.ejected {
                return Err(LUN_EJECTED);
            }
            if self.no_media {
                return Err(if self.removable { LUN_NO_MEDIA } else { LUN_INT_REQD });
            }
            if self.stopped {
                return Err(LUN_STOPPED);
            }
        }
        Ok(())
    }
}

/// The I_T nexus a command arrives on and what the port maps.
struct Nexus<'a> {
    port: &'a Port,
    initiator: u32,
    mapped: &'a [u32],
}

/// ctl_scsiio_precheck followed by the command's ctl.c function: what CTL
/// does with `cdb` from `initiator` through `port` for `lun` (None when the
/// LUN number maps to no LUN).
///
/// `mapped` lists the port's LUN numbers that have a LUN (REPORT LUNS);
/// CTL's own data goes to `data_in`. Sense data is always fixed format.
pub fn dispatch(
    lun: Option<&mut Lun>,
    port: &Port,
    initiator: u32,
    mapped: &[u32],
    cdb: &[u8],
    data_in: &mut [u8],
) -> Disposition {
    let nexus = Nexus {
        port,
        initiator,
        mapped,
    };
    let entry = match validate_command(cdb) {
        Ok(entry) => entry,
        Err(sense) => return sense.outcome(),
    };
    let Some(lun) = lun else {
        if entry.flags & F_OK_ON_NO_LUN == 0 {
            return UNSUPPORTED_LUN.outcome();
        }
        return execute(None, &nexus, entry.op, cdb, data_in).unwrap_or_else(|sense| sense.outcome());
    };
    if !lun.applicable(&entry) {
        return Sense::invalid_opcode().outcome();
    }
    if entry.flags & F_NO_SENSE == 0
        && let Some(sense) = lun.take_ua(initiator)
    {
        return sense.outcome();
    }
    if let Err(sense) = lun.lun_check(&entry) {
        return sense.outcome();
    }
    execute(Some(lun), &nexus, entry.op, cdb, data_in).unwrap_or_else(|sense| sense.outcome())
}

/// ctl_scsiio again, as ctl_config_move_done runs it once the initiator's
/// data is in CTL's buffer: the command's ctl.c function with `moved`, the
/// data moved in (`Some` when the I/O has `CTL_FLAG_ALLOCATED`), without
/// the prechecks.  A command that completes here without freeing the buffer
/// (every error of a function but ctl_unmap's list checks) gives
/// [`Disposition::DoneKeepingData`], as ctl.c leaks the buffer there.
pub fn resume(lun: &mut Lun, port: &Port, initiator: u32, cdb: &[u8], moved: Option<&[u8]>) -> Disposition {
    let nexus = Nexus {
        port,
        initiator,
        mapped: &[],
    };
    let entry = match validate_command(cdb) {
        Ok(entry) => entry,
        Err(sense) => return Disposition::DoneKeepingData(sense.fixed_outcome()),
    };
    let result = match entry.op {
        Op::WriteSame => write_same(lun, cdb, moved),
        Op::Unmap => unmap(lun, cdb, moved),
        op => lun_command(lun, &nexus, op, cdb, &mut []),
    };
    result.unwrap_or_else(|sense| Disposition::DoneKeepingData(sense.fixed_outcome()))
}

/// Runs the command's ctl.c function once the prechecks passed.
fn execute(
    lun: Option<&mut Lun>,
    nexus: &Nexus<'_>,
    op: Op,
    cdb: &[u8],
    data_in: &mut [u8],
) -> Result<Disposition, Sense> {
    match op {
        // ctl_tur: the prechecks did all the work.
        Op::TestUnitReady => Ok(good(0)),
        Op::Inquiry => inquiry(lun.as_deref(), nexus, cdb, data_in),
        Op::RequestSense => Ok(request_sense(lun, nexus, cdb, data_in)),
        Op::ReportLuns => report_luns(lun, nexus, cdb, data_in),
        _ => {
            let Some(lun) = lun else {
                return Err(UNSUPPORTED_LUN);
            };
            lun_command(lun, nexus, op, cdb, data_in)
        }
    }
}

/// The commands that need a LUN (the table has no OK_ON_NO_LUN for them).
fn lun_command(lun: &mut Lun, nexus: &Nexus<'_>, op: Op, cdb: &[u8], data_in: &mut [u8]) -> Result<Disposition, Sense> {
    match op {
        Op::ReadCapacity => read_capacity(lun, cdb, data_in),
        Op::ReadCapacity16 => read_capacity_16(lun, cdb, data_in),
        Op::ReadWrite => read_write(lun, cdb),
        Op::CompareAndWrite => compare_and_write(lun, cdb),
        Op::Verify => verify(lun, cdb),
        Op::SyncCache => sync_cache(lun, cdb),
        Op::WriteSame => write_same(lun, cdb, None),
        Op::Unmap => unmap(lun, cdb, None),
        Op::StartStop => start_stop(lun, cdb),
        Op::PreventAllow => prevent_allow(lun, nexus, cdb),
        Op::GetLbaStatus => get_lba_status(lun, cdb),
        Op::ModeSense => mode_sense(lun, cdb, data_in),
        _ => Err(Sense::invalid_opcode()),
    }
}

/// Big-endian 16-bit field of the CDB at `at` (the caller checked the
/// length against the command table).
fn cdb_u16(cdb: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([byte(cdb, at), byte(cdb, at + 1)])
}

/// Big-endian 32-bit field of the CDB at `at`.
fn cdb_u32(cdb: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([byte(cdb, at), byte(cdb, at + 1), byte(cdb, at + 2), byte(cdb, at + 3)])
}

/// Big-endian 64-bit field of the CDB at `at`.
fn cdb_u64(cdb: &[u8], at: usize) -> u64 {
    (u64::from(cdb_u32(cdb, at)) << 32) | u64::from(cdb_u32(cdb, at + 4))
}

/// One CDB byte; 0 past the end.
fn byte(cdb: &[u8], at: usize) -> u8 {
    cdb.get(at).copied().unwrap_or(0)
}

/// The bytes of a C string: up to the first NUL.
fn c_str(value: &[u8]) -> &[u8] {
    value.split(|&b| b == 0).next().unwrap_or(&[])
}

/// strncpy into `dst`: the string up to its NUL, the rest zero-filled.
fn strncpy(dst: &mut [u8], src: &[u8]) {
    let src = c_str(src);
    for (index, slot) in dst.iter_mut().enumerate() {
        *slot = src.get(index).copied().unwrap_or(0);
    }
}

/// A space-padded ASCII INQUIRY field: the option's first bytes over
/// spaces, or `default` (already padded to the field size) without it.
fn ascii_field(dst: &mut [u8], value: Option<&str>, default: &[u8]) {
    match value {
        Some(value) => {
            dst.fill(b' ');
            let value = c_str(value.as_bytes());
            let len = value.len().min(dst.len());
            dst[..len].copy_from_slice(&value[..len]);
        }
        None => strncpy(dst, default),
    }
}

/// `value` rounded up to a multiple of 4 (roundup2).
fn roundup4(value: usize) -> usize {
    value.saturating_add(3) & !3
}

// Peripheral qualifiers (scsi_all.h SID_QUAL_*).
const SID_QUAL_LU_OFFLINE: u8 = 0x01;
const SID_QUAL_BAD_LU: u8 = 0x03;
const T_NODEVICE: u8 = 0x1F;

// Device identification designators (scsi_all.h SVPD_ID_*).
const SCSI_PROTO_ISCSI: u8 = 0x05;
const CODESET_BINARY: u8 = 0x01;
const CODESET_ASCII: u8 = 0x02;
const CODESET_UTF8: u8 = 0x03;
const ID_PIV: u8 = 0x80;
const ID_ASSOC_LUN: u8 = 0x00;
const ID_ASSOC_PORT: u8 = 0x10;
const ID_ASSOC_TARGET: u8 = 0x20;
const ID_TYPE_T10: u8 = 0x01;
const ID_TYPE_EUI64: u8 = 0x02;
const ID_TYPE_NAA: u8 = 0x03;
const ID_TYPE_RELTARG: u8 = 0x04;
const ID_TYPE_TPORTGRP: u8 = 0x05;
const ID_TYPE_SCSI_NAME: u8 = 0x08;
const ID_TYPE_UUID: u8 = 0x0A;

/// CTL_VENDOR, CTL_*_PRODUCT (ctl_private.h), space padded.
const CTL_VENDOR: &[u8; 8] = b"FREEBSD ";
const CTL_DIRECT_PRODUCT: &[u8; 16] = b"CTLDISK         ";
const CTL_PROCESSOR_PRODUCT: &[u8; 16] = b"CTLPROCESSOR    ";
const CTL_CDROM_PRODUCT: &[u8; 16] = b"CTLCDROM        ";
/// CTL_DEVID_MIN_LEN / CTL_DEVID_LEN / CTL_SN_LEN (ctl_backend.h).
const CTL_DEVID_MIN_LEN: usize = 16;
const CTL_SN_LEN: usize = 16;
/// The portal group tag cfiscsi puts in the port name; ctld numbers portal
/// groups from 1 and the simulator has one.
const PORTAL_GROUP_TAG: u16 = 1;

/// One designation descriptor: header and identifier.
fn designator(proto_codeset: u8, id_type: u8, identifier: &[u8]) -> Vec<u8> {
    let len = u8::try_from(identifier.len()).unwrap_or(u8::MAX);
    let mut desc = vec![proto_codeset, id_type, 0, len];
    desc.extend_from_slice(&identifier[..usize::from(len)]);
    desc
}

/// A SCSI name string designator: the UTF-8 name, NUL-terminated and
/// zero-padded to a multiple of 4 (strlcpy into roundup2(len + 1, 4)).
fn scsi_name(proto_codeset: u8, id_type: u8, name: &[u8]) -> Vec<u8> {
    let name = c_str(name);
    let mut identifier = vec![0u8; roundup4(name.len() + 1).min(252)];
    let len = name.len().min(identifier.len() - 1);
    identifier[..len].copy_from_slice(&name[..len]);
    designator(proto_codeset, id_type, &identifier)
}

/// isspace(3) in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// hex2bin (ctl.c): hex digits (after blanks and an optional 0x, dashes
/// skipped) into `size` bytes; returns the bytes and how many it filled.
fn hex2bin(text: &str, size: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; size];
    let text = text.trim_start_matches(is_c_space);
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let mut nibbles = 0usize;
    for c in text.bytes().filter(|&c| c != b'-') {
        if nibbles >= size * 2 {
            break;
        }
        let Some(value) = (c as char).to_digit(16) else { break };
        let slot = &mut buf[nibbles / 2];
        *slot |= if nibbles.is_multiple_of(2) {
            (value as u8) << 4
        } else {
            value as u8
        };
        nibbles += 1;
    }
    (buf, nibbles.div_ceil(2))
}

/// strtoq/strtol with base 0: the leading integer of `text` (saturated to
/// the i64 range) and the rest of the string.
fn c_strtol(text: &str) -> (i64, &str) {
    let trimmed = text.trim_start_matches(is_c_space);
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let hex = unsigned.strip_prefix("0x").or_else(|| unsigned.strip_prefix("0X"));
    let (radix, digits) = match hex {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_hexdigit()) => (16, rest),
        _ if unsigned.starts_with('0') => (8, unsigned),
        _ => (10, unsigned),
    };
    let end = digits.find(|c: char| !c.is_digit(radix)).unwrap_or(digits.len());
    if end == 0 {
        return (0, text);
    }
    let mut value: i128 = 0;
    for c in digits[..end].chars() {
        value = (value * i128::from(radix) + i128::from(c.to_digit(radix).unwrap_or(0))).min(i128::from(u64::MAX));
    }
    let value = if negative { -value } else { value };
    let value = i64::try_from(value).unwrap_or(if negative { i64::MIN } else { i64::MAX });
    (value, &digits[end..])
}

/// ctl_expand_number: a number with an optional k/m/g/t/p/e (binary)
/// suffix; None for an unknown suffix or an overflow.
pub(crate) fn expand_number(text: &str) -> Option<u64> {
    let (number, rest) = c_strtol(text);
    let number = number as u64;
    let shift = match rest.bytes().next().map(|c| c.to_ascii_lowercase()) {
        None | Some(b'b') => return Some(number),
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(b'p') => 50,
        Some(b'e') => 60,
        Some(_) => return None,
    };
    let shifted = number << shift;
    (shifted >> shift == number).then_some(shifted)
}

/// An option run through ctl_expand_number, `default` when absent or bad.
fn option_number(be: &BackendLun, name: &str, default: u64) -> u64 {
    be.option(name).and_then(expand_number).unwrap_or(default)
}

impl Lun {
    /// The LUN's designators as ctl_add_lun builds `lun_devid`: T10 vendor
    /// ID, then the "scsiname", "eui", "naa" and "uuid" options.
    fn lun_devid(&self) -> Vec<u8> {
        let be = &self.be;
        let device_id = c_str(&be.device_id);
        let devidlen = device_id.len().max(CTL_DEVID_MIN_LEN);
        let mut t10 = vec![0u8; 8 + devidlen];
        ascii_field(&mut t10[..8], be.option("vendor"), CTL_VENDOR);
        strncpy(&mut t10[8..], device_id);
        let mut devid = designator(CODESET_ASCII, ID_PIV | ID_ASSOC_LUN | ID_TYPE_T10, &t10);
        if let Some(name) = be.option("scsiname") {
            devid.extend(scsi_name(
                CODESET_UTF8,
                ID_PIV | ID_ASSOC_LUN | ID_TYPE_SCSI_NAME,
                name.as_bytes(),
            ));
        }
        if let Some(eui) = be.option("eui") {
            let (id, filled) = hex2bin(eui, 16);
            let len = match filled {
                13.. => 16,
                9..=12 => 12,
                _ => 8,
            };
            devid.extend(designator(
                CODESET_BINARY,
                ID_PIV | ID_ASSOC_LUN | ID_TYPE_EUI64,
                &id[..len],
            ));
        }
        if let Some(naa) = be.option("naa") {
            let (id, filled) = hex2bin(naa, 16);
            let len = if filled > 8 { 16 } else { 8 };
            devid.extend(designator(
                CODESET_BINARY,
                ID_PIV | ID_ASSOC_LUN | ID_TYPE_NAA,
                &id[..len],
            ));
        }
        if let Some(uuid) = be.option("uuid") {
            let mut id = vec![0x10, 0];
            id.extend(hex2bin(uuid, 16).0);
            devid.extend(designator(CODESET_BINARY, ID_PIV | ID_ASSOC_LUN | ID_TYPE_UUID, &id));
        }
        devid
    }

    /// The peripheral byte of the VPD pages: qualifier 000b and the type.
    fn vpd_device(lun: Option<&Lun>) -> u8 {
        match lun {
            Some(lun) => lun.be.lun_type,
            None => (SID_QUAL_LU_OFFLINE << 5) | T_DIRECT,
        }
    }

    /// Whether the LUN is a direct-access one (the VPD pages B0h-B2h).
    fn is_direct(lun: Option<&Lun>) -> bool {
        lun.is_some_and(|lun| lun.be.lun_type == T_DIRECT)
    }
}

/// The port designators cfiscsi registers: `port_devid` (the SCSI name
/// "<target>,t,0x<tag>") and `target_devid` (the target name).
fn port_devids(port: &Port) -> (Vec<u8>, Vec<u8>) {
    let proto = (SCSI_PROTO_ISCSI << 4) | CODESET_UTF8;
    let port_name = format!("{},t,0x{:04x}", port.port_name, PORTAL_GROUP_TAG);
    (
        scsi_name(proto, ID_PIV | ID_ASSOC_PORT | ID_TYPE_SCSI_NAME, port_name.as_bytes()),
        scsi_name(
            proto,
            ID_PIV | ID_ASSOC_TARGET | ID_TYPE_SCSI_NAME,
            port.port_name.as_bytes(),
        ),
    )
}

/// A VPD page: peripheral byte, page code, 2-byte page length, `body`.
fn vpd_page(lun: Option<&Lun>, page: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut data = vec![Lun::vpd_device(lun), page];
    data.extend_from_slice(&len.to_be_bytes());
    data.extend_from_slice(&body[..usize::from(len)]);
    data
}

/// ctl_inquiry: standard data, or a VPD page with EVPD set.
fn inquiry(lun: Option<&Lun>, nexus: &Nexus<'_>, cdb: &[u8], data_in: &mut [u8]) -> Result<Disposition, Sense> {
    let alloc_len = usize::from(cdb_u16(cdb, 3));
    let page_code = byte(cdb, 2);
    let data = if byte(cdb, 1) & 0x01 != 0 {
        inquiry_evpd(lun, nexus, page_code)?
    } else if page_code == 0 {
        inquiry_std(lun)
    } else {
        return Err(Sense::invalid_field(true, 2, None));
    };
    Ok(send_data(&data, alloc_len, data_in))
}

/// ctl_inquiry_std: the 96 bytes up to VENDOR SPECIFIC 1, for an iSCSI
/// port of a single-node CTL.
fn inquiry_std(lun: Option<&Lun>) -> Vec<u8> {
    let mut inq = vec![0u8; 96];
    inq[0] = match lun {
        Some(lun) if lun.be.flags & LUN_FLAG_PRIMARY != 0 => lun.be.lun_type,
        Some(lun) => (SID_QUAL_LU_OFFLINE << 5) | lun.be.lun_type,
        None => (SID_QUAL_BAD_LU << 5) | T_NODEVICE,
    };
    if lun.is_some_and(|lun| lun.removable) {
        inq[1] = 0x80; // SID_RMB
    }
    inq[2] = 0x07; // SCSI_REV_SPC5
    inq[3] = 0x10 | 2; // SID_HiSup, response data format 2
    inq[4] = 96 - 5; // additional length
    inq[5] = 0x08 | 0x10; // SPC3_SID_3PC | SPC3_SID_TPGS_IMPLICIT
    inq[6] = 0x10; // SPC2_SID_MultiP
    inq[7] = 0x02; // SID_CmdQue
    let be = lun.map(|lun| &lun.be);
    let option = |name| be.and_then(|be| be.option(name));
    ascii_field(&mut inq[8..16], option("vendor"), CTL_VENDOR);
    let product = match be.map(|be| be.lun_type) {
        Some(T_PROCESSOR) => CTL_PROCESSOR_PRODUCT,
        Some(T_CDROM) => CTL_CDROM_PRODUCT,
        _ => CTL_DIRECT_PRODUCT,
    };
    ascii_field(&mut inq[16..32], option("product"), product);
    ascii_field(&mut inq[32..36], option("revision"), b"0001");
    // Version descriptors: SAM-6, SPC-5, iSCSI, then SBC-4 or MMC-6.
    inq[58..60].copy_from_slice(&0x00C0u16.to_be_bytes());
    inq[60..62].copy_from_slice(&0x05C0u16.to_be_bytes());
    inq[62..64].copy_from_slice(&0x0960u16.to_be_bytes());
    let command_set: u16 = match be.map(|be| be.lun_type) {
        Some(T_PROCESSOR) => 0,
        Some(T_CDROM) => 0x04E0,
        _ => 0x0600,
    };
    inq[64..66].copy_from_slice(&command_set.to_be_bytes());
    inq
}

/// SCSI_EVPD_NUM_SUPPORTED_PAGES: VPD page 00h is allocated for this many
/// entries and sent whole.
const EVPD_NUM_SUPPORTED_PAGES: usize = 11;

/// ctl_inquiry_evpd: the VPD page, or INVALID FIELD IN CDB (byte 2).
fn inquiry_evpd(lun: Option<&Lun>, nexus: &Nexus<'_>, page_code: u8) -> Result<Vec<u8>, Sense> {
    let body = match page_code {
        0x00 => {
            let mut pages = vec![0x00, 0x80, 0x83, 0x86, 0x87, 0x88, 0x8F, 0x92];
            if Lun::is_direct(lun) {
                pages.extend([0xB0, 0xB1, 0xB2]);
            }
            let count = pages.len() as u8;
            let mut body = pages;
            body.resize(4 * EVPD_NUM_SUPPORTED_PAGES - 4, 0);
            let mut page = vpd_page(lun, 0x00, &body);
            // A reserved byte and a one-byte length of the list.
            page[2] = 0;
            page[3] = count;
            return Ok(page);
        }
        0x80 => {
            let mut serial = [b' '; CTL_SN_LEN];
            if let Some(lun) = lun {
                strncpy(&mut serial, &lun.be.serial_num);
            }
            serial.to_vec()
        }
        0x83 => evpd_devid(lun, nexus.port),
        0x86 => {
            let mut body = vec![0u8; 60];
            body[1] = 0x04 | 0x02 | 0x01; // HEADSUP | ORDSUP | SIMPSUP
            body[2] = 0x01; // V_SUP
            body[3] = 0x01; // LUICLR
            body[4] = 0x08; // RTD_SUP
            body
        }
        // One descriptor: all pages and subpages shared.
        0x87 => vec![0x3F, 0xFF, 0x00, 0x00],
        0x88 => {
            let (port_devid, _) = port_devids(nexus.port);
            let mut body = vec![0, 0];
            body.extend_from_slice(&u16::try_from(nexus.port.targ_port).unwrap_or(u16::MAX).to_be_bytes());
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            body.extend_from_slice(&u16::try_from(port_devid.len()).unwrap_or(u16::MAX).to_be_bytes());
            body.extend(port_devid);
            body
        }
        0x8F => evpd_tpc(),
        0x92 => {
            let mut codes = vec![0x0001u16];
            if let Some(lun) = lun.filter(|lun| lun.be.lun_type == T_DIRECT) {
                codes.extend([0x0101, 0x0102]);
                if lun.be.flags & LUN_FLAG_UNMAP != 0 {
                    codes.push(0x0103);
                }
            }
            let mut body = vec![0u8; 4 + 5 * 2];
            for (slot, code) in body[4..].chunks_exact_mut(2).zip(&codes) {
                slot.copy_from_slice(&code.to_be_bytes());
            }
            let mut page = vpd_page(lun, 0x92, &body);
            page[2..4].copy_from_slice(&u16::try_from(4 + 2 * codes.len()).unwrap_or(0).to_be_bytes());
            return Ok(page);
        }
        0xB0 if Lun::is_direct(lun) => lun.map(evpd_block_limits).unwrap_or_default(),
        0xB1 if Lun::is_direct(lun) => lun.map(evpd_bdc).unwrap_or_default(),
        0xB2 if Lun::is_direct(lun) => lun.map(evpd_lbp).unwrap_or_default(),
        _ => return Err(Sense::invalid_field(true, 2, None)),
    };
    Ok(vpd_page(lun, page_code, &body))
}

/// ctl_inquiry_evpd_devid body: the LUN's designators, the port name,
/// relative target port, target port group 1 (single node), target name.
fn evpd_devid(lun: Option<&Lun>, port: &Port) -> Vec<u8> {
    let (port_devid, target_devid) = port_devids(port);
    let mut body = lun.map(Lun::lun_devid).unwrap_or_default();
    body.extend(port_devid);
    let binary = (SCSI_PROTO_ISCSI << 4) | CODESET_BINARY;
    let rel_port = u16::try_from(port.targ_port).unwrap_or(u16::MAX).to_be_bytes();
    body.extend(designator(
        binary,
        ID_PIV | ID_ASSOC_PORT | ID_TYPE_RELTARG,
        &[0, 0, rel_port[0], rel_port[1]],
    ));
    body.extend(designator(
        binary,
        ID_PIV | ID_ASSOC_PORT | ID_TYPE_TPORTGRP,
        &[0, 0, 0, 1],
    ));
    body.extend(target_devid);
    body
}

/// A third-party copy descriptor: type, 2-byte length, `body`.
fn tpc_descriptor(desc_type: u16, body: &[u8]) -> Vec<u8> {
    let mut descriptor = desc_type.to_be_bytes().to_vec();
    descriptor.extend_from_slice(&(body.len() as u16).to_be_bytes());
    descriptor.extend_from_slice(body);
    descriptor
}

// ctl_tpc.c limits.
const TPC_MAX_CSCDS: u16 = 64;
const TPC_MAX_SEGS: u16 = 64;
const TPC_MAX_LIST: u32 = 8192;
const TPC_MAX_LISTS: u32 = 255;
const TPC_MAX_IOCHUNK_SIZE: u64 = 16 * 1024 * 1024;
const TPC_MIN_TOKEN_TIMEOUT: u32 = 1;
const TPC_DFL_TOKEN_TIMEOUT: u32 = 60;
const TPC_MAX_TOKEN_TIMEOUT: u32 = 600;

/// ctl_inquiry_evpd_tpc (ctl_tpc.c) body: block device ROD limits,
/// supported commands, parameter data, supported descriptors and CSCD IDs,
/// ROD token features, supported ROD tokens, general copy operations.
fn evpd_tpc() -> Vec<u8> {
    let mut body = Vec::with_capacity(376);
    // Block Device ROD Limits.
    let mut bdrl = [0u8; 32];
    bdrl[6..8].copy_from_slice(&TPC_MAX_SEGS.to_be_bytes());
    bdrl[8..12].copy_from_slice(&TPC_MAX_TOKEN_TIMEOUT.to_be_bytes());
    bdrl[12..16].copy_from_slice(&TPC_DFL_TOKEN_TIMEOUT.to_be_bytes());
    body.extend(tpc_descriptor(0x0000, &bdrl));
    // Supported commands: EXTENDED COPY and RECEIVE COPY STATUS with their
    // service actions, padded to a multiple of 4.
    let commands = [
        0x83, 5, 0x00, 0x01, 0x10, 0x11, 0x1C, 0x84, 6, 0x00, 0x04, 0x05, 0x03, 0x07, 0x08,
    ];
    let mut sc = vec![commands.len() as u8];
    sc.extend_from_slice(&commands);
    sc.resize(roundup4(sc.len()), 0);
    body.extend(tpc_descriptor(0x0001, &sc));
    // Parameter data.
    let mut pd = [0u8; 28];
    pd[4..6].copy_from_slice(&TPC_MAX_CSCDS.to_be_bytes());
    pd[6..8].copy_from_slice(&TPC_MAX_SEGS.to_be_bytes());
    pd[8..12].copy_from_slice(&TPC_MAX_LIST.to_be_bytes());
    body.extend(tpc_descriptor(0x0004, &pd));
    // Supported descriptors: block-to-block, verify, register key, CSCD ID.
    body.extend(tpc_descriptor(0x0008, &[4, 0x02, 0x07, 0x14, 0xE4, 0, 0, 0]));
    // Supported CSCD descriptor IDs: FFFFh.
    body.extend(tpc_descriptor(0x000C, &[0, 2, 0xFF, 0xFF]));
    // ROD token features with the block device type-specific features.
    let mut rtf = [0u8; 92];
    rtf[12..16].copy_from_slice(&TPC_MIN_TOKEN_TIMEOUT.to_be_bytes());
    rtf[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    rtf[20..24].copy_from_slice(&TPC_MAX_TOKEN_TIMEOUT.to_be_bytes());
    rtf[42..44].copy_from_slice(&48u16.to_be_bytes());
    let block = &mut rtf[44..];
    block[2..4].copy_from_slice(&44u16.to_be_bytes());
    block[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
    block[32..40].copy_from_slice(&TPC_MAX_IOCHUNK_SIZE.to_be_bytes());
    body.extend(tpc_descriptor(0x0106, &rtf));
    // Supported ROD tokens: access upon reference (in and out) and block
    // device zero (in), 64 bytes each.
    let mut srt = vec![0u8; 4 + 128];
    srt[2..4].copy_from_slice(&128u16.to_be_bytes());
    srt[4..8].copy_from_slice(&0u32.to_be_bytes());
    srt[8] = 0x02 | 0x01;
    srt[68..72].copy_from_slice(&0xFFFF_0001u32.to_be_bytes());
    srt[72] = 0x02;
    body.extend(tpc_descriptor(0x0108, &srt));
    // General copy operations.
    let mut gco = [0u8; 32];
    gco[..4].copy_from_slice(&TPC_MAX_LISTS.to_be_bytes());
    gco[4..8].copy_from_slice(&TPC_MAX_LISTS.to_be_bytes());
    body.extend(tpc_descriptor(0x8001, &gco));
    body
}

/// ctl_inquiry_evpd_block_limits body (bytes 4..64).
fn evpd_block_limits(lun: &Lun) -> Vec<u8> {
    let be = &lun.be;
    let mut page = [0u8; 64];
    page[5] = 0xFF; // MAXIMUM COMPARE AND WRITE LENGTH
    page[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    page[12..16].copy_from_slice(&be.opttxferlen.to_be_bytes());
    if be.flags & LUN_FLAG_UNMAP != 0 {
        let max_lba = option_number(be, "unmap_max_lba", 0xFFFF_FFFF) as u32;
        let max_descr = option_number(be, "unmap_max_descr", 0xFFFF_FFFF) as u32;
        page[20..24].copy_from_slice(&max_lba.to_be_bytes());
        page[24..28].copy_from_slice(&max_descr.to_be_bytes());
        if be.ublockexp != 0 {
            let grain = 1u32.checked_shl(u32::from(be.ublockexp)).unwrap_or(0);
            page[28..32].copy_from_slice(&grain.to_be_bytes());
            page[32..36].copy_from_slice(&(0x8000_0000 | u32::from(be.ublockoff)).to_be_bytes());
        }
    }
    page[44..48].copy_from_slice(&be.atomicblock.to_be_bytes());
    let write_same_max = option_number(be, "write_same_max_lba", u64::MAX);
    page[36..44].copy_from_slice(&write_same_max.to_be_bytes());
    if be.maxlba.wrapping_add(1) > write_same_max {
        page[4] |= 0x01; // WSNZ
    }
    page[4..].to_vec()
}

/// ctl_inquiry_evpd_bdc body: rotation rate ("rpm", default non-rotating),
/// form factor ("formfactor"), RBWZ | FUAB | VBULS.
fn evpd_bdc(lun: &Lun) -> Vec<u8> {
    let numeric = |name| lun.be.option(name).map(|value| c_strtol(value).0 as u32);
    let mut body = vec![0u8; 60];
    let rpm = numeric("rpm").unwrap_or(1) as u16;
    body[0..2].copy_from_slice(&rpm.to_be_bytes());
    body[3] = (numeric("formfactor").unwrap_or(0) & 0x0F) as u8;
    body[4] = 0x04 | 0x02 | 0x01;
    body
}

/// CTL_LBP_EXPONENT: thresholds in units of 2^11 blocks.
const CTL_LBP_EXPONENT: u8 = 11;

/// ctl_inquiry_evpd_lbp body: threshold exponent, LBPU/LBPWS/LBPWS10/LBPRZ/
/// ANC_SUP and the provisioning type when the backend can unmap.
fn evpd_lbp(lun: &Lun) -> Vec<u8> {
    let mut body = vec![CTL_LBP_EXPONENT, 0, 0, 0];
    if lun.be.flags & LUN_FLAG_UNMAP != 0 {
        body[1] = 0x80 | 0x40 | 0x20 | 0x04 | 0x02;
        body[2] = match lun.be.option("provisioning_type") {
            None | Some("thin") => 0x02,
            Some("resource") => 0x01,
            Some(_) => 0x00,
        };
    }
    body
}

/// ctl_request_sense: the pending UA (or NO SENSE) as parameter data in
/// fixed or, with DESC, descriptor format; 25/00 without a usable LUN.
fn request_sense(lun: Option<&mut Lun>, nexus: &Nexus<'_>, cdb: &[u8], data_in: &mut [u8]) -> Disposition {
    let descriptor = byte(cdb, 1) & 0x01 != 0;
    let sense = match lun {
        Some(lun) if lun.be.flags & LUN_FLAG_PRIMARY != 0 => {
            lun.take_ua(nexus.initiator).unwrap_or(Sense::new(0x00, 0x00, 0x00))
        }
        _ => UNSUPPORTED_LUN,
    };
    // The 256-byte sense buffer goes out for the whole allocation length.
    let mut data = if descriptor { sense.descriptor() } else { sense.fixed() };
    data.resize(256, 0);
    send_data(&data, usize::from(byte(cdb, 4)), data_in)
}

impl Sense {
    /// Descriptor-format sense data (no descriptors for the conditions
    /// REQUEST SENSE reports).
    fn descriptor(&self) -> Vec<u8> {
        vec![0x72, self.key & 0x0F, self.asc, self.ascq, 0, 0, 0, 0]
    }
}

/// ctl_encode_lun: peripheral addressing below 256, flat below 16384,
/// extended addressing above.
fn encode_lun(lun: u32) -> u64 {
    let l = u64::from(lun);
    match l {
        0..=0xFF => l << 48,
        0x100..=0x3FFF => (0x40 << 56) | (l << 48),
        0x4000..=0xFF_FFFF => (0xD2 << 56) | (l << 32),
        _ => (0xE2 << 56) | (l << 16),
    }
}

/// ctl_report_luns: the port's mapped LUN numbers, ascending; REPORT LUNS
/// to an existing LUN clears REPORTED LUNS DATA HAS CHANGED on it.
fn report_luns(lun: Option<&mut Lun>, nexus: &Nexus<'_>, cdb: &[u8], data_in: &mut [u8]) -> Result<Disposition, Sense> {
    let mut luns: Vec<u32> = match byte(cdb, 2) {
        0x00 | 0x02 | 0x11 => nexus.mapped.to_vec(),
        0x01 | 0x10 | 0x12 => Vec::new(),
        _ => return Err(Sense::invalid_field(true, 2, None)),
    };
    let alloc_len = cdb_u32(cdb, 6) as usize;
    if alloc_len < 16 {
        return Err(Sense::invalid_field(true, 6, None));
    }
    luns.sort_unstable();
    luns.dedup();
    let list_len = u32::try_from(luns.len().saturating_mul(8)).unwrap_or(u32::MAX);
    let mut data = Vec::with_capacity(8 + luns.len() * 8);
    data.extend_from_slice(&list_len.to_be_bytes());
    data.extend_from_slice(&[0; 4]);
    for number in luns {
        data.extend_from_slice(&encode_lun(number).to_be_bytes());
    }
    if let Some(lun) = lun
        && let Some(pending) = lun.pending_ua.get_mut(&nexus.initiator)
    {
        *pending &= !UA_LUN_CHANGE;
    }
    Ok(send_data(&data, alloc_len, data_in))
}

/// ctl_read_capacity: the last LBA (FFFFFFFFh when it needs READ
/// CAPACITY(16)) and the block size; LBA without PMI is invalid.
fn read_capacity(lun: &Lun, cdb: &[u8], data_in: &mut [u8]) -> Result<Disposition, Sense> {
    if byte(cdb, 8) & 0x01 == 0 && cdb_u32(cdb, 2) != 0 {
        return Err(Sense::invalid_field(true, 2, None));
    }
    let last = u32::try_from(lun.be.maxlba)
        .ok()
        .filter(|&lba| lba != u32::MAX)
        .unwrap_or(u32::MAX);
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&last.to_be_bytes());
    data[4..].copy_from_slice(&lun.be.blocksize.to_be_bytes());
    Ok(send_data(&data, data.len(), data_in))
}

/// ctl_read_capacity_16: 32 bytes with the physical block exponent, the
/// lowest aligned LBA and LBPME/LBPRZ when the backend can unmap.
fn read_capacity_16(lun: &Lun, cdb: &[u8], data_in: &mut [u8]) -> Result<Disposition, Sense> {
    if byte(cdb, 14) & 0x01 != 0 && cdb_u64(cdb, 2) != 0 {
        return Err(Sense::invalid_field(true, 2, None));
    }
    let be = &lun.be;
    let mut data = [0u8; 32];
    data[..8].copy_from_slice(&be.maxlba.to_be_bytes());
    data[8..12].copy_from_slice(&be.blocksize.to_be_bytes());
    data[13] = (be.pblockexp & 0x0F) as u8;
    data[14..16].copy_from_slice(&(be.pblockoff & 0x3FFF).to_be_bytes());
    if be.flags & LUN_FLAG_UNMAP != 0 {
        data[14] |= 0x80 | 0x40; // LBPME | LBPRZ
    }
    Ok(send_data(&data, cdb_u32(cdb, 10) as usize, data_in))
}

// ctl_lba_len_flags flags (ctl_io.h).
/// Read into the initiator's buffer.
pub const CTL_LLF_READ: u32 = 0x1000_0000;
/// Write from the initiator's buffer.
pub const CTL_LLF_WRITE: u32 = 0x2000_0000;
/// Verify the medium.
pub const CTL_LLF_VERIFY: u32 = 0x4000_0000;
/// Compare with the initiator's data.
pub const CTL_LLF_COMPARE: u32 = 0x8000_0000;
/// Force unit access.
pub const CTL_LLF_FUA: u32 = 0x0400_0000;
/// Disable page out.
pub const CTL_LLF_DPO: u32 = 0x0800_0000;

// CDB bits of byte 1 (scsi_all.h / scsi_da.h).
const SRW_FUA: u8 = 0x08;
const SRW_DPO: u8 = 0x10;
const SVFY_BYTCHK: u8 = 0x02;

/// The range check of ctl_read_write and friends: LBA OUT OF RANGE with
/// INFORMATION max(lba, maxlba + 1) when the range passes the end or wraps.
fn check_range(lun: &Lun, lba: u64, blocks: u32) -> Result<(), Sense> {
    let limit = lun.be.maxlba.wrapping_add(1);
    match lba.checked_add(u64::from(blocks)) {
        Some(end) if end <= limit => Ok(()),
        _ => Err(Sense::lba_out_of_range(lba.max(limit))),
    }
}

/// data_submit with the ctl_lba_len_flags CTL filled.
fn data_submit(lba: u64, len: u32, flags: u32, total_len: u32) -> Disposition {
    Disposition::DataSubmit {
        lba,
        len,
        flags,
        total_len,
        compare_and_write: false,
    }
}

/// FUA and DPO of byte 1 as CTL_LLF flags.
fn fua_dpo(byte1: u8) -> u32 {
    let mut flags = 0;
    if byte1 & SRW_FUA != 0 {
        flags |= CTL_LLF_FUA;
    }
    if byte1 & SRW_DPO != 0 {
        flags |= CTL_LLF_DPO;
    }
    flags
}

/// ctl_read_write: READ/WRITE(6/10/12/16) and WRITE AND VERIFY(10/12/16).
fn read_write(lun: &Lun, cdb: &[u8]) -> Result<Disposition, Sense> {
    let opcode = byte(cdb, 0);
    let byte1 = byte(cdb, 1);
    let (lba, blocks, mut flags) = match opcode {
        // READ(6)/WRITE(6): 21-bit LBA, 0 blocks means 256, no FUA/DPO.
        0x08 | 0x0A => {
            let lba = u64::from(cdb_u32(cdb, 0) & 0x1F_FFFF);
            let blocks = match byte(cdb, 4) {
                0 => 256,
                n => u32::from(n),
            };
            (lba, blocks, 0)
        }
        0x28 | 0x2A => (u64::from(cdb_u32(cdb, 2)), u32::from(cdb_u16(cdb, 7)), fua_dpo(byte1)),
        0xA8 | 0xAA => (u64::from(cdb_u32(cdb, 2)), cdb_u32(cdb, 6), fua_dpo(byte1)),
        0x88 | 0x8A => (cdb_u64(cdb, 2), cdb_u32(cdb, 10), fua_dpo(byte1)),
        // WRITE AND VERIFY always forces unit access.
        0x2E => (
            u64::from(cdb_u32(cdb, 2)),
            u32::from(cdb_u16(cdb, 7)),
            CTL_LLF_FUA | (fua_dpo(byte1) & CTL_LLF_DPO),
        ),
        0xAE => (
            u64::from(cdb_u32(cdb, 2)),
            cdb_u32(cdb, 6),
            CTL_LLF_FUA | (fua_dpo(byte1) & CTL_LLF_DPO),
        ),
        _ => (
            cdb_u64(cdb, 2),
            cdb_u32(cdb, 10),
            CTL_LLF_FUA | (fua_dpo(byte1) & CTL_LLF_DPO),
        ),
    };
    check_range(lun, lba, blocks)?;
    if blocks == 0 {
        return Ok(good(0));
    }
    let is_read = matches!(opcode, 0x08 | 0x28 | 0xA8 | 0x88);
    if is_read {
        if lun.current_page_byte(SMS_CACHING_PAGE, 2) & SCP_RCD != 0 {
            flags |= CTL_LLF_FUA | CTL_LLF_DPO;
        }
        flags |= CTL_LLF_READ;
    } else {
        if lun.current_page_byte(SMS_CACHING_PAGE, 2) & SCP_WCE == 0 {
            flags |= CTL_LLF_FUA;
        }
        flags |= CTL_LLF_WRITE;
    }
    Ok(data_submit(lba, blocks, flags, blocks.wrapping_mul(lun.be.blocksize)))
}

/// ctl_cnw: COMPARE AND WRITE, the compare pass first (twice the data).
fn compare_and_write(lun: &Lun, cdb: &[u8]) -> Result<Disposition, Sense> {
    let lba = cdb_u64(cdb, 2);
    let blocks = u32::from(byte(cdb, 13));
    check_range(lun, lba, blocks)?;
    if blocks == 0 {
        return Ok(good(0));
    }
    let mut flags = CTL_LLF_COMPARE | fua_dpo(byte(cdb, 1));
    if lun.current_page_byte(SMS_CACHING_PAGE, 2) & SCP_WCE == 0 {
        flags |= CTL_LLF_FUA;
    }
    let total = 2u32.wrapping_mul(blocks).wrapping_mul(lun.be.blocksize);
    Ok(Disposition::DataSubmit {
        lba,
        len: blocks,
        flags,
        total_len: total,
        compare_and_write: true,
    })
}

/// ctl_verify: VERIFY(10/12/16); BYTCHK compares the initiator's data,
/// otherwise the backend verifies the medium with no data.
fn verify(lun: &Lun, cdb: &[u8]) -> Result<Disposition, Sense> {
    let byte1 = byte(cdb, 1);
    let (lba, blocks) = match byte(cdb, 0) {
        0x2F => (u64::from(cdb_u32(cdb, 2)), u32::from(cdb_u16(cdb, 7))),
        0xAF => (u64::from(cdb_u32(cdb, 2)), cdb_u32(cdb, 6)),
        _ => (cdb_u64(cdb, 2), cdb_u32(cdb, 10)),
    };
    check_range(lun, lba, blocks)?;
    if blocks == 0 {
        return Ok(good(0));
    }
    let flags = CTL_LLF_FUA | (fua_dpo(byte1) & CTL_LLF_DPO);
    Ok(if byte1 & SVFY_BYTCHK != 0 {
        data_submit(
            lba,
            blocks,
            CTL_LLF_COMPARE | flags,
            blocks.wrapping_mul(lun.be.blocksize),
        )
    } else {
        data_submit(lba, blocks, CTL_LLF_VERIFY | flags, 0)
    })
}

/// config_write with CTL's lba/len/flags, if any.
fn config_write(lba_len: Option<(u64, u32, u32)>) -> Disposition {
    Disposition::ConfigWrite {
        lba_len,
        write_same_cont: false,
    }
}

/// ctl_sync_cache: range-checked (without the wrap check ctl.c lacks
/// here), flags the raw byte 1.
fn sync_cache(lun: &Lun, cdb: &[u8]) -> Result<Disposition, Sense> {
    let (lba, blocks) = match byte(cdb, 0) {
        0x35 => (u64::from(cdb_u32(cdb, 2)), u32::from(cdb_u16(cdb, 7))),
        _ => (cdb_u64(cdb, 2), cdb_u32(cdb, 10)),
    };
    let limit = lun.be.maxlba.wrapping_add(1);
    if lba.wrapping_add(u64::from(blocks)) > limit {
        return Err(Sense::lba_out_of_range(lba.max(limit)));
    }
    Ok(config_write(Some((lba, blocks, u32::from(byte(cdb, 1))))))
}

// WRITE SAME byte 1 (scsi_da.h SWS_*).
const SWS_NDOB: u8 = 0x01;
const SWS_UNMAP: u8 = 0x08;
const SWS_ANCHOR: u8 = 0x10;

/// ctl_write_same: ANCHOR needs UNMAP; NUMBER OF BLOCKS 0 means to the
/// last LBA (limited by "write_same_max_lba"; beyond 2^32-1 blocks CTL
/// issues 2^31-block pieces through `CTL_FLAG_IO_CONT`); the block of data
/// comes in first unless NDOB (`moved` is what came).
fn write_same(lun: &Lun, cdb: &[u8], moved: Option<&[u8]>) -> Result<Disposition, Sense> {
    let byte1 = byte(cdb, 1);
    let ws10 = byte(cdb, 0) == 0x41;
    let (lba, mut blocks) = if ws10 {
        (u64::from(cdb_u32(cdb, 2)), u32::from(cdb_u16(cdb, 7)))
    } else {
        (cdb_u64(cdb, 2), cdb_u32(cdb, 10))
    };
    if byte1 & SWS_UNMAP == 0 && byte1 & SWS_ANCHOR != 0 {
        return Err(Sense::invalid_field(true, 1, Some(0)));
    }
    check_range(lun, lba, blocks)?;
    let mut write_same_cont = false;
    if blocks == 0 {
        let remaining = lun.be.maxlba.wrapping_add(1).wrapping_sub(lba);
        if remaining > option_number(&lun.be, "write_same_max_lba", u64::MAX) {
            return Err(Sense::invalid_field(true, if ws10 { 7 } else { 10 }, None));
        }
        match u32::try_from(remaining) {
            Ok(n) => blocks = n,
            Err(_) => {
                write_same_cont = true;
                blocks = 1 << 31;
            }
        }
    }
    if byte1 & SWS_NDOB == 0 && moved.is_none() {
        return Ok(Disposition::DataOut { len: lun.be.blocksize });
    }
    Ok(Disposition::ConfigWrite {
        lba_len: Some((lba, blocks, u32::from(byte1))),
        write_same_cont,
    })
}

/// Bytes of an UNMAP parameter list header and of one block descriptor.
const UNMAP_HEADER_LEN: usize = 8;
const UNMAP_DESC_LEN: usize = 16;

/// ctl_unmap: the parameter list comes in first (`moved`: the bytes that
/// came); then the list is checked (a bad header is INVALID FIELD IN
/// PARAMETER LIST without a field pointer), each descriptor's range too,
/// and trailing descriptors of no blocks are dropped.
fn unmap(lun: &Lun, cdb: &[u8], moved: Option<&[u8]>) -> Result<Disposition, Sense> {
    let Some(data) = moved else {
        return Ok(Disposition::DataOut {
            len: u32::from(cdb_u16(cdb, 7)),
        });
    };
    let len = data.len();
    let list_len = usize::from(cdb_u16(data, 0));
    let desc_len = usize::from(cdb_u16(data, 2));
    if len < UNMAP_HEADER_LEN
        || len < list_len + 2
        || len < desc_len + UNMAP_HEADER_LEN
        || desc_len % UNMAP_DESC_LEN != 0
    {
        let sense = Sense {
            sks: None,
            ..Sense::invalid_field(false, 0, None)
        };
        return Ok(Disposition::Done(sense.fixed_outcome()));
    }
    let limit = lun.be.maxlba.wrapping_add(1);
    let descriptors = &data[UNMAP_HEADER_LEN..UNMAP_HEADER_LEN + desc_len];
    let mut nonzero_end = 0;
    for (index, desc) in descriptors.chunks_exact(UNMAP_DESC_LEN).enumerate() {
        let lba = cdb_u64(desc, 0);
        let blocks = cdb_u32(desc, 8);
        let end = lba.wrapping_add(u64::from(blocks));
        if end > limit || end < lba {
            let sense = Sense::lba_out_of_range(lba.max(limit));
            return Ok(Disposition::DoneKeepingData(sense.fixed_outcome()));
        }
        if blocks != 0 {
            nonzero_end = index + 1;
        }
    }
    if nonzero_end == 0 {
        return Ok(good(0));
    }
    Ok(Disposition::Unmap {
        offset: UNMAP_HEADER_LEN as u32,
        len: (nonzero_end * UNMAP_DESC_LEN) as u32,
        flags: u32::from(byte(cdb, 1)),
    })
}

// START STOP UNIT byte 4 (scsi_all.h SSS_*).
const SSS_START: u8 = 0x01;
const SSS_LOEJ: u8 = 0x02;
const SSS_PC_MASK: u8 = 0xF0;

/// ctl_start_stop: LOEJ needs a removable LUN; ejecting while a PREVENT is
/// in effect is MEDIUM REMOVAL PREVENTED.
fn start_stop(lun: &Lun, cdb: &[u8]) -> Result<Disposition, Sense> {
    let how = byte(cdb, 4);
    if how & SSS_PC_MASK == 0 {
        if how & SSS_LOEJ != 0 && !lun.removable {
            return Err(Sense::invalid_field(true, 4, Some(1)));
        }
        if how & SSS_START == 0 && how & SSS_LOEJ != 0 && !lun.prevent.is_empty() {
            let key = if lun.no_media {
                KEY_NOT_READY
            } else {
                KEY_ILLEGAL_REQUEST
            };
            return Err(Sense::new(key, 0x53, 0x02));
        }
    }
    Ok(config_write(None))
}

/// ctl_prevent_allow: only for removable LUNs; records the initiator's
/// PREVENT before the backend sees the command.
fn prevent_allow(lun: &mut Lun, nexus: &Nexus<'_>, cdb: &[u8]) -> Result<Disposition, Sense> {
    if !lun.removable {
        return Err(Sense::invalid_opcode());
    }
    if byte(cdb, 4) & 0x01 != 0 {
        lun.prevent.insert(nexus.initiator);
    } else {
        lun.prevent.remove(&nexus.initiator);
    }
    Ok(config_write(None))
}

/// Bytes of GET LBA STATUS parameter data CTL allocates: the 8-byte
/// header and one 16-byte descriptor.
const LBA_STATUS_LEN: usize = 8 + 16;

/// ctl_get_lba_status: config_read with a buffer of one descriptor that
/// CTL fills for a backend that cannot tell (from the LBA to the end,
/// mapped or unknown), of which min(buffer, allocation length) bytes go to
/// the initiator.
fn get_lba_status(lun: &Lun, cdb: &[u8]) -> Result<Disposition, Sense> {
    let lba = cdb_u64(cdb, 2);
    let alloc_len = cdb_u32(cdb, 10);
    if lba > lun.be.maxlba {
        return Err(Sense::lba_out_of_range(lba));
    }
    let mut data = vec![0u8; LBA_STATUS_LEN];
    data[..4].copy_from_slice(&(4 + 16u32).to_be_bytes());
    data[8..16].copy_from_slice(&lba.to_be_bytes());
    let blocks = lun.be.maxlba.wrapping_add(1).wrapping_sub(lba).min(u64::from(u32::MAX));
    data[16..20].copy_from_slice(&(blocks as u32).to_be_bytes());
    Ok(Disposition::ConfigRead {
        lba,
        len: LBA_STATUS_LEN as u32,
        data,
        data_len: (LBA_STATUS_LEN as u32).min(alloc_len),
    })
}

// Mode page codes and bits (scsi_all.h, scsi_da.h).
const SMS_RW_ERROR_RECOVERY_PAGE: u8 = 0x01;
const SMS_VERIFY_ERROR_RECOVERY_PAGE: u8 = 0x07;
const SMS_CACHING_PAGE: u8 = 0x08;
const SMS_CONTROL_PAGE: u8 = 0x0A;
const SMS_INFO_EXCEPTIONS_PAGE: u8 = 0x1C;
const SMS_CDDVD_CAPS_PAGE: u8 = 0x2A;
const SMS_ALL_PAGES_PAGE: u8 = 0x3F;
const SMS_SUBPAGE_ALL: u8 = 0xFF;
const SMPH_SPF: u8 = 0x40;
const SCP_WCE: u8 = 0x04;
const SCP_RCD: u8 = 0x01;
const SCP_SWP: u8 = 0x08;

/// One mode page of a LUN in the four page controls CTL keeps: current,
/// changeable, default and saved (CTL_PAGE_*).
#[derive(Clone, Debug)]
struct ModePage {
    /// The page code (without SPF).
    code: u8,
    subpage: u8,
    /// Indexed by the MODE SENSE page control field.
    data: [Vec<u8>; 4],
}

impl ModePage {
    /// A page whose current and saved values are `saved` and whose default
    /// is `default`.
    fn new(default: Vec<u8>, changeable: Vec<u8>, saved: Vec<u8>) -> ModePage {
        let code = default.first().copied().unwrap_or(0) & 0x3F;
        let subpage = if default.first().copied().unwrap_or(0) & SMPH_SPF != 0 {
            default[1]
        } else {
            0
        };
        ModePage {
            code,
            subpage,
            data: [saved.clone(), changeable, default, saved],
        }
    }
}

/// A page_0 mode page: code, length, then `body`.
fn page0(code: u8, body: &[u8]) -> Vec<u8> {
    let mut page = vec![code, body.len() as u8];
    page.extend_from_slice(body);
    page
}

/// A sub-page mode page: code | SPF, subpage, 2-byte length, `body`.
fn subpage(code: u8, subpage: u8, body: &[u8]) -> Vec<u8> {
    let mut page = vec![code | SMPH_SPF, subpage];
    page.extend_from_slice(&(body.len() as u16).to_be_bytes());
    page.extend_from_slice(body);
    page
}

/// ctl_init_page_index: the page_index_template entries for the device
/// type with ctl.c's templates and the options that change saved values
/// ("writecache", "readcache", "reordering", the thresholds).
fn init_mode_pages(be: &BackendLun) -> Vec<ModePage> {
    let direct = be.lun_type == T_DIRECT;
    let cdrom = be.lun_type == T_CDROM;
    let mut pages = Vec::new();
    if direct || cdrom {
        // Read-write error recovery: AWRE | ARRE, LBPERE; PER changeable.
        let default = page0(SMS_RW_ERROR_RECOVERY_PAGE, &[0xC0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0]);
        let changeable = page0(SMS_RW_ERROR_RECOVERY_PAGE, &[0x04, 0, 0, 0, 0, 0x80, 0, 0, 0, 0]);
        pages.push(ModePage::new(default.clone(), changeable, default));
        let default = page0(SMS_VERIFY_ERROR_RECOVERY_PAGE, &[0; 10]);
        let changeable = page0(SMS_VERIFY_ERROR_RECOVERY_PAGE, &[0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        pages.push(ModePage::new(default.clone(), changeable, default));
        // Caching: DISC | WCE, prefetch limits FFFFh.
        let mut body = [0u8; 18];
        body[0] = 0x10 | SCP_WCE;
        body[2..4].copy_from_slice(&[0xFF, 0xFF]);
        body[6..10].copy_from_slice(&[0xFF; 4]);
        let default = page0(SMS_CACHING_PAGE, &body);
        let mut saved = default.clone();
        if be.option("writecache") == Some("off") {
            saved[2] &= !SCP_WCE;
        }
        if be.option("readcache") == Some("off") {
            saved[2] |= SCP_RCD;
        }
        let mut changeable = [0u8; 18];
        changeable[0] = SCP_WCE | SCP_RCD;
        pages.push(ModePage::new(default, page0(SMS_CACHING_PAGE, &changeable), saved));
    }
    // Control: restricted reordering, TAS; D_SENSE, algorithm, NUAR and SWP
    // changeable; "reordering=unrestricted" sets the algorithm to 1.
    let default = page0(SMS_CONTROL_PAGE, &[0, 0x00, 0, 0x40, 0, 0, 0, 0, 0, 0]);
    let mut saved = default.clone();
    if be.option("reordering") == Some("unrestricted") {
        saved[3] = (saved[3] & !0xF0) | 0x10;
    }
    let changeable = page0(SMS_CONTROL_PAGE, &[0x04, 0xF0 | 0x08, SCP_SWP, 0, 0, 0, 0, 0, 0, 0]);
    pages.push(ModePage::new(default, changeable, saved));
    // Control extension: MAXIMUM SENSE DATA LENGTH changeable.
    let default = subpage(SMS_CONTROL_PAGE, 0x01, &[0; 28]);
    let mut changeable = [0u8; 28];
    changeable[2] = 0xFF;
    pages.push(ModePage::new(
        default.clone(),
        subpage(SMS_CONTROL_PAGE, 0x01, &changeable),
        default,
    ));
    // Informational exceptions: EWASC, MRIE 0, REPORT COUNT 1.
    let default = page0(SMS_INFO_EXCEPTIONS_PAGE, &[0x10, 0x00, 0, 0, 0, 0, 0, 0, 0, 1]);
    let changeable = page0(
        SMS_INFO_EXCEPTIONS_PAGE,
        &[0x1D, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    );
    pages.push(ModePage::new(default.clone(), changeable, default));
    if direct {
        pages.push(lbp_mode_page(be));
    }
    if cdrom {
        let mut body = [0u8; 24];
        body[..5].copy_from_slice(&[0x3F, 0x00, 0xF0, 0x00, 0x29]);
        body[10] = 0x08; // buffer size 2048 KB
        pages.push(ModePage::new(
            page0(SMS_CDDVD_CAPS_PAGE, &body),
            page0(SMS_CDDVD_CAPS_PAGE, &[0; 24]),
            page0(SMS_CDDVD_CAPS_PAGE, &body),
        ));
    }
    pages
}

/// The logical block provisioning mode page (1Ch/02h) with the
/// threshold options ("avail-threshold", "used-threshold",
/// "pool-avail-threshold", "pool-used-threshold", in bytes).
fn lbp_mode_page(be: &BackendLun) -> ModePage {
    const RESOURCES: [u8; 4] = [0x01, 0x02, 0xF1, 0xF2];
    const THRESHOLDS: [(&str, u8); 4] = [
        ("avail-threshold", 0x02),
        ("used-threshold", 0x01),
        ("pool-avail-threshold", 0x02),
        ("pool-used-threshold", 0x01),
    ];
    let mut default = [0u8; 44];
    for (descr, resource) in default[12..].chunks_exact_mut(8).zip(RESOURCES) {
        descr[1] = resource;
    }
    let mut saved = default;
    for (descr, (name, arming)) in saved[12..].chunks_exact_mut(8).zip(THRESHOLDS) {
        if let Some(bytes) = be.option(name).and_then(expand_number) {
            descr[0] |= 0x80 | arming; // SLBPPD_ENABLED
            let blocks = bytes
                / if be.blocksize != 0 {
                    u64::from(be.blocksize)
                } else {
                    512
                };
            descr[4..8].copy_from_slice(&((blocks >> CTL_LBP_EXPONENT) as u32).to_be_bytes());
        }
    }
    let mut changeable = [0u8; 44];
    changeable[0] = 0x01; // SLBPP_SITUA
    let page = |body: &[u8]| subpage(SMS_INFO_EXCEPTIONS_PAGE, 0x02, body);
    ModePage::new(page(&default), page(&changeable), page(&saved))
}

impl Lun {
    /// A byte of a page_0 mode page's current value; 0 when the device
    /// type has no such page (CTL's zeroed `mode_pages`).
    fn current_page_byte(&self, code: u8, at: usize) -> u8 {
        self.mode_pages
            .iter()
            .find(|page| page.code == code && page.subpage == 0)
            .and_then(|page| page.data[0].get(at).copied())
            .unwrap_or(0)
    }
}

/// ctl_mode_sense: header, block descriptor (unless DBD) and the pages
/// matching the page code and subpage, for the requested page control.
fn mode_sense(lun: &Lun, cdb: &[u8], data_in: &mut [u8]) -> Result<Disposition, Sense> {
    let ten = byte(cdb, 0) == 0x5A;
    let dbd = byte(cdb, 1) & 0x08 != 0;
    let direct = lun.be.lun_type == T_DIRECT;
    let long_lba = ten && !dbd && direct && byte(cdb, 1) & 0x10 != 0;
    let bd_len = match (dbd, long_lba) {
        (true, _) => 0,
        (false, true) => 16,
        (false, false) => 8,
    };
    let header_len = if ten { 8 } else { 4 };
    let pc = usize::from(byte(cdb, 2) >> 6);
    let page_code = byte(cdb, 2) & 0x3F;
    let subpage = byte(cdb, 3);
    let alloc_len = if ten {
        usize::from(cdb_u16(cdb, 7))
    } else {
        usize::from(byte(cdb, 4))
    };
    let selected: Vec<&ModePage> = if page_code == SMS_ALL_PAGES_PAGE {
        if subpage != 0 && subpage != SMS_SUBPAGE_ALL {
            return Err(Sense::invalid_field(true, 3, None));
        }
        lun.mode_pages
            .iter()
            .filter(|page| page.subpage == 0 || subpage == SMS_SUBPAGE_ALL)
            .collect()
    } else {
        let pages: Vec<&ModePage> = lun
            .mode_pages
            .iter()
            .filter(|page| page.code == page_code && (page.subpage == subpage || subpage == SMS_SUBPAGE_ALL))
            .collect();
        if pages.is_empty() {
            return Err(Sense::invalid_field(true, 2, Some(5)));
        }
        pages
    };
    let mut data = vec![0u8; header_len + bd_len];
    for page in selected {
        data.extend_from_slice(&page.data[pc]);
    }
    let total = data.len();
    let mut dev_specific = 0;
    if direct {
        dev_specific = 0x10; // DPOFUA
        if lun.be.flags & LUN_FLAG_READONLY != 0 || lun.current_page_byte(SMS_CONTROL_PAGE, 4) & SCP_SWP != 0 {
            dev_specific |= 0x80; // WP
        }
    }
    if ten {
        data[..2].copy_from_slice(&(total.saturating_sub(2).min(65533) as u16).to_be_bytes());
        data[3] = dev_specific;
        data[4] = u8::from(long_lba); // LONGLBA
        data[6..8].copy_from_slice(&(bd_len as u16).to_be_bytes());
    } else {
        data[0] = total.saturating_sub(1).min(254) as u8;
        data[2] = dev_specific;
        data[3] = bd_len as u8;
    }
    // The block descriptor: a disk's block count and size, zeros otherwise.
    if bd_len > 0 && direct {
        let blocks = lun.be.maxlba.wrapping_add(1);
        let descriptor = &mut data[header_len..];
        if long_lba {
            if lun.be.maxlba != 0 {
                descriptor[..8].copy_from_slice(&blocks.to_be_bytes());
            }
            descriptor[12..16].copy_from_slice(&lun.be.blocksize.to_be_bytes());
        } else {
            if lun.be.maxlba != 0 {
                descriptor[..4].copy_from_slice(&(blocks.min(u64::from(u32::MAX)) as u32).to_be_bytes());
            }
            descriptor[5..8].copy_from_slice(&lun.be.blocksize.to_be_bytes()[1..]);
        }
    }
    Ok(send_data(&data, alloc_len, data_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> Port {
        Port {
            targ_port: 1,
            port_name: "iqn.2026-11.org.ctlpass:sim".into(),
            initiator_name: "iqn.2026-11.org.ctlpass:initiator".into(),
        }
    }

    fn padded<const N: usize>(text: &str) -> [u8; N] {
        let mut field = [0u8; N];
        field[..text.len()].copy_from_slice(text.as_bytes());
        field
    }

    fn disk_backend() -> BackendLun {
        let options = [
            ("vendor", "ATA"),
            ("product", "Samsung SSD 870"),
            ("revision", "2B6Q"),
            ("naa", "0x5002538f4190d3f0"),
            ("eui", "0011223344556677"),
            ("unmap_max_lba", "2097152"),
            ("unmap_max_descr", "256"),
        ];
        BackendLun {
            lun_type: T_DIRECT,
            flags: LUN_FLAG_SERIAL_NUM | LUN_FLAG_DEVID | LUN_FLAG_UNMAP | LUN_FLAG_PRIMARY,
            maxlba: 1_953_525_167,
            blocksize: 512,
            pblockexp: 3,
            opttxferlen: 128,
            serial_num: *b"Z1Z3ABCD        ",
            device_id: padded("Z1Z3ABCD"),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..BackendLun::default()
        }
    }

    fn cd_backend() -> BackendLun {
        BackendLun {
            lun_type: T_CDROM,
            flags: LUN_FLAG_PRIMARY,
            maxlba: 1000,
            blocksize: 2048,
            ..BackendLun::default()
        }
    }

    /// A LUN whose power-on UA initiators 0 and 1 already consumed.
    fn ready(be: &BackendLun) -> Lun {
        let mut lun = Lun::add(0, be).unwrap();
        for initiator in 0..2 {
            run_as(Some(&mut lun), initiator, &[0x00, 0, 0, 0, 0, 0], 0);
        }
        lun
    }

    fn run_as(lun: Option<&mut Lun>, initiator: u32, cdb: &[u8], buffer: usize) -> (Disposition, Vec<u8>) {
        let mut data = vec![0u8; buffer];
        let disposition = dispatch(lun, &port(), initiator, &[0, 3, 7], cdb, &mut data);
        if let Disposition::Done(outcome) = &disposition {
            data.truncate(outcome.transferred);
        }
        (disposition, data)
    }

    fn run(lun: &mut Lun, cdb: &[u8], buffer: usize) -> (Disposition, Vec<u8>) {
        run_as(Some(lun), 0, cdb, buffer)
    }

    /// The data of a GOOD completion.
    fn data(lun: &mut Lun, cdb: &[u8]) -> Vec<u8> {
        let (disposition, data) = run(lun, cdb, 4096);
        assert!(
            matches!(&disposition, Disposition::Done(o) if o.status == GOOD),
            "{disposition:?}"
        );
        data
    }

    /// (key, ASC, ASCQ) of a CHECK CONDITION.
    fn sense(disposition: &Disposition) -> (u8, u8, u8) {
        match disposition {
            Disposition::Done(o) if o.status == CHECK_CONDITION => {
                assert_eq!(o.sense.len(), 18);
                assert_eq!((o.sense[0] & 0x7F, o.sense[7]), (0x70, 10));
                (o.sense[2], o.sense[12], o.sense[13])
            }
            other => panic!("no CHECK CONDITION: {other:?}"),
        }
    }

    fn full_sense(disposition: &Disposition) -> Vec<u8> {
        match disposition {
            Disposition::Done(o) => o.sense.clone(),
            other => panic!("not done: {other:?}"),
        }
    }

    fn tur(lun: &mut Lun) -> Disposition {
        run(lun, &[0x00, 0, 0, 0, 0, 0], 0).0
    }

    fn vpd(lun: &mut Lun, page: u8) -> Vec<u8> {
        data(lun, &[0x12, 0x01, page, 0x10, 0x00, 0])
    }

    #[test]
    fn standard_inquiry_bytes() {
        let mut lun = ready(&disk_backend());
        let inq = data(&mut lun, &[0x12, 0, 0, 0, 0xFF, 0]);
        assert_eq!(inq.len(), 96);
        assert_eq!(&inq[..8], &[0x00, 0x00, 0x07, 0x12, 91, 0x18, 0x10, 0x02]);
        assert_eq!(&inq[8..36], b"ATA     Samsung SSD 870 2B6Q");
        assert_eq!(&inq[58..66], &[0x00, 0xC0, 0x05, 0xC0, 0x09, 0x60, 0x06, 0x00]);
        assert!(inq[36..58].iter().chain(&inq[66..]).all(|&b| b == 0));
        assert_eq!(data(&mut lun, &[0x12, 0, 0, 0, 36, 0]), inq[..36]);
        assert_eq!(run(&mut lun, &[0x12, 0, 0, 0, 0xFF, 0], 5).1, inq[..5]);
        // A page code without EVPD is invalid (byte 2).
        let (disposition, _) = run(&mut lun, &[0x12, 0, 0x80, 0, 0xFF, 0], 255);
        assert_eq!(sense(&disposition), (0x05, 0x24, 0x00));
        assert_eq!(&full_sense(&disposition)[15..18], &[0xC0, 0x00, 0x02]);
    }

    #[test]
    fn default_inquiry_strings() {
        let be = BackendLun {
            flags: LUN_FLAG_PRIMARY,
            ..BackendLun::default()
        };
        let mut lun = ready(&be);
        assert_eq!(
            &data(&mut lun, &[0x12, 0, 0, 0, 36, 0])[8..36],
            b"FREEBSD CTLDISK         0001"
        );
        let be = BackendLun {
            lun_type: T_PROCESSOR,
            flags: LUN_FLAG_PRIMARY,
            ..BackendLun::default()
        };
        let mut lun = ready(&be);
        let inq = data(&mut lun, &[0x12, 0, 0, 0, 96, 0]);
        assert_eq!(
            (inq[0], &inq[16..32], &inq[64..66]),
            (0x03, &b"CTLPROCESSOR    "[..], &[0u8, 0][..])
        );
    }

    #[test]
    fn supported_vpd_pages() {
        let mut lun = ready(&disk_backend());
        let page = vpd(&mut lun, 0x00);
        assert_eq!(page.len(), 44);
        assert_eq!(
            &page[..15],
            &[
                0, 0, 0, 11, 0x00, 0x80, 0x83, 0x86, 0x87, 0x88, 0x8F, 0x92, 0xB0, 0xB1, 0xB2
            ]
        );
        assert!(page[15..].iter().all(|&b| b == 0));
    }

    #[test]
    fn serial_number_page() {
        let mut lun = ready(&disk_backend());
        let page = vpd(&mut lun, 0x80);
        assert_eq!(&page[..4], &[0x00, 0x80, 0x00, 16]);
        assert_eq!(&page[4..], b"Z1Z3ABCD        ");
    }

    #[test]
    fn device_identification_page() {
        let mut lun = ready(&disk_backend());
        let page = vpd(&mut lun, 0x83);
        assert_eq!(&page[..2], &[0x00, 0x83]);
        assert_eq!(usize::from(u16::from_be_bytes([page[2], page[3]])), page.len() - 4);
        let mut descriptors = Vec::new();
        let mut rest = &page[4..];
        while !rest.is_empty() {
            let len = 4 + usize::from(rest[3]);
            descriptors.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        let mut t10 = vec![0x02, 0x81, 0x00, 24];
        t10.extend_from_slice(b"ATA     Z1Z3ABCD");
        t10.extend_from_slice(&[0; 8]);
        let mut port_name = vec![0x53, 0x98, 0x00, 40];
        port_name.extend_from_slice(b"iqn.2026-11.org.ctlpass:sim,t,0x0001");
        port_name.extend_from_slice(&[0; 4]);
        let mut target = vec![0x53, 0xA8, 0x00, 28];
        target.extend_from_slice(b"iqn.2026-11.org.ctlpass:sim\0");
        let expected = vec![
            t10,
            vec![0x01, 0x82, 0x00, 8, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77],
            vec![0x01, 0x83, 0x00, 8, 0x50, 0x02, 0x53, 0x8f, 0x41, 0x90, 0xd3, 0xf0],
            port_name,
            vec![0x51, 0x94, 0x00, 4, 0, 0, 0, 1],
            vec![0x51, 0x95, 0x00, 4, 0, 0, 0, 1],
            target,
        ];
        assert_eq!(descriptors, expected);
    }

    #[test]
    fn designator_lengths() {
        let mut be = disk_backend();
        be.options.push(("eui".into(), "0x00112233445566778899".into()));
        be.options
            .push(("naa".into(), "6001405abcdef0123456789abcdef012".into()));
        be.options
            .push(("uuid".into(), "12345678-9abc-def0-1234-56789abcdef0".into()));
        be.options.push(("scsiname".into(), "eui.0011".into()));
        be.device_id = [b' '; 64];
        let lun = Lun::add(0, &be).unwrap();
        let devid = lun.lun_devid();
        // T10: vendor + the whole 64-byte space-padded device id.
        assert_eq!(&devid[..4], &[0x02, 0x81, 0x00, 72]);
        let rest = &devid[76..];
        assert_eq!(
            &rest[..16],
            &[
                0x03, 0x88, 0x00, 12, b'e', b'u', b'i', b'.', b'0', b'0', b'1', b'1', 0, 0, 0, 0
            ]
        );
        let rest = &rest[16..];
        assert_eq!(&rest[..4], &[0x01, 0x82, 0x00, 12]);
        let rest = &rest[16..];
        assert_eq!(&rest[..6], &[0x01, 0x83, 0x00, 16, 0x60, 0x01]);
        let rest = &rest[20..];
        assert_eq!(&rest[..8], &[0x01, 0x8A, 0x00, 18, 0x10, 0x00, 0x12, 0x34]);
        assert_eq!(rest.len(), 22);
        assert_eq!(hex2bin(" 0xAB-cd", 4), (vec![0xAB, 0xCD, 0, 0], 2));
        assert_eq!(hex2bin("abc", 4), (vec![0xAB, 0xC0, 0, 0], 2));
    }

    #[test]
    fn block_limits_and_provisioning_pages() {
        let mut lun = ready(&disk_backend());
        let page = vpd(&mut lun, 0xB0);
        assert_eq!(page.len(), 64);
        assert_eq!(&page[..8], &[0x00, 0xB0, 0x00, 0x3C, 0x00, 0xFF, 0x00, 0x00]);
        assert_eq!(&page[8..16], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 128]);
        assert_eq!(&page[20..28], &[0x00, 0x20, 0x00, 0x00, 0, 0, 1, 0]);
        assert_eq!(&page[28..36], &[0; 8]);
        assert_eq!(&page[36..44], &[0xFF; 8]);
        assert!(page[44..].iter().all(|&b| b == 0));
        assert_eq!(vpd(&mut lun, 0xB2), vec![0x00, 0xB2, 0x00, 0x04, 11, 0xE6, 0x02, 0x00]);
        let bdc = vpd(&mut lun, 0xB1);
        assert_eq!(&bdc[..9], &[0x00, 0xB1, 0x00, 0x3C, 0x00, 0x01, 0x00, 0x00, 0x07]);

        let mut be = disk_backend();
        be.flags &= !LUN_FLAG_UNMAP;
        be.ublockexp = 3;
        be.options.extend([
            ("write_same_max_lba".into(), "1k".into()),
            ("rpm".into(), "7200".into()),
        ]);
        be.options.push(("formfactor".into(), "0x13".into()));
        let mut lun = ready(&be);
        let page = vpd(&mut lun, 0xB0);
        assert_eq!(page[4], 0x01, "WSNZ");
        assert_eq!(&page[20..36], &[0; 16]);
        assert_eq!(&page[36..44], &1024u64.to_be_bytes());
        assert_eq!(vpd(&mut lun, 0xB2), vec![0x00, 0xB2, 0x00, 0x04, 11, 0, 0, 0]);
        assert_eq!(&vpd(&mut lun, 0xB1)[4..8], &[0x1C, 0x20, 0x00, 0x03]);
    }

    #[test]
    fn other_vpd_pages() {
        let mut lun = ready(&disk_backend());
        let eid = vpd(&mut lun, 0x86);
        assert_eq!(eid.len(), 64);
        assert_eq!(&eid[..9], &[0x00, 0x86, 0x00, 60, 0x00, 0x07, 0x01, 0x01, 0x08]);
        assert_eq!(vpd(&mut lun, 0x87), vec![0x00, 0x87, 0x00, 4, 0x3F, 0xFF, 0x00, 0x00]);
        let ports = vpd(&mut lun, 0x88);
        assert_eq!(
            &ports[..16],
            &[0x00, 0x88, 0x00, 56, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 44]
        );
        assert_eq!(&ports[16..20], &[0x53, 0x98, 0x00, 40]);
        let tpc = vpd(&mut lun, 0x8F);
        assert_eq!(tpc.len(), 380);
        assert_eq!(&tpc[..8], &[0x00, 0x8F, 0x01, 0x78, 0x00, 0x00, 0x00, 0x20]);
        let mut types = Vec::new();
        let mut rest = &tpc[4..];
        while rest.len() >= 4 {
            types.push(u16::from_be_bytes([rest[0], rest[1]]));
            rest = &rest[4 + usize::from(u16::from_be_bytes([rest[2], rest[3]]))..];
        }
        assert_eq!(
            types,
            vec![0x0000, 0x0001, 0x0004, 0x0008, 0x000C, 0x0106, 0x0108, 0x8001]
        );
        assert_eq!(&tpc[40..46], &[0x00, 0x01, 0x00, 16, 15, 0x83]);
        let sfs = vpd(&mut lun, 0x92);
        assert_eq!(
            sfs,
            vec![0x00, 0x92, 0x00, 12, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 1, 3, 0, 0]
        );
        let (disposition, _) = run(&mut lun, &[0x12, 0x01, 0xC0, 0, 255, 0], 255);
        assert_eq!(sense(&disposition), (0x05, 0x24, 0x00));
    }

    #[test]
    fn cd_lun() {
        let mut lun = ready(&cd_backend());
        let inq = data(&mut lun, &[0x12, 0, 0, 0, 96, 0]);
        assert_eq!((inq[0], inq[1]), (0x05, 0x80));
        assert_eq!(&inq[16..32], b"CTLCDROM        ");
        assert_eq!(&inq[64..66], &[0x04, 0xE0]);
        assert_eq!(
            &vpd(&mut lun, 0x00)[3..12],
            &[8, 0x00, 0x80, 0x83, 0x86, 0x87, 0x88, 0x8F, 0x92]
        );
        for page in [0xB0, 0xB1, 0xB2] {
            let (disposition, _) = run(&mut lun, &[0x12, 0x01, page, 0, 255, 0], 255);
            assert_eq!(sense(&disposition), (0x05, 0x24, 0x00));
        }
        assert_eq!(
            data(&mut lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            vec![0, 0, 0x03, 0xE8, 0, 0, 0x08, 0]
        );
        // WRITE(10) is not for CD LUNs.
        let (disposition, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x20, 0x00));
    }

    #[test]
    fn unsupported_device_type() {
        let be = BackendLun {
            lun_type: 0x01,
            ..BackendLun::default()
        };
        assert_eq!(Lun::add(0, &be).err(), Some(EINVAL));
        assert_eq!(Lun::add(9, &disk_backend()).map(|lun| lun.id()).ok(), Some(9));
    }

    #[test]
    fn power_on_unit_attention() {
        let mut lun = Lun::add(0, &disk_backend()).unwrap();
        // INQUIRY does not report it.
        data(&mut lun, &[0x12, 0, 0, 0, 96, 0]);
        assert_eq!(sense(&tur(&mut lun)), (0x06, 0x29, 0x01));
        assert_eq!(tur(&mut lun), good(0));
        // Another initiator still has its own.
        assert_eq!(
            sense(&run_as(Some(&mut lun), 5, &[0, 0, 0, 0, 0, 0], 0).0),
            (0x06, 0x29, 0x01)
        );
    }

    #[test]
    fn capacity_change_unit_attention() {
        let mut lun = ready(&disk_backend());
        let mut be = disk_backend();
        be.maxlba = 99;
        lun.capacity_changed(&be);
        assert_eq!(lun.backend().maxlba, 99);
        for initiator in 0..2 {
            let (disposition, _) = run_as(Some(&mut lun), initiator, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
            assert_eq!(sense(&disposition), (0x06, 0x2A, 0x09));
            let (disposition, data) = run_as(Some(&mut lun), initiator, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
            assert_eq!(disposition, good(8));
            assert_eq!(data, vec![0, 0, 0, 99, 0, 0, 2, 0]);
        }
    }

    #[test]
    fn medium_states() {
        let mut lun = ready(&disk_backend());
        lun.stop();
        assert_eq!(sense(&tur(&mut lun)), (0x02, 0x04, 0x02));
        // INQUIRY and MODE SENSE-class commands are OK without media.
        data(&mut lun, &[0x12, 0, 0, 0, 96, 0]);
        lun.start();
        assert_eq!(tur(&mut lun), good(0));
        lun.no_media();
        assert_eq!(sense(&tur(&mut lun)), (0x02, 0x04, 0x03));
        lun.has_media();
        // Not removable: no MEDIUM CHANGE.
        assert_eq!(tur(&mut lun), good(0));

        let mut cd = ready(&cd_backend());
        cd.no_media();
        assert_eq!(sense(&tur(&mut cd)), (0x02, 0x3A, 0x01));
        cd.ejected();
        assert_eq!(sense(&tur(&mut cd)), (0x02, 0x3A, 0x02));
        cd.has_media();
        assert_eq!(sense(&tur(&mut cd)), (0x06, 0x28, 0x00));
        assert_eq!(tur(&mut cd), good(0));
        let be = BackendLun {
            flags: LUN_FLAG_PRIMARY | LUN_FLAG_STOPPED,
            ..disk_backend()
        };
        let mut stopped = ready(&be);
        assert_eq!(sense(&tur(&mut stopped)), (0x02, 0x04, 0x02));
        let mut be = disk_backend();
        be.options.push(("removable".into(), "on".into()));
        let mut removable = ready(&be);
        assert_eq!(data(&mut removable, &[0x12, 0, 0, 0, 2, 0]), vec![0x00, 0x80]);
    }

    #[test]
    fn read_only_lun() {
        let mut be = disk_backend();
        be.flags |= LUN_FLAG_READONLY;
        let mut lun = ready(&be);
        let (disposition, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0);
        assert_eq!(sense(&disposition), (0x07, 0x27, 0x01));
        let (disposition, _) = run(&mut lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(sense(&disposition), (0x07, 0x27, 0x01));
        assert!(matches!(
            run(&mut lun, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0).0,
            Disposition::DataSubmit { .. }
        ));
    }

    #[test]
    fn lba_out_of_range() {
        let mut lun = ready(&disk_backend());
        // 0x80000000 > maxlba: INFORMATION is the LBA.
        let (disposition, _) = run(&mut lun, &[0x28, 0, 0x80, 0, 0, 0, 0, 0, 1, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x21, 0x00));
        assert_eq!(&full_sense(&disposition)[..7], &[0xF0, 0, 0x05, 0x80, 0, 0, 0]);
        // Starting inside, ending past the end: INFORMATION is maxlba + 1.
        let (disposition, _) = run(&mut lun, &[0x28, 0, 0x74, 0x70, 0x6D, 0xAF, 0, 0, 2, 0], 0);
        assert_eq!(&full_sense(&disposition)[3..7], &[0x74, 0x70, 0x6D, 0xB0]);
        // Past 32 bits: no INFORMATION in fixed format.
        let (disposition, _) = run(&mut lun, &[0x88, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 0);
        assert_eq!(full_sense(&disposition)[0], 0x70);
        let (disposition, _) = run(&mut lun, &[0x9E, 0x12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x21, 0x00));
    }

    #[test]
    fn read_write_submissions() {
        let mut lun = ready(&disk_backend());
        let (disposition, _) = run(&mut lun, &[0x28, 0x08, 0, 0, 0x10, 0, 0, 0, 8, 0], 0);
        let expected = Disposition::DataSubmit {
            lba: 0x1000,
            len: 8,
            flags: CTL_LLF_READ | CTL_LLF_FUA,
            total_len: 4096,
            compare_and_write: false,
        };
        assert_eq!(disposition, expected);
        let (disposition, _) = run(&mut lun, &[0x0A, 0x01, 0x02, 0x03, 0, 0], 0);
        let expected = Disposition::DataSubmit {
            lba: 0x10203,
            len: 256,
            flags: CTL_LLF_WRITE,
            total_len: 131072,
            compare_and_write: false,
        };
        assert_eq!(disposition, expected);
        let (disposition, _) = run(&mut lun, &[0xAE, 0x10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0], 0);
        let flags = CTL_LLF_WRITE | CTL_LLF_FUA | CTL_LLF_DPO;
        assert_eq!(
            disposition,
            Disposition::DataSubmit {
                lba: 1,
                len: 2,
                flags,
                total_len: 1024,
                compare_and_write: false,
            }
        );
        // Zero blocks: CTL completes it.
        assert_eq!(run(&mut lun, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0).0, good(0));
        let (disposition, _) = run(&mut lun, &[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0], 0);
        assert_eq!(
            disposition,
            Disposition::DataSubmit {
                lba: 5,
                len: 1,
                flags: CTL_LLF_COMPARE,
                total_len: 1024,
                compare_and_write: true,
            }
        );
        let (disposition, _) = run(&mut lun, &[0x2F, 0x02, 0, 0, 0, 9, 0, 0, 1, 0], 0);
        let flags = CTL_LLF_COMPARE | CTL_LLF_FUA;
        assert_eq!(
            disposition,
            Disposition::DataSubmit {
                lba: 9,
                len: 1,
                flags,
                total_len: 512,
                compare_and_write: false,
            }
        );
        let (disposition, _) = run(&mut lun, &[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0], 0);
        let flags = CTL_LLF_VERIFY | CTL_LLF_FUA;
        assert_eq!(
            disposition,
            Disposition::DataSubmit {
                lba: 9,
                len: 3,
                flags,
                total_len: 0,
                compare_and_write: false,
            }
        );
    }

    #[test]
    fn caching_options() {
        let mut be = disk_backend();
        be.options.push(("writecache".into(), "off".into()));
        be.options.push(("readcache".into(), "off".into()));
        let mut lun = ready(&be);
        let (disposition, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0], 0);
        let flags = CTL_LLF_WRITE | CTL_LLF_FUA;
        assert_eq!(
            disposition,
            Disposition::DataSubmit {
                lba: 1,
                len: 1,
                flags,
                total_len: 512,
                compare_and_write: false,
            }
        );
        let (disposition, _) = run(&mut lun, &[0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], 0);
        let flags = CTL_LLF_READ | CTL_LLF_FUA | CTL_LLF_DPO;
        assert_eq!(
            disposition,
            Disposition::DataSubmit {
                lba: 1,
                len: 1,
                flags,
                total_len: 512,
                compare_and_write: false,
            }
        );
    }

    #[test]
    fn config_writes() {
        let mut lun = ready(&disk_backend());
        let (disposition, _) = run(&mut lun, &[0x35, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(
            disposition,
            Disposition::ConfigWrite {
                lba_len: Some((0, 0, 0x02)),
                write_same_cont: false
            }
        );
        let (disposition, _) = run(
            &mut lun,
            &[0x93, 0x08, 0, 0, 0, 0, 0x74, 0x70, 0x6D, 0x00, 0, 0, 0, 0, 0, 0],
            0,
        );
        assert_eq!(disposition, Disposition::DataOut { len: 512 });
        let disposition = resume(
            &mut lun,
            &port(),
            0,
            &[0x93, 0x08, 0, 0, 0, 0, 0x74, 0x70, 0x6D, 0x00, 0, 0, 0, 0, 0, 0],
            Some(&[0; 512]),
        );
        let lba_len = Some((0x7470_6D00, 0xB0, 0x08));
        assert_eq!(
            disposition,
            Disposition::ConfigWrite {
                lba_len,
                write_same_cont: false
            }
        );
        let (disposition, _) = run(&mut lun, &[0x41, 0x11, 0, 0, 0, 0, 0, 0, 1, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x24, 0x00));
        let (disposition, _) = run(&mut lun, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 0);
        assert_eq!(disposition, Disposition::DataOut { len: 24 });
        let (disposition, _) = run(&mut lun, &[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(disposition, Disposition::DataOut { len: 0 });
        let (disposition, _) = run(&mut lun, &[0x1B, 0, 0, 0, 0x01, 0], 0);
        assert_eq!(
            disposition,
            Disposition::ConfigWrite {
                lba_len: None,
                write_same_cont: false
            }
        );
        // LOEJ on a non-removable LUN: field 4, bit 1.
        let (disposition, _) = run(&mut lun, &[0x1B, 0, 0, 0, 0x02, 0], 0);
        assert_eq!(&full_sense(&disposition)[12..18], &[0x24, 0x00, 0x00, 0xC9, 0x00, 0x04]);
        let (disposition, _) = run(&mut lun, &[0x1E, 0, 0, 0, 0x01, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x20, 0x00));
        let (disposition, _) = run(&mut lun, &[0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 24, 0, 0], 0);
        let mut data = vec![0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        data.extend_from_slice(&(1_953_525_168u32 - 7).to_be_bytes());
        data.extend_from_slice(&[0; 4]);
        assert_eq!(
            disposition,
            Disposition::ConfigRead {
                lba: 7,
                len: 24,
                data,
                data_len: 24
            }
        );
    }

    #[test]
    fn prevent_medium_removal() {
        let mut cd = ready(&cd_backend());
        let (disposition, _) = run(&mut cd, &[0x1E, 0, 0, 0, 0x01, 0], 0);
        assert_eq!(
            disposition,
            Disposition::ConfigWrite {
                lba_len: None,
                write_same_cont: false
            }
        );
        let (disposition, _) = run(&mut cd, &[0x1B, 0, 0, 0, 0x02, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x53, 0x02));
        run(&mut cd, &[0x1E, 0, 0, 0, 0x00, 0], 0);
        let (disposition, _) = run(&mut cd, &[0x1B, 0, 0, 0, 0x02, 0], 0);
        assert_eq!(
            disposition,
            Disposition::ConfigWrite {
                lba_len: None,
                write_same_cont: false
            }
        );
    }

    #[test]
    fn read_capacity() {
        let mut lun = ready(&disk_backend());
        assert_eq!(
            data(&mut lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            vec![0x74, 0x70, 0x6D, 0xAF, 0, 0, 2, 0]
        );
        let (disposition, _) = run(&mut lun, &[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], 8);
        assert_eq!(sense(&disposition), (0x05, 0x24, 0x00));
        let rc16 = data(&mut lun, &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
        let mut expected = vec![0, 0, 0, 0, 0x74, 0x70, 0x6D, 0xAF, 0, 0, 2, 0, 0, 3, 0xC0, 0];
        expected.resize(32, 0);
        assert_eq!(rc16, expected);
        assert_eq!(
            data(&mut lun, &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0]).len(),
            12
        );
        let mut be = disk_backend();
        be.maxlba = 0x1_0000_0000;
        let mut big = ready(&be);
        assert_eq!(&data(&mut big, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0])[..4], &[0xFF; 4]);
        let (disposition, _) = run(&mut lun, &[0x9E, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], 32);
        assert_eq!(&full_sense(&disposition)[12..18], &[0x24, 0x00, 0x00, 0xCC, 0x00, 0x01]);
    }

    #[test]
    fn report_luns() {
        let mut lun = ready(&disk_backend());
        let mut data_in = vec![0u8; 64];
        let cdb = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0];
        let disposition = dispatch(Some(&mut lun), &port(), 0, &[7, 0, 300, 3], &cdb, &mut data_in);
        assert_eq!(disposition, good(40));
        assert_eq!(&data_in[..8], &[0, 0, 0, 32, 0, 0, 0, 0]);
        assert_eq!(&data_in[8..16], &[0; 8]);
        assert_eq!(&data_in[16..24], &[0, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&data_in[24..32], &[0, 7, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&data_in[32..40], &[0x41, 0x2C, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(0x12345), 0xD201_2345_0000_0000);
        let (disposition, _) = run(&mut lun, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], 8);
        assert_eq!(&full_sense(&disposition)[15..18], &[0xC0, 0, 6]);
        let (disposition, _) = run(&mut lun, &[0xA0, 0, 0x03, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16);
        assert_eq!(&full_sense(&disposition)[15..18], &[0xC0, 0, 2]);
        assert_eq!(data(&mut lun, &[0xA0, 0, 0x01, 0, 0, 0, 0, 0, 0, 16, 0, 0]), vec![0; 8]);
        // Pending UAs are not reported to REPORT LUNS.
        let mut fresh = Lun::add(0, &disk_backend()).unwrap();
        assert_eq!(data(&mut fresh, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]).len(), 16);
        lun.luns_changed();
        run(&mut lun, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16);
        assert_eq!(tur(&mut lun), good(0));
    }

    #[test]
    fn request_sense() {
        let mut lun = Lun::add(0, &disk_backend()).unwrap();
        let sense = data(&mut lun, &[0x03, 0, 0, 0, 18, 0]);
        assert_eq!(&sense[..3], &[0x70, 0, 0x06]);
        assert_eq!(&sense[12..14], &[0x29, 0x01]);
        assert_eq!(tur(&mut lun), good(0));
        let sense = data(&mut lun, &[0x03, 0x01, 0, 0, 252, 0]);
        assert_eq!(sense.len(), 252);
        assert_eq!(&sense[..8], &[0x72, 0, 0, 0, 0, 0, 0, 0]);
        let (_, none) = run_as(None, 0, &[0x03, 0, 0, 0, 18, 0], 18);
        assert_eq!((none[2], none[12]), (0x05, 0x25));
    }

    #[test]
    fn command_validation() {
        let mut lun = ready(&disk_backend());
        let (disposition, _) = run(&mut lun, &[0xC0, 0, 0, 0, 0, 0], 0);
        assert_eq!(&full_sense(&disposition)[12..18], &[0x20, 0x00, 0x00, 0xC0, 0x00, 0x00]);
        // TEST UNIT READY with a reserved bit in byte 1 (bit 0).
        let (disposition, _) = run(&mut lun, &[0x00, 0x01, 0, 0, 0, 0], 0);
        assert_eq!(&full_sense(&disposition)[12..18], &[0x24, 0x00, 0x00, 0xC8, 0x00, 0x01]);
        // READ(10) with bit 6 of byte 9 (control) set.
        let (disposition, _) = run(&mut lun, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x40], 0);
        assert_eq!(&full_sense(&disposition)[15..18], &[0xCE, 0x00, 0x09]);
        // Too short for its opcode; trailing bytes are ignored.
        let (disposition, _) = run(&mut lun, &[0x28, 0, 0, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x24, 0x00));
        assert_eq!(run(&mut lun, &[0x00, 0, 0, 0, 0, 0, 0xFF, 0xFF], 0).0, good(0));
        assert_eq!(sense(&run(&mut lun, &[], 0).0), (0x05, 0x20, 0x00));
        // Not modelled here: reported as unsupported.
        assert_eq!(
            sense(&run(&mut lun, &[0x4D, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0).0),
            (0x05, 0x20, 0x00)
        );
    }

    #[test]
    fn missing_lun() {
        let (disposition, inq) = run_as(None, 0, &[0x12, 0, 0, 0, 96, 0], 96);
        assert_eq!(disposition, good(96));
        assert_eq!(inq[0], 0x7F);
        assert_eq!(&inq[8..36], b"FREEBSD CTLDISK         0001");
        let (_, page) = run_as(None, 0, &[0x12, 1, 0x80, 0, 96, 0], 96);
        assert_eq!(&page[..4], &[0x20, 0x80, 0, 16]);
        let (_, page) = run_as(None, 0, &[0x12, 1, 0x00, 0, 96, 0], 96);
        assert_eq!(
            &page[..12],
            &[0x20, 0, 0, 8, 0x00, 0x80, 0x83, 0x86, 0x87, 0x88, 0x8F, 0x92]
        );
        let (disposition, _) = run_as(None, 0, &[0x00, 0, 0, 0, 0, 0], 0);
        assert_eq!(sense(&disposition), (0x05, 0x25, 0x00));
        let (disposition, _) = run_as(None, 0, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64);
        assert_eq!(disposition, good(32));
    }

    #[test]
    fn non_primary_lun_is_unavailable() {
        let mut be = disk_backend();
        be.flags &= !LUN_FLAG_PRIMARY;
        let mut lun = Lun::add(0, &be).unwrap();
        assert_eq!(sense(&tur(&mut lun)), (0x06, 0x29, 0x01));
        assert_eq!(sense(&tur(&mut lun)), (0x02, 0x04, 0x0C));
        assert_eq!(data(&mut lun, &[0x12, 0, 0, 0, 1, 0]), vec![0x20]);
    }

    #[test]
    fn mode_sense_caching_page() {
        let mut lun = ready(&disk_backend());
        let data6 = data(&mut lun, &[0x1A, 0, 0x08, 0, 0xFF, 0]);
        assert_eq!(data6.len(), 4 + 8 + 20);
        assert_eq!(&data6[..4], &[31, 0x00, 0x10, 8]);
        // Block descriptor: min(maxlba + 1, FFFFFFFFh) blocks of 512 bytes.
        assert_eq!(&data6[4..12], &[0x74, 0x70, 0x6D, 0xB0, 0, 0, 0x02, 0x00]);
        assert_eq!(&data6[12..16], &[0x08, 0x12, 0x14, 0x00]);
        // Changeable values.
        let changeable = data(&mut lun, &[0x1A, 0x08, 0x48, 0, 0xFF, 0]);
        assert_eq!(&changeable[..7], &[23, 0, 0x10, 0, 0x08, 0x12, 0x05]);
        let mut be = disk_backend();
        be.flags |= LUN_FLAG_READONLY;
        be.options.push(("writecache".into(), "off".into()));
        let mut lun = ready(&be);
        let data6 = data(&mut lun, &[0x1A, 0x08, 0x08, 0, 0xFF, 0]);
        assert_eq!(&data6[..7], &[23, 0, 0x90, 0, 0x08, 0x12, 0x10]);
        let default = data(&mut lun, &[0x1A, 0x08, 0x88, 0, 0xFF, 0]);
        assert_eq!(default[6], 0x14);
    }

    #[test]
    fn mode_sense_all_pages() {
        let mut lun = ready(&disk_backend());
        let all = data(&mut lun, &[0x1A, 0x08, 0x3F, 0, 0xFF, 0]);
        let mut codes = Vec::new();
        let mut rest = &all[4..];
        while let Some(&code) = rest.first() {
            codes.push(code);
            rest = &rest[2 + usize::from(rest[1])..];
        }
        assert_eq!(codes, vec![0x01, 0x07, 0x08, 0x0A, 0x1C]);
        assert_eq!(usize::from(all[0]) + 1, all.len());
        let all = data(&mut lun, &[0x5A, 0x08, 0x3F, 0xFF, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(all.len(), 8 + 12 + 12 + 20 + 12 + 32 + 12 + 48);
        assert_eq!(&all[..8], &[0, 154, 0, 0x10, 0, 0, 0, 0]);
        assert_eq!(&all[64..68], &[0x4A, 0x01, 0x00, 0x1C]);
        assert_eq!(&all[108..112], &[0x5C, 0x02, 0x00, 0x2C]);
        // MODE SENSE(10) with LLBAA: 16-byte descriptor.
        let long = data(&mut lun, &[0x5A, 0x10, 0x08, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(&long[..8], &[0, 42, 0, 0x10, 0x01, 0, 0, 16]);
        assert_eq!(
            &long[8..24],
            &[0, 0, 0, 0, 0x74, 0x70, 0x6D, 0xB0, 0, 0, 0, 0, 0, 0, 0x02, 0]
        );
        // Unknown page: field 2, bit 5; bad subpage for 3Fh: field 3.
        let (disposition, _) = run(&mut lun, &[0x1A, 0, 0x2A, 0, 0xFF, 0], 255);
        assert_eq!(&full_sense(&disposition)[15..18], &[0xCD, 0, 2]);
        let (disposition, _) = run(&mut lun, &[0x1A, 0, 0x3F, 0x01, 0xFF, 0], 255);
        assert_eq!(&full_sense(&disposition)[15..18], &[0xC0, 0, 3]);
        // Truncated to the allocation length.
        assert_eq!(data(&mut lun, &[0x1A, 0, 0x3F, 0, 10, 0]).len(), 10);
    }

    #[test]
    fn mode_sense_cd_and_thresholds() {
        let mut cd = ready(&cd_backend());
        let caps = data(&mut cd, &[0x1A, 0, 0x2A, 0, 0xFF, 0]);
        assert_eq!(&caps[..4], &[4 + 8 + 26 - 1, 0, 0, 8]);
        assert_eq!(&caps[4..12], &[0; 8]);
        assert_eq!(&caps[12..20], &[0x2A, 24, 0x3F, 0, 0xF0, 0, 0x29, 0]);
        assert_eq!(&caps[24..26], &[0x08, 0x00]);
        // CD LUNs have the caching page too; reads see no RCD.
        assert_eq!(data(&mut cd, &[0x1A, 0x08, 0x08, 0, 0xFF, 0])[6], 0x14);
        let mut be = disk_backend();
        be.options.push(("avail-threshold".into(), "1g".into()));
        let mut lun = ready(&be);
        let lbp = data(&mut lun, &[0x1A, 0x08, 0x1C, 0x02, 0xFF, 0]);
        // 1 GiB / 512 >> 11 = 1024.
        assert_eq!(&lbp[4 + 16..4 + 24], &[0x82, 0x01, 0, 0, 0, 0, 0x04, 0x00]);
        let processor = BackendLun {
            lun_type: T_PROCESSOR,
            flags: LUN_FLAG_PRIMARY,
            ..BackendLun::default()
        };
        let mut processor = ready(&processor);
        let all = data(&mut processor, &[0x1A, 0x00, 0x3F, 0xFF, 0xFF, 0]);
        assert_eq!(all.len(), 4 + 8 + 12 + 32 + 12);
        assert_eq!(all[2], 0);
    }

    #[test]
    fn expand_number_suffixes() {
        assert_eq!(expand_number("4k"), Some(4096));
        assert_eq!(expand_number("0x10"), Some(16));
        assert_eq!(expand_number(" 010"), Some(8));
        assert_eq!(expand_number("7b"), Some(7));
        assert_eq!(expand_number("5x"), None);
        assert_eq!(expand_number("16e"), None);
        assert_eq!(expand_number("-1"), Some(u64::MAX));
        assert_eq!(expand_number("junk"), None);
        assert_eq!(c_strtol("99999999999999999999999"), (i64::MAX, ""));
    }

    /// xorshift64 for the fuzz test.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn fuzz_random_cdbs() {
        let opcodes = [
            0x00, 0x03, 0x08, 0x0A, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2E, 0x2F, 0x35, 0x41, 0x42, 0x5A, 0x88,
            0x89, 0x8A, 0x8E, 0x8F, 0x91, 0x93, 0x9E, 0xA0, 0xA8, 0xAA, 0xAE, 0xAF,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut tiny = disk_backend();
        tiny.maxlba = 0;
        tiny.blocksize = 0;
        tiny.options.push(("write_same_max_lba".into(), "3".into()));
        let backends = [
            disk_backend(),
            cd_backend(),
            tiny,
            BackendLun {
                lun_type: T_PROCESSOR,
                ..BackendLun::default()
            },
        ];
        let mut luns: Vec<Lun> = backends.iter().map(|be| Lun::add(1, be).unwrap()).collect();
        for round in 0..20_000 {
            let len = (next(&mut state) % 20) as usize;
            let mut cdb: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            if let Some(first) = cdb.first_mut()
                && round % 4 != 0
            {
                *first = opcodes[(next(&mut state) % opcodes.len() as u64) as usize];
            }
            if round % 3 == 0 {
                // Mostly clear reserved bits so commands get past validation.
                for byte in cdb.iter_mut().skip(1) {
                    *byte &= next(&mut state) as u8;
                }
            }
            let mut data_in = vec![0u8; (next(&mut state) % 300) as usize];
            let which = (next(&mut state) % 5) as usize;
            let initiator = (next(&mut state) % 3) as u32;
            let lun = luns.get_mut(which);
            let disposition = dispatch(lun, &port(), initiator, &[0, 1, 255, 256, 70000], &cdb, &mut data_in);
            if let Disposition::Done(outcome) = disposition {
                assert!(outcome.transferred <= data_in.len());
                match outcome.status {
                    GOOD => assert!(outcome.sense.is_empty()),
                    status => {
                        assert_eq!(status, CHECK_CONDITION);
                        assert_eq!(outcome.sense.len(), 18);
                        assert_eq!(outcome.transferred, 0);
                    }
                }
            }
            match round % 1000 {
                100 => luns[which % 4].stop(),
                200 => luns[which % 4].start(),
                300 => luns[which % 4].no_media(),
                400 => luns[which % 4].has_media(),
                500 => luns[which % 4].ejected(),
                600 => luns[which % 4].capacity_changed(&backends[which % 4]),
                _ => {}
            }
        }
    }
}

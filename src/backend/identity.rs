//! Mode A identity: what CTL shows initiators for a passthrough LUN,
//! mirrored from the device, given what the administrator asked for.  CTL
//! emulates INQUIRY, the VPD pages, READ CAPACITY and MODE SENSE itself,
//! from the `ctl_be_lun` fields and options this plan fills.

use core::fmt;

use super::options::{HaRole, LunOptions};
use crate::kern::ctl::{BeLunParams, CreateParams, DEVICE_ID_LEN, LunFlags, SERIAL_LEN};
use crate::scsi::capacity::Capacity;
use crate::scsi::inquiry::{Inquiry, PeripheralType};
use crate::scsi::vpd::{BlockLimits, DesignatorKind, Provisioning, lu_designator};

/// What the probes read from the device.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    /// Standard INQUIRY data.
    pub inquiry: Inquiry,
    /// The unit serial number (VPD page 0x80, trimmed); may be empty.
    pub serial: &'a [u8],
    /// The Device Identification page (VPD 0x83), or empty.
    pub devid_page: &'a [u8],
    /// The geometry, or `None` when there is no medium.
    pub capacity: Option<Capacity>,
    /// The Block Limits page (VPD 0xB0), if the device has one.
    pub limits: Option<BlockLimits>,
    /// The Logical Block Provisioning page (VPD 0xB2), if the device has one.
    pub provisioning: Option<Provisioning>,
}

/// The LUN, as CTL will present it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    /// The `ctl_be_lun` fields.
    pub lun: BeLunParams,
    /// Whether the device's serial number was longer than CTL's 16 bytes
    /// (`lun.serial_num` then holds its last 16, the part that tells units
    /// apart; `lun.device_id` holds it whole, up to 64 bytes).
    pub serial_truncated: bool,
    /// The device's NAA designator, for CTL's `naa` option.
    pub naa: Option<&'a [u8]>,
    /// The device's EUI-64 designator, for CTL's `eui` option.
    pub eui: Option<&'a [u8]>,
    /// A removable-medium disk (CTL treats every CD as removable).
    pub removable: bool,
    /// Block limits for CTL's `unmap_max_lba`, `unmap_max_descr` and
    /// `write_same_max_lba` options, when the LUN can unmap.
    pub unmap_limits: Option<BlockLimits>,
    /// A request CTL will not follow to the letter.
    pub warning: Option<Warning>,
}

/// What in a request the LUN does not follow (`CTL_LUN_WARNING`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A block size other than the device's, which wins.
    BlockSize {
        /// Asked for.
        asked: u32,
        /// The device's.
        device: u32,
    },
}

/// Why a device cannot be exported as asked (`CTL_LUN_ERROR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A device type stock CTL does not serve (tape, changer, ...).
    NeedsModeB(PeripheralType),
    /// A device type was asked for that the device is not.
    TypeMismatch {
        /// Asked for.
        asked: u8,
        /// The device's.
        device: PeripheralType,
    },
    /// A size that is not the device's.
    SizeMismatch {
        /// Asked for, in bytes.
        asked: u64,
        /// The device's geometry.
        device: Capacity,
    },
    /// A block size that is not the device's, with `strict=on`.
    BlockSize {
        /// Asked for.
        asked: u32,
        /// The device's.
        device: u32,
    },
}

/// A [`PlanError`] or [`Warning`] with the name of the device it is about,
/// for `error_str`.
pub struct About<'n, T>(pub &'n dyn fmt::Display, pub T);

impl fmt::Display for About<'_, PlanError> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0;
        match self.1 {
            PlanError::NeedsModeB(t) => write!(
                f,
                "{name} is a {} device; without the CTL patch (Mode B) only Direct Access and CD-ROM devices can be exported",
                t.name()
            ),
            PlanError::TypeMismatch { asked, device } => {
                write!(
                    f,
                    "device type {asked} was asked for, but {name} is a {} device ({})",
                    device.name(),
                    device.0
                )
            }
            PlanError::SizeMismatch { asked, device } => write!(
                f,
                "size {asked} does not match {name}: {} blocks of {} bytes ({} bytes)",
                device.blocks(),
                device.block_size,
                device.bytes()
            ),
            PlanError::BlockSize { asked, device } => {
                write!(
                    f,
                    "blocksize {asked} does not match {name}'s {device}-byte blocks (strict=on)"
                )
            }
        }
    }
}

impl fmt::Display for About<'_, Warning> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0;
        match self.1 {
            Warning::BlockSize { asked, device } => {
                write!(
                    f,
                    "blocksize {asked} ignored: {name} has {device}-byte blocks (strict=on refuses this)"
                )
            }
        }
    }
}

/// The block size of a CD without a medium (MMC logical blocks).
const CD_BLOCKSIZE: u32 = 2048;

/// Fits `src` into `dst`, NUL padded as CTL's own backends fill serial
/// numbers and device ids (CTL pads VPD page 0x80 with spaces itself); if
/// it is longer, its last bytes.
fn tail_padded(dst: &mut [u8], src: &[u8]) -> bool {
    let skip = src.len().saturating_sub(dst.len());
    dst.fill(0);
    for (d, s) in dst.iter_mut().zip(src.iter().skip(skip)) {
        *d = *s;
    }
    skip > 0
}

/// log2 of `n` if it is a power of two, else 0.
fn exponent(n: u32) -> u16 {
    if n.is_power_of_two() {
        n.trailing_zeros() as u16
    } else {
        0
    }
}

/// Plans the LUN for a device, or says why it cannot be exported as asked.
pub fn plan<'a>(probe: &Probe<'a>, asked: &CreateParams, opts: &LunOptions<'_>) -> Result<Plan<'a>, PlanError> {
    let device_type = probe.inquiry.device_type;
    let lun_type = match device_type {
        PeripheralType::DIRECT | PeripheralType::CDROM => device_type.0,
        other => return Err(PlanError::NeedsModeB(other)),
    };
    // ctladm always sends a device type (direct by default) and ctld 0
    // unless configured: 0 means "what the device is".
    if let Some(asked) = asked.device_type.filter(|&t| t != 0 && t != lun_type) {
        return Err(PlanError::TypeMismatch {
            asked,
            device: device_type,
        });
    }
    let mut flags = LunFlags::SERIAL_NUM | LunFlags::DEVID;
    if opts.ha_role == HaRole::Primary {
        flags |= LunFlags::PRIMARY;
    }
    let (maxlba, blocksize) = match probe.capacity {
        Some(c) => (c.last_lba, c.block_size),
        None => {
            flags |= LunFlags::NO_MEDIA;
            (0, CD_BLOCKSIZE)
        }
    };
    if let Some(c) = probe.capacity
        && asked.size_bytes != 0
        && asked.size_bytes != c.bytes()
    {
        return Err(PlanError::SizeMismatch {
            asked: asked.size_bytes,
            device: c,
        });
    }
    let mut warning = None;
    if asked.blocksize != 0 && asked.blocksize != blocksize {
        if opts.strict {
            return Err(PlanError::BlockSize {
                asked: asked.blocksize,
                device: blocksize,
            });
        }
        warning = Some(Warning::BlockSize {
            asked: asked.blocksize,
            device: blocksize,
        });
    }
    let can_unmap = lun_type == PeripheralType::DIRECT.0
        && probe.capacity.is_some_and(|c| c.lbpme)
        && probe.provisioning.is_none_or(|p| p.unmap);
    if can_unmap {
        flags |= LunFlags::UNMAP;
    }
    if opts.readonly {
        flags |= LunFlags::READONLY;
    }
    if asked.lun_id.is_some() {
        flags |= LunFlags::ID_REQ;
    }
    let mut serial_num = [0; SERIAL_LEN];
    let serial_truncated = tail_padded(&mut serial_num, probe.serial);
    let mut device_id = [0; DEVICE_ID_LEN];
    tail_padded(&mut device_id, probe.serial);
    if let Some(s) = asked.serial_num {
        serial_num = s;
    }
    if let Some(d) = asked.device_id {
        device_id = d;
    }
    let limits = probe.limits.unwrap_or_default();
    let (ublockexp, ublockoff) = if can_unmap {
        let exp = exponent(limits.unmap_granularity);
        let off = limits.unmap_alignment.and_then(|a| u16::try_from(a).ok()).unwrap_or(0);
        (exp, off)
    } else {
        (0, 0)
    };
    Ok(Plan {
        lun: BeLunParams {
            lun_type,
            flags,
            maxlba,
            blocksize,
            pblockexp: probe.capacity.map_or(0, |c| u16::from(c.physical_exponent)),
            pblockoff: probe.capacity.map_or(0, |c| c.lowest_aligned),
            ublockexp,
            ublockoff,
            opttxferlen: limits.optimal_transfer,
            serial_num,
            device_id,
        },
        serial_truncated,
        naa: lu_designator(probe.devid_page, DesignatorKind::Naa),
        eui: lu_designator(probe.devid_page, DesignatorKind::Eui64),
        removable: lun_type == PeripheralType::DIRECT.0 && probe.inquiry.removable,
        unmap_limits: can_unmap.then_some(limits),
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::vec::Vec;

    fn inquiry(kind: u8, removable: bool) -> Inquiry {
        let mut d = [b' '; 36];
        d[0] = kind;
        d[1] = if removable { 0x80 } else { 0 };
        Inquiry::parse(&d).unwrap()
    }

    fn devid() -> Vec<u8> {
        let mut v = std::vec![0, 0x83, 0, 24];
        v.extend_from_slice(&[1, 3, 0, 8, 0x50, 0, 0xc5, 0, 0xa1, 0xb2, 0xc3, 0xd4]);
        v.extend_from_slice(&[1, 2, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        v
    }

    fn disk<'a>(serial: &'a [u8], devid: &'a [u8]) -> Probe<'a> {
        Probe {
            inquiry: inquiry(0, false),
            serial,
            devid_page: devid,
            capacity: Some(Capacity {
                last_lba: 16383,
                block_size: 512,
                physical_exponent: 3,
                lowest_aligned: 0,
                lbpme: true,
            }),
            limits: Some(BlockLimits {
                optimal_transfer: 128,
                unmap_granularity: 8,
                unmap_alignment: Some(0),
                max_unmap_lba: 1 << 20,
                ..Default::default()
            }),
            provisioning: Some(Provisioning {
                unmap: true,
                write_same_16: true,
                write_same_10: false,
            }),
        }
    }

    fn o(strict: bool, readonly: bool) -> LunOptions<'static> {
        let device = crate::backend::DeviceName::Periph { driver: "da", unit: 0 };
        LunOptions {
            device,
            strict,
            readonly,
            ha_role: HaRole::Primary,
            lost: None,
            reset_device: false,
        }
    }

    #[test]
    fn a_secondary_lun_is_not_primary() {
        let d = devid();
        let secondary = LunOptions {
            ha_role: HaRole::Secondary,
            ..o(false, false)
        };
        assert!(
            plan(&disk(b"Z", &d), &asked(), &o(false, false))
                .unwrap()
                .lun
                .flags
                .contains(LunFlags::PRIMARY)
        );
        assert!(
            !plan(&disk(b"Z", &d), &asked(), &secondary)
                .unwrap()
                .lun
                .flags
                .contains(LunFlags::PRIMARY)
        );
    }

    fn asked() -> CreateParams {
        CreateParams {
            device_type: Some(0),
            size_bytes: 0,
            blocksize: 0,
            lun_id: None,
            serial_num: None,
            device_id: None,
        }
    }

    #[test]
    fn a_disk_is_mirrored() {
        let d = devid();
        let p = plan(&disk(b"Z1Z3ABCD", &d), &asked(), &o(false, false)).unwrap();
        assert_eq!(p.lun.lun_type, 0);
        assert_eq!(
            p.lun.flags,
            LunFlags::SERIAL_NUM | LunFlags::DEVID | LunFlags::PRIMARY | LunFlags::UNMAP
        );
        assert_eq!(
            (p.lun.maxlba, p.lun.blocksize, p.lun.pblockexp, p.lun.opttxferlen),
            (16383, 512, 3, 128)
        );
        assert_eq!((p.lun.ublockexp, p.lun.ublockoff), (3, 0));
        assert_eq!(&p.lun.serial_num, b"Z1Z3ABCD\0\0\0\0\0\0\0\0");
        assert!(!p.serial_truncated);
        assert_eq!(&p.lun.device_id[..10], b"Z1Z3ABCD\0\0");
        assert_eq!(p.naa, Some(&[0x50, 0, 0xc5, 0, 0xa1, 0xb2, 0xc3, 0xd4][..]));
        assert_eq!(p.eui, Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));
        assert!(p.unmap_limits.is_some());
        assert_eq!(p.warning, None);
    }

    #[test]
    fn long_serials_keep_their_tail() {
        let p = plan(&disk(b"S6PXNM0T123456X78901", &[]), &asked(), &o(false, false)).unwrap();
        assert_eq!(&p.lun.serial_num, b"NM0T123456X78901");
        assert!(p.serial_truncated);
        assert_eq!(
            &p.lun.device_id[..20],
            b"S6PXNM0T123456X78901",
            "the device id keeps it whole"
        );
        assert_eq!((p.naa, p.eui), (None, None));
    }

    #[test]
    fn the_administrator_may_override_serial_and_device_id() {
        let a = CreateParams {
            serial_num: Some(*b"MYSERIAL        "),
            device_id: Some([b'x'; 64]),
            lun_id: Some(5),
            ..asked()
        };
        let p = plan(&disk(b"Z1", &[]), &a, &o(false, true)).unwrap();
        assert_eq!(&p.lun.serial_num, b"MYSERIAL        ");
        assert_eq!(p.lun.device_id, [b'x'; 64]);
        assert!(p.lun.flags.contains(LunFlags::READONLY | LunFlags::ID_REQ));
    }

    #[test]
    fn a_cd_without_medium() {
        let cd = Probe {
            inquiry: inquiry(5, true),
            capacity: None,
            limits: None,
            provisioning: None,
            ..disk(b"R8", &[])
        };
        let p = plan(&cd, &asked(), &o(false, false)).unwrap();
        assert_eq!((p.lun.lun_type, p.lun.maxlba, p.lun.blocksize), (5, 0, 2048));
        assert!(p.lun.flags.contains(LunFlags::NO_MEDIA));
        assert!(!p.lun.flags.contains(LunFlags::UNMAP));
        assert!(!p.removable, "CTL makes CDs removable itself");
    }

    #[test]
    fn refusals_and_warnings_say_what_and_why() {
        let d = devid();
        let text = |r: Result<Plan, PlanError>| format!("{}", About(&"da0", r.unwrap_err()));
        let tape = Probe {
            inquiry: inquiry(1, true),
            ..disk(b"T", &d)
        };
        assert_eq!(
            text(plan(&tape, &asked(), &o(false, false))),
            "da0 is a Sequential Access device; without the CTL patch (Mode B) only Direct Access and CD-ROM devices can be exported"
        );
        let as_cd = CreateParams {
            device_type: Some(5),
            ..asked()
        };
        assert_eq!(
            text(plan(&disk(b"Z", &d), &as_cd, &o(false, false))),
            "device type 5 was asked for, but da0 is a Direct Access device (0)"
        );
        let sized = CreateParams {
            size_bytes: 1 << 20,
            ..asked()
        };
        assert_eq!(
            text(plan(&disk(b"Z", &d), &sized, &o(false, false))),
            "size 1048576 does not match da0: 16384 blocks of 512 bytes (8388608 bytes)"
        );
        let exact = CreateParams {
            size_bytes: 16384 * 512,
            blocksize: 512,
            ..asked()
        };
        assert_eq!(
            plan(&disk(b"Z", &d), &exact, &o(true, false)).unwrap().warning,
            None,
            "equal values are fine"
        );
        let bs = CreateParams {
            blocksize: 4096,
            ..asked()
        };
        let w = plan(&disk(b"Z", &d), &bs, &o(false, false)).unwrap();
        assert_eq!(w.lun.blocksize, 512, "the device's geometry wins");
        assert_eq!(
            format!("{}", About(&"da0", w.warning.unwrap())),
            "blocksize 4096 ignored: da0 has 512-byte blocks (strict=on refuses this)"
        );
        assert_eq!(
            text(plan(&disk(b"Z", &d), &bs, &o(true, false))),
            "blocksize 4096 does not match da0's 512-byte blocks (strict=on)"
        );
    }

    #[test]
    fn unmap_needs_lbpme_and_lbpu() {
        let mut p = disk(b"Z", &[]);
        p.provisioning = Some(Provisioning {
            unmap: false,
            ..Default::default()
        });
        assert!(
            !plan(&p, &asked(), &o(false, false))
                .unwrap()
                .lun
                .flags
                .contains(LunFlags::UNMAP)
        );
        p.provisioning = None;
        assert!(
            plan(&p, &asked(), &o(false, false))
                .unwrap()
                .lun
                .flags
                .contains(LunFlags::UNMAP),
            "LBPME alone"
        );
        p.capacity = p.capacity.map(|c| Capacity { lbpme: false, ..c });
        assert!(
            !plan(&p, &asked(), &o(false, false))
                .unwrap()
                .lun
                .flags
                .contains(LunFlags::UNMAP)
        );
    }
}

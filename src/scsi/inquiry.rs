//! Standard INQUIRY data (SPC-5 6.7.2).

use core::fmt::{self, Write};

/// The peripheral device type (byte 0, bits 4..0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeripheralType(pub u8);

impl PeripheralType {
    /// Direct access block device (SBC): disks.
    pub const DIRECT: Self = Self(0x00);
    /// Sequential access device (SSC): tape drives.
    pub const SEQUENTIAL: Self = Self(0x01);
    /// Processor device.
    pub const PROCESSOR: Self = Self(0x03);
    /// CD/DVD device (MMC).
    pub const CDROM: Self = Self(0x05);
    /// Optical memory device.
    pub const OPTICAL: Self = Self(0x07);
    /// Media changer (SMC): tape libraries.
    pub const CHANGER: Self = Self(0x08);
    /// Storage array controller (SCC).
    pub const STORAGE_ARRAY: Self = Self(0x0c);
    /// Enclosure services (SES).
    pub const ENCLOSURE: Self = Self(0x0d);
    /// Unknown or no device type.
    pub const NO_DEVICE: Self = Self(0x1f);

    /// The name FreeBSD's CAM prints for this type (`scsi_print_inquiry`).
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "Direct Access",
            0x01 => "Sequential Access",
            0x02 => "Printer",
            0x03 => "Processor",
            0x04 => "WORM",
            0x05 => "CD-ROM",
            0x06 => "Scanner",
            0x07 => "Optical",
            0x08 => "Changer",
            0x09 => "Communication",
            0x0c => "Storage Array",
            0x0d => "Enclosure Services",
            0x0e => "Simplified Direct Access",
            0x0f => "Optical Card Read/Write",
            0x11 => "Object-Based Storage",
            0x12 => "Automation/Drive Interface",
            0x14 => "Host Managed Zoned Block",
            0x1e => "Well Known LUN",
            0x1f => "Uninstalled",
            _ => "Reserved",
        }
    }
}

/// The peripheral qualifier (byte 0, bits 7..5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualifier {
    /// A device of the reported type is connected to this logical unit.
    Connected,
    /// The logical unit supports the type, but no device is connected now.
    NotConnected,
    /// The target cannot support a device on this logical unit.
    NotSupported,
    /// Reserved or vendor-specific values.
    Other(u8),
}

/// Standard INQUIRY data, as far as ctlpass uses it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Inquiry {
    /// Peripheral qualifier.
    pub qualifier: Qualifier,
    /// Peripheral device type.
    pub device_type: PeripheralType,
    /// Removable medium (RMB).
    pub removable: bool,
    /// The VERSION byte (the SPC version the device claims).
    pub version: u8,
    /// T10 vendor identification, 8 bytes, space padded.
    pub vendor: [u8; 8],
    /// Product identification, 16 bytes, space padded.
    pub product: [u8; 16],
    /// Product revision level, 4 bytes, space padded.
    pub revision: [u8; 4],
    /// Command queueing supported (CMDQUE).
    pub cmd_queue: bool,
}

/// INQUIRY data too short to hold the identification fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortInquiry {
    /// Bytes available.
    pub len: usize,
}

impl fmt::Display for ShortInquiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "INQUIRY data of {} bytes is shorter than the {} required",
            self.len,
            Inquiry::MIN_LEN
        )
    }
}

impl Inquiry {
    /// Bytes up to the end of PRODUCT REVISION LEVEL.
    pub const MIN_LEN: usize = 36;

    /// Decodes standard INQUIRY data.
    pub fn parse(data: &[u8]) -> Result<Inquiry, ShortInquiry> {
        let short = ShortInquiry { len: data.len() };
        let head: &[u8; Self::MIN_LEN] = data.get(..Self::MIN_LEN).and_then(|d| d.try_into().ok()).ok_or(short)?;
        let [byte0, byte1, version, _, _, _, _, byte7, ..] = *head;
        let mut vendor = [0; 8];
        let mut product = [0; 16];
        let mut revision = [0; 4];
        vendor.copy_from_slice(&head[8..16]);
        product.copy_from_slice(&head[16..32]);
        revision.copy_from_slice(&head[32..36]);
        Ok(Inquiry {
            qualifier: match byte0 >> 5 {
                0 => Qualifier::Connected,
                1 => Qualifier::NotConnected,
                3 => Qualifier::NotSupported,
                q => Qualifier::Other(q),
            },
            device_type: PeripheralType(byte0 & 0x1f),
            removable: byte1 & 0x80 != 0,
            version,
            vendor,
            product,
            revision,
            cmd_queue: byte7 & 0x02 != 0,
        })
    }

    /// The vendor, product and revision as CAM prints them:
    /// `<VENDOR PRODUCT REVISION>` with trailing spaces removed and
    /// unprintable bytes shown as `?`.
    pub fn description(&self) -> Description<'_> {
        Description(self)
    }
}

impl fmt::Debug for Inquiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inquiry")
            .field("qualifier", &self.qualifier)
            .field("device_type", &self.device_type)
            .field("removable", &self.removable)
            .field("description", &format_args!("{}", self.description()))
            .finish()
    }
}

/// See [`Inquiry::description`].
pub struct Description<'a>(&'a Inquiry);

impl fmt::Display for Description<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inq = self.0;
        write!(
            f,
            "<{} {} {}>",
            Ascii(&inq.vendor),
            Ascii(&inq.product),
            Ascii(&inq.revision)
        )
    }
}

/// Displays an ASCII identification field (vendor, product, serial number,
/// driver name) without its trailing spaces or NULs, with unprintable bytes
/// shown as `?`.
pub struct Ascii<'a>(pub &'a [u8]);

impl fmt::Display for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self
            .0
            .iter()
            .rposition(|&b| b != b' ' && b != 0)
            .map_or(0, |i| i.saturating_add(1));
        for &b in self.0.iter().take(end) {
            f.write_char(if (0x20..0x7f).contains(&b) { char::from(b) } else { '?' })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::vec::Vec;

    fn inquiry(byte0: u8, rmb: bool, vendor: &str, product: &str, rev: &str) -> Vec<u8> {
        let mut d = std::vec![0u8; 96];
        d[0] = byte0;
        d[1] = if rmb { 0x80 } else { 0 };
        d[2] = 0x06;
        d[4] = 91;
        d[7] = 0x02;
        let pad = |s: &str, n: usize| format!("{s:<n$}").into_bytes();
        d[8..16].copy_from_slice(&pad(vendor, 8));
        d[16..32].copy_from_slice(&pad(product, 16));
        d[32..36].copy_from_slice(&pad(rev, 4));
        d
    }

    #[test]
    fn decodes_a_disk() {
        let inq = Inquiry::parse(&inquiry(0x00, false, "SEAGATE", "ST4000NM0023", "0004")).unwrap();
        assert_eq!(inq.qualifier, Qualifier::Connected);
        assert_eq!(inq.device_type, PeripheralType::DIRECT);
        assert!(!inq.removable);
        assert!(inq.cmd_queue);
        assert_eq!(inq.version, 6);
        assert_eq!(format!("{}", inq.description()), "<SEAGATE ST4000NM0023 0004>");
        assert_eq!(inq.device_type.name(), "Direct Access");
    }

    #[test]
    fn decodes_qualifier_and_removable_cd() {
        let inq = Inquiry::parse(&inquiry(0x25, true, "TSSTcorp", "CDDVDW SH-224DB", "SB00")).unwrap();
        assert_eq!(inq.qualifier, Qualifier::NotConnected);
        assert_eq!(inq.device_type, PeripheralType::CDROM);
        assert!(inq.removable);
        assert_eq!(format!("{}", inq.description()), "<TSSTcorp CDDVDW SH-224DB SB00>");
        let bad = Inquiry::parse(&inquiry(0x7f, false, "A", "B", "C")).unwrap();
        assert_eq!(bad.qualifier, Qualifier::NotSupported);
        assert_eq!(bad.device_type, PeripheralType::NO_DEVICE);
    }

    #[test]
    fn unprintable_bytes_become_question_marks() {
        let mut d = inquiry(0, false, "AB", "X", "1");
        d[9] = 0x07;
        d[10] = 0xff;
        let inq = Inquiry::parse(&d).unwrap();
        assert_eq!(format!("{}", inq.description()), "<A?? X 1>");
    }

    #[test]
    fn refuses_short_data() {
        for len in [0, 5, 35] {
            assert_eq!(
                Inquiry::parse(&inquiry(0, false, "A", "B", "C")[..len]),
                Err(ShortInquiry { len })
            );
        }
        assert!(Inquiry::parse(&inquiry(0, false, "A", "B", "C")[..36]).is_ok());
        assert_eq!(
            format!("{}", ShortInquiry { len: 5 }),
            "INQUIRY data of 5 bytes is shorter than the 36 required"
        );
    }
}

//! Vital product data pages (SPC-5 7.8, SBC-4 6.6): the identity and the
//! limits a device reports, which a passthrough LUN mirrors.

use core::fmt;

/// Supported VPD pages.
pub const SUPPORTED_PAGES: u8 = 0x00;
/// Unit serial number.
pub const UNIT_SERIAL_NUMBER: u8 = 0x80;
/// Device identification.
pub const DEVICE_IDENTIFICATION: u8 = 0x83;
/// Block limits (SBC).
pub const BLOCK_LIMITS: u8 = 0xb0;
/// Logical block provisioning (SBC).
pub const LOGICAL_BLOCK_PROVISIONING: u8 = 0xb2;

/// The page's contents after its 4-byte header, bounded by its PAGE
/// LENGTH and by the data actually returned; `None` if the data is not
/// that page.
fn page_body(data: &[u8], page: u8) -> Option<&[u8]> {
    if *data.get(1)? != page {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?]));
    data.get(4..).map(|rest| rest.get(..len).unwrap_or(rest))
}

/// Whether the Supported VPD Pages page lists `page`.
pub fn supports(data: &[u8], page: u8) -> bool {
    page_body(data, SUPPORTED_PAGES).is_some_and(|b| b.contains(&page))
}

/// The product serial number of a Unit Serial Number page, without the
/// leading and trailing spaces some devices pad it with (as CAM's probe
/// trims it).  Empty when the device reports none (all spaces).
pub fn unit_serial_number(data: &[u8]) -> &[u8] {
    let body = page_body(data, UNIT_SERIAL_NUMBER).unwrap_or(&[]);
    let body = body
        .get(..body.iter().position(|&b| b == 0).unwrap_or(body.len()))
        .unwrap_or(&[]);
    let start = body.iter().position(|&b| b != b' ').unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i.saturating_add(1));
    body.get(start..end).unwrap_or(&[])
}

/// Designator types (SPC-5 Table 604) ctlpass mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesignatorKind {
    /// T10 vendor ID based.
    T10,
    /// EUI-64 based.
    Eui64,
    /// NAA.
    Naa,
    /// Any other type (raw value).
    Other(u8),
}

/// One designator of a Device Identification page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Designator<'a> {
    /// The designator type.
    pub kind: DesignatorKind,
    /// Association: 0 the logical unit, 1 the target port, 2 the target
    /// device.
    pub association: u8,
    /// Code set: 1 binary, 2 ASCII, 3 UTF-8.
    pub code_set: u8,
    /// The designator itself.
    pub id: &'a [u8],
}

/// The designators of a Device Identification page, in order; a truncated
/// last one is left out.
pub fn designators(data: &[u8]) -> impl Iterator<Item = Designator<'_>> {
    let mut rest = page_body(data, DEVICE_IDENTIFICATION).unwrap_or(&[]);
    core::iter::from_fn(move || {
        let [b0, b1, _, len, tail @ ..] = rest else { return None };
        let id = tail.get(..usize::from(*len))?;
        rest = tail.get(usize::from(*len)..).unwrap_or(&[]);
        Some(Designator {
            kind: match b1 & 0x0f {
                1 => DesignatorKind::T10,
                2 => DesignatorKind::Eui64,
                3 => DesignatorKind::Naa,
                t => DesignatorKind::Other(t),
            },
            association: (b1 >> 4) & 0x03,
            code_set: b0 & 0x0f,
            id,
        })
    })
}

/// The first designator of the logical unit itself of kind `kind`.
pub fn lu_designator(data: &[u8], kind: DesignatorKind) -> Option<&[u8]> {
    designators(data)
        .find(|d| d.kind == kind && d.association == 0)
        .map(|d| d.id)
}

/// A device id as administrators write it: `naa.` or `eui.` and the
/// designator in lower-case hexadecimal, e.g. `naa.5000c500a1b2c3d4`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DevId<'a> {
    /// `"naa"` or `"eui"`.
    pub scheme: &'static str,
    /// The designator bytes.
    pub id: &'a [u8],
}

impl<'a> DevId<'a> {
    /// The device id a Device Identification page names the logical unit by:
    /// its NAA designator, else its EUI-64.
    pub fn of(data: &'a [u8]) -> Option<DevId<'a>> {
        lu_designator(data, DesignatorKind::Naa)
            .map(|id| DevId { scheme: "naa", id })
            .or_else(|| lu_designator(data, DesignatorKind::Eui64).map(|id| DevId { scheme: "eui", id }))
    }

    /// Whether `text` (`naa.<hex>` or `eui.<hex>`, any case) names this id.
    pub fn matches(&self, text: &str) -> bool {
        let Some((scheme, hex)) = text.split_once('.') else {
            return false;
        };
        scheme.eq_ignore_ascii_case(self.scheme)
            && hex.len() == self.id.len().saturating_mul(2)
            && self
                .id
                .iter()
                .zip(hex.as_bytes().chunks(2))
                .all(|(&b, pair)| hex_byte(pair) == Some(b))
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    match pair {
        [h, l] => u8::try_from(digit(*h)? << 4 | digit(*l)?).ok(),
        _ => None,
    }
}

impl fmt::Display for DevId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme)?;
        f.write_str(".")?;
        self.id.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DevId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The Block Limits page (SBC-4 6.6.4) fields ctlpass mirrors; absent
/// fields (older, shorter pages) are 0, meaning "not reported".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockLimits {
    /// MAXIMUM COMPARE AND WRITE LENGTH, in blocks (of each half); 0 when
    /// the device does not support COMPARE AND WRITE.
    pub max_compare_and_write: u8,
    /// MAXIMUM TRANSFER LENGTH, in blocks.
    pub max_transfer: u32,
    /// OPTIMAL TRANSFER LENGTH, in blocks.
    pub optimal_transfer: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_lba: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// OPTIMAL UNMAP GRANULARITY, in blocks.
    pub unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT, when UGAVALID is set.
    pub unmap_alignment: Option<u32>,
    /// MAXIMUM WRITE SAME LENGTH, in blocks.
    pub max_write_same: u64,
}

impl BlockLimits {
    /// Decodes a Block Limits page.
    pub fn parse(data: &[u8]) -> Option<BlockLimits> {
        let body = page_body(data, BLOCK_LIMITS)?;
        // Offsets below are into the page, which starts 4 bytes before body.
        let field = |at: usize, len: usize| body.get(at.saturating_sub(4)..at.saturating_sub(4).saturating_add(len));
        let be32 = |at| {
            field(at, 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_be_bytes)
        };
        let be64 = |at| {
            field(at, 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        let alignment = be32(32);
        Some(BlockLimits {
            max_compare_and_write: field(5, 1).and_then(|b| b.first().copied()).unwrap_or(0),
            max_transfer: be32(8),
            optimal_transfer: be32(12),
            max_unmap_lba: be32(20),
            max_unmap_descriptors: be32(24),
            unmap_granularity: be32(28),
            unmap_alignment: (alignment & 0x8000_0000 != 0).then_some(alignment & 0x7fff_ffff),
            max_write_same: be64(36),
        })
    }
}

/// The Logical Block Provisioning page (SBC-4 6.6.6): which unmapping
/// commands the device supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provisioning {
    /// UNMAP supported (LBPU).
    pub unmap: bool,
    /// WRITE SAME(16) with UNMAP supported (LBPWS).
    pub write_same_16: bool,
    /// WRITE SAME(10) with UNMAP supported (LBPWS10).
    pub write_same_10: bool,
}

impl Provisioning {
    /// Decodes a Logical Block Provisioning page.
    pub fn parse(data: &[u8]) -> Option<Provisioning> {
        let flags = *page_body(data, LOGICAL_BLOCK_PROVISIONING)?.get(1)?;
        Some(Provisioning {
            unmap: flags & 0x80 != 0,
            write_same_16: flags & 0x40 != 0,
            write_same_10: flags & 0x20 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::vec::Vec;

    fn page(code: u8, body: &[u8]) -> Vec<u8> {
        let mut v = std::vec![0, code, 0, body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn supported_pages() {
        let d = page(0x00, &[0x00, 0x80, 0x83, 0xb0]);
        assert!(supports(&d, 0x83));
        assert!(supports(&d, 0xb0));
        assert!(!supports(&d, 0xb2));
        assert!(!supports(&page(0x80, &[0xb2]), 0xb2), "another page is not the list");
        let mut truncated = d.clone();
        truncated[3] = 200;
        assert!(
            supports(&truncated, 0xb0),
            "a length beyond the data is bounded by the data"
        );
    }

    #[test]
    fn serial_number_is_trimmed() {
        assert_eq!(unit_serial_number(&page(0x80, b"  Z1Z3ABCD   ")), b"Z1Z3ABCD");
        assert_eq!(unit_serial_number(&page(0x80, b"    ")), b"");
        assert_eq!(unit_serial_number(&page(0x80, b"AB\0\0")), b"AB");
        assert_eq!(unit_serial_number(&page(0x83, b"AB")), b"");
    }

    fn devid_page() -> Vec<u8> {
        let mut body = Vec::new();
        // T10 vendor id, ASCII, LU
        body.extend_from_slice(&[0x02, 0x01, 0, 12]);
        body.extend_from_slice(b"SEAGATE Z1Z3");
        // NAA of a target port (association 1): not the LU's
        body.extend_from_slice(&[0x01, 0x93, 0, 8, 0x50, 0, 0, 0, 0, 0, 0, 1]);
        // EUI-64, LU
        body.extend_from_slice(&[0x01, 0x02, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        // NAA, LU
        body.extend_from_slice(&[0x01, 0x03, 0, 8, 0x50, 0x00, 0xc5, 0x00, 0xa1, 0xb2, 0xc3, 0xd4]);
        page(0x83, &body)
    }

    #[test]
    fn device_identification() {
        let d = devid_page();
        let all: Vec<_> = designators(&d).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[0],
            Designator {
                kind: DesignatorKind::T10,
                association: 0,
                code_set: 2,
                id: b"SEAGATE Z1Z3"
            }
        );
        assert_eq!(all[1].association, 1);
        let id = DevId::of(&d).unwrap();
        assert_eq!(format!("{id}"), "naa.5000c500a1b2c3d4", "the LU's NAA, not the port's");
        assert!(id.matches("naa.5000C500A1B2C3D4"));
        assert!(!id.matches("naa.5000c500a1b2c3d5"));
        assert!(!id.matches("eui.5000c500a1b2c3d4"));
        assert!(!id.matches("naa.5000c500a1b2c3"));
        assert!(!id.matches("naa.5000c500a1b2c3zz"));
        assert_eq!(
            lu_designator(&d, DesignatorKind::Eui64),
            Some(&[1, 2, 3, 4, 5, 6, 7, 8][..])
        );
        let mut cut = d.clone();
        cut.truncate(cut.len() - 3);
        cut[3] -= 3;
        assert_eq!(designators(&cut).count(), 3, "a truncated designator is left out");
        assert_eq!(
            DevId::of(&cut).map(|i| format!("{i}")).as_deref(),
            Some("eui.0102030405060708")
        );
    }

    #[test]
    fn block_limits() {
        let mut body = [0u8; 0x3c];
        body[1] = 8; // max compare and write (page offset 5)
        body[4..8].copy_from_slice(&0xffffu32.to_be_bytes()); // max transfer (page offset 8)
        body[8..12].copy_from_slice(&128u32.to_be_bytes()); // optimal (12)
        body[16..20].copy_from_slice(&0x40_0000u32.to_be_bytes()); // max unmap lba (20)
        body[20..24].copy_from_slice(&256u32.to_be_bytes()); // descriptors (24)
        body[24..28].copy_from_slice(&8u32.to_be_bytes()); // granularity (28)
        body[28..32].copy_from_slice(&0x8000_0004u32.to_be_bytes()); // alignment (32)
        body[32..40].copy_from_slice(&0x10_0000u64.to_be_bytes()); // write same (36)
        let l = BlockLimits::parse(&page(0xb0, &body)).unwrap();
        assert_eq!(
            l,
            BlockLimits {
                max_compare_and_write: 8,
                max_transfer: 0xffff,
                optimal_transfer: 128,
                max_unmap_lba: 0x40_0000,
                max_unmap_descriptors: 256,
                unmap_granularity: 8,
                unmap_alignment: Some(4),
                max_write_same: 0x10_0000,
            }
        );
        let short = BlockLimits::parse(&page(0xb0, &body[..12])).unwrap();
        assert_eq!(
            (short.optimal_transfer, short.max_unmap_lba),
            (128, 0),
            "an SBC-2 length page"
        );
        assert_eq!(BlockLimits::parse(&page(0xb2, &body)), None);
    }

    #[test]
    fn provisioning() {
        assert_eq!(
            Provisioning::parse(&page(0xb2, &[0, 0xe4, 0x02, 0])),
            Some(Provisioning {
                unmap: true,
                write_same_16: true,
                write_same_10: true
            })
        );
        assert_eq!(Provisioning::parse(&page(0xb2, &[0])), None);
    }
}

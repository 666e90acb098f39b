//! SCSI data as FreeBSD prints it: the text functions of
//! sys/cam/scsi/scsi_all.c, which the kernel (device announcements) and
//! libcam (camcontrol, ctladm) share.  Re-expressed from FreeBSD's sources
//! (scsi_all.c, cam.c and ctl_util.c of FreeBSD 15); the ASC table holds the
//! conditions the simulated devices, CTL and ctlpass report, with FreeBSD's
//! wording.

/// `cam_strvis` with the default flags: leading and trailing spaces (and
/// trailing NULs) trimmed, other bytes outside 0x20..0x7f as octal escapes.
pub fn strvis(field: &[u8]) -> String {
    let start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(start, |i| i + 1);
    let mut out = String::new();
    for &b in field.get(start..end.max(start)).unwrap_or(&[]) {
        if (0x20..0x80).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\{:03o}", b));
        }
    }
    out
}

fn inquiry_field(inq: &[u8], range: std::ops::Range<usize>) -> String {
    strvis(inq.get(range).unwrap_or(&[]))
}

/// `scsi_print_inquiry_short`: `<VENDOR PRODUCT REVISION> `.
pub fn inquiry_short(inq: &[u8]) -> String {
    format!(
        "<{} {} {}> ",
        inquiry_field(inq, 8..16),
        inquiry_field(inq, 16..32),
        inquiry_field(inq, 32..36)
    )
}

/// The peripheral device type names of `scsi_print_inquiry`.
pub fn device_type_name(device_type: u8) -> &'static str {
    match device_type {
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
        0x1f => "Uninstalled",
        _ => "unknown",
    }
}

/// `scsi_print_inquiry`: `<V P R> Fixed Direct Access SPC-5 SCSI device`,
/// with its newline.
pub fn inquiry_line(inq: &[u8]) -> String {
    let byte0 = inq.first().copied().unwrap_or(0x7f);
    let qualifier = byte0 >> 5;
    let qtype = if qualifier & 0x4 != 0 {
        " (vendor-unique qualifier)"
    } else {
        match qualifier {
            0 => "",
            1 => " (offline)",
            2 => " (reserved qualifier)",
            _ => " (LUN not supported)",
        }
    };
    let removable = inq.get(1).is_some_and(|b| b & 0x80 != 0);
    let ansi = inq.get(2).map_or(0, |b| b & 0x07);
    let rev = match ansi {
        0 => "SCSI ".to_string(),
        1..=3 => format!("SCSI-{ansi} "),
        _ => format!("SPC-{} SCSI ", ansi - 2),
    };
    format!(
        "{}{} {} {rev}device{qtype}\n",
        inquiry_short(inq),
        if removable { "Removable" } else { "Fixed" },
        device_type_name(byte0 & 0x1f)
    )
}

/// The sense key descriptions of `scsi_sense_desc`.
pub fn sense_key_name(key: u8) -> &'static str {
    match key & 0x0f {
        0x0 => "NO SENSE",
        0x1 => "RECOVERED ERROR",
        0x2 => "NOT READY",
        0x3 => "MEDIUM ERROR",
        0x4 => "HARDWARE FAILURE",
        0x5 => "ILLEGAL REQUEST",
        0x6 => "UNIT ATTENTION",
        0x7 => "DATA PROTECT",
        0x8 => "BLANK CHECK",
        0x9 => "Vendor Specific",
        0xa => "COPY ABORTED",
        0xb => "ABORTED COMMAND",
        0xc => "EQUAL",
        0xd => "VOLUME OVERFLOW",
        0xe => "MISCOMPARE",
        _ => "COMPLETED",
    }
}

/// The ASC/ASCQ description `scsi_sense_desc` gives, with its fallbacks for
/// pairs it does not know.
pub fn asc_name(asc: u8, ascq: u8) -> &'static str {
    let known = match (asc, ascq) {
        (0x00, 0x00) => "No additional sense information",
        (0x04, 0x00) => "Logical unit not ready, cause not reportable",
        (0x04, 0x01) => "Logical unit is in process of becoming ready",
        (0x04, 0x02) => "Logical unit not ready, initializing command required",
        (0x04, 0x03) => "Logical unit not ready, manual intervention required",
        (0x04, 0x0c) => "Logical unit not accessible, target port in unavailable state",
        (0x08, 0x00) => "Logical unit communication failure",
        (0x1a, 0x00) => "Parameter list length error",
        (0x1d, 0x00) => "Miscompare during verify operation",
        (0x20, 0x00) => "Invalid command operation code",
        (0x21, 0x00) => "Logical block address out of range",
        (0x24, 0x00) => "Invalid field in CDB",
        (0x25, 0x00) => "Logical unit not supported",
        (0x26, 0x00) => "Invalid field in parameter list",
        (0x27, 0x00) => "Write protected",
        (0x27, 0x01) => "Hardware write protected",
        (0x27, 0x02) => "Logical unit software write protected",
        (0x28, 0x00) => "Not ready to ready change, medium may have changed",
        (0x29, 0x00) => "Power on, reset, or bus device reset occurred",
        (0x29, 0x01) => "Power on occurred",
        (0x29, 0x02) => "SCSI bus reset occurred",
        (0x29, 0x03) => "Bus device reset function occurred",
        (0x29, 0x04) => "Device internal reset",
        (0x29, 0x07) => "I_T nexus loss occurred",
        (0x2a, 0x01) => "Mode parameters changed",
        (0x2a, 0x06) => "Asymmetric access state changed",
        (0x2a, 0x09) => "Capacity data has changed",
        (0x2c, 0x00) => "Command sequence error",
        (0x39, 0x00) => "Saving parameters not supported",
        (0x3a, 0x00) => "Medium not present",
        (0x3a, 0x01) => "Medium not present - tray closed",
        (0x3a, 0x02) => "Medium not present - tray open",
        (0x3f, 0x0e) => "Reported LUNs data has changed",
        (0x44, 0x00) => "Internal target failure",
        (0x45, 0x00) => "Select or reselect failure",
        (0x47, 0x00) => "SCSI parity error",
        (0x4b, 0x00) => "Data phase error",
        (0x53, 0x02) => "Medium removal prevented",
        _ => "",
    };
    if !known.is_empty() {
        known
    } else if asc >= 0x80 {
        "Vendor Specific ASC"
    } else if ascq >= 0x80 {
        "Vendor Specific ASCQ"
    } else {
        "Reserved ASC/ASCQ pair"
    }
}

/// Sense key, ASC and ASCQ of fixed or descriptor format sense data.
pub fn sense_fields(sense: &[u8]) -> Option<(u8, u8, u8)> {
    let code = sense.first()? & 0x7f;
    match code {
        0x70 | 0x71 => Some((sense.get(2)? & 0x0f, *sense.get(12)?, *sense.get(13)?)),
        0x72 | 0x73 => Some((sense.get(1)? & 0x0f, *sense.get(2)?, *sense.get(3)?)),
        _ => None,
    }
}

/// The first line of `scsi_sense_only_sbuf` (after the path): `SCSI sense:
/// UNIT ATTENTION asc:29,1 (Power on occurred)`, with its newline.  The
/// lines that may follow it (information field, sense key specific
/// bytes) are not decoded.
pub fn sense_line(sense: &[u8]) -> String {
    let deferred = matches!(sense.first().map(|b| b & 0x7f), Some(0x71 | 0x73));
    match sense_fields(sense) {
        Some((key, asc, ascq)) => format!(
            "SCSI sense: {}{} asc:{asc:x},{ascq:x} ({})\n",
            if deferred { "Deferred error: " } else { "" },
            sense_key_name(key),
            asc_name(asc, ascq)
        ),
        None => "SCSI sense: Error code 0x0\n".to_string(),
    }
}

/// The lines cam_error_print and ctl_io_error_print give a failed
/// command, each after `path`: the command and its CDB, the transport's
/// status (`CAM status: SCSI Status Error` or `CTL Status: SCSI Error`), the
/// SCSI status and, for CHECK CONDITION, the sense data.  `status_label` is
/// `SCSI status` (CAM) or `SCSI Status` (CTL).
pub fn command_error(path: &str, cdb: &[u8], transport: &str, status_label: &str, status: u8, sense: &[u8]) -> String {
    let mut out = format!(
        "{path}{}. CDB: {}\n{path}{transport}\n{path}{status_label}: {}\n",
        op_name(cdb.first().copied().unwrap_or(0)),
        cdb_string(cdb),
        status_name(status)
    );
    if status == 0x02 {
        out += &format!("{path}{}", sense_line(sense));
    }
    out.trim_end_matches('\n').to_owned()
}

/// `scsi_op_desc` for a direct-access device (what it gives without
/// INQUIRY data), for the commands ctlpass-sim sends.
pub fn op_name(opcode: u8) -> &'static str {
    match opcode {
        0x00 => "TEST UNIT READY",
        0x03 => "REQUEST SENSE",
        0x12 => "INQUIRY",
        0x1a => "MODE SENSE(6)",
        0x1b => "START STOP UNIT",
        0x25 => "READ CAPACITY(10)",
        0x28 => "READ(10)",
        0x2a => "WRITE(10)",
        0x35 => "SYNCHRONIZE CACHE(10)",
        0x5a => "MODE SENSE(10)",
        0x9e => "SERVICE ACTION IN(16)",
        0xa0 => "REPORT LUNS",
        0xc0..=0xff => "Vendor Specific Command",
        _ => "Unknown",
    }
}

/// `scsi_cdb_string`: each byte as `%02x ` (so with a trailing space).
pub fn cdb_string(cdb: &[u8]) -> String {
    cdb.iter().map(|b| format!("{b:02x} ")).collect()
}

/// `scsi_status_string` (and ctl_scsi_status_string, which has the same
/// table).
pub fn status_name(status: u8) -> String {
    match status {
        0x00 => "OK".into(),
        0x02 => "Check Condition".into(),
        0x08 => "Busy".into(),
        0x10 => "Intermediate".into(),
        0x14 => "Intermediate-Condition Met".into(),
        0x18 => "Reservation Conflict".into(),
        0x22 => "Command Terminated".into(),
        0x28 => "Queue Full".into(),
        0x30 => "ACA Active".into(),
        0x40 => "Task Aborted".into(),
        s => format!("Unknown {s:#x}"),
    }
}

/// Big-endian integer of up to 8 bytes (missing bytes read as 0).
pub fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inquiry_lines_read_as_freebsd_prints_them() {
        let mut inq = vec![0u8; 36];
        inq[2] = 0x07;
        inq[8..16].copy_from_slice(b"SEAGATE ");
        inq[16..32].copy_from_slice(b"ST4000NM0023    ");
        inq[32..36].copy_from_slice(b"0004");
        assert_eq!(
            inquiry_line(&inq),
            "<SEAGATE ST4000NM0023 0004> Fixed Direct Access SPC-5 SCSI device\n"
        );
        inq[0] = 0x05;
        inq[1] = 0x80;
        inq[2] = 0x03;
        assert_eq!(
            inquiry_line(&inq),
            "<SEAGATE ST4000NM0023 0004> Removable CD-ROM SCSI-3 device\n"
        );
        inq[0] = 0x7f;
        inq[2] = 0x00;
        inq[8] = 0x01;
        assert_eq!(
            inquiry_line(&inq),
            "<\\001EAGATE ST4000NM0023 0004> Removable Uninstalled SCSI device (LUN not supported)\n"
        );
    }

    #[test]
    fn sense_lines_name_key_and_condition() {
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = 0x06;
        sense[12] = 0x29;
        sense[13] = 0x01;
        assert_eq!(
            sense_line(&sense),
            "SCSI sense: UNIT ATTENTION asc:29,1 (Power on occurred)\n"
        );
        sense[0] = 0x71;
        sense[12] = 0x99;
        assert_eq!(
            sense_line(&sense),
            "SCSI sense: Deferred error: UNIT ATTENTION asc:99,1 (Vendor Specific ASC)\n"
        );
        assert_eq!(
            sense_line(&[0x72, 0x02, 0x3a, 0x00]),
            "SCSI sense: NOT READY asc:3a,0 (Medium not present)\n"
        );
    }
}

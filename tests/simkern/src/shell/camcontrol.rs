//! camcontrol(8) in ctlpass-sim: `devlist`, and `inquiry` and `readcap`,
//! which send their commands straight to the device through its pass(4)
//! periph, not through CTL (sbin/camcontrol/camcontrol.c and libcam's
//! messages, FreeBSD 15).  Failed commands print what `camcontrol -v`
//! prints (cam_error_print), since without `-v` camcontrol fails silently.

use super::args::{self, getopt};
use crate::Machine;
use crate::cam::{self, scsi_all};
use crate::ctl::Response;

/// The device camcontrol opens, as its pass(4) periph and location.
struct Opened {
    /// What camcontrol was given (`da3`, `0:1:0`).
    given: String,
    /// `pass` and its unit, which camcontrol's messages name.
    pass: String,
    /// camlib's path string: `(pass4:mpr0:0:2:0): `.
    path: String,
    /// Its bus's SIM, which tells whether it queues commands.
    openings: u32,
}

impl Opened {
    fn command(&self, cdb: &[u8], len: usize) -> Result<Response, String> {
        cam::device_command(&self.given, cdb, len)
            .ok_or_else(|| format!("camcontrol: {}: device went away", self.given))
    }

    /// cam_error_print(CAM_ESF_ALL, CAM_EPF_ALL) for a failed command.
    fn error_text(&self, cdb: &[u8], r: &Response) -> String {
        scsi_all::command_error(
            &self.path,
            cdb,
            "CAM status: SCSI Status Error",
            "SCSI status",
            r.status,
            &r.sense,
        )
    }
}

/// Opens the device as camcontrol does: a periph name (`da3`, `/dev/da3`),
/// `bus:target[:lun]`, or da0 when none is given.
fn open(device: Option<&str>) -> Result<Opened, String> {
    let given = device.unwrap_or("da0");
    let at = if given.starts_with(|c: char| c.is_ascii_digit()) {
        let parts: Vec<u64> = given.split(':').map(args::strtoul).collect();
        if parts.len() < 2 {
            return Err("camcontrol: numeric device specification must be either bus:target, or bus:target:lun".into());
        }
        let (p, t, l) = (parts[0] as u32, parts[1] as u32, parts.get(2).copied().unwrap_or(0));
        cam::locate(&format!("{p}:{t}:{l}"))
            .ok_or_else(|| format!("camcontrol: cam_open_btl: no passthrough device found at {p}:{t}:{l:x}"))?
    } else {
        let name = given.strip_prefix("/dev/").unwrap_or(given);
        if !name.contains(|c: char| c.is_ascii_digit()) {
            return Err("camcontrol: cam_get_device: unable to find device unit number".into());
        }
        cam::locate(name).ok_or_else(|| {
            format!(
                "camcontrol: cam_lookup_pass: CAMGETPASSTHRU ioctl failed\n\
                 cam_lookup_pass: No such file or directory\n\
                 cam_lookup_pass: either the pass driver isn't in your kernel\n\
                 cam_lookup_pass: or {name} doesn't exist"
            )
        })?
    };
    let pass = cam::periphs("pass")
        .into_iter()
        .find(|x| (x.1, x.2, x.3) == at && x.5)
        .map(|x| format!("pass{}", x.0))
        .ok_or_else(|| format!("camcontrol: {given}: no pass(4) periph"))?;
    let bus = cam::buses().into_iter().find(|b| b.path_id == at.0);
    let (sim, openings) = bus.map_or(("?0".into(), 1), |b| {
        (format!("{}{}", b.sim_name, b.sim_unit), b.openings)
    });
    let path = format!("({pass}:{sim}:0:{}:{:x}): ", at.1, at.2);
    Ok(Opened {
        given: if given.contains(':') {
            format!("{}:{}:{}", at.0, at.1, at.2)
        } else {
            given.to_owned()
        },
        pass,
        path,
        openings,
    })
}

/// Runs `camcontrol ARGS`.
pub(super) fn run(machine: &Machine, args: &[&str]) -> Result<String, String> {
    let Some(&command) = args.first() else {
        return Err(
            "usage: camcontrol devlist | inquiry [dev_id] [-D] [-S] [-R] | readcap [dev_id] [-b] [-l] [-N] [-q] [-s]"
                .into(),
        );
    };
    let rest = &args[1..];
    let (device, optargs) = match rest.first() {
        Some(d) if !d.starts_with('-') => (Some(*d), &rest[1..]),
        _ => (None, rest),
    };
    match command {
        "devlist" => Ok(machine.devlist()),
        "inquiry" => inquiry(device, optargs),
        "readcap" => readcap(device, optargs),
        other => Err(format!("camcontrol: option {other} not found")),
    }
}

/// scsidoinquiry: the standard INQUIRY data (`-D`), the unit serial number
/// (`-S`) and the transfer rate (`-R`); all three by default.
fn inquiry(device: Option<&str>, optargs: &[&str]) -> Result<String, String> {
    let (opts, _) = getopt(optargs, "DSR").map_err(|e| format!("camcontrol: {e}"))?;
    let want = |c| opts.is_empty() || opts.iter().any(|&(o, _)| o == c);
    let dev = open(device)?;
    let mut out = String::new();
    let cdb = [0x12, 0, 0, 0, 36, 0];
    let inq = dev.command(&cdb, 36)?;
    if want('D') {
        if inq.status != 0 {
            return Err(dev.error_text(&cdb, &inq));
        }
        out += &format!("{}: {}", dev.pass, scsi_all::inquiry_line(&inq.data));
    }
    if want('S') {
        // camcontrol ignores a failure here: the line is just left out.
        let page = dev.command(&[0x12, 1, 0x80, 0, 0xff, 0], 0xff)?;
        if page.status == 0 && page.data.len() >= 4 {
            let serial = &page.data[4..page.data.len().min(4 + usize::from(page.data[3]))];
            let serial = &serial[..serial.iter().position(|&b| b == 0).unwrap_or(serial.len()).min(60)];
            if want('D') || want('R') {
                out += &format!("{}: Serial Number ", dev.pass);
            }
            out += &format!("{}\n", String::from_utf8_lossy(serial));
        }
    }
    if want('R') {
        let speed = cam::BASE_TRANSFER_SPEED;
        let queueing = inq.status == 0 && inq.data.get(7).is_some_and(|b| b & 0x02 != 0) && dev.openings > 1;
        out += &format!(
            "{}: {}.{:03}MB/s transfers{}\n",
            dev.pass,
            speed / 1000,
            speed % 1000,
            if queueing { ", Command Queueing Enabled" } else { "" }
        );
    }
    Ok(out)
}

/// scsireadcapacity: READ CAPACITY(10), and (16) when the device is too
/// large for it or `-l` asks; `Last Block: N, Block Length: M bytes`.
fn readcap(device: Option<&str>, optargs: &[&str]) -> Result<String, String> {
    let (opts, _) = getopt(optargs, "bhHlNqs").map_err(|e| format!("camcontrol: {e}"))?;
    let has = |c| opts.iter().any(|&(o, _)| o == c);
    let (blocksizeonly, numblocks, quiet, sizeonly, longonly) = (has('b'), has('N'), has('q'), has('s'), has('l'));
    if blocksizeonly && numblocks {
        return Err("camcontrol: scsireadcapacity: you can only specify one of -b or -N".into());
    }
    if blocksizeonly && sizeonly {
        return Err("camcontrol: scsireadcapacity: you can only specify one of -b or -s".into());
    }
    if has('h') || has('H') {
        return Err("camcontrol: scsireadcapacity: -h and -H are not implemented in ctlpass-sim".into());
    }
    let dev = open(device)?;
    let mut capacity = None;
    if !longonly {
        let cdb = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let r = dev.command(&cdb, 8)?;
        if r.status != 0 {
            return Err(dev.error_text(&cdb, &r));
        }
        let d = [r.data, vec![0; 8]].concat();
        let last = scsi_all::be(&d[..4]);
        if last != 0xffff_ffff {
            capacity = Some((last, scsi_all::be(&d[4..8])));
        }
    }
    let (maxsector, block_len) = match capacity {
        Some(c) => c,
        None => {
            let cdb = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
            let r = dev.command(&cdb, 32)?;
            if r.status != 0 {
                return Err(dev.error_text(&cdb, &r));
            }
            let d = [r.data, vec![0; 12]].concat();
            (scsi_all::be(&d[..8]), scsi_all::be(&d[8..12]))
        }
    };
    let mut out = String::new();
    let end = if sizeonly { "\n" } else { ", " };
    if !blocksizeonly {
        if numblocks {
            out += &format!("{}{}{end}", if quiet { "" } else { "Blocks: " }, maxsector + 1);
        } else {
            out += &format!("{}{maxsector}{end}", if quiet { "" } else { "Last Block: " });
        }
    }
    if !sizeonly {
        out += &format!(
            "{}{block_len}{}\n",
            if quiet { "" } else { "Block Length: " },
            if quiet { "" } else { " bytes" }
        );
    }
    Ok(out)
}

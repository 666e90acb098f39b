//! The hardware around the simulated machine: emulated disks and CD
//! drives hot-plugged into it, LUNs of a real iSCSI target (a tgtd on
//! 127.0.0.1) attached through the iSCSI initiator, and hot-unplug.
//!
//! Where devices go: an emulated device is slid into the first bus's
//! enclosure (mpr0 on the standard machine) at its lowest free target,
//! unless `maxio=` asks for another transfer limit, in which case it comes
//! on a bus of its own SIM (`isp`, one per distinct limit, registered when
//! first needed, as a Fibre Channel HBA whose LUNs come and go).  An iSCSI
//! LUN comes on its session's bus (`iscsiN`, one per target, maxio
//! MAXPHYS), at target 0 and the LUN's number, as iscsi(4) attaches it.

use std::sync::Arc;

use iscsi_lun::Tgt;

use crate::Machine;
use crate::cam::{self, BusSpec, DeviceSpec};
use crate::console;
use crate::devices::{Cdrom, Identity, RamDisk, ScsiDevice};
use crate::remote::IscsiDevice;

/// MAXPHYS of FreeBSD 14 and 15 on amd64: the iSCSI initiator's maxio.
const MAXPHYS: u32 = 1024 * 1024;

/// The NAA designators given to devices added without one: IEEE
/// registered (type 5) under the FreeBSD Foundation's OUI, 58:9C:FC.
const NAA_BASE: u64 = 0x5589_cfc0_0000_0000;

/// The devices the shell added and the tgtd it runs.
#[derive(Default)]
pub(super) struct Lab {
    /// The tgtd, with its target's URL (`$TGT`).
    tgt: Option<(Tgt, String)>,
    /// iSCSI sessions: target URL and the path id of its bus.
    sessions: Vec<(String, u32)>,
    /// Hot-plugged `isp` buses: maxio and path id.
    isp: Vec<(u32, u32)>,
    /// Serial numbers of the devices added, to keep made-up ones unique.
    serials: Vec<String>,
}

/// What a `device add` line asks for.
struct Wanted<'a> {
    name: Option<(&'a str, u32)>,
    blocks: Option<u64>,
    blocksize: Option<u32>,
    pblockexp: Option<u8>,
    unmap: bool,
    serial: Option<&'a str>,
    naa: Option<u64>,
    vendor: Option<&'a str>,
    product: Option<&'a str>,
    revision: Option<&'a str>,
    maxio: Option<u32>,
}

/// A number with an optional k/m/g/t unit (powers of 1024).
fn number(key: &str, value: &str) -> Result<u64, String> {
    let bad = || format!("device add: {key}={value}: not a number");
    let (digits, shift) = match value.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&value[..value.len() - 1], 10),
        Some('m') => (&value[..value.len() - 1], 20),
        Some('g') => (&value[..value.len() - 1], 30),
        Some('t') => (&value[..value.len() - 1], 40),
        _ => (value, 0),
    };
    let n = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| bad())?,
        None => digits.parse::<u64>().map_err(|_| bad())?,
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

fn text<'a>(key: &str, value: &'a str, max: usize) -> Result<&'a str, String> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("device add: {key}={value}: 1 to {max} printable characters"));
    }
    Ok(value)
}

fn parse_params<'a>(kind: &str, params: &[&'a str]) -> Result<Wanted<'a>, String> {
    let mut w = Wanted {
        name: None,
        blocks: None,
        blocksize: None,
        pblockexp: None,
        unmap: false,
        serial: None,
        naa: None,
        vendor: None,
        product: None,
        revision: None,
        maxio: None,
    };
    let disk = kind == "disk";
    for p in params {
        let Some((key, value)) = p.split_once('=') else {
            return Err(format!("device add: {p}: expected name=value"));
        };
        match key {
            "name" => {
                let split = value.find(|c: char| c.is_ascii_digit()).unwrap_or(value.len());
                let (driver, unit) = value.split_at(split);
                let unit = unit
                    .parse()
                    .map_err(|_| format!("device add: name={value}: expected a name like da5"))?;
                w.name = Some((driver, unit));
            }
            "blocks" => w.blocks = Some(number(key, value)?),
            "blocksize" if disk => {
                let bs = number(key, value)?;
                if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
                    return Err(format!(
                        "device add: blocksize={value}: a power of two from 512 to 65536"
                    ));
                }
                w.blocksize = Some(bs as u32);
            }
            "pblockexp" if disk => {
                let e = number(key, value)?;
                if e > 15 {
                    return Err(format!("device add: pblockexp={value}: 0 to 15"));
                }
                w.pblockexp = Some(e as u8);
            }
            "unmap" if disk => {
                w.unmap = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("device add: unmap={value}: on or off")),
                }
            }
            "serial" => w.serial = Some(text(key, value, 250)?),
            "naa" => {
                let hex = value
                    .strip_prefix("naa.")
                    .or_else(|| value.strip_prefix("0x"))
                    .unwrap_or(value);
                let naa = u64::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 16 && hex.starts_with(['5', '6']));
                w.naa = Some(naa.ok_or_else(|| format!("device add: naa={value}: 16 hex digits, NAA type 5 or 6"))?);
            }
            "vendor" => w.vendor = Some(text(key, value, 8)?),
            "product" => w.product = Some(text(key, value, 16)?),
            "revision" => w.revision = Some(text(key, value, 4)?),
            "maxio" => {
                let m = number(key, value)?;
                if !(512..=u64::from(u32::MAX)).contains(&m) {
                    return Err(format!("device add: maxio={value}: 512 bytes to 4 GB"));
                }
                w.maxio = Some(m as u32);
            }
            _ => {
                return Err(format!(
                    "device add: {kind} takes name, blocks, {}serial, naa, vendor, product, revision and maxio, not {key}",
                    if disk { "blocksize, pblockexp, unmap, " } else { "" }
                ));
            }
        }
    }
    Ok(w)
}

/// How long a device's coming or going may take to settle.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The kernel messages printed while `f` runs (what the console shows).  A
/// device comes or goes with the kernel settled (no periodic scan holding
/// a periph for a moment), and what that sets off (a LUN going offline or
/// binding again) is done, and shown, before the next command, as for an
/// administrator who looks afterwards.
fn console_of(f: impl FnOnce()) -> String {
    crate::taskqueue::settle(SETTLE);
    let before = console::dmesg().len();
    f();
    crate::taskqueue::settle(SETTLE);
    console::dmesg().get(before..).unwrap_or("").to_owned()
}

/// The periph driver that attaches to a device of this type, if the
/// simulated kernel has one.
fn driver_of(device_type: u8) -> Option<&'static str> {
    match device_type {
        0x00 => Some("da"),
        0x05 => Some("cd"),
        _ => None,
    }
}

/// Checks that `name=` can be honoured: the device's driver, and a unit no
/// periph has.
fn check_name(name: Option<(&str, u32)>, device_type: u8) -> Result<(), String> {
    let Some((driver, unit)) = name else {
        return Ok(());
    };
    if driver_of(device_type) != Some(driver) {
        return Err(format!(
            "device add: name={driver}{unit}: this device attaches as {}",
            driver_of(device_type).map_or("pass only".to_owned(), |d| format!("{d}N"))
        ));
    }
    if let Some(p) = cam::periphs(driver).into_iter().find(|p| p.0 == unit) {
        return Err(format!(
            "device add: {driver}{unit} is in use (scbus{} target {} lun {:x})",
            p.1, p.2, p.3
        ));
    }
    Ok(())
}

impl Lab {
    /// The target URL of the running tgtd (`$TGT`).
    pub(super) fn tgt_url(&self) -> Option<&str> {
        self.tgt.as_ref().map(|(_, url)| url.as_str())
    }

    /// `tgtd start`.
    pub(super) fn tgtd_start(&mut self) -> Result<String, String> {
        if let Some(url) = self.tgt_url() {
            return Err(format!("tgtd start: already running: {url}"));
        }
        let tgt = Tgt::start().map_err(|e| format!("tgtd start: {e}"))?;
        let url = tgt.url(0).trim_end_matches("/0").to_owned();
        let out = format!("{url}\n");
        self.tgt = Some((tgt, url));
        Ok(out)
    }

    /// `tgtd stop`: refused while LUNs of its target are attached.
    pub(super) fn tgtd_stop(&mut self) -> Result<String, String> {
        let Some(url) = self.tgt_url().map(str::to_owned) else {
            return Err("tgtd stop: not running".into());
        };
        if let Some(&(_, path)) = self.sessions.iter().find(|(u, _)| *u == url) {
            let attached: Vec<String> = cam::devices()
                .into_iter()
                .filter(|d| d.0 == path && d.3)
                .map(|d| format!("scbus{} target {} lun {:x}", d.0, d.1, d.2))
                .collect();
            if !attached.is_empty() {
                return Err(format!(
                    "tgtd stop: LUNs of {url} are attached ({}); device remove them first",
                    attached.join(", ")
                ));
            }
        }
        self.sessions.retain(|(u, _)| *u != url);
        self.tgt = None;
        Ok(String::new())
    }

    /// `device add disk|cd|iscsi ...`: prints the console messages of the
    /// arrival.
    pub(super) fn add(&mut self, machine: &Machine, words: &[&str]) -> Result<String, String> {
        match words {
            ["iscsi", url, params @ ..] => self.add_iscsi(machine, url, params),
            [kind @ ("disk" | "cd"), params @ ..] => self.add_emulated(machine, kind, params),
            _ => Err("usage: device add disk|cd [name=da5] [blocks=N] [blocksize=N] [pblockexp=N] [unmap=on] \
                 [serial=S] [naa=HEX] [vendor=V] [product=P] [revision=R] [maxio=BYTES] | device add iscsi URL [name=da5]"
                .into()),
        }
    }

    fn add_emulated(&mut self, machine: &Machine, kind: &str, params: &[&str]) -> Result<String, String> {
        let w = parse_params(kind, params)?;
        let disk = kind == "disk";
        check_name(w.name, if disk { 0x00 } else { 0x05 })?;
        let serial = match w.serial {
            Some(s) => s.to_owned(),
            None => (1..)
                .map(|n| format!("SIM{n:05}"))
                .find(|s| !self.serials.contains(s))
                .unwrap_or_default(),
        };
        let naa = w.naa.unwrap_or(NAA_BASE | (self.serials.len() as u64 + 1));
        let identity = Identity {
            vendor: w.vendor.unwrap_or("FREEBSD").into(),
            product: w.product.unwrap_or(if disk { "SIMDISK" } else { "SIMCD" }).into(),
            revision: w.revision.unwrap_or("0001").into(),
            serial: serial.clone(),
            naa: Some(naa),
            eui64: None,
        };
        let device: Arc<dyn ScsiDevice> = if disk {
            let blocks = w.blocks.unwrap_or(2048);
            if blocks == 0 {
                return Err("device add: blocks=0: a disk has at least one block".into());
            }
            let disk = RamDisk::new(identity, blocks, w.blocksize.unwrap_or(512));
            Arc::new(
                disk.with_physical_exponent(w.pblockexp.unwrap_or(0))
                    .with_unmap(w.unmap),
            )
        } else {
            let blocks = w.blocks.unwrap_or(64);
            if blocks > 1 << 17 {
                return Err("device add: cd: at most 131072 blocks (256 MB) of medium".into());
            }
            let medium = (blocks > 0).then(|| vec![0; 2048 * blocks as usize]);
            Arc::new(Cdrom::new(identity, medium))
        };
        let path_id = self.bus_for(w.maxio);
        let used: Vec<u32> = cam::devices()
            .into_iter()
            .filter(|d| d.0 == path_id)
            .map(|d| d.1)
            .collect();
        let target = (0..).find(|t| !used.contains(t)).unwrap_or(0);
        self.serials.push(serial);
        Ok(plug(machine, path_id, target, 0, device, w.name))
    }

    /// The bus an emulated device goes on: the first bus, unless `maxio`
    /// asks for another limit.
    fn bus_for(&mut self, maxio: Option<u32>) -> u32 {
        let first = cam::buses().first().map_or(1024 * 1024, |b| b.maxio);
        let Some(maxio) = maxio.filter(|&m| m != first) else {
            return 0;
        };
        if let Some(&(_, path)) = self.isp.iter().find(|(m, _)| *m == maxio) {
            return path;
        }
        let path = cam::add_bus(&BusSpec {
            sim_name: "isp".into(),
            sim_unit: self.isp.len() as u32,
            maxio,
            openings: 32,
            devices: Vec::new(),
        });
        self.isp.push((maxio, path));
        path
    }

    fn add_iscsi(&mut self, machine: &Machine, url: &str, params: &[&str]) -> Result<String, String> {
        let mut name = None;
        for p in params {
            match p.split_once('=') {
                Some(("name", _)) => name = parse_params("iscsi", &[p])?.name,
                _ => return Err(format!("device add: iscsi takes a URL and name=, not {p}")),
            }
        }
        let (target_url, lun) = url
            .strip_prefix("iscsi://")
            .and_then(|_| url.rsplit_once('/'))
            .and_then(|(t, l)| Some((t, l.parse::<u64>().ok()?)))
            .filter(|(t, _)| t.matches('/').count() >= 3)
            .ok_or_else(|| format!("device add: {url}: expected iscsi://host[:port]/iqn/lun"))?;
        let path_id = self.sessions.iter().find(|(u, _)| u == target_url).map(|&(_, p)| p);
        if let Some(p) = path_id
            && cam::devices().contains(&(p, 0, lun, true))
        {
            return Err(format!(
                "device add: {url} is attached already (scbus{p} target 0 lun {lun:x})"
            ));
        }
        let device = IscsiDevice::connect(url).map_err(|e| format!("device add: {e}"))?;
        check_name(name, device.device_type())?;
        let path_id = match path_id {
            Some(p) => p,
            None => {
                let p = cam::add_bus(&BusSpec {
                    sim_name: "iscsi".into(),
                    sim_unit: self.sessions.len() as u32,
                    maxio: MAXPHYS,
                    openings: 32,
                    devices: Vec::new(),
                });
                self.sessions.push((target_url.to_owned(), p));
                p
            }
        };
        Ok(plug(machine, path_id, 0, lun, Arc::new(device), name))
    }

    /// `device remove NAME` (a periph name or `cam=B:T:L`): prints the
    /// console messages of the departure.
    pub(super) fn remove(&mut self, machine: &Machine, name: &str) -> Result<String, String> {
        let at = match name.strip_prefix("cam=") {
            Some(btl) => {
                let n: Vec<&str> = btl.split(':').collect();
                let parsed = match n.as_slice() {
                    [p, t, l] => p.parse().ok().zip(t.parse().ok()).zip(l.parse().ok()),
                    _ => None,
                };
                parsed
                    .map(|((p, t), l)| (p, t, l))
                    .filter(|&(p, t, l)| cam::devices().contains(&(p, t, l, true)))
            }
            None if name.contains(':') => None,
            None => cam::locate(name),
        };
        let (p, t, l) = at.ok_or_else(|| format!("device remove: {name}: no such device"))?;
        let out = console_of(|| machine.unplug(p, t, l));
        cam::unwire(p, t, l);
        Ok(out)
    }
}

/// Plugs `device` in (wiring its unit first when `name=` asks) and returns
/// what the console printed.
fn plug(
    machine: &Machine,
    path_id: u32,
    target: u32,
    lun: u64,
    device: Arc<dyn ScsiDevice>,
    name: Option<(&str, u32)>,
) -> String {
    if let Some((driver, unit)) = name {
        cam::wire_unit(driver, unit, path_id, target, lun);
    }
    console_of(|| machine.plug(path_id, DeviceSpec { target, lun, device }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_units() {
        assert_eq!(number("maxio", "64k"), Ok(65536));
        assert_eq!(number("blocks", "0x10"), Ok(16));
        assert!(number("blocks", "ten").is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let w = parse_params("disk", &["name=da7", "naa=naa.5000c500a1b2c3d5", "blocksize=4096"]).unwrap();
        assert_eq!(w.name, Some(("da", 7)));
        assert_eq!(w.naa, Some(0x5000_c500_a1b2_c3d5));
        assert!(parse_params("disk", &["blocksize=1000"]).is_err());
        assert!(parse_params("cd", &["blocksize=512"]).is_err());
        assert!(parse_params("disk", &["vendor=TOOLONGVENDOR"]).is_err());
        assert!(parse_params("disk", &["naa=1234"]).is_err());
    }
}

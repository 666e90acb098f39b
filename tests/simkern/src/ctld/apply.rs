//! What ctld does with CTL's LUNs: `conf::apply` (ctld.cc) and, from
//! kernel.cc, `conf_new_from_kernel` (the old configuration rebuilt from
//! CTL's LUN list at startup), `lun::kernel_add`, `kernel_modify` and
//! `kernel_remove`, with their requests and messages (FreeBSD 15).  The
//! requests go through the simulated CTL's `CTL_LUN_REQ` as ctladm's do,
//! and each is recorded as it was sent ([`Sent`]).  Ports are not
//! modelled: no port is created, mapped or removed.

use std::fmt;

use super::Log;
use super::conf::{Conf, Lun};
use crate::ctl::{self, Request};
use crate::shell::xml::{self, Event};
use crate::sys;

/// A `CTL_LUN_REQ` ctld sent, and what came back.
#[derive(Clone)]
pub struct Sent {
    /// The request as CTL received it (without its options).
    pub req: sys::ctl_lun_req,
    /// Its options, in order.
    pub options: Vec<(String, String)>,
    /// `status`.
    pub status: u32,
    /// `error_str`.
    pub error: String,
    /// For a create: the LUN number written back (`req_lun_id`).
    pub lun: Option<u32>,
}

/// A NUL-padded field's text, up to its first NUL or its end.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl fmt::Display for Sent {
    /// One line: `create passthrough flags=DEV_TYPE type=0 blocksize=512
    /// size=0 [file=da0 ctld_name=d]: ok, LUN 0`, with `lun=`, `serial=`
    /// and `device_id=` when their flags are set; `modify ... lun=0
    /// size=0 [...]`, `remove ... lun=0`; then `ok`, `warning "..."` or
    /// `error "..."`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.req;
        let backend: Vec<u8> = r.backend.iter().map(|&c| c as u8).collect();
        let backend = text(&backend);
        match r.reqtype {
            sys::CTL_LUNREQ_CREATE => {
                // SAFETY: a create request's union member.
                let c = unsafe { &r.reqdata.create };
                let names = [
                    (sys::CTL_LUN_FLAG_ID_REQ, "ID_REQ"),
                    (sys::CTL_LUN_FLAG_DEV_TYPE, "DEV_TYPE"),
                    (sys::CTL_LUN_FLAG_SERIAL_NUM, "SERIAL_NUM"),
                    (sys::CTL_LUN_FLAG_DEVID, "DEVID"),
                ];
                let flags: Vec<&str> = names
                    .iter()
                    .filter(|(b, _)| c.flags & b != 0)
                    .map(|(_, n)| *n)
                    .collect();
                write!(
                    f,
                    "create {backend} flags={} type={} blocksize={} size={}",
                    flags.join("|"),
                    c.device_type,
                    c.blocksize_bytes,
                    c.lun_size_bytes
                )?;
                if c.flags & sys::CTL_LUN_FLAG_ID_REQ != 0 {
                    write!(f, " lun={}", c.req_lun_id)?;
                }
                if c.flags & sys::CTL_LUN_FLAG_SERIAL_NUM != 0 {
                    write!(f, " serial={:?}", text(&c.serial_num))?;
                }
                if c.flags & sys::CTL_LUN_FLAG_DEVID != 0 {
                    write!(f, " device_id={:?}", text(&c.device_id))?;
                }
            }
            sys::CTL_LUNREQ_MODIFY => {
                // SAFETY: a modify request's union member.
                let m = unsafe { &r.reqdata.modify };
                write!(f, "modify {backend} lun={} size={}", m.lun_id, m.lun_size_bytes)?;
            }
            // SAFETY: a remove request's union member.
            _ => write!(f, "remove {backend} lun={}", unsafe { r.reqdata.rm.lun_id })?,
        }
        if r.reqtype != sys::CTL_LUNREQ_RM {
            let options: Vec<String> = self.options.iter().map(|(n, v)| format!("{n}={v}")).collect();
            write!(f, " [{}]", options.join(" "))?;
        }
        match self.status {
            sys::CTL_LUN_OK => f.write_str(": ok")?,
            sys::CTL_LUN_WARNING => write!(f, ": warning {:?}", self.error)?,
            _ => write!(f, ": error {:?}", self.error)?,
        }
        match self.lun {
            Some(id) if self.status != sys::CTL_LUN_ERROR => write!(f, ", LUN {id}"),
            _ => Ok(()),
        }
    }
}

/// Sends a `CTL_LUN_REQ` (the ioctl on /dev/cam/ctl) and records it.
fn send(sent: &mut Vec<Sent>, backend: &str, request: &Request, options: &[(String, String)]) -> Sent {
    let pairs: Vec<(&str, &str)> = options.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let reply = ctl::lun_request(backend, request, &pairs);
    let s = Sent {
        req: request.raw(backend),
        options: options.to_vec(),
        status: reply.status,
        error: reply.error,
        lun: reply.created.map(|c| c.3),
    };
    sent.push(s.clone());
    s
}

/// How ctld reads a request's status (kernel.cc): `what` is "creation",
/// "modification" or "removal".
fn status(log: &mut Log, s: &Sent, what: &str) -> bool {
    match s.status {
        sys::CTL_LUN_ERROR => {
            log.warnx(format!("LUN {what} error: {}", s.error));
            false
        }
        sys::CTL_LUN_WARNING => {
            log.warnx(format!("LUN {what} warning: {}", s.error));
            true
        }
        sys::CTL_LUN_OK => true,
        other => {
            log.warnx(format!("unknown LUN {what} status: {other}"));
            false
        }
    }
}

impl Lun {
    /// `lun::kernel_add`: the block size always, the device type always
    /// (`DEV_TYPE`), the size, number, serial number and device id when
    /// known; the LUN number CTL gave is kept.
    fn kernel_add(&mut self, log: &mut Log, sent: &mut Vec<Sent>) -> bool {
        let request = Request::Create {
            device_type: self.device_type,
            size: self.size,
            blocksize: self.blocksize as u32,
            lun_id: (self.ctl_lun >= 0).then_some(self.ctl_lun as u32),
            serial: (!self.serial.is_empty()).then(|| self.serial.clone()),
            device_id: (!self.device_id.is_empty()).then(|| self.device_id.clone()),
        };
        let s = send(sent, &self.backend, &request, &self.kernel_options());
        if !status(log, &s, "creation") {
            return false;
        }
        self.ctl_lun = s.lun.map_or(-1, |id| id as i32);
        true
    }

    /// `lun::kernel_modify`: the configured size (0 if none) and every
    /// option.
    fn kernel_modify(&self, log: &mut Log, sent: &mut Vec<Sent>) -> bool {
        let request = Request::Modify {
            lun_id: self.ctl_lun as u32,
            size: self.size,
        };
        let s = send(sent, &self.backend, &request, &self.kernel_options());
        status(log, &s, "modification")
    }

    /// `lun::kernel_remove`.
    fn kernel_remove(&self, log: &mut Log, sent: &mut Vec<Sent>) -> bool {
        let request = Request::Remove {
            lun_id: self.ctl_lun as u32,
        };
        let s = send(sent, &self.backend, &request, &[]);
        status(log, &s, "removal")
    }
}

/// One `<lun>` of CTL's list as kernel.cc's handlers keep it (`struct
/// cctl_lun`).
#[derive(Default)]
struct KernelLun {
    id: u64,
    backend: String,
    device_type: u8,
    size_blocks: u64,
    blocksize: u32,
    serial: String,
    device_id: String,
    ctld_name: String,
    attrs: Vec<(String, String)>,
}

/// strtoull(3) / strtoul(3) with base 0, as kernel.cc reads numbers.
fn strtoull(text: &str) -> u64 {
    crate::shell::args::strtoul(text)
}

/// `parse_kernel_config`'s LUN part: CTL's LUN list read with kernel.cc's
/// element handlers.  `Err` with what `log_errx` would print (ctld exits).
fn kernel_luns() -> Result<Vec<KernelLun>, String> {
    let events = xml::parse(&ctl::lun_list_xml()).map_err(|_| "XML_Parse failed".to_string())?;
    let mut luns: Vec<KernelLun> = Vec::new();
    let mut in_lun = false;
    let mut texts: Vec<String> = Vec::new();
    for e in events {
        match e {
            Event::Start(name, attrs) => {
                texts.push(String::new());
                if name == "lun" {
                    if in_lun {
                        return Err("cctl_start_element: improper lun element nesting".into());
                    }
                    in_lun = true;
                    let mut lun = KernelLun::default();
                    for (k, v) in attrs {
                        if k != "id" {
                            return Err(format!("cctl_start_element: invalid LUN attribute {k} = {v}"));
                        }
                        lun.id = strtoull(&v);
                    }
                    luns.push(lun);
                }
            }
            Event::Text(t) => {
                if let Some(s) = texts.last_mut() {
                    s.push_str(&t);
                }
            }
            Event::End(name) => {
                let s = texts.pop().unwrap_or_default();
                if name == "ctllunlist" {
                    continue;
                }
                let Some(lun) = luns.last_mut().filter(|_| in_lun) else {
                    return Err(format!("cctl_end_element: cur_lun == NULL! (name = {name})"));
                };
                let number = |s: &str| {
                    if s.is_empty() {
                        Err(format!("cctl_end_element: {name} missing its argument"))
                    } else {
                        Ok(strtoull(s))
                    }
                };
                match name.as_str() {
                    "backend_type" => lun.backend = s,
                    "lun_type" => lun.device_type = number(&s)? as u8,
                    "size" => lun.size_blocks = number(&s)?,
                    "blocksize" => lun.blocksize = number(&s)? as u32,
                    "serial_number" => lun.serial = s,
                    "device_id" => lun.device_id = s,
                    "ctld_name" => lun.ctld_name = s,
                    "lun" => in_lun = false,
                    _ => lun.attrs.push((name, s)),
                }
            }
        }
    }
    Ok(luns)
}

/// `conf_new_from_kernel`: the LUNs ctld made (those with a `ctld_name`
/// option), as CTL lists them: `file` or `dev` becomes the path, every
/// other element an option.  `Err` with what `log_errx` would print.
pub fn conf_new_from_kernel(log: &mut Log) -> Result<Conf, String> {
    log.debugx("obtaining previously configured CTL luns from the kernel");
    let mut conf = Conf::default();
    for lun in kernel_luns()? {
        if lun.ctld_name.is_empty() {
            log.debugx(format!("CTL lun {} wasn't managed by ctld; ignoring", lun.id));
            continue;
        }
        let name = lun.ctld_name.as_str();
        if let Some(cl) = conf.luns.get(name) {
            log.warnx(format!(
                "found CTL lun {} \"{name}\", also backed by CTL lun {}; ignoring",
                lun.id, cl.ctl_lun
            ));
            continue;
        }
        log.debugx(format!("found CTL lun {} \"{name}\"", lun.id));
        let Some(cl) = conf.add_lun(log, name) else {
            log.warnx("lun_new failed");
            continue;
        };
        cl.set_backend(log, &lun.backend);
        cl.set_device_type_number(log, lun.device_type);
        cl.set_blocksize(log, u64::from(lun.blocksize));
        cl.set_device_id(log, &lun.device_id);
        cl.set_serial(log, &lun.serial);
        cl.set_size(log, lun.size_blocks.wrapping_mul(u64::from(lun.blocksize)));
        cl.set_ctl_lun(log, lun.id as u32);
        for (key, value) in &lun.attrs {
            if key == "file" || key == "dev" {
                cl.set_path(log, value);
                continue;
            }
            if !cl.add_option(log, key, value) {
                log.warnx(format!(
                    "unable to add CTL lun option {key} for CTL lun {} \"{name}\"",
                    lun.id
                ));
            }
        }
    }
    Ok(conf)
}

impl Conf {
    /// `conf::apply`'s LUN part: LUNs gone from the configuration are
    /// removed, LUNs whose backend, block size, device id, path or serial
    /// number changed are removed and created again, every other LUN of
    /// both gets a `CTL_LUNREQ_MODIFY`, new ones are created.  Returns
    /// the errors counted.
    pub fn apply(&mut self, old: &mut Conf, log: &mut Log, sent: &mut Vec<Sent>) -> u32 {
        let mut errors = 0u32;
        if old.debug != self.debug {
            log.debugx(format!("changing debug level to {}", self.debug));
            log.level = self.debug;
        }
        let names: Vec<String> = old.luns.keys().cloned().collect();
        for name in names {
            let Some(oldlun) = old.luns.get(&name) else {
                continue;
            };
            let Some(newlun) = self.luns.get_mut(&name) else {
                log.debugx(format!(
                    "lun \"{name}\", CTL lun {} not found in new configuration; removing",
                    oldlun.ctl_lun
                ));
                if !oldlun.kernel_remove(log, sent) {
                    log.warnx(format!("failed to remove lun \"{name}\", CTL lun {}", oldlun.ctl_lun));
                    errors += 1;
                }
                continue;
            };
            if oldlun.changed(newlun, log) {
                if !oldlun.kernel_remove(log, sent) {
                    log.warnx(format!("failed to remove lun \"{name}\", CTL lun {}", oldlun.ctl_lun));
                    errors += 1;
                }
                old.luns.remove(&name);
                continue;
            }
            newlun.set_ctl_lun(log, oldlun.ctl_lun as u32);
        }
        let names: Vec<String> = self.luns.keys().cloned().collect();
        for name in names {
            let Some(newlun) = self.luns.get_mut(&name) else {
                continue;
            };
            if old.luns.contains_key(&name) {
                log.debugx(format!("modifying lun \"{name}\", CTL lun {}", newlun.ctl_lun));
                if !newlun.kernel_modify(log, sent) {
                    log.warnx(format!("failed to modify lun \"{name}\", CTL lun {}", newlun.ctl_lun));
                    errors += 1;
                }
                continue;
            }
            log.debugx(format!("adding lun \"{name}\""));
            if !newlun.kernel_add(log, sent) {
                log.warnx(format!("failed to add lun \"{name}\""));
                self.delete_target_luns(&name);
                self.luns.remove(&name);
                errors += 1;
            }
        }
        errors
    }
}

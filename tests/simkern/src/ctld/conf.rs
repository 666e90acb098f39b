//! ctld's configuration, as usr.sbin/ctld/ctld.hh and ctld.cc of FreeBSD 15
//! keep it: LUNs with their setters, checks and messages (`lun::set_*`,
//! `lun::verify`, `lun::changed`, `lun::options`, `option_new`), targets
//! with their LUN numbers (`target::start_lun`, `target::add_lun`), and
//! the auth-groups, portal-groups and ports only as far as a target names
//! them (`conf::verify`'s warnings about them included).
//!
//! Where the model differs from ctld: its maps are ordered by name, where
//! ctld's `std::unordered_map`s go in hash order (so ctld may visit LUNs in
//! another order); an auth-group's CHAP secrets and initiator lists, a
//! portal-group's listen addresses, options, tag and the like are read and
//! not checked (a portal's address is not resolved); `controller` and
//! `transport-group` (NVMe over Fabrics) are not modelled.

use std::collections::{BTreeMap, BTreeSet};

use super::Log;

/// ctld.hh `DEFAULT_BLOCKSIZE`.
pub(crate) const DEFAULT_BLOCKSIZE: i32 = 512;
/// ctld.hh `DEFAULT_CD_BLOCKSIZE`.
pub(crate) const DEFAULT_CD_BLOCKSIZE: i32 = 2048;
/// ctld.hh `MAX_LUNS`: LUN numbers a target may use.
pub(crate) const MAX_LUNS: u32 = 1024;
/// scsi_all.h `T_DIRECT`.
const T_DIRECT: u8 = 0;
/// scsi_all.h `T_PROCESSOR`.
const T_PROCESSOR: u8 = 3;
/// scsi_all.h `T_CDROM`.
const T_CDROM: u8 = 5;

/// A LUN of the configuration (`struct lun`).
#[derive(Clone, Debug)]
pub struct Lun {
    /// `l_name`: its name in ctl.conf, or `target,lun,N` for a LUN defined
    /// inside a target.
    pub name: String,
    /// `l_backend` (`block` unless configured, once verified).
    pub backend: String,
    /// `l_device_type`.
    pub device_type: u8,
    /// `l_blocksize` (an `int` in ctld).
    pub blocksize: i32,
    /// `l_device_id`.
    pub device_id: String,
    /// `l_path`.
    pub path: String,
    /// `l_scsiname`.
    pub scsiname: String,
    /// `l_serial`.
    pub serial: String,
    /// `l_size`.
    pub size: u64,
    /// `l_ctl_lun`: the CTL LUN number, -1 until known.
    pub ctl_lun: i32,
    /// `l_options`, in the order given (an nvlist keeps its order).
    pub options: Vec<(String, String)>,
}

/// `nvlist_replace_string` on an option list: the old value goes, the new
/// one is added at the end.
fn replace(options: &mut Vec<(String, String)>, name: &str, value: &str) {
    options.retain(|(n, _)| n != name);
    options.push((name.to_owned(), value.to_owned()));
}

impl Lun {
    fn new(name: &str) -> Lun {
        Lun {
            name: name.to_owned(),
            backend: String::new(),
            device_type: 0,
            blocksize: 0,
            device_id: String::new(),
            path: String::new(),
            scsiname: String::new(),
            serial: String::new(),
            size: 0,
            ctl_lun: -1,
            options: Vec::new(),
        }
    }

    /// `lun::options()`: what ctld sends CTL as the LUN's options: its
    /// `option` lines, `file` (the path), `ctld_name`, and `scsiname`
    /// unless an option set it.
    pub fn kernel_options(&self) -> Vec<(String, String)> {
        let mut nvl = self.options.clone();
        if !self.path.is_empty() {
            replace(&mut nvl, "file", &self.path);
        }
        replace(&mut nvl, "ctld_name", &self.name);
        if !nvl.iter().any(|(n, _)| n == "scsiname") && !self.scsiname.is_empty() {
            nvl.push(("scsiname".into(), self.scsiname.clone()));
        }
        nvl
    }

    /// `lun::add_option` (`option_new`).
    pub fn add_option(&mut self, log: &mut Log, name: &str, value: &str) -> bool {
        if self.options.iter().any(|(n, _)| n == name) {
            log.warnx(format!("duplicated option \"{name}\""));
            return false;
        }
        self.options.push((name.to_owned(), value.to_owned()));
        true
    }

    fn once(log: &mut Log, what: &str, lun: &str, unset: bool) -> bool {
        if !unset {
            log.warnx(format!("{what} for lun \"{lun}\" specified more than once"));
        }
        unset
    }

    /// `lun::set_backend`.
    pub fn set_backend(&mut self, log: &mut Log, value: &str) -> bool {
        let ok = Self::once(log, "backend", &self.name, self.backend.is_empty());
        if ok {
            self.backend = value.to_owned();
        }
        ok
    }

    /// `lun::set_blocksize` (a `size_t` stored in an `int`).
    pub fn set_blocksize(&mut self, log: &mut Log, value: u64) -> bool {
        let ok = Self::once(log, "blocksize", &self.name, self.blocksize == 0);
        if ok {
            self.blocksize = value as i32;
        }
        ok
    }

    /// `lun::set_ctl_lun` (a `uint32_t` stored in an `int`).
    pub fn set_ctl_lun(&mut self, log: &mut Log, value: u32) -> bool {
        let ok = Self::once(log, "ctl_lun", &self.name, self.ctl_lun < 0);
        if ok {
            self.ctl_lun = value as i32;
        }
        ok
    }

    /// `lun::set_device_type(uint8_t)`, as the kernel's LUN list gives it.
    pub fn set_device_type_number(&mut self, log: &mut Log, device_type: u8) -> bool {
        if device_type > 15 {
            log.warnx(format!(
                "invalid device-type \"{device_type}\" for lun \"{}\"",
                self.name
            ));
            return false;
        }
        self.device_type = device_type;
        true
    }

    /// `lun::set_device_type(const char *)`, as ctl.conf gives it.
    pub fn set_device_type(&mut self, log: &mut Log, value: &str) -> bool {
        let v = value.to_ascii_lowercase();
        let device_type = match v.as_str() {
            "disk" | "direct" => T_DIRECT,
            "processor" => T_PROCESSOR,
            "cd" | "cdrom" | "dvd" | "dvdrom" => T_CDROM,
            // strtonum(value, 0, 15): decimal, optional sign, whole string.
            _ => match value.trim_start().parse::<i64>() {
                Ok(n) if (0..=15).contains(&n) => n as u8,
                _ => {
                    log.warnx(format!("invalid device-type \"{value}\" for lun \"{}\"", self.name));
                    return false;
                }
            },
        };
        self.device_type = device_type;
        true
    }

    /// `lun::set_device_id`.
    pub fn set_device_id(&mut self, log: &mut Log, value: &str) -> bool {
        let ok = Self::once(log, "device_id", &self.name, self.device_id.is_empty());
        if ok {
            self.device_id = value.to_owned();
        }
        ok
    }

    /// `lun::set_path`.
    pub fn set_path(&mut self, log: &mut Log, value: &str) -> bool {
        let ok = Self::once(log, "path", &self.name, self.path.is_empty());
        if ok {
            self.path = value.to_owned();
        }
        ok
    }

    /// `lun::set_serial`.
    pub fn set_serial(&mut self, log: &mut Log, value: &str) -> bool {
        let ok = Self::once(log, "serial", &self.name, self.serial.is_empty());
        if ok {
            self.serial = value.to_owned();
        }
        ok
    }

    /// `lun::set_size`.
    pub fn set_size(&mut self, log: &mut Log, value: u64) -> bool {
        let ok = Self::once(log, "size", &self.name, self.size == 0);
        if ok {
            self.size = value;
        }
        ok
    }

    /// `lun::changed`: whether the LUN must be removed and created again
    /// (backend, block size, device id, path or serial number differ; the
    /// size, device type and options do not count).
    pub fn changed(&self, new: &Lun, log: &mut Log) -> bool {
        let (name, id) = (&self.name, self.ctl_lun);
        let why = if self.backend != new.backend {
            format!("backend for lun \"{name}\", CTL lun {id} changed; removing")
        } else if self.blocksize != new.blocksize {
            format!("blocksize for lun \"{name}\", CTL lun {id} changed; removing")
        } else if self.device_id != new.device_id {
            format!("device-id for lun \"{name}\", CTL lun {id} changed; removing")
        } else if self.path != new.path {
            format!("path for lun \"{name}\", CTL lun {id}, changed; removing")
        } else if self.serial != new.serial {
            format!("serial for lun \"{name}\", CTL lun {id} changed; removing")
        } else {
            return false;
        };
        log.debugx(why);
        true
    }

    /// `lun::verify`: the backend defaults to `block`, the block size to
    /// 512 (2048 for a CD); a size must be a multiple of the block size.
    fn verify(&mut self, log: &mut Log) -> bool {
        if self.backend.is_empty() {
            self.backend = "block".into();
        }
        if self.backend == "block" {
            if self.path.is_empty() {
                log.warnx(format!("missing path for lun \"{}\"", self.name));
                return false;
            }
        } else if self.backend == "ramdisk" {
            if self.size == 0 {
                log.warnx(format!("missing size for ramdisk-backed lun \"{}\"", self.name));
                return false;
            }
            if !self.path.is_empty() {
                log.warnx(format!(
                    "path must not be specified for ramdisk-backed lun \"{}\"",
                    self.name
                ));
                return false;
            }
        }
        if self.blocksize == 0 {
            self.blocksize = if self.device_type == T_CDROM {
                DEFAULT_CD_BLOCKSIZE
            } else {
                DEFAULT_BLOCKSIZE
            };
        } else if self.blocksize < 0 {
            log.warnx(format!(
                "invalid blocksize {} for lun \"{}\"; must be larger than 0",
                self.blocksize, self.name
            ));
            return false;
        }
        if self.size != 0 && !self.size.is_multiple_of(self.blocksize as u64) {
            log.warnx(format!(
                "invalid size for lun \"{}\"; must be multiple of blocksize",
                self.name
            ));
            return false;
        }
        true
    }
}

/// A target (`struct target`, iSCSI): its name, LUN numbers and what it
/// names of the rest.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `t_name`, in lower case (RFC 3722).
    pub name: String,
    /// The LUNs by number: their names.
    pub luns: BTreeMap<u32, String>,
    auth_group: Option<String>,
    private_auth: bool,
    portal_groups: usize,
    physical_ports: Vec<String>,
    redirection: bool,
    alias: bool,
}

impl Target {
    /// `t_label`.
    pub fn label(&self) -> String {
        format!("target \"{}\"", self.name)
    }
}

/// The configuration (`struct conf`).
#[derive(Clone, Debug, Default)]
pub struct Conf {
    /// `conf_debug`.
    pub debug: i32,
    /// The LUNs by name.
    pub luns: BTreeMap<String, Lun>,
    /// The targets by (lower-case) name.
    pub targets: BTreeMap<String, Target>,
    auth_groups: BTreeSet<String>,
    portal_groups: BTreeSet<String>,
    /// Auth-groups named by a target, port or portal-group.
    used_auth_groups: BTreeSet<String>,
    /// Portal-groups a target uses.
    used_portal_groups: BTreeSet<String>,
    /// Ports, `pg-target`.
    ports: BTreeSet<String>,
    pidfile: bool,
    default_ag_defined: bool,
    default_pg_defined: bool,
}

impl Conf {
    /// What `conf_new_from_file` starts from: the auth-groups `default`,
    /// `no-authentication` and `no-access`, the portal-group `default`.
    pub fn for_file() -> Conf {
        let mut conf = Conf::default();
        for ag in ["default", "no-authentication", "no-access"] {
            conf.auth_groups.insert(ag.into());
        }
        conf.portal_groups.insert("default".into());
        conf
    }

    /// `conf::add_lun`.
    pub fn add_lun(&mut self, log: &mut Log, name: &str) -> Option<&mut Lun> {
        if self.luns.contains_key(name) {
            log.warnx(format!("duplicated lun \"{name}\""));
            return None;
        }
        Some(self.luns.entry(name.to_owned()).or_insert_with(|| Lun::new(name)))
    }

    /// `conf::set_pidfile_path`.
    pub fn set_pidfile_path(&mut self, log: &mut Log) -> bool {
        if self.pidfile {
            log.warnx("pidfile specified more than once");
            return false;
        }
        self.pidfile = true;
        true
    }

    /// `auth_group_start` / `conf::add_auth_group`, with `default`
    /// definable once.
    pub fn start_auth_group(&mut self, log: &mut Log, name: &str) -> bool {
        if name == "default" {
            if self.default_ag_defined {
                log.warnx("duplicated auth-group \"default\"");
                return false;
            }
            self.default_ag_defined = true;
            return true;
        }
        if !self.auth_groups.insert(name.to_owned()) {
            log.warnx(format!("duplicated auth-group \"{name}\""));
            return false;
        }
        true
    }

    /// `portal_group_start` / `conf::add_portal_group`, with `default`
    /// definable once.
    pub fn start_portal_group(&mut self, log: &mut Log, name: &str) -> bool {
        if name == "default" {
            if self.default_pg_defined {
                log.warnx("duplicated portal-group \"default\"");
                return false;
            }
            self.default_pg_defined = true;
            return true;
        }
        if !self.portal_groups.insert(name.to_owned()) {
            log.warnx(format!("duplicated portal-group \"{name}\""));
            return false;
        }
        true
    }

    /// A portal-group's `discovery-auth-group`.
    pub fn use_auth_group(&mut self, log: &mut Log, ag: &str, pg: &str) -> bool {
        if !self.auth_groups.contains(ag) {
            log.warnx(format!(
                "unknown discovery-auth-group \"{ag}\" for portal-group \"{pg}\""
            ));
            return false;
        }
        self.used_auth_groups.insert(ag.to_owned());
        true
    }

    /// `conf::add_target` (with `valid_iscsi_name`'s length check).
    pub fn add_target(&mut self, log: &mut Log, name: &str) -> Option<String> {
        // libiscsiutil's MAX_NAME_LEN.
        if name.len() >= 223 {
            log.warnx(format!(
                "overlong name for target \"{name}\"; max length allowed by iSCSI specification is 223 characters"
            ));
            return None;
        }
        if name.len() >= 4
            && name[..4].eq_ignore_ascii_case("iqn.")
            && let Some(c) = name[4..]
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')))
        {
            log.warnx(format!(
                "invalid character \"{c}\" in target name \"{name}\"; allowed characters are letters, digits, '-', '.', and ':'"
            ));
        }
        let t_name = name.to_ascii_lowercase();
        if self.targets.contains_key(&t_name) {
            log.warnx(format!("duplicated target \"{name}\""));
            return None;
        }
        self.targets.insert(
            t_name.clone(),
            Target {
                name: t_name.clone(),
                ..Target::default()
            },
        );
        Some(t_name)
    }

    fn target(&mut self, t: &str) -> &mut Target {
        self.targets.entry(t.to_owned()).or_default()
    }

    fn check_lun_number(&mut self, log: &mut Log, t: &str, id: u32) -> bool {
        let target = self.target(t);
        let label = target.label();
        if id >= MAX_LUNS {
            log.warnx(format!("LUN {id} too big for {label}"));
            return false;
        }
        if target.luns.contains_key(&id) {
            log.warnx(format!("duplicate LUN {id} for {label}"));
            return false;
        }
        true
    }

    /// `iscsi_target::start_lun`: a LUN defined inside target `t`, named
    /// `target,lun,N`, with that as its SCSI name.  Returns its name.
    pub fn start_target_lun(&mut self, log: &mut Log, t: &str, id: u32) -> Option<String> {
        if !self.check_lun_number(log, t, id) {
            return None;
        }
        let name = format!("{t},lun,{id}");
        self.add_lun(log, &name)?.scsiname = name.clone();
        self.target(t).luns.insert(id, name.clone());
        Some(name)
    }

    /// `target::add_lun`: LUN `id` of target `t` is the LUN named `name`.
    pub fn add_target_lun(&mut self, log: &mut Log, t: &str, id: u32, name: &str) -> bool {
        if !self.check_lun_number(log, t, id) {
            return false;
        }
        if !self.luns.contains_key(name) {
            let label = self.target(t).label();
            log.warnx(format!("unknown LUN named {name} used for {label}"));
            return false;
        }
        self.target(t).luns.insert(id, name.to_owned());
        true
    }

    /// `target::set_auth_group`.
    pub fn set_target_auth_group(&mut self, log: &mut Log, t: &str, ag: &str) -> bool {
        let known = self.auth_groups.contains(ag);
        let target = self.target(t);
        let label = target.label();
        if target.auth_group.is_some() || target.private_auth {
            if target.private_auth {
                log.warnx(format!(
                    "cannot use both auth-group and explicit authorisations for {label}"
                ));
            } else {
                log.warnx(format!("auth-group for {label} specified more than once"));
            }
            return false;
        }
        if !known {
            log.warnx(format!("unknown auth-group \"{ag}\" for {label}"));
            return false;
        }
        target.auth_group = Some(ag.to_owned());
        self.used_auth_groups.insert(ag.to_owned());
        true
    }

    /// `target::use_private_auth`: `auth-type`, `chap`, `chap-mutual`,
    /// `initiator-name` or `initiator-portal` inside a target.
    pub fn use_private_auth(&mut self, log: &mut Log, t: &str, keyword: &str) -> bool {
        let target = self.target(t);
        if target.private_auth {
            return true;
        }
        if target.auth_group.is_some() {
            log.warnx(format!(
                "cannot use both auth-group and {keyword} for {}",
                target.label()
            ));
            return false;
        }
        target.private_auth = true;
        true
    }

    /// `iscsi_target::add_portal_group` (`conf::add_port`).
    pub fn add_target_portal_group(&mut self, log: &mut Log, t: &str, pg: &str, ag: Option<&str>) -> bool {
        let label = self.target(t).label();
        if !self.portal_groups.contains(pg) {
            log.warnx(format!("unknown portal-group \"{pg}\" for {label}"));
            return false;
        }
        if let Some(ag) = ag {
            if !self.auth_groups.contains(ag) {
                log.warnx(format!("unknown auth-group \"{ag}\" for {label}"));
                return false;
            }
            self.used_auth_groups.insert(ag.to_owned());
        }
        let port = format!("{pg}-{t}");
        if !self.ports.insert(port.clone()) {
            log.warnx(format!("duplicate port \"{port}\""));
            log.warnx(format!("can't link portal-group \"{pg}\" to {label}"));
            return false;
        }
        self.used_portal_groups.insert(pg.to_owned());
        self.target(t).portal_groups += 1;
        true
    }

    /// `target::add_physical_port`.
    pub fn add_target_port(&mut self, log: &mut Log, t: &str, port: &str) -> bool {
        let target = self.target(t);
        if target.physical_ports.iter().any(|p| p == port) {
            log.warnx(format!(
                "duplicate physical port \"{port}\" for target \"{}\"",
                target.name
            ));
            return false;
        }
        target.physical_ports.push(port.to_owned());
        true
    }

    /// `target::set_alias`.
    pub fn set_target_alias(&mut self, log: &mut Log, t: &str) -> bool {
        let target = self.target(t);
        if target.alias {
            log.warnx(format!("alias for {} specified more than once", target.label()));
            return false;
        }
        target.alias = true;
        true
    }

    /// `target::set_redirection`.
    pub fn set_target_redirection(&mut self, log: &mut Log, t: &str, addr: &str) -> bool {
        let target = self.target(t);
        if target.redirection {
            log.warnx(format!(
                "cannot set redirection to \"{addr}\" for {}; already defined",
                target.label()
            ));
            return false;
        }
        target.redirection = true;
        true
    }

    /// `conf::delete_target_luns`: LUN `name` goes from every target.
    pub fn delete_target_luns(&mut self, name: &str) {
        for t in self.targets.values_mut() {
            t.luns.retain(|_, l| l != name);
        }
    }

    /// The debug lines `conf_new_from_file` prints for the groups left to
    /// their defaults.
    pub fn defaults(&self, log: &mut Log) {
        if !self.default_ag_defined {
            log.debugx("auth-group \"default\" not defined; going with defaults");
        }
        if !self.default_pg_defined {
            log.debugx("portal-group \"default\" not defined; going with defaults");
            log.debugx("transport-group \"default\" not defined; going with defaults");
        }
    }

    /// `conf::verify`: every LUN verified (the first that fails fails the
    /// configuration), and the warnings about targets and groups.
    pub fn verify(&mut self, log: &mut Log) -> bool {
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        for lun in self.luns.values_mut() {
            if !lun.verify(log) {
                return false;
            }
            if lun.path.is_empty() {
                continue;
            }
            match paths.get(&lun.path) {
                Some(other) => log.debugx(format!(
                    "WARNING: path \"{}\" duplicated between lun \"{}\", and lun \"{other}\"",
                    lun.path, lun.name
                )),
                None => {
                    paths.insert(lun.path.clone(), lun.name.clone());
                }
            }
        }
        for t in self.targets.values_mut() {
            if t.auth_group.is_none() && !t.private_auth {
                t.auth_group = Some("default".into());
                self.used_auth_groups.insert("default".into());
            }
            if t.portal_groups == 0 && t.physical_ports.is_empty() {
                t.portal_groups = 1;
                self.used_portal_groups.insert("default".into());
            }
            if t.luns.is_empty() && !t.redirection {
                log.warnx(format!("no LUNs defined for {}", t.label()));
            }
        }
        for pg in &self.portal_groups {
            if pg != "default" && !self.used_portal_groups.contains(pg) {
                log.warnx(format!("portal-group \"{pg}\" not assigned to any target"));
            }
        }
        for ag in &self.auth_groups {
            if !["default", "no-authentication", "no-access"].contains(&ag.as_str())
                && !self.used_auth_groups.contains(ag)
            {
                log.warnx(format!("auth-group \"{ag}\" not assigned to any target"));
            }
        }
        true
    }
}

//! sysctl(8) and kenv(1) against the simulated kernel's sysctl tree and
//! environment, with their output and messages (FreeBSD 15
//! `sbin/sysctl/sysctl.c`: `parse`, `show_var`, `sysctl_all`;
//! `bin/kenv/kenv.c`).

use super::args::{getopt, strerror, strtoumax};
use crate::sys;
use crate::sysctl::{self, Entry, Value};

const USAGE: &str = "usage: sysctl [-d] name[=value] ... | sysctl [-d] -a";

/// `sysctl [-d] name[=value] ...` and `sysctl [-d] -a`: what it prints, or
/// (if any operand failed) that and its warnings.
pub(super) fn sysctl(args: &[&str]) -> Result<String, String> {
    let (opts, operands) = getopt(args, "ad").map_err(|e| format!("sysctl: {e}\n{USAGE}"))?;
    let all = opts.iter().any(|(c, _)| *c == 'a');
    let descr = opts.iter().any(|(c, _)| *c == 'd');
    if operands.is_empty() != all {
        return Err(USAGE.into());
    }
    let mut out = String::new();
    let mut failed = false;
    if all {
        show_all(&sysctl::list(""), descr, &mut out);
    }
    for operand in operands {
        if let Err(warning) = parse(operand, descr, &mut out) {
            out += &warning;
            out.push('\n');
            failed = true;
        }
    }
    if failed { Err(out) } else { Ok(out) }
}

/// One operand: shows the OID (a node: everything under it), or sets it
/// and shows `old -> new`.
fn parse(operand: &str, descr: bool, out: &mut String) -> Result<(), String> {
    let (name, value) = match operand.find(['=', ':']) {
        Some(at) => {
            let v = operand[at + 1..].trim_start();
            let v = match v.as_bytes().first() {
                Some(&q @ (b'"' | b'\'')) if v.len() > 1 && v.as_bytes()[v.len() - 1] == q => &v[1..v.len() - 1],
                Some(b'"' | b'\'') => &v[1..],
                _ => v,
            };
            (&operand[..at], Some(v))
        }
        None => (operand, None),
    };
    let name = name.trim_end();
    let found = sysctl::list(name);
    let Some(oid) = found.first() else {
        return Err(format!("sysctl: unknown oid '{name}'"));
    };
    let Some(value) = value.filter(|_| !descr) else {
        if oid.node {
            show_all(&found[if descr { 0 } else { 1 }..], descr, out);
        } else if let Some(line) = show(oid, descr) {
            *out += &line;
            out.push('\n');
        }
        return Ok(());
    };
    if oid.node {
        return Err(format!("sysctl: oid '{name}' isn't a leaf node"));
    }
    if oid.kind & sys::CTLFLAG_WR == 0 {
        return Err(if oid.kind & sys::CTLFLAG_TUN != 0 {
            format!("sysctl: oid '{name}' is a read only tunable\nsysctl: Tunable values are set in /boot/loader.conf")
        } else {
            format!("sysctl: oid '{name}' is read only")
        });
    }
    let new = match oid.kind & sys::CTLTYPE {
        sys::CTLTYPE_STRING => value.as_bytes().to_vec(),
        t @ (sys::CTLTYPE_U32 | sys::CTLTYPE_U64) => {
            let (type_name, size) = if t == sys::CTLTYPE_U32 {
                ("uint32_t", 4)
            } else {
                ("uint64_t", 8)
            };
            if value.is_empty() {
                return Err("sysctl: empty numeric value".into());
            }
            let mut bytes = Vec::new();
            for v in value.split([' ', ',']).filter(|v| !v.is_empty()) {
                let (n, any, overflow, rest) = strtoumax(v);
                if !any || overflow || !rest.is_empty() {
                    return Err(format!("sysctl: invalid {type_name} '{v}'"));
                }
                // strtoul(3) cast to uint32_t, as parse_numeric does.
                bytes.extend_from_slice(&n.to_ne_bytes()[..size]);
            }
            bytes
        }
        t => return Err(format!("sysctl: oid '{name}' is type {t}, cannot set that")),
    };
    let old = show(oid, false).unwrap_or_default();
    if let Err(e) = sysctl::set(name, &new) {
        let why = match e {
            e if e == sys::EOPNOTSUPP as i32 => "value is not available".into(),
            e if e == sys::ENOMEM as i32 => "type is unknown to this program".into(),
            e => strerror(e),
        };
        return Err(format!("{old}\nsysctl: {operand}: {why}"));
    }
    let new = show(oid, false)
        .map(|l| l[oid.name.len() + 2..].to_owned())
        .unwrap_or_default();
    *out += &format!("{old} -> {new}\n");
    Ok(())
}

/// `sysctl_all`: each OID that shows a line, one a line.
fn show_all(entries: &[Entry], descr: bool, out: &mut String) {
    for e in entries {
        if let Some(line) = show(e, descr) {
            *out += &line;
            out.push('\n');
        }
    }
}

/// `show_var`: `name: value` (`-d`: `name: description`); nothing for a
/// node or what cannot be read.
fn show(e: &Entry, descr: bool) -> Option<String> {
    if descr {
        return Some(format!("{}: {}", e.name, e.descr));
    }
    if e.node {
        return None;
    }
    let value = match sysctl::get(&e.name).ok()? {
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::String(s) => s,
    };
    Some(format!("{}: {value}", e.name))
}

/// `kenv`, `kenv name`, `kenv name=value`: the kernel environment, where
/// loader tunables are set before `kldload`.
pub(super) fn kenv(args: &[&str]) -> Result<String, String> {
    match args {
        [] => Ok(sysctl::kenv_all()
            .iter()
            .map(|(n, v)| format!("{n}=\"{v}\"\n"))
            .collect()),
        [arg] => match arg.split_once('=') {
            Some((name, value)) => {
                sysctl::kenv_set(name, value);
                Ok(format!("{name}=\"{value}\"\n"))
            }
            None => sysctl::kenv_get(arg)
                .map(|v| format!("{v}\n"))
                .ok_or_else(|| format!("kenv: unable to get {arg}: {}", strerror(sys::ENOENT as i32))),
        },
        _ => Err("usage: kenv [name[=value]]".into()),
    }
}

//! The command language of `ctlpass-sim`: what a FreeBSD administrator
//! types, run against a simulated machine.  One command a line; `#` starts
//! a comment.
//!
//! | command | does |
//! | --- | --- |
//! | `kldload ctlpass`, `kldunload ctlpass` | load or unload the module |
//! | `kldstat` | list the loaded modules |
//! | `camcontrol devlist` | list devices and the periphs attached to them |
//! | `dmesg` | kernel messages printed since the last `dmesg` |
//! | `sysctl [name]` | the sysctl OIDs under `name` |
//! | `vmstat -m` | memory in use by malloc type |
//! | `balance [type]` | allocations and frees per malloc type since boot |

use std::ffi::c_int;

use crate::{Machine, malloc, sysctl};

/// A machine and what has been shown of it.
pub struct Shell {
    machine: Machine,
    dmesg_shown: usize,
}

/// `strerror` for the errno values the simulated kernel returns.
fn strerror(errno: c_int) -> String {
    std::io::Error::from_raw_os_error(errno)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or("error")
        .to_owned()
}

impl Shell {
    /// A shell on `machine`.
    pub fn new(machine: Machine) -> Shell {
        Shell {
            machine,
            dmesg_shown: 0,
        }
    }

    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Runs one line; `Ok` with what the command prints, `Err` with its
    /// error message (the command failed, as its exit status would say).
    pub fn run(&mut self, line: &str) -> Result<String, String> {
        let line = line.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => Ok(String::new()),
            ["kldload", name] => self.module(name, "kldload", "load", Machine::kldload),
            ["kldunload", name] => self.module(name, "kldunload", "unload", Machine::kldunload),
            ["kldstat"] => Ok(self.machine.modules().iter().map(|m| format!("{m}\n")).collect()),
            ["camcontrol", "devlist"] => Ok(self.machine.devlist()),
            ["dmesg"] => {
                let all = self.machine.dmesg();
                let new = all.get(self.dmesg_shown..).unwrap_or("").to_owned();
                self.dmesg_shown = all.len();
                Ok(new)
            }
            ["sysctl"] => Ok(Self::sysctl("")),
            ["sysctl", name] => match Self::sysctl(name) {
                s if s.is_empty() => Err(format!("sysctl: unknown oid '{name}'")),
                s => Ok(s),
            },
            ["vmstat", "-m"] => Ok(Self::vmstat()),
            ["balance"] => Ok(Self::balance(None)),
            ["balance", name] => Ok(Self::balance(Some(name))),
            _ => Err(format!("{}: unknown command", words[0])),
        }
    }

    fn module(
        &self,
        name: &str,
        command: &str,
        verb: &str,
        op: fn(&Machine) -> Result<(), c_int>,
    ) -> Result<String, String> {
        let file = name.trim_end_matches(".ko");
        if file != "ctlpass" {
            return Err(format!("{command}: can't {verb} {name}: No such file or directory"));
        }
        op(&self.machine)
            .map(|()| String::new())
            .map_err(|e| format!("{command}: can't {verb} {name}: {}", strerror(e)))
    }

    fn sysctl(prefix: &str) -> String {
        sysctl::list(prefix)
            .iter()
            .map(|e| {
                if e.node {
                    format!("{}: (node) {}\n", e.name, e.descr)
                } else {
                    format!("{}\n", e.name)
                }
            })
            .collect()
    }

    fn vmstat() -> String {
        let mut out = format!("{:>18} {:>6} {:>8} {:>8}\n", "Type", "InUse", "MemUse", "Requests");
        for t in malloc::vmstat_m() {
            out += &format!(
                "{:>18} {:>6} {:>7}K {:>8}\n",
                t.name,
                t.in_use,
                t.bytes.div_ceil(1024),
                t.requests
            );
        }
        out
    }

    fn balance(only: Option<&str>) -> String {
        malloc::balances()
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name))
            .map(|(name, b)| {
                format!(
                    "{name}: {} allocated, {} freed, {} outstanding\n",
                    b.allocated,
                    b.freed,
                    b.outstanding()
                )
            })
            .collect()
    }
}

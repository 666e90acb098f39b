//! ctld(8) of FreeBSD 15, as far as it concerns LUNs: it reads ctl.conf
//! (`parse`), rebuilds the configuration it left in the kernel from CTL's
//! LUN list at startup, and applies a new configuration to CTL with
//! `CTL_LUN_REQ` requests (`apply`), on start, on SIGHUP (reload) and on
//! SIGTERM (stop: an empty configuration, so every LUN it made is
//! removed).  Followed: usr.sbin/ctld/ctld.cc (`main`, `conf_new_from_file`,
//! `conf::apply`), kernel.cc, parse.y, token.l.
//!
//! Its log lines are printed as ctld prints them on stderr (`ctld: ...`);
//! the daemon's go to syslog instead, with the same text.  `log_debugx`
//! lines show only at a debug level above 0 (`ctld -d`, or `debug 1` in
//! ctl.conf once applied).  Ports, portals, iSNS, the pidfile and
//! connections are not modelled, nor their debug lines.

pub mod apply;
pub mod conf;
pub mod parse;

use std::collections::BTreeMap;

pub use apply::Sent;
use conf::Conf;

/// ctld's log (libiscsiutil's log.c): the lines printed, and the debug
/// level.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// The lines, `ctld: ` first.
    pub lines: Vec<String>,
    /// `log_init`'s level.
    pub level: i32,
}

impl Log {
    /// `log_warnx`.
    pub fn warnx(&mut self, message: impl Into<String>) {
        self.lines.push(format!("ctld: {}", message.into()));
    }

    /// `log_debugx`: only at a level above 0.
    pub fn debugx(&mut self, message: impl Into<String>) {
        if self.level > 0 {
            self.warnx(message);
        }
    }
}

/// ctld.hh `DEFAULT_CONFIG_PATH`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ctl.conf";

/// How ctld was started (its options).
#[derive(Clone, Debug)]
pub struct Flags {
    /// `-f`.
    pub config: String,
    /// `-d`, counted.
    pub debug: i32,
    /// `-t`: check the configuration and exit.
    pub test: bool,
}

impl Flags {
    /// Reads ctld's options (`-d`, `-t`, `-f FILE`; `-u` and `-R` are not
    /// modelled).
    pub fn parse(args: &[&str]) -> Result<Flags, String> {
        let usage = "usage: ctld [-d][-u][-f config-file]\n       ctld -t [-u][-f config-file]";
        let (opts, rest) = crate::shell::args::getopt(args, "dtuf:R").map_err(|e| format!("ctld: {e}\n{usage}"))?;
        if !rest.is_empty() {
            return Err(usage.into());
        }
        let mut flags = Flags {
            config: DEFAULT_CONFIG_PATH.into(),
            debug: 0,
            test: false,
        };
        for (c, v) in opts {
            match c {
                'd' => flags.debug += 1,
                't' => flags.test = true,
                'f' => flags.config = v.unwrap_or("").to_owned(),
                _ => return Err(format!("ctld: -{c} is not modelled")),
            }
        }
        Ok(flags)
    }
}

/// A running ctld.
struct Running {
    flags: Flags,
    conf: Conf,
    pid: u32,
}

/// ctld on the simulated machine: whether it runs, what it logged, and
/// every request it sent CTL.
#[derive(Default)]
pub struct Ctld {
    running: Option<Running>,
    log: Log,
    sent: Vec<Sent>,
    next_pid: u32,
}

impl Ctld {
    /// The requests sent since the last call.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }

    /// The PID of the running ctld.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// The log lines printed since the last call.
    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log.lines)
    }

    /// `conf_new_from_file`.
    fn conf_new_from_file(&mut self, path: &str, files: &BTreeMap<String, String>) -> Option<Conf> {
        let log = &mut self.log;
        log.debugx(format!("obtaining configuration from {path}"));
        let Some(text) = files.get(path) else {
            log.warnx(format!(
                "unable to open configuration file {path}: No such file or directory"
            ));
            return None;
        };
        let mut conf = Conf::for_file();
        if !parse::parse_conf(text, &mut conf, log) {
            return None;
        }
        conf.defaults(log);
        conf.verify(log).then_some(conf)
    }

    /// Runs ctld (`main` until it daemonizes and has applied its first
    /// configuration): `Ok` with its log if it is running (or, with `-t`,
    /// the configuration is good), `Err` with its log if it exited 1.
    pub fn start(&mut self, flags: Flags, files: &BTreeMap<String, String>) -> Result<Vec<String>, Vec<String>> {
        self.log.level = flags.debug;
        let Some(mut new) = self.conf_new_from_file(&flags.config, files) else {
            self.log.warnx("configuration error; exiting");
            return Err(self.take_log());
        };
        if flags.test {
            return Ok(self.take_log());
        }
        if let Some(pid) = self.pid() {
            self.log.warnx(format!("daemon already running, pid: {pid}."));
            return Err(self.take_log());
        }
        let mut old = match apply::conf_new_from_kernel(&mut self.log) {
            Ok(c) => c,
            Err(e) => {
                self.log.warnx(e);
                return Err(self.take_log());
            }
        };
        if flags.debug > 0 {
            old.debug = flags.debug;
            new.debug = flags.debug;
        }
        if new.apply(&mut old, &mut self.log, &mut self.sent) != 0 {
            self.log.warnx("failed to apply configuration; exiting");
            return Err(self.take_log());
        }
        self.next_pid = self.next_pid.max(800) + 1;
        self.running = Some(Running {
            flags,
            conf: new,
            pid: self.next_pid,
        });
        Ok(self.take_log())
    }

    /// SIGHUP: the configuration file is read again and applied; if it
    /// cannot be, the running one stays.  `None` if ctld is not running.
    pub fn reload(&mut self, files: &BTreeMap<String, String>) -> Option<Vec<String>> {
        let mut running = self.running.take()?;
        self.log.debugx("received SIGHUP, reloading configuration");
        match self.conf_new_from_file(&running.flags.config, files) {
            None => self.log.warnx("configuration error, continuing with old configuration"),
            Some(mut new) => {
                if running.flags.debug > 0 {
                    new.debug = running.flags.debug;
                }
                if new.apply(&mut running.conf, &mut self.log, &mut self.sent) != 0 {
                    self.log.warnx("failed to reload configuration");
                }
                running.conf = new;
            }
        }
        self.running = Some(running);
        Some(self.take_log())
    }

    /// SIGKILL: ctld ends at once; the LUNs it made stay in CTL (the next
    /// ctld finds them by their `ctld_name`).  `false` if it was not
    /// running.
    pub fn kill(&mut self) -> bool {
        self.running.take().is_some()
    }

    /// SIGTERM: an empty configuration is applied (every LUN ctld made is
    /// removed) and ctld exits.  `None` if it is not running.
    pub fn stop(&mut self) -> Option<Vec<String>> {
        let mut running = self.running.take()?;
        self.log.debugx("exiting on signal; reloading empty configuration");
        self.log
            .debugx("removing CTL iSCSI ports and terminating all connections");
        let mut new = Conf::default();
        if running.flags.debug > 0 {
            new.debug = running.flags.debug;
        }
        if new.apply(&mut running.conf, &mut self.log, &mut self.sent) != 0 {
            self.log.warnx("failed to apply configuration");
        }
        self.log.warnx("exiting on signal");
        Some(self.take_log())
    }
}

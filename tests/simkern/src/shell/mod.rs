//! The command language of `ctlpass-sim`: what a FreeBSD administrator
//! types, run against a simulated machine.  One command a line; `#` starts
//! a comment; `$TGT` is the URL of the target `tgtd start` started and
//! `$PORTAL` the URL of the machine's own iSCSI target (`portal listen`); a
//! line starting with `!` succeeds when its command fails (sh's negation,
//! for scripts that show an error on purpose).
//!
//! | command | does |
//! | --- | --- |
//! | `kldload ctlpass`, `kldunload ctlpass` | load or unload the module |
//! | `kldstat` | list the loaded modules |
//! | `camcontrol devlist` | list devices and the periphs attached to them |
//! | `camcontrol inquiry DEV [-D] [-S] [-R]` | INQUIRY and serial number, sent to the device itself |
//! | `camcontrol readcap DEV [-b] [-l] [-N] [-q] [-s]` | READ CAPACITY, sent to the device itself |
//! | `ctladm create -b passthrough -o device=da3 ...` | create a LUN (also `remove`, `modify`) |
//! | `ctladm devlist [-b backend] [-v] [-x]` | list the LUNs |
//! | `ctladm inquiry N`, `readcap N`, `tur N`, `start N`, `stop N` | what an initiator sees of LUN N |
//! | `read N LBA BLOCKS [FILE]`, `write N LBA BLOCKS FILE` | READ/WRITE(10 or 16) of LUN N, data shown as `hexdump -C` or in FILE |
//! | `cdb N HEX [in=LEN \| out=FILE]` | a raw CDB to LUN N: status, residual, data |
//! | `device add disk\|cd [name=da5] [blocks=N] ...` | hot-plug an emulated device |
//! | `device add iscsi URL [name=da5]` | attach a LUN of an iSCSI target |
//! | `device remove NAME` | hot-unplug a device (`da5`, `pass3`, `cam=B:T:L`) |
//! | `tgtd start`, `tgtd stop` | run a tgtd on 127.0.0.1 (LUN 1 disk, 2 tape, 3 CD) |
//! | `portal listen ADDR`, `portal stop` | serve CTL's LUNs as iSCSI target `iqn.2026-11.org.freebsd.ctlpass:sim` on ADDR (`127.0.0.1:0`: any port); prints `$PORTAL` |
//! | `iscsi-inq`, `iscsi-readcapacity16`, `iscsi-ls`, `iscsi-test-cu` ARGS | the host's libiscsi tool, as an administrator on another machine runs it (e.g. `iscsi-inq $PORTAL/0`); prints its output |
//! | `dmesg` | kernel messages printed since the last `dmesg` |
//! | `sysctl [-d] name[=value] ...`, `sysctl [-d] -a` | sysctl(8): values (`-d`: descriptions) of the OIDs under `name`; set one |
//! | `kenv [name[=value]]` | the kernel environment: loader tunables, set before `kldload` |
//! | `vmstat -m` | memory in use by malloc type |
//! | `balance [type]` | allocations and frees per malloc type since boot |
//! | `conf FILE`, then lines, then `end` | writes FILE (e.g. `/etc/ctl.conf`), the lines as typed |
//! | `ctld [-d] [-t] [-f FILE]` | runs ctld (the LUN part of it: see `simkern::ctld`) |
//! | `service ctld start\|stop\|restart\|reload\|status` | ctld with /etc/ctl.conf, as rc.d/ctld runs it |
//! | `kill [-HUP\|-TERM\|-KILL\|-9] PID` | a signal to ctld (its PID: `service ctld status`) |
//!
//! ctladm's commands may be typed without `ctladm` (`create ...`,
//! `devlist -v`, `tur 0`).  `device add` and `device remove` print the
//! kernel messages of the arrival or departure, as the console shows them.
//! ctld's commands print its log lines (`ctld: ...`); `service ctld stop`
//! removes the LUNs ctld made, as ctld does on SIGTERM.

pub(crate) mod args;
mod camcontrol;
mod ctladm;
mod devices;
mod sysctl_cmd;
pub(crate) mod xml;

use std::collections::BTreeMap;
use std::ffi::c_int;

use crate::ctld::{self, Ctld};
use crate::iscsi::Portal;
use crate::{Machine, ctl, malloc, sys};

/// The libiscsi tools the shell runs.
const ISCSI_TOOLS: [&str; 4] = ["iscsi-inq", "iscsi-readcapacity16", "iscsi-ls", "iscsi-test-cu"];

/// A machine, the hardware around it, and what has been shown of it.
pub struct Shell {
    // Stopped first (in `drop`): its sessions' commands complete while the
    // machine runs.
    portal: Option<Portal>,
    // Dropped before `lab`: the machine shuts down before the tgtd its
    // iSCSI devices talk to stops.
    machine: Machine,
    dmesg_shown: usize,
    lab: devices::Lab,
    /// Files written with `conf`.
    files: BTreeMap<String, String>,
    /// A `conf FILE` being typed: its path and lines so far.
    typing: Option<(String, String)>,
    ctld: Ctld,
}

impl Shell {
    /// A shell on `machine`.
    pub fn new(machine: Machine) -> Shell {
        Shell {
            portal: None,
            machine,
            dmesg_shown: 0,
            lab: devices::Lab::default(),
            files: BTreeMap::new(),
            typing: None,
            ctld: Ctld::default(),
        }
    }

    /// Writes a file of the simulated machine (what `conf FILE` does).
    pub fn write_file(&mut self, path: &str, text: &str) {
        self.files.insert(path.to_owned(), text.to_owned());
    }

    /// ctld: the requests it sent.
    pub fn ctld(&mut self) -> &mut Ctld {
        &mut self.ctld
    }

    /// A line of a file being typed after `conf FILE`: kept as it is,
    /// comments and blank lines included; `end` writes the file.  `None`
    /// if no file is being typed.
    fn typed(&mut self, line: &str) -> Option<String> {
        let (path, text) = self.typing.as_mut()?;
        if line.trim() == "end" {
            let (path, text) = (std::mem::take(path), std::mem::take(text));
            self.typing = None;
            self.files.insert(path, text);
        } else {
            text.push_str(line);
            text.push('\n');
        }
        Some(format!("> {line}\n"))
    }

    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Runs one line; `Ok` with what the command prints, `Err` with its
    /// error message (the command failed, as its exit status would say).
    pub fn run(&mut self, line: &str) -> Result<String, String> {
        if self.typed(line).is_some() {
            return Ok(String::new());
        }
        let line = line.split('#').next().unwrap_or("").trim();
        match line
            .strip_prefix('!')
            .filter(|rest| rest.starts_with(char::is_whitespace))
        {
            Some(command) => match self.expand_and_dispatch(command) {
                Ok(out) => Err(out.trim_end_matches('\n').to_owned()),
                Err(e) => Ok(if e.is_empty() { e } else { format!("{e}\n") }),
            },
            None => self.expand_and_dispatch(line),
        }
    }

    fn expand_and_dispatch(&mut self, line: &str) -> Result<String, String> {
        let line = self.expand(line)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        self.dispatch(&words)
    }

    /// One line as `ctlpass-sim` shows it: `None` for a blank or comment
    /// line; otherwise the echo `# command` and what the command printed,
    /// and whether it succeeded.
    pub fn step(&mut self, line: &str) -> Option<(String, bool)> {
        if let Some(echo) = self.typed(line) {
            return Some((echo, true));
        }
        let command = line.split('#').next().unwrap_or("").trim();
        if command.is_empty() {
            return None;
        }
        let (mut out, ok) = match self.run(command) {
            Ok(out) => (out, true),
            Err(e) => (e, false),
        };
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        Some((format!("# {command}\n{out}"), ok))
    }

    /// Runs a script as `ctlpass-sim --script` does: line by line, stopping
    /// after the first command that fails unless `keep_going`.  Returns
    /// the transcript and whether every command succeeded.
    pub fn run_script(&mut self, script: &str, keep_going: bool) -> (String, bool) {
        let mut transcript = String::new();
        let mut all_ok = true;
        for line in script.lines() {
            let Some((out, ok)) = self.step(line) else {
                continue;
            };
            transcript += &out;
            all_ok &= ok;
            if !ok && !keep_going {
                break;
            }
        }
        (transcript, all_ok)
    }

    /// Expands `$TGT` and `$PORTAL` (and `${TGT}`, `${PORTAL}`).
    fn expand(&self, line: &str) -> Result<String, String> {
        let portal = self.portal.as_ref().map(Portal::url);
        let vars = [
            ("TGT", self.lab.tgt_url(), "tgtd start"),
            ("PORTAL", portal.as_deref(), "portal listen"),
        ];
        let mut line = line.to_owned();
        for (name, value, setter) in vars {
            let (plain, braced) = (format!("${name}"), format!("${{{name}}}"));
            if !line.contains(&plain) && !line.contains(&braced) {
                continue;
            }
            let value = value.ok_or_else(|| format!("ctlpass-sim: {name} is not set ({setter} sets it)"))?;
            line = line.replace(&braced, value).replace(&plain, value);
        }
        Ok(line)
    }

    /// `portal listen ADDR`: prints the target's URL (`$PORTAL`).
    fn portal_listen(&mut self, addr: &str) -> Result<String, String> {
        if let Some(p) = &self.portal {
            return Err(format!("portal listen: already listening: {}", p.url()));
        }
        let portal = Portal::listen(addr).map_err(|e| format!("portal listen: {addr}: {e}"))?;
        let out = format!("{}\n", portal.url());
        self.portal = Some(portal);
        Ok(out)
    }

    /// Runs one of the host's libiscsi tools and returns its output; a
    /// failure says its exit status and what it wrote on stderr.
    fn iscsi_tool(tool: &str, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new(tool)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{tool}: {e} (scripts/install-deps.sh installs libiscsi-bin)"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{stdout}{stderr}{tool}: {}", out.status))
    }

    fn dispatch(&mut self, words: &[&str]) -> Result<String, String> {
        match words {
            [] => Ok(String::new()),
            ["kldload", name] => self.module(name, true),
            ["kldunload", name] => self.module(name, false),
            ["kldstat"] => Ok(self.machine.modules().iter().map(|m| format!("{m}\n")).collect()),
            ["camcontrol", rest @ ..] => camcontrol::run(&self.machine, rest),
            ["ctladm", rest @ ..] => ctladm::run(rest),
            ["read", rest @ ..] => ctladm::read(rest),
            ["write", rest @ ..] => ctladm::write(rest),
            ["cdb", rest @ ..] => ctladm::cdb(rest),
            [
                "create" | "remove" | "modify" | "devlist" | "inquiry" | "readcap" | "readcapacity" | "tur" | "start"
                | "stop",
                ..,
            ] => ctladm::run(words),
            ["device", "add", rest @ ..] => self.lab.add(&self.machine, rest),
            ["device", "remove", name] => self.lab.remove(&self.machine, name),
            ["device", ..] => Err("usage: device add disk|cd|iscsi ... | device remove NAME".into()),
            ["tgtd", "start"] => self.lab.tgtd_start(),
            ["tgtd", "stop"] => self.lab.tgtd_stop(),
            ["tgtd", ..] => Err("usage: tgtd start | tgtd stop".into()),
            ["portal", "listen", addr] => self.portal_listen(addr),
            ["portal", "stop"] => match self.portal.take() {
                Some(_) => Ok(String::new()),
                None => Err("portal stop: not listening".into()),
            },
            ["portal", ..] => Err("usage: portal listen ADDR | portal stop".into()),
            [tool, args @ ..] if ISCSI_TOOLS.contains(tool) => Self::iscsi_tool(tool, args),
            ["dmesg"] => {
                let all = self.machine.dmesg();
                let new = all.get(self.dmesg_shown..).unwrap_or("").to_owned();
                self.dmesg_shown = all.len();
                Ok(new)
            }
            ["sysctl", rest @ ..] => sysctl_cmd::sysctl(rest),
            ["kenv", rest @ ..] => sysctl_cmd::kenv(rest),
            ["conf", path] => {
                self.typing = Some(((*path).to_owned(), String::new()));
                Ok(String::new())
            }
            ["ctld", rest @ ..] => {
                let flags = ctld::Flags::parse(rest)?;
                let lines = self.ctld.start(flags, &self.files);
                lines.map(|l| Self::lines(&l)).map_err(|l| Self::lines(&l))
            }
            ["service", "ctld", action] => self.service_ctld(action),
            ["kill", pid] => self.kill("-TERM", pid),
            ["kill", signal, pid] => self.kill(signal, pid),
            ["vmstat", "-m"] => Ok(Self::vmstat()),
            ["balance"] => Ok(Self::balance(None)),
            ["balance", name] => Ok(Self::balance(Some(name))),
            [command, ..] => Err(format!("{command}: unknown command")),
        }
    }

    fn lines(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// kill(1) of ctld: SIGHUP reloads, SIGTERM stops it (removing its
    /// LUNs), SIGKILL ends it with its LUNs left in CTL.
    fn kill(&mut self, signal: &str, pid: &str) -> Result<String, String> {
        if self.ctld.pid().is_none_or(|p| p.to_string() != pid) {
            return Err(format!("kill: {pid}: No such process"));
        }
        let lines = match signal {
            "-HUP" | "-1" => self.ctld.reload(&self.files),
            "-TERM" | "-15" => self.ctld.stop(),
            "-KILL" | "-9" => self.ctld.kill().then(Vec::new),
            _ => {
                return Err(format!(
                    "kill: {}: invalid signal (ctlpass-sim: HUP, TERM, KILL)",
                    &signal[1..]
                ));
            }
        };
        Ok(Self::lines(&lines.unwrap_or_default()))
    }

    /// `service ctld ACTION` as rc.d/ctld and rc.subr run it, with ctld's
    /// log lines.
    fn service_ctld(&mut self, action: &str) -> Result<String, String> {
        let not_running = "ctld not running? (check /var/run/ctld.pid).";
        match action {
            "start" => {
                if let Some(pid) = self.ctld.pid() {
                    return Err(format!("ctld already running? (pid={pid})."));
                }
                let flags = ctld::Flags::parse(&[])?;
                let out = self.ctld.start(flags, &self.files);
                out.map(|l| format!("Starting ctld.\n{}", Self::lines(&l)))
                    .map_err(|l| format!("Starting ctld.\n{}", Self::lines(&l)))
            }
            "stop" => {
                let pid = self.ctld.pid().ok_or(not_running)?;
                let lines = self.ctld.stop().unwrap_or_default();
                Ok(format!(
                    "Stopping ctld.\n{}Waiting for PIDS: {pid}.\n",
                    Self::lines(&lines)
                ))
            }
            "reload" => {
                let lines = self.ctld.reload(&self.files).ok_or(not_running)?;
                Ok(format!("Reloading ctld config files.\n{}", Self::lines(&lines)))
            }
            "restart" => {
                let stopped = match self.service_ctld("stop") {
                    Ok(out) => out,
                    Err(e) => format!("{e}\n"),
                };
                match self.service_ctld("start") {
                    Ok(out) => Ok(stopped + &out),
                    Err(e) => Err(stopped + &e),
                }
            }
            "status" => match self.ctld.pid() {
                Some(pid) => Ok(format!("ctld is running as pid {pid}.\n")),
                None => Err("ctld is not running.".into()),
            },
            _ => Err(format!(
                "/etc/rc.d/ctld: unknown directive '{action}'.\nUsage: /etc/rc.d/ctld [fast|force|one|quiet](start|stop|restart|rcvar|reload|enabled|describe|extracommands|status|poll)"
            )),
        }
    }

    /// kldload(8) and kldunload(8), with their messages.
    fn module(&self, name: &str, load: bool) -> Result<String, String> {
        let file = name.trim_end_matches(".ko");
        let result: Result<(), c_int> = match (file == "ctlpass", load) {
            (false, _) => Err(sys::ENOENT as c_int),
            (true, true) => self.machine.kldload(),
            (true, false) => self.machine.kldunload(),
        };
        result.map(|()| String::new()).map_err(|e| match (load, e) {
            (true, e) if e == sys::EEXIST as c_int => {
                format!("kldload: can't load {name}: module already loaded or in kernel")
            }
            (true, e) => format!("kldload: can't load {name}: {}", args::strerror(e)),
            (false, e) if e == sys::ENOENT as c_int => {
                format!("kldunload: can't find file {name}: {}", args::strerror(e))
            }
            (false, e) => format!("kldunload: can't unload file: {}", args::strerror(e)),
        })
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

impl Drop for Shell {
    /// Shuts the machine down as FreeBSD does: the portal stops (its
    /// sessions end), CTL removes the LUNs left (so that ctlpass unloads),
    /// then the machine stops, then the tgtd.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.portal = None;
        for lun_id in ctl::luns() {
            ctl::lun_request("passthrough", &ctl::Request::Remove { lun_id }, &[]);
        }
    }
}

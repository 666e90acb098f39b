//! `ctlpass-sim`: a simulated FreeBSD machine with ctlpass, driven by the
//! commands an administrator types (see `simkern::shell`), from a script
//! (`--script FILE`) or standard input.  Each command is echoed after a
//! `# ` prompt, then its output.
//!
//! `--listen ADDR` starts the machine's iSCSI portal on ADDR as it boots
//! (`portal listen ADDR`: initiators reach CTL's LUNs as target
//! `iqn.2026-11.org.freebsd.ctlpass:sim`; `$PORTAL` is its URL).
//!
//! A script stops at the first command that fails, with exit status 1,
//! unless `-k` (keep going) is given; the exit status is then still 1 if a
//! command failed.  Standard input always keeps going, as a terminal does.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use simkern::shell::Shell;
use simkern::{Config, Machine};

const USAGE: &str = "usage: ctlpass-sim [-k] [--listen ADDR] [--script FILE]";

fn main() -> ExitCode {
    let mut keep_going = false;
    let mut script = None;
    let mut listen = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-k" => keep_going = true,
            "--script" | "--listen" => match args.next() {
                Some(value) if arg == "--script" && script.is_none() => script = Some(value),
                Some(value) if arg == "--listen" && listen.is_none() => listen = Some(value),
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let input: Box<dyn BufRead> = match &script {
        None => Box::new(BufReader::new(std::io::stdin())),
        Some(file) => match std::fs::File::open(file) {
            Ok(f) => Box::new(BufReader::new(f)),
            Err(e) => {
                eprintln!("ctlpass-sim: {file}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let stop_at_failure = script.is_some() && !keep_going;
    let mut shell = Shell::new(Machine::boot(Config::standard()));
    if let Some(addr) = listen {
        match shell.step(&format!("portal listen {addr}")) {
            Some((out, true)) => print!("{out}"),
            Some((out, false)) => {
                eprint!("{out}");
                return ExitCode::from(2);
            }
            None => {}
        }
    }
    let mut failed = false;
    for line in input.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ctlpass-sim: {e}");
                return ExitCode::from(2);
            }
        };
        let Some((out, ok)) = shell.step(&line) else {
            continue;
        };
        print!("{out}");
        let _ = std::io::stdout().flush();
        failed |= !ok;
        if !ok && stop_at_failure {
            break;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

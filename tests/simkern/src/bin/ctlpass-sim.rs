//! `ctlpass-sim`: a simulated FreeBSD machine with ctlpass, driven by the
//! commands an administrator types (see `simkern::shell`), from a script
//! (`--script FILE`) or standard input.  Each command is echoed after a
//! `# ` prompt, then its output.  The exit status is 1 if a command failed.

use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use simkern::shell::Shell;
use simkern::{Config, Machine};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let input: Box<dyn BufRead> = match args.as_slice() {
        [] => Box::new(BufReader::new(std::io::stdin())),
        [flag, file] if flag == "--script" => match std::fs::File::open(file) {
            Ok(f) => Box::new(BufReader::new(f)),
            Err(e) => {
                eprintln!("ctlpass-sim: {file}: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: ctlpass-sim [--script FILE]");
            return ExitCode::from(2);
        }
    };
    let mut shell = Shell::new(Machine::boot(Config::standard()));
    let mut failed = false;
    for line in input.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ctlpass-sim: {e}");
                return ExitCode::from(2);
            }
        };
        let command = line.split('#').next().unwrap_or("").trim();
        if command.is_empty() {
            continue;
        }
        println!("# {command}");
        match shell.run(command) {
            Ok(out) => print!("{out}"),
            Err(e) => {
                println!("{e}");
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

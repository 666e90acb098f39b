//! `make soak`: random I/O on several passthrough LUNs with injected
//! faults, task management and pulled devices for a set time (`--seconds`,
//! default 600), then removal and unload; prints what happened and what
//! was left behind, and fails if anything was (see `simkern::soak`).

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = value("--seconds", 600);
    let seed = value("--seed", 0x5eed_c71a_0000_0001);
    println!(
        "ctlpass soak: {} LUNs, {seconds} s, seed {seed:#x}",
        simkern::soak::LUNS
    );
    let report = simkern::soak::run(Duration::from_secs(seconds), seed);
    for leak in &report.leaks {
        println!("leak: {}", leak.trim_end());
    }
    println!("{report}");
    if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! Running a test in a child process, for tests that expect the simulated
//! kernel to panic (which aborts the process, as a panic stops a machine).

use std::process::{Command, Output};

const CHILD: &str = "SIMKERN_CHILD";

/// Whether this process is the child started by [`run`] for `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|t| t == test)
}

/// Runs the test named `test` (its path in the test binary) alone in a
/// child process and returns how it ended.
pub fn run(test: &str) -> Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .expect("run the test binary")
}

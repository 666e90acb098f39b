//! Links the simulated kernel's C objects (the real ctlpass shim and the
//! kernel's variadic functions) into the target that runs a simulated
//! machine: cargo applies simkern's link arguments to simkern's own
//! binaries only, and exports them for dependants (DEP_SIMKERN_LINK_ARGS).

use std::env;

/// The fuzz target that boots a simulated machine.
const MACHINE_TARGET: &str = "lun_stream";

fn main() {
    let args = env::var("DEP_SIMKERN_LINK_ARGS").expect("simkern's build script exports its link arguments");
    for arg in args.split('\x1f') {
        println!("cargo::rustc-link-arg-bin={MACHINE_TARGET}={arg}");
    }
}

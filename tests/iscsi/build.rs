//! Generates the bindings of the parts of libiscsi (and `poll(2)`) the crate
//! uses into `OUT_DIR/iscsi.rs`, and links libiscsi.

use std::env;
use std::path::PathBuf;
use std::process::exit;

/// The headers bindgen reads (`<iscsi/iscsi.h>` includes `<stdint.h>`); `<poll.h>` is for the crate's event loop.
const WRAPPER: &str = "#include <iscsi/iscsi.h>\n\
                       #include <iscsi/scsi-lowlevel.h>\n\
                       #include <poll.h>\n";

/// What to do when the headers are missing.
const HINT: &str = "install libiscsi-dev: scripts/install-deps.sh";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=BINDGEN_EXTRA_CLANG_ARGS");
    println!("cargo::rustc-link-lib=iscsi");

    let bindings = bindgen::Builder::default()
        .header_contents("iscsi-lun-wrapper.h", WRAPPER)
        .rust_target(bindgen::RustTarget::stable(85, 0).expect("a stable Rust target"))
        .rust_edition(bindgen::RustEdition::Edition2024)
        .prepend_enum_name(false)
        .derive_default(true)
        .generate_comments(false)
        .layout_tests(false)
        .merge_extern_blocks(true)
        .wrap_unsafe_ops(true)
        // Sessions.
        .allowlist_function("iscsi_create_context|iscsi_destroy_context|iscsi_get_error")
        .allowlist_function("iscsi_parse_full_url|iscsi_destroy_url|iscsi_set_session_type")
        .allowlist_function("iscsi_set_header_digest|iscsi_set_noautoreconnect")
        .allowlist_function("iscsi_full_connect_sync|iscsi_logout_async")
        // Commands, and the event loop that completes them.
        .allowlist_function("scsi_create_task|scsi_free_scsi_task|scsi_task_set_iov_in|scsi_task_set_iov_out")
        .allowlist_function("iscsi_scsi_command_async|iscsi_task_mgmt_lun_reset_async")
        .allowlist_function("iscsi_get_fd|iscsi_which_events|iscsi_service|poll")
        .allowlist_type("iscsi_url|scsi_task|scsi_iovec|iscsi_command_cb|pollfd")
        .allowlist_type("scsi_status|scsi_xfer_dir|scsi_residual|iscsi_session_type|iscsi_header_digest")
        .allowlist_var("SCSI_CDB_MAX_SIZE")
        .generate();
    let bindings = match bindings {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot generate bindings of <iscsi/iscsi.h> and <iscsi/scsi-lowlevel.h> ({HINT}): {e}");
            exit(1);
        }
    };
    if let Err(e) = bindings.write_to_file(out.join("iscsi.rs")) {
        eprintln!("error: cannot write {}: {e}", out.join("iscsi.rs").display());
        exit(1);
    }
}

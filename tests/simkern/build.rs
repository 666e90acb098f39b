//! Builds the simulated kernel's C parts and its bindings.
//!
//! - `kmod/ctlpass.c`, the real C shim of the kernel module, compiled for the
//!   host with the same FreeBSD headers, definitions and include path as the
//!   kernel object (`DEP_CTLPASS_CPPFLAGS`, from ctlpass's build script) but
//!   hosted code generation, and linked into every binary and test of this
//!   crate, linker sets and all: the simulated kernel linker loads the module
//!   from those sets as FreeBSD's does from a .ko.
//! - `csrc/kern.c`, the kernel's variadic functions (printf, panic).
//! - Bindings of `csrc/simkern.h` (ctlpass's headers plus the kernel linker's
//!   structures), with the same link names as ctlpass's hosted bindings.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cppflags: Vec<String> = env::var("DEP_CTLPASS_CPPFLAGS")
        .expect("ctlpass's build script exports its flags")
        .split('\x1f')
        .map(String::from)
        .collect();
    let renames: Vec<String> = env::var("DEP_CTLPASS_HOSTED_RENAMES")
        .expect("ctlpass's build script exports its renames")
        .split(',')
        .map(String::from)
        .collect();
    for path in ["csrc", "../../kmod", "../../bindings"] {
        println!("cargo::rerun-if-changed={}", manifest.join(path).display());
    }

    // Under AddressSanitizer (`make asan`, and cargo-fuzz's builds) tests may
    // allow for the slower code.  The C is not instrumented: it is compiled
    // for the FreeBSD target, whose shadow memory layout is not Linux's, and
    // uninstrumented code is correct under ASan (only unchecked).
    let asan = env::var("CARGO_CFG_SANITIZE").is_ok_and(|s| s.split(',').any(|s| s == "address"));
    println!("cargo::rustc-check-cfg=cfg(simkern_asan)");
    if asan {
        println!("cargo::rustc-cfg=simkern_asan");
    }

    // The module's linker sets are reached only through their __start_ and
    // __stop_ symbols, which must keep them alive under --gc-sections.
    let mut link_args = vec!["-Wl,-z,nostart-stop-gc".to_string()];
    for (source, object) in [
        (root.join("kmod/ctlpass.c"), "ctlpass_shim.o"),
        (manifest.join("csrc/kern.c"), "kern.o"),
    ] {
        let object = out.join(object);
        compile(&source, &object, &cppflags);
        redefine(&object, &renames);
        link_args.push(object.display().to_string());
        // The objects come after the Rust libraries on the link line, so the
        // module's Rust entry points they call are forced in by name.
        for sym in undefined(&object).into_iter().filter(|s| s.starts_with("ctlpass_")) {
            link_args.push(format!("-Wl,--undefined={sym}"));
        }
    }
    for arg in &link_args {
        println!("cargo::rustc-link-arg={arg}");
    }
    // Link arguments apply to this package's own binaries and tests only;
    // a dependant that links the simulated kernel into its binaries (the
    // fuzz targets, tests/fuzz) passes them on from DEP_SIMKERN_LINK_ARGS.
    println!("cargo::metadata=link_args={}", link_args.join("\x1f"));

    let bindings = bindgen::Builder::default()
        .header(manifest.join("csrc/simkern.h").to_string_lossy())
        // CAM_DATA_SG lists (bus_dma_segment_t), for the simulated SIM.
        .header_contents(
            "simkern_busdma.h",
            "#include <sys/param.h>\n#include <machine/bus.h>\n#include <sys/bus_dma.h>\n",
        )
        .clang_args(&cppflags)
        .rust_target(bindgen::RustTarget::stable(85, 0).expect("a stable Rust target"))
        .rust_edition(bindgen::RustEdition::Edition2024)
        .use_core()
        .prepend_enum_name(false)
        .derive_default(true)
        .generate_comments(false)
        .merge_extern_blocks(true)
        .wrap_unsafe_ops(true)
        .allowlist_file(".*/csrc/simkern\\.h")
        .allowlist_file(".*/kmod/ctlpass\\.h")
        .allowlist_type(
            "sysinit|mod_metadata|moduledata|mod_depend|mod_version|modeventtype|sysctl_oid|sysctl_oid_list",
        )
        .allowlist_type("sysctl_req|sysctl_ctx_list|sysctl_ctx_entry")
        .allowlist_var("CTLTYPE_.*|CTLFLAG_.*|OID_AUTO|CTL_AUTO_START|ENOTEMPTY|EISDIR")
        .allowlist_type("malloc_type|mtx|periph_driver|cam_periph|ccb|ccb_hdr|ccb_getdev|ccb_pathinq|ccb_setasync")
        .allowlist_type("ctl_backend_driver|ctl_be_lun|ctl_lun_req|ctl_io|ctl_io_status|ctl_lun_list|modeventhand_t")
        .allowlist_type("scsi_inquiry_data|pi_inqflag|pi_miscflag")
        .allowlist_var(
            "MDT_.*|MOD_.*|SI_.*|MTX_.*|LO_.*|M_.*|CAM_.*|AC_.*|XPT_.*|PROTO_.*|XPORT_.*|PI_.*|PIM_.*|SID_.*",
        )
        .allowlist_var(
            "CTL_.*|E[A-Z]+|SIM_IDLEN|HBA_IDLEN|DEV_IDLEN|DFLTPHYS|MAXPHYS|T_.*|PAGE_SIZE|CTLTYPE|CTLTYPE_NODE",
        )
        .allowlist_function("malloc|malloc_aligned|free|panic|printf|pause_sbt|_mtx_init|_mtx_destroy")
        .allowlist_function("__mtx_lock_flags|__mtx_unlock_flags|malloc_init|malloc_uninit|module_register_init")
        .allowlist_function("xpt_.*|cam_periph_.*|periphdriver_.*|ctl_backend_.*")
        .allowlist_function("ctl_data_submit_done|ctl_config_read_done|ctl_config_write_done")
        .allowlist_function("ctl_add_lun|ctl_remove_lun|ctl_lun_capacity_changed|ctl_start_lun|ctl_stop_lun")
        .allowlist_function("ctl_lun_no_media|ctl_lun_has_media|ctl_lun_ejected|ctl_set_.*|ctl_io_set_success")
        .allowlist_function("ctl_datamove|ctl_datamove_done|ctl_config_move_done|ctl_serseq_done")
        .allowlist_function("taskqueue_enqueue|taskqueue_drain|cam_release_devq")
        .allowlist_type("task|taskqueue|callout")
        .allowlist_function("callout_init|callout_reset_sbt_on|_callout_stop_safe")
        .allowlist_var("CALLOUT_.*|CS_DRAIN")
        .allowlist_type("bus_dma_segment|bus_dma_segment_t")
        .allowlist_var("taskqueue_thread")
        .allowlist_type("ctl_lba_len_flags|ctl_nexus|ctl_io_flags|ctl_tag_type|ctl_lunreq_type")
        .allowlist_type("ctl_sg_entry|ctl_ptr_len_flags|ctl_lun_create_params")
        .allowlist_function("d?nvlist_.*|sbuf_cat|_sleep|wakeup")
        .allowlist_type("ccb_scsiio|ccb_dev_advinfo|lock_object|ccb_flags|cam_flags|devstat")
        .allowlist_var("CDAI_.*|NV_TYPE_.*|PCATCH|periph_drivers")
        .allowlist_var("hz|tick_sbt|maxphys|sysctl___kern_cam_ctl")
        .parse_callbacks(Box::new(LinkNames { renames }))
        .generate()
        .expect("bindgen on csrc/simkern.h");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write OUT_DIR/bindings.rs");
}

/// Compiles `source` as kernel code for the simulated (hosted) kernel.
fn compile(source: &Path, object: &Path, cppflags: &[String]) {
    let cc = env::var("CC").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&cc)
        .args(cppflags)
        .args([
            "-ffreestanding",
            "-fno-common",
            "-fPIC",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-Wall",
            "-Werror",
            "-c",
        ])
        .arg(source)
        .arg("-o")
        .arg(object)
        .status()
        .unwrap_or_else(|e| panic!("run {cc}: {e}"));
    assert!(status.success(), "{cc} failed on {}", source.display());
}

/// Gives the libc-colliding kernel functions their hosted names, as
/// ctlpass's hosted bindings do.
fn redefine(object: &Path, renames: &[String]) {
    let objcopy = env::var("OBJCOPY").unwrap_or_else(|_| "llvm-objcopy".into());
    let status = Command::new(&objcopy)
        .args(renames.iter().map(|n| format!("--redefine-sym={n}=simkern_{n}")))
        .arg(object)
        .status()
        .unwrap_or_else(|e| panic!("run {objcopy}: {e}"));
    assert!(status.success(), "{objcopy} failed on {}", object.display());
}

/// The undefined symbols of an object file.
fn undefined(object: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-sW")
        .arg(object)
        .output()
        .expect("run readelf");
    assert!(out.status.success(), "readelf failed on {}", object.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[6] == "UND").then(|| f[7].to_string())
        })
        .collect()
}

#[derive(Debug)]
struct LinkNames {
    renames: Vec<String>,
}

impl bindgen::callbacks::ParseCallbacks for LinkNames {
    fn generated_link_name_override(&self, item: bindgen::callbacks::ItemInfo<'_>) -> Option<String> {
        self.renames
            .iter()
            .any(|n| n == item.name)
            .then(|| format!("simkern_{}", item.name))
    }
}

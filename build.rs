//! Generates the Rust declarations of the FreeBSD kernel interfaces ctlpass
//! uses, by running bindgen on `bindings/wrapper.h` with the flags a FreeBSD
//! kmod build compiles with, against a real FreeBSD header tree:
//!
//! - on FreeBSD, `SYSDIR` (default `/usr/src/sys`), CTL headers included;
//! - on Linux, the FreeBSD 15.0 headers shipped in the `ziglang` wheel
//!   (`scripts/fetch-freebsd-headers.sh`), plus the project's models of the
//!   `cam/ctl` headers that FreeBSD does not install (`bindings/model`), or
//!   the real ones from `CTLPASS_CTL_INCLUDE` (a directory holding `cam/ctl`).
//!
//! The output goes to `OUT_DIR/bindings.rs` and is included by `src/sys.rs`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// `__FreeBSD_version` of the 15.0 release, which the ziglang headers are.
const FREEBSD_15_0: u32 = 1_500_045;

/// Kernel functions whose names the C library of a hosted (Linux) build also
/// defines.  Hosted builds link them under a `simkern_` prefix, implemented by
/// the simulated kernel; the kernel object links the real names.
const HOSTED_RENAMES: &[&str] = &["malloc", "free", "printf"];

/// The header tree bindgen and the C shim compile against.
struct HeaderTree {
    include_dirs: Vec<PathBuf>,
    freebsd_version: u32,
    /// Whether the compiler must define `__FreeBSD_version` (the ziglang tree
    /// leaves it to the compiler; a real `sys/param.h` defines it).
    define_version: bool,
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for path in ["bindings", "kmod/ctlpass.h"] {
        println!("cargo::rerun-if-changed={}", root.join(path).display());
    }
    for var in [
        "SYSDIR",
        "CTLPASS_FREEBSD_HEADERS",
        "CTLPASS_CTL_INCLUDE",
        "FREEBSD_VERSION",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let tree = header_tree(&root, &out);
    let cppflags = cppflags(&tree);
    let clang_args: Vec<String> = cppflags
        .iter()
        .cloned()
        .chain(KMOD_CFLAGS.iter().map(|s| s.to_string()))
        .collect();

    println!("cargo::rustc-check-cfg=cfg(freebsd14)");
    if tree.freebsd_version < 1_500_000 {
        println!("cargo::rustc-cfg=freebsd14");
    }
    // The C shim is compiled with exactly these flags: by `make kmod`
    // (scripts/build-kobj.sh copies this file to target/kmod/kmod-cflags)
    // and, with hosted code generation, by the simulated kernel's build
    // script (DEP_CTLPASS_CPPFLAGS, separated by 0x1f).
    fs::write(out.join("kmod-cflags"), clang_args.join("\n") + "\n").expect("write OUT_DIR/kmod-cflags");
    println!("cargo::metadata=cppflags={}", cppflags.join("\x1f"));
    println!("cargo::metadata=hosted_renames={}", HOSTED_RENAMES.join(","));

    let hosted = env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none");
    let mut builder = bindgen::Builder::default()
        .header(root.join("bindings/wrapper.h").to_string_lossy())
        .clang_args(&clang_args)
        .rust_target(bindgen::RustTarget::stable(85, 0).expect("a stable Rust target"))
        .rust_edition(bindgen::RustEdition::Edition2024)
        .use_core()
        .ctypes_prefix("core::ffi")
        .prepend_enum_name(false)
        .derive_default(true)
        .generate_comments(false)
        .layout_tests(true)
        .merge_extern_blocks(true)
        .wrap_unsafe_ops(true)
        .parse_callbacks(Box::new(LinkNames { hosted }));
    builder = apply_allowlist(builder, &root.join("bindings/allowlist.txt"));
    let bindings = builder
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on bindings/wrapper.h with {clang_args:?}: {e}"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write OUT_DIR/bindings.rs");
}

/// Finds the FreeBSD headers for this build host.
fn header_tree(root: &Path, out: &Path) -> HeaderTree {
    let mut include_dirs = vec![root.join("bindings/standin")];
    if cfg!(target_os = "freebsd") {
        let sysdir = PathBuf::from(env::var("SYSDIR").unwrap_or_else(|_| "/usr/src/sys".into()));
        // A kmod build links machine/ and x86/ to the architecture's headers.
        let links = out.join("machine-links");
        fs::create_dir_all(&links).expect("create OUT_DIR/machine-links");
        for (name, target) in [("machine", "amd64/include"), ("x86", "x86/include")] {
            let link = links.join(name);
            let _ = fs::remove_file(&link);
            #[cfg(unix)]
            std::os::unix::fs::symlink(sysdir.join(target), &link).expect("symlink machine headers");
        }
        let param = fs::read_to_string(sysdir.join("sys/param.h"))
            .unwrap_or_else(|e| panic!("{}: {e}; set SYSDIR to a FreeBSD sys/ tree", sysdir.display()));
        let freebsd_version = param
            .lines()
            .find_map(|l| l.strip_prefix("#define __FreeBSD_version"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("sys/param.h defines __FreeBSD_version");
        include_dirs.extend([links, sysdir.clone(), sysdir.join("contrib/ck/include")]);
        return HeaderTree {
            include_dirs,
            freebsd_version,
            define_version: false,
        };
    }

    let zig = match env::var("CTLPASS_FREEBSD_HEADERS") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            let cache = env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(env::var("HOME").unwrap_or_default()).join(".cache"));
            cache.join("ctlpass/freebsd-15.0-zig-0.17.1")
        }
    };
    if !zig.join(".complete").exists() {
        panic!(
            "the FreeBSD 15.0 headers are not in {}: run scripts/fetch-freebsd-headers.sh \
             (make test and make demo do)",
            zig.display()
        );
    }
    let ctl = env::var("CTLPASS_CTL_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("bindings/model"));
    let freebsd_version = env::var("FREEBSD_VERSION")
        .map(|v| v.parse().expect("FREEBSD_VERSION is a number like 1500045"))
        .unwrap_or(FREEBSD_15_0);
    include_dirs.extend([ctl, zig.join("x86_64-freebsd-none"), zig.join("generic-freebsd")]);
    HeaderTree {
        include_dirs,
        freebsd_version,
        define_version: true,
    }
}

/// Code generation flags of an amd64 kernel module (sys/conf/kern.mk,
/// kmod.mk): kernel code model, no red zone, no FPU or SIMD, no unwind tables.
const KMOD_CFLAGS: &[&str] = &[
    "-ffreestanding",
    "-fno-common",
    "-mcmodel=kernel",
    "-mno-red-zone",
    "-mno-mmx",
    "-mno-sse",
    "-msoft-float",
    "-fno-asynchronous-unwind-tables",
];

/// The target, definitions and include path of a kernel module build.
fn cppflags(tree: &HeaderTree) -> Vec<String> {
    let major = tree.freebsd_version / 100_000;
    let mut args = vec![
        format!("--target=x86_64-unknown-freebsd{major}.0"),
        "-D_KERNEL".into(),
        "-DKLD_MODULE".into(),
        "-nostdinc".into(),
        "-std=gnu99".into(),
    ];
    if tree.define_version {
        args.push(format!("-D__FreeBSD_version={}", tree.freebsd_version));
    }
    args.extend(tree.include_dirs.iter().map(|d| format!("-I{}", d.display())));
    args.extend(["-include".into(), "opt_global.h".into()]);
    args
}

/// Applies `bindings/allowlist.txt`.
fn apply_allowlist(mut builder: bindgen::Builder, file: &Path) -> bindgen::Builder {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (kind, pattern) = line
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("{}:{}: expected `kind regex`", file.display(), n + 1));
        let pattern = pattern.trim();
        builder = match kind {
            "type" => builder.allowlist_type(pattern),
            "function" => builder.allowlist_function(pattern),
            "var" => builder.allowlist_var(pattern),
            other => panic!("{}:{}: unknown kind {other:?}", file.display(), n + 1),
        };
    }
    builder
}

/// Renames the libc-colliding kernel functions in hosted builds.
#[derive(Debug)]
struct LinkNames {
    hosted: bool,
}

impl bindgen::callbacks::ParseCallbacks for LinkNames {
    fn generated_link_name_override(&self, item: bindgen::callbacks::ItemInfo<'_>) -> Option<String> {
        (self.hosted && HOSTED_RENAMES.contains(&item.name)).then(|| format!("simkern_{}", item.name))
    }
}

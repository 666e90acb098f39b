#!/usr/bin/env bash
# Builds the Rust crate for the FreeBSD amd64 kernel and pre-links it into one
# relocatable object, target/kmod/ctlpass_rust.o, that kmod/Makefile (FreeBSD)
# or `make kmod` (Linux) links into ctlpass.ko.
#
# The target (kmod/x86_64-unknown-freebsd-kmod.json) is x86_64-unknown-none
# with static relocations, PLT calls and no unwind tables; core and alloc are
# rebuilt for it (-Z build-std), without compiler-builtins' mem functions (the
# kernel has memcpy and friends).  The link keeps only what the exported
# entry points (ctlpass_*) reach, and .eh_frame is dropped: the kernel does
# not unwind, and the LLVM bitcode that LTO leaves in the archive is dropped.
#
# Linux: Debian's rustc-web/cargo-web/rust-web-src (scripts/install-deps.sh).
# FreeBSD: a rustup toolchain with the rust-src component; set CARGO/RUSTC.
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -s)" in
Linux)
	CARGO=${CARGO:-/usr/bin/cargo}
	RUSTC=${RUSTC:-/usr/bin/rustc}
	OBJCOPY=${OBJCOPY:-llvm-objcopy}
	;;
*)
	CARGO=${CARGO:-cargo}
	RUSTC=${RUSTC:-$(command -v rustc)}
	OBJCOPY=${OBJCOPY:-objcopy}
	;;
esac
LD=${LD:-ld.lld}
out=target/kmod
target=kmod/x86_64-unknown-freebsd-kmod.json
mkdir -p "$out"

# Debian's cargo and clippy come first, so that cargo's subcommands use the
# same toolchain as the compiler (rustup's would be found first otherwise).
command=${KOBJ_CARGO_COMMAND:-build}
PATH=$(dirname "$RUSTC"):$PATH RUSTC_BOOTSTRAP=1 RUSTC=$RUSTC \
	"$CARGO" "$command" -p ctlpass --lib --profile kmod \
	--target "$target" -Z build-std=core,alloc -Z json-target-spec \
	--target-dir target/kmod-build --message-format=json-render-diagnostics "$@" \
	>"$out/cargo-messages.json"
[ "$command" = build ] || exit 0

# The flags build.rs generated the bindings with are the shim's (make kmod).
# The package id is `path+file:///DIR#ctlpass@VERSION`, or
# `path+file:///DIR/ctlpass#VERSION` when the checkout's folder is named
# ctlpass.
out_dir=$(sed -n 's/.*"reason":"build-script-executed","package_id":"path+file:[^"]*\(#ctlpass@\|\/ctlpass#\)[^"]*".*"out_dir":"\([^"]*\)".*/\2/p' "$out/cargo-messages.json" | tail -n 1)
[ -f "$out_dir/kmod-cflags" ] || { echo "build-kobj: cannot find ctlpass's build script output" >&2; exit 1; }
cp "$out_dir/kmod-cflags" "$out/kmod-cflags"

lib=target/kmod-build/x86_64-unknown-freebsd-kmod/kmod/libctlpass.a
exports=$(readelf -sW "$lib" | awk '$5 == "GLOBAL" && $7 != "UND" && $8 ~ /^ctlpass_/ { print $8 }' | sort -u)
[ -n "$exports" ] || { echo "build-kobj: no ctlpass_* entry points in $lib" >&2; exit 1; }
undefs=()
for sym in $exports; do undefs+=(-u "$sym"); done

"$LD" -m elf_x86_64 -r --gc-sections "${undefs[@]}" -o "$out/ctlpass_rust.full.o" "$lib"
"$OBJCOPY" --remove-section=.eh_frame --remove-section=.rela.eh_frame \
	--remove-section=.llvmbc --remove-section=.llvmcmd \
	"$out/ctlpass_rust.full.o" "$out/ctlpass_rust.o"
rm -f "$out/ctlpass_rust.full.o"
echo "build-kobj: $out/ctlpass_rust.o ($(echo "$exports" | wc -l) entry points)"

#!/usr/bin/env bash
# Install what ctlpass needs on a Debian 12 machine. Idempotent: packages that are
# already present are not reinstalled, and `apt-get update` runs at most once.
# `install-deps.sh fuzz` also installs cargo-fuzz (for `make fuzz`) if missing.
set -euo pipefail

# Debian packages and the first file each one provides (to detect presence cheaply).
packages=(
	rustc-web:/usr/bin/rustc           # kernel-target compiler (same version as rust-web-src)
	cargo-web:/usr/bin/cargo           # its cargo, for -Z build-std
	rust-web-src:/usr/lib/rustlib/src/rust/library/core/Cargo.toml
	rust-web-clippy:/usr/bin/clippy-driver
	clang:/usr/bin/clang               # C shim and bindgen's libclang
	libclang-dev:/usr/lib/llvm-14/lib/libclang.so
	lld:/usr/bin/ld.lld                # relocatable links of the kernel object
	llvm:/usr/bin/llvm-objcopy           # objcopy that handles FreeBSD ELF objects
	tgt:/usr/sbin/tgtd                 # real iSCSI disk/tape/CD devices on loopback
	libiscsi-bin:/usr/bin/iscsi-inq
	libiscsi-dev:/usr/include/iscsi/iscsi.h
	mandoc:/usr/bin/mandoc             # man page lint
	valgrind:/usr/bin/valgrind         # make bench: instructions per I/O (callgrind)
)

missing=()
for entry in "${packages[@]}"; do
	pkg=${entry%%:*}
	file=${entry#*:}
	[ -e "$file" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	echo "install-deps: installing ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust host toolchain components used by `make test`.
if command -v rustup >/dev/null 2>&1; then
	for comp in rustfmt clippy; do
		rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
	done
fi

# Real FreeBSD 15.0 headers (from the pinned ziglang wheel) for bindgen and the shim.
"$(dirname "$0")/fetch-freebsd-headers.sh" >/dev/null

# cargo-fuzz, from crates.io, for `make fuzz` only.
if [ "${1:-}" = fuzz ] && ! cargo fuzz --version >/dev/null 2>&1; then
	echo "install-deps: installing cargo-fuzz"
	cargo install --locked --version 0.13.2 cargo-fuzz
fi

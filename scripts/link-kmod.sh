#!/usr/bin/env bash
# Builds ctlpass.ko on Linux (`make kmod`): compiles the C shim with clang
# against the same real FreeBSD headers the bindings come from, with the kmod
# flags build.rs generated (target/kmod/kmod-cflags) and -Wall -Werror, and
# links it with the Rust object into target/kmod/ctlpass.ko: ET_REL with
# FreeBSD's OS/ABI, as FreeBSD's kmod.mk links modules.  As kmod.mk does with
# EXPORT_SYMS=NO (kmod/Makefile sets it), the module's own symbols are made
# local, so that nothing it defines can clash with another module; what it
# needs from the kernel stays undefined.  On FreeBSD, kmod/Makefile does all
# this.
#
# Expects scripts/build-kobj.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/kmod
CC=${CC:-clang}
LD=${LD:-ld.lld}
OBJCOPY=${OBJCOPY:-llvm-objcopy}
[ -f "$out/ctlpass_rust.o" ] && [ -f "$out/kmod-cflags" ] || {
	echo "link-kmod: run scripts/build-kobj.sh first" >&2
	exit 1
}

mapfile -t cflags <"$out/kmod-cflags"
"$CC" "${cflags[@]}" -O2 -Wall -Werror -c kmod/ctlpass.c -o "$out/ctlpass.o"
"$LD" -m elf_x86_64_fbsd -r -o "$out/ctlpass.ko.full" "$out/ctlpass.o" "$out/ctlpass_rust.o"
localize=()
for sym in $(readelf -sW "$out/ctlpass.ko.full" | awk '$5 == "GLOBAL" && $7 != "UND" { print $8 }'); do
	localize+=(--localize-symbol="$sym")
done
"$OBJCOPY" --strip-debug "${localize[@]}" "$out/ctlpass.ko.full" "$out/ctlpass.ko"
rm -f "$out/ctlpass.ko.full"
echo "link-kmod: $out/ctlpass.ko"

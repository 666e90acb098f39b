#!/usr/bin/env bash
# Unpack the real FreeBSD 15.0 installed headers (kernel parts included) that the
# `ziglang` Python wheel ships, into a cache, and print the cache directory.
# Only the two FreeBSD folders are kept: generic-freebsd (sys/, cam/, ...) and
# x86_64-freebsd-none (machine/, x86/).
set -euo pipefail

ZIG_VERSION=0.17.1
cache=${CTLPASS_FREEBSD_HEADERS:-${XDG_CACHE_HOME:-$HOME/.cache}/ctlpass/freebsd-15.0-zig-$ZIG_VERSION}

if [ -f "$cache/.complete" ]; then
	echo "$cache"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
	--platform manylinux_2_12_x86_64 --python-version 3.11 \
	-d "$tmp" "ziglang==$ZIG_VERSION" >&2
wheel=$(ls "$tmp"/ziglang-*.whl)
python3 - "$wheel" "$tmp/out" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
keep = ("ziglang/lib/libc/include/generic-freebsd/",
        "ziglang/lib/libc/include/x86_64-freebsd-none/")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(keep) and not name.endswith("/"):
            z.extract(name, out)
PY
rm -rf "$cache"
mkdir -p "$(dirname "$cache")"
mv "$tmp/out/ziglang/lib/libc/include" "$cache"
touch "$cache/.complete"
echo "$cache"

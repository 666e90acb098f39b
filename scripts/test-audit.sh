#!/usr/bin/env bash
# Shows that scripts/audit-kobj.sh rejects what FreeBSD's kernel linker or
# kernel would not take, by planting it into the real kernel object:
#   - an f64 division compiled with SSE (the x86-64 default): %xmm registers;
#   - a call through the GOT (-fPIC -fno-plt): R_X86_64_GOTPCRELX;
#   - a call to a function that is no kernel KPI: an unlisted symbol;
#   - a call into Rust's panic path (core::panicking::panic);
# that the object as built passes, and that ctlpass.ko declares its modules
# and their dependencies on cam and ctl.  Also checks that every kernel name in
# scripts/kernel-symbols.allow is declared by the real FreeBSD headers (or,
# for CTL, the models of them) or by the shim: the allowlist cannot invent
# KPIs.
set -euo pipefail
cd "$(dirname "$0")/.."
obj=target/kmod/ctlpass_rust.o
[ -f "$obj" ] || { echo "test-audit: run scripts/build-kobj.sh first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
target=--target=x86_64-unknown-freebsd15.0

expect_fail() {
	local what=$1 needle=$2 planted=$3
	local out
	if out=$(scripts/audit-kobj.sh "$planted" 2>&1); then
		echo "test-audit: FAIL: $what passed the audit"
		failures=$((failures + 1))
	elif ! grep -qF -- "$needle" <<<"$out"; then
		echo "test-audit: FAIL: $what failed for another reason: $out"
		failures=$((failures + 1))
	else
		echo "test-audit: ok: $what is rejected ($needle)"
	fi
}

plant() {
	local name=$1 flags=$2 source=$3
	printf '%s\n' "$source" >"$tmp/$name.c"
	# shellcheck disable=SC2086
	clang $target -O2 -ffreestanding -mcmodel=kernel -mno-red-zone -fno-asynchronous-unwind-tables \
		$flags -c "$tmp/$name.c" -o "$tmp/$name.o"
	ld.lld -m elf_x86_64 -r -o "$tmp/with-$name.o" "$obj" "$tmp/$name.o"
	echo "$tmp/with-$name.o"
}

expect_fail "an f64 division" "instructions use SSE/AVX registers" \
	"$(plant fdiv "" 'double ctlpass_planted_ratio(double a, double b) { return a / b; }')"
expect_fail "a GOT-relative call" "relocations the kernel linker rejects: R_X86_64_GOTPCRELX" \
	"$(plant got "-fPIC -fno-plt -mno-sse -msoft-float" 'int printf(const char *, ...); void ctlpass_planted_call(void) { printf("x"); }')"
expect_fail "a call outside the kernel's KPIs" "undefined symbols outside kernel-symbols.allow: fopen" \
	"$(plant libc "-mno-sse -msoft-float" 'void *fopen(const char *, const char *); void *ctlpass_planted_open(void) { return fopen("x", "r"); }')"
expect_fail "a call into Rust's panic path" "1 calls into Rust's panic path from: ctlpass_planted_unwrap" \
	"$(plant panic "-mno-sse -msoft-float -ffunction-sections" 'void _RNvNtCsbRV5LFrGZuI_4core9panicking5panic(void); void ctlpass_planted_unwrap(void) { _RNvNtCsbRV5LFrGZuI_4core9panicking5panic(); }')"
if out=$(scripts/audit-kobj.sh "$obj"); then
	echo "test-audit: ok: the kernel object as built passes"
else
	echo "test-audit: FAIL: the kernel object as built fails: $out"
	failures=$((failures + 1))
fi

# The module's metadata: the modules it declares and what they depend on.
ko=target/kmod/ctlpass.ko
expected="modules: ctlpass(depends on cam,kernel) ctlpass_backend(depends on cam,ctl,kernel)"
if out=$(scripts/audit-kobj.sh "$ko") && grep -qF -- "$expected" <<<"$out"; then
	echo "test-audit: ok: ctlpass.ko declares $expected"
else
	echo "test-audit: FAIL: ctlpass.ko's module metadata: $out"
	failures=$((failures + 1))
fi

# Every kernel name in the allowlist is declared somewhere real.
headers=$(scripts/fetch-freebsd-headers.sh)
for name in $(awk '/^# The C shim/ { exit } !/^#/ && NF { print $1 }' scripts/kernel-symbols.allow); do
	decl=$name
	# SYSCTL_DECL(_kern_cam_ctl) declares sysctl___kern_cam_ctl.
	[[ $name == sysctl__* ]] && decl="SYSCTL_DECL(${name#sysctl__})"
	if ! grep -rqwF -- "$decl" "$headers/generic-freebsd" "$headers/x86_64-freebsd-none" bindings/model; then
		echo "test-audit: FAIL: $name is in kernel-symbols.allow but no FreeBSD header declares it"
		failures=$((failures + 1))
	fi
done
for name in $(awk '/^# The C shim/ { shim = 1; next } shim && !/^#/ && NF { print $1 }' scripts/kernel-symbols.allow); do
	grep -qw -- "$name" kmod/ctlpass.h || {
		echo "test-audit: FAIL: $name is listed as a shim symbol but kmod/ctlpass.h does not declare it"
		failures=$((failures + 1))
	}
done
[ "$failures" = 0 ] || exit 1
echo "test-audit: ok: every allowlisted name is declared by FreeBSD's headers or the shim"

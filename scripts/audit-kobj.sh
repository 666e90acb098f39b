#!/usr/bin/env bash
# Audits relocatable objects meant for the FreeBSD amd64 kernel linker
# (link_elf_obj.c) and prints their figures.  For each OBJECT it fails on:
#   - a file that is not an x86-64 ELF relocatable object (ET_REL); for a .ko,
#     one without FreeBSD's OS/ABI or without module metadata;
#   - a relocation type other than R_X86_64_64, PC32, PLT32 and 32S (the
#     kernel linker rejects GOT-relative and most other types);
#   - an SSE/AVX register operand (%xmm, %ymm, %zmm): the kernel does not
#     save the FPU state for its own code;
#   - a .got, .got.plt, .plt or .eh_frame section;
#   - an undefined symbol not listed in scripts/kernel-symbols.allow (linker
#     set bounds, __start_set_* and __stop_set_*, are resolved by the kernel
#     linker itself);
#   - a call into Rust's panic path (an unwrap, an index out of bounds, an
#     overflow check...): the crate handles every error, so none may remain.
# Its last line for each object: size, code size, undefined symbols.
#
# usage: scripts/audit-kobj.sh OBJECT...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
allow=${KOBJ_ALLOWLIST:-$here/kernel-symbols.allow}
status=0

# The functions a Rust panic goes through, by their demangled names (with or
# without the crate's disambiguator, core[1234abcd]::...).
panic_path='^(core|alloc)(\[[0-9a-f]+\])?::(panicking::|option::(unwrap|expect)_failed|result::unwrap_failed|slice::index::.*fail|str::slice_error_fail|alloc::handle_alloc_error|raw_vec::.*(capacity_overflow|handle_error))|rust_begin_unwind|__rust_alloc_error_handler'

audit() {
	local obj=$1
	local problems=()
	local header
	header=$(readelf -hW "$obj" 2>/dev/null) || { echo "audit-kobj: $obj: not an ELF file"; return 1; }
	grep -q 'Type:[[:space:]]*REL ' <<<"$header" || problems+=("not a relocatable object (ET_REL)")
	grep -q 'Machine:[[:space:]]*Advanced Micro Devices X86-64' <<<"$header" || problems+=("not an x86-64 object")

	local sections
	sections=$(readelf -SW "$obj" | sed -n 's/^ *\[ *[0-9]*\] \([^ ]*\) .*/\1/p')
	local s
	for s in .got .got.plt .plt .eh_frame; do
		grep -qxF "$s" <<<"$sections" && problems+=("forbidden section $s")
	done

	local modules=""
	if [[ $obj == *.ko ]]; then
		grep -q 'OS/ABI:[[:space:]]*UNIX - FreeBSD' <<<"$header" || problems+=("OS/ABI is not FreeBSD")
		grep -qxF set_modmetadata_set <<<"$sections" || problems+=("no set_modmetadata_set: not a kernel module")
		# DECLARE_MODULE and MODULE_DEPEND name their metadata records
		# _mod_metadata_md_<module> and _mod_metadata_md_<module>_on_<dep>,
		# and put a pointer to each in set_modmetadata_set.
		local syms mods m deps
		syms=$(readelf -sW "$obj" | awk '{ print $8 }')
		mods=$(grep -E '^__set_modmetadata_set_sym__mod_metadata_md_' <<<"$syms" | sed 's/^__set_modmetadata_set_sym__mod_metadata_md_//' | grep -v '_on_' | sort -u || true)
		[ -n "$mods" ] || problems+=("no module declared in set_modmetadata_set")
		for m in $mods; do
			deps=$(grep -E "^__set_modmetadata_set_sym__mod_metadata_md_${m}_on_" <<<"$syms" | sed "s/^.*_md_${m}_on_//" | sort -u | paste -sd, - || true)
			modules+=" $m(depends on ${deps:-nothing})"
		done
	fi

	local bad_relocs
	bad_relocs=$(readelf -rW "$obj" | awk '$3 ~ /^R_X86_64_/ && $3 !~ /^R_X86_64_(64|PC32|PLT32|32S)$/ { print $3 }' | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }')
	[ -z "$bad_relocs" ] || problems+=("relocations the kernel linker rejects: $bad_relocs")

	local simd
	simd=$(objdump -d --no-show-raw-insn "$obj" | grep -cE '%[xyz]mm[0-9]' || true)
	[ "$simd" = 0 ] || problems+=("$simd instructions use SSE/AVX registers")

	local undef unlisted
	undef=$(readelf -sW "$obj" | awk '$7 == "UND" && $8 != "" { print $8 }' | grep -vE '^__(start|stop)_set_' | sort -u || true)
	unlisted=$(comm -23 <(printf '%s\n' "$undef" | sed '/^$/d') <(grep -v '^#' "$allow" | awk 'NF { print $1 }' | sort -u) | paste -sd' ' - || true)
	[ -z "$unlisted" ] || problems+=("undefined symbols outside $(basename "$allow"): $unlisted")

	# Calls into the panic path from outside it (one line each, naming the
	# section, i.e. the function, that holds the call).
	local calls panics sites
	calls=$(readelf -rW "$obj" |
		awk '/^Relocation section/ { sec = $3; gsub(/\x27/, "", sec); sub(/^\.rela\.text\.(unlikely\.)?/, "", sec) }
			$3 ~ /^R_X86_64_(PLT32|PC32)$/ { print sec "\t" $5 }' |
		c++filt | awk -F '\t' -v path="$panic_path" '$2 ~ path && $1 !~ path { print $1 }' || true)
	sites=$(printf '%s\n' "$calls" | sed '/^$/d' | wc -l)
	panics=$(printf '%s\n' "$calls" | sed '/^$/d' | sort -u | paste -sd' ' - || true)
	[ -z "$panics" ] || problems+=("$sites calls into Rust's panic path from: $panics")

	local size text
	size=$(wc -c <"$obj" | tr -d " ")
	text=$(size -A "$obj" | awk '$1 ~ /^\.text/ { t += $2 } END { print t + 0 }')
	if [ ${#problems[@]} -gt 0 ]; then
		printf 'audit-kobj: %s: %s\n' "$obj" "${problems[@]}"
		echo "audit-kobj: $obj: FAILED (${#problems[@]} problems)"
		return 1
	fi
	[ -z "$modules" ] || echo "audit-kobj: $obj: modules:$modules"
	echo "audit-kobj: $obj: ok: $size bytes ($text of code), $(printf '%s\n' "$undef" | sed '/^$/d' | wc -l) undefined symbols, $sites panic call sites (I/O and completion paths included)"
}

[ $# -gt 0 ] || { echo "usage: $0 OBJECT..." >&2; exit 2; }
for obj; do
	audit "$obj" || status=1
done
exit $status

#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target of tests/fuzz (or those named in
# FUZZ_TARGETS) for FUZZ_SECONDS seconds each (default 60), one after the
# other, and prints for each how long it ran, how many inputs it executed,
# the coverage and features it reached, and whether it crashed.
#
# A target starts from its committed seeds (tests/fuzz/seeds/TARGET) and
# the corpus earlier runs grew (tests/fuzz/corpus/TARGET, not committed).
# A crash leaves its input in tests/fuzz/artifacts/TARGET (replay it with
# `cargo fuzz run --fuzz-dir tests/fuzz TARGET FILE`); the run goes on with
# the other targets and fails at the end.  Logs: target/fuzz/TARGET.log.
#
# cargo fuzz needs nightly flags (-Z sanitizer=address, sanitizer coverage);
# RUSTC_BOOTSTRAP=1 allows them on the stable toolchain.  Targets are built
# with debug assertions, so arithmetic overflow is a crash too.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
dir=tests/fuzz
logs=target/fuzz
export RUSTC_BOOTSTRAP=1
mkdir -p "$logs"

targets=${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$dir")}
cargo fuzz build --fuzz-dir "$dir" --debug-assertions

failed=()
printf '%-12s %8s %12s %8s %8s  %s\n' target seconds executions cov ft result
for t in $targets; do
	corpus=$dir/corpus/$t
	mkdir -p "$corpus"
	seeds=()
	[ -d "$dir/seeds/$t" ] && seeds=("$dir/seeds/$t")
	log=$logs/$t.log
	start=$(date +%s)
	# The simulated kernel declares a command lost after 60 s; the timeout
	# is longer, so that its own message says what hung.
	if cargo fuzz run --fuzz-dir "$dir" --debug-assertions "$t" "$corpus" "${seeds[@]}" -- \
		-max_total_time="$seconds" -timeout=90 -print_final_stats=1 >"$log" 2>&1; then
		result=ok
	else
		result="CRASH (see $log)"
		failed+=("$t")
	fi
	# libFuzzer's final statistics and last status line; the time is
	# libFuzzer's, or the wall clock's if it stopped at a crash.
	ran=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
	ran=${ran:-$(($(date +%s) - start))}
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	printf '%-12s %8s %12s %8s %8s  %s\n' "$t" "$ran" "${execs:--}" "${cov:--}" "${ft:--}" "$result"
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: crashes in ${failed[*]}" >&2
	exit 1
fi

# ctlpass: the two commands of the README, and their parts.
#
#   make test   install what is missing, then check formatting, lint (code and
#               the manual page ctlpass.4), run all
#               host tests (pure SCSI logic, the simulated FreeBSD kernel),
#               build the kernel object and ctlpass.ko, and audit both
#   make demo   run ctlpass in the simulated kernel (scripts/demo.ctl: an
#               emulated disk and a real tgtd disk exported through CTL)
#   make bench  measure the I/O path in the simulated kernel (not a test:
#               ratios against the device driven directly, copies and
#               allocations per I/O, instructions per I/O under callgrind)
#   make soak   random I/O with faults, aborts and pulled devices for
#               SOAK_SECONDS (600), then unload: leaks and stuck commands
#   make fuzz   run every cargo-fuzz target (tests/fuzz) for FUZZ_SECONDS
#               seconds each (not a test; default 60)
#   make asan   run the host tests built with AddressSanitizer and
#               LeakSanitizer (part of make test)
#
# On FreeBSD 14/15, build the real module with `make -C kmod` (see README).

CARGO ?= cargo
SIM = $(CARGO) run -q -p simkern --bin ctlpass-sim --
FUZZ_SECONDS ?= 60
HOST = $(shell rustc -vV | sed -n 's/^host: //p')

.PHONY: test demo bench soak fuzz deps lint man host-test asan check-freebsd14 kobj kmod audit clean

test: deps lint man host-test asan check-freebsd14 audit

demo: deps
	$(SIM) --script scripts/demo.ctl

bench: deps
	$(CARGO) run -q --release -p simkern --bin ctlpass-bench

SOAK_SECONDS ?= 600

soak: deps
	$(CARGO) run -q --release -p simkern --bin ctlpass-soak -- --seconds $(SOAK_SECONDS)

fuzz:
	scripts/install-deps.sh fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

deps:
	scripts/install-deps.sh

# The fuzz targets are a workspace of their own (tests/fuzz); they are
# formatted and linted here too, so that they keep building.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path tests/fuzz/Cargo.toml --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path tests/fuzz/Cargo.toml --all-targets --target-dir target -- -D warnings
	KOBJ_CARGO_COMMAND=clippy scripts/build-kobj.sh -- -D warnings

# The manual page: mandoc -Tlint must have nothing to say (bar the host's
# missing FreeBSD manuals, see the script).  Tests check its DIAGNOSTICS
# and SYSCTL VARIABLES against the module (tests/simkern/src/manpage.rs).
man: deps
	scripts/lint-man.sh kmod/ctlpass.4

# tests/simkern/tests/shell.rs runs ctlpass-sim's scripts (its tgtd part only
# where tgtd can start), so host tests need no tgtd.
host-test:
	$(CARGO) test --workspace

# The same tests built with AddressSanitizer, LeakSanitizer on (nightly flags
# on the stable toolchain: RUSTC_BOOTSTRAP=1).  --target keeps build scripts
# and bindgen uninstrumented.  tests/simkern/lsan.supp lists what the
# simulated kernel keeps for the life of a machine, and CTL's leak that it
# models on purpose.
asan: deps
	RUSTC_BOOTSTRAP=1 RUSTFLAGS=-Zsanitizer=address \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/simkern/lsan.supp \
	$(CARGO) test --workspace --target $(HOST) --target-dir target/asan

# The FreeBSD 14 layouts of the CTL structures (selected by __FreeBSD_version).
check-freebsd14:
	FREEBSD_VERSION=1400097 $(CARGO) check -q -p ctlpass --target-dir target/freebsd14

kobj:
	scripts/build-kobj.sh

kmod: kobj
	scripts/link-kmod.sh

audit: kmod
	scripts/audit-kobj.sh target/kmod/ctlpass_rust.o target/kmod/ctlpass.ko
	scripts/test-audit.sh

clean:
	$(CARGO) clean

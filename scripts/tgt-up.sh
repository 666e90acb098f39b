#!/usr/bin/env bash
# Start a tgtd (Linux SCSI target daemon) on 127.0.0.1 serving three real SCSI
# devices over iSCSI, for differential tests: LUN 1 a 64 MiB disk, LUN 2 a tape,
# LUN 3 a CD-ROM, all backed by files in DIR. Prints the target's URL
# (iscsi://127.0.0.1:PORT/IQN) on stdout; a LUN's URL is that plus "/LUN".
# Stop it with scripts/tgt-down.sh DIR CONTROL.
#
# usage: tgt-up.sh DIR [PORT] [CONTROL]
#   PORT     iSCSI TCP port on 127.0.0.1 (default 3261)
#   CONTROL  tgtd control port, i.e. /var/run/tgtd/socket.CONTROL (default 7)
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
	echo "usage: $0 DIR [PORT] [CONTROL]" >&2
	exit 2
fi
dir=$1
port=${2:-3261}
control=${3:-7}
case "$port$control" in
*[!0-9]*)
	echo "tgt-up: PORT and CONTROL must be numbers" >&2
	exit 2
	;;
esac

iqn=iqn.2026-11.org.ctlpass:tgt
here=$(cd "$(dirname "$0")" && pwd)

for tool in tgtd tgtadm tgtimg; do
	if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
		echo "tgt-up: $tool not found; install tgt: scripts/install-deps.sh" >&2
		exit 1
	fi
done
# tgt's tools live in /usr/sbin, which is not always on a non-root PATH.
PATH=$PATH:/usr/sbin:/sbin

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p /var/run/tgtd

if [ -e "$dir/tgtd.pid" ]; then
	echo "tgt-up: $dir/tgtd.pid exists; run tgt-down.sh $dir $control first" >&2
	exit 1
fi

adm() {
	tgtadm -C "$control" "$@"
}

# True while process $1 exists and is not a zombie (an exited child of this
# shell stays a zombie until waited for).
running() {
	local stat state
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	state=${stat##*) }
	state=${state%% *}
	[ "$state" != Z ] && [ "$state" != X ]
}

# True when process $1 holds tgtd's lock for control port $control, i.e. it is
# the daemon that answers tgtadm -C $control.
owns_control() {
	local lock fd
	lock=$(readlink -f "/var/run/tgtd/socket.$control.lock") || return 1
	for fd in /proc/"$1"/fd/*; do
		[ "$(readlink "$fd" 2>/dev/null)" = "$lock" ] && return 0
	done
	return 1
}

pid=
owned=0
ok=0
cleanup() {
	[ "$ok" != 1 ] && [ -n "$pid" ] || return 0
	echo "tgt-up: failed; stopping the tgtd it started (pid $pid)" >&2
	if [ "$owned" = 1 ]; then
		"$here/tgt-down.sh" "$dir" "$control" >&2 || true
	else
		# It never became the daemon of this control port: another tgtd may
		# answer there, so do not use tgtadm; tgtd dies on SIGKILL.
		kill -KILL "$pid" 2>/dev/null || true
		rm -f "$dir/disk.img" "$dir/tape.img" "$dir/cd.iso" "$dir/tgtd.pid"
	fi
}
trap cleanup EXIT

fail() {
	echo "tgt-up: $*" >&2
	if [ -f "$dir/tgtd.log" ]; then
		echo "---- $dir/tgtd.log ----" >&2
		cat "$dir/tgtd.log" >&2
		echo "----" >&2
	fi
	exit 1
}

# tgtd -f stays in the foreground (of this background job) and logs to stderr.
tgtd -f -C "$control" --iscsi "portal=127.0.0.1:$port" </dev/null >"$dir/tgtd.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/tgtd.pid"

# Wait (at most 10 s) until the daemon answers on its control socket.
ready=0
for _ in $(seq 100); do
	if ! running "$pid"; then
		fail "tgtd (pid $pid) exited during start-up"
	fi
	if owns_control "$pid" && adm --op show --mode sys >/dev/null 2>&1; then
		owned=1
		ready=1
		break
	fi
	sleep 0.1
done
[ "$ready" = 1 ] || fail "tgtd (pid $pid) did not answer tgtadm -C $control within 10 s"

# tgtd keeps running when it cannot listen on the portal: check that it does.
adm --lld iscsi --op show --mode portal 2>/dev/null | grep -q "127.0.0.1:$port," ||
	fail "tgtd is not listening on 127.0.0.1:$port"

# Backing files.
truncate -s 64M "$dir/disk.img"
rm -f "$dir/tape.img"
tgtimg --op new --device-type tape --barcode TAPE0001 --size 64 --type data --file "$dir/tape.img" >/dev/null ||
	fail "tgtimg could not create $dir/tape.img"
truncate -s $((1024 * 2048)) "$dir/cd.iso"

# The target and its logical units (LUN 0 is tgt's own controller).
adm --lld iscsi --op new --mode target --tid 1 --targetname "$iqn" || fail "cannot create target $iqn"
adm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --backing-store "$dir/disk.img" --bstype rdwr ||
	fail "cannot add the disk LUN"
adm --lld iscsi --op new --mode logicalunit --tid 1 --lun 2 --backing-store "$dir/tape.img" \
	--device-type tape --bstype ssc || fail "cannot add the tape LUN"
adm --lld iscsi --op new --mode logicalunit --tid 1 --lun 3 --backing-store "$dir/cd.iso" \
	--device-type cd --bstype rdwr || fail "cannot add the CD LUN"

# Identities the tests recognise (INQUIRY vendor/product/revision, unit serial number).
adm --op update --mode logicalunit --tid 1 --lun 1 \
	--params vendor_id=CTLPASS,product_id=TGT-DISK,product_rev=0185,scsi_sn=CTLPASS-DISK-1 ||
	fail "cannot set the disk's identity"
adm --op update --mode logicalunit --tid 1 --lun 2 \
	--params vendor_id=CTLPASS,product_id=TGT-TAPE,product_rev=0185,scsi_sn=CTLPASS-TAPE-2 ||
	fail "cannot set the tape's identity"
adm --op update --mode logicalunit --tid 1 --lun 3 \
	--params vendor_id=CTLPASS,product_id=TGT-CD,product_rev=0185,scsi_sn=CTLPASS-CD-3 ||
	fail "cannot set the CD's identity"

# Only initiators on this machine's loopback address may log in.
adm --lld iscsi --op bind --mode target --tid 1 --initiator-address 127.0.0.1 ||
	fail "cannot bind the target to 127.0.0.1"

ok=1
echo "iscsi://127.0.0.1:$port/$iqn"

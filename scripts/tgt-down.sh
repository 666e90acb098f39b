#!/usr/bin/env bash
# Stop a tgtd started by scripts/tgt-up.sh DIR [PORT] [CONTROL] and remove the
# backing files (disk.img, tape.img, cd.iso) and the pid file from DIR; the log
# (DIR/tgtd.log) is kept. Succeeds when that tgtd is already gone.
#
# usage: tgt-down.sh DIR [CONTROL]   (CONTROL defaults to 7, as in tgt-up.sh)
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 DIR [CONTROL]" >&2
	exit 2
fi
dir=$1
control=${2:-7}
case "$control" in
*[!0-9]*)
	echo "tgt-down: CONTROL must be a number" >&2
	exit 2
	;;
esac
PATH=$PATH:/usr/sbin:/sbin

pid=
if [ -f "$dir/tgtd.pid" ]; then
	pid=$(cat "$dir/tgtd.pid")
	case "$pid" in
	'' | *[!0-9]*) pid= ;;
	esac
fi

# True while $pid names a live (not zombie) tgtd process.
alive() {
	local stat state
	[ -n "$pid" ] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	case "$stat" in
	*"(tgtd)"*) ;;
	*) return 1 ;;
	esac
	state=${stat##*) }
	state=${state%% *}
	[ "$state" != Z ] && [ "$state" != X ]
}

# True when process $pid holds tgtd's lock for control port $control.
owns_control() {
	local lock fd
	lock=$(readlink -f "/var/run/tgtd/socket.$control.lock") || return 1
	for fd in /proc/"$pid"/fd/*; do
		[ "$(readlink "$fd" 2>/dev/null)" = "$lock" ] && return 0
	done
	return 1
}

# SIGTERM alone does not stop tgtd; taking the system offline, deleting the
# target and then the system does. Each step may fail when tgtd is gone. When
# DIR names a pid, only talk to the control port if that process owns it (an
# unrelated tgtd may have taken the port since).
if command -v tgtadm >/dev/null 2>&1 && { [ -z "$pid" ] || { alive && owns_control; }; }; then
	adm() {
		timeout 10 tgtadm -C "$control" "$@" >/dev/null 2>&1 || true
	}
	if timeout 10 tgtadm -C "$control" --op show --mode sys >/dev/null 2>&1; then
		adm --op update --mode sys --name State -v offline
		adm --op delete --mode target --tid 1 --force
		adm --op delete --mode system
	fi
fi

# Wait (at most 10 s) for the process to exit, then kill it.
for _ in $(seq 100); do
	alive || break
	sleep 0.1
done
if alive; then
	echo "tgt-down: tgtd (pid $pid) still running after 10 s; sending SIGKILL" >&2
	kill -KILL "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		alive || break
		sleep 0.1
	done
fi
if alive; then
	echo "tgt-down: tgtd (pid $pid) does not exit" >&2
	exit 1
fi

# tgtd leaves its control socket and lock file behind: remove them unless a
# process has the lock file open (a new tgtd on the same control port).
lock=/var/run/tgtd/socket.$control.lock
if [ -e "$lock" ] && target=$(readlink -f "$lock"); then
	if [ -z "$(find /proc/[0-9]*/fd -maxdepth 1 -lname "$target" -print -quit 2>/dev/null)" ]; then
		rm -f "/var/run/tgtd/socket.$control" "$lock"
	fi
fi

rm -f "$dir/disk.img" "$dir/tape.img" "$dir/cd.iso" "$dir/tgtd.pid"

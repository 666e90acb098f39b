#!/usr/bin/env bash
# mandoc -Tlint on the manual pages: any message fails, except mandoc's
# remarks about this host's manual database.  Debian has none of FreeBSD's
# manuals, so mandoc reports each .Xr to one as "referenced manual not
# found"; those are accepted only for the FreeBSD manuals named here (each
# in FreeBSD 15's source tree at the path given), so a misspelt reference
# still fails.
set -euo pipefail
cd "$(dirname "$0")/.."

freebsd_manuals=(
	"cam 4"          # share/man/man4/cam.4
	"cd 4"           # share/man/man4/cd.4
	"ctl 4"          # share/man/man4/ctl.4
	"da 4"           # share/man/man4/da.4
	"iscsi 4"        # share/man/man4/iscsi.4
	"ctl.conf 5"     # usr.sbin/ctld/ctl.conf.5
	"loader.conf 5"  # stand/defaults/loader.conf.5
	"rc.conf 5"      # share/man/man5/rc.conf.5
	"camcontrol 8"   # sbin/camcontrol/camcontrol.8
	"ctladm 8"       # usr.sbin/ctladm/ctladm.8
	"ctld 8"         # usr.sbin/ctld/ctld.8
	"iscsictl 8"     # usr.bin/iscsictl/iscsictl.8
	"loader 8"       # stand/man/loader.8
	"sysctl 8"       # sbin/sysctl/sysctl.8
)

status=0
for page in "$@"; do
	while IFS= read -r line; do
		case $line in
		*"STYLE: referenced manual not found: Xr "*)
			ref=${line##*: Xr }
			ref=${ref% (* times)}
			known=no
			for m in "${freebsd_manuals[@]}"; do
				[ "$ref" = "$m" ] && known=yes
			done
			[ $known = yes ] && continue
			;;
		"mandoc: outdated mandoc.db"*) continue ;;
		esac
		echo "$line"
		status=1
	done < <(mandoc -Tlint "$page" 2>&1 || true)
done
exit $status

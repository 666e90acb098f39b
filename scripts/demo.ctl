# ctlpass demo (make demo): a simulated FreeBSD machine exports two real
# SCSI devices through CTL, an emulated SAS disk and a disk of a real iSCSI
# target, and an initiator sees each as itself.  Run by ctlpass-sim; see the
# README for its commands.

# A real iSCSI target on 127.0.0.1 (Linux tgtd): LUN 1 disk, 2 tape, 3 CD.
tgtd start

# Two SAS disks behind mpr0, a SATA DVD drive, and a LUN of CTL's camsim.
camcontrol devlist
kldload ctlpass
kldstat

# Slide a 4Kn-physical disk into the enclosure, wired to da5 as a device
# hint would, and log in to the tgtd's disk (it arrives on iscsi0).
device add disk name=da5 blocks=65536 pblockexp=3 vendor=HGST product=HUH721212AL5200 revision=A3D0 serial=8HK2X3ZA naa=5000cca27b1c0001
device add iscsi $TGT/1
camcontrol devlist

# Export both: the first by its name, the second by its serial number (an
# identity that survives renumbering; also -o cam=B:T:L, -o devid=naa.HEX).
ctladm create -b passthrough -o device=da5
ctladm create -b passthrough -o serial=CTLPASS-DISK-1
ctladm devlist -v

# The device, and what an initiator sees of its LUN: CTL answers INQUIRY
# itself (its SPC-5) with the device's identity.  A new LUN reports a POWER
# ON unit attention once (a leading ! expects the command to fail).
camcontrol inquiry da5
ctladm inquiry 0
camcontrol readcap da5
! ctladm readcap 0
ctladm readcap 0
camcontrol inquiry da3
ctladm inquiry 1
! ctladm tur 1
camcontrol readcap da3
ctladm readcap 1

# Serve the LUNs over iSCSI, as ctld and CTL's iSCSI frontend do: an
# initiator on another machine (the host's libiscsi tools) finds the target,
# logs in, and sees LUN 1, the tgtd disk, as camcontrol sees the device
# above (CTL's SPC-5 INQUIRY with the device's identity, the device's
# capacity and 4 KiB physical blocks).
portal listen 127.0.0.1:0
iscsi-ls $PORTAL
iscsi-inq $PORTAL/1
iscsi-readcapacity16 $PORTAL/1
portal stop
# What the administrator watches: CTL answered INQUIRY and READ CAPACITY
# itself, so only a READ moves LUN 1's counters; and the ctl.conf block
# that serves the LUN from ctld as it is.
read 1 0 8
sysctl kern.cam.ctl.passthrough.lun.1

# Stop and start a LUN: CTL stops it, and ctlpass tells the device.
ctladm stop 1
! ctladm tur 1
ctladm start 1
ctladm tur 1

# Pull the SAS disk with its LUN exported: the LUN stays, offline (CTL
# answers NOT READY), and the device's periph goes.  Slide the disk back
# into another bay: it arrives as da6, and the LUN, which knows it by its
# device id, binds to it again.
device remove da5
ctladm devlist -v
! ctladm tur 0
device add disk name=da6 blocks=65536 pblockexp=3 vendor=HGST product=HUH721212AL5200 revision=A3D0 serial=8HK2X3ZA naa=5000cca27b1c0001
ctladm tur 0
ctladm readcap 0

# Serve the SAS disk from ctl.conf instead: ctld creates the LUN (its
# path in quotes: ctl.conf takes no "=" in a bare word), a reload keeps it
# (one MODIFY, nothing changed), and stopping ctld removes it.
ctladm remove -b passthrough -l 0
conf /etc/ctl.conf
lun sas_disk {
	backend passthrough
	path "devid=naa.5000cca27b1c0001"
	blocksize 512
	option lost offline
}
target iqn.2012-06.com.example:demo {
	auth-group no-authentication
	portal-group default
	lun 0 sas_disk
}
end
service ctld start
ctladm devlist
! ctladm tur 0
service ctld reload
ctladm tur 0
service ctld stop
# Take it all down: nothing may stay allocated.
ctladm remove -b passthrough -l 1
ctladm devlist
device remove da3
device remove da6
kldunload ctlpass
balance ctlpass
tgtd stop

/*
 * Stand-in for the device_if.h that a FreeBSD kernel build generates from
 * sys/kern/device_if.m.  ctlpass uses no newbus methods; the CAM headers only
 * need the file to exist (cam_ccb.h -> cam/mmc/mmc_bus.h -> dev/mmc/bridge.h
 * -> sys/bus.h includes it under _KERNEL).  A real kmod build generates the
 * real file and never sees this one.
 */
#ifndef _CTLPASS_STANDIN_DEVICE_IF_H_
#define _CTLPASS_STANDIN_DEVICE_IF_H_
#endif

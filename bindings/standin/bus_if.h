/*
 * Stand-in for the bus_if.h that a FreeBSD kernel build generates from
 * sys/kern/bus_if.m; see device_if.h beside it.
 */
#ifndef _CTLPASS_STANDIN_BUS_IF_H_
#define _CTLPASS_STANDIN_BUS_IF_H_
#endif

/*
 * The FreeBSD kernel headers ctlpass is built against.  build.rs runs bindgen
 * on this file with the kmod compiler flags; the C shim includes it too, so
 * both see the same declarations.
 */
#ifndef _CTLPASS_WRAPPER_H_
#define _CTLPASS_WRAPPER_H_

#include <sys/param.h>
#include <sys/systm.h>
#include <sys/kernel.h>
#include <sys/module.h>
#include <sys/linker_set.h>
#include <sys/malloc.h>
#include <sys/lock.h>
#include <sys/mutex.h>
#include <sys/sx.h>
#include <sys/condvar.h>
#include <sys/callout.h>
#include <sys/sysctl.h>
#include <sys/taskqueue.h>
#include <sys/nv.h>
#include <sys/sbuf.h>
#include <sys/conf.h>

#include <cam/cam.h>
#include <cam/cam_ccb.h>
#include <cam/cam_periph.h>
#include <cam/cam_sim.h>
#include <cam/cam_xpt.h>
#include <cam/cam_xpt_periph.h>
#include <cam/scsi/scsi_all.h>
#include <cam/scsi/scsi_message.h>

#include <cam/ctl/ctl.h>
#include <cam/ctl/ctl_io.h>
#include <cam/ctl/ctl_backend.h>
#include <cam/ctl/ctl_ioctl.h>
#include <cam/ctl/ctl_error.h>

#include "../kmod/ctlpass.h"

#endif /* _CTLPASS_WRAPPER_H_ */

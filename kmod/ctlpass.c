/*
 * ctlpass kernel module: the declarations C must make for the Rust crate.
 *
 * One .ko holds two modules: "ctlpass", the CAM peripheral driver that
 * attaches to every SCSI device, and "ctlpass_backend", the CTL backend
 * "passthrough" that exports those devices as LUNs.  Everything they do is
 * implemented in Rust (src/); this file holds only what Rust cannot express:
 * linker-set declarations (MALLOC_DEFINE, SYSINIT, SYSCTL_NODE,
 * CTL_BACKEND_DECLARE, PERIPHDRIVER_DECLARE) and one-line wrappers for kernel
 * macros and static inline functions.
 */

#include "../bindings/wrapper.h"

MALLOC_DEFINE(M_CTLPASS, "ctlpass", "CTL pass-through backend");

SYSCTL_NODE(_kern_cam_ctl, OID_AUTO, passthrough, CTLFLAG_RD | CTLFLAG_MPSAFE,
    0, "CTL pass-through backend (ctlpass)");

/* Module-wide state is set up before, and torn down after, both modules. */
SYSINIT(ctlpass_state, SI_SUB_LOCK, SI_ORDER_MIDDLE, ctlpass_sysinit, NULL);
SYSUNINIT(ctlpass_state, SI_SUB_LOCK, SI_ORDER_MIDDLE, ctlpass_sysuninit, NULL);

struct periph_driver ctlpass_periph_driver = {
	.init = ctlpass_periph_init,
	.driver_name = "ctlpass",
	.units = TAILQ_HEAD_INITIALIZER(ctlpass_periph_driver.units),
	.generation = 0,
	.flags = 0,
	.deinit = ctlpass_periph_deinit,
};
PERIPHDRIVER_DECLARE(ctlpass, ctlpass_periph_driver);
MODULE_VERSION(ctlpass, 1);

struct ctl_backend_driver ctlpass_backend_driver = {
	.name = "passthrough",
	.flags = CTL_BE_FLAG_HAS_CONFIG,
	.init = ctlpass_be_init,
	.shutdown = ctlpass_be_shutdown,
	.data_submit = ctlpass_be_data_submit,
	.config_read = ctlpass_be_config_read,
	.config_write = ctlpass_be_config_write,
	.ioctl = ctlpass_be_ioctl,
	.lun_info = ctlpass_be_lun_info,
};
CTL_BACKEND_DECLARE(ctlpass_backend, ctlpass_backend_driver);

void
ctlpass_mtx_init(struct mtx *m, const char *name)
{
	mtx_init(m, name, NULL, MTX_DEF);
}

void
ctlpass_mtx_destroy(struct mtx *m)
{
	mtx_destroy(m);
}

void
ctlpass_mtx_lock(struct mtx *m)
{
	mtx_lock(m);
}

void
ctlpass_mtx_unlock(struct mtx *m)
{
	mtx_unlock(m);
}

void
ctlpass_periph_lock(struct cam_periph *periph)
{
	cam_periph_lock(periph);
}

void
ctlpass_periph_unlock(struct cam_periph *periph)
{
	cam_periph_unlock(periph);
}

struct cam_periph *
ctlpass_periph_acquire_first(void)
{
	return (cam_periph_acquire_first(&ctlpass_periph_driver));
}

struct cam_periph *
ctlpass_periph_acquire_next(struct cam_periph *periph)
{
	return (cam_periph_acquire_next(periph));
}

void
ctlpass_xpt_path_inq(struct ccb_pathinq *cpi, struct cam_path *path)
{
	xpt_path_inq(cpi, path);
}

void
ctlpass_cam_fill_csio(struct ccb_scsiio *csio, uint32_t retries,
    void (*cbfcnp)(struct cam_periph *, union ccb *), uint32_t flags,
    uint8_t tag_action, uint8_t *data_ptr, uint32_t dxfer_len,
    uint8_t sense_len, uint8_t cdb_len, uint32_t timeout)
{
	cam_fill_csio(csio, retries, cbfcnp, flags, tag_action, data_ptr,
	    dxfer_len, sense_len, cdb_len, timeout);
}

void
ctlpass_pause(const char *wmesg, int ticks)
{
	pause(wmesg, ticks);
}

int
ctlpass_msleep(const void *chan, struct mtx *m, int pri, const char *wmesg,
    int ticks)
{
	return (msleep(chan, m, pri, wmesg, ticks));
}

void
ctlpass_task_init(struct task *task, task_fn_t *func, void *context)
{
	TASK_INIT(task, 0, func, context);
}

int
ctlpass_callout_reset(struct callout *c, int ticks, callout_func_t *func,
    void *arg)
{
	return (callout_reset(c, ticks, func, arg));
}

int
ctlpass_callout_drain(struct callout *c)
{
	return (callout_drain(c));
}

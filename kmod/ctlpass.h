/*
 * The interface between the C shim (kmod/ctlpass.c) and the Rust crate.
 *
 * The first groups are implemented in Rust and referenced by the shim's
 * linker-set declarations; the last is implemented by the shim: the module's
 * kernel objects, and one-line wrappers for kernel macros and static inline
 * functions that Rust cannot call.  bindgen reads this file through
 * bindings/wrapper.h, so both sides agree on every prototype.
 */
#ifndef _CTLPASS_SHIM_H_
#define _CTLPASS_SHIM_H_

/* Implemented in Rust (src/kern/entry.rs): module-wide set-up and tear-down,
 * run first at load (SI_SUB_LOCK) and last at unload. */
void	ctlpass_sysinit(void *arg);
void	ctlpass_sysuninit(void *arg);

/* Implemented in Rust: the CTL backend "passthrough". */
int	ctlpass_be_init(void);
int	ctlpass_be_shutdown(void);
int	ctlpass_be_data_submit(union ctl_io *io);
int	ctlpass_be_config_read(union ctl_io *io);
int	ctlpass_be_config_write(union ctl_io *io);
int	ctlpass_be_ioctl(struct cdev *dev, u_long cmd, caddr_t addr, int flag,
	    struct thread *td);
int	ctlpass_be_lun_info(struct ctl_be_lun *be_lun, struct sbuf *sb);

/* Implemented in Rust: the CAM peripheral driver "ctlpass". */
void	ctlpass_periph_init(void);
int	ctlpass_periph_deinit(void);

/* Implemented by the shim. */
MALLOC_DECLARE(M_CTLPASS);
extern struct periph_driver ctlpass_periph_driver;
extern struct ctl_backend_driver ctlpass_backend_driver;
/* kern.cam.ctl.passthrough (SYSCTL_NODE in ctlpass.c), the parent of the
 * OIDs the Rust side adds at run time (SYSCTL_DECL, spelled out). */
extern struct sysctl_oid sysctl___kern_cam_ctl_passthrough;

void	ctlpass_mtx_init(struct mtx *m, const char *name);
void	ctlpass_mtx_destroy(struct mtx *m);
void	ctlpass_mtx_lock(struct mtx *m);
void	ctlpass_mtx_unlock(struct mtx *m);
void	ctlpass_periph_lock(struct cam_periph *periph);
void	ctlpass_periph_unlock(struct cam_periph *periph);
struct cam_periph *ctlpass_periph_acquire_first(void);
struct cam_periph *ctlpass_periph_acquire_next(struct cam_periph *periph);
void	ctlpass_xpt_path_inq(struct ccb_pathinq *cpi, struct cam_path *path);
void	ctlpass_cam_fill_csio(struct ccb_scsiio *csio, uint32_t retries,
	    void (*cbfcnp)(struct cam_periph *, union ccb *), uint32_t flags,
	    uint8_t tag_action, uint8_t *data_ptr, uint32_t dxfer_len,
	    uint8_t sense_len, uint8_t cdb_len, uint32_t timeout);
void	ctlpass_pause(const char *wmesg, int ticks);
int	ctlpass_msleep(const void *chan, struct mtx *m, int pri,
	    const char *wmesg, int ticks);
void	ctlpass_task_init(struct task *task, task_fn_t *func, void *context);
int	ctlpass_callout_reset(struct callout *c, int ticks, callout_func_t *func,
	    void *arg);
int	ctlpass_callout_drain(struct callout *c);

#endif /* _CTLPASS_SHIM_H_ */

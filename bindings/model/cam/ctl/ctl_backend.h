/*
 * ctlpass model of <cam/ctl/ctl_backend.h>: the backend driver and backend
 * LUN structures with FreeBSD's exact layout, CTL_BACKEND_DECLARE, and the
 * LUN KPIs.  See ctl.h for why models exist.
 *
 * Followed:
 *   15: bsdjhb/freebsd sys/cam/ctl/ctl_backend.h @ 1f52be670cf8955e74769aeb6093dd37c8e82ef6
 *   14: sobomax/freebsd14_vendor sys/cam/ctl/ctl_backend.h @ 0f7ff3427c99afe8b7a0ccf8638dc10aed02c3f8
 *       (14's struct ctl_backend_driver has a data_move_done slot between
 *       data_submit and config_read; initialise it by designator, never by
 *       position; 15 adds ctl_lun_nsdata_ids)
 */
#ifndef _CTL_BACKEND_H_
#define _CTL_BACKEND_H_

#include <cam/ctl/ctl_ioctl.h>
#include <sys/nv.h>

typedef enum {
	CTL_LUN_SERSEQ_OFF,
	CTL_LUN_SERSEQ_SOFT,
	CTL_LUN_SERSEQ_READ,
	CTL_LUN_SERSEQ_ON
} ctl_lun_serseq;

#ifdef _KERNEL

/*
 * A module event handler that registers the backend on MOD_LOAD and
 * deregisters it on MOD_UNLOAD; the module depends on ctl and cam.
 */
#define CTL_BACKEND_DECLARE(name, driver)				\
	static int name ## _modevent(module_t mod, int type, void *data) \
	{								\
		switch (type) {						\
		case MOD_LOAD:						\
			return (ctl_backend_register(			\
			    (struct ctl_backend_driver *)data));	\
		case MOD_UNLOAD:					\
			return (ctl_backend_deregister(			\
			    (struct ctl_backend_driver *)data));	\
		default:						\
			return (EOPNOTSUPP);				\
		}							\
	}								\
	static moduledata_t name ## _mod = {				\
		#name,							\
		name ## _modevent,					\
		(void *)&driver						\
	};								\
	DECLARE_MODULE(name, name ## _mod, SI_SUB_CONFIGURE, SI_ORDER_FOURTH); \
	MODULE_DEPEND(name, ctl, 1, 1, 1);				\
	MODULE_DEPEND(name, cam, 1, 1, 1)

struct ctl_be_lun;
typedef void (*be_callback_t)(struct ctl_be_lun *be_lun);

struct ctl_be_lun {
	uint8_t			lun_type;
	ctl_backend_lun_flags	flags;
	ctl_lun_serseq		serseq;
	uint64_t		maxlba;
	uint32_t		blocksize;
	uint16_t		pblockexp;
	uint16_t		pblockoff;
	uint16_t		ublockexp;
	uint16_t		ublockoff;
	uint32_t		atomicblock;
	uint32_t		opttxferlen;
	uint32_t		req_lun_id;
	uint32_t		lun_id;
	uint8_t			serial_num[CTL_SN_LEN];
	uint8_t			device_id[CTL_DEVID_LEN];
	be_callback_t		lun_shutdown;
	struct ctl_backend_driver *be;
	void			*ctl_lun;
	nvlist_t		*options;
	STAILQ_ENTRY(ctl_be_lun) links;
};

typedef enum {
	CTL_BE_FLAG_NONE	= 0x00,
	CTL_BE_FLAG_HAS_CONFIG	= 0x01,
} ctl_backend_flags;

typedef int (*be_init_t)(void);
typedef int (*be_shutdown_t)(void);
typedef int (*be_func_t)(union ctl_io *io);
typedef void (*be_vfunc_t)(union ctl_io *io);
typedef int (*be_ioctl_t)(struct cdev *dev, u_long cmd, caddr_t addr, int flag,
    struct thread *td);
typedef int (*be_luninfo_t)(struct ctl_be_lun *be_lun, struct sbuf *sb);
typedef uint64_t (*be_lunattr_t)(struct ctl_be_lun *be_lun, const char *attrname);

struct ctl_backend_driver {
	char		  name[CTL_BE_NAME_LEN];
	ctl_backend_flags flags;
	be_init_t	  init;
	be_shutdown_t	  shutdown;
	be_func_t	  data_submit;
#if __FreeBSD_version < 1500000
	be_func_t	  data_move_done;
#endif
	be_func_t	  config_read;
	be_func_t	  config_write;
	be_ioctl_t	  ioctl;
	be_luninfo_t	  lun_info;
	be_lunattr_t	  lun_attr;
	STAILQ_ENTRY(ctl_backend_driver) links;
};

int ctl_backend_register(struct ctl_backend_driver *be);
int ctl_backend_deregister(struct ctl_backend_driver *be);
struct ctl_backend_driver *ctl_backend_find(char *backend_name);

int ctl_add_lun(struct ctl_be_lun *be_lun);
int ctl_remove_lun(struct ctl_be_lun *be_lun);
int ctl_start_lun(struct ctl_be_lun *be_lun);
int ctl_stop_lun(struct ctl_be_lun *be_lun);
int ctl_lun_no_media(struct ctl_be_lun *be_lun);
int ctl_lun_has_media(struct ctl_be_lun *be_lun);
int ctl_lun_ejected(struct ctl_be_lun *be_lun);
int ctl_lun_primary(struct ctl_be_lun *be_lun);
int ctl_lun_secondary(struct ctl_be_lun *be_lun);
void ctl_lun_capacity_changed(struct ctl_be_lun *be_lun);

#endif /* _KERNEL */
#endif /* _CTL_BACKEND_H_ */

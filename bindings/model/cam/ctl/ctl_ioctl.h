/*
 * ctlpass model of <cam/ctl/ctl_ioctl.h>: the LUN request and LUN list
 * interface (CTL_LUN_REQ, CTL_LUN_LIST) with FreeBSD's exact layout, the
 * subset ctlpass and its simulated kernel use.  See ctl.h for why models
 * exist.  These structures are the same in 14 and 15.
 *
 * Followed:
 *   15: bsdjhb/freebsd sys/cam/ctl/ctl_ioctl.h @ 457db4970fb64cab5773452da23df772aac93868
 *   14: sobomax/freebsd14_vendor sys/cam/ctl/ctl_ioctl.h @ 4b33055d8aff7e8e51b0c2e7650dc0f75e9da8a7
 *
 * Like the real header, this one expects <cam/ctl/ctl.h> (CTL_SN_LEN,
 * CTL_DEVID_LEN) to be included first.
 */
#ifndef _CTL_IOCTL_H_
#define _CTL_IOCTL_H_

#include <sys/ioccom.h>
#include <sys/nv.h>

#define CTL_DEFAULT_DEV		"/dev/cam/ctl"
#define CTL_MINOR		225

typedef enum {
	CTL_LUN_NOSTATUS,
	CTL_LUN_OK,
	CTL_LUN_ERROR,
	CTL_LUN_WARNING
} ctl_lun_status;

#define CTL_ERROR_STR_LEN	160

typedef enum {
	CTL_LUNREQ_CREATE,
	CTL_LUNREQ_RM,
	CTL_LUNREQ_MODIFY,
} ctl_lunreq_type;

typedef enum {
	CTL_LUN_FLAG_ID_REQ		= 0x01,
	CTL_LUN_FLAG_STOPPED		= 0x02,
	CTL_LUN_FLAG_NO_MEDIA		= 0x04,
	CTL_LUN_FLAG_PRIMARY		= 0x08,
	CTL_LUN_FLAG_SERIAL_NUM		= 0x10,
	CTL_LUN_FLAG_DEVID		= 0x20,
	CTL_LUN_FLAG_DEV_TYPE		= 0x40,
	CTL_LUN_FLAG_UNMAP		= 0x80,
	CTL_LUN_FLAG_EJECTED		= 0x100,
	CTL_LUN_FLAG_READONLY		= 0x200
} ctl_backend_lun_flags;

struct ctl_lun_create_params {
	ctl_backend_lun_flags	flags;
	uint8_t			device_type;
	uint64_t		lun_size_bytes;
	uint32_t		blocksize_bytes;
	uint32_t		req_lun_id;
	uint8_t			serial_num[CTL_SN_LEN];
	uint8_t			device_id[CTL_DEVID_LEN];
};

struct ctl_lun_rm_params {
	uint32_t		lun_id;
};

struct ctl_lun_modify_params {
	uint32_t		lun_id;
	uint64_t		lun_size_bytes;
};

union ctl_lunreq_data {
	struct ctl_lun_create_params	create;
	struct ctl_lun_rm_params	rm;
	struct ctl_lun_modify_params	modify;
};

struct ctl_lun_req {
#define CTL_BE_NAME_LEN		32
	char			backend[CTL_BE_NAME_LEN];
	ctl_lunreq_type		reqtype;
	union ctl_lunreq_data	reqdata;
	void *			args;
	nvlist_t *		args_nvl;
#define CTL_MAX_ARGS_LEN	(1024 * 1024)
	size_t			args_len;
	void *			result;
	nvlist_t *		result_nvl;
	size_t			result_len;
	ctl_lun_status		status;
	char			error_str[CTL_ERROR_STR_LEN];
};

typedef enum {
	CTL_LUN_LIST_NONE,
	CTL_LUN_LIST_OK,
	CTL_LUN_LIST_NEED_MORE_SPACE,
	CTL_LUN_LIST_ERROR
} ctl_lun_list_status;

struct ctl_lun_list {
	char			backend[CTL_BE_NAME_LEN];
	uint32_t		alloc_len;
	char			*lun_xml;
	uint32_t		fill_len;
	ctl_lun_list_status	status;
	char			error_str[CTL_ERROR_STR_LEN];
};

#define CTL_LUN_REQ		_IOWR(CTL_MINOR, 0x21, struct ctl_lun_req)
#define CTL_LUN_LIST		_IOWR(CTL_MINOR, 0x22, struct ctl_lun_list)

#endif /* _CTL_IOCTL_H_ */

/*
 * ctlpass model of <cam/ctl/ctl_io.h>: CTL's I/O structures with FreeBSD's
 * exact layout (every member of every structure in union ctl_io is declared,
 * in order, so that sizes and offsets match the kernel's), plus the
 * enumerations and constants ctlpass uses.  See ctl.h for why models exist.
 *
 * Followed:
 *   15: bsdjhb/freebsd sys/cam/ctl/ctl_io.h @ 487c7d799f0319d3b1d4d8c07780c4d71fb60f83
 *   14: sobomax/freebsd14_vendor sys/cam/ctl/ctl_io.h @ 0f7ff3427c99afe8b7a0ccf8638dc10aed02c3f8
 *
 * Differences between the two, selected by __FreeBSD_version:
 *   - 15 adds CTL_NVME_ERROR to ctl_io_status (so CTL_CMD_ABORTED is 7, not 6),
 *     CTL_IO_NVME and CTL_IO_NVME_ADMIN to ctl_io_type, struct ctl_nvmeio to
 *     union ctl_io, and renames flag 0x20 from DO_AUTOSENSE to USER_TAG;
 *   - 15's ooa_links is a LIST_ENTRY, 14's a TAILQ_ENTRY;
 *   - 15's ctl_scsiio has seridx and a 64-bit tag_num, 14's sense_residual,
 *     residual and a 32-bit tag_num; be_move_done takes (io, samethr) in 15
 *     and (io) in 14;
 *   - ctl_taskio and the HA messages carry a 64-bit tag_num in 15.
 */
#ifndef _CTL_IO_H_
#define _CTL_IO_H_

#include <sys/queue.h>
#include <cam/scsi/scsi_all.h>
#if __FreeBSD_version >= 1500000
#include <dev/nvme/nvme.h>
#endif

#define CTL_MAX_CDBLEN	32
/* Defined in the real header; it adds the timing members to ctl_io_hdr. */
#define CTL_TIME_IO
#define CTL_TIME_IO_DEFAULT_SECS	90

typedef enum {
	CTL_STATUS_NONE,
	CTL_SUCCESS,
	CTL_CMD_TIMEOUT,
	CTL_SEL_TIMEOUT,
	CTL_ERROR,
	CTL_SCSI_ERROR,
#if __FreeBSD_version >= 1500000
	CTL_NVME_ERROR,
#endif
	CTL_CMD_ABORTED,
	CTL_STATUS_MASK = 0xfff,
	CTL_AUTOSENSE = 0x1000
} ctl_io_status;

typedef enum {
	CTL_FLAG_NONE		= 0x00000000,
	CTL_FLAG_DATA_IN	= 0x00000001,
	CTL_FLAG_DATA_OUT	= 0x00000002,
	CTL_FLAG_DATA_NONE	= 0x00000003,
	CTL_FLAG_DATA_MASK	= 0x00000003,
#if __FreeBSD_version >= 1500000
	CTL_FLAG_USER_TAG	= 0x00000020,
#else
	CTL_FLAG_DO_AUTOSENSE	= 0x00000020,
#endif
	CTL_FLAG_USER_REQ	= 0x00000040,
	CTL_FLAG_ALLOCATED	= 0x00000100,
	CTL_FLAG_ABORT_STATUS	= 0x00000400,
	CTL_FLAG_ABORT		= 0x00000800,
	CTL_FLAG_DMA_INPROG	= 0x00001000,
	CTL_FLAG_DELAY_DONE	= 0x00004000,
	CTL_FLAG_INT_COPY	= 0x00008000,
	CTL_FLAG_SENT_2OTHER_SC	= 0x00010000,
	CTL_FLAG_FROM_OTHER_SC	= 0x00020000,
	CTL_FLAG_IS_WAS_ON_RTR	= 0x00040000,
	CTL_FLAG_BUS_ADDR	= 0x00080000,
	CTL_FLAG_IO_CONT	= 0x00100000,
	CTL_FLAG_NO_DATAMOVE	= 0x00400000,
	CTL_FLAG_DMA_QUEUED	= 0x00800000,
	CTL_FLAG_STATUS_QUEUED	= 0x01000000,
	CTL_FLAG_FAILOVER	= 0x04000000,
	CTL_FLAG_IO_ACTIVE	= 0x08000000,
	CTL_FLAG_STATUS_SENT	= 0x10000000,
	CTL_FLAG_SERSEQ_DONE	= 0x20000000
} ctl_io_flags;

struct ctl_lba_len {
	uint64_t lba;
	uint32_t len;
};

struct ctl_lba_len_flags {
	uint64_t lba;
	uint32_t len;
	uint32_t flags;
#define CTL_LLF_FUA	0x04000000
#define CTL_LLF_DPO	0x08000000
#define CTL_LLF_READ	0x10000000
#define CTL_LLF_WRITE	0x20000000
#define CTL_LLF_VERIFY	0x40000000
#define CTL_LLF_COMPARE	0x80000000
};

struct ctl_ptr_len_flags {
	uint8_t		*ptr;
	uint32_t	len;
	uint32_t	flags;
};

union ctl_priv {
	uint8_t		bytes[sizeof(uint64_t) * 2];
	uint64_t	integer;
	uint64_t	integers[2];
	void		*ptr;
	void		*ptrs[2];
};

#define CTL_NUM_PRIV		6
#define CTL_PRIV_LUN		0
#define CTL_PRIV_LBA_LEN	1
#define CTL_PRIV_MODEPAGE	1
#define CTL_PRIV_BACKEND	2
#define CTL_PRIV_BACKEND_LUN	3
#define CTL_PRIV_FRONTEND	4
#define CTL_PRIV_FRONTEND2	5

#define CTL_LUN(io)		((io)->io_hdr.ctl_private[CTL_PRIV_LUN].ptrs[0])
#define CTL_BACKEND_LUN(io)	((io)->io_hdr.ctl_private[CTL_PRIV_BACKEND_LUN].ptrs[0])

struct ctl_sg_entry {
	void	*addr;
	size_t	len;
};

typedef enum {
	CTL_IO_NONE,
	CTL_IO_SCSI,
	CTL_IO_TASK,
#if __FreeBSD_version >= 1500000
	CTL_IO_NVME,
	CTL_IO_NVME_ADMIN,
#endif
} ctl_io_type;

struct ctl_nexus {
	uint32_t initid;
	uint32_t targ_port;
	uint32_t targ_lun;
	uint32_t targ_mapped_lun;
};

typedef enum {
	CTL_MSG_SERIALIZE,
	CTL_MSG_R2R,
	CTL_MSG_FINISH_IO,
	CTL_MSG_BAD_JUJU,
	CTL_MSG_MANAGE_TASKS,
	CTL_MSG_PERS_ACTION,
	CTL_MSG_DATAMOVE,
	CTL_MSG_DATAMOVE_DONE,
	CTL_MSG_UA,
	CTL_MSG_PORT_SYNC,
	CTL_MSG_LUN_SYNC,
	CTL_MSG_IID_SYNC,
	CTL_MSG_LOGIN,
	CTL_MSG_MODE_SYNC,
	CTL_MSG_FAILOVER
} ctl_msg_type;

union ctl_io;

struct ctl_io_hdr {
	uint32_t	  version;
	ctl_io_type	  io_type;
	ctl_msg_type	  msg_type;
	struct ctl_nexus  nexus;
	uint32_t	  iid_indx;
	uint32_t	  flags;
	uint32_t	  status;
	uint32_t	  port_status;
	uint32_t	  timeout;
	uint32_t	  retries;
#ifdef CTL_TIME_IO
	time_t		  start_time;
	struct bintime	  start_bt;
	struct bintime	  dma_start_bt;
	struct bintime	  dma_bt;
#endif
	uint32_t	  num_dmas;
	union ctl_io	  *remote_io;
	union ctl_io	  *blocker;
	void		  *pool;
	union ctl_priv	  ctl_private[CTL_NUM_PRIV];
	TAILQ_HEAD(, ctl_io_hdr) blocked_queue;
	STAILQ_ENTRY(ctl_io_hdr) links;
#if __FreeBSD_version >= 1500000
	LIST_ENTRY(ctl_io_hdr) ooa_links;
#else
	TAILQ_ENTRY(ctl_io_hdr) ooa_links;
#endif
	TAILQ_ENTRY(ctl_io_hdr) blocked_links;
};

typedef enum {
	CTL_TAG_UNTAGGED,
	CTL_TAG_SIMPLE,
	CTL_TAG_ORDERED,
	CTL_TAG_HEAD_OF_QUEUE,
	CTL_TAG_ACA
} ctl_tag_type;

typedef void (*ctl_ref)(void *arg, int diff);
#if __FreeBSD_version >= 1500000
typedef int (*ctl_be_move_done_t)(union ctl_io *io, bool samethr);
typedef int (*ctl_io_cont)(union ctl_io *io);
#endif

struct ctl_scsiio {
	struct ctl_io_hdr io_hdr;
	uint32_t   ext_sg_entries;
	uint8_t	   *ext_data_ptr;
	uint32_t   ext_data_len;
	uint32_t   ext_data_filled;
	uint32_t   kern_sg_entries;
	uint32_t   rem_sg_entries;
	uint8_t    *kern_data_ptr;
	uint32_t   kern_data_len;
	uint32_t   kern_total_len;
	uint32_t   kern_data_resid;
	uint32_t   kern_rel_offset;
	struct     scsi_sense_data sense_data;
	uint8_t	   sense_len;
	uint8_t	   scsi_status;
#if __FreeBSD_version >= 1500000
	uint8_t	   seridx;
	uint8_t	   priority;
	uint64_t   tag_num;
#else
	uint8_t	   sense_residual;
	uint8_t	   priority;
	uint32_t   residual;
	uint32_t   tag_num;
#endif
	ctl_tag_type tag_type;
	uint8_t    cdb_len;
	uint8_t	   cdb[CTL_MAX_CDBLEN];
#if __FreeBSD_version >= 1500000
	ctl_be_move_done_t be_move_done;
	ctl_io_cont io_cont;
#else
	int	   (*be_move_done)(union ctl_io *io);
	int	   (*io_cont)(union ctl_io *io);
#endif
	ctl_ref	    kern_data_ref;
	void	   *kern_data_arg;
};

typedef enum {
	CTL_TASK_ABORT_TASK,
	CTL_TASK_ABORT_TASK_SET,
	CTL_TASK_CLEAR_ACA,
	CTL_TASK_CLEAR_TASK_SET,
	CTL_TASK_I_T_NEXUS_RESET,
	CTL_TASK_LUN_RESET,
	CTL_TASK_TARGET_RESET,
	CTL_TASK_BUS_RESET,
	CTL_TASK_PORT_LOGIN,
	CTL_TASK_PORT_LOGOUT,
	CTL_TASK_QUERY_TASK,
	CTL_TASK_QUERY_TASK_SET,
	CTL_TASK_QUERY_ASYNC_EVENT
} ctl_task_type;

typedef enum {
	CTL_TASK_FUNCTION_COMPLETE,
	CTL_TASK_FUNCTION_SUCCEEDED,
	CTL_TASK_FUNCTION_REJECTED,
	CTL_TASK_LUN_DOES_NOT_EXIST,
	CTL_TASK_FUNCTION_NOT_SUPPORTED
} ctl_task_status;

struct ctl_taskio {
	struct ctl_io_hdr	io_hdr;
	ctl_task_type		task_action;
#if __FreeBSD_version >= 1500000
	uint64_t		tag_num;
#else
	uint32_t		tag_num;
#endif
	ctl_tag_type		tag_type;
	uint8_t			task_status;
	uint8_t			task_resp[3];
};

#if __FreeBSD_version >= 1500000
struct ctl_nvmeio {
	struct ctl_io_hdr io_hdr;
	uint32_t   ext_sg_entries;
	uint8_t	   *ext_data_ptr;
	uint32_t   ext_data_len;
	uint32_t   ext_data_filled;
	uint32_t   kern_sg_entries;
	uint8_t    *kern_data_ptr;
	uint32_t   kern_data_len;
	uint32_t   kern_total_len;
	uint32_t   kern_data_resid;
	uint32_t   kern_rel_offset;
	struct nvme_command cmd;
	struct nvme_completion cpl;
	bool success_sent;
	ctl_be_move_done_t be_move_done;
	ctl_io_cont io_cont;
	ctl_ref	    kern_data_ref;
	void	   *kern_data_arg;
};
#endif

typedef enum {
	CTL_PR_REG_KEY,
	CTL_PR_UNREG_KEY,
	CTL_PR_PREEMPT,
	CTL_PR_CLEAR,
	CTL_PR_RESERVE,
	CTL_PR_RELEASE
} ctl_pr_action;

struct ctl_pr_info {
	ctl_pr_action		action;
	uint8_t			sa_res_key[8];
	uint8_t			res_type;
	uint32_t		residx;
};

struct ctl_ha_msg_hdr {
	ctl_msg_type		msg_type;
	uint32_t		status;
	union ctl_io		*original_sc;
	union ctl_io		*serializing_sc;
	struct ctl_nexus	nexus;
};

struct ctl_ha_msg_pr {
	struct ctl_ha_msg_hdr	hdr;
	struct ctl_pr_info	pr_info;
};

struct ctl_prio {
	struct ctl_io_hdr	io_hdr;
	struct ctl_ha_msg_pr	pr_msg;
};

union ctl_io {
	struct ctl_io_hdr	io_hdr;
	struct ctl_scsiio	scsiio;
	struct ctl_taskio	taskio;
#if __FreeBSD_version >= 1500000
	struct ctl_nvmeio	nvmeio;
#endif
	struct ctl_prio		presio;
};

#ifdef _KERNEL
union ctl_io *ctl_alloc_io(void *pool_ref);
union ctl_io *ctl_alloc_io_nowait(void *pool_ref);
void ctl_free_io(union ctl_io *io);
void ctl_zero_io(union ctl_io *io);
#endif

#endif /* _CTL_IO_H_ */

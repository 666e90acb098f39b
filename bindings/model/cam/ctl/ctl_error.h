/*
 * ctlpass model of <cam/ctl/ctl_error.h>: the subset of CTL's sense and
 * status helpers that ctlpass and its simulated kernel use, with FreeBSD's
 * exact prototypes.  See ctl.h beside this file for why models exist.
 *
 * Followed:
 *   15: bsdjhb/freebsd sys/cam/ctl/ctl_error.h @ 67b761ab76099e4f9fdcdb21c39f72132a785942
 *   14: sobomax/freebsd14_vendor sys/cam/ctl/ctl_error.h @ 5e712e79b1bacc8508a8b635e6cdfccebcf6f4af
 *       (14 has no NVMe helpers and no ctl_io_set_*; ctl_set_success exists in both)
 */
#include <machine/stdarg.h>

#ifndef _CTL_ERROR_H_
#define _CTL_ERROR_H_

void ctl_set_sense(struct ctl_scsiio *ctsio, int current_error, int sense_key,
    int asc, int ascq, ...);
void ctl_set_invalid_field(struct ctl_scsiio *ctsio, int sks_valid, int command,
    int field, int bit_valid, int bit);
void ctl_set_invalid_field_ciu(struct ctl_scsiio *ctsio);
void ctl_set_invalid_opcode(struct ctl_scsiio *ctsio);
void ctl_set_param_len_error(struct ctl_scsiio *ctsio);
void ctl_set_internal_failure(struct ctl_scsiio *ctsio, int sks_valid,
    uint16_t retry_count);
void ctl_set_medium_error(struct ctl_scsiio *ctsio, int read);
void ctl_set_aborted(struct ctl_scsiio *ctsio);
void ctl_set_lba_out_of_range(struct ctl_scsiio *ctsio, uint64_t lba);
void ctl_set_lun_stopped(struct ctl_scsiio *ctsio);
void ctl_set_lun_int_reqd(struct ctl_scsiio *ctsio);
void ctl_set_lun_ejected(struct ctl_scsiio *ctsio);
void ctl_set_lun_no_media(struct ctl_scsiio *ctsio);
void ctl_set_data_phase_error(struct ctl_scsiio *ctsio);
void ctl_set_reservation_conflict(struct ctl_scsiio *ctsio);
void ctl_set_queue_full(struct ctl_scsiio *ctsio);
void ctl_set_busy(struct ctl_scsiio *ctsio);
void ctl_set_task_aborted(struct ctl_scsiio *ctsio);
void ctl_set_hw_write_protected(struct ctl_scsiio *ctsio);
void ctl_set_success(struct ctl_scsiio *ctsio);

#if __FreeBSD_version >= 1500000
void ctl_nvme_set_invalid_opcode(struct ctl_nvmeio *ctnio);
void ctl_io_set_success(union ctl_io *io);
#endif

#endif /* _CTL_ERROR_H_ */

/*
 * ctlpass model of <cam/ctl/ctl.h>: the subset of names ctlpass and its
 * simulated kernel use, with FreeBSD's exact types and values.
 *
 * FreeBSD does not install the CTL headers, and the header tree this project
 * builds against on Linux (the FreeBSD 15.0 headers shipped by the ziglang
 * wheel) therefore lacks them.  On FreeBSD, and whenever CTLPASS_CTL_INCLUDE
 * points at a real sys/ tree, the real header is used instead of this file.
 *
 * Followed:
 *   15: glebius/FreeBSD sys/cam/ctl/ctl.h @ f592f2b7fe34e8f682faf6cb7432f7c3c31029f2
 *   14: sobomax/freebsd14_vendor sys/cam/ctl/ctl.h @ 3f5fdd6c6beba3cb6da99b13280a684cf7a97be4
 */
#ifndef _CTL_H_
#define _CTL_H_

#define CTL_RETVAL_COMPLETE	0
#define CTL_RETVAL_QUEUED	1
#define CTL_RETVAL_ALLOCATED	2
#define CTL_RETVAL_ERROR	3

/* Serial number length, for VPD page 0x80. */
#define CTL_SN_LEN		16
/* Device ID length, for VPD page 0x83. */
#define CTL_DEVID_LEN		64
#define CTL_DEVID_MIN_LEN	16
#define CTL_WWPN_LEN		8
#define CTL_DRIVER_NAME_LEN	32

#ifdef _KERNEL

#ifdef MALLOC_DECLARE
MALLOC_DECLARE(M_CTL);
#endif

#ifdef SYSCTL_DECL
SYSCTL_DECL(_kern_cam_ctl);
#endif

struct sbuf;
union ctl_io;

int ctl_sbuf_printf_esc(struct sbuf *sb, char *str, int size);
#if __FreeBSD_version >= 1500000
int ctl_config_move_done(union ctl_io *io, bool samethr);
void ctl_datamove_done(union ctl_io *io, bool samethr);
#else
int ctl_config_move_done(union ctl_io *io);
#endif
void ctl_datamove(union ctl_io *io);
void ctl_serseq_done(union ctl_io *io);
void ctl_done(union ctl_io *io);
void ctl_data_submit_done(union ctl_io *io);
void ctl_config_read_done(union ctl_io *io);
void ctl_config_write_done(union ctl_io *io);
int ctl_expand_number(const char *buf, uint64_t *num);

#endif /* _KERNEL */

#endif /* _CTL_H_ */

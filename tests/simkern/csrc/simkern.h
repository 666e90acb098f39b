/*
 * What the simulated kernel implements and inspects: the headers of
 * ctlpass's own bindings plus the kernel-linker and module structures
 * (linker sets, SYSINIT, module metadata, sysctl OIDs).
 */
#include "../../../bindings/wrapper.h"
#include <sys/linker.h>

/* Implemented in Rust (src/console.rs, src/kernel.rs); called by kern.c. */
void	simkern_console_write(const char *buf, size_t len);
void	simkern_panic_message(const char *msg) __dead2;
void	simkern_ctl_set_sense(struct ctl_scsiio *ctsio, int current_error,
	    int sense_key, int asc, int ascq);

/* Implemented in kern.c: the kernel's variadic functions. */
int	simkern_printf(const char *fmt, ...);

/* The value of a macro the crate computes itself, for a test to compare. */
extern const u_long simkern_ctl_lun_req;

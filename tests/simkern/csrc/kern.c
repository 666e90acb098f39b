/*
 * The simulated kernel's variadic functions, which Rust cannot define:
 * printf(9) (linked as simkern_printf in hosted builds; see build.rs of the
 * ctlpass crate), panic(9) and CTL's ctl_set_sense (whose sense-element
 * list the simulation does not support beyond its terminator).  Compiled with the kernel headers and flags
 * of ctlpass's shim; vsnprintf resolves to the C library's, whose
 * conversions match the kernel's for everything ctlpass prints.
 */
#include "simkern.h"

const u_long simkern_ctl_lun_req = CTL_LUN_REQ;

int
simkern_printf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return (n);
	simkern_console_write(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
	return (n);
}

void
panic(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	simkern_panic_message(buf);
}

void
ctl_set_sense(struct ctl_scsiio *ctsio, int current_error, int sense_key,
    int asc, int ascq, ...)
{
	va_list ap;
	int elem;

	va_start(ap, ascq);
	elem = va_arg(ap, int);
	va_end(ap);
	if (elem != SSD_ELEM_NONE)
		simkern_panic_message("ctl_set_sense: sense elements are not simulated");
	simkern_ctl_set_sense(ctsio, current_error, sense_key, asc, ascq);
}

/*
 * Stand-in for the opt_global.h that a FreeBSD kmod build creates (empty for a
 * module built outside a kernel configuration).
 */

/*
 * Stand-in for the opt_cam.h that a FreeBSD kmod build generates (empty for
 * a module built outside a kernel configuration; kmod/Makefile lists it in
 * SRCS so the real build makes its own).
 */

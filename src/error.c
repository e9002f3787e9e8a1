/*
 * error.c - ckpt_strerror, ckpt_err_name, ckpt_last_error.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The codes, names and texts all come from CKPT_ERRNO_MAP in ckpt.h, so the
 * three can never disagree.
 */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static __thread char last_error[256] __attribute__((tls_model("initial-exec")));

CKPT_API const char *ckpt_strerror(int err)
{
	switch (err) {
#define CKPT_ERR_TEXT_(name, value, text) \
	case (value):                     \
		return text;
		CKPT_ERRNO_MAP(CKPT_ERR_TEXT_)
#undef CKPT_ERR_TEXT_
	case 0:
		return "success";
	default:
		return "unknown error";
	}
}

CKPT_API const char *ckpt_err_name(int err)
{
	switch (err) {
#define CKPT_ERR_NAME_(name, value, text) \
	case (value):                     \
		return "CKPT_" #name;
		CKPT_ERRNO_MAP(CKPT_ERR_NAME_)
#undef CKPT_ERR_NAME_
	case 0:
		return "0";
	default:
		return "CKPT_E?";
	}
}

CKPT_API const char *ckpt_last_error(void)
{
	return last_error;
}

int ckpt__from_errno(int err)
{
	switch (err) {
	case 0:
		return CKPT_EINTERNAL;
#define CKPT_ERR_ERRNO_(name, value, text) \
	case -(value):                     \
		return (value);
		CKPT_ERRNO_MAP(CKPT_ERR_ERRNO_)
#undef CKPT_ERR_ERRNO_
#if EOPNOTSUPP != ENOTSUP
	case EOPNOTSUPP:
		return CKPT_ENOTSUP;
#endif
	default:
		return CKPT_EIO;
	}
}

int ckpt__fail_at(const char *file, int line, int code, const char *fmt, ...)
{
	/* The first failure of a call is the informative one: later calls on
	 * the unwinding path keep it. */
	if (last_error[0] == '\0') {
		size_t off = 0;
		int saved = errno;
#ifdef CKPT_DEBUG
		int n = snprintf(last_error, sizeof last_error, "%s:%d: ", file, line);
		if (n > 0)
			off = (size_t)n < sizeof last_error ? (size_t)n : sizeof last_error - 1;
#else
		(void)file;
		(void)line;
#endif
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(last_error + off, sizeof last_error - off, fmt, ap);
		va_end(ap);
		errno = saved;
	}
	return code;
}

void ckpt__clear_error(void)
{
	last_error[0] = '\0';
}

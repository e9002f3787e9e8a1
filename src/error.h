/*
 * error.h - error codes, their names and the per-thread detail message.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_ERROR_H
#define CKPT_ERROR_H

#include "ckpt.h"
#include "sys.h"

/* Maps an errno value to a CKPT_E* code (CKPT_EIO for values ckpt does not
 * list). */
CKPT__HIDDEN int ckpt__from_errno(int err);

/* Records the detail message of a failure for ckpt_last_error() and returns
 * `code`, so that a failing path reads `return ckpt__fail(CKPT_EINVAL, ...)`.
 * In debug builds (CKPT_DEBUG) the message is prefixed with file:line. */
CKPT__HIDDEN int ckpt__fail_at(const char *file, int line, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define ckpt__fail(code, ...) ckpt__fail_at(__FILE__, __LINE__, (code), __VA_ARGS__)

/* Clears the detail message (called when a public call starts). */
CKPT__HIDDEN void ckpt__clear_error(void);

#endif /* CKPT_ERROR_H */

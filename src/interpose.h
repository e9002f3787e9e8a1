/*
 * interpose.h - calling the libc functions ckpt interposes.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * libckpt defines some libc functions itself (pthread_create, read, mmap,
 * sigaction, ...) so that the program keeps working while its memory is
 * write-protected.  Each interposer reaches the next definition (libc's, or
 * a sanitizer's) through a pointer resolved once with dlsym(RTLD_NEXT).
 */
#ifndef CKPT_INTERPOSE_H
#define CKPT_INTERPOSE_H

#include "sys.h"

#define CKPT__EXPORT __attribute__((visibility("default")))

/* The next definition of `name` after libckpt, or NULL.  Not for faults. */
CKPT__HIDDEN void *ckpt__next(const char *name);

/* Reports that `name` has no next definition and aborts. */
CKPT__HIDDEN void ckpt__no_next(const char *name) __attribute__((noreturn));

/* Declares the pointer to the next `name` and a resolver that fills it on
 * first use (normally at load time, from a constructor). */
#define CKPT__REAL(ret, name, params)                                   \
	static ret(*real_##name) params;                                \
	static inline ret(*get_##name(void)) params                     \
	{                                                               \
		if (CKPT__UNLIKELY(!real_##name))                       \
			real_##name = (ret(*) params)ckpt__next(#name); \
		return real_##name;                                     \
	}

#endif /* CKPT_INTERPOSE_H */

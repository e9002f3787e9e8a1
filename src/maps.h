/*
 * maps.h - /proc/self/maps, parsed.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_MAPS_H
#define CKPT_MAPS_H

#include "sys.h"

#define CKPT__VMA_R 0x1u
#define CKPT__VMA_W 0x2u
#define CKPT__VMA_X 0x4u
#define CKPT__VMA_SHARED 0x8u

struct ckpt__vma {
	uintptr_t start, end;
	unsigned perms;  /* CKPT__VMA_* */
	unsigned major, minor;
	uint64_t offset;
	uint64_t inode;
	const char *path; /* "" for anonymous; NUL-terminated, owned by the parser */
};

/* Parses one line of /proc/<pid>/maps (without its newline; `line` is
 * modified to terminate the path).  Returns 0, or -1 if it is malformed.
 * Async-signal-safe. */
CKPT__HIDDEN int ckpt__maps_parse_line(char *line, size_t len, struct ckpt__vma *out);

/* Streams /proc/self/maps through fn with raw system calls and a caller
 * buffer (at least 8 KiB; lines longer than the buffer are skipped).
 * fn returns non-zero to stop.  Returns 0, fn's value, or -errno.
 * Async-signal-safe. */
CKPT__HIDDEN long ckpt__maps_stream(char *buf, size_t bufsz,
				    int (*fn)(const struct ckpt__vma *, void *), void *arg);

/* A snapshot of the whole table in ckpt's own memory. */
struct ckpt__maps {
	struct ckpt__vma *v;
	size_t n, cap;
	char *text; /* the paths point in here */
	size_t text_len, text_cap;
};

/* Reads /proc/self/maps into m (reusing its memory).  Returns 0 or a
 * CKPT_E* code. */
CKPT__HIDDEN int ckpt__maps_read(struct ckpt__maps *m);
CKPT__HIDDEN void ckpt__maps_free(struct ckpt__maps *m);
/* Index of the VMA containing addr, or -1. */
CKPT__HIDDEN long ckpt__maps_find(const struct ckpt__maps *m, uintptr_t addr);

/* Calls fn on the parts of [lo, hi) that are mapped, mapping by mapping, in
 * order; stops at fn's first non-zero return and returns it. */
CKPT__HIDDEN int ckpt__maps_foreach(const struct ckpt__maps *m, uintptr_t lo, uintptr_t hi,
				    int (*fn)(uintptr_t, uintptr_t, const struct ckpt__vma *, void *),
				    void *arg);

#endif /* CKPT_MAPS_H */

/*
 * ckpt.h - incremental, write-tracking process checkpoints for Linux.
 *
 * Copyright (C) 2026 The ckpt authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * This is the only public header of libckpt.  Everything in it is a contract:
 * names, signatures and error values never change meaning once released; new
 * functions, flags and fields may be added.
 *
 * Life of a handle
 * ----------------
 *     ckpt_t *c;
 *     ckpt_open(&c, NULL, NULL);      // tracking only, default options
 *     ckpt_begin(c);                  // write-protect the process' memory
 *     ... the program runs; every page it writes is recorded ...
 *     ckpt_dirty_foreach(c, fn, arg); // which pages were written, by mapping
 *     ckpt_end(c);                    // every mapping gets its protection back
 *     ckpt_close(c);
 *
 * Calls return 0 on success (or a documented positive status) and a negative
 * CKPT_E* code on failure.  ckpt_strerror() describes a code and
 * ckpt_last_error() gives the details of the last failure in the calling
 * thread ("ckpt_exclude: address 0x7f..01 is not page-aligned").
 *
 * Page units: addresses are page-aligned and counts are in units of the
 * system page size (sysconf(_SC_PAGESIZE)), also inside huge-page mappings,
 * which are tracked and reported at their own page size.
 *
 * Threads: a handle may be used from any thread, but calls on one handle
 * must not run concurrently unless a function says otherwise.  Tracking
 * covers every thread of the process.  No function here is async-signal-safe
 * unless it says so.
 */
#ifndef CKPT_H
#define CKPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(CKPT_BUILDING)
#define CKPT_API __attribute__((visibility("default")))
#else
#define CKPT_API
#endif

/* ---- version ------------------------------------------------------------ */

#define CKPT_VERSION_MAJOR 0
#define CKPT_VERSION_MINOR 1
#define CKPT_VERSION_PATCH 0
#define CKPT_VERSION_NUMBER \
	(CKPT_VERSION_MAJOR * 10000 + CKPT_VERSION_MINOR * 100 + CKPT_VERSION_PATCH)
#define CKPT_VERSION_STRING "0.1.0"

/* CKPT_VERSION_NUMBER of the library actually linked.  Thread- and
 * async-signal-safe. */
CKPT_API unsigned ckpt_version(void);
/* CKPT_VERSION_STRING of the library actually linked (static storage). */
CKPT_API const char *ckpt_version_string(void);

/* ---- errors --------------------------------------------------------------
 * System errors carry the value -errno has on Linux; ckpt's own conditions
 * live at -1000 and below.  The values are pinned forever. */
#define CKPT_ERRNO_MAP(XX)                                                    \
	XX(EPERM, -1, "operation not permitted")                               \
	XX(ENOENT, -2, "no such file, directory or snapshot")                  \
	XX(EIO, -5, "input/output error")                                      \
	XX(EBADF, -9, "bad file descriptor")                                   \
	XX(ENOMEM, -12, "out of memory or out of memory mappings")              \
	XX(EACCES, -13, "permission denied")                                   \
	XX(EFAULT, -14, "bad address")                                         \
	XX(EBUSY, -16, "another handle is already tracking this process")      \
	XX(EEXIST, -17, "a checkpoint chain already exists there")             \
	XX(ENOTDIR, -20, "not a directory")                                    \
	XX(EINVAL, -22, "invalid argument")                                    \
	XX(EMFILE, -24, "too many open files")                                 \
	XX(EFBIG, -27, "file too large")                                       \
	XX(ENOSPC, -28, "no space left on device")                             \
	XX(EROFS, -30, "read-only file system")                                \
	XX(ERANGE, -34, "value out of range")                                  \
	XX(ENAMETOOLONG, -36, "file name too long")                            \
	XX(ENOSYS, -38, "function not implemented by the kernel")              \
	XX(ENOTSUP, -95, "not supported")                                      \
	XX(EDQUOT, -122, "disk quota exceeded")                                \
	XX(ESTATE, -1001, "call out of order for the handle's state")          \
	XX(ECORRUPT, -1002, "snapshot data is corrupt")                        \
	XX(EVERSION, -1003, "unsupported snapshot format version")             \
	XX(EFOREIGN, -1004, "snapshot belongs to another chain or program")    \
	XX(ENORESUME, -1005, "snapshot cannot be resumed")                     \
	XX(EINTERNAL, -1006, "internal error")

typedef enum ckpt_errno {
#define CKPT_ERRNO_ENUM_(name, value, text) CKPT_##name = (value),
	CKPT_ERRNO_MAP(CKPT_ERRNO_ENUM_)
#undef CKPT_ERRNO_ENUM_
} ckpt_errno;

/* A static, human-readable description of `err` ("invalid argument");
 * "unknown error" for a value not in CKPT_ERRNO_MAP.  Thread- and
 * async-signal-safe. */
CKPT_API const char *ckpt_strerror(int err);
/* The symbolic name of `err` ("CKPT_EINVAL"), or "CKPT_E?" for an unknown
 * value.  Thread- and async-signal-safe. */
CKPT_API const char *ckpt_err_name(int err);
/* Details of the last failing ckpt_* call made by the calling thread, e.g.
 * "ckpt_exclude: address 0x7f0000000801 is not page-aligned", or "" if none
 * failed yet.  The string is thread-local and valid until the thread's next
 * failing ckpt_* call.  Thread-safe. */
CKPT_API const char *ckpt_last_error(void);

/* ---- options -------------------------------------------------------------- */

#define CKPT_BACKEND_AUTO 0      /* the best back-end this kernel supports */
#define CKPT_BACKEND_MPROTECT 1  /* mprotect + SIGSEGV (GNU libsigsegv) */
#define CKPT_BACKEND_UFFD 2      /* userfaultfd write-protect (Linux >= 6.7) */

/* Resume the newest snapshot in `dir` if there is one (ckpt_open). */
#define CKPT_F_RESUME 0x0001u
/* Keep an in-memory copy of committed pages so that rolling back to the
 * newest snapshot reads no disk. */
#define CKPT_F_SHADOW 0x0002u
/* ckpt_open may start a new chain in a directory that already holds one. */
#define CKPT_F_OVERWRITE 0x0004u
/* Leave MAP_SHARED mappings untracked: for a program whose shared file
 * mapping is its own durable store. */
#define CKPT_F_NO_SHARED 0x0008u

typedef struct ckpt_options {
	int backend;    /* CKPT_BACKEND_AUTO (0), CKPT_BACKEND_MPROTECT, CKPT_BACKEND_UFFD */
	int level;      /* zstd level, 0 = library default */
	int threads;    /* compression threads, 0 = online CPUs */
	unsigned flags; /* CKPT_F_* bits */
	/* Room for later fields: must be zero.  The size of this structure
	 * never changes; new fields take their place here. */
	uint64_t reserved[12];
} ckpt_options;

/* Fills `opt` with the defaults (all zero).  Equivalent to
 * `*opt = (ckpt_options){0}`.  Thread- and async-signal-safe. */
CKPT_API void ckpt_options_init(ckpt_options *opt);

/* ---- dirty pages ---------------------------------------------------------- */

typedef struct ckpt_page_run {
	uintptr_t start;     /* page-aligned */
	size_t npages;       /* system pages */
	const char *mapping; /* path or pseudo-name as in /proc/self/maps; "" if anonymous */
} ckpt_page_run;

/* ---- statistics ----------------------------------------------------------- */

typedef struct ckpt_stats {
	int backend;             /* CKPT_BACKEND_* of the last ckpt_begin; 0 if never begun */
	int tracking;            /* 1 between ckpt_begin and ckpt_end */
	size_t regions;          /* tracked regions at the last ckpt_begin */
	size_t tracked_pages;    /* pages write-protected at the last ckpt_begin */
	size_t pinned_pages;     /* pages that cannot be protected (the main thread's
	                          * TLS block, alternate signal stacks, stacks of threads
	                          * ckpt did not see start): always reported dirty */
	size_t excluded_pages;   /* writable pages left out: stacks, ckpt's own memory,
	                          * ckpt_exclude ranges */
	size_t dirty_pages;      /* as ckpt_dirty_count() */
	uint64_t faults;         /* write faults handled this epoch */
	uint64_t fallbacks;      /* VMA-limit fallbacks: a larger block unprotected and
	                          * marked dirty because the kernel ran out of mappings */
	uint64_t fallback_pages; /* pages marked dirty by those fallbacks */
	uint64_t kernel_writes;  /* buffers unprotected ahead of a system call that
	                          * writes into them (read, recv, stat, ...) */
	uint64_t moved_mappings; /* tracked mappings found moved or grown by mremap */
	unsigned unknown_threads;/* threads alive at begin that ckpt did not see start */
	unsigned epochs;         /* ckpt_begin calls that succeeded on this handle */
	uint64_t begin_ns;       /* duration of the last ckpt_begin */
	uint64_t reserved[16];   /* zero; room for later fields */
} ckpt_stats;

/* ---- the handle ----------------------------------------------------------- */

typedef struct ckpt ckpt_t; /* opaque */

/*
 * Creates a handle in *out.
 *   dir: directory of the snapshot chain, or NULL for tracking only (audit).
 *   opt: options, or NULL for the defaults.  The structure is copied.
 * Returns 0, or CKPT_EINVAL (out is NULL, unknown flag or back-end, non-zero
 * reserved field), CKPT_ENOTSUP (the back-end asked for cannot work here; see
 * ckpt_last_error for why), CKPT_ENOMEM.  On failure *out is set to NULL.
 * The handle is owned by the caller and released with ckpt_close().
 * Thread-safe.
 */
CKPT_API int ckpt_open(ckpt_t **out, const char *dir, const ckpt_options *opt);

/*
 * Starts tracking with an empty dirty set: every writable mapping of the
 * process is write-protected except thread stacks, the vDSO, ckpt's own memory
 * and ranges given to ckpt_exclude().  Only one handle tracks at a time.
 * Returns 0, or CKPT_EBUSY (this or another handle is already tracking),
 * CKPT_ENOMEM (out of memory or of memory mappings), CKPT_ENOTSUP (the fault
 * handler cannot be installed).  On failure nothing is protected.
 * Not async-signal-safe; other threads may run meanwhile.
 */
CKPT_API int ckpt_begin(ckpt_t *c);

/*
 * Calls fn once for every maximal run of pages written since ckpt_begin, in
 * ascending address order; a run never spans two mappings.  Pages of mappings
 * created since begin count as written; pages unmapped since do not appear.
 * May be called while tracking (a live view) or after ckpt_end (the set of the
 * epoch that ended) and before the next ckpt_begin.
 * `run` and `run->mapping` are owned by ckpt and valid only during the call;
 * fn may call other ckpt functions except ckpt_begin, ckpt_end, ckpt_close.
 * Returns 0 after the last run, the first non-zero value fn returns (the walk
 * stops there), or CKPT_EINVAL (c or fn NULL), CKPT_ESTATE (never begun).
 */
CKPT_API int ckpt_dirty_foreach(ckpt_t *c, int (*fn)(const ckpt_page_run *run, void *arg),
				void *arg);

/* Number of pages ckpt_dirty_foreach would report; 0 if c is NULL or has never
 * begun. */
CKPT_API size_t ckpt_dirty_count(ckpt_t *c);

/*
 * Leaves [addr, addr+len) out of tracking and out of snapshots, now and in
 * every later epoch of this handle.  Same rules as mprotect(2): addr must be
 * page-aligned, len is rounded up to whole pages, so data sharing those pages
 * is excluded too.  The range need not be mapped yet.  While tracking, the
 * range is given its protection back at once and drops out of the dirty set.
 * Returns 0, or CKPT_EINVAL (c NULL, addr not page-aligned, len 0 or
 * overflowing), CKPT_ENOMEM.
 */
CKPT_API int ckpt_exclude(ckpt_t *c, void *addr, size_t len);

/*
 * Stops tracking: every tracked mapping gets back the protection it had at
 * begin, or the one the program set since with mprotect().  The dirty set of
 * the epoch stays readable with ckpt_dirty_foreach until the next begin.
 * Returns 0, or CKPT_EINVAL (c NULL), CKPT_ESTATE (not tracking).
 */
CKPT_API int ckpt_end(ckpt_t *c);

/* Ends tracking if needed and releases the handle.  c may be NULL. */
CKPT_API void ckpt_close(ckpt_t *c);

/* Fills *out with the handle's figures (see ckpt_stats above); while
 * tracking they are a live view.  Returns 0, or CKPT_EINVAL (c or out NULL).
 * C cannot give a type and a function the same name, so the call is spelled
 * ckpt_stats(c, &s) through the macro below; the library also exports the
 * symbol ckpt_stats for callers from other languages. */
CKPT_API int ckpt_stats_get(ckpt_t *c, ckpt_stats *out);
#define ckpt_stats(c, out) ckpt_stats_get((c), (out))

/* ---- snapshots ------------------------------------------------------------ */

/* The newest snapshot of a chain, for ckpt_restore. */
#define CKPT_LATEST UINT64_MAX
/* Positive status of ckpt_commit in a process that was resumed from the
 * snapshot that commit wrote. */
#define CKPT_RESUMED 1

/*
 * Writes a snapshot of the pages dirtied since the previous commit (all pages
 * for the first) to the handle's directory and stores its id in *id.
 * Returns CKPT_ENOTSUP in this version.
 */
CKPT_API int ckpt_commit(ckpt_t *c, uint64_t *id);

/*
 * Sets every tracked page back to its content as of snapshot `id`
 * (CKPT_LATEST for the newest).  Returns CKPT_ENOTSUP in this version.
 */
CKPT_API int ckpt_restore(ckpt_t *c, uint64_t id);

#ifdef __cplusplus
}
#endif

#endif /* CKPT_H */

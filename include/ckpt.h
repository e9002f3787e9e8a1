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
 * CKPT_E* code on failure.  ckpt_strerror() describes a code and, right
 * after the failing call, ckpt_last_error() gives the details in the calling
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
	XX(EBUSY, -16, "busy: another handle tracks, or another process writes the chain") \
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
	XX(EINTERNAL, -1006, "internal error")                                 \
	XX(EMISMATCH, -1007, "regions or ranks differ from the checkpoint's")

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
/* Details of the failure of the calling thread's last ckpt_* call, e.g.
 * "ckpt_exclude: address 0x7f0000000801 is not page-aligned": the first
 * problem the call met, which caused the others.  Read it right after the
 * call that failed: every call that can fail empties it when it starts (so
 * it is "" after most calls that succeed), and the next such call replaces
 * it.  The string lives in the calling thread's storage: the pointer stays
 * valid while the thread lives, the text until the thread's next ckpt_*
 * call; copy it to keep it.  Failures in one thread never show in another:
 * a background commit's (CKPT_F_ASYNC) is reported by the ckpt_commit or
 * ckpt_wait that returns its error, in the thread that called it.
 * Thread-safe. */
CKPT_API const char *ckpt_last_error(void);

/* ---- options -------------------------------------------------------------- */

/* Back-ends: how writes are seen.  AUTO takes uffd where the kernel has
 * it, else mprotect; CKPT_BACKEND=mprotect|uffd|softdirty in the
 * environment overrides AUTO's choice.  Asking for one that cannot work
 * here fails with CKPT_ENOTSUP and says why (ckpt_last_error). */
#define CKPT_BACKEND_AUTO 0      /* the best back-end this kernel supports */
#define CKPT_BACKEND_MPROTECT 1  /* mprotect + SIGSEGV (GNU libsigsegv) */
#define CKPT_BACKEND_UFFD 2      /* userfaultfd write-protect, WP_ASYNC (Linux >= 6.7) */
#define CKPT_BACKEND_SOFTDIRTY 3 /* soft-dirty bits: detected, not implemented */

/* Make the process resumable from its chain, and resume it if `dir` holds
 * one (ckpt_open; see there and doc/RESUME.md). */
#define CKPT_F_RESUME 0x0001u
/* Keep an in-memory copy of committed pages so that rolling back to the
 * newest snapshot reads no disk.  How much memory that takes depends on the
 * back-end (CKPT_F_SHADOW needs a directory):
 *   mprotect: the first write to a page after a commit copies it, up to
 *     1 GiB of copies between two commits; pages beyond are read back from
 *     the snapshot.  The copies cost about what the program dirties.
 *   uffd: no fault comes before a write, so every page a commit stores is
 *     copied instead, and kept until ckpt_end: after the first commit that
 *     is a copy of all the tracked data (zero pages excepted), as much
 *     memory again as the program's data.  Room for it is reserved as
 *     address space at ckpt_begin (the tracked memory plus a quarter plus
 *     64 MiB, at least 1 GiB); pages beyond it (memory mapped since) are
 *     read back from the snapshot.  Resets (rollbacks to the newest
 *     snapshot) then learn the pages written since the last one from the
 *     kernel's log of page faults rather than a walk of every tracked
 *     page-table entry, where perf events are allowed: ckpt_begin opens
 *     two sampling events per thread and CPU (file descriptors, closed on
 *     exec and at ckpt_end), and every page fault of the process costs
 *     about 0.3 µs more until ckpt_end.  CKPT_RESET=walk in the
 *     environment turns that off (doc/TRACKING.md, "Resets"). */
#define CKPT_F_SHADOW 0x0002u
/* ckpt_open may start a new chain in a directory that already holds one. */
#define CKPT_F_OVERWRITE 0x0004u
/* Leave MAP_SHARED mappings untracked: for a program whose shared file
 * mapping is its own durable store. */
#define CKPT_F_NO_SHARED 0x0008u
/* Commits that do not stop the program for compression and writing:
 * ckpt_commit copies the pages it stores into a staging area (ckpt's own
 * memory, at most `staging_limit` bytes) and returns; a thread of ckpt's
 * compresses and writes them.  ckpt_wait waits for that.  See ckpt_commit. */
#define CKPT_F_ASYNC 0x0010u
/* With CKPT_F_RESUME only (else CKPT_EINVAL): a resume lets the program go
 * on before its memory is back.  The anonymous private memory (heap,
 * malloc's large blocks, anonymous mappings) is filled as the program
 * touches it, a block at a time, and by threads of ckpt's own in address
 * order meanwhile (userfaultfd, MISSING mode); the rest is filled before,
 * as without the flag.  A first touch of a page not filled yet waits for
 * its block to be read and decompressed (on the order of 0.1-1 ms).
 * ckpt_commit, ckpt_restore, ckpt_wait, ckpt_end, ckpt_close and fork()
 * first wait for the fill to end (the chain's files stay open until
 * then); nothing is written to the chain before, so a kill
 * during the fill leaves the chain as it was.  A block found damaged
 * during the fill cannot be undone: the program is executed again and
 * resumes without the flag.  Where no userfaultfd that takes the kernel's
 * own accesses can be had (vm.unprivileged_userfaultfd=0 without
 * privilege, a seccomp filter), the resume fills everything first, as
 * without the flag, and says so on stderr.  doc/RESUME.md, "Lazy resume". */
#define CKPT_F_LAZY 0x0020u
/* `dir` may already hold a chain: the handle extends it (its next commit
 * is a child of the newest snapshot), and ckpt_restore reads it.  For a
 * program that brings back its own state, by name (ckpt_protect), in a
 * new process.  Without the flag such a directory gives CKPT_EEXIST.  Not
 * with CKPT_F_RESUME or CKPT_F_OVERWRITE (CKPT_EINVAL). */
#define CKPT_F_CONTINUE 0x0040u

typedef struct ckpt_options {
	int backend;    /* CKPT_BACKEND_AUTO (0), CKPT_BACKEND_MPROTECT, CKPT_BACKEND_UFFD */
	int level;      /* zstd level, 0 = library default (1; see below) */
	int threads;    /* compression threads, 0 = online CPUs */
	unsigned flags; /* CKPT_F_* bits */
	/* CKPT_F_ASYNC: bytes of page copies a commit may hold in memory while
	 * its file is written (rounded up to whole pages).  0 = the default:
	 * 512 MiB, or a quarter of the physical memory if that is less.  A
	 * commit storing more than this is written before ckpt_commit returns.
	 * The memory is reserved at the first async commit, stays resident up
	 * to the largest commit staged, and is released by ckpt_end. */
	uint64_t staging_limit;
	/* Room for later fields: must be zero.  The size of this structure
	 * never changes; new fields take their place here. */
	uint64_t reserved[11];
} ckpt_options;

/*
 * The zstd level.  Single-thread figures (bench/pause, section 2: blocks
 * of 64 pages, MB/s of input, ratio = input / stored; 2-CPU test machine):
 *
 *   level   float field (smooth + noise)   typical heap (structs, strings)
 *     -5        1806 MB/s  1.00                217 MB/s  2.55
 *     -3        3314 MB/s  1.00                142 MB/s  3.00
 *     -1        1567 MB/s  1.00                160 MB/s  3.73
 *      1         393 MB/s  1.10                138 MB/s  3.59
 *      2         300 MB/s  1.10                197 MB/s  3.88
 *      3         504 MB/s  1.10                156 MB/s  3.91
 *
 * (64 MiB of each, best of 3 on a shared machine: speeds vary by a
 * third from run to run, ratios do not.)
 *
 * The default (level 0 here) is 1: the fast levels store simulation data
 * uncompressed (they are fast because they give up on it), level 1 saves
 * a tenth of it, and 2-3 gain a few per cent on heaps at no better
 * speed.  With CKPT_F_ASYNC the compression is off the program's
 * pause anyway; a program whose pages do not compress can set -1 (or
 * lower) for throughput.  Blocks a level shrinks by less than an eighth
 * are stored raw: data that barely compresses costs no decompression on
 * restore (zstd decodes noisy floats at about 0.9 GB/s a core, slower than
 * reading the tenth it saves), and a resume reads raw blocks straight into
 * place.
 */

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
	uint64_t faults;         /* first writes seen this epoch: faults handled (mprotect),
	                          * pages found written by the kernel (uffd) */
	uint64_t fallbacks;      /* VMA-limit fallbacks: a larger block unprotected and
	                          * marked dirty because the kernel ran out of mappings
	                          * (mprotect; 0 under uffd, which splits no mapping) */
	uint64_t fallback_pages; /* pages marked dirty by those fallbacks */
	uint64_t kernel_writes;  /* buffers unprotected ahead of a system call that
	                          * writes into them (read, recv, stat, ...; mprotect:
	                          * 0 under uffd, where the kernel's writes need no help) */
	uint64_t moved_mappings; /* tracked mappings found moved or grown by mremap
	                          * (mprotect; 0 under uffd, where a moved mapping
	                          * is found unregistered and counts as new) */
	unsigned unknown_threads;/* threads alive at begin that ckpt did not see start */
	unsigned epochs;         /* ckpt_begin calls that succeeded on this handle */
	uint64_t begin_ns;       /* duration of the last ckpt_begin */
	/* The last commit (all zero before the first).  With CKPT_F_ASYNC, the
	 * last commit that became durable: its figures are known once it has
	 * been written (after ckpt_wait, or the next ckpt_commit). */
	uint64_t commit_id;           /* id of the snapshot it wrote */
	uint64_t commit_pause_ns;     /* time spent inside ckpt_commit: the program's
	                               * cost (capture, staging copy, waits) */
	uint64_t commit_capture_ns;   /* taking the dirty set and re-protecting it */
	uint64_t commit_compress_ns;  /* packing and compressing pages */
	uint64_t commit_write_ns;     /* writing the file (fsync excluded) */
	uint64_t commit_sync_ns;      /* fsync of the file and the directory */
	uint64_t commit_pages;        /* data pages stored (zero pages cost nothing) */
	uint64_t commit_raw_bytes;    /* those pages, uncompressed */
	uint64_t commit_stored_bytes; /* bytes of compressed page data written (raw
	                               * blocks count at their size, plus 8 bytes a
	                               * page for their page hashes) */
	uint64_t commit_file_bytes;   /* size of the snapshot file */
	uint64_t commits;             /* commits that succeeded on this handle */
	/* The last restore. */
	uint64_t restore_pages;  /* pages rewritten */
	uint64_t restore_ns;     /* total duration */
	/* The last commit, continued. */
	uint64_t commit_wait_ns;      /* part of the pause spent waiting for the commit
	                               * before it to be written (CKPT_F_ASYNC) */
	uint64_t commit_staged_bytes; /* pages copied into the staging area (CKPT_F_ASYNC;
	                               * 0 when written before ckpt_commit returned) */
	uint64_t fast_restores;  /* restores this epoch that learned the pages written
	                          * since the last one from the kernel's log of page
	                          * faults instead of walking the page tables: resets
	                          * to the newest snapshot with CKPT_F_SHADOW under uffd
	                          * (doc/TRACKING.md, "Resets") */
} ckpt_stats;

/* ---- the handle ----------------------------------------------------------- */

typedef struct ckpt ckpt_t; /* opaque */

/*
 * Creates a handle in *out.
 *   dir: directory of the snapshot chain, or NULL for tracking only (audit).
 *        It is created (mode 0700: a snapshot holds the whole memory of the
 *        process) if needed and locked for this handle.  A directory that
 *        already holds a chain is never destroyed: CKPT_EEXIST, unless
 *        CKPT_F_OVERWRITE, which starts a new chain there.  Only a
 *        directory nobody else could have written into is used: not a
 *        symbolic link itself (the path to it may hold links), owned by
 *        the calling user (effective uid) or root, writable by its owner
 *        alone; snapshots in it are read only from regular files of the
 *        same owners, writable by their owner alone, and named exactly as
 *        ckpt names them (doc/FORMAT.md, "The chain directory").
 *   opt: options, or NULL for the defaults.  The structure is copied.
 *
 * CKPT_F_RESUME (x86-64, one such handle per process): the process must
 * have a fixed address layout, so if address space randomisation is on,
 * ckpt_open turns it off and executes the program again with the same
 * arguments and environment: whatever ran before ckpt_open runs twice, so
 * call it first thing in main.  Then, if `dir` holds a chain, ckpt_open
 * does not return: the process continues from the newest snapshot, as if
 * the ckpt_commit that wrote it had just returned (with CKPT_RESUMED): its
 * memory, stack, registers, TLS, signal dispositions and mask, working
 * directory, umask and open regular files (path, flags, offset; a file
 * open for writing is cut back to its size at the commit) are the old
 * process's, fds 0-2 the new one's; it is tracking, and its next commit
 * extends the chain.  A snapshot that fails its checks gives way to the one
 * before it (said on stderr; the damaged files are kept as damaged-*).  If
 * `dir` holds no chain, ckpt_open returns 0 and the program starts fresh;
 * every commit of the handle then records what a resume needs.
 * Not restored: sockets, pipes, other processes, timers, threads.
 *
 * Returns 0, or CKPT_EINVAL (out is NULL, unknown flag or back-end, non-zero
 * reserved field, CKPT_F_SHADOW, CKPT_F_OVERWRITE, CKPT_F_RESUME or
 * CKPT_F_ASYNC without a directory, CKPT_F_RESUME with CKPT_F_OVERWRITE,
 * CKPT_F_LAZY without CKPT_F_RESUME), CKPT_ENOTSUP (the
 * back-end asked for cannot work here; a chain that cannot be resumed: its
 * newest snapshot was written while other threads ran, or without
 * CKPT_F_RESUME; resuming on this architecture or under AddressSanitizer),
 * CKPT_EFOREIGN (the chain was written by another build of the program or
 * with other libraries or another address layout: ckpt_last_error names
 * which), CKPT_ECORRUPT (no sound snapshot to resume), CKPT_ENOENT (a file
 * the process had open or mapped is gone), CKPT_EEXIST, CKPT_EBUSY (another
 * process writes that chain, or a second CKPT_F_RESUME handle), CKPT_EACCES
 * (the directory, or a snapshot in it, is a symbolic link, another user's,
 * or writable by its group or others: ckpt_last_error names it and says
 * which; also a directory that cannot be created or read), CKPT_ENOTDIR,
 * other system errors, CKPT_ENOMEM.  On failure *out is set to NULL and
 * nothing of the process changed.
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

/* ---- named regions ------------------------------------------------------------
 * A handle with named regions tracks and stores those and nothing else:
 * not the rest of the heap, not the stacks, not the libraries.  A program
 * that restarts allocates its arrays again, wherever they land, protects
 * them under the same names, and gets their contents back by name
 * (ckpt_restore, ckpt_protect_from): everything else (MPI, threads,
 * sockets, the allocator) starts fresh.  doc/REGIONS.md. */

/*
 * Names the bytes [addr, addr+len) `name` and restricts c to its named
 * regions.  Any alignment: the pages a region touches are tracked, and a
 * commit stores the pages written; a restore writes the region's bytes
 * only, never the rest of a page it shares.  Regions may not overlap.
 * name: 1-63 bytes, none of them '/', NUL or a control character, not
 * used before in c.  Before ckpt_begin only, and not on a CKPT_F_RESUME
 * handle (whole-process) or one without a directory.  After
 * ckpt_protect_from(c, id), the region is filled from snapshot `id` at
 * once.  Returns 0, or CKPT_EINVAL (c, name or addr NULL, len 0, a bad or
 * repeated name, an overlap: ckpt_last_error names the regions),
 * CKPT_ESTATE (tracking, or a resume handle), CKPT_EMISMATCH (after
 * ckpt_protect_from: the snapshot has no region of that name, or one of
 * another length; the region is left as it was), the errors of
 * ckpt_restore, CKPT_ENOMEM.
 */
CKPT_API int ckpt_protect(ckpt_t *c, const char *name, void *addr, size_t len);

/*
 * Has every later ckpt_protect of c fill its region from snapshot `id`
 * (CKPT_LATEST: the newest) of c's chain, by name and length; ckpt_begin
 * then refuses (CKPT_EMISMATCH, naming it) while a region of that
 * snapshot was not protected again.  For a program that protects its
 * arrays one by one as it allocates them.  The snapshot's metadata is
 * read and checked now.  Returns 0, or CKPT_ENOENT (no such snapshot),
 * CKPT_ESTATE (tracking), CKPT_EINVAL (no directory, or a handle that
 * names no regions can have none: CKPT_F_RESUME), CKPT_ECORRUPT.
 */
CKPT_API int ckpt_protect_from(ckpt_t *c, uint64_t id);

/*
 * Stops tracking: every tracked mapping gets back the protection it had at
 * begin, or the one the program set since with mprotect().  The dirty set of
 * the epoch stays readable with ckpt_dirty_foreach until the next begin.
 * A commit still being written (CKPT_F_ASYNC) is waited for first (its
 * error, if any, is kept for the next ckpt_wait or ckpt_commit), and the
 * staging area is released.
 * Returns 0, or CKPT_EINVAL (c NULL), CKPT_ESTATE (not tracking).
 */
CKPT_API int ckpt_end(ckpt_t *c);

/* Ends tracking if needed and releases the handle; a commit still being
 * written (CKPT_F_ASYNC) is waited for first, and an error it had is
 * dropped (call ckpt_wait first to see it).  c may be NULL. */
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
 * Writes the next snapshot of the chain in the handle's directory and stores
 * its id in *id (id may be NULL).  Ids are 1, 2, 3... in commit order.  The
 * first is a full base: every page of every tracked mapping that holds data
 * (pages never touched and all-zero pages are recorded, not stored).  Later
 * ones store the pages dirtied since the previous commit, mappings that
 * appeared in full, and the current mapping table.  The snapshot is the
 * memory as of the call; afterwards the dirty set is empty and the written
 * pages are protected again.  Tracking must be on (ckpt_begin).
 * Other threads must not write memory during the call: a write that races
 * with it is not lost (it lands in this snapshot or the next) but may leave
 * a page of this snapshot half-written.
 * The file is written under a temporary name, fsynced, renamed and the
 * directory fsynced: a crash at any instant leaves the chain readable up to
 * the previous snapshot.
 * Returns 0, or CKPT_EINVAL (no directory), CKPT_ESTATE (not tracking),
 * CKPT_ENOSPC, CKPT_EIO, CKPT_EDQUOT, CKPT_EFBIG... (the write failed: the
 * chain is as it was and the dirty set is kept for the next commit),
 * CKPT_ENOMEM, or the error of the uffd back-end's reading of the pages
 * written (PAGEMAP_SCAN), with the same guarantee: the chain as it was and
 * nothing written lost (the region it failed in counts as written whole).
 * Compression and the background write run on threads of ckpt's own that
 * glibc does not know: they leave nothing in the program's memory, and a
 * snapshot holds the program's state alone.  A positive CKPT_RESUMED is
 * returned in a process resumed from the snapshot this call wrote (see
 * CKPT_F_RESUME), with *id its id.  A
 * commit of a CKPT_F_RESUME handle first flushes every stdio stream (what a
 * stream holds is written once, not again by the resumed run) and records
 * the process (registers, stack, descriptors...) in the snapshot.  If the
 * program has other threads, it stops them with SIGRTMAX, which ckpt then
 * reserves, records each one (registers, FPU state, signal mask, stack...;
 * see ckpt_chain_threads) and lets them go once the memory is captured;
 * a system call one was blocked in is made again.  A resume creates every
 * recorded thread again (doc/RESUME.md).  It may be called from any
 * thread.  CKPT_EBUSY: a thread did not
 * stop within 1 s (it blocks SIGRTMAX), or the program has a handler of
 * its own for SIGRTMAX; the error names it and the chain is as it was
 * (doc/RESUME.md).
 *
 * With CKPT_F_ASYNC the call captures the dirty set, copies the pages to
 * store into the staging area, re-arms tracking and returns; compression,
 * the write and the fsyncs go on in a thread of ckpt's.  *id is the id the
 * snapshot will have; it becomes visible to `ckpt ls`, ckpt_chain_* and
 * ckpt_restore only once durable (see ckpt_wait).  One commit is in flight
 * at a time: a commit that finds the previous one still being written waits
 * for it (commit_wait_ns), and a commit whose pages exceed the staging
 * limit is written before returning, as without the flag.  If a background
 * write fails, the next ckpt_commit or ckpt_wait returns its error
 * (CKPT_ENOSPC, CKPT_EIO...; that ckpt_commit commits nothing), the chain
 * is as it was, and every page of the failed snapshot goes into the next
 * commit, which takes the failed snapshot's id (ids stay consecutive).
 * Crash safety is the same: a crash during a background write leaves the
 * chain readable up to the last durable snapshot.
 */
CKPT_API int ckpt_commit(ckpt_t *c, uint64_t *id);

/*
 * Blocks until every commit made so far on the handle is durable (written,
 * fsynced, renamed, the directory fsynced), and until the fill of a lazy
 * resume (CKPT_F_LAZY) has ended, and stores the newest durable
 * snapshot's id in *id (0 if none; id may be NULL).  Without CKPT_F_ASYNC
 * every commit is durable when ckpt_commit returns, and this returns at
 * once.  Returns 0, CKPT_EINVAL (c NULL), or the error of a background
 * commit that failed and was not reported yet (then *id is the newest
 * durable snapshot still, and the failed commit's pages are dirty again).
 */
CKPT_API int ckpt_wait(ckpt_t *c, uint64_t *id);

/*
 * With named regions (ckpt_protect): fills every region from snapshot `id`
 * (CKPT_LATEST for the newest) by name, whether tracking or not, from a
 * snapshot this process wrote or an earlier one did (CKPT_F_CONTINUE), with
 * the region anywhere in memory now.  The snapshot must hold exactly the
 * regions c names, with the same lengths; else CKPT_EMISMATCH, naming the
 * first that differs, and nothing is written.  Every block needed is read
 * and checked before the first byte changes.  The pages written count as
 * dirty: the next commit stores them.
 *
 * Without named regions:
 * Sets every tracked page back to its content as of snapshot `id`
 * (CKPT_LATEST for the newest): mappings created since are unmapped (never
 * ckpt's own, excluded ranges or thread stacks), mappings removed since are
 * recreated.  The calling thread's stack is left as it is, and other threads
 * must be quiescent (not running code that touches tracked memory).
 * Tracking continues afterwards; the next commit stores what differs from
 * the newest snapshot.  Rolling back to the newest snapshot rewrites only
 * the pages dirtied since it (with CKPT_F_SHADOW, from memory).  A commit
 * still being written (CKPT_F_ASYNC) is waited for first; if it failed, its
 * error stays for the next ckpt_wait or ckpt_commit and CKPT_LATEST means
 * the newest durable snapshot.
 * Everything needed is read, verified and decompressed, and the mappings to
 * recreate are mapped, before the first byte of memory changes; a failure
 * leaves memory and mappings exactly as they were.  Returns 0, or CKPT_ENOENT (no such snapshot, or a file a mapping
 * must be recreated from is gone), CKPT_ECORRUPT (a file failed its checks;
 * memory untouched), CKPT_EFOREIGN (written by another executable or with
 * another page size), CKPT_ESTATE (not tracking), CKPT_EINVAL (no
 * directory), CKPT_ENOMEM.
 */
CKPT_API int ckpt_restore(ckpt_t *c, uint64_t id);

/* ---- reading a chain ---------------------------------------------------------
 * Read-only access to the snapshots in a directory, for tools and tests; the
 * `ckpt` command is built on these.  They never modify the directory (except
 * ckpt_chain_compact) and may be used while another process writes the
 * chain: they see the snapshots that were complete when the chain was
 * opened.  A ckpt_chain must not be used by two threads at once. */

typedef struct ckpt_chain ckpt_chain; /* opaque */

typedef struct ckpt_snapshot_info {
	uint64_t id, parent;   /* parent is 0 for a base */
	uint64_t time_ns;      /* CLOCK_REALTIME of the commit */
	int base;              /* 1: a full snapshot */
	int resumable;         /* 1: written by a CKPT_F_RESUME handle (with its
	                        * threads recorded, when it had several) */
	unsigned page_size;
	unsigned threads;      /* threads of the process at the commit */
	size_t mappings, runs, blocks;
	uint64_t data_pages, zero_pages, file_pages; /* pages per kind of run */
	uint64_t raw_bytes;    /* data pages, uncompressed */
	uint64_t stored_bytes; /* compressed page data */
	uint64_t file_bytes;   /* the whole file */
	char chain_id[33];     /* hexadecimal */
	char build_id[129];    /* the executable's GNU build-id, hexadecimal */
	const char *exe;       /* the executable's path; owned by the chain */
	const char *file;      /* the file's name in the directory; owned by the chain */
	uint64_t reserved[8];
} ckpt_snapshot_info;

#define CKPT_MAP_SHARED 0x1u
#define CKPT_MAP_ANON 0x2u
#define CKPT_MAP_HEAP 0x4u
#define CKPT_MAP_PINNED 0x8u /* memory that could not be protected (TLS, alternate stacks) */

typedef struct ckpt_mapping_info {
	uintptr_t start, end;
	int prot;              /* PROT_* the program had */
	unsigned flags;        /* CKPT_MAP_* */
	uint64_t born;         /* first snapshot holding this mapping whole */
	uint64_t offset, inode;
	const char *name;      /* path or pseudo-name; "" if anonymous; valid during the call */
} ckpt_mapping_info;

#define CKPT_RUN_DATA 1 /* stored pages */
#define CKPT_RUN_ZERO 2 /* pages that read as zero */
#define CKPT_RUN_FILE 3 /* pages with the content of the mapped file */

typedef struct ckpt_stored_run {
	uintptr_t start;
	size_t npages;
	int kind;              /* CKPT_RUN_* */
} ckpt_stored_run;

/* Opens the chain in dir: the newest snapshot and its parents down to a
 * base, each file's metadata verified.  A directory without snapshots is an
 * empty chain.  The directory and its files pass the checks ckpt_open makes
 * (doc/FORMAT.md, "The chain directory"); so do those of ckpt_chain_verify
 * and ckpt_chain_compact.  Returns 0, or CKPT_ENOENT (no such directory, or
 * a missing snapshot in the chain), CKPT_EACCES (the directory or a
 * snapshot is a symbolic link, another user's, or writable by its group or
 * others), CKPT_ENOTDIR, CKPT_ECORRUPT (also a file named like a snapshot
 * that is not a regular file), CKPT_EVERSION, CKPT_EFOREIGN (files of
 * different chains), CKPT_ENOMEM; *out is NULL on failure. */
CKPT_API int ckpt_chain_open(ckpt_chain **out, const char *dir);
CKPT_API void ckpt_chain_close(ckpt_chain *ch);
/* Ids of the oldest and newest snapshots (0 and 0 for an empty chain). */
CKPT_API uint64_t ckpt_chain_first(ckpt_chain *ch);
CKPT_API uint64_t ckpt_chain_latest(ckpt_chain *ch);
/* Describes snapshot id (CKPT_LATEST: the newest).  0 or CKPT_ENOENT. */
CKPT_API int ckpt_chain_info(ckpt_chain *ch, uint64_t id, ckpt_snapshot_info *out);
/* How the program of a resumable snapshot was started, for `ckpt resume`. */
typedef struct ckpt_launch_info {
	const char *exe;  /* the executable's path */
	const char *cwd;  /* the working directory at the commit */
	const char *argv; /* the arguments, each NUL-terminated, argv_len bytes */
	size_t argv_len;
	const char *env;  /* the environment at the start, NAME=value strings, each
	                   * NUL-terminated, env_len bytes */
	size_t env_len;
	uint64_t reserved[4];
} ckpt_launch_info;

/* Fills *out for snapshot id (CKPT_LATEST: the newest); the strings are
 * owned by the chain and valid until the next call or ckpt_chain_close.
 * 0, or CKPT_ENOENT (no such snapshot, or written without CKPT_F_RESUME),
 * CKPT_ECORRUPT, CKPT_ENOMEM. */
CKPT_API int ckpt_chain_launch(ckpt_chain *ch, uint64_t id, ckpt_launch_info *out);

/* A thread of the program as a resumable commit recorded it. */
#define CKPT_THREAD_COMMITTER 0x1u /* the thread that called ckpt_commit */

typedef struct ckpt_thread_info {
	int tid;               /* its thread id at the commit */
	unsigned flags;        /* CKPT_THREAD_* */
	const char *name;      /* as prctl(PR_GET_NAME); valid during the call */
	long syscall;          /* the system call it makes (again) when it goes on:
	                        * one it was blocked in, restarted; -1 if none */
	uintptr_t sp, ip;      /* stack pointer and next instruction */
	uintptr_t stack_lo, stack_hi; /* its stack (the mapping holding sp if ckpt
	                        * did not see the thread start) */
	uintptr_t fs_base;     /* the thread pointer */
	uint64_t sigmask;      /* blocked signals (bit n-1 for signal n) */
	size_t fpu_bytes;      /* size of the recorded FPU/SSE/AVX state */
	uint64_t reserved[4];
} ckpt_thread_info;

/* Calls fn for each thread snapshot id recorded, the committing thread
 * first; stops at the first non-zero return and returns it.  0, fn's value,
 * CKPT_ENOENT (no such snapshot, or written without CKPT_F_RESUME, or by a
 * version of ckpt that recorded no threads), CKPT_ECORRUPT. */
CKPT_API int ckpt_chain_threads(ckpt_chain *ch, uint64_t id,
				int (*fn)(const ckpt_thread_info *t, void *arg), void *arg);

/* Calls fn for each mapping of snapshot id, in address order; stops at the
 * first non-zero return and returns it.  0, fn's value or CKPT_ENOENT. */
CKPT_API int ckpt_chain_mappings(ckpt_chain *ch, uint64_t id,
				 int (*fn)(const ckpt_mapping_info *m, void *arg), void *arg);
/* Calls fn for each run of pages snapshot id itself stores (its index), in
 * address order.  Returns as ckpt_chain_mappings. */
CKPT_API int ckpt_chain_runs(ckpt_chain *ch, uint64_t id,
			     int (*fn)(const ckpt_stored_run *r, void *arg), void *arg);
/* Copies the bytes [addr, addr+len) of the process' memory as of snapshot id
 * into buf.  Returns 0, or CKPT_ENOENT (snapshot missing, or a byte outside
 * its mappings), CKPT_ECORRUPT (a block failed its checks), CKPT_EIO. */
CKPT_API int ckpt_chain_read(ckpt_chain *ch, uint64_t id, uintptr_t addr, void *buf, size_t len);
/* Calls fn for each maximal run of pages whose content differs between
 * snapshots a and b (pages in only one of them included), in address order;
 * a run never spans two mappings (run->mapping names the one in b, or in a).
 * Returns as ckpt_chain_mappings. */
CKPT_API int ckpt_chain_diff(ckpt_chain *ch, uint64_t a, uint64_t b,
			     int (*fn)(const ckpt_page_run *run, void *arg), void *arg);

typedef struct ckpt_region_info {
	const char *name; /* valid during the call */
	uintptr_t addr;   /* where the region was at the commit */
	size_t len;       /* bytes */
} ckpt_region_info;

/* Calls fn for each named region of snapshot id (ckpt_protect), in address
 * order; none for a snapshot of a handle without named regions.  Returns
 * 0, the first non-zero value fn returned, or CKPT_ENOENT. */
CKPT_API int ckpt_chain_regions(ckpt_chain *ch, uint64_t id,
				int (*fn)(const ckpt_region_info *r, void *arg), void *arg);

/* Moves the snapshots of the chain in dir newer than `keep` into a new
 * folder `aside-<keep>-<time>` inside dir, so that `keep` is the newest
 * (0: every snapshot, an empty chain) and the chain's next commit follows
 * it; the files are kept, not removed.  Durable (renames, then the directories fsynced) and
 * idempotent.  Fails with CKPT_EBUSY while a process has the chain open
 * for writing, CKPT_ENOENT when there is no snapshot `keep` (not 0).  *moved (may
 * be NULL) receives how many files were moved. */
CKPT_API int ckpt_chain_set_aside(const char *dir, uint64_t keep, size_t *moved);

/* Checks every file of the chain in dir completely: metadata, every block's
 * hash and zstd frame, the links between snapshots.  Returns 0 when sound,
 * else the code of the first problem with ckpt_last_error() naming the file
 * and what is wrong.  *checked (may be NULL) receives how many files were
 * checked. */
CKPT_API int ckpt_chain_verify(const char *dir, size_t *checked);

/* Folds the oldest snapshots into a new base so that at most `keep`
 * increments remain after it, atomically: the new base replaces snapshot
 * (newest - keep) by a rename, then the older files are removed.  Memory as
 * of every remaining id is unchanged, and the new base keeps the process
 * record of the snapshot it replaces: a resumable chain stays resumable.  Fails with CKPT_EBUSY while a process
 * has the chain open for writing.  Returns 0 (also when there was nothing to
 * fold) or a CKPT_E* code; *folded (may be NULL) receives how many snapshots
 * were folded. */
CKPT_API int ckpt_chain_compact(const char *dir, unsigned keep, size_t *folded);

#ifdef __cplusplus
}
#endif

#endif /* CKPT_H */

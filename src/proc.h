/*
 * proc.h - the process record of a snapshot: what a resume needs besides
 * memory (registers, the stack, descriptors, signal state, the layout).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Stored as the PROC section of a snapshot (doc/FORMAT.md): the magic
 * "CKPTPROC", a version, then entries { u32 type, u32 len, len bytes,
 * padding to 8 }.  A reader checks every entry against the section's end and
 * every string against its entry before using it.
 */
#ifndef CKPT_PROC_H
#define CKPT_PROC_H

#include "sys.h"

#include <stddef.h>
#include <stdint.h>

#define CKPT__PROC_MAGIC "CKPTPROC"
#define CKPT__PROC_VERSION 1

enum {
	CKPT__PE_CTX = 1,  /* struct ckpt__pctx */
	CKPT__PE_STACK,    /* u64 lo, u64 hi, the bytes of [lo, hi) */
	CKPT__PE_SIGMASK,  /* u64: the calling thread's blocked signals */
	CKPT__PE_SIGACT,   /* struct ckpt__psig */
	CKPT__PE_CWD,      /* path */
	CKPT__PE_UMASK,    /* u32 */
	CKPT__PE_FD,       /* struct ckpt__pfd, then the path */
	CKPT__PE_VMA,      /* struct ckpt__pvma, then the path ("" anonymous) */
	CKPT__PE_LIB,      /* struct ckpt__plib, then the name, then the build-id */
	CKPT__PE_ARGV,     /* /proc/self/cmdline */
	CKPT__PE_ENV,      /* /proc/self/environ */
	CKPT__PE_BRK,      /* u64 start, u64 end of the brk heap */
	CKPT__PE_EXCL,     /* u64 lo, u64 hi: a ckpt_exclude range of the handle */
	CKPT__PE_THREAD,   /* struct ckpt__pthread, then its xsave area */
	CKPT__PE_FDNUM,    /* i32 fd, i32 fd flags: a descriptor that is not a regular
			    * file (not restored; its number kept from ckpt's) */
	CKPT__PE_TMEM,     /* u64 lo, u64 hi, the bytes of [lo, hi): a thread's memory
			    * outside tracked mappings (its live stack, TLS block and
			    * descriptor; a reusable stack's descriptor) */
	CKPT__PE_PIPE,     /* struct ckpt__ppipe, its descriptors, its content */
	CKPT__PE_REGION,   /* u64 addr, u64 len, then the name: a named region
			    * (ckpt_protect); a record of such entries alone is a
			    * handle's that names its regions, not a resumable one */
	CKPT__PE_MAX
};

/* The calling thread at the commit (x86-64): callee-saved registers, the
 * stack pointer and the address ckpt_commit returns through; the floating
 * point control words; FS (the thread pointer); where glibc keeps the thread
 * list node and the tid in its thread descriptor (0 when not verified). */
struct ckpt__pctx {
	uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip;
	uint32_t mxcsr;
	uint16_t fpucw, flags; /* CKPT__PC_* (0 in records of earlier versions) */
	uint64_t fs_base;
	uint64_t handle;     /* the program's ckpt_t pointer */
	uint32_t list_off, tid_off;
};

/* No program thread made the commit: a thread of ckpt's own did (`ckpt
 * run`), with every program thread stopped.  The registers, stack pointer
 * and return address are zero, there is no STACK entry, and every program
 * thread, the main one included, has a THREAD entry; fs_base is the main
 * thread's. */
#define CKPT__PC_NOSELF 1u

struct ckpt__psig {
	uint32_t sig, pad;
	uint64_t handler, flags, mask;
};

struct ckpt__pfd {
	int32_t fd, flags, fdflags, pad;
	int64_t offset, size;
	uint64_t ino, dev;
};

#define CKPT__PV_R 1u
#define CKPT__PV_W 2u
#define CKPT__PV_X 4u
#define CKPT__PV_SHARED 8u

struct ckpt__pvma {
	uint64_t start, end, offset, ino;
	uint32_t perms, pad;
};

struct ckpt__plib {
	uint64_t base;
	uint32_t name_len, bid_len;
};

/* A thread of the program at the commit (x86-64).  The committing thread's
 * has CKPT__PT_SELF and no registers (they are the CTX entry's); another's
 * holds what the kernel saved when ckpt's stop signal interrupted it:
 * gregs in ucontext order (REG_R8 ... REG_CR2), the signal mask of the
 * interrupted code, and `xsave_len` bytes of the FPU/SSE/AVX state
 * (fxsave layout followed by the xsave header and components) after the
 * struct.  syscall_nr is the system call the thread issues (again) when it
 * goes on, -1 if it was not at one: a call interrupted with SA_RESTART is
 * rewound by the kernel to its `syscall` instruction, with the number (or
 * restart_syscall's) in rax. */
#define CKPT__PT_SELF 1u
#define CKPT__PT_RSP 15 /* REG_RSP, REG_RIP: indexes in gregs */
#define CKPT__PT_RIP 16
#define CKPT__PT_XSAVE 2u /* the xsave area has an xsave header (not fxsave only) */
#define CKPT__PT_REWOUND 4u /* a call the kernel ended with EINTR, rewound by ckpt */

struct ckpt__pthread {
	int32_t tid;
	uint32_t flags;    /* CKPT__PT_* */
	int64_t syscall_nr;
	uint64_t gregs[23];
	uint64_t sigmask;
	uint64_t fs_base;
	uint64_t ss_sp, ss_size; /* the alternate signal stack */
	uint32_t ss_flags, xsave_len;
	uint64_t robust_head, robust_len;
	uint64_t rseq_area;
	uint32_t rseq_len, pad;
	uint64_t stack_lo, stack_hi;
	char name[16];
};
_Static_assert(sizeof(struct ckpt__pthread) == 304, "THREAD entry layout (doc/FORMAT.md)");

/* A pipe both of whose ends the program held (pipes.h): this header,
 * `nfds` struct ckpt__ppipe_fd, then the `len` bytes it held (at most
 * `capacity`, F_GETPIPE_SZ).  `ino` is its inode at the commit
 * (pipe:[ino] in /proc), for messages only. */
struct ckpt__ppipe {
	uint64_t ino;
	uint32_t capacity, nfds;
	uint32_t len, pad;
};
_Static_assert(sizeof(struct ckpt__ppipe) == 24, "PIPE entry layout (doc/FORMAT.md)");

#define CKPT__PP_READ 0u
#define CKPT__PP_WRITE 1u

/* One descriptor of a recorded pipe: its number, which end, and `share`,
 * the index (in its entry) of the first descriptor that has the same open
 * file description (its own index if none before it: dup'd descriptors
 * share one, a descriptor opened again through /proc has its own); the
 * status flags (F_GETFL) belong to that description. */
struct ckpt__ppipe_fd {
	int32_t fd;
	uint16_t end, share;
	int32_t flags, fdflags;
};
_Static_assert(sizeof(struct ckpt__ppipe_fd) == 16, "PIPE entry layout (doc/FORMAT.md)");

/* A growing record. */
struct ckpt__pbuf {
	unsigned char *p;
	size_t n, cap;
	int err;
};

/* Adds one entry of `len` bytes (two pieces, either may be empty). */
CKPT__HIDDEN void ckpt__pbuf_add(struct ckpt__pbuf *b, uint32_t type, const void *a, size_t alen,
				 const void *c, size_t clen);
CKPT__HIDDEN void ckpt__pbuf_free(struct ckpt__pbuf *b);

/* Walks a record: fn(type, bytes, len, arg) per entry, in order; stops at the
 * first non-zero return.  CKPT_ECORRUPT (with the reason) if the record is
 * malformed, else 0 or fn's value. */
CKPT__HIDDEN int ckpt__proc_walk(const void *rec, size_t size,
				 int (*fn)(uint32_t type, const unsigned char *p, size_t len,
					   void *arg),
				 void *arg);

/* ckpt's own descriptors, never recorded as the program's: those listed,
 * and every file in the directory open as chain_dirfd (-1: none), which
 * is ckpt's alone (its snapshots, their temporary files, the lock), however
 * and by whichever handle they were opened. */
struct ckpt__pown {
	const int *fds;
	size_t nfds;
	int chain_dirfd;
};

/* Builds the record of the calling process: everything but CTX and STACK,
 * which the caller adds; own (may be NULL) says which descriptors are
 * ckpt's. */
CKPT__HIDDEN int ckpt__proc_gather(struct ckpt__pbuf *b, const struct ckpt__pown *own);

/* Whether `path` (len bytes, absolute, as /proc/self/fd shows it: a removed
 * file's name followed by " (deleted)") names a file in the directory
 * whose identity is dir_dev, dir_ino. */
CKPT__HIDDEN int ckpt__proc_in_dir(const char *path, size_t len, uint64_t dir_dev,
				   uint64_t dir_ino);

/* Where the brk heap starts (field 47 of /proc/self/stat); 0 if unknown. */
CKPT__HIDDEN uint64_t ckpt__start_brk(void);

#endif /* CKPT_PROC_H */

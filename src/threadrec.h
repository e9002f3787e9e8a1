/*
 * threadrec.h - the program's other threads at a resumable commit: stopped
 * at a consistent point, recorded, let go.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The committing thread sends CKPT__STOP_SIG (SIGRTMAX) with tgkill to every
 * thread of /proc/self/task that is neither itself nor one of ckpt's own.
 * The handler copies what the kernel saved in its signal frame (registers,
 * the xsave area, the signal mask) and what only the thread itself can ask
 * (fs base, alternate stack, robust list, rseq area, name) into a slot of
 * ckpt's memory, and parks on a futex until released.  Threads blocked in a
 * system call are interrupted; SA_RESTART makes them retry it on release.
 */
#ifndef CKPT_THREADREC_H
#define CKPT_THREADREC_H

#include "proc.h"

/* How long a thread has to answer before the commit fails. */
#define CKPT__STOP_TIMEOUT_NS 1000000000ull

/* Stops every other thread of the program (ckpt__threads_hold first, so
 * that none is being created).  0, or CKPT_EBUSY (a thread did not answer
 * within the bound, or the program has a handler of its own for the
 * signal; the error names it), CKPT_ENOMEM.  On failure nothing is held and
 * no thread is parked. */
CKPT__HIDDEN int ckpt__threads_stop(void);
/* Adds one CKPT__PE_THREAD entry per program thread, the caller's first
 * (its registers are the CTX entry's); `sp` is the caller's stack pointer. */
CKPT__HIDDEN int ckpt__threads_record(struct ckpt__pbuf *b, uint64_t sp);
/* Called from a thread of ckpt's own (ckpt run), ckpt__threads_stop stops
 * every program thread, the main one too, and ckpt__threads_record adds no
 * entry for the caller.  Then: the main thread's thread pointer (0 if it is
 * not stopped), and the id of a stopped thread whose instruction pointer is
 * in code of ckpt's, of libsigsegv's or of the dynamic linker's, or that
 * holds one of the loader's locks, where a commit must not catch it (0 if
 * none is). */
CKPT__HIDDEN uintptr_t ckpt__threads_main_fs(void);
CKPT__HIDDEN int ckpt__threads_unsafe(void);
/* How many of the loader's two locks ckpt__threads_unsafe watches (2 where
 * they were found in this process, see threadrec.c). */
CKPT__HIDDEN int ckpt__threads_loader_locks(void);
/* Lets the stopped threads go on and ends the hold. */
CKPT__HIDDEN void ckpt__threads_go(void);

#endif /* CKPT_THREADREC_H */

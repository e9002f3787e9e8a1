/*
 * own-thread.h - ckpt's own threads: the compression workers and the
 * background writer.  They are made with clone(2), not pthread_create, so
 * that making and ending them writes nothing in the program's memory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Code that runs on one must call no pthread function (futex.h has the
 * locks it may share with other threads), no malloc, nothing that reaches a
 * module's TLS through __tls_get_addr unless that module was loaded at
 * start-up, and must not be cancelled.  Its stack, TLS block and thread
 * control block are ckpt's memory; every signal but SIGSEGV and SIGBUS is
 * blocked on it, so no handler of the program runs there for a signal sent
 * to the process.
 */
#ifndef CKPT_OWN_THREAD_H
#define CKPT_OWN_THREAD_H

#include "sys.h"

struct ckpt__own_thread {
	int tid;      /* set by the kernel; cleared (and woken) when it ends */
	int id;       /* the thread's id */
	void *mem;    /* stack, TLS block, thread control block, DTV */
	size_t size;
	void *(*fn)(void *);
	void *arg;
};

/* Starts fn(arg) on a new thread of ckpt's own.  Returns 0 or an errno
 * value (the thread did not start; ENOSYS where ckpt cannot build a thread
 * glibc does not know, e.g. off x86_64). */
CKPT__HIDDEN int ckpt__thread_spawn(struct ckpt__own_thread *th, void *(*fn)(void *), void *arg);
/* Waits for the thread to end and releases its memory. */
CKPT__HIDDEN void ckpt__thread_join(struct ckpt__own_thread *th);
/* Whether tid is a live thread of ckpt's own. */
CKPT__HIDDEN int ckpt__thread_is_own(int tid);

#endif /* CKPT_OWN_THREAD_H */

/*
 * held.h - the locks each thread holds whose owner is a thread id, so that
 * a resume can give them the thread's new id.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * glibc writes the owner's kernel thread id into a mutex when a thread
 * takes it (__data.__owner), and into the futex word (__data.__lock) of a
 * robust or priority-inheritance mutex; a rwlock taken for writing holds
 * its writer's id in __data.__cur_writer.  A resumed thread has a new id,
 * and glibc compares these fields with it: a recursive or error-checking
 * mutex held across a resume refuses its unlock (EPERM), a recursive one
 * deadlocks on its next lock, the kernel's robust-list and PI handling read
 * the futex word, and a rwlock's unlock by its writer becomes a read
 * unlock that corrupts it.
 *
 * libckpt defines pthread_mutex_lock, _trylock, _timedlock, _clocklock,
 * _unlock and pthread_rwlock_wrlock, _trywrlock, _timedwrlock, _clockwrlock,
 * _unlock (held.c).  Each calls libc's, and keeps a list, per thread, of
 * the mutexes it holds that are recursive, error-checking, robust or
 * priority-inheritance (of any of these kinds, process-shared or not) and
 * of the rwlocks it holds for writing.  Default, normal and adaptive
 * mutexes, whose owner glibc never checks, are not listed: their lock and
 * unlock cost one load and one test more than libc's.  The list lives in
 * libckpt's static TLS, in the thread's TLS block, which a snapshot saves
 * with the thread: the resume finds it there.
 *
 * A mutex is listed from before the lock call until after its unlock has
 * let it go (for a recursive mutex: the outermost lock and unlock), so a
 * thread stopped at any instruction holds no such lock unlisted.  A listed
 * lock may therefore not be held (yet, or any more), and a thread inside
 * pthread_cond_wait lists the mutex that glibc let go for the wait: the
 * fix below writes only fields that hold the old id.  Mutexes glibc takes
 * inside its own functions (its internal calls do not come through
 * libckpt) are not listed.
 */
#ifndef CKPT_HELD_H
#define CKPT_HELD_H

#include "sys.h"

/* Locks a thread can list; the ones it holds beyond are only counted. */
#define CKPT__HELD_MAX 64

/*
 * Gives new_tid to every lock on the held list of the thread whose thread
 * pointer (fs base on x86-64: glibc's struct pthread) is tp, where it has
 * old_tid: a mutex's __owner; the thread-id bits of a robust or PI
 * mutex's futex word, its FUTEX_WAITERS and FUTEX_OWNER_DIED bits kept;
 * a rwlock's __cur_writer.  The list is found at the same offset from tp as
 * the calling thread's own is from its thread pointer (initial-exec TLS),
 * so tp's TLS block must be in place and the lists' memory readable.
 * Returns how many locks it changed.
 *
 * For the resume: to be called once per thread after memory and every
 * thread's TLS block are back and before any program thread runs.  It calls
 * nothing, allocates nothing, has no stack protector and does not read the
 * calling thread's descriptor beyond its thread pointer, so it may run
 * while thread descriptors are being rewritten.  Not thread-safe against
 * the thread at tp running.  A new id equal to another thread's old id
 * mixes them up: a mutex another thread holds, still on this thread's list
 * because this thread waits on a condition variable with it, would be
 * taken for this thread's; the caller must then go through ids that are
 * neither old nor new (old -> spare for every thread, then spare -> new).
 */
CKPT__HIDDEN unsigned ckpt__held_fix(uintptr_t tp, int32_t old_tid, int32_t new_tid);

/*
 * Gives new_tid to the futex word of every entry of the robust futex list
 * whose head (struct robust_list_head, as registered with set_robust_list:
 * glibc's is in struct pthread) is at `head`, and of its list_op_pending,
 * where the word's thread-id bits are old_tid; the flag bits are kept.
 * These are robust mutexes the thread holds (or is taking or letting go),
 * which the kernel marks FUTEX_OWNER_DIED when the thread exits holding
 * them, if their word has its id.  The list is the program's: the walk
 * stops at the head, at a NULL link or after 1 << 20 entries; the entries
 * are read directly and must be mapped.  Returns how many words it
 * changed.  Same rules as ckpt__held_fix for the resume.
 */
CKPT__HIDDEN unsigned ckpt__held_fix_robust(uintptr_t head, int32_t old_tid, int32_t new_tid);

/* How many locks the thread at tp holds that its list had no room for:
 * ckpt__held_fix cannot reach them.  Same rules as ckpt__held_fix. */
CKPT__HIDDEN unsigned ckpt__held_unlisted(uintptr_t tp);

/* How many locks the calling thread lists (for tests). */
CKPT__HIDDEN unsigned ckpt__held_count(void);

#endif /* CKPT_HELD_H */

/*
 * own-thread.c - ckpt's own threads, made with clone(2) and unknown to glibc.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Why not pthread_create.  glibc keeps the books of its threads in the
 * program's memory: creating one counts it in libc's __nptl_nthreads, links
 * its descriptor into ld.so's lists in _rtld_global, calloc's its DTV from
 * the program's heap (the tcache moves), and ending one undoes part of that
 * and frees the DTV.  A commit runs workers while it reads the program's
 * pages, so those writes landed in snapshots, shadows and restores: a
 * program reset to a snapshot believed it had three threads, and
 * pthread_exit from main no longer ended the process.  A thread glibc does
 * not know writes none of it.
 *
 * What such a thread gets, built the way glibc builds one (x86_64, TLS
 * variant II: the static TLS block lies below the thread pointer, the
 * thread control block at it):
 * - every static TLS module's initialisation image (a module's offset from
 *   the thread pointer is the same in every thread; dl_iterate_phdr gives
 *   the calling thread's block of each, hence the offset), zero after it:
 *   errno, libc's locale pointer, ckpt's own TLS are those of a new thread;
 * - a thread control block whose self pointers point at itself, with the
 *   stack protector's canary and the pointer guard copied (code compiled
 *   with -fstack-protector reads %fs:0x28), the rest of glibc's thread
 *   descriptor zero (no cancellation, no cleanup, no thread id: nothing
 *   reads it where ckpt's threads go), the rseq area marked unregistered;
 * - a DTV copied from the calling thread's, its static entries pointing
 *   into the new block and the others unallocated (dynamic TLS would be
 *   malloc'ed on first use: ckpt's threads use none);
 * - every signal blocked from its first instruction (the caller blocks them
 *   around clone), so process-directed signals go to the program's threads,
 *   but SIGSEGV and SIGBUS, so that its own faults reach the tracker's
 *   handler as on any thread (a library it calls may write the program's
 *   memory, e.g. the gettext lock of strerror).
 * The kernel writes its id at creation and clears it and wakes a futex when
 * it ends (CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID on one word), which
 * is what join waits on; after that its memory is no longer in use.
 *
 * This file is built into libckpt_interpose (never instrumented): its
 * child entry point runs before anything a sanitizer would set up.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "own-thread.h"
#include "mem.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/rseq.h>

/* A sanitizer's stack redzones on a stack that is freed would outlive it. */
extern void __asan_unpoison_memory_region(void const volatile *p, size_t n)
	__attribute__((weak));

#define STACK_BYTES (256u << 10)
#define TCB_BYTES (16u << 10) /* glibc's struct pthread is about 2.3 KiB */

/* The live threads' ids, for ckpt__thread_is_own. */
#define MAX_OWN 128
static int own_tids[MAX_OWN];

#if defined(__x86_64__)

struct dtv_entry {
	uintptr_t val;
	uintptr_t to_free;
};

static size_t static_tls_size, static_tls_align;

/* glibc's size of the static TLS area (modules loaded at start-up plus the
 * surplus kept for dlopen); 0 when it cannot be had. */
static size_t tls_static_size(void)
{
	size_t s = __atomic_load_n(&static_tls_size, __ATOMIC_ACQUIRE);
	if (s)
		return s;
	void (*info)(size_t *, size_t *) =
		(void (*)(size_t *, size_t *))dlsym(RTLD_DEFAULT, "_dl_get_tls_static_info");
	size_t size = 0, align = 0;
	if (info)
		info(&size, &align);
	if (!size || size > (64u << 20) || (align & (align - 1)) || align > 4096)
		return 0;
	static_tls_align = align;
	__atomic_store_n(&static_tls_size, size, __ATOMIC_RELEASE);
	return size;
}

static uintptr_t thread_pointer(void)
{
	uintptr_t tp;
	__asm__("mov %%fs:0, %0" : "=r"(tp));
	return tp;
}

struct tls_copy {
	uintptr_t cur_tp, new_tp;
	size_t size;
};

static int copy_image(struct dl_phdr_info *info, size_t len, void *arg)
{
	(void)len;
	struct tls_copy *t = arg;
	uintptr_t data = (uintptr_t)info->dlpi_tls_data;
	/* Not static TLS (loaded later, or not allocated in this thread). */
	if (!data || data >= t->cur_tp || t->cur_tp - data > t->size)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_TLS)
			continue;
		size_t n = ph->p_filesz <= t->cur_tp - data ? ph->p_filesz : t->cur_tp - data;
		memcpy((void *)(t->new_tp - (t->cur_tp - data)),
		       (const void *)(info->dlpi_addr + ph->p_vaddr), n);
	}
	return 0;
}

static int child_entry(void *arg)
{
	struct ckpt__own_thread *th = arg;
	/* Faults of its own go to the tracker's handler, as on any thread:
	 * glibc writes its own data in the program's memory now and then
	 * (strerror takes the gettext lock), which the mprotect back-end
	 * protects. */
	uint64_t faults = (1ull << (SIGSEGV - 1)) | (1ull << (SIGBUS - 1));
	ckpt__sys6(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&faults, 0, 8, 0, 0);
	th->fn(th->arg);
	return 0;
}

int ckpt__thread_spawn(struct ckpt__own_thread *th, void *(*fn)(void *), void *arg)
{
	size_t tls = tls_static_size();
	if (!tls)
		return ENOSYS;
	uintptr_t cur_tp = thread_pointer();
	const struct dtv_entry *dtv = *(struct dtv_entry **)(cur_tp + 8);
	size_t dtv_len = dtv ? dtv[-1].val : 0;
	if (!dtv || dtv_len > 65536)
		return ENOSYS;
	size_t tls_bytes = ckpt__page_up(tls + static_tls_align);
	size_t dtv_bytes = (dtv_len + 2) * sizeof *dtv;
	size_t size = STACK_BYTES + tls_bytes + TCB_BYTES + ckpt__page_up(dtv_bytes);
	char *mem = ckpt__mem_alloc(size);
	if (!mem)
		return ENOMEM;
	uintptr_t new_tp = (uintptr_t)mem + STACK_BYTES + tls_bytes;

	struct tls_copy t = {cur_tp, new_tp, tls};
	dl_iterate_phdr(copy_image, &t);

	struct dtv_entry *nd = (struct dtv_entry *)(new_tp + TCB_BYTES) + 1;
	nd[-1].val = dtv_len;
	nd[0].val = dtv[0].val; /* the TLS generation */
	for (size_t m = 1; m <= dtv_len; m++) {
		uintptr_t v = dtv[m].val;
		nd[m].val = v < cur_tp && cur_tp - v <= tls ? v - cur_tp + new_tp
							    : (uintptr_t)-1 /* unallocated */;
	}

	uintptr_t *tcb = (uintptr_t *)new_tp;
	tcb[0] = new_tp;                          /* tcb */
	tcb[1] = (uintptr_t)nd;                   /* dtv */
	tcb[2] = new_tp;                          /* self */
	*(int *)(new_tp + 0x18) = 1;              /* multiple_threads */
	tcb[4] = ((uintptr_t *)cur_tp)[4];        /* sysinfo */
	tcb[5] = ((uintptr_t *)cur_tp)[5];        /* stack_guard */
	tcb[6] = ((uintptr_t *)cur_tp)[6];        /* pointer_guard */
	*(unsigned *)(new_tp + 0x48) = *(unsigned *)(cur_tp + 0x48); /* feature_1 */
	if (__rseq_size && __rseq_offset > 0 && (size_t)__rseq_offset + 8 <= TCB_BYTES)
		((int *)(new_tp + (uintptr_t)__rseq_offset))[1] = -1; /* cpu_id: unregistered */

	th->mem = mem;
	th->size = size;
	th->fn = fn;
	th->arg = arg;
	th->tid = 0;
	uint64_t all = ~0ull, old = 0;
	ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)&old, 8, 0, 0);
	int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
		    CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	int tid = clone(child_entry, mem + STACK_BYTES - 64, flags, th, &th->tid, (void *)new_tp,
			&th->tid);
	int err = tid < 0 ? errno : 0;
	ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8, 0, 0);
	if (tid < 0) {
		ckpt__mem_free(mem, size);
		th->mem = NULL;
		return err ? err : EAGAIN;
	}
	th->id = tid;
	for (int i = 0; i < MAX_OWN; i++) {
		int z = 0;
		if (__atomic_compare_exchange_n(&own_tids[i], &z, tid, 0, __ATOMIC_RELEASE,
						__ATOMIC_RELAXED))
			break;
	}
	return 0;
}

void ckpt__thread_join(struct ckpt__own_thread *th)
{
	if (!th->mem)
		return;
	int tid, id = th->id;
	/* The kernel's wake at thread exit is a shared futex wake. */
	while ((tid = __atomic_load_n(&th->tid, __ATOMIC_ACQUIRE)) != 0)
		ckpt__sys6(SYS_futex, (long)&th->tid, FUTEX_WAIT, tid, 0, 0, 0);
	for (int i = 0; id && i < MAX_OWN; i++) {
		int want = id;
		if (__atomic_compare_exchange_n(&own_tids[i], &want, 0, 0, __ATOMIC_RELEASE,
						__ATOMIC_RELAXED))
			break;
	}
	if (__asan_unpoison_memory_region)
		__asan_unpoison_memory_region(th->mem, th->size);
	ckpt__mem_free(th->mem, th->size);
	th->mem = NULL;
}

#else /* !__x86_64__ */

int ckpt__thread_spawn(struct ckpt__own_thread *th, void *(*fn)(void *), void *arg)
{
	(void)fn;
	(void)arg;
	th->mem = NULL;
	return ENOSYS;
}

void ckpt__thread_join(struct ckpt__own_thread *th)
{
	th->mem = NULL;
}

#endif

int ckpt__thread_is_own(int tid)
{
	for (int i = 0; tid && i < MAX_OWN; i++)
		if (__atomic_load_n(&own_tids[i], __ATOMIC_ACQUIRE) == tid)
			return 1;
	return 0;
}

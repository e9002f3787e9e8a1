/*
 * interpose-mem.c - libc interposers for memory mappings and signals.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The program's own mmap/munmap/mprotect/mremap/madvise calls change what
 * ckpt tracks: a region unmapped drops out, a protection the program sets is
 * what ckpt_end gives back, discarded pages count as dirty, and a mapping
 * being moved is unprotected first so that mremap sees a single mapping.
 * glibc's internal calls (malloc's mremap and munmap) do not come through
 * here; the tracker catches their effects in /proc/self/maps and the fault
 * handler recognises moved mappings.  realloc and reallocarray are
 * interposed for a lazy resume only (lazy_block).
 *
 * Signals: ckpt's SIGSEGV handler must run whenever a tracked page is
 * written, so SIGSEGV is taken out of every mask the program sets, and the
 * program's own SIGSEGV handler becomes the one ckpt's handler chains to.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "interpose.h"
#include "lazy.h"
#include "run.h"
#include "track-mprotect.h"
#include "track.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

void *ckpt__next(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	/* Symbols glibc keeps only for old binaries (__xstat...) have no
	 * default version. */
	if (!p)
		p = dlvsym(RTLD_NEXT, name, "GLIBC_2.2.5");
	return p;
}

void ckpt__no_next(const char *name)
{
	char msg[160];
	int n = snprintf(msg, sizeof msg, "ckpt: no definition of %s after libckpt\n", name);
	if (n > 0)
		ckpt__raw_write(2, msg, (size_t)n);
	abort();
}

CKPT__REAL(void *, mmap, (void *, size_t, int, int, int, off_t))
CKPT__REAL(void *, mmap64, (void *, size_t, int, int, int, off_t))
CKPT__REAL(int, munmap, (void *, size_t))
CKPT__REAL(int, mprotect, (void *, size_t, int))
CKPT__REAL(void *, mremap, (void *, size_t, size_t, int, ...))
CKPT__REAL(int, madvise, (void *, size_t, int))
CKPT__REAL(void *, realloc, (void *, size_t))
CKPT__REAL(void *, reallocarray, (void *, size_t, size_t))
CKPT__REAL(size_t, malloc_usable_size, (void *))
CKPT__REAL(int, sigaction, (int, const struct sigaction *, struct sigaction *))
CKPT__REAL(sighandler_t, signal, (int, sighandler_t))
CKPT__REAL(sighandler_t, sysv_signal, (int, sighandler_t))
CKPT__REAL(int, sigprocmask, (int, const sigset_t *, sigset_t *))
CKPT__REAL(int, pthread_sigmask, (int, const sigset_t *, sigset_t *))
CKPT__REAL(int, sigsuspend, (const sigset_t *))
CKPT__REAL(int, pthread_attr_setsigmask_np, (pthread_attr_t *, const sigset_t *))

__attribute__((constructor(103))) static void resolve(void)
{
	(void)get_mmap();
	(void)get_mmap64();
	(void)get_munmap();
	(void)get_mprotect();
	(void)get_mremap();
	(void)get_madvise();
	(void)get_realloc();
	(void)get_reallocarray();
	(void)get_malloc_usable_size();
	(void)get_sigaction();
	(void)get_signal();
	(void)get_sysv_signal();
	(void)get_sigprocmask();
	(void)get_pthread_sigmask();
	(void)get_sigsuspend();
	(void)get_pthread_attr_setsigmask_np();
}

static uintptr_t end_of(void *p, size_t len)
{
	uintptr_t e = (uintptr_t)p + len;
	return e < (uintptr_t)p ? UINTPTR_MAX : ckpt__page_up(e);
}

static void *after_mmap(void *p, size_t len, int prot, int flags)
{
	if (p == MAP_FAILED || !ckpt__track_armed())
		return p;
	int saved = errno;
	/* A fixed mapping replaces whatever was there. */
	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
		ckpt__track_unmapped((uintptr_t)p, end_of(p, len));
	if (!(prot & PROT_WRITE) && (flags & MAP_ANONYMOUS))
		ckpt__track_read_only((uintptr_t)p, end_of(p, len));
	errno = saved;
	return p;
}

CKPT__EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return after_mmap(get_mmap()(addr, len, prot, flags, fd, off), len, prot, flags);
}

CKPT__EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return after_mmap(get_mmap64()(addr, len, prot, flags, fd, off), len, prot, flags);
}

CKPT__EXPORT int munmap(void *addr, size_t len)
{
	int rc = get_munmap()(addr, len);
	if (rc == 0 && ckpt__track_armed()) {
		int saved = errno;
		ckpt__track_unmapped((uintptr_t)addr, end_of(addr, len));
		errno = saved;
	}
	return rc;
}

CKPT__EXPORT int mprotect(void *addr, size_t len, int prot)
{
	if (!ckpt__track_armed() || ((uintptr_t)addr & (ckpt__pagesize - 1)) || !len)
		return get_mprotect()(addr, len, prot);
	int rc = ckpt__track_mprotect((uintptr_t)addr, end_of(addr, len), prot, get_mprotect());
	if (rc) {
		errno = -rc;
		return -1;
	}
	return 0;
}

/* glibc's realloc moves a large block (a mapping of its own) with mremap
 * inside libc, which the interposer below does not see: a lazy resume
 * fills the block's pages first, or those not filled yet would be lost
 * with the registration the move drops.  The block's mapping starts at
 * most a page before it (malloc's header and alignment). */
static void lazy_block(void *p)
{
	if (!CKPT__UNLIKELY(__atomic_load_n(&ckpt__lazy_on, __ATOMIC_ACQUIRE)) || !p)
		return;
	uintptr_t a = (uintptr_t)p, lo = (a & ~(uintptr_t)4095) - 4096;
	size_t n = get_malloc_usable_size()(p);
	ckpt__lazy_fill((void *)lo, a - lo + n);
}

CKPT__EXPORT void *realloc(void *p, size_t n)
{
	lazy_block(p);
	return get_realloc()(p, n);
}

CKPT__EXPORT void *reallocarray(void *p, size_t nmemb, size_t size)
{
	lazy_block(p);
	return get_reallocarray()(p, nmemb, size);
}

CKPT__EXPORT void *mremap(void *old, size_t oldlen, size_t newlen, int flags, ...)
{
	void *want = NULL;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		want = va_arg(ap, void *);
		va_end(ap);
	}
	int armed = ckpt__track_armed();
	/* Pages a lazy resume has not filled yet would lose their content
	 * when the mapping moves without its registration. */
	ckpt__lazy_fill(old, oldlen);
	/* Tracked pages protected one by one are many mappings to the kernel,
	 * and mremap takes only one: make the range writable (and dirty: what
	 * moves counts as new) first. */
	if (armed && oldlen)
		ckpt__track_touch(old, oldlen);
	void *p = get_mremap()(old, oldlen, newlen, flags, want);
	if (p != MAP_FAILED && armed) {
		int saved = errno;
		uintptr_t o = (uintptr_t)old;
		if (p != old && !(flags & MREMAP_DONTUNMAP))
			ckpt__track_unmapped(o, end_of(old, oldlen));
		else if (p == old && newlen < oldlen)
			ckpt__track_unmapped(end_of(old, newlen), end_of(old, oldlen));
		if (p != old)
			ckpt__track_unmapped((uintptr_t)p, end_of(p, newlen));
		errno = saved;
	}
	return p;
}

CKPT__EXPORT int madvise(void *addr, size_t len, int advice)
{
	if (ckpt__track_armed()) {
		switch (advice) {
		case MADV_DONTNEED:
		case MADV_DONTNEED_LOCKED:
		case MADV_FREE:
		case MADV_REMOVE:
			/* Discarded pages read as zero, not as what a lazy
			 * fill would put there later. */
			ckpt__lazy_fill(addr, len);
			ckpt__track_discard((uintptr_t)addr, end_of(addr, len));
			break;
		case MADV_POPULATE_WRITE:
			ckpt__track_touch(addr, len);
			break;
		default:
			break;
		}
	}
	return get_madvise()(addr, len, advice);
}

/* ---- signals ----------------------------------------------------------------- */

static const sigset_t *open_segv(const sigset_t *set, sigset_t *buf)
{
	if (!set || !sigismember(set, SIGSEGV))
		return set;
	*buf = *set;
	sigdelset(buf, SIGSEGV);
	return buf;
}

CKPT__EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	if (ckpt__mp_sigaction_hook(sig, act, old) || ckpt__run_sigaction_hook(sig, act, old))
		return 0;
	if (act && sigismember(&act->sa_mask, SIGSEGV)) {
		struct sigaction n = *act;
		sigdelset(&n.sa_mask, SIGSEGV);
		return get_sigaction()(sig, &n, old);
	}
	return get_sigaction()(sig, act, old);
}

static sighandler_t virtual_signal(int sig, sighandler_t h, int flags, int *taken)
{
	struct sigaction n = {0}, o;
	n.sa_handler = h;
	n.sa_flags = flags;
	*taken = ckpt__mp_sigaction_hook(sig, &n, &o) || ckpt__run_sigaction_hook(sig, &n, &o);
	return o.sa_handler;
}

CKPT__EXPORT sighandler_t signal(int sig, sighandler_t h)
{
	int taken;
	sighandler_t o = virtual_signal(sig, h, SA_RESTART, &taken);
	return taken ? o : get_signal()(sig, h);
}

CKPT__EXPORT sighandler_t bsd_signal(int sig, sighandler_t h);
CKPT__EXPORT sighandler_t bsd_signal(int sig, sighandler_t h)
{
	return signal(sig, h);
}

CKPT__EXPORT sighandler_t sysv_signal(int sig, sighandler_t h)
{
	int taken;
	sighandler_t o = virtual_signal(sig, h, SA_RESETHAND | SA_NODEFER, &taken);
	return taken ? o : get_sysv_signal()(sig, h);
}

CKPT__EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	sigset_t buf;
	ckpt__track_touch(old, sizeof *old);
	return get_sigprocmask()(how, how == SIG_UNBLOCK ? set : open_segv(set, &buf), old);
}

CKPT__EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
	sigset_t buf;
	ckpt__track_touch(old, sizeof *old);
	return get_pthread_sigmask()(how, how == SIG_UNBLOCK ? set : open_segv(set, &buf), old);
}

CKPT__EXPORT int sigsuspend(const sigset_t *mask)
{
	sigset_t buf;
	return get_sigsuspend()(open_segv(mask, &buf));
}

CKPT__EXPORT int pthread_attr_setsigmask_np(pthread_attr_t *attr, const sigset_t *mask)
{
	sigset_t buf;
	if (!get_pthread_attr_setsigmask_np()) {
		errno = ENOSYS;
		return ENOSYS;
	}
	return get_pthread_attr_setsigmask_np()(attr, open_segv(mask, &buf));
}

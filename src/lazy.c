/*
 * lazy.c - a resume that lets the program go on before its memory is back
 * (CKPT_F_LAZY).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A resume maps the snapshot's memory fresh and fills it from the blocks
 * of the chain (fill.c).  Lazily, the anonymous private part of that memory
 * (the heap, malloc's large blocks, the program's own anonymous mappings)
 * is registered with a userfaultfd in MISSING mode instead and the resume
 * goes on at once.  Then:
 *
 * - a thread that touches a page not filled yet waits in the kernel, and
 *   a worker (a thread of ckpt's own, own-thread.h) reading the
 *   userfaultfd reads, checks and decompresses the page's block and
 *   installs every page of it that the program needs (UFFDIO_COPY, which
 *   wakes the thread); a page the plan has no data for gets zeros;
 * - meanwhile the workers fill the blocks in the address order of their
 *   first page (the background fill), going on from the block of the
 *   last fault, then once more from the start for what that passed over;
 *   a fault on a block being filled is left to the copy, which wakes the
 *   thread;
 * - each block ("task") is done once: an atomic state per task (to do,
 *   busy, done) says who does it; a thread that needs a busy task waits
 *   on its futex word.  A page that exists already when its copy comes
 *   (EEXIST) is left as it is: the program zeroed it after a discard, or
 *   another copy got there first.
 *
 * The userfaultfd: a mapping is registered with one only.  Under the uffd
 * back-end the memory is registered with the tracker's already (WP, async):
 * it is registered again on the same descriptor with MISSING|WP, and pages
 * are installed write-protected (UFFDIO_COPY_MODE_WP: clean, tracked, what
 * the newest snapshot holds).  MISSING goes only with the registration,
 * and unregistering drops the write-protect bits that are the tracker's
 * record: so the server answers faults with zeros after the fill, until
 * the next commit or restore hands the memory back with the program's
 * other threads stopped (ckpt__lazy_handover: what was written goes into
 * the dirty bitmap, then unregister, register and protect again).  Under
 * the mprotect back-end the descriptor is ckpt's own, closed when the fill
 * ends; a write to a page not filled yet first faults on the protection
 * (the tracker opens the page and marks it), then on the missing page.
 *
 * The kernel's own accesses (read() into such a page, write() from it)
 * fault like the program's, which needs a descriptor made without
 * UFFD_USER_MODE_ONLY (privileged, or vm.unprivileged_userfaultfd=1):
 * with a user-mode one they would fail with EFAULT, so lazily is then not
 * an option and the memory is filled before the program goes on, as when
 * no userfaultfd can be had at all; stderr says so.  The libc interposers
 * of such calls fill their buffers first anyway (ckpt__lazy_fill: cheaper
 * than a fault per page), and those of discards (madvise) and moves
 * (mremap) too: a discarded page must read as zero afterwards, not be
 * filled by the background, and a mapping moved without its registration
 * would lose the pages not filled yet.
 *
 * A block that fails its checks is found after the program went on, which
 * cannot be undone: the process executes the program again with
 * CKPT_LAZY_OFF=1 in its environment, and that run resumes without
 * CKPT_F_LAZY, which sets the damaged snapshot aside as any resume does.
 *
 * The workers call no pthread function and no malloc (own-thread.h);
 * every page they install, they install through the kernel.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "lazy.h"
#include "error.h"
#include "fill.h"
#include "futex.h"
#include "inject.h"
#include "mem.h"
#include "own-thread.h"
#include "track.h"
#include "zmem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_WORKERS 16
#define T ckpt__T

enum { TASK_TODO, TASK_BUSY, TASK_DONE };

struct lazy;

struct lworker {
	struct lazy *l;
	ZSTD_DCtx *dctx;
	void *raw, *stored; /* a block each */
	int server;         /* serves faults until the fill is over, then ends it */
};

struct lazy {
	int fd;                   /* the userfaultfd */
	int own_fd;               /* fd is ckpt's own (mprotect back-end) */
	int wp;                   /* fd is the tracker's: install write-protected */
	struct ckpt__chain *c;    /* the chain the tasks' snapshots belong to */
	struct ckpt__chain kept;  /* c once adopted */
	struct ckpt__fill f;
	struct ckpt__rset ranges; /* registered */
	struct ckpt__fill_at *idx; /* data pages by address (from the plan) */
	size_t nidx;
	uint32_t *order;          /* tasks by the address of their first page */
	int *state;               /* TASK_* per task (futex words) */
	uint32_t *pos;            /* each task's place in order */
	size_t next;              /* the next of order to take (atomic) */
	size_t next2;             /* the same, second sweep (atomic) */
	size_t ndone;             /* tasks done (atomic) */
	int stop;                 /* cancelled (atomic) */
	int filled;               /* every block filled (futex word) */
	int finished;             /* ckpt__lazy_finish ran */
	unsigned nw, started;
	struct lworker w[MAX_WORKERS];
	struct ckpt__own_thread th[MAX_WORKERS];
	void *zero;               /* a page of zeros */
	/* Executing the program again when a block fails its checks. */
	char **argv, **envp;
	char *strs;
	size_t nptr, strs_len;
};

int ckpt__lazy_on;
/* In libckpt's data: neither tracked nor restored. */
static struct lazy *L;
static long users; /* ckpt__lazy_fill_slow calls that may look at L */
static ckpt__mutex finish_lock;

/* ---- installing pages ------------------------------------------------------------------------ */

static long uffd_ioctl(int fd, unsigned long req, void *arg)
{
	return ckpt__sys3(SYS_ioctl, fd, (long)req, (long)arg);
}

/* Copies [src, src+len) to dst through the kernel.  One copy must stay
 * inside one mapping (ENOENT otherwise), and the mprotect back-end splits
 * mappings at every page it opens: after a refusal the rest goes a page
 * at a time.  A page that exists already (EEXIST) or is no longer
 * registered (ENOENT a page at a time: unmapped, or mapped anew) is passed
 * over.  -1 when the process is going away. */
static int install(struct lazy *l, uintptr_t dst, const char *src, size_t len)
{
	size_t ps = ckpt__pagesize, chunk = len;
	while (len) {
		size_t n = chunk < len ? chunk : len;
		struct uffdio_copy c = {.dst = dst, .src = (uintptr_t)src, .len = n,
					.mode = l->wp ? UFFDIO_COPY_MODE_WP : 0};
		long r = uffd_ioctl(l->fd, UFFDIO_COPY, &c);
		size_t done = r == 0 ? n : c.copy > 0 ? (size_t)c.copy : 0;
		if (!done) {
			if (r == -ESRCH)
				return -1;
			if (r == -EAGAIN) {
				ckpt__raw_sched_yield();
				continue;
			}
			if (n > ps && r != -EEXIST) {
				chunk = ps;
				continue;
			}
			/* A thread may wait on it: faults on a block being
			 * filled are left to the copy's wake-up. */
			struct uffdio_range wk = {dst, ps};
			uffd_ioctl(l->fd, UFFDIO_WAKE, &wk);
			done = ps;
		}
		dst += done;
		src += done;
		len -= done;
	}
	return 0;
}

/* The page at a reads as zero: it has no data in the snapshot resumed,
 * which is still the newest (clean), or its data was installed and
 * discarded since, or the fill is over (dirty under the uffd back-end: no
 * write-protection, so the tracker sees it written).  If it exists, the
 * thread that faulted on it is woken. */
static void install_zero(struct lazy *l, uintptr_t a, int clean)
{
	size_t ps = ckpt__pagesize;
	long r;
	if (l->wp) {
		/* A copy of zeros: UFFDIO_ZEROPAGE refuses the uffd-wp marker
		 * that stands for a protected page not there yet (EEXIST). */
		struct uffdio_copy c = {.dst = a, .src = (uintptr_t)l->zero, .len = ps,
					.mode = clean ? UFFDIO_COPY_MODE_WP : 0};
		r = uffd_ioctl(l->fd, UFFDIO_COPY, &c);
	} else {
		struct uffdio_zeropage z = {.range = {a, ps}, .mode = 0};
		r = uffd_ioctl(l->fd, UFFDIO_ZEROPAGE, &z);
	}
	if (r != 0) {
		struct uffdio_range w = {a, ps};
		uffd_ioctl(l->fd, UFFDIO_WAKE, &w);
	}
}

/* A block that cannot be read or failed its checks, with the program
 * already running: nothing to go back to.  The program is executed again
 * to resume without CKPT_F_LAZY, which sets the damaged snapshot aside. */
__attribute__((noreturn)) static void fatal(struct lazy *l, const char *why)
{
	char msg[768];
	int n = snprintf(msg, sizeof msg,
			 "ckpt: lazy resume: %s; executing the program again to resume it "
			 "without CKPT_F_LAZY\n",
			 why);
	if (n > 0)
		ckpt__raw_write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
	if (l->argv)
		ckpt__sys3(SYS_execve, (long)"/proc/self/exe", (long)l->argv, (long)l->envp);
	static const char last[] = "ckpt: lazy resume: cannot execute the program again\n";
	ckpt__raw_write(2, last, sizeof last - 1);
	ckpt__sys3(SYS_exit_group, 127, 0, 0);
	__builtin_unreachable();
}

/* Task t's block read and its pages installed. */
static void do_task(struct lworker *w, uint32_t t)
{
	struct lazy *l = w->l;
	const struct ckpt__fill_task *tk = &l->f.task[t];
	if (ckpt__fill_load(&l->f, tk, w->dctx, w->raw, w->stored))
		fatal(l, ckpt_last_error());
	const struct ckpt__fill_page *pg = &l->f.page[tk->first];
	size_t ps = ckpt__pagesize;
	for (uint32_t i = 0; i < tk->n;) {
		uint32_t k = i + 1;
		while (k < tk->n && pg[k].addr == pg[k - 1].addr + ps && pg[k].page == pg[k - 1].page + 1)
			k++;
		if (install(l, pg[i].addr, (const char *)w->raw + (size_t)pg[i].page * ps,
			    (size_t)(k - i) * ps))
			return;
		i = k;
	}
}

/* Task t done, by this thread or by the one doing it. */
static void ensure(struct lworker *w, uint32_t t)
{
	struct lazy *l = w->l;
	int *s = &l->state[t];
	for (;;) {
		int v = __atomic_load_n(s, __ATOMIC_ACQUIRE);
		if (v == TASK_DONE)
			return;
		if (v == TASK_TODO) {
			if (!__atomic_compare_exchange_n(s, &v, TASK_BUSY, 0, __ATOMIC_ACQ_REL,
							 __ATOMIC_RELAXED))
				continue;
			do_task(w, t);
			__atomic_store_n(s, TASK_DONE, __ATOMIC_RELEASE);
			/* A thread that faulted on a page of it after its copy
			 * (a discard in between) re-faults: it is done now. */
			const struct ckpt__fill_task *tk = &l->f.task[t];
			const struct ckpt__fill_page *pg = &l->f.page[tk->first];
			if (tk->n) {
				struct uffdio_range wk = {pg[0].addr, pg[tk->n - 1].addr +
									ckpt__pagesize - pg[0].addr};
				uffd_ioctl(l->fd, UFFDIO_WAKE, &wk);
			}
			ckpt__futex_wake(s, INT_MAX);
			__atomic_add_fetch(&l->ndone, 1, __ATOMIC_RELEASE);
			return;
		}
		ckpt__futex_wait(s, TASK_BUSY);
	}
}

/* The first index entry at or above a. */
static size_t lower(const struct lazy *l, uintptr_t a)
{
	size_t lo = 0, hi = l->nidx;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->idx[mid].addr < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The index entry of the data page at a, or -1. */
static long find(const struct lazy *l, uintptr_t a)
{
	size_t i = lower(l, a);
	return i < l->nidx && l->idx[i].addr == a ? (long)i : -1;
}

/* The background fill goes on after block t: the program is there. */
static void follow(struct lazy *l, uint32_t t)
{
	size_t want = (size_t)l->pos[t] + 1, cur = __atomic_load_n(&l->next, __ATOMIC_ACQUIRE);
	while (cur < want &&
	       !__atomic_compare_exchange_n(&l->next, &cur, want, 0, __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE))
		;
}

static void on_fault(struct lworker *w, uintptr_t addr)
{
	struct lazy *l = w->l;
	uintptr_t a = ckpt__page_down(addr);
	long i = find(l, a);
	if (i >= 0) {
		uint32_t t = l->idx[i].task;
		follow(l, t);
		/* Being filled: its copies wake the thread, while this one
		 * goes on to other faults. */
		if (__atomic_load_n(&l->state[t], __ATOMIC_ACQUIRE) == TASK_BUSY)
			return;
		ensure(w, t);
	}
	/* Normally there now: then this only wakes the thread.  A page the
	 * plan has no data for is clean while the newest snapshot is the one
	 * resumed, that is until the fill ends and a commit may follow. */
	install_zero(l, a, i < 0 && !__atomic_load_n(&l->filled, __ATOMIC_ACQUIRE));
}

/* One message read and handled: 1, or 0 if none was waiting. */
static int serve_one(struct lworker *w)
{
	struct uffd_msg m;
	long n = ckpt__sys3(SYS_read, w->l->fd, (long)&m, sizeof m);
	if (n != (long)sizeof m)
		return 0;
	if (m.event == UFFD_EVENT_PAGEFAULT)
		on_fault(w, (uintptr_t)m.arg.pagefault.address);
	return 1;
}

/* Registers [lo, hi) for missing pages (with write-protection under the
 * uffd back-end, as the tracker has it).  0 or -errno. */
static long reg_missing(struct lazy *l, uintptr_t lo, uintptr_t hi)
{
	struct uffdio_register r = {.range = {lo, hi - lo}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (l->wp)
		r.mode |= UFFDIO_REGISTER_MODE_WP;
	return uffd_ioctl(l->fd, UFFDIO_REGISTER, &r);
}

/* No more missing-page faults in [lo, hi): unregistered, which wakes
 * whoever waits on one there (its page is then a zero page). */
static void unregister(struct lazy *l, uintptr_t lo, uintptr_t hi)
{
	struct uffdio_range u = {lo, hi - lo};
	uffd_ioctl(l->fd, UFFDIO_UNREGISTER, &u);
}

/* The fill is over: what waits for it goes on. */
static void fill_done(struct lazy *l)
{
	__atomic_store_n(&ckpt__lazy_on, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&l->filled, 1, __ATOMIC_RELEASE);
	ckpt__futex_wake(&l->filled, INT_MAX);
}

/*
 * The workers.  Each reads a fault when one waits and otherwise takes the
 * next block in address order; when none is left the others end and the
 * server (worker 0) answers faults until the blocks being done are done.
 * Then, under the mprotect back-end, it closes its descriptor (which
 * unregisters everything and wakes every waiter) and ends.  Under the
 * uffd back-end the registration keeps MISSING: the kernel offers no way
 * to drop it but unregistering, which would drop the write-protection
 * bits the tracker's record is (a page written since would go unseen).
 * So the server stays, answering every later fault with a zero page (not
 * write-protected: counted as written, the safe side), until tracking
 * ends (ckpt__lazy_stop).
 */
static void *work(void *arg)
{
	struct lworker *w = arg;
	struct lazy *l = w->l;
	int zeros = 0;
	for (;;) {
		if (__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE))
			break;
		if (serve_one(w))
			continue;
		if (!zeros) {
			/* In address order from where the program last
			 * faulted; then once more from the start, for what
			 * that passed over. */
			size_t i = __atomic_fetch_add(&l->next, 1, __ATOMIC_ACQ_REL);
			if (i >= l->f.ntask)
				i = __atomic_fetch_add(&l->next2, 1, __ATOMIC_ACQ_REL);
			if (i < l->f.ntask) {
				ensure(w, l->order[i]);
				continue;
			}
			if (!w->server)
				break;
			if (__atomic_load_n(&l->ndone, __ATOMIC_ACQUIRE) == l->f.ntask) {
				if (l->own_fd) {
					ckpt__raw_close(l->fd);
					l->fd = -1;
					fill_done(l);
					break;
				}
				fill_done(l);
				zeros = 1;
				continue;
			}
		}
		struct pollfd p = {.fd = l->fd, .events = POLLIN};
		ckpt__sys3(SYS_poll, (long)&p, 1, zeros ? 50 : 5);
	}
	return NULL;
}

/* ---- setting up ------------------------------------------------------------------------------ */

static void lazy_free(struct lazy *l)
{
	for (unsigned i = 0; i < l->nw; i++) {
		if (l->w[i].dctx)
			ZSTD_freeDCtx(l->w[i].dctx);
		size_t blk = (size_t)CKPT__BLOCK_PAGES * ckpt__pagesize;
		if (l->w[i].raw)
			ckpt__mem_free(l->w[i].raw, blk);
		if (l->w[i].stored)
			ckpt__mem_free(l->w[i].stored, blk);
	}
	if (l->fd >= 0 && l->own_fd)
		ckpt__raw_close(l->fd);
	ckpt__fill_free(&l->f);
	ckpt__rset_free(&l->ranges);
	if (l->idx)
		ckpt__mem_free(l->idx, l->nidx * sizeof *l->idx);
	if (l->order)
		ckpt__mem_free(l->order, (l->f.ntask + 1) * sizeof *l->order);
	if (l->state)
		ckpt__mem_free(l->state, (l->f.ntask + 1) * sizeof *l->state);
	if (l->pos)
		ckpt__mem_free(l->pos, (l->f.ntask + 1) * sizeof *l->pos);
	if (l->zero)
		ckpt__mem_free(l->zero, ckpt__pagesize);
	if (l->argv)
		ckpt__mem_free(l->argv, l->nptr * sizeof *l->argv);
	if (l->strs)
		ckpt__mem_free(l->strs, l->strs_len);
	if (l->c == &l->kept)
		ckpt__chain_close(&l->kept);
	ckpt__mem_free(l, sizeof *l);
}

/* The index, the tasks in address order and their states. */
static int build(struct lazy *l)
{
	struct ckpt__fill *f = &l->f;
	l->order = ckpt__mem_alloc((f->ntask + 1) * sizeof *l->order);
	l->state = ckpt__mem_alloc((f->ntask + 1) * sizeof *l->state);
	l->pos = ckpt__mem_alloc((f->ntask + 1) * sizeof *l->pos);
	l->zero = ckpt__mem_alloc(ckpt__pagesize);
	if (!l->order || !l->state || !l->pos || !l->zero)
		return CKPT_ENOMEM;
	/* state doubles as "seen" while ordering, then starts at TODO. */
	size_t n = 0;
	for (size_t i = 0; i < l->nidx; i++) {
		uint32_t t = l->idx[i].task;
		if (!l->state[t]) {
			l->state[t] = 1;
			l->pos[t] = (uint32_t)n;
			l->order[n++] = t;
		}
	}
	memset(l->state, 0, (f->ntask + 1) * sizeof *l->state);
	return 0;
}

/* What executing the program again needs, in ckpt's memory: the
 * arguments as the kernel has them, the environment as it is now, plus
 * CKPT_LAZY_OFF=1.  A failure only leaves fatal() without it. */
static void keep_command(struct lazy *l)
{
	static const char off[] = "CKPT_LAZY_OFF=1";
	size_t cap = 256 << 10, n = 0;
	char *buf = ckpt__mem_alloc(cap);
	int fd = (int)ckpt__raw_open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (!buf || fd < 0) {
		if (buf)
			ckpt__mem_free(buf, cap);
		if (fd >= 0)
			ckpt__raw_close(fd);
		return;
	}
	for (long r; n < cap / 2 && (r = ckpt__raw_read(fd, buf + n, cap / 2 - n)) > 0;)
		n += (size_t)r;
	ckpt__raw_close(fd);
	size_t argc = 0;
	for (size_t i = 0; i < n; i++)
		argc += buf[i] == '\0';
	size_t envc = 0;
	for (char **e = environ; e && *e; e++) {
		size_t len = strlen(*e) + 1;
		if (strncmp(*e, "CKPT_LAZY_OFF=", 14) && n + len < cap - sizeof off) {
			memcpy(buf + n, *e, len);
			n += len;
			envc++;
		}
	}
	memcpy(buf + n, off, sizeof off);
	n += sizeof off;
	envc++;
	l->nptr = argc + envc + 2;
	l->argv = ckpt__mem_alloc(l->nptr * sizeof *l->argv);
	if (!l->argv || !argc) {
		if (l->argv)
			ckpt__mem_free(l->argv, l->nptr * sizeof *l->argv);
		l->argv = NULL;
		ckpt__mem_free(buf, cap);
		return;
	}
	size_t k = 0, at = 0;
	for (; k < argc + envc; k++) {
		l->argv[k + (k >= argc)] = buf + at;
		at += strlen(buf + at) + 1;
	}
	l->argv[argc] = NULL;
	l->argv[argc + envc + 1] = NULL;
	l->envp = l->argv + argc + 1;
	l->strs = buf;
	l->strs_len = cap;
}

/* Adds the pieces of [lo, hi) to lz (anonymous private memory of
 * snapshot top, at the base page size) or eg (everything else). */
static int split(const struct ckpt__snap *top, uintptr_t lo, uintptr_t hi, struct ckpt__rset *lz,
		 struct ckpt__rset *eg)
{
	while (lo < hi) {
		const struct ckpt__fmap *m = ckpt__snap_map_at(top, lo);
		uintptr_t e = m && m->end < hi ? m->end : hi;
		if (!m) {
			/* To the next mapping, or the end. */
			size_t j = CKPT__FIRST_ENDING_AFTER(top->maps, top->nmaps, end, lo);
			e = j < top->nmaps && top->maps[j].start < hi ? top->maps[j].start : hi;
			if (e <= lo)
				e = hi;
		}
		int lazy = m && (m->flags & CKPT__MF_ANON) && !(m->flags & CKPT__MF_SHARED) &&
			   (!m->page_shift || m->page_shift == ckpt__pageshift);
		if (ckpt__rset_add(lazy ? lz : eg, lo, e))
			return CKPT_ENOMEM;
		lo = e;
	}
	return 0;
}

/* Why lazily is not an option here, or NULL when it is; *fd, *own, *wp
 * set for the descriptor to use. */
static const char *pick_fd(int *fd, int *own, int *wp, char *buf, size_t len)
{
	int e = ckpt__inject(CKPT__IO_UFFD);
	if (e) {
		snprintf(buf, len, "userfaultfd: %s (CKPT_FAULT)", strerror(e));
		return buf;
	}
	int kernel;
	*fd = ckpt__uffd_lazy_fd(&kernel);
	if (*fd >= 0) {
		*own = 0;
		*wp = 1;
		return kernel ? NULL
			      : "the tracker's userfaultfd takes user-mode faults only "
				"(vm.unprivileged_userfaultfd=0 without privilege)";
	}
	*own = 1;
	*wp = 0;
	*fd = (int)ckpt__sys3(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, 0);
	if (*fd < 0) {
		int err = -*fd;
		*fd = -1;
		snprintf(buf, len, "userfaultfd: %s%s", strerror(err),
			 err == EPERM ? " (vm.unprivileged_userfaultfd=0 without privilege, or a "
					"seccomp filter)"
				      : "");
		return buf;
	}
	struct uffdio_api api = {.api = UFFD_API, .features = 0};
	if (uffd_ioctl(*fd, UFFDIO_API, &api) != 0) {
		ckpt__raw_close(*fd);
		*fd = -1;
		return "userfaultfd: UFFDIO_API refused";
	}
	return NULL;
}

static void release_fill(struct lazy *l)
{
	__atomic_store_n(&ckpt__lazy_on, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&L, NULL, __ATOMIC_SEQ_CST);
	/* No caller of ckpt__lazy_fill_slow may still look at it. */
	while (__atomic_load_n(&users, __ATOMIC_ACQUIRE))
		ckpt__raw_sched_yield();
	lazy_free(l);
}

/* Fills rs now, as without CKPT_F_LAZY. */
static int fill_now(struct ckpt__chain *c, uint64_t id, const struct ckpt__rset *rs,
		    unsigned threads, uint64_t *blocks)
{
	if (!rs->n)
		return 0;
	struct ckpt__fill f;
	int rc = ckpt__fill_plan(&f, c, id, rs);
	if (!rc)
		rc = ckpt__fill_run(&f, threads);
	*blocks += f.ntask;
	ckpt__fill_free(&f);
	return rc;
}

int ckpt__lazy_start(struct ckpt__chain *c, uint64_t id, const struct ckpt__rset *fresh,
		     unsigned threads, uint64_t *blocks)
{
	const struct ckpt__snap *top = ckpt__chain_find(c, id);
	struct ckpt__rset lz = {0}, eg = {0};
	int rc = 0;
	for (size_t i = 0; !rc && top && i < fresh->n; i++)
		rc = split(top, fresh->r[i].lo, fresh->r[i].hi, &lz, &eg);
	if (rc)
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory planning a lazy resume");
	/* What cannot be filled lazily, now. */
	if (!rc)
		rc = fill_now(c, id, &eg, threads, blocks);
	struct lazy *l = NULL;
	char buf[256];
	const char *why = NULL;
	if (!rc && lz.n) {
		l = ckpt__mem_alloc(sizeof *l);
		if (!l)
			rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	}
	if (l) {
		l->fd = -1;
		l->c = c;
		why = pick_fd(&l->fd, &l->own_fd, &l->wp, buf, sizeof buf);
	}
	if (l && !why) {
		rc = ckpt__fill_plan_at(&l->f, c, id, &lz, &l->idx, &l->nidx);
		if (!rc && build(l))
			rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory planning a lazy resume");
	}
	/* Registered for missing pages: from here on a touch waits for a
	 * worker. */
	for (size_t i = 0; l && !why && !rc && i < lz.n; i++) {
		long e = reg_missing(l, lz.r[i].lo, lz.r[i].hi);
		if (e) {
			snprintf(buf, sizeof buf, "userfaultfd cannot register %#lx-%#lx: %s",
				 (unsigned long)lz.r[i].lo, (unsigned long)lz.r[i].hi,
				 strerror((int)-e));
			why = buf;
		} else if (ckpt__rset_add(&l->ranges, lz.r[i].lo, lz.r[i].hi)) {
			rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
		}
	}
	if (l && !why && !rc) {
		keep_command(l);
		size_t blk = (size_t)CKPT__BLOCK_PAGES * ckpt__pagesize;
		unsigned n = threads < 1 ? 1 : threads > MAX_WORKERS ? MAX_WORKERS : threads;
		for (; l->nw < n; l->nw++) {
			struct lworker *w = &l->w[l->nw];
			*w = (struct lworker){.l = l, .dctx = ckpt__zstd_dctx(),
					      .raw = ckpt__mem_alloc(blk),
					      .stored = ckpt__mem_alloc(blk), .server = l->nw == 0};
			if (!w->dctx || !w->raw || !w->stored) {
				l->nw++;
				rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
				break;
			}
		}
		__atomic_store_n(&L, l, __ATOMIC_RELEASE);
		__atomic_store_n(&ckpt__lazy_on, 1, __ATOMIC_RELEASE);
		while (!rc && l->started < l->nw &&
		       ckpt__thread_spawn(&l->th[l->started], work, &l->w[l->started]) == 0)
			l->started++;
		if (!rc && !l->started)
			why = "no thread of ckpt's own could be started";
	}
	if (l && (why || rc)) {
		/* Nothing started (a worker that did is the server, which keeps
		 * it going): the registrations go. */
		__atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
		for (unsigned i = 0; i < l->started; i++)
			ckpt__thread_join(&l->th[i]);
		/* Under the uffd back-end, the tracker's registration as it
		 * was: nothing is written yet, and the fill below writes
		 * everything before the tracker closes it again. */
		for (size_t i = 0; !l->own_fd && i < l->ranges.n; i++) {
			uintptr_t lo = l->ranges.r[i].lo, hi = l->ranges.r[i].hi;
			unregister(l, lo, hi);
			struct uffdio_register r = {.range = {lo, hi - lo},
						    .mode = UFFDIO_REGISTER_MODE_WP};
			struct uffdio_writeprotect wp = {.range = {lo, hi - lo},
							 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
			if (uffd_ioctl(l->fd, UFFDIO_REGISTER, &r) == 0)
				uffd_ioctl(l->fd, UFFDIO_WRITEPROTECT, &wp);
		}
		release_fill(l);
		l = NULL;
	}
	if (!rc && why) {
		fprintf(stderr, "ckpt: CKPT_F_LAZY: %s; the memory is filled before the program "
				"goes on\n",
			why);
		rc = fill_now(c, id, &lz, threads, blocks);
	}
	ckpt__rset_free(&lz);
	ckpt__rset_free(&eg);
	return rc;
}

void ckpt__lazy_adopt_chain(struct ckpt__chain *c)
{
	struct lazy *l = __atomic_load_n(&L, __ATOMIC_ACQUIRE);
	if (!l || l->c != c)
		return;
	l->kept = *c;
	l->c = &l->kept;
	memset(c, 0, sizeof *c);
	c->dirfd = -1;
}

static void join_all(struct lazy *l)
{
	for (unsigned i = 0; i < l->started; i++)
		if (l->th[i].tid)
			ckpt__thread_join(&l->th[i]);
}

/* Stops the workers; the registrations go unless handed over already. */
static void stop(struct lazy *l, int unreg)
{
	__atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
	join_all(l);
	l->started = 0;
	if (unreg && (!l->own_fd || l->fd >= 0))
		for (size_t i = 0; i < l->ranges.n; i++)
			unregister(l, l->ranges.r[i].lo, l->ranges.r[i].hi);
	release_fill(l);
}

void ckpt__lazy_handover(void)
{
	ckpt__lazy_finish();
	if (!__atomic_load_n(&L, __ATOMIC_ACQUIRE))
		return;
	ckpt__mutex_lock(&finish_lock);
	struct lazy *l = __atomic_load_n(&L, __ATOMIC_ACQUIRE);
	if (l) {
		/* Any thread waiting on a missing page is woken by the
		 * unregistering and finds a zero page. */
		if (T)
			pthread_mutex_lock(&T->lock);
		for (size_t i = 0; i < l->ranges.n; i++)
			ckpt__uffd_lazy_unmiss(l->ranges.r[i].lo, l->ranges.r[i].hi);
		if (T) {
			T->marked_closed = 1; /* marked, yet protected again */
			pthread_mutex_unlock(&T->lock);
		}
		stop(l, 0);
	}
	ckpt__mutex_unlock(&finish_lock);
}

void ckpt__lazy_cancel(void)
{
	ckpt__mutex_lock(&finish_lock);
	struct lazy *l = __atomic_load_n(&L, __ATOMIC_ACQUIRE);
	if (l)
		stop(l, 1);
	ckpt__mutex_unlock(&finish_lock);
}

void ckpt__lazy_stop(void)
{
	ckpt__lazy_finish();
	ckpt__lazy_cancel();
}

void ckpt__lazy_finish(void)
{
	struct lazy *l = __atomic_load_n(&L, __ATOMIC_ACQUIRE);
	if (!l || __atomic_load_n(&l->finished, __ATOMIC_ACQUIRE))
		return;
	ckpt__mutex_lock(&finish_lock);
	l = __atomic_load_n(&L, __ATOMIC_ACQUIRE);
	if (l && !l->finished) {
		while (!__atomic_load_n(&l->filled, __ATOMIC_ACQUIRE))
			ckpt__futex_wait(&l->filled, 0);
		/* The helpers have ended (no block left), and so has the
		 * server under the mprotect back-end. */
		for (unsigned i = l->own_fd ? 0 : 1; i < l->started; i++)
			ckpt__thread_join(&l->th[i]);
		/* Every block is read: the chain's files go. */
		if (l->c == &l->kept) {
			ckpt__chain_close(&l->kept);
			l->c = NULL;
		}
		/* Under the mprotect back-end the tracker tells a discard by a
		 * page that was present at the last capture and is not now
		 * (capture.c): the pages filled are present since. */
		if (T && !T->be->sync) {
			pthread_mutex_lock(&T->lock);
			if (T->tab && T->present.dir)
				for (size_t i = 0; i < l->nidx; i++)
					ckpt__bmx_set(&T->present, l->idx[i].addr,
						      l->idx[i].addr + ckpt__pagesize);
			pthread_mutex_unlock(&T->lock);
		}
		__atomic_store_n(&l->finished, 1, __ATOMIC_RELEASE);
		if (l->own_fd) {
			l->started = 0;
			release_fill(l);
		}
	}
	ckpt__mutex_unlock(&finish_lock);
}

void ckpt__lazy_fill_slow(uintptr_t lo, uintptr_t hi)
{
	__atomic_add_fetch(&users, 1, __ATOMIC_SEQ_CST);
	struct lazy *l = __atomic_load_n(&L, __ATOMIC_SEQ_CST);
	if (!l || __atomic_load_n(&l->filled, __ATOMIC_ACQUIRE)) {
		__atomic_sub_fetch(&users, 1, __ATOMIC_RELEASE);
		return;
	}
	lo = ckpt__page_down(lo);
	struct lworker w = {.l = l};
	sigset_t all, old;
	int blocked = 0;
	size_t blk = (size_t)CKPT__BLOCK_PAGES * ckpt__pagesize;
	for (size_t i = lower(l, lo); i < l->nidx && l->idx[i].addr < hi; i++) {
		uint32_t t = l->idx[i].task;
		if (__atomic_load_n(&l->state[t], __ATOMIC_ACQUIRE) == TASK_DONE)
			continue;
		if (!w.dctx) {
			/* A signal handler touching this task while this
			 * thread holds it busy would wait for ever. */
			sigfillset(&all);
			blocked = ckpt__sys6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&all, (long)&old, 8, 0,
					     0) == 0;
			w.dctx = ckpt__zstd_dctx();
			w.raw = ckpt__mem_alloc(blk);
			w.stored = ckpt__mem_alloc(blk);
			if (!w.dctx || !w.raw || !w.stored)
				break; /* the workers and the faults fill it */
		}
		ensure(&w, t);
	}
	if (w.dctx)
		ZSTD_freeDCtx(w.dctx);
	if (w.raw)
		ckpt__mem_free(w.raw, blk);
	if (w.stored)
		ckpt__mem_free(w.stored, blk);
	if (blocked)
		ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8, 0, 0);
	__atomic_sub_fetch(&users, 1, __ATOMIC_RELEASE);
}

/*
 * faultlog.c - the kernel's log of the process's page faults, for resets
 * whose cost follows the pages written.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Under the userfaultfd back-end the record of what was written is in the
 * page tables, and reading it back (PAGEMAP_SCAN) costs a couple of
 * nanoseconds per page-table entry of the tracked memory, whatever was
 * written: 33 µs for 64 MiB, 2 ms for 4 GiB.  But every first write to a
 * protected page is a page fault, and the kernel can log page faults: the
 * software events PERF_COUNT_SW_PAGE_FAULTS_MIN and _MAJ, sampled at every
 * fault with its address (PERF_SAMPLE_ADDR), per CPU, into ring buffers
 * ckpt maps and reads with plain loads.  ckpt_begin (uffd, CKPT_F_SHADOW)
 * opens them for every thread alive, and the threads made later inherit
 * them (inherit_thread: forked children do not).  A fault the kernel takes
 * on the program's behalf (copy_to_user in read(2)) is logged too where
 * the process may profile the kernel (perf_event_paranoid < 2, or
 * CAP_PERFMON); elsewhere it is counted and not logged, which the count
 * check below notices.  The events cost about 0.3 µs per fault.
 *
 * A reset may use the log only when it is sure the log holds everything,
 * so it checks, in this order (ckpt__flog_take):
 *
 * - Faults the log missed.  The kernel counts every completed fault in the
 *   faulting thread's min_flt/maj_flt, and emits the two events from the
 *   same place (mm_account_fault), except for faults taken without user
 *   registers: those of get_user_pages (O_DIRECT, MADV_POPULATE_WRITE,
 *   /proc/self/mem, futexes), which write without a fault the CPU sees.
 *   So the samples read must equal the growth of getrusage's counts since
 *   the log was armed, which also covers threads older than the events and
 *   lost samples.  The ring is read before the counts and the counts were
 *   taken before the ring was emptied at the arm, so that a fault on
 *   either side of a read can only make the counts larger than the samples
 *   (a refusal), never hide a missing sample behind an extra one.
 * - The layout.  The events also log every new mapping (mmap, brk growing,
 *   mprotect: PERF_RECORD_MMAP2 with mmap_data) and every thread made or
 *   ended; any record other than a sample refuses, and so does a lost
 *   one.  munmap, mremap, brk shrinking log nothing: every stretch of
 *   tracked memory (with what lies mapped between its regions) must still
 *   be mapped whole (msync(MS_ASYNC) fails on a hole and does nothing
 *   else), and the sizes /proc/self/statm gives (total and data) must be
 *   those of the arm, which a mapping grown in place changes.  The
 *   program's own calls through libc (munmap, mremap, madvise, mprotect,
 *   ckpt_exclude...) move T->layout_gen.
 * - Contents discarded without a fault.  MADV_DONTNEED makes pages read as
 *   zero and logs nothing.  The program's madvise comes through ckpt
 *   (layout_gen); glibc's own calls are malloc_trim's (interposed below)
 *   and the trimming of the heaps of its other arenas (shrink_heap), which
 *   have a header at an address aligned to 64 MiB (HEAP_MAX_SIZE): such
 *   heaps, found at the arm, are walked at every reset like before.
 *
 * What the log cannot see and the walk could: writes by another process
 * (process_vm_writev, ptrace, /proc/PID/mem); a raw madvise(2) system call
 * discarding tracked memory; a mapping grown in place by mremap (glibc's
 * realloc too) while as much memory ckpt does not track (a library's
 * text, a cached thread stack) is unmapped before the same reset.
 * CKPT_RESET=walk in the environment turns the log off.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "faultlog.h"
#include "interpose.h"
#include "maps.h"
#include "track.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define T ckpt__T

/* Pages of each CPU's ring: 256 KiB, 16384 faults between two resets. */
#define RING_PAGES 64
#define MAX_CPUS   1024
/* Threads alive when the events are opened that get events of their own
 * (the later ones inherit them); with more, every reset walks. */
#define MAX_THREADS 64
#define MAX_EVENTS  4096
/* glibc's HEAP_MAX_SIZE on 64-bit: the alignment of its arenas' heaps. */
#define ARENA_HEAP_MAX ((uintptr_t)64 << 20)

struct ring {
	struct perf_event_mmap_page *h; /* NULL: no event on this CPU */
};

/* In libckpt's data, which is never tracked. */
static struct {
	struct ring cpu[MAX_CPUS];
	unsigned ncpu;
	int fd[MAX_EVENTS];
	unsigned nfd;
	int open;	 /* events open */
	int unavailable; /* could not be opened (in pid): not tried again */
	int armed;
	int planned;		    /* runs and walk describe the layout of the arm */
	uint64_t faults;	    /* minflt + majflt at the arm */
	uint64_t taken;		    /* the count of the last take that passed, or 0 */
	unsigned long vsize, vdata; /* /proc/self/statm at the arm */
	int statm;		    /* its descriptor */
	unsigned long gen;	    /* T->layout_gen at the arm */
	struct ckpt__rset runs;	    /* must stay mapped whole */
	struct ckpt__rset walk;	    /* walked at every reset */
	struct rusage ru;
	char buf[256];
	char why[192]; /* why the log was refused last, for a debugger */
} L = {.statm = -1};

static int perf_open(struct perf_event_attr *a, pid_t tid, unsigned cpu)
{
	return (int)syscall(SYS_perf_event_open, a, tid, (int)cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

static void close_events(void)
{
	size_t bytes = (1 + RING_PAGES) * ckpt__pagesize;
	for (unsigned c = 0; c < L.ncpu; c++) {
		if (L.cpu[c].h)
			munmap(L.cpu[c].h, bytes);
		L.cpu[c].h = NULL;
	}
	for (unsigned i = 0; i < L.nfd; i++)
		close(L.fd[i]);
	if (L.statm >= 0)
		close(L.statm);
	L.statm = -1;
	L.nfd = L.ncpu = 0;
	L.open = L.armed = L.planned = 0;
}

/* Keeps why the log cannot be used: `what`, and `detail` if not NULL. */
static int refuse(const char *what, const char *detail)
{
	snprintf(L.why, sizeof L.why, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
	return -1;
}

/* The threads of the process (up to max), from /proc/self/task, without
 * allocating.  Returns how many, or -1. */
static int list_threads(pid_t *tid, int max)
{
	int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char buf[4096];
	int n = 0;
	long got;
	while ((got = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
		for (long off = 0; off < got;) {
			const char *d = buf + off;
			unsigned short reclen;
			memcpy(&reclen, d + 16, sizeof reclen);
			const char *name = d + 19;
			if (name[0] >= '0' && name[0] <= '9') {
				if (n == max) {
					close(fd);
					return -1;
				}
				tid[n++] = (pid_t)atoi(name);
			}
			off += reclen;
		}
	}
	close(fd);
	return got < 0 ? -1 : n;
}

/* Opens the events of one thread on one CPU: the first of a CPU gets the
 * ring, the others write into it.  0, or -errno. */
static int open_pair(struct perf_event_attr *a, pid_t tid, unsigned c, int *owner)
{
	if (L.nfd + 2 > MAX_EVENTS)
		return -EMFILE;
	int fd = perf_open(a, tid, c);
	if (fd < 0 && (errno == EACCES || errno == EPERM) && !a->exclude_kernel) {
		/* perf_event_paranoid 2 without CAP_PERFMON: the program's own
		 * faults only; the kernel's are counted and not logged, which
		 * refuses (see the top of the file). */
		a->exclude_kernel = 1;
		fd = perf_open(a, tid, c);
	}
	if (fd < 0)
		return -errno;
	L.fd[L.nfd++] = fd;
	if (*owner < 0) {
		size_t bytes = (1 + RING_PAGES) * ckpt__pagesize;
		void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			return -errno;
		L.cpu[c].h = m;
		*owner = fd;
	} else if (ioctl(fd, PERF_EVENT_IOC_SET_OUTPUT, *owner) != 0) {
		return -errno;
	}
	struct perf_event_attr b = *a;
	b.config = PERF_COUNT_SW_PAGE_FAULTS_MAJ;
	b.mmap = b.mmap2 = b.mmap_data = 0;
	fd = perf_open(&b, tid, c);
	if (fd < 0)
		return -errno;
	L.fd[L.nfd++] = fd;
	return ioctl(fd, PERF_EVENT_IOC_SET_OUTPUT, *owner) != 0 ? -errno : 0;
}

/* Sampling events for each thread, CPU and kind of fault, into one ring
 * per CPU; the threads made later inherit them.  0 or -1 (why). */
static int open_events(void)
{
	long n = sysconf(_SC_NPROCESSORS_CONF);
	if (n < 1 || n > MAX_CPUS)
		return refuse(n < 1 ? "no count of CPUs" : "too many CPUs", NULL);
	pid_t tid[MAX_THREADS];
	int nt = list_threads(tid, MAX_THREADS);
	if (nt <= 0)
		return refuse("/proc/self/task",
			      nt < 0 ? "too many threads, or unreadable" : "empty");
	L.statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (L.statm < 0)
		return refuse("/proc/self/statm", strerror(errno));
	struct perf_event_attr a;
	memset(&a, 0, sizeof a);
	a.size = sizeof a;
	a.type = PERF_TYPE_SOFTWARE;
	a.config = PERF_COUNT_SW_PAGE_FAULTS_MIN;
	a.sample_period = 1;
	a.sample_type = PERF_SAMPLE_ADDR;
	a.inherit = 1;
	a.inherit_thread = 1;
	a.exclude_hv = 1;
	/* No wake-ups: nobody polls. */
	a.watermark = 1;
	a.wakeup_watermark = (unsigned)(RING_PAGES * ckpt__pagesize);
	a.mmap = 1;
	a.mmap2 = 1;
	a.mmap_data = 1;
	int any = 0;
	L.ncpu = (unsigned)n;
	for (unsigned c = 0; c < L.ncpu; c++) {
		int owner = -1, e = 0;
		for (int i = 0; !e && i < nt; i++) {
			e = open_pair(&a, tid[i], c, &owner);
			if (e == -ESRCH)
				e = 0; /* a thread that ended meanwhile */
		}
		if (e == -ENODEV && owner < 0)
			continue; /* an offline CPU: its faults would be counted, not logged */
		if (e) {
			close_events();
			return refuse("perf_event_open", strerror(-e));
		}
		any = 1;
	}
	if (!any) {
		close_events();
		return refuse("perf_event_open: no CPU online", NULL);
	}
	L.open = 1;
	return 0;
}

static inline uint64_t ring_word(const struct ring *r, uint64_t off)
{
	const char *data = (const char *)r->h + ckpt__pagesize;
	return *(const uint64_t *)(data + (off & (RING_PAGES * ckpt__pagesize - 1)));
}

/* Empties every ring, calling fn on each sample's address.  Returns the
 * number of samples, or -1 when a record other than a sample was seen (a
 * new mapping, lost samples). */
static long drain(void (*fn)(uintptr_t addr, void *arg), void *arg)
{
	long n = 0;
	int other = 0;
	for (unsigned c = 0; c < L.ncpu; c++) {
		struct ring *r = &L.cpu[c];
		if (!r->h)
			continue;
		uint64_t head = __atomic_load_n(&r->h->data_head, __ATOMIC_ACQUIRE);
		uint64_t tail = r->h->data_tail;
		while (tail < head) {
			uint64_t hw = ring_word(r, tail);
			uint32_t type = (uint32_t)hw;
			uint16_t size = (uint16_t)(hw >> 48);
			if (size < sizeof hw) {
				other = 1;
				break;
			}
			if (type == PERF_RECORD_SAMPLE && size >= 2 * sizeof hw) {
				if (fn)
					fn((uintptr_t)ring_word(r, tail + sizeof hw), arg);
				n++;
			} else {
				other = 1;
			}
			tail += size;
		}
		__atomic_store_n(&r->h->data_tail, head, __ATOMIC_RELEASE);
	}
	return other ? -1 : n;
}

static uint64_t faults_now(void)
{
	/* Written first, so that no fault on it falls inside the call. */
	memset(&L.ru, 0, sizeof L.ru);
	if (getrusage(RUSAGE_SELF, &L.ru) != 0)
		return UINT64_MAX;
	return (uint64_t)L.ru.ru_minflt + (uint64_t)L.ru.ru_majflt;
}

/* The total and data sizes of /proc/self/statm ("size resident shared
 * text lib data dt", in pages).  0 or -1. */
static int statm_read(unsigned long *vsize, unsigned long *vdata)
{
	ssize_t n = pread(L.statm, L.buf, sizeof L.buf - 1, 0);
	if (n <= 0)
		return -1;
	unsigned long f[6] = {0};
	unsigned k = 0;
	for (ssize_t i = 0; i < n && k < 6; i++) {
		char ch = L.buf[i];
		if (ch >= '0' && ch <= '9')
			f[k] = f[k] * 10 + (unsigned long)(ch - '0');
		else if (ch == ' ')
			k++;
		else
			break;
	}
	if (k < 5)
		return -1;
	*vsize = f[0];
	*vdata = f[5];
	return 0;
}

/* Whether [lo, hi) is mapped without a hole, in maps m. */
static int covered(const struct ckpt__maps *m, uintptr_t lo, uintptr_t hi)
{
	long v = ckpt__maps_find(m, lo);
	while (v >= 0 && lo < hi) {
		lo = m->v[v].end;
		v = (size_t)v + 1 < m->n && m->v[v + 1].start == lo ? v + 1 : -1;
	}
	return lo >= hi;
}

/* Whether the words at a look like glibc's heap_info (malloc/arena.c):
 * ar_ptr set, size within what was made writable (mprotect_size), which is
 * within HEAP_MAX_SIZE.  A false match only costs a walk.  Not instrumented:
 * the program's memory, which the sanitizer may hold poisoned. */
static CKPT__FAULTPATH int heap_info_at(uintptr_t a)
{
	const volatile uintptr_t *h = (const volatile uintptr_t *)a;
	uintptr_t ar = h[0], size = h[2], mprotected = h[3];
	return ar && size >= 4 * sizeof(uintptr_t) && size <= mprotected &&
	       mprotected <= ARENA_HEAP_MAX;
}

/* Whether the page at a, in maps m, starts one of glibc's arena heaps. */
static int arena_heap_at(const struct ckpt__maps *m, uintptr_t a)
{
	long v = ckpt__maps_find(m, a);
	return v >= 0 && (m->v[v].perms & CKPT__VMA_R) && heap_info_at(a);
}

static int add(struct ckpt__rset *s, uintptr_t lo, uintptr_t hi)
{
	return ckpt__rset_add(s, lo, hi) ? -1 : 0;
}

/* The stretches that must stay mapped, and the heaps to walk, from the
 * regions and the maps (read just now).  0 or -1. */
static int plan_layout(const struct ckpt__maps *m)
{
	const struct ckpt__rtab *t = T->tab;
	ckpt__rset_free(&L.runs);
	ckpt__rset_free(&L.walk);
	for (size_t i = 0; i < t->n; i++) {
		const struct ckpt__region *r = &t->r[i];
		uintptr_t lo = r->start;
		/* Joined to the stretch before when what lies between is mapped. */
		if (L.runs.n && covered(m, L.runs.r[L.runs.n - 1].hi, r->start))
			lo = L.runs.r[L.runs.n - 1].hi;
		if (add(&L.runs, lo, r->end))
			return -1;
		if (!(r->flags & CKPT__RG_ANON) || (r->flags & CKPT__RG_SHARED) ||
		    !strcmp(r->name, "[heap]"))
			continue;
		if (r->pgshift > ckpt__pageshift) {
			/* glibc.malloc.hugetlb=2: heaps of huge pages, aligned
			 * to four of them; a walk costs an entry per huge page. */
			if (add(&L.walk, r->start, r->end))
				return -1;
			continue;
		}
		uintptr_t a = r->start & ~(ARENA_HEAP_MAX - 1);
		for (; a < r->end; a += ARENA_HEAP_MAX)
			if (arena_heap_at(m, a)) {
				uintptr_t lo2 = a > r->start ? a : r->start;
				uintptr_t hi2 =
				    a + ARENA_HEAP_MAX < r->end ? a + ARENA_HEAP_MAX : r->end;
				if (add(&L.walk, lo2, hi2))
					return -1;
			}
	}
	return 0;
}

static int reset_off(void)
{
	const char *e = getenv("CKPT_RESET");
	return e && !strcmp(e, "walk");
}

/* Set in a forked child, whose events and rings are the parent's. */
static int forked;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_child(void)
{
	forked = 1;
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

void ckpt__flog_open(void)
{
	pthread_once(&atfork_once, register_atfork);
	if (forked) {
		/* Its own, from now on: the parent's are closed here. */
		forked = 0;
		close_events();
		L.unavailable = 0;
	}
	L.armed = 0;
	if (reset_off()) {
		refuse("CKPT_RESET=walk", NULL);
		return;
	}
	if (!L.open && !L.unavailable && open_events() != 0)
		L.unavailable = 1;
}

int ckpt__flog_wanted(void)
{
	return !reset_off() && !L.unavailable;
}

void ckpt__flog_close(void)
{
	close_events();
	forked = 0;
	L.armed = 0;
	L.unavailable = 0;
}

int ckpt__flog_arm(int same_layout)
{
	ckpt__flog_open();
	if (!L.open || !T || !T->tab)
		return -1;
	/* After a reset from the log the layout is the one planned for. */
	if (!same_layout || !L.planned) {
		L.planned = 0;
		if (ckpt__maps_read(&T->maps) != 0 || plan_layout(&T->maps) != 0)
			return refuse("out of memory", NULL);
		L.planned = 1;
	}
	/* Right after a take that passed: its count plus the faults logged
	 * since is at most the count now (equal unless one was not logged),
	 * so that the next take still refuses whenever a fault goes unlogged;
	 * and the sizes are the ones it checked.  Unless the reset itself
	 * mapped something (a record). */
	long d = same_layout && L.taken ? drain(NULL, NULL) : -1;
	if (d >= 0) {
		L.faults = L.taken + (uint64_t)d;
	} else {
		/* The count first, then the ring emptied: see the top of the
		 * file. */
		L.faults = faults_now();
		drain(NULL, NULL);
		if (L.faults == UINT64_MAX || statm_read(&L.vsize, &L.vdata) != 0)
			return refuse("getrusage or /proc/self/statm failed", NULL);
	}
	L.taken = 0;
	L.gen = __atomic_load_n(&T->layout_gen, __ATOMIC_ACQUIRE);
	L.armed = 1;
	return 0;
}

void ckpt__flog_disarm(void)
{
	L.armed = 0;
}

int ckpt__flog_take(void (*fn)(uintptr_t addr, void *arg), void *arg,
		    const struct ckpt__rset **walk)
{
	L.taken = 0;
	if (!L.armed || forked)
		return L.armed = 0;
	L.armed = 0;
	/* The ring before the count: see the top of the file. */
	long n = drain(fn, arg);
	uint64_t f = faults_now();
	if (n < 0)
		return refuse("a mapping changed (or samples were lost)", NULL), 0;
	if (f - L.faults != (uint64_t)n)
		return refuse("faults the log did not see (another thread, or the kernel)", NULL),
		       0;
	if (__atomic_load_n(&T->layout_gen, __ATOMIC_ACQUIRE) != L.gen)
		return refuse("the program changed mappings", NULL), 0;
	unsigned long vsize, vdata;
	if (statm_read(&vsize, &vdata) != 0 || vsize != L.vsize || vdata != L.vdata)
		return refuse("the sizes of the address space changed", NULL), 0;
	for (size_t i = 0; i < L.runs.n; i++)
		if (ckpt__sys3(SYS_msync, (long)L.runs.r[i].lo,
			       (long)(L.runs.r[i].hi - L.runs.r[i].lo), MS_ASYNC) != 0)
			return refuse("tracked memory was unmapped", NULL), 0;
	*walk = &L.walk;
	L.taken = f;
	return 1;
}

/* Whether a page of region r may hold one of glibc's arena heaps, whose
 * start is at `a` (see arena_heap_at): read in place, the region readable. */
static int arena_heap_in(const struct ckpt__region *r, uintptr_t a)
{
	return (r->prot & PROT_READ) && a >= r->start && a < r->end && heap_info_at(a);
}

/* malloc_trim discards the free pages of every arena with madvise inside
 * libc, where no interposer sees it: the heaps count as discarded (dirty,
 * a superset) under either back-end, and the log refuses the next reset. */
CKPT__REAL(int, malloc_trim, (size_t))

CKPT__EXPORT int malloc_trim(size_t pad);
CKPT__EXPORT int malloc_trim(size_t pad)
{
	int rc = get_malloc_trim()(pad);
	if (!ckpt__track_armed())
		return rc;
	int saved = errno;
	struct ckpt__rtab *t = ckpt__rcu_enter();
	for (size_t i = 0; t && i < t->n; i++) {
		const struct ckpt__region *r = &t->r[i];
		int heap = !strcmp(r->name, "[heap]");
		for (uintptr_t a = r->start & ~(ARENA_HEAP_MAX - 1); !heap && a < r->end;
		     a += ARENA_HEAP_MAX)
			heap = (r->flags & CKPT__RG_ANON) && arena_heap_in(r, a);
		if (heap)
			ckpt__track_discard(r->start, r->end);
	}
	ckpt__rcu_exit();
	/* The log refuses even where no region was found. */
	__atomic_fetch_add(&ckpt__T->layout_gen, 1, __ATOMIC_RELEASE);
	errno = saved;
	return rc;
}

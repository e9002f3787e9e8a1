/*
 * bench/track.c - what write tracking costs, back-end against back-end:
 * first writes, arming (ckpt_begin), collecting and re-arming the dirty set.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Four ways of writing the first byte of a page, on the same populated,
 * private, anonymous mapping (the "field"):
 *   untracked  the page is writable: the cost of the store alone;
 *   bare       the page is read-only and a SIGSEGV handler that does nothing
 *              but mprotect() the faulting page writable lets the store
 *              through: the least any mprotect-based tracker can cost, and
 *              the reference both back-ends are held against;
 *   mprotect   the page is protected by ckpt_begin with CKPT_BACKEND_MPROTECT
 *              (mprotect + SIGSEGV): the cost ckpt adds to the bare
 *              mechanism is the ratio mprotect/bare;
 *   uffd       the page is protected by ckpt_begin with CKPT_BACKEND_UFFD
 *              (userfaultfd write-protect, WP_ASYNC): the kernel resolves
 *              the write itself, no signal and no mprotect; uffd/bare is
 *              what that saves.
 * "seq" writes the pages of the field in address order (all of them up to
 * 256 MiB, the first SEQ_MAX_PAGES beyond, where more pages would only
 * repeat the same figure at 4.5 µs a page through the bare handler),
 * "rand" writes min(pages, 16384) distinct pages in a shuffled order: each
 * of those splits a mapping in up to three, and the bare handler cannot go
 * past vm.max_map_count (65530 by default), so every contender gets the
 * same bounded set.
 *
 * Then, for each back-end:
 *   arm       ckpt_begin with nothing written, as ckpt_stats' begin_ns,
 *             per GiB tracked (the whole process' memory), and ckpt_end;
 *   collect   after K first writes (K = 0, 16 and 1% of the field's pages,
 *             random pages), what it costs to learn the dirty set and
 *             protect it again.  The public API does both in ckpt_commit,
 *             whose capture step ckpt_stats reports (commit_capture_ns:
 *             taking the dirty set, re-protecting it and a page-table scan
 *             that tells data pages from zero ones); ckpt_dirty_count
 *             alone collects without re-protecting.  The chain is written
 *             to /dev/shm (else /tmp) so that no disk time comes near the
 *             figures; the directory is removed afterwards.
 *
 * All figures come from one run.  The first-write contenders and the arm
 * figures of both back-ends take turns inside every repetition, so that a
 * noisy machine slows them alike and their ratios stay meaningful; the
 * collect figures come from one chain per back-end, measured one after the
 * other, since a chain is only incremental while its handle keeps
 * tracking.  Each figure is the best of REPS: on a shared machine noise
 * only ever adds time, so the minimum is the closest to what the mechanism
 * itself costs (the median moved by 20% between runs here, the minimum by
 * a few percent).  A capture takes milliseconds and the same capture was
 * seen to take from 16 to 43 ms here, so the collect figures are the best
 * of COLLECT_TURNS times as many.
 *
 * While ckpt tracks, every first write of the process is tracked and every
 * commit stores whatever changed anywhere in it.  So nothing is printed or
 * allocated while a handle tracks, and the figures of a tracked phase are
 * kept on the stack, which ckpt never protects, until ckpt_end.
 *
 * When the kernel cannot do the uffd back-end (ckpt_open says
 * CKPT_ENOTSUP), the reason is printed and the mprotect back-end is
 * measured alone.
 *
 * Usage: track [--quick] [--max-mib N]
 *   (or CKPT_BENCH_QUICK=1, CKPT_BENCH_MAX_MIB=N; the options win)
 * runs the sizes 64 MiB, 256 MiB, 1 GiB and 4 GiB that do not exceed N;
 * --quick runs 16 and 64 MiB with 3 repetitions instead of 5, for CI.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ckpt.h>

#include "bench.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define REPS		5
#define QUICK_REPS	3
#define COLLECT_TURNS	3 /* the collect figures take this many times reps */
#define RAND_MAX_PAGES	16384
#define SEQ_MAX_PAGES	65536
#define DEFAULT_MAX_MIB 4096
#define BAR_UFFD	0.50 /* uffd first write against the bare handler */
#define BAR_MIB		1024 /* the field size the bar is read at */
#define TIE		0.05 /* ratios within 5% of 1 are a tie in the summary */
#define GIB		(1024.0 * 1024 * 1024)
#define LABEL		32 /* "4096 MiB" and the like, with room for any size_t */

enum pattern { PAT_SEQ, PAT_RAND, NPAT };
enum how { HOW_UNTRACKED, HOW_BARE, HOW_MPROTECT, HOW_UFFD, NHOW };
enum backend { BE_MPROTECT, BE_UFFD, NBE };
enum dirty { K_ZERO, K_16, K_PCT, NK };

static const char *const pattern_name[NPAT] = {"seq", "rand"};
static const char *const be_name[NBE] = {"mprotect", "uffd"};
static const int be_id[NBE] = {CKPT_BACKEND_MPROTECT, CKPT_BACKEND_UFFD};
static const enum how be_how[NBE] = {HOW_MPROTECT, HOW_UFFD};
static const size_t size_mib[] = {64, 256, 1024, 4096};
static const size_t quick_mib[] = {16, 64};
#define NSIZES (sizeof size_mib / sizeof size_mib[0])

/* Collecting after K writes, best of reps. */
struct collect_fig {
	size_t k;
	double count_ms;      /* ckpt_dirty_count */
	double capture_ms;    /* ckpt_stats commit_capture_ns */
	size_t seen_min;      /* the least ckpt_dirty_count returned */
	uint64_t stored_min;  /* the fewest pages a commit stored */
	uint64_t stored_max;  /* and the most */
};

/* The figures of one field size. */
struct size_result {
	size_t mib;
	size_t npages;
	size_t nwritten[NPAT];	     /* pages written per pattern */
	double first_ns[NPAT][NHOW]; /* ns per page, best of reps */
	size_t tracked_pages[NBE];   /* as ckpt_stats reports after begin */
	double begin_ms[NBE];	     /* ckpt_stats begin_ns, nothing written */
	double end_ms[NBE];	     /* ckpt_end right after, wall clock */
	size_t chain_tracked[NBE];   /* tracked pages of the collect chain */
	double base_ms[NBE];	     /* the base commit of that chain, for scale */
	struct collect_fig col[NBE][NK];
};

static size_t pagesz;
static int reps = REPS;
static int have[NBE];			/* the back-end can be measured here */
static char no_uffd_why[512];		/* why not, when it cannot */
static char chain_parent[16] = "/tmp"; /* /dev/shm when there is one */
static char chain_dir[64];		/* the chain being measured, "" if none */

/*
 * libckpt defines sigaction() and mprotect() itself.  Once its SIGSEGV
 * handler is installed (at the first ckpt_begin) it stays installed, and a
 * program's sigaction(SIGSEGV) only records the handler ckpt chains to; the
 * bare baseline would then time ckpt's dispatcher plus a chained call.  The
 * baseline calls libc's own definitions instead, so it installs its handler
 * in the kernel and times nothing but the mechanism.
 */
typedef int sigaction_fn(int, const struct sigaction *, struct sigaction *);
typedef int mprotect_fn(void *, size_t, int);
static sigaction_fn *libc_sigaction;
static mprotect_fn *libc_mprotect;

static void die(const char *what, const char *why)
{
	fprintf(stderr, "track: %s: %s\n", what, why);
	exit(1);
}

static void die_ckpt(const char *what, int rc)
{
	fprintf(stderr, "track: %s: %s (%s): %s\n", what, ckpt_strerror(rc), ckpt_err_name(rc),
		ckpt_last_error());
	exit(1);
}

static double best(const double *v, int n)
{
	double m = v[0];
	for (int i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

static double per_gib(double ms, size_t pages)
{
	return ms / ((double)pages * (double)pagesz / GIB);
}

/* "64 MiB", "1 GiB". */
static const char *size_label(size_t mib, char *buf, size_t len)
{
	if (mib >= 1024 && mib % 1024 == 0)
		snprintf(buf, len, "%zu GiB", mib / 1024);
	else
		snprintf(buf, len, "%zu MiB", mib);
	return buf;
}

/* xorshift64: a fixed seed gives every run the same order of pages. */

/* The first n entries of a random permutation of 0..npages-1: n distinct
 * pages in random order (a partial Fisher-Yates shuffle). */
static size_t *shuffled_pages(size_t npages, size_t n)
{
	size_t *idx = malloc(npages * sizeof *idx);
	if (!idx)
		die("malloc", strerror(errno));
	for (size_t i = 0; i < npages; i++)
		idx[i] = i;
	uint64_t seed = 0x9e3779b97f4a7c15u;
	for (size_t i = 0; i < n; i++) {
		size_t j = i + (size_t)(xorshift64(&seed) % (npages - i));
		size_t t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
	return idx;
}

/*
 * The timed loop, the same for every contender: one byte written per page,
 * through a volatile pointer so the compiler keeps every store.  It reads
 * only memory that exists before the timing starts, and writes nothing but
 * the field and registers or the stack, which ckpt never protects.
 */
static uint64_t write_pages(char *base, const size_t *idx, size_t n)
{
	volatile char *p = base;
	size_t ps = pagesz;
	uint64_t t0 = now_ns();
	if (idx) {
		for (size_t i = 0; i < n; i++)
			p[idx[i] * ps] = (char)i;
	} else {
		for (size_t i = 0; i < n; i++)
			p[i * ps] = (char)i;
	}
	return now_ns() - t0;
}

static void *page_of(void *addr)
{
	return (void *)((uintptr_t)addr & ~(uintptr_t)(pagesz - 1));
}

static void bare_on_segv(int sig, siginfo_t *si, void *uc)
{
	static const char msg[] = "track: mprotect failed in the bare SIGSEGV handler\n";
	(void)sig;
	(void)uc;
	if (libc_mprotect(page_of(si->si_addr), pagesz, PROT_READ | PROT_WRITE) != 0) {
		/* Returning would fault again forever. */
		(void)!write(2, msg, sizeof msg - 1);
		_exit(2);
	}
}

static void resolve_libc(void)
{
	void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
	if (!libc)
		die("dlopen libc.so.6", dlerror());
	libc_sigaction = (sigaction_fn *)dlsym(libc, "sigaction");
	libc_mprotect = (mprotect_fn *)dlsym(libc, "mprotect");
	if (!libc_sigaction || !libc_mprotect)
		die("dlsym in libc.so.6", dlerror());
}

/* ---- chains ------------------------------------------------------------------------------ */

/* Removes the chain directory and whatever is in it (also at exit, when
 * a measurement died half-way). */
static void remove_chain_dir(void)
{
	if (!chain_dir[0])
		return;
	DIR *d = opendir(chain_dir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
			    unlinkat(dirfd(d), e->d_name, 0) != 0)
				fprintf(stderr, "track: %s/%s: %s\n", chain_dir, e->d_name,
					strerror(errno));
		}
		closedir(d);
	}
	if (rmdir(chain_dir) != 0)
		fprintf(stderr, "track: %s: %s\n", chain_dir, strerror(errno));
	chain_dir[0] = '\0';
}

/* A fresh, empty chain directory in tmpfs when there is one: a commit
 * fsyncs its file and the directory, and disk time is not what the
 * collect figures are about. */
static void pick_chain_parent(void)
{
	struct stat st;
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
		snprintf(chain_parent, sizeof chain_parent, "/dev/shm");
}

static void make_chain_dir(void)
{
	snprintf(chain_dir, sizeof chain_dir, "%s/ckpt-bench-track-XXXXXX", chain_parent);
	if (!mkdtemp(chain_dir)) {
		int e = errno;
		char what[80];
		snprintf(what, sizeof what, "mkdtemp %s", chain_dir);
		chain_dir[0] = '\0';
		die(what, strerror(e));
	}
}

static ckpt_t *open_handle(int be, const char *dir)
{
	ckpt_options opt;
	ckpt_options_init(&opt);
	opt.backend = be_id[be];
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &opt);
	if (rc)
		die_ckpt("ckpt_open", rc);
	return c;
}

static void get_stats(ckpt_t *c, ckpt_stats *s)
{
	int rc = ckpt_stats(c, s);
	if (rc)
		die_ckpt("ckpt_stats", rc);
}

/* ---- first writes ------------------------------------------------------------------------ */

static double time_untracked(char *base, const size_t *idx, size_t n)
{
	return (double)write_pages(base, idx, n) / (double)n;
}

static double time_bare(char *base, size_t bytes, const size_t *idx, size_t n)
{
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = bare_on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (libc_mprotect(base, bytes, PROT_READ) != 0)
		die("mprotect PROT_READ", strerror(errno));
	if (libc_sigaction(SIGSEGV, &sa, &old) != 0)
		die("sigaction SIGSEGV", strerror(errno));
	uint64_t ns = write_pages(base, idx, n);
	if (libc_sigaction(SIGSEGV, &old, NULL) != 0)
		die("sigaction SIGSEGV", strerror(errno));
	/* The pages not written are still read-only; this also merges the
	 * mapping back into one for the next contender. */
	if (libc_mprotect(base, bytes, PROT_READ | PROT_WRITE) != 0)
		die("mprotect PROT_READ|PROT_WRITE", strerror(errno));
	return (double)ns / (double)n;
}

/* Times the writes of one tracked epoch of back-end be. */
static double time_ckpt(ckpt_t *c, int be, char *base, const size_t *idx, size_t n)
{
	int rc = ckpt_begin(c);
	if (rc)
		die_ckpt("ckpt_begin", rc);
	uint64_t ns = write_pages(base, idx, n);
	rc = ckpt_end(c);
	if (rc)
		die_ckpt("ckpt_end", rc);

	/* Tracking is over: printing is allowed again. */
	ckpt_stats s;
	get_stats(c, &s);
	if (s.backend != be_id[be])
		printf("warning: asked for the %s back-end, ckpt_stats says back-end %d\n",
		       be_name[be], s.backend);
	if (s.faults < n || s.dirty_pages < n)
		printf("warning: %s: %zu pages written but ckpt saw %llu first writes and %zu dirty "
		       "pages\n",
		       be_name[be], n, (unsigned long long)s.faults, s.dirty_pages);
	if (s.fallbacks)
		printf("warning: %s: %llu VMA-limit fallbacks (%llu pages) while writing %zu pages\n",
		       be_name[be], (unsigned long long)s.fallbacks,
		       (unsigned long long)s.fallback_pages, n);
	return (double)ns / (double)n;
}

/* A populated field: every page is present before anything is timed, so
 * the figures hold no page-fault-on-first-touch cost. */
static char *map_field(size_t bytes)
{
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap", strerror(errno));
	/* Transparent huge pages would make the first fault of every 2 MiB
	 * pay for splitting the huge page and would spare the untracked writes
	 * their TLB misses, both depending on the host's THP setting: the
	 * field is kept to base pages, the unit that is tracked. */
	madvise(p, bytes, MADV_NOHUGEPAGE);
	memset(p, 0x5a, bytes);
	return p;
}

static void print_first_row(const struct size_result *r, int pat)
{
	const double *f = r->first_ns[pat];
	char lab[LABEL];
	printf("%8s  %-4s  %7zu  %9.1f  %9.1f  %9.1f", size_label(r->mib, lab, sizeof lab),
	       pattern_name[pat], r->nwritten[pat], f[HOW_UNTRACKED], f[HOW_BARE],
	       f[HOW_MPROTECT]);
	if (have[BE_UFFD])
		printf("  %9.1f", f[HOW_UFFD]);
	else
		printf("  %9s", "-");
	printf("  %9.2f", f[HOW_MPROTECT] / f[HOW_BARE]);
	if (have[BE_UFFD])
		printf("  %9.3f  %9.2f\n", f[HOW_UFFD] / f[HOW_BARE], f[HOW_MPROTECT] / f[HOW_UFFD]);
	else
		printf("  %9s  %9s\n", "-", "-");
}

static void run_first_writes(ckpt_t *const h[NBE], char *base, size_t bytes, const size_t *idx,
			     struct size_result *r)
{
	for (int pat = 0; pat < NPAT; pat++) {
		const size_t *order = pat == PAT_RAND ? idx : NULL;
		size_t n = r->npages;
		if (pat == PAT_RAND && n > RAND_MAX_PAGES)
			n = RAND_MAX_PAGES;
		if (pat == PAT_SEQ && n > SEQ_MAX_PAGES)
			n = SEQ_MAX_PAGES;
		r->nwritten[pat] = n;
		double v[NHOW][REPS];
		/* The contenders take turns within a repetition, so that
		 * whatever else the machine does hits them alike. */
		for (int rep = 0; rep < reps; rep++) {
			v[HOW_UNTRACKED][rep] = time_untracked(base, order, n);
			v[HOW_BARE][rep] = time_bare(base, bytes, order, n);
			for (int be = 0; be < NBE; be++)
				v[be_how[be]][rep] =
				    have[be] ? time_ckpt(h[be], be, base, order, n) : 0.0;
		}
		for (int how = 0; how < NHOW; how++)
			r->first_ns[pat][how] = best(v[how], reps);
		print_first_row(r, pat);
		fflush(stdout);
	}
}

/* ---- arming ------------------------------------------------------------------------------ */

static void run_begin_end(ckpt_t *const h[NBE], struct size_result *r)
{
	double b[NBE][REPS], e[NBE][REPS];
	for (int rep = 0; rep < reps; rep++) {
		for (int be = 0; be < NBE; be++) {
			if (!have[be])
				continue;
			int rc = ckpt_begin(h[be]);
			if (rc)
				die_ckpt("ckpt_begin", rc);
			uint64_t t0 = now_ns();
			rc = ckpt_end(h[be]);
			uint64_t t1 = now_ns();
			if (rc)
				die_ckpt("ckpt_end", rc);
			ckpt_stats s;
			get_stats(h[be], &s);
			b[be][rep] = (double)s.begin_ns / 1e6;
			e[be][rep] = (double)(t1 - t0) / 1e6;
			r->tracked_pages[be] = s.tracked_pages;
		}
	}
	for (int be = 0; be < NBE; be++) {
		if (!have[be])
			continue;
		r->begin_ms[be] = best(b[be], reps);
		r->end_ms[be] = best(e[be], reps);
	}
}

/* ---- collecting and re-arming ------------------------------------------------------------ */

/* What one repetition of a tracked phase records: plain values on the
 * stack, nothing else is written while the handle tracks. */
struct collect_rep {
	uint64_t count_ns, capture_ns, stored;
	size_t seen;
};

/*
 * One chain of back-end be on the field: a base commit (untimed, for scale
 * only: the first commit of a chain stores every page), then, creps times,
 * for every K: K random first writes, then ckpt_dirty_count and
 * ckpt_commit, each of which collects the dirty set, the commit also
 * re-protecting it.  The same K pages are written every time: a commit
 * protects them again.
 */
static void run_collect(int be, char *base, const size_t *idx, size_t nidx,
			struct size_result *r)
{
	make_chain_dir();
	ckpt_t *c = open_handle(be, chain_dir);
	size_t k[NK] = {0, 16, r->npages / 100};
	for (int i = 0; i < NK; i++)
		if (k[i] > nidx)
			k[i] = nidx;
	int creps = COLLECT_TURNS * reps;
	struct collect_rep rec[NK][COLLECT_TURNS * REPS];
	ckpt_stats s;
	fflush(stdout);

	int rc = ckpt_begin(c);
	if (rc)
		die_ckpt("ckpt_begin", rc);
	rc = ckpt_commit(c, NULL);
	if (rc)
		die_ckpt("ckpt_commit (base)", rc);
	get_stats(c, &s);
	uint64_t base_ns = s.commit_pause_ns;
	size_t tracked = s.tracked_pages;
	/* The values of K take turns within a repetition, as the
	 * contenders of the first writes do. */
	for (int rep = 0; rep < creps; rep++) {
		for (int i = 0; i < NK; i++) {
			struct collect_rep *x = &rec[i][rep];
			write_pages(base, idx, k[i]);
			uint64_t t0 = now_ns();
			x->seen = ckpt_dirty_count(c);
			x->count_ns = now_ns() - t0;
			rc = ckpt_commit(c, NULL);
			if (rc)
				die_ckpt("ckpt_commit", rc);
			get_stats(c, &s);
			x->capture_ns = s.commit_capture_ns;
			x->stored = s.commit_pages;
		}
	}
	rc = ckpt_end(c);
	if (rc)
		die_ckpt("ckpt_end", rc);
	ckpt_close(c);
	remove_chain_dir();

	/* Tracking is over: the figures go to the heap. */
	r->chain_tracked[be] = tracked;
	r->base_ms[be] = (double)base_ns / 1e6;
	for (int i = 0; i < NK; i++) {
		struct collect_fig *f = &r->col[be][i];
		double cnt[COLLECT_TURNS * REPS], cap[COLLECT_TURNS * REPS];
		f->k = k[i];
		f->seen_min = SIZE_MAX;
		f->stored_min = UINT64_MAX;
		f->stored_max = 0;
		for (int rep = 0; rep < creps; rep++) {
			const struct collect_rep *x = &rec[i][rep];
			cnt[rep] = (double)x->count_ns / 1e6;
			cap[rep] = (double)x->capture_ns / 1e6;
			if (x->seen < f->seen_min)
				f->seen_min = x->seen;
			if (x->stored < f->stored_min)
				f->stored_min = x->stored;
			if (x->stored > f->stored_max)
				f->stored_max = x->stored;
		}
		f->count_ms = best(cnt, creps);
		f->capture_ms = best(cap, creps);
		if (f->seen_min < f->k || f->stored_min < f->k)
			printf("warning: %s, %zu MiB: %zu pages written but ckpt_dirty_count said %zu "
			       "and a commit stored %llu\n",
			       be_name[be], r->mib, f->k, f->seen_min,
			       (unsigned long long)f->stored_min);
	}
}

/* ---- the report -------------------------------------------------------------------------- */

static void print_arm(const struct size_result *res, size_t nsizes)
{
	printf("\n2. Arming: ckpt_begin (ckpt_stats begin_ns) and ckpt_end with nothing written,"
	       " per GiB tracked\n");
	printf("%8s  %-8s  %10s  %9s  %9s  %9s  %9s  %12s\n", "field", "back-end", "tracked",
	       "begin ms", "begin/GiB", "end ms", "end/GiB", "begin/mprot");
	for (size_t i = 0; i < nsizes; i++) {
		const struct size_result *r = &res[i];
		char lab[LABEL];
		for (int be = 0; be < NBE; be++) {
			if (!have[be])
				continue;
			double mib = (double)r->tracked_pages[be] * (double)pagesz / (1024.0 * 1024);
			printf("%8s  %-8s  %6.0f MiB  %9.2f  %9.2f  %9.2f  %9.2f",
			       size_label(r->mib, lab, sizeof lab), be_name[be], mib, r->begin_ms[be],
			       per_gib(r->begin_ms[be], r->tracked_pages[be]), r->end_ms[be],
			       per_gib(r->end_ms[be], r->tracked_pages[be]));
			if (be != BE_MPROTECT)
				printf("  %12.2f", r->begin_ms[be] / r->begin_ms[BE_MPROTECT]);
			printf("\n");
		}
	}
}

static void print_collect(const struct size_result *res, size_t nsizes)
{
	printf("\n3. Collecting the dirty set after K random first writes, best of %d (chains in %s)\n",
	       COLLECT_TURNS * reps, chain_parent);
	printf("   count   = ckpt_dirty_count: collect only, nothing re-protected\n"
	       "   capture = ckpt_commit's capture step (commit_capture_ns): collect, re-protect,"
	       " page-table scan\n"
	       "   us/page = capture / K; marginal = (capture at K - capture at K=0) / K, on the"
	       " 1%% lines\n"
	       "   (at K=16 that difference is far below the noise of a capture)\n");
	printf("%8s  %-8s  %6s  %9s  %9s  %10s  %11s  %9s  %9s\n", "field", "back-end", "K",
	       "count ms", "count/GiB", "capture ms", "capture/GiB", "us/page", "marginal");
	uint64_t extra_min = UINT64_MAX, extra_max = 0;
	for (size_t i = 0; i < nsizes; i++) {
		const struct size_result *r = &res[i];
		char lab[LABEL];
		for (int be = 0; be < NBE; be++) {
			if (!have[be])
				continue;
			size_t tp = r->chain_tracked[be];
			for (int j = 0; j < NK; j++) {
				const struct collect_fig *f = &r->col[be][j];
				printf("%8s  %-8s  %6zu  %9.3f  %9.3f  %10.3f  %11.3f",
				       size_label(r->mib, lab, sizeof lab), be_name[be], f->k,
				       f->count_ms, per_gib(f->count_ms, tp), f->capture_ms,
				       per_gib(f->capture_ms, tp));
				if (f->k)
					printf("  %9.2f", f->capture_ms * 1e3 / (double)f->k);
				else
					printf("  %9s", "-");
				if (j == K_PCT && f->k) {
					double m = f->capture_ms - r->col[be][K_ZERO].capture_ms;
					printf("  %9.2f\n", m * 1e3 / (double)f->k);
				} else {
					printf("  %9s\n", "-");
				}
				if (f->stored_min >= f->k && f->stored_min - f->k < extra_min)
					extra_min = f->stored_min - f->k;
				if (f->stored_max >= f->k && f->stored_max - f->k > extra_max)
					extra_max = f->stored_max - f->k;
			}
		}
	}
	if (extra_min != UINT64_MAX)
		printf("(each increment also stored %llu to %llu pages outside the K written: "
		       "pinned memory, saved whole every time)\n",
		       (unsigned long long)extra_min, (unsigned long long)extra_max);
	printf("base commits, for scale (not timed above):");
	for (size_t i = 0; i < nsizes; i++) {
		char lab[LABEL];
		printf(" %s", size_label(res[i].mib, lab, sizeof lab));
		for (int be = 0; be < NBE; be++)
			if (have[be])
				printf(" %s %.0f ms%s", be_name[be], res[i].base_ms[be],
				       be + 1 < NBE && have[be + 1] ? "," : "");
		printf("%s", i + 1 < nsizes ? ";" : "\n");
	}
}

/* A figure of a size for one back-end, for the summary: lower is better. */
typedef double metric_fn(const struct size_result *r, int be);

static double m_first_seq(const struct size_result *r, int be)
{
	return r->first_ns[PAT_SEQ][be_how[be]];
}
static double m_first_rand(const struct size_result *r, int be)
{
	return r->first_ns[PAT_RAND][be_how[be]];
}
static double m_begin(const struct size_result *r, int be)
{
	return per_gib(r->begin_ms[be], r->tracked_pages[be]);
}
static double m_end(const struct size_result *r, int be)
{
	return per_gib(r->end_ms[be], r->tracked_pages[be]);
}
static double m_count0(const struct size_result *r, int be)
{
	return r->col[be][K_ZERO].count_ms;
}
static double m_count_pct(const struct size_result *r, int be)
{
	return r->col[be][K_PCT].count_ms;
}
static double m_capture0(const struct size_result *r, int be)
{
	return r->col[be][K_ZERO].capture_ms;
}
static double m_capture16(const struct size_result *r, int be)
{
	return r->col[be][K_16].capture_ms;
}
static double m_capture_pct(const struct size_result *r, int be)
{
	return r->col[be][K_PCT].capture_ms;
}

static const struct {
	const char *name;
	metric_fn *fn;
} metrics[] = {
	{"first write, seq", m_first_seq},
	{"first write, rand", m_first_rand},
	{"arm (ckpt_begin)", m_begin},
	{"ckpt_end, clean", m_end},
	{"dirty_count, K=0", m_count0},
	{"dirty_count, K=1%", m_count_pct},
	{"capture, K=0", m_capture0},
	{"capture, K=16", m_capture16},
	{"capture, K=1%", m_capture_pct},
};
#define NMETRICS (sizeof metrics / sizeof metrics[0])

static void print_summary(const struct size_result *res, size_t nsizes)
{
	char lab[LABEL];
	printf("\n4. Summary: time with mprotect / time with uffd (> 1: uffd is faster)\n");
	printf("%-18s", "");
	for (size_t i = 0; i < nsizes; i++)
		printf("  %8s", size_label(res[i].mib, lab, sizeof lab));
	printf("  %s\n", "wins");
	for (size_t m = 0; m < NMETRICS; m++) {
		printf("%-18s", metrics[m].name);
		unsigned uffd = 0, mprot = 0;
		for (size_t i = 0; i < nsizes; i++) {
			double ratio = metrics[m].fn(&res[i], BE_MPROTECT) /
				       metrics[m].fn(&res[i], BE_UFFD);
			printf("  %8.2f", ratio);
			if (ratio > 1 + TIE)
				uffd |= 1u << i;
			else if (ratio < 1 - TIE)
				mprot |= 1u << i;
		}
		unsigned all = (1u << nsizes) - 1;
		if (uffd == all)
			printf("  uffd\n");
		else if (mprot == all)
			printf("  mprotect\n");
		else if (!uffd && !mprot)
			printf("  tie\n");
		else {
			/* Name the sizes each one wins, and the ties. */
			const char *const who[3] = {"uffd", "mprotect", "tie"};
			unsigned set[3] = {uffd, mprot, all & ~(uffd | mprot)};
			const char *sep = "  ";
			for (int w = 0; w < 3; w++) {
				if (!set[w])
					continue;
				printf("%s%s at", sep, who[w]);
				for (size_t i = 0; i < nsizes; i++)
					if (set[w] & (1u << i))
						printf(" %s", size_label(res[i].mib, lab, sizeof lab));
				sep = ", ";
			}
			printf("\n");
		}
	}
	printf("(ties: within %.0f%%)\n", TIE * 100);
}

static void print_bar(const struct size_result *res, size_t nsizes)
{
	/* The bar is read at 1 GiB, sequential; a capped run reports its
	 * largest field. */
	const struct size_result *bar = &res[nsizes - 1];
	for (size_t i = 0; i < nsizes; i++)
		if (res[i].mib == BAR_MIB)
			bar = &res[i];
	char lab[LABEL];
	printf("\nmprotect first write / bare handler: %.2f  (seq, %s)\n",
	       bar->first_ns[PAT_SEQ][HOW_MPROTECT] / bar->first_ns[PAT_SEQ][HOW_BARE],
	       size_label(bar->mib, lab, sizeof lab));
	if (!have[BE_UFFD]) {
		printf("uffd first write / bare handler: n/a (bar <= %.2f): %s\n", BAR_UFFD,
		       no_uffd_why);
		return;
	}
	double ratio = bar->first_ns[PAT_SEQ][HOW_UFFD] / bar->first_ns[PAT_SEQ][HOW_BARE];
	double worst = 0;
	const struct size_result *wr = bar;
	int wp = PAT_SEQ;
	for (size_t i = 0; i < nsizes; i++)
		for (int pat = 0; pat < NPAT; pat++) {
			double x = res[i].first_ns[pat][HOW_UFFD] / res[i].first_ns[pat][HOW_BARE];
			if (x > worst) {
				worst = x;
				wr = &res[i];
				wp = pat;
			}
		}
	printf("uffd first write / bare handler: %.2f (bar <= %.2f)%s  (seq, %s;",
	       ratio, BAR_UFFD, ratio <= BAR_UFFD ? "" : "  ABOVE THE BAR",
	       size_label(bar->mib, lab, sizeof lab));
	printf(" worst line %.2f, %s %s)\n", worst, pattern_name[wp],
	       size_label(wr->mib, lab, sizeof lab));
}

/* ---- options ----------------------------------------------------------------------------- */

static size_t parse_mib(const char *s, const char *where)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0 || v > SIZE_MAX / (1024 * 1024)) {
		fprintf(stderr, "track: %s: expected a positive number of MiB, got \"%s\"\n", where,
			s);
		exit(2);
	}
	return (size_t)v;
}

static void usage(const char *argv0, int rc)
{
	fprintf(rc ? stderr : stdout,
		"usage: %s [--quick] [--max-mib N]   (or CKPT_BENCH_QUICK=1, CKPT_BENCH_MAX_MIB=N)\n"
		"runs the field sizes 64, 256, 1024, 4096 MiB up to N (default %d);\n"
		"--quick runs 16 and 64 MiB, %d repetitions instead of %d\n",
		argv0, DEFAULT_MAX_MIB, QUICK_REPS, REPS);
	exit(rc);
}

static void parse_options(int argc, char **argv, size_t *max_mib, int *quick)
{
	*max_mib = DEFAULT_MAX_MIB;
	const char *env = getenv("CKPT_BENCH_MAX_MIB");
	if (env && *env)
		*max_mib = parse_mib(env, "CKPT_BENCH_MAX_MIB");
	*quick = quick_from_env();
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--max-mib") && i + 1 < argc)
			*max_mib = parse_mib(argv[++i], "--max-mib");
		else if (!strncmp(argv[i], "--max-mib=", 10))
			*max_mib = parse_mib(argv[i] + 10, "--max-mib");
		else if (!strcmp(argv[i], "--quick"))
			*quick = 1;
		else
			usage(argv[0], strcmp(argv[i], "--help") ? 2 : 0);
	}
}

/* ---- main -------------------------------------------------------------------------------- */

/* Opens a tracking-only handle per back-end and takes each through one
 * begin and end, which installs its mechanism and tests it once: that
 * one-time cost is kept out of the figures and printed here. */
static void open_handles(ckpt_t *h[NBE], double first_begin_ms[NBE])
{
	for (int be = 0; be < NBE; be++) {
		h[be] = NULL;
		ckpt_options opt;
		ckpt_options_init(&opt);
		opt.backend = be_id[be];
		int rc = ckpt_open(&h[be], NULL, &opt);
		if (rc == CKPT_ENOTSUP && be == BE_UFFD) {
			snprintf(no_uffd_why, sizeof no_uffd_why, "%s", ckpt_last_error());
			continue;
		}
		if (rc)
			die_ckpt("ckpt_open", rc);
		uint64_t t0 = now_ns();
		rc = ckpt_begin(h[be]);
		first_begin_ms[be] = (double)(now_ns() - t0) / 1e6;
		if (rc)
			die_ckpt("ckpt_begin", rc);
		rc = ckpt_end(h[be]);
		if (rc)
			die_ckpt("ckpt_end", rc);
		have[be] = 1;
	}
}

int main(int argc, char **argv)
{
	uint64_t start = now_ns();
	size_t max_mib;
	int quick;
	parse_options(argc, argv, &max_mib, &quick);
	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	resolve_libc();
	pick_chain_parent();
	atexit(remove_chain_dir);

	/* The sizes to run; a cap below the smallest runs the cap itself. */
	const size_t *list = quick ? quick_mib : size_mib;
	size_t nlist = quick ? sizeof quick_mib / sizeof quick_mib[0] : NSIZES;
	if (quick)
		reps = QUICK_REPS;
	size_t sizes[NSIZES], nsizes = 0;
	for (size_t i = 0; i < nlist; i++)
		if (list[i] <= max_mib)
			sizes[nsizes++] = list[i];
	if (!nsizes)
		sizes[nsizes++] = max_mib;
	struct size_result *res = calloc(nsizes, sizeof *res);
	if (!res)
		die("calloc", strerror(errno));

	ckpt_t *h[NBE];
	double first_begin_ms[NBE] = {0};
	open_handles(h, first_begin_ms);

	struct utsname u;
	if (uname(&u) != 0)
		snprintf(u.release, sizeof u.release, "?");
	printf("libckpt %s, Linux %s, page %zu B, %ld CPUs online, best of %d runs%s\n",
	       ckpt_version_string(), u.release, pagesz, sysconf(_SC_NPROCESSORS_ONLN), reps,
	       quick ? " (quick)" : "");
	printf("first ckpt_begin of the process (installs the mechanism):");
	for (int be = 0; be < NBE; be++)
		if (have[be])
			printf(" %s %.2f ms%s", be_name[be], first_begin_ms[be],
			       be + 1 < NBE && have[be + 1] ? "," : "");
	printf("\n");
	if (!have[BE_UFFD])
		printf("uffd back-end not available, measuring mprotect only: %s\n", no_uffd_why);
	printf("\n1. First write to a populated page, ns/page\n");
	printf("%8s  %-4s  %7s  %9s  %9s  %9s  %9s  %10s  %9s  %10s\n", "field", "pat", "pages",
	       "untracked", "bare", "mprotect", "uffd", "mprot/bare", "uffd/bare", "mprot/uffd");
	fflush(stdout);

	for (size_t i = 0; i < nsizes; i++) {
		struct size_result *r = &res[i];
		size_t bytes = sizes[i] * 1024 * 1024;
		r->mib = sizes[i];
		r->npages = bytes / pagesz;
		size_t nrand = r->npages < RAND_MAX_PAGES ? r->npages : RAND_MAX_PAGES;
		/* Allocated before anything is tracked: while ckpt tracks,
		 * memory allocated since counts as dirty and writes to older
		 * memory fault, and neither belongs in the timed loop. */
		size_t *idx = shuffled_pages(r->npages, nrand);
		char *base = map_field(bytes);
		run_first_writes(h, base, bytes, idx, r);
		run_begin_end(h, r);
		for (int be = 0; be < NBE; be++)
			if (have[be])
				run_collect(be, base, idx, nrand, r);
		if (munmap(base, bytes) != 0)
			die("munmap", strerror(errno));
		free(idx);
	}
	for (int be = 0; be < NBE; be++)
		ckpt_close(h[be]);

	print_arm(res, nsizes);
	print_collect(res, nsizes);
	if (have[BE_UFFD])
		print_summary(res, nsizes);
	print_bar(res, nsizes);
	printf("run time %.1f s\n", (double)(now_ns() - start) / 1e9);
	free(res);
	return 0;
}

/*
 * bench/track.c - what write tracking costs: first writes, ckpt_begin, ckpt_end.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Three ways of writing the first byte of a page, on the same populated,
 * private, anonymous mapping (the "field"):
 *   untracked  the page is writable: the cost of the store alone;
 *   bare       the page is read-only and a SIGSEGV handler that does nothing
 *              but mprotect() the faulting page writable lets the store
 *              through: the least any mprotect-based tracker can cost;
 *   ckpt       the page is protected by ckpt_begin with the mprotect
 *              back-end: the cost the library adds to the bare mechanism
 *              is the ratio ckpt/bare.
 * "seq" writes every page of the field in address order, "rand" writes
 * min(pages, 16384) distinct pages in a shuffled order: each of those
 * splits a mapping in up to three, and the bare handler cannot go past
 * vm.max_map_count (65530 by default), so both contenders get the same
 * bounded set.  Then ckpt_begin and ckpt_end are timed per GiB tracked.
 *
 * All figures of a table come from one run, and the three contenders take
 * turns inside every repetition, so that a noisy machine slows them alike
 * and their ratios stay meaningful.  Each figure is the best of REPS: on a
 * shared machine noise only ever adds time, so the minimum is the closest
 * to what the mechanism itself costs (the median moved by 20% between runs
 * here, the minimum by a few percent).
 *
 * Usage: track [--max-mib N]   (or CKPT_BENCH_MAX_MIB=N; the option wins)
 * runs the sizes 64 MiB, 256 MiB, 1 GiB and 4 GiB that do not exceed N.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ckpt.h>

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REPS		5
#define RAND_MAX_PAGES	16384
#define DEFAULT_MAX_MIB 4096
#define BAR		1.20

enum pattern { PAT_SEQ, PAT_RAND, NPAT };
enum how { HOW_UNTRACKED, HOW_BARE, HOW_CKPT, NHOW };

static const char *const pattern_name[NPAT] = {"seq", "rand"};
static const size_t size_mib[] = {64, 256, 1024, 4096};
#define NSIZES (sizeof size_mib / sizeof size_mib[0])

/* The figures of one field size. */
struct size_result {
	size_t mib;
	size_t npages;
	size_t tracked_pages;	     /* as ckpt_stats reports after begin */
	double first_ns[NPAT][NHOW]; /* ns per page, best of REPS */
	double begin_ms, end_ms;     /* begin and end with nothing written */
	double end_dirty_ms[NPAT];   /* end after the timed writes of a pattern */
};

static size_t pagesz;

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

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double best(const double v[REPS])
{
	double m = v[0];
	for (int i = 1; i < REPS; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

/* xorshift64: a fixed seed gives every run the same order of pages. */
static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

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

/* Times the writes of one tracked epoch, and ckpt_end after them. */
static double time_ckpt(ckpt_t *c, char *base, const size_t *idx, size_t n, double *end_ms)
{
	int rc = ckpt_begin(c);
	if (rc)
		die_ckpt("ckpt_begin", rc);
	uint64_t ns = write_pages(base, idx, n);
	uint64_t t0 = now_ns();
	rc = ckpt_end(c);
	*end_ms = (double)(now_ns() - t0) / 1e6;
	if (rc)
		die_ckpt("ckpt_end", rc);

	ckpt_stats s;
	rc = ckpt_stats(c, &s);
	if (rc)
		die_ckpt("ckpt_stats", rc);
	if (s.faults < n || s.dirty_pages < n)
		printf("warning: %zu pages written but ckpt saw %llu faults and %zu dirty pages\n",
		       n, (unsigned long long)s.faults, s.dirty_pages);
	if (s.fallbacks)
		printf("warning: %llu VMA-limit fallbacks (%llu pages) while writing %zu pages\n",
		       (unsigned long long)s.fallbacks, (unsigned long long)s.fallback_pages, n);
	return (double)ns / (double)n;
}

/* A populated field: every page is present before anything is timed, so
 * the figures hold no page-fault-on-first-touch cost. */
static char *map_field(size_t bytes)
{
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
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

static void run_first_writes(ckpt_t *c, char *base, size_t bytes, const size_t *idx,
			     struct size_result *r)
{
	for (int pat = 0; pat < NPAT; pat++) {
		const size_t *order = pat == PAT_RAND ? idx : NULL;
		size_t n = r->npages;
		if (pat == PAT_RAND && n > RAND_MAX_PAGES)
			n = RAND_MAX_PAGES;
		double v[NHOW][REPS], end[REPS];
		/* The contenders take turns within a repetition, so that
		 * whatever else the machine does hits all three alike. */
		for (int rep = 0; rep < REPS; rep++) {
			v[HOW_UNTRACKED][rep] = time_untracked(base, order, n);
			v[HOW_BARE][rep] = time_bare(base, bytes, order, n);
			v[HOW_CKPT][rep] = time_ckpt(c, base, order, n, &end[rep]);
		}
		for (int how = 0; how < NHOW; how++)
			r->first_ns[pat][how] = best(v[how]);
		r->end_dirty_ms[pat] = best(end);

		const double *f = r->first_ns[pat];
		printf("%7zu MiB  %-4s  %8zu  %10.1f  %10.1f  %10.1f  %9.2f  %9.1f\n", r->mib,
		       pattern_name[pat], n, f[HOW_UNTRACKED], f[HOW_BARE], f[HOW_CKPT],
		       f[HOW_CKPT] / f[HOW_BARE], f[HOW_CKPT] / f[HOW_UNTRACKED]);
		fflush(stdout);
	}
}

static void run_begin_end(ckpt_t *c, struct size_result *r)
{
	double b[REPS], e[REPS];
	for (int rep = 0; rep < REPS; rep++) {
		uint64_t t0 = now_ns();
		int rc = ckpt_begin(c);
		uint64_t t1 = now_ns();
		if (rc)
			die_ckpt("ckpt_begin", rc);
		rc = ckpt_end(c);
		uint64_t t2 = now_ns();
		if (rc)
			die_ckpt("ckpt_end", rc);
		b[rep] = (double)(t1 - t0) / 1e6;
		e[rep] = (double)(t2 - t1) / 1e6;
	}
	ckpt_stats s;
	int rc = ckpt_stats(c, &s);
	if (rc)
		die_ckpt("ckpt_stats", rc);
	r->tracked_pages = s.tracked_pages;
	r->begin_ms = best(b);
	r->end_ms = best(e);
}

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

static size_t max_mib_from(int argc, char **argv)
{
	size_t max = DEFAULT_MAX_MIB;
	const char *env = getenv("CKPT_BENCH_MAX_MIB");
	if (env && *env)
		max = parse_mib(env, "CKPT_BENCH_MAX_MIB");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--max-mib") && i + 1 < argc) {
			max = parse_mib(argv[++i], "--max-mib");
		} else if (!strncmp(argv[i], "--max-mib=", 10)) {
			max = parse_mib(argv[i] + 10, "--max-mib");
		} else {
			fprintf(stderr,
				"usage: %s [--max-mib N]   (or CKPT_BENCH_MAX_MIB=N)\n"
				"runs the field sizes 64, 256, 1024, 4096 MiB up to N"
				" (default %d)\n",
				argv[0], DEFAULT_MAX_MIB);
			exit(strcmp(argv[i], "--help") ? 2 : 0);
		}
	}
	return max;
}

static double per_gib(double ms, size_t pages)
{
	return ms / ((double)pages * (double)pagesz / (1024.0 * 1024 * 1024));
}

int main(int argc, char **argv)
{
	size_t max_mib = max_mib_from(argc, argv);
	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	resolve_libc();

	/* The sizes to run; a cap below the smallest runs the cap itself. */
	size_t sizes[NSIZES], nsizes = 0;
	for (size_t i = 0; i < NSIZES; i++)
		if (size_mib[i] <= max_mib)
			sizes[nsizes++] = size_mib[i];
	if (!nsizes)
		sizes[nsizes++] = max_mib;
	struct size_result *res = calloc(nsizes, sizeof *res);
	if (!res)
		die("calloc", strerror(errno));

	ckpt_t *c;
	ckpt_options opt;
	ckpt_options_init(&opt);
	opt.backend = CKPT_BACKEND_MPROTECT;
	int rc = ckpt_open(&c, NULL, &opt);
	if (rc)
		die_ckpt("ckpt_open", rc);

	/* The first begin installs the fault handler and tests it once: keep
	 * that one-time cost out of the begin figures. */
	uint64_t t0 = now_ns();
	rc = ckpt_begin(c);
	uint64_t first_begin = now_ns() - t0;
	if (rc)
		die_ckpt("ckpt_begin", rc);
	rc = ckpt_end(c);
	if (rc)
		die_ckpt("ckpt_end", rc);

	printf("libckpt %s, mprotect back-end, page %zu B, %ld CPUs online, best of %d runs\n",
	       ckpt_version_string(), pagesz, sysconf(_SC_NPROCESSORS_ONLN), REPS);
	printf("first ckpt_begin of the process (installs the handler): %.2f ms\n\n",
	       (double)first_begin / 1e6);
	printf("1. First write to a populated page, ns/page\n");
	printf("%11s  %-4s  %8s  %10s  %10s  %10s  %9s  %9s\n", "field", "pat", "pages",
	       "untracked", "bare", "ckpt", "ckpt/bare", "ckpt/untr");

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
		run_first_writes(c, base, bytes, idx, r);
		run_begin_end(c, r);
		if (munmap(base, bytes) != 0)
			die("munmap", strerror(errno));
		free(idx);
	}
	ckpt_close(c);

	printf("\n2. ckpt_begin and ckpt_end, ms per GiB tracked (the whole process' memory)\n");
	printf("%11s  %10s  %9s  %9s  %9s  %9s  %14s  %14s\n", "field", "tracked", "begin ms",
	       "begin/GiB", "end ms", "end/GiB", "end/GiB seq", "end/GiB rand");
	for (size_t i = 0; i < nsizes; i++) {
		const struct size_result *r = &res[i];
		double mib = (double)r->tracked_pages * (double)pagesz / (1024.0 * 1024);
		printf("%7zu MiB  %6.0f MiB  %9.2f  %9.2f  %9.2f  %9.2f  %14.2f  %14.2f\n", r->mib,
		       mib, r->begin_ms, per_gib(r->begin_ms, r->tracked_pages), r->end_ms,
		       per_gib(r->end_ms, r->tracked_pages),
		       per_gib(r->end_dirty_ms[PAT_SEQ], r->tracked_pages),
		       per_gib(r->end_dirty_ms[PAT_RAND], r->tracked_pages));
	}
	printf("(end/GiB seq, rand: ckpt_end after the timed writes of that pattern)\n\n");

	/* The bar is set at 1 GiB; a capped run reports its largest field. */
	const struct size_result *bar = &res[nsizes - 1];
	for (size_t i = 0; i < nsizes; i++)
		if (res[i].mib == 1024)
			bar = &res[i];
	double ratio = bar->first_ns[PAT_SEQ][HOW_CKPT] / bar->first_ns[PAT_SEQ][HOW_BARE];
	char where[32];
	if (bar->mib % 1024 == 0)
		snprintf(where, sizeof where, "%zu GiB", bar->mib / 1024);
	else
		snprintf(where, sizeof where, "%zu MiB", bar->mib);
	printf("first-write ratio ckpt/bare (seq, %s): %.2f (bar <= %.2f)%s\n", where, ratio, BAR,
	       ratio <= BAR ? "" : "  ABOVE THE BAR");
	free(res);
	return 0;
}

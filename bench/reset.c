/*
 * bench/reset.c - resets a second: ckpt against a fork server, at any heap
 * size.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A fuzzer runs its target on one input after another, each from the same
 * state.  In user space the usual way is a fork server: a parent holds the
 * state and forks a child per input, which runs and exits.  With ckpt the
 * program commits its state once and rolls back to it after every input:
 * ckpt_restore(CKPT_LATEST) with CKPT_F_SHADOW (a reset).
 *
 * For heaps of 8 MiB, 64 MiB, 512 MiB and 4 GiB (a block of malloc's,
 * every page written before anything is measured) and 1, 16 and 256 pages
 * written per input, three rows:
 *
 *   ckpt    write the pages, reset (CKPT_BACKEND_AUTO, or CKPT_BACKEND);
 *   fork    fork a child, which writes the pages and exits; wait for it;
 *   plain   write the pages, nothing else: the ceiling.
 *
 * The pages are random pages of the whole heap, different at every input
 * (picked before the input's clock starts, the same way for every row),
 * one byte of each written.  Every input's pages are checked after the
 * reset (outside the clock), and the whole heap at the end: each page holds
 * a pattern of its index, so no copy is needed.  "log" is the share of
 * resets that learned the pages written from the kernel's log of faults
 * rather than a walk of the page tables (doc/TRACKING.md, "Resets").
 *
 * Then the kernel's floor, without ckpt: what the first write, the copy
 * back and the protection again cost a page, on a mapping of the
 * benchmark's own in userfaultfd's WP-async mode; the rates they allow are
 * ceilings for any reset built on them.
 *
 * The bars (issue 16): at 64 MiB and 16 pages, at least 25,000 resets a
 * second and 20 times the fork server; at 4 GiB, at least half the rate
 * at 64 MiB; with 256 pages at 64 MiB, at least 4,000 a second.
 *
 * Each heap size is measured in a child process of its own, which sends
 * its figures back through a pipe: one that dies is reported as such.
 * While ckpt tracks, nothing is printed or allocated: a reset rolls the
 * heap back, so what the loop keeps is on the stack.
 *
 * Usage: reset [--quick]   (--quick or CKPT_BENCH_QUICK=1: heaps of 8 and
 * 64 MiB, a fifth of the time per figure.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ckpt.h>

#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB	     ((size_t)1 << 20)
#define NHEAP	     4
#define NK	     3
#define MAXK	     256
#define BAR_RATE     25000.0
#define BAR_FORK     20.0
#define BAR_BIG	     0.5
#define BAR_RATE_256 4000.0

static const size_t heap_mib[NHEAP] = {8, 64, 512, 4096};
static const unsigned kpages[NK] = {1, 16, 256};
enum { ROW_CKPT, ROW_FORK, ROW_PLAIN, NROW };
static const char *const row_name[NROW] = {"ckpt", "fork", "plain"};

/* One figure. */
struct fig {
	uint64_t inputs, busy_ns;
	uint64_t fast; /* resets from the log (ckpt) */
};

/* What a child measures for one heap size. */
struct result {
	struct fig f[NK][NROW];
	int backend;
	uint64_t commit_ns;
};

static size_t ps;
static double secs = 1.0; /* per figure */
static char chain_dir[64];

static void die(const char *what, const char *why)
{
	fprintf(stderr, "reset: %s: %s\n", what, why);
	exit(1);
}

static void die_ckpt(const char *what, int rc)
{
	fprintf(stderr, "reset: %s: %s: %s\n", what, ckpt_strerror(rc), ckpt_last_error());
	exit(1);
}

/* The pattern page p holds, word i. */
static inline uint64_t pattern(size_t p, size_t i)
{
	return (uint64_t)p * 0x9e3779b97f4a7c15u + i * 0x2545f4914f6cdd1du;
}

static void fill_page(char *heap, size_t p)
{
	uint64_t *w = (uint64_t *)(heap + p * ps);
	for (size_t i = 0; i < ps / sizeof *w; i++)
		w[i] = pattern(p, i);
}

static int page_ok(const char *heap, size_t p)
{
	const uint64_t *w = (const uint64_t *)(heap + p * ps);
	for (size_t i = 0; i < ps / sizeof *w; i++)
		if (w[i] != pattern(p, i))
			return 0;
	return 1;
}

/* k distinct random pages of npages. */
static void pick(size_t *pg, unsigned k, size_t npages, uint64_t *seed)
{
	for (unsigned n = 0; n < k;) {
		size_t p = (size_t)(xorshift64(seed) % npages);
		unsigned j = 0;
		while (j < n && pg[j] != p)
			j++;
		if (j == n)
			pg[n++] = p;
	}
}

/* The input: one byte of each page written. */
static void write_pages(char *heap, const size_t *pg, unsigned k, uint64_t salt)
{
	for (unsigned j = 0; j < k; j++)
		heap[pg[j] * ps + ((salt + j * 0x51) & (ps - 1))] ^= (char)(1 + (j & 0x7f));
}

/* ---- the three rows ---------------------------------------------------------------------- */

static void plain(char *heap, size_t npages, unsigned k, struct fig *f)
{
	uint64_t seed = 0xd1b54a32d192ed03u ^ k, budget = (uint64_t)(secs * 1e9);
	size_t pg[MAXK];
	while (f->busy_ns < budget) {
		pick(pg, k, npages, &seed);
		uint64_t t0 = now_ns();
		write_pages(heap, pg, k, seed);
		f->busy_ns += now_ns() - t0;
		f->inputs++;
	}
}

static void fork_server(char *heap, size_t npages, unsigned k, struct fig *f)
{
	uint64_t seed = 0xd1b54a32d192ed03u ^ k, budget = (uint64_t)(secs * 1e9);
	size_t pg[MAXK];
	while (f->busy_ns < budget || f->inputs < 3) {
		pick(pg, k, npages, &seed);
		uint64_t t0 = now_ns();
		pid_t pid = fork();
		if (pid < 0)
			die("fork", strerror(errno));
		if (pid == 0) {
			write_pages(heap, pg, k, seed);
			_exit(0);
		}
		int st;
		while (waitpid(pid, &st, 0) < 0)
			if (errno != EINTR)
				die("waitpid", strerror(errno));
		f->busy_ns += now_ns() - t0;
		f->inputs++;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			die("fork server", "the child failed");
	}
}

/* Resets for every count of pages, with one snapshot. */
static void with_ckpt(char *heap, size_t npages, struct result *res)
{
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_SHADOW | CKPT_F_OVERWRITE;
	ckpt_t *c;
	int rc = ckpt_open(&c, chain_dir, &o);
	if (rc)
		die_ckpt("ckpt_open", rc);
	if ((rc = ckpt_begin(c)) != 0)
		die_ckpt("ckpt_begin", rc);
	uint64_t t0 = now_ns();
	if ((rc = ckpt_commit(c, NULL)) != 0)
		die_ckpt("ckpt_commit", rc);
	uint64_t commit_ns = now_ns() - t0;
	struct fig f[NK];
	memset(f, 0, sizeof f);
	uint64_t budget = (uint64_t)(secs * 1e9);
	for (int ki = 0; ki < NK; ki++) {
		unsigned k = kpages[ki];
		uint64_t seed = 0xd1b54a32d192ed03u ^ k;
		size_t pg[MAXK];
		ckpt_stats s0, s1;
		if ((rc = ckpt_stats(c, &s0)) != 0)
			die_ckpt("ckpt_stats", rc);
		while (f[ki].busy_ns < budget || f[ki].inputs < 3) {
			pick(pg, k, npages, &seed);
			t0 = now_ns();
			write_pages(heap, pg, k, seed);
			rc = ckpt_restore(c, CKPT_LATEST);
			f[ki].busy_ns += now_ns() - t0;
			f[ki].inputs++;
			if (rc)
				die_ckpt("ckpt_restore", rc);
			for (unsigned j = 0; j < k; j++)
				if (!page_ok(heap, pg[j]))
					die("ckpt_restore", "a page written was not rolled back");
		}
		if ((rc = ckpt_stats(c, &s1)) != 0)
			die_ckpt("ckpt_stats", rc);
		f[ki].fast = s1.fast_restores - s0.fast_restores;
		res->backend = s1.backend;
	}
	for (size_t p = 0; p < npages; p++)
		if (!page_ok(heap, p))
			die("ckpt_restore", "the heap differs from its snapshot");
	if ((rc = ckpt_end(c)) != 0)
		die_ckpt("ckpt_end", rc);
	ckpt_close(c);
	for (int ki = 0; ki < NK; ki++)
		res->f[ki][ROW_CKPT] = f[ki];
	res->commit_ns = commit_ns;
}

static void measure(size_t mib, struct result *res)
{
	size_t npages = mib * MIB / ps;
	char *heap = malloc(mib * MIB);
	if (!heap)
		die("malloc", strerror(errno));
	/* A page-aligned heap: malloc's block is a mapping of its own, a
	 * header before a page boundary. */
	heap = (char *)(((uintptr_t)heap + ps - 1) & ~(ps - 1));
	npages -= 1;
	for (size_t p = 0; p < npages; p++)
		fill_page(heap, p);
	for (int ki = 0; ki < NK; ki++)
		fork_server(heap, npages, kpages[ki], &res->f[ki][ROW_FORK]);
	for (int ki = 0; ki < NK; ki++)
		plain(heap, npages, kpages[ki], &res->f[ki][ROW_PLAIN]);
	/* Back to the pattern, which the resets are checked against. */
	for (size_t p = 0; p < npages; p++)
		fill_page(heap, p);
	with_ckpt(heap, npages, res);
}

/* ---- main -------------------------------------------------------------------------------- */

static double rate(const struct fig *f)
{
	return f->busy_ns ? (double)f->inputs * 1e9 / (double)f->busy_ns : 0.0;
}

static int run_child(size_t mib, struct result *res)
{
	int fd[2];
	if (pipe(fd) != 0)
		die("pipe", strerror(errno));
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		die("fork", strerror(errno));
	if (pid == 0) {
		close(fd[0]);
		struct result r;
		memset(&r, 0, sizeof r);
		measure(mib, &r);
		if (write(fd[1], &r, sizeof r) != (ssize_t)sizeof r)
			_exit(1);
		_exit(0);
	}
	close(fd[1]);
	ssize_t got = read(fd[0], res, sizeof *res);
	close(fd[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid", strerror(errno));
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && got == (ssize_t)sizeof *res)
		return 0;
	if (WIFSIGNALED(st))
		printf("%zu MiB: FAILED, the measurement died of signal %d (%s)\n", mib,
		       WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		printf("%zu MiB: FAILED, the measurement exited with status %d\n", mib,
		       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return -1;
}

/* ---- the kernel's floor --------------------------------------------------------------- */

/* What any reset built on the kernel's write-protect must pay per page
 * written, with ckpt out of the picture: on a 64 MiB mapping of its own,
 * registered with userfaultfd in WP-async mode, the first write to a
 * protected page (its fault), copying the page back from a copy, and
 * protecting it again, by UFFDIO_WRITEPROTECT and by PAGEMAP_SCAN with
 * PM_SCAN_WP_MATCHING (one call a page: the pages are scattered, and no
 * call takes a list of ranges).  Learning which pages were written is not
 * counted, nor any fixed cost: the rates printed are ceilings. */
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef PAGEMAP_SCAN
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGE_IS_WRITTEN (1 << 1)
#endif

static void kernel_floor(void)
{
	const size_t n = 64 * MIB, k = 16;
	const int rounds = 4000;
	printf("\nthe kernel's floor per page written (64 MiB, %zu scattered pages a round, no ckpt):\n",
	       k);
	char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *copy = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC};
	struct uffdio_register reg = {.range = {(uintptr_t)m, n}, .mode = UFFDIO_REGISTER_MODE_WP};
	struct uffdio_writeprotect all = {.range = {(uintptr_t)m, n},
					  .mode = UFFDIO_WRITEPROTECT_MODE_WP};
	if (m == MAP_FAILED || copy == MAP_FAILED || uffd < 0 || pm < 0 ||
	    ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		printf("  not measured: userfaultfd WP-async is not available here (%s)\n",
		       strerror(errno));
		goto out;
	}
	memset(m, 1, n);
	memset(copy, 1, n);
	ioctl(uffd, UFFDIO_WRITEPROTECT, &all);
	uint64_t seed = 42, t_write = 0, t_copy = 0, t_uffd = 0, t_scan = 0;
	size_t pg[16];
	for (int r = 0; r < rounds; r++) {
		for (size_t i = 0; i < k; i++)
			pg[i] = xorshift64(&seed) % (n / ps);
		uint64_t a = now_ns();
		for (size_t i = 0; i < k; i++)
			m[pg[i] * ps] = 2;
		uint64_t b = now_ns();
		for (size_t i = 0; i < k; i++)
			memcpy(m + pg[i] * ps, copy + pg[i] * ps, ps);
		uint64_t c = now_ns();
		int failed = 0;
		for (size_t i = 0; i < k; i++) {
			uintptr_t at = (uintptr_t)m + pg[i] * ps;
			if (r & 1) {
				struct pm_scan_arg arg = {.size = sizeof arg,
							  .flags = PM_SCAN_WP_MATCHING |
								   PM_SCAN_CHECK_WPASYNC,
							  .start = at, .end = at + ps,
							  .category_mask = PAGE_IS_WRITTEN};
				failed |= ioctl(pm, PAGEMAP_SCAN, &arg) < 0;
			} else {
				struct uffdio_writeprotect w = {.range = {at, ps},
								.mode = UFFDIO_WRITEPROTECT_MODE_WP};
				failed |= ioctl(uffd, UFFDIO_WRITEPROTECT, &w) != 0;
			}
		}
		uint64_t d = now_ns();
		if (failed) {
			printf("  not measured: protecting a page again failed (%s)\n", strerror(errno));
			goto out;
		}
		t_write += b - a;
		t_copy += c - b;
		*(r & 1 ? &t_scan : &t_uffd) += d - c;
	}
	double per = (double)k * rounds / 2;
	double w = (double)t_write / per / 2e3, cp = (double)t_copy / per / 2e3;
	double wpu = (double)t_uffd / per / 1e3, wps = (double)t_scan / per / 1e3;
	double wp = wpu < wps ? wpu : wps, sum = w + cp + wp;
	printf("  first write (fault) %.2f us, copy back %.2f us, protect again %.2f us "
	       "(UFFDIO_WRITEPROTECT) / %.2f us (PAGEMAP_SCAN)\n",
	       w, cp, wpu, wps);
	printf("  = %.2f us a page: at most %.0f resets/s with 16 pages written, %.0f with 256\n", sum,
	       1e6 / (16 * sum), 1e6 / (256 * sum));
out:
	if (uffd >= 0)
		close(uffd);
	if (pm >= 0)
		close(pm);
	if (m != MAP_FAILED)
		munmap(m, n);
	if (copy != MAP_FAILED)
		munmap(copy, n);
}

static const char *backend_name(int b)
{
	return b == CKPT_BACKEND_UFFD ? "uffd" : b == CKPT_BACKEND_MPROTECT ? "mprotect" : "?";
}

int main(int argc, char **argv)
{
	int quick = quick_from_args(argc, argv);
	if (quick < 0)
		return quick == -1 ? 2 : 0;
	ps = (size_t)sysconf(_SC_PAGESIZE);
	int nheap = quick ? 2 : NHEAP;
	if (quick)
		secs = 0.2;
	snprintf(chain_dir, sizeof chain_dir, "/tmp/ckpt-bench-reset.%d", (int)getpid());

	static struct result res[NHEAP];
	int ok[NHEAP];
	int failed = 0;
	printf(
	    "reset: random pages of a heap written per input, then rolled back; resets a second\n"
	    "(%s, %.1f s a figure, %ld CPUs)\n\n",
	    quick ? "quick" : "full", secs, sysconf(_SC_NPROCESSORS_ONLN));
	printf("%8s %5s  %-6s %12s %10s %9s %6s\n", "heap", "pages", "row", "resets/s", "us/input",
	       "inputs", "log");
	for (int h = 0; h < nheap; h++) {
		ok[h] = run_child(heap_mib[h], &res[h]) == 0;
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", chain_dir);
		if (system(cmd) != 0)
			die(chain_dir, "could not be removed");
		if (!ok[h]) {
			failed = 1;
			continue;
		}
		for (int ki = 0; ki < NK; ki++)
			for (int row = 0; row < NROW; row++) {
				const struct fig *f = &res[h].f[ki][row];
				char log[16] = "";
				if (row == ROW_CKPT)
					snprintf(log, sizeof log, "%3.0f%%",
						 f->inputs
						     ? 100.0 * (double)f->fast / (double)f->inputs
						     : 0);
				printf("%6zuMiB %5u  %-6s %12.0f %10.1f %9llu %6s\n", heap_mib[h],
				       kpages[ki],
				       row == ROW_CKPT ? backend_name(res[h].backend)
						       : row_name[row],
				       rate(f),
				       f->inputs ? (double)f->busy_ns / 1e3 / (double)f->inputs : 0,
				       (unsigned long long)f->inputs, log);
			}
		printf("%8s %5s  (the commit of the heap took %.2f s)\n", "", "",
		       (double)res[h].commit_ns / 1e9);
		fflush(stdout);
	}

	printf("\nratios, ckpt / fork server:\n");
	for (int h = 0; h < nheap; h++)
		if (ok[h]) {
			printf("%6zuMiB", heap_mib[h]);
			for (int ki = 0; ki < NK; ki++) {
				double fr = rate(&res[h].f[ki][ROW_FORK]);
				printf("   %3u pages %8.1f", kpages[ki],
				       fr > 0 ? rate(&res[h].f[ki][ROW_CKPT]) / fr : 0);
			}
			printf("\n");
		}
	int i64 = 1, i4g = 3;
	if (nheap > i4g && ok[i64] && ok[i4g]) {
		printf("ratios, 4 GiB / 64 MiB:\n%9s", "ckpt");
		for (int ki = 0; ki < NK; ki++)
			printf("   %3u pages %8.2f", kpages[ki],
			       rate(&res[i4g].f[ki][ROW_CKPT]) / rate(&res[i64].f[ki][ROW_CKPT]));
		printf("\n%9s", "fork");
		for (int ki = 0; ki < NK; ki++)
			printf("   %3u pages %8.2f", kpages[ki],
			       rate(&res[i4g].f[ki][ROW_FORK]) / rate(&res[i64].f[ki][ROW_FORK]));
		printf("\n");
	}

	if (ok[i64]) {
		double r16 = rate(&res[i64].f[1][ROW_CKPT]), f16 = rate(&res[i64].f[1][ROW_FORK]);
		double r256 = rate(&res[i64].f[2][ROW_CKPT]);
		printf("\nbars:\n");
		printf("  64 MiB, 16 pages: %.0f resets/s (bar %.0f) %s\n", r16, BAR_RATE,
		       r16 >= BAR_RATE ? "met" : "BELOW THE BAR");
		printf("  64 MiB, 16 pages: %.1f times the fork server (bar %.0f) %s\n", r16 / f16,
		       BAR_FORK, r16 / f16 >= BAR_FORK ? "met" : "BELOW THE BAR");
		if (nheap > i4g && ok[i4g]) {
			for (int ki = 0; ki < NK; ki++) {
				double q = rate(&res[i4g].f[ki][ROW_CKPT]) /
					   rate(&res[i64].f[ki][ROW_CKPT]);
				printf("  4 GiB / 64 MiB, %u pages: %.2f (bar %.1f) %s\n",
				       kpages[ki], q, BAR_BIG,
				       q >= BAR_BIG ? "met" : "BELOW THE BAR");
			}
		}
		printf("  64 MiB, 256 pages: %.0f resets/s (bar %.0f) %s\n", r256, BAR_RATE_256,
		       r256 >= BAR_RATE_256 ? "met" : "BELOW THE BAR");
	}
	kernel_floor();
	return failed;
}

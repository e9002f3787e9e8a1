/*
 * bench/resume.c - what resuming a killed program costs.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Three measurements, in one run:
 *   1. heap size  the chain of a program whose heap (one anonymous mapping)
 *                 is 64 MiB, 256 MiB, 1 GiB and 4 GiB, as far as the memory
 *                 of the machine allows (a size runs when MemAvailable holds
 *                 2.5 times it): its base and one increment after 5% of its
 *                 pages were written (the rate of bench/pause's field);
 *   2. chain      a 256 MiB heap, its base followed by 1, 10 and 100
 *                 increments, each written after 1% of the heap's pages
 *                 (chosen at random) were written; the three chains are
 *                 written first and resumed in turn, CHAIN_ROUNDS times
 *                 (not REPS: their ratio is a bar), so that the noise of
 *                 a shared machine falls on all three alike;
 *   3. threads    the pause of a resumable commit (CKPT_F_RESUME |
 *                 CKPT_F_ASYNC, 16 MiB heap, 1% of it written before each)
 *                 in a program with 1, 4, 16 and 64 threads, the others
 *                 idle in pthread_cond_wait: what stopping and recording
 *                 them adds.  Best and median of THREAD_COMMITS commits,
 *                 each after ckpt_wait (the previous write is done);
 *                 then the time to resume the chain each leaves, its
 *                 threads parked in their wait.
 * The heap holds a smooth field of floats plus a little noise, so that it
 * compresses as simulation data does, not as zeros.
 *
 * How: the benchmark runs itself as a child process (--child make) that
 * opens a chain with CKPT_F_RESUME, fills its heap, commits, writes the
 * increments and exits: the chain a killed program would leave behind.
 * Then, REPS times, it starts the child again on that chain (--child
 * resume).  That child calls ckpt_open with CKPT_F_RESUME first thing; the
 * call starts the program once more with address-space randomisation off
 * and brings the memory of the newest snapshot back, and the child goes
 * on from its last ckpt_commit, which returns CKPT_RESUMED.  At that
 * instant it writes CLOCK_MONOTONIC (system-wide) to a pipe and exits at
 * once.
 *
 * What is measured, each the best of REPS (noise only ever adds time):
 *   resume      from just before posix_spawn of the resuming child to the
 *               instant its ckpt_commit returns CKPT_RESUMED: both execs,
 *               the dynamic loader twice, reading and checking the chain,
 *               rebuilding the memory.  What a user waits for.
 *   exit        the same to the moment the parent has reaped the child
 *               (adds unmapping the restored memory on exit).
 *   re-exec     the same for a child that calls ckpt_open with
 *               CKPT_F_RESUME on an empty directory, to its return: the
 *               fixed cost of the two execs and the open, no memory.
 *   read        read(2) of every file of the chain into a 1 MiB buffer by
 *               the parent: the bytes a resume must at least read.  The
 *               files are in the page cache (they were just written and
 *               resumed from), as they are for the resume.
 *   floor       what any resume of these files must do, by the parent:
 *               read(2) every file whole, then decompress every block
 *               (zstd frames; raw blocks copied) on every CPU into a new
 *               mapping the size of the heap (its pages made as they are
 *               written, as a resume's are).  The block table is found as
 *               doc/FORMAT.md describes it.
 *   run         spawn to the moment the resumed child has read every page
 *               of its heap once: with a lazy resume, what the program
 *               waited for in all.
 * and the ratios resume/floor, resume/read and restore rate = heap /
 * (resume - re-exec).  With CKPT_F_LAZY (where the library has it) each
 * heap is resumed a second time lazily: its resume and run are printed
 * beside the eager ones.
 * Nothing is dropped from the page cache unless --cold: a resume after a
 * reboot also pays for the disk, which --cold measures.  Chains are written under /tmp,
 * fsynced by every commit, and removed after each measurement.
 *
 * Usage: resume [--quick] [--threads] [--chains] [--cold]   (or CKPT_BENCH_QUICK=1)
 * --quick measures 16 and 64 MiB heaps and a 16 MiB heap's chains;
 * --threads measures the threads (3.) alone, --chains the chains (2.);
 * --cold (root: it writes /proc/sys/vm/drop_caches) drops the page cache
 * before every resume, read and floor, so that all three read the disk.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ckpt.h>

#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define REPS	  3
#define CHAIN_ROUNDS 7	/* of the chains (2.), whose ratio is a bar */
#define THREAD_COMMITS 40
#define DIRTY_PCT 1.0	/* before each increment of the chains (2.) */
#define STEP_PCT 5.0	/* before the increment of 1. */
#define MIB	  ((size_t)1 << 20)
#define GIB	  ((size_t)1 << 30)

extern char **environ;

static size_t pagesz;
static const char *self_name = "resume";

static void die(const char *what, const char *why)
{
	fprintf(stderr, "%s: %s: %s\n", self_name, what, why);
	exit(1);
}

static void die_ckpt(const char *what, int rc)
{
	fprintf(stderr, "%s: %s: %s (%s): %s\n", self_name, what, ckpt_strerror(rc),
		ckpt_err_name(rc), ckpt_last_error());
	exit(1);
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static double in_mib(uint64_t bytes)
{
	return (double)bytes / (double)MIB;
}

/* ---- the child ------------------------------------------------------------------------- */

/* A row of floats per page: a product of sines along and across rows, with
 * noise of 1/1000 of the amplitude in the low bits (as bench/commit.c). */
static void fill_field(char *p, size_t bytes)
{
	size_t w = pagesz / sizeof(float);
	float *sx = malloc(w * sizeof *sx);
	if (!sx)
		die("malloc", strerror(errno));
	for (size_t x = 0; x < w; x++)
		sx[x] = sinf(6.2831853f * (float)x / (float)w);
	uint64_t seed = 0x2545f4914f6cdd1du;
	for (size_t off = 0, row = 0; off < bytes; off += pagesz, row++) {
		float *f = (float *)(p + off), a = cosf(0.00037f * (float)row);
		for (size_t x = 0; x < w; x++) {
			float noise = (float)(xorshift64(&seed) >> 40) / 16777216.0f - 0.5f;
			f[x] = 100.0f * (sx[x] * a + 0.001f * noise);
		}
	}
	free(sx);
}

/* Reports the instant of the resume to the parent and exits: nothing of
 * the restored process runs after it. */
static void resumed_now(void)
{
	uint64_t t = now_ns();
	dprintf(STDOUT_FILENO, "resumed %llu\n", (unsigned long long)t);
	_exit(0);
}

/* The same, then reads every page of the heap once and reports that
 * instant too: the run a lazy resume is for. */
static void resumed_run(const char *heap, size_t bytes)
{
	uint64_t t = now_ns(), sum = 0;
	for (size_t off = 0; off < bytes; off += pagesz)
		sum += *(const volatile uint64_t *)(heap + off + (off / pagesz % 64) * 8);
	uint64_t u = now_ns();
	dprintf(STDOUT_FILENO, "resumed %llu run %llu sum %llu\n", (unsigned long long)t,
		(unsigned long long)u, (unsigned long long)sum);
	_exit(0);
}

/* CKPT_F_RESUME, and CKPT_F_LAZY when the child was asked for it and the
 * library has it. */
static unsigned resume_flags(int lazy)
{
#ifdef CKPT_F_LAZY
	return CKPT_F_RESUME | (lazy ? CKPT_F_LAZY : 0u);
#else
	(void)lazy;
	return CKPT_F_RESUME;
#endif
}

/* --child make DIR BYTES INCREMENTS PCT: the chain a killed program
 * leaves, PCT% of its pages written before each increment. */
static int child_make(const char *dir, size_t bytes, unsigned increments, double pct)
{
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &(ckpt_options){.flags = CKPT_F_RESUME});
	if (rc < 0)
		die_ckpt("ckpt_open", rc);
	char *heap = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (heap == MAP_FAILED)
		die("mmap", strerror(errno));
	/* Base pages, the unit ckpt tracks (see bench/commit.c). */
	madvise(heap, bytes, MADV_NOHUGEPAGE);
	fill_field(heap, bytes);
	if ((rc = ckpt_begin(c)) < 0)
		die_ckpt("ckpt_begin", rc);
	size_t npages = bytes / pagesz, dirty = (size_t)((double)npages * pct / 100.0);
	uint64_t seed = 0x9e3779b97f4a7c15u;
	for (unsigned i = 0;; i++) {
		/* The chain's last commit returns a second time in the
		 * resuming child: the instant to measure. */
		rc = ckpt_commit(c, NULL);
		if (rc == CKPT_RESUMED)
			resumed_run(heap, bytes);
		if (rc < 0)
			die_ckpt("ckpt_commit", rc);
		if (i == increments)
			break;
		for (size_t k = 0; k < (dirty ? dirty : 1); k++) {
			float *f = (float *)(heap + (xorshift64(&seed) % npages) * pagesz);
			f[k % (pagesz / sizeof(float))] += 0.0001f;
		}
	}
	/* Killed here, as far as the chain can tell. */
	_exit(0);
}

/* --child resume DIR [lazy]: resumes the chain (never returns when it
 * works). */
static int child_resume(const char *dir, int lazy)
{
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &(ckpt_options){.flags = resume_flags(lazy)});
	if (rc < 0)
		die_ckpt("ckpt_open", rc);
	die(dir, "ckpt_open returned: no chain to resume");
	return 1;
}

/* --child bare DIR: the open of an empty directory, the re-exec included. */
static int child_bare(const char *dir)
{
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &(ckpt_options){.flags = CKPT_F_RESUME});
	if (rc < 0)
		die_ckpt("ckpt_open", rc);
	resumed_now();
	return 0;
}

static pthread_mutex_t idle_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_cv = PTHREAD_COND_INITIALIZER;

static void *idle_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&idle_mu);
	for (;;)
		pthread_cond_wait(&idle_cv, &idle_mu);
	pthread_mutex_unlock(&idle_mu);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* --child threads DIR N: resumable commits with N threads; writes "BEST
 * MEDIAN" (ns) to DIR/pause. */
static int child_threads(const char *dir, unsigned nthreads)
{
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &(ckpt_options){.flags = CKPT_F_RESUME | CKPT_F_ASYNC});
	if (rc < 0)
		die_ckpt("ckpt_open", rc);
	size_t bytes = 16 * MIB, npages = bytes / pagesz;
	char *heap = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (heap == MAP_FAILED)
		die("mmap", strerror(errno));
	fill_field(heap, bytes);
	pthread_t *th = calloc(nthreads, sizeof *th);
	for (unsigned i = 1; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, idle_thread, NULL))
			die("pthread_create", "failed");
	if ((rc = ckpt_begin(c)) < 0 || (rc = ckpt_commit(c, NULL)) < 0 ||
	    (rc = ckpt_wait(c, NULL)) < 0)
		die_ckpt("the base", rc);
	uint64_t seed = 0x9e3779b97f4a7c15u, t[THREAD_COMMITS];
	for (int k = 0; k < THREAD_COMMITS; k++) {
		for (size_t i = 0; i < npages / 100; i++)
			heap[(xorshift64(&seed) % npages) * pagesz] ^= 1;
		uint64_t t0 = now_ns();
		if ((rc = ckpt_commit(c, NULL)) < 0)
			die_ckpt("ckpt_commit", rc);
		t[k] = now_ns() - t0;
		if ((rc = ckpt_wait(c, NULL)) < 0)
			die_ckpt("ckpt_wait", rc);
	}
	/* The commit a resume returns from, the threads parked in their
	 * condition wait. */
	if ((rc = ckpt_commit(c, NULL)) == CKPT_RESUMED)
		resumed_now();
	if (rc < 0 || (rc = ckpt_wait(c, NULL)) < 0)
		die_ckpt("the last commit", rc);
	qsort(t, THREAD_COMMITS, sizeof t[0], cmp_u64);
	char path[256];
	snprintf(path, sizeof path, "%s/pause", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		die(path, strerror(errno));
	fprintf(f, "%llu %llu\n", (unsigned long long)t[0],
		(unsigned long long)t[THREAD_COMMITS / 2]);
	fclose(f);
	/* Killed here, as far as the chain can tell: the threads live on. */
	_exit(0);
}

/* ---- the parent ------------------------------------------------------------------------ */

/* Runs this program with `args` (NULL-terminated) and returns the time from
 * just before the spawn to the instant the child printed ("resumed T"),
 * or 0 if it printed nothing; *exit_ns gets the time to its reaping, and
 * *run_ns (when not NULL) to the instant it had read its heap ("run U"). */
static uint64_t run_child3(const char *const *args, uint64_t *exit_ns, uint64_t *run_ns)
{
	int fd[2];
	if (pipe2(fd, O_CLOEXEC))
		die("pipe", strerror(errno));
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd[1], STDOUT_FILENO);
	pid_t pid;
	uint64_t t0 = now_ns();
	/* posix_spawn's argv is char *const[] for history's sake; it is not
	 * written to. */
	int err = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, (char *const *)args, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fd[1]);
	if (err)
		die("posix_spawn /proc/self/exe", strerror(err));
	char buf[128];
	size_t got = 0;
	ssize_t n;
	while (got < sizeof buf - 1 && (n = read(fd[0], buf + got, sizeof buf - 1 - got)) != 0) {
		if (n < 0 && errno != EINTR)
			die("read", strerror(errno));
		if (n > 0)
			got += (size_t)n;
	}
	buf[got] = '\0';
	close(fd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid", strerror(errno));
	if (exit_ns)
		*exit_ns = now_ns() - t0;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die(args[2], "the child failed");
	unsigned long long t, u = 0;
	int got_fields = sscanf(buf, "resumed %llu run %llu", &t, &u);
	if (got_fields < 1)
		return 0;
	if (run_ns)
		*run_ns = got_fields == 2 && u > t0 ? u - t0 : 0;
	return t > t0 ? t - t0 : 1;
}

static uint64_t run_child(const char *const *args, uint64_t *exit_ns)
{
	return run_child3(args, exit_ns, NULL);
}

static char *make_dir(void)
{
	static char dir[64];
	snprintf(dir, sizeof dir, "/tmp/ckpt-bench-XXXXXX");
	if (!mkdtemp(dir))
		die("mkdtemp /tmp/ckpt-bench-XXXXXX", strerror(errno));
	return dir;
}

static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		die(dir, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	if (rmdir(dir))
		die(dir, strerror(errno));
}

/* Reads every regular file of dir; returns the time, *bytes the total. */
static uint64_t read_dir(const char *dir, uint64_t *bytes)
{
	static char buf[1 << 20];
	uint64_t t0 = now_ns();
	DIR *d = opendir(dir);
	if (!d)
		die(dir, strerror(errno));
	*bytes = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		ssize_t n;
		while ((n = read(fd, buf, sizeof buf)) > 0)
			*bytes += (uint64_t)n;
		close(fd);
	}
	closedir(d);
	return now_ns() - t0;
}

struct row {
	size_t heap;
	unsigned increments;
	uint64_t files;	  /* bytes of the chain's files */
	uint64_t resume;  /* best of REPS */
	uint64_t exit;	  /* best of REPS */
	uint64_t read;	  /* best of REPS */
	uint64_t run;	  /* best of REPS */
	uint64_t floor;	  /* best of REPS */
	uint64_t lazy;	  /* best of REPS, 0 without CKPT_F_LAZY */
	uint64_t lazy_run;
	uint64_t make;	  /* the --child make run, once */
	double round_ratio; /* side by side: median over the rounds of its resume
			       over the first row's in the same round */
};

/* ---- the floor: read(2) and decompression on every CPU, nothing else ------------------- */

struct fblock {
	const unsigned char *src;
	uint32_t csize, rsize, codec;
	size_t dst; /* offset in the buffer */
};

struct floor_job {
	struct fblock *b;
	size_t n, next;
	char *buf;
	pthread_mutex_t mu;
	int bad;
};

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void *floor_worker(void *arg)
{
	struct floor_job *j = arg;
	ZSTD_DCtx *d = ZSTD_createDCtx();
	for (;;) {
		pthread_mutex_lock(&j->mu);
		size_t i = j->next++;
		pthread_mutex_unlock(&j->mu);
		if (i >= j->n)
			break;
		const struct fblock *b = &j->b[i];
		if (b->codec == 1) {
			size_t got = ZSTD_decompressDCtx(d, j->buf + b->dst, b->rsize, b->src, b->csize);
			if (ZSTD_isError(got) || got != b->rsize)
				j->bad = 1;
		} else {
			memcpy(j->buf + b->dst, b->src, b->rsize);
		}
	}
	ZSTD_freeDCtx(d);
	return NULL;
}

/* Reads every snapshot of dir whole and decompresses all its blocks on
 * every CPU into a new mapping of `heap` bytes (blocks laid one after the
 * other, wrapping); returns the time. */
static uint64_t floor_dir(const char *dir, size_t heap)
{
	size_t room = heap + (size_t)64 * pagesz;
	char *buf = mmap(NULL, room, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap", strerror(errno));
	madvise(buf, room, MADV_NOHUGEPAGE);
	struct floor_job j = {.buf = buf, .mu = PTHREAD_MUTEX_INITIALIZER};
	size_t cap = 0, at = 0, nfiles = 0;
	unsigned char *files[1024];
	uint64_t t0 = now_ns();
	DIR *d = opendir(dir);
	if (!d)
		die(dir, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "snap-", 5) || nfiles == 1024)
			continue;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st))
			die(e->d_name, strerror(errno));
		unsigned char *f = malloc((size_t)st.st_size);
		size_t got = 0;
		ssize_t n;
		while (f && got < (size_t)st.st_size &&
		       (n = read(fd, f + got, (size_t)st.st_size - got)) > 0)
			got += (size_t)n;
		close(fd);
		if (!f || got != (size_t)st.st_size || got < 256)
			die(e->d_name, "cannot read it whole");
		files[nfiles++] = f;
		/* The block table: section 3 of the header (offset 64 + 3 * 24),
		 * 32 bytes an entry (doc/FORMAT.md). */
		uint64_t toff = le64(f + 136), tsize = le64(f + 144);
		if (toff > got || tsize > got - toff)
			die(e->d_name, "no block table");
		for (uint64_t k = 0; k + 32 <= tsize; k += 32) {
			const unsigned char *t = f + toff + k;
			uint64_t off = le64(t);
			uint32_t csize = (uint32_t)le64(t + 8), rsize = (uint32_t)(le64(t + 8) >> 32),
				 codec = (uint32_t)le64(t + 16);
			if (off > got || csize > got - off || rsize > 64 * pagesz)
				die(e->d_name, "a block outside the file");
			if (j.n == cap) {
				cap = cap ? 2 * cap : 4096;
				j.b = realloc(j.b, cap * sizeof *j.b);
				if (!j.b)
					die("realloc", strerror(errno));
			}
			if (at + rsize > room)
				at = 0;
			j.b[j.n++] = (struct fblock){f + off, csize, rsize, codec, at};
			at += rsize;
		}
	}
	closedir(d);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t th[64];
	int nth = ncpu > 64 ? 64 : ncpu > 0 ? (int)ncpu : 1;
	for (int i = 1; i < nth; i++)
		if (pthread_create(&th[i], NULL, floor_worker, &j))
			die("pthread_create", "failed");
	floor_worker(&j);
	for (int i = 1; i < nth; i++)
		pthread_join(th[i], NULL);
	uint64_t t = now_ns() - t0;
	if (j.bad)
		die(dir, "a block did not decompress");
	for (size_t i = 0; i < nfiles; i++)
		free(files[i]);
	free(j.b);
	munmap(buf, room);
	return t;
}

static uint64_t bare_ns; /* the re-exec floor, best of REPS */

static void measure_bare(void)
{
	char *dir = make_dir();
	const char *args[] = {self_name, "--child", "bare", dir, NULL};
	for (int r = 0; r < REPS; r++) {
		uint64_t t = run_child(args, NULL);
		if (!t)
			die("bare", "the child printed nothing");
		if (!bare_ns || t < bare_ns)
			bare_ns = t;
	}
	remove_dir(dir);
}

/* Best and median pause of a resumable commit with n threads, and the
 * best time to resume the chain it left (spawn to CKPT_RESUMED). */
static void measure_threads(unsigned n, uint64_t *best, uint64_t *median, uint64_t *resume)
{
	char *dir = make_dir(), num[16], path[128];
	snprintf(num, sizeof num, "%u", n);
	const char *args[] = {self_name, "--child", "threads", dir, num, NULL};
	run_child(args, NULL);
	snprintf(path, sizeof path, "%s/pause", dir);
	FILE *f = fopen(path, "r");
	unsigned long long b = 0, m = 0;
	if (!f || fscanf(f, "%llu %llu", &b, &m) != 2)
		die("threads", "the child wrote no result");
	fclose(f);
	*best = b;
	*median = m;
	*resume = 0;
	const char *rargs[] = {self_name, "--child", "resume", dir, NULL};
	for (int r = 0; r < REPS; r++) {
		uint64_t t = run_child(rargs, NULL);
		if (!t)
			die("threads", "the resumed child printed nothing");
		if (!*resume || t < *resume)
			*resume = t;
	}
	remove_dir(dir);
}

static void best(uint64_t *b, uint64_t t)
{
	if (t && (!*b || t < *b))
		*b = t;
}

/* Writes the chain of row o (its heap and increments) into a new
 * directory, returned. */
static char *make_chain(struct row *o, double pct)
{
	char *dir = strdup(make_dir()), bytes[32], incr[16], pcts[16];
	if (!dir)
		die("strdup", strerror(errno));
	snprintf(bytes, sizeof bytes, "%zu", o->heap);
	snprintf(incr, sizeof incr, "%u", o->increments);
	snprintf(pcts, sizeof pcts, "%g", pct);
	const char *make[] = {self_name, "--child", "make", dir, bytes, incr, pcts, NULL};
	uint64_t t0 = now_ns();
	if (run_child(make, NULL))
		die("make", "the chain was resumed instead of written");
	o->make = now_ns() - t0;
	return dir;
}

/* One round of measurements of the chain in dir into o. */
/* --cold: every measurement starts with the page cache dropped, so that
 * resume, read and floor all read the chain from the disk. */
static int cold;

static void drop_caches(void)
{
	if (!cold)
		return;
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "3", 1) != 1)
		die("--cold: /proc/sys/vm/drop_caches", fd < 0 ? strerror(errno) : "not written");
	close(fd);
}

/* One round; returns its eager resume time. */
static uint64_t measure_once(struct row *o, const char *dir)
{
	const char *res[] = {self_name, "--child", "resume", dir, NULL};
	const char *lazy[] = {self_name, "--child", "resume", dir, "lazy", NULL};
	drop_caches();
	uint64_t ex, run, eager = run_child3(res, &ex, &run), t = eager;
	drop_caches();
	uint64_t rd = read_dir(dir, &o->files);
	if (!t)
		die("resume", "the child did not report a resume");
	best(&o->resume, t);
	best(&o->exit, ex);
	best(&o->run, run);
	best(&o->read, rd);
	drop_caches();
	best(&o->floor, floor_dir(dir, o->heap));
#ifdef CKPT_F_LAZY
	drop_caches();
	t = run_child3(lazy, &ex, &run);
	if (!t)
		die("resume", "the lazy child did not report a resume");
	best(&o->lazy, t);
	best(&o->lazy_run, run);
#else
	(void)lazy;
#endif
	return eager;
}

static void measure(struct row *o, size_t heap, unsigned increments, double pct)
{
	*o = (struct row){.heap = heap, .increments = increments};
	char *dir = make_chain(o, pct);
	for (int r = 0; r < REPS; r++)
		measure_once(o, dir);
	remove_dir(dir);
	free(dir);
}

/* The same for n chains side by side: all written first, then measured in
 * turn, CHAIN_ROUNDS rounds, so that the machine's noise falls on all
 * alike and a round it spoils for one chain is not the best of any. */
static void measure_side_by_side(struct row *o, size_t n, double pct)
{
	char *dir[8];
	for (size_t i = 0; i < n && i < 8; i++)
		dir[i] = make_chain(&o[i], pct);
	double ratio[8][CHAIN_ROUNDS];
	for (int r = 0; r < CHAIN_ROUNDS; r++) {
		uint64_t first = 0;
		for (size_t i = 0; i < n && i < 8; i++) {
			uint64_t t = measure_once(&o[i], dir[i]);
			if (i == 0)
				first = t;
			ratio[i][r] = (double)t / (double)first;
		}
	}
	/* Per round, the rows were resumed within a second of each other: a
	 * slow spell of the machine that outlasts a round spares the ratio. */
	for (size_t i = 0; i < n && i < 8; i++) {
		for (int a = 1; a < CHAIN_ROUNDS; a++)
			for (int b = a; b > 0 && ratio[i][b] < ratio[i][b - 1]; b--) {
				double x = ratio[i][b];
				ratio[i][b] = ratio[i][b - 1];
				ratio[i][b - 1] = x;
			}
		o[i].round_ratio = ratio[i][CHAIN_ROUNDS / 2];
	}
	for (size_t i = 0; i < n && i < 8; i++) {
		remove_dir(dir[i]);
		free(dir[i]);
	}
}

static void print_header(const char *first)
{
	printf("%10s %5s %9s %9s %8s %8s %8s %8s %8s %6s %8s %8s %8s %6s\n", first, "snaps",
	       "files MiB", "resume ms", "run ms", "exit ms", "read ms", "floor ms", "res/flr",
	       "GB/s", "lazy ms", "lazy run", "make s", "vs 1st");
}

static void print_row(const char *first, const struct row *o, const struct row *first_row)
{
	uint64_t net = o->resume > bare_ns ? o->resume - bare_ns : 1;
	char lz[16] = "-", lzr[16] = "-";
	if (o->lazy) {
		snprintf(lz, sizeof lz, "%.1f", ms(o->lazy));
		snprintf(lzr, sizeof lzr, "%.1f", ms(o->lazy_run));
	}
	printf("%10s %5u %9.1f %9.1f %8.1f %8.1f %8.1f %8.1f %8.2f %6.2f %8s %8s %8.1f %6.2f\n",
	       first, o->increments + 1, in_mib(o->files), ms(o->resume), ms(o->run), ms(o->exit),
	       ms(o->read), ms(o->floor), (double)o->resume / (double)(o->floor ? o->floor : 1),
	       (double)o->heap / (double)net, lz, lzr, (double)o->make / 1e9,
	       (double)o->resume / (double)(first_row->resume ? first_row->resume : 1));
	fflush(stdout);
}

static size_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long long kb = 0;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return (size_t)kb * 1024;
}

static void size_str(size_t bytes, char *buf, size_t len)
{
	if (bytes >= GIB)
		snprintf(buf, len, "%zu GiB", bytes / GIB);
	else
		snprintf(buf, len, "%zu MiB", bytes / MIB);
}

int main(int argc, char **argv)
{
	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	/* The child modes come first: they must reach ckpt_open before
	 * doing anything else. */
	if (argc >= 4 && !strcmp(argv[1], "--child")) {
		self_name = "resume (child)";
		if (argc == 7 && !strcmp(argv[2], "make"))
			return child_make(argv[3], strtoull(argv[4], NULL, 10),
					  (unsigned)strtoul(argv[5], NULL, 10), strtod(argv[6], NULL));
		if ((argc == 4 || argc == 5) && !strcmp(argv[2], "resume"))
			return child_resume(argv[3], argc == 5 && !strcmp(argv[4], "lazy"));
		if (argc == 5 && !strcmp(argv[2], "threads"))
			return child_threads(argv[3], (unsigned)strtoul(argv[4], NULL, 10));
		if (argc == 4 && !strcmp(argv[2], "bare"))
			return child_bare(argv[3]);
		die(argv[2], "unknown child mode");
	}
	int quick = quick_from_env(), threads_only = 0, chains_only = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else if (!strcmp(argv[i], "--threads")) {
			threads_only = 1;
		} else if (!strcmp(argv[i], "--chains")) {
			chains_only = 1;
		} else if (!strcmp(argv[i], "--cold")) {
			cold = 1;
		} else {
			fprintf(stderr,
				"usage: %s [--quick] [--threads] [--chains] [--cold]   (or CKPT_BENCH_QUICK=1)\n"
				"--quick measures small heaps only, for a fast run\n"
				"--threads measures the commit pause against threads only\n"
				"--chains measures the resume against chain length only\n"
				"--cold drops the page cache before each measurement (root)\n",
				argv[0]);
			return strcmp(argv[i], "--help") ? 2 : 0;
		}
	}

	static const size_t full_sizes[] = {64 * MIB, 256 * MIB, GIB, 4 * GIB};
	static const size_t quick_sizes[] = {16 * MIB, 64 * MIB};
	const size_t *sizes = quick ? quick_sizes : full_sizes;
	size_t nsizes = quick ? 2 : 4, chain_heap = quick ? 16 * MIB : 256 * MIB;
	static const unsigned chains[] = {1, 10, 100};
	size_t avail = mem_available();

	printf("libckpt %s, page %zu B, %ld CPUs online, best of %d%s\n", ckpt_version_string(),
	       pagesz, sysconf(_SC_NPROCESSORS_ONLN), REPS, quick ? ", QUICK run" : "");
	printf("times from the spawn of the resuming process; chains under /tmp, %s\n\n",
	       cold ? "read from the disk (the page cache dropped before each measurement)"
		    : "in the page cache");
	if (threads_only)
		goto threads;
	measure_bare();
	printf("re-exec: ckpt_open(CKPT_F_RESUME) on an empty directory, spawn to return:"
	       " %.1f ms\n\n",
	       ms(bare_ns));

	if (chains_only)
		goto chains;
	printf("1. Resume against heap size: a base and one increment after %.0f%% of the pages"
	       " were written\n",
	       STEP_PCT);
	print_header("heap");
	struct row first_size = {0};
	for (size_t i = 0; i < nsizes; i++) {
		char label[32];
		size_str(sizes[i], label, sizeof label);
		if (avail && sizes[i] / 2 * 5 > avail) {
			printf("%9s  skipped: %.0f MiB available, needs 2.5 x the heap\n", label,
			       in_mib(avail));
			continue;
		}
		struct row o;
		measure(&o, sizes[i], 1, STEP_PCT);
		if (!first_size.resume)
			first_size = o;
		print_row(label, &o, &first_size);
	}
chains:;
	char hsz[32];
	size_str(chain_heap, hsz, sizeof hsz);
	printf("\n2. Resume of a %s heap against chain length (%.0f%% of the pages written"
	       " before each increment), best of %d rounds\n",
	       hsz, DIRTY_PCT, CHAIN_ROUNDS);
	print_header("increments");
	struct row crow[sizeof chains / sizeof chains[0]];
	size_t nchains = sizeof chains / sizeof chains[0];
	for (size_t i = 0; i < nchains; i++)
		crow[i] = (struct row){.heap = chain_heap, .increments = chains[i]};
	measure_side_by_side(crow, nchains, DIRTY_PCT);
	for (size_t i = 0; i < nchains; i++) {
		char label[16];
		snprintf(label, sizeof label, "%u", chains[i]);
		print_row(label, &crow[i], &crow[0]);
	}
	printf("resume against 1 increment, best times (vs 1st; the bar for 100: <= 1.3):");
	for (size_t i = 1; i < nchains; i++)
		printf("  %u increments %.2f", chains[i],
		       (double)crow[i].resume / (double)(crow[0].resume ? crow[0].resume : 1));
	printf("\n  and the median of the %d rounds' own ratios, where a slow spell of either"
	       " chain counts:",
	       CHAIN_ROUNDS);
	for (size_t i = 1; i < nchains; i++)
		printf("  %u increments %.2f", chains[i], crow[i].round_ratio);
	printf("\n");
	if (chains_only)
		return 0;
threads:
	printf("\n3. Pause of a resumable commit (CKPT_F_ASYNC, 16 MiB heap, 1%% written) against"
	       " the program's threads, best and median of %d\n",
	       THREAD_COMMITS);
	printf("   and the time to resume the chain it leaves (spawn to CKPT_RESUMED, best of %d,"
	       " the re-exec included)\n",
	       REPS);
	printf("%9s  %9s  %9s  %12s  %10s  %10s\n", "threads", "best ms", "median ms", "median +ms",
	       "resume ms", "resume +ms");
	static const unsigned nthreads[] = {1, 4, 16, 64};
	uint64_t base_med = 0, base_res = 0;
	for (size_t i = 0; i < sizeof nthreads / sizeof nthreads[0]; i++) {
		uint64_t best, med, res;
		measure_threads(nthreads[i], &best, &med, &res);
		if (i == 0) {
			base_med = med;
			base_res = res;
		}
		printf("%9u  %9.3f  %9.3f  %+12.3f  %10.3f  %+10.3f\n", nthreads[i], ms(best), ms(med),
		       ms(med) - ms(base_med), ms(res), ms(res) - ms(base_res));
	}
	if (threads_only)
		return 0;
	printf("\n(resume: spawn to CKPT_RESUMED, the re-exec included; run: spawn to the"
	       " resumed child\n having read every page of its heap; exit: spawn to the child"
	       " reaped;\n read: read(2) of the chain's files by the parent; floor: read(2) of"
	       " them whole plus\n decompressing every block on every CPU into a new buffer the"
	       " heap's size; res/flr: resume/floor;\n GB/s: heap / (resume - re-exec); lazy,"
	       " lazy run: the same with CKPT_F_LAZY; make: the run\n that wrote the chain,"
	       " filling and committing; vs 1st: resume against the table's first row)\n");
	return 0;
}

/*
 * resume-prog.c - a deterministic program for tests/resume.sh: killed at
 * any moment and run again, it must end exactly as a run that was never
 * interrupted.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Usage: resume-prog --dir DIR --out FILE [--seed S] [--steps N] [--every K]
 *                    [--sleep-us U] [--threads] [--async] [--kill-at ID]
 *                    [--sparse-mib M] [--restore-at ID] [--pthread-exit]
 *
 * Its state is spread over every kind of memory a resume restores: a
 * static array in .bss, variables in .data, a large malloc block (an mmap
 * of glibc's), small malloc blocks in the brk heap that are freed and
 * allocated again every step (glibc's own bookkeeping must come back
 * too), an anonymous mapping of its own, and locals on the stack.  Each
 * of the N steps writes pseudo-random words (xorshift, from the seed) into
 * all of them, appends one line to FILE through a FILE * opened before the
 * loop, and sleeps U microseconds so that a kill can land anywhere; every
 * K steps it commits.
 *
 * Output:
 *   stderr  "commit ID step S offset O fds N/K pages P" after each commit
 *           (O: ftell of FILE, which then holds exactly the lines of steps
 *           1..S; N: descriptors open above 2, K: how many of them are
 *           snapshot files; P: pages the commit stored);
 *           "resumed ID step S offset O fds N/K pages P" when ckpt_commit
 *           returns CKPT_RESUMED (a line of the library may come before it);
 *           "sparse R of T pages resident" at the end, with --sparse-mib.
 *   stdout  "checksum HEX" at the end: a hash of all the state above.
 *   FILE    "S HEX" for each step S (HEX: the running hash of the step).
 * Exit status: 0 done; 1 a ckpt call other than ckpt_open failed, or a
 * system error; 2 usage; 3 ckpt_open failed (the message on stderr is
 * ckpt_strerror, the code's name and ckpt_last_error).
 *
 * --async commits with CKPT_F_ASYNC (written in the background).
 * --threads starts a second thread before the loop that stays alive (blocked
 * on a pipe) until the end, so every snapshot is taken with two threads.
 * --sparse-mib M adds a mapping of M MiB reserved (MAP_NORESERVE) of which
 * the program only ever writes 4 pages: how many of its pages are resident
 * at the end (mincore) should not depend on whether the run was resumed.
 * --restore-at ID rolls back to snapshot ID right after the commit that
 * wrote it (memory is unchanged by it; the handle has its chain open from
 * then on, as a restore leaves it).
 * --pthread-exit ends main with pthread_exit(NULL) instead of returning,
 * after printing glibc's count of the process's threads on stderr
 * ("glibc counts N threads", where it can be read) and the checksum with
 * stdout left unflushed: glibc ends the process with exit(0), which
 * flushes it, only when it counts no other thread.
 * --kill-at ID sends the process SIGKILL right after the commit that wrote
 * snapshot ID returns 0, a deterministic kill; it happens once per FILE
 * (the marker FILE.killed-ID, made first, keeps a process resumed from an
 * earlier snapshot from killing itself at the same point again).
 *
 * Built twice: resume-prog and, with -DVARIANT=2, resume-prog2, which
 * differ in their code and so in their build-id, for the test that a
 * chain refuses another executable.
 */
#include <ckpt.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef VARIANT
#define VARIANT 1
#endif

#define BSS_WORDS   (64 * 1024)	 /* 512 KiB of .bss */
#define BIG_BYTES   (2u << 20)	 /* one malloc block, above the mmap threshold */
#define MAP_BYTES   (1u << 20)	 /* an anonymous mapping */
#define SMALL_COUNT 32		 /* small blocks in the brk heap... */
#define SMALL_MAX   (16u << 10)	 /* ...of up to 16 KiB each */
#define WRITES	    16		 /* random words written per area and step: an
				  * increment stores a fraction of the pages */

static uint64_t bss_area[BSS_WORDS];
/* .data: initialised, so not in .bss. */
static uint64_t rng = 0x9e3779b97f4a7c15u;
static long step_no = -1;
#define VARIANT_STR_(v) #v
#define VARIANT_STR(v) VARIANT_STR_(v)
static const char variant_note[] = "resume-prog variant " VARIANT_STR(VARIANT);

static uint64_t *big;
static uint64_t *mapped;
static unsigned char *sparse; /* --sparse-mib: 4 pages written, spread */
static size_t sparse_bytes;
#define SPARSE_PAGE(i) (sparse + (sparse_bytes / 4096 / 4) * 4096 * (size_t)(i))
static struct {
	unsigned char *p;
	size_t len;
} small[SMALL_COUNT];

static void fail(const char *what)
{
	fprintf(stderr, "resume-prog: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void check(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "resume-prog: %s: %s (%s): %s\n", what, ckpt_strerror(rc),
			ckpt_err_name(rc), ckpt_last_error());
		exit(1);
	}
}

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t mix(uint64_t h, const void *p, size_t len)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3u;
	return h;
}

/* FNV-1a over a word array, a word at a time. */
static uint64_t mix_words(uint64_t h, const uint64_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ w[i]) * 0x100000001b3u;
	return h;
}

static uint64_t state_hash(uint64_t running)
{
	uint64_t h = 0xcbf29ce484222325u;
	h = mix(h, &running, sizeof running);
	h = mix_words(h, bss_area, BSS_WORDS);
	h = mix_words(h, big, BIG_BYTES / 8);
	h = mix_words(h, mapped, MAP_BYTES / 8);
	for (int i = 0; i < SMALL_COUNT; i++) {
		h = mix(h, &small[i].len, sizeof small[i].len);
		h = mix(h, small[i].p, small[i].len);
	}
	for (int i = 0; sparse && i < 4; i++)
		h = mix_words(h, (const uint64_t *)SPARSE_PAGE(i), 4096 / 8);
	h = mix(h, &rng, sizeof rng);
	return mix(h, &step_no, sizeof step_no);
}

/* A new block for small[i], of a random size, filled from the generator:
 * its content and size are part of the state. */
static void renew_small(int i)
{
	free(small[i].p);
	small[i].len = 1 + next_rand() % SMALL_MAX;
	small[i].p = malloc(small[i].len);
	if (!small[i].p)
		fail("malloc");
	for (size_t k = 0; k < small[i].len; k++)
		small[i].p[k] = (unsigned char)next_rand();
}

static void do_step(void)
{
	for (int k = 0; k < WRITES; k++) {
		bss_area[next_rand() % BSS_WORDS] = next_rand();
		big[next_rand() % (BIG_BYTES / 8)] = next_rand();
		mapped[next_rand() % (MAP_BYTES / 8)] = next_rand();
	}
	renew_small((int)(next_rand() % SMALL_COUNT));
	if (sparse) {
		uint64_t *page = (uint64_t *)SPARSE_PAGE(next_rand() % 4);
		page[next_rand() % (4096 / 8)] = next_rand();
	}
}

/* Descriptors open above 2 (*n), and how many of them are snapshot files
 * (*k): "snap-NNNNNNNN.ckpt", a chain's, by name. */
static void fd_census(int *n, int *k)
{
	*n = *k = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		fail("/proc/self/fd");
	for (struct dirent *e; (e = readdir(d));) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd < 3 || fd == dirfd(d))
			continue;
		++*n;
		char link[64], path[PATH_MAX];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t len = readlink(link, path, sizeof path - 1);
		path[len > 0 ? len : 0] = '\0';
		/* Removed since: " (deleted)" follows the name. */
		const char *base = strrchr(path, '/');
		if (base && !strncmp(base, "/snap-", 6) && strspn(base + 6, "0123456789") == 8 &&
		    (!strcmp(base + 14, ".ckpt") || !strcmp(base + 14, ".ckpt (deleted)")))
			++*k;
	}
	closedir(d);
}

/* Pages of the sparse mapping resident now. */
static size_t sparse_resident(void)
{
	size_t pages = sparse_bytes / 4096, n = 0;
	unsigned char *v = malloc(pages);
	if (!v || mincore(sparse, sparse_bytes, v))
		fail("mincore");
	for (size_t i = 0; i < pages; i++)
		n += v[i] & 1;
	free(v);
	return n;
}

static int waiter_pipe[2];

static void *waiter(void *arg)
{
	char b;
	(void)arg;
	/* Blocks until main closes the write end at the end of the run. */
	while (read(waiter_pipe[0], &b, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

/* SIGKILL after the commit of snapshot `id`, once per output file. */
static void kill_once(const char *out, uint64_t id)
{
	char mark[4096];
	snprintf(mark, sizeof mark, "%s.killed-%llu", out, (unsigned long long)id);
	int fd = open(mark, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (errno == EEXIST)
			return;
		fail(mark);
	}
	close(fd);
	raise(SIGKILL);
}

static void usage(void)
{
	fprintf(stderr, "usage: resume-prog --dir DIR --out FILE [--seed S] [--steps N] "
			"[--every K] [--sleep-us U] [--threads] [--async] [--kill-at ID] "
			"[--sparse-mib M] [--restore-at ID] [--pthread-exit]\n(%s)\n",
		variant_note);
	exit(2);
}

static long number(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 0);
	if (*s == '\0' || *end != '\0' || v < 0 || errno)
		usage();
	return v;
}

static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_seen++;
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *out_path = NULL;
	long seed = 1, steps = 100, every = 10, sleep_us = 2000, kill_at = 0, sparse_mib = 0;
	long restore_at = 0;
	int threads = 0, end_by_pthread_exit = 0;
	unsigned flags = CKPT_F_RESUME;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--threads"))
			threads = 1;
		else if (!strcmp(a, "--async"))
			flags |= CKPT_F_ASYNC;
		else if (!strcmp(a, "--pthread-exit"))
			end_by_pthread_exit = 1;
		else if (i + 1 >= argc)
			usage();
		else if (!strcmp(a, "--dir"))
			dir = argv[++i];
		else if (!strcmp(a, "--out"))
			out_path = argv[++i];
		else if (!strcmp(a, "--seed"))
			seed = number(argv[++i]);
		else if (!strcmp(a, "--steps"))
			steps = number(argv[++i]);
		else if (!strcmp(a, "--every"))
			every = number(argv[++i]);
		else if (!strcmp(a, "--sleep-us"))
			sleep_us = number(argv[++i]);
		else if (!strcmp(a, "--kill-at"))
			kill_at = number(argv[++i]);
		else if (!strcmp(a, "--sparse-mib"))
			sparse_mib = number(argv[++i]);
		else if (!strcmp(a, "--restore-at"))
			restore_at = number(argv[++i]);
		else
			usage();
	}
	if (!dir || !out_path || every < 1)
		usage();

	/* First thing: with a chain in DIR this does not return. */
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &(ckpt_options){.flags = flags});
	if (rc < 0) {
		fprintf(stderr, "resume-prog: ckpt_open: %s (%s): %s\n", ckpt_strerror(rc),
			ckpt_err_name(rc), ckpt_last_error());
		return 3;
	}

	rng ^= (uint64_t)seed * 0x2545f4914f6cdd1du;
	big = malloc(BIG_BYTES);
	mapped = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!big || mapped == MAP_FAILED)
		fail("allocating the state");
	if (sparse_mib) {
		sparse_bytes = (size_t)sparse_mib << 20;
		sparse = mmap(NULL, sparse_bytes, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (sparse == MAP_FAILED)
			fail("mapping the sparse area");
		for (int i = 0; i < 4; i++)
			memset(SPARSE_PAGE(i), i + 1, 4096);
	}
	memset(big, 0x5a, BIG_BYTES);
	for (int i = 0; i < SMALL_COUNT; i++)
		renew_small(i);
	FILE *out = fopen(out_path, "w");
	if (!out)
		fail(out_path);
	pthread_t th;
	if (threads) {
		if (pipe(waiter_pipe) || pthread_create(&th, NULL, waiter, NULL))
			fail("starting the second thread");
	}

	/* Process state a resume must bring back: checked at the end. */
	struct sigaction sa = {.sa_handler = on_usr1};
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	char where[PATH_MAX];
	if (sigaction(SIGUSR1, &sa, NULL) || sigprocmask(SIG_BLOCK, &block, NULL) ||
	    !realpath(dir, where) || chdir(where))
		fail("setting up signals and the directory");
	umask(027);

	check(ckpt_begin(c), "ckpt_begin");
	/* A local, on the stack: restored with it. */
	uint64_t running = 0;
	for (step_no = 1; step_no <= steps; step_no++) {
		do_step();
		running = running * 31 + next_rand();
		fprintf(out, "%ld %016llx\n", step_no, (unsigned long long)running);
		if (sleep_us)
			usleep((useconds_t)sleep_us);
		if (step_no % every || step_no == steps)
			continue;
		uint64_t id = 0;
		rc = ckpt_commit(c, &id);
		check(rc, "ckpt_commit");
		long off = ftell(out);
		ckpt_stats st;
		check(ckpt_stats_get(c, &st), "ckpt_stats_get");
		int nfd, nsnap;
		fd_census(&nfd, &nsnap);
		/* Pages the commit stored: after a resume, an increment too. */
		fprintf(stderr, "%s %llu step %ld offset %ld fds %d/%d pages %llu\n",
			rc == CKPT_RESUMED ? "resumed" : "commit", (unsigned long long)id, step_no,
			off, nfd, nsnap, (unsigned long long)st.commit_pages);
		if (rc == 0 && restore_at && id == (uint64_t)restore_at)
			check(ckpt_restore(c, id), "ckpt_restore");
		if (rc == 0 && kill_at && id == (uint64_t)kill_at)
			kill_once(out_path, id);
	}
	if (fclose(out))
		fail(out_path);
	if (threads) {
		close(waiter_pipe[1]);
		pthread_join(th, NULL);
	}
	/* The handler, the mask, the umask and the directory as set. */
	raise(SIGUSR1);
	sigset_t now;
	char cwd[PATH_MAX];
	if (usr1_seen != 1)
		fail("the SIGUSR1 handler is gone");
	if (sigprocmask(SIG_BLOCK, NULL, &now) || sigismember(&now, SIGUSR2) != 1)
		fail("SIGUSR2 is no longer blocked");
	if (umask(022) != 027)
		fail("the umask changed");
	if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, where))
		fail("the working directory changed");
	check(ckpt_end(c), "ckpt_end");
	ckpt_close(c);
	if (sparse)
		fprintf(stderr, "sparse %zu of %zu pages resident\n", sparse_resident(),
			sparse_bytes / 4096);
	printf("checksum %016llx\n", (unsigned long long)state_hash(running));
	if (end_by_pthread_exit) {
		/* glibc's own count: a private symbol, printed where it can be
		 * read; the flushed checksum is the check that stands alone. */
		const int *n = dlsym(RTLD_DEFAULT, "__nptl_nthreads");
		if (n)
			fprintf(stderr, "glibc counts %d threads\n", *n);
		pthread_exit(NULL);
	}
	return 0;
}

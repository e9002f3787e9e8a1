/*
 * resume-prog.c - a deterministic program for tests/resume.sh: killed at
 * any moment and run again, it must end exactly as a run that was never
 * interrupted.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Usage: resume-prog --dir DIR --out FILE [--seed S] [--steps N] [--every K]
 *                    [--sleep-us U] [--threads] [--async] [--kill-at ID]
 *                    [--sparse-mib M] [--restore-at ID] [--pthread-exit] [--pipe]
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
 * --pipe makes three pipes before the loop, all its own: one of 128 KiB
 * whose read end is also at a second number (close-on-exec, the first
 * not) and whose write end is non-blocking; one whose write end it closed
 * after writing a line into it; one whose read end it closed (SIGPIPE
 * ignored).  Before each commit it writes a line and 70000 bytes (more
 * than a pipe holds by default), both made from the step and the running
 * hash, into the first; after the commit returns (0 or CKPT_RESUMED) it
 * checks the three pipes' descriptors (same pipe, flags, descriptor
 * flags, capacity, the two read numbers sharing one open file
 * description), then reads the bytes back, half through each read number,
 * and compares them.  At the end it reads the second pipe's line, then
 * end of file, and writes to the third: EPIPE.  Any difference is printed
 * ("resume-prog: pipe: ...") and exits 1; at the end it prints "pipe:
 * checked after N commits".  The pipes change neither the checksum nor
 * FILE.
 * --kill-at ID sends the process SIGKILL right after the commit that wrote
 * snapshot ID returns 0, a deterministic kill; it happens once per FILE
 * (the marker FILE.killed-ID, made first, keeps a process resumed from an
 * earlier snapshot from killing itself at the same point again).
 * A file FILE.kill-resumed makes the next resumed run remove it and send
 * itself SIGKILL as soon as ckpt_commit returns CKPT_RESUMED.
 * CKPT_TEST_LAZY=1 in the environment adds CKPT_F_LAZY to the handle's
 * flags (tests/resume-lazy.sh).
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
#include <stdarg.h>
#include <stdint.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
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

/* --pipe: the program's own pipes. */
#define PIPE_CAP (128u << 10)
#define PIPE_BLOB 70000u
#define EOF_LINE "the writer said this, then closed its end\n"
static int pipe_r, pipe_r2, pipe_w; /* the 128 KiB pipe */
static int eof_r;                   /* its writer closed */
static int broken_w;                /* its reader closed */
static long pipe_checks;

static void pipe_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void pipe_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "resume-prog: pipe: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (step %ld)\n", step_no);
	va_end(ap);
	exit(1);
}

static void pipes_make(void)
{
	int p[2], q[2], x[2];
	if (pipe(p) || pipe(q) || pipe(x))
		fail("pipe");
	pipe_r = p[0];
	pipe_w = p[1];
	eof_r = q[0];
	broken_w = x[1];
	if (fcntl(pipe_w, F_SETPIPE_SZ, (int)PIPE_CAP) < (int)PIPE_CAP ||
	    fcntl(pipe_w, F_SETFL, O_NONBLOCK) || (pipe_r2 = fcntl(pipe_r, F_DUPFD_CLOEXEC, 0)) < 0)
		fail("setting up the pipe");
	if (write(q[1], EOF_LINE, strlen(EOF_LINE)) != (ssize_t)strlen(EOF_LINE) || close(q[1]) ||
	    close(x[0]) || signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fail("setting up the closed pipes");
}

/* The bytes written before the commit of `step`: a line, then PIPE_BLOB
 * bytes from a generator seeded by it, made and compared a chunk at a
 * time (big buffers would make every commit store more pages than a run
 * without --pipe, which resume.sh compares with). */
static int pipe_line(char *buf, long step, uint64_t running)
{
	return snprintf(buf, 64, "step %ld %016llx\n", step, (unsigned long long)running);
}

static void pipe_gen(uint64_t *x, unsigned char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		*x = *x * 6364136223846793005u + 1442695040888963407u;
		buf[i] = (unsigned char)(*x >> 56);
	}
}

static void pipe_fill(long step, uint64_t running)
{
	char line[64];
	unsigned char chunk[4096];
	int n = pipe_line(line, step, running);
	if (write(pipe_w, line, (size_t)n) != n)
		fail("writing into the pipe");
	uint64_t x = running ^ (uint64_t)step;
	for (size_t off = 0; off < PIPE_BLOB; off += sizeof chunk) {
		size_t k = PIPE_BLOB - off < sizeof chunk ? PIPE_BLOB - off : sizeof chunk;
		pipe_gen(&x, chunk, k);
		if (write(pipe_w, chunk, k) != (ssize_t)k)
			fail("writing into the pipe");
	}
}

/* The descriptor's flags, as a word: access mode and O_NONBLOCK,
 * close-on-exec in bit 30. */
static long fd_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
	if (fl < 0 || fdf < 0)
		pipe_fail("descriptor %d is not open: %s", fd, strerror(errno));
	return (fl & (O_ACCMODE | O_NONBLOCK)) | ((fdf & FD_CLOEXEC) ? 1l << 30 : 0);
}

static void pipe_is(int fd, long want, ino_t ino)
{
	struct stat st;
	if (fstat(fd, &st) || !S_ISFIFO(st.st_mode))
		pipe_fail("descriptor %d is not a pipe", fd);
	if (ino && st.st_ino != ino)
		pipe_fail("descriptor %d is another pipe than descriptor %d", fd, pipe_r);
	if (fd_flags(fd) != want)
		pipe_fail("descriptor %d has flags %#lx, not %#lx", fd, fd_flags(fd), want);
}

static void pipe_check(long step, uint64_t running)
{
	struct stat st;
	if (fstat(pipe_r, &st))
		pipe_fail("descriptor %d: %s", pipe_r, strerror(errno));
	pipe_is(pipe_r, O_RDONLY, st.st_ino);
	pipe_is(pipe_r2, O_RDONLY | (1l << 30), st.st_ino);
	pipe_is(pipe_w, O_WRONLY | O_NONBLOCK, st.st_ino);
	pipe_is(eof_r, O_RDONLY, 0);
	pipe_is(broken_w, O_WRONLY, 0);
	if (fcntl(pipe_r, F_GETPIPE_SZ) != (int)PIPE_CAP)
		pipe_fail("capacity %d, not %u", fcntl(pipe_r, F_GETPIPE_SZ), PIPE_CAP);
	long pid = getpid(), same = syscall(SYS_kcmp, pid, pid, KCMP_FILE, pipe_r, pipe_r2);
	if (same > 0)
		pipe_fail("descriptors %d and %d do not share a description", pipe_r, pipe_r2);
	int held = -1, eof_held = -1;
	char line[64], got_line[64];
	int n = pipe_line(line, step, running);
	if (ioctl(pipe_r, FIONREAD, &held) || held != n + (int)PIPE_BLOB)
		pipe_fail("the pipe holds %d bytes, not %u", held, n + PIPE_BLOB);
	if (ioctl(eof_r, FIONREAD, &eof_held) || eof_held != (int)strlen(EOF_LINE))
		pipe_fail("the closed pipe holds %d bytes, not %zu", eof_held, strlen(EOF_LINE));
	if (read(pipe_r, got_line, (size_t)n) != n || memcmp(got_line, line, (size_t)n))
		pipe_fail("the line read back is not \"%.*s\"", n - 1, line);
	/* The blob, its first half through one read number, the rest
	 * through the other. */
	uint64_t x = running ^ (uint64_t)step;
	unsigned char want[4096], got[4096];
	for (size_t off = 0; off < PIPE_BLOB;) {
		size_t k = PIPE_BLOB - off < sizeof want ? PIPE_BLOB - off : sizeof want;
		if (off < PIPE_BLOB / 2 && off + k > PIPE_BLOB / 2)
			k = PIPE_BLOB / 2 - off;
		int fd = off < PIPE_BLOB / 2 ? pipe_r : pipe_r2;
		pipe_gen(&x, want, k);
		if (read(fd, got, k) != (ssize_t)k)
			fail("reading the pipe back");
		if (memcmp(got, want, k))
			pipe_fail("the bytes %zu to %zu read back through %d differ", off, off + k, fd);
		off += k;
	}
	pipe_checks++;
}

static void pipe_end(void)
{
	char buf[128];
	ssize_t n = read(eof_r, buf, sizeof buf);
	if (n != (ssize_t)strlen(EOF_LINE) || memcmp(buf, EOF_LINE, (size_t)n))
		pipe_fail("the closed pipe read %zd bytes, not %zu", n, strlen(EOF_LINE));
	if ((n = read(eof_r, buf, sizeof buf)) != 0)
		pipe_fail("the closed pipe read %zd (%s), not end of file", n, strerror(errno));
	errno = 0;
	if (write(broken_w, "x", 1) != -1 || errno != EPIPE)
		pipe_fail("a write with no reader: %s, not EPIPE", strerror(errno));
	fprintf(stderr, "pipe: checked after %ld commits\n", pipe_checks);
}

/* SIGKILL as soon as a resume returns, if FILE.kill-resumed exists (it is
 * removed first): with CKPT_F_LAZY, while the memory is being filled. */
static void kill_resumed(const char *out)
{
	char mark[4096];
	snprintf(mark, sizeof mark, "%s.kill-resumed", out);
	if (unlink(mark) == 0)
		raise(SIGKILL);
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
			"[--sparse-mib M] [--restore-at ID] [--pthread-exit] [--pipe]\n(%s)\n",
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
	int threads = 0, end_by_pthread_exit = 0, pipes = 0;
	unsigned flags = CKPT_F_RESUME;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--threads"))
			threads = 1;
		else if (!strcmp(a, "--async"))
			flags |= CKPT_F_ASYNC;
		else if (!strcmp(a, "--pthread-exit"))
			end_by_pthread_exit = 1;
		else if (!strcmp(a, "--pipe"))
			pipes = 1;
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

	/* CKPT_TEST_LAZY=1 (tests/resume-lazy.sh): a resume lets the program
	 * go on before its memory is back. */
	const char *lazy = getenv("CKPT_TEST_LAZY");
	if (lazy && lazy[0] == '1')
		flags |= CKPT_F_LAZY;
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
	if (pipes)
		pipes_make();
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
		if (pipes)
			pipe_fill(step_no, running);
		rc = ckpt_commit(c, &id);
		check(rc, "ckpt_commit");
		if (rc == CKPT_RESUMED)
			kill_resumed(out_path);
		if (pipes)
			pipe_check(step_no, running);
		long off = ftell(out);
		ckpt_stats st;
		check(ckpt_stats_get(c, &st), "ckpt_stats_get");
		/* A lazy resume (CKPT_F_LAZY) holds the chain's files until its
		 * fill ends, which ckpt_wait waits for: the census is of the
		 * program's own descriptors.  Without it, this returns at once. */
		if (rc == CKPT_RESUMED)
			check(ckpt_wait(c, NULL), "ckpt_wait");
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
	if (pipes)
		pipe_end();
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

/*
 * bench/commit.c - what committing, restoring and resetting cost.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Four measurements, all in one run:
 *   1. commit     a 1 GiB field of floats (smooth values plus a little
 *                 noise, so that it compresses like simulation data rather
 *                 than like zeros) is committed once whole (the base), then
 *                 again after 0.1%, 1%, 10% and 100% of its pages were
 *                 written.  Each increment is set against a plain memcpy of
 *                 the same pages (the floor: no capture, no compression, no
 *                 file) and against the zstd command-line tool compressing
 *                 the same bytes at the same level on every CPU (what a
 *                 user could get by dumping the pages and piping them
 *                 through zstd).  The bar is a throughput ratio ckpt/zstd
 *                 of at least 0.8, on every line.
 *   2. restore    the field is rolled back from the snapshot files: to the
 *                 base across an increment, and to the newest snapshot.
 *   3. sparse     the base snapshot of a 16 GiB mapping (MAP_NORESERVE)
 *                 of which every 64th page was written, 256 MiB in all,
 *                 against the base of the same pages with the same content
 *                 written densely in a 256 MiB mapping: it must cost what
 *                 the pages cost, not what 16 GiB would.  The bars are at
 *                 most 1.5 times the dense base's time and 2 times its
 *                 bytes.
 *   4. reset      a 64 MiB region is committed once, then 16 random pages
 *                 are written and rolled back with ckpt_restore(CKPT_LATEST)
 *                 in a loop, as a fuzzer resets its target: with
 *                 CKPT_F_SHADOW the committed copies come from memory
 *                 (the bar is 10,000 resets a second; doc/TRACKING.md
 *                 says what bounds it), without it from the snapshot
 *                 file.
 *
 * Commits and restores are timed as the caller sees them and broken down
 * with ckpt_stats.  Figures are the best of REPS where the measurement can
 * be repeated: on a shared machine noise only ever adds time.  Chains are
 * written to directories under /tmp, removed at the end of each
 * measurement; the commit figures include their fsyncs, so they depend on
 * the file system behind /tmp, which is printed.
 *
 * Every measurement runs in a child process that allocates its own memory
 * and sends its figures back through a pipe: a measurement that crashes
 * inside the library is reported as such (and the run fails) while the
 * others still run.  The parent allocates nothing large and never tracks.
 *
 * While ckpt tracks, every first write to a page of the process faults,
 * every commit stores whatever changed anywhere in the process, and a
 * restore rolls back every tracked page, the heap and static data
 * included.  So nothing is printed or allocated while a handle tracks,
 * and whatever must survive a restore lives on the calling thread's stack,
 * which a restore leaves alone.
 *
 * Usage: commit [--quick] [--only commit|restore|sparse|reset]...
 * --quick (or CKPT_BENCH_QUICK=1) shrinks every size about 8 times and
 * shortens the reset loops; --only runs the measurements named (the
 * summary then has only their lines).
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
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REPS	    3
#define LEVEL	    1
#define RESET_PAGES 16
#define BAR_ZSTD    0.80
#define BAR_RESETS  10000.0
#define BAR_SPARSE_TIME	 1.5
#define BAR_SPARSE_BYTES 2.0
#define MIB	    ((size_t)1 << 20)
#define GIB	    ((size_t)1 << 30)

extern char **environ;

static const double dirty_pct[] = {0.1, 1, 10, 100};
#define NPCT (sizeof dirty_pct / sizeof dirty_pct[0])

/* The sizes of one run; --quick divides them. */
struct sizes {
	size_t field;	     /* the float field of measurements 1 and 2 */
	size_t sparse;	      /* the sparse mapping of measurement 3 */
	size_t sparse_chunk;  /* written at the start of every stride (one page) */
	size_t sparse_stride; /* (64 pages) */
	size_t reset_region;  /* the region of the reset loop */
	double reset_secs;    /* time spent in the loop with CKPT_F_SHADOW */
	double reset_secs_ns; /* and without */
};

/* A commit as the caller sees it, and the library's breakdown of it. */
struct commit_fig {
	uint64_t wall_ns;
	ckpt_stats s;
};

/* Measurement 1 for one share of dirty pages. */
struct pct_result {
	double pct;
	size_t pages;		/* written before each increment */
	struct commit_fig base; /* the first commit of the chain */
	struct commit_fig incr; /* the increment with the least pause */
	uint64_t memcpy_ns;	/* best of REPS */
	uint64_t zstd_ns;	/* best of REPS; 0 when the CLI is missing */
	uint64_t zstd_file_ns;	/* the same into a file, then fsync: durable as a commit */
	uint64_t zstd_in, zstd_out;
	uint64_t fallbacks; /* VMA-limit fallbacks over the increments */
};

/* One rollback of measurement 2. */
struct restore_fig {
	uint64_t wall_ns;
	uint64_t pages;	  /* ckpt_stats restore_pages */
	uint64_t ckpt_ns; /* ckpt_stats restore_ns */
};

/* One reset loop of measurement 4. */
struct reset_fig {
	uint64_t resets, busy_ns;
	uint64_t pages_last; /* restore_pages of the last reset */
	unsigned checks;     /* comparisons with the committed copy, all equal */
};

static struct sizes sz;
static size_t pagesz;
static long ncpu;
static char zstd_path[4096]; /* "" when the CLI is missing */
static char chain_dir[64];   /* the directory of the running measurement */

static void die(const char *what, const char *why)
{
	fprintf(stderr, "commit: %s: %s\n", what, why);
	exit(1);
}

static void die_ckpt(const char *what, int rc)
{
	fprintf(stderr, "commit: %s: %s (%s): %s\n", what, ckpt_strerror(rc), ckpt_err_name(rc),
		ckpt_last_error());
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

/* Decimal megabytes a second, the unit zstd itself reports. */
static double mb_per_s(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes * 1e3 / (double)ns : 0.0;
}

/* ---- memory ------------------------------------------------------------------------------ */

static char *map_anon(size_t bytes, int flags)
{
	char *p =
	    mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
	if (p == MAP_FAILED)
		die("mmap", strerror(errno));
	/* A transparent huge page is split at the first write-protect of one
	 * of its pages, at a cost that depends on the host's THP setting:
	 * the fields are kept to base pages, the unit ckpt tracks. */
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

/*
 * Fills whole pages with a smooth two-dimensional field plus noise: every
 * page is a row of floats, a product of sines along the row and across
 * rows, with a random term of 1/1000 of the amplitude in the low bits.
 * zstd finds structure in the exponents and high mantissa bits but not in
 * the noise, as with the output of a simulation.  `row` numbers the first
 * page, so that separate chunks continue one field.
 */
static void fill_field(char *p, size_t bytes, size_t row)
{
	size_t w = pagesz / sizeof(float);
	float *sx = malloc(w * sizeof *sx), *cx = malloc(w * sizeof *cx);
	if (!sx || !cx)
		die("malloc", strerror(errno));
	for (size_t x = 0; x < w; x++) {
		sx[x] = sinf(6.2831853f * (float)x / (float)w);
		cx[x] = 0.5f * cosf(18.849556f * (float)x / (float)w);
	}
	uint64_t seed = 0x2545f4914f6cdd1du ^ row;
	for (size_t off = 0; off < bytes; off += pagesz, row++) {
		float *f = (float *)(p + off);
		float a = cosf(0.00037f * (float)row), b = sinf(0.0021f * (float)(row % 100000));
		for (size_t x = 0; x < w; x++) {
			float noise = (float)(xorshift64(&seed) >> 40) / 16777216.0f - 0.5f;
			f[x] = 100.0f * (sx[x] * a + cx[x] * b + 0.001f * noise);
		}
	}
	free(sx);
	free(cx);
}

/* A random permutation of 0..npages-1 (Fisher-Yates): disjoint slices of
 * it are sets of distinct pages that no earlier slice wrote. */
static size_t *shuffled_pages(size_t npages)
{
	size_t *idx = malloc(npages * sizeof *idx);
	if (!idx)
		die("malloc", strerror(errno));
	for (size_t i = 0; i < npages; i++)
		idx[i] = i;
	uint64_t seed = 0x9e3779b97f4a7c15u;
	for (size_t i = npages - 1; i > 0; i--) {
		size_t j = (size_t)(xorshift64(&seed) % (i + 1));
		size_t t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
	return idx;
}

static size_t page_at(const size_t *idx, size_t i)
{
	return idx ? idx[i] : i;
}

/* Writes one float of each of n pages (idx NULL: pages 0..n-1).  One store
 * makes the page dirty, and the page still looks like the field. */
static void dirty_pages(char *base, const size_t *idx, size_t n, unsigned salt)
{
	size_t w = pagesz / sizeof(float);
	for (size_t i = 0; i < n; i++) {
		float *f = (float *)(base + page_at(idx, i) * pagesz);
		f[(i + salt) % w] += 0.0001f;
	}
}

static uint64_t copy_pages(char *dst, const char *base, const size_t *idx, size_t n)
{
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < n; i++)
		memcpy(dst + i * pagesz, base + page_at(idx, i) * pagesz, pagesz);
	return now_ns() - t0;
}

/* A digest of memory, to check a restore without keeping a second field:
 * four independent lanes keep it close to memory speed. */
static uint64_t digest(const char *p, size_t bytes)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t h[4] = {1, 2, 3, 4};
	for (size_t i = 0; i + 4 <= bytes / 8; i += 4)
		for (int k = 0; k < 4; k++)
			h[k] = (h[k] ^ w[i + k]) * 0x100000001b3u;
	return h[0] ^ (h[1] << 1) ^ (h[2] << 2) ^ (h[3] << 3);
}

/* ---- chains ------------------------------------------------------------------------------ */

static void make_chain_dir(void)
{
	snprintf(chain_dir, sizeof chain_dir, "/tmp/ckpt-bench-XXXXXX");
	if (!mkdtemp(chain_dir))
		die("mkdtemp /tmp/ckpt-bench-XXXXXX", strerror(errno));
}

/* Removes the chain directory and whatever a measurement left in it (all
 * of it, when the measurement died half-way). */
static void remove_chain_dir(void)
{
	DIR *d = opendir(chain_dir);
	if (!d)
		die(chain_dir, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) != 0)
			die(e->d_name, strerror(errno));
	}
	closedir(d);
	if (rmdir(chain_dir) != 0)
		die(chain_dir, strerror(errno));
}

static ckpt_t *open_chain(const char *dir, unsigned flags)
{
	ckpt_options opt;
	ckpt_options_init(&opt);
	opt.level = LEVEL;
	opt.threads = 0;
	opt.flags = CKPT_F_OVERWRITE | flags;
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &opt);
	if (rc)
		die_ckpt("ckpt_open", rc);
	return c;
}

static void begin(ckpt_t *c)
{
	int rc = ckpt_begin(c);
	if (rc)
		die_ckpt("ckpt_begin", rc);
}

static void end_close(ckpt_t *c)
{
	int rc = ckpt_end(c);
	if (rc)
		die_ckpt("ckpt_end", rc);
	ckpt_close(c);
}

static void get_stats(ckpt_t *c, ckpt_stats *s)
{
	int rc = ckpt_stats(c, s);
	if (rc)
		die_ckpt("ckpt_stats", rc);
}

static void commit(ckpt_t *c, struct commit_fig *f)
{
	uint64_t t0 = now_ns();
	int rc = ckpt_commit(c, NULL);
	f->wall_ns = now_ns() - t0;
	if (rc)
		die_ckpt("ckpt_commit", rc);
	get_stats(c, &f->s);
}

static void restore(ckpt_t *c, uint64_t id, struct restore_fig *f)
{
	uint64_t t0 = now_ns();
	int rc = ckpt_restore(c, id);
	f->wall_ns = now_ns() - t0;
	if (rc)
		die_ckpt("ckpt_restore", rc);
	ckpt_stats s;
	get_stats(c, &s);
	f->pages = s.restore_pages;
	f->ckpt_ns = s.restore_ns;
}

/* ---- the zstd command-line tool ---------------------------------------------------------- */

static void find_zstd(void)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(zstd_path, sizeof zstd_path, "%.*s/zstd", (int)n, n ? p : ".");
		if (access(zstd_path, X_OK) == 0)
			return;
		p += n + (p[n] == ':');
	}
	zstd_path[0] = '\0';
}

/* Writes the pages to a file in one writev per batch. */
static uint64_t write_pages_file(const char *path, const char *base, const size_t *idx, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die(path, strerror(errno));
	struct iovec iov[512];
	for (size_t i = 0; i < n;) {
		int k = 0;
		size_t want = 0;
		for (; i < n && k < 512; i++, k++) {
			iov[k].iov_base = (void *)(base + page_at(idx, i) * pagesz);
			iov[k].iov_len = pagesz;
			want += pagesz;
		}
		ssize_t got = writev(fd, iov, k);
		if (got < 0)
			die(path, strerror(errno));
		/* A regular file takes a whole writev unless the disk is full. */
		if ((size_t)got != want)
			die(path, "short write");
	}
	/* Written back now rather than while zstd runs, so that the kernel's
	 * writeback of a large file does not take CPU time from zstd. */
	if (fsync(fd) != 0 || close(fd) != 0)
		die(path, strerror(errno));
	return (uint64_t)n * pagesz;
}

/* Runs `zstd -1 -T<cpus> -q -c in > out` and returns its wall time: process
 * creation and exit included, as for a user who pipes a dump through it. */
static uint64_t run_zstd(const char *in, const char *out)
{
	char a0[] = "zstd", a1[] = "-1", a3[] = "-q", a4[] = "-c", threads[32];
	snprintf(threads, sizeof threads, "-T%ld", ncpu);
	char *argv[] = {a0, a1, threads, a3, a4, (char *)in, NULL};
	posix_spawn_file_actions_t fa;
	if (posix_spawn_file_actions_init(&fa) != 0 ||
	    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out, O_WRONLY | O_CREAT | O_TRUNC,
					     0600) != 0)
		die("posix_spawn_file_actions", strerror(errno));
	pid_t pid;
	int st;
	uint64_t t0 = now_ns();
	int rc = posix_spawn(&pid, zstd_path, &fa, NULL, argv, environ);
	if (rc)
		die("posix_spawn zstd", strerror(rc));
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid zstd", strerror(errno));
	uint64_t ns = now_ns() - t0;
	posix_spawn_file_actions_destroy(&fa);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die(zstd_path, "failed");
	return ns;
}

/* ---- child processes --------------------------------------------------------------------- */

/*
 * Runs fn(arg, out) in a child process and copies the `size` bytes it
 * leaves in *out back through a pipe.  The child writes its chain in
 * chain_dir, made before and removed after, whatever became of the child.
 * Returns 0, or -1 after printing how the child ended (a signal from inside
 * the library, or a failure the child reported on stderr).
 */
static int isolated(void (*fn)(const void *arg, void *out), const void *arg, void *out, size_t size,
		    const char *what)
{
	int fd[2];
	if (pipe(fd) != 0)
		die("pipe", strerror(errno));
	make_chain_dir();
	/* Whatever is buffered would otherwise be printed twice. */
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		die("fork", strerror(errno));
	if (pid == 0) {
		close(fd[0]);
		fn(arg, out);
		for (size_t done = 0; done < size;) {
			ssize_t n = write(fd[1], (const char *)out + done, size - done);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				_exit(1);
			done += (size_t)n;
		}
		_exit(0);
	}
	close(fd[1]);
	size_t got = 0;
	while (got < size) {
		ssize_t n = read(fd[0], (char *)out + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid", strerror(errno));
	remove_chain_dir();
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && got == size)
		return 0;
	if (WIFSIGNALED(st))
		printf("%s: FAILED, the measurement died of signal %d (%s)\n", what, WTERMSIG(st),
		       strsignal(WTERMSIG(st)));
	else
		printf("%s: FAILED, the measurement exited with status %d\n", what,
		       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	fflush(stdout);
	return -1;
}

/* The field of measurements 1 and 2, filled, and a random order of its pages. */
static char *new_field(size_t **idx)
{
	char *field = map_anon(sz.field, 0);
	fill_field(field, sz.field, 0);
	*idx = shuffled_pages(sz.field / pagesz);
	return field;
}

/* ---- 1. commit --------------------------------------------------------------------------- */

static void run_commit(const void *arg, void *out)
{
	struct pct_result *r = out;
	r->pct = *(const double *)arg;
	size_t *idx, npages = sz.field / pagesz;
	char *field = new_field(&idx);
	/* The floor's destination, populated so that the copies do not
	 * time page faults. */
	char *copybuf = map_anon(sz.field, 0);
	memset(copybuf, 1, sz.field);

	size_t n = (size_t)((double)npages * r->pct / 100.0 + 0.5);
	if (n < 1)
		n = 1;
	int all = n >= npages;
	if (all)
		n = npages;
	r->pages = n;

	ckpt_t *c = open_chain(chain_dir, 0);
	/* The copy buffer is the floor's scratch, not the program's state. */
	int rc = ckpt_exclude(c, copybuf, sz.field);
	if (rc)
		die_ckpt("ckpt_exclude", rc);
	struct commit_fig f[REPS];
	uint64_t copy_ns[REPS];
	begin(c);
	commit(c, &r->base);
	for (int rep = 0; rep < REPS; rep++) {
		/* Fresh pages each time: a slice of the permutation that no
		 * earlier repetition wrote (every page at 100%). */
		const size_t *set = all ? NULL : idx + (size_t)rep * n;
		dirty_pages(field, set, n, (unsigned)rep);
		commit(c, &f[rep]);
		copy_ns[rep] = copy_pages(copybuf, field, set, n);
	}
	end_close(c);

	int b = 0;
	r->memcpy_ns = copy_ns[0];
	r->fallbacks = 0;
	for (int rep = 0; rep < REPS; rep++) {
		if (f[rep].s.commit_pause_ns < f[b].s.commit_pause_ns)
			b = rep;
		if (copy_ns[rep] < r->memcpy_ns)
			r->memcpy_ns = copy_ns[rep];
		if (f[rep].s.fallbacks > r->fallbacks)
			r->fallbacks = f[rep].s.fallbacks;
	}
	r->incr = f[b];

	r->zstd_ns = r->zstd_file_ns = r->zstd_in = r->zstd_out = 0;
	if (zstd_path[0]) {
		/* The last repetition's pages, as one file: the same bytes the
		 * commit compressed, read from the page cache. */
		char in[96], zst[96];
		snprintf(in, sizeof in, "%s/pages.raw", chain_dir);
		snprintf(zst, sizeof zst, "%s/pages.zst", chain_dir);
		const size_t *set = all ? NULL : idx + (size_t)(REPS - 1) * n;
		r->zstd_in = write_pages_file(in, field, set, n);
		/* Once to a file for its size, then timed into /dev/null. */
		run_zstd(in, zst);
		struct stat st;
		if (stat(zst, &st) != 0)
			die(zst, strerror(errno));
		r->zstd_out = (uint64_t)st.st_size;
		for (int rep = 0; rep < REPS; rep++) {
			uint64_t ns = run_zstd(in, "/dev/null");
			if (!r->zstd_ns || ns < r->zstd_ns)
				r->zstd_ns = ns;
			/* Into a file on the same file system, synced: what a
			 * commit does with its output. */
			uint64_t t0 = now_ns();
			run_zstd(in, zst);
			int fd = open(zst, O_RDONLY | O_CLOEXEC);
			if (fd < 0 || fsync(fd) != 0)
				die(zst, strerror(errno));
			close(fd);
			ns = now_ns() - t0;
			if (!r->zstd_file_ns || ns < r->zstd_file_ns)
				r->zstd_file_ns = ns;
		}
	}
}

static const char *pct_label(double pct, char *buf, size_t len)
{
	snprintf(buf, len, pct < 1 ? "%.1f%%" : "%.0f%%", pct);
	return buf;
}

static void print_commit_row(const char *label, size_t pages, const struct commit_fig *f,
			     const struct pct_result *r)
{
	const ckpt_stats *s = &f->s;
	printf("%7s  %8zu  %8llu  %8.1f  %8.1f  %8.1f  %8.1f  %8.1f  %8.1f", label, pages,
	       (unsigned long long)s->commit_pages, ms(f->wall_ns), ms(s->commit_pause_ns),
	       ms(s->commit_capture_ns), ms(s->commit_compress_ns), ms(s->commit_write_ns),
	       ms(s->commit_sync_ns));
	if (r)
		printf("  %8.2f", ms(r->memcpy_ns));
	if (r && r->zstd_ns)
		printf("  %8.1f", ms(r->zstd_ns));
	printf("\n");
}

static double ckpt_rate(const ckpt_stats *s)
{
	return mb_per_s(s->commit_raw_bytes, s->commit_pause_ns);
}

static double zstd_rate(const struct pct_result *r)
{
	return mb_per_s(r->zstd_in, r->zstd_ns);
}

static void print_rate_row(const char *label, const ckpt_stats *s, const struct pct_result *r)
{
	printf("%7s  %9.1f  %10.1f  %9.1f  %8.3f", label, in_mib(s->commit_raw_bytes),
	       in_mib(s->commit_stored_bytes), in_mib(s->commit_file_bytes),
	       (double)s->commit_stored_bytes / (double)s->commit_raw_bytes);
	if (r && r->zstd_ns)
		printf("  %8.3f  %11.0f  %9.0f  %9.0f  %9.2f%s\n",
		       (double)r->zstd_out / (double)r->zstd_in,
		       mb_per_s((uint64_t)r->pages * pagesz, r->memcpy_ns), ckpt_rate(s),
		       zstd_rate(r), ckpt_rate(s) / zstd_rate(r),
		       ckpt_rate(s) / zstd_rate(r) < BAR_ZSTD ? "  below" : "");
	else if (r)
		printf("  %8s  %11.0f  %9.0f\n", "",
		       mb_per_s((uint64_t)r->pages * pagesz, r->memcpy_ns), ckpt_rate(s));
	else
		printf("  %8s  %11s  %9.0f\n", "", "", ckpt_rate(s));
}

/* ---- 2. restore -------------------------------------------------------------------------- */

struct restore_out {
	struct restore_fig base;   /* to snapshot 1 across increment 2 */
	struct restore_fig latest; /* to the newest, best of REPS */
	int ok;			   /* memory equal to the snapshot after each */
};

static void run_restore(const void *arg, void *out)
{
	(void)arg;
	struct restore_out *o = out;
	size_t *idx, npages = sz.field / pagesz;
	char *field = new_field(&idx);
	size_t ten = npages / 10, one = npages / 100 ? npages / 100 : 1;
	/* From the files: no CKPT_F_SHADOW. */
	ckpt_t *c = open_chain(chain_dir, 0);
	struct commit_fig f;
	struct restore_fig rb, rl[REPS];
	begin(c);
	commit(c, &f); /* 1: the base */
	uint64_t want = digest(field, sz.field);
	dirty_pages(field, idx, ten, 1);
	commit(c, &f); /* 2: an increment */
	dirty_pages(field, idx + ten, ten, 2);
	restore(c, 1, &rb);
	int ok = digest(field, sz.field) == want;
	/* 3: the base again, so that rolling back to the newest snapshot
	 * rewrites only what is dirtied next. */
	commit(c, &f);
	for (int rep = 0; rep < REPS; rep++) {
		dirty_pages(field, idx + 2 * ten + (size_t)rep * one, one, 3);
		restore(c, CKPT_LATEST, &rl[rep]);
		ok = ok && digest(field, sz.field) == want;
	}
	end_close(c);

	o->base = rb;
	o->latest = rl[0];
	for (int rep = 1; rep < REPS; rep++)
		if (rl[rep].wall_ns < o->latest.wall_ns)
			o->latest = rl[rep];
	o->ok = ok;
}

static void print_restore_row(const char *to, const char *dirtied, const struct restore_fig *f)
{
	double gbs = f->ckpt_ns ? (double)f->pages * (double)pagesz / (double)f->ckpt_ns : 0.0;
	printf("%-14s  %-26s  %8llu  %9.2f  %9.2f  %7.3f\n", to, dirtied,
	       (unsigned long long)f->pages, ms(f->wall_ns), ms(f->ckpt_ns), gbs);
}

/* ---- 3. sparse --------------------------------------------------------------------------- */

/*
 * The base of a large sparse mapping against the same pages written densely.
 * The sparse mapping (MAP_NORESERVE) has sz.sparse_chunk bytes written at the
 * start of every sz.sparse_stride; the dense one holds the same chunks, with
 * the same content, one after the other.  Nothing else differs: what the
 * sparse base costs beyond the dense one is what the untouched address space
 * costs.  Two contents: whole pages of the float field, and pages that hold
 * a 64-byte record each (zeros after it), which compress so well that what
 * a snapshot spends per page besides the data shows.
 */
enum { SPARSE_FIELD, SPARSE_RECORDS, SPARSE_NCONTENT };
static const char *const sparse_content[SPARSE_NCONTENT] = {"field", "64 B records"};

struct sparse_arg {
	int dense;
	int content;
};

#define RECORD_BYTES 64

static void run_sparse(const void *arg, void *out)
{
	const struct sparse_arg *a = arg;
	struct commit_fig *f = out;
	size_t chunks = sz.sparse / sz.sparse_stride;
	size_t step = a->dense ? sz.sparse_chunk : sz.sparse_stride;
	char *p = map_anon(a->dense ? chunks * sz.sparse_chunk : sz.sparse,
			   a->dense ? 0 : MAP_NORESERVE);
	char *page = map_anon(pagesz, 0);
	for (size_t k = 0; k < chunks; k++) {
		size_t row = k * sz.sparse_stride / pagesz;
		if (a->content == SPARSE_FIELD) {
			fill_field(p + k * step, sz.sparse_chunk, row);
			continue;
		}
		for (size_t off = 0; off < sz.sparse_chunk; off += pagesz) {
			fill_field(page, pagesz, row + off / pagesz);
			memcpy(p + k * step + off, page, RECORD_BYTES);
		}
	}
	ckpt_t *c = open_chain(chain_dir, 0);
	/* The scratch page is the benchmark's, not the program's state. */
	int rc = ckpt_exclude(c, page, pagesz);
	if (rc)
		die_ckpt("ckpt_exclude", rc);
	begin(c);
	commit(c, f);
	end_close(c);
}

static double sparse_time_ratio(const struct commit_fig f[2])
{
	return (double)f[0].wall_ns / (double)f[1].wall_ns;
}

static double sparse_bytes_ratio(const struct commit_fig f[2])
{
	return (double)f[0].s.commit_file_bytes / (double)f[1].s.commit_file_bytes;
}

static int sparse_above(const struct commit_fig f[2])
{
	return sparse_time_ratio(f) > BAR_SPARSE_TIME || sparse_bytes_ratio(f) > BAR_SPARSE_BYTES;
}

static void print_sparse_row(const char *label, const struct commit_fig *f)
{
	const ckpt_stats *s = &f->s;
	printf("%-28s  %8llu  %8.0f  %8.1f  %8.1f  %8.1f  %8.1f  %8.1f  %8.1f  %10.2f  %8.2f\n",
	       label, (unsigned long long)s->commit_pages,
	       in_mib((uint64_t)s->tracked_pages * pagesz), ms(f->wall_ns), ms(s->commit_pause_ns),
	       ms(s->commit_capture_ns), ms(s->commit_compress_ns), ms(s->commit_write_ns),
	       ms(s->commit_sync_ns), in_mib(s->commit_stored_bytes),
	       in_mib(s->commit_file_bytes));
}

/* Measurement 3: for each content, the sparse base and the dense one, REPS
 * times each in turn, the quickest of each kept.  have[k]: content k ran. */
static void sparse_section(const char *ssz, const char *tsz,
			   struct commit_fig out[SPARSE_NCONTENT][2], int have[SPARSE_NCONTENT])
{
	printf("3. Base snapshot of a sparse %s mapping (MAP_NORESERVE), every %zuth page written"
	       " (%s), against the same pages written densely (times in ms, best of %d)\n",
	       ssz, sz.sparse_stride / pagesz, tsz, REPS);
	printf("%-28s  %8s  %8s  %8s  %8s  %8s  %8s  %8s  %8s  %10s  %8s\n", "content, mapping",
	       "pages", "tracked", "commit", "pause", "capture", "compress", "write", "sync",
	       "stored MiB", "file MiB");
	for (int k = 0; k < SPARSE_NCONTENT; k++) {
		int got[2] = {0, 0};
		have[k] = 1;
		for (int rep = 0; rep < REPS && have[k]; rep++)
			for (int dense = 0; dense < 2 && have[k]; dense++) {
				struct sparse_arg a = {dense, k};
				struct commit_fig f;
				if (isolated(run_sparse, &a, &f, sizeof f, dense ? "dense" : "sparse")) {
					have[k] = 0;
					break;
				}
				if (!got[dense] || f.wall_ns < out[k][dense].wall_ns)
					out[k][dense] = f;
				got[dense] = 1;
			}
		if (!have[k])
			continue;
		char label[64];
		snprintf(label, sizeof label, "%s, sparse %s", sparse_content[k], ssz);
		print_sparse_row(label, &out[k][0]);
		snprintf(label, sizeof label, "%s, dense %s", sparse_content[k], tsz);
		print_sparse_row(label, &out[k][1]);
		printf("%-28s  sparse/dense: commit time %.2f (bar <= %.1f), file bytes %.2f"
		       " (bar <= %.1f)%s\n",
		       "", sparse_time_ratio(out[k]), BAR_SPARSE_TIME, sparse_bytes_ratio(out[k]),
		       BAR_SPARSE_BYTES, sparse_above(out[k]) ? "  ABOVE THE BAR" : "");
		fflush(stdout);
	}
	printf("(tracked: MiB the tracker covers, the process's other memory included; commit: as"
	       " the caller sees it)\n\n");
}

static void print_sparse_bars(const struct commit_fig f[SPARSE_NCONTENT][2],
			      const int have[SPARSE_NCONTENT])
{
	printf("sparse base against dense (bars: time <= %.1f, bytes <= %.1f):", BAR_SPARSE_TIME,
	       BAR_SPARSE_BYTES);
	int above = 0;
	for (int k = 0; k < SPARSE_NCONTENT; k++) {
		if (!have[k]) {
			printf("  %s FAILED", sparse_content[k]);
			continue;
		}
		printf("  %s %.2f, %.2f", sparse_content[k], sparse_time_ratio(f[k]),
		       sparse_bytes_ratio(f[k]));
		above |= sparse_above(f[k]);
	}
	printf("%s\n", above ? "  ABOVE THE BAR" : "");
}

/* ---- 4. reset ---------------------------------------------------------------------------- */

static void check_equal(const char *region, const char *copy, size_t bytes, uint64_t after)
{
	if (!memcmp(region, copy, bytes))
		return;
	size_t i = 0;
	while (region[i] == copy[i])
		i++;
	fprintf(stderr, "commit: reset loop: after %llu resets, byte %zu is %#x, committed %#x\n",
		(unsigned long long)after, i, (unsigned char)region[i], (unsigned char)copy[i]);
	exit(1);
}

/*
 * Commits a heap region once, then writes RESET_PAGES random distinct pages
 * and rolls them back, for `secs` of time spent in those two steps.  The
 * region is compared with a copy taken before tracking after 1, 10, 100...
 * resets and at the end, outside the timed steps.  Everything the loop
 * keeps is local: a restore would roll back anything it kept in the heap.
 */
static void run_reset(const void *arg, void *out)
{
	unsigned flags = *(const unsigned *)arg;
	struct reset_fig *o = out;
	double secs = flags & CKPT_F_SHADOW ? sz.reset_secs : sz.reset_secs_ns;
	size_t bytes = sz.reset_region, npages = bytes / pagesz;
	char *region = aligned_alloc(pagesz, bytes);
	if (!region)
		die("aligned_alloc", strerror(errno));
	fill_field(region, bytes, 0);
	char *copy = map_anon(bytes, 0);
	memcpy(copy, region, bytes);

	uint64_t budget = (uint64_t)(secs * 1e9), busy = 0, resets = 0, next_check = 1;
	uint64_t seed = 0xd1b54a32d192ed03u;
	unsigned checks = 0;
	ckpt_t *c = open_chain(chain_dir, flags);
	/* The reference copy is the benchmark's, not the program's state. */
	int rc = ckpt_exclude(c, copy, bytes);
	if (rc)
		die_ckpt("ckpt_exclude", rc);
	struct commit_fig f;
	begin(c);
	commit(c, &f);
	while (busy < budget) {
		size_t pg[RESET_PAGES];
		for (int k = 0; k < RESET_PAGES;) {
			size_t p = (size_t)(xorshift64(&seed) % npages);
			int seen = 0;
			for (int j = 0; j < k; j++)
				seen |= pg[j] == p;
			if (!seen)
				pg[k++] = p;
		}
		uint64_t t0 = now_ns();
		for (int k = 0; k < RESET_PAGES; k++)
			region[pg[k] * pagesz + (xorshift64(&seed) & (pagesz - 1))]++;
		rc = ckpt_restore(c, CKPT_LATEST);
		busy += now_ns() - t0;
		if (rc)
			die_ckpt("ckpt_restore", rc);
		if (++resets == next_check) {
			check_equal(region, copy, bytes, resets);
			checks++;
			next_check *= 10;
		}
	}
	check_equal(region, copy, bytes, resets);
	checks++;
	ckpt_stats s;
	get_stats(c, &s);
	end_close(c);
	o->resets = resets;
	o->busy_ns = busy;
	o->pages_last = s.restore_pages;
	o->checks = checks;
}

static double resets_per_s(const struct reset_fig *r)
{
	return (double)r->resets / ((double)r->busy_ns / 1e9);
}

static void print_reset_row(const char *mode, const struct reset_fig *r)
{
	printf("%-16s  %9llu  %7.2f  %10.0f  %9.1f  %13llu  %6u\n", mode,
	       (unsigned long long)r->resets, (double)r->busy_ns / 1e9, resets_per_s(r),
	       (double)r->busy_ns / 1e3 / (double)r->resets, (unsigned long long)r->pages_last,
	       r->checks);
}

/* ---- main -------------------------------------------------------------------------------- */

static const char *fs_name(const char *path)
{
	struct statfs sf;
	if (statfs(path, &sf) != 0)
		return "?";
	switch ((unsigned long)sf.f_type) {
	case 0xef53:
		return "ext4";
	case 0x01021994:
		return "tmpfs";
	case 0x58465342:
		return "xfs";
	case 0x9123683e:
		return "btrfs";
	case 0x794c7630:
		return "overlayfs";
	default:
		return "other";
	}
}

enum { SEC_COMMIT = 1, SEC_RESTORE = 2, SEC_SPARSE = 4, SEC_RESET = 8, SEC_ALL = 15 };

static void usage(const char *argv0, int status)
{
	fprintf(stderr,
		"usage: %s [--quick] [--only commit|restore|sparse|reset]...   (or "
		"CKPT_BENCH_QUICK=1)\n"
		"--quick shrinks every size about 8 times for a fast run;\n"
		"--only runs the measurements named (every one by default)\n",
		argv0);
	exit(status);
}

/* Whether the run is a quick one; *sections gets the measurements to run. */
static int options(int argc, char **argv, unsigned *sections)
{
	static const char *const names[] = {"commit", "restore", "sparse", "reset"};
	int quick = quick_from_env();
	*sections = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			unsigned k = 0;
			while (k < 4 && strcmp(argv[i + 1], names[k]))
				k++;
			if (k == 4)
				usage(argv[0], 2);
			*sections |= 1u << k;
			i++;
		} else {
			usage(argv[0], strcmp(argv[i], "--help") ? 2 : 0);
		}
	}
	if (!*sections)
		*sections = SEC_ALL;
	return quick;
}

static void size_str(size_t bytes, char *buf, size_t len)
{
	if (bytes % GIB == 0)
		snprintf(buf, len, "%zu GiB", bytes / GIB);
	else
		snprintf(buf, len, "%zu MiB", bytes / MIB);
}

int main(int argc, char **argv)
{
	unsigned sections;
	int quick = options(argc, argv, &sections), failed = 0;
	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 1)
		ncpu = 1;
	find_zstd();
	sz = (struct sizes){
	    .field = GIB,
	    .sparse = 16 * GIB,
	    .sparse_chunk = pagesz,
	    .sparse_stride = 64 * pagesz,
	    .reset_region = 64 * MIB,
	    .reset_secs = 2.0,
	    .reset_secs_ns = 0.5,
	};
	if (quick) {
		sz.field /= 8;
		sz.sparse /= 8;
		sz.reset_region /= 8;
		sz.reset_secs = 0.5;
		sz.reset_secs_ns = 0.2;
	}
	char fsz[32], ssz[32], tsz[32], rsz[32];
	size_t touched = sz.sparse / sz.sparse_stride * sz.sparse_chunk;
	size_str(sz.field, fsz, sizeof fsz);
	size_str(sz.sparse, ssz, sizeof ssz);
	size_str(touched, tsz, sizeof tsz);
	size_str(sz.reset_region, rsz, sizeof rsz);

	printf("libckpt %s, page %zu B, %ld CPUs online, zstd level %d, ckpt threads = CPUs,"
	       " best of %d%s\n",
	       ckpt_version_string(), pagesz, ncpu, LEVEL, REPS, quick ? ", QUICK run" : "");
	printf("chains under /tmp (%s), fsynced by every commit\n", fs_name("/tmp"));
	if (zstd_path[0])
		printf("zstd CLI: %s -%d -T%ld -q -c FILE > /dev/null\n\n", zstd_path, LEVEL, ncpu);
	else
		printf("zstd CLI: missing from PATH, its columns are skipped\n\n");

	struct pct_result res[NPCT];
	int have[NPCT] = {0};
	if (sections & SEC_COMMIT) {
		printf("1. Commit of a %s float field, pages written at random between commits"
		       " (times in ms)\n",
		       fsz);
		printf("%7s  %8s  %8s  %8s  %8s  %8s  %8s  %8s  %8s  %8s  %8s\n", "dirty", "pages",
		       "stored", "commit", "pause", "capture", "compress", "write", "sync", "memcpy",
		       zstd_path[0] ? "zstd CLI" : "");
		for (size_t i = 0; i < NPCT; i++) {
			char label[16], what[32];
			pct_label(dirty_pct[i], label, sizeof label);
			snprintf(what, sizeof what, "%7s", label);
			have[i] = !isolated(run_commit, &dirty_pct[i], &res[i], sizeof res[i], what);
			if (!have[i]) {
				failed = 1;
				continue;
			}
			print_commit_row(label, res[i].pages, &res[i].incr, &res[i]);
			if (res[i].fallbacks)
				printf("warning: %llu VMA-limit fallbacks in one epoch\n",
				       (unsigned long long)res[i].fallbacks);
			if (res[i].incr.s.commit_pages < res[i].pages)
				printf("warning: %zu pages written, %llu stored\n", res[i].pages,
				       (unsigned long long)res[i].incr.s.commit_pages);
			fflush(stdout);
		}
		/* Every base did the same work: the best of them. */
		const struct commit_fig *base = NULL;
		for (size_t i = 0; i < NPCT; i++)
			if (have[i] && (!base || res[i].base.s.commit_pause_ns < base->s.commit_pause_ns))
				base = &res[i].base;
		if (base)
			print_commit_row("base", sz.field / pagesz, base, NULL);

		printf("\n%7s  %9s  %10s  %9s  %8s  %8s  %11s  %9s  %9s  %9s\n", "dirty", "raw MiB",
		       "stored MiB", "file MiB", "ckpt c/r", "zstd c/r", "memcpy MB/s", "ckpt MB/s",
		       "zstd MB/s", "ckpt/zstd");
		for (size_t i = 0; i < NPCT; i++) {
			char label[16];
			if (have[i])
				print_rate_row(pct_label(res[i].pct, label, sizeof label), &res[i].incr.s,
					       &res[i]);
		}
		if (base)
			print_rate_row("base", &base->s, NULL);
		printf("(c/r: compressed/raw bytes; MB/s = 10^6 B/s; ckpt: raw bytes / commit pause; zstd:"
		       " input / process wall time; below: under the bar of %.2f)\n\n",
		       BAR_ZSTD);

	}

	if (sections & SEC_RESTORE) {
		printf("2. Restore of the %s field from the snapshot files (no CKPT_F_SHADOW)\n", fsz);
		printf("%-14s  %-26s  %8s  %9s  %9s  %7s\n", "to", "written since the newest", "pages",
		       "wall ms", "ckpt ms", "GB/s");
		struct restore_out ro;
		if (!isolated(run_restore, NULL, &ro, sizeof ro, "restore")) {
			char what[32];
			print_restore_row("id 1 (base)", "10% (+10% in increment 2)", &ro.base);
			snprintf(what, sizeof what, "1%% (best of %d)", REPS);
			print_restore_row("CKPT_LATEST", what, &ro.latest);
			printf("(pages: ckpt_stats restore_pages; GB/s = restore_pages x page / "
			       "restore_ns)\n");
			printf("memory after every restore %s the snapshot\n",
			       ro.ok ? "equals" : "DIFFERS FROM");
			failed |= !ro.ok;
		} else {
			failed = 1;
		}
		printf("\n");

	}

	struct commit_fig spf[SPARSE_NCONTENT][2]; /* sparse, dense */
	int have_sp[SPARSE_NCONTENT] = {0};
	if (sections & SEC_SPARSE) {
		sparse_section(ssz, tsz, spf, have_sp);
		for (int k = 0; k < SPARSE_NCONTENT; k++)
			failed |= !have_sp[k];
	}

	struct reset_fig rs[2];
	int have_rs[2] = {0};
	if (sections & SEC_RESET) {
		printf("4. Reset loop on a %s heap region: %d random pages written (a byte each),"
		       " then ckpt_restore(CKPT_LATEST)\n",
		       rsz, RESET_PAGES);
		printf("%-16s  %9s  %7s  %10s  %9s  %13s  %6s\n", "mode", "resets", "seconds", "resets/s",
		       "us/reset", "restore_pages", "checks");
		static const unsigned modes[] = {CKPT_F_SHADOW, 0};
		static const char *const mode_name[] = {"CKPT_F_SHADOW", "from the file"};
		for (int m = 0; m < 2; m++) {
			have_rs[m] = !isolated(run_reset, &modes[m], &rs[m], sizeof rs[m], mode_name[m]);
			if (have_rs[m])
				print_reset_row(mode_name[m], &rs[m]);
			else
				failed = 1;
		}
		printf("(seconds: spent writing and restoring; restore_pages: as ckpt_stats reports for"
		       " the last reset; checks: memory equal to the commit)\n\n");

	}

	if (sections & SEC_COMMIT) {
		int below = 0;
		printf("commit throughput ckpt/zstd CLI (bar >= %.2f):", BAR_ZSTD);
		for (size_t i = 0; i < NPCT; i++) {
			char label[16];
			pct_label(dirty_pct[i], label, sizeof label);
			if (!have[i])
				printf("  %s FAILED", label);
			else if (!res[i].zstd_ns)
				printf("  %s -", label);
			else
				printf("  %s %.2f", label, ckpt_rate(&res[i].incr.s) / zstd_rate(&res[i]));
			below |= have[i] && res[i].zstd_ns &&
				 ckpt_rate(&res[i].incr.s) / zstd_rate(&res[i]) < BAR_ZSTD;
		}
		printf("%s\n", !zstd_path[0] ? "  (not measured: zstd CLI missing)"
			       : below	     ? "  BELOW THE BAR"
					     : "");
		if (zstd_path[0]) {
			/* The CLI above writes to /dev/null; a commit writes a file and
			 * syncs it.  The same comparison with the CLI doing that too. */
			int below_f = 0;
			printf("the same, zstd CLI writing a file it then fsyncs:");
			for (size_t i = 0; i < NPCT; i++) {
				char label[16];
				pct_label(dirty_pct[i], label, sizeof label);
				if (!have[i] || !res[i].zstd_file_ns) {
					printf("  %s -", label);
					continue;
				}
				double q = ckpt_rate(&res[i].incr.s) /
					   mb_per_s(res[i].zstd_in, res[i].zstd_file_ns);
				printf("  %s %.2f", label, q);
				below_f |= q < BAR_ZSTD;
			}
			printf("%s\n", below_f ? "  BELOW THE BAR" : "");
		}
	}
	if (sections & SEC_SPARSE)
		print_sparse_bars(spf, have_sp);
	if (sections & SEC_RESET) {
		if (have_rs[0])
			printf("resets/s with CKPT_F_SHADOW (%d pages, %s): %.0f (bar >= %.0f)%s\n",
			       RESET_PAGES, rsz, resets_per_s(&rs[0]), BAR_RESETS,
			       resets_per_s(&rs[0]) >= BAR_RESETS ? "" : "  BELOW THE BAR");
		else
			printf("resets/s with CKPT_F_SHADOW: FAILED\n");
	}
	return failed;
}

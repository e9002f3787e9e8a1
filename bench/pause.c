/*
 * bench/pause.c - how long a commit stops the program: synchronous commits
 * against CKPT_F_ASYNC, and the zstd levels behind the default.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * 1. pause   a 1 GiB field of floats (smooth values plus noise, as a
 *            simulation writes them) is committed whole once, then STEPS
 *            times after 5% of its pages were rewritten.  Per commit:
 *            the pause (time inside ckpt_commit), the wall time until the
 *            snapshot is durable (ckpt_wait), the bytes stored; and the
 *            floor, a memcpy of the same pages.  Async commits are timed
 *            twice: with the previous commit durable before each step (a
 *            step longer than the background write), and back to back
 *            (the pause then includes waiting for the previous write).
 *            The bars: async pause <= 4 x the memcpy floor, and sync wall
 *            <= 1/3 of CRIU 4.2's full dump of this workload (767 ms on
 *            the reference machine; this kernel has no soft-dirty bits).
 * 2. levels  zstd levels -5, -3, -1, 1, 2, 3 on blocks of 64 pages (the
 *            unit ckpt compresses) of the field and of a typical heap
 *            (malloc'd structs holding pointers, numbers and strings), on
 *            one thread: MB/s of input and ratio.
 *
 * Chains are written under /tmp (a disk file system here: the bar compares
 * with dumps to disk; the type is printed) and removed afterwards.  While
 * tracking, the benchmark allocates nothing and prints nothing: its own
 * buffers are excluded from tracking, so they are not part of the
 * snapshots.
 *
 * Usage: pause [--quick]   (or CKPT_BENCH_QUICK=1): a 128 MiB field, fewer
 * steps; the bars are then printed but not judged.
 */
#include <ckpt.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "field.h"
#include <zstd.h>

#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)
#define CRIU_DUMP_MS 767.0 /* CRIU 4.2, full dump of this workload */
#define BAR_ASYNC_MEMCPY 4.0
#define BAR_SYNC_CRIU (1.0 / 3.0)

static size_t pagesz;

__attribute__((noreturn)) static void die(const char *what, const char *why)
{
	fprintf(stderr, "pause: %s: %s\n", what, why);
	exit(1);
}

static void *map(size_t bytes)
{
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap", strerror(errno));
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

struct fig {
	double pause_ms[MAXSTEPS], wall_ms[MAXSTEPS], floor_ms[MAXSTEPS], wait_ms[MAXSTEPS];
	double stored_mib[MAXSTEPS], raw_mib[MAXSTEPS], staged_mib[MAXSTEPS];
	double capture_ms[MAXSTEPS], compress_ms[MAXSTEPS], write_ms[MAXSTEPS];
};

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

/* mode 0: sync; 1: async, durable before each step; 2: async back to back. */
static void run(int mode, size_t field_bytes, int steps, struct fig *out)
{
	char tmpl[] = "/tmp/ckpt-pause-XXXXXX", dir[64], cmd[128];
	if (!mkdtemp(tmpl))
		die("mkdtemp", strerror(errno));
	snprintf(dir, sizeof dir, "%s/chain", tmpl);
	size_t npages = field_bytes / pagesz, ndirty = npages / 20;
	char *field = map(field_bytes);
	/* The benchmark's own memory, left out of tracking. */
	size_t perm_bytes = (npages * sizeof(size_t) + pagesz - 1) & ~(pagesz - 1);
	size_t *perm = map(perm_bytes);
	char *floor_buf = map(ndirty * pagesz);
	uint64_t seed = 0x2545f4914f6cdd1du;
	for (size_t i = 0; i < npages; i++)
		fill_page((float *)(field + i * pagesz), pagesz, i, 0, &seed);
	for (size_t i = 0; i < npages; i++)
		perm[i] = i;
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = mode ? CKPT_F_ASYNC : 0;
	int rc = ckpt_open(&c, dir, &o);
	if (rc)
		die("ckpt_open", ckpt_last_error());
	if (ckpt_exclude(c, perm, perm_bytes) || ckpt_exclude(c, floor_buf, ndirty * pagesz) ||
	    ckpt_exclude(c, out, (sizeof *out + pagesz - 1) & ~(pagesz - 1)))
		die("ckpt_exclude", ckpt_last_error());
	if ((rc = ckpt_begin(c)) || (rc = ckpt_commit(c, NULL)) || (rc = ckpt_wait(c, NULL)))
		die("base commit", ckpt_last_error());
	for (int s = 0; s < steps; s++) {
		/* 5% of the pages, distinct, chosen at random. */
		for (size_t i = 0; i < ndirty; i++) {
			size_t j = i + xorshift64(&seed) % (npages - i), t = perm[i];
			perm[i] = perm[j];
			perm[j] = t;
			fill_page((float *)(field + perm[i] * pagesz), pagesz, perm[i], (unsigned)s + 1,
				  &seed);
		}
		uint64_t t0 = now_ns();
		for (size_t i = 0; i < ndirty; i++)
			memcpy(floor_buf + i * pagesz, field + perm[i] * pagesz, pagesz);
		uint64_t t1 = now_ns();
		if ((rc = ckpt_commit(c, NULL)) != 0)
			die("ckpt_commit", ckpt_last_error());
		uint64_t t2 = now_ns();
		if (mode != 2 && (rc = ckpt_wait(c, NULL)) != 0)
			die("ckpt_wait", ckpt_last_error());
		uint64_t t3 = now_ns();
		out->floor_ms[s] = (double)(t1 - t0) / 1e6;
		out->pause_ms[s] = (double)(t2 - t1) / 1e6;
		out->wall_ms[s] = (double)(t3 - t1) / 1e6;
		ckpt_stats st;
		ckpt_stats(c, &st);
		out->stored_mib[s] = (double)st.commit_stored_bytes / (double)MIB;
		out->raw_mib[s] = (double)st.commit_raw_bytes / (double)MIB;
		out->staged_mib[s] = (double)st.commit_staged_bytes / (double)MIB;
		out->wait_ms[s] = (double)st.commit_wait_ns / 1e6;
		out->capture_ms[s] = (double)st.commit_capture_ns / 1e6;
		out->compress_ms[s] = (double)st.commit_compress_ns / 1e6;
		out->write_ms[s] = (double)(st.commit_write_ns + st.commit_sync_ns) / 1e6;
	}
	if (ckpt_wait(c, NULL))
		die("ckpt_wait", ckpt_last_error());
	ckpt_close(c);
	munmap(field, field_bytes);
	munmap(perm, perm_bytes);
	munmap(floor_buf, ndirty * pagesz);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
	if (system(cmd) != 0)
		fprintf(stderr, "pause: could not remove %s\n", tmpl);
}

/* ---- levels ------------------------------------------------------------------------ */

/* Heap-like bytes: malloc chunks (size header) holding small structs with
 * pointers into the heap, counters, doubles and short strings. */
static void fill_heap(char *p, size_t bytes)
{
	static const char *const words[] = {"alpha", "config", "node", "value", "user_id",
					    "timestamp", "buffer", "request", "/usr/lib", "name",
					    "error: none", "status=ok", "0.5", "payload"};
	uint64_t seed = 77;
	size_t off = 0;
	while (off + 96 <= bytes) {
		size_t kind = xorshift64(&seed) % 4, len = 32 + 16 * kind;
		uint64_t *h = (uint64_t *)(p + off);
		h[0] = len | 1; /* the chunk's size word */
		h[1] = 0x555555550000ull + (xorshift64(&seed) % (bytes / 16)) * 16; /* next */
		h[2] = xorshift64(&seed) % 1000;                                       /* count */
		double d = (double)(xorshift64(&seed) % 100000) / 100.0;
		memcpy(&h[3], &d, 8);
		if (kind >= 2) {
			const char *w = words[xorshift64(&seed) % (sizeof words / sizeof *words)];
			strncpy((char *)&h[4], w, len - 32);
		}
		off += len;
	}
}

static void levels(size_t sample)
{
	static const int lv[] = {-5, -3, -1, 1, 2, 3};
	char *field = map(sample), *heap = map(sample);
	uint64_t seed = 5;
	for (size_t i = 0; i < sample / pagesz; i++)
		fill_page((float *)(field + i * pagesz), pagesz, i, 0, &seed);
	fill_heap(heap, sample);
	size_t block = 64 * pagesz, cap = ZSTD_compressBound(block);
	char *out = malloc(cap);
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	if (!out || !cc)
		die("levels", "out of memory");
	printf("\n2. zstd levels, one thread, blocks of 64 pages, %zu MiB of each kind\n",
	       sample / MIB);
	printf("%6s  %16s %7s  %16s %7s\n", "level", "field MB/s", "ratio", "heap MB/s", "ratio");
	for (size_t k = 0; k < sizeof lv / sizeof *lv; k++) {
		double mbs[2], ratio[2];
		for (int which = 0; which < 2; which++) {
			const char *src = which ? heap : field;
			uint64_t best = UINT64_MAX;
			size_t total = 0;
			for (int rep = 0; rep < 3; rep++) {
				uint64_t t0 = now_ns();
				total = 0;
				for (size_t off = 0; off < sample; off += block) {
					size_t c = ZSTD_compressCCtx(cc, out, cap, src + off, block, lv[k]);
					if (ZSTD_isError(c))
						die("zstd", ZSTD_getErrorName(c));
					total += c < block ? c : block; /* raw when it does not shrink */
				}
				uint64_t t = now_ns() - t0;
				if (t < best)
					best = t;
			}
			mbs[which] = (double)sample / 1e6 / ((double)best / 1e9);
			ratio[which] = (double)sample / (double)total;
		}
		printf("%6d  %16.0f %7.2f  %16.0f %7.2f\n", lv[k], mbs[0], ratio[0], mbs[1], ratio[1]);
	}
	ZSTD_freeCCtx(cc);
	free(out);
	munmap(field, sample);
	munmap(heap, sample);
}

int main(int argc, char **argv)
{
	int quick = quick_from_args(argc, argv);
	if (quick < 0)
		return quick == -1 ? 2 : 0;
	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	size_t field = quick ? 128 * MIB : GIB;
	int steps = quick ? 5 : 9;
	printf("libckpt %s, page %zu B, %ld CPUs online, default level and threads, chains under "
	       "/tmp (%s)%s\n",
	       ckpt_version_string(), pagesz, sysconf(_SC_NPROCESSORS_ONLN), fs_name("/tmp"),
	       quick ? ", QUICK run" : "");
	printf("\n1. %zu MiB float field, 5%% of its pages rewritten per step, a commit per step; "
	       "medians of %d steps\n",
	       field / MIB, steps);
	static const char *const names[] = {"sync", "async", "async b2b"};
	size_t fig_bytes = (sizeof(struct fig) + pagesz - 1) & ~(pagesz - 1);
	struct fig *f[3];
	for (int m = 0; m < 3; m++) {
		f[m] = map(fig_bytes);
		run(m, field, steps, f[m]);
	}
	printf("%-10s %9s %9s %9s %9s %9s %10s %10s %10s\n", "mode", "pause ms", "wall ms",
	       "memcpy ms", "wait ms", "capt ms", "comp ms", "write ms", "stored MiB");
	for (int m = 0; m < 3; m++)
		printf("%-10s %9.2f %9.1f %9.2f %9.2f %9.2f %10.1f %10.1f %10.2f  (of %.2f MiB, "
		       "%.2f staged)\n",
		       names[m], median(f[m]->pause_ms, steps), median(f[m]->wall_ms, steps),
		       median(f[m]->floor_ms, steps), median(f[m]->wait_ms, steps),
		       median(f[m]->capture_ms, steps), median(f[m]->compress_ms, steps),
		       median(f[m]->write_ms, steps), median(f[m]->stored_mib, steps),
		       median(f[m]->raw_mib, steps), median(f[m]->staged_mib, steps));
	double floor_ms = median(f[1]->floor_ms, steps), apause = median(f[1]->pause_ms, steps),
	       swall = median(f[0]->wall_ms, steps), spause = median(f[0]->pause_ms, steps);
	int ok_a = apause <= BAR_ASYNC_MEMCPY * floor_ms, ok_s = swall <= BAR_SYNC_CRIU * CRIU_DUMP_MS;
	printf("async pause / memcpy floor: %.2f (bar <= %.0f): %s\n", apause / floor_ms,
	       BAR_ASYNC_MEMCPY, quick ? "not judged in a quick run" : ok_a ? "met" : "NOT met");
	printf("sync pause / async pause:   %.1f\n", spause / apause);
	printf("sync wall / CRIU dump (%.0f ms): %.3f (bar <= %.3f): %s\n", CRIU_DUMP_MS,
	       swall / CRIU_DUMP_MS, BAR_SYNC_CRIU,
	       quick ? "not judged in a quick run" : ok_s ? "met" : "NOT met");
	levels(quick ? 16 * MIB : 64 * MIB);
	return 0;
}

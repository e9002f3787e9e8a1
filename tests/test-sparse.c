/*
 * test-sparse.c - the base snapshot of a large, sparsely written mapping:
 * it stores, reads and indexes the pages written, not the address space.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The mapping is 1 GiB of MAP_NORESERVE memory with every 64th page
 * written, runs of 1 to 3 pages scattered between them and a few dense
 * stretches.  Each scenario runs in a child (helpers.h): a restore rolls
 * back the whole process.
 */
#include "format.h"
#include "helpers.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SPARSE_BYTES ((size_t)1 << 30)
#define STRIDE 64

struct sparse {
	char *m;          /* the mapping */
	size_t npages;
	unsigned char *w; /* w[i]: page i was written (in memory ckpt leaves alone) */
	size_t nwritten;
};

/* What page i holds once written: its number and a pattern, on the whole
 * page, so that a page read back from the wrong place shows. */
static void fill(char *page, size_t i)
{
	size_t ps = pagesz();
	uint64_t x = 0x9e3779b97f4a7c15ull * (i + 1);
	for (size_t k = 0; k < ps; k += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(page + k, &x, 8);
	}
	memcpy(page, &i, sizeof i);
}

static void write_page(struct sparse *s, size_t i)
{
	if (s->w[i])
		return;
	fill(s->m + i * pagesz(), i);
	s->w[i] = 1;
	s->nwritten++;
}

/* Maps and writes the layout; w in memory excluded from c. */
static void sparse_make(struct sparse *s, ckpt_t *c)
{
	size_t ps = pagesz();
	s->npages = SPARSE_BYTES / ps;
	s->m = mmap(NULL, SPARSE_BYTES, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(s->m != MAP_FAILED);
	/* Base pages: a huge page would make the untouched pages around
	 * a written one present. */
	madvise(s->m, SPARSE_BYTES, MADV_NOHUGEPAGE);
	s->w = (unsigned char *)safe_area(c, s->npages);
	s->nwritten = 0;
	for (size_t i = 0; i < s->npages; i += STRIDE)
		write_page(s, i);
	/* Runs of 1 to 3 pages between them, at scattered places. */
	uint64_t seed = 0x51f15eed;
	for (int k = 0; k < 300; k++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		size_t at = (size_t)(seed >> 33) % (s->npages - 8), len = 1 + (seed >> 20) % 3;
		for (size_t j = 0; j < len; j++)
			write_page(s, at + 5 + j);
	}
	/* Dense stretches: one of more than a block (64 pages), one across
	 * the end of a 2 MiB page table, one at the very end. */
	for (size_t j = 0; j < 200; j++)
		write_page(s, 1000 + j);
	size_t pt = 2 * 512 * 4096 / ps;
	for (size_t j = 0; j < 40; j++)
		write_page(s, 7 * pt - 20 + j);
	for (size_t j = s->npages - 70; j < s->npages; j++)
		write_page(s, j);
}

/* The base file's header, read as it is on disk. */
static struct ckpt__fhdr base_header(const char *dir)
{
	char path[256];
	struct ckpt__fhdr h;
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h);
	close(fd);
	return h;
}

/* The pages of [lo, hi) that mincore finds in memory, compared with w:
 * returns the first page that differs, or npages. */
static size_t first_resident_mismatch(const struct sparse *s, unsigned char *vec)
{
	CHECK(mincore(s->m, SPARSE_BYTES, vec) == 0);
	for (size_t i = 0; i < s->npages; i++)
		if ((vec[i] & 1) != s->w[i])
			return i;
	return s->npages;
}

static ckpt_t *open_chain(const char *dir)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	CHECK_RC(ckpt_open(&c, dir, &o));
	return c;
}

/* ---- the base reads the pages written, and no other ----------------------------- */

static void reads_no_page_it_need_not(const char *dir)
{
	ckpt_t *c = open_chain(dir);
	struct sparse s;
	sparse_make(&s, c);
	unsigned char *vec = (unsigned char *)safe_area(c, s.npages);
	size_t bad = first_resident_mismatch(&s, vec);
	if (bad != s.npages)
		child_die("before the commit, page %zu is %sresident", bad, s.w[bad] ? "not " : "");
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	/* Under userfaultfd every empty page of the mapping holds a
	 * write-protect marker, which PAGEMAP_SCAN reports as swapped: a
	 * commit that took those for data read each one, and the read mapped
	 * the zero page there. */
	bad = first_resident_mismatch(&s, vec);
	if (bad != s.npages)
		child_die("after the base, page %zu (of %zu written) is %sresident: the commit "
			  "read pages never written",
			  bad, s.nwritten, s.w[bad] ? "not " : "");
	ckpt_stats st;
	CHECK_RC(ckpt_stats(c, &st));
	if (st.commit_pages < s.nwritten)
		child_die("%llu pages stored, %zu written", (unsigned long long)st.commit_pages,
			  s.nwritten);
	CHECK_RC(ckpt_end(c));
	ckpt_close(c);
}

Test(sparse, a_sparse_base_reads_no_page_it_need_not, .timeout = 120)
{
	in_child(reads_no_page_it_need_not, "sparse base");
}

/* ---- and stores them so that they come back ------------------------------------- */

struct run_count {
	size_t runs;
};

static int count_run(const ckpt_stored_run *r, void *arg)
{
	(void)r;
	((struct run_count *)arg)->runs++;
	return 0;
}

static void restores_byte_for_byte(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir);
	struct sparse s;
	sparse_make(&s, c);
	char *want = safe_area(c, ps), *got = safe_area(c, ps), *zero = safe_area(c, ps);
	CHECK_RC(ckpt_begin(c));
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 1);

	/* The file: a packed index of a few bytes a run, not 24. */
	struct ckpt__fhdr h = base_header(dir);
	CHECK(h.flags & CKPT__SF_PACKED_INDEX);
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	struct run_count rc = {0};
	CHECK_RC(ckpt_chain_runs(ch, 1, count_run, &rc));
	CHECK(rc.runs >= s.npages / STRIDE);
	if (h.sect[CKPT__SEC_INDEX].size > 4 * rc.runs)
		child_die("an index of %llu bytes for %zu runs",
			  (unsigned long long)h.sect[CKPT__SEC_INDEX].size, rc.runs);

	/* Read back through the chain reader: every written page, and the
	 * untouched ones around them zero. */
	for (size_t i = 0; i < s.npages; i++) {
		if (!s.w[i] && i % 61)
			continue;
		uintptr_t a = (uintptr_t)s.m + i * ps;
		CHECK_RC(ckpt_chain_read(ch, 1, a, got, ps));
		if (s.w[i])
			fill(want, i);
		else
			memset(want, 0, ps);
		if (memcmp(got, want, ps))
			child_die("page %zu (%s) reads back wrong from the chain", i,
				  s.w[i] ? "written" : "untouched");
	}
	ckpt_chain_close(ch);
	size_t checked = 0;
	CHECK_RC(ckpt_chain_verify(dir, &checked));
	CHECK(checked == 1);

	/* Scribble over written pages and write untouched ones, then roll
	 * back in place. */
	for (size_t i = 0; i < s.npages; i += 7) {
		if (s.w[i])
			s.m[i * ps + 100] ^= 0x5a;
		else if (i % 97 == 0)
			s.m[i * ps + 7] = 1;
	}
	CHECK_RC(ckpt_restore(c, 1));
	for (size_t i = 0; i < s.npages; i++) {
		if (!s.w[i] && i % 7)
			continue;
		if (s.w[i])
			fill(want, i);
		if (memcmp(s.m + i * ps, s.w[i] ? want : zero, ps))
			child_die("page %zu (%s) differs after the restore", i,
				  s.w[i] ? "written" : "untouched");
	}
	CHECK_RC(ckpt_end(c));
	ckpt_close(c);
}

Test(sparse, a_scattered_sparse_base_restores_byte_for_byte, .timeout = 120)
{
	in_child(restores_byte_for_byte, "sparse restore");
}

/* ---- a swap device that comes or goes during the capture ------------------------ */

/*
 * mincore tells userfaultfd's markers from pages only while no swap device
 * exists; the capture checks at its end that none came or went meanwhile,
 * and if one did, scans again counting every swapped entry as data.  The
 * injection makes that check answer yes: under userfaultfd the commit then
 * reads every page of the mapping (each one resident afterwards), and what
 * it stores is still exactly the memory.
 */
static void swap_change_rescans(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir);
	struct sparse s;
	sparse_make(&s, c);
	unsigned char *vec = (unsigned char *)safe_area(c, s.npages);
	char *want = safe_area(c, ps), *got = safe_area(c, ps);
	CHECK_RC(ckpt_begin(c));
	int uffd = backend_of(c) == CKPT_BACKEND_UFFD;
	CHECK(setenv("CKPT_FAULT", "swaps:1", 1) == 0);
	CHECK_RC(ckpt_commit(c, NULL));
	CHECK(unsetenv("CKPT_FAULT") == 0);
	CHECK(mincore(s.m, SPARSE_BYTES, vec) == 0);
	size_t resident = 0;
	for (size_t i = 0; i < s.npages; i++)
		resident += vec[i] & 1;
	if (uffd && resident != s.npages)
		child_die("userfaultfd: %zu of %zu pages resident: the capture did not scan again",
			  resident, s.npages);
	if (!uffd && resident != s.nwritten)
		child_die("mprotect: %zu pages resident, %zu written", resident, s.nwritten);
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	for (size_t i = 0; i < s.npages; i += 1 + (i % 5)) {
		CHECK_RC(ckpt_chain_read(ch, 1, (uintptr_t)s.m + i * ps, got, ps));
		if (s.w[i])
			fill(want, i);
		else
			memset(want, 0, ps);
		if (memcmp(got, want, ps))
			child_die("page %zu reads back wrong", i);
	}
	ckpt_chain_close(ch);
	CHECK_RC(ckpt_end(c));
	ckpt_close(c);
}

Test(sparse, a_swap_device_coming_during_the_capture_makes_it_scan_again, .timeout = 120)
{
	in_child(swap_change_rescans, "swap change");
}

/* ---- what was there when tracking began, and what was written since ------------- */

/*
 * A base stores the pages that held data when their region was armed and
 * the pages written since (under userfaultfd the first come from a record
 * made at the arm, the second from the tracker; the capture walks nothing
 * else).  Here: pages written before begin, some of them written again or
 * discarded after it, pages first written after it, memory mapped after it
 * (through mmap, and through the raw system call the interposers do not
 * see), and a thread writing while begin arms.  With fail_first the first
 * commit fails and the next one, which finds every region fresh again,
 * must store the same.
 */
#define AREA_PAGES 4096 /* 16 MiB per mapping */
#define NAREAS 4

struct area_state {
	char *m[NAREAS];
	uint32_t *v; /* v[a * AREA_PAGES + i]: what page i of area a holds (0: zero) */
	volatile int stop;
	volatile size_t thread_wrote;
};

static void put(struct area_state *st, int a, size_t i, uint32_t tag)
{
	fill(st->m[a] + i * pagesz(), tag);
	st->v[a * AREA_PAGES + i] = tag;
}

static void *writer(void *arg)
{
	struct area_state *st = arg;
	size_t i = 0;
	while (!st->stop && i < AREA_PAGES) {
		put(st, 3, i, (uint32_t)(3000000 + i));
		st->thread_wrote = ++i;
	}
	return NULL;
}

static char *map_area(int raw)
{
	size_t len = (size_t)AREA_PAGES * pagesz();
	void *m = raw ? (void *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
		      : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	madvise(m, len, MADV_NOHUGEPAGE);
	return m;
}

static void check_areas(struct area_state *st, ckpt_chain *ch, uint64_t id, const char *when)
{
	size_t ps = pagesz();
	char *want = malloc(ps), *got = malloc(ps);
	CHECK(want && got);
	for (int a = 0; a < NAREAS; a++)
		for (size_t i = 0; i < AREA_PAGES; i++) {
			uint32_t tag = st->v[a * AREA_PAGES + i];
			const char *at = st->m[a] + i * ps;
			if (ch) {
				CHECK_RC(ckpt_chain_read(ch, id, (uintptr_t)at, got, ps));
				at = got;
			}
			if (tag)
				fill(want, tag);
			else
				memset(want, 0, ps);
			if (memcmp(at, want, ps))
				child_die("%s: area %d page %zu (%s) differs", when, a, i,
					  tag ? "written" : "zero");
		}
	free(want);
	free(got);
}

static void base_holds_before_and_since(const char *dir, int fail_first)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir);
	struct area_state *st = (struct area_state *)safe_area(c, sizeof *st);
	st->v = (uint32_t *)safe_area(c, NAREAS * AREA_PAGES * sizeof *st->v);
	st->m[0] = map_area(0);
	st->m[3] = map_area(0);
	for (size_t i = 0; i < AREA_PAGES; i += 8)
		put(st, 0, i, (uint32_t)(i + 1));
	pthread_t th;
	CHECK(pthread_create(&th, NULL, writer, st) == 0);
	while (st->thread_wrote < 16)
		sched_yield();
	CHECK_RC(ckpt_begin(c));
	st->stop = 1;
	CHECK(pthread_join(th, NULL) == 0);

	for (size_t i = 0; i < AREA_PAGES; i += 8) {
		put(st, 0, i + 3, (uint32_t)(100000 + i)); /* first written now */
		if (i % 32 == 0)
			put(st, 0, i, (uint32_t)(200000 + i)); /* written again */
		else if (i % 64 == 8) {
			CHECK(madvise(st->m[0] + i * ps, ps, MADV_DONTNEED) == 0);
			st->v[i] = 0; /* discarded: zero */
		}
	}
	st->m[1] = map_area(0);
	st->m[2] = map_area(1);
	for (size_t i = 0; i < AREA_PAGES; i += 5) {
		put(st, 1, i, (uint32_t)(1000000 + i));
		put(st, 2, i, (uint32_t)(2000000 + i));
	}
	uint64_t id = 0;
	if (fail_first) {
		CHECK(setenv("CKPT_FAULT", "write:1=ENOSPC", 1) == 0);
		int rc = ckpt_commit(c, &id);
		CHECK(unsetenv("CKPT_FAULT") == 0);
		CHECK(rc == CKPT_ENOSPC);
	}
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 1);
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	check_areas(st, ch, id, "read from the base");
	ckpt_chain_close(ch);

	/* Written over, then rolled back in place. */
	for (int a = 0; a < NAREAS; a++)
		for (size_t i = 1; i < AREA_PAGES; i += 6)
			st->m[a][i * ps + 9] ^= 0x77;
	CHECK_RC(ckpt_restore(c, id));
	check_areas(st, NULL, id, "after the restore");
	CHECK_RC(ckpt_end(c));
	ckpt_close(c);
}

static void base_first_time(const char *dir)
{
	base_holds_before_and_since(dir, 0);
}

static void base_after_a_failed_one(const char *dir)
{
	base_holds_before_and_since(dir, 1);
}

Test(sparse, a_base_holds_what_was_there_at_begin_and_what_was_written_since, .timeout = 120)
{
	in_child(base_first_time, "base since begin");
}

Test(sparse, a_base_after_a_failed_one_holds_the_same, .timeout = 120)
{
	in_child(base_after_a_failed_one, "base after a failed one");
}

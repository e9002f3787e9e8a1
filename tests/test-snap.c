/*
 * test-snap.c - snapshots: commit, restore, crashes, failures, bad files.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A restore rolls back the whole process memory, the test framework's own
 * state included; so each scenario runs in a child process of its own and
 * reports through a pipe and its exit status.  Copies of memory taken for
 * comparison live in a range given to ckpt_exclude, which no restore
 * touches.
 */
#include "format.h"
#include "helpers.h"
#include "proc.h"
#include "xxhash.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static ckpt_t *open_chain(const char *dir, unsigned flags)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_AUTO; /* CKPT_BACKEND in the environment decides */
	o.flags = flags;
	CHECK_RC(ckpt_open(&c, dir, &o));
	return c;
}

/* ---- a chain of 20, restored at every id -------------------------------------- */

#define NPAGES 64
#define NCOMMITS 20
static char globals[4 * 4096] __attribute__((aligned(4096)));

static void twenty(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(NPAGES, 1);
	/* copies[id]: the region and the globals as committed */
	size_t one = NPAGES * ps + sizeof globals;
	char *copies = safe_area(c, one * (NCOMMITS + 1));
	uint64_t seed = 0x1234567;
	CHECK_RC(ckpt_begin(c));
	for (int id = 1; id <= NCOMMITS; id++) {
		int writes = (int)(rnd(&seed) % 12) + 1;
		for (int w = 0; w < writes; w++) {
			size_t page = rnd(&seed) % NPAGES, off = rnd(&seed) % ps;
			m[page * ps + off] = (char)rnd(&seed);
			if (w % 3 == 0)
				globals[rnd(&seed) % sizeof globals] = (char)id;
			if (w == 5)
				memset(m + (rnd(&seed) % NPAGES) * ps, 0, ps); /* a zero page */
		}
		uint64_t got;
		CHECK_RC(ckpt_commit(c, &got));
		CHECK(got == (uint64_t)id);
		memcpy(copies + id * one, m, NPAGES * ps);
		memcpy(copies + id * one + NPAGES * ps, globals, sizeof globals);
	}
	/* Every id, in a random order (the order itself in excluded memory). */
	int *order = (int *)safe_area(c, sizeof(int) * NCOMMITS);
	for (int i = 0; i < NCOMMITS; i++)
		order[i] = i + 1;
	for (int i = NCOMMITS - 1; i > 0; i--) {
		int j = (int)(rnd(&seed) % (uint64_t)(i + 1)), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int i = 0; i < NCOMMITS; i++) {
		int id = order[i];
		/* Scribble first, so the restore has work to do. */
		m[(size_t)(i % NPAGES) * ps] ^= 0x55;
		globals[i] ^= 0x55;
		CHECK_RC(ckpt_restore(c, (uint64_t)id));
		if (memcmp(m, copies + (size_t)id * one, NPAGES * ps) != 0)
			child_die("region differs after restoring %d", id);
		if (memcmp(globals, copies + (size_t)id * one + NPAGES * ps, sizeof globals) != 0)
			child_die("globals differ after restoring %d", id);
	}
	ckpt_close(c);
}

Test(snap, a_chain_of_twenty_restored_at_every_id, .timeout = 120)
{
	in_child(twenty, "20 commits");
}

static void flip_byte(const char *path, uint64_t at)
{
	int fd = open(path, O_RDWR);
	unsigned char c;
	CHECK(fd >= 0 && pread(fd, &c, 1, (off_t)at) == 1);
	c ^= 0x5a;
	CHECK(pwrite(fd, &c, 1, (off_t)at) == 1 && close(fd) == 0);
}

/* A chain this long is loaded on every core (snap-read.c); a file's
 * failure counts where the walk from the newest needs that file, as it did
 * one file at a time: a damaged or missing file in the middle stops the
 * open and is named, and files below the base are not read at all. */
static void loaded_ahead(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(NPAGES, 1);
	CHECK_RC(ckpt_begin(c));
	for (int id = 1; id <= NCOMMITS; id++) {
		m[(size_t)id * ps] = (char)id;
		CHECK_RC(ckpt_commit(c, NULL));
	}
	ckpt_close(c);
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	CHECK(ckpt_chain_first(ch) == 1 && ckpt_chain_latest(ch) == NCOMMITS);
	ckpt_chain_close(ch);

	char path[512], aside[512];
	snprintf(path, sizeof path, "%s/snap-00000010.ckpt", dir);
	flip_byte(path, 40); /* in the header */
	int rc = ckpt_chain_open(&ch, dir);
	if (rc != CKPT_ECORRUPT || !strstr(ckpt_last_error(), "snap-00000010.ckpt"))
		child_die("a damaged snapshot 10 gave %s (%s)", ckpt_err_name(rc), ckpt_last_error());
	flip_byte(path, 40);

	snprintf(path, sizeof path, "%s/snap-00000007.ckpt", dir);
	snprintf(aside, sizeof aside, "%s/aside", dir);
	CHECK(rename(path, aside) == 0);
	rc = ckpt_chain_open(&ch, dir);
	if (rc != CKPT_ENOENT || !strstr(ckpt_last_error(), "snap-00000007.ckpt is missing"))
		child_die("a missing snapshot 7 gave %s (%s)", ckpt_err_name(rc), ckpt_last_error());
	CHECK(rename(aside, path) == 0);
	CHECK_RC(ckpt_chain_open(&ch, dir));
	ckpt_chain_close(ch);

	/* Folded into a base at 17; junk where 1 to 16 were. */
	CHECK_RC(ckpt_chain_compact(dir, 3, NULL));
	for (int id = 1; id <= 16; id++) {
		snprintf(path, sizeof path, "%s/snap-%08d.ckpt", dir, id);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		CHECK(fd >= 0 && write(fd, "junk", 4) == 4 && close(fd) == 0);
	}
	CHECK_RC(ckpt_chain_open(&ch, dir));
	CHECK(ckpt_chain_first(ch) == 17 && ckpt_chain_latest(ch) == NCOMMITS);
	char page[64];
	for (int id = 1; id <= NCOMMITS; id++) {
		CHECK_RC(ckpt_chain_read(ch, NCOMMITS, (uintptr_t)m + (size_t)id * ps, page, 1));
		CHECK(page[0] == (char)id);
	}
	ckpt_chain_close(ch);
}

Test(snap, a_long_chain_loaded_on_every_core_fails_where_one_by_one_would)
{
	in_child(loaded_ahead, "a long chain's files");
}

/* ---- what a chain looks like on disk ------------------------------------------- */

static void on_disk(const char *dir)
{
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(16, 7);
	char *big = mmap(NULL, 1ul << 30, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(big != MAP_FAILED);
	for (int i = 0; i < 10; i++)
		big[(size_t)i * (64 << 20)] = 1;
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	m[3 * pagesz()] = 9;
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_stats st;
	CHECK_RC(ckpt_stats(c, &st));
	CHECK(st.commit_id == 2 && st.commits == 2);
	ckpt_close(c);

	struct stat sb;
	CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	/* 1 GiB mapped, 10 pages touched: the base costs the touched pages. */
	CHECK(sb.st_size < (1 << 20));
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	CHECK(ckpt_chain_first(ch) == 1 && ckpt_chain_latest(ch) == 2);
	ckpt_snapshot_info si;
	CHECK_RC(ckpt_chain_info(ch, 1, &si));
	/* Without CKPT_F_RESUME a snapshot has no process record. */
	CHECK(si.base && !si.resumable && si.parent == 0);
	ckpt_launch_info li;
	CHECK(ckpt_chain_launch(ch, 1, &li) == CKPT_ENOENT);
	CHECK_RC(ckpt_chain_info(ch, 2, &si));
	CHECK(!si.base && si.parent == 1);
	char page[4096];
	CHECK_RC(ckpt_chain_read(ch, 2, (uintptr_t)m + 3 * pagesz(), page, sizeof page));
	CHECK(page[0] == 9 && page[1] == 7);
	CHECK_RC(ckpt_chain_read(ch, 1, (uintptr_t)m + 3 * pagesz(), page, sizeof page));
	CHECK(page[0] == 7);
	CHECK_RC(ckpt_chain_read(ch, 1, (uintptr_t)big + (64 << 20), page, sizeof page));
	CHECK(page[0] == 1 && page[1] == 0);
	CHECK(ckpt_chain_read(ch, 1, 16, page, 1) == CKPT_ENOENT);
	ckpt_chain_close(ch);
	size_t n;
	CHECK_RC(ckpt_chain_verify(dir, &n));
	CHECK(n == 2);
}

Test(snap, files_modes_sizes_and_reading_back)
{
	in_child(on_disk, "on disk");
}

/* ---- an existing chain is never destroyed by accident ------------------------------ */

static void existing(const char *dir)
{
	ckpt_t *c = open_chain(dir, 0);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	/* Held by this handle: a second writer is refused. */
	ckpt_t *d;
	CHECK(ckpt_open(&d, dir, NULL) == CKPT_EBUSY);
	ckpt_close(c);
	CHECK(ckpt_open(&d, dir, NULL) == CKPT_EEXIST);
	size_t n;
	CHECK_RC(ckpt_chain_verify(dir, &n));
	CHECK(n == 1);
	d = open_chain(dir, CKPT_F_OVERWRITE);
	CHECK_RC(ckpt_chain_verify(dir, &n));
	CHECK(n == 0);
	ckpt_close(d);
}

Test(snap, an_existing_chain_is_refused_unless_overwrite)
{
	in_child(existing, "existing chain");
}

/* ---- rolling back to the newest costs what was dirtied ----------------------------- */

static void cheap_reset(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(4096, 3); /* 16 MiB */
	char *copy = safe_area(c, 4096 * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	memcpy(copy, m, 4096 * ps);
	for (int i = 0; i < 10; i++)
		m[(size_t)(i * 97) * ps] = 'x';
	ckpt_stats st;
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	CHECK_RC(ckpt_stats(c, &st));
	CHECK(memcmp(m, copy, 4096 * ps) == 0);
	/* The ten pages, and the few the process itself wrote meanwhile (its
	 * TLS block, stdio, a sanitizer's bookkeeping): nowhere near the 4096
	 * of the region. */
	if (st.restore_pages < 10 || st.restore_pages > 400)
		child_die("restore rewrote %llu pages", (unsigned long long)st.restore_pages);
	/* Restored pages are clean: the next commit stores nothing of them. */
	CHECK_RC(ckpt_commit(c, NULL));
	CHECK_RC(ckpt_stats(c, &st));
	if (st.commit_pages > 400)
		child_die("the commit after a reset stored %llu pages", (unsigned long long)st.commit_pages);
	ckpt_close(c);
}

Test(snap, rolling_back_to_the_newest_rewrites_only_dirty_pages)
{
	in_child(cheap_reset, "reset");
}

/* ---- CKPT_F_SHADOW: resets read no disk ----------------------------------------------- */

static void shadow(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, CKPT_F_SHADOW);
	char *m = map_anon(16384, 5); /* 64 MiB */
	char *copy = safe_area(c, 16384 * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	memcpy(copy, m, 16384 * ps);
	/* From now on the snapshot file is useless: every block fails. */
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	CHECK_RC(ckpt_restore(c, CKPT_LATEST)); /* opens the chain while it is sound */
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	struct stat sb;
	fstat(fd, &sb);
	char junk[4096];
	memset(junk, 0xa5, sizeof junk);
	for (off_t off = 256; off + 4096 < sb.st_size / 2; off += 4096)
		CHECK(pwrite(fd, junk, sizeof junk, off) == (ssize_t)sizeof junk);
	close(fd);
	uint64_t seed = 99;
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 16; i++)
			m[(rnd(&seed) % 16384) * ps + (rnd(&seed) % ps)] ^= 1;
		CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	}
	CHECK(memcmp(m, copy, 16384 * ps) == 0);
	ckpt_close(c);
}

Test(snap, shadow_resets_need_no_disk)
{
	in_child(shadow, "shadow");
}

/* ---- scattered rollbacks split no mappings --------------------------------------------- */

/* Mappings of the process in [lo, hi), read with nothing but the stack
 * (a rollback restores the heap). */
static int vmas_in(uintptr_t lo, uintptr_t hi)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	char buf[65536];
	size_t have = 0;
	int n = 0, eof = 0;
	while (!eof || have) {
		ssize_t got = eof ? 0 : read(fd, buf + have, sizeof buf - have);
		if (got <= 0)
			eof = 1;
		else
			have += (size_t)got;
		char *nl = memchr(buf, '\n', have);
		if (!nl) {
			if (eof)
				break;
			continue;
		}
		unsigned long a = strtoul(buf, NULL, 16);
		n += a >= lo && a < hi;
		size_t used = (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, have - used);
		have -= used;
	}
	close(fd);
	return n;
}

static void scattered(const char *dir)
{
	size_t ps = pagesz(), np = 8192; /* 32 MiB */
	ckpt_t *c = open_chain(dir, CKPT_F_SHADOW);
	char *m = map_anon(np, 4);
	uintptr_t lo = (uintptr_t)m, hi = lo + np * ps;
	char *copy1 = safe_area(c, np * ps), *copy2 = safe_area(c, np * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	memcpy(copy1, m, np * ps);
	for (size_t i = 0; i < np; i += 2)
		m[i * ps + 17] ^= 0x5a;
	CHECK_RC(ckpt_commit(c, NULL));
	memcpy(copy2, m, np * ps);
	int n0 = vmas_in(lo, hi);
	/* Half of snapshot 2's pages dirty again, the other half clean. */
	for (size_t i = 0; i < np; i += 4)
		m[i * ps + 33] ^= 0x11;
	/* Back to 1: 4096 pages a page apart are written, and left dirty. */
	CHECK_RC(ckpt_restore(c, 1));
	CHECK(memcmp(m, copy1, np * ps) == 0);
	int n1 = vmas_in(lo, hi);
	if (n1 > n0 + 4)
		child_die("the rollback left %d mappings where there were %d", n1, n0);
	/* Rewritten pages are tracked: back to 2 from the shadow copies,
	 * which must hold snapshot 2's pages, not the rolled-back ones. */
	m[2 * ps] = 'z';
	m[1 * ps] = 'y';
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	CHECK(memcmp(m, copy2, np * ps) == 0);
	CHECK(vmas_in(lo, hi) <= n0 + 4);
	/* A commit after a rollback to 1 stores 1's pages. */
	CHECK_RC(ckpt_restore(c, 1));
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 3);
	memset(m, 0, np * ps);
	CHECK_RC(ckpt_restore(c, 3));
	CHECK(memcmp(m, copy1, np * ps) == 0);
	CHECK_RC(ckpt_restore(c, 2));
	CHECK(memcmp(m, copy2, np * ps) == 0);
	ckpt_close(c);
}

Test(snap, a_scattered_rollback_splits_no_mappings, .timeout = 60)
{
	in_child(scattered, "scattered");
}

/* ---- a process without a heap yet ------------------------------------------------------ */

Test(snap, a_program_without_a_heap_yet_keeps_a_sound_heap, .timeout = 60)
{
	char tmp[] = "/tmp/ckpt-fresh-XXXXXX", dir[64], prog[4096], cmd[4300];
	cr_assert(mkdtemp(tmp));
	snprintf(dir, sizeof dir, "%s/chain", tmp);
	const char *b = getenv("top_builddir");
	snprintf(prog, sizeof prog, "%s/tests/fresh", b ? b : ".");
	/* Through the libtool wrapper: a new process, fresh from exec. */
	snprintf(cmd, sizeof cmd, "'%s' '%s' 2>&1", prog, dir);
	FILE *f = popen(cmd, "r");
	cr_assert(f);
	char out[512] = "";
	size_t n = fread(out, 1, sizeof out - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	(void)!system(cmd);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fresh: status %#x: %s", st, out);
	cr_assert(strstr(out, "fresh: ok"), "fresh said: %s", out);
}

/* ---- mappings that came and went ------------------------------------------------------ */

static void mappings(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *keep = map_anon(8, 1), *gone = map_anon(8, 2);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	char *fresh = mmap(NULL, 8 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(fresh != MAP_FAILED);
	memset(fresh, 3, 8 * ps);
	CHECK(munmap(gone, 8 * ps) == 0);
	keep[0] = 9;
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	char perms[8];
	CHECK(!strcmp(perms_of(fresh, perms), ""));      /* created since: unmapped */
	CHECK(!strcmp(perms_of(gone, perms), "rw-p") || !strcmp(perms_of(gone, perms), "r--p"));
	CHECK(gone[0] == 2 && gone[8 * ps - 1] == 2);      /* removed since: recreated */
	CHECK(keep[0] == 1);
	/* Tracking goes on over the recreated mapping. */
	gone[ps] = 5;
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	char b;
	CHECK_RC(ckpt_chain_read(ch, CKPT_LATEST, (uintptr_t)gone + ps, &b, 1));
	CHECK(b == 5);
	ckpt_chain_close(ch);
	ckpt_close(c);
}

Test(snap, mappings_created_since_go_and_removed_ones_come_back)
{
	in_child(mappings, "mappings");
}

/* ---- pages the kernel discarded -------------------------------------------------------- */

static void discarded(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(8, 4);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	/* As glibc's free does it: no interposer sees this madvise. */
	CHECK(syscall(SYS_madvise, m + 2 * ps, ps, MADV_DONTNEED) == 0);
	CHECK(m[2 * ps] == 0);
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	char page[4096];
	CHECK_RC(ckpt_chain_read(ch, 2, (uintptr_t)m + 2 * ps, page, sizeof page));
	CHECK(page[0] == 0 && page[4095] == 0);
	ckpt_chain_close(ch);
	CHECK_RC(ckpt_restore(c, 1));
	CHECK(m[2 * ps] == 4);
	ckpt_close(c);
}

Test(snap, pages_the_kernel_discarded_are_stored_as_zero)
{
	in_child(discarded, "discarded");
}

/* ---- an increment holds memory as the commit left it ------------------------------------ */

/* A commit must store the program's memory as of one moment: a write ckpt
 * itself makes into tracked memory between taking the dirty set and
 * reading the last page (glibc's qsort of the capture's pieces allocated
 * its buffer: a malloc and a free in the program's heap) lands in the pages
 * this snapshot stores but not in the clean ones it leaves out.  Such a
 * snapshot holds a heap glibc cannot use: resumed from, or rolled back to,
 * malloc aborts.  So the increment, and a rollback to it, must equal every
 * tracked byte as ckpt_commit left it. */

#define AS_SPANS 4096
struct as_span {
	uintptr_t lo, hi;
	size_t at; /* offset of its copy */
	char name[64];
};
struct as_set {
	struct as_span s[AS_SPANS];
	size_t n, bytes;
};

static int as_mapping(const ckpt_mapping_info *m, void *arg)
{
	struct as_set *set = arg;
	/* Pinned memory (the TLS block) changes by itself, shared memory is
	 * the parent's too, a removed file (Criterion's arena) cannot give
	 * back the pages nobody wrote, unreadable memory cannot be compared. */
	size_t nl = strlen(m->name);
	if ((m->flags & (CKPT_MAP_PINNED | CKPT_MAP_SHARED)) || !(m->prot & PROT_READ) ||
	    (nl > 10 && !strcmp(m->name + nl - 10, " (deleted)")))
		return 0;
	if (set->n == AS_SPANS)
		return -1;
	struct as_span *sp = &set->s[set->n++];
	*sp = (struct as_span){m->start, m->end, set->bytes, ""};
	snprintf(sp->name, sizeof sp->name, "%s", m->name[0] ? m->name : "[anonymous]");
	set->bytes += m->end - m->start;
	return 0;
}

/* Word by word, outside the sanitizers: the spans hold a sanitizer's
 * redzones and freed blocks, which its memcpy would report. */
__attribute__((no_sanitize("address", "undefined"))) static void
as_copy(uint64_t *to, const volatile uint64_t *from, size_t bytes)
{
	for (size_t i = 0; i < bytes / 8; i++)
		to[i] = from[i];
}

/* The first page of [a, a + bytes) that differs from b, or 0. */
__attribute__((no_sanitize("address", "undefined"))) static uintptr_t
as_differs(const volatile uint64_t *a, const uint64_t *b, size_t bytes)
{
	for (size_t i = 0; i < bytes / 8; i++)
		if (a[i] != b[i])
			return ((uintptr_t)&a[i]) & ~(uintptr_t)(pagesz() - 1);
	return 0;
}

static void as_committed(const char *dir)
{
	size_t ps = pagesz();
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_AUTO;
	/* No compression threads: starting and joining them writes the heap
	 * (their TLS vectors) before and after the capture, by design. */
	o.threads = 1;
	ckpt_t *c;
	CHECK_RC(ckpt_open(&c, dir, &o));
	struct as_set *set = (struct as_set *)safe_area(c, sizeof *set);
	const size_t room = (size_t)256 << 20;
	char *copy = mmap(NULL, room, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(copy != MAP_FAILED);
	CHECK_RC(ckpt_exclude(c, copy, room));
	char *back = safe_area(c, 64 * ps);
	/* 200 mappings of a page each, apart: a capture of more than about
	 * 60 pieces is what made glibc's qsort allocate (16 bytes a piece). */
	char *many = map_anon(400, 1);
	for (int i = 1; i < 400; i += 2)
		CHECK(mprotect(many + (size_t)i * ps, ps, PROT_NONE) == 0);
	/* A heap with blocks in use, free ones between them, and a free
	 * 64 KiB chunk whose pages nothing writes after the first commit:
	 * what ckpt allocated from the heap would land there. */
	static char *blk[96];
	uint64_t seed = 0x5eed;
	for (int i = 0; i < 96; i++) {
		size_t len = 16 + rnd(&seed) % 6000;
		CHECK((blk[i] = malloc(len)) != NULL);
		memset(blk[i], (int)rnd(&seed), len);
	}
	char *spare = malloc(64 << 10), *fence = malloc(64);
	CHECK(spare && fence);
	for (int i = 0; i < 96; i += 3) {
		free(blk[i]);
		blk[i] = NULL;
	}
	free(spare);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	/* An epoch that writes a little of the mappings and the blocks, and
	 * maps 200 more: the capture's buffer, larger now than any free
	 * block, would come from the spare chunk, from pages nothing has
	 * written since the first commit. */
	for (int i = 0; i < 400; i += 2)
		many[(size_t)i * ps + rnd(&seed) % ps] = (char)i;
	for (int i = 1; i < 96; i += 3)
		blk[i][0] = 'x';
	char *more = map_anon(400, 2);
	for (int i = 1; i < 400; i += 2)
		CHECK(mprotect(more + (size_t)i * ps, ps, PROT_NONE) == 0);
	/* What snapshot 1 tracked (opening the chain writes the heap: it is
	 * part of this epoch). */
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	CHECK_RC(ckpt_chain_mappings(ch, 1, as_mapping, set));
	ckpt_chain_close(ch);
	CHECK(set->bytes <= room);
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	/* Nothing but the stack and excluded memory is written from here to
	 * the last copy. */
	for (size_t i = 0; i < set->n; i++)
		as_copy((uint64_t *)(copy + set->s[i].at), (const volatile uint64_t *)set->s[i].lo,
			set->s[i].hi - set->s[i].lo);

	/* The snapshot holds what the program had. */
	CHECK_RC(ckpt_chain_open(&ch, dir));
	for (size_t i = 0; i < set->n; i++) {
		const struct as_span *sp = &set->s[i];
		for (uintptr_t a = sp->lo; a < sp->hi; a += 64 * ps) {
			size_t len = sp->hi - a < 64 * ps ? sp->hi - a : 64 * ps;
			CHECK_RC(ckpt_chain_read(ch, 2, a, back, len));
			uintptr_t bad = as_differs((const volatile uint64_t *)back,
						   (const uint64_t *)(copy + sp->at + (a - sp->lo)),
						   len);
			if (bad)
				child_die("snapshot 2 differs from memory at the commit at %#lx (%s)",
					  (unsigned long)(a + (bad - (uintptr_t)back)), sp->name);
		}
	}
	ckpt_chain_close(ch);

	/* A rollback to it brings back exactly that, before anything else
	 * runs (the check allocates nothing). */
	CHECK_RC(ckpt_restore(c, 2));
	for (size_t i = 0; i < set->n; i++) {
		const struct as_span *sp = &set->s[i];
		uintptr_t bad = as_differs((const volatile uint64_t *)sp->lo,
					   (const uint64_t *)(copy + sp->at), sp->hi - sp->lo);
		if (bad)
			child_die("after restoring snapshot 2, memory differs from the commit at %#lx (%s)",
				  (unsigned long)bad, sp->name);
	}
	/* And glibc's heap works. */
	free(fence);
	for (int i = 0; i < 96; i++) {
		free(blk[i]);
		CHECK((blk[i] = malloc(16 + rnd(&seed) % 6000)) != NULL);
	}
	ckpt_close(c);
}

Test(snap, an_increment_and_a_rollback_to_it_hold_memory_as_the_commit_left_it, .timeout = 60)
{
	in_child(as_committed, "memory as committed");
}

/* ---- a failed commit loses nothing ---------------------------------------------------- */

static void fsize_limit(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(2048, 0);
	char *copy = safe_area(c, 2048 * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	/* 8 MiB of incompressible data against a 1 MiB file size limit. */
	uint64_t seed = 7;
	for (size_t i = 0; i < 2048 * ps / 8; i++)
		((uint64_t *)m)[i] = rnd(&seed);
	signal(SIGXFSZ, SIG_IGN);
	struct rlimit rl = {1 << 20, RLIM_INFINITY};
	CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	int rc = ckpt_commit(c, NULL);
	CHECK(rc == CKPT_EFBIG);
	CHECK(strstr(ckpt_last_error(), "snap-00000002") || strstr(ckpt_last_error(), ".tmp"));
	size_t n;
	CHECK_RC(ckpt_chain_verify(dir, &n));
	CHECK(n == 1); /* as before, no leftovers counted */
	rl.rlim_cur = RLIM_INFINITY;
	CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	memcpy(copy, m, 2048 * ps);
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	/* Every page dirtied since snapshot 1 made it into snapshot 2. */
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	char *back = safe_area(c, 2048 * ps);
	CHECK_RC(ckpt_chain_read(ch, 2, (uintptr_t)m, back, 2048 * ps));
	CHECK(memcmp(back, copy, 2048 * ps) == 0);
	ckpt_chain_close(ch);
	ckpt_close(c);
}

Test(snap, a_commit_over_the_file_size_limit_fails_and_loses_nothing, .timeout = 60)
{
	in_child(fsize_limit, "file size limit");
}

static void injected(const char *dir)
{
	/* Each failure in turn, counted from the moment CKPT_FAULT is set:
	 * the file's fsync, the first write, the rename, the directory fsync,
	 * the creation of the temporary file. */
	static const char *const faults[] = {"fsync:1=EIO", "write:1=ENOSPC", "rename:1=EACCES",
					     "fsync:2=EIO", "open:1=EDQUOT", "write:3=EIO"};
	static const int codes[] = {CKPT_EIO, CKPT_ENOSPC, CKPT_EACCES, CKPT_EIO, CKPT_EDQUOT,
				    CKPT_EIO};
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(64, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	for (int round = 0; round < 6; round++) {
		m[(size_t)round * ps] = (char)(round + 10);
		setenv("CKPT_FAULT", faults[round], 1);
		int rc = ckpt_commit(c, NULL);
		unsetenv("CKPT_FAULT");
		if (rc != codes[round])
			child_die("%s: commit returned %s (%s)", faults[round], ckpt_err_name(rc),
			    ckpt_last_error());
		size_t n;
		CHECK_RC(ckpt_chain_verify(dir, &n));
		if (n != 1)
			child_die("%s: %zu snapshots after a failed commit", faults[round], n);
	}
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	/* Everything written during the failed rounds is in snapshot 2. */
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	for (int round = 0; round < 6; round++) {
		char b;
		CHECK_RC(ckpt_chain_read(ch, 2, (uintptr_t)m + (size_t)round * ps, &b, 1));
		CHECK(b == round + 10);
	}
	ckpt_chain_close(ch);
	ckpt_close(c);
}

Test(snap, injected_io_failures_leave_the_chain_intact)
{
	in_child(injected, "injected failures");
}

static int in_dirty_set(ckpt_t *c, const void *p)
{
	struct dset d = {0};
	CHECK_RC(dset_collect(c, &d));
	int has = dset_has(&d, p);
	dset_free(&d);
	return has;
}

static void sync_failures(const char *dir)
{
	/* A capture that cannot read the back-end's record of written pages
	 * (uffd's PAGEMAP_SCAN) for some region must fail the commit, leave
	 * the chain as it was, and keep every written page for the next try:
	 * the walk may have protected pages again that it never reported. */
	static const char *const faults[] = {"sync:1=EIO", "sync:2=EFAULT", "sync:4=EIO"};
	static const int codes[] = {CKPT_EIO, CKPT_EFAULT, CKPT_EIO};
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(16, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_stats st;
	CHECK_RC(ckpt_stats(c, &st));
	/* The mprotect back-end keeps no record of its own (its faults mark
	 * the dirty set), so a capture has nothing to read and the rule never
	 * applies: there each commit must succeed and store its page. */
	int has_sync = st.backend == CKPT_BACKEND_UFFD;
	uint64_t want = 1;
	for (int round = 0; round < 3; round++) {
		m[(size_t)round * ps] = (char)(round + 20);
		setenv("CKPT_FAULT", faults[round], 1);
		uint64_t id = 0;
		int rc = ckpt_commit(c, &id);
		unsetenv("CKPT_FAULT");
		if (!has_sync) {
			CHECK_RC(rc);
			CHECK(id == ++want);
			continue;
		}
		if (rc != codes[round])
			child_die("%s: commit returned %s (%s)", faults[round], ckpt_err_name(rc),
				  ckpt_last_error());
		size_t n;
		CHECK_RC(ckpt_chain_verify(dir, &n));
		if (n != 1)
			child_die("%s: %zu snapshots after a failed commit", faults[round], n);
		for (int r = 0; r <= round; r++)
			if (!in_dirty_set(c, m + (size_t)r * ps))
				child_die("%s: the page written in round %d left the dirty set",
					  faults[round], r);
	}
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == want + 1);
	/* Everything written during the failed rounds is in the last snapshot. */
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	for (int round = 0; round < 3; round++) {
		char b;
		CHECK_RC(ckpt_chain_read(ch, id, (uintptr_t)m + (size_t)round * ps, &b, 1));
		CHECK(b == round + 20);
	}
	ckpt_chain_close(ch);
	ckpt_close(c);
}

Test(snap, a_capture_that_cannot_read_the_written_pages_fails_and_loses_nothing)
{
	in_child(sync_failures, "failed syncs");
}

/* ---- a corrupt file is refused, memory untouched ---------------------------------------- */

static void corrupt(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(256, 0);
	uint64_t seed = 3;
	for (size_t i = 0; i < 256 * ps / 8; i++)
		((uint64_t *)m)[i] = rnd(&seed);
	char *before = safe_area(c, 256 * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	for (int i = 0; i < 256; i += 2)
		m[(size_t)i * ps] ^= 1;
	/* Flip one byte in every block of the base. */
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	ckpt_snapshot_info si;
	CHECK_RC(ckpt_chain_info(ch, 1, &si));
	ckpt_chain_close(ch);
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	for (off_t off = 256 + 100; off < (off_t)(256 + si.stored_bytes); off += 2000) {
		char b;
		CHECK(pread(fd, &b, 1, off) == 1);
		b ^= 0x10;
		CHECK(pwrite(fd, &b, 1, off) == 1);
	}
	close(fd);
	memcpy(before, m, 256 * ps);
	int rc = ckpt_restore(c, 1);
	CHECK(rc == CKPT_ECORRUPT);
	CHECK(strstr(ckpt_last_error(), "snap-00000001.ckpt"));
	CHECK(memcmp(before, m, 256 * ps) == 0);
	CHECK(ckpt_chain_verify(dir, NULL) == CKPT_ECORRUPT);
	ckpt_close(c);
}

Test(snap, a_corrupt_file_is_refused_and_memory_is_untouched)
{
	in_child(corrupt, "corrupt");
}

/* ---- a block larger than a reader's buffer ----------------------------------------------- */

/* Grows the first zstd block of the snapshot at path past a reader's
 * one-block buffer, everything else consistent (tests/gen-corrupt.c, the
 * damage of tests/corrupt/oversized). */
static void oversize_block(const char *path)
{
	const char *b = getenv("top_builddir");
	char prog[4096];
	snprintf(prog, sizeof prog, "%s/tests/gen-corrupt", b ? b : ".");
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		execl(prog, prog, "--oversize-block", path, (char *)NULL);
		_exit(127);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		child_die("%s --oversize-block %s: status %#x", prog, path, st);
}

static void oversized(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	/* Pages zstd shrinks: the snapshot has zstd blocks. */
	char *m = map_anon(64, 0);
	for (size_t i = 0; i < 64 * ps; i++)
		m[i] = (char)(i / ps + i % 13);
	char *before = safe_area(c, 64 * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	for (int i = 0; i < 64; i += 3)
		m[(size_t)i * ps + 7] ^= 1;
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	oversize_block(path);
	memcpy(before, m, 64 * ps);
	int rc = ckpt_restore(c, 1);
	if (rc != CKPT_ECORRUPT)
		child_die("restore returned %s (%s)", ckpt_err_name(rc), ckpt_last_error());
	CHECK(strstr(ckpt_last_error(), "snap-00000001.ckpt: block "));
	CHECK(strstr(ckpt_last_error(), "bytes stored for"));
	CHECK(memcmp(before, m, 64 * ps) == 0);
	CHECK(ckpt_chain_verify(dir, NULL) == CKPT_ECORRUPT);
	ckpt_close(c);
}

Test(snap, a_block_larger_than_a_reader_buffer_is_refused_by_a_restore)
{
	in_child(oversized, "oversized block");
}

/* A snapshot file read whole, to be changed and written back with every
 * hash agreeing again (file_store), as a writer would have made it. */
struct snapfile {
	int fd;
	size_t len;
	unsigned char *b;
	struct ckpt__fhdr h;
};

static void file_load(const char *path, struct snapfile *sf)
{
	sf->fd = open(path, O_RDWR);
	CHECK(sf->fd >= 0);
	struct stat sb;
	CHECK(fstat(sf->fd, &sb) == 0);
	sf->len = (size_t)sb.st_size;
	sf->b = malloc(sf->len);
	CHECK(sf->b && pread(sf->fd, sf->b, sf->len, 0) == (ssize_t)sf->len);
	memcpy(&sf->h, sf->b, sizeof sf->h);
}

/* The header's and the footer's hashes made again, the file written back. */
static void file_store(struct snapfile *sf)
{
	sf->h.hash = ckpt__xxh64(&sf->h, offsetof(struct ckpt__fhdr, hash), 0);
	memcpy(sf->b, &sf->h, sizeof sf->h);
	struct ckpt__ffooter f;
	memcpy(&f, sf->b + sf->len - sizeof f, sizeof f);
	f.header_hash = sf->h.hash;
	f.hash = ckpt__xxh64(&f, offsetof(struct ckpt__ffooter, hash), 0);
	memcpy(sf->b + sf->len - sizeof f, &f, sizeof f);
	CHECK(pwrite(sf->fd, sf->b, sf->len, 0) == (ssize_t)sf->len);
	close(sf->fd);
	free(sf->b);
}

/* ---- a block that passes its hash but not decompression ---------------------------------- */

/* Garbles the middle of the last zstd block of a snapshot file and makes
 * every hash agree again (the block's, the block table's, the header's and
 * the footer's): what only decompressing the block can find.  Returns the
 * block's index. */
static uint32_t garble_last_zstd_block(const char *path)
{
	struct snapfile sf;
	file_load(path, &sf);
	unsigned char *b = sf.b;
	struct ckpt__fsect *bs = &sf.h.sect[CKPT__SEC_BLOCKS];
	size_t nb = (size_t)(bs->size / sizeof(struct ckpt__fblock));
	/* The table is not aligned in the file: entries are copied. */
	struct ckpt__fblock blk;
	uint32_t which = UINT32_MAX;
	for (size_t i = 0; i < nb; i++) {
		memcpy(&blk, b + bs->offset + i * sizeof blk, sizeof blk);
		if (blk.codec == CKPT__CODEC_ZSTD && blk.csize >= 256)
			which = (uint32_t)i;
	}
	CHECK(which != UINT32_MAX);
	memcpy(&blk, b + bs->offset + which * sizeof blk, sizeof blk);
	unsigned char *frame = b + blk.offset;
	for (uint32_t i = blk.csize / 2; i < blk.csize / 2 + 32; i++)
		frame[i] ^= 0x5a;
	blk.hash = ckpt__xxh64(frame, blk.csize, 0);
	memcpy(b + bs->offset + which * sizeof blk, &blk, sizeof blk);
	bs->hash = ckpt__xxh64(b + bs->offset, bs->size, 0);
	file_store(&sf);
	return which;
}

/* Compressible but not uniform: every block of it is a zstd frame. */
static void fill_compressible(char *p, size_t bytes, uint64_t seed)
{
	for (size_t i = 0; i < bytes; i++)
		p[i] = (char)(rnd(&seed) & 3);
}

/* The state the failed restores below must leave exactly as it was: a
 * region with pages dirtied since the commit, a mapping created since
 * (a restore unmaps it) and one removed since (a restore recreates it). */
struct scene {
	char *m, *fresh, *gone, *copy;
	size_t pages;
};

static void scene_set(ckpt_t *c, struct scene *sc, size_t pages)
{
	size_t ps = pagesz();
	sc->pages = pages;
	sc->m = map_anon(pages, 0);
	fill_compressible(sc->m, pages * ps, 11);
	sc->gone = map_anon(8, 2);
	sc->copy = safe_area(c, (pages + 8) * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	for (size_t i = 0; i < pages; i += 3)
		sc->m[i * ps + 7] ^= 0x40;
	/* Made first, so that it does not take the place of the other. */
	sc->fresh = mmap(NULL, 8 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(sc->fresh != MAP_FAILED);
	CHECK(munmap(sc->gone, 8 * ps) == 0);
	memset(sc->fresh, 3, 8 * ps);
	memcpy(sc->copy, sc->m, pages * ps);
	memcpy(sc->copy + pages * ps, sc->fresh, 8 * ps);
}

/* Memory as scene_set left it, byte for byte, mapping for mapping. */
static void scene_unchanged(const struct scene *sc, const char *after)
{
	size_t ps = pagesz();
	char perms[8];
	if (memcmp(sc->copy, sc->m, sc->pages * ps) != 0)
		child_die("%s: the region changed", after);
	if (strcmp(perms_of(sc->fresh, perms), "rw-p") && strcmp(perms_of(sc->fresh, perms), "r--p"))
		child_die("%s: the mapping created since is gone", after);
	if (memcmp(sc->copy + sc->pages * ps, sc->fresh, 8 * ps) != 0)
		child_die("%s: the mapping created since changed", after);
	if (strcmp(perms_of(sc->gone, perms), ""))
		child_die("%s: the mapping removed since is there again (%s)", after, perms);
}

static void garbled(const char *dir)
{
	ckpt_t *c = open_chain(dir, 0);
	struct scene sc;
	scene_set(c, &sc, 512);
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	uint32_t block = garble_last_zstd_block(path);
	int rc = ckpt_restore(c, 1);
	if (rc != CKPT_ECORRUPT)
		child_die("restore returned %s (%s)", ckpt_err_name(rc), ckpt_last_error());
	char want[64];
	snprintf(want, sizeof want, "block %u", block);
	if (!strstr(ckpt_last_error(), "snap-00000001.ckpt") || !strstr(ckpt_last_error(), want))
		child_die("the error does not name the file and %s: %s", want, ckpt_last_error());
	scene_unchanged(&sc, "after the refused restore");
	/* Tracking goes on: a commit after the refusal stores the state. */
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	ckpt_close(c);
}

Test(snap, a_block_failing_decompression_is_refused_before_memory_changes, .timeout = 60)
{
	in_child(garbled, "garbled block");
}

static void map_fails(const char *dir)
{
	ckpt_t *c = open_chain(dir, 0);
	struct scene sc;
	scene_set(c, &sc, 64);
	/* The first mapping the restore makes fails. */
	setenv("CKPT_FAULT", "map:1=ENOMEM", 1);
	int rc = ckpt_restore(c, 1);
	unsetenv("CKPT_FAULT");
	if (rc != CKPT_ENOMEM)
		child_die("restore with a failing mmap returned %s (%s)", ckpt_err_name(rc),
			  ckpt_last_error());
	scene_unchanged(&sc, "after the failed restore");
	/* And without the fault, the same restore goes through. */
	CHECK_RC(ckpt_restore(c, 1));
	char perms[8];
	CHECK(!strcmp(perms_of(sc.fresh, perms), ""));
	CHECK(sc.gone[0] == 2 && sc.gone[8 * pagesz() - 1] == 2);
	CHECK((char)(sc.m[7] ^ 0x40) == sc.copy[7]);
	ckpt_close(c);
}

Test(snap, a_mapping_that_cannot_be_recreated_leaves_memory_as_it_was, .timeout = 60)
{
	in_child(map_fails, "mmap fails");
}

/* ---- memory a restore maps again, filled straight from the blocks ---------------------- */

/* Page i: noise (a raw block) in stretches of five, compressible between. */
static void fill_mixed(char *page, size_t i, uint64_t *seed)
{
	size_t ps = pagesz();
	if ((i / 5) % 2) {
		for (size_t k = 0; k < ps; k += 8) {
			uint64_t v = rnd(seed);
			memcpy(page + k, &v, 8);
		}
	} else {
		fill_compressible(page, ps, rnd(seed));
	}
}

#define LC_PAGES 200
#define LC_COMMITS 30

/* A mapping unmapped (whole, or its middle) and restored from a chain of
 * thirty: each page comes from the newest snapshot that has it, whether
 * its block is wanted whole (decompressed in place) or in part. */
static void long_chain_refill(const char *dir)
{
	size_t ps = pagesz(), one = LC_PAGES * ps;
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(LC_PAGES, 0);
	char *copies = safe_area(c, one * (LC_COMMITS + 1));
	uint64_t seed = 0x9e3779b97f4a7c15u;
	/* Noise in the first 128 pages: raw blocks, of which later
	 * snapshots leave only some pages current. */
	for (size_t i = 0; i < LC_PAGES; i++)
		fill_mixed(m + i * ps, i < 128 ? 5 : i, &seed);
	CHECK_RC(ckpt_begin(c));
	for (int id = 1; id <= LC_COMMITS; id++) {
		for (int w = 0; id > 1 && w < 6; w++) {
			size_t page = rnd(&seed) % LC_PAGES;
			if (w == 5)
				memset(m + page * ps, 0, ps);
			else
				fill_mixed(m + page * ps, rnd(&seed), &seed);
		}
		uint64_t got;
		CHECK_RC(ckpt_commit(c, &got));
		CHECK(got == (uint64_t)id);
		memcpy(copies + (size_t)id * one, m, one);
	}
	static const int ids[] = {LC_COMMITS, 1, 17, LC_COMMITS, 2};
	for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
		if (k % 2 == 0)
			CHECK(munmap(m, one) == 0);
		else
			CHECK(munmap(m + 50 * ps, 100 * ps) == 0);
		CHECK_RC(ckpt_restore(c, (uint64_t)ids[k]));
		const char *want = copies + (size_t)ids[k] * one;
		for (size_t i = 0; i < LC_PAGES; i++)
			if (memcmp(m + i * ps, want + i * ps, ps) != 0)
				child_die("page %zu differs after unmapping %s and restoring %d", i,
					  k % 2 ? "the middle" : "all", ids[k]);
	}
	ckpt_close(c);
}

Test(snap, a_mapping_restored_from_a_long_chain_gets_each_page_from_its_newest_snapshot,
     .timeout = 120)
{
	in_child(long_chain_refill, "long chain refill");
}

/* Garbles every block of the snapshot at path stored with `codec`: zstd
 * frames with their hash made right again (decompression must catch them),
 * raw blocks as they are (their hash must).  Returns how many. */
static int garble_blocks(const char *path, uint32_t codec)
{
	struct snapfile sf;
	file_load(path, &sf);
	unsigned char *b = sf.b;
	struct ckpt__fsect *bs = &sf.h.sect[CKPT__SEC_BLOCKS];
	size_t nb = (size_t)(bs->size / sizeof(struct ckpt__fblock));
	int n = 0;
	for (size_t i = 0; i < nb; i++) {
		struct ckpt__fblock blk;
		memcpy(&blk, b + bs->offset + i * sizeof blk, sizeof blk);
		if (blk.codec != codec)
			continue;
		b[blk.offset + blk.csize / 2] ^= 0x5a;
		b[blk.offset + blk.csize / 2 + 1] ^= 0xa5;
		if (blk.codec == CKPT__CODEC_ZSTD)
			blk.hash = ckpt__xxh64(b + blk.offset, blk.csize, 0);
		memcpy(b + bs->offset + i * sizeof blk, &blk, sizeof blk);
		n++;
	}
	bs->hash = ckpt__xxh64(b + bs->offset, bs->size, 0);
	file_store(&sf);
	return n;
}

static char probe[4096] __attribute__((aligned(4096)));

/* The codec of the blocks refill_damaged garbles. */
static uint32_t damaged_codec;

/* A restore that must map a mapping again from damaged blocks is refused:
 * the mapping is not left behind, nothing else changed, and the snapshot
 * before still restores. */
static void refill_damaged(const char *dir)
{
	size_t ps = pagesz(), n = 384;
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(n, 0);
	char *copy = safe_area(c, n * ps);
	uint64_t seed = 77;
	/* Noise first (raw blocks), then compressible pages (zstd). */
	for (size_t i = 0; i < n; i++)
		fill_mixed(m + i * ps, i < n / 2 ? 5 : 0, &seed);
	memcpy(copy, m, n * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	for (size_t i = 0; i < n; i++)
		fill_mixed(m + i * ps, i < n / 2 ? 5 : 0, &seed);
	CHECK_RC(ckpt_commit(c, NULL));
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000002.ckpt", dir);
	const char *what = damaged_codec == CKPT__CODEC_RAWP ? "raw" : "zstd";
	if (garble_blocks(path, damaged_codec) == 0)
		child_die("snapshot 2 has no %s block", what);
	CHECK(munmap(m, n * ps) == 0);
	probe[0] = 9;
	int rc = ckpt_restore(c, CKPT_LATEST);
	if (rc != CKPT_ECORRUPT)
		child_die("restore from damaged %s blocks returned %s (%s)", what, ckpt_err_name(rc),
			  ckpt_last_error());
	if (!strstr(ckpt_last_error(), "snap-00000002.ckpt"))
		child_die("the error does not name the file: %s", ckpt_last_error());
	/* Raw blocks have their hash only; zstd frames their checksum. */
	if ((damaged_codec == CKPT__CODEC_RAWP) != (strstr(ckpt_last_error(), "hash") != NULL))
		child_die("a damaged %s block refused for another reason: %s", what,
			  ckpt_last_error());
	char perms[8];
	if (strcmp(perms_of(m, perms), ""))
		child_die("the refused restore left the mapping behind (%s)", perms);
	CHECK(probe[0] == 9);
	CHECK_RC(ckpt_restore(c, 1));
	CHECK(memcmp(m, copy, n * ps) == 0);
	CHECK(probe[0] == 0);
	ckpt_close(c);
}

Test(snap, a_mapping_refilled_from_damaged_raw_blocks_is_refused_and_not_left_behind,
     .timeout = 60)
{
	damaged_codec = CKPT__CODEC_RAWP;
	in_child(refill_damaged, "damaged raw refill");
}

Test(snap, a_mapping_refilled_from_damaged_zstd_blocks_is_refused_and_not_left_behind,
     .timeout = 60)
{
	damaged_codec = CKPT__CODEC_ZSTD;
	in_child(refill_damaged, "damaged zstd refill");
}

/* ---- a rollback larger than what a restore keeps decompressed ------------------------- */

/* 80 MiB of compressible pages, all written after the commit and rolled
 * back: more pages than a restore keeps decompressed (64 MiB), and more
 * bytes than their blocks as stored, so the blocks are kept as stored and
 * decompressed again when written; memory must come back exact. */
static void big_rollback(const char *dir)
{
	size_t ps = pagesz(), n = (80u << 20) / ps;
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(n, 0);
	char *copy = safe_area(c, n * ps);
	fill_compressible(m, n * ps, 3);
	memcpy(copy, m, n * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	for (size_t i = 0; i < n; i++)
		m[i * ps + (i % 61) * 8] ^= 0x3c;
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	for (size_t i = 0; i < n; i++)
		if (memcmp(m + i * ps, copy + i * ps, ps) != 0)
			child_die("page %zu differs after the rollback", i);
	ckpt_stats st;
	ckpt_stats(c, &st);
	CHECK(st.restore_pages >= n);
	ckpt_close(c);
}

Test(snap, a_rollback_larger_than_a_restore_keeps_decompressed_is_exact, .timeout = 120)
{
	in_child(big_rollback, "big rollback");
}

/* ---- raw blocks with a hash a page ----------------------------------------------------- */

/* Where the page at p (noise, so found once) lies in the snapshot file at
 * path, and the block holding it; its bytes garbled when `garble`. */
static void find_page(const char *path, const char *p, uint64_t *at, struct ckpt__fblock *blk,
		      uint32_t *which)
{
	struct snapfile sf;
	file_load(path, &sf);
	const unsigned char *hit = memmem(sf.b, sf.len, p, pagesz());
	CHECK(hit != NULL);
	*at = (uint64_t)(hit - sf.b);
	struct ckpt__fsect *bs = &sf.h.sect[CKPT__SEC_BLOCKS];
	*which = UINT32_MAX;
	for (size_t i = 0; i < bs->size / sizeof *blk; i++) {
		memcpy(blk, sf.b + bs->offset + i * sizeof *blk, sizeof *blk);
		if (blk->offset <= *at && *at < blk->offset + blk->csize) {
			*which = (uint32_t)i;
			break;
		}
	}
	CHECK(*which != UINT32_MAX);
	close(sf.fd);
	free(sf.b);
}

/* A page later snapshots replaced is not read: damaged, it stops only a
 * restore that needs it; damaged page hashes stop any that reads the
 * block. */
static void page_hashes(const char *dir)
{
	size_t ps = pagesz(), n = 256;
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(n, 0);
	char *copy = safe_area(c, 2 * n * ps);
	uint64_t seed = 99;
	for (size_t i = 0; i < n; i++)
		fill_mixed(m + i * ps, 5, &seed);
	memcpy(copy, m, n * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	/* Every other page: every block keeps pages of snapshot 1 in use. */
	for (size_t i = 0; i < n; i += 2)
		fill_mixed(m + i * ps, 5, &seed);
	memcpy(copy + n * ps, m, n * ps);
	CHECK_RC(ckpt_commit(c, NULL));
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	uint64_t at;
	struct ckpt__fblock blk;
	uint32_t which;
	/* Page 100 as snapshot 1 holds it: replaced in snapshot 2. */
	find_page(path, copy + 100 * ps, &at, &blk, &which);
	CHECK(blk.codec == CKPT__CODEC_RAWP);
	flip_byte(path, at + 100);
	CHECK(munmap(m, n * ps) == 0);
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	CHECK(memcmp(m, copy + n * ps, n * ps) == 0);
	int rc = ckpt_restore(c, 1);
	if (rc != CKPT_ECORRUPT || !strstr(ckpt_last_error(), "page") ||
	    !strstr(ckpt_last_error(), "hash mismatch"))
		child_die("restoring the damaged page returned %s (%s)", ckpt_err_name(rc),
			  ckpt_last_error());
	CHECK(memcmp(m, copy + n * ps, n * ps) == 0);
	/* The page hashes of the block holding page 201 (still snapshot 1's). */
	find_page(path, copy + 201 * ps, &at, &blk, &which);
	flip_byte(path, blk.offset + blk.csize + 3);
	CHECK(munmap(m, n * ps) == 0);
	rc = ckpt_restore(c, CKPT_LATEST);
	if (rc != CKPT_ECORRUPT || !strstr(ckpt_last_error(), "page hashes"))
		child_die("restoring with damaged page hashes returned %s (%s)", ckpt_err_name(rc),
			  ckpt_last_error());
	char perms[8];
	CHECK(!strcmp(perms_of(m, perms), ""));
	ckpt_close(c);
}

/* A block with a hash a page moved up against the next block, its page
 * hashes over that block's bytes (every hash made right again): refused
 * when the chain is opened. */
static void hashes_outside(const char *dir)
{
	size_t ps = pagesz(), n = 256;
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(n, 0);
	uint64_t seed = 5;
	for (size_t i = 0; i < n; i++)
		fill_mixed(m + i * ps, 5, &seed);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_close(c);
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	struct snapfile sf;
	file_load(path, &sf);
	struct ckpt__fsect *bs = &sf.h.sect[CKPT__SEC_BLOCKS];
	size_t nb = bs->size / sizeof(struct ckpt__fblock), which = SIZE_MAX;
	struct ckpt__fblock blk, next;
	for (size_t i = 0; i + 1 < nb && which == SIZE_MAX; i++) {
		memcpy(&blk, sf.b + bs->offset + i * sizeof blk, sizeof blk);
		if (blk.codec == CKPT__CODEC_RAWP)
			which = i;
	}
	CHECK(which != SIZE_MAX);
	memcpy(&next, sf.b + bs->offset + (which + 1) * sizeof next, sizeof next);
	blk.offset = next.offset - blk.csize;
	memcpy(sf.b + bs->offset + which * sizeof blk, &blk, sizeof blk);
	bs->hash = ckpt__xxh64(sf.b + bs->offset, bs->size, 0);
	file_store(&sf);
	size_t checked = 0;
	int rc = ckpt_chain_verify(dir, &checked);
	if (rc != CKPT_ECORRUPT || !strstr(ckpt_last_error(), "outside the data area"))
		child_die("page hashes over the next block: %s (%s)", ckpt_err_name(rc),
			  ckpt_last_error());
}

Test(snap, a_raw_block_whose_page_hashes_leave_the_data_area_is_refused, .timeout = 60)
{
	in_child(hashes_outside, "page hashes outside");
}

Test(snap, a_raw_page_no_restore_needs_is_not_read_and_page_hashes_are_checked, .timeout = 60)
{
	in_child(page_hashes, "page hashes");
}

/* ---- the process record holds the program's files, not ckpt's ------------------------ */

/* The paths of the descriptors the process record of snapshot file `path`
 * lists, each followed by a newline (malloc'd). */
static char *recorded_files(const char *path)
{
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	struct ckpt__fhdr h;
	CHECK(pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h);
	CHECK(h.proc.size >= 16);
	unsigned char *rec = malloc(h.proc.size);
	CHECK(rec && pread(fd, rec, h.proc.size, (off_t)h.proc.offset) == (ssize_t)h.proc.size);
	close(fd);
	CHECK(memcmp(rec, CKPT__PROC_MAGIC, 8) == 0);
	char *out = calloc(1, h.proc.size + 1);
	CHECK(out);
	size_t n = 0;
	for (size_t at = 16; at + 8 <= h.proc.size;) {
		uint32_t e[2];
		memcpy(e, rec + at, 8);
		CHECK(at + 8 + e[1] <= h.proc.size);
		if (e[0] == CKPT__PE_FD && e[1] > sizeof(struct ckpt__pfd)) {
			size_t l = e[1] - sizeof(struct ckpt__pfd);
			memcpy(out + n, rec + at + 8 + sizeof(struct ckpt__pfd), l);
			n += l;
			out[n++] = '\n';
		}
		at += 8 + ((e[1] + 7u) & ~7u);
	}
	free(rec);
	return out;
}

static void own_fds(const char *dir)
{
	ckpt_t *c = resumable_handle(dir, 0);
	if (!c)
		return; /* a sanitizer build: the refusal is what it can check */
	/* A file of the program's, which the record must list. */
	char mine[512];
	snprintf(mine, sizeof mine, "%s.program-file", dir);
	int pfd = open(mine, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	CHECK(pfd >= 0);
	char *m = map_anon(8, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	/* A restore opens the chain: its snapshot files are open now. */
	m[0] = 2;
	CHECK_RC(ckpt_restore(c, 1));
	CHECK(m[0] == 1);
	CHECK_RC(ckpt_commit(c, NULL));
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000002.ckpt", dir);
	char *files = recorded_files(path);
	if (!strstr(files, mine))
		child_die("the record does not list the program's file %s: %s", mine, files);
	if (strstr(files, dir) && strstr(strstr(files, dir), "/snap-"))
		child_die("the record lists ckpt's own files as the program's: %s", files);
	if (strstr(files, "/lock\n"))
		child_die("the record lists the chain's lock: %s", files);
	free(files);
	close(pfd);
	ckpt_close(c);
}

Test(snap, a_resumable_commit_records_no_descriptor_of_ckpt, .timeout = 60)
{
	in_child(own_fds, "own descriptors");
}

/* ---- diff of mappings in one snapshot only ------------------------------------------- */

struct diffseen {
	uintptr_t lo[8], hi[8];
	size_t n, pages;
};

static int diff_seen(const ckpt_page_run *r, void *arg)
{
	struct diffseen *d = arg;
	if (d->n < 8) {
		d->lo[d->n] = r->start;
		d->hi[d->n] = r->start + r->npages * pagesz();
	}
	d->n++;
	d->pages += r->npages;
	return 0;
}

/* Whether [lo, hi) is exactly one of the runs seen. */
static int run_seen(const struct diffseen *d, const void *lo, size_t len)
{
	for (size_t i = 0; i < d->n && i < 8; i++)
		if (d->lo[i] == (uintptr_t)lo && d->hi[i] == (uintptr_t)lo + len)
			return 1;
	return 0;
}

/* A mapping in one of two snapshots differs whole, read or not: a 4 GiB
 * one with two pages written comes out as one run, without a walk of its
 * million pages. */
static void one_sided(const char *dir)
{
	size_t ps = pagesz(), big = (size_t)4 << 30;
	ckpt_t *c = open_chain(dir, 0);
	char *gone = map_anon(8, 7);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	CHECK(munmap(gone, 8 * ps) == 0);
	char *born = mmap(NULL, big, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(born != MAP_FAILED);
	born[0] = 1;
	born[big - ps] = 2;
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	struct diffseen d = {0};
	CHECK_RC(ckpt_chain_diff(ch, 1, 2, diff_seen, &d));
	if (!run_seen(&d, gone, 8 * ps) || !run_seen(&d, born, big))
		child_die("diff 1 2: %zu runs, %zu pages; the unmapped mapping %s, the new one %s",
			  d.n, d.pages, run_seen(&d, gone, 8 * ps) ? "seen" : "missing",
			  run_seen(&d, born, big) ? "seen" : "missing");
	struct diffseen back = {0};
	CHECK_RC(ckpt_chain_diff(ch, 2, 1, diff_seen, &back));
	CHECK(back.n == d.n && back.pages == d.pages);
	ckpt_chain_close(ch);
	ckpt_close(c);
	munmap(born, big);
}

Test(snap, a_mapping_in_one_snapshot_only_differs_whole, .timeout = 60)
{
	in_child(one_sided, "diff of one-sided mappings");
}

/* ---- a snapshot of another chain put in place of the newest -------------------------- */

/* A handle whose reader is open (after a restore) adds each new snapshot to
 * it alone; the file found under the new name must pass the checks a whole
 * chain's opening makes. */
static void swapped(const char *dir)
{
	char other[512], cmd[1200];
	snprintf(other, sizeof other, "%s-other", dir);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		/* Another chain with two snapshots, in another process. */
		ckpt_t *o = open_chain(other, 0);
		if (ckpt_begin(o) || ckpt_commit(o, NULL) || ckpt_commit(o, NULL))
			_exit(1);
		_exit(0);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(8, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	m[0] = 2;
	CHECK_RC(ckpt_restore(c, 1)); /* the reader is open from here */
	CHECK(m[0] == 1);
	m[0] = 3;
	CHECK_RC(ckpt_commit(c, NULL));
	snprintf(cmd, sizeof cmd, "cp '%s/snap-00000002.ckpt' '%s/snap-00000002.ckpt'", other, dir);
	CHECK(system(cmd) == 0);
	m[0] = 4;
	int rc = ckpt_restore(c, 2);
	if (rc != CKPT_EFOREIGN)
		child_die("restore from another chain's file: %s (%s)", ckpt_err_name(rc),
			  ckpt_last_error());
	CHECK(strstr(ckpt_last_error(), "another chain"));
	CHECK(m[0] == 4);
	ckpt_close(c);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", other);
	CHECK(system(cmd) == 0);
}

Test(snap, another_chains_file_in_place_of_the_newest_is_refused, .timeout = 60)
{
	in_child(swapped, "swapped file");
}

/* ---- kill -9 while committing ------------------------------------------------------------ */

static void killed(const char *dir)
{
	size_t ps = pagesz();
	for (int round = 0; round < 4; round++) {
		char sub[512];
		snprintf(sub, sizeof sub, "%s-%d", dir, round);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			/* Commit after commit; before commit n, every page holds
			 * n (the id it will get). */
			ckpt_t *c = open_chain(sub, 0);
			char *m = map_anon(1024, 0);
			/* Tell the parent where the memory is. */
			char line[64], path[600];
			int len = snprintf(line, sizeof line, "%lx\n", (unsigned long)m);
			snprintf(path, sizeof path, "%s.addr", sub);
			int af = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			CHECK(af >= 0 && write(af, line, (size_t)len) == len);
			close(af);
			CHECK_RC(ckpt_begin(c));
			for (int n = 1;; n++) {
				for (size_t p = 0; p < 1024; p += 1 + (size_t)(n % 7))
					memset(m + p * ps, n & 0xff, ps);
				memset(m, n & 0xff, ps);
				*(int *)(m + 8) = n;
				CHECK_RC(ckpt_commit(c, NULL));
			}
		}
		struct timespec ts = {0, (long)(20 + round * 37) * 1000000L};
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int st;
		waitpid(pid, &st, 0);
		size_t n;
		int rc = ckpt_chain_verify(sub, &n);
		if (rc)
			child_die("round %d: verify after kill -9: %s (%s)", round, ckpt_strerror(rc),
			    ckpt_last_error());
		if (n == 0)
			continue; /* killed before the first snapshot completed */
		char path[600], line[64] = "";
		snprintf(path, sizeof path, "%s.addr", sub);
		int af = open(path, O_RDONLY);
		CHECK(af >= 0);
		(void)!read(af, line, sizeof line - 1);
		close(af);
		uintptr_t addr = (uintptr_t)strtoull(line, NULL, 16);
		ckpt_chain *ch;
		CHECK_RC(ckpt_chain_open(&ch, sub));
		uint64_t latest = ckpt_chain_latest(ch);
		char page[4096];
		CHECK_RC(ckpt_chain_read(ch, latest, addr, page, sizeof page));
		int stored;
		memcpy(&stored, page + 8, sizeof stored);
		if ((uint64_t)stored != latest || (unsigned char)page[0] != (latest & 0xff))
			child_die("round %d: snapshot %llu holds the memory of commit %d", round,
			    (unsigned long long)latest, stored);
		ckpt_chain_close(ch);
	}
}

Test(snap, kill_9_during_commits_leaves_a_sound_chain, .timeout = 60)
{
	in_child(killed, "kill -9");
}

/* ---- another executable ---------------------------------------------------------------- */

/* Rewrites the build-id in a snapshot file and recomputes its hashes, as
 * if another build of the program had written it. */
static void forge_build_id(const char *path)
{
	struct snapfile sf;
	file_load(path, &sf);
	CHECK(sf.h.bid_len > 0);
	struct ckpt__fsect *ss = &sf.h.sect[CKPT__SEC_STRINGS];
	sf.b[ss->offset + sf.h.bid_off] ^= 0xff;
	ss->hash = ckpt__xxh64(sf.b + ss->offset, ss->size, 0);
	file_store(&sf);
}

static void other_exe(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, 0);
	char *m = map_anon(8, 6);
	char *before = safe_area(c, 8 * ps);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	char path[512];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	forge_build_id(path);
	m[ps] = 1;
	memcpy(before, m, 8 * ps);
	int rc = ckpt_restore(c, 1);
	if (rc != CKPT_EFOREIGN)
		child_die("restore returned %s (%s)", ckpt_err_name(rc), ckpt_last_error());
	CHECK(strstr(ckpt_last_error(), "another executable"));
	CHECK(memcmp(before, m, 8 * ps) == 0);
	ckpt_close(c);
}

Test(snap, a_snapshot_of_another_executable_is_refused)
{
	in_child(other_exe, "other executable");
}

/* ---- misuse ------------------------------------------------------------------------------- */

Test(snap, commit_and_restore_need_a_directory_and_tracking)
{
	ckpt_t *c;
	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	cr_expect_eq(ckpt_commit(c, NULL), CKPT_EINVAL);
	cr_expect_eq(ckpt_restore(c, 1), CKPT_EINVAL);
	ckpt_close(c);
	char dir[] = "/tmp/ckpt-snap-XXXXXX";
	cr_assert(mkdtemp(dir));
	cr_assert_eq(ckpt_open(&c, dir, NULL), 0);
	cr_expect_eq(ckpt_commit(c, NULL), CKPT_ESTATE);
	cr_expect_eq(ckpt_restore(c, 1), CKPT_ESTATE);
	cr_assert_eq(ckpt_begin(c), 0);
	cr_expect_eq(ckpt_restore(c, 1), CKPT_ENOENT, "no snapshot yet");
	cr_expect_eq(ckpt_restore(c, 0), CKPT_EINVAL);
	ckpt_close(c);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	(void)!system(cmd);
}

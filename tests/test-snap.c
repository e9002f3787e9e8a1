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

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
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
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	struct stat sb;
	CHECK(fstat(fd, &sb) == 0);
	size_t len = (size_t)sb.st_size;
	unsigned char *b = malloc(len);
	CHECK(b && pread(fd, b, len, 0) == (ssize_t)len);
	struct ckpt__fhdr h;
	memcpy(&h, b, sizeof h);
	CHECK(h.bid_len > 0);
	unsigned char *bid = b + h.sect[CKPT__SEC_STRINGS].offset + h.bid_off;
	bid[0] ^= 0xff;
	h.sect[CKPT__SEC_STRINGS].hash = ckpt__xxh64(b + h.sect[CKPT__SEC_STRINGS].offset,
						     h.sect[CKPT__SEC_STRINGS].size, 0);
	h.hash = ckpt__xxh64(&h, offsetof(struct ckpt__fhdr, hash), 0);
	memcpy(b, &h, sizeof h);
	struct ckpt__ffooter f;
	memcpy(&f, b + len - sizeof f, sizeof f);
	f.header_hash = h.hash;
	f.hash = ckpt__xxh64(&f, offsetof(struct ckpt__ffooter, hash), 0);
	memcpy(b + len - sizeof f, &f, sizeof f);
	CHECK(pwrite(fd, b, len, 0) == (ssize_t)len);
	close(fd);
	free(b);
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

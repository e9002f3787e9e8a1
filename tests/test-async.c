/*
 * test-async.c - CKPT_F_ASYNC: commits written in the background.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A restore rolls back the whole process memory, the test framework's own
 * state included; so each scenario runs in a child process of its own and
 * reports through a pipe and its exit status.  Copies of memory taken for
 * comparison live in a range given to ckpt_exclude, which no restore
 * touches.
 */
#include "helpers.h"

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

static ckpt_t *open_chain(const char *dir, unsigned flags, uint64_t limit)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_AUTO; /* CKPT_BACKEND in the environment decides */
	o.flags = flags;
	o.staging_limit = limit;
	CHECK_RC(ckpt_open(&c, dir, &o));
	return c;
}

static size_t chain_len(const char *dir)
{
	size_t n = 0;
	CHECK_RC(ckpt_chain_verify(dir, &n));
	return n;
}

/* ---- a chain of 50, restored at every id ------------------------------------------ */

#define NPAGES 96
#define NCOMMITS 50
static char globals[4 * 4096] __attribute__((aligned(4096)));

static void fifty(const char *dir, unsigned flags)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, CKPT_F_ASYNC | flags, 0);
	char *m = map_anon(NPAGES, 1);
	size_t one = NPAGES * ps + sizeof globals;
	char *copies = safe_area(c, one * (NCOMMITS + 1));
	uint64_t seed = 0x9e3779b9;
	CHECK_RC(ckpt_begin(c));
	for (int id = 1; id <= NCOMMITS; id++) {
		/* Written while the previous commit is still being written. */
		int writes = (int)(rnd(&seed) % 24) + 1;
		for (int w = 0; w < writes; w++) {
			size_t page = rnd(&seed) % NPAGES, off = rnd(&seed) % (ps - 8);
			*(uint64_t *)(m + page * ps + (off & ~7ul)) = rnd(&seed);
			if (w % 3 == 0)
				globals[rnd(&seed) % sizeof globals] = (char)id;
			if (w == 7)
				memset(m + (rnd(&seed) % NPAGES) * ps, 0, ps);
		}
		uint64_t got;
		CHECK_RC(ckpt_commit(c, &got));
		if (got != (uint64_t)id)
			child_die("commit %d returned id %llu", id, (unsigned long long)got);
		memcpy(copies + id * one, m, NPAGES * ps);
		memcpy(copies + id * one + NPAGES * ps, globals, sizeof globals);
		/* Overwrite at once what was just committed: the snapshot must
		 * hold the memory as of the commit, not as of its write. */
		if (id % 2)
			for (size_t p = 0; p < NPAGES; p += 5)
				m[p * ps + 1] ^= 0x5a;
		if (id % 10 == 0) {
			uint64_t durable;
			CHECK_RC(ckpt_wait(c, &durable));
			CHECK(durable == (uint64_t)id);
		}
	}
	uint64_t durable;
	CHECK_RC(ckpt_wait(c, &durable));
	CHECK(durable == NCOMMITS);
	CHECK(chain_len(dir) == NCOMMITS);
	ckpt_stats st;
	CHECK_RC(ckpt_stats(c, &st));
	CHECK(st.commits == NCOMMITS && st.commit_id == NCOMMITS);
	if (st.commit_staged_bytes == 0 || st.commit_pause_ns == 0 || st.commit_write_ns == 0)
		child_die("stats of an async commit: staged %llu pause %llu write %llu",
		    (unsigned long long)st.commit_staged_bytes, (unsigned long long)st.commit_pause_ns,
		    (unsigned long long)st.commit_write_ns);
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

static void fifty_plain(const char *dir)
{
	fifty(dir, 0);
}

static void fifty_shadow(const char *dir)
{
	fifty(dir, CKPT_F_SHADOW);
}

Test(async, a_chain_of_fifty_restored_at_every_id, .timeout = 240)
{
	in_child(fifty_plain, "50 async commits");
}

Test(async, a_chain_of_fifty_with_shadow_copies, .timeout = 240)
{
	in_child(fifty_shadow, "50 async commits, CKPT_F_SHADOW");
}

/* ---- a failed background write ------------------------------------------------------ */

static void failed_write(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, CKPT_F_ASYNC, 0);
	char *m = map_anon(64, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	CHECK_RC(ckpt_wait(c, NULL));
	/* Round 0 reports through ckpt_wait, round 1 through ckpt_commit. */
	for (int round = 0; round < 2; round++) {
		m[(size_t)round * ps] = (char)(round + 10);
		/* Memory first seen by the commit that fails: stored whole. */
		char *fresh = map_anon(8, 30 + round);
		setenv("CKPT_FAULT", "write:2=ENOSPC", 1);
		uint64_t id;
		CHECK_RC(ckpt_commit(c, &id));
		CHECK(id == 2);
		/* The program goes on; the write fails behind it. */
		m[40 * ps] = (char)(round + 50);
		int rc;
		if (round == 0) {
			uint64_t durable = 99;
			rc = ckpt_wait(c, &durable);
			CHECK(durable == 1);
		} else {
			uint64_t id2 = 99;
			/* Waits for the write, reports it, commits nothing. */
			rc = ckpt_commit(c, &id2);
			CHECK(id2 == 99);
		}
		unsetenv("CKPT_FAULT");
		if (rc != CKPT_ENOSPC)
			child_die("round %d: returned %s (%s)", round, ckpt_err_name(rc), ckpt_last_error());
		CHECK(strstr(ckpt_last_error(), "background"));
		CHECK(chain_len(dir) == 1);
		/* Reported once. */
		CHECK_RC(ckpt_wait(c, NULL));
		/* The next commit stores everything, with the failed id. */
		CHECK_RC(ckpt_commit(c, &id));
		CHECK(id == 2);
		uint64_t durable;
		CHECK_RC(ckpt_wait(c, &durable));
		CHECK(durable == 2);
		ckpt_chain *ch;
		CHECK_RC(ckpt_chain_open(&ch, dir));
		char b;
		CHECK_RC(ckpt_chain_read(ch, 2, (uintptr_t)m + (size_t)round * ps, &b, 1));
		CHECK(b == round + 10);
		CHECK_RC(ckpt_chain_read(ch, 2, (uintptr_t)m + 40 * ps, &b, 1));
		CHECK(b == round + 50);
		for (size_t p = 0; p < 8; p++) {
			CHECK_RC(ckpt_chain_read(ch, 2, (uintptr_t)fresh + p * ps + 100, &b, 1));
			if (b != 30 + round)
				child_die("round %d: page %zu of memory new in the failed commit holds %d",
				    round, p, b);
		}
		ckpt_chain_close(ch);
		CHECK(chain_len(dir) == 2);
		/* Back to one snapshot for the next round. */
		if (round == 0) {
			ckpt_close(c);
			char cmd[600];
			snprintf(cmd, sizeof cmd, "rm -f '%s'/snap-00000002.ckpt", dir);
			CHECK(system(cmd) == 0);
			/* A new handle cannot append to the old chain; start again. */
			c = open_chain(dir, CKPT_F_ASYNC | CKPT_F_OVERWRITE, 0);
			CHECK_RC(ckpt_begin(c));
			CHECK_RC(ckpt_commit(c, NULL));
			CHECK_RC(ckpt_wait(c, NULL));
		}
		munmap(fresh, 8 * ps);
	}
	ckpt_close(c);
}

Test(async, a_failed_background_write_surfaces_and_loses_nothing, .timeout = 60)
{
	in_child(failed_write, "ENOSPC in the background");
}

/* ---- kill -9 while a background write is in flight ------------------------------------ */

static void killed(const char *dir)
{
	size_t ps = pagesz();
	for (int round = 0; round < 5; round++) {
		char sub[512];
		snprintf(sub, sizeof sub, "%s-%d", dir, round);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			/* Before commit n, every page of the first 1024 holds n;
			 * right after it, the program writes n + 1 while the
			 * background write of n goes on. */
			ckpt_t *c = open_chain(sub, CKPT_F_ASYNC, 0);
			char *m = map_anon(1024, 0);
			char line[64], path[600];
			int len = snprintf(line, sizeof line, "%lx\n", (unsigned long)m);
			snprintf(path, sizeof path, "%s.addr", sub);
			int af = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			CHECK(af >= 0 && write(af, line, (size_t)len) == len);
			close(af);
			CHECK_RC(ckpt_begin(c));
			for (int n = 1;; n++) {
				for (size_t p = 0; p < 1024; p += 1 + (size_t)(n % 5))
					memset(m + p * ps, n & 0xff, ps);
				memset(m, n & 0xff, ps);
				*(int *)(m + 8) = n;
				CHECK_RC(ckpt_commit(c, NULL));
			}
		}
		/* From the moment the child has its chain and tracks (it
		 * writes the .addr file just before ckpt_begin): on a busy
		 * machine it may not get there in the first milliseconds. */
		char ready[600];
		snprintf(ready, sizeof ready, "%s.addr", sub);
		struct timespec tick = {0, 1000000L};
		for (int w = 0; w < 10000 && access(ready, F_OK) != 0; w++)
			nanosleep(&tick, NULL);
		struct timespec ts = {0, (long)(15 + round * 29) * 1000000L};
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
			continue;
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
		char *page = malloc(ps);
		CHECK(page);
		for (size_t p = 0; p < 1024; p++) {
			CHECK_RC(ckpt_chain_read(ch, latest, addr + p * ps, page, ps));
			int stored;
			memcpy(&stored, page + 8, sizeof stored);
			if (p == 0 && (uint64_t)stored != latest)
				child_die("round %d: snapshot %llu holds the memory of commit %d", round,
				    (unsigned long long)latest, stored);
			/* Page p was last written by the largest k <= latest
			 * with p % (1 + k % 5) == 0. */
			int want = 0;
			for (int k = (int)latest; k >= 1; k--)
				if (p % (1 + (size_t)(k % 5)) == 0) {
					want = k;
					break;
				}
			if ((unsigned char)page[100] != (want & 0xff))
				child_die("round %d: page %zu of snapshot %llu holds %d, not %d", round, p,
				    (unsigned long long)latest, (unsigned char)page[100], want & 0xff);
		}
		free(page);
		ckpt_chain_close(ch);
		/* A new handle clears what the dead one left half-written. */
		ckpt_t *c = open_chain(sub, CKPT_F_ASYNC | CKPT_F_OVERWRITE, 0);
		ckpt_close(c);
	}
}

Test(async, kill_9_with_a_write_in_flight_leaves_a_sound_chain, .timeout = 120)
{
	in_child(killed, "kill -9");
}

/* ---- the staging limit ----------------------------------------------------------------- */

static void limit(const char *dir)
{
	size_t ps = pagesz();
	/* Room for what a sanitizer's allocator writes between commits. */
	ckpt_t *c = open_chain(dir, CKPT_F_ASYNC, 512 * ps);
	char *m = map_anon(2048, 1);
	CHECK_RC(ckpt_begin(c));
	/* The base holds far more than 512 pages: written before returning. */
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 1 && chain_len(dir) == 1);
	ckpt_stats st;
	CHECK_RC(ckpt_stats(c, &st));
	CHECK(st.commit_id == 1 && st.commit_staged_bytes == 0);
	/* Eight pages fit: staged, written in the background. */
	for (size_t p = 0; p < 8; p++)
		m[p * ps] = 2;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	CHECK_RC(ckpt_wait(c, NULL));
	CHECK_RC(ckpt_stats(c, &st));
	if (st.commit_id != 2 || st.commit_staged_bytes < 8 * ps ||
	    st.commit_staged_bytes > 512 * ps)
		child_die("commit 2: id %llu, %llu bytes staged", (unsigned long long)st.commit_id,
		    (unsigned long long)st.commit_staged_bytes);
	/* 1500 pages do not: the commit blocks until they are on disk. */
	for (size_t p = 0; p < 1500; p++)
		m[p * ps] = 3;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 3);
	CHECK(chain_len(dir) == 3);
	CHECK_RC(ckpt_stats(c, &st));
	CHECK(st.commit_id == 3 && st.commit_staged_bytes == 0);
	/* A commit with the previous one in flight waits for it. */
	m[0] = 4;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 4);
	m[ps] = 5;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 5);
	CHECK(chain_len(dir) >= 4);
	CHECK_RC(ckpt_wait(c, &id));
	CHECK(id == 5 && chain_len(dir) == 5);
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	char b;
	CHECK_RC(ckpt_chain_read(ch, 5, (uintptr_t)m + ps, &b, 1));
	CHECK(b == 5);
	CHECK_RC(ckpt_chain_read(ch, 4, (uintptr_t)m + ps, &b, 1));
	CHECK(b == 3);
	ckpt_chain_close(ch);
	ckpt_close(c);
}

Test(async, the_staging_limit_is_respected, .timeout = 60)
{
	in_child(limit, "staging limit");
}

/* ---- the handle around a commit in flight ---------------------------------------------- */

static void around(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c = open_chain(dir, CKPT_F_ASYNC, 0);
	char *m = map_anon(32, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	m[0] = 7;
	CHECK_RC(ckpt_commit(c, NULL));
	/* ckpt_end waits; the snapshot is durable afterwards. */
	CHECK_RC(ckpt_end(c));
	CHECK(chain_len(dir) == 2);
	CHECK_RC(ckpt_begin(c));
	m[ps] = 8;
	CHECK_RC(ckpt_commit(c, NULL));
	m[ps] = 9;
	/* A restore of the newest waits for it first. */
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	CHECK(m[ps] == 8 && m[0] == 7);
	/* ckpt_close waits too. */
	m[2 * ps] = 10;
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_close(c);
	CHECK(chain_len(dir) == 4);
}

Test(async, end_restore_and_close_wait_for_the_commit_in_flight, .timeout = 60)
{
	in_child(around, "end, restore, close");
}

Test(async, options_and_ckpt_wait_without_the_flag)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_ASYNC;
	cr_assert_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	cr_assert_null(c);
	cr_assert_eq(ckpt_wait(NULL, NULL), CKPT_EINVAL);
	ckpt_options_init(&o);
	cr_assert_eq(ckpt_open(&c, NULL, &o), 0);
	uint64_t id = 42;
	cr_assert_eq(ckpt_wait(c, &id), 0);
	cr_assert_eq(id, 0);
	ckpt_close(c);
	cr_assert_eq(sizeof(ckpt_options), 4 * sizeof(int) + 12 * sizeof(uint64_t));
}

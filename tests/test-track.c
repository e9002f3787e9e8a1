/*
 * test-track.c - exact dirty sets, and what ckpt_begin and ckpt_end do to
 * the process' mappings.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every test runs in its own process (Criterion's default), so one test's
 * tracking never leaks into another.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

static char bss_buf[16 * 4096] __attribute__((aligned(4096)));
static char data_buf[8 * 4096] __attribute__((aligned(4096))) = {1};

/* Checks that exactly the pages listed (indexes into [base, base+npages))
 * are in the set. */
static void expect_exactly(const struct dset *s, const char *base, size_t npages,
			   const size_t *want, size_t nwant, const char *what)
{
	for (size_t i = 0; i < npages; i++) {
		int wanted = 0;
		for (size_t k = 0; k < nwant; k++)
			wanted |= want[k] == i;
		cr_expect_eq(dset_has(s, base + i * pagesz()), wanted,
			     "%s page %zu: reported %d, written %d", what, i,
			     dset_has(s, base + i * pagesz()), wanted);
	}
}

Test(track, heap_pages_written_and_only_those)
{
	/* From the brk heap, not a separate mapping. */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	size_t ps = pagesz();
	char *blk = malloc(66 * ps);
	cr_assert(blk);
	memset(blk, 1, 66 * ps);
	char *base = (char *)(((uintptr_t)blk + ps - 1) & ~(ps - 1)) + ps;
	DSET(s);
	dset_collect(NULL, &s); /* allocates the result array before begin */
	ckpt_t *c = begin_tracking(0);
	base[3 * ps] = 2;
	base[17 * ps + 100] = 2;
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {3, 17};
	expect_exactly(&s, base, 60, want, 2, "heap");
#ifndef __SANITIZE_ADDRESS__
	/* AddressSanitizer's malloc does not use the brk heap. */
	cr_expect_str_eq(dset_name(&s, base + 3 * ps), "[heap]");
#endif
	cr_expect_eq(dset_check_shape(&s), 0, "runs not sorted, disjoint and maximal");
	ckpt_close(c);
}

Test(track, bss_and_data_pages)
{
	DSET(s);
	dset_collect(NULL, &s);
	memset(bss_buf, 1, sizeof bss_buf);
	memset(data_buf, 1, sizeof data_buf);
	ckpt_t *c = begin_tracking(0);
	bss_buf[2 * 4096] = 3;
	bss_buf[9 * 4096 + 4095] = 3;
	data_buf[5 * 4096 + 7] = 3;
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t wb[] = {2, 9}, wd[] = {5};
	expect_exactly(&s, bss_buf, 16, wb, 2, ".bss");
	expect_exactly(&s, data_buf, 8, wd, 1, ".data");
	/* .data is part of the executable's file mapping. */
	cr_expect(strstr(dset_name(&s, data_buf + 5 * 4096), "test-track"), "named %s",
		  dset_name(&s, data_buf + 5 * 4096));
	ckpt_close(c);
}

Test(track, anonymous_mapping)
{
	DSET(s);
	dset_collect(NULL, &s);
	char *m = map_anon(32, 1);
	ckpt_t *c = begin_tracking(0);
	m[0] = 2;
	m[31 * pagesz()] = 2;
	m[7 * pagesz() + 1] = 2;
	m[7 * pagesz() + 2] = 2;
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {0, 7, 31};
	expect_exactly(&s, m, 32, want, 3, "anonymous");
	cr_expect_str_eq(dset_name(&s, m), "");
	ckpt_stats st;
	ckpt_stats(c, &st);
	cr_expect_geq(st.faults, 3);
	ckpt_close(c);
}

static char *temp_file(size_t npages, int *fd_out)
{
	static char path[64];
	snprintf(path, sizeof path, "/tmp/ckpt-test-XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)(npages * pagesz())), 0);
	*fd_out = fd;
	return path;
}

Test(track, private_file_mapping)
{
	DSET(s);
	dset_collect(NULL, &s);
	int fd;
	char *path = temp_file(16, &fd);
	char *m = mmap(NULL, 16 * pagesz(), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	cr_assert_neq(m, MAP_FAILED);
	for (size_t i = 0; i < 16; i++)
		(void)*(volatile char *)(m + i * pagesz());
	ckpt_t *c = begin_tracking(0);
	m[2 * pagesz()] = 'x';
	m[3 * pagesz()] = 'y';
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {2, 3};
	expect_exactly(&s, m, 16, want, 2, "private file");
	cr_expect_str_eq(dset_name(&s, m + 2 * pagesz()), path);
	ckpt_close(c);
	unlink(path);
	close(fd);
}

Test(track, shared_mappings_are_tracked_unless_asked)
{
	DSET(s);
	dset_collect(NULL, &s);
	int fd;
	char *path = temp_file(8, &fd);
	char *m = mmap(NULL, 8 * pagesz(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(m, MAP_FAILED);
	ckpt_t *c = begin_tracking(0);
	m[pagesz()] = 1;
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {1};
	expect_exactly(&s, m, 8, want, 1, "shared");
	ckpt_close(c);

	char perms[8];
	c = begin_tracking(CKPT_F_NO_SHARED);
	cr_expect_str_eq(perms_of(m, perms), "rw-s", "a shared mapping was protected");
	m[4 * pagesz()] = 1;
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, m, 8), 0, "shared pages reported with CKPT_F_NO_SHARED");
	ckpt_close(c);
	unlink(path);
	close(fd);
}

Test(track, new_mappings_count_whole_and_unmapped_ones_drop_out)
{
	DSET(s);
	dset_collect(NULL, &s);
	char *old = map_anon(8, 1);
	ckpt_t *c = begin_tracking(0);
	old[pagesz()] = 2;
	char *fresh = mmap(NULL, 10 * pagesz(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);
	cr_assert_neq(fresh, MAP_FAILED);
	fresh[0] = 1;
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, fresh, 10), 10, "a new mapping counts as written whole");
	cr_expect(dset_has(&s, old + pagesz()));
	cr_assert_eq(munmap(old, 8 * pagesz()), 0);
	cr_assert_eq(munmap(fresh, 10 * pagesz()), 0);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, old, 8), 0, "unmapped pages still reported");
	cr_expect_eq(dset_count_in(&s, fresh, 10), 0, "unmapped pages still reported");
	ckpt_close(c);
}

Test(track, discarded_pages_count_as_dirty)
{
	DSET(s);
	dset_collect(NULL, &s);
	char *m = map_anon(16, 7);
	ckpt_t *c = begin_tracking(0);
	cr_assert_eq(madvise(m + 4 * pagesz(), 4 * pagesz(), MADV_DONTNEED), 0);
	cr_expect_eq(m[4 * pagesz()], 0, "MADV_DONTNEED did not discard");
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {4, 5, 6, 7};
	expect_exactly(&s, m, 16, want, 4, "discarded");
	ckpt_close(c);
}

Test(track, excluded_ranges_are_neither_protected_nor_reported)
{
	DSET(s);
	dset_collect(NULL, &s);
	char *m = map_anon(16, 1);
	ckpt_t *c;
	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	cr_assert_eq(ckpt_exclude(c, m, 4 * pagesz()), 0);
	cr_assert_eq(ckpt_begin(c), 0);
	cr_expect(!write_protected(m), "excluded range was protected");
	cr_expect(write_protected(m + 4 * pagesz()), "tracked range not protected");
	ckpt_stats st;
	ckpt_stats(c, &st);
	uint64_t faults = st.faults;
	for (size_t i = 0; i < 4; i++)
		m[i * pagesz()] = 2;
	ckpt_stats(c, &st);
	/* Four pages written: four first writes if they were tracked.  Under
	 * uffd the count is of pages found written anywhere in the process,
	 * where a sanitizer's runtime may write a page of its own meanwhile;
	 * the dirty set below says exactly which pages were reported. */
	cr_expect_lt(st.faults - faults, 4, "writes to an excluded range faulted (%llu)",
		     (unsigned long long)(st.faults - faults));
	m[8 * pagesz()] = 2;
	m[12 * pagesz()] = 2;
	/* Excluding while tracking: given back at once, and drops out. */
	cr_assert_eq(ckpt_exclude(c, m + 12 * pagesz(), 4 * pagesz()), 0);
	cr_expect(!write_protected(m + 13 * pagesz()));
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {8};
	expect_exactly(&s, m, 16, want, 1, "exclude");
	cr_assert_eq(ckpt_end(c), 0);
	/* And it stays excluded in the next epoch. */
	cr_assert_eq(ckpt_begin(c), 0);
	cr_expect(!write_protected(m + 13 * pagesz()));
	ckpt_close(c);
}

Test(track, end_gives_every_protection_back_exactly)
{
	DSET(s);
	dset_collect(NULL, &s);
	size_t ps = pagesz();
	char *rw = map_anon(64, 1);
	char *rx = mmap(NULL, 4 * ps, PROT_READ | PROT_WRITE | PROT_EXEC,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *ro = mmap(NULL, 4 * ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(rx != MAP_FAILED && ro != MAP_FAILED);
	memset(rx, 0xc3, 4 * ps);
	/* A first epoch lets ckpt allocate its own memory. */
	ckpt_t *c = begin_tracking(0);
	cr_assert_eq(ckpt_end(c), 0);
	char *before_rw = maps_lines((uintptr_t)rw, (uintptr_t)rw + 64 * ps);
	char *before_rx = maps_lines((uintptr_t)rx, (uintptr_t)rx + 4 * ps);
	char *before_ro = maps_lines((uintptr_t)ro, (uintptr_t)ro + 4 * ps);
	char *before_bss = maps_lines((uintptr_t)bss_buf, (uintptr_t)bss_buf + sizeof bss_buf);

	cr_assert_eq(ckpt_begin(c), 0);
	cr_expect(write_protected(rw) && write_protected(rx + ps) && write_protected(bss_buf + 4096),
		  "nothing was protected");
	for (size_t i = 0; i < 64; i += 3)
		rw[i * ps] = 5;
	rx[ps] = 0xc3;
	bss_buf[4096] = 9;
	cr_assert_eq(ckpt_end(c), 0);

	char *after_rw = maps_lines((uintptr_t)rw, (uintptr_t)rw + 64 * ps);
	cr_expect_str_eq(after_rw, before_rw);
	char *after_rx = maps_lines((uintptr_t)rx, (uintptr_t)rx + 4 * ps);
	cr_expect_str_eq(after_rx, before_rx);
	char *after_ro = maps_lines((uintptr_t)ro, (uintptr_t)ro + 4 * ps);
	cr_expect_str_eq(after_ro, before_ro);
	char *after_bss = maps_lines((uintptr_t)bss_buf, (uintptr_t)bss_buf + sizeof bss_buf);
	cr_expect_str_eq(after_bss, before_bss);
	/* Nor a page-level protection left behind (userfaultfd). */
	size_t left = 0;
	for (size_t i = 0; i < 64; i++)
		left += write_protected(rw + i * ps);
	cr_expect_eq(left, 0, "%zu pages still write-protected", left);
	ckpt_close(c);
}

Test(track, the_programs_own_protection_changes_survive_end)
{
	size_t ps = pagesz();
	char *m = map_anon(16, 1);
	ckpt_t *c = begin_tracking(0);
	cr_assert_eq(mprotect(m + 2 * ps, ps, PROT_READ), 0);
	cr_assert_eq(mprotect(m + 5 * ps, 2 * ps, PROT_NONE), 0);
	cr_assert_eq(munmap(m + 9 * ps, ps), 0);
	m[3 * ps] = 1;
	/* Made writable again by the program: still tracked. */
	cr_assert_eq(mprotect(m + 12 * ps, ps, PROT_READ), 0);
	cr_assert_eq(mprotect(m + 12 * ps, ps, PROT_READ | PROT_WRITE), 0);
	m[12 * ps] = 1;
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, m + 12 * ps), "a page written after the program's mprotect");
	cr_expect(!dset_has(&s, m + 13 * ps));
	cr_assert_eq(ckpt_end(c), 0);
	char p[8];
	cr_expect_str_eq(perms_of(m + 2 * ps, p), "r--p");
	cr_expect_str_eq(perms_of(m + 5 * ps, p), "---p");
	cr_expect_str_eq(perms_of(m + 6 * ps, p), "---p");
	cr_expect_str_eq(perms_of(m + 9 * ps, p), "", "unmapped page came back");
	cr_expect_str_eq(perms_of(m + 3 * ps, p), "rw-p");
	cr_expect_str_eq(perms_of(m + 12 * ps, p), "rw-p");
	cr_expect_str_eq(perms_of(m + 15 * ps, p), "rw-p");
	ckpt_close(c);
}

Test(track, scattered_writes_past_the_vma_limit, .timeout = 240)
{
	/* Every other page of 2 GiB: 262144 isolated writes, each of which
	 * would split a mapping in three, far past vm.max_map_count (65530). */
	size_t ps = pagesz(), npages = (2ul << 30) / ps;
	char *m = mmap(NULL, npages * ps, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	cr_assert_neq(m, MAP_FAILED);
	DSET(s);
	dset_collect(NULL, &s);
	s.r = realloc(s.r, (npages / 2 + 1024) * sizeof *s.r);
	s.cap = npages / 2 + 1024;
	ckpt_t *c = begin_tracking(0);
	for (size_t i = 0; i < npages; i += 2)
		m[i * ps] = 1;
	ckpt_stats st;
	cr_assert_eq(ckpt_stats(c, &st), 0);
	if (backend_of(c) == CKPT_BACKEND_MPROTECT) {
		cr_expect_gt(st.fallbacks, 0, "the VMA limit was never reached?");
	} else {
		/* Page-table protection splits nothing. */
		char *lines = maps_lines((uintptr_t)m, (uintptr_t)m + npages * ps);
		size_t n = 0;
		for (char *l = lines; *l; l++)
			n += *l == '\n';
		free(lines);
		cr_expect_eq(n, 1, "the mapping was split in %zu", n);
		cr_expect_eq(st.fallbacks, 0);
	}
	cr_assert_eq(dset_collect(c, &s), 0, "%s", ckpt_last_error());
	size_t lost = 0, reported = 0;
	for (size_t i = 0; i < npages; i++) {
		int has = dset_has(&s, m + i * ps);
		reported += has;
		if (i % 2 == 0 && !has)
			lost++;
	}
	cr_expect_eq(lost, 0, "%zu written pages not reported", lost);
	cr_expect_geq(reported, npages / 2);
	cr_expect_leq(reported, npages);
	cr_assert_eq(ckpt_end(c), 0);
	/* Every write landed. */
	size_t bad = 0;
	for (size_t i = 0; i < npages; i += 2)
		bad += m[i * ps] != 1;
	cr_expect_eq(bad, 0);
	ckpt_close(c);
}

Test(track, a_forked_child_keeps_working)
{
	char *m = map_anon(8, 1);
	ckpt_t *c = begin_tracking(0);
	m[0] = 2;
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* The child has its own copy of the tracker and of every
		 * protection: its writes fault and are recorded in the copy. */
		for (size_t i = 0; i < 8; i++)
			m[i * pagesz()] = 3;
		DSET(s);
		int ok = dset_collect(c, &s) == 0 && dset_count_in(&s, m, 8) == 8;
		char perms[8];
		ok = ok && ckpt_end(c) == 0 && !strcmp(perms_of(m + pagesz(), perms), "rw-p");
		_exit(ok ? 0 : 1);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {0};
	expect_exactly(&s, m, 8, want, 1, "parent after fork");
	ckpt_close(c);
}

Test(track, runs_are_maximal_and_sorted)
{
	DSET(s);
	dset_collect(NULL, &s);
	char *m = map_anon(40, 1);
	ckpt_t *c = begin_tracking(0);
	for (size_t i = 10; i < 20; i++)
		m[i * pagesz()] = 2;
	m[25 * pagesz()] = 2;
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_check_shape(&s), 0);
	int found = 0;
	for (size_t i = 0; i < s.n; i++)
		if (s.r[i].start == (uintptr_t)(m + 10 * pagesz())) {
			found = 1;
			cr_expect_eq(s.r[i].npages, 10, "ten adjacent pages in one run");
		}
	cr_expect(found);
	ckpt_close(c);
}

/* Reserves huge pages if none are (needs root); returns how many are free. */
static long free_huge_pages(void)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r+");
	long n = 0;
	if (f) {
		if (fscanf(f, "%ld", &n) == 1 && n < 4) {
			rewind(f);
			fprintf(f, "4\n");
		}
		fclose(f);
	}
	f = fopen("/proc/meminfo", "r");
	char line[256];
	long freeh = 0;
	while (f && fgets(line, sizeof line, f))
		sscanf(line, "HugePages_Free: %ld", &freeh);
	if (f)
		fclose(f);
	return freeh;
}

Test(track, huge_pages_are_tracked_at_their_own_size)
{
	size_t huge = 2ul << 20;
	long freeh = free_huge_pages();
	/* Without hugetlb pages there is no huge mapping to track: nothing
	 * here to check (an unprivileged test cannot reserve any). */
	if (freeh < 2)
		cr_skip_test("%ld free hugetlb pages (vm.nr_hugepages): huge-page tracking needs 2",
			     freeh);
	char *m = mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (m == MAP_FAILED) /* taken meanwhile, or a cgroup's hugetlb limit */
		cr_skip_test("MAP_HUGETLB of 2 pages failed (%s) with %ld free: huge-page tracking "
			     "not checked",
			     strerror(errno), freeh);
	memset(m, 1, 2 * huge);
	DSET(s);
	dset_collect(NULL, &s);
	ckpt_t *c = begin_tracking(0);
	char perms[8];
	cr_expect(write_protected(m), "the huge mapping was not protected");
	m[huge + 12345] = 2;
	cr_assert_eq(dset_collect(c, &s), 0);
	/* The whole second huge page, nothing of the first. */
	cr_expect_eq(dset_count_in(&s, m, huge / pagesz()), 0);
	cr_expect_eq(dset_count_in(&s, m + huge, huge / pagesz()), huge / pagesz());
	cr_assert_eq(ckpt_end(c), 0);
	cr_expect_str_eq(perms_of(m, perms), "rw-p");
	cr_expect(!write_protected(m));
	ckpt_close(c);
	munmap(m, 2 * huge);
}

Test(track, a_page_made_writable_behind_ckpts_back_still_counts)
{
	/* A raw system call no interposer sees: the page is writable without
	 * a fault, and must still be reported once written. */
	char *m = map_anon(4, 1);
	DSET(s);
	dset_collect(NULL, &s);
	ckpt_t *c = begin_tracking(0);
	cr_assert_eq(syscall(SYS_mprotect, m + 2 * pagesz(), pagesz(), PROT_READ | PROT_WRITE), 0);
	m[2 * pagesz()] = 7;
	cr_assert_eq(dset_collect(c, &s), 0);
	size_t want[] = {2};
	expect_exactly(&s, m, 4, want, 1, "behind ckpt's back");
	ckpt_close(c);
}

Test(track, unmapped_memory_leaves_no_trace_for_the_next_mapping, .signal = SIGSEGV)
{
	/* After munmap, a read-only mapping at the same address is not
	 * tracked memory: its pages are not reported and writing it is a
	 * genuine fault. */
	char *m = map_anon(4, 1);
	DSET(s);
	dset_collect(NULL, &s);
	ckpt_t *c = begin_tracking(0);
	m[pagesz()] = 2;
	cr_assert_eq(munmap(m, 4 * pagesz()), 0);
	char *again = mmap(m, 4 * pagesz(), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_eq(again, m, "the freed address was not reused");
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, m, 4), 0, "pages of the unmapped memory are reported");
	again[pagesz()] = 3; /* dies */
}

/* A thread inside ckpt's table read (here: a read(2) into tracked memory,
 * unprotected ahead of the kernel) when another thread forks: in the child
 * that thread does not exist, and nothing may wait for it to leave. */
static volatile int reader_stop;
static char reader_buf[4 * 4096] __attribute__((aligned(4096)));

static void *reader(void *arg)
{
	int fd = *(int *)arg;
	while (!reader_stop)
		for (size_t off = 0; off < sizeof reader_buf; off += 4096)
			if (read(fd, reader_buf + off, 4096) < 0)
				return NULL;
	return NULL;
}

Test(track, forking_while_another_thread_is_in_ckpt, .timeout = 60)
{
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	char *m = map_anon(4, 1);
	ckpt_t *c = begin_tracking(0);
	pthread_t t;
	reader_stop = 0;
	cr_assert_eq(pthread_create(&t, NULL, reader, &fd), 0);
	int hung = 0, bad = 0;
	for (int i = 0; i < 200 && !hung; i++) {
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			m[(size_t)(i % 4) * pagesz()] = 2;
			_exit(ckpt_end(c) == 0 ? 0 : 1);
		}
		int st = 0, waited = 0;
		while (waitpid(pid, &st, WNOHANG) == 0) {
			if (++waited > 5000) { /* 5 s */
				kill(pid, SIGKILL);
				waitpid(pid, &st, 0);
				hung = 1;
				break;
			}
			usleep(1000);
		}
		bad += !hung && !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	reader_stop = 1;
	pthread_join(t, NULL);
	close(fd);
	cr_expect(!hung, "a child hung in ckpt_end");
	cr_expect_eq(bad, 0, "%d children failed", bad);
	ckpt_close(c);
}

/* ---- the program's mprotect racing faults on other threads ------------------------ */

#define RACE_PAGES 32
#define RACE_SPARE 128 /* pages after them, unmapped one by one */
#define RACE_WRITERS 2

static struct {
	unsigned char *m;
	int stop, pause;  /* atomic */
	int paused;       /* writers parked, atomic */
	unsigned long writes;
} race;

static void *race_writer(void *arg)
{
	size_t ps = pagesz(), k = (size_t)(uintptr_t)arg;
	while (!__atomic_load_n(&race.stop, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(&race.pause, __ATOMIC_ACQUIRE)) {
			__atomic_add_fetch(&race.paused, 1, __ATOMIC_ACQ_REL);
			while (__atomic_load_n(&race.pause, __ATOMIC_ACQUIRE) &&
			       !__atomic_load_n(&race.stop, __ATOMIC_ACQUIRE))
				sched_yield();
			__atomic_sub_fetch(&race.paused, 1, __ATOMIC_ACQ_REL);
			continue;
		}
		for (size_t i = k; i < RACE_PAGES; i += RACE_WRITERS)
			((volatile unsigned char *)race.m)[i * ps + k] = (unsigned char)i;
		__atomic_add_fetch(&race.writes, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

Test(track, protection_changes_racing_faults_on_other_threads, .timeout = 120)
{
	/* Threads write pages whose protection the main thread keeps
	 * changing (a JIT making code executable and writable again).  Every
	 * change makes the pages clean, so the writers fault again and again;
	 * a fault handled with the table from before a change must not undo
	 * it.  Checked whenever the writers are parked: every page has the
	 * execute permission the program's last mprotect gave it.  Pages of
	 * the same mapping unmapped meanwhile replace the table too (a
	 * replaced table freed under a reader would show as a crash or a
	 * wrong protection). */
	size_t ps = pagesz();
	race.m = map_anon(RACE_PAGES + RACE_SPARE, 1);
	ckpt_t *c = begin_tracking(0);
	pthread_t t[RACE_WRITERS];
	for (size_t k = 0; k < RACE_WRITERS; k++)
		cr_assert_eq(pthread_create(&t[k], NULL, race_writer, (void *)(uintptr_t)k), 0);
	uint64_t t0 = now_ns();
	unsigned long rounds = 0, checks = 0, wrong = 0;
	char first_wrong[160] = "";
	int exec = 0;
	while (rounds < 200000 && now_ns() - t0 < 2000000000u) {
		exec = !exec;
		int prot = PROT_READ | PROT_WRITE | (exec ? PROT_EXEC : 0);
		cr_assert_eq(mprotect(race.m, RACE_PAGES * ps, prot), 0, "mprotect: %m");
		if (rounds < RACE_SPARE / 2)
			cr_assert_eq(munmap(race.m + (RACE_PAGES + 2 * rounds) * ps, ps), 0);
		if (++rounds % 64)
			continue;
		__atomic_store_n(&race.pause, 1, __ATOMIC_RELEASE);
		while (__atomic_load_n(&race.paused, __ATOMIC_ACQUIRE) != RACE_WRITERS)
			sched_yield();
		checks++;
		for (size_t i = 0; i < RACE_PAGES; i++) {
			char p[8];
			perms_of(race.m + i * ps, p);
			if ((p[2] == 'x') != exec && wrong++ == 0)
				snprintf(first_wrong, sizeof first_wrong,
					 "page %zu is %s after mprotect(%s), round %lu", i, p,
					 exec ? "rwx" : "rw-", rounds);
		}
		__atomic_store_n(&race.pause, 0, __ATOMIC_RELEASE);
		while (__atomic_load_n(&race.paused, __ATOMIC_ACQUIRE) != 0)
			sched_yield();
	}
	__atomic_store_n(&race.stop, 1, __ATOMIC_RELEASE);
	for (size_t k = 0; k < RACE_WRITERS; k++)
		pthread_join(t[k], NULL);
	cr_log_info("%lu protection changes, %lu checks, %lu sweeps of writes", rounds, checks,
		    race.writes);
	cr_expect_eq(wrong, 0, "%lu pages with a protection the program did not set; first: %s",
		     wrong, first_wrong);
	cr_expect_gt(checks, 0);
	/* And what was written is reported. */
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_gt(dset_count_in(&s, race.m, RACE_PAGES), 0);
	ckpt_close(c);
}

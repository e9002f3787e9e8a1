/*
 * test-api.c - argument checks, handle states and the one-tracker rule.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int count_runs(const ckpt_page_run *r, void *arg)
{
	(void)r;
	++*(int *)arg;
	return 0;
}

Test(api, bad_arguments_get_einval)
{
	ckpt_t *c = (ckpt_t *)0x1;
	cr_expect_eq(ckpt_open(NULL, NULL, NULL), CKPT_EINVAL);
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = 0x80000000u;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	cr_expect_null(c, "a failed open sets *out to NULL");
	cr_expect(strstr(ckpt_last_error(), "flags"), "detail: %s", ckpt_last_error());
	ckpt_options_init(&o);
	o.backend = 42;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	ckpt_options_init(&o);
	o.reserved[3] = 1;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	ckpt_options_init(&o);
	o.level = 99;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	ckpt_options_init(&o);
	o.threads = -1;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	cr_expect_eq(ckpt_open(&c, "", NULL), CKPT_EINVAL);

	cr_expect_eq(ckpt_begin(NULL), CKPT_EINVAL);
	cr_expect_eq(ckpt_end(NULL), CKPT_EINVAL);
	cr_expect_eq(ckpt_dirty_foreach(NULL, count_runs, NULL), CKPT_EINVAL);
	cr_expect_eq(ckpt_dirty_count(NULL), 0);
	cr_expect_eq(ckpt_exclude(NULL, NULL, 4096), CKPT_EINVAL);
	cr_expect_eq(ckpt_stats(NULL, NULL), CKPT_EINVAL);
	ckpt_close(NULL);

	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	cr_expect_eq(ckpt_dirty_foreach(c, NULL, NULL), CKPT_EINVAL);
	cr_expect_eq(ckpt_stats(c, NULL), CKPT_EINVAL);
	cr_expect_eq(ckpt_exclude(c, (void *)(uintptr_t)(pagesz() + 1), 10), CKPT_EINVAL);
	cr_expect_eq(ckpt_exclude(c, (void *)(uintptr_t)pagesz(), 0), CKPT_EINVAL);
	cr_expect_eq(ckpt_exclude(c, (void *)(UINTPTR_MAX & ~(uintptr_t)(pagesz() - 1)), 2 * pagesz()),
		     CKPT_EINVAL, "a range that wraps around");
	ckpt_close(c);
}

Test(api, calls_out_of_order_get_estate)
{
	ckpt_t *c;
	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	int n = 0;
	cr_expect_eq(ckpt_dirty_foreach(c, count_runs, &n), CKPT_ESTATE, "never begun");
	cr_expect_eq(ckpt_end(c), CKPT_ESTATE, "not tracking");
	cr_expect_eq(ckpt_dirty_count(c), 0);
	cr_assert_eq(ckpt_begin(c), 0);
	cr_assert_eq(ckpt_end(c), 0);
	cr_expect_eq(ckpt_end(c), CKPT_ESTATE, "ended twice");
	cr_expect_eq(ckpt_dirty_foreach(c, count_runs, &n), 0, "the ended epoch stays readable");
	ckpt_close(c);
}

Test(api, a_second_begin_gets_ebusy)
{
	ckpt_t *a, *b;
	cr_assert_eq(ckpt_open(&a, NULL, NULL), 0);
	cr_assert_eq(ckpt_open(&b, NULL, NULL), 0);
	cr_assert_eq(ckpt_begin(a), 0);
	cr_expect_eq(ckpt_begin(a), CKPT_EBUSY, "same handle");
	cr_expect_eq(ckpt_begin(b), CKPT_EBUSY, "other handle");
	cr_assert_eq(ckpt_end(a), 0);
	cr_expect_eq(ckpt_begin(b), 0, "free again after end");
	cr_expect_eq(ckpt_end(b), 0);
	ckpt_close(a);
	ckpt_close(b);
}

Test(api, close_while_tracking_ends_tracking)
{
	ckpt_t *a, *b;
	cr_assert_eq(ckpt_open(&a, NULL, NULL), 0);
	cr_assert_eq(ckpt_begin(a), 0);
	ckpt_close(a);
	cr_assert_eq(ckpt_open(&b, NULL, NULL), 0);
	cr_expect_eq(ckpt_begin(b), 0);
	ckpt_close(b);
}

/* What AUTO picks on this machine: uffd where it works. */
static int auto_backend(void)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_UFFD;
	if (ckpt_open(&c, NULL, &o) != 0)
		return CKPT_BACKEND_MPROTECT;
	ckpt_close(c);
	return CKPT_BACKEND_UFFD;
}

Test(api, uffd_works_here_or_says_why)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_UFFD;
	int rc = ckpt_open(&c, NULL, &o);
	char *p = map_anon(4, 1);
	if (rc != 0) {
		/* Refused with the reason; AUTO then takes mprotect, which
		 * must see the same write. */
		cr_expect_eq(rc, CKPT_ENOTSUP);
		cr_expect(strstr(ckpt_last_error(), "uffd back-end cannot work here"), "reason: %s",
			  ckpt_last_error());
		cr_log_info("userfaultfd back-end not possible here (%s): checking that AUTO "
			    "takes mprotect",
			    ckpt_last_error());
		const char *was = getenv("CKPT_BACKEND");
		char saved[32] = "";
		if (was)
			snprintf(saved, sizeof saved, "%s", was);
		unsetenv("CKPT_BACKEND");
		cr_assert_eq(ckpt_open(&c, NULL, NULL), 0, "%s", ckpt_last_error());
		cr_assert_eq(ckpt_begin(c), 0, "%s", ckpt_last_error());
		cr_expect_eq(backend_of(c), CKPT_BACKEND_MPROTECT);
		p[pagesz()] = 3;
		DSET(s);
		cr_assert_eq(dset_collect(c, &s), 0);
		cr_expect_eq(dset_count_in(&s, p, 4), 1);
		cr_expect(dset_has(&s, p + pagesz()));
		ckpt_close(c);
		if (saved[0])
			setenv("CKPT_BACKEND", saved, 1);
		return;
	}
	cr_assert_eq(ckpt_begin(c), 0, "%s", ckpt_last_error());
	cr_expect_eq(backend_of(c), CKPT_BACKEND_UFFD);
	cr_expect(uffd_wp_bit(p + pagesz()), "a tracked page is not write-protected");
	p[pagesz()] = 3;
	cr_expect(!uffd_wp_bit(p + pagesz()), "a written page is still write-protected");
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, p, 4), 1);
	cr_expect(dset_has(&s, p + pagesz()));
	ckpt_close(c);
}

Test(api, softdirty_is_detected_and_refused_with_a_reason)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_SOFTDIRTY;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_ENOTSUP);
	cr_expect(strstr(ckpt_last_error(), "soft-dirty"), "reason: %s", ckpt_last_error());
}

Test(api, the_environment_chooses_the_back_end)
{
	const char *was = getenv("CKPT_BACKEND");
	char saved[32] = "";
	if (was)
		snprintf(saved, sizeof saved, "%s", was);
	ckpt_t *c;
	setenv("CKPT_BACKEND", "mprotect", 1);
	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	cr_assert_eq(ckpt_begin(c), 0);
	cr_expect_eq(backend_of(c), CKPT_BACKEND_MPROTECT);
	ckpt_close(c);
	setenv("CKPT_BACKEND", "fast", 1);
	cr_expect_eq(ckpt_open(&c, NULL, NULL), CKPT_EINVAL);
	cr_expect(strstr(ckpt_last_error(), "CKPT_BACKEND=fast"), "reason: %s", ckpt_last_error());
	/* An explicit choice is the program's: the environment does not
	 * override it. */
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_MPROTECT;
	cr_expect_eq(ckpt_open(&c, NULL, &o), 0);
	ckpt_close(c);
	if (saved[0])
		setenv("CKPT_BACKEND", saved, 1);
	else
		unsetenv("CKPT_BACKEND");
}

/* Resuming itself runs in tests/resume.sh: ckpt_open would execute this
 * test program again.  The argument checks come first. */
Test(api, resume_needs_a_directory_and_no_overwrite)
{
	ckpt_t *c = (ckpt_t *)&c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_RESUME;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	cr_expect_null(c);
	cr_expect(strstr(ckpt_last_error(), "CKPT_F_RESUME"), "detail: %s", ckpt_last_error());
	o.flags = CKPT_F_RESUME | CKPT_F_OVERWRITE;
	cr_expect_eq(ckpt_open(&c, "/tmp", &o), CKPT_EINVAL);
	cr_expect(strstr(ckpt_last_error(), "exclude"), "detail: %s", ckpt_last_error());
}

/* Lazily resumed runs are in tests/resume-lazy.sh. */
Test(api, lazy_needs_resume)
{
	ckpt_t *c = (ckpt_t *)&c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_LAZY;
	cr_expect_eq(ckpt_open(&c, "/tmp/ckpt-test-lazy-never-made", &o), CKPT_EINVAL);
	cr_expect_null(c);
	cr_expect(strstr(ckpt_last_error(), "CKPT_F_LAZY"), "detail: %s", ckpt_last_error());
	cr_expect(strstr(ckpt_last_error(), "CKPT_F_RESUME"), "detail: %s", ckpt_last_error());
	o.flags = CKPT_F_LAZY | CKPT_F_ASYNC;
	cr_expect_eq(ckpt_open(&c, NULL, &o), CKPT_EINVAL);
	cr_expect(strstr(ckpt_last_error(), "CKPT_F_LAZY"), "detail: %s", ckpt_last_error());
	cr_expect_eq(access("/tmp/ckpt-test-lazy-never-made", F_OK), -1);
}

Test(api, stats_describe_the_epoch)
{
	ckpt_t *c;
	ckpt_stats s;
	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	cr_assert_eq(ckpt_stats(c, &s), 0);
	cr_expect_eq(s.backend, 0, "never begun");
	char *p = map_anon(8, 1);
	cr_assert_eq(ckpt_begin(c), 0);
	p[0] = 2;
	p[3 * pagesz()] = 2;
	cr_assert_eq(ckpt_stats(c, &s), 0);
	const char *env = getenv("CKPT_BACKEND");
	int want = env && !strcmp(env, "mprotect") ? CKPT_BACKEND_MPROTECT
		   : env && !strcmp(env, "uffd")   ? CKPT_BACKEND_UFFD
						   : auto_backend();
	cr_expect_eq(s.backend, want);
	cr_expect_eq(s.tracking, 1);
	cr_expect_gt(s.regions, 0);
	cr_expect_geq(s.tracked_pages, 8);
	cr_expect_geq(s.faults, 2);
	cr_expect_geq(s.dirty_pages, 2);
	/* A live view: the test itself keeps writing (assertion bookkeeping). */
	cr_expect_geq(ckpt_dirty_count(c), s.dirty_pages);
	cr_expect_eq(s.epochs, 1);
	cr_expect_gt(s.begin_ns, 0);
	cr_assert_eq(ckpt_end(c), 0);
	cr_assert_eq(ckpt_stats(c, &s), 0);
	cr_expect_eq(s.tracking, 0);
	cr_expect_geq(s.faults, 2, "the ended epoch's figures stay");
	ckpt_close(c);
}

Test(api, the_stats_symbol_is_exported_for_other_languages)
{
	extern int ckpt_stats_sym(ckpt_t *, ckpt_stats *) __asm__("ckpt_stats");
	ckpt_t *c;
	ckpt_stats s;
	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	cr_expect_eq(ckpt_stats_sym(c, &s), 0);
	ckpt_close(c);
}

Test(api, auto_falls_back_when_uffd_cannot_protect_a_mapping)
{
	/* userfaultfd refuses droppable memory (MAP_DROPPABLE, Linux 6.11+). */
	size_t len = 16 * pagesz();
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | 0x08 /* MAP_DROPPABLE */,
		       -1, 0);
	int uffd = auto_backend() == CKPT_BACKEND_UFFD;
	if (m == MAP_FAILED)
		cr_skip_test("no MAP_DROPPABLE (Linux 6.11) here: nothing makes userfaultfd refuse a "
			     "mapping, so ckpt_begin has no fallback to take");
	if (!uffd)
		cr_log_info("no userfaultfd here: AUTO takes mprotect from ckpt_open on; checking "
			    "that it tracks the droppable mapping and that uffd is refused by name");
	m[0] = 1;
	const char *was = getenv("CKPT_BACKEND");
	char saved[32] = "";
	if (was)
		snprintf(saved, sizeof saved, "%s", was);
	unsetenv("CKPT_BACKEND");
	ckpt_t *c;
	cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
	cr_assert_eq(ckpt_begin(c), 0, "%s", ckpt_last_error());
	cr_expect_eq(backend_of(c), CKPT_BACKEND_MPROTECT);
	m[pagesz()] = 2;
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, m + pagesz()), "a write to the droppable mapping was not seen");
	ckpt_close(c);
	/* Asked for by name, uffd fails and says where (or, without
	 * userfaultfd, why not at all). */
	setenv("CKPT_BACKEND", "uffd", 1);
	if (uffd) {
		cr_assert_eq(ckpt_open(&c, NULL, NULL), 0);
		int rc = ckpt_begin(c);
		cr_expect_lt(rc, 0);
		cr_expect(strstr(ckpt_last_error(), "cannot protect"), "reason: %s",
			  ckpt_last_error());
		ckpt_close(c);
	} else {
		cr_expect_eq(ckpt_open(&c, NULL, NULL), CKPT_ENOTSUP);
		cr_expect(strstr(ckpt_last_error(), "uffd back-end cannot work here"), "reason: %s",
			  ckpt_last_error());
	}
	if (saved[0])
		setenv("CKPT_BACKEND", saved, 1);
	else
		unsetenv("CKPT_BACKEND");
	munmap(m, len);
}

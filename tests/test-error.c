/*
 * test-error.c - error codes, their names and texts, and the version.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <ckpt.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct {
	int code;
	const char *name;
} all[] = {
#define ROW(name, value, text) {value, "CKPT_" #name},
	CKPT_ERRNO_MAP(ROW)
#undef ROW
};

#define N (sizeof all / sizeof all[0])

Test(error, codes_are_negative_and_unique)
{
	for (size_t i = 0; i < N; i++) {
		cr_expect_lt(all[i].code, 0, "%s = %d", all[i].name, all[i].code);
		for (size_t j = i + 1; j < N; j++)
			cr_expect_neq(all[i].code, all[j].code, "%s and %s share %d", all[i].name,
				      all[j].name, all[i].code);
	}
}

Test(error, system_codes_are_minus_errno)
{
	/* Pinned: these values are part of the ABI. */
	cr_expect_eq(CKPT_EINVAL, -EINVAL);
	cr_expect_eq(CKPT_ENOMEM, -ENOMEM);
	cr_expect_eq(CKPT_EBUSY, -EBUSY);
	cr_expect_eq(CKPT_EIO, -EIO);
	cr_expect_eq(CKPT_ENOTSUP, -ENOTSUP);
	cr_expect_eq(CKPT_ENOSPC, -ENOSPC);
	cr_expect_eq(CKPT_EEXIST, -EEXIST);
	cr_expect_eq(CKPT_ESTATE, -1001);
	cr_expect_eq(CKPT_ECORRUPT, -1002);
}

Test(error, every_code_has_a_name_and_a_text)
{
	for (size_t i = 0; i < N; i++) {
		cr_expect_str_eq(ckpt_err_name(all[i].code), all[i].name);
		const char *t = ckpt_strerror(all[i].code);
		cr_expect(t && t[0], "%s has no text", all[i].name);
		cr_expect_str_neq(t, "unknown error", "%s", all[i].name);
		for (size_t j = 0; j < i; j++)
			cr_expect_str_neq(t, ckpt_strerror(all[j].code), "%s and %s read the same",
					  all[i].name, all[j].name);
	}
}

Test(error, unknown_codes_are_named_as_such)
{
	cr_expect_str_eq(ckpt_strerror(-999999), "unknown error");
	cr_expect_str_eq(ckpt_err_name(-999999), "CKPT_E?");
	cr_expect_str_eq(ckpt_strerror(12345), "unknown error");
	cr_expect_str_eq(ckpt_strerror(0), "success");
}

Test(error, last_error_names_what_was_wrong)
{
	ckpt_t *c = NULL;
	int rc = ckpt_open(&c, NULL, NULL);
	cr_assert_eq(rc, 0);
	cr_expect_str_eq(ckpt_last_error(), "");
	rc = ckpt_exclude(c, (void *)0x1001, 4096);
	cr_expect_eq(rc, CKPT_EINVAL);
	cr_expect(strstr(ckpt_last_error(), "page-aligned"), "detail: %s", ckpt_last_error());
	/* A call that succeeds clears it. */
	cr_expect_eq(ckpt_exclude(c, (void *)0x10000, 4096), 0);
	cr_expect_str_eq(ckpt_last_error(), "");
	ckpt_close(c);
}

static int no_run(const ckpt_page_run *r, void *arg)
{
	(void)r;
	(void)arg;
	return 0;
}

static int no_mapping(const ckpt_mapping_info *m, void *arg)
{
	(void)m;
	(void)arg;
	return 0;
}

static int no_stored_run(const ckpt_stored_run *r, void *arg)
{
	(void)r;
	(void)arg;
	return 0;
}

Test(error, each_failing_call_reports_its_own_failure)
{
	/* After another call failed, a call that fails on its own arguments
	 * must say what was wrong with it, not keep the older message. */
	char buf[8];
#define FAILS_SAYING(call, prefix)                                                         \
	do {                                                                               \
		cr_assert_eq(ckpt_exclude(NULL, (void *)0x1000, 4096), CKPT_EINVAL);        \
		cr_assert(strstr(ckpt_last_error(), "ckpt_exclude"));                     \
		cr_expect_eq((call), CKPT_EINVAL, "%s", #call);                            \
		cr_expect(!strncmp(ckpt_last_error(), prefix, strlen(prefix)), "%s: \"%s\"", \
			  #call, ckpt_last_error());                                       \
	} while (0)
	FAILS_SAYING(ckpt_open(NULL, NULL, NULL), "ckpt_open:");
	FAILS_SAYING(ckpt_begin(NULL), "ckpt_begin:");
	FAILS_SAYING(ckpt_dirty_foreach(NULL, no_run, NULL), "ckpt_dirty_foreach:");
	FAILS_SAYING(ckpt_end(NULL), "ckpt_end:");
	FAILS_SAYING(ckpt_stats(NULL, NULL), "ckpt_stats:");
	FAILS_SAYING(ckpt_commit(NULL, NULL), "ckpt_commit:");
	FAILS_SAYING(ckpt_wait(NULL, NULL), "ckpt_wait:");
	FAILS_SAYING(ckpt_restore(NULL, 1), "ckpt_restore:");
	FAILS_SAYING(ckpt_chain_open(NULL, "/nonexistent"), "ckpt_chain_open:");
	FAILS_SAYING(ckpt_chain_info(NULL, 1, NULL), "ckpt_chain_info:");
	FAILS_SAYING(ckpt_chain_launch(NULL, 1, NULL), "ckpt_chain_launch:");
	FAILS_SAYING(ckpt_chain_read(NULL, 1, 0, buf, 1), "ckpt_chain_read:");
	FAILS_SAYING(ckpt_chain_diff(NULL, 1, 2, no_run, NULL), "ckpt_chain_diff:");
	FAILS_SAYING(ckpt_chain_verify(NULL, NULL), "ckpt_chain_verify:");
	FAILS_SAYING(ckpt_chain_compact(NULL, 1, NULL), "ckpt_chain_compact:");
	FAILS_SAYING(ckpt_chain_mappings(NULL, 1, no_mapping, NULL), "ckpt_chain_mappings: chain is NULL");
	FAILS_SAYING(ckpt_chain_runs(NULL, 1, no_stored_run, NULL), "ckpt_chain_runs: chain is NULL");
	FAILS_SAYING(ckpt_chain_read(NULL, 1, 0, buf, 1), "ckpt_chain_read: chain is NULL");
	FAILS_SAYING(ckpt_chain_diff(NULL, 1, 2, no_run, NULL), "ckpt_chain_diff: chain is NULL");
#undef FAILS_SAYING
}

Test(version, header_and_library_agree)
{
	cr_expect_eq(ckpt_version(), CKPT_VERSION_NUMBER);
	cr_expect_str_eq(ckpt_version_string(), CKPT_VERSION_STRING);
	char expect[32];
	snprintf(expect, sizeof expect, "%d.%d.%d", CKPT_VERSION_MAJOR, CKPT_VERSION_MINOR,
		 CKPT_VERSION_PATCH);
	cr_expect_str_eq(ckpt_version_string(), expect);
}

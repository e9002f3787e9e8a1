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

Test(version, header_and_library_agree)
{
	cr_expect_eq(ckpt_version(), CKPT_VERSION_NUMBER);
	cr_expect_str_eq(ckpt_version_string(), CKPT_VERSION_STRING);
	char expect[32];
	snprintf(expect, sizeof expect, "%d.%d.%d", CKPT_VERSION_MAJOR, CKPT_VERSION_MINOR,
		 CKPT_VERSION_PATCH);
	cr_expect_str_eq(ckpt_version_string(), expect);
}

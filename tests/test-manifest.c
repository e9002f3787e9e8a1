/*
 * test-manifest.c - the manifest of an MPI job folder (src/mpi/manifest.c):
 * what is written reads back, and anything out of place is refused with a
 * message saying what, never read as a checkpoint.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "ckpt.h"
#include "manifest.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* FNV-1a, as the format defines its checksum: the tests write manifests of
 * their own, damaged on purpose but with a checksum that matches, so that
 * the check behind the checksum is the one that must refuse them. */
static uint64_t fnv(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3u;
	return h;
}

/* body, then its checksum line. */
static char *sealed(const char *body)
{
	size_t n = strlen(body);
	char *s = malloc(n + 64);
	cr_assert_not_null(s);
	snprintf(s, n + 64, "%schecksum %016llx\n", body, (unsigned long long)fnv(body, n));
	return s;
}

static struct ckpt__manifest two_epochs(void)
{
	struct ckpt__manifest m;
	char why[CKPT__MANIFEST_WHY];
	ckpt__manifest_init(&m, 3);
	uint64_t a[] = {1, 1, 2}, b[] = {2, 3, 3};
	cr_assert_eq(ckpt__manifest_add(&m, 1, a, why), 0, "%s", why);
	cr_assert_eq(ckpt__manifest_add(&m, 2, b, why), 0, "%s", why);
	return m;
}

Test(manifest, what_is_formatted_parses_back)
{
	struct ckpt__manifest m = two_epochs(), back;
	char why[CKPT__MANIFEST_WHY] = "", *text;
	size_t len;
	cr_assert_eq(ckpt__manifest_format(&m, &text, &len, why), 0, "%s", why);
	static const char head[] = "ckpt-mpi manifest 1\nranks 3\nepoch 1 1 1 2\nepoch 2 2 3 3\n"
				   "checksum ";
	cr_expect_eq(strncmp(text, head, strlen(head)), 0, "%.*s", (int)len, text);
	cr_assert_eq(ckpt__manifest_parse(text, len, "m", &back, why), 0, "%s", why);
	cr_expect_eq(back.ranks, 3);
	cr_assert_eq(back.nepochs, 2);
	cr_expect_eq(ckpt__manifest_newest(&back), 2);
	cr_expect_eq(memcmp(back.ids, m.ids, 6 * sizeof *m.ids), 0);
	free(text);
	ckpt__manifest_free(&back);
	ckpt__manifest_free(&m);
}

Test(manifest, an_empty_one_has_no_epoch)
{
	struct ckpt__manifest m;
	char why[CKPT__MANIFEST_WHY] = "";
	char *text = sealed("ckpt-mpi manifest 1\nranks 4\n");
	cr_assert_eq(ckpt__manifest_parse(text, strlen(text), "m", &m, why), 0, "%s", why);
	cr_expect_eq(m.ranks, 4);
	cr_expect_eq(ckpt__manifest_newest(&m), 0);
	cr_expect_null(ckpt__manifest_newest_ids(&m));
	free(text);
	ckpt__manifest_free(&m);
}

Test(manifest, adding_keeps_order_and_the_newest_epochs)
{
	struct ckpt__manifest m = two_epochs();
	char why[CKPT__MANIFEST_WHY] = "";
	uint64_t same[] = {2, 4, 4}, older[] = {3, 4, 4};
	cr_expect_eq(ckpt__manifest_add(&m, 2, older, why), CKPT_EINVAL, "epoch 2 again");
	cr_expect_eq(ckpt__manifest_add(&m, 3, same, why), CKPT_EINVAL,
		     "rank 0's snapshot 2 again");
	cr_expect(strstr(why, "rank 0: snapshot 2 is not newer than 2"), "%s", why);
	uint64_t ids[3] = {3, 4, 4};
	for (uint64_t e = 3; e < 3 + CKPT__MANIFEST_KEEP; e++) {
		cr_assert_eq(ckpt__manifest_add(&m, e, ids, why), 0, "%s", why);
		for (int r = 0; r < 3; r++)
			ids[r]++;
	}
	cr_expect_eq(m.nepochs, CKPT__MANIFEST_KEEP);
	cr_expect_eq(m.epochs[0], 3, "the oldest kept is %llu", (unsigned long long)m.epochs[0]);
	cr_expect_eq(ckpt__manifest_newest(&m), 2 + CKPT__MANIFEST_KEEP);
	ckpt__manifest_pop(&m);
	cr_expect_eq(ckpt__manifest_newest(&m), 1 + CKPT__MANIFEST_KEEP);
	ckpt__manifest_free(&m);
}

/* Each damaged text is refused with CKPT_ECORRUPT (or EVERSION) and a
 * message holding `says`. */
static void refused(const char *text, int code, const char *says)
{
	struct ckpt__manifest m = {0};
	char why[CKPT__MANIFEST_WHY] = "";
	int rc = ckpt__manifest_parse(text, strlen(text), "DIR/manifest", &m, why);
	cr_expect_eq(rc, code, "%s: returned %d (%s)", text, rc, why);
	cr_expect(strstr(why, says) != NULL, "refused with '%s', expected '%s'", why, says);
	cr_expect(strstr(why, "DIR/manifest") != NULL, "'%s' does not name the file", why);
	cr_expect_eq(m.nepochs, 0);
}

Test(manifest, damage_is_refused_and_named)
{
	char *good = sealed("ckpt-mpi manifest 1\nranks 2\nepoch 1 1 1\nepoch 2 2 3\n");
	/* One byte changed, the checksum left as it was. */
	char *flipped = strdup(good);
	flipped[strlen("ckpt-mpi manifest 1\nranks 2\nepoch 1 1 1\nepoch 2 2 ")] = '4';
	refused(flipped, CKPT_ECORRUPT, "checksum");
	/* Cut short anywhere: no checksum line, or half of one. */
	char *cut = strndup(good, strlen(good) - 5);
	refused(cut, CKPT_ECORRUPT, "cut short");
	cut[strlen("ckpt-mpi manifest 1\nranks 2\nepoch 1 1 1\n")] = '\0';
	refused(cut, CKPT_ECORRUPT, "last line");
	refused("", CKPT_ECORRUPT, "not a ckpt-mpi manifest");
	refused("a shopping list\n", CKPT_ECORRUPT, "not a ckpt-mpi manifest");

	/* Sealed, so that the checksum passes and the content is checked. */
	static const struct {
		const char *body, *says;
	} bad[] = {
	    {"ckpt-mpi manifest 1\nranks 0\n", "0 ranks"},
	    {"ckpt-mpi manifest 1\nranks -2\n", "line 2: the number of ranks"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1\n", "line 3: fewer snapshot ids"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1 1 1\n", "line 3: more snapshot ids"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1 0\n", "line 3: epoch 1: rank 1: 0 is not"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1 01\n", "line 3: a snapshot id"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1 +1\n", "line 3: a snapshot id"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1 1 \n", "line 3"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1  1 1\n", "line 3"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1 99999999999999999999\n", "line 3"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 2 1 1\nepoch 2 2 2\n",
	     "line 4: epoch 2 does not follow epoch 2"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 3 3\nepoch 2 4 3\n",
	     "line 4: epoch 2: rank 1: snapshot 3 is not newer than 3"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 0 1 1\n", "line 3: epoch 0 does not follow"},
	    {"ckpt-mpi manifest 1\nranks 2\nepoch 1 1 1\r\n", "line 3"},
	    {"ckpt-mpi manifest 1\nranks 2\nEPOCH 1 1 1\n", "line 3: \"epoch\" expected"},
	    {"ckpt-mpi manifest 1\nranks 2\n\n", "line 3"},
	    {"ckpt-mpi manifest 1 \nranks 2\n", "line 1: junk"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *t = sealed(bad[i].body);
		refused(t, CKPT_ECORRUPT, bad[i].says);
		free(t);
	}
	char *later = sealed("ckpt-mpi manifest 2\nranks 2\n");
	refused(later, CKPT_EVERSION, "format version 2");
	free(later);
	free(cut);
	free(flipped);
	free(good);
}

/* ---- files ----------------------------------------------------------------------------- */

static char *scratch(void)
{
	char *d = strdup("/tmp/ckpt-manifest.XXXXXX");
	cr_assert_not_null(mkdtemp(d));
	return d;
}

static void cleanup(const char *d)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	cr_expect_eq(system(cmd), 0);
}

Test(manifest, written_atomically_and_read_back)
{
	char *d = scratch(), why[CKPT__MANIFEST_WHY] = "", path[512];
	struct ckpt__manifest m = two_epochs(), back;
	cr_expect_eq(ckpt__manifest_read(d, &back, why), CKPT_ENOENT, "%s", why);
	cr_assert_eq(ckpt__manifest_write(d, &m, why), 0, "%s", why);
	snprintf(path, sizeof path, "%s/" CKPT__MANIFEST_TMP, d);
	cr_expect_neq(access(path, F_OK), 0, "the temporary file is left behind");
	/* One left by a crash is replaced, not in the way. */
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	cr_expect_eq(write(fd, "x", 1), 1);
	close(fd);
	cr_assert_eq(ckpt__manifest_write(d, &m, why), 0, "%s", why);
	cr_assert_eq(ckpt__manifest_read(d, &back, why), 0, "%s", why);
	cr_expect_eq(back.nepochs, 2);
	ckpt__manifest_free(&back);
	/* A manifest others could have written is not read. */
	snprintf(path, sizeof path, "%s/" CKPT__MANIFEST_NAME, d);
	cr_assert_eq(chmod(path, 0622), 0);
	cr_expect_eq(ckpt__manifest_read(d, &back, why), CKPT_EACCES);
	cr_expect(strstr(why, "writable by its group") != NULL, "%s", why);
	cr_assert_eq(chmod(path, 0600), 0);
	/* Nor a symbolic link to one. */
	char link[512];
	snprintf(link, sizeof link, "%s/sub", d);
	cr_assert_eq(mkdir(link, 0700), 0);
	snprintf(link, sizeof link, "%s/sub/" CKPT__MANIFEST_NAME, d);
	cr_assert_eq(symlink(path, link), 0);
	snprintf(link, sizeof link, "%s/sub", d);
	cr_expect_eq(ckpt__manifest_read(link, &back, why), CKPT_EACCES, "%s", why);
	cr_expect(strstr(why, "symbolic link") != NULL, "%s", why);
	ckpt__manifest_free(&m);
	cleanup(d);
	free(d);
}

Test(manifest, the_job_folder_is_checked_as_a_chain_folder)
{
	char *d = scratch(), why[CKPT__MANIFEST_WHY] = "", sub[512];
	snprintf(sub, sizeof sub, "%s/job", d);
	cr_expect_eq(ckpt__manifest_dir_check(sub, 0, why), CKPT_ENOENT, "%s", why);
	cr_assert_eq(ckpt__manifest_dir_check(sub, 1, why), 0, "%s", why);
	struct stat st;
	cr_assert_eq(stat(sub, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0700, "mode 0%o", st.st_mode & 0777);
	cr_assert_eq(chmod(sub, 0777), 0);
	cr_expect_eq(ckpt__manifest_dir_check(sub, 1, why), CKPT_EACCES);
	cr_expect(strstr(why, "writable by its group") != NULL, "%s", why);
	cleanup(d);
	free(d);
}

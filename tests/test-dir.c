/*
 * test-dir.c - the chain directory: the one walk over its entries, the one
 * parser of its file names, and what ckpt accepts as a chain directory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The chains are copies of the golden chain tests/corrupt/good (snapshots
 * 1 and 2) in private directories made here.
 */
#include "ckpt.h"
#include "dir.h"
#include "format.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- names --------------------------------------------------------------------------- */

Test(dir, the_names_the_writer_makes_parse_back_to_their_ids)
{
	static const uint64_t ids[] = {1, 2, 9, 10, 12345678, 99999999, 100000000, 123456789012ull,
				       UINT64_MAX};
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		char name[64];
		uint64_t id = 0;
		snprintf(name, sizeof name, CKPT__SNAP_FMT, (unsigned long long)ids[i]);
		cr_expect_eq(ckpt__snap_name_parse(name, &id), CKPT__NAME_SNAP, "%s", name);
		cr_expect_eq(id, ids[i], "%s: id %llu", name, (unsigned long long)id);
		id = 0;
		snprintf(name, sizeof name, CKPT__TEMP_FMT, (unsigned long long)ids[i]);
		cr_expect_eq(ckpt__snap_name_parse(name, &id), CKPT__NAME_TEMP, "%s", name);
		cr_expect_eq(id, ids[i], "%s: id %llu", name, (unsigned long long)id);
	}
}

Test(dir, only_the_exact_names_are_snapshots)
{
	static const char *const others[] = {
		"snap-00000007.ckpt.orig", /* a copy left by an editor or a user */
		"snap-00000007.ckpt~",
		"snap-00000007.ckptx",
		"snap-00000007.ckp",
		"snap-00000007.CKPT",
		"snap-00000007.",
		"snap-00000007",
		"snap-7.ckpt",              /* fewer digits than the writer writes */
		"snap-0000007.ckpt",
		"snap-000000007.ckpt",      /* a leading zero beyond 8 digits */
		"snap-0000000x.ckpt",
		"snap-+0000007.ckpt",
		"snap- 0000007.ckpt",
		"snap-00000000.ckpt",       /* ids start at 1 */
		"snap-18446744073709551616.ckpt", /* 2^64 */
		"snap-99999999999999999999.ckpt",
		"snap-.ckpt",
		"snap-",
		"Snap-00000007.ckpt",
		"damaged-snap-00000007.ckpt",
		"xsnap-00000007.ckpt",
		".snap-00000007.ckpt",      /* the temporary prefix with the final suffix */
		"snap-00000007.tmp",
		".snap-00000007.tmp.orig",
		".snap-7.tmp",
		".notes.tmp",
		"lock",
		".",
		"..",
		"",
	};
	for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
		uint64_t id = 42;
		cr_expect_eq(ckpt__snap_name_parse(others[i], &id), CKPT__NAME_OTHER,
			     "\"%s\" was taken for a chain file (id %llu)", others[i],
			     (unsigned long long)id);
		cr_expect_eq(id, 42, "\"%s\": id changed", others[i]);
	}
}

/* ---- the walk ---------------------------------------------------------------------- */

#define NFILES 1500

struct seen {
	unsigned char file[NFILES];
	int dot, dotdot, other;
	unsigned calls, stop_at;
};

static int see(const char *name, unsigned type, void *arg)
{
	struct seen *s = arg;
	s->calls++;
	if (!strcmp(name, "."))
		s->dot++;
	else if (!strcmp(name, ".."))
		s->dotdot++;
	else {
		int i;
		char tail[8];
		if (sscanf(name, "a-rather-long-file-name-to-fill-buffers-%d%7s", &i, tail) == 1 &&
		    i >= 0 && i < NFILES) {
			s->file[i]++;
			cr_expect_eq(type, DT_REG, "%s: type %u", name, type);
		} else {
			s->other++;
		}
	}
	return s->calls == s->stop_at ? 77 : 0;
}

static char *private_dir(void)
{
	char *d = strdup("/tmp/ckpt-test-dir.XXXXXX");
	cr_assert(mkdtemp(d), "mkdtemp: %s", strerror(errno));
	return d;
}

static void rm_rf(const char *d)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", d, d);
	cr_expect_eq(system(cmd), 0, "%s", cmd);
}

Test(dir, the_walk_sees_every_entry_once_over_many_reads_and_stops_when_told)
{
	char *d = private_dir();
	int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dfd, 0);
	/* About 90 KiB of records: many reads of the walk's buffer. */
	for (int i = 0; i < NFILES; i++) {
		char name[96];
		snprintf(name, sizeof name, "a-rather-long-file-name-to-fill-buffers-%d", i);
		int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		cr_assert_geq(fd, 0, "%s: %s", name, strerror(errno));
		close(fd);
	}
	for (int round = 0; round < 2; round++) {
		/* Twice on the same descriptor: each walk starts from the start. */
		struct seen s = {0};
		cr_assert_eq(ckpt__dir_foreach(dfd, see, &s), 0, "round %d", round);
		cr_expect_eq(s.dot, 1);
		cr_expect_eq(s.dotdot, 1);
		cr_expect_eq(s.other, 0);
		for (int i = 0; i < NFILES; i++)
			cr_assert_eq(s.file[i], 1, "round %d: file %d seen %d times", round, i,
				     s.file[i]);
		cr_expect_eq(s.calls, NFILES + 2);
	}
	struct seen s = {.stop_at = 1000};
	cr_expect_eq(ckpt__dir_foreach(dfd, see, &s), 77, "fn's value is returned");
	cr_expect_eq(s.calls, 1000, "the walk went on after fn returned non-zero");
	close(dfd);
	/* A descriptor that is not a directory: the system's error. */
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	s = (struct seen){0};
	cr_expect_eq(ckpt__dir_foreach(fd, see, &s), CKPT_ENOTDIR);
	cr_expect_eq(s.calls, 0);
	close(fd);
	rm_rf(d);
	free(d);
}

/* ---- chains ------------------------------------------------------------------------- */

static const char *golden(const char *name)
{
	static char path[1024];
	const char *src = getenv("top_srcdir");
	snprintf(path, sizeof path, "%s/tests/corrupt/%s", src ? src : "..", name);
	return path;
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	cr_assert(in && out, "%s -> %s: %s", from, to, strerror(errno));
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, in)) > 0)
		cr_assert_eq(fwrite(buf, 1, n, out), n);
	fclose(in);
	cr_assert_eq(fclose(out), 0);
	cr_assert_eq(chmod(to, 0600), 0);
}

/* A private copy of the golden chain (snapshots 1 and 2) in dir. */
static void good_chain(const char *dir)
{
	char to[4200];
	for (int id = 1; id <= 2; id++) {
		char name[64];
		snprintf(name, sizeof name, "good/" CKPT__SNAP_FMT, (unsigned long long)id);
		snprintf(to, sizeof to, "%s/" CKPT__SNAP_FMT, dir, (unsigned long long)id);
		copy_file(golden(name), to);
	}
}

static void plant(const char *dir, const char *name)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	copy_file(golden("good/snap-00000002.ckpt"), path);
}

Test(dir, files_not_named_exactly_like_snapshots_are_not_part_of_the_chain)
{
	char *d = private_dir();
	good_chain(d);
	/* Each would be snapshot 2, 3 or 7 to a loose parser: a second
	 * snapshot 2, or a newest snapshot whose parents are missing. */
	static const char *const strays[] = {"snap-00000002.ckpt.orig", "snap-00000007.ckpt.orig",
					     "snap-3.ckpt", "snap-000000003.ckpt",
					     "snap-00000003.ckpt~", "snap-00000003.ckptx"};
	for (size_t i = 0; i < sizeof strays / sizeof strays[0]; i++)
		plant(d, strays[i]);
	ckpt_chain *ch;
	cr_assert_eq(ckpt_chain_open(&ch, d), 0, "%s", ckpt_last_error());
	cr_expect_eq(ckpt_chain_first(ch), 1);
	cr_expect_eq(ckpt_chain_latest(ch), 2);
	ckpt_chain_close(ch);
	size_t checked = 0;
	cr_expect_eq(ckpt_chain_verify(d, &checked), 0, "%s", ckpt_last_error());
	cr_expect_eq(checked, 2, "verify checked %zu files, not the 2 snapshots", checked);
	size_t folded = 9;
	cr_expect_eq(ckpt_chain_compact(d, 0, &folded), 0, "%s", ckpt_last_error());
	cr_expect_eq(folded, 1);
	for (size_t i = 0; i < sizeof strays / sizeof strays[0]; i++) {
		char path[4200];
		snprintf(path, sizeof path, "%s/%s", d, strays[i]);
		cr_expect_eq(access(path, F_OK), 0, "compact removed %s", strays[i]);
	}
	rm_rf(d);
	free(d);
}

Test(dir, opening_a_chain_removes_unfinished_snapshots_and_nothing_else)
{
	char *d = private_dir();
	plant(d, ".snap-00000001.tmp");
	plant(d, ".notes.tmp");
	plant(d, ".snap-00000001.tmp.keep");
	ckpt_t *c;
	cr_assert_eq(ckpt_open(&c, d, NULL), 0, "%s", ckpt_last_error());
	ckpt_close(c);
	char path[4200];
	snprintf(path, sizeof path, "%s/.snap-00000001.tmp", d);
	cr_expect_neq(access(path, F_OK), 0, "the unfinished snapshot is still there");
	snprintf(path, sizeof path, "%s/.notes.tmp", d);
	cr_expect_eq(access(path, F_OK), 0, "ckpt_open removed a file of the user's");
	snprintf(path, sizeof path, "%s/.snap-00000001.tmp.keep", d);
	cr_expect_eq(access(path, F_OK), 0, "ckpt_open removed a file of the user's");
	rm_rf(d);
	free(d);
}

/* ---- what ckpt accepts as a chain directory -------------------------------------- */

/* Every way into a chain: the three readers and ckpt_open.  Each must fail
 * with `code` and a message naming `name` and saying `says`. */
static void all_refuse(const char *dir, int with_open, int code, const char *name,
		       const char *says)
{
	ckpt_chain *ch = (ckpt_chain *)1;
	int rc = ckpt_chain_open(&ch, dir);
	cr_expect_eq(rc, code, "ckpt_chain_open(%s): %s (%s)", dir, ckpt_err_name(rc),
		     ckpt_last_error());
	cr_expect_null(ch, "ckpt_chain_open(%s): *out set on failure", dir);
	if (!rc)
		ckpt_chain_close(ch);
	const char *what[] = {"ckpt_chain_open", "ckpt_chain_verify", "ckpt_chain_compact",
			      "ckpt_open"};
	for (int i = 0; i < (with_open ? 4 : 3); i++) {
		if (i == 1)
			rc = ckpt_chain_verify(dir, NULL);
		else if (i == 2)
			rc = ckpt_chain_compact(dir, 0, NULL);
		else if (i == 3) {
			ckpt_t *c = NULL;
			rc = ckpt_open(&c, dir, NULL);
			if (!rc)
				ckpt_close(c);
		}
		cr_expect_eq(rc, code, "%s(%s): %s (%s)", what[i], dir, ckpt_err_name(rc),
			     ckpt_last_error());
		cr_expect(strstr(ckpt_last_error(), name) && strstr(ckpt_last_error(), says),
			  "%s(%s) says \"%s\": not \"%s\" about %s", what[i], dir, ckpt_last_error(),
			  says, name);
	}
}

static void must_exist(const char *dir, const char *name, int yes)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	cr_expect_eq(access(path, F_OK) == 0, yes, "%s %s", path,
		     yes ? "is gone" : "was created or kept");
}

Test(dir, a_symbolic_link_to_the_directory_is_refused)
{
	char *d = private_dir(), real[4200], link[4200], slash[4200];
	snprintf(real, sizeof real, "%s/real", d);
	snprintf(link, sizeof link, "%s/link", d);
	snprintf(slash, sizeof slash, "%s/link//", d);
	cr_assert_eq(mkdir(real, 0700), 0);
	good_chain(real);
	cr_assert_eq(symlink("real", link), 0);
	all_refuse(link, 1, CKPT_EACCES, "link", "a symbolic link");
	all_refuse(slash, 1, CKPT_EACCES, "link", "a symbolic link");
	must_exist(real, "snap-00000001.ckpt", 1); /* compact folded nothing */
	must_exist(real, "lock", 0);
	/* The directory itself, by its name, is fine. */
	cr_expect_eq(ckpt_chain_verify(real, NULL), 0, "%s", ckpt_last_error());
	rm_rf(d);
	free(d);
}

Test(dir, a_directory_others_or_its_group_can_write_to_is_refused)
{
	static const struct {
		mode_t mode;
		const char *says;
	} modes[] = {{0777, "writable by others"}, {01777, "writable by others"},
		     {0703, "writable by others"}, {0770, "writable by its group"},
		     {0730, "writable by its group"}};
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
		char *d = private_dir();
		good_chain(d);
		cr_assert_eq(chmod(d, modes[i].mode), 0);
		all_refuse(d, 1, CKPT_EACCES, d, modes[i].says);
		char mode[16];
		snprintf(mode, sizeof mode, "mode %04o", (unsigned)modes[i].mode);
		cr_expect(strstr(ckpt_last_error(), mode), "%s", ckpt_last_error());
		must_exist(d, "snap-00000001.ckpt", 1);
		must_exist(d, "lock", 0);
		cr_assert_eq(chmod(d, 0755), 0);
		cr_expect_eq(ckpt_chain_verify(d, NULL), 0, "mode 0755: %s", ckpt_last_error());
		rm_rf(d);
		free(d);
	}
}

Test(dir, a_directory_of_another_user_is_refused)
{
	if (geteuid() != 0)
		cr_skip_test("not root: no directory of another user can be made to test with");
	char *d = private_dir();
	good_chain(d);
	cr_assert_eq(chown(d, 65534, 65534), 0, "%s", strerror(errno));
	all_refuse(d, 1, CKPT_EACCES, d, "owned by uid 65534");
	cr_assert_eq(chown(d, 0, 0), 0);
	cr_expect_eq(ckpt_chain_verify(d, NULL), 0, "%s", ckpt_last_error());
	rm_rf(d);
	free(d);
}

Test(dir, a_fifo_named_like_a_snapshot_is_refused_without_blocking, .timeout = 20)
{
	char *d = private_dir(), path[4200];
	good_chain(d);
	snprintf(path, sizeof path, "%s/snap-00000003.ckpt", d);
	cr_assert_eq(mkfifo(path, 0600), 0);
	all_refuse(d, 0, CKPT_ECORRUPT, "snap-00000003.ckpt", "not a regular file (a FIFO)");
	rm_rf(d);
	free(d);
}

Test(dir, a_snapshot_that_is_a_symbolic_link_is_refused)
{
	char *d = private_dir(), path[4200], other[4200];
	good_chain(d);
	snprintf(other, sizeof other, "%s/elsewhere", d);
	cr_assert_eq(mkdir(other, 0700), 0);
	good_chain(other);
	/* Even to a sound file of the same chain. */
	snprintf(path, sizeof path, "%s/snap-00000002.ckpt", d);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(symlink("elsewhere/snap-00000002.ckpt", path), 0);
	all_refuse(d, 0, CKPT_EACCES, "snap-00000002.ckpt", "a symbolic link");
	rm_rf(d);
	free(d);
}

Test(dir, a_snapshot_others_could_have_written_is_refused)
{
	char *d = private_dir(), path[4200];
	good_chain(d);
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", d);
	cr_assert_eq(chmod(path, 0620), 0);
	all_refuse(d, 0, CKPT_EACCES, "snap-00000001.ckpt", "writable by its group");
	cr_assert_eq(chmod(path, 0602), 0);
	all_refuse(d, 0, CKPT_EACCES, "snap-00000001.ckpt", "writable by others");
	cr_assert_eq(chmod(path, 0644), 0);
	cr_expect_eq(ckpt_chain_verify(d, NULL), 0, "mode 0644: %s", ckpt_last_error());
	if (geteuid() == 0) {
		cr_assert_eq(chown(path, 65534, 65534), 0);
		all_refuse(d, 0, CKPT_EACCES, "snap-00000001.ckpt", "owned by uid 65534");
	} else {
		cr_log_info("not root: no file of another user to test with");
	}
	rm_rf(d);
	free(d);
}

Test(dir, what_is_not_a_directory_or_not_there)
{
	char *d = private_dir(), path[4200];
	snprintf(path, sizeof path, "%s/file", d);
	plant(d, "file");
	ckpt_chain *ch;
	cr_expect_eq(ckpt_chain_open(&ch, path), CKPT_ENOTDIR, "%s", ckpt_last_error());
	cr_expect_eq(ckpt_chain_verify(path, NULL), CKPT_ENOTDIR, "%s", ckpt_last_error());
	ckpt_t *c;
	cr_expect_eq(ckpt_open(&c, path, NULL), CKPT_ENOTDIR, "%s", ckpt_last_error());
	snprintf(path, sizeof path, "%s/none", d);
	cr_expect_eq(ckpt_chain_open(&ch, path), CKPT_ENOENT, "%s", ckpt_last_error());
	cr_expect_eq(ckpt_chain_verify(path, NULL), CKPT_ENOENT, "%s", ckpt_last_error());
	/* ckpt_open makes it, private. */
	cr_assert_eq(ckpt_open(&c, path, NULL), 0, "%s", ckpt_last_error());
	ckpt_close(c);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0700, "made with mode %04o", st.st_mode & 07777);
	rm_rf(d);
	free(d);
}

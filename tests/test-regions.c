/*
 * test-regions.c - named regions (ckpt_protect): a handle that stores only
 * the arrays a program names, and gives them back by name in a process
 * whose arrays lie elsewhere.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Each scenario runs in a child (helpers.h); "another process" is a child
 * of that child, which writes the chain and exits, so that the restoring
 * process is a different one with its own addresses.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIELD_DOUBLES 300001 /* 2.3 MiB, not a whole number of pages */
#define GRID_PAGES 40

static int step;         /* in .bss: a file mapping's private copy */
static char note[100] = "initial";

/* The field's value at i for a given step. */
static double field_at(size_t i, int s)
{
	return (double)i * 0.25 + s * 1000.0;
}

static ckpt_t *open_continue(const char *dir, unsigned flags)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_CONTINUE | flags;
	CHECK_RC(ckpt_open(&c, dir, &o));
	return c;
}

/* An array at an address of its own: `skew` bytes into a fresh mapping,
 * so that two processes never place it alike. */
static void *array_at(size_t bytes, size_t skew)
{
	size_t ps = pagesz(), len = (bytes + skew + ps - 1) / ps * ps;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	return m + skew;
}

/* Runs fn(dir) in a child and waits for it: the writing process. */
static void in_other_process(void (*fn)(const char *dir), const char *dir)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		fn(dir);
		_exit(0);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		child_die("the writing process failed (status %#x)", st);
}

/* The writer: snapshot 1 at step 1, snapshot 2 at step 2 (a tenth of the
 * field written), then memory it does not commit. */
static void write_two(const char *dir)
{
	ckpt_t *c = open_continue(dir, 0);
	double *u = array_at(FIELD_DOUBLES * sizeof *u, 24);
	char *grid = array_at(GRID_PAGES * pagesz(), 0);
	CHECK_RC(ckpt_protect(c, "field", u, FIELD_DOUBLES * sizeof *u));
	CHECK_RC(ckpt_protect(c, "step", &step, sizeof step));
	CHECK_RC(ckpt_protect(c, "grid", grid, GRID_PAGES * pagesz()));
	for (size_t i = 0; i < FIELD_DOUBLES; i++)
		u[i] = field_at(i, 1);
	memset(grid, 'g', GRID_PAGES * pagesz());
	step = 1;
	CHECK_RC(ckpt_begin(c));
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 1);
	for (size_t i = 0; i < FIELD_DOUBLES; i += 10)
		u[i] = field_at(i, 2);
	grid[5 * pagesz() + 7] = 'G';
	step = 2;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	step = 3;
	u[0] = -1;
	ckpt_close(c);
}

static void check_field(const double *u, int s, const char *when)
{
	for (size_t i = 0; i < FIELD_DOUBLES; i++) {
		double want = (s == 2 && i % 10 == 0) ? field_at(i, 2) : field_at(i, 1);
		if (u[i] != want)
			child_die("%s: field[%zu] is %g, not %g", when, i, u[i], want);
	}
}

/* ---- back by name, elsewhere ------------------------------------------------------ */

static void restores_elsewhere(const char *dir)
{
	in_other_process(write_two, dir);
	/* Here the arrays lie elsewhere, and hold something else. */
	double *u = array_at(FIELD_DOUBLES * sizeof *u, 3000);
	char *grid = array_at(GRID_PAGES * pagesz(), 0);
	memset(u, 0x55, FIELD_DOUBLES * sizeof *u);
	memset(grid, 0, GRID_PAGES * pagesz());
	step = 99;
	ckpt_t *c = open_continue(dir, 0);
	/* Named before ckpt_protect_from: filled by it. */
	CHECK_RC(ckpt_protect(c, "step", &step, sizeof step));
	CHECK(step == 99);
	CHECK_RC(ckpt_protect_from(c, CKPT_LATEST));
	CHECK(step == 2);
	CHECK_RC(ckpt_protect(c, "field", u, FIELD_DOUBLES * sizeof *u));
	check_field(u, 2, "protected from the newest");
	CHECK_RC(ckpt_protect(c, "grid", grid, GRID_PAGES * pagesz()));
	CHECK(grid[5 * pagesz() + 7] == 'G' && grid[0] == 'g' && grid[GRID_PAGES * pagesz() - 1] == 'g');

	/* The older snapshot, by id, before tracking. */
	CHECK_RC(ckpt_restore(c, 1));
	CHECK(step == 1);
	check_field(u, 1, "restored to 1");
	CHECK(grid[5 * pagesz() + 7] == 'g');

	/* Tracking only the named memory; the chain goes on from 2. */
	CHECK_RC(ckpt_begin(c));
	ckpt_stats st;
	CHECK_RC(ckpt_stats(c, &st));
	size_t span = (FIELD_DOUBLES * sizeof *u + 3000 % pagesz() + pagesz() - 1) / pagesz() + 1 +
		      GRID_PAGES + 1;
	if (st.tracked_pages > span || st.tracked_pages < GRID_PAGES + 2)
		child_die("%zu pages tracked for regions spanning at most %zu", st.tracked_pages, span);
	char *other = malloc(1 << 20);
	CHECK(other);
	memset(other, 1, 1 << 20);
	/* Only pages of the regions count, whatever else is written (the
	 * page `step` shares with other data of the program among them). */
	DSET(d);
	CHECK(dset_collect(c, &d) == 0);
	uintptr_t ulo = (uintptr_t)u & ~(pagesz() - 1), uhi = (uintptr_t)(u + FIELD_DOUBLES);
	uintptr_t slo = (uintptr_t)&step & ~(pagesz() - 1);
	for (size_t i = 0; i < d.n; i++) {
		uintptr_t a = d.r[i].start, b = a + d.r[i].npages * pagesz();
		if (!((a >= ulo && b <= uhi + pagesz()) || (a >= slo && b <= slo + pagesz()) ||
		      (a >= (uintptr_t)grid && b <= (uintptr_t)grid + GRID_PAGES * pagesz())))
			child_die("memory no region names counts as written: %#lx, %zu pages (%s)",
				  (unsigned long)a, d.r[i].npages, d.r[i].mapping);
	}
	step = 3;
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 3);
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 4);
	CHECK_RC(ckpt_stats(c, &st));
	CHECK(st.commit_pages <= 1);
	/* A rollback while tracking writes the regions' bytes alone. */
	step = 4;
	u[7] = 7;
	CHECK_RC(ckpt_restore(c, 2));
	CHECK(step == 2);
	check_field(u, 2, "restored to 2 while tracking");
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	CHECK(step == 3);
	check_field(u, 1, "restored to 4 while tracking");
	free(other);
	CHECK_RC(ckpt_end(c));

	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	ckpt_snapshot_info si;
	CHECK_RC(ckpt_chain_info(ch, 4, &si));
	CHECK(!si.resumable);
	CHECK(si.parent == 3);
	ckpt_chain_close(ch);
	ckpt_close(c);
}

Test(regions, come_back_by_name_in_arrays_at_other_addresses, .timeout = 60)
{
	in_child(restores_elsewhere, "restores elsewhere");
}

/* ---- what the chain says about them ----------------------------------------------- */

struct listed {
	char names[4][64];
	size_t lens[4];
	int n;
};

static int list_one(const ckpt_region_info *r, void *arg)
{
	struct listed *l = arg;
	if (l->n < 4) {
		snprintf(l->names[l->n], sizeof l->names[0], "%s", r->name);
		l->lens[l->n] = r->len;
	}
	l->n++;
	return 0;
}

static void chain_lists_regions(const char *dir)
{
	in_other_process(write_two, dir);
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	struct listed l = {0};
	CHECK_RC(ckpt_chain_regions(ch, 2, list_one, &l));
	CHECK(l.n == 3);
	CHECK(!strcmp(l.names[0], "field") && l.lens[0] == FIELD_DOUBLES * sizeof(double));
	CHECK(!strcmp(l.names[1], "step") && l.lens[1] == sizeof step);
	CHECK(!strcmp(l.names[2], "grid"));
	CHECK(ckpt_chain_regions(ch, 9, list_one, &l) == CKPT_ENOENT);
	ckpt_chain_close(ch);
}

Test(regions, the_chain_lists_them, .timeout = 60)
{
	in_child(chain_lists_regions, "regions listed");
}

/* ---- refusals ------------------------------------------------------------------------ */

static void mismatches_are_refused(const char *dir)
{
	in_other_process(write_two, dir);
	double *u = array_at(FIELD_DOUBLES * sizeof *u, 8);
	memset(u, 0x33, FIELD_DOUBLES * sizeof *u);
	ckpt_t *c = open_continue(dir, 0);
	CHECK_RC(ckpt_protect_from(c, 2));
	/* Another length: refused, naming the region; left as it was. */
	int rc = ckpt_protect(c, "field", u, (FIELD_DOUBLES - 1) * sizeof *u);
	CHECK(rc == CKPT_EMISMATCH);
	CHECK(strstr(ckpt_last_error(), "field"));
	unsigned char *b = (unsigned char *)u;
	for (size_t i = 0; i < FIELD_DOUBLES * sizeof *u; i++)
		if (b[i] != 0x33)
			child_die("a refused region was written at byte %zu", i);
	/* A name the snapshot lacks. */
	static int other;
	rc = ckpt_protect(c, "pressure", &other, sizeof other);
	CHECK(rc == CKPT_EMISMATCH);
	CHECK(strstr(ckpt_last_error(), "pressure"));
	/* Regions of the snapshot not named again: begin refuses. */
	CHECK_RC(ckpt_protect(c, "field", u, FIELD_DOUBLES * sizeof *u));
	rc = ckpt_begin(c);
	CHECK(rc == CKPT_EMISMATCH);
	CHECK(strstr(ckpt_last_error(), "step") || strstr(ckpt_last_error(), "grid"));
	ckpt_close(c);

	/* ckpt_restore with a region the snapshot lacks writes nothing. */
	c = open_continue(dir, 0);
	char *grid = array_at(GRID_PAGES * pagesz(), 0);
	memset(u, 0x44, FIELD_DOUBLES * sizeof *u);
	CHECK_RC(ckpt_protect(c, "field", u, FIELD_DOUBLES * sizeof *u));
	CHECK_RC(ckpt_protect(c, "step", &step, sizeof step));
	CHECK_RC(ckpt_protect(c, "grid", grid, GRID_PAGES * pagesz()));
	CHECK_RC(ckpt_protect(c, "note", note, sizeof note));
	step = 77;
	rc = ckpt_restore(c, CKPT_LATEST);
	CHECK(rc == CKPT_EMISMATCH);
	CHECK(strstr(ckpt_last_error(), "note"));
	CHECK(step == 77 && b[0] == 0x44);
	CHECK(ckpt_restore(c, 5) == CKPT_ENOENT);
	ckpt_close(c);
}

Test(regions, other_names_or_lengths_are_refused_and_nothing_is_written, .timeout = 60)
{
	in_child(mismatches_are_refused, "mismatches");
}

static void bad_arguments(const char *dir)
{
	ckpt_t *c = open_continue(dir, 0);
	static char a[200];
	CHECK(ckpt_protect(c, "", a, 10) == CKPT_EINVAL);
	CHECK(ckpt_protect(c, "a/b", a, 10) == CKPT_EINVAL);
	CHECK(ckpt_protect(c, "tab\there", a, 10) == CKPT_EINVAL);
	char longname[80];
	memset(longname, 'x', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	CHECK(ckpt_protect(c, longname, a, 10) == CKPT_EINVAL);
	CHECK(ckpt_protect(c, "a", NULL, 10) == CKPT_EINVAL);
	CHECK(ckpt_protect(c, "a", a, 0) == CKPT_EINVAL);
	CHECK_RC(ckpt_protect(c, "a", a, 100));
	CHECK(ckpt_protect(c, "a", a + 100, 10) == CKPT_EINVAL);
	CHECK(strstr(ckpt_last_error(), "twice"));
	CHECK(ckpt_protect(c, "b", a + 50, 100) == CKPT_EINVAL);
	CHECK(strstr(ckpt_last_error(), "overlaps region a"));
	CHECK_RC(ckpt_protect(c, "b", a + 100, 100)); /* shares a page: fine */
	CHECK_RC(ckpt_begin(c));
	CHECK(ckpt_protect(c, "c", note, sizeof note) == CKPT_ESTATE);
	CHECK(ckpt_protect_from(c, 1) == CKPT_ESTATE);
	CHECK_RC(ckpt_end(c));
	ckpt_close(c);

	/* Memory that cannot be a region: unmapped, on the stack. */
	c = open_continue(dir, 0);
	size_t ps = pagesz();
	char *gone = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(gone != MAP_FAILED);
	CHECK(munmap(gone + ps, ps) == 0);
	CHECK_RC(ckpt_protect(c, "half", gone, 2 * ps));
	CHECK(ckpt_begin(c) == CKPT_EINVAL);
	CHECK(strstr(ckpt_last_error(), "half"));
	ckpt_close(c);
	c = open_continue(dir, 0);
	char local[64];
	memset(local, 0, sizeof local);
	CHECK_RC(ckpt_protect(c, "local", local, sizeof local));
	CHECK(ckpt_begin(c) == CKPT_EINVAL);
	CHECK(strstr(ckpt_last_error(), "stack"));
	ckpt_close(c);

	/* Not with a handle that saves the whole process, or none at all. */
	CHECK_RC(ckpt_open(&c, NULL, NULL));
	CHECK(ckpt_protect(c, "a", note, sizeof note) == CKPT_EINVAL);
	ckpt_close(c);
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_CONTINUE | CKPT_F_OVERWRITE;
	CHECK(ckpt_open(&c, dir, &o) == CKPT_EINVAL);
	o.flags = CKPT_F_CONTINUE | CKPT_F_RESUME;
	CHECK(ckpt_open(&c, dir, &o) == CKPT_EINVAL);
}

Test(regions, bad_names_overlaps_and_unusable_memory_are_refused, .timeout = 60)
{
	in_child(bad_arguments, "bad arguments");
}

/* ---- a region that shares a page ---------------------------------------------------- */

struct shared_page {
	char before[100];
	char mine[300];
	char after[100];
};

static void shares_a_page(const char *dir)
{
	struct shared_page *p = array_at(sizeof *p, 1000);
	memset(p, 'x', sizeof *p);
	ckpt_t *c = open_continue(dir, 0);
	CHECK_RC(ckpt_protect(c, "mine", p->mine, sizeof p->mine));
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	memset(p, 'y', sizeof *p);
	CHECK_RC(ckpt_restore(c, 1));
	for (size_t i = 0; i < sizeof p->mine; i++)
		CHECK(p->mine[i] == 'x');
	for (size_t i = 0; i < sizeof p->before; i++)
		CHECK(p->before[i] == 'y' && p->after[i] == 'y');
	CHECK_RC(ckpt_end(c));
	ckpt_close(c);
}

Test(regions, a_restore_writes_a_regions_bytes_not_the_rest_of_its_pages, .timeout = 60)
{
	in_child(shares_a_page, "shared page");
}

/* ---- async, damage, set aside ---------------------------------------------------------- */

static void async_commits(const char *dir)
{
	double *u = array_at(FIELD_DOUBLES * sizeof *u, 64);
	ckpt_t *c = open_continue(dir, CKPT_F_ASYNC);
	CHECK_RC(ckpt_protect(c, "field", u, FIELD_DOUBLES * sizeof *u));
	for (size_t i = 0; i < FIELD_DOUBLES; i++)
		u[i] = field_at(i, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	for (size_t i = 0; i < FIELD_DOUBLES; i += 10)
		u[i] = field_at(i, 2);
	uint64_t id;
	CHECK_RC(ckpt_commit(c, NULL));
	CHECK_RC(ckpt_wait(c, &id));
	CHECK(id == 2);
	memset(u, 0, FIELD_DOUBLES * sizeof *u);
	CHECK_RC(ckpt_restore(c, 1));
	check_field(u, 1, "async, restored to 1");
	CHECK_RC(ckpt_restore(c, 2));
	check_field(u, 2, "async, restored to 2");
	ckpt_close(c);
}

Test(regions, async_commits_store_them_too, .timeout = 60)
{
	in_child(async_commits, "async");
}

/* Flips a byte in the middle of the data of snapshot id's file. */
static void damage(const char *dir, int id)
{
	char path[512];
	snprintf(path, sizeof path, "%s/snap-%08d.ckpt", dir, id);
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	struct stat sb;
	CHECK(fstat(fd, &sb) == 0);
	off_t at = sb.st_size / 3;
	unsigned char ch;
	CHECK(pread(fd, &ch, 1, at) == 1);
	ch ^= 0xff;
	CHECK(pwrite(fd, &ch, 1, at) == 1);
	close(fd);
}

static void damaged_is_refused(const char *dir)
{
	in_other_process(write_two, dir);
	damage(dir, 1);
	double *u = array_at(FIELD_DOUBLES * sizeof *u, 16);
	char *grid = array_at(GRID_PAGES * pagesz(), 0);
	memset(u, 0x21, FIELD_DOUBLES * sizeof *u);
	ckpt_t *c = open_continue(dir, 0);
	CHECK_RC(ckpt_protect(c, "field", u, FIELD_DOUBLES * sizeof *u));
	CHECK_RC(ckpt_protect(c, "step", &step, sizeof step));
	CHECK_RC(ckpt_protect(c, "grid", grid, GRID_PAGES * pagesz()));
	step = 55;
	/* (Restoring 2 might not read the damaged page: 2 holds every page
	 * of the field again.) */
	int rc = ckpt_restore(c, 1);
	if (rc != CKPT_ECORRUPT)
		child_die("a damaged base gave %s (%s)", ckpt_err_name(rc), ckpt_last_error());
	unsigned char *b = (unsigned char *)u;
	for (size_t i = 0; i < FIELD_DOUBLES * sizeof *u; i++)
		if (b[i] != 0x21)
			child_die("a refused restore wrote byte %zu", i);
	CHECK(step == 55);
	ckpt_close(c);
}

Test(regions, a_damaged_snapshot_is_refused_before_a_byte_changes, .timeout = 60)
{
	in_child(damaged_is_refused, "damaged");
}

static int count_aside(const char *dir, const char *prefix)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "ls %s/%s*/ 2>/dev/null | grep -c snap-", dir, prefix);
	FILE *f = popen(cmd, "r");
	CHECK(f);
	int n = 0;
	CHECK(fscanf(f, "%d", &n) == 1);
	pclose(f);
	return n;
}

static void set_aside(const char *dir)
{
	in_other_process(write_two, dir);
	ckpt_t *c = open_continue(dir, 0);
	/* While a handle writes the chain, nobody else moves its files. */
	CHECK(ckpt_chain_set_aside(dir, 1, NULL) == CKPT_EBUSY);
	ckpt_close(c);
	CHECK(ckpt_chain_set_aside(dir, 7, NULL) == CKPT_ENOENT);
	size_t moved = 9;
	CHECK_RC(ckpt_chain_set_aside(dir, 1, &moved));
	CHECK(moved == 1);
	CHECK(count_aside(dir, "aside-1-") == 1);
	CHECK_RC(ckpt_chain_set_aside(dir, 1, &moved));
	CHECK(moved == 0);
	/* The chain ends at 1 now, and goes on from it. */
	double *u = array_at(FIELD_DOUBLES * sizeof *u, 40);
	char *grid = array_at(GRID_PAGES * pagesz(), 0);
	c = open_continue(dir, 0);
	CHECK_RC(ckpt_protect_from(c, CKPT_LATEST));
	CHECK_RC(ckpt_protect(c, "field", u, FIELD_DOUBLES * sizeof *u));
	CHECK_RC(ckpt_protect(c, "step", &step, sizeof step));
	CHECK_RC(ckpt_protect(c, "grid", grid, GRID_PAGES * pagesz()));
	CHECK(step == 1);
	check_field(u, 1, "after setting 2 aside");
	CHECK_RC(ckpt_begin(c));
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	ckpt_close(c);
	size_t checked = 0;
	CHECK_RC(ckpt_chain_verify(dir, &checked));
	CHECK(checked == 2);
	/* Everything aside: an empty chain. */
	CHECK_RC(ckpt_chain_set_aside(dir, 0, &moved));
	CHECK(moved == 2);
	CHECK(count_aside(dir, "aside-0-") == 2);
	c = open_continue(dir, 0);
	CHECK(ckpt_protect_from(c, CKPT_LATEST) == CKPT_ENOENT);
	ckpt_close(c);
}

Test(regions, snapshots_set_aside_leave_the_chain_to_go_on_from_an_earlier_one, .timeout = 60)
{
	in_child(set_aside, "set aside");
}

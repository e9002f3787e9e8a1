/*
 * test-maps.c - the /proc/self/maps parser.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "maps.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int parse(const char *text, struct ckpt__vma *v)
{
	static char buf[4600];
	snprintf(buf, sizeof buf, "%s", text);
	return ckpt__maps_parse_line(buf, strlen(buf), v);
}

Test(maps, parses_every_field)
{
	struct ckpt__vma v;
	cr_assert_eq(parse("7f2a1c000000-7f2a1c021000 rw-s 0001f000 fd:01 1234567    "
			   "/usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)", &v), 0);
	cr_assert_eq(v.start, 0x7f2a1c000000ul);
	cr_assert_eq(v.end, 0x7f2a1c021000ul);
	cr_assert_eq(v.perms, CKPT__VMA_R | CKPT__VMA_W | CKPT__VMA_SHARED);
	cr_assert_eq(v.offset, 0x1f000);
	cr_assert_eq(v.major, 0xfd);
	cr_assert_eq(v.minor, 1);
	cr_assert_eq(v.inode, 1234567);
	cr_assert_str_eq(v.path, "/usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)");
}

Test(maps, anonymous_and_pseudo_names)
{
	struct ckpt__vma v;
	cr_assert_eq(parse("55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0 ", &v), 0);
	cr_assert_str_eq(v.path, "");
	cr_assert_eq(parse("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0          [stack]", &v),
		     0);
	cr_assert_str_eq(v.path, "[stack]");
	cr_assert_eq(v.perms, CKPT__VMA_R | CKPT__VMA_W);
	cr_assert_eq(parse("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]",
			   &v), 0);
	cr_assert_eq(v.perms, CKPT__VMA_X);
}

Test(maps, refuses_malformed_lines)
{
	struct ckpt__vma v;
	cr_assert_neq(parse("", &v), 0);
	cr_assert_neq(parse("zz-10 rw-p 0 00:00 0", &v), 0);
	cr_assert_neq(parse("1000-2000 rw-p", &v), 0);
	cr_assert_neq(parse("2000-1000 rw-p 00000000 00:00 0", &v), 0, "end before start");
	cr_assert_neq(parse("1000-2000 rw-p 00000000 00:00 x", &v), 0, "inode not a number");
	cr_assert_neq(parse("11111111111111111-2000 rw-p 00000000 00:00 0", &v), 0, "17 digits");
}

static int find_cb(const struct ckpt__vma *v, void *arg)
{
	void **want = arg;
	if ((uintptr_t)want[0] >= v->start && (uintptr_t)want[0] < v->end) {
		want[1] = (void *)v->start;
		want[2] = (void *)(uintptr_t)v->perms;
		return 1;
	}
	return 0;
}

Test(maps, stream_and_snapshot_agree_on_a_fresh_mapping)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, 3 * ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(p, MAP_FAILED);
	char buf[8192];
	void *want[3] = {p + ps, NULL, NULL};
	cr_assert_eq(ckpt__maps_stream(buf, sizeof buf, find_cb, want), 1);
	cr_assert_eq(want[1], p);
	cr_assert_eq((uintptr_t)want[2], CKPT__VMA_R);

	struct ckpt__maps m = {0};
	cr_assert_eq(ckpt__maps_read(&m), 0);
	long i = ckpt__maps_find(&m, (uintptr_t)p + 2 * ps);
	cr_assert_geq(i, 0);
	cr_assert_eq(m.v[i].start, (uintptr_t)p);
	cr_assert_eq(m.v[i].end, (uintptr_t)p + 3 * ps);
	for (size_t k = 1; k < m.n; k++)
		cr_assert_leq(m.v[k - 1].end, m.v[k].start, "snapshot not sorted at %zu", k);
	cr_assert_eq(ckpt__maps_find(&m, 0), -1);
	ckpt__maps_free(&m);
	munmap(p, 3 * ps);
}

/*
 * fresh.c - a program that has not called malloc when it starts tracking:
 * its heap does not exist yet.  ckpt's own work during the first commit
 * may create it (starting a thread allocates), or the program's first
 * malloc after it; rolling back to a snapshot without a heap must leave
 * glibc's idea of the heap and the kernel's break agreeing: the mallocs
 * after the rollbacks are the test.  Run by test-snap; exits 0 when all
 * went well.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <ckpt.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char field[1024 * 4096] __attribute__((aligned(4096)));

static void say(const char *s)
{
	(void)!write(2, s, strlen(s));
}

static int has_heap(void)
{
	char buf[8192];
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC), found = 0;
	ssize_t n;
	/* A small program's maps fit in one read. */
	while (fd >= 0 && (n = read(fd, buf, sizeof buf - 1)) > 0) {
		buf[n] = '\0';
		found |= strstr(buf, "[heap]") != NULL;
	}
	if (fd >= 0)
		close(fd);
	return found;
}

static void check(int rc, const char *what)
{
	if (rc < 0) {
		say(what);
		say(": ");
		say(ckpt_strerror(rc));
		say("\n");
		_exit(2);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		say("usage: fresh DIR\n");
		return 2;
	}
	if (has_heap()) {
		say("the heap exists before ckpt_open: nothing to test\n");
		return 3;
	}
	/* glibc learns where the break is (and keeps it), as a program that
	 * asked, or a library, would have it. */
	(void)sbrk(0);
	ckpt_options o;
	ckpt_options_init(&o);
	o.threads = 1; /* no workers: the program makes the heap */
	ckpt_t *c;
	check(ckpt_open(&c, argv[1], &o), "ckpt_open");
	check(ckpt_begin(c), "ckpt_begin");
	for (size_t i = 0; i < sizeof field; i += 4096)
		field[i] = (char)(i >> 12);
	check(ckpt_commit(c, NULL), "ckpt_commit");
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < sizeof field; i += 4096)
			field[i] = 'x';
		/* The heap, made now if the commit did not make it. */
		char *q = malloc(1000 + 100000 * (size_t)round);
		if (!q)
			return 1;
		memset(q, 'q', 1000);
		check(ckpt_restore(c, CKPT_LATEST), "ckpt_restore");
		for (size_t i = 0; i < sizeof field; i += 4096)
			if (field[i] != (char)(i >> 12)) {
				say("a page did not come back\n");
				return 1;
			}
	}
	/* glibc's heap, as the rollback left it. */
	char *p = malloc(100000);
	if (!p)
		return 1;
	memset(p, 'a', 100000);
	free(p);
	printf("fresh: ok\n");
	check(ckpt_end(c), "ckpt_end");
	ckpt_close(c);
	return 0;
}

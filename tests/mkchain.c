/*
 * tests/mkchain.c - builds a small, known chain for the tests of the ckpt tool.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Usage: mkchain DIR
 *
 * Writes three snapshots of this process into DIR around an anonymous region
 * of 64 pages, between two inaccessible guard pages:
 *   1  the base: byte i of page p is (p * 7 + i) & 0xff
 *   2  page 3 all 'A', page 40 all 'B'
 *   3  page 3 all 'C'
 * and then prints the region's start address ("0x7f...") on stdout.  Any failure
 * is reported on stderr with a non-zero exit status.
 */
#include <ckpt.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define REGION_PAGES 64

static void die(const char *what, int rc)
{
	fprintf(stderr, "mkchain: %s: %s: %s\n", what, ckpt_strerror(rc), ckpt_last_error());
	exit(1);
}

/* Commits the next snapshot and checks it got the id the tests expect. */
static void commit(ckpt_t *c, uint64_t want)
{
	uint64_t id = 0;
	int rc = ckpt_commit(c, &id);
	if (rc)
		die("ckpt_commit", rc);
	if (id != want) {
		fprintf(stderr, "mkchain: ckpt_commit wrote snapshot %llu, expected %llu\n",
			(unsigned long long)id, (unsigned long long)want);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: mkchain DIR\n");
		return 2;
	}
	long ps = sysconf(_SC_PAGESIZE);
	if (ps <= 0) {
		perror("mkchain: sysconf(_SC_PAGESIZE)");
		return 1;
	}
	size_t psz = (size_t)ps;
	/* An inaccessible guard page on either side: the kernel cannot merge
	 * the region with a neighbour and nothing else can be mapped next to
	 * it, so the bytes just outside it are in no snapshot, which the tests
	 * rely on to make a read fail half-way. */
	unsigned char *area = mmap(NULL, (REGION_PAGES + 2) * psz, PROT_NONE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED) {
		perror("mkchain: mmap");
		return 1;
	}
	unsigned char *region = area + psz;
	if (mprotect(region, REGION_PAGES * psz, PROT_READ | PROT_WRITE) != 0) {
		perror("mkchain: mprotect");
		return 1;
	}
	for (size_t p = 0; p < REGION_PAGES; p++)
		for (size_t i = 0; i < psz; i++)
			region[p * psz + i] = (unsigned char)((p * 7 + i) & 0xff);

	ckpt_options opt;
	ckpt_options_init(&opt);
	opt.flags = CKPT_F_OVERWRITE;
	ckpt_t *c;
	int rc = ckpt_open(&c, argv[1], &opt);
	if (rc)
		die("ckpt_open", rc);
	rc = ckpt_begin(c);
	if (rc)
		die("ckpt_begin", rc);

	/* Between begin and close nothing goes through stdio on success: a
	 * commit stores the whole process, stdio buffers included, and the
	 * snapshots should hold the region's changes and little else. */
	commit(c, 1);
	memset(region + 3 * psz, 'A', psz);
	memset(region + 40 * psz, 'B', psz);
	commit(c, 2);
	memset(region + 3 * psz, 'C', psz);
	commit(c, 3);

	rc = ckpt_end(c);
	if (rc)
		die("ckpt_end", rc);
	ckpt_close(c);

	if (printf("0x%" PRIxPTR "\n", (uintptr_t)region) < 0 || fflush(stdout) != 0) {
		perror("mkchain: stdout");
		return 1;
	}
	if (munmap(area, (REGION_PAGES + 2) * psz) != 0) {
		perror("mkchain: munmap");
		return 1;
	}
	return 0;
}

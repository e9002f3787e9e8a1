/*
 * lazy-prog.c - a program for tests/resume-lazy.sh and for timing resumes:
 * a heap block of N MiB with known content, committed once, killed, and
 * resumed (lazily when CKPT_TEST_LAZY=1 is in the environment of the run
 * that resumes) to do one thing with memory not filled yet.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Usage: lazy-prog --dir DIR --ctl FILE [--mib N] [--seed S] [--increments K]
 *
 * A fresh run allocates the block (malloc: a mapping of glibc's), writes
 * every word of it from the seed, begins tracking, commits, and kills
 * itself (SIGKILL).  With --increments K it first commits K times more,
 * each after rewriting a third of the block's pages, chosen anew each
 * time, so that the resume takes the pages from K + 1 files, most blocks
 * in part.  A run that resumes reads what to do from FILE (read
 * after the resume: the resumed memory holds the first run's arguments,
 * not this one's), prints "resumed-at NS" (CLOCK_REALTIME when
 * ckpt_commit returned CKPT_RESUMED) and "lazy-fill 0|1" (whether the
 * last page of the block was resident then), then:
 *
 *   sum      reads every page and checks every word: "check ok"
 *   touch    reads one word of every page (for timing)
 *   kill     SIGKILL at once (the fill half done)
 *   read     read(2) from a pipe 100 bytes into the middle of the block's
 *            last page, then checks those bytes, the rest of that page
 *            and every other word
 *   discard  madvise(MADV_DONTNEED) of the last 4 pages, then checks they
 *            read as zero and every other word is the seed's
 *   commit   writes one word in each of 5 pages and commits: prints
 *            "commit-pages N", the pages that commit stored
 *   fork     forks: the child checks every word and exits 0 if sound
 *   realloc  grows the block by 64 MiB with realloc (glibc moves a block
 *            that large with mremap, inside libc), then checks every word
 *
 * and then exits 0 ("check ok" printed by every check that passed).
 * Exit status: 0, 1 a check failed (on stderr: where), 2 usage, 3
 * ckpt_open failed.
 */
#include <ckpt.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t *block;
static size_t words;
static uint64_t seed = 1;
static unsigned increments;
static const char *ctl;

/* Word i of the block as the base has it: half of its bits random, so
 * that zstd has some work to do and gets something out of it.  With
 * increments, all of them: blocks of noise are stored raw with a hash a
 * page, of which a resume reads only the pages it needs. */
static uint64_t base_word(size_t i)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return increments ? x : x & 0x00ff00ff00ff00ffull;
}

/* Whether increment k rewrites the k-th page-sized group of words g. */
static int rewrites(unsigned k, size_t g)
{
	return (g * 2654435761u + k * 40503u) % 3 == 0;
}

/* Word i after increments 1..upto: the base's, its top byte changed by
 * the number of the last increment that rewrote it. */
static uint64_t word_upto(size_t i, unsigned upto)
{
	for (unsigned k = upto; k > 0; k--)
		if (rewrites(k, i / 512))
			return base_word(i) ^ (uint64_t)k << 56;
	return base_word(i);
}

static uint64_t word(size_t i)
{
	return word_upto(i, increments);
}

static int check_words(size_t from, size_t to, size_t skip_lo, size_t skip_hi)
{
	for (size_t i = from; i < to; i++) {
		if (i >= skip_lo && i < skip_hi)
			continue;
		if (block[i] != word(i)) {
			fprintf(stderr, "lazy-prog: word %zu (page %zu) is %#llx, not %#llx\n", i,
				i * 8 / 4096, (unsigned long long)block[i],
				(unsigned long long)word(i));
			return 1;
		}
	}
	return 0;
}

static int resident(const void *p)
{
	unsigned char v = 0;
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
	return mincore((void *)a, 4096, &v) == 0 && (v & 1);
}

static int act(ckpt_t *c, const char *what)
{
	/* In pages of the block, from its first whole page (malloc's block
	 * starts after glibc's header). */
	size_t ps = 4096, pw = ps / 8, skip = (ps - ((uintptr_t)block & (ps - 1))) % ps / 8;
	size_t pages = (words - skip) / pw;
	uint64_t *last = block + skip + (pages - 1) * pw;
	if (!strcmp(what, "kill")) {
		fflush(NULL);
		raise(SIGKILL);
	}
	if (!strcmp(what, "sum"))
		return check_words(0, words, 0, 0);
	if (!strcmp(what, "touch")) {
		/* A word of every page read, for timing a whole run. */
		uint64_t x = 0;
		for (size_t i = 0; i < words; i += pw)
			x += block[i];
		printf("touched %llx\n", (unsigned long long)x);
		return x == 0;
	}
	if (!strcmp(what, "read")) {
		int p[2];
		char msg[100];
		memset(msg, 'Z', sizeof msg);
		if (pipe(p) || write(p[1], msg, sizeof msg) != (ssize_t)sizeof msg)
			return perror("lazy-prog: pipe"), 1;
		char *at = (char *)last + 1000;
		ssize_t n = read(p[0], at, sizeof msg);
		if (n != (ssize_t)sizeof msg) {
			fprintf(stderr, "lazy-prog: read into the block returned %zd\n", n);
			return 1;
		}
		if (memcmp(at, msg, sizeof msg)) {
			fprintf(stderr, "lazy-prog: the bytes read are not there\n");
			return 1;
		}
		size_t lo = (size_t)(at - (char *)block) / 8, hi = (size_t)(at + sizeof msg - (char *)block + 7) / 8;
		/* The words the read covered in part keep their other bytes. */
		for (size_t i = lo; i < hi; i++) {
			uint64_t want = word(i), got = block[i];
			for (unsigned b = 0; b < 8; b++) {
				uintptr_t byte = (uintptr_t)&block[i] + b;
				if (byte >= (uintptr_t)at && byte < (uintptr_t)at + sizeof msg)
					continue;
				if (((got >> (8 * b)) & 0xff) != ((want >> (8 * b)) & 0xff)) {
					fprintf(stderr, "lazy-prog: byte %u of word %zu changed\n", b, i);
					return 1;
				}
			}
		}
		return check_words(0, words, lo, hi);
	}
	if (!strcmp(what, "discard")) {
		uint64_t *d = block + skip + (pages - 4) * pw;
		if (madvise(d, 4 * ps, MADV_DONTNEED))
			return fprintf(stderr, "lazy-prog: madvise %p: %s\n", (void *)d,
				       strerror(errno)),
			       1;
		for (size_t i = 0; i < 4 * pw; i++)
			if (d[i]) {
				fprintf(stderr, "lazy-prog: word %zu of a discarded page is %#llx\n", i,
					(unsigned long long)d[i]);
				return 1;
			}
		return check_words(0, words, (size_t)(d - block), (size_t)(d - block) + 4 * pw);
	}
	if (!strcmp(what, "commit")) {
		for (size_t k = 0; k < 5; k++)
			block[k * (pages / 5) * pw] ^= 1;
		int rc = ckpt_commit(c, NULL);
		if (rc < 0) {
			fprintf(stderr, "lazy-prog: ckpt_commit: %s (%s)\n", ckpt_strerror(rc),
				ckpt_last_error());
			return 1;
		}
		ckpt_stats st;
		ckpt_stats(c, &st);
		printf("commit-pages %llu\n", (unsigned long long)st.commit_pages);
		for (size_t k = 0; k < 5; k++)
			block[k * (pages / 5) * pw] ^= 1;
		return check_words(0, words, 0, 0);
	}
	if (!strcmp(what, "fork")) {
		fflush(NULL);
		pid_t pid = fork();
		if (pid == 0)
			_exit(check_words(0, words, 0, 0));
		int st;
		if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "lazy-prog: the child found the block wrong\n");
			return 1;
		}
		return check_words(0, words, 0, 0);
	}
	if (!strcmp(what, "realloc")) {
		uint64_t *moved = realloc(block, words * 8 + ((size_t)64 << 20));
		if (!moved)
			return perror("lazy-prog: realloc"), 1;
		printf("moved %d\n", moved != block);
		block = moved;
		return check_words(0, words, 0, 0);
	}
	fprintf(stderr, "lazy-prog: unknown action %s\n", what);
	return 2;
}

int main(int argc, char **argv)
{
	const char *dir = NULL;
	size_t mib = 64;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--ctl") && i + 1 < argc)
			ctl = argv[++i];
		else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--increments") && i + 1 < argc)
			increments = (unsigned)strtoul(argv[++i], NULL, 10);
		else
			return fprintf(stderr, "usage: lazy-prog --dir DIR --ctl FILE [--mib N] "
					       "[--seed S] [--increments K]\n"),
			       2;
	}
	if (!dir || !ctl || !mib)
		return fprintf(stderr, "lazy-prog: --dir, --ctl and a size are needed\n"), 2;
	const char *lz = getenv("CKPT_TEST_LAZY");
	unsigned flags = CKPT_F_RESUME | (lz && lz[0] == '1' ? CKPT_F_LAZY : 0);
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &(ckpt_options){.flags = flags});
	if (rc < 0) {
		fprintf(stderr, "lazy-prog: ckpt_open: %s (%s): %s\n", ckpt_strerror(rc),
			ckpt_err_name(rc), ckpt_last_error());
		return 3;
	}
	words = (mib << 20) / 8;
	block = malloc(words * 8);
	if (!block)
		return perror("lazy-prog: malloc"), 1;
	for (size_t i = 0; i < words; i++)
		block[i] = base_word(i);
	if ((rc = ckpt_begin(c)) < 0 || (rc = ckpt_commit(c, NULL)) < 0) {
		fprintf(stderr, "lazy-prog: %s (%s)\n", ckpt_strerror(rc), ckpt_last_error());
		return 1;
	}
	for (unsigned k = 1; k <= increments && rc != CKPT_RESUMED; k++) {
		for (size_t i = 0; i < words; i++)
			if (rewrites(k, i / 512))
				block[i] = word_upto(i, k);
		if ((rc = ckpt_commit(c, NULL)) < 0) {
			fprintf(stderr, "lazy-prog: increment %u: %s (%s)\n", k, ckpt_strerror(rc),
				ckpt_last_error());
			return 1;
		}
	}
	if (rc == CKPT_RESUMED) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int filling = !resident(block + words - 1);
		printf("resumed-at %lld\nlazy-fill %d\n",
		       (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec, filling);
		char what[32] = "";
		FILE *f = fopen(ctl, "r");
		if (!f || !fgets(what, sizeof what, f))
			return fprintf(stderr, "lazy-prog: cannot read %s\n", ctl), 2;
		fclose(f);
		what[strcspn(what, "\n")] = '\0';
		rc = act(c, what);
		if (!rc)
			printf("check ok\n");
		ckpt_close(c);
		return rc;
	}
	printf("committed\n");
	fflush(NULL);
	raise(SIGKILL);
	return 1;
}

/*
 * test-kwrite.c - system calls that write into tracked memory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The kernel does not fault on a write-protected page: without ckpt's
 * interposers these calls fail with EFAULT, return short, or drop data.
 * Each test puts the destination in tracked memory, checks the call's result
 * and data, and checks the pages the kernel wrote are reported.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define FILE_PAGES 8

static char path[64];
static struct dset s;

/* A file of FILE_PAGES pages, each page filled with its own letter. */
static void make_file(void)
{
	snprintf(path, sizeof path, "/tmp/ckpt-kw-XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	char *page = malloc(pagesz());
	for (int i = 0; i < FILE_PAGES; i++) {
		memset(page, 'a' + i, pagesz());
		cr_assert_eq(write(fd, page, pagesz()), (ssize_t)pagesz());
	}
	free(page);
	close(fd);
	dset_collect(NULL, &s);
}

static void remove_file(void)
{
	unlink(path);
}

static void expect_file_data(const char *buf, size_t npages)
{
	for (size_t i = 0; i < npages; i++)
		cr_expect_eq(buf[i * pagesz() + 5], 'a' + (int)i, "page %zu of data", i);
}

TestSuite(kwrite, .init = make_file, .fini = remove_file);

Test(kwrite, read_into_protected_pages)
{
	char *buf = map_anon(FILE_PAGES, 0);
	int fd = open(path, O_RDONLY);
	ckpt_t *c = begin_tracking(0);
	ssize_t n = read(fd, buf, FILE_PAGES * pagesz());
	cr_expect_eq(n, (ssize_t)(FILE_PAGES * pagesz()), "read returned %zd (%s)", n,
		     n < 0 ? strerror(errno) : "short");
	expect_file_data(buf, FILE_PAGES);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, buf, FILE_PAGES), FILE_PAGES);
	ckpt_close(c);
	close(fd);
}

Test(kwrite, read_is_not_short_when_only_later_pages_are_protected)
{
	/* The first page is dirty (writable) already, the rest protected: the
	 * kernel would copy one page and return a short count. */
	char *buf = map_anon(FILE_PAGES, 0);
	int fd = open(path, O_RDONLY);
	ckpt_t *c = begin_tracking(0);
	buf[0] = 1;
	ssize_t n = pread(fd, buf, FILE_PAGES * pagesz(), 0);
	cr_expect_eq(n, (ssize_t)(FILE_PAGES * pagesz()), "pread returned %zd", n);
	expect_file_data(buf, FILE_PAGES);
	ckpt_close(c);
	close(fd);
}

Test(kwrite, readv_and_preadv)
{
	char *a = map_anon(2, 0), *b = map_anon(2, 0);
	int fd = open(path, O_RDONLY);
	ckpt_t *c = begin_tracking(0);
	struct iovec iov[2] = {{a, 2 * pagesz()}, {b, 2 * pagesz()}};
	cr_expect_eq(readv(fd, iov, 2), (ssize_t)(4 * pagesz()));
	cr_expect_eq(a[pagesz() + 1], 'b');
	cr_expect_eq(b[1], 'c');
	cr_expect_eq(preadv(fd, iov, 2, 4 * (off_t)pagesz()), (ssize_t)(4 * pagesz()));
	cr_expect_eq(b[pagesz() + 1], 'h');
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, b, 2), 2);
	ckpt_close(c);
	close(fd);
}

Test(kwrite, fread_small_and_large)
{
	char *buf = map_anon(FILE_PAGES, 0);
	/* Opened during tracking: glibc would allocate the stream buffer and
	 * read into it in one go. */
	ckpt_t *c = begin_tracking(0);
	FILE *f = fopen(path, "r");
	cr_assert(f);
	cr_expect_eq(fread(buf, 1, 10, f), 10, "small fread through the stream buffer");
	cr_expect_eq(buf[9], 'a');
	cr_expect_eq(fseek(f, 0, SEEK_SET), 0);
	cr_expect_eq(fread(buf, pagesz(), FILE_PAGES, f), FILE_PAGES, "large fread");
	expect_file_data(buf, FILE_PAGES);
	cr_expect(!ferror(f));
	fclose(f);
	ckpt_close(c);
}

Test(kwrite, stream_opened_and_read_before_tracking)
{
	/* Its buffer already exists and is protected at begin. */
	FILE *f = fopen(path, "r");
	cr_assert(f);
	cr_assert_eq(fgetc(f), 'a');
	ckpt_t *c = begin_tracking(0);
	cr_expect_eq(fseek(f, 3 * (long)pagesz(), SEEK_SET), 0);
	cr_expect_eq(fgetc(f), 'd');
	char line[64];
	cr_expect(fgets(line, sizeof line, f));
	cr_expect_eq(line[0], 'd');
	cr_expect(!ferror(f), "stream error: the kernel could not write the buffer");
	fclose(f);
	ckpt_close(c);
}

static char numbers_path[64];

Test(kwrite, fscanf_and_getline)
{
	snprintf(numbers_path, sizeof numbers_path, "/tmp/ckpt-num-XXXXXX");
	int fd = mkstemp(numbers_path);
	cr_assert_geq(fd, 0);
	for (int i = 0; i < 2000; i++)
		dprintf(fd, "%d %d\n", i, i * i);
	close(fd);
	/* The stream's buffer exists (and is protected) before tracking. */
	FILE *f = fopen(numbers_path, "r");
	cr_assert_eq(fgetc(f), '0');
	rewind(f);
	long *sum = map_anon(1, 0);
	ckpt_t *c = begin_tracking(0);
	int a, b, lines = 0;
	while (fscanf(f, "%d %d", &a, &b) == 2) {
		*sum += b;
		lines++;
	}
	cr_expect_eq(lines, 2000, "fscanf stopped early: %s", ferror(f) ? "stream error" : "EOF");
	cr_expect_eq(*sum, 1999L * 2000 * 3999 / 6);
	rewind(f);
	char *line = NULL;
	size_t cap = 0;
	int n = 0;
	while (getline(&line, &cap, f) > 0)
		n++;
	cr_expect_eq(n, 2000);
	free(line);
	fclose(f);
	ckpt_close(c);
	unlink(numbers_path);
}

Test(kwrite, stat_family)
{
	/* Destinations on fresh protected pages, never written before. */
	char *p = map_anon(4, 0);
	struct stat *a = (struct stat *)p, *b = (struct stat *)(p + pagesz()),
		    *l = (struct stat *)(p + 2 * pagesz()), *at = (struct stat *)(p + 3 * pagesz());
	int fd = open(path, O_RDONLY);
	ckpt_t *c = begin_tracking(0);
	cr_expect_eq(stat(path, a), 0, "stat: %s", strerror(errno));
	cr_expect_eq(a->st_size, (off_t)(FILE_PAGES * pagesz()));
	cr_expect_eq(fstat(fd, b), 0, "fstat: %s", strerror(errno));
	cr_expect_eq(b->st_ino, a->st_ino);
	cr_expect_eq(lstat(path, l), 0, "lstat: %s", strerror(errno));
	cr_expect_eq(fstatat(AT_FDCWD, path, at, 0), 0, "fstatat: %s", strerror(errno));
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, p, 4), 4);
	close(fd);
	ckpt_close(c);
}

Test(kwrite, pipe_and_socketpair)
{
	char *p = map_anon(3, 0);
	int *fds = (int *)p, *sv = (int *)(p + pagesz());
	ckpt_t *c = begin_tracking(0);
	cr_assert_eq(pipe(fds), 0, "pipe: %s", strerror(errno));
	cr_expect_eq(write(fds[1], "x", 1), 1);
	cr_expect_eq(read(fds[0], p + 2 * pagesz(), 1), 1);
	cr_expect_eq(p[2 * pagesz()], 'x');
	cr_expect_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0, "socketpair: %s",
		     strerror(errno));
	ckpt_close(c);
}

Test(kwrite, a_datagram_is_received_whole)
{
	/* Retrying a datagram recv after EFAULT would lose it: it must work
	 * the first time. */
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
	char *buf = map_anon(3, 0);
	char *msg = malloc(2 * pagesz());
	memset(msg, 'q', 2 * pagesz());
	ckpt_t *c = begin_tracking(0);
	cr_assert_eq(send(sv[0], msg, 2 * pagesz(), 0), (ssize_t)(2 * pagesz()));
	ssize_t n = recv(sv[1], buf + 100, 2 * pagesz(), 0);
	cr_expect_eq(n, (ssize_t)(2 * pagesz()), "recv: %zd (%s)", n, strerror(errno));
	cr_expect_eq(buf[100 + 2 * pagesz() - 1], 'q');
	cr_assert_eq(send(sv[0], "hello", 5, 0), 5);
	struct iovec iov = {buf + 2 * pagesz() + 8, 16};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	cr_expect_eq(recvmsg(sv[1], &mh, 0), 5);
	cr_expect_eq(memcmp(buf + 2 * pagesz() + 8, "hello", 5), 0);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, buf, 3), 3);
	ckpt_close(c);
	free(msg);
}

Test(kwrite, process_and_time_queries)
{
	char *p = map_anon(4, 0);
	ckpt_t *c = begin_tracking(0);
	cr_expect(getcwd(p, pagesz()), "getcwd: %s", strerror(errno));
	char *dup = getcwd(NULL, 0);
	cr_expect(dup && !strcmp(dup, p));
	free(dup);
	/* CPU-time clocks are not served by the vDSO: a real system call. */
	cr_expect_eq(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, (struct timespec *)(p + pagesz())),
		     0, "clock_gettime: %s", strerror(errno));
	cr_expect_eq(getrusage(RUSAGE_SELF, (struct rusage *)(p + 2 * pagesz())), 0,
		     "getrusage: %s", strerror(errno));
	struct utsname *un = (struct utsname *)(p + 3 * pagesz());
	cr_expect_eq(uname(un), 0, "uname: %s", strerror(errno));
	cr_expect_str_eq(un->sysname, "Linux");
	ckpt_close(c);
}

Test(kwrite, readdir_of_a_directory_opened_before_begin)
{
	/* glibc's readdir writes the DIR's lock, next to the start of its
	 * buffer, before reading into it, so this keeps working even without
	 * help; ckpt also makes the rest of the buffer writable, which lets one
	 * getdents call fill it. */
	DIR *d = opendir("/proc/self/task");
	cr_assert(d);
	ckpt_t *c = begin_tracking(0);
	int n = 0;
	struct dirent *e;
	errno = 0;
	while ((e = readdir(d)))
		n++;
	cr_expect_eq(errno, 0, "readdir: %s", strerror(errno));
	cr_expect_geq(n, 3, ". .. and one thread");
	closedir(d);
	ckpt_close(c);
}

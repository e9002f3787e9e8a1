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
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

/* ---- kernel writes in flight while another thread commits --------------------
 * A thread blocks in a call that will write into tracked memory; the main
 * thread commits, which protects the pages it stores again; then the data
 * arrives.  The call must succeed with the data (a datagram lost to EFAULT
 * cannot be had again), the pages must count as dirty, and the next commit
 * must store them. */

enum blocked_call { CALL_READ, CALL_READV, CALL_RECV, CALL_RECVFROM, CALL_RECVMSG, CALL_RECVMMSG };

/* recvmmsg: datagrams, each received into two buffers and with its address. */
#define NMSG 8

struct blocked {
	enum blocked_call call;
	int fd;
	char *buf;   /* tracked */
	size_t len;  /* bytes expected */
	struct sockaddr_storage *from; /* tracked (recvfrom, recvmsg) */
	struct msghdr *mh;             /* tracked (recvmsg) */
	struct iovec *iov;             /* tracked (readv, recvmsg, recvmmsg) */
	struct mmsghdr *mm;            /* tracked (recvmmsg) */
	struct sockaddr_in *names;     /* tracked (recvmmsg) */
	pid_t tid;
	volatile int started;
	ssize_t n;
	int err;
};

static void *blocked_call(void *arg)
{
	struct blocked *b = arg;
	b->tid = (pid_t)syscall(SYS_gettid);
	__atomic_store_n(&b->started, 1, __ATOMIC_RELEASE);
	socklen_t fl = sizeof *b->from;
	switch (b->call) {
	case CALL_READ:
		b->n = read(b->fd, b->buf, b->len);
		break;
	case CALL_READV:
		b->iov[0] = (struct iovec){b->buf, b->len / 2};
		b->iov[1] = (struct iovec){b->buf + pagesz() + b->len / 2, b->len - b->len / 2};
		b->n = readv(b->fd, b->iov, 2);
		break;
	case CALL_RECV:
		b->n = recv(b->fd, b->buf, b->len, MSG_WAITALL);
		break;
	case CALL_RECVFROM:
		b->n = recvfrom(b->fd, b->buf, b->len + 100, 0, (struct sockaddr *)b->from, &fl);
		break;
	case CALL_RECVMSG:
		b->iov[0] = (struct iovec){b->buf, b->len + 100};
		*b->mh = (struct msghdr){.msg_name = b->from, .msg_namelen = sizeof *b->from,
					 .msg_iov = b->iov, .msg_iovlen = 1};
		b->n = recvmsg(b->fd, b->mh, 0);
		break;
	case CALL_RECVMMSG: {
		/* More ranges than ckpt keeps apart per call. */
		size_t seg = b->len / NMSG;
		for (int i = 0; i < NMSG; i++) {
			b->iov[2 * i] = (struct iovec){b->buf + (size_t)i * seg, seg / 2};
			b->iov[2 * i + 1] =
				(struct iovec){b->buf + (size_t)i * seg + seg / 2, seg - seg / 2};
			b->mm[i] = (struct mmsghdr){
				.msg_hdr = {.msg_name = &b->names[i], .msg_namelen = sizeof b->names[i],
					    .msg_iov = &b->iov[2 * i], .msg_iovlen = 2}};
		}
		int got = recvmmsg(b->fd, b->mm, NMSG, 0, NULL);
		b->n = got < 0 ? -1 : 0;
		for (int i = 0; i < got; i++)
			b->n += b->mm[i].msg_len;
		break;
	}
	}
	b->err = errno;
	return NULL;
}

/* Waits until thread tid sleeps inside system call nr (or one of nr2). */
static void wait_in_syscall(pid_t tid, long nr, long nr2)
{
	char file[64], line[256];
	snprintf(file, sizeof file, "/proc/self/task/%d/syscall", (int)tid);
	for (int i = 0; i < 10000; i++) {
		int fd = open(file, O_RDONLY);
		cr_assert_geq(fd, 0);
		ssize_t n = read(fd, line, sizeof line - 1);
		close(fd);
		line[n > 0 ? n : 0] = '\0';
		char *end;
		long cur = strtol(line, &end, 10);
		if (end != line && (cur == nr || cur == nr2))
			return;
		usleep(1000);
	}
	cr_assert_fail("the thread never blocked in system call %ld: %s", nr, line);
}

static char chain_tmp[64];

static ckpt_t *begin_chain(void)
{
	snprintf(chain_tmp, sizeof chain_tmp, "/tmp/ckpt-kwc-XXXXXX");
	cr_assert(mkdtemp(chain_tmp));
	char dir[96];
	snprintf(dir, sizeof dir, "%s/chain", chain_tmp);
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_AUTO; /* CKPT_BACKEND in the environment decides */
	int rc = ckpt_open(&c, dir, &o);
	cr_assert_eq(rc, 0, "ckpt_open: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	rc = ckpt_begin(c);
	cr_assert_eq(rc, 0, "ckpt_begin: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	return c;
}

static void end_chain(ckpt_t *c)
{
	ckpt_close(c);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", chain_tmp);
	(void)!system(cmd);
}

/* Checks that snapshot id holds len bytes of `want` at addr. */
static void expect_stored(uint64_t id, const void *addr, const char *want, size_t len)
{
	char dir[96];
	snprintf(dir, sizeof dir, "%s/chain", chain_tmp);
	ckpt_chain *ch;
	int rc = ckpt_chain_open(&ch, dir);
	cr_assert_eq(rc, 0, "ckpt_chain_open: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	char *got = malloc(len);
	rc = ckpt_chain_read(ch, id, (uintptr_t)addr, got, len);
	cr_expect_eq(rc, 0, "ckpt_chain_read: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	cr_expect(rc || memcmp(got, want, len) == 0,
		  "snapshot %llu does not hold what the call received (%.8s... against %.8s...)",
		  (unsigned long long)id, got, want);
	free(got);
	ckpt_chain_close(ch);
}

enum buf_kind {
	BUF_TRACKED,  /* mapped before begin: tracked since */
	BUF_FRESH,    /* mapped after begin: the commit protects it first */
	BUF_MPROTECT, /* tracked, and the program mprotects it (read-write)
	               * while the call waits, instead of the commit */
};

/* The whole scenario: b->fd is read by a thread; send(data) makes it
 * return. */
static void blocked_across_commit(struct blocked *b, enum buf_kind kind, long nr, long nr2,
				  void (*send_data)(const char *data, size_t len))
{
	size_t ps = pagesz();
	char *area = kind == BUF_FRESH ? NULL : map_anon(4, 0);
	ckpt_t *c = begin_chain();
	if (kind == BUF_FRESH)
		area = map_anon(4, 0);
	/* The buffer at an offset, the addresses and headers on a page of their
	 * own, all of it in tracked memory. */
	b->buf = area + 100;
	char *meta = area + 3 * ps;
	b->from = (struct sockaddr_storage *)meta;
	b->mh = (struct msghdr *)(meta + 512);
	b->iov = (struct iovec *)(meta + 1024);
	b->mm = (struct mmsghdr *)(meta + 2048);
	b->names = (struct sockaddr_in *)(meta + 3072);
	char *data = malloc(b->len);
	for (size_t i = 0; i < b->len; i++)
		data[i] = (char)('A' + i % 23);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, blocked_call, b), 0);
	while (!__atomic_load_n(&b->started, __ATOMIC_ACQUIRE))
		sched_yield();
	wait_in_syscall(b->tid, nr, nr2);
	uint64_t id = 0;
	int rc;
	if (kind == BUF_MPROTECT) {
		cr_assert_eq(mprotect(area, 4 * ps, PROT_READ | PROT_WRITE), 0, "mprotect: %s",
			     strerror(errno));
	} else {
		rc = ckpt_commit(c, &id);
		cr_assert_eq(rc, 0, "ckpt_commit: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	}
	send_data(data, b->len);
	pthread_join(th, NULL);
	cr_assert_eq(b->n, (ssize_t)b->len, "the blocked call returned %zd (%s)", b->n,
		     b->n < 0 ? strerror(b->err) : "short");
	const char *got = b->buf;
	if (b->call == CALL_READV) {
		cr_expect_eq(memcmp(got, data, b->len / 2), 0, "readv: first buffer");
		got = b->buf + ps + b->len / 2;
		cr_expect_eq(memcmp(got, data + b->len / 2, b->len - b->len / 2), 0,
			     "readv: second buffer");
	} else {
		cr_expect_eq(memcmp(got, data, b->len), 0, "the data received differ");
	}
	DSET(d);
	cr_assert_eq(dset_collect(c, &d), 0);
	cr_expect(dset_has(&d, b->buf), "the page the kernel wrote is not dirty");
	cr_expect(dset_has(&d, b->buf + b->len - 1), "the last page the kernel wrote is not dirty");
	uint64_t id2 = 0;
	rc = ckpt_commit(c, &id2);
	cr_assert_eq(rc, 0, "ckpt_commit: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	cr_assert_eq(id2, id + 1);
	if (b->call == CALL_READV) {
		expect_stored(id2, b->buf, data, b->len / 2);
		expect_stored(id2, b->buf + ps + b->len / 2, data + b->len / 2,
			      b->len - b->len / 2);
	} else {
		expect_stored(id2, b->buf, data, b->len);
	}
	end_chain(c);
	free(data);
}

static int peer_fd = -1;

static void write_to_peer(const char *data, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(peer_fd, data + done, len - done);
		cr_assert_gt(n, 0, "write: %s", strerror(errno));
		done += (size_t)n;
	}
}

static struct sockaddr_in udp_to;

static void send_datagram(const char *data, size_t len)
{
	cr_assert_eq(sendto(peer_fd, data, len, 0, (struct sockaddr *)&udp_to, sizeof udp_to),
		     (ssize_t)len, "sendto: %s", strerror(errno));
}

Test(kwrite, a_read_blocked_on_a_pipe_across_a_commit, .timeout = 60)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	peer_fd = p[1];
	struct blocked b = {.call = CALL_READ, .fd = p[0], .len = 2 * pagesz()};
	blocked_across_commit(&b, BUF_TRACKED, SYS_read, SYS_read, write_to_peer);
}

Test(kwrite, a_readv_blocked_on_a_pipe_across_a_commit, .timeout = 60)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	peer_fd = p[1];
	struct blocked b = {.call = CALL_READV, .fd = p[0], .len = 3000};
	blocked_across_commit(&b, BUF_TRACKED, SYS_readv, SYS_readv, write_to_peer);
}

Test(kwrite, a_read_into_memory_new_since_begin_across_a_commit, .timeout = 60)
{
	/* The commit protects the buffer for the first time while the read
	 * waits. */
	int p[2];
	cr_assert_eq(pipe(p), 0);
	peer_fd = p[1];
	struct blocked b = {.call = CALL_READ, .fd = p[0], .len = 2 * pagesz()};
	blocked_across_commit(&b, BUF_FRESH, SYS_read, SYS_read, write_to_peer);
}

Test(kwrite, a_recv_blocked_on_a_socketpair_across_a_commit, .timeout = 60)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	peer_fd = sv[0];
	struct blocked b = {.call = CALL_RECV, .fd = sv[1], .len = 2 * pagesz()};
	/* recv is recvfrom to the kernel. */
	blocked_across_commit(&b, BUF_TRACKED, SYS_recvfrom, SYS_recvmsg, write_to_peer);
}

static int udp_pair(void)
{
	int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
	cr_assert(rx >= 0 && tx >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(rx, (struct sockaddr *)&a, sizeof a), 0, "bind: %s", strerror(errno));
	socklen_t al = sizeof udp_to;
	cr_assert_eq(getsockname(rx, (struct sockaddr *)&udp_to, &al), 0);
	peer_fd = tx;
	return rx;
}

Test(kwrite, a_datagram_arriving_while_a_commit_protects_the_buffer, .timeout = 60)
{
	struct blocked b = {.call = CALL_RECVFROM, .fd = udp_pair(), .len = 1200};
	blocked_across_commit(&b, BUF_TRACKED, SYS_recvfrom, SYS_recvfrom, send_datagram);
	cr_expect_eq(b.from->ss_family, AF_INET, "the sender's address was not written");
}

Test(kwrite, a_recvmsg_with_its_header_in_tracked_memory_across_a_commit, .timeout = 60)
{
	struct blocked b = {.call = CALL_RECVMSG, .fd = udp_pair(), .len = 1500};
	blocked_across_commit(&b, BUF_TRACKED, SYS_recvmsg, SYS_recvmsg, send_datagram);
	cr_expect_eq(b.mh->msg_namelen, (socklen_t)sizeof(struct sockaddr_in));
}

static void send_datagrams(const char *data, size_t len)
{
	size_t seg = len / NMSG;
	for (int i = 0; i < NMSG; i++)
		send_datagram(data + (size_t)i * seg, seg);
}

Test(kwrite, a_recvmmsg_of_many_buffers_across_a_commit, .timeout = 60)
{
	struct blocked b = {.call = CALL_RECVMMSG, .fd = udp_pair(), .len = NMSG * 700};
	blocked_across_commit(&b, BUF_TRACKED, SYS_recvmmsg, SYS_recvmmsg, send_datagrams);
	for (int i = 0; i < NMSG; i++)
		cr_expect_eq(b.names[i].sin_family, AF_INET, "address of datagram %d", i);
}

Test(kwrite, a_read_whose_buffer_the_program_mprotects_while_it_waits, .timeout = 60)
{
	/* Read-write as before: the call must keep its buffer. */
	int p[2];
	cr_assert_eq(pipe(p), 0);
	peer_fd = p[1];
	struct blocked b = {.call = CALL_READ, .fd = p[0], .len = 2 * pagesz()};
	blocked_across_commit(&b, BUF_MPROTECT, SYS_read, SYS_read, write_to_peer);
}

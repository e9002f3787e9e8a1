/*
 * test-pipes.c - the program's own pipes in the process record: which
 * are recorded, that reading their content leaves them as they were, the
 * entry a resume checks, and making them again (src/pipes.c).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The end-to-end check, a program killed and resumed with its pipes, is
 * tests/resume.sh (case r).
 */
#include "ckpt.h"
#include "pipes.h"
#include "proc.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIG 100000 /* more than a pipe holds by default */
#define CAP (128 << 10)

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 31 + i / 251);
}

static uint64_t ino_of(int fd)
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0, "fstat %d: %s", fd, strerror(errno));
	return (uint64_t)st.st_ino;
}

static int nread(int fd)
{
	int n = -1;
	cr_assert_eq(ioctl(fd, FIONREAD, &n), 0, "FIONREAD %d: %s", fd, strerror(errno));
	return n;
}

static void write_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		cr_assert_gt(w, 0, "write %d: %s", fd, strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

/* Reads n bytes, failing (not hanging) when they do not come. */
static void read_all(int fd, unsigned char *p, size_t n)
{
	while (n) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		cr_assert_eq(poll(&pf, 1, 5000), 1,
			     "descriptor %d: nothing to read, %zu bytes to go", fd, n);
		ssize_t r = read(fd, p, n);
		cr_assert_gt(r, 0, "read %d: %zd (%s) with %zu bytes to go", fd, r, strerror(errno),
			     n);
		p += r;
		n -= (size_t)r;
	}
}

/* The PIPE entry of the pipe with this inode, copied; NULL if none. */
struct found {
	uint64_t ino;
	unsigned char *ent;
	size_t len;
	int count;
};

static int find_pipe(uint32_t type, const unsigned char *p, size_t len, void *arg)
{
	struct found *f = arg;
	struct ckpt__ppipe h;
	if (type != CKPT__PE_PIPE)
		return 0;
	cr_assert_geq(len, sizeof h, "a PIPE entry of %zu bytes", len);
	memcpy(&h, p, sizeof h);
	if (h.ino != f->ino)
		return 0;
	f->count++;
	f->ent = malloc(len);
	memcpy(f->ent, p, len);
	f->len = len;
	return 0;
}

static struct found record(uint64_t ino, const struct ckpt__pown *own)
{
	struct ckpt__pbuf b = {0};
	int rc = ckpt__pipes_record(&b, own);
	cr_assert_eq(rc, 0, "ckpt__pipes_record: %d (%s)", rc, ckpt_last_error());
	struct found f = {.ino = ino};
	if (b.n) /* a record with no entry at all is not even begun */
		cr_assert_eq(ckpt__proc_walk(b.p, b.n, find_pipe, &f), 0, "%s", ckpt_last_error());
	ckpt__pbuf_free(&b);
	cr_assert_leq(f.count, 1, "pipe:[%llu] recorded %d times", (unsigned long long)ino,
		      f.count);
	return f;
}

static const struct ckpt__ppipe_fd *entry_fds(const struct found *f, struct ckpt__ppipe *h)
{
	memcpy(h, f->ent, sizeof *h);
	cr_assert_eq(f->len, sizeof *h + h->nfds * sizeof(struct ckpt__ppipe_fd) + h->len,
		     "entry of %zu bytes for %u descriptors and %u bytes", f->len, h->nfds, h->len);
	return (const struct ckpt__ppipe_fd *)(f->ent + sizeof *h);
}

static const struct ckpt__ppipe_fd *fd_in(const struct ckpt__ppipe_fd *fds, uint32_t n, int fd)
{
	for (uint32_t i = 0; i < n; i++)
		if (fds[i].fd == fd)
			return &fds[i];
	cr_assert_fail("descriptor %d is not in the entry", fd);
	return NULL;
}

/* A pipe of CAP bytes holding the pattern from offset 1000 to BIG (the
 * first buffer partly read), its read end also at a second number
 * (close-on-exec), its write end non-blocking. */
struct setup {
	int r, w, r2;
	uint64_t ino;
};

static struct setup make_setup(void)
{
	struct setup s;
	int p[2];
	cr_assert_eq(pipe(p), 0, "pipe: %s", strerror(errno));
	s.r = p[0];
	s.w = p[1];
	cr_assert_eq(fcntl(s.w, F_SETPIPE_SZ, CAP), CAP, "F_SETPIPE_SZ: %s", strerror(errno));
	static unsigned char buf[BIG];
	for (size_t i = 0; i < BIG; i++)
		buf[i] = pattern(i);
	write_all(s.w, buf, BIG);
	read_all(s.r, buf, 1000);
	s.r2 = fcntl(s.r, F_DUPFD_CLOEXEC, 20);
	cr_assert_geq(s.r2, 20, "F_DUPFD_CLOEXEC: %s", strerror(errno));
	cr_assert_eq(fcntl(s.w, F_SETFL, O_NONBLOCK), 0, "%s", strerror(errno));
	s.ino = ino_of(s.r);
	return s;
}

Test(pipes, the_content_is_recorded_and_the_pipe_left_as_it_was)
{
	struct setup s = make_setup();
	struct found f = record(s.ino, NULL);
	cr_assert_not_null(f.ent, "pipe:[%llu] was not recorded", (unsigned long long)s.ino);
	struct ckpt__ppipe h;
	const struct ckpt__ppipe_fd *fds = entry_fds(&f, &h);
	cr_expect_eq(h.capacity, CAP, "capacity %u", h.capacity);
	cr_expect_eq(h.nfds, 3, "%u descriptors", h.nfds);
	cr_assert_eq(h.len, BIG - 1000, "%u bytes of content", h.len);
	const unsigned char *content = (const unsigned char *)(fds + h.nfds);
	for (size_t i = 0; i < h.len; i++)
		cr_assert_eq(content[i], pattern(1000 + i), "content byte %zu: %#x, not %#x", i,
			     content[i], pattern(1000 + i));
	const struct ckpt__ppipe_fd *r = fd_in(fds, h.nfds, s.r), *w = fd_in(fds, h.nfds, s.w),
				    *r2 = fd_in(fds, h.nfds, s.r2);
	cr_expect_eq(r->end, CKPT__PP_READ);
	cr_expect_eq(r2->end, CKPT__PP_READ);
	cr_expect_eq(w->end, CKPT__PP_WRITE);
	cr_expect_eq(fds[r2->share].fd, fds[r->share].fd,
		     "the dup'd read end shares its "
		     "description: %d, %d",
		     fds[r2->share].fd, fds[r->share].fd);
	cr_expect_neq(fds[w->share].fd, fds[r->share].fd);
	cr_expect(w->flags & O_NONBLOCK, "write end flags %#x", w->flags);
	cr_expect(!(r->flags & O_NONBLOCK), "read end flags %#x", r->flags);
	cr_expect(r2->fdflags & FD_CLOEXEC, "descriptor flags %#x", r2->fdflags);
	cr_expect(!(r->fdflags & FD_CLOEXEC), "descriptor flags %#x", r->fdflags);

	/* tee read it without consuming it: all of it is still there, in
	 * order, and more can be written as before. */
	cr_assert_eq(nread(s.r), BIG - 1000, "the pipe holds %d bytes after the record",
		     nread(s.r));
	static unsigned char back[BIG];
	read_all(s.r2, back, BIG - 1000);
	for (size_t i = 0; i < BIG - 1000; i++)
		cr_assert_eq(back[i], pattern(1000 + i), "byte %zu after the record", i);
	cr_assert_eq(fcntl(s.r, F_GETPIPE_SZ), CAP);
	free(f.ent);
}

Test(pipes, an_empty_pipe_is_recorded_without_content)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	struct found f = record(ino_of(p[0]), NULL);
	cr_assert_not_null(f.ent);
	struct ckpt__ppipe h;
	entry_fds(&f, &h);
	cr_expect_eq(h.len, 0);
	cr_expect_eq(h.nfds, 2);
	free(f.ent);
}

Test(pipes, a_pipe_to_another_process_is_not_recorded)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) { /* holds the write end until killed */
		close(p[0]);
		pause();
		_exit(0);
	}
	close(p[1]);
	struct found f = record(ino_of(p[0]), NULL);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	cr_expect_null(f.ent, "a pipe whose writer is another process was recorded");
	/* The writer gone, the pipe is this process's alone. */
	f = record(ino_of(p[0]), NULL);
	cr_expect_not_null(f.ent, "a pipe with no writer left was not recorded");
	free(f.ent);
}

Test(pipes, a_read_end_whose_writer_closed_keeps_its_content)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	write_all(p[1], (const unsigned char *)"last words", 10);
	close(p[1]);
	struct found f = record(ino_of(p[0]), NULL);
	cr_assert_not_null(f.ent);
	struct ckpt__ppipe h;
	const struct ckpt__ppipe_fd *fds = entry_fds(&f, &h);
	cr_expect_eq(h.nfds, 1);
	cr_expect_eq(fds[0].end, CKPT__PP_READ);
	cr_assert_eq(h.len, 10);
	cr_expect_arr_eq((const char *)(fds + h.nfds), "last words", 10);
	free(f.ent);
}

Test(pipes, ckpts_own_descriptors_are_left_out)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	/* The write end listed as ckpt's: what is left is a reader whose
	 * writer is not the program's. */
	struct ckpt__pown own = {&p[1], 1, -1};
	struct found f = record(ino_of(p[0]), &own);
	cr_expect_null(f.ent, "a pipe half of which is ckpt's was recorded");
}

Test(pipes, a_named_fifo_is_not_recorded)
{
	char dir[] = "/tmp/ckpt-test-pipes.XXXXXX", path[64];
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/fifo", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	int r = open(path, O_RDONLY | O_NONBLOCK), w = open(path, O_WRONLY | O_NONBLOCK);
	cr_assert(r >= 0 && w >= 0);
	uint64_t ino = ino_of(r);
	unlink(path);
	rmdir(dir);
	struct found f = record(ino, NULL);
	cr_expect_null(f.ent, "a named FIFO was recorded");
}

/* ---- making them again ------------------------------------------------------------- */

static void take(struct ckpt__rpipes *s, const struct found *f)
{
	int rc = ckpt__pipes_take(s, f->ent, f->len);
	cr_assert_eq(rc, 0, "ckpt__pipes_take: %d", rc);
}

Test(pipes, made_again_at_the_same_numbers_with_flags_and_content)
{
	struct setup s = make_setup();
	struct found f = record(s.ino, NULL);
	cr_assert_not_null(f.ent);
	/* The old pipe emptied: what the made one holds is the record's. */
	static unsigned char back[BIG];
	read_all(s.r, back, BIG - 1000);
	struct ckpt__rpipes rp = {0};
	take(&rp, &f);
	cr_expect(ckpt__pipes_has_fd(&rp, s.r) && ckpt__pipes_has_fd(&rp, s.w) &&
		  ckpt__pipes_has_fd(&rp, s.r2));
	cr_expect(!ckpt__pipes_has_fd(&rp, 2));
	int rc = ckpt__pipes_make(&rp);
	cr_assert_eq(rc, 0, "ckpt__pipes_make: %s", ckpt_last_error());
	cr_expect_eq(ino_of(s.r), s.ino, "the program's numbers are not touched before placing");
	rc = ckpt__pipes_place(&rp);
	cr_assert_eq(rc, 0, "ckpt__pipes_place: %s", ckpt_last_error());
	uint64_t ino = ino_of(s.r);
	cr_expect_neq(ino, s.ino, "not a new pipe");
	cr_expect_eq(ino_of(s.w), ino);
	cr_expect_eq(ino_of(s.r2), ino);
	cr_expect_eq(fcntl(s.r, F_GETFL) & (O_ACCMODE | O_NONBLOCK), O_RDONLY);
	cr_expect_eq(fcntl(s.w, F_GETFL) & (O_ACCMODE | O_NONBLOCK), O_WRONLY | O_NONBLOCK);
	cr_expect_eq(fcntl(s.r2, F_GETFL) & (O_ACCMODE | O_NONBLOCK), O_RDONLY);
	cr_expect_eq(fcntl(s.r, F_GETFD), 0);
	cr_expect_eq(fcntl(s.w, F_GETFD), 0);
	cr_expect_eq(fcntl(s.r2, F_GETFD), FD_CLOEXEC);
	cr_expect_eq(fcntl(s.r, F_GETPIPE_SZ), CAP);
	/* The two read numbers share their description, as dup'd ones. */
	cr_assert_eq(fcntl(s.r2, F_SETFL, O_NONBLOCK), 0);
	cr_expect(fcntl(s.r, F_GETFL) & O_NONBLOCK, "the read ends do not share a description");
	cr_assert_eq(nread(s.r), BIG - 1000);
	read_all(s.r, back, BIG - 1000);
	for (size_t i = 0; i < BIG - 1000; i++)
		cr_assert_eq(back[i], pattern(1000 + i), "byte %zu of the made pipe", i);
	ckpt__pipes_free(&rp);
	free(f.ent);
}

Test(pipes, a_read_end_made_again_reads_its_content_then_end_of_file)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	write_all(p[1], (const unsigned char *)"last words", 10);
	close(p[1]);
	struct found f = record(ino_of(p[0]), NULL);
	cr_assert_not_null(f.ent);
	char buf[16];
	read_all(p[0], (unsigned char *)buf, 10);
	struct ckpt__rpipes rp = {0};
	take(&rp, &f);
	cr_assert_eq(ckpt__pipes_make(&rp), 0, "%s", ckpt_last_error());
	cr_assert_eq(ckpt__pipes_place(&rp), 0, "%s", ckpt_last_error());
	memset(buf, 0, sizeof buf);
	read_all(p[0], (unsigned char *)buf, 10);
	cr_expect_str_eq(buf, "last words");
	cr_expect_eq(read(p[0], buf, 1), 0, "no end of file after the content");
	ckpt__pipes_free(&rp);
	free(f.ent);
}

Test(pipes, a_write_end_made_again_has_no_reader)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	close(p[0]);
	signal(SIGPIPE, SIG_IGN);
	struct found f = record(ino_of(p[1]), NULL);
	cr_assert_not_null(f.ent, "a write end with no reader left was not recorded");
	struct ckpt__rpipes rp = {0};
	take(&rp, &f);
	cr_assert_eq(ckpt__pipes_make(&rp), 0, "%s", ckpt_last_error());
	cr_assert_eq(ckpt__pipes_place(&rp), 0, "%s", ckpt_last_error());
	cr_expect_neq(ino_of(p[1]), f.ino);
	errno = 0;
	cr_expect_eq(write(p[1], "x", 1), -1);
	cr_expect_eq(errno, EPIPE, "%s", strerror(errno));
	ckpt__pipes_free(&rp);
	free(f.ent);
}

/* The descriptors open in this process. */
static int open_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

Test(pipes, a_failure_to_make_one_closes_the_others_and_names_it)
{
	int p[2], q[2];
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(pipe(q), 0);
	struct found fp = record(ino_of(p[0]), NULL), fq = record(ino_of(q[0]), NULL);
	cr_assert(fp.ent && fq.ent);
	struct ckpt__rpipes rp = {0};
	take(&rp, &fp);
	take(&rp, &fq);
	int before = open_fds();
	/* The second pipe's making fails (CKPT_FAULT counts it as an open). */
	setenv("CKPT_FAULT", "open:2=ENOMEM", 1);
	int rc = ckpt__pipes_make(&rp);
	unsetenv("CKPT_FAULT");
	cr_assert_eq(rc, CKPT_ENOMEM, "ckpt__pipes_make: %d (%s)", rc, ckpt_last_error());
	char name[64];
	snprintf(name, sizeof name, "pipe:[%llu]", (unsigned long long)fq.ino);
	cr_expect(strstr(ckpt_last_error(), name), "the error does not name %s: %s", name,
		  ckpt_last_error());
	cr_expect_eq(open_fds(), before, "the first pipe made was left open");
	cr_expect_eq(ino_of(p[0]), fp.ino, "a program's descriptor changed");
	ckpt__pipes_free(&rp);
	free(fp.ent);
	free(fq.ent);
}

/* ---- what a reader refuses ---------------------------------------------------------- */

static int take_forged(const void *ent, size_t len)
{
	struct ckpt__rpipes rp = {0};
	int rc = ckpt__pipes_take(&rp, ent, len);
	ckpt__pipes_free(&rp);
	return rc;
}

Test(pipes, malformed_entries_are_refused)
{
	struct forged {
		struct ckpt__ppipe h;
		struct ckpt__ppipe_fd f[2];
		char content[8];
	};
	const struct forged good = {
	    .h = {.ino = 7, .capacity = 4096, .nfds = 2, .len = 8},
	    .f = {{.fd = 5, .end = CKPT__PP_READ}, {.fd = 6, .end = CKPT__PP_WRITE, .share = 1}},
	    .content = "abcdefgh",
	};
	struct forged e;
	cr_assert_eq(take_forged(&good, sizeof good), 0, "the good one");
	cr_expect_eq(take_forged(&good, sizeof good.h - 1), CKPT_ECORRUPT, "short of its header");
	cr_expect_eq(take_forged(&good, sizeof good - 1), CKPT_ECORRUPT, "one byte short");
	e = good;
	e.h.nfds = 0;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "no descriptor");
	e = good;
	e.h.nfds = 3;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "nfds overruns");
	e = good;
	e.h.capacity = 4;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "more content than capacity");
	e = good;
	e.h.capacity = 0x80000000u;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "capacity 2^31");
	e = good;
	e.f[1].fd = 5;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "a number twice");
	e = good;
	e.f[0].fd = -1;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "a negative number");
	e = good;
	e.f[1].end = 2;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "an unknown end");
	e = good;
	e.f[0].share = 1;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT,
		     "sharing a later descriptor's description");
	e = good;
	e.f[1].share = 0;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT,
		     "sharing the other end's description");
	e = good;
	e.f[0].end = CKPT__PP_WRITE;
	cr_expect_eq(take_forged(&e, sizeof e), CKPT_ECORRUPT, "content without a reader");

	/* A number another pipe of the record already has. */
	struct ckpt__rpipes rp = {0};
	cr_assert_eq(ckpt__pipes_take(&rp, (const unsigned char *)&good, sizeof good), 0);
	e = good;
	e.f[0].fd = 9;
	cr_expect_eq(ckpt__pipes_take(&rp, (const unsigned char *)&e, sizeof e), CKPT_ECORRUPT,
		     "descriptor 6 in two pipes");
	ckpt__pipes_free(&rp);
}

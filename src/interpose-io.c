/*
 * interpose-io.c - libc interposers for system calls that write into the
 * caller's memory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The kernel does not fault when it writes into a write-protected page: the
 * call fails with EFAULT, or returns short when only a later page of the
 * buffer is protected, and some calls lose data on the way (a datagram
 * received into a protected buffer is dropped).  So every interposer below
 * unprotects and marks dirty, before the call, the memory the kernel may
 * write (ckpt__track_touch: nothing when not tracking, or when the back-end
 * needs no help).  A buffer is marked whole even if the call writes less: a
 * superset of the pages written, never a subset.
 *
 * A call may wait in the kernel (read on a pipe, recv, epoll_wait) while a
 * commit on another thread protects again the pages it stores.  So each
 * interposer also registers what it opens for as long as the call runs
 * (ckpt__kw_enter, track-mprotect.h), and those pages are never protected
 * meanwhile: a commit stores them as they are and leaves them dirty.
 *
 * During a lazy resume (CKPT_F_LAZY) the same interposers first fill the
 * buffer's pages that are not there yet (ckpt__lazy_fill): the kernel's
 * access would wait for the fill anyway, page by page.
 *
 * stdio reads into the FILE's buffer with glibc's internal read, which no
 * interposer sees, so the stdio entry points prepare that buffer first.
 *
 * Not covered (documented in doc/TRACKING.md): glibc-internal reads that no
 * public entry point precedes (NSS lookups such as getpwnam/getaddrinfo
 * reading /etc files, scandir/ftw/glob directory scans), raw syscall(2),
 * ioctl requests whose size the request number does not encode, io_uring
 * and O_DIRECT through other paths, and writes by other processes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "interpose.h"
#include "lazy.h"
#include "track-mprotect.h"
#include "track.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <mqueue.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/msg.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/times.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

/* Registers [p, p+n) for the call under way (k) and opens it: nothing to do
 * unless tracking with a back-end whose kernel writes need help. */
static inline void kw_open(struct ckpt__kw_call *k, const void *p, size_t n)
{
	/* A lazy resume's pages there first (lazy.h). */
	ckpt__lazy_fill(p, n);
	if (CKPT__UNLIKELY(ckpt__T && __atomic_load_n(&ckpt__T->touch, __ATOMIC_ACQUIRE)) && p &&
	    n) {
		uintptr_t lo = (uintptr_t)p, hi = lo + n;
		ckpt__kw_enter(k, lo, hi < lo ? UINTPTR_MAX : hi);
		ckpt__track_touch_slow(lo, n);
	}
}

/* The call returned: what it registered may be protected again. */
static inline void kw_close(struct ckpt__kw_call *k)
{
	if (CKPT__UNLIKELY(k->n || k->overflow))
		ckpt__kw_leave(k);
}

/* In an interposer's body, kc is its call. */
#define W(p, n) kw_open(kc, (p), (n))
#define WOBJ(p) kw_open(kc, (p), sizeof *(p))

static void w_iov(struct ckpt__kw_call *kc, const struct iovec *iov, long n)
{
	if (!iov || n <= 0)
		return;
	for (long i = 0; i < n; i++)
		W(iov[i].iov_base, iov[i].iov_len);
}

static void w_msg(struct ckpt__kw_call *kc, struct msghdr *m)
{
	if (!m)
		return;
	WOBJ(m);
	w_iov(kc, m->msg_iov, (long)m->msg_iovlen);
	W(m->msg_name, m->msg_namelen);
	W(m->msg_control, m->msg_controllen);
}

static void w_addr(struct ckpt__kw_call *kc, void *addr, socklen_t *len)
{
	if (len) {
		WOBJ(len);
		W(addr, *len);
	}
}

/* Defines the symbol `name` as: open what the kernel will write, call the
 * next definition, and let it go again.  The C function has its own name
 * and takes the symbol through an asm label, so that glibc's header tricks
 * (inline getc_unlocked, scanf redirected to __isoc99_scanf) cannot clash.
 * kw_close writes no errno: the call's stays. */
#define KW(ret, name, params, args, touches)                               \
	CKPT__REAL(ret, name, params)                                      \
	__attribute__((constructor(104))) static void resolve_##name(void) \
	{                                                                  \
		(void)get_##name();                                        \
	}                                                                  \
	CKPT__EXPORT ret ckpt__kw_##name params __asm__(#name);            \
	ret ckpt__kw_##name params                                         \
	{                                                                  \
		struct ckpt__kw_call kc_buf = {0}, *const kc = &kc_buf;    \
		touches;                                                   \
		if (CKPT__UNLIKELY(!get_##name()))                         \
			ckpt__no_next(#name);                              \
		ret r_ = get_##name() args;                                \
		kw_close(kc);                                              \
		return r_;                                                 \
	}

/* ---- files and sockets ---------------------------------------------------- */

KW(ssize_t, read, (int fd, void *b, size_t n), (fd, b, n), W(b, n))
KW(ssize_t, __read_chk, (int fd, void *b, size_t n, size_t bl), (fd, b, n, bl), W(b, n))
KW(ssize_t, pread, (int fd, void *b, size_t n, off_t o), (fd, b, n, o), W(b, n))
KW(ssize_t, pread64, (int fd, void *b, size_t n, off_t o), (fd, b, n, o), W(b, n))
KW(ssize_t, __pread_chk, (int fd, void *b, size_t n, off_t o, size_t bl), (fd, b, n, o, bl),
   W(b, n))
KW(ssize_t, __pread64_chk, (int fd, void *b, size_t n, off_t o, size_t bl), (fd, b, n, o, bl),
   W(b, n))
KW(ssize_t, readv, (int fd, const struct iovec *v, int c), (fd, v, c), w_iov(kc, v, c))
KW(ssize_t, preadv, (int fd, const struct iovec *v, int c, off_t o), (fd, v, c, o), w_iov(kc, v, c))
KW(ssize_t, preadv64, (int fd, const struct iovec *v, int c, off_t o), (fd, v, c, o),
   w_iov(kc, v, c))
KW(ssize_t, preadv2, (int fd, const struct iovec *v, int c, off_t o, int f), (fd, v, c, o, f),
   w_iov(kc, v, c))
KW(ssize_t, preadv64v2, (int fd, const struct iovec *v, int c, off_t o, int f),
   (fd, v, c, o, f), w_iov(kc, v, c))
KW(ssize_t, recv, (int fd, void *b, size_t n, int f), (fd, b, n, f), W(b, n))
KW(ssize_t, __recv_chk, (int fd, void *b, size_t n, size_t bl, int f), (fd, b, n, bl, f),
   W(b, n))
KW(ssize_t, recvfrom, (int fd, void *b, size_t n, int f, struct sockaddr *a, socklen_t *al),
   (fd, b, n, f, a, al), (W(b, n), w_addr(kc, a, al)))
KW(ssize_t, __recvfrom_chk,
   (int fd, void *b, size_t n, size_t bl, int f, struct sockaddr *a, socklen_t *al),
   (fd, b, n, bl, f, a, al), (W(b, n), w_addr(kc, a, al)))
KW(ssize_t, recvmsg, (int fd, struct msghdr *m, int f), (fd, m, f), w_msg(kc, m))
KW(int, recvmmsg, (int fd, struct mmsghdr *v, unsigned n, int f, struct timespec *t),
   (fd, v, n, f, t), ({
	   W(v, n * sizeof *v);
	   for (unsigned i = 0; v && i < n; i++)
		   w_msg(kc, &v[i].msg_hdr);
	   W(t, t ? sizeof *t : 0);
   }))
KW(int, sendmmsg, (int fd, struct mmsghdr *v, unsigned n, int f), (fd, v, n, f),
   W(v, n * sizeof *v))
KW(int, accept, (int fd, struct sockaddr *a, socklen_t *al), (fd, a, al), w_addr(kc, a, al))
KW(int, accept4, (int fd, struct sockaddr *a, socklen_t *al, int f), (fd, a, al, f),
   w_addr(kc, a, al))
KW(int, getsockname, (int fd, struct sockaddr *a, socklen_t *al), (fd, a, al), w_addr(kc, a, al))
KW(int, getpeername, (int fd, struct sockaddr *a, socklen_t *al), (fd, a, al), w_addr(kc, a, al))
KW(int, getsockopt, (int fd, int l, int o, void *v, socklen_t *vl), (fd, l, o, v, vl),
   w_addr(kc, v, vl))
KW(int, socketpair, (int d, int t, int p, int sv[2]), (d, t, p, sv), W(sv, 2 * sizeof(int)))
KW(int, pipe, (int fds[2]), (fds), W(fds, 2 * sizeof(int)))
KW(int, pipe2, (int fds[2], int f), (fds, f), W(fds, 2 * sizeof(int)))
KW(ssize_t, readlink, (const char *p, char *b, size_t n), (p, b, n), W(b, n))
KW(ssize_t, readlinkat, (int d, const char *p, char *b, size_t n), (d, p, b, n), W(b, n))
KW(ssize_t, __readlink_chk, (const char *p, char *b, size_t n, size_t bl), (p, b, n, bl),
   W(b, n))
KW(ssize_t, __readlinkat_chk, (int d, const char *p, char *b, size_t n, size_t bl),
   (d, p, b, n, bl), W(b, n))
KW(ssize_t, getdents64, (int fd, void *b, size_t n), (fd, b, n), W(b, n))
KW(ssize_t, sendfile, (int o, int i, off_t *off, size_t n), (o, i, off, n),
   W(off, off ? sizeof *off : 0))
KW(ssize_t, sendfile64, (int o, int i, off_t *off, size_t n), (o, i, off, n),
   W(off, off ? sizeof *off : 0))
KW(ssize_t, copy_file_range, (int i, off_t *oi, int o, off_t *oo, size_t n, unsigned f),
   (i, oi, o, oo, n, f), (W(oi, oi ? sizeof *oi : 0), W(oo, oo ? sizeof *oo : 0)))
KW(ssize_t, splice, (int i, off_t *oi, int o, off_t *oo, size_t n, unsigned f),
   (i, oi, o, oo, n, f), (W(oi, oi ? sizeof *oi : 0), W(oo, oo ? sizeof *oo : 0)))
KW(ssize_t, getxattr, (const char *p, const char *n, void *v, size_t s), (p, n, v, s), W(v, s))
KW(ssize_t, lgetxattr, (const char *p, const char *n, void *v, size_t s), (p, n, v, s), W(v, s))
KW(ssize_t, fgetxattr, (int fd, const char *n, void *v, size_t s), (fd, n, v, s), W(v, s))
KW(ssize_t, listxattr, (const char *p, char *l, size_t s), (p, l, s), W(l, s))
KW(ssize_t, llistxattr, (const char *p, char *l, size_t s), (p, l, s), W(l, s))
KW(ssize_t, flistxattr, (int fd, char *l, size_t s), (fd, l, s), W(l, s))
KW(ssize_t, msgrcv, (int q, void *m, size_t n, long t, int f), (q, m, n, t, f),
   W(m, n + sizeof(long)))
KW(ssize_t, mq_receive, (mqd_t q, char *m, size_t n, unsigned *pr), (q, m, n, pr),
   (W(m, n), W(pr, pr ? sizeof *pr : 0)))
KW(ssize_t, mq_timedreceive,
   (mqd_t q, char *m, size_t n, unsigned *pr, const struct timespec *t), (q, m, n, pr, t),
   (W(m, n), W(pr, pr ? sizeof *pr : 0)))
KW(ssize_t, process_vm_readv,
   (pid_t p, const struct iovec *l, unsigned long ln, const struct iovec *r, unsigned long rn,
    unsigned long f),
   (p, l, ln, r, rn, f), w_iov(kc, l, (long)ln))
KW(int, mincore, (void *a, size_t n, unsigned char *v), (a, n, v),
   W(v, (n + ckpt__pagesize - 1) / ckpt__pagesize))

/* ---- metadata --------------------------------------------------------------- */

KW(int, stat, (const char *p, struct stat *s), (p, s), WOBJ(s))
KW(int, lstat, (const char *p, struct stat *s), (p, s), WOBJ(s))
KW(int, fstat, (int fd, struct stat *s), (fd, s), WOBJ(s))
KW(int, fstatat, (int d, const char *p, struct stat *s, int f), (d, p, s, f), WOBJ(s))
KW(int, stat64, (const char *p, struct stat64 *s), (p, s), WOBJ(s))
KW(int, lstat64, (const char *p, struct stat64 *s), (p, s), WOBJ(s))
KW(int, fstat64, (int fd, struct stat64 *s), (fd, s), WOBJ(s))
KW(int, fstatat64, (int d, const char *p, struct stat64 *s, int f), (d, p, s, f), WOBJ(s))
KW(int, __xstat, (int v, const char *p, struct stat *s), (v, p, s), WOBJ(s))
KW(int, __lxstat, (int v, const char *p, struct stat *s), (v, p, s), WOBJ(s))
KW(int, __fxstat, (int v, int fd, struct stat *s), (v, fd, s), WOBJ(s))
KW(int, __fxstatat, (int v, int d, const char *p, struct stat *s, int f), (v, d, p, s, f),
   WOBJ(s))
KW(int, __xstat64, (int v, const char *p, struct stat64 *s), (v, p, s), WOBJ(s))
KW(int, __lxstat64, (int v, const char *p, struct stat64 *s), (v, p, s), WOBJ(s))
KW(int, __fxstat64, (int v, int fd, struct stat64 *s), (v, fd, s), WOBJ(s))
KW(int, __fxstatat64, (int v, int d, const char *p, struct stat64 *s, int f), (v, d, p, s, f),
   WOBJ(s))
KW(int, statx, (int d, const char *p, int f, unsigned m, struct statx *s), (d, p, f, m, s),
   WOBJ(s))
KW(int, statfs, (const char *p, struct statfs *s), (p, s), WOBJ(s))
KW(int, fstatfs, (int fd, struct statfs *s), (fd, s), WOBJ(s))
KW(int, statfs64, (const char *p, struct statfs64 *s), (p, s), WOBJ(s))
KW(int, fstatfs64, (int fd, struct statfs64 *s), (fd, s), WOBJ(s))

/* ---- processes, time, limits --------------------------------------------------- */

KW(int, getrusage, (int w, struct rusage *u), (w, u), WOBJ(u))
KW(clock_t, times, (struct tms *t), (t), W(t, t ? sizeof *t : 0))
KW(int, getrlimit, (int r, struct rlimit *l), (r, l), WOBJ(l))
KW(int, getrlimit64, (int r, struct rlimit64 *l), (r, l), WOBJ(l))
KW(int, prlimit, (pid_t p, int r, const struct rlimit *n, struct rlimit *o), (p, r, n, o),
   W(o, o ? sizeof *o : 0))
KW(int, prlimit64, (pid_t p, int r, const struct rlimit64 *n, struct rlimit64 *o), (p, r, n, o),
   W(o, o ? sizeof *o : 0))
KW(int, sysinfo, (struct sysinfo *i), (i), WOBJ(i))
KW(int, uname, (struct utsname *u), (u), WOBJ(u))
KW(pid_t, wait, (int *s), (s), W(s, s ? sizeof *s : 0))
KW(pid_t, waitpid, (pid_t p, int *s, int o), (p, s, o), W(s, s ? sizeof *s : 0))
KW(pid_t, wait3, (int *s, int o, struct rusage *u), (s, o, u),
   (W(s, s ? sizeof *s : 0), W(u, u ? sizeof *u : 0)))
KW(pid_t, wait4, (pid_t p, int *s, int o, struct rusage *u), (p, s, o, u),
   (W(s, s ? sizeof *s : 0), W(u, u ? sizeof *u : 0)))
KW(int, waitid, (idtype_t t, id_t i, siginfo_t *s, int o), (t, i, s, o), W(s, s ? sizeof *s : 0))
KW(int, clock_gettime, (clockid_t c, struct timespec *t), (c, t), W(t, t ? sizeof *t : 0))
KW(int, clock_getres, (clockid_t c, struct timespec *t), (c, t), W(t, t ? sizeof *t : 0))
KW(int, nanosleep, (const struct timespec *r, struct timespec *m), (r, m),
   W(m, m ? sizeof *m : 0))
KW(int, clock_nanosleep, (clockid_t c, int f, const struct timespec *r, struct timespec *m),
   (c, f, r, m), W(m, m ? sizeof *m : 0))
KW(int, getitimer, (int w, struct itimerval *v), (w, v), W(v, v ? sizeof *v : 0))
KW(int, setitimer, (int w, const struct itimerval *n, struct itimerval *o), (w, n, o),
   W(o, o ? sizeof *o : 0))
KW(int, timer_gettime, (timer_t t, struct itimerspec *v), (t, v), W(v, v ? sizeof *v : 0))
KW(int, timer_settime, (timer_t t, int f, const struct itimerspec *n, struct itimerspec *o),
   (t, f, n, o), W(o, o ? sizeof *o : 0))
KW(int, timerfd_gettime, (int fd, struct itimerspec *v), (fd, v), W(v, v ? sizeof *v : 0))
KW(int, timerfd_settime, (int fd, int f, const struct itimerspec *n, struct itimerspec *o),
   (fd, f, n, o), W(o, o ? sizeof *o : 0))
KW(int, getresuid, (uid_t * r, uid_t *e, uid_t *s), (r, e, s),
   (WOBJ(r), WOBJ(e), WOBJ(s)))
KW(int, getresgid, (gid_t * r, gid_t *e, gid_t *s), (r, e, s),
   (WOBJ(r), WOBJ(e), WOBJ(s)))
KW(int, getgroups, (int n, gid_t *l), (n, l), W(l, n > 0 ? (size_t)n * sizeof *l : 0))
KW(int, sched_getaffinity, (pid_t p, size_t n, cpu_set_t *m), (p, n, m), W(m, n))
KW(ssize_t, getrandom, (void *b, size_t n, unsigned f), (b, n, f), W(b, n))
KW(int, getentropy, (void *b, size_t n), (b, n), W(b, n))
KW(int, eventfd_read, (int fd, uint64_t *v), (fd, v), WOBJ(v))
KW(int, sigpending, (sigset_t * s), (s), WOBJ(s))
KW(int, sigwaitinfo, (const sigset_t *s, siginfo_t *i), (s, i), W(i, i ? sizeof *i : 0))
KW(int, sigtimedwait, (const sigset_t *s, siginfo_t *i, const struct timespec *t), (s, i, t),
   W(i, i ? sizeof *i : 0))

/* ---- polling ------------------------------------------------------------------ */

static const sigset_t *open_segv(const sigset_t *set, sigset_t *buf)
{
	if (!set || !sigismember(set, SIGSEGV))
		return set;
	*buf = *set;
	sigdelset(buf, SIGSEGV);
	return buf;
}

static size_t fdset_bytes(int nfds)
{
	return nfds <= 0 ? 0 : ((size_t)nfds + 8 * sizeof(long) - 1) / (8 * sizeof(long)) * sizeof(long);
}

KW(int, poll, (struct pollfd *f, nfds_t n, int t), (f, n, t), W(f, n * sizeof *f))
KW(int, __poll_chk, (struct pollfd *f, nfds_t n, int t, size_t fl), (f, n, t, fl),
   W(f, n * sizeof *f))
KW(int, select, (int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *t), (n, r, w, e, t),
   (W(r, r ? fdset_bytes(n) : 0), W(w, w ? fdset_bytes(n) : 0), W(e, e ? fdset_bytes(n) : 0),
    W(t, t ? sizeof *t : 0)))
KW(int, epoll_wait, (int ep, struct epoll_event *ev, int n, int t), (ep, ev, n, t),
   W(ev, n > 0 ? (size_t)n * sizeof *ev : 0))

CKPT__REAL(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *))
CKPT__EXPORT int ppoll(struct pollfd *f, nfds_t n, const struct timespec *t, const sigset_t *m)
{
	struct ckpt__kw_call kc_buf = {0}, *const kc = &kc_buf;
	sigset_t buf;
	W(f, n * sizeof *f);
	int r = get_ppoll()(f, n, t, open_segv(m, &buf));
	kw_close(kc);
	return r;
}

CKPT__REAL(int, pselect,
	   (int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *))
CKPT__EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *e, const struct timespec *t,
			 const sigset_t *m)
{
	struct ckpt__kw_call kc_buf = {0}, *const kc = &kc_buf;
	sigset_t buf;
	W(r, r ? fdset_bytes(n) : 0);
	W(w, w ? fdset_bytes(n) : 0);
	W(e, e ? fdset_bytes(n) : 0);
	int ret = get_pselect()(n, r, w, e, t, open_segv(m, &buf));
	kw_close(kc);
	return ret;
}

CKPT__REAL(int, epoll_pwait, (int, struct epoll_event *, int, int, const sigset_t *))
CKPT__EXPORT int epoll_pwait(int ep, struct epoll_event *ev, int n, int t, const sigset_t *m)
{
	struct ckpt__kw_call kc_buf = {0}, *const kc = &kc_buf;
	sigset_t buf;
	W(ev, n > 0 ? (size_t)n * sizeof *ev : 0);
	int r = get_epoll_pwait()(ep, ev, n, t, open_segv(m, &buf));
	kw_close(kc);
	return r;
}

__attribute__((constructor(104))) static void resolve_masked_polls(void)
{
	(void)get_ppoll();
	(void)get_pselect();
	(void)get_epoll_pwait();
}

/* ---- getcwd ----------------------------------------------------------------- */

CKPT__REAL(char *, getcwd, (char *, size_t))
CKPT__EXPORT char *getcwd(char *buf, size_t size)
{
	if (buf || !ckpt__track_armed()) {
		struct ckpt__kw_call kc_buf = {0}, *const kc = &kc_buf;
		W(buf, size);
		char *r = get_getcwd()(buf, size);
		kw_close(kc);
		return r;
	}
	/* glibc would allocate the buffer and have the kernel fill it where no
	 * interposer can prepare it: use a buffer on the stack instead. */
	char tmp[PATH_MAX];
	if (!get_getcwd()(tmp, sizeof tmp))
		return errno == ERANGE ? get_getcwd()(NULL, size) : NULL;
	size_t len = strlen(tmp) + 1;
	if (size && len > size) {
		errno = ERANGE;
		return NULL;
	}
	char *out = malloc(size ? size : len);
	if (out)
		memcpy(out, tmp, len);
	return out;
}

/* ---- ioctl and fcntl -------------------------------------------------------- */

/* Bytes the kernel writes for an ioctl request: encoded in the request for
 * modern ones, known sizes for the classic terminal and socket ones. */
static size_t ioctl_out_size(unsigned long req)
{
	if (_IOC_DIR(req) & _IOC_READ)
		return _IOC_SIZE(req);
	switch (req) {
	case FIONREAD:
	case TIOCOUTQ:
	case TIOCGPGRP:
	case TIOCGSID:
	case TIOCMGET:
	case TIOCGETD:
		return sizeof(int);
	case TIOCGWINSZ:
		return sizeof(struct winsize);
	case TCGETS:
		return sizeof(struct termios);
	default:
		/* SIOCGIF* fill a struct ifreq (40 bytes on 64-bit). */
		if (req >= 0x8910 && req <= 0x8970)
			return 40;
		return 0;
	}
}

CKPT__REAL(int, ioctl, (int, unsigned long, ...))
CKPT__EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	size_t n = ioctl_out_size(req);
	struct ckpt__kw_call kc_buf = {0}, *const kc = &kc_buf;
	if (n)
		W(arg, n);
	int r = get_ioctl()(fd, req, arg);
	kw_close(kc);
	return r;
}

static void fcntl_touch(struct ckpt__kw_call *kc, int cmd, void *arg)
{
	switch (cmd) {
	case F_GETLK:
#ifdef F_OFD_GETLK
	case F_OFD_GETLK:
#endif
		W(arg, sizeof(struct flock));
		break;
#ifdef F_GETOWN_EX
	case F_GETOWN_EX:
		W(arg, sizeof(struct f_owner_ex));
		break;
#endif
	default:
		break;
	}
}

CKPT__REAL(int, fcntl, (int, int, ...))
CKPT__REAL(int, fcntl64, (int, int, ...))

/* fcntl's third argument is an int or a pointer, passed the same way on
 * the ABIs ckpt supports, as glibc itself relies on. */
#define FCNTL_BODY(next)                                        \
	va_list ap;                                             \
	va_start(ap, cmd);                                      \
	void *arg = va_arg(ap, void *);                         \
	va_end(ap);                                             \
	struct ckpt__kw_call kc_buf = {0}, *const kc = &kc_buf; \
	fcntl_touch(kc, cmd, arg);                              \
	int r = (next)(fd, cmd, arg);                           \
	kw_close(kc);                                           \
	return r;

CKPT__EXPORT int fcntl(int fd, int cmd, ...)
{
	FCNTL_BODY(get_fcntl())
}

CKPT__EXPORT int fcntl64(int fd, int cmd, ...)
{
	FCNTL_BODY(get_fcntl64() ? get_fcntl64() : get_fcntl())
}

__attribute__((constructor(104))) static void resolve_misc(void)
{
	(void)get_getcwd();
	(void)get_ioctl();
	(void)get_fcntl();
	(void)get_fcntl64();
}

/* ---- directories ------------------------------------------------------------- */

/* glibc's DIR holds its getdents buffer inline in one malloc block. */
static void w_dir(struct ckpt__kw_call *kc, DIR *d)
{
	if (d && ckpt__track_armed())
		W(d, malloc_usable_size(d));
}

KW(struct dirent *, readdir, (DIR * d), (d), w_dir(kc, d))
KW(struct dirent64 *, readdir64, (DIR * d), (d), w_dir(kc, d))
KW(int, readdir_r, (DIR * d, struct dirent *e, struct dirent **r), (d, e, r), w_dir(kc, d))
KW(int, readdir64_r, (DIR * d, struct dirent64 *e, struct dirent64 **r), (d, e, r), w_dir(kc, d))

/* ---- stdio -------------------------------------------------------------------- */

#define IO_UNBUFFERED 0x0002 /* libio's _IO_UNBUFFERED */
void _IO_doallocbuf(FILE *); /* exported by glibc since 2.2.5, not declared */

/* Gives the stream its buffer now (glibc would allocate it inside the read)
 * and makes the buffer writable, together with the FILE itself, whose
 * one-byte buffer unbuffered streams read into. */
static void w_stream(struct ckpt__kw_call *kc, FILE *fp, int only_if_empty)
{
	if (!fp || !ckpt__track_armed())
		return;
	if (only_if_empty && fp->_IO_read_ptr < fp->_IO_read_end)
		return;
	flockfile(fp);
	if (!fp->_IO_buf_base && !(fp->_flags & IO_UNBUFFERED))
		_IO_doallocbuf(fp);
	WOBJ(fp);
	if (fp->_IO_buf_base && fp->_IO_buf_end > fp->_IO_buf_base)
		W(fp->_IO_buf_base, (size_t)(fp->_IO_buf_end - fp->_IO_buf_base));
	funlockfile(fp);
}

KW(size_t, fread, (void *p, size_t s, size_t n, FILE *f), (p, s, n, f),
   (w_stream(kc, f, 0), W(p, s * n)))
KW(size_t, fread_unlocked, (void *p, size_t s, size_t n, FILE *f), (p, s, n, f),
   (w_stream(kc, f, 0), W(p, s * n)))
KW(size_t, __fread_chk, (void *p, size_t pl, size_t s, size_t n, FILE *f), (p, pl, s, n, f),
   (w_stream(kc, f, 0), W(p, s * n)))
KW(size_t, __fread_unlocked_chk, (void *p, size_t pl, size_t s, size_t n, FILE *f),
   (p, pl, s, n, f), (w_stream(kc, f, 0), W(p, s * n)))
KW(char *, fgets, (char *s, int n, FILE *f), (s, n, f), w_stream(kc, f, 0))
KW(char *, fgets_unlocked, (char *s, int n, FILE *f), (s, n, f), w_stream(kc, f, 0))
KW(char *, __fgets_chk, (char *s, size_t sl, int n, FILE *f), (s, sl, n, f), w_stream(kc, f, 0))
KW(char *, __fgets_unlocked_chk, (char *s, size_t sl, int n, FILE *f), (s, sl, n, f),
   w_stream(kc, f, 0))
KW(int, fgetc, (FILE * f), (f), w_stream(kc, f, 1))
KW(int, getc, (FILE * f), (f), w_stream(kc, f, 1))
KW(int, _IO_getc, (FILE * f), (f), w_stream(kc, f, 1))
KW(int, fgetc_unlocked, (FILE * f), (f), w_stream(kc, f, 1))
KW(int, getc_unlocked, (FILE * f), (f), w_stream(kc, f, 1))
KW(int, getchar, (void), (), w_stream(kc, stdin, 1))
KW(int, getchar_unlocked, (void), (), w_stream(kc, stdin, 1))
KW(int, __uflow, (FILE * f), (f), w_stream(kc, f, 0))
KW(int, __underflow, (FILE * f), (f), w_stream(kc, f, 0))
KW(ssize_t, getline, (char **l, size_t *n, FILE *f), (l, n, f), w_stream(kc, f, 0))
KW(ssize_t, getdelim, (char **l, size_t *n, int d, FILE *f), (l, n, d, f), w_stream(kc, f, 0))
KW(ssize_t, __getdelim, (char **l, size_t *n, int d, FILE *f), (l, n, d, f), w_stream(kc, f, 0))
KW(wint_t, fgetwc, (FILE * f), (f), w_stream(kc, f, 0))
KW(wint_t, getwc, (FILE * f), (f), w_stream(kc, f, 0))
KW(wchar_t *, fgetws, (wchar_t * s, int n, FILE *f), (s, n, f), w_stream(kc, f, 0))
KW(int, fseek, (FILE * f, long o, int w), (f, o, w), w_stream(kc, f, 0))
KW(int, fseeko, (FILE * f, off_t o, int w), (f, o, w), w_stream(kc, f, 0))
KW(int, fseeko64, (FILE * f, off_t o, int w), (f, o, w), w_stream(kc, f, 0))
KW(int, vfscanf, (FILE * f, const char *fmt, va_list ap), (f, fmt, ap), w_stream(kc, f, 0))
KW(int, __isoc99_vfscanf, (FILE * f, const char *fmt, va_list ap), (f, fmt, ap), w_stream(kc, f, 0))
KW(int, vscanf, (const char *fmt, va_list ap), (fmt, ap), w_stream(kc, stdin, 0))
KW(int, __isoc99_vscanf, (const char *fmt, va_list ap), (fmt, ap), w_stream(kc, stdin, 0))

/* The variadic scanf entry points forward to the va_list ones above. */
#define KW_SCANF(name, vname, params, args)                     \
	CKPT__EXPORT int ckpt__kw_##name params __asm__(#name); \
	int ckpt__kw_##name params                              \
	{                                                       \
		va_list ap;                                     \
		va_start(ap, fmt);                              \
		int r = ckpt__kw_##vname args;                  \
		va_end(ap);                                     \
		return r;                                       \
	}

KW_SCANF(fscanf, vfscanf, (FILE * f, const char *fmt, ...), (f, fmt, ap))
KW_SCANF(__isoc99_fscanf, __isoc99_vfscanf, (FILE * f, const char *fmt, ...), (f, fmt, ap))
KW_SCANF(scanf, vscanf, (const char *fmt, ...), (fmt, ap))
KW_SCANF(__isoc99_scanf, __isoc99_vscanf, (const char *fmt, ...), (fmt, ap))

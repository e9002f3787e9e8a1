/*
 * threads-prog.c - a multi-threaded program for tests/resume-threads.sh:
 * killed at any commit and run again, it must end exactly as a run that was
 * never interrupted.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Usage: threads-prog --dir DIR --out FILE [--seed S] [--steps N] [--every K]
 *                     [--threads T] [--commit-from-worker] [--blocked] [--pipe]
 *                     [--kill-at S[+E][,S[+E]...]]
 *
 * T worker threads (default 4) run a heat stencil over two grids of
 * 512 x 512 doubles (2 MiB each), each worker its band of rows.  A step:
 * the main thread releases it (a counter under a mutex, a condition
 * variable); each worker computes its rows of the next grid from the
 * current one and adds, under a second mutex, the hashes of its rows to a
 * shared accumulator (a wrapping sum, and a maximum: both independent of
 * the order the workers come in, so of T); the workers meet at a barrier,
 * twice, then each counts itself done and waits for the next step, and the
 * last one signals the condition variable the main thread waits on.  The
 * main thread then appends the step's line to FILE.  Every K steps (not at
 * the last) a commit: by the main thread, the workers waiting for the next
 * step; with --commit-from-worker by worker 0 between the two barriers, the
 * other workers waiting at the barrier and the main thread on its
 * condition variable.  T = 0 runs the stencil on the main thread alone: a
 * program with one thread (with --blocked, the helpers below are there
 * still).  Grid, accumulator and FILE are the same for every T.
 *
 * --blocked adds, at every commit, threads blocked in pthread_cond_wait,
 * in sem_wait and in a nanosleep of 2 s (each must return 0: no EINTR, and
 * the sleep lasts its time where no resume came in between), released at
 * the end and joined (their return values checked); with --pipe also one
 * blocked in read() on a pipe.  The committing thread waits until each is
 * inside its system call (/proc/self/task/TID/syscall).  The main thread
 * holds a recursive mutex (locked twice) and an error-checking one across
 * the commits: after each, a second lock of the error-checking one returns
 * EDEADLK, every unlock 0, one unlock more EPERM.  After each commit the
 * committing thread creates a thread and joins it (its return value
 * checked), sends SIGUSR1 with pthread_kill to the last worker (its handler
 * counts, and notes the thread it ran on), and checks its own pthread_self,
 * __thread variable and pthread_getspecific value; every worker checks its
 * own at every step.
 *
 * --kill-at S[+E],...: right after the commit of step S returns 0 (not
 * CKPT_RESUMED: a process resumed from that commit goes on), E more steps
 * (default 0, at most K - 1) and SIGKILL.  With two kill points the second
 * is met by the process resumed from the first.
 *
 * Output:
 *   stderr  "commit ID step S" after each commit, "resumed ID step S" when
 *           a commit returns CKPT_RESUMED, "killing at step S" before a
 *           SIGKILL, and the --blocked helpers' reports ("blocked: ...").
 *   stdout  at the end: "threads T", "grid HEX" (FNV-1a of the final
 *           grid's bytes), "acc sum HEX max HEX rows N" (the accumulator:
 *           the sum, the bits of the maximum, the rows added).
 *   FILE    "S SUM MAXBITS" for each step S, then "grid" and the final
 *           grid's raw bytes.
 * Exit status: 0 done; 1 a check or a system call failed (the message
 * says which); 2 usage; 3 ckpt_open failed (its message on stderr:
 * ckpt_strerror, the code's name, ckpt_last_error).
 */
#include <ckpt.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#define ROWS	    512
#define COLS	    512
#define MAX_THREADS 64
#define MAX_KILLS   8
#define ALPHA	    0.2 /* diffusion number: stable below 0.25 */

/* ---- options and state: all of it in memory a resume restores ---------------- */
static long opt_steps = 60, opt_every = 10, opt_threads = 4;
static uint64_t opt_seed = 1;
static int opt_from_worker, opt_blocked, opt_pipe;
static struct {
	long step, extra;
} kills[MAX_KILLS];
static int nkills;

static ckpt_t *handle;
static FILE *out;
static double *grid[2]; /* grid[s & 1] holds step s */

/* The accumulator: a wrapping sum of row hashes and the largest cell seen,
 * under acc_lock. */
static pthread_mutex_t acc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	uint64_t sum;
	double max;
	uint64_t rows;
} acc;

/* The step gate: the main thread sets `go` to release step `go`; each
 * worker done with step s counts itself in `parked` (T * s when all are)
 * before it waits for the next, and the last one signals done_cv. */
static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static long go, parked;
static pthread_barrier_t barrier;

static pthread_t main_thread, workers[MAX_THREADS];
static long worker_slot[MAX_THREADS], main_slot; /* pthread_getspecific values */
static pthread_key_t key;
static __thread long tls_id = -1;

/* How many times this run was resumed: the helpers' sleep is only timed
 * when none came in between. */
static atomic_long resumes;

/* ---- failing ------------------------------------------------------------------ */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "threads-prog: %s\n", msg);
	exit(1);
}

static void check_rc(int rc, const char *what)
{
	if (rc < 0)
		die("%s: %s (%s): %s", what, ckpt_strerror(rc), ckpt_err_name(rc),
		    ckpt_last_error());
}

static void check_pthread(int rc, const char *what)
{
	if (rc)
		die("%s: %s", what, strerror(rc));
}

/* ---- the stencil -------------------------------------------------------------- */
static uint64_t fnv(uint64_t h, const double *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t b;
		memcpy(&b, &w[i], sizeof b);
		h = (h ^ b) * 0x100000001b3u;
	}
	return h;
}

static uint64_t bits(double d)
{
	uint64_t b;
	memcpy(&b, &d, sizeof b);
	return b;
}

/* Rows [lo, hi) of step s from step s - 1, and their share of the
 * accumulator. */
static void compute(long s, long lo, long hi)
{
	const double *u = grid[(s - 1) & 1];
	double *v = grid[s & 1];
	uint64_t sum = 0;
	double max = 0;
	for (long y = lo; y < hi; y++) {
		const double *up = u + (y - 1) * COLS, *row = u + y * COLS;
		const double *down = u + (y + 1) * COLS;
		double *o = v + y * COLS;
		o[0] = row[0];
		o[COLS - 1] = row[COLS - 1];
		for (long x = 1; x < COLS - 1; x++)
			o[x] = row[x] +
			       ALPHA * (up[x] + down[x] + row[x - 1] + row[x + 1] - 4.0 * row[x]);
		for (long x = 0; x < COLS; x++)
			if (o[x] > max)
				max = o[x];
		sum += fnv(0xcbf29ce484222325u ^ (uint64_t)y, o, COLS);
	}
	pthread_mutex_lock(&acc_lock);
	acc.sum += sum;
	if (max > acc.max)
		acc.max = max;
	acc.rows += (uint64_t)(hi - lo);
	pthread_mutex_unlock(&acc_lock);
}

/* ---- the --blocked helpers ---------------------------------------------------- */
enum { H_COND, H_SEM, H_SLEEP, H_PIPE, H_COUNT };
static const char *const helper_name[H_COUNT] = {"pthread_cond_wait", "sem_wait", "nanosleep",
						 "read on a pipe"};
/* The system call each is blocked in: futex, futex, clock_nanosleep, read. */
static const long helper_nr[H_COUNT] = {SYS_futex, SYS_futex, SYS_clock_nanosleep, SYS_read};
static struct helper {
	pthread_t th;
	int on;
	_Atomic int tid;	   /* its thread id, noted before each call */
	_Atomic int in_call;	   /* 1 from just before the call until it returns */
	atomic_long call_start_ms; /* CLOCK_MONOTONIC when it made the call */
	int seen_blocked;	   /* seen in the call once: it stays there until released */
	char error[200];	   /* what went wrong, "" if nothing */
} helpers[H_COUNT];

static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t helper_cv = PTHREAD_COND_INITIALIZER;
static int helper_released;
static sem_t helper_sem;
static int helper_pipe[2] = {-1, -1};
static atomic_int sleeper_stop;
static long sleeps; /* nanosleeps the sleeper completed */

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void entering(struct helper *h)
{
	h->tid = gettid();
	h->call_start_ms = now_ms();
	h->in_call = 1;
}

static void *cond_helper(void *arg)
{
	struct helper *h = arg;
	pthread_mutex_lock(&helper_lock);
	while (!helper_released) {
		entering(h);
		int rc = pthread_cond_wait(&helper_cv, &helper_lock);
		h->in_call = 0;
		if (rc)
			snprintf(h->error, sizeof h->error, "pthread_cond_wait returned %s",
				 strerror(rc));
	}
	int got = helper_released;
	pthread_mutex_unlock(&helper_lock);
	return (void *)(intptr_t)(got * 10 + H_COND);
}

static void *sem_helper(void *arg)
{
	struct helper *h = arg;
	entering(h);
	int rc = sem_wait(&helper_sem);
	int e = errno;
	h->in_call = 0;
	if (rc)
		snprintf(h->error, sizeof h->error, "sem_wait returned %d (%s)", rc, strerror(e));
	return (void *)(intptr_t)(rc ? -1 : H_SEM);
}

/* Sleeps 2 s again and again until told to stop: each nanosleep returns 0
 * and, where no resume came in between, lasted its 2 s (a sleep a resume
 * interrupted starts again in full in the new process, whose clock cannot
 * tell how long the old one had slept). */
static void *sleep_helper(void *arg)
{
	struct helper *h = arg;
	while (!sleeper_stop) {
		long r0 = resumes;
		struct timespec t0, t1, want = {.tv_sec = 2}, rem = {0, 0};
		clock_gettime(CLOCK_MONOTONIC, &t0);
		entering(h);
		int rc = nanosleep(&want, &rem);
		int e = errno;
		h->in_call = 0;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		long slept_ms =
		    (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
		if (rc) {
			snprintf(h->error, sizeof h->error,
				 "nanosleep returned %d (%s) after %ld ms, %ld.%09ld s left", rc,
				 strerror(e), slept_ms, (long)rem.tv_sec, rem.tv_nsec);
			break;
		}
		if (resumes == r0 && slept_ms < 2000) {
			snprintf(h->error, sizeof h->error,
				 "nanosleep of 2 s returned 0 after %ld ms", slept_ms);
			break;
		}
		sleeps++;
	}
	return (void *)(intptr_t)H_SLEEP;
}

static void *pipe_helper(void *arg)
{
	struct helper *h = arg;
	char b = 0;
	entering(h);
	ssize_t n = read(helper_pipe[0], &b, 1);
	int e = errno;
	h->in_call = 0;
	if (n != 1 || b != 'x')
		snprintf(h->error, sizeof h->error, "read on the pipe returned %zd (%s), byte %d",
			 n, n < 0 ? strerror(e) : "", b);
	return (void *)(intptr_t)(n == 1 ? H_PIPE : -1);
}

static void start_helpers(void)
{
	void *(*fn[H_COUNT])(void *) = {cond_helper, sem_helper, sleep_helper, pipe_helper};
	if (sem_init(&helper_sem, 0, 0))
		die("sem_init: %s", strerror(errno));
	if (opt_pipe && pipe(helper_pipe))
		die("pipe: %s", strerror(errno));
	for (int i = 0; i < H_COUNT; i++) {
		helpers[i].on = i != H_PIPE || opt_pipe;
		if (helpers[i].on)
			check_pthread(pthread_create(&helpers[i].th, NULL, fn[i], &helpers[i]),
				      "pthread_create (a helper)");
	}
}

/* What /proc says thread tid is blocked in: its system call's number, -1
 * if it runs, -2 if there is no such thread (any more). */
static long syscall_of(int tid)
{
	char path[64], buf[128];
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -2;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -2;
	buf[n] = '\0';
	char *end;
	long nr = strtol(buf, &end, 10);
	return end == buf ? -1 : nr;
}

/* Waits until every helper is inside its blocking call, the sleeper with at
 * least half of its 2 s ahead (so that it does not wake during the commit). */
static void wait_blocked(void)
{
	for (int i = 0; i < H_COUNT; i++) {
		struct helper *h = &helpers[i];
		if (!h->on || h->seen_blocked)
			continue;
		long deadline = now_ms() + 10000;
		for (;;) {
			if (h->error[0])
				die("blocked: %s: %s", helper_name[i], h->error);
			if (h->in_call && syscall_of(h->tid) == helper_nr[i] &&
			    (i != H_SLEEP || now_ms() - h->call_start_ms < 1000))
				break;
			if (now_ms() > deadline)
				die("blocked: the %s thread (tid %d) is not in its call after 10 s"
				    " (in_call %d, /proc says %ld)",
				    helper_name[i], (int)h->tid, (int)h->in_call,
				    syscall_of(h->tid));
			usleep(1000);
		}
		/* Only the sleeper leaves its call before the end. */
		h->seen_blocked = i != H_SLEEP;
	}
}

static void stop_helpers(void)
{
	pthread_mutex_lock(&helper_lock);
	helper_released = 7;
	pthread_cond_signal(&helper_cv);
	pthread_mutex_unlock(&helper_lock);
	if (sem_post(&helper_sem))
		die("sem_post: %s", strerror(errno));
	sleeper_stop = 1;
	if (opt_pipe && write(helper_pipe[1], "x", 1) != 1)
		die("write to the pipe: %s", strerror(errno));
	static const intptr_t want[H_COUNT] = {7 * 10 + H_COND, H_SEM, H_SLEEP, H_PIPE};
	for (int i = 0; i < H_COUNT; i++) {
		if (!helpers[i].on)
			continue;
		void *ret = NULL;
		check_pthread(pthread_join(helpers[i].th, &ret), "pthread_join (a helper)");
		if (helpers[i].error[0])
			die("blocked: %s: %s", helper_name[i], helpers[i].error);
		if ((intptr_t)ret != want[i])
			die("blocked: the %s thread returned %ld, not %ld", helper_name[i],
			    (long)(intptr_t)ret, (long)want[i]);
	}
	fprintf(stderr, "blocked: %s%s%s and %ld nanosleeps returned 0, threads joined\n",
		helper_name[H_COND], opt_pipe ? ", read on a pipe, " : ", ", helper_name[H_SEM],
		sleeps);
}

/* ---- what the committing thread checks after each commit (--blocked) ---------- */
static atomic_int usr1_count;
static pthread_t usr1_thread;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_thread = pthread_self();
	usr1_count++;
}

static __thread long late_tls = 42;

static void *late_thread(void *arg)
{
	/* A thread started now: fresh TLS, no thread-specific value. */
	if (late_tls != 42 || pthread_getspecific(key) != NULL)
		return NULL;
	late_tls = 43;
	return (void *)((intptr_t)arg * 3 + 1);
}

static void check_identity(const char *who, pthread_t want, long id, const void *slot)
{
	if (!pthread_equal(pthread_self(), want))
		die("%s: pthread_self() is not the pthread_t it had", who);
	if (tls_id != id)
		die("%s: its __thread variable holds %ld, not %ld", who, tls_id, id);
	if (pthread_getspecific(key) != slot)
		die("%s: pthread_getspecific gives %p, not %p", who, pthread_getspecific(key),
		    slot);
}

static void after_commit(long s, int is_worker)
{
	if (is_worker)
		check_identity("worker 0 after its commit", workers[0], 1000, &worker_slot[0]);
	else
		check_identity("the main thread after its commit", main_thread, 999, &main_slot);

	pthread_t t;
	void *ret = NULL;
	check_pthread(pthread_create(&t, NULL, late_thread, (void *)(intptr_t)s),
		      "pthread_create after a commit");
	check_pthread(pthread_join(t, &ret), "pthread_join after a commit");
	if ((intptr_t)ret != s * 3 + 1)
		die("a thread created after the commit of step %ld returned %ld, not %ld", s,
		    (long)(intptr_t)ret, s * 3 + 1);

	pthread_t target = opt_threads ? workers[opt_threads - 1] : main_thread;
	int before = usr1_count;
	check_pthread(pthread_kill(target, SIGUSR1), "pthread_kill");
	long deadline = now_ms() + 5000;
	while (usr1_count == before) {
		if (now_ms() > deadline)
			die("SIGUSR1 sent with pthread_kill after step %ld: no handler ran in 5 s",
			    s);
		usleep(1000);
	}
	if (!pthread_equal(usr1_thread, target))
		die("SIGUSR1 sent with pthread_kill ran its handler on another thread");
}

/* ---- commits and kills -------------------------------------------------------- */
static long kill_step = -1; /* the step after which to die, once armed */

static void die_now(long s)
{
	fprintf(stderr, "killing at step %ld\n", s);
	kill(getpid(), SIGKILL);
	for (;;)
		pause();
}

/* The commit of step s, on the main thread or on worker 0. */
static void commit_point(long s, int is_worker)
{
	if (opt_blocked)
		wait_blocked();
	uint64_t id = 0;
	int rc = ckpt_commit(handle, &id);
	check_rc(rc, "ckpt_commit");
	if (rc == CKPT_RESUMED)
		resumes++;
	fprintf(stderr, "%s %llu step %ld\n", rc == CKPT_RESUMED ? "resumed" : "commit",
		(unsigned long long)id, s);
	if (opt_blocked)
		after_commit(s, is_worker);
	if (rc != 0)
		return;
	for (int i = 0; i < nkills; i++)
		if (kills[i].step == s) {
			if (kills[i].extra == 0)
				die_now(s);
			kill_step = s + kills[i].extra;
		}
}

/* ---- the threads -------------------------------------------------------------- */
static void *worker(void *arg)
{
	long w = (long)(intptr_t)arg, t = opt_threads;
	long lo = 1 + w * (ROWS - 2) / t, hi = 1 + (w + 1) * (ROWS - 2) / t;
	char who[32];
	snprintf(who, sizeof who, "worker %ld", w);
	tls_id = 1000 + w;
	check_pthread(pthread_setspecific(key, &worker_slot[w]), "pthread_setspecific");

	pthread_mutex_lock(&gate);
	for (long s = 1; s <= opt_steps; s++) {
		while (go < s)
			pthread_cond_wait(&go_cv, &gate);
		pthread_mutex_unlock(&gate);
		check_identity(who, workers[w], 1000 + w, &worker_slot[w]);
		compute(s, lo, hi);
		int rc = pthread_barrier_wait(&barrier);
		if (rc && rc != PTHREAD_BARRIER_SERIAL_THREAD)
			die("pthread_barrier_wait: %s", strerror(rc));
		/* Every row of step s is written: worker 0 commits while the
		 * others wait at the barrier. */
		if (opt_from_worker && w == 0 && s % opt_every == 0 && s < opt_steps)
			commit_point(s, 1);
		rc = pthread_barrier_wait(&barrier);
		if (rc && rc != PTHREAD_BARRIER_SERIAL_THREAD)
			die("pthread_barrier_wait: %s", strerror(rc));
		pthread_mutex_lock(&gate);
		if (++parked == t * s)
			pthread_cond_signal(&done_cv);
		/* Waits for step s + 1 with the gate released atomically: the
		 * main thread sees `parked` complete only once every worker is
		 * inside pthread_cond_wait. */
	}
	pthread_mutex_unlock(&gate);
	return (void *)(intptr_t)(w + 100);
}

/* After the commit of step s (--blocked): the mutexes the main thread held
 * across it are still its own.  A second lock of the error-checking one
 * fails with EDEADLK at once (glibc compares the owner it recorded with
 * the caller's thread id; one it does not take for its own would wait
 * here for ever, so the lock gives up after 2 s), each unlock of what it
 * holds returns 0 and one more EPERM.  A failure names the owner glibc
 * recorded and the thread's id. */
static void release_mutexes(long s, pthread_mutex_t *rec, pthread_mutex_t *errchk)
{
	check_identity("the main thread", main_thread, 999, &main_slot);
	struct timespec limit;
	clock_gettime(CLOCK_REALTIME, &limit);
	limit.tv_sec += 2;
	int rc = pthread_mutex_timedlock(errchk, &limit);
	if (rc != EDEADLK)
		die("step %ld: relocking the error-checking mutex: %s, not EDEADLK (owner %d, "
		    "the main thread's id %d)",
		    s, rc == ETIMEDOUT ? "still locked after 2 s" : rc ? strerror(rc) : "0",
		    errchk->__data.__owner, gettid());
	rc = pthread_mutex_unlock(errchk);
	if (rc)
		die("step %ld: unlocking the error-checking mutex: %s (owner %d, the main "
		    "thread's id %d)",
		    s, strerror(rc), errchk->__data.__owner, gettid());
	rc = pthread_mutex_unlock(errchk);
	if (rc != EPERM)
		die("step %ld: unlocking the error-checking mutex twice: %s, not EPERM", s,
		    rc ? strerror(rc) : "0");
	for (int i = 0; i < 2; i++) {
		int owner = rec->__data.__owner;
		rc = pthread_mutex_unlock(rec);
		if (rc)
			die("step %ld: unlock %d of the recursive mutex: %s (owner %d, the main "
			    "thread's id %d)",
			    s, i + 1, strerror(rc), owner, gettid());
	}
	rc = pthread_mutex_unlock(rec);
	if (rc != EPERM)
		die("step %ld: a third unlock of the recursive mutex: %s, not EPERM", s,
		    rc ? strerror(rc) : "0");
}

/* ---- main --------------------------------------------------------------------- */
static void usage(void)
{
	fprintf(stderr, "usage: threads-prog --dir DIR --out FILE [--seed S] [--steps N] "
			"[--every K] [--threads T] [--commit-from-worker] [--blocked] [--pipe] "
			"[--kill-at S[+E][,S[+E]...]]\n");
	exit(2);
}

static long number(const char *s, long min)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min)
		usage();
	return v;
}

static void parse_kills(const char *s)
{
	while (*s) {
		char *end;
		if (nkills == MAX_KILLS)
			usage();
		kills[nkills].step = strtol(s, &end, 10);
		kills[nkills].extra = 0;
		if (end == s || kills[nkills].step < 1)
			usage();
		s = end;
		if (*s == '+') {
			kills[nkills].extra = strtol(++s, &end, 10);
			if (end == s || kills[nkills].extra < 0)
				usage();
			s = end;
		}
		nkills++;
		if (*s == ',')
			s++;
		else if (*s)
			usage();
	}
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *out_path = NULL;

	/* Options first: reading them changes nothing outside the process. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--commit-from-worker"))
			opt_from_worker = 1;
		else if (!strcmp(a, "--blocked"))
			opt_blocked = 1;
		else if (!strcmp(a, "--pipe"))
			opt_pipe = 1;
		else if (i + 1 >= argc)
			usage();
		else if (!strcmp(a, "--dir"))
			dir = argv[++i];
		else if (!strcmp(a, "--out"))
			out_path = argv[++i];
		else if (!strcmp(a, "--seed"))
			opt_seed = (uint64_t)number(argv[++i], 0);
		else if (!strcmp(a, "--steps"))
			opt_steps = number(argv[++i], 1);
		else if (!strcmp(a, "--every"))
			opt_every = number(argv[++i], 1);
		else if (!strcmp(a, "--threads"))
			opt_threads = number(argv[++i], 0);
		else if (!strcmp(a, "--kill-at"))
			parse_kills(argv[++i]);
		else
			usage();
	}
	if (!dir || !out_path || opt_threads > MAX_THREADS || (opt_pipe && !opt_blocked) ||
	    (opt_from_worker && opt_threads == 0))
		usage();
	for (int i = 0; i < nkills; i++)
		if (kills[i].step % opt_every || kills[i].step >= opt_steps ||
		    kills[i].extra >= opt_every)
			usage();

	/* CKPT_TEST_LAZY=1 (tests/resume-lazy.sh): resumed with CKPT_F_LAZY. */
	const char *lazy = getenv("CKPT_TEST_LAZY");
	unsigned flags = CKPT_F_RESUME | (lazy && lazy[0] == '1' ? CKPT_F_LAZY : 0);
	/* First thing: with a chain in DIR this does not return. */
	int rc = ckpt_open(&handle, dir, &(ckpt_options){.flags = flags});
	if (rc < 0) {
		fprintf(stderr, "threads-prog: ckpt_open: %s (%s): %s\n", ckpt_strerror(rc),
			ckpt_err_name(rc), ckpt_last_error());
		return 3;
	}

	/* The plate: random temperatures from the seed, rows 0 and ROWS - 1
	 * and the edge columns held as they start. */
	grid[0] = malloc(ROWS * COLS * sizeof(double));
	grid[1] = malloc(ROWS * COLS * sizeof(double));
	out = fopen(out_path, "w");
	if (!grid[0] || !grid[1] || !out)
		die("setting up: %s", strerror(errno));
	uint64_t x = 0x9e3779b97f4a7c15u ^ (opt_seed * 0x2545f4914f6cdd1du);
	for (long i = 0; i < ROWS * COLS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		grid[0][i] = (double)(x >> 11) / (double)(1ull << 53) * 100.0;
	}
	memcpy(grid[1], grid[0], ROWS * COLS * sizeof(double));

	struct sigaction sa = {.sa_handler = on_usr1};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	main_thread = pthread_self();
	tls_id = 999;
	check_pthread(pthread_key_create(&key, NULL), "pthread_key_create");
	check_pthread(pthread_setspecific(key, &main_slot), "pthread_setspecific");
	if (opt_threads)
		check_pthread(pthread_barrier_init(&barrier, NULL, (unsigned)opt_threads),
			      "pthread_barrier_init");
	for (long w = 0; w < opt_threads; w++)
		check_pthread(pthread_create(&workers[w], NULL, worker, (void *)(intptr_t)w),
			      "pthread_create (a worker)");
	if (opt_blocked)
		start_helpers();

	pthread_mutexattr_t ma;
	pthread_mutex_t rec, errchk;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&rec, &ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(&errchk, &ma);
	pthread_mutexattr_destroy(&ma);

	check_rc(ckpt_begin(handle), "ckpt_begin");
	for (long s = 1; s <= opt_steps; s++) {
		int due = s % opt_every == 0 && s < opt_steps;
		if (due && opt_blocked) {
			check_pthread(pthread_mutex_lock(&rec), "locking the recursive mutex");
			check_pthread(pthread_mutex_lock(&rec),
				      "locking the recursive mutex again");
			check_pthread(pthread_mutex_lock(&errchk),
				      "locking the error-checking mutex");
		}
		if (opt_threads == 0) {
			compute(s, 1, ROWS - 1);
		} else {
			pthread_mutex_lock(&gate);
			go = s;
			pthread_cond_broadcast(&go_cv);
			while (parked < opt_threads * s)
				pthread_cond_wait(&done_cv, &gate);
			pthread_mutex_unlock(&gate);
		}
		fprintf(out, "%ld %016llx %016llx\n", s, (unsigned long long)acc.sum,
			(unsigned long long)bits(acc.max));
		if (due && !opt_from_worker)
			commit_point(s, 0);
		if (due && opt_blocked)
			release_mutexes(s, &rec, &errchk);
		if (s == kill_step)
			die_now(s);
	}

	for (long w = 0; w < opt_threads; w++) {
		void *ret = NULL;
		check_pthread(pthread_join(workers[w], &ret), "pthread_join (a worker)");
		if ((intptr_t)ret != w + 100)
			die("worker %ld returned %ld, not %ld", w, (long)(intptr_t)ret, w + 100);
	}
	if (opt_blocked)
		stop_helpers();
	check_rc(ckpt_end(handle), "ckpt_end");
	ckpt_close(handle);

	const double *final = grid[opt_steps & 1];
	fprintf(out, "grid\n");
	if (fwrite(final, sizeof(double), ROWS * COLS, out) != ROWS * COLS || fclose(out))
		die("%s: %s", out_path, strerror(errno));
	printf("threads %ld\n", opt_threads);
	printf("grid %016llx\n", (unsigned long long)fnv(0xcbf29ce484222325u, final, ROWS * COLS));
	printf("acc sum %016llx max %016llx rows %llu\n", (unsigned long long)acc.sum,
	       (unsigned long long)bits(acc.max), (unsigned long long)acc.rows);
	return 0;
}

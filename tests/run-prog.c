/*
 * tests/run-prog.c - a program that knows nothing of ckpt, for tests/run.sh:
 * `ckpt run` checkpoints it, the test kills and resumes it.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   run-prog OUT STEPS [--threads N] [--ignore-usr1] [--handle-usr1]
 *            [--dlopen LIB SYM] [--fork] [--loader LIB] [--mem MIB]
 *
 * Each step every worker (N pthreads, 0: the main thread alone) hashes its
 * own state, adds to a total under a mutex, and meets the others at a
 * barrier; then the main thread writes a line to OUT through stdio (its
 * buffer is flushed by the library as it fills) and sleeps 2 ms.  The file
 * is a deterministic function of STEPS and N.  With --ignore-usr1 the
 * program sets SIGUSR1 to SIG_IGN and checks, at the end, that sigaction
 * still reads SIG_IGN; with --handle-usr1 it counts SIGUSR1s in a handler
 * and prints the count on stderr at the end.
 *
 * --dlopen LIB SYM: once running (as Python loads its modules), dlopen()s
 * LIB and each step calls SYM, a function of no argument returning a
 * string (libz's zlibVersion), and writes the string on the line.
 *
 * --fork: every 25 steps a child writes a line "child S" at the file's
 * offset (pwrite, after a flush) and exits; the parent waits for it and
 * goes on after the line.  A child alive at a commit is not in a resumed
 * process (its waitpid says ECHILD): the parent then forks it again, and
 * the line, written at the same offset, is the same.
 *
 * --mem MIB: the program also holds MIB MiB of its own, all written at
 * its start (so that a first commit stores them; "filled" on stderr
 * then), and each step rewrites one page of it and writes a hash of it on
 * the line.
 *
 * --loader LIB: one more thread keeps the loader's locks held most of the
 * time until the last step: it walks the loaded objects with
 * dl_iterate_phdr, busy for about half a millisecond inside each callback
 * (holding the loader's write lock, in its own code), and every tenth
 * walk dlopen()s and dlclose()s LIB (in the dynamic linker).  It writes
 * nothing the output depends on.
 */
#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXT 16

static pthread_barrier_t bar;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long acc[MAXT + 1], total;
static int nthreads, steps;
static volatile sig_atomic_t usr1;
static int loader_stop;
static const char *loader_lib;

static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

static void step(long id, int s)
{
	unsigned long long h = acc[id] + (unsigned long long)s;
	for (int k = 0; k < 50000; k++)
		h = (h ^ (unsigned)(k + id)) * 1099511628211ull;
	acc[id] = h;
	pthread_mutex_lock(&mu);
	total += h >> 8;
	pthread_mutex_unlock(&mu);
}

static void *work(void *arg)
{
	long id = (long)arg;
	for (int s = 0; s < steps; s++) {
		step(id, s);
		pthread_barrier_wait(&bar);
		pthread_barrier_wait(&bar);
	}
	return NULL;
}

static int busy_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)info;
	(void)size;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000000000L + t.tv_nsec - t0.tv_nsec < 500000);
	++*(unsigned long *)arg;
	return 1; /* the first object only */
}

static void *loader(void *arg)
{
	(void)arg;
	unsigned long walks = 0;
	while (!__atomic_load_n(&loader_stop, __ATOMIC_ACQUIRE)) {
		dl_iterate_phdr(busy_cb, &walks);
		if (walks % 10 == 0) {
			void *h = dlopen(loader_lib, RTLD_NOW | RTLD_LOCAL);
			if (h)
				dlclose(h);
		}
		struct timespec ts = {0, 50000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* A child writes "child S" where the file is; 0 once it has. */
static int child_line(FILE *f, int s)
{
	if (fflush(f))
		return -1;
	long off = ftell(f);
	char line[32];
	int len = snprintf(line, sizeof line, "child %d\n", s);
	for (;;) {
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0)
			_exit(pwrite(fileno(f), line, (size_t)len, off) == len ? 0 : 1);
		int st;
		pid_t w;
		while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
			;
		if (w == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
			break;
		if (w == pid || errno != ECHILD)
			return -1;
		/* Resumed while the child was alive: it is not here. */
	}
	return fseek(f, off + len, SEEK_SET);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: run-prog OUT STEPS [--threads N] [--ignore-usr1] "
				"[--handle-usr1]\n");
		return 2;
	}
	steps = atoi(argv[2]);
	int ignore = 0, handle = 0, forks = 0;
	const char *lib = NULL, *sym = NULL;
	size_t mem = 0;
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			nthreads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--ignore-usr1"))
			ignore = 1;
		else if (!strcmp(argv[i], "--handle-usr1"))
			handle = 1;
		else if (!strcmp(argv[i], "--dlopen") && i + 2 < argc) {
			lib = argv[++i];
			sym = argv[++i];
		} else if (!strcmp(argv[i], "--fork"))
			forks = 1;
		else if (!strcmp(argv[i], "--loader") && i + 1 < argc)
			loader_lib = argv[++i];
		else if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem = (size_t)atoi(argv[++i]) << 20;
	}
	if (nthreads < 0 || nthreads > MAXT)
		return 2;
	if (ignore)
		signal(SIGUSR1, SIG_IGN);
	if (handle) {
		struct sigaction sa = {0};
		sa.sa_handler = on_usr1;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGUSR1, &sa, NULL);
	}
	FILE *f = fopen(argv[1], "w");
	if (!f)
		return 1;
	const char *(*fn)(void) = NULL;
	if (lib) {
		void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
		if (!h || !(fn = (const char *(*)(void))dlsym(h, sym))) {
			fprintf(stderr, "run-prog: %s\n", dlerror());
			return 1;
		}
	}
	unsigned long long *big = NULL, bighash = 0;
	size_t nbig = mem / sizeof *big;
	if (nbig) {
		if (!(big = malloc(nbig * sizeof *big)))
			return 1;
		for (size_t i = 0; i < nbig; i++)
			big[i] = i * 0x9e3779b97f4a7c15ull;
		fprintf(stderr, "filled\n");
	}
	pthread_t t[MAXT], lt;
	if (loader_lib && pthread_create(&lt, NULL, loader, NULL))
		return 1;
	if (nthreads) {
		pthread_barrier_init(&bar, NULL, (unsigned)nthreads + 1);
		for (long i = 0; i < nthreads; i++)
			pthread_create(&t[i], NULL, work, (void *)i);
	}
	for (int s = 0; s < steps; s++) {
		if (nthreads) {
			pthread_barrier_wait(&bar);
		} else {
			step(MAXT, s);
		}
		fprintf(f, "%d", s);
		for (int i = 0; i < nthreads; i++)
			fprintf(f, " %llx", acc[i]);
		fprintf(f, " %llx %llx", acc[MAXT], total);
		if (fn)
			fprintf(f, " %s", fn());
		if (nbig) {
			/* One page a step, spread over the block. */
			size_t at = ((size_t)s * 7919 * 512) % nbig & ~(size_t)511;
			for (size_t k = at; k < at + 512 && k < nbig; k++) {
				big[k] = big[k] * 31 + (unsigned long long)s;
				bighash = (bighash ^ big[k]) * 1099511628211ull;
			}
			fprintf(f, " %llx", bighash);
		}
		fprintf(f, "\n");
		if (forks && s % 25 == 0 && child_line(f, s))
			return 1;
		if (nthreads)
			pthread_barrier_wait(&bar);
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	if (loader_lib) {
		__atomic_store_n(&loader_stop, 1, __ATOMIC_RELEASE);
		pthread_join(lt, NULL);
	}
	free(big);
	if (fclose(f))
		return 1;
	if (ignore) {
		struct sigaction sa;
		sigaction(SIGUSR1, NULL, &sa);
		if (sa.sa_handler != SIG_IGN) {
			fprintf(stderr, "run-prog: SIGUSR1 is no longer ignored\n");
			return 1;
		}
	}
	if (handle)
		fprintf(stderr, "usr1 %d\n", (int)usr1);
	return 0;
}

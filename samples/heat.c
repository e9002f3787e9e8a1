/*
 * heat.c - a heat-diffusion simulation that survives being killed.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A square plate of N x N cells, its edges held cold except the top one,
 * which is held hot, and a hot disc held in its centre; every step sets
 * each inner cell to a weighted mean of itself and its four neighbours
 * (the explicit scheme of the heat equation), reading one grid and writing
 * the other, then swaps the two.
 *
 * Every K steps the program commits a snapshot to a chain in DIR.  Kill it
 * at any moment (kill -9, a power cut, the OOM killer) and run the same
 * command again: it goes on from the last commit instead of from step 0,
 * and ends with the same checksum as a run that was never interrupted.
 * The program needs no code to save or load its state: ckpt_open with
 * CKPT_F_RESUME brings the whole process back, grids, variables and open
 * files included, and the commit that wrote the snapshot returns a second
 * time, with CKPT_RESUMED.
 *
 * Usage: heat [-n N] [-s STEPS] [-k K] [-t T] [-d DIR] [-q] [-0 | --no-ckpt]
 *   -n N       cells on a side (default 6144: two grids of 288 MiB)
 *   -s STEPS   time steps (default 80)
 *   -k K       commit every K steps (default 20)
 *   -t T       worker threads (default 1: the main thread computes alone)
 *   -d DIR     the snapshot chain (default heat.ckpt)
 *   -q         no progress lines
 *   -0, --no-ckpt  run without ckpt, for a reference checksum
 * It prints a progress line every K steps and, at the end, "checksum HEX",
 * a hash of the final grid's bytes.  A finished run leaves its chain
 * behind: run it again and it resumes at its last commit and finishes
 * again; remove DIR to start from step 0.
 *
 * With -t T, T threads share each step, each computing a band of whole
 * rows; the main thread waits for them, then sets the fixed cells, swaps
 * the grids and commits while they wait for the next step.  Every cell is
 * computed by the same expression whatever thread computes it, and nothing
 * is summed across threads, so the checksum is the same for every T.  The
 * threads are part of what a resume brings back: a resumed run goes on
 * with its T threads, each where it waited.
 */
#include <ckpt.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HOT    100.0 /* the top edge and the disc */
#define ALPHA  0.2   /* diffusion number: stable below 0.25 */

/*
 * Everything the loop needs lives in this structure in .bss, which a
 * resume restores like the rest of the memory: after a resume the
 * pointers name the same two grids, already swapped as often as they had
 * been at the commit.  (Local variables would be restored too, stack and
 * registers included; a global makes the point easy to see.)
 */
static struct {
	size_t n;	    /* cells on a side */
	double *cur, *next; /* the grid at step `step`, and the one being written */
	long step;
} sim;

/*
 * The worker threads (-t T, T > 1).  The main thread starts step number
 * `generation` with a broadcast on `go`; each worker computes its band and
 * counts itself in `done`, and the last one signals `finished`.  A worker
 * counts itself and goes back to waiting in one hold of the lock, so once
 * the main thread sees every worker counted, all of them are waiting: the
 * commit that follows finds them still.
 */
static struct {
	long threads;
	pthread_t *ids;
	pthread_mutex_t lock;
	pthread_cond_t go, finished;
	long generation, done;
	int quit; /* set with the last generation: the workers return */
} pool = {.threads = 1,
	  .lock = PTHREAD_MUTEX_INITIALIZER,
	  .go = PTHREAD_COND_INITIALIZER,
	  .finished = PTHREAD_COND_INITIALIZER};

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sets the fixed cells: the edges and the hot disc. */
static void boundary(double *g)
{
	size_t n = sim.n;
	long r = (long)n / 16, c = (long)n / 2;
	for (size_t i = 0; i < n; i++) {
		g[i] = HOT;			 /* top */
		g[(n - 1) * n + i] = 0.0;	 /* bottom */
		g[i * n] = g[i * n + n - 1] = 0; /* left, right */
	}
	for (long dy = -r; dy <= r; dy++)
		for (long dx = -r; dx <= r; dx++)
			if (dx * dx + dy * dy <= r * r)
				g[(size_t)(c + dy) * n + (size_t)(c + dx)] = HOT;
}

/* The starting temperature: a smooth wave over the plate, so that every
 * page of the grid holds data from the first step on. */
static void initialise(double *g)
{
	size_t n = sim.n;
	for (size_t y = 0; y < n; y++)
		for (size_t x = 0; x < n; x++)
			g[y * n + x] = 20.0 + 10.0 * (double)((x * 7 + y * 3) % 64) / 64.0;
	boundary(g);
}

/* Rows [lo, hi) of sim.next from sim.cur (inner cells only). */
static void rows(size_t lo, size_t hi)
{
	size_t n = sim.n;
	const double *u = sim.cur;
	double *v = sim.next;
	for (size_t y = lo; y < hi; y++) {
		const double *up = u + (y - 1) * n, *row = u + y * n, *down = u + (y + 1) * n;
		double *out = v + y * n;
		for (size_t x = 1; x < n - 1; x++)
			out[x] = row[x] + ALPHA * (up[x] + down[x] + row[x - 1] + row[x + 1] -
						   4.0 * row[x]);
	}
}

/* The inner rows of worker w's band out of pool.threads. */
static void band(long w, size_t *lo, size_t *hi)
{
	size_t inner = sim.n - 2, t = (size_t)pool.threads;
	*lo = 1 + inner * (size_t)w / t;
	*hi = 1 + inner * (size_t)(w + 1) / t;
}

static void *worker(void *arg)
{
	long w = (long)(intptr_t)arg, seen = 0;
	size_t lo, hi;
	band(w, &lo, &hi);
	pthread_mutex_lock(&pool.lock);
	for (;;) {
		while (pool.generation == seen)
			pthread_cond_wait(&pool.go, &pool.lock);
		seen = pool.generation;
		if (pool.quit)
			break;
		pthread_mutex_unlock(&pool.lock);
		rows(lo, hi);
		pthread_mutex_lock(&pool.lock);
		if (++pool.done == pool.threads)
			pthread_cond_signal(&pool.finished);
	}
	pthread_mutex_unlock(&pool.lock);
	return NULL;
}

/* One time step: sim.next from sim.cur, then the swap. */
static void step(void)
{
	size_t n = sim.n;
	const double *u = sim.cur;
	double *v = sim.next;
	if (pool.threads == 1) {
		rows(1, n - 1);
	} else {
		pthread_mutex_lock(&pool.lock);
		pool.done = 0;
		pool.generation++;
		pthread_cond_broadcast(&pool.go);
		while (pool.done < pool.threads)
			pthread_cond_wait(&pool.finished, &pool.lock);
		pthread_mutex_unlock(&pool.lock);
	}
	/* The rows and columns not computed keep their fixed values. */
	memcpy(v, u, n * sizeof *v);
	memcpy(v + (n - 1) * n, u + (n - 1) * n, n * sizeof *v);
	for (size_t y = 1; y < n - 1; y++) {
		v[y * n] = u[y * n];
		v[y * n + n - 1] = u[y * n + n - 1];
	}
	boundary(v);
	double *t = sim.cur;
	sim.cur = sim.next;
	sim.next = t;
	sim.step++;
}

/* FNV-1a over the grid's bytes, eight at a time: the same bits give the
 * same checksum, whatever happened to the process in between. */
static uint64_t checksum(const double *g, size_t cells)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (size_t i = 0; i < cells; i++) {
		uint64_t w;
		memcpy(&w, &g[i], sizeof w);
		h = (h ^ w) * 0x100000001b3u;
	}
	return h;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: heat [-n N] [-s STEPS] [-k K] [-t T] [-d DIR] [-q] [-0 | --no-ckpt]\n");
	exit(2);
}

static long number(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < 1)
		usage();
	return v;
}

/* Reports a failed ckpt call and exits. */
static void check(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "heat: %s: %s (%s)\n", what, ckpt_strerror(rc), ckpt_last_error());
		exit(1);
	}
}

int main(int argc, char **argv)
{
	const char *dir = "heat.ckpt";
	long n = 6144, steps = 80, every = 20;
	int quiet = 0, use_ckpt = 1;

	/* Reading the options changes nothing outside the process, so it may
	 * come before ckpt_open. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-q"))
			quiet = 1;
		else if (!strcmp(a, "-0") || !strcmp(a, "--no-ckpt"))
			use_ckpt = 0;
		else if (i + 1 < argc && !strcmp(a, "-n"))
			n = number(argv[++i]);
		else if (i + 1 < argc && !strcmp(a, "-s"))
			steps = number(argv[++i]);
		else if (i + 1 < argc && !strcmp(a, "-k"))
			every = number(argv[++i]);
		else if (i + 1 < argc && !strcmp(a, "-t"))
			pool.threads = number(argv[++i]);
		else if (i + 1 < argc && !strcmp(a, "-d"))
			dir = argv[++i];
		else
			usage();
	}
	if (n < 64 || pool.threads > n - 2 || pool.threads > 1024)
		usage();

	/*
	 * First thing: if DIR holds a chain, this call does not return; the
	 * process continues from the ckpt_commit below that wrote the newest
	 * snapshot.  Otherwise it starts a new chain in DIR and returns 0.
	 * To line the memory of the two runs up, it starts the program once
	 * more with address-space randomisation off, so whatever comes before
	 * it runs twice: nothing printed, no file opened.
	 */
	ckpt_t *c = NULL;
	if (use_ckpt)
		check(ckpt_open(&c, dir, &(ckpt_options){.flags = CKPT_F_RESUME}), "ckpt_open");

	sim.n = (size_t)n;
	size_t cells = sim.n * sim.n;
	sim.cur = malloc(cells * sizeof(double));
	sim.next = malloc(cells * sizeof(double));
	if (!sim.cur || !sim.next) {
		fprintf(stderr, "heat: cannot allocate two %ld x %ld grids\n", n, n);
		return 1;
	}
	initialise(sim.cur); /* step() writes every cell of the other one */

	/* The workers wait for their first step from the start; a resumed
	 * run finds them as they were at its commit. */
	if (pool.threads > 1) {
		pool.ids = calloc((size_t)pool.threads, sizeof *pool.ids);
		if (!pool.ids) {
			fprintf(stderr, "heat: out of memory\n");
			return 1;
		}
		for (long w = 0; w < pool.threads; w++) {
			int e = pthread_create(&pool.ids[w], NULL, worker, (void *)(intptr_t)w);
			if (e) {
				fprintf(stderr, "heat: starting thread %ld: %s\n", w, strerror(e));
				return 1;
			}
		}
	}

	/* From here on ckpt sees every page the program writes. */
	if (use_ckpt)
		check(ckpt_begin(c), "ckpt_begin");
	double start = seconds();
	while (sim.step < steps) {
		step();
		if (sim.step % every || sim.step == steps)
			continue;
		if (!quiet)
			printf("step %6ld  centre-left %8.4f  %7.1f s\n", sim.step,
			       sim.cur[sim.n / 2 * sim.n + sim.n / 4], seconds() - start);
		if (!use_ckpt)
			continue;
		/*
		 * The pages written since the last commit become the next
		 * snapshot (stdout is flushed first, so the line above is
		 * printed exactly once).  In a resumed process this call
		 * returns again, with CKPT_RESUMED.
		 */
		uint64_t id;
		int rc = ckpt_commit(c, &id);
		check(rc, "ckpt_commit");
		if (rc == CKPT_RESUMED) {
			fprintf(stderr, "heat: resumed at step %ld (snapshot %llu)\n", sim.step,
				(unsigned long long)id);
			start = seconds(); /* times from here on are this process' */
		}
	}
	if (pool.threads > 1) {
		pthread_mutex_lock(&pool.lock);
		pool.quit = 1;
		pool.generation++;
		pthread_cond_broadcast(&pool.go);
		pthread_mutex_unlock(&pool.lock);
		for (long w = 0; w < pool.threads; w++)
			pthread_join(pool.ids[w], NULL);
		free(pool.ids);
	}
	if (use_ckpt)
		ckpt_close(c);
	printf("checksum %016llx\n", (unsigned long long)checksum(sim.cur, cells));
	free(sim.cur);
	free(sim.next);
	return 0;
}

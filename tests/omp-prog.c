/*
 * omp-prog.c - an OpenMP stencil for tests/resume-threads.sh: killed at any
 * commit and run again, it must end exactly as a run that was never
 * interrupted, with the same team of threads.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Usage: omp-prog --dir DIR --out FILE [--seed S] [--steps N] [--every K]
 *                 [--kill-at S[+E][,S[+E]...]]
 *
 * A heat stencil over two grids of 512 x 512 doubles (2 MiB each): each
 * step is a parallel region whose `omp for` shares out the rows, with two
 * reductions, a wrapping sum of the rows' hashes and the largest cell
 * (both independent of the order the partial results are combined in, so
 * bit-exact for any team).  Thread 0 of each region notes the team's size.
 * Between the regions, in the serial part, the step's line goes to FILE and
 * every K steps (not at the last) the program commits.  With
 * OMP_NUM_THREADS=1 libgomp starts no thread and the program has one.
 *
 * --kill-at S[+E],...: right after the commit of step S returns 0 (not
 * CKPT_RESUMED), E more steps (default 0, at most K - 1) and SIGKILL.
 *
 * Output:
 *   stderr  "max_threads M" at the start; "commit ID step S team T" after
 *           each commit (T: the size of the last region's team);
 *           "resumed ID step S team T" when a commit returns CKPT_RESUMED,
 *           then "team after resume T" from the first region after it;
 *           "killing at step S" before a SIGKILL.
 *   stdout  at the end: "max_threads M" (omp_get_max_threads()), "team T"
 *           (the size of every region's team; "team A..B" if they were not
 *           all the same), "grid HEX" (FNV-1a of the final grid's bytes),
 *           "acc sum HEX max HEX" (the reductions over all steps).
 *   FILE    "S SUM MAXBITS" for each step S, then "grid" and the final
 *           grid's raw bytes.
 * Exit status: 0 done; 1 a system call or a ckpt call failed; 2 usage; 3
 * ckpt_open failed (ckpt_strerror, the code's name and ckpt_last_error on
 * stderr).
 */
#include <ckpt.h>

#include <errno.h>
#include <omp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROWS	  512
#define COLS	  512
#define MAX_KILLS 8
#define ALPHA	  0.2

static long opt_steps = 60, opt_every = 10;
static uint64_t opt_seed = 1;
static struct {
	long step, extra;
} kills[MAX_KILLS];
static int nkills;

static double *grid[2]; /* grid[s & 1] holds step s */
static uint64_t acc_sum;
static double acc_max;
static int team, team_min, team_max; /* the last region's team; the extremes */

static void fail(const char *what)
{
	fprintf(stderr, "omp-prog: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void check(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "omp-prog: %s: %s (%s): %s\n", what, ckpt_strerror(rc),
			ckpt_err_name(rc), ckpt_last_error());
		exit(1);
	}
}

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

/* Step s from step s - 1, in a parallel region. */
static void step(long s)
{
	const double *u = grid[(s - 1) & 1];
	double *v = grid[s & 1];
	uint64_t sum = 0;
	double max = 0;
#pragma omp parallel reduction(+ : sum) reduction(max : max)
	{
		if (omp_get_thread_num() == 0)
			team = omp_get_num_threads();
#pragma omp for schedule(static)
		for (long y = 1; y < ROWS - 1; y++) {
			const double *up = u + (y - 1) * COLS, *row = u + y * COLS;
			const double *down = u + (y + 1) * COLS;
			double *o = v + y * COLS;
			o[0] = row[0];
			o[COLS - 1] = row[COLS - 1];
			for (long x = 1; x < COLS - 1; x++)
				o[x] = row[x] + ALPHA * (up[x] + down[x] + row[x - 1] + row[x + 1] -
							 4.0 * row[x]);
			for (long x = 0; x < COLS; x++)
				if (o[x] > max)
					max = o[x];
			sum += fnv(0xcbf29ce484222325u ^ (uint64_t)y, o, COLS);
		}
	}
	acc_sum += sum;
	if (max > acc_max)
		acc_max = max;
	if (team_min == 0 || team < team_min)
		team_min = team;
	if (team > team_max)
		team_max = team;
}

static void usage(void)
{
	fprintf(stderr, "usage: omp-prog --dir DIR --out FILE [--seed S] [--steps N] "
			"[--every K] [--kill-at S[+E][,S[+E]...]]\n");
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

static void die_now(long s)
{
	fprintf(stderr, "killing at step %ld\n", s);
	kill(getpid(), SIGKILL);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *out_path = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
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
		else if (!strcmp(a, "--kill-at"))
			parse_kills(argv[++i]);
		else
			usage();
	}
	if (!dir || !out_path)
		usage();
	for (int i = 0; i < nkills; i++)
		if (kills[i].step % opt_every || kills[i].step >= opt_steps ||
		    kills[i].extra >= opt_every)
			usage();

	/* CKPT_TEST_LAZY=1 (tests/resume-lazy.sh): resumed with CKPT_F_LAZY. */
	const char *lazy = getenv("CKPT_TEST_LAZY");
	unsigned flags = CKPT_F_RESUME | (lazy && lazy[0] == '1' ? CKPT_F_LAZY : 0);
	/* First thing: with a chain in DIR this does not return. */
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &(ckpt_options){.flags = flags});
	if (rc < 0) {
		fprintf(stderr, "omp-prog: ckpt_open: %s (%s): %s\n", ckpt_strerror(rc),
			ckpt_err_name(rc), ckpt_last_error());
		return 3;
	}

	grid[0] = malloc(ROWS * COLS * sizeof(double));
	grid[1] = malloc(ROWS * COLS * sizeof(double));
	FILE *out = fopen(out_path, "w");
	if (!grid[0] || !grid[1] || !out)
		fail("setting up");
	uint64_t x = 0x9e3779b97f4a7c15u ^ (opt_seed * 0x2545f4914f6cdd1du);
	for (long i = 0; i < ROWS * COLS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		grid[0][i] = (double)(x >> 11) / (double)(1ull << 53) * 100.0;
	}
	memcpy(grid[1], grid[0], ROWS * COLS * sizeof(double));
	fprintf(stderr, "max_threads %d\n", omp_get_max_threads());

	check(ckpt_begin(c), "ckpt_begin");
	long kill_step = -1;
	int report_team = 0;
	for (long s = 1; s <= opt_steps; s++) {
		step(s);
		if (report_team) {
			fprintf(stderr, "team after resume %d\n", team);
			report_team = 0;
		}
		fprintf(out, "%ld %016llx %016llx\n", s, (unsigned long long)acc_sum,
			(unsigned long long)bits(acc_max));
		if (s % opt_every == 0 && s < opt_steps) {
			uint64_t id = 0;
			rc = ckpt_commit(c, &id);
			check(rc, "ckpt_commit");
			fprintf(stderr, "%s %llu step %ld team %d\n",
				rc == CKPT_RESUMED ? "resumed" : "commit", (unsigned long long)id,
				s, team);
			report_team = rc == CKPT_RESUMED;
			for (int i = 0; rc == 0 && i < nkills; i++)
				if (kills[i].step == s) {
					if (kills[i].extra == 0)
						die_now(s);
					kill_step = s + kills[i].extra;
				}
		}
		if (s == kill_step)
			die_now(s);
	}
	check(ckpt_end(c), "ckpt_end");
	ckpt_close(c);

	const double *final = grid[opt_steps & 1];
	fprintf(out, "grid\n");
	if (fwrite(final, sizeof(double), ROWS * COLS, out) != ROWS * COLS || fclose(out))
		fail(out_path);
	printf("max_threads %d\n", omp_get_max_threads());
	if (team_min == team_max)
		printf("team %d\n", team_max);
	else
		printf("team %d..%d\n", team_min, team_max);
	printf("grid %016llx\n", (unsigned long long)fnv(0xcbf29ce484222325u, final, ROWS * COLS));
	printf("acc sum %016llx max %016llx\n", (unsigned long long)acc_sum,
	       (unsigned long long)bits(acc_max));
	return 0;
}

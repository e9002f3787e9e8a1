/*
 * heat-mpi.c - the heat simulation of heat.c, split across MPI ranks, that
 * survives a rank being killed.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The same plate as samples/heat (N x N cells, the top edge and a disc in
 * the centre held hot, the other edges cold, the explicit scheme), cut into
 * bands of whole rows, one a rank.  Before each step every rank sends its
 * first and last rows to the ranks above and below it and receives theirs
 * (the halo), so that each computes its band exactly as one process would
 * compute those rows: the final grid, and its checksum, are samples/heat's
 * for the same N and steps, whatever the number of ranks.
 *
 * Every K steps the ranks make a collective checkpoint (ckpt_mpi_commit):
 * each commits the pages it wrote since the last one of its two grids and
 * its step counter, the only state it names (ckpt_protect).  Kill a rank
 * (mpirun then ends the job) and run the same mpirun command again: every
 * rank comes back to the newest complete epoch, its arrays refilled by
 * name wherever malloc put them this time, and the run ends with the
 * checksum of one that was never interrupted.  MPI, the halo buffers and
 * everything else start fresh.
 *
 * Usage: mpirun -np P heat-mpi [-n N] [-s STEPS] [-k K] [-d DIR] [-a] [-F] [-q] [-0]
 *   -n N       cells on a side (default 2048; at least 64 and 2 rows a rank)
 *   -s STEPS   time steps (default 200)
 *   -k K       a checkpoint every K steps (default 20)
 *   -d DIR     the job's checkpoint folder (default heat-mpi.ckpt)
 *   -a         checkpoints written in the background (CKPT_F_ASYNC)
 *   -F         a fresh job only: without CKPT_F_RESUME, a folder holding a
 *              complete epoch is refused
 *   -q         no progress lines
 *   -0         run without ckpt, for a reference checksum
 * Rank 0 prints a line at every complete checkpoint and "checksum HEX" at
 * the end: the FNV-1a hash of the whole final grid, row by row, as heat.c
 * prints it.  A rank that resumes says so on stderr ("heat-mpi: rank R
 * resumed at epoch E, step S").  A checkpoint that fails is reported by
 * every rank ("heat-mpi: rank R: step S: ckpt_mpi_commit: ...") and the run
 * goes on: the next one stores what this one should have.
 *
 * For tests, two variables make a run fail on purpose:
 *   HEAT_KILL=R:S        rank R kills itself (SIGKILL) once it has
 *                        computed step S
 *   HEAT_FAULT=R:S:SPEC  rank R sets CKPT_FAULT=SPEC (see src/inject.h:
 *                        write:1=ENOSPC, fsync:1=SIGKILL...) just before the
 *                        checkpoint of step S
 */
#include <ckpt-mpi.h>

#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOT   100.0 /* the top edge and the disc */
#define ALPHA 0.2   /* diffusion number: stable below 0.25 */

/* This rank's part of the plate: rows [lo, hi) of the n x n grid, held with
 * one halo row above and one below (local row y - lo + 1 is global row y).
 * grid[step & 1] is the temperature at `step`: the two grids alternate,
 * so the step counter alone says which is current. */
static struct {
	long n, lo, hi;
	size_t cells; /* of one local grid, halos included */
	double *grid[2];
	int rank, size;
} sim;

/* What a checkpoint holds besides the grids: on a page of its own, so that
 * the other globals' writes never dirty it. */
static struct {
	long step;
} state __attribute__((aligned(4096)));

static double *row_of(double *g, long y)
{
	return g + (size_t)(y - sim.lo + 1) * (size_t)sim.n;
}

/* Sets cell (y, x) of the global grid to v if this rank holds row y. */
static void put(double *g, long y, long x, double v)
{
	if (y >= sim.lo && y < sim.hi)
		row_of(g, y)[x] = v;
}

/* heat.c's boundary(), write for write in the same order (the corners are
 * whatever the last write of the sequence leaves), on this rank's rows. */
static void boundary(double *g)
{
	long n = sim.n, r = n / 16, c = n / 2;
	for (long i = 0; i < n; i++) {
		put(g, 0, i, HOT);
		put(g, n - 1, i, 0.0);
		put(g, i, 0, 0);
		put(g, i, n - 1, 0);
	}
	for (long dy = -r; dy <= r; dy++)
		for (long dx = -r; dx <= r; dx++)
			if (dx * dx + dy * dy <= r * r)
				put(g, c + dy, c + dx, HOT);
}

static void initialise(double *g)
{
	long n = sim.n;
	for (long y = sim.lo; y < sim.hi; y++)
		for (long x = 0; x < n; x++)
			row_of(g, y)[x] = 20.0 + 10.0 * (double)((x * 7 + y * 3) % 64) / 64.0;
	boundary(g);
}

/* The rows next to this rank's band, from the ranks that hold them.  They
 * arrive in buffers of their own and are copied into the grid: memory a
 * transport writes from outside the process (the kernel's cross-memory
 * copy) must not be memory ckpt tracks with page protection. */
static double *halo_in[2];

static void exchange(double *g)
{
	int up = sim.rank > 0 ? sim.rank - 1 : MPI_PROC_NULL;
	int down = sim.rank < sim.size - 1 ? sim.rank + 1 : MPI_PROC_NULL;
	int n = (int)sim.n;
	MPI_Sendrecv(row_of(g, sim.lo), n, MPI_DOUBLE, up, 0, halo_in[1], n, MPI_DOUBLE, down, 0,
		     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	MPI_Sendrecv(row_of(g, sim.hi - 1), n, MPI_DOUBLE, down, 1, halo_in[0], n, MPI_DOUBLE, up,
		     1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	if (up != MPI_PROC_NULL)
		memcpy(row_of(g, sim.lo - 1), halo_in[0], (size_t)n * sizeof(double));
	if (down != MPI_PROC_NULL)
		memcpy(row_of(g, sim.hi), halo_in[1], (size_t)n * sizeof(double));
}

/* One time step, as heat.c's step(): the inner cells of this rank's rows
 * from the current grid, the fixed cells copied, the boundary set. */
static void step(void)
{
	long n = sim.n;
	double *u = sim.grid[state.step & 1], *v = sim.grid[(state.step + 1) & 1];
	exchange(u);
	long first = sim.lo > 1 ? sim.lo : 1, end = sim.hi < n - 1 ? sim.hi : n - 1;
	for (long y = first; y < end; y++) {
		const double *up = row_of(u, y - 1), *row = row_of(u, y), *down = row_of(u, y + 1);
		double *out = row_of(v, y);
		for (long x = 1; x < n - 1; x++)
			out[x] = row[x] +
				 ALPHA * (up[x] + down[x] + row[x - 1] + row[x + 1] - 4.0 * row[x]);
	}
	for (long y = sim.lo; y < sim.hi; y++) {
		if (y == 0 || y == n - 1) {
			memcpy(row_of(v, y), row_of(u, y), (size_t)n * sizeof(double));
		} else {
			row_of(v, y)[0] = row_of(u, y)[0];
			row_of(v, y)[n - 1] = row_of(u, y)[n - 1];
		}
	}
	boundary(v);
	state.step++;
}

/* FNV-1a over the whole grid's bytes, row by row (heat.c's checksum), on
 * rank 0 from every rank's rows. */
static int checksum(uint64_t *out)
{
	long n = sim.n;
	int *counts = NULL, *displs = NULL;
	double *all = NULL;
	if (sim.rank == 0) {
		counts = calloc((size_t)sim.size, sizeof *counts);
		displs = calloc((size_t)sim.size, sizeof *displs);
		all = malloc((size_t)n * (size_t)n * sizeof *all);
		if (!counts || !displs || !all)
			return -1;
		for (int r = 0; r < sim.size; r++) {
			long lo = n * r / sim.size, hi = n * (r + 1) / sim.size;
			counts[r] = (int)((hi - lo) * n);
			displs[r] = (int)(lo * n);
		}
	}
	double *cur = sim.grid[state.step & 1];
	MPI_Gatherv(row_of(cur, sim.lo), (int)((sim.hi - sim.lo) * n), MPI_DOUBLE, all, counts,
		    displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
	if (sim.rank == 0) {
		uint64_t h = 0xcbf29ce484222325u;
		for (size_t i = 0; i < (size_t)n * (size_t)n; i++) {
			uint64_t w;
			memcpy(&w, &all[i], sizeof w);
			h = (h ^ w) * 0x100000001b3u;
		}
		*out = h;
	}
	free(counts);
	free(displs);
	free(all);
	return 0;
}

static void usage(void)
{
	if (sim.rank == 0)
		fprintf(stderr,
			"usage: heat-mpi [-n N] [-s STEPS] [-k K] [-d DIR] [-a] [-q] [-0]\n");
	MPI_Finalize();
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

/* Reports a failed call of this rank's own (ckpt_protect, ckpt_begin) and
 * ends the job: the other ranks cannot know. */
static void check(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "heat-mpi: rank %d: %s: %s: %s\n", sim.rank, what,
			ckpt_err_name(rc), ckpt_last_error());
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
}

/* Reports a failed collective call (ckpt_mpi_*), which failed on every
 * rank alike, and leaves as every other rank does. */
static void check_all(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "heat-mpi: rank %d: %s: %s: %s\n", sim.rank, what,
			ckpt_err_name(rc), ckpt_mpi_last_error());
		MPI_Finalize();
		exit(1);
	}
}

/* HEAT_KILL=R:S and HEAT_FAULT=R:S:SPEC for this rank: the step, and the
 * specification of the fault; 0 when the variable names another rank. */
static long on_this_rank(const char *var, const char **spec)
{
	const char *v = getenv(var);
	char *end;
	if (!v || strtol(v, &end, 10) != sim.rank || *end != ':')
		return 0;
	long s = strtol(end + 1, &end, 10);
	if (spec)
		*spec = *end == ':' ? end + 1 : NULL;
	return s;
}

int main(int argc, char **argv)
{
	const char *dir = "heat-mpi.ckpt";
	long steps = 200, every = 20;
	int quiet = 0, use_ckpt = 1;
	ckpt_options opt;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &sim.rank);
	MPI_Comm_size(MPI_COMM_WORLD, &sim.size);
	ckpt_options_init(&opt);
	/* The same command starts the job and restarts it: with a complete
	 * epoch in the folder, the job goes on from there. */
	opt.flags = CKPT_F_RESUME;
	sim.n = 2048;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-q"))
			quiet = 1;
		else if (!strcmp(a, "-0"))
			use_ckpt = 0;
		else if (!strcmp(a, "-a"))
			opt.flags |= CKPT_F_ASYNC;
		else if (!strcmp(a, "-F"))
			opt.flags &= ~CKPT_F_RESUME;
		else if (i + 1 < argc && !strcmp(a, "-n"))
			sim.n = number(argv[++i]);
		else if (i + 1 < argc && !strcmp(a, "-s"))
			steps = number(argv[++i]);
		else if (i + 1 < argc && !strcmp(a, "-k"))
			every = number(argv[++i]);
		else if (i + 1 < argc && !strcmp(a, "-d"))
			dir = argv[++i];
		else
			usage();
	}
	if (sim.n < 64 || sim.n < 2L * sim.size)
		usage();
	sim.lo = sim.n * sim.rank / sim.size;
	sim.hi = sim.n * (sim.rank + 1) / sim.size;
	sim.cells = (size_t)(sim.hi - sim.lo + 2) * (size_t)sim.n;
	for (int k = 0; k < 2; k++) {
		sim.grid[k] = calloc(sim.cells, sizeof(double));
		halo_in[k] = calloc((size_t)sim.n, sizeof(double));
		if (!sim.grid[k] || !halo_in[k]) {
			fprintf(stderr, "heat-mpi: rank %d: out of memory\n", sim.rank);
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
	}
	initialise(sim.grid[0]);

	/*
	 * The checkpoint names what it holds: the two grids and the step.  In
	 * a restarted job ckpt_mpi_open (CKPT_F_RESUME) finds the newest
	 * complete epoch, and
	 * each ckpt_protect below fills its region from this rank's snapshot
	 * of it, by name, wherever the arrays are now.
	 */
	ckpt_t *c = NULL;
	uint64_t epoch = 0;
	if (use_ckpt) {
		int rc = ckpt_mpi_open(&c, MPI_COMM_WORLD, dir, &opt);
		check_all(rc, "ckpt_mpi_open");
		check(ckpt_protect(c, "grid-0", sim.grid[0], sim.cells * sizeof(double)),
		      "ckpt_protect grid-0");
		check(ckpt_protect(c, "grid-1", sim.grid[1], sim.cells * sizeof(double)),
		      "ckpt_protect grid-1");
		check(ckpt_protect(c, "step", &state, sizeof state), "ckpt_protect step");
		if (rc == CKPT_RESUMED) {
			check_all(ckpt_mpi_epoch(c, &epoch), "ckpt_mpi_epoch");
			fprintf(stderr, "heat-mpi: rank %d resumed at epoch %llu, step %ld\n",
				sim.rank, (unsigned long long)epoch, state.step);
		}
		check(ckpt_begin(c), "ckpt_begin");
	}

	const char *fault = NULL;
	long kill_at = on_this_rank("HEAT_KILL", NULL);
	long fault_at = 0;
	/* Every rank reads the step of the fault: in the background mode all
	 * complete the epoch in flight first, so that the variable changes
	 * while no writer of ckpt's reads it. */
	const char *fv = getenv("HEAT_FAULT");
	if (fv && strchr(fv, ':'))
		fault_at = strtol(strchr(fv, ':') + 1, NULL, 10);
	on_this_rank("HEAT_FAULT", &fault);

	while (state.step < steps) {
		step();
		if (state.step == kill_at)
			raise(SIGKILL);
		if (state.step % every || state.step == steps || !use_ckpt)
			continue;
		if (state.step == fault_at) {
			if (opt.flags & CKPT_F_ASYNC)
				check_all(ckpt_mpi_wait(c, NULL), "ckpt_mpi_wait");
			if (fault)
				setenv("CKPT_FAULT", fault, 1);
		}
		int rc = ckpt_mpi_commit(c, &epoch);
		if (rc < 0) {
			fprintf(stderr, "heat-mpi: rank %d: step %ld: ckpt_mpi_commit: %s: %s\n",
				sim.rank, state.step, ckpt_err_name(rc), ckpt_mpi_last_error());
			continue;
		}
		if (!quiet && sim.rank == 0)
			printf("step %6ld  epoch %llu%s\n", state.step, (unsigned long long)epoch,
			       (opt.flags & CKPT_F_ASYNC) ? " (in flight)" : "");
	}
	if (use_ckpt) {
		int rc = ckpt_mpi_close(c);
		if (rc < 0)
			fprintf(stderr, "heat-mpi: rank %d: ckpt_mpi_close: %s: %s\n", sim.rank,
				ckpt_err_name(rc), ckpt_mpi_last_error());
	}
	uint64_t sum = 0;
	if (checksum(&sum) != 0) {
		fprintf(stderr, "heat-mpi: out of memory for the checksum\n");
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	if (sim.rank == 0)
		printf("checksum %016llx\n", (unsigned long long)sum);
	for (int k = 0; k < 2; k++) {
		free(sim.grid[k]);
		free(halo_in[k]);
	}
	MPI_Finalize();
	return 0;
}

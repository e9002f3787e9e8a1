/*
 * bench/mpi.c - coordinated checkpoints of an MPI job: the pause and the
 * bytes of an epoch per rank, against a single process committing the same
 * pages and against the full copy per rank that VeloC or SCR would write.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Run under mpirun (make bench does: 4 ranks): every rank holds a field of
 * RANK_MIB MiB of floats (smooth values plus noise, as bench/pause), named
 * as one region, and STEPS times rewrites 5% of its pages, chosen at
 * random, then checkpoints.  Measured, each in the same run:
 *   single   rank 0 alone (the others wait), a handle of its own with the
 *            same region and CKPT_F_ASYNC: the pause of ckpt_commit, the
 *            snapshot made durable (ckpt_wait) before the next step;
 *   each     the same on every rank at once, each with a handle and chain
 *            of its own and no MPI between them: the same commits under
 *            the same sharing of the CPUs as the job's (4 ranks on a
 *            2-CPU machine each get half a CPU, whatever ckpt does);
 *   sync     every rank, ckpt_mpi_commit without CKPT_F_ASYNC: the pause
 *            is the whole epoch (commits, agreement, manifest);
 *   async    the same with CKPT_F_ASYNC, the epoch completed (ckpt_mpi_wait)
 *            before the next step, as for `single`;
 *   full     every rank writes its whole field to a file of its own and
 *            fsyncs it: what an application-level library that does not
 *            track writes stores at every checkpoint.
 * Per mode: the median over steps of the slowest rank's pause, the mean
 * over ranks, and the bytes a rank wrote per epoch (its snapshot file).
 * The bars (#14): async pause per rank <= 1.5 x a single process's async
 * pause for the same pages, judged against `each` (what coordination adds
 * to the same commit; `single` is printed beside it); bytes per rank per
 * epoch <= 1/10 of the full copy.
 *
 * Usage: mpirun -np 4 bench/mpi [--quick]   (or CKPT_BENCH_QUICK=1: 32 MiB
 * per rank, fewer steps; the bars are printed but not judged).  Chains go
 * under /tmp and are removed afterwards.
 */
#include <ckpt-mpi.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "field.h"

#define MIB ((size_t)1 << 20)
#define BAR_ASYNC_SINGLE 1.5
#define BAR_BYTES_FULL 0.1

static size_t pagesz;
static int rank, nranks;

__attribute__((noreturn)) static void die(const char *what, const char *why)
{
	fprintf(stderr, "mpi bench, rank %d: %s: %s\n", rank, what, why);
	MPI_Abort(MPI_COMM_WORLD, 1);
	exit(1);
}

static void *map(size_t bytes)
{
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap", strerror(errno));
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

/* The field and the choice of pages, the same in every mode. */
struct field {
	char *p;
	size_t bytes, npages, ndirty;
	size_t *perm;
	uint64_t seed;
};

static void field_init(struct field *f, size_t bytes)
{
	f->bytes = bytes;
	f->npages = bytes / pagesz;
	f->ndirty = f->npages / 20;
	f->p = map(bytes);
	f->perm = map(f->npages * sizeof *f->perm);
	f->seed = 0x2545f4914f6cdd1du + (uint64_t)rank * 7919;
	for (size_t i = 0; i < f->npages; i++) {
		fill_page((float *)(f->p + i * pagesz), pagesz, i, 0, &f->seed);
		f->perm[i] = i;
	}
}

/* 5% of the pages, distinct, rewritten for step s. */
static void field_step(struct field *f, int s)
{
	for (size_t i = 0; i < f->ndirty; i++) {
		size_t j = i + xorshift64(&f->seed) % (f->npages - i), t = f->perm[i];
		f->perm[i] = f->perm[j];
		f->perm[j] = t;
		fill_page((float *)(f->p + f->perm[i] * pagesz), pagesz, f->perm[i], (unsigned)s + 1,
			  &f->seed);
	}
}

struct fig {
	double pause_ms[MAXSTEPS]; /* this rank's */
	double bytes[MAXSTEPS];    /* this rank's snapshot file */
};

/* A fresh directory under /tmp, made by rank 0 and told to all. */
static void job_dir(char *out, size_t len, const char *what)
{
	if (rank == 0) {
		char tmpl[] = "/tmp/ckpt-mpi-bench-XXXXXX";
		if (!mkdtemp(tmpl))
			die("mkdtemp", strerror(errno));
		snprintf(out, len, "%s/%s", tmpl, what);
	}
	MPI_Bcast(out, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD);
}

/* Removes the directory job_dir made (the temporary one holding dir). */
static void remove_dir(const char *dir)
{
	MPI_Barrier(MPI_COMM_WORLD);
	if (rank == 0) {
		char parent[256], cmd[600];
		snprintf(parent, sizeof parent, "%s", dir);
		char *slash = strrchr(parent, '/');
		if (slash)
			*slash = '\0';
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", parent);
		if (system(cmd) != 0)
			fprintf(stderr, "mpi bench: could not remove %s\n", parent);
	}
}

/* A handle of its own, the same region, async: rank 0 alone (all 0), or
 * every rank at once, uncoordinated (all 1). */
static void run_single(struct field *f, int steps, int all, struct fig *out)
{
	char dir[256], mine[300];
	job_dir(dir, sizeof dir, all ? "each" : "single");
	snprintf(mine, sizeof mine, "%s-%d", dir, rank);
	memcpy(dir, mine, sizeof dir - 1);
	if (all || rank == 0) {
		ckpt_t *c;
		ckpt_options o;
		ckpt_options_init(&o);
		o.flags = CKPT_F_ASYNC;
		if (ckpt_open(&c, dir, &o) || ckpt_protect(c, "field", f->p, f->bytes) ||
		    ckpt_begin(c) || ckpt_commit(c, NULL) || ckpt_wait(c, NULL))
			die("single: base", ckpt_last_error());
		for (int s = 0; s < steps; s++) {
			field_step(f, s);
			if (all)
				MPI_Barrier(MPI_COMM_WORLD);
			uint64_t t0 = now_ns();
			if (ckpt_commit(c, NULL))
				die("single: ckpt_commit", ckpt_last_error());
			uint64_t t1 = now_ns();
			if (ckpt_wait(c, NULL))
				die("single: ckpt_wait", ckpt_last_error());
			ckpt_stats st;
			ckpt_stats(c, &st);
			out->pause_ms[s] = (double)(t1 - t0) / 1e6;
			out->bytes[s] = (double)st.commit_file_bytes;
		}
		ckpt_close(c);
	}
	remove_dir(dir);
}

static void run_job(struct field *f, int steps, int async, struct fig *out)
{
	char dir[256];
	job_dir(dir, sizeof dir, async ? "async" : "sync");
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = async ? CKPT_F_ASYNC : 0;
	int rc = ckpt_mpi_open(&c, MPI_COMM_WORLD, dir, &o);
	if (rc < 0)
		die("ckpt_mpi_open", ckpt_mpi_last_error());
	if (ckpt_protect(c, "field", f->p, f->bytes) || ckpt_begin(c))
		die("protect and begin", ckpt_last_error());
	uint64_t epoch;
	if (ckpt_mpi_commit(c, &epoch) || ckpt_mpi_wait(c, &epoch))
		die("the first epoch", ckpt_mpi_last_error());
	for (int s = 0; s < steps; s++) {
		field_step(f, s);
		MPI_Barrier(MPI_COMM_WORLD);
		uint64_t t0 = now_ns();
		if (ckpt_mpi_commit(c, &epoch))
			die("ckpt_mpi_commit", ckpt_mpi_last_error());
		uint64_t t1 = now_ns();
		if (ckpt_mpi_wait(c, &epoch))
			die("ckpt_mpi_wait", ckpt_mpi_last_error());
		ckpt_stats st;
		ckpt_stats(c, &st);
		out->pause_ms[s] = (double)(t1 - t0) / 1e6;
		out->bytes[s] = (double)st.commit_file_bytes;
	}
	if (ckpt_mpi_close(c))
		die("ckpt_mpi_close", ckpt_mpi_last_error());
	remove_dir(dir);
}

/* Every rank writes its field whole and fsyncs it. */
static void run_full(struct field *f, int steps, struct fig *out)
{
	char dir[256], path[300];
	job_dir(dir, sizeof dir, "full");
	if (rank == 0 && mkdir(dir, 0700) != 0)
		die("mkdir", strerror(errno));
	MPI_Barrier(MPI_COMM_WORLD);
	snprintf(path, sizeof path, "%s/rank-%05d", dir, rank);
	for (int s = 0; s < steps; s++) {
		field_step(f, s);
		MPI_Barrier(MPI_COMM_WORLD);
		uint64_t t0 = now_ns();
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			die(path, strerror(errno));
		for (size_t off = 0; off < f->bytes;) {
			ssize_t n = write(fd, f->p + off, f->bytes - off);
			if (n <= 0)
				die(path, strerror(errno));
			off += (size_t)n;
		}
		if (fsync(fd) != 0)
			die(path, strerror(errno));
		close(fd);
		uint64_t t1 = now_ns();
		out->pause_ms[s] = (double)(t1 - t0) / 1e6;
		out->bytes[s] = (double)f->bytes;
	}
	remove_dir(dir);
}

/* The slowest rank's pause per step (median over steps), the mean over
 * ranks and steps, and the mean bytes per rank per epoch: rank 0's view. */
struct summary {
	double max_ms, mean_ms, mib;
};

static struct summary summarize(const struct fig *f, int steps, int ranks_in)
{
	double maxs[MAXSTEPS], sum = 0, bytes = 0;
	for (int s = 0; s < steps; s++) {
		double m, t, b;
		MPI_Allreduce(&f->pause_ms[s], &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
		MPI_Allreduce(&f->pause_ms[s], &t, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
		MPI_Allreduce(&f->bytes[s], &b, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
		maxs[s] = m;
		sum += t;
		bytes += b;
	}
	struct summary r = {median(maxs, steps), sum / steps / ranks_in,
			    bytes / steps / ranks_in / (double)MIB};
	return r;
}

int main(int argc, char **argv)
{
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nranks);
	pagesz = (size_t)sysconf(_SC_PAGESIZE);
	int quick = quick_from_env();
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else {
			if (rank == 0)
				fprintf(stderr, "usage: mpirun -np N %s [--quick]\n", argv[0]);
			MPI_Finalize();
			return 2;
		}
	}
	size_t mib = quick ? 32 : 256;
	int steps = quick ? 3 : 8;
	struct field f;
	field_init(&f, mib * MIB);
	/* The figures live outside the field: nothing but the region is
	 * tracked anyway. */
	static struct fig single, each, sync_f, async_f, full;
	if (rank == 0)
		printf("libckpt %s, %d ranks, %zu MiB field per rank, 5%% of its pages rewritten per "
		       "step, %d steps, page %zu B; chains under /tmp, fsynced\n\n",
		       ckpt_version_string(), nranks, mib, steps, pagesz);
	run_single(&f, steps, 0, &single);
	run_single(&f, steps, 1, &each);
	run_job(&f, steps, 0, &sync_f);
	run_job(&f, steps, 1, &async_f);
	run_full(&f, steps, &full);
	struct summary ss = summarize(&single, steps, 1), ea = summarize(&each, steps, nranks),
		       sy = summarize(&sync_f, steps, nranks),
		       as = summarize(&async_f, steps, nranks), fu = summarize(&full, steps, nranks);
	if (rank == 0) {
		printf("%-34s %14s %12s %16s %10s\n", "per epoch", "pause ms (max)", "pause (mean)",
		       "MiB per rank", "vs full");
		const struct {
			const char *label;
			struct summary s;
		} rows[] = {{"one process alone, async", ss},
			    {"every rank on its own, async", ea},
			    {"ckpt_mpi_commit, sync", sy},
			    {"ckpt_mpi_commit, async", as},
			    {"full copy per rank + fsync", fu}};
		for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
			printf("%-34s %14.2f %12.2f %16.2f %10.3f\n", rows[i].label, rows[i].s.max_ms,
			       rows[i].s.mean_ms, rows[i].s.mib, rows[i].s.mib / fu.mib);
		double r1 = as.max_ms / ea.max_ms, r0 = as.max_ms / ss.max_ms, r2 = as.mib / fu.mib;
		int above = r1 > BAR_ASYNC_SINGLE || r2 > BAR_BYTES_FULL;
		printf("\n(pause (max): median over steps of the slowest rank; mean: over ranks and "
		       "steps.\n one process alone: rank 0 while the others wait; every rank on its "
		       "own: each commits\n with a handle of its own at the same instant, no MPI "
		       "between them: the same commit\n under the same sharing of the CPUs, which "
		       "is what the coordination adds to)\n\n");
		printf("async pause per rank / the same commit uncoordinated: %.2f (bar <= %.1f); "
		       "/ one process alone: %.2f\n",
		       r1, BAR_ASYNC_SINGLE, r0);
		printf("bytes per rank / full copy: %.3f (bar <= %.2f)%s\n", r2, BAR_BYTES_FULL,
		       quick ? "  (quick: not judged)" : above ? "  ABOVE THE BAR" : "");
	}
	MPI_Finalize();
	return 0;
}

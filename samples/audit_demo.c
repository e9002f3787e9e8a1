/*
 * samples/audit_demo.c - which pages of which mappings does one time step write?
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A small particle simulation keeps its state in an anonymous mapping, .bss, .data
 * and the heap.  It runs one time step under ckpt's write tracking (a handle opened
 * without a directory only audits) and prints every run of written pages with its
 * mapping.  It knows which particle pages it wrote, so it checks ckpt's answer.
 *
 * The report also shows pages written without asking: the main thread's TLS block,
 * which ckpt cannot protect and so always reports, and the dynamic linker's data
 * when it binds read() lazily on its first call.
 *
 * Build it against an installed libckpt with
 *     cc -o audit_demo audit_demo.c $(pkg-config --cflags --libs ckpt)
 */
#include <ckpt.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PARTICLE_BYTES ((size_t)16 << 20)
#define STRIDE	       97 /* the time step moves the particles of every 97th page */
#define NBINS	       (64 * 1024)
#define STATUS_BYTES   (16 * 1024)
#define MAX_RUNS       4096
#define MAX_MAPPINGS   64

/* 64 bytes, so that a page of any size holds whole particles and every page the
 * step writes is one it chose. */
struct particle {
	double x, y, z, vx, vy, vz, mass, charge;
};

enum { P_DT, P_CLOCK, P_DAMPING };
static double params[] = {[P_DT] = 1e-3, [P_CLOCK] = 0, [P_DAMPING] = 0.999}; /* .data */
static unsigned histogram[NBINS];					      /* .bss */
static struct particle *particles; /* anonymous mapping */
static char *status_buf;	   /* heap, filled by read(2) */
static ssize_t status_len;
static int status_fd, status_errno;
static size_t page_size, per_page, particle_pages;

/* The report lives in memory that exists before tracking begins, so that building
 * it adds no mappings and no allocations to what it describes. */
static struct run {
	uintptr_t start;
	size_t npages, mapping;
} *runs;
static size_t nruns;
static struct mapping {
	char name[PATH_MAX];
	size_t pages, runs;
} *mappings;
static size_t nmappings;

static int failed(int rc, const char *call)
{
	if (rc < 0)
		fprintf(stderr, "audit_demo: FAILED: %s: %s (%s)\n", call, ckpt_strerror(rc),
			ckpt_last_error());
	return rc < 0;
}

/* ckpt owns `r` and its name only during the call, so both are copied out. */
static int keep_run(const ckpt_page_run *r, void *arg)
{
	const char *name = r->mapping[0] ? r->mapping : "[anonymous]";
	size_t m = 0;

	(void)arg;
	while (m < nmappings && strcmp(mappings[m].name, name))
		m++;
	if (nruns == MAX_RUNS || m == MAX_MAPPINGS)
		return 1;
	if (m == nmappings)
		snprintf(mappings[nmappings++].name, PATH_MAX, "%s", name);
	mappings[m].pages += r->npages;
	mappings[m].runs++;
	runs[nruns++] = (struct run){r->start, r->npages, m};
	return 0;
}

static int reported(const void *p)
{
	for (size_t i = 0; i < nruns; i++)
		if ((uintptr_t)p - runs[i].start < runs[i].npages * page_size)
			return 1;
	return 0;
}

/* Names the simulation's objects a run overlaps, for the report. */
static const char *label(uintptr_t lo, uintptr_t hi, char *buf, size_t len)
{
	const struct {
		const void *p;
		size_t len;
		const char *what;
	} objs[] = {
		{particles, PARTICLE_BYTES, "particles"},
		{params, sizeof params, "params"},
		{histogram, sizeof histogram, "histogram"},
		{status_buf, STATUS_BYTES, "status"},
	};
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++)
		if ((uintptr_t)objs[i].p < hi && (uintptr_t)objs[i].p + objs[i].len > lo)
			snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? "," : "",
				 objs[i].what);
	return buf;
}

static void time_step(void)
{
	for (size_t pg = 0; pg < particle_pages; pg += STRIDE) {
		struct particle *p = particles + pg * per_page, *end = p + per_page;
		for (; p < end; p++) {
			p->x += p->vx * params[P_DT];
			p->vx *= params[P_DAMPING];
			histogram[(unsigned)(p->x * NBINS) % NBINS]++;
		}
	}
	params[P_CLOCK] += params[P_DT];
}

/* Counts the disagreements between ckpt's report and the step, showing the first. */
static unsigned disagreements;
static void disagree(const char *what, size_t index, int written)
{
	if (disagreements++ < 10)
		printf("audit_demo: %s %zu was %s\n", what, index,
		       written ? "written but not reported" : "reported but not written");
}

static void verify(void)
{
	for (size_t pg = 0; pg < particle_pages; pg++)
		if ((pg % STRIDE == 0) != reported(particles + pg * per_page))
			disagree("particle page", pg, pg % STRIDE == 0);
	if (!reported(&params[P_CLOCK]))
		disagree("params entry", P_CLOCK, 1);
	/* read(2) filled this buffer: writes made by the kernel must count too. */
	for (ssize_t i = 0; i < status_len; i++)
		if (!reported(status_buf + i))
			disagree("status buffer byte", (size_t)i, 1);
}

/* Allocates and writes everything before tracking, so that the step's writes are
 * the only ones to report: a heap that grew after ckpt_begin would count as
 * written whole. */
static int setup(void)
{
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	per_page = page_size / sizeof(struct particle);
	particle_pages = PARTICLE_BYTES / page_size;
	particles = mmap(NULL, PARTICLE_BYTES, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	status_buf = calloc(1, STATUS_BYTES);
	runs = calloc(MAX_RUNS, sizeof *runs);
	mappings = calloc(MAX_MAPPINGS, sizeof *mappings);
	status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (particles == MAP_FAILED || !status_buf || !runs || !mappings || status_fd < 0)
		return -1;
	for (size_t i = 0; i < particle_pages * per_page; i++)
		particles[i] = (struct particle){.x = (double)(i % 1000) / 1e3, .vx = 1, .mass = 1};
	return 0;
}

static void report(const ckpt_stats *st)
{
	char what[64];

	printf("Pages written by one time step (page size %zu):\n", page_size);
	for (size_t i = 0; i < nruns; i++) {
		uintptr_t lo = runs[i].start, hi = lo + runs[i].npages * page_size;
		printf("  %#014lx-%#014lx %5zu  %-16s %s\n", (unsigned long)lo, (unsigned long)hi,
		       runs[i].npages, label(lo, hi, what, sizeof what),
		       mappings[runs[i].mapping].name);
	}
	printf("\nBy mapping:\n  pages  runs  mapping\n");
	for (size_t m = 0; m < nmappings; m++)
		printf("  %5zu %5zu  %s\n", mappings[m].pages, mappings[m].runs, mappings[m].name);
	printf("\nTracked %zu pages in %zu regions (%zu pinned); dirty %zu; write faults %llu; "
	       "kernel writes %llu; ckpt_begin %llu us\n",
	       st->tracked_pages, st->regions, st->pinned_pages, st->dirty_pages,
	       (unsigned long long)st->faults, (unsigned long long)st->kernel_writes,
	       (unsigned long long)(st->begin_ns / 1000));
}

static int audit(ckpt_t *c)
{
	ckpt_stats st;
	int rc;

	if (failed(ckpt_begin(c), "ckpt_begin"))
		return 1;
	time_step();
	status_len = read(status_fd, status_buf, STATUS_BYTES);
	status_errno = errno;
	/* The epoch's set stays readable after ckpt_end; reading it then keeps the
	 * report's own writes out of it. */
	if (failed(ckpt_end(c), "ckpt_end"))
		return 1;
	rc = ckpt_dirty_foreach(c, keep_run, NULL);
	if (failed(rc, "ckpt_dirty_foreach") || failed(ckpt_stats(c, &st), "ckpt_stats"))
		return 1;
	if (rc > 0) {
		printf("audit_demo: FAILED: too many runs or mappings for the report\n");
		return 1;
	}
	/* EFAULT here means the kernel met a page ckpt had left write-protected. */
	if (status_len <= 0) {
		printf("audit_demo: FAILED: read(2) into the heap buffer: %s\n",
		       status_len ? strerror(status_errno) : "end of file");
		return 1;
	}
	report(&st);

	verify();
	if (disagreements) {
		printf("audit_demo: FAILED: %u disagreement(s) with what the step wrote\n",
		       disagreements);
		return 1;
	}
	printf("audit_demo: OK: ckpt reported exactly the %zu pages written to the particle array\n",
	       (particle_pages + STRIDE - 1) / STRIDE);
	return 0;
}

int main(void)
{
	ckpt_t *c;

	if (setup()) {
		perror("audit_demo: FAILED: setup");
		return 1;
	}
	if (failed(ckpt_open(&c, NULL, NULL), "ckpt_open"))
		return 1;
	int rc = audit(c);
	ckpt_close(c);
	close(status_fd);
	return rc;
}

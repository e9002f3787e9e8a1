/*
 * tools/ckpt-audit.c - which pages does a program write, where, and when?
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *     ckpt-audit [OPTIONS] -- PROGRAM [ARGS...]
 *
 * Runs PROGRAM with libckpt-audit.so preloaded (tools/audit-preload.c), which
 * tracks the program's writes with libckpt and leaves one file of samples per
 * process in a private directory.  When the program has ended, this process
 * reads them and writes the report: per mapping the pages written, bytes and
 * runs, the total, and a timeline of pages first written per interval; as
 * text, as JSON (--json) and as an SVG picture (--svg FILE).  See
 * ckpt-audit(1).
 *
 * The program's stdin, stdout and stderr are its own; the report goes to
 * stderr or to --output FILE, after the program ended.  The exit status is
 * the program's (128 + N when signal N killed it); ckpt-audit's own failures
 * use 125, 126 and 127 as env(1) and timeout(1) do.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

#ifndef PKGLIBDIR
#define PKGLIBDIR "/usr/local/lib/ckpt"
#endif
#define PRELOAD_NAME "libckpt-audit.so"

/* Exit statuses of ckpt-audit's own (documented in ckpt-audit(1)). */
enum { EXIT_TOOL = 125, EXIT_CANNOT = 126, EXIT_NOTFOUND = 127 };

#define DEFAULT_INTERVAL_MS 100
#define DEFAULT_TOP	    20
#define TEXT_TIMELINE_ROWS  40
#define SVG_MAX_COLUMNS	    120

struct options {
	unsigned interval_ms, delay_ms, top;
	int json, follow;
	const char *output, *svg, *backend;
};

/* ---- small helpers ---------------------------------------------------------- */

__attribute__((format(printf, 1, 2))) static void warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("ckpt-audit: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) {
		warn("out of memory");
		exit(EXIT_TOOL);
	}
	return p;
}

static void *xrealloc(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		n = SIZE_MAX;
	p = realloc(p, n && size ? n * size : 1);
	if (!p) {
		warn("out of memory");
		exit(EXIT_TOOL);
	}
	return p;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d) {
		warn("out of memory");
		exit(EXIT_TOOL);
	}
	return d;
}

/* "1.5 MiB" */
static const char *human_bytes(uint64_t b, char *buf, size_t len)
{
	static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)b;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", b);
	else
		snprintf(buf, len, "%.1f %s", v, unit[u]);
	return buf;
}

/* ---- the samples of one process ------------------------------------------------ */

struct run {
	uint64_t lo;
	uint64_t npages;
	uint32_t map;
	uint32_t sample;
};

struct mstat {
	uint32_t id;
	uint64_t pages, runs;
	uint64_t *per_sample; /* [nsamples + 1], index = sample */
};

struct proc {
	int pid, ppid;
	char how[16];
	char *exe, *cmd, *backend;
	uint64_t page_size, interval_ms, start_ns;
	char **names;
	size_t nnames;
	struct run *runs;
	size_t nruns, runs_cap;
	uint64_t *sample_t; /* t_ns of sample k at [k]; [0] = 0 */
	size_t nsamples;
	int ended;
	uint64_t end_ns, tracked_pages, pinned_pages;
	char **errors;
	size_t nerrors;
	int begun;
	int execd; /* a later section of the same pid was started by exec */
	int exec_unfollowed; /* ran another program by exec, not followed */
	/* Computed by summarise(). */
	struct mstat *ms; /* sorted by pages, descending */
	size_t nms;
	uint64_t total_pages, total_runs;
};

static void add_error(struct proc *p, const char *msg)
{
	p->errors = xrealloc(p->errors, p->nerrors + 1, sizeof *p->errors);
	p->errors[p->nerrors++] = xstrdup(msg);
}

static void set_name(struct proc *p, uint32_t id, const char *name)
{
	if (id >= p->nnames) {
		p->names = xrealloc(p->names, id + 1, sizeof *p->names);
		for (size_t i = p->nnames; i <= id; i++)
			p->names[i] = NULL;
		p->nnames = id + 1;
	}
	free(p->names[id]);
	p->names[id] = xstrdup(name);
}

/* Parses one file of samples (see tools/audit-preload.c for the records).
 * Returns 0, or -1 if it is not one. */
static int parse_file(const char *path, struct proc *p)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int first = 1, rc = 0;
	memset(p, 0, sizeof *p);
	snprintf(p->how, sizeof p->how, "start");
	while ((len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (first) {
			first = 0;
			if (strcmp(line, "ckpt-audit-samples 1")) {
				rc = -1;
				break;
			}
			continue;
		}
		char *rest = line + 2;
		unsigned long long a, b, c, d;
		unsigned id;
		int n = 0;
		switch (line[0]) {
		case 'N':
			if (sscanf(rest, "%llu %llx %llu %u", &a, &b, &c, &id) == 4 && id < p->nnames) {
				if (p->nruns == p->runs_cap) {
					p->runs_cap = p->runs_cap ? 2 * p->runs_cap : 1024;
					p->runs = xrealloc(p->runs, p->runs_cap, sizeof *p->runs);
				}
				p->runs[p->nruns++] = (struct run){b, c, id, (uint32_t)a};
			}
			break;
		case 'S':
			if (sscanf(rest, "%llu %llu", &a, &b) == 2 && a > 0) {
				if (a >= p->nsamples + 1) {
					p->sample_t = xrealloc(p->sample_t, a + 1, sizeof *p->sample_t);
					for (size_t k = p->nsamples + 1; k <= a; k++)
						p->sample_t[k] = b;
					p->sample_t[0] = 0;
					p->nsamples = a;
				}
				p->sample_t[a] = b;
			}
			break;
		case 'M':
			if (sscanf(rest, "%u %n", &id, &n) == 1 && n > 0 && id < 1u << 20)
				set_name(p, id, rest + n);
			break;
		case 'E':
			if (sscanf(rest, "%llu %llu %llu %llu", &a, &b, &c, &d) == 4) {
				p->ended = 1;
				p->end_ns = b;
				p->tracked_pages = c;
				p->pinned_pages = d;
			}
			break;
		case 'X':
			add_error(p, rest);
			break;
		case 'P':
			if (sscanf(rest, "pid %d ppid %d how %15s", &p->pid, &p->ppid, p->how) == 3)
				break;
			if (!strncmp(rest, "exe ", 4)) {
				free(p->exe);
				p->exe = xstrdup(rest + 4);
			} else if (!strncmp(rest, "cmd ", 4)) {
				free(p->cmd);
				p->cmd = xstrdup(rest + 4);
			} else if (!strncmp(rest, "pagesize ", 9)) {
				char be[32];
				if (sscanf(rest, "pagesize %llu interval_ms %llu backend %31s start_ns %llu",
					   &a, &b, be, &c) == 4) {
					p->page_size = a;
					p->interval_ms = b;
					p->start_ns = c;
					free(p->backend);
					p->backend = xstrdup(be);
					p->begun = 1;
				}
			}
			break;
		default:
			break;
		}
	}
	free(line);
	fclose(f);
	if (first)
		rc = -1;
	if (!p->page_size)
		p->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	if (!p->sample_t) {
		p->sample_t = xcalloc(1, sizeof *p->sample_t);
		p->nsamples = 0;
	}
	return rc;
}

static int by_start(const void *a, const void *b)
{
	const struct run *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int by_pages(const void *a, const void *b)
{
	const struct mstat *x = a, *y = b;
	if (x->pages != y->pages)
		return x->pages > y->pages ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static const char *map_name(const struct proc *p, uint32_t id)
{
	return id < p->nnames && p->names[id] ? p->names[id] : "?";
}

/* Per mapping: pages, maximal runs (contiguous pages of one mapping), and
 * pages per sample. */
static void summarise(struct proc *p)
{
	p->ms = xcalloc(p->nnames, sizeof *p->ms);
	for (size_t i = 0; i < p->nnames; i++) {
		p->ms[i].id = (uint32_t)i;
		p->ms[i].per_sample = xcalloc(p->nsamples + 1, sizeof(uint64_t));
	}
	if (p->nruns)
		qsort(p->runs, p->nruns, sizeof *p->runs, by_start);
	for (size_t i = 0; i < p->nruns; i++) {
		const struct run *r = &p->runs[i];
		struct mstat *m = &p->ms[r->map];
		m->pages += r->npages;
		if (r->sample <= p->nsamples)
			m->per_sample[r->sample] += r->npages;
		int joins = i > 0 && p->runs[i - 1].map == r->map &&
			    p->runs[i - 1].lo + p->runs[i - 1].npages * p->page_size == r->lo;
		if (!joins)
			m->runs++;
	}
	if (p->nnames)
		qsort(p->ms, p->nnames, sizeof *p->ms, by_pages);
	p->nms = 0;
	while (p->nms < p->nnames && p->ms[p->nms].pages)
		p->nms++;
	for (size_t i = 0; i < p->nms; i++) {
		p->total_pages += p->ms[i].pages;
		p->total_runs += p->ms[i].runs;
	}
}

static uint64_t duration_ns(const struct proc *p)
{
	uint64_t t = p->nsamples ? p->sample_t[p->nsamples] : 0;
	return p->ended && p->end_ns > t ? p->end_ns : t;
}

/* Pages first written in sample k, all mappings. */
static uint64_t sample_pages(const struct proc *p, size_t k)
{
	uint64_t n = 0;
	for (size_t i = 0; i < p->nms; i++)
		n += p->ms[i].per_sample[k];
	return n;
}

static int by_start_time(const void *a, const void *b)
{
	const struct proc *x = a, *y = b;
	if (x->start_ns != y->start_ns)
		return x->start_ns < y->start_ns ? -1 : 1;
	return x->pid - y->pid;
}

/* ---- text report --------------------------------------------------------------- */

static const char *ending(const struct proc *p)
{
	if (!p->begun)
		return "never tracked";
	if (p->ended)
		return "ended by exit";
	if (p->exec_unfollowed)
		return "ended by exec of another program, not tracked without --follow; "
		       "the last partial interval is missing";
	return p->execd ? "ended by exec: the last partial interval is missing" :
			  "ended without exit (exec or a signal): the last partial interval is missing";
}

static void text_report(FILE *f, const struct proc *ps, size_t np, unsigned top)
{
	char b1[32];
	for (size_t k = 0; k < np; k++) {
		const struct proc *p = &ps[k];
		fprintf(f, "%s== ckpt-audit: pid %d", k ? "\n" : "", p->pid);
		if (strcmp(p->how, "start"))
			fprintf(f, " (%s, parent %d)", p->how, p->ppid);
		fprintf(f, ": %s\n", p->cmd ? p->cmd : p->exe ? p->exe : "?");
		if (p->exe)
			fprintf(f, "   program %s\n", p->exe);
		for (size_t i = 0; i < p->nerrors; i++)
			fprintf(f, "   error: %s\n", p->errors[i]);
		if (!p->begun) {
			fprintf(f, "   not tracked\n");
			continue;
		}
		fprintf(f, "   back-end %s, page size %" PRIu64 ", %.3f s tracked, %zu samples every %" PRIu64
			   " ms; %s\n",
			p->backend, p->page_size, (double)duration_ns(p) / 1e9, p->nsamples,
			p->interval_ms, ending(p));
		fprintf(f, "   %10s %11s %8s  %s\n", "pages", "bytes", "runs", "mapping");
		size_t shown = p->nms < top ? p->nms : top;
		for (size_t i = 0; i < shown; i++) {
			const struct mstat *m = &p->ms[i];
			fprintf(f, "   %10" PRIu64 " %11s %8" PRIu64 "  %s\n", m->pages,
				human_bytes(m->pages * p->page_size, b1, sizeof b1), m->runs,
				map_name(p, m->id));
		}
		if (shown < p->nms) {
			uint64_t pg = 0, rn = 0;
			for (size_t i = shown; i < p->nms; i++) {
				pg += p->ms[i].pages;
				rn += p->ms[i].runs;
			}
			fprintf(f, "   %10" PRIu64 " %11s %8" PRIu64 "  (%zu other mappings)\n", pg,
				human_bytes(pg * p->page_size, b1, sizeof b1), rn, p->nms - shown);
		}
		fprintf(f, "   %10" PRIu64 " %11s %8" PRIu64 "  total (%zu mappings)\n", p->total_pages,
			human_bytes(p->total_pages * p->page_size, b1, sizeof b1), p->total_runs, p->nms);
		if (p->ended && p->pinned_pages)
			fprintf(f, "   (%" PRIu64 " of those pages are pinned, reported whether written or not: "
				   "the main thread's TLS block; %" PRIu64 " pages tracked)\n",
				p->pinned_pages, p->tracked_pages);

		/* The timeline, in at most TEXT_TIMELINE_ROWS rows of whole intervals. */
		size_t per = (p->nsamples + TEXT_TIMELINE_ROWS - 1) / TEXT_TIMELINE_ROWS;
		if (per == 0)
			per = 1;
		uint64_t max = 0;
		for (size_t s = 1; s <= p->nsamples; s += per) {
			uint64_t n = 0;
			for (size_t j = s; j < s + per && j <= p->nsamples; j++)
				n += sample_pages(p, j);
			max = n > max ? n : max;
		}
		fprintf(f, "   timeline: pages first written per %s%" PRIu64 " ms\n",
			per > 1 ? "" : "interval of ", p->interval_ms * per);
		/* Three or more rows in a row with no new pages are folded into
		 * one line. */
		size_t nrows = (p->nsamples + per - 1) / per;
		uint64_t *row = xcalloc(nrows, sizeof *row);
		for (size_t r = 0; r < nrows; r++)
			for (size_t j = r * per + 1; j <= (r + 1) * per && j <= p->nsamples; j++)
				row[r] += sample_pages(p, j);
		for (size_t r = 0; r < nrows;) {
			size_t z = r;
			while (z < nrows && !row[z])
				z++;
			size_t s = r * per, e = (r + 1) * per < p->nsamples ? (r + 1) * per : p->nsamples;
			if (z - r >= 3) {
				e = z * per < p->nsamples ? z * per : p->nsamples;
				fprintf(f, "   %8.3f-%8.3f s %10d  (%zu rows with no new pages)\n",
					(double)p->sample_t[s] / 1e9, (double)p->sample_t[e] / 1e9, 0, z - r);
				r = z;
				continue;
			}
			int bar = max ? (int)((row[r] * 40 + max - 1) / max) : 0;
			fprintf(f, "   %8.3f-%8.3f s %10" PRIu64 "  %.*s\n", (double)p->sample_t[s] / 1e9,
				(double)p->sample_t[e] / 1e9, row[r], bar,
				"########################################");
			r++;
		}
		free(row);
	}
}

/* ---- JSON ------------------------------------------------------------------------ */

static void json_report(FILE *f, const struct proc *ps, size_t np, char **argv, int status,
			const struct options *o)
{
	fprintf(f, "{\"version\":1,\"command\":[");
	for (int i = 0; argv[i]; i++) {
		if (i)
			fputc(',', f);
		json_str(f, argv[i]);
	}
	fprintf(f, "],\"status\":%d,\"interval_ms\":%u,\"delay_ms\":%u,\"follow\":%s,\"processes\":[",
		status, o->interval_ms, o->delay_ms, o->follow ? "true" : "false");
	for (size_t k = 0; k < np; k++) {
		const struct proc *p = &ps[k];
		fprintf(f, "%s{\"pid\":%d,\"ppid\":%d,\"how\":", k ? "," : "", p->pid, p->ppid);
		json_str(f, p->how);
		fprintf(f, ",\"exe\":");
		json_str(f, p->exe);
		fprintf(f, ",\"cmdline\":");
		json_str(f, p->cmd);
		fprintf(f, ",\"tracked\":%s,\"backend\":", p->begun ? "true" : "false");
		json_str(f, p->backend);
		fprintf(f, ",\"page_size\":%" PRIu64 ",\"duration_s\":%.6f,\"ended_by_exit\":%s,"
			   "\"ended_by_exec\":%s,\"pinned_pages\":%" PRIu64 ",\"tracked_pages\":%" PRIu64
			   ",\"errors\":[",
			p->page_size, (double)duration_ns(p) / 1e9, p->ended ? "true" : "false",
			p->execd ? "true" : "false",
			p->pinned_pages, p->tracked_pages);
		for (size_t i = 0; i < p->nerrors; i++) {
			if (i)
				fputc(',', f);
			json_str(f, p->errors[i]);
		}
		fprintf(f, "],\"mappings\":[");
		for (size_t i = 0; i < p->nms; i++) {
			const struct mstat *m = &p->ms[i];
			fprintf(f, "%s{\"name\":", i ? "," : "");
			json_str(f, map_name(p, m->id));
			fprintf(f, ",\"pages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"runs\":%" PRIu64
				   ",\"timeline\":[",
				m->pages, m->pages * p->page_size, m->runs);
			int first = 1;
			for (size_t s = 1; s <= p->nsamples; s++)
				if (m->per_sample[s]) {
					fprintf(f, "%s[%zu,%" PRIu64 "]", first ? "" : ",", s - 1,
						m->per_sample[s]);
					first = 0;
				}
			fprintf(f, "]}");
		}
		fprintf(f, "],\"total\":{\"pages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"runs\":%" PRIu64
			   "},\"intervals\":[",
			p->total_pages, p->total_pages * p->page_size, p->total_runs);
		for (size_t s = 1; s <= p->nsamples; s++)
			fprintf(f, "%s{\"start_s\":%.6f,\"end_s\":%.6f,\"pages\":%" PRIu64 "}", s > 1 ? "," : "",
				(double)p->sample_t[s - 1] / 1e9, (double)p->sample_t[s] / 1e9,
				sample_pages(p, s));
		fprintf(f, "]}");
	}
	fprintf(f, "]}\n");
}

/* ---- SVG --------------------------------------------------------------------------- */

/* Cell colours for 1, 2-3, 4-15, 16-63, ... pages (powers of 4). */
static const char *const palette[] = {"#ffffcc", "#ffeda0", "#fed976", "#feb24c",
				      "#fd8d3c", "#fc4e2a", "#e31a1c", "#800026"};
#define NCOLOURS (sizeof palette / sizeof palette[0])

static unsigned colour_of(uint64_t pages)
{
	unsigned c = 0;
	if (pages >= 2)
		c = 1;
	for (uint64_t b = 4; pages >= b && c < NCOLOURS - 1; b *= 4)
		c++;
	return c;
}

static void svg_text(FILE *f, const char *s, size_t max)
{
	size_t len = strlen(s);
	if (len > max) {
		fputs("\xe2\x80\xa6", f); /* an ellipsis, then the tail of the name */
		s += len - (max - 1);
	}
	for (; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&apos;", f); break;
		default:
			fputc((unsigned char)*s >= 0x20 ? *s : ' ', f);
		}
	}
}

#define SVG_LABEL_W 300
#define SVG_GRID_W  720
#define SVG_ROW_H   18
#define SVG_MARGIN  20

static int svg_report(const char *path, const struct proc *ps, size_t np, unsigned top,
		      char **argv)
{
	FILE *f = fopen(path, "we");
	if (!f) {
		warn("%s: %s", path, strerror(errno));
		return -1;
	}
	/* The height: a title, then per process a heading, rows, an axis. */
	int height = 60;
	for (size_t k = 0; k < np; k++) {
		size_t rows = ps[k].nms < top ? ps[k].nms : top + (ps[k].nms > top);
		height += 60 + (int)(rows ? rows : 1) * SVG_ROW_H + 50;
	}
	height += 70; /* the legend */
	int width = SVG_MARGIN * 2 + SVG_LABEL_W + SVG_GRID_W + 110;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		   "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
		   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
		width, height, width, height);
	fprintf(f, "<text x=\"%d\" y=\"30\" font-size=\"18\" font-weight=\"bold\">ckpt-audit: pages first "
		   "written, by mapping and time</text>\n<text x=\"%d\" y=\"48\" fill=\"#444\">",
		SVG_MARGIN, SVG_MARGIN);
	size_t shown = 0;
	for (int i = 0; argv[i] && shown < 100; i++) {
		svg_text(f, argv[i], 100 - shown);
		shown += strlen(argv[i]) + 1;
		fputc(' ', f);
	}
	fprintf(f, "</text>\n");
	int y = 60;
	for (size_t k = 0; k < np; k++) {
		const struct proc *p = &ps[k];
		size_t rows = p->nms < top ? p->nms : top + (p->nms > top);
		size_t cols = p->nsamples < SVG_MAX_COLUMNS ? p->nsamples : SVG_MAX_COLUMNS;
		size_t per = cols ? (p->nsamples + cols - 1) / cols : 1;
		if (cols)
			cols = (p->nsamples + per - 1) / per;
		double cw = cols ? (double)SVG_GRID_W / (double)cols : SVG_GRID_W;
		int gx = SVG_MARGIN + SVG_LABEL_W;
		char b1[32];
		y += 24;
		fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">pid %d%s%s: ",
			SVG_MARGIN, y, p->pid, strcmp(p->how, "start") ? " " : "",
			strcmp(p->how, "start") ? p->how : "");
		svg_text(f, p->cmd ? p->cmd : p->exe ? p->exe : "?", 80);
		fprintf(f, "</text>\n<text x=\"%d\" y=\"%d\" fill=\"#444\">%" PRIu64 " pages (%s) in %zu "
			   "mappings, %.3f s, back-end %s</text>\n",
			SVG_MARGIN, y + 14, p->total_pages,
			human_bytes(p->total_pages * p->page_size, b1, sizeof b1), p->nms,
			(double)duration_ns(p) / 1e9, p->backend ? p->backend : "none");
		y += 36;
		fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#444\" text-anchor=\"end\">mapping</text>\n"
			   "<text x=\"%d\" y=\"%d\" fill=\"#444\">pages</text>\n",
			gx - 6, y - 2, gx + SVG_GRID_W + 8, y - 2);
		for (size_t r = 0; r < rows; r++) {
			int ry = y + (int)r * SVG_ROW_H;
			const char *label = NULL;
			uint64_t total = 0;
			char other[64];
			if (r < top && r < p->nms) {
				label = map_name(p, p->ms[r].id);
				total = p->ms[r].pages;
			} else {
				snprintf(other, sizeof other, "(%zu other mappings)", p->nms - top);
				label = other;
				for (size_t i = top; i < p->nms; i++)
					total += p->ms[i].pages;
			}
			fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n", gx,
				ry, SVG_GRID_W, SVG_ROW_H - 2, "#f2f2f2");
			fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\"><title>", gx - 6, ry + 12);
			svg_text(f, label, 4096);
			fprintf(f, "</title>");
			svg_text(f, label, 44);
			fprintf(f, "</text>\n<text x=\"%d\" y=\"%d\">%" PRIu64 "</text>\n",
				gx + SVG_GRID_W + 8, ry + 12, total);
			for (size_t c = 0; c < cols; c++) {
				uint64_t n = 0;
				for (size_t s = c * per + 1; s <= (c + 1) * per && s <= p->nsamples; s++) {
					if (r < top && r < p->nms)
						n += p->ms[r].per_sample[s];
					else
						for (size_t i = top; i < p->nms; i++)
							n += p->ms[i].per_sample[s];
				}
				if (!n)
					continue;
				fprintf(f, "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"%s\">"
					   "<title>%" PRIu64 " pages</title></rect>\n",
					gx + (double)c * cw, ry, cw > 1.5 ? cw - 0.5 : cw, SVG_ROW_H - 2,
					palette[colour_of(n)], n);
			}
		}
		if (!rows)
			fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#444\">no pages written</text>\n", gx,
				y + 12);
		y += (int)(rows ? rows : 1) * SVG_ROW_H;
		/* The time axis: a line and ticks at about six places. */
		fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>\n", gx, y + 2,
			gx + SVG_GRID_W, y + 2);
		int nticks = cols < 6 ? (int)cols : 6;
		int prec = duration_ns(p) < 2000000000u ? 3 : 2;
		for (int t = 0; t <= nticks && cols; t++) {
			size_t c = (size_t)((double)cols * t / nticks);
			size_t s = c * per;
			if (s > p->nsamples)
				s = p->nsamples;
			double x = gx + (double)c * cw;
			fprintf(f, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"#444\"/>\n"
				   "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%.*f</text>\n",
				x, y + 2, x, y + 7, x, y + 20, prec, (double)p->sample_t[s] / 1e9);
		}
		fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#444\">time since tracking "
			   "began (s), one column per %" PRIu64 " ms</text>\n",
			gx + SVG_GRID_W / 2, y + 36, p->interval_ms * per);
		y += 50;
	}
	/* The legend. */
	y += 10;
	fprintf(f, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">pages first written in a cell</text>\n",
		SVG_MARGIN, y);
	static const char *const labels[] = {"1", "2-3", "4-15", "16-63", "64-255", "256-1023",
					     "1024-4095", "4096+"};
	for (unsigned i = 0; i < NCOLOURS; i++) {
		int x = SVG_MARGIN + (int)i * 110;
		fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"24\" height=\"14\" fill=\"%s\" stroke=\"#888\"/>\n"
			   "<text x=\"%d\" y=\"%d\">%s</text>\n",
			x, y + 8, palette[i], x + 28, y + 19, labels[i]);
	}
	fprintf(f, "</svg>\n");
	if (fclose(f) != 0) {
		warn("%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- finding the program and the preload ---------------------------------------------- */

/* PROGRAM as execvp would find it; NULL (errno set) if not. */
static char *find_program(const char *name)
{
	if (strchr(name, '/'))
		return access(name, F_OK) == 0 ? xstrdup(name) : NULL;
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char *found = NULL;
	while (*path) {
		size_t n = strcspn(path, ":");
		char buf[PATH_MAX];
		if (n == 0)
			snprintf(buf, sizeof buf, "./%s", name);
		else
			snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, name);
		struct stat st;
		if (stat(buf, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(buf, X_OK) == 0)
				return xstrdup(buf);
			if (!found)
				found = xstrdup(buf); /* like execvp: EACCES if only that */
		}
		path += n;
		if (*path == ':')
			path++;
	}
	if (!found)
		errno = ENOENT;
	return found;
}

/* Whether the ELF file at fd has a program interpreter (is dynamically
 * linked): 1 yes, 0 no, -1 not ELF; *class = ELFCLASS32 or 64. */
static int elf_interp(int fd, int *class)
{
	unsigned char id[EI_NIDENT];
	if (pread(fd, id, sizeof id, 0) != (ssize_t)sizeof id || memcmp(id, ELFMAG, SELFMAG))
		return -1;
	*class = id[EI_CLASS];
	if (id[EI_CLASS] == ELFCLASS64) {
		Elf64_Ehdr eh;
		if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || eh.e_phentsize != sizeof(Elf64_Phdr))
			return -1;
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;
			if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + i * sizeof ph)) != (ssize_t)sizeof ph)
				return -1;
			if (ph.p_type == PT_INTERP)
				return 1;
		}
		return 0;
	}
	if (id[EI_CLASS] == ELFCLASS32) {
		Elf32_Ehdr eh;
		if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || eh.e_phentsize != sizeof(Elf32_Phdr))
			return -1;
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf32_Phdr ph;
			if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + i * sizeof ph)) != (ssize_t)sizeof ph)
				return -1;
			if (ph.p_type == PT_INTERP)
				return 1;
		}
		return 0;
	}
	return -1;
}

/* Checks that `path` (or the interpreter of a #! script) is a dynamically
 * linked ELF program of this machine's class.  Returns 0, or an exit status
 * after saying why not. */
static int check_program(const char *path, int depth)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		warn("%s: %s", path, strerror(errno));
		return errno == ENOENT ? EXIT_NOTFOUND : EXIT_CANNOT;
	}
	char head[256];
	ssize_t n = pread(fd, head, sizeof head - 1, 0);
	if (n >= 2 && head[0] == '#' && head[1] == '!' && depth == 0) {
		close(fd);
		head[n] = '\0';
		char *p = head + 2;
		p += strspn(p, " \t");
		p[strcspn(p, " \t\n")] = '\0';
		if (!*p) {
			warn("%s: a script without an interpreter", path);
			return EXIT_CANNOT;
		}
		return check_program(p, 1);
	}
	int class = 0;
	int rc = elf_interp(fd, &class);
	close(fd);
	if (rc < 0) {
		warn("%s: not an ELF program", path);
		return EXIT_CANNOT;
	}
	if (rc == 0) {
		warn("%s: statically linked (no program interpreter, PT_INTERP): ckpt-audit works "
		     "through a preloaded library, which a static program never loads",
		     path);
		return EXIT_CANNOT;
	}
	int mine = sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32;
	if (class != mine) {
		warn("%s: a %d-bit program; ckpt-audit's library is %d-bit", path,
		     class == ELFCLASS64 ? 64 : 32, mine == ELFCLASS64 ? 64 : 32);
		return EXIT_CANNOT;
	}
	return 0;
}

/* libckpt-audit.so: $CKPT_AUDIT_PRELOAD, else beside this program in the
 * build tree (.libs/), else in pkglibdir. */
static char *find_preload(void)
{
	const char *env = getenv("CKPT_AUDIT_PRELOAD");
	char buf[PATH_MAX], real[PATH_MAX];
	if (env && *env) {
		if (!realpath(env, real)) {
			warn("CKPT_AUDIT_PRELOAD=%s: %s", env, strerror(errno));
			return NULL;
		}
		return xstrdup(real);
	}
	ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
	if (n > 0) {
		buf[n] = '\0';
		char *slash = strrchr(buf, '/');
		if (slash) {
			const char *cands[] = {"/.libs/" PRELOAD_NAME, "/../lib/ckpt/" PRELOAD_NAME};
			for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
				char c[PATH_MAX + 64];
				snprintf(c, sizeof c, "%.*s%s", (int)(slash - buf), buf, cands[i]);
				if (access(c, R_OK) == 0 && realpath(c, real))
					return xstrdup(real);
			}
		}
	}
	if (access(PKGLIBDIR "/" PRELOAD_NAME, R_OK) == 0)
		return xstrdup(PKGLIBDIR "/" PRELOAD_NAME);
	warn("cannot find %s (looked beside this program and in %s; CKPT_AUDIT_PRELOAD names it)",
	     PRELOAD_NAME, PKGLIBDIR);
	return NULL;
}

/* ---- running the program ---------------------------------------------------------- */

static volatile sig_atomic_t child_pid;

static void forward(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ckpt-audit [OPTIONS] -- PROGRAM [ARGS...]\n"
		"Runs PROGRAM and reports which pages of which mappings it writes, and when.\n\n"
		"  -i, --interval MS   sample the written pages every MS milliseconds (default %u)\n"
		"  -d, --delay SECONDS start tracking SECONDS after the start (default 0)\n"
		"  -o, --output FILE   write the report to FILE rather than to stderr\n"
		"      --json          the report as JSON\n"
		"      --svg FILE      also draw the report as an SVG picture in FILE\n"
		"      --top N         mappings shown by name (default %u; the rest are grouped)\n"
		"  -f, --follow        track children too (after fork or exec), each in its own section\n"
		"      --backend NAME  mprotect or uffd (default: the best this kernel has)\n"
		"  -h, --help          this text\n\n"
		"Exit status: PROGRAM's (128+N if signal N killed it); 125 usage or internal error,\n"
		"126 PROGRAM cannot be audited (static, not executable), 127 PROGRAM not found.\n"
		"See ckpt-audit(1).\n",
		DEFAULT_INTERVAL_MS, DEFAULT_TOP);
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || errno || v > max || s[0] == '-')
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	int i = 1;
	for (; i < argc; i++) {
		char *a = argv[i], *val = NULL;
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (a[0] != '-' || !a[1])
			break;
		char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
		char name[32];
		snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
		int takes = !strcmp(name, "-i") || !strcmp(name, "--interval") || !strcmp(name, "-d") ||
			    !strcmp(name, "--delay") || !strcmp(name, "-o") || !strcmp(name, "--output") ||
			    !strcmp(name, "--svg") || !strcmp(name, "--top") || !strcmp(name, "--backend");
		if (takes) {
			if (eq)
				val = eq + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			else {
				warn("%s needs a value", name);
				return -1;
			}
		} else if (eq) {
			warn("%s takes no value", name);
			return -1;
		}
		if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(name, "-i") || !strcmp(name, "--interval")) {
			if (parse_uint(val, 3600000, &o->interval_ms) || o->interval_ms == 0) {
				warn("--interval: '%s' is not a number of milliseconds from 1 to 3600000", val);
				return -1;
			}
		} else if (!strcmp(name, "-d") || !strcmp(name, "--delay")) {
			char *end;
			errno = 0;
			double d = strtod(val, &end);
			if (!*val || *end || errno || !(d >= 0) || d > 86400) {
				warn("--delay: '%s' is not a number of seconds from 0 to 86400", val);
				return -1;
			}
			o->delay_ms = (unsigned)(d * 1000 + 0.5);
		} else if (!strcmp(name, "-o") || !strcmp(name, "--output")) {
			o->output = val;
		} else if (!strcmp(name, "--svg")) {
			o->svg = val;
		} else if (!strcmp(name, "--top")) {
			if (parse_uint(val, 100000, &o->top) || o->top == 0) {
				warn("--top: '%s' is not a positive number", val);
				return -1;
			}
		} else if (!strcmp(name, "--backend")) {
			if (strcmp(val, "mprotect") && strcmp(val, "uffd")) {
				warn("--backend: '%s' is neither mprotect nor uffd", val);
				return -1;
			}
			o->backend = val;
		} else if (!strcmp(name, "--json")) {
			o->json = 1;
		} else if (!strcmp(name, "-f") || !strcmp(name, "--follow")) {
			o->follow = 1;
		} else {
			warn("unknown option %s", a);
			return -1;
		}
	}
	if (i >= argc) {
		warn("no program to run");
		return -1;
	}
	return i;
}

static void free_proc(struct proc *p)
{
	for (size_t i = 0; i < p->nnames; i++)
		free(p->names[i]);
	for (size_t i = 0; i < p->nerrors; i++)
		free(p->errors[i]);
	for (size_t i = 0; p->ms && i < p->nnames; i++)
		free(p->ms[i].per_sample);
	free(p->names);
	free(p->errors);
	free(p->ms);
	free(p->runs);
	free(p->sample_t);
	free(p->exe);
	free(p->cmd);
	free(p->backend);
	memset(p, 0, sizeof *p);
}

/* Reads every file of samples in dir, then removes them and dir. */
static struct proc *read_samples(const char *dir, size_t *np)
{
	DIR *d = opendir(dir);
	struct proc *ps = NULL;
	*np = 0;
	if (!d)
		return NULL;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[PATH_MAX + 256];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		ps = xrealloc(ps, *np + 1, sizeof *ps);
		if (parse_file(path, &ps[*np]) == 0) {
			summarise(&ps[*np]);
			(*np)++;
		} else {
			free_proc(&ps[*np]);
		}
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
	if (*np)
		qsort(ps, *np, sizeof *ps, by_start_time);
	for (size_t i = 0; i < *np; i++)
		for (size_t j = i + 1; j < *np; j++)
			if (ps[j].pid == ps[i].pid && !strcmp(ps[j].how, "exec"))
				ps[i].execd = 1;
	return ps;
}

/* What main allocates and keeps to the end: held here, released by
 * release() at every return. */
static char *g_path, *g_preload;
static struct proc *g_ps;
static size_t g_np;

static void release(void)
{
	for (size_t i = 0; i < g_np; i++)
		free_proc(&g_ps[i]);
	free(g_ps);
	free(g_path);
	free(g_preload);
	g_ps = NULL;
	g_path = g_preload = NULL;
	g_np = 0;
}

int main(int argc, char **argv)
{
	atexit(release);
	struct options o = {.interval_ms = DEFAULT_INTERVAL_MS, .top = DEFAULT_TOP};
	int first = parse_options(argc, argv, &o);
	if (first < 0) {
		usage(stderr);
		return EXIT_TOOL;
	}
	char **prog_argv = argv + first;
	char *path = g_path = find_program(prog_argv[0]);
	if (!path) {
		warn("%s: %s", prog_argv[0], errno == ENOENT ? "command not found" : strerror(errno));
		return EXIT_NOTFOUND;
	}
	if (access(path, X_OK) != 0) {
		warn("%s: %s", path, strerror(errno));
		return EXIT_CANNOT;
	}
	int rc = check_program(path, 0);
	if (rc)
		return rc;
	char *preload = g_preload = find_preload();
	if (!preload)
		return EXIT_TOOL;

	/* The report's file is opened first: a bad --output fails before the
	 * program runs rather than after. */
	FILE *out = stderr;
	if (o.output && !(out = fopen(o.output, "we"))) {
		warn("%s: %s", o.output, strerror(errno));
		return EXIT_TOOL;
	}
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/ckpt-audit.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		warn("mkdtemp %s: %s", dir, strerror(errno));
		return EXIT_TOOL;
	}

	int sync[2];
	if (pipe2(sync, O_CLOEXEC) != 0) {
		warn("pipe: %s", strerror(errno));
		rmdir(dir);
		return EXIT_TOOL;
	}
	/* Terminal signals reach the whole process group, the program
	 * included: this process waits for the program and reports.  TERM
	 * and HUP sent to this process alone are passed on. */
	struct sigaction ign = {.sa_handler = SIG_IGN}, fwd = {.sa_handler = forward}, old_int, old_quit;
	sigaction(SIGINT, &ign, &old_int);
	sigaction(SIGQUIT, &ign, &old_quit);
	sigaction(SIGTERM, &fwd, NULL);
	sigaction(SIGHUP, &fwd, NULL);

	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		warn("fork: %s", strerror(errno));
		rmdir(dir);
		return EXIT_TOOL;
	}
	if (pid == 0) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGQUIT, &old_quit, NULL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		close(sync[0]);
		char num[32];
		const char *lp = getenv("LD_PRELOAD");
		char *newlp = xcalloc(1, strlen(preload) + (lp ? strlen(lp) : 0) + 2);
		sprintf(newlp, "%s%s%s", preload, lp && *lp ? ":" : "", lp && *lp ? lp : "");
		setenv("LD_PRELOAD", newlp, 1);
		setenv("CKPT_AUDIT_LIB", preload, 1);
		setenv("CKPT_AUDIT_DIR", dir, 1);
		snprintf(num, sizeof num, "%u", o.interval_ms);
		setenv("CKPT_AUDIT_INTERVAL", num, 1);
		snprintf(num, sizeof num, "%u", o.delay_ms);
		setenv("CKPT_AUDIT_DELAY", num, 1);
		snprintf(num, sizeof num, "%d", (int)getpid());
		setenv("CKPT_AUDIT_ROOT", num, 1);
		if (o.follow)
			setenv("CKPT_AUDIT_FOLLOW", "1", 1);
		else
			unsetenv("CKPT_AUDIT_FOLLOW");
		if (o.backend)
			setenv("CKPT_BACKEND", o.backend, 1);
		execv(path, prog_argv);
		int e = errno;
		if (write(sync[1], &e, sizeof e) < 0)
			_exit(EXIT_TOOL);
		_exit(EXIT_CANNOT);
	}
	child_pid = pid;
	close(sync[1]);
	int e = 0;
	ssize_t n;
	while ((n = read(sync[0], &e, sizeof e)) < 0 && errno == EINTR)
		;
	close(sync[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	child_pid = 0;
	if (n == (ssize_t)sizeof e) {
		warn("%s: %s", path, strerror(e));
		g_ps = read_samples(dir, &g_np);
		return e == ENOENT ? EXIT_NOTFOUND : EXIT_CANNOT;
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) :
		   WIFSIGNALED(status) ? 128 + WTERMSIG(status) : EXIT_TOOL;

	g_ps = read_samples(dir, &g_np);
	struct proc *ps = g_ps;
	size_t np = g_np;
	/* The program's process exited normally, but its section saw no
	 * exit: the image it started with ran another one (a wrapper script,
	 * a shim on the PATH) whose writes are not in the report. */
	for (size_t i = 0; !o.follow && WIFEXITED(status) && i < np; i++)
		if (ps[i].pid == (int)pid && ps[i].begun && !ps[i].ended && !ps[i].execd)
			ps[i].execd = ps[i].exec_unfollowed = 1;
	if (o.json)
		json_report(out, ps, np, prog_argv, code, &o);
	else {
		if (!np)
			fprintf(out, "ckpt-audit: no samples: the program never started tracking\n");
		text_report(out, ps, np, o.top);
	}
	if (out != stderr && fclose(out) != 0)
		warn("%s: %s", o.output, strerror(errno));
	if (o.svg && svg_report(o.svg, ps, np, o.top, prog_argv) != 0)
		warn("the SVG picture was not written");
	return code;
}

/*
 * tools/ckpt.c - the ckpt command-line tool.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * One program, one subcommand per task, each documented in ckpt(1).  It uses
 * the public API only: the chain commands (ls, show, diff, extract, verify,
 * compact) are thin layers over the ckpt_chain_* functions of ckpt.h, so that
 * what the tool prints is what any other reader of a chain would see.
 *
 * ls and verify also read the folder of an MPI job (libckpt-mpi): a folder
 * with a manifest and one chain a rank (rank-NNNNN).  The manifest's reader
 * is src/mpi/manifest.c, plain C compiled into the tool, so that the tool
 * needs no MPI.
 *
 * Output goes to stdout, diagnostics to stderr.  A library failure is
 * reported as "ckpt CMD: <ckpt_strerror>: <ckpt_last_error>", a system call
 * failure as "ckpt CMD: PATH: <strerror>".
 */
#include <ckpt.h>

#include <ctype.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/personality.h>
#include <unistd.h>

#include "json.h"
#include "manifest.h"

/* Exit statuses (documented in ckpt(1)). */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Options a command may accept. */
#define OPT_JSON 0x1u /* --json */
#define OPT_OUT	 0x2u /* -o FILE */
#define OPT_KEEP 0x4u /* --keep N */

#define MAX_POS 4

/* extract reads and writes this much at a time, whatever LEN is. */
#define EXTRACT_CHUNK ((size_t)1 << 20)

struct command;

/* The arguments of a chain command, parsed by parse_args. */
struct args {
	const struct command *cmd;
	const char *pos[MAX_POS];
	int npos;
	int json;
	const char *out;
	unsigned keep;
	int have_keep;
};

struct command {
	const char *name;
	const char *args;
	const char *what;
	/* Exactly one of these is set: raw commands parse their own
	 * arguments (errors takes negative numbers, which would look like
	 * options), the others get them parsed and checked against opts and
	 * npos. */
	int (*raw)(int argc, char **argv);
	int (*run)(const struct args *a);
	unsigned opts;
	int npos;
};

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_errors(int argc, char **argv);
static int cmd_ls(const struct args *a);
static int cmd_show(const struct args *a);
static int cmd_diff(const struct args *a);
static int cmd_extract(const struct args *a);
static int cmd_verify(const struct args *a);
static int cmd_compact(const struct args *a);
static int cmd_resume(const struct args *a);
static int cmd_run(int argc, char **argv);

static const struct command commands[] = {
	{"ls", "DIR [--json]", "list the snapshots of the chain in DIR, or a job's epochs", NULL,
	 cmd_ls, OPT_JSON, 1},
	{"show", "DIR ID [--json]", "one snapshot: summary, mappings, stored runs", NULL, cmd_show,
	 OPT_JSON, 2},
	{"diff", "DIR A B", "the pages that differ between A and B", NULL, cmd_diff, 0, 3},
	{"extract", "DIR ID ADDR LEN -o FILE", "memory [ADDR, ADDR+LEN) as of ID, into FILE",
	 NULL, cmd_extract, OPT_OUT, 4},
	{"verify", "DIR [--json]", "check every file of the chain (or job) completely", NULL,
	 cmd_verify, OPT_JSON, 1},
	{"compact", "DIR [--keep N]", "fold old snapshots, keeping N increments", NULL,
	 cmd_compact, OPT_KEEP, 1},
	{"resume", "DIR", "start the program of the chain again, resumed from its newest snapshot",
	 NULL, cmd_resume, 0, 1},
	{"run", "[--every DURATION] [--on SIGNAL[,SIGNAL]] [--keep N] [--json[=FILE]] DIR -- PROG [ARGS...]",
	 "run PROG with commits to DIR every DURATION and on each SIGNAL", cmd_run, NULL, 0, 0},
	{"help", "[COMMAND]", "this summary, or the usage of COMMAND", cmd_help, NULL, 0, 0},
	{"version", "", "the versions of the tool and library", cmd_version, NULL, 0, 0},
	{"errors", "[CODE...]", "the error codes, or what each CODE means", cmd_errors,
	 NULL, 0, 0},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* ---- messages ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f, "usage: ckpt COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++) {
		char head[48];
		snprintf(head, sizeof head, "%s %s", commands[i].name, commands[i].args);
		fprintf(f, "  %-32s %s\n", head, commands[i].what);
	}
	fprintf(f, "\nID is a snapshot id or 'latest'; ADDR and LEN are decimal or 0x-hex.\n"
		   "--json may appear anywhere after the command name.\n"
		   "Exit status: 0 success, 1 failure, 2 usage error.  See ckpt(1).\n");
}

static void command_usage(FILE *f, const struct command *cmd)
{
	fprintf(f, "usage: ckpt %s %s\n", cmd->name, cmd->args);
}

/* A usage error of cmd: what was wrong, then the command's synopsis. */
__attribute__((format(printf, 2, 3))) static int usage_error(const struct command *cmd,
							     const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "ckpt %s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	command_usage(stderr, cmd);
	return EXIT_USAGE;
}

/* A failed library call: its code and the details it left behind.  Must be
 * called before any other ckpt_* call, which would clear those details. */
static int lib_failure(const struct command *cmd, int rc)
{
	const char *detail = ckpt_last_error();
	if (detail[0])
		fprintf(stderr, "ckpt %s: %s: %s\n", cmd->name, ckpt_strerror(rc), detail);
	else
		fprintf(stderr, "ckpt %s: %s\n", cmd->name, ckpt_strerror(rc));
	return EXIT_FAIL;
}

/* A failed system call on path, with errno as it left it. */
static int sys_failure(const struct command *cmd, const char *path, const char *call)
{
	int e = errno;
	fprintf(stderr, "ckpt %s: %s: %s: %s\n", cmd->name, path, call, strerror(e));
	return EXIT_FAIL;
}

/* ---- parsing ------------------------------------------------------------------- */

/*
 * Parses an unsigned number strictly: decimal, or hexadecimal after "0x" when
 * hex is set.  strtoull on its own skips leading blanks, accepts a sign (and
 * turns "-1" into a huge value) and stops quietly at trailing junk; all of
 * these are refused here, and a leading 0 means decimal, never octal.
 * Returns 0, or -1 with *why saying what was wrong.
 */
static int parse_u64(const char *s, int hex, uint64_t *out, const char **why)
{
	int base = 10;
	const char *digits = s;
	if (hex && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		digits = s + 2;
	}
	if (*s == '-') {
		*why = "is negative";
		return -1;
	}
	unsigned char d = (unsigned char)*digits;
	if (base == 16 ? !isxdigit(d) : !isdigit(d)) {
		*why = "is not a number";
		return -1;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(digits, &end, base);
	if (*end) {
		*why = "is not a number";
		return -1;
	}
	if (errno == ERANGE) {
		*why = "is too large";
		return -1;
	}
	*out = v;
	return 0;
}

/* An ID argument: "latest" (CKPT_LATEST, resolved once the chain is open) or
 * a snapshot id, which is never 0. */
static int parse_id(const struct command *cmd, const char *what, const char *s, uint64_t *id)
{
	const char *why;
	if (!strcmp(s, "latest")) {
		*id = CKPT_LATEST;
		return 0;
	}
	if (parse_u64(s, 0, id, &why) != 0)
		return usage_error(cmd, "%s '%s' %s (a snapshot id or 'latest')", what, s, why);
	if (*id == 0 || *id == CKPT_LATEST)
		return usage_error(cmd, "%s '%s' is not a snapshot id (ids start at 1)", what, s);
	return 0;
}

/*
 * Splits argv (argv[0] is the command name) into options and positional
 * arguments.  Options may come anywhere; "--" ends them.  Each option is
 * accepted at most once, so that "-o a -o b" is refused rather than silently
 * writing one of the two.
 */
static int parse_args(const struct command *cmd, int argc, char **argv, struct args *a)
{
	int have_out = 0, endopts = 0;
	memset(a, 0, sizeof *a);
	a->cmd = cmd;
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		/* "-1" is a (bad) number rather than an option: let the
		 * command say so. */
		if (endopts || s[0] != '-' || !s[1] || (s[1] >= '0' && s[1] <= '9')) {
			if (a->npos == cmd->npos)
				return usage_error(cmd, "unexpected argument '%s'", s);
			a->pos[a->npos++] = s;
		} else if (!strcmp(s, "--")) {
			endopts = 1;
		} else if ((cmd->opts & OPT_JSON) && !strcmp(s, "--json")) {
			if (a->json)
				return usage_error(cmd, "--json given twice");
			a->json = 1;
		} else if ((cmd->opts & OPT_OUT) && !strncmp(s, "-o", 2)) {
			if (have_out)
				return usage_error(cmd, "-o given twice");
			if (s[2]) {
				a->out = s + 2;
			} else if (i + 1 < argc) {
				a->out = argv[++i];
			} else {
				return usage_error(cmd, "-o needs a FILE");
			}
			if (!a->out[0])
				return usage_error(cmd, "-o needs a FILE");
			have_out = 1;
		} else if ((cmd->opts & OPT_KEEP) &&
			   (!strcmp(s, "--keep") || !strncmp(s, "--keep=", 7))) {
			const char *v = s[6] == '=' ? s + 7 : NULL, *why;
			uint64_t n;
			if (a->have_keep)
				return usage_error(cmd, "--keep given twice");
			if (!v && i + 1 >= argc)
				return usage_error(cmd, "--keep needs a number");
			if (!v)
				v = argv[++i];
			if (parse_u64(v, 0, &n, &why) != 0)
				return usage_error(cmd, "--keep '%s' %s", v, why);
			if (n > UINT_MAX)
				return usage_error(cmd, "--keep '%s' is too large", v);
			a->keep = (unsigned)n;
			a->have_keep = 1;
		} else {
			return usage_error(cmd, "unknown option '%s'", s);
		}
	}
	if (a->npos < cmd->npos) {
		/* Name the first argument that is missing, from the synopsis. */
		char word[32] = "";
		const char *p = cmd->args;
		for (int k = 0; k <= a->npos && *p; k++) {
			size_t n = strcspn(p, " ");
			snprintf(word, sizeof word, "%.*s", (int)n, p);
			p += n;
			p += strspn(p, " ");
		}
		return usage_error(cmd, "missing %s", word);
	}
	if ((cmd->opts & OPT_OUT) && !have_out)
		return usage_error(cmd, "missing -o FILE");
	return EXIT_OK;
}

/* ---- formatting ---------------------------------------------------------------- */

/* Local time, ISO 8601 to the second with the offset from UTC
 * ("2026-11-22T03:59:12+01:00"). */
static void format_time(char *buf, size_t size, uint64_t ns)
{
	time_t t = (time_t)(ns / 1000000000u);
	struct tm tm;
	if (!localtime_r(&t, &tm)) {
		snprintf(buf, size, "@%llu", (unsigned long long)t);
		return;
	}
	char day[32];
	strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
	long off = tm.tm_gmtoff;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	snprintf(buf, size, "%s%c%02ld:%02ld", day, sign, off / 3600, off / 60 % 60);
}

/* Bytes for people: "512 B", "6.7 KiB", "1.2 GiB". */
static void format_bytes(char *buf, size_t size, uint64_t n)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	if (n < 1024) {
		snprintf(buf, size, "%llu B", (unsigned long long)n);
		return;
	}
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024 && u + 1 < sizeof unit / sizeof unit[0]) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, "%.1f %s", v, unit[u]);
}

/* raw/stored as "8.3x", or "-" when nothing was stored (a snapshot of only
 * zero pages, say) and the ratio means nothing. */
static void format_ratio(char *buf, size_t size, const ckpt_snapshot_info *si)
{
	if (!si->stored_bytes)
		snprintf(buf, size, "-");
	else
		snprintf(buf, size, "%.1fx", (double)si->raw_bytes / (double)si->stored_bytes);
}

static void format_prot(char *buf, int prot)
{
	buf[0] = (prot & PROT_READ) ? 'r' : '-';
	buf[1] = (prot & PROT_WRITE) ? 'w' : '-';
	buf[2] = (prot & PROT_EXEC) ? 'x' : '-';
	buf[3] = '\0';
}

static const char *const map_flag_names[] = {"shared", "anon", "heap", "pinned"};

/* CKPT_MAP_* as "anon,heap", or "-" for none. */
static void format_map_flags(char *buf, size_t size, unsigned flags)
{
	size_t used = 0;
	buf[0] = '\0';
	for (unsigned b = 0; b < 4; b++)
		if (flags & (1u << b))
			used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? "," : "",
						 map_flag_names[b]);
	if (!used)
		snprintf(buf, size, "-");
}

static const char *run_kind(int kind)
{
	switch (kind) {
	case CKPT_RUN_DATA:
		return "data";
	case CKPT_RUN_ZERO:
		return "zero";
	case CKPT_RUN_FILE:
		return "file";
	default:
		return "?";
	}
}

static const char *map_name(const char *name)
{
	return name[0] ? name : "[anonymous]";
}

/* ---- the chain ----------------------------------------------------------------- */

static int open_chain(const struct command *cmd, const char *dir, ckpt_chain **ch)
{
	int rc = ckpt_chain_open(ch, dir);
	return rc ? lib_failure(cmd, rc) : EXIT_OK;
}

/* Turns CKPT_LATEST into the newest id of the chain, which an empty chain
 * does not have. */
static int resolve_id(const struct command *cmd, ckpt_chain *ch, const char *dir, uint64_t *id)
{
	if (*id != CKPT_LATEST)
		return EXIT_OK;
	*id = ckpt_chain_latest(ch);
	if (*id)
		return EXIT_OK;
	fprintf(stderr, "ckpt %s: %s: %s: the chain has no snapshots\n", cmd->name,
		ckpt_strerror(CKPT_ENOENT), dir);
	return EXIT_FAIL;
}

/* The summary fields of a snapshot, shared by ls --json and show --json. */
static void json_info(const ckpt_snapshot_info *si)
{
	char when[64];
	format_time(when, sizeof when, si->time_ns);
	printf("\"id\":%llu,\"parent\":%llu,\"time\":\"%s\",\"time_ns\":%llu,",
	       (unsigned long long)si->id, (unsigned long long)si->parent, when,
	       (unsigned long long)si->time_ns);
	printf("\"type\":\"%s\",\"base\":%s,\"resumable\":%s,\"threads\":%u,\"page_size\":%u,",
	       si->base ? "full" : "incr", si->base ? "true" : "false",
	       si->resumable ? "true" : "false", si->threads, si->page_size);
	printf("\"exe\":");
	json_str(stdout, si->exe);
	printf(",\"build_id\":");
	json_str(stdout, si->build_id);
	printf(",\"chain_id\":");
	json_str(stdout, si->chain_id);
	printf(",\"file\":");
	json_str(stdout, si->file);
	printf(",\"nmappings\":%zu,\"nruns\":%zu,\"nblocks\":%zu,", si->mappings, si->runs,
	       si->blocks);
	printf("\"data_pages\":%llu,\"zero_pages\":%llu,\"file_pages\":%llu,",
	       (unsigned long long)si->data_pages, (unsigned long long)si->zero_pages,
	       (unsigned long long)si->file_pages);
	printf("\"raw_bytes\":%llu,\"stored_bytes\":%llu,\"file_bytes\":%llu,\"ratio\":",
	       (unsigned long long)si->raw_bytes, (unsigned long long)si->stored_bytes,
	       (unsigned long long)si->file_bytes);
	if (si->stored_bytes)
		printf("%.3f", (double)si->raw_bytes / (double)si->stored_bytes);
	else
		printf("null");
}

/* ---- MPI job folders ------------------------------------------------------------- */

/* Whether dir is the folder of an MPI job: it has an entry named manifest
 * (what that entry is, the reader of the manifest checks). */
static int is_job(const char *dir)
{
	char path[PATH_MAX];
	struct stat st;
	if (snprintf(path, sizeof path, "%s/" CKPT__MANIFEST_NAME, dir) >= (int)sizeof path)
		return 0;
	return lstat(path, &st) == 0;
}

/* The folder of rank r's chain. */
static void rank_dir(char *buf, size_t size, const char *dir, int r)
{
	snprintf(buf, size, "%s/rank-%05d", dir, r);
}

/* The manifest of a job folder, or a failure naming what is wrong with it. */
static int read_manifest(const struct command *cmd, const char *dir, struct ckpt__manifest *m)
{
	char why[CKPT__MANIFEST_WHY];
	int rc = ckpt__manifest_read(dir, m, why);
	if (rc) {
		fprintf(stderr, "ckpt %s: %s: %s\n", cmd->name, ckpt_strerror(rc), why);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* The rank's chain, or NULL (with *rc) if it cannot be opened. */
static ckpt_chain *open_rank(const char *dir, int r, int *rc)
{
	char path[PATH_MAX];
	ckpt_chain *ch = NULL;
	rank_dir(path, sizeof path, dir, r);
	*rc = ckpt_chain_open(&ch, path);
	return *rc ? NULL : ch;
}

/*
 * ls on a job folder: its complete epochs, oldest first, with every rank's
 * snapshot of each and that snapshot's size; then the ranks whose chains
 * go on past the newest complete epoch (an epoch in flight or failed, or a
 * job killed during one: a restart sets those snapshots aside).
 */
static int ls_job(const struct args *a)
{
	const char *dir = a->pos[0];
	struct ckpt__manifest m;
	int status = read_manifest(a->cmd, dir, &m);
	if (status)
		return status;
	ckpt_chain **ch = calloc((size_t)m.ranks, sizeof *ch);
	int *errs = calloc((size_t)m.ranks, sizeof *errs);
	if (!ch || !errs) {
		fprintf(stderr, "ckpt ls: out of memory\n");
		free(ch);
		free(errs);
		ckpt__manifest_free(&m);
		return EXIT_FAIL;
	}
	for (int r = 0; r < m.ranks; r++) {
		ch[r] = open_rank(dir, r, &errs[r]);
		if (errs[r]) {
			char path[PATH_MAX];
			rank_dir(path, sizeof path, dir, r);
			fprintf(stderr, "ckpt ls: %s: %s: %s\n", path, ckpt_strerror(errs[r]),
				ckpt_last_error());
			status = EXIT_FAIL;
		}
	}
	const uint64_t *newest = ckpt__manifest_newest_ids(&m);
	if (a->json) {
		printf("{\"dir\":");
		json_str(stdout, dir);
		printf(",\"job\":true,\"ranks\":%d,\"epochs\":[", m.ranks);
	} else {
		printf("%s: job of %d rank%s, ", dir, m.ranks, m.ranks == 1 ? "" : "s");
		if (m.nepochs)
			printf("%zu complete epoch%s listed (newest %llu)\n", m.nepochs,
			       m.nepochs == 1 ? "" : "s",
			       (unsigned long long)ckpt__manifest_newest(&m));
		else
			printf("no complete epoch\n");
		if (m.nepochs)
			printf("%6s  %6s  %8s  %10s\n", "EPOCH", "RANK", "ID", "SIZE");
	}
	for (size_t e = 0; e < m.nepochs; e++) {
		if (a->json)
			printf("%s{\"epoch\":%llu,\"snapshots\":[", e ? "," : "",
			       (unsigned long long)m.epochs[e]);
		for (int r = 0; r < m.ranks; r++) {
			uint64_t id = m.ids[e * (size_t)m.ranks + (size_t)r];
			ckpt_snapshot_info si;
			int rc = ch[r] ? ckpt_chain_info(ch[r], id, &si) : errs[r];
			if (rc && ch[r]) {
				fprintf(stderr,
					"ckpt ls: epoch %llu: snapshot %llu of rank %d: %s\n",
					(unsigned long long)m.epochs[e], (unsigned long long)id, r,
					ckpt_strerror(rc));
				status = EXIT_FAIL;
			}
			if (a->json) {
				printf("%s{\"rank\":%d,\"id\":%llu,\"file_bytes\":", r ? "," : "",
				       r, (unsigned long long)id);
				if (rc)
					printf("null}");
				else
					printf("%llu}", (unsigned long long)si.file_bytes);
				continue;
			}
			char size[32] = "missing";
			if (!rc)
				format_bytes(size, sizeof size, si.file_bytes);
			printf("%6llu  %6d  %8llu  %10s\n", (unsigned long long)m.epochs[e], r,
			       (unsigned long long)id, size);
		}
		if (a->json)
			printf("]}");
	}
	if (a->json)
		printf("],\"past\":[");
	int any = 0;
	for (int r = 0; r < m.ranks; r++) {
		uint64_t after = newest ? newest[r] : 0;
		uint64_t latest = ch[r] ? ckpt_chain_latest(ch[r]) : 0;
		if (latest <= after)
			continue;
		if (a->json)
			printf("%s{\"rank\":%d,\"first\":%llu,\"last\":%llu}", any ? "," : "", r,
			       (unsigned long long)(after + 1), (unsigned long long)latest);
		else if (after + 1 == latest)
			printf("rank %d: snapshot %llu past the newest complete epoch\n", r,
			       (unsigned long long)latest);
		else
			printf("rank %d: snapshots %llu-%llu past the newest complete epoch\n", r,
			       (unsigned long long)(after + 1), (unsigned long long)latest);
		any = 1;
	}
	if (a->json)
		printf("]}\n");
	for (int r = 0; r < m.ranks; r++)
		ckpt_chain_close(ch[r]);
	free(ch);
	free(errs);
	ckpt__manifest_free(&m);
	return status;
}

/*
 * verify on a job folder: the manifest parses (checksum and all), every
 * rank's chain is sound (ckpt_chain_verify), and every snapshot a complete
 * epoch names is in its rank's chain.  Every problem is reported, each
 * naming the rank folder; the first decides the exit status.
 */
static int verify_job(const struct args *a)
{
	const char *dir = a->pos[0];
	struct ckpt__manifest m;
	char why[CKPT__MANIFEST_WHY];
	int rc = ckpt__manifest_read(dir, &m, why);
	size_t files = 0, problems = 0;
	if (a->json) {
		printf("{\"dir\":");
		json_str(stdout, dir);
		printf(",\"job\":true,\"errors\":[");
	}
	char msg[PATH_MAX + 1024];
#define PROBLEM(...)                                                                               \
	do {                                                                                       \
		snprintf(msg, sizeof msg, __VA_ARGS__);                                            \
		if (a->json) {                                                                     \
			printf("%s", problems ? "," : "");                                         \
			json_str(stdout, msg);                                                     \
		} else {                                                                           \
			fprintf(stderr, "ckpt verify: %s\n", msg);                                 \
		}                                                                                  \
		problems++;                                                                        \
	} while (0)
	if (rc) {
		PROBLEM("%s: %s", ckpt_strerror(rc), why);
		if (a->json)
			printf("],\"ok\":false}\n");
		return EXIT_FAIL;
	}
	for (int r = 0; r < m.ranks; r++) {
		char path[PATH_MAX];
		size_t n = 0;
		rank_dir(path, sizeof path, dir, r);
		rc = ckpt_chain_verify(path, &n);
		files += n;
		if (rc) {
			const char *detail = ckpt_last_error();
			PROBLEM("rank %d: %s: %s%s%s", r, path, ckpt_strerror(rc),
				detail[0] ? ": " : "", detail);
			continue;
		}
		ckpt_chain *ch = open_rank(dir, r, &rc);
		if (!ch) {
			PROBLEM("rank %d: %s: %s: %s", r, path, ckpt_strerror(rc),
				ckpt_last_error());
			continue;
		}
		for (size_t e = 0; e < m.nepochs; e++) {
			uint64_t id = m.ids[e * (size_t)m.ranks + (size_t)r];
			ckpt_snapshot_info si;
			if (ckpt_chain_info(ch, id, &si) != 0)
				PROBLEM("rank %d: %s: epoch %llu names snapshot %llu, which is not "
					"in the chain (%llu-%llu)",
					r, path, (unsigned long long)m.epochs[e],
					(unsigned long long)id,
					(unsigned long long)ckpt_chain_first(ch),
					(unsigned long long)ckpt_chain_latest(ch));
		}
		ckpt_chain_close(ch);
	}
#undef PROBLEM
	if (a->json) {
		printf("],\"ok\":%s,\"ranks\":%d,\"epochs\":%zu,\"files\":%zu}\n",
		       problems ? "false" : "true", m.ranks, m.nepochs, files);
	} else if (!problems) {
		printf("%s: job of %d rank%s, %zu complete epoch%s: manifest and %zu file%s, all "
		       "sound\n",
		       dir, m.ranks, m.ranks == 1 ? "" : "s", m.nepochs, m.nepochs == 1 ? "" : "s",
		       files, files == 1 ? "" : "s");
	}
	ckpt__manifest_free(&m);
	return problems ? EXIT_FAIL : EXIT_OK;
}

/* ---- ls ------------------------------------------------------------------------ */

static int cmd_ls(const struct args *a)
{
	const char *dir = a->pos[0];
	ckpt_chain *ch;
	if (is_job(dir))
		return ls_job(a);
	int status = open_chain(a->cmd, dir, &ch);
	if (status)
		return status;
	uint64_t first = ckpt_chain_first(ch), last = ckpt_chain_latest(ch);
	if (a->json) {
		printf("{\"dir\":");
		json_str(stdout, dir);
		printf(",\"snapshots\":[");
	} else if (!last) {
		printf("%s: no snapshots (empty chain)\n", dir);
	} else {
		printf("%6s  %-25s  %-4s  %10s  %10s  %6s\n", "ID", "TIME", "TYPE", "PAGES",
		       "STORED", "RATIO");
	}
	for (uint64_t id = first; last && id <= last; id++) {
		ckpt_snapshot_info si;
		int rc = ckpt_chain_info(ch, id, &si);
		if (rc) {
			status = lib_failure(a->cmd, rc);
			break;
		}
		if (a->json) {
			printf("%s{", id == first ? "" : ",");
			json_info(&si);
			printf("}");
			continue;
		}
		char when[64], stored[32], ratio[32];
		format_time(when, sizeof when, si.time_ns);
		format_bytes(stored, sizeof stored, si.stored_bytes);
		format_ratio(ratio, sizeof ratio, &si);
		printf("%6llu  %-25s  %-4s  %10llu  %10s  %6s\n", (unsigned long long)si.id, when,
		       si.base ? "full" : "incr", (unsigned long long)si.data_pages, stored, ratio);
	}
	if (a->json && !status)
		printf("]}\n");
	ckpt_chain_close(ch);
	return status;
}

/* ---- show ---------------------------------------------------------------------- */

struct show_state {
	int json;
	int first;
};

static int show_mapping(const ckpt_mapping_info *m, void *arg)
{
	struct show_state *st = arg;
	char prot[4], flags[64];
	format_prot(prot, m->prot);
	format_map_flags(flags, sizeof flags, m->flags);
	if (st->json) {
		printf("%s{\"start\":\"0x%" PRIxPTR "\",\"end\":\"0x%" PRIxPTR "\",\"prot\":\"%s\","
		       "\"flags\":[",
		       st->first ? "" : ",", m->start, m->end, prot);
		int any = 0;
		for (unsigned b = 0; b < 4; b++)
			if (m->flags & (1u << b))
				printf("%s\"%s\"", any++ ? "," : "", map_flag_names[b]);
		printf("],\"born\":%llu,\"offset\":%llu,\"inode\":%llu,\"name\":",
		       (unsigned long long)m->born, (unsigned long long)m->offset,
		       (unsigned long long)m->inode);
		json_str(stdout, m->name);
		printf("}");
	} else {
		printf("  0x%012" PRIxPTR "-0x%012" PRIxPTR "  %s  %-18s  %6llu  %s\n", m->start,
		       m->end, prot, flags, (unsigned long long)m->born, map_name(m->name));
	}
	st->first = 0;
	return 0;
}

static int show_run(const ckpt_stored_run *r, void *arg)
{
	struct show_state *st = arg;
	if (st->json)
		printf("%s{\"start\":\"0x%" PRIxPTR "\",\"pages\":%zu,\"kind\":\"%s\"}",
		       st->first ? "" : ",", r->start, r->npages, run_kind(r->kind));
	else
		printf("  0x%012" PRIxPTR "  %10zu  %s\n", r->start, r->npages, run_kind(r->kind));
	st->first = 0;
	return 0;
}

static void show_summary(const ckpt_snapshot_info *si)
{
	char when[64], raw[32], stored[32], file[32], ratio[32];
	format_time(when, sizeof when, si->time_ns);
	format_bytes(raw, sizeof raw, si->raw_bytes);
	format_bytes(stored, sizeof stored, si->stored_bytes);
	format_bytes(file, sizeof file, si->file_bytes);
	format_ratio(ratio, sizeof ratio, si);
	printf("snapshot    %llu\n", (unsigned long long)si->id);
	if (si->parent)
		printf("parent      %llu\n", (unsigned long long)si->parent);
	else
		printf("parent      - (a base)\n");
	printf("time        %s\n", when);
	printf("type        %s\n", si->base ? "full (base)" : "incremental");
	if (si->resumable)
		printf("resumable   yes\n");
	else if (si->threads > 1)
		printf("resumable   no (the process had %u threads)\n", si->threads);
	else if (si->base && si->id > 1)
		printf("resumable   no (a base made by ckpt compact, without a process record)\n");
	else
		printf("resumable   no (not written with CKPT_F_RESUME)\n");
	printf("threads     %u\n", si->threads);
	printf("executable  %s\n", si->exe[0] ? si->exe : "-");
	printf("build-id    %s\n", si->build_id[0] ? si->build_id : "-");
	printf("chain       %s\n", si->chain_id);
	printf("file        %s (%s)\n", si->file, file);
	printf("page size   %u\n", si->page_size);
	printf("mappings    %zu\n", si->mappings);
	printf("runs        %zu in %zu block%s\n", si->runs, si->blocks,
	       si->blocks == 1 ? "" : "s");
	printf("pages       %llu data, %llu zero, %llu file\n", (unsigned long long)si->data_pages,
	       (unsigned long long)si->zero_pages, (unsigned long long)si->file_pages);
	printf("bytes       %s raw, %s stored (%s)\n", raw, stored, ratio);
}

static int show_thread(const ckpt_thread_info *t, void *arg)
{
	struct show_state *st = arg;
	if (st->json) {
		printf("%s{\"tid\":%d,\"committer\":%s,\"name\":", st->first ? "" : ",", t->tid,
		       (t->flags & CKPT_THREAD_COMMITTER) ? "true" : "false");
		json_str(stdout, t->name);
		printf(",\"syscall\":%ld,\"sp\":\"0x%" PRIxPTR "\",\"ip\":\"0x%" PRIxPTR
		       "\",\"stack\":[\"0x%" PRIxPTR "\",\"0x%" PRIxPTR "\"],\"fs_base\":\"0x%" PRIxPTR
		       "\",\"fpu_bytes\":%zu}",
		       t->syscall, t->sp, t->ip, t->stack_lo, t->stack_hi, t->fs_base, t->fpu_bytes);
	} else {
		char sc[32];
		if (t->flags & CKPT_THREAD_COMMITTER)
			snprintf(sc, sizeof sc, "committing");
		else if (t->syscall >= 0)
			snprintf(sc, sizeof sc, "syscall %ld", t->syscall);
		else
			snprintf(sc, sizeof sc, "running");
		printf("  %-8d  %-16s  %-14s  0x%012" PRIxPTR "-0x%012" PRIxPTR "  0x%012" PRIxPTR
		       "\n",
		       t->tid, t->name, sc, t->stack_lo, t->stack_hi, t->sp);
	}
	st->first = 0;
	return 0;
}

/* The threads section of show, if the snapshot records threads. */
static int show_threads(ckpt_chain *ch, uint64_t id, struct show_state *st)
{
	if (!st->json)
		printf("\nthreads:\n  %-8s  %-16s  %-14s  %-29s  %s\n", "TID", "NAME", "STATE",
		       "STACK", "SP");
	st->first = 1;
	int rc = ckpt_chain_threads(ch, id, show_thread, st);
	if (!st->json && rc == CKPT_ENOENT)
		printf("  (not recorded)\n");
	return rc == CKPT_ENOENT ? 0 : rc;
}

static int cmd_show(const struct args *a)
{
	const char *dir = a->pos[0];
	uint64_t id;
	int status = parse_id(a->cmd, "ID", a->pos[1], &id);
	if (status)
		return status;
	ckpt_chain *ch;
	status = open_chain(a->cmd, dir, &ch);
	if (status)
		return status;
	status = resolve_id(a->cmd, ch, dir, &id);
	ckpt_snapshot_info si;
	int rc = status ? 0 : ckpt_chain_info(ch, id, &si);
	if (rc)
		status = lib_failure(a->cmd, rc);
	if (status)
		goto out;

	struct show_state st = {a->json, 1};
	if (a->json) {
		printf("{");
		json_info(&si);
		printf(",\"mappings\":[");
	} else {
		show_summary(&si);
	}
	if (!a->json && (rc = show_threads(ch, id, &st)) != 0) {
		status = lib_failure(a->cmd, rc);
		goto out;
	}
	if (!a->json)
		printf("\nmappings:\n  %-29s  %-3s  %-18s  %6s  %s\n", "START-END", "PROT", "FLAGS",
		       "BORN", "NAME");
	rc = ckpt_chain_mappings(ch, id, show_mapping, &st);
	if (rc) {
		status = lib_failure(a->cmd, rc);
		goto out;
	}
	st.first = 1;
	if (a->json)
		printf("],\"runs\":[");
	else
		printf("\nruns stored:\n  %-14s  %10s  %s\n", "START", "PAGES", "KIND");
	rc = ckpt_chain_runs(ch, id, show_run, &st);
	if (rc) {
		status = lib_failure(a->cmd, rc);
		goto out;
	}
	if (a->json) {
		printf("],\"thread_records\":[");
		rc = show_threads(ch, id, &st);
		if (rc) {
			status = lib_failure(a->cmd, rc);
			goto out;
		}
		printf("]}\n");
	}
out:
	ckpt_chain_close(ch);
	return status;
}

/* ---- diff ---------------------------------------------------------------------- */

struct diff_state {
	size_t page_size;
	uint64_t runs, pages;
};

static int diff_run(const ckpt_page_run *r, void *arg)
{
	struct diff_state *st = arg;
	printf("0x%012" PRIxPTR "-0x%012" PRIxPTR "  %8zu  %s\n", r->start,
	       r->start + r->npages * st->page_size, r->npages, map_name(r->mapping));
	st->runs++;
	st->pages += r->npages;
	return 0;
}

static int cmd_diff(const struct args *a)
{
	const char *dir = a->pos[0];
	uint64_t ida, idb;
	int status = parse_id(a->cmd, "A", a->pos[1], &ida);
	if (!status)
		status = parse_id(a->cmd, "B", a->pos[2], &idb);
	if (status)
		return status;
	ckpt_chain *ch;
	status = open_chain(a->cmd, dir, &ch);
	if (status)
		return status;
	status = resolve_id(a->cmd, ch, dir, &ida);
	if (!status)
		status = resolve_id(a->cmd, ch, dir, &idb);
	/* Both snapshots are looked up first, so that a missing one is an
	 * error before anything is printed; b's page size sizes the runs. */
	ckpt_snapshot_info sa, sb;
	int rc = status ? 0 : ckpt_chain_info(ch, ida, &sa);
	if (!rc && !status)
		rc = ckpt_chain_info(ch, idb, &sb);
	if (rc)
		status = lib_failure(a->cmd, rc);
	if (status)
		goto out;

	struct diff_state st = {sb.page_size, 0, 0};
	printf("%-29s  %8s  %s\n", "START-END", "PAGES", "MAPPING");
	rc = ckpt_chain_diff(ch, ida, idb, diff_run, &st);
	if (rc) {
		status = lib_failure(a->cmd, rc);
		goto out;
	}
	printf("%llu run%s, %llu page%s differ%s between %llu and %llu\n",
	       (unsigned long long)st.runs, st.runs == 1 ? "" : "s", (unsigned long long)st.pages,
	       st.pages == 1 ? "" : "s", st.pages == 1 ? "s" : "", (unsigned long long)sa.id,
	       (unsigned long long)sb.id);
out:
	ckpt_chain_close(ch);
	return status;
}

/* ---- extract ------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * FILE is never left half-written: the bytes go to a temporary file in
 * FILE's directory (so that the final rename stays on one file system and is
 * atomic), which is fsynced and renamed over FILE only once every byte has
 * been read and written.  On any error the temporary is removed and FILE is
 * as it was.
 */
static int cmd_extract(const struct args *a)
{
	const struct command *cmd = a->cmd;
	const char *dir = a->pos[0], *path = a->out, *why;
	uint64_t id, addr, len;
	int status = parse_id(cmd, "ID", a->pos[1], &id);
	if (status)
		return status;
	if (parse_u64(a->pos[2], 1, &addr, &why) != 0)
		return usage_error(cmd, "ADDR '%s' %s", a->pos[2], why);
	if (parse_u64(a->pos[3], 1, &len, &why) != 0)
		return usage_error(cmd, "LEN '%s' %s", a->pos[3], why);
	if (len == 0)
		return usage_error(cmd, "LEN must not be 0");
	int past_end = addr + len < addr;
#if UINTPTR_MAX < UINT64_MAX
	past_end = past_end || addr + len - 1 > UINTPTR_MAX;
#endif
	if (past_end)
		return usage_error(cmd, "ADDR + LEN (%s + %s) is past the end of the address space",
				   a->pos[2], a->pos[3]);

	ckpt_chain *ch;
	status = open_chain(cmd, dir, &ch);
	if (status)
		return status;
	char *tmp = NULL, *dirname = NULL, *buf = NULL;
	int fd = -1;
	status = resolve_id(cmd, ch, dir, &id);
	if (status)
		goto out;

	/* "a/b/FILE" -> "a/b/.FILE.XXXXXX", "FILE" -> "./.FILE.XXXXXX". */
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	size_t dlen = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
	dirname = malloc(dlen + 1);
	tmp = malloc(dlen + strlen(base) + 16);
	buf = malloc(len < EXTRACT_CHUNK ? (size_t)len : EXTRACT_CHUNK);
	if (!dirname || !tmp || !buf) {
		fprintf(stderr, "ckpt %s: out of memory\n", cmd->name);
		status = EXIT_FAIL;
		goto out;
	}
	if (slash)
		memcpy(dirname, path, dlen);
	else
		dirname[0] = '.';
	dirname[dlen] = '\0';
	sprintf(tmp, "%s/.%s.XXXXXX", dlen == 1 && dirname[0] == '/' ? "" : dirname, base);
	fd = mkstemp(tmp);
	if (fd < 0) {
		/* The template is no help in a message: glibc has filled in
		 * its X's even though no file was made. */
		status = sys_failure(cmd, dirname, "cannot create a temporary file");
		free(tmp);
		tmp = NULL; /* nothing to remove */
		goto out;
	}

	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < EXTRACT_CHUNK ? (size_t)(len - done) : EXTRACT_CHUNK;
		int rc = ckpt_chain_read(ch, id, (uintptr_t)(addr + done), buf, n);
		if (rc) {
			status = lib_failure(cmd, rc);
			goto out;
		}
		if (write_all(fd, buf, n) != 0) {
			status = sys_failure(cmd, tmp, "write");
			goto out;
		}
		done += n;
	}
	if (fsync(fd) != 0) {
		status = sys_failure(cmd, tmp, "fsync");
		goto out;
	}
	int cfd = fd;
	fd = -1;
	if (close(cfd) != 0) {
		status = sys_failure(cmd, tmp, "close");
		goto out;
	}
	if (rename(tmp, path) != 0) {
		status = sys_failure(cmd, path, "rename");
		goto out;
	}
	free(tmp);
	tmp = NULL;
	/* The rename itself is made durable by syncing the directory.  FILE
	 * is complete at this point whatever happens, and some file systems
	 * refuse fsync on a directory, so a failure here is not an error. */
	int dfd = open(dirname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(dirname);
	free(buf);
	ckpt_chain_close(ch);
	return status;
}

/* ---- verify -------------------------------------------------------------------- */

static int cmd_verify(const struct args *a)
{
	const char *dir = a->pos[0];
	size_t files = 0;
	if (is_job(dir))
		return verify_job(a);
	int rc = ckpt_chain_verify(dir, &files);
	if (a->json) {
		printf("{\"ok\":%s,\"files\":%zu", rc ? "false" : "true", files);
		if (rc) {
			const char *detail = ckpt_last_error();
			char msg[1024];
			snprintf(msg, sizeof msg, "%s%s%s", ckpt_strerror(rc),
				 detail[0] ? ": " : "", detail);
			printf(",\"error\":");
			json_str(stdout, msg);
		}
		printf("}\n");
		return rc ? EXIT_FAIL : EXIT_OK;
	}
	if (rc)
		return lib_failure(a->cmd, rc);
	printf("%s: %zu file%s, all sound\n", dir, files, files == 1 ? "" : "s");
	return EXIT_OK;
}

/* ---- compact ------------------------------------------------------------------- */

static int cmd_compact(const struct args *a)
{
	const char *dir = a->pos[0];
	size_t folded = 0;
	int rc = ckpt_chain_compact(dir, a->keep, &folded);
	if (rc)
		return lib_failure(a->cmd, rc);
	if (folded)
		printf("%s: %zu snapshot%s folded into a new base\n", dir, folded,
		       folded == 1 ? "" : "s");
	else
		printf("%s: nothing to fold (0 snapshots folded)\n", dir);
	return EXIT_OK;
}

/* ---- help, version, errors ------------------------------------------------------- */

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(name, commands[i].name))
			return &commands[i];
	return NULL;
}

static int cmd_help(int argc, char **argv)
{
	if (argc == 1) {
		usage(stdout);
		return EXIT_OK;
	}
	const struct command *cmd = argc == 2 ? find_command(argv[1]) : NULL;
	if (argc > 2) {
		fprintf(stderr, "ckpt help: unexpected argument '%s'\n", argv[2]);
		return EXIT_USAGE;
	}
	if (!cmd) {
		fprintf(stderr, "ckpt help: unknown command '%s'\n", argv[1]);
		return EXIT_USAGE;
	}
	command_usage(stdout, cmd);
	printf("  %s\n", cmd->what);
	return EXIT_OK;
}

static int cmd_version(int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "ckpt version: no arguments expected\n");
		return EXIT_USAGE;
	}
	printf("ckpt %s (library %s)\n", CKPT_VERSION_STRING, ckpt_version_string());
	return EXIT_OK;
}

static int cmd_errors(int argc, char **argv)
{
	/* With codes as arguments: describe those; without: list them all. */
	if (argc > 1) {
		int status = EXIT_OK;
		for (int i = 1; i < argc; i++) {
			char *end;
			long v = strtol(argv[i], &end, 0);
			if (*end || end == argv[i]) {
				fprintf(stderr, "ckpt errors: '%s' is not a number\n", argv[i]);
				status = EXIT_USAGE;
				continue;
			}
			if (v > 0)
				v = -v; /* a process exit status or errno value */
			printf("%6ld  %-18s %s\n", v, ckpt_err_name((int)v), ckpt_strerror((int)v));
		}
		return status;
	}
#define ROW(name, value, text) printf("%6d  %-18s %s\n", value, "CKPT_" #name, text);
	CKPT_ERRNO_MAP(ROW)
#undef ROW
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--version"))
		return cmd_version(1, argv + 1);
	const struct command *cmd = find_command(argv[1]);
	if (!cmd) {
		fprintf(stderr, "ckpt: unknown command '%s'\n", argv[1]);
		usage(stderr);
		return EXIT_USAGE;
	}
	int status;
	if (cmd->raw) {
		status = cmd->raw(argc - 1, argv + 1);
	} else {
		struct args a;
		status = parse_args(cmd, argc - 1, argv + 1, &a);
		if (!status)
			status = cmd->run(&a);
	}
	/* Output that could not be written is a failure, whatever the
	 * command thought of its work (a full disk behind a redirection). */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "ckpt %s: standard output: write error\n", cmd->name);
		if (status == EXIT_OK)
			status = EXIT_FAIL;
	}
	return status;
}

/* ---- resume ----------------------------------------------------------------------- */

/* Splits n bytes of NUL-terminated strings into a NULL-terminated array. */
static char **split(const char *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += p[i] == '\0';
	char **v = calloc(k + 1, sizeof *v);
	if (!v)
		return NULL;
	k = 0;
	for (size_t i = 0; i < n; i += strlen(p + i) + 1)
		v[k++] = (char *)(p + i);
	return v;
}

static int cmd_resume(const struct args *a)
{
	const char *dir = a->pos[0];
	ckpt_chain *ch;
	int rc = ckpt_chain_open(&ch, dir);
	if (rc)
		return lib_failure(a->cmd, rc);
	if (!ckpt_chain_latest(ch)) {
		fprintf(stderr, "ckpt resume: %s holds no snapshot: nothing to resume\n", dir);
		ckpt_chain_close(ch);
		return EXIT_FAIL;
	}
	ckpt_launch_info li;
	rc = ckpt_chain_launch(ch, CKPT_LATEST, &li);
	if (rc) {
		int r = lib_failure(a->cmd, rc);
		ckpt_chain_close(ch);
		return r;
	}
	char **argv = split(li.argv, li.argv_len), **envp = split(li.env, li.env_len);
	if (!argv || !envp) {
		fprintf(stderr, "ckpt resume: out of memory\n");
		return EXIT_FAIL;
	}
	if (li.cwd[0] && chdir(li.cwd) != 0)
		return sys_failure(a->cmd, li.cwd, "chdir");
	/* The layout the program had: its ckpt_open then need not execute
	 * it again. */
	int pers = personality(0xffffffff);
	if (pers >= 0)
		personality((unsigned long)pers | ADDR_NO_RANDOMIZE);
	fflush(NULL);
	execve(li.exe, argv, envp);
	return sys_failure(a->cmd, li.exe, "execve");
}

/* ---- run -------------------------------------------------------------------------- */

#ifndef PKGLIBDIR
#define PKGLIBDIR "/usr/local/lib/ckpt"
#endif
#define RUN_PRELOAD "libckpt-run.so"

/* libckpt-run.so: $CKPT_RUN_PRELOAD, else beside this program in the build
 * tree, else in pkglibdir.  An absolute path: the chain records it. */
static int find_run_preload(char *out, size_t outsz)
{
	const char *env = getenv("CKPT_RUN_PRELOAD");
	char buf[PATH_MAX];
	if (env && *env)
		return realpath(env, out) ? 0 : -1;
	ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
	if (n > 0) {
		buf[n] = '\0';
		char *slash = strrchr(buf, '/');
		const char *cands[] = {"/" RUN_PRELOAD, "/.libs/" RUN_PRELOAD, "/../lib/ckpt/" RUN_PRELOAD};
		for (size_t i = 0; slash && i < sizeof cands / sizeof cands[0]; i++) {
			char c[PATH_MAX + 64];
			snprintf(c, sizeof c, "%.*s%s", (int)(slash - buf), buf, cands[i]);
			if (access(c, R_OK) == 0 && realpath(c, out))
				return 0;
		}
	}
	(void)outsz;
	return realpath(PKGLIBDIR "/" RUN_PRELOAD, out) ? 0 : -1;
}

/* PROG as execvp would find it. */
static int find_program(const char *prog, char *out, size_t outsz)
{
	if (strchr(prog, '/')) {
		snprintf(out, outsz, "%s", prog);
		return access(out, X_OK);
	}
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/bin:/usr/bin";
	for (const char *p = path;;) {
		const char *e = strchr(p, ':');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		snprintf(out, outsz, "%.*s/%s", (int)len, len ? p : ".", prog);
		if (access(out, X_OK) == 0)
			return 0;
		if (!e)
			return -1;
		p = e + 1;
	}
}

/* 1 if the ELF file at path has a program interpreter (a dynamically
 * linked program), 0 if not, -1 if it is no 64-bit ELF file (a script: its
 * interpreter is looked at instead by the caller). */
static int has_interp(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	Elf64_Ehdr eh;
	int r = -1;
	if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh && !memcmp(eh.e_ident, ELFMAG, SELFMAG) &&
	    eh.e_ident[EI_CLASS] == ELFCLASS64) {
		r = 0;
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;
			if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + (uint64_t)i * eh.e_phentsize)) !=
			    (ssize_t)sizeof ph)
				break;
			if (ph.p_type == PT_INTERP)
				r = 1;
		}
	}
	close(fd);
	return r;
}

/* "10m", "1s", "500ms", "2h", "30" (seconds) in milliseconds; 0 if bad. */
static uint64_t parse_duration(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v <= 0)
		return 0;
	double ms = !strcmp(end, "ms") ? v
		    : !*end || !strcmp(end, "s") ? v * 1e3
		    : !strcmp(end, "m") ? v * 60e3
		    : !strcmp(end, "h") ? v * 3600e3 : -1;
	return ms >= 1 && ms < 1e15 ? (uint64_t)ms : 0;
}

static int signal_number(const char *s, size_t len)
{
	static const struct {
		const char *name;
		int sig;
	} names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"USR1", SIGUSR1},
		     {"USR2", SIGUSR2}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"CONT", SIGCONT},
		     {"TSTP", SIGTSTP}, {"XCPU", SIGXCPU}, {"PWR", SIGPWR}};
	char buf[32];
	if (!len || len >= sizeof buf)
		return 0;
	memcpy(buf, s, len);
	buf[len] = '\0';
	const char *n = strncmp(buf, "SIG", 3) ? buf : buf + 3;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(n, names[i].name))
			return names[i].sig;
	char *end;
	long v = strtol(buf, &end, 10);
	return *end || v < 1 || v > 64 ? 0 : (int)v;
}

static int cmd_run(int argc, char **argv)
{
	const struct command *cmd = find_command("run");
	uint64_t every_ms = 600000, keep = 0;
	char sigs[256] = "";
	const char *json = NULL; /* "" for the default file */
	int have_keep = 0;
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--"); i++) {
		const char *o = argv[i];
		if (!strcmp(o, "--json") || !strncmp(o, "--json=", 7)) {
			if (json)
				return usage_error(cmd, "--json given twice");
			json = o[6] == '=' ? o + 7 : "";
			if (o[6] == '=' && !*json)
				return usage_error(cmd, "--json= needs a FILE");
		} else if (!strcmp(o, "--every") || !strcmp(o, "--on") || !strcmp(o, "--keep")) {
			if (i + 1 >= argc)
				return usage_error(cmd, "%s needs a value", o);
			const char *v = argv[++i];
			if (!strcmp(o, "--every")) {
				if (!(every_ms = parse_duration(v)))
					return usage_error(cmd, "--every '%s' is not a duration (10m, 1s, "
								"500ms)",
							   v);
			} else if (!strcmp(o, "--on")) {
				sigs[0] = '\0';
				for (const char *p = v;;) {
					const char *e = strchr(p, ',');
					size_t len = e ? (size_t)(e - p) : strlen(p);
					int sig = signal_number(p, len);
					if (!sig || sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV ||
					    sig == SIGBUS || sig == SIGRTMAX || sig == 32 || sig == 33)
						return usage_error(cmd, "--on: '%.*s' is not a signal ckpt "
									"can commit on",
								   (int)len, p);
					size_t at = strlen(sigs);
					snprintf(sigs + at, sizeof sigs - at, "%s%d", at ? "," : "", sig);
					if (!e)
						break;
					p = e + 1;
				}
			} else {
				const char *why;
				if (have_keep)
					return usage_error(cmd, "--keep given twice");
				if (parse_u64(v, 0, &keep, &why) != 0)
					return usage_error(cmd, "--keep '%s' %s", v, why);
				if (keep > INT_MAX)
					return usage_error(cmd, "--keep '%s' is too large", v);
				have_keep = 1;
			}
		} else if (!strcmp(o, "--help")) {
			command_usage(stdout, cmd);
			return EXIT_OK;
		} else if (o[0] == '-') {
			return usage_error(cmd, "unknown option '%s'", o);
		} else {
			break;
		}
	}
	if (i >= argc || !strcmp(argv[i], "--"))
		return usage_error(cmd, "missing DIR");
	const char *dir = argv[i++];
	if (i >= argc || strcmp(argv[i], "--") || i + 1 >= argc)
		return usage_error(cmd, "missing -- PROG");
	char **prog = argv + i + 1;
#if defined(__SANITIZE_ADDRESS__)
	/* The preload, built as this program is, would need the sanitizer's
	 * runtime loaded first, and a chain it wrote could not be resumed. */
	fprintf(stderr, "ckpt run: not available in a build with AddressSanitizer: resuming is "
			"not (its shadow memory is not snapshotted)\n");
	return EXIT_FAIL;
#endif
	char path[PATH_MAX], preload[PATH_MAX], absdir[2 * PATH_MAX + 2];
	if (find_program(prog[0], path, sizeof path) != 0) {
		fprintf(stderr, "ckpt run: %s: no such program\n", prog[0]);
		return EXIT_FAIL;
	}
	if (has_interp(path) == 0) {
		fprintf(stderr, "ckpt run: %s is statically linked (no program interpreter): ckpt "
				"run preloads libckpt into the program, which only a dynamically linked "
				"program loads\n",
			path);
		return EXIT_FAIL;
	}
	if (find_run_preload(preload, sizeof preload) != 0) {
		fprintf(stderr, "ckpt run: cannot find %s (looked beside this program and in %s; "
				"CKPT_RUN_PRELOAD names it)\n",
			RUN_PRELOAD, PKGLIBDIR);
		return EXIT_FAIL;
	}
	if (dir[0] == '/') {
		snprintf(absdir, sizeof absdir, "%s", dir);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof cwd))
			return sys_failure(cmd, ".", "getcwd");
		snprintf(absdir, sizeof absdir, "%s/%s", cwd, dir);
	}
	const char *old = getenv("LD_PRELOAD");
	char *ld = malloc(strlen(preload) + (old ? strlen(old) : 0) + 2);
	if (!ld) {
		fprintf(stderr, "ckpt run: out of memory\n");
		return EXIT_FAIL;
	}
	sprintf(ld, "%s%s%s", preload, old && *old ? ":" : "", old && *old ? old : "");
	char every[32], keeps[32], status[3 * PATH_MAX];
	snprintf(every, sizeof every, "%llu", (unsigned long long)every_ms);
	snprintf(keeps, sizeof keeps, "%llu", (unsigned long long)keep);
	if (json && !*json)
		snprintf(status, sizeof status, "%s/run.jsonl", absdir);
	else if (json && json[0] != '/' && getcwd(status, PATH_MAX))
		snprintf(status + strlen(status), sizeof status - strlen(status), "/%s", json);
	else if (json)
		snprintf(status, sizeof status, "%s", json);
	unsetenv("CKPT_RUN_KEEP");
	unsetenv("CKPT_RUN_STATUS");
	if (setenv("LD_PRELOAD", ld, 1) || setenv("CKPT_RUN_DIR", absdir, 1) ||
	    setenv("CKPT_RUN_EVERY_MS", every, 1) ||
	    setenv("CKPT_RUN_SIGNALS", sigs[0] ? sigs : "10,15", 1) ||
	    (have_keep && setenv("CKPT_RUN_KEEP", keeps, 1)) ||
	    (json && setenv("CKPT_RUN_STATUS", status, 1))) {
		fprintf(stderr, "ckpt run: setenv: %s\n", strerror(errno));
		return EXIT_FAIL;
	}
	/* The layout a resume will need: the program's ckpt_open then need
	 * not execute it again. */
	int pers = personality(0xffffffff);
	if (pers >= 0)
		personality((unsigned long)pers | ADDR_NO_RANDOMIZE);
	fflush(NULL);
	execv(path, prog);
	return sys_failure(cmd, path, "execv");
}

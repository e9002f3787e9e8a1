/*
 * fuzz-reset.c - a persistent fuzzing loop: every input from the same state.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A fuzzer runs its target on input after input, and each run must start
 * from the same state: whatever the last input did to the target's globals
 * and heap (and however it ended: a crash half-way through leaves them
 * half-changed) must be gone.  A fork server gets that by forking a child
 * per input.  Here the target runs in the process itself: ckpt commits its
 * state once, after the target's set-up, and ckpt_restore(CKPT_LATEST)
 * with CKPT_F_SHADOW rolls the memory back after every input, reading no
 * file (a reset).  Its cost follows the pages the input wrote, not the size
 * of the heap (doc/TRACKING.md, "Resets").
 *
 * The target is a small key-value interpreter (target_init, target_run)
 * with global counters, a hash table of heap nodes, and a bug: `get` of a
 * key of seven characters that was never set aborts (an assertion of the
 * target's fails).  A crash (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT)
 * jumps back to the loop, which counts it, names the input, and resets as
 * after any other input, however much of the target's state the input had
 * changed.
 *
 * Usage: fuzz-reset [-n ROUNDS] [-d CHAIN] [DIR | -]
 *   DIR        every regular file in DIR is an input
 *   -          (or nothing) every line of standard input is an input
 *   -n ROUNDS  runs over all the inputs (default 100)
 *   -d CHAIN   the directory of the snapshot chain (default fuzz-reset.ckpt,
 *              written over; one snapshot)
 * At the end it prints execs/s, the crashes and the first input that
 * crashed, and whether the target's state was the same at the start of
 * every input (it checks: a hash of the globals and the table).
 *
 * What to copy into a harness of your own:
 *   - Inputs live in memory ckpt does not track (ckpt_exclude), read
 *     before tracking starts: a reset would roll back anything the loop
 *     keeps in the heap or in globals.  The loop's own state is on the
 *     stack of the thread that resets, which a reset leaves alone.
 *   - Nothing is printed with stdio while tracking (its buffers are in the
 *     heap, rolled back with it): write(2) from the stack, or print after
 *     ckpt_end.
 *   - Other threads must be quiescent during ckpt_restore.
 *   - Not under AddressSanitizer: its shadow memory is not rolled back, so
 *     a block an input frees stays poisoned after the reset brings it
 *     back, and the next read of it is reported as a use after free.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ckpt.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the target ----------------------------------------------------------------------------- */

#define NBUCKET 64

struct node {
	char key[16];
	long value;
	struct node *next;
};

/* The target's state: globals, and nodes on the heap. */
static struct {
	unsigned long commands, sets, gets;
	long last;
	char last_key[16];
} g;
static struct node *table[NBUCKET];

static unsigned bucket(const char *k)
{
	unsigned h = 2166136261u;
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 16777619u;
	return h % NBUCKET;
}

static struct node *lookup(const char *k)
{
	for (struct node *n = table[bucket(k)]; n; n = n->next)
		if (!strcmp(n->key, k))
			return n;
	return NULL;
}

static void set(const char *k, long v)
{
	struct node *n = lookup(k);
	if (!n) {
		n = calloc(1, sizeof *n);
		if (!n)
			return;
		snprintf(n->key, sizeof n->key, "%s", k);
		unsigned b = bucket(k);
		n->next = table[b];
		table[b] = n;
	}
	n->value = v;
	g.sets++;
}

static void target_init(void)
{
	static const char *const words[] = {"alpha", "beta", "gamma", "delta", "epsilon"};
	for (long i = 0; i < 200; i++) {
		char k[16];
		snprintf(k, sizeof k, "%s%ld", words[i % 5], i);
		set(k, i * i);
	}
}

/* One input: commands "set KEY VALUE", "get KEY", "del KEY", one a line. */
static void target_run(const char *in, size_t len)
{
	char line[128];
	size_t at = 0;
	while (at < len) {
		size_t n = 0;
		while (at < len && in[at] != '\n' && n < sizeof line - 1)
			line[n++] = in[at++];
		while (at < len && in[at] != '\n')
			at++;
		at++;
		line[n] = 0;
		char cmd[8], key[16];
		long v = 0;
		int got = sscanf(line, "%7s %15s %ld", cmd, key, &v);
		if (got < 2)
			continue;
		g.commands++;
		if (!strcmp(cmd, "set") && got == 3) {
			set(key, v);
		} else if (!strcmp(cmd, "get")) {
			struct node *nd = lookup(key);
			/* The bug a fuzzer is to find: a key of seven
			 * characters is taken for a known one, and the
			 * target's own check of that aborts. */
			if (strlen(key) == 7 && !nd)
				abort();
			if (nd)
				g.last = nd->value;
			snprintf(g.last_key, sizeof g.last_key, "%s", key);
			g.gets++;
		} else if (!strcmp(cmd, "del")) {
			struct node **p = &table[bucket(key)];
			while (*p && strcmp((*p)->key, key))
				p = &(*p)->next;
			if (*p) {
				struct node *d = *p;
				*p = d->next;
				free(d);
			}
		}
	}
}

/* A hash of the target's state: its globals and every node of the table. */
static uint64_t target_state(void)
{
	uint64_t h = 1469598103934665603u;
	const unsigned char *p = (const unsigned char *)&g;
	for (size_t i = 0; i < sizeof g; i++)
		h = (h ^ p[i]) * 1099511628211u;
	for (unsigned b = 0; b < NBUCKET; b++)
		for (const struct node *n = table[b]; n; n = n->next) {
			p = (const unsigned char *)n;
			for (size_t i = 0; i < offsetof(struct node, next); i++)
				h = (h ^ p[i]) * 1099511628211u;
		}
	return h;
}

/* ---- the harness ---------------------------------------------------------------------------- */

/* The inputs: one block of memory given to ckpt_exclude, never rolled
 * back.  Input i is data[off[i] .. off[i + 1]); its name (a file's, or
 * "line N") is names + 64 * i. */
struct inputs {
	char *data;
	size_t *off;
	char *names;
	size_t n, cap, bytes, room;
};

#define ARENA ((size_t)64 << 20)

static void die(const char *what, const char *why)
{
	fprintf(stderr, "fuzz-reset: %s: %s\n", what, why);
	exit(1);
}

static void add_input(struct inputs *in, const char *name, const char *p, size_t n)
{
	if (in->n + 2 > in->cap || in->bytes + n > in->room)
		die(name, "too many inputs, or too large (64 MiB in all)");
	memcpy(in->data + in->bytes, p, n);
	snprintf(in->names + 64 * in->n, 64, "%s", name);
	in->bytes += n;
	in->off[++in->n] = in->bytes;
}

static void load_dir(struct inputs *in, const char *dir)
{
	struct dirent **list;
	int n = scandir(dir, &list, NULL, alphasort);
	if (n < 0)
		die(dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
		struct stat st;
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
			free(list[i]);
			continue;
		}
		FILE *f = fopen(path, "rb");
		if (!f)
			die(path, strerror(errno));
		static char buf[1 << 20];
		size_t got = fread(buf, 1, sizeof buf, f);
		fclose(f);
		add_input(in, list[i]->d_name, buf, got);
		free(list[i]);
	}
	free(list);
}

static void load_lines(struct inputs *in, FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	unsigned long no = 0;
	while ((n = getline(&line, &cap, f)) >= 0) {
		char name[32];
		snprintf(name, sizeof name, "line %lu", ++no);
		add_input(in, name, line, (size_t)n);
	}
	free(line);
}

static sigjmp_buf crashed;

static void on_crash(int sig)
{
	siglongjmp(crashed, sig);
}

/* Runs the target on one input.  Returns 0, or the signal it crashed of. */
static int run_one(const char *p, size_t n)
{
	int sig = sigsetjmp(crashed, 1);
	if (!sig)
		target_run(p, n);
	return sig;
}

/* Writes a line with write(2): stdio's buffers are in the heap. */
static void say(const char *s)
{
	size_t n = strlen(s);
	if (write(1, s, n) != (ssize_t)n)
		return;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const char *chain = "fuzz-reset.ckpt", *src = "-";
	long rounds = 100;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			rounds = atol(argv[++i]);
		else if (!strcmp(argv[i], "-d") && i + 1 < argc)
			chain = argv[++i];
		else if (argv[i][0] != '-' || !strcmp(argv[i], "-"))
			src = argv[i];
		else {
			fprintf(stderr, "usage: %s [-n ROUNDS] [-d CHAIN] [DIR | -]\n", argv[0]);
			return 2;
		}
	}

	/* The inputs, in memory of their own. */
	struct inputs in = {0};
	char *arena = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED)
		die("mmap", strerror(errno));
	in.cap = 65536;
	in.off = (size_t *)arena;
	in.names = arena + in.cap * sizeof *in.off;
	in.data = in.names + in.cap * 64;
	in.room = ARENA - (size_t)(in.data - arena);
	if (!strcmp(src, "-"))
		load_lines(&in, stdin);
	else
		load_dir(&in, src);
	if (!in.n)
		die(src, "no inputs");

	target_init();

	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_SHADOW | CKPT_F_OVERWRITE;
	int rc = ckpt_open(&c, chain, &o);
	if (!rc)
		rc = ckpt_exclude(c, arena, ARENA);
	if (!rc)
		rc = ckpt_begin(c);
	if (!rc)
		rc = ckpt_commit(c, NULL);
	if (rc)
		die("ckpt", ckpt_last_error());

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_crash;
	sigemptyset(&sa.sa_mask);
	int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
	for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);

	/* The loop: its state on this stack, which a reset leaves alone. */
	uint64_t start_state = target_state();
	unsigned long execs = 0, crashes = 0, changed = 0;
	size_t first_crash = 0;
	int first_sig = 0;
	double t0 = now_s();
	for (long r = 0; r < rounds; r++)
		for (size_t i = 0; i < in.n; i++) {
			if (target_state() != start_state)
				changed++;
			int sig = run_one(in.data + in.off[i], in.off[i + 1] - in.off[i]);
			if (sig && !crashes++) {
				first_crash = i;
				first_sig = sig;
			}
			execs++;
			if (ckpt_restore(c, CKPT_LATEST)) {
				say("fuzz-reset: ckpt_restore failed\n");
				_exit(1);
			}
		}
	double secs = now_s() - t0;
	ckpt_stats s;
	ckpt_stats(c, &s);
	ckpt_end(c);
	ckpt_close(c);

	printf("fuzz-reset: %lu inputs run in %.2f s: %.0f execs/s (backend %s, %llu of the "
	       "resets from the log of faults)\n",
	       execs, secs, secs > 0 ? (double)execs / secs : 0.0,
	       s.backend == CKPT_BACKEND_UFFD ? "uffd" : "mprotect",
	       (unsigned long long)s.fast_restores);
	if (crashes)
		printf("fuzz-reset: %lu crashes; the first: input '%s' (%s)\n", crashes,
		       in.names + 64 * first_crash, strsignal(first_sig));
	else
		printf("fuzz-reset: no crash\n");
	printf("fuzz-reset: the target's state at the start of every input: %s\n",
	       changed ? "CHANGED" : "identical");
	return changed ? 1 : 0;
}

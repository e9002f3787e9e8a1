/*
 * tools/run-preload.c - the half of `ckpt run` that runs inside the program
 * (libckpt-run.so, loaded with LD_PRELOAD by ckpt(1)).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Its constructor, before the program's main, opens the chain directory
 * CKPT_RUN_DIR names with CKPT_F_RESUME: a directory that holds a chain is
 * resumed there and then (ckpt_open does not return), an empty one starts
 * the chain.  Before, the objects the chain's newest snapshot names and
 * the process has not loaded (the program dlopen()ed them) are loaded
 * again, so that they are where the resume's checks expect them.  Then
 * tracking begins and ckpt's own thread (src/run.c) commits every CKPT_RUN_EVERY_MS milliseconds and on each signal of
 * CKPT_RUN_SIGNALS (numbers, comma-separated), with every program thread
 * stopped; with CKPT_RUN_KEEP, it then compacts the chain to that many
 * increments.  CKPT_RUN_STATUS, if set, names a file that receives one
 * JSON object a line for each event (src/run.c).
 *
 * Once the chain is open, LD_PRELOAD and the CKPT_RUN_* variables leave
 * the environment, so that a program the process executes or a child it
 * forks is not checkpointed (a fork child also gets the program's own
 * actions for the commit signals back).  The environment the process was
 * started with, which `ckpt resume` uses, still has them.
 *
 * The library carries its own copy of libckpt's objects; it uses their
 * internal interface (src/run.h), which is what a program thread never
 * sees: the commits are made by a thread that is not the program's.
 */
#include <ckpt.h>

#include "resume.h"
#include "run.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A failure before the program runs: it does not run unprotected. */
__attribute__((noreturn)) static void fail(const char *what)
{
	fprintf(stderr, "ckpt run: %s: %s\n", what, ckpt_last_error());
	_exit(127);
}

static void forked(void)
{
	ckpt__run_forked();
}

static uint64_t number(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return dflt;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || *end) {
		fprintf(stderr, "ckpt run: %s=%s is not a number\n", name, v);
		_exit(127);
	}
	return n;
}

__attribute__((constructor)) static void run_start(void)
{
	const char *dir = getenv("CKPT_RUN_DIR");
	if (!dir || !*dir)
		return;
	struct ckpt__run_opts o = {0};
	o.every_ns = number("CKPT_RUN_EVERY_MS", 600000) * 1000000u;
	const char *keep = getenv("CKPT_RUN_KEEP");
	o.keep = keep && *keep ? (int)number("CKPT_RUN_KEEP", 0) : -1;
	const char *status = getenv("CKPT_RUN_STATUS");
	if (status && strlen(status) >= sizeof o.status) {
		fprintf(stderr, "ckpt run: CKPT_RUN_STATUS is too long\n");
		_exit(127);
	}
	if (status)
		strcpy(o.status, status);
	const char *sigs = getenv("CKPT_RUN_SIGNALS");
	if (!sigs)
		sigs = "10,15"; /* SIGUSR1, SIGTERM */
	for (const char *p = sigs; *p;) {
		char *end;
		long s = strtol(p, &end, 10);
		if (end == p || s < 1 || s > 64 || (*end && *end != ',')) {
			fprintf(stderr, "ckpt run: CKPT_RUN_SIGNALS=%s: not signal numbers\n", sigs);
			_exit(127);
		}
		o.sigs |= 1ull << (s - 1);
		p = *end ? end + 1 : end;
	}
	if (ckpt__run_prepare(&o))
		fail("cannot prepare");
	/* What the program dlopen()ed after it started (Python's extension
	 * modules), loaded again where there is a chain to resume. */
	ckpt__resume_load_libs(dir);
	ckpt_t *c;
	ckpt_options opt = {.flags = CKPT_F_RESUME};
	/* Returns only for a directory without a chain (or on failure). */
	if (ckpt_open(&c, dir, &opt))
		fail(dir);
	if (ckpt_begin(c))
		fail("cannot begin tracking");
	pthread_atfork(NULL, NULL, forked);
	unsetenv("LD_PRELOAD");
	unsetenv("CKPT_RUN_DIR");
	unsetenv("CKPT_RUN_EVERY_MS");
	unsetenv("CKPT_RUN_SIGNALS");
	unsetenv("CKPT_RUN_KEEP");
	unsetenv("CKPT_RUN_STATUS");
	ckpt__run_attach((struct ckpt *)c);
	ckpt__run_go();
}

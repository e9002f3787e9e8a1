/*
 * inject.c - fault injection for the snapshot writer's I/O, the capture
 * and a restore's mappings (CKPT_FAULT).
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "inject.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static const char *const names[CKPT__IO_KINDS] = {"write", "fsync", "rename", "open", "map",
						       "sync",  "swaps", "uffd"};

struct rule {
	int kind;
	unsigned long nth;
	int err;
};

static struct rule rules[16];
static int nrules;
static unsigned long counts[CKPT__IO_KINDS];
static char current[256]; /* the value the rules come from */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int errno_named(const char *s)
{
	static const struct {
		const char *name;
		int value;
	} known[] = {{"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT},
		     {"EACCES", EACCES}, {"EROFS", EROFS},   {"EFBIG", EFBIG},
		     {"EFAULT", EFAULT}, {"ENOMEM", ENOMEM}};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (!strcmp(s, known[i].name))
			return known[i].value;
	if (!strcmp(s, "SIGKILL"))
		return -SIGKILL;
	int v = atoi(s);
	return v > 0 ? v : EIO;
}

/* Lock held.  Counting starts again whenever the variable changes. */
static void parse(const char *env)
{
	snprintf(current, sizeof current, "%s", env);
	nrules = 0;
	memset(counts, 0, sizeof counts);
	char buf[256];
	strncpy(buf, env, sizeof buf - 1);
	buf[sizeof buf - 1] = '\0';
	char *save = NULL;
	for (char *tok = strtok_r(buf, ",", &save); tok && nrules < 16;
	     tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':');
		if (!colon)
			continue;
		*colon = '\0';
		char *eq = strchr(colon + 1, '=');
		if (eq)
			*eq = '\0';
		for (int k = 0; k < CKPT__IO_KINDS; k++)
			if (!strcmp(tok, names[k])) {
				rules[nrules].kind = k;
				rules[nrules].nth = strtoul(colon + 1, NULL, 10);
				rules[nrules].err = eq ? errno_named(eq + 1) : EIO;
				nrules++;
			}
	}
}

int ckpt__inject(int kind)
{
	const char *env = getenv("CKPT_FAULT");
	if (!env && !current[0])
		return 0;
	pthread_mutex_lock(&lock);
	if (strcmp(env ? env : "", current))
		parse(env ? env : "");
	unsigned long n = ++counts[kind];
	int err = 0;
	for (int i = 0; i < nrules; i++)
		if (rules[i].kind == kind && rules[i].nth == n)
			err = rules[i].err;
	pthread_mutex_unlock(&lock);
	if (err == -SIGKILL) {
		/* The process dies here, as if killed from outside at this
		 * point (a test of what the chain looks like then). */
		kill(getpid(), SIGKILL);
		for (;;)
			pause();
	}
	return err;
}

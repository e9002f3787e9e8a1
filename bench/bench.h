/*
 * bench/bench.h - what every benchmark shares: the clock, the random
 * numbers, and whether to run the short version.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_BENCH_BENCH_H
#define CKPT_BENCH_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64: a fixed seed gives every run the same numbers. */
static inline uint64_t xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* CKPT_BENCH_QUICK set (and not "0"): the short run, as --quick asks. */
static inline int quick_from_env(void)
{
	const char *env = getenv("CKPT_BENCH_QUICK");
	return env && *env && strcmp(env, "0");
}

/* For a benchmark whose only option is --quick: 1 quick, 0 full; after
 * printing the usage, -1 for a wrong option (exit 2), -2 for --help. */
static inline int quick_from_args(int argc, char **argv)
{
	int quick = quick_from_env();
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick")) {
			fprintf(stderr, "usage: %s [--quick]   (or CKPT_BENCH_QUICK=1)\n", argv[0]);
			return strcmp(argv[i], "--help") ? -1 : -2;
		}
		quick = 1;
	}
	return quick;
}

#endif /* CKPT_BENCH_BENCH_H */

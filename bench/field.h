/*
 * bench/field.h - what bench/pause and bench/mpi share: a page of the
 * simulation field, the median (and bench.h).
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_BENCH_FIELD_H
#define CKPT_BENCH_FIELD_H

#include "bench.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXSTEPS 16

/* One page (pagesz bytes) of the field at time t: a row of a smooth
 * two-dimensional field with noise of 1/1000 of the amplitude in the low
 * bits (no allocation: it runs while tracking). */
static inline void fill_page(float *f, size_t pagesz, size_t row, unsigned t, uint64_t *seed)
{
	size_t w = pagesz / sizeof(float);
	float a = cosf(0.00037f * (float)row + 0.01f * (float)t),
	      b = sinf(0.0021f * (float)(row % 100000));
	for (size_t x = 0; x < w; x++) {
		float sx = sinf(6.2831853f * (float)x / (float)w);
		float cx = 0.5f * cosf(18.849556f * (float)x / (float)w);
		float noise = (float)(xorshift64(seed) >> 40) / 16777216.0f - 0.5f;
		f[x] = 100.0f * (sx * a + cx * b + 0.001f * noise);
	}
}

static inline int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The median of n <= MAXSTEPS values. */
static inline double median(const double *v, int n)
{
	double t[MAXSTEPS];
	memcpy(t, v, (size_t)n * sizeof *t);
	qsort(t, (size_t)n, sizeof *t, cmp_d);
	return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

#endif /* CKPT_BENCH_FIELD_H */

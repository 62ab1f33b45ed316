/* SPDX-License-Identifier: MIT */
/* What the standalone benches (every bench/ program but the harness and crash suites) share: a
 * clock, a sort order for medians, and a fatal error. */
#ifndef SHMQ_BENCH_STANDALONE_H
#define SHMQ_BENCH_STANDALONE_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "shmq.h"

/* CLOCK_MONOTONIC in seconds */
static inline double bench_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* qsort order of doubles, for medians */
static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static inline void bench_die(const char *prog, const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, shmq_strerror(err));
	exit(1);
}

#endif

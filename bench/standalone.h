/* SPDX-License-Identifier: MIT */
/* What the standalone benches (every bench/ program but the harness and crash suites) share: a
 * clock, a sort order for medians, and a fatal error. */
#ifndef SHMQ_BENCH_STANDALONE_H
#define SHMQ_BENCH_STANDALONE_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
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

/* SIGKILLs and reaps the children kids[0..*n) (entries 0 are skipped), then *n = 0. */
static inline void bench_kill_kids(pid_t *kids, unsigned *n)
{
	for (unsigned i = 0; i < *n; i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = 0;
		}
	*n = 0;
}

static inline void bench_die(const char *prog, const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, shmq_strerror(err));
	exit(1);
}

/* The count option opt's value s, from min to max; a usage error (exit 2) otherwise. */
static inline unsigned bench_parse_count(const char *prog, const char *opt, const char *s, unsigned min,
					 unsigned max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || !*s || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "%s: %s: expected a count from %u to %u, got '%s'\n", prog, opt, min, max, s);
		exit(2);
	}
	return (unsigned)v;
}

#endif

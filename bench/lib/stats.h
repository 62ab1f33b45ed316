/* SPDX-License-Identifier: MIT */
/*
 * stats.h: what the benches compute from their samples.
 *
 * struct hist is a log-linear histogram of non-negative integers (nanoseconds here): values below
 * 64 are counted exactly, larger ones in 64 sub-buckets per power of two, so a percentile is off by
 * at most 1/64 (1.6 %) of its value; min, max, count and sum are exact. Every sample goes in (no
 * sampling, no reservoir), it is a flat array with no pointers, so it can live in a MAP_SHARED
 * mapping that a forked child fills and the parent reads, and two of them can be merged.
 *
 * struct spread is the median and min-max of one figure over the repeats of a measurement.
 */
#ifndef SHMQ_BENCH_STATS_H
#define SHMQ_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_TOP_BIT 47 /* values up to 2^48 ns (3 days) are binned; larger ones go in the last bucket */
#define HIST_BUCKETS ((HIST_TOP_BIT - HIST_SUB_BITS + 2) * HIST_SUB)

struct hist {
	uint64_t count, sum, min, max;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
/* adds every sample of src to dst */
void hist_merge(struct hist *dst, const struct hist *src);
/* The value at percentile p (0 < p <= 100) by nearest rank: the middle of its bucket, clamped to
 * [min, max]; p == 100 gives the exact max. 0 when the histogram is empty. */
uint64_t hist_pct(const struct hist *h, double p);
double hist_mean(const struct hist *h);

struct spread {
	double med, min, max;
};

/* median (mean of the two middle values for an even n), min and max of v[0..n); NAN for n == 0 */
struct spread spread_of(const double *v, int n);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * stats.c: the log-linear histogram and the median/min-max of repeats (see stats.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/stats.h"

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

/* bucket b covers [lo, lo + width): exact below HIST_SUB, then HIST_SUB per power of two */
static unsigned bucket_of(uint64_t v)
{
	if (v < HIST_SUB)
		return (unsigned)v;
	unsigned k = 63u - (unsigned)__builtin_clzll(v); /* k >= HIST_SUB_BITS */
	if (k > HIST_TOP_BIT)
		return HIST_BUCKETS - 1;
	return (k - HIST_SUB_BITS + 1) * HIST_SUB + (unsigned)((v >> (k - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

static uint64_t bucket_lo(unsigned b, uint64_t *width)
{
	if (b < HIST_SUB) {
		*width = 1;
		return b;
	}
	unsigned k = b / HIST_SUB + HIST_SUB_BITS - 1, sub = b % HIST_SUB;
	*width = 1ull << (k - HIST_SUB_BITS);
	return (1ull << k) + sub * *width;
}

void hist_add(struct hist *h, uint64_t v)
{
	h->bucket[bucket_of(v)]++;
	h->count++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned b = 0; b < HIST_BUCKETS; b++)
		dst->bucket[b] += src->bucket[b];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t hist_pct(const struct hist *h, double p)
{
	if (!h->count)
		return 0;
	if (p >= 100)
		return h->max;
	uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count), seen = 0;
	if (rank < 1)
		rank = 1;
	for (unsigned b = 0; b < HIST_BUCKETS; b++) {
		seen += h->bucket[b];
		if (seen >= rank) {
			uint64_t w, v = bucket_lo(b, &w) + w / 2;
			return v < h->min ? h->min : v > h->max ? h->max : v;
		}
	}
	return h->max;
}

double hist_mean(const struct hist *h) { return h->count ? (double)h->sum / (double)h->count : 0; }

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

struct spread spread_of(const double *v, int n)
{
	struct spread r = {NAN, NAN, NAN};
	if (n <= 0)
		return r;
	double *s = malloc((size_t)n * sizeof(*s));
	if (!s)
		return r;
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	r.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	r.min = s[0];
	r.max = s[n - 1];
	free(s);
	return r;
}

/* SPDX-License-Identifier: MIT */
/*
 * recv_stall: the longest shmq_recv(timeout 0) on a big queue, where receivers run the reclaim
 * pass (reclaim_interval_ms). The queue holds --leased messages leased by this process (one owner
 * to probe) and is otherwise empty, so every receive returns -EAGAIN: what one costs beyond that is
 * its share of recovery. Prints the worst (CPU time of the calling thread, and wall clock), the
 * 99.99th and 99.9th percentiles (wall clock) and the passes counted.
 *
 *   recv_stall [--capacity SLOTS] [--seconds S] [--leased N] [--reclaim-interval-ms MS]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* this thread's CPU time: unlike the wall clock, it does not count the time the scheduler gave
 * to other processes (on a loaded machine, the wall-clock worst is a preemption) */
static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	long capacity = 1L << 22, seconds = 3, leased = 1000, interval = 100;
	static const struct option opts[] = {{"capacity", required_argument, 0, 'c'},
					     {"seconds", required_argument, 0, 's'},
					     {"leased", required_argument, 0, 'l'},
					     {"reclaim-interval-ms", required_argument, 0, 'R'},
					     {0, 0, 0, 0}};
	for (int c; (c = getopt_long(argc, argv, "c:s:l:R:", opts, NULL)) != -1;) {
		char *end;
		long v = strtol(optarg, &end, 10);
		if (*end || !*optarg || v < 0 || v > (1L << 22)) {
			fprintf(stderr, "recv_stall: bad value '%s' for -%c\n", optarg, c);
			return 2;
		}
		if (c == 'c')
			capacity = v;
		else if (c == 's')
			seconds = v;
		else if (c == 'l')
			leased = v;
		else if (c == 'R')
			interval = v;
		else
			return 2;
	}
	char name[64];
	snprintf(name, sizeof(name), "/shmq-recv-stall-%d", (int)getpid());
	struct shmq_config cfg;
	shmq_config_init(&cfg);
	cfg.capacity = (uint32_t)capacity;
	cfg.slot_size = 128;
	cfg.reclaim_interval_ms = (uint32_t)interval;
	cfg.lease_ms = 3600000;
	shmq_t *q;
	int r = shmq_create(name, &cfg, &q);
	if (r) {
		fprintf(stderr, "recv_stall: create: %s\n", shmq_strerror(r));
		return 1;
	}
	struct shmq_msg m;
	for (long i = 0; i < leased && i < capacity; i++) {
		if ((r = shmq_send(q, &i, sizeof(i), 0)) || (r = shmq_recv(q, &m, 0))) {
			fprintf(stderr, "recv_stall: fill: %s\n", shmq_strerror(r));
			goto out;
		}
	}
	size_t cap_samples = 1u << 24, n = 0;
	uint64_t *lat = malloc(cap_samples * sizeof(*lat));
	if (!lat) {
		r = -ENOMEM;
		goto out;
	}
	uint64_t end = mono_ns() + (uint64_t)seconds * 1000000000ULL, worst_cpu = 0;
	while (n < cap_samples) {
		uint64_t c0 = cpu_ns(), t0 = mono_ns();
		r = shmq_recv(q, &m, 0);
		uint64_t t1 = mono_ns(), c1 = cpu_ns();
		if (c1 - c0 > worst_cpu)
			worst_cpu = c1 - c0;
		if (r != -EAGAIN) {
			fprintf(stderr, "recv_stall: recv: %s\n", shmq_strerror(r));
			break;
		}
		lat[n++] = t1 - t0;
		if (t1 >= end)
			break;
	}
	qsort(lat, n, sizeof(*lat), cmp_u64);
	struct shmq_stats st;
	shmq_stats(q, &st);
	printf("capacity %ld, leased %ld, reclaim interval %ld ms: %zu receives in %ld s, worst %.3f ms CPU, "
	       "%.3f ms wall, "
	       "p99.99 %.3f ms, p99.9 %.3f ms, median %.0f ns, reclaim passes %llu\n",
	       capacity, leased, interval, n, seconds, (double)worst_cpu / 1e6,
	       n ? (double)lat[n - 1] / 1e6 : 0, n ? (double)lat[n - 1 - n / 10000] / 1e6 : 0,
	       n ? (double)lat[n - 1 - n / 1000] / 1e6 : 0, n ? (double)lat[n / 2] : 0,
	       (unsigned long long)st.reclaim_passes);
	for (size_t k = 1; k <= 5 && k <= n; k++)
		printf("  %zu. %.3f ms\n", k, (double)lat[n - k] / 1e6);
	free(lat);
	r = 0;
out:
	shmq_close(q);
	shmq_unlink(name);
	return r ? 1 : 0;
}

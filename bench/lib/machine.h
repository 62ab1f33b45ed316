/* SPDX-License-Identifier: MIT */
/*
 * machine.h: what the figures were measured on (CPU model, kernel, usable CPUs, shared caches).
 */
#ifndef SHMQ_BENCH_MACHINE_H
#define SHMQ_BENCH_MACHINE_H

#include <stddef.h>

#define MACHINE_CPUS_MAX 256

struct machine {
	char cpu_model[160];
	char kernel[320]; /* sysname release version */
	char arch[80];
	long online;		   /* CPUs online */
	int usable;		   /* CPUs in our affinity mask */
	int cpu[MACHINE_CPUS_MAX]; /* their numbers, ascending */
};

/* 0 or -errno (sched_getaffinity) */
int machine_probe(struct machine *m);

/* Which cache levels CPUs a and b share, from /sys/devices/system/cpu/cpuA/cache/indexN: "L2 L3",
 * "L3", "none", or "unknown" when sysfs does not say. */
void machine_shared_caches(int a, int b, char *out, size_t n);

#endif

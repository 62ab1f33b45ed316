/* SPDX-License-Identifier: MIT */
/* health.h: `shmq check --health` (health.c): a Nagios-style probe of one queue. */
#ifndef SHMQ_HEALTH_H
#define SHMQ_HEALTH_H

#include <stdint.h>

/* the exit statuses of a Nagios plugin */
#define HEALTH_OK 0
#define HEALTH_WARNING 1
#define HEALTH_CRITICAL 2
#define HEALTH_UNKNOWN 3

#define HEALTH_NONE UINT64_MAX /* a threshold not given */

/* A figure is WARNING above warn and CRITICAL above crit. */
struct health_limit {
	uint64_t warn, crit;
};

struct health_limits {
	struct health_limit depth, age_ms, dead;
};

/* Prints the status line of NAME against lim; returns its HEALTH_* exit status. */
int health_check(const char *name, const struct health_limits *lim);

#endif

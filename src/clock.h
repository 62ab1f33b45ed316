/* SPDX-License-Identifier: MIT */
/* The clocks the library reads: CLOCK_MONOTONIC (ns), and the coarse clock for leases and
 * send timestamps. Never included by the ring core (slot.h, lane.h): its callers pass the time. */
#ifndef SHMQ_CLOCK_H
#define SHMQ_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Leases need milliseconds, not nanoseconds: the coarse clock costs a few ns instead of ~30. */
static inline uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

/* The coarse clock in ns, for send timestamps: a precise clock_gettime per message would cost
 * ~30 ns, a quarter of a message's budget. */
static inline uint64_t now_coarse_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

#endif

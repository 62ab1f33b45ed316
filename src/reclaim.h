/* SPDX-License-Identifier: MIT */
/* reclaim.c: the recovery passes (whole, or the receivers' slices). */
#ifndef SHMQ_RECLAIM_H
#define SHMQ_RECLAIM_H

#include <stdatomic.h>
#include <stdint.h>

#include "handle.h"

/* The receivers' pass, in slices. start opens a pass unless one is open; step does up
 * to budget slots of the open one (1: it claimed the last of them). */
#define RECLAIM_SLICE 4096u
/* reclaim_held while a pass is open and the previous one saw leases (see reclaim.c) */
#define RECLAIM_HELD_OPEN 0x80000000u
SHMQ_HIDDEN void shmq_reclaim_start(shmq_t *q);
/* shmq_reclaim without recording us as a watchdog: a pass the library runs for its own needs */
SHMQ_HIDDEN int shmq_reclaim_pass(shmq_t *q, struct shmq_reclaim_result *res);
SHMQ_HIDDEN int shmq_reclaim_step(shmq_t *q, uint32_t budget);
/* The receivers' rate-limited pass (config.reclaim_interval_ms), a slice of it per call, up to
 * `slices` for a receive about to sleep before deadline_ns (0: one). Returns when the next one is
 * due (UINT64_MAX: never; now while a pass is open). */
SHMQ_HIDDEN uint64_t shmq_reclaim_due(shmq_t *q, uint64_t now, uint64_t deadline_ns, unsigned slices);
/* reclaim_pos: [ pass:40 | next slot to claim:24 ]; pass 0 is none (a new segment is all zero) */
#define RECLAIM_POS_BITS 24
#define RECLAIM_POS_MASK ((1ULL << RECLAIM_POS_BITS) - 1)
static inline int reclaim_pos_open(uint64_t pos, uint64_t capacity)
{
	return pos >> RECLAIM_POS_BITS && (pos & RECLAIM_POS_MASK) < capacity;
}
/* 1 while a pass has slots left to claim (relaxed: it only shares out work) */
static inline int shmq_reclaim_open(shmq_t *q)
{
	return reclaim_pos_open(atomic_load_explicit(&q->hdr->reclaim_pos, memory_order_relaxed),
				q->capacity);
}

/* 1 if the receivers' pass has nothing for a receive at `now` (ms) to do: no pass open, the next
 * one not due. The check shmq_reclaim_due() makes first, without a call, for the fast path. */
static inline int shmq_reclaim_quiet(shmq_t *q, uint64_t now)
{
	uint32_t iv = q->reclaim_interval_ms;
	if (!iv)
		return 1;
	/* relaxed, as in shmq_reclaim_due */
	uint64_t next = atomic_load_explicit(&q->hdr->reclaim_next_ms, memory_order_relaxed);
	return now < next && next - now <= iv && !shmq_reclaim_open(q);
}

#endif

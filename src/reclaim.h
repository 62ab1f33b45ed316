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
SHMQ_HIDDEN int shmq_reclaim_step(shmq_t *q, uint32_t budget);
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

#endif

/* SPDX-License-Identifier: MIT */
/* lanes.c: lane dispatch for sends, lane assignment of consumers, key-hash hand-overs. */
#ifndef SHMQ_LANES_H
#define SHMQ_LANES_H

#include <stddef.h>
#include <stdint.h>

#include "handle.h"

struct shmq_assign_ctx {
	const unsigned char *parts;
	uint32_t max_parts;
	uint32_t lanes;
	int fd;		   /* for liveness probes; -1: an image, liveness unknown (counted alive) */
	uint32_t self;	   /* the asking consumer's record index (UINT32_MAX: a view) */
	uint64_t now_ms;   /* CLOCK_MONOTONIC_COARSE */
	uint32_t lease_ms; /* a consumer idle for longer holds no lease and counts no more */
	int exclusive;	   /* key-hash: one consumer per lane, extra consumers stand by */
};
/* The lanes (bit l: lane l) assigned to consumer c->self. */
SHMQ_HIDDEN uint32_t shmq_lanes_assigned(const struct shmq_assign_ctx *c);
/* owner[l] = record index + 1 of lane l's (first) consumer, 0: none. Returns the consumers counted. */
SHMQ_HIDDEN uint32_t shmq_lane_consumers(const struct shmq_assign_ctx *c, uint32_t *owner);
/* The lane a send goes to (rkey may be NULL); shmq_dispatch_lane keeps one-lane queues (the usual
 * case, and the send hot path) from calling out to the policies. */
SHMQ_HIDDEN uint32_t shmq_dispatch_policy(shmq_t *q, const void *rkey, size_t rkey_len);
static inline uint32_t shmq_dispatch_lane(shmq_t *q, const void *rkey, size_t rkey_len)
{
	return q->lanes > 1 ? shmq_dispatch_policy(q, rkey, rkey_len) : 0;
}
SHMQ_HIDDEN uint64_t shmq_hash(const void *key, size_t len);
/* Records that this handle receives (a consumer, for the lane assignment and stat) and polled at
 * now_ms; every receive call does, and again after each sleep. */
SHMQ_HIDDEN void shmq_consumer_poll(shmq_t *q, uint64_t now_ms);
/* shmq_consumer_poll() for a queue that is not key-hash, inline for the fast path: two relaxed
 * accesses to our own record */
static inline void shmq_consumer_mark(shmq_t *q, uint64_t now_ms)
{
	if (__builtin_expect(atomic_load_explicit(&q->me->role, memory_order_relaxed) != PART_CONSUMER, 0))
		atomic_store_explicit(&q->me->role, PART_CONSUMER, memory_order_relaxed);
	atomic_store_explicit(&q->me->last_active_ms, now_ms, memory_order_relaxed);
}
/* Undelivered first deliveries of lane l (tickets taken, not yet passed by consumers), read
 * relaxed: an estimate, for where to send and where to look. */
SHMQ_HIDDEN uint64_t shmq_lane_backlog(shmq_t *q, uint32_t l);
/* This consumer's home lanes, recomputed every ASSIGN_REFRESH_MS. */
SHMQ_HIDDEN uint32_t shmq_home_lanes(shmq_t *q, uint64_t now_ms);
/* Key-hash queues: brackets a first-delivery take. begin returns the lanes this consumer may take
 * from now (re-validated if the consumer set changed since it last looked) and sets *fence for
 * end, which must follow; end returns 1 if the take was counted out meanwhile (it outlasted a
 * lease and another consumer took up lanes): then whatever it took must be given back. */
SHMQ_HIDDEN uint32_t shmq_kh_begin(shmq_t *q, uint64_t now_ms, uint32_t *fence);
SHMQ_HIDDEN int shmq_kh_end(shmq_t *q, uint32_t fence);

#endif

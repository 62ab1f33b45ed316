/* SPDX-License-Identifier: MIT */
/* ring.c: the send entry points other modules compose (dedup.c's keyed sends). */
#ifndef SHMQ_RING_H
#define SHMQ_RING_H

#include <stddef.h>
#include <stdint.h>

#include "handle.h"

/* shmq_send_reserve into lane l; strict: wait for room there (per-key order), else move on */
SHMQ_HIDDEN int shmq_reserve_lane(shmq_t *q, uint32_t l, int strict, size_t len, struct shmq_reservation *r,
				  int timeout_ms);
/* shmq_send_commit for a payload area that starts with a key_len-byte idempotency key */
SHMQ_HIDDEN int shmq_commit_keyed(shmq_t *q, struct shmq_reservation *r, size_t len, uint32_t key_len);

/* For a waiter outside a receive (event.c), registered in data_sleepers already: 1 if a receive
 * (timeout 0) may find something now: a message at a head it takes from, a due redelivery, an
 * open reclaim pass (this call does its share of one that is due, as a waiting receive would).
 * Else 0 and *until (CLOCK_MONOTONIC ns): when a sleeping receive would look again at the latest. */
SHMQ_HIDDEN int shmq_recv_ready(shmq_t *q, uint64_t *until);

#endif

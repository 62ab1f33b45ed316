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

#endif

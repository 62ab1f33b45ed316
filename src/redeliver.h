/* SPDX-License-Identifier: MIT */
/* redeliver.c: the backoff before a redelivery, and the header's redelivery hint. */
#ifndef SHMQ_REDELIVER_H
#define SHMQ_REDELIVER_H

#include <stdint.h>

#include "handle.h"

SHMQ_HIDDEN uint64_t shmq_backoff_ms(const shmq_t *q, unsigned deliveries);
/* After n messages (0: none, only a due time seen) were made DELAYED, the earliest due at due_ms:
 * moves the redelivery hint and wakes as many sleepers as it has to (see redeliver.c). */
SHMQ_HIDDEN void shmq_note_delayed(shmq_t *q, uint64_t due_ms, unsigned n);
#define REDELIVER_NONE ((1ULL << 48) - 1)
static inline uint64_t rd_due(uint64_t v) { return v >> 16; }
static inline uint64_t rd_make(uint64_t due, uint64_t epoch) { return (due << 16) | (epoch & 0xffff); }

#endif

/* SPDX-License-Identifier: MIT */
/*
 * keyed.h: the price of an idempotency key, as the harness and bench/hotpath measure it: send +
 * recv + ack of 64-byte messages in one process on one queue, plain (shmq_send) against keyed
 * (shmq_send_keyed with a fresh 16-byte key per message, 48 bytes of payload), in alternating
 * chunks after a warm-up, so both see the same machine. The queue is made by keyed_queue_create
 * with bench/keyed_send's table: 64 Ki entries and a 5 ms window, so entries are recycled as keys
 * expire and a keyed send pays its lookup and claim in a table far larger than the caches,
 * without a full table's evictions; the warm-up uses every entry twice.
 */
#ifndef SHMQ_BENCH_KEYED_H
#define SHMQ_BENCH_KEYED_H

#include <stdint.h>

#include "shmq.h"

#define KEYED_KEY 16   /* bytes of each keyed message's key (of its 64) */
#define KEYED_CHUNKS 4 /* measured chunks of each kind, alternating */
#define KEYED_ENTRIES (1u << 16)
#define KEYED_WINDOW_MS 5

/* Creates (after unlinking) the queue name with the dedup table described above. 0 or -errno. */
int keyed_queue_create(const char *name, uint32_t capacity);

/* n messages of each kind (after the warm-up) through q; ns per send + recv + ack into *plain_ns
 * and *keyed_ns. 0, or -errno of the call that failed, or -EEXIST if a fresh key was taken for a
 * duplicate. */
int keyed_measure(shmq_t *q, uint64_t n, double *plain_ns, double *keyed_ns);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * keyed.h: the price of an idempotency key, as the harness and bench/hotpath measure it: send +
 * recv + ack of 64-byte messages in one process on one queue, plain (shmq_send) against keyed
 * (shmq_send_keyed with a fresh 16-byte key per message, 48 bytes of payload), in alternating
 * chunks after a warm-up of each, so both see the same machine. The queue is made by
 * keyed_queue_create: 64 Ki dedup entries and a 20 ms window that the stream outruns, as
 * bench/keyed_send, so the table holds as many live keys as a long run would.
 */
#ifndef SHMQ_BENCH_KEYED_H
#define SHMQ_BENCH_KEYED_H

#include <stdint.h>

#include "shmq.h"

#define KEYED_KEY 16   /* bytes of each keyed message's key (of its 64) */
#define KEYED_CHUNKS 4 /* measured chunks of each kind, alternating */

/* Creates (after unlinking) the queue name with the dedup table described above. 0 or -errno. */
int keyed_queue_create(const char *name, uint32_t capacity);

/* n messages of each kind (plus n / KEYED_CHUNKS of each as the warm-up) through q; ns per send
 * + recv + ack into *plain_ns and *keyed_ns. 0, or -errno of the call that failed, or -EEXIST
 * if a fresh key was taken for a duplicate. */
int keyed_measure(shmq_t *q, uint64_t n, double *plain_ns, double *keyed_ns);

#endif

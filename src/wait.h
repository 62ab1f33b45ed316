/* SPDX-License-Identifier: MIT */
/* wait.c: futex sleeps and wake-ups on the segment's data and space words. */
#ifndef SHMQ_WAIT_H
#define SHMQ_WAIT_H

#include <stdatomic.h>
#include <stdint.h>

#include "handle.h"

/* The sleepers word beside each futex word is a flag with a generation (odd: someone
 * may sleep), never a count: see wait.c */
#define SHMQ_WAKE_ALL 0x7fffffffu
SHMQ_HIDDEN int shmq_futex_wait(_Atomic uint32_t *word, uint32_t seen, uint64_t deadline_ns);
SHMQ_HIDDEN void shmq_futex_wake_all(_Atomic uint32_t *word);
/* A sleeper's registration, before its last check of the ring: then futex_wait(seq, seen). */
SHMQ_HIDDEN void shmq_sleep_register(_Atomic uint32_t *sleepers);
/* Wakes n sleepers (all on key-hash queues) of a flag read as v (odd), clearing it if fewer slept. */
SHMQ_HIDDEN void shmq_wake(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, uint32_t v,
			   unsigned n);
/* After n messages published (or n slots freed) by any stores: wakes n sleepers, if any may sleep. */
SHMQ_HIDDEN void shmq_notify(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, unsigned n);
/* shmq_notify for a caller whose publishing RMW was seq_cst: no fence. If the seq_cst load below
 * misses a sleeper's registration, the publish precedes that registration, hence the sleeper's
 * fence, in the seq_cst order, so its re-check sees the publish. One load when nobody sleeps. */
static inline void shmq_notify_sc(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, unsigned n)
{
	uint32_t v = atomic_load_explicit(sleepers, memory_order_seq_cst);
	if (__builtin_expect(v & 1, 0))
		shmq_wake(q, seq, sleepers, v, n);
}
SHMQ_HIDDEN uint64_t shmq_deadline(int timeout_ms);

#endif

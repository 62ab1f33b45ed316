/* SPDX-License-Identifier: MIT */
/*
 * count.c: who writes which row of a participant's counters (handle.h, count()). The first thread
 * that counts on a handle, or steps one of its sequences, becomes its counting thread: the only
 * writer of the record's `counters` row and of the `own` halves of the handle's sequences
 * (seq_next). Every other thread of the handle adds to `counters_shared` and steps the `shared`
 * halves. Threads are told apart by a number each takes once, from a process-wide sequence that
 * never repeats one: a thread that exits takes its row along (nobody new ever matches
 * count_owner), so the row can never have two writers, whatever threads the process starts
 * later. A forked child's handles are foreign (registry.c): it counts on none of them, and its
 * new handles start without a counting thread.
 */
#include <stdatomic.h>

#include "handle.h"

_Thread_local uint64_t shmq_count_tid = COUNT_NO_TID;

/* the last number handed out (the first is 1: count_owner 0 is nobody) */
static _Atomic uint64_t count_tids;

int shmq_count_claim(shmq_t *q)
{
	/* a CAS only while nobody owns q: its other threads' counts take one locked add, not two */
	uint64_t owner = atomic_load_explicit(&q->count_owner, memory_order_relaxed);
	if (owner)
		return 0;
	uint64_t self = shmq_count_tid;
	if (self == COUNT_NO_TID) /* once per thread: 2^64 - 1 threads are out of reach */
		shmq_count_tid = self = atomic_fetch_add_explicit(&count_tids, 1, memory_order_relaxed) + 1;
	/* relaxed: the row is ours from this store on, and only we compare our number to it */
	return atomic_compare_exchange_strong_explicit(&q->count_owner, &owner, self, memory_order_relaxed,
						       memory_order_relaxed);
}

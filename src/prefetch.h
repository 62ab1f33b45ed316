/* SPDX-License-Identifier: MIT */
/* prefetch.c: the prefetch limit of a handle (leases held at once), for the receive paths. */
#ifndef SHMQ_PREFETCH_H
#define SHMQ_PREFETCH_H

#include "handle.h"

#define ACCT_TAKE (1ULL << 32) /* one more take, in q->acct (prefetch.c) */

/* Takes up to `want` units of the allowance into *got, waiting (per timeout_ms) for the first;
 * they count as pending until shmq_prefetch_done. 0, or -EAGAIN if the handle stayed at its
 * limit. */
SHMQ_HIDDEN int shmq_prefetch_take(shmq_t *q, unsigned want, int timeout_ms, unsigned *got);
/* Gives back n units (settled leases, or units a receive did not use); nothing without a limit. */
SHMQ_HIDDEN void shmq_prefetch_give_back(shmq_t *q, unsigned n);
/* A receive that took `got` units is over, having leased `used` messages. */
SHMQ_HIDDEN void shmq_prefetch_done(shmq_t *q, unsigned got, unsigned used);

/* A receive that took no units (no limit when it began) is over, having leased n messages: if a
 * limit was set meanwhile, its count (shmq_set_prefetch) may have looked at the slots before our
 * leases, so they are counted now. One that it saw is then counted twice, which only makes the
 * limit strict until the next recount. A load of a line of the handle that receives only read.
 * seq_cst: pairs with shmq_set_prefetch()'s store and fence (our lease CASes, locked RMWs, come
 * before it on x86; elsewhere a window of a few instructions is left, whose worst is one message
 * past the limit until the handle drains). */
static inline void shmq_prefetch_unlimited_done(shmq_t *q, unsigned n)
{
	if (__builtin_expect(atomic_load_explicit(&q->prefetch, memory_order_seq_cst) != 0, 0))
		atomic_fetch_add_explicit(&q->acct, ACCT_TAKE + n, memory_order_release);
}

#endif

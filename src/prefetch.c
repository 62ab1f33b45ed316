/* SPDX-License-Identifier: MIT */
/*
 * prefetch.c: the prefetch limit (shmq_set_prefetch), a policy of the receive path: how many
 * leases one handle may hold at once, the allowance receives take units from and settles give
 * back, the recount from the slot words when leases were lost, and the wait at the limit. Counted
 * only while a limit is set: without one the receive and settle paths make no call here.
 */
#include <errno.h>

#include "clock.h"
#include "fault.h"
#include "handle.h"
#include "prefetch.h"
#include "registry.h"
#include "wait.h"

#define PREFETCH_RECOUNT_MS 10 /* a receiver waiting at the limit recounts from the segment this often */
#define ACCT_LOW 0xffffffffULL
#define SET_RECOUNTS 4 /* shmq_set_prefetch looks at the slots at most this often */

/* The units in use, of an acct value. */
static inline uint32_t acct_inflight(uint64_t v) { return (uint32_t)(v & ACCT_LOW); }

/* The 32-bit half of q->acct that holds the units in use: waiters at the limit sleep on it. */
static _Atomic uint32_t *inflight_futex(shmq_t *q)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (_Atomic uint32_t *)(void *)&q->acct;
#else
	return (_Atomic uint32_t *)(void *)&q->acct + 1;
#endif
}

/* Takes up to `want` units of the prefetch allowance into *got, waiting (per timeout_ms) for the
 * first, and counts them pending until the caller's receive is over. 0, or -EAGAIN if the handle
 * stayed at its limit.
 *
 * A receiver at the limit recounts: the leases the slot words say we hold, plus the units pending
 * (taken by receives in progress, not yet leases), replace the count if lower (leases lost to
 * expiry are never settled by us). For that sum to miss no unit in use: pending is raised before
 * a unit is taken and lowered (release) only after its lease CAS, and the recount reads acct
 * (acquire), then pending (acquire), then the slots; a unit taken before the acct read is then
 * either still pending or a lease in the slots, and one taken after it moves `takes`, so the
 * recount's CAS from that acct value fails. A unit counted both ways only makes it too strict for
 * a moment. */
int shmq_prefetch_take(shmq_t *q, unsigned want, int timeout_ms, unsigned *got)
{
	uint64_t deadline = 0;
	for (int round = 0;; round++) {
		/* once per round: the limit may be changed (or lifted) meanwhile */
		uint32_t limit = atomic_load_explicit(&q->prefetch, memory_order_relaxed);
		/* pending first: a recount that sees our take sees this too */
		atomic_fetch_add_explicit(&q->pending, want, memory_order_relaxed);
		if (!limit) {
			*got = want;
			return 0;
		}
		uint64_t v = atomic_load_explicit(&q->acct, memory_order_relaxed);
		while (acct_inflight(v) < limit) {
			uint32_t cur = acct_inflight(v);
			unsigned take = limit - cur < want ? limit - cur : want;
			/* release: pairs with the recount's acquire load of acct (pending raised above
			 * is then visible to it) */
			if (atomic_compare_exchange_weak_explicit(&q->acct, &v, v + ACCT_TAKE + take,
								  memory_order_release,
								  memory_order_relaxed)) {
				if (take < want)
					atomic_fetch_sub_explicit(&q->pending, want - take,
								  memory_order_relaxed);
				*got = take;
				return 0;
			}
		}
		atomic_fetch_sub_explicit(&q->pending, want, memory_order_relaxed);
		if (round == 0) {
			count(q, C_PREFETCH_WAITS, 1);
			deadline = shmq_deadline(timeout_ms);
		}
		/* at the limit: maybe some of our leases were lost; the slots say how many we hold */
		uint64_t ms = now_ms(), last = atomic_load_explicit(&q->recount_ms, memory_order_relaxed);
		if (ms - last >= PREFETCH_RECOUNT_MS || round == 0) {
			atomic_store_explicit(&q->recount_ms, ms, memory_order_relaxed);
			/* acct, pending, then the slots, in that order (see above) */
			uint64_t v0 = atomic_load_explicit(&q->acct, memory_order_acquire);
			uint32_t held = atomic_load_explicit(&q->pending, memory_order_acquire);
			held += shmq_slots_held(q, 0);
			SHMQ_HOOK("prefetch-recount");
			if (held < acct_inflight(v0) && atomic_compare_exchange_strong_explicit(
								&q->acct, &v0, (v0 & ~ACCT_LOW) | held,
								memory_order_relaxed, memory_order_relaxed))
				continue;
			v = v0;
		}
		uint64_t now = now_ns();
		if (timeout_ms == 0 || now >= deadline)
			return -EAGAIN;
		uint64_t until = now + PREFETCH_RECOUNT_MS * 1000000ULL;
		/* seq_cst: pairs with shmq_prefetch_give_back(), which lowers the count, then reads the
		 * waiters */
		atomic_fetch_add_explicit(&q->inflight_waiters, 1, memory_order_seq_cst);
		shmq_futex_wait(inflight_futex(q), acct_inflight(v), deadline < until ? deadline : until);
		atomic_fetch_sub_explicit(&q->inflight_waiters, 1, memory_order_relaxed);
	}
}

/* Gives back n units (settled leases, or units a receive did not use). */
void shmq_prefetch_give_back(shmq_t *q, unsigned n)
{
	if (!atomic_load_explicit(&q->prefetch, memory_order_relaxed) || !n)
		return;
	uint64_t v = atomic_load_explicit(&q->acct, memory_order_relaxed), nv;
	do {
		/* never below 0: a recount may already have dropped what we give back */
		uint32_t cur = acct_inflight(v);
		nv = (v & ~ACCT_LOW) | (cur > n ? cur - n : 0);
	} while (!atomic_compare_exchange_weak_explicit(&q->acct, &v, nv, memory_order_seq_cst,
							memory_order_relaxed));
	if (atomic_load_explicit(&q->inflight_waiters, memory_order_seq_cst))
		shmq_futex_wake_all(inflight_futex(q));
}

int shmq_set_prefetch(shmq_t *q, uint32_t max_inflight)
{
	if (foreign(q))
		return -ECHILD;
	if (!q)
		return -EINVAL;
	/* the limit first: a receive that reads it after this counts its units (pending) or, if it
	 * began without a limit, its leases (shmq_prefetch_unlimited_done). seq_cst store and fence: pair
	 * with its load, so either it sees the limit or our look at the slots sees its
	 * leases */
	atomic_store_explicit(&q->prefetch, max_inflight, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	/* Then the count, from the truth (the slot words, which the counter drifts from when leases
	 * are lost; leases taken while no limit was set were not counted) plus the units of receives
	 * in progress (pending: taken under the old limit, not leases yet), read in the recount's
	 * order (see shmq_prefetch_take). A take too, so a recount in progress cannot overwrite it; by a
	 * CAS, so a take meanwhile makes us count again, and after a few such, we only raise the
	 * count to the last one (no more looks at the slots): a unit counted twice only makes the
	 * limit strict until the next recount. */
	uint32_t held = 0;
	for (int k = 0;; k++) {
		uint64_t v = atomic_load_explicit(&q->acct, memory_order_acquire);
		if (max_inflight && k < SET_RECOUNTS) {
			held = atomic_load_explicit(&q->pending, memory_order_acquire);
			held += shmq_slots_held(q, 0);
		}
		uint32_t nc = k >= SET_RECOUNTS && acct_inflight(v) > held ? acct_inflight(v) : held;
		if (atomic_compare_exchange_strong_explicit(&q->acct, &v, ((v & ~ACCT_LOW) + ACCT_TAKE) | nc,
							    memory_order_relaxed, memory_order_relaxed))
			break;
	}
	if (atomic_load_explicit(&q->inflight_waiters, memory_order_seq_cst))
		shmq_futex_wake_all(inflight_futex(q));
	return 0;
}

/* A receive that took `got` units is over, having leased `used` messages: the units are no longer
 * pending, and those it did not use go back. */
void shmq_prefetch_done(shmq_t *q, unsigned got, unsigned used)
{
	/* release: pairs with the recount's acquire load of pending; our leases' CASes come first */
	atomic_fetch_sub_explicit(&q->pending, got, memory_order_release);
	shmq_prefetch_give_back(q, got - used);
}

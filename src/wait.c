/* SPDX-License-Identifier: MIT */
/*
 * wait.c: sleeping on futex words inside the segment. Shared mappings need the non-private
 * futex ops (no FUTEX_PRIVATE_FLAG).
 *
 * Each futex word (data_seq: consumers wait for messages, space_seq: producers for room) has a
 * sleepers word beside it. It is not a count of sleepers: a sleeper SIGKILLed in its wait could
 * never take itself off a count, and every later publish would pay a wake-up syscall. It is a
 * flag with a generation: odd means "someone may sleep", and every change moves it forward, so a
 * clear decided on an old value fails once anyone has registered since (ABA would take 2^32
 * changes within one wake-up call):
 *
 *   sleeper  seen = seq (acquire); register: sleepers to the next odd value (seq_cst RMW);
 *            seq_cst fence; check the ring once more; futex_wait(seq, seen)
 *   waker    publish (seq_cst RMW; or any store, then a seq_cst fence); v = sleepers (seq_cst);
 *            v odd: seq += 1; r = FUTEX_WAKE(seq, n); r < n: CAS sleepers v -> v + 1 (even)
 *
 * No lost wake-up. Take a sleeper's registration R and a waker's load L. If L reads a value from
 * before R, L precedes R in the seq_cst order, so the publish precedes the sleeper's fence and its
 * re-check sees the message. Otherwise the waker (or an earlier one, whose clear L read) read R or
 * later and bumped seq after it: R synchronizes with that load, so `seen` was read before the bump
 * and the futex_wait either returns at once or was already queued, and then woken: only a
 * FUTEX_WAKE that left nobody queued (r < n) clears the flag. A sleeper that returns registers
 * again before it sleeps again. So nobody stays queued on a cleared flag, and every publish that
 * finds the flag set wakes n queued sleepers (or all of them, if fewer): each re-checks the ring.
 *
 * A sleeper that leaves does not touch the flag (only the kernel knows whether others still
 * sleep): the next wake-up that finds nobody queued clears it. A sleeper killed in its wait costs
 * that one extra syscall, not one per message for the life of the segment.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "fdwake.h"
#include "fault.h"
#include "handle.h"
#include "wait.h"

uint64_t shmq_deadline(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX;
	return now_ns() + (uint64_t)timeout_ms * 1000000ULL;
}

int shmq_futex_wait(_Atomic uint32_t *word, uint32_t seen, uint64_t deadline_ns)
{
	struct timespec ts, *tsp = NULL;
	if (deadline_ns != UINT64_MAX) {
		uint64_t now = now_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		uint64_t rel = deadline_ns - now;
		ts.tv_sec = (time_t)(rel / 1000000000ULL);
		ts.tv_nsec = (long)(rel % 1000000000ULL);
		tsp = &ts;
	}
	long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seen, tsp, NULL, 0);
	return r < 0 ? -errno : 0;
}

#ifdef SHMQ_TEST
static _Atomic uint64_t woken;
uint64_t shmq_test_woken(void) { return atomic_load_explicit(&woken, memory_order_relaxed); }
#endif

/* Wakes up to n sleepers on word; returns how many the kernel woke (0 on error). */
static unsigned futex_wake(_Atomic uint32_t *word, unsigned n)
{
	long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n > INT_MAX ? INT_MAX : (int)n, NULL, NULL,
			 0);
	if (r <= 0)
		return 0;
#ifdef SHMQ_TEST
	atomic_fetch_add_explicit(&woken, (uint64_t)r, memory_order_relaxed);
#endif
	return (unsigned)r;
}

void shmq_futex_wake_all(_Atomic uint32_t *word) { futex_wake(word, INT_MAX); }

void shmq_sleep_register(_Atomic uint32_t *sleepers)
{
	uint32_t v = atomic_load_explicit(sleepers, memory_order_relaxed);
	/* odd: to the next odd value; even (cleared): to the odd one after it. seq_cst: pairs with
	 * the waker's seq_cst load of the flag (see the top of this file) */
	while (!atomic_compare_exchange_weak_explicit(sleepers, &v, v + 1 + (v & 1), memory_order_seq_cst,
						      memory_order_relaxed))
		;
	/* fence: against the waker's seq_cst publish (or its fence): whichever comes first in the
	 * seq_cst order, the other side's later load sees the write before it */
	atomic_thread_fence(memory_order_seq_cst);
}

void shmq_wake(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, uint32_t v, unsigned n)
{
	/* on a key-hash queue only a lane's own consumer may take its messages (and only a producer
	 * of that lane use its room), and the kernel does not know whom to pick: all of them */
	if (q->dispatch == SHMQ_DISPATCH_KEY_HASH)
		n = SHMQ_WAKE_ALL;
	/* release: a sleeper that reads the new value sees the publish before it; the bump makes
	 * the futex_wait of a sleeper that registered but is not queued yet return at once */
	atomic_fetch_add_explicit(seq, 1, memory_order_release);
	unsigned woke = futex_wake(seq, n);
	/* then armed descriptors (event.c), as many as the futex left: their bits were set before
	 * their registration, which our read of v (or a failing clear below) orders */
	if (woke < n && seq == &q->hdr->data_seq)
		woke += shmq_fd_wake(q, n - woke);
	if (woke < n)
		/* nobody is left queued: clear, unless someone registered since v (then v changed).
		 * relaxed: a clear that loses to a registration fails, and one that wins only ever
		 * follows the wake-up (a store is not made before the syscall that precedes it) */
		atomic_compare_exchange_strong_explicit(sleepers, &v, v + 1, memory_order_relaxed,
							memory_order_relaxed);
}

void shmq_notify(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, unsigned n)
{
	/* fence against the sleeper's fence: whichever comes first in the seq_cst order, the other
	 * side's later load sees the write before it */
	atomic_thread_fence(memory_order_seq_cst);
	uint32_t v = atomic_load_explicit(sleepers, memory_order_relaxed);
	if (v & 1)
		shmq_wake(q, seq, sleepers, v, n);
}

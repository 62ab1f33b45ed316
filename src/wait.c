/* SPDX-License-Identifier: MIT */
/*
 * wait.c: sleeping on futex words inside the segment. Shared mappings need the non-private
 * futex ops (no FUTEX_PRIVATE_FLAG). A sleeper registers in a sleepers count before its last
 * check, and wakers look at that count after publishing, so a wake costs a syscall only when
 * somebody actually sleeps.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

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

void shmq_futex_wake_all(_Atomic uint32_t *word)
{
	long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#ifdef SHMQ_TEST
	if (r > 0)
		atomic_fetch_add_explicit(&woken, (uint64_t)r, memory_order_relaxed);
#endif
	(void)r;
}

static void wake(_Atomic uint32_t *seq)
{
	atomic_fetch_add_explicit(seq, 1, memory_order_release);
	shmq_futex_wake_all(seq);
}

/* A sleeper does: sleepers++ (seq_cst), a seq_cst fence, then re-checks the ring. Either we see
 * the sleeper, or its re-check sees what we published, in both flavours below. */
void shmq_notify(_Atomic uint32_t *seq, _Atomic uint32_t *sleepers)
{
	/* fence against the sleeper's fence: whichever comes first in the seq_cst order, the other
	 * side's later load sees the write before it */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(sleepers, memory_order_relaxed))
		wake(seq);
}

void shmq_notify_sc(_Atomic uint32_t *seq, _Atomic uint32_t *sleepers)
{
	/* The caller published with a seq_cst RMW, and this load is seq_cst: if it misses the
	 * sleeper's increment, the publish precedes that increment, hence the sleeper's fence, in
	 * the seq_cst order, so its re-check sees the publish. Saves a full fence per message. */
	if (atomic_load_explicit(sleepers, memory_order_seq_cst))
		wake(seq);
}

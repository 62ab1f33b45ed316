/* SPDX-License-Identifier: MIT */
/*
 * redeliver.c: the redelivery policy. How long a failed delivery waits before it is offered again
 * (exponential backoff with jitter, from the queue's retry config), and the header's redelivery
 * hint (the earliest due time of a DELAYED slot) that nack, reclaim and redrive move earlier and
 * receivers read before they scan for due slots. A policy: it calls only the futex layer (wait.c).
 */
#include "handle.h"
#include "redeliver.h"
#include "wait.h"

uint64_t shmq_backoff_ms(const shmq_t *q, unsigned deliveries)
{
	uint64_t base = q->retry_base_ms, max = q->retry_max_ms;
	unsigned n = deliveries ? deliveries - 1 : 0;
	uint64_t d = n >= 32 ? max : base << n;
	if (d > max || (base && d < base))
		d = max;
	/* +-25% jitter, so a burst of failures does not come back as a burst */
	if (d >= 4) {
		uint64_t j = d / 2;
		d = d - d / 4 + (uint64_t)((uint32_t)random_u32() % (j + 1));
	}
	return d > max ? max : d;
}

void shmq_note_delayed(shmq_t *q, uint64_t due_ms, unsigned n)
{
	struct shmq_hdr *h = q->hdr;
	uint64_t rd = atomic_load_explicit(&h->redeliver, memory_order_relaxed);
	uint64_t nv;
	do {
		uint64_t due = rd_due(rd) < due_ms ? rd_due(rd) : due_ms;
		nv = rd_make(due, (rd & 0xffff) + 1);
		/* release: a consumer that sees the hint sees the DELAYED slot behind it */
	} while (!atomic_compare_exchange_weak_explicit(&h->redeliver, &rd, nv, memory_order_release,
							memory_order_relaxed));
	/* A sleeper sets its timer from the hint as it goes to sleep: if the hint moved earlier, as
	 * many must look again as there are new messages (one, if we only saw a due time), each to
	 * take one or sleep until it is due; none if not (their timers already come sooner), unless
	 * the messages are due now: then as many as there are, or a redrive or a requeue of n would
	 * get one consumer while the others sleep on. Never all: a reclaim pass that finds a message
	 * due in an hour must not wake every consumer. */
	if (due_ms < rd_due(rd))
		shmq_notify(q, &h->data_seq, &h->data_sleepers, n ? n : 1);
	else if (n && due_ms <= now_ms())
		shmq_notify(q, &h->data_seq, &h->data_sleepers, n);
}

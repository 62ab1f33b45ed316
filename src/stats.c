/* SPDX-License-Identifier: MIT */
/* stats.c: snapshots for tools: depths counted from the slot words, counters summed over the
 * participant records (each participant only ever writes its own). */
#include <errno.h>
#include <string.h>

#include "internal.h"

int shmq_stats(shmq_t *q, struct shmq_stats *st)
{
	if (!q || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	struct shmq_hdr *h = q->hdr;
	st->config.capacity = q->mask + 1;
	st->config.slot_size = q->slot_size;
	st->config.lease_ms = h->lease_ms;
	st->config.max_deliveries = h->max_deliveries;
	st->config.retry_base_ms = h->retry_base_ms;
	st->config.retry_max_ms = h->retry_max_ms;
	st->config.mode = h->mode & 0777;
	st->config.dlq_max = q->dlq_max;
	st->config.reclaim_interval_ms = q->hdr->reclaim_interval_ms;
	st->max_payload = q->max_payload;
	st->segment_bytes = q->size;
	st->next_id = atomic_load_explicit(&h->prod_tail, memory_order_relaxed);

	for (uint64_t i = 0; i <= q->mask; i++) {
		uint64_t w = atomic_load_explicit(&slot_at(q, i)->word, memory_order_relaxed);
		switch (w_state(w)) {
		case SLOT_FREE:
			st->free_slots++;
			break;
		case SLOT_WRITING:
			st->writing++;
			break;
		case SLOT_READY:
			st->ready++;
			break;
		case SLOT_LEASED:
			st->inflight++;
			break;
		case SLOT_DELAYED:
			st->delayed++;
			break;
		default:
			if (w_is_dead(w))
				st->dead++;
			break;
		}
	}

	uint64_t c[C_COUNT] = {0};
	for (uint32_t i = 0; i < q->max_parts; i++) {
		struct shmq_participant *p = part_at(q, i);
		uint64_t v = atomic_load_explicit(&p->state, memory_order_acquire);
		if ((v & 0xff) == PART_ALIVE && shmq_part_alive(q, i))
			st->participants++;
		for (int k = 0; k < C_COUNT; k++)
			c[k] += atomic_load_explicit(&p->counters[k], memory_order_relaxed);
	}
	st->sent = c[C_SENT];
	st->received = c[C_RECEIVED];
	st->acked = c[C_ACKED];
	st->nacked = c[C_NACKED];
	st->redelivered = c[C_REDELIVERED];
	st->extended = c[C_EXTENDED];
	st->stale = c[C_STALE];
	st->reclaimed_expired = c[C_RECL_EXPIRED];
	st->reclaimed_dead_owner = c[C_RECL_DEAD_OWNER];
	st->retired_writes = c[C_RETIRED_WRITES];
	st->dead_lettered = c[C_DEAD_LETTERED];
	st->producer_waits = c[C_PROD_WAITS];
	st->consumer_waits = c[C_CONS_WAITS];
	st->rejected = c[C_REJECTED];
	st->redriven = c[C_REDRIVEN];
	st->purged = c[C_PURGED];
	st->dlq_dropped = c[C_DLQ_DROPPED];
	st->dlq_max = q->dlq_max;
	st->retried = c[C_RETRIED];
	st->reclaim_passes = c[C_RECLAIM_PASSES];
	return 0;
}

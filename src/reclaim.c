/* SPDX-License-Identifier: MIT */
/*
 * reclaim.c: one recovery pass. Any participant may run it at any time, as often and as
 * concurrently as it likes: every repair is a CAS from the exact word the pass observed, so two
 * passes never requeue one delivery twice, and a pass never undoes what an owner did meanwhile.
 *
 *   LEASED, deadline passed or owner dead -> DELAYED (backoff) or dead-lettered at max deliveries
 *   WRITING, owner dead                   -> FREE (ticket moves on: consumers step over it)
 *   participant record, owner dead        -> FREE (only for owners already dead when the pass
 *                                            started, so all their slots were seen dead)
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Only "alive" is remembered for the rest of the pass. "Dead" is probed again for every slot,
 * after its word was read: a record found dead may be freed by another pass and claimed by a
 * newcomer while this pass runs (a pass can be preempted for seconds), and a newcomer locks its
 * byte before it writes any slot word with its id. So a word read, then a probe that finds the
 * byte unlocked, means that word's owner is really gone; a verdict from before the read does not.
 * Trusting a cached "dead" once retired a live producer's slot, and its late writes then tore the
 * next message written there. */
static int owner_dead(shmq_t *q, uint8_t *alive, unsigned owner)
{
	if (owner == 0 || owner > q->max_parts)
		return 1; /* no valid owner recorded: nobody will ever settle it */
	uint32_t i = owner - 1;
	if (!alive[i])
		alive[i] = (uint8_t)shmq_part_alive(q, i);
	return !alive[i];
}

static void add(shmq_t *q, enum shmq_counter c, uint64_t n)
{
	if (q->me && n)
		count(q, c, n);
}

int shmq_reclaim(shmq_t *q, struct shmq_reclaim_result *res)
{
	if (foreign(q))
		return -ECHILD;
	if (!q)
		return -EINVAL;
	struct shmq_reclaim_result r;
	memset(&r, 0, sizeof(r));
	uint8_t alive[SHMQ_MAX_PARTICIPANTS]; /* 1: found alive in this pass (0: probe again) */
	memset(alive, 0, sizeof(alive));

	/* who is dead before the scan starts: only their records may be freed afterwards */
	uint8_t dead_at_start[SHMQ_MAX_PARTICIPANTS];
	memset(dead_at_start, 0, sizeof(dead_at_start));
	for (uint32_t i = 0; i < q->max_parts; i++) {
		uint64_t v = atomic_load_explicit(&part_at(q, i)->state, memory_order_acquire);
		if ((v & 0xff) == PART_ALIVE && !shmq_part_alive(q, i))
			dead_at_start[i] = 1;
	}

	struct shmq_hdr *h = q->hdr;
	uint64_t cap = q->capacity, lap = (uint64_t)q->lane_mask + 1, now = now_ms(),
		 next_due = REDELIVER_NONE;
	uint32_t held = 0;
	for (uint64_t i = 0; i < cap; i++) {
		struct shmq_slot *s = slot_at(q, i);
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		unsigned st = w_state(w), d = w_deliv(w);
		if (st == SLOT_WRITING) {
			held++;
			if (!owner_dead(q, alive, w_owner(w)))
				continue;
			/* release: pairs with claim()'s acquire, like an abort */
			if (atomic_compare_exchange_strong_explicit(
				    &s->word, &w, w_make(w_ticket(w) + lap, SLOT_FREE, 0, 0),
				    memory_order_release, memory_order_relaxed))
				r.retired_writes++;
			continue;
		}
		if (st == SLOT_DELAYED) {
			uint64_t lw = atomic_load_explicit(&s->lease, memory_order_relaxed);
			uint64_t due = lw_due(lw, d, now);
			if (due < next_due)
				next_due = due;
			continue;
		}
		if (st != SLOT_LEASED)
			continue;
		held++;
		uint64_t lw = atomic_load_explicit(&s->lease, memory_order_acquire);
		int dead = owner_dead(q, alive, w_owner(w));
		/* A deadline of this delivery counts as given. A not-before time on a LEASED slot is a
		 * nack or another pass between its two CASes: that one finishes the job, unless it died
		 * midway (then the slot stays like this for a whole lease). No value of this delivery
		 * yet: the owner is between its lease CAS and its deadline store; only death counts. */
		int expired =
			lw_tag(lw) == d &&
			(lw_kind(lw) == LW_DEADLINE ? lw_ms(lw) <= now : lw_ms(lw) + q->lease_ms <= now);
		if (!dead && !expired)
			continue;
		uint64_t nw, due = now;
		if (d >= q->max_deliveries) {
			/* the dead time is the not-before time the lease CAS below writes (due) */
			nw = w_make(w_ticket(w), dead ? SLOT_DEAD_CRASHED : SLOT_DEAD_EXPIRED, w_owner(w), d);
		} else {
			/* one backoff engine for nack, expiry and crash alike */
			due = now + shmq_backoff_ms(q, d);
			nw = w_make(w_ticket(w), SLOT_DELAYED, w_owner(w), d);
		}
		/* Take the lease word first, from the exact value we judged: an extend or nack by the
		 * owner CASes it too, so either they win (and we leave the slot alone) or they see our
		 * not-before time and report -ESTALE. Then the word, from the exact value we saw. */
		if (!atomic_compare_exchange_strong_explicit(&s->lease, &lw, lw_make(due, LW_NOT_BEFORE, d),
							     memory_order_relaxed, memory_order_relaxed))
			continue;
		if (!w_is_dead(nw) && due < next_due)
			next_due = due;
		/* release: publishes the new lease word with the state; pairs with take_due()'s acquire */
		if (!atomic_compare_exchange_strong_explicit(&s->word, &w, nw, memory_order_release,
							     memory_order_relaxed))
			continue;
		SHMQ_FAULT("reclaim-mid-pass");
		if (w_is_dead(nw))
			r.dead_lettered++;
		else if (dead)
			r.dead_owner++;
		else
			r.expired++;
	}

	for (uint32_t i = 0; i < q->max_parts; i++) {
		if (!dead_at_start[i])
			continue;
		struct shmq_participant *p = part_at(q, i);
		uint64_t v = atomic_load_explicit(&p->state, memory_order_acquire);
		/* a record re-claimed since the probe is left alone (the CAS would fail anyway) */
		if ((v & 0xff) != PART_ALIVE || shmq_part_alive(q, i))
			continue;
		if (shmq_part_release(q, i, v))
			r.participants_freed++;
	}

	atomic_store_explicit(&h->reclaim_held, held, memory_order_relaxed);
	if (next_due != REDELIVER_NONE)
		shmq_note_delayed(q, next_due);
	add(q, C_RECLAIM_PASSES, 1);
	add(q, C_RETRIED, r.expired + r.dead_owner);
	add(q, C_RECL_EXPIRED, r.expired);
	add(q, C_RECL_DEAD_OWNER, r.dead_owner);
	add(q, C_RETIRED_WRITES, r.retired_writes);
	add(q, C_DEAD_LETTERED, r.dead_lettered);
	if (r.dead_lettered)
		shmq_dlq_enforce(q);
	if (r.retired_writes)
		shmq_notify(q, &h->space_seq, &h->space_sleepers, (unsigned)r.retired_writes);
	if (res)
		*res = r;
	return (int)(r.expired + r.dead_owner + r.retired_writes + r.dead_lettered);
}

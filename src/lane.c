/* SPDX-License-Identifier: MIT */
/*
 * lane.c: the repair of one slot by a reclaim pass, over a plain-memory view of the queue (see
 * lane.h). The pass itself (which slots, when, what to count and whom to wake) is reclaim.c's.
 *
 *   LEASED, deadline passed or owner dead -> DELAYED (backoff) or dead-lettered at max deliveries
 *   WRITING, owner dead                   -> FREE (ticket moves on: consumers step over it)
 */
#include "lane.h"

/* Only "alive" is remembered for the rest of the pass. "Dead" is probed again for every slot,
 * after its word was read: a record found dead may be freed by another pass and claimed by a
 * newcomer while this pass runs (a pass can be preempted for seconds), and a newcomer locks its
 * byte before it writes any slot word with its id. So a word read, then a probe that finds the
 * byte unlocked, means that word's owner is really gone; a verdict from before the read does not.
 * Trusting a cached "dead" once retired a live producer's slot, and its late writes then tore the
 * next message written there. */
static int owner_dead(const struct shmq_lane_view *v, uint8_t *alive, unsigned owner)
{
	if (owner == 0 || owner > v->max_owner)
		return 1; /* no valid owner recorded: nobody will ever settle it */
	if (!alive[owner - 1])
		alive[owner - 1] = (uint8_t)lv_alive(v, owner);
	return !alive[owner - 1];
}

static inline enum lane_repaired repair(const struct shmq_lane_view *v, const struct lane_repair *r,
					uint64_t idx, struct lane_seen *seen)
{
	uint64_t now = r->now_ms;
	struct shmq_slot *s = lv_slot(v, idx);
	uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
	unsigned st = w_state(w), d = w_deliv(w);
	seen->held = 0;
	seen->dead = 0;
	seen->due = UINT64_MAX;
	if (st == SLOT_WRITING) {
		seen->held = 1;
		if (!owner_dead(v, r->alive, w_owner(w)))
			return LR_NONE;
		/* release: pairs with slot_claim()'s acquire, like an abort */
		return slot_free(s, w, lv_lap(v), memory_order_release) ? LR_RETIRED : LR_NONE;
	}
	if (st == SLOT_DELAYED) {
		seen->due =
			lw_due(atomic_load_explicit(&s->lease, memory_order_relaxed), w, v->lane_shift, now);
		return LR_NONE;
	}
	if (w_is_dead(w))
		seen->dead = 1;
	if (st != SLOT_LEASED)
		return LR_NONE;
	seen->held = 1;
	SHMQ_HOOK("reclaim-leased-seen");
	uint64_t lw = atomic_load_explicit(&s->lease, memory_order_acquire);
	/* The word again: the lease word must be one read while the slot still held the delivery we
	 * judge. Else a dead owner's lease, lost meanwhile (requeued, redelivered, the slot reused
	 * by a message leased anew), would have us CAS the new holder's live deadline, whatever its
	 * tag says: only our word CAS would fail. acquire above: pairs with a holder's release
	 * deadline store (deliver), so a deadline of a later lease read above comes with a word
	 * that is not w any more. */
	if (atomic_load_explicit(&s->word, memory_order_relaxed) != w)
		return LR_NONE;
	int dead = owner_dead(v, r->alive, w_owner(w));
	uint32_t tag = lw_tag_of(w, v->lane_shift);
	/* A deadline of this delivery counts as given. A not-before time on a LEASED slot is a
	 * nack or another pass between its two CASes: that one finishes the job, unless it died
	 * midway (then the slot stays like this for a whole lease). No value of this delivery
	 * yet: the owner is between its lease CAS and its deadline store; only death counts. */
	int expired = lw_tag(lw) == tag &&
		      (lw_kind(lw) == LW_DEADLINE ? lw_ms(lw) <= now : lw_ms(lw) + r->lease_ms <= now);
	if (!dead && !expired)
		return LR_NONE;
	uint64_t nw, due = now, rv = 0;
	_Atomic uint64_t *rec = NULL;
	if (d >= r->max_deliveries) {
		/* the dead time is the not-before time the lease CAS below writes (due) */
		nw = w_make(w_ticket(w), dead ? SLOT_DEAD_CRASHED : SLOT_DEAD_EXPIRED, w_owner(w), d);
		/* The holder's pid, from its record: a dead holder's record is freed (and may be
		 * reused) only once a pass has moved every slot it held, this one included */
		if (r->holders) {
			rec = &r->holders[idx];
			rv = hr_make(r->pid_of(r->pid_ctx, w_owner(w)), tag);
		}
	} else {
		/* one backoff engine for nack, expiry and crash alike */
		due = now + r->backoff_ms(r->backoff_ctx, d);
		nw = w_make(w_ticket(w), SLOT_DELAYED, w_owner(w), d);
	}
	/* The lease word first, from the exact value we judged: an extend or nack by the owner
	 * CASes it too, so either they win (and we leave the slot alone) or they see our not-before
	 * time and report -ESTALE. Then the word, from the exact value we saw. */
	int done = slot_requeue(s, lw, lw_make(due, LW_NOT_BEFORE, tag), w, nw, rec, rv);
	if (done && !w_is_dead(nw))
		seen->due = due;
	if (done < 2)
		return LR_NONE;
	SHMQ_FAULT("reclaim-mid-pass");
	if (w_is_dead(nw)) {
		seen->dead = 1;
		return LR_DEAD_LETTER;
	}
	return dead ? LR_DEAD_OWNER : LR_EXPIRED;
}

enum lane_repaired lane_repair_slot(const struct shmq_lane_view *v, const struct lane_repair *r, uint32_t idx,
				    struct lane_seen *seen)
{
	return repair(v, r, idx, seen);
}

void lane_repair_range(const struct shmq_lane_view *v, const struct lane_repair *r, uint64_t from,
		       uint64_t to, struct lane_repairs *out)
{
	for (uint64_t i = from; i < to; i++) {
		struct lane_seen seen;
		enum lane_repaired done = repair(v, r, i, &seen);
		out->retired += done == LR_RETIRED;
		out->expired += done == LR_EXPIRED;
		out->dead_owner += done == LR_DEAD_OWNER;
		out->dead_lettered += done == LR_DEAD_LETTER;
		out->dead_lane[(i >> v->lane_shift) & (SHMQ_LANES_MAX - 1)] += done == LR_DEAD_LETTER;
		out->held += seen.held;
		out->dead += seen.dead;
		if (seen.due < out->next_due)
			out->next_due = seen.due;
	}
}

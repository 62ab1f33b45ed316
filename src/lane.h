/* SPDX-License-Identifier: MIT */
/*
 * lane.h: the ring algorithms of one lane over plain memory: tickets, the claim of a ticket's
 * slot, the first-delivery head (lease, stepping over abandoned tickets), abandoning a ticket a
 * producer holds but does not use, retiring a dead writer's slot, and the repair of one slot by a
 * reclaim pass (lane.c). They see a queue only through struct shmq_lane_view: where the slots and
 * the lane counters are, the geometry, who we are, and an alive(owner) callback. They know nothing
 * of shm_open, descriptors, counters or clocks: a caller that needs a deadline passes the time,
 * and each function returns what happened for the caller to count and follow up. So unit tests
 * and TSan drive them on malloc'd memory with a stub alive(), and build crash states (a dead
 * writer's WRITING slot, a dead holder's lease, a half-done redrive) directly in a buffer.
 *
 * The per-message functions are static inline: they compile into shmq_send/shmq_recv/shmq_ack.
 */
#ifndef SHMQ_LANE_H
#define SHMQ_LANE_H

#include <stdatomic.h>
#include <stdint.h>

#include "fault.h"
#include "layout.h"
#include "slot.h"

struct shmq_lane_view {
	unsigned char *slots;	/* slot 0 of the queue; lane l owns [l << lane_shift, (l + 1) << ..) */
	struct shmq_lane *lane; /* the lanes' ticket counters, lane[0 .. lanes) */
	uint32_t slot_size;	/* bytes per slot (header + payload), a multiple of 8 */
	uint32_t lanes;		/* 1 .. SHMQ_LANES_MAX */
	uint32_t lane_mask;	/* slots per lane - 1 (slots per lane: a power of two) */
	uint32_t lane_shift;	/* log2(slots per lane) */
	uint32_t owner;		/* our participant index + 1, as slot words name us */
	uint32_t max_owner;	/* owners are 1 .. max_owner; any other value names nobody alive */
	/* 1 if participant `owner` (index + 1) is alive, 0 if it is gone. The kernel decides for a
	 * real queue (an OFD lock probe, registry.c); tests pass a stub. Only slow paths call it. */
	int (*alive)(void *ctx, unsigned owner);
	void *ctx;
};

/* Tickets a lane may have outstanding (prod_tail - cons_head). A producer takes no ticket once
 * that is two laps: it walks at most one lap past a full window, to a slot freed out of order.
 * Producers racing past that check each add one more: GAP_RACERS of them is already absurd. Past
 * this, and whenever cons_head > prod_tail, the counters are corrupt (-EPROTO, `shmq check`). */
#define GAP_RACERS (1u << 16)
static inline uint64_t lane_gap_max(uint64_t lane_cap) { return 2 * lane_cap + GAP_RACERS; }

/* 1 if lane counters read in this order (cons_head hd first, then prod_tail tl: the tail only
 * grows, so hd <= tl) can be true. */
static inline int lane_sane(uint64_t hd, uint64_t tl, uint64_t lane_cap)
{
	return hd <= tl && tl - hd <= lane_gap_max(lane_cap);
}

/* 1 if lane ln's counters are corrupt: hd (read before tl) is past tl, or tl is further ahead of
 * hd than producers ever take (lane_sane). The gap is judged only if the head has not moved since
 * hd was read: a caller preempted between its two loads sees both counters move on by any amount,
 * while a head that stayed put bounds the tail read in between. */
static inline int lane_corrupt(struct shmq_lane *ln, uint64_t hd, uint64_t tl, uint64_t cap)
{
	if (lane_sane(hd, tl, cap))
		return 0;
	return hd > tl || atomic_load_explicit(&ln->cons_head, memory_order_acquire) == hd;
}

static inline uint64_t lv_lap(const struct shmq_lane_view *v) { return (uint64_t)v->lane_mask + 1; }

/* The index of the slot that ticket t of lane l lives in. */
static inline uint32_t lv_idx(const struct shmq_lane_view *v, uint32_t l, uint64_t t)
{
	return (l << v->lane_shift) | (uint32_t)(t & v->lane_mask);
}

static inline struct shmq_slot *lv_slot(const struct shmq_lane_view *v, uint64_t idx)
{
	return (struct shmq_slot *)(v->slots + idx * (uint64_t)v->slot_size);
}

/* Formats the slots of a fresh queue: each one FREE for the first ticket of its lane it holds. */
static inline void lane_format(const struct shmq_lane_view *v)
{
	uint64_t n = (uint64_t)v->lanes << v->lane_shift;
	for (uint64_t i = 0; i < n; i++)
		atomic_init(&lv_slot(v, i)->word, w_make(i & v->lane_mask, SLOT_FREE, 0, 0));
}

/* alive() for an owner read from a slot word: an owner out of range names nobody */
static inline int lv_alive(const struct shmq_lane_view *v, unsigned owner)
{
	return owner && owner <= v->max_owner && v->alive(v->ctx, owner);
}

/* A fresh ticket of lane l. relaxed: the ticket only names a slot; the CAS on that slot orders
 * everything. */
static inline uint64_t lane_take_ticket(const struct shmq_lane_view *v, uint32_t l)
{
	uint64_t t = atomic_fetch_add_explicit(&v->lane[l].prod_tail, 1, memory_order_relaxed);
	SHMQ_FAULT("send-after-ticket");
	return t;
}

/* slot_claim() of the slot of ticket t of lane l (which we hold) into *s, from the guess *w. */
static inline enum slot_claim_result lane_claim(const struct shmq_lane_view *v, uint32_t l, uint64_t t,
						struct shmq_slot **s, uint64_t *w)
{
	*s = lv_slot(v, lv_idx(v, l, t));
	/* the payload's second line is written next: ask for it now, so its transfer overlaps the
	 * claim's (the claim CAS is a full barrier: nothing after it would start before it is done) */
	slot_prefetch_w(slot_line1(*s));
	return slot_claim(*s, t, v->owner, lv_lap(v), w);
}

/* Where the head of a lane stands: ticket hd, its slot, and the slot's word as last seen. */
struct lane_at {
	uint64_t hd;
	uint64_t w;
	uint32_t idx;
	struct shmq_slot *s;
};

enum lane_head {
	LH_TOOK,      /* leased ticket hd for us: a->w is the leased word; the head moved on */
	LH_PASSED,    /* ticket hd is abandoned or already delivered: the head moved past it */
	LH_AGAIN,     /* the word changed under the step: look again */
	LH_WRITING,   /* a producer (w_owner(a->w)) is writing ticket hd */
	LH_UNCLAIMED, /* no message for hd yet: the slot is FREE for it, or an older one holds it */
	LH_CORRUPT    /* the lane's counters or a slot's skip word cannot be true: -EPROTO */
};

/* One step at lane l's cons_head: leases the first delivery there, or steps over an abandoned
 * ticket, or says why not. A step that needs more than the word's say (a skip, a slot more than
 * a lap ahead) is checked against prod_tail, so corrupt counters end in LH_CORRUPT, not a walk. */
static inline __attribute__((always_inline)) enum lane_head lane_head_step(const struct shmq_lane_view *v,
									   uint32_t l, struct lane_at *a)
{
	struct shmq_lane *h = &v->lane[l];
	uint64_t cap = lv_lap(v);
	uint64_t hd = atomic_load_explicit(&h->cons_head, memory_order_acquire);
	uint32_t idx = lv_idx(v, l, hd);
	struct shmq_slot *s = lv_slot(v, idx);
	a->hd = hd;
	a->idx = idx;
	a->s = s;
	/* A load first, and the lease CAS only once the word is READY for hd: a consumer polling
	 * an empty slot with CASes would own its line exclusively, and the producer's claim and
	 * publish would each have to take it back (the line would cross cores three or four times
	 * per message instead of twice). acquire: pairs with slot_publish()'s release, for the
	 * cases below that act on what the word says. */
	uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
	uint64_t leased = w_make(hd, SLOT_LEASED, v->owner, 1);
	int64_t d = ticket_diff(hd, w_ticket(w));
	unsigned st = w_state(w);
	a->w = w;
	if (d == 0 && st == SLOT_READY) {
		/* the payload line is the other miss of a delivery, read right after the lease: ask
		 * for it before the CAS, a full barrier that nothing after it would overlap */
		__builtin_prefetch(slot_payload(s), 0, 3);
		/* acquire: pairs with slot_publish()'s release, making the payload visible. (READY
		 * for hd with other fields: publish never writes one, check.c reports it as corrupt,
		 * but it is leased from the word seen.) */
		if (!slot_lease(s, &w, leased)) {
			a->w = w;
			return LH_AGAIN;
		}
		a->w = leased;
		SHMQ_FAULT("recv-before-head");
		/* failure is fine: someone helped move the head past our ticket already */
		atomic_compare_exchange_strong_explicit(&h->cons_head, &hd, hd + 1, memory_order_release,
							memory_order_relaxed);
		SHMQ_FAULT("recv-after-lease");
		return LH_TOOK;
	}
	int passed = d < 0 || (d == 0 && st != SLOT_FREE && st != SLOT_WRITING);
	/* what must be <= prod_tail when this step needs more than the word: a skip word (1 + a
	 * ticket taken), or a slot's ticket more than a lap past hd, less the lap (a freed slot is
	 * one lap ahead of a ticket taken). 0: nothing to check. */
	uint64_t beyond = d < -(int64_t)cap ? hd - (uint64_t)d - cap : 0;
	if (!passed && (d > 0 || st == SLOT_FREE)) {
		/* skip may also come from a later ticket of this slot (hd + k * cap), abandoned by a
		 * producer that found the slot taken: possibly by hd's own message, claimed after our
		 * look at the word. So: skip, then the word again, both seq_cst. If the word is
		 * unchanged, hd's producer has not claimed yet, and its seq_cst skip load after its
		 * claim will see this skip too (it abandons hd as we do). */
		uint64_t sk = atomic_load_explicit(&s->skip, memory_order_seq_cst);
		passed = sk > hd && atomic_load_explicit(&s->word, memory_order_seq_cst) == w;
		if (passed)
			beyond = sk;
	}
	if (beyond) {
		/* a skip is 1 + a ticket taken (so <= prod_tail), a slot's ticket at most a lap past
		 * one: both were stored after their ticket was taken, and read here before the tail
		 * (acquire; the skip store is seq_cst, the tail's RMW before it) */
		uint64_t tl = atomic_load_explicit(&h->prod_tail, memory_order_acquire);
		if (lane_corrupt(h, hd, tl, cap) || hd == tl || beyond > tl)
			return LH_CORRUPT;
	}
	if (passed) {
		atomic_compare_exchange_strong_explicit(&h->cons_head, &hd, hd + 1, memory_order_release,
							memory_order_relaxed);
		return LH_PASSED;
	}
	return d == 0 && st == SLOT_WRITING ? LH_WRITING : LH_UNCLAIMED;
}

/* For LH_UNCLAIMED at hd: 1 if a producer holds ticket hd (prod_tail is past it), 0 if the lane
 * is empty, -1 if its counters are corrupt. */
static inline int lane_ticket_held(const struct shmq_lane_view *v, uint32_t l, uint64_t hd)
{
	struct shmq_lane *h = &v->lane[l];
	uint64_t tl = atomic_load_explicit(&h->prod_tail, memory_order_acquire);
	if (lane_corrupt(h, hd, tl, lv_lap(v)))
		return -1;
	return tl != hd;
}

/* For LH_UNCLAIMED at a->hd, a ticket a producer has held too long without claiming its slot:
 * abandons it (a live producer notices at its claim and takes another ticket). The caller moves
 * on to the next ticket. */
static inline void lane_abandon(const struct shmq_lane_view *v, struct lane_at *a)
{
	if (w_state(a->w) == SLOT_FREE) {
		slot_cas(a->s, &a->w, slot_next_lap(a->hd, lv_lap(v)), memory_order_seq_cst);
	} else {
		slot_skip_past(a->s, a->hd);
		/* the reload after the seq_cst skip store is the other half of slot_claim()'s check */
		(void)atomic_load_explicit(&a->s->word, memory_order_seq_cst);
	}
}

/* For LH_WRITING at a->hd: if its writer is gone (alive() says so), retires the slot (WRITING ->
 * FREE, the ticket moving on). Returns 0 if the writer lives, 1 if we retired its slot, 2 if it
 * is gone but the word moved on before our CAS. */
static inline int lane_retire_writer(const struct shmq_lane_view *v, struct lane_at *a)
{
	if (lv_alive(v, w_owner(a->w)))
		return 0;
	return slot_cas(a->s, &a->w, slot_next_lap(a->hd, lv_lap(v)), memory_order_release) ? 1 : 2;
}

/* Settles a delivery for good (ack): LEASED word w -> FREE one lap on. seq_cst for the notify
 * that follows (wait.c); pairs with slot_claim()'s acquire. 1 if done, 0: stale. */
static inline int lane_ack(const struct shmq_lane_view *v, struct shmq_slot *s, uint64_t w)
{
	return slot_free(s, w, lv_lap(v), memory_order_seq_cst);
}

/* ---- lane.c: the repair of one slot by a reclaim pass ------------------------------------- */

struct lane_repair {
	uint64_t now_ms;
	uint32_t lease_ms;	 /* the queue's lease, for a requeue stalled between its two CASes */
	uint32_t max_deliveries; /* a delivery this many times over is dead-lettered, not requeued */
	/* the backoff before redelivery `deliveries` (a policy: redeliver.c) */
	uint64_t (*backoff_ms)(void *ctx, unsigned deliveries);
	void *backoff_ctx;
	/* the holder records (layout.h: hr_make), NULL: none kept; a dead-lettering writes the
	 * slot's, with the pid of the holder (owner) that pid_of reads from its participant record */
	_Atomic uint64_t *holders;
	int32_t (*pid_of)(void *ctx, unsigned owner);
	void *pid_ctx;
	/* owners found alive in this pass (index owner - 1; 0: probe again): "dead" is never kept,
	 * see lane.c. max_owner entries. */
	uint8_t *alive;
};

enum lane_repaired {
	LR_NONE,	/* nothing to do, or someone else moved the slot first */
	LR_RETIRED,	/* a dead writer's slot retired (WRITING -> FREE) */
	LR_EXPIRED,	/* an expired lease requeued (DELAYED, due *due) */
	LR_DEAD_OWNER,	/* a dead holder's lease requeued */
	LR_DEAD_LETTER, /* a delivery past max_deliveries dead-lettered */
};

/* What one slot tells a pass beyond the repair: held: 1 if it was being written or leased; dead:
 * 1 if it holds a dead letter (one found, or the one this repair made); due: when a DELAYED slot
 * (or the one requeued) is due, UINT64_MAX if not that. */
struct lane_seen {
	uint32_t held;
	uint32_t dead;
	uint64_t due;
};

/* What lane_repair_range() did over its slots, added to what *out held; next_due: the earliest
 * due time seen, if earlier than the one *out held; dead: dead slots seen (those it dead-lettered
 * too); dead_lane: the letters it made, per lane (for the lanes' dead-letter hints, dlq.c). */
struct lane_repairs {
	uint32_t retired, expired, dead_owner, dead_lettered;
	uint32_t held, dead;
	uint32_t dead_lane[SHMQ_LANES_MAX];
	uint64_t next_due;
};

/* The repair of slots [from, to): what a reclaim pass (or a slice of one) does, in one call. */
SHMQ_HIDDEN void lane_repair_range(const struct shmq_lane_view *v, const struct lane_repair *r, uint64_t from,
				   uint64_t to, struct lane_repairs *out);

SHMQ_HIDDEN enum lane_repaired lane_repair_slot(const struct shmq_lane_view *v, const struct lane_repair *r,
						uint32_t idx, struct lane_seen *seen);

#endif

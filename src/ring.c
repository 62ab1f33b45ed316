/* SPDX-License-Identifier: MIT */
/*
 * ring.c: the public send / receive / settle calls, composed from the ring core (slot.h, lane.h:
 * the word transitions and lane algorithms) and the policies (lanes, prefetch, redelivery, reclaim,
 * dead letters): send (claim, write, publish), receive (lease), ack, nack, reject, extend, with
 * their waiting, timeouts and counters. docs/design.md has the diagram; layout.h the word format.
 *
 * FIFO order comes from tickets, per lane: producers take tickets from the lane's prod_tail, ticket
 * t lives in slot t % (slots per lane) of the lane's range, consumers take first deliveries in
 * ticket order at the lane's cons_head. A slot still held by
 * an older message (leased, delayed, dead-lettered) is not waited for: the producer abandons that
 * ticket (slot->skip) and takes the next one, and consumers step over abandoned tickets. So a held
 * lease never stalls anyone, and every state change is one CAS on one slot word.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dlq.h"
#include "fault.h"
#include "handle.h"
#include "lane.h"
#include "lanes.h"
#include "prefetch.h"
#include "reclaim.h"
#include "redeliver.h"
#include "ring.h"
#include "slot.h"
#include "wait.h"

#define SPIN_LIMIT 256	     /* polls before a blocking call sleeps */
#define CLOCK_EVERY 32	     /* polls of a waiting receive between clock reads (recv_one) */
#define ABANDON_GRACE_MS 2   /* a ticket taken but unused this long is abandoned by consumers */
#define WRITER_PROBE_MS 10   /* a slot being written this long gets its writer's liveness probed */
#define FULL_RECHECK_MS 50   /* a sleeping producer re-checks at least this often */
#define RECLAIM_IDLE_MS 1000 /* a sleeping receiver wakes for a reclaim pass at most this often */
#define SLEEP_MAX_MS 1000    /* a sleeping receiver looks at the ring at least this often (recv_one) */
#define ACK_PEEKS 512	     /* polls of a just-received next slot before its ticket is taken */
#define FRESH_LEASE_MS 2     /* a lease younger than this is worth waiting for (see await_ack) */
#define EMPTY_PAUSES 2	     /* pauses of a timeout-0 receive that found nothing (see recv_one) */
#define LANE_RUN 16	     /* receives that start at the same lane (see take_lanes) */
#define IDLE_SLICES 16	     /* reclaim slices, due-redelivery looks of a receive about to sleep */

/* for the small helpers of the per-message path, which gcc would otherwise call out of line */
#define HOT static inline __attribute__((always_inline))

enum head_result {
	HEAD_TOOK,
	HEAD_EMPTY,
	HEAD_WAIT,   /* something may come soon: a ticket held, or the step budget spent */
	HEAD_CORRUPT /* the lane's counters or a slot's skip word cannot be true: -EPROTO */
};

#define HEAD_STEPS 1024 /* tickets take_head() steps over per call; the caller checks its deadline */

static inline void touch(shmq_t *q)
{
	atomic_store_explicit(&q->me->last_active_ms, now_ms(), memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------------
 * Producing
 */

#define SCAN_STEP 16  /* slot words a spinning producer looks at per scan when the ring looks full */
#define SCAN_EVERY 64 /* polls of a full ring per scan (the first poll scans) */

/* Is any of the next n slots (from the handle's scan cursor, round robin) FREE? The full check of
 * last resort, read-only: a spinning producer looks at SCAN_STEP slots every SCAN_EVERY polls, so
 * a full ring costs it a few loads now and then, and one about to sleep looks at them all. */
static int any_free(shmq_t *q, uint32_t l, uint32_t n)
{
	uint32_t at = atomic_fetch_add_explicit(&q->lc[l].scan_cursor, n, memory_order_relaxed);
	for (uint32_t k = 0; k < n && k <= q->lane_mask; k++)
		if (w_state(atomic_load_explicit(&slot_at(q, lane_idx(q, l, at + k))->word,
						 memory_order_relaxed)) == SLOT_FREE)
			return 1;
	return 0;
}

/* The slot next in line is often still LEASED by a consumer that received it a moment ago and
 * will ack it within microseconds (a producer one lap ahead, the ring near full; a consumer
 * working through a batch). Taking or using its ticket now would only abandon it, and consumers
 * would then step over it: wait for the ack a little, but only for a lease taken within the last
 * couple of ms, so a long-held lease still never stalls a producer. w: the word as last seen;
 * returns 1 with the changed word in *w if it changed meanwhile. */
HOT int await_ack(shmq_t *q, struct shmq_slot *s, uint64_t *w)
{
	if (w_state(*w) != SLOT_LEASED)
		return 0;
	uint64_t lw = atomic_load_explicit(&s->lease, memory_order_relaxed);
	/* lease start = deadline - lease_ms; the header line holds both words */
	if (lw_tag(lw) == lease_tag(q, *w) && lw_ms(lw) + FRESH_LEASE_MS < now_ms() + q->lease_ms)
		return 0;
	for (int k = 0; k < ACK_PEEKS; k++) {
		cpu_relax();
		/* acquire, as the failed CAS it stands in for */
		uint64_t now = atomic_load_explicit(&s->word, memory_order_acquire);
		if (now != *w) {
			*w = now;
			return 1;
		}
	}
	return 0;
}

/* Claims the slot of ticket t of lane l, which we hold: 0 with *out = the slot, now WRITING(t, us),
 * or -EAGAIN: the ticket is lost (a consumer abandoned it, or an older message still holds the slot
 * and we abandon it) and the caller takes another. */
HOT int claim_ticket(shmq_t *q, uint32_t l, uint64_t t, struct shmq_slot **out)
{
	struct shmq_slot *s;
	/* the usual word: freed for exactly this ticket (see slot_claim) */
	uint64_t w = w_make(t, SLOT_FREE, 0, 0);
	enum slot_claim_result r = lane_claim(&q->view, l, t, &s, &w);
	if (__builtin_expect(r == CLAIM_HELD, 0)) {
		/* occupied by an older message. One leased a moment ago is usually acked within
		 * microseconds: wait for that once, holding the ticket (far less than the grace after
		 * which consumers abandon a ticket taken and unused), instead of looking before the
		 * ticket is taken, which would move the line here twice on every send (a load, then
		 * the CAS) */
		if (await_ack(q, s, &w))
			r = slot_claim(s, t, q->owner, (uint64_t)q->lane_mask + 1, &w);
		/* still occupied: abandon ticket t at this slot */
		if (r == CLAIM_HELD)
			slot_skip_past(s, t);
	}
	if (r != CLAIM_OK)
		return -EAGAIN;
	SHMQ_FAULT("send-after-claim");
	*out = s;
	return 0;
}

/* Tickets outstanding from which the slot next in line is likely still leased a moment ago
 * (the last eighth of the window): claim() looks before it takes a ticket, the fast path leaves
 * the send to it. */
static inline uint64_t near_full(uint64_t cap) { return cap - cap / 8 - 1; }

/* The window check shared by claim() and take_run(): loads prod_tail into *t0 and a cons_head no
 * newer than the real one into *c0. The head is read from the handle's cached copy (it only grows:
 * an old value only makes the window look fuller) and re-read from the segment when the window
 * looks full: consumers write cons_head on every receive, and reading it on every send would cost
 * a cache miss each time. cons_head never passes prod_tail, so *t0 >= *c0. */
HOT void window(shmq_t *q, uint32_t l, uint64_t *c0, uint64_t *t0)
{
	struct shmq_lane *ln = &q->hdr->lane[l];
	*c0 = atomic_load_explicit(&q->lc[l].head_cache, memory_order_relaxed);
	*t0 = atomic_load_explicit(&ln->prod_tail, memory_order_acquire);
	if (*t0 - *c0 > q->lane_mask) {
		*c0 = atomic_load_explicit(&ln->cons_head, memory_order_acquire);
		atomic_store_explicit(&q->lc[l].head_cache, *c0, memory_order_relaxed);
		*t0 = atomic_load_explicit(&ln->prod_tail, memory_order_acquire);
	}
}

/* Claims a slot for a fresh ticket: on success the slot is WRITING(ticket, us). -EAGAIN if the
 * ring is full. While fewer than cap tickets are outstanding there is room by construction. Past
 * that, the slot next in line may still be held (leased, delayed, dead) while another one was
 * freed out of order: looking at the slot words finds out, and if some slot is free we walk
 * tickets to it (abandoning those in between) instead of reporting full, but never to two laps
 * of tickets outstanding (lane_gap_max() counts on it). `scan` is how many slot words to look at
 * for that (0: none). -EPROTO if the lane's counters are corrupt. */
static int claim(shmq_t *q, uint32_t l, struct shmq_slot **out, uint64_t *ticket, uint32_t scan)
{
	struct shmq_lane *ln = &q->hdr->lane[l];
	uint64_t cap = (uint64_t)q->lane_mask + 1;
	int room = 0;
	for (uint64_t burned = 0; burned <= 2 * cap; burned++) {
		uint64_t c0, t0;
		window(q, l, &c0, &t0);
		if (t0 - c0 > q->lane_mask) {
			/* full as far as the head says: window() has just read it from the segment */
			if (lane_corrupt(ln, c0, t0, cap))
				return -EPROTO;
			if (t0 - c0 >= 2 * cap)
				return -EAGAIN;
		}
		if (room) {
			/* a free slot was seen: walk tickets to it */
		} else if (t0 - c0 < cap) {
			/* Room by the tickets. Near full, the slot next in line is likely leased a
			 * moment ago: wait for its ack before taking the ticket, looking without
			 * taking the line (a failed claim CAS would take it from the consumer about
			 * to ack). Otherwise a slot still held is waited for in claim_ticket(), and
			 * the usual send moves the line once. (c0 may be stale: then this looks
			 * more often than needed, never less.) */
			if (t0 - c0 >= near_full(cap)) {
				struct shmq_slot *s = slot_at(q, lane_idx(q, l, t0));
				uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
				await_ack(q, s, &w);
			}
		} else {
			/* full as far as the head says. Whether a slot freed out of order lets us on
			 * anyway is looked into only when the caller asks: these words are the lines
			 * consumers are working on, and reading them on every poll of a full ring slowed
			 * down the very consumers we wait for */
			if (!scan)
				return -EAGAIN;
			uint64_t w = atomic_load_explicit(&slot_at(q, lane_idx(q, l, t0))->word,
							  memory_order_relaxed);
			if (w_state(w) != SLOT_FREE || ticket_diff(t0, w_ticket(w)) < 0) {
				if (!any_free(q, l, scan))
					return -EAGAIN;
				room = 1;
			}
		}
		uint64_t t = lane_take_ticket(&q->view, l);
		if (claim_ticket(q, l, t, out) == 0) {
			*ticket = t;
			return 0;
		}
	}
	return -EAGAIN;
}

#define RUN_MAX 64 /* most tickets a batch send takes at once */

/* For a batch send: takes up to `want` consecutive tickets with one RMW on prod_tail, as many as
 * the window has room for and whose slots look FREE now (a slot still leased would only be
 * abandoned). Returns how many, the first in *t; 0 when the window looks full or the next slot is
 * not free, and claim() has to sort that out. A CAS rather than a fetch_add, so racing producers
 * cannot push the run past the window it was sized for. */
static unsigned take_run(shmq_t *q, uint32_t l, unsigned want, uint64_t *t)
{
	uint64_t c0, t0;
	window(q, l, &c0, &t0);
	for (;;) {
		if (t0 - c0 > q->lane_mask)
			return 0;
		uint64_t room = (uint64_t)q->lane_mask + 1 - (t0 - c0);
		/* The run's lines were last written by the consumer that acked them: ask for all
		 * of them at once, so their transfers overlap instead of each claim CAS below
		 * waiting for its own in turn (batch 1P1C +21%, median of 11). The write hint
		 * becomes PREFETCHW only in builds for a CPU that has it (-march=native, -mprfchw);
		 * a plain -O2 x86 build emits a read prefetch. Both measured alike (hotpath batch,
		 * 15 alternating rounds). */
		for (unsigned k = 0; k < want && k < room; k++) {
			struct shmq_slot *ps = slot_at(q, lane_idx(q, l, t0 + k));
			__builtin_prefetch(ps, 1, 3);
			__builtin_prefetch(slot_payload(ps), 1, 3);
		}
		struct shmq_slot *first = slot_at(q, lane_idx(q, l, t0));
		/* the run is sized from the words below, so the first one is read here anyway */
		uint64_t fw = atomic_load_explicit(&first->word, memory_order_relaxed);
		await_ack(q, first, &fw);
		unsigned k = 0;
		/* relaxed: a hint only; claim_ticket()'s CAS decides */
		while (k < want && k < room) {
			uint64_t w = atomic_load_explicit(&slot_at(q, lane_idx(q, l, t0 + k))->word,
							  memory_order_relaxed);
			if (w_state(w) != SLOT_FREE || ticket_diff(t0 + k, w_ticket(w)) < 0)
				break;
			k++;
		}
		if (!k)
			return 0;
		/* relaxed: as in claim(), the tickets only name slots */
		if (atomic_compare_exchange_weak_explicit(&q->hdr->lane[l].prod_tail, &t0, t0 + k,
							  memory_order_relaxed, memory_order_relaxed)) {
			*t = t0;
			return k;
		}
	}
}

/* Fills in the header of claimed slot s. */
HOT void fill(struct shmq_slot *s, uint64_t id, uint32_t len, uint32_t key_len, uint64_t enq_ns)
{
	s->id = id;
	s->len = len;
	s->key_len = key_len;
	s->enqueued_ns = enq_ns;
	/* a lease word left by the slot's previous message must not look valid for this one */
	atomic_store_explicit(&s->lease, 0, memory_order_relaxed);
}

/* WRITING -> READY, no wake-up (see publish()). -ESTALE: retired by a reclaim pass that thought we
 * were dead. */
HOT int publish_word(shmq_t *q, struct shmq_slot *s, uint64_t t)
{
	SHMQ_FAULT("send-before-publish");
	return slot_publish(s, t, q->owner) ? -ESTALE : 0;
}

HOT int publish(shmq_t *q, uint32_t l, struct shmq_slot *s, uint64_t t, uint32_t len, uint32_t key_len)
{
	fill(s, msg_id(q, l, t), len, key_len, now_coarse_ns());
	if (publish_word(q, s, t))
		return -ESTALE;
	SHMQ_FAULT("send-before-notify");
	/* one message, one sleeper: a second message wakes a second one (wait.c) */
	shmq_notify_sc(q, &q->hdr->data_seq, &q->hdr->data_sleepers, 1);
	count(q, C_SENT, 1);
	return 0;
}

/* Gives a claimed slot back unpublished (WRITING -> FREE, the ticket moves on with the slot:
 * consumers step over it). */
static int unclaim(shmq_t *q, struct shmq_slot *s, uint64_t t)
{
	return slot_unclaim(s, t, q->owner, (uint64_t)q->lane_mask + 1) ? 0 : -ESTALE;
}

/* Copies a message's payload into a claimed slot. Test builds split the copy around a fault point
 * (a producer killed mid-write); others make one call. */
static void write_payload(struct shmq_slot *s, const void *data, size_t len)
{
#ifdef SHMQ_TEST
	memcpy(slot_payload(s), data, len / 2);
	SHMQ_FAULT("send-mid-write");
	memcpy(slot_payload(s) + len / 2, (const unsigned char *)data + len / 2, len - len / 2);
#else
	memcpy(slot_payload(s), data, len);
#endif
}

/* claim() in lane *l, then (unless `strict`: the lane was chosen by key) in the other lanes, so a
 * full lane sends its messages elsewhere instead of waiting. *l is the lane that had room. */
HOT int claim_some(shmq_t *q, uint32_t *l, struct shmq_slot **s, uint64_t *t, uint32_t scan, int strict)
{
	int r = claim(q, *l, s, t, scan);
	if (r == 0 || strict)
		return r;
	/* a corrupt lane (-EPROTO) is reported only if no other lane has room */
	int err = r;
	for (uint32_t k = 1; k < q->lanes; k++) {
		uint32_t o = (*l + k) % q->lanes;
		if ((r = claim(q, o, s, t, scan)) == 0) {
			*l = o;
			return 0;
		}
		if (r != -EAGAIN)
			err = r;
	}
	return err;
}

/* Registers as a sleeper, checks once more, then sleeps until a slot is freed (or the deadline,
 * or FULL_RECHECK_MS: a slot freed by a process that died before its notify). The registration
 * (seq_cst, then a fence) pairs with shmq_notify(_sc): either the freer sees us or our re-check
 * sees the slot (wait.c). Nothing to undo afterwards: the flag is cleared by a wake-up that finds
 * nobody asleep. */
static int sleep_claim(shmq_t *q, uint32_t *l, struct shmq_slot **s, uint64_t *t, uint64_t deadline,
		       int strict)
{
	struct shmq_hdr *h = q->hdr;
	uint64_t cap = now_ns() + FULL_RECHECK_MS * 1000000ULL;
	count(q, C_PROD_WAITS, 1);
	/* seen before the registration: a wake-up after it changes the word (wait.c) */
	uint32_t seen = atomic_load_explicit(&h->space_seq, memory_order_acquire);
	shmq_sleep_register(&h->space_sleepers);
	int r = claim_some(q, l, s, t, q->lane_mask + 1, strict);
	if (r == -EAGAIN)
		shmq_futex_wait(&h->space_seq, seen, deadline < cap ? deadline : cap);
	return r;
}

/* claim with the timeout policy of a blocking call. Every SCAN_EVERY-th poll of a full ring looks at
 * SCAN_STEP slot words for one freed out of order; the last check before a sleep looks at all. */
static int claim_wait(shmq_t *q, uint32_t *l, struct shmq_slot **s, uint64_t *t, int timeout_ms, int strict)
{
	uint64_t deadline = 0;
	for (unsigned spins = 0;; spins++) {
		int r = spins < SPIN_LIMIT
				? claim_some(q, l, s, t, spins % SCAN_EVERY ? 0 : SCAN_STEP, strict)
				: sleep_claim(q, l, s, t, deadline, strict);
		if (r != -EAGAIN || timeout_ms == 0)
			return r;
		if (spins == 0)
			deadline = shmq_deadline(timeout_ms);
		if (now_ns() >= deadline)
			return -EAGAIN;
		if (spins < SPIN_LIMIT)
			cpu_relax();
	}
}

/* A send into lane l: routed (strict: stays in l, for per-key order) or dispatched (may move on to
 * another lane when l is full). */
HOT int send_to(shmq_t *q, uint32_t l, int strict, const void *data, size_t len, int timeout_ms)
{
	struct shmq_slot *s;
	uint64_t t;
	if (!q || (!data && len))
		return -EINVAL;
	if (len > q->max_payload)
		return -EMSGSIZE;
	int r = claim_wait(q, &l, &s, &t, timeout_ms, strict);
	if (r)
		return r;
	if (len)
		write_payload(s, data, len);
	return publish(q, l, s, t, (uint32_t)len, 0);
}

/* The fast path's claim: one lane, the window short of near full by the cached head (so the slot
 * next in line was freed long ago, see claim()), the ticket's slot FREE for it. 0 with the slot
 * (WRITING for ticket *t) and the head *c0 the window was judged by, or -EAGAIN for the general
 * path, with nothing taken, or with the ticket lost as claim() loses one (abandoned at a slot
 * still held). */
HOT int claim_fast(shmq_t *q, struct shmq_slot **s, uint64_t *t, uint64_t *c0)
{
	*c0 = atomic_load_explicit(&q->lc[0].head_cache, memory_order_relaxed);
	uint64_t t0 = atomic_load_explicit(&q->hdr->lane[0].prod_tail, memory_order_relaxed);
	uint64_t nf = near_full((uint64_t)q->lane_mask + 1);
	if (t0 - *c0 >= nf) {
		/* the cached head only ever lags: refresh it (once in most of a lap while the
		 * consumers keep up) before leaving the send to the general path */
		*c0 = atomic_load_explicit(&q->hdr->lane[0].cons_head, memory_order_relaxed);
		atomic_store_explicit(&q->lc[0].head_cache, *c0, memory_order_relaxed);
		if (t0 - *c0 >= nf)
			return -EAGAIN;
	}
	*t = lane_take_ticket(&q->view, 0);
	return claim_ticket(q, 0, *t, s);
}

/* After a fast send of ticket t: while the window is under half full (by the head c0), the next
 * ticket's slot was freed long ago, so its lines are asked for now, while nobody waits on us,
 * instead of on the next send's critical path. */
HOT void prefetch_next(shmq_t *q, uint64_t t, uint64_t c0)
{
	if (t + 1 - c0 < near_full((uint64_t)q->lane_mask + 1) / 2) {
		struct shmq_slot *ns = slot_at(q, lane_idx(q, 0, t + 1));
		slot_prefetch_w(ns);
		slot_prefetch_w(slot_payload(ns));
	}
}

/* The fast path of a send: claim_fast(), the copy, the publish. -EAGAIN: the general path. */
HOT int send_fast(shmq_t *q, const void *data, size_t len)
{
	struct shmq_slot *s;
	uint64_t t, c0;
	if (claim_fast(q, &s, &t, &c0))
		return -EAGAIN;
	if (len)
		write_payload(s, data, len);
	int r = publish(q, 0, s, t, (uint32_t)len, 0);
	prefetch_next(q, t, c0);
	return r;
}

int shmq_send(shmq_t *q, const void *data, size_t len, int timeout_ms)
{
	/* one load of a line the call reads anyway decides; the general path checks it all again */
	if (__builtin_expect(q && q->lanes == 1 && !q->foreign && len <= q->max_payload && (data || !len),
			     1)) {
		int r = send_fast(q, data, len);
		if (r != -EAGAIN)
			return r;
	}
	if (foreign(q))
		return -ECHILD;
	return send_to(q, q ? shmq_dispatch_lane(q, NULL, 0) : 0, 0, data, len, timeout_ms);
}

int shmq_send_routed(shmq_t *q, const void *rkey, size_t rkey_len, const void *data, size_t len,
		     int timeout_ms)
{
	if (foreign(q))
		return -ECHILD;
	if (!q || !rkey || rkey_len == 0 || rkey_len > SHMQ_KEY_MAX)
		return -EINVAL;
	int keyed = q->dispatch == SHMQ_DISPATCH_KEY_HASH;
	return send_to(q, shmq_dispatch_lane(q, rkey, rkey_len), keyed, data, len, timeout_ms);
}

int shmq_reserve_lane(shmq_t *q, uint32_t l, int strict, size_t len, struct shmq_reservation *r,
		      int timeout_ms)
{
	struct shmq_slot *s;
	uint64_t t;
	if (!q || !r)
		return -EINVAL;
	if (len > q->max_payload)
		return -EMSGSIZE;
	uint64_t c0;
	/* one lane: the fast path's claim first (keyed sends come this way) */
	if (q->lanes > 1 || l != 0 || claim_fast(q, &s, &t, &c0)) {
		int err = claim_wait(q, &l, &s, &t, timeout_ms, strict);
		if (err)
			return err;
	}
	r->data = slot_payload(s);
	r->cap = q->max_payload;
	r->slot = lane_idx(q, l, t);
	r->token = t;
	return 0;
}

int shmq_send_reserve(shmq_t *q, size_t len, struct shmq_reservation *r, int timeout_ms)
{
	if (foreign(q))
		return -ECHILD;
	return shmq_reserve_lane(q, q ? shmq_dispatch_lane(q, NULL, 0) : 0, 0, len, r, timeout_ms);
}

static struct shmq_slot *resv_slot(shmq_t *q, const struct shmq_reservation *r)
{
	if (r->slot >= q->capacity || (r->token & q->lane_mask) != (r->slot & q->lane_mask))
		return NULL;
	return slot_at(q, r->slot);
}

int shmq_commit_keyed(shmq_t *q, struct shmq_reservation *r, size_t len, uint32_t key_len)
{
	if (foreign(q))
		return -ECHILD;
	struct shmq_slot *s;
	if (!q || !r || !(s = resv_slot(q, r)))
		return -EINVAL;
	if (key_len > SHMQ_KEY_MAX || len + key_len > q->max_payload)
		return -EMSGSIZE;
	/* still ours? a stale commit must not touch the header of the slot's next message */
	if (atomic_load_explicit(&s->word, memory_order_acquire) !=
	    w_make(r->token, SLOT_WRITING, q->owner, 0))
		return -ESTALE;
	int err = publish(q, idx_lane(q, r->slot), s, r->token, (uint32_t)len, key_len);
	r->data = NULL;
	return err;
}

int shmq_send_commit(shmq_t *q, struct shmq_reservation *r, size_t len)
{
	return shmq_commit_keyed(q, r, len, 0);
}

int shmq_send_abort(shmq_t *q, struct shmq_reservation *r)
{
	if (foreign(q))
		return -ECHILD;
	struct shmq_slot *s;
	if (!q || !r || !(s = resv_slot(q, r)))
		return -EINVAL;
	if (unclaim(q, s, r->token))
		return -ESTALE;
	r->data = NULL;
	shmq_notify(q, &q->hdr->space_seq, &q->hdr->space_sleepers, 1);
	return 0;
}

static int iov_check(shmq_t *q, const struct shmq_iov *m)
{
	if (!m->data && m->len)
		return -EINVAL;
	return m->len > q->max_payload ? -EMSGSIZE : 0;
}

/* Tickets come in runs (one RMW on prod_tail for up to RUN_MAX messages, see take_run). A run's
 * slots are all claimed, then all written, then all published: the publishes come in a quick burst,
 * so a consumer that is waiting takes the run as a whole instead of chasing it one message at a
 * time. A producer killed mid-run leaves its claimed slots WRITING, retired like any other (a
 * consumer's grace carries over from one to the next). A ticket lost before its claim (abandoned
 * while we were slow) is stepped over: its message takes the next ticket of the run, which keeps
 * the batch in order. */
int shmq_send_batch(shmq_t *q, const struct shmq_iov *msgs, unsigned n, int timeout_ms)
{
	if (foreign(q))
		return -ECHILD;
	if (!q || (!msgs && n))
		return -EINVAL;
	unsigned ok = 0; /* a bad message stops the batch before it */
	while (ok < n && iov_check(q, &msgs[ok]) == 0)
		ok++;
	if (n && !ok)
		return iov_check(q, &msgs[0]);
	unsigned i = 0;
	uint64_t enq_ns = 0;
	int stop = 0;
	while (i < ok && !stop) {
		struct shmq_slot *s[RUN_MAX];
		uint64_t t[RUN_MAX], t0;
		/* one lane per run: a run is what makes a batch cheap, and the policy still sees
		 * every run (round robin moves on run by run) */
		uint32_t l = shmq_dispatch_lane(q, NULL, 0);
		unsigned k = take_run(q, l, ok - i < RUN_MAX ? ok - i : RUN_MAX, &t0), c = 0;
		if (!k) {
			/* full, or the next slot is held: the single-message path knows what to do */
			int r = claim_wait(q, &l, &s[0], &t[0], i == 0 ? timeout_ms : 0, 0);
			if (r) {
				if (i == 0)
					return r;
				break;
			}
			c = 1;
		}
		for (unsigned j = 0; j < k; j++)
			if (claim_ticket(q, l, t0 + j, &s[c]) == 0)
				t[c++] = t0 + j;
		if (!enq_ns)
			enq_ns = now_coarse_ns(); /* one clock read per batch, after any wait for room */
		for (unsigned j = 0; j < c; j++) {
			if (msgs[i + j].len)
				write_payload(s[j], msgs[i + j].data, msgs[i + j].len);
			fill(s[j], msg_id(q, l, t[j]), (uint32_t)msgs[i + j].len, 0, enq_ns);
		}
		for (unsigned j = 0; j < c; j++) {
			if (stop)
				unclaim(q, s[j], t[j]); /* the batch ends before an unsent message */
			else if (publish_word(q, s[j], t[j]))
				stop = 1; /* retired under us */
			else
				i++;
		}
	}
	if (i) {
		/* as in publish(), once for the batch: a sleeper per message */
		shmq_notify_sc(q, &q->hdr->data_seq, &q->hdr->data_sleepers, i);
		count(q, C_SENT, i);
	}
	return (int)i;
}

/* ---------------------------------------------------------------------------------------------
 * Consuming
 */

HOT void deliver(shmq_t *q, uint32_t idx, uint64_t leased, struct shmq_msg *m, uint64_t now)
{
	struct shmq_slot *s = slot_at(q, idx);
	/* The holder fields, then the deadline, all after the CAS that made us the owner. Until the
	 * deadline is there, a reclaim pass sees a tag mismatch (no lease word of a slot about to be
	 * leased has this delivery's tag: producers zero it, requeues tag it with the previous
	 * delivery, a redrive with delivery 0) and treats the lease as fresh: only our death loses it, so
	 * these stores cannot land on a slot that moved on. relaxed: informational; the release
	 * store of the deadline publishes them. */
	atomic_store_explicit(&s->last_owner, q->owner, memory_order_relaxed);
	atomic_store_explicit(&s->last_pid, q->pid, memory_order_relaxed);
	atomic_store_explicit(&s->lease, lw_make(now + q->lease_ms, LW_DEADLINE, lease_tag(q, leased)),
			      memory_order_release);
	/* tell sleeping receivers there is a lease to watch again (a read of a line that is
	 * written once per reclaim pass, and a write only after a pass found nothing held, or once
	 * per pass while one is open: its count may have missed us, see reclaim.c) */
	uint32_t held = atomic_load_explicit(&q->hdr->reclaim_held, memory_order_relaxed);
	if (!held || held == RECLAIM_HELD_OPEN)
		atomic_store_explicit(&q->hdr->reclaim_held, 1, memory_order_relaxed);
	/* never trust a length from the segment */
	uint32_t kl = slot_key_len(s, q->max_payload);
	m->key = kl ? slot_payload(s) : NULL;
	m->key_len = kl;
	m->data = slot_payload(s) + kl;
	m->len = slot_data_len(s, kl, q->max_payload);
	m->deliveries = w_deliv(leased);
	m->id = s->id;
	m->enqueued_ns = s->enqueued_ns;
	m->slot = idx;
	m->token = leased;
}

#define TAIL_EVERY 1024 /* an idle poller reads prod_tail on one poll in this many (see take_head) */

/* The end of a poll (timeout 0) that found nothing. A caller polling in a loop would otherwise
 * load the head slot's line back to back, and the producer about to claim and publish it would
 * have to take it back from us for each (a shared copy here makes each of its writes wait for
 * an invalidation): a pause lets it through. */
static inline void empty_pause(void)
{
	for (int k = 0; k < EMPTY_PAUSES; k++)
		cpu_relax();
}

/* polls of this thread that found lane l's head slot FREE for its ticket (see take_head), per
 * lane: one count for all lanes would give the one-in-TAIL_EVERY tail read to the same lane every
 * time when a receive looks at several in a fixed order */
static SHMQ_TLS unsigned idle_polls[SHMQ_LANES_MAX];

/* For a step that found the head slot unclaimed (a->w FREE for a->hd, or an older message's):
 * 1 if it counts as empty without reading prod_tail, which it does on all but one in TAIL_EVERY
 * such polls (see take_head). `count`: 0 to ask without counting this poll (the fast path, which
 * leaves the one in TAIL_EVERY to the general path, where it is counted). */
static inline int idle_poll(const struct lane_at *a, uint32_t l, int count)
{
	if (ticket_diff(a->hd, w_ticket(a->w)) != 0 || w_state(a->w) != SLOT_FREE)
		return 0;
	if (!count)
		return (idle_polls[l] + 1) % TAIL_EVERY != 0;
	return ++idle_polls[l] % TAIL_EVERY != 0;
}

/* Takes the next first delivery at lane l's cons_head, stepping over abandoned tickets (the caller
 * counts it). *wait_since remembers since when the consumer has waited on a ticket a producer holds
 * but has not used. Steps over at most HEAD_STEPS tickets (then HEAD_WAIT: the caller checks its
 * deadline and comes back); a step that needs more than the word's say (a skip, a slot more than a
 * lap ahead) is checked against prod_tail, so corrupt counters end in HEAD_CORRUPT, not a walk. */
static enum head_result take_head(shmq_t *q, uint32_t l, struct shmq_msg *m, uint64_t now,
				  uint64_t *waited_ticket, uint64_t *wait_since, int force_tail)
{
	const struct shmq_lane_view *v = &q->view;
	for (unsigned steps = 0;; steps++) {
		if (steps == HEAD_STEPS)
			return HEAD_WAIT;
		struct lane_at a;
		switch (lane_head_step(v, l, &a)) {
		case LH_TOOK:
			deliver(q, a.idx, a.w, m, now);
			return HEAD_TOOK;
		case LH_PASSED:
		case LH_AGAIN:
			continue;
		case LH_CORRUPT:
			return HEAD_CORRUPT;
		case LH_WRITING:
			/* a producer is writing our ticket: wait; a dead one is retired below */
			if (*waited_ticket != a.hd) {
				*waited_ticket = a.hd;
				*wait_since = now_ms();
			} else if (now_ms() - *wait_since >= WRITER_PROBE_MS) {
				int r = lane_retire_writer(v, &a);
				if (r == 1)
					count(q, C_RETIRED_WRITES, 1);
				if (r) {
					/* a batch producer leaves a run of slots WRITING: probe the next
					 * one at once (the probe, not the wait, decides) */
					*waited_ticket = a.hd + 1;
					continue;
				}
			}
			return HEAD_WAIT;
		case LH_UNCLAIMED:
			break;
		}
		/* The slot has no message for ticket hd yet. Unclaimed (FREE for hd): as good as empty,
		 * unless a producer took ticket hd and has not claimed the slot yet, which only
		 * prod_tail tells. That is the producers' hottest line: an idle poller that read it
		 * on every poll would pull it away from the very producer it waits for (one more
		 * miss on each send's critical path). So only every TAIL_EVERY-th such poll, the
		 * last check before a sleep (force_tail), and every poll once a producer was seen
		 * holding ticket hd, in this call or (timeout 0) an earlier one (zw: its grace must
		 * run out, or a dead one's ticket would stall the lane for a poller that comes back
		 * every TAIL_EVERY polls) read it. */
		if (!force_tail && *waited_ticket != a.hd &&
		    atomic_load_explicit(&q->zw[l].ticket, memory_order_relaxed) != a.hd + 1 &&
		    idle_poll(&a, l, 1))
			return HEAD_EMPTY;
		int held = lane_ticket_held(v, l, a.hd);
		if (held < 0)
			return HEAD_CORRUPT;
		if (!held)
			return HEAD_EMPTY;
		/* a producer holds ticket hd but has not claimed the slot yet: give it a moment, then
		 * abandon the ticket (a live producer notices and takes another one) */
		if (*waited_ticket != a.hd) {
			*waited_ticket = a.hd;
			*wait_since = now_ms();
			return HEAD_WAIT;
		}
		if (now_ms() - *wait_since < ABANDON_GRACE_MS)
			return HEAD_WAIT;
		lane_abandon(v, &a);
		/* the grace runs on for the next ticket: a batch producer killed holding a run of
		 * tickets costs one grace, not one per ticket (a live holder takes another ticket) */
		*waited_ticket = a.hd + 1;
	}
}

#define DUE_SCAN 4096 /* slot words one receive looks at for a due redelivery */

/* A thread's look for due redeliveries on a queue of more than DUE_SCAN slots, spread over its
 * receives: windows of DUE_SCAN slots from its own cursor, one after the other. A lap of windows
 * under one value of the hint (no nack, no reclaim pass noted a time meanwhile) saw every slot,
 * and may publish the next due time. Thread-local: no two threads share a lap. */
static SHMQ_TLS struct {
	const shmq_t *q;
	uint64_t rd;	 /* the hint the lap runs under */
	uint64_t next;	 /* earliest due time the lap saw that is not due yet */
	uint32_t cursor; /* where the next window starts */
	uint32_t seen;	 /* slots the lap looked at */
} lap;

/* Looks for a DELAYED message that is due and leases it. Scans only when the shared hint says
 * something is due, at most DUE_SCAN slots per call (a scan of millions of slots inside one
 * receive took tens of ms); publishes the next due time after a whole scan (one call, or a lap)
 * if no nack raced with it. */
static int due_window(shmq_t *q, struct shmq_msg *m, uint64_t now)
{
	struct shmq_hdr *h = q->hdr;
	uint64_t rd = atomic_load_explicit(&h->redeliver, memory_order_acquire);
	if (rd_due(rd) > now)
		return -EAGAIN;
	uint64_t next = REDELIVER_NONE;
	uint32_t cap = q->capacity, n = cap < DUE_SCAN ? cap : DUE_SCAN, start;
	if (n == cap) {
		/* rotate the start so no slot is always last */
		start = atomic_fetch_add_explicit(&q->recv_count, 1, memory_order_relaxed) % cap;
	} else {
		if (lap.q != q || lap.cursor >= cap) {
			lap.q = q;
			lap.cursor = 0;
			lap.rd = ~rd;
		}
		if (lap.rd != rd) {
			lap.rd = rd;
			lap.next = REDELIVER_NONE;
			lap.seen = 0;
		}
		start = lap.cursor;
	}
	for (uint32_t k = 0; k < n; k++) {
		uint32_t idx = start + k < cap ? start + k : start + k - cap;
		struct shmq_slot *s = slot_at(q, idx);
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		if (w_state(w) != SLOT_DELAYED)
			continue;
		uint64_t lw = atomic_load_explicit(&s->lease, memory_order_acquire);
		uint64_t due = lw_due(lw, w, q->lane_shift, now);
		if (due > now) {
			if (due < next)
				next = due;
			continue;
		}
		unsigned d = w_deliv(w) + 1;
		if (d > 255)
			continue; /* cannot happen: max_deliveries <= 255 dead-letters first */
		uint64_t leased = w_make(w_ticket(w), SLOT_LEASED, q->owner, d);
		/* acquire: pairs with the release CAS that made it DELAYED (nack / reclaim) */
		if (!slot_lease(s, &w, leased))
			continue;
		SHMQ_FAULT("redeliver-after-lease");
		if (n < cap) {
			/* the lap goes on after this slot: the windows stay contiguous */
			lap.cursor = idx + 1;
			lap.seen += k + 1;
			if (next < lap.next)
				lap.next = next;
		}
		deliver(q, idx, leased, m, now);
		count(q, C_RECEIVED, 1);
		count(q, C_REDELIVERED, 1);
		return 0;
	}
	if (n < cap) {
		lap.cursor = (uint32_t)(((uint64_t)start + n) % cap);
		lap.seen += n;
		if (next < lap.next)
			lap.next = next;
		if (lap.seen < cap)
			return -EAGAIN;
		next = lap.next;
		lap.seen = 0;
		lap.next = REDELIVER_NONE;
	}
	/* nothing due: publish when the next one is, unless a nack changed the hint meanwhile */
	atomic_compare_exchange_strong_explicit(&h->redeliver, &rd, rd_make(next, rd & 0xffff),
						memory_order_acq_rel, memory_order_relaxed);
	return -EAGAIN;
}

/* due_window() up to `windows` times: a receive about to sleep looks further than the others.
 * The hint is read here first, as due_window() does: the usual receive makes no call. */
HOT int take_due(shmq_t *q, struct shmq_msg *m, uint64_t now, unsigned windows)
{
	if (rd_due(atomic_load_explicit(&q->hdr->redeliver, memory_order_relaxed)) > now)
		return -EAGAIN;
	for (unsigned k = 0; k < windows; k++)
		if (due_window(q, m, now) == 0)
			return 0;
	return -EAGAIN;
}

/* Per-call receive state: take_head()'s wait bookkeeping, per lane (tickets of two lanes are
 * unrelated numbers). */
struct recv_state {
	uint64_t wt[SHMQ_LANES_MAX], ws[SHMQ_LANES_MAX];
	int force_tail; /* the check before a sleep: read prod_tail whatever the slot says */
};

HOT void recv_state_init(shmq_t *q, struct recv_state *rs)
{
	rs->wt[0] = UINT64_MAX; /* the usual case, without the loop (which gcc makes two memsets) */
	rs->ws[0] = 0;
	for (uint32_t l = 1; l < q->lanes; l++) {
		rs->wt[l] = UINT64_MAX;
		rs->ws[l] = 0;
	}
	rs->force_tail = 0;
}

/* On a key-hash queue a lane gives this handle its next first delivery only once the previous one
 * is settled (or its lease lost), like an SQS FIFO message group: otherwise two threads sharing
 * the handle (`shmq work --threads`) would work on two messages of one key at once. The hold is
 * the lease word we took; it is over as soon as the slot's word is anything else, so an ack, a
 * nack, an expiry or a reclaim ends it with nothing to undo. 1 while a thread is taking. */
#define KH_TAKING 1u
static int kh_enter(shmq_t *q, uint32_t l)
{
	uint64_t tok = atomic_load_explicit(&q->kh[l].token, memory_order_acquire);
	if (tok == KH_TAKING)
		return 0;
	if (tok) {
		/* acquire above: pairs with kh_leave()'s release, so idx belongs to tok */
		uint32_t idx = atomic_load_explicit(&q->kh[l].idx, memory_order_relaxed);
		if (atomic_load_explicit(&slot_at(q, idx)->word, memory_order_relaxed) == tok)
			return 0; /* still held */
	}
	return atomic_compare_exchange_strong_explicit(&q->kh[l].token, &tok, KH_TAKING, memory_order_relaxed,
						       memory_order_relaxed);
}

static void kh_leave(shmq_t *q, uint32_t l, const struct shmq_msg *m)
{
	if (m)
		atomic_store_explicit(&q->kh[l].idx, m->slot, memory_order_relaxed);
	/* release: publishes idx with the token */
	atomic_store_explicit(&q->kh[l].token, m ? m->token : 0, memory_order_release);
}

/* A first delivery this handle leased during a take that was fenced (lanes.c: another consumer
 * took up lanes while the take outlasted a lease): it goes DELAYED, due at once, with the
 * delivery count it had before (the lease word still holds our deadline, not a not-before time
 * of that count: lw_due). From the exact word we leased: if it expired meanwhile, it is back
 * already. */
static void kh_give_back(shmq_t *q, const struct shmq_msg *m)
{
	uint64_t w = m->token;
	unsigned d = w_deliv(w);
	/* release: pairs with take_due()'s acquire, like a nack */
	if (slot_cas(slot_at(q, m->slot), &w, w_make(w_ticket(w), SLOT_DELAYED, q->owner, d ? d - 1 : 0),
		     memory_order_release))
		shmq_note_delayed(q, now_ms(), 1);
}

/* First deliveries from several lanes: the home lanes first (from a rotating one, so none is
 * always last), then, unless the queue is key-hash, any other lane with a backlog (stealing: a
 * lane whose consumer died, lags or never came is drained by the idle ones). On a key-hash queue a
 * lane is served by its assigned consumer only, which keeps each key's first deliveries in one
 * consumer's hands, in order; a dead consumer's lanes are reassigned whole (lanes.c). */
static int take_lanes(shmq_t *q, struct shmq_msg *m, uint64_t now, struct recv_state *rs,
		      enum head_result *why)
{
	int steal = q->dispatch != SHMQ_DISPATCH_KEY_HASH, ret = -EAGAIN;
	/* key-hash: the take is bracketed (shmq_kh_begin/end), and its lanes re-validated */
	uint32_t fence = 0, home = steal ? shmq_home_lanes(q, now) : shmq_kh_begin(q, now, &fence);
	/* the first lane looked at moves on every LANE_RUN receives: taking a run from one lane
	 * keeps the consumer on the lines the producer of that run just wrote */
	uint32_t start = atomic_fetch_add_explicit(&q->lane_cursor, 1, memory_order_relaxed) / LANE_RUN;
	*why = HEAD_EMPTY;
	for (int pass = 0; pass < 1 + steal; pass++) {
		for (uint32_t k = 0; k < q->lanes; k++) {
			uint32_t l = (start + k) % q->lanes;
			/* the backlog test is a relaxed hint; the check before a sleep looks anyway */
			if ((int)!(home >> l & 1) != pass ||
			    (pass && !rs->force_tail && !shmq_lane_backlog(q, l)))
				continue;
			if (!steal && !kh_enter(q, l))
				continue; /* our previous message of this lane is still in hand */
			if (!steal)
				SHMQ_HOOK("kh-before-take");
			enum head_result r = take_head(q, l, m, now, &rs->wt[l], &rs->ws[l], rs->force_tail);
			if (!steal)
				kh_leave(q, l, r == HEAD_TOOK ? m : NULL);
			if (r == HEAD_TOOK) {
				if (pass)
					count(q, C_STOLEN, 1);
				ret = 0;
				goto out;
			}
			/* a corrupt lane is reported only if no other lane has a message */
			if (r > *why)
				*why = r;
		}
	}
out:
	if (!steal && shmq_kh_end(q, fence) && !ret) {
		kh_give_back(q, m); /* counted out while inside: another consumer serves the lane */
		ret = -EAGAIN;
	}
	if (!ret)
		count(q, C_RECEIVED, 1);
	if (ret && *why == HEAD_CORRUPT)
		ret = -EPROTO;
	return ret;
}

HOT int try_recv(shmq_t *q, struct shmq_msg *m, uint64_t now, struct recv_state *rs, enum head_result *why)
{
	if (take_due(q, m, now, rs->force_tail ? IDLE_SLICES : 1) == 0)
		return 0;
	if (q->uses_lanes)
		return take_lanes(q, m, now, rs, why);
	*why = take_head(q, 0, m, now, &rs->wt[0], &rs->ws[0], rs->force_tail);
	if (*why != HEAD_TOOK)
		return *why == HEAD_CORRUPT ? -EPROTO : -EAGAIN;
	count(q, C_RECEIVED, 1);
	return 0;
}

/* A sleeping consumer of lanes wakes within half a lease, so the others keep counting it as
 * active (and do not take its lanes while it waits), and on a key-hash queue within an assignment
 * refresh while another lane has a backlog: that lane's consumer may have died or left, and
 * nobody steals on such a queue. */
static void lanes_wake_by(shmq_t *q, uint64_t *until, uint64_t now_ns)
{
	uint64_t in_ms = q->lease_ms / 2 ? q->lease_ms / 2 : 1;
	if (q->dispatch == SHMQ_DISPATCH_KEY_HASH) {
		uint32_t home = atomic_load_explicit(&q->home, memory_order_relaxed);
		for (uint32_t l = 0; l < q->lanes; l++)
			if (!(home >> l & 1) && shmq_lane_backlog(q, l) && in_ms > ASSIGN_REFRESH_MS)
				in_ms = ASSIGN_REFRESH_MS;
	}
	if (now_ns + in_ms * 1000000ULL < *until)
		*until = now_ns + in_ms * 1000000ULL;
}

/* Lowers *until (a precise-clock deadline in ns; t_ns is the precise now) to 1 ms after the
 * coarse-clock time at_ms (t_ms is the coarse now), if that is sooner. Times from the segment are
 * hints: a far-off one is capped rather than overflowing the conversion. */
static void wake_by(uint64_t *until, uint64_t t_ns, uint64_t t_ms, uint64_t at_ms)
{
	uint64_t in_ms = at_ms > t_ms ? at_ms - t_ms : 0;
	if (in_ms > SHMQ_RECLAIM_INTERVAL_MAX)
		in_ms = SHMQ_RECLAIM_INTERVAL_MAX;
	uint64_t at_ns = t_ns + (in_ms + 1) * 1000000ULL;
	if (at_ns < *until)
		*until = at_ns;
}

/* When a receiver about to sleep at `now` (ns) looks again at the latest: its deadline, the next
 * due redelivery, its lanes' refresh, the next reclaim pass (reclaim_at, ms; UINT64_MAX: none), a
 * held ticket's grace (held), and never later than SLEEP_MAX_MS: a producer killed between its
 * publish and its wake-up, or a consumer woken for a message and killed before it took it, leaves
 * the message to sleepers that nobody wakes (with reclaim passes off, nothing else would). */
static uint64_t sleep_until(shmq_t *q, uint64_t now, uint64_t deadline, int held, uint64_t reclaim_at)
{
	struct shmq_hdr *h = q->hdr;
	uint64_t until =
		deadline < now + SLEEP_MAX_MS * 1000000ULL ? deadline : now + SLEEP_MAX_MS * 1000000ULL;
	/* a ticket held by a producer resolves within a few ms: poll it, do not sleep long */
	if (held && now + ABANDON_GRACE_MS * 1000000ULL < until)
		until = now + ABANDON_GRACE_MS * 1000000ULL;
	uint64_t ms = now_ms();
	uint64_t due = rd_due(atomic_load_explicit(&h->redeliver, memory_order_relaxed));
	if (due != REDELIVER_NONE)
		wake_by(&until, now, ms, due);
	/* wake for a reclaim pass too: it may requeue an expired lease or a dead consumer's
	 * messages. If the last pass saw nothing leased, nothing can expire or be orphaned until
	 * somebody leases again: then a sleeping receiver wakes only every RECLAIM_IDLE_MS, and an
	 * idle queue costs next to no CPU. */
	if (q->uses_lanes)
		lanes_wake_by(q, &until, now);
	if (reclaim_at != UINT64_MAX) {
		uint64_t at = reclaim_at;
		if (!atomic_load_explicit(&h->reclaim_held, memory_order_relaxed) &&
		    at < ms + RECLAIM_IDLE_MS)
			at = ms + RECLAIM_IDLE_MS;
		wake_by(&until, now, ms, at);
	}
	return until;
}

/* 1 if a first delivery at lane l's head may be taken now (or stepped over: the receive moves the
 * head on), 0 if the lane is empty, 2 if a producer holds the head ticket. Loads only: the word
 * first, as lane_head_step() reads it, so a publish that precedes the caller's registration
 * fence is seen in the word itself; the tail only when the word has no message for the head. */
static int head_ready(shmq_t *q, uint32_t l)
{
	struct shmq_lane *ln = &q->hdr->lane[l];
	uint64_t hd = atomic_load_explicit(&ln->cons_head, memory_order_acquire);
	uint64_t w = atomic_load_explicit(&slot_at(q, lane_idx(q, l, hd))->word, memory_order_acquire);
	int64_t d = ticket_diff(hd, w_ticket(w));
	unsigned st = w_state(w);
	if (d == 0 && st == SLOT_READY)
		return 1;
	if (d < 0 || (d == 0 && st != SLOT_FREE && st != SLOT_WRITING))
		return 1; /* delivered or moved on: a receive steps over it */
	if (d == 0 && st == SLOT_WRITING)
		return 2;
	uint64_t tl = atomic_load_explicit(&ln->prod_tail, memory_order_acquire);
	if (lane_corrupt(ln, hd, tl, (uint64_t)q->lane_mask + 1))
		return 1; /* the receive reports it (-EPROTO) */
	return tl != hd ? 2 : 0;
}

int shmq_recv_ready(shmq_t *q, uint64_t *until)
{
	uint64_t now = now_ns(), ms = now_ms();
	/* what a waiting receive does before it sleeps: this waiter's share of a due reclaim pass */
	uint64_t reclaim_at = shmq_reclaim_due(q, ms, now + SLEEP_MAX_MS * 1000000ULL, IDLE_SLICES);
	if (reclaim_at <= ms)
		return 1; /* a pass is open: a receive does the next slice */
	if (rd_due(atomic_load_explicit(&q->hdr->redeliver, memory_order_relaxed)) <= ms)
		return 1;
	/* the lanes a receive takes from: all of them (with lanes, receivers steal), or on a
	 * key-hash queue those assigned to this handle */
	uint32_t lanes = q->dispatch == SHMQ_DISPATCH_KEY_HASH
				 ? atomic_load_explicit(&q->home, memory_order_relaxed)
				 : UINT32_MAX;
	int held = 0;
	for (uint32_t l = 0; l < q->lanes; l++) {
		if (!(lanes >> l & 1))
			continue;
		int r = head_ready(q, l);
		if (r == 1)
			return 1;
		held |= r == 2;
	}
	*until = sleep_until(q, now, UINT64_MAX, held, reclaim_at);
	return 0;
}

/* For a timeout-0 receive that found the head ticket held by a producer (HEAD_WAIT): each call
 * returns at once, so take_head()'s grace (abandon an unused ticket, probe a writer) runs from the
 * first call that found that ticket held, remembered in the handle. Returns 1 if this call's wait
 * on some lane started earlier than it thought (then look again: the grace may be over). */
static int zero_wait_carry(shmq_t *q, struct recv_state *rs)
{
	int again = 0;
	for (uint32_t l = 0; l < q->lanes; l++) {
		uint64_t t = rs->wt[l];
		if (t == UINT64_MAX)
			continue;
		/* relaxed: a hint. Threads sharing the handle may tear the pair, which only moves a
		 * grace earlier (a live producer then takes another ticket) or later */
		if (atomic_load_explicit(&q->zw[l].ticket, memory_order_relaxed) == t + 1) {
			uint64_t since = atomic_load_explicit(&q->zw[l].since, memory_order_relaxed);
			if (since < rs->ws[l]) {
				rs->ws[l] = since;
				again = 1;
			}
		} else {
			atomic_store_explicit(&q->zw[l].since, rs->ws[l], memory_order_relaxed);
			atomic_store_explicit(&q->zw[l].ticket, t + 1, memory_order_relaxed);
		}
	}
	return again;
}

/* recv_one() for a call that read the coarse clock already (now_c; 0: not yet). */
HOT int recv_one(shmq_t *q, struct shmq_msg *m, int timeout_ms, uint64_t now_c)
{
	struct shmq_hdr *h = q->hdr;
	uint64_t deadline = 0;
	struct recv_state rs;
	recv_state_init(q, &rs);
	enum head_result why;
	/* one coarse clock read per call for lease deadlines and the reclaim check; re-read only
	 * once the call has to wait */
	if (!now_c)
		now_c = now_ms();
	uint64_t reclaim_at = shmq_reclaim_due(q, now_c, 0, IDLE_SLICES);
	shmq_consumer_poll(q, now_c);
	for (unsigned spins = 0;; spins++) {
		uint32_t seen = atomic_load_explicit(&h->data_seq, memory_order_acquire);
		if (spins > SPIN_LIMIT) {
			/* back from a sleep: still polling */
			now_c = now_ms();
			shmq_consumer_poll(q, now_c);
		} else if (spins && spins % CLOCK_EVERY == 0) {
			now_c = now_ms();
		}
		int r = try_recv(q, m, now_c, &rs, &why);
		if (r != -EAGAIN)
			return r;
		if (timeout_ms == 0) {
			/* never waits, not even for a slot being written: a ticket a producer holds
			 * is looked at again by the next call, its grace counted from the first */
			int again = why == HEAD_WAIT && zero_wait_carry(q, &rs);
			if (again && (r = try_recv(q, m, now_c, &rs, &why)) != -EAGAIN)
				return r;
			if (again && why == HEAD_WAIT)
				zero_wait_carry(q, &rs); /* where the second look left off */
			empty_pause();
			return -EAGAIN;
		}
		if (spins < SPIN_LIMIT) {
			/* the clock every CLOCK_EVERY polls, never on each: a poll is a few loads,
			 * a precise clock read several times that. A -1 wait has no deadline. */
			if (timeout_ms > 0 && spins % CLOCK_EVERY == 0) {
				if (spins == 0)
					deadline = shmq_deadline(timeout_ms);
				else if (now_ns() >= deadline)
					return -EAGAIN;
			}
			cpu_relax();
			continue;
		}
		if (!deadline)
			deadline = shmq_deadline(timeout_ms);
		uint64_t now = now_ns();
		if (now >= deadline)
			return -EAGAIN;
		/* sleep: register, re-check, then wait for a publish, the next due redelivery or
		 * the deadline. The registration pairs with shmq_notify(_sc) (wait.c); `seen` was
		 * read before it, at the top of this round */
		count(q, C_CONS_WAITS, 1);
		if (now_c >= reclaim_at)
			reclaim_at = shmq_reclaim_due(q, now_c, deadline, IDLE_SLICES);
		shmq_sleep_register(&h->data_sleepers);
		rs.force_tail = 1;
		r = try_recv(q, m, now_c, &rs, &why);
		rs.force_tail = 0;
		if (r == -EAGAIN)
			shmq_futex_wait(&h->data_seq, seen,
					sleep_until(q, now, deadline, why == HEAD_WAIT, reclaim_at));
		if (r != -EAGAIN)
			return r;
	}
}

/* For a batch receive: leases the run of READY first deliveries at cons_head, up to n, and moves
 * cons_head past them with one CAS instead of one per message. Stops at the first slot that is not
 * READY for its ticket (take_head() knows what to do about that one). Killed before the head CAS:
 * the leases stand, and receivers step over LEASED slots at the head as they always do. */
static unsigned take_run_head(shmq_t *q, uint32_t l, struct shmq_msg *m, unsigned n, uint64_t now)
{
	struct shmq_lane *h = &q->hdr->lane[l];
	uint64_t hd = atomic_load_explicit(&h->cons_head, memory_order_acquire);
	/* As in take_run(): start the transfers of the run's lines together (with a write hint, for
	 * the lease CAS), before the CASes wait on them one by one. Only up to prod_tail: a slot
	 * past it has no ticket yet. (One below it may still be being written; measured, the
	 * prefetch pays anyway.) */
	uint64_t tl = atomic_load_explicit(&h->prod_tail, memory_order_relaxed);
	for (unsigned k = 0; k < n && hd + k < tl; k++) {
		struct shmq_slot *ps = slot_at(q, lane_idx(q, l, hd + k));
		__builtin_prefetch(ps, 1, 3);
		__builtin_prefetch(slot_payload(ps), 0, 3);
	}
	unsigned k = 0;
	for (; k < n; k++) {
		uint32_t idx = lane_idx(q, l, hd + k);
		uint64_t w = w_make(hd + k, SLOT_READY, 0, 0);
		uint64_t leased = w_make(hd + k, SLOT_LEASED, q->owner, 1);
		/* acquire: pairs with publish()'s release, making the payload visible */
		if (!slot_lease(slot_at(q, idx), &w, leased))
			break;
		deliver(q, idx, leased, &m[k], now);
	}
	if (k) {
		SHMQ_FAULT("recv-batch-before-head");
		/* release, as in take_head; failure is fine: another receiver stepped over our leases */
		atomic_compare_exchange_strong_explicit(&h->cons_head, &hd, hd + k, memory_order_release,
							memory_order_relaxed);
	}
	return k;
}

/* The remaining part of timeout_ms after a wait that began at start_ns. */
static int timeout_left(int timeout_ms, uint64_t start_ns)
{
	if (timeout_ms <= 0)
		return timeout_ms;
	uint64_t spent = (now_ns() - start_ns) / 1000000ULL;
	return spent >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int)spent;
}

/* The first message of a receive that wants up to n: without a prefetch limit, recv_one() as it
 * is (*units = 0: nothing counted); with one, first up to n units of the allowance (*units, to be
 * settled by shmq_prefetch_done() once the caller knows how many it used), waited for within the same
 * timeout. */
static int recv_first(shmq_t *q, struct shmq_msg *m, unsigned n, int timeout_ms, unsigned *units,
		      uint64_t now_c)
{
	*units = 0;
	if (!atomic_load_explicit(&q->prefetch, memory_order_relaxed)) {
		SHMQ_HOOK("recv-unlimited");
		return recv_one(q, m, timeout_ms, now_c);
	}
	uint64_t start = now_ns();
	int r = shmq_prefetch_take(q, n, timeout_ms, units);
	if (r)
		return r;
	SHMQ_HOOK("recv-units-taken");
	r = recv_one(q, m, timeout_left(timeout_ms, start), 0);
	if (r) {
		shmq_prefetch_done(q, *units, 0);
		*units = 0;
	}
	return r;
}

/* The fast path of a receive: no lanes to choose from, no prefetch limit (the caller checked),
 * no redelivery and no reclaim slice due, the message at the head READY: the head step, the
 * lease, nothing more. -EAGAIN sends the caller to the general path, which looks again. */
#define RECV_GENERAL 1 /* recv_fast(): the general path decides */

HOT int recv_fast(shmq_t *q, struct shmq_msg *m, int timeout_ms, uint64_t now)
{
	struct lane_at a;
	if (!shmq_reclaim_quiet(q, now) ||
	    rd_due(atomic_load_explicit(&q->hdr->redeliver, memory_order_relaxed)) <= now)
		return RECV_GENERAL;
	enum lane_head r = lane_head_step(&q->view, 0, &a);
	if (r == LH_TOOK) {
		shmq_consumer_mark(q, now);
		deliver(q, a.idx, a.w, m, now);
		count(q, C_RECEIVED, 1);
		return 0;
	}
	/* A poll (timeout 0) of an empty queue ends here, as the general path would end it (see
	 * take_head), unless a ticket held by a producer carries over from an earlier call. */
	if (r == LH_UNCLAIMED && timeout_ms == 0 &&
	    atomic_load_explicit(&q->zw[0].ticket, memory_order_relaxed) != a.hd + 1 && idle_poll(&a, 0, 0)) {
		idle_polls[0]++;
		shmq_consumer_mark(q, now);
		empty_pause();
		return -EAGAIN;
	}
	return RECV_GENERAL;
}

int shmq_recv(shmq_t *q, struct shmq_msg *m, int timeout_ms)
{
	uint64_t now_c = 0;
	/* loads of the handle decide; the general path checks it all again */
	if (__builtin_expect(q && m && !q->uses_lanes && !q->foreign &&
				     !atomic_load_explicit(&q->prefetch, memory_order_relaxed),
			     1)) {
		now_c = now_ms();
		int r = recv_fast(q, m, timeout_ms, now_c);
		if (r == 0)
			shmq_prefetch_unlimited_done(q, 1);
		if (r != RECV_GENERAL)
			return r;
	}
	if (foreign(q))
		return -ECHILD;
	if (!q || !m)
		return -EINVAL;
	unsigned units;
	int r = recv_first(q, m, 1, timeout_ms, &units, now_c);
	if (units)
		shmq_prefetch_done(q, units, 1);
	else if (!r)
		shmq_prefetch_unlimited_done(q, 1);
	return r;
}

int shmq_recv_batch(shmq_t *q, struct shmq_msg *m, unsigned n, int timeout_ms)
{
	if (foreign(q))
		return -ECHILD;
	if (!q || !m || n == 0)
		return -EINVAL;
	unsigned units;
	int r = recv_first(q, &m[0], n, timeout_ms, &units, 0);
	if (r)
		return r;
	unsigned got = units ? units : n, i = 1;
	struct recv_state rs;
	recv_state_init(q, &rs);
	uint64_t now = now_ms();
	/* the rest from the first message's lane, then the other home lanes (never another
	 * consumer's lane here: a batch takes only what is at hand) */
	uint32_t home = q->uses_lanes ? atomic_load_explicit(&q->home, memory_order_relaxed) : 1;
	uint32_t first = idx_lane(q, m[0].slot);
	if (q->dispatch != SHMQ_DISPATCH_KEY_HASH)
		home |= 1u << first;
	else
		home = 0; /* one message in hand per lane (see kh_enter): the first is the batch */
	for (uint32_t k = 0; k < q->lanes && i < got; k++) {
		uint32_t l = (first + k) % q->lanes;
		if (!(home >> l & 1))
			continue;
		while (i < got) {
			unsigned t = take_run_head(q, l, m + i, got - i, now);
			if (!t) {
				if (take_head(q, l, &m[i], now, &rs.wt[l], &rs.ws[l], 0) != HEAD_TOOK)
					break;
				t = 1;
			}
			i += t;
		}
	}
	count(q, C_RECEIVED, i - 1); /* recv_one counted the first */
	if (units)
		shmq_prefetch_done(q, units, i);
	else
		shmq_prefetch_unlimited_done(q, i);
	return (int)i;
}

/* ---------------------------------------------------------------------------------------------
 * Settling a delivery
 */

/* shmq_prefetch_give_back() for the settle paths: a call only when a prefetch limit is set */
HOT void settled(shmq_t *q, unsigned n)
{
	if (atomic_load_explicit(&q->prefetch, memory_order_relaxed))
		shmq_prefetch_give_back(q, n);
}

static struct shmq_slot *msg_slot(shmq_t *q, const struct shmq_msg *m)
{
	if (m->slot >= q->capacity || w_state(m->token) != SLOT_LEASED ||
	    (w_ticket(m->token) & q->lane_mask) != (m->slot & q->lane_mask))
		return NULL;
	return slot_at(q, m->slot);
}

static int stale(shmq_t *q)
{
	count(q, C_STALE, 1);
	return -ESTALE;
}

int shmq_ack(shmq_t *q, struct shmq_msg *m)
{
	if (foreign(q))
		return -ECHILD;
	struct shmq_slot *s;
	if (!q || !m || !(s = msg_slot(q, m)))
		return -EINVAL;
	/* our reads of the payload are done before a producer may overwrite it (see lane_ack) */
	if (!lane_ack(&q->view, s, m->token))
		return stale(q);
	count(q, C_ACKED, 1);
	settled(q, 1);
	shmq_notify_sc(q, &q->hdr->space_seq, &q->hdr->space_sleepers, 1);
	return 0;
}

int shmq_ack_batch(shmq_t *q, struct shmq_msg *m, unsigned n)
{
	if (foreign(q))
		return -ECHILD;
	if (!q || (!m && n))
		return -EINVAL;
	unsigned acked = 0;
	for (unsigned i = 0; i < n; i++) {
		struct shmq_slot *s = msg_slot(q, &m[i]);
		if (!s)
			continue;
		/* as in shmq_ack */
		if (lane_ack(&q->view, s, m[i].token))
			acked++;
		else
			count(q, C_STALE, 1);
	}
	if (acked) {
		count(q, C_ACKED, acked);
		settled(q, acked);
		shmq_notify_sc(q, &q->hdr->space_seq, &q->hdr->space_sleepers, acked);
	}
	return (int)acked;
}

/* Moves the delivery whose slot word is w to the dead-letter state `dead` (counted as c too). Two
 * CASes, like a requeue: the dead time goes in the lease word, from this delivery's deadline (so
 * it fails, and writes nothing, once a reclaim pass or a settle by another thread took it), then
 * the word. Killed between the two, a reclaim pass finishes the job a lease later. */
static int dead_letter(shmq_t *q, uint32_t idx, uint64_t w, unsigned dead, enum shmq_counter c)
{
	struct shmq_slot *s = slot_at(q, idx);
	SHMQ_HOOK("dead-letter");
	if (slot_set_lease(s, lease_tag(q, w), lw_make(now_ms(), LW_NOT_BEFORE, lease_tag(q, w))))
		return stale(q);
	/* release: publishes the dead time with the state; pairs with the DLQ's acquire load */
	if (!slot_cas(s, &w, w_make(w_ticket(w), dead, q->owner, w_deliv(w)), memory_order_release))
		return stale(q);
	count(q, c, 1);
	count(q, C_DEAD_LETTERED, 1);
	settled(q, 1);
	SHMQ_FAULT("dead-letter-before-count");
	shmq_dlq_added(q, idx_lane(q, idx), 1);
	shmq_dlq_enforce(q, 0);
	return 0;
}

int shmq_nack(shmq_t *q, struct shmq_msg *m, int delay_ms)
{
	if (foreign(q))
		return -ECHILD;
	struct shmq_slot *s;
	if (!q || !m || !(s = msg_slot(q, m)))
		return -EINVAL;
	uint64_t w = m->token;
	unsigned d = w_deliv(w);
	if (atomic_load_explicit(&s->word, memory_order_relaxed) != w)
		return stale(q);
	if (d >= q->max_deliveries)
		return dead_letter(q, m->slot, w, SLOT_DEAD_MAX, C_NACKED);
	uint64_t delay = delay_ms < 0 ? shmq_backoff_ms(q, d) : (uint64_t)delay_ms;
	uint64_t due = now_ms() + delay;
	/* the not-before time goes in first, tagged with this delivery; the release CAS on the word
	 * publishes it. A CAS, because a reclaim pass that found our deadline expired CASes it too:
	 * whoever wins the lease word moves the word. */
	if (slot_set_lease(s, lease_tag(q, w), lw_make(due, LW_NOT_BEFORE, lease_tag(q, w))))
		return stale(q);
	SHMQ_FAULT("nack-before-cas");
	if (!slot_cas(s, &w, w_make(w_ticket(w), SLOT_DELAYED, q->owner, d), memory_order_release))
		return stale(q);
	count(q, C_NACKED, 1);
	count(q, C_RETRIED, 1);
	settled(q, 1);
	shmq_note_delayed(q, due, 1);
	return 0;
}

int shmq_reject(shmq_t *q, struct shmq_msg *m)
{
	if (foreign(q))
		return -ECHILD;
	struct shmq_slot *s;
	if (!q || !m || !(s = msg_slot(q, m)))
		return -EINVAL;
	uint64_t w = m->token;
	if (atomic_load_explicit(&s->word, memory_order_relaxed) != w)
		return stale(q);
	return dead_letter(q, m->slot, w, SLOT_DEAD_REJECTED, C_REJECTED);
}

int shmq_extend(shmq_t *q, struct shmq_msg *m, int lease_ms)
{
	if (foreign(q))
		return -ECHILD;
	struct shmq_slot *s;
	if (!q || !m || !(s = msg_slot(q, m)))
		return -EINVAL;
	uint64_t ms = lease_ms > 0 ? (uint64_t)lease_ms : q->lease_ms;
	if (atomic_load_explicit(&s->word, memory_order_acquire) != m->token)
		return stale(q);
	if (slot_set_lease(s, lease_tag(q, m->token),
			   lw_make(now_ms() + ms, LW_DEADLINE, lease_tag(q, m->token))))
		return stale(q);
	/* a reclaim that completed before our CAS left no deadline of this delivery to replace, so
	 * it failed above; this re-check catches an ack/nack of the same delivery by another thread */
	if (atomic_load_explicit(&s->word, memory_order_acquire) != m->token)
		return stale(q);
	count(q, C_EXTENDED, 1);
	touch(q);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * The ring core (src/slot.h, src/lane.h, src/lane.c) on malloc'd memory: no segment, no /dev/shm,
 * no descriptor; liveness is a stub alive() over a table the test fills. Crash states (a dead
 * writer's WRITING slot, a dead holder's lease, a requeue or redrive cut between its two CASes)
 * are written straight into the buffer, as a crashed process would have left them.
 *
 * `make test` runs these under Criterion; `make tsan` builds this file with TQ_PLAIN into a program
 * of its own (main at the bottom) that runs the threaded test under ThreadSanitizer.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "lane.h"

#ifndef TQ_PLAIN
TestSuite(lane);
#endif

#define PAYLOAD 16u
#define MAX_OWNER 16u

struct rig {
	struct shmq_lane_view v;
	struct shmq_lane *lanes;
	unsigned char *slots;
	_Atomic unsigned char dead[MAX_OWNER + 1]; /* dead[owner]: 1 if that participant is gone */
};

static int stub_alive(void *ctx, unsigned owner)
{
	struct rig *r = ctx;
	return owner <= MAX_OWNER && !atomic_load_explicit(&r->dead[owner], memory_order_relaxed);
}

/* lanes x lane_cap slots of PAYLOAD bytes each, formatted as a fresh queue; we are owner 1 */
static void rig_init(struct rig *r, uint32_t lanes, uint32_t lane_cap)
{
	memset(r, 0, sizeof(*r));
	uint32_t slot_size = SHMQ_SLOT_HEADER + PAYLOAD;
	r->lanes = aligned_alloc(SHMQ_CACHELINE, sizeof(struct shmq_lane) * lanes);
	r->slots = aligned_alloc(SHMQ_CACHELINE, (size_t)slot_size * lanes * lane_cap);
	TQ_REQUIRE(r->lanes && r->slots, "out of memory");
	memset(r->lanes, 0, sizeof(struct shmq_lane) * lanes);
	memset(r->slots, 0, (size_t)slot_size * lanes * lane_cap);
	r->v = (struct shmq_lane_view){
		.slots = r->slots,
		.lane = r->lanes,
		.slot_size = slot_size,
		.lanes = lanes,
		.lane_mask = lane_cap - 1,
		.lane_shift = (uint32_t)__builtin_ctz(lane_cap),
		.owner = 1,
		.max_owner = MAX_OWNER,
		.alive = stub_alive,
		.ctx = r,
	};
	lane_format(&r->v);
}

static void rig_free(struct rig *r)
{
	free(r->lanes);
	free(r->slots);
}

/* The view as participant `owner` sees it (threads of the MPMC test are different owners). */
static struct shmq_lane_view as(const struct rig *r, unsigned owner)
{
	struct shmq_lane_view v = r->v;
	v.owner = owner;
	return v;
}

static struct shmq_slot *slot(const struct rig *r, uint32_t l, uint64_t t)
{
	return lv_slot(&r->v, lv_idx(&r->v, l, t));
}

static uint64_t word(const struct rig *r, uint32_t l, uint64_t t)
{
	return atomic_load_explicit(&slot(r, l, t)->word, memory_order_acquire);
}

/* A send as the core sees it: a ticket while the window has room, the claim of its slot (a slot
 * an older message still holds is abandoned, and the next ticket tried), the payload, the publish.
 * Returns the ticket, or -1 if the window stayed full. */
static int64_t produce(const struct shmq_lane_view *v, uint32_t l, uint32_t val)
{
	for (unsigned tries = 0; tries < 4 * lv_lap(v) + 4; tries++) {
		uint64_t hd = atomic_load_explicit(&v->lane[l].cons_head, memory_order_acquire);
		uint64_t tl = atomic_load_explicit(&v->lane[l].prod_tail, memory_order_acquire);
		if (tl - hd >= lv_lap(v))
			return -1;
		uint64_t t = lane_take_ticket(v, l);
		struct shmq_slot *s;
		uint64_t w = w_make(t, SLOT_FREE, 0, 0);
		enum slot_claim_result c = lane_claim(v, l, t, &s, &w);
		if (c == CLAIM_HELD)
			slot_skip_past(s, t);
		if (c != CLAIM_OK)
			continue;
		memcpy(slot_payload(s), &val, sizeof(val));
		s->len = sizeof(val);
		s->id = t;
		atomic_store_explicit(&s->lease, 0, memory_order_relaxed);
		TQ_REQUIRE(slot_publish(s, t, v->owner) == 0, "publish of a claimed slot failed");
		return (int64_t)t;
	}
	return -1;
}

/* A first delivery as the core sees it: 1 with the leased slot in *a, 0 if the lane is empty or
 * the message at the head is still being written, -1 if the lane is corrupt. */
static int take(const struct shmq_lane_view *v, uint32_t l, struct lane_at *a)
{
	for (unsigned steps = 0; steps < 4 * lv_lap(v) + 4; steps++) {
		switch (lane_head_step(v, l, a)) {
		case LH_TOOK:
			return 1;
		case LH_PASSED:
		case LH_AGAIN:
			continue;
		case LH_CORRUPT:
			return -1;
		case LH_WRITING:
			return 0;
		case LH_UNCLAIMED:
			return lane_ticket_held(v, l, a->hd) < 0 ? -1 : 0;
		}
	}
	return 0;
}

static uint32_t payload_of(const struct lane_at *a)
{
	uint32_t val;
	memcpy(&val, slot_payload(a->s), sizeof(val));
	return val;
}

/* ---- FIFO, wrap, abandon ---------------------------------------------------------------------- */

static void fifo_across_many_wraps(void)
{
	struct rig r;
	rig_init(&r, 1, 8);
	uint32_t next_out = 0, next_in = 0;
	struct lane_at a;
	/* 5 in, 5 out, 40 times: every slot is reused 25 times, at a different phase each lap */
	for (int round = 0; round < 40; round++) {
		for (int k = 0; k < 5; k++)
			TQ_REQUIRE(produce(&r.v, 0, next_in++) >= 0, "the window has room");
		for (int k = 0; k < 5; k++) {
			TQ_REQUIRE(take(&r.v, 0, &a) == 1, "a message is there");
			TQ_EXPECT(payload_of(&a) == next_out, "FIFO: got %u, expected %u", payload_of(&a),
				  next_out);
			next_out++;
			TQ_EXPECT(lane_ack(&r.v, a.s, a.w), "the ack of our own lease succeeds");
		}
	}
	TQ_EXPECT(take(&r.v, 0, &a) == 0, "the lane is empty at the end");
	TQ_EXPECT(atomic_load(&r.lanes[0].cons_head) == 200 && atomic_load(&r.lanes[0].prod_tail) == 200,
		  "head and tail both at 200");
	rig_free(&r);
}

static void a_full_lane_refuses_a_fifth_ticket(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	for (uint32_t i = 0; i < 4; i++)
		TQ_REQUIRE(produce(&r.v, 0, i) >= 0, "room for 4");
	TQ_EXPECT(produce(&r.v, 0, 4) == -1, "no fifth message in a lane of 4");
	rig_free(&r);
}

static void a_claim_on_a_held_slot_abandons_the_ticket_and_consumers_step_over_it(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_at a, held;
	for (uint32_t i = 0; i < 4; i++)
		TQ_REQUIRE(produce(&r.v, 0, i) >= 0, "room for 4");
	TQ_REQUIRE(take(&r.v, 0, &held) == 1 && payload_of(&held) == 0, "ticket 0 leased, kept");
	for (uint32_t i = 1; i < 4; i++) {
		TQ_REQUIRE(take(&r.v, 0, &a) == 1 && payload_of(&a) == i, "ticket %u", i);
		TQ_REQUIRE(lane_ack(&r.v, a.s, a.w), "ack %u", i);
	}
	/* ticket 4 lives in slot 0, still leased by ticket 0's delivery */
	uint64_t t = lane_take_ticket(&r.v, 0);
	struct shmq_slot *s;
	uint64_t w = w_make(t, SLOT_FREE, 0, 0);
	TQ_REQUIRE(t == 4, "ticket 4");
	TQ_EXPECT(lane_claim(&r.v, 0, t, &s, &w) == CLAIM_HELD, "slot 0 is held by an older message");
	TQ_EXPECT(w == held.w, "the claim reports the holder's word");
	slot_skip_past(s, t);
	TQ_EXPECT(word(&r, 0, 0) == held.w, "abandoning the ticket leaves the lease alone");
	TQ_REQUIRE(produce(&r.v, 0, 5) == 5, "the next ticket (5) goes to slot 1");
	TQ_REQUIRE(take(&r.v, 0, &a) == 1, "the consumer steps over the abandoned ticket 4");
	TQ_EXPECT(payload_of(&a) == 5 && a.hd == 5, "and takes ticket 5");
	TQ_EXPECT(lane_ack(&r.v, held.s, held.w), "the old lease is still ours to ack");
	rig_free(&r);
}

static void a_ticket_taken_and_never_claimed_is_abandoned_and_its_late_claim_fails(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	uint64_t t = lane_take_ticket(&r.v, 0); /* a producer that stalls (or dies) right here */
	struct lane_at a;
	TQ_REQUIRE(lane_head_step(&r.v, 0, &a) == LH_UNCLAIMED, "the head's slot is not claimed");
	TQ_EXPECT(lane_ticket_held(&r.v, 0, a.hd) == 1, "but its ticket is taken");
	lane_abandon(&r.v, &a); /* the consumer's grace ran out */
	TQ_EXPECT(word(&r, 0, 0) == w_make(4, SLOT_FREE, 0, 0), "the slot moved on a lap");
	struct shmq_slot *s;
	uint64_t w = w_make(t, SLOT_FREE, 0, 0);
	TQ_EXPECT(lane_claim(&r.v, 0, t, &s, &w) == CLAIM_LOST, "the late claim finds its ticket lost");
	TQ_EXPECT(take(&r.v, 0, &a) == 0, "the lane reads empty");
	TQ_EXPECT(atomic_load(&r.lanes[0].cons_head) == 1, "past the abandoned ticket");
	TQ_REQUIRE(produce(&r.v, 0, 42) == 1, "the next send takes ticket 1");
	TQ_EXPECT(take(&r.v, 0, &a) == 1 && payload_of(&a) == 42, "and is delivered");
	rig_free(&r);
}

static void a_claim_racing_a_consumers_skip_gives_the_ticket_up(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	uint64_t t = lane_take_ticket(&r.v, 0);
	/* the consumer's half of the Dekker pair came first: skip stored, the word still FREE */
	slot_skip_past(slot(&r, 0, 0), t);
	struct shmq_slot *s;
	uint64_t w = w_make(t, SLOT_FREE, 0, 0);
	TQ_EXPECT(lane_claim(&r.v, 0, t, &s, &w) == CLAIM_LOST, "the claim sees the skip and gives up");
	TQ_EXPECT(word(&r, 0, 0) == w_make(4, SLOT_FREE, 0, 0), "leaving the slot free a lap on");
	rig_free(&r);
}

/* ---- crash states built in the buffer --------------------------------------------------------- */

static void a_dead_writers_slot_is_retired_and_its_late_publish_fails(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	/* producer 7 took ticket 0, claimed its slot and died mid-write */
	atomic_store(&r.lanes[0].prod_tail, 1);
	atomic_store(&slot(&r, 0, 0)->word, w_make(0, SLOT_WRITING, 7, 0));
	struct lane_at a;
	TQ_REQUIRE(lane_head_step(&r.v, 0, &a) == LH_WRITING, "the head's message is being written");
	TQ_EXPECT(w_owner(a.w) == 7, "by participant 7");
	TQ_EXPECT(lane_retire_writer(&r.v, &a) == 0, "a live writer is left alone");
	TQ_EXPECT(word(&r, 0, 0) == w_make(0, SLOT_WRITING, 7, 0), "its slot unchanged");
	atomic_store(&r.dead[7], 1);
	TQ_EXPECT(lane_retire_writer(&r.v, &a) == 1, "a dead writer's slot is retired");
	TQ_EXPECT(word(&r, 0, 0) == w_make(4, SLOT_FREE, 0, 0), "FREE for the next lap");
	TQ_EXPECT(slot_publish(slot(&r, 0, 0), 0, 7) == -1, "a writer thought dead cannot publish late");
	TQ_REQUIRE(produce(&r.v, 0, 9) == 1, "the next send takes ticket 1");
	TQ_EXPECT(take(&r.v, 0, &a) == 1 && payload_of(&a) == 9, "consumers move past the retired ticket");
	rig_free(&r);
}

static uint64_t fixed_backoff(void *ctx, unsigned deliveries)
{
	(void)ctx;
	return 1000u * deliveries;
}

/* A reclaim pass's repair of slot 0 at time now (lease 500 ms, 3 deliveries at most, backoff
 * 1 s per delivery), with a fresh cache of who is alive. */
static enum lane_repaired repair(const struct rig *r, uint64_t now, struct lane_seen *seen)
{
	uint8_t alive[MAX_OWNER] = {0};
	struct lane_repair rp = {.now_ms = now,
				 .lease_ms = 500,
				 .max_deliveries = 3,
				 .backoff_ms = fixed_backoff,
				 .alive = alive};
	return lane_repair_slot(&r->v, &rp, 0, seen);
}

/* slot 0 as a holder left it: LEASED by `owner`, delivery `deliv`, lease word lw */
static struct shmq_slot *leased_slot(struct rig *r, unsigned owner, unsigned deliv, uint64_t lw)
{
	struct shmq_slot *s = slot(r, 0, 0);
	atomic_store(&s->word, w_make(0, SLOT_LEASED, owner, deliv));
	atomic_store(&s->lease, lw);
	return s;
}

static void a_dead_holders_lease_is_requeued_with_backoff(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_seen seen;
	struct shmq_slot *s = leased_slot(&r, 3, 1, lw_make(10000, LW_DEADLINE, 1));
	TQ_EXPECT(repair(&r, 100, &seen) == LR_NONE, "a live holder within its lease keeps it");
	TQ_EXPECT(seen.held == 1, "the slot counts as held");
	atomic_store(&r.dead[3], 1);
	TQ_EXPECT(repair(&r, 100, &seen) == LR_DEAD_OWNER, "a dead holder's lease is requeued");
	TQ_EXPECT(atomic_load(&s->word) == w_make(0, SLOT_DELAYED, 3, 1), "DELAYED, delivery count kept");
	TQ_EXPECT(atomic_load(&s->lease) == lw_make(1100, LW_NOT_BEFORE, 1), "due after the backoff");
	TQ_EXPECT(seen.due == 1100, "the pass learns when it is due");
	rig_free(&r);
}

static void an_expired_lease_is_requeued_and_the_last_delivery_dead_lettered(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_seen seen;
	struct shmq_slot *s = leased_slot(&r, 2, 1, lw_make(100, LW_DEADLINE, 1));
	TQ_EXPECT(repair(&r, 99, &seen) == LR_NONE, "not expired before its deadline");
	TQ_EXPECT(repair(&r, 100, &seen) == LR_EXPIRED, "expired at its deadline");
	TQ_EXPECT(w_state(atomic_load(&s->word)) == SLOT_DELAYED, "requeued");
	s = leased_slot(&r, 2, 3, lw_make(100, LW_DEADLINE, 3));
	TQ_EXPECT(repair(&r, 100, &seen) == LR_DEAD_LETTER, "the third delivery is the last");
	TQ_EXPECT(atomic_load(&s->word) == w_make(0, SLOT_DEAD_EXPIRED, 2, 3), "dead-lettered as expired");
	TQ_EXPECT(atomic_load(&s->lease) == lw_make(100, LW_NOT_BEFORE, 3),
		  "its dead time in the lease word");
	TQ_EXPECT(seen.due == UINT64_MAX, "a dead letter is never due");
	TQ_EXPECT(seen.dead == 1, "the pass counts the letter it made");
	rig_free(&r);
}

/* The lease word's tag is the delivery count and the lap of the slot's ticket: a word left by the
 * message the slot held one lap earlier, at the same delivery count, is not this delivery's. */
static void a_lease_word_of_the_slots_previous_lap_is_not_this_deliverys(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_seen seen;
	struct shmq_slot *s = slot(&r, 0, 4);
	uint64_t old = w_make(0, SLOT_LEASED, 2, 1), w = w_make(4, SLOT_LEASED, 2, 1);
	TQ_REQUIRE(lw_tag_of(old, r.v.lane_shift) != lw_tag_of(w, r.v.lane_shift), "the laps differ");
	/* ticket 4 (lap 1) leased by live owner 2, before its deadline store: the expired deadline
	 * of ticket 0's delivery 1 is still in the lease word */
	atomic_store(&s->word, w);
	atomic_store(&s->lease, lw_make(100, LW_DEADLINE, lw_tag_of(old, r.v.lane_shift)));
	TQ_EXPECT(repair(&r, 1000, &seen) == LR_NONE, "the old lap's deadline does not expire the new lease");
	TQ_EXPECT(atomic_load(&s->word) == w, "the new delivery keeps its slot");
	/* a settle of the old lap's delivery finds no deadline of its own and writes nothing */
	atomic_store(&s->lease, lw_make(2000, LW_DEADLINE, lw_tag_of(w, r.v.lane_shift)));
	TQ_EXPECT(slot_set_lease(s, lw_tag_of(old, r.v.lane_shift), lw_make(50, LW_NOT_BEFORE, 1)) == -1,
		  "a stale settle fails on the new lap's deadline");
	TQ_EXPECT(atomic_load(&s->lease) == lw_make(2000, LW_DEADLINE, lw_tag_of(w, r.v.lane_shift)),
		  "the new holder's deadline is left alone");
	TQ_EXPECT(slot_set_lease(s, lw_tag_of(w, r.v.lane_shift),
				 lw_make(3000, LW_DEADLINE, lw_tag_of(w, r.v.lane_shift))) == 0,
		  "its holder can extend it");
	TQ_EXPECT(repair(&r, 2500, &seen) == LR_NONE, "within the extended lease it is kept");
	TQ_EXPECT(repair(&r, 3000, &seen) == LR_EXPIRED, "its own deadline expires it");
	TQ_EXPECT(atomic_load(&s->lease) == lw_make(4000, LW_NOT_BEFORE, lw_tag_of(w, r.v.lane_shift)),
		  "requeued with its own tag");
	rig_free(&r);
}

static void a_holder_that_died_before_its_deadline_store_loses_the_lease_only_to_death(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_seen seen;
	/* leased (delivery 1), killed before the deadline store: the lease word is the producer's 0 */
	struct shmq_slot *s = leased_slot(&r, 5, 1, 0);
	TQ_EXPECT(repair(&r, 1000000, &seen) == LR_NONE, "no deadline yet: a live holder keeps it");
	atomic_store(&r.dead[5], 1);
	TQ_EXPECT(repair(&r, 1000000, &seen) == LR_DEAD_OWNER, "a dead one loses it");
	TQ_EXPECT(w_state(atomic_load(&s->word)) == SLOT_DELAYED, "requeued");
	rig_free(&r);
}

static void a_requeue_killed_between_its_lease_and_word_is_finished_a_lease_later(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_seen seen;
	/* a nack by live holder 2 wrote its not-before time (100) and died before the word CAS */
	struct shmq_slot *s = leased_slot(&r, 2, 1, lw_make(100, LW_NOT_BEFORE, 1));
	TQ_EXPECT(repair(&r, 599, &seen) == LR_NONE, "left to its owner within a lease");
	TQ_EXPECT(repair(&r, 600, &seen) == LR_EXPIRED, "finished a lease later");
	TQ_EXPECT(atomic_load(&s->word) == w_make(0, SLOT_DELAYED, 2, 1), "requeued");
	rig_free(&r);
}

static void a_redrive_killed_between_its_lease_and_word_leaves_a_dead_letter_nobody_takes(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_seen seen;
	/* a letter (3 deliveries, dead at 100) whose redrive CASed the lease word to "due 0, tag 0",
	 * then died before the word CAS */
	struct shmq_slot *s = slot(&r, 0, 0);
	uint64_t letter = w_make(0, SLOT_DEAD_MAX, 2, 3);
	atomic_store(&s->word, letter);
	atomic_store(&s->lease, lw_make(0, LW_NOT_BEFORE, 0));
	atomic_store(&r.lanes[0].prod_tail, 1);
	atomic_store(&r.lanes[0].cons_head, 1);
	TQ_EXPECT(repair(&r, 1000000, &seen) == LR_NONE && !seen.held, "a repair leaves it alone");
	struct lane_at a;
	TQ_EXPECT(take(&r.v, 0, &a) == 0, "no first delivery takes it");
	uint64_t w = w_make(0, SLOT_DELAYED, 0, 0); /* what a due redelivery would lease from */
	TQ_EXPECT(!slot_lease(s, &w, w_make(0, SLOT_LEASED, 1, 1)) && w == letter,
		  "a redelivery's lease fails on it");
	TQ_EXPECT(atomic_load(&s->word) == letter, "it stays the letter it was");
	/* a redrive from the value it left finishes the move */
	TQ_EXPECT(slot_requeue(s, lw_make(0, LW_NOT_BEFORE, 0), lw_make(0, LW_NOT_BEFORE, 0), letter,
			       w_make(0, SLOT_DELAYED, 0, 0), NULL, 0) == 2,
		  "both CASes of a redrive from there succeed");
	rig_free(&r);
}

static void a_pass_over_a_range_counts_each_repair_and_the_earliest_due_time(void)
{
	struct rig r;
	rig_init(&r, 1, 8);
	atomic_store(&r.dead[4], 1);
	atomic_store(&slot(&r, 0, 0)->word, w_make(0, SLOT_WRITING, 4, 0)); /* a dead writer */
	atomic_store(&slot(&r, 0, 1)->word, w_make(1, SLOT_LEASED, 4, 2));  /* a dead holder */
	atomic_store(&slot(&r, 0, 1)->lease, lw_make(90000, LW_DEADLINE, 2));
	atomic_store(&slot(&r, 0, 2)->word, w_make(2, SLOT_LEASED, 2, 1)); /* a live, valid lease */
	atomic_store(&slot(&r, 0, 2)->lease, lw_make(90000, LW_DEADLINE, 1));
	atomic_store(&slot(&r, 0, 3)->word, w_make(3, SLOT_DELAYED, 2, 1)); /* due at 1500 */
	atomic_store(&slot(&r, 0, 3)->lease, lw_make(1500, LW_NOT_BEFORE, 1));
	atomic_store(&slot(&r, 0, 4)->word, w_make(4, SLOT_DEAD_EXPIRED, 2, 3)); /* a dead letter */
	atomic_store(&slot(&r, 0, 5)->word, w_make(5, SLOT_LEASED, 2, 3)); /* its last delivery, expired */
	atomic_store(&slot(&r, 0, 5)->lease, lw_make(50, LW_DEADLINE, 3));
	uint8_t alive[MAX_OWNER] = {0};
	struct lane_repair rp = {.now_ms = 100,
				 .lease_ms = 500,
				 .max_deliveries = 3,
				 .backoff_ms = fixed_backoff,
				 .alive = alive};
	struct lane_repairs out = {.next_due = UINT64_MAX};
	lane_repair_range(&r.v, &rp, 0, 8, &out);
	TQ_EXPECT(out.retired == 1 && out.dead_owner == 1 && out.expired == 0 && out.dead_lettered == 1,
		  "one write retired, one lease requeued (got %u, %u, %u, %u)", out.retired, out.dead_owner,
		  out.expired, out.dead_lettered);
	TQ_EXPECT(out.held == 4, "four slots were held when looked at (got %u)", out.held);
	TQ_EXPECT(out.dead == 2 && out.dead_lane[0] == 1,
		  "two dead slots seen, one of them dead-lettered in lane 0 (got %u, %u)", out.dead,
		  out.dead_lane[0]);
	TQ_EXPECT(out.next_due == 1500, "the earliest due time is the delayed slot's (got %llu)",
		  (unsigned long long)out.next_due);
	TQ_EXPECT(atomic_load(&slot(&r, 0, 1)->lease) == lw_make(2100, LW_NOT_BEFORE, 2),
		  "the requeue is due after its backoff (2 s for a second delivery)");
	rig_free(&r);
}

static void corrupt_lane_counters_end_a_take_instead_of_a_walk(void)
{
	struct rig r;
	rig_init(&r, 1, 4);
	struct lane_at a;
	atomic_store(&r.lanes[0].cons_head, 10);
	atomic_store(&r.lanes[0].prod_tail, 5); /* the head past the tail */
	TQ_EXPECT(take(&r.v, 0, &a) == -1, "a head past its tail is corrupt");
	atomic_store(&r.lanes[0].cons_head, 0);
	atomic_store(&r.lanes[0].prod_tail, 1ULL << 62); /* a tail far beyond any window */
	TQ_EXPECT(take(&r.v, 0, &a) == -1, "a tail 2^62 ahead is corrupt");
	rig_free(&r);
}

/* ---- many threads on one lane ----------------------------------------------------------------- */

#define MP_PRODUCERS 2
#define MP_CONSUMERS 2
#define MP_PER_PRODUCER 20000u
#define MP_TOTAL (MP_PRODUCERS * MP_PER_PRODUCER)

struct mp {
	struct rig r;
	_Atomic uint32_t consumed;
	_Atomic unsigned char seen[MP_TOTAL];
	_Atomic uint32_t dup, order;
};

struct mp_arg {
	struct mp *m;
	unsigned id;
};

static void *mp_producer(void *p)
{
	struct mp_arg *a = p;
	struct shmq_lane_view v = as(&a->m->r, 1 + a->id);
	for (uint32_t i = 0; i < MP_PER_PRODUCER; i++)
		while (produce(&v, 0, a->id * MP_PER_PRODUCER + i) < 0)
			sched_yield();
	return NULL;
}

static void *mp_consumer(void *p)
{
	struct mp_arg *a = p;
	struct mp *m = a->m;
	struct shmq_lane_view v = as(&m->r, 1 + MP_PRODUCERS + a->id);
	int64_t last[MP_PRODUCERS];
	for (unsigned k = 0; k < MP_PRODUCERS; k++)
		last[k] = -1;
	while (atomic_load_explicit(&m->consumed, memory_order_relaxed) < MP_TOTAL) {
		struct lane_at at;
		int r = take(&v, 0, &at);
		TQ_REQUIRE(r >= 0, "the lane never looks corrupt");
		if (!r) {
			sched_yield();
			continue;
		}
		uint32_t val = payload_of(&at);
		TQ_REQUIRE(val < MP_TOTAL, "payload %u out of range (torn?)", val);
		if (atomic_fetch_add(&m->seen[val], 1))
			atomic_fetch_add(&m->dup, 1);
		/* one consumer takes a producer's messages in the order that producer sent them */
		unsigned from = val / MP_PER_PRODUCER;
		if ((int64_t)val <= last[from])
			atomic_fetch_add(&m->order, 1);
		last[from] = val;
		TQ_REQUIRE(lane_ack(&v, at.s, at.w), "the ack of our own lease succeeds");
		atomic_fetch_add_explicit(&m->consumed, 1, memory_order_relaxed);
	}
	return NULL;
}

static void mpmc_threads_move_every_message_once_in_order(void)
{
	/* a lane that wedges fails the test (SIGALRM) instead of hanging it */
	alarm(120);
	struct mp *m = calloc(1, sizeof(*m));
	TQ_REQUIRE(m, "out of memory");
	rig_init(&m->r, 1, 64);
	pthread_t th[MP_PRODUCERS + MP_CONSUMERS];
	struct mp_arg args[MP_PRODUCERS + MP_CONSUMERS];
	for (unsigned k = 0; k < MP_PRODUCERS + MP_CONSUMERS; k++) {
		args[k] = (struct mp_arg){m, k < MP_PRODUCERS ? k : k - MP_PRODUCERS};
		TQ_REQUIRE(pthread_create(&th[k], NULL, k < MP_PRODUCERS ? mp_producer : mp_consumer,
					  &args[k]) == 0,
			   "pthread_create");
	}
	for (unsigned k = 0; k < MP_PRODUCERS + MP_CONSUMERS; k++)
		pthread_join(th[k], NULL);
	uint32_t missing = 0;
	for (uint32_t i = 0; i < MP_TOTAL; i++)
		missing += !atomic_load(&m->seen[i]);
	TQ_EXPECT(missing == 0, "%u messages never delivered", missing);
	TQ_EXPECT(atomic_load(&m->dup) == 0, "%u messages delivered twice", atomic_load(&m->dup));
	TQ_EXPECT(atomic_load(&m->order) == 0, "%u out of a producer's order", atomic_load(&m->order));
	rig_free(&m->r);
	free(m);
	alarm(0);
}

#ifndef TQ_PLAIN
Test(lane, delivers_in_fifo_order_across_many_wraps) { fifo_across_many_wraps(); }
Test(lane, a_full_lane_refuses_a_fifth_ticket) { a_full_lane_refuses_a_fifth_ticket(); }
Test(lane, a_claim_on_a_held_slot_abandons_the_ticket_and_consumers_step_over_it)
{
	a_claim_on_a_held_slot_abandons_the_ticket_and_consumers_step_over_it();
}
Test(lane, a_ticket_taken_and_never_claimed_is_abandoned_and_its_late_claim_fails)
{
	a_ticket_taken_and_never_claimed_is_abandoned_and_its_late_claim_fails();
}
Test(lane, a_claim_racing_a_consumers_skip_gives_the_ticket_up)
{
	a_claim_racing_a_consumers_skip_gives_the_ticket_up();
}
Test(lane, a_dead_writers_slot_is_retired_and_its_late_publish_fails)
{
	a_dead_writers_slot_is_retired_and_its_late_publish_fails();
}
Test(lane, a_dead_holders_lease_is_requeued_with_backoff) { a_dead_holders_lease_is_requeued_with_backoff(); }
Test(lane, an_expired_lease_is_requeued_and_the_last_delivery_dead_lettered)
{
	an_expired_lease_is_requeued_and_the_last_delivery_dead_lettered();
}
Test(lane, a_lease_word_of_the_slots_previous_lap_is_not_this_deliverys)
{
	a_lease_word_of_the_slots_previous_lap_is_not_this_deliverys();
}
Test(lane, a_holder_that_died_before_its_deadline_store_loses_the_lease_only_to_death)
{
	a_holder_that_died_before_its_deadline_store_loses_the_lease_only_to_death();
}
Test(lane, a_requeue_killed_between_its_lease_and_word_is_finished_a_lease_later)
{
	a_requeue_killed_between_its_lease_and_word_is_finished_a_lease_later();
}
Test(lane, a_redrive_killed_between_its_lease_and_word_leaves_a_dead_letter_nobody_takes)
{
	a_redrive_killed_between_its_lease_and_word_leaves_a_dead_letter_nobody_takes();
}
Test(lane, a_pass_over_a_range_counts_each_repair_and_the_earliest_due_time)
{
	a_pass_over_a_range_counts_each_repair_and_the_earliest_due_time();
}
Test(lane, corrupt_lane_counters_end_a_take_instead_of_a_walk)
{
	corrupt_lane_counters_end_a_take_instead_of_a_walk();
}
Test(lane, mpmc_threads_move_every_message_once_in_order) { mpmc_threads_move_every_message_once_in_order(); }
#else
int main(void)
{
	static const struct tq_plain_test t[] = {
		{"delivers_in_fifo_order_across_many_wraps", fifo_across_many_wraps},
		{"a_full_lane_refuses_a_fifth_ticket", a_full_lane_refuses_a_fifth_ticket},
		{"a_claim_on_a_held_slot_abandons_the_ticket_and_consumers_step_over_it",
		 a_claim_on_a_held_slot_abandons_the_ticket_and_consumers_step_over_it},
		{"a_ticket_taken_and_never_claimed_is_abandoned_and_its_late_claim_fails",
		 a_ticket_taken_and_never_claimed_is_abandoned_and_its_late_claim_fails},
		{"a_claim_racing_a_consumers_skip_gives_the_ticket_up",
		 a_claim_racing_a_consumers_skip_gives_the_ticket_up},
		{"a_dead_writers_slot_is_retired_and_its_late_publish_fails",
		 a_dead_writers_slot_is_retired_and_its_late_publish_fails},
		{"a_dead_holders_lease_is_requeued_with_backoff",
		 a_dead_holders_lease_is_requeued_with_backoff},
		{"an_expired_lease_is_requeued_and_the_last_delivery_dead_lettered",
		 an_expired_lease_is_requeued_and_the_last_delivery_dead_lettered},
		{"a_lease_word_of_the_slots_previous_lap_is_not_this_deliverys",
		 a_lease_word_of_the_slots_previous_lap_is_not_this_deliverys},
		{"a_holder_that_died_before_its_deadline_store_loses_the_lease_only_to_death",
		 a_holder_that_died_before_its_deadline_store_loses_the_lease_only_to_death},
		{"a_requeue_killed_between_its_lease_and_word_is_finished_a_lease_later",
		 a_requeue_killed_between_its_lease_and_word_is_finished_a_lease_later},
		{"a_redrive_killed_between_its_lease_and_word_leaves_a_dead_letter_nobody_takes",
		 a_redrive_killed_between_its_lease_and_word_leaves_a_dead_letter_nobody_takes},
		{"a_pass_over_a_range_counts_each_repair_and_the_earliest_due_time",
		 a_pass_over_a_range_counts_each_repair_and_the_earliest_due_time},
		{"corrupt_lane_counters_end_a_take_instead_of_a_walk",
		 corrupt_lane_counters_end_a_take_instead_of_a_walk},
		{"mpmc_threads_move_every_message_once_in_order",
		 mpmc_threads_move_every_message_once_in_order},
	};
	return tq_plain_main("lane", t, sizeof(t) / sizeof(t[0]));
}
#endif

/* SPDX-License-Identifier: MIT */
/*
 * reclaim.c: the recovery policy. A pass may run at any time, as often and as concurrently as
 * anyone likes: every repair is a CAS from the exact word the pass observed, so two passes never
 * requeue one delivery twice, and a pass never undoes what an owner did meanwhile. This file
 * decides when and over which slots (a whole pass, or the receivers' slices), counts what was
 * done and wakes whom it concerns; the repair of one slot is the ring core's (lane_repair_slot):
 *
 *   LEASED, deadline passed or owner dead -> DELAYED (backoff) or dead-lettered at max deliveries
 *   WRITING, owner dead                   -> FREE (ticket moves on: consumers step over it)
 *   participant record, owner dead        -> FREE (only for owners already dead when the pass
 *                                            started, so all their slots were seen dead)
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "dlq.h"
#include "handle.h"
#include "lane.h"
#include "reclaim.h"
#include "settings.h"
#include "redeliver.h"
#include "registry.h"
#include "wait.h"

static void add(shmq_t *q, enum shmq_counter c, uint64_t n)
{
	if (q->me && n)
		count(q, c, n);
}

/* What a pass, or one slice of one, did and saw. */
struct pass {
	struct shmq_reclaim_result r;
	uint64_t now, next_due;
	uint32_t held;
	uint32_t dead;			      /* dead slots seen (those it dead-lettered too) */
	uint32_t dead_lane[SHMQ_LANES_MAX];   /* slots it dead-lettered, per lane */
	uint8_t alive[SHMQ_MAX_PARTICIPANTS]; /* 1: found alive in this pass (0: probe again) */
};

static void pass_init(struct pass *p)
{
	memset(p, 0, sizeof(*p));
	p->now = now_ms();
	p->next_due = REDELIVER_NONE;
}

static uint64_t backoff(void *ctx, unsigned deliveries) { return shmq_backoff_ms(ctx, deliveries); }

/* The pid in participant owner's record (0: no such record). */
static int32_t pid_of(void *ctx, unsigned owner)
{
	shmq_t *q = ctx;
	return owner >= 1 && owner <= q->max_parts ? part_at(q, owner - 1)->pid : 0;
}

/* The pass's repair of slots [from, to) (lane.c), counted. */
static void reclaim_range(shmq_t *q, struct pass *p, uint64_t from, uint64_t to)
{
	struct lane_repair r = {
		.now_ms = p->now,
		.lease_ms = q->lease_ms,
		.max_deliveries = q->max_deliveries,
		.backoff_ms = backoff,
		.backoff_ctx = q,
		.holders = q->holders,
		.pid_of = pid_of,
		.pid_ctx = q,
		.alive = p->alive,
	};
	struct lane_repairs out = {.next_due = p->next_due};
	lane_repair_range(&q->view, &r, from, to, &out);
	p->r.retired_writes += out.retired;
	p->r.expired += out.expired;
	p->r.dead_owner += out.dead_owner;
	p->r.dead_lettered += out.dead_lettered;
	p->held += out.held;
	p->dead += out.dead;
	for (uint32_t l = 0; l < q->lanes; l++)
		p->dead_lane[l] += out.dead_lane[l];
	p->next_due = out.next_due;
}

/* 1 if record i, observed as *v, is held by a participant that is gone. */
static int record_dead(shmq_t *q, uint32_t i, uint64_t *v)
{
	*v = atomic_load_explicit(&part_at(q, i)->state, memory_order_acquire);
	return (*v & 0xff) == PART_ALIVE && !shmq_part_alive(q, i);
}

/*
 * reclaim_held: 0 tells sleeping receivers that nothing is leased (they wake for passes only every
 * RECLAIM_IDLE_MS); deliver() writes 1 on a lease that finds it 0 or RECLAIM_HELD_OPEN. A pass
 * counts the slots held as it goes, so a lease taken on a slot it already looked at is not in its
 * count: its end must not store a 0 over that lease's 1. So its start turns a count into OPEN (still
 * "held" to sleepers), the first lease during the pass turns OPEN (or 0) into 1, and the end
 * replaces only OPEN, or a 0 by a count: a 1 stays until a pass that saw no lease all through.
 */
static void held_open(struct shmq_hdr *h)
{
	uint32_t v = atomic_load_explicit(&h->reclaim_held, memory_order_relaxed);
	if (v && v != RECLAIM_HELD_OPEN)
		atomic_compare_exchange_strong_explicit(&h->reclaim_held, &v, RECLAIM_HELD_OPEN,
							memory_order_relaxed, memory_order_relaxed);
}

static void held_close(struct shmq_hdr *h, uint32_t n)
{
	uint32_t v = atomic_load_explicit(&h->reclaim_held, memory_order_relaxed);
	if (n >= RECLAIM_HELD_OPEN)
		n = RECLAIM_HELD_OPEN - 1; /* a corrupt count: still "held" */
	if (v == RECLAIM_HELD_OPEN || (v == 0 && n))
		atomic_compare_exchange_strong_explicit(&h->reclaim_held, &v, n, memory_order_relaxed,
							memory_order_relaxed);
}

/* Counts what p did and follows it up; whole: p ended a pass, which saw `seen` dead slots. */
static void pass_report(shmq_t *q, struct pass *p, int whole, uint64_t seen)
{
	struct shmq_hdr *h = q->hdr;
	if (p->next_due != REDELIVER_NONE)
		shmq_note_delayed(q, p->next_due, (unsigned)(p->r.expired + p->r.dead_owner));
	add(q, C_RECLAIM_PASSES, whole);
	add(q, C_RETRIED, p->r.expired + p->r.dead_owner);
	add(q, C_RECL_EXPIRED, p->r.expired);
	add(q, C_RECL_DEAD_OWNER, p->r.dead_owner);
	add(q, C_RETIRED_WRITES, p->r.retired_writes);
	add(q, C_DEAD_LETTERED, p->r.dead_lettered);
	for (uint32_t l = 0; l < q->lanes && p->r.dead_lettered; l++)
		shmq_dlq_added(q, l, p->dead_lane[l]);
	if (p->r.dead_lettered || seen)
		shmq_dlq_enforce(q, seen);
	if (p->r.retired_writes)
		shmq_notify(q, &h->space_seq, &h->space_sleepers, (unsigned)p->r.retired_writes);
}

int shmq_reclaim(shmq_t *q, struct shmq_reclaim_result *res)
{
	if (foreign(q))
		return -ECHILD;
	if (!q)
		return -EINVAL;
	mark_kind(q, SHMQ_KIND_WATCHDOG);
	return shmq_reclaim_pass(q, res);
}

int shmq_reclaim_pass(shmq_t *q, struct shmq_reclaim_result *res)
{
	settings_check(q);
	struct pass p;
	pass_init(&p);
	held_open(q->hdr);
	/* who is dead before the scan starts: only their records may be freed afterwards */
	uint8_t dead_at_start[SHMQ_MAX_PARTICIPANTS];
	uint64_t v;
	for (uint32_t i = 0; i < q->max_parts; i++)
		dead_at_start[i] = (uint8_t)record_dead(q, i, &v);
	reclaim_range(q, &p, 0, q->capacity);
	/* a record re-claimed since the probe is left alone (the CAS would fail anyway) */
	for (uint32_t i = 0; i < q->max_parts; i++)
		if (dead_at_start[i] && record_dead(q, i, &v) && shmq_part_release(q, i, v))
			p.r.participants_freed++;
	held_close(q->hdr, p.held);
	pass_report(q, &p, 1, p.dead);
	if (res)
		*res = p.r;
	return (int)(p.r.expired + p.r.dead_owner + p.r.retired_writes + p.r.dead_lettered);
}

/*
 * The receivers' pass, in slices: a receive never does more than RECLAIM_SLICE slots of it (one
 * whole pass over millions of slots, inside one receive, stalled that receive for tens of ms).
 * reclaim_pos hands out the slots: one slice = one CAS moving it on. shmq_reclaim_start opens a
 * pass (once per interval); while it is open, every receive does a slice, and a receive about to
 * sleep does slices until the pass is claimed or its deadline.
 *
 * Records: a pass frees a dead participant's record only once every slot was looked at after it
 * was dead (else a slot of its seen while it lived would keep its index, and a newcomer reusing
 * the record would make that slot look owned). Slices of one pass run concurrently and any of them
 * may die, so the slice that completes the count of slots done runs the record step: it frees the
 * records whose death (dead_seen, the first time a pass found that epoch gone) came before the pass
 * started, and marks those found gone for the first time. A pass whose count never completes (a
 * slice died) frees nothing; the next one does.
 */
static uint64_t done_make(uint64_t start_ms, uint64_t n, uint64_t pass)
{
	return ((start_ms & 0xffffffff) << 32) | ((n & RECLAIM_POS_MASK) << 8) | (pass & 0xff);
}

static void free_dead_records(shmq_t *q, uint32_t start_ms)
{
	for (uint32_t i = 0; i < q->max_parts; i++) {
		struct shmq_participant *pr = part_at(q, i);
		uint64_t v;
		if (!record_dead(q, i, &v))
			continue;
		uint32_t epoch = (uint32_t)(v >> 8);
		uint64_t seen = atomic_load_explicit(&pr->dead_seen, memory_order_relaxed);
		if ((uint32_t)seen != epoch) {
			atomic_store_explicit(&pr->dead_seen, (uint64_t)(uint32_t)now_ms() << 32 | epoch,
					      memory_order_relaxed);
			continue;
		}
		/* seen dead before the pass started (modulo 2^32 ms), and dead since: a newcomer
		 * locks the byte before it claims the record, so its epoch is still the one seen */
		uint32_t ago = start_ms - (uint32_t)(seen >> 32);
		if (ago > 0 && ago < (1u << 31))
			shmq_part_release(q, i, v);
	}
}

void shmq_reclaim_start(shmq_t *q)
{
	struct shmq_hdr *h = q->hdr;
	uint64_t pos = atomic_load_explicit(&h->reclaim_pos, memory_order_relaxed);
	if (reclaim_pos_open(pos, q->capacity))
		return;
	SHMQ_HOOK("reclaim-start-loaded");
	uint64_t pass = (pos >> RECLAIM_POS_BITS) + 1;
	/* the count and the start time first: a slice of this pass finds them tagged with its
	 * pass. By a CAS from the previous pass's value, read while the position still showed that
	 * pass over: a starter stalled since its load of the position (others opened this pass and
	 * counted slices into it meanwhile) then changes nothing, where a store reset the open
	 * pass's count (it never ended, and freed no record) and moved its start_ms past scans
	 * already done. acquire: a count whose slices we see is read before the position is. */
	uint64_t d = atomic_load_explicit(&h->reclaim_done, memory_order_acquire);
	if (atomic_load_explicit(&h->reclaim_pos, memory_order_relaxed) != pos ||
	    !atomic_compare_exchange_strong_explicit(&h->reclaim_done, &d, done_make(now_ms(), 0, pass),
						     memory_order_relaxed, memory_order_relaxed))
		return;
	atomic_store_explicit(&h->reclaim_acc, 0, memory_order_relaxed);
	atomic_store_explicit(&h->reclaim_dead, 0, memory_order_relaxed);
	held_open(h);
	/* release: pairs with the slices' acquire CAS on reclaim_pos, so every slot of the pass is
	 * looked at after start_ms (a starter that stores late only makes it earlier) */
	atomic_compare_exchange_strong_explicit(&h->reclaim_pos, &pos, pass << RECLAIM_POS_BITS,
						memory_order_release, memory_order_relaxed);
}

int shmq_reclaim_step(shmq_t *q, uint32_t budget)
{
	settings_check(q);
	struct shmq_hdr *h = q->hdr;
	uint64_t cap = q->capacity, from, to;
	uint64_t pos = atomic_load_explicit(&h->reclaim_pos, memory_order_relaxed);
	do {
		from = pos & RECLAIM_POS_MASK;
		if (!reclaim_pos_open(pos, cap))
			return 0; /* claimed to the end (or a corrupt position: the next start mends it) */
		to = cap - from < budget ? cap : from + budget;
		/* acquire: pairs with shmq_reclaim_start()'s release (see there) */
	} while (!atomic_compare_exchange_weak_explicit(&h->reclaim_pos, &pos, (pos & ~RECLAIM_POS_MASK) | to,
							memory_order_acquire, memory_order_relaxed));
	uint64_t pass = pos >> RECLAIM_POS_BITS;
	struct pass p;
	pass_init(&p);
	reclaim_range(q, &p, from, to);
	if (p.held)
		atomic_fetch_add_explicit(&h->reclaim_acc, p.held, memory_order_relaxed);
	if (p.dead)
		atomic_fetch_add_explicit(&h->reclaim_dead, p.dead, memory_order_relaxed);
	/* count the slots done, if the pass is still the current one */
	uint64_t d = atomic_load_explicit(&h->reclaim_done, memory_order_relaxed), nd;
	int last = 0;
	for (;;) {
		if ((d & 0xff) != (pass & 0xff) || ((d >> 8) & RECLAIM_POS_MASK) + (to - from) > cap)
			break; /* a later pass started meanwhile (or a corrupt count) */
		nd = d + ((to - from) << 8);
		/* acq_rel: each slice's count releases its scan; the slice that completes the count
		 * acquires them all before it frees records */
		if (atomic_compare_exchange_weak_explicit(&h->reclaim_done, &d, nd, memory_order_acq_rel,
							  memory_order_relaxed)) {
			last = ((nd >> 8) & RECLAIM_POS_MASK) == cap;
			break;
		}
	}
	uint64_t seen = 0;
	if (last) {
		free_dead_records(q, (uint32_t)(d >> 32));
		held_close(h, atomic_exchange_explicit(&h->reclaim_acc, 0, memory_order_relaxed));
		seen = atomic_exchange_explicit(&h->reclaim_dead, 0, memory_order_relaxed);
	}
	pass_report(q, &p, last, seen);
	return to == cap;
}

/* The rate-limited reclaim pass of receivers (config.reclaim_interval_ms): without it, expired
 * leases and a dead consumer's messages would wait for someone to call shmq_reclaim. One receiver
 * per interval wins the CAS and opens a pass; while it is open every receive does a slice of it
 * (RECLAIM_SLICE slots), and a receive about to sleep (deadline_ns: its deadline, 0 for the others)
 * up to `slices` of them, before its deadline: it looks for messages again between those (a
 * whole pass over millions of slots takes tens of ms). Returns when the next one is due
 * (UINT64_MAX: never; now while a pass is open). */
uint64_t shmq_reclaim_due(shmq_t *q, uint64_t now, uint64_t deadline_ns, unsigned slices)
{
	struct shmq_hdr *h = q->hdr;
	uint32_t iv = q->reclaim_interval_ms;
	if (!iv)
		return UINT64_MAX;
	/* relaxed: the pass itself reads every slot with acquire; these only share out the work.
	 * Both words are on one line, read by every receive and written once per slice. */
	uint64_t next = atomic_load_explicit(&h->reclaim_next_ms, memory_order_relaxed);
	if (!shmq_reclaim_open(q)) {
		if (now < next && next - now <= iv)
			return next;
		if (!atomic_compare_exchange_strong_explicit(&h->reclaim_next_ms, &next, now + iv,
							     memory_order_relaxed, memory_order_relaxed))
			return now + iv;
		shmq_reclaim_start(q);
	}
	for (int k = 1; !shmq_reclaim_step(q, RECLAIM_SLICE) && shmq_reclaim_open(q) && deadline_ns &&
			k < (int)slices && now_ns() < deadline_ns;
	     k++)
		;
	return shmq_reclaim_open(q) ? now : now + iv;
}

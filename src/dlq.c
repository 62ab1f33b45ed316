/* SPDX-License-Identifier: MIT */
/*
 * dlq.c: the dead-letter queue. Dead letters stay in their slots (no copy, nothing to lose in a
 * move): the slot word says DEAD_<reason> with the delivery count, the slot's holder record
 * (layout.h) the last holder's pid, and the lease word the time (a not-before time tagged with
 * the dying delivery, put there by the CAS that took the lease from that delivery). Redrive and purge are
 * single CASes from the observed dead word, so two tools racing on one letter cannot both act on it, and
 * neither writes any other field of a slot that may have moved on since it was listed (see settle()). The DLQ
 * holds at most dlq_max letters; the oldest beyond that are dropped and counted (dlq_dropped),
 * never silently.
 *
 * Finding the oldest takes a pass over the whole ring (collect), too much for every dead-lettering
 * (a receive's reclaim slice or a reject would pay O(capacity)). So the header keeps a count of
 * letters per lane, a hint: raised after a slot went dead, lowered after a redrive, purge or drop,
 * and set by every pass to what it counted (by a CAS from the value read before it counted, so
 * a change meanwhile is applied as a difference instead). Dead-lettering runs the pass only when
 * the hint says there is something to drop. A participant killed between its CAS and its count
 * leaves the hint one off: too high costs one pass, which corrects it; too low delays a drop until
 * the next pass (any redrive, purge or enforcement, or the last slice of a reclaim pass, which
 * counts the dead slots it saw and runs one if the hint is lower than those and a bound could be
 * exceeded). It never makes a pass drop more than the bounds say: the pass counts for itself.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "fault.h"
#include "handle.h"
#include "redeliver.h"
#include "slot.h"
#include "wait.h"

const char *shmq_dead_reason_str(unsigned reason)
{
	switch (reason) {
	case SHMQ_DEAD_MAX_DELIVERIES:
		return "max deliveries";
	case SHMQ_DEAD_EXPIRED:
		return "lease expired";
	case SHMQ_DEAD_REJECTED:
		return "rejected";
	case SHMQ_DEAD_CRASHED:
		return "consumer crashed";
	default:
		return "unknown";
	}
}

struct dead_ref {
	uint64_t word;
	uint64_t dead_ms;
	uint64_t id;
	uint32_t slot;
};

static int older(const void *a, const void *b)
{
	const struct dead_ref *x = a, *y = b;
	if (x->dead_ms != y->dead_ms)
		return x->dead_ms < y->dead_ms ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* When the dead slot whose word is w was dead-lettered: the not-before time its dead-lettering put
 * in the lease word, tagged with its delivery (lease_tag: count and lap; 0, oldest of all, if the
 * word holds anything else: a redrive of it between its two CASes, or a corrupted segment). */
static uint64_t dead_time(shmq_t *q, struct shmq_slot *s, uint64_t w)
{
	uint64_t lw = atomic_load_explicit(&s->lease, memory_order_relaxed);
	return lw_kind(lw) == LW_NOT_BEFORE && lw_tag(lw) == lease_tag(q, w) ? lw_ms(lw) : 0;
}

/* The pid of whoever held the last lease of the dead slot idx whose word is w: its holder record,
 * if that names this delivery (0 if not: a record stored late by a mover that lost the slot, or a
 * corrupt one). relaxed: the acquire load of w (collect) pairs with the release CAS that made
 * the slot dead, after the record was stored. */
static int32_t holder_pid(shmq_t *q, uint32_t idx, uint64_t w)
{
	uint64_t r = atomic_load_explicit(&q->holders[idx], memory_order_relaxed);
	return hr_tag(r) == lease_tag(q, w) ? hr_pid(r) : 0;
}

/* Collects the dead slots, oldest first. Returns the count, or -ENOMEM. */
static int collect(shmq_t *q, struct dead_ref **out)
{
	uint64_t cap = q->capacity;
	size_t n = 0, room = 16;
	SHMQ_HOOK("dlq-collect"); /* a test counts the passes over the whole ring */
	struct dead_ref *v = malloc(room * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < cap; i++) {
		struct shmq_slot *s = slot_at(q, i);
		/* acquire: pairs with the release CAS that made it dead (the lease word, with the dead
		 * time, CASed before it) */
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		if (!w_dead_reason(w_state(w)))
			continue;
		if (n == room) {
			struct dead_ref *nv = realloc(v, 2 * room * sizeof(*v));
			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			room *= 2;
		}
		v[n++] = (struct dead_ref){
			.word = w, .dead_ms = dead_time(q, s, w), .id = s->id, .slot = (uint32_t)i};
	}
	qsort(v, n, sizeof(*v), older);
	*out = v;
	return (int)n;
}

int shmq_dlq_list(shmq_t *q, struct shmq_dead_letter *out, unsigned max)
{
	if (foreign(q))
		return -ECHILD;
	struct dead_ref *v;
	if (!q || (!out && max))
		return -EINVAL;
	int n = collect(q, &v);
	if (n < 0)
		return n;
	for (unsigned i = 0; i < (unsigned)n && i < max; i++) {
		struct shmq_slot *s = slot_at(q, v[i].slot);
		uint32_t kl = slot_key_len(s, q->max_payload);
		out[i] = (struct shmq_dead_letter){
			.data = slot_payload(s) + kl,
			.len = slot_data_len(s, kl, q->max_payload),
			.deliveries = w_deliv(v[i].word),
			.id = v[i].id,
			.enqueued_ns = s->enqueued_ns,
			.dead_ms = v[i].dead_ms,
			.reason = w_dead_reason(w_state(v[i].word)),
			.last_pid = holder_pid(q, v[i].slot, v[i].word),
			.slot = v[i].slot,
		};
	}
	free(v);
	return n;
}

/* Lane l's hint after a pass that read it as `hint`, then counted the lane's letters and settled
 * some (`left`: those it did not try to settle; `gone`: those it settled). Unchanged meanwhile: what
 * the pass counted. Else others changed it too: down by ours, never below 0. */
static void settle_hint(shmq_t *q, uint32_t l, uint32_t hint, uint32_t left, uint32_t gone)
{
	_Atomic uint32_t *c = &q->hdr->dlq_count[l];
	if (hint == left + gone && !gone)
		return;
	if (atomic_compare_exchange_strong_explicit(c, &hint, left, memory_order_relaxed,
						    memory_order_relaxed))
		return;
	while (gone && !atomic_compare_exchange_weak_explicit(c, &hint, hint > gone ? hint - gone : 0,
							      memory_order_relaxed, memory_order_relaxed))
		;
}

/* Redrives or deletes dead letters, oldest first: up to max of them, and never so many that fewer
 * than keep are left, except that a lane holding more than lane_keep has its oldest beyond that
 * deleted whatever keep says (with lanes, letters stay in their slots, and a key-hash lane full of
 * one poison key's letters would take no sends: they do not move to another lane).
 *
 * The list is a snapshot: by the time a letter's turn comes, another tool may have purged it and
 * its slot taken a new message, leased by a live consumer. So nothing is written to a slot but
 * through a CAS that fails once it moved on: a purge is one CAS on the word; a redrive CASes the
 * lease word first, from the letter's own value (its dead time, tagged with its delivery: a reuse
 * zeroes it at the producer's fill, a lease writes a deadline), to a not-before time of 0 tagged
 * with the redriven delivery 0, then the word DEAD -> DELAYED with 0 deliveries. The lease word
 * must change before the word does: left as it was, its tag (the letter's delivery count, often 1,
 * and its lap, which a redrive keeps) would match the
 * redriven message's first delivery, and a reclaim pass would read it as that delivery's stalled
 * requeue before its consumer wrote the deadline. Stopped between the two (or beaten to the word),
 * the redrive leaves a letter whose dead time reads 0 and whose lease word is the one it wrote,
 * which the next redrive recognises and finishes (a purge takes it too), or a FREE slot whose
 * lease word the next producer zeroes anyway. */
static int settle(shmq_t *q, unsigned max, int redrive, unsigned keep, unsigned lane_keep)
{
	struct dead_ref *v;
	uint32_t hint[SHMQ_LANES_MAX], gone[SHMQ_LANES_MAX] = {0};
	/* the hints before the count. acquire: pairs with shmq_dlq_added()'s release, so a letter
	 * whose count we see is in the slots collect() reads */
	for (uint32_t l = 0; l < q->lanes; l++)
		hint[l] = atomic_load_explicit(&q->hdr->dlq_count[l], memory_order_acquire);
	int n = collect(q, &v);
	if (n < 0)
		return n;
	SHMQ_HOOK("dlq-settle-collected");
	uint32_t per[SHMQ_LANES_MAX] = {0};
	for (int i = 0; i < n; i++)
		per[idx_lane(q, v[i].slot)]++;
	unsigned done = 0, cap = q->lane_mask + 1; /* a freed slot's next ticket is one lap on */
	for (unsigned i = 0; i < (unsigned)n && done < max; i++) {
		uint32_t l = idx_lane(q, v[i].slot);
		if ((unsigned)n - done <= keep && per[l] <= lane_keep)
			continue;
		per[l]--; /* whoever wins the word below, the letter leaves its lane */
		struct shmq_slot *s = slot_at(q, v[i].slot);
		uint64_t w = v[i].word;
		int moved;
		if (redrive) {
			/* the lease word, then the word still the letter's: lw was read while the slot
			 * was this letter, or before its dead-lettering wrote the dead time (then lw is
			 * a deadline and fails the shape test). acquire: the lease load stays before the
			 * word load, which pairs with the release CAS that made the slot dead. */
			uint64_t lw = atomic_load_explicit(&s->lease, memory_order_acquire);
			/* fresh delivery count; due now (its tag is that of deliveries 0) */
			uint64_t nw = w_make(w_ticket(w), SLOT_DELAYED, 0, 0);
			uint64_t due_now = lw_make(0, LW_NOT_BEFORE, lease_tag(q, nw));
			/* due_now already: a redrive of this letter (the tag names its ticket) stopped
			 * between its two CASes, or is between them now; either way only the word is
			 * left to move (the lease CAS below changes nothing), and one of us wins it */
			if (atomic_load_explicit(&s->word, memory_order_acquire) != w ||
			    (lw != due_now &&
			     (lw_kind(lw) != LW_NOT_BEFORE || lw_tag(lw) != lease_tag(q, w))))
				continue;
			moved = slot_requeue(s, lw, due_now, w, nw, NULL, 0) == 2;
		} else {
			/* release: pairs with slot_claim()'s acquire */
			moved = slot_free(s, w, cap, memory_order_release);
		}
		if (moved) {
			done++;
			gone[l]++;
		}
	}
	free(v);
	for (uint32_t l = 0; l < q->lanes; l++)
		settle_hint(q, l, hint[l], per[l], gone[l]);
	if (done && redrive)
		shmq_note_delayed(q, 0, done);
	else if (done)
		shmq_notify(q, &q->hdr->space_seq, &q->hdr->space_sleepers, done);
	return (int)done;
}

int shmq_dlq_redrive(shmq_t *q, unsigned max)
{
	if (foreign(q))
		return -ECHILD;
	if (!q)
		return -EINVAL;
	int n = settle(q, max, 1, 0, UINT32_MAX);
	if (n > 0 && q->me)
		count(q, C_REDRIVEN, (uint64_t)n);
	return n;
}

int shmq_dlq_purge(shmq_t *q, unsigned max)
{
	if (foreign(q))
		return -ECHILD;
	if (!q)
		return -EINVAL;
	int n = settle(q, max, 0, 0, UINT32_MAX);
	if (n > 0 && q->me)
		count(q, C_PURGED, (uint64_t)n);
	return n;
}

void shmq_dlq_added(shmq_t *q, uint32_t l, unsigned n)
{
	/* release: pairs with settle()'s acquire load; our slot went dead before */
	if (l < q->lanes && n)
		atomic_fetch_add_explicit(&q->hdr->dlq_count[l], n, memory_order_release);
}

void shmq_dlq_enforce(shmq_t *q, uint64_t seen)
{
	/* with lanes, letters stay in their lanes: at most half of one is kept (see settle()) */
	unsigned lane_keep = q->lanes > 1 ? (q->lane_mask + 1) / 2 : UINT32_MAX;
	uint64_t total = 0;
	int over = 0;
	for (uint32_t l = 0; l < q->lanes; l++) {
		uint32_t c = atomic_load_explicit(&q->hdr->dlq_count[l], memory_order_relaxed);
		total += c;
		over |= c > lane_keep;
	}
	over |= total > q->dlq_max || (seen > total && (seen > q->dlq_max || seen > lane_keep));
	if (!over)
		return;
	int n = settle(q, UINT32_MAX, 0, q->dlq_max, lane_keep);
	if (n > 0 && q->me)
		count(q, C_DLQ_DROPPED, (uint64_t)n);
}

/* SPDX-License-Identifier: MIT */
/*
 * slot.h: every transition of a slot word (layout.h has the format, docs/design.md the diagram),
 * each one CAS from the exact word its caller observed, so a process killed at any instruction
 * leaves each slot in one well-defined state. Plain memory only: no OS header, no clock, no
 * counter. The callers (lane.h, the API in ring.c, the policies reclaim.c and dlq.c) decide when
 * a transition is due; these functions only make it, and say whether it happened.
 *
 *   FREE(<= t)   -> WRITING(t, p)       slot_claim         producer p holding ticket t
 *   WRITING(t,p) -> READY(t)            slot_publish       after the payload (release)
 *   WRITING(t,p) -> FREE(t + lap)       slot_unclaim       abort; a dead writer retired
 *   READY(t)     -> LEASED(t, c, 1)     slot_lease         first delivery (acquire)
 *   DELAYED      -> LEASED(t, c, d + 1) slot_lease         redelivery
 *   LEASED       -> FREE(t + lap)       slot_free          ack; purge of a dead letter
 *   LEASED       -> DELAYED / DEAD      slot_requeue       nack, expiry, dead holder, reject
 *   DEAD         -> DELAYED(t, 0, 0)    slot_requeue       redrive
 * plus the skip word (slot_skip_past): ticket t abandoned at a slot still held by an older message.
 */
#ifndef SHMQ_SLOT_H
#define SHMQ_SLOT_H

#include <stdatomic.h>
#include <stdint.h>

#include "layout.h"

static inline unsigned char *slot_payload(struct shmq_slot *s) { return (unsigned char *)(s + 1); }

/* The slot's second line, where a payload longer than the header's line holds continues (slot
 * sizes are at least two lines): the line a prefetch asks for besides the slot's own. */
static inline unsigned char *slot_line1(struct shmq_slot *s) { return (unsigned char *)s + SHMQ_CACHELINE; }

/* Asks for the line at p for writing: a line about to be written then arrives owned, without a
 * read for sharing first. The compiler's write hint, which is PREFETCHW only in builds for a CPU
 * that has it (-march=native, -mprfchw: CPUs before it may not decode it); a read prefetch
 * otherwise, which still starts the transfer early. */
static inline void slot_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 3); }

/* The word a slot freed from ticket t has: FREE for the same slot's ticket one lap on. */
static inline uint64_t slot_next_lap(uint64_t t, uint64_t lap) { return w_make(t + lap, SLOT_FREE, 0, 0); }

/* The one CAS every transition is made of; a failure loads the real word into *expect (acquire:
 * the caller may act on what that word published). */
static inline int slot_cas(struct shmq_slot *s, uint64_t *expect, uint64_t desired, memory_order mo)
{
	return atomic_compare_exchange_strong_explicit(&s->word, expect, desired, mo, memory_order_acquire);
}

/* Marks ticket t abandoned at slot s (skip = max(skip, t + 1)). seq_cst: one half of the Dekker
 * pair with slot_claim()'s CAS-then-load of skip. */
static inline void slot_skip_past(struct shmq_slot *s, uint64_t t)
{
	uint64_t sk = atomic_load_explicit(&s->skip, memory_order_relaxed);
	while (sk < t + 1 && !atomic_compare_exchange_weak_explicit(
				     &s->skip, &sk, t + 1, memory_order_seq_cst, memory_order_relaxed))
		;
}

enum slot_claim_result {
	CLAIM_OK = 0,	/* the slot is WRITING(t, owner): ours */
	CLAIM_LOST = 1, /* ticket t was abandoned here (by a consumer): take another ticket */
	CLAIM_HELD = 2, /* an older message still holds the slot (*w): wait for it, or abandon t */
};

/* FREE(<= t) -> WRITING(t, owner) for a producer holding ticket t of the slot, starting from the
 * word *w (a guess: the usual one, FREE for exactly t, moves the line here once, where a load
 * then a CAS would move it twice while the consumer that acked it still holds it). */
static inline enum slot_claim_result slot_claim(struct shmq_slot *s, uint64_t t, unsigned owner, uint64_t lap,
						uint64_t *w)
{
	for (;;) {
		int64_t d = ticket_diff(t, w_ticket(*w));
		if (w_state(*w) == SLOT_FREE && d >= 0) {
			/* acquire: pairs with the release that freed the slot (ack, abort, retire), so
			 * the previous holder's reads of the payload are done before we write */
			if (!slot_cas(s, w, w_make(t, SLOT_WRITING, owner, 0), memory_order_seq_cst))
				continue;
			/* seq_cst CAS above, seq_cst load here; the consumer side stores skip (seq_cst)
			 * then reloads the word: one of us sees the other (Dekker) */
			if (atomic_load_explicit(&s->skip, memory_order_seq_cst) > t) {
				*w = w_make(t, SLOT_WRITING, owner, 0);
				slot_cas(s, w, slot_next_lap(t, lap), memory_order_release);
				return CLAIM_LOST;
			}
			return CLAIM_OK;
		}
		/* occupied by an older message, or a consumer already abandoned ticket t (the slot
		 * moved past it) */
		return d > 0 && w_state(*w) != SLOT_FREE ? CLAIM_HELD : CLAIM_LOST;
	}
}

/* WRITING(t, owner) -> READY(t). 0, or -1: retired by someone who thought the writer dead.
 * release (in seq_cst): pairs with the consumer's acquire lease CAS (or the acquire word it returns
 * when it fails): the payload, id and len written before are visible to whoever sees READY.
 * seq_cst for shmq_notify_sc (wait.c). */
static inline int slot_publish(struct shmq_slot *s, uint64_t t, unsigned owner)
{
	uint64_t w = w_make(t, SLOT_WRITING, owner, 0);
	return slot_cas(s, &w, w_make(t, SLOT_READY, 0, 0), memory_order_seq_cst) ? 0 : -1;
}

/* WRITING(t, owner) -> FREE(t + lap), the ticket moving on with the slot: consumers step over it.
 * For an abort by the writer, or a writer found dead. release: pairs with slot_claim()'s acquire,
 * as any freeing CAS. 1 if done. */
static inline int slot_unclaim(struct shmq_slot *s, uint64_t t, unsigned owner, uint64_t lap)
{
	uint64_t w = w_make(t, SLOT_WRITING, owner, 0);
	return slot_cas(s, &w, slot_next_lap(t, lap), memory_order_release);
}

/* w (any held state) -> FREE, the slot's next ticket one lap on. mo: seq_cst for an ack (for
 * shmq_notify_sc), release otherwise; either pairs with slot_claim()'s acquire, so the holder's
 * reads of the payload are done before a producer may overwrite it. 1 if done. */
static inline int slot_free(struct shmq_slot *s, uint64_t w, uint64_t lap, memory_order mo)
{
	return slot_cas(s, &w, slot_next_lap(w_ticket(w), lap), mo);
}

/* *w (READY, or DELAYED and due) -> leased, the word the lease was taken with. acquire: pairs with
 * slot_publish()'s release (or slot_requeue()'s), making the payload and the lease word visible.
 * A failure leaves the real word in *w. */
static inline int slot_lease(struct shmq_slot *s, uint64_t *w, uint64_t leased)
{
	return slot_cas(s, w, leased, memory_order_acquire);
}

/* Replaces the lease word of the delivery whose tag (lw_tag_of its slot word) is `tag`, a deadline,
 * with nv. -1 if it no longer holds a deadline of that delivery: a reclaim pass (or another thread
 * settling it) got there first, or the slot holds another message by now (the tag's lap differs,
 * so its holder's deadline is left alone). relaxed: the word CAS or re-check that follows orders
 * it. */
static inline int slot_set_lease(struct shmq_slot *s, uint32_t tag, uint64_t nv)
{
	uint64_t cur = atomic_load_explicit(&s->lease, memory_order_relaxed);
	do {
		if (lw_tag(cur) != tag || lw_kind(cur) != LW_DEADLINE)
			return -1;
	} while (!atomic_compare_exchange_weak_explicit(&s->lease, &cur, nv, memory_order_relaxed,
							memory_order_relaxed));
	return 0;
}

/* The two-CAS move of a delivery out of a holder's hands (requeue, dead-letter, redrive): the
 * lease word from the exact value lw its caller judged to nlw, then the word from w to nw. Whoever
 * wins the lease word moves the word, so an owner's extend or nack and a reclaim pass never both
 * do. Killed between the two, the slot keeps its word with the new lease value, which every
 * reader treats as that move half done (a reclaim pass finishes it). A dead-lettering passes the
 * slot's holder record (rec, else NULL) and its value: stored between the two, by the winner of
 * the lease word only. Returns 2 if both CASes were done, 1 if only the lease word (the word moved
 * on meanwhile), 0 if neither. release on the word: pairs with slot_lease()'s acquire (and
 * slot_claim()'s, for a purge; the DLQ's acquire load, for the record), publishing the lease word
 * and the record with the state. */
static inline int slot_requeue(struct shmq_slot *s, uint64_t lw, uint64_t nlw, uint64_t w, uint64_t nw,
			       _Atomic uint64_t *rec, uint64_t rv)
{
	if (!atomic_compare_exchange_strong_explicit(&s->lease, &lw, nlw, memory_order_relaxed,
						     memory_order_relaxed))
		return 0;
	if (rec)
		atomic_store_explicit(rec, rv, memory_order_relaxed);
	return 1 + slot_cas(s, &w, nw, memory_order_release);
}

#endif

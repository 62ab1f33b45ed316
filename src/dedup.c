/* SPDX-License-Identifier: MIT */
/*
 * dedup.c: idempotency keys. One table in the segment (layout.h has its format) serves both
 * sides: "published" keys, which make a repeated keyed send within the window a no-op, and
 * "done" records, which let a consumer recognise a redelivered message whose work is already
 * done. Every entry change is one CAS on its word; a key is written only while its entry is
 * CLAIMED by the writer, and a claim whose owner died (kernel lock probe) is taken over, so no
 * crash leaves a key stuck. Eviction: a key lives in one of the DEDUP_PROBES entries of the group
 * its hash picks; when all of them hold live keys, the oldest is overwritten before its window
 * ends (counted as dedup_evicted): a full table shortens the window, it never blocks a send.
 *
 * Presence is decided by the group's control bytes (one cache line): only entries whose byte may
 * name the key are read. A claimer stores BUSY into the byte of the entry it chose (C1), claims
 * the entry by CAS (C2), then stores its key's tag (C3) while the claim is its own; so an entry
 * that holds a key always shows that key's tag or BUSY, and a lookup never misses a live key.
 * Two senders of one key that claim two entries each read the group again after their tag store
 * (C4, lost_race): C3 and C4 are seq_cst on both sides, a store-buffer pair, so at least one of
 * them sees the other's claim. The lower entry wins: a claimer that sees a claim of its key
 * below its own, or a record of it, gives its own back; one that sees a claim above its own
 * waits for that claim to settle (its owner saw us and gives it back, or did not and records the
 * key, which we then find). Waits go only upwards, so they form no cycle.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "fault.h"
#include "handle.h"
#include "lanes.h"
#include "registry.h"
#include "ring.h"
#include "wait.h"

#define BUSY_SPINS 64	     /* polls of a key another participant is recording, before sleeping */
#define BUSY_SLEEP_NS 100000 /* then this long between polls */

struct dkey {
	unsigned kind;
	const unsigned char *key;
	uint32_t len;
	uint64_t hash;
	unsigned tag;  /* the entry word's 9 bits */
	unsigned ctag; /* the control byte's 7 (dc_tag) */
	/* set by place(): the key's group, its first entry, the unit of its expiry hints, and the
	 * entry of the group a claim takes when it is free (see find) */
	struct shmq_dedup_group *g;
	uint32_t base;
	unsigned shift;
	uint32_t pref;
};

enum find {
	FIND_FOUND,   /* a live entry holds the key */
	FIND_MISSING, /* lookup only: no live entry holds it */
	FIND_CLAIMED, /* an entry was claimed for it: write it, then commit or release */
	FIND_BUSY,    /* a live participant is recording this key right now */
	FIND_RACED,   /* the entry changed under our CAS: look again */
};

/* A claim in progress: entry idx, which we moved to word `claimed`. */
struct claim {
	uint32_t idx;
	uint64_t claimed;
};

static struct shmq_dedup_entry *entry_at(const shmq_t *q, uint64_t i)
{
	return (struct shmq_dedup_entry *)(q->dedup + dedup_entry_off(i & q->dedup_mask));
}

static int make_key(unsigned kind, const void *key, size_t len, struct dkey *k)
{
	if (!key || len == 0 || len > SHMQ_KEY_MAX)
		return -EINVAL;
	/* kinds are told apart in the entry word too; the offset only spreads them over the table */
	uint64_t h = shmq_hash(key, len) + kind * 0x9e3779b97f4a7c15ULL;
	unsigned tag = (unsigned)(h >> 55);
	*k = (struct dkey){
		.kind = kind, .key = key, .len = (uint32_t)len, .hash = h, .tag = tag, .ctag = dc_tag(tag)};
	return 0;
}

/* The key's group: entries [base, base + DEDUP_PROBES) (the table holds whole groups: the header
 * check refuses fewer entries than a group) and their control record, asked for at once (for
 * writing when the caller claims: lookups alone leave the line shared). */
static void place(const shmq_t *q, struct dkey *k, int claim)
{
	k->base = (uint32_t)k->hash & q->dedup_mask & ~(DEDUP_PROBES - 1);
	k->g = (struct shmq_dedup_group *)(q->dedup + dedup_group_off(k->base));
	k->shift = dedup_hint_shift(q->dedup_window_ms);
	/* bits the group index (low) and the tag (top) do not use */
	k->pref = (uint32_t)(k->hash >> 32) % DEDUP_PROBES;
	if (claim) {
		/* on their way while the caller reads the clock: the control record, and the entry
		 * a claim takes if it is free, so the two transfers overlap */
		__builtin_prefetch(k->g, 1);
		__builtin_prefetch(entry_at(q, k->base + k->pref), 1);
	} else {
		__builtin_prefetch(k->g, 0);
	}
}

/* Time ms in the unit of the group's expiry hints (modulo 2^16). */
static uint16_t unit_of(const struct dkey *k, uint64_t ms) { return (uint16_t)(ms >> k->shift); }

/* Entry j's expiry hint: it holds no live key from time unit `until` on (see pick()). */
static void hint(const struct dkey *k, uint32_t j, uint16_t until)
{
	atomic_store_explicit(&k->g->until[j], until, memory_order_relaxed);
}

/* May an entry whose control byte is b hold the key of control tag ctag? Its tag, BUSY, or a
 * value shmq never writes (a corrupted byte costs a look, never a miss); not EMPTY or another
 * tag. */
static int may_hold(unsigned b, unsigned ctag) { return b == ctag || (b != DC_EMPTY && b < DC_TAG); }

/* may_hold() of the 8 control bytes in word v at once: 0x80 in each byte of the result whose
 * control byte may hold the key of control tag ctag, 0 elsewhere. Exact (no carry crosses a
 * byte: (b & 0x7f) + 0x7f <= 0xfe). */
#define BYTES_01 0x0101010101010101ULL
#define BYTES_7F 0x7f7f7f7f7f7f7f7fULL
#define BYTES_80 0x8080808080808080ULL
static uint64_t nonzero_bytes(uint64_t v) { return (((v & BYTES_7F) + BYTES_7F) | v) & BYTES_80; }
static uint64_t may_hold8(uint64_t v, unsigned ctag)
{
	uint64_t tagged = ~nonzero_bytes(v ^ (BYTES_01 * ctag)) & BYTES_80;
	uint64_t busy = nonzero_bytes(v) & ~v; /* not EMPTY, below DC_TAG */
	return tagged | busy;
}

/* The index within its word of the control byte whose 0x80 bit is bit `bit` of a may_hold8()
 * result (the word was loaded from memory: byte order decides). */
static uint32_t byte_of_bit(unsigned bit)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return bit / 8;
#else
	return 7 - bit / 8;
#endif
}

static int same_key(const struct shmq_dedup_entry *e, const struct dkey *k)
{
	uint32_t len = e->key_len;
	return e->hash == k->hash && len == k->len && !memcmp(e->key, k->key, k->len);
}

/* Does entry e, seen with word w, hold key k? Seqlock-style: the fields are read between two
 * loads of the word, and count only if the word did not change (the entry may be recycled). */
static int holds(const struct shmq_dedup_entry *e, uint64_t w, const struct dkey *k, uint64_t *msg_id)
{
	if (de_kind(w) != k->kind || de_tag(w) != k->tag)
		return 0;
	int same = same_key(e, k);
	uint64_t id = e->msg_id;
	atomic_thread_fence(memory_order_acquire); /* the reads above before the re-load below */
	if (atomic_load_explicit(&e->word, memory_order_relaxed) != w)
		return 0;
	if (same && msg_id)
		*msg_id = id ? id - 1 : 0;
	return same;
}

static int live(const shmq_t *q, uint64_t w, uint64_t now)
{
	return de_ms(w) && de_ms(w) + q->dedup_window_ms > now;
}

/* By record and epoch: a newcomer that reuses a dead claimer's record is not the claimer. */
static int claimer_alive(shmq_t *q, uint64_t w)
{
	unsigned own = de_owner(w);
	return own && own <= q->max_parts && shmq_part_alive_in(q, own - 1, de_epoch(w));
}

/* Can an entry seen with word w take a new key? Empty, expired, released, or a dead claim. */
static int reusable(shmq_t *q, uint64_t w, uint64_t now)
{
	return de_state(w) == DE_CLAIMED ? !claimer_alive(q, w) : !live(q, w, now);
}

static uint64_t word_of(const shmq_t *q, uint32_t i)
{
	/* acquire: pairs with the release CAS that settled it (a claim over it comes after) */
	return atomic_load_explicit(&entry_at(q, i)->word, memory_order_acquire);
}

/* 1 if an entry whose control byte is b and expiry hint `until` holds no live key at time unit
 * `unit`, by the hint: never used, or expired. */
static int hint_free(unsigned b, uint16_t until, uint16_t unit)
{
	return b == DC_EMPTY || (int16_t)(uint16_t)(unit - until) >= 0;
}

/* Of the entries of k's group whose control byte b and expiry hint `until` say they hold no live
 * key (or were never used), the one that expired last: written last, the likeliest in cache. 1:
 * entry j is the best so far (its age is below *best_age). */
static int rank(unsigned b, uint16_t until, uint16_t unit, uint32_t j, int *best, uint16_t *best_age)
{
	uint16_t age = (uint16_t)(unit - until);
	if (!hint_free(b, until, unit))
		return 0;
	if (b == DC_EMPTY)
		age = UINT16_MAX - 1; /* never used: cold, but better than none */
	if (age >= *best_age)
		return 0;
	*best_age = age;
	*best = (int)j;
	return 1;
}

/* The entry of k's group (its index in the group, *j, seen with word *w) that a missing key
 * claims: `best` (from rank()) if its word agrees (0), else the first reusable one (0), else the
 * oldest live record (1, an eviction); -1: a live participant is claiming every entry. The hints
 * spare reading the words of live entries; only when none offers an entry (every entry live, or
 * hints stale) are all the words read. */
static int pick(shmq_t *q, const struct dkey *k, int best, uint64_t now, uint32_t *j, uint64_t *w)
{
	if (best >= 0) {
		uint64_t v = word_of(q, k->base + (uint32_t)best);
		if (reusable(q, v, now)) {
			*j = (uint32_t)best;
			*w = v;
			return 0;
		}
	}
	uint64_t oldest_ms = UINT64_MAX, oldest_w = 0;
	uint32_t oldest = 0;
	for (uint32_t i = 0; i < DEDUP_PROBES; i++) {
		uint64_t v = word_of(q, k->base + i);
		if (reusable(q, v, now)) {
			*j = i;
			*w = v;
			return 0;
		}
		if (de_state(v) != DE_CLAIMED && de_ms(v) < oldest_ms) {
			oldest_ms = de_ms(v);
			oldest = i;
			oldest_w = v;
		}
	}
	if (oldest_ms == UINT64_MAX)
		return -1;
	*j = oldest;
	*w = oldest_w;
	return 1;
}

/* Looks for key k in its group. With claim, takes an entry for it when it is missing (*c): a
 * dead claim that may have been for k (*took_over: its message may be in the queue), else one
 * pick() chooses. */
static enum find find(shmq_t *q, const struct dkey *k, int claim, uint64_t now, struct claim *c,
		      uint64_t *msg_id, int *took_over)
{
	struct shmq_dedup_group *g = k->g;
	int dead = -1, best = -1;
	uint16_t unit = unit_of(k, now), best_age = UINT16_MAX;
	uint64_t w = 0;
	/* A claim takes the key's preferred entry when its hint says it is free: place() asked for
	 * that entry with the control record. Otherwise the one rank() finds (the most recently
	 * expired), asked for as soon as it is found. relaxed: hints. */
	int ranking = claim;
	if (claim && hint_free(atomic_load_explicit(&g->ctrl[k->pref], memory_order_relaxed),
			       atomic_load_explicit(&g->until[k->pref], memory_order_relaxed), unit)) {
		best = (int)k->pref;
		ranking = 0;
	}
	/* relaxed: the control bytes only say where to look. A key recorded before this call has its
	 * tag here (C3 is sequenced before the CAS that recorded it), or BUSY from a later claim. The
	 * bytes are matched 8 at a time; the entries they name are looked at in order. */
	uint32_t cand = 0;
	for (uint32_t i = 0; i < DEDUP_PROBES / 8; i++)
		for (uint64_t m =
			     may_hold8(atomic_load_explicit(&g->ctrl_w[i], memory_order_relaxed), k->ctag);
		     m; m &= m - 1)
			cand |= 1u << (8 * i + byte_of_bit((unsigned)__builtin_ctzll(m)));
	for (uint32_t j = 0; ranking && j < DEDUP_PROBES; j++)
		if (rank(atomic_load_explicit(&g->ctrl[j], memory_order_relaxed),
			 atomic_load_explicit(&g->until[j], memory_order_relaxed), unit, j, &best, &best_age))
			__builtin_prefetch(entry_at(q, k->base + j), 1); /* the likely claim: ask early */
	for (; cand; cand &= cand - 1) {
		uint32_t j = (uint32_t)__builtin_ctz(cand);
		struct shmq_dedup_entry *e = entry_at(q, k->base + j);
		uint64_t v = word_of(q, k->base + j);
		if (de_state(v) == DE_CLAIMED) {
			if (de_tag(v) != k->tag || de_kind(v) != k->kind)
				continue;
			if (claimer_alive(q, v))
				return FIND_BUSY;
			if (dead < 0) {
				dead = (int)j;
				w = v;
			}
			continue;
		}
		if (live(q, v, now) && holds(e, v, k, msg_id))
			return FIND_FOUND;
	}
	if (!claim)
		return FIND_MISSING;
	uint32_t j = (uint32_t)dead;
	int evict = 0;
	if (dead < 0 && (evict = pick(q, k, best, now, &j, &w)) < 0)
		return FIND_BUSY; /* every entry of the group is being written: wait for one */
	/* C1: BUSY before the claim, so a claim is never seen under another key's tag (ordered
	 * before the word by C2's release half). Any claimer may store BUSY at any time: it only
	 * makes lookups look at the entry. */
	atomic_store_explicit(&g->ctrl[j], DC_BUSY, memory_order_relaxed);
	SHMQ_FAULT("dedup-busy-before-claim");
	/* C2: the claim, exclusive until commit or release; acquire so a taken-over claim's fields
	 * (msg_id) are read after the word that says they were left by a dead owner; seq_cst: a
	 * racer's C4 reads this word */
	uint64_t nw = de_make(q->epoch, q->owner, k->kind, DE_CLAIMED, k->tag);
	if (!atomic_compare_exchange_strong_explicit(&entry_at(q, k->base + j)->word, &w, nw,
						     memory_order_seq_cst, memory_order_relaxed))
		return FIND_RACED; /* our BUSY stays: a stale mark, it costs a look */
	SHMQ_FAULT("dedup-claimed-before-tag");
	/* C3: our tag, while the claim is ours. The previous holder's tag store came before its
	 * settle, which our CAS read: ours is the later one, and lookups ordered after our settle
	 * see it. seq_cst: pairs with a racer's C4 (seq_cst loads after its own C3): of two
	 * claimers of one key, one sees the other's tag (or a later BUSY), and then its word. C3,
	 * not C1: a claimer that released a word equal to the one we CASed from (same owner, kind
	 * and tag: ABA) may have stored its tag after our C1. */
	atomic_store_explicit(&g->ctrl[j], k->ctag, memory_order_seq_cst);
	hint(k, j, (uint16_t)(unit_of(k, now) + INT16_MAX)); /* claimed: as far ahead as hints go */
	if (evict)
		count(q, C_DEDUP_EVICTED, 1);
	c->idx = k->base + j;
	c->claimed = nw;
	*took_over = dead >= 0;
	return FIND_CLAIMED;
}

/* Ends our claim: VALID from now (commit), or released (time 0: reusable at once). Release
 * order: publishes the key bytes with the word. From our own claim word only: nobody takes a live
 * owner's claim, so the CAS fails only if we were taken for dead, and then the entry is not ours
 * to write. The control byte keeps our tag: a released entry's tag is stale, which costs a look. */
static void settle(shmq_t *q, const struct claim *c, const struct dkey *k, int commit)
{
	struct shmq_dedup_entry *e = entry_at(q, c->idx);
	uint64_t w = c->claimed, r = w;
	/* our next claim of this entry has this same word: clear its `ready` first, so lost_race()
	 * cannot read this claim's key as that one's. Ordered before the word by the release CAS, and
	 * so before any later claim (the claim CASes continue its release sequence). A CAS: a claim
	 * taken over is not ours to touch. */
	atomic_compare_exchange_strong_explicit(&e->ready, &r, 0, memory_order_relaxed, memory_order_relaxed);
	uint64_t now = now_ms(), ms = commit ? now | 1 : 0;
	/* the first unit that starts at or after the end of its window (live while ms + window >
	 * now), or now */
	uint64_t end = ms + q->dedup_window_ms + (1ULL << k->shift) - 1;
	hint(k, c->idx - k->base, commit ? unit_of(k, end) : unit_of(k, now));
	uint64_t nw = de_make(ms, q->owner, k->kind, DE_VALID, k->tag);
	atomic_compare_exchange_strong_explicit(&e->word, &w, nw, memory_order_release, memory_order_relaxed);
}

static void write_key(shmq_t *q, const struct claim *c, const struct dkey *k)
{
	struct shmq_dedup_entry *e = entry_at(q, c->idx);
	e->hash = k->hash;
	e->key_len = k->len;
	memcpy(e->key, k->key, k->len);
	/* release: pairs with lost_race()'s acquire, which then reads this claim's hash and key */
	atomic_store_explicit(&e->ready, c->claimed, memory_order_release);
}

/* Is the message a dead sender was sending under a claim still in the queue? */
static int still_queued(shmq_t *q, uint32_t i)
{
	uint64_t id1 = entry_at(q, i)->msg_id;
	if (!id1)
		return 0; /* it died before it had a slot */
	uint64_t id = id1 - 1;
	/* any id, a corrupted one too, maps to a slot of the queue: id_slot takes it modulo the lanes
	 * and the lane size */
	struct shmq_slot *s = slot_at(q, id_slot(q, id));
	uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
	unsigned st = w_state(w);
	return (st == SLOT_READY || st == SLOT_LEASED || st == SLOT_DELAYED || w_is_dead(w)) &&
	       ticket_diff(id_ticket(q, id), w_ticket(w)) == 0 && s->id == id;
}

/* Waits for a key another participant is recording; 0, or -EAGAIN past the deadline. */
static int wait_busy(unsigned *spins, uint64_t deadline)
{
	if (++*spins < BUSY_SPINS) {
		cpu_relax();
		return 0;
	}
	if (deadline && now_ns() >= deadline)
		return -EAGAIN;
	struct timespec ts = {0, BUSY_SLEEP_NS};
	nanosleep(&ts, NULL);
	return 0;
}

enum race {
	RACE_WON,     /* ours is the only claim or record of the key in the group */
	RACE_YIELD,   /* a claim below ours may be for the key: give ours back, look again */
	RACE_RECORDED /* another entry holds the key (*msg_id): give ours back, a duplicate */
};

/* After claiming entry `mine` (in the group) for k: does another entry of the group hold k, or
 * is another participant claiming it right now? C4: seq_cst loads after our C3, as every racer
 * does after its own. A claim above ours that may be for k is waited for (timeout_ms 0:
 * a bounded spin), then the group is read again; -EAGAIN past the deadline. */
static int lost_race(shmq_t *q, const struct dkey *k, uint32_t mine, uint64_t now, int timeout_ms,
		     uint64_t deadline, uint64_t *msg_id)
{
	unsigned spins = 0;
	for (;;) {
		int wait = 0;
		for (uint32_t j = 0; j < DEDUP_PROBES && !wait; j++) {
			if (j == mine ||
			    !may_hold(atomic_load_explicit(&k->g->ctrl[j], memory_order_seq_cst), k->ctag))
				continue;
			struct shmq_dedup_entry *e = entry_at(q, k->base + j);
			uint64_t w = atomic_load_explicit(&e->word, memory_order_seq_cst);
			if (de_state(w) != DE_CLAIMED) {
				if (live(q, w, now) && holds(e, w, k, msg_id))
					return RACE_RECORDED;
				continue;
			}
			if (de_tag(w) != k->tag || de_kind(w) != k->kind || !claimer_alive(q, w))
				continue;
			/* acquire: pairs with write_key's release. Its key written and another: ignore
			 * it (a claim is for one key: the word re-read after the key says so); else it
			 * may be ours */
			if (atomic_load_explicit(&e->ready, memory_order_acquire) == w) {
				int same = same_key(e, k);
				atomic_thread_fence(memory_order_acquire);
				if (!same && atomic_load_explicit(&e->word, memory_order_relaxed) == w)
					continue;
			}
			if (j < mine)
				return RACE_YIELD;
			wait = 1;
		}
		if (!wait)
			return RACE_WON;
		if (timeout_ms == 0 && spins >= BUSY_SPINS)
			return -EAGAIN;
		if (wait_busy(&spins, deadline))
			return -EAGAIN;
	}
}

/* Claims an entry for a key that is not live in the table. 1: found live (*msg_id set), 0:
 * claimed (*c), -EAGAIN: another participant kept recording this key past the deadline
 * (timeout_ms 0: no wait; < 0: no deadline). */
static int claim_key(shmq_t *q, struct dkey *k, int timeout_ms, struct claim *c, uint64_t *msg_id)
{
	uint64_t deadline = timeout_ms > 0 ? shmq_deadline(timeout_ms) : 0;
	unsigned spins = 0;
	place(q, k, 1);
	for (;;) {
		int took_over = 0;
		uint64_t now = now_ms();
		enum find f = find(q, k, 1, now, c, msg_id, &took_over);
		if (f == FIND_FOUND)
			return 1;
		if (f == FIND_CLAIMED) {
			struct shmq_dedup_entry *e = entry_at(q, c->idx);
			write_key(q, c, k);
			if (took_over && still_queued(q, c->idx)) {
				/* the dead sender's message made it: keep its record */
				*msg_id = e->msg_id - 1;
				settle(q, c, k, 1);
				return 1;
			}
			e->msg_id = 0;
			int r = lost_race(q, k, c->idx - k->base, now, timeout_ms, deadline, msg_id);
			if (r == RACE_WON)
				return 0;
			settle(q, c, k, 0);
			if (r == RACE_RECORDED)
				return 1;
			if (r < 0)
				return r;
			f = FIND_BUSY;
		}
		if (f == FIND_BUSY && (timeout_ms == 0 || wait_busy(&spins, deadline)))
			return -EAGAIN;
	}
}

int shmq_send_keyed(shmq_t *q, const void *key, size_t key_len, const void *data, size_t len, int timeout_ms,
		    uint64_t *id)
{
	return shmq_send_keyed_routed(q, NULL, 0, key, key_len, data, len, timeout_ms, id);
}

int shmq_send_keyed_routed(shmq_t *q, const void *rkey, size_t rkey_len, const void *key, size_t key_len,
			   const void *data, size_t len, int timeout_ms, uint64_t *id)
{
	if (foreign(q))
		return -ECHILD;
	struct dkey k;
	struct shmq_reservation r;
	struct claim c;
	uint64_t first = 0;
	int err;
	if (!q || (!data && len) || (err = make_key(DK_PUBLISHED, key, key_len, &k)) ||
	    (rkey && (!rkey_len || rkey_len > SHMQ_KEY_MAX)) || (!rkey && rkey_len))
		return -EINVAL;
	if (!rkey) { /* routed by the idempotency key itself */
		rkey = key;
		rkey_len = key_len;
	}
	if (!q->dedup)
		return -ENOTSUP;
	if (len + key_len > q->max_payload)
		return -EMSGSIZE;
	if ((err = claim_key(q, &k, timeout_ms, &c, &first)) < 0)
		return err;
	if (err == 1) {
		count(q, C_DUPLICATES, 1);
		if (id)
			*id = first;
		return SHMQ_DUPLICATE;
	}
	/* on a key-hash queue the routing key (by default the idempotency key: retries of one message
	 * then meet in one lane) picks the lane */
	if ((err = shmq_reserve_lane(q, shmq_dispatch_lane(q, rkey, rkey_len),
				     q->dispatch == SHMQ_DISPATCH_KEY_HASH, len + key_len, &r, timeout_ms))) {
		settle(q, &c, &k, 0);
		return err;
	}
	/* from here a crash leaves the claim with the message id: the next sender of this key
	 * finds the message (still_queued) instead of sending it again */
	uint64_t mid = msg_id(q, idx_lane(q, r.slot), r.token);
	entry_at(q, c.idx)->msg_id = mid + 1;
	memcpy(r.data, key, key_len);
	if (len)
		memcpy((unsigned char *)r.data + key_len, data, len);
	SHMQ_FAULT("keyed-before-commit");
	if ((err = shmq_commit_keyed(q, &r, len, (uint32_t)key_len))) {
		settle(q, &c, &k, 0);
		return err;
	}
	SHMQ_FAULT("keyed-before-record");
	settle(q, &c, &k, 1);
	if (id)
		*id = mid;
	return 0;
}

/* ---- consumer side: "work done" records --------------------------------------------------- */

#define DONE_WAIT_MS 1000 /* longest a done check waits for a mark of its key in progress */

static int mark(shmq_t *q, struct dkey *k)
{
	struct claim c;
	uint64_t unused;
	/* no wait: a key being recorded by another participant is being marked done by it */
	int r = claim_key(q, k, 0, &c, &unused);
	SHMQ_FAULT("mark-before-record");
	if (r == 0)
		settle(q, &c, k, 1);
	count(q, C_DONE_MARKED, 1);
	return 0;
}

static int check(shmq_t *q, struct dkey *k)
{
	struct claim unused_claim;
	uint64_t unused, deadline = shmq_deadline(DONE_WAIT_MS);
	int took_over;
	unsigned spins = 0;
	place(q, k, 0);
	for (;;) {
		enum find f = find(q, k, 0, now_ms(), &unused_claim, &unused, &took_over);
		if (f == FIND_FOUND) {
			count(q, C_DONE_HITS, 1);
			return 1;
		}
		/* missing, or a mark still in progress past the wait (its owner stopped): not done,
		 * as far as anyone can tell; the work is redone (at least once) */
		if (f == FIND_MISSING || wait_busy(&spins, deadline))
			return 0;
	}
}

/* The key a message is recorded done by: its own idempotency key, else its id. */
static int msg_key(const struct shmq_msg *m, uint64_t *idbuf, struct dkey *k)
{
	if (m->key && m->key_len)
		return make_key(DK_DONE_KEY, m->key, m->key_len, k);
	*idbuf = m->id;
	return make_key(DK_DONE_ID, idbuf, sizeof(*idbuf), k);
}

int shmq_done_mark(shmq_t *q, const void *key, size_t key_len)
{
	if (foreign(q))
		return -ECHILD;
	struct dkey k;
	if (!q || make_key(DK_DONE_KEY, key, key_len, &k))
		return -EINVAL;
	return q->dedup ? mark(q, &k) : -ENOTSUP;
}

int shmq_done_check(shmq_t *q, const void *key, size_t key_len)
{
	if (foreign(q))
		return -ECHILD;
	struct dkey k;
	if (!q || make_key(DK_DONE_KEY, key, key_len, &k))
		return -EINVAL;
	return q->dedup ? check(q, &k) : -ENOTSUP;
}

int shmq_is_done(shmq_t *q, const struct shmq_msg *m)
{
	if (foreign(q))
		return -ECHILD;
	struct dkey k;
	uint64_t idbuf;
	if (!q || !m || msg_key(m, &idbuf, &k))
		return -EINVAL;
	return q->dedup ? check(q, &k) : -ENOTSUP;
}

int shmq_ack_done(shmq_t *q, struct shmq_msg *m)
{
	if (foreign(q))
		return -ECHILD;
	struct dkey k;
	uint64_t idbuf;
	if (!q || !m || msg_key(m, &idbuf, &k))
		return -EINVAL;
	if (!q->dedup)
		return -ENOTSUP;
	/* the record first: a crash between the two redelivers a message that is recognised */
	int r = mark(q, &k);
	SHMQ_FAULT("done-before-ack");
	return r ? r : shmq_ack(q, m);
}

/* SPDX-License-Identifier: MIT */
/*
 * dedup.c: idempotency keys. One table in the segment (layout.h has its format) serves both
 * sides: "published" keys, which make a repeated keyed send within the window a no-op, and
 * "done" records, which let a consumer recognise a redelivered message whose work is already
 * done. Every entry change is one CAS on its word; a key is written only while its entry is
 * CLAIMED by the writer, and a claim whose owner died (kernel lock probe) is taken over, so no
 * crash leaves a key stuck. Eviction: a key may live in one of DEDUP_PROBES entries from its
 * hash; when all of them hold live keys, the oldest is overwritten before its window ends
 * (counted as dedup_evicted): a full table shortens the window, it never blocks a send.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define BUSY_SPINS 64	     /* polls of a key another participant is recording, before sleeping */
#define BUSY_SLEEP_NS 100000 /* then this long between polls */

struct dkey {
	unsigned kind;
	const unsigned char *key;
	uint32_t len;
	uint64_t hash;
	unsigned tag;
};

enum find {
	FIND_FOUND,   /* a live entry holds the key */
	FIND_MISSING, /* lookup only: no live entry holds it */
	FIND_CLAIMED, /* an entry was claimed for it: write it, then commit or release */
	FIND_BUSY,    /* a live participant is recording this key right now */
	FIND_RACED,   /* the entry changed under our CAS: look again */
};

static struct shmq_dedup_entry *entry_at(const shmq_t *q, uint64_t i)
{
	return (struct shmq_dedup_entry *)(q->dedup + (i & q->dedup_mask) * SHMQ_DEDUP_ENTRY_SIZE);
}

static int make_key(unsigned kind, const void *key, size_t len, struct dkey *k)
{
	if (!key || len == 0 || len > SHMQ_KEY_MAX)
		return -EINVAL;
	/* kinds are told apart in the entry word too; the offset only spreads them over the table */
	uint64_t h = shmq_hash(key, len) + kind * 0x9e3779b97f4a7c15ULL;
	*k = (struct dkey){
		.kind = kind, .key = key, .len = (uint32_t)len, .hash = h, .tag = (unsigned)(h >> 55)};
	return 0;
}

/* Does entry e, seen with word w, hold key k? Seqlock-style: the fields are read between two
 * loads of the word, and count only if the word did not change (the entry may be recycled). */
static int holds(const struct shmq_dedup_entry *e, uint64_t w, const struct dkey *k, uint64_t *msg_id)
{
	if (de_kind(w) != k->kind || de_tag(w) != k->tag)
		return 0;
	uint32_t len = e->key_len;
	int same = e->hash == k->hash && len == k->len && !memcmp(e->key, k->key, k->len);
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

/* Looks for key k along its probe run. With claim, takes an entry for it when it is missing:
 * the first empty, released, expired or dead-claimed one, else the oldest live one (eviction). */
static enum find find(shmq_t *q, const struct dkey *k, int claim, uint32_t *idx, uint64_t *claimed,
		      uint64_t *msg_id, int *took_over)
{
	uint64_t now = now_ms();
	int have = 0, same_claim = 0;
	uint32_t cand = 0, oldest = 0;
	uint64_t cand_w = 0, oldest_w = 0, oldest_ms = UINT64_MAX;
	for (uint32_t j = 0; j < DEDUP_PROBES; j++) {
		uint32_t i = (uint32_t)(k->hash + j) & q->dedup_mask;
		struct shmq_dedup_entry *e = entry_at(q, i);
		/* acquire: pairs with the release CAS that made it VALID: its key bytes are readable */
		uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
		unsigned st = de_state(w);
		if (st == DE_EMPTY) {
			if (!have) {
				have = 1;
				cand = i;
				cand_w = w;
			}
			break; /* entries are never emptied again: the key is not further on */
		}
		if (st == DE_CLAIMED) {
			int mine = de_tag(w) == k->tag && de_kind(w) == k->kind;
			if (claimer_alive(q, w)) {
				if (mine)
					return FIND_BUSY;
				continue;
			}
			if (!have) {
				have = 1;
				cand = i;
				cand_w = w;
				same_claim = mine;
			}
			continue;
		}
		if (live(q, w, now)) {
			if (holds(e, w, k, msg_id))
				return FIND_FOUND;
			if (de_ms(w) < oldest_ms) {
				oldest_ms = de_ms(w);
				oldest = i;
				oldest_w = w;
			}
		} else if (!have) {
			have = 1;
			cand = i;
			cand_w = w;
		}
	}
	if (!claim)
		return FIND_MISSING;
	int evict = 0;
	if (!have) {
		if (oldest_ms == UINT64_MAX)
			return FIND_BUSY; /* every entry of the run is being written: wait for one */
		cand = oldest;
		cand_w = oldest_w;
		evict = 1;
	}
	/* the claim: exclusive until commit or release; acquire so a taken-over claim's fields
	 * (msg_id) are read after the word that says they were left by a dead owner */
	uint64_t nw = de_make(q->epoch, q->owner, k->kind, DE_CLAIMED, k->tag);
	if (!atomic_compare_exchange_strong_explicit(&entry_at(q, cand)->word, &cand_w, nw,
						     memory_order_acquire, memory_order_relaxed))
		return FIND_RACED;
	if (evict)
		count(q, C_DEDUP_EVICTED, 1);
	*idx = cand;
	*claimed = nw;
	*took_over = same_claim;
	return FIND_CLAIMED;
}

/* A claim in progress: entry idx, which we moved to word `claimed`. */
struct claim {
	uint32_t idx;
	uint64_t claimed;
};

/* Ends our claim: VALID from now (commit), or released (time 0: reusable at once, and it still
 * does not end a probe). Release order: publishes the key bytes with the word. From our own
 * claim word only: nobody takes a live owner's claim, so the CAS fails only if we were taken for
 * dead, and then the entry is not ours to write. */
static void settle(shmq_t *q, const struct claim *c, const struct dkey *k, int commit)
{
	struct shmq_dedup_entry *e = entry_at(q, c->idx);
	uint64_t w = c->claimed, r = w;
	/* our next claim of this entry has this same word: clear its `ready` first, so lost_race()
	 * cannot read this claim's key as that one's. Ordered before the word by the release CAS, and
	 * so before any later claim (the claim CASes continue its release sequence). A CAS: a claim
	 * taken over is not ours to touch. */
	atomic_compare_exchange_strong_explicit(&e->ready, &r, 0, memory_order_relaxed, memory_order_relaxed);
	uint64_t nw = de_make(commit ? (now_ms() | 1) : 0, q->owner, k->kind, DE_VALID, k->tag);
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

/* After claiming entry i for k: did another participant claim another entry for k meanwhile
 * (each saw a different first free entry, because one changed between their scans)? The entry
 * earlier in the probe run wins; the later one is given back and its sender waits. */
static int lost_race(shmq_t *q, const struct dkey *k, uint32_t mine, uint64_t *msg_id)
{
	uint64_t now = now_ms();
	for (uint32_t j = 0; j < DEDUP_PROBES; j++) {
		uint32_t i = (uint32_t)(k->hash + j) & q->dedup_mask;
		if (i == mine)
			return 0; /* ours comes first: others yield to us */
		struct shmq_dedup_entry *e = entry_at(q, i);
		uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
		if (de_state(w) == DE_EMPTY)
			return 0;
		if (de_state(w) == DE_CLAIMED && de_tag(w) == k->tag && de_kind(w) == k->kind &&
		    claimer_alive(q, w)) {
			/* an earlier claim for this key wins; one for another key with the same tag is
			 * ignored (yielding to it too could make two claimers yield to each other
			 * forever); one whose key is not written yet might be ours: yield for now */
			if (atomic_load_explicit(&e->ready, memory_order_acquire) != w)
				return 1;
			if (e->hash == k->hash && e->key_len == k->len && !memcmp(e->key, k->key, k->len))
				return 1;
			continue;
		}
		if (de_state(w) == DE_VALID && live(q, w, now) && holds(e, w, k, msg_id))
			return 1;
	}
	return 0;
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

/* Claims an entry for a key that is not live in the table. 1: found live (*msg_id set), 0:
 * claimed (*c), -EAGAIN: another participant kept recording this key past the deadline
 * (timeout_ms 0: no wait; < 0: no deadline). */
static int claim_key(shmq_t *q, const struct dkey *k, int timeout_ms, struct claim *c, uint64_t *msg_id)
{
	uint64_t deadline = timeout_ms > 0 ? shmq_deadline(timeout_ms) : 0;
	unsigned spins = 0;
	for (;;) {
		int took_over = 0;
		enum find f = find(q, k, 1, &c->idx, &c->claimed, msg_id, &took_over);
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
			if (!lost_race(q, k, c->idx, msg_id))
				return 0;
			settle(q, c, k, 0);
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

static int mark(shmq_t *q, const struct dkey *k)
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

static int check(shmq_t *q, const struct dkey *k)
{
	uint32_t i;
	uint64_t unused, deadline = shmq_deadline(DONE_WAIT_MS);
	int took_over;
	unsigned spins = 0;
	for (;;) {
		enum find f = find(q, k, 0, &i, &unused, &unused, &took_over);
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

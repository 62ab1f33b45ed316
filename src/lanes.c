/* SPDX-License-Identifier: MIT */
/*
 * lanes.c: which lane a send goes to (the dispatch policies) and which lanes a consumer serves.
 *
 * Lanes are shared out among the active consumers found in the participant registry, with no
 * shared state of their own: every consumer computes the same function of the registry. A
 * consumer counts when its record says it receives, its process is alive (the kernel lock probe)
 * and it polled or extended a lease within one lease length (a consumer that did neither holds no
 * live lease). Ranked by record index, consumer r of C serves the lanes l with l % C == r; with
 * more consumers than lanes, consumer r shares lane r % L with the others of that lane, except on
 * a key-hash queue, where one lane has one consumer (per-key order) and the extra ones stand by.
 * Consumers recompute every ASSIGN_REFRESH_MS, so a dead or departed consumer's lanes move to
 * the others within that time.
 *
 * On a key-hash queue that is not enough: a consumer that lost a lane would serve it from its
 * cached assignment until its next refresh, and one key's messages would be in two hands. So the
 * header's assign_gen word holds a generation and the consumer set (a hash of the ranked record
 * indexes) the views of that generation were computed from: views of one generation then agree,
 * since the assignment is a function of the set. A consumer that computes another set (someone
 * died, was counted out for idling, came or left) moves the word to the next generation with its
 * own set before it uses its view; changes a live consumer makes (its first receive, its return
 * after idling, its close) also bump the generation, so the others look at once. Each
 * first-delivery take (shmq_kh_begin) first counts itself in its record's kh_taking, then reads
 * the word, and recomputes its lanes if the generation moved. After a move every lane is taken up
 * again as if gained: only when no other live consumer is inside a take (kh_taking: one may still
 * be working from an older generation) and none holds a lease in the lane (its last message of a
 * key must be settled before we hand out the next). The two sides pair like Dekker's: the mover's
 * seq_cst RMW before the gainer's seq_cst load of the word, then of every kh_taking, the taker's
 * seq_cst kh_taking increment before its seq_cst load of the word; so either the taker sees the
 * new generation, or the gainer sees it inside, or it was out before and its lease is in the slots
 * the gainer scans. A dead consumer moves nothing: the first survivor whose refresh finds it gone
 * does (it takes nothing meanwhile).
 *
 * A live consumer can stay inside a take for long: stopped by SIGSTOP, a debugger or a freezer.
 * Waiting for it would stall every take-up. So a gainer that finds a take inside whose consumer
 * has not polled for a lease (the others count it out of the assignment too) fences it instead: a
 * CAS adds one to the fences half of its kh_taking word. The take's end, an RMW of the same word,
 * comes after that CAS or before it: after, it sees the fence and gives back what it took (the
 * message goes DELAYED, due at once, with its delivery uncounted); before, the CAS fails and the
 * gainer looks again later, by when the ended take's lease is visible. A take that begins after
 * the fence reads the word after the gainer's move: its view is current.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "handle.h"
#include "lanes.h"
#include "registry.h"

uint64_t shmq_hash(const void *key, size_t len)
{
	/* Eight bytes per step (a byte per step made a 16-byte key's hash a chain of 16 dependent
	 * multiplies), each step a bijection of the word, then murmur3's finaliser so that the low
	 * bits are as good as the high ones. Part of the segment format: every participant places a
	 * key (lane, dedup group) alike. */
	uint64_t h = 0xcbf29ce484222325ULL ^ len;
	const unsigned char *p = key;
	for (; len >= 8; len -= 8, p += 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	if (len) {
		uint64_t w = 0;
		memcpy(&w, p, len);
		h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Is record i an active consumer? self (index) is alive by definition: our own OFD lock never
 * conflicts with our own probe. fd < 0 (an image): liveness unknown, counted as alive. */
static int active_consumer(const unsigned char *parts, uint32_t i, int fd, uint32_t self, uint64_t now,
			   uint32_t lease_ms)
{
	const struct shmq_participant *p = (const void *)(parts + (uint64_t)i * SHMQ_PART_SIZE);
	/* acquire: pairs with attach's claim CAS (claim_record clears role before it); role is set
	 * later, relaxed: a consumer is seen as one at the next refresh (within ASSIGN_REFRESH_MS) */
	uint64_t st = atomic_load_explicit(&p->state, memory_order_acquire);
	if ((st & 0xff) != PART_ALIVE ||
	    atomic_load_explicit(&p->role, memory_order_relaxed) != PART_CONSUMER)
		return 0;
	if (i == self)
		return 1;
	uint64_t last = atomic_load_explicit(&p->last_active_ms, memory_order_relaxed);
	if (now > last && now - last > lease_ms)
		return 0;
	return fd < 0 || shmq_lock_probe(fd, i) != 0;
}

/* Ranks the active consumers: fills ranks[] with their record indexes (up to max_out), returns
 * how many there are, *my_rank with self's rank (UINT32_MAX: self is not one) and *set with a hash
 * of the ranked indexes (the assignment is a function of them). */
static uint32_t rank_consumers(const struct shmq_assign_ctx *c, uint32_t *my_rank, uint32_t *ranks,
			       uint32_t max_out, uint32_t *set)
{
	uint32_t n = 0;
	uint64_t h = 0xcbf29ce484222325ULL;
	*my_rank = UINT32_MAX;
	for (uint32_t i = 0; i < c->max_parts; i++) {
		if (!active_consumer(c->parts, i, c->fd, c->self, c->now_ms, c->lease_ms))
			continue;
		if (i == c->self)
			*my_rank = n;
		if (n < max_out)
			ranks[n] = i;
		h = (h ^ i) * 0x100000001b3ULL;
		n++;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	*set = (uint32_t)h;
	return n;
}

/* shmq_lanes_assigned, and *set the consumer set it comes from (rank_consumers) */
static uint32_t lanes_assigned(const struct shmq_assign_ctx *c, uint32_t *set)
{
	uint32_t me, n = rank_consumers(c, &me, NULL, 0, set);
	if (me == UINT32_MAX || !n)
		return 0;
	if (n > c->lanes) {
		if (c->exclusive && me >= c->lanes)
			return 0; /* standing by */
		return 1u << (me % c->lanes);
	}
	uint32_t home = 0;
	for (uint32_t l = me; l < c->lanes; l += n)
		home |= 1u << l;
	return home;
}

uint32_t shmq_lanes_assigned(const struct shmq_assign_ctx *c)
{
	uint32_t set;
	return lanes_assigned(c, &set);
}

uint32_t shmq_lane_consumers(const struct shmq_assign_ctx *c, uint32_t *owner)
{
	uint32_t me, set, ranks[SHMQ_LANES_MAX];
	uint32_t n = rank_consumers(c, &me, ranks, SHMQ_LANES_MAX, &set);
	for (uint32_t l = 0; l < c->lanes; l++)
		owner[l] = n ? ranks[l % (n < c->lanes ? n : c->lanes)] + 1 : 0;
	return n;
}

#ifdef SHMQ_TEST
static _Atomic uint64_t kh_scanned;
uint64_t shmq_test_kh_scanned(void) { return atomic_load_explicit(&kh_scanned, memory_order_relaxed); }
#define KH_SCANNED(n) atomic_fetch_add_explicit(&kh_scanned, (n), memory_order_relaxed)
#else
#define KH_SCANNED(n) ((void)0)
#endif

/* Slot words a take-up reads per receive at most (over all its lanes): a lane of up to that many
 * slots (the default queue has 1024) is looked through by one receive, one of 2^20 slots by 64,
 * none of which stalls for the whole lane. */
#define KH_SCAN_BUDGET 16384u

/* Looks on for leases of other live consumers in lane l from slot *k, reading at most *budget
 * slot words; 1 once the whole lane was found clear. A lease found stops the look there (*k), and
 * the next look starts with that one word: while it holds the same lease, its holder is probed
 * again only every ASSIGN_REFRESH_MS (a dead one's lease does not hold the lane). */
static int lane_clear(shmq_t *q, uint32_t l, uint32_t *k, uint32_t *budget, uint64_t now)
{
	for (; *k <= q->lane_mask && *budget; ++*k, --*budget) {
		KH_SCANNED(1);
		uint64_t w =
			atomic_load_explicit(&slot_at(q, lane_idx(q, l, *k))->word, memory_order_relaxed);
		unsigned own = w_owner(w);
		if (w_state(w) != SLOT_LEASED || own == q->owner || !own)
			continue;
		uint64_t at = atomic_load_explicit(&q->kh[l].scan_probed_ms, memory_order_relaxed);
		if (atomic_load_explicit(&q->kh[l].scan_word, memory_order_relaxed) == w && now >= at &&
		    now - at < ASSIGN_REFRESH_MS)
			return 0; /* the same lease as at the last look: still held */
		if (!shmq_part_alive(q, own - 1))
			continue;
		/* relaxed: hints for this handle's threads; a stale pair costs a probe or a look */
		atomic_store_explicit(&q->kh[l].scan_word, w, memory_order_relaxed);
		atomic_store_explicit(&q->kh[l].scan_probed_ms, now, memory_order_relaxed);
		return 0;
	}
	return *k > q->lane_mask;
}

void shmq_consumer_poll(shmq_t *q, uint64_t now)
{
	/* relaxed, our own record (the line our counters are on): assigners elsewhere read role
	 * and the time as "a consumer, still polling" at their next refresh */
	if (q->dispatch != SHMQ_DISPATCH_KEY_HASH) {
		shmq_consumer_mark(q, now);
		return;
	}
	int joined = atomic_load_explicit(&q->me->role, memory_order_relaxed) != PART_CONSUMER;
	if (joined)
		atomic_store_explicit(&q->me->role, PART_CONSUMER, memory_order_relaxed);
	/* key-hash: the others count a consumer out after a lease without polling; back from a
	 * pause that long (three quarters of it, to be sure), we may have lost our lanes meanwhile
	 * without noticing, so we take them all up again as a newcomer does, and announce it */
	uint64_t last = atomic_load_explicit(&q->me->last_active_ms, memory_order_relaxed);
	atomic_store_explicit(&q->me->last_active_ms, now, memory_order_relaxed);
	if (joined || (now > last && now - last >= q->lease_ms - q->lease_ms / 4)) {
		atomic_store_explicit(&q->kh_view, 0, memory_order_relaxed);
		shmq_assignment_changed(q);
	}
}

static void assign_ctx(shmq_t *q, uint64_t now, struct shmq_assign_ctx *c)
{
	*c = (struct shmq_assign_ctx){
		.parts = q->parts,
		.max_parts = q->max_parts,
		.lanes = q->lanes,
		.fd = q->fd,
		.self = q->part,
		.now_ms = now,
		.lease_ms = q->lease_ms,
		.exclusive = q->dispatch == SHMQ_DISPATCH_KEY_HASH,
	};
}

uint32_t shmq_home_lanes(shmq_t *q, uint64_t now)
{
	uint64_t at = atomic_load_explicit(&q->home_at_ms, memory_order_relaxed);
	if (at && now - at < ASSIGN_REFRESH_MS && now >= at)
		return atomic_load_explicit(&q->home, memory_order_relaxed);
	struct shmq_assign_ctx c;
	assign_ctx(q, now, &c);
	uint32_t home = shmq_lanes_assigned(&c);
	/* relaxed: a hint for this handle's threads; two computing at once get the same answer */
	atomic_store_explicit(&q->home, home, memory_order_relaxed);
	atomic_store_explicit(&q->home_at_ms, now ? now : 1, memory_order_relaxed);
	return home;
}

/* kh_taking: [ fences:16 | count:16 ] (see the top of this file) */
#define KH_COUNT_MASK 0xffffu
#define KH_FENCE (1u << 16)

/* Is another live participant inside a key-hash take? It may be working from an assignment older
 * than ours. A take of a participant that has not polled for a lease is fenced, not waited for. */
static int others_taking(shmq_t *q, uint64_t now)
{
	for (uint32_t i = 0; i < q->max_parts; i++) {
		if (i == q->part)
			continue;
		struct shmq_participant *p = part_at(q, i);
		/* seq_cst: after our seq_cst load of the word, the other half of the pair (top of
		 * file); reading a count lowered by shmq_kh_end() (release) also makes that take's
		 * lease CASes visible to the slot scan that follows */
		uint32_t t = atomic_load_explicit(&p->kh_taking, memory_order_seq_cst);
		if (!(t & KH_COUNT_MASK) ||
		    (atomic_load_explicit(&p->state, memory_order_acquire) & 0xff) != PART_ALIVE ||
		    !shmq_part_alive(q, i))
			continue;
		uint64_t last = atomic_load_explicit(&p->last_active_ms, memory_order_relaxed);
		if (now <= last || now - last <= q->lease_ms)
			return 1;
		/* seq_cst: ordered with the take's end (an RMW of the same word): see the top of file */
		if (!atomic_compare_exchange_strong_explicit(&p->kh_taking, &t, t + KH_FENCE,
							     memory_order_seq_cst, memory_order_relaxed))
			return 1;
	}
	return 0;
}

/* Of the key-hash lanes in want (assigned to us at generation gen, not yet served), those we may
 * start serving. A lane's look through its slots starts only when no other consumer is inside a
 * take; from then on no take from an older generation can start (its load of the word would see
 * ours), and every lease of one that ended is visible: so the look may go on over several calls,
 * each slot found clear staying clear of older generations' leases. */
static uint32_t takeable(shmq_t *q, uint32_t want, uint32_t gen, uint64_t now)
{
	uint32_t ok = 0, budget = KH_SCAN_BUDGET;
	int out = 0; /* others_taking() found nobody inside, in this call */
	for (uint32_t l = 0; want >> l; l++) {
		if (!(want >> l & 1))
			continue;
		/* acquire: pairs with the release store below, made after the others_taking() that
		 * made older takes' leases visible, by whichever thread of the handle started it */
		uint64_t sc = atomic_load_explicit(&q->kh[l].scan, memory_order_acquire);
		uint32_t k = (uint32_t)(sc >> 32) == gen ? (uint32_t)sc : 0;
		if (!k) {
			if (!out && others_taking(q, now))
				return ok;
			out = 1;
			k = 1;
		}
		uint32_t slot = k - 1;
		if (lane_clear(q, l, &slot, &budget, now))
			ok |= 1u << l;
		atomic_store_explicit(&q->kh[l].scan, (uint64_t)gen << 32 | (slot + 1), memory_order_release);
	}
	return ok;
}

static uint64_t kv_make(uint32_t gen, uint32_t waiting, uint32_t serving)
{
	return (uint64_t)gen << 32 | (uint64_t)(waiting & 0xffff) << 16 | (serving & 0xffff);
}

/* Tries to move the assignment word from *word (read) to the next generation with consumer set
 * `set`; *word is then the word that holds (0: it kept moving, look again at the next take). */
static int move_word(shmq_t *q, uint64_t *word, uint32_t set)
{
	for (int k = 0; k < 4; k++) {
		if ((uint32_t)*word == set)
			return 1; /* someone moved it to our set already */
		uint64_t nw = (uint64_t)((uint32_t)(*word >> 32) + 1) << 32 | set;
		/* seq_cst: the mover's half of the pair (top of file), like shmq_assignment_changed;
		 * a failure is a seq_cst load of the word that moved it */
		if (atomic_compare_exchange_strong_explicit(&q->hdr->assign_gen, word, nw,
							    memory_order_seq_cst, memory_order_seq_cst)) {
			*word = nw;
			return 1;
		}
	}
	return 0;
}

/* The lanes a key-hash take may use, seen with assignment word `word` (see the top of this file). */
static uint32_t kh_lanes(shmq_t *q, uint64_t now, uint64_t word)
{
	/* relaxed: the handle's own threads; the word is whole, so a view is never mixed */
	uint64_t v = atomic_load_explicit(&q->kh_view, memory_order_relaxed);
	uint32_t serving = v & 0xffff, waiting = (v >> 16) & 0xffff, gen = (uint32_t)(word >> 32);
	uint64_t at = atomic_load_explicit(&q->home_at_ms, memory_order_relaxed);
	int same = (uint32_t)(v >> 32) == gen;
	if (!same || !at || now < at || now - at >= ASSIGN_REFRESH_MS) {
		struct shmq_assign_ctx c;
		uint32_t set;
		assign_ctx(q, now, &c);
		uint32_t assigned = lanes_assigned(&c, &set);
		/* Another set than the word's: a consumer died, was counted out or came back
		 * unannounced, and views of this generation may give a lane of ours to its previous
		 * consumer. Move the word first, so that one re-checks before its next take. */
		if (set != (uint32_t)word && !move_word(q, &word, set))
			return 0;
		same = (uint32_t)(v >> 32) == (uint32_t)(word >> 32);
		gen = (uint32_t)(word >> 32);
		/* After a move every lane is taken up again as if gained: we may have lost it and got
		 * it back meanwhile, its holder in between still working on a key. */
		serving = same ? serving & assigned : 0;
		waiting = assigned & ~serving;
		atomic_store_explicit(&q->home_at_ms, now ? now : 1, memory_order_relaxed);
	}
	if (waiting) {
		uint32_t ok = takeable(q, waiting, gen, now);
		serving |= ok;
		waiting &= ~ok;
	}
	uint64_t nv = kv_make(gen, waiting, serving);
	if (nv != v) {
		atomic_store_explicit(&q->kh_view, nv, memory_order_relaxed);
		/* a hint for sleepers and batches (ring.c), like on other queues */
		atomic_store_explicit(&q->home, serving, memory_order_relaxed);
	}
	return serving;
}

uint32_t shmq_kh_begin(shmq_t *q, uint64_t now, uint32_t *fence)
{
	/* seq_cst increment, then seq_cst load: our half of the pair (top of file) */
	*fence = atomic_fetch_add_explicit(&q->me->kh_taking, 1, memory_order_seq_cst) & ~KH_COUNT_MASK;
	uint64_t word = atomic_load_explicit(&q->hdr->assign_gen, memory_order_seq_cst);
	return kh_lanes(q, now, word);
}

int shmq_kh_end(shmq_t *q, uint32_t fence)
{
	/* release: the lease CASes of this take come first; pairs with others_taking()'s load. A
	 * fence added since our begin: a gainer counted this take out (others_taking) */
	uint32_t t = atomic_fetch_sub_explicit(&q->me->kh_taking, 1, memory_order_release);
	return (t & ~KH_COUNT_MASK) != fence;
}

uint64_t shmq_lane_backlog(shmq_t *q, uint32_t l)
{
	/* relaxed: an estimate; the head may pass the tail by nothing, read it first */
	uint64_t hd = atomic_load_explicit(&q->hdr->lane[l].cons_head, memory_order_relaxed);
	uint64_t tl = atomic_load_explicit(&q->hdr->lane[l].prod_tail, memory_order_relaxed);
	return tl > hd ? tl - hd : 0;
}

/* Smooth weighted round robin (nginx's): every pick adds each lane's weight to its current value
 * and takes the largest, which then gives back the total. Shares follow the weights exactly over
 * each cycle of sum(weights) picks, and a heavy lane's picks are spread out, not bunched. */
static uint32_t weighted(shmq_t *q)
{
	while (atomic_exchange_explicit(&q->wrr_lock, 1, memory_order_acquire))
		cpu_relax(); /* held for a few dozen instructions by another thread of this process */
	int32_t total = 0;
	uint32_t best = 0;
	for (uint32_t l = 0; l < q->lanes; l++) {
		q->wrr_cur[l] += (int32_t)q->weights[l];
		total += (int32_t)q->weights[l];
		if (q->wrr_cur[l] > q->wrr_cur[best])
			best = l;
	}
	q->wrr_cur[best] -= total;
	atomic_store_explicit(&q->wrr_lock, 0, memory_order_release);
	return best;
}

static uint32_t least_loaded(shmq_t *q)
{
	if (q->lanes <= 4) {
		uint32_t best = 0;
		uint64_t min = UINT64_MAX;
		/* start at a rotating lane, so ties do not all go to lane 0 */
		uint32_t start = seq_next(q, &q->rr_next);
		for (uint32_t k = 0; k < q->lanes; k++) {
			uint32_t l = (start + k) % q->lanes;
			uint64_t b = shmq_lane_backlog(q, l);
			if (b < min) {
				min = b;
				best = l;
			}
		}
		return best;
	}
	/* the power of two choices: nearly as even as looking at all, at two lanes' cost */
	uint32_t a = random_u32() % q->lanes, b = random_u32() % (q->lanes - 1);
	if (b >= a)
		b++;
	return shmq_lane_backlog(q, b) < shmq_lane_backlog(q, a) ? b : a;
}

uint32_t shmq_dispatch_policy(shmq_t *q, const void *rkey, size_t rkey_len)
{
	switch (q->dispatch) {
	case SHMQ_DISPATCH_RANDOM:
		return random_u32() % q->lanes;
	case SHMQ_DISPATCH_WEIGHTED:
		return weighted(q);
	case SHMQ_DISPATCH_KEY_HASH:
		if (rkey && rkey_len)
			return (uint32_t)(shmq_hash(rkey, rkey_len) % q->lanes);
		break;
	case SHMQ_DISPATCH_LEAST_LOADED:
		return least_loaded(q);
	default:
		break;
	}
	/* sticky, like Kafka's sticky partitioner: runs of RR_RUN sends per lane, so a consumer finds
	 * a run where it looks instead of one message per lane (measured: 1P1C on 2 lanes went from
	 * ~2.8 to ~8 M msg/s). Shares stay exact over every RR_RUN x lanes sends. */
	return seq_next(q, &q->rr_next) / RR_RUN % q->lanes;
}

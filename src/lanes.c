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
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

uint64_t shmq_hash(const void *key, size_t len)
{
	/* FNV-1a, then murmur3's finaliser so that the low bits are as good as the high ones */
	uint64_t h = 0xcbf29ce484222325ULL;
	const unsigned char *p = key;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
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
	/* acquire: pairs with the release CAS that freed the record (shmq_part_release clears role
	 * before it) and with attach's claim CAS; role is set later, relaxed: a consumer is seen
	 * as one at the next refresh (within ASSIGN_REFRESH_MS) */
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
 * how many there are, and *my_rank with self's rank (UINT32_MAX: self is not one). */
static uint32_t rank_consumers(const struct shmq_assign_ctx *c, uint32_t *my_rank, uint32_t *ranks,
			       uint32_t max_out)
{
	uint32_t n = 0;
	*my_rank = UINT32_MAX;
	for (uint32_t i = 0; i < c->max_parts; i++) {
		if (!active_consumer(c->parts, i, c->fd, c->self, c->now_ms, c->lease_ms))
			continue;
		if (i == c->self)
			*my_rank = n;
		if (n < max_out)
			ranks[n] = i;
		n++;
	}
	return n;
}

uint32_t shmq_lanes_assigned(const struct shmq_assign_ctx *c)
{
	uint32_t me, n = rank_consumers(c, &me, NULL, 0);
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

uint32_t shmq_lane_consumers(const struct shmq_assign_ctx *c, uint32_t *owner)
{
	uint32_t me, ranks[SHMQ_LANES_MAX];
	uint32_t n = rank_consumers(c, &me, ranks, SHMQ_LANES_MAX);
	for (uint32_t l = 0; l < c->lanes; l++)
		owner[l] = n ? ranks[l % (n < c->lanes ? n : c->lanes)] + 1 : 0;
	return n;
}

/* Does a live consumer other than us hold a lease in lane l? */
static int foreign_leases(shmq_t *q, uint32_t l)
{
	for (uint32_t k = 0; k <= q->lane_mask; k++) {
		uint64_t w = atomic_load_explicit(&slot_at(q, lane_idx(q, l, k))->word, memory_order_relaxed);
		unsigned own = w_owner(w);
		if (w_state(w) == SLOT_LEASED && own != q->owner && own && shmq_part_alive(q, own - 1))
			return 1;
	}
	return 0;
}

void shmq_consumer_poll(shmq_t *q, uint64_t now)
{
	/* relaxed, our own record (the line our counters are on): assigners elsewhere read role
	 * and the time as "a consumer, still polling" at their next refresh */
	if (atomic_load_explicit(&q->me->role, memory_order_relaxed) != PART_CONSUMER)
		atomic_store_explicit(&q->me->role, PART_CONSUMER, memory_order_relaxed);
	atomic_store_explicit(&q->me->last_active_ms, now, memory_order_relaxed);
}

uint32_t shmq_home_lanes(shmq_t *q, uint64_t now)
{
	uint64_t at = atomic_load_explicit(&q->home_at_ms, memory_order_relaxed);
	if (at && now - at < ASSIGN_REFRESH_MS && now >= at)
		return atomic_load_explicit(&q->home, memory_order_relaxed);
	struct shmq_assign_ctx c = {
		.parts = q->parts,
		.max_parts = q->max_parts,
		.lanes = q->lanes,
		.fd = q->fd,
		.self = q->part,
		.now_ms = now,
		.lease_ms = q->lease_ms,
		.exclusive = q->dispatch == SHMQ_DISPATCH_KEY_HASH,
	};
	uint32_t home = shmq_lanes_assigned(&c);
	if (c.exclusive) {
		/* a key-hash lane we gain is taken up only once its previous consumer holds no lease
		 * in it: that one may still be working on a message of a key whose next message we
		 * would otherwise take at the same time (a dead holder's leases do not count: the
		 * reclaim pass requeues them) */
		uint32_t gained = home & ~atomic_load_explicit(&q->home, memory_order_relaxed);
		for (uint32_t l = 0; gained >> l; l++)
			if ((gained >> l & 1) && foreign_leases(q, l))
				home &= ~(1u << l);
	}
	/* relaxed: a hint for this handle's threads; two computing at once get the same answer */
	atomic_store_explicit(&q->home, home, memory_order_relaxed);
	atomic_store_explicit(&q->home_at_ms, now ? now : 1, memory_order_relaxed);
	return home;
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
		uint32_t start = atomic_fetch_add_explicit(&q->rr_next, 1, memory_order_relaxed);
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
	return atomic_fetch_add_explicit(&q->rr_next, 1, memory_order_relaxed) / RR_RUN % q->lanes;
}

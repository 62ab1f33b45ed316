/* SPDX-License-Identifier: MIT */
/*
 * leased.c: a minimal leased ring, as a reference: what a ring with in-place leases costs when it
 * has no recovery at all. Each slot starts with a sequence word (Vyukov) and the message follows
 * it in the same line; the word is pos << 2 | state for the position pos the slot holds:
 *
 *   FREE(pos) --producer, ticket pos--> FULL(pos) --consumer CAS--> LEASED(pos) --ack--> FREE(pos + cap)
 *
 * A producer takes a ticket (one fetch_add on the tail line, which only producers touch), waits
 * with loads until its slot is FREE for that position, copies the message in and publishes with a
 * release store: it is the slot's only writer. A consumer keeps its own cursor, spins with loads
 * until the slot is FULL, then leases it with one CAS (the only locked operation of a receive)
 * and reads the message in place; the ack frees the slot for the next lap with a release store.
 * A consumer that finds a slot LEASED or already freed past its cursor (another consumer took it)
 * moves on. Per message: 2 locked operations, 1 line handed over each way.
 *
 * What it does not have, and shmq must: nothing repairs a producer that dies between ticket and
 * publish (the ring wedges at that slot), nothing reclaims the lease of a dead consumer, a
 * descheduled producer or consumer stalls the others at its slot, no blocking wait, no counters.
 * Busy-poll; after SPIN_YIELD empty polls a waiter yields the CPU, so that 2P2C on two CPUs
 * measures the ring and not a spinner holding the CPU the producer needs.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "peers/peer.h"

#define FREE 0u
#define FULL 1u
#define LEASED 2u
#define SEQ(pos, st) ((pos) << 2 | (st))
#define SPIN_YIELD 4096

struct ring {
	_Alignas(64) _Atomic uint64_t tail; /* the next producer ticket */
	_Alignas(64) unsigned char slots[];
};

struct peer_chan {
	struct ring *r;
	size_t map_len, slot_size, msg_size;
	uint64_t cap; /* power of two */
};

struct ep {
	struct peer_chan *c;
	uint64_t pos;  /* consumer: the next position to look at */
	uint64_t held; /* consumer: the position recv() leased last, for ack() */
};

static inline _Atomic uint64_t *seq_at(struct peer_chan *c, uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)(c->r->slots + (pos & (c->cap - 1)) * c->slot_size);
}

static inline void wait_a_bit(unsigned *spins)
{
	if (++*spins % SPIN_YIELD == 0)
		sched_yield();
#if defined(__x86_64__) || defined(__i386__)
	else
		__builtin_ia32_pause();
#endif
}

static const char *leased_probe(void) { return NULL; }

static struct peer_chan *leased_create(const struct peer_params *p)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cap = 2;
	while (c->cap < (p->depth ? p->depth : 1024))
		c->cap <<= 1;
	c->msg_size = p->msg_size;
	c->slot_size = (sizeof(uint64_t) + p->msg_size + 63) / 64 * 64;
	c->map_len = sizeof(struct ring) + c->cap * c->slot_size;
	void *m = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		fprintf(stderr, "leased-ring: mmap %zu bytes: %s\n", c->map_len, strerror(errno));
		free(c);
		return NULL;
	}
	c->r = m;
	for (uint64_t k = 0; k < c->cap; k++)
		atomic_init(seq_at(c, k), SEQ(k, FREE));
	return c;
}

static void *leased_attach(struct peer_chan *c, enum peer_role role)
{
	(void)role;
	struct ep *e = calloc(1, sizeof(*e));
	if (e)
		e->c = c;
	return e;
}

/* fills position pos, waiting for its slot to be free */
static void put(struct peer_chan *c, uint64_t pos, const void *msg, size_t len)
{
	_Atomic uint64_t *seq = seq_at(c, pos);
	unsigned spins = 0;
	/* acquire: pairs with the release in leased_ack, so the last lap's reader is done */
	while (atomic_load_explicit(seq, memory_order_acquire) != SEQ(pos, FREE))
		wait_a_bit(&spins);
	memcpy((void *)(seq + 1), msg, len);
	/* release: the message before the word that publishes it; pairs with the acquire in take */
	atomic_store_explicit(seq, SEQ(pos, FULL), memory_order_release);
}

static int leased_send(void *ep, const void *msg, size_t len)
{
	struct ep *e = ep;
	if (len > e->c->msg_size)
		return -EMSGSIZE;
	/* relaxed: the ticket only orders producers among themselves; the slot's word does the rest */
	put(e->c, atomic_fetch_add_explicit(&e->c->r->tail, 1, memory_order_relaxed), msg, len);
	return 0;
}

static int leased_send_batch(void *ep, const void *msgs, size_t len, unsigned n)
{
	struct ep *e = ep;
	if (len > e->c->msg_size)
		return -EMSGSIZE;
	uint64_t pos = atomic_fetch_add_explicit(&e->c->r->tail, n, memory_order_relaxed); /* as in send */
	for (unsigned i = 0; i < n; i++)
		put(e->c, pos + i, (const char *)msgs + i * len, len);
	return (int)n;
}

/* Leases the next full slot at or after the cursor into *pos: 1, or 0 when the cursor's slot is
 * not full yet (empty). */
static int take(struct ep *e, uint64_t *pos)
{
	for (;;) {
		_Atomic uint64_t *seq = seq_at(e->c, e->pos);
		/* acquire: pairs with the release in put, so the message is there */
		uint64_t v = atomic_load_explicit(seq, memory_order_acquire);
		if (v == SEQ(e->pos, FULL) &&
		    atomic_compare_exchange_strong_explicit(seq, &v, SEQ(e->pos, LEASED),
							    memory_order_acquire, memory_order_relaxed)) {
			*pos = e->pos++;
			return 1;
		}
		if (v >> 2 < e->pos || v == SEQ(e->pos, FREE) || v == SEQ(e->pos, FULL))
			return 0; /* not produced yet (or the CAS lost to a consumer: look again) */
		e->pos++;	  /* leased or freed by another consumer: not ours */
	}
}

static void copy_out(struct ep *e, uint64_t pos, void *buf, size_t n)
{
	memcpy(buf, (const void *)(seq_at(e->c, pos) + 1), n);
}

static void release_slot(struct peer_chan *c, uint64_t pos)
{
	/* release: our reads of the slot before a producer of the next lap may write it */
	atomic_store_explicit(seq_at(c, pos), SEQ(pos + c->cap, FREE), memory_order_release);
}

static int leased_recv(void *ep, void *buf, size_t cap)
{
	struct ep *e = ep;
	size_t n = e->c->msg_size < cap ? e->c->msg_size : cap;
	unsigned spins = 0;
	while (!take(e, &e->held))
		wait_a_bit(&spins);
	copy_out(e, e->held, buf, n);
	return (int)n;
}

static int leased_ack(void *ep)
{
	struct ep *e = ep;
	release_slot(e->c, e->held);
	return 0;
}

/* up to max messages, each leased, copied out and acked at once */
static int leased_recv_batch(void *ep, void *buf, size_t len, unsigned max)
{
	struct ep *e = ep;
	size_t n = e->c->msg_size < len ? e->c->msg_size : len;
	unsigned got = 0, spins = 0;
	uint64_t pos;
	while (got < max) {
		if (!take(e, &pos)) {
			if (got)
				break;
			wait_a_bit(&spins);
			continue;
		}
		copy_out(e, pos, (char *)buf + (size_t)got * len, n);
		release_slot(e->c, pos);
		got++;
	}
	return (int)got;
}

static void leased_detach(void *ep) { free(ep); }

static void leased_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	munmap(c->r, c->map_len);
	free(c);
}

const struct peer_ops peer_leased = {
	.name = "leased-ring",
	.describe = "minimal leased ring: per-slot sequence words (Vyukov), producer tickets, in-place "
		    "leases by CAS, ack frees; no recovery, no blocking, busy-poll",
	.flags = PEER_MPMC | PEER_BUSY_POLL | PEER_ACKS | PEER_REFERENCE,
	.probe = leased_probe,
	.create = leased_create,
	.attach = leased_attach,
	.send = leased_send,
	.recv = leased_recv,
	.ack = leased_ack,
	.send_batch = leased_send_batch,
	.recv_batch = leased_recv_batch,
	.detach = leased_detach,
	.destroy = leased_destroy,
};

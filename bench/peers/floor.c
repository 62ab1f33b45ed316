/* SPDX-License-Identifier: MIT */
/*
 * floor.c: the physical lower bound of a round trip between two processes on two CPUs. A channel
 * is one cache line in a MAP_SHARED anonymous mapping holding one 8-byte word, and the two sides
 * bounce it: each stores its value with release and spins with acquire loads until the word
 * carries the other side's mark. A round trip is the line's trip to the other CPU and back and
 * nothing else: no payload, no copy, no second line, no index, no syscall. Any queue's round trip
 * is measured against this one.
 *
 * It is a ping-pong, not a queue (PEER_WORD): one channel serves both directions, a value is at
 * most 62 bits, and a side may send only after it received (or first, for the sender): a second
 * send before the other side's answer overwrites the first. Busy-poll only; no throughput figure.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "peers/peer.h"

#define MARK_BITS 2 /* the low bits say who wrote the word: 1 the sender side, 2 the receiver side */
#define VALUE_MAX ((1ull << 62) - 1)

struct peer_chan {
	_Atomic uint64_t *word; /* alone in its line (the mapping is page-aligned) */
};

struct ep {
	_Atomic uint64_t *word;
	uint64_t mine, theirs; /* the marks this side writes and waits for */
};

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static const char *floor_probe(void) { return NULL; }

static struct peer_chan *floor_create(const struct peer_params *p)
{
	(void)p;
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	void *m = mmap(NULL, 64, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		fprintf(stderr, "floor: mmap: %s\n", strerror(errno));
		free(c);
		return NULL;
	}
	c->word = m;
	atomic_init(c->word, 0); /* no mark: nothing sent yet */
	return c;
}

static void *floor_attach(struct peer_chan *c, enum peer_role role)
{
	struct ep *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->word = c->word;
	e->mine = role == PEER_SENDER ? 1 : 2;
	e->theirs = 3 - e->mine;
	return e;
}

/* msg: the 8-byte value */
static int floor_send(void *ep, const void *msg, size_t len)
{
	struct ep *e = ep;
	uint64_t v;
	if (len != sizeof(v))
		return -EMSGSIZE;
	memcpy(&v, msg, sizeof(v));
	if (v > VALUE_MAX)
		return -ERANGE;
	/* release: pairs with the other side's acquire in floor_recv (the value is all there is, but
	 * the caller's writes before the send are visible to the receiver, as with any queue) */
	atomic_store_explicit(e->word, v << MARK_BITS | e->mine, memory_order_release);
	return 0;
}

static int floor_recv(void *ep, void *buf, size_t cap)
{
	struct ep *e = ep;
	uint64_t w;
	if (cap < sizeof(w))
		return -EMSGSIZE;
	/* acquire: pairs with the other side's release in floor_send */
	while (((w = atomic_load_explicit(e->word, memory_order_acquire)) & 3) != e->theirs)
		relax();
	w >>= MARK_BITS;
	memcpy(buf, &w, sizeof(w));
	return (int)sizeof(w);
}

static void floor_detach(void *ep) { free(ep); }

static void floor_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	munmap((void *)c->word, 64);
	free(c);
}

const struct peer_ops peer_floor = {
	.name = "floor",
	.describe = "one 8-byte word bounced in one cache line between two processes (release store, "
		    "acquire spin): the physical floor of a round trip; ping-pong only",
	.flags = PEER_BUSY_POLL | PEER_REFERENCE | PEER_WORD,
	.probe = floor_probe,
	.create = floor_create,
	.attach = floor_attach,
	.send = floor_send,
	.recv = floor_recv,
	.detach = floor_detach,
	.destroy = floor_destroy,
};

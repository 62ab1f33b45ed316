/* SPDX-License-Identifier: MIT */
/*
 * handoff.c: a message handed from one CPU to the other through two slots, the least a transport
 * that carries messages can do (the floor itself moves one word: floor.c). A channel
 * is two cache-line-aligned slots in a MAP_SHARED anonymous mapping, each a sequence word followed
 * by the message (a 64-byte message ends in the slot's second line). Message i goes to slot i % 2:
 * the sender waits for the slot's word to read i (free), copies the message in and publishes it by
 * storing i + 1 with release; the receiver spins on that word with acquire, copies the message out
 * and frees the slot for message i + 2 by storing i + 2. Every message costs the line's trip from
 * one CPU to the other and nothing else: no shared index, no syscall, and the receiver's release of
 * a slot is off the path of the next message (it goes to the other slot). One sender, one receiver,
 * busy-poll only; its throughput is a 2-slot handoff: a reference, not a queue. A 64-byte message
 * spans two lines and is copied in and out, so a round trip costs more than the floor's.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "peers/peer.h"

#define SLOTS 2

struct peer_chan {
	unsigned char *base; /* SLOTS x slot_size: sequence word, then msg_size bytes */
	size_t msg_size, slot_size;
};

struct ep {
	struct peer_chan *c;
	uint64_t i; /* the next message this side sends or receives */
};

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static inline _Atomic uint64_t *seq_of(struct peer_chan *c, uint64_t i)
{
	return (_Atomic uint64_t *)(void *)(c->base + (i % SLOTS) * c->slot_size);
}

static const char *handoff_probe(void) { return NULL; }

static struct peer_chan *handoff_create(const struct peer_params *p)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->msg_size = p->msg_size;
	c->slot_size = (sizeof(uint64_t) + p->msg_size + 63) / 64 * 64;
	c->base = mmap(NULL, SLOTS * c->slot_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c->base == MAP_FAILED) {
		fprintf(stderr, "handoff: mmap: %s\n", strerror(errno));
		free(c);
		return NULL;
	}
	for (uint64_t k = 0; k < SLOTS; k++)
		atomic_init(seq_of(c, k), k); /* slot k is free for message k */
	return c;
}

static void *handoff_attach(struct peer_chan *c, enum peer_role role)
{
	(void)role;
	struct ep *e = calloc(1, sizeof(*e));
	if (e)
		e->c = c;
	return e;
}

static int handoff_send(void *ep, const void *msg, size_t len)
{
	struct ep *e = ep;
	if (len > e->c->msg_size)
		return -EMSGSIZE;
	_Atomic uint64_t *seq = seq_of(e->c, e->i);
	/* acquire: pairs with the receiver's release freeing the slot, after it copied it out */
	while (atomic_load_explicit(seq, memory_order_acquire) != e->i)
		relax();
	memcpy((void *)(seq + 1), msg, len);
	/* release: the message before the word that publishes it */
	atomic_store_explicit(seq, e->i + 1, memory_order_release);
	e->i++;
	return 0;
}

static int handoff_recv(void *ep, void *buf, size_t cap)
{
	struct ep *e = ep;
	size_t n = e->c->msg_size < cap ? e->c->msg_size : cap;
	_Atomic uint64_t *seq = seq_of(e->c, e->i);
	/* acquire: pairs with the sender's release, so the bytes are there */
	while (atomic_load_explicit(seq, memory_order_acquire) != e->i + 1)
		relax();
	memcpy(buf, (const void *)(seq + 1), n);
	/* release: our reads of the slot before the sender may reuse it */
	atomic_store_explicit(seq, e->i + SLOTS, memory_order_release);
	e->i++;
	return (int)n;
}

static void handoff_detach(void *ep) { free(ep); }

static void handoff_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	munmap(c->base, SLOTS * c->slot_size);
	free(c);
}

const struct peer_ops peer_handoff = {
	.name = "handoff",
	.describe = "message handoff between two CPUs (sequence word + copied message per slot, release/"
		    "acquire, spin, 2 slots): the floor for a message; throughput is a 2-slot handoff",
	.flags = PEER_BUSY_POLL | PEER_REFERENCE,
	.probe = handoff_probe,
	.create = handoff_create,
	.attach = handoff_attach,
	.send = handoff_send,
	.recv = handoff_recv,
	.detach = handoff_detach,
	.destroy = handoff_destroy,
};

/* SPDX-License-Identifier: MIT */
/*
 * spsc.c: a bare single-producer single-consumer ring in shared memory, as a transport: what a
 * queue without guarantees can do. Head (written by the producer) and tail (by the consumer) live
 * on their own cache lines; each side keeps a cached copy of the other's index and reloads it only
 * when the ring looks full (producer) or empty (consumer). Slots are fixed-size, msg_size rounded
 * to 64 bytes, with no header: no lengths, no leases, no acks, no crash safety, busy-poll only.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "peers/peer.h"

struct ring {
	_Alignas(64) _Atomic uint64_t head; /* next slot the producer fills */
	_Alignas(64) _Atomic uint64_t tail; /* next slot the consumer empties */
	_Alignas(64) unsigned char slots[];
};

struct peer_chan {
	struct ring *r;
	size_t map_len, slot_size, msg_size;
	uint64_t cap; /* power of two */
};

struct ep {
	struct peer_chan *c;
	uint64_t mine;	 /* our index (we are its only writer) */
	uint64_t theirs; /* last value of the other side's index we loaded */
};

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static const char *spsc_probe(void) { return NULL; }

static struct peer_chan *spsc_create(const struct peer_params *p)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cap = 2;
	while (c->cap < (p->depth ? p->depth : 1024))
		c->cap <<= 1;
	c->msg_size = p->msg_size;
	c->slot_size = (p->msg_size + 63) / 64 * 64;
	c->map_len = sizeof(struct ring) + c->cap * c->slot_size;
	void *m = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		fprintf(stderr, "bare-ring: mmap %zu bytes: %s\n", c->map_len, strerror(errno));
		free(c);
		return NULL;
	}
	c->r = m;
	return c;
}

static void *spsc_attach(struct peer_chan *c, enum peer_role role)
{
	(void)role;
	struct ep *e = calloc(1, sizeof(*e));
	if (e)
		e->c = c;
	return e;
}

static inline unsigned char *slot(struct peer_chan *c, uint64_t i)
{
	return c->r->slots + (i & (c->cap - 1)) * c->slot_size;
}

/* free slots, waiting for at least one */
static uint64_t wait_space(struct ep *e)
{
	uint64_t cap = e->c->cap;
	while (e->mine - e->theirs == cap) {
		/* acquire: pairs with the consumer's release of tail, after it copied the slots out */
		e->theirs = atomic_load_explicit(&e->c->r->tail, memory_order_acquire);
		if (e->mine - e->theirs == cap)
			relax();
	}
	return cap - (e->mine - e->theirs);
}

/* filled slots, waiting for at least one */
static uint64_t wait_data(struct ep *e)
{
	while (e->theirs == e->mine) {
		/* acquire: pairs with the producer's release of head, after it filled the slots */
		e->theirs = atomic_load_explicit(&e->c->r->head, memory_order_acquire);
		if (e->theirs == e->mine)
			relax();
	}
	return e->theirs - e->mine;
}

static int spsc_send(void *ep, const void *msg, size_t len)
{
	struct ep *e = ep;
	if (len > e->c->slot_size)
		return -EMSGSIZE;
	wait_space(e);
	memcpy(slot(e->c, e->mine), msg, len);
	/* release: the slot's bytes before the head that publishes them */
	atomic_store_explicit(&e->c->r->head, ++e->mine, memory_order_release);
	return 0;
}

static int spsc_recv(void *ep, void *buf, size_t cap)
{
	struct ep *e = ep;
	size_t n = e->c->msg_size < cap ? e->c->msg_size : cap;
	wait_data(e);
	memcpy(buf, slot(e->c, e->mine), n);
	/* release: our reads of the slot before the producer may reuse it */
	atomic_store_explicit(&e->c->r->tail, ++e->mine, memory_order_release);
	return (int)n;
}

static int spsc_send_batch(void *ep, const void *msgs, size_t len, unsigned n)
{
	struct ep *e = ep;
	if (len > e->c->slot_size)
		return -EMSGSIZE;
	uint64_t k = wait_space(e);
	if (k > n)
		k = n;
	for (uint64_t i = 0; i < k; i++)
		memcpy(slot(e->c, e->mine + i), (const char *)msgs + i * len, len);
	e->mine += k;
	atomic_store_explicit(&e->c->r->head, e->mine, memory_order_release); /* as in spsc_send */
	return (int)k;
}

static int spsc_recv_batch(void *ep, void *buf, size_t len, unsigned max)
{
	struct ep *e = ep;
	size_t n = e->c->msg_size < len ? e->c->msg_size : len;
	uint64_t k = wait_data(e);
	if (k > max)
		k = max;
	for (uint64_t i = 0; i < k; i++)
		memcpy((char *)buf + i * len, slot(e->c, e->mine + i), n);
	e->mine += k;
	atomic_store_explicit(&e->c->r->tail, e->mine, memory_order_release); /* as in spsc_recv */
	return (int)k;
}

static void spsc_detach(void *ep) { free(ep); }

static void spsc_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	munmap(c->r, c->map_len);
	free(c);
}

const struct peer_ops peer_spsc = {
	.name = "bare-ring",
	.describe = "bare SPSC ring in shared memory: head/tail on own lines, cached indices, fixed "
		    "slots, no leases, no crash safety, busy-poll",
	.flags = PEER_BUSY_POLL | PEER_REFERENCE,
	.probe = spsc_probe,
	.create = spsc_create,
	.attach = spsc_attach,
	.send = spsc_send,
	.recv = spsc_recv,
	.send_batch = spsc_send_batch,
	.recv_batch = spsc_recv_batch,
	.detach = spsc_detach,
	.destroy = spsc_destroy,
};

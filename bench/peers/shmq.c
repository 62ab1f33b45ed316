/* SPDX-License-Identifier: MIT */
/*
 * shmq.c: shmq itself as a transport under test. The harness's receiver calls recv then ack for
 * every message, so the price of the lease (claim, ack CAS, the receivers' reclaim passes) is in
 * every figure; the batch calls are shmq_send_batch and shmq_recv_batch + shmq_ack_batch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers/peer.h"
#include "shmq.h"

#define BATCH_MAX 256

struct peer_chan {
	char name[SHMQ_NAME_MAX];
	int blocking;
	size_t msg_size;
};

struct ep {
	shmq_t *q;
	int blocking;
	int has_msg;
	struct shmq_msg m; /* the delivery recv() returned last, for ack() */
	struct shmq_iov iov[BATCH_MAX];
	struct shmq_msg ms[BATCH_MAX];
};

static const char *shmq_probe(void) { return NULL; }

static uint32_t pow2_at_least(uint32_t v)
{
	uint32_t p = 2;
	while (p < v && p < SHMQ_CAPACITY_MAX)
		p <<= 1;
	return p;
}

static struct peer_chan *shmq_peer_create(const struct peer_params *p)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	snprintf(c->name, sizeof(c->name), "/shmq-bench-%s", p->tag);
	c->blocking = p->blocking;
	c->msg_size = p->msg_size;
	struct shmq_config cfg;
	shmq_config_init(&cfg);
	cfg.capacity = pow2_at_least(p->depth ? p->depth : 1024);
	cfg.slot_size = (uint32_t)((p->msg_size + SHMQ_SLOT_HEADER + 63) / 64 * 64);
	if (cfg.slot_size < SHMQ_SLOT_SIZE_MIN)
		cfg.slot_size = SHMQ_SLOT_SIZE_MIN;
	shmq_t *q;
	int r = shmq_create(c->name, &cfg, &q);
	if (r) {
		fprintf(stderr, "shmq: create %s: %s\n", c->name, shmq_strerror(r));
		free(c);
		return NULL;
	}
	shmq_close(q); /* the creator takes no part: every participant opens it by name */
	return c;
}

static void *shmq_attach(struct peer_chan *c, enum peer_role role)
{
	(void)role;
	struct ep *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	int r = shmq_open(c->name, &e->q);
	if (r) {
		fprintf(stderr, "shmq: open %s: %s\n", c->name, shmq_strerror(r));
		free(e);
		return NULL;
	}
	e->blocking = c->blocking;
	return e;
}

static int shmq_peer_send(void *ep, const void *msg, size_t len)
{
	struct ep *e = ep;
	return shmq_send(e->q, msg, len, -1);
}

/* busy-poll: timeout 0 in a loop; blocking: a short spin, then the futex */
static int recv_one(struct ep *e, struct shmq_msg *m)
{
	if (e->blocking)
		return shmq_recv(e->q, m, -1);
	int r;
	while ((r = shmq_recv(e->q, m, 0)) == -EAGAIN)
		;
	return r;
}

static int shmq_peer_recv(void *ep, void *buf, size_t cap)
{
	struct ep *e = ep;
	int r = recv_one(e, &e->m);
	if (r)
		return r;
	e->has_msg = 1;
	if (e->m.len > cap)
		return -EMSGSIZE;
	memcpy(buf, e->m.data, e->m.len);
	return (int)e->m.len;
}

static int shmq_peer_ack(void *ep)
{
	struct ep *e = ep;
	if (!e->has_msg)
		return -EINVAL;
	e->has_msg = 0;
	return shmq_ack(e->q, &e->m);
}

static int shmq_peer_send_batch(void *ep, const void *msgs, size_t len, unsigned n)
{
	struct ep *e = ep;
	if (n > BATCH_MAX)
		n = BATCH_MAX;
	for (unsigned i = 0; i < n; i++)
		e->iov[i] = (struct shmq_iov){(const char *)msgs + i * len, len};
	return shmq_send_batch(e->q, e->iov, n, -1);
}

static int shmq_peer_recv_batch(void *ep, void *buf, size_t len, unsigned max)
{
	struct ep *e = ep;
	if (max > BATCH_MAX)
		max = BATCH_MAX;
	int n;
	if (e->blocking)
		n = shmq_recv_batch(e->q, e->ms, max, -1);
	else
		while ((n = shmq_recv_batch(e->q, e->ms, max, 0)) == -EAGAIN)
			;
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		if (e->ms[i].len > len)
			return -EMSGSIZE;
		memcpy((char *)buf + (size_t)i * len, e->ms[i].data, e->ms[i].len);
	}
	int a = shmq_ack_batch(e->q, e->ms, (unsigned)n);
	if (a < 0)
		return a;
	return a == n ? n : -ESTALE; /* a lost lease means a redelivery: the harness must hear of it */
}

static void shmq_detach(void *ep)
{
	struct ep *e = ep;
	if (!e)
		return;
	shmq_close(e->q);
	free(e);
}

static void shmq_peer_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	shmq_unlink(c->name);
	free(c);
}

const struct peer_ops peer_shmq = {
	.name = "shmq",
	.describe = "shmq queue (POSIX shm): send; recv + ack of every message; batch = send_batch, "
		    "recv_batch + ack_batch",
	.flags = PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING | PEER_ACKS,
	.probe = shmq_probe,
	.create = shmq_peer_create,
	.attach = shmq_attach,
	.send = shmq_peer_send,
	.recv = shmq_peer_recv,
	.ack = shmq_peer_ack,
	.send_batch = shmq_peer_send_batch,
	.recv_batch = shmq_peer_recv_batch,
	.detach = shmq_detach,
	.destroy = shmq_peer_destroy,
};

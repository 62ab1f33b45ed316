/* SPDX-License-Identifier: MIT */
/*
 * pipe.c: pipe(2) as a transport: one write and one read of msg_size bytes per message (atomic up
 * to PIPE_BUF, so several writers and readers of whole records are fine). Busy-poll makes the read
 * end O_NONBLOCK and spins on EAGAIN; a batch is one write of n records and reads split into
 * records, a record cut by the end of a read being kept for the next call.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peers/peer.h"

struct peer_chan {
	int fd[2];
	int blocking;
};

struct ep {
	int fd;
	int blocking;
	char *buf; /* bytes read but not yet returned (recv_batch reads more than it returns) */
	size_t have, cap;
};

static const char *pipe_probe(void) { return NULL; }

static struct peer_chan *pipe_create(const struct peer_params *p)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (pipe2(c->fd, O_CLOEXEC)) {
		fprintf(stderr, "pipe: pipe2: %s\n", strerror(errno));
		free(c);
		return NULL;
	}
	c->blocking = p->blocking;
	/* the same buffering as a queue of depth messages, as far as pipe-max-size allows */
	size_t want = (size_t)(p->depth ? p->depth : 1024) * p->msg_size;
	if (want > 1u << 20)
		want = 1u << 20;
	(void)!fcntl(c->fd[1], F_SETPIPE_SZ, (int)want);
	return c;
}

static void *pipe_attach(struct peer_chan *c, enum peer_role role)
{
	struct ep *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->blocking = c->blocking;
	if (role == PEER_SENDER) {
		e->fd = c->fd[1];
		close(c->fd[0]); /* this process only writes */
	} else {
		e->fd = c->fd[0];
		close(c->fd[1]); /* so a reader sees EOF once every writer is gone */
		if (!e->blocking && fcntl(e->fd, F_SETFL, O_NONBLOCK)) {
			free(e);
			return NULL;
		}
	}
	return e;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *s = p;
	while (n) {
		ssize_t k = write(fd, s, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

static int pipe_send(void *ep, const void *msg, size_t len)
{
	struct ep *e = ep;
	return write_all(e->fd, msg, len);
}

/* one read of up to n bytes into p: spins on EAGAIN when busy-polling; 0 is EOF */
static ssize_t read_some(struct ep *e, void *p, size_t n)
{
	for (;;) {
		ssize_t k = read(e->fd, p, n);
		if (k >= 0)
			return k;
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	}
}

static int pipe_recv(void *ep, void *buf, size_t cap)
{
	struct ep *e = ep;
	size_t got = 0;
	if (e->have) { /* left over by recv_batch */
		got = e->have < cap ? e->have : cap;
		memcpy(buf, e->buf, got);
		memmove(e->buf, e->buf + got, e->have - got);
		e->have -= got;
	}
	while (got < cap) {
		ssize_t k = read_some(e, (char *)buf + got, cap - got);
		if (k < 0)
			return (int)k;
		if (k == 0)
			return -EPIPE;
		got += (size_t)k;
	}
	return (int)got;
}

static int pipe_send_batch(void *ep, const void *msgs, size_t len, unsigned n)
{
	struct ep *e = ep;
	int r = write_all(e->fd, msgs, len * n);
	return r ? r : (int)n;
}

static int pipe_recv_batch(void *ep, void *buf, size_t len, unsigned max)
{
	struct ep *e = ep;
	size_t want = len * max;
	if (e->cap < want + len) {
		char *b = realloc(e->buf, want + len);
		if (!b)
			return -ENOMEM;
		e->buf = b;
		e->cap = want + len;
	}
	while (e->have < len) {
		ssize_t k = read_some(e, e->buf + e->have, want - e->have);
		if (k < 0)
			return (int)k;
		if (k == 0)
			return -EPIPE;
		e->have += (size_t)k;
	}
	size_t n = e->have / len;
	if (n > max)
		n = max;
	memcpy(buf, e->buf, n * len);
	memmove(e->buf, e->buf + n * len, e->have - n * len);
	e->have -= n * len;
	return (int)n;
}

static void pipe_detach(void *ep)
{
	struct ep *e = ep;
	if (!e)
		return;
	close(e->fd);
	free(e->buf);
	free(e);
}

static void pipe_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	close(c->fd[0]);
	close(c->fd[1]);
	free(c);
}

const struct peer_ops peer_pipe = {
	.name = "pipe",
	.describe = "pipe(2): one write / one read of msg_size per message; batch = one write of n "
		    "records, reads split into records",
	.flags = PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING,
	.probe = pipe_probe,
	.create = pipe_create,
	.attach = pipe_attach,
	.send = pipe_send,
	.recv = pipe_recv,
	.send_batch = pipe_send_batch,
	.recv_batch = pipe_recv_batch,
	.detach = pipe_detach,
	.destroy = pipe_destroy,
};

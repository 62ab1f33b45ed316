/* SPDX-License-Identifier: MIT */
/*
 * unix.c: the Unix-domain socketpair peers, "unix-stream" and "unix-seqpacket".
 *
 * create() makes one socketpair: fd[0] is the sending end, fd[1] the receiving end. The parent keeps
 * both open until destroy(), so a receiver that is SIGKILLed and replaced by a new process finds the
 * same channel, and nobody ever sees EOF or EPIPE. Socket buffers are the kernel's defaults
 * (net.core.wmem_default); params.depth is not used.
 *
 * The fds are shared open file descriptions after fork, so their O_NONBLOCK flag is never touched:
 * busy-poll mode (params.blocking == 0) passes MSG_DONTWAIT to each call instead and spins on EAGAIN,
 * on both sides.
 *
 * unix-stream has no message boundaries: a message is msg_size bytes of the stream, and short reads
 * and writes are completed in a loop. So one sender and one receiver only (two readers would split
 * records between them), and a process killed between the halves of a short read or write leaves
 * the stream misframed: the harness then sees bad sequence numbers, which is the truth about streams.
 *
 * unix-seqpacket keeps boundaries and moves one whole message per send/recv, atomically, so several
 * senders and receivers may share the pair (PEER_MPMC): each message reaches exactly one reader, and
 * a killed reader loses at most the message its last recv had taken. Batches use sendmmsg/recvmmsg.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peers/peer.h"

#define UNIX_BATCH_MAX 256 /* messages per sendmmsg/recvmmsg call */

struct peer_chan {
	int fd[2]; /* [0] senders write, [1] receivers read */
	int type;  /* SOCK_STREAM or SOCK_SEQPACKET */
	int flags; /* MSG_DONTWAIT when busy-polling, else 0 */
	size_t msg_size;
};

struct unix_ep {
	int fd;
	int flags;
	size_t msg_size;
};

static struct peer_chan *unix_create(const struct peer_params *p, int type, const char *name)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c) {
		fprintf(stderr, "%s: out of memory\n", name);
		return NULL;
	}
	if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, c->fd)) {
		fprintf(stderr, "%s: socketpair: %s\n", name, strerror(errno));
		free(c);
		return NULL;
	}
	c->type = type;
	c->flags = p->blocking ? 0 : MSG_DONTWAIT;
	c->msg_size = p->msg_size;
	return c;
}

static struct peer_chan *stream_create(const struct peer_params *p)
{
	return unix_create(p, SOCK_STREAM, "unix-stream");
}

static struct peer_chan *seqpacket_create(const struct peer_params *p)
{
	return unix_create(p, SOCK_SEQPACKET, "unix-seqpacket");
}

static void *unix_attach(struct peer_chan *c, enum peer_role role)
{
	struct unix_ep *ep = malloc(sizeof(*ep));
	if (!ep)
		return NULL;
	ep->fd = c->fd[role == PEER_SENDER ? 0 : 1];
	ep->flags = c->flags;
	ep->msg_size = c->msg_size;
	return ep;
}

/* Sends all len bytes (a stream may take them in pieces; a seqpacket takes all or fails). */
static int send_all(const struct unix_ep *ep, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(ep->fd, p, len, ep->flags | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR || (errno == EAGAIN && ep->flags))
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads exactly len bytes from the stream. */
static int recv_all(const struct unix_ep *ep, char *p, size_t len)
{
	while (len) {
		ssize_t n = recv(ep->fd, p, len, ep->flags);
		if (n < 0) {
			if (errno == EINTR || (errno == EAGAIN && ep->flags))
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPIPE; /* every send end closed: cannot happen while the parent holds fd[0] */
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int unix_send(void *ep, const void *msg, size_t len) { return send_all(ep, msg, len); }

static int stream_recv(void *ep_, void *buf, size_t cap)
{
	const struct unix_ep *ep = ep_;
	if (cap < ep->msg_size)
		return -EMSGSIZE;
	int err = recv_all(ep, buf, ep->msg_size);
	return err ? err : (int)ep->msg_size;
}

/* One write of all n records; the kernel may split it, send_all completes it. */
static int stream_send_batch(void *ep, const void *msgs, size_t len, unsigned n)
{
	int err = send_all(ep, msgs, len * n);
	return err ? err : (int)n;
}

/* Up to max records in one read, then the tail of a record cut in two is read to its end. */
static int stream_recv_batch(void *ep_, void *buf, size_t len, unsigned max)
{
	const struct unix_ep *ep = ep_;
	ssize_t n;
	if (!max || len != ep->msg_size)
		return -EINVAL;
	for (;;) {
		n = recv(ep->fd, buf, len * max, ep->flags);
		if (n > 0)
			break;
		if (n == 0)
			return -EPIPE;
		if (errno != EINTR && !(errno == EAGAIN && ep->flags))
			return -errno;
	}
	size_t got = (size_t)n, rest = (len - got % len) % len;
	int err = recv_all(ep, (char *)buf + got, rest);
	return err ? err : (int)((got + rest) / len);
}

static int seqpacket_recv(void *ep_, void *buf, size_t cap)
{
	const struct unix_ep *ep = ep_;
	for (;;) {
		/* MSG_TRUNC: the real length, so a message longer than cap is an error, not cut short */
		ssize_t n = recv(ep->fd, buf, cap, ep->flags | MSG_TRUNC);
		if (n > (ssize_t)cap)
			return -EMSGSIZE;
		if (n > 0)
			return (int)n;
		if (n == 0)
			return -EPIPE;
		if (errno != EINTR && !(errno == EAGAIN && ep->flags))
			return -errno;
	}
}

static unsigned fill_mmsg(struct mmsghdr *mm, struct iovec *iov, const void *msgs, size_t len, unsigned n)
{
	if (n > UNIX_BATCH_MAX)
		n = UNIX_BATCH_MAX;
	memset(mm, 0, n * sizeof(*mm));
	for (unsigned i = 0; i < n; i++) {
		iov[i].iov_base = (char *)msgs + i * len;
		iov[i].iov_len = len;
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	return n;
}

/* Up to n (at most UNIX_BATCH_MAX) messages in one sendmmsg; blocking mode may block per message. */
static int seqpacket_send_batch(void *ep_, const void *msgs, size_t len, unsigned n)
{
	const struct unix_ep *ep = ep_;
	struct mmsghdr mm[UNIX_BATCH_MAX];
	struct iovec iov[UNIX_BATCH_MAX];
	if (!n)
		return -EINVAL;
	n = fill_mmsg(mm, iov, msgs, len, n);
	for (;;) {
		int sent = sendmmsg(ep->fd, mm, n, ep->flags | MSG_NOSIGNAL);
		if (sent > 0)
			return sent;
		if (sent < 0 && errno != EINTR && !(errno == EAGAIN && ep->flags))
			return -errno;
	}
}

/* Blocking mode waits for the first message only (MSG_WAITFORONE), then takes what is queued. */
static int seqpacket_recv_batch(void *ep_, void *buf, size_t len, unsigned max)
{
	const struct unix_ep *ep = ep_;
	struct mmsghdr mm[UNIX_BATCH_MAX];
	struct iovec iov[UNIX_BATCH_MAX];
	if (!max)
		return -EINVAL;
	max = fill_mmsg(mm, iov, buf, len, max);
	for (;;) {
		int got = recvmmsg(ep->fd, mm, max, ep->flags ? ep->flags : MSG_WAITFORONE, NULL);
		if (got > 0) {
			for (int i = 0; i < got; i++)
				if (mm[i].msg_hdr.msg_flags & MSG_TRUNC)
					return -EMSGSIZE;
			return got;
		}
		if (got == 0)
			return -EPIPE;
		if (errno != EINTR && !(errno == EAGAIN && ep->flags))
			return -errno;
	}
}

static void unix_detach(void *ep)
{
	free(ep); /* the fds belong to the channel: the parent closes them in destroy */
}

static void unix_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	close(c->fd[0]);
	close(c->fd[1]);
	free(c);
}

const struct peer_ops peer_unix_stream = {
	.name = "unix-stream",
	.describe = "socketpair(AF_UNIX, SOCK_STREAM), default buffers: a message is msg_size bytes of "
		    "the stream (short reads/writes completed), 1:1; batch = one send() of n records",
	.flags = PEER_BUSY_POLL | PEER_BLOCKING,
	.create = stream_create,
	.attach = unix_attach,
	.send = unix_send,
	.recv = stream_recv,
	.send_batch = stream_send_batch,
	.recv_batch = stream_recv_batch,
	.detach = unix_detach,
	.destroy = unix_destroy,
};

const struct peer_ops peer_unix_seqpacket = {
	.name = "unix-seqpacket",
	.describe = "socketpair(AF_UNIX, SOCK_SEQPACKET), default buffers: one message per send()/recv(), "
		    "senders and receivers share the pair; batch = sendmmsg()/recvmmsg()",
	.flags = PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING,
	.create = seqpacket_create,
	.attach = unix_attach,
	.send = unix_send,
	.recv = seqpacket_recv,
	.send_batch = seqpacket_send_batch,
	.recv_batch = seqpacket_recv_batch,
	.detach = unix_detach,
	.destroy = unix_destroy,
};

/* SPDX-License-Identifier: MIT */
/*
 * zmq.c: the "zeromq-ipc" peer, libzmq PUSH/PULL over ipc:// endpoints in /tmp.
 *
 * Receivers bind, senders connect. Each receiver owns one endpoint, /tmp/shmqb-<tag>.r<i>.ipc for
 * i < params.receivers (two PULL sockets cannot bind one path: the second would steal it), and each
 * sender connects its PUSH socket to all of them, so ZeroMQ round-robins messages over the
 * receivers and fair-queues the senders (PEER_MPMC). So all params.receivers receivers must attach:
 * the share routed to one that never does waits in its pipe. A receiver claims its slot with
 * flock() on /tmp/shmqb-<tag>.r<i>.lock: the kernel drops that lock when the process dies, so a
 * receiver that replaces a SIGKILLed one takes the free slot, binds the same path again, and the
 * senders' PUSH sockets reconnect to it by themselves (reconnect interval 10 ms).
 *
 * ZeroMQ does not guarantee delivery, and the harness measures that; this adapter does not hide it:
 * - what sat in a killed receiver's socket buffers and its own queue is gone (what still waits in a
 *   sender's pipe to it is kept across the reconnect: connect side, no ZMQ_IMMEDIATE);
 * - a sender that closes while its receiver lags loses the tail of its stream, ZMQ_LINGER or not
 *   (linger waits only until the sender's pipe has emptied into its engine). In libzmq 4.3.4 the
 *   sender's engine is deleted with its last encoder batch (up to 8 KiB) unwritten, and the
 *   receiver's engine, which stopped reading at ZMQ_RCVHWM, takes the hang-up for an I/O error and
 *   closes the connection without reading what is still in the kernel's socket buffer (strace
 *   shows the fd closed with no read to end of file). Seen here: 400-500 messages of 64 B per
 *   lagging connection, up to ~1000 in 2P2C. PUSH/PULL has no acks, ZMQ_LINGER -1 loses as much,
 *   and a sleep before zmq_close() only guesses how long the receiver needs, so the adapter does
 *   not paper over it (libzmq issues #1264, #4660).
 *
 * A zmq context must not cross fork, so create() makes none: every attach() makes its own context
 * and socket in the calling process, and detach() closes both, waiting up to ZPEER_LINGER_MS for
 * queued messages to leave. ZMQ_SNDHWM and ZMQ_RCVHWM are params.depth (0: ZeroMQ's default, 1000),
 * per pipe: each sender-receiver pair queues up to that on each side, plus the kernel's socket
 * buffers. Busy-poll mode passes ZMQ_DONTWAIT and spins on EAGAIN, on both sides.
 *
 * Without <zmq.h> at build time the peer still links and probe() says why it cannot run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers/peer.h"

#if __has_include(<zmq.h>)
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <zmq.h>

#define ZPEER_MAX_RECEIVERS 64
#define ZPEER_LINGER_MS 10000 /* detach gives queued messages this long to leave */
#define ZPEER_RECONNECT_MS 10

struct peer_chan {
	char base[96]; /* "/tmp/shmqb-<tag>"; endpoints and locks are base.r<i>.{ipc,lock} */
	unsigned receivers;
	int hwm; /* 0: ZeroMQ's default */
	int dontwait;
};

struct zpeer_ep {
	void *ctx;
	void *sock;
	int lock_fd; /* receivers: the flock()ed slot file; senders: -1 */
	int dontwait;
};

/* zmq's own codes (ETERM, EFSM, ...) lie far above the errno range */
static int zpeer_err(void)
{
	int e = zmq_errno();
	return e > 0 && e < 4096 ? -e : -EIO;
}

static void zpeer_path(char *out, size_t cap, const struct peer_chan *c, unsigned i, const char *ext)
{
	snprintf(out, cap, "%s.r%u.%s", c->base, i, ext);
}

static void zpeer_remove_files(const struct peer_chan *c)
{
	char path[128];
	for (unsigned i = 0; i < c->receivers; i++) {
		zpeer_path(path, sizeof(path), c, i, "ipc");
		unlink(path);
		zpeer_path(path, sizeof(path), c, i, "lock");
		unlink(path);
	}
}

static const char *zpeer_probe(void) { return NULL; }

static struct peer_chan *zpeer_create(const struct peer_params *p)
{
	char path[128];
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c) {
		fprintf(stderr, "zeromq-ipc: out of memory\n");
		return NULL;
	}
	c->receivers = p->receivers ? p->receivers : 1;
	if (c->receivers > ZPEER_MAX_RECEIVERS) {
		fprintf(stderr, "zeromq-ipc: %u receivers, at most %d\n", c->receivers, ZPEER_MAX_RECEIVERS);
		free(c);
		return NULL;
	}
	snprintf(c->base, sizeof(c->base), "/tmp/shmqb-%s", p->tag);
	for (char *s = c->base + 5; *s; s++)
		if (*s == '/')
			*s = '_';
	c->hwm = p->depth > 1000000 ? 1000000 : (int)p->depth;
	c->dontwait = p->blocking ? 0 : ZMQ_DONTWAIT;

	for (unsigned i = 0; i < c->receivers; i++) {
		zpeer_path(path, sizeof(path), c, i, "lock");
		int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
		if (fd < 0) {
			fprintf(stderr, "zeromq-ipc: %s: %s\n", path, strerror(errno));
			zpeer_remove_files(c);
			free(c);
			return NULL;
		}
		close(fd);
	}
	return c;
}

/* The first slot whose lock nobody holds: free, or left by a receiver that died. */
static int zpeer_claim_slot(const struct peer_chan *c, unsigned *slot)
{
	char path[128];
	for (unsigned i = 0; i < c->receivers; i++) {
		zpeer_path(path, sizeof(path), c, i, "lock");
		int fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		if (!flock(fd, LOCK_EX | LOCK_NB)) {
			*slot = i;
			return fd;
		}
		close(fd);
	}
	return -EBUSY;
}

static int zpeer_setint(void *sock, int opt, int v) { return zmq_setsockopt(sock, opt, &v, sizeof(v)); }

static void *zpeer_attach(struct peer_chan *c, enum peer_role role)
{
	char path[128], endpoint[160];
	const char *what = "zmq_ctx_new";
	struct zpeer_ep *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	ep->lock_fd = -1;
	ep->dontwait = c->dontwait;
	ep->ctx = zmq_ctx_new();
	if (!ep->ctx)
		goto fail;
	what = "zmq_socket";
	ep->sock = zmq_socket(ep->ctx, role == PEER_SENDER ? ZMQ_PUSH : ZMQ_PULL);
	if (!ep->sock)
		goto fail;
	what = "zmq_setsockopt";
	if (c->hwm && zpeer_setint(ep->sock, role == PEER_SENDER ? ZMQ_SNDHWM : ZMQ_RCVHWM, c->hwm))
		goto fail;
	if (zpeer_setint(ep->sock, ZMQ_LINGER, ZPEER_LINGER_MS))
		goto fail;

	if (role == PEER_RECEIVER) {
		unsigned slot = 0;
		ep->lock_fd = zpeer_claim_slot(c, &slot);
		if (ep->lock_fd < 0) {
			fprintf(stderr, "zeromq-ipc: no free receiver slot of %u: %s\n", c->receivers,
				strerror(-ep->lock_fd));
			goto out;
		}
		zpeer_path(path, sizeof(path), c, slot, "ipc");
		snprintf(endpoint, sizeof(endpoint), "ipc://%s", path);
		what = endpoint;
		if (zmq_bind(ep->sock, endpoint))
			goto fail;
		return ep;
	}

	if (zpeer_setint(ep->sock, ZMQ_RECONNECT_IVL, ZPEER_RECONNECT_MS))
		goto fail;
	for (unsigned i = 0; i < c->receivers; i++) {
		zpeer_path(path, sizeof(path), c, i, "ipc");
		snprintf(endpoint, sizeof(endpoint), "ipc://%s", path);
		what = endpoint;
		if (zmq_connect(ep->sock, endpoint)) /* fine before the bind: zmq retries */
			goto fail;
	}
	return ep;
fail:
	fprintf(stderr, "zeromq-ipc: %s: %s\n", what, zmq_strerror(zmq_errno()));
out:
	if (ep->sock)
		zmq_close(ep->sock);
	if (ep->ctx)
		zmq_ctx_term(ep->ctx);
	if (ep->lock_fd >= 0)
		close(ep->lock_fd);
	free(ep);
	return NULL;
}

static int zpeer_send(void *ep_, const void *msg, size_t len)
{
	const struct zpeer_ep *ep = ep_;
	while (zmq_send(ep->sock, msg, len, ep->dontwait) < 0)
		if (zmq_errno() != EINTR && !(zmq_errno() == EAGAIN && ep->dontwait))
			return zpeer_err();
	return 0;
}

static int zpeer_recv(void *ep_, void *buf, size_t cap)
{
	const struct zpeer_ep *ep = ep_;
	for (;;) {
		int n = zmq_recv(ep->sock, buf, cap, ep->dontwait);
		if (n > (int)cap)
			return -EMSGSIZE; /* zmq_recv cut it to cap and says how long it was */
		if (n >= 0)
			return n;
		if (zmq_errno() != EINTR && !(zmq_errno() == EAGAIN && ep->dontwait))
			return zpeer_err();
	}
}

static void zpeer_detach(void *ep_)
{
	struct zpeer_ep *ep = ep_;
	if (!ep)
		return;
	zmq_close(ep->sock);
	zmq_ctx_term(ep->ctx); /* a sender waits here, up to its linger, for queued messages */
	if (ep->lock_fd >= 0)
		close(ep->lock_fd); /* frees the receiver slot */
	free(ep);
}

static void zpeer_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	zpeer_remove_files(c);
	free(c);
}

const struct peer_ops peer_zmq = {
	.name = "zeromq-ipc",
	.describe = "libzmq PUSH/PULL over ipc:// in /tmp, one zmq_send()/zmq_recv() per message, each "
		    "receiver binds its own endpoint and senders connect to all; no delivery guarantee",
	.flags = PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING,
	.probe = zpeer_probe,
	.create = zpeer_create,
	.attach = zpeer_attach,
	.send = zpeer_send,
	.recv = zpeer_recv,
	.detach = zpeer_detach,
	.destroy = zpeer_destroy,
};

#else /* no <zmq.h> */

static const char *zpeer_probe(void) { return "libzmq3-dev not installed"; }

static struct peer_chan *zpeer_create(const struct peer_params *p)
{
	(void)p;
	fprintf(stderr, "zeromq-ipc: %s\n", zpeer_probe());
	return NULL;
}

const struct peer_ops peer_zmq = {
	.name = "zeromq-ipc",
	.describe = "libzmq PUSH/PULL over ipc:// (not built: no <zmq.h>)",
	.flags = PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING,
	.probe = zpeer_probe,
	.create = zpeer_create,
};

#endif

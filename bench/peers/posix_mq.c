/* SPDX-License-Identifier: MIT */
/*
 * posix_mq.c: the "posix-mq" peer, a POSIX message queue (mq_send/mq_receive, priority 0).
 *
 * create() makes the queue "/shmqb-<tag>" and closes its descriptor at once; each attach() opens the
 * queue by name for itself. A descriptor is an open file description, shared after fork, and its
 * O_NONBLOCK flag with it: opening per process keeps one process's busy-poll mode from leaking into
 * another, and means a receiver that is SIGKILLed and replaced simply opens the queue again. The
 * kernel moves each message whole, so several senders and receivers may share the queue
 * (PEER_MPMC); a killed receiver loses at most the message its last mq_receive had taken.
 *
 * Capacity: mq_maxmsg is params.depth (0: /proc/sys/fs/mqueue/msg_default) clamped to
 * /proc/sys/fs/mqueue/msg_max, since an unprivileged process (and root without CAP_SYS_RESOURCE)
 * gets EINVAL above it; create() says on stderr when it clamps. mq_msgsize is msg_size; above
 * msgsize_max create() fails and says so, rather than build a queue no message fits in.
 *
 * Busy-poll mode opens with O_NONBLOCK and spins on EAGAIN, on both sides.
 */
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peers/peer.h"

struct peer_chan {
	char name[80]; /* "/shmqb-<tag>" */
	int oflag;     /* O_NONBLOCK when busy-polling, else 0 */
	size_t msg_size;
};

struct pmq_ep {
	mqd_t q;
	int busy;
};

/* One number from /proc/sys/fs/mqueue, or fallback when it cannot be read. */
static long pmq_limit(const char *file, long fallback)
{
	char path[64];
	long v = fallback;
	snprintf(path, sizeof(path), "/proc/sys/fs/mqueue/%s", file);
	FILE *f = fopen(path, "re");
	if (!f)
		return fallback;
	if (fscanf(f, "%ld", &v) != 1)
		v = fallback;
	fclose(f);
	return v;
}

/* A name mq_open accepts: one leading '/', no other. */
static void pmq_name(char *out, size_t cap, const char *tag)
{
	snprintf(out, cap, "/shmqb-%s", tag);
	for (char *s = out + 1; *s; s++)
		if (*s == '/')
			*s = '_';
}

static const char *pmq_probe(void)
{
	static char why[128];
	char name[64];
	struct mq_attr a = {.mq_maxmsg = 1, .mq_msgsize = 16};
	snprintf(name, sizeof(name), "/shmqb-probe-%ld", (long)getpid());
	mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600, &a);
	if (q == (mqd_t)-1) {
		snprintf(why, sizeof(why), "mq_open: %s (is the mqueue filesystem available?)",
			 strerror(errno));
		return why;
	}
	mq_close(q);
	mq_unlink(name);
	return NULL;
}

static struct peer_chan *pmq_create(const struct peer_params *p)
{
	long msg_max = pmq_limit("msg_max", 10), size_max = pmq_limit("msgsize_max", 8192);
	long depth = p->depth ? (long)p->depth : pmq_limit("msg_default", 10);
	if (depth > msg_max) {
		static long said; /* once per depth asked for, not once per channel */
		if (said != depth)
			fprintf(stderr, "posix-mq: depth %ld clamped to %ld (/proc/sys/fs/mqueue/msg_max)\n",
				depth, msg_max);
		said = depth;
		depth = msg_max;
	}
	if ((long)p->msg_size > size_max) {
		fprintf(stderr, "posix-mq: msg_size %zu > %ld (/proc/sys/fs/mqueue/msgsize_max)\n",
			p->msg_size, size_max);
		return NULL;
	}
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c) {
		fprintf(stderr, "posix-mq: out of memory\n");
		return NULL;
	}
	pmq_name(c->name, sizeof(c->name), p->tag);
	c->oflag = p->blocking ? 0 : O_NONBLOCK;
	c->msg_size = p->msg_size;

	struct mq_attr a = {.mq_maxmsg = depth, .mq_msgsize = (long)p->msg_size};
	mqd_t q = mq_open(c->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600, &a);
	if (q == (mqd_t)-1 && errno == EEXIST) {
		/* the tag is unique per run: a queue of that name is a leftover of a killed run */
		mq_unlink(c->name);
		q = mq_open(c->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600, &a);
	}
	if (q == (mqd_t)-1) {
		fprintf(stderr, "posix-mq: mq_open %s (maxmsg %ld, msgsize %zu): %s\n", c->name, depth,
			p->msg_size, strerror(errno));
		free(c);
		return NULL;
	}
	mq_close(q);
	return c;
}

static void *pmq_attach(struct peer_chan *c, enum peer_role role)
{
	struct pmq_ep *ep = malloc(sizeof(*ep));
	if (!ep)
		return NULL;
	int oflag = (role == PEER_SENDER ? O_WRONLY : O_RDONLY) | c->oflag | O_CLOEXEC;
	ep->q = mq_open(c->name, oflag);
	if (ep->q == (mqd_t)-1) {
		fprintf(stderr, "posix-mq: mq_open %s: %s\n", c->name, strerror(errno));
		free(ep);
		return NULL;
	}
	ep->busy = c->oflag != 0;
	return ep;
}

static int pmq_send(void *ep_, const void *msg, size_t len)
{
	const struct pmq_ep *ep = ep_;
	while (mq_send(ep->q, msg, len, 0))
		if (errno != EINTR && !(errno == EAGAIN && ep->busy))
			return -errno;
	return 0;
}

static int pmq_recv(void *ep_, void *buf, size_t cap)
{
	const struct pmq_ep *ep = ep_;
	for (;;) {
		ssize_t n = mq_receive(ep->q, buf, cap, NULL);
		if (n >= 0)
			return (int)n;
		if (errno != EINTR && !(errno == EAGAIN && ep->busy))
			return -errno; /* EMSGSIZE: cap < msg_size */
	}
}

static void pmq_detach(void *ep_)
{
	struct pmq_ep *ep = ep_;
	if (!ep)
		return;
	mq_close(ep->q);
	free(ep);
}

static void pmq_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	mq_unlink(c->name); /* messages still queued go with it */
	free(c);
}

const struct peer_ops peer_posix_mq = {
	.name = "posix-mq",
	.describe = "POSIX mq_send()/mq_receive(), one message per call, every process opens the queue "
		    "itself; depth clamped to /proc/sys/fs/mqueue/msg_max (stderr says when)",
	.flags = PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING,
	.probe = pmq_probe,
	.create = pmq_create,
	.attach = pmq_attach,
	.send = pmq_send,
	.recv = pmq_recv,
	.detach = pmq_detach,
	.destroy = pmq_destroy,
};

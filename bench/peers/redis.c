/* SPDX-License-Identifier: MIT */
/*
 * redis.c: the "redis-streams" peer, a Redis stream with one consumer group (XADD, XREADGROUP,
 * XACK), through hiredis over TCP on 127.0.0.1.
 *
 * start() runs its own redis-server on a free port with no persistence (--save '', --appendonly
 * no) in a scratch directory under $TMPDIR; stop() sends SHUTDOWN NOSAVE, then SIGKILL if it has
 * not gone within 2 s, and removes the directory. create() makes the stream "shmqb-<tag>" and its
 * group "g" (XGROUP CREATE ... MKSTREAM). Every attach() opens its own connection, so a forked
 * process never shares a socket with its parent, and receivers get a consumer name of their own.
 *
 * Crash recovery is Redis's own: an entry a receiver took with XREADGROUP stays in the group's
 * pending list until XACK. A receiver first claims entries that have been pending longer than
 * REDIS_MIN_IDLE_MS (XAUTOCLAIM), so a killed consumer's message comes back to whoever receives
 * next; only then does it read new entries, one at a time (COUNT 1). A live consumer never holds
 * a message that long between its XREADGROUP and its XACK in these benchmarks, so a claim takes
 * only messages whose consumer died (or stalled for REDIS_MIN_IDLE_MS).
 *
 * A stream has no capacity: XADD never waits, and MAXLEN would drop entries, not wait. Unbounded, a
 * sender (one round trip per XADD) can outrun a receiver (XREADGROUP and XACK, two) up to twofold,
 * and what it ran ahead has to drain after the run: up to half the messages sent, seconds of it.
 * So a sender waits while the channel holds params.depth entries (0: no bound, Redis's own way):
 * every depth/2-th XADD carries an XINFO GROUPS in the same round trip, and while the group's
 * backlog (lag: not yet delivered, plus pending: delivered, not yet acked) is above depth/2 the
 * sender polls it every REDIS_FULL_POLL_US. At most depth entries wait (a batch more with
 * send_batch, depth/2 more per further sender); a look costs no round trip of its own unless the
 * channel is full.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "peers/peer.h"

#if __has_include(<hiredis/hiredis.h>)
#include <hiredis/hiredis.h>

#include "lib/daemon.h"

/* A pending entry idle this long is taken to belong to a dead consumer and claimed. */
#define REDIS_MIN_IDLE_MS 200
/* A receiver that found nothing to claim looks again after this long (a claim costs a round trip,
 * and nothing can become claimable sooner than REDIS_MIN_IDLE_MS after it was read). */
#define REDIS_CLAIM_PERIOD_MS 50
/* XREADGROUP BLOCK: how long one read waits for a new entry before claims are looked at again. */
#define REDIS_BLOCK_MS 1000
/* A sender that found the channel full looks at the backlog again after this long. */
#define REDIS_FULL_POLL_US 1000

struct peer_chan {
	char stream[96];
	size_t msg_size;
	unsigned depth; /* entries that may wait unread or unacked; 0: no bound */
};

struct redis_ep {
	redisContext *rc;
	const struct peer_chan *c;
	char consumer[48];
	char last_id[48]; /* entry id of the message recv() returned last, for ack() */
	uint64_t next_claim_ms;
	unsigned unchecked; /* senders: XADDs since the backlog was last looked at */
};

/* The server this process started (stop() in a forked child must not touch it). */
static struct daemon redis_srv = {.server = "redis-server", .peer = "redis-streams"};

static uint64_t redis_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static redisContext *redis_connect(int port)
{
	struct timeval tv = {.tv_sec = 2};
	redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);
	if (rc && rc->err) {
		redisFree(rc);
		return NULL;
	}
	return rc;
}

/* One command whose reply must not be an error; prints what went wrong. 0 or -EIO. */
static int redis_command_ok(redisContext *rc, const char *what, redisReply *r)
{
	if (!r) {
		fprintf(stderr, "redis-streams: %s: %s\n", what, rc->errstr);
		return -EIO;
	}
	int err = r->type == REDIS_REPLY_ERROR ? -EIO : 0;
	if (err)
		fprintf(stderr, "redis-streams: %s: %s\n", what, r->str);
	freeReplyObject(r);
	return err;
}

/* Whether the server answers PING: redis-server accepts connections before it can serve them. */
static int redis_ping(int port)
{
	redisContext *rc = redis_connect(port);
	if (!rc)
		return 0;
	redisReply *r = redisCommand(rc, "PING");
	int up = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
	if (r)
		freeReplyObject(r);
	redisFree(rc);
	return up;
}

static const char *redis_probe(void)
{
	if (redis_srv.why[0])
		return redis_srv.why;
	return daemon_in_path("redis-server") ? NULL : "redis-server not installed";
}

static void redis_stop(void)
{
	if (redis_srv.pid && redis_srv.owner == getpid()) {
		redisContext *rc = redis_connect(redis_srv.port);
		if (rc) {
			/* no reply when it works: the server closes the connection as it exits */
			redisReply *r = redisCommand(rc, "SHUTDOWN NOSAVE");
			if (r)
				freeReplyObject(r);
			redisFree(rc);
		}
	}
	daemon_stop(&redis_srv, 0); /* asked above: SIGKILL only if it has not gone in 2 s */
}

static int redis_start(void)
{
	int err = daemon_prepare(&redis_srv, "redis");
	if (err) {
		redis_stop();
		return err;
	}
	char port[16];
	snprintf(port, sizeof(port), "%d", redis_srv.port);
	/* no persistence (--save "", --appendonly no): the server is not what is measured */
	const char *const argv[] = {
		"redis-server", "--bind", "127.0.0.1", "--port",      port,	     "--save", "",
		"--appendonly", "no",	  "--dir",     redis_srv.dir, "--daemonize", "no",     "--loglevel",
		"warning",	NULL};
	err = daemon_spawn(&redis_srv, "redis-server", argv, 0);
	if (!err)
		err = daemon_wait_ready(&redis_srv, redis_ping, "answer PING");
	if (err)
		redis_stop();
	return err;
}

static struct peer_chan *redis_create(const struct peer_params *p)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	snprintf(c->stream, sizeof(c->stream), "shmqb-%s", p->tag);
	c->msg_size = p->msg_size;
	c->depth = p->depth;
	redisContext *rc = redis_connect(redis_srv.port);
	if (!rc) {
		fprintf(stderr, "redis-streams: cannot connect to 127.0.0.1:%d\n", redis_srv.port);
		free(c);
		return NULL;
	}
	/* the tag is unique per run: a stream of that name is a leftover, start afresh */
	int err = redis_command_ok(rc, "DEL", redisCommand(rc, "DEL %s", c->stream));
	if (!err)
		err = redis_command_ok(rc, "XGROUP CREATE",
				       redisCommand(rc, "XGROUP CREATE %s g 0 MKSTREAM", c->stream));
	redisFree(rc);
	if (err) {
		free(c);
		return NULL;
	}
	return c;
}

static void *redis_attach(struct peer_chan *c, enum peer_role role)
{
	static unsigned attaches;
	struct redis_ep *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	ep->c = c;
	ep->rc = redis_connect(redis_srv.port);
	if (!ep->rc) {
		fprintf(stderr, "redis-streams: cannot connect to 127.0.0.1:%d\n", redis_srv.port);
		free(ep);
		return NULL;
	}
	/* a name per attach: a replacement receiver must not inherit a dead one's pending list */
	snprintf(ep->consumer, sizeof(ep->consumer), "%s%ld-%u", role == PEER_SENDER ? "p" : "c",
		 (long)getpid(), attaches++);
	return ep;
}

/* A sender looks at the backlog every this many XADDs; it then has to be at most depth minus this. */
static unsigned redis_check_every(const struct peer_chan *c) { return c->depth / 2 ? c->depth / 2 : 1; }

static long long redis_int_or_zero(const redisReply *v)
{
	return v->type == REDIS_REPLY_INTEGER ? v->integer : 0;
}

/* XINFO GROUPS: per group [name, g, consumers, n, pending, n, last-delivered-id, id, entries-read, n,
 * lag, n] (RESP2, Redis 7). Group g's lag + pending into *backlog; a nil lag (Redis cannot tell, only
 * after XDEL or trimming, which nothing here does) counts as 0. Frees r. 0 or -errno. */
static int redis_backlog(redisContext *rc, redisReply *r, long long *backlog)
{
	if (!r) {
		fprintf(stderr, "redis-streams: XINFO GROUPS: %s\n", rc->errstr);
		return -EIO;
	}
	int err = -EPROTO;
	if (r->type == REDIS_REPLY_ERROR)
		fprintf(stderr, "redis-streams: XINFO GROUPS: %s\n", r->str);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && err; i++) {
		const redisReply *g = r->element[i];
		long long lag = 0, pending = 0;
		int ours = 0;
		for (size_t k = 0; g->type == REDIS_REPLY_ARRAY && k + 1 < g->elements; k += 2) {
			const redisReply *key = g->element[k], *v = g->element[k + 1];
			if (key->type != REDIS_REPLY_STRING)
				continue;
			if (!strcmp(key->str, "name"))
				ours = v->type == REDIS_REPLY_STRING && !strcmp(v->str, "g");
			else if (!strcmp(key->str, "lag"))
				lag = redis_int_or_zero(v);
			else if (!strcmp(key->str, "pending"))
				pending = redis_int_or_zero(v);
		}
		if (ours) {
			*backlog = lag + pending;
			err = 0;
		}
	}
	freeReplyObject(r);
	return err;
}

/* The channel is full while the backlog is above depth minus redis_check_every(): polls until not. */
static int redis_wait_room(struct redis_ep *ep, long long backlog)
{
	const struct peer_chan *c = ep->c;
	const long long low = (long long)(c->depth - redis_check_every(c));
	while (backlog > low) {
		usleep(REDIS_FULL_POLL_US);
		int err = redis_backlog(ep->rc, redisCommand(ep->rc, "XINFO GROUPS %s", c->stream), &backlog);
		if (err)
			return err;
	}
	return 0;
}

/* n pipelined XADDs of len bytes (one round trip for the lot), with an XINFO GROUPS behind them when
 * a look at the backlog is due; then waits while the channel is full. How many were sent, always
 * the first ones (>= 1), or -errno. */
static int redis_xadd(struct redis_ep *ep, const char *msgs, size_t len, unsigned n)
{
	const struct peer_chan *c = ep->c;
	unsigned queued = 0;
	while (queued < n && redisAppendCommand(ep->rc, "XADD %s * m %b", c->stream,
						msgs + (size_t)queued * len, len) == REDIS_OK)
		queued++;
	if (!queued)
		return -ENOMEM;
	/* if this one cannot be queued, the next send looks */
	int look = c->depth && ep->unchecked + queued >= redis_check_every(c) &&
		   redisAppendCommand(ep->rc, "XINFO GROUPS %s", c->stream) == REDIS_OK;

	int sent = 0, err = 0, stray = 0;
	for (unsigned i = 0; i < queued; i++) {
		void *r = NULL;
		if (redisGetReply(ep->rc, &r) != REDIS_OK) {
			fprintf(stderr, "redis-streams: XADD: %s\n", ep->rc->errstr);
			return sent ? sent : -EIO; /* the connection is broken: nothing more comes back */
		}
		int e = redis_command_ok(ep->rc, "XADD", r);
		if (e && !err)
			err = e;
		else if (!e && err)
			stray = 1; /* sent after one that failed: the caller would send it again */
		else if (!e)
			sent++;
	}
	ep->unchecked += (unsigned)sent;
	if (look) {
		long long backlog = 0;
		void *r = NULL;
		int e = redisGetReply(ep->rc, &r) == REDIS_OK ? redis_backlog(ep->rc, r, &backlog) : -EIO;
		if (!e) {
			ep->unchecked = 0;
			e = redis_wait_room(ep, backlog);
		}
		if (e)
			return e;
	}
	if (stray)
		return -EIO;
	return sent ? sent : err;
}

static int redis_send(void *ep_, const void *msg, size_t len)
{
	int n = redis_xadd(ep_, msg, len, 1);
	return n < 0 ? n : 0;
}

static int redis_send_batch(void *ep_, const void *msgs, size_t len, unsigned n)
{
	return redis_xadd(ep_, msgs, len, n);
}

/* Copies the one field of entry [id, [field, value]] into buf; bytes copied or -EPROTO. */
static int redis_take_entry(struct redis_ep *ep, const redisReply *e, void *buf, size_t cap)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
	    e->element[1]->type != REDIS_REPLY_ARRAY || e->element[1]->elements != 2)
		return -EPROTO;
	const redisReply *v = e->element[1]->element[1];
	if (v->type != REDIS_REPLY_STRING || v->len > cap || e->element[0]->len >= sizeof(ep->last_id))
		return -EPROTO;
	memcpy(ep->last_id, e->element[0]->str, e->element[0]->len + 1);
	memcpy(buf, v->str, v->len);
	return (int)v->len;
}

/* XAUTOCLAIM: [next-start, [entries...], [deleted ids...]]; the first entry, if any. 0: none. */
static int redis_claim(struct redis_ep *ep, void *buf, size_t cap)
{
	redisReply *r = redisCommand(ep->rc, "XAUTOCLAIM %s g %s %d 0-0 COUNT 1", ep->c->stream, ep->consumer,
				     REDIS_MIN_IDLE_MS);
	if (!r)
		return -EIO;
	int n = -EPROTO;
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->type == REDIS_REPLY_ARRAY)
		n = r->element[1]->elements ? redis_take_entry(ep, r->element[1]->element[0], buf, cap) : 0;
	else if (r->type == REDIS_REPLY_ERROR)
		fprintf(stderr, "redis-streams: XAUTOCLAIM: %s\n", r->str);
	freeReplyObject(r);
	return n;
}

/* XREADGROUP ... STREAMS s >: [[stream, [entry]]] or nil after REDIS_BLOCK_MS. 0: none. */
static int redis_read_new(struct redis_ep *ep, void *buf, size_t cap)
{
	redisReply *r = redisCommand(ep->rc, "XREADGROUP GROUP g %s COUNT 1 BLOCK %d STREAMS %s >",
				     ep->consumer, REDIS_BLOCK_MS, ep->c->stream);
	if (!r)
		return -EIO;
	int n = 0;
	if (r->type == REDIS_REPLY_ARRAY) {
		const redisReply *s = r->elements ? r->element[0] : NULL;
		if (s && s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
		    s->element[1]->type == REDIS_REPLY_ARRAY && s->element[1]->elements)
			n = redis_take_entry(ep, s->element[1]->element[0], buf, cap);
	} else if (r->type != REDIS_REPLY_NIL) {
		if (r->type == REDIS_REPLY_ERROR)
			fprintf(stderr, "redis-streams: XREADGROUP: %s\n", r->str);
		n = -EPROTO;
	}
	freeReplyObject(r);
	return n;
}

/* Blocks until a message comes: claimed from a dead consumer first, else a new one. */
static int redis_recv(void *ep_, void *buf, size_t cap)
{
	struct redis_ep *ep = ep_;
	for (;;) {
		int n;
		if (redis_now_ms() >= ep->next_claim_ms) {
			n = redis_claim(ep, buf, cap);
			if (n)
				return n;
			ep->next_claim_ms = redis_now_ms() + REDIS_CLAIM_PERIOD_MS;
		}
		n = redis_read_new(ep, buf, cap);
		if (n)
			return n;
	}
}

static int redis_ack(void *ep_)
{
	struct redis_ep *ep = ep_;
	if (!ep->last_id[0])
		return -EINVAL;
	redisReply *r = redisCommand(ep->rc, "XACK %s g %s", ep->c->stream, ep->last_id);
	if (!r)
		return -EIO;
	/* 0 acked: the entry was claimed by another consumer meanwhile (we were too slow) */
	int err = r->type == REDIS_REPLY_INTEGER ? (r->integer == 1 ? 0 : -ESTALE) : -EPROTO;
	freeReplyObject(r);
	ep->last_id[0] = '\0';
	return err;
}

static void redis_detach(void *ep_)
{
	struct redis_ep *ep = ep_;
	redisFree(ep->rc);
	free(ep);
}

static void redis_destroy(struct peer_chan *c)
{
	redisContext *rc = redis_connect(redis_srv.port);
	if (rc) {
		redis_command_ok(rc, "DEL", redisCommand(rc, "DEL %s", c->stream));
		redisFree(rc);
	}
	free(c);
}

const struct peer_ops peer_redis = {
	.name = "redis-streams",
	.describe = "Redis Streams over TCP on 127.0.0.1 (XADD / XREADGROUP COUNT 1 / XACK, XAUTOCLAIM "
		    "after 200 ms idle; senders wait while depth entries are unread or unacked), hiredis, "
		    "no persistence",
	.flags = PEER_ACKS | PEER_BLOCKING | PEER_MPMC | PEER_NEEDS_DAEMON,
	.probe = redis_probe,
	.start = redis_start,
	.stop = redis_stop,
	.create = redis_create,
	.attach = redis_attach,
	.send = redis_send,
	.recv = redis_recv,
	.ack = redis_ack,
	.send_batch = redis_send_batch,
	.detach = redis_detach,
	.destroy = redis_destroy,
};

#else /* no hiredis */

static const char *redis_probe(void) { return "libhiredis-dev not installed"; }

const struct peer_ops peer_redis = {
	.name = "redis-streams",
	.describe = "Redis Streams (not built: no hiredis)",
	.flags = PEER_ACKS | PEER_BLOCKING | PEER_MPMC | PEER_NEEDS_DAEMON,
	.probe = redis_probe,
};

#endif

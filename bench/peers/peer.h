/* SPDX-License-Identifier: MIT */
/*
 * peer.h: one transport under test (shmq itself, or a peer: pipe, Unix sockets, POSIX mq, ZeroMQ,
 * Boost.Interprocess, iceoryx, the cache-line floor, a two-slot message handoff, a bare SPSC ring,
 * a minimal leased ring, Redis Streams, JetStream),
 * as the harness (bench/harness.c) and the crash bench (bench/crash.c) drive it.
 *
 * The life of a channel: the parent calls create() before it forks; each process that uses the
 * channel (the parent or a forked child) calls attach() as a sender or a receiver, then send()/
 * recv() (and ack() where the transport has acknowledgements), then detach(); after every process
 * is done the parent calls destroy(). Whatever create() returns is copied into every child by
 * fork: fds stay open, names stay valid; process-local pointers into it are the adapter's
 * business. A transport that needs a daemon (iox-roudi, redis-server, nats-server) starts it in
 * start() and stops it in stop(), once per harness run.
 *
 * Every message has exactly params.msg_size bytes. Its first 8 bytes are a sequence number the
 * harness writes and checks; an adapter must deliver the bytes unchanged.
 *
 * Adapters whose library is missing at build time still compile (they test __has_include) and
 * return the reason from probe(), so the harness reports them as skipped, never drops them.
 */
#ifndef SHMQ_BENCH_PEER_H
#define SHMQ_BENCH_PEER_H

#include <stddef.h>
#include <stdint.h>

enum peer_role {
	PEER_SENDER = 0,
	PEER_RECEIVER = 1
};

enum peer_flags {
	PEER_MPMC = 1u << 0,	     /* several senders and several receivers on one channel are fine */
	PEER_BUSY_POLL = 1u << 1,    /* recv can busy-poll (params.blocking == 0) */
	PEER_BLOCKING = 1u << 2,     /* recv can sleep in the kernel (params.blocking == 1) */
	PEER_ACKS = 1u << 3,	     /* has ack(): a message taken but not acked is redelivered */
	PEER_REFERENCE = 1u << 4,    /* a floor or bound (cache line, bare ring), not a usable queue */
	PEER_NEEDS_DAEMON = 1u << 5, /* start()/stop() run a server process */
	/* moves one 8-byte value, not a message, and only as a ping-pong: ONE channel serves both
	 * directions (the side attached as PEER_SENDER sends first, then the two alternate); send and
	 * recv take len == 8. The harness runs it in the latency scenario only. */
	PEER_WORD = 1u << 6,
};

struct peer_params {
	size_t msg_size;    /* bytes per message, >= 16 */
	unsigned depth;	    /* capacity in messages, where the transport has one (0: its default) */
	int blocking;	    /* recv: 1 sleeps in the kernel, 0 busy-polls */
	unsigned senders;   /* processes that will attach as senders (1 unless PEER_MPMC) */
	unsigned receivers; /* processes that will attach as receivers */
	char tag[64];	    /* unique per channel and run: use it in shm / mq / socket / stream names */
};

struct peer_chan; /* the adapter's own */

struct peer_ops {
	const char *name;     /* short, for tables and JSON: "shmq", "pipe", "unix-stream", ... */
	const char *describe; /* one line: what exactly is measured */
	unsigned flags;	      /* enum peer_flags */

	/* NULL when it can run here, else why not: "libzmq3-dev not installed", ... */
	const char *(*probe)(void);
	/* optional (NULL): once per run, before any create / after the last destroy */
	int (*start)(void);
	void (*stop)(void);

	struct peer_chan *(*create)(const struct peer_params *p); /* NULL on failure (say why on stderr) */
	void *(*attach)(struct peer_chan *c,
			enum peer_role role); /* a per-process endpoint, NULL on failure */
	/* 0 or -errno. Blocks while the channel is full. */
	int (*send)(void *ep, const void *msg, size_t len);
	/* bytes received (== msg_size) or -errno; blocks or busy-polls as params.blocking says.
	 * -ETIMEDOUT (also from send) only when the adapter has a bound of its own and it ran out:
	 * the transport looks wedged. */
	int (*recv)(void *ep, void *buf, size_t cap);
	/* optional: acknowledges the message recv() returned last (PEER_ACKS) */
	int (*ack)(void *ep);
	/* optional: n messages of len bytes, contiguous in msgs; returns how many were sent (>= 1) or
	 * -errno */
	int (*send_batch)(void *ep, const void *msgs, size_t len, unsigned n);
	/* optional: up to max messages of len bytes into buf; returns how many (>= 1) or -errno */
	int (*recv_batch)(void *ep, void *buf, size_t len, unsigned max);
	void (*detach)(void *ep);
	void (*destroy)(struct peer_chan *c);
};

/* registry.c: every transport, in the order tables list them. peer_slots[i] is NULL when the
 * adapter for peer_slot_names[i] is not linked in (each adapter defines `const struct peer_ops
 * peer_<slot name>`, e.g. peer_unix_stream; its ops->name may differ: "unix-stream"). */
extern const struct peer_ops *const peer_slots[];
extern const char *const peer_slot_names[];
extern const unsigned peer_count;
const struct peer_ops *peer_find(const char *name); /* by ops->name; NULL if unknown or not built */

#endif

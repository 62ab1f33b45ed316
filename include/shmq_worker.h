/* SPDX-License-Identifier: MIT */
/*
 * shmq_worker: a pool of handler threads on one queue, with a lease keeper and graceful shutdown.
 *
 * N threads of one process share one shmq_t (one participant). Each receives one message at a
 * time, calls the handler, and settles the delivery by the handler's verdict: ack, retry (nack
 * with the queue's backoff, dead-lettered at max_deliveries) or reject (straight to the
 * dead-letter queue). A keeper thread extends the lease of every message whose handler is still
 * running when less than a third of the lease is left, so a handler may run for many leases
 * without the message being redelivered to anyone else.
 *
 * If the process dies (SIGKILL included), its keeper dies with it: the queue's next reclaim pass
 * sees the owner gone and requeues its messages, with backoff, like any crashed consumer's.
 *
 * Lifecycle
 *   shmq_worker_config_init(&cfg); cfg.handler = fn; cfg.threads = 4;
 *   shmq_worker_start(q, &cfg, &w);
 *   ... shmq_worker_stop(w), from any thread or a signal handler ...
 *   shmq_worker_join(w);   waits for the threads; returns the first error one of them hit
 *   shmq_worker_close(w);  frees; q stays open (close it after this)
 *
 * Stop is graceful: no thread starts a new receive (one already waiting in shmq_recv, for at most
 * poll_ms, handles what it gets), handlers running finish and their verdicts are applied. Past
 * config.grace_ms (or at a second shmq_worker_stop), messages still in flight are nacked for
 * immediate redelivery elsewhere and shmq_worker_state() says SHMQ_WORKER_ABANDONED: a handler
 * that polls it should return (its verdict is then ignored). That nack counts as a delivery, as a
 * crash would: a message on its last delivery is dead-lettered.
 *
 * Conventions as in shmq.h: 0 or a negative errno; the library never prints or exits. The
 * worker uses liburcu (its default memb flavour: link with -lurcu), registers its own threads
 * with it and frees through call_rcu; a process that forks and starts a worker in the child
 * follows liburcu's rules for call_rcu across fork (call_rcu_after_fork_child).
 */
#ifndef SHMQ_WORKER_H
#define SHMQ_WORKER_H

#include <stdint.h>

#include "shmq.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

#define SHMQ_WORKER_THREADS_MAX 1024
#define SHMQ_WORKER_POLL_MAX 60000 /* ms */

typedef struct shmq_worker shmq_worker_t; /* opaque */

/* What a handler returns. Any other value counts as SHMQ_WORKER_RETRY. */
enum shmq_worker_verdict {
	SHMQ_WORKER_ACK = 0,	/* done: shmq_ack (shmq_ack_done with config.dedup) */
	SHMQ_WORKER_RETRY = 1,	/* failed this time: shmq_nack(-1), redelivered after the backoff;
				 * at max_deliveries it is dead-lettered instead */
	SHMQ_WORKER_REJECT = 2, /* will never work: shmq_reject, to the dead-letter queue at once */
};

enum shmq_worker_state {
	SHMQ_WORKER_RUNNING = 0,
	SHMQ_WORKER_DRAINING = 1,  /* stopped: no new messages; handlers in flight finish */
	SHMQ_WORKER_ABANDONED = 2, /* grace over: every message in flight is nacked, whatever its
				    * handler returns */
};

/* Called on one of the worker's threads, one message per thread at a time; `m` (and m->data)
 * stays valid until the handler returns, unless the lease is lost meanwhile (the keeper could
 * not extend it in time, or the grace period ended): the payload may then be overwritten by a
 * later message, so copy what you need at the start. The handler may call shmq_worker_state(),
 * shmq_worker_stats() and shmq_worker_stop() on w, not join or close. */
typedef int (*shmq_worker_fn)(shmq_worker_t *w, const struct shmq_msg *m, void *arg);

struct shmq_worker_config {
	unsigned threads;	/* handler threads, 1..SHMQ_WORKER_THREADS_MAX (default 1) */
	shmq_worker_fn handler; /* required */
	void *arg;		/* handed to every handler call */
	uint32_t poll_ms;	/* an idle thread notices a stop within this, 1..SHMQ_WORKER_POLL_MAX
				 * (default 100): it receives with this timeout */
	int32_t grace_ms;	/* after a stop, how long handlers in flight may run before their
				 * messages are nacked: 0 at once, -1 wait for them (default) */
	int dedup;		/* nonzero: consumer-side duplicate suppression (default 0). A message
				 * shmq_is_done() says was done already is acked without calling the
				 * handler (counted in skipped_done); an ACK verdict is applied with
				 * shmq_ack_done(), which records the message done (by its key, else
				 * its id) before the ack. So a redelivery whose handler finished but
				 * whose ack was lost to a crash is not handled twice. It does not
				 * cover a crash while the handler runs: that message is handled
				 * again (at least once). The queue needs a dedup table
				 * (dedup_window_ms > 0), and records last that long. */
};

/* What the worker has done since it started. Counters only grow. */
struct shmq_worker_stats {
	uint64_t received;		   /* messages handed to the handler */
	uint64_t acked, retried, rejected; /* verdicts applied (retried: nacks, dead-lettering ones too) */
	uint64_t lost;	       /* verdicts that found the lease already lost (-ESTALE): the message was
				* requeued meanwhile and may be delivered again */
	uint64_t extended;     /* leases extended by the keeper */
	uint64_t abandoned;    /* messages nacked because the grace period ended */
	uint64_t skipped_done; /* config.dedup: deliveries acked without calling the handler because
				* their work was recorded done already (not in received or acked) */
	uint32_t in_flight;    /* handlers running now */
};

/* Defaults as documented in struct shmq_worker_config; handler is NULL. */
void shmq_worker_config_init(struct shmq_worker_config *cfg);

/* Starts cfg->threads handler threads and the keeper on q (which must stay open until
 * shmq_worker_close). Reads the queue's lease length once (via shmq_stats). The threads block
 * every signal, so process signals go to the application's threads. Returns 0, -EINVAL (NULL
 * argument, no handler, a field out of range), -ENOTSUP (cfg->dedup on a queue without a dedup
 * table: created with dedup_window_ms 0), -ENOMEM, or -EAGAIN or another -errno when a thread
 * could not be created (then no thread is left running). Does not block. */
int shmq_worker_start(shmq_t *q, const struct shmq_worker_config *cfg, shmq_worker_t **w);

/* Stops taking messages (first call) or ends the grace period now (any later call).
 * Async-signal-safe: a SIGTERM handler may call it. Does not wait: see shmq_worker_join.
 * 0, or -EINVAL for NULL. */
int shmq_worker_stop(shmq_worker_t *w);

/* enum shmq_worker_state, or -EINVAL for NULL. Async-signal-safe. */
int shmq_worker_state(const shmq_worker_t *w);

/* A snapshot of the counters (each read atomically, not all at one instant). 0 or -EINVAL. */
int shmq_worker_stats(const shmq_worker_t *w, struct shmq_worker_stats *st);

/* Blocks until every thread has exited, which happens only after a stop (or after a thread hit
 * an error it cannot go on from, which stops the others). Returns 0, the first such error (a
 * negative errno from shmq_recv, or -ENOMEM), or -EINVAL for NULL. Call from one thread, not
 * from a handler; later calls return the same at once. */
int shmq_worker_join(shmq_worker_t *w);

/* Stops (if still running), joins and frees. shmq_worker_close(NULL) is harmless. No other call
 * on w may run or follow, a signal handler's stop included: block or reset those signals first. */
void shmq_worker_close(shmq_worker_t *w);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* SHMQ_WORKER_H */

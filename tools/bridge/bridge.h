/* SPDX-License-Identifier: MIT */
/*
 * bridge.h: shmq-bridge, an at-least-once bridge between one shmq queue and NATS JetStream, in
 * either direction. Its own binary: libshmq never links libnats.
 *
 *   to_js.c    shm -> JetStream: receive a batch, publish it asynchronously with a Nats-Msg-Id
 *              made of the queue's identity and each message id, ack in shm only what JetStream
 *              acknowledged (the stream's duplicate window absorbs the resends of a crash).
 *   from_js.c  JetStream -> shm: fetch a batch from a durable pull consumer, send each message with
 *              an idempotency key made of the stream name and sequence, ack in JetStream only after
 *              the send (shmq's dedup window absorbs the redeliveries of a crash).
 *   main.c     options, connection, signals, the --stats line.
 */
#ifndef SHMQ_BRIDGE_H
#define SHMQ_BRIDGE_H

#include <signal.h>
#include <stdint.h>

#include <nats/nats.h>

#include "shmq.h"

#ifdef SHMQ_TEST
#include "fault.h"
#else
#define SHMQ_FAULT(p) ((void)0)
#endif

/* exit codes */
#define BR_OK 0
#define BR_FAIL 1	 /* runtime failure (the queue cannot be opened, ...) */
#define BR_USAGE 2	 /* bad command line, bad URL */
#define BR_NO_STREAM 3	 /* the stream (or the durable's stream) does not exist */
#define BR_UNREACHABLE 4 /* no server answered at start-up */

/* Headers that carry what shmq knows about a message besides its payload. */
#define BR_HDR_KEY "Shmq-Key"	  /* the shmq idempotency key */
#define BR_HDR_ROUTE "Shmq-Route" /* a routing key (from_js: routes the shm send) */

#define BR_BATCH_MAX 1024

struct br_opts {
	const char *name;    /* the shm queue */
	const char *url;     /* nats://HOST:PORT */
	int to_js;	     /* 1: --to, 0: --from */
	const char *subject; /* --subject */
	const char *stream;  /* --stream, or NULL */
	const char *durable; /* --durable (from) */
	int create;	     /* --create: make the stream if it is missing */
	unsigned batch;	     /* messages per batch */
	int stats_ms;	     /* --stats-ms: a stats line this often (0: only at exit) */
	int ack_wait_ms;     /* --ack-wait-ms: the durable's AckWait when the bridge creates it */
	int timeout_ms;	     /* how long one publish batch or one fetch waits */
};

struct br_counters {
	/* to_js */
	uint64_t received;   /* shm deliveries taken */
	uint64_t published;  /* PubAcks received (duplicates included) */
	uint64_t duplicates; /* PubAcks that said the stream had the Msg-Id already */
	uint64_t acked;	     /* shm acks */
	uint64_t retries;    /* publishes repeated after an error or a timeout */
	/* from_js */
	uint64_t fetched;    /* JetStream deliveries taken */
	uint64_t sent;	     /* shm sends (enqueued) */
	uint64_t suppressed; /* shm sends the dedup window suppressed */
	uint64_t js_acked;   /* JetStream acks */
	uint64_t full_waits; /* sends that found the shm queue full */
	uint64_t too_big;    /* messages terminated: larger than the queue's max payload */
	/* both */
	uint64_t errors;
};

struct bridge {
	struct br_opts o;
	shmq_t *q;
	natsConnection *nc;
	jsCtx *js;
	struct br_counters c;
	char ident[64]; /* the queue's identity (to_js): survives restarts, differs per creation */
	uint64_t next_stats_ms;
};

extern volatile sig_atomic_t br_stop; /* SIGTERM/SIGINT: drain and exit */

int br_to_js(struct bridge *b);
/* Checks --stream (creating it with --create); 0 or an exit code after printing the error. */
int br_check_stream(struct bridge *b);
/* Sets to_js's PubAck handler in the JetStream context's options. */
void br_to_js_options(jsOptions *jo);
int br_from_js(struct bridge *b);

/* One line on stderr: "shmq-bridge: NAME: ..." */
void br_log(const struct bridge *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the stats line if --stats-ms says it is time (or always when force). */
void br_stats(struct bridge *b, int force);
uint64_t br_now_ms(void);
/* Sleeps ms, returning early on br_stop. */
void br_sleep_ms(int ms);

#endif

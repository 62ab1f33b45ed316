/* SPDX-License-Identifier: MIT */
/*
 * The worker runtime (include/shmq_worker.h) and `shmq work`. The API tests run the worker's
 * threads in this process on one handle; `make tsan` builds this file with TQ_PLAIN into a program
 * of its own that runs them under ThreadSanitizer (its main is at the bottom). The `shmq work`
 * tests run the built tool ($SHMQ_TOOL) as a user would; they and the SIGKILL test need Criterion.
 * Each `shmq work` writes its CMDs' files and its own output into a scratch directory of the test.
 *
 * Time is asserted only as generous bounds for liveness (LIVE_MS), and as the lower bound of a
 * backoff, which the queue enforces.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../common.h"
#include "internal.h" /* shmq_fault_arm */
#include "shmq_worker.h"

#define LIVE_MS 20000 /* what has not happened by then is not going to */

/* Polls the queue's stats into st until cond holds; fails the test past LIVE_MS. */
#define WAIT_FOR(q, st, cond)                                                                                \
	do {                                                                                                 \
		double until_ = tq_now_ms() + LIVE_MS;                                                       \
		while ((st = tq_stats(q), !(cond))) {                                                        \
			TQ_REQUIRE(tq_now_ms() < until_, "still not %s after %d ms", #cond, LIVE_MS);        \
			tq_sleep_ms(5);                                                                      \
		}                                                                                            \
	} while (0)

/* Waits until *v reaches n (set by a handler thread); fails the test past LIVE_MS. */
static void wait_count(_Atomic unsigned *v, unsigned n)
{
	double until = tq_now_ms() + LIVE_MS;
	while (atomic_load(v) < n) {
		TQ_REQUIRE(tq_now_ms() < until, "count still %u, want %u", atomic_load(v), n);
		tq_sleep_ms(1);
	}
}

static shmq_worker_t *start(shmq_t *q, unsigned threads, shmq_worker_fn fn, void *arg, int32_t grace_ms)
{
	struct shmq_worker_config c;
	shmq_worker_config_init(&c);
	c.threads = threads;
	c.handler = fn;
	c.arg = arg;
	c.poll_ms = 10;
	c.grace_ms = grace_ms;
	shmq_worker_t *w = NULL;
	int r = shmq_worker_start(q, &c, &w);
	TQ_REQUIRE(r == 0, "shmq_worker_start: %s", shmq_strerror(r));
	return w;
}

static struct shmq_worker_stats wstats(shmq_worker_t *w)
{
	struct shmq_worker_stats s;
	TQ_REQUIRE(shmq_worker_stats(w, &s) == 0, "shmq_worker_stats failed");
	return s;
}

static void send_str(shmq_t *q, const char *s)
{
	int r = shmq_send(q, s, strlen(s), 0);
	TQ_REQUIRE(r == 0, "send %s: %s", s, shmq_strerror(r));
}

/* ---- verdicts -------------------------------------------------------------------------------- */

#define MAX_DELIV 3
#define BASE_MS 100

static const char *const verdict_names[] = {"ack", "retry", "reject"}; /* index = verdict */

struct verdicts {
	_Atomic unsigned calls[3];
	_Atomic uint64_t at_us[3][MAX_DELIV]; /* when each delivery reached the handler */
	_Atomic unsigned bad;
};

/* The index of m's payload among names[0..n), or -1. */
static int payload_index(const struct shmq_msg *m, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (m->len == strlen(names[i]) && !memcmp(m->data, names[i], m->len))
			return i;
	return -1;
}

/* Returns the verdict the payload names. */
static int by_payload(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct verdicts *v = arg;
	(void)w;
	int i = payload_index(m, verdict_names, 3);
	if (i < 0) {
		atomic_fetch_add(&v->bad, 1);
		return SHMQ_WORKER_ACK;
	}
	atomic_fetch_add(&v->calls[i], 1);
	if (m->deliveries >= 1 && m->deliveries <= MAX_DELIV)
		atomic_store(&v->at_us[i][m->deliveries - 1], (uint64_t)(tq_now_ms() * 1000));
	return i;
}

static const struct shmq_dead_letter *find_letter(const struct shmq_dead_letter *d, int n,
						  const char *payload)
{
	for (int i = 0; i < n; i++)
		if (d[i].len == strlen(payload) && !memcmp(d[i].data, payload, d[i].len))
			return &d[i];
	return NULL;
}

static void verdicts_land(void)
{
	struct shmq_config c = tq_config(64);
	c.max_deliveries = MAX_DELIV;
	c.retry_base_ms = BASE_MS;
	c.retry_max_ms = 10 * BASE_MS;
	shmq_t *q = tq_mkq(&c);
	struct verdicts *v = calloc(1, sizeof(*v));
	TQ_REQUIRE(v, "out of memory");
	for (int i = 0; i < 3; i++)
		send_str(q, verdict_names[i]);
	shmq_worker_t *w = start(q, 3, by_payload, v, -1);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 1 && st.dead == 2);
	TQ_EXPECT(shmq_worker_stop(w) == 0, "stop failed");
	TQ_EXPECT(shmq_worker_join(w) == 0, "join returned an error");

	TQ_EXPECT(atomic_load(&v->bad) == 0, "the handler saw a payload nobody sent");
	TQ_EXPECT(atomic_load(&v->calls[0]) == 1, "ack: %u handler calls, want 1", atomic_load(&v->calls[0]));
	TQ_EXPECT(atomic_load(&v->calls[1]) == MAX_DELIV, "retry: %u handler calls, want %d",
		  atomic_load(&v->calls[1]), MAX_DELIV);
	TQ_EXPECT(atomic_load(&v->calls[2]) == 1, "reject: %u handler calls, want 1",
		  atomic_load(&v->calls[2]));
	/* backoff: base * 2^(n-1), -25 % jitter at most */
	for (int d = 1; d < MAX_DELIV; d++) {
		double gap = (double)(atomic_load(&v->at_us[1][d]) - atomic_load(&v->at_us[1][d - 1])) / 1000;
		double min = BASE_MS * (1 << (d - 1)) * 0.75 - tq_slack_ms();
		TQ_EXPECT(gap >= min, "retry: delivery %d came %.1f ms after the one before, want >= %.1f",
			  d + 1, gap, min);
	}

	struct shmq_dead_letter dl[4];
	int n = shmq_dlq_list(q, dl, 4);
	TQ_EXPECT(n == 2, "%d dead letters, want 2", n);
	const struct shmq_dead_letter *retry = find_letter(dl, n, "retry"),
				      *reject = find_letter(dl, n, "reject");
	TQ_EXPECT(retry && retry->reason == SHMQ_DEAD_MAX_DELIVERIES && retry->deliveries == MAX_DELIV,
		  "the retried message is not dead-lettered at max deliveries");
	TQ_EXPECT(reject && reject->reason == SHMQ_DEAD_REJECTED && reject->deliveries == 1,
		  "the rejected message is not dead-lettered as rejected after one delivery");
	TQ_EXPECT(!find_letter(dl, n, "ack"), "the acked message was dead-lettered");

	struct shmq_worker_stats ws = wstats(w);
	TQ_EXPECT(ws.received == 2 + MAX_DELIV && ws.acked == 1 && ws.retried == MAX_DELIV &&
			  ws.rejected == 1 && ws.lost == 0 && ws.in_flight == 0,
		  "worker stats: received %llu acked %llu retried %llu rejected %llu lost %llu in flight %u",
		  (unsigned long long)ws.received, (unsigned long long)ws.acked,
		  (unsigned long long)ws.retried, (unsigned long long)ws.rejected,
		  (unsigned long long)ws.lost, ws.in_flight);
	st = tq_stats(q);
	TQ_EXPECT(st.ready + st.inflight + st.delayed == 0 && st.stale == 0, "queue not settled cleanly");
	shmq_worker_close(w);
	shmq_close(q);
	free(v);
}

/* ---- the lease keeper ------------------------------------------------------------------------ */

#define SHORT_LEASE_MS 150
#define LONG_HANDLER_MS (6 * SHORT_LEASE_MS)

struct slow {
	_Atomic unsigned calls, stolen;
	_Atomic int done;
	const char *name;
};

static int sleep_long(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct slow *s = arg;
	(void)w;
	(void)m;
	atomic_fetch_add(&s->calls, 1);
	tq_sleep_ms(LONG_HANDLER_MS);
	return SHMQ_WORKER_ACK;
}

/* Another consumer with its own handle: receives (and so runs reclaim passes) all the while. */
static void *rival(void *arg)
{
	struct slow *s = arg;
	shmq_t *q;
	if (shmq_open(s->name, &q))
		return NULL;
	while (!atomic_load(&s->done)) {
		struct shmq_msg m;
		if (shmq_recv(q, &m, 20) == 0) {
			atomic_fetch_add(&s->stolen, 1);
			shmq_ack(q, &m);
		}
		shmq_reclaim(q, NULL);
	}
	shmq_close(q);
	return NULL;
}

static void keeper_keeps_lease(void)
{
	struct slow s = {.name = tq_name(NULL)};
	struct shmq_config c = tq_config(16);
	c.lease_ms = SHORT_LEASE_MS;
	c.reclaim_interval_ms = 10;
	shmq_t *q = tq_create(s.name, &c);
	send_str(q, "long job");
	shmq_worker_t *w = start(q, 1, sleep_long, &s, -1);
	wait_count(&s.calls, 1);
	pthread_t rt;
	TQ_REQUIRE(pthread_create(&rt, NULL, rival, &s) == 0, "pthread_create failed");
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 1);
	atomic_store(&s.done, 1);
	pthread_join(rt, NULL);
	shmq_worker_stop(w);
	TQ_EXPECT(shmq_worker_join(w) == 0, "join returned an error");

	struct shmq_worker_stats ws = wstats(w);
	TQ_EXPECT(atomic_load(&s.calls) == 1, "the handler ran %u times, want once", atomic_load(&s.calls));
	TQ_EXPECT(atomic_load(&s.stolen) == 0, "another consumer received the message %u times",
		  atomic_load(&s.stolen));
	/* about one extension per two thirds of a lease; asking for half of that is generous */
	TQ_EXPECT(ws.extended >= LONG_HANDLER_MS / SHORT_LEASE_MS / 2, "only %llu extensions",
		  (unsigned long long)ws.extended);
	TQ_EXPECT(ws.acked == 1 && ws.lost == 0, "acked %llu, lost %llu", (unsigned long long)ws.acked,
		  (unsigned long long)ws.lost);
	st = tq_stats(q);
	TQ_EXPECT(st.reclaimed_expired == 0 && st.redelivered == 0 && st.stale == 0,
		  "lease expired %llu times, redelivered %llu, stale operations %llu",
		  (unsigned long long)st.reclaimed_expired, (unsigned long long)st.redelivered,
		  (unsigned long long)st.stale);
	shmq_worker_close(w);
	shmq_close(q);
}

/* Many deliveries published and retired while the keeper walks them: the RCU records under load
 * (the point of the TSan run, where freeing a record without call_rcu is reported). A lease may
 * still be lost to a slow scheduler; then the verdict finds out and the message comes back, so
 * nothing is asserted about that. Leases are not shorter, though: a lease that expires while its
 * receiver still reads the message lets the next producer of that slot overwrite it, which TSan
 * reports (the API allows it: the data of a lost lease may change). */
#define BUSY_MSGS 400u
#define BUSY_LEASE_MS 60
#define CHURN_MSGS 20000u
/* A keeper pass every 10 ms. Under TSan a thread can be held up past such a lease between its
 * lease CAS and reading the message, which the API allows (the data of a lost lease may change),
 * but TSan then reports the producer that reuses the slot: there the lease is ten times longer. */
#if defined(__SANITIZE_THREAD__)
#define CHURN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHURN_TSAN 1
#endif
#endif
#ifdef CHURN_TSAN
#define CHURN_LEASE_MS 600
#else
#define CHURN_LEASE_MS 60
#endif

struct busy {
	_Atomic unsigned calls;
};

static int short_sleep(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct busy *b = arg;
	(void)w;
	atomic_fetch_add(&b->calls, 1);
	/* 0 to 45 ms: the longer ones pass the keeper's two-thirds mark and get extended */
	tq_sleep_ms((unsigned)(m->id % 4) * 15);
	return SHMQ_WORKER_ACK;
}

static int at_once(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct busy *b = arg;
	(void)w, (void)m;
	atomic_fetch_add(&b->calls, 1);
	return SHMQ_WORKER_ACK;
}

static void keeper_under_load(unsigned msgs, uint32_t lease_ms, shmq_worker_fn fn)
{
	struct shmq_config c = tq_config(1024);
	c.lease_ms = lease_ms;
	c.retry_base_ms = c.retry_max_ms = 0;
	c.max_deliveries = 255;
	shmq_t *q = tq_mkq(&c);
	struct busy b = {0};
	shmq_worker_t *w = start(q, 8, fn, &b, -1);
	for (uint32_t i = 0; i < msgs; i++) {
		int r = shmq_send(q, &i, sizeof(i), LIVE_MS);
		TQ_REQUIRE(r == 0, "send %u: %s", i, shmq_strerror(r));
	}
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == msgs);
	shmq_worker_stop(w);
	TQ_EXPECT(shmq_worker_join(w) == 0, "join returned an error");
	struct shmq_worker_stats ws = wstats(w);
	TQ_EXPECT(ws.acked == msgs && ws.acked + ws.lost == ws.received && ws.in_flight == 0,
		  "received %llu, acked %llu, lost %llu", (unsigned long long)ws.received,
		  (unsigned long long)ws.acked, (unsigned long long)ws.lost);
	TQ_EXPECT(fn == at_once || ws.extended > 0, "the keeper extended nothing");
	fprintf(stderr,
		"worker: %u messages on 8 threads, lease %u ms: %llu lease extensions, %llu leases lost\n",
		msgs, lease_ms, (unsigned long long)ws.extended, (unsigned long long)ws.lost);
	shmq_worker_close(w);
	shmq_close(q);
}

static void keeper_busy(void) { keeper_under_load(BUSY_MSGS, BUSY_LEASE_MS, short_sleep); }
static void keeper_churn(void) { keeper_under_load(CHURN_MSGS, CHURN_LEASE_MS, at_once); }

/* ---- shutdown -------------------------------------------------------------------------------- */

struct gate {
	_Atomic unsigned started;
	_Atomic int open;
	_Atomic int saw_abandoned;
};

/* Holds its message until the test opens the gate (or the worker abandons it). */
static int wait_gate(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct gate *g = arg;
	(void)m;
	atomic_fetch_add(&g->started, 1);
	double until = tq_now_ms() + LIVE_MS;
	while (!atomic_load(&g->open) && tq_now_ms() < until) {
		if (shmq_worker_state(w) == SHMQ_WORKER_ABANDONED) {
			atomic_store(&g->saw_abandoned, 1);
			break;
		}
		tq_sleep_ms(1);
	}
	return SHMQ_WORKER_ACK;
}

static void stop_finishes_in_flight(void)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	struct gate g = {0};
	send_str(q, "first");
	send_str(q, "second");
	/* three threads: two hold a message each, the third waits in shmq_recv */
	shmq_worker_t *w = start(q, 3, wait_gate, &g, -1);
	wait_count(&g.started, 2);
	TQ_EXPECT(shmq_worker_stop(w) == 0, "stop failed");
	TQ_EXPECT(shmq_worker_state(w) == SHMQ_WORKER_DRAINING, "state %d after stop, want draining",
		  shmq_worker_state(w));
	/* the idle thread's receive (10 ms) is over long before this: it must not take these */
	tq_sleep_ms(500);
	send_str(q, "third");
	send_str(q, "fourth");
	tq_sleep_ms(100);
	atomic_store(&g.open, 1);
	TQ_EXPECT(shmq_worker_join(w) == 0, "join returned an error");

	struct shmq_worker_stats ws = wstats(w);
	struct shmq_stats st = tq_stats(q);
	TQ_EXPECT(atomic_load(&g.started) == 2, "%u handler calls, want 2", atomic_load(&g.started));
	TQ_EXPECT(ws.received == 2 && ws.acked == 2 && ws.abandoned == 0,
		  "received %llu, acked %llu, abandoned %llu", (unsigned long long)ws.received,
		  (unsigned long long)ws.acked, (unsigned long long)ws.abandoned);
	TQ_EXPECT(st.acked == 2 && st.ready == 2 && st.inflight == 0,
		  "queue: acked %llu ready %llu in flight %llu, want 2 2 0", (unsigned long long)st.acked,
		  (unsigned long long)st.ready, (unsigned long long)st.inflight);
	shmq_worker_close(w);
	shmq_close(q);
}

/* A message still in flight when the grace ends (grace_ms) or at a second stop is nacked for
 * immediate redelivery, and another consumer gets it. */
static void abandon_case(int32_t grace_ms, int stops)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = 60000;
	shmq_t *q = tq_mkq(&c);
	struct gate g = {0};
	send_str(q, "stuck");
	shmq_worker_t *w = start(q, 1, wait_gate, &g, grace_ms);
	wait_count(&g.started, 1);
	for (int i = 0; i < stops; i++)
		shmq_worker_stop(w);
	TQ_EXPECT(shmq_worker_join(w) == 0, "join returned an error");
	struct shmq_worker_stats ws = wstats(w);
	TQ_EXPECT(atomic_load(&g.saw_abandoned), "the handler never saw SHMQ_WORKER_ABANDONED");
	TQ_EXPECT(ws.abandoned == 1 && ws.acked == 0, "abandoned %llu, acked %llu, want 1 and 0",
		  (unsigned long long)ws.abandoned, (unsigned long long)ws.acked);
	shmq_worker_close(w);

	struct shmq_msg m;
	int r = shmq_recv(q, &m, LIVE_MS);
	TQ_EXPECT(r == 0 && m.deliveries == 2, "the abandoned message was not redelivered (%s)",
		  shmq_strerror(r));
	if (r == 0)
		shmq_ack(q, &m);
	shmq_close(q);
}

static void grace_end_nacks(void) { abandon_case(50, 1); }
static void second_stop_nacks(void) { abandon_case(-1, 2); }

static int never_called(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	(void)w, (void)m, (void)arg;
	return SHMQ_WORKER_ACK;
}

static void bad_config(void)
{
	struct shmq_config qc = tq_config(16);
	shmq_t *q = tq_mkq(&qc);
	struct shmq_worker_config c;
	shmq_worker_t *w = NULL;
	shmq_worker_config_init(&c);
	TQ_EXPECT(c.threads == 1 && c.poll_ms == 100 && c.grace_ms == -1 && !c.handler, "defaults");
	TQ_EXPECT(shmq_worker_start(q, &c, &w) == -EINVAL, "no handler was accepted");
	c.handler = never_called;
	c.threads = 0;
	TQ_EXPECT(shmq_worker_start(q, &c, &w) == -EINVAL, "0 threads were accepted");
	c.threads = SHMQ_WORKER_THREADS_MAX + 1;
	TQ_EXPECT(shmq_worker_start(q, &c, &w) == -EINVAL, "too many threads were accepted");
	c.threads = 1;
	c.poll_ms = 0;
	TQ_EXPECT(shmq_worker_start(q, &c, &w) == -EINVAL, "poll_ms 0 was accepted");
	c.poll_ms = 10;
	c.grace_ms = -2;
	TQ_EXPECT(shmq_worker_start(q, &c, &w) == -EINVAL, "grace_ms -2 was accepted");
	c.grace_ms = -1;
	TQ_EXPECT(shmq_worker_start(NULL, &c, &w) == -EINVAL, "a NULL queue was accepted");
	TQ_EXPECT(!w, "a worker came out of a failed start");
	TQ_EXPECT(shmq_worker_stop(NULL) == -EINVAL && shmq_worker_join(NULL) == -EINVAL, "NULL worker");
	shmq_worker_close(NULL);
	shmq_close(q);
}

/* ---- duplicate suppression (config.dedup) ---------------------------------------------------- */

static shmq_worker_t *start_dedup(shmq_t *q, shmq_worker_fn fn, void *arg)
{
	struct shmq_worker_config c;
	shmq_worker_config_init(&c);
	c.handler = fn;
	c.arg = arg;
	c.poll_ms = 10;
	c.dedup = 1;
	shmq_worker_t *w = NULL;
	int r = shmq_worker_start(q, &c, &w);
	TQ_REQUIRE(r == 0, "shmq_worker_start with dedup: %s", shmq_strerror(r));
	return w;
}

static void send_keyed_str(shmq_t *q, const char *key, const char *s)
{
	int r = shmq_send_keyed(q, key, strlen(key), s, strlen(s), 0, NULL);
	TQ_REQUIRE(r == 0, "send %s with key %s: %s", s, key, shmq_strerror(r));
}

static const char *const dedup_payloads[] = {"done-before", "fresh", "plain"};

struct dedup_seen {
	_Atomic unsigned calls[3]; /* index as dedup_payloads */
	_Atomic unsigned bad;
	_Atomic uint64_t plain_id;
};

static int count_calls(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct dedup_seen *v = arg;
	(void)w;
	int i = payload_index(m, dedup_payloads, 3);
	if (i == 2)
		atomic_store(&v->plain_id, m->id); /* before the count a test waits for */
	if (i < 0)
		atomic_fetch_add(&v->bad, 1);
	else
		atomic_fetch_add(&v->calls[i], 1);
	return SHMQ_WORKER_ACK;
}

static void dedup_skips_done_work(void)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	struct dedup_seen *v = calloc(1, sizeof(*v));
	TQ_REQUIRE(v, "out of memory");
	/* a consumer did this message's work and recorded it done, then lost the delivery before
	 * its ack (as if it died): it comes back */
	send_keyed_str(q, "k-done", "done-before");
	struct shmq_msg m;
	TQ_REQUIRE(shmq_recv(q, &m, 0) == 0, "recv of the first message");
	TQ_REQUIRE(shmq_done_mark(q, m.key, m.key_len) == 0, "done mark");
	TQ_REQUIRE(shmq_nack(q, &m, 0) == 0, "nack");
	send_keyed_str(q, "k-fresh", "fresh");
	send_str(q, "plain"); /* no key: recorded done by its id */

	shmq_worker_t *w = start_dedup(q, count_calls, v);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 3);
	TQ_EXPECT(shmq_worker_stop(w) == 0, "stop failed");
	TQ_EXPECT(shmq_worker_join(w) == 0, "join returned an error");

	TQ_EXPECT(atomic_load(&v->bad) == 0, "the handler saw a payload nobody sent");
	TQ_EXPECT(atomic_load(&v->calls[0]) == 0, "work recorded done: %u handler calls, want 0",
		  atomic_load(&v->calls[0]));
	TQ_EXPECT(atomic_load(&v->calls[1]) == 1 && atomic_load(&v->calls[2]) == 1,
		  "new work: %u and %u handler calls, want 1 each", atomic_load(&v->calls[1]),
		  atomic_load(&v->calls[2]));
	TQ_EXPECT(shmq_done_check(q, "k-fresh", 7) == 1,
		  "a keyed message acked by the handler is not recorded done");
	struct shmq_msg by_id = {.id = atomic_load(&v->plain_id)};
	TQ_EXPECT(shmq_is_done(q, &by_id) == 1, "a message without a key is not recorded done by its id");
	struct shmq_worker_stats ws = wstats(w);
	TQ_EXPECT(ws.skipped_done == 1 && ws.received == 2 && ws.acked == 2 && ws.lost == 0 &&
			  ws.in_flight == 0,
		  "worker stats: skipped_done %llu received %llu acked %llu lost %llu in flight %u",
		  (unsigned long long)ws.skipped_done, (unsigned long long)ws.received,
		  (unsigned long long)ws.acked, (unsigned long long)ws.lost, ws.in_flight);
	st = tq_stats(q);
	TQ_EXPECT(st.ready + st.inflight + st.delayed == 0 && st.stale == 0, "queue not settled cleanly");
	shmq_worker_close(w);
	shmq_close(q);
	free(v);
}

static void dedup_needs_a_table(void)
{
	struct shmq_config qc = tq_config(16);
	qc.dedup_window_ms = 0;
	shmq_t *q = tq_mkq(&qc);
	struct shmq_worker_config c;
	shmq_worker_t *w = NULL;
	shmq_worker_config_init(&c);
	TQ_EXPECT(c.dedup == 0, "dedup is on by default");
	c.handler = never_called;
	c.dedup = 1;
	int r = shmq_worker_start(q, &c, &w);
	TQ_EXPECT(r == -ENOTSUP, "dedup on a queue without a dedup table: %s, want -ENOTSUP",
		  shmq_strerror(r));
	TQ_EXPECT(!w, "a worker came out of a failed start");
	c.dedup = 0;
	r = shmq_worker_start(q, &c, &w);
	TQ_EXPECT(r == 0, "the same queue without dedup: %s", shmq_strerror(r));
	shmq_worker_close(w);
	shmq_close(q);
}

#ifndef TQ_PLAIN
TestSuite(worker, .fini = tq_cleanup);

Test(worker, handler_verdicts_land_as_acked_redelivered_with_backoff_and_dead_lettered) { verdicts_land(); }

Test(worker, keeper_extends_a_long_handlers_lease_so_no_one_else_receives_the_message)
{
	keeper_keeps_lease();
}

Test(worker, keeper_extends_while_handlers_come_and_go_and_every_message_is_acked) { keeper_busy(); }

Test(worker, in_flight_records_retired_as_fast_as_the_keeper_reads_them_lose_nothing) { keeper_churn(); }

Test(worker, stop_lets_in_flight_handlers_finish_and_takes_no_new_messages) { stop_finishes_in_flight(); }

Test(worker, grace_period_end_nacks_what_is_in_flight_for_another_consumer) { grace_end_nacks(); }

Test(worker, second_stop_ends_the_grace_at_once) { second_stop_nacks(); }

Test(worker, start_refuses_a_bad_config_with_einval) { bad_config(); }

Test(worker, dedup_acks_work_recorded_done_without_the_handler_and_records_new_work_done)
{
	dedup_skips_done_work();
}

Test(worker, dedup_on_a_queue_without_a_dedup_table_fails_to_start_with_enotsup) { dedup_needs_a_table(); }

static int hold_forever(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	(void)w, (void)m, (void)arg;
	pause(); /* until the SIGKILL */
	return SHMQ_WORKER_ACK;
}

Test(worker, a_sigkilled_worker_process_gives_its_messages_back_through_reclaim)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = 600000; /* expiry is not what brings them back */
	c.retry_base_ms = c.retry_max_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	send_str(q, "one");
	send_str(q, "two");
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *cq;
		shmq_worker_t *w;
		if (shmq_open(name, &cq))
			_exit(1);
		struct shmq_worker_config wc;
		shmq_worker_config_init(&wc);
		wc.threads = 2;
		wc.handler = hold_forever;
		if (shmq_worker_start(cq, &wc, &w))
			_exit(1);
		for (;;)
			pause();
	}
	struct shmq_stats st;
	WAIT_FOR(q, st, st.inflight == 2);
	cr_assert(kill(pid, SIGKILL) == 0);
	int status;
	cr_assert(waitpid(pid, &status, 0) == pid);
	for (int i = 0; i < 2; i++) {
		struct shmq_msg m;
		int r = shmq_recv(q, &m, LIVE_MS); /* runs the reclaim pass that requeues them */
		cr_expect(r == 0 && m.deliveries == 2, "message %d did not come back (%s)", i,
			  shmq_strerror(r));
		if (r == 0)
			shmq_ack(q, &m);
	}
	st = tq_stats(q);
	cr_expect(st.reclaimed_dead_owner == 2 && st.reclaimed_expired == 0,
		  "reclaimed from a dead owner %llu, expired %llu",
		  (unsigned long long)st.reclaimed_dead_owner, (unsigned long long)st.reclaimed_expired);
	shmq_close(q);
}

/* Counts its calls in memory shared across fork; with die set, the process SIGKILLs itself in the
 * middle of the handler, after the work (the count). */
struct crash_count {
	_Atomic unsigned calls;
	int die;
};

static int count_then_maybe_die(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct crash_count *cc = arg;
	(void)w, (void)m;
	atomic_fetch_add(&cc->calls, 1);
	if (cc->die)
		raise(SIGKILL);
	return SHMQ_WORKER_ACK;
}

/* What a dead worker's one message leaves once it came back and was acked: one reclaim from a
 * dead owner, and nothing in the queue. */
static void expect_reclaimed_once_and_drained(shmq_t *q)
{
	struct shmq_stats st = tq_stats(q);
	cr_expect(st.reclaimed_dead_owner == 1 && st.ready + st.inflight + st.delayed == 0,
		  "reclaimed from a dead owner %llu, left in the queue %llu",
		  (unsigned long long)st.reclaimed_dead_owner,
		  (unsigned long long)(st.ready + st.inflight + st.delayed));
}

/* A dedup worker process dies at `point` (a fault point, or NULL: in its handler, after the
 * work); a dedup worker started afterwards gets the message back. Returns its handler calls. */
static unsigned dedup_after_a_crash(const char *point, struct shmq_worker_stats *ws)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = 600000; /* the dead owner, not expiry, brings the message back */
	c.retry_base_ms = c.retry_max_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	struct crash_count *cc =
		mmap(NULL, sizeof(*cc), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(cc != MAP_FAILED);
	cc->die = !point;
	send_keyed_str(q, "charge-7", "charge");
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *cq;
		shmq_worker_t *w;
		if (shmq_open(name, &cq))
			_exit(1);
		if (point)
			shmq_fault_arm(point, 1);
		struct shmq_worker_config wc;
		shmq_worker_config_init(&wc);
		wc.handler = count_then_maybe_die;
		wc.arg = cc;
		wc.dedup = 1;
		if (shmq_worker_start(cq, &wc, &w))
			_exit(1);
		for (;;)
			pause();
	}
	int status;
	cr_assert(waitpid(pid, &status, 0) == pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "the worker process was not killed (%#x)", status);
	cr_assert_eq(atomic_load(&cc->calls), 1, "the dead worker's handler ran %u times",
		     atomic_load(&cc->calls));

	cc->die = 0;
	shmq_worker_t *w = start_dedup(q, count_then_maybe_die, cc);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 1);
	shmq_worker_stop(w);
	cr_expect(shmq_worker_join(w) == 0, "join returned an error");
	*ws = wstats(w);
	unsigned calls = atomic_load(&cc->calls);
	expect_reclaimed_once_and_drained(q);
	cr_expect_eq(shmq_done_check(q, "charge-7", 8), 1, "the work is recorded done");
	shmq_worker_close(w);
	munmap(cc, sizeof(*cc));
	shmq_close(q);
	return calls;
}

Test(worker, dedup_worker_killed_between_recording_done_and_the_ack_is_not_handled_again)
{
	struct shmq_worker_stats ws;
	unsigned calls = dedup_after_a_crash("done-before-ack", &ws);
	cr_expect_eq(calls, 1, "the handler ran %u times in all, want 1 (before the crash)", calls);
	cr_expect(ws.skipped_done == 1 && ws.received == 0, "second worker: skipped_done %llu received %llu",
		  (unsigned long long)ws.skipped_done, (unsigned long long)ws.received);
}

/* the limit of what dedup promises: nothing is recorded before the handler returns */
Test(worker, dedup_worker_killed_while_its_handler_runs_records_nothing_and_the_work_runs_again)
{
	struct shmq_worker_stats ws;
	unsigned calls = dedup_after_a_crash(NULL, &ws);
	cr_expect_eq(calls, 2, "the handler ran %u times in all, want 2 (at least once)", calls);
	cr_expect(ws.skipped_done == 0 && ws.received == 1 && ws.acked == 1,
		  "second worker: skipped_done %llu received %llu acked %llu",
		  (unsigned long long)ws.skipped_done, (unsigned long long)ws.received,
		  (unsigned long long)ws.acked);
}

/* ---- shmq work ------------------------------------------------------------------------------- */

static const char *tool;
static char scratch[64]; /* a directory for CMD's files and the tool's output */
static pid_t spawned;	 /* the last `shmq` started, killed by the .fini if a test failed early */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(path);
}

static void work_init(void)
{
	tool = tq_tool();
	snprintf(scratch, sizeof(scratch), "/tmp/shmq-test-work-XXXXXX");
	cr_assert(mkdtemp(scratch), "mkdtemp: %s", strerror(errno));
}

static void work_fini(void)
{
	tq_cleanup();
	if (spawned > 0 && waitpid(spawned, NULL, WNOHANG) == 0) {
		kill(spawned, SIGKILL);
		waitpid(spawned, NULL, 0);
	}
	if (scratch[0])
		nftw(scratch, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(work, .init = work_init, .fini = work_fini);

/* scratch/<name> */
static const char *file_in(const char *name)
{
	static char path[4][128];
	static int next;
	char *p = path[next++ % 4];
	snprintf(p, sizeof(path[0]), "%s/%s", scratch, name);
	return p;
}

/* Starts `shmq ARGS...`, stdin from /dev/null, stdout and stderr into scratch/out. */
#define SPAWN(...) spawn((const char *const[]){__VA_ARGS__, NULL})
static pid_t spawn(const char *const args[])
{
	const char *argv[32] = {tool};
	for (int i = 0; args[i]; i++) {
		cr_assert(i < 30, "too many arguments");
		argv[i + 1] = args[i];
	}
	int out = open(file_in("out"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert(out >= 0 && in >= 0, "open: %s", strerror(errno));
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
			_exit(126);
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	close(out);
	close(in);
	return spawned = pid;
}

/* Waits for pid (SIGKILLed and failed past LIVE_MS); returns its wait status. */
static int reap(pid_t pid)
{
	int st;
	double until = tq_now_ms() + LIVE_MS;
	while (waitpid(pid, &st, WNOHANG) != pid) {
		if (tq_now_ms() > until) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_assert_fail("shmq still running after %d ms: killed", LIVE_MS);
		}
		tq_sleep_ms(5);
	}
	return st;
}

/* The whole of a file (empty when missing), NUL-terminated; free() it. */
static char *slurp(const char *path, size_t *len)
{
	char *buf = NULL;
	size_t cap = 0, n = 0;
	FILE *f = fopen(path, "rb");
	for (size_t got = 1; f && got > 0; n += got) {
		if (n + 4096 + 1 > cap)
			cr_assert((buf = realloc(buf, cap = 2 * cap + 4096 + 1)));
		got = fread(buf + n, 1, 4096, f);
	}
	if (f)
		fclose(f);
	if (!buf)
		cr_assert((buf = calloc(1, 1)));
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

/* SIGTERMs `shmq work`, which must stop gracefully: exit 0 and say so. */
static void term_ok(pid_t pid)
{
	cr_assert(kill(pid, SIGTERM) == 0);
	int st = reap(pid);
	char *out = slurp(file_in("out"), NULL);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "shmq work exited with status %#x on SIGTERM: %s",
		  st, out);
	cr_expect(strstr(out, "shmq: work: stopped by SIGTERM"), "no summary line: %s", out);
	free(out);
}

/* The dispatch script: its first line of stdin says how to end. */
#define DISPATCH                                                                                             \
	"read how; case $how in ok) exit 0;; temp) exit 75;; data) exit 65;; other) exit 3;; "               \
	"sig) kill -KILL $$;; slow) exec sleep 30;; stubborn) trap '' TERM; sleep 30;; esac"

Test(work, cmd_exit_status_maps_to_ack_retry_reject_or_a_failed_delivery)
{
	struct shmq_config c = tq_config(16);
	c.dlq_max = 16;
	c.max_deliveries = 2;
	c.retry_base_ms = 10;
	c.retry_max_ms = 20;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	static const struct {
		const char *how;
		uint32_t reason, deliveries; /* 0: acked, not dead-lettered */
	} cases[] = {
		{"ok", 0, 0},
		{"temp", SHMQ_DEAD_MAX_DELIVERIES, 2},	   /* exit 75: retried until max_deliveries */
		{"data", SHMQ_DEAD_REJECTED, 1},	   /* exit 65: rejected at once */
		{"other", SHMQ_DEAD_MAX_DELIVERIES, 2},	   /* exit 3: a failed delivery */
		{"sig", SHMQ_DEAD_MAX_DELIVERIES, 2},	   /* killed by a signal: the same */
		{"slow", SHMQ_DEAD_MAX_DELIVERIES, 2},	   /* past --timeout-ms: SIGTERM, the same */
		{"stubborn", SHMQ_DEAD_MAX_DELIVERIES, 2}, /* ignores SIGTERM: SIGKILL a second later */
	};
	int n = (int)(sizeof(cases) / sizeof(cases[0]));
	for (int i = 0; i < n; i++)
		send_str(q, cases[i].how);
	pid_t pid =
		SPAWN("work", name, "--threads", "4", "--timeout-ms", "300", "--", "/bin/sh", "-c", DISPATCH);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 1 && st.dead == (uint64_t)n - 1);
	term_ok(pid);

	struct shmq_dead_letter dl[16];
	int nd = shmq_dlq_list(q, dl, 16);
	for (int i = 1; i < n; i++) {
		const struct shmq_dead_letter *d = find_letter(dl, nd, cases[i].how);
		cr_expect(d && d->reason == cases[i].reason && d->deliveries == cases[i].deliveries,
			  "%s: dead letter reason %u after %u deliveries, want %u after %u", cases[i].how,
			  d ? d->reason : 0, d ? d->deliveries : 0, cases[i].reason, cases[i].deliveries);
	}
	cr_expect(!find_letter(dl, nd, "ok"), "exit 0 was dead-lettered");
	st = tq_stats(q);
	/* each failed delivery was a nack with backoff (temp, other, sig, slow, stubborn: 2 each) */
	cr_expect(st.nacked == 10 && st.rejected == 1 && st.acked == 1,
		  "nacked %llu rejected %llu acked %llu", (unsigned long long)st.nacked,
		  (unsigned long long)st.rejected, (unsigned long long)st.acked);
	char *out = slurp(file_in("out"), NULL);
	cr_expect(strstr(out, "exit 75 (temporary failure)") && strstr(out, "exit 65 (data error)") &&
			  strstr(out, "exit 3") && strstr(out, "killed by signal 9") &&
			  strstr(out, "still running after 300 ms"),
		  "failures not reported on stderr: %s", out);
	free(out);
	shmq_close(q);
}

Test(work, payload_reaches_cmd_stdin_and_id_deliveries_and_queue_its_environment)
{
	struct shmq_config c = tq_config(4);
	c.slot_size = 128 * 1024 + 64; /* a payload larger than a pipe's buffer */
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	size_t big_len = 100000;
	char *big = malloc(big_len);
	cr_assert(big);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)('a' + i % 26);
	send_str(q, "hello, world");
	cr_assert(shmq_send(q, big, big_len, 0) == 0);
	setenv("SHMQ_MSG_ID", "stale", 1); /* ours must replace what the tool inherits */
	pid_t pid = SPAWN("work", name, "--", "/bin/sh", "-c",
			  "cat >\"$0/$SHMQ_MSG_ID.in\" && env >\"$0/$SHMQ_MSG_ID.env\"", scratch);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 2);
	term_ok(pid);

	size_t len;
	char *in0 = slurp(file_in("0.in"), &len);
	cr_expect(len == 12 && !memcmp(in0, "hello, world", 12), "message 0's stdin: '%s'", in0);
	char *in1 = slurp(file_in("1.in"), &len);
	cr_expect(len == big_len && !memcmp(in1, big, big_len), "message 1's stdin: %zu bytes, want %zu", len,
		  big_len);
	char *env = slurp(file_in("0.env"), NULL), want[TQ_NAME_LEN + 32];
	snprintf(want, sizeof(want), "\nSHMQ_QUEUE=%s\n", name);
	cr_expect(strstr(env, "SHMQ_MSG_ID=0\n") && strstr(env, "SHMQ_DELIVERIES=1\n") && strstr(env, want),
		  "CMD's environment lacks SHMQ_MSG_ID=0, SHMQ_DELIVERIES=1 or SHMQ_QUEUE=%s:\n%s", name,
		  env);
	cr_expect(!strstr(env, "SHMQ_MSG_ID=stale"), "the inherited SHMQ_MSG_ID was passed on");
	free(in0), free(in1), free(env), free(big);
	shmq_close(q);
}

Test(work, sigterm_lets_the_running_cmd_finish_acks_it_and_takes_nothing_more)
{
	struct shmq_config c = tq_config(16);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	send_str(q, "first");
	send_str(q, "second");
	pid_t pid = SPAWN("work", name, "--", "/bin/sh", "-c", "touch \"$0/started\"; sleep 1", scratch);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.inflight == 1 && access(file_in("started"), F_OK) == 0);
	term_ok(pid);
	st = tq_stats(q);
	cr_expect(st.acked == 1 && st.ready == 1 && st.inflight == 0 && st.nacked == 0,
		  "acked %llu ready %llu in flight %llu nacked %llu, want 1 1 0 0",
		  (unsigned long long)st.acked, (unsigned long long)st.ready, (unsigned long long)st.inflight,
		  (unsigned long long)st.nacked);
	shmq_close(q);
}

Test(work, threads_n_runs_n_cmds_at_once_and_a_stop_waits_for_all_of_them)
{
	struct shmq_config c = tq_config(16);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	for (int i = 0; i < 3; i++)
		send_str(q, "nap");
	pid_t pid = SPAWN("work", name, "--threads", "3", "--", "/bin/sh", "-c", "sleep 1");
	struct shmq_stats st;
	WAIT_FOR(q, st, st.inflight == 3);
	term_ok(pid);
	st = tq_stats(q);
	cr_expect(st.acked == 3 && st.inflight == 0, "acked %llu, in flight %llu, want 3 and 0",
		  (unsigned long long)st.acked, (unsigned long long)st.inflight);
	shmq_close(q);
}

/* pid's state letter, parent and process group, from /proc; 0, or -1 when pid is gone. */
static int proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp)
{
	char path[64], stat[512] = "";
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(stat, 1, sizeof(stat) - 1, f);
	fclose(f);
	stat[n] = '\0';
	const char *p = strrchr(stat, ')'); /* the name before it may hold anything */
	int pp, pg;
	if (!p || sscanf(p + 1, " %c %d %d", state, &pp, &pg) != 3)
		return -1;
	*ppid = (pid_t)pp;
	*pgrp = (pid_t)pg;
	return 0;
}

/* A process that is gone or a zombie nobody reaped. */
static int gone(pid_t pid)
{
	char state;
	pid_t ppid, pgrp;
	return proc_stat(pid, &state, &ppid, &pgrp) || state == 'Z';
}

Test(work, sigkill_of_shmq_work_kills_its_cmds_and_reclaim_gives_the_messages_back)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = 600000; /* expiry is not what brings it back */
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	send_str(q, "held");
	pid_t pid = SPAWN("work", name, "--", "/bin/sh", "-c",
			  "echo $$ >\"$0/pid.tmp\"; mv \"$0/pid.tmp\" \"$0/pid\"; exec sleep 60", scratch);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.inflight == 1 && access(file_in("pid"), F_OK) == 0);
	char *cmd_pid = slurp(file_in("pid"), NULL);
	pid_t child = (pid_t)atoi(cmd_pid);
	free(cmd_pid);
	cr_assert(child > 0);
	cr_assert(kill(pid, SIGKILL) == 0);
	reap(pid);

	struct shmq_msg m;
	int r = shmq_recv(q, &m, LIVE_MS); /* its reclaim pass finds the owner gone */
	cr_expect(r == 0 && m.deliveries == 2, "the message did not come back (%s)", shmq_strerror(r));
	st = tq_stats(q);
	cr_expect(st.reclaimed_dead_owner == 1, "reclaimed from a dead owner: %llu",
		  (unsigned long long)st.reclaimed_dead_owner);
	double until = tq_now_ms() + LIVE_MS;
	while (!gone(child) && tq_now_ms() < until)
		tq_sleep_ms(5);
	cr_expect(gone(child), "CMD (pid %d) outlived the SIGKILLed shmq work", (int)child);
	shmq_close(q);
}

/* pid's process group (0 if pid is gone). */
static pid_t pgid_of(pid_t pid)
{
	char state;
	pid_t ppid, pgrp;
	return proc_stat(pid, &state, &ppid, &pgrp) ? 0 : pgrp;
}

/* pid's parent (0 if pid is gone). */
static pid_t ppid_of(pid_t pid)
{
	char state;
	pid_t ppid, pgrp;
	return proc_stat(pid, &state, &ppid, &pgrp) ? 0 : ppid;
}

/* How many processes of group pgid are alive (zombies, which an init that does not reap leaves,
 * do not count). */
static int group_alive(pid_t pgid)
{
	DIR *d = opendir("/proc");
	cr_assert(d, "opendir /proc: %s", strerror(errno));
	int n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		pid_t pid = (pid_t)atoi(e->d_name);
		char state;
		pid_t ppid, pgrp;
		if (pid > 0 && !proc_stat(pid, &state, &ppid, &pgrp) && pgrp == pgid && state != 'Z')
			n++;
	}
	closedir(d);
	return n;
}

/* Creates a queue with one message (leases of 10 min: only a nack or a dead owner brings it back,
 * at once), and starts `shmq work NAME [OPT VALUE] -- sh -c SCRIPT` on it, where SCRIPT runs
 * `first` (or nothing), starts a grandchild that runs `gc_first` (or nothing) and writes
 * scratch/late after 1 s, writes CMD's pid to scratch/pid and waits. Returns the pid of shmq work
 * once CMD runs, the queue in *q, CMD's pid in *cmd. */
static pid_t start_grandparent(shmq_t **q, const char *opt, const char *val, const char *first,
			       const char *gc_first, pid_t *cmd)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = 600000;
	c.retry_base_ms = c.retry_max_ms = 0;
	const char *name = tq_name(NULL);
	*q = tq_create(name, &c);
	send_str(*q, "job");
	static char script[512];
	snprintf(script, sizeof(script),
		 "%s(%ssleep 1; touch \"$0/late\") & echo $$ >\"$0/pid.tmp\"; mv \"$0/pid.tmp\" \"$0/pid\"; "
		 "wait",
		 first ? first : "", gc_first ? gc_first : "");
	pid_t pid = opt ? SPAWN("work", name, opt, val, "--", "/bin/sh", "-c", script, scratch)
			: SPAWN("work", name, "--", "/bin/sh", "-c", script, scratch);
	struct shmq_stats st;
	WAIT_FOR(*q, st, st.inflight == 1 && access(file_in("pid"), F_OK) == 0);
	char *cmd_pid = slurp(file_in("pid"), NULL);
	*cmd = (pid_t)atoi(cmd_pid);
	free(cmd_pid);
	cr_assert(*cmd > 0 && pgid_of(*cmd) > 0, "CMD %d is not running", (int)*cmd);
	return pid;
}

/* The message CMD ran for is back for its second delivery; closes q. */
static void expect_redelivered_and_close(shmq_t *q)
{
	struct shmq_msg m;
	int r = shmq_recv(q, &m, LIVE_MS);
	cr_expect(r == 0 && m.deliveries == 2, "the message did not come back (%s)", shmq_strerror(r));
	shmq_close(q);
}

/* Waits until no process of group is alive, then for as long as start_grandparent's grandchild
 * takes to write scratch/late: it must not have. */
static void expect_group_dead_and_no_late_file(pid_t group, const char *after)
{
	double until = tq_now_ms() + LIVE_MS;
	while (group_alive(group) && tq_now_ms() < until)
		tq_sleep_ms(5);
	cr_expect(!group_alive(group), "%d processes of CMD's group outlived %s", group_alive(group), after);
	tq_sleep_ms(1500); /* when the grandchild would have written, had it lived */
	cr_expect(access(file_in("late"), F_OK) != 0, "the grandchild wrote its file after %s", after);
	cr_expect(!group_alive(group), "a process of CMD's group is still alive after %s", after);
}

/* CMD's grandchild would write a file 1 s on: SIGKILLing `shmq work` must kill the whole group
 * (CMD, the grandchild, its sleep) first. */
Test(work, sigkill_of_shmq_work_kills_its_cmds_whole_process_group_grandchildren_included)
{
	shmq_t *q;
	pid_t cmd, pid = start_grandparent(&q, NULL, NULL, NULL, NULL, &cmd), group = pgid_of(cmd);
	cr_assert(group_alive(group) >= 3,
		  "CMD's group has %d processes, want CMD, the grandchild, its sleep", group_alive(group));
	cr_assert(kill(pid, SIGKILL) == 0);
	reap(pid);
	expect_group_dead_and_no_late_file(group, "the SIGKILLed shmq work");
	expect_redelivered_and_close(q);
}

/* The end of the grace kills CMD's whole group, a grandchild that ignores SIGTERM included. */
Test(work, past_grace_ms_a_stop_kills_the_cmds_whole_group_and_gives_its_message_back)
{
	shmq_t *q;
	pid_t cmd, pid = start_grandparent(&q, "--grace-ms", "100", NULL, "trap '' TERM; ", &cmd);
	pid_t group = pgid_of(cmd);
	term_ok(pid);
	char *out = slurp(file_in("out"), NULL);
	cr_expect(strstr(out, "1 given back at shutdown"), "summary: %s", out);
	free(out);
	expect_group_dead_and_no_late_file(group, "the grace");
	expect_redelivered_and_close(q);
}

/* The reaper between `shmq work` and CMD killed alone: CMD dies with it (its death signal), and
 * `shmq work` kills what CMD started, counts a failed delivery and goes on. */
Test(work, a_cmds_reaper_killed_alone_takes_the_cmds_group_with_it_and_the_worker_goes_on)
{
	shmq_t *q;
	/* the second run (the retry) exits 0 at once */
	pid_t cmd, pid = start_grandparent(&q, NULL, NULL, "[ -e \"$0/pid\" ] && exit 0; ", NULL, &cmd);
	pid_t group = pgid_of(cmd), reaper = ppid_of(cmd);
	cr_assert(reaper > 0 && reaper != pid, "CMD %d's parent is %d, shmq work is %d", (int)cmd,
		  (int)reaper, (int)pid);
	cr_assert(kill(reaper, SIGKILL) == 0);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 1);
	expect_group_dead_and_no_late_file(group, "CMD's reaper");
	cr_expect(st.nacked == 1, "nacked %llu, want 1 failed delivery", (unsigned long long)st.nacked);
	term_ok(pid);
	shmq_close(q);
}

/* Runs `shmq ARGS...`, which must fail with `code` and one line "shmq: work: ...needle...". */
#define EXPECT_FAILS(code, needle, ...) expect_fails(code, needle, (const char *const[]){__VA_ARGS__, NULL})
static void expect_fails(int code, const char *needle, const char *const args[])
{
	int st = reap(spawn(args));
	char *out = slurp(file_in("out"), NULL);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == code, "`shmq %s %s ...` exited %#x, want %d: %s",
		  args[0], args[1], st, code, out);
	cr_expect(!strncmp(out, "shmq: work: ", 12) && strstr(out, needle) && strchr(out, '\n') &&
			  (!strchr(out, '\n')[1] ||
			   (code == 2 && !strcmp(strchr(out, '\n') + 1, "try 'shmq help'\n"))),
		  "want one line 'shmq: work: ...%s...', got: %s", needle, out);
	free(out);
}

Test(work, bad_command_lines_fail_with_one_line_naming_the_problem)
{
	struct shmq_config c = tq_config(16);
	const char *name = tq_name(NULL), *missing = tq_name("missing");
	shmq_t *q = tq_create(name, &c);
	EXPECT_FAILS(2, "missing CMD", "work", name);
	EXPECT_FAILS(2, "missing CMD", "work", name, "--threads", "2", "--");
	EXPECT_FAILS(2, "--threads", "work", name, "--threads", "0", "--", "true");
	EXPECT_FAILS(2, "--threads", "work", name, "--threads", "1025", "--", "true");
	EXPECT_FAILS(2, "--timeout-ms", "work", name, "--timeout-ms", "0", "--", "true");
	EXPECT_FAILS(2, "--grace-ms", "work", name, "--grace-ms", "soon", "--", "true");
	EXPECT_FAILS(1, "shmq-no-such-command", "work", name, "--", "shmq-no-such-command");
	EXPECT_FAILS(1, "/nonexistent/cmd", "work", name, "--", "/nonexistent/cmd");
	EXPECT_FAILS(1, missing, "work", missing, "--", "true");
	struct shmq_stats st = tq_stats(q);
	cr_expect(st.received == 0, "a failed start received messages");
	shmq_close(q);
}
/* ---- shmq work --dedup ----------------------------------------------------------------------- */

/* Runs `shmq ARGS...` to completion: it must exit 0. */
#define RUN_OK(...) run_ok((const char *const[]){__VA_ARGS__, NULL})
static void run_ok(const char *const args[])
{
	int st = reap(spawn(args));
	char *out = slurp(file_in("out"), NULL);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "`shmq %s %s ...` exited %#x: %s", args[0], args[1],
		  st, out);
	free(out);
}

/* CMD for the --dedup tests: appends its payload and a newline to scratch/ran */
#define APPEND_RAN "cat >>\"$0/ran\" && echo >>\"$0/ran\""

Test(work, dedup_acks_a_message_recorded_done_without_running_cmd_and_records_what_cmd_did)
{
	struct shmq_config c = tq_config(16);
	c.retry_base_ms = c.retry_max_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	RUN_OK("send", name, "--key", "order-1", "pay");
	/* a consumer did order-1's work and recorded it done, but its delivery came back unacked,
	 * as when it dies between the record and the ack */
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(shmq_done_mark(q, m.key, m.key_len), 0);
	cr_assert_eq(shmq_nack(q, &m, 0), 0);
	RUN_OK("send", name, "--key", "order-2", "ship");
	RUN_OK("send", name, "note"); /* no key: recorded done by its id */

	pid_t pid = SPAWN("work", name, "--dedup", "--", "/bin/sh", "-c", APPEND_RAN, scratch);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 3);
	term_ok(pid);
	char *ran = slurp(file_in("ran"), NULL);
	cr_expect(!strstr(ran, "pay"), "CMD ran for work recorded done: %s", ran);
	cr_expect_str_eq(ran, "ship\nnote\n", "CMD did not run once for each new message");
	char *out = slurp(file_in("out"), NULL);
	cr_expect(strstr(out, "2 messages: 2 acked") &&
			  strstr(out, "; 1 already done, acked without running CMD\n"),
		  "summary: %s", out);
	cr_expect_eq(shmq_done_check(q, "order-2", 7), 1, "CMD's exit 0 did not record order-2 done");
	st = tq_stats(q);
	cr_expect(st.ready + st.inflight + st.delayed == 0, "messages left in the queue");
	free(ran), free(out);
	shmq_close(q);
}

/* What --dedup does not cover, as documented: a worker that dies before CMD exits has recorded
 * nothing, so CMD runs again for that message (at least once). Here CMD does its side effect
 * and then SIGKILLs its `shmq work`, the first time only. */
Test(work, dedup_worker_killed_before_cmd_exits_records_nothing_and_the_next_worker_runs_cmd_again)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = 600000; /* the dead owner, not expiry, brings the message back */
	c.retry_base_ms = c.retry_max_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	RUN_OK("send", name, "--key", "charge-9", "charge");
	/* `shmq work` is CMD's ancestor (its parent is CMD's reaper) whose parent is this test */
	char test_pid[16];
	snprintf(test_pid, sizeof(test_pid), "%d", (int)getpid());
	setenv("TEST_PID", test_pid, 1);
	const char *cmd =
		APPEND_RAN "; [ -e \"$0/killed\" ] && exit 0; touch \"$0/killed\"; p=$PPID; "
			   "while [ $p -gt 1 ] && [ $(cut -d' ' -f4 /proc/$p/stat) != $TEST_PID ]; do "
			   "p=$(cut -d' ' -f4 /proc/$p/stat); done; kill -KILL $p; exec sleep 30";
	pid_t pid = SPAWN("work", name, "--dedup", "--", "/bin/sh", "-c", cmd, scratch);
	int ws = reap(pid);
	cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "shmq work was not killed by its CMD (%#x)",
		  ws);
	cr_expect_eq(shmq_done_check(q, "charge-9", 8), 0, "done recorded although CMD never exited");

	pid = SPAWN("work", name, "--dedup", "--", "/bin/sh", "-c", cmd, scratch);
	struct shmq_stats st;
	WAIT_FOR(q, st, st.acked == 1);
	term_ok(pid);
	char *ran = slurp(file_in("ran"), NULL);
	cr_expect_str_eq(ran, "charge\ncharge\n", "CMD did not run again after its worker died");
	cr_expect_eq(shmq_done_check(q, "charge-9", 8), 1, "the second CMD's exit 0 did not record done");
	expect_reclaimed_once_and_drained(q);
	free(ran);
	shmq_close(q);
}

Test(work, dedup_on_a_queue_without_a_dedup_table_fails_with_one_line_and_takes_nothing)
{
	struct shmq_config c = tq_config(16);
	c.dedup_window_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	send_str(q, "untouched");
	EXPECT_FAILS(1, "--dedup: queue", "work", name, "--dedup", "--", "true");
	char *out = slurp(file_in("out"), NULL);
	cr_expect(strstr(out, "has no dedup table (created with --dedup-window-ms 0)"), "%s", out);
	free(out);
	struct shmq_stats st = tq_stats(q);
	cr_expect(st.received == 0 && st.ready == 1, "a failed start received messages");
	shmq_close(q);
}
#else
int main(void)
{
	static const struct tq_plain_test t[] = {
		{"handler_verdicts_land_as_acked_redelivered_with_backoff_and_dead_lettered", verdicts_land},
		{"keeper_extends_a_long_handlers_lease_so_no_one_else_receives_the_message",
		 keeper_keeps_lease},
		{"keeper_extends_while_handlers_come_and_go_and_every_message_is_acked", keeper_busy},
		{"in_flight_records_retired_as_fast_as_the_keeper_reads_them_lose_nothing", keeper_churn},
		{"stop_lets_in_flight_handlers_finish_and_takes_no_new_messages", stop_finishes_in_flight},
		{"grace_period_end_nacks_what_is_in_flight_for_another_consumer", grace_end_nacks},
		{"second_stop_ends_the_grace_at_once", second_stop_nacks},
		{"start_refuses_a_bad_config_with_einval", bad_config},
		{"dedup_acks_work_recorded_done_without_the_handler_and_records_new_work_done",
		 dedup_skips_done_work},
		{"dedup_on_a_queue_without_a_dedup_table_fails_to_start_with_enotsup", dedup_needs_a_table},
	};
	return tq_plain_main("worker", t, sizeof(t) / sizeof(t[0]));
}
#endif

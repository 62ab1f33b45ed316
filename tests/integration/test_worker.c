/* SPDX-License-Identifier: MIT */
/*
 * The worker runtime (include/shmq_worker.h) and `shmq work`. The API tests run the worker's
 * threads in this process on one handle; `make tsan` builds this file with TQ_PLAIN into a program
 * of its own that runs them under ThreadSanitizer (its main is at the bottom). The `shmq work`
 * tests run the built tool ($SHMQ_TOOL) as a user would; they and the SIGKILL test need Criterion.
 *
 * Time is asserted only as generous bounds for liveness (LIVE_MS), and as the lower bound of a
 * backoff, which the queue enforces.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../common.h"
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

/* Returns the verdict the payload names. */
static int by_payload(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct verdicts *v = arg;
	(void)w;
	for (int i = 0; i < 3; i++)
		if (m->len == strlen(verdict_names[i]) && !memcmp(m->data, verdict_names[i], m->len)) {
			atomic_fetch_add(&v->calls[i], 1);
			if (m->deliveries >= 1 && m->deliveries <= MAX_DELIV)
				atomic_store(&v->at_us[i][m->deliveries - 1], (uint64_t)(tq_now_ms() * 1000));
			return i;
		}
	atomic_fetch_add(&v->bad, 1);
	return SHMQ_WORKER_ACK;
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

/* Many deliveries published and retired while the keeper walks them with a short lease: the RCU
 * records under load (the point of the TSan run). A lease may still be lost to a slow scheduler;
 * then the verdict finds out and the message comes back, so nothing is asserted about that. */
#define BUSY_MSGS 400u
#define BUSY_LEASE_MS 40
#define CHURN_MSGS 20000u
#define CHURN_LEASE_MS 6 /* a keeper pass every millisecond */

struct busy {
	_Atomic unsigned calls;
};

static int short_sleep(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	struct busy *b = arg;
	(void)w;
	atomic_fetch_add(&b->calls, 1);
	/* 0 to 30 ms: the longer ones pass the keeper's two-thirds mark and get extended */
	tq_sleep_ms((unsigned)(m->id % 4) * 10);
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
	tq_sleep_ms(200);
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
	};
	return tq_plain_main("worker", t, sizeof(t) / sizeof(t[0]));
}
#endif

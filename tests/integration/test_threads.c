/* SPDX-License-Identifier: MIT */
/*
 * Producers and consumers as threads of one process. Part of the integration suite (Criterion,
 * `make test`, `make asan`); `make tsan` builds this same file with TQ_PLAIN into a program of its
 * own under ThreadSanitizer (its main is at the bottom), because Criterion cannot start there.
 *
 * Each participant normally has its own handle, hence its own mapping of the segment; TSan tracks
 * memory by virtual address, so it cannot relate accesses made through two different mappings of
 * one page. The first test is the realistic one (a handle per thread, every id accounted for);
 * the others share one handle among all threads, so every access to the slots goes through one
 * mapping and TSan checks the ring's orderings themselves, nack, extend and reclaim included.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "shmq.h"

#ifndef TQ_PLAIN
TestSuite(threads, .fini = tq_cleanup);
#endif

#define N_PROD 4
#define N_CONS 4
#define TOTAL 200000u
#define PER_PROD (TOTAL / N_PROD)
#define PILL 0xffffffffu
/* An early pill goes back this long; it may come back up to PILL_DELIVERIES times (the queue's
 * max_deliveries): under ASan on a loaded machine the last acks took longer than the default 16
 * returns of 1 ms each, and pills were dead-lettered before anyone could take them. */
#define PILL_BACK_MS 5
#define PILL_DELIVERIES 255
#define IO_TIMEOUT_MS 10000
#define BATCH_MAX 37 /* largest batch the batch runs send or receive */
#define CAPACITY 1024

struct payload {
	uint32_t prod;
	uint32_t seq;
	uint64_t check;
};

static uint64_t check_of(uint32_t prod, uint32_t seq)
{
	uint64_t x = ((uint64_t)prod << 32 | seq) * 0x9e3779b97f4a7c15ULL;
	return x ^ (x >> 29) ^ 0x5bd1e995u;
}

struct run {
	const char *name;
	shmq_t *shared;	     /* NULL: every thread opens its own handle */
	unsigned nack_every; /* 0: never; else nack the first delivery of every n-th message */
	int batch;	     /* send_batch, recv_batch and ack_batch instead of one message per call */
	uint32_t lanes;	     /* order holds per lane: a producer's messages are checked per lane */
	_Atomic uint32_t errors, torn, out_of_order, unexpected_redelivery;
	_Atomic uint32_t err_nack, err_extend, err_ack, err_reclaim;
	_Atomic int last_err;
	_Atomic uint64_t acked, nacks;
	_Atomic int stop_reclaim;
	_Atomic uint8_t count[N_PROD][PER_PROD];
};

struct worker {
	struct run *run;
	uint32_t id;
};

static shmq_t *handle(struct run *r)
{
	shmq_t *q = r->shared;
	if (!q && shmq_open(r->name, &q))
		return NULL;
	return q;
}

static void release(struct run *r, shmq_t *q)
{
	if (q != r->shared)
		shmq_close(q);
}

static void *producer(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	shmq_t *q = handle(r);
	if (!q) {
		atomic_fetch_add(&r->errors, 1);
		return NULL;
	}
	for (uint32_t seq = 0; seq < PER_PROD;) {
		/* batches of 1..BATCH_MAX messages, sizes varying so runs start anywhere in the ring */
		struct payload p[BATCH_MAX];
		struct shmq_iov iov[BATCH_MAX];
		unsigned n = r->batch ? 1 + (seq * 7 + w->id) % BATCH_MAX : 1;
		if (n > PER_PROD - seq)
			n = PER_PROD - seq;
		for (unsigned k = 0; k < n; k++) {
			p[k] = (struct payload){w->id, seq + k, check_of(w->id, seq + k)};
			iov[k] = (struct shmq_iov){&p[k], sizeof(p[k])};
		}
		int sent = r->batch ? shmq_send_batch(q, iov, n, IO_TIMEOUT_MS)
				    : (shmq_send(q, &p[0], sizeof(p[0]), IO_TIMEOUT_MS) == 0 ? 1 : -1);
		if (sent <= 0 || (unsigned)sent > n) {
			atomic_fetch_add(&r->errors, 1);
			break;
		}
		seq += (uint32_t)sent;
	}
	release(r, q);
	return NULL;
}

/* Checks one delivery; returns 1 for a pill, -1 if it was nacked (not to be acked), else 0. */
static int check_msg(struct run *r, shmq_t *q, struct shmq_msg *m, int64_t (*lastl)[N_PROD])
{
	struct payload p;
	if (m->len != sizeof(p)) {
		atomic_fetch_add(&r->torn, 1);
		return 0;
	}
	memcpy(&p, m->data, sizeof(p));
	if (p.prod == PILL)
		return 1;
	if (p.prod >= N_PROD || p.seq >= PER_PROD || p.check != check_of(p.prod, p.seq)) {
		atomic_fetch_add(&r->torn, 1);
		return 0;
	}
	int64_t *last = lastl[m->slot / (CAPACITY / r->lanes)];
	if (m->deliveries == 1) {
		if ((int64_t)p.seq <= last[p.prod])
			atomic_fetch_add(&r->out_of_order, 1);
		last[p.prod] = p.seq;
		if (r->nack_every && p.seq % r->nack_every == 0) {
			int e = shmq_nack(q, m, 0);
			if (e)
				atomic_fetch_add(&r->err_nack, 1), atomic_store(&r->last_err, e);
			atomic_fetch_add(&r->nacks, 1);
			return -1;
		}
	} else if (!r->nack_every || p.seq % r->nack_every) {
		atomic_fetch_add(&r->unexpected_redelivery, 1);
	}
	if (r->nack_every && p.seq % 5 == 0) {
		int e = shmq_extend(q, m, 60000);
		if (e)
			atomic_fetch_add(&r->err_extend, 1), atomic_store(&r->last_err, e);
	}
	atomic_fetch_add(&r->count[p.prod][p.seq], 1);
	return 0;
}

static void *consumer(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	shmq_t *q = handle(r);
	if (!q) {
		atomic_fetch_add(&r->errors, 1);
		return NULL;
	}
	int64_t last[SHMQ_LANES_MAX][N_PROD];
	for (int l = 0; l < SHMQ_LANES_MAX; l++)
		for (int i = 0; i < N_PROD; i++)
			last[l][i] = -1;
	for (int pill = 0; !pill;) {
		struct shmq_msg m[BATCH_MAX], settle[BATCH_MAX];
		int got = r->batch ? shmq_recv_batch(q, m, 1 + w->id * 5 % BATCH_MAX, IO_TIMEOUT_MS)
				   : (shmq_recv(q, m, IO_TIMEOUT_MS) == 0 ? 1 : -1);
		if (got <= 0) {
			atomic_fetch_add(&r->errors, 1);
			break;
		}
		unsigned ns = 0, real = 0, npills = 0;
		struct shmq_msg pills[BATCH_MAX];
		for (int k = 0; k < got; k++) {
			int c = check_msg(r, q, &m[k], last);
			if (c == 1)
				pills[npills++] = m[k];
			else if (c == 0)
				real++, settle[ns++] = m[k];
		}
		int e = 0;
		if (r->batch && ns) {
			int a = shmq_ack_batch(q, settle, ns);
			if (a != (int)ns)
				e = a < 0 ? a : -ESTALE;
		}
		for (unsigned k = 0; !r->batch && k < ns; k++)
			e = shmq_ack(q, &settle[k]);
		if (e)
			atomic_fetch_add(&r->err_ack, 1), atomic_store(&r->last_err, e);
		else
			atomic_fetch_add(&r->acked, real);
		/* One pill per consumer, taken once every message is acked: a nacked message may come
		 * back after the pills, and somebody must be left to take it. Early pills go back, a
		 * few ms later each time (see PILL_DELIVERIES: they must not run out of deliveries
		 * while a slow machine acks the last messages). */
		for (unsigned k = 0; k < npills; k++) {
			if (!pill && atomic_load(&r->acked) >= TOTAL) {
				pill = 1;
				if (shmq_ack(q, &pills[k]))
					atomic_fetch_add(&r->err_ack, 1);
			} else if (shmq_nack(q, &pills[k], PILL_BACK_MS) == 0) {
				atomic_fetch_add(&r->nacks, 1);
			}
		}
	}
	release(r, q);
	return NULL;
}

static void *reclaimer(void *arg)
{
	struct run *r = arg;
	shmq_t *q = handle(r);
	if (!q) {
		atomic_fetch_add(&r->errors, 1);
		return NULL;
	}
	while (!atomic_load(&r->stop_reclaim)) {
		struct shmq_reclaim_result res;
		/* nobody dies and no lease comes near its deadline: there is nothing to repair */
		if (shmq_reclaim(q, &res) != 0)
			atomic_fetch_add(&r->err_reclaim, 1);
		struct shmq_stats st;
		shmq_stats(q, &st);
		tq_sleep_ms(1);
	}
	release(r, q);
	return NULL;
}

/* Returns the queue's stats at the end. */
static struct shmq_stats run_lanes(int share_handle, unsigned nack_every, int batch, uint32_t lanes,
				   uint32_t dispatch, uint32_t prefetch)
{
	struct run *r = calloc(1, sizeof(*r));
	TQ_REQUIRE(r != NULL, "out of memory");
	r->name = tq_name(NULL);
	r->nack_every = nack_every;
	r->batch = batch;
	r->lanes = lanes;
	struct shmq_config c = tq_lanes_config(CAPACITY, lanes, dispatch);
	c.lease_ms = 60000;
	c.max_deliveries = PILL_DELIVERIES;
	for (uint32_t l = 0; dispatch == SHMQ_DISPATCH_WEIGHTED && l < lanes; l++)
		c.weights[l] = 1 + l;
	shmq_t *q = tq_create(r->name, &c);
	if (share_handle)
		r->shared = q;
	/* threads sharing one handle share its limit: they wait for each other's acks */
	TQ_REQUIRE(shmq_set_prefetch(q, prefetch) == 0, "set_prefetch failed");

	struct worker pw[N_PROD], cw[N_CONS];
	pthread_t pt[N_PROD], ct[N_CONS], rt;
	double t0 = tq_now_ms();
	for (uint32_t i = 0; i < N_CONS; i++) {
		cw[i] = (struct worker){r, i};
		TQ_REQUIRE(pthread_create(&ct[i], NULL, consumer, &cw[i]) == 0, "pthread_create failed");
	}
	for (uint32_t i = 0; i < N_PROD; i++) {
		pw[i] = (struct worker){r, i};
		TQ_REQUIRE(pthread_create(&pt[i], NULL, producer, &pw[i]) == 0, "pthread_create failed");
	}
	if (nack_every)
		TQ_REQUIRE(pthread_create(&rt, NULL, reclaimer, r) == 0, "pthread_create failed");
	for (int i = 0; i < N_PROD; i++)
		pthread_join(pt[i], NULL);
	/* after every producer's last send: FIFO puts the pills behind every first delivery */
	for (int i = 0; i < N_CONS; i++) {
		struct payload p = {PILL, 0, 0};
		TQ_EXPECT(shmq_send(q, &p, sizeof(p), IO_TIMEOUT_MS) == 0, "sending a pill failed");
	}
	for (int i = 0; i < N_CONS; i++)
		pthread_join(ct[i], NULL);
	if (nack_every) {
		atomic_store(&r->stop_reclaim, 1);
		pthread_join(rt, NULL);
	}
	double took = tq_now_ms() - t0;

	unsigned long missing = 0, dup = 0;
	for (int p = 0; p < N_PROD; p++)
		for (uint32_t s = 0; s < PER_PROD; s++) {
			uint8_t n = atomic_load(&r->count[p][s]);
			missing += n == 0;
			dup += n > 1;
		}
	struct shmq_stats st;
	TQ_REQUIRE(shmq_stats(q, &st) == 0, "shmq_stats failed");
	fprintf(stderr, "threads(%s handle%s%s, %u lane%s%s): %u messages, %d x %d, %.0f ms\n",
		share_handle ? "one" : "own", nack_every ? ", nacks + reclaim" : "", batch ? ", batches" : "",
		lanes, lanes > 1 ? "s" : "", prefetch ? ", prefetch" : "", TOTAL, N_PROD, N_CONS, took);
	TQ_EXPECT(atomic_load(&r->errors) == 0, "send/recv errors or timeouts");
	TQ_EXPECT(atomic_load(&r->err_nack) == 0, "nack failed (last error %d)", atomic_load(&r->last_err));
	TQ_EXPECT(atomic_load(&r->err_extend) == 0, "extend failed (last error %d)",
		  atomic_load(&r->last_err));
	TQ_EXPECT(atomic_load(&r->err_ack) == 0, "ack failed (last error %d)", atomic_load(&r->last_err));
	TQ_EXPECT(atomic_load(&r->err_reclaim) == 0, "reclaim repaired something though nobody died");
	TQ_EXPECT(atomic_load(&r->torn) == 0, "torn payloads");
	TQ_EXPECT(atomic_load(&r->out_of_order) == 0,
		  "a producer's messages reached a consumer out of order");
	TQ_EXPECT(atomic_load(&r->unexpected_redelivery) == 0, "redeliveries nobody asked for");
	TQ_EXPECT(missing == 0, "%lu ids never acked", missing);
	TQ_EXPECT(dup == 0, "%lu ids acked more than once", dup);
	TQ_EXPECT(atomic_load(&r->acked) == TOTAL, "acked %llu of %u",
		  (unsigned long long)atomic_load(&r->acked), TOTAL);
	TQ_EXPECT(st.nacked == atomic_load(&r->nacks), "stats count %llu nacks, the consumers made %llu",
		  (unsigned long long)st.nacked, (unsigned long long)atomic_load(&r->nacks));
	TQ_EXPECT(st.sent == TOTAL + N_CONS, "stats count %llu sent of %u", (unsigned long long)st.sent,
		  TOTAL + N_CONS);
	TQ_EXPECT(st.received == st.acked + st.nacked && st.acked == TOTAL + N_CONS,
		  "stats count %llu received, %llu acked, %llu nacked", (unsigned long long)st.received,
		  (unsigned long long)st.acked, (unsigned long long)st.nacked);
	TQ_EXPECT(st.ready + st.inflight + st.delayed + st.writing + st.dead == 0,
		  "the queue is drained: %llu ready, %llu in flight, %llu delayed, %llu being written, %llu "
		  "dead",
		  (unsigned long long)st.ready, (unsigned long long)st.inflight,
		  (unsigned long long)st.delayed, (unsigned long long)st.writing,
		  (unsigned long long)st.dead);
	shmq_close(q);
	free(r);
	return st;
}

static void run_threads(int share_handle, unsigned nack_every, int batch)
{
	run_lanes(share_handle, nack_every, batch, 1, SHMQ_DISPATCH_ROUND_ROBIN, 0);
}

static void own_handles(void) { run_threads(0, 0, 0); }
static void shared_handle(void) { run_threads(1, 0, 0); }
static void shared_handle_nacks(void) { run_threads(1, 7, 0); }
static void own_handles_batch(void) { run_threads(0, 0, 1); }
static void shared_handle_batch(void) { run_threads(1, 0, 1); }
static void shared_handle_batch_nacks(void) { run_threads(1, 7, 1); }
static void own_handles_four_lanes(void) { run_lanes(0, 0, 0, 4, SHMQ_DISPATCH_LEAST_LOADED, 0); }
static void shared_handle_lanes_nacks_prefetch(void) { run_lanes(1, 7, 1, 4, SHMQ_DISPATCH_WEIGHTED, 8); }
static void shared_handle_round_robin_prefetch(void)
{
	struct shmq_stats st = run_lanes(1, 0, 0, 2, SHMQ_DISPATCH_ROUND_ROBIN, 3);
	/* four consumers, a limit of three: a run in which none ever waited did not apply it */
	TQ_EXPECT(st.prefetch_waits > 0, "no receive ever waited at the prefetch limit");
}

#ifndef TQ_PLAIN
Test(threads, own_handles_move_200k_messages_each_acked_exactly_once) { own_handles(); }

Test(threads, shared_handle_moves_200k_messages_each_acked_exactly_once) { shared_handle(); }

Test(threads, shared_handle_with_nacks_extends_and_reclaims_loses_nothing) { shared_handle_nacks(); }

Test(threads, own_handles_move_200k_messages_in_batches_each_acked_exactly_once) { own_handles_batch(); }

Test(threads, shared_handle_moves_200k_messages_in_batches_each_acked_exactly_once) { shared_handle_batch(); }

Test(threads, shared_handle_with_batches_and_nacks_loses_nothing) { shared_handle_batch_nacks(); }

Test(threads, own_handles_on_four_lanes_lose_and_repeat_nothing) { own_handles_four_lanes(); }

Test(threads, a_shared_handle_with_lanes_nacks_and_a_prefetch_limit_loses_nothing)
{
	shared_handle_lanes_nacks_prefetch();
}

Test(threads, threads_sharing_a_prefetch_limit_wait_for_each_others_acks)
{
	shared_handle_round_robin_prefetch();
}
#else
int main(void)
{
	static const struct tq_plain_test t[] = {
		{"own_handles_move_200k_messages_each_acked_exactly_once", own_handles},
		{"shared_handle_moves_200k_messages_each_acked_exactly_once", shared_handle},
		{"shared_handle_with_nacks_extends_and_reclaims_loses_nothing", shared_handle_nacks},
		{"own_handles_move_200k_messages_in_batches_each_acked_exactly_once", own_handles_batch},
		{"shared_handle_moves_200k_messages_in_batches_each_acked_exactly_once", shared_handle_batch},
		{"shared_handle_with_batches_and_nacks_loses_nothing", shared_handle_batch_nacks},
		{"own_handles_on_four_lanes_lose_and_repeat_nothing", own_handles_four_lanes},
		{"a_shared_handle_with_lanes_nacks_and_a_prefetch_limit_loses_nothing",
		 shared_handle_lanes_nacks_prefetch},
		{"threads_sharing_a_prefetch_limit_wait_for_each_others_acks",
		 shared_handle_round_robin_prefetch},
	};
	return tq_plain_main("threads", t, sizeof(t) / sizeof(t[0]));
}
#endif

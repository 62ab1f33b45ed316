/* SPDX-License-Identifier: MIT */
/*
 * The participant counters as the threads of one handle write them (handle.h, count()): the
 * handle's counting thread in one row with no locked instruction, the others in a shared row.
 * Totals must stay exact whatever the threads do, and every reader (shmq_stats, the snapshot's
 * records, shmq check, the retired totals of a freed record) must take both rows. The handle's
 * sequences (seq_next: round-robin dispatch) are split the same way and must stay exact too.
 *
 * Part of the integration suite (Criterion); `make tsan` builds it with TQ_PLAIN into a program
 * of its own (its main is at the bottom): the counting row is written by load + store, so TSan
 * must see every access to it as an atomic one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "../common.h"
#include "internal.h" /* the record's two rows */
#include "shmq_inspect.h"

#ifndef TQ_PLAIN
TestSuite(counters, .fini = tq_cleanup);
#endif

#define THREADS 4
#define ROUNDS 100000u
#define IO_TIMEOUT_MS 10000

struct run {
	shmq_t *q;
	unsigned rounds;
	pthread_barrier_t *start; /* NULL: start at once */
	int errors;
};

/* rounds x (send, receive, ack) on one handle: three counters move per round */
static void *cycle(void *arg)
{
	struct run *r = arg;
	if (r->start)
		pthread_barrier_wait(r->start);
	for (unsigned i = 0; i < r->rounds; i++) {
		struct shmq_msg m;
		if (shmq_send(r->q, &i, sizeof(i), IO_TIMEOUT_MS) || shmq_recv(r->q, &m, IO_TIMEOUT_MS) ||
		    shmq_ack(r->q, &m)) {
			r->errors++;
			break;
		}
	}
	return NULL;
}

/* n threads run fn on q at the same time, then are joined; returns the errors they met */
static int together(shmq_t *q, unsigned n, unsigned rounds, void *(*fn)(void *))
{
	pthread_t t[THREADS];
	struct run r[THREADS];
	pthread_barrier_t start;
	TQ_REQUIRE(n <= THREADS && pthread_barrier_init(&start, NULL, n) == 0, "barrier");
	for (unsigned i = 0; i < n; i++) {
		r[i] = (struct run){.q = q, .rounds = rounds, .start = &start};
		TQ_REQUIRE(pthread_create(&t[i], NULL, fn, &r[i]) == 0, "pthread_create failed");
	}
	int errors = 0;
	for (unsigned i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		errors += r[i].errors;
	}
	pthread_barrier_destroy(&start);
	return errors;
}

/* The totals of shmq_stats and of q's own record in a snapshot all equal `each`. */
static void expect_totals(shmq_t *q, const char *name, uint64_t each)
{
	struct shmq_stats st;
	TQ_REQUIRE(shmq_stats(q, &st) == 0, "shmq_stats failed");
	TQ_EXPECT(st.sent == each && st.received == each && st.acked == each,
		  "stats: sent %llu received %llu acked %llu, want %llu each", (unsigned long long)st.sent,
		  (unsigned long long)st.received, (unsigned long long)st.acked, (unsigned long long)each);
	shmq_view_t *v;
	TQ_REQUIRE(shmq_view_open(name, &v) == 0, "shmq_view_open failed");
	struct shmq_snapshot s;
	struct shmq_participant_info p[4];
	int n = shmq_view_snapshot(v, &s, p, 4);
	TQ_REQUIRE(n == 1, "one record in use, not %d", n);
	TQ_EXPECT(p[0].sent == each && p[0].received == each && p[0].acked == each,
		  "record: sent %llu received %llu acked %llu, want %llu each", (unsigned long long)p[0].sent,
		  (unsigned long long)p[0].received, (unsigned long long)p[0].acked,
		  (unsigned long long)each);
	shmq_view_close(v);
}

static uint64_t row(_Atomic uint64_t *r, enum shmq_counter c)
{
	return atomic_load_explicit(&r[c], memory_order_relaxed);
}

static void threads_sharing_a_handle_count_every_send_receive_and_ack_exactly(void)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(1024);
	shmq_t *q = tq_create(name, &c);
	TQ_EXPECT(together(q, THREADS, ROUNDS, cycle) == 0, "a send, receive or ack failed");
	expect_totals(q, name, (uint64_t)THREADS * ROUNDS);
	/* one thread (the first to count) wrote the counting row, the others the shared one */
	struct shmq_participant *p = q->me;
	TQ_EXPECT(row(p->counters, C_SENT) == ROUNDS &&
			  row(p->counters_shared, C_SENT) == (THREADS - 1) * ROUNDS,
		  "sends: %llu in the counting row, %llu in the shared one",
		  (unsigned long long)row(p->counters, C_SENT),
		  (unsigned long long)row(p->counters_shared, C_SENT));
	shmq_close(q);
}

static void counts_stay_exact_when_the_counting_thread_exits_and_others_go_on(void)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(1024);
	shmq_t *q = tq_create(name, &c);
	/* the first thread to count takes the counting row, and exits */
	pthread_t first;
	struct run r = {.q = q, .rounds = 1000};
	TQ_REQUIRE(pthread_create(&first, NULL, cycle, &r) == 0, "pthread_create failed");
	pthread_join(first, NULL);
	TQ_EXPECT(r.errors == 0, "the first thread's send, receive or ack failed");
	TQ_EXPECT(together(q, THREADS - 1, ROUNDS, cycle) == 0, "a send, receive or ack failed");
	cycle(&(struct run){.q = q, .rounds = 10}); /* and the thread that made the handle */
	expect_totals(q, name, 1000 + (uint64_t)(THREADS - 1) * ROUNDS + 10);
	/* nobody took the row over: a thread started later may even get the exited one's TLS */
	struct shmq_participant *p = q->me;
	TQ_EXPECT(row(p->counters, C_ACKED) == 1000,
		  "the counting row has %llu acks, want the first thread's 1000",
		  (unsigned long long)row(p->counters, C_ACKED));
	shmq_close(q);
}

/* A clean close folds the record's counters into the header's retired totals: both rows, or the
 * next handle to claim the record would start with the closed one's shared row. */
static void a_closed_handles_counts_of_both_rows_move_to_the_retired_totals(void)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(64);
	shmq_t *keep = tq_create(name, &c), *a, *b;
	TQ_REQUIRE(shmq_open(name, &a) == 0, "open a");
	cycle(&(struct run){.q = a, .rounds = 10}); /* this thread: a's counting row */
	pthread_t t;
	struct run r = {.q = a, .rounds = 7};
	TQ_REQUIRE(pthread_create(&t, NULL, cycle, &r) == 0, "pthread_create failed");
	pthread_join(t, NULL);
	TQ_REQUIRE(row(a->me->counters, C_SENT) == 10 && row(a->me->counters_shared, C_SENT) == 7,
		   "a's sends are in both rows");
	uint32_t part = a->part;
	shmq_close(a);
	TQ_REQUIRE(shmq_open(name, &b) == 0, "open b");
	TQ_REQUIRE(b->part == part, "b reuses a's record (%u, not %u)", part, b->part);

	struct shmq_stats st;
	TQ_REQUIRE(shmq_stats(keep, &st) == 0, "shmq_stats failed");
	TQ_EXPECT(st.sent == 17 && st.received == 17 && st.acked == 17,
		  "stats after the close: sent %llu received %llu acked %llu, want 17 each",
		  (unsigned long long)st.sent, (unsigned long long)st.received, (unsigned long long)st.acked);
	shmq_view_t *v;
	TQ_REQUIRE(shmq_view_open(name, &v) == 0, "shmq_view_open failed");
	struct shmq_snapshot s;
	struct shmq_participant_info p[4];
	int n = shmq_view_snapshot(v, &s, p, 4);
	TQ_REQUIRE(n == 2 && p[1].index == part, "records in use: keep's and b's");
	TQ_EXPECT(p[1].sent == 0 && p[1].received == 0 && p[1].acked == 0,
		  "b's record starts with sent %llu received %llu acked %llu", (unsigned long long)p[1].sent,
		  (unsigned long long)p[1].received, (unsigned long long)p[1].acked);
	shmq_view_close(v);
	shmq_close(b);
	shmq_close(keep);
}

struct handoff {
	shmq_t *q;
	struct shmq_msg m[16];
	int got;
};

static void *receive_all(void *arg)
{
	struct handoff *h = arg;
	for (h->got = 0; h->got < 16; h->got++)
		if (shmq_recv(h->q, &h->m[h->got], IO_TIMEOUT_MS))
			break;
	return NULL;
}

static void count_errors(void *ctx, int severity, const char *what)
{
	(void)what;
	if (severity == SHMQ_CHECK_ERROR)
		++*(int *)ctx;
}

/* shmq check holds a record to "settled <= received": with the receives in the shared row and the
 * acks in the counting row, only the sum of the rows keeps it. */
static void a_check_sums_both_rows_when_one_thread_receives_and_another_acks(void)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_create(name, &c);
	for (uint32_t i = 0; i < 16; i++)
		tq_send_u32(q, i); /* this thread counts first: the counting row is its */
	struct handoff h = {.q = q};
	pthread_t t;
	TQ_REQUIRE(pthread_create(&t, NULL, receive_all, &h) == 0, "pthread_create failed");
	pthread_join(t, NULL);
	TQ_REQUIRE(h.got == 16, "received %d of 16", h.got);
	for (int i = 0; i < 16; i++)
		TQ_EXPECT(shmq_ack(q, &h.m[i]) == 0, "ack %d", i);
	TQ_REQUIRE(row(q->me->counters, C_ACKED) == 16 && row(q->me->counters_shared, C_RECEIVED) == 16,
		   "receives in the shared row, acks in the counting row");
	int errors = 0;
	TQ_EXPECT(shmq_check_name(name, count_errors, &errors) == 0, "shmq_check_name failed");
	TQ_EXPECT(errors == 0, "check found %d errors", errors);
	shmq_close(q);
}

#define RR_LANES 4
#define RR_SENDS (64u * 256) /* per thread: whole cycles of 16 sends x 4 lanes */

static void *send_many(void *arg)
{
	struct run *r = arg;
	pthread_barrier_wait(r->start);
	for (unsigned i = 0; i < r->rounds; i++)
		if (shmq_send(r->q, &i, sizeof(i), 0)) {
			r->errors++;
			break;
		}
	return NULL;
}

/* Round robin gives each lane the same share over every 16 x lanes sends of a producer. Threads
 * sharing the handle step its sequence in two halves (the counting thread's, unlocked, and the
 * others'), each exact on its own: sends in whole cycles from every thread fill the lanes equally,
 * as they did when every send took a fetch_add of one sequence. */
static void round_robin_shares_stay_exact_when_threads_share_the_producer_handle(void)
{
	const char *name = tq_name(NULL);
	/* room for every send: a lane of twice its share */
	struct shmq_config c = tq_lanes_config(RR_SENDS * THREADS * 2, RR_LANES, SHMQ_DISPATCH_ROUND_ROBIN);
	c.slot_size = 128;
	shmq_t *q = tq_create(name, &c);
	TQ_EXPECT(together(q, THREADS, RR_SENDS, send_many) == 0, "a send failed");
	shmq_view_t *v;
	TQ_REQUIRE(shmq_view_open(name, &v) == 0, "shmq_view_open failed");
	struct shmq_snapshot s;
	TQ_REQUIRE(shmq_view_snapshot(v, &s, NULL, 0) >= 0, "snapshot");
	for (unsigned l = 0; l < RR_LANES; l++)
		TQ_EXPECT(s.lane[l].prod_tail == RR_SENDS * THREADS / RR_LANES,
			  "lane %u took %llu sends, not %u", l, (unsigned long long)s.lane[l].prod_tail,
			  RR_SENDS * THREADS / RR_LANES);
	shmq_view_close(v);
	shmq_close(q);
}

#ifndef TQ_PLAIN
Test(counters, threads_sharing_a_handle_count_every_send_receive_and_ack_exactly)
{
	threads_sharing_a_handle_count_every_send_receive_and_ack_exactly();
}

Test(counters, counts_stay_exact_when_the_counting_thread_exits_and_others_go_on)
{
	counts_stay_exact_when_the_counting_thread_exits_and_others_go_on();
}

Test(counters, a_closed_handles_counts_of_both_rows_move_to_the_retired_totals)
{
	a_closed_handles_counts_of_both_rows_move_to_the_retired_totals();
}

Test(counters, a_check_sums_both_rows_when_one_thread_receives_and_another_acks)
{
	a_check_sums_both_rows_when_one_thread_receives_and_another_acks();
}

Test(counters, round_robin_shares_stay_exact_when_threads_share_the_producer_handle)
{
	round_robin_shares_stay_exact_when_threads_share_the_producer_handle();
}
#else
int main(void)
{
	static const struct tq_plain_test t[] = {
		{"threads_sharing_a_handle_count_every_send_receive_and_ack_exactly",
		 threads_sharing_a_handle_count_every_send_receive_and_ack_exactly},
		{"counts_stay_exact_when_the_counting_thread_exits_and_others_go_on",
		 counts_stay_exact_when_the_counting_thread_exits_and_others_go_on},
		{"a_closed_handles_counts_of_both_rows_move_to_the_retired_totals",
		 a_closed_handles_counts_of_both_rows_move_to_the_retired_totals},
		{"a_check_sums_both_rows_when_one_thread_receives_and_another_acks",
		 a_check_sums_both_rows_when_one_thread_receives_and_another_acks},
		{"round_robin_shares_stay_exact_when_threads_share_the_producer_handle",
		 round_robin_shares_stay_exact_when_threads_share_the_producer_handle},
	};
	return tq_plain_main("counters", t, sizeof(t) / sizeof(t[0]));
}
#endif

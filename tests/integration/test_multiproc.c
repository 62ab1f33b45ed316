/* SPDX-License-Identifier: MIT */
/*
 * Several processes on one queue: a million messages through 4 producers and 4 consumers, a
 * consumer SIGKILLed while it holds leases, and processes killed at fault points (test builds).
 * Children open the queue themselves and report through exit codes, pipes or a shared anonymous
 * mapping made before fork(); they never call Criterion's asserts.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "internal.h"
#include "shmq.h"

TestSuite(multiproc, .fini = tq_cleanup);

/* ---- payloads -------------------------------------------------------------------------------- */

/* 16 bytes: who sent it, its sequence number, and a check over both, so a message mixed from two
 * sends (torn) or read half-written is caught. */
struct payload {
	uint32_t prod;
	uint32_t seq;
	uint64_t check;
};

#define PILL_PROD 0xffffffffu /* "no more messages": one per consumer, after all producers */

static uint64_t check_of(uint32_t prod, uint32_t seq)
{
	uint64_t x = ((uint64_t)prod << 32 | seq) + 0x9e3779b97f4a7c15ULL; /* splitmix64 */
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static struct payload make(uint32_t prod, uint32_t seq)
{
	return (struct payload){.prod = prod, .seq = seq, .check = check_of(prod, seq)};
}

/* 1 and fills *p if m carries an intact payload */
static int intact(const struct shmq_msg *m, struct payload *p)
{
	if (m->len != sizeof(*p))
		return 0;
	memcpy(p, m->data, sizeof(*p));
	return p->check == check_of(p->prod, p->seq);
}

static void expect_exit(pid_t pid, int code, const char *who)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == code, "%s: %s %d, want exit %d", who,
		  WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), code);
}

static void expect_killed(pid_t pid, const char *who)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s did not die by SIGKILL (%s %d)", who,
		  WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* ---- a million messages, 4 x 4 ---------------------------------------------------------------- */

#define N_PROD 4
#define N_CONS 4
#define PER_PROD 250000u
#define IO_TIMEOUT_MS 10000 /* a hang fails the run instead of wedging it */

enum {
	EXIT_OK = 0,
	EXIT_OPEN = 10,
	EXIT_HANG = 11,
	EXIT_IO = 12
};

struct board {
	_Atomic uint32_t torn;	       /* payloads that failed their check */
	_Atomic uint32_t out_of_order; /* a consumer saw a producer's seq go backwards (first deliveries) */
	_Atomic uint32_t redelivered;  /* deliveries > 1: nothing here should expire or fail */
	_Atomic uint32_t foreign;      /* producer or seq out of range */
	_Atomic uint64_t acked;
	_Atomic uint8_t count[N_PROD][PER_PROD]; /* acks per message */
};

static int mp_producer(const char *name, uint32_t prod)
{
	shmq_t *q;
	if (shmq_open(name, &q))
		return EXIT_OPEN;
	for (uint32_t seq = 0; seq < PER_PROD; seq++) {
		struct payload p = make(prod, seq);
		int r = shmq_send(q, &p, sizeof(p), IO_TIMEOUT_MS);
		if (r)
			return r == -EAGAIN ? EXIT_HANG : EXIT_IO;
	}
	shmq_close(q);
	return EXIT_OK;
}

static int mp_consumer(const char *name, struct board *b)
{
	shmq_t *q;
	if (shmq_open(name, &q))
		return EXIT_OPEN;
	int64_t last[N_PROD];
	for (int i = 0; i < N_PROD; i++)
		last[i] = -1;
	for (;;) {
		struct shmq_msg m;
		struct payload p;
		int r = shmq_recv(q, &m, IO_TIMEOUT_MS);
		if (r)
			return r == -EAGAIN ? EXIT_HANG : EXIT_IO;
		if (!intact(&m, &p)) {
			atomic_fetch_add(&b->torn, 1);
		} else if (p.prod == PILL_PROD) {
			if (shmq_ack(q, &m))
				return EXIT_IO;
			break;
		} else if (p.prod >= N_PROD || p.seq >= PER_PROD) {
			atomic_fetch_add(&b->foreign, 1);
		} else {
			if (m.deliveries != 1)
				atomic_fetch_add(&b->redelivered, 1);
			else if ((int64_t)p.seq <= last[p.prod])
				atomic_fetch_add(&b->out_of_order, 1);
			else
				last[p.prod] = p.seq;
			atomic_fetch_add(&b->count[p.prod][p.seq], 1);
			atomic_fetch_add(&b->acked, 1);
		}
		if (shmq_ack(q, &m))
			return EXIT_IO;
	}
	shmq_close(q);
	return EXIT_OK;
}

Test(multiproc, million_messages_4x4_each_acked_exactly_once_in_order_per_producer)
{
	const char *name = tq_name(NULL);
	struct board *b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(b, MAP_FAILED);
	struct shmq_config c = tq_config(1024);
	shmq_t *q = tq_create(name, &c);

	double t0 = tq_now_ms();
	pid_t prod[N_PROD], cons[N_CONS];
	for (int i = 0; i < N_CONS; i++) {
		cons[i] = fork();
		cr_assert_neq(cons[i], -1);
		if (cons[i] == 0)
			_exit(mp_consumer(name, b));
	}
	for (int i = 0; i < N_PROD; i++) {
		prod[i] = fork();
		cr_assert_neq(prod[i], -1);
		if (prod[i] == 0)
			_exit(mp_producer(name, (uint32_t)i));
	}
	for (int i = 0; i < N_PROD; i++)
		expect_exit(prod[i], EXIT_OK, "producer");
	double t_sent = tq_now_ms();
	/* FIFO: the pills come after every first delivery of the producers' messages */
	for (int i = 0; i < N_CONS; i++) {
		struct payload p = make(PILL_PROD, (uint32_t)i);
		cr_expect_eq(shmq_send(q, &p, sizeof(p), IO_TIMEOUT_MS), 0);
	}
	for (int i = 0; i < N_CONS; i++)
		expect_exit(cons[i], EXIT_OK, "consumer");
	double took = tq_now_ms() - t0;

	unsigned long missing = 0, dup = 0;
	for (int p = 0; p < N_PROD; p++)
		for (uint32_t s = 0; s < PER_PROD; s++) {
			uint8_t n = atomic_load(&b->count[p][s]);
			missing += n == 0;
			dup += n > 1;
		}
	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q, &st), 0);
	uint64_t total = (uint64_t)N_PROD * PER_PROD;
	fprintf(stderr,
		"multiproc: %llu messages, %d producers x %d consumers, capacity %u: %.0f ms "
		"(producers done at "
		"%.0f ms), %.2f M msg/s; producer waits %llu, consumer waits %llu\n",
		(unsigned long long)total, N_PROD, N_CONS, c.capacity, took, t_sent - t0,
		total / took / 1000.0, (unsigned long long)st.producer_waits,
		(unsigned long long)st.consumer_waits);
	cr_expect_eq(atomic_load(&b->torn), 0, "torn payloads delivered");
	cr_expect_eq(atomic_load(&b->foreign), 0, "payloads that were never sent");
	cr_expect_eq(atomic_load(&b->out_of_order), 0,
		     "a producer's messages reached a consumer out of order");
	cr_expect_eq(atomic_load(&b->redelivered), 0, "redeliveries without any nack, expiry or crash");
	cr_expect_eq(missing, 0, "%lu messages never acked", missing);
	cr_expect_eq(dup, 0, "%lu messages acked more than once", dup);
	cr_expect_eq(atomic_load(&b->acked), total);
	cr_expect_eq(st.sent, total + N_CONS);
	cr_expect_eq(st.acked, total + N_CONS);
	cr_expect_eq(st.ready + st.inflight + st.delayed + st.writing + st.dead, 0, "the queue is drained");
	shmq_close(q);
	munmap(b, sizeof(*b));
}

/* ---- a consumer SIGKILLed while it holds leases ------------------------------------------------ */

struct seen {
	uint32_t seq;
	uint32_t deliveries;
	int ok;
};

Test(multiproc, consumer_killed_holding_leases_has_them_requeued_and_redelivered)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(64);
	c.lease_ms = 60000; /* only the owner's death may requeue them */
	c.retry_base_ms = 1;
	c.retry_max_ms = 5;
	shmq_t *q = tq_create(name, &c);
	for (uint32_t i = 0; i < 10; i++) {
		struct payload p = make(0, i);
		cr_assert_eq(shmq_send(q, &p, sizeof(p), 0), 0);
	}

	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *cq;
		struct shmq_msg m;
		if (shmq_open(name, &cq))
			_exit(EXIT_OPEN);
		for (int i = 0; i < 10; i++)
			if (shmq_recv(cq, &m, 2000))
				_exit(EXIT_IO);
		raise(SIGKILL); /* dies holding 10 leases */
		_exit(EXIT_OK);
	}
	expect_killed(pid, "the consumer");

	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q, &st), 0);
	cr_expect_eq(st.inflight, 10);
	cr_expect_eq(st.participants, 1, "the dead consumer no longer counts as attached");
	struct shmq_reclaim_result res;
	cr_expect_eq(shmq_reclaim(q, &res), 10);
	cr_expect_eq(res.dead_owner, 10);
	cr_expect_eq(res.expired, 0);
	cr_expect_eq(res.dead_lettered, 0);
	cr_expect_eq(res.participants_freed, 1);
	cr_expect_eq(shmq_reclaim(q, &res), 0, "a second pass finds nothing to do");

	/* another consumer process gets all ten again, as second deliveries */
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		close(fds[0]);
		shmq_t *cq;
		struct shmq_msg m;
		struct payload p;
		if (shmq_open(name, &cq))
			_exit(EXIT_OPEN);
		for (int i = 0; i < 10; i++) {
			if (shmq_recv(cq, &m, 5000))
				_exit(EXIT_HANG);
			int ok = intact(&m, &p); /* before reading p: initializers are unsequenced */
			struct seen s = {.ok = ok, .seq = p.seq, .deliveries = m.deliveries};
			if (write(fds[1], &s, sizeof(s)) != (ssize_t)sizeof(s) || shmq_ack(cq, &m))
				_exit(EXIT_IO);
		}
		shmq_close(cq);
		_exit(EXIT_OK);
	}
	close(fds[1]);
	unsigned got[10] = {0}, n = 0;
	struct seen s;
	while (read(fds[0], &s, sizeof(s)) == (ssize_t)sizeof(s)) {
		n++;
		cr_expect(s.ok, "torn message redelivered");
		cr_expect_lt(s.seq, 10, "seq %u ok %d deliv %u", s.seq, s.ok, s.deliveries);
		cr_expect_eq(s.deliveries, 2, "message %u redelivered as delivery %u", s.seq, s.deliveries);
		if (s.seq < 10)
			got[s.seq]++;
	}
	close(fds[0]);
	expect_exit(pid, EXIT_OK, "the second consumer");
	cr_expect_eq(n, 10);
	for (int i = 0; i < 10; i++)
		cr_expect_eq(got[i], 1, "message %d received %u times", i, got[i]);
	cr_assert_eq(shmq_stats(q, &st), 0);
	cr_expect_eq(st.reclaimed_dead_owner, 10);
	cr_expect_eq(st.redelivered, 10);
	cr_expect_eq(st.ready + st.inflight + st.delayed, 0);
	shmq_close(q);
}

/* ---- fault points ------------------------------------------------------------------------------ */

/* A producer dies after claiming and writing a slot, before publishing it: the slot must be
 * retired (by the consumer that waits on it, or by a reclaim pass), every message around it
 * delivered, none torn. */
static void producer_dies_before_publish(int reclaim_first)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(16);
	c.lease_ms = 60000;
	shmq_t *q = tq_create(name, &c);
	const uint32_t k = 6; /* the child completes sends 0..k-2; send k-1 dies */

	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *pq;
		if (shmq_open(name, &pq))
			_exit(EXIT_OPEN);
		shmq_fault_arm("send-before-publish", k);
		for (uint32_t i = 0; i < 100; i++) {
			struct payload p = make(1, i);
			if (shmq_send(pq, &p, sizeof(p), 1000))
				_exit(EXIT_IO);
		}
		_exit(EXIT_OK); /* the fault point was never reached */
	}
	expect_killed(pid, "the producer");

	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q, &st), 0);
	cr_expect_eq(st.writing, 1, "the dead producer's slot is still claimed");
	cr_expect_eq(st.ready, k - 1);
	if (reclaim_first) {
		struct shmq_reclaim_result res;
		cr_expect_eq(shmq_reclaim(q, &res), 1);
		cr_expect_eq(res.retired_writes, 1);
		cr_expect_eq(res.dead_owner, 0);
	}
	for (uint32_t i = 0; i < 10; i++) {
		struct payload p = make(2, i);
		cr_assert_eq(shmq_send(q, &p, sizeof(p), 2000), 0, "send %u after the producer died", i);
	}
	/* in FIFO order: the child's k-1 messages, then the parent's 10; nothing else */
	for (uint32_t i = 0; i < k - 1 + 10; i++) {
		struct shmq_msg m;
		struct payload p;
		int r = shmq_recv(q, &m, 5000);
		cr_assert_eq(r, 0, "message %u not delivered: %s", i, shmq_strerror(r));
		cr_assert(intact(&m, &p), "torn message delivered");
		uint32_t want_prod = i < k - 1 ? 1 : 2, want_seq = i < k - 1 ? i : i - (k - 1);
		cr_expect(p.prod == want_prod && p.seq == want_seq, "got %u/%u, want %u/%u", p.prod, p.seq,
			  want_prod, want_seq);
		cr_expect_eq(m.deliveries, 1);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(q, &m, 50), -EAGAIN, "the unpublished message must never be delivered");
	cr_assert_eq(shmq_stats(q, &st), 0);
	cr_expect_eq(st.retired_writes, 1);
	cr_expect_eq(st.ready + st.inflight + st.delayed + st.writing, 0);
	cr_expect_eq(st.free_slots, 16);
	shmq_close(q);
}

Test(multiproc, producer_killed_before_publish_is_retired_by_the_waiting_consumer)
{
	producer_dies_before_publish(0);
}

Test(multiproc, producer_killed_before_publish_is_retired_by_reclaim) { producer_dies_before_publish(1); }

/* A consumer dies right after it leased a message, before it wrote the lease deadline: the
 * lease word still belongs to the producer's fill, so only the owner's death can free it. */
Test(multiproc, consumer_killed_before_writing_its_deadline_has_the_message_redelivered)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(16);
	c.lease_ms = 50; /* short: expiry alone must not be what saves it */
	c.retry_base_ms = 1;
	c.retry_max_ms = 5;
	shmq_t *q = tq_create(name, &c);
	for (uint32_t i = 0; i < 5; i++) {
		struct payload p = make(0, i);
		cr_assert_eq(shmq_send(q, &p, sizeof(p), 0), 0);
	}
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *cq;
		if (shmq_open(name, &cq))
			_exit(EXIT_OPEN);
		shmq_fault_arm("recv-after-lease", 3);
		for (;;) {
			struct shmq_msg m;
			if (shmq_recv(cq, &m, 1000) || shmq_ack(cq, &m))
				_exit(EXIT_IO);
		}
	}
	expect_killed(pid, "the consumer");

	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q, &st), 0);
	cr_expect_eq(st.inflight, 1);
	cr_expect_eq(st.acked, 2);
	struct shmq_reclaim_result res;
	cr_expect_eq(shmq_reclaim(q, &res), 1);
	cr_expect_eq(res.dead_owner, 1);
	cr_expect_eq(res.expired, 0);

	unsigned got[5] = {0};
	struct shmq_msg m;
	struct payload p;
	int r;
	while ((r = shmq_recv(q, &m, 300)) == 0) {
		cr_assert(intact(&m, &p) && p.seq < 5, "torn or foreign message");
		got[p.seq]++;
		cr_expect_eq(m.deliveries, p.seq == 2 ? 2u : 1u, "message %u as delivery %u", p.seq,
			     m.deliveries);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	cr_expect_eq(got[0] + got[1], 0, "acked messages came back");
	for (int i = 2; i < 5; i++)
		cr_expect_eq(got[i], 1, "message %d received %u times", i, got[i]);
	cr_assert_eq(shmq_stats(q, &st), 0);
	cr_expect_eq(st.ready + st.inflight + st.delayed + st.writing, 0);
	shmq_close(q);
}

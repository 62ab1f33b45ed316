/* SPDX-License-Identifier: MIT */
/*
 * Crash tests: a forked child arms a fault point and SIGKILLs itself there (test builds only);
 * the parent proves nothing was lost, nothing torn, and the queue keeps flowing.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "shmq.h"

#define N_MSGS 40

struct payload {
	uint32_t seq;
	uint32_t check;
	char fill[48];
};

static struct payload make(uint32_t seq)
{
	struct payload p;
	p.seq = seq;
	p.check = seq * 2654435761u;
	memset(p.fill, (int)(seq & 0x7f), sizeof(p.fill));
	return p;
}

static int intact(const struct shmq_msg *m, uint32_t *seq)
{
	struct payload p;
	if (m->len != sizeof(p))
		return 0;
	memcpy(&p, m->data, sizeof(p));
	for (size_t i = 0; i < sizeof(p.fill); i++)
		if (p.fill[i] != (char)(p.seq & 0x7f))
			return 0;
	*seq = p.seq;
	return p.check == p.seq * 2654435761u;
}

static void qname(char *buf, size_t n, const char *tag)
{
	snprintf(buf, n, "/shmq-test-crash-%s-%d", tag, (int)getpid());
}

static shmq_t *make_queue(const char *name)
{
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 16;
	c.slot_size = 128;
	c.lease_ms = 60000; /* only dead-owner detection may requeue here */
	c.retry_base_ms = 1;
	c.retry_max_ms = 4;
	shmq_t *q;
	shmq_unlink(name);
	cr_assert_eq(shmq_create(name, &c, &q), 0);
	return q;
}

static void expect_killed(pid_t pid)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		  "child did not die at its fault point (status %#x)", st);
}

/* Producer killed at `point` on its k-th send; the parent sent nothing itself. Afterwards a
 * consumer must receive every message the child completed, intact and in order, and the queue
 * must take and deliver new messages (it did not wedge on the dead producer's ticket or slot). */
static void producer_killed_at(const char *point, unsigned k, unsigned warm)
{
	char name[96];
	qname(name, sizeof(name), point);
	shmq_t *q = make_queue(name);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *p;
		if (shmq_open(name, &p))
			_exit(3);
		/* move the tickets around the ring first, so the fault hits a reused slot */
		for (uint32_t i = 0; i < warm; i++) {
			struct payload pl = make(5000 + i);
			struct shmq_msg m;
			if (shmq_send(p, &pl, sizeof(pl), 0) || shmq_recv(p, &m, 0) || shmq_ack(p, &m))
				_exit(6);
		}
		shmq_fault_arm(point, k);
		for (uint32_t i = 0; i < N_MSGS; i++) {
			struct payload pl = make(i);
			if (shmq_send(p, &pl, sizeof(pl), 1000))
				_exit(4);
		}
		_exit(5); /* the fault point was never reached */
	}
	expect_killed(pid);

	/* the child completed sends 0..k-2; send k-1 died somewhere in flight */
	for (uint32_t i = 1000; i < 1000 + N_MSGS; i++) {
		struct payload pl = make(i);
		cr_assert_eq(shmq_send(q, &pl, sizeof(pl), 2000), 0, "queue wedged after %s", point);
		struct shmq_msg m;
		uint32_t seq;
		int r;
		/* drain what is there: old messages first (FIFO), then ours */
		while ((r = shmq_recv(q, &m, 2000)) == 0) {
			cr_assert(intact(&m, &seq), "torn message delivered after %s", point);
			cr_expect_eq(shmq_ack(q, &m), 0);
			if (seq == i)
				break;
			cr_expect(seq < k - 1 || seq == k - 1, "unexpected seq %u", seq);
		}
		cr_assert_eq(r, 0, "message %u not delivered after %s", i, point);
	}
	struct shmq_stats st;
	shmq_stats(q, &st);
	cr_expect_eq(st.ready + st.inflight + st.delayed + st.writing, 0);
	shmq_close(q);
	shmq_unlink(name);
}

Test(crash, producer_killed_after_taking_ticket_does_not_wedge)
{
	producer_killed_at("send-after-ticket", 5, 0);
}
Test(crash, producer_killed_after_claiming_slot_is_retired) { producer_killed_at("send-after-claim", 5, 0); }
Test(crash, producer_killed_mid_write_never_delivers_torn_message)
{
	producer_killed_at("send-mid-write", 5, 0);
}
Test(crash, producer_killed_before_publish_is_retired) { producer_killed_at("send-before-publish", 5, 0); }
Test(crash, producer_killed_around_the_ring_does_not_wedge)
{
	producer_killed_at("send-before-publish", 3, 37);
}

/* Consumer killed at `point` while handling message k; the parent must get every message, the
 * one the child held redelivered (deliveries >= 2) after a reclaim pass, none torn or lost. */
static void consumer_killed_at(const char *point, unsigned k, int nack_first)
{
	char name[96];
	qname(name, sizeof(name), point);
	shmq_t *q = make_queue(name);
	for (uint32_t i = 0; i < 10; i++) {
		struct payload pl = make(i);
		cr_assert_eq(shmq_send(q, &pl, sizeof(pl), 0), 0);
	}
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *c;
		if (shmq_open(name, &c))
			_exit(3);
		shmq_fault_arm(point, k);
		for (;;) {
			struct shmq_msg m;
			if (shmq_recv(c, &m, 1000))
				_exit(4);
			if (nack_first && m.deliveries == 1)
				shmq_nack(c, &m, 0);
			else
				shmq_ack(c, &m);
		}
	}
	expect_killed(pid);
	struct shmq_reclaim_result res;
	cr_expect_geq(shmq_reclaim(q, &res), 0);
	unsigned seen[10] = {0}, redelivered = 0;
	struct shmq_msg m;
	uint32_t seq;
	while (shmq_recv(q, &m, 300) == 0) {
		cr_assert(intact(&m, &seq) && seq < 10, "torn or foreign message after %s", point);
		seen[seq]++;
		if (m.deliveries > 1)
			redelivered++;
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	/* every message the child did not ack comes back; at least the one it held */
	unsigned total = 0;
	for (int i = 0; i < 10; i++)
		total += seen[i];
	cr_expect_geq(total, 1, "the message held by the dead consumer was lost (%s)", point);
	cr_expect_geq(redelivered, 1, "no redelivery after %s", point);
	struct shmq_stats st;
	shmq_stats(q, &st);
	cr_expect_eq(st.ready + st.inflight + st.delayed + st.writing, 0, "queue not drained after %s",
		     point);
	cr_expect_eq(st.acked, 10 - st.dead, "acked %llu of 10 after %s", (unsigned long long)st.acked,
		     point);
	shmq_close(q);
	shmq_unlink(name);
}

Test(crash, consumer_killed_between_lease_and_head_advance_loses_nothing)
{
	consumer_killed_at("recv-before-head", 3, 0);
}
Test(crash, consumer_killed_before_writing_its_deadline_loses_nothing)
{
	consumer_killed_at("recv-after-lease", 3, 0);
}
Test(crash, consumer_killed_in_nack_loses_nothing) { consumer_killed_at("nack-before-cas", 2, 1); }
Test(crash, consumer_killed_on_a_redelivery_loses_nothing)
{
	consumer_killed_at("redeliver-after-lease", 1, 1);
}

/* With no watchdog and no shmq_reclaim call, a waiting receiver still gets back the message a
 * killed consumer held, about one reclaim interval after its death, not at its 60 s deadline. */
Test(crash, dead_consumers_message_comes_back_through_recv_alone)
{
	char name[96];
	qname(name, sizeof(name), "autoreclaim");
	shmq_t *q = make_queue(name);
	struct payload pl = make(7);
	cr_assert_eq(shmq_send(q, &pl, sizeof(pl), 0), 0);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *c;
		struct shmq_msg m;
		if (shmq_open(name, &c) || shmq_recv(c, &m, 1000))
			_exit(3);
		raise(SIGKILL);
	}
	expect_killed(pid);
	struct shmq_msg m;
	uint32_t seq;
	cr_assert_eq(shmq_recv(q, &m, 10000), 0, "the dead consumer's message never came back");
	cr_expect(intact(&m, &seq) && seq == 7);
	cr_expect_eq(m.deliveries, 2);
	cr_expect_eq(shmq_ack(q, &m), 0);
	struct shmq_stats st;
	shmq_stats(q, &st);
	cr_expect_eq(st.reclaimed_dead_owner, 1);
	shmq_close(q);
	shmq_unlink(name);
}

/* A reclaim pass killed half-way leaves every slot in a state the next pass finishes. */
Test(crash, reclaim_killed_mid_pass_is_finished_by_the_next_pass)
{
	char name[96];
	qname(name, sizeof(name), "reclaim");
	shmq_t *q = make_queue(name);
	for (uint32_t i = 0; i < 6; i++) {
		struct payload pl = make(i);
		cr_assert_eq(shmq_send(q, &pl, sizeof(pl), 0), 0);
	}
	pid_t pid = fork();
	if (pid == 0) { /* a consumer that takes everything and dies holding it */
		shmq_t *c;
		struct shmq_msg m;
		if (shmq_open(name, &c))
			_exit(3);
		while (shmq_recv(c, &m, 0) == 0)
			;
		raise(SIGKILL);
	}
	expect_killed(pid);
	pid = fork();
	if (pid == 0) { /* a watchdog that dies after its second repair */
		shmq_t *w;
		if (shmq_open(name, &w))
			_exit(3);
		shmq_fault_arm("reclaim-mid-pass", 2);
		shmq_reclaim(w, NULL);
		_exit(5);
	}
	expect_killed(pid);
	struct shmq_reclaim_result res;
	shmq_reclaim(q, &res);
	cr_expect_eq(res.dead_owner, 4, "the next pass requeues exactly what the first did not");
	struct shmq_msg m;
	uint32_t seq;
	unsigned got = 0;
	while (shmq_recv(q, &m, 300) == 0) {
		cr_assert(intact(&m, &seq));
		cr_expect_eq(m.deliveries, 2);
		cr_expect_eq(shmq_ack(q, &m), 0);
		got++;
	}
	cr_expect_eq(got, 6);
	shmq_close(q);
	shmq_unlink(name);
}

/* A poison message that kills every consumer taking it ends in the DLQ as "consumer crashed"
 * after max_deliveries, instead of crash-looping the fleet. */
Test(crash, poison_message_ends_in_dlq_as_consumer_crashed)
{
	char name[96];
	qname(name, sizeof(name), "poison");
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 8;
	c.max_deliveries = 3;
	c.retry_base_ms = 1;
	c.retry_max_ms = 2;
	shmq_t *q;
	shmq_unlink(name);
	cr_assert_eq(shmq_create(name, &c, &q), 0);
	cr_assert_eq(shmq_send(q, "poison", 6, 0), 0);
	pid_t last = 0;
	for (int round = 0; round < 3; round++) {
		pid_t pid = fork();
		if (pid == 0) {
			shmq_t *cq;
			struct shmq_msg m;
			if (shmq_open(name, &cq) || shmq_recv(cq, &m, 2000))
				_exit(3);
			raise(SIGKILL); /* the message kills its consumer */
		}
		expect_killed(pid);
		last = pid;
		shmq_reclaim(q, NULL);
	}
	struct shmq_dead_letter dl[2];
	cr_assert_eq(shmq_dlq_list(q, dl, 2), 1);
	cr_expect_eq(dl[0].reason, SHMQ_DEAD_CRASHED);
	cr_expect_eq(dl[0].deliveries, 3);
	cr_expect_eq(dl[0].last_pid, last, "last pid %d, the last holder was %d", dl[0].last_pid, (int)last);
	cr_expect_str_eq(shmq_dead_reason_str(dl[0].reason), "consumer crashed");
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(q, &m, 50), -EAGAIN, "a dead letter must not be delivered");
	shmq_close(q);
	shmq_unlink(name);
}

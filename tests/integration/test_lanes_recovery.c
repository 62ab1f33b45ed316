/* SPDX-License-Identifier: MIT */
/*
 * Lanes under failure and idleness: a busy poller behind a dead producer's ticket, a consumer
 * asleep while the consumer of a key-hash lane dies, key-hash consumers that sat idle for longer
 * than a lease, a one-lane key-hash queue, a prefetch limit lifted under a waiting receiver, and a
 * poison key whose dead letters would otherwise fill its lane. (Found by review; each failed
 * before its fix.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "internal.h"
#include "shmq.h"

TestSuite(lanes_recovery, .fini = tq_cleanup);

/* A producer killed after taking ticket 0 (before claiming its slot); a live producer then sends.
 * A consumer polling with timeout 0 must step over the dead ticket (its 2 ms grace must run out
 * although an idle poll reads prod_tail only now and then). */
static void nonblocking_poller_after_dead_ticket(uint32_t lanes)
{
	struct shmq_config c = tq_config(lanes > 1 ? 64 * lanes : 16);
	c.lanes = lanes;
	c.lease_ms = 60000;
	const char *name = tq_name("nbpoll");
	shmq_t *q = tq_create(name, &c);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *p;
		if (shmq_open(name, &p))
			_exit(3);
		shmq_fault_arm("send-after-ticket", 1);
		uint32_t v = 7;
		shmq_send(p, &v, sizeof(v), 0);
		_exit(5);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st));
	uint32_t v = 42;
	unsigned sent = 0;
	for (uint32_t l = 0; l < lanes; l++) /* messages into every lane (rr runs of 16) */
		for (int i = 0; i < (lanes > 1 ? 16 : 1); i++, sent++)
			cr_assert_eq(shmq_send(q, &v, sizeof(v), 0), 0);
	struct shmq_msg m;
	double t0 = tq_now_ms();
	unsigned got = 0;
	long polls = 0;
	while (got < sent && tq_now_ms() - t0 < 2000) {
		polls++;
		if (shmq_recv(q, &m, 0) == 0) {
			got++;
			shmq_ack(q, &m);
		}
	}
	cr_expect_eq(got, sent, "a timeout-0 poller got %u of %u ready messages in 2 s (%ld polls)", got,
		     sent, polls);
	shmq_close(q);
}

Test(lanes_recovery, a_timeout_zero_poller_steps_over_a_dead_producers_ticket)
{
	nonblocking_poller_after_dead_ticket(1);
}

Test(lanes_recovery, a_timeout_zero_poller_steps_over_a_dead_producers_ticket_on_two_lanes)
{
	nonblocking_poller_after_dead_ticket(2);
}

struct rarg {
	shmq_t *q;
	int timeout;
	int r;
	double at_ms;
};
static void *recv_thread(void *p)
{
	struct rarg *a = p;
	struct shmq_msg m;
	a->r = shmq_recv(a->q, &m, a->timeout);
	a->at_ms = tq_now_ms();
	return NULL;
}

/* key-hash, 2 lanes: we own lane 0, a child lane 1. Messages wait in lane 1; our receiver is
 * asleep (they are not ours). The child dies: per the docs its lane is ours within ~50 ms. */
static double takeover_latency(uint32_t reclaim_ms, uint32_t lease_ms)
{
	const char *name = tq_name("kh");
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	c.reclaim_interval_ms = reclaim_ms;
	c.lease_ms = lease_ms;
	shmq_t *q = tq_create(name, &c);
	tq_register_consumer(q);
	pid_t child = tq_consumer_child(name);
	usleep(60 * 1000);
	char key[16];
	for (int i = 0;; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		if (shmq_hash(key, strlen(key)) % 2 == 1)
			break;
	}
	uint32_t v = 1;
	cr_assert_eq(shmq_send_routed(q, key, strlen(key), &v, sizeof(v), 0), 0);
	struct rarg a = {.q = q, .timeout = 5000};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, recv_thread, &a), 0, "pthread_create failed");
	usleep(300 * 1000); /* the receiver is asleep now */
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	double t0 = tq_now_ms();
	pthread_join(t, NULL);
	double lat = a.at_ms - t0;
	shmq_close(q);
	return a.r == 0 ? lat : 1e9;
}

Test(lanes_recovery, a_sleeping_consumer_takes_over_the_key_hash_lane_of_a_dead_one)
{
	cr_expect_lt(takeover_latency(100, 30000), 500,
		     "lane of a dead consumer not taken over by a sleeping survivor");
}

Test(lanes_recovery, a_sleeping_consumer_takes_over_the_key_hash_lane_of_a_dead_one_without_reclaim_passes)
{
	cr_expect_lt(takeover_latency(0, 30000), 500,
		     "lane of a dead consumer not taken over by a sleeping survivor");
}

/* key-hash, 2 lanes, two consumers each blocked in shmq_recv(-1) the whole time (a worker's
 * loop). The queue is idle for longer than lease_ms, then two messages of ONE key arrive. The
 * guarantee: a key's first deliveries reach one consumer at a time. */
struct kc {
	shmq_t *q;
	int who;
	_Atomic int *holding; /* bitmask of consumers holding a message of the key */
	_Atomic int *overlap;
	_Atomic int *left;
};
static void *key_consumer(void *p)
{
	struct kc *k = p;
	struct shmq_msg m;
	while (atomic_load(k->left) > 0) {
		if (shmq_recv(k->q, &m, 3000))
			continue;
		int prev = atomic_fetch_or(k->holding, 1 << k->who);
		if (prev & ~(1 << k->who))
			atomic_store(k->overlap, 1);
		usleep(30 * 1000); /* handle it */
		atomic_fetch_and(k->holding, ~(1 << k->who));
		shmq_ack(k->q, &m);
		atomic_fetch_sub(k->left, 1);
	}
	return NULL;
}

static void idle_spell(uint32_t lease_ms, uint32_t reclaim_ms, unsigned idle_ms)
{
	const char *name = tq_name("khidle");
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	c.lease_ms = lease_ms;
	c.reclaim_interval_ms = reclaim_ms;
	shmq_t *p = tq_create(name, &c), *a, *b;
	cr_assert_eq(shmq_open(name, &a), 0);
	cr_assert_eq(shmq_open(name, &b), 0);
	_Atomic int holding = 0, overlap = 0, left = 1000000;
	struct kc ka = {a, 0, &holding, &overlap, &left}, kb = {b, 1, &holding, &overlap, &left};
	pthread_t ta, tb;
	cr_assert_eq(pthread_create(&ta, NULL, key_consumer, &ka), 0, "pthread_create failed");
	cr_assert_eq(pthread_create(&tb, NULL, key_consumer, &kb), 0, "pthread_create failed");
	int bursts = 0, bad = 0;
	for (int round = 0; round < 3; round++) {
		usleep(idle_ms * 1000); /* idle: both consumers blocked in shmq_recv */
		atomic_store(&overlap, 0);
		for (uint32_t v = 0; v < 4; v++)
			cr_assert_eq(shmq_send_routed(p, "k", 1, &v, sizeof(v), 0), 0);
		usleep(300 * 1000);
		bursts++;
		bad += atomic_load(&overlap);
	}
	atomic_store(&left, 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	cr_expect_eq(bad, 0, "%d of %d bursts: one key's messages held by two consumers at once", bad,
		     bursts);
	shmq_close(a);
	shmq_close(b);
	shmq_close(p);
}

Test(lanes_recovery, a_key_stays_with_one_consumer_after_idle_spells_longer_than_a_lease)
{
	idle_spell(200, 100, 1200);
}

Test(lanes_recovery, a_key_stays_with_one_consumer_after_idle_spells_without_reclaim_passes)
{
	idle_spell(1000, 0, 1200);
}

Test(lanes_recovery, a_key_stays_with_one_consumer_after_idle_spells_with_the_defaults)
{
	idle_spell(30000, 100, 1200);
}

/* A one-lane key-hash queue: one consumer per lane, the others stand by, as with more lanes. */
Test(lanes_recovery, a_one_lane_key_hash_queue_gives_a_key_to_one_consumer_at_a_time)
{
	const char *name = tq_name("kh1");
	struct shmq_config c = tq_lanes_config(64, 1, SHMQ_DISPATCH_KEY_HASH);
	shmq_t *p = tq_create(name, &c), *a, *b;
	cr_assert_eq(shmq_open(name, &a), 0);
	cr_assert_eq(shmq_open(name, &b), 0);
	struct shmq_msg m1, m2;
	tq_register_consumer(a);
	tq_register_consumer(b);
	usleep(60 * 1000);
	for (uint32_t v = 0; v < 2; v++)
		cr_assert_eq(shmq_send_routed(p, "k", 1, &v, sizeof(v), 0), 0);
	cr_assert_eq(shmq_recv(a, &m1, 0), 0);
	int r = shmq_recv(b, &m2, 0);
	cr_expect_eq(r, -EAGAIN, "b took the key's 2nd message while a holds its 1st (one-lane key-hash)");
	shmq_close(a);
	shmq_close(b);
	shmq_close(p);
}

static void stop_self(void *arg)
{
	(void)arg;
	raise(SIGSTOP);
}

/* a, a consumer of a 2-lane key-hash queue, is stopped (SIGSTOP, a debugger, a cgroup freezer)
 * inside a take, after it joined; c, the other consumer, must still take up lanes once a has been
 * idle for a lease, and a, continued, must not keep what its stale take got. */
Test(lanes_recovery, a_consumer_stopped_inside_a_take_does_not_stall_the_others)
{
	const char *name = tq_name("khstop");
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	c.lease_ms = 200;
	shmq_t *p = tq_create(name, &c), *cq;
	cr_assert_eq(shmq_open(name, &cq), 0);
	tq_register_consumer(cq);
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	pid_t a = fork();
	cr_assert_neq(a, -1);
	if (a == 0) {
		shmq_t *qa;
		struct shmq_msg m;
		if (shmq_open(name, &qa))
			_exit(3);
		shmq_hook_arm("kh-before-take", stop_self, NULL);
		int r = shmq_recv(qa, &m, 0); /* joins, and stops inside its take */
		(void)!write(fds[1], &r, sizeof(r));
		_exit(0);
	}
	close(fds[1]);
	int st;
	cr_assert_eq(waitpid(a, &st, WUNTRACED), a);
	cr_assert(WIFSTOPPED(st), "a did not stop inside its take");
	for (int i = 0; i < 8; i++) {
		char k[2] = {(char)('a' + i), 0};
		cr_assert_eq(shmq_send_routed(p, k, 1, "hello", 5, 0), 0);
	}
	struct shmq_msg m;
	int r = shmq_recv(cq, &m, 3000);
	cr_expect_eq(r, 0, "c took nothing in 3 s of 8 messages while a is stopped: %s", shmq_strerror(r));
	kill(a, SIGCONT);
	int ra = 1;
	cr_expect_eq(read(fds[0], &ra, sizeof(ra)), (ssize_t)sizeof(ra));
	cr_expect_eq(ra, -EAGAIN, "a, continued, kept what its stale take got while c serves the lanes");
	cr_assert_eq(waitpid(a, &st, 0), a);
	close(fds[0]);
	/* nothing lost, and a given-back message counts no delivery */
	int got = 0;
	for (int i = 0; i < 8 && r == 0; i++, got++) {
		cr_expect_eq(m.deliveries, 1, "a message came at delivery %u", m.deliveries);
		cr_assert_eq(shmq_ack(cq, &m), 0);
		r = shmq_recv(cq, &m, 1000);
	}
	cr_expect_eq(got, 8, "c got %d of the 8 messages", got);
	cr_expect_eq(tq_stats(cq).redelivered, 1, "a's stale take gave its message back");
	shmq_close(cq);
	shmq_close(p);
}

/* A receiver waits at the prefetch limit; another thread lifts the limit (0: none). set_prefetch
 * even wakes the waiters for this; they must go on and receive. */
Test(lanes_recovery, lifting_the_prefetch_limit_releases_a_waiting_receiver)
{
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 1);
	tq_send_u32(q, 2);
	cr_assert_eq(shmq_set_prefetch(q, 1), 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0); /* at the limit now */
	struct rarg a = {.q = q, .timeout = 2000};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, recv_thread, &a), 0, "pthread_create failed");
	usleep(100 * 1000); /* waiting at the limit */
	double t0 = tq_now_ms();
	cr_assert_eq(shmq_set_prefetch(q, 0), 0);
	pthread_join(t, NULL);
	cr_expect_eq(a.r, 0, "the waiter stayed at a limit that no longer exists (r=%d after %.0f ms)", a.r,
		     a.at_ms - t0);
	/* a receiver that returned before the lift never waited: the limit was not applied */
	cr_expect_geq(a.at_ms, t0, "the receiver returned %.0f ms before the limit was lifted", t0 - a.at_ms);
	shmq_close(q);
}

/* dlq_max is per queue (default capacity / 4) but a lane holds capacity / lanes slots: with 4+
 * lanes one key's rejected (poison) messages could fill its whole lane with dead letters, and
 * key-hash sends to that lane (strict: they do not move on) would wait forever. */
Test(lanes_recovery, a_poison_keys_dead_letters_do_not_block_its_lane)
{
	struct shmq_config c = tq_lanes_config(64, 4, SHMQ_DISPATCH_KEY_HASH);
	shmq_t *q = tq_mkq(&c);
	struct shmq_msg m;
	for (uint32_t v = 0; v < 16; v++) {
		cr_assert_eq(shmq_send_routed(q, "poison", 6, &v, sizeof(v), 0), 0);
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_assert_eq(shmq_reject(q, &m), 0);
	}
	struct shmq_stats s = tq_stats(q);
	uint32_t v = 99;
	int r = shmq_send_routed(q, "poison", 6, &v, sizeof(v), 500);
	cr_expect_eq(r, 0, "a send to the lane of a key whose %llu messages were dead-lettered: %d",
		     (unsigned long long)s.dead, r);
	shmq_close(q);
}

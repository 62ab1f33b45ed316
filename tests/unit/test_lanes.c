/* SPDX-License-Identifier: MIT */
/*
 * Lanes and load balancing: each dispatch policy's shares, ids and order across lanes, the
 * assignment of lanes to consumers through the registry, stealing from a dead consumer's lane
 * (and, on a key-hash queue, reassigning it whole instead), and the per-handle prefetch limit.
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
#include "shmq_inspect.h"

TestSuite(lanes, .fini = tq_cleanup);

/* A snapshot of the queue called name (through a read-only view). */
static struct shmq_snapshot snap(const char *name)
{
	shmq_view_t *v;
	struct shmq_snapshot s;
	cr_assert_eq(shmq_view_open(name, &v), 0);
	cr_assert_geq(shmq_view_snapshot(v, &s, NULL, 0), 0);
	shmq_view_close(v);
	return s;
}

static shmq_t *open_q(const char *name)
{
	shmq_t *q;
	cr_assert_eq(shmq_open(name, &q), 0);
	return q;
}

/* A new handle on name, registered as a consumer (in the order of the calls: ranks follow record
 * indexes, and records are handed out in order). */
static shmq_t *consumer_q(const char *name)
{
	shmq_t *q = open_q(name);
	tq_register_consumer(q);
	return q;
}

/* The lane a received message came from, from its slot (lane l owns a contiguous range). */
static uint32_t lane_of(const struct shmq_msg *m, uint32_t capacity, uint32_t lanes)
{
	return m->slot / (capacity / lanes);
}

static void send_n(shmq_t *q, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		tq_send_u32(q, i);
}

Test(lanes, lane_counts_and_capacities_that_do_not_split_into_power_of_two_rings_are_rejected)
{
	struct shmq_config c = tq_lanes_config(64, 17, 0);
	cr_expect_eq(shmq_config_validate(&c), -EINVAL, "more than SHMQ_LANES_MAX lanes");
	c = tq_lanes_config(64, 3, 0);
	cr_expect_eq(shmq_config_validate(&c), -EINVAL, "64 slots are not 3 equal lanes");
	c = tq_lanes_config(18, 3, 0);
	cr_expect_eq(shmq_config_validate(&c), -EINVAL, "3 lanes of 6 slots: not a power of two");
	c = tq_lanes_config(12, 3, 0);
	cr_expect_eq(shmq_config_validate(&c), 0, "3 lanes of 4 slots");
	c = tq_lanes_config(64, 4, 9);
	cr_expect_eq(shmq_config_validate(&c), -EINVAL, "unknown dispatch policy");
	c = tq_lanes_config(64, 2, SHMQ_DISPATCH_WEIGHTED);
	c.weights[2] = 1;
	cr_expect_eq(shmq_config_validate(&c), -EINVAL, "a weight for a lane the queue does not have");
	c.weights[2] = 0;
	c.weights[0] = SHMQ_WEIGHT_MAX + 1;
	cr_expect_eq(shmq_config_validate(&c), -EINVAL, "a weight above the maximum");
	c = tq_lanes_config(64, 0, 0);
	cr_expect_eq(shmq_config_validate(&c), 0, "0 lanes reads as one");
}

Test(lanes, a_queue_of_three_lanes_with_the_default_dedup_table_opens)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(96, 3, SHMQ_DISPATCH_ROUND_ROBIN);
	shmq_t *q = tq_create(name, &c), *o = open_q(name);
	struct shmq_stats st = tq_stats(o);
	cr_expect_eq(st.config.dedup_entries, 256, "2 x 96 rounded up to a power of two");
	cr_expect_eq(shmq_send_keyed(o, "k", 1, "x", 1, 0, NULL), 0);
	shmq_close(o);
	shmq_close(q);
}

Test(lanes, ids_are_unique_across_lanes_and_each_lane_delivers_in_send_order)
{
	struct shmq_config c = tq_lanes_config(192, 3, SHMQ_DISPATCH_ROUND_ROBIN);
	shmq_t *q = tq_mkq(&c);
	send_n(q, 96);
	uint64_t seen[96];
	uint32_t last[3] = {0, 0, 0};
	int any[3] = {0, 0, 0};
	for (int i = 0; i < 96; i++) {
		struct shmq_msg m;
		cr_assert_eq(shmq_recv(q, &m, 0), 0, "message %d", i);
		uint32_t v, l = lane_of(&m, 192, 3);
		memcpy(&v, m.data, sizeof(v));
		cr_expect_eq(m.id % 3, l, "id %llu names lane %u", (unsigned long long)m.id, l);
		for (int j = 0; j < i; j++)
			cr_expect_neq(seen[j], m.id, "id %llu delivered twice", (unsigned long long)m.id);
		seen[i] = m.id;
		cr_expect(!any[l] || v > last[l], "lane %u delivered %u after %u", l, v, last[l]);
		any[l] = 1;
		last[l] = v;
		cr_assert_eq(shmq_ack(q, &m), 0);
	}
	shmq_close(q);
}

Test(lanes, round_robin_gives_every_lane_the_same_share_in_runs)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(1024, 4, SHMQ_DISPATCH_ROUND_ROBIN);
	shmq_t *q = tq_create(name, &c);
	send_n(q, 16); /* one run: one lane */
	struct shmq_snapshot s = snap(name);
	int full = -1;
	for (int l = 0; l < 4; l++)
		if (s.lane[l].ready)
			full = full < 0 ? l : 99;
	cr_expect(full >= 0 && full < 4 && s.lane[full].ready == 16, "the first 16 sends went to one lane");
	send_n(q, 624); /* 40 runs in all */
	s = snap(name);
	cr_assert_eq(s.lanes, 4);
	for (int l = 0; l < 4; l++)
		cr_expect_eq(s.lane[l].ready, 160, "lane %d holds %llu", l,
			     (unsigned long long)s.lane[l].ready);
	shmq_close(q);
}

Test(lanes, one_shot_senders_do_not_all_start_at_the_same_lane)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(1024, 4, SHMQ_DISPATCH_ROUND_ROBIN);
	shmq_t *q = tq_create(name, &c);
	for (int i = 0; i < 64; i++) { /* a fresh handle per message, as `shmq send` has */
		shmq_t *h = open_q(name);
		tq_send_u32(h, (uint32_t)i);
		shmq_close(h);
	}
	struct shmq_snapshot s = snap(name);
	for (int l = 0; l < 4; l++) /* 16 expected; fewer than 3 in a lane is vanishingly rare */
		cr_expect_gt(s.lane[l].ready, 2, "lane %d got %llu of 64", l,
			     (unsigned long long)s.lane[l].ready);
	shmq_close(q);
}

Test(lanes, weighted_dispatch_follows_the_weights_exactly)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(2048, 4, SHMQ_DISPATCH_WEIGHTED);
	c.weights[0] = 4;
	c.weights[1] = 2;
	c.weights[2] = 1;
	c.weights[3] = 1;
	shmq_t *q = tq_create(name, &c);
	send_n(q, 800);
	struct shmq_snapshot s = snap(name);
	uint64_t want[4] = {400, 200, 100, 100};
	for (int l = 0; l < 4; l++) {
		cr_expect_eq(s.lane[l].ready, want[l], "lane %d holds %llu, want %llu", l,
			     (unsigned long long)s.lane[l].ready, (unsigned long long)want[l]);
		cr_expect_eq(s.lane[l].weight, c.weights[l]);
	}
	shmq_close(q);
}

Test(lanes, random_dispatch_spreads_messages_over_every_lane)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(8192, 4, SHMQ_DISPATCH_RANDOM);
	shmq_t *q = tq_create(name, &c);
	send_n(q, 4000);
	struct shmq_snapshot s = snap(name);
	for (int l = 0; l < 4; l++) /* 1000 expected, standard deviation ~27: 7 of them apart */
		cr_expect(s.lane[l].ready >= 800 && s.lane[l].ready <= 1200, "lane %d holds %llu of 4000", l,
			  (unsigned long long)s.lane[l].ready);
	shmq_close(q);
}

Test(lanes, key_hash_sends_every_message_of_a_key_to_one_lane_in_order)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(1024, 4, SHMQ_DISPATCH_KEY_HASH);
	shmq_t *q = tq_create(name, &c);
	char key[16];
	for (uint32_t i = 0; i < 80; i++) {
		snprintf(key, sizeof(key), "acct-%u", i % 8);
		uint32_t v = i;
		cr_assert_eq(shmq_send_routed(q, key, strlen(key), &v, sizeof(v), 0), 0);
	}
	int lane_of_key[8], next[8];
	for (int k = 0; k < 8; k++) {
		lane_of_key[k] = -1;
		next[k] = k;
	}
	uint32_t used = 0;
	for (int i = 0; i < 80; i++) {
		struct shmq_msg m;
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		uint32_t v;
		memcpy(&v, m.data, sizeof(v));
		int k = (int)(v % 8), l = (int)lane_of(&m, 1024, 4);
		if (lane_of_key[k] < 0)
			lane_of_key[k] = l;
		cr_expect_eq(lane_of_key[k], l, "key %d went to lanes %d and %d", k, lane_of_key[k], l);
		cr_expect_eq((int)v, next[k], "key %d: got message %u, want %d", k, v, next[k]);
		next[k] = (int)v + 8;
		used |= 1u << l;
		shmq_ack(q, &m);
	}
	cr_expect_gt(__builtin_popcount(used), 1, "8 keys all hashed to one of 4 lanes");
	shmq_close(q);
}

Test(lanes, key_hash_routes_a_keyed_send_by_its_idempotency_key)
{
	struct shmq_config c = tq_lanes_config(64, 4, SHMQ_DISPATCH_KEY_HASH);
	shmq_t *q = tq_mkq(&c);
	cr_assert_eq(shmq_send_keyed(q, "k-1", 3, "a", 1, 0, NULL), 0);
	cr_assert_eq(shmq_send_routed(q, "k-1", 3, "b", 1, 0), 0);
	struct shmq_msg m1, m2;
	cr_assert_eq(shmq_recv(q, &m1, 0), 0);
	uint32_t l1 = lane_of(&m1, 64, 4);
	cr_assert_eq(shmq_ack(q, &m1), 0);
	cr_assert_eq(shmq_recv(q, &m2, 0), 0);
	cr_expect_eq(l1, lane_of(&m2, 64, 4), "one key, one lane");
	shmq_close(q);
}

Test(lanes, a_key_hash_lane_gives_its_next_message_only_once_the_previous_is_settled)
{
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	c.lease_ms = 30;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_mkq(&c);
	for (uint32_t v = 0; v < 3; v++)
		cr_assert_eq(shmq_send_routed(q, "k", 1, &v, sizeof(v), 0), 0);
	struct shmq_msg m;
	uint32_t got;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN, "the key's next message waits for the first to settle");
	cr_assert_eq(shmq_ack(q, &m), 0);
	cr_assert_eq(shmq_recv(q, &m, 0), 0, "settled: the next one comes");
	memcpy(&got, m.data, sizeof(got));
	cr_expect_eq(got, 1);
	/* a lease lost (expired, requeued) ends the hold too, without the handle settling it */
	usleep(60 * 1000);
	cr_assert_eq(shmq_reclaim(q, NULL), 1);
	cr_expect_eq(shmq_recv(q, &m, 0), 0, "a lost lease does not hold the lane");
	shmq_close(q);
}

Test(lanes, least_loaded_sends_to_the_lane_a_consumer_just_drained)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_LEAST_LOADED);
	/* two consumers: a (lower record) is assigned lane 0, b lane 1 */
	shmq_t *p = tq_create(name, &c), *a = consumer_q(name), *b = consumer_q(name);
	struct shmq_msg m;
	send_n(p, 8);
	struct shmq_snapshot s = snap(name);
	cr_expect_eq(s.lane[0].ready, 4);
	cr_expect_eq(s.lane[1].ready, 4);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(shmq_recv(b, &m, 0), 0);
		cr_expect_eq(lane_of(&m, 64, 2), 1, "b serves its own lane first");
		shmq_ack(b, &m);
	}
	send_n(p, 4);
	s = snap(name);
	cr_expect_eq(s.lane[0].ready, 4, "the longer lane got nothing more");
	cr_expect_eq(s.lane[1].ready, 4, "the drained lane got all 4");
	shmq_close(a);
	shmq_close(b);
	shmq_close(p);
}

Test(lanes, consumers_are_assigned_disjoint_lanes_through_the_registry)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 4, SHMQ_DISPATCH_ROUND_ROBIN);
	shmq_t *p = tq_create(name, &c), *a = consumer_q(name), *b = consumer_q(name);
	struct shmq_msg m;
	usleep(60 * 1000); /* a registered alone: past its next assignment refresh, it knows of b */
	send_n(p, 64);	   /* 4 runs of 16: one per lane */
	struct shmq_snapshot s = snap(name);
	cr_expect_eq(s.consumers, 2);
	for (uint32_t l = 0; l < 4; l++)
		cr_expect_eq(s.lane[l].consumer_pid, getpid(), "lane %u has a consumer", l);
	cr_expect_neq(s.lane[0].consumer, s.lane[1].consumer, "two consumers, two owners");
	cr_expect_eq(s.lane[0].consumer, s.lane[2].consumer, "consumer r of 2 has lanes r and r + 2");
	/* each takes its own lanes' messages; nobody steals while their own lanes have work */
	uint32_t got_a = 0, got_b = 0;
	for (int i = 0; i < 32; i++) {
		cr_assert_eq(shmq_recv(a, &m, 0), 0);
		got_a |= 1u << lane_of(&m, 64, 4);
		cr_assert_eq(shmq_recv(b, &m, 0), 0);
		got_b |= 1u << lane_of(&m, 64, 4);
	}
	cr_expect_eq(got_a & got_b, 0, "a took lanes %#x, b took lanes %#x", got_a, got_b);
	cr_expect_eq(got_a | got_b, 0xf);
	cr_expect_eq(tq_stats(p).stolen, 0);
	shmq_close(a);
	shmq_close(b);
	shmq_close(p);
}

static void kill_child(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* Registers q as a consumer, starts a consumer child, sends 32 and receives them all with q. */
static void drain_beside(const char *name, shmq_t *q, int kill_it)
{
	struct shmq_msg m;
	tq_register_consumer(q);	       /* lane 0 */
	pid_t child = tq_consumer_child(name); /* lane 1 */
	usleep(60 * 1000);		       /* past our assignment refresh: we know of it */
	if (kill_it)
		kill_child(child);
	send_n(q, 32); /* a run of 16 per lane */
	for (int i = 0; i < 32; i++) {
		cr_assert_eq(shmq_recv(q, &m, 1000), 0, "message %d", i);
		shmq_ack(q, &m);
	}
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN);
	if (!kill_it)
		kill_child(child);
}

Test(lanes, an_idle_consumer_steals_from_the_lane_of_a_consumer_that_stopped_polling)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_ROUND_ROBIN);
	shmq_t *q = tq_create(name, &c);
	drain_beside(name, q, 0);
	cr_expect_eq(tq_stats(q).stolen, 16, "lane 1's 16 came from a lane that was not ours");
	shmq_close(q);
}

Test(lanes, the_lane_of_a_dead_consumer_is_drained_by_the_survivor)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_ROUND_ROBIN);
	c.reclaim_interval_ms = 0; /* the dead record stays: the probe alone must tell */
	shmq_t *q = tq_create(name, &c);
	drain_beside(name, q, 1);
	shmq_close(q);
}

Test(lanes, key_hash_lanes_are_not_stolen_from_a_live_consumer_and_move_whole_when_it_dies)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	shmq_t *q = tq_create(name, &c);
	struct shmq_msg m;
	tq_register_consumer(q);	       /* first: lane 0 */
	pid_t child = tq_consumer_child(name); /* lane 1 */
	usleep(60 * 1000);		       /* past our assignment refresh */
	/* find a key of lane 1 (the child's): lane = hash % 2 */
	char key[16];
	for (int i = 0;; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		uint32_t v = 0;
		cr_assert_eq(shmq_send_routed(q, key, strlen(key), &v, sizeof(v), 0), 0);
		struct shmq_snapshot s = snap(name);
		if (s.lane[1].prod_tail == 1)
			break;
		cr_assert_eq(shmq_recv(q, &m, 0), 0, "lane 0's message is ours");
		shmq_ack(q, &m);
	}
	for (uint32_t v = 1; v < 5; v++)
		cr_assert_eq(shmq_send_routed(q, key, strlen(key), &v, sizeof(v), 0), 0);
	cr_expect_eq(shmq_recv(q, &m, 50), -EAGAIN, "a live consumer's key-hash lane is not stolen");
	cr_expect_eq(snap(name).lane[1].ready, 5);
	kill_child(child);
	/* within an assignment refresh the dead consumer's lane is ours, whole and in order */
	for (uint32_t v = 0; v < 5; v++) {
		cr_assert_eq(shmq_recv(q, &m, 2000), 0, "message %u after the takeover", v);
		uint32_t got;
		memcpy(&got, m.data, sizeof(got));
		cr_expect_eq(got, v);
		shmq_ack(q, &m);
	}
	shmq_close(q);
}

Test(lanes, key_hash_consumers_beyond_the_lane_count_stand_by)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	shmq_t *p = tq_create(name, &c), *a = consumer_q(name), *b = consumer_q(name), *x = consumer_q(name);
	struct shmq_msg m;
	send_n(p, 6); /* no key: round robin over both lanes */
	cr_expect_eq(shmq_recv(x, &m, 0), -EAGAIN, "the third consumer of two lanes stands by");
	cr_expect_eq(snap(name).consumers, 3);
	shmq_close(a);
	shmq_close(b);
	shmq_close(x);
	shmq_close(p);
}

Test(lanes, many_threads_on_four_lanes_lose_and_repeat_nothing)
{
	enum {
		PER = 5000,
		PRODUCERS = 2,
		CONSUMERS = 2
	};
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(256, 4, SHMQ_DISPATCH_LEAST_LOADED);
	shmq_t *q = tq_create(name, &c);
	static _Atomic unsigned char seen[PRODUCERS * PER];
	memset((void *)seen, 0, sizeof(seen));
	pid_t kids[PRODUCERS + CONSUMERS];
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	for (int k = 0; k < PRODUCERS + CONSUMERS; k++) {
		kids[k] = fork();
		if (kids[k])
			continue;
		shmq_t *h;
		if (shmq_open(name, &h))
			_exit(2);
		if (k < PRODUCERS) {
			for (uint32_t i = 0; i < PER; i++) {
				uint32_t v = (uint32_t)k * PER + i;
				if (shmq_send(h, &v, sizeof(v), 5000))
					_exit(3);
			}
		} else {
			struct shmq_msg m;
			while (shmq_recv(h, &m, 300) == 0) {
				uint32_t v;
				memcpy(&v, m.data, sizeof(v));
				(void)!write(fds[1], &v, sizeof(v));
				shmq_ack(h, &m);
			}
		}
		shmq_close(h);
		_exit(0);
	}
	close(fds[1]);
	uint32_t v;
	unsigned n = 0;
	while (read(fds[0], &v, sizeof(v)) == sizeof(v)) {
		cr_assert_lt(v, PRODUCERS * PER);
		cr_expect_eq(seen[v], 0, "message %u delivered twice", v);
		seen[v] = 1;
		n++;
	}
	for (int k = 0; k < PRODUCERS + CONSUMERS; k++) {
		int st;
		waitpid(kids[k], &st, 0);
		cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %#x", k, st);
	}
	cr_expect_eq(n, PRODUCERS * PER, "received %u of %u", n, PRODUCERS * PER);
	shmq_close(q);
}

Test(lanes, prefetch_caps_the_messages_a_handle_holds)
{
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_mkq(&c);
	send_n(q, 5);
	cr_assert_eq(shmq_set_prefetch(q, 2), 0);
	struct shmq_msg m[5];
	cr_assert_eq(shmq_recv(q, &m[0], 0), 0);
	cr_assert_eq(shmq_recv(q, &m[1], 0), 0);
	cr_expect_eq(shmq_recv(q, &m[2], 0), -EAGAIN, "a third lease is over the limit");
	cr_expect_eq(tq_stats(q).prefetch_waits, 1);
	cr_assert_eq(shmq_ack(q, &m[0]), 0);
	cr_expect_eq(shmq_recv(q, &m[2], 0), 0, "an ack makes room");
	cr_assert_eq(shmq_nack(q, &m[1], 0), 0);
	cr_assert_eq(shmq_ack(q, &m[2]), 0);
	int n = shmq_recv_batch(q, m, 5, 0);
	cr_expect_eq(n, 2, "a batch takes only what the limit leaves: got %d", n);
	shmq_close(q);
}

Test(lanes, prefetch_recounts_leases_the_handle_lost)
{
	struct shmq_config c = tq_config(64);
	c.lease_ms = 20;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_mkq(&c);
	send_n(q, 2);
	cr_assert_eq(shmq_set_prefetch(q, 1), 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	usleep(40 * 1000);
	cr_assert_eq(shmq_reclaim(q, NULL), 1, "the lease expired and was requeued");
	/* never settled, yet no longer held: the limit must not count it */
	cr_expect_eq(shmq_recv(q, &m, 1000), 0);
	shmq_close(q);
}

struct limit_change {
	shmq_t *q;
	uint32_t limit;
};

static void set_limit(void *arg)
{
	struct limit_change *lc = arg;
	shmq_set_prefetch(lc->q, lc->limit);
}

/* A limit of 1 set at `point` inside a receive (with `before` set before it, 0: none): the lease
 * that receive takes counts, so the handle holds one message and takes no second. */
static void limit_set_inside_a_receive(const char *point, uint32_t before)
{
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_mkq(&c);
	send_n(q, 3);
	if (before)
		cr_assert_eq(shmq_set_prefetch(q, before), 0);
	struct limit_change lc = {q, 1};
	shmq_hook_arm(point, set_limit, &lc);
	struct shmq_msg m[2];
	cr_assert_eq(shmq_recv(q, &m[0], 0), 0);
	cr_expect_eq(shmq_recv(q, &m[1], 0), -EAGAIN, "a second lease is over the limit of 1");
	cr_assert_eq(shmq_ack(q, &m[0]), 0);
	cr_expect_eq(shmq_recv(q, &m[1], 0), 0, "the ack makes room");
	shmq_close(q);
}

Test(lanes, a_prefetch_limit_set_while_a_receive_runs_counts_its_lease)
{
	limit_set_inside_a_receive("recv-unlimited", 0);
}

Test(lanes, a_prefetch_limit_changed_while_a_receive_runs_counts_its_lease)
{
	limit_set_inside_a_receive("recv-units-taken", 4);
}

struct held {
	shmq_t *q;
	struct shmq_msg m;
	double ack_ms; /* just before the ack */
};

static void *ack_later(void *arg)
{
	struct held *h = arg;
	usleep(50 * 1000);
	h->ack_ms = tq_now_ms();
	shmq_ack(h->q, &h->m);
	return NULL;
}

Test(lanes, a_receiver_at_the_prefetch_limit_wakes_when_another_thread_acks)
{
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_mkq(&c);
	send_n(q, 2);
	cr_assert_eq(shmq_set_prefetch(q, 1), 0);
	struct held h = {.q = q};
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &h.m, 0), 0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, ack_later, &h), 0, "pthread_create failed");
	cr_expect_eq(shmq_recv(q, &m, 5000), 0, "woken by the ack, within the timeout");
	double got_ms = tq_now_ms();
	pthread_join(t, NULL);
	/* a receive that returns before the ack never waited: the limit was not applied */
	cr_expect_geq(got_ms, h.ack_ms, "the receive returned before the ack, without waiting");
	shmq_close(q);
}

/* The key hash places keys (key-hash lanes, dedup groups and preferred entries): keys of every
 * length up to SHMQ_KEY_MAX, counters in their first bytes and text alike, spread evenly over
 * its low bits and over the bits above 32, and keys differing in one byte anywhere differ in
 * hash. (A key hashed bytes shorter than a word and the tail of longer ones too.) */
Test(lanes, the_key_hash_spreads_keys_of_every_length_evenly)
{
	enum {
		KEYS = 3200,
		BUCKETS = 16
	};
	for (unsigned len = 1; len <= SHMQ_KEY_MAX; len++) {
		unsigned low[BUCKETS] = {0}, high[BUCKETS] = {0};
		unsigned keys = len == 1 ? 256 : KEYS;
		for (unsigned i = 0; i < keys; i++) {
			unsigned char key[SHMQ_KEY_MAX];
			memset(key, 'k', sizeof(key));
			memcpy(key, &i, len < sizeof(i) ? len : sizeof(i));
			uint64_t h = shmq_hash(key, len);
			low[h % BUCKETS]++;
			high[(h >> 32) % BUCKETS]++;
		}
		for (unsigned b = 0; b < BUCKETS; b++) {
			/* mean keys / 16; a fair hash stays well within half of it either way */
			cr_expect(low[b] * BUCKETS * 2 > keys && low[b] * BUCKETS < 2 * keys,
				  "length %u: %u keys in low bucket %u of %u", len, low[b], b, BUCKETS);
			cr_expect(high[b] * BUCKETS * 2 > keys && high[b] * BUCKETS < 2 * keys,
				  "length %u: %u keys in high bucket %u of %u", len, high[b], b, BUCKETS);
		}
		unsigned char a[SHMQ_KEY_MAX], c[SHMQ_KEY_MAX];
		memset(a, 'x', sizeof(a));
		for (unsigned at = 0; at < len; at++) {
			memcpy(c, a, sizeof(c));
			c[at] ^= 0x01;
			cr_expect_neq(shmq_hash(a, len), shmq_hash(c, len), "length %u: byte %u ignored", len,
				      at);
		}
	}
}

/* A routing key that key-hash dispatch sends to lane `lane` of `lanes`. */
static void key_of_lane(uint32_t lane, uint32_t lanes, char *key, size_t size)
{
	for (int i = 0;; i++) {
		snprintf(key, size, "key-%d", i);
		if (shmq_hash(key, strlen(key)) % lanes == lane)
			return;
	}
}

/* Sends values from..to-1 routed by key (each 4 bytes). */
static void send_routed_range(shmq_t *q, const char *key, uint32_t from, uint32_t to)
{
	for (uint32_t v = from; v < to; v++)
		cr_assert_eq(shmq_send_routed(q, key, strlen(key), &v, sizeof(v), 0), 0);
}

static uint32_t value_of(const struct shmq_msg *m)
{
	uint32_t v;
	memcpy(&v, m->data, sizeof(v));
	return v;
}

Test(lanes, a_consumer_that_loses_a_key_hash_lane_takes_none_of_it_once_the_new_owner_has)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	c.reclaim_interval_ms = 0;
	shmq_t *a = tq_create(name, &c);
	tq_register_consumer(a); /* alone: both lanes are a's */
	char key[16];
	key_of_lane(1, 2, key, sizeof(key));
	send_routed_range(a, key, 0, 2);
	/* b joins: lane 1 is b's from now on, and b takes the key's first message */
	shmq_t *b = open_q(name);
	struct shmq_msg mb, ma;
	cr_assert_eq(shmq_recv(b, &mb, 0), 0);
	cr_expect_eq(value_of(&mb), 0);
	/* a computed its lanes a moment ago, before b came */
	int r = shmq_recv(a, &ma, 0);
	cr_expect_eq(r, -EAGAIN, "a took message %u of the key while b holds message 0",
		     r == 0 ? value_of(&ma) : 99);
	cr_assert_eq(shmq_ack(b, &mb), 0);
	cr_assert_eq(shmq_recv(b, &mb, 1000), 0, "the new owner gets the rest");
	cr_expect_eq(value_of(&mb), 1);
	shmq_close(b);
	shmq_close(a);
}

struct join_race {
	const char *name;
	shmq_t *b;
	struct shmq_msg m;
	int got;
};

/* While a is about to take a first delivery with the lanes it computed alone: b joins, and takes
 * what its new lane gives it at once. */
static void b_joins(void *arg)
{
	struct join_race *r = arg;
	cr_assert_eq(shmq_open(r->name, &r->b), 0);
	r->got = shmq_recv(r->b, &r->m, 0) == 0;
}

Test(lanes, a_consumer_joining_while_another_takes_from_its_new_lane_waits_for_that_take)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(64, 2, SHMQ_DISPATCH_KEY_HASH);
	c.reclaim_interval_ms = 0;
	shmq_t *a = tq_create(name, &c);
	tq_register_consumer(a);
	char key[16];
	key_of_lane(1, 2, key, sizeof(key));
	send_routed_range(a, key, 0, 2);
	struct join_race r = {.name = name};
	shmq_hook_arm("kh-before-take", b_joins, &r);
	struct shmq_msg ma;
	int got_a = shmq_recv(a, &ma, 0) == 0;
	cr_assert(r.b, "b did not join in between");
	cr_expect(!(got_a && r.got), "messages %u (a) and %u (b) of one key in two hands at once",
		  value_of(&ma), value_of(&r.m));
	cr_expect(got_a || r.got, "nobody got the key's first message");
	if (got_a) {
		cr_expect_eq(value_of(&ma), 0);
		cr_expect_eq(shmq_recv(r.b, &r.m, 0), -EAGAIN, "b waits for a's message of lane 1");
		cr_assert_eq(shmq_ack(a, &ma), 0);
		cr_assert_eq(shmq_recv(r.b, &r.m, 1000), 0, "a settled: b takes lane 1 up");
		cr_expect_eq(value_of(&r.m), 1);
	}
	shmq_close(r.b);
	shmq_close(a);
}

/* Three consumers of three lanes, ranked a, b, c; the key's lane 2 is c's. a dies: the survivors'
 * ranks shift (b now has lanes 0 and 2, c lane 1) and nobody announces it. */
Test(lanes, a_consumers_death_never_leaves_one_key_in_two_survivors_hands)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(192, 3, SHMQ_DISPATCH_KEY_HASH);
	c.reclaim_interval_ms = 0;
	shmq_t *p = tq_create(name, &c);
	pid_t a = tq_consumer_child(name);
	shmq_t *b = consumer_q(name), *cq = consumer_q(name);
	char key[16];
	key_of_lane(2, 3, key, sizeof(key));
	send_routed_range(p, key, 0, 3);
	tq_sleep_ms(ASSIGN_REFRESH_MS + 10); /* b's view is due for a refresh, c's is fresh below */
	struct shmq_msg m1, m2, m3;
	cr_assert_eq(shmq_recv(cq, &m1, 0), 0, "c serves the key's lane");
	cr_expect_eq(value_of(&m1), 0);
	cr_assert_eq(shmq_ack(cq, &m1), 0);
	cr_assert_eq(kill(a, SIGKILL), 0);
	cr_assert_eq(waitpid(a, NULL, 0), a);
	int rb = shmq_recv(b, &m2, 0);
	int rc = shmq_recv(cq, &m3, 0);
	cr_expect(!(rb == 0 && rc == 0), "b holds message %u and c took message %u of one key at once",
		  rb ? 99 : value_of(&m2), rc ? 99 : value_of(&m3));
	cr_expect_eq(rb, 0, "b takes the lane up at its refresh");
	if (rb == 0) {
		cr_expect_eq(value_of(&m2), 1);
		cr_assert_eq(shmq_ack(b, &m2), 0);
		int r = shmq_recv(b, &m2, 0);
		cr_expect_eq(r, 0, "b serves the lane from now on");
		if (r == 0)
			cr_expect_eq(value_of(&m2), 2);
	}
	shmq_close(cq);
	shmq_close(b);
	shmq_close(p);
}

/* A consumer waits to take up a lane whose previous consumer holds a lease at the far end of it
 * (the slot after a lap of the ring): its receives meanwhile must not each read the whole lane. */
Test(lanes, a_receiver_waiting_to_take_up_a_lane_does_not_scan_the_whole_lane_at_every_call)
{
	const char *name = tq_name(NULL);
	const uint32_t cap = 4096;
	struct shmq_config c = tq_lanes_config(cap, 1, SHMQ_DISPATCH_KEY_HASH);
	c.reclaim_interval_ms = 0;
	shmq_t *p = tq_create(name, &c);
	shmq_t *y = open_q(name), *x = open_q(name), *w = open_q(name);
	struct shmq_msg m;
	for (uint32_t i = 0; i < cap - 8; i++) { /* a lap: the next messages sit at the lane's end */
		tq_send_u32(p, i);
		cr_assert_eq(shmq_recv(w, &m, 0), 0);
		cr_assert_eq(shmq_ack(w, &m), 0);
	}
	shmq_close(w);
	send_routed_range(p, "k", 0, 4);
	struct shmq_msg mx, my;
	cr_assert_eq(shmq_recv(x, &mx, 0), 0, "x, alone, serves the lane");
	/* y joins: the lane is y's (lower record index), once x's lease is settled */
	uint64_t before = shmq_test_kh_scanned();
	for (int i = 0; i < 50; i++)
		cr_assert_eq(shmq_recv(y, &my, 0), -EAGAIN, "y took a message while x holds one of its key");
	uint64_t scanned = shmq_test_kh_scanned() - before;
	cr_expect_leq(scanned, 2 * cap, "50 receives read %llu slot words of a %u-slot lane",
		      (unsigned long long)scanned, cap);
	cr_assert_eq(shmq_ack(x, &mx), 0);
	cr_expect_eq(shmq_recv(y, &my, 0), 0, "x settled: y takes the lane up");
	shmq_close(x);
	shmq_close(y);
	shmq_close(p);
}

struct recount_race {
	shmq_t *q;
	struct shmq_msg m;
	int ret;
	_Atomic int done;
};

static void *recv_slowly(void *arg)
{
	struct recount_race *r = arg;
	r->ret = shmq_recv(r->q, &r->m, 5000);
	atomic_store(&r->done, 1);
	return NULL;
}

/* Between a recount's look at the slots and the rest of it: the receive that holds a unit of the
 * allowance gets its message, and is over. */
static void finish_the_other_receive(void *arg)
{
	struct recount_race *r = arg;
	tq_send_u32(r->q, 1);
	tq_send_u32(r->q, 2);
	for (int i = 0; i < 5000 && !atomic_load(&r->done); i++)
		tq_sleep_ms(1);
}

Test(lanes, a_prefetch_recount_racing_a_receive_never_lets_the_handle_past_its_limit)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = 20;
	c.retry_base_ms = 60000; /* the lost lease stays out of the way */
	c.retry_max_ms = 60000;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_mkq(&c);
	cr_assert_eq(shmq_set_prefetch(q, 2), 0);
	struct shmq_msg lost, x, z;
	tq_send_u32(q, 0);
	cr_assert_eq(shmq_recv(q, &lost, 0), 0);
	tq_sleep_ms(40);
	cr_assert_eq(shmq_reclaim(q, NULL), 1, "the lease expired and was requeued");
	/* one unit still counts the lost lease; another thread takes the second and waits */
	struct recount_race r = {.q = q};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, recv_slowly, &r), 0, "pthread_create failed");
	for (int i = 0; i < 5000 && atomic_load(&q->pending) != 1; i++)
		tq_sleep_ms(1);
	cr_assert_eq(atomic_load(&q->pending), 1, "the other receive did not take its unit");
	shmq_hook_arm("prefetch-recount", finish_the_other_receive, &r);
	cr_expect_eq(shmq_recv(q, &x, 1000), 0, "the lost lease's unit is found");
	pthread_join(t, NULL);
	cr_assert_eq(r.ret, 0, "the other receive got a message");
	tq_send_u32(q, 3);
	cr_expect_eq(shmq_recv(q, &z, 0), -EAGAIN, "two leases held: the limit");
	cr_expect_leq(shmq_slots_held(q, 0), 2, "leases held past the limit of 2");
	shmq_close(q);
}

Test(lanes, a_keyed_send_with_a_routing_key_is_ordered_by_the_route_and_deduplicated_by_the_key)
{
	struct shmq_config c = tq_lanes_config(256, 4, SHMQ_DISPATCH_KEY_HASH);
	shmq_t *q = tq_mkq(&c);
	char key[16];
	uint64_t id, first;
	for (uint32_t v = 0; v < 8; v++) { /* 8 distinct idempotency keys, one group */
		snprintf(key, sizeof(key), "order-%u", v);
		cr_assert_eq(shmq_send_keyed_routed(q, "user-7", 6, key, strlen(key), &v, sizeof(v), 0, &id),
			     0);
		if (v == 0)
			first = id;
	}
	cr_expect_eq(shmq_send_keyed_routed(q, "user-7", 6, "order-0", 7, "x", 1, 0, &id), SHMQ_DUPLICATE);
	cr_expect_eq(id, first, "the duplicate names the first message");
	cr_expect_eq(shmq_send_keyed_routed(q, "", 0, "k", 1, "x", 1, 0, NULL), -EINVAL, "an empty route");
	struct shmq_msg m;
	uint32_t lane = 99;
	for (uint32_t v = 0; v < 8; v++) {
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		uint32_t got;
		memcpy(&got, m.data, sizeof(got));
		cr_expect_eq(got, v, "the group's messages come in send order");
		if (lane == 99)
			lane = lane_of(&m, 256, 4);
		cr_expect_eq(lane_of(&m, 256, 4), lane, "one group, one lane, whatever the keys");
		shmq_ack(q, &m);
	}
	shmq_close(q);
}

/* SPDX-License-Identifier: MIT */
/*
 * Counters in a segment are input, not truth: a corrupted ticket counter or skip word must end a
 * receive with -EPROTO within its timeout (never a walk over the gap), and `shmq check` must call
 * it an error. Each test corrupts one field of a real queue through a second mapping; an alarm
 * catches a receive that hangs (the bound only catches a hang, it times nothing).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common.h"
#include "internal.h"
#include "layout.h"
#include "shmq.h"
#include "shmq_inspect.h"

TestSuite(bounds, .fini = tq_cleanup);

#define HANG_ALARM_S 5

struct rw_map {
	unsigned char *base;
	size_t size;
};

/* A second, writable mapping of queue `name`, for corrupting it. */
static struct rw_map map_rw(const char *name)
{
	int fd = shm_open(name, O_RDWR, 0);
	cr_assert_geq(fd, 0, "shm_open(%s): %s", name, strerror(errno));
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	close(fd);
	return (struct rw_map){p, (size_t)st.st_size};
}

static struct shmq_hdr *hdr_of(struct rw_map m) { return (struct shmq_hdr *)m.base; }

static struct shmq_slot *slot_of(struct rw_map m, uint32_t i)
{
	struct shmq_hdr *h = hdr_of(m);
	return (struct shmq_slot *)(m.base + h->slots_off + (uint64_t)i * h->slot_size);
}

static void count_error(void *ctx, int severity, const char *what)
{
	(void)what;
	if (severity == SHMQ_CHECK_ERROR)
		++*(int *)ctx;
}

/* Errors shmq check finds in queue `name`. */
static int check_errors(const char *name)
{
	int errors = 0;
	int r = shmq_check_name(name, count_error, &errors);
	cr_assert_geq(r, 0, "check: %s", shmq_strerror(r));
	return errors;
}

/* A receive on q with timeout_ms must end, with -EPROTO. */
static void expect_recv_eproto(shmq_t *q, int timeout_ms)
{
	struct shmq_msg m;
	alarm(HANG_ALARM_S);
	int r = shmq_recv(q, &m, timeout_ms);
	alarm(0);
	cr_expect_eq(r, -EPROTO, "recv: %s", shmq_strerror(r));
}

Test(bounds, a_consumer_head_flipped_past_the_producer_tail_makes_recv_eproto)
{
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, NULL);
	tq_send_u32(q, 1);
	struct rw_map m = map_rw(name);
	/* byte 4 of lane 0's cons_head: the head jumps 2^39 tickets, past the tail */
	m.base[offsetof(struct shmq_hdr, lane) + offsetof(struct shmq_lane, cons_head) + 4] = 0x80;
	expect_recv_eproto(q, 0);
	expect_recv_eproto(q, 100);
	cr_expect_gt(check_errors(name), 0);
	shmq_close(q);
}

Test(bounds, a_producer_tail_at_2_62_makes_recv_eproto_within_its_timeout)
{
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, NULL);
	struct rw_map m = map_rw(name);
	atomic_store(&hdr_of(m)->lane[0].prod_tail, 1ULL << 62);
	/* timeout 0 on a head slot free for its ticket need not read the tail (the producers'
	 * line): it may say empty, but it must return */
	struct shmq_msg msg;
	alarm(HANG_ALARM_S);
	int r = shmq_recv(q, &msg, 0);
	alarm(0);
	cr_expect(r == -EAGAIN || r == -EPROTO, "recv(0): %s", shmq_strerror(r));
	expect_recv_eproto(q, 100);
	cr_expect_gt(check_errors(name), 0);
	shmq_close(q);
}

Test(bounds, skip_words_at_2_63_make_recv_eproto_not_walk_past_the_tail)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	shmq_t *q = tq_create(name, &c);
	tq_send_u32(q, 1);
	struct rw_map m = map_rw(name);
	for (uint32_t i = 0; i < 8; i++)
		atomic_store(&slot_of(m, i)->skip, 1ULL << 63);
	/* the READY message at the head is still delivered: its word says it is there */
	struct shmq_msg msg;
	cr_assert_eq(shmq_recv(q, &msg, 0), 0);
	cr_assert_eq(shmq_ack(q, &msg), 0);
	expect_recv_eproto(q, 0);
	expect_recv_eproto(q, 100);
	cr_expect_leq(atomic_load(&hdr_of(m)->lane[0].cons_head), atomic_load(&hdr_of(m)->lane[0].prod_tail),
		      "a receive moved the head past the tail");
	cr_expect_gt(check_errors(name), 0);
	shmq_close(q);
}

Test(bounds, a_lane_tail_far_ahead_on_a_4_lane_queue_is_an_error_for_check_and_recv)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_lanes_config(16, 4, SHMQ_DISPATCH_ROUND_ROBIN);
	shmq_t *q = tq_create(name, &c);
	cr_assert_eq(check_errors(name), 0);
	struct rw_map m = map_rw(name);
	atomic_store(&hdr_of(m)->lane[2].prod_tail, 1ULL << 30);
	cr_expect_gt(check_errors(name), 0, "check found a tail 2^30 tickets ahead of its head sound");
	tq_register_consumer(q);
	expect_recv_eproto(q, 100);
	shmq_close(q);
}

Test(bounds, a_ready_message_behind_the_consumer_head_is_an_error_for_check)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	shmq_t *q = tq_create(name, &c);
	tq_send_u32(q, 1);
	tq_send_u32(q, 2);
	cr_assert_eq(check_errors(name), 0);
	struct rw_map m = map_rw(name);
	/* the head passes both messages: no receive looks back, so they can never be delivered */
	atomic_store(&hdr_of(m)->lane[0].cons_head, 2);
	cr_expect_gt(check_errors(name), 0, "check found unreachable READY messages sound");
	shmq_close(q);
}

Test(bounds, sends_on_a_queue_whose_head_passed_its_tail_end_in_eproto_within_a_lap)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(4);
	shmq_t *q = tq_create(name, &c);
	struct rw_map m = map_rw(name);
	atomic_store(&hdr_of(m)->lane[0].cons_head, 1ULL << 39);
	/* a send reads the head only when the window looks full (it keeps a copy): the lap of
	 * messages before that is lost with the head, the one after is told */
	alarm(HANG_ALARM_S);
	int r = 0;
	for (uint32_t v = 0; v <= 4 && r == 0; v++)
		r = shmq_send(q, &v, sizeof(v), 100);
	alarm(0);
	cr_expect_eq(r, -EPROTO, "send: %s", shmq_strerror(r));
	cr_expect_leq(atomic_load(&hdr_of(m)->lane[0].prod_tail), 4, "the sends burnt tickets");
	shmq_close(q);
}

/* ---- the receivers' reclaim pass -------------------------------------------------------------- */

Test(bounds, a_receive_does_a_slice_of_the_reclaim_pass_not_all_of_it)
{
	const char *name = tq_name(NULL);
	/* 4 lanes of 4096 slots: lane 3 starts at slot 12288, in the fourth slice of a pass */
	struct shmq_config c = tq_lanes_config(4 * 4096, 4, SHMQ_DISPATCH_KEY_HASH);
	c.slot_size = 128;
	c.reclaim_interval_ms = 500; /* far longer than the setup: its pass does not start again */
	c.retry_base_ms = 1;
	c.retry_max_ms = 1;
	shmq_t *q = tq_create(name, &c), *holder;
	cr_assert_eq(shmq_open(name, &holder), 0);
	struct shmq_msg m;
	int found = 0;
	for (char k = 'a'; k <= 'z' && !found; k++) {
		cr_assert_eq(shmq_send_routed(holder, &k, 1, "x", 1, 0), 0);
		cr_assert_eq(shmq_recv(holder, &m, 1000), 0);
		found = m.slot >= 3 * 4096;
		if (!found)
			cr_assert_eq(shmq_ack(holder, &m), 0);
	}
	cr_assert(found, "no key of a..z went to lane 3");
	/* the pass the holder's receives opened is over after at most four slices */
	for (int i = 0; i < 4; i++)
		shmq_recv(q, &m, 0);
	shmq_close(holder); /* its lease now has a dead owner */
	tq_sleep_ms(600);
	cr_assert_eq(tq_stats(q).reclaimed_dead_owner, 0);
	/* a new pass: each receive does one slice, the fourth reaches the holder's slot */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(shmq_recv(q, &m, 0), -EAGAIN);
		cr_expect_eq(tq_stats(q).reclaimed_dead_owner, 0, "receive %d did more than its slice",
			     i + 1);
	}
	int r = shmq_recv(q, &m, 0);
	cr_expect_eq(tq_stats(q).reclaimed_dead_owner, 1, "four receives did not cover the pass");
	if (r)
		r = shmq_recv(q, &m, 1000);
	cr_expect_eq(r, 0, "the dead owner's message did not come back");
	shmq_close(q);
}

struct late_start {
	shmq_t *other;
};

/* Another receiver opens the pass and does its first slice, while the starter that loaded the
 * closed position is stalled. */
static void open_and_slice(void *arg)
{
	struct late_start *ls = arg;
	shmq_reclaim_start(ls->other);
	shmq_reclaim_step(ls->other, RECLAIM_SLICE);
}

Test(bounds, a_stalled_reclaim_starter_leaves_the_open_passs_count_alone)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(4 * RECLAIM_SLICE);
	c.slot_size = 128;
	c.reclaim_interval_ms = 0; /* passes only as the test drives them */
	shmq_t *q = tq_create(name, &c);
	struct late_start ls;
	cr_assert_eq(shmq_open(name, &ls.other), 0);
	shmq_hook_arm("reclaim-start-loaded", open_and_slice, &ls);
	shmq_reclaim_start(q);
	int slices = 1;
	while (!shmq_reclaim_step(q, RECLAIM_SLICE) && slices < 8)
		slices++;
	cr_assert_eq(slices, 3, "the pass had 4 slices, the first done by the other receiver");
	uint64_t d = atomic_load(&q->hdr->reclaim_done);
	cr_expect_eq((d >> 8) & RECLAIM_POS_MASK, 4 * RECLAIM_SLICE, "the pass counted %llu slots of %u",
		     (unsigned long long)((d >> 8) & RECLAIM_POS_MASK), 4 * RECLAIM_SLICE);
	cr_expect_eq(tq_stats(q).reclaim_passes, 1, "the pass ended");
	shmq_close(ls.other);
	shmq_close(q);
}

Test(bounds, a_lease_taken_behind_a_sliced_reclaim_pass_is_not_forgotten)
{
	struct shmq_config c = tq_config(2 * RECLAIM_SLICE);
	c.slot_size = 128;
	c.reclaim_interval_ms = 0; /* passes only as the test drives them */
	shmq_t *q = tq_mkq(&c);
	shmq_reclaim_start(q);
	cr_assert_eq(shmq_reclaim_step(q, RECLAIM_SLICE), 0);
	/* slot 0, looked at already by the first slice */
	tq_send_u32(q, 1);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(m.slot, 0);
	cr_assert_eq(shmq_reclaim_step(q, RECLAIM_SLICE), 1);
	cr_expect_neq(atomic_load(&q->hdr->reclaim_held), 0,
		      "the pass's end says nothing is leased: sleepers wake for passes once a second");
	shmq_close(q);
}

/* ---- the look for due redeliveries ----------------------------------------------------------- */

struct due_look {
	shmq_t *q;
	int first; /* the first receive's result */
	int tries; /* receives until the message came */
};

static void *receive_due(void *arg)
{
	struct due_look *d = arg;
	struct shmq_msg m;
	int r = d->first = shmq_recv(d->q, &m, 0);
	for (d->tries = 1; r == -EAGAIN && d->tries < 100; d->tries++)
		r = shmq_recv(d->q, &m, 0);
	if (r == 0)
		shmq_ack(d->q, &m);
	return NULL;
}

Test(bounds, a_receive_looks_at_4096_slots_for_a_due_redelivery_not_all_of_them)
{
	struct shmq_config c = tq_config(4 * 4096);
	c.slot_size = 128;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_mkq(&c);
	struct shmq_msg m;
	/* ticket 4096 lives in slot 4096: the second window of a fresh look */
	for (uint32_t i = 0; i < 4096; i++) {
		tq_send_u32(q, i);
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_assert_eq(shmq_ack(q, &m), 0);
	}
	tq_send_u32(q, 4096);
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(m.slot, 4096);
	cr_assert_eq(shmq_nack(q, &m, 0), 0);
	/* a thread of its own: its look starts at slot 0 */
	struct due_look d = {.q = q};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, receive_due, &d), 0);
	pthread_join(th, NULL);
	cr_expect_eq(d.first, -EAGAIN, "the first receive looked past its 4096 slots");
	cr_expect_eq(d.tries, 2, "the redelivery took %d receives", d.tries);
	shmq_close(q);
}

/* ---- no false alarms -------------------------------------------------------------------------- */

struct traffic {
	shmq_t *q;
	_Atomic int stop;
	int producer;
};

static void *traffic_thread(void *arg)
{
	struct traffic *t = arg;
	struct shmq_msg m;
	for (uint32_t i = 0; !atomic_load(&t->stop); i++) {
		if (t->producer) {
			shmq_send(t->q, &i, sizeof(i), 0);
		} else if (shmq_recv(t->q, &m, 0) == 0) {
			if (i % 7 == 0)
				shmq_nack(t->q, &m, 0); /* redeliveries, slots held out of order */
			else
				shmq_ack(t->q, &m);
		}
	}
	return NULL;
}

static void check_under_traffic(const struct shmq_config *c)
{
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, c);
	struct traffic t[4];
	pthread_t th[4];
	for (int k = 0; k < 4; k++) {
		t[k] = (struct traffic){.q = q, .producer = k < 2};
		cr_assert_eq(pthread_create(&th[k], NULL, traffic_thread, &t[k]), 0);
	}
	int errors = 0;
	for (int round = 0; round < 40; round++) {
		errors += check_errors(name);
		tq_sleep_ms(5);
	}
	for (int k = 0; k < 4; k++) {
		atomic_store(&t[k].stop, 1);
		pthread_join(th[k], NULL);
	}
	cr_expect_eq(errors, 0, "check reported %d errors on a healthy queue under traffic", errors);
	shmq_close(q);
}

Test(bounds, check_of_a_queue_under_traffic_reports_no_errors)
{
	struct shmq_config c = tq_config(16);
	check_under_traffic(&c);
}

Test(bounds, check_of_a_4_lane_queue_under_traffic_reports_no_errors)
{
	struct shmq_config c = tq_lanes_config(16, 4, SHMQ_DISPATCH_ROUND_ROBIN);
	check_under_traffic(&c);
}

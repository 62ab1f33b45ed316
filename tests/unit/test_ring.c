/* SPDX-License-Identifier: MIT */
/*
 * The ring's behaviour through the public API, in one process: send/receive, timeouts, FIFO,
 * leases (ack, nack, extend, expiry), dead-lettering, zero-copy, batches, stats, errors.
 * Waits are checked only from below (never earlier than asked, within the coarse clock's tick)
 * and from above by a generous bound that only catches a hang.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "shmq.h"

TestSuite(ring, .fini = tq_cleanup);

static uint32_t recv_u32(shmq_t *q, struct shmq_msg *m, int timeout_ms)
{
	int r = shmq_recv(q, m, timeout_ms);
	cr_assert_eq(r, 0, "recv: %s", shmq_strerror(r));
	cr_assert_eq(m->len, sizeof(uint32_t));
	uint32_t v;
	memcpy(&v, m->data, sizeof(v));
	return v;
}

/* ---- send and receive ------------------------------------------------------------------------ */

Test(ring, round_trip_preserves_bytes_and_length)
{
	shmq_t *q = tq_mkq(NULL);
	const char text[] = "hello, shared memory";
	cr_assert_eq(shmq_send(q, text, sizeof(text), 0), 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(m.len, sizeof(text));
	cr_expect_eq(memcmp(m.data, text, sizeof(text)), 0);
	cr_expect_eq(m.deliveries, 1);
	cr_expect_gt(m.enqueued_ns, 0);
	cr_expect_eq(shmq_ack(q, &m), 0);
	shmq_close(q);
}

Test(ring, round_trip_of_zero_length_message)
{
	shmq_t *q = tq_mkq(NULL);
	cr_assert_eq(shmq_send(q, NULL, 0, 0), 0);
	cr_assert_eq(shmq_send(q, "ignored", 0, 0), 0);
	struct shmq_msg m;
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_expect_eq(m.len, 0);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	shmq_close(q);
}

/* Fills buf[0, n) with a pattern of its own for message `seed`. */
static void pattern(unsigned char *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (unsigned char)(seed * 31 + i * 7 + 1);
}

/* Every length from 1 to the slot's last byte, in slots of two and three lines: the payload
 * starts in the header's line and crosses into the next ones at every boundary; then the same
 * with keys of several lengths in front of it. Each message goes into a slot that held another. */
Test(ring, messages_of_every_length_up_to_the_slots_last_byte_round_trip_with_and_without_a_key)
{
	unsigned char data[256], key[SHMQ_KEY_MAX];
	uint32_t sizes[] = {128, 192};
	for (unsigned k = 0; k < 2; k++) {
		struct shmq_config c = tq_config(4);
		c.slot_size = sizes[k];
		c.dedup_window_ms = 1;
		shmq_t *q = tq_mkq(&c);
		uint32_t max = shmq_max_payload(q);
		cr_assert_eq(max, sizes[k] - SHMQ_SLOT_HEADER);
		unsigned seq = 0;
		size_t klens[] = {0, 1, 8, 16, 17, SHMQ_KEY_MAX};
		for (unsigned j = 0; j < sizeof(klens) / sizeof(klens[0]); j++) {
			size_t kl = klens[j];
			for (size_t len = kl ? 0 : 1; len + kl <= max; len++) {
				seq++;
				pattern(data, len, seq);
				pattern(key, kl, ~seq);
				memcpy(key, &seq, kl < sizeof(seq) ? kl : sizeof(seq)); /* unique */
				int r = kl ? shmq_send_keyed(q, key, kl, data, len, 0, NULL)
					   : shmq_send(q, data, len, 0);
				cr_assert_eq(r, 0, "send of %zu + %zu bytes: %s", kl, len, shmq_strerror(r));
				struct shmq_msg m;
				cr_assert_eq(shmq_recv(q, &m, 0), 0);
				cr_assert_eq(m.len, len, "slot %u: key %zu, length %zu", sizes[k], kl, len);
				cr_assert_eq(m.key_len, kl);
				cr_assert_eq(memcmp(m.data, data, len), 0, "slot %u: key %zu, length %zu",
					     sizes[k], kl, len);
				if (kl) {
					cr_assert_eq(memcmp(m.key, key, kl), 0);
					cr_assert_eq((const unsigned char *)m.data,
						     (const unsigned char *)m.key + kl);
				}
				cr_assert_eq(shmq_ack(q, &m), 0);
			}
			size_t over = max - kl + 1; /* one byte past the slot's end */
			cr_expect_eq(kl ? shmq_send_keyed(q, key, kl, data, over, 0, NULL)
					: shmq_send(q, data, over, 0),
				     -EMSGSIZE, "key %zu, length %zu", kl, over);
		}
		shmq_close(q);
	}
}

/* The payload follows the header in the slot's first line: a message of 16 bytes is one line
 * (slots start line-aligned in a page-aligned mapping). */
Test(ring, a_16_byte_message_shares_its_slots_first_line_with_the_header)
{
	shmq_t *q = tq_mkq(NULL);
	unsigned char data[17];
	pattern(data, sizeof(data), 3);
	for (size_t len = 16; len <= 17; len++) {
		cr_assert_eq(shmq_send(q, data, len, 0), 0);
		struct shmq_msg m;
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		uintptr_t at = (uintptr_t)m.data;
		cr_expect_eq(at % 64, SHMQ_SLOT_HEADER, "the payload starts at byte %u of its line",
			     (unsigned)(at % 64));
		cr_expect_eq(at % 8, 0, "the payload is 8-byte aligned");
		cr_expect_eq((at + len - 1) / 64 == at / 64, len <= 64 - SHMQ_SLOT_HEADER,
			     "%zu bytes end in the header's line iff they fit in it", len);
		cr_assert_eq(shmq_ack(q, &m), 0);
	}
	shmq_close(q);
}

Test(ring, round_trip_of_max_payload_message)
{
	struct shmq_config c = tq_config(4);
	c.slot_size = 512;
	shmq_t *q = tq_mkq(&c);
	uint32_t max = shmq_max_payload(q);
	cr_assert_eq(max, 512 - SHMQ_SLOT_HEADER);
	unsigned char buf[512];
	for (uint32_t i = 0; i < max; i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	/* more rounds than slots: later ones land in slots that held a message before */
	for (int round = 0; round < 6; round++) {
		cr_assert_eq(shmq_send(q, buf, max, 0), 0);
		struct shmq_msg m;
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_expect_eq(m.len, max);
		cr_expect_eq(memcmp(m.data, buf, max), 0);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	shmq_close(q);
}

Test(ring, rejects_send_larger_than_max_payload)
{
	shmq_t *q = tq_mkq(NULL);
	uint32_t max = shmq_max_payload(q);
	static unsigned char buf[4096];
	cr_expect_eq(shmq_send(q, buf, max + 1, 0), -EMSGSIZE);
	cr_expect_eq(shmq_send(q, buf, SIZE_MAX, 0), -EMSGSIZE);
	struct shmq_reservation r;
	cr_expect_eq(shmq_send_reserve(q, max + 1, &r, 0), -EMSGSIZE);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.free_slots, st.config.capacity, "a refused send took no slot");
	cr_expect_eq(st.next_id, 0, "a refused send took no ticket");
	shmq_close(q);
}

Test(ring, recv_on_empty_with_timeout_0_is_eagain)
{
	shmq_t *q = tq_mkq(NULL);
	struct shmq_msg m;
	double t0 = tq_now_ms();
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN);
	cr_expect_lt(tq_now_ms() - t0, 2000, "timeout 0 must not block");
	shmq_close(q);
}

Test(ring, recv_with_timeout_waits_then_eagain)
{
	shmq_t *q = tq_mkq(NULL);
	struct shmq_msg m;
	double t0 = tq_now_ms();
	cr_expect_eq(shmq_recv(q, &m, 100), -EAGAIN);
	double took = tq_now_ms() - t0;
	cr_expect_geq(took, 95, "returned after %.1f ms", took);
	cr_expect_lt(took, 2100, "returned after %.1f ms", took);
	shmq_close(q);
}

Test(ring, rejects_send_when_full)
{
	struct shmq_config c = tq_config(4);
	shmq_t *q = tq_mkq(&c);
	for (uint32_t i = 0; i < 4; i++)
		tq_send_u32(q, i);
	uint32_t v = 99;
	double t0 = tq_now_ms();
	cr_expect_eq(shmq_send(q, &v, sizeof(v), 0), -EAGAIN);
	cr_expect_lt(tq_now_ms() - t0, 2000, "timeout 0 must not block");
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.ready, 4);
	cr_expect_eq(st.free_slots, 0);
	shmq_close(q);
}

Test(ring, send_on_full_waits_for_timeout_then_eagain)
{
	struct shmq_config c = tq_config(4);
	shmq_t *q = tq_mkq(&c);
	for (uint32_t i = 0; i < 4; i++)
		tq_send_u32(q, i);
	uint32_t v = 99;
	double t0 = tq_now_ms();
	cr_expect_eq(shmq_send(q, &v, sizeof(v), 50), -EAGAIN);
	double took = tq_now_ms() - t0;
	cr_expect_geq(took, 45, "returned after %.1f ms", took);
	cr_expect_lt(took, 2050, "returned after %.1f ms", took);
	/* nothing was lost or added by the failed sends */
	struct shmq_msg m;
	for (uint32_t i = 0; i < 4; i++) {
		cr_expect_eq(recv_u32(q, &m, 0), i);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN);
	shmq_close(q);
}

struct later {
	shmq_t *q;
	unsigned delay_ms;
	int result;
	double done_ms;
};

static void *send_later(void *arg)
{
	struct later *l = arg;
	tq_sleep_ms(l->delay_ms);
	uint32_t v = 7;
	l->result = shmq_send(l->q, &v, sizeof(v), 0);
	return NULL;
}

static void *send_blocking(void *arg)
{
	struct later *l = arg;
	uint32_t v = 8;
	l->result = shmq_send(l->q, &v, sizeof(v), 3000);
	l->done_ms = tq_now_ms();
	return NULL;
}

Test(ring, blocked_recv_wakes_when_a_message_is_sent)
{
	shmq_t *q = tq_mkq(NULL);
	struct later l = {.q = q, .delay_ms = 50};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, send_later, &l), 0);
	struct shmq_msg m;
	double t0 = tq_now_ms();
	int r = shmq_recv(q, &m, 10000);
	double took = tq_now_ms() - t0;
	pthread_join(th, NULL);
	cr_assert_eq(l.result, 0);
	cr_expect_eq(r, 0);
	cr_expect_lt(took, 5000, "recv woke only after %.0f ms", took);
	shmq_close(q);
}

Test(ring, blocked_send_wakes_when_a_slot_is_freed)
{
	struct shmq_config c = tq_config(2);
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 0);
	tq_send_u32(q, 1);
	struct shmq_msg m;
	cr_assert_eq(recv_u32(q, &m, 0), 0);
	struct later l = {.q = q};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, send_blocking, &l), 0);
	tq_sleep_ms(100); /* let it block */
	double t0 = tq_now_ms();
	cr_assert_eq(shmq_ack(q, &m), 0);
	pthread_join(th, NULL);
	cr_expect_eq(l.result, 0, "blocked send: %s", shmq_strerror(l.result));
	cr_expect_lt(l.done_ms - t0, 5000, "send woke only after %.0f ms", l.done_ms - t0);
	cr_expect_eq(recv_u32(q, &m, 0), 1);
	shmq_close(q);
}

/* ---- order and identity ---------------------------------------------------------------------- */

Test(ring, first_deliveries_are_fifo_across_wraps)
{
	struct shmq_config c = tq_config(8);
	shmq_t *q = tq_mkq(&c);
	uint32_t sent = 0, got = 0, x = 12345;
	uint64_t last_id = 0;
	struct shmq_msg m;
	while (got < 100) {
		x = x * 1103515245u + 12345u;
		uint32_t room = 8 - (sent - got), burst = 1 + (x >> 16) % 8;
		for (uint32_t i = 0; i < burst && i < room && sent < 100; i++)
			tq_send_u32(q, sent++);
		x = x * 1103515245u + 12345u;
		burst = 1 + (x >> 16) % 8;
		for (uint32_t i = 0; i < burst && got < sent; i++) {
			uint32_t v = recv_u32(q, &m, 0);
			cr_expect_eq(v, got, "got %u, expected %u", v, got);
			cr_expect_eq(m.deliveries, 1);
			if (got > 0)
				cr_expect_gt(m.id, last_id, "id %llu after %llu", (unsigned long long)m.id,
					     (unsigned long long)last_id);
			last_id = m.id;
			cr_expect_eq(shmq_ack(q, &m), 0);
			got++;
		}
	}
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.sent, 100);
	cr_expect_eq(st.acked, 100);
	cr_expect_eq(st.free_slots, 8);
	shmq_close(q);
}

Test(ring, ids_are_unique_and_increasing_in_send_order)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	for (uint32_t i = 0; i < 10; i++)
		tq_send_u32(q, i);
	struct shmq_msg m[10];
	for (uint32_t i = 0; i < 10; i++) {
		cr_expect_eq(recv_u32(q, &m[i], 0), i);
		cr_expect_eq(m[i].deliveries, 1, "first delivery counts 1");
		if (i)
			cr_expect_gt(m[i].id, m[i - 1].id);
		cr_expect_geq(m[i].enqueued_ns, i ? m[i - 1].enqueued_ns : 0);
	}
	for (uint32_t i = 0; i < 10; i++)
		cr_expect_eq(shmq_ack(q, &m[i]), 0);
	shmq_close(q);
}

/* ---- settling a delivery --------------------------------------------------------------------- */

Test(ring, ack_of_an_acked_message_is_estale)
{
	shmq_t *q = tq_mkq(NULL);
	tq_send_u32(q, 1);
	struct shmq_msg m;
	recv_u32(q, &m, 0);
	cr_expect_eq(shmq_ack(q, &m), 0);
	uint64_t stale0 = tq_stats(q).stale;
	cr_expect_eq(shmq_ack(q, &m), -ESTALE);
	cr_expect_eq(shmq_nack(q, &m, 0), -ESTALE);
	cr_expect_eq(shmq_extend(q, &m, 0), -ESTALE);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.stale, stale0 + 3);
	cr_expect_eq(st.acked, 1);
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN, "an acked message is gone");
	shmq_close(q);
}

Test(ring, nack_without_delay_redelivers_the_same_message)
{
	shmq_t *q = tq_mkq(NULL);
	tq_send_u32(q, 42);
	struct shmq_msg m1, m2;
	cr_assert_eq(recv_u32(q, &m1, 0), 42);
	cr_assert_eq(m1.deliveries, 1);
	cr_assert_eq(shmq_nack(q, &m1, 0), 0);
	cr_expect_eq(recv_u32(q, &m2, 1000), 42);
	cr_expect_eq(m2.deliveries, 2);
	cr_expect_eq(m2.id, m1.id);
	cr_expect_eq(m2.enqueued_ns, m1.enqueued_ns);
	cr_expect_eq(shmq_ack(q, &m1), -ESTALE, "the first delivery's token is fenced off");
	cr_expect_eq(shmq_ack(q, &m2), 0);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.nacked, 1);
	cr_expect_eq(st.redelivered, 1);
	cr_expect_eq(st.received, 2);
	shmq_close(q);
}

Test(ring, nack_with_delay_holds_the_message_back)
{
	shmq_t *q = tq_mkq(NULL);
	tq_send_u32(q, 5);
	struct shmq_msg m;
	recv_u32(q, &m, 0);
	double t0 = tq_now_ms();
	cr_assert_eq(shmq_nack(q, &m, 200), 0);
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN, "delivered at once");
	cr_expect_eq(shmq_recv(q, &m, 100), -EAGAIN, "delivered before 100 ms");
	cr_expect_eq(tq_stats(q).delayed, 1);
	cr_expect_eq(recv_u32(q, &m, 3000), 5);
	double took = tq_now_ms() - t0;
	cr_expect_geq(took, 200 - tq_slack_ms(), "redelivered after %.1f ms", took);
	cr_expect_lt(took, 2200, "redelivered after %.1f ms", took);
	cr_expect_eq(m.deliveries, 2);
	cr_expect_eq(shmq_ack(q, &m), 0);
	shmq_close(q);
}

Test(ring, nack_with_backoff_waits_the_retry_base_minus_jitter)
{
	struct shmq_config c = tq_config(8);
	c.retry_base_ms = 50;
	c.retry_max_ms = 1000;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 9);
	struct shmq_msg m;
	recv_u32(q, &m, 0);
	/* delivery 1: 50 ms -25% at least; delivery 2: 100 ms -25% at least */
	double floor_ms[] = {37.5, 75};
	for (int i = 0; i < 2; i++) {
		double t0 = tq_now_ms();
		cr_assert_eq(shmq_nack(q, &m, -1), 0);
		cr_expect_eq(recv_u32(q, &m, 5000), 9);
		double took = tq_now_ms() - t0;
		cr_expect_geq(took, floor_ms[i] - tq_slack_ms(), "redelivery %d after %.1f ms", i + 2, took);
		cr_expect_lt(took, floor_ms[i] * 2 + 2000, "redelivery %d after %.1f ms", i + 2, took);
		cr_expect_eq(m.deliveries, (uint32_t)i + 2);
	}
	cr_expect_eq(shmq_ack(q, &m), 0);
	shmq_close(q);
}

Test(ring, extend_keeps_a_lease_alive_past_its_original_deadline)
{
	struct shmq_config c = tq_config(8);
	c.lease_ms = 100;
	c.retry_base_ms = 1;
	c.retry_max_ms = 5;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 3);
	struct shmq_msg m;
	recv_u32(q, &m, 0);
	tq_sleep_ms(50);
	cr_assert_eq(shmq_extend(q, &m, 1000), 0);
	tq_sleep_ms(150); /* the original deadline has passed */
	struct shmq_reclaim_result res;
	cr_expect_eq(shmq_reclaim(q, &res), 0);
	cr_expect_eq(res.expired, 0, "an extended lease was requeued");
	cr_expect_eq(tq_stats(q).inflight, 1);
	/* extend(0) renews by the configured lease_ms */
	cr_expect_eq(shmq_extend(q, &m, 0), 0);
	cr_expect_eq(shmq_reclaim(q, &res), 0);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.extended, 2);
	cr_expect_eq(shmq_ack(q, &m), 0);
	cr_expect_eq(shmq_recv(q, &m, 50), -EAGAIN, "acked, never redelivered");
	shmq_close(q);
}

Test(ring, expired_lease_is_requeued_and_late_settles_are_stale)
{
	struct shmq_config c = tq_config(8);
	c.lease_ms = 50;
	c.retry_base_ms = 10;
	c.retry_max_ms = 20;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 77);
	struct shmq_msg m, m2;
	recv_u32(q, &m, 0);
	cr_expect_eq(shmq_reclaim(q, NULL), 0, "a fresh lease is left alone");
	tq_sleep_ms(100);
	uint64_t stale0 = tq_stats(q).stale;
	struct shmq_reclaim_result res;
	cr_expect_geq(shmq_reclaim(q, &res), 1);
	cr_expect_eq(res.expired, 1);
	cr_expect_eq(res.dead_owner, 0);
	cr_expect_eq(res.dead_lettered, 0);
	cr_expect_eq(shmq_ack(q, &m), -ESTALE);
	cr_expect_eq(shmq_extend(q, &m, 0), -ESTALE);
	cr_expect_eq(shmq_nack(q, &m, 0), -ESTALE);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.stale, stale0 + 3);
	cr_expect_eq(st.reclaimed_expired, 1);
	cr_expect_eq(st.delayed, 1);
	cr_expect_eq(recv_u32(q, &m2, 2000), 77);
	cr_expect_eq(m2.deliveries, 2);
	cr_expect_eq(m2.id, m.id);
	cr_expect_eq(shmq_ack(q, &m2), 0);
	cr_expect_eq(shmq_reclaim(q, &res), 0, "a second pass finds nothing");
	shmq_close(q);
}

/* Receivers run the reclaim pass themselves (config.reclaim_interval_ms): nobody has to. */
Test(ring, expired_lease_comes_back_through_recv_alone)
{
	struct shmq_config c = tq_config(8);
	c.lease_ms = 50;
	c.retry_base_ms = 10;
	c.retry_max_ms = 20;
	c.reclaim_interval_ms = 20;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 5);
	struct shmq_msg m, m2;
	recv_u32(q, &m, 0);
	cr_expect_eq(recv_u32(q, &m2, 5000), 5, "the expired lease never came back");
	cr_expect_eq(m2.deliveries, 2);
	cr_expect_eq(shmq_ack(q, &m), -ESTALE, "the first lease is gone");
	cr_expect_eq(shmq_ack(q, &m2), 0);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.reclaimed_expired, 1);
	cr_expect_eq(st.retried, 1);
	cr_expect_geq(st.reclaim_passes, 1);
	shmq_close(q);
}

Test(ring, reclaim_interval_0_leaves_expired_leases_to_shmq_reclaim)
{
	struct shmq_config c = tq_config(8);
	c.lease_ms = 20;
	c.retry_base_ms = 0;
	c.retry_max_ms = 0;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 6);
	struct shmq_msg m;
	recv_u32(q, &m, 0);
	cr_expect_eq(shmq_recv(q, &m, 200), -EAGAIN, "recv reclaimed though the interval is 0");
	cr_expect_eq(tq_stats(q).reclaim_passes, 0);
	cr_expect_eq(shmq_reclaim(q, NULL), 1);
	cr_expect_eq(recv_u32(q, &m, 1000), 6);
	cr_expect_eq(m.deliveries, 2);
	shmq_close(q);
}

Test(ring, held_lease_does_not_stall_others)
{
	struct shmq_config c = tq_config(4);
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 1000);
	struct shmq_msg held, m;
	cr_assert_eq(recv_u32(q, &held, 0), 1000);
	/* one at a time, 100 times around a ring of 4 */
	for (uint32_t i = 0; i < 100; i++) {
		uint32_t v = i;
		cr_assert_eq(shmq_send(q, &v, sizeof(v), 1000), 0, "send %u while a lease is held", i);
		cr_assert_eq(recv_u32(q, &m, 1000), i);
		cr_expect_eq(m.deliveries, 1);
		cr_assert_eq(shmq_ack(q, &m), 0);
	}
	/* and in bursts that fill every slot the held lease leaves free */
	for (uint32_t round = 0; round < 30; round++) {
		for (uint32_t i = 0; i < 3; i++) {
			uint32_t v = 100 + round * 3 + i;
			cr_assert_eq(shmq_send(q, &v, sizeof(v), 1000), 0, "burst send %u", v);
		}
		for (uint32_t i = 0; i < 3; i++) {
			cr_assert_eq(recv_u32(q, &m, 1000), 100 + round * 3 + i);
			cr_assert_eq(shmq_ack(q, &m), 0);
		}
	}
	cr_expect_eq(tq_stats(q).inflight, 1);
	cr_expect_eq(shmq_ack(q, &held), 0, "the held lease is still valid");
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN);
	shmq_close(q);
}

/* capacity 4, all 4 messages leased: the queue is truly full until one is acked. */
static shmq_t *four_leased(struct shmq_msg m[4])
{
	struct shmq_config c = tq_config(4);
	shmq_t *q = tq_mkq(&c);
	for (uint32_t i = 0; i < 4; i++)
		tq_send_u32(q, i);
	for (uint32_t i = 0; i < 4; i++)
		cr_assert_eq(recv_u32(q, &m[i], 0), i);
	uint32_t v = 4;
	cr_expect_eq(shmq_send(q, &v, sizeof(v), 0), -EAGAIN);
	cr_expect_eq(shmq_send(q, &v, sizeof(v), 50), -EAGAIN);
	return q;
}

Test(ring, send_waits_when_every_slot_is_leased_and_resumes_after_an_ack)
{
	struct shmq_msg m[4], r;
	shmq_t *q = four_leased(m);
	cr_assert_eq(shmq_ack(q, &m[0]), 0);
	uint32_t v = 4;
	cr_expect_eq(shmq_send(q, &v, sizeof(v), 0), 0, "a slot is free again");
	cr_expect_eq(recv_u32(q, &r, 1000), 4);
	cr_expect_eq(shmq_send(q, &v, sizeof(v), 0), -EAGAIN, "4 leased again: full");
	shmq_close(q);
}

/* The contract: -EAGAIN only "if the queue stayed full". Which lease is acked must not matter,
 * and no consumer should have to call recv before a producer can use the freed slot. */
Test(ring, send_succeeds_after_any_one_of_the_leased_messages_is_acked)
{
	for (int k = 1; k < 4; k++) {
		struct shmq_msg m[4];
		shmq_t *q = four_leased(m);
		cr_assert_eq(shmq_ack(q, &m[k]), 0);
		uint32_t v = 4;
		int r = shmq_send(q, &v, sizeof(v), 100);
		cr_expect_eq(r, 0, "after acking lease %d of 4, send gave %s", k, shmq_strerror(r));
		shmq_close(q);
		tq_cleanup();
	}
}

Test(ring, message_is_dead_lettered_after_max_deliveries)
{
	struct shmq_config c = tq_config(8);
	c.max_deliveries = 2;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 11);
	struct shmq_msg m;
	cr_assert_eq(recv_u32(q, &m, 0), 11);
	cr_assert_eq(shmq_nack(q, &m, 0), 0);
	cr_assert_eq(recv_u32(q, &m, 1000), 11);
	cr_assert_eq(m.deliveries, 2);
	cr_expect_eq(shmq_nack(q, &m, 0), 0, "the last nack dead-letters, it does not fail");
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.dead, 1);
	cr_expect_eq(st.dead_lettered, 1);
	cr_expect_eq(st.delayed + st.inflight + st.ready, 0);
	cr_expect_eq(shmq_recv(q, &m, 100), -EAGAIN, "a dead letter is not delivered again");
	struct shmq_dead_letter dl[2];
	cr_assert_eq(shmq_dlq_list(q, dl, 2), 1);
	cr_expect_eq(dl[0].reason, SHMQ_DEAD_MAX_DELIVERIES);
	cr_expect_eq(dl[0].deliveries, 2);
	cr_expect_eq(dl[0].len, 4);
	cr_expect_eq(memcmp(dl[0].data, &(uint32_t){11}, 4), 0);
	shmq_close(q);
}

/* A reclaim pass may run at any time, concurrently with everything; with every owner alive and
 * every lease 60 s long it must find nothing to do, and a nack racing with it must neither fail
 * nor have its delay replaced. Probabilistic: nack and reclaim race in a loop for up to 2 s. */
struct reclaim_loop {
	shmq_t *q;
	_Atomic int stop;
	_Atomic uint64_t repaired;
};

static void *reclaim_forever(void *arg)
{
	struct reclaim_loop *l = arg;
	while (!atomic_load(&l->stop))
		if (shmq_reclaim(l->q, NULL) > 0)
			atomic_fetch_add(&l->repaired, 1);
	return NULL;
}

Test(ring, concurrent_reclaim_never_disturbs_a_live_lease_being_nacked)
{
	struct shmq_config c = tq_config(2);
	c.lease_ms = 60000;
	c.max_deliveries = SHMQ_MAX_DELIVERIES_MAX;
	c.retry_base_ms = 1000; /* a reclaim backoff stands out against nack(0) */
	c.retry_max_ms = 1000;
	shmq_t *q = tq_mkq(&c);
	struct reclaim_loop l = {.q = q};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, reclaim_forever, &l), 0);
	struct shmq_msg m;
	tq_send_u32(q, 1);
	recv_u32(q, &m, 0);
	unsigned long nacks = 0, stale = 0, late = 0;
	double end = tq_now_ms() + 2000;
	while (tq_now_ms() < end && !stale && !late && !atomic_load(&l.repaired)) {
		if (shmq_nack(q, &m, 0))
			stale++;
		nacks++;
		if (shmq_recv(q, &m, 200)) {
			late++;
			cr_assert_eq(shmq_recv(q, &m, 5000), 0, "the nacked message was lost");
		}
		if (m.deliveries >= 250) {
			cr_assert_eq(shmq_ack(q, &m), 0);
			tq_send_u32(q, 1);
			recv_u32(q, &m, 1000);
		}
	}
	atomic_store(&l.stop, 1);
	pthread_join(th, NULL);
	cr_expect_eq(stale, 0, "nack of a live 60 s lease gave -ESTALE (after %lu nacks)", nacks);
	cr_expect_eq(late, 0, "nack(delay 0) redelivered only after a reclaim backoff (after %lu nacks)",
		     nacks);
	cr_expect_eq(atomic_load(&l.repaired), 0,
		     "reclaim requeued a live, unexpired lease (after %lu nacks)", nacks);
	cr_expect_eq(tq_stats(q).reclaimed_expired, 0);
	shmq_close(q);
}

/* ---- zero-copy ------------------------------------------------------------------------------- */

Test(ring, reserve_then_commit_publishes)
{
	shmq_t *q = tq_mkq(NULL);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, 10, &r, 0), 0);
	cr_assert_not_null(r.data);
	cr_expect_geq(r.cap, 10);
	cr_expect_eq(tq_stats(q).writing, 1);
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN, "nothing is visible before commit");
	memcpy(r.data, "0123456789", 10);
	cr_assert_eq(shmq_send_commit(q, &r, 6), 0, "commit fewer bytes than reserved");
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(m.len, 6);
	cr_expect_eq(memcmp(m.data, "012345", 6), 0);
	cr_expect_eq(shmq_ack(q, &m), 0);
	cr_expect_eq(tq_stats(q).sent, 1);
	shmq_close(q);
}

Test(ring, reserve_then_abort_frees_the_slot)
{
	struct shmq_config c = tq_config(4);
	shmq_t *q = tq_mkq(&c);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, 8, &r, 0), 0);
	cr_assert_eq(shmq_send_abort(q, &r), 0);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.writing, 0);
	cr_expect_eq(st.free_slots, 4);
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(q, &m, 50), -EAGAIN, "an aborted reservation is never delivered");
	/* all 4 slots are usable again, and the aborted ticket is stepped over */
	for (uint32_t i = 0; i < 4; i++)
		tq_send_u32(q, i);
	for (uint32_t i = 0; i < 4; i++) {
		cr_expect_eq(recv_u32(q, &m, 1000), i);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	shmq_close(q);
}

Test(ring, reserve_on_full_is_eagain_until_a_reservation_is_aborted)
{
	struct shmq_config c = tq_config(4);
	shmq_t *q = tq_mkq(&c);
	struct shmq_reservation r[5];
	for (int i = 0; i < 4; i++)
		cr_assert_eq(shmq_send_reserve(q, 8, &r[i], 0), 0);
	cr_expect_eq(shmq_send_reserve(q, 8, &r[4], 0), -EAGAIN);
	cr_assert_eq(shmq_send_abort(q, &r[0]), 0);
	cr_expect_eq(shmq_send_reserve(q, 8, &r[4], 0), 0);
	for (int i = 1; i < 5; i++) {
		memcpy(r[i].data, &i, sizeof(i));
		cr_expect_eq(shmq_send_commit(q, &r[i], sizeof(i)), 0);
	}
	struct shmq_msg m;
	for (int i = 1; i < 5; i++) {
		cr_expect_eq(recv_u32(q, &m, 1000), (uint32_t)i);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	shmq_close(q);
}

Test(ring, commit_larger_than_max_payload_is_emsgsize)
{
	shmq_t *q = tq_mkq(NULL);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, 4, &r, 0), 0);
	cr_expect_eq(shmq_send_commit(q, &r, shmq_max_payload(q) + 1), -EMSGSIZE);
	/* the reservation survives the refused commit */
	memcpy(r.data, "ok!!", 4);
	cr_expect_eq(shmq_send_commit(q, &r, 4), 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(m.len, 4);
	cr_expect_eq(memcmp(m.data, "ok!!", 4), 0);
	shmq_close(q);
}

/* A commit or abort of a reservation that is no longer ours says -ESTALE and must not touch the
 * slot, which may already hold another producer's message. */
Test(ring, stale_commit_leaves_the_slots_next_message_intact)
{
	struct shmq_config c = tq_config(2);
	shmq_t *q = tq_mkq(&c);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, 4, &r, 0), 0);
	cr_assert_eq(shmq_send_abort(q, &r), 0);
	cr_expect_eq(shmq_send_abort(q, &r), -ESTALE);
	const char a[] = "A", b[] = "BBBBBBBB";
	cr_assert_eq(shmq_send(q, a, sizeof(a), 0), 0);
	cr_assert_eq(shmq_send(q, b, sizeof(b), 0), 0); /* lands in the aborted reservation's slot */
	cr_expect_eq(shmq_send_commit(q, &r, 1), -ESTALE);
	struct shmq_msg m1, m2;
	cr_assert_eq(shmq_recv(q, &m1, 0), 0);
	cr_assert_eq(shmq_recv(q, &m2, 0), 0);
	cr_expect_eq(m1.len, sizeof(a));
	cr_expect_eq(m2.len, sizeof(b), "the stale commit rewrote the next message's length (%u)", m2.len);
	cr_expect_gt(m2.id, m1.id, "the stale commit rewrote the next message's id (%llu after %llu)",
		     (unsigned long long)m2.id, (unsigned long long)m1.id);
	cr_expect_eq(memcmp(m2.data, b, sizeof(b)), 0);
	shmq_close(q);
}

Test(ring, commit_after_commit_is_estale_and_harmless)
{
	struct shmq_config c = tq_config(2);
	shmq_t *q = tq_mkq(&c);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, 4, &r, 0), 0);
	memcpy(r.data, "one!", 4);
	struct shmq_reservation copy = r;
	cr_assert_eq(shmq_send_commit(q, &r, 4), 0);
	struct shmq_msg m, m2;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(shmq_send_commit(q, &copy, 2), -ESTALE);
	cr_expect_eq(shmq_send_abort(q, &copy), -ESTALE);
	/* the leased message's header must be as it was: see it again through a redelivery */
	cr_assert_eq(shmq_nack(q, &m, 0), 0);
	cr_assert_eq(shmq_recv(q, &m2, 1000), 0);
	cr_expect_eq(m2.len, 4, "a stale commit changed a leased message's length to %u", m2.len);
	cr_expect_eq(m2.id, m.id);
	cr_expect_eq(shmq_ack(q, &m2), 0);
	shmq_close(q);
}

/* ---- batches --------------------------------------------------------------------------------- */

Test(ring, send_batch_sends_up_to_n_in_order)
{
	struct shmq_config c = tq_config(8);
	shmq_t *q = tq_mkq(&c);
	uint32_t v[12];
	struct shmq_iov iov[12];
	for (uint32_t i = 0; i < 12; i++) {
		v[i] = i;
		iov[i] = (struct shmq_iov){&v[i], sizeof(v[i])};
	}
	cr_expect_eq(shmq_send_batch(q, iov, 5, 0), 5);
	cr_expect_eq(shmq_send_batch(q, iov + 5, 7, 0), 3, "up to n: only 3 slots were free");
	cr_expect_eq(shmq_send_batch(q, iov + 8, 4, 0), -EAGAIN, "full: the first message cannot go");
	struct shmq_msg m;
	for (uint32_t i = 0; i < 8; i++) {
		cr_expect_eq(recv_u32(q, &m, 0), i);
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	cr_expect_eq(tq_stats(q).sent, 8);
	shmq_close(q);
}

Test(ring, send_batch_refuses_null_data_with_a_length)
{
	shmq_t *q = tq_mkq(NULL);
	uint32_t v = 1;
	struct shmq_iov first_bad[] = {{NULL, 4}, {&v, sizeof(v)}};
	cr_expect_eq(shmq_send_batch(q, first_bad, 2, 0), -EINVAL);
	struct shmq_iov second_bad[] = {{&v, sizeof(v)}, {NULL, 4}};
	cr_expect_eq(shmq_send_batch(q, second_bad, 2, 0), 1, "the batch stops before the bad message");
	cr_expect_eq(tq_stats(q).sent, 1);
	shmq_close(q);
}

Test(ring, send_batch_stops_before_an_oversized_message)
{
	shmq_t *q = tq_mkq(NULL);
	static unsigned char big[4096];
	uint32_t a = 1, b = 2;
	struct shmq_iov iov[3] = {{&a, 4}, {&b, 4}, {big, shmq_max_payload(q) + 1}};
	cr_expect_eq(shmq_send_batch(q, iov + 2, 1, 0), -EMSGSIZE);
	cr_expect_eq(shmq_send_batch(q, iov, 3, 0), 2);
	cr_expect_eq(shmq_send_batch(q, iov, 0, 0), 0);
	struct shmq_msg m;
	cr_expect_eq(recv_u32(q, &m, 0), 1);
	cr_expect_eq(recv_u32(q, &m, 0), 2);
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN);
	shmq_close(q);
}

Test(ring, recv_batch_and_ack_batch_count_and_keep_order)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	struct shmq_msg m[16];
	cr_expect_eq(shmq_recv_batch(q, m, 4, 0), -EAGAIN);
	for (uint32_t i = 0; i < 10; i++)
		tq_send_u32(q, i);
	cr_assert_eq(shmq_recv_batch(q, m, 4, 0), 4);
	cr_assert_eq(shmq_recv_batch(q, m + 4, 16, 0), 6, "up to n: only 6 were left");
	for (uint32_t i = 0; i < 10; i++) {
		uint32_t v;
		cr_assert_eq(m[i].len, 4);
		memcpy(&v, m[i].data, 4);
		cr_expect_eq(v, i);
		cr_expect_eq(m[i].deliveries, 1);
	}
	cr_expect_eq(shmq_ack(q, &m[3]), 0);
	cr_expect_eq(shmq_ack_batch(q, m, 10), 9, "one of the ten was already acked");
	cr_expect_eq(shmq_ack_batch(q, m, 10), 0);
	cr_expect_eq(shmq_ack_batch(q, m, 0), 0);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.acked, 10);
	cr_expect_eq(st.free_slots, 16);
	shmq_close(q);
}

/* ---- stats, errors, arguments ---------------------------------------------------------------- */

Test(ring, stats_count_depths_by_state)
{
	struct shmq_config c = tq_config(8);
	shmq_t *q = tq_mkq(&c);
	for (uint32_t i = 0; i < 5; i++)
		tq_send_u32(q, i);
	struct shmq_msg a, b;
	recv_u32(q, &a, 0);
	recv_u32(q, &b, 0);
	cr_assert_eq(shmq_nack(q, &b, 60000), 0);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, 4, &r, 0), 0);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.ready, 3);
	cr_expect_eq(st.inflight, 1);
	cr_expect_eq(st.delayed, 1);
	cr_expect_eq(st.writing, 1);
	cr_expect_eq(st.dead, 0);
	cr_expect_eq(st.free_slots, 2);
	cr_expect_eq(st.sent, 5);
	cr_expect_eq(st.received, 2);
	cr_expect_eq(st.nacked, 1);
	cr_expect_eq(st.acked, 0);
	cr_expect_eq(st.participants, 1);
	cr_expect_eq(st.config.capacity, 8);
	cr_expect_eq(st.max_payload, 256 - SHMQ_SLOT_HEADER);
	cr_expect_eq(st.dlq_max, 2, "dlq_max 0 means capacity / 4");
	shmq_close(q);
}

Test(ring, strerror_has_distinct_text_for_each_error)
{
	int errs[] = {EINVAL,	       EEXIST, ENOENT, ENAMETOOLONG, EAGAIN, EMSGSIZE,	ESTALE, EPROTO,
		      EPROTONOSUPPORT, EUSERS, EACCES, ENOSPC,	     ENOMEM, ETIMEDOUT, EPERM,	EXDEV};
	size_t n = sizeof(errs) / sizeof(errs[0]);
	for (size_t i = 0; i < n; i++) {
		const char *s = shmq_strerror(-errs[i]);
		cr_assert_not_null(s);
		cr_expect_gt(strlen(s), 0);
		cr_expect_eq(s, shmq_strerror(errs[i]), "sign does not matter");
		for (size_t j = 0; j < i; j++)
			cr_expect_str_neq(s, shmq_strerror(-errs[j]), "errors %d and %d share a text",
					  errs[i], errs[j]);
	}
	cr_expect_not_null(shmq_strerror(0));
	cr_expect_not_null(shmq_strerror(-EDOM));
	cr_expect_not_null(shmq_strerror(123456));
	cr_expect_not_null(shmq_strerror(INT32_MIN + 1));
}

Test(ring, close_of_null_is_harmless) { shmq_close(NULL); }

Test(ring, invalid_arguments_are_einval)
{
	shmq_t *q = tq_mkq(NULL);
	struct shmq_msg m;
	struct shmq_reservation r;
	struct shmq_stats st;
	uint32_t v = 0;
	cr_expect_eq(shmq_send(NULL, &v, 4, 0), -EINVAL);
	cr_expect_eq(shmq_send(q, NULL, 4, 0), -EINVAL);
	cr_expect_eq(shmq_recv(NULL, &m, 0), -EINVAL);
	cr_expect_eq(shmq_recv(q, NULL, 0), -EINVAL);
	cr_expect_eq(shmq_recv_batch(q, &m, 0, 0), -EINVAL);
	cr_expect_eq(shmq_recv_batch(q, NULL, 1, 0), -EINVAL);
	cr_expect_eq(shmq_send_batch(NULL, NULL, 0, 0), -EINVAL);
	cr_expect_eq(shmq_send_batch(q, NULL, 1, 0), -EINVAL);
	cr_expect_eq(shmq_send_reserve(NULL, 4, &r, 0), -EINVAL);
	cr_expect_eq(shmq_send_reserve(q, 4, NULL, 0), -EINVAL);
	cr_expect_eq(shmq_ack(NULL, &m), -EINVAL);
	cr_expect_eq(shmq_ack(q, NULL), -EINVAL);
	cr_expect_eq(shmq_ack_batch(q, NULL, 1), -EINVAL);
	cr_expect_eq(shmq_nack(q, NULL, 0), -EINVAL);
	cr_expect_eq(shmq_extend(q, NULL, 0), -EINVAL);
	cr_expect_eq(shmq_reject(q, NULL), -EINVAL);
	cr_expect_eq(shmq_stats(NULL, &st), -EINVAL);
	cr_expect_eq(shmq_stats(q, NULL), -EINVAL);
	cr_expect_eq(shmq_reclaim(NULL, NULL), -EINVAL);
	cr_expect_eq(shmq_max_payload(NULL), 0);

	/* a message that was never received: its token is not a lease */
	memset(&m, 0, sizeof(m));
	cr_expect_eq(shmq_ack(q, &m), -EINVAL);
	cr_expect_eq(shmq_nack(q, &m, 0), -EINVAL);
	cr_expect_eq(shmq_extend(q, &m, 0), -EINVAL);
	/* a slot index beyond the ring */
	tq_send_u32(q, 1);
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	struct shmq_msg bad = m;
	bad.slot = 1u << 30;
	cr_expect_eq(shmq_ack(q, &bad), -EINVAL);
	cr_expect_eq(shmq_ack(q, &m), 0, "the real lease was not disturbed");
	/* a reservation that does not name a slot of this ring */
	memset(&r, 0, sizeof(r));
	r.slot = 1u << 30;
	cr_expect_eq(shmq_send_commit(q, &r, 0), -EINVAL);
	cr_expect_eq(shmq_send_abort(q, &r), -EINVAL);
	cr_expect_eq(shmq_send_commit(NULL, &r, 0), -EINVAL);
	cr_expect_eq(shmq_send_commit(q, NULL, 0), -EINVAL);
	shmq_close(q);
}

Test(ring, purge_deletes_the_due_messages_counted_as_purged_and_keeps_leased_and_delayed_ones)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	for (uint32_t i = 0; i < 6; i++)
		tq_send_u32(q, i);
	struct shmq_msg held, later;
	cr_assert_eq(shmq_recv(q, &held, 0), 0);
	cr_assert_eq(shmq_recv(q, &later, 0), 0);
	cr_assert_eq(shmq_nack(q, &later, 60000), 0); /* delayed a minute */
	cr_expect_eq(shmq_purge(q, 2), 2, "at most max");
	cr_expect_eq(shmq_purge(q, UINT32_MAX), 2, "the rest that is due");
	cr_expect_eq(shmq_purge(q, UINT32_MAX), 0, "nothing due left");
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.ready, 0);
	cr_expect_eq(st.inflight, 1, "the leased message stays");
	cr_expect_eq(st.delayed, 1, "the delayed message stays");
	cr_expect_eq(st.purged, 4);
	cr_expect_eq(st.acked, 0, "a purge is not an ack");
	cr_expect_eq(shmq_ack(q, &held), 0, "the holder settles as usual");
	/* what comes after a purge is delivered as usual */
	tq_send_u32(q, 42);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	uint32_t v;
	memcpy(&v, m.data, sizeof(v));
	cr_expect_eq(v, 42);
	cr_expect_eq(shmq_ack(q, &m), 0);
	shmq_close(q);
}

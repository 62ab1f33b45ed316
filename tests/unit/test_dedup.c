/* SPDX-License-Identifier: MIT */
/*
 * Idempotency: keyed sends suppressed within the dedup window (and only within it), keys that
 * travel with their messages, eviction from a full table, concurrent senders of one key, and the
 * consumer-side "done" records, including a consumer killed between its work and its ack and a
 * sender killed in the middle of a keyed send.
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

TestSuite(dedup, .fini = tq_cleanup);

static shmq_t *mkq_window(uint32_t capacity, uint32_t window_ms, uint32_t entries)
{
	struct shmq_config c = tq_config(capacity);
	c.dedup_window_ms = window_ms;
	c.dedup_entries = entries;
	return tq_mkq(&c);
}

static int send_key(shmq_t *q, const char *key, const char *data, uint64_t *id)
{
	return shmq_send_keyed(q, key, strlen(key), data, strlen(data), 0, id);
}

static void expect_depth(shmq_t *q, uint64_t want)
{
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.ready + st.inflight + st.delayed, want, "queue holds %llu messages, want %llu",
		     (unsigned long long)(st.ready + st.inflight + st.delayed), (unsigned long long)want);
}

Test(dedup, a_repeated_key_within_the_window_is_not_enqueued_and_names_the_first_message)
{
	shmq_t *q = mkq_window(64, 60000, 0);
	uint64_t id1 = 99, id2 = 99;
	cr_assert_eq(send_key(q, "order-1", "first", &id1), 0);
	cr_expect_eq(send_key(q, "order-1", "second", &id2), SHMQ_DUPLICATE);
	cr_expect_eq(id2, id1, "a duplicate reports the id of the message its key sent");
	cr_expect_eq(send_key(q, "order-2", "other", NULL), 0);
	expect_depth(q, 2);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.duplicates, 1);
	cr_expect_eq(st.sent, 2);
	cr_expect_eq(st.dedup_live, 2);
	shmq_close(q);
}

Test(dedup, a_key_is_accepted_again_once_its_window_has_passed)
{
	shmq_t *q = mkq_window(64, 30, 0);
	cr_assert_eq(send_key(q, "k", "a", NULL), 0);
	cr_expect_eq(send_key(q, "k", "b", NULL), SHMQ_DUPLICATE);
	tq_sleep_ms(30 + (unsigned)tq_slack_ms() * 2);
	cr_expect_eq(send_key(q, "k", "c", NULL), 0, "the window is over: the key is new again");
	expect_depth(q, 2);
	shmq_close(q);
}

Test(dedup, the_key_travels_with_its_message_and_takes_room_from_its_payload)
{
	shmq_t *q = mkq_window(8, 60000, 0);
	cr_assert_eq(send_key(q, "key-7", "payload", NULL), 0);
	cr_assert_eq(shmq_send(q, "plain", 5, 0), 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect(m.key_len == 5 && !memcmp(m.key, "key-7", 5));
	cr_expect(m.len == 7 && !memcmp(m.data, "payload", 7));
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect(m.key == NULL && m.key_len == 0 && m.len == 5);

	uint32_t max = shmq_max_payload(q);
	char big[512] = {0};
	cr_expect_eq(shmq_send_keyed(q, "kk", 2, big, max - 2, 0, NULL), 0);
	cr_expect_eq(shmq_send_keyed(q, "kkk", 3, big, max - 2, 0, NULL), -EMSGSIZE);
	char longkey[SHMQ_KEY_MAX + 1];
	memset(longkey, 'x', sizeof(longkey));
	cr_expect_eq(shmq_send_keyed(q, longkey, sizeof(longkey), "x", 1, 0, NULL), -EINVAL);
	cr_expect_eq(shmq_send_keyed(q, "", 0, "x", 1, 0, NULL), -EINVAL);
	shmq_close(q);
}

Test(dedup, a_queue_without_a_window_refuses_keyed_calls)
{
	shmq_t *q = mkq_window(8, 0, 0);
	cr_expect_eq(send_key(q, "k", "x", NULL), -ENOTSUP);
	cr_expect_eq(shmq_done_mark(q, "k", 1), -ENOTSUP);
	cr_expect_eq(shmq_done_check(q, "k", 1), -ENOTSUP);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.config.dedup_entries, 0);
	shmq_close(q);
}

Test(dedup, a_full_table_evicts_the_oldest_key_of_the_run_and_counts_it)
{
	/* 16 entries, 16 probes: every key competes for the whole table. A record's time is the
	 * coarse clock's (a tick of up to 4 ms) made odd: keys sent 5 ms apart are told apart by
	 * age, and the oldest is the one evicted (among records of the same time, any one may be) */
	shmq_t *q = mkq_window(256, 600000, 16);
	char key[24];
	for (int i = 0; i < 40; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		cr_assert_eq(send_key(q, key, "x", NULL), 0, "key %d", i);
		tq_sleep_ms(5);
	}
	expect_depth(q, 40);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.dedup_evicted, 24, "40 keys into 16 entries evict 24");
	cr_expect_eq(st.dedup_live, 16);
	cr_expect_eq(send_key(q, "key-39", "x", NULL), SHMQ_DUPLICATE, "the newest keys are still there");
	cr_expect_eq(send_key(q, "key-0", "x", NULL), 0, "the oldest was evicted: sent again");
	shmq_close(q);
}

Test(dedup, sent_keys_and_done_records_are_separate_namespaces)
{
	shmq_t *q = mkq_window(8, 60000, 0);
	cr_assert_eq(shmq_done_mark(q, "k", 1), 0);
	cr_expect_eq(send_key(q, "k", "x", NULL), 0, "a done record is not a sent key");
	cr_expect_eq(shmq_done_check(q, "other", 5), 0);
	cr_expect_eq(shmq_done_check(q, "k", 1), 1);
	shmq_close(q);
}

struct racer {
	const char *name;
	pthread_barrier_t *start;
	int duplicates;
};

#define RACE_KEYS 2000

static void *race_sender(void *arg)
{
	struct racer *r = arg;
	shmq_t *q;
	cr_assert_eq(shmq_open(r->name, &q), 0);
	pthread_barrier_wait(r->start); /* all at once, the same keys in the same order: they collide */
	char key[24];
	for (int i = 0; i < RACE_KEYS; i++) {
		snprintf(key, sizeof(key), "race-%d", i);
		int rc = shmq_send_keyed(q, key, strlen(key), "x", 1, -1, NULL);
		cr_assert(rc == 0 || rc == SHMQ_DUPLICATE, "send: %s", shmq_strerror(rc));
		r->duplicates += rc == SHMQ_DUPLICATE;
	}
	shmq_close(q);
	return NULL;
}

#define THREADS 4

/* THREADS senders of the same RACE_KEYS keys, released at once; returns the duplicates reported. */
static int race(const char *name)
{
	pthread_t t[THREADS];
	struct racer r[THREADS];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		r[i] = (struct racer){.name = name, .start = &start};
		cr_assert_eq(pthread_create(&t[i], NULL, race_sender, &r[i]), 0);
	}
	int dups = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		dups += r[i].duplicates;
	}
	pthread_barrier_destroy(&start);
	return dups;
}

Test(dedup, concurrent_senders_of_the_same_keys_enqueue_each_key_once)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8192); /* room for every send, should none be a duplicate */
	c.dedup_entries = 64; /* small: keys share probe runs, so claims race for the same entries */
	shmq_t *q = tq_create(name, &c);
	int dups = race(name);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.ready, (uint64_t)(THREADS * RACE_KEYS - dups),
		     "every send enqueued or reported duplicate");
	/* an evicted key may be sent once more, by design; nothing else may repeat one */
	cr_expect(st.ready >= RACE_KEYS && st.ready <= RACE_KEYS + st.dedup_evicted,
		  "%llu enqueued for %d keys with %llu evictions", (unsigned long long)st.ready, RACE_KEYS,
		  (unsigned long long)st.dedup_evicted);
	shmq_close(q);
}

Test(dedup, without_eviction_racing_senders_enqueue_each_key_exactly_once)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(4096);
	c.dedup_entries = 8192;
	shmq_t *q = tq_create(name, &c);
	race(name);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.dedup_evicted, 0);
	cr_expect_eq(st.ready, RACE_KEYS, "each key enqueued exactly once");
	cr_expect_eq(st.duplicates, (uint64_t)(THREADS - 1) * RACE_KEYS);
	shmq_close(q);
}

/* ---- consumer side ---------------------------------------------------------------------------- */

Test(dedup, ack_done_records_the_message_so_its_redelivery_is_recognised)
{
	shmq_t *q = mkq_window(8, 60000, 0);
	tq_send_u32(q, 7);
	cr_assert_eq(send_key(q, "job-1", "x", NULL), 0);
	struct shmq_msg m, again;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(shmq_is_done(q, &m), 0, "not done yet");
	again = m;
	cr_assert_eq(shmq_ack_done(q, &m), 0);
	cr_expect_eq(shmq_is_done(q, &again), 1, "recorded by id");
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(shmq_ack_done(q, &m), 0);
	cr_expect_eq(shmq_done_check(q, "job-1", 5), 1, "a keyed message is recorded by its key");
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.acked, 2);
	cr_expect_eq(st.done_marked, 2);
	cr_expect_eq(st.done_hits, 2);
	shmq_close(q);
}

Test(dedup, done_records_expire_with_the_window)
{
	shmq_t *q = mkq_window(8, 30, 0);
	cr_assert_eq(shmq_done_mark(q, "k", 1), 0);
	cr_expect_eq(shmq_done_check(q, "k", 1), 1);
	tq_sleep_ms(30 + (unsigned)tq_slack_ms() * 2);
	cr_expect_eq(shmq_done_check(q, "k", 1), 0);
	shmq_close(q);
}

static void expect_killed(pid_t pid)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child did not die at its fault point (%#x)",
		  st);
}

Test(dedup, a_consumer_killed_between_its_work_record_and_its_ack_is_not_redone)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.reclaim_interval_ms = 0; /* reclaim only when the test says */
	shmq_t *q = tq_create(name, &c);
	cr_assert_eq(send_key(q, "charge-42", "x", NULL), 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *cq;
		struct shmq_msg m;
		if (shmq_open(name, &cq) || shmq_recv(cq, &m, 0))
			_exit(1);
		/* ... the side effect happens here ... */
		shmq_fault_arm("done-before-ack", 1);
		shmq_ack_done(cq, &m);
		_exit(2);
	}
	expect_killed(pid);
	struct shmq_reclaim_result res;
	cr_assert_eq(shmq_reclaim(q, &res), 1);
	cr_expect_eq(res.dead_owner, 1);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 2000), 0, "the message comes back");
	cr_expect_eq(m.deliveries, 2);
	cr_expect_eq(shmq_is_done(q, &m), 1, "its work is known to be done");
	cr_assert_eq(shmq_ack(q, &m), 0);
	expect_depth(q, 0);
	shmq_close(q);
}

/* A child that attaches, arms `point` and dies there inside a keyed send of "k". */
static void die_sending(const char *name, const char *point)
{
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *cq;
		if (shmq_open(name, &cq))
			_exit(1);
		shmq_fault_arm(point, 1);
		shmq_send_keyed(cq, "k", 1, "from the dead", 13, 0, NULL);
		_exit(2);
	}
	expect_killed(pid);
}

/* A producer killed at `point` inside a keyed send; then the key is sent again. */
static void keyed_sender_killed_at(const char *point, int want_resend)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(name, &c);
	die_sending(name, point);
	int rc = shmq_send_keyed(q, "k", 1, "retry", 5, 0, NULL);
	cr_expect_eq(rc, want_resend ? 0 : SHMQ_DUPLICATE, "%s: retry of the key returned %d", point, rc);
	shmq_reclaim(q, NULL); /* retires the dead producer's unpublished slot, if any */
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0, "the key's message is in the queue");
	cr_expect(m.key_len == 1 && !memcmp(m.key, "k", 1));
	cr_assert_eq(shmq_ack(q, &m), 0);
	cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN, "and only once");
	shmq_close(q);
}

Test(dedup, a_sender_killed_after_publishing_but_before_recording_is_not_sent_twice)
{
	keyed_sender_killed_at("keyed-before-record", 0);
}

Test(dedup, a_sender_killed_before_publishing_leaves_the_key_free_for_its_retry)
{
	keyed_sender_killed_at("keyed-before-commit", 1);
}

/* A child of name that attaches (record `want_part`), claims a key at `point` and dies there. The
 * two keys hash to different entries of a 64-entry table: a dead claim in the other key's probe run
 * would be taken over by that key's claim. */
static void die_claiming(const char *name, uint32_t want_part, const char *point)
{
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *cq;
		if (shmq_open(name, &cq) || cq->part != want_part)
			_exit(1);
		shmq_fault_arm(point, 1);
		if (!strcmp(point, "mark-before-record"))
			shmq_done_mark(cq, "job-7", 5);
		else
			shmq_send_keyed(cq, "k", 1, "from the dead", 13, 0, NULL);
		_exit(2);
	}
	expect_killed(pid);
}

Test(dedup, a_dead_participants_claim_stays_dead_when_a_newcomer_reuses_its_record)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(name, &c);
	die_claiming(name, 1, "keyed-before-commit");
	die_claiming(name, 2, "mark-before-record");
	struct shmq_reclaim_result res;
	shmq_reclaim(q, &res);
	cr_assert_eq(res.participants_freed, 2, "the pass freed both dead claimers' records");
	/* past the reuse delay of records a pass freed: newcomers take records 1 and 2 again */
	tq_sleep_ms(2100);
	shmq_t *n1, *n2;
	cr_assert_eq(shmq_open(name, &n1), 0);
	cr_assert_eq(shmq_open(name, &n2), 0);
	cr_assert(n1->part == 1 && n2->part == 2, "the newcomers reuse the dead claimers' records (%u, %u)",
		  n1->part, n2->part);

	int r = send_key(q, "k", "retry", NULL);
	cr_expect_eq(r, 0, "a send of the dead sender's key takes its claim over: %s", shmq_strerror(r));
	cr_expect_eq(send_key(n1, "k", "again", NULL), SHMQ_DUPLICATE, "the newcomer sees the key sent");
	cr_expect_eq(shmq_done_mark(q, "job-7", 5), 0);
	cr_expect_eq(shmq_done_check(n2, "job-7", 5), 1,
		     "the mark over the dead marker's claim was recorded");
	cr_expect_eq(tq_stats(q).done_marked, 1);
	shmq_close(n1);
	shmq_close(n2);
	shmq_close(q);
}

/* ---- the control bytes (the table's index) ---------------------------------------------------- */

static struct shmq_dedup_entry *entry_at_test(shmq_t *q, int i)
{
	return (void *)(q->dedup + dedup_entry_off((uint64_t)i));
}

/* Entry i's control byte. */
static _Atomic uint8_t *ctrl_of(shmq_t *q, uint32_t i)
{
	struct shmq_dedup_group *g = (void *)(q->dedup + dedup_group_off(i));
	return &g->ctrl[i % DEDUP_PROBES];
}

/* The entry whose word is in `state` and whose key is key (of kind), or -1. */
static int entry_holding(shmq_t *q, unsigned kind, const char *key, unsigned state)
{
	for (uint32_t i = 0; i <= q->dedup_mask; i++) {
		struct shmq_dedup_entry *e = entry_at_test(q, (int)i);
		uint64_t w = atomic_load(&e->word);
		if (de_state(w) == state && de_kind(w) == kind && e->key_len == strlen(key) &&
		    !memcmp(e->key, key, e->key_len))
			return (int)i;
	}
	return -1;
}

struct findings {
	int errors;
	char last[256];
};

static void collect(void *ctx, int severity, const char *what)
{
	struct findings *f = ctx;
	if (severity == SHMQ_CHECK_ERROR) {
		f->errors++;
		snprintf(f->last, sizeof(f->last), "%s", what);
	}
}

static struct findings check_queue(const char *name)
{
	struct findings f = {0};
	cr_assert_geq(shmq_check_name(name, collect, &f), 0);
	return f;
}

Test(dedup, a_stale_tag_or_busy_mark_costs_a_look_and_never_hides_a_key)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(2);
	c.dedup_entries = 16; /* one group: every key shares the control line */
	shmq_t *q = tq_create(name, &c);
	tq_send_u32(q, 0);
	cr_assert_eq(send_key(q, "kept", "x", NULL), 0);
	int i = entry_holding(q, DK_PUBLISHED, "kept", DE_VALID);
	cr_assert_geq(i, 0);
	cr_expect_eq(*ctrl_of(q, (uint32_t)i), dc_tag(de_tag(atomic_load(&entry_at_test(q, i)->word))),
		     "a recorded key's byte is its tag");

	/* BUSY over a live key (a claimer that lost its CAS, or died before it): still found */
	atomic_store(ctrl_of(q, (uint32_t)i), DC_BUSY);
	cr_expect_eq(send_key(q, "kept", "x", NULL), SHMQ_DUPLICATE, "found under a BUSY byte");
	cr_expect_eq(check_queue(name).errors, 0, "BUSY is a legal byte");

	/* the queue is full: "gone" claims an entry, fails to reserve and releases it, whose byte
	 * keeps its tag over an entry that holds no key */
	cr_assert_eq(send_key(q, "gone", "x", NULL), -EAGAIN);
	int r = entry_holding(q, DK_PUBLISHED, "gone", DE_VALID);
	cr_assert_geq(r, 0);
	uint64_t w = atomic_load(&entry_at_test(q, r)->word);
	cr_expect_eq(de_ms(w), 0, "released");
	cr_expect_eq(*ctrl_of(q, (uint32_t)r), dc_tag(de_tag(w)), "a stale tag");
	struct findings f = check_queue(name);
	cr_expect_eq(f.errors, 0, "a stale tag is legal: %s", f.last);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(shmq_ack(q, &m), 0);
	cr_expect_eq(send_key(q, "gone", "x", NULL), 0, "a released entry is no record: the key is new");
	cr_expect_eq(send_key(q, "gone", "x", NULL), SHMQ_DUPLICATE);
	cr_expect_eq(send_key(q, "kept", "x", NULL), SHMQ_DUPLICATE);
	f = check_queue(name);
	cr_expect_eq(f.errors, 0, "%s", f.last);
	shmq_close(q);
}

/* A writer SIGKILLed at `point` of its claim, then the key sent again twice: once, then a duplicate,
 * with no impossible control byte left behind. */
static void writer_killed_at(const char *point)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.dedup_entries = 16;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(name, &c);
	die_sending(name, point);
	int busy = 0;
	for (uint32_t i = 0; i < 16; i++)
		busy += *ctrl_of(q, i) == DC_BUSY;
	cr_expect_eq(busy, 1, "%s: the dead writer's entry is marked BUSY", point);
	cr_expect_eq(check_queue(name).errors, 0, "%s: the crash left a legal state", point);
	cr_expect_eq(send_key(q, "k", "retry", NULL), 0, "%s: the key is free for its retry", point);
	cr_expect_eq(send_key(q, "k", "again", NULL), SHMQ_DUPLICATE, "%s: and then recorded", point);
	struct findings f = check_queue(name);
	cr_expect_eq(f.errors, 0, "%s: %s", point, f.last);
	expect_depth(q, 1);
	shmq_close(q);
}

Test(dedup, a_writer_killed_between_its_busy_mark_and_its_claim_hides_no_key)
{
	writer_killed_at("dedup-busy-before-claim");
}

Test(dedup, a_writer_killed_between_its_claim_and_its_tag_hides_no_key)
{
	writer_killed_at("dedup-claimed-before-tag");
}

Test(dedup, a_corrupted_control_byte_is_bounded_and_reported_by_check)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.dedup_entries = 16;
	shmq_t *q = tq_create(name, &c);
	cr_assert_eq(shmq_done_mark(q, "job", 3), 0);
	int i = entry_holding(q, DK_DONE_KEY, "job", DE_VALID);
	cr_assert_geq(i, 0);
	_Atomic uint8_t *b = ctrl_of(q, (uint32_t)i);
	unsigned own = atomic_load(b);
	for (unsigned v = 0; v < 256; v++) {
		atomic_store(b, (uint8_t)v);
		/* BUSY and values shmq never writes cost a look; EMPTY and other tags hide the key */
		int look = v == own || (v != DC_EMPTY && v < DC_TAG);
		cr_expect_eq(shmq_done_check(q, "job", 3), look, "byte 0x%02x", v);
		struct findings f = check_queue(name);
		cr_expect_eq(f.errors, v == own || v == DC_BUSY ? 0 : 1, "byte 0x%02x: %d errors (%s)", v,
			     f.errors, f.last);
	}
	/* every byte and hint of the group garbage: calls still return, with answers */
	memset(q->dedup + dedup_group_off(0), 0x5a, sizeof(struct shmq_dedup_group));
	cr_expect_eq(shmq_done_check(q, "job", 3), 1, "0x5a is never written: a look, and found");
	cr_expect_eq(shmq_done_mark(q, "job-2", 5), 0);
	cr_expect_eq(shmq_done_check(q, "job-2", 5), 1);
	shmq_close(q);
}

/* Lookups match the control bytes of a group 8 at a time: whichever entry of the group holds a
 * key, and whatever its neighbours' bytes are, the key's byte alone decides whether it is looked
 * at (its tag, BUSY or a value never written: yes; EMPTY or another tag: no). The record is moved
 * to each entry of the group in turn, built directly in the table. */
Test(dedup, a_key_is_found_at_every_entry_of_its_group_whatever_its_neighbours_bytes)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.dedup_entries = 16; /* one group */
	shmq_t *q = tq_create(name, &c);
	cr_assert_eq(shmq_done_mark(q, "job", 3), 0);
	int at = entry_holding(q, DK_DONE_KEY, "job", DE_VALID);
	cr_assert_geq(at, 0);
	unsigned own = atomic_load(ctrl_of(q, (uint32_t)at));
	struct shmq_dedup_entry rec;
	memcpy(&rec, entry_at_test(q, at), sizeof(rec));
	static const uint8_t fills[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xfe, 0xff};
	static const uint8_t probes[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff};
	for (int j = 0; j < 16; j++) {
		/* the record at entry j, every other entry EMPTY (a look at one finds nothing) */
		for (int i = 0; i < 16; i++)
			memset(entry_at_test(q, i), 0, sizeof(rec));
		memcpy(entry_at_test(q, j), &rec, sizeof(rec));
		for (size_t f = 0; f < sizeof(fills) + 1; f++) {
			uint8_t fill = f < sizeof(fills) ? fills[f] : (uint8_t)own;
			for (int i = 0; i < 16; i++)
				atomic_store(ctrl_of(q, (uint32_t)i), fill);
			for (size_t p = 0; p < sizeof(probes) + 1; p++) {
				unsigned v = p < sizeof(probes) ? probes[p] : own;
				atomic_store(ctrl_of(q, (uint32_t)j), (uint8_t)v);
				int look = v == own || (v != DC_EMPTY && v < DC_TAG);
				cr_expect_eq(shmq_done_check(q, "job", 3), look,
					     "entry %d, byte 0x%02x, others 0x%02x", j, v, fill);
			}
		}
	}
	shmq_close(q);
}

/* ---- a lookup racing recycles ---- */

#define RECYCLE_KEYS 3000

struct recycle_race {
	const char *name;
	_Atomic int marked; /* keys 0..marked-1 are recorded done */
	_Atomic int stop;
	int misses;
};

/* Fresh keyed sends into a full queue: each claims an entry, writes its key and tag, fails to
 * reserve a slot and releases the entry: entries are recycled as fast as a thread can. */
static void *recycler(void *arg)
{
	struct recycle_race *r = arg;
	shmq_t *q;
	cr_assert_eq(shmq_open(r->name, &q), 0);
	char key[32];
	for (unsigned n = 0; !atomic_load(&r->stop); n++) {
		snprintf(key, sizeof(key), "churn-%lx-%u", (unsigned long)pthread_self(), n);
		int rc = shmq_send_keyed(q, key, strlen(key), "x", 1, 0, NULL);
		cr_assert(rc == -EAGAIN || rc == SHMQ_DUPLICATE, "a send into a full queue: %d", rc);
	}
	shmq_close(q);
	return NULL;
}

/* Records job-i done, then publishes i (release): a checker that reads i must find it. */
static void *marker(void *arg)
{
	struct recycle_race *r = arg;
	shmq_t *q;
	cr_assert_eq(shmq_open(r->name, &q), 0);
	char key[32];
	for (int i = 0; i < RECYCLE_KEYS; i++) {
		snprintf(key, sizeof(key), "job-%d", i);
		cr_assert_eq(shmq_done_mark(q, key, strlen(key)), 0);
		atomic_store_explicit(&r->marked, i + 1, memory_order_release);
	}
	shmq_close(q);
	return NULL;
}

static void *checker(void *arg)
{
	struct recycle_race *r = arg;
	shmq_t *q;
	cr_assert_eq(shmq_open(r->name, &q), 0);
	char key[32];
	int seen = 0;
	while (seen < RECYCLE_KEYS) {
		int upto = atomic_load_explicit(&r->marked, memory_order_acquire);
		for (int i = seen > 16 ? seen - 16 : 0; i < upto; i++) { /* the newest, again and again */
			snprintf(key, sizeof(key), "job-%d", i);
			r->misses += shmq_done_check(q, key, strlen(key)) != 1;
		}
		seen = upto;
	}
	shmq_close(q);
	return NULL;
}

/* One round: two recyclers, a marker and a checker on a new queue; the checker's misses. */
static int recycle_round(const char *tag)
{
	const char *name = tq_name(tag);
	struct shmq_config c = tq_config(4);
	/* 2048 groups for 3000 marks: no group fills (an eviction would be a legal miss), so a
	 * miss is a bug */
	c.dedup_entries = 32768;
	shmq_t *q = tq_create(name, &c);
	for (int i = 0; i < 4; i++)
		tq_send_u32(q, (uint32_t)i); /* full: every keyed send claims, fails, releases */
	struct recycle_race r = {.name = name};
	pthread_t rec[2], mk, ck;
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&rec[i], NULL, recycler, &r), 0);
	cr_assert_eq(pthread_create(&ck, NULL, checker, &r), 0);
	cr_assert_eq(pthread_create(&mk, NULL, marker, &r), 0);
	pthread_join(mk, NULL);
	pthread_join(ck, NULL);
	atomic_store(&r.stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(rec[i], NULL);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.dedup_evicted, 0);
	shmq_close(q);
	return r.misses;
}

Test(dedup, a_lookup_racing_recycles_of_its_group_never_misses_a_recorded_key)
{
	static const char *const rounds[] = {"r0", "r1", "r2", "r3", "r4", "r5"};
	for (unsigned i = 0; i < sizeof(rounds) / sizeof(rounds[0]); i++) {
		int misses = recycle_round(rounds[i]);
		cr_expect_eq(misses, 0, "round %u: %d lookups missed a recorded key", i, misses);
	}
}

/* SPDX-License-Identifier: MIT */
/*
 * The settings a live queue may change (settings.c): a change reaches every handle, also one
 * opened before it; a change that breaks a rule is refused and changes nothing; a live block
 * scribbled into the header is ignored; a writer killed mid-block changes nothing, and the next
 * writer's change stands.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "../common.h"
#include "fault.h"
#include "handle.h"
#include "shmq_inspect.h"

TestSuite(settings, .fini = tq_cleanup);

static struct shmq_config config_of(shmq_t *q)
{
	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q, &st), 0);
	return st.config;
}

/* Dead letters: what a nack of a first delivery does tells the max deliveries q acts on. */
static uint64_t nack_once(shmq_t *q)
{
	struct shmq_msg m;
	tq_send_u32(q, 1);
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(shmq_nack(q, &m, 0), 0);
	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q, &st), 0);
	return st.dead;
}

Test(settings, a_change_reaches_a_handle_opened_before_it_and_stat)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(16);
	shmq_t *a = tq_create(name, &c), *b;
	cr_assert_eq(shmq_open(name, &b), 0);
	struct shmq_config s = config_of(a);
	s.lease_ms = 1234;
	s.max_deliveries = 1;
	s.dlq_max = 3;
	cr_assert_eq(shmq_settings_update(a, &s), 0);
	struct shmq_config got = config_of(b);
	cr_expect_eq(got.lease_ms, 1234);
	cr_expect_eq(got.max_deliveries, 1);
	cr_expect_eq(got.dlq_max, 3);
	cr_expect_eq(nack_once(b), 1, "b nacked a first delivery past the new max of 1: dead-lettered");
	/* a view (stat) shows the settings in force */
	shmq_view_t *v;
	struct shmq_snapshot snap;
	cr_assert_eq(shmq_view_open(name, &v), 0);
	cr_assert_geq(shmq_view_snapshot(v, &snap, NULL, 0), 0);
	cr_expect_eq(snap.stats.config.lease_ms, 1234);
	cr_expect_eq(snap.stats.dlq_max, 3);
	shmq_view_close(v);
	cr_expect_eq(shmq_check_name(name, NULL, NULL), 0, "the queue is sound");
	shmq_close(b);
	shmq_close(a);
}

Test(settings, a_change_that_breaks_a_rule_is_refused_and_changes_nothing)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	struct shmq_config s = config_of(q);
	struct shmq_config bad[4] = {s, s, s, s};
	bad[0].lease_ms = 0;
	bad[1].retry_base_ms = bad[1].retry_max_ms + 1;
	bad[2].dlq_max = 17; /* above the capacity */
	bad[3].max_deliveries = 256;
	for (int i = 0; i < 4; i++)
		cr_expect_eq(shmq_settings_update(q, &bad[i]), -EINVAL, "bad change %d", i);
	struct shmq_config got = config_of(q);
	cr_expect_eq(got.lease_ms, s.lease_ms);
	cr_expect_eq(got.retry_base_ms, s.retry_base_ms);
	cr_expect_eq(got.dlq_max, s.dlq_max);
	cr_expect_eq(got.max_deliveries, s.max_deliveries);
	shmq_close(q);
}

/* Someone writes the header's live block directly, with a value no rule allows: handles and
 * views keep the settings they had. */
Test(settings, a_scribbled_live_block_is_ignored)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	struct shmq_config before = config_of(q);
	struct shmq_hdr *h = q->hdr;
	atomic_store(&h->live[1].lease_ms, 0); /* generation 2 names block 1 */
	atomic_store(&h->live[1].max_deliveries, 1000);
	atomic_store(&h->settings_gen, 2);
	struct shmq_config got = config_of(q);
	cr_expect_eq(got.lease_ms, before.lease_ms);
	cr_expect_eq(got.max_deliveries, before.max_deliveries);
	cr_expect_eq(nack_once(q), 0, "a nack of a first delivery is still retried");
	shmq_close(q);
}

Test(settings, a_writer_killed_mid_block_changes_nothing_and_the_next_change_stands)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_create(name, &c);
	/* a change published before the killed one: it must stay in force for everyone */
	struct shmq_config first = config_of(q);
	first.lease_ms = 120000;
	first.max_deliveries = 3;
	cr_assert_eq(shmq_settings_update(q, &first), 0);
	struct shmq_config before = config_of(q);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *w;
		if (shmq_open(name, &w))
			_exit(1);
		struct shmq_config s = before;
		s.lease_ms = 7777;
		s.retry_max_ms = 7777;
		shmq_fault_arm("settings-mid-block", 1);
		shmq_settings_update(w, &s);
		_exit(2);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer did not die mid-block (%#x)", st);
	struct shmq_config got = config_of(q);
	cr_expect_eq(got.lease_ms, before.lease_ms, "half a block is never used");
	cr_expect_eq(got.retry_max_ms, before.retry_max_ms);
	/* a handle opened after the kill, and a view, see the change published before it */
	shmq_t *late;
	cr_assert_eq(shmq_open(name, &late), 0);
	got = config_of(late);
	cr_expect_eq(got.lease_ms, 120000, "a new handle fell back to the creation config");
	cr_expect_eq(got.max_deliveries, 3);
	shmq_close(late);
	shmq_view_t *v;
	struct shmq_snapshot snap;
	cr_assert_eq(shmq_view_open(name, &v), 0);
	cr_assert_geq(shmq_view_snapshot(v, &snap, NULL, 0), 0);
	cr_expect_eq(snap.stats.config.lease_ms, 120000, "stat fell back to the creation config");
	shmq_view_close(v);
	/* the kernel dropped the dead writer's lock: the next change goes through, whole */
	struct shmq_config s = before;
	s.lease_ms = 4321;
	cr_assert_eq(shmq_settings_update(q, &s), 0);
	got = config_of(q);
	cr_expect_eq(got.lease_ms, 4321);
	cr_expect_eq(got.retry_max_ms, before.retry_max_ms);
	shmq_close(q);
}

struct writer_arg {
	shmq_t *q;
	uint32_t lease_ms, retry_max_ms;
};

static void *write_many(void *arg)
{
	struct writer_arg *w = arg;
	struct shmq_config s = config_of(w->q);
	s.lease_ms = w->lease_ms;
	s.retry_max_ms = w->retry_max_ms;
	for (int i = 0; i < 2000; i++)
		cr_assert_eq(shmq_settings_update(w->q, &s), 0);
	return NULL;
}

/* Two threads of one handle change the settings at once, each its own pair of values: every
 * handle (another one included) ends with one writer's pair whole, never a mix (the settings
 * lock alone, an OFD lock on the handle's own description, does not exclude its own threads). */
Test(settings, two_threads_of_one_handle_writing_at_once_leave_one_whole_change)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_create(name, &c), *other;
	cr_assert_eq(shmq_open(name, &other), 0);
	struct writer_arg w[2] = {{q, 1111, 21111}, {q, 2222, 22222}};
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
	for (int k = 0; k < 200; k++) { /* a reader meanwhile sees only whole pairs */
		struct shmq_config got = config_of(other);
		cr_assert(got.lease_ms == c.lease_ms || (got.lease_ms == 1111 && got.retry_max_ms == 21111) ||
				  (got.lease_ms == 2222 && got.retry_max_ms == 22222),
			  "a mixed change: lease %u, retry max %u", got.lease_ms, got.retry_max_ms);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	struct shmq_config a = config_of(q), b = config_of(other);
	cr_expect(a.lease_ms == b.lease_ms && a.retry_max_ms == b.retry_max_ms, "handles disagree");
	cr_expect((b.lease_ms == 1111 && b.retry_max_ms == 21111) ||
			  (b.lease_ms == 2222 && b.retry_max_ms == 22222),
		  "a mixed change: lease %u, retry max %u", b.lease_ms, b.retry_max_ms);
	shmq_close(other);
	shmq_close(q);
}

/* SPDX-License-Identifier: MIT */
/*
 * The settings a live queue may change (settings.c): a change reaches every handle, also one
 * opened before it; a change that breaks a rule is refused and changes nothing; a live block
 * scribbled into the header is ignored; a writer killed mid-block changes nothing, and the next
 * writer's change stands.
 */
#include <criterion/criterion.h>
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
	atomic_store(&h->live.lease_ms, 0);
	atomic_store(&h->live.max_deliveries, 1000);
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
	/* the kernel dropped the dead writer's lock: the next change goes through, whole */
	struct shmq_config s = before;
	s.lease_ms = 4321;
	cr_assert_eq(shmq_settings_update(q, &s), 0);
	got = config_of(q);
	cr_expect_eq(got.lease_ms, 4321);
	cr_expect_eq(got.retry_max_ms, before.retry_max_ms);
	shmq_close(q);
}

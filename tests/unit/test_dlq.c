/* SPDX-License-Identifier: MIT */
/*
 * Retries and the dead-letter queue: the backoff schedule, what a dead letter records, its bound,
 * redrive and purge.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "internal.h"
#include "shmq.h"

TestSuite(dlq, .fini = tq_cleanup);

static uint32_t payload_u32(const void *data)
{
	uint32_t v;
	memcpy(&v, data, sizeof(v));
	return v;
}

/* Sends each of vals and rejects it at once: n dead letters, oldest first in vals' order. */
static void reject_all(shmq_t *q, const uint32_t *vals, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct shmq_msg m;
		tq_send_u32(q, vals[i]);
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_assert_eq(shmq_reject(q, &m), 0);
	}
}

Test(dlq, backoff_doubles_from_the_base_caps_at_the_max_and_jitters_25_percent)
{
	struct shmq_config c = tq_config(8);
	c.retry_base_ms = 100;
	c.retry_max_ms = 30000;
	shmq_t *q = tq_mkq(&c);
	for (unsigned d = 1; d <= 12; d++) {
		uint64_t nominal = 100ULL << (d - 1);
		if (nominal > 30000)
			nominal = 30000;
		uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
		const unsigned n = 400;
		for (unsigned i = 0; i < n; i++) {
			uint64_t b = shmq_backoff_ms(q, d);
			lo = b < lo ? b : lo;
			hi = b > hi ? b : hi;
			sum += b;
		}
		uint64_t cap = nominal + nominal / 4 < 30000 ? nominal + nominal / 4 : 30000;
		cr_expect_geq(lo, nominal - nominal / 4, "delivery %u: %llu ms below -25%% of %llu", d,
			      (unsigned long long)lo, (unsigned long long)nominal);
		cr_expect_leq(hi, cap, "delivery %u: %llu ms above min(+25%%, max)", d,
			      (unsigned long long)hi);
		cr_expect_lt(lo, hi, "delivery %u: no jitter at all", d);
		double mean = (double)sum / n;
		if (nominal < 30000) /* at the cap the upper half is clipped, so the mean sits lower */
			cr_expect(mean > 0.9 * (double)nominal && mean < 1.1 * (double)nominal,
				  "delivery %u: mean %.0f ms, nominal %llu", d, mean,
				  (unsigned long long)nominal);
	}
	shmq_close(q);
}

Test(dlq, backoff_with_a_zero_base_is_zero)
{
	struct shmq_config c = tq_config(8);
	c.retry_base_ms = 0;
	c.retry_max_ms = 0;
	shmq_t *q = tq_mkq(&c);
	for (unsigned d = 1; d <= 20; d++)
		cr_expect_eq(shmq_backoff_ms(q, d), 0);
	shmq_close(q);
}

Test(dlq, dead_letter_records_reason_deliveries_holder_and_payload)
{
	struct shmq_config c = tq_config(8);
	c.max_deliveries = 3;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 42);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(shmq_nack(q, &m, 0), 0);
	cr_assert_eq(shmq_recv(q, &m, 1000), 0);
	cr_assert_eq(m.deliveries, 2);
	cr_assert_eq(shmq_reject(q, &m), 0);
	struct shmq_dead_letter dl[2];
	cr_assert_eq(shmq_dlq_list(q, dl, 2), 1);
	cr_expect_eq(dl[0].reason, SHMQ_DEAD_REJECTED);
	cr_expect_str_eq(shmq_dead_reason_str(dl[0].reason), "rejected");
	cr_expect_eq(dl[0].deliveries, 2);
	cr_expect_eq(dl[0].last_pid, getpid());
	cr_expect_eq(dl[0].id, m.id);
	cr_expect_eq(dl[0].len, 4);
	cr_expect_eq(payload_u32(dl[0].data), 42);
	cr_expect_eq(shmq_ack(q, &m), -ESTALE, "a rejected delivery cannot be acked too");
	shmq_close(q);
}

Test(dlq, lease_that_expires_at_max_deliveries_is_dead_lettered_as_expired)
{
	struct shmq_config c = tq_config(8);
	c.max_deliveries = 1;
	c.lease_ms = 20;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 7);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	tq_sleep_ms(60);
	struct shmq_reclaim_result res;
	cr_assert_eq(shmq_reclaim(q, &res), 1);
	cr_expect_eq(res.dead_lettered, 1);
	cr_expect_eq(res.expired, 0, "dead-lettered, not requeued");
	struct shmq_dead_letter dl[1];
	cr_assert_eq(shmq_dlq_list(q, dl, 1), 1);
	cr_expect_eq(dl[0].reason, SHMQ_DEAD_EXPIRED);
	cr_expect_eq(shmq_recv(q, &m, 100), -EAGAIN, "a dead letter is not delivered");
	shmq_close(q);
}

/* What a holder child does with the one message it receives. */
enum holder_act {
	HOLDER_REJECTS,
	HOLDER_NACKS,
	HOLDER_KEEPS /* holds the lease until killed */
};

/* Forks a process that opens queue `name`, receives one message and acts on it, then closes its
 * handle and exits (HOLDER_KEEPS: waits to be killed). Returns its pid once it has acted. */
static pid_t holder_child(const char *name, enum holder_act act)
{
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		shmq_t *q;
		struct shmq_msg m;
		if (shmq_open(name, &q) || shmq_recv(q, &m, 2000))
			_exit(1);
		if ((act == HOLDER_REJECTS && shmq_reject(q, &m)) ||
		    (act == HOLDER_NACKS && shmq_nack(q, &m, 0)))
			_exit(2);
		(void)!write(fds[1], "x", 1);
		while (act == HOLDER_KEEPS)
			pause();
		shmq_close(q);
		_exit(0);
	}
	char x;
	close(fds[1]);
	cr_assert_eq(read(fds[0], &x, 1), 1, "the holder child failed");
	close(fds[0]);
	return pid;
}

/* The one dead letter of q, whose reason must be `reason`. */
static struct shmq_dead_letter only_letter(shmq_t *q, unsigned reason)
{
	struct shmq_dead_letter dl[2];
	cr_assert_eq(shmq_dlq_list(q, dl, 2), 1);
	cr_assert_eq(dl[0].reason, reason, "reason %u, not %u", dl[0].reason, reason);
	return dl[0];
}

/* The one letter of q has reason `reason` and names process holder. */
static void expect_named(shmq_t *q, unsigned reason, pid_t holder)
{
	struct shmq_dead_letter d = only_letter(q, reason);
	cr_expect_eq(d.last_pid, holder, "last pid %d, the holder was %d", d.last_pid, (int)holder);
}

/* One message, which a child process receives and settles by `act` before it exits. */
static void expect_settler_named(enum holder_act act, uint32_t max_deliveries, unsigned reason)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.max_deliveries = max_deliveries;
	shmq_t *q = tq_create(n, &c);
	tq_send_u32(q, 1);
	pid_t holder = holder_child(n, act);
	cr_assert_eq(waitpid(holder, NULL, 0), holder);
	expect_named(q, reason, holder);
	shmq_close(q);
}

Test(dlq, a_rejected_letter_names_the_rejecting_process_after_it_is_gone)
{
	expect_settler_named(HOLDER_REJECTS, 16, SHMQ_DEAD_REJECTED);
}

Test(dlq, a_letter_nacked_past_max_deliveries_names_the_nacking_process)
{
	expect_settler_named(HOLDER_NACKS, 1, SHMQ_DEAD_MAX_DELIVERIES);
}

/* dead-lettered by our reclaim pass, not by the holder: the pid comes from its participant record */
Test(dlq, a_letter_whose_lease_expired_names_the_holder_not_the_reclaimer)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.max_deliveries = 1;
	c.lease_ms = 20;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(n, &c);
	tq_send_u32(q, 1);
	pid_t holder = holder_child(n, HOLDER_KEEPS);
	tq_sleep_ms(60);
	cr_expect_eq(shmq_reclaim(q, NULL), 1);
	expect_named(q, SHMQ_DEAD_EXPIRED, holder);
	kill(holder, SIGKILL);
	waitpid(holder, NULL, 0);
	shmq_close(q);
}

/* A mover that won a slot's lease word but lost its word to an ack may store its holder record
 * late, over a later letter of the slot: a record whose tag is not the letter's names nobody. */
Test(dlq, a_holder_record_of_another_delivery_reads_as_an_unknown_pid)
{
	shmq_t *q = tq_mkq(NULL);
	reject_all(q, (uint32_t[]){5}, 1);
	struct shmq_dead_letter d = only_letter(q, SHMQ_DEAD_REJECTED);
	cr_assert_eq(d.last_pid, getpid());
	uint64_t w = atomic_load(&slot_at(q, d.slot)->word);
	uint32_t tag = lease_tag(q, w);
	atomic_store(&q->holders[d.slot], hr_make(4242, tag ^ 1)); /* another delivery count */
	cr_expect_eq(only_letter(q, SHMQ_DEAD_REJECTED).last_pid, 0);
	atomic_store(&q->holders[d.slot], hr_make(4242, tag ^ (1u << 8))); /* another lap */
	cr_expect_eq(only_letter(q, SHMQ_DEAD_REJECTED).last_pid, 0);
	atomic_store(&q->holders[d.slot], hr_make(4242, tag));
	cr_expect_eq(only_letter(q, SHMQ_DEAD_REJECTED).last_pid, 4242);
	shmq_close(q);
}

/* The holder is recorded by dead-letterings only: deliveries, acks and nacks leave it alone. */
Test(dlq, deliveries_that_are_not_dead_lettered_write_no_holder_record)
{
	shmq_t *q = tq_mkq(NULL);
	struct shmq_msg m;
	tq_send_u32(q, 1);
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(atomic_load(&q->holders[m.slot]), 0, "a receive wrote a holder record");
	cr_assert_eq(shmq_nack(q, &m, 0), 0);
	cr_assert_eq(shmq_recv(q, &m, 1000), 0);
	cr_assert_eq(shmq_ack(q, &m), 0);
	cr_expect_eq(atomic_load(&q->holders[m.slot]), 0, "a nack or an ack wrote a holder record");
	shmq_close(q);
}

Test(dlq, redrive_puts_the_oldest_back_with_a_fresh_delivery_count)
{
	struct shmq_config c = tq_config(8);
	c.dlq_max = 8; /* the default, capacity / 4, would drop one of three */
	shmq_t *q = tq_mkq(&c);
	reject_all(q, (uint32_t[]){10, 11, 12}, 3);
	cr_assert_eq(shmq_dlq_redrive(q, 2), 2);
	struct shmq_dead_letter dl[4];
	cr_assert_eq(shmq_dlq_list(q, dl, 4), 1);
	cr_expect_eq(payload_u32(dl[0].data), 12, "the newest stays");
	for (uint32_t want = 10; want <= 11; want++) {
		struct shmq_msg m;
		cr_assert_eq(shmq_recv(q, &m, 1000), 0, "redriven message %u not delivered", want);
		cr_expect_eq(payload_u32(m.data), want);
		cr_expect_eq(m.deliveries, 1, "a redriven message starts its delivery count again");
		cr_expect_eq(shmq_ack(q, &m), 0);
	}
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.redriven, 2);
	cr_expect_eq(st.dead, 1);
	cr_expect_eq(shmq_dlq_redrive(q, UINT32_MAX), 1);
	cr_expect_eq(shmq_dlq_redrive(q, UINT32_MAX), 0, "nothing left to redrive");
	shmq_close(q);
}

/* A redrive CASes the lease word, then the slot word. One SIGKILLed between the two leaves the
 * letter DEAD with the lease word the redrive wrote (due now, the tag of deliveries 0): the next
 * redrive must finish it, not skip a letter it no longer recognises. */
Test(dlq, a_redrive_killed_between_its_two_cases_is_finished_by_the_next_redrive)
{
	struct shmq_config c = tq_config(8);
	c.dlq_max = 8;
	shmq_t *q = tq_mkq(&c);
	reject_all(q, (uint32_t[]){42}, 1);
	struct shmq_dead_letter dl[2];
	cr_assert_eq(shmq_dlq_list(q, dl, 2), 1);
	struct shmq_slot *s = slot_at(q, id_slot(q, dl[0].id));
	uint64_t w = atomic_load(&s->word);
	cr_assert(w_is_dead(w), "the letter's slot is dead");
	/* the redrive's first CAS, as it writes it; its second never came */
	uint64_t nw = w_make(w_ticket(w), SLOT_DELAYED, 0, 0);
	atomic_store(&s->lease, lw_make(0, LW_NOT_BEFORE, lease_tag(q, nw)));
	cr_expect_eq(shmq_dlq_redrive(q, UINT32_MAX), 1, "the half-redriven letter was not redriven");
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 1000), 0, "the redriven message was not delivered");
	cr_expect_eq(payload_u32(m.data), 42);
	cr_expect_eq(m.deliveries, 1);
	cr_expect_eq(shmq_ack(q, &m), 0);
	cr_expect_eq(shmq_dlq_list(q, dl, 2), 0, "nothing is left in the DLQ");
	shmq_close(q);
}

Test(dlq, purge_deletes_the_oldest_and_frees_their_slots)
{
	struct shmq_config c = tq_config(8);
	c.dlq_max = 8; /* the default, capacity / 4, would drop one of three */
	shmq_t *q = tq_mkq(&c);
	reject_all(q, (uint32_t[]){20, 21, 22}, 3);
	cr_assert_eq(tq_stats(q).free_slots, 5);
	cr_assert_eq(shmq_dlq_purge(q, 1), 1);
	struct shmq_dead_letter dl[4];
	cr_assert_eq(shmq_dlq_list(q, dl, 4), 2);
	cr_expect_eq(payload_u32(dl[0].data), 21);
	cr_expect_eq(payload_u32(dl[1].data), 22);
	cr_expect_eq(shmq_dlq_purge(q, UINT32_MAX), 2);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.purged, 3);
	cr_expect_eq(st.dead, 0);
	cr_expect_eq(st.free_slots, 8, "purged slots are free for producers again");
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(q, &m, 50), -EAGAIN, "a purged message is never delivered");
	shmq_close(q);
}

Test(dlq, full_dlq_drops_the_oldest_letter_and_counts_it)
{
	struct shmq_config c = tq_config(8);
	c.dlq_max = 2;
	shmq_t *q = tq_mkq(&c);
	reject_all(q, (uint32_t[]){30, 31, 32, 33}, 4);
	struct shmq_dead_letter dl[4];
	cr_assert_eq(shmq_dlq_list(q, dl, 4), 2);
	cr_expect_eq(payload_u32(dl[0].data), 32);
	cr_expect_eq(payload_u32(dl[1].data), 33);
	struct shmq_stats st = tq_stats(q);
	cr_expect_eq(st.dlq_dropped, 2);
	cr_expect_eq(st.dead_lettered, 4);
	cr_expect_eq(st.free_slots, 6);
	shmq_close(q);
}

/* The coarse clock the library keeps lease and dead times in (ms). */
static uint64_t coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct reuse_race {
	shmq_t *other;
	struct shmq_msg m; /* the live lease of the slot's next message */
	int ok;
};

/* Between a redrive's collect and its CAS: another tool purges the letter, and its slot (0 of 2)
 * takes a new message that a consumer leases. */
static void purge_reuse_and_lease(void *arg)
{
	struct reuse_race *r = arg;
	struct shmq_msg m;
	r->ok = shmq_dlq_purge(r->other, UINT32_MAX) == 1;
	tq_send_u32(r->other, 1); /* ticket 1: slot 1 */
	r->ok &= shmq_recv(r->other, &m, 0) == 0 && shmq_ack(r->other, &m) == 0;
	tq_send_u32(r->other, 2); /* ticket 2: slot 0 again */
	r->ok &= shmq_recv(r->other, &r->m, 0) == 0 && r->m.slot == 0;
}

Test(dlq, a_redrive_from_a_stale_list_leaves_the_reused_slots_live_lease_alone)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(2);
	c.dlq_max = 2;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(name, &c);
	struct reuse_race r = {0};
	cr_assert_eq(shmq_open(name, &r.other), 0);
	reject_all(q, (uint32_t[]){0}, 1);
	shmq_hook_arm("dlq-settle-collected", purge_reuse_and_lease, &r);
	cr_expect_eq(shmq_dlq_redrive(q, UINT32_MAX), 0, "the letter it listed is gone");
	cr_assert(r.ok, "the purge, reuse and lease in between did not happen");
	uint64_t lw = atomic_load(&slot_at(q, 0)->lease);
	cr_expect(lw_kind(lw) == LW_DEADLINE && lw_tag(lw) == lease_tag(q, r.m.token),
		  "the new message's lease word is its deadline (kind %u tag %u)", lw_kind(lw), lw_tag(lw));
	cr_expect_eq(shmq_extend(r.other, &r.m, 0), 0, "its holder can extend it");
	cr_expect_eq(shmq_ack(r.other, &r.m), 0);
	shmq_close(r.other);
	shmq_close(q);
}

struct expiry_race {
	shmq_t *other;
	uint64_t before, after;
};

/* Between a reject's check of its lease and its dead-lettering: the lease expired meanwhile, and
 * a reclaim pass dead-letters the delivery first. */
static void reclaim_first(void *arg)
{
	struct expiry_race *r = arg;
	r->before = coarse_ms();
	shmq_reclaim(r->other, NULL);
	r->after = coarse_ms();
	tq_sleep_ms(30);
}

Test(dlq, a_reject_that_lost_its_lease_leaves_the_dead_time_of_the_pass_that_won)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.max_deliveries = 1;
	c.lease_ms = 20;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(name, &c);
	struct expiry_race r = {0};
	cr_assert_eq(shmq_open(name, &r.other), 0);
	tq_send_u32(q, 5);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	tq_sleep_ms(40); /* expired, but nobody ran a pass yet */
	shmq_hook_arm("dead-letter", reclaim_first, &r);
	cr_expect_eq(shmq_reject(q, &m), -ESTALE, "the pass dead-lettered it first");
	struct shmq_dead_letter dl[2];
	cr_assert_eq(shmq_dlq_list(q, dl, 2), 1);
	cr_expect_eq(dl[0].reason, SHMQ_DEAD_EXPIRED);
	cr_expect(dl[0].dead_ms >= r.before && dl[0].dead_ms <= r.after,
		  "dead at %llu ms, the pass ran in [%llu, %llu]", (unsigned long long)dl[0].dead_ms,
		  (unsigned long long)r.before, (unsigned long long)r.after);
	shmq_close(r.other);
	shmq_close(q);
}

struct lap_race {
	shmq_t *other;
	struct shmq_msg m; /* the other consumer's live lease on the slot's next message */
	int ok;
};

/* The other consumer's part of both races: a reclaim pass requeues the lease of slot 0 (of 2),
 * the other consumer takes that message and acks it, and leases the slot's next message, at the
 * same delivery count (1) as the stale lease. */
static void requeue_and_reuse(void *arg)
{
	struct lap_race *r = arg;
	struct shmq_msg m;
	r->ok = shmq_reclaim(r->other, NULL) == 1;
	r->ok &= shmq_recv(r->other, &m, 0) == 0 && m.deliveries == 2 && shmq_ack(r->other, &m) == 0;
	tq_send_u32(r->other, 1); /* ticket 1: slot 1 */
	r->ok &= shmq_recv(r->other, &m, 0) == 0 && shmq_ack(r->other, &m) == 0;
	tq_send_u32(r->other, 2); /* ticket 2: slot 0 again */
	r->ok &= shmq_recv(r->other, &r->m, 0) == 0 && r->m.slot == 0 && r->m.deliveries == 1;
}

/* Between a reject's check of its slot word and its lease CAS: the rejecter's lease expired, the
 * message came back to another consumer, which acked it, and slot 0 took a new message that the
 * other consumer leased. */
static void lose_and_reuse(void *arg)
{
	tq_sleep_ms(40); /* the rejecter's 20 ms lease runs out */
	requeue_and_reuse(arg);
}

/* After either race: slot 0's lease word is still the other consumer's deadline, which it can
 * extend and ack. */
static void expect_live_lease_untouched(shmq_t *q, struct lap_race *r)
{
	uint64_t lw = atomic_load(&slot_at(q, 0)->lease);
	cr_expect_eq(lw_kind(lw), LW_DEADLINE, "the new message's lease word is still its deadline");
	cr_expect_eq(shmq_extend(r->other, &r->m, 0), 0, "its holder can extend it");
	cr_expect_eq(shmq_ack(r->other, &r->m), 0);
}

Test(dlq, a_stale_reject_leaves_the_reused_slots_live_lease_alone)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(2);
	c.lease_ms = 20;
	c.retry_base_ms = 0;
	c.retry_max_ms = 0;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(name, &c);
	struct lap_race r = {0};
	cr_assert_eq(shmq_open(name, &r.other), 0);
	tq_send_u32(q, 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(m.slot, 0);
	shmq_hook_arm("dead-letter", lose_and_reuse, &r);
	cr_expect_eq(shmq_reject(q, &m), -ESTALE, "its delivery is long gone");
	cr_assert(r.ok, "the expiry, redelivery, reuse and new lease in between did not happen");
	expect_live_lease_untouched(q, &r);
	struct shmq_dead_letter dl[2];
	cr_expect_eq(shmq_dlq_list(q, dl, 2), 0, "nothing was dead-lettered");
	shmq_close(r.other);
	shmq_close(q);
}

/* Sets *(int *)arg: the hook point was reached. */
static void mark(void *arg) { *(int *)arg = 1; }

Test(dlq, a_receive_whose_reclaim_slice_dead_letters_a_lease_does_not_scan_the_ring)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(4096);
	c.max_deliveries = 1;
	c.lease_ms = 20;
	c.reclaim_interval_ms = 10;
	shmq_t *q = tq_create(name, &c), *r;
	cr_assert_eq(shmq_open(name, &r), 0);
	tq_send_u32(q, 1);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0); /* leased, never settled: expires at max deliveries */
	tq_sleep_ms(60);
	int scanned = 0;
	shmq_hook_arm("dlq-collect", mark, &scanned);
	struct shmq_stats st;
	for (int k = 0; k < 1000 && (st = tq_stats(q)).dead_lettered == 0; k++) {
		cr_assert_eq(shmq_recv(r, &m, 0), -EAGAIN);
		tq_sleep_ms(1);
	}
	cr_assert_eq(st.dead_lettered, 1, "a receive's reclaim slice dead-lettered the expired lease");
	cr_expect_eq(scanned, 0, "the DLQ holds 1 letter of %u allowed: no pass over the ring", st.dlq_max);
	struct shmq_dead_letter dl[2];
	cr_expect_eq(shmq_dlq_list(q, dl, 2), 1);
	shmq_close(r);
	shmq_close(q);
}

Test(dlq, a_reject_below_the_dlq_bound_does_not_scan_the_ring)
{
	struct shmq_config c = tq_config(4096);
	shmq_t *q = tq_mkq(&c);
	tq_send_u32(q, 1);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	int scanned = 0;
	shmq_hook_arm("dlq-collect", mark, &scanned);
	cr_assert_eq(shmq_reject(q, &m), 0);
	cr_expect_eq(scanned, 0, "the DLQ holds 1 letter: no pass over the ring");
	shmq_close(q);
}

Test(dlq, a_dead_letter_left_uncounted_by_a_killed_rejecter_is_dropped_by_the_next_pass)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(16);
	c.dlq_max = 2;
	c.reclaim_interval_ms = 0; /* reclaim only when the test says */
	shmq_t *q = tq_create(name, &c);
	tq_send_u32(q, 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *cq;
		struct shmq_msg m;
		if (shmq_open(name, &cq) || shmq_recv(cq, &m, 0))
			_exit(1);
		shmq_fault_arm("dead-letter-before-count", 1);
		shmq_reject(cq, &m);
		_exit(2);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the child did not die at its fault point");
	reject_all(q, (uint32_t[]){1, 2}, 2);
	struct shmq_dead_letter dl[4];
	cr_expect_eq(shmq_dlq_list(q, dl, 4), 3, "the uncounted letter delays the drop");
	cr_assert_geq(shmq_reclaim(q, NULL), 0);
	cr_assert_eq(shmq_dlq_list(q, dl, 4), 2, "the pass saw 3 letters and dropped the oldest");
	cr_expect_eq(payload_u32(dl[0].data), 1);
	cr_expect_eq(payload_u32(dl[1].data), 2);
	cr_expect_eq(tq_stats(q).dlq_dropped, 1);
	shmq_close(q);
}

/* Between a reclaim pass's read of a dead consumer's lease (slot 0 of 2) and its look at the lease
 * word (hook reclaim-leased-seen): another pass requeued it, and requeue_and_reuse's consumer took
 * it, acked it, and leased the slot's next message. */
Test(dlq, a_stale_reclaim_of_a_dead_consumers_lease_leaves_the_reused_slots_live_lease_alone)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(2);
	c.retry_base_ms = 0;
	c.retry_max_ms = 0;
	c.reclaim_interval_ms = 0; /* reclaim only when the test says */
	shmq_t *q = tq_create(name, &c);
	tq_send_u32(q, 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *cq;
		struct shmq_msg m;
		if (shmq_open(name, &cq) || shmq_recv(cq, &m, 0) || m.slot != 0)
			_exit(1);
		_exit(0); /* dies holding the lease */
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the consumer did not lease the message");
	struct lap_race r = {0};
	cr_assert_eq(shmq_open(name, &r.other), 0);
	shmq_hook_arm("reclaim-leased-seen", requeue_and_reuse, &r);
	shmq_reclaim(q, NULL);
	cr_assert(r.ok, "the requeue, redelivery, reuse and new lease in between did not happen");
	expect_live_lease_untouched(q, &r);
	shmq_close(r.other);
	shmq_close(q);
}

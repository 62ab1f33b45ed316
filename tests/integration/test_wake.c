/* SPDX-License-Identifier: MIT */
/*
 * Sleeping and waking: receivers and senders asleep in a futex wait inside the segment, and what
 * wakes them. Wake-ups are counted, never timed: through the futex words' sequences (each wake-up
 * call bumps its word) and, in test builds, shmq_test_woken() (sleepers the kernel reported woken
 * by this process's wake-ups). Sleepers are real processes; a sleeper is "asleep" once it has
 * counted a wait and its state in /proc is S (the only sleep after that count is the futex wait).
 * Children report through exit codes and pipes; they never call Criterion's asserts.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "internal.h"
#include "shmq.h"

TestSuite(wake, .fini = tq_cleanup, .timeout = 60);

#define BOUND_MS 5000 /* "returns at all" bound of the hang tests */

/* 'S' (or another state letter) of process pid, 0 if it cannot be read */
static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* the command name may hold anything */
	return p && p[1] == ' ' ? p[2] : 0;
}

/* Waits (bounded) until every one of the n processes is asleep and the queue has counted at least
 * `waits` sleeps of the given kind (consumer or producer). */
static void await_asleep(shmq_t *q, const pid_t *pid, int n, uint64_t waits, int producers)
{
	for (int k = 0; k < BOUND_MS; k++) {
		struct shmq_stats st = tq_stats(q);
		int asleep = (producers ? st.producer_waits : st.consumer_waits) >= waits;
		for (int i = 0; i < n && asleep; i++)
			asleep = proc_state(pid[i]) == 'S';
		if (asleep)
			return;
		tq_sleep_ms(1);
	}
	cr_assert_fail("the sleepers never fell asleep");
}

/* A child that receives one message (timeout -1), writes its id to fd, then waits to be killed. */
static pid_t receiver_child(const char *name, int fd)
{
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid)
		return pid;
	shmq_t *q;
	struct shmq_msg m;
	if (shmq_open(name, &q) || shmq_recv(q, &m, -1))
		_exit(1);
	(void)!write(fd, &m.id, sizeof(m.id));
	for (;;)
		pause();
}

/* A child that sends payload with timeout_ms, SIGKILLed at fault point `fault` (NULL: none);
 * exits 3 if it returns from the send. */
static pid_t producer_child(const char *name, const char *fault, const char *payload, int timeout_ms)
{
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid)
		return pid;
	shmq_t *q;
	if (shmq_open(name, &q))
		_exit(1);
	if (fault)
		shmq_fault_arm(fault, 1);
	shmq_send(q, payload, strlen(payload), timeout_ms);
	_exit(3);
}

/* 1 if pid exits with status 0 within BOUND_MS (it is killed otherwise). */
static int exits_in_bound(pid_t pid)
{
	int st;
	for (int k = 0; k < BOUND_MS; k++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) && WEXITSTATUS(st) == 0;
		tq_sleep_ms(1);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return 0;
}

static void kill_wait(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static void expect_killed_at(pid_t pid, const char *point)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the producer did not die at %s", point);
}

/* ---- item: a producer killed between its publish and its wake-up ----------------------------- */

Test(wake, a_consumer_asleep_without_timeout_gets_a_message_whose_producer_died_before_waking_it)
{
	struct shmq_config c = tq_config(16);
	c.reclaim_interval_ms = 0; /* nobody runs reclaim passes: no other reason to wake */
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);

	pid_t cons = fork();
	cr_assert_neq(cons, -1);
	if (cons == 0) {
		shmq_t *cq;
		struct shmq_msg m;
		if (shmq_open(name, &cq) || shmq_recv(cq, &m, -1))
			_exit(1);
		_exit(m.len == 5 && !memcmp(m.data, "hello", 5) ? 0 : 2);
	}
	await_asleep(q, &cons, 1, 1, 0);

	expect_killed_at(producer_child(name, "send-before-notify", "hello", 0), "send-before-notify");
	cr_expect(exits_in_bound(cons), "the sleeping consumer never received the published message");
	shmq_close(q);
}

/* ---- item: timeout 0 never waits -------------------------------------------------------------- */

Test(wake, a_timeout_zero_receive_never_sleeps_on_a_slot_being_written)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, 5, &r, 0), 0);
	memcpy(r.data, "hello", 5);
	uint64_t before = tq_stats(q).consumer_waits;
	struct shmq_msg m;
	for (int i = 0; i < 4; i++)
		cr_expect_eq(shmq_recv(q, &m, 0), -EAGAIN, "a slot still being written was delivered");
	cr_expect_eq(tq_stats(q).consumer_waits, before, "a timeout-0 receive slept %llu times",
		     (unsigned long long)(tq_stats(q).consumer_waits - before));
	cr_assert_eq(shmq_send_commit(q, &r, 5), 0);
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect(m.len == 5 && !memcmp(m.data, "hello", 5));
	shmq_close(q);
}

/* A producer killed at `point` holds the next ticket (taken, or its slot claimed); a poller that
 * only ever receives with timeout 0 must get past it to the message sent after it, by itself:
 * reclaim passes are off. */
static void zero_poller_passes_a_producer_killed_at(const char *point)
{
	struct shmq_config c = tq_config(16);
	c.reclaim_interval_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	expect_killed_at(producer_child(name, point, "lost", 0), point);
	cr_assert_eq(shmq_send(q, "after", 5, 0), 0);
	struct shmq_msg m;
	int r = -EAGAIN;
	for (int k = 0; k < BOUND_MS && r == -EAGAIN; k++) {
		if ((r = shmq_recv(q, &m, 0)) == -EAGAIN)
			tq_sleep_ms(1);
	}
	cr_assert_eq(r, 0, "a timeout-0 poller never got past a producer killed at %s", point);
	cr_expect(m.len == 5 && !memcmp(m.data, "after", 5));
	cr_expect_eq(tq_stats(q).consumer_waits, 0, "a timeout-0 receive slept");
	shmq_close(q);
}

Test(wake, timeout_zero_polls_step_over_a_ticket_whose_producer_died_before_claiming_it)
{
	zero_poller_passes_a_producer_killed_at("send-after-ticket");
}

Test(wake, timeout_zero_polls_retire_a_slot_whose_producer_died_writing_it)
{
	zero_poller_passes_a_producer_killed_at("send-after-claim");
}

/* ---- item: a sleeper killed asleep ------------------------------------------------------------ */

#define AFTER_KILL 20 /* sends (acks) after the kill */

Test(wake, a_consumer_killed_asleep_costs_later_sends_one_wake_up_at_most)
{
	struct shmq_config c = tq_config(16);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	pid_t cons[3];
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	for (int i = 0; i < 3; i++)
		cons[i] = receiver_child(name, fds[1]);
	await_asleep(q, cons, 3, 3, 0);
	for (int i = 0; i < 3; i++)
		kill_wait(cons[i]);

	uint32_t seq0 = atomic_load(&q->hdr->data_seq);
	struct shmq_msg m;
	for (int i = 0; i < AFTER_KILL; i++) {
		cr_assert_eq(shmq_send(q, "x", 1, 0), 0);
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_assert_eq(shmq_ack(q, &m), 0);
	}
	uint32_t calls = atomic_load(&q->hdr->data_seq) - seq0;
	cr_expect_leq(calls, 1, "%u sends after three sleepers were killed made %u wake-up calls", AFTER_KILL,
		      calls);
	shmq_close(q);
}

Test(wake, a_producer_killed_asleep_on_a_full_ring_costs_later_acks_one_wake_up_at_most)
{
	struct shmq_config c = tq_config(16);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	for (uint32_t i = 0; i < 16; i++)
		tq_send_u32(q, i);
	pid_t prod = producer_child(name, NULL, "x", -1);
	await_asleep(q, &prod, 1, 1, 1);
	kill_wait(prod);

	uint32_t seq0 = atomic_load(&q->hdr->space_seq);
	struct shmq_msg m;
	for (int i = 0; i < AFTER_KILL; i++) {
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_assert_eq(shmq_ack(q, &m), 0);
		cr_assert_eq(shmq_send(q, "y", 1, 0), 0);
	}
	uint32_t calls = atomic_load(&q->hdr->space_seq) - seq0;
	cr_expect_leq(calls, 1, "%u acks after a sleeping producer was killed made %u wake-up calls",
		      AFTER_KILL, calls);
	shmq_close(q);
}

/* ---- item: one message wakes one sleeper ------------------------------------------------------ */

#define HERD 8

/* Reads one id from fd within BOUND_MS; 0 if none came. */
static int read_id(int fd, uint64_t *id)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, BOUND_MS) == 1 && read(fd, id, sizeof(*id)) == (ssize_t)sizeof(*id);
}

Test(wake, each_message_wakes_one_of_eight_sleeping_consumers_while_the_first_woken_is_busy)
{
	struct shmq_config c = tq_config(16);
	c.reclaim_interval_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	pid_t cons[HERD];
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	for (int i = 0; i < HERD; i++)
		cons[i] = receiver_child(name, fds[1]);
	await_asleep(q, cons, HERD, HERD, 0);

	/* each woken child takes its message and keeps it (busy): the next message must wake another */
	for (uint32_t k = 0; k < 2; k++) {
		uint64_t w0 = shmq_test_woken(), id;
		tq_send_u32(q, k);
		uint64_t woken = shmq_test_woken() - w0;
		cr_expect_eq(woken, 1, "message %u woke %llu of %d sleeping consumers", k,
			     (unsigned long long)woken, HERD - (int)k);
		cr_assert(read_id(fds[0], &id), "no consumer received message %u", k);
		cr_expect_eq(id, k);
		/* the rest asleep again (the one that took it sleeps in pause(): S too) */
		await_asleep(q, cons, HERD, HERD, 0);
	}
	for (int i = 0; i < HERD; i++)
		kill_wait(cons[i]);
	shmq_close(q);
}

/* ---- item: a redrive or a requeue of n messages wakes n sleepers ------------------------------- */

#define DUE_NOW 4 /* messages made due at once, for HERD sleepers */

/* Starts HERD receiver children and waits until they are all asleep. */
static void start_sleepers(shmq_t *q, const char *name, pid_t *cons, int fd)
{
	for (int i = 0; i < HERD; i++)
		cons[i] = receiver_child(name, fd);
	await_asleep(q, cons, HERD, HERD, 0);
}

/* Each of the DUE_NOW messages reached a different child, then they all die. */
static void expect_all_taken(int fd, pid_t *cons)
{
	for (int k = 0; k < DUE_NOW; k++) {
		uint64_t id;
		cr_expect(read_id(fd, &id), "only %d of the %d messages were received", k, DUE_NOW);
	}
	for (int i = 0; i < HERD; i++)
		kill_wait(cons[i]);
}

Test(wake, a_redrive_of_several_letters_wakes_as_many_sleeping_consumers)
{
	struct shmq_config c = tq_config(16);
	c.reclaim_interval_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	for (uint32_t k = 0; k < DUE_NOW; k++) {
		struct shmq_msg m;
		tq_send_u32(q, k);
		cr_assert_eq(shmq_recv(q, &m, 0), 0);
		cr_assert_eq(shmq_reject(q, &m), 0);
	}
	pid_t cons[HERD];
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	start_sleepers(q, name, cons, fds[1]);
	uint64_t w0 = shmq_test_woken();
	cr_assert_eq(shmq_dlq_redrive(q, UINT32_MAX), DUE_NOW);
	uint64_t woken = shmq_test_woken() - w0;
	cr_expect_eq(woken, DUE_NOW, "%d letters redriven, due now, woke %llu of %d sleepers", DUE_NOW,
		     (unsigned long long)woken, HERD);
	expect_all_taken(fds[0], cons);
	shmq_close(q);
}

Test(wake, a_reclaim_that_requeues_several_leases_of_a_dead_consumer_wakes_as_many_sleepers)
{
	struct shmq_config c = tq_config(16);
	c.reclaim_interval_ms = 0; /* reclaim only when the test says */
	c.retry_base_ms = 0;	   /* requeued messages are due at once */
	c.retry_max_ms = 0;
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	for (uint32_t k = 0; k < DUE_NOW; k++)
		tq_send_u32(q, k);
	pid_t dead = fork();
	cr_assert_neq(dead, -1);
	if (dead == 0) {
		shmq_t *cq;
		struct shmq_msg m[DUE_NOW];
		if (shmq_open(name, &cq) || shmq_recv_batch(cq, m, DUE_NOW, 0) != DUE_NOW)
			_exit(1);
		_exit(0); /* leaves its leases behind */
	}
	cr_assert(exits_in_bound(dead), "the consumer did not lease the messages");
	pid_t cons[HERD];
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	start_sleepers(q, name, cons, fds[1]);
	uint64_t w0 = shmq_test_woken();
	struct shmq_reclaim_result res;
	cr_assert_eq(shmq_reclaim(q, &res), DUE_NOW);
	cr_assert_eq(res.dead_owner, DUE_NOW);
	uint64_t woken = shmq_test_woken() - w0;
	cr_expect_eq(woken, DUE_NOW, "%d leases requeued, due now, woke %llu of %d sleepers", DUE_NOW,
		     (unsigned long long)woken, HERD);
	expect_all_taken(fds[0], cons);
	shmq_close(q);
}

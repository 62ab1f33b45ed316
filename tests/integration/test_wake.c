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

static void kill_wait(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
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
	pid_t prod = fork();
	cr_assert_neq(prod, -1);
	if (prod == 0) {
		shmq_t *pq;
		if (shmq_open(name, &pq))
			_exit(1);
		shmq_send(pq, "x", 1, -1);
		_exit(2);
	}
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

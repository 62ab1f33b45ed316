/* SPDX-License-Identifier: MIT */
/*
 * Handles across fork(). A child shares its parent's open file descriptions, so it could share the
 * OFD lock that says "this participant is alive": these tests prove a child neither ends its
 * parent's participation (by closing an inherited handle) nor keeps a dead parent looking alive
 * (by merely living), and that a child which wants the queue opens it itself. Children report
 * through their exit status; only the test process asserts.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "shmq.h"

TestSuite(fork, .fini = tq_cleanup);

#define PAYLOAD 100

static shmq_t *mkq(const char *name)
{
	struct shmq_config c = tq_config(8);
	c.reclaim_interval_ms = 0; /* only the test's own passes repair anything */
	return tq_create(name, &c);
}

static int exit_status(pid_t pid)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(fork, a_child_closing_an_inherited_handle_leaves_the_parents_record_and_slot_alone)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name);
	struct shmq_reservation r;
	cr_assert_eq(shmq_send_reserve(q, PAYLOAD, &r, 0), 0);
	memset(r.data, 'p', PAYLOAD / 2);

	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_close(q);
		_exit(0);
	}
	cr_assert_eq(exit_status(pid), 0);

	/* a third participant's pass: the parent is alive, so its half-written slot stays */
	shmq_t *w;
	cr_assert_eq(shmq_open(name, &w), 0);
	struct shmq_reclaim_result res;
	shmq_reclaim(w, &res);
	cr_expect_eq(res.retired_writes, 0, "the parent's slot was retired under it");
	cr_expect_eq(res.participants_freed, 0, "the parent's record was freed under it");
	cr_expect_eq(tq_stats(w).participants, 2, "the parent and the third participant are alive");

	memset((char *)r.data + PAYLOAD / 2, 'p', PAYLOAD / 2);
	int err = shmq_send_commit(q, &r, PAYLOAD);
	cr_expect_eq(err, 0, "the parent's commit after the child's close: %s", shmq_strerror(err));
	struct shmq_msg m;
	if (err == 0) {
		cr_assert_eq(shmq_recv(w, &m, 0), 0);
		cr_expect_eq(m.len, PAYLOAD);
		char want[PAYLOAD];
		memset(want, 'p', sizeof(want));
		cr_expect(m.len == PAYLOAD && !memcmp(m.data, want, PAYLOAD), "the message is whole");
		shmq_ack(w, &m);
	}
	shmq_close(w);
	shmq_close(q);
}

/* The child's side of the test below: 0 when every step went as documented. */
static int child_uses_its_own_handle(const char *name, shmq_t *inherited)
{
	struct shmq_msg m;
	if (shmq_send(inherited, "x", 1, 0) != -ECHILD || shmq_recv(inherited, &m, 0) != -ECHILD)
		return 2;
	shmq_close(inherited); /* only unmaps: the parent's record stays */
	shmq_t *own;
	if (shmq_open(name, &own))
		return 3;
	if (shmq_recv(own, &m, 1000) || m.len != 6 || memcmp(m.data, "parent", 6) || shmq_ack(own, &m))
		return 4;
	if (shmq_send(own, "child", 5, 0))
		return 5;
	shmq_close(own);
	return 0;
}

Test(fork, a_child_gets_echild_from_an_inherited_handle_and_uses_a_queue_it_opens_itself)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name);
	cr_assert_eq(shmq_send(q, "parent", 6, 0), 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0)
		_exit(child_uses_its_own_handle(name, q));
	cr_expect_eq(exit_status(pid), 0, "the child's steps (see child_uses_its_own_handle)");
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0, "the parent's handle works on");
	cr_expect(m.len == 5 && !memcmp(m.data, "child", 5));
	shmq_ack(q, &m);
	cr_expect_eq(tq_stats(q).participants, 1, "the child's records are gone, the parent's is not");
	shmq_close(q);
}

#define GRANDCHILDREN 40
#define CHURNERS 2
#define CHURN_HANDLES 150

static const char *churn_name;
static shmq_t *churned[CHURNERS][CHURN_HANDLES];

/* Opens handles (kept open: the process dies with them) while the main thread forks. */
static void *churn(void *arg)
{
	shmq_t **h = arg;
	for (int i = 0; i < CHURN_HANDLES; i++)
		if (shmq_open(churn_name, &h[i]))
			h[i] = NULL;
	return NULL;
}

/* Forks a participant of name that reserves a slot, starts `churners` threads opening handles and
 * forks n children, each landing wherever those threads are (inside an open, or between two).
 * Each child reports itself once fork() returned in it: by then it has closed its copies of the
 * parent's lock descriptions (until then it holds them, like any fork child). Once all n have
 * reported, kills the participant; the children live on, in kids[0..n). */
static void kill_forking_parent(const char *name, int churners, pid_t *kids, int n)
{
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	pid_t parent = fork();
	cr_assert(parent >= 0);
	if (parent == 0) {
		shmq_t *pq;
		struct shmq_reservation r;
		if (shmq_open(name, &pq) || shmq_send_reserve(pq, PAYLOAD, &r, 0))
			_exit(1);
		churn_name = name;
		pthread_t t;
		for (int i = 0; i < churners; i++)
			if (pthread_create(&t, NULL, churn, churned[i]))
				_exit(1);
		for (int i = 0; i < n; i++) {
			if (fork() == 0) {
				pid_t me = getpid();
				(void)!write(fds[1], &me, sizeof(me));
				for (;;)
					pause();
			}
		}
		for (;;)
			pause();
	}
	close(fds[1]);
	for (int i = 0; i < n; i++)
		cr_assert_eq(read(fds[0], &kids[i], sizeof(kids[i])), (ssize_t)sizeof(kids[i]), "child %d",
			     i);
	close(fds[0]);
	kill(parent, SIGKILL);
	waitpid(parent, NULL, 0);
}

/* Ends the children of kill_forking_parent (not ours to reap: init is their parent now). */
static void kill_all(const pid_t *kids, int n)
{
	for (int i = 0; i < n; i++)
		if (kids[i] > 0)
			kill(kids[i], SIGKILL);
}

Test(fork, a_parent_killed_holding_a_reserved_slot_is_seen_dead_while_its_forked_child_lives)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name);
	pid_t child;
	kill_forking_parent(name, 0, &child, 1);
	struct shmq_reclaim_result res;
	shmq_reclaim(q, &res);
	kill_all(&child, 1);
	cr_expect_eq(res.retired_writes, 1, "the dead parent's reserved slot was retired");
	cr_expect_eq(res.participants_freed, 1, "the dead parent's record was freed");
	tq_send_u32(q, 7); /* the queue flows past the retired slot */
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(q, &m, 0), 0);
	shmq_close(q);
}

Test(fork, a_parent_forking_while_its_threads_open_handles_is_wholly_dead_once_killed)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name);
	pid_t kids[GRANDCHILDREN];
	kill_forking_parent(name, CHURNERS, kids, GRANDCHILDREN);
	struct shmq_reclaim_result res;
	shmq_reclaim(q, &res);
	uint32_t alive = tq_stats(q).participants;
	kill_all(kids, GRANDCHILDREN);
	cr_expect_eq(res.retired_writes, 1, "the dead parent's reserved slot was retired");
	cr_expect_eq(alive, 1, "%u participants alive after the parent's death, want only ours", alive);
	shmq_close(q);
}

/* SPDX-License-Identifier: MIT */
/*
 * Event loops: the pollable descriptor (shmq_fd, shmq_fd_arm) and the multi-queue wait
 * (shmq_wait_any). Producers are real processes, the waiter is the test process. Nothing is timed:
 * a wake-up is seen as readability (and, in test builds, as what made the descriptor readable:
 * shmq_test_fd_pending says datagram or timer); hangs are bounded by BOUND_MS, a failure condition
 * far past every wake-up and safety net.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "internal.h"
#include "shmq.h"

TestSuite(fd, .fini = tq_cleanup, .timeout = 120);

#define BOUND_MS 5000 /* "returns at all": far past the safety net (1 s) and any wake-up */

static int readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r = poll(&p, 1, ms);
	cr_assert_geq(r, 0, "poll: %s", strerror(errno));
	return r == 1 && (p.revents & POLLIN);
}

/* Receives with timeout 0 until -EAGAIN, then arms: the loop of the header; 0 once armed. */
static int drain_and_arm(shmq_t *q, unsigned *got)
{
	for (;;) {
		struct shmq_msg m;
		int r = shmq_recv(q, &m, 0);
		if (r == 0) {
			cr_assert_eq(shmq_ack(q, &m), 0);
			if (got)
				++*got;
			continue;
		}
		cr_assert_eq(r, -EAGAIN, "recv: %s", shmq_strerror(r));
		r = shmq_fd_arm(q);
		cr_assert_geq(r, 0, "arm: %s", shmq_strerror(r));
		if (r == 0)
			return 0;
	}
}

/* q's descriptor, armed on an empty queue */
static int armed_fd(shmq_t *q)
{
	int fd = shmq_fd(q);
	cr_assert_geq(fd, 0, "shmq_fd: %s", shmq_strerror(fd));
	drain_and_arm(q, NULL);
	return fd;
}

/* A child that opens name, waits delay_ms, sends v and exits 0 (1 on any failure). */
static pid_t sender(const char *name, uint32_t v, unsigned delay_ms, const char *fault)
{
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	shmq_t *q;
	if (shmq_open(name, &q))
		_exit(1);
	if (fault)
		shmq_fault_arm(fault, 1);
	tq_sleep_ms(delay_ms);
	_exit(shmq_send(q, &v, sizeof(v), 0) ? 1 : 0);
}

static int exit_code(pid_t pid)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void sock_path(shmq_t *q, char *out, size_t n)
{
	struct sockaddr_un a;
	shmq_fd_path(q, q->part, q->epoch, &a);
	snprintf(out, n, "%s", a.sun_path);
}

Test(fd, an_armed_descriptor_on_an_empty_queue_is_not_readable)
{
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_mkq(&c);
	int fd = shmq_fd(q);
	cr_assert_geq(fd, 0, "shmq_fd: %s", shmq_strerror(fd));
	cr_expect_eq(shmq_fd(q), fd, "one descriptor per handle");
	drain_and_arm(q, NULL);
	cr_expect_not(readable(fd, 0), "readable at once on an empty queue");
	cr_expect_not(readable(fd, 200), "readable on an empty queue, before the safety net");
	cr_expect_eq(shmq_test_fd_pending(q), 0);
	shmq_close(q);
}

Test(fd, a_send_from_another_process_makes_an_armed_descriptor_readable)
{
	struct shmq_config c = tq_config(64);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	shmq_test_fd_no_safety_net(1); /* only the producer's wake-up can make it readable */
	int fd = armed_fd(q);
	pid_t pid = sender(name, 42, 20, NULL);
	cr_assert(readable(fd, BOUND_MS), "the send did not make the descriptor readable");
	cr_expect_eq(shmq_test_fd_pending(q) & 1, 1, "readable by the producer's datagram");
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_expect_eq(*(const uint32_t *)m.data, 42u);
	shmq_ack(q, &m);
	cr_expect_eq(exit_code(pid), 0);
	shmq_close(q);
}

Test(fd, a_drained_and_rearmed_descriptor_does_not_stay_readable)
{
	struct shmq_config c = tq_config(64);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	int fd = shmq_fd(q);
	cr_assert_geq(fd, 0);
	for (int round = 0; round < 3; round++) {
		drain_and_arm(q, NULL);
		pid_t pid = sender(name, (uint32_t)round, 10, NULL);
		cr_assert(readable(fd, BOUND_MS), "round %d: not woken", round);
		cr_expect_eq(exit_code(pid), 0);
		unsigned got = 0;
		drain_and_arm(q, &got);
		cr_expect_eq(got, 1u, "round %d: received %u", round, got);
		/* level-triggered until the arm: the arm drained the datagram, nothing is due */
		cr_expect_not(readable(fd, 0), "round %d: still readable after drain and re-arm", round);
		cr_expect_eq(shmq_test_fd_pending(q), 0, "round %d", round);
	}
	shmq_close(q);
}

Test(fd, an_arm_after_a_message_arrived_answers_1_instead_of_waiting)
{
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_mkq(&c);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), -EAGAIN);
	tq_send_u32(q, 7); /* between the receive's -EAGAIN and the arm */
	cr_expect_eq(shmq_fd_arm(q), 1);
	cr_expect_eq(shmq_recv(q, &m, 0), 0);
	shmq_ack(q, &m);
	shmq_close(q);
}

Test(fd, a_waker_killed_before_its_datagram_leaves_the_waiter_to_its_safety_net)
{
	struct shmq_config c = tq_config(64);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	int fd = armed_fd(q);
	/* the producer publishes, takes our bit and dies before its datagram */
	pid_t pid = sender(name, 5, 10, "fd-wake-before-send");
	cr_expect_eq(exit_code(pid), 128 + SIGKILL, "the producer was not killed at its wake-up");
	cr_assert(readable(fd, BOUND_MS), "nothing woke the waiter");
	cr_expect_eq(shmq_test_fd_pending(q), 2, "readable by its timer alone");
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0, "the message is there");
	cr_expect_eq(*(const uint32_t *)m.data, 5u);
	shmq_ack(q, &m);
	shmq_close(q);
}

Test(fd, closing_a_handle_removes_its_descriptors_socket_file)
{
	struct shmq_config c = tq_config(64);
	shmq_t *q = tq_mkq(&c);
	cr_assert_geq(shmq_fd(q), 0);
	char path[128];
	struct stat st;
	sock_path(q, path, sizeof(path));
	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	cr_expect(S_ISSOCK(st.st_mode));
	cr_expect_eq(st.st_mode & 0777, 0600, "the segment's mode");
	shmq_close(q);
	cr_expect_neq(stat(path, &st), 0, "%s outlived its handle", path);
}

Test(fd, a_dead_participants_socket_file_is_removed_by_recovery)
{
	struct shmq_config c = tq_config(64);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	int p[2];
	cr_assert_eq(pipe(p), 0);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *cq;
		char path[128];
		if (shmq_open(name, &cq) || shmq_fd(cq) < 0 || shmq_fd_arm(cq) < 0)
			_exit(1);
		sock_path(cq, path, sizeof(path));
		(void)!write(p[1], path, sizeof(path));
		for (;;)
			pause();
	}
	char path[128];
	cr_assert_eq(read(p[0], path, sizeof(path)), (ssize_t)sizeof(path));
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	kill(pid, SIGKILL);
	exit_code(pid);
	cr_assert_geq(shmq_reclaim(q, NULL), 0);
	cr_expect_neq(stat(path, &st), 0, "%s outlived its dead owner's record", path);
	/* and its bit, left set by the dead waiter, costs the next send nothing but one datagram */
	tq_send_u32(q, 1);
	shmq_close(q);
}

Test(fd, a_waiter_killed_while_armed_does_not_take_a_live_waiters_wake_up)
{
	struct shmq_config c = tq_config(64);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c); /* record 0 */
	int p[2];
	cr_assert_eq(pipe(p), 0);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		shmq_t *cq; /* record 1: a lower bit than the live waiter's, so a waker takes it first */
		struct shmq_msg m;
		if (shmq_open(name, &cq) || shmq_recv(cq, &m, 0) != -EAGAIN || shmq_fd_arm(cq) != 0)
			_exit(1);
		(void)!write(p[1], "x", 1);
		for (;;)
			pause();
	}
	char x;
	cr_assert_eq(read(p[0], &x, 1), 1);
	kill(pid, SIGKILL);
	exit_code(pid);
	shmq_t *w; /* record 2 */
	cr_assert_eq(shmq_open(name, &w), 0);
	shmq_test_fd_no_safety_net(1);
	int fd = armed_fd(w);
	pid = sender(name, 3, 10, NULL);
	cr_expect(readable(fd, BOUND_MS), "the dead waiter took the only wake-up");
	cr_expect_eq(shmq_test_fd_pending(w) & 1, 1);
	cr_expect_eq(exit_code(pid), 0);
	shmq_reclaim(q, NULL); /* frees the dead waiter's record, and removes its socket file */
	shmq_close(w);
	shmq_close(q);
}

Test(fd, a_forked_childs_copy_fails_and_its_close_leaves_the_parents_descriptor)
{
	struct shmq_config c = tq_config(64);
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, &c);
	int fd = armed_fd(q);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		int ok = shmq_fd(q) == -ECHILD && shmq_fd_arm(q) == -ECHILD;
		shmq_close(q);
		_exit(ok ? 0 : 1);
	}
	cr_expect_eq(exit_code(pid), 0, "the child's calls did not fail with -ECHILD");
	char path[128];
	struct stat st;
	sock_path(q, path, sizeof(path));
	cr_expect_eq(stat(path, &st), 0, "the child's close removed the parent's socket");
	shmq_test_fd_no_safety_net(1);
	pid = sender(name, 9, 10, NULL);
	cr_expect(readable(fd, BOUND_MS), "the parent's descriptor is not woken any more");
	cr_expect_eq(shmq_test_fd_pending(q) & 1, 1);
	cr_expect_eq(exit_code(pid), 0);
	shmq_close(q);
}

/* ---- shmq_wait_any ---------------------------------------------------------------------------- */

static void three(shmq_t **qs, const char **names)
{
	struct shmq_config c = tq_config(64);
	static const char *tags[] = {"a", "b", "c"};
	for (int i = 0; i < 3; i++) {
		names[i] = tq_name(tags[i]);
		qs[i] = tq_create(names[i], &c);
	}
}

Test(fd, wait_any_returns_the_index_of_the_queue_a_message_arrives_in)
{
	shmq_t *qs[3];
	const char *names[3];
	three(qs, names);
	for (int i = 0; i < 3; i++) {
		pid_t pid = sender(names[(i + 1) % 3], 1, 30, NULL);
		int r = shmq_wait_any(qs, 3, BOUND_MS);
		cr_expect_eq(r, (i + 1) % 3, "woke for queue %d", r);
		cr_expect_eq(exit_code(pid), 0);
		struct shmq_msg m;
		if (r >= 0 && shmq_recv(qs[r], &m, 0) == 0)
			shmq_ack(qs[r], &m);
	}
	for (int i = 0; i < 3; i++)
		shmq_close(qs[i]);
}

Test(fd, wait_any_returns_at_once_when_a_queue_already_has_a_message)
{
	shmq_t *qs[3];
	const char *names[3];
	three(qs, names);
	tq_send_u32(qs[2], 1);
	cr_expect_eq(shmq_wait_any(qs, 3, 0), 2);
	cr_expect_eq(shmq_wait_any(qs, 3, -1), 2);
	for (int i = 0; i < 3; i++)
		shmq_close(qs[i]);
}

Test(fd, wait_any_turns_to_each_ready_queue_in_turn)
{
	shmq_t *qs[3];
	const char *names[3];
	three(qs, names);
	for (int k = 0; k < 3; k++) {
		tq_send_u32(qs[0], 1);
		tq_send_u32(qs[2], 1);
	}
	int seen = 0;
	for (int k = 0; k < 3; k++) {
		int r = shmq_wait_any(qs, 3, 0);
		cr_assert(r == 0 || r == 2, "returned %d", r);
		seen |= 1 << r;
		struct shmq_msg m; /* the contract: receive from the queue returned */
		cr_assert_eq(shmq_recv(qs[r], &m, 0), 0);
		shmq_ack(qs[r], &m);
	}
	cr_expect_eq(seen, 5, "a ready queue was never returned (seen %#x)", seen);
	for (int i = 0; i < 3; i++)
		shmq_close(qs[i]);
}

Test(fd, wait_any_honours_its_timeout)
{
	shmq_t *qs[3];
	const char *names[3];
	three(qs, names);
	double t0 = tq_now_ms();
	cr_expect_eq(shmq_wait_any(qs, 3, 100), -EAGAIN);
	cr_expect_geq(tq_now_ms() - t0, 100 - tq_slack_ms(), "returned before its timeout");
	cr_expect_eq(shmq_wait_any(qs, 3, 0), -EAGAIN);
	for (int i = 0; i < 3; i++)
		shmq_close(qs[i]);
}

Test(fd, wait_any_without_futex_waitv_still_wakes_for_a_message)
{
	shmq_t *qs[3];
	const char *names[3];
	three(qs, names);
	shmq_test_no_futex_waitv(1);
	pid_t pid = sender(names[1], 1, 30, NULL);
	cr_expect_eq(shmq_wait_any(qs, 3, BOUND_MS), 1);
	cr_expect_eq(exit_code(pid), 0);
	for (int i = 0; i < 3; i++)
		shmq_close(qs[i]);
}

Test(fd, wait_any_rejects_bad_arguments_and_inherited_handles)
{
	shmq_t *qs[3];
	const char *names[3];
	three(qs, names);
	cr_expect_eq(shmq_wait_any(qs, 0, 0), -EINVAL);
	cr_expect_eq(shmq_wait_any(qs, SHMQ_WAIT_ANY_MAX + 1, 0), -EINVAL);
	cr_expect_eq(shmq_wait_any(NULL, 1, 0), -EINVAL);
	shmq_t *withnull[2] = {qs[0], NULL};
	cr_expect_eq(shmq_wait_any(withnull, 2, 0), -EINVAL);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0)
		_exit(shmq_wait_any(qs, 3, 0) == -ECHILD ? 0 : 1);
	cr_expect_eq(exit_code(pid), 0, "a child's wait on inherited handles did not fail with -ECHILD");
	for (int i = 0; i < 3; i++)
		shmq_close(qs[i]);
}

/* ---- producers racing a poller ---------------------------------------------------------------- */

struct race {
	unsigned producers;
	uint32_t per_producer;
	int kill;		  /* producers arm a fault at a random point of a random send */
	_Atomic uint32_t *sent;	  /* shared: per producer, sends that returned 0 */
	unsigned char *got;	  /* per producer, per message: received */
	unsigned long long waits; /* epoll waits */
	unsigned long long arm1;  /* arms that found a message published after the receive */
	unsigned long long received, dups;
	unsigned killed; /* producers that died by SIGKILL */
};

static const char *const race_faults[] = {"send-after-ticket",	 "send-after-claim",   "send-mid-write",
					  "send-before-publish", "send-before-notify", "fd-wake-before-send"};

static void race_producer(struct race *rc, const char *name, unsigned p)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no producer behind */
	shmq_t *q;
	if (shmq_open(name, &q))
		_exit(1);
	srand((unsigned)getpid());
	if (rc->kill) {
		shmq_fault_arm(race_faults[(unsigned)rand() % (sizeof(race_faults) / sizeof(*race_faults))],
			       1 + (unsigned)rand() % rc->per_producer);
	}
	for (uint32_t s = 0; s < rc->per_producer; s++) {
		uint32_t v[2] = {p, s};
		if (shmq_send(q, v, sizeof(v), -1))
			_exit(2);
		atomic_store_explicit(&rc->sent[p], s + 1, memory_order_relaxed);
		/* a random gap, so the poller often finds the queue empty and the publishes fall
		 * anywhere around its arm */
		for (unsigned k = (unsigned)rand() % 512; k; k--)
			cpu_relax();
	}
	shmq_close(q);
	_exit(0);
}

static int race_take(shmq_t *q, struct race *rc)
{
	struct shmq_msg m;
	int r = shmq_recv(q, &m, 0);
	if (r)
		return r;
	cr_assert_eq(m.len, 8u);
	uint32_t v[2];
	memcpy(v, m.data, sizeof(v));
	cr_assert(v[0] < rc->producers && v[1] < rc->per_producer, "message %u/%u", v[0], v[1]);
	unsigned char *g = &rc->got[(size_t)v[0] * rc->per_producer + v[1]];
	rc->dups += *g;
	*g = 1;
	rc->received++;
	cr_assert_eq(shmq_ack(q, &m), 0);
	return 0;
}

/* every message whose send returned 0 has been received */
static int race_complete(const struct race *rc)
{
	for (unsigned p = 0; p < rc->producers; p++) {
		uint32_t n = atomic_load_explicit(&rc->sent[p], memory_order_relaxed);
		for (uint32_t s = 0; s < n; s++)
			if (!rc->got[(size_t)p * rc->per_producer + s])
				return 0;
	}
	return 1;
}

/* P producer processes send per_producer messages each while this process polls in epoll (edge-
 * triggered: the harder case), draining with timeout-0 receives, until every producer exited and
 * every message it sent was received. */
static void race(struct race *rc, const struct shmq_config *c)
{
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, c);
	size_t sz = rc->producers * sizeof(*rc->sent);
	rc->sent = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(rc->sent, MAP_FAILED);
	rc->got = calloc((size_t)rc->producers * rc->per_producer, 1);
	cr_assert_not_null(rc->got);
	int fd = shmq_fd(q), ep = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_geq(fd, 0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
	cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
	pid_t pids[16];
	cr_assert_leq(rc->producers, 16u);
	for (unsigned p = 0; p < rc->producers; p++) {
		pids[p] = fork();
		cr_assert_neq(pids[p], -1);
		if (pids[p] == 0)
			race_producer(rc, name, p);
	}
	unsigned running = rc->producers;
	double t0 = tq_now_ms(), give_up = t0 + 90000;
	for (;;) {
		while (race_take(q, rc) == 0)
			;
		for (unsigned p = 0; p < rc->producers; p++) {
			int st;
			if (pids[p] > 0 && waitpid(pids[p], &st, WNOHANG) == pids[p]) {
				cr_assert(rc->kill ? !WIFEXITED(st) || WEXITSTATUS(st) == 0
						   : WIFEXITED(st) && WEXITSTATUS(st) == 0,
					  "producer %u: status %#x", p, st);
				pids[p] = 0;
				running--;
				rc->killed += WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
			}
		}
		if (!running && race_complete(rc))
			break;
		cr_assert_lt(tq_now_ms(), give_up, "the race did not finish: %llu received", rc->received);
		int a = shmq_fd_arm(q);
		cr_assert_geq(a, 0, "arm: %s", shmq_strerror(a));
		if (a == 1) {
			rc->arm1++;
			continue;
		}
		rc->waits++;
		if (epoll_wait(ep, &ev, 1, BOUND_MS) == 0 && race_take(q, rc) == 0)
			cr_assert_fail("a lost wake-up: asleep for %d ms with a message there (after %llu)",
				       BOUND_MS, rc->received);
	}
	cr_log_info("%llu messages received, %llu epoll waits, %llu arms answered 1, %u producers killed, "
		    "%.0f ms",
		    rc->received, rc->waits, rc->arm1, rc->killed, tq_now_ms() - t0);
	close(ep);
	munmap(rc->sent, sz);
	free(rc->got);
	shmq_close(q);
}

#ifndef FD_RACE_MESSAGES
#define FD_RACE_MESSAGES 150000 /* make test; bench/fdwake race runs 1,000,000 */
#endif

Test(fd, no_wake_up_is_lost_between_racing_producers_and_an_epoll_poller)
{
	/* no reclaim passes and no safety net: only the producers' datagrams wake the poller, so a
	 * lost wake-up leaves it asleep until BOUND_MS with a message there */
	struct shmq_config c = tq_config(1024);
	c.reclaim_interval_ms = 0;
	shmq_test_fd_no_safety_net(1);
	struct race rc = {.producers = 3, .per_producer = FD_RACE_MESSAGES / 3};
	race(&rc, &c);
	cr_expect_eq(rc.received, (unsigned long long)rc.producers * rc.per_producer);
	cr_expect_eq(rc.dups, 0ull);
}

Test(fd, messages_sent_before_a_producer_is_sigkilled_all_reach_an_epoll_poller)
{
	/* the safety net on, as in production: a producer killed between its publish and its
	 * datagram leaves the message to it */
	struct shmq_config c = tq_config(1024);
	unsigned killed = 0;
	for (int round = 0; round < 4; round++) {
		struct race rc = {.producers = 4, .per_producer = 20000, .kill = 1};
		race(&rc, &c);
		cr_expect_eq(rc.dups, 0ull, "round %d", round);
		killed += rc.killed;
		tq_cleanup();
	}
	cr_expect_gt(killed, 0u, "no producer was killed");
}

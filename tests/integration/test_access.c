/* SPDX-License-Identifier: MIT */
/*
 * Who may open a queue: a segment another user made (squatting its name first) or one that others
 * can write is refused unless the caller trusts its owner or group; a process in another time
 * namespace than the queue's creator is refused, since every deadline in the segment is on the
 * creator's CLOCK_MONOTONIC. The other users are arbitrary uids without a passwd entry, taken by
 * forked children of a root test process (setgroups, setgid, setuid); the time namespace is a
 * grandchild's, after unshare(CLONE_NEWTIME). Tests that cannot set these up (not root, no time
 * namespaces) are skipped with the reason. Children report through exit codes, never Criterion.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "shmq.h"
#include "shmq_inspect.h"

TestSuite(access, .fini = tq_cleanup);

/* shmq_open's errno (0: it opened the queue), as an exit status. */
static int open_errno(const char *name)
{
	shmq_t *q = NULL;
	int r = shmq_open(name, &q);
	shmq_close(q);
	return -r;
}

/* ---- time namespaces --------------------------------------------------------------------------- */

/* Runs fn(name) in a grandchild that lives in a new time namespace whose CLOCK_MONOTONIC is a day
 * ahead of ours; returns its exit status, or -1 after skipping the test when the namespace cannot
 * be made here. */
static int in_time_namespace(int (*fn)(const char *), const char *name)
{
	pid_t c = fork();
	cr_assert_geq(c, 0, "fork: %s", strerror(errno));
	if (c == 0) {
		/* the caller stays in its namespace; its children after this are born in the new one,
		 * whose offsets may be written until the first of them exists */
		if (unshare(CLONE_NEWTIME) < 0)
			_exit(errno == EPERM ? 250 : 251);
		int fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
		const char *off = "monotonic 86400 0\n";
		if (fd < 0 || write(fd, off, strlen(off)) != (ssize_t)strlen(off))
			_exit(252);
		close(fd);
		pid_t g = fork();
		if (g < 0)
			_exit(253);
		if (g == 0)
			_exit(fn(name));
		int st;
		if (waitpid(g, &st, 0) != g || !WIFEXITED(st))
			_exit(254);
		_exit(WEXITSTATUS(st));
	}
	int st;
	cr_assert_eq(waitpid(c, &st, 0), c);
	cr_assert(WIFEXITED(st), "time-namespace child died by signal %d", WTERMSIG(st));
	switch (WEXITSTATUS(st)) {
	case 250:
		cr_skip_test("unshare(CLONE_NEWTIME) is not permitted here (needs CAP_SYS_ADMIN)");
		return -1;
	case 251:
		cr_skip_test("this kernel has no time namespaces (unshare(CLONE_NEWTIME) failed)");
		return -1;
	case 252:
		cr_skip_test("could not set the new time namespace's offsets");
		return -1;
	default:
		return WEXITSTATUS(st);
	}
}

Test(access, a_process_in_another_time_namespace_is_refused_at_open)
{
	const char *n = tq_name(NULL);
	shmq_t *q = tq_create(n, NULL);
	int r = in_time_namespace(open_errno, n);
	cr_expect_eq(r, EXDEV, "shmq_open from a time namespace a day ahead: errno %d (%s), not EXDEV", r,
		     strerror(r));
	shmq_close(q);
}

/* Creates name from inside the namespace and opens it a second time there; 0, or 100 + errno of
 * the create, or the open's errno. The queue stays (with one message) for the test to try. */
static int create_and_reopen(const char *name)
{
	shmq_t *q = NULL, *q2 = NULL;
	int r = shmq_create(name, NULL, &q);
	if (r)
		return 100 + (-r & 0x3f);
	if (shmq_send(q, "x", 1, 0))
		return 99;
	r = shmq_open(name, &q2);
	shmq_close(q2);
	shmq_close(q);
	return -r;
}

Test(access, a_queue_created_in_a_time_namespace_opens_there_and_is_refused_outside)
{
	const char *n = tq_name(NULL);
	int r = in_time_namespace(create_and_reopen, n);
	cr_expect_eq(r, 0, "create and reopen inside the time namespace: %d (%s)", r,
		     r >= 100 ? strerror(r - 100) : strerror(r));
	shmq_t *q = NULL;
	r = shmq_open(n, &q);
	cr_expect_eq(r, -EXDEV, "shmq_open outside the creator's time namespace: %d (%s)", r,
		     shmq_strerror(r));
	shmq_close(q);
}

static void count_errors(void *ctx, int severity, const char *what)
{
	(void)what;
	if (severity == SHMQ_CHECK_ERROR)
		++*(int *)ctx;
}

/* A read-only view opens, snapshots and checks the queue; 0, or the step (1..3) that failed. */
static int inspect_read_only(const char *name)
{
	shmq_view_t *v = NULL;
	struct shmq_snapshot s;
	int errors = 0;
	if (shmq_view_open(name, &v))
		return 1;
	int n = shmq_view_snapshot(v, &s, NULL, 0);
	shmq_view_close(v);
	if (n < 0 || s.stats.ready != 1)
		return 2;
	return shmq_check_name(name, count_errors, &errors) == 0 && errors == 0 ? 0 : 3;
}

/* Inspection writes nothing, so a clock offset cannot make it requeue or expire anything: stat,
 * peek and check work from any time namespace (the ages and lease times they show are on their
 * own clock). */
Test(access, read_only_inspection_works_from_another_time_namespace)
{
	const char *n = tq_name(NULL);
	shmq_t *q = tq_create(n, NULL);
	tq_send_u32(q, 1);
	int r = in_time_namespace(inspect_read_only, n);
	cr_expect_eq(r, 0,
		     "inspection from a time namespace a day ahead failed at step %d (1 open, 2 snapshot, "
		     "3 check)",
		     r);
	shmq_close(q);
}

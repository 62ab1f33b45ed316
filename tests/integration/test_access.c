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

enum ns_where {
	NS_CHILD,   /* in a grandchild born in the new namespace */
	NS_UNSHARER /* in the child that unshared it: still in ours, its children in the new one */
};

/* Runs fn(name) where `where` says, after a child unshared a new time namespace whose
 * CLOCK_MONOTONIC is a day ahead of ours; returns fn's exit status, or -1 after skipping the test
 * when the namespace cannot be made here. */
static int in_time_ns(int (*fn)(const char *), const char *name, enum ns_where where)
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
		if (where == NS_UNSHARER)
			_exit(fn(name));
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

static int in_time_namespace(int (*fn)(const char *), const char *name)
{
	return in_time_ns(fn, name, NS_CHILD);
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

/* A process that unshared a time namespace for its children is still in its own: /proc/self/
 * timens_offsets shows its children's offsets, not its clock's. It opens a queue of its namespace,
 * and one it creates opens for the processes of its namespace (not for its children's). */
Test(access, a_process_that_unshared_a_time_namespace_for_its_children_keeps_its_own_clock)
{
	const char *n = tq_name(NULL);
	shmq_t *q = tq_create(n, NULL);
	int r = in_time_ns(open_errno, n, NS_UNSHARER);
	cr_expect_eq(r, 0, "shmq_open by the unsharer, in our namespace still: errno %d (%s)", r,
		     strerror(r));
	shmq_close(q);
	const char *made = tq_name("made");
	r = in_time_ns(create_and_reopen, made, NS_UNSHARER);
	cr_expect_eq(r, 0, "create and reopen by the unsharer: %d (%s)", r,
		     r >= 100 ? strerror(r - 100) : strerror(r));
	r = shmq_open(made, &q);
	cr_expect_eq(r, 0, "shmq_open of the unsharer's queue from its namespace: %d (%s)", r,
		     shmq_strerror(r));
	shmq_close(q);
	r = in_time_namespace(open_errno, made);
	cr_expect_eq(r, EXDEV,
		     "shmq_open of the unsharer's queue from its children's namespace: errno %d (%s)", r,
		     strerror(r));
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
/* two users and a group no account on a test machine is expected to have */
#define SQUATTER 61001u
#define VICTIM 61002u
#define SHARED_GID 61010u

#define SKIP_NOT_ROOT()                                                                                      \
	do {                                                                                                 \
		if (geteuid() != 0)                                                                          \
			cr_skip_test("needs root, to act as two other users (setuid in forked children)");   \
	} while (0)

/* The exit status of a child that ran fn(name) as uid/gid (with supplementary group supp unless it
 * is 0), or 200 + the step that failed to become that user. */
static int as_user(uid_t uid, gid_t gid, gid_t supp, int (*fn)(const char *), const char *name)
{
	pid_t c = fork();
	cr_assert_geq(c, 0, "fork: %s", strerror(errno));
	if (c == 0) {
		gid_t groups[1] = {supp};
		if (setgroups(supp ? 1 : 0, groups) < 0)
			_exit(201);
		if (setgid(gid) < 0)
			_exit(202);
		if (setuid(uid) < 0)
			_exit(203);
		_exit(fn(name));
	}
	int st;
	cr_assert_eq(waitpid(c, &st, 0), c);
	cr_assert(WIFEXITED(st), "child as uid %u died by signal %d", (unsigned)uid, WTERMSIG(st));
	return WEXITSTATUS(st);
}

/* Creates name with mode; 0, or 100 + the errno of a failure. */
static int create_with_mode(const char *name, mode_t mode)
{
	struct shmq_config c = tq_config(8);
	c.mode = mode;
	shmq_t *q = NULL;
	int r = shmq_create(name, &c, &q);
	shmq_close(q);
	return r ? 100 + (-r & 0x3f) : 0;
}
static int create_0666(const char *name) { return create_with_mode(name, 0666); }

/* A fresh name that another user (SQUATTER) created first, mode 0666; skips the test unless root. */
static const char *squatted_queue(void)
{
	SKIP_NOT_ROOT();
	const char *n = tq_name(NULL);
	cr_assert_eq(as_user(SQUATTER, SQUATTER, 0, create_0666, n), 0, "the squatter could not create %s",
		     n);
	return n;
}

/* ---- squatting --------------------------------------------------------------------------------- */

Test(access, another_users_world_writable_queue_is_refused_at_open)
{
	const char *n = squatted_queue();

	int r = as_user(VICTIM, VICTIM, 0, open_errno, n);
	cr_expect_eq(r, EPERM,
		     "the victim's shmq_open of another user's 0666 queue: errno %d (%s), not EPERM", r,
		     strerror(r));
	/* root gets no exemption: its messages would go to that user as well */
	cr_expect_eq(open_errno(n), EPERM,
		     "root's shmq_open of another user's 0666 queue: errno %d, not EPERM", open_errno(n));
}

static int create_0660(const char *name) { return create_with_mode(name, 0660); }

/* shmq_open_opts's errno, trusting uid / gid (-1: not that one) */
static int open_trusting(const char *name, uid_t uid, gid_t gid)
{
	struct shmq_open_options o;
	shmq_open_options_init(&o);
	o.trust_uid = uid;
	o.trust_gid = gid;
	shmq_t *q = NULL;
	int r = shmq_open_opts(name, &o, &q);
	shmq_close(q);
	return -r;
}
static int open_trusting_squatter(const char *name) { return open_trusting(name, SQUATTER, (gid_t)-1); }
static int open_trusting_shared_group(const char *name) { return open_trusting(name, (uid_t)-1, SHARED_GID); }
static int open_trusting_victims_group(const char *name) { return open_trusting(name, (uid_t)-1, VICTIM); }

Test(access, another_users_world_writable_queue_opens_when_its_owner_is_trusted)
{
	const char *n = squatted_queue();
	int r = as_user(VICTIM, VICTIM, 0, open_trusting_squatter, n);
	cr_expect_eq(r, 0, "the victim's open trusting the owner's uid: errno %d (%s)", r, strerror(r));
	r = as_user(VICTIM, VICTIM, 0, open_trusting_victims_group, n);
	cr_expect_eq(r, EPERM, "trusting a group the segment does not have: errno %d, not EPERM", r);
}

Test(access, a_group_shared_queue_opens_for_a_member_trusting_its_group)
{
	SKIP_NOT_ROOT();
	const char *n = tq_name(NULL);
	cr_assert_eq(as_user(SQUATTER, SHARED_GID, 0, create_0660, n), 0);
	/* the member can open it for writing (group rw), but nobody said to trust that group */
	int r = as_user(VICTIM, VICTIM, SHARED_GID, open_errno, n);
	cr_expect_eq(r, EPERM, "a member's open of another user's 0660 queue, no trust: errno %d, not EPERM",
		     r);
	r = as_user(VICTIM, VICTIM, SHARED_GID, open_trusting_shared_group, n);
	cr_expect_eq(r, 0, "a member's open trusting the queue's group: errno %d (%s)", r, strerror(r));
	/* the owner itself opens its group-writable queue without being told anything */
	r = as_user(SQUATTER, SHARED_GID, 0, open_errno, n);
	cr_expect_eq(r, 0, "the owner's open of its own 0660 queue: errno %d (%s)", r, strerror(r));
}

Test(access, an_own_world_writable_queue_is_refused_unless_its_owner_is_trusted)
{
	const char *n = tq_name(NULL);
	cr_assert_eq(create_0666(n), 0);
	cr_expect_eq(open_errno(n), EPERM, "open of our own 0666 queue: errno %d, not EPERM", open_errno(n));
	cr_expect_eq(open_trusting(n, geteuid(), (gid_t)-1), 0,
		     "open of our own 0666 queue, trusting ourselves");
}

Test(access, open_options_with_a_reserved_field_set_are_einval)
{
	const char *n = tq_name(NULL);
	shmq_t *q = tq_create(n, NULL), *q2 = (shmq_t *)1;
	struct shmq_open_options o;
	shmq_open_options_init(&o);
	o.reserved[5] = 1;
	cr_expect_eq(shmq_open_opts(n, &o, &q2), -EINVAL);
	cr_expect_null(q2);
	shmq_open_options_init(&o);
	cr_expect_eq(shmq_open_opts(n, &o, &q2), 0);
	shmq_close(q2);
	shmq_close(q);
}

/* A view writes nothing, so reading a stranger's queue leaks nothing of ours: stat, peek and
 * check inspect any queue they can open (and show its owner and mode). */
static int view_opens(const char *name)
{
	shmq_view_t *v = NULL;
	int r = shmq_view_open(name, &v);
	shmq_view_close(v);
	return -r;
}

Test(access, read_only_views_open_another_users_queue)
{
	const char *n = squatted_queue();
	int r = as_user(VICTIM, VICTIM, 0, view_opens, n);
	cr_expect_eq(r, 0, "another user's view of a 0666 queue: errno %d (%s)", r, strerror(r));
}

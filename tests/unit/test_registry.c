/* SPDX-License-Identifier: MIT */
/*
 * The participant registry: how records are claimed and handed back. A full registry is made for
 * real, one handle per record (in this process, plus a child where a test needs a dead one).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "internal.h"
#include "shmq.h"

TestSuite(registry, .fini = tq_cleanup);

static shmq_t *handles[SHMQ_MAX_PARTICIPANTS];

/* Room for one descriptor per handle (a full registry in one process) and some to spare. */
static void allow_fds(void)
{
	struct rlimit rl;
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rlim_t want = SHMQ_MAX_PARTICIPANTS + 128;
	if (rl.rlim_cur < want) {
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
			cr_skip_test("RLIMIT_NOFILE hard limit %llu is below %llu",
				     (unsigned long long)rl.rlim_max, (unsigned long long)want);
		rl.rlim_cur = want;
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
}

/* Creates name and opens it until handles[0..n) are attached. */
static void fill(const char *name, unsigned n)
{
	struct shmq_config c = tq_config(16);
	c.reclaim_interval_ms = 0;
	handles[0] = tq_create(name, &c);
	for (unsigned i = 1; i < n; i++) {
		int r = shmq_open(name, &handles[i]);
		cr_assert_eq(r, 0, "open %u of %u: %s", i, n, shmq_strerror(r));
	}
}

static void close_all(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		shmq_close(handles[i]);
		handles[i] = NULL;
	}
}

Test(registry, a_handle_closed_on_a_full_registry_hands_its_record_to_the_next_open_at_once)
{
	allow_fds();
	const char *name = tq_name(NULL);
	fill(name, SHMQ_MAX_PARTICIPANTS);
	shmq_t *extra = NULL;
	cr_assert_eq(shmq_open(name, &extra), -EUSERS, "the registry is full");

	shmq_close(handles[7]);
	tq_sleep_ms(5); /* the record's free time (ms, rounded up to odd) now lies in the past */
	int r = shmq_open(name, &handles[7]);
	cr_expect_eq(r, 0, "reopen after a clean close on a full registry: %s", shmq_strerror(r));
	if (r)
		handles[7] = NULL;
	close_all(SHMQ_MAX_PARTICIPANTS);
}

Test(registry, a_full_registry_takes_a_record_a_reclaim_pass_just_freed)
{
	allow_fds();
	const char *name = tq_name(NULL);
	fill(name, SHMQ_MAX_PARTICIPANTS - 1);
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *q;
		if (shmq_open(name, &q))
			_exit(1);
		(void)!write(fds[1], "x", 1);
		for (;;)
			pause();
	}
	char x;
	close(fds[1]);
	cr_assert_eq(read(fds[0], &x, 1), 1, "the child attached");
	close(fds[0]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	struct shmq_reclaim_result res;
	shmq_reclaim(handles[0], &res);
	cr_assert_eq(res.participants_freed, 1, "the pass freed the dead child's record");
	tq_sleep_ms(5); /* the record's free time (ms, rounded up to odd) now lies in the past */

	shmq_t *q = NULL;
	int r = shmq_open(name, &q);
	cr_expect_eq(r, 0, "open on a registry whose only free record was just freed: %s", shmq_strerror(r));
	shmq_close(q);
	close_all(SHMQ_MAX_PARTICIPANTS - 1);
}

/* A reclaim pass judged the record's previous participant dead and read its state; the record was
 * freed and claimed again before the pass's release: that release must leave the newcomer whole. */
Test(registry, a_stale_release_leaves_the_consumer_role_of_the_records_new_owner_alone)
{
	struct shmq_config c = tq_config(16);
	shmq_t *q = tq_mkq(&c);
	tq_register_consumer(q);
	uint64_t v = atomic_load(&q->me->state);
	uint64_t stale = ps_make(ps_epoch(v) - 1, PART_ALIVE, 0);
	cr_expect_eq(shmq_part_release(q, q->part, stale), 0, "a release of another epoch frees nothing");
	cr_expect_eq(atomic_load(&q->me->state), v);
	cr_expect_eq(atomic_load(&q->me->role), PART_CONSUMER, "the stale release cleared our consumer role");
	shmq_close(q);
}

/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the test binaries. Criterion runs every Test in its own forked process, in
 * parallel: each test gets queue names made from its suite, its name and its pid, and every name
 * handed out is unlinked before use and again by the suite's .fini (which also runs after a failed
 * cr_assert), so neither a rerun nor a failure leaves anything behind in /dev/shm.
 *
 * With TQ_PLAIN defined the same helpers work without Criterion, for the one program that cannot
 * use it: the TSan build of the thread tests (Criterion's sandbox fails to start under TSan,
 * Snaipe/Criterion#274). TQ_REQUIRE / TQ_EXPECT then print the failure; the program's main
 * reports tq_failures.
 */
#ifndef SHMQ_TESTS_COMMON_H
#define SHMQ_TESTS_COMMON_H

#ifdef TQ_PLAIN
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
static int tq_failures __attribute__((unused));
static const char *tq_test = "plain"; /* the plain driver sets it to the test it runs */
/* each evaluates cond exactly once, like cr_expect / cr_assert */
#define TQ_EXPECT(cond, ...) ((void)tq_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__))
#define TQ_REQUIRE(cond, ...)                                                                                \
	do {                                                                                                 \
		if (!tq_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__))                                    \
			exit(1);                                                                             \
	} while (0)
__attribute__((format(printf, 4, 5), unused)) static int tq_check(int ok, const char *file, int line,
								  const char *fmt, ...)
{
	if (ok)
		return 1;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "  FAIL  %s: %s:%d: ", tq_test, file, line);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	tq_failures++;
	return 0;
}
#else
#include <criterion/criterion.h>
#define TQ_EXPECT(cond, ...) cr_expect(cond, __VA_ARGS__)
#define TQ_REQUIRE(cond, ...) cr_assert(cond, __VA_ARGS__)
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

#define TQ_MAX_NAMES 8
#define TQ_NAME_LEN 160

static char tq_names[TQ_MAX_NAMES][TQ_NAME_LEN] __attribute__((unused));
static int tq_count __attribute__((unused));

/* A queue name unique to this test process: "/shmq-test-<suite>-<test>[-<tag>]-<pid>". */
static inline const char *tq_name(const char *tag)
{
	TQ_REQUIRE(tq_count < TQ_MAX_NAMES, "too many queue names in one test");
	char *n = tq_names[tq_count++];
#ifdef TQ_PLAIN
	const char *suite = "plain", *test = tq_test;
#else
	const struct criterion_test *t = criterion_current_test;
	const char *suite = t ? t->category : "x", *test = t ? t->name : "x";
#endif
	snprintf(n, TQ_NAME_LEN, "/shmq-test-%.24s-%.64s%s%.24s-%d", suite, test, tag ? "-" : "",
		 tag ? tag : "", (int)getpid());
	shm_unlink(n);
	return n;
}

/* The suites' .fini: unlinks every name this test was handed. */
/* Puts a directory and a symbolic link (to /dev/null) in /dev/shm where queues tq_name("dir")
 * and tq_name("link") would be; *dir and *link get their paths (TQ_NAME_LEN + 16 bytes each), the
 * queue names are returned in names[0] and names[1]. tq_remove_dir_and_link undoes it. */
static inline void tq_make_dir_and_link(char *dir, char *link, const char *names[2])
{
	names[0] = tq_name("dir");
	names[1] = tq_name("link");
	snprintf(dir, TQ_NAME_LEN + 16, "/dev/shm%s", names[0]);
	snprintf(link, TQ_NAME_LEN + 16, "/dev/shm%s", names[1]);
	TQ_REQUIRE(mkdir(dir, 0700) == 0, "mkdir %s: %s", dir, strerror(errno));
	TQ_REQUIRE(symlink("/dev/null", link) == 0, "symlink %s: %s", link, strerror(errno));
}
static inline void tq_remove_dir_and_link(const char *dir, const char *link)
{
	rmdir(dir);
	unlink(link);
}

static inline void tq_cleanup(void)
{
	for (int i = 0; i < tq_count; i++)
		shm_unlink(tq_names[i]);
	tq_count = 0;
}

/* A config for small, fast test queues: the caller adjusts what its test is about. */
static inline struct shmq_config tq_config(uint32_t capacity)
{
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = capacity;
	return c;
}

/* tq_config with lanes and a dispatch policy. */
static inline struct shmq_config tq_lanes_config(uint32_t capacity, uint32_t lanes, uint32_t dispatch)
{
	struct shmq_config c = tq_config(capacity);
	c.lanes = lanes;
	c.dispatch = dispatch;
	return c;
}

/* Creates a queue under a fresh name (precondition of the test, hence TQ_REQUIRE). */
static inline shmq_t *tq_create(const char *name, const struct shmq_config *c)
{
	shmq_t *q = NULL;
	int r = shmq_create(name, c, &q);
	TQ_REQUIRE(r == 0, "shmq_create(%s): %s", name, shmq_strerror(r));
	return q;
}

/* A fresh queue for one test: most tests need only its config */
static inline shmq_t *tq_mkq(const struct shmq_config *c) { return tq_create(tq_name(NULL), c); }

/* Sends a 4-byte value without waiting (precondition of the test, hence TQ_REQUIRE). */
static inline void tq_send_u32(shmq_t *q, uint32_t v)
{
	int r = shmq_send(q, &v, sizeof(v), 0);
	TQ_REQUIRE(r == 0, "send %u: %s", v, shmq_strerror(r));
}

/* Registers q as a consumer (lanes are shared out among consumers) with one receive that must find
 * nothing: the queue is empty, or has nothing for q. */
static inline void tq_register_consumer(shmq_t *q)
{
	struct shmq_msg m;
	int r = shmq_recv(q, &m, 0);
	TQ_REQUIRE(r == -EAGAIN, "registering receive: %s", shmq_strerror(r));
}

/* Forks a consumer of name that registers (one empty receive: lanes are assigned to consumers),
 * says so through a pipe, and waits to be killed. */
static inline pid_t tq_consumer_child(const char *name)
{
	int fds[2];
	TQ_REQUIRE(pipe(fds) == 0, "pipe failed");
	pid_t pid = fork();
	TQ_REQUIRE(pid >= 0, "fork failed");
	if (pid == 0) {
		shmq_t *q;
		struct shmq_msg m;
		if (shmq_open(name, &q))
			_exit(1);
		shmq_recv(q, &m, 0);
		(void)!write(fds[1], "x", 1);
		for (;;)
			pause();
	}
	char x;
	close(fds[1]);
	TQ_REQUIRE(read(fds[0], &x, 1) == 1, "the consumer child did not start");
	close(fds[0]);
	return pid;
}

static inline struct shmq_stats tq_stats(shmq_t *q)
{
	struct shmq_stats st;
	TQ_REQUIRE(shmq_stats(q, &st) == 0, "shmq_stats failed");
	return st;
}

static inline double tq_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Leases and redelivery times are kept in CLOCK_MONOTONIC_COARSE milliseconds, which lag the
 * precise clock by up to one tick: a lower bound on a wait may be off by that much, plus 1 ms. */
static inline double tq_slack_ms(void)
{
	struct timespec r;
	if (clock_getres(CLOCK_MONOTONIC_COARSE, &r) != 0)
		return 11;
	double ms = (double)r.tv_sec * 1e3 + (double)r.tv_nsec / 1e6;
	return 1 + (ms > 4 ? ms : 4);
}

static inline void tq_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

#ifndef TQ_PLAIN
#include <signal.h>
#include <stdlib.h>
/* The shmq binary the CLI tests run: $SHMQ_TOOL (make sets it), else build/shmq, else the test is
 * skipped. SIGPIPE is ignored: a tool that exits without reading all of its stdin must not kill
 * the test. For a suite's .init. */
static inline const char *tq_tool(void)
{
	signal(SIGPIPE, SIG_IGN);
	const char *tool = getenv("SHMQ_TOOL");
	if (!tool) {
		tool = "build/shmq";
		if (access(tool, X_OK))
			cr_skip_test("SHMQ_TOOL is not set and %s does not exist", tool);
	}
	return tool;
}
#else
struct tq_plain_test {
	const char *name;
	void (*run)(void);
};

/* The main of a plain program: runs each test, unlinks its queues, prints a [PASS]/[FAIL] line per
 * test and a summary; returns the exit status. */
static inline int tq_plain_main(const char *suite, const struct tq_plain_test *t, unsigned n)
{
	int failed = 0;
	for (unsigned i = 0; i < n; i++) {
		int before = tq_failures;
		tq_test = t[i].name;
		t[i].run();
		tq_cleanup();
		failed += tq_failures > before;
		fprintf(stderr, "[%s] %s::%s\n", tq_failures > before ? "FAIL" : "PASS", suite, t[i].name);
	}
	fprintf(stderr, "%s under TSan: %u tests, %d failed\n", suite, n, failed);
	return failed ? 1 : 0;
}
#endif

#endif

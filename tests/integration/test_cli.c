/* SPDX-License-Identifier: MIT */
/*
 * The shmq tool's command-line contract, proven by running the built binary ($SHMQ_TOOL) the way
 * a user or a script would: exit status (0 ok, 1 runtime failure, 2 usage error, 4 no message
 * before recv's timeout), what goes to stdout, and one "shmq: ..." line on stderr for every
 * failure. Each test's queue names come from
 * tq_name() and are unlinked by the suite's .fini, failed tests included.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "shmq_inspect.h"

#include "run_tool.h"

TestSuite(cli, .init = run_tool_init, .fini = tq_cleanup);

static int queue_exists(const char *name)
{
	int fd = shm_open(name, O_RDONLY, 0);
	if (fd >= 0)
		close(fd);
	return fd >= 0 || errno != ENOENT;
}

/* A usage error (exit 2) naming `needle`, that left nothing behind under `name`. */
#define EXPECT_USAGE_ERROR(name, needle, ...) expect_usage_error(name, needle, ARGV(__VA_ARGS__))
static void expect_usage_error(const char *name, const char *needle, const char *const args[])
{
	struct run r;
	expect_error(run_tool(&r, NULL, args), 2, needle);
	cr_expect(!queue_exists(name), "`%s` created %s", r.cmd, name);
}

/* ---- create, stat, unlink -------------------------------------------------------------------- */

Test(cli, create_then_stat_shows_the_configuration_given_and_unlink_removes_it)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "8", "--slot-size", "128", "--lease-ms", "1500",
		      "--max-deliveries", "5", "--retry-base-ms", "10", "--retry-max-ms", "500", "--mode",
		      "0640", "--dlq-max", "3", "--reclaim-interval-ms", "50"),
		  "");
	/* "name" and "/name" are the same queue */
	expect_ok(RUN(&r, NULL, "stat", q + 1), NULL);
	char head[TQ_NAME_LEN + 8];
	snprintf(head, sizeof(head), "queue %s\n", q + 1);
	cr_expect(!strncmp(r.out, head, strlen(head)), "stat's first line is not '%s': %s", head, r.out);
	EXPECT_STAT(q, "capacity: 8 slots", "slot size: 128 bytes", "max payload: 80 bytes", "lease: 1500 ms",
		    "max deliveries: 5", "retry backoff: 10 ms, doubling up to 500 ms", "mode: 0640",
		    "dead letters kept (max): 3", "reclaim pass: every 50 ms, by receivers", "ready: 0",
		    "free: 8");

	expect_ok(RUN(&r, NULL, "unlink", q), "");
	cr_expect(!queue_exists(q), "%s still exists after unlink", q);
}

Test(cli, create_of_an_existing_name_fails_with_one_line_naming_it_and_keeps_the_queue)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "4"), "");
	expect_error(RUN(&r, NULL, "create", q, "--capacity", "8"), 1, q);
	EXPECT_STAT(q, "capacity: 4 slots");
}

Test(cli, create_mode_sets_the_segment_permissions_without_the_umask_and_defaults_to_0600)
{
	const char *dflt = tq_name("default"), *custom = tq_name("0640");
	struct run r;
	/* documented: the umask is not applied, so a strict one must change nothing */
	umask(077);
	expect_ok(RUN(&r, NULL, "create", dflt), "");
	expect_ok(RUN(&r, NULL, "create", custom, "--mode", "0640"), "");

	const char *names[] = {dflt, custom};
	const unsigned want[] = {0600, 0640};
	for (size_t i = 0; i < N_ELEMS(names); i++) {
		char path[TQ_NAME_LEN + 16];
		struct stat st;
		snprintf(path, sizeof(path), "/dev/shm%s", names[i]);
		cr_assert(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
		cr_expect((st.st_mode & 07777) == want[i], "%s has mode %04o, want %04o", path,
			  (unsigned)(st.st_mode & 07777), want[i]);
	}
}

/* ---- send and recv --------------------------------------------------------------------------- */

Test(cli, send_then_recv_prints_each_payload_on_its_own_line_in_order)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_ok(RUN(&r, NULL, "send", q, "one", "two", "three four"), "");
	/* the timeout only turns a lost message into a short output instead of a hang */
	expect_ok(RUN(&r, NULL, "recv", q, "--count", "3", "--timeout-ms", "5000"), "one\ntwo\nthree four\n");
}

Test(cli, send_without_payload_sends_one_message_per_stdin_line)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	/* the last line has no newline: it is a message all the same */
	expect_ok(RUN(&r, "alpha\nbeta\ngamma", "send", q), "");
	EXPECT_STAT(q, "sent: 3");
	expect_ok(RUN(&r, NULL, "recv", q, "--count", "3", "--timeout-ms", "5000"), "alpha\nbeta\ngamma\n");
}

Test(cli, recv_timeout_with_no_message_exits_4_quietly_and_one_that_got_messages_exits_0)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	/* "nothing arrived" has its own status, neither success (0) nor an error (1) */
	RUN(&r, NULL, "recv", q, "--timeout-ms", "300");
	expect_exit(&r, 4);
	cr_expect_str_empty(r.out, "`%s` wrote to stdout", r.cmd);
	cr_expect_str_empty(r.err, "`%s` wrote to stderr", r.cmd);
	cr_expect(r.ms >= 300 - tq_slack_ms(), "recv --timeout-ms 300 returned after %.0f ms", r.ms);
	RUN(&r, NULL, "recv", q, "--count", "2", "--timeout-ms", "0");
	expect_exit(&r, 4);
	/* fewer than --count before the timeout is not "nothing" */
	expect_ok(RUN(&r, NULL, "send", q, "only"), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--count", "2", "--timeout-ms", "100"), "only\n");
}

Test(cli, recv_count_stops_after_n_messages_and_leaves_the_rest_queued)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_ok(RUN(&r, NULL, "send", q, "m1", "m2", "m3", "m4", "m5"), "");
	/* were --count ignored, the timeout would let it print all five */
	expect_ok(RUN(&r, NULL, "recv", q, "--count", "2", "--timeout-ms", "1000"), "m1\nm2\n");
	EXPECT_STAT(q, "ready: 3", "in flight: 0", "acked: 2");
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "0"), "m3\nm4\nm5\n");
}

Test(cli, recv_no_ack_leaves_the_message_leased_and_a_later_recv_gets_it_again)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--lease-ms", "100"), "");
	expect_ok(RUN(&r, NULL, "send", q, "once"), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--no-ack", "--count", "1"), "once\n");
	/* stat runs no reclaim pass: the lease is still there to see */
	EXPECT_STAT(q, "ready: 0", "in flight: 1", "acked: 0");
	/* at-least-once: the lease runs out (and its holder is gone), so the message comes back */
	expect_ok(RUN(&r, NULL, "recv", q, "--count", "1", "--timeout-ms", "5000"), "once\n");
	EXPECT_STAT(q, "in flight: 0", "delayed: 0", "received: 2", "acked: 1");
}

Test(cli, send_to_a_full_queue_with_timeout_0_fails_saying_how_many_were_sent_and_loses_nothing)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "2"), "");
	expect_error(RUN(&r, NULL, "send", q, "--timeout-ms", "0", "a", "b", "c"), 1, "2 messages sent");
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "0"), "a\nb\n");
}

/* ---- recv into a pipe: a line is delivered when its reader has it ---------------------------- */

/* Runs `sh -c SCRIPT` with $0 the tool and $1 name, capturing its output like RUN. */
static struct run *run_sh(struct run *r, const char *script, const char *name)
{
	const char *shmq = tool;
	tool = "/bin/sh";
	run_tool(r, NULL, ARGV("-c", script, shmq, name));
	tool = shmq;
	return r;
}

/* Sends "1".."n", one message each. */
static void send_numbers(const char *q, int n)
{
	static char lines[8 * 10000];
	size_t len = 0;
	cr_assert(n <= 10000);
	for (int i = 1; i <= n; i++)
		len += (size_t)snprintf(lines + len, sizeof(lines) - len, "%d\n", i);
	struct run r;
	expect_ok(RUN(&r, lines, "send", q), "");
}

/* Receives everything left in q: it must be "from".."to", each exactly once (in any order: the
 * nacked one is a redelivery). */
static void expect_left(const char *q, int from, int to)
{
	struct run r;
	static int seen[10001];
	memset(seen, 0, sizeof(seen));
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "0"), NULL);
	int lines = 0, bad = 0;
	for (const char *p = r.out; *p; p = strchr(p, '\n') + 1, lines++) {
		int v = atoi(p);
		if (v < from || v > to || seen[v]++)
			bad++;
		if (!strchr(p, '\n'))
			break;
	}
	cr_expect(lines == to - from + 1 && !bad, "%d messages left (%d not in %d..%d or twice), want %d",
		  lines, bad, from, to, to - from + 1);
}

Test(cli, recv_into_head_n_1_acks_only_the_line_head_read_and_keeps_the_other_999)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "1024"), "");
	send_numbers(q, 1000);
	/* the reader starts late: every line recv wrote ahead of it would sit in the pipe (1000
	 * short lines fit), and head reads a whole pipeful at once but prints one line */
	run_sh(&r, "\"$0\" recv \"$1\" --count 1000 --timeout-ms 5000 | { sleep 0.3; head -n 1; }", q);
	expect_ok(&r, "1\n");
	EXPECT_STAT(q, "acked: 1", "in flight: 0");
	expect_left(q, 2, 1000);
}

Test(cli, recv_json_into_head_n_3_acks_only_the_three_lines_head_read)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	send_numbers(q, 10);
	run_sh(&r, "\"$0\" recv \"$1\" --json --timeout-ms 5000 | { sleep 0.3; head -n 3; }", q);
	expect_exit(&r, 0);
	cr_expect(strstr(r.out, "\"payload\": \"3\"}\n") && !strstr(r.out, "\"payload\": \"4\""),
		  "head -n 3 printed: %s", r.out);
	EXPECT_STAT(q, "acked: 3", "in flight: 0");
	expect_left(q, 4, 10);
}

/* Starts `shmq ARGS...` with stdout on out (closed here), stdin and stderr on /dev/null. */
static pid_t spawn_with_stdout(int out, const char *const args[])
{
	const char *argv[RUN_MAX_ARGS + 2] = {tool};
	for (int i = 0; args[i]; i++) {
		cr_assert(i < RUN_MAX_ARGS);
		argv[i + 1] = args[i];
	}
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(null, 2) < 0)
			_exit(126);
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	close(out);
	return pid;
}

/* The exit status of pid, which must end within RUN_LIMIT_MS (else it is killed: a failure). */
static int exit_status_of(pid_t pid)
{
	int st;
	double until = tq_now_ms() + RUN_LIMIT_MS;
	for (pid_t w; (w = waitpid(pid, &st, WNOHANG)) != pid;) {
		cr_assert(w == 0, "waitpid: %s", strerror(errno));
		if (tq_now_ms() > until) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_assert_fail("the tool was still running after %d ms: killed", RUN_LIMIT_MS);
		}
		tq_sleep_ms(5);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Waits until fd has something to read. */
static void await_input(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	cr_assert(poll(&p, 1, RUN_LIMIT_MS) == 1, "nothing written within %d ms", RUN_LIMIT_MS);
}

/* recv --count 1 writes its line into a pipe (socket) nobody reads for three lease lengths: it
 * must keep the lease, and ack only once the line is read. */
static void recv_waits_for_its_reader(int use_socket)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--lease-ms", "300", "--reclaim-interval-ms", "0"), "");
	expect_ok(RUN(&r, NULL, "send", q, "unhurried"), "");
	int fds[2];
	if (use_socket)
		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	else
		cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	pid_t pid = spawn_with_stdout(fds[1], ARGV("recv", q, "--count", "1"));
	await_input(fds[0]);
	tq_sleep_ms(1000);

	shmq_t *h;
	struct shmq_reclaim_result res;
	cr_assert_eq(shmq_open(q, &h), 0);
	cr_assert(shmq_reclaim(h, &res) >= 0);
	cr_expect(res.expired == 0, "the lease of the unread line ran out");
	struct shmq_stats st = tq_stats(h);
	cr_expect(st.acked == 0 && st.inflight == 1 && st.extended >= 1,
		  "before the read: acked %llu in flight %llu extended %llu, want 0, 1, >= 1",
		  (unsigned long long)st.acked, (unsigned long long)st.inflight,
		  (unsigned long long)st.extended);
	siginfo_t si = {.si_pid = 0};
	cr_assert_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT), 0);
	cr_expect_eq(si.si_pid, 0, "recv exited before its line was read");

	char buf[64] = "";
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	cr_expect(n == 10 && !strcmp(buf, "unhurried\n"), "read %zd bytes: '%s'", n, buf);
	cr_expect_eq(exit_status_of(pid), 0);
	close(fds[0]);
	st = tq_stats(h);
	cr_expect(st.acked == 1 && st.received == 1, "after the read: acked %llu received %llu, want 1, 1",
		  (unsigned long long)st.acked, (unsigned long long)st.received);
	shmq_close(h);
}

Test(cli, recv_into_a_pipe_keeps_the_lease_of_an_unread_line_and_acks_it_once_read)
{
	recv_waits_for_its_reader(0);
}

Test(cli, recv_into_a_unix_socket_keeps_the_lease_of_an_unread_line_and_acks_it_once_read)
{
	recv_waits_for_its_reader(1);
}

Test(cli, a_reader_that_leaves_mid_line_gets_that_message_back_at_once_unacked)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), ""); /* 30 s leases: the nack, not expiry, gives it back */
	expect_ok(RUN(&r, NULL, "send", q, "0123456789"), "");
	int fds[2];
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	pid_t pid = spawn_with_stdout(fds[1], ARGV("recv", q, "--timeout-ms", "2000"));
	await_input(fds[0]);
	char buf[3];
	cr_assert_eq(read(fds[0], buf, sizeof(buf)), 3);
	close(fds[0]);
	cr_expect_eq(exit_status_of(pid), 0, "a reader that left is not an error");

	shmq_t *h;
	struct shmq_msg m;
	cr_assert_eq(shmq_open(q, &h), 0);
	struct shmq_stats st = tq_stats(h);
	cr_expect(st.acked == 0, "a line its reader did not finish was acked");
	int err = shmq_recv(h, &m, 0);
	cr_expect(err == 0 && m.deliveries == 2 && m.len == 10, "not back for redelivery at once: %s",
		  shmq_strerror(err));
	shmq_close(h);
}

Test(cli, recv_into_a_file_acks_each_line_once_written)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_ok(RUN(&r, NULL, "send", q, "a", "b", "c"), "");
	FILE *f = tmpfile();
	cr_assert(f);
	pid_t pid = spawn_with_stdout(dup(fileno(f)), ARGV("recv", q, "--timeout-ms", "0"));
	cr_expect_eq(exit_status_of(pid), 0);
	char buf[16] = "";
	rewind(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	cr_expect(n == 6 && !strcmp(buf, "a\nb\nc\n"), "the file holds '%s'", buf);
	EXPECT_STAT(q, "acked: 3", "ready: 0", "in flight: 0");
}

/* ---- watchdog and dead letters --------------------------------------------------------------- */

/* A --no-ack recv exits holding its lease: to the queue, a consumer that died with it. */
static void leave_dead_lease(const char *q, const char *payload)
{
	struct run r;
	expect_ok(RUN(&r, NULL, "send", q, payload), "");
	char want[64];
	snprintf(want, sizeof(want), "%s\n", payload);
	expect_ok(RUN(&r, NULL, "recv", q, "--no-ack", "--count", "1", "--timeout-ms", "5000"), want);
}

Test(cli, watchdog_once_requeues_a_dead_consumers_message_long_before_its_lease_ends)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--lease-ms", "600000", "--reclaim-interval-ms", "0",
		      "--retry-base-ms", "0", "--retry-max-ms", "0"),
		  "");
	leave_dead_lease(q, "held");
	EXPECT_STAT(q, "in flight: 1");
	expect_ok(RUN(&r, NULL, "watchdog", q, "--once"), NULL);
	cr_expect(strstr(r.out, "requeued 1 (dead owner 1, expired 0)"), "watchdog said: %s", r.out);
	EXPECT_STAT(q, "in flight: 0", "delayed: 1", "reclaimed (dead owner): 1");
	expect_ok(RUN(&r, NULL, "watchdog", q, "--once"), NULL);
	cr_expect(strstr(r.out, "requeued 0 "), "a second pass requeued again: %s", r.out);
	expect_ok(RUN(&r, NULL, "recv", q, "--count", "1", "--timeout-ms", "5000"), "held\n");
}

Test(cli, watchdog_runs_until_sigterm_and_prints_its_totals)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	int out[2];
	cr_assert_eq(pipe(out), 0);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		execl(tool, tool, "watchdog", q, "--interval-ms", "10", (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	tq_sleep_ms(200);
	cr_assert_eq(kill(pid, SIGTERM), 0);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "watchdog did not exit 0 on SIGTERM (status %#x)",
		  st);
	char buf[4096];
	size_t len = 0;
	for (ssize_t n; len < sizeof(buf) - 1 && (n = read(out[0], buf + len, sizeof(buf) - 1 - len)) > 0;)
		len += (size_t)n;
	buf[len] = 0;
	close(out[0]);
	cr_expect(strstr(buf, "stopped by SIGTERM") && strstr(buf, "total "), "watchdog printed: %s", buf);
}

Test(cli, dead_letters_are_listed_redriven_and_purged)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "8", "--dlq-max", "8", "--max-deliveries", "1",
		      "--reclaim-interval-ms", "0"),
		  "");
	leave_dead_lease(q, "first");
	leave_dead_lease(q, "second");
	leave_dead_lease(q, "third");
	expect_ok(RUN(&r, NULL, "watchdog", q, "--once"), NULL);
	cr_expect(strstr(r.out, "dead-lettered 3"), "watchdog said: %s", r.out);

	expect_ok(RUN(&r, NULL, "dlq", q, "list"), NULL);
	cr_expect(strstr(r.out, "3 dead letters") && strstr(r.out, "consumer crashed"), "list: %s", r.out);
	const char *a = strstr(r.out, "first"), *b = strstr(r.out, "second"), *c = strstr(r.out, "third");
	cr_expect(a && b && c && a < b && b < c, "not listed oldest first: %s", r.out);
	expect_ok(RUN(&r, NULL, "dlq", q, "list", "--json"), NULL);
	cr_expect(r.out[0] == '[' && strstr(r.out, "\"reason\": \"consumer crashed\"") &&
			  strstr(r.out, "\"payload\": \"second\""),
		  "json: %s", r.out);

	expect_ok(RUN(&r, NULL, "dlq", q, "redrive", "--count", "1"), "redrove 1 dead letter\n");
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "2000", "--count", "1"), "first\n");
	expect_ok(RUN(&r, NULL, "dlq", q, "purge"), "purged 2 dead letters\n");
	expect_ok(RUN(&r, NULL, "dlq", q, "list", "--json"), "[]\n");
	EXPECT_STAT(q, "dead-lettered: 0", "free: 8", "redriven: 1", "purged: 2");
}

Test(cli, dlq_and_watchdog_refuse_bad_command_lines)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_error(RUN(&r, NULL, "dlq", q), 2, "missing action");
	expect_error(RUN(&r, NULL, "dlq", q, "frob"), 2, "unknown action 'frob'");
	expect_error(RUN(&r, NULL, "dlq", q, "list", "--count", "3"), 2, "--count applies only to");
	expect_error(RUN(&r, NULL, "dlq", q, "purge", "--count", "0"), 2, "--count");
	expect_error(RUN(&r, NULL, "dlq", q, "list", "extra"), 2, "unexpected argument 'extra'");
	expect_error(RUN(&r, NULL, "watchdog", q, "--interval-ms", "0"), 2, "--interval-ms");
	expect_error(RUN(&r, NULL, "watchdog"), 2, "missing queue NAME");
	const char *missing = tq_name("missing");
	expect_error(RUN(&r, NULL, "watchdog", q, missing, "--once"), 1, missing);
	expect_error(RUN(&r, NULL, "dlq", missing, "list"), 1, missing);
}

/* ---- bad input ------------------------------------------------------------------------------- */

Test(cli, create_rejects_bad_option_values_with_a_usage_error_naming_the_option)
{
	const char *q = tq_name(NULL);
	EXPECT_USAGE_ERROR(q, "--capacity", "create", q, "--capacity", "0");
	EXPECT_USAGE_ERROR(q, "--capacity", "create", q, "--capacity", "3"); /* not a power of two */
	EXPECT_USAGE_ERROR(q, "--capacity", "create", q, "--capacity", "12x");
	EXPECT_USAGE_ERROR(q, "--capacity", "create", q, "--capacity", "");
	EXPECT_USAGE_ERROR(q, "--capacity", "create", q, "--capacity"); /* no value at all */
	EXPECT_USAGE_ERROR(q, "--slot-size", "create", q, "--slot-size", "64");
	EXPECT_USAGE_ERROR(q, "--lease-ms", "create", q, "--lease-ms", "-1");
	EXPECT_USAGE_ERROR(q, "--max-deliveries", "create", q, "--max-deliveries", "256");
	EXPECT_USAGE_ERROR(q, "--mode", "create", q, "--mode", "999");
	EXPECT_USAGE_ERROR(q, "--reclaim-interval-ms", "create", q, "--reclaim-interval-ms", "soon");
}

Test(cli, create_rejects_options_that_contradict_each_other_with_a_usage_error)
{
	const char *q = tq_name(NULL);
	EXPECT_USAGE_ERROR(q, "--retry-base-ms (10) exceeds --retry-max-ms (5)", "create", q,
			   "--retry-base-ms", "10", "--retry-max-ms", "5");
	EXPECT_USAGE_ERROR(q, "--dlq-max", "create", q, "--capacity", "4", "--dlq-max", "8");
}

Test(cli, create_rejects_bad_lanes_dispatch_and_weights_with_one_line_and_creates_nothing)
{
	const char *q = tq_name(NULL);
	EXPECT_USAGE_ERROR(q, "--lanes must be a whole number between 1 and 16, got '0'", "create", q,
			   "--lanes", "0");
	EXPECT_USAGE_ERROR(q, "--lanes must be a whole number between 1 and 16, got '17'", "create", q,
			   "--lanes", "17");
	EXPECT_USAGE_ERROR(q,
			   "--dispatch must be one of round-robin, random, weighted, key-hash, least-loaded, "
			   "got 'fastest'",
			   "create", q, "--lanes", "2", "--dispatch", "fastest");
	EXPECT_USAGE_ERROR(q, "--weights '3,1' has 2 values, --lanes is 4", "create", q, "--lanes", "4",
			   "--dispatch", "weighted", "--weights", "3,1");
	EXPECT_USAGE_ERROR(q, "--weights '1,1' has 2 values, --lanes is 1", "create", q, "--dispatch",
			   "weighted", "--weights", "1,1");
	/* the check waits for every option: --lanes may come after --weights */
	EXPECT_USAGE_ERROR(q, "--weights goes only with --dispatch weighted (dispatch is key-hash)", "create",
			   q, "--weights", "1,2", "--lanes", "2", "--dispatch", "key-hash");
	EXPECT_USAGE_ERROR(q, "--weights goes only with --dispatch weighted", "create", q, "--lanes", "2",
			   "--weights", "1,2");
	EXPECT_USAGE_ERROR(q, "--weights must be comma-separated whole numbers between 1 and 1000, got '1,0'",
			   "create", q, "--lanes", "2", "--dispatch", "weighted", "--weights", "1,0");
	EXPECT_USAGE_ERROR(q,
			   "--weights must be comma-separated whole numbers between 1 and 1000, got "
			   "'1001,1'",
			   "create", q, "--lanes", "2", "--dispatch", "weighted", "--weights", "1001,1");
	EXPECT_USAGE_ERROR(q, "got '1,,1'", "create", q, "--lanes", "2", "--dispatch", "weighted",
			   "--weights", "1,,1");
	EXPECT_USAGE_ERROR(q, "got '1,1,'", "create", q, "--lanes", "2", "--dispatch", "weighted",
			   "--weights", "1,1,");
	EXPECT_USAGE_ERROR(q, "--weights has more than 16 values", "create", q, "--lanes", "16", "--dispatch",
			   "weighted", "--weights", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1");
}

Test(cli, create_checks_the_capacity_is_lanes_times_a_power_of_two_after_all_options)
{
	const char *q = tq_name(NULL), *ok = tq_name("ok");
	struct run r;
	EXPECT_USAGE_ERROR(q, "got --capacity 64 with --lanes 3 (48 or 96 would do)", "create", q,
			   "--capacity", "64", "--lanes", "3");
	EXPECT_USAGE_ERROR(q, "got --capacity 4 with --lanes 4 (8 or 16 would do)", "create", q, "--lanes",
			   "4", "--capacity", "4");
	EXPECT_USAGE_ERROR(q, "got --capacity 1024 (the default) with --lanes 3", "create", q, "--lanes",
			   "3");
	EXPECT_USAGE_ERROR(q, "--capacity must be a power of two", "create", q, "--capacity", "96");
	/* the option order does not matter */
	expect_ok(RUN(&r, NULL, "create", ok, "--capacity", "96", "--lanes", "3"), "");
	EXPECT_STAT(ok, "capacity: 96 slots", "lanes: 3 (round-robin), 0 consumers");
	/* its dedup table (2 x 96 rounded up to a power of two) works */
	expect_ok(RUN(&r, NULL, "send", ok, "--key", "k", "x"), "");
	expect_ok(RUN(&r, NULL, "check", ok), NULL);
}

Test(cli, send_route_refuses_a_bad_route_with_one_line_and_sends_nothing_and_goes_with_a_key)
{
	const char *q = tq_name(NULL);
	struct run r;
	char long_key[SHMQ_KEY_MAX + 2];
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	expect_ok(RUN(&r, NULL, "create", q, "--lanes", "2", "--capacity", "8", "--dispatch", "key-hash"),
		  "");
	expect_error(RUN(&r, NULL, "send", q, "--route", "", "pay"), 2,
		     "--route must be 1 to 64 bytes, got 0");
	expect_error(RUN(&r, NULL, "send", q, "--route", long_key, "pay"), 2,
		     "--route must be 1 to 64 bytes, got 65");
	EXPECT_STAT(q, "ready: 0", "sent: 0");
	/* and it sends every payload of the command, stdin lines too */
	expect_ok(RUN(&r, "c\nd\n", "send", q, "--route", "user-1"), "");
	expect_ok(RUN(&r, NULL, "send", q, "--route", "user-1", "e"), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "0"), "c\nd\ne\n");
	/* a routing key and an idempotency key together: routed by the one, deduplicated by the other */
	expect_ok(RUN(&r, NULL, "send", q, "--route", "user-1", "--key", "order-1", "pay"), "");
	expect_ok(RUN(&r, NULL, "send", q, "--key", "order-1", "--route", "user-1", "pay"), NULL);
	cr_expect(!strncmp(r.out, "duplicate:", 10), "a repeated key is a duplicate:\n%s", r.out);
	expect_ok(RUN(&r, NULL, "send", q, "--route", "user-1", "--key", "order-2", "pay2"), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "0"), "pay\npay2\n");
}

/* The ready and leased messages of a queue, from a read-only view (which claims no record). */
static struct shmq_snapshot snapshot_of(const char *name)
{
	shmq_view_t *v;
	struct shmq_snapshot s;
	cr_assert(shmq_view_open(name, &v) == 0, "cannot view %s", name);
	cr_assert(shmq_view_snapshot(v, &s, NULL, 0) >= 0);
	shmq_view_close(v);
	return s;
}

Test(cli, work_prefetch_holds_at_most_n_messages_at_once_however_many_threads_wait)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "8", "--lease-ms", "600000"), "");
	expect_ok(RUN(&r, NULL, "send", q, "a", "b", "c", "d"), "");
	expect_error(RUN(&r, NULL, "work", q, "--prefetch", "0", "--", "true"), 2,
		     "--prefetch must be a whole number between 1 and");
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		/* CMD outlives the test: only the limit decides how many run */
		execl(tool, tool, "work", q, "--threads", "4", "--prefetch", "2", "--grace-ms", "0", "--",
		      "sleep", "30", (char *)NULL);
		_exit(127);
	}
	struct shmq_snapshot s;
	double until = tq_now_ms() + 5000;
	do {
		tq_sleep_ms(10);
		s = snapshot_of(q);
	} while ((s.stats.inflight < 2 || !s.stats.prefetch_waits) && tq_now_ms() < until);
	tq_sleep_ms(200); /* time for a thread past the limit to take a third, if it could */
	s = snapshot_of(q);
	cr_expect(s.stats.inflight == 2 && s.stats.ready == 2, "%llu in flight, %llu ready; want 2 and 2",
		  (unsigned long long)s.stats.inflight, (unsigned long long)s.stats.ready);
	cr_expect(s.stats.prefetch_waits > 0, "no receive waited at the prefetch limit");
	cr_assert_eq(kill(pid, SIGTERM), 0);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "work did not exit 0 on SIGTERM (status %#x)", st);
}

Test(cli, peek_shows_each_messages_lane_only_on_a_queue_of_more_than_one_lane)
{
	const char *q = tq_name(NULL), *one = tq_name("one");
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--lanes", "4", "--capacity", "16", "--dispatch", "key-hash"),
		  "");
	expect_ok(RUN(&r, NULL, "send", q, "--route", "user-7", "a", "b"), "");
	expect_ok(RUN(&r, NULL, "peek", q), NULL);
	cr_expect(!strncmp(r.out, "id           lane state", 23), "no lane column:\n%s", r.out);
	/* a message's lane is its id modulo the lanes */
	unsigned long long id;
	unsigned lane, rows = 0;
	for (const char *l = strchr(r.out, '\n'); l && sscanf(l + 1, "%llu %u ready", &id, &lane) == 2;
	     l = strchr(l + 1, '\n'), rows++)
		cr_expect(lane == id % 4, "message %llu shown in lane %u", id, lane);
	cr_expect(rows == 2, "%u rows, want 2:\n%s", rows, r.out);
	expect_ok(RUN(&r, NULL, "peek", q, "--json"), NULL);
	cr_expect(strstr(r.out, "\"lane\": "), "no lane in the JSON:\n%s", r.out);

	expect_ok(RUN(&r, NULL, "create", one, "--capacity", "4"), "");
	expect_ok(RUN(&r, NULL, "send", one, "a"), "");
	expect_ok(RUN(&r, NULL, "peek", one), NULL);
	cr_expect(!strncmp(r.out, "id           state", 18), "a lane column on one lane:\n%s", r.out);
	expect_ok(RUN(&r, NULL, "peek", one, "--json"), NULL);
	cr_expect(!strstr(r.out, "\"lane\""), "a lane in the JSON of one lane:\n%s", r.out);
}

Test(cli, malformed_command_lines_get_a_usage_error_naming_the_problem)
{
	const char *q = tq_name(NULL);
	EXPECT_USAGE_ERROR(q, "--bogus", "create", q, "--bogus");
	EXPECT_USAGE_ERROR(q, "NAME", "create");
	EXPECT_USAGE_ERROR(q, "NAME", "create", "--capacity", "8");
	EXPECT_USAGE_ERROR(q, "launch", "launch", q);
	EXPECT_USAGE_ERROR(q, "extra", "create", q, "extra");
	EXPECT_USAGE_ERROR(q, "extra", "stat", q, "extra");
	EXPECT_USAGE_ERROR(q, "a/b", "create", "a/b");
	/* options are checked before the queue is opened: these name the option, not the queue */
	EXPECT_USAGE_ERROR(q, "--count", "recv", q, "--count", "0");
	EXPECT_USAGE_ERROR(q, "--timeout-ms", "send", q, "--timeout-ms", "-1", "x");
	EXPECT_USAGE_ERROR(q, "--timeout-ms", "send", q, "x", "--timeout-ms", "5");
}

Test(cli, commands_on_a_missing_queue_exit_1_with_one_line_naming_it)
{
	const char *q = tq_name(NULL);
	const char *const *cmds[] = {ARGV("send", q, "x"), ARGV("recv", q, "--timeout-ms", "0"),
				     ARGV("stat", q), ARGV("unlink", q)};
	struct run r;
	for (size_t i = 0; i < N_ELEMS(cmds); i++) {
		expect_error(run_tool(&r, NULL, cmds[i]), 1, q);
		cr_expect(!queue_exists(q), "`%s` created %s", r.cmd, q);
	}
}

Test(cli, a_corrupted_segment_is_refused_with_one_line_and_no_crash)
{
	const char *q = tq_name(NULL);
	char junk[4096];
	memset(junk, 0xAB, sizeof(junk));
	int fd = shm_open(q, O_RDWR | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0, "shm_open %s: %s", q, strerror(errno));
	cr_assert(ftruncate(fd, sizeof(junk)) == 0 && write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	close(fd);

	const char *const *cmds[] = {ARGV("stat", q), ARGV("recv", q, "--timeout-ms", "0"),
				     ARGV("send", q, "x")};
	struct run r;
	for (size_t i = 0; i < N_ELEMS(cmds); i++)
		expect_error(run_tool(&r, NULL, cmds[i]), 1, q);
	/* it is not a shmq segment: unlink keeps it, unless the operator insists */
	expect_error(RUN(&r, NULL, "unlink", q), 1, "--force");
	cr_expect(queue_exists(q), "plain unlink removed an object that is not a queue");
	expect_ok(RUN(&r, NULL, "unlink", "--force", q), "");
	cr_expect(!queue_exists(q));
}

Test(cli, unlink_refuses_a_queue_with_live_participants_unless_forced_and_then_warns)
{
	const char *q = tq_name(NULL);
	struct run r;
	shmq_t *h;
	expect_ok(RUN(&r, NULL, "create", q), "");
	cr_assert_eq(shmq_open(q, &h), 0); /* this process is a live participant */
	expect_error(RUN(&r, NULL, "unlink", q), 1, "1 live participant");
	cr_expect(queue_exists(q), "unlink removed a queue in use");
	RUN(&r, NULL, "unlink", q, "--force");
	expect_exit(&r, 0);
	cr_expect(strstr(r.err, "removed") && strstr(r.err, "1 live participant"), "no warning: %s", r.err);
	cr_expect(!queue_exists(q));
	/* the participant goes on, on its own mapping */
	cr_expect_eq(shmq_send(h, "x", 1, 0), 0);
	shmq_close(h);
	/* with nobody on it, a queue goes at once */
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_ok(RUN(&r, NULL, "unlink", q), "");
	cr_expect(!queue_exists(q));
}

/* 1 if `shmq list --json` output `out` gives the object `name` the kind `kind` (in its own entry:
 * before the next object's name). */
static int list_kind_is(const char *out, const char *name, const char *kind)
{
	char want[TQ_NAME_LEN + 64];
	snprintf(want, sizeof(want), "\"name\": \"%s\",", name[0] == '/' ? name + 1 : name);
	const char *at = strstr(out, want);
	if (!at)
		return 0;
	const char *next = strstr(at + 1, "\"name\":");
	snprintf(want, sizeof(want), "\"kind\": \"%s\"", kind);
	const char *k = strstr(at, want);
	return k && (!next || k < next);
}

/* A directory or a symbolic link where a queue's name would be: every subcommand that takes NAME
 * says so in one line, exit 1, and touches nothing; list shows them as what they are. */
Test(cli, a_directory_or_a_symlink_in_dev_shm_gets_one_line_saying_so_from_every_subcommand)
{
	char dir[TQ_NAME_LEN + 16], link[TQ_NAME_LEN + 16];
	const char *names[2];
	tq_make_dir_and_link(dir, link, names);
	const char *qd = names[0], *ql = names[1];
	const char *what[] = {"is a directory in /dev/shm", "is a symbolic link in /dev/shm"};
	struct run r;
	for (int i = 0; i < 2; i++) {
		const char *n = names[i];
		const char *const *cmds[] = {ARGV("create", n),
					     ARGV("send", n, "x"),
					     ARGV("recv", n, "--timeout-ms", "0"),
					     ARGV("stat", n),
					     ARGV("peek", n),
					     ARGV("check", n),
					     ARGV("dlq", n, "list"),
					     ARGV("watchdog", n, "--once"),
					     ARGV("work", n, "--", "true"),
					     ARGV("unlink", n),
					     ARGV("unlink", "--force", n)};
		for (size_t c = 0; c < N_ELEMS(cmds); c++)
			expect_error(run_tool(&r, NULL, cmds[c]), 1, what[i]);
	}
	struct stat st;
	cr_expect(!lstat(dir, &st) && S_ISDIR(st.st_mode), "the directory was touched");
	cr_expect(!lstat(link, &st) && S_ISLNK(st.st_mode), "the link was touched");
	expect_ok(RUN(&r, NULL, "list", "--json"), NULL);
	cr_expect(list_kind_is(r.out, qd, "directory"), "list --json: %s", r.out);
	cr_expect(list_kind_is(r.out, ql, "symlink"), "list --json: %s", r.out);
	tq_remove_dir_and_link(dir, link);
}

Test(cli, purge_deletes_the_due_messages_and_says_what_is_left)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_ok(RUN(&r, NULL, "send", q, "a", "b", "c", "d"), NULL);
	expect_ok(RUN(&r, NULL, "purge", q, "--count", "1"), NULL);
	cr_expect(strstr(r.out, "purged 1 message from"), "%s", r.out);
	expect_ok(RUN(&r, NULL, "purge", q, "--json"), NULL);
	cr_expect(strstr(r.out, "\"schema\": \"shmq.purge/1\"") && strstr(r.out, "\"purged\": 3") &&
			  strstr(r.out, "\"ready\": 0"),
		  "%s", r.out);
	expect_exit(RUN(&r, NULL, "recv", q, "--timeout-ms", "0"), 4); /* nothing left */
	expect_error(RUN(&r, NULL, "purge", q, "--count", "0"), 2, "--count");
}

/* ---- who may open a queue -------------------------------------------------------------------- */

/* A name taken first by another user (uid 61001, group 61010), world-writable: the squatting of
 * issue 13, built by root with fchown instead of a second user. */
Test(cli, a_queue_of_another_user_is_refused_naming_its_owner_mode_and_the_option_that_allows_it)
{
	SKIP_UNLESS_ROOT();
	const char *q = tq_name(NULL);
	struct run r;
	expect_exit(RUN(&r, NULL, "create", q, "--mode", "0666"), 0);
	cr_expect(strstr(r.err, "warning") && strstr(r.err, "writable by every user"), "no warning: %s",
		  r.err);
	give_away(q, 61001, 61010, 0666);
	const char *why =
		"belongs to another user, uid 61001, gid 61010, mode 0666; pass --trust-owner 61001 "
		"(or --trust-group 61010) if you trust them";
	expect_error(RUN(&r, NULL, "send", q, "card 4111-1111"), 1, why);
	expect_error(RUN(&r, NULL, "recv", q, "--count", "1", "--timeout-ms", "0"), 1, why);
	expect_error(RUN(&r, NULL, "watchdog", q, "--once"), 1, why);
	expect_error(RUN(&r, NULL, "dlq", q, "list"), 1, why);
	expect_error(RUN(&r, NULL, "work", q, "--", "true"), 1, why);
	cr_expect_eq(snapshot_of(q).stats.sent, 0, "a refused send sent something");

	expect_ok(RUN(&r, NULL, "send", q, "--trust-owner", "61001", "card 4111-1111"), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--trust-group", "61010", "--count", "1"), "card 4111-1111\n");
	expect_ok(RUN(&r, NULL, "watchdog", "--trust-owner", "61001", q, "--once"), NULL);
	expect_ok(RUN(&r, NULL, "dlq", q, "list", "--trust-group", "61010"), NULL);
}

/* The reproduction of issue 13 with two users: one creates the name first, world-writable; the
 * other's send is refused, and goes through only when it says it trusts that user. */
Test(cli, two_users_the_victims_send_into_a_squatted_name_is_refused_unless_it_trusts_the_squatter)
{
	SKIP_UNLESS_ROOT();
	const char *q = tq_name(NULL);
	struct run r;
	run_as = 61001;
	expect_exit(RUN(&r, NULL, "create", q, "--mode", "0666"), 0); /* warns: world-writable */
	run_as = 61002;
	expect_error(RUN(&r, NULL, "send", q, "card 4111-1111"), 1,
		     "belongs to another user, uid 61001, gid 61001, mode 0666; pass --trust-owner 61001");
	expect_ok(RUN(&r, NULL, "list"), NULL);
	cr_expect(strstr(r.out, " 61001 0666 "),
		  "the victim's list does not show the squatter and the mode:\n%s", r.out);
	run_as = 61001; /* its own 0666 queue: it has to say it means it too */
	/* 4: nothing arrived before the timeout */
	expect_exit(RUN(&r, NULL, "recv", q, "--trust-owner", "61001", "--count", "1", "--timeout-ms", "0"),
		    4);
	cr_expect_str_empty(r.out, "the squatter received something the victim's refused send sent: %s",
			    r.out);
	run_as = 61002;
	expect_ok(RUN(&r, NULL, "send", q, "--trust-owner", "61001", "hello"), "");
	run_as = (uid_t)-1;
	cr_expect_eq(snapshot_of(q).stats.sent, 1);
}

/* list shows who owns what it may not read: the owner of a name squatted 0600 is still news */
Test(cli, list_shows_the_owner_of_a_queue_it_cannot_read)
{
	SKIP_UNLESS_ROOT();
	const char *q = tq_name(NULL);
	struct run r;
	char line[512];
	expect_ok(RUN(&r, NULL, "create", q), ""); /* root's, 0600 */
	run_as = 61002;
	expect_ok(RUN(&r, NULL, "list"), NULL);
	run_as = (uid_t)-1;
	const char *at = strstr(r.out, q + 1);
	cr_assert(at, "not listed:\n%s", r.out);
	snprintf(line, sizeof(line), "%.*s", (int)strcspn(at, "\n"), at);
	cr_expect(strstr(line, " root ") && strstr(line, " 0600 unreadable: "), "list's line: %s", line);
}

Test(cli, an_own_world_writable_queue_is_refused_until_its_owner_is_trusted)
{
	const char *q = tq_name(NULL);
	struct run r;
	char me[64], why[160];
	struct passwd *pw = getpwuid(geteuid());
	snprintf(me, sizeof(me), "%s", pw ? pw->pw_name : "");
	if (!pw)
		snprintf(me, sizeof(me), "%u", (unsigned)geteuid());
	snprintf(why, sizeof(why), "is yours but writable by every user (mode 0666); pass --trust-owner %s",
		 me);
	expect_exit(RUN(&r, NULL, "create", q, "--mode", "0666"), 0); /* warns: world-writable */
	expect_error(RUN(&r, NULL, "send", q, "x"), 1, why);
	expect_ok(RUN(&r, NULL, "send", q, "--trust-owner", me, "x"), "");
	/* 0660: shared with the group on purpose, which is the owner's to decide */
	const char *g = tq_name("group");
	expect_ok(RUN(&r, NULL, "create", g, "--mode", "0660"), "");
	expect_ok(RUN(&r, NULL, "send", g, "x"), "");
}

Test(cli, trust_options_refuse_unknown_names_repeats_and_read_only_commands)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_error(RUN(&r, NULL, "send", q, "--trust-owner", "no-such-user-shmq", "x"), 2,
		     "--trust-owner: no user 'no-such-user-shmq' (give a user name or a numeric uid)");
	expect_error(RUN(&r, NULL, "recv", q, "--trust-group", "no-such-group-shmq"), 2,
		     "--trust-group: no group 'no-such-group-shmq' (give a group name or a numeric gid)");
	expect_error(RUN(&r, NULL, "send", q, "--trust-owner", "0", "--trust-owner", "1", "x"), 2,
		     "option '--trust-owner' given twice");
	/* watchdog parses each NAME's options in its own round */
	expect_error(RUN(&r, NULL, "watchdog", q, "--trust-group", "0", q, "--trust-group", "0", "--once"), 2,
		     "option '--trust-group' given twice");
	/* stat, peek, check and list write nothing: they read any queue and take no trust */
	expect_error(RUN(&r, NULL, "stat", q, "--trust-owner", "0"), 2, "unknown option '--trust-owner'");
}

/* ---- help ------------------------------------------------------------------------------------ */

Test(cli, help_and_command_help_exit_0_and_print_usage_on_stdout)
{
	struct {
		const char *const *argv;
		const char *starts; /* how stdout begins */
	} cases[] = {
		{ARGV("help"), "usage: shmq COMMAND"},
		{ARGV("--help"), "usage: shmq COMMAND"},
		{ARGV("create", "--help"), "shmq create NAME"},
		{ARGV("help", "recv"), "shmq recv NAME"},
	};
	struct run r;
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		expect_ok(run_tool(&r, NULL, cases[i].argv), NULL);
		cr_expect(!strncmp(r.out, cases[i].starts, strlen(cases[i].starts)),
			  "`%s`: stdout does not begin with '%s': %s", r.cmd, cases[i].starts, r.out);
	}
}

/* ---- idempotency ----------------------------------------------------------------------------- */

Test(cli, send_key_sends_a_key_once_per_window_and_recv_dedup_skips_work_already_done)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "8"), "");
	expect_ok(RUN(&r, NULL, "send", q, "--key", "order-1", "pay"), "");
	expect_ok(RUN(&r, NULL, "send", q, "--key", "order-1", "pay again"), NULL);
	cr_expect(!strncmp(r.out, "duplicate: key 'order-1'", 24), "%s", r.out);
	expect_error(RUN(&r, NULL, "send", q, "--key", "k", "a", "b"), 2, "one PAYLOAD");
	expect_error(RUN(&r, NULL, "recv", q, "--dedup", "--no-ack"), 2, "--no-ack");

	/* a consumer recorded the work done but died before its ack: simulate with the library */
	shmq_t *h;
	struct shmq_msg m;
	cr_assert_eq(shmq_open(q, &h), 0);
	cr_assert_eq(shmq_recv(h, &m, 0), 0);
	cr_assert_eq(shmq_done_mark(h, m.key, m.key_len), 0);
	cr_assert_eq(shmq_nack(h, &m, 0), 0); /* the delivery comes back, as after a crash */
	shmq_close(h);
	expect_exit(RUN(&r, NULL, "recv", q, "--dedup", "--timeout-ms", "0"), 0);
	cr_expect_str_empty(r.out, "already done: not printed again");
	cr_expect(strstr(r.err, "already processed"), "%s", r.err);
	expect_ok(RUN(&r, NULL, "send", q, "--key", "order-2", "ship"), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--dedup", "--timeout-ms", "0"), "ship\n");
	cr_assert_eq(shmq_open(q, &h), 0);
	cr_expect_eq(shmq_done_check(h, "order-2", 7), 1, "recv --dedup recorded it done");
	shmq_close(h);
}

Test(cli, an_option_given_twice_is_a_usage_error_not_a_silent_last_one_wins)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_error(RUN(&r, NULL, "create", q, "--lanes", "2", "--capacity", "8", "--lanes", "4"), 2,
		     "option '--lanes' given twice");
	expect_ok(RUN(&r, NULL, "create", q, "--lanes", "2", "--capacity", "8"), "");
	/* before and after NAME count as one command line */
	expect_error(RUN(&r, NULL, "send", "--route", "a", q, "--route", "b", "x"), 2,
		     "option '--route' given twice");
	EXPECT_STAT(q, "ready: 0", "sent: 0");
}

/* Each line of out parsed as a JSON object (one per line, as the tool prints them); n of them. */
static int json_lines(const char *out, json_t **objs, int max)
{
	int n = 0;
	for (const char *l = out; *l && n < max;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		json_error_t e;
		objs[n] = json_loadb(l, len, 0, &e);
		cr_assert(json_is_object(objs[n]), "not a JSON object: %.*s (%s)", (int)len, l, e.text);
		n++;
		l += len + (nl != NULL);
	}
	return n;
}

static long long jget(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	cr_assert(json_is_integer(v), "no integer '%s'", key);
	return (long long)json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	cr_assert(json_is_string(v), "no string '%s'", key);
	return json_string_value(v);
}

/* The commands that print results print JSON with --json, each in its documented schema, and
 * the figures are the ones the queue has. */
Test(cli, create_send_dlq_watchdog_and_work_print_json_with_json)
{
	const char *q = tq_name(NULL);
	struct run r;
	json_t *o[8];
	expect_ok(RUN(&r, NULL, "create", q, "--json", "--capacity", "16", "--max-deliveries", "1",
		      "--dedup-window-ms", "60000"),
		  NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 1);
	cr_expect_str_eq(jstr(o[0], "schema"), "shmq.create/1");
	cr_expect_str_eq(jstr(o[0], "queue"), q + 1);
	cr_expect_eq(jget(json_object_get(o[0], "config"), "capacity"), 16);
	cr_expect_gt(jget(o[0], "segment_bytes"), 16 * 256);
	json_decref(o[0]);

	/* send: one {"id"} a message, in send order; a repeated key says duplicate with the first id */
	expect_ok(RUN(&r, NULL, "send", q, "--json", "a", "b", "c"), NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 3);
	for (int i = 0; i < 3; i++) {
		cr_expect_eq(jget(o[i], "id"), i);
		json_decref(o[i]);
	}
	expect_ok(RUN(&r, "x\ny\n", "send", q, "--json"), NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 2);
	cr_expect_eq(jget(o[1], "id"), 4);
	json_decref(o[0]);
	json_decref(o[1]);
	expect_ok(RUN(&r, NULL, "send", q, "--json", "--key", "k", "v"), NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 1);
	long long first = jget(o[0], "id");
	json_decref(o[0]);
	expect_ok(RUN(&r, NULL, "send", q, "--json", "--key", "k", "v"), NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 1);
	cr_expect_eq(jget(o[0], "id"), first);
	cr_expect(json_is_true(json_object_get(o[0], "duplicate")));
	json_decref(o[0]);
	/* the ids are the ones receivers see */
	expect_ok(RUN(&r, NULL, "recv", q, "--json", "--count", "1"), NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 1);
	cr_expect_eq(jget(o[0], "id"), 0);
	json_decref(o[0]);

	/* a message left leased by a dead holder: the watchdog's JSON line counts it (and, with
	 * max deliveries 1, dead-letters it), then the DLQ redrive says how many it moved */
	expect_ok(RUN(&r, NULL, "purge", q), NULL);
	leave_dead_lease(q, "doomed");
	expect_ok(RUN(&r, NULL, "watchdog", q, "--once", "--json"), NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 1);
	cr_expect_str_eq(jstr(o[0], "schema"), "shmq.watchdog/1");
	cr_expect_str_eq(jstr(o[0], "event"), "pass");
	cr_expect_eq(jget(o[0], "dead_lettered") + jget(o[0], "requeued"), 1);
	json_decref(o[0]);
	expect_ok(RUN(&r, NULL, "dlq", q, "redrive", "--json"), NULL);
	cr_assert_eq(json_lines(r.out, o, 8), 1);
	cr_expect_str_eq(jstr(o[0], "schema"), "shmq.dlq/1");
	cr_expect_str_eq(jstr(o[0], "action"), "redrive");
	cr_expect_eq(jget(o[0], "count"), 1);
	json_decref(o[0]);
	expect_ok(RUN(&r, NULL, "purge", q), NULL);

	/* work: its summary as JSON on stderr when stopped (the shell prints work's pid first) */
	expect_ok(RUN(&r, NULL, "send", q, "w1", "w2"), "");
	char cmd[1024], line[1024];
	snprintf(cmd, sizeof(cmd),
		 "sh -c '\"$0\" work \"$1\" --json -- true 2>&1 >/dev/null & echo $!; wait' '%s' '%s'", tool,
		 q);
	FILE *f = popen(cmd, "r");
	cr_assert(f && fgets(line, sizeof(line), f), "no pid from the shell");
	pid_t pid = (pid_t)atoi(line);
	for (int i = 0; i < 500; i++) { /* until both are acked (5 s: a hang guard) */
		shmq_view_t *v;
		struct shmq_snapshot s;
		int done = 0;
		if (!shmq_view_open(q, &v)) {
			done = shmq_view_snapshot(v, &s, NULL, 0) >= 0 && s.stats.ready == 0 &&
			       s.stats.inflight == 0;
			shmq_view_close(v);
		}
		if (done)
			break;
		tq_sleep_ms(10);
	}
	kill(pid, SIGTERM);
	cr_assert(fgets(line, sizeof(line), f), "no summary");
	pclose(f);
	cr_assert_eq(json_lines(line, o, 8), 1);
	cr_expect_str_eq(jstr(o[0], "schema"), "shmq.work/1");
	cr_expect_str_eq(jstr(o[0], "stopped_by"), "SIGTERM");
	cr_expect_eq(jget(o[0], "received"), 2);
	cr_expect_eq(jget(o[0], "acked"), 2);
	json_decref(o[0]);
}

Test(cli, set_changes_a_live_queues_settings_and_refuses_bad_ones_changing_nothing)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "16"), "");
	expect_ok(RUN(&r, NULL, "set", q, "--lease-ms", "60000", "--max-deliveries", "3"), NULL);
	cr_expect(strstr(r.out, "lease_ms 60000 ms (was 30000)") &&
			  strstr(r.out, "max_deliveries 3 (was 16)"),
		  "%s", r.out);
	EXPECT_STAT(q, "lease: 60000 ms", "max deliveries: 3");
	expect_error(RUN(&r, NULL, "set", q, "--dlq-max", "17"), 2, "capacity");
	expect_error(RUN(&r, NULL, "set", q, "--retry-base-ms", "40000"), 2, "retry");
	expect_error(RUN(&r, NULL, "set", q), 2, "nothing to change");
	expect_error(RUN(&r, NULL, "set", q, "--lease-ms", "0"), 2, "--lease-ms");
	EXPECT_STAT(q, "lease: 60000 ms", "max deliveries: 3", "dead letters kept (max): 4");
	expect_ok(RUN(&r, NULL, "set", q, "--json", "--dlq-max", "8"), NULL);
	cr_expect(strstr(r.out, "\"schema\": \"shmq.set/1\"") && strstr(r.out, "\"dlq_max\": 8"), "%s",
		  r.out);
	expect_ok(RUN(&r, NULL, "check", q), NULL);
	json_t *o[2];
	expect_ok(RUN(&r, NULL, "check", q, "--json"), NULL);
	json_error_t e;
	o[0] = json_loads(r.out, 0, &e);
	cr_assert(json_is_object(o[0]), "check --json: %s (%s)", r.out, e.text);
	cr_expect_str_eq(jstr(o[0], "schema"), "shmq.check/1");
	cr_expect(json_is_true(json_object_get(o[0], "sound")));
	cr_expect_eq(jget(o[0], "errors"), 0);
	cr_expect(json_is_array(json_object_get(o[0], "findings")));
	json_decref(o[0]);
}

/* A reader that leaves early (`shmq peek q | head -n 1`) ends the tool quietly: no "Broken pipe"
 * line on stderr, as a tool that SIGPIPE ends would say nothing. 4096 messages make peek write
 * far more than a pipe holds, so it is still writing when head leaves. */
Test(cli, a_reader_leaving_early_gets_no_broken_pipe_message)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "4096"), "");
	static char lines[4096 * 101 + 1];
	size_t len = 0;
	for (int i = 0; i < 4096; i++)
		len += (size_t)snprintf(lines + len, sizeof(lines) - len, "%0100d\n", i);
	expect_ok(RUN(&r, lines, "send", q), "");
	char cmd[1024]; /* peek's stderr only: its stdout goes to head */
	snprintf(cmd, sizeof(cmd), "{ '%s' peek '%s' --count 4096 --hex | head -n 1 >/dev/null; } 2>&1", tool,
		 q);
	FILE *f = popen(cmd, "r");
	cr_assert(f);
	char out[8192] = "";
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	pclose(f);
	cr_expect(!strstr(out, "Broken pipe") && !strstr(out, "cannot write"), "%s", out);
}

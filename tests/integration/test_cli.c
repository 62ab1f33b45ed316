/* SPDX-License-Identifier: MIT */
/*
 * The shmq tool's command-line contract, proven by running the built binary ($SHMQ_TOOL) the way
 * a user or a script would: exit status (0 ok, 1 runtime failure, 2 usage error), what goes to
 * stdout, and one "shmq: ..." line on stderr for every failure. Each test's queue names come from
 * tq_name() and are unlinked by the suite's .fini, failed tests included.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"

#define RUN_LIMIT_MS 10000 /* a command still running after this is killed and fails its test */
#define RUN_MAX_ARGS 32
#define RUN_OUT_MAX 16384
#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char *tool;

static void cli_init(void) { tool = tq_tool(); }

TestSuite(cli, .init = cli_init, .fini = tq_cleanup);

/* ---- running the tool ------------------------------------------------------------------------ */

struct run {
	char cmd[1024]; /* the command line, for failure messages */
	int code;	/* exit status, or -1 when a signal ended the tool */
	int sig;	/* that signal, else 0 */
	double ms;	/* wall time */
	char out[RUN_OUT_MAX];
	char err[RUN_OUT_MAX];
};

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})
/* RUN(&r, stdin_text or NULL, "create", name, ...): runs `shmq create name ...` */
#define RUN(r, in, ...) run_tool(r, in, ARGV(__VA_ARGS__))

/* fd becomes the child's fd `to`; dup2 onto itself would keep O_CLOEXEC, so clear it instead */
static void move_fd(int fd, int to)
{
	if ((fd == to ? fcntl(fd, F_SETFD, 0) : dup2(fd, to)) < 0)
		_exit(126);
}

/* Appends what fd has to buf (dropping what does not fit, and saying so); closes fd at EOF. */
static void drain(int *fd, char *buf, size_t *len)
{
	char tmp[4096];
	ssize_t n = read(*fd, tmp, sizeof(tmp));
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0) {
		close(*fd);
		*fd = -1;
		return;
	}
	size_t room = RUN_OUT_MAX - 1 - *len, take = (size_t)n < room ? (size_t)n : room;
	cr_expect(take == (size_t)n, "more than %d bytes of output", RUN_OUT_MAX - 1);
	memcpy(buf + *len, tmp, take);
	*len += take;
	buf[*len] = '\0';
}

/* Runs the tool with args (fork + execv, no shell), feeding it `in` (NULL: /dev/null) and capturing
 * stdout and stderr. Both pipes are read as they fill, with stdin written in between, so a tool
 * that writes a lot before it reads cannot deadlock with us. */
static struct run *run_tool(struct run *r, const char *in, const char *const args[])
{
	const char *argv[RUN_MAX_ARGS + 2] = {tool};
	int n = 0, cmdlen = snprintf(r->cmd, sizeof(r->cmd), "shmq");
	for (; args[n]; n++) {
		cr_assert(n < RUN_MAX_ARGS, "too many arguments");
		argv[n + 1] = args[n];
		cmdlen += snprintf(r->cmd + cmdlen, sizeof(r->cmd) - (size_t)cmdlen, *args[n] ? " %s" : " ''",
				   args[n]);
		cr_assert((size_t)cmdlen < sizeof(r->cmd), "command line too long");
	}
	r->out[0] = r->err[0] = '\0';

	int inp[2] = {-1, -1}, outp[2], errp[2];
	if (in)
		cr_assert(pipe2(inp, O_CLOEXEC) == 0);
	else
		cr_assert((inp[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0);
	cr_assert(pipe2(outp, O_CLOEXEC) == 0 && pipe2(errp, O_CLOEXEC) == 0);

	double start = tq_now_ms();
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		move_fd(inp[0], 0);
		move_fd(outp[1], 1);
		move_fd(errp[1], 2);
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	close(inp[0]);
	close(outp[1]);
	close(errp[1]);
	if (inp[1] >= 0)
		fcntl(inp[1], F_SETFL, O_NONBLOCK);

	size_t in_left = in ? strlen(in) : 0, out_len = 0, err_len = 0;
	struct pollfd p[3] = {{.fd = inp[1], .events = POLLOUT},
			      {.fd = outp[0], .events = POLLIN},
			      {.fd = errp[0], .events = POLLIN}};
	int status = 0, timed_out = 0;
	for (;;) {
		if (p[0].fd >= 0 && !in_left) { /* all fed: EOF tells `send` it has every line */
			close(p[0].fd);
			p[0].fd = -1;
		}
		double left = start + RUN_LIMIT_MS - tq_now_ms();
		if (left <= 0) {
			timed_out = 1;
			break;
		}
		if (p[0].fd < 0 && p[1].fd < 0 && p[2].fd < 0) {
			/* output closed: wait for the exit, still within the limit */
			pid_t w = waitpid(pid, &status, WNOHANG);
			cr_assert(w >= 0, "waitpid: %s", strerror(errno));
			if (w == pid)
				break;
			tq_sleep_ms(1);
			continue;
		}
		if (poll(p, 3, (int)left + 1) < 0) {
			cr_assert(errno == EINTR, "poll: %s", strerror(errno));
			continue;
		}
		if (p[0].revents & (POLLOUT | POLLERR | POLLHUP)) {
			ssize_t w = write(p[0].fd, in, in_left);
			if (w > 0) {
				in += w;
				in_left -= (size_t)w;
			} else if (errno != EAGAIN && errno != EINTR) {
				in_left = 0; /* the tool closed its stdin: the rest is not wanted */
			}
		}
		if (p[1].revents)
			drain(&p[1].fd, r->out, &out_len);
		if (p[2].revents)
			drain(&p[2].fd, r->err, &err_len);
	}
	for (int i = 0; i < 3; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	if (timed_out) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		cr_assert_fail("`%s` still running after %d ms: killed", r->cmd, RUN_LIMIT_MS);
	}
	r->ms = tq_now_ms() - start;
	r->code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	r->sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	return r;
}

/* ---- what a run must look like --------------------------------------------------------------- */

static void expect_exit(const struct run *r, int code)
{
	cr_expect(r->sig == 0, "`%s` was killed by signal %d (%s)", r->cmd, r->sig, strsignal(r->sig));
	cr_expect(r->code == code, "`%s` exited %d, want %d; stderr: %s", r->cmd, r->code, code, r->err);
}

/* Exit 0, nothing on stderr, exactly `out` on stdout (NULL: stdout not checked). */
static void expect_ok(const struct run *r, const char *out)
{
	expect_exit(r, 0);
	cr_expect_str_empty(r->err, "`%s` wrote to stderr", r->cmd);
	if (out)
		cr_expect_str_eq(r->out, out, "`%s`: stdout", r->cmd);
}

/* Exit `code`, nothing on stdout, and on stderr one line "shmq: ..." that contains `needle`,
 * followed for usage errors (exit 2) by at most the hint "try 'shmq help'". */
static void expect_error(const struct run *r, int code, const char *needle)
{
	expect_exit(r, code);
	cr_expect_str_empty(r->out, "`%s` wrote to stdout", r->cmd);
	const char *nl = strchr(r->err, '\n');
	int first = nl ? (int)(nl - r->err) : (int)strlen(r->err);
	cr_expect(!strncmp(r->err, "shmq: ", 6) && nl, "`%s`: want one 'shmq: ' line on stderr, got: %s",
		  r->cmd, r->err);
	cr_expect(memmem(r->err, (size_t)first, needle, strlen(needle)),
		  "`%s`: error '%.*s' does not name '%s'", r->cmd, first, r->err, needle);
	const char *rest = nl ? nl + 1 : "";
	cr_expect(!*rest || (code == 2 && !strcmp(rest, "try 'shmq help'\n")),
		  "`%s`: more than one line on stderr: %s", r->cmd, r->err);
}

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

/* Runs `shmq stat name` and checks each "label: value" against its line of the output, e.g.
 * "capacity: 8 slots" (the first line with that label: "dead-lettered" is the depth, not the
 * counter). */
#define EXPECT_STAT(name, ...) expect_stat(name, ARGV(__VA_ARGS__))
static void expect_stat(const char *name, const char *const want[])
{
	struct run r;
	expect_ok(RUN(&r, NULL, "stat", name), NULL);
	for (; *want; want++) {
		const char *sep = strstr(*want, ": ");
		cr_assert(sep, "'%s' is not 'label: value'", *want);
		int label_len = (int)(sep - *want);
		const char *value = sep + 2;
		char key[64];
		snprintf(key, sizeof(key), "\n  %-24.*s ", label_len, *want);
		const char *line = strstr(r.out, key);
		if (!line) {
			cr_expect_fail("`%s`: no line '%.*s' in:\n%s", r.cmd, label_len, *want, r.out);
			continue;
		}
		line += strlen(key);
		int len = (int)strcspn(line, "\n");
		cr_expect(len == (int)strlen(value) && !strncmp(line, value, (size_t)len),
			  "`%s`: got '%.*s', want '%s'", r.cmd, len, line, *want);
	}
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
	EXPECT_STAT(q, "capacity: 8 slots", "slot size: 128 bytes", "max payload: 64 bytes", "lease: 1500 ms",
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

Test(cli, recv_timeout_on_an_empty_queue_exits_0_with_no_output_after_about_that_time)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "300"), "");
	cr_expect(r.ms >= 300 - tq_slack_ms() && r.ms < 3000, "recv --timeout-ms 300 took %.0f ms", r.ms);
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
	expect_error(RUN(&r, NULL, "dlq", q, "redrive", "--json"), 2, "--json applies only to list");
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
	/* an operator can still clear it away */
	expect_ok(RUN(&r, NULL, "unlink", q), "");
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

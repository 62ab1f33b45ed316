/* SPDX-License-Identifier: MIT */
/*
 * run_tool.h: running the built shmq tool ($SHMQ_TOOL) in the CLI tests the way a user or a
 * script would (fork + exec, no shell), with its exit status, stdout and stderr captured, and the
 * checks every CLI test makes of a run: exit status, empty stderr, one "shmq: ..." error line.
 */
#ifndef SHMQ_TESTS_RUN_TOOL_H
#define SHMQ_TESTS_RUN_TOOL_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"

#define RUN_LIMIT_MS 10000 /* a command still running after this is killed and fails its test */
#define RUN_MAX_ARGS 32
#define RUN_OUT_MAX (128 * 1024) /* `list` prints a line per object in /dev/shm */
#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char *tool __attribute__((unused));
/* the uid (and gid) RUN runs the tool as; (uid_t)-1: ours. Root only: a test sets it, runs, and
 * sets it back. */
static uid_t run_as __attribute__((unused)) = (uid_t)-1;

/* A suite's .init: finds the tool, and ignores SIGPIPE (tq_tool). */
static void run_tool_init(void) { tool = tq_tool(); }

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
__attribute__((unused)) static void move_fd(int fd, int to)
{
	if ((fd == to ? fcntl(fd, F_SETFD, 0) : dup2(fd, to)) < 0)
		_exit(126);
}

/* Appends what fd has to buf (dropping what does not fit, and saying so); closes fd at EOF. */
__attribute__((unused)) static void drain(int *fd, char *buf, size_t *len)
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
__attribute__((unused)) static struct run *run_tool(struct run *r, const char *in, const char *const args[])
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
		if (run_as != (uid_t)-1 && (setgroups(0, NULL) || setgid(run_as) || setuid(run_as)))
			_exit(126);
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

__attribute__((unused)) static void expect_exit(const struct run *r, int code)
{
	cr_expect(r->sig == 0, "`%s` was killed by signal %d (%s)", r->cmd, r->sig, strsignal(r->sig));
	cr_expect(r->code == code, "`%s` exited %d, want %d; stderr: %s", r->cmd, r->code, code, r->err);
}

/* Exit 0, nothing on stderr, exactly `out` on stdout (NULL: stdout not checked). */
__attribute__((unused)) static void expect_ok(const struct run *r, const char *out)
{
	expect_exit(r, 0);
	cr_expect_str_empty(r->err, "`%s` wrote to stderr", r->cmd);
	if (out)
		cr_expect_str_eq(r->out, out, "`%s`: stdout", r->cmd);
}

/* Exit `code`, nothing on stdout, and on stderr one line "shmq: ..." that contains `needle`,
 * followed for usage errors (exit 2) by at most the hint "try 'shmq help'". */
__attribute__((unused)) static void expect_error(const struct run *r, int code, const char *needle)
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

/* Gives the segment `name` to uid:gid with mode (root only: the tests that call it skip
 * otherwise), as if another user had created it. */
__attribute__((unused)) static void give_away(const char *name, uid_t uid, gid_t gid, mode_t mode)
{
	int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
	cr_assert_geq(fd, 0, "shm_open(%s): %s", name, strerror(errno));
	cr_assert_eq(fchown(fd, uid, gid), 0, "fchown(%s, %u, %u): %s", name, (unsigned)uid, (unsigned)gid,
		     strerror(errno));
	cr_assert_eq(fchmod(fd, mode), 0, "fchmod(%s, %o): %s", name, (unsigned)mode, strerror(errno));
	close(fd);
}

#define SKIP_UNLESS_ROOT()                                                                                   \
	do {                                                                                                 \
		if (geteuid() != 0)                                                                          \
			cr_skip_test("needs root, to give a queue to another uid (fchown)");                 \
	} while (0)

/* Runs `shmq stat name` and checks each "label: value" against its line of the output, e.g.
 * "capacity: 8 slots" (the first line with that label: "dead-lettered" is the depth, not the
 * counter). */
#define EXPECT_STAT(name, ...) expect_stat(name, ARGV(__VA_ARGS__))
__attribute__((unused)) static void expect_stat(const char *name, const char *const want[])
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

#endif

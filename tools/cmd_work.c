/* SPDX-License-Identifier: MIT */
/*
 * cmd_work.c: `shmq work NAME [--threads N] [--prefetch N] [--dedup] [--timeout-ms MS] [--grace-ms
 * MS] -- CMD [ARGS...]`: the worker runtime (include/shmq_worker.h) with a handler that runs CMD once per
 * message, payload on its stdin, and maps its exit status to a verdict: 0 ack, 75 (EX_TEMPFAIL)
 * retry, 65 (EX_DATAERR) reject; anything else (another status, a signal, a timeout) is a failed
 * delivery, retried with backoff until max_deliveries dead-letters it. With --dedup (the worker's
 * config.dedup) an exit 0 records the message done before the ack, and a message recorded done
 * already is acked without running CMD.
 *
 * Each CMD runs under a reaper: a process forked per message that leads a new process group, in
 * which it starts CMD, waits for it and reports its wait status through a pipe. The group keeps a
 * terminal's ^C away from the CMDs (it stops `shmq work` gracefully) and lets a timeout or the
 * end of the grace kill everything CMD started. The kernel tells the reaper when `shmq work`
 * dies, SIGKILL included (PR_SET_PDEATHSIG, SIGHUP): it then SIGKILLs its whole group, so a CMD
 * and its children (`sh -c 'job & wait'`) never go on with a message that the queue's reclaim
 * pass gives to another consumer. CMD itself has PR_SET_PDEATHSIG SIGKILL, should the reaper be
 * killed alone; `shmq work` then kills the group, which the reaper's pid names until it is
 * reaped. When CMD exits, what it left running in the group is killed with the reaper: nothing
 * outlives the message it ran for. Only a process that leaves the group (setsid, setpgid)
 * escapes, as from any process-group kill (a cgroup would hold it).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "shmq_worker.h"

#define KILL_GRACE_MS 1000 /* between the SIGTERM and the SIGKILL of a CMD that must go */
#define LOOK_MS 50	   /* how often a handler looks at the worker's state while CMD runs */

extern char **environ;

enum {
	O_THREADS = CLI_OPT_BASE,
	O_TIMEOUT_MS,
	O_GRACE_MS,
	O_DEDUP,
	O_PREFETCH,
	O_WORK_JSON,
};

static const struct option work_opts[] = {
	{"threads", required_argument, NULL, O_THREADS},
	{"timeout-ms", required_argument, NULL, O_TIMEOUT_MS},
	{"grace-ms", required_argument, NULL, O_GRACE_MS},
	{"dedup", no_argument, NULL, O_DEDUP},
	{"prefetch", required_argument, NULL, O_PREFETCH},
	{"json", no_argument, NULL, O_WORK_JSON},
	CLI_TRUST_OPTIONS,
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct work {
	uint64_t threads;
	uint64_t prefetch; /* leases held at once by this process (all threads), 0: no limit */
	int timeout_ms;	   /* 0: none */
	int grace_ms;	   /* -1: wait for the CMDs in flight */
	int dedup;	   /* skip (ack) messages recorded done, record each exit 0 done */
	int json;	   /* the summary as a JSON line (schema shmq.work/1) */
	const char *queue;
	char *path;  /* CMD, found in PATH */
	char **argv; /* CMD and its arguments, NULL-terminated */
	char **env;  /* environ without our variables, room for them and a NULL at the end */
	size_t nenv;
	char *queue_var; /* SHMQ_QUEUE=NAME */
	unsigned max_deliveries;
};

static int work_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct work *o = ctx;
	uint64_t v;
	int r;
	if (opt == O_DEDUP || opt == O_WORK_JSON) {
		*(opt == O_DEDUP ? &o->dedup : &o->json) = 1;
		return 0;
	}
	if (opt == O_THREADS)
		return cli_opt_range(cmd, "--threads", arg, 1, SHMQ_WORKER_THREADS_MAX, &o->threads);
	if (opt == O_PREFETCH)
		return cli_opt_range(cmd, "--prefetch", arg, 1, SHMQ_CAPACITY_MAX, &o->prefetch);
	if ((r = cli_opt_range(cmd, opt == O_TIMEOUT_MS ? "--timeout-ms" : "--grace-ms", arg,
			       opt == O_TIMEOUT_MS, INT_MAX, &v)))
		return r;
	if (opt == O_TIMEOUT_MS)
		o->timeout_ms = (int)v;
	else
		o->grace_ms = (int)v;
	return 0;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* An executable regular file: what execve can run. */
static int runnable(const char *path)
{
	struct stat st;
	return access(path, X_OK) == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* CMD as execve wants it: a path (PATH searched when it has no '/'), or NULL. */
static char *find_cmd(const char *name)
{
	if (strchr(name, '/'))
		return runnable(name) ? strdup(name) : NULL;
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *dir = path;; dir++) {
		size_t len = strcspn(dir, ":");
		char *full = malloc(len + strlen(name) + 3);
		if (!full)
			return NULL;
		sprintf(full, "%.*s/%s", (int)len, len ? dir : ".", name);
		if (runnable(full))
			return full;
		free(full);
		dir += len;
		if (!*dir)
			return NULL;
	}
}

static const char *const our_vars[] = {"SHMQ_MSG_ID=", "SHMQ_DELIVERIES=", "SHMQ_QUEUE="};
#define N_VARS (sizeof(our_vars) / sizeof(our_vars[0]))

/* Our environment minus the variables we set per message, with room for them. */
static int base_env(struct work *o)
{
	size_t n = 0;
	while (environ[n])
		n++;
	o->env = calloc(n + N_VARS + 1, sizeof(char *));
	o->queue_var = malloc(strlen(our_vars[2]) + strlen(o->queue) + 1);
	if (!o->env || !o->queue_var)
		return -1;
	strcat(strcpy(o->queue_var, our_vars[2]), o->queue);
	for (size_t i = 0; i < n; i++) {
		size_t v = 0;
		while (v < N_VARS && strncmp(environ[i], our_vars[v], strlen(our_vars[v])))
			v++;
		if (v == N_VARS)
			o->env[o->nenv++] = environ[i];
	}
	return 0;
}

/* CMD, forked by its reaper (stdin in place): between fork and exec. */
static void exec_cmd(const struct work *o, char **env, pid_t reaper)
{
	/* the reaper's SIGKILL runs no code of its: then the kernel stops CMD */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != reaper)
		_exit(127);
	/* dispositions we ignore (SIGPIPE) and the mask of the worker thread would be inherited */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, &dfl, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(o->path, o->argv, env);
	_exit(127);
}

/* What the reaper reports: CMD's wait status, or why it could not start CMD. */
struct report {
	int status; /* as from waitpid */
	int err;    /* 0, or the errno of a failed fork */
};

#define REPORT_FD 3 /* the reaper's end of the report pipe */

/* Closes every fd from `from` up: the reaper holds no copy of another CMD's stdin (which would
 * keep it from seeing EOF) or of the segment (whose lock would outlive us). */
static void close_from(int from)
{
	if (close_range((unsigned)from, ~0U, 0) == 0)
		return;
	struct rlimit rl;
	int max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
	for (int fd = from; fd < max; fd++)
		close(fd);
}

/* The reaper, in a child of our multi-threaded process: async-signal-safe calls only, for its whole
 * life (it never execs). in: CMD's stdin; report: the write end of the report pipe. */
static _Noreturn void reaper(const struct work *o, int in, int report, char **env, pid_t parent)
{
	sigset_t all, wake;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL); /* signals are waited for, below; CMD unblocks them */
	setpgid(0, 0);
	/* SIGHUP when the thread that forked us dies, which only the process's death does while CMD
	 * runs; checked after it is set, so a death before it is seen too */
	if (prctl(PR_SET_PDEATHSIG, SIGHUP) || prctl(PR_SET_CHILD_SUBREAPER, 1) || getppid() != parent)
		_exit(127);
	if (dup2(in, 0) < 0 || dup2(report, REPORT_FD) < 0 || fcntl(REPORT_FD, F_SETFD, FD_CLOEXEC) < 0)
		_exit(127);
	close_from(REPORT_FD + 1);
	pid_t self = getpid(), cmd = _Fork();
	if (cmd == 0)
		exec_cmd(o, env, self);
	struct report rep = {.err = cmd < 0 ? errno : 0};
	close(0);
	sigemptyset(&wake);
	sigaddset(&wake, SIGCHLD);
	sigaddset(&wake, SIGHUP);
	while (cmd > 0) {
		/* a second's bound: a lost wake-up costs a look, not the group */
		sigtimedwait(&wake, NULL, &(struct timespec){.tv_sec = 1});
		if (getppid() != parent)
			kill(0, SIGKILL); /* `shmq work` is gone: the group, us included */
		int st;
		pid_t p;
		/* CMD, and as a subreaper the orphans of its children */
		while ((p = waitpid(-1, &st, WNOHANG)) > 0)
			if (p == cmd)
				rep.status = st, cmd = 0;
	}
	(void)!write(REPORT_FD, &rep, sizeof(rep));
	kill(0, SIGKILL); /* what CMD left running in its group, and us */
	_exit(127);
}

enum end {
	END_EXIT,
	END_TIMEOUT,
	END_ABANDONED
};

/* Feeds the payload to CMD's stdin while waiting for the reaper's report; kills the reaper's group
 * (SIGTERM, then SIGKILL after KILL_GRACE_MS) past the timeout or when the grace period of a
 * shutdown is over. *status: CMD's wait status, or the reaper's when it died without a report. */
static enum end supervise(shmq_worker_t *w, const struct work *o, pid_t pid, int in, int report,
			  const char *p, size_t left, int *status, int *err)
{
	uint64_t now = mono_ms(), deadline = o->timeout_ms ? now + (uint64_t)o->timeout_ms : UINT64_MAX;
	uint64_t term_at = 0;
	enum end why = END_EXIT;
	struct report rep;
	size_t got = 0;
	fcntl(in, F_SETFL, O_NONBLOCK);
	for (;;) {
		if (in >= 0 && !left) { /* all written: EOF */
			close(in);
			in = -1;
		}
		now = mono_ms();
		if (!term_at && (now >= deadline || shmq_worker_state(w) == SHMQ_WORKER_ABANDONED)) {
			why = now >= deadline ? END_TIMEOUT : END_ABANDONED;
			kill(-pid, SIGTERM);
			term_at = now;
			left = 0;
		} else if (term_at && now >= term_at + KILL_GRACE_MS) {
			kill(-pid, SIGKILL);
		}
		uint64_t wait = LOOK_MS;
		if (!term_at && deadline - now < wait)
			wait = deadline - now;
		struct pollfd pf[2] = {{.fd = report, .events = POLLIN}, {.fd = in, .events = POLLOUT}};
		poll(pf, 2, (int)wait);
		if (pf[0].revents) {
			/* the report, or EOF: the reaper is gone (only it holds the write end) */
			ssize_t n = read(report, (char *)&rep + got, sizeof(rep) - got);
			if (n > 0 && (got += (size_t)n) < sizeof(rep))
				continue;
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			break;
		}
		if (in >= 0 && pf[1].revents) {
			ssize_t n = write(in, p, left);
			if (n > 0)
				p += n, left -= (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				left = 0; /* EPIPE: CMD does not want the rest */
		}
	}
	if (in >= 0)
		close(in);
	close(report);
	/* the group dies now if the reaper did not kill it: the reaper was killed alone, and CMD's
	 * children are orphans. Before the reap, while the zombie's pid still names the group */
	kill(-pid, SIGKILL);
	int rst;
	while (waitpid(pid, &rst, 0) < 0 && errno == EINTR)
		;
	*status = got == sizeof(rep) ? rep.status : rst;
	*err = got == sizeof(rep) ? rep.err : 0;
	return why;
}

/* One line on stderr for a message that did not succeed. */
static void notice(const struct work *o, const struct shmq_msg *m, const char *what, int verdict)
{
	const char *then = verdict == SHMQ_WORKER_REJECT	? "rejected to the dead-letter queue"
			   : m->deliveries >= o->max_deliveries ? "dead-lettered (max deliveries)"
								: "retried after a backoff";
	fprintf(stderr, "shmq: work: message %llu (delivery %u of %u): %s: %s\n", (unsigned long long)m->id,
		m->deliveries, o->max_deliveries, what, then);
}

static int run_cmd(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	const struct work *o = arg;
	char what[96], vars[2][64];
	char **env = malloc((o->nenv + N_VARS + 1) * sizeof(char *));
	int fds[2] = {-1, -1}, rep[2] = {-1, -1};
	if (!env || pipe2(fds, O_CLOEXEC) || pipe2(rep, O_CLOEXEC)) {
		int err = errno;
		free(env);
		for (int i = 0; i < 2; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		errno = err;
		snprintf(what, sizeof(what), "cannot run CMD: %s", strerror(errno));
		notice(o, m, what, SHMQ_WORKER_RETRY);
		return SHMQ_WORKER_RETRY;
	}
	snprintf(vars[0], sizeof(vars[0]), "SHMQ_MSG_ID=%llu", (unsigned long long)m->id);
	snprintf(vars[1], sizeof(vars[1]), "SHMQ_DELIVERIES=%u", m->deliveries);
	memcpy(env, o->env, o->nenv * sizeof(char *));
	env[o->nenv] = vars[0];
	env[o->nenv + 1] = vars[1];
	env[o->nenv + 2] = o->queue_var;
	env[o->nenv + 3] = NULL;

	pid_t parent = getpid(), pid = fork();
	if (pid == 0)
		reaper(o, fds[0], rep[1], env, parent);
	int err = errno;
	close(fds[0]);
	close(rep[1]);
	free(env);
	if (pid < 0) {
		close(fds[1]);
		close(rep[0]);
		snprintf(what, sizeof(what), "cannot start CMD: %s", strerror(err));
		notice(o, m, what, SHMQ_WORKER_RETRY);
		return SHMQ_WORKER_RETRY;
	}
	setpgid(pid, pid); /* the reaper does it too: whoever is first, kill(-pid) finds the group */

	int st = 0;
	enum end why = supervise(w, o, pid, fds[1], rep[0], m->data, m->len, &st, &err);
	if (why == END_ABANDONED)
		return SHMQ_WORKER_RETRY; /* ignored: the worker nacked the message already */
	if (why == END_TIMEOUT)
		snprintf(what, sizeof(what), "still running after %d ms: killed", o->timeout_ms);
	else if (err)
		snprintf(what, sizeof(what), "cannot start CMD: %s", strerror(err));
	else if (WIFSIGNALED(st))
		snprintf(what, sizeof(what), "killed by signal %d (%s)", WTERMSIG(st),
			 strsignal(WTERMSIG(st)));
	else if (WEXITSTATUS(st) == 0)
		return SHMQ_WORKER_ACK;
	else if (WEXITSTATUS(st) == EX_DATAERR) {
		notice(o, m, "exit 65 (data error)", SHMQ_WORKER_REJECT);
		return SHMQ_WORKER_REJECT;
	} else if (WEXITSTATUS(st) == EX_TEMPFAIL)
		snprintf(what, sizeof(what), "exit 75 (temporary failure)");
	else
		snprintf(what, sizeof(what), "exit %d", WEXITSTATUS(st));
	notice(o, m, what, SHMQ_WORKER_RETRY);
	return SHMQ_WORKER_RETRY;
}

/* ---------------------------------------------------------------------------------------------
 * Signals and the command
 */

static shmq_worker_t *volatile running;
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
	shmq_worker_stop(running); /* async-signal-safe; the second signal ends the grace */
}

int cmd_work(int argc, char **argv)
{
	const char *cmd = "work";
	struct work o = {.threads = 1, .grace_ms = -1};
	struct cli_args a;
	struct shmq_stats st;
	shmq_worker_t *w = NULL;
	shmq_t *q = NULL;
	int r;

	if ((r = cli_parse(cmd, argc, argv, work_opts, work_opt, &o, &a)))
		return r;
	if (a.nrest == 0)
		return cli_error(CLI_USAGE, cmd, "missing CMD: shmq work NAME [OPTIONS] -- CMD [ARGS...]");
	o.queue = a.name;
	o.argv = a.rest; /* argv[argc] is NULL */
	if (!(o.path = find_cmd(a.rest[0])))
		return cli_error(CLI_FAIL, cmd, "cannot run '%s': %s", a.rest[0],
				 strchr(a.rest[0], '/') ? "not an executable file"
							: "command not found in PATH");
	if (base_env(&o)) {
		r = cli_error(CLI_FAIL, cmd, "out of memory");
		goto out;
	}
	if ((r = cli_open(cmd, a.name, &q)))
		goto out;
	if ((r = shmq_stats(q, &st))) {
		r = cli_error(CLI_FAIL, cmd, "cannot read queue '%s': %s", a.name, cli_strerror(r));
		goto out;
	}
	o.max_deliveries = st.config.max_deliveries;
	/* the worker's threads share this handle, so the limit is the whole process's */
	if (o.prefetch && (r = shmq_set_prefetch(q, (uint32_t)o.prefetch))) {
		r = cli_error(CLI_FAIL, cmd, "cannot set --prefetch: %s", cli_strerror(r));
		goto out;
	}

	struct shmq_worker_config cfg;
	shmq_worker_config_init(&cfg);
	cfg.threads = (unsigned)o.threads;
	cfg.handler = run_cmd;
	cfg.arg = &o;
	cfg.grace_ms = o.grace_ms;
	cfg.dedup = o.dedup;
	/* a signal before `running` is set finds no worker: hold them until it is */
	sigset_t stops, old;
	sigemptyset(&stops);
	sigaddset(&stops, SIGINT);
	sigaddset(&stops, SIGTERM);
	sigprocmask(SIG_BLOCK, &stops, &old);
	cli_on_stop_signals(on_signal);
	if ((r = shmq_worker_start(q, &cfg, &w))) {
		cli_on_stop_signals(SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (r == -ENOTSUP && o.dedup)
			r = cli_no_dedup(cmd, "--dedup: ", a.name);
		else
			r = cli_error(CLI_FAIL, cmd, "cannot start the workers: %s", cli_strerror(r));
		goto out;
	}
	running = w;
	sigprocmask(SIG_SETMASK, &old, NULL);

	int err = shmq_worker_join(w); /* until a stop signal, or a receive error */
	sigprocmask(SIG_BLOCK, &stops, NULL);
	running = NULL;
	struct shmq_worker_stats ws;
	char done[64] = "";
	shmq_worker_stats(w, &ws);
	if (o.dedup)
		snprintf(done, sizeof(done), "; %llu already done, acked without running CMD",
			 (unsigned long long)ws.skipped_done);
	shmq_worker_close(w);
	if (err)
		r = cli_error(CLI_FAIL, cmd, "cannot receive from '%s': %s", a.name, cli_strerror(err));
	else if (o.json) /* on stderr too: stdout is the CMDs' */
		fprintf(stderr,
			"{\"schema\": \"shmq.work/1\", \"queue\": \"%s\", \"stopped_by\": \"%s\", "
			"\"received\": "
			"%llu, \"acked\": %llu, \"retried\": %llu, \"rejected\": %llu, \"lost_leases\": "
			"%llu, "
			"\"given_back\": %llu, \"already_done\": %llu}\n",
			cli_bare_name(a.name), stop_signal == SIGINT ? "SIGINT" : "SIGTERM",
			(unsigned long long)ws.received, (unsigned long long)ws.acked,
			(unsigned long long)ws.retried, (unsigned long long)ws.rejected,
			(unsigned long long)ws.lost, (unsigned long long)ws.abandoned,
			(unsigned long long)ws.skipped_done);
	else
		fprintf(stderr,
			"shmq: work: stopped by %s: %llu message%s: %llu acked, %llu retried or "
			"dead-lettered, %llu rejected, "
			"%llu lost leases, %llu given back at shutdown%s\n",
			stop_signal == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)ws.received,
			ws.received == 1 ? "" : "s", (unsigned long long)ws.acked,
			(unsigned long long)ws.retried, (unsigned long long)ws.rejected,
			(unsigned long long)ws.lost, (unsigned long long)ws.abandoned, done);
out:
	shmq_close(q);
	free(o.env);
	free(o.queue_var);
	free(o.path);
	return r;
}

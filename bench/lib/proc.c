/* SPDX-License-Identifier: MIT */
/*
 * proc.c: forking, pinning, start barrier, waiting with a deadline, CPU and load accounting (see
 * proc.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/proc.h"

#define LIVE_MAX 64

static pid_t main_pid;
static volatile pid_t live[LIVE_MAX]; /* every child not yet reaped, for the exit paths */
static volatile sig_atomic_t interrupted;
static int child_ready_fd = -1, child_go_fd = -1;

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int proc_pin(int cpu)
{
	if (cpu < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

double proc_self_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int64_t proc_cpu_ns(pid_t pid)
{
	char path[64];
	unsigned long long ns;
	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f) {
		int k = fscanf(f, "%llu", &ns);
		fclose(f);
		if (k == 1)
			return (int64_t)ns;
	}
	/* no schedstat: fields 14 and 15 of stat, in clock ticks; the name (field 2) may hold spaces */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return -errno;
	char buf[1024];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	unsigned long long ut, st;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -EPROTO;
	long hz = sysconf(_SC_CLK_TCK);
	return (int64_t)((ut + st) * (1000000000ull / (unsigned long long)(hz > 0 ? hz : 100)));
}

struct load_mark load_mark(void)
{
	struct load_mark m = {0, 0, now_ns()};
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return m;
	unsigned long long v[8] = {0};
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &v[6], &v[7]) == 8) {
		for (int i = 0; i < 8; i++)
			m.total += v[i];
		m.busy = m.total - v[3] - v[4]; /* idle and iowait are not busy */
	}
	fclose(f);
	return m;
}

double load_other(struct load_mark a, double own_cpu_s)
{
	struct load_mark b = load_mark();
	long hz = sysconf(_SC_CLK_TCK);
	double wall = (double)(b.t_ns - a.t_ns) / 1e9;
	if (!a.total || !b.total || hz <= 0 || wall <= 0)
		return -1;
	double other = (double)(b.busy - a.busy) / (double)hz - own_cpu_s;
	return other > 0 ? other / wall : 0;
}

static void live_add(pid_t p)
{
	for (int i = 0; i < LIVE_MAX; i++)
		if (!live[i]) {
			live[i] = p;
			return;
		}
}

static void live_del(pid_t p)
{
	for (int i = 0; i < LIVE_MAX; i++)
		if (live[i] == p)
			live[i] = 0;
}

void proc_kill_all(void)
{
	if (getpid() != main_pid)
		return;
	for (int i = 0; i < LIVE_MAX; i++) {
		pid_t p = live[i];
		if (p > 0) {
			kill(p, SIGKILL);
			waitpid(p, NULL, 0);
			live[i] = 0;
		}
	}
}

static void wait_sigset(sigset_t *s)
{
	sigemptyset(s);
	sigaddset(s, SIGCHLD);
	sigaddset(s, SIGINT);
	sigaddset(s, SIGTERM);
	sigaddset(s, SIGHUP);
}

void proc_parent_init(void)
{
	main_pid = getpid();
	sigset_t s;
	wait_sigset(&s);
	sigprocmask(SIG_BLOCK, &s, NULL);
	signal(SIGPIPE, SIG_IGN); /* a dead reader gives EPIPE, reported as such */
	atexit(proc_kill_all);
}

int proc_interrupted(void) { return interrupted; }

/* Sleeps for a signal at most until deadline (capped to 100 ms, so callers re-check their state).
 * -EINTR for a terminating signal, else 0. */
static int take_signal(uint64_t deadline_ns)
{
	if (interrupted)
		return -EINTR;
	uint64_t now = now_ns(), d = deadline_ns > now ? deadline_ns - now : 0;
	if (d > 100000000ull)
		d = 100000000ull;
	struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
	sigset_t s;
	wait_sigset(&s);
	int sig = sigtimedwait(&s, NULL, &ts);
	if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
		interrupted = sig;
		return -EINTR;
	}
	return 0;
}

int proc_group_init(struct proc_group *g)
{
	memset(g, 0, sizeof(*g));
	g->ready_rd = g->ready_wr = g->go_rd = g->go_wr = -1;
	int r[2], w[2];
	if (pipe2(r, O_CLOEXEC))
		return -errno;
	if (pipe2(w, O_CLOEXEC)) {
		int e = -errno;
		close(r[0]);
		close(r[1]);
		return e;
	}
	g->ready_rd = r[0];
	g->ready_wr = r[1];
	g->go_rd = w[0];
	g->go_wr = w[1];
	return 0;
}

pid_t proc_spawn(struct proc_group *g, int cpu, int (*fn)(void *arg), void *arg)
{
	if (g->n >= PROC_MAX)
		return -E2BIG;
	fflush(NULL); /* or the child would flush our buffered output again */
	pid_t p = fork();
	if (p < 0)
		return -errno;
	if (p == 0) {
		sigset_t s;
		sigemptyset(&s);
		int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGALRM, SIGCHLD, SIGPIPE};
		for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
			signal(sigs[i], SIG_DFL);
		signal(SIGPIPE, SIG_IGN);
		sigprocmask(SIG_SETMASK, &s, NULL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != main_pid)
			_exit(125);
		for (int i = 0; i < LIVE_MAX; i++)
			live[i] = 0; /* not ours to kill */
		close(g->ready_rd);
		close(g->go_wr);
		child_ready_fd = g->ready_wr;
		child_go_fd = g->go_rd;
		if (proc_pin(cpu))
			_exit(126);
		_exit(fn(arg));
	}
	g->c[g->n++] = (struct proc_child){.pid = p};
	live_add(p);
	return p;
}

void proc_ready(void)
{
	if (write(child_ready_fd, "r", 1) != 1)
		_exit(125);
}

int proc_wait_go(void)
{
	char b;
	ssize_t k;
	while ((k = read(child_go_fd, &b, 1)) < 0 && errno == EINTR)
		;
	return k == 0 ? 0 : -EPIPE; /* EOF: the parent closed its end, which is the signal */
}

/* reaps the children that exited; returns how many are still running */
static int reap(struct proc_group *g)
{
	int running = 0;
	for (int i = 0; i < g->n; i++) {
		struct proc_child *c = &g->c[i];
		if (c->done)
			continue;
		pid_t r = wait4(c->pid, &c->status, WNOHANG, &c->ru);
		if (r == c->pid || (r < 0 && errno == ECHILD)) {
			c->done = 1;
			live_del(c->pid);
		} else {
			running++;
		}
	}
	return running;
}

int proc_wait_ready(struct proc_group *g, uint64_t deadline_ns)
{
	if (g->ready_wr >= 0) {
		close(g->ready_wr); /* the children hold it now */
		g->ready_wr = -1;
		fcntl(g->ready_rd, F_SETFL, O_NONBLOCK);
	}
	while (g->nready < g->n) {
		char b[PROC_MAX];
		ssize_t k = read(g->ready_rd, b, (size_t)(g->n - g->nready));
		if (k > 0) {
			g->nready += (int)k;
			continue;
		}
		if (k == 0 || reap(g) < g->n)
			return -ECHILD;
		if (now_ns() >= deadline_ns)
			return -ETIMEDOUT;
		/* a ready byte raises no signal: look again at least every 1 ms */
		uint64_t d = now_ns() + 1000000;
		if (take_signal(d < deadline_ns ? d : deadline_ns))
			return -EINTR;
	}
	return 0;
}

void proc_go(struct proc_group *g)
{
	if (g->go_wr >= 0) {
		close(g->go_wr);
		g->go_wr = -1;
	}
}

int proc_wait(struct proc_group *g, uint64_t deadline_ns)
{
	while (reap(g)) {
		if (now_ns() >= deadline_ns)
			return -ETIMEDOUT;
		if (take_signal(deadline_ns))
			return -EINTR;
	}
	return 0;
}

int proc_sleep_until(uint64_t t_ns)
{
	while (now_ns() < t_ns)
		if (take_signal(t_ns))
			return -EINTR;
	return 0;
}

void proc_group_end(struct proc_group *g)
{
	for (int i = 0; i < g->n; i++) {
		struct proc_child *c = &g->c[i];
		if (c->done)
			continue;
		kill(c->pid, SIGKILL);
		wait4(c->pid, &c->status, 0, &c->ru);
		c->done = 1;
		live_del(c->pid);
	}
	int *fds[] = {&g->ready_rd, &g->ready_wr, &g->go_rd, &g->go_wr};
	for (int i = 0; i < 4; i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

/* SPDX-License-Identifier: MIT */
/*
 * pingpong: shmq against pipe(2), under the same conditions, in one run.
 *
 * Two processes (parent and a forked child), each pinned to its own CPU when there are >= 2, and
 * 64-byte messages throughout:
 *
 *   1. Ping-pong latency. The parent sends, the child echoes on a second queue (pipe), the parent
 *      times every round trip with CLOCK_MONOTONIC and reports one-way = RTT / 2 percentiles.
 *      shmq is measured twice: busy-poll (shmq_recv with timeout 0 in a loop) and blocking
 *      (shmq_recv with timeout -1: spins, then sleeps on a futex). Every message is recv + ack.
 *   2. Single-producer / single-consumer throughput over a fixed time. The parent sends sequence
 *      numbers as fast as it can (blocking send); the child receives, acks and checks that every
 *      sequence number arrives in order. shmq single calls, shmq batch calls (32), pipe with one
 *      64-byte write/read per message, and (for reference) pipe with 32 records per write.
 *
 * Warm-up is excluded from every figure; each measurement runs --repeats times (interleaved) and
 * the median and the min-max spread are printed.
 *
 *   pingpong [--quick] [--repeats N] [--round-trips N] [--duration S] [--json FILE] [--only LIST]
 *
 * Each run also records what the library's counters say (shmq_stats: producer/consumer waits,
 * abandoned tickets), CPU time and context switches of both sides, and how much CPU other processes
 * took meanwhile ("other load", from /proc/stat): runs above NOISY_LOAD are flagged as noisy.
 *
 * SHMQ_BENCH_QUICK=1 in the environment is the same as --quick (used by `make bench-quick`).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

#define MSG_SIZE 64
#define SLOT_SIZE 128	/* 64-byte header + 64-byte payload */
#define LAT_CAPACITY 64 /* latency queues hold one message at a time */
#define TP_CAPACITY 4096
#define BATCH 32
#define FLAG_STOP 1u
#define MAX_REPEATS 101
#define NOISY_LOAD 0.25 /* CPUs used by other processes during a run above which it is flagged */

struct rec {
	uint64_t seq;
	uint64_t flags;
	unsigned char pad[MSG_SIZE - 16];
};
_Static_assert(sizeof(struct rec) == MSG_SIZE, "one record is one 64-byte message");

/* ---------------------------------------------------------------------------------------------
 * Process bookkeeping: names to unlink, the child, fatal errors
 */

static pid_t main_pid;
static volatile pid_t child_pid;
static volatile sig_atomic_t child_reaped;
static volatile int child_status;
static const char *side = "parent";
static char run_label[96];

#define MAX_NAMES 2
static char names[MAX_NAMES][64];
static volatile sig_atomic_t name_live[MAX_NAMES];

static int cpu_parent = -1, cpu_child = -1;
static int ready_fd = -1;

struct usage {
	double user_s, sys_s;
	long vcsw, ivcsw;
};

/* written by the child before it exits, read by the parent after waitpid */
struct shared {
	struct usage child;
	uint64_t t_end_ns;
	uint64_t stop_seq;
};
static struct shared *shared;

static void unlink_names(void)
{
	if (getpid() != main_pid)
		return;
	for (int i = 0; i < MAX_NAMES; i++)
		if (name_live[i]) {
			shmq_unlink(names[i]);
			name_live[i] = 0;
		}
}

static void put_err(const char *s) { (void)!write(2, s, strlen(s)); }

static void kill_child(void)
{
	pid_t p = child_pid;
	child_pid = 0;
	if (p > 0) {
		kill(p, SIGKILL);
		waitpid(p, NULL, 0);
	}
}

static _Noreturn void fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "pingpong [%s%s%s]: ", side, run_label[0] ? ", " : "", run_label);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (getpid() != main_pid)
		_exit(1);
	kill_child();
	unlink_names();
	exit(1);
}

/* every library error is fatal */
static int check(int r, const char *what)
{
	if (r < 0)
		fail("%s failed: %s (%d)", what, shmq_strerror(r), r);
	return r;
}

static void on_signal(int sig)
{
	put_err(sig == SIGALRM ? "pingpong: run timed out (hang?): " : "pingpong: interrupted\n");
	if (sig == SIGALRM) {
		put_err(run_label);
		put_err("\n");
	}
	pid_t p = child_pid;
	child_pid = 0;
	if (p > 0)
		kill(p, SIGKILL);
	unlink_names();
	if (sig != SIGALRM) {
		/* die of the signal, as the caller expects (it is blocked while we run: unblock it) */
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, sig);
		signal(sig, SIG_DFL);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		raise(sig);
	}
	_exit(1);
}

/* async-signal-safe decimal */
static void put_int(int v)
{
	char b[16];
	int i = sizeof(b);
	unsigned u = v < 0 ? -(unsigned)v : (unsigned)v;
	b[--i] = 0;
	do
		b[--i] = (char)('0' + u % 10);
	while ((u /= 10) && i > 1);
	if (v < 0)
		b[--i] = '-';
	put_err(b + i);
}

static void on_sigchld(int sig)
{
	(void)sig;
	int saved = errno, st;
	pid_t p = child_pid;
	if (p > 0 && waitpid(p, &st, WNOHANG) == p) {
		child_status = st;
		child_reaped = 1;
		child_pid = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			put_err("pingpong: child process ");
			if (WIFSIGNALED(st)) {
				put_err("was killed by signal ");
				put_int(WTERMSIG(st));
			} else {
				put_err("exited with status ");
				put_int(WEXITSTATUS(st));
			}
			put_err(" during: ");
			put_err(run_label);
			put_err("\n");
			unlink_names();
			_exit(1);
		}
	}
	errno = saved;
}

static void install_handlers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN); /* a dead reader gives EPIPE, reported by fail() */
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct usage get_usage(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	struct usage u = {ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
			  ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_nvcsw, ru.ru_nivcsw};
	return u;
}

static struct usage usage_since(struct usage a)
{
	struct usage b = get_usage();
	struct usage d = {b.user_s - a.user_s, b.sys_s - a.sys_s, b.vcsw - a.vcsw, b.ivcsw - a.ivcsw};
	return d;
}

/* Busy and total jiffies of the whole machine from /proc/stat: with our own CPU time subtracted,
 * what other processes took from the two CPUs during a run (the machine is shared and noisy). */
struct machine_load {
	unsigned long long busy, total;
	uint64_t t_ns;
};

static struct machine_load load_now(void)
{
	struct machine_load m = {0, 0, now_ns()};
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return m;
	unsigned long long v[10] = {0};
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) >= 8) {
		/* guest time is already in user; idle and iowait are not busy */
		for (int i = 0; i < 8; i++)
			m.total += v[i];
		m.busy = m.total - v[3] - v[4];
	}
	fclose(f);
	return m;
}

/* CPUs' worth of time used by other processes between a and now, given our own CPU seconds */
static double other_load(struct machine_load a, double own_cpu_s)
{
	struct machine_load b = load_now();
	long hz = sysconf(_SC_CLK_TCK);
	double wall = (b.t_ns - a.t_ns) / 1e9;
	if (!a.total || hz <= 0 || wall <= 0)
		return -1;
	double other = (double)(b.busy - a.busy) / hz - own_cpu_s;
	return other > 0 ? other / wall : 0;
}

static double cpu_of(const struct usage *u) { return u->user_s + u->sys_s; }

static void pin(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fail("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
}

static const char *queue_name(int i, const char *what)
{
	static unsigned serial;
	snprintf(names[i], sizeof(names[i]), "/shmq-bench-pingpong-%d-%u-%s", (int)main_pid, serial++, what);
	return names[i];
}

static shmq_t *create_queue(int i, const char *what, uint32_t capacity)
{
	struct shmq_config cfg;
	shmq_config_init(&cfg);
	cfg.capacity = capacity;
	cfg.slot_size = SLOT_SIZE;
	const char *n = queue_name(i, what);
	shmq_t *q;
	name_live[i] = 1; /* before create: an interrupt right after it still unlinks */
	int r = shmq_create(n, &cfg, &q);
	if (r < 0) {
		name_live[i] = 0;
		check(r, "shmq_create");
	}
	if (shmq_max_payload(q) < MSG_SIZE)
		fail("max payload %u < %d", shmq_max_payload(q), MSG_SIZE);
	return q;
}

static void destroy_queue(int i, shmq_t *q)
{
	shmq_close(q);
	check(shmq_unlink(names[i]), "shmq_unlink");
	name_live[i] = 0;
}

static shmq_t *open_queue(int i)
{
	shmq_t *q;
	check(shmq_open(names[i], &q), "shmq_open");
	return q;
}

/* Forks the child, which runs fn and must call child_ready() once it is set up. Returns when it is. */
static void start_child(void (*fn)(void))
{
	int rp[2];
	if (pipe(rp))
		fail("pipe: %s", strerror(errno));
	fflush(NULL);
	child_reaped = 0;
	pid_t p = fork();
	if (p < 0)
		fail("fork: %s", strerror(errno));
	if (p == 0) {
		side = "child";
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGALRM, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != main_pid)
			_exit(1);
		close(rp[0]);
		ready_fd = rp[1];
		pin(cpu_child);
		fn();
		_exit(0);
	}
	child_pid = p;
	close(rp[1]);
	char b;
	ssize_t k;
	while ((k = read(rp[0], &b, 1)) < 0 && errno == EINTR)
		;
	close(rp[0]);
	if (k != 1)
		fail("child did not start");
}

static void child_ready(void)
{
	if (write(ready_fd, "r", 1) != 1)
		_exit(1);
	close(ready_fd);
}

static void wait_child(void)
{
	pid_t p = child_pid;
	if (!child_reaped && p > 0) {
		int st;
		pid_t r;
		while ((r = waitpid(p, &st, 0)) < 0 && errno == EINTR)
			;
		if (r == p) {
			child_status = st;
			child_reaped = 1;
			child_pid = 0;
		}
	}
	if (!child_reaped)
		fail("lost track of the child");
	if (!WIFEXITED(child_status) || WEXITSTATUS(child_status) != 0)
		fail("child failed (status 0x%x)", child_status);
}

/* ---------------------------------------------------------------------------------------------
 * Pipe I/O helpers: short reads and writes are handled, EINTR retried, EOF and errors fatal
 */

static void write_full(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			fail("pipe write: %s", k < 0 ? strerror(errno) : "wrote nothing");
		p += k;
		n -= (size_t)k;
	}
}

static void read_full(int fd, void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n) {
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			fail("pipe read: %s", k < 0 ? strerror(errno) : "unexpected EOF");
		p += k;
		n -= (size_t)k;
	}
}

static void make_pipe(int fd[2], int size)
{
	if (pipe(fd))
		fail("pipe: %s", strerror(errno));
	if (size > 0 && fcntl(fd[1], F_SETPIPE_SZ, size) < 0)
		fail("F_SETPIPE_SZ %d: %s", size, strerror(errno));
}

/* ---------------------------------------------------------------------------------------------
 * Latency
 */

enum lat_kind {
	LAT_SHMQ_BUSY,
	LAT_SHMQ_BLOCK,
	LAT_PIPE,
	LAT_N
};
static const char *lat_names[LAT_N] = {"shmq busy-poll", "shmq blocking", "pipe"};
static const char *lat_keys[LAT_N] = {"shmq_busy_poll", "shmq_blocking", "pipe"};

#define NPCT 5
static const double pct_at[NPCT] = {50, 90, 99, 99.9, 100};
static const char *pct_names[NPCT] = {"p50", "p90", "p99", "p99.9", "max"};
static const char *pct_keys[NPCT] = {"p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"};

struct lat_run {
	double pct[NPCT]; /* one-way µs */
	double mean;
	uint64_t over_100us; /* one-way samples above 100 µs */
	struct usage parent, child;
	double other_load; /* CPUs used by other processes meanwhile */
	int has_stats;
	struct shmq_stats req, rsp;
};

static uint64_t lat_total, lat_warm; /* round trips in all, and how many of them are warm-up */
static int lat_busy;
static int lat_fd_req[2], lat_fd_rsp[2];

static int recv_mode(shmq_t *q, struct shmq_msg *m, int busy)
{
	if (!busy)
		return shmq_recv(q, m, -1);
	int r;
	while ((r = shmq_recv(q, m, 0)) == -EAGAIN)
		;
	return r;
}

static void lat_shmq_child(void)
{
	shmq_t *req = open_queue(0), *rsp = open_queue(1);
	child_ready();
	struct usage u0 = get_usage();
	unsigned char buf[MSG_SIZE];
	for (uint64_t i = 0; i < lat_total; i++) {
		struct shmq_msg m;
		check(recv_mode(req, &m, lat_busy), "shmq_recv (echo side)");
		if (m.len != MSG_SIZE)
			fail("received %u bytes, expected %d", m.len, MSG_SIZE);
		memcpy(buf, m.data, MSG_SIZE);
		check(shmq_ack(req, &m), "shmq_ack (echo side)");
		check(shmq_send(rsp, buf, MSG_SIZE, -1), "shmq_send (echo side)");
	}
	shared->child = usage_since(u0);
	shmq_close(req);
	shmq_close(rsp);
}

static void lat_pipe_child(void)
{
	close(lat_fd_req[1]);
	close(lat_fd_rsp[0]);
	child_ready();
	struct usage u0 = get_usage();
	unsigned char buf[MSG_SIZE];
	for (uint64_t i = 0; i < lat_total; i++) {
		read_full(lat_fd_req[0], buf, MSG_SIZE);
		write_full(lat_fd_rsp[1], buf, MSG_SIZE);
	}
	shared->child = usage_since(u0);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static void summarize_rtts(uint64_t *rtt, uint64_t n, struct lat_run *out)
{
	qsort(rtt, n, sizeof(*rtt), cmp_u64);
	double sum = 0;
	out->over_100us = 0;
	for (uint64_t i = 0; i < n; i++) {
		sum += rtt[i];
		if (rtt[i] > 200000) /* one-way > 100 µs */
			out->over_100us++;
	}
	out->mean = sum / n / 2 / 1e3;
	for (int k = 0; k < NPCT; k++) {
		/* nearest rank */
		uint64_t rank = (uint64_t)(pct_at[k] / 100.0 * n + 0.999999);
		if (rank < 1)
			rank = 1;
		if (rank > n)
			rank = n;
		out->pct[k] = rtt[rank - 1] / 2.0 / 1e3;
	}
}

static void run_latency(enum lat_kind kind, uint64_t *rtt, struct lat_run *out)
{
	memset(out, 0, sizeof(*out));
	memset(shared, 0, sizeof(*shared));
	struct rec r;
	memset(&r, 0xa5, sizeof(r));
	r.flags = 0;
	alarm((unsigned)(60 + lat_total / 1000));
	if (kind == LAT_PIPE) {
		make_pipe(lat_fd_req, 0);
		make_pipe(lat_fd_rsp, 0);
		start_child(lat_pipe_child);
		close(lat_fd_req[0]);
		close(lat_fd_rsp[1]);
		struct rec back;
		struct usage u0 = get_usage();
		struct machine_load m0 = load_now();
		for (uint64_t i = 0; i < lat_total; i++) {
			r.seq = i;
			uint64_t t0 = now_ns();
			write_full(lat_fd_req[1], &r, MSG_SIZE);
			read_full(lat_fd_rsp[0], &back, MSG_SIZE);
			uint64_t t1 = now_ns();
			if (back.seq != i)
				fail("echo of round trip %" PRIu64 " carried %" PRIu64, i, back.seq);
			if (i >= lat_warm)
				rtt[i - lat_warm] = t1 - t0;
		}
		out->parent = usage_since(u0);
		close(lat_fd_req[1]);
		close(lat_fd_rsp[0]);
		wait_child();
		out->other_load = other_load(m0, cpu_of(&out->parent) + cpu_of(&shared->child));
	} else {
		lat_busy = kind == LAT_SHMQ_BUSY;
		shmq_t *req = create_queue(0, "req", LAT_CAPACITY),
		       *rsp = create_queue(1, "rsp", LAT_CAPACITY);
		start_child(lat_shmq_child);
		struct usage u0 = get_usage();
		struct machine_load m0 = load_now();
		for (uint64_t i = 0; i < lat_total; i++) {
			struct shmq_msg m;
			r.seq = i;
			uint64_t t0 = now_ns();
			check(shmq_send(req, &r, MSG_SIZE, -1), "shmq_send");
			check(recv_mode(rsp, &m, lat_busy), "shmq_recv");
			uint64_t seq = ((const struct rec *)m.data)->seq;
			uint32_t len = m.len;
			check(shmq_ack(rsp, &m), "shmq_ack");
			uint64_t t1 = now_ns();
			if (len != MSG_SIZE || seq != i)
				fail("echo of round trip %" PRIu64 " carried seq %" PRIu64 ", %u bytes", i,
				     seq, len);
			if (i >= lat_warm)
				rtt[i - lat_warm] = t1 - t0;
		}
		out->parent = usage_since(u0);
		wait_child();
		out->other_load = other_load(m0, cpu_of(&out->parent) + cpu_of(&shared->child));
		out->has_stats = 1;
		check(shmq_stats(req, &out->req), "shmq_stats");
		check(shmq_stats(rsp, &out->rsp), "shmq_stats");
		destroy_queue(0, req);
		destroy_queue(1, rsp);
	}
	alarm(0);
	out->child = shared->child;
	summarize_rtts(rtt, lat_total - lat_warm, out);
}

/* ---------------------------------------------------------------------------------------------
 * Throughput: the parent produces, the child consumes and checks the sequence
 */

enum tp_kind {
	TP_SHMQ_SINGLE,
	TP_SHMQ_BATCH,
	TP_PIPE,
	TP_PIPE_BATCH,
	TP_N
};
static const char *tp_names[TP_N] = {"shmq send / recv+ack", "shmq batch 32", "pipe 64 B write/read",
				     "pipe 32 x 64 B write*"};
static const char *tp_keys[TP_N] = {"shmq_single", "shmq_batch32", "pipe", "pipe_batch32"};

struct tp_run {
	double msgs_per_s, mb_per_s;
	uint64_t msgs;
	double secs;
	double send_secs; /* t0 until the producer sent the stop record: secs - send_secs is the drain */
	struct usage parent, child;
	double other_load;
	int has_stats;
	struct shmq_stats st;
	int pipe_size;
};

static uint64_t tp_dur_ns, tp_warm_ns;
static enum tp_kind tp_kind_cur;
static int tp_fd[2];

static _Noreturn void seq_error(uint64_t got, uint64_t expected)
{
	fail("sequence error: expected %" PRIu64 ", received %" PRIu64, expected, got);
}

/* checks one record; returns 1 on the stop record */
static inline int consume(const struct rec *r, uint64_t *expected)
{
	if (r->seq != *expected)
		seq_error(r->seq, *expected);
	if (r->flags & FLAG_STOP)
		return 1;
	(*expected)++;
	return 0;
}

static void tp_child(void)
{
	shmq_t *q = NULL;
	if (tp_kind_cur == TP_SHMQ_SINGLE || tp_kind_cur == TP_SHMQ_BATCH)
		q = open_queue(0);
	else
		close(tp_fd[1]);
	child_ready();
	struct usage u0 = get_usage();
	uint64_t expected = 0;
	int stop = 0;
	switch (tp_kind_cur) {
	case TP_SHMQ_SINGLE:
		while (!stop) {
			struct shmq_msg m;
			check(shmq_recv(q, &m, -1), "shmq_recv");
			if (m.len != MSG_SIZE)
				fail("received %u bytes, expected %d", m.len, MSG_SIZE);
			stop = consume(m.data, &expected);
			check(shmq_ack(q, &m), "shmq_ack");
		}
		break;
	case TP_SHMQ_BATCH: {
		struct shmq_msg m[BATCH];
		while (!stop) {
			int n = check(shmq_recv_batch(q, m, BATCH, -1), "shmq_recv_batch");
			for (int i = 0; i < n; i++) {
				if (m[i].len != MSG_SIZE)
					fail("received %u bytes, expected %d", m[i].len, MSG_SIZE);
				if (stop)
					fail("message after the stop record");
				stop = consume(m[i].data, &expected);
			}
			int a = check(shmq_ack_batch(q, m, (unsigned)n), "shmq_ack_batch");
			if (a != n)
				fail("shmq_ack_batch acked %d of %d (leases lost)", a, n);
		}
		break;
	}
	case TP_PIPE: {
		struct rec r;
		while (!stop) {
			read_full(tp_fd[0], &r, MSG_SIZE);
			stop = consume(&r, &expected);
		}
		break;
	}
	case TP_PIPE_BATCH: {
		/* reads of up to 32 records; a read may end mid-record: the tail is kept */
		_Alignas(16) unsigned char buf[2 * BATCH * MSG_SIZE];
		size_t have = 0;
		while (!stop) {
			ssize_t k = read(tp_fd[0], buf + have, BATCH * MSG_SIZE);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				fail("pipe read: %s", k < 0 ? strerror(errno) : "unexpected EOF");
			have += (size_t)k;
			size_t off = 0;
			for (; off + MSG_SIZE <= have && !stop; off += MSG_SIZE) {
				struct rec r;
				memcpy(&r, buf + off, MSG_SIZE);
				stop = consume(&r, &expected);
			}
			if (stop && off != have)
				fail("data after the stop record");
			memmove(buf, buf + off, have - off);
			have -= off;
		}
		break;
	}
	default:
		fail("bad variant");
	}
	shared->t_end_ns = now_ns();
	shared->stop_seq = expected;
	shared->child = usage_since(u0);
	if (q)
		shmq_close(q);
	else
		close(tp_fd[0]);
}

static void run_throughput(enum tp_kind kind, struct tp_run *out)
{
	memset(out, 0, sizeof(*out));
	memset(shared, 0, sizeof(*shared));
	tp_kind_cur = kind;
	shmq_t *q = NULL;
	alarm((unsigned)(60 + 4 * (tp_dur_ns + tp_warm_ns) / 1000000000ULL));
	if (kind == TP_SHMQ_SINGLE || kind == TP_SHMQ_BATCH) {
		q = create_queue(0, "tp", TP_CAPACITY);
	} else {
		/* the same buffering as the shmq ring: 4096 messages of 64 bytes */
		make_pipe(tp_fd, TP_CAPACITY * MSG_SIZE);
		out->pipe_size = fcntl(tp_fd[1], F_GETPIPE_SZ);
	}
	start_child(tp_child);
	if (!q)
		close(tp_fd[0]);

	struct rec rb[BATCH];
	struct shmq_iov iov[BATCH];
	memset(rb, 0x5a, sizeof(rb));
	for (int k = 0; k < BATCH; k++) {
		rb[k].flags = 0;
		iov[k].data = &rb[k];
		iov[k].len = MSG_SIZE;
	}
	struct usage u0 = get_usage();
	struct machine_load m0 = load_now();
	uint64_t seq = 0, t0 = 0, seq0 = 0, end = now_ns() + tp_warm_ns;
	int measuring = 0;
	for (;;) {
		/* the clock is read once per 32 messages (a batch), before sending sequence number seq */
		if (kind == TP_SHMQ_BATCH || kind == TP_PIPE_BATCH || (seq & (BATCH - 1)) == 0) {
			uint64_t t = now_ns();
			if (t >= end) {
				if (measuring)
					break;
				measuring = 1;
				t0 = t;
				seq0 = seq;
				end = t0 + tp_dur_ns;
			}
		}
		switch (kind) {
		case TP_SHMQ_SINGLE:
			rb[0].seq = seq;
			check(shmq_send(q, &rb[0], MSG_SIZE, -1), "shmq_send");
			seq++;
			break;
		case TP_SHMQ_BATCH:
			for (int k = 0; k < BATCH; k++)
				rb[k].seq = seq + (uint64_t)k;
			seq += (uint64_t)check(shmq_send_batch(q, iov, BATCH, -1), "shmq_send_batch");
			break;
		case TP_PIPE:
			rb[0].seq = seq;
			write_full(tp_fd[1], &rb[0], MSG_SIZE);
			seq++;
			break;
		case TP_PIPE_BATCH:
			for (int k = 0; k < BATCH; k++)
				rb[k].seq = seq + (uint64_t)k;
			write_full(tp_fd[1], rb, sizeof(rb)); /* 2 KiB <= PIPE_BUF: one atomic write */
			seq += BATCH;
			break;
		default:
			fail("bad variant");
		}
	}
	struct rec stop = rb[0];
	stop.seq = seq;
	stop.flags = FLAG_STOP;
	if (q)
		check(shmq_send(q, &stop, MSG_SIZE, -1), "shmq_send (stop record)");
	else
		write_full(tp_fd[1], &stop, MSG_SIZE);
	out->send_secs = (now_ns() - t0) / 1e9;
	out->parent = usage_since(u0);
	wait_child();
	out->other_load = other_load(m0, cpu_of(&out->parent) + cpu_of(&shared->child));
	alarm(0);
	if (shared->stop_seq != seq)
		fail("consumer saw %" PRIu64 " messages, producer sent %" PRIu64, shared->stop_seq, seq);
	if (q) {
		out->has_stats = 1;
		check(shmq_stats(q, &out->st), "shmq_stats");
		destroy_queue(0, q);
	} else {
		close(tp_fd[1]);
	}
	out->child = shared->child;
	/* messages sent from t0 on, all of which had been received and checked at t_end */
	out->msgs = seq - seq0;
	out->secs = (shared->t_end_ns - t0) / 1e9;
	out->msgs_per_s = out->msgs / out->secs;
	out->mb_per_s = out->msgs_per_s * MSG_SIZE / 1e6;
}

/* ---------------------------------------------------------------------------------------------
 * Summaries, machine info, output
 */

struct spread {
	double med, min, max;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static struct spread spread_of(const double *v, int n)
{
	double s[MAX_REPEATS];
	memcpy(s, v, (size_t)n * sizeof(*v));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	struct spread r = {n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1]};
	return r;
}

static char cpu_model[256] = "unknown";
static struct utsname uts;
static long nproc_onln;
static int nproc_allowed;

static void machine_info(void)
{
	uname(&uts);
	nproc_onln = sysconf(_SC_NPROCESSORS_ONLN);
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f) {
		char line[512];
		while (fgets(line, sizeof(line), f)) {
			if (!strncmp(line, "model name", 10)) {
				char *p = strchr(line, ':');
				if (p) {
					p++;
					while (*p == ' ' || *p == '\t')
						p++;
					p[strcspn(p, "\n")] = 0;
					snprintf(cpu_model, sizeof(cpu_model), "%s", p);
				}
				break;
			}
		}
		fclose(f);
	}
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set))
		fail("sched_getaffinity: %s", strerror(errno));
	nproc_allowed = CPU_COUNT(&set);
	for (int c = 0; c < CPU_SETSIZE && nproc_allowed >= 2; c++) {
		if (!CPU_ISSET(c, &set))
			continue;
		if (cpu_parent < 0)
			cpu_parent = c;
		else if (cpu_child < 0)
			cpu_child = c;
	}
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.6g", v);
	else
		fprintf(f, "null");
}

static void json_spread(FILE *f, const char *key, struct spread s)
{
	fprintf(f, "\"%s\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g}", key, s.med, s.min, s.max);
}

static void json_usage(FILE *f, const char *key, const struct usage *u)
{
	fprintf(f,
		"\"%s\": {\"user_s\": %.4f, \"sys_s\": %.4f, \"voluntary_ctxsw\": %ld, "
		"\"involuntary_ctxsw\": %ld}",
		key, u->user_s, u->sys_s, u->vcsw, u->ivcsw);
}

static void json_stats(FILE *f, const char *key, const struct shmq_stats *s)
{
	fprintf(f,
		"\"%s\": {\"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"acked\": %" PRIu64
		", \"redelivered\": %" PRIu64 ", \"stale\": %" PRIu64 ", \"retired_writes\": %" PRIu64
		", \"producer_waits\": %" PRIu64 ", \"consumer_waits\": %" PRIu64
		", \"tickets_issued\": %" PRIu64 ", \"tickets_abandoned\": %" PRIu64 ", \"ready\": %" PRIu64
		", \"inflight\": %" PRIu64 "}",
		key, s->sent, s->received, s->acked, s->redelivered, s->stale, s->retired_writes,
		s->producer_waits, s->consumer_waits, s->next_id, s->next_id - s->sent, s->ready,
		s->inflight);
}

static const char *stats_line(const struct shmq_stats *s)
{
	static char buf[256];
	snprintf(buf, sizeof(buf),
		 "sent %" PRIu64 " recv %" PRIu64 " acked %" PRIu64 " producer_waits %" PRIu64
		 " consumer_waits %" PRIu64 " tickets_abandoned %" PRIu64 " stale %" PRIu64
		 " redelivered %" PRIu64 " retired_writes %" PRIu64,
		 s->sent, s->received, s->acked, s->producer_waits, s->consumer_waits, s->next_id - s->sent,
		 s->stale, s->redelivered, s->retired_writes);
	return buf;
}

static void usage_exit(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: pingpong [--quick] [--repeats N] [--round-trips N] [--duration S] [--json FILE] "
		"[--only LIST]\n"
		"  --quick          20000 round trips and 0.5 s per throughput run (also "
		"SHMQ_BENCH_QUICK=1)\n"
		"  --repeats N      runs of each measurement (default 3); median and min-max are printed\n"
		"  --round-trips N  measured ping-pong round trips (default 200000)\n"
		"  --duration S     seconds per throughput run, warm-up excluded (default 2)\n"
		"  --json FILE      also write every figure to FILE\n"
		"  --only LIST      run only these variants (comma-separated): latency, throughput,\n"
		"                   shmq_busy_poll, shmq_blocking, pipe, shmq_single, shmq_batch32, "
		"pipe_batch32\n"
		"                   (\"pipe\" selects both pipe latency and pipe throughput)\n");
	exit(code);
}

static int lat_sel[LAT_N], tp_sel[TP_N];

/* --only: comma-separated variant keys, or "latency" / "throughput" */
static void select_variants(const char *only)
{
	for (int k = 0; k < LAT_N; k++)
		lat_sel[k] = !only;
	for (int k = 0; k < TP_N; k++)
		tp_sel[k] = !only;
	if (!only)
		return;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", only);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int hit = 0;
		for (int k = 0; k < LAT_N; k++)
			if (!strcmp(t, "latency") || !strcmp(t, lat_keys[k]))
				lat_sel[k] = hit = 1;
		for (int k = 0; k < TP_N; k++)
			if (!strcmp(t, "throughput") || !strcmp(t, tp_keys[k]))
				tp_sel[k] = hit = 1;
		if (!hit) {
			fprintf(stderr, "pingpong: --only: unknown variant '%s' (latency, throughput", t);
			for (int k = 0; k < LAT_N; k++)
				fprintf(stderr, ", %s", lat_keys[k]);
			for (int k = 0; k < TP_N; k++)
				if (strcmp(tp_keys[k], "pipe"))
					fprintf(stderr, ", %s", tp_keys[k]);
			fprintf(stderr, ")\n");
			exit(2);
		}
	}
}

static void fmt_spread(char *buf, size_t n, struct spread s, int prec)
{
	snprintf(buf, n, "%.*f [%.*f-%.*f]", prec, s.med, prec, s.min, prec, s.max);
}

int main(int argc, char **argv)
{
	long round_trips = 200000;
	double duration = 2.0;
	int repeats = 3, quick = 0, rt_set = 0, dur_set = 0;
	const char *json = NULL, *only = NULL;
	const char *env = getenv("SHMQ_BENCH_QUICK");
	if (env && *env && strcmp(env, "0"))
		quick = 1;
	static const struct option opts[] = {{"quick", no_argument, 0, 'q'},
					     {"repeats", required_argument, 0, 'r'},
					     {"round-trips", required_argument, 0, 'n'},
					     {"duration", required_argument, 0, 'd'},
					     {"json", required_argument, 0, 'j'},
					     {"only", required_argument, 0, 'o'},
					     {"help", no_argument, 0, 'h'},
					     {0, 0, 0, 0}};
	for (int c; (c = getopt_long(argc, argv, "qr:n:d:j:o:h", opts, NULL)) != -1;) {
		char *end = NULL;
		switch (c) {
		case 'q':
			quick = 1;
			break;
		case 'r':
			repeats = (int)strtol(optarg, &end, 10);
			if (*end || repeats < 1 || repeats > MAX_REPEATS) {
				fprintf(stderr, "pingpong: --repeats must be 1..%d\n", MAX_REPEATS);
				return 2;
			}
			break;
		case 'n':
			round_trips = strtol(optarg, &end, 10);
			if (*end || round_trips < 100 || round_trips > 100000000) {
				fprintf(stderr, "pingpong: --round-trips must be 100..100000000\n");
				return 2;
			}
			rt_set = 1;
			break;
		case 'd':
			duration = strtod(optarg, &end);
			if (*end || !(duration >= 0.01 && duration <= 3600)) {
				fprintf(stderr, "pingpong: --duration must be 0.01..3600 seconds\n");
				return 2;
			}
			dur_set = 1;
			break;
		case 'j':
			json = optarg;
			break;
		case 'o':
			only = optarg;
			break;
		case 'h':
			usage_exit(0);
			break;
		default:
			usage_exit(2);
		}
	}
	if (optind < argc)
		usage_exit(2);
	select_variants(only);
	if (quick && !rt_set)
		round_trips = 20000;
	if (quick && !dur_set)
		duration = 0.5;

	main_pid = getpid();
	install_handlers();
	atexit(unlink_names);
	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	FILE *jf = NULL;
	if (json && !(jf = fopen(json, "w")))
		fail("cannot write %s: %s", json, strerror(errno));

	machine_info();
	pin(cpu_parent);

	lat_warm = (uint64_t)(round_trips / 10 > 1000 ? round_trips / 10 : 1000);
	lat_total = lat_warm + (uint64_t)round_trips;
	tp_dur_ns = (uint64_t)(duration * 1e9);
	tp_warm_ns = tp_dur_ns / 5 < 250000000ULL ? tp_dur_ns / 5 : 250000000ULL;

	printf("shmq pingpong benchmark (shmq %d.%d, %s)\n", SHMQ_VERSION_MAJOR, SHMQ_VERSION_MINOR,
	       quick ? "quick" : "full");
	printf("machine: %ld CPUs online, %d usable; kernel %s %s %s; CPU %s\n", nproc_onln, nproc_allowed,
	       uts.sysname, uts.release, uts.machine, cpu_model);
	if (cpu_parent >= 0)
		printf("pinning: parent (sender / RTT timer / producer) on CPU %d, child (echo / consumer) "
		       "on CPU %d\n",
		       cpu_parent, cpu_child);
	else
		printf("pinning: none (fewer than 2 usable CPUs): figures are scheduler-bound\n");
	printf("messages: %d bytes; latency queues %u slots x %u B; throughput queue %u slots x %u B, pipe "
	       "buffer sized to %d B\n",
	       MSG_SIZE, LAT_CAPACITY, SLOT_SIZE, TP_CAPACITY, SLOT_SIZE, TP_CAPACITY * MSG_SIZE);
	printf("latency: %ld round trips per run after %" PRIu64 " warm-up; throughput: %.2f s per run after "
	       "%.2f s warm-up; %d repeats, interleaved\n\n",
	       round_trips, lat_warm, duration, tp_warm_ns / 1e9, repeats);
	fflush(stdout);

	static struct lat_run lat[LAT_N][MAX_REPEATS];
	static struct tp_run tp[TP_N][MAX_REPEATS];
	uint64_t *rtt = malloc((size_t)round_trips * sizeof(*rtt));
	if (!rtt)
		fail("out of memory");

	for (int r = 0; r < repeats; r++) {
		for (int k = 0; k < LAT_N; k++) {
			if (!lat_sel[k])
				continue;
			snprintf(run_label, sizeof(run_label), "latency %s, run %d", lat_names[k], r + 1);
			fprintf(stderr, "  running %s ...\n", run_label);
			run_latency((enum lat_kind)k, rtt, &lat[k][r]);
		}
		for (int k = 0; k < TP_N; k++) {
			if (!tp_sel[k])
				continue;
			snprintf(run_label, sizeof(run_label), "throughput %s, run %d", tp_names[k], r + 1);
			fprintf(stderr, "  running %s ...\n", run_label);
			run_throughput((enum tp_kind)k, &tp[k][r]);
		}
	}
	run_label[0] = 0;
	free(rtt);

	/* ---- tables ---- */
	struct spread lat_s[LAT_N][NPCT], lat_mean[LAT_N], tp_msgs[TP_N], tp_mb[TP_N];
	for (int k = 0; k < LAT_N; k++) {
		double v[MAX_REPEATS];
		for (int p = 0; p < NPCT; p++) {
			for (int r = 0; r < repeats; r++)
				v[r] = lat[k][r].pct[p];
			lat_s[k][p] = spread_of(v, repeats);
		}
		for (int r = 0; r < repeats; r++)
			v[r] = lat[k][r].mean;
		lat_mean[k] = spread_of(v, repeats);
	}
	for (int k = 0; k < TP_N; k++) {
		double v[MAX_REPEATS], w[MAX_REPEATS];
		for (int r = 0; r < repeats; r++) {
			v[r] = tp[k][r].msgs_per_s / 1e6;
			w[r] = tp[k][r].mb_per_s;
		}
		tp_msgs[k] = spread_of(v, repeats);
		tp_mb[k] = spread_of(w, repeats);
	}

	char cell[64];
	int any_lat = 0, any_tp = 0;
	for (int k = 0; k < LAT_N; k++)
		any_lat |= lat_sel[k];
	for (int k = 0; k < TP_N; k++)
		any_tp |= tp_sel[k];
	if (any_lat) {
		printf("Latency, one-way = RTT/2, microseconds: median of %d runs [min-max]\n", repeats);
		printf("%-16s", "");
		for (int p = 0; p < NPCT; p++)
			printf(" %-22s", pct_names[p]);
		printf(" noisy\n");
		for (int k = 0; k < LAT_N; k++) {
			if (!lat_sel[k])
				continue;
			printf("%-16s", lat_names[k]);
			for (int p = 0; p < NPCT; p++) {
				fmt_spread(cell, sizeof(cell), lat_s[k][p], p == NPCT - 1 ? 1 : 2);
				printf(" %-22s", cell);
			}
			int noisy = 0;
			for (int r = 0; r < repeats; r++)
				noisy += lat[k][r].other_load > NOISY_LOAD;
			printf(" %d/%d\n", noisy, repeats);
		}
		printf("\n");
	}
	if (any_tp) {
		printf("Throughput, 1 producer -> 1 consumer, 64-byte messages: median of %d runs "
		       "[min-max]\n",
		       repeats);
		printf("%-22s %-26s %-26s %s\n", "", "M msgs/s", "MB/s (payload)", "noisy");
		for (int k = 0; k < TP_N; k++) {
			if (!tp_sel[k])
				continue;
			char c2[64];
			fmt_spread(cell, sizeof(cell), tp_msgs[k], 3);
			fmt_spread(c2, sizeof(c2), tp_mb[k], 1);
			int noisy = 0;
			for (int r = 0; r < repeats; r++)
				noisy += tp[k][r].other_load > NOISY_LOAD;
			printf("%-22s %-26s %-26s %d/%d\n", tp_names[k], cell, c2, noisy, repeats);
		}
		if (tp_sel[TP_PIPE_BATCH])
			printf("  * reference only: 2 KiB writes, 32 records each; reads of up to 2 KiB, "
			       "split into records\n");
		/* at most 4096 messages can be queued when the producer stops: draining them takes
		 * milliseconds, so a long tail means the consumer stalled */
		for (int k = 0; k < TP_N; k++)
			for (int r = 0; r < repeats; r++)
				if (tp_sel[k] && tp[k][r].secs - tp[k][r].send_secs > 0.05)
					printf("  ANOMALY: %s run %d: the consumer took %.3f s after the "
					       "producer "
					       "stopped to receive the last message (at most %d were "
					       "queued)\n",
					       tp_names[k], r + 1, tp[k][r].secs - tp[k][r].send_secs,
					       TP_CAPACITY);
		printf("\n");
	}
	printf("noisy: runs during which other processes used more than %.2f CPUs (from /proc/stat, our own\n"
	       "CPU time subtracted); those figures are disturbed. See \"other load\" in the "
	       "diagnostics.\n\n",
	       NOISY_LOAD);

	/* ratios of medians; NAN when a side was not run */
	double r_lat_busy = lat_sel[LAT_SHMQ_BUSY] && lat_sel[LAT_PIPE]
				    ? lat_s[LAT_SHMQ_BUSY][0].med / lat_s[LAT_PIPE][0].med
				    : NAN;
	double r_lat_block = lat_sel[LAT_SHMQ_BLOCK] && lat_sel[LAT_PIPE]
				     ? lat_s[LAT_SHMQ_BLOCK][0].med / lat_s[LAT_PIPE][0].med
				     : NAN;
	double r_tp_single = tp_sel[TP_SHMQ_SINGLE] && tp_sel[TP_PIPE]
				     ? tp_msgs[TP_SHMQ_SINGLE].med / tp_msgs[TP_PIPE].med
				     : NAN;
	double r_tp_batch = tp_sel[TP_SHMQ_BATCH] && tp_sel[TP_PIPE]
				    ? tp_msgs[TP_SHMQ_BATCH].med / tp_msgs[TP_PIPE].med
				    : NAN;
	double r_tp_batch_pb = tp_sel[TP_SHMQ_BATCH] && tp_sel[TP_PIPE_BATCH]
				       ? tp_msgs[TP_SHMQ_BATCH].med / tp_msgs[TP_PIPE_BATCH].med
				       : NAN;
	printf("Ratios shmq / pipe (medians)\n");
	printf("  latency p50   busy-poll %.3f, blocking %.3f   (below 1: shmq faster)\n", r_lat_busy,
	       r_lat_block);
	printf("  throughput    single %.2f, batch %.2f (batch vs pipe 32-record writes: %.2f)   (above 1: "
	       "shmq "
	       "faster)\n",
	       r_tp_single, r_tp_batch, r_tp_batch_pb);

	printf("\nDiagnostics per run\n");
	for (int k = 0; k < LAT_N; k++)
		for (int r = 0; r < repeats; r++) {
			const struct lat_run *l = &lat[k][r];
			if (!lat_sel[k])
				continue;
			printf("  lat %-15s #%d: p50 %.2f mean %.2f us, %" PRIu64
			       " samples > 100 us; cpu parent %.2fs child %.2fs; ctxsw vol/invol parent "
			       "%ld/%ld child "
			       "%ld/%ld; other load %.2f CPUs\n",
			       lat_names[k], r + 1, l->pct[0], l->mean, l->over_100us, cpu_of(&l->parent),
			       cpu_of(&l->child), l->parent.vcsw, l->parent.ivcsw, l->child.vcsw,
			       l->child.ivcsw, l->other_load);
			if (l->has_stats) {
				printf("      request queue: %s\n", stats_line(&l->req));
				printf("      reply queue:   %s\n", stats_line(&l->rsp));
			}
		}
	for (int k = 0; k < TP_N; k++)
		for (int r = 0; r < repeats; r++) {
			const struct tp_run *t = &tp[k][r];
			if (!tp_sel[k])
				continue;
			printf("  tp  %-22s #%d: %.3f M/s (%" PRIu64
			       " msgs in %.3f s, producer done at %.3f s); cpu prod %.2fs (sys %.2f) cons "
			       "%.2fs (sys %.2f); ctxsw vol/invol prod %ld/%ld cons %ld/%ld; other load %.2f "
			       "CPUs\n",
			       tp_names[k], r + 1, t->msgs_per_s / 1e6, t->msgs, t->secs, t->send_secs,
			       cpu_of(&t->parent), t->parent.sys_s, cpu_of(&t->child), t->child.sys_s,
			       t->parent.vcsw, t->parent.ivcsw, t->child.vcsw, t->child.ivcsw, t->other_load);
			if (t->has_stats)
				printf("      queue: %s\n", stats_line(&t->st));
		}

	if (jf) {
		fprintf(jf, "{\n  \"benchmark\": \"shmq pingpong\",\n  \"mode\": \"%s\",\n",
			quick ? "quick" : "full");
		fprintf(jf, "  \"machine\": {\"nproc_online\": %ld, \"nproc_usable\": %d, \"kernel\": ",
			nproc_onln, nproc_allowed);
		char kern[600];
		snprintf(kern, sizeof(kern), "%s %s %s", uts.sysname, uts.release, uts.version);
		json_str(jf, kern);
		fprintf(jf, ", \"arch\": ");
		json_str(jf, uts.machine);
		fprintf(jf, ", \"cpu_model\": ");
		json_str(jf, cpu_model);
		fprintf(jf, ", \"cpu_parent\": %d, \"cpu_child\": %d},\n", cpu_parent, cpu_child);
		fprintf(jf,
			"  \"config\": {\"message_bytes\": %d, \"slot_size\": %d, \"latency_capacity\": %d, "
			"\"throughput_capacity\": %d, \"batch\": %d, \"round_trips\": %ld, "
			"\"warmup_round_trips\": "
			"%" PRIu64 ", \"duration_s\": %.3f, \"warmup_s\": %.3f, \"repeats\": %d},\n",
			MSG_SIZE, SLOT_SIZE, LAT_CAPACITY, TP_CAPACITY, BATCH, round_trips, lat_warm,
			duration, tp_warm_ns / 1e9, repeats);
		fprintf(jf, "  \"latency_one_way_us\": {");
		const char *sep = "\n";
		for (int k = 0; k < LAT_N; k++) {
			if (!lat_sel[k])
				continue;
			fprintf(jf, "%s    \"%s\": {\n      \"summary\": {", sep, lat_keys[k]);
			sep = ",\n";
			for (int p = 0; p < NPCT; p++) {
				json_spread(jf, pct_keys[p], lat_s[k][p]);
				fprintf(jf, ", ");
			}
			json_spread(jf, "mean_us", lat_mean[k]);
			fprintf(jf, "},\n      \"runs\": [\n");
			for (int r = 0; r < repeats; r++) {
				const struct lat_run *l = &lat[k][r];
				fprintf(jf, "        {");
				for (int p = 0; p < NPCT; p++)
					fprintf(jf, "\"%s\": %.4f, ", pct_keys[p], l->pct[p]);
				fprintf(jf,
					"\"mean_us\": %.4f, \"samples_over_100us\": %" PRIu64
					", \"other_load_cpus\": %.3f, ",
					l->mean, l->over_100us, l->other_load);
				json_usage(jf, "parent", &l->parent);
				fprintf(jf, ", ");
				json_usage(jf, "child", &l->child);
				if (l->has_stats) {
					fprintf(jf, ", ");
					json_stats(jf, "request_queue", &l->req);
					fprintf(jf, ", ");
					json_stats(jf, "reply_queue", &l->rsp);
				}
				fprintf(jf, "}%s\n", r + 1 < repeats ? "," : "");
			}
			fprintf(jf, "      ]\n    }");
		}
		fprintf(jf, "\n  },\n  \"throughput\": {");
		sep = "\n";
		for (int k = 0; k < TP_N; k++) {
			if (!tp_sel[k])
				continue;
			fprintf(jf, "%s    \"%s\": {\n      \"summary\": {", sep, tp_keys[k]);
			sep = ",\n";
			json_spread(jf, "msgs_per_s",
				    (struct spread){tp_msgs[k].med * 1e6, tp_msgs[k].min * 1e6,
						    tp_msgs[k].max * 1e6});
			fprintf(jf, ", ");
			json_spread(jf, "mb_per_s", tp_mb[k]);
			fprintf(jf, "},\n      \"runs\": [\n");
			for (int r = 0; r < repeats; r++) {
				const struct tp_run *t = &tp[k][r];
				fprintf(jf,
					"        {\"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"msgs\": "
					"%" PRIu64 ", \"seconds\": %.6f, \"producer_seconds\": %.6f, "
					"\"other_load_cpus\": %.3f, ",
					t->msgs_per_s, t->mb_per_s, t->msgs, t->secs, t->send_secs,
					t->other_load);
				if (t->pipe_size)
					fprintf(jf, "\"pipe_size\": %d, ", t->pipe_size);
				json_usage(jf, "producer", &t->parent);
				fprintf(jf, ", ");
				json_usage(jf, "consumer", &t->child);
				if (t->has_stats) {
					fprintf(jf, ", ");
					json_stats(jf, "queue", &t->st);
				}
				fprintf(jf, "}%s\n", r + 1 < repeats ? "," : "");
			}
			fprintf(jf, "      ]\n    }");
		}
		fprintf(jf, "\n  },\n  \"ratios_shmq_over_pipe\": {\"latency_p50_busy_poll\": ");
		json_num(jf, r_lat_busy);
		fprintf(jf, ", \"latency_p50_blocking\": ");
		json_num(jf, r_lat_block);
		fprintf(jf, ", \"throughput_single\": ");
		json_num(jf, r_tp_single);
		fprintf(jf, ", \"throughput_batch\": ");
		json_num(jf, r_tp_batch);
		fprintf(jf, ", \"throughput_batch_vs_pipe_batch\": ");
		json_num(jf, r_tp_batch_pb);
		fprintf(jf, "}\n}\n");
		if (fclose(jf))
			fail("writing %s: %s", json, strerror(errno));
		printf("\nJSON written to %s\n", json);
	}
	return 0;
}

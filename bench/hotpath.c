/* SPDX-License-Identifier: MIT */
/*
 * hotpath: the library's per-message path alone, for A/B runs of two builds. The harness measures
 * shmq among its peers through an adapter and a generic driver; this drives the public API
 * directly, with nothing else in the loop, so a change to src/ring.c shows in a few seconds:
 *
 *   hotpath pingpong [--messages N] [--repeats R] [--blocking]   one-way p50/p99 = RTT / 2
 *   hotpath stream   [--messages N] [--repeats R]                1P1C send / recv + ack, M msg/s
 *   hotpath batch    [--messages N] [--repeats R]                1P1C batches of 32, M msg/s
 *
 * 64-byte messages, 128-byte slots, 1024 slots; sender on CPU 0, receiver on CPU 1 (when there
 * are two); the receiver checks every sequence number. Each run prints one line, then the median
 * of the runs (percentiles are nearest rank, as in the harness). --blocking receives with a 1 s
 * timeout (the same spin, then futex, as -1), so a process that died is noticed; the other process
 * dies with its parent, and every exit but a SIGKILL of the parent removes the queues.
 *
 * On a noisy machine, alternate two builds run by run (`for i in 1..9: A; B`) and compare
 * medians: figures of one build taken minutes apart vary more than most changes do.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/proc.h"
#include "lib/stats.h"
#include "shmq.h"
#include "standalone.h"

#define MSG 64
#define BATCH 32
#define WARMUP 10000
#define PEER_CHECK 4096 /* polls between looks at whether the other process is still there */
#define BLOCK_MS 1000	/* a blocking receive's timeout, so a dead peer is noticed */

static const char *prog = "hotpath";

/* What a run leaves behind, for cleanup() on every exit of the parent: the other process and
 * the queues' names. */
static pid_t parent_pid, child_pid;
static char names[2][64];

static void cleanup(void)
{
	if (getpid() != parent_pid)
		return;
	if (child_pid > 0) {
		kill(child_pid, SIGKILL);
		waitpid(child_pid, NULL, 0);
		child_pid = 0;
	}
	for (int i = 0; i < 2; i++)
		if (names[i][0]) {
			shmq_unlink(names[i]);
			names[i][0] = 0;
		}
}

/* In the parent: exits (via cleanup) if the other process has ended. */
static void check_peer(void)
{
	int st;
	if (child_pid > 0 && waitpid(child_pid, &st, WNOHANG) == child_pid) {
		child_pid = 0;
		fprintf(stderr, "%s: the other process ended before the run did\n", prog);
		exit(1);
	}
}

static int two_cpus(void) { return sysconf(_SC_NPROCESSORS_ONLN) >= 2; }

static shmq_t *make_queue(const char *name)
{
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 1024;
	c.slot_size = 128;
	shmq_unlink(name);
	shmq_t *q;
	int r = shmq_create(name, &c, &q);
	if (r)
		bench_die(prog, "create", r);
	return q;
}

static shmq_t *open_queue(const char *name)
{
	shmq_t *q;
	int r = shmq_open(name, &q);
	if (r)
		bench_die(prog, "open", r);
	return q;
}

/* blocking: BLOCK_MS at a time (the same spin, then futex, as -1) */
static void recv_wait(shmq_t *q, struct shmq_msg *m, int blocking)
{
	int r;
	for (unsigned k = 1; (r = shmq_recv(q, m, blocking ? BLOCK_MS : 0)) == -EAGAIN; k++)
		if (blocking || k % PEER_CHECK == 0)
			check_peer();
	if (r)
		bench_die(prog, "recv", r);
}

static void send_wait(shmq_t *q, const void *buf)
{
	int r;
	for (unsigned k = 1; (r = shmq_send(q, buf, MSG, 0)) == -EAGAIN; k++)
		if (k % PEER_CHECK == 0)
			check_peer();
	if (r)
		bench_die(prog, "send", r);
}

static void ack(shmq_t *q, struct shmq_msg *m)
{
	int r = shmq_ack(q, m);
	if (r)
		bench_die(prog, "ack", r);
}

/* Forks the other process of a run: 0 in it (pinned to CPU 0, and killed with us), its pid in
 * the parent. */
static pid_t spawn(void)
{
	fflush(stdout);
	pid_t p = fork();
	if (p < 0) {
		perror("fork");
		exit(1);
	}
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent_pid) /* the parent died before the line above */
			_exit(1);
		if (two_cpus())
			(void)proc_pin(0); /* best effort: a mask without the CPU runs unpinned */
		return 0;
	}
	child_pid = p;
	if (two_cpus())
		(void)proc_pin(1);
	return p;
}

static void reap(void)
{
	int st;
	pid_t p = child_pid;
	child_pid = 0;
	if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "%s: the other process failed\n", prog);
		exit(1);
	}
}

/* nearest rank, as the harness's percentiles (bench/lib/stats.c) */
static double pct(const double *sorted, unsigned n, double p)
{
	unsigned r = (unsigned)ceil(p / 100.0 * n);
	return sorted[r ? r - 1 : 0];
}

/* One-way latency in ns: p50 into *p50, p99 into *p99. */
static void pingpong(unsigned n, int blocking, double *p50, double *p99)
{
	snprintf(names[0], sizeof(names[0]), "/shmq-hotpath-ping-%d", (int)parent_pid);
	snprintf(names[1], sizeof(names[1]), "/shmq-hotpath-pong-%d", (int)parent_pid);
	shmq_close(make_queue(names[0]));
	shmq_close(make_queue(names[1]));
	unsigned char buf[MSG] = {0};
	double *lat = malloc(sizeof(*lat) * n);
	if (!lat)
		bench_die(prog, "malloc", -ENOMEM);
	if (spawn() == 0) { /* the echo side */
		shmq_t *in = open_queue(names[0]), *out = open_queue(names[1]);
		struct shmq_msg m;
		for (unsigned i = 0; i < n + WARMUP; i++) {
			recv_wait(in, &m, blocking);
			memcpy(buf, m.data, MSG);
			ack(in, &m);
			send_wait(out, buf);
		}
		_exit(0);
	}
	shmq_t *out = open_queue(names[0]), *in = open_queue(names[1]);
	struct shmq_msg m;
	for (unsigned i = 0; i < n + WARMUP; i++) {
		memcpy(buf, &i, sizeof(i));
		double t0 = bench_now_s();
		send_wait(out, buf);
		recv_wait(in, &m, blocking);
		unsigned back;
		memcpy(&back, m.data, sizeof(back));
		if (back != i) {
			fprintf(stderr, "%s: round trip %u came back as %u\n", prog, i, back);
			exit(1);
		}
		ack(in, &m);
		if (i >= WARMUP)
			lat[i - WARMUP] = (bench_now_s() - t0) * 1e9 / 2;
	}
	reap();
	qsort(lat, n, sizeof(*lat), bench_cmp_double);
	*p50 = pct(lat, n, 50);
	*p99 = pct(lat, n, 99);
	free(lat);
	shmq_close(out);
	shmq_close(in);
	cleanup();
}

/* 1P1C throughput in M msg/s, single calls or batches of BATCH. */
static double stream(unsigned n, int batch)
{
	snprintf(names[0], sizeof(names[0]), "/shmq-hotpath-%d", (int)parent_pid);
	shmq_close(make_queue(names[0]));
	if (spawn() == 0) {
		shmq_t *q = open_queue(names[0]);
		static unsigned char bufs[BATCH][MSG];
		struct shmq_iov iov[BATCH];
		for (uint64_t i = 0; i < n;) {
			if (!batch) {
				memcpy(bufs[0], &i, sizeof(i));
				send_wait(q, bufs[0]);
				i++;
				continue;
			}
			unsigned k = n - i < BATCH ? (unsigned)(n - i) : BATCH;
			for (unsigned j = 0; j < k; j++) {
				uint64_t v = i + j;
				memcpy(bufs[j], &v, sizeof(v));
				iov[j] = (struct shmq_iov){bufs[j], MSG};
			}
			int r = shmq_send_batch(q, iov, k, 0);
			if (r < 0 && r != -EAGAIN)
				bench_die(prog, "send_batch", r);
			if (r > 0)
				i += (unsigned)r;
		}
		_exit(0);
	}
	shmq_t *q = open_queue(names[0]);
	struct shmq_msg ms[BATCH];
	double t0 = 0;
	uint64_t first = 0; /* messages the first receive took, before the clock started */
	for (uint64_t i = 0, polls = 0; i < n;) {
		int got = 1;
		if (batch) {
			got = shmq_recv_batch(q, ms, BATCH, 0);
			if (got == -EAGAIN) {
				if (++polls % PEER_CHECK == 0)
					check_peer();
				continue;
			}
			if (got < 0)
				bench_die(prog, "recv_batch", got);
		} else {
			recv_wait(q, &ms[0], 0);
		}
		if (i == 0) {
			t0 = bench_now_s(); /* from the first receive: the sender's start-up is not counted */
			first = (uint64_t)got;
		}
		for (int j = 0; j < got; j++) {
			uint64_t v;
			memcpy(&v, ms[j].data, sizeof(v));
			if (v != i + (uint64_t)j) {
				fprintf(stderr, "%s: message %llu arrived as %llu\n", prog,
					(unsigned long long)(i + (uint64_t)j), (unsigned long long)v);
				exit(1);
			}
		}
		if (batch) {
			int a = shmq_ack_batch(q, ms, (unsigned)got);
			if (a != got)
				bench_die(prog, "ack_batch", a < 0 ? a : -ESTALE);
		} else {
			ack(q, &ms[0]);
		}
		i += (uint64_t)got;
	}
	double secs = bench_now_s() - t0;
	reap();
	shmq_close(q);
	cleanup();
	return (double)(n - first) / secs / 1e6;
}

static void usage(void)
{
	fprintf(stderr, "usage: %s pingpong|stream|batch [--messages N] [--repeats R] [--blocking]\n", prog);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	int is_ping = !strcmp(mode, "pingpong"), is_stream = !strcmp(mode, "stream"),
	    is_batch = !strcmp(mode, "batch");
	if (!is_ping && !is_stream && !is_batch) {
		fprintf(stderr, "%s: unknown mode '%s' (pingpong, stream or batch)\n", prog, mode);
		exit(2);
	}
	unsigned n = is_ping ? 200000 : 5000000, repeats = 5;
	int blocking = 0;
	static const struct option opts[] = {{"messages", required_argument, NULL, 'n'},
					     {"repeats", required_argument, NULL, 'r'},
					     {"blocking", no_argument, NULL, 'b'},
					     {NULL, 0, NULL, 0}};
	int c;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'n')
			/* a stream's rate counts from its first receive: a batch's worth is not enough */
			n = bench_parse_count(prog, "--messages", optarg, is_ping ? 1 : 10 * BATCH, 1u << 30);
		else if (c == 'r')
			repeats = bench_parse_count(prog, "--repeats", optarg, 1, 1000);
		else if (c == 'b' && is_ping)
			blocking = 1;
		else
			usage();
	}
	if (optind != argc)
		usage();
	parent_pid = getpid();
	atexit(cleanup);
	double *v = malloc(sizeof(*v) * repeats);
	if (!v)
		bench_die(prog, "malloc", -ENOMEM);
	for (unsigned r = 0; r < repeats; r++) {
		if (is_ping) {
			double p99;
			pingpong(n, blocking, &v[r], &p99);
			printf("run %u: one-way p50 %.1f ns, p99 %.1f ns\n", r + 1, v[r], p99);
		} else {
			v[r] = stream(n, is_batch);
			printf("run %u: %.2f M msg/s\n", r + 1, v[r]);
		}
		fflush(stdout);
	}
	struct spread sp = spread_of(v, (int)repeats);
	printf("%s%s: median of %u runs %.2f %s [%.2f-%.2f]\n", mode, blocking ? " (blocking)" : "", repeats,
	       sp.med, is_ping ? "ns one-way p50" : "M msg/s", sp.min, sp.max);
	free(v);
	return 0;
}

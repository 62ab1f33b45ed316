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
 * of the runs. On a noisy machine, alternate two builds run by run (`for i in 1..9: A; B`) and
 * compare medians: figures of one build taken minutes apart vary more than most changes do.
 */
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "standalone.h"

#define MSG 64
#define BATCH 32
#define WARMUP 10000
#define RUN_TIMEOUT_S 60 /* a run still going after this long is stuck: SIGALRM ends it */

static const char *prog = "hotpath";

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* best effort: one CPU, or an affinity mask that excludes it, runs unpinned */
	(void)sched_setaffinity(0, sizeof(set), &set);
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

static void recv_wait(shmq_t *q, struct shmq_msg *m, int timeout)
{
	int r;
	while ((r = shmq_recv(q, m, timeout)) == -EAGAIN)
		;
	if (r)
		bench_die(prog, "recv", r);
}

static void send_wait(shmq_t *q, const void *buf)
{
	int r;
	while ((r = shmq_send(q, buf, MSG, 0)) == -EAGAIN)
		;
	if (r)
		bench_die(prog, "send", r);
}

static pid_t spawn(void)
{
	pid_t p = fork();
	if (p < 0) {
		perror("fork");
		exit(1);
	}
	if (p == 0) {
		alarm(RUN_TIMEOUT_S);
		if (two_cpus())
			pin(0);
	}
	return p;
}

static void reap(pid_t p)
{
	int st;
	if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "%s: the sending process failed\n", prog);
		exit(1);
	}
}

/* One-way latency in ns: p50 into *p50, p99 into *p99. */
static void pingpong(unsigned n, int blocking, double *p50, double *p99)
{
	char ping[64], pong[64];
	snprintf(ping, sizeof(ping), "/shmq-hotpath-ping-%d", (int)getpid());
	snprintf(pong, sizeof(pong), "/shmq-hotpath-pong-%d", (int)getpid());
	shmq_close(make_queue(ping));
	shmq_close(make_queue(pong));
	int timeout = blocking ? -1 : 0;
	unsigned char buf[MSG] = {0};
	pid_t p = spawn();
	if (p == 0) { /* the echo side */
		shmq_t *in = open_queue(ping), *out = open_queue(pong);
		struct shmq_msg m;
		for (unsigned i = 0; i < n + WARMUP; i++) {
			recv_wait(in, &m, timeout);
			memcpy(buf, m.data, MSG);
			shmq_ack(in, &m);
			send_wait(out, buf);
		}
		_exit(0);
	}
	alarm(RUN_TIMEOUT_S);
	if (two_cpus())
		pin(1);
	shmq_t *out = open_queue(ping), *in = open_queue(pong);
	double *lat = malloc(sizeof(*lat) * n);
	if (!lat)
		bench_die(prog, "malloc", -ENOMEM);
	struct shmq_msg m;
	for (unsigned i = 0; i < n + WARMUP; i++) {
		memcpy(buf, &i, sizeof(i));
		double t0 = bench_now_s();
		send_wait(out, buf);
		recv_wait(in, &m, timeout);
		unsigned back;
		memcpy(&back, m.data, sizeof(back));
		if (back != i) {
			fprintf(stderr, "%s: round trip %u came back as %u\n", prog, i, back);
			exit(1);
		}
		shmq_ack(in, &m);
		if (i >= WARMUP)
			lat[i - WARMUP] = (bench_now_s() - t0) * 1e9 / 2;
	}
	reap(p);
	qsort(lat, n, sizeof(*lat), bench_cmp_double);
	*p50 = lat[n / 2];
	*p99 = lat[(size_t)n * 99 / 100];
	free(lat);
	shmq_close(out);
	shmq_close(in);
	shmq_unlink(ping);
	shmq_unlink(pong);
}

/* 1P1C throughput in M msg/s, single calls or batches of BATCH. */
static double stream(unsigned n, int batch)
{
	char name[64];
	snprintf(name, sizeof(name), "/shmq-hotpath-%d", (int)getpid());
	shmq_close(make_queue(name));
	pid_t p = spawn();
	if (p == 0) {
		shmq_t *q = open_queue(name);
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
	alarm(RUN_TIMEOUT_S);
	if (two_cpus())
		pin(1);
	shmq_t *q = open_queue(name);
	struct shmq_msg ms[BATCH];
	double t0 = 0;
	for (uint64_t i = 0; i < n;) {
		int got = 1;
		if (batch) {
			got = shmq_recv_batch(q, ms, BATCH, 0);
			if (got == -EAGAIN)
				continue;
			if (got < 0)
				bench_die(prog, "recv_batch", got);
		} else {
			recv_wait(q, &ms[0], 0);
		}
		if (i == 0)
			t0 = bench_now_s(); /* from the first message: the sender's start-up is not counted */
		for (int j = 0; j < got; j++) {
			uint64_t v;
			memcpy(&v, ms[j].data, sizeof(v));
			if (v != i + (uint64_t)j) {
				fprintf(stderr, "%s: message %llu arrived as %llu\n", prog,
					(unsigned long long)(i + (uint64_t)j), (unsigned long long)v);
				exit(1);
			}
		}
		int a = batch ? shmq_ack_batch(q, ms, (unsigned)got) : shmq_ack(q, &ms[0]);
		if (a < 0 || (batch && a != got))
			bench_die(prog, "ack", a < 0 ? a : -ESTALE);
		i += (uint64_t)got;
	}
	double secs = bench_now_s() - t0;
	reap(p);
	shmq_close(q);
	shmq_unlink(name);
	return (double)(n - 1) / secs / 1e6;
}

static void usage(void)
{
	fprintf(stderr, "usage: %s pingpong|stream|batch [--messages N] [--repeats R] [--blocking]\n", prog);
	exit(2);
}

static unsigned parse_count(const char *opt, const char *s, unsigned max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || !*s || v == 0 || v > max) {
		fprintf(stderr, "%s: %s: expected a count from 1 to %u, got '%s'\n", prog, opt, max, s);
		exit(2);
	}
	return (unsigned)v;
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
			n = parse_count("--messages", optarg, 1u << 30);
		else if (c == 'r')
			repeats = parse_count("--repeats", optarg, 1000);
		else if (c == 'b' && is_ping)
			blocking = 1;
		else
			usage();
	}
	if (optind != argc)
		usage();
	if (n < 2)
		n = 2;
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
	qsort(v, repeats, sizeof(*v), bench_cmp_double);
	printf("%s%s: median of %u runs %.2f %s [%.2f-%.2f]\n", mode, blocking ? " (blocking)" : "", repeats,
	       v[repeats / 2], is_ping ? "ns one-way p50" : "M msg/s", v[0], v[repeats - 1]);
	free(v);
	return 0;
}

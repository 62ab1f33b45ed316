/* SPDX-License-Identifier: MIT */
/*
 * wake: the figures of sleeping and waking, through the public API only (so the same source
 * measures an older build too):
 *
 *   wake killed [--sleepers K] [--messages N] [--repeats R]
 *       K consumers fall asleep in shmq_recv(-1) and are SIGKILLed there; then one process runs
 *       send + recv(0) + ack of 64-byte messages: ns per message (K 0: the baseline).
 *   wake herd [--sleepers C] [--messages N]
 *       C consumers loop on shmq_recv(-1) + ack; one message at a time is sent once all of them
 *       are asleep again: wake-ups per message, counted as the sleeps they lead to (a woken
 *       consumer, receiver or not, sleeps again once; reclaim passes are off, so nothing else
 *       wakes them but the 1 s cap of a sleep).
 *   wake recv0 [--calls N]
 *       shmq_recv(0) while the head slot is being written by a live producer (a reservation held
 *       by another handle of this process): median, p99 and worst ns per call.
 *
 * A consumer counts as asleep once the queue has counted its wait and its state in /proc is S.
 * Every child dies with the parent; the queue is removed on every exit but a SIGKILL.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "standalone.h"

#define MSG 64
#define WARMUP 10000
#define MAX_SLEEPERS 64

static const char *prog = "wake";
static pid_t parent_pid, kids[MAX_SLEEPERS];
static unsigned nkids;
static char name[64];

static void cleanup(void)
{
	if (getpid() != parent_pid)
		return;
	bench_kill_kids(kids, &nkids);
	if (name[0])
		shmq_unlink(name);
}

static shmq_t *make_queue(uint32_t reclaim_ms)
{
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 1024;
	c.slot_size = 128;
	c.reclaim_interval_ms = reclaim_ms;
	snprintf(name, sizeof(name), "/shmq-bench-wake-%d", (int)getpid());
	shmq_unlink(name);
	shmq_t *q;
	int r = shmq_create(name, &c, &q);
	if (r)
		bench_die(prog, "create", r);
	return q;
}

/* A consumer child: receives (timeout -1) and acks, once or forever. */
static void spawn_consumer(int forever)
{
	pid_t p = fork();
	if (p < 0) {
		perror("fork");
		exit(1);
	}
	if (p) {
		kids[nkids++] = p;
		return;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent_pid)
		_exit(1);
	shmq_t *q;
	struct shmq_msg m;
	if (shmq_open(name, &q))
		_exit(1);
	do {
		if (shmq_recv(q, &m, -1) || shmq_ack(q, &m))
			_exit(1);
	} while (forever);
	_exit(0);
}

static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *s = strrchr(buf, ')');
	return s && s[1] == ' ' ? s[2] : 0;
}

static struct shmq_stats stats(shmq_t *q)
{
	struct shmq_stats st;
	int r = shmq_stats(q, &st);
	if (r)
		bench_die(prog, "stats", r);
	return st;
}

/* Until every child is asleep and the queue counted at least `waits` consumer waits and `acked`
 * acks; returns the consumer waits counted then. */
static uint64_t await_asleep(shmq_t *q, uint64_t waits, uint64_t acked)
{
	for (double t0 = bench_now_s(); bench_now_s() - t0 < 10;) {
		struct shmq_stats st = stats(q);
		int ok = st.consumer_waits >= waits && st.acked >= acked;
		for (unsigned i = 0; i < nkids && ok; i++)
			ok = proc_state(kids[i]) == 'S';
		if (ok)
			return st.consumer_waits;
		usleep(200);
	}
	fprintf(stderr, "%s: the consumers did not fall asleep within 10 s\n", prog);
	exit(1);
}

static double killed(unsigned sleepers, unsigned n)
{
	char buf[MSG] = {0};
	struct shmq_msg m;
	shmq_t *q = make_queue(100);
	for (unsigned i = 0; i < sleepers; i++)
		spawn_consumer(0);
	await_asleep(q, sleepers, 0);
	bench_kill_kids(kids, &nkids);
	double t0 = 0;
	for (unsigned i = 0; i < WARMUP + n; i++) {
		if (i == WARMUP)
			t0 = bench_now_s();
		int r = shmq_send(q, buf, MSG, 0);
		if (r || (r = shmq_recv(q, &m, 0)) || (r = shmq_ack(q, &m)))
			bench_die(prog, "send/recv/ack", r);
	}
	double ns = (bench_now_s() - t0) * 1e9 / n;
	shmq_close(q);
	shmq_unlink(name);
	name[0] = 0;
	return ns;
}

static void herd(unsigned sleepers, unsigned n)
{
	char buf[MSG] = {0};
	shmq_t *q = make_queue(0);
	for (unsigned i = 0; i < sleepers; i++)
		spawn_consumer(1);
	uint64_t w0 = await_asleep(q, sleepers, 0), w = w0;
	double t0 = bench_now_s();
	for (unsigned i = 0; i < n; i++) {
		int r = shmq_send(q, buf, MSG, 0);
		if (r)
			bench_die(prog, "send", r);
		w = await_asleep(q, w + 1, i + 1);
	}
	printf("herd: %u sleeping consumers, %u messages in %.2f s: %.2f wake-ups per message\n", sleepers, n,
	       bench_now_s() - t0, (double)(w - w0) / n);
	shmq_close(q);
}

static void recv0(unsigned calls)
{
	shmq_t *p = make_queue(0), *q; /* no reclaim pass in a call: only the wait is timed */
	int r = shmq_open(name, &q);
	if (r)
		bench_die(prog, "open", r);
	struct shmq_reservation res;
	if ((r = shmq_send_reserve(p, MSG, &res, 0)))
		bench_die(prog, "reserve", r);
	double *v = malloc(sizeof(*v) * calls);
	if (!v)
		bench_die(prog, "malloc", -ENOMEM);
	struct shmq_msg m;
	for (unsigned i = 0; i < calls; i++) {
		double t = bench_now_s();
		r = shmq_recv(q, &m, 0);
		v[i] = (bench_now_s() - t) * 1e9;
		if (r != -EAGAIN)
			bench_die(prog, "recv(0) of a slot being written", r ? r : -EPROTO);
	}
	qsort(v, calls, sizeof(*v), bench_cmp_double);
	printf("recv0: %u calls while the head slot is being written: median %.0f ns, p99 %.0f ns, worst "
	       "%.0f ns\n",
	       calls, v[calls / 2], v[(unsigned)(calls * 0.99)], v[calls - 1]);
	free(v);
	shmq_send_abort(p, &res);
	shmq_close(q);
	shmq_close(p);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: %s killed|herd|recv0 [--sleepers K] [--messages N] [--repeats R] [--calls N]\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	int is_killed = !strcmp(mode, "killed"), is_herd = !strcmp(mode, "herd"),
	    is_recv0 = !strcmp(mode, "recv0");
	if (!is_killed && !is_herd && !is_recv0) {
		fprintf(stderr, "%s: unknown mode '%s' (killed, herd or recv0)\n", prog, mode);
		exit(2);
	}
	unsigned sleepers = is_herd ? 8 : 3, n = is_herd ? 200 : 2000000, repeats = 5, calls = 200;
	static const struct option opts[] = {{"sleepers", required_argument, NULL, 's'},
					     {"messages", required_argument, NULL, 'n'},
					     {"repeats", required_argument, NULL, 'r'},
					     {"calls", required_argument, NULL, 'c'},
					     {NULL, 0, NULL, 0}};
	int c;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 's' && !is_recv0)
			sleepers =
				bench_parse_count(prog, "--sleepers", optarg, is_herd ? 1 : 0, MAX_SLEEPERS);
		else if (c == 'n' && !is_recv0)
			n = bench_parse_count(prog, "--messages", optarg, 1, 1u << 30);
		else if (c == 'r' && is_killed)
			repeats = bench_parse_count(prog, "--repeats", optarg, 1, 1000);
		else if (c == 'c' && is_recv0)
			calls = bench_parse_count(prog, "--calls", optarg, 1, 1u << 20);
		else
			usage();
	}
	if (optind != argc)
		usage();
	parent_pid = getpid();
	atexit(cleanup);
	if (is_herd) {
		herd(sleepers, n);
	} else if (is_recv0) {
		recv0(calls);
	} else {
		double v[1000];
		for (unsigned r = 0; r < repeats; r++) {
			v[r] = killed(sleepers, n);
			printf("run %u: %.1f ns per send + recv + ack\n", r + 1, v[r]);
			fflush(stdout);
		}
		qsort(v, repeats, sizeof(v[0]), bench_cmp_double);
		printf("killed: %u sleepers SIGKILLed, median of %u runs %.1f ns per send + recv + ack "
		       "[%.1f-%.1f]\n",
		       sleepers, repeats, v[repeats / 2], v[0], v[repeats - 1]);
	}
	return 0;
}

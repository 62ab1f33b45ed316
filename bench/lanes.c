/* SPDX-License-Identifier: MIT */
/*
 * lanes: how the dispatch policies share work out, and what lanes do to throughput.
 *
 *   lanes share      [--messages N] [--repeats R]   one producer, 4 lanes, 4 consumer processes
 *                                                   that spin `work` us per message: equal (all
 *                                                   10 us) and unequal (one 40 us, three 10 us);
 *                                                   per policy, the messages each lane got and
 *                                                   each consumer processed, and max/min ratios;
 *                                                   paced (20k msg/s) and saturated
 *   lanes throughput [--messages N] [--repeats R]   1, 2 and 4 lanes with 1P1C and 2P2C
 *                                                   processes, 64-byte messages, no work:
 *                                                   messages per second (median of R runs)
 *
 * On a 2-vCPU machine 5 processes share 2 cores: the consumers' "work" is CPU time they compete
 * for, so the figures are shares of what the machine could do, not of a dedicated core each.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "standalone.h"

#define CONSUMERS 4
#define LANES 4

static void spin_us(unsigned us)
{
	double end = bench_now_s() + us / 1e6;
	while (bench_now_s() < end)
		;
}

static const char *policy_name(uint32_t p)
{
	static const char *const n[] = {"round-robin", "random", "weighted 4:2:1:1", "key-hash",
					"least-loaded"};
	return p < 5 ? n[p] : "?";
}

/* What one consumer reports back through its pipe. */
struct tally {
	uint64_t total;
	uint64_t per_lane[SHMQ_LANES_MAX];
};

/* A consumer process: registers, tells the parent, then receives until the queue stays empty for
 * idle_ms after `go` (the producer's start), spinning work_us per message. */
static pid_t consumer(const char *name, unsigned work_us, uint32_t lane_cap, int ready_fd, int go_fd,
		      int out_fd)
{
	pid_t pid = fork();
	if (pid)
		return pid;
	shmq_t *q;
	int r = shmq_open(name, &q);
	if (r)
		bench_die("lanes", "open", r);
	struct shmq_msg m;
	shmq_recv(q, &m, 0); /* registers as a consumer: lanes are assigned to registered ones */
	(void)!write(ready_fd, "r", 1);
	char c;
	(void)!read(go_fd, &c, 1);
	struct tally t = {0};
	while ((r = shmq_recv(q, &m, 300)) == 0) {
		if (work_us)
			spin_us(work_us);
		t.total++;
		t.per_lane[m.slot / lane_cap]++;
		shmq_ack(q, &m);
	}
	(void)!write(out_fd, &t, sizeof(t));
	shmq_close(q);
	_exit(0);
}

/* One share run: returns messages/s; fills per-consumer and per-lane counts. */
static double share_run(uint32_t policy, const unsigned work[CONSUMERS], unsigned n, unsigned rate,
			uint64_t per_cons[CONSUMERS], uint64_t per_lane[LANES])
{
	char name[64];
	snprintf(name, sizeof(name), "/shmq-bench-lanes-%d", (int)getpid());
	shmq_unlink(name);
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 1024;
	c.lanes = LANES;
	c.dispatch = policy;
	if (policy == SHMQ_DISPATCH_WEIGHTED) {
		c.weights[0] = 4;
		c.weights[1] = 2;
		c.weights[2] = 1;
		c.weights[3] = 1;
	}
	shmq_t *q;
	int r = shmq_create(name, &c, &q);
	if (r)
		bench_die("lanes", "create", r);
	int ready[2], go[2], out[CONSUMERS][2];
	if (pipe(ready) || pipe(go))
		bench_die("lanes", "pipe", -errno);
	pid_t kids[CONSUMERS];
	for (int i = 0; i < CONSUMERS; i++) {
		if (pipe(out[i]))
			bench_die("lanes", "pipe", -errno);
		kids[i] = consumer(name, work[i], c.capacity / LANES, ready[1], go[0], out[i][1]);
	}
	for (int i = 0; i < CONSUMERS; i++) {
		char x;
		(void)!read(ready[0], &x, 1);
	}
	usleep(100 * 1000); /* past every consumer's assignment refresh: all see all */
	double t0 = bench_now_s();
	for (int i = 0; i < CONSUMERS; i++)
		(void)!write(go[1], "g", 1);
	char payload[64] = {0}, key[16];
	for (unsigned i = 0; i < n; i++) {
		/* paced: message i goes at t0 + i / rate (checked every 16, slept in between) */
		while (rate && i % 16 == 0 && bench_now_s() < t0 + (double)i / rate)
			usleep(100);
		if (policy == SHMQ_DISPATCH_KEY_HASH) {
			int kl = snprintf(key, sizeof(key), "k%u", i % 256);
			r = shmq_send_routed(q, key, (size_t)kl, payload, sizeof(payload), -1);
		} else {
			r = shmq_send(q, payload, sizeof(payload), -1);
		}
		if (r)
			bench_die("lanes", "send", r);
	}
	memset(per_lane, 0, sizeof(uint64_t) * LANES);
	uint64_t got = 0;
	for (int i = 0; i < CONSUMERS; i++) {
		struct tally t;
		if (read(out[i][0], &t, sizeof(t)) != sizeof(t))
			bench_die("lanes", "tally", -EIO);
		per_cons[i] = t.total;
		got += t.total;
		for (int l = 0; l < LANES; l++)
			per_lane[l] += t.per_lane[l];
		waitpid(kids[i], NULL, 0);
		close(out[i][0]);
		close(out[i][1]);
	}
	double secs = bench_now_s() - t0 - 0.3; /* the consumers' last, idle 300 ms */
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	shmq_close(q);
	shmq_unlink(name);
	if (got != n) {
		fprintf(stderr, "lanes: %llu of %u messages received\n", (unsigned long long)got, n);
		exit(1);
	}
	return n / secs;
}

static double ratio(const uint64_t *v, int n)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	for (int i = 0; i < n; i++) {
		lo = v[i] < lo ? v[i] : lo;
		hi = v[i] > hi ? v[i] : hi;
	}
	return lo ? (double)hi / (double)lo : 0;
}

static void share(unsigned n, unsigned repeats, unsigned pace)
{
	static const unsigned equal[CONSUMERS] = {10, 10, 10, 10}, unequal[CONSUMERS] = {40, 10, 10, 10};
	printf("share: %u messages, %u lanes, %u consumers; median of %u runs (by rate)\n", n, LANES,
	       CONSUMERS, repeats);
	printf("%s\n",
	       pace ? "paced: the producer sends at a fixed rate below what the consumers can take"
		    : "saturated: the producer sends as fast as it can; a full lane sends on to the next");
	printf("%-18s %-9s %8s  %-30s %7s  %-30s %7s\n", "policy", "work", "msg/s", "per lane", "max/min",
	       "per consumer (c0 slow if unequal)", "max/min");
	for (uint32_t p = 0; p <= SHMQ_DISPATCH_LEAST_LOADED; p++) {
		for (int u = 0; u < 2; u++) {
			double rate[16];
			uint64_t pc[16][CONSUMERS], pl[16][LANES];
			for (unsigned k = 0; k < repeats; k++)
				rate[k] = share_run(p, u ? unequal : equal, n, pace, pc[k], pl[k]);
			/* report the run with the median rate, whole */
			double sorted[16];
			memcpy(sorted, rate, sizeof(double) * repeats);
			qsort(sorted, repeats, sizeof(double), bench_cmp_double);
			unsigned med = 0;
			for (unsigned k = 0; k < repeats; k++)
				if (rate[k] == sorted[repeats / 2])
					med = k;
			char lanes[64], cons[64];
			snprintf(lanes, sizeof(lanes), "%llu/%llu/%llu/%llu", (unsigned long long)pl[med][0],
				 (unsigned long long)pl[med][1], (unsigned long long)pl[med][2],
				 (unsigned long long)pl[med][3]);
			snprintf(cons, sizeof(cons), "%llu/%llu/%llu/%llu", (unsigned long long)pc[med][0],
				 (unsigned long long)pc[med][1], (unsigned long long)pc[med][2],
				 (unsigned long long)pc[med][3]);
			printf("%-18s %-9s %8.0f  %-30s %7.2f  %-30s %7.2f\n", policy_name(p),
			       u ? "unequal" : "equal", rate[med], lanes, ratio(pl[med], LANES), cons,
			       ratio(pc[med], CONSUMERS));
			fflush(stdout);
		}
	}
}

/* Throughput: P producer and C consumer processes, no work, 64-byte messages. */
static double tput_run(uint32_t lanes, int np, int nc, unsigned n)
{
	char name[64];
	snprintf(name, sizeof(name), "/shmq-bench-lanes-t-%d", (int)getpid());
	shmq_unlink(name);
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 4096;
	c.lanes = lanes;
	c.dispatch = SHMQ_DISPATCH_ROUND_ROBIN;
	shmq_t *q;
	int r = shmq_create(name, &c, &q);
	if (r)
		bench_die("lanes", "create", r);
	int ready[2], go[2], out[2];
	if (pipe(ready) || pipe(go) || pipe(out))
		bench_die("lanes", "pipe", -errno);
	pid_t kids[8];
	for (int i = 0; i < nc; i++)
		kids[i] = consumer(name, 0, c.capacity / lanes, ready[1], go[0], out[1]);
	for (int i = 0; i < np; i++) {
		kids[nc + i] = fork();
		if (kids[nc + i])
			continue;
		shmq_t *h;
		if ((r = shmq_open(name, &h)))
			bench_die("lanes", "open", r);
		char x, payload[64] = {0};
		(void)!write(ready[1], "r", 1);
		(void)!read(go[0], &x, 1);
		for (unsigned k = 0; k < n / (unsigned)np; k++)
			if ((r = shmq_send(h, payload, sizeof(payload), -1)))
				bench_die("lanes", "send", r);
		shmq_close(h);
		_exit(0);
	}
	for (int i = 0; i < np + nc; i++) {
		char x;
		(void)!read(ready[0], &x, 1);
	}
	usleep(100 * 1000);
	double t0 = bench_now_s();
	for (int i = 0; i < np + nc; i++)
		(void)!write(go[1], "g", 1);
	uint64_t got = 0;
	for (int i = 0; i < nc; i++) {
		struct tally t;
		if (read(out[0], &t, sizeof(t)) != sizeof(t))
			bench_die("lanes", "tally", -EIO);
		got += t.total;
	}
	double secs = bench_now_s() - t0 - 0.3;
	for (int i = 0; i < np + nc; i++)
		waitpid(kids[i], NULL, 0);
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	close(out[0]);
	close(out[1]);
	shmq_close(q);
	shmq_unlink(name);
	if (got != n / (unsigned)np * (unsigned)np) {
		fprintf(stderr, "lanes: %llu messages received\n", (unsigned long long)got);
		exit(1);
	}
	return got / secs;
}

static void throughput(unsigned n, unsigned repeats)
{
	printf("throughput: %u messages of 64 bytes, no work; median of %u runs, M msg/s\n", n, repeats);
	printf("%-6s %10s %10s\n", "lanes", "1P1C", "2P2C");
	static const uint32_t lane_counts[] = {1, 2, 4};
	for (int i = 0; i < 3; i++) {
		double med[2];
		for (int shape = 0; shape < 2; shape++) {
			double v[16];
			for (unsigned k = 0; k < repeats; k++)
				v[k] = tput_run(lane_counts[i], shape + 1, shape + 1, n);
			qsort(v, repeats, sizeof(double), bench_cmp_double);
			med[shape] = v[repeats / 2];
		}
		printf("%-6u %10.2f %10.2f\n", lane_counts[i], med[0] / 1e6, med[1] / 1e6);
		fflush(stdout);
	}
}

int main(int argc, char **argv)
{
	unsigned n = 0, repeats = 3;
	const char *what = argc > 1 ? argv[1] : "";
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--messages"))
			n = (unsigned)strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--repeats"))
			repeats = (unsigned)strtoul(argv[i + 1], NULL, 10);
		else {
			fprintf(stderr, "lanes: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	if (repeats < 1 || repeats > 16) {
		fprintf(stderr, "lanes: --repeats must be 1..16\n");
		return 2;
	}
	if (!strcmp(what, "share")) {
		share(n ? n : 20000, repeats, 20000);
		share(n ? n : 20000, repeats, 0);
	} else if (!strcmp(what, "throughput"))
		throughput(n ? n : 2000000, repeats);
	else {
		fprintf(stderr, "usage: lanes share|throughput [--messages N] [--repeats R]\n");
		return 2;
	}
	return 0;
}

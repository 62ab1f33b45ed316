/* SPDX-License-Identifier: MIT */
/*
 * hotpath: the library's per-message path alone, for A/B runs of two builds. The harness measures
 * shmq among its peers through an adapter and a generic driver; this drives the public API
 * directly, with nothing else in the loop, so a change to src/ring.c shows in a few seconds:
 *
 *   hotpath pingpong [--messages N] [--repeats R] [--blocking]   one-way p50/p99 = RTT / 2
 *   hotpath stream   [--messages N] [--repeats R]                1P1C send / recv + ack, M msg/s
 *   hotpath batch    [--messages N] [--repeats R]                1P1C batches of 32, M msg/s
 *   hotpath mpmc     [--messages N] [--repeats R]                2P2C, blocking calls, M msg/s
 *   hotpath targets  [--repeats R]                               issue 14's ratios, one run
 *
 * 64-byte messages (pingpong, stream and batch take --size 8..64 for shorter ones; the reference
 * rings of `targets` always carry 64), 128-byte slots, 1024 slots; sender on CPU 0, receiver on
 * CPU 1 (when there are two); the receiver checks every sequence number. Each run prints one line,
 * then the median of the runs (percentiles are nearest rank, as in the harness). --blocking
 * receives with a 1 s timeout (the same spin, then futex, as -1), so a process that died is
 * noticed; the other process dies with its parent, and every exit but a SIGKILL of the parent
 * removes the queues. A stream also says which mode the consumer was in, from its empty polls per receive
 * that took messages: a consumer that keeps up finds the queue empty between messages (K, >= 0.5), one that
 * works through a backlog almost never does (B, < 0.01; M between); the same build runs in either, at very
 * different rates.
 *
 * `targets` measures, R rounds interleaved (default 5): the floor (one word bounced in one line,
 * bench/peers/floor.c), shmq's round trip with busy-poll and blocking receives, the bare SPSC ring
 * and the minimal leased ring (bench/peers/), shmq 1P1C with single and batch calls, 2P2C, and
 * keyed against plain send + recv + ack (bench/lib/keyed.c); then prints the ratios the harness
 * prints against issue 14's targets, each met or MISSED. 2P2C runs four processes on the two
 * CPUs: its producers and consumers block (spin, then futex) rather than busy-poll, so that a
 * spinner does not hold the CPU another needs; its 1P1C reference is the busy-poll stream. The rings run
 * through their harness adapters (one indirect call and a copy per message more than a bare loop would take):
 * what they cost shmq is in its favour.
 *
 * On a noisy machine, alternate two builds run by run (`for i in 1..9: A; B`) and compare
 * medians: figures of one build taken minutes apart vary more than most changes do.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/keyed.h"
#include "lib/proc.h"
#include "lib/stats.h"
#include "peers/peer.h"
#include "shmq.h"
#include "standalone.h"

#define MSG 64 /* bytes per message, at most (--size) */
#define BATCH 32
#define WARMUP 10000
#define PEER_CHECK 4096 /* polls between looks at whether the other process is still there */
#define BLOCK_MS 1000	/* a blocking receive's timeout, so a dead peer is noticed */
#define WATCHDOG_S                                                                                           \
	120 /* targets: a measurement that takes longer is stuck (a reference ring                           \
	     * spins forever when the other process died) */
#define KEYED_MSGS 200000

/* the reference transports (bench/peers/), driven through their adapters */
extern const struct peer_ops peer_floor, peer_spsc, peer_leased;

static const char *prog = "hotpath";
static unsigned msg_len = MSG; /* bytes per shmq message (--size) */

/* What a run leaves behind, for cleanup() on every exit of the parent: the other process and
 * the queues' names. */
static pid_t parent_pid, child_pid;
static pid_t extra_pid[3]; /* mpmc(): the other producers and consumer */
static char names[2][64];
static uint64_t empty_polls, recv_calls; /* stream: receives that found the queue empty, and
					  * those that took messages, this run */

static void cleanup(void)
{
	if (getpid() != parent_pid)
		return;
	if (child_pid > 0) {
		kill(child_pid, SIGKILL);
		waitpid(child_pid, NULL, 0);
		child_pid = 0;
	}
	for (int i = 0; i < 3; i++)
		if (extra_pid[i] > 0) {
			kill(extra_pid[i], SIGKILL);
			waitpid(extra_pid[i], NULL, 0);
			extra_pid[i] = 0;
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
	for (unsigned k = 1; (r = shmq_recv(q, m, blocking ? BLOCK_MS : 0)) == -EAGAIN; k++) {
		empty_polls++;
		if (blocking || k % PEER_CHECK == 0)
			check_peer();
	}
	if (r)
		bench_die(prog, "recv", r);
}

static void send_wait(shmq_t *q, const void *buf)
{
	int r;
	for (unsigned k = 1; (r = shmq_send(q, buf, msg_len, 0)) == -EAGAIN; k++)
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

/* Forks a process pinned to cpu (best effort: a mask without the CPU runs unpinned) and killed
 * with us: 0 in it, its pid in the parent. */
static pid_t fork_pinned(int cpu)
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
			(void)proc_pin(cpu);
	}
	return p;
}

/* Forks the other process of a run: 0 in it (pinned to CPU 0), its pid in the parent (pinned to
 * CPU 1). */
static pid_t spawn(void)
{
	pid_t p = fork_pinned(0);
	if (p == 0)
		return 0;
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

struct lat {
	double p50, p99, p999; /* one-way ns */
};

static struct lat lat_of(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), bench_cmp_double);
	return (struct lat){pct(v, n, 50), pct(v, n, 99), pct(v, n, 99.9)};
}

static double *alloc_samples(unsigned n)
{
	double *lat = malloc(sizeof(*lat) * n);
	if (!lat)
		bench_die(prog, "malloc", -ENOMEM);
	return lat;
}

/* the last stream's mode (see the top of the file) */
static double polls_per_recv(void) { return recv_calls ? (double)empty_polls / (double)recv_calls : 0; }

static char mode_of(double polls) { return polls < 0.01 ? 'B' : polls >= 0.5 ? 'K' : 'M'; }

static const char *mode_name(double polls)
{
	char m = mode_of(polls);
	return m == 'B' ? "backlog" : m == 'K' ? "keeping up" : "mixed";
}

/* One-way latency in ns. */
static struct lat pingpong(unsigned n, int blocking)
{
	snprintf(names[0], sizeof(names[0]), "/shmq-hotpath-ping-%d", (int)parent_pid);
	snprintf(names[1], sizeof(names[1]), "/shmq-hotpath-pong-%d", (int)parent_pid);
	shmq_close(make_queue(names[0]));
	shmq_close(make_queue(names[1]));
	unsigned char buf[MSG] = {0};
	double *lat = alloc_samples(n);
	if (spawn() == 0) { /* the echo side */
		shmq_t *in = open_queue(names[0]), *out = open_queue(names[1]);
		struct shmq_msg m;
		for (unsigned i = 0; i < n + WARMUP; i++) {
			recv_wait(in, &m, blocking);
			memcpy(buf, m.data, msg_len);
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
	struct lat l = lat_of(lat, n);
	free(lat);
	shmq_close(out);
	shmq_close(in);
	cleanup();
	return l;
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
				iov[j] = (struct shmq_iov){bufs[j], msg_len};
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
	empty_polls = recv_calls = 0;
	uint64_t first = 0; /* messages the first receive took, before the clock started */
	for (uint64_t i = 0, polls = 0; i < n;) {
		int got = 1;
		if (batch) {
			got = shmq_recv_batch(q, ms, BATCH, 0);
			if (got == -EAGAIN) {
				empty_polls++;
				if (++polls % PEER_CHECK == 0)
					check_peer();
				continue;
			}
			if (got < 0)
				bench_die(prog, "recv_batch", got);
		} else {
			recv_wait(q, &ms[0], 0);
		}
		recv_calls++;
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

/* ---- 2P2C ----------------------------------------------------------------------------------- */

/* What the four processes of mpmc() share: messages received so far, those out of their
 * producer's order, and when the first and the last were received (CLOCK_MONOTONIC seconds: one
 * clock for all processes). */
struct mpmc_shared {
	_Atomic uint64_t got;
	_Atomic uint64_t bad;
	_Atomic double t_first, t_last;
};

#define PRODUCER_BIT 63

/* Forks process k of mpmc() on cpu: 0 in it, its pid in the parent. */
static pid_t spawn_extra(int k, int cpu)
{
	pid_t p = fork_pinned(cpu);
	if (p == 0)
		return 0;
	extra_pid[k] = p;
	return p;
}

/* A consumer of mpmc(): receives until n messages were received by the two, checking that each
 * producer's messages come in the order it sent them (first deliveries of one lane are in
 * ticket order, and each consumer sees a subsequence of it). */
static void mpmc_consume(shmq_t *q, struct mpmc_shared *sh, uint64_t n)
{
	uint64_t last[2] = {0, 0};
	int seen[2] = {0, 0};
	struct shmq_msg m;
	while (atomic_load_explicit(&sh->got, memory_order_relaxed) < n) {
		int r = shmq_recv(q, &m, BLOCK_MS);
		if (r == -EAGAIN)
			continue;
		if (r)
			bench_die(prog, "recv", r);
		uint64_t v;
		memcpy(&v, m.data, sizeof(v));
		unsigned p = (unsigned)(v >> PRODUCER_BIT);
		uint64_t seq = v & ~(1ULL << PRODUCER_BIT);
		if (seen[p] && seq <= last[p])
			atomic_fetch_add(&sh->bad, 1);
		seen[p] = 1;
		last[p] = seq;
		ack(q, &m);
		double t = bench_now_s(), zero = 0;
		atomic_compare_exchange_strong(&sh->t_first, &zero, t);
		if (atomic_fetch_add_explicit(&sh->got, 1, memory_order_relaxed) + 1 == n)
			atomic_store(&sh->t_last, t);
	}
}

/* 2P2C M msg/s: two producers send n / 2 messages each, two consumers receive and ack them all,
 * every call blocking (BLOCK_MS at a time: spin, then futex). One producer and one consumer per
 * CPU. The rate counts from the first receive to the last. */
static double mpmc(unsigned n)
{
	snprintf(names[0], sizeof(names[0]), "/shmq-hotpath-mpmc-%d", (int)parent_pid);
	shmq_close(make_queue(names[0]));
	struct mpmc_shared *sh =
		mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		bench_die(prog, "mmap", -errno);
	memset(sh, 0, sizeof(*sh));
	uint64_t each = n / 2;
	for (int p = 0; p < 2; p++) {
		if (spawn_extra(p, p) == 0) {
			shmq_t *q = open_queue(names[0]);
			unsigned char buf[MSG] = {0};
			for (uint64_t i = 0; i < each; i++) {
				uint64_t v = (uint64_t)p << PRODUCER_BIT | i;
				memcpy(buf, &v, sizeof(v));
				int r;
				while ((r = shmq_send(q, buf, MSG, BLOCK_MS)) == -EAGAIN)
					;
				if (r)
					bench_die(prog, "send", r);
			}
			_exit(0);
		}
	}
	if (spawn_extra(2, 0) == 0) {
		mpmc_consume(open_queue(names[0]), sh, 2 * each);
		_exit(0);
	}
	if (two_cpus())
		(void)proc_pin(1);
	shmq_t *q = open_queue(names[0]);
	mpmc_consume(q, sh, 2 * each);
	for (int i = 0; i < 3; i++) {
		int st;
		pid_t p = extra_pid[i];
		extra_pid[i] = 0;
		if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "%s: an mpmc process failed\n", prog);
			exit(1);
		}
	}
	if (atomic_load(&sh->bad)) {
		fprintf(stderr, "%s: mpmc: %llu messages out of their producer's order\n", prog,
			(unsigned long long)atomic_load(&sh->bad));
		exit(1);
	}
	double rate = (double)(2 * each - 1) / (atomic_load(&sh->t_last) - atomic_load(&sh->t_first)) / 1e6;
	munmap(sh, sizeof(*sh));
	shmq_close(q);
	cleanup();
	return rate;
}

/* ---- targets: shmq against the floor and the reference rings ---------------------------------- */

static void on_watchdog(int sig)
{
	(void)sig;
	static const char m[] = "hotpath: a measurement is stuck (the other process died?)\n";
	(void)!write(2, m, sizeof(m) - 1);
	cleanup();
	_exit(1);
}

static struct peer_chan *ref_create(const struct peer_ops *o, size_t msg_size)
{
	struct peer_params p = {.msg_size = msg_size, .depth = 1024, .senders = 1, .receivers = 1};
	struct peer_chan *c = o->create(&p);
	if (!c)
		bench_die(prog, o->name, -ENOMEM);
	return c;
}

static void *ref_attach(const struct peer_ops *o, struct peer_chan *c, enum peer_role role)
{
	void *ep = o->attach(c, role);
	if (!ep)
		bench_die(prog, o->name, -ENOMEM);
	return ep;
}

/* The floor: one word bounced in one line; one-way = RTT / 2, as pingpong(). */
static struct lat floor_pingpong(unsigned n)
{
	const struct peer_ops *o = &peer_floor;
	struct peer_chan *c = ref_create(o, sizeof(uint64_t));
	double *lat = alloc_samples(n);
	uint64_t v;
	if (spawn() == 0) {
		void *ep = ref_attach(o, c, PEER_RECEIVER);
		for (unsigned i = 0; i < n + WARMUP; i++)
			if (o->recv(ep, &v, sizeof(v)) != (int)sizeof(v) || o->send(ep, &v, sizeof(v)))
				_exit(1);
		_exit(0);
	}
	void *ep = ref_attach(o, c, PEER_SENDER);
	for (uint64_t i = 0; i < n + WARMUP; i++) {
		double t0 = bench_now_s();
		if (o->send(ep, &i, sizeof(i)) || o->recv(ep, &v, sizeof(v)) != (int)sizeof(v) || v != i) {
			fprintf(stderr, "%s: floor: round trip %llu failed\n", prog, (unsigned long long)i);
			exit(1);
		}
		if (i >= WARMUP)
			lat[i - WARMUP] = (bench_now_s() - t0) * 1e9 / 2;
	}
	reap();
	o->detach(ep);
	o->destroy(c);
	struct lat l = lat_of(lat, n);
	free(lat);
	return l;
}

/* 1P1C M msg/s through a reference ring: the messages, capacity, checks and clock of stream() */
static double ring_stream(const struct peer_ops *o, unsigned n, int batch)
{
	struct peer_chan *c = ref_create(o, MSG);
	static unsigned char bufs[BATCH][MSG];
	if (spawn() == 0) {
		void *ep = ref_attach(o, c, PEER_SENDER);
		for (uint64_t i = 0; i < n;) {
			unsigned k = !batch ? 1 : n - i < BATCH ? (unsigned)(n - i) : BATCH;
			for (unsigned j = 0; j < k; j++) {
				uint64_t v = i + j;
				memcpy(bufs[j], &v, sizeof(v));
			}
			int r = batch ? o->send_batch(ep, bufs, MSG, k) : o->send(ep, bufs[0], MSG) ? -1 : 1;
			if (r <= 0)
				_exit(1);
			i += (unsigned)r;
		}
		_exit(0);
	}
	void *ep = ref_attach(o, c, PEER_RECEIVER);
	double t0 = 0;
	uint64_t first = 0;
	for (uint64_t i = 0; i < n;) {
		int got = batch				     ? o->recv_batch(ep, bufs, MSG, BATCH)
			  : o->recv(ep, bufs[0], MSG) == MSG ? 1
							     : -1;
		if (got <= 0 || (!batch && (o->flags & PEER_ACKS) && o->ack(ep))) {
			fprintf(stderr, "%s: %s: receive failed\n", prog, o->name);
			exit(1);
		}
		if (i == 0) {
			t0 = bench_now_s();
			first = (uint64_t)got;
		}
		for (int j = 0; j < got; j++) {
			uint64_t v;
			memcpy(&v, bufs[j], sizeof(v));
			if (v != i + (uint64_t)j) {
				fprintf(stderr, "%s: %s: message %llu arrived as %llu\n", prog, o->name,
					(unsigned long long)(i + (uint64_t)j), (unsigned long long)v);
				exit(1);
			}
		}
		i += (uint64_t)got;
	}
	double secs = bench_now_s() - t0;
	reap();
	o->detach(ep);
	o->destroy(c);
	return (double)(n - first) / secs / 1e6;
}

/* keyed / plain send + recv + ack in this process (bench/lib/keyed.c) */
static void keyed(double *plain, double *key)
{
	snprintf(names[0], sizeof(names[0]), "/shmq-hotpath-keyed-%d", (int)parent_pid);
	int r = keyed_queue_create(names[0], 1024);
	if (r)
		bench_die(prog, "create", r);
	shmq_t *q = open_queue(names[0]);
	if ((r = keyed_measure(q, KEYED_MSGS, plain, key)))
		bench_die(prog, "keyed send + recv + ack", r);
	shmq_close(q);
	cleanup();
}

enum {
	T_FLOOR,
	T_BUSY,
	T_BLOCK,
	T_RING,
	T_LEASED,
	T_SINGLE,
	T_BATCH,
	T_MPMC,
	T_PLAIN,
	T_KEYED,
	T_KEYED_RATIO, /* computed per round */
	T_N
};

static void target_line(const char *what, const char *rule, double v, double limit, int at_most)
{
	int ok = at_most ? v <= limit : v >= limit;
	printf("  %-66s %7.3f  (target %-7s) %s\n", what, v, rule, ok ? "met" : "MISSED");
}

static void targets(unsigned rounds)
{
	double(*f)[T_N] = calloc(rounds, sizeof(*f)), p999[3][64], col[64];
	char modes[2][64 + 1] = {"", ""};
	if (!f)
		bench_die(prog, "malloc", -ENOMEM);
	signal(SIGALRM, on_watchdog);
	unsigned n_rt = 200000, n_tp = 5000000;
	for (unsigned r = 0; r < rounds; r++) {
		struct lat l;
		alarm(WATCHDOG_S);
		l = floor_pingpong(n_rt);
		f[r][T_FLOOR] = l.p50, p999[0][r] = l.p999;
		l = pingpong(n_rt, 0);
		f[r][T_BUSY] = l.p50, p999[1][r] = l.p999;
		l = pingpong(n_rt, 1);
		f[r][T_BLOCK] = l.p50, p999[2][r] = l.p999;
		alarm(WATCHDOG_S);
		f[r][T_RING] = ring_stream(&peer_spsc, n_tp, 0);
		f[r][T_LEASED] = ring_stream(&peer_leased, n_tp, 0);
		alarm(WATCHDOG_S);
		f[r][T_SINGLE] = stream(n_tp, 0);
		modes[0][r] = mode_of(polls_per_recv());
		f[r][T_BATCH] = stream(n_tp, 1);
		modes[1][r] = mode_of(polls_per_recv());
		alarm(WATCHDOG_S);
		f[r][T_MPMC] = mpmc(n_tp);
		alarm(WATCHDOG_S);
		keyed(&f[r][T_PLAIN], &f[r][T_KEYED]);
		f[r][T_KEYED_RATIO] = f[r][T_KEYED] / f[r][T_PLAIN];
		alarm(0);
		printf("round %u: one-way p50 ns floor %.1f, shmq busy %.1f, blocking %.1f; 1P1C M msg/s "
		       "bare ring %.2f, leased ring %.2f, shmq %.2f (%c), batch %.2f (%c); 2P2C %.2f; keyed "
		       "%.0f / plain %.0f ns\n",
		       r + 1, f[r][T_FLOOR], f[r][T_BUSY], f[r][T_BLOCK], f[r][T_RING], f[r][T_LEASED],
		       f[r][T_SINGLE], modes[0][r], f[r][T_BATCH], modes[1][r], f[r][T_MPMC], f[r][T_KEYED],
		       f[r][T_PLAIN]);
		fflush(stdout);
	}
	double m[T_N], m999[3];
	for (int k = 0; k < T_N; k++) {
		for (unsigned r = 0; r < rounds; r++)
			col[r] = f[r][k];
		m[k] = spread_of(col, (int)rounds).med;
	}
	for (int k = 0; k < 3; k++)
		m999[k] = spread_of(p999[k], (int)rounds).med;
	printf("\nmedians of %u rounds, 64 B: one-way p50 floor %.1f ns, shmq busy poll %.1f, blocking %.1f "
	       "(p99.9 %.1f / %.1f / %.1f);\n1P1C bare ring %.2f M msg/s, leased ring %.2f, shmq %.2f "
	       "(modes %s), batch %.2f (modes %s), 2P2C %.2f; send + recv + ack plain %.0f ns, keyed "
	       "%.0f\n\n",
	       rounds, m[T_FLOOR], m[T_BUSY], m[T_BLOCK], m999[0], m999[1], m999[2], m[T_RING], m[T_LEASED],
	       m[T_SINGLE], modes[0], m[T_BATCH], modes[1], m[T_MPMC], m[T_PLAIN], m[T_KEYED]);
	printf("Targets of issue 14 (ratios of medians)\n");
	target_line("round trip p50, busy poll (timeout 0 in a loop): shmq / floor", "<= 1.25",
		    m[T_BUSY] / m[T_FLOOR], 1.25, 1);
	target_line("round trip p50, blocking receive: shmq / floor", "<= 1.25", m[T_BLOCK] / m[T_FLOOR],
		    1.25, 1);
	target_line("round trip p99.9, busy poll: shmq / floor p50", "<= 10", m999[1] / m[T_FLOOR], 10, 1);
	target_line("round trip p99.9, blocking receive: shmq / floor p50", "<= 10", m999[2] / m[T_FLOOR], 10,
		    1);
	target_line("1P1C msgs/s, single calls: shmq / bare ring", ">= 1.5", m[T_SINGLE] / m[T_RING], 1.5, 0);
	target_line("1P1C msgs/s, batch calls: shmq batch / bare ring single", ">= 2", m[T_BATCH] / m[T_RING],
		    2, 0);
	target_line("2P2C msgs/s (blocking calls): shmq / shmq 1P1C", ">= 0.5", m[T_MPMC] / m[T_SINGLE], 0.5,
		    0);
	target_line("keyed send + recv + ack: keyed / plain (median of rounds' ratios)", "<= 3",
		    m[T_KEYED_RATIO], 3, 1);
	printf("  for reference: leased ring / bare ring 1P1C %.3f\n", m[T_LEASED] / m[T_RING]);
	free(f);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: %s pingpong|stream|batch|mpmc [--messages N] [--repeats R] [--size 8..64] "
		"[--blocking]\n"
		"       %s targets [--repeats R]\n",
		prog, prog);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	int is_ping = !strcmp(mode, "pingpong"), is_stream = !strcmp(mode, "stream"),
	    is_batch = !strcmp(mode, "batch"), is_targets = !strcmp(mode, "targets"),
	    is_mpmc = !strcmp(mode, "mpmc");
	if (!is_ping && !is_stream && !is_batch && !is_targets && !is_mpmc) {
		fprintf(stderr, "%s: unknown mode '%s' (pingpong, stream, batch, mpmc or targets)\n", prog,
			mode);
		exit(2);
	}
	unsigned n = is_ping ? 200000 : 5000000, repeats = 5;
	int blocking = 0;
	static const struct option opts[] = {{"messages", required_argument, NULL, 'n'},
					     {"repeats", required_argument, NULL, 'r'},
					     {"blocking", no_argument, NULL, 'b'},
					     {"size", required_argument, NULL, 's'},
					     {NULL, 0, NULL, 0}};
	int c;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'n' && !is_targets)
			/* a stream's rate counts from its first receive: a batch's worth is not enough */
			n = bench_parse_count(prog, "--messages", optarg, is_ping ? 1 : 10 * BATCH, 1u << 30);
		else if (c == 'r')
			repeats = bench_parse_count(prog, "--repeats", optarg, 1, is_targets ? 64 : 1000);
		else if (c == 'b' && is_ping)
			blocking = 1;
		else if (c == 's' && !is_targets) /* a message carries its 8-byte sequence number */
			msg_len = bench_parse_count(prog, "--size", optarg, 8, MSG);
		else
			usage();
	}
	if (optind != argc)
		usage();
	parent_pid = getpid();
	atexit(cleanup);
	if (is_targets) {
		targets(repeats);
		return 0;
	}
	double *v = malloc(sizeof(*v) * repeats);
	if (!v)
		bench_die(prog, "malloc", -ENOMEM);
	for (unsigned r = 0; r < repeats; r++) {
		if (is_ping) {
			struct lat l = pingpong(n, blocking);
			v[r] = l.p50;
			printf("run %u: one-way p50 %.1f ns, p99 %.1f ns, p99.9 %.1f ns\n", r + 1, l.p50,
			       l.p99, l.p999);
		} else if (is_mpmc) {
			v[r] = mpmc(n);
			printf("run %u: %.2f M msg/s\n", r + 1, v[r]);
		} else {
			v[r] = stream(n, is_batch);
			double polls = polls_per_recv();
			printf("run %u: %.2f M msg/s, %.3f empty polls per receive (%s)\n", r + 1, v[r],
			       polls, mode_name(polls));
		}
		fflush(stdout);
	}
	struct spread sp = spread_of(v, (int)repeats);
	if (msg_len != MSG)
		printf("%u-byte messages: ", msg_len);
	printf("%s%s: median of %u runs %.2f %s [%.2f-%.2f]\n", mode, blocking ? " (blocking)" : "", repeats,
	       sp.med, is_ping ? "ns one-way p50" : "M msg/s", sp.min, sp.max);
	free(v);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * fdwake: the figures of the pollable descriptor (shmq_fd), through the public API only:
 *
 *   fdwake idle [--seconds S]
 *       CPU time (getrusage, user + sys) of a consumer idle for S s (default 2) on an empty queue:
 *       armed in epoll_wait, then blocked in shmq_recv(-1) for comparison; and how often each
 *       woke up (the safety net: about once a second).
 *   fdwake latency [--messages N] [--gap-us G] [--pin]
 *       A producer process sends a 64-byte message carrying its send time every G us (default
 *       500, so the consumer is asleep again); the consumer alternates message by message between
 *       waiting in epoll on an armed descriptor (then shmq_recv(0)) and a blocked shmq_recv(-1).
 *       Wake latency = receive - send time, p50/p99/p99.9 of each way, and their ratios. --pin:
 *       the consumer on CPU 0, the producer on CPU 1.
 *   fdwake race [--producers P] [--messages N]
 *       P producer processes send N messages in all (default 3 and 1,000,000), with a random gap
 *       after each send so the queue is often empty; one poller in epoll drains with shmq_recv(0).
 *       Reports lost and duplicated messages and lost wake-ups: reclaim passes are off, so only a
 *       producer's wake-up or the 1 s safety net makes the descriptor readable, and a wait of
 *       900 ms or more that ends with a message there is a wake-up the net caught. Exit 1 if any.
 *   fdwake all: idle, latency and race with their defaults.
 *
 * Every child dies with the parent; the queue is removed on every exit but a SIGKILL.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/proc.h"
#include "lib/stats.h"
#include "shmq.h"
#include "standalone.h"

#define MSG 64
#define MAX_PRODUCERS 16

static const char *prog = "fdwake";
static pid_t parent_pid, kids[MAX_PRODUCERS];
static unsigned nkids;
static char name[64];

static void cleanup(void)
{
	if (getpid() != parent_pid)
		return;
	bench_kill_kids(kids, &nkids);
	if (name[0])
		shmq_unlink(name);
	name[0] = 0;
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static shmq_t *make_queue(uint32_t reclaim_ms)
{
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 1024;
	c.reclaim_interval_ms = reclaim_ms;
	snprintf(name, sizeof(name), "/shmq-bench-fdwake-%d", (int)getpid());
	shmq_unlink(name);
	shmq_t *q;
	int r = shmq_create(name, &c, &q);
	if (r)
		bench_die(prog, "shmq_create", r);
	return q;
}

static void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static pid_t spawn(void)
{
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	else
		kids[nkids++] = pid;
	return pid;
}

/* An epoll instance watching q's descriptor (level-triggered, as asyncio and libuv use it). */
static int watch(shmq_t *q)
{
	int fd = shmq_fd(q), ep = epoll_create1(EPOLL_CLOEXEC);
	if (fd < 0)
		bench_die(prog, "shmq_fd", fd);
	struct epoll_event ev = {.events = EPOLLIN};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		perror("epoll");
		exit(1);
	}
	return ep;
}

/* The event loop of the header: receive with timeout 0, arm after -EAGAIN, wait when armed. One
 * message, or -EAGAIN once timeout_ms passed. *waits counts the epoll_wait returns. */
static int loop_recv(shmq_t *q, int ep, struct shmq_msg *m, int timeout_ms, unsigned long *waits)
{
	uint64_t end = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	for (;;) {
		int r = shmq_recv(q, m, 0);
		if (r != -EAGAIN)
			return r;
		r = shmq_fd_arm(q);
		if (r < 0)
			bench_die(prog, "shmq_fd_arm", r);
		if (r == 1)
			continue;
		uint64_t now = now_ns();
		if (now >= end)
			return -EAGAIN;
		struct epoll_event ev;
		int ms = end == UINT64_MAX ? -1 : (int)((end - now + 999999) / 1000000);
		if (epoll_wait(ep, &ev, 1, ms) < 0 && errno != EINTR) {
			perror("epoll_wait");
			exit(1);
		}
		++*waits;
	}
}

static double cpu_us(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void run_idle(unsigned seconds)
{
	shmq_t *q = make_queue(100); /* the default interval: idle passes are what a real queue has */
	int ep = watch(q);
	struct shmq_msg m;
	unsigned long waits = 0;
	double c0 = cpu_us(), t0 = bench_now_s();
	if (loop_recv(q, ep, &m, (int)seconds * 1000, &waits) != -EAGAIN)
		bench_die(prog, "idle: a message on an empty queue", -EPROTO);
	double cpu_fd = cpu_us() - c0, wall = bench_now_s() - t0;
	struct shmq_stats st0, st1;
	shmq_stats(q, &st0);
	c0 = cpu_us();
	if (shmq_recv(q, &m, (int)seconds * 1000) != -EAGAIN)
		bench_die(prog, "idle: a message on an empty queue", -EPROTO);
	double cpu_recv = cpu_us() - c0;
	shmq_stats(q, &st1);
	printf("idle %u s on an empty queue (CPU: user + sys, getrusage)\n", seconds);
	printf("  epoll on an armed shmq_fd: %8.0f us CPU (%.4f %% of one CPU), %lu wake-ups in %.2f s\n",
	       cpu_fd, cpu_fd / (wall * 1e4), waits, wall);
	printf("  blocked shmq_recv(-1):     %8.0f us CPU (%.4f %% of one CPU), %llu sleeps\n", cpu_recv,
	       cpu_recv / ((double)seconds * 1e4),
	       (unsigned long long)(st1.consumer_waits - st0.consumer_waits));
	close(ep);
	shmq_close(q);
	cleanup();
}

struct stamp {
	uint64_t seq, sent_ns;
	unsigned char pad[MSG - 16];
};

static void run_latency(unsigned messages, unsigned gap_us, int pin)
{
	shmq_t *q = make_queue(100);
	int ep = watch(q);
	if (pin)
		proc_pin(0);
	if (spawn() == 0) {
		if (pin)
			proc_pin(1);
		shmq_t *pq;
		if (shmq_open(name, &pq))
			_exit(1);
		struct timespec gap = {.tv_sec = gap_us / 1000000,
				       .tv_nsec = (long)(gap_us % 1000000) * 1000};
		struct stamp s = {0};
		for (uint64_t i = 0; i < (uint64_t)messages + 100; i++) {
			nanosleep(&gap, NULL);
			s.seq = i;
			s.sent_ns = now_ns();
			if (shmq_send(pq, &s, sizeof(s), -1))
				_exit(1);
		}
		_exit(0);
	}
	static struct hist h[2]; /* 0: epoll, 1: blocked recv */
	hist_init(&h[0]);
	hist_init(&h[1]);
	unsigned long waits = 0;
	for (unsigned i = 0; i < messages + 100; i++) {
		/* the first 100 warm up; then message i is waited for the way i % 2 says */
		int way = i & 1;
		struct shmq_msg m;
		int r = way ? shmq_recv(q, &m, -1) : loop_recv(q, ep, &m, -1, &waits);
		uint64_t t = now_ns();
		if (r)
			bench_die(prog, "latency: receive", r);
		struct stamp s;
		memcpy(&s, m.data, sizeof(s));
		shmq_ack(q, &m);
		if (i >= 100)
			hist_add(&h[way], t - s.sent_ns);
	}
	printf("wake latency, send to receive, of a consumer asleep on an empty queue (%u messages, one "
	       "every %u "
	       "us, the two ways alternated)\n",
	       messages, gap_us);
	const char *what[2] = {"epoll on an armed shmq_fd", "blocked shmq_recv(-1)"};
	for (int w = 0; w < 2; w++)
		printf("  %-26s p50 %7.1f us  p99 %7.1f us  p99.9 %7.1f us  (%llu)\n", what[w],
		       hist_pct(&h[w], 50) / 1e3, hist_pct(&h[w], 99) / 1e3, hist_pct(&h[w], 99.9) / 1e3,
		       (unsigned long long)h[w].count);
	printf("  epoll / blocked recv:      p50 %.2fx  p99 %.2fx  (target: <= 1.5x)\n",
	       (double)hist_pct(&h[0], 50) / (double)hist_pct(&h[1], 50),
	       (double)hist_pct(&h[0], 99) / (double)hist_pct(&h[1], 99));
	close(ep);
	shmq_close(q);
	cleanup();
}

static void run_race(unsigned producers, unsigned messages)
{
	shmq_t *q = make_queue(0); /* no reclaim passes: only wake-ups and the 1 s net fire the timer */
	int ep = watch(q);
	/* producer p sends messages / producers, the first messages % producers one more */
	unsigned per = (messages + producers - 1) / producers;
	for (unsigned p = 0; p < producers; p++) {
		if (spawn())
			continue;
		uint32_t mine = messages / producers + (p < messages % producers);
		shmq_t *pq;
		if (shmq_open(name, &pq))
			_exit(1);
		srand((unsigned)getpid());
		for (uint32_t s = 0; s < mine; s++) {
			uint32_t v[2] = {p, s};
			if (shmq_send(pq, v, sizeof(v), -1))
				_exit(1);
			/* a random gap, so the poller often finds the queue empty */
			for (unsigned k = (unsigned)rand() % 512; k; k--)
				spin_pause();
		}
		_exit(0);
	}
	unsigned char *got = calloc((size_t)producers * per, 1);
	if (!got) {
		perror("calloc");
		exit(1);
	}
	unsigned long long received = 0, dups = 0, bad = 0, waits = 0, caught = 0;
	uint64_t total = messages;
	double t0 = bench_now_s(), give_up = t0 + 600;
	int long_wait = 0; /* the last wait lasted 900 ms or more */
	while (received - dups < total && bench_now_s() < give_up) {
		struct shmq_msg m;
		int r = shmq_recv(q, &m, 0);
		if (r == 0) {
			uint32_t v[2];
			memcpy(v, m.data, sizeof(v));
			if (m.len != sizeof(v) || v[0] >= producers || v[1] >= per) {
				bad++;
			} else {
				dups += got[(size_t)v[0] * per + v[1]];
				got[(size_t)v[0] * per + v[1]] = 1;
			}
			received++;
			caught += long_wait; /* the net woke us to a message nobody woke us for */
			long_wait = 0;
			shmq_ack(q, &m);
			continue;
		}
		if (r != -EAGAIN)
			bench_die(prog, "race: receive", r);
		if ((r = shmq_fd_arm(q)) < 0)
			bench_die(prog, "shmq_fd_arm", r);
		if (r == 1)
			continue;
		struct epoll_event ev;
		uint64_t w0 = now_ns();
		epoll_wait(ep, &ev, 1, 10000);
		waits++;
		long_wait = now_ns() - w0 >= 900000000ULL;
	}
	double secs = bench_now_s() - t0;
	unsigned long long lost = total - (received - dups - bad);
	printf("race: %u producers, %llu messages, one poller in epoll (level-triggered), %.2f s\n",
	       producers, (unsigned long long)total, secs);
	printf("  received %llu, lost %llu, duplicated %llu, foreign %llu; %llu epoll waits, lost wake-ups "
	       "(caught by the 1 s net) %llu\n",
	       received - dups - bad, lost, dups, bad, waits, caught);
	free(got);
	close(ep);
	shmq_close(q);
	cleanup();
	if (lost || dups || bad || caught)
		exit(1);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: %s idle [--seconds S] | latency [--messages N] [--gap-us G] [--pin] | race "
		"[--producers P] "
		"[--messages N] | all\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	unsigned seconds = 2, messages = 0, gap_us = 500, producers = 3;
	int pin = 0;
	static const struct option opts[] = {
		{"seconds", required_argument, 0, 's'}, {"messages", required_argument, 0, 'n'},
		{"gap-us", required_argument, 0, 'g'},	{"producers", required_argument, 0, 'p'},
		{"pin", no_argument, 0, 'P'},		{0, 0, 0, 0}};
	int c;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			seconds = bench_parse_count(prog, "--seconds", optarg, 1, 3600);
			break;
		case 'n':
			messages = bench_parse_count(prog, "--messages", optarg, 1, 100000000);
			break;
		case 'g':
			gap_us = bench_parse_count(prog, "--gap-us", optarg, 1, 1000000);
			break;
		case 'p':
			producers = bench_parse_count(prog, "--producers", optarg, 1, MAX_PRODUCERS);
			break;
		case 'P':
			pin = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	parent_pid = getpid();
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	int all = !strcmp(mode, "all");
	if (all || !strcmp(mode, "idle"))
		run_idle(seconds);
	if (all || !strcmp(mode, "latency"))
		run_latency(messages && !all ? messages : 4000, gap_us, pin);
	if (all || !strcmp(mode, "race"))
		run_race(producers, messages && !all ? messages : 1000000);
	if (!all && strcmp(mode, "idle") && strcmp(mode, "latency") && strcmp(mode, "race"))
		usage();
	return 0;
}

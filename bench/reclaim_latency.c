/* SPDX-License-Identifier: MIT */
/*
 * reclaim_latency: how long after a consumer's SIGKILL its leased message is delivered again.
 *
 * A watchdog process runs shmq_reclaim every --interval-ms (like `shmq watchdog`). Each round a
 * forked consumer leases one message and is SIGKILLed; the parent, already waiting in shmq_recv,
 * measures kill -> redelivery. The lease itself is long (--lease-ms, default 30 s): without
 * dead-owner detection the message would come back only after that.
 *
 * With --reclaim-interval-ms the waiting receiver runs its own passes too (the queue's
 * reclaim_interval_ms; 0 by default here, so the watchdog is what is measured); --interval-ms 0
 * runs no watchdog, which measures the receivers' passes alone.
 *
 *   reclaim_latency [--rounds N] [--interval-ms MS] [--lease-ms MS] [--reclaim-interval-ms MS]
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "standalone.h"

int main(int argc, char **argv)
{
	int rounds = 50, interval = 50, lease = 30000, recv_interval = 0;
	static const struct option opts[] = {{"rounds", required_argument, 0, 'r'},
					     {"interval-ms", required_argument, 0, 'i'},
					     {"lease-ms", required_argument, 0, 'l'},
					     {"reclaim-interval-ms", required_argument, 0, 'R'},
					     {0, 0, 0, 0}};
	for (int c; (c = getopt_long(argc, argv, "r:i:l:R:", opts, NULL)) != -1;) {
		char *end;
		long v = strtol(optarg, &end, 10);
		int zero_ok = c == 'i' || c == 'R';
		if (*end || !*optarg || v < (zero_ok ? 0 : 1) || v > 3600000) {
			fprintf(stderr, "reclaim_latency: bad value '%s' for -%c\n", optarg, c);
			return 2;
		}
		if (c == 'r')
			rounds = (int)v;
		else if (c == 'i')
			interval = (int)v;
		else if (c == 'l')
			lease = (int)v;
		else if (c == 'R')
			recv_interval = (int)v;
		else
			return 2;
	}
	if (!interval && !recv_interval) {
		fprintf(stderr, "reclaim_latency: with no watchdog (--interval-ms 0) and no receiver passes "
				"(--reclaim-interval-ms 0) only the lease brings a message back\n");
		return 2;
	}
	char name[64];
	snprintf(name, sizeof(name), "/shmq-bench-reclaim-%d", (int)getpid());
	struct shmq_config cfg;
	shmq_config_init(&cfg);
	cfg.capacity = 64;
	cfg.lease_ms = (uint32_t)lease;
	cfg.max_deliveries = 255;
	cfg.retry_base_ms = 0; /* measure detection and requeue, not the retry backoff */
	cfg.retry_max_ms = 0;
	cfg.reclaim_interval_ms = (uint32_t)recv_interval; /* 0: the watchdog alone */
	shmq_t *q;
	int err = shmq_create(name, &cfg, &q);
	if (err)
		bench_die("reclaim_latency", "create", err);

	pid_t wd = interval ? fork() : -1;
	if (wd == 0) {
		shmq_t *w;
		if (shmq_open(name, &w))
			_exit(1);
		for (;;) {
			shmq_reclaim(w, NULL);
			usleep((useconds_t)interval * 1000);
		}
	}
	double *lat = calloc((size_t)rounds, sizeof(double));
	for (int i = 0; i < rounds; i++) {
		if ((err = shmq_send(q, &i, sizeof(i), 0)))
			bench_die("reclaim_latency", "send", err);
		int pfd[2];
		if (pipe(pfd))
			return 1;
		pid_t c = fork();
		if (c == 0) {
			shmq_t *cq;
			struct shmq_msg m;
			if (shmq_open(name, &cq) || shmq_recv(cq, &m, 5000))
				_exit(1);
			if (write(pfd[1], "x", 1) != 1)
				_exit(1);
			pause(); /* holds the lease until killed */
			_exit(0);
		}
		char b;
		if (read(pfd[0], &b, 1) != 1)
			bench_die("reclaim_latency", "consumer", -EIO);
		close(pfd[0]);
		close(pfd[1]);
		int phase = interval ? interval : recv_interval;
		usleep((useconds_t)(rand() % (phase * 1000))); /* kill at a random phase of the passes */
		double t0 = bench_now_s() * 1e3;
		kill(c, SIGKILL);
		waitpid(c, NULL, 0);
		struct shmq_msg m;
		if ((err = shmq_recv(q, &m, lease * 2)))
			bench_die("reclaim_latency", "recv after kill", err);
		lat[i] = bench_now_s() * 1e3 - t0;
		if (m.deliveries != 2)
			bench_die("reclaim_latency", "expected a redelivery", -EPROTO);
		shmq_ack(q, &m);
	}
	if (wd > 0) {
		kill(wd, SIGKILL);
		waitpid(wd, NULL, 0);
	}
	qsort(lat, (size_t)rounds, sizeof(double), bench_cmp_double);
	printf("reclaim latency after SIGKILL, %d rounds, watchdog interval %d ms (0: none), receivers' "
	       "reclaim interval %d ms (0: off), lease %d ms:\n",
	       rounds, interval, recv_interval, lease);
	printf("  p50 %.1f ms  p99 %.1f ms  max %.1f ms  (lease timeout would be %d ms: %.0fx faster at "
	       "p50)\n",
	       lat[rounds / 2], lat[(rounds * 99) / 100 < rounds ? (rounds * 99) / 100 : rounds - 1],
	       lat[rounds - 1], lease, lease / lat[rounds / 2]);
	free(lat);
	shmq_close(q);
	shmq_unlink(name);
	return 0;
}

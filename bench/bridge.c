/* SPDX-License-Identifier: MIT */
/*
 * bridge: shm -> JetStream -> shm on loopback through two shmq-bridge processes and one nats-server
 * (-js, file storage, a scratch store), as `make bench-bridge` runs it.
 *
 *   throughput  a producer sends --count messages of --size bytes into queue A as fast as A takes
 *               them; a consumer receives them from B. msg/s = count / (last receive - first send).
 *   latency     the producer paces --rate msg/s; each payload carries its send time, the consumer
 *               records receive - send (p50/p99/p99.9).
 * Each is repeated --rounds times on fresh queues and a fresh stream; medians and min-max printed.
 *
 *   usage: bridge --bridge PATH [--server PATH] [--count N] [--size B] [--rate R] [--rounds N]
 *                 [--batch N]
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "lib/daemon.h"
#include "lib/proc.h"
#include "lib/stats.h"
#include "standalone.h"

static const char *prog = "bridge";
static const char *bridge_bin, *server_bin = "/usr/sbin/nats-server";
static unsigned count = 200000, size = 64, rate = 5000, rounds = 5, batch = 256;

/* A bridge process (a struct daemon of its own: spawned quiet, dies with this process). */
static void bridge_start(struct daemon *d, const char *const argv[])
{
	*d = (struct daemon){.server = "shmq-bridge", .peer = "bench-bridge", .owner = getpid()};
	if (daemon_spawn(d, bridge_bin, argv, DAEMON_QUIET))
		bench_die(prog, d->why, -EIO);
}

struct prod {
	const char *name;
	unsigned paced; /* msg/s, 0: as fast as the queue takes them */
	uint64_t first_ns;
};

static void *produce(void *arg)
{
	struct prod *p = arg;
	shmq_t *q;
	int err = shmq_open(p->name, &q);
	if (err)
		bench_die(prog, p->name, err);
	char buf[4096] = {0};
	p->first_ns = now_ns();
	for (unsigned i = 0; i < count; i++) {
		uint64_t t = now_ns();
		if (p->paced) {
			uint64_t due = p->first_ns + (uint64_t)i * 1000000000u / p->paced;
			while ((t = now_ns()) < due)
				;
		}
		memcpy(buf, &t, 8);
		if ((err = shmq_send(q, buf, size, -1)))
			bench_die(prog, "send", err);
	}
	shmq_close(q);
	return NULL;
}

/* One round; returns msg/s, fills h with latencies. */
static double round_trip(int r, unsigned paced, struct hist *h)
{
	char port[16], url[64], a[64], b[64], stream[32], durable[32];
	struct daemon srv = {.server = "nats-server", .peer = "bench-bridge"}, to, from;
	if (daemon_prepare(&srv, "bridge"))
		bench_die(prog, srv.why, -EIO);
	snprintf(port, sizeof(port), "%d", srv.port);
	snprintf(url, sizeof(url), "nats://127.0.0.1:%s", port);
	snprintf(a, sizeof(a), "/shmq-bench-bridge-a-%d", (int)getpid());
	snprintf(b, sizeof(b), "/shmq-bench-bridge-b-%d", (int)getpid());
	snprintf(stream, sizeof(stream), "B%d", r);
	snprintf(durable, sizeof(durable), "d%d", r);
	char bs[16];
	snprintf(bs, sizeof(bs), "%u", batch);
	shmq_unlink(a);
	shmq_unlink(b);
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 8192;
	c.dedup_entries = 1u << 20;
	shmq_t *qa = NULL, *qb = NULL;
	int err = shmq_create(a, &c, &qa);
	if (!err)
		err = shmq_create(b, &c, &qb);
	if (err)
		bench_die(prog, "create", err);

	if (daemon_spawn(&srv, server_bin,
			 (const char *const[]){server_bin, "-js", "-a", "127.0.0.1", "-p", port, "-sd",
					       srv.dir, NULL},
			 DAEMON_QUIET) ||
	    daemon_wait_ready(&srv, daemon_tcp_listening, "listen"))
		bench_die(prog, srv.why, -EIO);
	bridge_start(&to, (const char *const[]){bridge_bin, a, "--to", url, "--subject", "b.s", "--stream",
						stream, "--create", "--batch", bs, NULL});
	bridge_start(&from,
		     (const char *const[]){bridge_bin, b, "--from", url, "--subject", "b.s", "--stream",
					   stream, "--create", "--durable", durable, "--batch", bs, NULL});
	/* one message through first: both bridges are connected and the stream and durable exist */
	char warm[8] = {0};
	struct shmq_msg w;
	if ((err = shmq_send(qa, warm, sizeof(warm), -1)) || (err = shmq_recv(qb, &w, 30000)))
		bench_die(prog, "warm-up message", err);
	shmq_ack(qb, &w);

	struct prod p = {.name = a, .paced = paced};
	pthread_t th;
	pthread_create(&th, NULL, produce, &p);
	struct shmq_msg m[256];
	unsigned got = 0;
	uint64_t last = 0;
	while (got < count) {
		int k = shmq_recv_batch(qb, m, 256, 10000);
		if (k < 0)
			bench_die(prog, "receive (a bridge died?)", k);
		last = now_ns();
		for (int i = 0; i < k; i++) {
			uint64_t t;
			memcpy(&t, m[i].data, 8);
			hist_add(h, last - t);
		}
		shmq_ack_batch(qb, m, (unsigned)k);
		got += (unsigned)k;
	}
	pthread_join(th, NULL);
	daemon_stop(&to, SIGTERM);
	daemon_stop(&from, SIGTERM);
	daemon_stop(&srv, SIGKILL);
	shmq_close(qa);
	shmq_close(qb);
	shmq_unlink(a);
	shmq_unlink(b);
	return (double)count / ((double)(last - p.first_ns) / 1e9);
}

int main(int argc, char **argv)
{
	int bad = argc % 2 == 0; /* options come in pairs: OPTION VALUE */
	for (int i = 1; i + 1 < argc && !bad; i += 2) {
		const char *o = argv[i], *v = argv[i + 1];
		if (!strcmp(o, "--bridge"))
			bridge_bin = v;
		else if (!strcmp(o, "--server"))
			server_bin = v;
		else if (!strcmp(o, "--count"))
			count = bench_parse_count(prog, o, v, 1000, 100000000);
		else if (!strcmp(o, "--size"))
			size = bench_parse_count(prog, o, v, 8, 200);
		else if (!strcmp(o, "--rate"))
			rate = bench_parse_count(prog, o, v, 1, 1000000);
		else if (!strcmp(o, "--rounds"))
			rounds = bench_parse_count(prog, o, v, 1, 100);
		else if (!strcmp(o, "--batch"))
			batch = bench_parse_count(prog, o, v, 1, 1024);
		else
			bad = 1;
	}
	if (bad || !bridge_bin) {
		fprintf(stderr,
			"usage: %s --bridge PATH [--server PATH] [--count N] [--size B] [--rate R] "
			"[--rounds N] [--batch N]\n",
			prog);
		return 2;
	}
	static struct hist tp_lat, paced_lat;
	hist_init(&tp_lat);
	hist_init(&paced_lat);
	double tp[100], p50[100], p99[100], p999[100];
	printf("shm -> JetStream -> shm, loopback, %u-byte messages, batch %u, file storage\n", size, batch);
	for (unsigned r = 0; r < rounds; r++) {
		struct hist h;
		hist_init(&h);
		tp[r] = round_trip((int)r * 2, 0, &h);
		hist_merge(&tp_lat, &h);
		unsigned n = count;
		count = rate * 4 < count ? rate * 4 : count; /* 4 s paced */
		hist_init(&h);
		round_trip((int)r * 2 + 1, rate, &h);
		count = n;
		p50[r] = (double)hist_pct(&h, 50) / 1e3;
		p99[r] = (double)hist_pct(&h, 99) / 1e3;
		p999[r] = (double)hist_pct(&h, 99.9) / 1e3;
		printf("  round %u: %.0f msg/s (%u messages); at %u msg/s: p50 %.0f us, p99 %.0f us, p99.9 "
		       "%.0f us\n",
		       r + 1, tp[r], count, rate, p50[r], p99[r], p999[r]);
		fflush(stdout);
	}
	struct spread s = spread_of(tp, (int)rounds), l50 = spread_of(p50, (int)rounds),
		      l99 = spread_of(p99, (int)rounds), l999 = spread_of(p999, (int)rounds);
	printf("median of %u rounds: %.0f msg/s (%.0f-%.0f); at %u msg/s p50 %.0f us (%.0f-%.0f), p99 %.0f "
	       "us, "
	       "p99.9 %.0f us\n",
	       rounds, s.med, s.min, s.max, rate, l50.med, l50.min, l50.max, l99.med, l999.med);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * keyed_send: the price of idempotency keys. One thread, one queue: N rounds of send + recv + ack
 * with plain shmq_send, then with shmq_send_keyed (a fresh 16-byte key per message), then with
 * keyed sends and shmq_ack_done on the consumer side. Reports ns per message (median of
 * --repeats runs) and the ratio against plain.
 *
 *   keyed_send [--messages N] [--repeats R]      (ENTRIES=N in the environment: table size,
 *                                                default 65536 = 8 MiB; 4096 fits in L2)
 *
 * The keys are all fresh, as in a real stream, and the window is 20 ms, so the table reaches a
 * steady state: a keyed send costs the cache misses of its probe run (the table is random
 * access), measured here on the 2-vCPU VM at ~600 ns with 8 MiB and ~260 ns with 512 KiB.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "standalone.h"

enum mode {
	PLAIN,
	KEYED,
	KEYED_DONE
};

/* ns per message for one run of `n` messages in `mode`, or a negative value on error */
static double run(enum mode mode, unsigned n)
{
	char name[64];
	snprintf(name, sizeof(name), "/shmq-bench-keyed-%d", (int)getpid());
	shmq_unlink(name);
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 1024;
	/* a steady state: a 20 ms window at this rate keeps ~20k keys live in 64k entries (8 MiB) */
	c.dedup_entries = getenv("ENTRIES") ? (uint32_t)atoi(getenv("ENTRIES")) : 1u << 16;
	c.dedup_window_ms = 20;
	shmq_t *q;
	if (shmq_create(name, &c, &q))
		return -1;
	char payload[64] = {0}, key[16];
	struct shmq_msg m;
	double t0 = bench_now_s() * 1e9;
	for (unsigned i = 0; i < n; i++) {
		int r;
		if (mode == PLAIN) {
			r = shmq_send(q, payload, sizeof(payload), 0);
		} else {
			snprintf(key, sizeof(key), "k%014u", i);
			r = shmq_send_keyed(q, key, sizeof(key), payload, sizeof(payload) - sizeof(key), 0,
					    NULL);
		}
		if (r || shmq_recv(q, &m, 0))
			return -1;
		if ((mode == KEYED_DONE ? shmq_ack_done(q, &m) : shmq_ack(q, &m)))
			return -1;
	}
	double ns = (bench_now_s() * 1e9 - t0) / n;
	shmq_close(q);
	shmq_unlink(name);
	return ns;
}

int main(int argc, char **argv)
{
	unsigned n = 200000, repeats = 5;
	static const struct option opts[] = {
		{"messages", required_argument, NULL, 'n'},
		{"repeats", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'n' && atoi(optarg) > 0)
			n = (unsigned)atoi(optarg);
		else if (o == 'r' && atoi(optarg) > 0 && atoi(optarg) <= 64)
			repeats = (unsigned)atoi(optarg);
		else {
			fprintf(stderr, "usage: keyed_send [--messages N] [--repeats R (1-64)]\n");
			return 2;
		}
	}
	static const char *const names[] = {"plain send + recv + ack", "keyed send + recv + ack",
					    "keyed send + recv + ack_done"};
	double med[3];
	for (int mode = PLAIN; mode <= KEYED_DONE; mode++) {
		double v[64];
		for (unsigned i = 0; i < repeats; i++)
			if ((v[i] = run((enum mode)mode, n)) < 0) {
				fprintf(stderr, "keyed_send: %s failed\n", names[mode]);
				return 1;
			}
		qsort(v, repeats, sizeof(v[0]), bench_cmp_double);
		med[mode] = v[repeats / 2];
		printf("%-30s %8.1f ns/msg (median of %u x %u; min %.1f, max %.1f)  %.2fx plain\n",
		       names[mode], med[mode], repeats, n, v[0], v[repeats - 1], med[mode] / med[PLAIN]);
	}
	return 0;
}

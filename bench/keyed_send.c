/* SPDX-License-Identifier: MIT */
/*
 * keyed_send: the price of idempotency keys. One thread, three queues: send + recv + ack of 64 B
 * with plain shmq_send, with shmq_send_keyed (a fresh 16-byte key per message), and with keyed
 * sends acked by shmq_ack_done. Each queue is warmed first (every table entry used once, so the
 * runs see a table in steady state, not page faults), then the three are timed in turn, round
 * after round, so a change in the machine's load hits all three alike. Prints ns per message
 * (median of the rounds) and the keyed / plain ratios, each the median of the rounds' ratios.
 *
 *   keyed_send [--messages N] [--repeats R] [--only plain|keyed|done]
 *       environment: ENTRIES=N (table entries, default 65536 = 8 MiB), WINDOW_MS=N (default 5);
 *       --only times one of the three (for a profiler), and prints no ratio
 *
 * The keys are all fresh, as in a real stream, and the window is short, so entries are recycled
 * as they expire: a keyed send pays its lookup and its claim in a table far larger than the
 * caches. The table is sized for the window (the live keys and evictions are printed): a full
 * table evicts, which is a different regime.
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
	KEYED_DONE,
	MODES
};

static const char *const names[MODES] = {"plain send + recv + ack", "keyed send + recv + ack",
					 "keyed send + recv + ack_done"};

struct bq {
	char name[64];
	shmq_t *q;
	char key[16]; /* a decimal counter: never reused, each send's key is a new one */
};

/* The next key: the counter plus one, in place (formatting one would cost more than a probe). */
static void next_key(char *key)
{
	for (int i = 15; i >= 0; i--) {
		if (key[i] != '9') {
			key[i]++;
			return;
		}
		key[i] = '0';
	}
}

/* `n` rounds of send + recv + ack in `mode`: 0, or -1 on error */
static int pass(struct bq *b, enum mode mode, unsigned n)
{
	char payload[64] = {0};
	struct shmq_msg m;
	for (unsigned i = 0; i < n; i++) {
		int r;
		if (mode == PLAIN) {
			r = shmq_send(b->q, payload, sizeof(payload), 0);
		} else {
			next_key(b->key);
			r = shmq_send_keyed(b->q, b->key, sizeof(b->key), payload,
					    sizeof(payload) - sizeof(b->key), 0, NULL);
		}
		if (r || shmq_recv(b->q, &m, 0))
			return -1;
		if ((mode == KEYED_DONE ? shmq_ack_done(b->q, &m) : shmq_ack(b->q, &m)))
			return -1;
	}
	return 0;
}

static void open_queue(struct bq *b, enum mode mode, uint32_t entries, uint32_t window_ms)
{
	snprintf(b->name, sizeof(b->name), "/shmq-bench-keyed-%d-%d", (int)getpid(), (int)mode);
	shmq_unlink(b->name);
	struct shmq_config c;
	shmq_config_init(&c);
	c.capacity = 1024;
	c.dedup_entries = entries;
	c.dedup_window_ms = window_ms;
	memset(b->key, '0', sizeof(b->key));
	int err = shmq_create(b->name, &c, &b->q);
	if (err)
		bench_die("keyed_send", "create", err);
	/* warm: every entry used once (keyed_done uses two per message), the pages faulted in */
	if (pass(b, mode, mode == PLAIN ? 100000 : 2 * entries) < 0)
		bench_die("keyed_send", "warm-up", -EIO);
}

int main(int argc, char **argv)
{
	unsigned n = 200000, repeats = 5;
	static const struct option opts[] = {
		{"messages", required_argument, NULL, 'n'},
		{"repeats", required_argument, NULL, 'r'},
		{"only", required_argument, NULL, 'o'},
		{NULL, 0, NULL, 0},
	};
	int o, only = -1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'n' && atoi(optarg) > 0)
			n = (unsigned)atoi(optarg);
		else if (o == 'r' && atoi(optarg) > 0 && atoi(optarg) <= 64)
			repeats = (unsigned)atoi(optarg);
		else if (o == 'o' &&
			 (!strcmp(optarg, "plain") || !strcmp(optarg, "keyed") || !strcmp(optarg, "done")))
			only = optarg[0] == 'p' ? PLAIN : optarg[0] == 'k' ? KEYED : KEYED_DONE;
		else {
			fprintf(stderr, "usage: keyed_send [--messages N] [--repeats R (1-64)] [--only "
					"plain|keyed|done]\n");
			return 2;
		}
	}
	uint32_t entries = getenv("ENTRIES") ? (uint32_t)atoi(getenv("ENTRIES")) : 1u << 16;
	uint32_t window_ms = getenv("WINDOW_MS") ? (uint32_t)atoi(getenv("WINDOW_MS")) : 5;
	struct bq q[MODES];
	if (only >= 0) {
		open_queue(&q[only], (enum mode)only, entries, window_ms);
		double t0 = bench_now_s();
		for (unsigned r = 0; r < repeats; r++)
			if (pass(&q[only], (enum mode)only, n) < 0)
				bench_die("keyed_send", names[only], -EIO);
		printf("%-30s %8.1f ns/msg (mean of %u x %u)\n", names[only],
		       (bench_now_s() - t0) * 1e9 / n / repeats, repeats, n);
		shmq_close(q[only].q);
		shmq_unlink(q[only].name);
		return 0;
	}
	for (int mode = 0; mode < MODES; mode++)
		open_queue(&q[mode], (enum mode)mode, entries, window_ms);
	struct shmq_stats before[MODES], after[MODES];
	for (int mode = 0; mode < MODES; mode++)
		shmq_stats(q[mode].q, &before[mode]);
	double ns[MODES][64], ratio[MODES][64];
	for (unsigned r = 0; r < repeats; r++) {
		for (int mode = 0; mode < MODES; mode++) {
			double t0 = bench_now_s();
			if (pass(&q[mode], (enum mode)mode, n) < 0) {
				fprintf(stderr, "keyed_send: %s failed\n", names[mode]);
				return 1;
			}
			ns[mode][r] = (bench_now_s() - t0) * 1e9 / n;
		}
		for (int mode = 0; mode < MODES; mode++)
			ratio[mode][r] = ns[mode][r] / ns[PLAIN][r];
	}
	printf("keyed_send: %u rounds of %u messages (64 B), table %u entries, window %u ms\n", repeats, n,
	       entries, window_ms);
	for (int mode = 0; mode < MODES; mode++) {
		shmq_stats(q[mode].q, &after[mode]);
		qsort(ns[mode], repeats, sizeof(double), bench_cmp_double);
		qsort(ratio[mode], repeats, sizeof(double), bench_cmp_double);
		printf("%-30s %8.1f ns/msg (min %.1f, max %.1f)  %.2fx plain", names[mode],
		       ns[mode][repeats / 2], ns[mode][0], ns[mode][repeats - 1], ratio[mode][repeats / 2]);
		if (mode != PLAIN)
			printf("  (%llu keys live at the end, %llu evicted)",
			       (unsigned long long)after[mode].dedup_live,
			       (unsigned long long)(after[mode].dedup_evicted - before[mode].dedup_evicted));
		printf("\n");
	}
	printf("ratio keyed / plain send + recv + ack: %.2fx (target <= 3x)\n", ratio[KEYED][repeats / 2]);
	for (int mode = 0; mode < MODES; mode++) {
		shmq_close(q[mode].q);
		shmq_unlink(q[mode].name);
	}
	return 0;
}

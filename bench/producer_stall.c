/* SPDX-License-Identifier: MIT */
/*
 * producer_stall: what a producer stopped between its claim and its publish holds back. First
 * deliveries of a lane go in ticket order, so such a producer (preempted mid-copy, stopped, or
 * holding a zero-copy reservation, as here) holds back the messages sent after it in its lane
 * until it publishes; other lanes are not held (docs/design.md, "What a message costs").
 *
 *   producer_stall [--hold-ms MS] [--messages N]
 *
 * For 1, 2 and 4 lanes (round-robin dispatch): reserve a slot, send N messages after it, poll
 * receives for MS milliseconds while the reservation is held, commit it, then receive the rest.
 * Prints how many were delivered while it was held and how long the first held-back one waited
 * after its send.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmq.h"
#include "standalone.h"

static const char *prog = "producer_stall";

static void run(unsigned lanes, unsigned hold_ms, unsigned n)
{
	char name[64];
	snprintf(name, sizeof(name), "/shmq-producer-stall-%d", (int)getpid());
	struct shmq_config cfg;
	shmq_config_init(&cfg);
	cfg.capacity = 1024;
	cfg.lanes = lanes;
	cfg.slot_size = 128;
	shmq_t *q;
	shmq_unlink(name);
	int r = shmq_create(name, &cfg, &q);
	if (r)
		bench_die(prog, "create", r);
	struct shmq_reservation res;
	if ((r = shmq_send_reserve(q, 8, &res, 0)))
		bench_die(prog, "reserve", r);
	double sent_at = bench_now_s();
	for (unsigned i = 0; i < n; i++)
		if ((r = shmq_send(q, &i, sizeof(i), 0)))
			bench_die(prog, "send", r);
	unsigned early = 0, late = 0;
	struct shmq_msg m;
	double end = sent_at + hold_ms / 1e3;
	while (bench_now_s() < end) {
		if ((r = shmq_recv(q, &m, 0)) == -EAGAIN)
			continue;
		if (r || (r = shmq_ack(q, &m)))
			bench_die(prog, "receive while held", r);
		early++;
	}
	memcpy(res.data, "reserved", 8);
	if ((r = shmq_send_commit(q, &res, 8)))
		bench_die(prog, "commit", r);
	double first_late = 0;
	while (early + late < n + 1) {
		if ((r = shmq_recv(q, &m, 1000)))
			bench_die(prog, "receive after commit", r);
		if (!late++)
			first_late = bench_now_s() - sent_at;
		if ((r = shmq_ack(q, &m)))
			bench_die(prog, "ack", r);
	}
	late--; /* the reserved message itself */
	printf("lanes %u: %u of %u messages sent after a reservation held %u ms were delivered while it was "
	       "held; %u waited for its commit (the first of them %.1f ms after its send)\n",
	       lanes, early, n, hold_ms, late, late ? first_late * 1e3 : 0.0);
	shmq_close(q);
	shmq_unlink(name);
}

int main(int argc, char **argv)
{
	unsigned hold_ms = 50, n = 64;
	static const struct option opts[] = {{"hold-ms", required_argument, 0, 'h'},
					     {"messages", required_argument, 0, 'n'},
					     {0, 0, 0, 0}};
	for (int c; (c = getopt_long(argc, argv, "h:n:", opts, NULL)) != -1;) {
		char *end;
		long v = strtol(optarg, &end, 10);
		if (*end || !*optarg || v < 1 || v > 1000000 || (c != 'h' && c != 'n')) {
			fprintf(stderr, "%s: bad value '%s' for -%c\n", prog, optarg, c);
			return 2;
		}
		if (c == 'h')
			hold_ms = (unsigned)v;
		else
			n = (unsigned)(v < 1000 ? v : 1000);
	}
	for (unsigned lanes = 1; lanes <= 4; lanes *= 2)
		run(lanes, hold_ms, n);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * worker.c: the consumer of `make demo-crash` (tools/demo/crash.sh). It takes up to BATCH messages
 * at a time, "works" on each for WORK_MS, acks it and says so; a message whose payload starts with
 * "POISON" makes it crash on the spot (SIGKILL to itself, while it holds that message's lease),
 * the way a bug in real message handling would. Exits 0 after IDLE_MS without a message.
 *
 *   usage: demo-worker NAME BATCH WORK_MS IDLE_MS
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int arg_num(const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned batch, work_ms, idle_ms;
	if (argc != 5 || arg_num(argv[2], 64, &batch) || batch == 0 || arg_num(argv[3], 60000, &work_ms) ||
	    arg_num(argv[4], 600000, &idle_ms)) {
		fprintf(stderr, "usage: demo-worker NAME BATCH(1-64) WORK_MS IDLE_MS\n");
		return 2;
	}
	shmq_t *q;
	int r = shmq_open(argv[1], &q);
	if (r) {
		fprintf(stderr, "demo-worker: %s: %s\n", argv[1], shmq_strerror(r));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	int pid = (int)getpid();
	struct shmq_msg m[64];
	int n;
	while ((n = shmq_recv_batch(q, m, batch, (int)idle_ms)) > 0) {
		printf("worker %d: took %d message%s:", pid, n, n == 1 ? "" : "s");
		for (int i = 0; i < n; i++)
			printf(" %.*s%s", (int)m[i].len, (const char *)m[i].data,
			       m[i].deliveries > 1 ? " (again)" : "");
		printf("\n");
		for (int i = 0; i < n; i++) {
			if (m[i].len >= 6 && !memcmp(m[i].data, "POISON", 6)) {
				printf("worker %d: %.*s, delivery %u: crashing while holding it\n", pid,
				       (int)m[i].len, (const char *)m[i].data, m[i].deliveries);
				raise(SIGKILL);
			}
			sleep_ms(work_ms);
			r = shmq_ack(q, &m[i]);
			printf("worker %d: done %.*s (delivery %u)%s\n", pid, (int)m[i].len,
			       (const char *)m[i].data, m[i].deliveries,
			       r ? ", but the lease was lost before the ack" : "");
		}
	}
	shmq_close(q);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * keyed.c: plain against keyed send + recv + ack (see keyed.h).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "lib/keyed.h"
#include "lib/proc.h"

int keyed_queue_create(const char *name, uint32_t capacity)
{
	struct shmq_config cfg;
	shmq_config_init(&cfg);
	cfg.capacity = capacity;
	cfg.slot_size = 128;
	cfg.dedup_entries = KEYED_ENTRIES;
	cfg.dedup_window_ms = KEYED_WINDOW_MS;
	shmq_t *q;
	shmq_unlink(name);
	int r = shmq_create(name, &cfg, &q);
	if (!r)
		shmq_close(q);
	return r;
}

/* n send + recv + ack, keyed (fresh keys from *next on) or plain: 0 or -errno */
static int pass(shmq_t *q, int keyed, uint64_t n, uint64_t *next)
{
	unsigned char msg[64], key[KEYED_KEY];
	uint64_t salt = (uint64_t)getpid();
	struct shmq_msg m;
	memset(msg, 0x5a, sizeof(msg));
	for (uint64_t i = 0; i < n; i++) {
		int r;
		if (keyed) {
			memcpy(key, next, 8);
			memcpy(key + 8, &salt, 8);
			++*next;
			r = shmq_send_keyed(q, key, sizeof(key), msg, sizeof(msg) - sizeof(key), 0, NULL);
		} else {
			r = shmq_send(q, msg, sizeof(msg), 0);
		}
		if (r)
			return r > 0 ? -EEXIST : r;
		if ((r = shmq_recv(q, &m, 0)) || (r = shmq_ack(q, &m)))
			return r;
	}
	return 0;
}

int keyed_measure(shmq_t *q, uint64_t n, double *plain_ns, double *keyed_ns)
{
	uint64_t chunk = n / KEYED_CHUNKS ? n / KEYED_CHUNKS : 1, next = 0, ns[2] = {0, 0};
	/* the warm-up: the plain path once, every dedup entry used twice, the pages faulted in */
	int r = pass(q, 0, chunk, &next);
	if (r || (r = pass(q, 1, 2 * (uint64_t)KEYED_ENTRIES, &next)))
		return r;
	for (int c = 0; c < 2 * KEYED_CHUNKS; c++) {
		uint64_t t0 = now_ns();
		if ((r = pass(q, c & 1, chunk, &next)))
			return r;
		ns[c & 1] += now_ns() - t0;
	}
	*plain_ns = (double)ns[0] / (double)(chunk * KEYED_CHUNKS);
	*keyed_ns = (double)ns[1] / (double)(chunk * KEYED_CHUNKS);
	return 0;
}

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
	cfg.dedup_entries = 1u << 16;
	cfg.dedup_window_ms = 20;
	shmq_t *q;
	shmq_unlink(name);
	int r = shmq_create(name, &cfg, &q);
	if (!r)
		shmq_close(q);
	return r;
}

int keyed_measure(shmq_t *q, uint64_t n, double *plain_ns, double *keyed_ns)
{
	unsigned char msg[64], key[KEYED_KEY];
	uint64_t chunk = n / KEYED_CHUNKS ? n / KEYED_CHUNKS : 1, salt = (uint64_t)getpid(), next = 0;
	uint64_t ns[2] = {0, 0};
	struct shmq_msg m;
	memset(msg, 0x5a, sizeof(msg));
	for (int c = 0; c < 2 * (KEYED_CHUNKS + 1); c++) {
		int keyed = c & 1, r;
		uint64_t t0 = now_ns();
		for (uint64_t i = 0; i < chunk; i++) {
			if (keyed) {
				memcpy(key, &next, 8);
				memcpy(key + 8, &salt, 8);
				next++;
				r = shmq_send_keyed(q, key, sizeof(key), msg, sizeof(msg) - sizeof(key), 0,
						    NULL);
			} else {
				r = shmq_send(q, msg, sizeof(msg), 0);
			}
			if (r)
				return r > 0 ? -EEXIST : r;
			if ((r = shmq_recv(q, &m, 0)) || (r = shmq_ack(q, &m)))
				return r;
		}
		if (c >= 2) /* the first pair is the warm-up */
			ns[keyed] += now_ns() - t0;
	}
	*plain_ns = (double)ns[0] / (double)(chunk * KEYED_CHUNKS);
	*keyed_ns = (double)ns[1] / (double)(chunk * KEYED_CHUNKS);
	return 0;
}

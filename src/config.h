/* SPDX-License-Identifier: MIT */
/* config.c: a queue's configuration: its defaults and every rule it must keep. */
#ifndef SHMQ_CONFIG_H
#define SHMQ_CONFIG_H

#include <stdint.h>

#include "layout.h"
#include "shmq.h"

#ifndef SHMQ_HIDDEN
#define SHMQ_HIDDEN __attribute__((visibility("hidden")))
#endif

#define SHMQ_LEASE_MAX_MS (7u * 24 * 3600 * 1000)
#define SHMQ_RETRY_MAX_MS (24u * 3600 * 1000)

typedef void (*shmq_hdr_report_fn)(void *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline int is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

/* lanes 0 reads as 1 (a config from before lanes existed) */
static inline uint32_t lanes_of(uint32_t lanes) { return lanes ? lanes : 1; }
static inline int lanes_ok(uint32_t lanes) { return lanes_of(lanes) <= SHMQ_LANES_MAX; }
/* each lane is a power-of-two ring of at least 2 slots */
static inline int capacity_ok(uint32_t v, uint32_t lanes)
{
	lanes = lanes_of(lanes);
	return lanes_ok(lanes) && v % lanes == 0 && is_pow2(v / lanes) && v / lanes >= 2 &&
	       v <= SHMQ_CAPACITY_MAX;
}
static inline int slot_size_ok(uint32_t v)
{
	return v >= SHMQ_SLOT_SIZE_MIN && v % SHMQ_CACHELINE == 0 && v <= SHMQ_SLOT_SIZE_MAX;
}

/* Every rule of a config, each broken one reported through fn (when not NULL). 0 or -EINVAL. */
SHMQ_HIDDEN int shmq_config_rules(const struct shmq_config *c, shmq_hdr_report_fn fn, void *ctx);

#endif

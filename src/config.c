/* SPDX-License-Identifier: MIT */
/* config.c: a queue's configuration: its defaults and every rule it must keep (at create, at
 * open against the header, and for a change of the settings a live queue may change). */
#include <errno.h>
#include <string.h>

#include "config.h"

void shmq_config_init(struct shmq_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->capacity = 1024;
	cfg->slot_size = 256;
	cfg->lease_ms = 30000;
	cfg->max_deliveries = 16;
	cfg->retry_base_ms = 100;
	cfg->retry_max_ms = 30000;
	cfg->mode = 0600;
	cfg->reclaim_interval_ms = 100;
	cfg->dedup_window_ms = 120000;
	cfg->lanes = 1;
	cfg->dispatch = SHMQ_DISPATCH_ROUND_ROBIN;
}

int shmq_config_rules(const struct shmq_config *c, shmq_hdr_report_fn fn, void *ctx)
{
	int err = 0;
#define BAD(...)                                                                                             \
	do {                                                                                                 \
		if (fn)                                                                                      \
			fn(ctx, __VA_ARGS__);                                                                \
		err = -EINVAL;                                                                               \
	} while (0)
	if (!lanes_ok(c->lanes))
		BAD("lanes %u is outside [1, %u]", c->lanes, SHMQ_LANES_MAX);
	else if (!capacity_ok(c->capacity, c->lanes) && lanes_of(c->lanes) == 1)
		BAD("capacity %u is not a power of two in [2, %u]", c->capacity, SHMQ_CAPACITY_MAX);
	else if (!capacity_ok(c->capacity, c->lanes))
		BAD("capacity %u is not %u lanes of a power of two >= 2 slots each (at most %u in all)",
		    c->capacity, c->lanes, SHMQ_CAPACITY_MAX);
	if (c->dispatch > SHMQ_DISPATCH_LEAST_LOADED)
		BAD("dispatch policy %u is not one of 0..%u", c->dispatch, SHMQ_DISPATCH_LEAST_LOADED);
	for (uint32_t i = 0; i < SHMQ_LANES_MAX; i++)
		if (c->weights[i] > SHMQ_WEIGHT_MAX || (c->weights[i] && i >= lanes_of(c->lanes)))
			BAD("weight %u of lane %u is %s", c->weights[i], i,
			    i >= lanes_of(c->lanes) ? "for a lane the queue does not have"
						    : "above the maximum");
	if (!slot_size_ok(c->slot_size))
		BAD("slot size %u is not a multiple of %u in [%u, %u]", c->slot_size, SHMQ_CACHELINE,
		    SHMQ_SLOT_SIZE_MIN, SHMQ_SLOT_SIZE_MAX);
	if (c->lease_ms < 1 || c->lease_ms > SHMQ_LEASE_MAX_MS)
		BAD("lease %u ms is outside [1, %u]", c->lease_ms, SHMQ_LEASE_MAX_MS);
	if (c->max_deliveries < 1 || c->max_deliveries > SHMQ_MAX_DELIVERIES_MAX)
		BAD("max deliveries %u is outside [1, %u]", c->max_deliveries, SHMQ_MAX_DELIVERIES_MAX);
	if (c->retry_base_ms > c->retry_max_ms || c->retry_max_ms > SHMQ_RETRY_MAX_MS)
		BAD("retry backoff %u..%u ms is not an increasing range within %u ms", c->retry_base_ms,
		    c->retry_max_ms, SHMQ_RETRY_MAX_MS);
	if (c->mode & ~0777u)
		BAD("mode %o has bits beyond 0777", (unsigned)c->mode);
	if (c->dlq_max > c->capacity)
		BAD("dead letters kept (%u) is above the capacity (%u)", c->dlq_max, c->capacity);
	if (c->reclaim_interval_ms > SHMQ_RECLAIM_INTERVAL_MAX)
		BAD("reclaim interval %u ms is above %u", c->reclaim_interval_ms, SHMQ_RECLAIM_INTERVAL_MAX);
	if (c->dedup_window_ms > SHMQ_LEASE_MAX_MS)
		BAD("dedup window %u ms is above %u", c->dedup_window_ms, SHMQ_LEASE_MAX_MS);
	if (c->dedup_entries && (!is_pow2(c->dedup_entries) || c->dedup_entries < DEDUP_PROBES ||
				 c->dedup_entries > SHMQ_DEDUP_ENTRIES_MAX))
		BAD("dedup entries %u is not a power of two in [%u, %u]", c->dedup_entries, DEDUP_PROBES,
		    SHMQ_DEDUP_ENTRIES_MAX);
	/* the whole segment must stay addressable and below what tmpfs can hold in practice */
	if ((uint64_t)c->capacity * c->slot_size > (1ULL << 40))
		BAD("capacity x slot size is above 1 TiB");
#undef BAD
	return err;
}

int shmq_config_validate(const struct shmq_config *c)
{
	return c ? shmq_config_rules(c, NULL, NULL) : -EINVAL;
}

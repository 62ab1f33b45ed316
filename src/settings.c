/* SPDX-License-Identifier: MIT */
/*
 * settings.c: the settings a live queue may change, like a RabbitMQ policy or an SQS
 * SetQueueAttributes: lease_ms, max_deliveries, retry_base_ms, retry_max_ms, reclaim_interval_ms
 * and dlq_max. They live in the header's `live` block under a generation (settings_gen), a
 * seqlock: odd while a writer writes, even and > 0 once a block is published (0: never changed,
 * the creation config holds).
 *
 * Writers take the queue's settings lock (an OFD lock on a byte of the segment, registry.c), so
 * there is one at a time; the kernel drops it when a writer dies, and a writer killed mid-block
 * leaves the generation odd: readers keep what they have, and the next writer writes a whole block
 * and publishes it. Readers (every handle, settings_check) never act on the block itself: they copy
 * it, check the generation did not move meanwhile, check the copy against the config rules, and
 * only then use it. A block that breaks a rule (a scribbled header) is ignored.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "config.h"
#include "fault.h"
#include "registry.h"
#include "settings.h"

/* The six settings of s into c. */
static void copy_settings(struct shmq_config *c, const struct shmq_config *s)
{
	c->lease_ms = s->lease_ms;
	c->max_deliveries = s->max_deliveries;
	c->retry_base_ms = s->retry_base_ms;
	c->retry_max_ms = s->retry_max_ms;
	c->reclaim_interval_ms = s->reclaim_interval_ms;
	c->dlq_max = s->dlq_max;
}

/* q's own config with the six live settings of s: what the rules are checked on. */
static void with_settings(const shmq_t *q, const struct shmq_config *s, struct shmq_config *c)
{
	shmq_config_init(c);
	c->capacity = q->capacity;
	c->slot_size = q->slot_size;
	c->lanes = q->lanes;
	c->dispatch = q->dispatch;
	memcpy(c->weights, q->weights, sizeof(c->weights));
	c->dedup_window_ms = q->dedup_window_ms;
	c->dedup_entries = q->dedup ? q->dedup_mask + 1 : 0;
	copy_settings(c, s);
}

/* A field of the live block of the header at base (8-byte aligned, as an image may be: not
 * through a struct shmq_hdr pointer, which wants 64) */
#define LIVE_LOAD(base, field)                                                                               \
	atomic_load_explicit((const _Atomic uint32_t *)((base) + offsetof(struct shmq_hdr, field)),          \
			     memory_order_relaxed)

uint32_t shmq_settings_read(const unsigned char *base, struct shmq_config *s)
{
	const _Atomic uint32_t *gen =
		(const _Atomic uint32_t *)(base + offsetof(struct shmq_hdr, settings_gen));
	for (int tries = 0; tries < 4; tries++) {
		/* acquire: pairs with the writer's release store of the even generation */
		uint32_t g = atomic_load_explicit(gen, memory_order_acquire);
		if (g == 0 || (g & 1))
			return g;
		s->lease_ms = LIVE_LOAD(base, live.lease_ms);
		s->max_deliveries = LIVE_LOAD(base, live.max_deliveries);
		s->retry_base_ms = LIVE_LOAD(base, live.retry_base_ms);
		s->retry_max_ms = LIVE_LOAD(base, live.retry_max_ms);
		s->reclaim_interval_ms = LIVE_LOAD(base, live.reclaim_interval_ms);
		s->dlq_max = LIVE_LOAD(base, live.dlq_max);
		/* the block's loads before the second look at the generation (seqlock read side) */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(gen, memory_order_relaxed) == g)
			return g;
	}
	return 1; /* writers kept coming: as if one were at it */
}

int shmq_settings_apply(const struct shmq_config *s, struct shmq_config *c)
{
	struct shmq_config t = *c;
	copy_settings(&t, s);
	if (shmq_config_rules(&t, NULL, NULL))
		return -EINVAL;
	*c = t;
	return 0;
}

void shmq_settings_refresh(shmq_t *q)
{
	struct shmq_config s, c;
	uint32_t g = shmq_settings_read((const unsigned char *)q->hdr, &s);
	/* never changed, being written (or its writer died mid-block): keep ours, and look again only
	 * once the generation moves. A block that breaks a rule is ignored for good. */
	if (g && !(g & 1)) {
		with_settings(q, &s, &c);
		if (!shmq_config_rules(&c, NULL, NULL)) {
			atomic_store_explicit(&q->lease_ms, c.lease_ms, memory_order_relaxed);
			atomic_store_explicit(&q->max_deliveries, c.max_deliveries, memory_order_relaxed);
			atomic_store_explicit(&q->retry_base_ms, c.retry_base_ms, memory_order_relaxed);
			atomic_store_explicit(&q->retry_max_ms, c.retry_max_ms, memory_order_relaxed);
			atomic_store_explicit(&q->reclaim_interval_ms, c.reclaim_interval_ms,
					      memory_order_relaxed);
			atomic_store_explicit(&q->dlq_max, c.dlq_max, memory_order_relaxed);
		}
	}
	atomic_store_explicit(&q->settings_gen, g, memory_order_relaxed);
}

int shmq_settings_update(shmq_t *q, const struct shmq_config *s)
{
	if (q && q->foreign)
		return -ECHILD;
	if (!q || !s)
		return -EINVAL;
	struct shmq_config c;
	with_settings(q, s, &c);
	int err = shmq_config_rules(&c, NULL, NULL);
	if (err)
		return err;
	if ((err = shmq_settings_lock(q, 1)))
		return err;
	struct shmq_hdr *h = q->hdr;
	uint32_t g = atomic_load_explicit(&h->settings_gen, memory_order_relaxed);
	/* odd: a writer died mid-block; we write a whole one and publish it */
	uint32_t odd = g | 1;
	atomic_store_explicit(&h->settings_gen, odd, memory_order_relaxed);
	/* the odd generation before any store to the block (seqlock write side) */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&h->live.lease_ms, c.lease_ms, memory_order_relaxed);
	atomic_store_explicit(&h->live.max_deliveries, c.max_deliveries, memory_order_relaxed);
	atomic_store_explicit(&h->live.retry_base_ms, c.retry_base_ms, memory_order_relaxed);
	SHMQ_FAULT("settings-mid-block");
	atomic_store_explicit(&h->live.retry_max_ms, c.retry_max_ms, memory_order_relaxed);
	atomic_store_explicit(&h->live.reclaim_interval_ms, c.reclaim_interval_ms, memory_order_relaxed);
	atomic_store_explicit(&h->live.dlq_max, c.dlq_max, memory_order_relaxed);
	/* release: publishes the block; pairs with the readers' acquire load of the generation. 0
	 * means "never changed": a wrapping generation skips it */
	atomic_store_explicit(&h->settings_gen, odd + 1 ? odd + 1 : 2, memory_order_release);
	shmq_settings_lock(q, 0);
	shmq_settings_refresh(q);
	return 0;
}

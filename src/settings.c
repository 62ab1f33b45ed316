/* SPDX-License-Identifier: MIT */
/*
 * settings.c: the settings a live queue may change, like a RabbitMQ policy or an SQS
 * SetQueueAttributes: lease_ms, max_deliveries, retry_base_ms, retry_max_ms, reclaim_interval_ms
 * and dlq_max. They live in two blocks of the header (`live`) under a generation (settings_gen): 0,
 * never changed (the creation config holds); else even, naming the valid block, (g / 2) % 2.
 *
 * Writers take the handle's mutex (our own threads) and the queue's settings lock (an OFD lock on
 * a byte of the segment, registry.c: other processes), so there is one at a time; the kernel drops
 * the lock when a writer dies. A writer writes the block that is not valid, then publishes it by
 * moving the generation on (release): a writer killed midway changes nothing, since the valid
 * block was never touched, and the next writer writes the other block whole. Readers (every
 * handle, settings_check; views and the checker) copy the valid block, check the generation did
 * not move meanwhile (a writer two generations on writes that block again), check the copy
 * against the config rules, and only then use it. A block that breaks a rule (a scribbled header)
 * is ignored.
 */
#include <errno.h>
#include <pthread.h>
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

/* q's config as its handle holds it (the settings it acts on now): what a change is checked on. */
static void handle_config(shmq_t *q, struct shmq_config *c)
{
	shmq_config_init(c);
	c->capacity = q->capacity;
	c->slot_size = q->slot_size;
	c->lanes = q->lanes;
	c->dispatch = q->dispatch;
	memcpy(c->weights, q->weights, sizeof(c->weights));
	c->dedup_window_ms = q->dedup_window_ms;
	c->dedup_entries = q->dedup ? q->dedup_mask + 1 : 0;
	c->lease_ms = atomic_load_explicit(&q->lease_ms, memory_order_relaxed);
	c->max_deliveries = atomic_load_explicit(&q->max_deliveries, memory_order_relaxed);
	c->retry_base_ms = atomic_load_explicit(&q->retry_base_ms, memory_order_relaxed);
	c->retry_max_ms = atomic_load_explicit(&q->retry_max_ms, memory_order_relaxed);
	c->reclaim_interval_ms = atomic_load_explicit(&q->reclaim_interval_ms, memory_order_relaxed);
	c->dlq_max = atomic_load_explicit(&q->dlq_max, memory_order_relaxed);
}

/* A field of the live block of the header at base (8-byte aligned, as an image may be: not
 * through a struct shmq_hdr pointer, which wants 64) */
#define LIVE_LOAD(base, field)                                                                               \
	atomic_load_explicit((const _Atomic uint32_t *)((base) + offsetof(struct shmq_hdr, field)),          \
			     memory_order_relaxed)

/* The valid block of the header at base into s's six settings fields: returns the generation
 * read, the block being valid only when it is even and not 0 (0: never changed; odd: none, a
 * scribble, or writers that kept coming). */
static uint32_t settings_read(const unsigned char *base, struct shmq_config *s)
{
	const _Atomic uint32_t *gen =
		(const _Atomic uint32_t *)(base + offsetof(struct shmq_hdr, settings_gen));
	for (int tries = 0; tries < 4; tries++) {
		/* acquire: pairs with the writer's release store of the generation */
		uint32_t g = atomic_load_explicit(gen, memory_order_acquire);
		if (g == 0 || (g & 1))
			return g;
		unsigned b = (g / 2) % 2; /* the valid block; writers write the other */
		s->lease_ms = LIVE_LOAD(base, live[b].lease_ms);
		s->max_deliveries = LIVE_LOAD(base, live[b].max_deliveries);
		s->retry_base_ms = LIVE_LOAD(base, live[b].retry_base_ms);
		s->retry_max_ms = LIVE_LOAD(base, live[b].retry_max_ms);
		s->reclaim_interval_ms = LIVE_LOAD(base, live[b].reclaim_interval_ms);
		s->dlq_max = LIVE_LOAD(base, live[b].dlq_max);
		/* the block's loads before the second look at the generation: a writer two
		 * generations on may be writing this block again (seqlock read side) */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(gen, memory_order_relaxed) == g)
			return g;
	}
	return 1; /* writers kept coming: as if none were valid now; looked at again next call */
}

/* c with the six settings of s, if the result keeps every config rule: 0, else -EINVAL and c
 * unchanged. */
static int settings_apply(const struct shmq_config *s, struct shmq_config *c)
{
	struct shmq_config t = *c;
	copy_settings(&t, s);
	if (shmq_config_rules(&t, NULL, NULL))
		return -EINVAL;
	*c = t;
	return 0;
}

uint32_t shmq_settings_overlay(const unsigned char *base, struct shmq_config *c)
{
	struct shmq_config s;
	uint32_t g = settings_read(base, &s);
	if (g && !(g & 1))
		settings_apply(&s, c); /* a block that breaks a rule leaves c as it is */
	return g;
}

void shmq_settings_refresh(shmq_t *q)
{
	struct shmq_config c;
	/* one refresher at a time: two could store their generations in the other order than their
	 * values, and leave an old block's values under a newer generation for good. A thread that
	 * finds another at it goes on with the values it has and looks again at its next call. */
	if (pthread_mutex_trylock(&q->settings_mu))
		return;
	handle_config(q, &c);
	/* no valid block (never changed, a scribble), or one that breaks a rule: c stays what the
	 * handle has, and the generation is looked at again only once it moves */
	uint32_t g = shmq_settings_overlay((const unsigned char *)q->hdr, &c);
	atomic_store_explicit(&q->lease_ms, c.lease_ms, memory_order_relaxed);
	atomic_store_explicit(&q->max_deliveries, c.max_deliveries, memory_order_relaxed);
	atomic_store_explicit(&q->retry_base_ms, c.retry_base_ms, memory_order_relaxed);
	atomic_store_explicit(&q->retry_max_ms, c.retry_max_ms, memory_order_relaxed);
	atomic_store_explicit(&q->reclaim_interval_ms, c.reclaim_interval_ms, memory_order_relaxed);
	atomic_store_explicit(&q->dlq_max, c.dlq_max, memory_order_relaxed);
	atomic_store_explicit(&q->settings_gen, g, memory_order_relaxed);
	pthread_mutex_unlock(&q->settings_mu);
}

int shmq_settings_update(shmq_t *q, const struct shmq_config *s)
{
	if (q && q->foreign)
		return -ECHILD;
	if (!q || !s)
		return -EINVAL;
	struct shmq_config c;
	handle_config(q, &c);
	int err = settings_apply(s, &c);
	if (err)
		return err;
	/* our own threads first (the OFD lock does not exclude them), then other processes */
	pthread_mutex_lock(&q->settings_mu);
	if ((err = shmq_settings_lock(q, 1))) {
		pthread_mutex_unlock(&q->settings_mu);
		return err;
	}
	struct shmq_hdr *h = q->hdr;
	/* even: the valid block is (g / 2) % 2, and we write the other; odd (a scribble) names none */
	uint32_t g = atomic_load_explicit(&h->settings_gen, memory_order_relaxed) & ~1u;
	unsigned b = (g / 2 + 1) % 2;
	atomic_store_explicit(&h->live[b].lease_ms, c.lease_ms, memory_order_relaxed);
	atomic_store_explicit(&h->live[b].max_deliveries, c.max_deliveries, memory_order_relaxed);
	atomic_store_explicit(&h->live[b].retry_base_ms, c.retry_base_ms, memory_order_relaxed);
	SHMQ_FAULT("settings-mid-block");
	atomic_store_explicit(&h->live[b].retry_max_ms, c.retry_max_ms, memory_order_relaxed);
	atomic_store_explicit(&h->live[b].reclaim_interval_ms, c.reclaim_interval_ms, memory_order_relaxed);
	atomic_store_explicit(&h->live[b].dlq_max, c.dlq_max, memory_order_relaxed);
	/* release: publishes the block written; pairs with the readers' acquire load of the
	 * generation. 0 means "never changed": a wrapping generation skips it */
	atomic_store_explicit(&h->settings_gen, g + 2 ? g + 2 : 2, memory_order_release);
	shmq_settings_lock(q, 0);
	pthread_mutex_unlock(&q->settings_mu);
	shmq_settings_refresh(q);
	return 0;
}

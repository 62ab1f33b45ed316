/* SPDX-License-Identifier: MIT */
/*
 * settings.c: the settings a live queue may change (lease, max deliveries, retry backoff, reclaim
 * interval, dead letters kept), shared through a generation in the header: written by
 * shmq_settings_update under a kernel lock, picked up by every handle, which checks them against
 * the config rules before it acts on them.
 */
#ifndef SHMQ_SETTINGS_H
#define SHMQ_SETTINGS_H

#include <stdatomic.h>

#include "handle.h"

/* c (a queue's config) with the settings published in the header at base, when a valid block is
 * and the result keeps every config rule (else c is left as it is). Returns the generation read:
 * 0, the settings never changed. */
SHMQ_HIDDEN uint32_t shmq_settings_overlay(const unsigned char *base, struct shmq_config *c);
/* Takes the header's settings into q if they changed and keep the rules (see settings.c). */
SHMQ_HIDDEN void shmq_settings_refresh(shmq_t *q);

/* Before a call that acts on the settings: one relaxed load of a header line receives read anyway
 * and a compare; the refresh only when another generation was published. */
static inline void settings_check(shmq_t *q)
{
	if (__builtin_expect(atomic_load_explicit(&q->hdr->settings_gen, memory_order_relaxed) !=
				     atomic_load_explicit(&q->settings_gen, memory_order_relaxed),
			     0))
		shmq_settings_refresh(q);
}

#endif

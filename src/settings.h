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

/* The live block of the header at base into s's six settings fields: returns the generation read,
 * the block being valid only when it is even and not 0 (0: never changed; odd: being written). */
SHMQ_HIDDEN uint32_t shmq_settings_read(const unsigned char *base, struct shmq_config *s);
/* c with the six settings of s, if the result keeps every config rule: 0, else -EINVAL and c
 * unchanged. */
SHMQ_HIDDEN int shmq_settings_apply(const struct shmq_config *s, struct shmq_config *c);
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

/* SPDX-License-Identifier: MIT */
/*
 * registry.c: every transport the harness knows, in table order. Each adapter defines its
 * peer_ops in its own file; the references are weak, so a tree where an adapter is missing still
 * links (its entry is NULL and the harness lists it as "not built").
 */
#include <string.h>

#include "peers/peer.h"

#define PEERS(X)                                                                                             \
	X(floor)                                                                                             \
	X(handoff)                                                                                           \
	X(spsc)                                                                                              \
	X(leased)                                                                                            \
	X(shmq)                                                                                              \
	X(pipe)                                                                                              \
	X(unix_stream)                                                                                       \
	X(unix_seqpacket)                                                                                    \
	X(posix_mq)                                                                                          \
	X(zmq)                                                                                               \
	X(boost)                                                                                             \
	X(iceoryx)                                                                                           \
	X(redis)                                                                                             \
	X(jetstream)

#define DECLARE(n) extern const struct peer_ops peer_##n __attribute__((weak));
PEERS(DECLARE)

#define ENTRY(n) &peer_##n,
const struct peer_ops *const peer_slots[] = {PEERS(ENTRY)};

#define NAME(n) #n,
const char *const peer_slot_names[] = {PEERS(NAME)};

const unsigned peer_count = sizeof(peer_slots) / sizeof(peer_slots[0]);

const struct peer_ops *peer_find(const char *name)
{
	for (unsigned i = 0; i < peer_count; i++)
		if (peer_slots[i] && !strcmp(peer_slots[i]->name, name))
			return peer_slots[i];
	return NULL;
}

/* SPDX-License-Identifier: MIT */
/*
 * fdwake.c: the wakers' side of the descriptors of event.c, below wait.c and registry.c: the
 * socket path of a participant, the datagrams a publish sends to armed waiters, and the removal
 * of a dead participant's socket file. See event.c for the protocol.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fault.h"
#include "fdwake.h"

#define FD_WORDS (SHMQ_MAX_PARTICIPANTS / 64)

/* The socket path of participant (part, epoch) of q. */
void shmq_fd_path(const shmq_t *q, uint32_t part, uint32_t epoch, struct sockaddr_un *a)
{
	/* FNV-1a over the name and the creation time: the queue's generation, not just its name */
	uint64_t h = 0xcbf29ce484222325ULL;
	for (const char *p = q->name; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	uint64_t c = q->created_ns;
	for (int i = 0; i < 8; i++, c >>= 8)
		h = (h ^ (c & 0xff)) * 0x100000001b3ULL;
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "/dev/shm/" SHMQ_FD_PREFIX "%016llx-%u-%08x",
		 (unsigned long long)h, part, epoch);
}

/* Sends participant i's socket a datagram. 1 if it will wake: sent, or its buffer is full (EAGAIN:
 * it is readable already); 0 if it is gone (ENOENT, ECONNREFUSED: a waiter killed while armed) or
 * we have no socket: the wake-up then goes to another waiter. */
static int send_to(shmq_t *q, uint32_t i)
{
	int tx = atomic_load_explicit(&q->ev_tx, memory_order_relaxed) - 1;
	if (tx < 0) {
		tx = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (tx < 0)
			return 1; /* the waiter's safety net covers it */
		int none = 0;
		if (!atomic_compare_exchange_strong_explicit(&q->ev_tx, &none, tx + 1, memory_order_relaxed,
							     memory_order_relaxed)) {
			close(tx);
			tx = none - 1;
		}
	}
	/* the record's current epoch: if it changed since the bit was set, the old file is gone or
	 * going, and a newcomer's socket gets one spurious datagram at most */
	uint64_t v = atomic_load_explicit(&part_at(q, i)->state, memory_order_relaxed);
	struct sockaddr_un a;
	shmq_fd_path(q, i, (uint32_t)ps_epoch(v), &a);
	char b = 0;
	return sendto(tx, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&a, sizeof(a)) == 1 ||
	       errno == EAGAIN;
}

unsigned shmq_fd_wake(shmq_t *q, unsigned n)
{
	unsigned woke = 0;
	for (uint32_t k = 0; k < FD_WORDS && woke < n; k++) {
		_Atomic uint64_t *word = &q->hdr->fd_waiters[k];
		uint64_t x = atomic_load_explicit(word, memory_order_relaxed);
		/* at most 64 rounds: each clears one bit of x */
		while (x && woke < n) {
			uint64_t b = x & -x;
			/* take the bit: of several wakers only one sends */
			uint64_t old = atomic_fetch_and_explicit(word, ~b, memory_order_relaxed);
			if (old & b) {
				SHMQ_FAULT("fd-wake-before-send"); /* the bit taken, no datagram */
				woke += (unsigned)send_to(q, k * 64 + (uint32_t)__builtin_ctzll(b));
			}
			x = old & ~b;
		}
	}
	return woke;
}

void shmq_fd_forget(shmq_t *q, uint32_t part, uint32_t epoch)
{
	struct sockaddr_un a;
	shmq_fd_path(q, part, epoch, &a);
	unlink(a.sun_path); /* ENOENT: it never had a descriptor */
}

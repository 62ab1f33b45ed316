/* SPDX-License-Identifier: MIT */
/* fdwake.c: what wakers and reclaim do for the descriptors of event.c. */
#ifndef SHMQ_FDWAKE_H
#define SHMQ_FDWAKE_H

#include <stdint.h>
#include <sys/un.h>

#include "handle.h"

/* Socket files in /dev/shm start with this: hidden, so listings of queues skip them. */
#define SHMQ_FD_PREFIX ".shmq-fd-"

/* The socket path of participant (part, epoch) of q. */
SHMQ_HIDDEN void shmq_fd_path(const shmq_t *q, uint32_t part, uint32_t epoch, struct sockaddr_un *a);
/* A waker's part (shmq_wake, for data_seq): takes up to n armed descriptor waiters' bits and
 * sends each a datagram. Returns how many it took. */
SHMQ_HIDDEN unsigned shmq_fd_wake(shmq_t *q, unsigned n);
/* Reclaim freed record part of epoch: removes that participant's socket file, if any. */
SHMQ_HIDDEN void shmq_fd_forget(shmq_t *q, uint32_t part, uint32_t epoch);

#endif

/* SPDX-License-Identifier: MIT */
/* event.c: the pollable descriptor (shmq_fd) and the multi-queue wait (shmq_wait_any). */
#ifndef SHMQ_EVENT_H
#define SHMQ_EVENT_H

#include "handle.h"

/* shmq_close: closes the descriptor; on the owner's handle also clears its bit, removes its file. */
SHMQ_HIDDEN void shmq_fd_close(shmq_t *q);

#endif

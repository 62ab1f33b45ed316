/* SPDX-License-Identifier: MIT */
/* dlq.c: the dead-letter queue's bound and the lanes' dead-letter hints. */
#ifndef SHMQ_DLQ_H
#define SHMQ_DLQ_H

#include "handle.h"

/* After n slots of lane l went dead: raises the lane's dead-letter hint */
SHMQ_HIDDEN void shmq_dlq_added(shmq_t *q, uint32_t l, unsigned n);
/* Drops the oldest dead letters beyond dlq_max (and beyond half a lane, with lanes), if the hints
 * say there are any, or if `seen` (dead slots a whole reclaim pass saw, 0: none) says the hints are
 * too low for a bound. Only then a pass over the whole ring. */
SHMQ_HIDDEN void shmq_dlq_enforce(shmq_t *q, uint64_t seen);

#endif

/* SPDX-License-Identifier: MIT */
/* registry.c: participant records, their OFD locks (liveness) and fork detection. */
#ifndef SHMQ_REGISTRY_H
#define SHMQ_REGISTRY_H

#include <stdint.h>

#include "handle.h"

/* Claims a record for q, whose fd is its segment's descriptor from shm_open: on success q->fd is
 * a new description of the same object that holds our lock, and the caller closes the old one.
 * lenient 0 takes only records free for longer than the reuse delay, 1 any free one; -EUSERS: none
 * (the caller may run a reclaim pass and ask again). */
SHMQ_HIDDEN int shmq_part_attach(shmq_t *q, int lenient);
/* Frees (or leaves to reclaim) q's record, drops its lock and closes q->fd. A foreign handle's
 * record and lock are its parent's: they are left alone. */
SHMQ_HIDDEN void shmq_part_detach(shmq_t *q);
/* Takes (on 1, waiting for a holder to finish or die) or drops the queue's settings lock: an OFD
 * lock on the byte after the participant records' locks. 0 or -errno. */
SHMQ_HIDDEN int shmq_settings_lock(shmq_t *q, int on);
/* The inode of this process's PID namespace, 0 if /proc cannot tell. */
SHMQ_HIDDEN uint64_t shmq_pid_ns(void);
/* 1 alive, 0 dead (its record may be reclaimed), for participant index i */
SHMQ_HIDDEN int shmq_part_alive(shmq_t *q, uint32_t i);
/* shmq_part_alive for the ring core's view (lane.h): ctx is the handle, owner = index + 1 */
SHMQ_HIDDEN int shmq_owner_alive(void *ctx, unsigned owner);
/* 1: record i is ALIVE in epoch `epoch` and its owner lives; 0: that participant is gone (its record
 * may have been freed and claimed again since) */
SHMQ_HIDDEN int shmq_part_alive_in(shmq_t *q, uint32_t i, uint64_t epoch);
/* 1: participant i's lock byte is held (alive), 0: not held, -1: cannot tell */
SHMQ_HIDDEN int shmq_lock_probe(int fd, uint32_t i);
SHMQ_HIDDEN int shmq_part_release(shmq_t *q, uint32_t i, uint64_t v);
/* Slots this handle holds LEASED (and, with writing_too, WRITING), counted from the slot words. */
SHMQ_HIDDEN uint32_t shmq_slots_held(shmq_t *q, int writing_too);
/* Key-hash queues: announces a change of the consumer set (bumps assign_gen). */
SHMQ_HIDDEN void shmq_assignment_changed(shmq_t *q);

#endif

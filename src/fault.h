/* SPDX-License-Identifier: MIT */
/* Fault injection, compiled only into test builds: a test arms a point, and the process kills
 * itself with SIGKILL when it reaches that point for the n-th time (fault.c). */
#ifndef SHMQ_FAULT_H
#define SHMQ_FAULT_H

#include <stdint.h>

#include "shmq.h"

#ifndef SHMQ_HIDDEN
#define SHMQ_HIDDEN __attribute__((visibility("hidden")))
#endif

#ifdef SHMQ_TEST
void shmq_fault_arm(const char *point, unsigned nth);
SHMQ_HIDDEN void shmq_fault_hit(const char *point);
/* sleepers the futex wake-ups of this process have woken so far (wait.c) */
uint64_t shmq_test_woken(void);
/* slot words this process's key-hash take-ups have read looking for leases (lanes.c) */
uint64_t shmq_test_kh_scanned(void);
/* shmq_wait_any takes its fallback, as on a kernel without futex_waitv (event.c) */
void shmq_test_no_futex_waitv(int on);
/* what makes q's descriptor readable now, without draining it: 1 a datagram, 2 its timer (event.c) */
int shmq_test_fd_pending(shmq_t *q);
/* armed descriptors' timers wait an hour instead of the safety net: only datagrams wake (event.c) */
void shmq_test_fd_no_safety_net(int on);
#define SHMQ_FAULT(p) shmq_fault_hit(p)
/* A hook: the next time a thread reaches point, it calls fn(arg) there (once). */
typedef void (*shmq_hook_fn)(void *arg);
void shmq_hook_arm(const char *point, shmq_hook_fn fn, void *arg);
SHMQ_HIDDEN void shmq_hook_hit(const char *point);
#define SHMQ_HOOK(p) shmq_hook_hit(p)
#else
#define SHMQ_FAULT(p) ((void)0)
#define SHMQ_HOOK(p) ((void)0)
#endif

#endif

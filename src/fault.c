/* SPDX-License-Identifier: MIT */
/* fault.c: fault-injection points for the crash tests, and hooks that let a test step in between
 * two steps of the library (to build a race by hand); empty outside test builds. */
#include "fault.h"

#ifdef SHMQ_TEST
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

static const char *armed;
static unsigned countdown;

void shmq_fault_arm(const char *point, unsigned nth)
{
	armed = point;
	countdown = nth ? nth : 1;
}

void shmq_fault_hit(const char *point)
{
	if (armed && !strcmp(armed, point) && --countdown == 0)
		raise(SIGKILL);
}

/* One hook at a time, armed before the threads that may reach it start; it fires once. */
static const char *hook_point;
static shmq_hook_fn hook_fn;
static void *hook_arg;
static _Atomic int hook_armed;

void shmq_hook_arm(const char *point, shmq_hook_fn fn, void *arg)
{
	hook_point = point;
	hook_fn = fn;
	hook_arg = arg;
	/* release: pairs with the acquire exchange below, so the fields come with the flag */
	atomic_store_explicit(&hook_armed, fn != NULL, memory_order_release);
}

void shmq_hook_hit(const char *point)
{
	if (!atomic_load_explicit(&hook_armed, memory_order_relaxed) || strcmp(hook_point, point))
		return;
	/* disarmed before it runs: the hook may call into the library, and reach its point again */
	if (atomic_exchange_explicit(&hook_armed, 0, memory_order_acquire))
		hook_fn(hook_arg);
}
#else
typedef int shmq_fault_unused; /* ISO C wants a translation unit to declare something */
#endif

/* SPDX-License-Identifier: MIT */
/* fault.c: fault-injection points for the crash tests; empty outside test builds. */
#include "internal.h"

#ifdef SHMQ_TEST
#include <signal.h>
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
#else
typedef int shmq_fault_unused; /* ISO C wants a translation unit to declare something */
#endif

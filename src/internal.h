/* SPDX-License-Identifier: MIT */
/* Every private header of the library, for tests and the fuzzer, which reach into several modules.
 * The library's own .c files include only the headers of the modules they use (docs/design.md,
 * "Source layout"). */
#ifndef SHMQ_INTERNAL_H
#define SHMQ_INTERNAL_H

#include "clock.h"
#include "dlq.h"
#include "event.h"
#include "fault.h"
#include "fdwake.h"
#include "handle.h"
#include "lane.h"
#include "lanes.h"
#include "layout.h"
#include "prefetch.h"
#include "reclaim.h"
#include "redeliver.h"
#include "registry.h"
#include "ring.h"
#include "segment.h"
#include "slot.h"
#include "wait.h"

#endif

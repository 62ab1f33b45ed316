/* SPDX-License-Identifier: MIT */
/*
 * crash_storm.h: one transport through a consumer-kill storm, for the crash bench (bench/crash.c).
 *
 * One producer process sends `count` numbered messages while the consumer process is SIGKILLed
 * at random intervals and replaced; then one last consumer runs unmolested until nothing more
 * arrives. Every delivery is counted per sequence number in shared memory, so what comes out is
 * how many messages never arrived, how many arrived twice (and whether those were the ones a
 * killed consumer held), and whether the transport stopped moving altogether.
 */
#ifndef SHMQ_BENCH_CRASH_STORM_H
#define SHMQ_BENCH_CRASH_STORM_H

#include <stdint.h>

#include "peers/peer.h"

#define CRASH_MSG_SIZE 64 /* bytes per message: the sequence number, then a pattern derived from it */

struct crash_config {
	uint64_t count;		 /* messages */
	unsigned kill_min_ms;	 /* a consumer lives this long after it attached ... */
	unsigned kill_max_ms;	 /* ... to this long (uniform), then SIGKILL */
	unsigned work_us;	 /* a consumer "processes" each message this long between count and ack */
	unsigned storm_limit_ms; /* the storm stops after this long even if not all arrived */
	unsigned quiet_ms;	 /* this long with no delivery: stalled (storm) or finished (final run) */
	unsigned drain_ms;	 /* storm: all sent and nothing new for this long: the rest is lost */
	unsigned final_limit_ms; /* the final consumer runs at most this long */
	uint64_t seed;		 /* kill intervals */
};

/* What one storm found. Filled in by the process that ran it (a child of the bench), in shared
 * memory, before it destroys the channel and stops the daemon: `finished` says it got that far. */
struct crash_result {
	int finished;
	int wedged;		 /* stopped moving with messages outstanding */
	int error;		 /* could not run (start, create, attach, send failed): see note */
	char note[256];		 /* why wedged / error, or what else is worth knowing */
	unsigned kills;		 /* consumers SIGKILLed */
	unsigned kills_holding;	 /* ... while between recv and the end of ack */
	unsigned consumer_exits; /* consumers that exited by themselves (attach or recv failed) */
	uint64_t sent;		 /* messages the producer's send() accepted */
	uint64_t delivered;	 /* distinct messages seen at least once */
	uint64_t lost;		 /* never seen (count - delivered) */
	uint64_t dup;		 /* seen more than once */
	uint64_t dup_held;	 /* ... of which a killed consumer held at its death */
	uint64_t extra;		 /* deliveries beyond the first, summed */
	uint64_t corrupt;	 /* deliveries with a wrong length, sequence or payload */
	uint64_t ack_errors;	 /* ack() returned an error */
	double storm_s;		 /* length of the storm */
	double storm_rate;	 /* distinct messages per second, storm start to its last first delivery */
	double recover_ms;	 /* last kill -> last message delivered for the first time (>= 0) */
	double settle_ms;	 /* last kill -> last delivery of any message, redeliveries included */
	double total_s;		 /* storm + final run + probes */
	char end[32];		 /* why the storm ended */
};

/* Runs the whole storm for ops (start, create, producer, consumers, final run, destroy, stop) in
 * the calling process, which must be one it is fine to leave children of: call it in a child.
 * tag names the channel. Fills *r (shared memory) as described above. */
void crash_storm_run(const struct peer_ops *ops, const struct crash_config *cfg, const char *tag,
		     struct crash_result *r);

#endif

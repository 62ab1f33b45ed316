/* SPDX-License-Identifier: MIT */
/*
 * stat.c: loading a snapshot for `shmq stat` and `shmq list`, and the one table of figures the
 * three output formats share (JSON key, text label, Prometheus metric).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "stat.h"

#define F(field) offsetof(struct shmq_stats, field)

const struct stat_field stat_depths[] = {
	{"ready", "ready", "shmq_slots", "state=\"ready\"",
	 "Slots by state: ready (sent, never delivered), inflight (leased), delayed (waiting for "
	 "redelivery), dead (dead-lettered), writing (claimed by a producer), free",
	 F(ready)},
	{"inflight", "in flight", "shmq_slots", "state=\"inflight\"", NULL, F(inflight)},
	{"delayed", "delayed", "shmq_slots", "state=\"delayed\"", NULL, F(delayed)},
	{"dead", "dead-lettered", "shmq_slots", "state=\"dead\"", NULL, F(dead)},
	{"writing", "being written", "shmq_slots", "state=\"writing\"", NULL, F(writing)},
	{"free", "free", "shmq_slots", "state=\"free\"", NULL, F(free_slots)},
};

const struct stat_field stat_totals[] = {
	{"sent", "sent", "shmq_sent_total", NULL, "Messages sent", F(sent)},
	{"received", "received", "shmq_received_total", NULL, "Deliveries, first and repeated", F(received)},
	{"acked", "acked", "shmq_acked_total", NULL, "Deliveries acked", F(acked)},
	{"nacked", "nacked", "shmq_nacked_total", NULL, "Deliveries nacked", F(nacked)},
	{"retried", "retried", "shmq_retried_total", NULL,
	 "Messages requeued for a later delivery: nack, lease expiry or dead owner", F(retried)},
	{"redelivered", "redelivered", "shmq_redelivered_total", NULL, "Deliveries after the first",
	 F(redelivered)},
	{"extended", "extended", "shmq_extended_total", NULL, "Leases extended", F(extended)},
	{"stale_acks", "stale acks", "shmq_stale_acks_total", NULL,
	 "Acks, nacks and extends refused because the lease was lost", F(stale)},
	{"reclaimed_expired", "reclaimed (expired)", "shmq_reclaimed_total", "cause=\"expired\"",
	 "Slots taken back by reclaim passes: leases that expired, leases of dead owners, writes a dead "
	 "producer never published",
	 F(reclaimed_expired)},
	{"reclaimed_dead_owner", "reclaimed (dead owner)", "shmq_reclaimed_total", "cause=\"dead_owner\"",
	 NULL, F(reclaimed_dead_owner)},
	{"retired_writes", "retired writes", "shmq_reclaimed_total", "cause=\"retired_write\"", NULL,
	 F(retired_writes)},
	{"dead_lettered", "dead-lettered", "shmq_dead_lettered_total", NULL, "Messages dead-lettered",
	 F(dead_lettered)},
	{"rejected", "rejected", "shmq_rejected_total", NULL, "Deliveries rejected to the dead-letter queue",
	 F(rejected)},
	{"redriven", "redriven", "shmq_redriven_total", NULL, "Dead letters put back into the queue",
	 F(redriven)},
	{"purged", "purged", "shmq_purged_total", NULL, "Dead letters deleted", F(purged)},
	{"dead_letters_dropped", "dead letters dropped", "shmq_dead_letters_dropped_total", NULL,
	 "Oldest dead letters dropped to keep at most the configured number", F(dlq_dropped)},
	{"producer_waits", "producer waits", "shmq_waits_total", "side=\"producer\"",
	 "Blocking waits: producers on a full queue, consumers on an empty one", F(producer_waits)},
	{"consumer_waits", "consumer waits", "shmq_waits_total", "side=\"consumer\"", NULL,
	 F(consumer_waits)},
	{"reclaim_passes", "reclaim passes", "shmq_reclaim_passes_total", NULL,
	 "Reclaim passes run by receivers, watchdogs and callers", F(reclaim_passes)},
	{"duplicates", "duplicate sends", "shmq_duplicates_total", NULL,
	 "Keyed sends not enqueued: the key was sent within the dedup window", F(duplicates)},
	{"dedup_evicted", "dedup keys evicted", "shmq_dedup_evicted_total", NULL,
	 "Live idempotency keys evicted before their window ended (dedup table full)", F(dedup_evicted)},
	{"done_marked", "done records", "shmq_done_marked_total", NULL,
	 "Work-done records written by consumers", F(done_marked)},
	{"done_hits", "done checks hit", "shmq_done_hits_total", NULL,
	 "Done checks that found a redelivered message's work already done", F(done_hits)},
	{"stolen", "stolen", "shmq_stolen_total", NULL,
	 "First deliveries a consumer took from a lane not assigned to it", F(stolen)},
	{"prefetch_waits", "prefetch waits", "shmq_prefetch_waits_total", NULL,
	 "Receives that found their consumer at its prefetch limit", F(prefetch_waits)},
};

const size_t stat_ndepths = sizeof(stat_depths) / sizeof(stat_depths[0]);
const size_t stat_ntotals = sizeof(stat_totals) / sizeof(stat_totals[0]);

int stat_report_load(shmq_view_t *v, const char *name, struct stat_report *r)
{
	r->name = cli_bare_name(name);
	r->nparts = 0;
	memset(&r->owner, 0, sizeof(r->owner));
	/* room for every record: a snapshot never reports more than SHMQ_MAX_PARTICIPANTS */
	r->parts = calloc(SHMQ_MAX_PARTICIPANTS, sizeof(*r->parts));
	if (!r->parts)
		return -ENOMEM;
	int n = shmq_view_snapshot(v, &r->s, r->parts, SHMQ_MAX_PARTICIPANTS);
	if (n < 0) {
		stat_report_free(r);
		return n;
	}
	r->nparts = n < SHMQ_MAX_PARTICIPANTS ? (unsigned)n : SHMQ_MAX_PARTICIPANTS;
	return 0;
}

void stat_report_free(struct stat_report *r)
{
	free(r->parts);
	r->parts = NULL;
	r->nparts = 0;
}

void stat_human_bytes(char *buf, size_t sz, uint64_t bytes)
{
	static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
	if (bytes < 1024) {
		snprintf(buf, sz, "%llu bytes", (unsigned long long)bytes);
		return;
	}
	double v = (double)bytes;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	snprintf(buf, sz, "%.1f %s", v, units[u]);
}

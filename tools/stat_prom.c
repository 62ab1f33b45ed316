/* SPDX-License-Identifier: MIT */
/*
 * stat_prom.c: `shmq stat --prometheus` and `shmq exporter`: snapshots of one or more queues in
 * one Prometheus text exposition (format version 0.0.4), for a node exporter's textfile
 * collector or a scrape. Every family is written once, its HELP and TYPE first, then its
 * samples for every queue (label queue="NAME"), so that the families of several queues are never
 * split or repeated. Ages are in seconds and sizes in bytes (Prometheus base units); the totals
 * are counters (_total), everything else gauges. Per-participant series are labelled by record
 * index only: a pid label would start a new series with every short-lived process.
 */
#include <stdio.h>
#include <string.h>

#include "stat.h"

/* The reports of one exposition and where it goes. */
struct prom {
	FILE *f;
	const struct stat_report *r;
	size_t n;
};

/* A label value with \, " and newline escaped, as the format requires. */
static void put_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void family(const struct prom *o, const char *metric, const char *type, const char *help)
{
	fprintf(o->f, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
}

/* metric{queue="NAME"[,extra]} */
static void sample_start(FILE *f, const struct stat_report *r, const char *metric, const char *extra)
{
	fprintf(f, "%s{queue=\"", metric);
	put_label_value(f, r->name);
	fprintf(f, "\"%s%s}", extra ? "," : "", extra ? extra : "");
}

/* ms: v is milliseconds, written as seconds, exactly (1520 -> 1.520) */
static void sample(FILE *f, const struct stat_report *r, const char *metric, const char *extra, uint64_t v,
		   int ms)
{
	sample_start(f, r, metric, extra);
	if (ms)
		fprintf(f, " %llu.%03llu\n", (unsigned long long)(v / 1000), (unsigned long long)(v % 1000));
	else
		fprintf(f, " %llu\n", (unsigned long long)v);
}

/* The one-sample-per-queue gauges, in the order they are written. */
enum queue_gauge {
	G_CAPACITY,
	G_SLOT_SIZE,
	G_MAX_PAYLOAD,
	G_SEGMENT_SIZE,
	G_LEASE,
	G_MAX_DELIVERIES,
	G_DLQ_MAX,
	G_OLDEST_READY,
	G_LANES,
	G_LANE_CONSUMERS,
	G_NEXT_ID,
	G_CONSISTENT,
};

static const struct {
	const char *metric, *help;
	int ms;
} queue_gauges[] = {
	[G_CAPACITY] = {"shmq_capacity_slots", "Slots in the ring", 0},
	[G_SLOT_SIZE] = {"shmq_slot_size_bytes", "Bytes per slot, shmq's slot header included", 0},
	[G_MAX_PAYLOAD] = {"shmq_max_payload_bytes", "Largest payload a send accepts", 0},
	[G_SEGMENT_SIZE] = {"shmq_segment_size_bytes", "Size of the shared-memory segment", 0},
	[G_LEASE] = {"shmq_lease_seconds", "How long a delivery stays leased to its receiver", 1},
	[G_MAX_DELIVERIES] = {"shmq_max_deliveries", "Deliveries before a message is dead-lettered", 0},
	[G_DLQ_MAX] = {"shmq_dead_letters_max", "Dead letters kept; beyond it the oldest is dropped", 0},
	[G_OLDEST_READY] = {"shmq_oldest_ready_age_seconds",
			    "Age of the oldest message not yet delivered (0: none)", 1},
	[G_LANES] = {"shmq_lanes", "Lanes (sub-rings) of the queue", 0},
	[G_LANE_CONSUMERS] = {"shmq_lane_consumers", "Active consumers the lanes are shared out among", 0},
	[G_NEXT_ID] = {"shmq_next_message_id", "Id the next message sent will get", 0},
	[G_CONSISTENT] = {"shmq_snapshot_consistent", "1 if nothing moved while the figures were read", 0},
};

static uint64_t queue_gauge_value(const struct stat_report *r, enum queue_gauge g)
{
	const struct shmq_snapshot *s = &r->s;
	switch (g) {
	case G_CAPACITY:
		return s->stats.config.capacity;
	case G_SLOT_SIZE:
		return s->stats.config.slot_size;
	case G_MAX_PAYLOAD:
		return s->stats.max_payload;
	case G_SEGMENT_SIZE:
		return s->stats.segment_bytes;
	case G_LEASE:
		return s->stats.config.lease_ms;
	case G_MAX_DELIVERIES:
		return s->stats.config.max_deliveries;
	case G_DLQ_MAX:
		return s->stats.dlq_max;
	case G_OLDEST_READY:
		return s->oldest_ready_age_ms;
	case G_LANES:
		return s->lanes;
	case G_LANE_CONSUMERS:
		return s->consumers;
	case G_NEXT_ID:
		return s->stats.next_id;
	case G_CONSISTENT:
		return s->consistent;
	}
	return 0;
}

/* the gauges first to last, inclusive */
static void queue_gauge_range(const struct prom *o, enum queue_gauge first, enum queue_gauge last)
{
	for (unsigned g = first; g <= last; g++) {
		family(o, queue_gauges[g].metric, "gauge", queue_gauges[g].help);
		for (size_t q = 0; q < o->n; q++)
			sample(o->f, &o->r[q], queue_gauges[g].metric, NULL, queue_gauge_value(&o->r[q], g),
			       queue_gauges[g].ms);
	}
}

/* A table of stat.c: a family per run of fields sharing a metric, each queue's samples in it. */
static void table(const struct prom *o, const struct stat_field *f, size_t n, const char *type)
{
	for (size_t i = 0, end; i < n; i = end) {
		for (end = i + 1; end < n && !strcmp(f[end].metric, f[i].metric); end++)
			;
		family(o, f[i].metric, type, f[i].help);
		for (size_t q = 0; q < o->n; q++)
			for (size_t k = i; k < end; k++)
				sample(o->f, &o->r[q], f[k].metric, f[k].mlabel,
				       stat_value(&o->r[q].s.stats, &f[k]), 0);
	}
}

/* An info-style series: the owner and mode as labels, value 1 (join on it, or alert on a mode). */
static void owner_info(const struct prom *o)
{
	int any = 0;
	for (size_t q = 0; q < o->n; q++) {
		const struct cli_owner *w = &o->r[q].owner;
		char user[64], group[64];
		if (!w->known)
			continue;
		if (!any++)
			family(o, "shmq_segment_owner_info", "gauge",
			       "Owner, group and permission bits of the queue's shared-memory object (value "
			       "always "
			       "1)");
		cli_user_name(user, sizeof(user), w->uid);
		cli_group_name(group, sizeof(group), w->gid);
		/* the names need escaping: not a preformatted label string for sample() */
		fprintf(o->f, "shmq_segment_owner_info{queue=\"");
		put_label_value(o->f, o->r[q].name);
		fprintf(o->f, "\",uid=\"%u\",user=\"", (unsigned)w->uid);
		put_label_value(o->f, user);
		fprintf(o->f, "\",gid=\"%u\",group=\"", (unsigned)w->gid);
		put_label_value(o->f, group);
		fprintf(o->f, "\",mode=\"%04o\"} 1\n", (unsigned)w->mode);
	}
}

static void participants(const struct prom *o)
{
	family(o, "shmq_participants", "gauge",
	       "Participant records in use, by whether their process is alive");
	for (size_t q = 0; q < o->n; q++) {
		sample(o->f, &o->r[q], "shmq_participants", "state=\"alive\"", o->r[q].s.stats.participants,
		       0);
		sample(o->f, &o->r[q], "shmq_participants", "state=\"dead\"", o->r[q].s.dead_participants, 0);
	}
}

/* Per-record gauges and counters, labelled index="N": the record's slot in the queue's registry,
 * which the next process to attach reuses. So the series are as many as the records ever in use
 * at once, whatever the turnover of processes; a reused record's counters carry on from its
 * previous owner's. */
static void per_participant(const struct prom *o)
{
	static const struct {
		const char *metric, *type, *help;
	} fam[] = {
		{"shmq_participant_alive", "gauge",
		 "1 if the process holding the participant record is alive, 0 if it is gone"},
		{"shmq_participant_leases", "gauge", "Messages the participant holds leased"},
		{"shmq_participant_writing", "gauge", "Slots the participant has claimed and not published"},
		{"shmq_participant_idle_seconds", "gauge",
		 "Time since the participant's last recorded activity"},
		{"shmq_participant_sent_total", "counter", "Messages sent through the participant record"},
		{"shmq_participant_received_total", "counter",
		 "Deliveries received through the participant record"},
		{"shmq_participant_acked_total", "counter",
		 "Deliveries acked through the participant record"},
	};
	int any = 0;
	for (size_t q = 0; q < o->n; q++)
		any |= o->r[q].nparts > 0;
	if (!any)
		return;
	for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
		family(o, fam[k].metric, fam[k].type, fam[k].help);
		for (size_t q = 0; q < o->n; q++) {
			const struct stat_report *r = &o->r[q];
			for (unsigned i = 0; i < r->nparts; i++) {
				const struct shmq_participant_info *p = &r->parts[i];
				char labels[32];
				snprintf(labels, sizeof(labels), "index=\"%u\"", p->index);
				uint64_t v[] = {p->alive > 0, p->leases,
						p->writing,   stat_ago_ms(r->s.now_ms, p->last_active_ms),
						p->sent,      p->received,
						p->acked};
				sample(o->f, r, fam[k].metric, labels, v[k], k == 3);
			}
		}
	}
}

/* Per-lane gauges, labelled lane="N" (one lane on a queue without lanes). */
static void per_lane(const struct prom *o)
{
	for (int k = 0; k < 2; k++) {
		const char *metric = k ? "shmq_lane_inflight" : "shmq_lane_ready";
		family(o, metric, "gauge",
		       k ? "Messages of the lane leased to a receiver"
			 : "Messages of the lane sent, never delivered");
		for (size_t q = 0; q < o->n; q++) {
			const struct shmq_snapshot *s = &o->r[q].s;
			for (uint32_t l = 0; l < s->lanes && l < SHMQ_LANES_MAX; l++) {
				char labels[32];
				snprintf(labels, sizeof(labels), "lane=\"%u\"", l);
				sample(o->f, &o->r[q], metric, labels,
				       k ? s->lane[l].inflight : s->lane[l].ready, 0);
			}
		}
	}
}

void stat_print_prom(FILE *f, const struct stat_report *r, size_t n)
{
	const struct prom o = {f, r, n};
	if (!n)
		return; /* an empty exposition is valid: no family without a sample */
	queue_gauge_range(&o, G_CAPACITY, G_DLQ_MAX);
	owner_info(&o);
	table(&o, stat_depths, stat_ndepths, "gauge");
	queue_gauge_range(&o, G_OLDEST_READY, G_LANE_CONSUMERS);
	per_lane(&o);
	participants(&o);
	per_participant(&o);
	table(&o, stat_totals, stat_ntotals, "counter");
	queue_gauge_range(&o, G_NEXT_ID, G_CONSISTENT);
}

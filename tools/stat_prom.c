/* SPDX-License-Identifier: MIT */
/*
 * stat_prom.c: `shmq stat NAME --prometheus`: a snapshot in the Prometheus text exposition
 * format (version 0.0.4), for a node exporter's textfile collector or a scrape job. Every sample
 * carries queue="NAME"; ages are in seconds and sizes in bytes (Prometheus base units); the
 * totals are counters (_total), everything else gauges. Each family's samples are adjacent,
 * under one HELP and one TYPE line.
 */
#include <stdio.h>
#include <string.h>

#include "stat.h"

/* A label value with \, " and newline escaped, as the format requires. */
static void put_label_value(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			printf("\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", stdout);
		else
			putchar(*s);
	}
}

static void family(const char *metric, const char *type, const char *help)
{
	printf("# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
}

/* metric{queue="NAME"[,extra]} */
static void sample_start(const struct stat_report *r, const char *metric, const char *extra)
{
	printf("%s{queue=\"", metric);
	put_label_value(r->name);
	printf("\"%s%s}", extra ? "," : "", extra ? extra : "");
}

static void sample(const struct stat_report *r, const char *metric, const char *extra, uint64_t v)
{
	sample_start(r, metric, extra);
	printf(" %llu\n", (unsigned long long)v);
}

/* milliseconds as seconds, exactly: 1520 -> 1.520 */
static void sample_ms(const struct stat_report *r, const char *metric, const char *extra, uint64_t ms)
{
	sample_start(r, metric, extra);
	printf(" %llu.%03llu\n", (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000));
}

static void gauge(const struct stat_report *r, const char *metric, const char *help, uint64_t v)
{
	family(metric, "gauge", help);
	sample(r, metric, NULL, v);
}

static void gauge_ms(const struct stat_report *r, const char *metric, const char *help, uint64_t ms)
{
	family(metric, "gauge", help);
	sample_ms(r, metric, NULL, ms);
}

static void table(const struct stat_report *r, const struct stat_field *f, size_t n, const char *type)
{
	for (size_t i = 0; i < n; i++) {
		if (!i || strcmp(f[i].metric, f[i - 1].metric))
			family(f[i].metric, type, f[i].help);
		sample(r, f[i].metric, f[i].mlabel, stat_value(&r->s.stats, &f[i]));
	}
}

static void config(const struct stat_report *r)
{
	const struct shmq_stats *st = &r->s.stats;
	const struct shmq_config *c = &st->config;
	gauge(r, "shmq_capacity_slots", "Slots in the ring", c->capacity);
	gauge(r, "shmq_slot_size_bytes", "Bytes per slot, shmq's slot header included", c->slot_size);
	gauge(r, "shmq_max_payload_bytes", "Largest payload a send accepts", st->max_payload);
	gauge(r, "shmq_segment_size_bytes", "Size of the shared-memory segment", st->segment_bytes);
	gauge_ms(r, "shmq_lease_seconds", "How long a delivery stays leased to its receiver", c->lease_ms);
	gauge(r, "shmq_max_deliveries", "Deliveries before a message is dead-lettered", c->max_deliveries);
	gauge(r, "shmq_dead_letters_max", "Dead letters kept; beyond it the oldest is dropped", st->dlq_max);
}

/* An info-style series: the owner and mode as labels, value 1 (join on it, or alert on a mode). */
static void owner_info(const struct stat_report *r)
{
	const struct cli_owner *o = &r->owner;
	char user[64], group[64];
	if (!o->known)
		return;
	family("shmq_segment_owner_info", "gauge",
	       "Owner, group and permission bits of the queue's shared-memory object (value always 1)");
	cli_user_name(user, sizeof(user), o->uid);
	cli_group_name(group, sizeof(group), o->gid);
	/* the names need escaping: not a preformatted label string for sample() */
	printf("shmq_segment_owner_info{queue=\"");
	put_label_value(r->name);
	printf("\",uid=\"%u\",user=\"", (unsigned)o->uid);
	put_label_value(user);
	printf("\",gid=\"%u\",group=\"", (unsigned)o->gid);
	put_label_value(group);
	printf("\",mode=\"%04o\"} 1\n", (unsigned)o->mode);
}

/* Per-record gauges and counters, labelled with the record's index and pid. */
static void per_participant(const struct stat_report *r)
{
	static const struct {
		const char *metric, *type, *help;
	} fam[] = {
		{"shmq_participant_alive", "gauge",
		 "1 if the participant's process is alive, 0 if it is gone"},
		{"shmq_participant_leases", "gauge", "Messages the participant holds leased"},
		{"shmq_participant_writing", "gauge", "Slots the participant has claimed and not published"},
		{"shmq_participant_idle_seconds", "gauge",
		 "Time since the participant's last recorded activity"},
		{"shmq_participant_sent_total", "counter", "Messages the participant sent"},
		{"shmq_participant_received_total", "counter", "Deliveries the participant received"},
		{"shmq_participant_acked_total", "counter", "Deliveries the participant acked"},
	};
	if (!r->nparts)
		return;
	for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
		family(fam[k].metric, fam[k].type, fam[k].help);
		for (unsigned i = 0; i < r->nparts; i++) {
			const struct shmq_participant_info *p = &r->parts[i];
			char labels[64];
			snprintf(labels, sizeof(labels), "index=\"%u\",pid=\"%d\"", p->index, (int)p->pid);
			uint64_t v[] = {p->alive > 0, p->leases,
					p->writing,   stat_ago_ms(r->s.now_ms, p->last_active_ms),
					p->sent,      p->received,
					p->acked};
			if (k == 3)
				sample_ms(r, fam[k].metric, labels, v[k]);
			else
				sample(r, fam[k].metric, labels, v[k]);
		}
	}
}

/* Per-lane gauges, labelled lane="N" (one lane on a queue without lanes). */
static void per_lane(const struct stat_report *r)
{
	const struct shmq_snapshot *s = &r->s;
	gauge(r, "shmq_lanes", "Lanes (sub-rings) of the queue", s->lanes);
	gauge(r, "shmq_lane_consumers", "Active consumers the lanes are shared out among", s->consumers);
	for (int k = 0; k < 2; k++) {
		family(k ? "shmq_lane_inflight" : "shmq_lane_ready", "gauge",
		       k ? "Messages of the lane leased to a receiver"
			 : "Messages of the lane sent, never delivered");
		for (uint32_t l = 0; l < s->lanes && l < SHMQ_LANES_MAX; l++) {
			char labels[32];
			snprintf(labels, sizeof(labels), "lane=\"%u\"", l);
			sample(r, k ? "shmq_lane_inflight" : "shmq_lane_ready", labels,
			       k ? s->lane[l].inflight : s->lane[l].ready);
		}
	}
}

void stat_print_prom(const struct stat_report *r)
{
	const struct shmq_snapshot *s = &r->s;
	config(r);
	owner_info(r);
	table(r, stat_depths, stat_ndepths, "gauge");
	gauge_ms(r, "shmq_oldest_ready_age_seconds", "Age of the oldest message not yet delivered (0: none)",
		 s->oldest_ready_age_ms);
	per_lane(r);
	family("shmq_participants", "gauge", "Participant records in use, by whether their process is alive");
	sample(r, "shmq_participants", "state=\"alive\"", s->stats.participants);
	sample(r, "shmq_participants", "state=\"dead\"", s->dead_participants);
	per_participant(r);
	table(r, stat_totals, stat_ntotals, "counter");
	gauge(r, "shmq_next_message_id", "Id the next message sent will get", s->stats.next_id);
	gauge(r, "shmq_snapshot_consistent", "1 if nothing moved while the figures were read", s->consistent);
}

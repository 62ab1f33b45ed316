/* SPDX-License-Identifier: MIT */
/* stat_text.c: `shmq stat NAME`: a snapshot as text, one "  label  value" line per figure. */
#include <stdio.h>

#include "cli.h"
#include "stat.h"

static void num(const char *label, uint64_t v) { printf("  %-24s %llu\n", label, (unsigned long long)v); }

/* Who owns the object and who may write it: what shmq_open's trust check looks at. */
static void print_owner(const struct cli_owner *o)
{
	char who[200];
	if (!o->known)
		return;
	const char *note = cli_mode_note(o->mode);
	printf("  %-24s %s\n", "owner", cli_owner_str(who, sizeof(who), o));
	printf("  %-24s %04o%s%s\n", "permissions", (unsigned)o->mode, note ? ", " : "", note ? note : "");
}

static void print_config(const struct stat_report *r)
{
	const struct shmq_stats *st = &r->s.stats;
	const struct shmq_config *c = &st->config;
	printf("config\n");
	printf("  %-24s %u slots\n", "capacity", c->capacity);
	printf("  %-24s %u bytes\n", "slot size", c->slot_size);
	printf("  %-24s %u bytes\n", "max payload", st->max_payload);
	printf("  %-24s %u ms\n", "lease", c->lease_ms);
	printf("  %-24s %u\n", "max deliveries", c->max_deliveries);
	printf("  %-24s %u ms, doubling up to %u ms\n", "retry backoff", c->retry_base_ms, c->retry_max_ms);
	printf("  %-24s %04o\n", "mode", (unsigned)c->mode);
	printf("  %-24s %u\n", "dead letters kept (max)", st->dlq_max);
	if (c->reclaim_interval_ms)
		printf("  %-24s every %u ms, by receivers\n", "reclaim pass", c->reclaim_interval_ms);
	else
		printf("  %-24s only by a watchdog or shmq_reclaim\n", "reclaim pass");
}

/* Only for a queue of more than one lane: a one-lane queue's lane is the depths above. */
static void print_lanes(const struct stat_report *r)
{
	const struct shmq_snapshot *s = &r->s;
	int weighted = s->stats.config.dispatch == SHMQ_DISPATCH_WEIGHTED;
	printf("lanes\n");
	printf("  %-24s %u (%s), %u consumer%s\n", "lanes", s->lanes,
	       cli_dispatch_name(s->stats.config.dispatch), s->consumers, s->consumers == 1 ? "" : "s");
	printf("  %5s", "LANE");
	if (weighted)
		printf(" %6s", "WEIGHT");
	printf(" %10s %10s %12s %12s %8s\n", "READY", "IN FLIGHT", "TAIL", "HEAD", "CONSUMER");
	for (uint32_t l = 0; l < s->lanes && l < SHMQ_LANES_MAX; l++) {
		const struct shmq_lane_info *li = &s->lane[l];
		char pid[16] = "-";
		if (li->consumer)
			snprintf(pid, sizeof(pid), "%d", (int)li->consumer_pid);
		printf("  %5u", l);
		if (weighted)
			printf(" %6u", li->weight);
		printf(" %10llu %10llu %12llu %12llu %8s\n", (unsigned long long)li->ready,
		       (unsigned long long)li->inflight, (unsigned long long)li->prod_tail,
		       (unsigned long long)li->cons_head, pid);
	}
}

static const char *alive_str(int alive) { return alive > 0 ? "yes" : alive == 0 ? "no" : "unknown"; }

static void print_participants(const struct stat_report *r)
{
	const struct shmq_snapshot *s = &r->s;
	printf("participants\n");
	printf("  %-24s %u record%s: %u alive, %u dead%s\n", "attached", s->records,
	       s->records == 1 ? "" : "s", s->stats.participants, s->dead_participants,
	       s->dead_participants ? " (the next reclaim pass requeues their leases, frees them)" : "");
	if (!r->nparts)
		return;
	printf("  %5s %8s %5s %-17s %6s %7s %13s %10s %10s %10s  %s\n", "INDEX", "PID", "ALIVE", "ROLE",
	       "LEASES", "WRITING", "LAST ACTIVITY", "SENT", "RECEIVED", "ACKED", "DOING");
	int other_ns = 0;
	for (unsigned i = 0; i < r->nparts; i++) {
		const struct shmq_participant_info *p = &r->parts[i];
		char ago[32], pid[16];
		snprintf(pid, sizeof(pid), "%d%s", (int)p->pid, p->pid_here == 0 ? "*" : "");
		other_ns |= p->pid_here == 0;
		snprintf(ago, sizeof(ago), "%llu s ago",
			 (unsigned long long)(stat_ago_ms(s->now_ms, p->last_active_ms) / 1000));
		printf("  %5u %8s %5s %-17s %6u %7u %13s %10llu %10llu %10llu  %s\n", p->index, pid,
		       alive_str(p->alive), p->role, p->leases, p->writing, ago, (unsigned long long)p->sent,
		       (unsigned long long)p->received, (unsigned long long)p->acked,
		       *p->doing ? p->doing : "-");
	}
	if (other_ns)
		printf("  * a PID of another PID namespace (a container's), not of ours: ALIVE comes from "
		       "the "
		       "kernel's lock on the record, never from the PID\n");
}

void stat_print_text(const struct stat_report *r)
{
	const struct shmq_snapshot *s = &r->s;
	const struct shmq_stats *st = &s->stats;
	char size[32];
	stat_human_bytes(size, sizeof(size), st->segment_bytes);
	printf("queue %s\n", r->name);
	printf("  %-24s %llu bytes (%s)\n", "segment", (unsigned long long)st->segment_bytes, size);
	print_owner(&r->owner);
	if (s->consistent)
		printf("  %-24s consistent (%u %s)\n", "snapshot", s->tries,
		       s->tries == 1 ? "pass" : "passes");
	else
		printf("  %-24s traffic moved during each of %u passes: figures are approximate\n",
		       "snapshot", s->tries);
	print_config(r);
	printf("depth (slots)\n");
	for (size_t i = 0; i < stat_ndepths; i++)
		num(stat_depths[i].label, stat_value(st, &stat_depths[i]));
	if (st->ready)
		printf("  %-24s %llu ms (message id %llu)\n", "oldest ready age",
		       (unsigned long long)s->oldest_ready_age_ms, (unsigned long long)s->oldest_ready_id);
	else
		printf("  %-24s none ready\n", "oldest ready age");
	if (s->lanes > 1)
		print_lanes(r);
	print_participants(r);
	printf("totals\n");
	for (size_t i = 0; i < stat_ntotals; i++)
		num(stat_totals[i].label, stat_value(st, &stat_totals[i]));
	num("next message id", st->next_id);
}

/* SPDX-License-Identifier: MIT */
/*
 * stat_json.c: `shmq stat NAME --json`: a snapshot as one JSON object of the schema
 * "shmq.stat/1" (docs/stat-json.md), built with jansson. Every number is a JSON integer.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>

#include "cli.h"
#include "stat.h"

/* uint64_t figures fit json_int_t (long long): counters would need centuries to pass 2^63 */
static json_t *jint(uint64_t v) { return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v); }

/* json_object_set_new steals v even on failure: a failed set, or a NULL v, leaves o's refcount
 * unchanged and marks the build failed */
static int set(json_t *o, const char *key, json_t *v, int *ok)
{
	if (!v || json_object_set_new(o, key, v))
		*ok = 0;
	return *ok;
}

static json_t *fields(const struct shmq_stats *st, const struct stat_field *f, size_t n)
{
	json_t *o = json_object();
	int ok = o != NULL;
	for (size_t i = 0; ok && i < n; i++)
		set(o, f[i].key, jint(stat_value(st, &f[i])), &ok);
	if (!ok)
		json_decref(o);
	return ok ? o : NULL;
}

void *stat_json_depths(const struct shmq_stats *st) { return fields(st, stat_depths, stat_ndepths); }

static json_t *config(const struct stat_report *r)
{
	const struct shmq_stats *st = &r->s.stats;
	const struct shmq_config *c = &st->config;
	json_t *o =
		json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "capacity",
			  (json_int_t)c->capacity, "slot_size", (json_int_t)c->slot_size, "max_payload",
			  (json_int_t)st->max_payload, "lease_ms", (json_int_t)c->lease_ms, "max_deliveries",
			  (json_int_t)c->max_deliveries, "retry_base_ms", (json_int_t)c->retry_base_ms,
			  "retry_max_ms", (json_int_t)c->retry_max_ms, "mode", (json_int_t)c->mode, "dlq_max",
			  (json_int_t)st->dlq_max, "reclaim_interval_ms", (json_int_t)c->reclaim_interval_ms);
	json_t *weights = json_array();
	int ok = o && weights;
	/* the weights the lanes have (the snapshot's, which the segment keeps), one per lane */
	for (uint32_t l = 0; ok && l < r->s.lanes && l < SHMQ_LANES_MAX; l++)
		if (json_array_append_new(weights, jint(r->s.lane[l].weight)))
			ok = 0;
	if (ok) {
		set(o, "lanes", jint(r->s.lanes), &ok);
		set(o, "dispatch", json_string(cli_dispatch_name(c->dispatch)), &ok);
		set(o, "weights", weights, &ok);
		weights = NULL;
	}
	json_decref(weights);
	if (!ok)
		json_decref(o);
	return ok ? o : NULL;
}

static json_t *lanes(const struct shmq_snapshot *s)
{
	json_t *list = json_array();
	int ok = list != NULL;
	for (uint32_t l = 0; ok && l < s->lanes && l < SHMQ_LANES_MAX; l++) {
		const struct shmq_lane_info *li = &s->lane[l];
		/* consumer_pid: null while no consumer is assigned the lane */
		json_t *pid = li->consumer ? json_integer(li->consumer_pid) : json_null();
		json_t *e = json_pack("{s:I, s:o, s:o, s:o, s:o, s:I, s:o}", "lane", (json_int_t)l, "ready",
				      jint(li->ready), "inflight", jint(li->inflight), "prod_tail",
				      jint(li->prod_tail), "cons_head", jint(li->cons_head), "weight",
				      (json_int_t)li->weight, "consumer_pid", pid);
		if (json_array_append_new(list, e))
			ok = 0;
	}
	if (!ok)
		json_decref(list);
	return ok ? list : NULL;
}

static json_t *participant(const struct shmq_participant_info *p, uint64_t now)
{
	/* alive: true, false, or null when the lock probe could not tell */
	json_t *alive = p->alive < 0 ? json_null() : json_boolean(p->alive);
	return json_pack("{s:I, s:i, s:o, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "index", (json_int_t)p->index, "pid", (int)p->pid, "alive", alive, "role", p->role,
			 "doing", p->doing, "pid_namespace",
			 p->pid_here > 0    ? "same"
			 : p->pid_here == 0 ? "other"
					    : "unknown",
			 "leases", (json_int_t)p->leases, "writing", (json_int_t)p->writing, "idle_ms",
			 (json_int_t)stat_ago_ms(now, p->last_active_ms), "attached_ms",
			 (json_int_t)stat_ago_ms(now, p->attached_ms), "sent", (json_int_t)p->sent,
			 "received", (json_int_t)p->received, "acked", (json_int_t)p->acked, "nacked",
			 (json_int_t)p->nacked, "rejected", (json_int_t)p->rejected, "reclaim_passes",
			 (json_int_t)p->reclaim_passes);
}

static json_t *participants(const struct stat_report *r)
{
	json_t *list = json_array();
	int ok = list != NULL;
	for (unsigned i = 0; ok && i < r->nparts; i++)
		if (json_array_append_new(list, participant(&r->parts[i], r->s.now_ms)))
			ok = 0;
	if (!ok) {
		json_decref(list);
		return NULL;
	}
	return json_pack("{s:I, s:I, s:I, s:o}", "alive", (json_int_t)r->s.stats.participants, "dead",
			 (json_int_t)r->s.dead_participants, "consumers", (json_int_t)r->s.consumers,
			 "records", list);
}

/* The segment's owner and permission bits; names are null for ids without one. */
void *stat_json_owner(const struct cli_owner *o)
{
	char user[64], group[64];
	if (!o->known)
		return json_null();
	int named_user = cli_user_name(user, sizeof(user), o->uid);
	int named_group = cli_group_name(group, sizeof(group), o->gid);
	return json_pack("{s:I, s:o, s:I, s:o, s:I}", "uid", (json_int_t)o->uid, "user",
			 named_user ? json_string(user) : json_null(), "gid", (json_int_t)o->gid, "group",
			 named_group ? json_string(group) : json_null(), "mode", (json_int_t)o->mode);
}

static json_t *report(const struct stat_report *r)
{
	const struct shmq_snapshot *s = &r->s;
	const struct shmq_stats *st = &s->stats;
	json_t *o = json_object();
	int ok = o != NULL;
	json_t *oldest = st->ready ? json_pack("{s:I, s:I}", "id", (json_int_t)s->oldest_ready_id, "age_ms",
					       (json_int_t)s->oldest_ready_age_ms)
				   : json_null();
	if (ok) {
		set(o, "schema", json_string("shmq.stat/1"), &ok);
		set(o, "queue", json_string(r->name), &ok);
		set(o, "segment_bytes", jint(st->segment_bytes), &ok);
		set(o, "creator_pid", json_integer(s->creator_pid), &ok);
		set(o, "owner", stat_json_owner(&r->owner), &ok);
		set(o, "config", config(r), &ok);
		set(o, "depths", fields(st, stat_depths, stat_ndepths), &ok);
		set(o, "oldest_ready", oldest, &ok);
		oldest = NULL;
		set(o, "lanes", lanes(s), &ok);
		set(o, "participants", participants(r), &ok);
		set(o, "totals", fields(st, stat_totals, stat_ntotals), &ok);
		set(o, "next_id", jint(st->next_id), &ok);
		set(o, "snapshot",
		    json_pack("{s:b, s:I}", "consistent", (int)s->consistent, "tries", (json_int_t)s->tries),
		    &ok);
	}
	json_decref(oldest);
	if (!ok)
		json_decref(o);
	return ok ? o : NULL;
}

int stat_print_json(const struct stat_report *r)
{
	json_t *o = report(r);
	if (!o)
		return -ENOMEM;
	int err = json_dumpf(o, stdout, JSON_INDENT(2));
	json_decref(o);
	putchar('\n');
	return err ? -EIO : 0;
}

int stat_print_created_json(const struct stat_report *r)
{
	json_t *root = json_pack("{s:s, s:s, s:I, s:o*}", "schema", "shmq.create/1", "queue", r->name,
				 "segment_bytes", (json_int_t)r->s.stats.segment_bytes, "config", config(r));
	if (!root)
		return -ENOMEM;
	int err = json_dumpf(root, stdout, JSON_COMPACT) ? -EIO : 0;
	putchar('\n');
	json_decref(root);
	return err == -EIO ? 0 : err; /* a write error shows at the flush */
}

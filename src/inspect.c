/* SPDX-License-Identifier: MIT */
/*
 * inspect.c: read-only views for tools. A view reads a segment through a PROT_READ mapping (or
 * an image in memory) and writes nothing to it: no participant record, no lock, no counter. Its
 * bounds come from a validated private copy of the header, never from the live one.
 * shmq_stats() is a snapshot through a view of the caller's own handle.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "clock.h"
#include "handle.h"
#include "lanes.h"
#include "registry.h"
#include "settings.h"
#include "segment.h"
#include "slot.h"
#include "shmq_inspect.h"

static_assert(SHMQ_SEGMENT_MAGIC == SHMQ_MAGIC, "the public magic is the layout's");

struct shmq_view {
	const unsigned char *base;
	uint64_t size;
	struct shmq_hdr copy; /* validated: the config and every bound come from here */
	const unsigned char *slots;
	const unsigned char *parts;
	uint32_t capacity, lanes, lane_shift, slot_size, max_payload, max_parts;
	int fd;	       /* for liveness probes; -1: an image (liveness unknown) */
	uint32_t self; /* record index + 1 of the caller's own handle: alive without a probe */
	int mapped;    /* 1: unmap and close on shmq_view_close */
};

static void view_init(struct shmq_view *v, const void *base, uint64_t size, const struct shmq_hdr *copy,
		      int fd)
{
	memset(v, 0, sizeof(*v));
	v->base = base;
	v->size = size;
	v->copy = *copy;
	v->slots = v->base + copy->slots_off;
	v->parts = v->base + copy->parts_off;
	v->capacity = copy->capacity;
	v->lanes = copy->lanes;
	v->lane_shift = (uint32_t)__builtin_ctz(copy->capacity / copy->lanes);
	v->slot_size = copy->slot_size;
	v->max_payload = copy->slot_size - SHMQ_SLOT_HEADER;
	v->max_parts = copy->max_participants;
	v->fd = fd;
}

int shmq_view_open(const char *name, shmq_view_t **out)
{
	struct shmq_mapping m;
	int err;
	if (!out)
		return -EINVAL;
	*out = NULL;
	struct shmq_view *v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	if ((err = shmq_map_segment(name, 0, NULL, &m))) {
		free(v);
		return err;
	}
	view_init(v, m.base, m.size, &m.hdr, m.fd);
	v->mapped = 1;
	*out = v;
	return 0;
}

int shmq_view_image(const void *image, size_t len, shmq_view_t **out)
{
	struct shmq_hdr copy;
	int err;
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!image || (uintptr_t)image % SHMQ_IMAGE_ALIGN)
		return -EINVAL;
	if (len < sizeof(copy))
		return -EPROTO;
	memcpy(&copy, image, sizeof(copy));
	if ((err = shmq_validate_header(&copy, len)))
		return err;
	struct shmq_view *v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	view_init(v, image, len, &copy, -1);
	*out = v;
	return 0;
}

void shmq_view_close(shmq_view_t *v)
{
	if (!v)
		return;
	if (v->mapped) {
		munmap((void *)v->base, v->size);
		close(v->fd);
	}
	free(v);
}

static const struct shmq_slot *vslot(const struct shmq_view *v, uint64_t i)
{
	return (const struct shmq_slot *)(v->slots + i * (uint64_t)v->slot_size); /* i < capacity */
}

static const struct shmq_participant *vpart(const struct shmq_view *v, uint32_t i)
{
	return (const struct shmq_participant *)(v->parts + (uint64_t)i * SHMQ_PART_SIZE);
}

/* 1 alive, 0 gone, -1 unknown (an image, or the probe failed) */
static int vprobe(const struct shmq_view *v, uint32_t i)
{
	if (v->self && i + 1 == v->self)
		return 1; /* our own lock never conflicts with our own description */
	return v->fd < 0 ? -1 : shmq_lock_probe(v->fd, i);
}

const char *shmq_slot_kind_str(unsigned kind)
{
	static const char *const names[] = {"free",    "writing", "ready",  "leased",
					    "delayed", "dead",	  "invalid"};
	return kind < sizeof(names) / sizeof(names[0]) ? names[kind] : "invalid";
}

static unsigned kind_of(unsigned state)
{
	if (state <= SLOT_DELAYED)
		return state; /* enum shmq_slot_kind mirrors the live states */
	return w_dead_reason(state) ? SHMQ_SLOT_DEAD : SHMQ_SLOT_INVALID;
}

static int64_t ms_until(uint64_t when, uint64_t now)
{
	return when >= now ? (int64_t)(when - now) : -(int64_t)(now - when);
}

static uint64_t age_ms(uint64_t enqueued_ns, uint64_t now)
{
	uint64_t e = enqueued_ns / 1000000;
	return now > e ? now - e : 0;
}

/* A plain field of a slot (len, id, enqueued_ns) that a producer may be rewriting while a view
 * reads it: a seqlock read, which the caller validates by re-reading the slot word (or, for an
 * age, accepts a neighbour's value). volatile: one load, neither torn nor cached by the compiler.
 * The writers store these fields plainly, so TSan would call any read of them a race: these
 * reads are left uninstrumented, the race being the seqlock's, by design. */
__attribute__((no_sanitize("thread"))) static uint64_t racy_u64(const uint64_t *field)
{
	return *(const volatile uint64_t *)field;
}

int shmq_view_slot(shmq_view_t *v, uint32_t i, struct shmq_slot_info *out, void *buf, size_t bufsz)
{
	if (!v || !out || i >= v->capacity || (!buf && bufsz))
		return -EINVAL;
	const struct shmq_slot *s = vslot(v, i);
	uint64_t now = now_ms();
	memset(out, 0, sizeof(*out));
	for (int tries = 0; tries < 4; tries++) {
		/* acquire: pairs with the release/seq_cst CAS that published what the word says, so
		 * the fields below are at least that fresh */
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		unsigned st = w_state(w);
		memset(out, 0, sizeof(*out));
		out->slot = i;
		out->kind = kind_of(st);
		out->dead_reason = w_dead_reason(st);
		out->deliveries = w_deliv(w);
		out->owner = w_owner(w) <= v->max_parts ? w_owner(w) : 0;
		if (out->owner)
			out->owner_pid = vpart(v, out->owner - 1)->pid;
		if (st != SLOT_FREE && st != SLOT_WRITING) {
			const unsigned char *p = slot_payload((struct shmq_slot *)s);
			uint32_t kl = slot_key_len(s, v->max_payload); /* never trust lengths */
			out->id = racy_u64(&s->id);
			out->enqueued_ns = racy_u64(&s->enqueued_ns);
			out->age_ms = age_ms(out->enqueued_ns, now);
			out->key_len = kl;
			memcpy(out->key, p, kl);
			out->len = slot_data_len(s, kl, v->max_payload);
			out->copied = out->len < bufsz ? out->len : (uint32_t)bufsz;
			if (out->copied)
				memcpy(buf, p + kl, out->copied);
		}
		uint64_t lw = atomic_load_explicit(&s->lease, memory_order_relaxed);
		if (st == SLOT_LEASED && lw_tag(lw) == lw_tag_of(w, v->lane_shift) &&
		    lw_kind(lw) == LW_DEADLINE)
			out->due_in_ms = ms_until(lw_ms(lw), now);
		else if (st == SLOT_DELAYED)
			out->due_in_ms = ms_until(lw_due(lw, w, v->lane_shift, now), now);
		/* seqlock-style: the fields were read between two loads of the same word. The fence
		 * orders the field loads before the second word load. */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&s->word, memory_order_relaxed) == w)
			return 0;
	}
	out->torn = 1;
	return 0;
}

/* Counters and ticket counters that move with every operation: a pass that saw them change
 * raced with traffic. */
static uint64_t activity(const struct shmq_view *v)
{
	uint64_t sum = 0;
	for (uint32_t l = 0; l < v->lanes; l++)
		sum += LANE_LOAD(v->base, l, prod_tail) * 31 + LANE_LOAD(v->base, l, cons_head);
	for (uint32_t i = 0; i < v->max_parts; i++) {
		const struct shmq_participant *p = vpart(v, i);
		sum += part_count(p, C_ACKED) + part_count(p, C_NACKED) + part_count(p, C_RETRIED) +
		       part_count(p, C_DEAD_LETTERED);
	}
	return sum;
}

/* What record p's participant is, by what it recorded itself (SHMQ_KIND_*, and `role` for a
 * receiver): a bridge or a worker by that name (they also send and receive), else producer and
 * consumer, else a watchdog; "idle" for one that has called nothing of those yet. */
static const char *role_of(const struct shmq_participant *p)
{
	uint32_t k = atomic_load_explicit(&p->kinds, memory_order_relaxed);
	if (atomic_load_explicit(&p->role, memory_order_relaxed) == PART_CONSUMER)
		k |= SHMQ_KIND_CONSUMER;
	if (k & SHMQ_KIND_BRIDGE)
		return "bridge";
	if (k & SHMQ_KIND_WORKER)
		return "worker";
	int prod = !!(k & SHMQ_KIND_PRODUCER), cons = !!(k & SHMQ_KIND_CONSUMER);
	if (prod && cons)
		return "producer+consumer";
	if (prod)
		return "producer";
	if (cons)
		return "consumer";
	return k & SHMQ_KIND_WATCHDOG ? "watchdog" : "idle";
}

/* What record p's participant is doing: its calls asleep now, by what they wait for. */
static const char *doing_of(const struct shmq_participant *p)
{
	uint32_t w = atomic_load_explicit(&p->waiting, memory_order_relaxed);
	int msgs = (w & 0xffff) != 0, room = (w >> 16) != 0;
	return msgs && room ? "waiting for messages and room"
	       : msgs	    ? "waiting for messages"
	       : room	    ? "waiting for room"
			    : "";
}

static void fill_totals(struct shmq_stats *st, const uint64_t *c)
{
	st->sent = c[C_SENT];
	st->received = c[C_RECEIVED];
	st->acked = c[C_ACKED];
	st->nacked = c[C_NACKED];
	st->redelivered = c[C_REDELIVERED];
	st->extended = c[C_EXTENDED];
	st->stale = c[C_STALE];
	st->reclaimed_expired = c[C_RECL_EXPIRED];
	st->reclaimed_dead_owner = c[C_RECL_DEAD_OWNER];
	st->retired_writes = c[C_RETIRED_WRITES];
	st->dead_lettered = c[C_DEAD_LETTERED];
	st->producer_waits = c[C_PROD_WAITS];
	st->consumer_waits = c[C_CONS_WAITS];
	st->rejected = c[C_REJECTED];
	st->redriven = c[C_REDRIVEN];
	st->purged = c[C_PURGED];
	st->dlq_dropped = c[C_DLQ_DROPPED];
	st->retried = c[C_RETRIED];
	st->reclaim_passes = c[C_RECLAIM_PASSES];
	st->duplicates = c[C_DUPLICATES];
	st->dedup_evicted = c[C_DEDUP_EVICTED];
	st->done_marked = c[C_DONE_MARKED];
	st->done_hits = c[C_DONE_HITS];
	st->prefetch_waits = c[C_PREFETCH_WAITS];
	st->stolen = c[C_STOLEN];
}

/* Dedup entries holding a key within its window. */
static uint64_t dedup_live(const struct shmq_view *v, uint64_t now)
{
	uint64_t n = 0;
	const unsigned char *table = v->base + v->copy.dedup_off;
	for (uint64_t i = 0; i < v->copy.dedup_entries; i++) {
		const struct shmq_dedup_entry *e = (const void *)(table + dedup_entry_off(i));
		uint64_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
		n += de_state(w) == DE_VALID && de_ms(w) && de_ms(w) + v->copy.dedup_window_ms > now;
	}
	return n;
}

/* One pass: depths from the slot words, per-owner holdings, then the records and counters. */
static int snapshot_pass(const struct shmq_view *v, struct shmq_snapshot *s,
			 struct shmq_participant_info *parts, unsigned max, uint32_t *leases,
			 uint32_t *writing)
{
	const struct shmq_hdr *h = &v->copy;
	struct shmq_stats *st = &s->stats;
	memset(s, 0, sizeof(*s));
	memset(leases, 0, sizeof(uint32_t) * v->max_parts);
	memset(writing, 0, sizeof(uint32_t) * v->max_parts);
	s->now_ms = now_ms();
	s->creator_pid = h->creator_pid;
	s->created_ns = h->created_ns;
	shmq_hdr_config(h, &st->config);
	/* the settings as changed since the creation, if they were (and keep the rules) */
	shmq_settings_overlay(v->base, &st->config);
	st->max_payload = v->max_payload;
	st->segment_bytes = v->size;
	st->dlq_max = st->config.dlq_max;
	s->lanes = v->lanes;
	for (uint32_t l = 0; l < v->lanes; l++) {
		struct shmq_lane_info *li = &s->lane[l];
		li->cons_head = LANE_LOAD(v->base, l, cons_head); /* first: the tail never trails it */
		li->prod_tail = LANE_LOAD(v->base, l, prod_tail);
		li->weight = h->weights[l];
		s->prod_tail += li->prod_tail;
		s->cons_head += li->cons_head;
		/* the largest id a lane's next message gets (ids are ticket * lanes + lane) */
		uint64_t next = li->prod_tail * v->lanes + l;
		if (next > st->next_id)
			st->next_id = next;
	}

	uint64_t oldest_ns = UINT64_MAX;
	for (uint64_t i = 0; i < v->capacity; i++) {
		const struct shmq_slot *sl = vslot(v, i);
		uint64_t w = atomic_load_explicit(&sl->word, memory_order_acquire);
		unsigned own = w_owner(w);
		struct shmq_lane_info *li = &s->lane[i >> v->lane_shift];
		switch (w_state(w)) {
		case SLOT_FREE:
			st->free_slots++;
			break;
		case SLOT_WRITING:
			st->writing++;
			if (own && own <= v->max_parts)
				writing[own - 1]++;
			break;
		case SLOT_READY: {
			st->ready++;
			li->ready++;
			uint64_t e = racy_u64(&sl->enqueued_ns);
			if (e < oldest_ns) {
				oldest_ns = e;
				s->oldest_ready_id = racy_u64(&sl->id);
			}
			break;
		}
		case SLOT_LEASED:
			st->inflight++;
			li->inflight++;
			if (own && own <= v->max_parts)
				leases[own - 1]++;
			break;
		case SLOT_DELAYED:
			st->delayed++;
			break;
		default:
			if (w_is_dead(w))
				st->dead++;
			break;
		}
	}
	if (st->ready)
		s->oldest_ready_age_ms = age_ms(oldest_ns, s->now_ms);

	uint64_t tot[C_COUNT];
	for (int k = 0; k < C_COUNT; k++)
		tot[k] = RETIRED_LOAD(v->base, k); /* records reused or closed cleanly */
	unsigned n = 0;
	uint64_t own_ns = shmq_pid_ns();
	for (uint32_t i = 0; i < v->max_parts; i++) {
		const struct shmq_participant *p = vpart(v, i);
		uint64_t c[C_COUNT];
		for (int k = 0; k < C_COUNT; k++) {
			c[k] = part_count(p, k);
			tot[k] += c[k];
		}
		/* acquire: pairs with attach's CAS, so pid and times belong to this claim */
		uint64_t ps = atomic_load_explicit(&p->state, memory_order_acquire);
		if ((ps & 0xff) != PART_ALIVE)
			continue;
		int alive = vprobe(v, i);
		if (alive != 0)
			st->participants++;
		else
			s->dead_participants++;
		if (n < max)
			parts[n] = (struct shmq_participant_info){
				.index = i,
				.pid = p->pid,
				.alive = alive,
				.leases = leases[i],
				.writing = writing[i],
				.attached_ms = p->attached_ms,
				.last_active_ms =
					atomic_load_explicit(&p->last_active_ms, memory_order_relaxed),
				.sent = c[C_SENT],
				.received = c[C_RECEIVED],
				.acked = c[C_ACKED],
				.nacked = c[C_NACKED],
				.rejected = c[C_REJECTED],
				.reclaim_passes = c[C_RECLAIM_PASSES],
				.role = role_of(p),
				.pid_here = !p->pid_ns || !own_ns || v->fd < 0 ? -1 : p->pid_ns == own_ns,
				.doing = doing_of(p),
			};
		n++;
	}
	fill_totals(st, tot);
	st->dedup_live = dedup_live(v, s->now_ms);
	struct shmq_assign_ctx ac = {
		.parts = v->parts,
		.max_parts = v->max_parts,
		.lanes = v->lanes,
		.fd = v->fd,
		.self = v->self ? v->self - 1 : UINT32_MAX,
		.now_ms = s->now_ms,
		.lease_ms = s->stats.config.lease_ms,
		.exclusive = h->dispatch == SHMQ_DISPATCH_KEY_HASH,
	};
	uint32_t owner[SHMQ_LANES_MAX];
	s->consumers = shmq_lane_consumers(&ac, owner);
	for (uint32_t l = 0; l < v->lanes; l++) {
		s->lane[l].consumer = owner[l];
		s->lane[l].consumer_pid = owner[l] ? vpart(v, owner[l] - 1)->pid : 0;
	}
	s->records = n;
	return (int)n;
}

static int snapshot(const struct shmq_view *v, struct shmq_snapshot *s, struct shmq_participant_info *parts,
		    unsigned max)
{
	uint32_t *hold = malloc(2 * sizeof(uint32_t) * v->max_parts);
	if (!hold)
		return -ENOMEM;
	int n = 0;
	for (uint32_t tries = 1; tries <= SHMQ_SNAPSHOT_TRIES; tries++) {
		uint64_t before = activity(v);
		n = snapshot_pass(v, s, parts, max, hold, hold + v->max_parts);
		s->tries = tries;
		s->consistent = activity(v) == before;
		if (s->consistent)
			break;
	}
	free(hold);
	return n;
}

int shmq_view_snapshot(shmq_view_t *v, struct shmq_snapshot *s, struct shmq_participant_info *parts,
		       unsigned max)
{
	if (!v || !s || (!parts && max))
		return -EINVAL;
	return snapshot(v, s, parts, max);
}

int shmq_stats(shmq_t *q, struct shmq_stats *st)
{
	if (foreign(q))
		return -ECHILD;
	struct shmq_view v;
	struct shmq_snapshot s;
	struct shmq_hdr h = {0};
	if (!q || !st)
		return -EINVAL;
	settings_check(q);
	/* the config fields of the header are immutable; the bounds and the config the library acts
	 * on come from the handle, which validated them at open (a header scribbled since must not
	 * show a config nobody uses). Only those lines are copied: the ticket counters and futex
	 * words after them are written concurrently (the view reads them atomically). */
	memcpy(&h, q->hdr, offsetof(struct shmq_hdr, data_seq));
	h.capacity = q->capacity;
	h.lanes = q->lanes;
	memcpy(h.weights, q->weights, sizeof(h.weights));
	h.slot_size = q->slot_size;
	h.max_participants = q->max_parts;
	h.parts_off = (uint64_t)(q->parts - q->base);
	h.slots_off = (uint64_t)(q->slots - q->base);
	h.dlq_max = q->dlq_max;
	h.lease_ms = q->lease_ms;
	h.max_deliveries = q->max_deliveries;
	h.retry_base_ms = q->retry_base_ms;
	h.retry_max_ms = q->retry_max_ms;
	h.reclaim_interval_ms = q->reclaim_interval_ms;
	h.dedup_off = q->dedup ? (uint64_t)(q->dedup - q->base) : 0;
	h.dedup_entries = q->dedup ? q->dedup_mask + 1 : 0;
	h.dedup_window_ms = q->dedup_window_ms;
	view_init(&v, q->base, q->size, &h, q->fd);
	v.self = q->me ? q->owner : 0;
	int n = snapshot(&v, &s, NULL, 0);
	if (n < 0)
		return n;
	*st = s.stats;
	return 0;
}

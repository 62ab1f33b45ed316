/* SPDX-License-Identifier: MIT */
/*
 * check.c: fsck for a segment. Reports every broken invariant of the header, the slot words, the
 * ticket counters, the participant records and the counters, through a callback, and keeps
 * going: a corrupt segment gets a list, not a crash. Works on an image in memory (fuzzed, in
 * tests) and on a live segment mapped read-only (writes nothing, takes no lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "handle.h"
#include "lane.h"
#include "registry.h"
#include "segment.h"
#include "settings.h"
#include "shmq_inspect.h"

struct checker {
	shmq_check_fn fn;
	void *ctx;
	int errors;
	int muted; /* counting findings only (a slot about to be re-read) */
	int found;
	int live; /* other processes may be writing: re-read before reporting */
	int fd;	  /* lock probes, -1 for an image */
	const unsigned char *base;
	uint64_t size;
	struct shmq_hdr h; /* private copy */
	uint32_t capacity, lanes, lane_mask, lane_shift, max_payload;
	uint64_t prod_tail[SHMQ_LANES_MAX], cons_head[SHMQ_LANES_MAX], now;
	const uint8_t *part_state; /* per record: its state byte, read once */
	/* the settings changed since creation (settings.c): a delivery count or a DLQ size over the
	 * bound in force may be from an earlier, higher one (a warning, not an error) */
	int settings_changed;
};

static void report(struct checker *c, int sev, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(struct checker *c, int sev, const char *fmt, ...)
{
	c->found++;
	if (c->muted)
		return;
	char msg[320];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (sev == SHMQ_CHECK_ERROR)
		c->errors++;
	if (c->fn)
		c->fn(c->ctx, sev, msg);
}

static void header_finding(void *ctx, const char *fmt, ...)
{
	struct checker *c = ctx;
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	report(c, SHMQ_CHECK_ERROR, "header: %s", msg);
}

static const struct shmq_slot *cslot(const struct checker *c, uint64_t i)
{
	return (const struct shmq_slot *)(c->base + c->h.slots_off + i * c->h.slot_size);
}

static const struct shmq_participant *cpart(const struct checker *c, uint32_t i)
{
	return (const struct shmq_participant *)(c->base + c->h.parts_off + (uint64_t)i * SHMQ_PART_SIZE);
}

static void check_slot(struct checker *c, uint32_t i, uint64_t w)
{
	const struct shmq_slot *s = cslot(c, i);
	unsigned st = w_state(w), own = w_owner(w), d = w_deliv(w);
	uint32_t l = i >> c->lane_shift;
	uint64_t t = w_ticket(w), cap = (uint64_t)c->lane_mask + 1, tail = c->prod_tail[l];
	int msg_state = st == SLOT_READY || st == SLOT_LEASED || st == SLOT_DELAYED || w_dead_reason(st);

	if (st > SLOT_DELAYED && !w_dead_reason(st)) {
		report(c, SHMQ_CHECK_ERROR, "slot %u: state %u is not one shmq writes", i, st);
		return;
	}
	if ((t & c->lane_mask) != (i & c->lane_mask))
		report(c, SHMQ_CHECK_ERROR, "slot %u: ticket %llu belongs to slot %llu", i,
		       (unsigned long long)t,
		       (unsigned long long)((l << c->lane_shift) | (t & c->lane_mask)));
	int64_t ahead = ticket_diff(t, tail & W_TICKET_MASK);
	if (st == SLOT_FREE && ahead >= (int64_t)cap)
		report(c, SHMQ_CHECK_ERROR,
		       "slot %u: free for ticket %llu, more than a lap past the next ticket %llu", i,
		       (unsigned long long)t, (unsigned long long)tail);
	if (st != SLOT_FREE && ahead >= 0)
		report(c, SHMQ_CHECK_ERROR,
		       "slot %u: %s ticket %llu, which was never issued (next ticket %llu)", i,
		       shmq_slot_kind_str(st <= SLOT_DELAYED ? st : SHMQ_SLOT_DEAD), (unsigned long long)t,
		       (unsigned long long)tail);
	/* receivers take first deliveries at the head only, and lease one before they move the
	 * head past it (the head was read before the slot: it only grows) */
	uint64_t head = c->cons_head[l];
	if (st == SLOT_READY && head <= tail && ticket_diff(head, t) > 0)
		report(c, SHMQ_CHECK_ERROR,
		       "slot %u: ready for ticket %llu, behind the consumer head %llu: no receive can "
		       "reach it",
		       i, (unsigned long long)t, (unsigned long long)head);
	/* a skip word is 1 + a ticket taken: never past the tail read after it (on a live queue the
	 * tail read before may be older than the skip) */
	uint64_t sk = atomic_load_explicit(&s->skip, memory_order_acquire);
	if (sk > tail && (!c->live || sk > LANE_LOAD(c->base, l, prod_tail)))
		report(c, SHMQ_CHECK_ERROR,
		       "slot %u: skip word %llu is past the next ticket %llu (receivers would step over "
		       "tickets never issued)",
		       i, (unsigned long long)sk, (unsigned long long)tail);
	if (own > c->h.max_participants) {
		report(c, SHMQ_CHECK_ERROR, "slot %u: owner %u is past the %u participant records", i, own,
		       c->h.max_participants);
	} else if ((st == SLOT_WRITING || st == SLOT_LEASED) && !own) {
		report(c, SHMQ_CHECK_ERROR, "slot %u: %s with no owner", i, shmq_slot_kind_str(st));
	}
	if ((st == SLOT_FREE || st == SLOT_WRITING || st == SLOT_READY) && d)
		report(c, SHMQ_CHECK_ERROR, "slot %u: %s with %u deliveries", i, shmq_slot_kind_str(st), d);
	int over = c->settings_changed ? SHMQ_CHECK_WARNING : SHMQ_CHECK_ERROR;
	if (st == SLOT_LEASED && d < 1)
		report(c, SHMQ_CHECK_ERROR, "slot %u: leased at delivery %u, outside 1..%u", i, d,
		       c->h.max_deliveries);
	else if (st == SLOT_LEASED && d > c->h.max_deliveries)
		report(c, over, "slot %u: leased at delivery %u, outside 1..%u", i, d, c->h.max_deliveries);
	if (st == SLOT_DELAYED && d >= c->h.max_deliveries)
		report(c, over, "slot %u: waiting for delivery %u, past max deliveries %u", i, d + 1,
		       c->h.max_deliveries);
	if (msg_state && s->len > c->max_payload)
		report(c, SHMQ_CHECK_ERROR, "slot %u: payload length %u is above the max payload %u", i,
		       s->len, c->max_payload);
	if ((st == SLOT_WRITING || st == SLOT_LEASED) && own && own <= c->h.max_participants) {
		uint8_t ps = c->part_state[own - 1];
		int alive = c->fd < 0 ? -1 : shmq_lock_probe(c->fd, own - 1);
		if (ps != PART_ALIVE)
			report(c, SHMQ_CHECK_WARNING,
			       "slot %u: %s by participant %u, whose record is free (a reclaim pass repairs "
			       "it)",
			       i, shmq_slot_kind_str(st), own - 1);
		else if (alive == 0)
			report(c, SHMQ_CHECK_WARNING,
			       "slot %u: %s by participant %u, whose process is gone (a reclaim pass repairs "
			       "it)",
			       i, shmq_slot_kind_str(st), own - 1);
	}
	if (st == SLOT_LEASED) {
		uint64_t lw = atomic_load_explicit(&s->lease, memory_order_relaxed);
		if (lw_tag(lw) == lw_tag_of(w, c->lane_shift) && lw_kind(lw) == LW_DEADLINE &&
		    lw_ms(lw) + 1000 < c->now)
			report(c, SHMQ_CHECK_WARNING,
			       "slot %u: lease expired %llu ms ago (a reclaim pass requeues it)", i,
			       (unsigned long long)(c->now - lw_ms(lw)));
	}
}

static void check_slots(struct checker *c, uint64_t counts[16])
{
	for (uint32_t i = 0; i < c->capacity; i++) {
		const struct shmq_slot *s = cslot(c, i);
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		/* on a live queue, a finding in a slot that is changing (or about a ticket issued
		 * since we read the tail) is its traffic: re-read both, report only what stays put */
		for (int tries = 0; c->live && tries < 3; tries++) {
			c->muted = 1;
			c->found = 0;
			check_slot(c, i, w);
			c->muted = 0;
			if (!c->found)
				break;
			c->prod_tail[i >> c->lane_shift] = LANE_LOAD(c->base, i >> c->lane_shift, prod_tail);
			uint64_t w2 = atomic_load_explicit(&s->word, memory_order_acquire);
			if (w2 == w && tries > 0)
				break;
			w = w2;
		}
		check_slot(c, i, w);
		counts[w_state(w)]++;
	}
}

static void check_participants(struct checker *c, uint8_t *part_state)
{
	for (uint32_t i = 0; i < c->h.max_participants; i++) {
		const struct shmq_participant *p = cpart(c, i);
		uint64_t v = atomic_load_explicit(&p->state, memory_order_acquire);
		part_state[i] = (uint8_t)(v & 0xff);
		if ((v & 0xff) > PART_ALIVE) {
			report(c, SHMQ_CHECK_ERROR, "participant %u: state %u is not free (0) or alive (1)",
			       i, (unsigned)(v & 0xff));
			continue;
		}
		if ((v & 0xff) == PART_ALIVE && p->pid <= 0)
			report(c, SHMQ_CHECK_ERROR, "participant %u: alive with pid %d", i, p->pid);
		uint64_t rcv = part_count(p, C_RECEIVED);
		uint64_t settled =
			part_count(p, C_ACKED) + part_count(p, C_NACKED) + part_count(p, C_REJECTED);
		/* a participant settles only deliveries it received (its lease tokens are its own),
		 * and counts a receive before it can settle it */
		if (settled > rcv)
			report(c, SHMQ_CHECK_ERROR,
			       "participant %u: settled %llu deliveries (acked + nacked + rejected) but "
			       "received %llu",
			       i, (unsigned long long)settled, (unsigned long long)rcv);
	}
}

static void sum_counters(const struct checker *c, uint64_t tot[C_COUNT])
{
	for (int k = 0; k < C_COUNT; k++)
		tot[k] = RETIRED_LOAD(c->base, k);
	for (uint32_t i = 0; i < c->h.max_participants; i++)
		for (int k = 0; k < C_COUNT; k++)
			tot[k] += part_count(cpart(c, i), k);
}

/* tot: the counters summed before the slot scan. On a live queue whose counters moved during
 * the scan the balance cannot be judged: it is skipped. */
static void check_balance(struct checker *c, const uint64_t counts[16], const uint64_t tot[C_COUNT])
{
	if (c->live) {
		uint64_t again[C_COUNT];
		sum_counters(c, again);
		if (memcmp(again, tot, sizeof(again)))
			return;
	}
	uint64_t present = counts[SLOT_READY] + counts[SLOT_LEASED] + counts[SLOT_DELAYED];
	uint64_t dead = 0;
	for (unsigned st = SLOT_DEAD_MAX; st < 16; st++)
		dead += w_dead_reason(st) ? counts[st] : 0;
	present += dead;
	uint64_t gone = tot[C_ACKED] + tot[C_PURGED] + tot[C_DLQ_DROPPED];
	if (tot[C_SENT] < gone || tot[C_SENT] - gone != present)
		report(c, SHMQ_CHECK_WARNING,
		       "counters: sent %llu - acked %llu - purged %llu - dropped %llu != %llu messages held "
		       "(a "
		       "process killed between an operation and its counter, or traffic during the check)",
		       (unsigned long long)tot[C_SENT], (unsigned long long)tot[C_ACKED],
		       (unsigned long long)tot[C_PURGED], (unsigned long long)tot[C_DLQ_DROPPED],
		       (unsigned long long)present);
	if (dead > c->h.dlq_max)
		report(c, SHMQ_CHECK_WARNING,
		       "dead letters: %llu held, above the %u kept (the next dead letter trims them)",
		       (unsigned long long)dead, c->h.dlq_max);
}

/* Is the claimer of a dedup entry (record i in that epoch) gone? As the library judges it
 * (shmq_part_alive_in): a record freed or claimed again since names somebody else, whatever its
 * lock says; an image (no fd) shows only the first. */
static int claimer_gone(struct checker *c, uint32_t i, uint64_t epoch)
{
	uint64_t v = atomic_load_explicit(&cpart(c, i)->state, memory_order_acquire);
	if (ps_state(v) != PART_ALIVE || ps_epoch(v) != epoch)
		return 1;
	return c->fd >= 0 && shmq_lock_probe(c->fd, i) == 0;
}

/* Entry i's control byte against its word, read until both hold still (a live queue recycles
 * entries while we look): a value shmq never writes, an EMPTY byte over a used entry, or another
 * key's tag over a key the entry holds (CLAIMED, or VALID within its window) would make lookups of
 * that key miss it, and let its duplicates through. BUSY, or a stale tag over an entry that holds
 * no key, only costs lookups a look at the entry. */
static void check_dedup_ctrl(struct checker *c, const struct shmq_dedup_entry *e, const _Atomic uint8_t *ctrl,
			     uint32_t i)
{
	unsigned b = 0;
	uint64_t w = 0;
	for (int tries = 0; tries < 3; tries++) {
		b = atomic_load_explicit(ctrl, memory_order_acquire);
		w = atomic_load_explicit(&e->word, memory_order_acquire);
		if (b == atomic_load_explicit(ctrl, memory_order_acquire))
			break;
	}
	unsigned st = de_state(w);
	int holds =
		st == DE_CLAIMED || (st == DE_VALID && de_ms(w) && de_ms(w) + c->h.dedup_window_ms > c->now);
	if (b != DC_EMPTY && b != DC_BUSY && b < DC_TAG)
		report(c, SHMQ_CHECK_ERROR, "dedup entry %u: control byte 0x%02x is not one shmq writes", i,
		       b);
	else if (b == DC_EMPTY && st != DE_EMPTY)
		report(c, SHMQ_CHECK_ERROR,
		       "dedup entry %u: control byte EMPTY over a used entry (lookups skip its key)", i);
	else if (b >= DC_TAG && holds && b != dc_tag(de_tag(w)))
		report(c, SHMQ_CHECK_ERROR,
		       "dedup entry %u: control byte 0x%02x names another key than the entry's (tag 0x%02x): "
		       "lookups of its key miss it",
		       i, b, dc_tag(de_tag(w)));
}

static void check_dedup(struct checker *c)
{
	const unsigned char *table = c->base + c->h.dedup_off;
	for (uint32_t i = 0; i < c->h.dedup_entries; i++) {
		const struct shmq_dedup_entry *e = (const void *)(table + dedup_entry_off(i));
		const struct shmq_dedup_group *g = (const void *)(table + dedup_group_off(i));
		check_dedup_ctrl(c, e, &g->ctrl[i % DEDUP_PROBES], i);
		uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
		unsigned st = de_state(w), own = de_owner(w);
		if (st == DE_EMPTY)
			continue;
		if (st > DE_VALID || de_kind(w) > DK_DONE_ID) {
			report(c, SHMQ_CHECK_ERROR,
			       "dedup entry %u: state %u / kind %u is not one shmq writes", i, st,
			       de_kind(w));
			continue;
		}
		if (own > c->h.max_participants || (st == DE_CLAIMED && !own))
			report(c, SHMQ_CHECK_ERROR, "dedup entry %u: owner %u is not a participant record", i,
			       own);
		else if (st == DE_CLAIMED && claimer_gone(c, own - 1, de_epoch(w)))
			report(c, SHMQ_CHECK_WARNING,
			       "dedup entry %u: claimed by participant %u (epoch %llu), which is gone (the "
			       "next use of its key takes it over)",
			       i, own - 1, (unsigned long long)de_epoch(w));
		/* a claim writes the key after its CAS: only a recorded entry must hold a sane one */
		if (st == DE_VALID && (e->key_len == 0 || e->key_len > SHMQ_KEY_MAX))
			report(c, SHMQ_CHECK_ERROR, "dedup entry %u: key length %u outside 1..%u", i,
			       e->key_len, SHMQ_KEY_MAX);
	}
}

static int check(struct checker *c)
{
	if (c->size < sizeof(struct shmq_hdr)) {
		report(c, SHMQ_CHECK_ERROR, "header: segment is %llu bytes, smaller than the %u-byte header",
		       (unsigned long long)c->size, SHMQ_HDR_SIZE);
		return c->errors;
	}
	memcpy(&c->h, c->base, sizeof(c->h));
	if (shmq_header_check(&c->h, c->size, header_finding, c))
		return c->errors; /* nothing past the header can be located */
	/* settings changed since the creation (settings.c): delivery counts and dead letters within
	 * the larger of the two bounds are sound (a lowered bound applies from the next delivery) */
	struct shmq_config cur;
	shmq_hdr_config(&c->h, &cur);
	c->settings_changed = shmq_settings_overlay(c->base, &cur) != 0;
	if (cur.max_deliveries > c->h.max_deliveries)
		c->h.max_deliveries = cur.max_deliveries;
	if (cur.dlq_max > c->h.dlq_max)
		c->h.dlq_max = cur.dlq_max;
	c->capacity = c->h.capacity;
	c->lanes = c->h.lanes;
	c->lane_mask = c->h.capacity / c->h.lanes - 1;
	c->lane_shift = (uint32_t)__builtin_ctz(c->h.capacity / c->h.lanes);
	c->max_payload = c->h.slot_size - SHMQ_SLOT_HEADER;
	c->now = now_ms();
	uint64_t lane_cap = (uint64_t)c->lane_mask + 1;
	for (uint32_t l = 0; l < c->lanes; l++) {
		uint64_t head = LANE_LOAD(c->base, l, cons_head);
		c->cons_head[l] = head;
		c->prod_tail[l] = LANE_LOAD(c->base, l, prod_tail);
		uint64_t tail = c->prod_tail[l];
		char lane[24] = ""; /* named only when there are several */
		if (c->lanes > 1)
			snprintf(lane, sizeof(lane), "lane %u: ", l);
		/* on a live queue, a head that moved on since it was read may have let the tail move
		 * on by as much: the gap is judged only if the head stayed put */
		int moved = c->live && LANE_LOAD(c->base, l, cons_head) != head;
		/* cons_head is read first: on a live queue prod_tail only grows after it */
		if (head > tail)
			report(c, SHMQ_CHECK_ERROR,
			       "tickets: %sconsumer head %llu is past the producer tail %llu", lane,
			       (unsigned long long)head, (unsigned long long)tail);
		else if (moved)
			continue;
		else if (!lane_sane(head, tail, lane_cap))
			report(c, SHMQ_CHECK_ERROR,
			       "tickets: %s%llu outstanding (head %llu, tail %llu), more than producers "
			       "ever take (%llu)",
			       lane, (unsigned long long)(tail - head), (unsigned long long)head,
			       (unsigned long long)tail, (unsigned long long)lane_gap_max(lane_cap));
		else if (tail - head > 2 * lane_cap)
			report(c, SHMQ_CHECK_WARNING,
			       "tickets: %s%llu outstanding (head %llu, tail %llu), more than two laps: "
			       "only producers racing at a full lane get there",
			       lane, (unsigned long long)(tail - head), (unsigned long long)head,
			       (unsigned long long)tail);
	}

	uint8_t part_state[SHMQ_MAX_PARTICIPANTS];
	c->part_state = part_state;
	check_participants(c, part_state);
	uint64_t counts[16] = {0}, tot[C_COUNT];
	sum_counters(c, tot);
	check_slots(c, counts);
	check_dedup(c);
	check_balance(c, counts, tot);
	return c->errors;
}

int shmq_check_image(const void *image, size_t len, shmq_check_fn fn, void *ctx)
{
	if ((!image && len) || (uintptr_t)image % SHMQ_IMAGE_ALIGN)
		return -EINVAL;
	struct checker c = {.fn = fn, .ctx = ctx, .fd = -1, .base = image, .size = len};
	return check(&c);
}

int shmq_check_name(const char *name, shmq_check_fn fn, void *ctx)
{
	char n[SHMQ_NAME_MAX + 2];
	struct stat st;
	int err = shmq_normalize_name(name, n, sizeof(n));
	if (err)
		return err;
	int fd = shmq_shm_open_regular(n, O_RDONLY, &st);
	if (fd < 0)
		return fd;
	struct checker c = {.fn = fn, .ctx = ctx, .fd = fd, .live = 1, .size = (uint64_t)st.st_size};
	void *base = NULL;
	if (st.st_size > 0) {
		base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED) {
			err = -errno;
			close(fd);
			return err;
		}
	}
	c.base = base;
	int r = check(&c);
	if (base)
		munmap(base, (size_t)st.st_size);
	close(fd);
	return r;
}

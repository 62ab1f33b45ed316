/* SPDX-License-Identifier: MIT */
/*
 * The segment layout and the slot word. Everything here lives in shared memory: no pointers,
 * only offsets; every field read from a segment is bounds-checked by its user.
 *
 *   [ header: 4 KiB ][ participant records: SHMQ_MAX_PARTICIPANTS * 512 B ][ slots: capacity * slot_size ]
 *   [ dedup table: dedup_entries * 128 B ][ holder records: capacity * 8 B ]
 *
 * A slot is a SHMQ_SLOT_HEADER-byte header (struct shmq_slot: word, skip, lease, id, enqueued_ns,
 * len, key_len) and the payload right after it, in the same cache line. It starts with one 64-bit
 * atomic word that is the whole truth about the slot:
 *
 *   63                      24 23   20 19        8 7          0
 *   [ ticket (low 40 bits)    | state | owner     | deliveries ]
 *
 * ticket: the position in its lane's FIFO ticket sequence this slot's message (or its next
 * message) belongs to. A queue is `lanes` sub-rings of lane_cap = capacity / lanes slots each, lane
 * l owning slots [l * lane_cap, (l + 1) * lane_cap); ticket t of lane l only ever lives in slot
 * l * lane_cap + t % lane_cap. owner: participant index + 1
 * (0 = none). Every transition is a single CAS on this word, so a process killed at any
 * instruction leaves each slot in one well-defined state. See docs/design.md for the diagram.
 */
#ifndef SHMQ_LAYOUT_H
#define SHMQ_LAYOUT_H

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shmq.h"

#define SHMQ_MAGIC 0x31514d4853ULL /* "SHMQ1" */
#define SHMQ_LAYOUT_VERSION 6u
#define SHMQ_HDR_SIZE 4096u
#define SHMQ_CACHELINE 64u
#define SHMQ_PART_SIZE 512u

enum shmq_slot_state {
	SLOT_FREE = 0,		/* no message; usable by a producer holding a ticket >= the word's ticket */
	SLOT_WRITING = 1,	/* claimed by producer `owner` for `ticket`, payload being written */
	SLOT_READY = 2,		/* published, awaiting first delivery at consumer position `ticket` */
	SLOT_LEASED = 3,	/* delivered `deliveries` times, held by `owner` until the lease deadline */
	SLOT_DELAYED = 4,	/* waiting for redelivery at the not-before time in the lease word */
	SLOT_DEAD_MAX = 8,	/* dead-lettered: max deliveries reached by nacks/expiries */
	SLOT_DEAD_REJECTED = 9, /* dead-lettered: rejected by a consumer */
	SLOT_DEAD_CRASHED = 10, /* dead-lettered: its holders kept dying */
	SLOT_DEAD_EXPIRED = 11, /* dead-lettered: its leases kept expiring */
};

#define W_DELIV_BITS 8
#define W_OWNER_BITS 12
#define W_STATE_BITS 4
#define W_TICKET_BITS 40
#define W_OWNER_SHIFT 8
#define W_STATE_SHIFT 20
#define W_TICKET_SHIFT 24
#define W_TICKET_MASK ((1ULL << W_TICKET_BITS) - 1)

static inline uint64_t w_make(uint64_t ticket, unsigned state, unsigned owner, unsigned deliv)
{
	return ((ticket & W_TICKET_MASK) << W_TICKET_SHIFT) | ((uint64_t)(state & 0xf) << W_STATE_SHIFT) |
	       ((uint64_t)(owner & 0xfff) << W_OWNER_SHIFT) | (deliv & 0xff);
}
static inline uint64_t w_ticket(uint64_t w) { return w >> W_TICKET_SHIFT; }
static inline unsigned w_state(uint64_t w) { return (w >> W_STATE_SHIFT) & 0xf; }
static inline unsigned w_owner(uint64_t w) { return (w >> W_OWNER_SHIFT) & 0xfff; }
static inline unsigned w_deliv(uint64_t w) { return w & 0xff; }
static inline int w_is_dead(uint64_t w) { return w_state(w) >= SLOT_DEAD_MAX; }

/* The enum shmq_dead_reason of a dead slot state, 0 for any other state. */
static inline unsigned w_dead_reason(unsigned state)
{
	switch (state) {
	case SLOT_DEAD_MAX:
		return SHMQ_DEAD_MAX_DELIVERIES;
	case SLOT_DEAD_EXPIRED:
		return SHMQ_DEAD_EXPIRED;
	case SLOT_DEAD_REJECTED:
		return SHMQ_DEAD_REJECTED;
	case SLOT_DEAD_CRASHED:
		return SHMQ_DEAD_CRASHED;
	default:
		return 0;
	}
}

/* Signed distance a - b between a 64-bit ticket and a 40-bit slot ticket, modulo 2^40. */
static inline int64_t ticket_diff(uint64_t a, uint64_t b40)
{
	uint64_t d = (a - b40) & W_TICKET_MASK;
	return (int64_t)(d << (64 - W_TICKET_BITS)) >> (64 - W_TICKET_BITS);
}

/* The lease word: [ time_ms (40 bits) | kind (1 bit) | tag (23 bits) ]. kind 0 (LW_DEADLINE): the
 * lease deadline of a delivery; kind 1 (LW_NOT_BEFORE): the not-before time of a redelivery,
 * written by nack/reclaim just before they move the slot to DELAYED; on a dead slot, the time it
 * was dead-lettered, written the same way just before its word went DEAD. tag = lw_tag_of() the
 * slot word: the delivery count and the lap of the slot's ticket (its 15 bits above the lane's
 * slot bits), so a value left over from another delivery, or from another message in the same
 * slot at the same delivery count (producers reset it to 0, which no delivery's tag matches), is
 * never mistaken for this one's. The kind keeps a reclaim pass from reading a nack's not-before
 * time as an expired deadline. Every writer but the owner's first deadline store (just after its
 * lease CAS, while nobody else may take the lease) CASes it from a value it knows: extend, nack,
 * dead-lettering and reclaim from this delivery's deadline, a redrive from the letter's dead time,
 * so a writer that lost the slot meanwhile writes nothing, even once the slot holds a new message
 * (its lap differs). 2^40 ms of CLOCK_MONOTONIC are 34 years. */
enum {
	LW_DEADLINE = 0,
	LW_NOT_BEFORE = 1
};
#define LW_MS_MASK ((1ULL << 40) - 1)
#define LW_LAP_BITS 15
static inline uint64_t lw_make(uint64_t ms, unsigned kind, uint32_t tag)
{
	return ((ms & LW_MS_MASK) << 24) | ((uint64_t)(kind & 1) << 23) | (tag & 0x7fffff);
}
static inline uint64_t lw_ms(uint64_t l) { return l >> 24; }
static inline unsigned lw_kind(uint64_t l) { return (l >> 23) & 1; }
static inline uint32_t lw_tag(uint64_t l) { return l & 0x7fffff; }
/* The tag of the delivery whose slot word is w, in a lane of 2^lane_shift slots: [ lap:15 | deliv:8 ] */
static inline uint32_t lw_tag_of(uint64_t w, unsigned lane_shift)
{
	return (uint32_t)((w_ticket(w) >> lane_shift) & ((1u << LW_LAP_BITS) - 1)) << 8 | w_deliv(w);
}

/* When a DELAYED slot whose word is w is due. Anything but this delivery's not-before time (a
 * requeue that died between its two CASes) counts as due now. */
static inline uint64_t lw_due(uint64_t l, uint64_t w, unsigned lane_shift, uint64_t now)
{
	return lw_kind(l) == LW_NOT_BEFORE && lw_tag(l) == lw_tag_of(w, lane_shift) ? lw_ms(l) : now;
}

/* A slot: this header, then the payload (the idempotency key first, if any) from byte
 * SHMQ_SLOT_HEADER on, in the same line: a message of up to 16 bytes touches one line, and every
 * field a send or a receive writes or reads is in that line. Nothing here is written per delivery
 * but the word and the lease word; who held a dead letter's last lease is in the holder records
 * (below), written only by a dead-lettering. */
struct shmq_slot {
	_Atomic uint64_t word; /* the state word above */
	/* 1 + highest ticket abandoned at this slot while it was occupied (0: none). Read after
	 * every claim CAS (slot_claim), written only when a ticket is abandoned: on this line, that
	 * read costs nothing more */
	_Atomic uint64_t skip;
	_Atomic uint64_t lease; /* deadline / not-before, see lw_make */
	uint64_t id;		/* message id (the full 64-bit ticket of its first send) */
	uint64_t enqueued_ns;
	uint32_t len;
	uint32_t key_len; /* idempotency key bytes at the start of the payload area (0: none) */
};
static_assert(sizeof(struct shmq_slot) == SHMQ_SLOT_HEADER, "slot header is SHMQ_SLOT_HEADER bytes");
static_assert(SHMQ_SLOT_HEADER % 8 == 0 && SHMQ_SLOT_HEADER < SHMQ_CACHELINE,
	      "the payload starts 8-byte aligned, inside the slot's first line");

/* A holder record: one per slot, in the array at the segment's holders_off (after the dedup
 * table), saying who held the lease of the delivery that was dead-lettered in that slot:
 *
 *   63      55 54          32 31            0
 *   [ 0       | tag (23 bits) | pid (32 bits) ]
 *
 * tag: lw_tag_of() the dying delivery's word (its lap and delivery count). Written only by a
 * dead-lettering (a reject or a nack past max_deliveries by the holder itself, a reclaim pass for
 * an expired or dead holder), after the lease-word CAS that makes it the one to move the slot
 * and before the word CAS that publishes it (release). A reader trusts it only when the tag is
 * that of the dead word it read: a mover that won the lease word but lost the word (the holder
 * acked meanwhile) may store its record late, over a later letter of the same slot, and that
 * record names another lap. A fresh segment's zeros match no dead word (dead words have
 * delivered at least once). Read only by DLQ listings: kept out of the slots so that no
 * delivery writes the holder into the slot's line. */
static inline uint64_t hr_make(int32_t pid, uint32_t tag)
{
	return (uint64_t)(tag & 0x7fffff) << 32 | (uint32_t)pid;
}
static inline int32_t hr_pid(uint64_t r) { return (int32_t)(uint32_t)r; }
static inline uint32_t hr_tag(uint64_t r) { return (r >> 32) & 0x7fffff; }
#define SHMQ_HOLDER_SIZE 8u

/* Per-participant counters: each participant writes only its own (trap: shared counters make
 * every participant fight over one cache line), in two rows: `counters`, written by one thread of
 * the handle only (load + store, no locked instruction), and `counters_shared`, added to by its
 * other threads (handle.h, count()). Relaxed atomics; readers sum both rows (part_count). */
enum shmq_counter {
	C_SENT,
	C_RECEIVED,
	C_ACKED,
	C_NACKED,
	C_REDELIVERED,
	C_EXTENDED,
	C_STALE,
	C_RECL_EXPIRED,
	C_RECL_DEAD_OWNER,
	C_RETIRED_WRITES,
	C_DEAD_LETTERED,
	C_PROD_WAITS,
	C_CONS_WAITS,
	C_REJECTED,
	C_REDRIVEN,
	C_PURGED,
	C_DLQ_DROPPED,
	C_RETRIED,
	C_RECLAIM_PASSES,
	C_DUPLICATES,	  /* keyed sends not enqueued: the key was sent within the window */
	C_DEDUP_EVICTED,  /* live dedup entries overwritten before their window ended (table full) */
	C_DONE_MARKED,	  /* "processed" records written (shmq_done_mark, shmq_ack_done) */
	C_DONE_HITS,	  /* done checks that found the work already done */
	C_PREFETCH_WAITS, /* receives that found the handle at its prefetch limit */
	C_STOLEN,	  /* first deliveries taken from a lane other than the receiver's own */
	C_COUNT
};

enum shmq_part_state {
	PART_FREE = 0,
	PART_ALIVE = 1
};
/* A participant record's state word: [ freed_ms:24 | epoch:32 | state:8 ]. epoch changes with every
 * claim, so (index, epoch) names one participant for good, whoever claims the record later.
 * freed_ms: low bits of when a reclaim pass freed the record (for the reuse delay; odd), 0 when its
 * owner freed it by a clean close. */
#define PS_FREED_MASK 0xffffffULL
static inline uint64_t ps_make(uint64_t epoch, unsigned state, uint64_t freed_ms)
{
	return ((freed_ms & PS_FREED_MASK) << 40) | ((epoch & 0xffffffff) << 8) | (state & 0xff);
}
static inline unsigned ps_state(uint64_t v) { return v & 0xff; }
static inline uint64_t ps_epoch(uint64_t v) { return (v >> 8) & 0xffffffff; }
static inline uint64_t ps_freed(uint64_t v) { return v >> 40; }
#define PART_CONSUMER 1u
#define WAITING_MSGS 1u
#define WAITING_ROOM (1u << 16)

/* One lane's ticket counters, each on its own line (producers write one, consumers the other). */
struct shmq_lane {
	_Alignas(SHMQ_CACHELINE) _Atomic uint64_t prod_tail; /* next ticket for a producer */
	_Alignas(SHMQ_CACHELINE) _Atomic uint64_t cons_head; /* next ticket for first delivery */
};

struct shmq_participant {
	/* ps_make() above: claimed by CAS FREE -> ALIVE; epoch changes on every claim */
	_Atomic uint64_t state;
	int32_t pid;	       /* informational only: liveness comes from the OFD lock */
	_Atomic uint32_t role; /* PART_CONSUMER once it has received: lanes are shared out among those */
	uint64_t attached_ms;
	_Atomic uint64_t last_active_ms;
	/* the counters of the handle's counting thread, its only writer while the record is ours */
	_Atomic uint64_t counters[C_COUNT];
	/* key-hash queues: [ fences:16 | count:16 ], this participant's threads now inside a
	 * first-delivery take, and how often a consumer that took up lanes counted such a take out
	 * for being older than a lease (lanes.c) */
	_Atomic uint32_t kh_taking;
	/* [ ms:32 | epoch:32 ] when a reclaim pass first found this record's participant (that epoch)
	 * gone: a sliced pass frees the record only if that was before the pass started */
	_Atomic uint64_t dead_seen;
	/* what the participant is: SHMQ_KIND_* bits it set itself (stat's ROLE; the consumer bit is
	 * `role` above, which the lane assignment reads) */
	_Atomic uint32_t kinds;
	/* its calls asleep now: [ for room:16 | for messages:16 ] (stat: what it is doing); the
	 * pair fills the line up to the shared row (not _Alignas: an image needs 8-byte alignment) */
	_Atomic uint32_t waiting;
	/* the counters of the handle's other threads (fetch_add): on lines of their own, so they
	 * do not take the counting thread's lines away from it */
	_Atomic uint64_t counters_shared[C_COUNT];
	/* the inode of its process's PID namespace (0: unknown), so that a reader in another one
	 * knows `pid` is not a PID of its own (liveness never depends on it: the OFD lock does) */
	uint64_t pid_ns;
};
static_assert(sizeof(struct shmq_participant) <= SHMQ_PART_SIZE, "participant record fits");
static_assert(offsetof(struct shmq_participant, counters_shared) % SHMQ_CACHELINE == 0,
	      "the shared row starts a line");

/* Counter k of record p: both rows. */
static inline uint64_t part_count(const struct shmq_participant *p, enum shmq_counter k)
{
	return atomic_load_explicit(&p->counters[k], memory_order_relaxed) +
	       atomic_load_explicit(&p->counters_shared[k], memory_order_relaxed);
}

struct shmq_hdr {
	/* line 0-1: immutable after creation */
	_Atomic uint64_t magic; /* written last at creation (release): readers wait for it */
	uint32_t version;
	uint32_t hdr_size;
	uint64_t total_size;
	uint64_t parts_off;
	uint64_t slots_off;
	uint32_t max_participants;
	uint32_t capacity;
	uint32_t slot_size;
	uint32_t lease_ms;
	uint32_t max_deliveries;
	uint32_t retry_base_ms;
	uint32_t retry_max_ms;
	uint32_t mode;
	int32_t creator_pid;
	uint32_t dlq_max; /* most dead letters kept; beyond it the oldest is dropped (and counted) */
	uint32_t reclaim_interval_ms;
	uint32_t dedup_entries; /* power of two, or 0: no dedup table */
	uint64_t created_ns;
	uint64_t dedup_off;
	uint32_t dedup_window_ms;
	uint32_t lanes;	   /* sub-rings, 1..SHMQ_LANES_MAX; capacity / lanes is a power of two */
	uint32_t dispatch; /* enum shmq_dispatch: how producers choose a lane */
	uint32_t weights[SHMQ_LANES_MAX]; /* per lane, for SHMQ_DISPATCH_WEIGHTED; 1..SHMQ_WEIGHT_MAX */

	/* futex words are 32-bit; each counts wake-up calls (publishes, resp. frees, that found
	 * sleepers). Beside each, its sleepers flag: odd while someone may sleep, a generation moved
	 * forward by every registration and every clear (never a count: see wait.c) */
	_Alignas(SHMQ_CACHELINE) _Atomic uint32_t data_seq;
	_Atomic uint32_t data_sleepers;
	_Alignas(SHMQ_CACHELINE) _Atomic uint32_t space_seq;
	_Atomic uint32_t space_sleepers;
	/* redelivery hint: [ earliest due time in ms (48 bits) | epoch (16 bits) ]. Every nack bumps the
	 * epoch, so a consumer's scan may publish the next due time only if no nack raced with it.
	 * A hint only: a stale value delays a redelivery until the next scan, never loses it. */
	_Alignas(SHMQ_CACHELINE) _Atomic uint64_t redeliver;
	/* when receivers run their next reclaim pass (ms); the receiver whose CAS moves it runs it */
	_Alignas(SHMQ_CACHELINE) _Atomic uint64_t reclaim_next_ms;
	/* leased + being-written slots the last reclaim pass saw (RECLAIM_HELD_OPEN while a pass
	 * runs after one that saw some; 1 after a lease that found it 0 or OPEN): 0 lets sleeping
	 * receivers wake for passes less often (nothing can expire or be orphaned until somebody
	 * leases again). See reclaim.c */
	_Atomic uint32_t reclaim_held;
	/* the receivers' pass, done in slices (reclaim.c): [ pass:40 | next slot to claim:24 ], the
	 * slot count when every slot of the pass is claimed. On this line: every receive reads it. */
	_Atomic uint64_t reclaim_pos;
	/* [ start_ms:32 | slots done:24 | pass:8 ] of the pass: its last slice frees dead records */
	_Atomic uint64_t reclaim_done;
	_Atomic uint32_t reclaim_acc; /* leased + being-written slots its slices saw so far */
	/* the settings' generation (settings.c): 0: the creation config; else even, naming the valid
	 * one of the two `live` blocks below (an odd value is none: a scribble). On this line: every
	 * receive reads it */
	_Atomic uint32_t settings_gen;
	struct shmq_lane lane[SHMQ_LANES_MAX];
	/* counters of participant records since reused or freed by a clean close: the totals are
	 * these plus every record's, and a record shows only its own participant's traffic */
	_Alignas(SHMQ_CACHELINE) _Atomic uint64_t retired[C_COUNT];
	/* key-hash queues: [ generation:32 | consumer set:32 ], the set a hash of the active
	 * consumers' record indexes. A consumer that computes another set than the word's moves it
	 * to generation + 1 with its own (CAS), and every announced change (a consumer's first
	 * receive, its return after idling, its close) bumps the generation: consumers compare the
	 * generation to the one their lanes were computed at before each first delivery (lanes.c) */
	_Alignas(SHMQ_CACHELINE) _Atomic uint64_t assign_gen;
	/* immutable after creation: the creator's time-namespace offsets (ns) of CLOCK_MONOTONIC and
	 * CLOCK_BOOTTIME, as /proc/self/timens_offsets gives them (0 in the initial namespace), and
	 * the inode of its time namespace (0: unknown). Every deadline in the segment is on the
	 * creator's CLOCK_MONOTONIC: shmq_open refuses a process whose offsets differ (-EXDEV).
	 * timens_offsets_unknown: the creator had unshared a time namespace for its children, so the
	 * file showed theirs, not its own: then only its namespace's inode identifies its clock */
	int64_t timens_mono_ns;
	int64_t timens_boot_ns;
	uint64_t timens_ino;
	uint32_t timens_offsets_unknown;
	/* dead letters per lane, a hint (dlq.c): raised after a slot went dead, lowered after its
	 * redrive, purge or drop, set by every DLQ pass to what it counted. Dead-lettering runs the
	 * DLQ's pass over the whole ring only when these say it has something to drop */
	_Alignas(SHMQ_CACHELINE) _Atomic uint32_t dlq_count[SHMQ_LANES_MAX];
	/* dead slots the slices of the receivers' reclaim pass saw so far: its last slice checks the
	 * hints against them */
	_Atomic uint32_t reclaim_dead;
	/* immutable after creation: where the holder records are (hr_make), capacity * 8 bytes */
	uint64_t holders_off;
	/* the settings a live queue may change (shmq_settings_update), two blocks: settings_gen g
	 * (even, not 0) names live[(g / 2) % 2] as the valid one, and a writer writes only the other;
	 * every handle checks them against the config rules before it uses them */
	struct {
		_Alignas(SHMQ_CACHELINE) _Atomic uint32_t lease_ms;
		_Atomic uint32_t max_deliveries;
		_Atomic uint32_t retry_base_ms;
		_Atomic uint32_t retry_max_ms;
		_Atomic uint32_t reclaim_interval_ms;
		_Atomic uint32_t dlq_max;
	} live[2];
	/* descriptor waiters (event.c): bit i set while participant i's shmq_fd is armed (it also
	 * registered in data_sleepers, so a publish calls shmq_wake). A waker takes a bit (atomic)
	 * before it sends that waiter its datagram; a waiter killed while armed leaves its bit to
	 * the next wake-up, which takes it. Any bit names a record index < SHMQ_MAX_PARTICIPANTS, so
	 * a corrupted word costs spurious datagrams, nothing else */
	_Alignas(SHMQ_CACHELINE) _Atomic uint64_t fd_waiters[SHMQ_MAX_PARTICIPANTS / 64];
};
static_assert(sizeof(struct shmq_hdr) <= SHMQ_HDR_SIZE, "header fits its page");
static_assert(SHMQ_MAX_PARTICIPANTS % 64 == 0, "fd_waiters covers every record index");

/*
 * The dedup table: dedup_entries entries of 128 B (the word, the key and its message id) in groups
 * of DEDUP_PROBES. A group is a block of 1 + DEDUP_PROBES slots of 128 B: its control record
 * (struct shmq_dedup_group), then its entries, so a lookup and the claim that follows it stay in
 * one page. A key lives in the group of hash & (entries - 1): the group is its whole probe run, and
 * the control record decides presence in one cache line: one byte per entry, an entry is read only
 * when its byte may name the key. Each entry's word:
 *
 *   63          24 23      13 12  11 10   9 8      0
 *   [ time_ms:40  | owner:11 | kind:2 | state:2 | tag:9 ]     EMPTY, VALID
 *   [ epoch:40    | owner:11 | kind:2 | state:2 | tag:9 ]     CLAIMED
 *
 * state EMPTY / CLAIMED (owner is writing it: a send or a mark in progress) / VALID (time_ms:
 * when it was recorded; live for the window after it; time 0 = released). Entries are never
 * emptied again: an expired or released one is reused in place. A claim names its owner
 * by record index and the record's epoch (ps_epoch) at the claim: the claim is alive only while
 * that record is ALIVE in that epoch and its lock is held, so a newcomer that reuses a dead
 * claimer's record does not bring the claim back to life (a crash still leaves one well-defined
 * word, which the next claimer of the entry takes over). kind: what the key
 * means (published, processed by application key, processed by message id). tag: 9 bits of the
 * key's hash, so a racer can tell "my key may be in progress there" before the key bytes are
 * written. Key bytes and hash are written while CLAIMED, published by the release CAS to VALID;
 * readers re-check the word after reading them (an entry may be recycled meanwhile). One handle's
 * claims of one entry all have the same word, so `ready` is cleared when a claim is settled: a
 * racer never takes a previous claim's key for the current one's.
 *
 * Control bytes (DC_*): EMPTY (the entry was never claimed; its word is EMPTY), BUSY (someone is
 * claiming it, or was: look at the entry), or 0x80 | the top 7 bits of the key's hash (= tag >> 2).
 * The invariant: while an entry holds key K (CLAIMED for it or VALID), its byte is K's tag or BUSY,
 * so a lookup that skips the entries whose byte names another tag never misses K. A claimer
 * stores BUSY before its claim CAS and K's tag after it, while the claim is its own; a stale tag
 * (a claimer that lost its CAS, died, or an entry released) is BUSY or the tag of a key the entry
 * no longer holds, and costs a look at the entry, never a miss. Any other value is never written:
 * lookups treat it as BUSY, `shmq check` reports it.
 */
#define SHMQ_DEDUP_ENTRY_SIZE 128u
#define DEDUP_PROBES 16u
enum {
	DE_EMPTY = 0,
	DE_CLAIMED = 1,
	DE_VALID = 2
};
enum {
	DK_PUBLISHED = 0,
	DK_DONE_KEY = 1,
	DK_DONE_ID = 2
};
static inline uint64_t de_make(uint64_t ms, unsigned owner, unsigned kind, unsigned state, unsigned tag)
{
	return ((ms & ((1ULL << 40) - 1)) << 24) | ((uint64_t)(owner & 0x7ff) << 13) |
	       ((uint64_t)(kind & 3) << 11) | ((uint64_t)(state & 3) << 9) | (tag & 0x1ff);
}
static inline uint64_t de_ms(uint64_t w) { return w >> 24; }
static inline uint64_t de_epoch(uint64_t w) { return (w >> 24) & 0xffffffff; } /* CLAIMED only */
static inline unsigned de_owner(uint64_t w) { return (w >> 13) & 0x7ff; }
static inline unsigned de_kind(uint64_t w) { return (w >> 11) & 3; }
static inline unsigned de_state(uint64_t w) { return (w >> 9) & 3; }
static inline unsigned de_tag(uint64_t w) { return w & 0x1ff; }

struct shmq_dedup_entry {
	_Atomic uint64_t word;
	uint64_t hash;
	uint64_t msg_id; /* published: the id of the message the key sent */
	/* = the claim word once the claimer has written hash and key: until then a racer cannot
	 * tell which key the claim is for */
	_Atomic uint64_t ready;
	uint32_t key_len;
	uint32_t pad_;
	unsigned char key[SHMQ_KEY_MAX]; /* from byte 40: a key of up to 24 bytes stays in line 0 */
	unsigned char pad2_[SHMQ_DEDUP_ENTRY_SIZE - 40 - SHMQ_KEY_MAX];
};
static_assert(sizeof(struct shmq_dedup_entry) == SHMQ_DEDUP_ENTRY_SIZE, "dedup entry size");

enum {
	DC_EMPTY = 0x00,
	DC_BUSY = 0x01,
	DC_TAG = 0x80 /* | 7 bits of the key's hash */
};
/* The control byte of a key whose entry word carries tag9. */
static inline unsigned dc_tag(unsigned tag9) { return DC_TAG | ((tag9 >> 2) & 0x7f); }

struct shmq_dedup_group {
	union {
		_Atomic uint8_t ctrl[DEDUP_PROBES]; /* entry j of the group: DC_* above */
		/* the same bytes, 8 to a word: a lookup matches them 8 at a time (dedup.c) */
		_Atomic uint64_t ctrl_w[DEDUP_PROBES / 8];
	};
	/* entry j's expiry hint: the first time unit (dedup_hint_shift) in which it holds no live key;
	 * for a claim in progress, a time far ahead. A hint only: it spares claims reading the words
	 * of live entries; the word decides. */
	_Atomic uint16_t until[DEDUP_PROBES];
	uint8_t pad_[SHMQ_CACHELINE - 3 * DEDUP_PROBES];
};
static_assert(sizeof(struct shmq_dedup_group) == SHMQ_CACHELINE, "one control line per group");

/* The expiry hints' unit, 2^shift ms: the smallest that keeps 8 windows inside their 16 bits. */
static inline unsigned dedup_hint_shift(uint32_t window_ms)
{
	unsigned s = 0;
	while (s < 31 && (window_ms >> s) >= 8192)
		s++;
	return s;
}

/* A group's block: its control record in the first slot, then its entries. */
#define SHMQ_DEDUP_GROUP_SIZE ((DEDUP_PROBES + 1) * SHMQ_DEDUP_ENTRY_SIZE)
static_assert(sizeof(struct shmq_dedup_group) <= SHMQ_DEDUP_ENTRY_SIZE, "the control record fits a slot");

/* Bytes of a table of `entries` (a power of two >= DEDUP_PROBES, or 0). */
static inline uint64_t dedup_table_size(uint32_t entries)
{
	return (uint64_t)entries / DEDUP_PROBES * SHMQ_DEDUP_GROUP_SIZE;
}
/* Offsets in the table of entry i (< entries) and of the control record of its group. */
static inline uint64_t dedup_entry_off(uint64_t i)
{
	return i / DEDUP_PROBES * SHMQ_DEDUP_GROUP_SIZE + (1 + i % DEDUP_PROBES) * SHMQ_DEDUP_ENTRY_SIZE;
}
static inline uint64_t dedup_group_off(uint64_t i) { return i / DEDUP_PROBES * SHMQ_DEDUP_GROUP_SIZE; }
static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free to work across processes");
static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free to work across processes");
static_assert(ATOMIC_CHAR_LOCK_FREE == 2 && ATOMIC_SHORT_LOCK_FREE == 2,
	      "8- and 16-bit atomics (dedup control records) must be lock-free to work across processes");

#endif

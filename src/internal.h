/* SPDX-License-Identifier: MIT */
/* The process-local handle and helpers shared by the library's .c files (never exported). */
#ifndef SHMQ_INTERNAL_H
#define SHMQ_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sched.h>
#include <time.h>

#include "fault.h"
#include "lane.h"
#include "layout.h"
#include "shmq.h"
#include "slot.h"

#ifndef SHMQ_HIDDEN
#define SHMQ_HIDDEN __attribute__((visibility("hidden")))
#endif

struct shmq {
	struct shmq_hdr *hdr;
	unsigned char *base;
	uint64_t size;
	int fd;		   /* our lock's own description (registry.c); -1 in a forked child */
	int foreign;	   /* inherited across fork(): every call fails with -ECHILD (registry.c) */
	uint32_t part;	   /* our participant index */
	uint32_t owner;	   /* part + 1, as stored in slot words */
	uint32_t epoch;	   /* our record's epoch (ps_epoch): with part, names us for good */
	uint32_t capacity; /* slots in all lanes */
	uint32_t lanes;
	uint32_t lane_mask;  /* slots per lane - 1 */
	uint32_t lane_shift; /* log2(slots per lane) */
	uint32_t dispatch;
	/* the slots and lanes as the ring core (lane.h) sees them: copies of the fields above */
	struct shmq_lane_view view;
	int uses_lanes; /* receives go through lane assignment: lanes > 1, or a key-hash queue */
	uint32_t weights[SHMQ_LANES_MAX];
	uint32_t slot_size;
	uint32_t max_payload;
	_Atomic uint32_t recv_count; /* rotates the start of redelivery scans */
	struct {
		/* a recent cons_head, so producers rarely read the shared one */
		_Alignas(SHMQ_CACHELINE) _Atomic uint64_t head_cache;
		_Atomic uint32_t scan_cursor; /* where a producer's next look for a free slot starts */
	} lc[SHMQ_LANES_MAX];
	_Atomic uint32_t rr_next;	 /* round-robin dispatch */
	int32_t wrr_cur[SHMQ_LANES_MAX]; /* smooth weighted round robin state, under wrr_lock */
	_Atomic int wrr_lock;
	/* consumer side: the lanes this handle was assigned (bit l: lane l), refreshed from the
	 * participant registry every ASSIGN_REFRESH_MS */
	_Atomic uint32_t home;
	_Atomic uint64_t home_at_ms;  /* when home was computed; 0: never */
	_Atomic uint32_t lane_cursor; /* rotates the home lane a receive looks at first */
	/* key-hash: [ assign_gen:32 | waiting:16 | serving:16 ], the lanes this handle serves, those
	 * assigned to it that it waits to take up, and the generation they were computed at: one
	 * word, so threads sharing the handle never pair one generation with another's lanes */
	_Atomic uint64_t kh_view;
	struct {
		_Atomic uint64_t token; /* key-hash: the lease word of our message in hand, 0: none */
		_Atomic uint32_t idx;	/* its slot */
		/* a take-up's look for other consumers' leases in the lane (lanes.c): [ generation:32 |
		 * next slot + 1:32 ] (0: not started), the foreign lease word it stopped at, and when
		 * that word's holder was last found alive */
		_Atomic uint64_t scan;
		_Atomic uint64_t scan_word;
		_Atomic uint64_t scan_probed_ms;
	} kh[SHMQ_LANES_MAX];
	/* a timeout-0 receive's wait for a ticket a producer holds, per lane (ticket + 1; 0: none).
	 * Such a receive returns at once, so the grace after which take_head() abandons the ticket
	 * or probes its writer runs across calls, from the first call that found it held */
	struct {
		_Atomic uint64_t ticket;
		_Atomic uint64_t since;
	} zw[SHMQ_LANES_MAX];
	/* prefetch: leases held (counted only while a limit is set); waiters sleep on it */
	_Atomic uint32_t prefetch; /* the limit, 0: none; may change while receivers wait at it */
	/* [ takes:32 | inflight:32 ]: units in use, and a count of takes that only grows, so a
	 * recount's CAS fails if a unit was taken while it looked at the slots (see ring.c) */
	_Atomic uint64_t acct;
	_Atomic uint32_t pending; /* units taken by receives still in progress (not yet leases) */
	_Atomic uint32_t inflight_waiters;
	_Atomic uint64_t recount_ms;
	struct shmq_participant *me;
	unsigned char *slots; /* process-local copies of validated offsets: never re-read from the header */
	unsigned char *parts;
	uint32_t max_parts;
	uint32_t dlq_max;
	/* the config as validated at open: a header scribbled later cannot change behaviour */
	uint32_t lease_ms;
	uint32_t max_deliveries;
	uint32_t retry_base_ms;
	uint32_t retry_max_ms;
	uint32_t reclaim_interval_ms;
	unsigned char *dedup; /* the dedup table, NULL if the queue has none */
	uint32_t dedup_mask;
	uint32_t dedup_window_ms;
	int32_t pid;
	char name[SHMQ_NAME_MAX + 2];
	struct shmq *fork_prev, *fork_next; /* this process's attached handles (registry.c) */
};

/* A handle this process inherited across fork() (registry.c): calls on it fail with -ECHILD. One
 * load of a field the calls read anyway: no syscall (getpid) per call. */
static inline int foreign(const shmq_t *q) { return q && q->foreign; }

#define RR_RUN 16	     /* sends per lane before round-robin dispatch moves on */
#define ASSIGN_REFRESH_MS 50 /* consumers recompute their lanes this often (lanes.c) */

/* The lease word tag (lw_tag_of) of the delivery whose slot word is w. */
static inline uint32_t lease_tag(const shmq_t *q, uint64_t w) { return lw_tag_of(w, q->lane_shift); }

/* Slot idx (0 <= idx < capacity) of the whole queue. */
static inline struct shmq_slot *slot_at(const shmq_t *q, uint64_t idx)
{
	return (struct shmq_slot *)(q->slots + idx * (uint64_t)q->slot_size);
}

/* The index of the slot that ticket t of lane l lives in. */
static inline uint32_t lane_idx(const shmq_t *q, uint32_t l, uint64_t t)
{
	return (l << q->lane_shift) | (uint32_t)(t & q->lane_mask);
}

/* Message ids: ticket t of lane l is id t * lanes + l (unique in the queue, increasing in send
 * order within a lane; with one lane, id = ticket). */
static inline uint64_t msg_id(const shmq_t *q, uint32_t l, uint64_t t) { return t * q->lanes + l; }
static inline uint32_t id_slot(const shmq_t *q, uint64_t id)
{
	return lane_idx(q, (uint32_t)(id % q->lanes), id / q->lanes);
}
static inline uint64_t id_ticket(const shmq_t *q, uint64_t id) { return id / q->lanes; }
/* the lane slot idx belongs to */
static inline uint32_t idx_lane(const shmq_t *q, uint32_t idx) { return idx >> q->lane_shift; }

/* The key length of a slot as far as it can be trusted: never past the key limit or the payload
 * area (the segment is shared, so a corrupted value must not move a read out of bounds). */
static inline uint32_t slot_key_len(const struct shmq_slot *s, uint32_t max_payload)
{
	uint32_t k = s->key_len;
	if (k > SHMQ_KEY_MAX)
		k = SHMQ_KEY_MAX;
	return k < max_payload ? k : max_payload;
}

/* The payload length after the key, clamped likewise. */
static inline uint32_t slot_data_len(const struct shmq_slot *s, uint32_t key_len, uint32_t max_payload)
{
	uint32_t len = s->len;
	return len <= max_payload - key_len ? len : max_payload - key_len;
}

static inline struct shmq_participant *part_at(const shmq_t *q, uint32_t i)
{
	return (struct shmq_participant *)(q->parts + (uint64_t)i * SHMQ_PART_SIZE);
}

static inline void count(shmq_t *q, enum shmq_counter c, uint64_t n)
{
	/* only this participant (possibly several threads sharing the handle) writes its counters,
	 * so the line stays in our cache: the RMW is uncontended */
	atomic_fetch_add_explicit(&q->me->counters[c], n, memory_order_relaxed);
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Leases need milliseconds, not nanoseconds: the coarse clock costs a few ns instead of ~30. */
static inline uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

/* The coarse clock in ns, for send timestamps: a precise clock_gettime per message would cost
 * ~30 ns, a quarter of a message's budget. */
static inline uint64_t now_coarse_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Lane l's ticket counter `field` (prod_tail, cons_head) of the segment at base, read through its
 * own 8-byte alignment: an image handed to a view need not be aligned like struct shmq_hdr (64). */
#define LANE_LOAD(base, l, field)                                                                            \
	atomic_load_explicit((const _Atomic uint64_t *)((const unsigned char *)(base) +                      \
							offsetof(struct shmq_hdr, lane) +                    \
							(size_t)(l) * sizeof(struct shmq_lane) +             \
							offsetof(struct shmq_lane, field)),                  \
			     memory_order_acquire)
/* Retired counter k of the header (see struct shmq_hdr), read like LANE_LOAD. */
#define RETIRED_LOAD(base, k)                                                                                \
	atomic_load_explicit((const _Atomic uint64_t *)((const unsigned char *)(base) +                      \
							offsetof(struct shmq_hdr, retired) +                 \
							(size_t)(k) * sizeof(uint64_t)),                     \
			     memory_order_relaxed)
/* the alignment an image needs: that of the slot and participant records */
#define SHMQ_IMAGE_ALIGN 8u

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static inline uint32_t random_u32(void)
{
	/* xorshift per thread: jitter needs spread, not quality */
	static _Thread_local uint64_t st;
	if (!st)
		st = now_ns() | 1;
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return (uint32_t)(st >> 32);
}

/* wait.c: the sleepers word beside each futex word is a flag with a generation (odd: someone
 * may sleep), never a count: see wait.c */
#define SHMQ_WAKE_ALL 0x7fffffffu
SHMQ_HIDDEN int shmq_futex_wait(_Atomic uint32_t *word, uint32_t seen, uint64_t deadline_ns);
SHMQ_HIDDEN void shmq_futex_wake_all(_Atomic uint32_t *word);
/* A sleeper's registration, before its last check of the ring: then futex_wait(seq, seen). */
SHMQ_HIDDEN void shmq_sleep_register(_Atomic uint32_t *sleepers);
/* Wakes n sleepers (all on key-hash queues) of a flag read as v (odd), clearing it if fewer slept. */
SHMQ_HIDDEN void shmq_wake(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, uint32_t v,
			   unsigned n);
/* After n messages published (or n slots freed) by any stores: wakes n sleepers, if any may sleep. */
SHMQ_HIDDEN void shmq_notify(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, unsigned n);
/* shmq_notify for a caller whose publishing RMW was seq_cst: no fence. If the seq_cst load below
 * misses a sleeper's registration, the publish precedes that registration, hence the sleeper's
 * fence, in the seq_cst order, so its re-check sees the publish. One load when nobody sleeps. */
static inline void shmq_notify_sc(shmq_t *q, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers, unsigned n)
{
	uint32_t v = atomic_load_explicit(sleepers, memory_order_seq_cst);
	if (__builtin_expect(v & 1, 0))
		shmq_wake(q, seq, sleepers, v, n);
}
SHMQ_HIDDEN uint64_t shmq_deadline(int timeout_ms);

/* registry.c */
/* Claims a record for q, whose fd is its segment's descriptor from shm_open: on success q->fd is
 * a new description of the same object that holds our lock, and the caller closes the old one.
 * lenient 0 takes only records free for longer than the reuse delay, 1 any free one; -EUSERS: none
 * (the caller may run a reclaim pass and ask again). */
SHMQ_HIDDEN int shmq_part_attach(shmq_t *q, int lenient);
/* Frees (or leaves to reclaim) q's record, drops its lock and closes q->fd. A foreign handle's
 * record and lock are its parent's: they are left alone. */
SHMQ_HIDDEN void shmq_part_detach(shmq_t *q);
/* 1 alive, 0 dead (its record may be reclaimed), for participant index i */
SHMQ_HIDDEN int shmq_part_alive(shmq_t *q, uint32_t i);
/* shmq_part_alive for the ring core's view (lane.h): ctx is the handle, owner = index + 1 */
SHMQ_HIDDEN int shmq_owner_alive(void *ctx, unsigned owner);
/* 1: record i is ALIVE in epoch `epoch` and its owner lives; 0: that participant is gone (its record
 * may have been freed and claimed again since) */
SHMQ_HIDDEN int shmq_part_alive_in(shmq_t *q, uint32_t i, uint64_t epoch);
/* 1: participant i's lock byte is held (alive), 0: not held, -1: cannot tell */
SHMQ_HIDDEN int shmq_lock_probe(int fd, uint32_t i);
SHMQ_HIDDEN int shmq_part_release(shmq_t *q, uint32_t i, uint64_t v);
/* Slots this handle holds LEASED (and, with writing_too, WRITING), counted from the slot words. */
SHMQ_HIDDEN uint32_t shmq_slots_held(shmq_t *q, int writing_too);
/* Key-hash queues: announces a change of the consumer set (bumps assign_gen). */
SHMQ_HIDDEN void shmq_assignment_changed(shmq_t *q);

/* reclaim.c: the receivers' pass, in slices. start opens a pass unless one is open; step does up
 * to budget slots of the open one (1: it claimed the last of them). */
#define RECLAIM_SLICE 4096u
/* reclaim_held while a pass is open and the previous one saw leases (see reclaim.c) */
#define RECLAIM_HELD_OPEN 0x80000000u
SHMQ_HIDDEN void shmq_reclaim_start(shmq_t *q);
SHMQ_HIDDEN int shmq_reclaim_step(shmq_t *q, uint32_t budget);
/* reclaim_pos: [ pass:40 | next slot to claim:24 ]; pass 0 is none (a new segment is all zero) */
#define RECLAIM_POS_BITS 24
#define RECLAIM_POS_MASK ((1ULL << RECLAIM_POS_BITS) - 1)
static inline int reclaim_pos_open(uint64_t pos, uint64_t capacity)
{
	return pos >> RECLAIM_POS_BITS && (pos & RECLAIM_POS_MASK) < capacity;
}
/* 1 while a pass has slots left to claim (relaxed: it only shares out work) */
static inline int shmq_reclaim_open(shmq_t *q)
{
	return reclaim_pos_open(atomic_load_explicit(&q->hdr->reclaim_pos, memory_order_relaxed),
				q->capacity);
}

/* redeliver.c: the backoff before redelivery n, and the header's redelivery hint (see layout.h) */
SHMQ_HIDDEN uint64_t shmq_backoff_ms(const shmq_t *q, unsigned deliveries);
/* After n messages (0: none, only a due time seen) were made DELAYED, the earliest due at due_ms:
 * moves the redelivery hint and wakes as many sleepers as it has to (see redeliver.c). */
SHMQ_HIDDEN void shmq_note_delayed(shmq_t *q, uint64_t due_ms, unsigned n);
#define REDELIVER_NONE ((1ULL << 48) - 1)
static inline uint64_t rd_due(uint64_t v) { return v >> 16; }
static inline uint64_t rd_make(uint64_t due, uint64_t epoch) { return (due << 16) | (epoch & 0xffff); }

/* ring.c */

/* shmq_send_reserve into lane l; strict: wait for room there (per-key order), else move on */
SHMQ_HIDDEN int shmq_reserve_lane(shmq_t *q, uint32_t l, int strict, size_t len, struct shmq_reservation *r,
				  int timeout_ms);
/* shmq_send_commit for a payload area that starts with a key_len-byte idempotency key */
SHMQ_HIDDEN int shmq_commit_keyed(shmq_t *q, struct shmq_reservation *r, size_t len, uint32_t key_len);

/* lanes.c: lane assignment is a function of the participant records (see lanes.c) */
struct shmq_assign_ctx {
	const unsigned char *parts;
	uint32_t max_parts;
	uint32_t lanes;
	int fd;		   /* for liveness probes; -1: an image, liveness unknown (counted alive) */
	uint32_t self;	   /* the asking consumer's record index (UINT32_MAX: a view) */
	uint64_t now_ms;   /* CLOCK_MONOTONIC_COARSE */
	uint32_t lease_ms; /* a consumer idle for longer holds no lease and counts no more */
	int exclusive;	   /* key-hash: one consumer per lane, extra consumers stand by */
};
/* The lanes (bit l: lane l) assigned to consumer c->self. */
SHMQ_HIDDEN uint32_t shmq_lanes_assigned(const struct shmq_assign_ctx *c);
/* owner[l] = record index + 1 of lane l's (first) consumer, 0: none. Returns the consumers counted. */
SHMQ_HIDDEN uint32_t shmq_lane_consumers(const struct shmq_assign_ctx *c, uint32_t *owner);
/* The lane a send goes to (rkey may be NULL); shmq_dispatch_lane keeps one-lane queues (the usual
 * case, and the send hot path) from calling out to the policies. */
SHMQ_HIDDEN uint32_t shmq_dispatch_policy(shmq_t *q, const void *rkey, size_t rkey_len);
static inline uint32_t shmq_dispatch_lane(shmq_t *q, const void *rkey, size_t rkey_len)
{
	return q->lanes > 1 ? shmq_dispatch_policy(q, rkey, rkey_len) : 0;
}
SHMQ_HIDDEN uint64_t shmq_hash(const void *key, size_t len);
/* Records that this handle receives (a consumer, for the lane assignment and stat) and polled at
 * now_ms; every receive call does, and again after each sleep. */
SHMQ_HIDDEN void shmq_consumer_poll(shmq_t *q, uint64_t now_ms);
/* Undelivered first deliveries of lane l (tickets taken, not yet passed by consumers), read
 * relaxed: an estimate, for where to send and where to look. */
SHMQ_HIDDEN uint64_t shmq_lane_backlog(shmq_t *q, uint32_t l);
/* This consumer's home lanes, recomputed every ASSIGN_REFRESH_MS. */
SHMQ_HIDDEN uint32_t shmq_home_lanes(shmq_t *q, uint64_t now_ms);
/* Key-hash queues: brackets a first-delivery take. begin returns the lanes this consumer may take
 * from now (re-validated if the consumer set changed since it last looked) and sets *fence for
 * end, which must follow; end returns 1 if the take was counted out meanwhile (it outlasted a
 * lease and another consumer took up lanes): then whatever it took must be given back. */
SHMQ_HIDDEN uint32_t shmq_kh_begin(shmq_t *q, uint64_t now_ms, uint32_t *fence);
SHMQ_HIDDEN int shmq_kh_end(shmq_t *q, uint32_t fence);

/* dlq.c: after n slots of lane l went dead: raises the lane's dead-letter hint */
SHMQ_HIDDEN void shmq_dlq_added(shmq_t *q, uint32_t l, unsigned n);
/* Drops the oldest dead letters beyond dlq_max (and beyond half a lane, with lanes), if the hints
 * say there are any, or if `seen` (dead slots a whole reclaim pass saw, 0: none) says the hints are
 * too low for a bound. Only then a pass over the whole ring. */
SHMQ_HIDDEN void shmq_dlq_enforce(shmq_t *q, uint64_t seen);

/* segment.c */
SHMQ_HIDDEN int shmq_normalize_name(const char *name, char *out, size_t outsz);
/* the config a header records (read from a validated copy) */
SHMQ_HIDDEN void shmq_hdr_config(const struct shmq_hdr *h, struct shmq_config *c);
/* Bytes of a segment for a valid cfg, and its formatting: base must hold that many zeroed bytes
 * (a fresh shm object, or a test's or fuzzer's buffer). Writes the magic last. */
SHMQ_HIDDEN uint64_t shmq_segment_size(const struct shmq_config *cfg);
SHMQ_HIDDEN void shmq_format(void *base, const struct shmq_config *cfg);
SHMQ_HIDDEN int shmq_validate_header(const struct shmq_hdr *h, uint64_t file_size);
typedef void (*shmq_hdr_report_fn)(void *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
SHMQ_HIDDEN int shmq_header_check(const struct shmq_hdr *h, uint64_t file_size, shmq_hdr_report_fn fn,
				  void *ctx);
/* A segment opened and validated (magic, version, sizes against fstat); hdr is a private copy of
 * its header, the only one bounds may come from. */
struct shmq_mapping {
	int fd;
	unsigned char *base;
	uint64_t size;
	struct shmq_hdr hdr;
	char name[SHMQ_NAME_MAX + 2];
};
/* writable 0: O_RDONLY + PROT_READ (inspection). trust: refuse (-EPERM) an object it does not
 * accept (struct shmq_open_options), before reading any of it; NULL: no owner check (inspection,
 * which writes nothing, may read any queue it can open). */
SHMQ_HIDDEN int shmq_map_segment(const char *name, int writable, const struct shmq_open_options *trust,
				 struct shmq_mapping *m);
#define SHMQ_LEASE_MAX_MS (7u * 24 * 3600 * 1000)
#define SHMQ_RETRY_MAX_MS (24u * 3600 * 1000)

#endif

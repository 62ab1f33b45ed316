/* SPDX-License-Identifier: MIT */
/* The process-local handle (struct shmq) and the helpers that read it: the geometry of slots,
 * lanes and message ids, this participant's counters, a spin pause and a jitter source. */
#ifndef SHMQ_HANDLE_H
#define SHMQ_HANDLE_H

#include <stdatomic.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "lane.h"
#include "layout.h"
#include "shmq.h"

#ifndef SHMQ_HIDDEN
#define SHMQ_HIDDEN __attribute__((visibility("hidden")))
#endif

/* A per-handle sequence: two halves, see seq_next() */
struct handle_seq {
	_Atomic uint32_t own;	 /* stepped by the handle's counting thread only */
	_Atomic uint32_t shared; /* by its other threads */
};

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
	/* SHMQ_KIND_* bits already in our record's `kinds` (mark_kind) */
	_Atomic uint32_t kinds_marked;
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
	struct handle_seq rr_next;	 /* round-robin dispatch */
	int32_t wrr_cur[SHMQ_LANES_MAX]; /* smooth weighted round robin state, under wrr_lock */
	_Atomic int wrr_lock;
	/* consumer side: the lanes this handle was assigned (bit l: lane l), refreshed from the
	 * participant registry every ASSIGN_REFRESH_MS */
	_Atomic uint32_t home;
	_Atomic uint64_t home_at_ms;   /* when home was computed; 0: never */
	struct handle_seq lane_cursor; /* rotates the home lane a receive looks at first */
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
	/* the thread that writes me->counters (shmq_count_tid), 0: none yet; set once (count.c) */
	_Atomic uint64_t count_owner;
	unsigned char *slots; /* process-local copies of validated offsets: never re-read from the header */
	unsigned char *parts;
	uint32_t max_parts;
	/* the settings as validated: at open, then at each change (settings.c); a header scribbled
	 * later cannot change behaviour. Atomic: a refresh by one thread may race with another's
	 * read (each value is used on its own, so relaxed loads do) */
	_Atomic uint32_t dlq_max;
	_Atomic uint32_t lease_ms;
	_Atomic uint32_t max_deliveries;
	_Atomic uint32_t retry_base_ms;
	_Atomic uint32_t retry_max_ms;
	_Atomic uint32_t reclaim_interval_ms;
	_Atomic uint32_t settings_gen; /* the header's settings_gen these come from */
	/* one thread at a time refreshes the six above, and one writes the header's settings (the
	 * settings lock, an OFD lock on our own description, does not exclude our own threads) */
	pthread_mutex_t settings_mu;
	unsigned char *dedup;	   /* the dedup table, NULL if the queue has none */
	_Atomic uint64_t *holders; /* the holder records, one per slot (layout.h: hr_make) */
	uint32_t dedup_mask;
	uint32_t dedup_window_ms;
	int32_t pid;
	uint64_t created_ns; /* the segment's, as validated at open: names its socket files (event.c) */
	/* event.c: shmq_fd's epoll instance, its socket and timer (+1 each; 0: none yet), created
	 * under ev_lock; the unbound socket this handle's wake-ups are sent from (+1; 0: none) */
	_Atomic int ev_fd, ev_sock, ev_timer, ev_tx;
	_Atomic int ev_lock;
	/* the receive count when shmq_fd_arm last answered 1 (UINT64_MAX: it answered 0) */
	_Atomic uint64_t ev_ready_at;
	char name[SHMQ_NAME_MAX + 2];
	struct shmq *fork_prev, *fork_next; /* this process's attached handles (registry.c) */
};

/* Thread-local state of the library: initial-exec, so that an access is one %fs-relative load
 * and not a call to __tls_get_addr (libshmq.so is linked into programs, not dlopen'ed late in
 * quantity: the few bytes come from the static TLS surplus the loader keeps for such objects) */
#define SHMQ_TLS _Thread_local __attribute__((tls_model("initial-exec")))

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

/* This thread's number for count(), unique among the threads the process ever had; COUNT_NO_TID
 * until the thread first counts on a handle it does not own (count.c). initial-exec: a load at a
 * fixed offset from the thread pointer, not a __tls_get_addr call per count. */
#define COUNT_NO_TID UINT64_MAX
extern SHMQ_HIDDEN __attribute__((tls_model("initial-exec"))) _Thread_local uint64_t shmq_count_tid;
/* For a thread whose number is not q's count_owner: 1 if it has just become q's counting thread
 * (q had none), else 0 (count.c). */
SHMQ_HIDDEN int shmq_count_claim(shmq_t *q);

/* 1 if the calling thread is q's counting thread: the first thread that counted on q or stepped
 * one of its sequences (then the only one that may write q's counting row and the `own` halves of
 * q's sequences), 0 for its other threads. Relaxed: count_owner is this thread's number only if
 * this thread stored it. */
static inline int counting_thread(shmq_t *q)
{
	uint64_t owner = atomic_load_explicit(&q->count_owner, memory_order_relaxed);
	return __builtin_expect(owner == shmq_count_tid, 1) || shmq_count_claim(q);
}

/* n added to counter c of the counting thread's row, by that thread: its only writer */
static inline void count_own(shmq_t *q, enum shmq_counter c, uint64_t n)
{
	_Atomic uint64_t *v = &q->me->counters[c];
	atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n, memory_order_relaxed);
}

/* Adds n to counter c of this participant. Only this handle's threads write its record's counters,
 * so their lines stay in our cache; and one thread, the counting thread, writes its row with a load
 * and a store, no locked instruction: it is the row's only writer, so nothing can come between the
 * two. The handle's other threads add to the shared row (a locked add). A counting thread that
 * exits leaves its row to nobody: the threads after it use the shared row (exact, only slower).
 * Relaxed throughout: readers sum both rows of every record (part_count) and want no ordering
 * with anything else. */
static inline void count(shmq_t *q, enum shmq_counter c, uint64_t n)
{
	if (counting_thread(q))
		count_own(q, c, n);
	else
		atomic_fetch_add_explicit(&q->me->counters_shared[c], n, memory_order_relaxed);
}

/* The next value of sequence s of q (round-robin dispatch, a receive's first lane): the counting
 * thread steps s->own with a load and a store (its only writer), the handle's other threads
 * s->shared with a fetch_add. Each of the two runs through every value in turn, as one producer's
 * or consumer's would. */
static inline uint32_t seq_next(shmq_t *q, struct handle_seq *s)
{
	if (counting_thread(q)) {
		uint32_t v = atomic_load_explicit(&s->own, memory_order_relaxed);
		atomic_store_explicit(&s->own, v + 1, memory_order_relaxed);
		return v;
	}
	return atomic_fetch_add_explicit(&s->shared, 1, memory_order_relaxed);
}

/* Records in our participant record that we are kind k (SHMQ_KIND_*), once: after the first time
 * one relaxed load of the handle (registry.c). */
SHMQ_HIDDEN void shmq_mark_kind_slow(shmq_t *q, uint32_t k);
static inline void mark_kind(shmq_t *q, uint32_t k)
{
	if (__builtin_expect(!(atomic_load_explicit(&q->kinds_marked, memory_order_relaxed) & k), 0))
		shmq_mark_kind_slow(q, k);
}

/* Brackets a sleep of one of our calls (w: WAITING_MSGS or WAITING_ROOM), for stat's "what it is
 * doing". A locked add on our own record, on the way to a futex wait only. */
static inline void waiting(shmq_t *q, uint32_t w, int on)
{
	if (on)
		atomic_fetch_add_explicit(&q->me->waiting, w, memory_order_relaxed);
	else
		atomic_fetch_sub_explicit(&q->me->waiting, w, memory_order_relaxed);
}

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
	static SHMQ_TLS uint64_t st;
	if (!st)
		st = now_ns() | 1;
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return (uint32_t)(st >> 32);
}

#endif

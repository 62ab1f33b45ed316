/* SPDX-License-Identifier: MIT */
/*
 * shmq: a leased, crash-safe, lock-free MPMC message queue in a POSIX shared-memory segment.
 *
 * Processes on one host create or open a queue by name. Producers send; a consumer receives a
 * message under a lease (owner + deadline) and then acks it (done), nacks it (retry later) or
 * extends the lease. A message is removed only by ack (or by the dead-letter path): delivery is
 * at-least-once. See docs/design.md for the segment layout and the slot state machine.
 *
 * Conventions
 *   - Every int return is 0, a count where documented, or a negative errno.
 *   - timeout_ms: 0 never waits, -1 waits forever, > 0 waits at most that long (CLOCK_MONOTONIC).
 *   - Blocking calls spin briefly, then sleep on a futex word inside the segment.
 *   - One shmq_t is one participant: it may be used by several threads of one process at once,
 *     but all of them share its owner identity (leases are fenced per delivery, not per thread).
 *   - A shmq_t belongs to the process that opened it: in a child made by fork() every call on an
 *     inherited handle returns -ECHILD (see "Handles and fork" below).
 *   - NAME is a POSIX shm name: "foo" and "/foo" are the same queue (/dev/shm/foo on Linux).
 *     At most SHMQ_NAME_MAX bytes, no '/' after the optional leading one.
 *   - All participants must share one CLOCK_MONOTONIC (one time namespace): the creator records
 *     its time-namespace offsets in the segment and shmq_open refuses a process whose offsets
 *     differ (-EXDEV). Read-only inspection (shmq_inspect.h) works from any namespace.
 */
#ifndef SHMQ_H
#define SHMQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

#define SHMQ_VERSION_MAJOR 0
#define SHMQ_VERSION_MINOR 1

#define SHMQ_NAME_MAX 200	     /* longest accepted NAME, leading '/' included */
#define SHMQ_SLOT_HEADER 64	     /* bytes of each slot used by shmq; payload max = slot_size - this */
#define SHMQ_CAPACITY_MAX (1u << 22) /* slots */
#define SHMQ_RECLAIM_INTERVAL_MAX 3600000u /* ms */
#define SHMQ_SLOT_SIZE_MAX (1u << 24)
#define SHMQ_MAX_DELIVERIES_MAX 255
#define SHMQ_MAX_PARTICIPANTS 1024 /* processes (handles) attached at once */
#define SHMQ_KEY_MAX 64		   /* longest idempotency key, bytes */
#define SHMQ_DEDUP_ENTRIES_MAX (1u << 22)
#define SHMQ_DUPLICATE 1     /* shmq_send_keyed: not enqueued, the key was sent within the window */
#define SHMQ_LANES_MAX 16    /* sub-rings of one queue */
#define SHMQ_WEIGHT_MAX 1000 /* largest per-lane weight */

/* How a producer chooses the lane of a message (a queue property, set at create). */
enum shmq_dispatch {
	SHMQ_DISPATCH_ROUND_ROBIN = 0, /* each producer handle cycles through the lanes */
	SHMQ_DISPATCH_RANDOM = 1,      /* uniformly at random */
	SHMQ_DISPATCH_WEIGHTED = 2,    /* in proportion to config.weights (smooth weighted round robin) */
	SHMQ_DISPATCH_KEY_HASH = 3,    /* by a hash of the routing key (shmq_send_routed) or, for
					* shmq_send_keyed, of the idempotency key: one key, one lane,
					* so first deliveries of a key keep their send order. Sends
					* with no key go round robin. */
	SHMQ_DISPATCH_LEAST_LOADED = 4 /* the lane with the fewest undelivered messages (of all lanes
					* up to 4, of two picked at random beyond) */
};

typedef struct shmq shmq_t; /* opaque: one process's handle on one mapped queue */

struct shmq_config {
	uint32_t capacity;  /* slots, at most SHMQ_CAPACITY_MAX (default 1024): lanes x a power of two
			     * >= 2 (with one lane, a power of two) */
	uint32_t slot_size; /* bytes per slot incl. SHMQ_SLOT_HEADER; multiple of 64, >= 128 (default 256) */
	uint32_t lease_ms;  /* lease length given by shmq_recv, >= 1 (default 30000) */
	uint32_t max_deliveries;	  /* deliveries before dead-lettering, 1..255 (default 16) */
	uint32_t retry_base_ms;		  /* nack backoff: base * 2^(n-1) ... (default 100) */
	uint32_t retry_max_ms;		  /* ... capped at this (default 30000); must be >= retry_base_ms */
	mode_t mode;			  /* segment permissions (default 0600; umask is not applied) */
	uint32_t dlq_max;		  /* dead letters kept, <= capacity (0: capacity / 4). When the DLQ is
					   * full the oldest dead letter is dropped and counted (dlq_dropped).
					   * With lanes, also at most half of each lane (letters stay in their
					   * slots: a lane full of them would take no sends). A participant
					   * killed while dead-lettering may delay a drop until the next
					   * reclaim pass. */
	uint32_t reclaim_interval_ms;	  /* receivers run a reclaim pass (opened by one receiver per
					   * interval, elected by CAS) this often, so expired leases and a
					   * dead consumer's messages come back with no watchdog running
					   * (default 100, at most 3600000); 0: only shmq_reclaim / `shmq
					   * watchdog` do it. Done in slices of 4096 slots: one per receive
					   * while the pass is open, more in a receive about to sleep */
	uint32_t dedup_window_ms;	  /* how long a key is remembered: a keyed send repeating it within
					   * this is not enqueued, and a "done" record answers for this
					   * long (default 120000; 0: no dedup table, keyed calls get
					   * -ENOTSUP) */
	uint32_t dedup_entries;		  /* dedup table entries, a power of two (0: 2 x capacity rounded
					   * up to a power of two, at least 64). When every entry a key
					   * may use (16 from its hash) holds a live key, the oldest of
					   * them is evicted (counted). */
	uint32_t lanes;			  /* sub-rings, 1..SHMQ_LANES_MAX (default 1); capacity / lanes must
					   * be a power of two >= 2. Consumers are shared out over the
					   * lanes and steal from other lanes when theirs are empty. */
	uint32_t dispatch;		  /* enum shmq_dispatch (default round robin) */
	uint32_t weights[SHMQ_LANES_MAX]; /* per-lane weights for SHMQ_DISPATCH_WEIGHTED, 1..SHMQ_WEIGHT_MAX
					   * (0: 1) */
};

/* Why a message was dead-lettered. */
enum shmq_dead_reason {
	SHMQ_DEAD_MAX_DELIVERIES = 1, /* nacked at max_deliveries */
	SHMQ_DEAD_EXPIRED = 2,	      /* its lease expired at max_deliveries */
	SHMQ_DEAD_REJECTED = 3,	      /* shmq_reject() */
	SHMQ_DEAD_CRASHED = 4,	      /* its holder died (or exited without settling it) at max_deliveries */
};

/* One dead letter, as listed by shmq_dlq_list(). data points into the segment and stays valid
 * until the letter is redriven, purged or dropped: copy it out. */
struct shmq_dead_letter {
	const void *data;
	uint32_t len;
	uint32_t deliveries;
	uint64_t id;
	uint64_t enqueued_ns;
	uint64_t dead_ms; /* CLOCK_MONOTONIC ms when it was dead-lettered */
	uint32_t reason;  /* enum shmq_dead_reason */
	int32_t last_pid; /* process that held its last lease */
	uint32_t slot;	  /* opaque */
};

/* A received message. data points into the segment and stays valid until this delivery is acked,
 * nacked, or its lease is lost (expired and requeued); copy it out if you need it longer.
 * The slot/token pair fences the delivery: ack/nack/extend of a lost lease return -ESTALE. */
struct shmq_msg {
	const void *data;
	uint32_t len;
	uint32_t deliveries;  /* 1 on first delivery */
	uint64_t id;	      /* unique per queue, increasing in send order within a lane; with lanes,
			       * id = lane ticket x lanes + lane (so id % lanes is its lane) */
	uint64_t enqueued_ns; /* CLOCK_MONOTONIC_COARSE at send, in ns (resolution: a kernel tick, 1-4 ms) */
	uint32_t slot;	      /* opaque lease token ... */
	uint64_t token;	      /* ... do not modify */
	const void *key;      /* the idempotency key it was sent with (shmq_send_keyed), or NULL */
	uint32_t key_len;
};

/* A zero-copy send in progress: shmq_send_reserve() fills it, the caller writes up to `cap`
 * bytes at `data`, then shmq_send_commit() publishes or shmq_send_abort() gives the slot back. */
struct shmq_reservation {
	void *data;
	uint32_t cap;
	uint32_t slot; /* opaque */
	uint64_t token;
};

/* One message of a batch send. */
struct shmq_iov {
	const void *data;
	size_t len;
};

/* What one shmq_reclaim() pass did. */
struct shmq_reclaim_result {
	uint32_t expired;	 /* leases past their deadline, requeued */
	uint32_t dead_owner;	 /* leases whose owner process is gone, requeued */
	uint32_t retired_writes; /* slots a dead producer claimed but never published, freed */
	uint32_t dead_lettered;	 /* messages moved to the dead-letter state by this pass */
	uint32_t participants_freed;
};

/* Point-in-time figures; see shmq_stats(). Counters are sums over all participants ever attached. */
struct shmq_stats {
	struct shmq_config config;
	uint32_t max_payload;
	uint64_t segment_bytes;
	uint64_t ready;	   /* published, never delivered */
	uint64_t inflight; /* leased */
	uint64_t delayed;  /* waiting for redelivery (nack, expiry) */
	uint64_t dead;	   /* dead-lettered */
	uint64_t writing;  /* claimed by a producer, not yet published */
	uint64_t free_slots;
	uint64_t next_id;
	uint32_t participants; /* attached handles whose process is alive */
	uint64_t sent, received, acked, nacked, redelivered, extended, stale;
	uint64_t reclaimed_expired, reclaimed_dead_owner, retired_writes, dead_lettered;
	uint64_t producer_waits, consumer_waits;
	uint64_t rejected, redriven, purged, dlq_dropped;
	uint32_t dlq_max;
	uint64_t retried;	 /* requeued for a later delivery: nack, expiry or dead owner */
	uint64_t reclaim_passes; /* shmq_reclaim passes run (by receivers, watchdogs, callers) */
	uint64_t duplicates;	 /* keyed sends not enqueued (key seen within the window) */
	uint64_t dedup_evicted;	 /* live keys evicted early because the table was full */
	uint64_t done_marked;	 /* "work done" records written */
	uint64_t done_hits;	 /* done checks that found the work done already */
	uint64_t dedup_live;	 /* dedup entries holding a key within its window */
	uint64_t prefetch_waits; /* receives that found their handle at its prefetch limit */
	uint64_t stolen;	 /* first deliveries a consumer took from a lane not assigned to it */
};

void shmq_config_init(struct shmq_config *cfg);

/* Checks a config without creating anything. 0 or -EINVAL. */
int shmq_config_validate(const struct shmq_config *cfg);

/* Creates and opens a new queue. -EEXIST if NAME exists, -EINVAL for a bad name or config,
 * -ENAMETOOLONG, -ENOSPC/-ENOMEM when /dev/shm is full, -ENOENT if NAME was unlinked before the
 * queue was ready, other -errno from shm_open/ftruncate/mmap. */
int shmq_create(const char *name, const struct shmq_config *cfg, shmq_t **q);

/* Whom shmq_open_opts trusts besides the caller. A queue's name is first come, first served
 * (/dev/shm is writable by every user): another user can create it first, world-writable, and
 * read every message sent into it. So by default a segment is opened only if it belongs to the
 * caller's effective uid and is not writable by every user (S_IWOTH; group-writable is fine, its
 * owner chose to share it with its group); a segment owned by another uid (root included: a root
 * caller gets no exemption, its messages would go to that user too), or a world-writable one, is
 * refused with -EPERM unless its owner or its group is trusted here.
 * A trusted segment is accepted whatever its mode: its owner chose it. Trusting a group is
 * trusting its members: only a member (or root) can give a file that group. */
struct shmq_open_options {
	uid_t trust_uid;      /* also accept a segment owned by this user ((uid_t)-1: nobody else) */
	gid_t trust_gid;      /* also accept a segment of this group, e.g. a queue shared 0660 within
			       * it ((gid_t)-1: none) */
	uint32_t reserved[6]; /* 0, as shmq_open_options_init sets them: room for later options */
};

/* Defaults: trust nobody but the caller. */
void shmq_open_options_init(struct shmq_open_options *opts);

/* Opens an existing queue. Validates magic, layout version and every size against fstat before
 * touching anything else. -ENOENT, -EPROTO (not a shmq segment, or corrupted), -EPROTONOSUPPORT
 * (other layout version), -EAGAIN (its creator has not finished initialising it), -EXDEV (its
 * creator is in another time namespace: its CLOCK_MONOTONIC, on which every lease deadline is
 * kept, differs from ours), -EUSERS (all participant records are in use by live processes),
 * -EPERM (owned by another user, or writable by every user, and not trusted: see
 * struct shmq_open_options), -EACCES (the kernel's permission check), -ENOENT also if NAME was
 * unlinked (or made anew) while it was being opened, other -errno. Trusts nobody but the caller,
 * as shmq_open_opts with NULL options. */
int shmq_open(const char *name, shmq_t **q);

/* shmq_open with options (NULL: the defaults). -EINVAL when a reserved field is not 0. */
int shmq_open_opts(const char *name, const struct shmq_open_options *opts, shmq_t **q);

/* Detaches. Leases still held stay leased until they expire (or shmq_reclaim sees the owner is
 * gone). shmq_close(NULL) is harmless. Not concurrently with other calls on the same handle. On a
 * handle inherited across fork() it only unmaps and frees the child's copy. */
void shmq_close(shmq_t *q);

/*
 * Handles and fork. A handle is one participant: the process that opened it, alive as long as that
 * process is. In a child made by fork() (or daemon(), or Python's multiprocessing "fork") every
 * handle the parent had is foreign: each call on it returns -ECHILD ("a child must open the queue
 * itself"; shmq_max_payload still answers), and shmq_close only unmaps and frees the child's copy,
 * leaving the parent's participant record, leases and reservations alone. A child that uses the
 * queue calls shmq_open. The parent's handles work on unchanged, whatever the child does, and when
 * the parent dies its leases and half-written slots are reclaimed even while its children live
 * (from the moment fork() has returned in each: until then a child holds its parent's
 * descriptors). The mapping is inherited, so what the parent received before the fork
 * (shmq_msg.data) stays readable in the child, but only the parent may settle it. fork() may be
 * called from any thread at any time, also while other threads are inside calls or opening
 * handles. The descriptors are O_CLOEXEC, so a vfork() or posix_spawn() child that execs inherits
 * nothing. Children made without fork()'s atfork handlers (vfork, a raw clone(2), _Fork) must exec
 * or _exit without calling shmq.
 */

/* Removes NAME; processes that have it open keep working on it until they close. */
int shmq_unlink(const char *name);

/* Copies one message in. -EMSGSIZE if len > max payload, -EAGAIN if the queue stayed full for
 * timeout_ms, -ETIMEDOUT never (full is -EAGAIN), -EINVAL on bad arguments, -EPROTO if the queue's
 * ticket counters are corrupt (seen when the queue looks full; on a queue with lanes, only when
 * no lane has room). Any thread, any process. */
int shmq_send(shmq_t *q, const void *data, size_t len, int timeout_ms);

/* Sends with an idempotency key (1..SHMQ_KEY_MAX bytes), like JetStream's Nats-Msg-Id or SQS
 * FIFO's deduplication id: if a send with the same key was accepted within dedup_window_ms, the
 * message is not enqueued and SHMQ_DUPLICATE (1) is returned. 0: enqueued. *id (if not NULL)
 * gets the new message's id, or the first one's for a duplicate. The key travels with the
 * message (shmq_msg.key) and takes room from its payload: len + key_len <= max payload.
 * Two concurrent sends of one key enqueue it once: the second waits while the first is in
 * progress. A sender killed while sending a key leaves a claim that the next send of that key
 * takes over; the message is enqueued again unless the dead sender's copy is still in the queue
 * (at least once: never lost, rarely twice). -ENOTSUP if the queue has no dedup table; other
 * errors as shmq_send. */
int shmq_send_keyed(shmq_t *q, const void *key, size_t key_len, const void *data, size_t len, int timeout_ms,
		    uint64_t *id);

/* shmq_send_keyed with a routing key of its own (1..SHMQ_KEY_MAX bytes; NULL: the idempotency key
 * routes): on a key-hash queue the message goes to the lane of rkey, so messages of one group keep
 * their order while each is deduplicated by its own key, like SQS FIFO's MessageGroupId with a
 * MessageDeduplicationId. Results as shmq_send_keyed. */
int shmq_send_keyed_routed(shmq_t *q, const void *rkey, size_t rkey_len, const void *key, size_t key_len,
			   const void *data, size_t len, int timeout_ms, uint64_t *id);

/* Consumer-side idempotency. Work whose side effects are done but not yet acked when its
 * consumer dies is delivered again; a "done" record lets any consumer recognise it and just ack.
 * shmq_ack_done records m as done (by its key, or by its id if it has none), then acks it: call it
 * after the side effects. shmq_is_done: 1 if m was recorded done within dedup_window_ms (ack it
 * without redoing the work), 0 if not. The _key variants do the same for an application key
 * (1..SHMQ_KEY_MAX bytes). Records survive any process crash; they expire after the window. */
int shmq_ack_done(shmq_t *q, struct shmq_msg *m);
int shmq_is_done(shmq_t *q, const struct shmq_msg *m);
int shmq_done_mark(shmq_t *q, const void *key, size_t key_len);
int shmq_done_check(shmq_t *q, const void *key, size_t key_len);

/* Sends with a routing key (1..SHMQ_KEY_MAX bytes): on a SHMQ_DISPATCH_KEY_HASH queue every
 * message of one routing key goes to the same lane, so their first deliveries keep send order
 * (like a Kafka partition key or an SQS message group). Other policies ignore the key. The key
 * does not travel with the message. Errors as shmq_send. */
int shmq_send_routed(shmq_t *q, const void *rkey, size_t rkey_len, const void *data, size_t len,
		     int timeout_ms);

/* Limits the messages this handle may hold leased at once (prefetch, like RabbitMQ's basic.qos or
 * JetStream's MaxAckPending), so one slow consumer cannot hoard work. 0: no limit (the default).
 * At the limit shmq_recv waits (per its timeout) for this handle to ack, nack or reject one (and
 * returns -EAGAIN if none did, as for an empty queue: stats count these as prefetch_waits), and
 * shmq_recv_batch takes at most what is left. Each successful ack, nack or reject gives one
 * back; leases this handle lost (expired and requeued) stop counting when it is at the limit
 * and recounts its leases from the segment (at most every 10 ms). May be called at any time;
 * receivers waiting at the old limit see the new one (0 releases them). 0 or -EINVAL. */
int shmq_set_prefetch(shmq_t *q, uint32_t max_inflight);

/* Zero-copy send: reserve a slot for up to `len` bytes (-EMSGSIZE, -EAGAIN as shmq_send), write
 * into r->data, then commit `len` (<= reserved) bytes, or abort. A reservation not committed by a
 * process that dies is retired by shmq_reclaim. commit/abort return -ESTALE if the slot was
 * retired meanwhile (the reservation was held past the retire grace while its owner looked dead).
 * First deliveries of a lane go in send order: a reservation held open (like a producer preempted
 * between its claim and its publish) holds back the first deliveries of the messages sent after
 * it in its lane until it is committed or aborted, or its process dies (then it is retired within
 * about 10 ms of a receiver's wait). Other lanes, redeliveries and sends are not held. */
int shmq_send_reserve(shmq_t *q, size_t len, struct shmq_reservation *r, int timeout_ms);
int shmq_send_commit(shmq_t *q, struct shmq_reservation *r, size_t len);
int shmq_send_abort(shmq_t *q, struct shmq_reservation *r);

/* Up-to-n batch send: sends msgs[0..n) in order, returns how many were sent (>= 1 unless an
 * error is returned). Waits (per timeout_ms) only for the first message; stops at the first
 * message that finds the queue full. -EMSGSIZE if msgs[0] is too big, -EINVAL if its data is NULL
 * with a non-zero len (a later such message stops the batch before it). */
int shmq_send_batch(shmq_t *q, const struct shmq_iov *msgs, unsigned n, int timeout_ms);

/* Receives one message under a lease of config.lease_ms. First deliveries are FIFO; messages due
 * for redelivery (nacked, expired) are interleaved (a receive looks at 4096 slots for a due one:
 * on a bigger queue a timeout-0 receive may need a few calls to find it). -EAGAIN if none arrived
 * within timeout_ms.
 * A send wakes one sleeping receiver per message (every one on key-hash queues). A sleeping
 * receiver also looks at the queue at least once a second, so a message whose wake-up was lost
 * (its producer SIGKILLed between publishing it and waking a receiver, or the woken receiver
 * killed before it took it) waits at most ~1 s for a receiver already asleep, even with timeout
 * -1 and reclaim_interval_ms 0; an idle receiver costs one wake-up a second.
 * With timeout_ms 0 it never waits, not even for a message a producer is still writing (-EAGAIN: a
 * later call finds it; a producer that died holding the next message is stepped over by later calls
 * after the same grace as by a waiting receiver), and an empty queue costs two CPU spin-wait hints
 * (x86 pause, aarch64 yield) before -EAGAIN, so a caller that polls in a loop does not keep the
 * slot a producer is writing away from it (tuned on AMD EPYC, where a pause takes ~25 ns).
 * On a key-hash queue a consumer that takes up a lane after the set of consumers changed looks
 * through it for the previous consumer's leases, 16384 slots per receive: with bigger lanes, a
 * timeout-0 receive may answer -EAGAIN for a few calls while it does.
 * -EPROTO if the queue is corrupt: its ticket counters or skip words cannot be true (a head past
 * its tail, a tail or skip word far ahead; with lanes, only when no other lane has a message): the
 * call returns instead of walking the gap, within timeout_ms, and `shmq check` lists what is
 * wrong. */
int shmq_recv(shmq_t *q, struct shmq_msg *m, int timeout_ms);

/* Up-to-n batch receive: waits (per timeout_ms) for the first message, then takes what is
 * available without waiting. Returns the count (>= 1), -EAGAIN or -EPROTO (as shmq_recv). */
int shmq_recv_batch(shmq_t *q, struct shmq_msg *m, unsigned n, int timeout_ms);

/* Removes a delivered message. -ESTALE (nothing changed) if this delivery's lease was lost. */
int shmq_ack(shmq_t *q, struct shmq_msg *m);

/* Acks m[0..n); returns how many were acked (the others had lost their lease). */
int shmq_ack_batch(shmq_t *q, struct shmq_msg *m, unsigned n);

/* Gives a message back for redelivery after delay_ms (delay_ms < 0: the backoff policy,
 * retry_base_ms * 2^(deliveries-1) capped at retry_max_ms, with +-25% jitter). A message that has
 * reached max_deliveries is dead-lettered instead. -ESTALE if the lease was lost. */
int shmq_nack(shmq_t *q, struct shmq_msg *m, int delay_ms);

/* Sends a delivered message straight to the dead-letter queue (reason SHMQ_DEAD_REJECTED).
 * -ESTALE if the lease was lost. */
int shmq_reject(shmq_t *q, struct shmq_msg *m);

/* Fills out[0..max) with dead letters, oldest first; returns how many there are in all (which may
 * exceed max). A snapshot: letters may come and go meanwhile. */
int shmq_dlq_list(shmq_t *q, struct shmq_dead_letter *out, unsigned max);

/* Moves up to max dead letters (oldest first) back into the queue with a fresh delivery count;
 * they are redelivered as soon as a consumer looks for due messages. Returns how many moved. */
int shmq_dlq_redrive(shmq_t *q, unsigned max);

/* Deletes up to max dead letters (oldest first). Returns how many were deleted. */
int shmq_dlq_purge(shmq_t *q, unsigned max);

/* Static text for an enum shmq_dead_reason: "max deliveries", "lease expired", ... */
const char *shmq_dead_reason_str(unsigned reason);

/* Sets the lease deadline to now + lease_ms (lease_ms <= 0: config.lease_ms). -ESTALE if lost. */
int shmq_extend(shmq_t *q, struct shmq_msg *m, int lease_ms);

/*
 * Event loops. shmq_fd() gives a descriptor to wait on with poll, epoll, select or any loop built
 * on them (libuv, libev, asyncio, tokio); shmq_fd_arm() makes it report the next message. The loop:
 *
 *	for (;;) {
 *		r = shmq_recv(q, &m, 0);
 *		if (r != -EAGAIN)
 *			break;                   // a message (or an error): handle it, then loop again
 *		if (shmq_fd_arm(q) == 0)
 *			wait until shmq_fd(q) is readable (POLLIN / EPOLLIN), no timeout needed;
 *	}
 *
 * Readable means: a receive may find a message due for this handle (a first delivery, a
 * redelivery that came due, a message a recovery pass requeued). It is level-triggered between two
 * arms: the descriptor stays readable until the next shmq_fd_arm() drains it, so reading it is
 * never needed and EPOLLET works too, provided the loop arms after every -EAGAIN. Nothing is lost
 * between the -EAGAIN and the arm: a message published after the receive looked makes the arm
 * return 1, or the descriptor readable once armed. Readability may be spurious (another consumer
 * took the message first, a safety-net timer fired): receive with timeout 0 and arm again. It is
 * never a busy loop: an arm that would answer 1 again while no receive of this handle has found
 * anything since its last 1 (another consumer is always first, the handle is at its prefetch
 * limit) answers 0 and looks again 1 ms later; on an empty queue an armed descriptor turns
 * readable only on the safety net, about once a second (a producer killed between its publish and its
 *wake-up, or a consumer woken and killed before it took the message, must not leave a waiter asleep for
 *ever), or when a redelivery or a recovery pass comes due, as often as a sleeping shmq_recv would wake.
 * Waiting costs nothing on sends and receives that do not wait: a producer pays a wake-up (a
 * datagram to the waiter) only when a waiter is armed, as for a receiver asleep in shmq_recv.
 *
 * shmq_fd: the descriptor (>= 0), created on the first call and owned by the handle: do not close
 * it; shmq_close closes it and removes its socket file. O_CLOEXEC. It is an epoll instance holding
 * a Unix datagram socket bound in /dev/shm (a hidden file ".shmq-fd-...", mode as the queue's;
 * recovery removes the file of a participant that died) and a timer; all participants must see
 * one /dev/shm (they do: they share the segment). Thread-safe. -ECHILD on a handle inherited
 * across fork(), -EMFILE/-ENFILE/-ENOMEM, -EACCES if /dev/shm refuses the socket file.
 *
 * shmq_fd_arm: call after a receive returned -EAGAIN, before waiting. Drains the descriptor,
 * registers the handle as a waiter, then looks at the queue once more: 1 if a receive may find
 * something now (receive again, do not wait), 0 when armed (wait for readability), or -errno
 * (those of shmq_fd). Calls of several threads on one handle are safe but share one descriptor:
 * a loop per handle is the intended use. Only receiving is covered: there is no "room to send"
 * readiness; a producer that finds the queue full waits in shmq_send, bounded by its timeout.
 * After fork() the child's copy of the handle is foreign (-ECHILD, see shmq_open): it must not
 * wait on the inherited descriptor (the parent's wake-ups go to it), and its shmq_close closes
 * only its copies, leaving the parent's descriptor and socket file working.
 */
int shmq_fd(shmq_t *q);
int shmq_fd_arm(shmq_t *q);

/*
 * Waiting on several queues at once, from one thread without descriptors. Blocks until one of
 * qs[0..n) may have a message for its handle (as shmq_fd readability above), at most timeout_ms
 * (-1: forever). Returns the index of such a queue (the look starts at a different queue on each
 * call, so a busy queue does not hide the others), -EAGAIN on timeout, -EINVAL if n is 0 or above
 * SHMQ_WAIT_ANY_MAX or a handle is NULL, -ECHILD if a handle is inherited across fork(). It does
 * not receive: receive from that queue with timeout 0 (-EAGAIN there: another consumer was first,
 * wait again). Nothing is lost: a message published after the call last looked wakes it. Sleeps
 * with futex_waitv (Linux >= 5.16) on every queue's data word, registered as a sleeping receive
 * would be, and like it looks again at least once a second (the same safety net) and when a
 * redelivery or recovery pass comes due. Where the kernel lacks futex_waitv (ENOSYS) it polls
 * instead, with sleeps of at most 1 ms between looks.
 */
#define SHMQ_WAIT_ANY_MAX 128
int shmq_wait_any(shmq_t *const *qs, unsigned n, int timeout_ms);

/* One recovery pass over the whole queue, callable by any participant, any time, concurrently
 * with everything (each repair is one CAS, so two passes never requeue a message twice):
 * requeues leases past their deadline or whose owner process died (kernel lock probe), retires
 * slots a dead producer claimed but never published, frees dead participants' records.
 * Returns the number of messages requeued or repaired; fills *res when res is not NULL. */
int shmq_reclaim(shmq_t *q, struct shmq_reclaim_result *res);

/* A consistent-enough snapshot (depths are counted from the slots, so they may be off by the
 * operations that raced with the count). 0 or -EINVAL. */
int shmq_stats(shmq_t *q, struct shmq_stats *st);

/* Largest payload a send accepts. */
uint32_t shmq_max_payload(const shmq_t *q);

/* Static text for a (negative or positive) errno returned by this library. */
const char *shmq_strerror(int err);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* SHMQ_H */

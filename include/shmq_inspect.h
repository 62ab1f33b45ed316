/* SPDX-License-Identifier: MIT */
/*
 * shmq_inspect: read-only views of a queue for tools (`shmq stat`, `peek`, `check`, `list`).
 *
 * A view maps the segment with PROT_READ from an O_RDONLY descriptor. It claims no participant
 * record, takes no lock (liveness is probed with F_OFD_GETLK, which only asks) and writes nothing,
 * so inspecting a live queue costs its workers no more than the cache lines the view reads.
 *
 * Consistency: the figures come from one pass over the slot words and participant records while
 * other processes keep working. A snapshot reads the ticket counters and the settle counters
 * before and after its pass and retries (up to SHMQ_SNAPSHOT_TRIES passes) while they moved;
 * `consistent` says whether the last pass saw a quiet queue. On a busy queue the depths may be
 * off by the operations that raced with the pass; each slot is read whole (its word is re-read
 * after its fields, and the read retried when the word changed), so no row mixes two messages.
 *
 * Every offset, index and length read from the image is bounds-checked: a corrupted, foreign or
 * truncated image gives -EPROTO (or, for shmq_check_*, a list of problems), never a crash.
 */
#ifndef SHMQ_INSPECT_H
#define SHMQ_INSPECT_H

#include <stddef.h>
#include <stdint.h>

#include "shmq.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

#define SHMQ_SNAPSHOT_TRIES 4

/* The first 8 bytes of every shmq segment, read as a native-endian uint64_t ("SHMQ1" on a
 * little-endian host), written last at creation. Tells a shmq segment, even a corrupted one,
 * from a foreign shared-memory object without waiting; 0 means not initialised (yet). */
#define SHMQ_SEGMENT_MAGIC 0x31514d4853ULL

typedef struct shmq_view shmq_view_t; /* opaque: a read-only mapping (or image) of one queue */

/* Maps NAME read-only and validates it like shmq_open (magic, version, sizes against fstat).
 * Unlike shmq_open it opens a queue of any owner and mode, and from any time namespace: a view
 * writes nothing, so neither can leak or break anything.
 * -ENOENT, -EACCES, -EPROTO (not a shmq segment, or corrupted), -EPROTONOSUPPORT (another layout
 * version), -EAGAIN (its creator has not finished it), other -errno. */
int shmq_view_open(const char *name, shmq_view_t **v);

/* A view of a segment image in memory (a copy of /dev/shm/NAME, a test's or fuzzer's buffer) of
 * len bytes, validated as above. The image must outlive the view, and be 8-byte aligned (as
 * malloc's memory is): -EINVAL otherwise. Participants' liveness cannot be probed in an image:
 * it reads as unknown (-1). */
int shmq_view_image(const void *image, size_t len, shmq_view_t **v);

void shmq_view_close(shmq_view_t *v);

/* What a slot holds, as a view reports it. */
enum shmq_slot_kind {
	SHMQ_SLOT_FREE = 0,
	SHMQ_SLOT_WRITING = 1, /* claimed by a producer, not yet published */
	SHMQ_SLOT_READY = 2,   /* published, never delivered */
	SHMQ_SLOT_LEASED = 3,  /* delivered, under a lease */
	SHMQ_SLOT_DELAYED = 4, /* waiting for redelivery (nack, expiry, dead owner, redrive) */
	SHMQ_SLOT_DEAD = 5,    /* dead-lettered; dead_reason says why */
	SHMQ_SLOT_INVALID = 6, /* a state no shmq writes: corruption (shmq_check_* lists it) */
};

/* Static name of an enum shmq_slot_kind: "free", "writing", "ready", "leased", ... */
const char *shmq_slot_kind_str(unsigned kind);

/* One slot, read whole (see "Consistency" above). */
struct shmq_slot_info {
	uint32_t slot;
	uint32_t kind;	      /* enum shmq_slot_kind */
	uint32_t dead_reason; /* enum shmq_dead_reason when kind is SHMQ_SLOT_DEAD, else 0 */
	uint32_t deliveries;
	uint64_t id;	      /* message id (meaningless for FREE) */
	uint32_t owner;	      /* participant index + 1 holding (leased/writing) or last holding it; 0: none */
	int32_t owner_pid;    /* that participant's pid as its record says (0: none) */
	uint32_t len;	      /* payload bytes (clamped to the queue's max payload) */
	uint32_t copied;      /* payload bytes copied into the caller's buffer */
	uint64_t enqueued_ns; /* CLOCK_MONOTONIC_COARSE at send */
	uint64_t age_ms;      /* now - enqueued (0 if the clock says it is in the future) */
	int64_t due_in_ms;    /* LEASED: lease deadline - now; DELAYED: redelivery time - now; else 0 */
	uint32_t torn;	      /* 1: the slot kept changing while read; fields may mix two states */
	uint32_t key_len;     /* idempotency key it was sent with (shmq_send_keyed), 0: none */
	unsigned char key[SHMQ_KEY_MAX];
};

/* Reads slot i (0 <= i < capacity) into *out, and up to bufsz payload bytes into buf (buf may be
 * NULL with bufsz 0). 0, or -EINVAL for a bad index. */
int shmq_view_slot(shmq_view_t *v, uint32_t i, struct shmq_slot_info *out, void *buf, size_t bufsz);

/* One participant record in use (claimed, whether its process is alive or not). */
struct shmq_participant_info {
	uint32_t index; /* record index; slot owners are index + 1 */
	int32_t pid;
	int32_t alive;		 /* 1 alive, 0 gone (its leases are reclaimable), -1 unknown (image) */
	uint32_t leases;	 /* slots it holds leased */
	uint32_t writing;	 /* slots it has claimed and not yet published */
	uint64_t attached_ms;	 /* CLOCK_MONOTONIC_COARSE ms */
	uint64_t last_active_ms; /* its last attach, detach, receive call or lease extension (sends
				  * record no time) */
	uint64_t sent, received, acked, nacked, rejected, reclaim_passes;
	/* static text from what it recorded it is (enum shmq_kind): "producer", "consumer",
	 * "producer+consumer", "watchdog", "worker", "bridge", or "idle" (nothing called yet) */
	const char *role;
	/* static text: "waiting for messages", "waiting for room", "waiting for messages and room"
	 * (some of its calls are asleep in the queue), or "" (none is) */
	const char *doing;
	/* 1: pid is a PID of the reader's PID namespace; 0: of another one (a container's: not a
	 * process the reader can see under that number); -1: unknown (an image, or no /proc) */
	int32_t pid_here;
};

/* One lane of a snapshot. */
struct shmq_lane_info {
	uint64_t prod_tail, cons_head; /* its ticket counters */
	uint64_t ready, inflight;      /* its slots READY / LEASED */
	uint32_t weight;	       /* for SHMQ_DISPATCH_WEIGHTED */
	uint32_t consumer;	       /* record index + 1 of the consumer it is assigned to, 0: none */
	int32_t consumer_pid;
};

/* A snapshot of the whole queue. */
struct shmq_snapshot {
	struct shmq_stats stats;      /* as shmq_stats() fills it; participants = alive records */
	uint64_t now_ms;	      /* CLOCK_MONOTONIC_COARSE when the pass ran */
	uint64_t oldest_ready_age_ms; /* age of the oldest READY message (0 when none is ready) */
	uint64_t oldest_ready_id;
	uint64_t prod_tail, cons_head; /* the ticket counters, summed over the lanes */
	uint32_t lanes;
	uint32_t consumers; /* active consumers the lanes are shared out among */
	struct shmq_lane_info lane[SHMQ_LANES_MAX];
	uint32_t records;	    /* participant records in use (alive or not yet reclaimed) */
	uint32_t dead_participants; /* records whose process is gone */
	uint32_t tries;		    /* passes taken (1..SHMQ_SNAPSHOT_TRIES) */
	uint32_t consistent;	    /* 1: nothing moved during the last pass */
	int32_t creator_pid;
	uint64_t created_ns;
};

/* Fills *s, and parts[0..max) with the records in use (index order). Returns the number of
 * records in use (which may exceed max), or -EINVAL. */
int shmq_view_snapshot(shmq_view_t *v, struct shmq_snapshot *s, struct shmq_participant_info *parts,
		       unsigned max);

/* Called once per finding of a check; severity is SHMQ_CHECK_ERROR (an invariant is broken: the
 * segment is corrupt) or SHMQ_CHECK_WARNING (unusual but legal, e.g. left by a crash and
 * repairable by a reclaim pass). */
enum {
	SHMQ_CHECK_ERROR = 1,
	SHMQ_CHECK_WARNING = 2
};
typedef void (*shmq_check_fn)(void *ctx, int severity, const char *what);

/* Full consistency check of an image (fsck): header, every slot word, the ticket counters,
 * participant records and the counters that must agree. Never fails on bad content: reports it.
 * Returns the number of errors (0: sound; warnings are not counted), or -EINVAL for a NULL image
 * of len > 0 or one that is not 8-byte aligned (see shmq_view_image). */
int shmq_check_image(const void *image, size_t len, shmq_check_fn fn, void *ctx);

/* The same on the live segment NAME, mapped read-only; findings in slots that change while they
 * are checked are re-read before being reported, so a busy queue does not report its traffic.
 * -errno if NAME cannot be opened or mapped (-ENOENT, -EACCES, ...). */
int shmq_check_name(const char *name, shmq_check_fn fn, void *ctx);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* SHMQ_INSPECT_H */

/* SPDX-License-Identifier: MIT */
/* The process-local handle and helpers shared by the library's .c files (never exported). */
#ifndef SHMQ_INTERNAL_H
#define SHMQ_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>
#include <sched.h>
#include <time.h>

#include "layout.h"
#include "shmq.h"

#define SHMQ_HIDDEN __attribute__((visibility("hidden")))

struct shmq {
	struct shmq_hdr *hdr;
	unsigned char *base;
	uint64_t size;
	int fd;
	uint32_t part;	/* our participant index */
	uint32_t owner; /* part + 1, as stored in slot words */
	uint32_t mask;	/* capacity - 1 */
	uint32_t slot_size;
	uint32_t max_payload;
	_Atomic uint32_t recv_count;  /* rotates the start of redelivery scans */
	_Atomic uint64_t head_cache;  /* a recent cons_head, so producers rarely read the shared one */
	_Atomic uint32_t scan_cursor; /* where a producer's next look for a free slot starts */
	struct shmq_participant *me;
	unsigned char *slots; /* process-local copies of validated offsets: never re-read from the header */
	unsigned char *parts;
	uint32_t max_parts;
	uint32_t dlq_max;
	int32_t pid;
	char name[SHMQ_NAME_MAX + 2];
};

static inline struct shmq_slot *slot_at(const shmq_t *q, uint64_t idx)
{
	return (struct shmq_slot *)(q->slots + (idx & q->mask) * (uint64_t)q->slot_size);
}

static inline unsigned char *slot_payload(struct shmq_slot *s) { return (unsigned char *)(s + 1); }

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

/* Fault injection, compiled only into test builds: a test arms a point, and the process kills
 * itself with SIGKILL when it reaches that point for the n-th time. */
#ifdef SHMQ_TEST
void shmq_fault_arm(const char *point, unsigned nth);
SHMQ_HIDDEN void shmq_fault_hit(const char *point);
#define SHMQ_FAULT(p) shmq_fault_hit(p)
#else
#define SHMQ_FAULT(p) ((void)0)
#endif

/* wait.c */
SHMQ_HIDDEN int shmq_futex_wait(_Atomic uint32_t *word, uint32_t seen, uint64_t deadline_ns);
SHMQ_HIDDEN void shmq_futex_wake_all(_Atomic uint32_t *word);
SHMQ_HIDDEN void shmq_notify(_Atomic uint32_t *seq, _Atomic uint32_t *sleepers);
/* shmq_notify for a caller whose publishing RMW was seq_cst: no fence needed (see wait.c) */
SHMQ_HIDDEN void shmq_notify_sc(_Atomic uint32_t *seq, _Atomic uint32_t *sleepers);
SHMQ_HIDDEN uint64_t shmq_deadline(int timeout_ms);

/* registry.c */
SHMQ_HIDDEN int shmq_part_attach(shmq_t *q);
SHMQ_HIDDEN void shmq_part_detach(shmq_t *q);
/* 1 alive, 0 dead (its record may be reclaimed), for participant index i */
SHMQ_HIDDEN int shmq_part_alive(shmq_t *q, uint32_t i);
SHMQ_HIDDEN int shmq_part_release(shmq_t *q, uint32_t i, uint64_t v);

/* ring.c */
SHMQ_HIDDEN uint64_t shmq_backoff_ms(const struct shmq_hdr *h, unsigned deliveries);
SHMQ_HIDDEN void shmq_note_delayed(shmq_t *q, uint64_t due_ms);
#define REDELIVER_NONE ((1ULL << 48) - 1)
static inline uint64_t rd_due(uint64_t v) { return v >> 16; }
static inline uint64_t rd_make(uint64_t due, uint64_t epoch) { return (due << 16) | (epoch & 0xffff); }

/* dlq.c: after a slot went dead, drops the oldest dead letters beyond dlq_max */
SHMQ_HIDDEN void shmq_dlq_enforce(shmq_t *q);

/* segment.c */
SHMQ_HIDDEN int shmq_normalize_name(const char *name, char *out, size_t outsz);
SHMQ_HIDDEN int shmq_validate_header(const struct shmq_hdr *h, uint64_t file_size);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * worker.c: the worker runtime of include/shmq_worker.h: handler threads sharing one handle, and
 * the keeper thread that extends the leases of long-running handlers. Built on the public API.
 *
 * Each handler thread publishes the delivery it works on as an RCU-protected pointer to a heap
 * record, one record per delivery. The keeper reads those pointers inside an RCU read-side
 * critical section; a thread done with a delivery unpublishes its record and frees it through
 * call_rcu, so the keeper never reads a freed record and neither side takes a lock.
 *
 * The lease of one delivery is touched by one side at a time: a CAS on the record's state
 * decides whether the keeper (extend, or the nack at the end of the grace period) or the owner
 * thread (the verdict) gets it. Otherwise an extend racing an ack would fail and be counted as a
 * stale operation in the queue's stats, or a grace nack and a verdict would both try to settle.
 */
#define URCU_INLINE_SMALL_FUNCTIONS /* rcu_dereference as an inline C11 consume load */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu.h>

#include "shmq_worker.h"

#if defined(__SANITIZE_THREAD__)
#define WK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WK_TSAN 1
#endif
#endif

#ifdef WK_TSAN
#include <sanitizer/tsan_interface.h>
/* liburcu is not instrumented, so TSan cannot see a grace period: each side of one says so. The
 * readers' unlock and call_rcu release this key; the callback acquires it before it frees. */
static char grace_key;
#define GRACE_RELEASE() __tsan_release(&grace_key)
#define GRACE_ACQUIRE() __tsan_acquire(&grace_key)
/* liburcu 0.13's rcu_assign_pointer is a fence and a volatile store, a plain write to TSan: under
 * TSan publish with the release store it amounts to (liburcu 0.14 does the same for TSan). */
#define PUBLISH(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#else
#define GRACE_RELEASE() ((void)0)
#define GRACE_ACQUIRE() ((void)0)
#define PUBLISH(p, v) rcu_assign_pointer(p, v)
#endif

#define KEEPER_MAX_MS 1000u

/* Who may touch a published delivery's lease. */
enum {
	REC_LIVE,      /* handler running; the keeper may claim it */
	REC_KEEPER,    /* the keeper is extending or nacking it */
	REC_OWNER,     /* the owner thread is applying the verdict */
	REC_ABANDONED, /* the keeper nacked it at the end of the grace period */
};

struct rec {
	struct shmq_msg msg;	      /* written before publication, read-only after */
	_Atomic uint64_t deadline_ms; /* the lease's deadline as we reckon it */
	_Atomic int state;
	shmq_worker_t *w;
	struct rcu_head rcu;
};

enum {
	C_RECEIVED,
	C_ACKED,
	C_RETRIED,
	C_REJECTED,
	C_LOST,
	C_EXTENDED,
	C_ABANDONED,
	C_SKIPPED_DONE,
	C_N
};

struct wk_thread {
	shmq_worker_t *w;
	pthread_t tid;
	struct rec *cur; /* RCU: the delivery this thread's handler runs, or NULL */
};

struct shmq_worker {
	shmq_t *q;
	struct shmq_worker_config cfg;
	uint32_t lease_ms, keeper_ms;
	_Atomic int state; /* enum shmq_worker_state */
	_Atomic int error; /* first fatal error of a thread */
	_Atomic int quit;  /* join: the keeper may go */
	_Atomic uint32_t in_flight;
	_Atomic uint32_t unfreed; /* records handed to call_rcu, not freed yet */
	_Atomic uint64_t count[C_N];
	sem_t wake; /* posted by stop and join, to cut the keeper's sleep short */
	pthread_t keeper;
	unsigned started; /* handler threads running */
	int keeper_started, joined;
	struct wk_thread t[];
};

/* The clock the queue keeps lease deadlines in. */
static uint64_t coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void add(shmq_worker_t *w, int c) { atomic_fetch_add_explicit(&w->count[c], 1, memory_order_relaxed); }

void shmq_worker_config_init(struct shmq_worker_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->threads = 1;
	cfg->poll_ms = 100;
	cfg->grace_ms = -1;
}

int shmq_worker_stop(shmq_worker_t *w)
{
	if (!w)
		return -EINVAL;
	/* only lock-free atomics and sem_post: async-signal-safe */
	int s = SHMQ_WORKER_RUNNING;
	if (!atomic_compare_exchange_strong(&w->state, &s, SHMQ_WORKER_DRAINING) && s == SHMQ_WORKER_DRAINING)
		atomic_compare_exchange_strong(&w->state, &s, SHMQ_WORKER_ABANDONED);
	sem_post(&w->wake);
	return 0;
}

int shmq_worker_state(const shmq_worker_t *w)
{
	if (!w)
		return -EINVAL;
	return atomic_load(&((shmq_worker_t *)w)->state);
}

int shmq_worker_stats(const shmq_worker_t *w, struct shmq_worker_stats *st)
{
	if (!w || !st)
		return -EINVAL;
	shmq_worker_t *ww = (shmq_worker_t *)w;
	uint64_t c[C_N];
	for (int i = 0; i < C_N; i++)
		c[i] = atomic_load_explicit(&ww->count[i], memory_order_relaxed);
	*st = (struct shmq_worker_stats){
		.received = c[C_RECEIVED],
		.acked = c[C_ACKED],
		.retried = c[C_RETRIED],
		.rejected = c[C_REJECTED],
		.lost = c[C_LOST],
		.extended = c[C_EXTENDED],
		.abandoned = c[C_ABANDONED],
		.skipped_done = c[C_SKIPPED_DONE],
		.in_flight = atomic_load_explicit(&ww->in_flight, memory_order_relaxed),
	};
	return 0;
}

/* A thread cannot go on: keep the first error, and stop the others so that join returns it. */
static void fail(shmq_worker_t *w, int err)
{
	int none = 0;
	atomic_compare_exchange_strong(&w->error, &none, err);
	int s = SHMQ_WORKER_RUNNING;
	atomic_compare_exchange_strong(&w->state, &s, SHMQ_WORKER_DRAINING);
	sem_post(&w->wake);
}

/* ---------------------------------------------------------------------------------------------
 * Handler threads
 */

static void free_rec(struct rcu_head *head)
{
	GRACE_ACQUIRE();
	struct rec *r = caa_container_of(head, struct rec, rcu);
	shmq_worker_t *w = r->w;
	free(r);
	/* release, our last touch of w: pairs with the acquire load in join, which may free w */
	atomic_fetch_sub_explicit(&w->unfreed, 1, memory_order_release);
}

/* Takes the lease back from the keeper: waits out an extend in progress (a few hundred ns).
 * Returns REC_OWNER, or REC_ABANDONED when the keeper nacked it at the end of the grace. */
static int take_back(struct rec *r)
{
	for (;;) {
		int s = REC_LIVE;
		if (atomic_compare_exchange_strong(&r->state, &s, REC_OWNER) || s == REC_ABANDONED)
			return s == REC_LIVE ? REC_OWNER : s;
		sched_yield();
	}
}

/* Past the grace period: back to the queue for immediate redelivery, whatever the handler says. */
static void abandon(shmq_worker_t *w, struct shmq_msg *m)
{
	if (!shmq_nack(w->q, m, 0))
		add(w, C_ABANDONED);
}

/* skip: config.dedup found the work done already, and the handler was not called */
static void apply(shmq_worker_t *w, struct shmq_msg *m, int verdict, int skip)
{
	int r, c;
	if (skip)
		r = shmq_ack(w->q, m), c = C_SKIPPED_DONE;
	else if (verdict == SHMQ_WORKER_ACK && w->cfg.dedup)
		r = shmq_ack_done(w->q, m), c = C_ACKED; /* records done even when the lease is lost */
	else if (verdict == SHMQ_WORKER_ACK)
		r = shmq_ack(w->q, m), c = C_ACKED;
	else if (verdict == SHMQ_WORKER_REJECT)
		r = shmq_reject(w->q, m), c = C_REJECTED;
	else
		r = shmq_nack(w->q, m, -1), c = C_RETRIED;
	/* -ESTALE: the lease was lost (expired, owner thought dead); the queue has the message */
	add(w, r ? C_LOST : c);
}

static void handle(struct wk_thread *t, struct shmq_msg *m)
{
	shmq_worker_t *w = t->w;
	uint64_t now = coarse_ms();
	if (atomic_load(&w->state) == SHMQ_WORKER_ABANDONED) {
		abandon(w, m); /* received as the grace ended */
		return;
	}
	struct rec *r = malloc(sizeof(*r));
	if (!r) {
		shmq_nack(w->q, m, 0);
		fail(w, -ENOMEM);
		return;
	}
	r->msg = *m;
	r->w = w;
	/* the lease began inside shmq_recv, a moment before `now`: the keeper's margin (a third of
	 * the lease) covers that moment */
	atomic_init(&r->deadline_ms, now + w->lease_ms);
	atomic_init(&r->state, REC_LIVE);
	atomic_fetch_add(&w->in_flight, 1);
	/* release: the keeper's rcu_dereference sees the record filled in */
	PUBLISH(t->cur, r);

	/* checked once published, so the keeper extends the lease if the check waits (up to a
	 * second) for another consumer's done record in progress. An error (none is expected: start
	 * made sure there is a table) counts as not done: the handler runs, at least once */
	int skip = w->cfg.dedup && shmq_is_done(w->q, &r->msg) == 1, verdict = SHMQ_WORKER_ACK;
	if (!skip) {
		add(w, C_RECEIVED);
		verdict = w->cfg.handler(w, &r->msg, w->cfg.arg);
	}

	int s = take_back(r);
	PUBLISH(t->cur, NULL);
	if (s == REC_OWNER && atomic_load(&w->state) == SHMQ_WORKER_ABANDONED) {
		abandon(w, &r->msg); /* the grace ended as the handler returned: the keeper's outcome */
	} else if (s == REC_OWNER) {
		apply(w, &r->msg, verdict, skip);
	}
	atomic_fetch_sub(&w->in_flight, 1);
	GRACE_RELEASE(); /* our own accesses to r, before the callback frees it */
	atomic_fetch_add_explicit(&w->unfreed, 1, memory_order_relaxed);
	call_rcu(&r->rcu, free_rec);
}

static void *handler_thread(void *arg)
{
	struct wk_thread *t = arg;
	shmq_worker_t *w = t->w;
	rcu_register_thread(); /* call_rcu wants a registered thread */
	while (atomic_load(&w->state) == SHMQ_WORKER_RUNNING) {
		struct shmq_msg m;
		int r = shmq_recv(w->q, &m, (int)w->cfg.poll_ms);
		if (r == -EAGAIN)
			continue;
		if (r) {
			fail(w, r);
			break;
		}
		handle(t, &m);
	}
	rcu_unregister_thread();
	return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * The keeper
 */

/* One look at every delivery in flight: extend what has less than a third of its lease left or,
 * once the grace period is over, nack everything for immediate redelivery elsewhere. */
static void keeper_pass(shmq_worker_t *w, int give_back)
{
	uint64_t now = coarse_ms();
	rcu_read_lock();
	for (unsigned i = 0; i < w->started; i++) {
		struct rec *r = rcu_dereference(w->t[i].cur);
		if (!r || (!give_back && atomic_load(&r->deadline_ms) > now + w->lease_ms / 3))
			continue;
		int s = REC_LIVE;
		if (!atomic_compare_exchange_strong(&r->state, &s, REC_KEEPER))
			continue; /* its thread is applying the verdict, or it was abandoned already */
		if (give_back) {
			abandon(w, &r->msg);
			atomic_store(&r->state, REC_ABANDONED);
			continue;
		}
		uint64_t at = coarse_ms();
		if (shmq_extend(w->q, &r->msg, 0) == 0) {
			atomic_store(&r->deadline_ms, at + w->lease_ms);
			add(w, C_EXTENDED);
		} else {
			/* lost already (-ESTALE): the verdict will find out; do not try again */
			atomic_store(&r->deadline_ms, UINT64_MAX);
		}
		atomic_store(&r->state, REC_LIVE);
	}
	GRACE_RELEASE(); /* our reads of the records, before any callback frees one */
	rcu_read_unlock();
}

static void *keeper_thread(void *arg)
{
	shmq_worker_t *w = arg;
	uint64_t grace_end = UINT64_MAX;
	rcu_register_thread(); /* a reader */
	while (!atomic_load(&w->quit)) {
		uint64_t wait = w->keeper_ms, now = coarse_ms();
		int s = atomic_load(&w->state);
		if (s == SHMQ_WORKER_DRAINING && w->cfg.grace_ms >= 0) {
			if (grace_end == UINT64_MAX)
				grace_end = now + (uint64_t)w->cfg.grace_ms;
			if (now >= grace_end &&
			    atomic_compare_exchange_strong(&w->state, &s, SHMQ_WORKER_ABANDONED))
				s = SHMQ_WORKER_ABANDONED;
			else if (grace_end - now < wait)
				wait = grace_end - now;
		}
		keeper_pass(w, s == SHMQ_WORKER_ABANDONED);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(wait / 1000);
		ts.tv_nsec += (long)(wait % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec++, ts.tv_nsec -= 1000000000L;
		sem_clockwait(&w->wake, CLOCK_MONOTONIC, &ts); /* EINTR, ETIMEDOUT: look again */
	}
	rcu_unregister_thread();
	return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Start, join, close
 */

int shmq_worker_start(shmq_t *q, const struct shmq_worker_config *cfg, shmq_worker_t **out)
{
	if (!q || !cfg || !out || !cfg->handler || cfg->threads < 1 ||
	    cfg->threads > SHMQ_WORKER_THREADS_MAX || cfg->poll_ms < 1 ||
	    cfg->poll_ms > SHMQ_WORKER_POLL_MAX || cfg->grace_ms < -1)
		return -EINVAL;
	struct shmq_stats st;
	int r = shmq_stats(q, &st);
	if (r)
		return r;
	/* no table: shmq_is_done would answer -ENOTSUP for every message, and dedup would silently
	 * be off */
	if (cfg->dedup && !st.config.dedup_window_ms)
		return -ENOTSUP;
	shmq_worker_t *w = calloc(1, sizeof(*w) + cfg->threads * sizeof(w->t[0]));
	if (!w)
		return -ENOMEM;
	if ((r = shmq_set_kind(q, SHMQ_KIND_WORKER))) {
		free(w);
		return r;
	}
	w->q = q;
	w->cfg = *cfg;
	w->lease_ms = st.config.lease_ms;
	/* a look every sixth of a lease: a deadline is at least a sixth away when it is extended */
	w->keeper_ms = w->lease_ms / 6 ? w->lease_ms / 6 : 1;
	if (w->keeper_ms > KEEPER_MAX_MS)
		w->keeper_ms = KEEPER_MAX_MS;
	if (sem_init(&w->wake, 0, 0)) {
		free(w);
		return -errno;
	}

	/* our threads take no signals: they go to the application's, whose handler may stop us */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = 0;
	for (unsigned i = 0; !r && i < cfg->threads; i++) {
		w->t[i].w = w;
		if (!(r = -pthread_create(&w->t[i].tid, NULL, handler_thread, &w->t[i])))
			w->started++;
	}
	/* last: it reads t[0..started), complete by now */
	if (!r && !(r = -pthread_create(&w->keeper, NULL, keeper_thread, w)))
		w->keeper_started = 1;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		/* stop what runs and wait for it, as a close would */
		atomic_store(&w->state, SHMQ_WORKER_ABANDONED);
		shmq_worker_close(w);
		return r;
	}
	*out = w;
	return 0;
}

int shmq_worker_join(shmq_worker_t *w)
{
	if (!w)
		return -EINVAL;
	if (!w->joined) {
		for (unsigned i = 0; i < w->started; i++)
			pthread_join(w->t[i].tid, NULL);
		atomic_store(&w->quit, 1);
		sem_post(&w->wake);
		if (w->keeper_started)
			pthread_join(w->keeper, NULL);
		/* our records' callbacks still to run: a grace period or so. Not rcu_barrier(), which
		 * also waits for everybody else's callbacks in the process */
		while (atomic_load_explicit(&w->unfreed, memory_order_acquire))
			nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
		w->joined = 1;
	}
	return atomic_load(&w->error);
}

void shmq_worker_close(shmq_worker_t *w)
{
	if (!w)
		return;
	if (atomic_load(&w->state) == SHMQ_WORKER_RUNNING)
		shmq_worker_stop(w);
	shmq_worker_join(w);
	sem_destroy(&w->wake);
	free(w);
}

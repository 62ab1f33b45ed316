/* SPDX-License-Identifier: MIT */
/*
 * registry.c: the participant records. Each handle claims one record (its owner id in slot
 * words) and holds an OFD write lock on one byte of the segment fd for as long as it lives. The
 * kernel drops that lock when the process dies (or closes the handle), so "record claimed but
 * byte unlocked" means "owner gone" whatever happened to its PID. OFD locks belong to the open
 * file description, which is why every handle does its own shm_open with O_CLOEXEC.
 *
 * fork() shares descriptions too, and a mapping holds its description as an fd does. So the lock
 * lives on a description of its own (never mapped, never shared with a view), and a forked child
 * closes its copy of it for every attached handle (the atfork child handler): the description,
 * and the lock, then die with the process that attached, whatever its children do. The child's
 * copies of those handles are foreign: every call on them fails with -ECHILD, and shmq_close only
 * unmaps and frees (the record and the lock are the parent's). O_CLOEXEC covers exec (and so
 * vfork and posix_spawn, whose children exec or _exit without running atfork handlers).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "fdwake.h"
#include "handle.h"
#include "registry.h"
#include "wait.h"

/* Lock bytes live far past the end of the segment: locking there needs no file space. */
#define LOCK_BASE (1LL << 40)
/* A record a reclaim pass freed is not reused for this long while others are free, so a pass that
 * decided "owner i is dead" a moment ago is unlikely to meet a newcomer with the same index (every
 * pass re-probes before it acts, so this is a margin, not what correctness rests on). A record
 * freed by its own owner's clean close was never judged dead: it is reusable at once. */
#define REUSE_DELAY_MS 2000

/* Was a record freed at ps_freed `freed` (0: by a clean close) freed too recently to reuse? */
static int just_freed(uint64_t now, uint64_t freed)
{
	/* freed is rounded up to odd, so it may lie 1 ms ahead of a later now: count from now + 1 */
	return freed && ((now + 1 - freed) & PS_FREED_MASK) <= REUSE_DELAY_MS;
}

/* Moves record p's counters into the header's retired totals, so a newcomer's record starts at 0
 * and the totals keep everything. A reader summing meanwhile may miss the moved amounts for a
 * moment (snapshots are approximate on a live queue anyway). */
static void fold_counters(shmq_t *q, struct shmq_participant *p)
{
	for (int k = 0; k < C_COUNT; k++) {
		uint64_t v = atomic_exchange_explicit(&p->counters[k], 0, memory_order_relaxed);
		if (v)
			atomic_fetch_add_explicit(&q->hdr->retired[k], v, memory_order_relaxed);
	}
}

static int lock_byte(int fd, int cmd, short type, uint32_t i, struct flock *out)
{
	struct flock fl;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = LOCK_BASE + i;
	fl.l_len = 1;
	if (fcntl(fd, cmd, &fl) < 0)
		return -errno;
	if (out)
		*out = fl;
	return 0;
}

int shmq_lock_probe(int fd, uint32_t i)
{
	/* F_OFD_GETLK only asks: it takes nothing, and works on an O_RDONLY descriptor */
	struct flock fl = {.l_type = F_UNLCK};
	if (lock_byte(fd, F_OFD_GETLK, F_WRLCK, i, &fl) < 0)
		return -1;
	return fl.l_type != F_UNLCK;
}

int shmq_part_alive(shmq_t *q, uint32_t i)
{
	if (i >= q->max_parts)
		return 0;
	if (q->me && i == q->part)
		return 1; /* our own lock never conflicts with our own description */
	/* cannot tell (-1): assume alive, never requeue on a guess */
	return shmq_lock_probe(q->fd, i) != 0;
}

int shmq_owner_alive(void *ctx, unsigned owner) { return shmq_part_alive(ctx, owner - 1); }

int shmq_part_alive_in(shmq_t *q, uint32_t i, uint64_t epoch)
{
	if (i >= q->max_parts)
		return 0;
	/* a value compare: the epoch moves on with every claim, so a newcomer's record never matches.
	 * Its owner may die right after this load and a newcomer lock the byte before the probe:
	 * then the answer is a stale "alive", which callers only wait on and look again. */
	uint64_t v = atomic_load_explicit(&part_at(q, i)->state, memory_order_relaxed);
	if (ps_state(v) != PART_ALIVE || ps_epoch(v) != (epoch & 0xffffffff))
		return 0;
	return shmq_part_alive(q, i);
}

/* Frees record i, observed as v; freed_ms 0: reusable at once (a clean close), else when (odd). */
static int release(shmq_t *q, uint32_t i, uint64_t v, uint64_t freed_ms)
{
	/* role is left alone: if the CAS fails the record has been claimed again since v, and the
	 * role is the newcomer's; the next claimer clears it (claim_record) */
	uint64_t nv = ps_make(ps_epoch(v), PART_FREE, freed_ms);
	return atomic_compare_exchange_strong_explicit(&part_at(q, i)->state, &v, nv, memory_order_acq_rel,
						       memory_order_relaxed);
}

/* ---- handles across fork ----------------------------------------------------------------- */

/* This process's attached handles. Held across fork() (prepare to parent/child), so the child's
 * list is exactly the handles whose lock descriptions it inherited. */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static shmq_t *handles;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_err;

static void fork_prepare(void) { pthread_mutex_lock(&handles_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&handles_lock); }

/* In the child, single-threaded, async-signal-safe calls only. Closing our copy leaves the parent's
 * descriptor the only reference to the description: its lock still comes and goes with the parent
 * (a close drops an OFD lock only with the description's last reference). */
static void fork_child(void)
{
	for (shmq_t *q = handles; q; q = q->fork_next) {
		close(q->fd);
		q->fd = -1;
		q->foreign = 1;
	}
	handles = NULL;
	pthread_mutex_unlock(&handles_lock);
}

static void atfork_init(void) { atfork_err = -pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* Gives q a description of its segment of its own for the lock (q->fd from shm_open is the one the
 * mapping holds), and lists q for the fork handler: under the lock, so no fork can copy the new
 * descriptor unlisted. The name is opened again, so it must still name the object we mapped. */
static int own_description(shmq_t *q)
{
	struct stat mapped, st;
	pthread_once(&atfork_once, atfork_init);
	if (atfork_err)
		return atfork_err;
	if (fstat(q->fd, &mapped) < 0)
		return -errno;
	pthread_mutex_lock(&handles_lock);
	int err = 0, fd = shm_open(q->name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		err = -errno;
	else if (fstat(fd, &st) < 0 || st.st_dev != mapped.st_dev || st.st_ino != mapped.st_ino)
		err = -ENOENT; /* unlinked (and perhaps created again) since we mapped it */
	if (err) {
		if (fd >= 0)
			close(fd);
	} else {
		q->fd = fd;
		q->fork_prev = NULL;
		q->fork_next = handles;
		if (handles)
			handles->fork_prev = q;
		handles = q;
	}
	pthread_mutex_unlock(&handles_lock);
	return err;
}

/* Unlists q and closes its lock description (under the lock: a fork sees q listed or closed). */
static void disown(shmq_t *q)
{
	pthread_mutex_lock(&handles_lock);
	if (q->fork_prev)
		q->fork_prev->fork_next = q->fork_next;
	else
		handles = q->fork_next;
	if (q->fork_next)
		q->fork_next->fork_prev = q->fork_prev;
	close(q->fd);
	q->fd = -1;
	pthread_mutex_unlock(&handles_lock);
}

/* ---- records ------------------------------------------------------------------------------- */

/* lenient 0: only records free for longer than the reuse delay; 1: also those freed just now */
static int claim_record(shmq_t *q, int lenient)
{
	uint64_t now = now_ms();
	for (int round = 0; round < 1 + lenient; round++) {
		for (uint32_t i = 0; i < q->max_parts; i++) {
			struct shmq_participant *p = part_at(q, i);
			uint64_t v = atomic_load_explicit(&p->state, memory_order_acquire);
			if (ps_state(v) != PART_FREE)
				continue;
			/* on the second round the registry is full: take a just-freed record anyway */
			if (round == 0 && just_freed(now, ps_freed(v)))
				continue;
			/* Lock first, then claim: a record is never ALIVE without its lock held, so a
			 * reclaim pass probing it in between cannot take us for dead and free it under
			 * us. A lock we cannot get belongs to a live process: leave the record alone. */
			if (lock_byte(q->fd, F_OFD_SETLK, F_WRLCK, i, NULL) < 0)
				continue;
			/* Before the claim, under the lock: nobody else may claim the record now, and
			 * its previous owner is gone, so these are ours to write; the claim CAS
			 * (release) publishes them with ALIVE. A record reused from a dead consumer
			 * must not count as one until we receive, and a dead taker's count must not
			 * hold up lane hand-overs under our name. */
			atomic_store_explicit(&p->role, 0, memory_order_relaxed);
			atomic_store_explicit(&p->kh_taking, 0, memory_order_relaxed);
			uint64_t nv = ps_make(ps_epoch(v) + 1, PART_ALIVE, 0);
			if (!atomic_compare_exchange_strong_explicit(&p->state, &v, nv, memory_order_acq_rel,
								     memory_order_relaxed)) {
				lock_byte(q->fd, F_OFD_SETLK, F_UNLCK, i, NULL);
				continue;
			}
			fold_counters(q, p);
			p->pid = getpid();
			p->attached_ms = now;
			atomic_store_explicit(&p->last_active_ms, now, memory_order_relaxed);
			q->part = i;
			q->owner = i + 1;
			q->view.owner = q->owner;
			q->epoch = (uint32_t)ps_epoch(nv);
			q->me = p;
			return 0;
		}
	}
	return -EUSERS;
}

int shmq_part_attach(shmq_t *q, int lenient)
{
	int map_fd = q->fd, err = own_description(q);
	if (err)
		return err;
	if ((err = claim_record(q, lenient))) {
		disown(q);
		q->fd = map_fd;
	}
	return err;
}

uint32_t shmq_slots_held(shmq_t *q, int writing_too)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < q->capacity; i++) {
		uint64_t w = atomic_load_explicit(&slot_at(q, i)->word, memory_order_relaxed);
		unsigned st = w_state(w);
		n += (st == SLOT_LEASED || (writing_too && st == SLOT_WRITING)) && w_owner(w) == q->owner;
	}
	return n;
}

void shmq_part_detach(shmq_t *q)
{
	if (q->foreign || !q->me)
		return;
	/* no longer a consumer: the others take over our lanes at their next refresh, which the
	 * wake-up below brings forward for the ones asleep */
	uint32_t was = atomic_exchange_explicit(&q->me->role, 0, memory_order_relaxed);
	if (was == PART_CONSUMER)
		shmq_assignment_changed(q); /* after the role change it announces */
	if (!shmq_slots_held(q, 1)) {
		/* a clean close: nothing for a reclaim pass to requeue, so the record is freed now
		 * (not left looking like a crashed participant until the next pass), its counters
		 * kept in the retired totals */
		fold_counters(q, q->me);
		release(q, q->part, atomic_load_explicit(&q->me->state, memory_order_acquire), 0);
	} else {
		/* Counters stay in the record until it is reused. The record is freed by a reclaim
		 * pass once our lock is gone, after our leases have been requeued. */
		atomic_store_explicit(&q->me->last_active_ms, now_ms(), memory_order_relaxed);
	}
	lock_byte(q->fd, F_OFD_SETLK, F_UNLCK, q->part, NULL);
	disown(q);
	q->me = NULL;
	if (was == PART_CONSUMER && q->uses_lanes)
		shmq_notify(q, &q->hdr->data_seq, &q->hdr->data_sleepers, SHMQ_WAKE_ALL);
}

void shmq_assignment_changed(shmq_t *q)
{
	if (q->dispatch != SHMQ_DISPATCH_KEY_HASH)
		return;
	/* seq_cst: after the record change it announces (stored before it), and one half of the
	 * pair with shmq_kh_begin() (see the top of lanes.c). The set is kept: the first consumer
	 * to compute the new one moves the word again (kh_lanes) */
	atomic_fetch_add_explicit(&q->hdr->assign_gen, 1ULL << 32, memory_order_seq_cst);
}

/* Frees record i, observed as v, of a participant that is gone. The caller must already have
 * requeued every slot that owner held (shmq_reclaim does, for owners dead before its scan). */
int shmq_part_release(shmq_t *q, uint32_t i, uint64_t v)
{
	if (!release(q, i, v, now_ms() | 1))
		return 0;
	shmq_fd_forget(q, i, (uint32_t)ps_epoch(v)); /* its descriptor's socket file, if it had one */
	return 1;
}

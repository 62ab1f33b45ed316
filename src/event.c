/* SPDX-License-Identifier: MIT */
/*
 * event.c: waiting outside a receive. shmq_fd gives a descriptor an event loop can wait on;
 * shmq_wait_any sleeps on several queues from one thread.
 *
 * The descriptor. Wake-ups come from other processes, possibly in other PID namespaces that share
 * /dev/shm, so a process-local eventfd cannot carry them. The descriptor is an epoll instance
 * holding two descriptors:
 *   - a Unix datagram socket bound at /dev/shm/.shmq-fd-<hash of name and created_ns>-<record
 *     index>-<record epoch>: (index, epoch) names one participant for good, so a dead
 *     participant's stale file never collides with a live one's, and the queue's hash keeps two
 *     queues (or two generations of one name) apart. Its mode is the segment file's.
 *   - a timerfd: the safety net, armed for when a sleeping shmq_recv would look again at the
 *     latest (shmq_recv_ready: SLEEP_MAX_MS, the next due redelivery, the next reclaim pass).
 *
 *   arm     drain both; set our bit in hdr->fd_waiters; register in data_sleepers (seq_cst RMW,
 *           fence: wait.c); look at the queue (shmq_recv_ready); 1: clear our bit, receive;
 *           0: set the timer, wait
 *   waker   publish; sleepers flag odd (wait.c): futex wake; if it woke fewer than n, take up to
 *           the rest of n bits of fd_waiters (fetch_and per bit) and send each a 1-byte datagram
 *           (fdwake.c)
 *
 * No lost wake-up: the bit is set before the registration (sequenced before its seq_cst RMW), so
 * a waker whose flag load reads that registration or later sees the bit; a waker that read the
 * flag before it is one whose publish the arm's look after its fence sees (wait.c's argument).
 * The flag is cleared only by a waker that woke fewer than n (futex sleepers and bits together),
 * that is, found no bit left, and its clear fails if anyone registered since it read the flag.
 *
 * Crashes: a waiter killed while armed leaves its bit: the next wake-up takes it and its datagram
 * finds no socket (ENOENT once reclaim removed the file, ECONNREFUSED before): one syscall, once,
 * not counted as a wake-up, so the next waiter is woken instead.
 * A waker killed between its publish and its datagram, or a waiter woken and killed before it
 * received, leaves the message to the other waiters' safety-net timers.
 */
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "fdwake.h"
#include "handle.h"
#include "ring.h"
#include "wait.h"

#define SPURIOUS_MS 1 /* how soon an arm whose last "ready" found nothing looks again */

#ifdef SHMQ_TEST
static int no_safety_net; /* tests: the safety net waits an hour, so only datagrams wake */
void shmq_test_fd_no_safety_net(int on) { no_safety_net = on; }
#endif

static void lock(shmq_t *q)
{
	while (atomic_exchange_explicit(&q->ev_lock, 1, memory_order_acquire))
		cpu_relax(); /* held for a few syscalls by another thread of this process */
}
static void unlock(shmq_t *q) { atomic_store_explicit(&q->ev_lock, 0, memory_order_release); }

/* Creates the socket, the timer and the epoll instance holding them (under ev_lock). */
static int create(shmq_t *q)
{
	int sock = -1, timer = -1, ep = -1, err;
	struct sockaddr_un a;
	struct stat st;
	shmq_fd_path(q, q->part, q->epoch, &a);
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (sock < 0)
		goto fail;
	if (bind(sock, (struct sockaddr *)&a, sizeof(a)) < 0) {
		/* a file of our own (index, epoch) can only be left over from an earlier shmq_fd of
		 * this very participant that failed half-way: ours to replace */
		if (errno != EADDRINUSE || unlink(a.sun_path) < 0 ||
		    bind(sock, (struct sockaddr *)&a, sizeof(a)) < 0)
			goto fail;
	}
	/* the segment's own permissions: who may send to the queue may wake its waiters */
	if (fstat(q->fd, &st) < 0 || chmod(a.sun_path, st.st_mode & 0666) < 0)
		goto fail_unlink;
	timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (timer < 0 || ep < 0)
		goto fail_unlink;
	struct epoll_event ev = {.events = EPOLLIN};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev) < 0)
		goto fail_unlink;
	atomic_store_explicit(&q->ev_sock, sock + 1, memory_order_relaxed);
	atomic_store_explicit(&q->ev_timer, timer + 1, memory_order_relaxed);
	/* release: a thread that reads ev_fd (acquire) sees the two above */
	atomic_store_explicit(&q->ev_fd, ep + 1, memory_order_release);
	return ep;
fail_unlink:
	err = -errno;
	unlink(a.sun_path);
	goto out;
fail:
	err = -errno;
out:
	if (sock >= 0)
		close(sock);
	if (timer >= 0)
		close(timer);
	if (ep >= 0)
		close(ep);
	return err;
}

int shmq_fd(shmq_t *q)
{
	if (foreign(q))
		return -ECHILD;
	if (!q)
		return -EINVAL;
	/* acquire: pairs with create()'s release */
	int ep = atomic_load_explicit(&q->ev_fd, memory_order_acquire);
	if (ep)
		return ep - 1;
	lock(q);
	ep = atomic_load_explicit(&q->ev_fd, memory_order_acquire);
	int r = ep ? ep - 1 : create(q);
	unlock(q);
	return r;
}

/* The look after a registration, for shmq_fd_arm and shmq_wait_any: shmq_recv_ready, except that a
 * "ready" after which no receive of this handle found anything (another consumer was first, or the
 * look is more hopeful than the receive, e.g. a key-hash lane not taken up yet) is answered "not
 * ready, look again in SPURIOUS_MS": a loop that believed it would spin. */
static int ready(shmq_t *q, uint64_t *until)
{
	uint64_t got = atomic_load_explicit(&q->me->counters[C_RECEIVED], memory_order_relaxed) + 1;
	int r = shmq_recv_ready(q, until);
	if (r && atomic_exchange_explicit(&q->ev_ready_at, got, memory_order_relaxed) == got) {
		*until = now_ns() + SPURIOUS_MS * 1000000ULL;
		r = 0;
	}
	if (!r)
		atomic_store_explicit(&q->ev_ready_at, 0, memory_order_relaxed);
	return r;
}

int shmq_fd_arm(shmq_t *q)
{
	int ep = shmq_fd(q);
	if (ep < 0)
		return ep;
	int sock = atomic_load_explicit(&q->ev_sock, memory_order_relaxed) - 1;
	int timer = atomic_load_explicit(&q->ev_timer, memory_order_relaxed) - 1;
	char buf[64];
	/* bounded: datagrams are sent only to armed waiters, one per bit taken, and the socket
	 * buffer holds a bounded number */
	for (int i = 0; i < 4096 && recv(sock, buf, sizeof(buf), MSG_DONTWAIT) >= 0; i++)
		;
	uint64_t ticks;
	if (read(timer, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		return -errno;
	_Atomic uint64_t *word = &q->hdr->fd_waiters[q->part / 64];
	uint64_t bit = 1ULL << (q->part % 64);
	/* relaxed: the registration's seq_cst RMW right after it orders it (see the top) */
	atomic_fetch_or_explicit(word, bit, memory_order_relaxed);
	shmq_sleep_register(&q->hdr->data_sleepers);
	uint64_t until;
	if (ready(q, &until)) {
		/* not waiting: a wake-up taken meanwhile costs one datagram, drained by the next arm */
		atomic_fetch_and_explicit(word, ~bit, memory_order_relaxed);
		return 1;
	}
#ifdef SHMQ_TEST
	/* only the long bound: a held ticket's grace and the re-look after a spurious "ready" stay */
	if (no_safety_net && until > now_ns() + 500 * 1000000ULL)
		until = now_ns() + 3600 * 1000000000ULL;
#endif
	struct itimerspec its = {.it_value = {.tv_sec = (time_t)(until / 1000000000ULL),
					      .tv_nsec = (long)(until % 1000000000ULL)}};
	if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
		its.it_value.tv_nsec = 1; /* 0 would disarm it */
	if (timerfd_settime(timer, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return -errno;
	return 0;
}

void shmq_fd_close(shmq_t *q)
{
	int ep = atomic_load_explicit(&q->ev_fd, memory_order_acquire) - 1;
	int tx = atomic_load_explicit(&q->ev_tx, memory_order_relaxed) - 1;
	if (tx >= 0)
		close(tx);
	if (ep < 0)
		return;
	if (!q->foreign) {
		/* a child's copies are closed, the parent's bit and file left alone */
		atomic_fetch_and_explicit(&q->hdr->fd_waiters[q->part / 64], ~(1ULL << (q->part % 64)),
					  memory_order_relaxed);
		struct sockaddr_un a;
		shmq_fd_path(q, q->part, q->epoch, &a);
		unlink(a.sun_path);
	}
	close(atomic_load_explicit(&q->ev_sock, memory_order_relaxed) - 1);
	close(atomic_load_explicit(&q->ev_timer, memory_order_relaxed) - 1);
	close(ep);
}

/* ---- several queues ---------------------------------------------------------------------- */

#ifndef FUTEX_32
#define FUTEX_32 2
struct futex_waitv {
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t __reserved;
};
#endif
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

#ifdef SHMQ_TEST
static int no_waitv; /* tests: take the ENOSYS fallback */
void shmq_test_no_futex_waitv(int on) { no_waitv = on; }

int shmq_test_fd_pending(shmq_t *q)
{
	struct pollfd p[2] = {{.fd = atomic_load(&q->ev_sock) - 1, .events = POLLIN},
			      {.fd = atomic_load(&q->ev_timer) - 1, .events = POLLIN}};
	if (poll(p, 2, 0) < 0)
		return -errno;
	return (p[0].revents & POLLIN ? 1 : 0) | (p[1].revents & POLLIN ? 2 : 0);
}
#else
#define no_waitv 0
#endif

int shmq_wait_any(shmq_t *const *qs, unsigned n, int timeout_ms)
{
	if (!qs || !n || n > SHMQ_WAIT_ANY_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (!qs[i])
			return -EINVAL;
		if (foreign(qs[i]))
			return -ECHILD;
	}
	static SHMQ_TLS unsigned rot;
	struct futex_waitv w[SHMQ_WAIT_ANY_MAX];
	uint64_t deadline = shmq_deadline(timeout_ms);
	int waitv = !no_waitv;
	for (;;) {
		unsigned start = rot++;
		uint64_t until = deadline;
		for (unsigned k = 0; k < n; k++) {
			unsigned i = (start + k) % n;
			struct shmq_hdr *h = qs[i]->hdr;
			/* as a sleeping receive: the word first (acquire: pairs with shmq_wake's
			 * release bump), then the registration, then the look (wait.c) */
			w[i] = (struct futex_waitv){
				.val = atomic_load_explicit(&h->data_seq, memory_order_acquire),
				.uaddr = (uintptr_t)&h->data_seq,
				.flags = FUTEX_32, /* shared: no FUTEX_PRIVATE_FLAG */
			};
			shmq_sleep_register(&h->data_sleepers);
			uint64_t u;
			if (ready(qs[i], &u))
				return (int)i;
			if (u < until)
				until = u;
		}
		uint64_t now = now_ns();
		if (now >= deadline)
			return -EAGAIN;
		if (waitv) {
			struct timespec ts = {.tv_sec = (time_t)(until / 1000000000ULL),
					      .tv_nsec = (long)(until % 1000000000ULL)};
			/* absolute, on CLOCK_MONOTONIC; any return (woken, a word changed, the
			 * timeout, a signal) leads to another look */
			if (syscall(SYS_futex_waitv, w, n, 0, &ts, CLOCK_MONOTONIC) < 0 && errno == ENOSYS)
				waitv = 0;
			else
				continue;
		}
		/* no futex_waitv (Linux < 5.16): look again within 1 ms */
		uint64_t rel = until - now < 1000000ULL ? until - now : 1000000ULL;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)rel};
		nanosleep(&ts, NULL);
	}
}

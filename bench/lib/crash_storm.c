/* SPDX-License-Identifier: MIT */
/*
 * crash_storm.c: one transport through a consumer-kill storm (see crash_storm.h).
 *
 * Processes: this one (the supervisor), one producer, and one consumer at a time, all sharing an
 * anonymous MAP_SHARED region: a 16-bit delivery counter per sequence number plus a few words of
 * progress. A consumer does, per message: recv; note the sequence as "held"; bump its counter;
 * ack (if the transport has acks); clear "held". So when a consumer is SIGKILLed, "held" names
 * the message it had counted but maybe not acked: a transport with acks may deliver exactly that
 * one again, and a second delivery of anything else is a duplicate it should not have made.
 *
 * Phases:
 *   storm  a consumer is started, killed 5-50 ms after it attached, replaced, and so on, until the
 *          producer has sent everything and everything arrived (or nothing new came for drain_ms:
 *          the rest is lost, or nothing at all for quiet_ms: stalled, or storm_limit_ms passed);
 *   final  one consumer runs unmolested until nothing at all arrives for quiet_ms, so late
 *          redeliveries are counted too;
 *   probe  if messages are missing, the producer sends one more (up to CRASH_PROBES, 1 s apart):
 *          if none arrives the transport is wedged (a lock held by a dead consumer, say), else the
 *          missing ones are lost. A producer that never finished sending is wedged too.
 * Children die with this process (PR_SET_PDEATHSIG); every one is killed and reaped on every path.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/crash_storm.h"

#define CRASH_PROBES 4
#define CRASH_PROBE_WAIT_MS 1000

struct crash_shared {
	_Atomic uint64_t sent;
	_Atomic int producer_done;
	_Atomic int producer_err;   /* -errno of the send (or attach: -ENOTCONN) that failed */
	_Atomic unsigned probe_req; /* probes asked for; the producer sends seq count + i */
	_Atomic int quit;
	_Atomic int ready;	     /* the current consumer has attached */
	_Atomic int consumer_err;    /* last recv error of a consumer */
	_Atomic uint64_t held;	     /* seq + 1 between counting and the end of ack, else 0 */
	_Atomic uint64_t deliveries; /* counted deliveries, duplicates included */
	_Atomic uint64_t fresh;	     /* first deliveries */
	_Atomic uint64_t last_delivery_ns;
	_Atomic uint64_t last_fresh_ns;
	_Atomic uint64_t last_msg_ns; /* last delivery of seq < count, first or not */
	_Atomic uint64_t corrupt;
	_Atomic uint64_t ack_errors;
	_Atomic uint16_t seen[]; /* deliveries per seq: count messages, then the probes */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: plenty for kill intervals */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

/* seq in the first 8 bytes, then bytes derived from it, so a torn or shifted message shows. */
static void msg_fill(unsigned char *m, uint64_t seq)
{
	memcpy(m, &seq, sizeof(seq));
	for (unsigned i = sizeof(seq); i < CRASH_MSG_SIZE; i++)
		m[i] = (unsigned char)(seq * 131 + i);
}

static int msg_check(const unsigned char *m, uint64_t seq)
{
	for (unsigned i = sizeof(seq); i < CRASH_MSG_SIZE; i++)
		if (m[i] != (unsigned char)(seq * 131 + i))
			return 0;
	return 1;
}

/* A child that dies with the supervisor, even if the supervisor is SIGKILLed. */
static pid_t spawn(void)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
	}
	return pid;
}

static void producer_main(const struct peer_ops *ops, struct peer_chan *c, struct crash_shared *sh,
			  uint64_t count)
{
	unsigned char m[CRASH_MSG_SIZE];
	void *ep = ops->attach(c, PEER_SENDER);
	if (!ep) {
		fprintf(stderr, "crash: producer: attach failed\n");
		atomic_store(&sh->producer_err, -ENOTCONN);
		_exit(2);
	}
	for (uint64_t seq = 0; seq < count; seq++) {
		msg_fill(m, seq);
		int err;
		while ((err = ops->send(ep, m, sizeof(m))) == -EAGAIN || err == -EINTR)
			;
		if (err) {
			fprintf(stderr, "crash: producer: send #%llu: %s\n", (unsigned long long)seq,
				strerror(-err));
			/* stay attached: a sender that goes away can close the channel on the consumers */
			atomic_store(&sh->producer_err, err);
			while (!atomic_load(&sh->quit))
				sleep_ms(5);
			_exit(3);
		}
		atomic_store_explicit(&sh->sent, seq + 1, memory_order_relaxed);
	}
	atomic_store(&sh->producer_done, 1);
	for (unsigned probes = 0; !atomic_load(&sh->quit);) {
		if (atomic_load(&sh->probe_req) > probes) {
			msg_fill(m, count + probes++);
			ops->send(ep, m, sizeof(m));
		} else {
			sleep_ms(1);
		}
	}
	ops->detach(ep);
	_exit(0);
}

static void consumer_main(const struct peer_ops *ops, struct peer_chan *c, struct crash_shared *sh,
			  uint64_t count, uint64_t work_ns)
{
	unsigned char m[CRASH_MSG_SIZE];
	uint64_t total = count + CRASH_PROBES;
	int acks = (ops->flags & PEER_ACKS) && ops->ack;
	void *ep = ops->attach(c, PEER_RECEIVER);
	if (!ep) {
		fprintf(stderr, "crash: consumer %ld: attach failed\n", (long)getpid());
		_exit(2);
	}
	atomic_store(&sh->ready, 1);
	for (;;) {
		int n = ops->recv(ep, m, sizeof(m));
		/* an adapter's own timeout (iceoryx says -ETIMEDOUT): nothing came, keep waiting */
		if (n == -EAGAIN || n == -EINTR || n == -ETIMEDOUT)
			continue;
		if (n < 0) {
			fprintf(stderr, "crash: consumer %ld: recv: %s\n", (long)getpid(), strerror(-n));
			atomic_store(&sh->consumer_err, n);
			_exit(3);
		}
		uint64_t seq;
		memcpy(&seq, m, sizeof(seq));
		if (n != CRASH_MSG_SIZE || seq >= total || !msg_check(m, seq)) {
			atomic_fetch_add(&sh->corrupt, 1);
			if (acks)
				ops->ack(ep);
			continue;
		}
		/* held before the count: a kill between the two can only over-report "held" */
		atomic_store(&sh->held, seq + 1);
		uint16_t before = atomic_fetch_add(&sh->seen[seq], 1);
		uint64_t t = now_ns();
		if (seq < count)
			atomic_store(&sh->last_msg_ns, t);
		if (!before && seq < count) {
			atomic_fetch_add(&sh->fresh, 1);
			atomic_store(&sh->last_fresh_ns, t);
		}
		atomic_fetch_add(&sh->deliveries, 1);
		atomic_store(&sh->last_delivery_ns, t);
		/* the "processing": most kills land here, with the message held and not yet acked */
		while (now_ns() - t < work_ns)
			;
		if (acks && ops->ack(ep))
			atomic_fetch_add(&sh->ack_errors, 1);
		atomic_store(&sh->held, 0);
	}
}

struct storm {
	const struct peer_ops *ops;
	const struct crash_config *cfg;
	struct peer_chan *chan;
	struct crash_shared *sh;
	struct crash_result *r;
	unsigned char *held_at_kill; /* per seq: a killed consumer held it */
	pid_t producer;
	pid_t consumer;
	uint64_t last_kill_ns;
	uint64_t producer_done_ns;
};

static pid_t consumer_start(struct storm *s)
{
	atomic_store(&s->sh->ready, 0);
	atomic_store(&s->sh->held, 0);
	pid_t pid = spawn();
	if (pid == 0)
		consumer_main(s->ops, s->chan, s->sh, s->cfg->count, (uint64_t)s->cfg->work_us * 1000);
	s->consumer = pid > 0 ? pid : 0;
	return pid;
}

/* Reaps the consumer (killing it first if kill_it) and books what it left behind. */
static void consumer_end(struct storm *s, int kill_it)
{
	int status = 0;
	if (!s->consumer)
		return;
	if (kill_it)
		kill(s->consumer, SIGKILL);
	waitpid(s->consumer, &status, 0);
	s->consumer = 0;
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && kill_it) {
		s->r->kills++;
		s->last_kill_ns = now_ns();
		uint64_t held = atomic_load(&s->sh->held);
		if (held && held <= s->cfg->count) {
			s->r->kills_holding++;
			s->held_at_kill[held - 1] = 1;
		}
	} else {
		s->r->consumer_exits++;
	}
	atomic_store(&s->sh->held, 0);
}

/* Whether the consumer exited by itself (then it is reaped and booked). */
static int consumer_gone(struct storm *s)
{
	int status;
	if (!s->consumer || waitpid(s->consumer, &status, WNOHANG) != s->consumer)
		return 0;
	s->consumer = 0;
	s->r->consumer_exits++;
	return 1;
}

static uint64_t last_progress_ns(const struct storm *s, uint64_t since)
{
	uint64_t t = atomic_load(&s->sh->last_delivery_ns);
	return t > since ? t : since;
}

static void producer_poll(struct storm *s)
{
	if (!s->producer_done_ns && atomic_load(&s->sh->producer_done))
		s->producer_done_ns = now_ns();
}

/* The storm: returns why it ended. */
static const char *storm_phase(struct storm *s)
{
	const struct crash_config *cfg = s->cfg;
	uint64_t rng = cfg->seed | 1, t0 = now_ns();
	for (;;) {
		producer_poll(s);
		uint64_t now = now_ns();
		if (s->producer_done_ns && atomic_load(&s->sh->fresh) >= cfg->count)
			return "all delivered";
		if (atomic_load(&s->sh->producer_err))
			return "send failed";
		if (now - t0 >= (uint64_t)cfg->storm_limit_ms * 1000000)
			return "time limit";
		if (now - last_progress_ns(s, t0) >= (uint64_t)cfg->quiet_ms * 1000000)
			return "stalled";
		uint64_t fresh_t = atomic_load(&s->sh->last_fresh_ns);
		if (s->producer_done_ns &&
		    now - (fresh_t > s->producer_done_ns ? fresh_t : s->producer_done_ns) >=
			    (uint64_t)cfg->drain_ms * 1000000)
			return "drained";

		if (consumer_start(s) < 0) {
			snprintf(s->r->note, sizeof(s->r->note), "fork: %s", strerror(errno));
			return "fork failed";
		}
		/* the kill clock starts once it has attached: a kill during attach tests nothing */
		uint64_t give_up = now_ns() + (uint64_t)cfg->quiet_ms * 1000000;
		while (!atomic_load(&s->sh->ready) && now_ns() < give_up && !consumer_gone(s))
			sleep_ms(1);
		if (!s->consumer) {
			sleep_ms(10); /* it failed to attach or to receive: do not spin on forks */
			continue;
		}
		if (atomic_load(&s->sh->ready))
			sleep_ms(cfg->kill_min_ms +
				 (unsigned)(rng_next(&rng) % (cfg->kill_max_ms - cfg->kill_min_ms + 1)));
		consumer_end(s, 1);
	}
}

/* One consumer, left alone until nothing arrives for quiet_ms (replaced if it exits). */
static void final_phase(struct storm *s)
{
	const struct crash_config *cfg = s->cfg;
	uint64_t t0 = now_ns();
	consumer_start(s);
	for (;;) {
		sleep_ms(5);
		producer_poll(s);
		uint64_t now = now_ns();
		if (now - last_progress_ns(s, t0) >= (uint64_t)cfg->quiet_ms * 1000000)
			return;
		if (now - t0 >= (uint64_t)cfg->final_limit_ms * 1000000) {
			snprintf(s->r->note, sizeof(s->r->note),
				 "final run stopped at its %u s limit, still moving",
				 cfg->final_limit_ms / 1000);
			return;
		}
		if (consumer_gone(s)) {
			sleep_ms(10);
			consumer_start(s);
		}
	}
}

/* Missing messages: lost, or is the transport stuck? Ask the producer for fresh ones. 1: stuck. */
static int probe_phase(struct storm *s)
{
	for (unsigned i = 0; i < CRASH_PROBES; i++) {
		atomic_store(&s->sh->probe_req, i + 1);
		for (unsigned ms = 0; ms < CRASH_PROBE_WAIT_MS; ms += 5) {
			for (unsigned p = 0; p <= i; p++)
				if (atomic_load(&s->sh->seen[s->cfg->count + p]))
					return 0;
			if (consumer_gone(s))
				consumer_start(s);
			sleep_ms(5);
		}
	}
	return 1;
}

/* Kills and reaps every child; the producer gets a moment to detach cleanly unless wedged. */
static void children_end(struct storm *s)
{
	atomic_store(&s->sh->quit, 1);
	if (s->consumer) {
		kill(s->consumer, SIGKILL);
		waitpid(s->consumer, NULL, 0);
		s->consumer = 0;
	}
	if (s->producer) {
		int status;
		for (int i = 0; !s->r->wedged && i < 200 && waitpid(s->producer, &status, WNOHANG) == 0; i++)
			sleep_ms(10);
		kill(s->producer, SIGKILL); /* harmless on a zombie: it is still ours until reaped */
		waitpid(s->producer, &status, 0);
		s->producer = 0;
	}
}

static void tally(struct storm *s)
{
	struct crash_result *r = s->r;
	for (uint64_t i = 0; i < s->cfg->count; i++) {
		unsigned n = atomic_load_explicit(&s->sh->seen[i], memory_order_relaxed);
		if (!n)
			continue;
		r->delivered++;
		if (n > 1) {
			r->dup++;
			r->extra += n - 1;
			r->dup_held += s->held_at_kill[i];
		}
	}
	r->lost = s->cfg->count - r->delivered;
	r->sent = atomic_load(&s->sh->sent);
	r->corrupt = atomic_load(&s->sh->corrupt);
	r->ack_errors = atomic_load(&s->sh->ack_errors);
	uint64_t last_fresh = atomic_load(&s->sh->last_fresh_ns), last_msg = atomic_load(&s->sh->last_msg_ns);
	uint64_t k = s->last_kill_ns;
	if (k) {
		r->recover_ms = last_fresh > k ? (double)(last_fresh - k) / 1e6 : 0;
		r->settle_ms = last_msg > k ? (double)(last_msg - k) / 1e6 : 0;
	}
}

void crash_storm_run(const struct peer_ops *ops, const struct crash_config *cfg, const char *tag,
		     struct crash_result *r)
{
	struct storm s = {.ops = ops, .cfg = cfg, .r = r};
	size_t shm_len = sizeof(struct crash_shared) + (cfg->count + CRASH_PROBES) * sizeof(uint16_t);
	uint64_t t0 = now_ns();
	int err;

	memset(r, 0, sizeof(*r));
	s.sh = mmap(NULL, shm_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	s.held_at_kill = calloc(cfg->count, 1);
	if (s.sh == MAP_FAILED || !s.held_at_kill) {
		snprintf(r->note, sizeof(r->note), "out of memory");
		r->error = 1;
		goto out_mem;
	}
	if (ops->start && (err = ops->start())) {
		const char *why = ops->probe ? ops->probe() : NULL;
		snprintf(r->note, sizeof(r->note), "start: %s", why ? why : strerror(-err));
		r->error = 1;
		goto out_mem;
	}
	struct peer_params p = {
		.msg_size = CRASH_MSG_SIZE,
		.blocking = (ops->flags & PEER_BLOCKING) ? 1 : 0,
		.senders = 1,
		.receivers = 1,
	};
	snprintf(p.tag, sizeof(p.tag), "%s", tag);
	s.chan = ops->create(&p);
	if (!s.chan) {
		snprintf(r->note, sizeof(r->note), "create failed (see the log)");
		r->error = 1;
		goto out_stop;
	}

	s.producer = spawn();
	if (s.producer == 0)
		producer_main(ops, s.chan, s.sh, cfg->count);
	if (s.producer < 0) {
		snprintf(r->note, sizeof(r->note), "fork: %s", strerror(errno));
		s.producer = 0;
		r->error = 1;
		goto out_destroy;
	}

	uint64_t storm0 = now_ns();
	snprintf(r->end, sizeof(r->end), "%s", storm_phase(&s));
	uint64_t storm_end = now_ns(), last_fresh = atomic_load(&s.sh->last_fresh_ns);
	r->storm_s = (double)(storm_end - storm0) / 1e9;
	/* until the last first delivery: a storm that waited drain_ms for lost messages moved nothing then */
	if (last_fresh > storm0)
		r->storm_rate = (double)atomic_load(&s.sh->fresh) * 1e9 / (double)(last_fresh - storm0);
	if (strcmp(r->end, "fork failed"))
		final_phase(&s);

	producer_poll(&s);
	int perr = atomic_load(&s.sh->producer_err);
	if (perr) {
		r->error = 1;
		snprintf(r->note, sizeof(r->note), "%s: %s (after %llu sent)",
			 perr == -ENOTCONN ? "producer attach" : "send", strerror(-perr),
			 (unsigned long long)atomic_load(&s.sh->sent));
	} else if (!s.producer_done_ns) {
		r->wedged = 1;
		snprintf(r->note, sizeof(r->note),
			 "producer blocked after %llu of %llu sent, nothing moved for %u s",
			 (unsigned long long)atomic_load(&s.sh->sent), (unsigned long long)cfg->count,
			 cfg->quiet_ms / 1000);
	} else if (atomic_load(&s.sh->fresh) < cfg->count && probe_phase(&s)) {
		r->wedged = 1;
		snprintf(r->note, sizeof(r->note),
			 "%llu messages outstanding and a fresh one sent now never arrived",
			 (unsigned long long)(cfg->count - atomic_load(&s.sh->fresh)));
	}
	int consumer_err = atomic_load(&s.sh->consumer_err);
	if (!r->note[0] && consumer_err)
		snprintf(r->note, sizeof(r->note), "a consumer's recv failed: %s", strerror(-consumer_err));

	children_end(&s);
	tally(&s);
	r->total_s = (double)(now_ns() - t0) / 1e9;
	/* the results are in before cleanup, which may hang on a transport left in a bad state */
	atomic_thread_fence(memory_order_seq_cst);
	r->finished = 1;
out_destroy:
	children_end(&s);
	ops->destroy(s.chan);
out_stop:
	if (ops->stop)
		ops->stop();
out_mem:
	if (s.sh != MAP_FAILED && s.sh)
		munmap(s.sh, shm_len);
	free(s.held_at_kill);
	r->finished = 1;
}

/* SPDX-License-Identifier: MIT */
/*
 * harness: shmq against its peers and the physical floor, in one run, under the same conditions.
 *
 * Every transport of bench/peers/ (registry.c) is measured in every scenario it supports:
 *
 *   latency     ping-pong over two channels (send; the echo receives, acks and sends back;
 *               receive + ack); one-way = RTT / 2, every sample in a histogram; 64 B and 1 KiB,
 *               busy-poll (shmq: timeout-0 receives in a loop) and blocking (shmq: timeout -1)
 *               where the transport has them. The floor bounces one word in one line instead.
 *   throughput  1 producer -> 1 consumer for --duration, 64 B and 1 KiB, single and batch (32)
 *               calls, the same capacity (1024) for every ring; the consumer checks every sequence
 *               number (in order) and samples the backlog, so each run says whether the consumer
 *               kept up or worked through a backlog; then 2 producers x 2 consumers for MPMC
 *               transports (per-producer order, and no loss or duplicate overall)
 *   resources   peak RSS, CPU time per message, shm segment size (from /dev/shm), CPU used by a
 *               consumer blocked in recv with nothing to receive, and its wake-up latency
 *   keyed       shmq only: send + recv + ack in one process, plain against keyed (a fresh
 *               16-byte idempotency key per message), alternating, ns per message
 *
 * Each measurement runs in processes forked for it (pinned to distinct CPUs when there are >= 2),
 * starts after all of them are set up, excludes a warm-up, is repeated --repeats times interleaved
 * across transports, and is reported as median [min-max]; runs during which other processes kept
 * more than NOISY_LOAD CPUs busy are flagged. A transport that cannot run is listed as skipped or
 * not built, one that fails or hangs (watchdog) as failed, and the harness goes on. Children are
 * killed and channels destroyed on every exit path.
 *
 * Output: tables on stdout, the ratios against issue 14's targets (each met or MISSED), OUT/bench.json, and
 * OUT/latency.png and OUT/throughput.png when gnuplot is installed.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/keyed.h"
#include "lib/machine.h"
#include "lib/proc.h"
#include "lib/report.h"
#include "lib/stats.h"
#include "peers/peer.h"
#include "shmq.h"

#define MAX_TP 32
#define MAX_REPEATS 25
#define BATCH 32
#define NOISY_LOAD 0.25	     /* CPUs kept busy by other processes above which a run is noisy */
#define ID_STOP (1ull << 63) /* in bytes 8..15 (the producer id): the end of the stream */
#define TAIL_MAGIC 0x9e3779b97f4a7c15ull
#define LAT_DEPTH 64
#define TP_DEPTH 1024
#define WAKE_GAP_NS 2000000ull /* between two wake-up samples: the consumer is asleep again */
#define SETTLE_NS 100000000ull /* before the idle-CPU window: spinning phases are over */
#define WORD_STOP (1ull << 61) /* a PEER_WORD transport's end of the round trips */

/* ---- options ---------------------------------------------------------------------------------- */

static struct {
	int quick, repeats;
	double duration, warmup, lat_cap, idle;
	long round_trips, lat_warm, keyed_msgs;
	unsigned wake_samples;
	unsigned watchdog_s;
	const char *out, *only, *scenarios;
} opt = {.repeats = 3, .duration = 2.0, .round_trips = 100000, .watchdog_s = 30, .out = "bench-results"};

/* ---- scenarios -------------------------------------------------------------------------------- */

enum scen {
	SC_LAT,
	SC_TP,
	SC_MPMC,
	SC_BLOCKED,
	SC_KEYED
};
static const char *scen_names[] = {"latency", "throughput", "mpmc", "resources", "keyed"};
#define NSCEN ((int)(sizeof(scen_names) / sizeof(scen_names[0])))

struct variant {
	enum scen sc;
	size_t size;
	int blocking; /* latency: the recv mode; throughput: chosen per transport (-1) */
	int batch;
	const char *key;
};

static const struct variant variants[] = {
	{SC_LAT, 64, 0, 0, "latency_64_busy_poll"},
	{SC_LAT, 64, 1, 0, "latency_64_blocking"},
	{SC_LAT, 1024, 0, 0, "latency_1024_busy_poll"},
	{SC_LAT, 1024, 1, 0, "latency_1024_blocking"},
	{SC_TP, 64, -1, 0, "throughput_64_single"},
	{SC_TP, 64, -1, 1, "throughput_64_batch32"},
	{SC_TP, 1024, -1, 0, "throughput_1024_single"},
	{SC_TP, 1024, -1, 1, "throughput_1024_batch32"},
	{SC_MPMC, 64, -1, 0, "throughput_2p2c_64_single"},
	{SC_BLOCKED, 64, 1, 0, "blocked_consumer_64"},
	{SC_KEYED, 64, 0, 0, "keyed_64"},
};
#define NVAR ((int)(sizeof(variants) / sizeof(variants[0])))
enum {
	V_LAT64B,
	V_LAT64S,
	V_LAT1KB,
	V_LAT1KS,
	V_TP64,
	V_TP64B,
	V_TP1K,
	V_TP1KB,
	V_MPMC,
	V_BLOCKED,
	V_KEYED
};

/* a throughput run's mode, from the backlog the consumers saw (samples in the measured window):
 * BACKLOG when most samples held at least half the capacity, KEEPING_UP when most held less than
 * an eighth, MIXED otherwise. The same ring can run in either: a consumer that keeps up polls the
 * slot the producer is writing, a consumer working through a backlog reads slots long written. */
enum mode {
	MODE_NONE,
	MODE_KEEPING_UP,
	MODE_MIXED,
	MODE_BACKLOG
};
static const char mode_letter[] = {'-', 'K', 'M', 'B'};
static const char *mode_names[] = {"n/a", "keeping up", "mixed", "backlog"};

#define NPCT 5
static const double pct_at[NPCT] = {50, 90, 99, 99.9, 100};
static const char *pct_names[NPCT] = {"p50", "p90", "p99", "p99.9", "max"};
static const char *pct_keys[NPCT] = {"p50_ns", "p90_ns", "p99_ns", "p99_9_ns", "max_ns"};

/* ---- transports and results ------------------------------------------------------------------- */

struct transport {
	const char *slot;
	const struct peer_ops *ops;
	const char *name;
	char status[400]; /* "" when it runs; else "not built", "skipped: ...", "failed: ..." */
	int selected, started, hangs;
};
static struct transport tps[MAX_TP];
static int ntp;

enum {
	RES_NONE,
	RES_OK,
	RES_FAILED
};

struct result {
	int state;
	int blocking; /* recv mode used */
	char err[320];
	double other_load;
	/* latency (one-way ns) or wake-up (ns) */
	double pct[NPCT], mean;
	uint64_t samples;
	/* throughput; mode and depth from the consumers' backlog samples */
	double msgs_s, mb_s, cpu_ns_msg;
	uint64_t msgs;
	int mode;
	double depth;
	long rss_send_kib, rss_recv_kib;
	double seg_bytes;
	/* blocked consumer */
	double idle_cpu; /* CPU seconds per second */
	/* keyed: ns per send + recv + ack */
	double plain_ns, keyed_ns;
};
static struct result (*results)[MAX_TP][MAX_REPEATS];
static char skip_why[NVAR][MAX_TP][320]; /* a failed measurement is not repeated */

/* ---- what the children share with the parent (one MAP_SHARED mapping, reset per run) ---------- */

struct side {
	/* consumer: messages received so far (every message); producer: messages sent so far (every
	 * 32 messages, or batch), for the consumers' backlog samples */
	_Alignas(64) _Atomic uint64_t count;
	uint64_t sent;		 /* producer: messages sent */
	uint64_t win_n0, win_n1; /* messages at the start and end of the measured window */
	uint64_t win_t0, win_t1;
	double win_cpu0, win_cpu1;
	uint64_t per_cnt[2], per_sum[2]; /* consumer: per producer, count and sum of sequence numbers */
	/* consumer: backlog samples in the measured window: how many, their sum, how many held at
	 * least half the capacity, how many less than an eighth */
	uint64_t depth_n, depth_sum, depth_hi, depth_lo;
};

struct shared {
	_Atomic int err_set;
	char err[200];
	uint64_t t_meas, t_stop, t_idle_end;
	_Atomic uint64_t sent_total;
	_Atomic int producers_done, consumers_done;
	struct side side[PROC_MAX];
	struct hist h;
	double plain_ns, keyed_ns; /* keyed */
};
static struct shared *sh;

static struct machine mach;
static int cpu_a = -1, cpu_b = -1;
static pid_t main_pid;
static unsigned serial;

/* ---- cleanup on every exit path ------------------------------------------------------------- */

#define MAX_LIVE 4
static struct {
	const struct peer_ops *ops;
	struct peer_chan *c;
} live_chan[MAX_LIVE];
static sigjmp_buf alarm_jmp;
static volatile sig_atomic_t alarm_armed;

static void destroy_live(void)
{
	for (int i = 0; i < MAX_LIVE; i++)
		if (live_chan[i].c) {
			struct peer_chan *c = live_chan[i].c;
			live_chan[i].c = NULL;
			live_chan[i].ops->destroy(c);
		}
}

static void cleanup(void)
{
	if (getpid() != main_pid)
		return;
	proc_kill_all();
	destroy_live();
	for (int t = 0; t < ntp; t++)
		if (tps[t].started) {
			tps[t].started = 0;
			tps[t].ops->stop();
		}
}

/* a parent-side adapter call (start, create, destroy) that hangs: back to the caller, which
 * reports the transport as failed and never calls it again */
static void on_alarm(int sig)
{
	(void)sig;
	if (alarm_armed)
		siglongjmp(alarm_jmp, 1);
	static const char m[] = "harness: watchdog: stuck outside a measurement, giving up\n";
	(void)!write(2, m, sizeof(m) - 1);
	proc_kill_all();
	_exit(3);
}

/* ---- message layout: bytes 0..7 sequence, 8..15 producer id (| ID_STOP), 16..23 send time
 * (wake-up runs), last 8 bytes sequence ^ TAIL_MAGIC (a torn or shifted message shows) -------- */

static void msg_fill(unsigned char *m, size_t size, uint64_t seq, uint64_t id)
{
	uint64_t tail = seq ^ TAIL_MAGIC;
	memcpy(m, &seq, 8);
	memcpy(m + 8, &id, 8);
	memcpy(m + size - 8, &tail, 8);
}

static uint64_t msg_seq(const unsigned char *m)
{
	uint64_t v;
	memcpy(&v, m, 8);
	return v;
}

static uint64_t msg_id(const unsigned char *m)
{
	uint64_t v;
	memcpy(&v, m + 8, 8);
	return v;
}

/* ---- children --------------------------------------------------------------------------------- */

struct job {
	const struct peer_ops *ops;
	struct peer_chan *ch[2];
	size_t size;
	int index; /* producer or consumer number */
	int nprod, ncons;
	int batch;
	char qname[SHMQ_NAME_MAX]; /* keyed: the queue */
};
static struct job jobs[PROC_MAX];

static _Noreturn void child_fail(const char *fmt, ...)
{
	if (!atomic_exchange(&sh->err_set, 1)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(sh->err, sizeof(sh->err), fmt, ap);
		va_end(ap);
	}
	_exit(1);
}

static void *xattach(const struct job *j, int k, enum peer_role role)
{
	void *ep = j->ops->attach(j->ch[k], role);
	if (!ep)
		child_fail("attach as %s failed", role == PEER_SENDER ? "sender" : "receiver");
	return ep;
}

static void xsend(const struct job *j, void *ep, const void *m)
{
	int r = j->ops->send(ep, m, j->size);
	if (r)
		child_fail("send: %s", strerror(-r));
}

/* one message, checked for size and tail, acked where the transport has acks */
static void xrecv(const struct job *j, void *ep, unsigned char *buf)
{
	int r = j->ops->recv(ep, buf, j->size);
	if (r < 0)
		child_fail("recv: %s", strerror(-r));
	if ((size_t)r != j->size)
		child_fail("recv returned %d bytes, sent %zu", r, j->size);
	if ((j->ops->flags & PEER_ACKS) && j->ops->ack && (r = j->ops->ack(ep)))
		child_fail("ack: %s", strerror(-r));
	uint64_t tail;
	memcpy(&tail, buf + j->size - 8, 8);
	if (tail != (msg_seq(buf) ^ TAIL_MAGIC))
		child_fail("message %" PRIu64 " arrived corrupted (last 8 bytes differ)", msg_seq(buf));
}

static unsigned char *xalloc(size_t n)
{
	unsigned char *p = aligned_alloc(64, (n + 63) / 64 * 64);
	if (!p)
		child_fail("out of memory");
	memset(p, 0x5a, n);
	return p;
}

static void go(void)
{
	proc_ready();
	if (proc_wait_go())
		_exit(1);
}

/* Round trip i took t0..t1: its one-way time goes in the histogram after the warm-up. 1 when the
 * run has measured long enough (a slow transport gets fewer samples, not more time). */
static int lat_sample(uint64_t i, uint64_t t0, uint64_t t1, uint64_t *deadline)
{
	uint64_t warm = (uint64_t)opt.lat_warm;
	if (i < warm)
		return 0;
	if (i == warm)
		*deadline = t0 + (uint64_t)(opt.lat_cap * 1e9);
	hist_add(&sh->h, (t1 - t0 + 1) / 2);
	return t1 >= *deadline;
}

static uint64_t lat_total(void) { return (uint64_t)opt.lat_warm + (uint64_t)opt.round_trips; }

/* a PEER_WORD transport: the round trip's number is the whole message, both ways on channel 0 */
static void word_send(const struct job *j, void *ep, uint64_t v)
{
	int r = j->ops->send(ep, &v, sizeof(v));
	if (r)
		child_fail("send: %s", strerror(-r));
}

static uint64_t word_recv(const struct job *j, void *ep)
{
	uint64_t v;
	int r = j->ops->recv(ep, &v, sizeof(v));
	if (r != (int)sizeof(v))
		child_fail("recv: %s", r < 0 ? strerror(-r) : "not one word");
	return v;
}

static int word_client(struct job *j)
{
	void *ep = xattach(j, 0, PEER_SENDER);
	go();
	uint64_t total = lat_total(), i, deadline = 0, back;
	for (i = 0; i < total; i++) {
		uint64_t t0 = now_ns();
		word_send(j, ep, i);
		back = word_recv(j, ep);
		uint64_t t1 = now_ns();
		if (back != i)
			child_fail("echo of round trip %" PRIu64 " carried %" PRIu64, i, back);
		if (lat_sample(i, t0, t1, &deadline))
			break;
	}
	word_send(j, ep, WORD_STOP);
	j->ops->detach(ep);
	return 0;
}

static int word_echo(struct job *j)
{
	void *ep = xattach(j, 0, PEER_RECEIVER);
	go();
	for (uint64_t v; (v = word_recv(j, ep)) != WORD_STOP;)
		word_send(j, ep, v);
	j->ops->detach(ep);
	return 0;
}

/* latency: sends request i, waits for its echo; one-way = RTT / 2 */
static int lat_client(void *arg)
{
	struct job *j = arg;
	if (j->ops->flags & PEER_WORD)
		return word_client(j);
	void *req = xattach(j, 0, PEER_SENDER), *rsp = xattach(j, 1, PEER_RECEIVER);
	unsigned char *m = xalloc(j->size), *back = xalloc(j->size);
	go();
	uint64_t total = lat_total(), i, deadline = 0;
	for (i = 0; i < total; i++) {
		msg_fill(m, j->size, i, 0);
		uint64_t t0 = now_ns();
		xsend(j, req, m);
		xrecv(j, rsp, back);
		uint64_t t1 = now_ns();
		if (msg_seq(back) != i)
			child_fail("echo of round trip %" PRIu64 " carried %" PRIu64, i, msg_seq(back));
		if (lat_sample(i, t0, t1, &deadline))
			break;
	}
	msg_fill(m, j->size, i, ID_STOP);
	xsend(j, req, m);
	j->ops->detach(req);
	j->ops->detach(rsp);
	return 0;
}

static int lat_echo(void *arg)
{
	struct job *j = arg;
	if (j->ops->flags & PEER_WORD)
		return word_echo(j);
	void *req = xattach(j, 0, PEER_RECEIVER), *rsp = xattach(j, 1, PEER_SENDER);
	unsigned char *m = xalloc(j->size);
	go();
	for (;;) {
		xrecv(j, req, m);
		if (msg_id(m) & ID_STOP)
			break;
		xsend(j, rsp, m);
	}
	j->ops->detach(req);
	j->ops->detach(rsp);
	return 0;
}

/* throughput producer: sends sequence numbers until t_stop; producer 0 then sends the stop records */
static int tp_producer(void *arg)
{
	struct job *j = arg;
	struct side *s = &sh->side[j->index];
	void *ep = xattach(j, 0, PEER_SENDER);
	unsigned n = j->batch ? BATCH : 1;
	unsigned char *buf = xalloc(n * j->size);
	go();
	uint64_t seq = 0, id = (uint64_t)j->index, t_meas = sh->t_meas, t_stop = sh->t_stop;
	int measuring = 0;
	for (;;) {
		if (n > 1 || (seq & (BATCH - 1)) == 0) { /* the clock every 32 messages */
			atomic_store_explicit(&s->count, seq, memory_order_relaxed);
			uint64_t t = now_ns();
			if (!measuring && t >= t_meas) {
				measuring = 1;
				s->win_n0 = seq;
				s->win_t0 = t;
				s->win_cpu0 = proc_self_cpu_s();
			}
			if (t >= t_stop) {
				s->win_n1 = seq;
				s->win_t1 = t;
				s->win_cpu1 = proc_self_cpu_s();
				break;
			}
		}
		if (n == 1) {
			msg_fill(buf, j->size, seq, id);
			xsend(j, ep, buf);
			seq++;
			continue;
		}
		for (unsigned k = 0; k < n; k++)
			msg_fill(buf + k * j->size, j->size, seq + k, id);
		int r = j->ops->send_batch(ep, buf, j->size, n);
		if (r <= 0 || (unsigned)r > n)
			child_fail("send_batch: %s", r < 0 ? strerror(-r) : "returned a bad count");
		seq += (uint64_t)r;
	}
	s->sent = seq;
	atomic_fetch_add(&sh->sent_total, seq);
	atomic_fetch_add(&sh->producers_done, 1);
	if (j->index == 0) {
		/* Every data message is sent before the first stop record. A consumer that takes a stop
		 * leaves once all consumers together have received sent_total; one that is still blocked
		 * then needs another stop, hence the rounds (a FIFO transport needs one). */
		while (atomic_load(&sh->producers_done) < j->nprod)
			usleep(100);
		while (atomic_load(&sh->consumers_done) < j->ncons) {
			int left = j->ncons - atomic_load(&sh->consumers_done);
			for (int k = 0; k < left; k++) {
				msg_fill(buf, j->size, seq, id | ID_STOP);
				xsend(j, ep, buf);
			}
			for (int w = 0; w < 50 && atomic_load(&sh->consumers_done) < j->ncons; w++)
				usleep(1000);
		}
	}
	j->ops->detach(ep);
	return 0;
}

static uint64_t received_total(int ncons)
{
	uint64_t n = 0;
	for (int c = 0; c < ncons; c++)
		n += atomic_load(&sh->side[PROC_MAX / 2 + c].count);
	return n;
}

/* in a consumer: one sample of the backlog (sent so far, as the producers last said, less
 * received so far) */
static void sample_depth(struct side *s, int nprod, int ncons)
{
	uint64_t sent = 0, got = 0;
	for (int k = 0; k < nprod; k++)
		sent += atomic_load_explicit(&sh->side[k].count, memory_order_relaxed);
	for (int c = 0; c < ncons; c++)
		got += atomic_load_explicit(&sh->side[PROC_MAX / 2 + c].count, memory_order_relaxed);
	uint64_t d = sent > got ? sent - got : 0;
	s->depth_n++;
	s->depth_sum += d;
	s->depth_hi += d >= TP_DEPTH / 2;
	s->depth_lo += d < TP_DEPTH / 8;
}

/* throughput consumer: checks every message; side slots PROC_MAX/2.. are the consumers' */
static int tp_consumer(void *arg)
{
	struct job *j = arg;
	struct side *s = &sh->side[PROC_MAX / 2 + j->index];
	void *ep = xattach(j, 0, PEER_RECEIVER);
	unsigned n = j->batch ? BATCH : 1;
	unsigned char *buf = xalloc(n * j->size);
	uint64_t next[2] = {0, 0}, count = 0, t_meas, t_stop;
	int measuring = 0, measured = 0, in_order = j->nprod == 1 && j->ncons == 1;
	go();
	t_meas = sh->t_meas;
	t_stop = sh->t_stop;
	for (;;) {
		int got = 1, stop = 0;
		if (n == 1) {
			xrecv(j, ep, buf);
		} else {
			got = j->ops->recv_batch(ep, buf, j->size, n);
			if (got <= 0 || (unsigned)got > n)
				child_fail("recv_batch: %s",
					   got < 0 ? strerror(-got) : "returned a bad count");
		}
		for (int k = 0; k < got; k++) {
			const unsigned char *m = buf + (size_t)k * j->size;
			uint64_t seq = msg_seq(m), id = msg_id(m), tail;
			memcpy(&tail, m + j->size - 8, 8);
			if (n > 1 && tail != (seq ^ TAIL_MAGIC))
				child_fail("message %" PRIu64 " arrived corrupted", seq);
			if (id & ID_STOP) {
				stop = 1;
				continue;
			}
			if (id >= (uint64_t)j->nprod)
				child_fail("message %" PRIu64 " carries producer id %" PRIu64, seq, id);
			if (in_order && seq != next[0])
				child_fail("%s: expected sequence %" PRIu64 ", received %" PRIu64,
					   seq > next[0] ? "gap" : "duplicate or reordered message", next[0],
					   seq);
			if (!in_order && seq < next[id])
				child_fail("producer %" PRIu64 ": sequence %" PRIu64 " after %" PRIu64
					   " (duplicate or reordered)",
					   id, seq, next[id] - 1);
			next[id] = seq + 1;
			s->per_cnt[id]++;
			s->per_sum[id] += seq;
			count++;
		}
		atomic_store_explicit(&s->count, count, memory_order_relaxed);
		if (n > 1 || (count & (BATCH - 1)) == 0 || stop) {
			uint64_t t = now_ns();
			if (measuring && !measured)
				sample_depth(s, j->nprod, j->ncons);
			if (!measuring && t >= t_meas) {
				measuring = 1;
				s->win_n0 = count;
				s->win_t0 = t;
				s->win_cpu0 = proc_self_cpu_s();
			}
			if (measuring && !measured && (t >= t_stop || stop)) {
				measured = 1;
				s->win_n1 = count;
				s->win_t1 = t;
				s->win_cpu1 = proc_self_cpu_s();
			}
		}
		if (stop) {
			uint64_t all = received_total(j->ncons), sent = atomic_load(&sh->sent_total);
			if (all > sent)
				child_fail("received %" PRIu64 " messages, %" PRIu64
					   " were sent (duplicates)",
					   all, sent);
			if (all == sent)
				break;
		}
	}
	/* stay attached until every consumer is done: a transport that routes to receivers (PUSH /
	 * PULL) must not lose the route to the one still waiting for its stop record */
	atomic_fetch_add(&sh->consumers_done, 1);
	while (atomic_load(&sh->consumers_done) < j->ncons)
		usleep(200);
	j->ops->detach(ep);
	return 0;
}

/* blocked consumer: sleeps in recv through the idle window, then times each wake-up */
static int blk_consumer(void *arg)
{
	struct job *j = arg;
	void *ep = xattach(j, 0, PEER_RECEIVER);
	unsigned char *m = xalloc(j->size);
	go();
	for (;;) {
		xrecv(j, ep, m);
		uint64_t t = now_ns(), ts;
		if (msg_id(m) & ID_STOP)
			break;
		memcpy(&ts, m + 16, 8);
		hist_add(&sh->h, t - ts);
	}
	j->ops->detach(ep);
	return 0;
}

static int blk_producer(void *arg)
{
	struct job *j = arg;
	void *ep = xattach(j, 0, PEER_SENDER);
	unsigned char *m = xalloc(j->size);
	go();
	uint64_t t = sh->t_idle_end + 50000000ull;
	for (unsigned i = 0; i <= opt.wake_samples; i++, t += WAKE_GAP_NS) {
		struct timespec ts = {(time_t)(t / 1000000000ull), (long)(t % 1000000000ull)};
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		msg_fill(m, j->size, i, i == opt.wake_samples ? ID_STOP : 0);
		uint64_t now = now_ns();
		memcpy(m + 16, &now, 8);
		xsend(j, ep, m);
	}
	j->ops->detach(ep);
	return 0;
}

/* keyed: plain against keyed send + recv + ack in one process (lib/keyed.h) */
static int keyed_run(void *arg)
{
	struct job *j = arg;
	shmq_t *q;
	int r = shmq_open(j->qname, &q);
	if (r)
		child_fail("open %s: %s", j->qname, shmq_strerror(r));
	double plain, keyed;
	go();
	if ((r = keyed_measure(q, (uint64_t)opt.keyed_msgs, &plain, &keyed)))
		child_fail("send + recv + ack: %s",
			   r == -EEXIST ? "a fresh key was taken for a duplicate" : shmq_strerror(r));
	sh->plain_ns = plain;
	sh->keyed_ns = keyed;
	shmq_close(q);
	return 0;
}

/* ---- one measurement -------------------------------------------------------------------------- */

static int supports(const struct transport *t, int v)
{
	const struct variant *va = &variants[v];
	unsigned f = t->ops->flags;
	switch (va->sc) {
	case SC_LAT:
		return va->blocking ? !!(f & PEER_BLOCKING) : !!(f & PEER_BUSY_POLL);
	case SC_TP:
		return !(f & PEER_WORD) && (!va->batch || (t->ops->send_batch && t->ops->recv_batch));
	case SC_MPMC:
		return !!(f & PEER_MPMC) && !(f & PEER_WORD);
	case SC_BLOCKED:
		return !!(f & PEER_BLOCKING) && !(f & PEER_WORD);
	case SC_KEYED:
		return !strcmp(t->ops->name, "shmq");
	}
	return 0;
}

static const char *unsupported_why(const struct transport *t, int v)
{
	if ((t->ops->flags & PEER_WORD) && variants[v].sc != SC_LAT)
		return "n/a: one word, ping-pong only";
	switch (variants[v].sc) {
	case SC_LAT:
		return variants[v].blocking ? "n/a: no blocking recv" : "n/a: no busy-poll";
	case SC_TP:
		return "n/a: no batch calls";
	case SC_MPMC:
		return "n/a: not MPMC";
	case SC_BLOCKED:
		return "n/a: no blocking recv";
	case SC_KEYED:
		return "n/a: shmq only";
	}
	return "n/a";
}

/* bytes of /dev/shm objects whose name holds tag; NAN if none */
static double shm_bytes(const char *tag)
{
	DIR *d = opendir("/dev/shm");
	double sum = 0;
	int found = 0;
	if (!d)
		return NAN;
	for (struct dirent *e; (e = readdir(d));) {
		char path[512];
		struct stat st;
		if (!strstr(e->d_name, tag))
			continue;
		snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
		if (!stat(path, &st)) {
			sum += (double)st.st_size;
			found = 1;
		}
	}
	closedir(d);
	return found ? sum : NAN;
}

static void describe_exit(const struct proc_child *c, char *buf, size_t n)
{
	if (WIFSIGNALED(c->status))
		snprintf(buf, n, "a child was killed by signal %d (%s)", WTERMSIG(c->status),
			 strsignal(WTERMSIG(c->status)));
	else if (WEXITSTATUS(c->status) == 126)
		snprintf(buf, n, "a child could not pin itself to its CPU");
	else
		snprintf(buf, n, "a child exited with status %d", WEXITSTATUS(c->status));
}

static double cpu_of(const struct rusage *ru)
{
	return ru->ru_utime.tv_sec + ru->ru_stime.tv_sec +
	       (ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1e6;
}

/* Parent-side adapter calls run under the watchdog: one that hangs is abandoned (its channels are
 * leaked, the transport is never called again). 0, -EIO (create failed), -ETIMEDOUT. */
static int create_chans(const struct peer_ops *o, struct peer_params *p, int nchan, char tags[][64],
			struct peer_chan **ch)
{
	static int k; /* static: survives the siglongjmp */
	if (sigsetjmp(alarm_jmp, 1)) {
		alarm_armed = 0;
		memset(live_chan, 0, sizeof(live_chan));
		return -ETIMEDOUT;
	}
	alarm_armed = 1;
	alarm(opt.watchdog_s);
	for (k = 0; k < nchan; k++) {
		snprintf(tags[k], 64, "h%d-%u", (int)main_pid, serial++);
		memcpy(p->tag, tags[k], sizeof(p->tag));
		if (!(ch[k] = o->create(p)))
			break;
		live_chan[k].ops = o;
		live_chan[k].c = ch[k];
	}
	alarm(0);
	alarm_armed = 0;
	return k == nchan ? 0 : -EIO;
}

static int destroy_chans(const struct peer_ops *o)
{
	static int k;
	if (sigsetjmp(alarm_jmp, 1)) {
		alarm_armed = 0;
		memset(live_chan, 0, sizeof(live_chan));
		return -ETIMEDOUT;
	}
	alarm_armed = 1;
	alarm(opt.watchdog_s);
	for (k = 0; k < MAX_LIVE; k++) {
		struct peer_chan *c = live_chan[k].c;
		if (c) {
			live_chan[k].c = NULL;
			o->destroy(c);
		}
	}
	alarm(0);
	alarm_armed = 0;
	return 0;
}

static void run_one(int v, int t, int rep)
{
	const struct variant *va = &variants[v];
	struct transport *tr = &tps[t];
	const struct peer_ops *o = tr->ops;
	struct result *res = &results[v][t][rep];
	memset(res, 0, sizeof(*res));
	res->state = RES_FAILED;

	int nprod = va->sc == SC_MPMC ? 2 : 1, ncons = va->sc == SC_KEYED ? 0 : nprod;
	int nchan = va->sc == SC_KEYED ? 0 : va->sc != SC_LAT ? 1 : (o->flags & PEER_WORD) ? 1 : 2;
	int blocking = va->blocking;
	if (blocking < 0) {
		/* throughput busy-polls where it can (the bare ring can only do that), unless the
		 * processes outnumber the CPUs: spinners sharing a CPU measure the scheduler */
		int crowded = nprod + ncons > mach.usable;
		blocking = !(o->flags & PEER_BUSY_POLL) || (crowded && (o->flags & PEER_BLOCKING));
	}
	res->blocking = blocking;

	struct peer_params p = {.msg_size = va->size,
				.depth = va->sc == SC_LAT ? LAT_DEPTH : TP_DEPTH,
				.blocking = blocking,
				.senders = (unsigned)nprod,
				.receivers = (unsigned)ncons};
	struct peer_chan *ch[2] = {NULL, NULL};
	char tags[2][64];
	struct proc_group g;
	memset(&g, 0, sizeof(g));
	g.ready_rd = g.ready_wr = g.go_rd = g.go_wr = -1;
	memset(sh, 0, sizeof(*sh));
	hist_init(&sh->h);

	char qname[SHMQ_NAME_MAX] = "";
	int r = create_chans(o, &p, nchan, tags, ch);
	if (!r && va->sc == SC_KEYED) {
		snprintf(qname, sizeof(qname), "/shmq-bench-h%d-%u", (int)main_pid, serial++);
		if ((r = keyed_queue_create(qname, TP_DEPTH))) {
			snprintf(res->err, sizeof(res->err), "create %s: %s", qname, shmq_strerror(r));
			qname[0] = 0;
			goto out;
		}
	}
	if (r == -ETIMEDOUT) {
		snprintf(res->err, sizeof(res->err), "create hung");
		snprintf(tr->status, sizeof(tr->status), "failed: create hung (%s)", va->key);
		goto out;
	}
	if (r) {
		snprintf(res->err, sizeof(res->err), "create failed (see stderr)");
		goto out;
	}
	res->seg_bytes = nchan ? shm_bytes(tags[0]) : NAN;

	r = proc_group_init(&g);
	if (r) {
		snprintf(res->err, sizeof(res->err), "pipe: %s", strerror(-r));
		goto out;
	}
	for (int k = 0; k < nprod + ncons; k++) {
		jobs[k] = (struct job){.ops = o,
				       .ch = {ch[0], ch[1]},
				       .size = va->size,
				       .index = k < nprod ? k : k - nprod,
				       .nprod = nprod,
				       .ncons = ncons,
				       .batch = va->batch};
		snprintf(jobs[k].qname, sizeof(jobs[k].qname), "%s", qname);
		int (*fn)(void *);
		if (va->sc == SC_KEYED)
			fn = keyed_run;
		else if (va->sc == SC_LAT)
			fn = k ? lat_echo : lat_client;
		else if (va->sc == SC_BLOCKED)
			fn = k ? blk_consumer : blk_producer;
		else
			fn = k < nprod ? tp_producer : tp_consumer;
		/* producers (and the latency client) on the first CPU, consumers on the second */
		int cpu = -1;
		if (mach.usable >= 2) {
			int idx = k < nprod ? 2 * k : 2 * (k - nprod) + 1;
			cpu = mach.cpu[idx % mach.usable];
		}
		pid_t pid = proc_spawn(&g, cpu, fn, &jobs[k]);
		if (pid < 0) {
			snprintf(res->err, sizeof(res->err), "fork: %s", strerror(-(int)pid));
			goto out;
		}
	}
	uint64_t wd = (uint64_t)opt.watchdog_s * 1000000000ull;
	r = proc_wait_ready(&g, now_ns() + wd);
	if (r == -EINTR)
		exit(128 + proc_interrupted());
	if (r) {
		snprintf(res->err, sizeof(res->err), "%s",
			 sh->err[0]	   ? sh->err
			 : r == -ETIMEDOUT ? "hung while attaching"
					   : "a child died while attaching (see stderr)");
		if (r == -ETIMEDOUT)
			tr->hangs++;
		goto out;
	}

	struct load_mark m0 = load_mark();
	double own0 = proc_self_cpu_s();
	uint64_t t_go = now_ns(), expect;
	sh->t_meas = t_go + (uint64_t)(opt.warmup * 1e9);
	sh->t_stop = sh->t_meas + (uint64_t)(opt.duration * 1e9);
	sh->t_idle_end = t_go + SETTLE_NS + (uint64_t)(opt.idle * 1e9);
	if (va->sc == SC_LAT)
		expect = (uint64_t)(opt.lat_cap * 1e9) + 1000000000ull;
	else if (va->sc == SC_BLOCKED)
		expect = sh->t_idle_end - t_go + (opt.wake_samples + 50) * WAKE_GAP_NS;
	else if (va->sc == SC_KEYED)
		expect = 10000000000ull; /* a bound far above what the run takes */
	else
		expect = sh->t_stop - t_go;
	proc_go(&g);

	if (va->sc == SC_BLOCKED) {
		/* the consumer's CPU time over the idle window, from /proc (it cannot report it itself:
		 * it is asleep, which is the point) */
		pid_t cons = g.c[1].pid;
		if (proc_sleep_until(t_go + SETTLE_NS))
			exit(128 + proc_interrupted());
		int64_t c0 = proc_cpu_ns(cons);
		if (proc_sleep_until(sh->t_idle_end))
			exit(128 + proc_interrupted());
		int64_t c1 = proc_cpu_ns(cons);
		res->idle_cpu = c0 >= 0 && c1 >= 0 ? (double)(c1 - c0) / 1e9 / opt.idle : NAN;
	}

	r = proc_wait(&g, t_go + expect + wd);
	if (r == -EINTR)
		exit(128 + proc_interrupted());
	if (r == -ETIMEDOUT) {
		tr->hangs++;
		char state[160] = "";
		if (va->sc == SC_TP || va->sc == SC_MPMC)
			snprintf(state, sizeof(state),
				 " (producers done %d/%d, consumers done %d/%d, received %" PRIu64
				 " of %" PRIu64 ")",
				 atomic_load(&sh->producers_done), nprod, atomic_load(&sh->consumers_done),
				 ncons, received_total(ncons), atomic_load(&sh->sent_total));
		snprintf(res->err, sizeof(res->err),
			 "hung: no result %u s after the run should have ended%s%s%s", opt.watchdog_s, state,
			 sh->err[0] ? "; " : "", sh->err);
		goto out;
	}
	for (int k = 0; k < g.n; k++)
		if (!WIFEXITED(g.c[k].status) || WEXITSTATUS(g.c[k].status)) {
			if (sh->err[0])
				snprintf(res->err, sizeof(res->err), "%s", sh->err);
			else
				describe_exit(&g.c[k], res->err, sizeof(res->err));
			goto out;
		}

	double children_cpu = 0;
	for (int k = 0; k < g.n; k++) {
		children_cpu += cpu_of(&g.c[k].ru);
		long *rss = k < nprod ? &res->rss_send_kib : &res->rss_recv_kib;
		if (g.c[k].ru.ru_maxrss > *rss)
			*rss = g.c[k].ru.ru_maxrss;
	}
	res->other_load = load_other(m0, children_cpu + proc_self_cpu_s() - own0);

	if (va->sc == SC_KEYED) {
		res->plain_ns = sh->plain_ns;
		res->keyed_ns = sh->keyed_ns;
	} else if (va->sc == SC_LAT || va->sc == SC_BLOCKED) {
		res->samples = sh->h.count;
		if (!res->samples) {
			snprintf(res->err, sizeof(res->err), "no samples");
			goto out;
		}
		for (int k = 0; k < NPCT; k++)
			res->pct[k] = (double)hist_pct(&sh->h, pct_at[k]);
		res->mean = hist_mean(&sh->h);
	} else {
		/* every message arrived exactly once: counts and sums of sequence numbers per producer */
		for (int pi = 0; pi < nprod; pi++) {
			uint64_t sent = sh->side[pi].sent, cnt = 0, sum = 0;
			for (int c = 0; c < ncons; c++) {
				cnt += sh->side[PROC_MAX / 2 + c].per_cnt[pi];
				sum += sh->side[PROC_MAX / 2 + c].per_sum[pi];
			}
			if (cnt != sent || sum != sent * (sent - 1) / 2) {
				snprintf(res->err, sizeof(res->err),
					 "producer %d sent %" PRIu64 " messages, %" PRIu64
					 " arrived (or with the wrong sequence numbers)",
					 pi, sent, cnt);
				goto out;
			}
		}
		/* the rate from the consumers' windows; CPU per message from the children's whole lives
		 * (setup included, a few ms against the run) over every message they moved */
		double rate = 0, all = 0;
		uint64_t dn = 0, dsum = 0, dhi = 0, dlo = 0;
		for (int c = 0; c < ncons; c++) {
			const struct side *s = &sh->side[PROC_MAX / 2 + c];
			dn += s->depth_n, dsum += s->depth_sum, dhi += s->depth_hi, dlo += s->depth_lo;
			double secs = (double)(s->win_t1 - s->win_t0) / 1e9;
			if (!s->win_t1 || secs <= 0) {
				snprintf(res->err, sizeof(res->err),
					 "consumer %d received nothing in the measured window (starved of "
					 "CPU?)",
					 c);
				goto out;
			}
			rate += (double)(s->win_n1 - s->win_n0) / secs;
			res->msgs += s->win_n1 - s->win_n0;
			all += (double)atomic_load(&s->count);
		}
		res->cpu_ns_msg = all > 0 ? children_cpu / all * 1e9 : NAN;
		res->depth = dn ? (double)dsum / (double)dn : NAN;
		res->mode = !dn		   ? MODE_NONE
			    : dhi * 2 > dn ? MODE_BACKLOG
			    : dlo * 2 > dn ? MODE_KEEPING_UP
					   : MODE_MIXED;
		res->msgs_s = rate;
		res->mb_s = rate * (double)va->size / 1e6;
	}
	res->state = RES_OK;
out:
	proc_group_end(&g);
	if (qname[0])
		shmq_unlink(qname);
	if (res->state != RES_OK)
		snprintf(skip_why[v][t], sizeof(skip_why[v][t]), "%s", res->err);
	if (destroy_chans(o))
		snprintf(tr->status, sizeof(tr->status), "failed: destroy hung (%s)", va->key);
	if (tr->hangs >= 2 && !tr->status[0])
		snprintf(tr->status, sizeof(tr->status), "failed: hung twice, not run any more");
}

/* ---- summaries -------------------------------------------------------------------------------- */

enum field {
	F_PCT0, /* .. F_PCT0 + NPCT - 1 */
	F_MEAN = NPCT,
	F_SAMPLES,
	F_MSGS_S,
	F_MB_S,
	F_CPU_MSG,
	F_RSS_SEND,
	F_RSS_RECV,
	F_SEG,
	F_IDLE,
	F_DEPTH,
	F_PLAIN,
	F_KEYED,
	F_KEYED_RATIO
};

static double field(const struct result *r, int f)
{
	if (f < NPCT)
		return r->pct[f];
	switch (f) {
	case F_MEAN:
		return r->mean;
	case F_SAMPLES:
		return (double)r->samples;
	case F_MSGS_S:
		return r->msgs_s;
	case F_MB_S:
		return r->mb_s;
	case F_CPU_MSG:
		return r->cpu_ns_msg;
	case F_RSS_SEND:
		return (double)r->rss_send_kib;
	case F_RSS_RECV:
		return (double)r->rss_recv_kib;
	case F_SEG:
		return r->seg_bytes;
	case F_IDLE:
		return r->idle_cpu;
	case F_DEPTH:
		return r->depth;
	case F_PLAIN:
		return r->plain_ns;
	case F_KEYED:
		return r->keyed_ns;
	case F_KEYED_RATIO:
		return r->keyed_ns / r->plain_ns;
	}
	return NAN;
}

static int n_ok(int v, int t)
{
	int n = 0;
	for (int r = 0; r < opt.repeats; r++)
		n += results[v][t][r].state == RES_OK;
	return n;
}

static struct spread sp(int v, int t, int f)
{
	double a[MAX_REPEATS];
	int n = 0;
	for (int r = 0; r < opt.repeats; r++)
		if (results[v][t][r].state == RES_OK && isfinite(field(&results[v][t][r], f)))
			a[n++] = field(&results[v][t][r], f);
	return spread_of(a, n);
}

static double med(int v, int t, int f) { return sp(v, t, f).med; }

static int n_noisy(int v, int t)
{
	int n = 0;
	for (int r = 0; r < opt.repeats; r++)
		n += results[v][t][r].state == RES_OK && results[v][t][r].other_load > NOISY_LOAD;
	return n;
}

static int scen_on[NSCEN];

static int runnable(const struct transport *t) { return t->selected && !t->status[0]; }

/* why (v, t) has no figures, or NULL when it has */
static const char *no_figures(int v, int t, char *buf, size_t n)
{
	const struct transport *tr = &tps[t];
	if (n_ok(v, t))
		return NULL;
	if (!tr->ops)
		return "not built";
	if (!supports(tr, v))
		return unsupported_why(tr, v);
	if (skip_why[v][t][0]) {
		snprintf(buf, n, "failed: %s", skip_why[v][t]);
		return buf;
	}
	if (tr->status[0])
		return tr->status;
	return "not run";
}

static int prec_for(double v) { return v < 10 ? 3 : v < 100 ? 2 : 1; }

static void print_failures_note(int v, int t)
{
	int failed = 0;
	for (int r = 0; r < opt.repeats; r++)
		failed += results[v][t][r].state == RES_FAILED;
	if (failed && n_ok(v, t))
		printf("      (%d run(s) failed: %s)\n", failed, skip_why[v][t]);
}

static void print_latency(int v, const char *title)
{
	char cell[64], why[256];
	printf("%s: one-way = RTT/2, microseconds, median of %d runs [min-max]\n", title, opt.repeats);
	printf("  %-15s", "");
	for (int k = 0; k < NPCT; k++)
		printf(" %-24s", pct_names[k]);
	printf(" %-8s noisy\n", "samples");
	for (int t = 0; t < ntp; t++) {
		if (!tps[t].selected)
			continue;
		printf("  %-15s", tps[t].name);
		const char *w = no_figures(v, t, why, sizeof(why));
		if (w) {
			printf(" %s\n", w);
			continue;
		}
		for (int k = 0; k < NPCT; k++) {
			struct spread s = sp(v, t, F_PCT0 + k);
			s.med /= 1e3, s.min /= 1e3, s.max /= 1e3;
			fmt_spread(cell, sizeof(cell), s, prec_for(s.med));
			printf(" %-24s", cell);
		}
		printf(" %-8.0f %d/%d\n", med(v, t, F_SAMPLES), n_noisy(v, t), n_ok(v, t));
		print_failures_note(v, t);
	}
	printf("\n");
}

static void print_throughput(int v, const char *title)
{
	char c1[64], c2[64], c3[64], why[256];
	printf("%s: median of %d runs [min-max]; mode of each run: B backlog, K keeping up, M mixed\n"
	       "(backlog: messages sent but not yet received, median of the runs' means)\n",
	       title, opt.repeats);
	printf("  %-15s %-6s %-26s %-24s %-22s %-14s noisy\n", "", "recv", "M msgs/s", "MB/s",
	       "CPU ns/msg (all sides)", "mode backlog");
	for (int t = 0; t < ntp; t++) {
		if (!tps[t].selected)
			continue;
		printf("  %-15s", tps[t].name);
		const char *w = no_figures(v, t, why, sizeof(why));
		if (w) {
			printf(" %s\n", w);
			continue;
		}
		struct spread m = sp(v, t, F_MSGS_S);
		m.med /= 1e6, m.min /= 1e6, m.max /= 1e6;
		fmt_spread(c1, sizeof(c1), m, 3);
		fmt_spread(c2, sizeof(c2), sp(v, t, F_MB_S), 1);
		fmt_spread(c3, sizeof(c3), sp(v, t, F_CPU_MSG), 0);
		int blk = results[v][t][0].blocking;
		char mode[MAX_REPEATS + 16];
		int ml = 0;
		for (int r = 0; r < opt.repeats; r++)
			if (results[v][t][r].state == RES_OK)
				mode[ml++] = mode_letter[results[v][t][r].mode];
		snprintf(mode + ml, sizeof(mode) - (size_t)ml, " %.0f", med(v, t, F_DEPTH));
		printf(" %-6s %-26s %-24s %-22s %-14s %d/%d", blk ? "block" : "busy", c1, c2, c3, mode,
		       n_noisy(v, t), n_ok(v, t));
		if (v == V_MPMC && n_ok(V_TP64, t))
			printf("   %.2fx its 1P1C", m.med * 1e6 / med(V_TP64, t, F_MSGS_S));
		printf("\n");
		print_failures_note(v, t);
	}
	printf("\n");
}

static void print_resources(void)
{
	char why[256], seg[32], rss[48], cpu[32], idle[32], wake[48];
	printf("Resources: segment from /dev/shm, peak RSS (KiB, sender / receiver, 64 B 1P1C run; includes\n"
	       "the harness's own pages at fork), CPU per message (64 B 1P1C), a consumer blocked in recv\n"
	       "with nothing sent (CPU ms per second, over %.2f s), its wake-up latency (send to recv "
	       "return, us)\n",
	       opt.idle);
	printf("  %-15s %-12s %-16s %-11s %-12s %s\n", "", "segment", "peak RSS KiB", "CPU ns/msg",
	       "idle CPU", "wake-up p50 / p99 us");
	for (int t = 0; t < ntp; t++) {
		if (!tps[t].selected)
			continue;
		printf("  %-15s", tps[t].name);
		const char *w1 = no_figures(V_TP64, t, why, sizeof(why));
		const char *w2 = no_figures(V_BLOCKED, t, why, sizeof(why));
		if (w1 && w2 && (!tps[t].ops || tps[t].status[0])) {
			printf(" %s\n", w1);
			continue;
		}
		double s = med(V_TP64, t, F_SEG);
		if (!n_ok(V_TP64, t) || !isfinite(s))
			snprintf(seg, sizeof(seg), "n/a");
		else if (s >= 1 << 20)
			snprintf(seg, sizeof(seg), "%.1f MiB", s / (1 << 20));
		else
			snprintf(seg, sizeof(seg), "%.1f KiB", s / 1024);
		if (n_ok(V_TP64, t)) {
			snprintf(rss, sizeof(rss), "%.0f / %.0f", med(V_TP64, t, F_RSS_SEND),
				 med(V_TP64, t, F_RSS_RECV));
			snprintf(cpu, sizeof(cpu), "%.0f", med(V_TP64, t, F_CPU_MSG));
		} else {
			snprintf(rss, sizeof(rss), "-");
			snprintf(cpu, sizeof(cpu), "-");
		}
		if (n_ok(V_BLOCKED, t)) {
			snprintf(idle, sizeof(idle), "%.3f ms/s", med(V_BLOCKED, t, F_IDLE) * 1e3);
			snprintf(wake, sizeof(wake), "%.2f / %.2f", med(V_BLOCKED, t, F_PCT0) / 1e3,
				 med(V_BLOCKED, t, F_PCT0 + 2) / 1e3);
		} else {
			snprintf(idle, sizeof(idle), "-");
			snprintf(wake, sizeof(wake), "%s", w2 ? w2 : "-");
		}
		printf(" %-12s %-16s %-11s %-12s %s\n", seg, rss, cpu, idle, wake);
	}
	printf("\n");
}

/* ---- targets (the issue's) -------------------------------------------------------------------- */

struct target {
	const char *what, *rule;
	double value, limit;
	int at_most; /* value <= limit, else value >= limit */
};
static struct target targets[16];
static int ntargets, n_issue_targets;

static int find_tp(const char *name)
{
	for (int t = 0; t < ntp; t++)
		if (tps[t].ops && !strcmp(tps[t].name, name))
			return t;
	return -1;
}

static double med_of(int v, int t, int f) { return t >= 0 && n_ok(v, t) ? med(v, t, f) : NAN; }

static void add_target(const char *what, const char *rule, double value, double limit, int at_most)
{
	targets[ntargets++] = (struct target){what, rule, value, limit, at_most};
}

/* Issue 14's targets, 64 B. The floor is one word bounced in one line (busy-poll only): both of
 * shmq's receive modes are held against it. "Batch" is shmq's batch calls against the bare ring's
 * single calls (the bare ring's own batches are a memcpy loop with one index store). */
static void compute_targets(void)
{
	int q = find_tp("shmq"), fl = find_tp("floor"), br = find_tp("bare-ring"), pp = find_tp("pipe");
	double floor50 = med_of(V_LAT64B, fl, F_PCT0);
	add_target("round trip p50, busy poll (timeout 0 in a loop): shmq / floor", "<= 1.25",
		   med_of(V_LAT64B, q, F_PCT0) / floor50, 1.25, 1);
	add_target("round trip p50, blocking receive (-1): shmq / floor", "<= 1.25",
		   med_of(V_LAT64S, q, F_PCT0) / floor50, 1.25, 1);
	add_target("round trip p99.9, busy poll: shmq / floor p50", "<= 10",
		   med_of(V_LAT64B, q, F_PCT0 + 3) / floor50, 10, 1);
	add_target("round trip p99.9, blocking receive: shmq / floor p50", "<= 10",
		   med_of(V_LAT64S, q, F_PCT0 + 3) / floor50, 10, 1);
	add_target("1P1C msgs/s, single calls: shmq / bare ring", ">= 1.5",
		   med_of(V_TP64, q, F_MSGS_S) / med_of(V_TP64, br, F_MSGS_S), 1.5, 0);
	add_target("1P1C msgs/s, batch calls: shmq batch / bare ring single", ">= 2",
		   med_of(V_TP64B, q, F_MSGS_S) / med_of(V_TP64, br, F_MSGS_S), 2.0, 0);
	add_target("2P2C msgs/s: shmq / shmq 1P1C", ">= 0.5",
		   med_of(V_MPMC, q, F_MSGS_S) / med_of(V_TP64, q, F_MSGS_S), 0.5, 0);
	add_target("keyed send + recv + ack: keyed / plain (median of runs' ratios)", "<= 3",
		   med_of(V_KEYED, q, F_KEYED_RATIO), 3.0, 1);
	n_issue_targets = ntargets;
	add_target("blocked consumer idle CPU, shmq (CPU ms per s)", "<= 1 (~0)",
		   med_of(V_BLOCKED, q, F_IDLE) * 1e3, 1.0, 1);
	add_target("blocked consumer wake-up p50: shmq / pipe blocking round trip", "<= 1",
		   med_of(V_BLOCKED, q, F_PCT0) / (2 * med_of(V_LAT64S, pp, F_PCT0)), 1.0, 1);
}

static const char *verdict(const struct target *g)
{
	if (!isfinite(g->value))
		return "not measured";
	return (g->at_most ? g->value <= g->limit : g->value >= g->limit) ? "met" : "MISSED";
}

/* the modes of (v, t)'s runs, e.g. "BBK" */
static const char *modes_of(int v, int t, char *buf, size_t n)
{
	size_t k = 0;
	for (int r = 0; r < opt.repeats && k + 1 < n; r++)
		if (results[v][t][r].state == RES_OK)
			buf[k++] = mode_letter[results[v][t][r].mode];
	buf[k] = 0;
	return k ? buf : "-";
}

/* one row of the ladder: round trip p50 (2 x one-way) and 1P1C 64 B single / batch, each against
 * the row it is measured against */
static void ladder_row(const char *label, int t, int v_lat)
{
	int fl = find_tp("floor"), br = find_tp("bare-ring");
	char m1[MAX_REPEATS + 1], m2[MAX_REPEATS + 1];
	double rt = 2 * med_of(v_lat, t, F_PCT0), f = 2 * med_of(V_LAT64B, fl, F_PCT0);
	double s1 = med_of(V_TP64, t, F_MSGS_S), b1 = med_of(V_TP64B, t, F_MSGS_S);
	double r1 = med_of(V_TP64, br, F_MSGS_S);
	printf("  %-24s %7.0f ns %6.2fx  ", label, rt, rt / f);
	if (v_lat == V_LAT64S) { /* the blocking row shares the busy row's throughput */
		printf("\n");
		return;
	}
	if (isfinite(s1))
		printf("%7.2f M/s %5.2fx %-5s ", s1 / 1e6, s1 / r1, modes_of(V_TP64, t, m1, sizeof(m1)));
	else
		printf("%-24s ", "-");
	if (isfinite(b1))
		printf("%7.2f M/s %5.2fx %s", b1 / 1e6, b1 / r1, modes_of(V_TP64B, t, m2, sizeof(m2)));
	else
		printf("-");
	printf("\n");
}

static void print_targets(void)
{
	int q = find_tp("shmq");
	printf("Cost of each guarantee, 64 B, medians: round trip p50 against the floor; 1P1C msgs/s\n"
	       "(single calls, and batch calls of 32) against the bare ring's single calls, with the mode\n"
	       "of each run (B backlog, K keeping up, M mixed)\n");
	printf("  %-24s %-19s %-24s %s\n", "", "round trip p50", "1P1C single", "1P1C batch");
	static const struct {
		const char *label, *name;
		int v_lat;
	} rows[] = {{"floor (one word)", "floor", V_LAT64B},
		    {"handoff (2 slots, copy)", "handoff", V_LAT64B},
		    {"bare ring (SPSC)", "bare-ring", V_LAT64B},
		    {"leased ring (no repair)", "leased-ring", V_LAT64B},
		    {"shmq, busy poll", "shmq", V_LAT64B},
		    {"shmq, blocking (-1)", "shmq", V_LAT64S}};
	for (unsigned i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int t = find_tp(rows[i].name);
		if (t >= 0 && tps[t].selected)
			ladder_row(rows[i].label, t, rows[i].v_lat);
	}
	struct spread kp = sp(V_KEYED, q, F_PLAIN), kk = sp(V_KEYED, q, F_KEYED),
		      kr = sp(V_KEYED, q, F_KEYED_RATIO);
	if (q >= 0 && n_ok(V_KEYED, q))
		printf("  keyed sends (shmq, one process): send + recv + ack %.0f ns plain, %.0f ns keyed; "
		       "ratio %.2f [%.2f-%.2f]\n",
		       kp.med, kk.med, kr.med, kr.min, kr.max);
	printf("\n");

	printf("Targets of issue 14 (64 B, this machine, ratios of medians of this run's %d interleaved "
	       "repeat(s))\n",
	       opt.repeats);
	for (int i = 0; i < ntargets; i++) {
		if (i == n_issue_targets)
			printf("  earlier targets:\n");
		printf("  %-66s %8.3f  (target %-9s) %s\n", targets[i].what, targets[i].value,
		       targets[i].rule, verdict(&targets[i]));
	}
	if (opt.repeats < 3)
		printf("  (fewer than 3 repeats: the issue's figures need --repeats 3 or more)\n");
	printf("  for reference: shmq / floor p99.9 (busy poll) %.3f; shmq batch / bare ring batch %.3f\n\n",
	       med_of(V_LAT64B, q, F_PCT0 + 3) / med_of(V_LAT64B, find_tp("floor"), F_PCT0 + 3),
	       med_of(V_TP64B, q, F_MSGS_S) / med_of(V_TP64B, find_tp("bare-ring"), F_MSGS_S));
}

/* ---- JSON ------------------------------------------------------------------------------------- */

static void json_flags(FILE *f, unsigned fl)
{
	static const char *names[] = {"mpmc",	   "busy_poll",	   "blocking", "acks",
				      "reference", "needs_daemon", "word"};
	const char *sep = "";
	fputc('[', f);
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (fl & (1u << i)) {
			fprintf(f, "%s\"%s\"", sep, names[i]);
			sep = ", ";
		}
	fputc(']', f);
}

static void json_result(FILE *f, int v, const struct result *r)
{
	const struct variant *va = &variants[v];
	fprintf(f, "{\"ok\": %s", r->state == RES_OK ? "true" : "false");
	if (r->state != RES_OK) {
		fputs(", \"error\": ", f);
		json_str(f, r->err);
		fputc('}', f);
		return;
	}
	fputs(", \"other_load_cpus\": ", f);
	json_num(f, r->other_load);
	if (va->sc == SC_LAT || va->sc == SC_BLOCKED) {
		for (int k = 0; k < NPCT; k++) {
			fprintf(f, ", \"%s\": ", pct_keys[k]);
			json_num(f, r->pct[k]);
		}
		fputs(", \"mean_ns\": ", f);
		json_num(f, r->mean);
		fprintf(f, ", \"samples\": %" PRIu64, r->samples);
	}
	if (va->sc == SC_BLOCKED) {
		fputs(", \"idle_cpu_s_per_s\": ", f);
		json_num(f, r->idle_cpu);
	}
	if (va->sc == SC_TP || va->sc == SC_MPMC) {
		fputs(", \"msgs_per_s\": ", f);
		json_num(f, r->msgs_s);
		fputs(", \"mb_per_s\": ", f);
		json_num(f, r->mb_s);
		fputs(", \"cpu_ns_per_msg\": ", f);
		json_num(f, r->cpu_ns_msg);
		fprintf(f,
			", \"msgs_in_window\": %" PRIu64
			", \"peak_rss_kib_sender\": %ld, \"peak_rss_kib_receiver\": %ld",
			r->msgs, r->rss_send_kib, r->rss_recv_kib);
		fputs(", \"segment_bytes\": ", f);
		json_num(f, r->seg_bytes);
		fprintf(f, ", \"mode\": \"%s\", \"mean_backlog\": ", mode_names[r->mode]);
		json_num(f, r->depth);
	}
	if (va->sc == SC_KEYED) {
		fputs(", \"plain_ns\": ", f);
		json_num(f, r->plain_ns);
		fputs(", \"keyed_ns\": ", f);
		json_num(f, r->keyed_ns);
	}
	fputc('}', f);
}

static int write_json(const char *path, const char *shared_caches)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	fprintf(f,
		"{\n  \"benchmark\": \"shmq harness\",\n  \"shmq_version\": \"%d.%d\",\n  \"mode\": "
		"\"%s\",\n",
		SHMQ_VERSION_MAJOR, SHMQ_VERSION_MINOR, opt.quick ? "quick" : "full");
	fputs("  \"machine\": {\"cpu_model\": ", f);
	json_str(f, mach.cpu_model);
	fputs(", \"kernel\": ", f);
	json_str(f, mach.kernel);
	fputs(", \"arch\": ", f);
	json_str(f, mach.arch);
	fprintf(f,
		", \"cpus_online\": %ld, \"cpus_usable\": %d, \"cpus_used\": [%d, %d], \"shared_caches\": ",
		mach.online, mach.usable, cpu_a, cpu_b);
	json_str(f, shared_caches);
	fputs("},\n", f);
	fprintf(f,
		"  \"config\": {\"repeats\": %d, \"duration_s\": %g, \"warmup_s\": %g, \"round_trips\": %ld, "
		"\"latency_warmup_round_trips\": %ld, \"latency_cap_s\": %g, \"idle_s\": %g, "
		"\"wake_samples\": %u, "
		"\"batch\": %d, \"latency_depth\": %d, \"throughput_depth\": %d, \"watchdog_s\": %u, "
		"\"noisy_load_cpus\": %g, \"keyed_messages\": %ld},\n",
		opt.repeats, opt.duration, opt.warmup, opt.round_trips, opt.lat_warm, opt.lat_cap, opt.idle,
		opt.wake_samples, BATCH, LAT_DEPTH, TP_DEPTH, opt.watchdog_s, NOISY_LOAD, opt.keyed_msgs);
	fputs("  \"transports\": [", f);
	for (int t = 0; t < ntp; t++) {
		fprintf(f, "%s\n    {\"name\": ", t ? "," : "");
		json_str(f, tps[t].name);
		fputs(", \"slot\": ", f);
		json_str(f, tps[t].slot);
		fputs(", \"selected\": ", f);
		fputs(tps[t].selected ? "true" : "false", f);
		fputs(", \"status\": ", f);
		json_str(f, !tps[t].ops ? "not built" : tps[t].status[0] ? tps[t].status : "ok");
		if (tps[t].ops) {
			fputs(", \"describe\": ", f);
			json_str(f, tps[t].ops->describe);
			fputs(", \"flags\": ", f);
			json_flags(f, tps[t].ops->flags);
		}
		fputc('}', f);
	}
	fputs("\n  ],\n  \"measurements\": {", f);
	int first_v = 1;
	for (int v = 0; v < NVAR; v++) {
		if (!scen_on[variants[v].sc])
			continue;
		const struct variant *va = &variants[v];
		fprintf(f,
			"%s\n    \"%s\": {\"scenario\": \"%s\", \"msg_size\": %zu, \"batch\": %d, "
			"\"transports\": {",
			first_v ? "" : ",", va->key, scen_names[va->sc], va->size, va->batch ? BATCH : 1);
		first_v = 0;
		int first_t = 1;
		for (int t = 0; t < ntp; t++) {
			if (!tps[t].selected)
				continue;
			char why[256];
			const char *w = no_figures(v, t, why, sizeof(why));
			fprintf(f, "%s\n      ", first_t ? "" : ",");
			first_t = 0;
			json_str(f, tps[t].name);
			fputs(": {\"status\": ", f);
			json_str(f, w ? w : "ok");
			if (w || !n_ok(v, t)) {
				fputc('}', f);
				continue;
			}
			fprintf(f, ", \"recv_mode\": \"%s\", \"noisy_runs\": %d, \"summary\": {",
				results[v][t][0].blocking ? "blocking" : "busy-poll", n_noisy(v, t));
			static const struct {
				int f;
				const char *key;
			} lat_f[] = {{F_PCT0, "p50_ns"},       {F_PCT0 + 1, "p90_ns"}, {F_PCT0 + 2, "p99_ns"},
				     {F_PCT0 + 3, "p99_9_ns"}, {F_PCT0 + 4, "max_ns"}, {F_MEAN, "mean_ns"}},
			  tp_f[] = {{F_MSGS_S, "msgs_per_s"},
				    {F_MB_S, "mb_per_s"},
				    {F_CPU_MSG, "cpu_ns_per_msg"},
				    {F_RSS_SEND, "peak_rss_kib_sender"},
				    {F_RSS_RECV, "peak_rss_kib_receiver"},
				    {F_SEG, "segment_bytes"}};
			int lat = va->sc == SC_LAT || va->sc == SC_BLOCKED;
			if (va->sc == SC_KEYED) {
				fputs("\"plain_ns\": ", f);
				json_spread(f, sp(v, t, F_PLAIN));
				fputs(", \"keyed_ns\": ", f);
				json_spread(f, sp(v, t, F_KEYED));
				fputs(", \"keyed_over_plain\": ", f);
				json_spread(f, sp(v, t, F_KEYED_RATIO));
			}
			for (int k = 0; k < 6 && va->sc != SC_KEYED; k++) { /* both lists have six fields */
				fprintf(f, "%s\"%s\": ", k ? ", " : "", lat ? lat_f[k].key : tp_f[k].key);
				json_spread(f, sp(v, t, lat ? lat_f[k].f : tp_f[k].f));
			}
			if (va->sc == SC_TP || va->sc == SC_MPMC) {
				fputs(", \"mean_backlog\": ", f);
				json_spread(f, sp(v, t, F_DEPTH));
			}
			if (va->sc == SC_BLOCKED) {
				fputs(", \"idle_cpu_s_per_s\": ", f);
				json_spread(f, sp(v, t, F_IDLE));
			}
			fputs("}, \"runs\": [", f);
			for (int r = 0, first = 1; r < opt.repeats; r++) {
				if (results[v][t][r].state == RES_NONE)
					continue;
				fprintf(f, "%s\n        ", first ? "" : ",");
				first = 0;
				json_result(f, v, &results[v][t][r]);
			}
			fputs("]}", f);
		}
		fputs("}}", f);
	}
	fputs("\n  },\n  \"targets\": [", f);
	for (int i = 0; i < ntargets; i++) {
		fprintf(f, "%s\n    {\"what\": ", i ? "," : "");
		json_str(f, targets[i].what);
		fputs(", \"target\": ", f);
		json_str(f, targets[i].rule);
		fputs(", \"value\": ", f);
		json_num(f, targets[i].value);
		fprintf(f, ", \"verdict\": \"%s\"}", verdict(&targets[i]));
	}
	fputs("\n  ]\n}\n", f);
	return fclose(f) ? -errno : 0;
}

/* ---- plots ------------------------------------------------------------------------------------ */

static void plots(void)
{
	if (!report_have_gnuplot()) {
		printf("gnuplot is not installed: no plots (apt-get install gnuplot-nox)\n");
		return;
	}
	char path[1024];
	snprintf(path, sizeof(path), "%s/latency.dat", opt.out);
	FILE *f = fopen(path, "w");
	if (!f)
		goto fail;
	int rows = 0;
	for (int t = 0; t < ntp; t++)
		for (int v = V_LAT64B; v <= V_LAT64S; v++)
			if (tps[t].selected && n_ok(v, t)) {
				fprintf(f, "\"%s %s\" %.4f %.4f %.4f\n", tps[t].name,
					v == V_LAT64B ? "busy" : "block", med(v, t, F_PCT0) / 1e3,
					med(v, t, F_PCT0 + 2) / 1e3, med(v, t, F_PCT0 + 3) / 1e3);
				rows++;
			}
	fclose(f);
	snprintf(path, sizeof(path), "%s/throughput.dat", opt.out);
	if (!(f = fopen(path, "w")))
		goto fail;
	const int tv[] = {V_TP64, V_TP64B, V_TP1K, V_TP1KB, V_MPMC};
	for (int t = 0; t < ntp; t++) {
		if (!tps[t].selected || !tps[t].ops)
			continue;
		int any = 0;
		for (int i = 0; i < 5; i++)
			any |= n_ok(tv[i], t) > 0;
		if (!any)
			continue;
		fprintf(f, "\"%s\"", tps[t].name);
		for (int i = 0; i < 5; i++)
			if (n_ok(tv[i], t))
				fprintf(f, " %.4f", med(tv[i], t, F_MSGS_S) / 1e6);
			else
				fprintf(f, " -");
		fputc('\n', f);
	}
	fclose(f);
	snprintf(path, sizeof(path), "%s/plots.gp", opt.out);
	if (!(f = fopen(path, "w")))
		goto fail;
	fprintf(f,
		"set terminal pngcairo size 1400,650 font ',10'\n"
		"set datafile missing '-'\n"
		"set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 "
		"border -1\n"
		"set xtics rotate by -35 left\nset grid ytics\nset key top left\nset rmargin 12\n"
		"set output '%s/latency.png'\n"
		"set title 'One-way latency (RTT/2), 64 B, median of %d runs (log scale)'\n"
		"set ylabel 'microseconds'\nset logscale y\n"
		"plot '%s/latency.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title "
		"'p99.9'\n"
		"unset logscale y\nset yrange [0:*]\n"
		"set output '%s/throughput.png'\n"
		"set title 'Throughput, median of %d runs'\nset ylabel 'million messages / s'\n"
		"plot '%s/throughput.dat' using 2:xtic(1) title '1P1C 64 B', '' using 3 title '1P1C 64 B "
		"batch 32', "
		"'' using 4 title '1P1C 1 KiB', '' using 5 title '1P1C 1 KiB batch 32', '' using 6 title "
		"'2P2C 64 B'\n",
		opt.out, opt.repeats, opt.out, opt.out, opt.repeats, opt.out);
	fclose(f);
	if (!rows) {
		printf("no latency figures: no plots\n");
		return;
	}
	if (report_gnuplot(path)) {
		printf("gnuplot failed on %s: no plots\n", path);
		return;
	}
	printf("plots: %s/latency.png, %s/throughput.png\n", opt.out, opt.out);
	return;
fail:
	printf("cannot write %s: %s: no plots\n", path, strerror(errno));
}

/* ---- main ------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: harness [--quick] [--repeats N] [--only LIST] [--scenarios LIST] [--out DIR]\n"
		   "               [--duration S] [--round-trips N] [--watchdog S]\n"
		   "  --quick           fewer samples, 0.5 s runs, 1 repeat unless --repeats is given\n"
		   "  --repeats N       runs of each measurement, interleaved (default 3)\n"
		   "  --only LIST       transports (comma-separated), e.g. shmq,pipe,floor,bare-ring,\n"
		   "                    leased-ring,handoff\n"
		   "  --scenarios LIST  latency,throughput,mpmc,resources,keyed (default: all)\n"
		   "  --out DIR         where bench.json and the plots go (default bench-results)\n"
		   "  --duration S      seconds per throughput run, warm-up excluded (default 2)\n"
		   "  --round-trips N   latency round trips per run (default 100000; a run stops after\n"
		   "                    0.3 s (quick: 0.15 s) of measuring whatever the count)\n"
		   "  --watchdog S      a run with no result S seconds after it should have ended is\n"
		   "                    killed and reported as failed (default 30, quick 5)\n");
}

static int in_list(const char *list, const char *a, const char *b)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save))
		if (!strcmp(w, a) || (b && !strcmp(w, b)))
			return 1;
	return 0;
}

static int start_guarded(struct transport *tr)
{
	if (sigsetjmp(alarm_jmp, 1)) {
		alarm_armed = 0;
		return -ETIMEDOUT;
	}
	alarm_armed = 1;
	alarm(opt.watchdog_s);
	int r = tr->ops->start();
	alarm(0);
	alarm_armed = 0;
	return r;
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {{"quick", no_argument, 0, 'q'},
					   {"repeats", required_argument, 0, 'r'},
					   {"only", required_argument, 0, 'o'},
					   {"scenarios", required_argument, 0, 's'},
					   {"out", required_argument, 0, 'O'},
					   {"duration", required_argument, 0, 'd'},
					   {"round-trips", required_argument, 0, 'n'},
					   {"watchdog", required_argument, 0, 'w'},
					   {"help", no_argument, 0, 'h'},
					   {0, 0, 0, 0}};
	int rep_set = 0, dur_set = 0, rt_set = 0, wd_set = 0;
	for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
		char *end = NULL;
		switch (c) {
		case 'q':
			opt.quick = 1;
			break;
		case 'r':
			opt.repeats = (int)strtol(optarg, &end, 10);
			if (*end || opt.repeats < 1 || opt.repeats > MAX_REPEATS) {
				fprintf(stderr, "harness: --repeats must be 1..%d\n", MAX_REPEATS);
				exit(2);
			}
			rep_set = 1;
			break;
		case 'o':
			opt.only = optarg;
			break;
		case 's':
			opt.scenarios = optarg;
			break;
		case 'O':
			opt.out = optarg;
			break;
		case 'd':
			opt.duration = strtod(optarg, &end);
			if (*end || !(opt.duration >= 0.05 && opt.duration <= 600)) {
				fprintf(stderr, "harness: --duration must be 0.05..600 seconds\n");
				exit(2);
			}
			dur_set = 1;
			break;
		case 'n':
			opt.round_trips = strtol(optarg, &end, 10);
			if (*end || opt.round_trips < 100 || opt.round_trips > 100000000) {
				fprintf(stderr, "harness: --round-trips must be 100..100000000\n");
				exit(2);
			}
			rt_set = 1;
			break;
		case 'w':
			opt.watchdog_s = (unsigned)strtoul(optarg, &end, 10);
			if (*end || opt.watchdog_s < 1 || opt.watchdog_s > 3600) {
				fprintf(stderr, "harness: --watchdog must be 1..3600 seconds\n");
				exit(2);
			}
			wd_set = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "harness: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	if (opt.quick) {
		if (!rep_set)
			opt.repeats = 1;
		if (!dur_set)
			opt.duration = 0.5;
		if (!rt_set)
			opt.round_trips = 10000;
	}
	opt.warmup = opt.quick ? 0.1 : 0.2;
	opt.lat_cap = opt.quick ? 0.15 : 0.3;
	opt.idle = opt.quick ? 0.25 : 1.0;
	if (!wd_set && opt.quick)
		opt.watchdog_s = 5;
	opt.wake_samples = opt.quick ? 50 : 200;
	opt.lat_warm = opt.round_trips / 10 > 1000 ? opt.round_trips / 10 : 1000;
	opt.keyed_msgs = opt.quick ? 40000 : 200000;
	for (int s = 0; s < NSCEN; s++)
		scen_on[s] = !opt.scenarios || in_list(opt.scenarios, scen_names[s], NULL);
	if (opt.scenarios) {
		char buf[512];
		snprintf(buf, sizeof(buf), "%s", opt.scenarios);
		for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
			int known = 0;
			for (int s = 0; s < NSCEN; s++)
				known |= !strcmp(w, scen_names[s]);
			if (!known) {
				fprintf(stderr,
					"harness: --scenarios: unknown '%s' (latency, throughput, mpmc, "
					"resources, keyed)\n",
					w);
				exit(2);
			}
		}
	}
}

int main(int argc, char **argv)
{
	main_pid = getpid();
	parse_args(argc, argv);
	uint64_t t_start = now_ns();
	if (mkdir(opt.out, 0755) && errno != EEXIST) {
		fprintf(stderr, "harness: mkdir %s: %s\n", opt.out, strerror(errno));
		return 1;
	}
	proc_parent_init();
	atexit(cleanup);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	results = calloc(NVAR, sizeof(*results));
	if (sh == MAP_FAILED || !results) {
		fprintf(stderr, "harness: out of memory\n");
		return 1;
	}
	if (machine_probe(&mach)) {
		fprintf(stderr, "harness: sched_getaffinity: %s\n", strerror(errno));
		return 1;
	}
	char caches[64] = "n/a";
	if (mach.usable >= 2) {
		cpu_a = mach.cpu[0];
		cpu_b = mach.cpu[1];
		machine_shared_caches(cpu_a, cpu_b, caches, sizeof(caches));
	}

	for (unsigned i = 0; i < peer_count && ntp < MAX_TP; i++) {
		struct transport *t = &tps[ntp++];
		t->slot = peer_slot_names[i];
		t->ops = peer_slots[i];
		t->name = t->ops ? t->ops->name : t->slot;
		t->selected = !opt.only || in_list(opt.only, t->name, t->slot);
		if (!t->ops) {
			snprintf(t->status, sizeof(t->status), "not built");
			continue;
		}
		const char *why = t->selected && t->ops->probe ? t->ops->probe() : NULL;
		if (why)
			snprintf(t->status, sizeof(t->status), "skipped: %s", why);
	}
	if (opt.only) {
		char buf[512];
		snprintf(buf, sizeof(buf), "%s", opt.only);
		for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
			int hit = 0;
			for (int t = 0; t < ntp; t++)
				hit |= !strcmp(w, tps[t].name) || !strcmp(w, tps[t].slot);
			if (!hit) {
				fprintf(stderr, "harness: --only: unknown transport '%s'\n", w);
				return 2;
			}
		}
	}

	printf("shmq benchmark harness (shmq %d.%d, %s run)\n", SHMQ_VERSION_MAJOR, SHMQ_VERSION_MINOR,
	       opt.quick ? "quick" : "full");
	printf("machine: %s; %ld CPUs online, %d usable; %s %s\n", mach.cpu_model, mach.online, mach.usable,
	       mach.kernel, mach.arch);
	if (cpu_a >= 0)
		printf("pinning: senders on CPU %d, receivers on CPU %d (shared caches: %s)\n", cpu_a, cpu_b,
		       caches);
	else
		printf("pinning: none (fewer than 2 usable CPUs): figures are scheduler-bound\n");
	printf("latency: up to %ld round trips per run after %ld warm-up, at most %.2f s; throughput: %.2f s "
	       "per run after %.2f s warm-up; %d repeat(s), interleaved\n",
	       opt.round_trips, opt.lat_warm, opt.lat_cap, opt.duration, opt.warmup, opt.repeats);
	printf("transports:\n");
	for (int t = 0; t < ntp; t++) {
		if (!tps[t].selected)
			continue;
		printf("  %-15s %s\n", tps[t].name,
		       tps[t].status[0]	      ? tps[t].status
		       : tps[t].ops->describe ? tps[t].ops->describe
					      : "");
	}
	printf("\n");
	fflush(stdout);

	for (int t = 0; t < ntp; t++) {
		struct transport *tr = &tps[t];
		if (!runnable(tr) || !tr->ops->start)
			continue;
		int r = start_guarded(tr);
		if (r)
			snprintf(tr->status, sizeof(tr->status), "failed: start: %s", strerror(-r));
		else
			tr->started = 1;
	}

	for (int rep = 0; rep < opt.repeats; rep++)
		for (int v = 0; v < NVAR; v++) {
			if (!scen_on[variants[v].sc])
				continue;
			char line[1024];
			int len = snprintf(line, sizeof(line), "  [%d/%d] %-26s", rep + 1, opt.repeats,
					   variants[v].key);
			for (int t = 0; t < ntp; t++) {
				if (!runnable(&tps[t]) || !supports(&tps[t], v) || skip_why[v][t][0])
					continue;
				run_one(v, t, rep);
				if (len < (int)sizeof(line))
					len += snprintf(line + len, sizeof(line) - (size_t)len, " %s%s",
							tps[t].name,
							results[v][t][rep].state == RES_OK ? "" : "(FAILED)");
			}
			fprintf(stderr, "%s\n", line); /* after the runs: adapters' own messages come first */
		}

	compute_targets();
	if (scen_on[SC_LAT]) {
		print_latency(V_LAT64B, "Latency, 64 B, busy-poll");
		print_latency(V_LAT64S, "Latency, 64 B, blocking");
		print_latency(V_LAT1KB, "Latency, 1 KiB, busy-poll");
		print_latency(V_LAT1KS, "Latency, 1 KiB, blocking");
	}
	if (scen_on[SC_TP]) {
		print_throughput(V_TP64, "Throughput 1P1C, 64 B, single calls");
		print_throughput(V_TP64B, "Throughput 1P1C, 64 B, batch calls (32)");
		print_throughput(V_TP1K, "Throughput 1P1C, 1 KiB, single calls");
		print_throughput(V_TP1KB, "Throughput 1P1C, 1 KiB, batch calls (32)");
	}
	if (scen_on[SC_MPMC])
		print_throughput(V_MPMC, "Throughput 2 producers x 2 consumers, 64 B, single calls");
	if (scen_on[SC_BLOCKED] || scen_on[SC_TP])
		print_resources();
	printf("noisy: runs during which other processes kept more than %.2f CPUs busy (/proc/stat, our own\n"
	       "CPU time subtracted; a transport's server process counts as other), out of the runs that "
	       "succeeded\n\n",
	       NOISY_LOAD);
	print_targets();

	char path[1024];
	snprintf(path, sizeof(path), "%s/bench.json", opt.out);
	int r = write_json(path, caches);
	if (r)
		printf("cannot write %s: %s\n", path, strerror(-r));
	else
		printf("JSON: %s\n", path);
	plots();
	cleanup();
	printf("wall time: %.1f s\n", (double)(now_ns() - t_start) / 1e9);
	return 0;
}

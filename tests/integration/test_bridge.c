/* SPDX-License-Identifier: MIT */
/*
 * shmq-bridge against a real nats-server: each test starts its own server (-js, 127.0.0.1, a free
 * port, a store in a scratch directory), runs the bridge binary of the test build ($SHMQ_BRIDGE,
 * which has the library's fault points: SHMQ_BRIDGE_FAULT=point:nth) and counts what arrives at
 * the far end by content: every payload carries its sequence number and bytes derived from it.
 * The server and the bridges die with the test process (PR_SET_PDEATHSIG), and the suite's .fini
 * kills them and removes the store even after a failed assertion.
 */
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../common.h"

#define PAYLOAD 48
#define MAX_PROCS 8

static char store[64];	 /* the server's store and the logs */
static char url[64];	 /* nats://127.0.0.1:PORT */
static char port_s[16];	 /* PORT */
static pid_t server_pid; /* 0: none */
static pid_t procs[MAX_PROCS];
static const char *bridge;
static const char *server_bin;
static char netns[2][32];   /* namespaces made by the two-hosts test */
static const char *an, *bn; /* the tests' queues A and B (start_pair) */
static shmq_t *a, *b;

/* SHMQ_BRIDGE_KEEP=1 keeps the store and the logs of each test (their path is printed). */
static void rm_store(void)
{
	if (!store[0])
		return;
	if (getenv("SHMQ_BRIDGE_KEEP")) {
		const struct criterion_test *t = criterion_current_test;
		fprintf(stderr, "bridge test %s: kept %s\n", t ? t->name : "?", store);
		store[0] = 0;
		return;
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store);
	(void)!system(cmd);
	store[0] = 0;
}

static void kill_wait(pid_t *pid, int sig)
{
	if (*pid > 0) {
		kill(*pid, sig);
		waitpid(*pid, NULL, 0);
	}
	*pid = 0;
}

static void bridge_fini(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		kill_wait(&procs[i], SIGKILL);
	kill_wait(&server_pid, SIGKILL);
	for (int i = 0; i < 2; i++) {
		if (netns[i][0]) {
			char cmd[96];
			snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", netns[i]);
			(void)!system(cmd);
			netns[i][0] = 0;
		}
	}
	rm_store();
	shmq_close(a);
	shmq_close(b);
	a = b = NULL;
	tq_cleanup();
}

static void bridge_init(void)
{
	signal(SIGPIPE, SIG_IGN);
	bridge = getenv("SHMQ_BRIDGE");
	if (!bridge) {
		bridge = "build/tests/shmq-bridge";
		if (access(bridge, X_OK))
			cr_skip_test("SHMQ_BRIDGE is not set and %s does not exist", bridge);
	}
	server_bin = !access("/usr/sbin/nats-server", X_OK) ? "/usr/sbin/nats-server" : "nats-server";
}

TestSuite(bridge, .init = bridge_init, .fini = bridge_fini, .timeout = 150);

/* ---- processes ------------------------------------------------------------------------------- */

/* fork + exec of argv, dying with this process, its stdout and stderr appended to log (or
 * /dev/null); env "K=V" (or NULL) added to its environment. */
static pid_t spawn(const char *const argv[], const char *log, const char *env)
{
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (env)
			putenv((char *)env);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static int port_open(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)port)};
	int ok = fd >= 0 && !connect(fd, (struct sockaddr *)&a, sizeof(a));
	if (fd >= 0)
		close(fd);
	return ok;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert(fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
		  !getsockname(fd, (struct sockaddr *)&a, &len));
	close(fd);
	return ntohs(a.sin_port);
}

/* Starts (or, after a kill, restarts on the same port and store) the server. */
static void server_start(void)
{
	if (!store[0]) {
		snprintf(store, sizeof(store), "/tmp/shmq-bridge-test-XXXXXX");
		cr_assert(mkdtemp(store), "mkdtemp: %s", strerror(errno));
		snprintf(port_s, sizeof(port_s), "%d", free_port());
		snprintf(url, sizeof(url), "nats://127.0.0.1:%s", port_s);
	}
	char log[96];
	snprintf(log, sizeof(log), "%s/server.log", store);
	server_pid = spawn(
		(const char *const[]){server_bin, "-js", "-a", "127.0.0.1", "-p", port_s, "-sd", store, NULL},
		log, NULL);
	for (int i = 0; i < 1000 && !port_open(atoi(port_s)); i++) {
		int st;
		cr_assert(waitpid(server_pid, &st, WNOHANG) == 0, "nats-server exited (see %s)", log);
		tq_sleep_ms(10);
	}
	cr_assert(port_open(atoi(port_s)), "nats-server does not listen on %s", port_s);
}

static char *logpath(const char *what)
{
	static char p[4][128];
	static int i;
	char *s = p[i++ % 4];
	snprintf(s, 128, "%s/%s.log", store, what);
	return s;
}

/* Out bridge: name -> stream ST (created) on subject s.<tag>. */
static pid_t bridge_to(const char *name, const char *env)
{
	return spawn((const char *const[]){bridge, name, "--to", url, "--subject", "s.t", "--stream", "ST",
					   "--create", "--timeout-ms", "2000", NULL},
		     logpath("to"), env);
}

static pid_t bridge_from(const char *name, const char *env)
{
	return spawn((const char *const[]){bridge, name, "--from", url, "--subject", "s.t", "--stream", "ST",
					   "--create", "--durable", "D", "--ack-wait-ms", "1000", NULL},
		     logpath("from"), env);
}

/* Exit status of pid after SIGTERM (-1: killed by a signal). */
static int term_wait(pid_t pid)
{
	int st = 0;
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The last line of a log that contains what, into out. */
static int last_line(const char *log, const char *what, char *out, size_t cap)
{
	FILE *f = fopen(log, "r");
	if (!f)
		return 0;
	char line[1024];
	int found = 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, what))
			snprintf(out, cap, "%s", line), found = 1;
	fclose(f);
	return found;
}

/* A counter "word N" from the last stats line in log, or -1. */
static long long stat_of(const char *log, const char *marker, const char *word)
{
	char line[1024];
	if (!last_line(log, marker, line, sizeof(line)))
		return -1;
	char *p = strstr(line, word);
	return p ? atoll(p + strlen(word)) : -1;
}

/* ---- messages -------------------------------------------------------------------------------- */

static void fill(uint8_t *p, uint32_t seq)
{
	memcpy(p, &seq, 4);
	for (int i = 4; i < PAYLOAD; i++)
		p[i] = (uint8_t)(seq * 31 + (uint32_t)i * 7);
}

/* The sequence number of a payload, or -1 when any byte is wrong. */
static long check(const void *data, uint32_t len)
{
	uint8_t want[PAYLOAD];
	uint32_t seq;
	if (len != PAYLOAD)
		return -1;
	memcpy(&seq, data, 4);
	fill(want, seq);
	return memcmp(want, data, PAYLOAD) ? -1 : (long)seq;
}

struct producer {
	const char *name;
	uint32_t n;
	_Atomic uint32_t sent; /* relaxed: a progress figure for the killer, it guards no data */
};

static void *produce(void *arg)
{
	struct producer *p = arg;
	shmq_t *q;
	if (shmq_open(p->name, &q))
		return NULL;
	uint8_t buf[PAYLOAD];
	/* a bound, so that a test whose bridges never come back fails instead of hanging here */
	double end = tq_now_ms() + 150000;
	for (uint32_t i = 0; i < p->n && tq_now_ms() < end;) {
		fill(buf, i);
		int r = shmq_send(q, buf, PAYLOAD, 200);
		if (r == 0)
			atomic_store_explicit(&p->sent, ++i, memory_order_relaxed);
		else if (r != -EAGAIN)
			break;
	}
	shmq_close(q);
	return NULL;
}

struct tally {
	uint32_t n;
	uint8_t *seen;
	uint32_t got, dups, bad;
};

/* Receives from b into t for up to ms, or until every message came (linger: for the whole ms, to
 * catch late duplicates); returns how many it took. */
static uint32_t receive(shmq_t *b, struct tally *t, int ms, int linger)
{
	struct shmq_msg m[256];
	uint32_t took = 0;
	double end = tq_now_ms() + ms;
	while ((linger || t->got < t->n) && tq_now_ms() < end) {
		int k = shmq_recv_batch(b, m, 256, 20);
		for (int i = 0; i < k; i++) {
			long seq = check(m[i].data, m[i].len);
			if (seq < 0 || (uint32_t)seq >= t->n)
				t->bad++;
			else if (t->seen[seq]++)
				t->dups++;
			else
				t->got++;
		}
		if (k > 0) {
			shmq_ack_batch(b, m, (unsigned)k);
			took += (uint32_t)k;
		}
	}
	return took;
}

static uint32_t drain(shmq_t *b, struct tally *t, int ms) { return receive(b, t, ms, 0); }
static uint32_t linger(shmq_t *b, struct tally *t, int ms) { return receive(b, t, ms, 1); }

/* Waits (up to 30 s) until queue q has acked n messages in all. */
static void wait_acked(shmq_t *q, uint64_t n)
{
	for (int i = 0; i < 3000 && tq_stats(q).acked < n; i++)
		tq_sleep_ms(10);
	cr_expect(tq_stats(q).acked >= n, "the source queue acked %llu of %llu",
		  (unsigned long long)tq_stats(q).acked, (unsigned long long)n);
}

/* The last lines of the server's and the bridges' logs, on stderr: what a failure needs. */
static void dump_logs(void)
{
	static const char *const what[] = {"server", "to", "from"};
	for (int i = 0; i < 3; i++) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "{ echo '--- %s.log'; tail -n 15 '%s'; } >&2", what[i],
			 logpath(what[i]));
		(void)!system(cmd);
	}
}

/* Every message arrived, none corrupt, and at most max_dups twice. max_dups: the in bridge's
 * crashes of the run, each of which may land inside shmq_send_keyed between its publish and its
 * record of the key; if the message was also consumed before the key's next send, that send
 * cannot tell it went through and sends it again (shmq.h: "never lost, rarely twice"). A test
 * that kills nothing in that window allows none. */
static void expect_whole_but(struct tally *t, uint32_t max_dups)
{
	uint32_t lost = 0, first = UINT32_MAX;
	for (uint32_t i = 0; i < t->n; i++)
		if (!t->seen[i] && !lost++)
			first = i;
	cr_expect(lost == 0, "%u of %u messages lost (the first: %u)", lost, t->n, first);
	cr_expect(t->dups <= max_dups, "%u duplicates at the far end (at most %u allowed)", t->dups,
		  max_dups);
	if (t->dups)
		fprintf(stderr,
			"note: %u duplicate(s) at the far end, within the %u the in bridge's crashes allow\n",
			t->dups, max_dups);
	cr_expect(t->bad == 0, "%u payloads corrupt", t->bad);
	if (lost || t->dups > max_dups || t->bad)
		dump_logs();
}

static void expect_whole(struct tally *t) { expect_whole_but(t, 0); }

/* Sends messages first..first+n-1 into q, which has room for them. */
static void send_numbered(shmq_t *q, uint32_t first, uint32_t n)
{
	uint8_t buf[PAYLOAD];
	for (uint32_t i = first; i < first + n; i++) {
		fill(buf, i);
		cr_assert(shmq_send(q, buf, PAYLOAD, 0) == 0);
	}
}

/* Waits for a bridge armed with SHMQ_BRIDGE_FAULT to SIGKILL itself at its fault point. */
static void expect_fault_death(pid_t pid)
{
	int st = 0;
	waitpid(pid, &st, 0);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the bridge did not die at its fault point");
}

static shmq_t *make_queue(const char *tag, uint32_t capacity, const char **name)
{
	struct shmq_config c = tq_config(capacity);
	c.dedup_entries = 1u << 18; /* every key of the run stays in the window */
	*name = tq_name(tag);
	return tq_create(*name, &c);
}

/* Most tests' set-up: queues A (the source) and B (the destination) of capacity slots, and the
 * server; .fini closes them. */
static void start_pair(uint32_t capacity)
{
	a = make_queue("a", capacity, &an);
	b = make_queue("b", capacity, &bn);
	server_start();
}

/* A tally of n messages (at most 100,000). */
static uint8_t seen[100000];
static struct tally tally(uint32_t n)
{
	cr_assert(n <= sizeof(seen));
	memset(seen, 0, n);
	return (struct tally){.n = n, .seen = seen};
}

/* start_pair(1024), both bridges, and a thread sending p->n messages into A. */
static pthread_t start_flow(struct producer *p)
{
	start_pair(1024);
	procs[0] = bridge_to(an, NULL);
	procs[1] = bridge_from(bn, NULL);
	p->name = an;
	pthread_t th;
	cr_assert(pthread_create(&th, NULL, produce, p) == 0);
	return th;
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* 100,000 messages A -> JetStream -> B, every payload checked, while both bridges are SIGKILLed
 * at random moments, at least 50 times each, and restarted. */
Test(bridge, bridges_sigkilled_50_times_each_way_lose_none_of_100000_messages)
{
	struct producer p = {.n = 100000};
	pthread_t th = start_flow(&p);
	struct tally t = tally(p.n);

	srand((unsigned)getpid());
	int kills[2] = {0, 0};
	/* kill the out bridge every ~1,500 messages sent into A (the producer waits on A, so the
	 * bridge is busy then), the in bridge every ~1,500 received from B, each at a random moment
	 * within 0-20 ms of its turn */
	uint32_t next[2] = {500, 700};
	double deadline = tq_now_ms() + 120000;
	while (t.got < t.n && tq_now_ms() < deadline) {
		drain(b, &t, 5);
		uint32_t progress[2] = {atomic_load_explicit(&p.sent, memory_order_relaxed), t.got};
		for (int i = 0; i < 2; i++) {
			if (progress[i] < next[i] || next[i] > p.n - 2000)
				continue;
			tq_sleep_ms((unsigned)(rand() % 20));
			kill_wait(&procs[i], SIGKILL);
			kills[i]++;
			procs[i] = i ? bridge_from(bn, NULL) : bridge_to(an, NULL);
			next[i] += 1200 + (uint32_t)(rand() % 600);
		}
	}
	pthread_join(th, NULL);
	cr_expect(kills[0] >= 50 && kills[1] >= 50, "kills: %d out, %d in", kills[0], kills[1]);
	linger(b, &t, 1500); /* late duplicates, if any */
	expect_whole_but(&t, (uint32_t)kills[1]);
	struct shmq_stats st = tq_stats(a);
	cr_expect(st.dead == 0, "%llu messages dead-lettered in A", (unsigned long long)st.dead);
}

/* The server SIGKILLed mid-stream and restarted on its store a second later: the bridges
 * reconnect and every message arrives once. */
Test(bridge, a_server_killed_and_restarted_mid_stream_loses_nothing)
{
	struct producer p = {.n = 20000};
	pthread_t th = start_flow(&p);
	struct tally t = tally(p.n);
	double deadline = tq_now_ms() + 90000;
	int restarted = 0;
	while (t.got < t.n && tq_now_ms() < deadline) {
		drain(b, &t, 5);
		if (!restarted && t.got >= p.n / 3) {
			kill_wait(&server_pid, SIGKILL);
			drain(b, &t, 1000);
			server_start();
			restarted = 1;
		}
	}
	pthread_join(th, NULL);
	cr_expect(restarted, "the server was never restarted");
	expect_whole(&t);
}

/* The worker process of a bridge (its supervisor's child), or 0. */
static pid_t worker_of(pid_t bridge_pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)bridge_pid, (int)bridge_pid);
	FILE *f = fopen(path, "r");
	int pid = 0;
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

/* A crash inside a bridge's worker (SIGABRT here, as libnats aborts) is survived: the
 * supervisor starts the worker again, and every message arrives once. */
Test(bridge, a_bridge_worker_that_crashes_is_started_again_and_loses_nothing)
{
	struct producer p = {.n = 20000};
	pthread_t th = start_flow(&p);
	struct tally t = tally(p.n);
	int crashed = 0;
	for (double deadline = tq_now_ms() + 60000; t.got < t.n && tq_now_ms() < deadline;) {
		drain(b, &t, 5);
		if (!crashed && t.got >= p.n / 3) {
			pid_t w[2] = {worker_of(procs[0]), worker_of(procs[1])};
			cr_assert(w[0] > 0 && w[1] > 0, "no worker processes under the bridges");
			/* SIGABRT, as libnats' heap corruption ends in: a sanitizer build would turn
			 * a SIGSEGV into an exit of its own, which is no crash to the supervisor */
			kill(w[0], SIGABRT);
			kill(w[1], SIGABRT);
			crashed = 1;
		}
	}
	pthread_join(th, NULL);
	expect_whole_but(&t, 1); /* the in worker's one crash */
	char line[1024];
	cr_expect(last_line(logpath("to"), "starting it again", line, sizeof(line)),
		  "the out worker was not restarted");
	cr_expect(last_line(logpath("from"), "starting it again", line, sizeof(line)),
		  "the in worker was not restarted");
}

/* Killed after the PubAcks of its first batch, before acking them in shm: the next bridge
 * publishes them again, and the stream's duplicate window drops every one. */
Test(bridge, a_bridge_killed_between_puback_and_shm_ack_adds_no_duplicate_to_the_stream)
{
	start_pair(1024);
	send_numbered(a, 0, 500);
	expect_fault_death(bridge_to(an, "SHMQ_BRIDGE_FAULT=bridge-out-pubacked:1"));
	procs[0] = bridge_to(an, NULL);
	procs[1] = bridge_from(bn, NULL);
	struct tally t = tally(500);
	drain(b, &t, 30000);
	wait_acked(a, 500); /* the dead bridge's batch too, published again by the second */
	linger(b, &t, 500);
	expect_whole(&t);
	cr_expect(term_wait(procs[0]) == 0);
	procs[0] = 0;
	long long dups = stat_of(logpath("to"), "published", "duplicates ");
	cr_expect(dups > 0, "the second bridge saw no duplicate PubAck (%lld): the fault hit nothing", dups);
}

/* Killed after sending its first message into shm, before acking it in JetStream: the message is
 * redelivered after AckWait and shmq's dedup window suppresses it. */
Test(bridge, a_bridge_killed_between_shm_send_and_jetstream_ack_is_suppressed_by_the_dedup_window)
{
	start_pair(1024);
	send_numbered(a, 0, 300);
	procs[0] = bridge_to(an, NULL);
	expect_fault_death(bridge_from(bn, "SHMQ_BRIDGE_FAULT=bridge-in-sent:1"));
	procs[1] = bridge_from(bn, NULL);
	struct tally t = tally(300);
	drain(b, &t, 30000);
	linger(b, &t, 2500); /* AckWait 1 s: the redelivery of the unacked message has come */
	expect_whole(&t);
	cr_expect(term_wait(procs[1]) == 0);
	procs[1] = 0;
	long long sup = stat_of(logpath("from"), "fetched", "suppressed ");
	cr_expect(sup >= 1, "the second bridge suppressed nothing (%lld)", sup);
}

/* A stream made again under its old name numbers its messages from 1 again: their keys carry the
 * stream's creation time, so the destination's dedup window, which still holds the old stream's
 * keys, takes them as new. */
Test(bridge, a_stream_made_again_under_its_name_is_not_taken_for_the_old_one_by_the_dedup_window)
{
	start_pair(1024);
	struct tally t = tally(200);
	for (uint32_t round = 0; round < 2; round++) {
		if (round) { /* a new server and store: stream ST made anew, sequences from 1 */
			kill_wait(&procs[0], SIGKILL);
			kill_wait(&procs[1], SIGKILL);
			kill_wait(&server_pid, SIGKILL);
			rm_store();
			server_start();
		}
		send_numbered(a, round * 100, 100);
		procs[0] = bridge_to(an, NULL);
		procs[1] = bridge_from(bn, NULL);
		t.n = round * 100 + 100;
		drain(b, &t, 30000);
		wait_acked(a, t.n); /* none left for the new stream: its window knows none of them */
	}
	expect_whole(&t);
}

/* A message's idempotency key crosses as the Shmq-Key header and is the key of its copy. */
Test(bridge, a_message_key_travels_as_a_header_and_comes_back_as_the_shmq_key)
{
	start_pair(64);
	cr_assert(shmq_send_keyed(a, "order-17", 8, "paid", 4, 0, NULL) == 0);
	cr_assert(shmq_send_keyed(a, "\x01\x02", 2, "bin", 3, 0, NULL) == 0);
	procs[0] = bridge_to(an, NULL);
	procs[1] = bridge_from(bn, NULL);
	struct shmq_msg m;
	for (int i = 0; i < 2; i++) {
		cr_assert(shmq_recv(b, &m, 20000) == 0, "nothing arrived");
		if (m.len == 4) {
			cr_expect(m.key_len == 8 && !memcmp(m.key, "order-17", 8), "key %.*s", (int)m.key_len,
				  (const char *)m.key);
			cr_expect(!memcmp(m.data, "paid", 4));
		} else {
			cr_expect(m.len == 3 && m.key_len == 2 && !memcmp(m.key, "\x01\x02", 2),
				  "the binary key did not come back");
		}
		shmq_ack(b, &m);
	}
}

/* SIGTERM: the batch in flight is published and acked before the bridge exits 0 with its stats
 * line; nothing stays leased in the queue. */
Test(bridge, sigterm_drains_the_batch_in_flight_and_exits_0_with_a_stats_line)
{
	start_pair(8192);
	send_numbered(a, 0, 8000);
	procs[0] = bridge_to(an, NULL);
	while (tq_stats(a).acked == 0)
		tq_sleep_ms(1);
	cr_expect(term_wait(procs[0]) == 0, "exit status");
	procs[0] = 0;
	struct shmq_stats st = tq_stats(a);
	cr_expect(st.inflight == 0, "%llu messages left leased", (unsigned long long)st.inflight);
	long long acked = stat_of(logpath("to"), "published", "acked ");
	cr_expect(acked == (long long)st.acked, "stats line says %lld acked, the queue %llu", acked,
		  (unsigned long long)st.acked);
}

/* One line on stderr and a distinct exit status for each set-up error. */
static void expect_error(const char *const argv[], int code, const char *text)
{
	static int calls;
	char log[128];
	snprintf(log, sizeof(log), "%s/err-%d.log", store, calls++);
	pid_t pid = spawn(argv, log, NULL);
	int st = 0;
	waitpid(pid, &st, 0);
	char line[1024] = "";
	FILE *f = fopen(log, "r");
	int lines = 0;
	char buf[1024];
	while (f && fgets(buf, sizeof(buf), f))
		lines++, snprintf(line, sizeof(line), "%s", buf);
	if (f)
		fclose(f);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == code, "%s: exit %d, wanted %d", argv[3],
		  WIFEXITED(st) ? WEXITSTATUS(st) : -1, code);
	cr_expect(lines == 1 && strstr(line, text), "wanted one line with '%s', got %d: %s", text, lines,
		  line);
}

Test(bridge, a_bad_url_a_missing_stream_and_an_unreachable_server_each_give_one_line)
{
	start_pair(64);
	expect_error((const char *const[]){bridge, an, "--to", "nats:/127.0.0.1", "--subject", "s", NULL}, 2,
		     "bad URL");
	/* the same through `shmq bridge`, which runs the shmq-bridge next to it */
	const char *tool = tq_tool();
	expect_error(
		(const char *const[]){tool, "bridge", an, "--to", "nats://127.0.0.1", "--subject", "s", NULL},
		2, "bad URL");
	expect_error(
		(const char *const[]){bridge, an, "--to", url, "--subject", "s", "--stream", "NOPE", NULL}, 3,
		"no stream NOPE");
	expect_error((const char *const[]){bridge, an, "--from", url, "--subject", "s", "--stream", "NOPE",
					   "--durable", "d", NULL},
		     3, "no stream NOPE");
	char dead[64];
	snprintf(dead, sizeof(dead), "nats://127.0.0.1:%d", free_port());
	expect_error((const char *const[]){bridge, an, "--to", dead, "--subject", "s", NULL}, 4,
		     "cannot reach");
}

/* Two hosts: namespaces h1 and h2 joined by a veth pair; the server and the in bridge on h2, the
 * out bridge on h1 reaching the server at h2's address. */
Test(bridge, two_network_namespaces_joined_by_a_veth_pair_carry_the_stream)
{
	char cmd[1024]; /* the veth set-up: ~330 bytes of text and 8 names of up to 31 */
	snprintf(netns[0], sizeof(netns[0]), "shmqh1-%d", (int)getpid());
	snprintf(netns[1], sizeof(netns[1]), "shmqh2-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "ip netns add %s 2>&1", netns[0]);
	FILE *f = popen(cmd, "r");
	char why[256] = "";
	if (f) {
		(void)!fgets(why, sizeof(why), f);
		int rc = pclose(f);
		if (rc) {
			netns[0][0] = netns[1][0] = 0;
			why[strcspn(why, "\n")] = 0;
			cr_skip_test("ip netns add is not allowed here: %s",
				     why[0] ? why : "exit status not 0");
		}
	}
	unsigned n = (unsigned)getpid() % 200 + 20;
	snprintf(
		cmd, sizeof(cmd),
		"ip netns add %s && ip link add v1-%u type veth peer name v2-%u && "
		"ip link set v1-%u netns %s && ip link set v2-%u netns %s && "
		"ip -n %s addr add 10.251.%u.1/24 dev v1-%u && ip -n %s addr add 10.251.%u.2/24 dev v2-%u && "
		"ip -n %s link set v1-%u up && ip -n %s link set v2-%u up && "
		"ip -n %s link set lo up && ip -n %s link set lo up",
		netns[1], n, n, n, netns[0], n, netns[1], netns[0], n, n, netns[1], n, n, netns[0], n,
		netns[1], n, netns[0], netns[1]);
	cr_assert(system(cmd) == 0, "setting up the veth pair failed: %s", cmd);

	a = make_queue("a", 1024, &an);
	b = make_queue("b", 1024, &bn);
	snprintf(store, sizeof(store), "/tmp/shmq-bridge-test-XXXXXX");
	cr_assert(mkdtemp(store));
	char addr[32], u[64];
	snprintf(addr, sizeof(addr), "10.251.%u.2", n);
	snprintf(u, sizeof(u), "nats://%s:4222", addr);
	server_pid = spawn((const char *const[]){"ip", "netns", "exec", netns[1], server_bin, "-js", "-a",
						 addr, "-p", "4222", "-sd", store, NULL},
			   logpath("server"), NULL);
	/* until the server answers from h1: a bridge asking for a stream that does not exist exits 3
	 * once it reaches the server, 4 before */
	for (int i = 0, code = 4; code == 4; i++) {
		cr_assert(i < 100, "the server in %s never answered from %s", netns[1], netns[0]);
		tq_sleep_ms(100);
		int st = 0;
		pid_t probe = spawn((const char *const[]){"ip", "netns", "exec", netns[0], bridge, an, "--to",
							  u, "--subject", "s.t", "--stream", "NOPE", NULL},
				    NULL, NULL);
		waitpid(probe, &st, 0);
		code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	}
	procs[0] = spawn((const char *const[]){"ip", "netns", "exec", netns[0], bridge, an, "--to", u,
					       "--subject", "s.t", "--stream", "ST", "--create", NULL},
			 logpath("to"), NULL);
	procs[1] = spawn((const char *const[]){"ip", "netns", "exec", netns[1], bridge, bn, "--from", u,
					       "--subject", "s.t", "--stream", "ST", "--create", "--durable",
					       "D", NULL},
			 logpath("from"), NULL);
	struct producer p = {.name = an, .n = 5000};
	struct tally t = tally(p.n);
	produce(&p);
	drain(b, &t, 30000);
	expect_whole(&t);
}

/* SPDX-License-Identifier: MIT */
/*
 * `shmq stat` (text, --json, --prometheus) and `shmq list`, run as the built tool on a queue in a
 * known state: messages ready, one leased, one delayed, one dead-lettered, and a participant that
 * died holding a lease (no reclaim pass runs, so its record stays claimed). The JSON is parsed
 * with jansson and checked field by field; the Prometheus output is parsed line by line. Also:
 * inspection writes nothing to the segment and claims no participant record.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq_inspect.h"

#include "prom.h"
#include "run_tool.h"

TestSuite(stat, .init = run_tool_init, .fini = tq_cleanup);

#define LEASE_MS 600000 /* nothing expires during a test */
#define NSENT 6

/* The known state, and what the test needs to check it. */
struct known {
	const char *name;
	shmq_t *q; /* the test's own handle: alive, holds one lease */
	pid_t dead_pid;
	struct shmq_msg held; /* leased by us */
};

/* A child that opens the queue, receives one message and dies without acking: its record stays
 * claimed (only a reclaim pass frees it) with its lease on the message. */
static pid_t die_holding_a_lease(const char *name)
{
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork");
	if (pid == 0) {
		shmq_t *q;
		struct shmq_msg m;
		if (shmq_open(name, &q) || shmq_recv(q, &m, 1000))
			_exit(1);
		_exit(0); /* no ack, no close: the kernel drops its lock, nothing else */
	}
	int status;
	cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child did not receive its message");
	return pid;
}

/* ids 0..5 sent; 0 leased by a dead child; 1 leased by us; 2 nacked for later (delayed); 3
 * rejected (dead-lettered); 4 and 5 ready. */
static void build_known(struct known *k)
{
	struct shmq_config c = tq_config(16);
	c.lease_ms = LEASE_MS;
	c.reclaim_interval_ms = 0; /* nobody reclaims the dead child's lease behind our back */
	k->name = tq_name(NULL);
	k->q = tq_create(k->name, &c);
	for (uint32_t i = 0; i < NSENT; i++)
		tq_send_u32(k->q, i);
	k->dead_pid = die_holding_a_lease(k->name);
	struct shmq_msg delayed, rejected;
	cr_assert(shmq_recv(k->q, &k->held, 0) == 0 && k->held.id == 1);
	cr_assert(shmq_recv(k->q, &delayed, 0) == 0 && shmq_nack(k->q, &delayed, LEASE_MS) == 0);
	cr_assert(shmq_recv(k->q, &rejected, 0) == 0 && shmq_reject(k->q, &rejected) == 0);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

/* root's member at a dotted path ("depths.ready"), or NULL */
static json_t *jpath(json_t *root, const char *path)
{
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *j = root;
	for (char *save, *key = strtok_r(buf, ".", &save); j && key; key = strtok_r(NULL, ".", &save))
		j = json_object_get(j, key);
	return j;
}

static void expect_jint(json_t *root, const char *path, long long want)
{
	json_t *j = jpath(root, path);
	cr_expect(json_is_integer(j), "%s is not a JSON integer", path);
	if (json_is_integer(j))
		cr_expect(json_integer_value(j) == want, "%s is %lld, want %lld", path,
			  (long long)json_integer_value(j), want);
}

static json_t *parse_json(const struct run *r)
{
	json_error_t e;
	json_t *root = json_loads(r->out, 0, &e);
	cr_assert(root, "`%s`: not JSON (line %d: %s):\n%s", r->cmd, e.line, e.text, r->out);
	return root;
}

/* the record of pid in participants.records */
static json_t *jrecord(json_t *root, pid_t pid)
{
	json_t *recs = jpath(root, "participants.records"), *rec;
	size_t i;
	cr_assert(json_is_array(recs), "participants.records is not an array");
	json_array_foreach(recs, i, rec)
	{
		if (json_integer_value(json_object_get(rec, "pid")) == pid)
			return rec;
	}
	cr_assert_fail("no participant record for pid %d", (int)pid);
	return NULL;
}

Test(stat, json_reports_config_depths_participants_and_totals_of_a_known_state)
{
	struct known k;
	struct run r;
	build_known(&k);
	expect_ok(RUN(&r, NULL, "stat", k.name, "--json"), NULL);
	json_t *root = parse_json(&r);

	cr_expect_str_eq(json_string_value(jpath(root, "schema")), "shmq.stat/1");
	cr_expect_str_eq(json_string_value(jpath(root, "queue")), k.name + 1);
	expect_jint(root, "creator_pid", getpid());
	expect_jint(root, "config.capacity", 16);
	expect_jint(root, "config.lease_ms", LEASE_MS);
	expect_jint(root, "config.reclaim_interval_ms", 0);
	expect_jint(root, "config.mode", 0600);

	expect_jint(root, "depths.ready", 2);
	expect_jint(root, "depths.inflight", 2);
	expect_jint(root, "depths.delayed", 1);
	expect_jint(root, "depths.dead", 1);
	expect_jint(root, "depths.writing", 0);
	expect_jint(root, "depths.free", 10);
	expect_jint(root, "oldest_ready.id", 4);
	cr_expect(json_is_integer(jpath(root, "oldest_ready.age_ms")), "oldest_ready.age_ms");
	expect_jint(root, "next_id", NSENT);

	/* a queue of one lane: that lane holds everything */
	expect_jint(root, "config.lanes", 1);
	cr_expect_str_eq(json_string_value(jpath(root, "config.dispatch")), "round-robin");
	json_t *weights = jpath(root, "config.weights");
	cr_expect(json_array_size(weights) == 1 && json_integer_value(json_array_get(weights, 0)) == 1,
		  "config.weights is not [1]");
	json_t *lanes = jpath(root, "lanes");
	cr_assert(json_array_size(lanes) == 1, "lanes has not one entry");
	json_t *lane0 = json_array_get(lanes, 0);
	expect_jint(lane0, "lane", 0);
	expect_jint(lane0, "ready", 2);
	expect_jint(lane0, "inflight", 2);
	expect_jint(lane0, "prod_tail", NSENT);
	expect_jint(lane0, "cons_head", 4);
	expect_jint(lane0, "weight", 1);
	/* consumers are assigned lanes only on a queue of several (then, see below) */
	json_t *pid = json_object_get(lane0, "consumer_pid");
	cr_expect(json_is_null(pid) || json_is_integer(pid),
		  "lanes[0].consumer_pid is not an integer or null");
	cr_expect(json_is_integer(jpath(root, "participants.consumers")), "participants.consumers");

	expect_jint(root, "participants.alive", 1);
	expect_jint(root, "participants.dead", 1);
	cr_expect(json_array_size(jpath(root, "participants.records")) == 2,
		  "two records: ours and the child's");
	json_t *dead = jrecord(root, k.dead_pid), *us = jrecord(root, getpid());
	cr_expect(json_is_false(json_object_get(dead, "alive")), "the dead child is alive=false");
	expect_jint(dead, "leases", 1);
	expect_jint(dead, "received", 1);
	expect_jint(dead, "acked", 0);
	cr_expect_str_eq(json_string_value(json_object_get(dead, "role")), "consumer");
	cr_expect(json_is_true(json_object_get(us, "alive")), "the test process is alive=true");
	expect_jint(us, "leases", 1);
	expect_jint(us, "sent", NSENT);
	expect_jint(us, "received", 3);
	expect_jint(us, "nacked", 1);
	expect_jint(us, "rejected", 1);
	cr_expect_str_eq(json_string_value(json_object_get(us, "role")), "producer+consumer");

	expect_jint(root, "totals.sent", NSENT);
	expect_jint(root, "totals.received", 4);
	expect_jint(root, "totals.acked", 0);
	expect_jint(root, "totals.nacked", 1);
	expect_jint(root, "totals.rejected", 1);
	expect_jint(root, "totals.reclaimed_dead_owner", 0);
	expect_jint(root, "totals.reclaim_passes", 0);
	/* every total against the library's own figures from our handle */
	struct shmq_stats st = tq_stats(k.q);
	const struct {
		const char *key;
		uint64_t v;
	} tot[] = {
		{"sent", st.sent},
		{"received", st.received},
		{"acked", st.acked},
		{"nacked", st.nacked},
		{"retried", st.retried},
		{"redelivered", st.redelivered},
		{"extended", st.extended},
		{"stale_acks", st.stale},
		{"reclaimed_expired", st.reclaimed_expired},
		{"reclaimed_dead_owner", st.reclaimed_dead_owner},
		{"retired_writes", st.retired_writes},
		{"dead_lettered", st.dead_lettered},
		{"rejected", st.rejected},
		{"redriven", st.redriven},
		{"purged", st.purged},
		{"dead_letters_dropped", st.dlq_dropped},
		{"producer_waits", st.producer_waits},
		{"consumer_waits", st.consumer_waits},
		{"reclaim_passes", st.reclaim_passes},
		{"duplicates", st.duplicates},
		{"dedup_evicted", st.dedup_evicted},
		{"done_marked", st.done_marked},
		{"done_hits", st.done_hits},
		{"stolen", st.stolen},
		{"prefetch_waits", st.prefetch_waits},
	};
	for (size_t i = 0; i < N_ELEMS(tot); i++) {
		char path[64];
		snprintf(path, sizeof(path), "totals.%s", tot[i].key);
		expect_jint(root, path, (long long)tot[i].v);
	}
	cr_expect(json_object_size(jpath(root, "totals")) == N_ELEMS(tot),
		  "totals has fields not checked here");
	cr_expect(json_is_true(jpath(root, "snapshot.consistent")),
		  "a quiet queue gives a consistent snapshot");
	expect_jint(root, "snapshot.tries", 1);
	json_decref(root);
	shmq_close(k.q);
}

/* ---- text ------------------------------------------------------------------------------------ */

/* The participants table row of pid, split into its columns; the number of columns. */
static int table_row(const char *out, pid_t pid, char cols[][32], int max)
{
	char needle[32];
	snprintf(needle, sizeof(needle), " %d ", (int)pid);
	for (const char *line = out; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		int len = (int)strcspn(line, "\n");
		if (!memmem(line, (size_t)len, needle, strlen(needle)))
			continue;
		char buf[256];
		snprintf(buf, sizeof(buf), "%.*s", len, line);
		int n = 0;
		for (char *save, *t = strtok_r(buf, " ", &save); t && n < max; t = strtok_r(NULL, " ", &save))
			snprintf(cols[n++], 32, "%s", t);
		return n;
	}
	return 0;
}

Test(stat, text_shows_depths_the_dead_participant_and_totals)
{
	struct known k;
	struct run r;
	build_known(&k);
	EXPECT_STAT(k.name, "capacity: 16 slots", "lease: 600000 ms", "ready: 2", "in flight: 2",
		    "delayed: 1", "dead-lettered: 1", "being written: 0", "free: 10",
		    "snapshot: consistent (1 pass)",
		    "attached: 2 records: 1 alive, 1 dead (the next reclaim pass requeues their leases, "
		    "frees them)",
		    "sent: 6", "received: 4", "nacked: 1", "rejected: 1", "next message id: 6");
	expect_ok(RUN(&r, NULL, "stat", k.name), NULL);
	cr_expect(!strstr(r.out, "latency"), "stat shows a latency section it has no figures for");
	expect_ok(RUN(&r, NULL, "stat", k.name), NULL);
	cr_expect(strstr(r.out, "\n  oldest ready age         ") && strstr(r.out, " ms (message id 4)\n"),
		  "no oldest ready line for id 4:\n%s", r.out);
	/* INDEX PID ALIVE ROLE LEASES WRITING LAST ACTIVITY ("N s ago") SENT RECEIVED ACKED */
	char c[12][32];
	int n = table_row(r.out, k.dead_pid, c, 12);
	cr_assert(n == 12, "no row of 12 columns for pid %d:\n%s", (int)k.dead_pid, r.out);
	cr_expect_str_eq(c[2], "no");
	cr_expect_str_eq(c[3], "consumer");
	cr_expect_str_eq(c[4], "1", "leases");
	cr_expect(!strcmp(c[7], "s") && !strcmp(c[8], "ago"), "last activity is not 'N s ago'");
	cr_expect_str_eq(c[10], "1", "received");
	n = table_row(r.out, getpid(), c, 12);
	cr_assert(n == 12, "no row for the test process:\n%s", r.out);
	cr_expect_str_eq(c[2], "yes");
	cr_expect_str_eq(c[4], "1", "leases");
	shmq_close(k.q);
}

/* ---- Prometheus ------------------------------------------------------------------------------ */

Test(stat, prometheus_output_parses_and_carries_the_known_figures)
{
	struct known k;
	struct run r;
	static struct prom p;
	build_known(&k);
	expect_ok(RUN(&r, NULL, "stat", k.name, "--prometheus"), NULL);
	parse_prom(r.out, k.name + 1, &p);
	const struct {
		const char *name, *labels;
		double v;
	} want[] = {
		{"shmq_capacity_slots", NULL, 16},
		{"shmq_lease_seconds", NULL, LEASE_MS / 1000},
		{"shmq_slots", "state=\"ready\"", 2},
		{"shmq_slots", "state=\"inflight\"", 2},
		{"shmq_slots", "state=\"delayed\"", 1},
		{"shmq_slots", "state=\"dead\"", 1},
		{"shmq_slots", "state=\"writing\"", 0},
		{"shmq_slots", "state=\"free\"", 10},
		{"shmq_participants", "state=\"alive\"", 1},
		{"shmq_participants", "state=\"dead\"", 1},
		{"shmq_sent_total", NULL, NSENT},
		{"shmq_received_total", NULL, 4},
		{"shmq_nacked_total", NULL, 1},
		{"shmq_rejected_total", NULL, 1},
		{"shmq_reclaimed_total", "cause=\"dead_owner\"", 0},
		{"shmq_next_message_id", NULL, NSENT},
		{"shmq_snapshot_consistent", NULL, 1},
	};
	for (size_t i = 0; i < N_ELEMS(want); i++) {
		double v = prom_value(&p, want[i].name, want[i].labels);
		cr_expect(v == want[i].v, "%s{%s} is %g, want %g", want[i].name,
			  want[i].labels ? want[i].labels : "", v, want[i].v);
	}
	/* records are labelled by index, not pid: the one that reads as gone holds the child's lease */
	char dead[64] = "";
	for (int i = 0; i < p.n; i++)
		if (!strcmp(p.s[i].name, "shmq_participant_alive") && p.s[i].v == 0)
			snprintf(dead, sizeof(dead), "%s", strstr(p.s[i].labels, "index="));
	cr_assert(dead[0], "no participant reads as gone");
	cr_expect(prom_count(&p, "shmq_participant_alive", NULL) == 2, "one series per record");
	cr_expect(prom_value(&p, "shmq_participant_leases", dead) == 1, "the dead child's lease");
	cr_expect(prom_value(&p, "shmq_oldest_ready_age_seconds", NULL) >= 0, "age");
	shmq_close(k.q);
}

/* ---- lanes ----------------------------------------------------------------------------------- */

/* "0\n1\n...": n payloads as lines for `send` */
static char *numbered_lines(unsigned n)
{
	char *buf = malloc((size_t)n * 12 + 1);
	cr_assert(buf);
	size_t len = 0;
	for (unsigned i = 0; i < n; i++)
		len += (size_t)sprintf(buf + len, "%u\n", i);
	return buf;
}

/* The lanes[] of `stat --json`, checked against ready[] (one per lane). */
static void expect_lane_ready(json_t *root, const long long *ready, size_t n)
{
	json_t *lanes = jpath(root, "lanes");
	cr_assert(json_array_size(lanes) == n, "lanes has %zu entries, want %zu", json_array_size(lanes), n);
	for (size_t l = 0; l < n; l++) {
		json_t *e = json_array_get(lanes, l);
		expect_jint(e, "lane", (long long)l);
		expect_jint(e, "ready", ready[l]);
		expect_jint(e, "prod_tail", ready[l]);
		expect_jint(e, "cons_head", 0);
		expect_jint(e, "inflight", 0);
	}
}

/* 4 lanes weighted 3,1,1,1 after 60 sends from one `shmq send`. */
static const char *weighted_queue(void)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--lanes", "4", "--capacity", "256", "--dispatch", "weighted",
		      "--weights", "3,1,1,1", "--lease-ms", "600000"),
		  "");
	char *lines = numbered_lines(60);
	expect_ok(RUN(&r, lines, "send", q), "");
	free(lines);
	return q;
}

Test(stat, json_shows_the_lanes_dispatch_and_weights_of_create_and_weighted_sends_split_by_weight)
{
	const char *q = weighted_queue();
	struct run r;
	expect_ok(RUN(&r, NULL, "stat", q, "--json"), NULL);
	json_t *root = parse_json(&r);
	expect_jint(root, "config.capacity", 256);
	expect_jint(root, "config.lanes", 4);
	cr_expect_str_eq(json_string_value(jpath(root, "config.dispatch")), "weighted");
	json_t *w = jpath(root, "config.weights");
	const long long want_w[] = {3, 1, 1, 1};
	cr_assert(json_array_size(w) == 4, "config.weights has %zu entries, want 4", json_array_size(w));
	for (size_t l = 0; l < 4; l++) {
		cr_expect(json_integer_value(json_array_get(w, l)) == want_w[l], "config.weights[%zu]", l);
		expect_jint(json_array_get(jpath(root, "lanes"), l), "weight", want_w[l]);
	}
	/* smooth weighted round robin: exact shares over every cycle of 6 */
	const long long ready[] = {30, 10, 10, 10};
	expect_lane_ready(root, ready, 4);
	expect_jint(root, "depths.ready", 60);
	expect_jint(root, "participants.consumers", 0);
	json_t *e;
	size_t i;
	json_array_foreach(jpath(root, "lanes"), i, e)
	{
		cr_expect(json_is_null(json_object_get(e, "consumer_pid")), "lane %zu has a consumer", i);
	}
	expect_jint(root, "totals.stolen", 0);
	expect_jint(root, "totals.prefetch_waits", 0);
	json_decref(root);

	/* a consumer (this process, alive, receiving) is assigned every lane */
	shmq_t *h;
	struct shmq_msg m;
	cr_assert(shmq_open(q, &h) == 0);
	cr_assert(shmq_recv(h, &m, 0) == 0);
	expect_ok(RUN(&r, NULL, "stat", q, "--json"), NULL);
	root = parse_json(&r);
	expect_jint(root, "participants.consumers", 1);
	json_array_foreach(jpath(root, "lanes"), i, e) { expect_jint(e, "consumer_pid", getpid()); }
	json_decref(root);
	shmq_close(h);
}

Test(stat, send_route_puts_every_payload_of_one_key_in_one_lane_of_a_key_hash_queue_in_order)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--lanes", "4", "--capacity", "64", "--dispatch", "key-hash"),
		  "");
	expect_ok(RUN(&r, NULL, "send", q, "--route", "user-7", "a", "b", "c", "d", "e"), "");
	expect_ok(RUN(&r, NULL, "stat", q, "--json"), NULL);
	json_t *root = parse_json(&r), *e;
	cr_expect_str_eq(json_string_value(jpath(root, "config.dispatch")), "key-hash");
	cr_assert(json_array_size(jpath(root, "lanes")) == 4);
	size_t i, holding = 0, with_five = 0;
	json_array_foreach(jpath(root, "lanes"), i, e)
	{
		json_int_t n = json_integer_value(json_object_get(e, "ready"));
		holding += n > 0;
		with_five += n == 5;
	}
	cr_expect(holding == 1 && with_five == 1, "the 5 messages of one key are not all in one lane:\n%s",
		  r.out);
	json_decref(root);
	expect_ok(RUN(&r, NULL, "recv", q, "--timeout-ms", "0"), "a\nb\nc\nd\ne\n");
}

Test(stat, prometheus_output_has_a_ready_and_an_inflight_gauge_per_lane)
{
	const char *q = weighted_queue();
	struct run r;
	static struct prom p;
	expect_ok(RUN(&r, NULL, "stat", q, "--prometheus"), NULL);
	parse_prom(r.out, q + 1, &p);
	const double ready[] = {30, 10, 10, 10};
	for (unsigned l = 0; l < 4; l++) {
		char lane[32];
		snprintf(lane, sizeof(lane), "lane=\"%u\"", l);
		cr_expect(prom_value(&p, "shmq_lane_ready", lane) == ready[l], "shmq_lane_ready{%s}", lane);
		cr_expect(prom_value(&p, "shmq_lane_inflight", lane) == 0, "shmq_lane_inflight{%s}", lane);
	}
	cr_expect(prom_value(&p, "shmq_lanes", NULL) == 4, "shmq_lanes");
	cr_expect(prom_value(&p, "shmq_stolen_total", NULL) == 0, "shmq_stolen_total");
	cr_expect(prom_value(&p, "shmq_prefetch_waits_total", NULL) == 0, "shmq_prefetch_waits_total");
	int lanes = 0;
	for (int i = 0; i < p.n; i++)
		lanes += !strcmp(p.s[i].name, "shmq_lane_ready");
	cr_expect(lanes == 4, "%d shmq_lane_ready samples, want 4", lanes);
}

Test(stat, text_has_a_lanes_section_with_a_row_per_lane_only_when_the_queue_has_more_than_one)
{
	const char *q = weighted_queue(), *one = tq_name("one");
	struct run r;
	EXPECT_STAT(q, "lanes: 4 (weighted), 0 consumers", "stolen: 0", "prefetch waits: 0");
	expect_ok(RUN(&r, NULL, "stat", q), NULL);
	cr_expect(strstr(r.out, "\nlanes\n"), "no lanes section:\n%s", r.out);
	/* LANE WEIGHT READY IN-FLIGHT TAIL HEAD CONSUMER */
	static const char *const rows[] = {"0 3 30 0 30 0 -", "1 1 10 0 10 0 -", "2 1 10 0 10 0 -",
					   "3 1 10 0 10 0 -"};
	const char *at = strstr(r.out, "\nlanes\n");
	for (size_t l = 0; at && l < N_ELEMS(rows); l++) {
		char want[64], got[128];
		/* the l-th line after the section's two heading lines, blanks squeezed */
		const char *line = at + 1;
		for (size_t k = 0; k < l + 3 && line; k++)
			line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL;
		cr_assert(line, "no row for lane %zu:\n%s", l, r.out);
		size_t n = 0;
		for (const char *c = line; *c && *c != '\n' && n + 1 < sizeof(got); c++)
			if (*c != ' ' || (n && got[n - 1] != ' '))
				got[n++] = *c;
		while (n && got[n - 1] == ' ')
			n--;
		got[n] = '\0';
		snprintf(want, sizeof(want), "%s", rows[l]);
		cr_expect_str_eq(got, want, "lane %zu's row", l);
	}
	/* one lane: no section (the depths say it all) */
	expect_ok(RUN(&r, NULL, "create", one, "--capacity", "8"), "");
	expect_ok(RUN(&r, NULL, "stat", one), NULL);
	cr_expect(!strstr(r.out, "\nlanes\n") && !strstr(r.out, "\n  lanes "), "a lanes section:\n%s", r.out);
}

/* ---- list ------------------------------------------------------------------------------------ */

/* The bytes of the segment name (through /dev/shm), into buf of sz bytes; their count. */
static size_t read_segment(const char *name, unsigned char *buf, size_t sz)
{
	char path[TQ_NAME_LEN + 16];
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	FILE *f = fopen(path, "rb");
	cr_assert(f, "open %s", path);
	size_t n = fread(buf, 1, sz, f);
	fclose(f);
	cr_assert(n < sz, "segment larger than the buffer");
	return n;
}

/* Creates the shm object name holding len bytes of data. */
static void put_object(const char *name, const void *data, size_t len)
{
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0, "shm_open %s: %s", name, strerror(errno));
	cr_assert(write(fd, data, len) == (ssize_t)len, "write %s", name);
	close(fd);
}

/* list's line for name (without its '/'), or NULL */
static const char *list_line(const char *out, const char *name, char *buf, size_t sz)
{
	size_t n = strlen(name);
	for (const char *line = out; *line; line += strcspn(line, "\n") + 1)
		if (!strncmp(line, name, n) && line[n] == ' ') {
			snprintf(buf, sz, "%.*s", (int)strcspn(line, "\n"), line);
			return buf;
		}
	return NULL;
}

static json_t *list_object(json_t *root, const char *name)
{
	json_t *objs = json_object_get(root, "objects"), *o;
	size_t i;
	cr_assert(json_is_array(objs), "objects is not an array");
	json_array_foreach(objs, i, o)
	{
		if (!strcmp(json_string_value(json_object_get(o, "name")), name))
			return o;
	}
	cr_assert_fail("no object %s in the listing", name);
	return NULL;
}

Test(stat, list_shows_the_queue_a_foreign_object_and_a_truncated_copy_as_corrupted)
{
	struct known k;
	struct run r;
	build_known(&k);
	const char *foreign = tq_name("foreign"), *trunc = tq_name("truncated");

	unsigned char junk[8192];
	srand((unsigned)getpid());
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)rand();
	junk[0] |= 1; /* random, but never the zeros of a queue being created */
	put_object(foreign, junk, sizeof(junk));
	/* the first half of the real segment: a valid header that its size contradicts */
	static unsigned char seg[1 << 20];
	size_t n = read_segment(k.name, seg, sizeof(seg));
	cr_assert(n > 8192, "segment of %zu bytes", n);
	put_object(trunc, seg, n / 2);

	expect_ok(RUN(&r, NULL, "list"), NULL);
	cr_expect(!strncmp(r.out, "NAME ", 5), "no header line:\n%s", r.out);
	char line[512];
	/* after NAME: SIZE (number and unit) OWNER MODE READY INFLIGHT DELAYED DEAD ALIVE */
	cr_assert(list_line(r.out, k.name + 1, line, sizeof(line)), "the queue is not listed:\n%s", r.out);
	char cols[9][32];
	int nc = sscanf(line + strlen(k.name + 1), "%31s %31s %31s %31s %31s %31s %31s %31s %31s", cols[0],
			cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8]);
	cr_expect(nc == 9 && !strcmp(cols[3], "0600") && !strcmp(cols[4], "2") && !strcmp(cols[5], "2") &&
			  !strcmp(cols[6], "1") && !strcmp(cols[7], "1") && !strcmp(cols[8], "1"),
		  "queue line: %s", line);
	cr_expect(list_line(r.out, foreign + 1, line, sizeof(line)) && strstr(line, " not a shmq segment"),
		  "foreign object:\n%s", r.out);
	cr_expect(list_line(r.out, trunc + 1, line, sizeof(line)) && strstr(line, " corrupted: ") &&
			  strstr(line, "truncated"),
		  "truncated copy:\n%s", r.out);

	expect_ok(RUN(&r, NULL, "list", "--json"), NULL);
	json_t *root = parse_json(&r);
	cr_expect_str_eq(json_string_value(json_object_get(root, "schema")), "shmq.list/1");
	json_t *q = list_object(root, k.name + 1);
	cr_expect_str_eq(json_string_value(json_object_get(q, "kind")), "queue");
	expect_jint(q, "size_bytes", (long long)n);
	expect_jint(q, "depths.ready", 2);
	expect_jint(q, "depths.inflight", 2);
	expect_jint(q, "depths.delayed", 1);
	expect_jint(q, "depths.dead", 1);
	expect_jint(q, "participants_alive", 1);
	json_t *fo = list_object(root, foreign + 1);
	cr_expect_str_eq(json_string_value(json_object_get(fo, "kind")), "foreign");
	expect_jint(fo, "size_bytes", sizeof(junk));
	json_t *tr = list_object(root, trunc + 1);
	cr_expect_str_eq(json_string_value(json_object_get(tr, "kind")), "corrupted");
	cr_expect(strstr(json_string_value(json_object_get(tr, "reason")), "truncated"), "reason");
	json_decref(root);
	shmq_close(k.q);
}

/* ---- errors ---------------------------------------------------------------------------------- */

Test(stat, stat_of_a_missing_foreign_or_truncated_object_fails_with_one_line)
{
	const char *missing = tq_name("missing"), *foreign = tq_name("foreign"),
		   *trunc = tq_name("truncated");
	const char *whole = tq_name("whole");
	struct run r;
	char junk[4096];
	memset(junk, 0x5a, sizeof(junk));
	put_object(foreign, junk, sizeof(junk));
	struct shmq_config c = tq_config(8);
	shmq_close(tq_create(whole, &c));
	/* the header page alone: the size it records is not the object's */
	char path[TQ_NAME_LEN + 16], page[4096];
	snprintf(path, sizeof(path), "/dev/shm%s", whole);
	FILE *f = fopen(path, "rb");
	cr_assert(f && fread(page, 1, sizeof(page), f) == sizeof(page));
	fclose(f);
	put_object(trunc, page, sizeof(page));

	expect_error(RUN(&r, NULL, "stat", missing), 1, "no such queue");
	expect_error(RUN(&r, NULL, "stat", missing, "--json"), 1, missing);
	expect_error(RUN(&r, NULL, "stat", foreign), 1, "not a shmq segment");
	expect_error(RUN(&r, NULL, "stat", foreign, "--prometheus"), 1, foreign);
	expect_error(RUN(&r, NULL, "stat", trunc), 1, "corrupted");
	/* zeros where the magic goes: a queue whose creator never finished (after the open's grace) */
	const char *zeros = tq_name("zeros");
	memset(page, 0, sizeof(page));
	put_object(zeros, page, sizeof(page));
	expect_error(RUN(&r, NULL, "stat", zeros), 1, "not initialised");
	expect_ok(RUN(&r, NULL, "list"), NULL);
	char line[512];
	cr_expect(list_line(r.out, zeros + 1, line, sizeof(line)) && strstr(line, " not initialised"),
		  "zeros:\n%s", r.out);
}

Test(stat, bad_command_lines_are_usage_errors)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_error(RUN(&r, NULL, "stat", q, "--json", "--prometheus"), 2, "exclude");
	expect_error(RUN(&r, NULL, "list", "extra"), 2, "extra");
	expect_error(RUN(&r, NULL, "list", "--bogus"), 2, "--bogus");
}

/* ---- a busy queue ---------------------------------------------------------------------------- */

Test(stat, json_of_a_queue_under_traffic_parses_and_its_depths_stay_within_the_capacity)
{
	struct shmq_config c = tq_config(64);
	const char *name = tq_name(NULL);
	shmq_close(tq_create(name, &c));
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork");
	if (pid == 0) { /* one process sends and receives until killed, or its test is gone */
		shmq_t *q;
		struct shmq_msg m;
		uint32_t v = 0;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (shmq_open(name, &q))
			_exit(1);
		for (double end = tq_now_ms() + 30000; tq_now_ms() < end;) {
			shmq_send(q, &v, sizeof(v), 0);
			if (++v % 3 && shmq_recv(q, &m, 0) == 0)
				shmq_ack(q, &m);
		}
		_exit(0);
	}
	/* wait for the traffic to start: each stat below must race with it */
	shmq_view_t *v;
	struct shmq_snapshot snap = {0};
	cr_assert(shmq_view_open(name, &v) == 0);
	for (double end = tq_now_ms() + 5000; !snap.stats.sent && tq_now_ms() < end; tq_sleep_ms(1))
		cr_assert(shmq_view_snapshot(v, &snap, NULL, 0) >= 0);
	shmq_view_close(v);
	struct run r;
	for (int i = 0; i < 5; i++) {
		expect_ok(RUN(&r, NULL, "stat", name, "--json"), NULL);
		json_t *root = parse_json(&r);
		long long sum = 0;
		const char *d[] = {"ready", "inflight", "delayed", "dead", "writing", "free"};
		for (size_t k = 0; k < N_ELEMS(d); k++) {
			char path[32];
			snprintf(path, sizeof(path), "depths.%s", d[k]);
			sum += json_integer_value(jpath(root, path));
		}
		/* each slot word is read once and counted in one state, racing or not */
		cr_expect(sum == 64, "the depths sum to %lld, not the capacity", sum);
		cr_expect(json_is_boolean(jpath(root, "snapshot.consistent")), "snapshot.consistent");
		long long tries = json_integer_value(jpath(root, "snapshot.tries"));
		cr_expect(tries >= 1 && tries <= SHMQ_SNAPSHOT_TRIES, "tries %lld", tries);
		cr_expect(json_integer_value(jpath(root, "totals.sent")) > 0, "no traffic seen");
		json_decref(root);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* ---- inspection is read-only ----------------------------------------------------------------- */

static uint32_t records(const char *name)
{
	shmq_view_t *v;
	struct shmq_snapshot s;
	cr_assert(shmq_view_open(name, &v) == 0);
	cr_assert(shmq_view_snapshot(v, &s, NULL, 0) >= 0);
	shmq_view_close(v);
	return s.records;
}

Test(stat, stat_and_list_write_nothing_to_the_segment_and_claim_no_record)
{
	struct known k;
	struct run r;
	static unsigned char before[1 << 20], after[1 << 20];
	build_known(&k);
	uint32_t recs = records(k.name);
	size_t n = read_segment(k.name, before, sizeof(before));

	expect_ok(RUN(&r, NULL, "stat", k.name), NULL);
	expect_ok(RUN(&r, NULL, "stat", k.name, "--json"), NULL);
	expect_ok(RUN(&r, NULL, "stat", k.name, "--prometheus"), NULL);
	expect_ok(RUN(&r, NULL, "list"), NULL);

	cr_expect(read_segment(k.name, after, sizeof(after)) == n, "the segment changed size");
	size_t diff = 0;
	while (diff < n && before[diff] == after[diff])
		diff++;
	cr_expect(diff == n, "inspection changed byte %zu of the segment (of %zu)", diff, n);
	cr_expect(records(k.name) == recs, "participant records %u before, %u after", recs, records(k.name));
	shmq_close(k.q);
}

Test(stat, recv_json_prints_one_object_per_message_with_its_id_lane_key_and_payload)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--lanes", "2", "--capacity", "8", "--dispatch", "key-hash"),
		  "");
	expect_ok(RUN(&r, NULL, "send", q, "--key", "k-1", "say \"hi\""), "");
	expect_ok(RUN(&r, NULL, "send", q, "--route", "g", "--", "two\nlines"), "");
	expect_ok(RUN(&r, NULL, "recv", q, "--json", "--timeout-ms", "0"), NULL);
	int seen = 0;
	for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n"), seen++) {
		json_error_t e;
		json_t *o = json_loads(line, 0, &e);
		cr_assert_not_null(o, "not JSON: %s (%s)", line, e.text);
		json_int_t id = json_integer_value(json_object_get(o, "id"));
		cr_expect_eq(json_integer_value(json_object_get(o, "lane")), id % 2,
			     "lane = id modulo lanes");
		cr_expect_eq(json_integer_value(json_object_get(o, "deliveries")), 1);
		const char *payload = json_string_value(json_object_get(o, "payload"));
		json_t *key = json_object_get(o, "key");
		cr_assert_not_null(payload);
		if (json_is_string(key)) {
			cr_expect_str_eq(json_string_value(key), "k-1");
			cr_expect_str_eq(payload, "say \"hi\"");
		} else {
			cr_expect(json_is_null(key));
			cr_expect_str_eq(payload, "two\nlines", "a newline stays inside its one line");
		}
		json_decref(o);
	}
	cr_expect_eq(seen, 2, "one line per message");
}

/* ---- owner and mode -------------------------------------------------------------------------- */

Test(stat, stat_shows_the_owner_and_mode_of_the_segment)
{
	const char *q = tq_name(NULL);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "4"), "");
	EXPECT_STAT(q, "permissions: 0600");
	expect_ok(RUN(&r, NULL, "stat", q, "--json"), NULL);
	json_t *root = parse_json(&r);
	expect_jint(root, "owner.uid", (long long)geteuid());
	expect_jint(root, "owner.gid", (long long)getegid());
	expect_jint(root, "owner.mode", 0600);
	json_decref(root);
}

/* As if another user had made it, shared with a group: what the trust check looks at. */
Test(stat, stat_and_list_show_another_users_group_writable_segment)
{
	SKIP_UNLESS_ROOT();
	const char *q = tq_name(NULL);
	struct run r;
	static struct prom p;
	char line[512];
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", "4", "--mode", "0660"), "");
	give_away(q, 61001, 61010, 0660);
	EXPECT_STAT(q, "owner: uid 61001, gid 61010", "permissions: 0660, writable by its group");

	expect_ok(RUN(&r, NULL, "stat", q, "--json"), NULL);
	json_t *root = parse_json(&r);
	expect_jint(root, "owner.uid", 61001);
	expect_jint(root, "owner.gid", 61010);
	expect_jint(root, "owner.mode", 0660);
	cr_expect(json_is_null(jpath(root, "owner.user")), "owner.user of a uid without a name is not null");
	json_decref(root);

	expect_ok(RUN(&r, NULL, "stat", q, "--prometheus"), NULL);
	parse_prom(r.out, q + 1, &p);
	cr_expect_eq(prom_value(&p, "shmq_segment_owner_info",
				"uid=\"61001\",user=\"61001\",gid=\"61010\",group=\"61010\",mode=\"0660\""),
		     1);

	expect_ok(RUN(&r, NULL, "list"), NULL);
	cr_assert(list_line(r.out, q + 1, line, sizeof(line)), "the queue is not listed:\n%s", r.out);
	cr_expect(strstr(line, " 61001 0660 "), "list's line shows no owner 61001 and mode 0660: %s", line);
	expect_ok(RUN(&r, NULL, "list", "--json"), NULL);
	root = parse_json(&r);
	json_t *o = list_object(root, q + 1);
	expect_jint(o, "owner.uid", 61001);
	expect_jint(o, "owner.mode", 0660);
	json_decref(root);
}

/* The participant of pid in a snapshot of view v, or NULL. */
static const struct shmq_participant_info *part_of(shmq_view_t *v, struct shmq_participant_info *parts,
						   pid_t pid)
{
	struct shmq_snapshot s;
	int n = shmq_view_snapshot(v, &s, parts, 16);
	for (int i = 0; i < n && i < 16; i++)
		if (parts[i].pid == pid)
			return &parts[i];
	return NULL;
}

/* Waits (up to 10 s: a hang guard, not a timing) until pid's record on v says it is doing `doing`. */
static const struct shmq_participant_info *await_doing(shmq_view_t *v, struct shmq_participant_info *parts,
						       pid_t pid, const char *doing)
{
	const struct shmq_participant_info *p = NULL;
	for (int i = 0; i < 1000; i++) {
		if ((p = part_of(v, parts, pid)) && !strcmp(p->doing, doing))
			return p;
		tq_sleep_ms(10);
	}
	cr_assert_fail("pid %d never showed '%s' (last: %s)", (int)pid, doing, p ? p->doing : "no record");
	return NULL;
}

/* A child that blocks in a send to a full queue (role producer before it ever sent) or in a
 * receive from an empty one (consumer before it ever received): stat says what each is and what
 * it waits for, from what they recorded, not from their (zero) counters. */
Test(stat, a_blocked_sender_and_a_waiting_receiver_show_what_they_are_and_wait_for)
{
	struct shmq_config c = tq_config(4);
	const char *full = tq_name("full"), *empty = tq_name("empty");
	shmq_t *qf = tq_create(full, &c), *qe = tq_create(empty, &c);
	for (uint32_t i = 0; i < 4; i++)
		tq_send_u32(qf, i);
	pid_t kids[2];
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		cr_assert(kids[k] >= 0, "fork");
		if (kids[k] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			shmq_t *q;
			struct shmq_msg m;
			if (shmq_open(k ? empty : full, &q))
				_exit(1);
			_exit(k ? shmq_recv(q, &m, -1) != 0 : shmq_send(q, "x", 1, -1) != 0);
		}
	}
	struct shmq_participant_info parts[16];
	shmq_view_t *vf, *ve;
	cr_assert_eq(shmq_view_open(full, &vf), 0);
	cr_assert_eq(shmq_view_open(empty, &ve), 0);
	const struct shmq_participant_info *p = await_doing(vf, parts, kids[0], "waiting for room");
	cr_expect_str_eq(p->role, "producer");
	cr_expect_eq(p->sent, 0);
	p = await_doing(ve, parts, kids[1], "waiting for messages");
	cr_expect_str_eq(p->role, "consumer");
	cr_expect_eq(p->received, 0);
	/* once served, they are no longer waiting */
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(qf, &m, 0), 0);
	cr_assert_eq(shmq_ack(qf, &m), 0);
	tq_send_u32(qe, 7);
	for (int k = 0; k < 2; k++) {
		int st;
		cr_assert_eq(waitpid(kids[k], &st, 0), kids[k]);
		cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed", k);
	}
	/* a handle that only reclaims is a watchdog; an application says what else it is */
	shmq_t *w;
	cr_assert_eq(shmq_open(empty, &w), 0);
	cr_assert(shmq_reclaim(w, NULL) >= 0);
	cr_expect_str_eq(part_of(ve, parts, getpid())->role, "producer"); /* qe: the first record */
	struct shmq_snapshot s;
	int n = shmq_view_snapshot(ve, &s, parts, 16), watchdogs = 0;
	for (int i = 0; i < n && i < 16; i++)
		watchdogs += !strcmp(parts[i].role, "watchdog") && !*parts[i].doing;
	cr_expect_eq(watchdogs, 1, "one watchdog record");
	cr_expect_eq(shmq_set_kind(w, SHMQ_KIND_BRIDGE), 0);
	cr_expect_eq(shmq_set_kind(w, 1u << 20), -EINVAL);
	n = shmq_view_snapshot(ve, &s, parts, 16);
	int bridges = 0;
	for (int i = 0; i < n && i < 16; i++)
		bridges += !strcmp(parts[i].role, "bridge");
	cr_expect_eq(bridges, 1, "the watchdog said it is a bridge");
	shmq_close(w);
	shmq_view_close(vf);
	shmq_view_close(ve);
	shmq_close(qf);
	shmq_close(qe);
}

/* A worker in a PID namespace of its own (a container's, made by unshare) holds a message: stat
 * shows its PID as one of another namespace, alive by its kernel lock; killed, it is seen dead and
 * its message comes back, whatever its PID means here. */
Test(stat, a_consumer_in_another_pid_namespace_is_shown_as_such_and_reclaimed_when_it_dies)
{
	if (system("unshare --pid --fork --kill-child true >/dev/null 2>&1") != 0)
		cr_skip_test("unshare --pid is not allowed here (needs CAP_SYS_ADMIN)");
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.reclaim_interval_ms = 0; /* only the watchdog below requeues */
	shmq_t *q = tq_create(name, &c);
	cr_assert_eq(shmq_send(q, "x", 1, 0), 0);
	pid_t kid = fork();
	cr_assert(kid >= 0, "fork");
	if (kid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		execlp("unshare", "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", tool, "work",
		       name, "--", "sleep", "60", (char *)NULL);
		_exit(127);
	}
	shmq_view_t *v;
	cr_assert_eq(shmq_view_open(name, &v), 0);
	struct shmq_participant_info parts[16];
	const struct shmq_participant_info *w = NULL;
	for (int i = 0; i < 1000 && !w; i++) { /* 10 s: a hang guard */
		struct shmq_snapshot s;
		int n = shmq_view_snapshot(v, &s, parts, 16);
		for (int k = 0; k < n && k < 16; k++)
			if (parts[k].leases == 1)
				w = &parts[k];
		if (!w)
			tq_sleep_ms(10);
	}
	cr_assert(w, "the worker never took the message");
	cr_expect_eq(w->pid_here, 0, "its pid is of another namespace");
	cr_expect_eq(w->alive, 1);
	cr_expect_str_eq(w->role, "worker");
	uint32_t wi = w->index;
	struct run r;
	expect_ok(RUN(&r, NULL, "stat", name, "--json"), NULL);
	cr_expect(strstr(r.out, "\"pid_namespace\": \"other\""), "%s", r.out);
	expect_ok(RUN(&r, NULL, "stat", name), NULL);
	cr_expect(strstr(r.out, "another PID namespace"), "%s", r.out);

	kill(kid, SIGKILL); /* unshare dies, --kill-child takes the namespace's init, and all in it */
	int st;
	cr_assert_eq(waitpid(kid, &st, 0), kid);
	for (int i = 0, dead = 0; i < 1000 && !dead; i++) { /* until the kernel dropped its lock */
		int n = shmq_view_snapshot(v, &(struct shmq_snapshot){0}, parts, 16);
		for (int k = 0; k < n && k < 16; k++)
			dead |= parts[k].index == wi && parts[k].alive == 0;
		if (!dead)
			tq_sleep_ms(10);
	}
	expect_ok(RUN(&r, NULL, "watchdog", name, "--once"), NULL);
	cr_expect(strstr(r.out, "dead owner 1"), "%s", r.out);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 1000), 0, "the dead worker's message came back");
	cr_expect_eq(m.deliveries, 2);
	cr_expect_eq(shmq_ack(q, &m), 0);
	shmq_view_close(v);
	shmq_close(q);
}

/* A /dev/shm too small for the queue (Docker's 64 MB default, say): create fails with one line
 * that names the fix. Made with a 1 MiB tmpfs on /dev/shm in a mount namespace of its own. */
Test(stat, a_queue_bigger_than_dev_shm_fails_with_one_line_naming_the_fix)
{
	if (system("unshare --mount true >/dev/null 2>&1") != 0)
		cr_skip_test("unshare --mount is not allowed here (needs CAP_SYS_ADMIN)");
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
		 "unshare --mount sh -c 'mount -t tmpfs -o size=1m tmpfs /dev/shm && "
		 "exec \"%s\" create big --capacity 65536' 2>&1",
		 tool);
	FILE *f = popen(cmd, "r");
	cr_assert(f, "popen");
	char out[1024] = "";
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d: %s", st, out);
	cr_expect(strstr(out, "no space left in /dev/shm") && strstr(out, "--shm-size"), "%s", out);
	cr_expect_eq(strchr(out, '\n') - out + 1, (long)strlen(out), "one line: %s", out);
}

/* SPDX-License-Identifier: MIT */
/*
 * cmd_peek.c: `shmq peek NAME [--count N] [--inflight] [--hex] [--json]`: the messages waiting in
 * a queue, oldest first, read through a read-only view: nothing is received, leased or changed.
 * Two passes: the slot states first (to pick the N oldest), then those N slots whole with their
 * payloads; a slot that moved on in between is left out, not shown half old and half new.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define PREVIEW_BYTES 64 /* of each payload in the text listing */

enum {
	O_COUNT = CLI_OPT_BASE,
	O_INFLIGHT,
	O_HEX,
	O_JSON,
};

static const struct option peek_opts[] = {
	{"count", required_argument, NULL, O_COUNT},
	{"inflight", no_argument, NULL, O_INFLIGHT},
	{"hex", no_argument, NULL, O_HEX},
	{"json", no_argument, NULL, O_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct peek_opts {
	uint64_t count;
	int inflight, hex, json;
};

static int peek_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct peek_opts *o = ctx;
	switch (opt) {
	case O_COUNT:
		return cli_opt_range(cmd, "--count", arg, 1, SHMQ_CAPACITY_MAX, &o->count);
	case O_INFLIGHT:
		o->inflight = 1;
		return 0;
	case O_HEX:
		o->hex = 1;
		return 0;
	default:
		o->json = 1;
		return 0;
	}
}

/* Waiting messages (ready, delayed) always; leased and being-written ones with --inflight.
 * Dead letters belong to `shmq dlq NAME list`. */
static int wanted(const struct shmq_slot_info *s, int inflight)
{
	if (s->torn)
		return 0;
	if (s->kind == SHMQ_SLOT_READY || s->kind == SHMQ_SLOT_DELAYED)
		return 1;
	return inflight && s->kind == SHMQ_SLOT_LEASED;
}

/* Oldest first: by send time, then id. Ids are in send order within a lane only (id = lane
 * ticket x lanes + lane), so with lanes the time orders across lanes; the send clock is coarse
 * (1-4 ms), and within one tick the id decides (exact within a lane). */
static int by_age(const void *a, const void *b)
{
	const struct shmq_slot_info *x = a, *y = b;
	if (x->enqueued_ns != y->enqueued_ns)
		return x->enqueued_ns < y->enqueued_ns ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static void put_hex(const unsigned char *p, size_t n)
{
	for (size_t off = 0; off < n; off += 16) {
		printf("    %08zx ", off);
		for (size_t i = off; i < off + 16; i++) {
			if (i < n)
				printf(" %02x", p[i]);
			else
				fputs("   ", stdout);
			if (i == off + 7)
				putchar(' ');
		}
		fputs("  |", stdout);
		for (size_t i = off; i < off + 16 && i < n; i++)
			putchar(p[i] >= 0x20 && p[i] <= 0x7e ? p[i] : '.');
		fputs("|\n", stdout);
	}
}

/* "12.3 s", or "-" for none */
static void fmt_ms(char *buf, size_t sz, int64_t ms, int have)
{
	if (!have)
		snprintf(buf, sz, "-");
	else
		snprintf(buf, sz, "%.1f s", (double)ms / 1000.0);
}

/* lane: the slot's lane, or NO_LANE on a queue of one lane (which shows no lane column) */
#define NO_LANE UINT32_MAX

static void put_row(const struct shmq_slot_info *s, const unsigned char *payload, const struct peek_opts *o,
		    int first, uint32_t lane)
{
	if (o->json) {
		printf("%s\n  {\"id\": %llu, ", first ? "" : ",", (unsigned long long)s->id);
		if (lane != NO_LANE)
			printf("\"lane\": %u, ", lane);
		printf("\"state\": \"%s\", \"deliveries\": %u, \"age_ms\": %llu, ",
		       shmq_slot_kind_str(s->kind), s->deliveries, (unsigned long long)s->age_ms);
		if (s->kind == SHMQ_SLOT_LEASED)
			printf("\"owner_pid\": %d, \"lease_left_ms\": %lld, ", s->owner_pid,
			       (long long)s->due_in_ms);
		if (s->kind == SHMQ_SLOT_DELAYED)
			printf("\"due_in_ms\": %lld, ", (long long)(s->due_in_ms > 0 ? s->due_in_ms : 0));
		printf("\"len\": %u, \"payload\": ", s->len);
		putchar('"');
		cli_put_json_bytes(payload, s->copied);
		putchar('"');
		putchar('}');
		return;
	}
	char age[32], left[32], owner[32];
	fmt_ms(age, sizeof(age), (int64_t)s->age_ms, 1);
	int leased = s->kind == SHMQ_SLOT_LEASED, delayed = s->kind == SHMQ_SLOT_DELAYED;
	fmt_ms(left, sizeof(left), delayed && s->due_in_ms < 0 ? 0 : s->due_in_ms, leased || delayed);
	if (leased && s->owner_pid)
		snprintf(owner, sizeof(owner), "%d", s->owner_pid);
	else
		snprintf(owner, sizeof(owner), "-");
	printf("%-12llu ", (unsigned long long)s->id);
	if (lane != NO_LANE)
		printf("%4u ", lane);
	printf("%-8s %5u %9s %8s %10s %7u  ", shmq_slot_kind_str(s->kind), s->deliveries, age, owner, left,
	       s->len);
	if (o->hex) {
		putchar('\n');
		put_hex(payload, s->copied);
	} else {
		cli_put_preview(payload, s->copied, PREVIEW_BYTES);
		putchar('\n');
	}
}

static int peek(const char *cmd, shmq_view_t *v, const char *name, const struct peek_opts *o)
{
	struct shmq_snapshot snap;
	int r = shmq_view_snapshot(v, &snap, NULL, 0);
	if (r < 0)
		return cli_error(CLI_FAIL, cmd, "cannot read '%s': %s", name, cli_strerror(r));
	uint32_t cap = snap.stats.config.capacity, max_payload = snap.stats.max_payload;
	struct shmq_slot_info *rows = malloc(sizeof(*rows) * cap);
	unsigned char *buf = malloc(max_payload ? max_payload : 1);
	if (!rows || !buf) {
		free(rows);
		free(buf);
		return cli_error(CLI_FAIL, cmd, "out of memory");
	}
	/* pass 1: states only, no payload */
	uint32_t n = 0;
	for (uint32_t i = 0; i < cap; i++)
		if (!shmq_view_slot(v, i, &rows[n], NULL, 0) && wanted(&rows[n], o->inflight))
			n++;
	qsort(rows, n, sizeof(*rows), by_age);
	uint32_t total = n, shown = 0;
	if (n > o->count)
		n = (uint32_t)o->count;

	if (o->json) {
		/* the name as JSON text: a queue name may hold '"' or '\\' */
		fputs("{\"queue\": \"", stdout);
		cli_put_json_bytes(cli_bare_name(name), strlen(cli_bare_name(name)));
		printf("\", \"waiting\": %u, \"messages\": [", total);
	} else if (n) {
		printf("%-12s ", "id");
		if (snap.lanes > 1)
			printf("%4s ", "lane");
		printf("%-8s %5s %9s %8s %10s %7s  %s\n", "state", "deliv", "age", "owner", "left", "bytes",
		       "payload");
	}
	/* pass 2: each chosen slot again, with its payload, if it still holds that message */
	for (uint32_t k = 0; k < n; k++) {
		struct shmq_slot_info s;
		if (shmq_view_slot(v, rows[k].slot, &s, buf, max_payload) || s.id != rows[k].id ||
		    !wanted(&s, o->inflight))
			continue;
		/* id % lanes is the lane (include/shmq.h), as recv --json reports it */
		put_row(&s, buf, o, shown == 0, snap.lanes > 1 ? (uint32_t)(s.id % snap.lanes) : NO_LANE);
		shown++;
	}
	if (o->json)
		printf("%s]}\n", shown ? "\n" : "");
	else
		printf("%u of %u message%s%s in %s%s\n", shown, total, total == 1 ? "" : "s",
		       o->inflight ? " (waiting or in flight)" : " waiting", cli_bare_name(name),
		       shown < total ? " (oldest first; --count for more)" : "");
	free(rows);
	free(buf);
	return cli_flush_stdout(cmd);
}

int cmd_peek(int argc, char **argv)
{
	const char *cmd = "peek";
	struct peek_opts o = {.count = 10};
	struct cli_args a;
	shmq_view_t *v;
	int r;

	if ((r = cli_parse(cmd, argc, argv, peek_opts, peek_opt, &o, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	if (o.hex && o.json)
		return cli_error(CLI_USAGE, cmd,
				 "--hex and --json do not go together (JSON escapes bytes itself)");
	if ((r = cli_view_open(cmd, a.name, &v, NULL)))
		return r;
	r = peek(cmd, v, a.name, &o);
	shmq_view_close(v);
	return r;
}

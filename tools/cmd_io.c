/* SPDX-License-Identifier: MIT */
/*
 * cmd_io.c: `shmq send` and `shmq recv`. send stops at the first message that fails and says how
 * many went before it; recv writes and flushes each line before it acks, so a line that may not
 * have reached its reader is never acked (at-least-once).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

enum {
	O_TIMEOUT_MS = CLI_OPT_BASE,
	O_COUNT,
	O_NO_ACK,
	O_KEY,
	O_DEDUP,
	O_JSON,
	O_ROUTE,
};

struct io_opts {
	int timeout_ms; /* -1: forever */
	uint64_t count; /* recv: 0: no limit */
	int no_ack;
	const char *key;   /* send: idempotency key */
	const char *route; /* send: routing key of every message */
	int dedup;	   /* recv: skip (ack) messages recorded done, record each one done */
	int json;	   /* recv: one JSON object per message and line */
};

static const struct option send_opts[] = {
	{"timeout-ms", required_argument, NULL, O_TIMEOUT_MS},
	{"key", required_argument, NULL, O_KEY},
	{"route", required_argument, NULL, O_ROUTE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static const struct option recv_opts[] = {
	{"count", required_argument, NULL, O_COUNT},
	{"timeout-ms", required_argument, NULL, O_TIMEOUT_MS},
	{"no-ack", no_argument, NULL, O_NO_ACK},
	{"dedup", no_argument, NULL, O_DEDUP},
	{"json", no_argument, NULL, O_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* An idempotency or routing key: 1..SHMQ_KEY_MAX bytes. */
static int key_opt(const char *cmd, const char *opt, const char *arg, const char **out)
{
	if (!*arg || strlen(arg) > SHMQ_KEY_MAX)
		return cli_error(CLI_USAGE, cmd, "%s must be 1 to %d bytes, got %zu", opt, SHMQ_KEY_MAX,
				 strlen(arg));
	*out = arg;
	return 0;
}

static int io_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct io_opts *o = ctx;
	uint64_t v;
	int r = 0;
	switch (opt) {
	case O_TIMEOUT_MS:
		if (!(r = cli_opt_range(cmd, "--timeout-ms", arg, 0, INT_MAX, &v)))
			o->timeout_ms = (int)v;
		break;
	case O_COUNT:
		if (!(r = cli_opt_range(cmd, "--count", arg, 1, UINT64_MAX, &v)))
			o->count = v;
		break;
	case O_NO_ACK:
		o->no_ack = 1;
		break;
	case O_KEY:
		return key_opt(cmd, "--key", arg, &o->key);
	case O_ROUTE:
		return key_opt(cmd, "--route", arg, &o->route);
	case O_DEDUP:
		o->dedup = 1;
		break;
	case O_JSON:
		o->json = 1;
		break;
	}
	return r;
}

/* ---------------------------------------------------------------------------------------------
 * send
 */

/* Sends one message; on failure prints the error, with where the message came from (e.g.
 * "line 7") and how many were sent before it, and returns CLI_FAIL. */
static int send_one(const char *cmd, shmq_t *q, const char *name, const char *route, const void *data,
		    size_t len, int timeout_ms, const char *from, unsigned long long sent)
{
	int r = route ? shmq_send_routed(q, route, strlen(route), data, len, timeout_ms)
		      : shmq_send(q, data, len, timeout_ms);
	if (!r)
		return 0;
	char before[64];
	snprintf(before, sizeof(before), "%s; %llu message%s sent before it", from, sent,
		 sent == 1 ? "" : "s");
	if (r == -EMSGSIZE)
		return cli_error(CLI_FAIL, cmd, "payload of %zu bytes exceeds the queue's maximum of %u (%s)",
				 len, shmq_max_payload(q), before);
	/* a routed send on a key-hash queue waits for its own lane only: say which full it was */
	char what[SHMQ_NAME_MAX + SHMQ_KEY_MAX + 64];
	struct shmq_stats st;
	if (route && r == -EAGAIN && !shmq_stats(q, &st) && st.config.dispatch == SHMQ_DISPATCH_KEY_HASH)
		snprintf(what, sizeof(what), "the lane of route '%s' in queue '%s'", route, name);
	else
		snprintf(what, sizeof(what), "queue '%s'", name);
	if (r == -EAGAIN && timeout_ms == 0)
		return cli_error(CLI_FAIL, cmd, "%s is full (%s)", what, before);
	if (r == -EAGAIN)
		return cli_error(CLI_FAIL, cmd, "%s stayed full for %d ms (%s)", what, timeout_ms, before);
	return cli_error(CLI_FAIL, cmd, "cannot send: %s (%s)", cli_strerror(r), before);
}

/* "--timeout-ms", "--timeout-ms=5", "-h": one of longopts (or -h) spelled out in full */
static int looks_like_option(const struct option *longopts, const char *arg)
{
	if (!strcmp(arg, "-h"))
		return 1;
	if (strncmp(arg, "--", 2))
		return 0;
	size_t len = strcspn(arg + 2, "=");
	for (const struct option *o = longopts; o->name; o++)
		if (strlen(o->name) == len && !strncmp(o->name, arg + 2, len))
			return 1;
	return 0;
}

int cmd_send(int argc, char **argv)
{
	const char *cmd = "send";
	struct io_opts o = {.timeout_ms = -1};
	struct cli_args a;
	char from[48];
	unsigned long long sent = 0;
	char *line = NULL;
	size_t line_cap = 0;
	ssize_t n;
	shmq_t *q;
	int r;

	if ((r = cli_parse(cmd, argc, argv, send_opts, io_opt, &o, &a)))
		return r;
	/* with '+' ordering `send q m1 --timeout-ms 5` would send "--timeout-ms" and "5" as payloads */
	for (int i = 1; i < a.nrest && !a.dashdash; i++)
		if (looks_like_option(send_opts, a.rest[i]))
			return cli_error(
				CLI_USAGE, cmd,
				"option '%s' after a PAYLOAD: put options before the first PAYLOAD, or -- "
				"before the payloads to send it as one",
				a.rest[i]);
	if (o.key && a.nrest != 1)
		return cli_error(CLI_USAGE, cmd, "--key takes exactly one PAYLOAD (one key per message)");
	if ((r = cli_open(cmd, a.name, &q)))
		return r;

	if (o.key) {
		uint64_t id;
		/* with --route, like an SQS FIFO group id next to a deduplication id; without, the
		 * key routes */
		r = shmq_send_keyed_routed(q, o.route, o.route ? strlen(o.route) : 0, o.key, strlen(o.key),
					   a.rest[0], strlen(a.rest[0]), o.timeout_ms, &id);
		if (r == SHMQ_DUPLICATE) {
			printf("duplicate: key '%s' was sent within the dedup window as message %llu; not "
			       "sent again\n",
			       o.key, (unsigned long long)id);
			r = cli_flush_stdout(cmd);
		} else if (r == -ENOTSUP) {
			r = cli_no_dedup(cmd, "", a.name);
		} else if (r) {
			r = cli_error(CLI_FAIL, cmd, "cannot send: %s", cli_strerror(r));
		}
		goto out;
	}

	if (a.nrest > 0) {
		for (int i = 0; i < a.nrest; i++, sent++) {
			snprintf(from, sizeof(from), "argument %d", i + 1);
			if ((r = send_one(cmd, q, a.name, o.route, a.rest[i], strlen(a.rest[i]), o.timeout_ms,
					  from, sent)))
				goto out;
		}
		goto out;
	}
	while ((n = getline(&line, &line_cap, stdin)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			n--;
		snprintf(from, sizeof(from), "line %llu", sent + 1);
		if ((r = send_one(cmd, q, a.name, o.route, line, (size_t)n, o.timeout_ms, from, sent)))
			goto out;
		sent++;
	}
	if (ferror(stdin))
		r = cli_error(CLI_FAIL, cmd, "cannot read standard input: %s (%llu message%s sent)",
			      strerror(errno), sent, sent == 1 ? "" : "s");
out:
	free(line);
	shmq_close(q);
	return r;
}

/* ---------------------------------------------------------------------------------------------
 * recv
 */

/* The payload and a newline, flushed. 0, or -errno when stdout failed (EPIPE: reader gone). */
static int write_line(const struct shmq_msg *m)
{
	errno = 0;
	if (fwrite(m->data, 1, m->len, stdout) == m->len && putchar('\n') != EOF && fflush(stdout) == 0)
		return 0;
	return errno ? -errno : -EIO;
}

/* One message as a line of JSON (a payload with a newline in it stays one line), flushed. lanes:
 * the queue's, for the message's lane (its id modulo the lanes). */
static int write_json(const struct shmq_msg *m, uint32_t lanes)
{
	errno = 0;
	printf("{\"id\": %llu, \"lane\": %u, \"deliveries\": %u, \"enqueued_ns\": %llu, \"key\": ",
	       (unsigned long long)m->id, (unsigned)(m->id % lanes), m->deliveries,
	       (unsigned long long)m->enqueued_ns);
	if (m->key) {
		putchar('"');
		cli_put_json_bytes(m->key, m->key_len);
		putchar('"');
	} else {
		fputs("null", stdout);
	}
	fputs(", \"payload\": \"", stdout);
	cli_put_json_bytes(m->data, m->len);
	if (puts("\"}") != EOF && fflush(stdout) == 0)
		return 0;
	return errno ? -errno : -EIO;
}

int cmd_recv(int argc, char **argv)
{
	const char *cmd = "recv";
	struct io_opts o = {.timeout_ms = -1};
	struct cli_args a;
	struct shmq_msg m;
	shmq_t *q;
	int r;

	if ((r = cli_parse(cmd, argc, argv, recv_opts, io_opt, &o, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	if (o.dedup && o.no_ack)
		return cli_error(CLI_USAGE, cmd,
				 "--dedup records work done at the ack: it does not go with --no-ack");
	if ((r = cli_open(cmd, a.name, &q)))
		return r;
	struct shmq_stats st;
	uint32_t lanes = 1;
	if (o.json && !shmq_stats(q, &st) && st.config.lanes)
		lanes = st.config.lanes;
	/* shmq_recv also runs the queue's rate-limited reclaim pass (config.reclaim_interval_ms),
	 * which gives back messages whose consumer died or whose lease ran out */
	uint64_t arrived = 0; /* messages received, printed or not (--dedup skips some) */
	for (uint64_t got = 0; !o.count || got < o.count; got++) {
		r = shmq_recv(q, &m, o.timeout_ms);
		if (r == -EAGAIN) { /* MS passed with no message: done */
			r = arrived ? CLI_OK : CLI_NO_MESSAGE;
			break;
		}
		arrived++;
		if (r) {
			r = cli_error(CLI_FAIL, cmd, "cannot receive: %s", cli_strerror(r));
			break;
		}
		if (o.dedup && (r = shmq_is_done(q, &m)) == 1) {
			/* its work was done by a consumer that died before acking: just ack it */
			fprintf(stderr,
				"shmq: recv: message id %llu was already processed: acked, not printed\n",
				(unsigned long long)m.id);
			r = shmq_ack(q, &m);
			got--; /* not one of the --count printed */
			continue;
		}
		if (o.dedup && r == -ENOTSUP) {
			r = cli_no_dedup(cmd, "", a.name);
			shmq_nack(q, &m, 0);
			break;
		}
		if ((r = o.json ? write_json(&m, lanes) : write_line(&m))) {
			/* not acked: give it back now rather than when the lease runs out */
			shmq_nack(q, &m, 0);
			r = cli_error(CLI_FAIL, cmd,
				      "cannot write to standard output: %s (message id %llu was not acked "
				      "and goes back to the queue)",
				      strerror(-r), (unsigned long long)m.id);
			break;
		}
		if (o.no_ack)
			continue;
		r = o.dedup ? shmq_ack_done(q, &m) : shmq_ack(q, &m);
		if (r == -ESTALE) {
			/* its lease ran out before we got here: someone may receive it again */
			fprintf(stderr,
				"shmq: recv: warning: lease on message id %llu was lost before the ack; it "
				"may be delivered again\n",
				(unsigned long long)m.id);
		} else if (r) {
			r = cli_error(CLI_FAIL, cmd, "cannot ack message %llu: %s", (unsigned long long)m.id,
				      cli_strerror(r));
			break;
		}
		r = CLI_OK;
	}
	shmq_close(q);
	return r;
}

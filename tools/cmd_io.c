/* SPDX-License-Identifier: MIT */
/*
 * cmd_io.c: `shmq send` and `shmq recv`. send stops at the first message that fails and says how
 * many went before it; recv acks a line only once its reader has it (see below), so a line that
 * may not have reached its reader is never acked (at-least-once).
 */
#include <errno.h>
#include <limits.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
	int json;	   /* one JSON object per message and line (send: its id) */
};

static const struct option send_opts[] = {
	{"timeout-ms", required_argument, NULL, O_TIMEOUT_MS},
	{"key", required_argument, NULL, O_KEY},
	{"route", required_argument, NULL, O_ROUTE},
	{"json", no_argument, NULL, O_JSON},
	CLI_TRUST_OPTIONS,
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static const struct option recv_opts[] = {
	{"count", required_argument, NULL, O_COUNT},
	{"timeout-ms", required_argument, NULL, O_TIMEOUT_MS},
	{"no-ack", no_argument, NULL, O_NO_ACK},
	{"dedup", no_argument, NULL, O_DEDUP},
	{"json", no_argument, NULL, O_JSON},
	CLI_TRUST_OPTIONS,
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

/* Sends one message (a reservation, so that its id is known: with json, printed as a JSON line);
 * on failure prints the error, with where the message came from (e.g. "line 7") and how many
 * were sent before it, and returns CLI_FAIL. */
static int send_one(const char *cmd, shmq_t *q, const char *name, const char *route, const void *data,
		    size_t len, int timeout_ms, int json, const char *from, unsigned long long sent)
{
	struct shmq_reservation rv;
	int r = route ? shmq_send_reserve_routed(q, route, strlen(route), len, &rv, timeout_ms)
		      : shmq_send_reserve(q, len, &rv, timeout_ms);
	if (!r) {
		memcpy(rv.data, data, len);
		r = shmq_send_commit(q, &rv, len);
	}
	if (!r) {
		if (json)
			printf("{\"id\": %llu}\n", (unsigned long long)rv.id);
		return 0;
	}
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
		if (r == 0 && o.json) {
			printf("{\"id\": %llu}\n", (unsigned long long)id);
			r = cli_flush_stdout(cmd);
		} else if (r == SHMQ_DUPLICATE && o.json) {
			printf("{\"id\": %llu, \"duplicate\": true}\n", (unsigned long long)id);
			r = cli_flush_stdout(cmd);
		} else if (r == SHMQ_DUPLICATE) {
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
					  o.json, from, sent)))
				goto out;
		}
		r = cli_flush_stdout(cmd);
		goto out;
	}
	while ((n = getline(&line, &line_cap, stdin)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			n--;
		snprintf(from, sizeof(from), "line %llu", sent + 1);
		if ((r = send_one(cmd, q, a.name, o.route, line, (size_t)n, o.timeout_ms, o.json, from,
				  sent)))
			goto out;
		sent++;
	}
	if (ferror(stdin))
		r = cli_error(CLI_FAIL, cmd, "cannot read standard input: %s (%llu message%s sent)",
			      strerror(errno), sent, sent == 1 ? "" : "s");
	else
		r = cli_flush_stdout(cmd);
out:
	free(line);
	shmq_close(q);
	return r;
}

/* ---------------------------------------------------------------------------------------------
 * recv
 *
 * A line is delivered when its reader has it, not when it is written: a pipe holds 64 KiB, and a
 * reader such as `head -n 1` takes what one read() returns and exits, leaving the rest unread.
 * So into a pipe or a socket recv hands over one message at a time: it writes the line, waits
 * until nothing written to stdout is left unread (FIONREAD for a pipe, SIOCOUTQ for a socket:
 * what the peer has not read), extending the lease meanwhile, and only then acks it and receives
 * the next. A reader's read() can thus never return more than the one line recv holds, and a
 * reader that leaves (EPIPE, POLLERR, POLLHUP) before taking all of it gets it nacked for
 * redelivery at once. Into a regular file or a terminal, a completed write is the delivery.
 */

enum sink {
	SINK_FINAL,  /* regular file, terminal, /dev/null: written is delivered */
	SINK_PIPE,   /* FIONREAD: bytes in the pipe nobody has read yet */
	SINK_SOCKET, /* SIOCOUTQ: bytes sent that the peer has not read (TCP: not acknowledged) */
};

/* hand_over's results besides -errno */
enum {
	TAKEN = 0,
	READER_GONE = 1
};

#define TAKEN_PAUSE_MIN_US 20	 /* first pause while the reader has not read everything */
#define TAKEN_PAUSE_MAX_US 10000 /* ... doubling up to this */

/* Standard output, and the message being handed over through it. */
struct out {
	int fd;
	enum sink sink;
	shmq_t *q;
	uint32_t lease_ms;
	uint64_t extend_at; /* CLOCK_MONOTONIC_COARSE ms: extend the lease from then on */
};

static uint64_t coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void out_init(struct out *o, shmq_t *q, uint32_t lease_ms)
{
	struct stat st;
	*o = (struct out){.fd = STDOUT_FILENO, .q = q, .lease_ms = lease_ms};
	if (fstat(o->fd, &st) == 0)
		o->sink = S_ISFIFO(st.st_mode) ? SINK_PIPE : S_ISSOCK(st.st_mode) ? SINK_SOCKET : SINK_FINAL;
}

/* A message was just received: its lease runs lease_ms from about now. */
static void lease_began(struct out *o) { o->extend_at = coarse_ms() + o->lease_ms - o->lease_ms / 3; }

/* Extends m's lease when a third of it or less is left; returns ms until the next look. */
static int keep_lease(struct out *o, struct shmq_msg *m)
{
	uint64_t now = coarse_ms();
	if (now >= o->extend_at) {
		/* -ESTALE: lost already (someone may receive it again); the ack will say so */
		shmq_extend(o->q, m, 0);
		o->extend_at = now + o->lease_ms - o->lease_ms / 3;
	}
	uint64_t left = o->extend_at - now;
	return left < 1000 ? (int)left + 1 : 1000;
}

/* Writes all of line[0..len), keeping m's lease while stdout does not take it. */
static int write_all(struct out *o, struct shmq_msg *m, const char *line, size_t len)
{
	while (len) {
		struct pollfd pf = {.fd = o->fd, .events = POLLOUT};
		int n = poll(&pf, 1, keep_lease(o, m));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n <= 0)
			continue;
		/* into a pipe or socket, no more than POLLOUT promised room for: a blocked write()
		 * would hold the lease past its end */
		size_t chunk = o->sink == SINK_FINAL || len < PIPE_BUF ? len : PIPE_BUF;
		ssize_t w = write(o->fd, line, chunk);
		if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
			return READER_GONE;
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (w > 0)
			line += w, len -= (size_t)w;
	}
	return 0;
}

/* Waits until the reader has read everything written to stdout, or left. */
static int wait_taken(struct out *o, struct shmq_msg *m)
{
	long pause_us = TAKEN_PAUSE_MIN_US;
	for (;;) {
		int unread;
		if (ioctl(o->fd, o->sink == SINK_PIPE ? FIONREAD : SIOCOUTQ, &unread) < 0) {
			o->sink = SINK_FINAL; /* cannot tell: from now on, as into a file */
			return TAKEN;
		}
		/* no events asked: poll reports POLLERR (a pipe without readers) and POLLHUP anyway */
		struct pollfd pf = {.fd = o->fd};
		int gone = poll(&pf, 1, 0) == 1 && (pf.revents & (POLLERR | POLLHUP));
		/* bytes leave a pipe only by being read, whatever the reader did after; a socket's
		 * peer that closes drops what it had not read, so there 0 after a hangup proves
		 * nothing */
		if (!unread && (o->sink == SINK_PIPE || !gone))
			return TAKEN;
		if (gone)
			return READER_GONE;
		long until_extend_us = (long)keep_lease(o, m) * 1000;
		long us = pause_us < until_extend_us ? pause_us : until_extend_us;
		struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
		ppoll(&pf, 1, &ts, NULL); /* cut short if the reader leaves */
		if (pause_us < TAKEN_PAUSE_MAX_US)
			pause_us *= 2;
	}
}

/* The message's line: the payload and a newline, or with json one JSON object (a payload with a
 * newline in it stays one line). lanes: the queue's, for the message's lane (its id modulo the
 * lanes). 0 or -errno; *line is free()d by the caller. */
static int format_line(const struct shmq_msg *m, int json, uint32_t lanes, char **line, size_t *len)
{
	FILE *f = open_memstream(line, len);
	if (!f)
		return -errno;
	if (!json) {
		fwrite(m->data, 1, m->len, f);
		putc('\n', f);
	} else {
		fprintf(f,
			"{\"id\": %llu, \"lane\": %u, \"deliveries\": %u, \"enqueued_ns\": %llu, \"key\": ",
			(unsigned long long)m->id, (unsigned)(m->id % lanes), m->deliveries,
			(unsigned long long)m->enqueued_ns);
		if (m->key) {
			putc('"', f);
			cli_fput_json_bytes(f, m->key, m->key_len);
			putc('"', f);
		} else {
			fputs("null", f);
		}
		fputs(", \"payload\": \"", f);
		cli_fput_json_bytes(f, m->data, m->len);
		fputs("\"}\n", f);
	}
	int err = ferror(f);
	if (fclose(f) || err) {
		free(*line);
		*line = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Writes m's line and waits until its reader took it: TAKEN, READER_GONE or -errno. */
static int hand_over(struct out *o, struct shmq_msg *m, int json, uint32_t lanes)
{
	char *line;
	size_t len;
	int r = format_line(m, json, lanes, &line, &len);
	if (!r)
		r = write_all(o, m, line, len);
	free(line);
	if (!r && o->sink != SINK_FINAL)
		r = wait_taken(o, m);
	return r;
}

int cmd_recv(int argc, char **argv)
{
	const char *cmd = "recv";
	struct io_opts o = {.timeout_ms = -1};
	struct cli_args a;
	struct shmq_msg m;
	struct out out;
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
	if ((r = shmq_stats(q, &st))) {
		shmq_close(q);
		return cli_error(CLI_FAIL, cmd, "cannot read queue '%s': %s", a.name, cli_strerror(r));
	}
	uint32_t lanes = st.config.lanes ? st.config.lanes : 1;
	out_init(&out, q, st.config.lease_ms);
	/* shmq_recv also runs the queue's rate-limited reclaim pass (config.reclaim_interval_ms),
	 * which gives back messages whose consumer died or whose lease ran out */
	uint64_t arrived = 0; /* messages received, printed or not (--dedup skips some) */
	for (uint64_t got = 0; !o.count || got < o.count; got++) {
		r = shmq_recv(q, &m, o.timeout_ms);
		if (r == -EAGAIN) { /* MS passed with no message: done */
			r = arrived ? CLI_OK : CLI_NO_MESSAGE;
			break;
		}
		if (r) {
			r = cli_error(CLI_FAIL, cmd, "cannot receive: %s", cli_strerror(r));
			break;
		}
		arrived++;
		lease_began(&out);
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
		r = hand_over(&out, &m, o.json, lanes);
		if (r == READER_GONE) {
			/* not taken: back to the queue now rather than when the lease runs out. The
			 * reader chose to stop, as with --count: not an error */
			shmq_nack(q, &m, 0);
			r = CLI_OK;
			break;
		}
		if (r) {
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

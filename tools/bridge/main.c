/* SPDX-License-Identifier: MIT */
/* main.c: shmq-bridge's options, its NATS connection (reconnecting with backoff), signals, the
 * queue's identity and the --stats line. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "shmq_inspect.h"

volatile sig_atomic_t br_stop;
/* set before the connection is closed on exit: its disconnection is no news */
static volatile sig_atomic_t br_closing;

static const char usage[] =
	"usage: shmq-bridge NAME --to nats://HOST:PORT --subject S [--stream ST [--create]]\n"
	"       shmq-bridge NAME --from nats://HOST:PORT --subject S --durable D [--stream ST [--create]]\n"
	"    --to URL          receive from the shm queue NAME, publish to JetStream; a message is\n"
	"                      acked in NAME only after JetStream's PubAck\n"
	"    --from URL        pull from the durable consumer D, send into NAME (which needs a\n"
	"                      dedup table); a message is acked in JetStream only after the send\n"
	"    --subject S       the subject published to (--to) or consumed (--from)\n"
	"    --stream ST       the stream: checked at start-up (exit 3 when missing)\n"
	"    --create          create ST on S (file storage) if it does not exist\n"
	"    --durable D       --from: the durable pull consumer (created if missing)\n"
	"    --batch N         messages per batch, 1 to 1024 (default 256)\n"
	"    --ack-wait-ms MS  AckWait of a durable this bridge creates (default 30000)\n"
	"    --timeout-ms MS   how long one publish batch waits for its PubAcks (default 5000)\n"
	"    --stats-ms MS     print a stats line this often (default: only at exit)\n"
	"exit: 0 after SIGTERM/SIGINT (in-flight work drained), 1 runtime failure, 2 bad usage or\n"
	"URL, 3 missing stream, 4 server unreachable at start-up\n";

uint64_t br_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void br_sleep_ms(int ms)
{
	for (; ms > 0 && !br_stop; ms -= 10) {
		struct timespec ts = {0, (ms < 10 ? ms : 10) * 1000000L};
		nanosleep(&ts, NULL);
	}
}

void br_log(const struct bridge *b, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "shmq-bridge: %s: %s\n", b->o.name, line);
}

static const char *br_state(const struct bridge *b)
{
	if (!b->nc)
		return "disconnected";
	switch (natsConnection_Status(b->nc)) {
	case NATS_CONN_STATUS_CONNECTED:
		return "connected";
	case NATS_CONN_STATUS_RECONNECTING:
		return "reconnecting";
	case NATS_CONN_STATUS_DRAINING_SUBS:
	case NATS_CONN_STATUS_DRAINING_PUBS:
		return "draining";
	default:
		return "disconnected";
	}
}

void br_stats(struct bridge *b, int force)
{
	uint64_t now = br_now_ms();
	if (!force && (!b->o.stats_ms || now < b->next_stats_ms))
		return;
	b->next_stats_ms = now + (uint64_t)b->o.stats_ms;
	const struct br_counters *c = &b->c;
	if (b->o.to_js)
		fprintf(stderr,
			"shmq-bridge: %s -> %s %s: %s, received %" PRIu64 " published %" PRIu64
			" (duplicates %" PRIu64 ") acked %" PRIu64 " retries %" PRIu64 " errors %" PRIu64
			"\n",
			b->o.name, b->o.url, b->o.subject, br_state(b), c->received, c->published,
			c->duplicates, c->acked, c->retries, c->errors);
	else
		fprintf(stderr,
			"shmq-bridge: %s <- %s %s: %s, fetched %" PRIu64 " sent %" PRIu64
			" (suppressed %" PRIu64 ") js-acked %" PRIu64 " full-waits %" PRIu64
			" too-big %" PRIu64 " errors %" PRIu64 "\n",
			b->o.name, b->o.url, b->o.durable, br_state(b), c->fetched, c->sent, c->suppressed,
			c->js_acked, c->full_waits, c->too_big, c->errors);
}

static void on_signal(int sig)
{
	(void)sig;
	br_stop = 1;
}

/* nats://HOST:PORT (or tls://): the client accepts much more, and reports a typo only as "no
 * server available", so the form is checked here. 0 or -EINVAL. */
static int check_url(const char *url)
{
	const char *p = NULL;
	if (!strncmp(url, "nats://", 7))
		p = url + 7;
	else if (!strncmp(url, "tls://", 6))
		p = url + 6;
	if (!p || !*p)
		return -EINVAL;
	const char *at = strrchr(p, '@'); /* user:password@ */
	if (at)
		p = at + 1;
	const char *colon = strrchr(p, ':');
	if (!colon || colon == p)
		return -EINVAL;
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port < 1 || port > 65535)
		return -EINVAL;
	return 0;
}

static void on_disconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	struct bridge *b = closure; /* on a client thread: logs only, the counters are the main thread's */
	if (!br_closing)
		br_log(b, "disconnected from %s: reconnecting", b->o.url);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	br_log(closure, "reconnected to %s", ((struct bridge *)closure)->o.url);
}

/* Connects; afterwards the client reconnects for ever (100 ms apart, +-jitter), buffering what is
 * published meanwhile. Returns 0 or an exit code after printing the error. */
static int br_connect(struct bridge *b)
{
	natsOptions *o = NULL;
	natsStatus s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = natsOptions_SetURL(o, b->o.url);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 100);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectJitter(o, 100, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(o, 64 * 1024 * 1024);
	/* a fetch request written now rather than by the flusher thread: ~1 ms less per batch */
	if (s == NATS_OK && !b->o.to_js)
		s = natsOptions_SetSendAsap(o, true);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(o, on_disconnected, b);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(o, on_reconnected, b);
	if (s != NATS_OK) {
		natsOptions_Destroy(o);
		br_log(b, "bad URL '%s': %s", b->o.url, natsStatus_GetText(s));
		return BR_USAGE;
	}
	s = natsConnection_Connect(&b->nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		br_log(b, "cannot reach %s: %s", b->o.url, natsStatus_GetText(s));
		return BR_UNREACHABLE;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = b->o.timeout_ms;
	if (b->o.to_js)
		br_to_js_options(&jo);
	s = natsConnection_JetStream(&b->js, b->nc, &jo);
	if (s != NATS_OK) {
		br_log(b, "%s: JetStream: %s", b->o.url, natsStatus_GetText(s));
		return BR_FAIL;
	}
	return 0;
}

/* The queue's identity for Nats-Msg-Id: the host and queue name (hashed) and the segment's
 * creation time and creator, so it survives bridge restarts but differs for a queue unlinked and
 * made anew, whose message ids start over. */
static int br_identity(struct bridge *b)
{
	shmq_view_t *v = NULL;
	int err = shmq_view_open(b->o.name, &v);
	struct shmq_snapshot snap;
	if (!err)
		err = shmq_view_snapshot(v, &snap, NULL, 0);
	shmq_view_close(v);
	if (err < 0)
		return err;
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (const char *p = host; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
	h = (h ^ '/') * 0x100000001b3ull;
	for (const char *p = b->o.name; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
	snprintf(b->ident, sizeof(b->ident), "%016" PRIx64 "-%" PRIx64 "-%x", h, snap.created_ns,
		 (unsigned)snap.creator_pid);
	return 0;
}

/* The stream, checked (and made with --create) before anything moves. A server that has just
 * started may answer before its JetStream is up: errors other than "not found" are retried for
 * --timeout-ms. */
int br_check_stream(struct bridge *b)
{
	uint64_t deadline = br_now_ms() + (uint64_t)b->o.timeout_ms;
	for (;;) {
		jsStreamInfo *si = NULL;
		jsErrCode jerr = 0;
		natsStatus s = js_GetStreamInfo(&si, b->js, b->o.stream, NULL, &jerr);
		jsStreamInfo_Destroy(si);
		if (s == NATS_NOT_FOUND && b->o.create) {
			const char *subjects[] = {b->o.subject};
			jsStreamConfig sc;
			jsStreamConfig_Init(&sc);
			sc.Name = b->o.stream;
			sc.Subjects = subjects;
			sc.SubjectsLen = 1;
			sc.Storage = js_FileStorage;
			/* the same config twice is no error: the bridges of both ends may both create it */
			s = js_AddStream(&si, b->js, &sc, NULL, &jerr);
			jsStreamInfo_Destroy(si);
		}
		if (s == NATS_OK)
			return 0;
		if (s == NATS_NOT_FOUND) {
			br_log(b, "no stream %s on %s (--create makes it)", b->o.stream, b->o.url);
			return BR_NO_STREAM;
		}
		if (br_now_ms() >= deadline || br_stop) {
			br_log(b, "stream %s on %s: %s (%d)", b->o.stream, b->o.url, natsStatus_GetText(s),
			       (int)jerr);
			return BR_FAIL;
		}
		br_sleep_ms(100);
	}
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

enum {
	OPT_TO = 256,
	OPT_FROM,
	OPT_SUBJECT,
	OPT_STREAM,
	OPT_DURABLE,
	OPT_CREATE,
	OPT_BATCH,
	OPT_STATS,
	OPT_ACK_WAIT,
	OPT_TIMEOUT
};

static int parse(int argc, char **argv, struct br_opts *o)
{
	static const struct option longopts[] = {{"to", required_argument, NULL, OPT_TO},
						 {"from", required_argument, NULL, OPT_FROM},
						 {"subject", required_argument, NULL, OPT_SUBJECT},
						 {"stream", required_argument, NULL, OPT_STREAM},
						 {"durable", required_argument, NULL, OPT_DURABLE},
						 {"create", no_argument, NULL, OPT_CREATE},
						 {"batch", required_argument, NULL, OPT_BATCH},
						 {"stats-ms", required_argument, NULL, OPT_STATS},
						 {"ack-wait-ms", required_argument, NULL, OPT_ACK_WAIT},
						 {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	int batch = 256, opt;
	const char *from = NULL, *to = NULL;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_TO:
			to = optarg;
			break;
		case OPT_FROM:
			from = optarg;
			break;
		case OPT_SUBJECT:
			o->subject = optarg;
			break;
		case OPT_STREAM:
			o->stream = optarg;
			break;
		case OPT_DURABLE:
			o->durable = optarg;
			break;
		case OPT_CREATE:
			o->create = 1;
			break;
		case OPT_BATCH:
			if (parse_int(optarg, 1, BR_BATCH_MAX, &batch))
				return fprintf(stderr, "shmq-bridge: --batch: 1 to %d\n", BR_BATCH_MAX),
				       BR_USAGE;
			break;
		case OPT_STATS:
			if (parse_int(optarg, 1, 86400000, &o->stats_ms))
				return fprintf(stderr, "shmq-bridge: --stats-ms: 1 to 86400000\n"), BR_USAGE;
			break;
		case OPT_ACK_WAIT:
			if (parse_int(optarg, 100, 86400000, &o->ack_wait_ms))
				return fprintf(stderr, "shmq-bridge: --ack-wait-ms: 100 to 86400000\n"),
				       BR_USAGE;
			break;
		case OPT_TIMEOUT:
			if (parse_int(optarg, 10, 600000, &o->timeout_ms))
				return fprintf(stderr, "shmq-bridge: --timeout-ms: 10 to 600000\n"), BR_USAGE;
			break;
		case 'h':
			fputs(usage, stdout);
			return -1;
		default:
			fputs("try 'shmq-bridge --help'\n", stderr);
			return BR_USAGE;
		}
	}
	o->batch = (unsigned)batch;
	if (optind != argc - 1)
		return fprintf(stderr, "shmq-bridge: one queue NAME expected\n%s", usage), BR_USAGE;
	o->name = argv[optind];
	if (!to == !from)
		return fprintf(stderr, "shmq-bridge: %s: one of --to URL and --from URL\n", o->name),
		       BR_USAGE;
	o->to_js = to != NULL;
	o->url = to ? to : from;
	if (!o->subject)
		return fprintf(stderr, "shmq-bridge: %s: --subject S is required\n", o->name), BR_USAGE;
	if (!o->to_js && !o->durable)
		return fprintf(stderr, "shmq-bridge: %s: --from needs --durable D\n", o->name), BR_USAGE;
	if (o->create && !o->stream)
		return fprintf(stderr, "shmq-bridge: %s: --create needs --stream ST\n", o->name), BR_USAGE;
	if (check_url(o->url))
		return fprintf(stderr, "shmq-bridge: %s: bad URL '%s': expected nats://HOST:PORT\n", o->name,
			       o->url),
		       BR_USAGE;
	return 0;
}

/* The worker: the process that does the bridging, a child of the one started, which supervises
 * it (0 in the worker itself). */
static pid_t worker;

static void forward_signal(int sig)
{
	br_stop = 1;
	if (worker > 0)
		kill(worker, sig);
}

/* Runs the bridge in a child and starts it again when it crashes: a fault inside libnats (3.4.1
 * has been seen to abort on a double free after a reconnect) must not end the bridging, and
 * losing the worker at any instruction loses nothing (what it held comes back through shmq's
 * reclaim or JetStream's AckWait). A worker that exits, or dies of SIGKILL, SIGTERM or SIGINT,
 * ends the supervisor the same way. Returns -1 in the worker, else the exit status. */
static int supervise(struct bridge *b)
{
	struct sigaction sa = {.sa_handler = forward_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (int delay = 100;; delay = delay < 1000 ? delay * 2 : 2000) {
		pid_t parent = getpid();
		worker = fork();
		if (worker < 0)
			return -1; /* no child: bridge in this process */
		if (worker == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* the supervisor SIGKILLed: the worker too */
			if (getppid() != parent)
				_exit(BR_FAIL);
			return -1;
		}
		int st = 0;
		while (waitpid(worker, &st, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(st))
			return WEXITSTATUS(st);
		int sig = WTERMSIG(st);
		if (br_stop || sig == SIGKILL || sig == SIGTERM || sig == SIGINT) {
			signal(sig, SIG_DFL);
			raise(sig);
			return 128 + sig;
		}
		br_log(b, "the worker died of signal %d (%s): starting it again", sig, strsignal(sig));
		br_sleep_ms(delay);
		if (br_stop)
			return BR_OK;
	}
}

int main(int argc, char **argv)
{
	struct bridge b = {.o = {.ack_wait_ms = 30000, .timeout_ms = 5000}};
	int rc = parse(argc, argv, &b.o);
	if (rc)
		return rc < 0 ? 0 : rc;
#ifdef SHMQ_TEST
	/* SHMQ_BRIDGE_FAULT=point:nth: the test build SIGKILLs itself at the nth pass of point */
	const char *f = getenv("SHMQ_BRIDGE_FAULT");
	if (f && strchr(f, ':')) {
		static char point[64];
		snprintf(point, sizeof(point), "%.*s", (int)(strchr(f, ':') - f), f);
		shmq_fault_arm(point, (unsigned)atoi(strchr(f, ':') + 1));
	}
#endif
	signal(SIGPIPE, SIG_IGN);
	rc = supervise(&b);
	if (rc >= 0)
		return rc;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int err = shmq_open(b.o.name, &b.q);
	if (!err && b.o.to_js)
		err = br_identity(&b);
	if (err) {
		br_log(&b, "%s", shmq_strerror(err));
		rc = BR_FAIL;
		goto out;
	}
	rc = br_connect(&b);
	if (rc)
		goto out;
	rc = b.o.to_js ? br_to_js(&b) : br_from_js(&b);
out:
	br_closing = 1;
	jsCtx_Destroy(b.js);
	natsConnection_Destroy(b.nc);
	shmq_close(b.q);
	nats_Close();
	return rc;
}

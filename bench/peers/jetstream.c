/* SPDX-License-Identifier: MIT */
/*
 * jetstream.c: the "nats-jetstream" peer, a NATS JetStream stream with one durable pull consumer,
 * through the NATS C client (libnats 3.4) over TCP on 127.0.0.1.
 *
 * start() runs its own nats-server with JetStream on a free port, its store in a scratch directory
 * under $TMPDIR; stop() kills it (SIGTERM, SIGKILL after 2 s) and removes the directory. create()
 * makes the stream "shmqb_<tag>" (memory storage, like the Redis peer it has no persistence; the
 * server is not what is measured) on subject "shmqb.<tag>", and the durable pull consumer "d" with
 * explicit acks, AckWait JS_ACK_WAIT_MS and no limit on redeliveries.
 *
 * Senders publish synchronously (js_Publish waits for the server's ack, one round trip per
 * message): when send() returns the message is stored. Receivers bind to the durable consumer and
 * fetch one message at a time (natsSubscription_Fetch, batch 1); ack() is natsMsg_AckSync, so when
 * it returns the server has taken the ack and the message is not redelivered. A message fetched
 * and not acked (its receiver died) is redelivered by the server after AckWait.
 *
 * libnats starts threads and keeps global state, neither of which survives fork: the process that
 * forks never loads it. create() and destroy() run their administration in a short-lived child;
 * attach() connects afresh in whichever process calls it (after fork).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peers/peer.h"

#if __has_include(<nats/nats.h>)
#include <sys/prctl.h>
#include <sys/wait.h>

#include <nats/nats.h>

#include "lib/daemon.h"

/* A message fetched and not acked is redelivered this long after its delivery. */
#define JS_ACK_WAIT_MS 1000
/* Unacked messages the consumer may have out at once: each killed receiver can leave one behind
 * for up to AckWait, and the server stops delivering at the limit. */
#define JS_MAX_ACK_PENDING 65536
/* One fetch waits this long for a message before it asks again. */
#define JS_FETCH_TIMEOUT_MS 1000

struct peer_chan {
	char stream[96];
	char subject[96];
	size_t msg_size;
};

struct js_ep {
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub; /* receivers only */
	natsMsg *last;	       /* the message recv() returned last, until ack() */
	const struct peer_chan *c;
};

/* The server this process started (stop() in a forked child must not touch it). */
static struct daemon js_srv = {.server = "nats-server", .peer = "nats-jetstream"};
static char js_url[64]; /* nats://127.0.0.1:<port> */

/* nats-server is in /usr/sbin on Debian, which a non-root PATH may lack. */
static const char *js_server_path(void)
{
	if (daemon_in_path("nats-server"))
		return "nats-server";
	return access("/usr/sbin/nats-server", X_OK) ? NULL : "/usr/sbin/nats-server";
}

static const char *js_probe(void)
{
	if (js_srv.why[0])
		return js_srv.why;
	return js_server_path() ? NULL : "nats-server not installed";
}

static void js_stop(void) { daemon_stop(&js_srv, SIGTERM); }

static int js_start(void)
{
	const char *server = js_server_path();
	if (!server) {
		snprintf(js_srv.why, sizeof(js_srv.why), "nats-server not installed");
		return -ENOENT;
	}
	int err = daemon_prepare(&js_srv, "nats");
	if (err) {
		js_stop();
		return err;
	}
	snprintf(js_url, sizeof(js_url), "nats://127.0.0.1:%d", js_srv.port);
	char port[16];
	snprintf(port, sizeof(port), "%d", js_srv.port);
	const char *const argv[] = {"nats-server", "-js", "-a",	      "127.0.0.1", "-p",
				    port,	   "-sd", js_srv.dir, NULL};
	err = daemon_spawn(&js_srv, server, argv, DAEMON_QUIET);
	if (!err)
		err = daemon_wait_ready(&js_srv, daemon_tcp_listening, "listen");
	if (err)
		js_stop();
	return err;
}

static natsStatus js_connect(natsConnection **nc, jsCtx **js)
{
	natsOptions *o = NULL;
	natsStatus s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = natsOptions_SetURL(o, js_url);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 2000);
	/* write each request now rather than leave it to the flusher thread: without this a fetch
	 * takes about 1 ms */
	if (s == NATS_OK)
		s = natsOptions_SetSendAsap(o, true);
	if (s == NATS_OK)
		s = natsConnection_Connect(nc, o);
	if (s == NATS_OK)
		s = natsConnection_JetStream(js, *nc, NULL);
	natsOptions_Destroy(o);
	return s;
}

/* Child side of create(): the stream and its durable consumer. 0 when both exist. */
static int js_admin_create(const struct peer_chan *c)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_connect(&nc, &js);

	const char *subjects[] = {c->subject};
	jsStreamConfig sc;
	jsStreamConfig_Init(&sc);
	sc.Name = c->stream;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_MemoryStorage;
	/* JetStream may still be starting when the port opens: try for a few seconds */
	for (int i = 0; s == NATS_OK && i < 50; i++) {
		s = js_AddStream(NULL, js, &sc, NULL, &jerr);
		if (s == NATS_OK)
			break;
		if (i < 49)
			s = NATS_OK, usleep(100000);
	}
	if (s == NATS_OK) {
		jsConsumerConfig cc;
		jsConsumerConfig_Init(&cc);
		cc.Durable = "d";
		cc.AckPolicy = js_AckExplicit;
		cc.AckWait = (int64_t)JS_ACK_WAIT_MS * 1000000;
		cc.MaxAckPending = JS_MAX_ACK_PENDING;
		cc.MaxDeliver = -1;
		s = js_AddConsumer(NULL, js, c->stream, &cc, NULL, &jerr);
	}
	if (s != NATS_OK)
		fprintf(stderr, "nats-jetstream: create %s: %s (jetstream error %d)\n", c->stream,
			natsStatus_GetText(s), (int)jerr);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return s == NATS_OK ? 0 : 1;
}

/* Child side of destroy(). */
static int js_admin_delete(const struct peer_chan *c)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	natsStatus s = js_connect(&nc, &js);
	if (s == NATS_OK)
		s = js_DeleteStream(js, c->stream, NULL, NULL);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return s == NATS_OK ? 0 : 1;
}

/* Runs fn(c) in a child, so that libnats never starts in this process; 0 if it exited 0. */
static int js_in_child(int (*fn)(const struct peer_chan *), const struct peer_chan *c)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(fn(c));
	}
	int status = 0;
	for (int i = 0; i < 1500 && waitpid(pid, &status, WNOHANG) == 0; i++)
		usleep(10000);
	if (waitpid(pid, &status, WNOHANG) == 0) {
		fprintf(stderr, "nats-jetstream: administration timed out\n");
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return -ETIMEDOUT;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static struct peer_chan *js_create(const struct peer_params *p)
{
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	/* stream names may not hold '.', and subject tokens are split at it */
	snprintf(c->stream, sizeof(c->stream), "shmqb_%s", p->tag);
	for (char *s = c->stream; *s; s++)
		if (*s == '.' || *s == ' ' || *s == '*' || *s == '>')
			*s = '_';
	snprintf(c->subject, sizeof(c->subject), "shmqb.%s", c->stream + 6);
	c->msg_size = p->msg_size;
	if (js_in_child(js_admin_create, c)) {
		free(c);
		return NULL;
	}
	return c;
}

static void *js_attach(struct peer_chan *c, enum peer_role role)
{
	struct js_ep *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	ep->c = c;
	jsErrCode jerr = 0;
	natsStatus s = js_connect(&ep->nc, &ep->js);
	if (s == NATS_OK && role == PEER_RECEIVER) {
		jsSubOptions so;
		jsSubOptions_Init(&so);
		so.Stream = c->stream;
		so.Consumer = "d"; /* bind to the durable made by create(); never create or delete it */
		s = js_PullSubscribe(&ep->sub, ep->js, c->subject, "d", NULL, &so, &jerr);
	}
	if (s != NATS_OK) {
		fprintf(stderr, "nats-jetstream: attach: %s (jetstream error %d)\n", natsStatus_GetText(s),
			(int)jerr);
		natsSubscription_Destroy(ep->sub);
		jsCtx_Destroy(ep->js);
		natsConnection_Destroy(ep->nc);
		free(ep);
		return NULL;
	}
	return ep;
}

static int js_send(void *ep_, const void *msg, size_t len)
{
	struct js_ep *ep = ep_;
	jsPubAck *pa = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_Publish(&pa, ep->js, ep->c->subject, msg, (int)len, NULL, &jerr);
	jsPubAck_Destroy(pa);
	if (s == NATS_OK)
		return 0;
	fprintf(stderr, "nats-jetstream: publish: %s (jetstream error %d)\n", natsStatus_GetText(s),
		(int)jerr);
	return s == NATS_TIMEOUT ? -ETIMEDOUT : -EIO;
}

/* Blocks until a message comes (fetches of JS_FETCH_TIMEOUT_MS each). */
static int js_recv(void *ep_, void *buf, size_t cap)
{
	struct js_ep *ep = ep_;
	natsMsg_Destroy(ep->last); /* a previous message left unacked: the server redelivers it */
	ep->last = NULL;
	for (;;) {
		natsMsgList list = {0};
		jsErrCode jerr = 0;
		natsStatus s = natsSubscription_Fetch(&list, ep->sub, 1, JS_FETCH_TIMEOUT_MS, &jerr);
		if (s == NATS_TIMEOUT)
			continue;
		if (s != NATS_OK) {
			fprintf(stderr, "nats-jetstream: fetch: %s (jetstream error %d)\n",
				natsStatus_GetText(s), (int)jerr);
			return -EIO;
		}
		if (list.Count < 1) {
			natsMsgList_Destroy(&list);
			continue;
		}
		/* keep the message for ack(); the list lets go of it */
		ep->last = list.Msgs[0];
		list.Msgs[0] = NULL;
		natsMsgList_Destroy(&list);
		int len = natsMsg_GetDataLength(ep->last);
		if (len < 0 || (size_t)len > cap)
			return -EMSGSIZE;
		memcpy(buf, natsMsg_GetData(ep->last), (size_t)len);
		return len;
	}
}

static int js_ack(void *ep_)
{
	struct js_ep *ep = ep_;
	if (!ep->last)
		return -EINVAL;
	jsErrCode jerr = 0;
	natsStatus s = natsMsg_AckSync(ep->last, NULL, &jerr);
	natsMsg_Destroy(ep->last);
	ep->last = NULL;
	return s == NATS_OK ? 0 : s == NATS_TIMEOUT ? -ETIMEDOUT : -EIO;
}

static void js_detach(void *ep_)
{
	struct js_ep *ep = ep_;
	natsMsg_Destroy(ep->last);
	/* Destroy, not Unsubscribe: the durable consumer outlives this receiver */
	natsSubscription_Destroy(ep->sub);
	jsCtx_Destroy(ep->js);
	natsConnection_Destroy(ep->nc);
	free(ep);
}

static void js_destroy(struct peer_chan *c)
{
	js_in_child(js_admin_delete, c);
	free(c);
}

const struct peer_ops peer_jetstream = {
	.name = "nats-jetstream",
	.describe = "NATS JetStream over TCP on 127.0.0.1 (sync publish, durable pull consumer, fetch 1 / "
		    "AckSync, AckWait 1 s), libnats, memory storage",
	.flags = PEER_ACKS | PEER_BLOCKING | PEER_MPMC | PEER_NEEDS_DAEMON,
	.probe = js_probe,
	.start = js_start,
	.stop = js_stop,
	.create = js_create,
	.attach = js_attach,
	.send = js_send,
	.recv = js_recv,
	.ack = js_ack,
	.detach = js_detach,
	.destroy = js_destroy,
};

#else /* no libnats */

static const char *js_probe(void) { return "libnats-dev not installed"; }

const struct peer_ops peer_jetstream = {
	.name = "nats-jetstream",
	.describe = "NATS JetStream (not built: no libnats)",
	.flags = PEER_ACKS | PEER_BLOCKING | PEER_MPMC | PEER_NEEDS_DAEMON,
	.probe = js_probe,
};

#endif

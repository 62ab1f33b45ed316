/* SPDX-License-Identifier: MIT */
/*
 * from_js.c: JetStream -> shm. Fetches batches from a durable pull consumer and sends each
 * message into the queue with an idempotency key: the message's Shmq-Key header when it has one
 * (a key that came from a shmq queue), else "<stream>.<its creation time>:<stream sequence>" (a
 * stream deleted and made again starts its sequences over: its keys must not be the old
 * stream's, which the dedup window may still hold). Only a message that
 * was sent (or found a duplicate) is acked in JetStream, so a bridge killed between its send and
 * its ack gets the message redelivered after AckWait, and shmq's dedup window suppresses it.
 *
 * Backpressure: a full queue blocks the send (1 s at a time, telling JetStream the message is in
 * progress so its AckWait does not run out), and nothing more is fetched meanwhile.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

/* The stream's part of the keys, "<name>.<creation time>", for the stream named stream_name. */
static char stream_name[256], stream_id[48];

/* Reads the creation time of stream (once per stream name) into stream_id: the name (hashed with
 * FNV-1a when longer than 24 bytes) and the time in hex, at most 41 bytes, so that ":<sequence>"
 * fits in a key. 0, or -EAGAIN when the server did not answer (the message is tried again). */
static int stream_id_of(struct bridge *b, const char *stream)
{
	if (!strcmp(stream, stream_name) && stream_id[0])
		return 0;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetStreamInfo(&si, b->js, stream, NULL, &jerr);
	if (s != NATS_OK) {
		br_log(b, "stream %s on %s: %s (%d)", stream, b->o.url, natsStatus_GetText(s), (int)jerr);
		return -EAGAIN;
	}
	size_t sl = strlen(stream);
	if (sl <= 24) {
		snprintf(stream_id, sizeof(stream_id), "%s.%" PRIx64, stream, (uint64_t)si->Created);
	} else {
		uint64_t h = 0xcbf29ce484222325ull;
		for (size_t i = 0; i < sl; i++)
			h = (h ^ (unsigned char)stream[i]) * 0x100000001b3ull;
		snprintf(stream_id, sizeof(stream_id), "%016" PRIx64 ".%" PRIx64, h, (uint64_t)si->Created);
	}
	snprintf(stream_name, sizeof(stream_name), "%s", stream);
	jsStreamInfo_Destroy(si);
	return 0;
}

/* The idempotency key of msg into key[SHMQ_KEY_MAX]: its Shmq-Key header, else
 * "<stream id>:<stream sequence>". Its length, -EBADMSG (no JetStream metadata) or -EAGAIN. */
static int key_of(struct bridge *b, natsMsg *msg, char *key)
{
	const char *v = NULL;
	if (natsMsgHeader_Get(msg, BR_HDR_KEY, &v) == NATS_OK && v && *v && strlen(v) <= SHMQ_KEY_MAX) {
		memcpy(key, v, strlen(v));
		return (int)strlen(v);
	}
	if (natsMsgHeader_Get(msg, BR_HDR_KEY "-Hex", &v) == NATS_OK && v) {
		size_t n = strlen(v) / 2;
		if (n && n <= SHMQ_KEY_MAX) {
			for (size_t i = 0; i < n; i++) {
				unsigned x;
				if (sscanf(v + 2 * i, "%2x", &x) != 1)
					goto seq;
				key[i] = (char)x;
			}
			return (int)n;
		}
	}
seq:;
	jsMsgMetaData *md = NULL;
	if (natsMsg_GetMetaData(&md, msg) != NATS_OK)
		return -EBADMSG;
	int n = stream_id_of(b, md->Stream);
	if (!n)
		n = snprintf(key, SHMQ_KEY_MAX, "%s:%" PRIu64, stream_id, md->Sequence.Stream);
	jsMsgMetaData_Destroy(md);
	return n;
}

/* Sends msg into the queue, waiting while it is full. 0 (sent or suppressed), -EMSGSIZE, -ENOTSUP,
 * -EBADMSG (not a JetStream delivery), -EAGAIN (its stream's creation time could not be read), -EINTR (a stop
 * request came while the queue was full), other -errno from shmq_send_keyed. */
static int send_one(struct bridge *b, natsMsg *msg)
{
	char key[SHMQ_KEY_MAX];
	int kn = key_of(b, msg, key);
	if (kn <= 0)
		return kn < 0 ? kn : -EBADMSG;
	size_t klen = (size_t)kn;
	const char *route = NULL;
	if (natsMsgHeader_Get(msg, BR_HDR_ROUTE, &route) != NATS_OK || !route || !*route ||
	    strlen(route) > SHMQ_KEY_MAX)
		route = NULL;
	const void *data = natsMsg_GetData(msg);
	int len = natsMsg_GetDataLength(msg);
	if (len < 0)
		return -EBADMSG;
	for (int waited = 0;; waited = 1) {
		int rc = route ? shmq_send_keyed_routed(b->q, route, strlen(route), key, klen, data,
							(size_t)len, 1000, NULL)
			       : shmq_send_keyed(b->q, key, klen, data, (size_t)len, 1000, NULL);
		if (rc == SHMQ_DUPLICATE) {
			b->c.suppressed++;
			return 0;
		}
		if (rc == 0) {
			b->c.sent++;
			return 0;
		}
		if (rc != -EAGAIN)
			return rc;
		b->c.full_waits += !waited;
		if (br_stop)
			return -EINTR;
		natsMsg_InProgress(msg, NULL); /* restarts its AckWait */
		br_stats(b, 0);
	}
}

static int subscribe(struct bridge *b, natsSubscription **sub)
{
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = b->o.stream;
	so.Config.AckPolicy = js_AckExplicit;
	so.Config.AckWait = (int64_t)b->o.ack_wait_ms * 1000000;
	so.Config.MaxAckPending = 65536;
	so.Config.MaxDeliver = -1;
	jsErrCode jerr = 0;
	natsStatus s = js_PullSubscribe(sub, b->js, b->o.subject, b->o.durable, NULL, &so, &jerr);
	if (s == NATS_OK)
		return 0;
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
		br_log(b, "no stream %s%son %s", b->o.stream ? b->o.stream : "takes subject ",
		       b->o.stream ? " " : b->o.subject, b->o.url);
		return BR_NO_STREAM;
	}
	br_log(b, "durable %s on %s: %s (%d)", b->o.durable, b->o.url, natsStatus_GetText(s), (int)jerr);
	return BR_FAIL;
}

int br_from_js(struct bridge *b)
{
	natsSubscription *sub = NULL;
	int rc = b->o.stream ? br_check_stream(b) : 0;
	if (!rc)
		rc = subscribe(b, &sub);
	if (rc)
		return rc;
	int backoff = 50;
	while (!br_stop) {
		br_stats(b, 0);
		natsMsgList list = {0};
		jsErrCode jerr = 0;
		natsStatus s = natsSubscription_Fetch(&list, sub, (int)b->o.batch, 500, &jerr);
		if (s == NATS_TIMEOUT)
			continue;
		if (s != NATS_OK) {
			b->c.errors++;
			br_log(b, "fetch from %s: %s (%d); retrying in %d ms", b->o.durable,
			       natsStatus_GetText(s), (int)jerr, backoff);
			br_sleep_ms(backoff);
			backoff = backoff < 1000 ? backoff * 2 : 2000;
			continue;
		}
		backoff = 50;
		if (list.Count < 0 || list.Count > (int)b->o.batch) {
			/* libnats 3.4.1 has returned a count past the array it allocated (seen once a
			 * reconnect raced a fetch): only the first batch entries are ours to read and to
			 * free; what lies beyond is redelivered after AckWait */
			br_log(b, "fetch returned %d messages for a batch of %u: %u kept", list.Count,
			       b->o.batch, list.Count < 0 ? 0 : b->o.batch);
			b->c.errors++;
			list.Count = list.Count < 0 ? 0 : (int)b->o.batch;
		}
		b->c.fetched += (uint64_t)list.Count;
		for (int i = 0; i < list.Count; i++) {
			natsMsg *msg = list.Msgs[i];
			if (rc == BR_OK && !br_stop) {
				int err = send_one(b, msg);
				if (!err) {
					SHMQ_FAULT("bridge-in-sent");
					b->c.js_acked += natsMsg_Ack(msg, NULL) == NATS_OK;
					continue;
				}
				if (err == -EMSGSIZE) {
					b->c.too_big++;
					br_log(b, "message of %d bytes is too big for the queue: terminated",
					       natsMsg_GetDataLength(msg));
					natsMsg_Term(msg, NULL);
					continue;
				}
				if (err == -ENOTSUP)
					br_log(b, "the queue has no dedup table: make it with "
						  "--dedup-window-ms > 0");
				else if (err == -EBADMSG)
					br_log(b, "a message without JetStream metadata: skipped");
				else if (err != -EINTR &&
					 err != -EAGAIN) /* -EAGAIN: logged by stream_id_of */
					br_log(b, "send: %s", shmq_strerror(err));
				if (err != -EINTR) {
					b->c.errors++;
					if (err == -ENOTSUP || err == -EPROTO || err == -EINVAL)
						rc = BR_FAIL; /* no dedup table, a corrupt queue: stop */
				}
			}
			natsMsg_Nak(msg, NULL); /* not sent: redelivered now rather than after AckWait */
		}
		natsMsgList_Destroy(&list);
		if (rc != BR_OK)
			break;
	}
	/* the acks and naks still in the client's buffer go out before the bridge exits */
	natsConnection_FlushTimeout(b->nc, 2000);
	natsSubscription_Destroy(sub);
	br_stats(b, 1);
	return rc;
}

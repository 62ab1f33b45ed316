/* SPDX-License-Identifier: MIT */
/*
 * to_js.c: shm -> JetStream. A batch received from the queue is published asynchronously, each
 * message with Nats-Msg-Id "<queue identity>-<message id>"; when the batch's PubAcks are in (or
 * the wait timed out) the acknowledged messages are acked in shm and the others published again,
 * under the same leases (extended as they age), with a backoff of 50 ms doubling to 2 s. Holding
 * the leases rather than nacking keeps a JetStream outage from using up delivery counts and
 * dead-lettering the queue.
 *
 * A bridge killed anywhere leaves its leases to shmq's reclaim (the kernel drops its lock); the
 * next receiver publishes them again with the same Msg-Ids, and the stream's duplicate window
 * (2 min by default) drops the ones it stored already. So the stream holds each message once as
 * long as a dead bridge is replaced within that window.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

enum {
	PUB_PENDING = 0,
	PUB_ACKED = 1,
	PUB_DUPLICATE = 2,
	PUB_DONE = 3
};

/* The batch in flight. The PubAck handler runs on a client thread: mu orders its writes of
 * status[] before the main thread's reads. */
static struct {
	pthread_mutex_t mu;
	uint64_t id[BR_BATCH_MAX];
	int status[BR_BATCH_MAX];
	unsigned n;
	uint64_t failed; /* negative PubAcks (their text logged once per batch) */
	char why[160];
} ob = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The message id at the end of a Nats-Msg-Id, or UINT64_MAX. */
static uint64_t msgid_of(natsMsg *msg)
{
	const char *v = NULL;
	if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &v) != NATS_OK || !v)
		return UINT64_MAX;
	const char *dash = strrchr(v, '-');
	return dash ? strtoull(dash + 1, NULL, 16) : UINT64_MAX;
}

static void on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void)js;
	(void)closure;
	uint64_t id = msgid_of(msg);
	pthread_mutex_lock(&ob.mu);
	for (unsigned i = 0; i < ob.n; i++) {
		if (ob.id[i] != id || ob.status[i] != PUB_PENDING)
			continue;
		if (pa)
			ob.status[i] = pa->Duplicate ? PUB_DUPLICATE : PUB_ACKED;
		break;
	}
	if (!pa && pae) {
		ob.failed++;
		snprintf(ob.why, sizeof(ob.why), "%s (%d)",
			 pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err), (int)pae->ErrCode);
	}
	pthread_mutex_unlock(&ob.mu);
	natsMsg_Destroy(msg);
}

void br_to_js_options(jsOptions *jo)
{
	jo->PublishAsync.AckHandler = on_puback;
	jo->PublishAsync.MaxPending = BR_BATCH_MAX * 2;
}

/* Whether a key can go as a header value as it is (printable ASCII, no CR/LF). */
static int printable(const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return 0;
	return 1;
}

static natsStatus publish_one(struct bridge *b, const struct shmq_msg *m)
{
	natsMsg *msg = NULL;
	char id[96], key[2 * SHMQ_KEY_MAX + 1];
	snprintf(id, sizeof(id), "%s-%" PRIx64, b->ident, m->id);
	natsStatus s = natsMsg_Create(&msg, b->o.subject, NULL, m->data, (int)m->len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
	if (s == NATS_OK && m->key && m->key_len <= SHMQ_KEY_MAX) {
		if (printable(m->key, m->key_len)) {
			snprintf(key, sizeof(key), "%.*s", (int)m->key_len, (const char *)m->key);
			s = natsMsgHeader_Set(msg, BR_HDR_KEY, key);
		} else {
			for (uint32_t i = 0; i < m->key_len; i++)
				snprintf(key + 2 * i, 3, "%02x", ((const unsigned char *)m->key)[i]);
			s = natsMsgHeader_Set(msg, BR_HDR_KEY "-Hex", key);
		}
	}
	if (s == NATS_OK)
		s = js_PublishMsgAsync(b->js, &msg, NULL);
	natsMsg_Destroy(msg); /* NULL when the client took it */
	return s;
}

/* Publishes m[0..n) until JetStream has acked each, acking each in shm as it is. Returns 0, or 1
 * when a stop request cut the retries short (the rest were nacked for immediate redelivery). */
static int publish_held(struct bridge *b, struct shmq_msg *m, unsigned n, uint32_t lease_ms)
{
	static struct shmq_msg done[BR_BATCH_MAX];
	pthread_mutex_lock(&ob.mu);
	for (unsigned i = 0; i < n; i++) {
		ob.id[i] = m[i].id;
		ob.status[i] = PUB_PENDING;
	}
	ob.n = n;
	ob.failed = 0;
	pthread_mutex_unlock(&ob.mu);

	int backoff = 50;
	uint64_t leased_at = br_now_ms();
	for (unsigned left = n;;) {
		natsStatus s = NATS_OK;
		for (unsigned i = 0; i < n && s == NATS_OK; i++) {
			pthread_mutex_lock(&ob.mu);
			int st = ob.status[i];
			pthread_mutex_unlock(&ob.mu);
			if (st == PUB_PENDING)
				s = publish_one(b, &m[i]);
		}
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = b->o.timeout_ms;
		natsStatus cs = js_PublishAsyncComplete(b->js, &po);
		if (cs != NATS_OK) {
			/* what was not acked in time goes back to PENDING: published again below, its late
			 * PubAck (if the server stored it) dropped by the client */
			natsMsgList pending = {0};
			if (js_PublishAsyncGetPendingList(&pending, b->js) == NATS_OK)
				natsMsgList_Destroy(&pending);
		}
		unsigned k = 0;
		pthread_mutex_lock(&ob.mu);
		for (unsigned i = 0; i < n; i++) {
			if (ob.status[i] == PUB_ACKED || ob.status[i] == PUB_DUPLICATE) {
				b->c.published++;
				b->c.duplicates += ob.status[i] == PUB_DUPLICATE;
				ob.status[i] = PUB_DONE;
				done[k++] = m[i];
			}
		}
		uint64_t failed = ob.failed;
		ob.failed = 0;
		char why[sizeof(ob.why)];
		memcpy(why, ob.why, sizeof(why));
		pthread_mutex_unlock(&ob.mu);
		if (k) {
			SHMQ_FAULT("bridge-out-pubacked");
			int acked = shmq_ack_batch(b->q, done, k);
			b->c.acked += acked > 0 ? (uint64_t)acked : 0;
			left -= k;
		}
		if (!left)
			return 0;

		b->c.retries += left;
		b->c.errors++;
		if (failed)
			br_log(b, "publish to %s: %s; retrying %u", b->o.subject, why, left);
		else
			br_log(b, "publish to %s: %s; retrying %u", b->o.subject,
			       natsStatus_GetText(s != NATS_OK	  ? s
						  : cs != NATS_OK ? cs
								  : NATS_ERR),
			       left);
		if (br_stop) {
			pthread_mutex_lock(&ob.mu);
			for (unsigned i = 0; i < n; i++)
				if (ob.status[i] == PUB_PENDING)
					shmq_nack(b->q, &m[i], 0);
			pthread_mutex_unlock(&ob.mu);
			return 1;
		}
		br_sleep_ms(backoff);
		backoff = backoff < 1000 ? backoff * 2 : 2000;
		br_stats(b, 0);
		if (br_now_ms() - leased_at > lease_ms / 2) {
			pthread_mutex_lock(&ob.mu);
			for (unsigned i = 0; i < n; i++)
				if (ob.status[i] == PUB_PENDING)
					shmq_extend(b->q, &m[i], 0);
			pthread_mutex_unlock(&ob.mu);
			leased_at = br_now_ms();
		}
	}
}

int br_to_js(struct bridge *b)
{
	if (b->o.stream) {
		int rc = br_check_stream(b);
		if (rc)
			return rc;
	}
	struct shmq_stats st;
	int err = shmq_stats(b->q, &st);
	uint32_t lease_ms = err ? 30000 : st.config.lease_ms;
	struct shmq_msg *m = calloc(b->o.batch, sizeof(*m));
	if (!m)
		return BR_FAIL;
	int rc = BR_OK;
	while (!br_stop) {
		br_stats(b, 0);
		int n = shmq_recv_batch(b->q, m, b->o.batch, 200);
		if (n == -EAGAIN)
			continue;
		if (n < 0) {
			br_log(b, "receive: %s", shmq_strerror(n));
			rc = BR_FAIL;
			break;
		}
		b->c.received += (uint64_t)n;
		if (publish_held(b, m, (unsigned)n, lease_ms))
			break;
	}
	free(m);
	br_stats(b, 1);
	return rc;
}

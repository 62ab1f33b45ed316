/* SPDX-License-Identifier: MIT */
/*
 * boost.cc: the "boost-ipc" peer, boost::interprocess::message_queue (a ring of fixed-size slots in
 * a shared-memory segment, /dev/shm/shmqb-<tag>, guarded by one process-shared mutex and two
 * condition variables).
 *
 * create() makes the queue (params.depth messages, 0: BOOST_DEFAULT_DEPTH, of msg_size bytes) and
 * drops its own mapping; each attach() opens the queue by name in the calling process, so a receiver
 * that replaces a SIGKILLed one simply opens it again, and destroy() removes the name whether or not
 * anyone attached. send/receive block on the condition variables; busy-poll mode spins on
 * try_send/try_receive, which take the mutex on every try. Several senders and receivers may share
 * the queue (PEER_MPMC).
 *
 * Boost's mutex is not robust: a process killed while it holds it (inside send or receive) leaves it
 * locked, and every later send and receive on that queue blocks for ever. The crash bench sees that
 * as a wedged queue, which is what it is; destroy() still works, as it takes no lock.
 *
 * This is the C boundary: every exception is caught here and becomes -EIO (or NULL) plus one line
 * on stderr. Without the Boost headers at build time the peer still links and probe() says why.
 */
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

extern "C" {
#include "peers/peer.h"
}

#if __has_include(<boost/interprocess/ipc/message_queue.hpp>)
#include <boost/interprocess/ipc/message_queue.hpp>

namespace bip = boost::interprocess;

struct peer_chan {
	char name[80]; /* "shmqb-<tag>" */
	bool busy;
};

namespace
{

constexpr unsigned BOOST_DEFAULT_DEPTH = 1024;

struct boost_ep {
	bip::message_queue *q;
	bool busy;
};

const char *boost_probe() { return nullptr; }

void boost_name(char *out, size_t cap, const char *tag)
{
	snprintf(out, cap, "shmqb-%s", tag);
	for (char *s = out; *s; s++)
		if (*s == '/')
			*s = '_';
}

struct peer_chan *boost_create(const struct peer_params *p)
{
	struct peer_chan *c = new (std::nothrow) peer_chan();
	if (!c) {
		fprintf(stderr, "boost-ipc: out of memory\n");
		return nullptr;
	}
	boost_name(c->name, sizeof(c->name), p->tag);
	c->busy = !p->blocking;
	try {
		/* the tag is unique per run: a queue of that name is a leftover of a killed run */
		bip::message_queue::remove(c->name);
		bip::message_queue q(bip::create_only, c->name, p->depth ? p->depth : BOOST_DEFAULT_DEPTH,
				     p->msg_size);
	} catch (const std::exception &e) {
		fprintf(stderr, "boost-ipc: create %s: %s\n", c->name, e.what());
		delete c;
		return nullptr;
	} catch (...) {
		fprintf(stderr, "boost-ipc: create %s: unknown exception\n", c->name);
		delete c;
		return nullptr;
	}
	return c;
}

void *boost_attach(struct peer_chan *c, enum peer_role)
{
	boost_ep *ep = new (std::nothrow) boost_ep();
	if (!ep)
		return nullptr;
	ep->busy = c->busy;
	try {
		ep->q = new bip::message_queue(bip::open_only, c->name);
		return ep;
	} catch (const std::exception &e) {
		fprintf(stderr, "boost-ipc: open %s: %s\n", c->name, e.what());
	} catch (...) {
		fprintf(stderr, "boost-ipc: open %s: unknown exception\n", c->name);
	}
	delete ep;
	return nullptr;
}

int boost_send(void *ep_, const void *msg, size_t len)
{
	boost_ep *ep = static_cast<boost_ep *>(ep_);
	if (len > ep->q->get_max_msg_size())
		return -EMSGSIZE; /* Boost would throw */
	try {
		if (!ep->busy)
			ep->q->send(msg, len, 0);
		else
			while (!ep->q->try_send(msg, len, 0))
				;
		return 0;
	} catch (const std::exception &e) {
		fprintf(stderr, "boost-ipc: send: %s\n", e.what());
	} catch (...) {
		fprintf(stderr, "boost-ipc: send: unknown exception\n");
	}
	return -EIO;
}

int boost_recv(void *ep_, void *buf, size_t cap)
{
	boost_ep *ep = static_cast<boost_ep *>(ep_);
	bip::message_queue::size_type got = 0;
	unsigned prio;
	if (cap < ep->q->get_max_msg_size())
		return -EMSGSIZE; /* Boost would throw */
	try {
		if (!ep->busy)
			ep->q->receive(buf, cap, got, prio);
		else
			while (!ep->q->try_receive(buf, cap, got, prio))
				;
		return static_cast<int>(got);
	} catch (const std::exception &e) {
		fprintf(stderr, "boost-ipc: receive: %s\n", e.what());
	} catch (...) {
		fprintf(stderr, "boost-ipc: receive: unknown exception\n");
	}
	return -EIO;
}

void boost_detach(void *ep_)
{
	boost_ep *ep = static_cast<boost_ep *>(ep_);
	if (!ep)
		return;
	try {
		delete ep->q; /* unmaps; the queue lives on until destroy */
	} catch (...) {
		fprintf(stderr, "boost-ipc: detach: exception while closing\n");
	}
	delete ep;
}

void boost_destroy(struct peer_chan *c)
{
	if (!c)
		return;
	try {
		bip::message_queue::remove(c->name);
	} catch (...) {
		fprintf(stderr, "boost-ipc: remove %s: exception\n", c->name);
	}
	delete c;
}

} // namespace

/* positional (C++17 has no designated initializers): constant-initialized, no static constructor */
extern "C" const struct peer_ops peer_boost = {
	"boost-ipc",
	"boost::interprocess::message_queue in /dev/shm, one send()/receive() per message (try_* spin "
	"when busy-polling) under one process-shared, non-robust mutex",
	PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING,
	boost_probe,
	nullptr, /* start */
	nullptr, /* stop */
	boost_create,
	boost_attach,
	boost_send,
	boost_recv,
	nullptr, /* ack */
	nullptr, /* send_batch */
	nullptr, /* recv_batch */
	boost_detach,
	boost_destroy,
};

#else /* no Boost.Interprocess */

namespace
{

const char *boost_probe() { return "libboost-dev not installed"; }

struct peer_chan *boost_create(const struct peer_params *)
{
	fprintf(stderr, "boost-ipc: %s\n", boost_probe());
	return nullptr;
}

} // namespace

extern "C" const struct peer_ops peer_boost = {
	"boost-ipc",
	"boost::interprocess::message_queue (not built: no Boost.Interprocess headers)",
	PEER_MPMC | PEER_BUSY_POLL | PEER_BLOCKING,
	boost_probe,
	nullptr, /* start */
	nullptr, /* stop */
	boost_create,
	nullptr, /* attach, and all that follow: create() never succeeds */
	nullptr,
	nullptr,
	nullptr,
	nullptr,
	nullptr,
	nullptr,
	nullptr,
};

#endif

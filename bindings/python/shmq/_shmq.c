/* SPDX-License-Identifier: MIT */
/*
 * _shmq.c: the CPython extension under the `shmq` package (bindings/python/shmq/__init__.py adds
 * the Pythonic layer: asyncio, the worker decorator, the Duplicate and Verdict types).
 *
 * A C extension rather than cffi or ctypes because the per-call cost is the figure that matters
 * for a queue whose C calls take ~100 ns: METH_FASTCALL methods, no argument tuples, no wrapper
 * objects between Python and shmq_recv (README.md, "Python", has the measured figures).
 *
 * Lifetimes, so that Python code can never touch unmapped memory:
 *   - A Message holds a reference to its Queue and counts as one of the queue's `users` until it
 *     is settled (ack, nack, reject, ack_done, or a lost lease) and no buffer of it is exported.
 *   - Queue.close() stops new calls at once; the handle itself (its mapping) is closed when the
 *     last user is gone: unsettled messages may still be settled after close().
 *   - A blocking call counts as a user while it runs without the GIL, and a Worker while it lives.
 *   - msg.payload is a memoryview the message releases when it is settled, so that a view kept past
 *     the settle raises ValueError instead of reading a slot that may hold another message by then.
 *     A buffer the message cannot release (a slice of that view, a memoryview(msg) of the caller's,
 *     a buffer taken from either) makes the settle raise BufferError and change nothing, as
 *     resizing a bytearray with a live view does; once settled, the payload can no longer be
 *     exported.
 * Every counter here is touched only with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "shmq.h"
#include "shmq_inspect.h"
#include "shmq_worker.h"

/* The descriptor calls (shmq_fd, shmq_fd_arm) are declared weak so that this module also builds
 * and loads against a library without them: Queue.fileno() then raises ENOSYS and shmq.HAVE_FD is
 * False (the asyncio layer needs them). */
int shmq_fd(shmq_t *q) __attribute__((weak));
int shmq_fd_arm(shmq_t *q) __attribute__((weak));

#define SLICE_MS 100 /* a blocking call looks for signals (KeyboardInterrupt) this often */
#define BATCH_MAX 1024

static PyObject *Error, *Full, *LeaseLost;
static PyObject *DuplicateType; /* shmq.Duplicate, registered by __init__.py */

/* ---- errors ------------------------------------------------------------------------------------ */

/* Raises the exception for -err: Full for -EAGAIN from a send, LeaseLost for -ESTALE, else Error;
 * each an OSError carrying errno and shmq's text. */
static PyObject *raise_err(int err, PyObject *type)
{
	if (err < 0)
		err = -err;
	if (!type)
		type = err == ESTALE ? LeaseLost : Error;
	PyObject *args = Py_BuildValue("(is)", err, shmq_strerror(-err));
	if (args) {
		PyErr_SetObject(type, args);
		Py_DECREF(args);
	}
	return NULL;
}

/* timeout_ms: None or a negative int waits forever; else milliseconds (int). */
static int parse_timeout(PyObject *o, int *out)
{
	if (!o || o == Py_None) {
		*out = -1;
		return 0;
	}
	long v = PyLong_AsLong(o);
	if (v == -1 && PyErr_Occurred())
		return -1;
	*out = v < 0 ? -1 : v > INT32_MAX ? INT32_MAX : (int)v;
	return 0;
}

/* Tiny argument parser for METH_FASTCALL | METH_KEYWORDS: fills out[0..n) from positional and
 * keyword arguments named by names[]; out[i] stays NULL when not given. */
static int parse_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
		      const char *const *names, int n, int required, PyObject **out)
{
	if (nargs > n) {
		PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn, n, nargs);
		return -1;
	}
	for (int i = 0; i < n; i++)
		out[i] = i < nargs ? args[i] : NULL;
	if (kwnames) {
		Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
		for (Py_ssize_t k = 0; k < nk; k++) {
			const char *kw = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
			int i;
			if (!kw)
				return -1;
			for (i = 0; i < n && strcmp(kw, names[i]) != 0; i++)
				;
			if (i == n) {
				PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%s'",
					     fn, kw);
				return -1;
			}
			if (out[i]) {
				PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
					     fn, kw);
				return -1;
			}
			out[i] = args[nargs + k];
		}
	}
	for (int i = 0; i < required; i++) {
		if (!out[i]) {
			PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
			return -1;
		}
	}
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- Queue ------------------------------------------------------------------------------------- */

typedef struct {
	PyObject_HEAD
	shmq_t *q;
	Py_ssize_t users; /* unsettled messages, calls waiting without the GIL, workers */
	int closing;	  /* close() was called: no new calls; shmq_close when users reaches 0 */
	PyObject *name;
	PyObject *weakrefs;
} QueueObject;

static PyTypeObject QueueType, MessageType, WorkerType;

/* Detaches once close() was called and nothing uses the mapping any more. */
static void queue_maybe_close(QueueObject *self)
{
	if (self->users == 0 && self->closing && self->q) {
		shmq_close(self->q);
		self->q = NULL;
	}
}

static void queue_unuse(QueueObject *self)
{
	self->users--;
	queue_maybe_close(self);
}

static int queue_check(QueueObject *self)
{
	if (!self->q || self->closing) {
		PyErr_SetString(PyExc_ValueError, "operation on a closed queue");
		return -1;
	}
	return 0;
}

/* Runs fn(ctx, timeout) with the shmq semantics of timeout_ms: a first try with the GIL held and
 * no wait (the common case of a message or a free slot being there costs no GIL release), then
 * waits without the GIL in slices of SLICE_MS, looking for signals between slices so that ^C
 * interrupts a blocking receive. Returns fn's result, or INT_MIN with a Python exception set.
 * A close() from another thread meanwhile does not detach: the caller wraps what it received
 * (each message holds the mapping), then calls queue_maybe_close. */
typedef int (*shmq_call_fn)(shmq_t *q, void *ctx, int timeout_ms);

static int call_waiting(QueueObject *self, shmq_call_fn fn, void *ctx, int timeout_ms)
{
	int r = fn(self->q, ctx, 0);
	if (r != -EAGAIN || timeout_ms == 0)
		return r;
	uint64_t deadline = timeout_ms > 0 ? now_ms() + (uint64_t)timeout_ms : 0;
	for (;;) {
		int slice = SLICE_MS;
		if (timeout_ms > 0) {
			uint64_t now = now_ms();
			if (now >= deadline)
				return -EAGAIN;
			if (deadline - now < (uint64_t)slice)
				slice = (int)(deadline - now);
		}
		shmq_t *q = self->q;
		self->users++; /* keeps the mapping while another thread may call close() */
		Py_BEGIN_ALLOW_THREADS
			r = fn(q, ctx, slice);
		Py_END_ALLOW_THREADS
		self->users--;
		if (r != -EAGAIN)
			return r;
		if (PyErr_CheckSignals() < 0)
			return INT_MIN;
		if (self->closing) {
			PyErr_SetString(PyExc_ValueError, "the queue was closed while waiting");
			return INT_MIN;
		}
	}
}

static QueueObject *queue_alloc(PyTypeObject *cls, PyObject *name)
{
	QueueObject *self = (QueueObject *)cls->tp_alloc(cls, 0);
	if (self) {
		Py_INCREF(name);
		self->name = name;
	}
	return self;
}

static int set_u32(PyObject *kw, const char *key, uint32_t *out)
{
	PyObject *v = PyDict_GetItemString(kw, key);
	if (!v || v == Py_None)
		return 0;
	unsigned long x = PyLong_AsUnsignedLong(v);
	if (x == (unsigned long)-1 && PyErr_Occurred())
		return -1;
	if (x > UINT32_MAX) {
		PyErr_Format(PyExc_OverflowError, "%s out of range", key);
		return -1;
	}
	*out = (uint32_t)x;
	if (PyDict_DelItemString(kw, key) < 0)
		return -1;
	return 0;
}

static const char *const dispatch_names[] = {"round_robin", "random", "weighted", "key_hash", "least_loaded"};

static int config_from_kwargs(PyObject *kwargs, struct shmq_config *cfg)
{
	shmq_config_init(cfg);
	if (!kwargs)
		return 0;
	PyObject *kw = PyDict_Copy(kwargs);
	if (!kw)
		return -1;
	uint32_t mode = cfg->mode;
	int rc = -1;
	if (set_u32(kw, "capacity", &cfg->capacity) || set_u32(kw, "slot_size", &cfg->slot_size) ||
	    set_u32(kw, "lease_ms", &cfg->lease_ms) || set_u32(kw, "max_deliveries", &cfg->max_deliveries) ||
	    set_u32(kw, "retry_base_ms", &cfg->retry_base_ms) ||
	    set_u32(kw, "retry_max_ms", &cfg->retry_max_ms) || set_u32(kw, "mode", &mode) ||
	    set_u32(kw, "dlq_max", &cfg->dlq_max) ||
	    set_u32(kw, "reclaim_interval_ms", &cfg->reclaim_interval_ms) ||
	    set_u32(kw, "dedup_window_ms", &cfg->dedup_window_ms) ||
	    set_u32(kw, "dedup_entries", &cfg->dedup_entries) || set_u32(kw, "lanes", &cfg->lanes))
		goto out;
	cfg->mode = (mode_t)mode;
	PyObject *d = PyDict_GetItemString(kw, "dispatch");
	if (d && d != Py_None) {
		if (PyUnicode_Check(d)) {
			const char *s = PyUnicode_AsUTF8(d);
			unsigned i;
			if (!s)
				goto out;
			for (i = 0; i < sizeof dispatch_names / sizeof *dispatch_names; i++)
				if (strcmp(s, dispatch_names[i]) == 0)
					break;
			if (i == sizeof dispatch_names / sizeof *dispatch_names) {
				PyErr_Format(PyExc_ValueError, "unknown dispatch '%s'", s);
				goto out;
			}
			cfg->dispatch = i;
		} else {
			long v = PyLong_AsLong(d);
			if (v == -1 && PyErr_Occurred())
				goto out;
			cfg->dispatch = (uint32_t)v;
		}
	}
	if (d && PyDict_DelItemString(kw, "dispatch") < 0)
		goto out;
	PyObject *w = PyDict_GetItemString(kw, "weights");
	if (w && w != Py_None) {
		PyObject *seq = PySequence_Fast(w, "weights must be a sequence of ints");
		if (!seq)
			goto out;
		Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
		if (n > SHMQ_LANES_MAX) {
			Py_DECREF(seq);
			PyErr_SetString(PyExc_ValueError, "more weights than SHMQ_LANES_MAX");
			goto out;
		}
		for (Py_ssize_t i = 0; i < n; i++) {
			long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
			if (v == -1 && PyErr_Occurred()) {
				Py_DECREF(seq);
				goto out;
			}
			cfg->weights[i] = (uint32_t)v;
		}
		Py_DECREF(seq);
	}
	if (w && PyDict_DelItemString(kw, "weights") < 0)
		goto out;
	if (PyDict_GET_SIZE(kw) > 0) {
		PyObject *k = NULL, *v;
		Py_ssize_t pos = 0;
		PyDict_Next(kw, &pos, &k, &v);
		PyErr_Format(PyExc_TypeError, "create() got an unexpected keyword argument %R", k);
		goto out;
	}
	rc = 0;
out:
	Py_DECREF(kw);
	return rc;
}

/* A new Queue of class cls: creates NAME with cfg, or opens it with opts when cfg is NULL. */
static PyObject *queue_attach(PyObject *cls, PyObject *name, const struct shmq_config *cfg,
			      const struct shmq_open_options *opts)
{
	const char *cname = PyUnicode_AsUTF8(name);
	if (!cname)
		return NULL;
	QueueObject *self = queue_alloc((PyTypeObject *)cls, name);
	if (!self)
		return NULL;
	int r;
	Py_BEGIN_ALLOW_THREADS
		r = cfg ? shmq_create(cname, cfg, &self->q) : shmq_open_opts(cname, opts, &self->q);
	Py_END_ALLOW_THREADS
	if (r < 0) {
		Py_DECREF(self);
		return raise_err(r, NULL);
	}
	return (PyObject *)self;
}

static PyObject *queue_create(PyObject *cls, PyObject *args, PyObject *kwargs)
{
	PyObject *name;
	struct shmq_config cfg;
	if (!PyArg_ParseTuple(args, "U:create", &name) || config_from_kwargs(kwargs, &cfg) < 0)
		return NULL;
	return queue_attach(cls, name, &cfg, NULL);
}

static PyObject *queue_open(PyObject *cls, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"name", "trust_uid", "trust_gid", NULL};
	PyObject *name, *uid = Py_None, *gid = Py_None;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|OO:open", kwlist, &name, &uid, &gid))
		return NULL;
	struct shmq_open_options opts;
	shmq_open_options_init(&opts);
	if (uid != Py_None) {
		long v = PyLong_AsLong(uid);
		if (v == -1 && PyErr_Occurred())
			return NULL;
		opts.trust_uid = (uid_t)v;
	}
	if (gid != Py_None) {
		long v = PyLong_AsLong(gid);
		if (v == -1 && PyErr_Occurred())
			return NULL;
		opts.trust_gid = (gid_t)v;
	}
	return queue_attach(cls, name, NULL, &opts);
}

static PyObject *queue_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	(void)type, (void)args, (void)kw;
	PyErr_SetString(PyExc_TypeError, "use Queue.create(name, ...) or Queue.open(name)");
	return NULL;
}

static void queue_dealloc(QueueObject *self)
{
	if (self->weakrefs)
		PyObject_ClearWeakRefs((PyObject *)self);
	/* every Message and Worker holds a reference: none is left, so nothing uses the mapping */
	if (self->q)
		shmq_close(self->q);
	Py_CLEAR(self->name);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *queue_close(QueueObject *self, PyObject *unused)
{
	(void)unused;
	if (!self->closing) {
		self->closing = 1;
		if (self->users == 0 && self->q) {
			shmq_close(self->q);
			self->q = NULL;
		}
	}
	Py_RETURN_NONE;
}

static PyObject *queue_enter(QueueObject *self, PyObject *unused)
{
	(void)unused;
	if (queue_check(self) < 0)
		return NULL;
	Py_INCREF(self);
	return (PyObject *)self;
}

static PyObject *queue_exit(QueueObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)args, (void)nargs;
	return queue_close(self, NULL);
}

/* -- sends -- */

struct send_ctx {
	const void *data;
	size_t len;
	const void *key, *rkey;
	size_t key_len, rkey_len;
	uint64_t id;
	const struct shmq_iov *iov;
	unsigned n;
};

static int do_send(shmq_t *q, void *c, int t)
{
	struct send_ctx *s = c;
	return shmq_send(q, s->data, s->len, t);
}

static int do_send_routed(shmq_t *q, void *c, int t)
{
	struct send_ctx *s = c;
	return shmq_send_routed(q, s->rkey, s->rkey_len, s->data, s->len, t);
}

static int do_send_keyed(shmq_t *q, void *c, int t)
{
	struct send_ctx *s = c;
	return shmq_send_keyed_routed(q, s->rkey, s->rkey_len, s->key, s->key_len, s->data, s->len, t,
				      &s->id);
}

static int do_send_batch(shmq_t *q, void *c, int t)
{
	struct send_ctx *s = c;
	return shmq_send_batch(q, s->iov, s->n, t);
}

/* A bytes-like argument; bytes objects skip the buffer protocol. */
static int get_bytes(PyObject *o, Py_buffer *b, const void **data, size_t *len)
{
	if (PyBytes_CheckExact(o)) {
		b->obj = NULL;
		*data = PyBytes_AS_STRING(o);
		*len = (size_t)PyBytes_GET_SIZE(o);
		return 0;
	}
	if (PyObject_GetBuffer(o, b, PyBUF_SIMPLE) < 0)
		return -1;
	*data = b->buf;
	*len = (size_t)b->len;
	return 0;
}

static void put_bytes(Py_buffer *b)
{
	if (b->obj)
		PyBuffer_Release(b);
}

/* A send's result: raises Full for a queue that stayed full, Error for the rest. */
static int send_failed(int r)
{
	if (r == INT_MIN)
		return 1;
	if (r < 0) {
		raise_err(r, r == -EAGAIN ? Full : NULL);
		return 1;
	}
	return 0;
}

static PyObject *queue_send(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"data", "timeout_ms"};
	PyObject *a[2];
	struct send_ctx s;
	Py_buffer b;
	int t;
	if (nargs == 1 && !kwnames) { /* the common call, parsed inline */
		a[0] = args[0];
		a[1] = NULL;
	} else if (parse_args("send", args, nargs, kwnames, names, 2, 1, a) < 0) {
		return NULL;
	}
	if (queue_check(self) < 0 || parse_timeout(a[1], &t) < 0 || get_bytes(a[0], &b, &s.data, &s.len) < 0)
		return NULL;
	int r = call_waiting(self, do_send, &s, t);
	queue_maybe_close(self);
	put_bytes(&b);
	if (send_failed(r))
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *queue_send_routed(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
				   PyObject *kwnames)
{
	static const char *const names[] = {"route", "data", "timeout_ms"};
	PyObject *a[3];
	struct send_ctx s;
	Py_buffer b, rb;
	int t;
	if (parse_args("send_routed", args, nargs, kwnames, names, 3, 2, a) < 0 || queue_check(self) < 0 ||
	    parse_timeout(a[2], &t) < 0 || get_bytes(a[0], &rb, &s.rkey, &s.rkey_len) < 0)
		return NULL;
	if (get_bytes(a[1], &b, &s.data, &s.len) < 0) {
		put_bytes(&rb);
		return NULL;
	}
	int r = call_waiting(self, do_send_routed, &s, t);
	queue_maybe_close(self);
	put_bytes(&b);
	put_bytes(&rb);
	if (send_failed(r))
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *queue_send_keyed(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
				  PyObject *kwnames)
{
	static const char *const names[] = {"key", "data", "timeout_ms", "route"};
	PyObject *a[4];
	struct send_ctx s = {0};
	Py_buffer b, kb, rb = {0};
	int t;
	if (parse_args("send_keyed", args, nargs, kwnames, names, 4, 2, a) < 0 || queue_check(self) < 0 ||
	    parse_timeout(a[2], &t) < 0 || get_bytes(a[0], &kb, &s.key, &s.key_len) < 0)
		return NULL;
	if (get_bytes(a[1], &b, &s.data, &s.len) < 0) {
		put_bytes(&kb);
		return NULL;
	}
	if (a[3] && a[3] != Py_None && get_bytes(a[3], &rb, &s.rkey, &s.rkey_len) < 0) {
		put_bytes(&kb);
		put_bytes(&b);
		return NULL;
	}
	int r = call_waiting(self, do_send_keyed, &s, t);
	queue_maybe_close(self);
	put_bytes(&b);
	put_bytes(&kb);
	put_bytes(&rb);
	if (send_failed(r))
		return NULL;
	if (r == SHMQ_DUPLICATE && DuplicateType)
		return PyObject_CallFunction(DuplicateType, "K", (unsigned long long)s.id);
	return PyLong_FromUnsignedLongLong(s.id);
}

static PyObject *queue_send_batch(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
				  PyObject *kwnames)
{
	static const char *const names[] = {"messages", "timeout_ms"};
	PyObject *a[2];
	int t;
	if (parse_args("send_batch", args, nargs, kwnames, names, 2, 1, a) < 0 || queue_check(self) < 0 ||
	    parse_timeout(a[1], &t) < 0)
		return NULL;
	PyObject *seq = PySequence_Fast(a[0], "send_batch() takes a sequence of bytes-like objects");
	if (!seq)
		return NULL;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	if (n > BATCH_MAX)
		n = BATCH_MAX;
	if (n == 0) {
		Py_DECREF(seq);
		return PyLong_FromLong(0);
	}
	struct shmq_iov *iov = PyMem_Calloc((size_t)n, sizeof *iov);
	Py_buffer *bufs = PyMem_Calloc((size_t)n, sizeof *bufs);
	Py_ssize_t got = 0;
	PyObject *ret = NULL;
	if (!iov || !bufs) {
		PyErr_NoMemory();
		goto out;
	}
	for (; got < n; got++)
		if (get_bytes(PySequence_Fast_GET_ITEM(seq, got), &bufs[got], &iov[got].data, &iov[got].len) <
		    0)
			goto out;
	struct send_ctx s = {.iov = iov, .n = (unsigned)n};
	int r = call_waiting(self, do_send_batch, &s, t);
	queue_maybe_close(self);
	if (!send_failed(r))
		ret = PyLong_FromLong(r);
out:
	for (Py_ssize_t i = 0; i < got; i++)
		put_bytes(&bufs[i]);
	PyMem_Free(iov);
	PyMem_Free(bufs);
	Py_DECREF(seq);
	return ret;
}

/* -- receives -- */

enum msg_state {
	MSG_OPEN = 0,	 /* leased to us, not settled */
	MSG_SETTLED = 1, /* acked, nacked, rejected, or its lease found lost */
	MSG_WORKER = 2,	 /* a worker handler's message: the worker settles it */
	MSG_WORKER_DONE = 3,
};

typedef struct {
	PyObject_HEAD
	QueueObject *queue;
	struct shmq_msg m;
	Py_ssize_t exports; /* buffers exported (memoryviews alive) */
	PyObject *view;	    /* weak reference to the memoryview msg.payload gave out, or NULL */
	int state;
	int using; /* holds one of queue->users */
} MessageObject;

static MessageObject *message_new(QueueObject *queue, const struct shmq_msg *m, int state)
{
	MessageObject *msg = PyObject_New(MessageObject, &MessageType);
	if (!msg)
		return NULL;
	Py_INCREF(queue);
	msg->queue = queue;
	msg->m = *m;
	msg->exports = 0;
	msg->view = NULL;
	msg->state = state;
	msg->using = 1;
	queue->users++;
	return msg;
}

/* Gives the queue back once the message can no longer reach the mapping. */
static void message_maybe_unuse(MessageObject *self)
{
	if (self->using && self->exports == 0 && self->state != MSG_OPEN && self->state != MSG_WORKER) {
		self->using = 0;
		queue_unuse(self->queue);
	}
}

static void message_dealloc(MessageObject *self)
{
	/* An unsettled message stays leased until its lease expires, as in C. */
	if (self->using)
		queue_unuse(self->queue);
	Py_XDECREF(self->view);
	Py_DECREF(self->queue);
	PyObject_Free(self);
}

static int do_recv(shmq_t *q, void *c, int t) { return shmq_recv(q, c, t); }

/* A receive's result r as Python: the message (holding the mapping), None for -EAGAIN, or NULL
 * with an exception; then detaches if close() came while it waited. */
static PyObject *queue_received(QueueObject *self, int r, const struct shmq_msg *m)
{
	PyObject *ret;
	if (r == INT_MIN)
		ret = NULL;
	else if (r == -EAGAIN)
		ret = Py_NewRef(Py_None);
	else if (r < 0)
		ret = raise_err(r, NULL);
	else
		ret = (PyObject *)message_new(self, m, MSG_OPEN);
	queue_maybe_close(self);
	return ret;
}

static PyObject *queue_recv(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"timeout_ms"};
	PyObject *a[1] = {NULL};
	struct shmq_msg m;
	int t;
	if ((nargs || kwnames) && parse_args("recv", args, nargs, kwnames, names, 1, 0, a) < 0)
		return NULL;
	if (queue_check(self) < 0 || parse_timeout(a[0], &t) < 0)
		return NULL;
	return queue_received(self, call_waiting(self, do_recv, &m, t), &m);
}

struct recv_batch_ctx {
	struct shmq_msg *m;
	unsigned n;
};

static int do_recv_batch(shmq_t *q, void *c, int t)
{
	struct recv_batch_ctx *b = c;
	return shmq_recv_batch(q, b->m, b->n, t);
}

static PyObject *queue_recv_batch(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
				  PyObject *kwnames)
{
	static const char *const names[] = {"max", "timeout_ms"};
	PyObject *a[2];
	int t;
	if (parse_args("recv_batch", args, nargs, kwnames, names, 2, 1, a) < 0 || queue_check(self) < 0 ||
	    parse_timeout(a[1], &t) < 0)
		return NULL;
	long n = PyLong_AsLong(a[0]);
	if (n == -1 && PyErr_Occurred())
		return NULL;
	if (n < 1 || n > BATCH_MAX) {
		PyErr_Format(PyExc_ValueError, "max must be 1..%d", BATCH_MAX);
		return NULL;
	}
	struct recv_batch_ctx b = {PyMem_Malloc((size_t)n * sizeof(struct shmq_msg)), (unsigned)n};
	if (!b.m)
		return PyErr_NoMemory();
	int r = call_waiting(self, do_recv_batch, &b, t);
	PyObject *list = NULL;
	if (r == INT_MIN)
		goto out;
	if (r == -EAGAIN) {
		list = PyList_New(0);
		goto out;
	}
	if (r < 0) {
		raise_err(r, NULL);
		goto out;
	}
	/* the messages are leased now: wrap every one, even if a later allocation fails, so that
	 * none is forgotten without an object to settle it */
	list = PyList_New(r);
	for (int i = 0; i < r; i++) {
		MessageObject *msg = message_new(self, &b.m[i], MSG_OPEN);
		if (!msg || !list) {
			Py_XDECREF(msg);
			Py_CLEAR(list);
			continue;
		}
		PyList_SET_ITEM(list, i, (PyObject *)msg);
	}
out:
	queue_maybe_close(self);
	PyMem_Free(b.m);
	return list;
}

/* `for msg in q:` receives, blocking; the loop ends when the queue is closed (from another thread
 * or a signal handler). */
static PyObject *queue_iternext(QueueObject *self)
{
	struct shmq_msg m;
	if (self->closing)
		return NULL;
	if (queue_check(self) < 0)
		return NULL;
	int r = call_waiting(self, do_recv, &m, -1);
	PyObject *msg = queue_received(self, r, &m);
	/* closed while waiting: the end of the iteration, not an error */
	if (!msg && r == INT_MIN && self->closing && PyErr_ExceptionMatches(PyExc_ValueError))
		PyErr_Clear();
	return msg;
}

static PyObject *queue_iter(QueueObject *self)
{
	Py_INCREF(self);
	return (PyObject *)self;
}

/* -- the rest of the API -- */

static PyObject *queue_set_prefetch(QueueObject *self, PyObject *arg)
{
	unsigned long n = PyLong_AsUnsignedLong(arg);
	if ((n == (unsigned long)-1 && PyErr_Occurred()) || queue_check(self) < 0)
		return NULL;
	int r = shmq_set_prefetch(self->q, (uint32_t)n);
	if (r < 0)
		return raise_err(r, NULL);
	Py_RETURN_NONE;
}

/* fileno(): shmq_fd, the descriptor an event loop waits on (owned by the handle: do not close it). */
static PyObject *queue_fileno(QueueObject *self, PyObject *unused)
{
	(void)unused;
	if (queue_check(self) < 0)
		return NULL;
	if (!shmq_fd)
		return raise_err(-ENOSYS, NULL);
	int r = shmq_fd(self->q);
	if (r < 0)
		return raise_err(r, NULL);
	return PyLong_FromLong(r);
}

/* arm(): shmq_fd_arm, after a receive found nothing: True if a receive may find a message now
 * (receive again), False when armed (wait for the descriptor). */
static PyObject *queue_arm(QueueObject *self, PyObject *unused)
{
	(void)unused;
	if (queue_check(self) < 0)
		return NULL;
	if (!shmq_fd_arm)
		return raise_err(-ENOSYS, NULL);
	int r = shmq_fd_arm(self->q);
	if (r < 0)
		return raise_err(r, NULL);
	return PyBool_FromLong(r);
}

#define SET_ITEM(d, key, obj)                                                                                \
	do {                                                                                                 \
		PyObject *o_ = (obj);                                                                        \
		if (!o_ || PyDict_SetItemString(d, key, o_) < 0) {                                           \
			Py_XDECREF(o_);                                                                      \
			goto fail;                                                                           \
		}                                                                                            \
		Py_DECREF(o_);                                                                               \
	} while (0)
#define SET_U(d, st, f) SET_ITEM(d, #f, PyLong_FromUnsignedLongLong((unsigned long long)(st)->f))
#define SET_I(d, st, f) SET_ITEM(d, #f, PyLong_FromLongLong((long long)(st)->f))

static PyObject *config_dict(const struct shmq_config *c)
{
	PyObject *d = PyDict_New(), *w;
	if (!d)
		return NULL;
	SET_U(d, c, capacity);
	SET_U(d, c, slot_size);
	SET_U(d, c, lease_ms);
	SET_U(d, c, max_deliveries);
	SET_U(d, c, retry_base_ms);
	SET_U(d, c, retry_max_ms);
	SET_U(d, c, mode);
	SET_U(d, c, dlq_max);
	SET_U(d, c, reclaim_interval_ms);
	SET_U(d, c, dedup_window_ms);
	SET_U(d, c, dedup_entries);
	SET_U(d, c, lanes);
	SET_ITEM(d, "dispatch",
		 c->dispatch < sizeof dispatch_names / sizeof *dispatch_names
			 ? PyUnicode_FromString(dispatch_names[c->dispatch])
			 : PyLong_FromUnsignedLong(c->dispatch));
	w = PyList_New(0);
	if (!w)
		goto fail;
	for (uint32_t i = 0; i < c->lanes && i < SHMQ_LANES_MAX; i++) {
		PyObject *v = PyLong_FromUnsignedLong(c->weights[i]);
		if (!v || PyList_Append(w, v) < 0) {
			Py_XDECREF(v);
			Py_DECREF(w);
			goto fail;
		}
		Py_DECREF(v);
	}
	SET_ITEM(d, "weights", w);
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

static PyObject *stats_dict(const struct shmq_stats *st)
{
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	SET_ITEM(d, "config", config_dict(&st->config));
	SET_U(d, st, max_payload);
	SET_U(d, st, segment_bytes);
	SET_U(d, st, ready);
	SET_U(d, st, inflight);
	SET_U(d, st, delayed);
	SET_U(d, st, dead);
	SET_U(d, st, writing);
	SET_U(d, st, free_slots);
	SET_U(d, st, next_id);
	SET_U(d, st, participants);
	SET_U(d, st, sent);
	SET_U(d, st, received);
	SET_U(d, st, acked);
	SET_U(d, st, nacked);
	SET_U(d, st, redelivered);
	SET_U(d, st, extended);
	SET_U(d, st, stale);
	SET_U(d, st, reclaimed_expired);
	SET_U(d, st, reclaimed_dead_owner);
	SET_U(d, st, retired_writes);
	SET_U(d, st, dead_lettered);
	SET_U(d, st, producer_waits);
	SET_U(d, st, consumer_waits);
	SET_U(d, st, rejected);
	SET_U(d, st, redriven);
	SET_U(d, st, purged);
	SET_U(d, st, dlq_dropped);
	SET_U(d, st, dlq_max);
	SET_U(d, st, retried);
	SET_U(d, st, reclaim_passes);
	SET_U(d, st, duplicates);
	SET_U(d, st, dedup_evicted);
	SET_U(d, st, done_marked);
	SET_U(d, st, done_hits);
	SET_U(d, st, dedup_live);
	SET_U(d, st, prefetch_waits);
	SET_U(d, st, stolen);
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

static PyObject *queue_stats(QueueObject *self, PyObject *unused)
{
	(void)unused;
	struct shmq_stats st;
	if (queue_check(self) < 0)
		return NULL;
	int r = shmq_stats(self->q, &st);
	if (r < 0)
		return raise_err(r, NULL);
	return stats_dict(&st);
}

static PyObject *queue_reclaim(QueueObject *self, PyObject *unused)
{
	(void)unused;
	struct shmq_reclaim_result res;
	if (queue_check(self) < 0)
		return NULL;
	int r;
	Py_BEGIN_ALLOW_THREADS
		r = shmq_reclaim(self->q, &res);
	Py_END_ALLOW_THREADS
	if (r < 0)
		return raise_err(r, NULL);
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	SET_U(d, &res, expired);
	SET_U(d, &res, dead_owner);
	SET_U(d, &res, retired_writes);
	SET_U(d, &res, dead_lettered);
	SET_U(d, &res, participants_freed);
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

static PyObject *queue_dlq_list(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"max"};
	PyObject *a[1];
	if (parse_args("dlq_list", args, nargs, kwnames, names, 1, 0, a) < 0 || queue_check(self) < 0)
		return NULL;
	long max = a[0] ? PyLong_AsLong(a[0]) : 1024;
	if (max == -1 && PyErr_Occurred())
		return NULL;
	if (max < 0 || max > SHMQ_CAPACITY_MAX) {
		PyErr_SetString(PyExc_ValueError, "max out of range");
		return NULL;
	}
	struct shmq_dead_letter *dl = PyMem_Calloc((size_t)max + 1, sizeof *dl);
	if (!dl)
		return PyErr_NoMemory();
	PyObject *list = NULL;
	int r = shmq_dlq_list(self->q, dl, (unsigned)max);
	if (r < 0) {
		raise_err(r, NULL);
		goto out;
	}
	list = PyList_New(0);
	for (int i = 0; list && i < r && i < max; i++) {
		PyObject *d = PyDict_New();
		if (!d)
			goto fail;
		SET_ITEM(d, "data", PyBytes_FromStringAndSize(dl[i].data, dl[i].len));
		SET_U(d, &dl[i], id);
		SET_U(d, &dl[i], deliveries);
		SET_U(d, &dl[i], enqueued_ns);
		SET_U(d, &dl[i], dead_ms);
		SET_ITEM(d, "reason", PyUnicode_FromString(shmq_dead_reason_str(dl[i].reason)));
		SET_I(d, &dl[i], last_pid);
		if (PyList_Append(list, d) == 0) {
			Py_DECREF(d);
			continue;
		}
fail:
		Py_XDECREF(d);
		Py_CLEAR(list);
	}
out:
	PyMem_Free(dl);
	return list;
}

static PyObject *queue_count_call(QueueObject *self, PyObject *arg, int (*fn)(shmq_t *, unsigned))
{
	long n = arg ? PyLong_AsLong(arg) : (long)SHMQ_CAPACITY_MAX;
	if ((n == -1 && PyErr_Occurred()) || queue_check(self) < 0)
		return NULL;
	if (n < 0) {
		PyErr_SetString(PyExc_ValueError, "max must be >= 0");
		return NULL;
	}
	int r = fn(self->q, (unsigned)n);
	if (r < 0)
		return raise_err(r, NULL);
	return PyLong_FromLong(r);
}

static PyObject *queue_dlq_redrive(QueueObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	return queue_count_call(self, nargs ? args[0] : NULL, shmq_dlq_redrive);
}

static PyObject *queue_dlq_purge(QueueObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	return queue_count_call(self, nargs ? args[0] : NULL, shmq_dlq_purge);
}

static PyObject *queue_key_call(QueueObject *self, PyObject *arg, int (*fn)(shmq_t *, const void *, size_t))
{
	Py_buffer b;
	const void *k;
	size_t n;
	if (queue_check(self) < 0 || get_bytes(arg, &b, &k, &n) < 0)
		return NULL;
	int r = fn(self->q, k, n);
	put_bytes(&b);
	if (r < 0)
		return raise_err(r, NULL);
	return PyBool_FromLong(r);
}

static PyObject *queue_done_mark(QueueObject *self, PyObject *arg)
{
	PyObject *r = queue_key_call(self, arg, shmq_done_mark);
	if (!r)
		return NULL;
	Py_DECREF(r);
	Py_RETURN_NONE;
}

static PyObject *queue_done_check(QueueObject *self, PyObject *arg)
{
	return queue_key_call(self, arg, shmq_done_check);
}

static PyObject *queue_get_max_payload(QueueObject *self, void *closure)
{
	(void)closure;
	if (queue_check(self) < 0)
		return NULL;
	return PyLong_FromUnsignedLong(shmq_max_payload(self->q));
}

static PyObject *queue_get_closed(QueueObject *self, void *closure)
{
	(void)closure;
	return PyBool_FromLong(!self->q || self->closing);
}

static PyObject *queue_get_name(QueueObject *self, void *closure)
{
	(void)closure;
	Py_INCREF(self->name);
	return self->name;
}

static PyObject *queue_repr(QueueObject *self)
{
	return PyUnicode_FromFormat("<shmq.Queue %R%s>", self->name,
				    queue_get_closed(self, NULL) == Py_True ? " closed" : "");
}

static PyMethodDef queue_methods[] = {
	{"create", (PyCFunction)(void (*)(void))queue_create, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
	 "create(name, *, capacity=1024, slot_size=256, lease_ms=30000, max_deliveries=16,\n"
	 "       retry_base_ms=100, retry_max_ms=30000, mode=0o600, dlq_max=0, reclaim_interval_ms=100,\n"
	 "       dedup_window_ms=120000, dedup_entries=0, lanes=1, dispatch='round_robin', weights=None)\n"
	 "Creates a new queue NAME and opens it (struct shmq_config's fields; omitted ones take shmq's\n"
	 "defaults). dispatch: 'round_robin', 'random', 'weighted', 'key_hash' or 'least_loaded'.\n"
	 "Raises shmq.Error (errno EEXIST if NAME exists, EINVAL for a bad config, ...)."},
	{"open", (PyCFunction)(void (*)(void))queue_open, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
	 "open(name, trust_uid=None, trust_gid=None)\n"
	 "Opens an existing queue. By default only a segment of the caller's uid that is not\n"
	 "world-writable is accepted; trust_uid/trust_gid also accept that user's or group's."},
	{"close", (PyCFunction)queue_close, METH_NOARGS,
	 "close()\nNo more calls on this queue. Messages received and not settled may still be settled;\n"
	 "the handle detaches (unmaps) when the last of them, and the last memoryview, is gone."},
	{"__enter__", (PyCFunction)queue_enter, METH_NOARGS, NULL},
	{"__exit__", (PyCFunction)(void (*)(void))queue_exit, METH_FASTCALL, NULL},
	{"send", (PyCFunction)(void (*)(void))queue_send, METH_FASTCALL | METH_KEYWORDS,
	 "send(data, timeout_ms=-1)\nCopies one bytes-like message in. Waits up to timeout_ms for room\n"
	 "(-1 or None: forever, 0: never); raises shmq.Full if the queue stayed full, shmq.Error\n"
	 "(EMSGSIZE, ...) otherwise."},
	{"send_routed", (PyCFunction)(void (*)(void))queue_send_routed, METH_FASTCALL | METH_KEYWORDS,
	 "send_routed(route, data, timeout_ms=-1)\nSends with a routing key: on a 'key_hash' queue every\n"
	 "message of one route goes to one lane, so their first deliveries keep send order."},
	{"send_keyed", (PyCFunction)(void (*)(void))queue_send_keyed, METH_FASTCALL | METH_KEYWORDS,
	 "send_keyed(key, data, timeout_ms=-1, route=None)\nSends with an idempotency key. Returns the new\n"
	 "message's id (an int), or shmq.Duplicate(first_id) (an int subclass) if the key was sent within\n"
	 "the queue's dedup window: then nothing was enqueued. route: a routing key of its own."},
	{"send_batch", (PyCFunction)(void (*)(void))queue_send_batch, METH_FASTCALL | METH_KEYWORDS,
	 "send_batch(messages, timeout_ms=-1)\nSends the first messages of a sequence of bytes-likes in "
	 "order\n"
	 "(up to 1024 per call); waits only for the first. Returns how many were sent (>= 1): the\n"
	 "rest found the queue full. Raises shmq.Full if the first never found room."},
	{"recv", (PyCFunction)(void (*)(void))queue_recv, METH_FASTCALL | METH_KEYWORDS,
	 "recv(timeout_ms=-1)\nReceives one message under a lease, or returns None if none arrived within\n"
	 "timeout_ms (-1 or None: wait forever; ^C interrupts the wait). Settle it with ack(), nack(),\n"
	 "reject() or ack_done(); an unsettled message is redelivered when its lease expires."},
	{"recv_batch", (PyCFunction)(void (*)(void))queue_recv_batch, METH_FASTCALL | METH_KEYWORDS,
	 "recv_batch(max, timeout_ms=-1)\nWaits for the first message, then takes what is there without\n"
	 "waiting, up to max (<= 1024). Returns a list (empty on timeout)."},
	{"set_prefetch", (PyCFunction)queue_set_prefetch, METH_O,
	 "set_prefetch(n)\nAt most n messages leased by this handle at once (0: no limit)."},
	{"fileno", (PyCFunction)queue_fileno, METH_NOARGS,
	 "fileno() -> int\nshmq_fd(): a descriptor that turns readable when a receive may find a message\n"
	 "(level-triggered between arms). Owned by the queue: do not close it. ENOSYS without HAVE_FD."},
	{"arm", (PyCFunction)queue_arm, METH_NOARGS,
	 "arm() -> bool\nshmq_fd_arm(), after recv(timeout_ms=0) returned None: True if a receive may\n"
	 "find a message now (receive again), False when armed (wait until fileno() is readable)."},
	{"stats", (PyCFunction)queue_stats, METH_NOARGS,
	 "stats() -> dict\nshmq_stats(): depths, counters and the config."},
	{"reclaim", (PyCFunction)queue_reclaim, METH_NOARGS,
	 "reclaim() -> dict\nOne recovery pass: requeues expired leases and dead owners' messages."},
	{"dlq_list", (PyCFunction)(void (*)(void))queue_dlq_list, METH_FASTCALL | METH_KEYWORDS,
	 "dlq_list(max=1024) -> list of dict\nDead letters, oldest first; 'data' is a copy (bytes)."},
	{"dlq_redrive", (PyCFunction)(void (*)(void))queue_dlq_redrive, METH_FASTCALL,
	 "dlq_redrive(max=all) -> int\nMoves dead letters back into the queue; returns how many."},
	{"dlq_purge", (PyCFunction)(void (*)(void))queue_dlq_purge, METH_FASTCALL,
	 "dlq_purge(max=all) -> int\nDeletes dead letters; returns how many."},
	{"done_mark", (PyCFunction)queue_done_mark, METH_O,
	 "done_mark(key)\nRecords the application key KEY as done (for the dedup window)."},
	{"done_check", (PyCFunction)queue_done_check, METH_O,
	 "done_check(key) -> bool\nTrue if KEY was recorded done within the dedup window."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef queue_getset[] = {
	{"max_payload", (getter)queue_get_max_payload, NULL, "largest payload a send accepts", NULL},
	{"closed", (getter)queue_get_closed, NULL, "True once close() was called", NULL},
	{"name", (getter)queue_get_name, NULL, "the queue's name", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject QueueType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmq._shmq.Queue",
	.tp_basicsize = sizeof(QueueObject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_doc = "A handle on one shmq queue: Queue.create(name, ...) or Queue.open(name).\n"
		  "A context manager (closes on exit) and an iterator (`for msg in q:` receives, blocking).",
	.tp_new = queue_new,
	.tp_dealloc = (destructor)queue_dealloc,
	.tp_methods = queue_methods,
	.tp_getset = queue_getset,
	.tp_iter = (getiterfunc)queue_iter,
	.tp_iternext = (iternextfunc)queue_iternext,
	.tp_repr = (reprfunc)queue_repr,
	.tp_weaklistoffset = offsetof(QueueObject, weakrefs),
};

/* ---- Message ----------------------------------------------------------------------------------- */

/* The memoryview msg.payload gave out, if it is alive and not released (a new reference), else
 * NULL. */
static PyMemoryViewObject *message_view(MessageObject *self)
{
	PyObject *v = self->view ? PyWeakref_GetObject(self->view) : NULL;
	if (!v || v == Py_None || (((PyMemoryViewObject *)v)->flags & _Py_MEMORYVIEW_RELEASED))
		return NULL;
	Py_INCREF(v);
	return (PyMemoryViewObject *)v;
}

/* Releases msg.payload's view so that nothing can read the slot once it is settled. 0, or -1 with
 * BufferError when a buffer would outlive the release (then nothing is released): a slice of the
 * view shares its managed buffer (mbuf->exports > 1), a buffer taken from the view counts in its
 * exports, any other memoryview of the message in self->exports. */
static int message_release_view(MessageObject *self)
{
	PyMemoryViewObject *mv = message_view(self);
	Py_ssize_t ours = mv && mv->mbuf->exports == 1 && mv->exports == 0 ? 1 : 0;
	int rc = 0;
	if (self->exports > ours) {
		PyErr_SetString(
			PyExc_BufferError,
			"a buffer of the payload would outlive the settle (a slice of msg.payload, or a "
			"memoryview(msg)): release it, or copy with bytes(msg)");
		rc = -1;
	} else if (mv) {
		PyObject *r = PyObject_CallMethod((PyObject *)mv, "release", NULL);
		if (!r)
			rc = -1;
		Py_XDECREF(r);
	}
	Py_XDECREF(mv);
	return rc;
}

static int message_settle_check(MessageObject *self)
{
	if (self->state == MSG_WORKER || self->state == MSG_WORKER_DONE) {
		PyErr_SetString(PyExc_ValueError,
				"a worker's message is settled by its handler's verdict (return or raise)");
		return -1;
	}
	if (self->state != MSG_OPEN) {
		PyErr_SetString(PyExc_ValueError, "message already settled");
		return -1;
	}
	return message_release_view(self);
}

/* After an ack/nack/reject/extend: the message is ours no more on success (settle) or -ESTALE. */
static PyObject *message_settled(MessageObject *self, int r, int settles)
{
	if (r == 0 && !settles)
		Py_RETURN_NONE;
	if (r == 0 || r == -ESTALE) {
		self->state = MSG_SETTLED;
		message_maybe_unuse(self);
	}
	if (r < 0)
		return raise_err(r, NULL);
	Py_RETURN_NONE;
}

static PyObject *message_ack(MessageObject *self, PyObject *unused)
{
	(void)unused;
	if (message_settle_check(self) < 0)
		return NULL;
	return message_settled(self, shmq_ack(self->queue->q, &self->m), 1);
}

static PyObject *message_ack_done(MessageObject *self, PyObject *unused)
{
	(void)unused;
	if (message_settle_check(self) < 0)
		return NULL;
	return message_settled(self, shmq_ack_done(self->queue->q, &self->m), 1);
}

static PyObject *message_nack(MessageObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"delay_ms"};
	PyObject *a[1] = {NULL};
	int delay = -1;
	if ((nargs || kwnames) && parse_args("nack", args, nargs, kwnames, names, 1, 0, a) < 0)
		return NULL;
	if (a[0] && a[0] != Py_None) {
		long v = PyLong_AsLong(a[0]);
		if (v == -1 && PyErr_Occurred())
			return NULL;
		delay = v < 0 ? -1 : v > INT32_MAX ? INT32_MAX : (int)v;
	}
	if (message_settle_check(self) < 0)
		return NULL;
	return message_settled(self, shmq_nack(self->queue->q, &self->m, delay), 1);
}

static PyObject *message_reject(MessageObject *self, PyObject *unused)
{
	(void)unused;
	if (message_settle_check(self) < 0)
		return NULL;
	return message_settled(self, shmq_reject(self->queue->q, &self->m), 1);
}

static PyObject *message_extend(MessageObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	int ms = -1;
	if (nargs > 1) {
		PyErr_SetString(PyExc_TypeError, "extend() takes at most one argument");
		return NULL;
	}
	if (nargs == 1 && args[0] != Py_None) {
		long v = PyLong_AsLong(args[0]);
		if (v == -1 && PyErr_Occurred())
			return NULL;
		ms = v <= 0 ? -1 : v > INT32_MAX ? INT32_MAX : (int)v;
	}
	if (self->state != MSG_OPEN) {
		PyErr_SetString(PyExc_ValueError, self->state == MSG_SETTLED
							  ? "message already settled"
							  : "the worker keeps its messages' leases");
		return NULL;
	}
	return message_settled(self, shmq_extend(self->queue->q, &self->m, ms), 0);
}

static PyObject *message_is_done(MessageObject *self, PyObject *unused)
{
	(void)unused;
	if (!self->queue->q) {
		PyErr_SetString(PyExc_ValueError, "operation on a closed queue");
		return NULL;
	}
	int r = shmq_is_done(self->queue->q, &self->m);
	if (r < 0)
		return raise_err(r, NULL);
	return PyBool_FromLong(r);
}

static int message_getbuffer(MessageObject *self, Py_buffer *view, int flags)
{
	if (self->state != MSG_OPEN && self->state != MSG_WORKER) {
		PyErr_SetString(PyExc_BufferError, "the message is settled: its payload is gone");
		view->obj = NULL;
		return -1;
	}
	if (PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->m.data, self->m.len, 1, flags) < 0)
		return -1;
	self->exports++;
	return 0;
}

static void message_releasebuffer(MessageObject *self, Py_buffer *view)
{
	(void)view;
	self->exports--;
	message_maybe_unuse(self);
}

static PyBufferProcs message_as_buffer = {
	.bf_getbuffer = (getbufferproc)message_getbuffer,
	.bf_releasebuffer = (releasebufferproc)message_releasebuffer,
};

/* msg.payload: one memoryview per message (the same one again while it lives), so that the settle
 * can release it. A weak reference: the view refers to the message through its buffer. */
static PyObject *message_get_payload(MessageObject *self, void *closure)
{
	(void)closure;
	PyObject *v = (PyObject *)message_view(self);
	if (v)
		return v;
	v = PyMemoryView_FromObject((PyObject *)self);
	if (!v)
		return NULL;
	PyObject *ref = PyWeakref_NewRef(v, NULL);
	if (!ref) {
		Py_DECREF(v);
		return NULL;
	}
	Py_XSETREF(self->view, ref);
	return v;
}

static PyObject *message_get_key(MessageObject *self, void *closure)
{
	(void)closure;
	if (!self->m.key)
		Py_RETURN_NONE;
	return PyBytes_FromStringAndSize(self->m.key, self->m.key_len);
}

static PyObject *message_get_settled(MessageObject *self, void *closure)
{
	(void)closure;
	return PyBool_FromLong(self->state == MSG_SETTLED || self->state == MSG_WORKER_DONE);
}

static PyObject *message_get_id(MessageObject *self, void *c)
{
	(void)c;
	return PyLong_FromUnsignedLongLong(self->m.id);
}

static PyObject *message_get_deliveries(MessageObject *self, void *c)
{
	(void)c;
	return PyLong_FromUnsignedLong(self->m.deliveries);
}

static PyObject *message_get_enqueued_ns(MessageObject *self, void *c)
{
	(void)c;
	return PyLong_FromUnsignedLongLong(self->m.enqueued_ns);
}

static PyObject *message_get_queue(MessageObject *self, void *c)
{
	(void)c;
	Py_INCREF(self->queue);
	return (PyObject *)self->queue;
}

static Py_ssize_t message_len(MessageObject *self) { return self->m.len; }

static PyObject *message_repr(MessageObject *self)
{
	static const char *const states[] = {"leased", "settled", "in handler", "handled"};
	return PyUnicode_FromFormat("<shmq.Message id=%llu len=%u deliveries=%u %s>",
				    (unsigned long long)self->m.id, self->m.len, self->m.deliveries,
				    states[self->state]);
}

static PyMethodDef message_methods[] = {
	{"ack", (PyCFunction)message_ack, METH_NOARGS,
	 "ack()\nRemoves the message: done. Raises shmq.LeaseLost if its lease was lost (it was requeued\n"
	 "and may be delivered again), BufferError while a memoryview of the payload is alive."},
	{"nack", (PyCFunction)(void (*)(void))message_nack, METH_FASTCALL | METH_KEYWORDS,
	 "nack(delay_ms=None)\nGives the message back for redelivery after delay_ms (None: the queue's\n"
	 "backoff). At max_deliveries it is dead-lettered instead."},
	{"reject", (PyCFunction)message_reject, METH_NOARGS,
	 "reject()\nSends the message to the dead-letter queue."},
	{"ack_done", (PyCFunction)message_ack_done, METH_NOARGS,
	 "ack_done()\nRecords the message done (by its key, else its id), then acks it."},
	{"is_done", (PyCFunction)message_is_done, METH_NOARGS,
	 "is_done() -> bool\nTrue if the message was recorded done (ack_done) within the dedup window."},
	{"extend", (PyCFunction)(void (*)(void))message_extend, METH_FASTCALL,
	 "extend(lease_ms=None)\nSets the lease deadline to now + lease_ms (None: the queue's lease_ms)."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef message_getset[] = {
	{"payload", (getter)message_get_payload, NULL,
	 "the payload: a read-only memoryview into the queue's slot (zero copy), released when the\n"
	 "message is settled (using it then raises ValueError). bytes(msg) copies. A slice of it, or a\n"
	 "memoryview(msg), still alive at the settle makes the settle raise BufferError.",
	 NULL},
	{"data", (getter)message_get_payload, NULL, "the same as payload", NULL},
	{"id", (getter)message_get_id, NULL, "unique per queue, increasing in send order within a lane",
	 NULL},
	{"deliveries", (getter)message_get_deliveries, NULL, "1 on first delivery", NULL},
	{"enqueued_ns", (getter)message_get_enqueued_ns, NULL, "CLOCK_MONOTONIC_COARSE at send, ns", NULL},
	{"key", (getter)message_get_key, NULL, "the idempotency key it was sent with (bytes), or None", NULL},
	{"settled", (getter)message_get_settled, NULL, "True once acked, nacked, rejected or its lease lost",
	 NULL},
	{"queue", (getter)message_get_queue, NULL, "the Queue it came from", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods message_as_sequence = {.sq_length = (lenfunc)message_len};

static PyTypeObject MessageType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmq.Message",
	.tp_basicsize = sizeof(MessageObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A received message, leased to this handle until settled.\n"
		  "msg.data is a zero-copy memoryview; bytes(msg) is a copy; len(msg) its length.",
	.tp_dealloc = (destructor)message_dealloc,
	.tp_methods = message_methods,
	.tp_getset = message_getset,
	.tp_as_buffer = &message_as_buffer,
	.tp_as_sequence = &message_as_sequence,
	.tp_repr = (reprfunc)message_repr,
};

/* ---- Worker: the C worker runtime (shmq_worker.h) calling a Python handler ---------------------- */

typedef struct {
	PyObject_HEAD
	QueueObject *queue;
	PyObject *handler;
	shmq_worker_t *w;
	struct shmq_worker_config cfg;
	int joined;
} WorkerObject;

/* On a worker thread: takes the GIL, hands the handler a Message (settleable only by the verdict),
 * and maps its return value to a verdict. The keeper thread extends the lease meanwhile, without
 * the GIL. An exception escaping the handler (the Python layer catches Exception) means retry. */
static int worker_trampoline(shmq_worker_t *w, const struct shmq_msg *m, void *arg)
{
	(void)w;
	WorkerObject *self = arg;
	int verdict = SHMQ_WORKER_RETRY;
	PyGILState_STATE g = PyGILState_Ensure();
	MessageObject *msg = message_new(self->queue, m, MSG_WORKER);
	if (msg) {
		PyObject *res = PyObject_CallOneArg(self->handler, (PyObject *)msg);
		if (res) {
			long v = PyLong_AsLong(res);
			if (v == -1 && PyErr_Occurred())
				PyErr_WriteUnraisable(self->handler);
			else if (v >= SHMQ_WORKER_ACK && v <= SHMQ_WORKER_REJECT)
				verdict = (int)v;
			Py_DECREF(res);
		} else {
			PyErr_WriteUnraisable(self->handler);
		}
		/* the slot is about to be settled: release msg.payload. A buffer the handler kept
		 * past its return that cannot be released (a slice) stays mapped but may read a
		 * later message: reported as unraisable, and no new one can be made. */
		if (message_release_view(msg) < 0)
			PyErr_WriteUnraisable(self->handler);
		msg->state = MSG_WORKER_DONE;
		message_maybe_unuse(msg);
		Py_DECREF(msg);
	} else {
		PyErr_WriteUnraisable(self->handler);
	}
	PyGILState_Release(g);
	return verdict;
}

static PyObject *worker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"queue", "handler", "threads", "poll_ms", "grace_ms", "dedup", NULL};
	PyObject *queue, *handler;
	unsigned threads = 1, poll_ms = 100;
	int grace_ms = -1, dedup = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O|IIip:Worker", kwlist, &QueueType, &queue,
					 &handler, &threads, &poll_ms, &grace_ms, &dedup))
		return NULL;
	if (!PyCallable_Check(handler)) {
		PyErr_SetString(PyExc_TypeError, "handler must be callable");
		return NULL;
	}
	if (queue_check((QueueObject *)queue) < 0)
		return NULL;
	WorkerObject *self = (WorkerObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	Py_INCREF(queue);
	self->queue = (QueueObject *)queue;
	self->queue->users++;
	Py_INCREF(handler);
	self->handler = handler;
	shmq_worker_config_init(&self->cfg);
	self->cfg.handler = worker_trampoline;
	self->cfg.arg = self;
	self->cfg.threads = threads;
	self->cfg.poll_ms = poll_ms;
	self->cfg.grace_ms = grace_ms;
	self->cfg.dedup = dedup;
	return (PyObject *)self;
}

static PyObject *worker_start(WorkerObject *self, PyObject *unused)
{
	(void)unused;
	if (self->w) {
		PyErr_SetString(PyExc_ValueError, "worker already started");
		return NULL;
	}
	if (queue_check(self->queue) < 0)
		return NULL;
	int r = shmq_worker_start(self->queue->q, &self->cfg, &self->w);
	if (r < 0)
		return raise_err(r, NULL);
	Py_RETURN_NONE;
}

static PyObject *worker_stop(WorkerObject *self, PyObject *unused)
{
	(void)unused;
	if (self->w)
		shmq_worker_stop(self->w);
	Py_RETURN_NONE;
}

static PyObject *worker_join(WorkerObject *self, PyObject *unused)
{
	(void)unused;
	if (!self->w)
		Py_RETURN_NONE;
	int r;
	/* the handler threads need the GIL to finish */
	Py_BEGIN_ALLOW_THREADS
		r = shmq_worker_join(self->w);
	Py_END_ALLOW_THREADS
	self->joined = 1;
	if (r < 0)
		return raise_err(r, NULL);
	Py_RETURN_NONE;
}

static void worker_free(WorkerObject *self)
{
	if (self->w) {
		shmq_worker_t *w = self->w;
		self->w = NULL;
		Py_BEGIN_ALLOW_THREADS
			shmq_worker_close(w);
		Py_END_ALLOW_THREADS
	}
}

static PyObject *worker_close(WorkerObject *self, PyObject *unused)
{
	(void)unused;
	worker_free(self);
	Py_RETURN_NONE;
}

static void worker_dealloc(WorkerObject *self)
{
	worker_free(self);
	Py_CLEAR(self->handler);
	if (self->queue) {
		queue_unuse(self->queue);
		Py_CLEAR(self->queue);
	}
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *worker_get_state(WorkerObject *self, void *c)
{
	(void)c;
	if (!self->w)
		Py_RETURN_NONE;
	return PyLong_FromLong(shmq_worker_state(self->w));
}

static PyObject *worker_stats(WorkerObject *self, PyObject *unused)
{
	(void)unused;
	struct shmq_worker_stats st;
	if (!self->w) {
		PyErr_SetString(PyExc_ValueError, "worker not started (or closed)");
		return NULL;
	}
	int r = shmq_worker_stats(self->w, &st);
	if (r < 0)
		return raise_err(r, NULL);
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	SET_U(d, &st, received);
	SET_U(d, &st, acked);
	SET_U(d, &st, retried);
	SET_U(d, &st, rejected);
	SET_U(d, &st, lost);
	SET_U(d, &st, extended);
	SET_U(d, &st, abandoned);
	SET_U(d, &st, skipped_done);
	SET_U(d, &st, in_flight);
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

static PyMethodDef worker_methods[] = {
	{"start", (PyCFunction)worker_start, METH_NOARGS,
	 "start()\nStarts the handler threads and the lease keeper."},
	{"stop", (PyCFunction)worker_stop, METH_NOARGS,
	 "stop()\nStops taking messages (first call) or ends the grace period (later calls). Does not wait."},
	{"join", (PyCFunction)worker_join, METH_NOARGS,
	 "join()\nWaits for the threads after a stop; raises shmq.Error if one hit an error."},
	{"close", (PyCFunction)worker_close, METH_NOARGS, "close()\nStops, joins and frees the worker."},
	{"stats", (PyCFunction)worker_stats, METH_NOARGS, "stats() -> dict\nshmq_worker_stats()."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef worker_getset[] = {
	{"state", (getter)worker_get_state, NULL, "0 running, 1 draining, 2 abandoned; None before start",
	 NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WorkerType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmq._shmq.Worker",
	.tp_basicsize = sizeof(WorkerObject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_doc = "Worker(queue, handler, threads=1, poll_ms=100, grace_ms=-1, dedup=False)\n"
		  "shmq's worker runtime: handler(msg) -> 0 ack, 1 retry, 2 reject, on `threads` threads,\n"
		  "with a keeper thread extending the lease of every message whose handler runs.",
	.tp_new = worker_new,
	.tp_dealloc = (destructor)worker_dealloc,
	.tp_methods = worker_methods,
	.tp_getset = worker_getset,
};

/* ---- module functions: unlink, inspection ----------------------------------------------------- */

static PyObject *mod_unlink(PyObject *mod, PyObject *arg)
{
	(void)mod;
	const char *name = PyUnicode_AsUTF8(arg);
	if (!name)
		return NULL;
	int r = shmq_unlink(name);
	if (r < 0)
		return raise_err(r, NULL);
	Py_RETURN_NONE;
}

static PyObject *mod_strerror(PyObject *mod, PyObject *arg)
{
	(void)mod;
	long e = PyLong_AsLong(arg);
	if (e == -1 && PyErr_Occurred())
		return NULL;
	return PyUnicode_FromString(shmq_strerror((int)(e > 0 ? -e : e)));
}

static PyObject *mod_snapshot(PyObject *mod, PyObject *arg)
{
	(void)mod;
	const char *name = PyUnicode_AsUTF8(arg);
	if (!name)
		return NULL;
	shmq_view_t *v;
	int r = shmq_view_open(name, &v);
	if (r < 0)
		return raise_err(r, NULL);
	struct shmq_snapshot s;
	struct shmq_participant_info *parts = PyMem_Calloc(SHMQ_MAX_PARTICIPANTS, sizeof *parts);
	PyObject *d = NULL, *lanes = NULL, *plist = NULL, *tmp;
	if (!parts) {
		PyErr_NoMemory();
		goto out;
	}
	r = shmq_view_snapshot(v, &s, parts, SHMQ_MAX_PARTICIPANTS);
	if (r < 0) {
		raise_err(r, NULL);
		goto out;
	}
	d = stats_dict(&s.stats);
	if (!d)
		goto out;
	SET_U(d, &s, now_ms);
	SET_U(d, &s, oldest_ready_age_ms);
	SET_U(d, &s, oldest_ready_id);
	SET_U(d, &s, prod_tail);
	SET_U(d, &s, cons_head);
	SET_U(d, &s, lanes);
	SET_U(d, &s, consumers);
	SET_U(d, &s, records);
	SET_U(d, &s, dead_participants);
	SET_U(d, &s, tries);
	SET_ITEM(d, "consistent", PyBool_FromLong(s.consistent));
	SET_I(d, &s, creator_pid);
	SET_U(d, &s, created_ns);
	lanes = PyList_New(0);
	if (!lanes)
		goto fail;
	for (uint32_t i = 0; i < s.lanes && i < SHMQ_LANES_MAX; i++) {
		PyObject *l = PyDict_New();
		const struct shmq_lane_info *li = &s.lane[i];
		if (!l)
			goto fail;
		if (PyList_Append(lanes, l) < 0) {
			Py_DECREF(l);
			goto fail;
		}
		Py_DECREF(l); /* the list holds it */
		SET_U(l, li, prod_tail);
		SET_U(l, li, cons_head);
		SET_U(l, li, ready);
		SET_U(l, li, inflight);
		SET_U(l, li, weight);
		SET_U(l, li, consumer);
		SET_I(l, li, consumer_pid);
	}
	tmp = lanes;
	lanes = NULL;
	SET_ITEM(d, "lane", tmp);
	plist = PyList_New(0);
	if (!plist)
		goto fail;
	for (int i = 0; i < r && i < SHMQ_MAX_PARTICIPANTS; i++) {
		PyObject *p = PyDict_New();
		const struct shmq_participant_info *pi = &parts[i];
		if (!p)
			goto fail;
		if (PyList_Append(plist, p) < 0) {
			Py_DECREF(p);
			goto fail;
		}
		Py_DECREF(p);
		SET_U(p, pi, index);
		SET_I(p, pi, pid);
		SET_I(p, pi, alive);
		SET_U(p, pi, leases);
		SET_U(p, pi, writing);
		SET_U(p, pi, attached_ms);
		SET_U(p, pi, last_active_ms);
		SET_U(p, pi, sent);
		SET_U(p, pi, received);
		SET_U(p, pi, acked);
		SET_U(p, pi, nacked);
		SET_U(p, pi, rejected);
		SET_U(p, pi, reclaim_passes);
		SET_ITEM(p, "role", PyUnicode_FromString(pi->role ? pi->role : ""));
	}
	tmp = plist;
	plist = NULL;
	SET_ITEM(d, "participants_list", tmp);
	goto out;
fail:
	Py_CLEAR(d);
	Py_CLEAR(lanes);
	Py_CLEAR(plist);
out:
	PyMem_Free(parts);
	shmq_view_close(v);
	return d;
}

static PyObject *mod_slots(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	(void)mod;
	static const char *const names[] = {"name", "payload_bytes"};
	PyObject *a[2];
	if (parse_args("slots", args, nargs, kwnames, names, 2, 1, a) < 0)
		return NULL;
	const char *name = PyUnicode_AsUTF8(a[0]);
	if (!name)
		return NULL;
	long want = a[1] ? PyLong_AsLong(a[1]) : 64;
	if (want == -1 && PyErr_Occurred())
		return NULL;
	if (want < 0 || want > SHMQ_SLOT_SIZE_MAX) {
		PyErr_SetString(PyExc_ValueError, "payload_bytes out of range");
		return NULL;
	}
	shmq_view_t *v;
	int r = shmq_view_open(name, &v);
	if (r < 0)
		return raise_err(r, NULL);
	struct shmq_stats st;
	struct shmq_snapshot *s = PyMem_Malloc(sizeof *s);
	void *buf = PyMem_Malloc((size_t)want + 1);
	PyObject *list = NULL, *d = NULL;
	if (!s || !buf) {
		PyErr_NoMemory();
		goto out;
	}
	r = shmq_view_snapshot(v, s, NULL, 0);
	if (r < 0) {
		raise_err(r, NULL);
		goto out;
	}
	st = s->stats;
	list = PyList_New(0);
	for (uint32_t i = 0; list && i < st.config.capacity; i++) {
		struct shmq_slot_info si;
		if (shmq_view_slot(v, i, &si, buf, (size_t)want) < 0 || si.kind == SHMQ_SLOT_FREE)
			continue;
		d = PyDict_New();
		if (!d)
			goto fail;
		SET_U(d, &si, slot);
		SET_ITEM(d, "kind", PyUnicode_FromString(shmq_slot_kind_str(si.kind)));
		SET_ITEM(d, "dead_reason",
			 si.kind == SHMQ_SLOT_DEAD
				 ? PyUnicode_FromString(shmq_dead_reason_str(si.dead_reason))
				 : Py_NewRef(Py_None));
		SET_U(d, &si, deliveries);
		SET_U(d, &si, id);
		SET_U(d, &si, owner);
		SET_I(d, &si, owner_pid);
		SET_U(d, &si, len);
		SET_ITEM(d, "data", PyBytes_FromStringAndSize(buf, si.copied));
		SET_U(d, &si, age_ms);
		SET_I(d, &si, due_in_ms);
		SET_ITEM(d, "torn", PyBool_FromLong(si.torn));
		SET_ITEM(d, "key",
			 si.key_len ? PyBytes_FromStringAndSize((const char *)si.key, si.key_len)
				    : Py_NewRef(Py_None));
		if (PyList_Append(list, d) < 0)
			goto fail;
		Py_CLEAR(d);
		continue;
fail:
		Py_CLEAR(d);
		Py_CLEAR(list);
	}
out:
	PyMem_Free(s);
	PyMem_Free(buf);
	shmq_view_close(v);
	return list;
}

static void check_collect(void *ctx, int severity, const char *what)
{
	PyObject *list = ctx;
	if (PyErr_Occurred())
		return;
	PyObject *t = Py_BuildValue("(ss)", severity == SHMQ_CHECK_ERROR ? "error" : "warning", what);
	if (t) {
		PyList_Append(list, t);
		Py_DECREF(t);
	}
}

static PyObject *mod_check(PyObject *mod, PyObject *arg)
{
	(void)mod;
	const char *name = PyUnicode_AsUTF8(arg);
	if (!name)
		return NULL;
	PyObject *list = PyList_New(0);
	if (!list)
		return NULL;
	int r = shmq_check_name(name, check_collect, list);
	if (PyErr_Occurred()) {
		Py_DECREF(list);
		return NULL;
	}
	if (r < 0) {
		Py_DECREF(list);
		return raise_err(r, NULL);
	}
	return list;
}

static PyObject *mod_register(PyObject *mod, PyObject *arg)
{
	(void)mod;
	Py_XSETREF(DuplicateType, Py_NewRef(arg));
	Py_RETURN_NONE;
}

/* For bench.py: n receives (timeout 0) and acks in a C loop on queue q, the figure Python's
 * q.recv(0).ack() is held against. Returns the nanoseconds taken; stops early (ShmqError) if the
 * queue runs dry. */
static PyObject *mod_bench_recv_ack(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
	(void)mod;
	if (nargs != 2 || !PyObject_TypeCheck(args[0], &QueueType)) {
		PyErr_SetString(PyExc_TypeError, "_bench_recv_ack(queue, n)");
		return NULL;
	}
	QueueObject *q = (QueueObject *)args[0];
	long n = PyLong_AsLong(args[1]);
	if ((n == -1 && PyErr_Occurred()) || queue_check(q) < 0)
		return NULL;
	struct timespec a, b;
	int r = 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n && r == 0; i++) {
		struct shmq_msg m;
		r = shmq_recv(q->q, &m, 0);
		if (r == 0)
			r = shmq_ack(q->q, &m);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (r < 0)
		return raise_err(r, NULL);
	return PyLong_FromLongLong((long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
}

/* For bench.py: the cost of calling a METH_NOARGS function and nothing else. */
static PyObject *mod_noop(PyObject *mod, PyObject *unused)
{
	(void)mod, (void)unused;
	Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
	{"unlink", mod_unlink, METH_O,
	 "unlink(name)\nRemoves queue NAME; processes that have it open keep working."},
	{"strerror", mod_strerror, METH_O, "strerror(errno) -> str\nshmq's text for an errno."},
	{"snapshot", mod_snapshot, METH_O,
	 "snapshot(name) -> dict\nA read-only look at queue NAME (no participant record taken): stats, "
	 "lanes\n"
	 "('lane': list of dict) and the participant records ('participants_list': list of dict)."},
	{"slots", (PyCFunction)(void (*)(void))mod_slots, METH_FASTCALL | METH_KEYWORDS,
	 "slots(name, payload_bytes=64) -> list of dict\nThe slots of queue NAME that are not free, "
	 "read-only,\n"
	 "with up to payload_bytes of each payload."},
	{"check", mod_check, METH_O,
	 "check(name) -> list of (severity, text)\nshmq check: the consistency findings for queue NAME."},
	{"_register_duplicate", mod_register, METH_O, NULL},
	{"_bench_recv_ack", (PyCFunction)(void (*)(void))mod_bench_recv_ack, METH_FASTCALL, NULL},
	{"_noop", mod_noop, METH_NOARGS, NULL},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef shmq_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "shmq._shmq",
	.m_doc = "CPython binding of libshmq (see the shmq package).",
	.m_size = -1,
	.m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__shmq(void)
{
	if (PyType_Ready(&QueueType) < 0 || PyType_Ready(&MessageType) < 0 || PyType_Ready(&WorkerType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&shmq_module);
	if (!m)
		return NULL;
	Error = PyErr_NewExceptionWithDoc("shmq.ShmqError",
					  "An error from shmq: an OSError with errno and shmq's text.",
					  PyExc_OSError, NULL);
	Full = PyErr_NewExceptionWithDoc(
		"shmq.Full", "A send found the queue full for its whole timeout (EAGAIN).", Error, NULL);
	LeaseLost = PyErr_NewExceptionWithDoc(
		"shmq.LeaseLost",
		"The message's lease was lost (ESTALE): it was requeued and may be delivered again.", Error,
		NULL);
	if (!Error || !Full || !LeaseLost || PyModule_AddObjectRef(m, "Error", Error) < 0 ||
	    PyModule_AddObjectRef(m, "ShmqError", Error) < 0 || PyModule_AddObjectRef(m, "Full", Full) < 0 ||
	    PyModule_AddObjectRef(m, "LeaseLost", LeaseLost) < 0 ||
	    PyModule_AddObjectRef(m, "Queue", (PyObject *)&QueueType) < 0 ||
	    PyModule_AddObjectRef(m, "Message", (PyObject *)&MessageType) < 0 ||
	    PyModule_AddObjectRef(m, "Worker", (PyObject *)&WorkerType) < 0 ||
	    PyModule_AddIntConstant(m, "ACK", SHMQ_WORKER_ACK) < 0 ||
	    PyModule_AddIntConstant(m, "RETRY", SHMQ_WORKER_RETRY) < 0 ||
	    PyModule_AddIntConstant(m, "REJECT", SHMQ_WORKER_REJECT) < 0 ||
	    PyModule_AddIntConstant(m, "KEY_MAX", SHMQ_KEY_MAX) < 0 ||
	    PyModule_AddIntConstant(m, "SLOT_HEADER", SHMQ_SLOT_HEADER) < 0 ||
	    PyModule_AddObjectRef(m, "HAVE_FD", shmq_fd && shmq_fd_arm ? Py_True : Py_False) < 0 ||
	    PyModule_AddIntConstant(m, "VERSION_MAJOR", SHMQ_VERSION_MAJOR) < 0 ||
	    PyModule_AddIntConstant(m, "VERSION_MINOR", SHMQ_VERSION_MINOR) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}

# SPDX-License-Identifier: MIT
"""shmq: a leased, crash-safe message queue in POSIX shared memory, from Python.

    import shmq
    with shmq.Queue.create("jobs", capacity=1024) as q:
        q.send(b"hello")
        msg = q.recv(timeout_ms=1000)      # a Message, or None on timeout
        print(bytes(msg.payload))          # payload: a zero-copy memoryview until settled
        msg.ack()

Errors are shmq.ShmqError (an OSError: .errno and shmq's text); shmq.Full when a send found the
queue full for its whole timeout, shmq.LeaseLost when a settle found the lease lost (ESTALE).
The C extension (shmq._shmq) does the work; this module adds asyncio, the worker decorator and
the Verdict and Duplicate types.
"""

import asyncio
import enum
import time

from . import _shmq
from ._shmq import (
    ACK,
    HAVE_FD,
    KEY_MAX,
    SLOT_HEADER,
    REJECT,
    RETRY,
    Full,
    LeaseLost,
    Message,
    ShmqError,
    check,
    slots,
    snapshot,
    strerror,
    unlink,
)

Error = ShmqError

__all__ = [
    "ACK", "RETRY", "REJECT", "HAVE_FD", "KEY_MAX", "SLOT_HEADER", "AsyncQueue", "Duplicate", "Error", "Full",
    "LeaseLost", "Message", "Queue", "ShmqError", "Verdict", "Worker", "check", "slots", "snapshot",
    "strerror", "unlink", "worker",
]


class Duplicate(int):
    """What send_keyed returns when its key was sent within the dedup window: nothing was
    enqueued; the int is the id of the first message sent with that key."""

    def __repr__(self):
        return f"Duplicate({int(self)})"


_shmq._register_duplicate(Duplicate)


class Verdict(enum.IntEnum):
    """What a worker handler returns (None counts as ACK, an exception as RETRY)."""

    ACK = ACK  # done: ack (ack_done with dedup=True)
    RETRY = RETRY  # failed this time: nack with the queue's backoff
    REJECT = REJECT  # will never work: to the dead-letter queue


class Queue(_shmq.Queue):
    """A handle on one queue: Queue.create(name, **config) or Queue.open(name).

    A context manager (closes on exit), an iterator (``for msg in q``: blocking receives) and an
    async iterator (``async for msg in q``: receives through the queue's descriptor)."""

    def __aiter__(self):
        return AsyncQueue(self).__aiter__()


class AsyncQueue:
    """asyncio over a Queue: ``await aq.send(data)``, ``await aq.recv()``, ``async for msg in aq``.

    Receiving waits on Queue.fileno() (shmq_fd) with the event loop's add_reader, following its
    contract: receive with timeout 0, arm after nothing was there, wait only when arm() says
    armed. A send that finds the queue full retries with short sleeps (shmq has no descriptor for
    room to send). The settle calls (ack, nack, ...) never block: call them directly."""

    def __init__(self, queue):
        self.queue = queue

    def __getattr__(self, name):
        return getattr(self.queue, name)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.queue.close()

    async def _readable(self, fd):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def ready():
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            loop.remove_reader(fd)

    async def recv(self, timeout=None):
        """Receives one message; None if none came within timeout seconds (None: no limit)."""
        q = self.queue
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = q.fileno()  # ENOSYS from a library without shmq_fd
        while True:
            msg = q.recv(0)
            if msg is not None:
                return msg
            if q.arm():
                continue
            if deadline is None:
                await self._readable(fd)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self._readable(fd), left)
            except asyncio.TimeoutError:
                pass

    async def send(self, data, timeout=None):
        """Sends one message; waits (without blocking the loop) while the queue is full, at most
        timeout seconds (None: no limit), then raises Full."""
        return await self._send(self.queue.send, (data, 0), timeout)

    async def send_keyed(self, key, data, timeout=None, route=None):
        return await self._send(self.queue.send_keyed, (key, data, 0, route), timeout)

    async def send_routed(self, route, data, timeout=None):
        return await self._send(self.queue.send_routed, (route, data, 0), timeout)

    async def send_batch(self, messages, timeout=None):
        return await self._send(self.queue.send_batch, (messages, 0), timeout)

    async def _send(self, call, args, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0002
        while True:
            try:
                return call(*args)
            except Full:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.queue.closed:
            raise StopAsyncIteration
        return await self.recv()


class Worker(_shmq.Worker):
    """shmq's worker runtime (shmq_worker.h) with a Python handler: ``handler(msg)`` runs on one of
    ``threads`` threads per message; it returns a Verdict (None: ACK) or raises (RETRY). A keeper
    thread extends the lease of every message whose handler still runs, as in C. msg.payload is
    valid until the handler returns.

    A context manager: starts on enter; on exit stops, lets running handlers finish (grace_ms) and
    joins (stats() still answers after it). run() starts and blocks until KeyboardInterrupt (or stop() from another thread)."""

    def __new__(cls, queue, handler, threads=1, poll_ms=100, grace_ms=-1, dedup=False):
        def call(msg):
            try:
                v = handler(msg)
            except Exception:  # a failed delivery: retried after the backoff
                return RETRY
            if v is None or v is True:
                return ACK
            if v is False:
                return RETRY
            return int(v)

        return super().__new__(cls, queue, call, threads, poll_ms, grace_ms, bool(dedup))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        self.join()  # stats() still answers; close() (or the last reference) frees

    def run(self):
        self.start()
        try:
            while self.state == 0:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            if self.state == 0:  # a second stop would end the grace period
                self.stop()
            self.join()


def worker(queue, threads=1, poll_ms=100, grace_ms=-1, dedup=False):
    """Decorator: ``@shmq.worker(q, threads=4)`` over ``def handle(msg): ...`` gives a Worker."""

    def wrap(fn):
        return Worker(queue, fn, threads=threads, poll_ms=poll_ms, grace_ms=grace_ms, dedup=dedup)

    return wrap

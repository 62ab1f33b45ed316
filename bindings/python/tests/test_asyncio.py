# SPDX-License-Identifier: MIT
"""asyncio through the queue's descriptor (shmq_fd): async for, await send, await recv."""
import asyncio
import threading
import time

import pytest

import shmq

needs_fd = pytest.mark.skipif(
    not shmq.HAVE_FD, reason="this libshmq has no shmq_fd/shmq_fd_arm (the i15-fd change): "
    "asyncio receives wait on that descriptor")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


@needs_fd
def test_async_for_receives_messages_sent_while_the_loop_waits(queue):
    def produce():
        for i in range(5):
            time.sleep(0.02)
            queue.send(b"%d" % i)

    async def consume():
        got = []
        threading.Thread(target=produce).start()
        async for msg in queue:
            got.append(bytes(msg))
            msg.ack()
            if len(got) == 5:
                break
        return got

    assert run(consume()) == [b"0", b"1", b"2", b"3", b"4"]


@needs_fd
def test_await_send_and_recv_move_messages_without_blocking_the_loop(qname):
    async def main():
        with shmq.Queue.create(qname, capacity=4) as q:
            aq = shmq.AsyncQueue(q)
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.005)
                    ticks += 1

            t = asyncio.ensure_future(ticker())
            assert await aq.recv(timeout=0.1) is None  # the loop ran meanwhile
            for i in range(4):
                await aq.send(b"%d" % i)
            sender = asyncio.ensure_future(aq.send(b"fifth"))  # full: waits for room
            await asyncio.sleep(0.05)
            assert not sender.done()
            first = await aq.recv()
            kept = bytes(first)
            first.ack()
            await sender
            rest = [await aq.recv() for _ in range(4)]
            t.cancel()
            return ticks, kept, [bytes(m) for m in rest]

    ticks, first, rest = run(main())
    assert ticks > 5 and first == b"0" and rest == [b"1", b"2", b"3", b"fifth"]


def test_a_full_queue_makes_await_send_raise_full_after_its_timeout(qname):
    async def main():
        with shmq.Queue.create(qname, capacity=2) as q:
            aq = shmq.AsyncQueue(q)
            await aq.send(b"1")
            await aq.send(b"2")
            with pytest.raises(shmq.Full):
                await aq.send(b"3", timeout=0.05)

    run(main())


@needs_fd
def test_the_descriptor_is_not_readable_on_an_idle_armed_queue(queue):
    import select
    assert queue.recv(0) is None
    if queue.arm():
        pytest.skip("a look after the arm found something")
    r, _, _ = select.select([queue.fileno()], [], [], 0.2)
    assert r == []
    queue.send(b"x")
    r, _, _ = select.select([queue.fileno()], [], [], 5)
    assert r == [queue.fileno()]
    assert bytes(queue.recv(0)) == b"x"


@pytest.mark.skipif(shmq.HAVE_FD, reason="the library has shmq_fd")
def test_without_shmq_fd_fileno_and_async_recv_raise_enosys(queue):
    import errno
    with pytest.raises(shmq.ShmqError) as e:
        queue.fileno()
    assert e.value.errno == errno.ENOSYS
    with pytest.raises(shmq.ShmqError) as e:
        run(shmq.AsyncQueue(queue).recv())
    assert e.value.errno == errno.ENOSYS


class FakeDescriptor:
    """A queue whose fileno()/arm() follow shmq_fd's contract with a pipe: arm drains it and
    says 1 when a message is there; a send to an armed queue writes one byte. It proves the
    asyncio layer's loop against the contract without the library's descriptor."""

    def __init__(self, q):
        import os
        self.q, self.closed = q, False
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.armed, self.arms = False, 0

    def fileno(self):
        return self.r

    def recv(self, timeout_ms):
        return self.q.recv(timeout_ms)

    def arm(self):
        import os
        self.arms += 1
        try:
            os.read(self.r, 4096)
        except BlockingIOError:
            pass
        self.armed = True
        return self.q.stats()["ready"] > 0

    def send(self, data):
        import os
        self.q.send(data)
        if self.armed:
            self.armed = False
            os.write(self.w, b"!")


def test_async_receives_follow_the_descriptor_contract_without_a_busy_loop(queue):
    fake = FakeDescriptor(queue)

    def produce():
        for i in range(5):
            time.sleep(0.05)
            fake.send(b"%d" % i)

    async def consume():
        got = []
        threading.Thread(target=produce).start()
        async for msg in shmq.AsyncQueue(fake):
            got.append(bytes(msg))
            msg.ack()
            if len(got) == 5:
                break
        assert await shmq.AsyncQueue(fake).recv(timeout=0.1) is None
        return got

    assert run(consume()) == [b"0", b"1", b"2", b"3", b"4"]
    # one arm per wait (and per receive that found nothing), not one per loop turn: 0.35 s of
    # waiting on a busy loop would arm thousands of times
    assert 5 <= fake.arms <= 14, fake.arms

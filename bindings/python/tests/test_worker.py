# SPDX-License-Identifier: MIT
"""The worker runtime with a Python handler: verdicts, and the lease kept while a handler runs."""
import threading
import time

import pytest

import shmq


def _wait_for(pred, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_a_decorated_handler_returning_none_acks(queue):
    seen = []

    @shmq.worker(queue, threads=2)
    def handle(msg):
        seen.append(bytes(msg.payload))

    with handle as w:
        queue.send_batch([b"a", b"b", b"c"])
        assert _wait_for(lambda: w.stats()["acked"] == 3)
    assert sorted(seen) == [b"a", b"b", b"c"]
    assert queue.stats()["acked"] == 3


def test_a_handler_returning_retry_or_raising_gets_the_message_again(qname):
    with shmq.Queue.create(qname, capacity=16, retry_base_ms=1, retry_max_ms=5) as q:
        calls = []

        def handle(msg):
            calls.append(msg.deliveries)
            if msg.deliveries == 1:
                return shmq.Verdict.RETRY
            if msg.deliveries == 2:
                raise RuntimeError("failed this time")
            return shmq.Verdict.ACK

        with shmq.Worker(q, handle) as w:
            q.send(b"x")
            assert _wait_for(lambda: w.stats()["acked"] == 1)
        assert calls == [1, 2, 3]
        assert q.stats()["retried"] == 2


def test_a_handler_returning_reject_dead_letters_the_message(queue):
    with shmq.Worker(queue, lambda msg: shmq.REJECT) as w:
        queue.send(b"poison")
        assert _wait_for(lambda: w.stats()["rejected"] == 1)
    dead = queue.dlq_list()
    assert [(d["data"], d["reason"]) for d in dead] == [(b"poison", "rejected")]


def test_the_lease_is_kept_alive_while_the_handler_runs(qname):
    with shmq.Queue.create(qname, capacity=16, lease_ms=150) as q, shmq.Queue.open(qname) as other:
        started, release = threading.Event(), threading.Event()

        def handle(msg):
            started.set()
            release.wait(10)

        with shmq.Worker(q, handle) as w:
            q.send(b"long job")
            assert started.wait(10)
            # 4 leases long: the keeper extends it, so no reclaim pass gives it to anyone else
            for _ in range(6):
                time.sleep(0.1)
                other.reclaim()
                assert other.recv(0) is None
            release.set()
            assert _wait_for(lambda: w.stats()["acked"] == 1)
            assert w.stats()["extended"] >= 2
        assert q.stats()["acked"] == 1 and q.stats()["redelivered"] == 0


def test_a_workers_message_is_settled_by_the_verdict_only(queue):
    errors = []

    def handle(msg):
        try:
            msg.ack()
        except ValueError as e:
            errors.append(e)

    with shmq.Worker(queue, handle) as w:
        queue.send(b"x")
        assert _wait_for(lambda: w.stats()["acked"] == 1)
    assert len(errors) == 1


def test_the_payload_view_of_a_workers_message_is_released_when_the_handler_returns(queue):
    kept = []
    with shmq.Worker(queue, lambda msg: kept.append(msg.payload)) as w:
        queue.send(b"x")
        assert _wait_for(lambda: w.stats()["acked"] == 1)
    with pytest.raises(ValueError):
        kept[0][0]


def test_run_returns_after_stop_from_another_thread(queue):
    w = shmq.Worker(queue, lambda msg: None)
    threading.Timer(0.3, w.stop).start()
    w.run()
    assert w.state == 1
    w.close()


def test_a_dedup_worker_acks_work_recorded_done_without_calling_the_handler(queue):
    calls = []
    queue.send_keyed(b"done-already", b"x")
    queue.done_mark(b"done-already")
    queue.send_keyed(b"fresh", b"y")
    with shmq.Worker(queue, lambda msg: calls.append(msg.key), dedup=True) as w:
        assert _wait_for(lambda: w.stats()["acked"] + w.stats()["skipped_done"] == 2)
    assert calls == [b"fresh"] and w.stats()["skipped_done"] == 1
    assert queue.done_check(b"fresh")  # the ACK verdict was applied with ack_done

# SPDX-License-Identifier: MIT
"""The Queue and Message calls, one behaviour per test."""
import errno
import time

import pytest

import shmq


def test_create_and_open_are_context_managers_that_close_the_handle(qname):
    with shmq.Queue.create(qname, capacity=16, slot_size=128) as q:
        assert not q.closed
        with shmq.Queue.open(qname) as q2:
            q2.send(b"from the second handle")
            assert q2.stats()["participants"] == 2
        assert q2.closed
        assert bytes(q.recv(0)) == b"from the second handle"
    assert q.closed
    with pytest.raises(ValueError):
        q.send(b"x")


def test_create_passes_the_config_through(qname):
    with shmq.Queue.create(qname, capacity=32, slot_size=192, lease_ms=1234, max_deliveries=3,
                           lanes=2, dispatch="key_hash", dedup_window_ms=0) as q:
        cfg = q.stats()["config"]
        assert (cfg["capacity"], cfg["slot_size"], cfg["lease_ms"], cfg["max_deliveries"]) == \
            (32, 192, 1234, 3)
        assert cfg["lanes"] == 2 and cfg["dispatch"] == "key_hash"
        assert q.max_payload == 192 - shmq.SLOT_HEADER == 192 - 48


def test_errors_are_oserrors_carrying_errno_and_shmqs_text(qname):
    with shmq.Queue.create(qname, capacity=16):
        with pytest.raises(shmq.ShmqError) as e:
            shmq.Queue.create(qname)
        assert isinstance(e.value, OSError)
        assert e.value.errno == errno.EEXIST
        assert e.value.strerror == shmq.strerror(errno.EEXIST)
    with pytest.raises(shmq.ShmqError) as e:
        shmq.Queue.open(qname + "-none")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(shmq.ShmqError) as e:
        shmq.Queue.create(qname + "-bad", capacity=3)
    assert e.value.errno == errno.EINVAL


def test_a_payload_over_the_maximum_raises_emsgsize(queue):
    with pytest.raises(shmq.ShmqError) as e:
        queue.send(b"x" * (queue.max_payload + 1))
    assert e.value.errno == errno.EMSGSIZE


def test_a_send_to_a_full_queue_raises_full_with_eagain(qname):
    with shmq.Queue.create(qname, capacity=2) as q:
        q.send(b"1")
        q.send(b"2")
        with pytest.raises(shmq.Full) as e:
            q.send(b"3", timeout_ms=0)
        assert e.value.errno == errno.EAGAIN
        assert isinstance(e.value, shmq.ShmqError)


def test_send_accepts_any_bytes_like_and_recv_returns_it_in_order(queue):
    queue.send(b"bytes")
    queue.send(bytearray(b"bytearray"))
    queue.send(memoryview(b"xmemoryview")[1:])
    got = [bytes(queue.recv(0)) for _ in range(3)]
    assert got == [b"bytes", b"bytearray", b"memoryview"]


def test_recv_returns_none_when_nothing_arrives_within_the_timeout(queue):
    assert queue.recv(0) is None
    assert queue.recv(timeout_ms=20) is None


def test_send_batch_sends_in_order_and_returns_the_count(queue):
    assert queue.send_batch([b"a", b"b", b"c"]) == 3
    msgs = queue.recv_batch(10, timeout_ms=0)
    assert [bytes(m) for m in msgs] == [b"a", b"b", b"c"]
    for m in msgs:
        m.ack()


def test_send_batch_stops_where_the_queue_is_full(qname):
    with shmq.Queue.create(qname, capacity=4) as q:
        assert q.send_batch([b"m"] * 6, timeout_ms=0) == 4


def test_a_keyed_send_repeating_a_key_is_a_duplicate_of_the_first_id(queue):
    first = queue.send_keyed(b"order-1", b"pay")
    dup = queue.send_keyed(b"order-1", b"pay again")
    assert not isinstance(first, shmq.Duplicate)
    assert isinstance(dup, shmq.Duplicate) and dup == first
    m = queue.recv(0)
    assert m.key == b"order-1" and m.id == first
    assert queue.recv(0) is None


def test_routed_sends_of_one_route_land_on_one_lane(qname):
    with shmq.Queue.create(qname, capacity=64, lanes=4, dispatch="key_hash") as q:
        for i in range(8):
            q.send_routed(b"customer-7", b"%d" % i)
        q.send_keyed(b"k1", b"keyed and routed", route=b"customer-7")
        lanes = {m.id % 4 for m in q.recv_batch(16, timeout_ms=0)}
        assert len(lanes) == 1


def test_iterating_a_queue_receives_until_it_is_closed(queue):
    queue.send_batch([b"1", b"2"])
    got = []
    for msg in queue:
        got.append(bytes(msg))
        msg.ack()
        if len(got) == 2:
            queue.close()
    assert got == [b"1", b"2"]


def test_an_acked_message_is_gone_and_counted(queue):
    queue.send(b"x")
    queue.recv(0).ack()
    st = queue.stats()
    assert st["acked"] == 1 and st["ready"] == 0 and st["inflight"] == 0


def test_nack_with_a_delay_redelivers_after_it(queue):
    queue.send(b"x")
    m = queue.recv(0)
    m.nack(delay_ms=100)
    assert queue.stats()["delayed"] == 1
    again = queue.recv(timeout_ms=3000)
    assert bytes(again) == b"x" and again.deliveries == 2
    again.ack()


def test_reject_sends_the_message_to_the_dead_letter_queue(queue):
    queue.send(b"poison")
    queue.recv(0).reject()
    dead = queue.dlq_list()
    assert len(dead) == 1 and dead[0]["data"] == b"poison" and dead[0]["reason"] == "rejected"
    assert queue.dlq_redrive() == 1
    m = queue.recv(timeout_ms=1000)
    assert bytes(m) == b"poison"
    m.reject()
    assert queue.dlq_purge() == 1 and queue.dlq_list() == []


def test_a_settled_message_cannot_be_settled_again(queue):
    queue.send(b"x")
    m = queue.recv(0)
    m.ack()
    assert m.settled
    with pytest.raises(ValueError):
        m.ack()


def test_a_lost_lease_raises_lease_lost_with_estale(qname):
    with shmq.Queue.create(qname, capacity=16, lease_ms=50) as q:
        q.send(b"x")
        m = q.recv(0)
        time.sleep(0.2)
        q.reclaim()
        with pytest.raises(shmq.LeaseLost) as e:
            m.ack()
        assert e.value.errno == errno.ESTALE
        assert m.settled


def test_extend_keeps_a_lease_past_its_length(qname):
    with shmq.Queue.create(qname, capacity=16, lease_ms=200) as q:
        q.send(b"x")
        m = q.recv(0)
        for _ in range(4):
            time.sleep(0.1)
            m.extend(200)
        q.reclaim()
        m.ack()
        assert q.stats()["extended"] == 4


def test_ack_done_records_the_work_so_a_redelivery_is_done(queue):
    queue.send_keyed(b"job-9", b"x")
    m = queue.recv(0)
    assert not m.is_done()
    m.ack_done()
    assert queue.done_check(b"job-9")
    queue.done_mark(b"other")
    assert queue.done_check(b"other") and not queue.done_check(b"never")


def test_is_done_says_a_message_whose_key_was_recorded_done_needs_no_work(queue):
    queue.send_keyed(b"job-10", b"x")
    m = queue.recv(0)
    queue.done_mark(b"job-10")  # as a consumer that died after the work, before its ack, did
    assert m.is_done()
    m.ack()


def test_a_batch_whose_first_message_finds_no_room_raises_full(qname):
    with shmq.Queue.create(qname, capacity=2) as q:
        q.send_batch([b"1", b"2"])
        with pytest.raises(shmq.Full):
            q.send_batch([b"3"], timeout_ms=0)


def test_stats_and_the_inspection_views_are_dicts(queue, qname):
    queue.send(b"first")
    queue.send(b"second")
    queue.recv(0)
    st = queue.stats()
    assert st["ready"] == 1 and st["inflight"] == 1 and st["sent"] == 2
    snap = shmq.snapshot(qname)
    assert snap["ready"] == 1 and snap["lanes"] == 1 and len(snap["lane"]) == 1
    assert snap["participants_list"][0]["alive"] == 1
    kinds = sorted((s["kind"], s["data"]) for s in shmq.slots(qname))
    assert kinds == [("leased", b"first"), ("ready", b"second")]
    assert [f for f in shmq.check(qname) if f[0] == "error"] == []


def test_set_prefetch_limits_the_messages_held(queue):
    queue.send_batch([b"1", b"2", b"3"])
    queue.set_prefetch(2)
    assert len(queue.recv_batch(10, timeout_ms=0)) == 2
    assert queue.recv(0) is None


def test_a_message_received_while_another_thread_closes_the_queue_stays_readable(qname):
    import threading
    with shmq.Queue.create(qname, capacity=16) as q, shmq.Queue.open(qname) as other:
        got = []

        def receive():
            try:
                got.append(q.recv(timeout_ms=5000))
            except ValueError:  # the wait saw the close first
                got.append(None)

        t = threading.Thread(target=receive)
        t.start()
        time.sleep(0.2)  # the receive waits without the GIL
        q.close()  # while it waits: the handle must stay mapped for what it brings back
        other.send(b"arrived after close")
        t.join()
        msg = got[0]
        if msg is not None:
            assert bytes(msg.payload) == b"arrived after close"
            msg.ack()
        assert q.closed

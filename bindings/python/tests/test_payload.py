# SPDX-License-Identifier: MIT
"""The payload's lifetime: a zero-copy view into the slot until the message is settled."""
import ctypes
import os

import pytest

import shmq


class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


def _address(view):
    b = _PyBuffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(view), ctypes.byref(b), 0)
    addr = b.buf
    ctypes.pythonapi.PyBuffer_Release(ctypes.byref(b))
    return addr


def _segment_ranges(name):
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("/dev/shm/" + name):
                lo, hi = line.split()[0].split("-")
                yield int(lo, 16), int(hi, 16)


@pytest.fixture
def msg(queue):
    queue.send(b"payload bytes")
    return queue.recv(0)


def test_the_payload_is_a_read_only_view_into_the_queues_segment(msg, qname):
    v = msg.payload
    assert isinstance(v, memoryview) and v.readonly and v == b"payload bytes"
    addr = _address(v)
    assert any(lo <= addr < hi for lo, hi in _segment_ranges(qname))
    assert msg.payload is v  # one view per message, the one the settle releases


@pytest.mark.parametrize("settle", ["ack", "nack", "reject", "ack_done"])
def test_the_payload_view_raises_once_the_message_is_settled(msg, settle):
    v = msg.payload
    assert v[0:7] == b"payload"
    getattr(msg, settle)()
    with pytest.raises(ValueError):
        v[0]
    with pytest.raises(ValueError):
        bytes(v)
    with pytest.raises(BufferError):
        msg.payload
    with pytest.raises(BufferError):
        bytes(msg)


def test_bytes_of_the_message_is_a_copy_that_survives_the_settle(msg):
    kept = bytes(msg)
    also = bytes(msg.payload)
    msg.ack()
    assert kept == b"payload bytes" and also == kept


def test_a_slice_alive_at_the_settle_makes_it_raise_and_change_nothing(msg, queue):
    part = msg.payload[0:7]
    with pytest.raises(BufferError):
        msg.ack()
    assert not msg.settled and queue.stats()["inflight"] == 1
    assert part == b"payload"
    part.release()
    msg.ack()
    assert msg.settled and queue.stats()["acked"] == 1


def test_a_memoryview_of_the_message_alive_at_the_settle_makes_it_raise(msg):
    mine = memoryview(msg)
    with pytest.raises(BufferError):
        msg.nack()
    mine.release()
    msg.nack()


def test_a_released_payload_view_is_replaced_by_a_new_one(msg):
    v = msg.payload
    v.release()
    assert bytes(msg.payload) == b"payload bytes"
    msg.ack()


def test_messages_outlive_a_closed_queue_until_settled(qname):
    q = shmq.Queue.create(qname, capacity=16)
    q.send(b"late")
    m = q.recv(0)
    v = m.payload
    q.close()
    assert v == b"late"  # the mapping stays while the message is unsettled
    m.ack()
    with pytest.raises(ValueError):
        v[0]
    assert os.path.exists("/dev/shm/" + qname)

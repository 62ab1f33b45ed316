#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench.py: shmq from Python against multiprocessing.Queue, multiprocessing.Pipe and pyzmq ipc://.

Two processes per measurement, 64-byte messages:
  throughput  one producer, one consumer (each message received, and acked for shmq), msgs/s
  round trip  a ping process and an echo process, one message each way, p50 and p99 in us
Every transport runs once per round, the rounds interleaved (A B C D, A B C D, ...), and the table
gives the median of the rounds. Then, in one process: Python's q.recv(0).ack() against the same
loop in C (shmq._shmq._bench_recv_ack) plus Python's own cost of two calls, and the per-call cost
of the binding techniques (this C extension, ctypes, cffi when installed) on the same calls.

  usage: PYTHONPATH=build/python /usr/bin/python3 bench/python/bench.py [--quick] [--rounds N]
"""

import argparse
import ctypes
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import shmq
from shmq import _shmq

PAYLOAD = b"x" * 64


# ---- transports: each gives (producer, consumer) for throughput and (ping, echo) for round trips ----

def shmq_names(tag):
    return f"pybench-{os.getpid()}-{tag}"


class Shmq:
    name = "shmq"

    def setup(self):
        self.a, self.b = shmq_names("a"), shmq_names("b")
        for n in (self.a, self.b):
            shmq.Queue.create(n, capacity=4096, slot_size=128).close()

    def teardown(self):
        for n in (self.a, self.b):
            shmq.unlink(n)

    def produce(self, n):
        with shmq.Queue.open(self.a) as q:
            send = q.send
            for _ in range(n):
                send(PAYLOAD)

    def consume(self, n):
        with shmq.Queue.open(self.a) as q:
            recv = q.recv
            for _ in range(n):
                recv().ack()

    def ping(self, n):
        out = []
        with shmq.Queue.open(self.a) as tx, shmq.Queue.open(self.b) as rx:
            send, recv, clock = tx.send, rx.recv, time.perf_counter_ns
            for _ in range(n):
                t = clock()
                send(PAYLOAD)
                recv().ack()
                out.append(clock() - t)
        return out

    def echo(self, n):
        with shmq.Queue.open(self.a) as rx, shmq.Queue.open(self.b) as tx:
            for _ in range(n):
                m = rx.recv()
                tx.send(m.payload)
                m.ack()


class MpQueue:
    name = "multiprocessing.Queue"

    def setup(self):
        self.a, self.b = mp.Queue(), mp.Queue()

    def teardown(self):
        pass

    def produce(self, n):
        put = self.a.put
        for _ in range(n):
            put(PAYLOAD)

    def consume(self, n):
        get = self.a.get
        for _ in range(n):
            get()

    def ping(self, n):
        out, clock = [], time.perf_counter_ns
        for _ in range(n):
            t = clock()
            self.a.put(PAYLOAD)
            self.b.get()
            out.append(clock() - t)
        return out

    def echo(self, n):
        for _ in range(n):
            self.b.put(self.a.get())


class MpPipe:
    name = "multiprocessing.Pipe"

    def setup(self):
        self.a, self.b = mp.Pipe()

    def teardown(self):
        self.a.close()
        self.b.close()

    def produce(self, n):
        send = self.a.send_bytes
        for _ in range(n):
            send(PAYLOAD)

    def consume(self, n):
        recv = self.b.recv_bytes
        for _ in range(n):
            recv()

    def ping(self, n):
        out, clock = [], time.perf_counter_ns
        for _ in range(n):
            t = clock()
            self.a.send_bytes(PAYLOAD)
            self.a.recv_bytes()
            out.append(clock() - t)
        return out

    def echo(self, n):
        for _ in range(n):
            self.b.send_bytes(self.b.recv_bytes())


class Zmq:
    name = "pyzmq ipc://"

    def setup(self):
        self.dir = tempfile.mkdtemp(prefix="shmq-pybench-")
        self.a, self.b = f"ipc://{self.dir}/a", f"ipc://{self.dir}/b"

    def teardown(self):
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)

    def produce(self, n):
        import zmq
        ctx = zmq.Context()
        s = ctx.socket(zmq.PUSH)
        s.connect(self.a)
        send = s.send
        for _ in range(n):
            send(PAYLOAD)
        s.close(linger=-1)
        ctx.term()

    def consumer_setup(self):
        import zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.bind(self.a)

    def consume(self, n):
        recv = self.sock.recv
        for _ in range(n):
            recv()
        self.sock.close()
        self.ctx.term()

    def ping(self, n):
        import zmq
        ctx = zmq.Context()
        s = ctx.socket(zmq.PAIR)
        s.connect(self.a)
        out, clock = [], time.perf_counter_ns
        for _ in range(n):
            t = clock()
            s.send(PAYLOAD)
            s.recv()
            out.append(clock() - t)
        s.close()
        ctx.term()
        return out

    def echo(self, n):
        import zmq
        ctx = zmq.Context()
        s = ctx.socket(zmq.PAIR)
        s.bind(self.a)
        self.ready.set()
        for _ in range(n):
            s.send(s.recv())
        s.close(linger=-1)
        ctx.term()


# ---- one measurement ------------------------------------------------------------------------------

def _consumer(t, n, ready, start, done):
    getattr(t, "consumer_setup", lambda: None)()
    ready.set()
    start.wait()
    t.consume(n)
    done.put(time.perf_counter())


def _producer(t, n, start):
    start.wait()
    t.produce(n)


def throughput(t, n):
    """msgs/s from the start signal to the consumer's last message."""
    t.setup()
    ready, start, done = mp.Event(), mp.Event(), mp.Queue()
    c = mp.Process(target=_consumer, args=(t, n, ready, start, done))
    p = mp.Process(target=_producer, args=(t, n, start))
    c.start()
    ready.wait()  # zmq: the consumer binds, the producer connects after
    p.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    start.set()
    end = done.get()
    for proc in (p, c):  # a zmq producer may hang in its context's term: the figure is taken
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    t.teardown()
    return n / (end - t0)


def _echo(t, n):
    t.echo(n)


def round_trip(t, n):
    """(p50, p99) of one message each way, in us."""
    t.setup()
    t.ready = mp.Event()
    e = mp.Process(target=_echo, args=(t, n + 100))
    e.start()
    if isinstance(t, Zmq):
        t.ready.wait()
    lat = sorted(t.ping(n + 100)[100:])  # the first 100 warm up
    e.join(5)
    if e.is_alive():
        e.kill()
        e.join()
    t.teardown()
    return lat[len(lat) // 2] / 1000, lat[len(lat) * 99 // 100] / 1000


# ---- in-process: Python vs C recv+ack, and the binding techniques -----------------------------------

CHUNK = 16384  # messages per refill of the in-process queue (its capacity is 4 chunks)


def _per_call_ns(fn, n, q=None):
    """ns per iteration of fn(k) over n iterations; with q, refilled with k messages before each
    timed chunk of k."""
    total = 0
    for done in range(0, n, CHUNK):
        k = min(CHUNK, n - done)
        for i in range(0, k if q is not None else 0, 1024):  # send_batch takes 1024 at most
            assert q.send_batch([PAYLOAD] * min(1024, k - i), 0) == min(1024, k - i)
        t = time.perf_counter_ns()
        fn(k)
        total += time.perf_counter_ns() - t
    return total / n


def recv_ack_costs(n, rounds):
    """ns per recv(0)+ack: Python through the extension, the same loop in C, and two empty calls."""
    name = shmq_names("inproc")
    py, c, call = [], [], []
    with shmq.Queue.create(name, capacity=4 * CHUNK, slot_size=128) as q:
        def py_loop(k):
            recv = q.recv
            for _ in range(k):
                recv(0).ack()

        def noop_loop(k):
            f = _shmq._noop
            for _ in range(k):
                f()
                f()

        for _ in range(rounds):
            py.append(_per_call_ns(py_loop, n, q))
            # one Python call per chunk of C loop: its cost is spread over 16384 messages
            c.append(_per_call_ns(lambda k: _shmq._bench_recv_ack(q, k), n, q))
            call.append(_per_call_ns(noop_loop, n))
    shmq.unlink(name)
    return statistics.median(py), statistics.median(c), statistics.median(call)


class ShmqMsg(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_uint32), ("deliveries", ctypes.c_uint32),
                ("id", ctypes.c_uint64), ("enqueued_ns", ctypes.c_uint64), ("slot", ctypes.c_uint32),
                ("token", ctypes.c_uint64), ("key", ctypes.c_void_p), ("key_len", ctypes.c_uint32)]


def binding_costs(n, rounds, libpath):
    """ns per call of shmq_max_payload and per recv(0)+ack, through each binding technique."""
    rows = {}
    name = shmq_names("bind")
    lib = ctypes.CDLL(libpath)
    lib.shmq_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.shmq_max_payload.argtypes = [ctypes.c_void_p]
    lib.shmq_max_payload.restype = ctypes.c_uint32
    for f in (lib.shmq_recv, lib.shmq_ack):
        f.restype = ctypes.c_int
    lib.shmq_recv.argtypes = [ctypes.c_void_p, ctypes.POINTER(ShmqMsg), ctypes.c_int]
    lib.shmq_ack.argtypes = [ctypes.c_void_p, ctypes.POINTER(ShmqMsg)]
    try:
        import cffi
        ffi = cffi.FFI()
        ffi.cdef("""typedef struct shmq shmq_t;
            struct shmq_msg { const void *data; uint32_t len; uint32_t deliveries; uint64_t id;
                uint64_t enqueued_ns; uint32_t slot; uint64_t token; const void *key; uint32_t key_len; };
            int shmq_open(const char *name, shmq_t **q); void shmq_close(shmq_t *q);
            uint32_t shmq_max_payload(const shmq_t *q);
            int shmq_recv(shmq_t *q, struct shmq_msg *m, int timeout_ms);
            int shmq_ack(shmq_t *q, struct shmq_msg *m);""")
        clib = ffi.dlopen(libpath)
    except ImportError:
        ffi = None
    with shmq.Queue.create(name, capacity=4 * CHUNK, slot_size=128) as q:
        qp = ctypes.c_void_p()
        assert lib.shmq_open(name.encode(), ctypes.byref(qp)) == 0
        if ffi:
            cq = ffi.new("shmq_t **")
            assert clib.shmq_open(name.encode(), cq) == 0
            cq = cq[0]

        def ext_call(k):
            for _ in range(k):
                q.max_payload

        def ctypes_call(k):
            f = lib.shmq_max_payload
            for _ in range(k):
                f(qp)

        def cffi_call(k):
            f = clib.shmq_max_payload
            for _ in range(k):
                f(cq)

        def ext_recv(k):
            recv = q.recv
            for _ in range(k):
                recv(0).ack()

        def ctypes_recv(k):
            m = ShmqMsg()
            ref, recv, ack = ctypes.byref(m), lib.shmq_recv, lib.shmq_ack
            for _ in range(k):
                recv(qp, ref, 0)
                ack(qp, ref)

        def cffi_recv(k):
            m = ffi.new("struct shmq_msg *")
            recv, ack = clib.shmq_recv, clib.shmq_ack
            for _ in range(k):
                recv(cq, m, 0)
                ack(cq, m)

        cands = [("C extension", ext_call, ext_recv), ("ctypes", ctypes_call, ctypes_recv)]
        if ffi:
            cands.append(("cffi (ABI mode)", cffi_call, cffi_recv))
        for label, _, _ in cands:
            rows[label] = ([], [])
        for _ in range(rounds):
            for label, call, recv in cands:
                rows[label][0].append(_per_call_ns(call, n))
                rows[label][1].append(_per_call_ns(recv, n, q))
        if ffi:
            clib.shmq_close(cq)
        lib.shmq_close(qp)
    shmq.unlink(name)
    return {k: (statistics.median(a), statistics.median(b)) for k, (a, b) in rows.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer messages, for a smoke run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved repeats (median), >= 3")
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(__file__), "../../build/libshmq.so"),
                    help="libshmq.so for the ctypes and cffi comparison")
    args = ap.parse_args()
    n_tp = 20000 if args.quick else 200000
    n_rt = 2000 if args.quick else 20000
    n_call = 20000 if args.quick else 200000
    mp.set_start_method("fork")
    transports = [Shmq(), MpQueue(), MpPipe()]
    try:
        import zmq  # noqa: F401
        transports.append(Zmq())
    except ImportError:
        print("pyzmq not installed (Debian: python3-zmq): its row is skipped")
    tp = {t.name: [] for t in transports}
    rt = {t.name: [] for t in transports}
    for r in range(args.rounds):
        for t in transports:
            tp[t.name].append(throughput(t, n_tp))
            if getattr(t, "round_trip", True):
                rt[t.name].append(round_trip(t, n_rt))
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"\nPython {sys.version.split()[0]}, 64-byte messages, 2 processes; median of {args.rounds} "
          f"interleaved rounds ({n_tp} messages per throughput run, {n_rt} round trips)")
    print(f"{'transport':<24}{'msgs/s':>12}{'rtt p50 us':>12}{'rtt p99 us':>12}")
    med = {}
    for t in transports:
        m_tp = statistics.median(tp[t.name])
        med[t.name] = m_tp
        if rt[t.name]:
            m_p50 = statistics.median(x[0] for x in rt[t.name])
            m_p99 = statistics.median(x[1] for x in rt[t.name])
            print(f"{t.name:<24}{m_tp:>12,.0f}{m_p50:>12.1f}{m_p99:>12.1f}")
        else:
            print(f"{t.name:<24}{m_tp:>12,.0f}{'-':>12}{'-':>12}")
    s = med["shmq"]
    print("\nthroughput ratios, one message per call on both sides:")
    print(f"  shmq / multiprocessing.Queue: {s / med['multiprocessing.Queue']:5.1f}x (target >= 10x)")
    print(f"  shmq / multiprocessing.Pipe:  {s / med['multiprocessing.Pipe']:5.1f}x")
    if "pyzmq ipc://" in med:
        print(f"  shmq / pyzmq ipc://:          {s / med['pyzmq ipc://']:5.1f}x (target >= 3x)")

    py, c, call = recv_ack_costs(n_call, args.rounds)
    print(f"\nrecv(timeout 0) + ack of one message, one process, median of {args.rounds} rounds:")
    print(f"  Python q.recv(0).ack()       {py:7.0f} ns")
    print(f"  C shmq_recv + shmq_ack       {c:7.0f} ns")
    print(f"  Python's cost of two calls   {call:7.0f} ns (two calls of an empty C function)")
    print(f"  Python / (C + two calls):    {py / (c + call):.2f}x (target <= 2x)")

    if os.path.exists(args.lib):
        rows = binding_costs(n_call, args.rounds, args.lib)
        print(f"\nbinding techniques, ns per call (median of {args.rounds} interleaved rounds):")
        print(f"  {'technique':<18}{'shmq_max_payload':>18}{'recv(0)+ack':>14}")
        for k, (a, b) in rows.items():
            print(f"  {k:<18}{a:>18.0f}{b:>14.0f}")
        print("  (the C extension's recv+ack also builds a Message object; ctypes and cffi only call)")


if __name__ == "__main__":
    main()

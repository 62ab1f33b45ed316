# SPDX-License-Identifier: MIT
"""A Python consumer SIGKILLed while it holds leases: its messages go to another consumer."""
import os
import signal
import subprocess
import sys

import shmq

CHILD = r"""
import sys, time, shmq
q = shmq.Queue.open(sys.argv[1])
held = [q.recv(timeout_ms=5000) for _ in range(3)]
print(" ".join(str(m.id) for m in held), flush=True)
time.sleep(60)
"""


def test_a_sigkilled_python_consumers_leased_messages_come_back_to_another(qname):
    # a lease far longer than the test: only the dead owner's reclaim can bring them back
    with shmq.Queue.create(qname, capacity=16, lease_ms=600000) as q:
        q.send_batch([b"m0", b"m1", b"m2", b"m3"])
        child = subprocess.Popen([sys.executable, "-c", CHILD, qname], stdout=subprocess.PIPE,
                                 env=dict(os.environ), text=True)
        try:
            ids = sorted(int(i) for i in child.stdout.readline().split())
            assert len(ids) == 3
            assert q.stats()["inflight"] == 3
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        got = {}
        while len(got) < 4:
            m = q.recv(timeout_ms=5000)
            assert m is not None, f"only {sorted(got)} came back"
            got[m.id] = (bytes(m), m.deliveries)
            m.ack()
        assert sorted(got) == [0, 1, 2, 3]
        assert all(got[i][1] == 2 for i in ids)
        assert q.stats()["reclaimed_dead_owner"] == 3

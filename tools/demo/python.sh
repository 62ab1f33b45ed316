#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# python.sh: Python and C on one queue, both ways. A Python producer feeds `shmq work` (C worker
# runtime, one command per message); then `shmq send` feeds a Python worker (@shmq.worker).
#
#   usage: tools/demo/python.sh PATH-TO-SHMQ   (make demo-python runs it with PYTHONPATH set to
#          build/python and PYTHON to /usr/bin/python3)
set -euo pipefail

shmq=${1:?usage: python.sh PATH-TO-SHMQ}
[[ -x $shmq ]] || { echo "python.sh: '$shmq' is not an executable" >&2; exit 2; }
python=${PYTHON:-/usr/bin/python3}
name="demo-py-$$"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
count=5

heading "create queue '$name'"
"$shmq" create "$name" --capacity 64 --lease-ms 5000

heading "Python producer -> shmq work (C): $count orders"
"$shmq" work "$name" --threads 2 -- sh -c 'printf "  shmq work: got %s (id %s)\n" "$(cat)" "$SHMQ_MSG_ID"' &
pids+=($!)
work_pid=$!
"$python" - "$name" "$count" <<'PY'
import sys, shmq
name, n = sys.argv[1], int(sys.argv[2])
with shmq.Queue.open(name) as q:
    for i in range(1, n + 1):
        q.send(b"order-%d" % i)
        print(f"  python sent: order-{i}")
PY
"$python" - "$name" "$count" <<'PY'
import sys, time, shmq
name, n = sys.argv[1], int(sys.argv[2])
end = time.monotonic() + 10
while shmq.snapshot(name)["acked"] < n and time.monotonic() < end:
    time.sleep(0.02)
print(f"  acked by shmq work: {shmq.snapshot(name)['acked']} of {n}")
PY
kill -TERM "$work_pid" && wait "$work_pid" || true

heading "shmq send (C) -> Python worker: $count payments"
for i in $(seq 1 "$count"); do echo "payment-$i"; done | "$shmq" send "$name"
echo "  shmq send: sent $count lines"
"$python" - "$name" "$count" <<'PY'
import sys, threading, shmq
name, n = sys.argv[1], int(sys.argv[2])
done = threading.Semaphore(0)
with shmq.Queue.open(name) as q:
    @shmq.worker(q, threads=2)
    def handle(msg):
        sys.stdout.write(f"  python worker: got {bytes(msg).decode()} (id {msg.id})\n")  # one write per line
        sys.stdout.flush()
        done.release()
        return shmq.Verdict.ACK
    with handle as w:
        for _ in range(n):
            done.acquire(timeout=10)
    print(f"  acked by the python worker: {w.stats()['acked']} of {n}")
PY
heading "the queue at the end (shmq.snapshot, read-only)"
"$python" -c 'import sys, shmq; s = shmq.snapshot(sys.argv[1]); print("  sent %(sent)d, acked %(acked)d, ready %(ready)d, in flight %(inflight)d" % s)' "$name"

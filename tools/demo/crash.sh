#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# crash.sh: why shmq exists, live. A worker is SIGKILLed while it holds messages: the watchdog sees
# it die (kernel lock probe) and puts its messages back long before their 30 s lease would run
# out, and another worker processes them. Then a poison message crashes every worker that takes it,
# until it lands in the dead-letter queue with reason "consumer crashed" instead of crash-looping.
#
#   usage: tools/demo/crash.sh PATH-TO-SHMQ PATH-TO-DEMO-WORKER     (make demo-crash runs it)
set -euo pipefail

shmq=${1:?usage: crash.sh PATH-TO-SHMQ PATH-TO-DEMO-WORKER}
worker=${2:?usage: crash.sh PATH-TO-SHMQ PATH-TO-DEMO-WORKER}
for exe in "$shmq" "$worker"; do
	[[ -x $exe ]] || { echo "crash.sh: '$exe' is not an executable" >&2; exit 2; }
done

name="demo-crash-$$"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# waits (up to 10 s) until file $1 has a line matching $2
wait_for() {
	local i
	for ((i = 0; i < 1000; i++)); do
		grep -q -E "$2" "$1" 2>/dev/null && return 0
		sleep 0.01
	done
	echo "crash.sh: timed out waiting for '$2' in $1" >&2
	return 1
}
# the depth section of shmq stat on one line: "ready 4, in flight 4, delayed 0, dead-lettered 0"
depths() {
	"$shmq" stat "$name" | awk '/^depth/ { on = 1; next } /^[a-z]/ { on = 0 }
		on && /^  (ready|in flight|delayed|dead-lettered) / { sub(/^ +/, ""); gsub(/ +/, " "); printf "%s%s", sep, $0; sep = ", " }
		END { print "" }'
}

heading "create '$name': leases of 30 s, 3 deliveries at most, retry backoff from 50 ms;"
echo "   receivers do not reclaim here (--reclaim-interval-ms 0): only the watchdog brings messages back"
"$shmq" create "$name" --capacity 64 --lease-ms 30000 --max-deliveries 3 --retry-base-ms 50 \
	--retry-max-ms 400 --reclaim-interval-ms 0

heading "start the watchdog: one reclaim pass every 50 ms"
"$shmq" watchdog "$name" --interval-ms 50 >"$work/watchdog.log" &
watchdog=$!
pids+=("$watchdog")
wait_for "$work/watchdog.log" 'reclaim pass every'
cat "$work/watchdog.log"

heading "send job-1 ... job-8"
"$shmq" send "$name" job-{1..8}
echo "depths: $(depths)"

heading "worker A takes 4 messages at a time and works 1 s on each"
"$worker" "$name" 4 1000 5000 >"$work/a.log" &
worker_a=$!
pids+=("$worker_a")
wait_for "$work/a.log" 'took'
cat "$work/a.log"
echo "depths: $(depths)"

heading "SIGKILL worker A while it holds them (none acked yet)"
killed_at=$(now_us)
{ kill -KILL "$worker_a" && wait "$worker_a"; } 2>/dev/null || true # (no "Killed" line from bash)
wait_for "$work/watchdog.log" 'dead owner [1-9]'
back_ms=$((($(now_us) - killed_at) / 1000))
grep 'dead owner [1-9]' "$work/watchdog.log"
echo "the watchdog requeued worker A's messages within ${back_ms} ms of the kill; their leases had 30 s to run"
echo "depths: $(depths)"

heading "worker B (4 at a time, 50 ms each) does the work; A's messages come again as delivery 2"
"$worker" "$name" 4 50 1000 | tee "$work/b.log"

heading "a poison message: POISON crashes every worker that takes it"
"$shmq" send "$name" job-9 POISON job-10
echo "a supervisor restarts the worker whenever it dies (like systemd's Restart=always):"
for ((run = 1; run <= 6; run++)); do
	rc=0
	{ "$worker" "$name" 1 50 1000 >>"$work/poison.log" 2>&1; } 2>/dev/null || rc=$?
	if ((rc == 0)); then
		echo "  run $run: worker idle for 1 s, exited 0"
		break
	fi
	how="exit status $rc"
	((rc > 128)) && how="killed by signal $((rc - 128))"
	echo "  run $run: worker $how, holding $(grep -o 'POISON, delivery [0-9]*' "$work/poison.log" | tail -1);" \
		"restarting it"
done
echo "what the workers said, run after run:"
sed 's/^/    /' "$work/poison.log"

heading "shmq dlq $name list"
"$shmq" dlq "$name" list

heading "stop the watchdog (SIGTERM): its log since the SIGKILL above, and its totals"
kill -TERM "$watchdog"
wait "$watchdog" || true
pids=()
sed -n '/dead owner [1-9]/,$p' "$work/watchdog.log" | tail -n +2

heading "shmq stat $name: its totals"
"$shmq" stat "$name" | awk '/^totals/ { on = 1; next } /^[a-z]/ { on = 0 }
	on && /^  (sent|received|acked|redelivered|reclaimed \(dead owner\)|dead-lettered) / {
		n = $NF; sub(/^ +/, ""); sub(/ +[0-9]+$/, ""); printf "%s%s %s", sep, $0, n; sep = ", " }
	END { print "" }'

heading "verdict"
status=0
for j in job-{1..10}; do
	if ! grep -q -h "done $j " "$work/a.log" "$work/b.log" "$work/poison.log"; then
		echo "FAIL: $j was never processed"
		status=1
	fi
done
if ! "$shmq" dlq "$name" list | grep -q -E 'consumer crashed +3 .*POISON'; then
	echo "FAIL: POISON is not in the dead-letter queue as 'consumer crashed' after 3 deliveries"
	status=1
fi
if ((status == 0)); then
	echo "PASS: all 10 jobs processed (4 of them after their worker was SIGKILLed, back within ${back_ms} ms" \
		"instead of 30 s); POISON dead-lettered after 3 crashes, the rest of the queue kept flowing"
fi
exit $status

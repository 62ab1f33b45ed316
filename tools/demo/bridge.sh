#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bridge.sh: a queue extended past its host through NATS JetStream. "Host 1" has the queue orders-h1
# and a producer; "host 2" has orders-h2 and `shmq work`; shmq-bridge carries h1 -> stream ORDERS
# -> h2. Both bridges are SIGKILLed in the middle and restarted: every order is worked once.
#
#   usage: tools/demo/bridge.sh PATH-TO-SHMQ PATH-TO-SHMQ-BRIDGE     (make demo-bridge runs it)
set -euo pipefail

shmq=${1:?usage: bridge.sh PATH-TO-SHMQ PATH-TO-SHMQ-BRIDGE}
bridge=${2:?usage: bridge.sh PATH-TO-SHMQ PATH-TO-SHMQ-BRIDGE}
[[ -x $shmq && -x $bridge ]] || { echo "bridge.sh: '$shmq' or '$bridge' is not an executable" >&2; exit 2; }
server=$(command -v nats-server || echo /usr/sbin/nats-server)
[[ -x $server ]] || { echo "bridge.sh: nats-server is not installed (apt-get install nats-server)" >&2; exit 2; }

name="demo-bridge-h1-$$"
name2="demo-bridge-h2-$$"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap 'cleanup; "$shmq" unlink "$name2" 2>/dev/null || true' EXIT
N=1000

# a free port: one nothing answers on
for ((port = 20000 + RANDOM % 30000; ; port++)); do
	(: </dev/tcp/127.0.0.1/$port) 2>/dev/null || break
done
url="nats://127.0.0.1:$port"

heading "start nats-server -js on 127.0.0.1:$port (store in a scratch directory)"
"$server" -js -a 127.0.0.1 -p "$port" -sd "$work/store" >"$work/server.log" 2>&1 &
pids+=($!)
for ((i = 0; i < 500; i++)); do (: </dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.01; done

heading "host 1: queue $name; host 2: queue $name2 (with a dedup table, as --from needs)"
"$shmq" create "$name" --capacity 256
"$shmq" create "$name2" --capacity 256 --dedup-entries 65536

to=(--to "$url" --subject orders --stream ORDERS --create --stats-ms 1000)
from=(--from "$url" --subject orders --stream ORDERS --create --durable h2 --ack-wait-ms 1000 --stats-ms 1000)
start_to() { "$bridge" "$name" "${to[@]}" 2>>"$work/to.log" & bto=$!; pids+=($bto); }
start_from() { "$bridge" "$name2" "${from[@]}" 2>>"$work/from.log" & bfrom=$!; pids+=($bfrom); }

heading "bridges: $name -> JetStream ORDERS -> $name2"
echo "   shmq-bridge $name ${to[*]}"
echo "   shmq-bridge $name2 ${from[*]}"
start_to
start_from

heading "host 2: shmq work $name2 --threads 4 -- sh -c ... (appends each order to done.txt)"
"$shmq" work "$name2" --threads 4 -- sh -c "printf '%s\\n' \"\$(cat)\" >>'$work/done.txt'" \
	2>"$work/work.log" &
pids+=($!)

heading "host 1: the producer sends order-1 ... order-$N, 100 every 0.2 s"
for ((i = 0; i < N; i += 100)); do
	seq -f 'order-%g' $((i + 1)) $((i + 100)) | "$shmq" send "$name" >/dev/null
	sleep 0.2
done &
pids+=($!)

done_count() { [[ -f $work/done.txt ]] && sort -u "$work/done.txt" | grep -c order || echo 0; }
until (($(done_count) >= N / 4)); do sleep 0.02; done
heading "$(done_count) orders worked: SIGKILL both bridges, restart them"
{ kill -KILL "$bto" "$bfrom"; wait "$bto" "$bfrom"; } 2>/dev/null || true
start_to
start_from

deadline=$((SECONDS + 60))
until (($(done_count) >= N)) || ((SECONDS > deadline)); do sleep 0.1; done
sleep 1.5 # a redelivery after AckWait would come now: the dedup window must drop it
{ kill -TERM "$bto" "$bfrom"; wait "$bto" "$bfrom"; } 2>/dev/null || true

heading "the bridges' last stats lines (the restarted ones)"
tail -n 1 "$work/to.log"
tail -n 1 "$work/from.log"
lines=$(grep -c order "$work/done.txt" || true)
unique=$(done_count)
heading "worked: $unique distinct orders of $N, $((lines - unique)) twice"
((unique == N && lines == N)) || { echo "bridge.sh: FAILED" >&2; exit 1; }
echo "everything delivered, once"

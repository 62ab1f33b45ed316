#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# main.sh: the first part of `make demo`. Three producers and three consumers, each its own
# process, share one queue; at the end every line sent must have been received, once each (no
# process crashes here: shmq's guarantee is at-least-once, and crash.sh shows the repeats a crash
# brings), in each producer's order.
#
#   usage: tools/demo/main.sh PATH-TO-SHMQ        (make demo runs it on build/shmq)
set -euo pipefail
export LC_ALL=C # sort and comm must agree on one order

shmq=${1:?usage: main.sh PATH-TO-SHMQ}
[[ -x $shmq ]] || { echo "main.sh: '$shmq' is not an executable" >&2; exit 2; }

producers=3
consumers=3
per_producer=2000
bursts=40 # each producer sends its lines in bursts with a pause between them: about 1 s in all
name="demo-$$"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Lines "p<producer>-<number>", fed to one `shmq send` through stdin, one message each.
produce() {
	local p=$1 per_burst=$((per_producer / bursts)) b
	for ((b = 0; b < bursts; b++)); do
		printf "p$p-%06d\n" $(seq $((b * per_burst + 1)) $(((b + 1) * per_burst)))
		sleep 0.025
	done | tee "$work/sent-$p" | "$shmq" send "$name"
}

"$shmq" create "$name" --capacity 256 --slot-size 256 --lease-ms 5000
heading "$producers producers send $per_producer lines each to '$name' (256 slots) while $consumers consumers receive"
for ((c = 1; c <= consumers; c++)); do
	"$shmq" recv "$name" --timeout-ms 2000 >"$work/recv-$c" &
	pids+=($!)
	cons_pid[c]=$!
done
for ((p = 1; p <= producers; p++)); do
	produce "$p" &
	pids+=($!)
	prod_pid[p]=$!
done
start=$(now_us)

sleep 0.3
echo "while they run, shmq stat (it reads the queue without attaching): the consumers keep up"
"$shmq" stat "$name" | awk '/^[a-z]/ { sec = $1 } { v = $NF }
	sec == "depth" && /^  ready / { ready = v } sec == "depth" && /^  in flight / { infl = v }
	sec == "totals" && /^  sent / { sent = v } sec == "totals" && /^  acked / { acked = v }
	sec == "participants" && /^  attached / { alive = $4 }
	END { printf "  %s sent and %s acked so far; %s ready, %s in flight; %s processes attached\n",
		sent, acked, ready, infl, alive }'
status=0
for ((p = 1; p <= producers; p++)); do
	if wait "${prod_pid[p]}"; then prod_rc[p]=0; else prod_rc[p]=$? && status=1; fi
done
elapsed=$((($(now_us) - start) / 1000))
for ((c = 1; c <= consumers; c++)); do
	# 4: its --timeout-ms passed before any message (another consumer took them all)
	if wait "${cons_pid[c]}"; then cons_rc[c]=0; else cons_rc[c]=$? && ((cons_rc[c] == 4)) || status=1; fi
done
pids=()
echo "producers done after $elapsed ms (they pause between bursts); consumers received" \
	"$(for ((c = 1; c <= consumers; c++)); do printf '%s ' "$(wc -l <"$work/recv-$c")"; done)lines"

heading "check: every line sent was received"
sort "$work"/sent-* >"$work/all-sent"
sort "$work"/recv-* >"$work/all-recv"
sent=$(wc -l <"$work/all-sent")
received=$(wc -l <"$work/all-recv")
duplicates=$(uniq -d "$work/all-recv" | wc -l)
missing=$(comm -23 "$work/all-sent" <(sort -u "$work/all-recv") | wc -l)
unexpected=$(comm -13 "$work/all-sent" <(sort -u "$work/all-recv") | wc -l)
# FIFO: a producer's lines get increasing tickets, consumers take tickets in order, so each
# consumer must see each producer's lines in increasing order
disorder=0
for ((c = 1; c <= consumers; c++)); do
	disorder=$((disorder + $(awk -F- '{ if ($1 in last && $2 <= last[$1]) n++; last[$1] = $2 } END { print n + 0 }' "$work/recv-$c")))
done
echo "sent $sent, received $received: $missing missing, $duplicates repeated, $unexpected unexpected;" \
	"$disorder out of their producer's order"
if ((status == 0 && missing == 0 && duplicates == 0 && unexpected == 0 && received == sent && disorder == 0)); then
	echo "PASS: all $sent lines delivered, in each producer's order (once each: nothing crashed)"
else
	echo "FAIL (see the counts above; a non-zero exit status also fails)"
	exit 1
fi

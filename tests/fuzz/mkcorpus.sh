#!/usr/bin/env bash
# Writes the seed corpus of tests/fuzz/fuzz_inspect.c (input format: see the top of that file).
# The corpus also keeps, as found, the inputs that crashed the target once (repro-*).
# Usage: tests/fuzz/mkcorpus.sh [DIR]   (default: tests/fuzz/corpus next to this script)
set -euo pipefail
dir=${1:-"$(dirname "${BASH_SOURCE[0]}")/corpus"}
mkdir -p "$dir"
seed() { printf "$2" >"$dir/$1"; }

# built, capacity 4, slot size 128, max deliveries 16 (config byte 0xf1), nothing edited
seed built-fresh '\x01\xf1'
# the same with one message in each state: tickets (prod_tail 6, cons_head 5); slot words
# READY t4, LEASED t5 by owner 1, DELAYED t2, DEAD (rejected) t3; record 0 claimed with
# sent 6, received 4, acked 2; slot 0 holding a 5-byte payload
states='\x05\x06\x00\x05\x00'\
'\x04\x00\x02\x00\x00\x00\x01\x04\x01\x03\x01\x00\x01\x01\x04\x02\x04\x00\x00\x01\x00\x04\x03\x09\x01\x00\x01\x00'\
'\x07\x00\x01\x10\x00\x06\x00\x07\x00\x01\x10\x01\x04\x00\x07\x00\x01\x10\x02\x02\x00'\
'\x19\x00\x28\x00\x05\x00\x00\x00'
seed built-states "\x01\xf1$states"
# the same image 8 bytes off malloc's alignment: aligned for its records, not for struct shmq_hdr
seed built-states-shifted-8 "\x11\xf1$states"
# the same image as a segment in /dev/shm, read through shmq_view_open and shmq_check_name
seed built-states-live "\x81\xf1$states"
# built, then truncated to 5000 bytes (op 6)
seed built-truncated '\x01\xf1\x06\x88\x13\x00\x00'
# raw: the magic alone, and an empty image
seed raw-magic '\x00SHMQ1\x00\x00\x00\x02\x00\x00\x00\x00\x10\x00\x00'
seed raw-empty '\x00'

# SPDX-License-Identifier: MIT
# common.sh: what the demo scripts share, sourced after they set $shmq and $name: a scratch
# directory ($work), the background processes to stop ($pids), and a cleanup that also unlinks
# the queue, whatever way the script ends.
work=$(mktemp -d "${TMPDIR:-/tmp}/shmq-demo.XXXXXX")
pids=()

cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	"$shmq" unlink --force "$name" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

heading() { printf '\n== %s\n' "$*"; }
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

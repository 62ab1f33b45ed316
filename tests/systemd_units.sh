#!/bin/sh
# SPDX-License-Identifier: MIT
# The systemd unit templates: `make install` puts them, with the paths of its PREFIX, into
# systemd's unit directory under DESTDIR; `systemd-analyze verify` accepts an instance of each
# (skipped, with the reason, where systemd-analyze is missing); `make uninstall` removes them and
# everything else install put there.
# usage: tests/systemd_units.sh MAKE BUILD-DIR
set -eu
make=${1:?usage: $0 MAKE BUILD-DIR}
build=${2:?usage: $0 MAKE BUILD-DIR}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmq-units.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "  FAIL  systemd units: $*" >&2; exit 1; }

root="$tmp/root"
$make -s BUILD="$build" install DESTDIR="$root" PREFIX=/usr >/dev/null
units="$root/usr/lib/systemd/system"
for u in shmq-watchdog@.service shmq-work@.service; do
	[ -f "$units/$u" ] || fail "make install did not put $u into \$DESTDIR/usr/lib/systemd/system"
	grep -q '^ExecStart=/usr/bin/shmq ' "$units/$u" || fail "$u does not run /usr/bin/shmq"
	grep -q '@[A-Z]*@' "$units/$u" && fail "$u keeps a placeholder: $(grep '@[A-Z]*@' "$units/$u")"
done

if command -v systemd-analyze >/dev/null 2>&1; then
	# an instance of each, running the shmq installed under DESTDIR (verify wants it to exist)
	mkdir "$tmp/verify"
	for u in shmq-watchdog@ shmq-work@; do
		sed "s|/usr/bin/shmq|$root/usr/bin/shmq|" "$units/$u.service" >"$tmp/verify/${u}orders.service"
	done
	if ! out=$(systemd-analyze verify "$tmp/verify/"*.service 2>&1) || [ -n "$out" ]; then
		fail "systemd-analyze verify: $out"
	fi
	echo "  OK    shmq-watchdog@ and shmq-work@ install to DESTDIR and pass systemd-analyze verify"
else
	echo "  SKIP  systemd-analyze verify: systemd-analyze is not installed (units checked for installing only)"
fi

# each unit's ExecStart run as systemd runs it: %i the instance, each $VAR split into words
q="shmq-units-$$"
shmq="$root/usr/bin/shmq"
trap '"$build/shmq" unlink "$q" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
exec_start() { # exec_start UNIT VAR VALUE
	sed -n 's/^ExecStart=//p' "$units/$1" | sed -e "s|%i|$q|g" -e "s|^/usr/bin/shmq|$shmq|" -e "s|\$$2|$3|"
}
"$shmq" create "$q" --capacity 4 >/dev/null
"$shmq" send "$q" job >/dev/null
# shellcheck disable=SC2046 # the words of ExecStart
$(exec_start shmq-watchdog@.service SHMQ_WATCHDOG_OPTS --once) >/dev/null ||
	fail "shmq-watchdog@'s ExecStart with --once: exit $?"
cmd=$(exec_start shmq-work@.service SHMQ_WORK_OPTS "--threads 1" | sed 's|\$SHMQ_WORK_CMD|/bin/true|')
$cmd >"$tmp/work.out" 2>&1 &
pid=$!
tries=0
until "$shmq" check --health "$q" --max-depth 0 >/dev/null; do # the job done and acked
	tries=$((tries + 1))
	[ $tries -lt 500 ] || { kill -KILL $pid; fail "shmq-work@'s ExecStart did not take the job: $(cat "$tmp/work.out")"; }
	sleep 0.01
done
kill -TERM $pid
wait $pid || fail "shmq-work@'s ExecStart: exit $? after SIGTERM: $(cat "$tmp/work.out")"

$make -s BUILD="$build" uninstall DESTDIR="$root" PREFIX=/usr >/dev/null
left=$(find "$root" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The manual pages and the bash completion cover what the tool and the library have: `make
# install` (into a scratch DESTDIR) puts them in place; shmq.1 has a section for every subcommand
# of `shmq help` and names each of its options; libshmq.3 documents every function the public
# headers declare, each with a page of its own (its prototype and comment); groff renders both without a warning (when it is
# there); the completion offers every subcommand, and for each one every option of its --help.
# usage: tests/man_completion.sh BUILD-DIR SHMQ-TOOL
set -euo pipefail
build=${1:?usage: $0 BUILD-DIR SHMQ-TOOL}
tool=${2:?usage: $0 BUILD-DIR SHMQ-TOOL}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmq-man.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "  FAIL  $*" >&2; exit 1; }

make -s BUILD="$build" install DESTDIR="$tmp/root" PREFIX=/usr >/dev/null
man1=$tmp/root/usr/share/man/man1/shmq.1
man3=$tmp/root/usr/share/man/man3
comp=$tmp/root/usr/share/bash-completion/completions/shmq
for f in "$man1" "$man3/libshmq.3" "$comp"; do [[ -s $f ]] || fail "make install did not install $f"; done

commands=$("$tool" help | sed -n 's/^shmq \([a-z][a-z-]*\).*/\1/p' | sort -u)
[[ $(wc -w <<<"$commands") -ge 10 ]] || fail "shmq help lists too few subcommands: $commands"
for c in $commands; do
	grep -q "^\.SS \"shmq $c\"" "$man1" || fail "shmq.1 has no section for 'shmq $c'"
	for o in $("$tool" "$c" --help 2>/dev/null | grep -o -- '--[a-z][a-z-]*' | sort -u); do
		grep -q -- "$o" "$man1" || fail "shmq.1 does not name $o of 'shmq $c'"
	done
done
functions=$(sed -n 's/^[a-z].*[ *]\(shmq_[a-z_0-9]*\)(.*/\1/p' include/shmq.h include/shmq_inspect.h \
	include/shmq_worker.h | sort -u)
for f in $functions; do
	grep -q "^\.SS $f\$" "$man3/libshmq.3" || fail "libshmq.3 does not document $f"
	[[ -f $man3/$f.3 ]] || fail "no page $f.3"
	grep -q "$f(" "$man3/$f.3" || fail "$f.3 does not give the prototype of $f"
done
if command -v groff >/dev/null 2>&1; then
	for p in "$man1" "$man3/libshmq.3"; do
		w=$(groff -man -Tutf8 -ww -z "$p" 2>&1) || fail "groff failed on $p: $w"
		[[ -z $w ]] || fail "groff warns on ${p##*/}: $w"
	done
fi

# the completion, as bash calls it
# shellcheck disable=SC1090
source "$comp"
complete_words() { # the words offered for the command line "$@" (its last word being completed)
	COMP_WORDS=("$tool" "$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	_shmq
	printf '%s\n' "${COMPREPLY[@]}"
}
offered=$(complete_words "")
for c in $commands; do
	grep -qx "$c" <<<"$offered" || fail "completion does not offer the subcommand $c"
done
for c in $commands; do
	[[ $c == help ]] && continue
	offered=$(complete_words "$c" "--")
	for o in $("$tool" "$c" --help 2>/dev/null | grep -o -- '--[a-z][a-z-]*' | sort -u); do
		grep -qx -- "$o" <<<"$offered" || fail "completion of 'shmq $c --' does not offer $o"
	done
done
name="man-completion-$$"
"$tool" create "$name" >/dev/null
offered=$(complete_words stat "man-completion-")
"$tool" unlink "$name" >/dev/null
grep -qx "$name" <<<"$offered" || fail "completion of 'shmq stat man-completion-' does not offer $name"
echo "  OK    man pages and completion cover $(wc -w <<<"$commands") subcommands and $(wc -w <<<"$functions") functions"

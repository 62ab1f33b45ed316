#!/bin/sh
# SPDX-License-Identifier: MIT
# mkman.sh: the manual pages, generated from the two sources they describe, so they never drift:
#   shmq.1     from the tool's own help (`shmq help`): one section per subcommand
#   libshmq.3  from the public headers' comments: each function with the comment above it
#   shmq_*.3   one short page per function, sourcing libshmq.3 (so `man shmq_send` works)
# usage: tools/man/mkman.sh SHMQ-TOOL OUT-DIR HEADER...     (make man runs it)
set -eu
tool=${1:?usage: mkman.sh SHMQ-TOOL OUT-DIR HEADER...}
out=${2:?usage: mkman.sh SHMQ-TOOL OUT-DIR HEADER...}
shift 2
[ $# -gt 0 ] || { echo "mkman.sh: no header given" >&2; exit 2; }
version=$("$tool" --version | sed -n 's/^shmq \([^ ]*\).*/\1/p')
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)
mkdir -p "$out/man1" "$out/man3"

# roff-safe text: backslashes doubled, a leading . or ' made literal
esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }

{
	printf '.TH SHMQ 1 %s "shmq %s" "User Commands"\n' "$date" "$version"
	printf '.SH NAME\nshmq \\- create, use and inspect crash-safe shared-memory message queues\n'
	printf '.SH SYNOPSIS\n.B shmq\n.I COMMAND NAME\n.RI [ OPTIONS "] [" ARGS ]\n'
	printf '.SH DESCRIPTION\n'
	# the paragraph after the usage line
	"$tool" help | awk 'NR > 2 && /^$/ { exit } NR > 2' | esc
	printf '.SH COMMANDS\n'
	# each block "shmq CMD ..." up to the next one or the closing paragraph, as it is in help
	"$tool" help | esc | awk '
		/^shmq / { printf ".SS \"%s\"\n.nf\n", $1 " " $2; on = 1 }
		on && /^$/ { print ".fi"; on = 0; next }
		on { print; next }
		END { if (on) print ".fi" }'
	# a subcommand that runs a program of its own (bridge: shmq-bridge) has that program's help
	if "$tool" bridge --help >/dev/null 2>&1; then
		printf '.SS "shmq-bridge (shmq bridge)"\n.nf\n'
		"$tool" bridge --help | esc
		printf '.fi\n'
	fi
	printf '.SH "EXIT STATUS AND NUMBERS"\n'
	# the closing paragraph of help: what follows the last command's block
	"$tool" help | awk '/^shmq / { on = 1; rest = ""; next } on && /^$/ { on = 0; tail = 1; next }
		on { next } tail { rest = rest $0 "\n" } END { printf "%s", rest }' | esc
	printf '.SH "SEE ALSO"\n.BR libshmq (3)\n'
} >"$out/man1/shmq.1"

# libshmq.3: every prototype of the headers with the comment just above it
{
	printf '.TH LIBSHMQ 3 %s "shmq %s" "Library Functions Manual"\n' "$date" "$version"
	printf '.SH NAME\nlibshmq \\- a crash-safe shared-memory message queue for processes on one host\n'
	printf '.SH SYNOPSIS\n.nf\n'
	for h in "$@"; do printf '#include <%s>\n' "${h##*/}"; done
	printf '.fi\n.PP\nLink with \\fB\\-lshmq\\fR (pkg-config: \\fBshmq\\fR).\n'
	printf '.SH FUNCTIONS\n'
	for h in "$@"; do
		esc <"$h" | awk '
			/^\/\*/ { c = ""; inc = 1 }
			inc { line = $0; sub(/^\/\* ?/, "", line); sub(/^ \* ?/, "", line); sub(/ ?\*\/$/, "", line)
			      if (line != "/" && line != "") c = c line "\n"; if ($0 ~ /\*\//) inc = 0; next }
			/^[a-z].*[ *]shmq_[a-z_0-9]+\(/ && !proto { proto = $0; name = $0
				sub(/\(.*/, "", name); sub(/.*[ *]/, "", name)
				if ($0 !~ /;/) { more = 1; next } }
			more { proto = proto "\n" $0; if ($0 ~ /;/) more = 0; else next }
			proto { gsub(/\t+/, "    ", proto); printf ".SS %s\n.nf\n%s\n.fi\n%s", name, proto, c; proto = ""; c = ""; next }
			/^$/ { c = "" }'
	done
	printf '.SH "SEE ALSO"\n.BR shmq (1)\n'
} >"$out/man3/libshmq.3"

# one page per function: its prototype and its comment, from libshmq.3's section of it
awk -v out="$out/man3" -v date="$date" -v version="$version" '
	function close_page() { if (page) { printf ".SH \"SEE ALSO\"\n.BR libshmq (3),\n.BR shmq (1)\n" >page; close(page) } }
	/^\.SH "SEE ALSO"/ { close_page(); page = ""; exit }
	/^\.SS shmq_/ { close_page(); name = $2; page = out "/" name ".3"
		printf ".TH %s 3 %s \"shmq %s\" \"Library Functions Manual\"\n.SH NAME\n%s \\- part of libshmq\n", toupper(name), date, version, name >page
		printf ".SH SYNOPSIS\n" >page; state = 1; next }
	page && state == 1 && /^\.fi$/ { print >page; printf ".SH DESCRIPTION\n" >page; state = 2; next }
	page { print >page }
	END { close_page() }' "$out/man3/libshmq.3"

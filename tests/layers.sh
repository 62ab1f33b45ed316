#!/bin/sh
# SPDX-License-Identifier: MIT
# Fails if the library's modules call each other in a cycle (docs/design.md, "Source layout").
# usage: tests/layers.sh OBJ...   (one object per src/*.c)
# A symbol undefined in a.o and defined in b.o is an edge a -> b; tsort finds any cycle. Static
# inline functions of the private headers make no edge: they are part of the header's layer.
set -eu
[ $# -gt 0 ] || { echo "usage: $0 OBJ..." >&2; exit 2; }
edges=$(for o in "$@"; do
	m=$(basename "$o" .o)
	nm "$o" | awk -v m="$m" 'NF == 3 && $2 ~ /^[TDBR]$/ { print "D", m, $3 } NF == 2 && $1 == "U" { print "U", m, $2 }'
done | awk '$1 == "D" { def[$3] = $2; next } { use[++n] = $2 " " $3 }
	END { for (i = 1; i <= n; i++) { split(use[i], a, " ");
		if ((a[2] in def) && def[a[2]] != a[1]) print a[1], def[a[2]] } }' | sort -u)
if ! err=$(printf '%s\n' "$edges" | tsort 2>&1 >/dev/null) || [ -n "$err" ]; then
	echo "  FAIL  call cycle between src/ modules:" >&2
	printf '%s\n' "$err" >&2
	exit 1
fi
echo "  OK    no call cycle between $# modules ($(printf '%s\n' "$edges" | grep -c .) edges)"

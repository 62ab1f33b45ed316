#!/bin/sh
# SPDX-License-Identifier: MIT
# The README's C example builds and runs each of the three ways the README gives: installed (into
# a scratch DESTDIR, found through its shmq.pc), from the tree statically, and from the tree shared
# (build/ has the SONAME link, and the rpath makes the program load this build).
# usage: tests/readme_example.sh BUILD-DIR SHMQ-TOOL
set -eu
build=${1:?usage: $0 BUILD-DIR SHMQ-TOOL}
tool=${2:?usage: $0 BUILD-DIR SHMQ-TOOL}
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmq-readme.XXXXXX")
name="readme-example-$$"
trap '"$tool" unlink --force "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

# the first ```c block of the README, on a queue of its own
awk '/^```c$/ { on = 1; next } on && /^```$/ { exit } on' README.md | sed "s/\"orders\"/\"$name\"/" >"$tmp/app.c"
grep -q "$name" "$tmp/app.c" || { echo "  FAIL  no C example naming a queue in README.md" >&2; exit 1; }

run() { # run WAY PROGRAM: the example must print its message and exit 0
	out=$("$2") || { echo "  FAIL  README example, $1: exit $?" >&2; exit 1; }
	case $out in
	"hello (id "*) ;;
	*) echo "  FAIL  README example, $1: printed '$out'" >&2; exit 1 ;;
	esac
	"$tool" unlink "$name" >/dev/null
}

make -s BUILD="$build" install DESTDIR="$tmp/root" PREFIX=/usr >/dev/null
pc=$(PKG_CONFIG_PATH="$tmp/root/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp/root" pkg-config --cflags --libs shmq)
# shellcheck disable=SC2086 # pc is a list of flags
$cc "$tmp/app.c" $pc -Wl,-rpath,"$tmp/root/usr/lib" -o "$tmp/installed"
run installed "$tmp/installed"
readelf -d "$tmp/installed" | grep -q 'NEEDED.*libshmq\.so\.[0-9]' ||
	{ echo "  FAIL  README example, installed: not linked against libshmq.so.MAJOR" >&2; exit 1; }

$cc -Iinclude "$tmp/app.c" "$build/libshmq.a" -lurcu -lpthread -o "$tmp/static"
run static "$tmp/static"

$cc -Iinclude "$tmp/app.c" -L"$build" -lshmq -Wl,-rpath,"$(cd "$build" && pwd)" -o "$tmp/shared"
run shared "$tmp/shared"
echo "  OK    the README's C example builds and runs installed, static and shared from the tree"

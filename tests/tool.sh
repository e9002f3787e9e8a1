#!/bin/sh
# tests/tool.sh - the ckpt command-line tool: commands, output, exit status.
# SPDX-License-Identifier: GPL-2.0-or-later
top_builddir=${top_builddir:-.}
ckpt=$top_builddir/tools/ckpt
fail() {
	echo "tool.sh: FAIL: $*" >&2
	exit 1
}
[ -x "$ckpt" ] || fail "$ckpt not built"

out=$("$ckpt" version) || fail "version exited $?"
echo "$out" | grep -Eq '^ckpt [0-9]+\.[0-9]+\.[0-9]+ \(library [0-9.]+\)$' || fail "version: $out"
"$ckpt" --help | grep -q '^usage: ckpt COMMAND' || fail "--help"

out=$("$ckpt" errors -1001 22) || fail "errors exited $?"
echo "$out" | grep -q 'CKPT_ESTATE' || fail "errors -1001: $out"
echo "$out" | grep -q -- '-22  CKPT_EINVAL' || fail "errors 22: $out"
n=$("$ckpt" errors | wc -l)
[ "$n" -ge 20 ] || fail "errors lists $n codes"
"$ckpt" errors | grep -q 'unknown' && fail "a listed code has no text"

"$ckpt" frobnicate >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown command does not exit 2"
"$ckpt" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no command does not exit 2"
"$ckpt" errors nonsense >/dev/null 2>&1
[ $? -eq 2 ] || fail "a bad code does not exit 2"
echo "tool.sh: ok"
exit 0

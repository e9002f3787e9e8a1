#!/bin/sh
# tests/demo.sh - runs samples/audit_demo and checks its report.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The demo checks ckpt's answer against what it wrote itself; this test adds
# that it ran to the end and that its report names the heap and the program's
# own mapping.  Exit status: 0 pass, 1 fail (never 77: the demo needs nothing
# that a machine able to build ckpt lacks).

top_builddir=${top_builddir:-.}
demo=$top_builddir/samples/audit_demo

fail() {
	echo "demo.sh: FAIL: $*" >&2
	exit 1
}

[ -x "$demo" ] || fail "$demo is missing or not executable (run make first)"

out=$("$demo" 2>&1)
status=$?
printf '%s\n' "$out"

[ "$status" -eq 0 ] || fail "audit_demo exited with status $status"
printf '%s\n' "$out" |
	grep -Eq '^audit_demo: OK: ckpt reported exactly the [0-9]+ pages written to the particle array$' ||
	fail "no OK line in the report"
# AddressSanitizer's malloc does not use the brk heap.
if ! ldd "$top_builddir/samples/.libs/audit_demo" "$demo" 2>/dev/null | grep -q libasan; then
	printf '%s\n' "$out" | grep -q '\[heap\]' || fail "the report does not mention [heap]"
fi
# The program's own .data is written (its parameter table), so a run names the
# executable: a path ending in audit_demo (lt-audit_demo under libtool).
printf '%s\n' "$out" | grep -Eq '/([^ ]*/)?(lt-)?audit_demo$' ||
	fail "the report does not mention the program's own mapping"
exit 0

#!/bin/sh
# tests/heat-demo.sh - the README's demo (scripts/demo.sh -t 4), on a
# smaller grid: samples/heat with 4 worker threads killed twice, resumed by
# running it again and by `ckpt resume`, must end with the checksum of an
# uninterrupted run, which is also that of a run with one thread.  In a
# sanitizer build, whose library refuses to resume, it checks that refusal.
# SPDX-License-Identifier: GPL-2.0-or-later
top_builddir=${top_builddir:-.}
srcdir=${top_srcdir:-${srcdir:-.}}
build=$(cd "$top_builddir" && pwd) || exit 1
fail() {
	echo "heat-demo.sh: FAIL: $*" >&2
	exit 1
}
if ldd "$build/samples/.libs/heat" "$build/samples/heat" 2>/dev/null | grep -q libasan; then
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-heat.XXXXXX") || fail "mktemp"
	out=$("$build/samples/heat" -n 64 -s 4 -k 2 -d "$tmp/chain" 2>&1)
	status=$?
	rm -rf "$tmp"
	[ $status -ne 0 ] || fail "a sanitizer build ran heat with CKPT_F_RESUME: $out"
	printf '%s\n' "$out" | grep -q AddressSanitizer ||
		fail "refused without naming AddressSanitizer: $out"
	echo "heat-demo.sh: sanitizer build: resuming is refused as documented: $out"
	# The worker threads, without ckpt, under the sanitizers: the same
	# checksum as one thread.
	one=$("$build/samples/heat" -0 -q -n 256 -s 40 -t 1 2>&1) || fail "heat -t 1: $one"
	four=$("$build/samples/heat" -0 -q -n 256 -s 40 -t 4 2>&1) || fail "heat -t 4: $four"
	[ "$one" = "$four" ] || fail "heat -0: 4 threads end with '$four', one with '$one'"
	echo "heat-demo.sh: sanitizer build: heat -0 -t 4 ends as -t 1 ($four)"
	exit 0
fi
one=$("$build/samples/heat" -0 -q -n 1024 -s 1500 -t 1 2>&1) || fail "heat -t 1: $one"
out=$(CKPT_BUILD=$build sh "$srcdir/scripts/demo.sh" -t 4 -n 1024 -s 1500 -k 50 2>&1)
status=$?
printf '%s\n' "$out"
[ $status -eq 0 ] || fail "scripts/demo.sh exited $status"
printf '%s\n' "$out" | grep -q '^same checksum: yes$' || fail "no 'same checksum: yes'"
printf '%s\n' "$out" | grep -q 'heat: resumed at step' || fail "nothing said it resumed"
printf '%s\n' "$out" | grep -qx "checksum, uninterrupted: *${one#checksum }" ||
	fail "4 threads and one end differently: one thread: $one"

#!/bin/sh
# tests/fuzz-reset.sh - runs samples/fuzz-reset, the persistent fuzzing loop,
# on a directory of inputs and on lines of standard input, under each
# back-end this machine has: every input must start from the same target
# state, the input that crashes the target must be named, and the loop must
# go on after it.
# SPDX-License-Identifier: GPL-2.0-or-later
top_builddir=${top_builddir:-.}
build=$(cd "$top_builddir" && pwd) || exit 1
prog=$build/samples/fuzz-reset
fail() {
	echo "fuzz-reset.sh: FAIL: $*" >&2
	exit 1
}
[ -x "$prog" ] || fail "$prog is missing (run make first)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-fuzz.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT

mkdir "$tmp/in"
printf 'set apple 1\nset pear 2\nget apple\n' >"$tmp/in/a-sets"
# AddressSanitizer's shadow memory is not the program's state: a node an
# input frees stays poisoned after the reset brings it back, and the next
# read of it is reported (doc/TRACKING.md, "Sanitizers").  That input is
# left out of a sanitizer build.
if ldd "$build/samples/.libs/fuzz-reset" "$prog" 2>/dev/null | grep -q libasan; then
	printf 'set delta3 7\nset gamma2 -5\nget gamma2\n' >"$tmp/in/b-deletes"
	echo "fuzz-reset.sh: sanitizer build: no input frees what the snapshot holds"
else
	printf 'del alpha0\ndel beta1\nset gamma2 -5\nget gamma2\n' >"$tmp/in/b-deletes"
fi
i=0
while [ $i -lt 40 ]; do
	printf 'set key%d %d\n' $i $i
	i=$((i + 1))
done >"$tmp/in/c-many"
printf 'get alpha0\nget zzzzzzz\nset after 1\n' >"$tmp/in/d-crash"
printf 'get none\n' >"$tmp/in/e-miss"

ran=0
for backend in uffd mprotect; do
	if ! why=$("$build/tests/backend-probe" $backend 2>&1); then
		echo "fuzz-reset.sh: the $backend back-end is not possible here ($why): skipped"
		continue
	fi
	out=$(CKPT_BACKEND=$backend "$prog" -n 50 -d "$tmp/chain" "$tmp/in" 2>&1)
	status=$?
	printf '%s\n' "$out"
	[ $status -eq 0 ] || fail "$backend, directory: exit status $status"
	printf '%s\n' "$out" | grep -Eq '^fuzz-reset: 250 inputs run in .* execs/s' ||
		fail "$backend, directory: not 250 inputs run"
	printf '%s\n' "$out" | grep -q "^fuzz-reset: 50 crashes; the first: input 'd-crash'" ||
		fail "$backend, directory: the crashing input is not named, or not every round"
	printf '%s\n' "$out" | grep -q 'state at the start of every input: identical$' ||
		fail "$backend, directory: the target's state changed between inputs"

	out=$(printf 'set x 1\nget zzzzzzz\nset y 2\nget x\n' |
		CKPT_BACKEND=$backend "$prog" -n 20 -d "$tmp/chain" - 2>&1)
	status=$?
	printf '%s\n' "$out"
	[ $status -eq 0 ] || fail "$backend, stdin: exit status $status"
	printf '%s\n' "$out" | grep -Eq '^fuzz-reset: 80 inputs run' || fail "$backend, stdin: not 80 inputs"
	printf '%s\n' "$out" | grep -q "^fuzz-reset: 20 crashes; the first: input 'line 2'" ||
		fail "$backend, stdin: the crashing line is not named"
	printf '%s\n' "$out" | grep -q 'identical$' || fail "$backend, stdin: the state changed"
	ran=$((ran + 1))
done
[ $ran -gt 0 ] || fail "no back-end could run"
echo "fuzz-reset.sh: OK on $ran back-end(s)"
exit 0

#!/bin/sh
# scripts/check.sh - the whole test suite: set up, then `make check` in a
# plain build (build/) and in one with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/), then the snapshot reader's fuzz
# target for CKPT_FUZZ_SECONDS (default 60).  The last line of the output is
# "N passed, N failed" over all of it; the exit status is 0 only if none
# failed.
# SPDX-License-Identifier: GPL-2.0-or-later
set -u
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
for variant in build build-asan; do
	flags=--enable-werror
	[ "$variant" = build-asan ] && flags="$flags --enable-sanitizers"
	mkdir -p "$root/$variant"
	cd "$root/$variant"
	if [ ! -f Makefile ]; then
		../configure $flags >configure.out 2>&1 || {
			cat configure.out
			failed=$((failed + 1))
			continue
		}
	fi
	rm -f test-suite.log
	echo "== make check in $variant"
	make -j"$(nproc)" check
	log=test-suite.log
	if [ ! -f "$log" ]; then
		echo "check: $variant produced no $log" >&2
		failed=$((failed + 1))
		continue
	fi
	# automake's summary: "# PASS:  N", "# FAIL:  N", "# ERROR: N"...
	p=$(sed -n 's/^# PASS: *\([0-9]*\)$/\1/p' "$log")
	f=$(sed -n 's/^# \(FAIL\|ERROR\|XPASS\): *\([0-9]*\)$/\2/p' "$log" |
		awk '{s += $1} END {print s + 0}')
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
done
cd "$root"
echo "== fuzzing the snapshot reader"
if scripts/fuzz.sh "${CKPT_FUZZ_SECONDS:-60}"; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

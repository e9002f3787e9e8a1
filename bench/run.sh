#!/bin/sh
# bench/run.sh - what `ckpt run --every 1s` costs real programs that know
# nothing of ckpt: wall time against a plain run, and the bytes a commit
# writes against a full dump of the program's memory.
# SPDX-License-Identifier: GPL-2.0-or-later
#
#     bench/run.sh [--quick]           (run by `make bench`; top_builddir=.)
#
# The programs:
#   python3   a numeric loop over a list of floats of MIB MiB (1024; each
#             element 8 bytes of list and a 24-byte float) and a dict: each
#             step updates the next 4096 elements and 1024 dict entries, a
#             zlib.crc32 every 64 steps.  The list is built first (part of
#             both runs).
#   c-file    tests/run-prog: one thread hashing and writing a line per step
#             to an output file through stdio
#   c-threads tests/run-prog --threads 3: three workers and a barrier
#   c-fork    tests/run-prog --fork: a child every 25 steps
# Each is run plain and under `ckpt run --every 1s --json`, alternately,
# REPS times (3; the best time of each counts), on the back-end AUTO picks.
# Printed for each: the two times and their ratio (the bar for python3 at
# 1 GiB: at most 1.10), the commits and how many of them a child process
# wrote (the large first ones), the program's pause per commit (mean and
# largest), the full dump (the program's resident memory at each commit,
# the mean: what a dump without incremental tracking writes each time,
# uncompressed) and the mean file bytes of the commits after the first,
# and their ratio.
# --quick (or CKPT_BENCH_QUICK=1): 64 MiB, one repetition, for CI.
top_builddir=${top_builddir:-.}
ckpt=$top_builddir/tools/ckpt
prog=$top_builddir/tests/run-prog
quick=${CKPT_BENCH_QUICK:-0}
[ "$1" = --quick ] && quick=1
reps=3
mib=1024
pysteps=6000
csteps=4000
if [ "$quick" = 1 ]; then
	reps=1
	mib=64
	pysteps=2000
	csteps=600
fi
for p in "$ckpt" "$prog"; do
	[ -x "$p" ] || {
		echo "bench/run.sh: $p not built (make check builds it)" >&2
		exit 1
	}
done
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-run-bench.XXXXXX") || exit 1
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM

now() {
	date +%s.%N
}

python=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
cat >"$scratch/loop.py" <<'EOF'
import sys, zlib
mib, steps = int(sys.argv[1]), int(sys.argv[2])
n = mib * 1048576 // 32
xs = [float(i) for i in range(n)]
d, at, crc, w = {}, 0, 0, 4096
for s in range(steps):
    for i in range(at, at + w):
        v = xs[i] * 0.999 + 1.0
        xs[i] = v
        k = i & 1023
        d[k] = d.get(k, 0.0) + v
    at = (at + w) % (n - w)
    if s % 64 == 0:
        crc = zlib.crc32(repr(sorted(d.items())[:8]).encode(), crc)
print("%08x %.6e" % (crc, sum(xs[:1000])))
EOF

# timed OUT CMD...: runs CMD, its stdout to OUT; prints the seconds taken.
timed() {
	out=$1
	shift
	t0=$(now)
	"$@" >"$out" 2>"$scratch/err" </dev/null || {
		echo "bench/run.sh: failed: $* ($(cat "$scratch/err"))" >&2
		exit 1
	}
	t1=$(now)
	echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }'
}

min() {
	echo "$1 $2" | awk '{ print ($2 == "" || $1 < $2) ? $1 : $2 }'
}

# bench NAME CMD...: the row of one program.
bench() {
	name=$1
	shift
	bp= bc= i=0
	while [ $i -lt $reps ]; do
		t=$(timed "$scratch/plain.out" "$@") || exit 1
		bp=$(min "$t" "$bp")
		rm -rf "$scratch/chain"
		t=$(timed "$scratch/ckpt.out" "$ckpt" run --every 1s --json "$scratch/chain" -- "$@") ||
			exit 1
		cmp -s "$scratch/plain.out" "$scratch/ckpt.out" || {
			echo "bench/run.sh: $name: the output under ckpt run differs" >&2
			exit 1
		}
		if [ -z "$bc" ] || [ "$(min "$t" "$bc")" = "$t" ]; then
			cp "$scratch/chain/run.jsonl" "$scratch/best.jsonl"
		fi
		bc=$(min "$t" "$bc")
		i=$((i + 1))
	done
	awk -v name="$name" -v plain="$bp" -v ck="$bc" '
		function field(f,   v) { v = $0; if (!sub(".*\"" f "\":", "", v)) return 0; sub(/[,}].*/, "", v); return v + 0 }
		/"event":"commit"/ {
			n++; p = field("pause_us"); ps += p; if (p > pm) pm = p
			full += field("rss_bytes")
			if (n > 1) { inc += field("file_bytes"); ni++ }
			if (/"writer":"fork"/) nf++
		}
		/-failed"/ { failed++ }
		END {
			full = n ? full / n : 0
			printf "%-10s %8.2f %8.2f %6.3f %7d %5d %9.1f %9.1f %10.1f %10.2f %8.4f%s\n", name, plain,
			    ck, ck / plain, n, nf, n ? ps / n / 1000 : 0, pm / 1000, full / 1048576,
			    ni ? inc / ni / 1048576 : 0, full && ni ? inc / ni / full : 0,
			    failed ? "  (" failed " failed)" : ""
		}' "$scratch/best.jsonl"
}

echo "ckpt run --every 1s against a plain run, best of $reps; back-end: ${CKPT_BACKEND:-AUTO}"
printf "%-10s %8s %8s %6s %7s %5s %9s %9s %10s %10s %8s\n" program plain_s ckpt_s ratio commits \
	forks pause_ms maxpau_ms full_MiB incr_MiB incr/full
if [ -n "$python" ] && [ -x "$python" ]; then
	bench "python3" "$python" "$scratch/loop.py" $mib $pysteps
else
	echo "python3: not installed, not measured"
fi
bench "c-file" "$prog" /dev/stdout $csteps
bench "c-threads" "$prog" /dev/stdout $csteps --threads 3
bench "c-fork" "$prog" "$scratch/fork.out" $csteps --fork
echo "python3: $mib MiB, $pysteps steps of 4096 elements"

#!/bin/sh
# scripts/demo.sh - kill a simulation twice and watch it finish as if it
# had never been interrupted.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Runs samples/heat (a heat-diffusion simulation on two grids of 288 MiB
# that commits a snapshot every 20 steps) three ways, each with its chain in
# a fresh directory under a temporary one:
#   1. uninterrupted: the reference checksum of the final grid;
#   2. killed with SIGKILL once its chain holds two snapshots, then started
#      again with the same command: it resumes at its last commit;
#   3. that resumed run killed too after one more snapshot, and resumed by
#      `ckpt resume DIR`, which starts the program the chain recorded;
# and prints both checksums.  Exit status 0 only if they are equal.
# Builds nothing: run it after scripts/setup.sh.  Options are passed to heat
# (e.g. `scripts/demo.sh -n 2048 -s 200 -k 25` for a smaller, faster run).
set -u
cd "$(dirname "$0")/.." || exit 1
build=${CKPT_BUILD:-$(pwd)/build} # the build directory (tests/heat-demo.sh sets it)
heat=$build/samples/heat
ckpt=$build/tools/ckpt
for p in "$heat" "$ckpt"; do
	[ -x "$p" ] || {
		echo "demo: $p is missing: run scripts/setup.sh first" >&2
		exit 1
	}
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-demo.XXXXXX") || exit 1
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

snapshots() { # DIR: how many complete snapshots the chain holds
	k=0
	for f in "$1"/snap-*.ckpt; do
		[ -f "$f" ] && k=$((k + 1))
	done
	echo $k
}

# alive: whether heat, started in the background as $pid, still runs (one
# that ended is a zombie until waited for, which kill -0 would still find).
alive() {
	case $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) in
	'' | Z*) return 1 ;;
	esac
}

# kill_at N DIR LOG: waits until DIR holds N snapshots, then SIGKILL.
kill_at() {
	while [ "$(snapshots "$2")" -lt "$1" ]; do
		if ! alive; then
			echo "demo: heat ended before its snapshot $1:" >&2
			cat "$tmp/$3" >&2
			exit 1
		fi
		sleep 0.2
	done
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	pid=
	echo "   killed (SIGKILL) with $(snapshots "$2") snapshots in the chain;" \
		"its last words: $(grep '^step' "$tmp/$3" | tail -n 1)"
}

checksum() { # LOG
	sed -n 's/^checksum //p' "$tmp/$1"
}

echo "1. heat $*, uninterrupted"
t0=$(date +%s)
"$heat" -d "$tmp/ref.ckpt" "$@" >"$tmp/ref.log" 2>&1 || {
	cat "$tmp/ref.log"
	exit 1
}
sed 's/^/   /' "$tmp/ref.log"
echo "   $(($(date +%s) - t0)) s"
ref=$(checksum ref.log)

dir=$tmp/run.ckpt
echo "2. the same, killed after its second snapshot, then the same command again"
"$heat" -d "$dir" "$@" >"$tmp/run1.log" 2>&1 &
pid=$!
kill_at 2 "$dir" run1.log
"$heat" -d "$dir" "$@" >"$tmp/run2.log" 2>&1 &
pid=$!
n=$(snapshots "$dir")
echo "3. killed again after one more snapshot, resumed by: ckpt resume $dir"
kill_at $((n + 1)) "$dir" run2.log
sed 's/^/   run 2: /' "$tmp/run2.log"
"$ckpt" resume "$dir" >"$tmp/run3.log" 2>&1
status=$?
sed 's/^/   run 3: /' "$tmp/run3.log"
[ $status -eq 0 ] || echo "   ckpt resume exited $status"
got=$(checksum run3.log)

echo
echo "checksum, uninterrupted:       ${ref:-none}"
echo "checksum, killed and resumed:  ${got:-none}"
if [ -n "$ref" ] && [ "$ref" = "$got" ]; then
	echo "same checksum: yes"
	exit 0
fi
echo "same checksum: no"
exit 1

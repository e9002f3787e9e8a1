#!/bin/sh
# tests/mpi-job.sh - a job folder: a restart with another number of ranks,
# a damaged manifest, and what `ckpt ls` and `ckpt verify` say of it.
# SPDX-License-Identifier: GPL-2.0-or-later
#
#   a  a job of 4 ranks with 3 complete epochs, restarted with 3 ranks and
#      with 5: refused on every rank (CKPT_EMISMATCH, "the checkpoint has 4
#      ranks, the job 3"), the folder left as it was; opened without
#      CKPT_F_RESUME: refused on every rank (CKPT_EEXIST), nothing set aside
#   b  ckpt ls: the epochs, oldest first, each rank's snapshot and size;
#      --json the same, and valid JSON; the snapshots past the newest
#      epoch, after an epoch that failed on one rank
#   c  ckpt verify: sound; then a byte of rank 1's snapshot 2 flipped:
#      verify fails (exit 1) naming rank 1's folder and no other, --json
#      says ok false
#   d  the manifest damaged (one digit changed): ls and verify fail
#      naming it, and a restart is refused on every rank with the same
#      message (CKPT_ECORRUPT), the manifest left as it was
#   e  a job folder that is a symbolic link is refused (CKPT_EACCES) on
#      every rank, also when named with a trailing slash
name=mpi-job.sh
. "${top_srcdir:-$(dirname "$0")/..}/tests/mpi-lib.sh"

n=128 k=10
dir=$scratch/job
out=$(mpi_run 4 "$heat" -q -n $n -s 35 -k $k -d "$dir" 2>&1) || fail "the job exited $?: $out"
cp "$dir/manifest" "$scratch/manifest.before"

# ---- a ------------------------------------------------------------------------
for np in 3 5; do
	out=$(mpi_run $np "$heat" -q -n $n -s 35 -k $k -d "$dir" 2>&1) &&
		fail "a: a restart with $np ranks exited 0: $out"
	refusals=$(printf '%s\n' "$out" | grep -c \
		"ckpt_mpi_open: CKPT_EMISMATCH: .*the checkpoint has 4 ranks, the job $np ")
	[ "$refusals" = $np ] || fail "a: $refusals ranks of $np refuse the restart: $out"
	cmp -s "$dir/manifest" "$scratch/manifest.before" || fail "a: the manifest changed"
	[ ! -e "$dir/rank-00004" ] || fail "a: a folder was made for a fifth rank"
done
out=$(mpi_run 4 "$heat" -F -q -n $n -s 35 -k $k -d "$dir" 2>&1) &&
	fail "a: a job folder with epochs opened without CKPT_F_RESUME exited 0: $out"
refusals=$(printf '%s\n' "$out" | grep -c "ckpt_mpi_open: CKPT_EEXIST: rank 0: .*holds epoch 3 of a job of 4 ranks")
[ "$refusals" = 4 ] || fail "a: $refusals ranks of 4 refuse to start over: $out"
cmp -s "$dir/manifest" "$scratch/manifest.before" || fail "a: the manifest changed"
ls "$dir"/rank-00000 | grep -q aside && fail "a: snapshots were set aside"
say "a: a restart with 3 or 5 ranks of a 4-rank job is refused on every rank, and so is one without CKPT_F_RESUME"

# ---- b ------------------------------------------------------------------------
out=$("$ckpt" ls "$dir") || fail "b: ls exited $?: $out"
printf '%s\n' "$out" | head -1 | grep -qx "$dir: job of 4 ranks, 3 complete epochs listed (newest 3)" ||
	fail "b: ls heading: $out"
rows=$(printf '%s\n' "$out" | awk 'NR > 2 && NF == 5' | wc -l)
[ "$rows" = 12 ] || fail "b: ls lists $rows snapshots, not 3 epochs x 4 ranks: $out"
for e in 1 2 3; do
	for r in 0 1 2 3; do
		printf '%s\n' "$out" | grep -Eq "^ +$e +$r +$e +[0-9.]+ (B|KiB|MiB)\$" ||
			fail "b: no row for rank $r's snapshot $e of epoch $e: $out"
	done
done
if command -v python3 >/dev/null 2>&1; then
	"$ckpt" ls "$dir" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["job"] is True and d["ranks"] == 4, d
assert [e["epoch"] for e in d["epochs"]] == [1, 2, 3], d
for e in d["epochs"]:
    assert [s["rank"] for s in e["snapshots"]] == [0, 1, 2, 3], e
    assert all(s["id"] == e["epoch"] and s["file_bytes"] > 0 for s in e["snapshots"]), e
assert d["past"] == [], d
' || fail "b: ls --json: $("$ckpt" ls "$dir" --json)"
fi
# An epoch that failed on rank 2, and no epoch after it: ranks 0, 1 and 3
# hold a snapshot past the newest complete epoch.
past=$scratch/past
out=$(HEAT_FAULT=2:20:write:1=ENOSPC mpi_run 4 "$heat" -q -n $n -s 25 -k $k -d "$past" 2>&1) ||
	fail "b: the job with a failed epoch exited $?: $out"
out=$("$ckpt" ls "$past") || fail "b: ls exited $?: $out"
for r in 0 1 3; do
	printf '%s\n' "$out" | grep -qx "rank $r: snapshot 2 past the newest complete epoch" ||
		fail "b: ls does not say rank $r holds snapshot 2 past epoch 1: $out"
done
printf '%s\n' "$out" | grep -q '^rank 2:' && fail "b: rank 2 wrote nothing past epoch 1: $out"
say "b: ls lists the epochs, and the snapshots past the newest"

# ---- c ------------------------------------------------------------------------
out=$("$ckpt" verify "$dir") || fail "c: verify exited $?: $out"
[ "$out" = "$dir: job of 4 ranks, 3 complete epochs: manifest and 12 files, all sound" ] ||
	fail "c: verify says: $out"
f=$dir/rank-00001/snap-00000002.ckpt
cp "$f" "$scratch/snap.orig"
size=$(stat -c %s "$f")
byte=$(od -An -tu1 -j $((size / 2)) -N1 "$f" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte + 1) % 256)))" |
	dd of="$f" bs=1 seek=$((size / 2)) count=1 conv=notrunc 2>/dev/null
cmp -s "$f" "$scratch/snap.orig" && fail "c: the byte was not changed"
out=$("$ckpt" verify "$dir" 2>&1)
[ $? = 1 ] || fail "c: verify of a damaged rank file did not exit 1: $out"
printf '%s\n' "$out" | grep -q "rank 1: $dir/rank-00001: " ||
	fail "c: verify does not name rank 1's folder: $out"
printf '%s\n' "$out" | grep -q 'rank [023]:' && fail "c: verify blames a sound rank: $out"
"$ckpt" verify "$dir" --json | grep -q '"ok":false' || fail "c: verify --json says ok"
cp "$scratch/snap.orig" "$f"
out=$("$ckpt" verify "$dir") || fail "c: verify of the repaired file: $out"
say "c: verify names the damaged rank"

# ---- d ------------------------------------------------------------------------
sed 's/^epoch 2 2 2 2 2$/epoch 2 2 2 2 1/' "$scratch/manifest.before" >"$dir/manifest"
cmp -s "$dir/manifest" "$scratch/manifest.before" && fail "d: the manifest was not changed"
cp "$dir/manifest" "$scratch/manifest.damaged"
for cmd in ls verify; do
	out=$("$ckpt" $cmd "$dir" 2>&1) && fail "d: $cmd of a damaged manifest exited 0: $out"
	printf '%s\n' "$out" | grep -q "$dir/manifest is damaged: its checksum" ||
		fail "d: $cmd does not name the damaged manifest: $out"
done
out=$(mpi_run 4 "$heat" -q -n $n -s 35 -k $k -d "$dir" 2>&1) &&
	fail "d: a restart with a damaged manifest exited 0: $out"
refusals=$(printf '%s\n' "$out" |
	grep -c "ckpt_mpi_open: CKPT_ECORRUPT: rank 0: $dir/manifest is damaged")
[ "$refusals" = 4 ] || fail "d: $refusals ranks of 4 refuse the damaged manifest: $out"
cmp -s "$dir/manifest" "$scratch/manifest.damaged" || fail "d: the damaged manifest was changed"
say "d: a damaged manifest is refused, by the tool and by every rank"

# ---- e ------------------------------------------------------------------------
cp "$scratch/manifest.before" "$dir/manifest"
ln -s "$dir" "$scratch/link"
for d in "$scratch/link" "$scratch/link/" "$scratch/link//"; do
	out=$(mpi_run 4 "$heat" -q -n $n -s 35 -k $k -d "$d" 2>&1) &&
		fail "e: a job folder reached as the symbolic link $d was used: $out"
	refusals=$(printf '%s\n' "$out" | grep -c "ckpt_mpi_open: CKPT_EACCES: rank 0: .*: a symbolic link")
	[ "$refusals" = 4 ] || fail "e: $refusals ranks of 4 refuse $d: $out"
done
say "e: a job folder that is a symbolic link is refused, trailing slashes or not"
exit 0

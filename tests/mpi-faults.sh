#!/bin/sh
# tests/mpi-faults.sh - an epoch that fails on one rank is never complete
# (samples/heat-mpi, 4 ranks, CKPT_FAULT on one rank only).
# SPDX-License-Identifier: GPL-2.0-or-later
#
#   a  rank 1 killed inside ckpt_mpi_commit (its first fsync of the
#      checkpoint at step 30: CKPT_FAULT=fsync:1=SIGKILL): the manifest
#      still ends at epoch 2, the restart resumes every rank at epoch 2
#      (step 20), and ends with the reference checksum; and the same with
#      the commit written in the background (CKPT_F_ASYNC)
#   b  rank 2's write fails with ENOSPC at the checkpoint of step 30: every
#      rank reports CKPT_ENOSPC naming rank 2, the epoch is not recorded
#      (the manifest's epoch 3 is the checkpoint of step 40, for which rank
#      2 wrote its snapshot 3 and the others their 4), the run goes on and
#      ends right; a restart of the finished job resumes at its newest
#      epoch and ends right again
#   c  the same ENOSPC with the commit in the background: reported by every
#      rank at the next checkpoint, and the restart ends right
#   d  ENOSPC at the very first checkpoint, and the job ends before the
#      next: no epoch complete, ranks 0, 1 and 3 hold a snapshot; run again,
#      the job starts afresh (nobody resumes), those snapshots are set
#      aside (aside-0-*), and it ends right
#   e  a job folder whose manifest cannot be written (a directory stands
#      where its temporary file goes): the checkpoint fails on every rank
#      naming rank 0 and the manifest, and nothing is recorded
#   f  (uffd back-end) rank 2's commit fails before anything is written,
#      reading the pages written (CKPT_FAULT=sync:1=EIO): reported by every
#      rank at that checkpoint, or with CKPT_F_ASYNC at the next one (the
#      copy's failure is agreed on with the writes', when the epoch is
#      completed); not recorded; the run ends right
name=mpi-faults.sh
. "${top_srcdir:-$(dirname "$0")/..}/tests/mpi-lib.sh"

n=128 steps=60 k=10
ref=$(heat_ref $n $steps)
[ -n "$ref" ] || fail "samples/heat printed no checksum"

run() { # DIR MODE [ARGS...]
	d=$1 m=$2
	shift 2
	mpi_run 4 "$heat" -q -n $n -s $steps -k $k $m -d "$d" "$@" 2>&1
}

newest_epoch() {
	"$ckpt" ls "$1" | sed -n 's/.*(newest \([0-9]*\)).*/\1/p'
}

# ---- a ------------------------------------------------------------------------
for mode in "" -a; do
	dir=$scratch/kill$mode
	out=$(HEAT_FAULT=1:30:fsync:1=SIGKILL run "$dir" "$mode") &&
		fail "a$mode: the job whose rank 1 was killed in a commit exited 0: $out"
	printf '%s\n' "$out" | grep -q '^checksum' && fail "a$mode: the job finished: $out"
	e=$(newest_epoch "$dir")
	[ "$e" = 2 ] || fail "a$mode: the manifest ends at epoch '$e', not 2: $("$ckpt" ls "$dir")"
	out=$(run "$dir" "$mode") || fail "a$mode: the restart exited $?: $out"
	for r in 0 1 2 3; do
		printf '%s\n' "$out" | grep -qx "heat-mpi: rank $r resumed at epoch 2, step 20" ||
			fail "a$mode: rank $r did not resume at epoch 2: $out"
	done
	printf '%s\n' "$out" | grep -qx "checksum $ref" ||
		fail "a$mode: the restart does not end with $ref: $out"
	out=$("$ckpt" verify "$dir" 2>&1) || fail "a$mode: verify: $out"
	say "a${mode:+ (async)}: killed in the commit of epoch 3, every rank resumed at epoch 2"
done

# ---- b ------------------------------------------------------------------------
dir=$scratch/enospc
out=$(HEAT_FAULT=2:30:write:1=ENOSPC run "$dir" "") || fail "b: the job exited $?: $out"
errs=$(printf '%s\n' "$out" | grep -c \
	'step 30: ckpt_mpi_commit: CKPT_ENOSPC: rank 2: ckpt_commit: no space left on device')
[ "$errs" = 4 ] || fail "b: $errs ranks of 4 report rank 2's ENOSPC at step 30: $out"
printf '%s\n' "$out" | grep -qx "checksum $ref" || fail "b: the job does not end with $ref: $out"
grep -qx 'epoch 3 4 4 3 4' "$dir/manifest" ||
	fail "b: the manifest's epoch 3 is not step 40's: $(cat "$dir/manifest")"
e=$(newest_epoch "$dir")
[ "$e" = 4 ] || fail "b: the manifest ends at epoch '$e', not 4: $("$ckpt" ls "$dir")"
out=$(run "$dir" "") || fail "b: the restart exited $?: $out"
printf '%s\n' "$out" | grep -qx "heat-mpi: rank 2 resumed at epoch 4, step 50" ||
	fail "b: the restart did not resume at epoch 4: $out"
printf '%s\n' "$out" | grep -qx "checksum $ref" || fail "b: the restart does not end with $ref: $out"
say "b: ENOSPC on rank 2 reported by every rank, the epoch not recorded, the next complete"

# ---- c ------------------------------------------------------------------------
dir=$scratch/enospc-async
out=$(HEAT_FAULT=2:30:write:1=ENOSPC run "$dir" -a) || fail "c: the job exited $?: $out"
errs=$(printf '%s\n' "$out" | grep -c 'ckpt_mpi_commit: CKPT_ENOSPC: rank 2: ')
[ "$errs" = 4 ] || fail "c: $errs ranks of 4 report rank 2's ENOSPC: $out"
printf '%s\n' "$out" | grep -qx "checksum $ref" || fail "c: the job does not end with $ref: $out"
out=$("$ckpt" verify "$dir" 2>&1) || fail "c: verify: $out"
out=$(run "$dir" -a) || fail "c: the restart exited $?: $out"
printf '%s\n' "$out" | grep -q "resumed at epoch" || fail "c: the restart did not resume: $out"
printf '%s\n' "$out" | grep -qx "checksum $ref" || fail "c: the restart does not end with $ref: $out"
say "c: the same in the background: reported at the next checkpoint by every rank"

# ---- d ------------------------------------------------------------------------
dir=$scratch/never
out=$(HEAT_FAULT=2:10:write:1=ENOSPC run "$dir" "" -s 15) || fail "d: the job exited $?: $out"
e=$(newest_epoch "$dir")
[ -z "$e" ] || fail "d: an epoch is complete: $("$ckpt" ls "$dir")"
"$ckpt" ls "$dir" | grep -q 'rank 0: snapshot 1 past the newest complete epoch' ||
	fail "d: ls does not show rank 0's snapshot past the newest epoch: $("$ckpt" ls "$dir")"
out=$(run "$dir" "") || fail "d: the second run exited $?: $out"
printf '%s\n' "$out" | grep -q 'resumed' && fail "d: resumed from an epoch that never completed: $out"
printf '%s\n' "$out" | grep -qx "checksum $ref" || fail "d: the run does not end with $ref: $out"
for r in 0 1 3; do
	ls -d "$dir/rank-0000$r"/aside-0-* >/dev/null 2>&1 ||
		fail "d: rank $r's snapshot of the failed epoch was not set aside: $(ls "$dir/rank-0000$r")"
done
say "d: a folder without a complete epoch starts afresh, its snapshots set aside"

# ---- e ------------------------------------------------------------------------
dir=$scratch/nomanifest
out=$(run "$dir" "" -s 25) || fail "e: the first job exited $?: $out"
cp "$dir/manifest" "$scratch/manifest.before"
mkdir "$dir/.manifest.tmp" "$dir/.manifest.tmp/x"
out=$(run "$dir" "" -s 45) || fail "e: the job exited $?: $out"
errs=$(printf '%s\n' "$out" | grep -c \
	'step 30: ckpt_mpi_commit: CKPT_E[A-Z]*: rank 0: recording epoch 3: .*\.manifest\.tmp')
[ "$errs" = 4 ] || fail "e: $errs ranks of 4 report that rank 0 could not record epoch 3: $out"
cmp -s "$dir/manifest" "$scratch/manifest.before" ||
	fail "e: the manifest changed: $(cat "$dir/manifest")"
say "e: a manifest that cannot be written fails the epoch on every rank, and stays as it was"

# ---- f ------------------------------------------------------------------------
if ! why=$("$build/tests/backend-probe" uffd 2>&1); then
	say "f: not run: the uffd back-end is not possible here ($why), and the mprotect one" \
		"reads no record of the pages written that could fail"
	exit 0
fi
for mode in "" -a; do
	at=30
	[ "$mode" = -a ] && at=40
	dir=$scratch/capture$mode
	out=$(CKPT_BACKEND=uffd HEAT_FAULT=2:30:sync:1=EIO run "$dir" "$mode") ||
		fail "f$mode: the job exited $?: $out"
	errs=$(printf '%s\n' "$out" |
		grep -c "step $at: ckpt_mpi_commit: CKPT_EIO: rank 2: ckpt_commit: .*PAGEMAP_SCAN")
	[ "$errs" = 4 ] || fail "f$mode: $errs ranks of 4 report rank 2's failure at step $at: $out"
	grep -qx 'epoch 3 4 4 3 4' "$dir/manifest" ||
		fail "f$mode: the failed epoch was recorded: $(cat "$dir/manifest")"
	printf '%s\n' "$out" | grep -qx "checksum $ref" ||
		fail "f$mode: the job does not end with $ref: $out"
done
say "f: a commit that fails before writing, reported by every rank (async: at the next checkpoint)"
exit 0

#!/bin/sh
# tests/mpi-heat.sh - an MPI job killed and restarted ends as one never
# interrupted (samples/heat-mpi, 4 ranks).
# SPDX-License-Identifier: GPL-2.0-or-later
#
#   a  heat-mpi without ckpt, and with it uninterrupted, ends with the
#      checksum of samples/heat (one process) on the same grid: the split
#      into bands and the checkpoints change nothing
#   b  under each back-end, for several random moments: one rank kills
#      itself (SIGKILL) at a random step, mpirun ends the job; the same
#      command again resumes every rank at the newest complete epoch,
#      which must be the last one before the kill (sync) or the one
#      before that (CKPT_F_ASYNC: the last was still in flight), or starts
#      afresh when none was complete; and ends with the reference checksum
#   c  killed twice (the second time after the restart), then finished
#   d  the job folder verifies afterwards (ckpt verify)
# Kill moments come from /dev/urandom and are printed.
name=mpi-heat.sh
. "${top_srcdir:-$(dirname "$0")/..}/tests/mpi-lib.sh"

n=192 steps=60 k=10
ref=$(heat_ref $n $steps)
[ -n "$ref" ] || fail "samples/heat printed no checksum"

# ---- a --------------------------------------------------------------------------
out=$(mpi_run 4 "$heat" -0 -q -n $n -s $steps 2>&1) || fail "heat-mpi -0 exited $?: $out"
[ "$out" = "checksum $ref" ] || fail "heat-mpi -0 ends with '$out', samples/heat with $ref"
out=$(mpi_run 4 "$heat" -q -n $n -s $steps -k $k -d "$scratch/whole" 2>&1) ||
	fail "heat-mpi exited $?: $out"
[ "$out" = "checksum $ref" ] || fail "heat-mpi with checkpoints ends with '$out', not $ref"
n_epochs=$("$ckpt" ls "$scratch/whole" | sed -n 's/.*, \([0-9]*\) complete epochs listed.*/\1/p')
[ "$n_epochs" = $(((steps - 1) / k)) ] ||
	fail "an uninterrupted run completed '$n_epochs' epochs: $("$ckpt" ls "$scratch/whole")"
say "a: 4 ranks end as one process ($ref), with and without checkpoints"

# The epoch a job killed once it computed step s resumes from.
expected_epoch() { # s async
	e=$((($1 - 1) / k))
	[ "$2" = -a ] && e=$((e - 1))
	[ $e -lt 0 ] && e=0
	echo $e
}

# run_killed DIR RANK STEP MODE: the job, killed; it must have died.
run_killed() {
	out=$(HEAT_KILL=$2:$3 mpi_run 4 "$heat" -q -n $n -s $steps -k $k $4 -d "$1" 2>&1)
	status=$?
	[ $status -ne 0 ] || fail "the job with rank $2 killed at step $3 exited 0: $out"
	printf '%s\n' "$out" | grep -q '^checksum' &&
		fail "the job with rank $2 killed at step $3 finished: $out"
}

# restart DIR EPOCH MODE: the same command again; every rank resumes at
# EPOCH (none says so for 0) and the run ends with the reference.
restart() {
	out=$(mpi_run 4 "$heat" -q -n $n -s $steps -k $k $3 -d "$1" 2>&1) ||
		fail "the restarted job exited $?: $out"
	printf '%s\n' "$out" | grep -qx "checksum $ref" ||
		fail "the restarted job does not end with $ref: $out"
	resumed=$(printf '%s\n' "$out" | grep -c 'resumed at')
	if [ "$2" = 0 ]; then
		[ "$resumed" = 0 ] || fail "nothing was complete, yet it resumed: $out"
		return
	fi
	[ "$resumed" = 4 ] || fail "$resumed ranks of 4 say they resumed: $out"
	for r in 0 1 2 3; do
		printf '%s\n' "$out" |
			grep -qx "heat-mpi: rank $r resumed at epoch $2, step $(($2 * k))" ||
			fail "rank $r did not resume at epoch $2 (step $(($2 * k))): $out"
	done
}

# ---- b, c, d ----------------------------------------------------------------------
for be in $(backends); do
	export CKPT_BACKEND=$be
	for seed in 1 2 3; do
		mode=
		[ $seed = 2 ] && mode=-a
		dir=$scratch/$be-$seed
		rank=$(random_in 0 3)
		s=$(random_in 1 $((steps - 1)))
		say "b: $be${mode:+ (async)}: rank $rank killed at step $s"
		run_killed "$dir" $rank $s "$mode"
		restart "$dir" "$(expected_epoch $s "$mode")" "$mode"
		out=$("$ckpt" verify "$dir" 2>&1) || fail "verify after the restart: $out"
	done
	# c: killed at s1, restarted and killed again at s2, then finished.
	dir=$scratch/$be-twice
	s1=$(random_in 12 30)
	s2=$(random_in $((s1 + k)) $((steps - 1)))
	say "c: $be: rank 1 killed at step $s1, then rank 3 at step $s2"
	run_killed "$dir" 1 $s1 ""
	run_killed "$dir" 3 $s2 ""
	# Killed steps after the resume, so that the ranks have said so.
	printf '%s\n' "$out" | grep -q "resumed at epoch $(expected_epoch $s1 "")," ||
		fail "the second run did not resume at epoch $(expected_epoch $s1 ""): $out"
	restart "$dir" "$(expected_epoch $s2 "")" ""
	out=$("$ckpt" verify "$dir" 2>&1) || fail "verify after two restarts: $out"
	say "d: $be: $out"
done
unset CKPT_BACKEND
say "killed jobs restarted end with the uninterrupted checksum"
exit 0

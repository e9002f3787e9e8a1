#!/bin/sh
# tests/resume-threads.sh - multi-threaded programs continue after a kill.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The programs are tests/threads-prog (pthreads: workers over a shared grid
# with a barrier, a mutex and a condition variable per step) and
# tests/omp-prog (an OpenMP stencil); see their sources.  Both are
# deterministic from their seed and end with bit-exact checksums (stdout)
# and an output file holding a line per step and the final grid.  A run
# killed twice and resumed twice must end exactly as one never
# interrupted: the same stdout, a byte-identical output file.
#
#   a  uninterrupted runs of each seed with 0, 1 and 4 workers: the same
#      grid and accumulator (each worker owns whole rows; the reductions do
#      not depend on the order); the reference of each seed
#   z  the harness itself, on a program with one thread (0 workers): killed
#      after a random commit plus a random few steps, resumed, killed again
#      at a later commit, resumed to the end: identical
#   b  the same with 4 workers, for each seed: the commits are made by the
#      main thread while the workers wait on a condition variable
#   c  the same with --commit-from-worker: worker 0 commits between two
#      barriers, the other workers waiting at the barrier and the main
#      thread on its condition variable
#   d  --blocked --pipe, committed by the main thread and by worker 0: at
#      every commit threads are blocked in pthread_cond_wait, sem_wait,
#      read() on a pipe of the program's (a resume makes it again; the byte
#      written at the end is read) and a 2 s nanosleep (each returns 0, not
#      EINTR); the main thread holds a recursive and an error-checking
#      mutex across the commit and unlocks them after it (0; EDEADLK and
#      EPERM where due); a thread created after the commit is joined;
#      pthread_kill reaches a worker's handler; pthread_self, __thread
#      variables and pthread_getspecific values are unchanged.
#   e  omp-prog with OMP_NUM_THREADS=1, 2 and 4: the reference, then killed
#      twice and resumed twice: identical, and every region after a resume
#      has the team the run had before it ("team after resume T")
#   all of it under CKPT_BACKEND=mprotect and =uffd (a back-end the kernel
#   lacks is skipped, with the reason).
#
# A resume that is refused (exit 3: ckpt_open failed), a run that hangs
# (timeout 60) and any difference fail the test, with the command to
# reproduce it.  Kill points come from /dev/urandom and are printed.
# Exit status: 0 pass, 1 fail, 77 (SKIP) when a back-end or OpenMP could
# not be checked, after everything else passed.  A sanitizer build, whose
# library refuses to resume, checks that refusal instead.

top_builddir=${top_builddir:-.}
fail() {
	echo "resume-threads.sh: FAIL: $*" >&2
	exit 1
}
say() {
	echo "resume-threads.sh: $*"
}

builddir=$(cd "$top_builddir" && pwd) || fail "no build directory $top_builddir"
tprog=$builddir/tests/threads-prog
oprog=$builddir/tests/omp-prog
probe=$builddir/tests/backend-probe
for p in "$tprog" "$probe"; do
	[ -x "$p" ] || fail "$p not built"
done

STEPS=60
EVERY=10
SEEDS="1 2 3"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-resume-threads.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM

# rand N: a random number in 0..N-1.
rand() {
	echo $(($(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % $1))
}

# run LOG NAME PROG [ARGS...]: runs PROG with the chain $scratch/NAME.chain
# and the output file $scratch/NAME.out, its stdout and stderr in
# $scratch/LOG.stdout and .stderr; $rc is its exit status and $cmd the
# command, for a message.
run() {
	log=$1 name=$2 p=$3
	shift 3
	cmd="CKPT_BACKEND=$CKPT_BACKEND${OMP_NUM_THREADS:+ OMP_NUM_THREADS=$OMP_NUM_THREADS}"
	cmd="$cmd $p --steps $STEPS --every $EVERY --dir $scratch/$name.chain --out $scratch/$name.out $*"
	timeout 60 "$p" --steps $STEPS --every $EVERY --dir "$scratch/$name.chain" \
		--out "$scratch/$name.out" "$@" >"$scratch/$log.stdout" 2>"$scratch/$log.stderr"
	rc=$?
}

# ran_ok LOG: the run exited 0; a refused resume and a hang are named.
ran_ok() {
	case $rc in
	0) return 0 ;;
	3) fail "$1: the resume was refused: $(cat "$scratch/$1.stderr")
  command: $cmd" ;;
	124) fail "$1: still running after 60 s (a hang): $(cat "$scratch/$1.stderr")
  command: $cmd" ;;
	esac
	fail "$1 exited $rc: $(cat "$scratch/$1.stderr")
  command: $cmd"
}

# killed LOG STEP: the run killed itself at STEP, as asked.
killed() {
	case $rc in
	3) fail "$1: the resume was refused: $(cat "$scratch/$1.stderr")
  command: $cmd" ;;
	124) fail "$1: still running after 60 s (a hang), not killed at step $2:
$(cat "$scratch/$1.stderr")
  command: $cmd" ;;
	esac
	[ "$rc" -eq 137 ] || fail "$1 exited $rc, not 137 (SIGKILL at step $2): $(cat "$scratch/$1.stderr")
  command: $cmd"
	grep -q "^killing at step $2\$" "$scratch/$1.stderr" ||
		fail "$1: killed, but not at step $2: $(cat "$scratch/$1.stderr")"
}

# resumed_at LOG STEP: the run's first line of ckpt's is the resume of the
# commit of STEP (snapshot STEP / EVERY).
resumed_at() {
	first=$(grep -E '^(commit|resumed) ' "$scratch/$1.stderr" | head -n 1)
	case "$first " in
	"resumed $(($2 / EVERY)) step $2 "*) ;;
	*) fail "$1 did not resume the commit of step $2: '$first'
$(cat "$scratch/$1.stderr")
  command: $cmd" ;;
	esac
}

# same_as LOG NAME REF: LOG's stdout is REF's and NAME's output file is
# byte-identical to REF's.
same_as() {
	cmp -s "$scratch/$1.stdout" "$scratch/$3.stdout" ||
		fail "$1 ended with
$(cat "$scratch/$1.stdout")
not the uninterrupted run's
$(cat "$scratch/$3.stdout")
  command: $cmd"
	cmp "$scratch/$2.out" "$scratch/$3.out" >/dev/null ||
		fail "$1: the output file differs from the uninterrupted run's:
$(cmp "$scratch/$2.out" "$scratch/$3.out" 2>&1)
  command: $cmd"
}

# kill_twice NAME REF PROG [ARGS...]: PROG killed after the commit of a
# random step S1 plus E1 random steps, run again (resumed at S1), killed
# after the commit of a later step S2 plus E2 steps, run again (resumed at
# S2) to the end: the same as REF, an uninterrupted run.  The kill points
# are arguments of the first run; a resumed process has its memory, and so
# its arguments, and meets the second point itself.
kill_twice() {
	name=$1 ref=$2 p=$3
	shift 3
	ncommits=$((STEPS / EVERY - 1))                        # at steps EVERY..STEPS-EVERY
	s1=$((EVERY * (1 + $(rand $((ncommits - 1))))))         # not the last one
	s2=$((s1 + EVERY * (1 + $(rand $((ncommits - s1 / EVERY)))))) # a later one
	e1=$(rand $EVERY) e2=$(rand $EVERY)
	rm -rf "$scratch/$name.chain" "$scratch/$name.out"
	run "$name.1" "$name" "$p" "$@" --kill-at "$s1+$e1,$s2+$e2"
	killed "$name.1" $((s1 + e1))
	run "$name.2" "$name" "$p" "$@" --kill-at "$s1+$e1,$s2+$e2"
	killed "$name.2" $((s2 + e2))
	resumed_at "$name.2" $s1
	run "$name.3" "$name" "$p" "$@" --kill-at "$s1+$e1,$s2+$e2"
	ran_ok "$name.3"
	resumed_at "$name.3" $s2
	same_as "$name.3" "$name" "$ref"
	say "    $name: killed at step $s1+$e1, resumed at $s1, killed at $s2+$e2," \
		"resumed at $s2: $(tr '\n' ' ' <"$scratch/$name.3.stdout")"
}

# ---- the cases, under one back-end ---------------------------------------------------
cases() {
	be=$1
	say "back-end $be"

	# a: references.  Grid and accumulator do not depend on the number of
	# workers: only the "threads" line differs.
	for seed in $SEEDS; do
		for t in 0 1 4; do
			n=ref$seed-$t
			rm -rf "$scratch/$n.chain"
			run "$n" "$n" "$tprog" --seed "$seed" --threads $t
			if [ "$rc" -eq 3 ] && grep -q '(CKPT_ENOTSUP)' "$scratch/$n.stderr" &&
				ldd "$builddir/tests/.libs/threads-prog" "$tprog" 2>/dev/null |
				grep -Eq 'lib(asan|ubsan)'; then
				# What this build can check: the documented refusal.
				grep -q AddressSanitizer "$scratch/$n.stderr" ||
					fail "a sanitizer build refused without naming" \
						"AddressSanitizer: $(cat "$scratch/$n.stderr")"
				say "sanitizer build: resuming is refused as documented:" \
					"$(cat "$scratch/$n.stderr")"
				exit 0
			fi
			ran_ok "$n"
			grep -q '^resumed' "$scratch/$n.stderr" && fail "$n: an empty directory was resumed"
			grep -Eq '^grid [0-9a-f]{16}$' "$scratch/$n.stdout" ||
				fail "$n printed '$(cat "$scratch/$n.stdout")'"
			[ "$(grep -c '^commit ' "$scratch/$n.stderr")" -eq $((STEPS / EVERY - 1)) ] ||
				fail "$n: not $((STEPS / EVERY - 1)) commits: $(cat "$scratch/$n.stderr")"
			grep -v '^threads ' "$scratch/$n.stdout" >"$scratch/$n.sums"
			cmp -s "$scratch/$n.sums" "$scratch/ref$seed-0.sums" ||
				fail "seed $seed: $t workers end with
$(cat "$scratch/$n.sums")
one thread with
$(cat "$scratch/ref$seed-0.sums")"
			cmp -s "$scratch/$n.out" "$scratch/ref$seed-0.out" ||
				fail "seed $seed: the output file of $t workers differs from one thread's"
			if [ -f "$scratch/ref$seed-$t.prev" ]; then
				cmp -s "$scratch/ref$seed-$t.prev" "$scratch/$n.stdout" ||
					fail "seed $seed, $t workers: the checksums differ between back-ends"
			fi
			cp "$scratch/$n.stdout" "$scratch/ref$seed-$t.prev"
		done
	done
	say "  a: uninterrupted runs of seeds $SEEDS: the same grid, accumulator and" \
		"output file with 0, 1 and 4 workers (and under each back-end)"

	say "  z: one thread, killed twice, resumed twice (the harness):"
	kill_twice "$be-z" ref1-0 "$tprog" --seed 1 --threads 0

	say "  b: 4 workers, the main thread commits; killed twice, resumed twice:"
	for seed in $SEEDS; do
		kill_twice "$be-b$seed" "ref$seed-4" "$tprog" --seed "$seed" --threads 4
	done

	say "  c: 4 workers, worker 0 commits between two barriers; killed twice," \
		"resumed twice:"
	for seed in $SEEDS; do
		kill_twice "$be-c$seed" "ref$seed-4" "$tprog" --seed "$seed" --threads 4 \
			--commit-from-worker
	done

	say "  d: threads blocked at every commit (pthread_cond_wait, sem_wait," \
		"nanosleep, read on a pipe), mutexes held across it, a thread created" \
		"and joined after it, pthread_kill, TLS and pthread_self checked:"
	for from in "" --commit-from-worker; do
		n=$be-d${from:+w}
		# The reference, for its stdout: the same as without --blocked.
		run "$n.ref" "$n.ref" "$tprog" --seed 2 --threads 4 --blocked --pipe $from
		ran_ok "$n.ref"
		cmp -s "$scratch/$n.ref.out" "$scratch/ref2-4.out" ||
			fail "$n.ref: --blocked changed the output file"
		kill_twice "$n" "$n.ref" "$tprog" --seed 2 --threads 4 --blocked --pipe $from
		# Only the run that ends reports (the others are killed first).
		grep -q '^blocked: .* returned 0, threads joined$' "$scratch/$n.3.stderr" ||
			fail "$n.3: no report of the blocked threads: $(cat "$scratch/$n.3.stderr")"
		say "    ($(grep '^blocked: ' "$scratch/$n.3.stderr"))"
	done

	if [ ! -x "$oprog" ]; then
		say "  e: not checked: configure found no OpenMP, omp-prog was not built"
		unchecked="$unchecked OpenMP (not built);"
		return
	fi
	say "  e: OpenMP, OMP_NUM_THREADS=1, 2, 4; killed twice, resumed twice:"
	for omp in 1 2 4; do
		OMP_NUM_THREADS=$omp
		export OMP_NUM_THREADS
		n=$be-omp$omp
		run "$n.ref" "$n.ref" "$oprog" --seed 3
		ran_ok "$n.ref"
		grep -q "^team $omp\$" "$scratch/$n.ref.stdout" ||
			fail "$n.ref: OMP_NUM_THREADS=$omp, but: $(cat "$scratch/$n.ref.stdout")"
		[ "$(grep '^grid ' "$scratch/$n.ref.stdout")" = "$(grep '^grid ' "$scratch/ref3-0.stdout")" ] ||
			fail "$n.ref: the OpenMP stencil ends with $(grep '^grid ' "$scratch/$n.ref.stdout")," \
				"threads-prog with $(grep '^grid ' "$scratch/ref3-0.stdout")"
		kill_twice "$n" "$n.ref" "$oprog" --seed 3
		for k in 2 3; do
			teams=$(sed -n 's/^team after resume //p' "$scratch/$n.$k.stderr")
			[ "$teams" = "$omp" ] ||
				fail "$n.$k: the team after the resume has '$teams' threads, before $omp"
		done
		unset OMP_NUM_THREADS
	done
	say "  e: the same team before and after each resume"
}

# ---- both back-ends ------------------------------------------------------------
backends=
unchecked=
for be in mprotect uffd; do
	if why=$("$probe" $be 2>&1); then
		backends="$backends $be"
	else
		say "not checked: the $be back-end, not possible here: $why"
		unchecked="$unchecked the $be back-end ($why);"
	fi
done
[ -n "$backends" ] || fail "no back-end works here"
for be in $backends; do
	CKPT_BACKEND=$be
	export CKPT_BACKEND
	cases "$be"
done

if [ -n "$unchecked" ]; then
	say "SKIP: everything else passed; not checked:$unchecked"
	exit 77
fi
say "ok"
exit 0

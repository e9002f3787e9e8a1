#!/bin/sh
# tests/resume.sh - a killed program continues from its last commit.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The program is tests/resume-prog (see tests/resume-prog.c): deterministic
# from its seed, it commits every 10 of its 100 steps, writes a line per
# step to a file it keeps open, and prints a checksum of all its memory at
# the end.  A run that was killed and run again must end exactly as one
# that was never interrupted: same checksum, byte-identical output file.
#
#   a  an uninterrupted run: the reference checksum and file of each seed
#   b  for several seeds, SIGKILL at a random moment after a commit, then
#      the same command again: resumed, same checksum, same file
#   c  killed, resumed, killed again, resumed again: the same
#   d  an empty directory starts a fresh run (no "resumed")
#   e  a chain written by resume-prog is refused by resume-prog2 (another
#      build-id): exit 3, CKPT_EFOREIGN naming the executable; the chain is
#      left as it was (resume-prog still resumes it)
#   f  a snapshot taken while a second thread lived (blocked in read on a
#      pipe) resumes with both threads
#   g  the output file goes on at the offset it had at the commit
#   h  `ckpt resume DIR`, run from another directory, resumes a killed run
#   i  the newest snapshot damaged in its middle: the run resumes from the
#      one before, says so, and still ends with the right checksum
#   p  for each seed, killed right after commit K (--kill-at K, for every K)
#      and resumed: same checksum, same file (a deterministic sweep: a
#      snapshot that held the heap half before and half after a malloc
#      of ckpt's own made the resumed run abort at fixed commits)
#   k  the same with commits written in the background (CKPT_F_ASYNC):
#      the resume takes the newest durable snapshot
#   m  a file of the program that cannot be opened again (CKPT_FAULT):
#      refused (exit 3, CKPT_EACCES naming the file) with nothing changed;
#      the output file as it was, and the chain resumes afterwards
#   l  a program that had its chain open (a restore) when it committed:
#      every snapshot file replaced by a copy (another inode), it still
#      resumes, twice (ckpt's own descriptors are not the program's files)
#   and in every resumed run: no snapshot file open in the program, as many
#      descriptors open as the uninterrupted run had at the same snapshot,
#      and of a 256 MiB mapping with 4 pages written, as few resident
#   n  killed, then `ckpt compact` folds the chain into one base: that
#      base keeps the process record and `ckpt resume` resumes it
#   o  (under one back-end) files named like snapshots but not exactly are
#      ignored; a chain directory writable by others or reached through a
#      symbolic link, and a snapshot of another user, are refused
#      (CKPT_EACCES, naming it) and left as they were
#   q  a program that ends main with pthread_exit, killed and resumed:
#      exits 0 with its output flushed, glibc counting one thread
#   r  a program with pipes of its own (--pipe: one holding 70 KB at each
#      commit, its read end at two numbers, its write end non-blocking;
#      one whose writer closed; one whose reader closed), killed right
#      after a commit: a resume whose making of a pipe fails is refused
#      (exit 3, naming the pipe) with nothing changed; then resumed, the
#      program finds every pipe at its numbers with its flags, capacity
#      and content, then end of file, then EPIPE (it checks that itself
#      and fails loudly), ends as the reference, and holds as many
#      descriptors as an uninterrupted run with pipes; and the same with
#      commits written in the background
#   j  all of the above under CKPT_BACKEND=mprotect and =uffd (uffd skipped,
#      with the reason, where the kernel lacks it), and a chain written
#      under one back-end resumed under the other.
#
# Random kill moments come from /dev/urandom and are printed, so that a
# failure can be told apart from the others.  Every run is bounded (timeout
# 60, or a deadline while waiting for a commit), so a hang fails.
# Exit status: 0 pass, 1 fail, 77 (SKIP) when a back-end was skipped, after
# everything else passed.  A sanitizer build, whose library refuses to
# resume, checks that refusal instead.

top_builddir=${top_builddir:-.}
fail() {
	echo "resume.sh: FAIL: $*" >&2
	exit 1
}
say() {
	echo "resume.sh: $*"
}

builddir=$(cd "$top_builddir" && pwd) || fail "no build directory $top_builddir"
prog=$builddir/tests/resume-prog
prog2=$builddir/tests/resume-prog2
ckpt=$builddir/tools/ckpt
probe=$builddir/tests/backend-probe
for p in "$prog" "$prog2" "$ckpt" "$probe"; do
	[ -x "$p" ] || fail "$p not built"
done

STEPS=100
EVERY=10
SLEEP_US=5000 # 50 ms between commits: room for a kill anywhere
SEEDS="1 2 3"
EXTRA=
SPARSE_MIB=256

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-resume.XXXXXX") || fail "mktemp -d"
bg=
trap '[ -n "$bg" ] && kill -KILL "$bg" 2>/dev/null; rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM

# ---- running the program ----------------------------------------------------------
# Every run of chain NAME uses the chain $scratch/NAME.chain and the output
# file $scratch/NAME.out; LOG names its stdout and stderr files.

# run LOG NAME SEED [ARGS...]: runs $P (resume-prog unless set) to the end;
# $rc is its exit status.
run() {
	log=$1 name=$2 seed=$3
	shift 3
	# shellcheck disable=SC2086 # EXTRA: more options, split on purpose
	timeout 60 "${P:-$prog}" --seed "$seed" --steps $STEPS --every $EVERY $EXTRA \
		--sleep-us $SLEEP_US --sparse-mib $SPARSE_MIB --dir "$scratch/$name.chain" \
		--out "$scratch/$name.out" "$@" >"$scratch/$log.stdout" 2>"$scratch/$log.stderr"
	rc=$?
}

# lines FILE: how many commit and resume lines the program printed.
lines() {
	grep -Ec '^(commit|resumed) [0-9]+ ' "$1"
}

# rand N: a random number in 0..N-1.
rand() {
	echo $(($(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % $1))
}

# run_killed LOG NAME SEED LINES [ARGS...]: starts a run in the background,
# waits until it has printed LINES commit or resume lines, waits a random
# 0-49 ms more (less than one interval between commits) and kills it with
# SIGKILL.
run_killed() {
	log=$1 name=$2 seed=$3 want=$4
	shift 4
	# Made here: the background shell may not have opened them yet when
	# the loop below first reads them.
	: >"$scratch/$log.stdout"
	: >"$scratch/$log.stderr"
	# shellcheck disable=SC2086
	"$prog" --seed "$seed" --steps $STEPS --every $EVERY $EXTRA --sleep-us $SLEEP_US \
		--sparse-mib $SPARSE_MIB --dir "$scratch/$name.chain" --out "$scratch/$name.out" \
		"$@" >"$scratch/$log.stdout" 2>"$scratch/$log.stderr" &
	bg=$!
	i=0
	while [ "$(lines "$scratch/$log.stderr")" -lt "$want" ]; do
		# Until wait(1), a program that ended is a zombie: kill -0 would
		# still find it.
		case $(sed 's/.*) //' "/proc/$bg/stat" 2>/dev/null) in
		'' | Z*) fail "$log ended before its line $want: $(cat "$scratch/$log.stderr")" ;;
		esac
		i=$((i + 1))
		[ $i -lt 3000 ] || fail "$log: no commit $want within 60 s"
		sleep 0.02
	done
	ms=$(rand 50)
	sleep "0.0$(printf %02d "$ms")"
	kill -KILL "$bg" 2>/dev/null
	wait "$bg" 2>/dev/null # no "Killed" from the shell
	status=$?
	bg=
	[ $status -eq 137 ] ||
		fail "$log: killed after line $want + $ms ms, exited $status (ran to its end?)"
	say "  $log: SIGKILL $ms ms after line $want ($(tail -n 1 "$scratch/$log.stderr"))"
}

# same_as_ref LOG NAME SEED: LOG's run printed the reference checksum of
# SEED and left NAME's output file byte-identical to the reference's.
same_as_ref() {
	log=$1 name=$2 seed=$3
	got=$(cat "$scratch/$log.stdout")
	want=$(cat "$scratch/ref$seed.stdout")
	[ "$got" = "$want" ] || fail "$log: '$got', not the reference '$want' of seed $seed
$(cat "$scratch/$log.stderr")"
	cmp "$scratch/$name.out" "$scratch/ref$seed.out" >/dev/null ||
		fail "$log: the output file differs from the reference of seed $seed:
$(cmp "$scratch/$name.out" "$scratch/ref$seed.out" 2>&1)"
}

# resumed_ok LOG NAME SEED [KILLED_LOG]: LOG's run exited 0, said it was
# resumed, at an offset that is the length of the reference file's first S
# lines (S the step of the commit it continued from), and ended as the
# reference.  With KILLED_LOG, the snapshot it resumed is the last one that
# run reported or, when the kill landed between the rename of the file and
# the line, the next one.
resumed_ok() {
	log=$1 name=$2 seed=$3 killed=$4
	[ "$rc" -eq 0 ] || fail "$log exited $rc: $(cat "$scratch/$log.stderr")"
	line=$(grep '^resumed ' "$scratch/$log.stderr" | head -n 1)
	[ -n "$line" ] || fail "$log does not say it was resumed: $(cat "$scratch/$log.stderr")"
	# shellcheck disable=SC2086 # split on purpose: resumed ID step S offset O
	set -- $line
	id=$2 step=$4 off=$6
	[ $((step % EVERY)) -eq 0 ] || fail "$log: resumed at step $step: $line"
	want=$(($(head -n "$step" "$scratch/ref$seed.out" | wc -c)))
	[ "$off" -eq "$want" ] ||
		fail "$log: the output file is at offset $off after the resume, not $want: $line"
	if [ -n "$killed" ]; then
		last=$(sed -En 's/^(commit|resumed) ([0-9]+) .*/\2/p' "$scratch/$killed.stderr" |
			tail -n 1)
		# An async commit may not have been durable yet: an older one.
		lo=$last
		[ -n "$EXTRA" ] && lo=1
		[ "$id" -ge "$lo" ] && [ "$id" -le $((last + 1)) ] ||
			fail "$log: resumed snapshot $id; $killed last committed $last"
	fi
	# The first commit after the resume is an increment: it stores about
	# what the same commit of the uninterrupted run stored, not everything.
	next=$(sed -n "s/^commit $((id + 1)) .* pages //p" "$scratch/$log.stderr")
	ref=$(sed -n "s/^commit $((id + 1)) .* pages //p" "$scratch/ref$seed.stderr")
	if [ -n "$next" ] && [ -n "$ref" ]; then
		[ "$next" -le $((ref + 32)) ] ||
			fail "$log: commit $((id + 1)) after the resume stored $next pages," \
				"the uninterrupted run's $ref"
	fi
	same_as_ref "$log" "$name" "$seed"
	# ckpt's descriptors are not the program's: no snapshot file is open
	# in the resumed program, and as many descriptors as in the
	# uninterrupted run at the same snapshot (ckpt's and the program's;
	# with the same back-end, and without background commits, whose
	# writer may hold a temporary file at that moment).
	bad=$(grep -E '^(commit|resumed) ' "$scratch/$log.stderr" | grep -Ev ' fds [0-9]+/0 ')
	[ -z "$bad" ] || fail "$log: snapshot files are open in the program: $bad"
	if [ -z "$EXTRA" ] && [ "$CKPT_BACKEND" = "$ref_be" ]; then
		bad=$(sed -En 's/^(commit|resumed) ([0-9]+) .* fds ([0-9]+)\/.*/\2 \3/p' \
			"$scratch/ref$seed.stderr" "$scratch/$log.stderr" |
			awk '!($1 in n) { n[$1] = $2; next }
			     n[$1] != $2 { print "snapshot " $1 ": " $2 " open, uninterrupted " n[$1] }')
		[ -z "$bad" ] || fail "$log: descriptors: $bad"
	fi
	# Resuming keeps a sparse mapping sparse.
	sp=$(sed -n 's/^sparse \([0-9]*\) of .*/\1/p' "$scratch/$log.stderr")
	spref=$(sed -n 's/^sparse \([0-9]*\) of .*/\1/p' "$scratch/ref$seed.stderr")
	[ -n "$sp" ] && [ -n "$spref" ] && [ "$sp" -le $((spref + 16)) ] ||
		fail "$log: $sp pages of the sparse mapping resident at the end, $spref uninterrupted"
}

# replace_snaps NAME: every snapshot file of NAME's chain replaced by a copy
# of itself: the same chain, other inodes.
replace_snaps() {
	for f in "$scratch/$1.chain"/snap-*.ckpt; do
		cp "$f" "$scratch/copy.tmp" && mv "$scratch/copy.tmp" "$f" || fail "copying $f"
	done
}

# refused LOG CODE: LOG's run exited 3 with ckpt_open failing with CODE;
# prints what ckpt_last_error said.
refused() {
	[ "$rc" -eq 3 ] || fail "$1 exited $rc, not 3: $(cat "$scratch/$1.stderr")"
	msg=$(sed -n "s/^resume-prog: ckpt_open: .*($2): //p" "$scratch/$1.stderr")
	[ -n "$msg" ] || fail "$1: not $2: $(cat "$scratch/$1.stderr")"
	printf '%s\n' "$msg"
}

# ---- the cases, under one back-end ---------------------------------------------------
cases() {
	be=$1
	ref_be=$be
	say "back-end $be"
	# a, d: reference runs, each in an empty directory.
	for seed in $SEEDS; do
		rm -rf "$scratch/ref$seed.chain"
		mkdir -m 700 "$scratch/ref$seed.chain"
		run "ref$seed" "ref$seed" "$seed"
		if [ "$rc" -eq 3 ] && [ "$be$seed" = "${first_be}1" ] &&
			grep -q '(CKPT_ENOTSUP)' "$scratch/ref$seed.stderr" &&
			ldd "$builddir/tests/.libs/resume-prog" "$prog" 2>/dev/null |
			grep -Eq 'lib(asan|ubsan)'; then
			# What this build can check: the refusal is the
			# documented one, and nothing was resumed or written.
			grep -q 'AddressSanitizer' "$scratch/ref$seed.stderr" ||
				fail "a sanitizer build refused without naming AddressSanitizer:" \
					"$(cat "$scratch/ref$seed.stderr")"
			[ -s "$scratch/ref$seed.out" ] && fail "the refused run wrote its output file"
			say "sanitizer build: resuming is refused as documented:" \
				"$(cat "$scratch/ref$seed.stderr")"
			exit 0
		fi
		[ "$rc" -eq 0 ] || fail "ref$seed exited $rc: $(cat "$scratch/ref$seed.stderr")"
		grep -q '^resumed' "$scratch/ref$seed.stderr" &&
			fail "ref$seed: an empty directory was resumed"
		grep -Eq '^checksum [0-9a-f]{16}$' "$scratch/ref$seed.stdout" ||
			fail "ref$seed printed '$(cat "$scratch/ref$seed.stdout")'"
		[ "$(wc -l <"$scratch/ref$seed.out")" -eq $STEPS ] || fail "ref$seed: short output file"
		if [ -f "$scratch/ref$seed.sum" ]; then
			cmp -s "$scratch/ref$seed.sum" "$scratch/ref$seed.stdout" ||
				fail "seed $seed: checksum differs between back-ends"
		fi
		cp "$scratch/ref$seed.stdout" "$scratch/ref$seed.sum"
	done
	say "  a, d: reference runs of seeds $SEEDS started fresh"

	# b, g: one kill at a random moment after commit 1, 2 or 3.
	for seed in $SEEDS; do
		n=$be-b$seed
		run_killed "$n.1" "$n" "$seed" $((1 + $(rand 3)))
		run "$n.2" "$n" "$seed"
		resumed_ok "$n.2" "$n" "$seed" "$n.1"
	done
	say "  b, g: killed and resumed: same checksums, same files, right offsets"

	# p: killed right after each commit in turn (--kill-at, no sleeps: the
	# same memory every time), resumed.  Every snapshot must hold the heap
	# as of one moment: one that mixed pages from before and after a
	# malloc of ckpt's own during the capture made glibc abort in the
	# resumed run, at the same commits of a seed every time.
	sleep_was=$SLEEP_US
	SLEEP_US=0
	for seed in $SEEDS; do
		k=1
		while [ $k -lt $((STEPS / EVERY)) ]; do
			n=$be-p$seed-$k
			run "$n.1" "$n" "$seed" --kill-at $k
			[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at $k) exited $rc: $(cat "$scratch/$n.1.stderr")"
			run "$n.2" "$n" "$seed"
			resumed_ok "$n.2" "$n" "$seed"
			[ "$id" -eq $k ] || fail "$n.2 resumed snapshot $id, not $k"
			rm -rf "$scratch/$n.chain" "$scratch/$n".*
			k=$((k + 1))
		done
	done
	SLEEP_US=$sleep_was
	say "  p: seeds $SEEDS killed after every commit in turn, each resumed"

	# q: a program that ends main with pthread_exit, killed and resumed:
	# glibc counts one thread (ckpt's workers left nothing of theirs in the
	# snapshots), so the last thread's exit ends the process with exit(0),
	# which flushes the checksum.
	n=$be-q
	run "$n.1" "$n" 1 --pthread-exit --kill-at 4
	[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at 4) exited $rc: $(cat "$scratch/$n.1.stderr")"
	run "$n.2" "$n" 1 --pthread-exit
	resumed_ok "$n.2" "$n" 1
	if grep -q '^glibc counts' "$scratch/$n.2.stderr"; then
		grep -q '^glibc counts 1 threads$' "$scratch/$n.2.stderr" ||
			fail "$n.2: $(grep '^glibc counts' "$scratch/$n.2.stderr") after the resume"
	fi
	say "  q: pthread_exit from main after a resume flushes and exits 0"

	# r: the program's own pipes.  EXTRA passes --pipe to every run (and
	# leaves the descriptor count to the check here: the references
	# have no pipes).
	n=$be-r
	EXTRA=--pipe
	run "$n.ref" "$n.ref" 2
	[ "$rc" -eq 0 ] || fail "$n.ref (--pipe) exited $rc: $(cat "$scratch/$n.ref.stderr")"
	same_as_ref "$n.ref" "$n.ref" 2
	grep -q '^pipe: checked after 9 commits$' "$scratch/$n.ref.stderr" ||
		fail "$n.ref did not check its pipes: $(cat "$scratch/$n.ref.stderr")"
	run "$n.1" "$n" 2 --kill-at 3
	[ "$rc" -eq 137 ] || fail "$n.1 (--pipe --kill-at 3) exited $rc: $(cat "$scratch/$n.1.stderr")"
	cp "$scratch/$n.out" "$scratch/$n.out.before"
	# The files the program had open are opened again first (the output
	# file, and whatever regular file it inherited), then the pipes:
	# the Nth open fails, N from 2 up, until a refusal names a pipe.
	k=2
	while :; do
		CKPT_FAULT=open:$k=ENOMEM
		export CKPT_FAULT
		run "$n.2" "$n" 2
		unset CKPT_FAULT
		msg=$(refused "$n.2" CKPT_ENOMEM) || exit 1
		cmp -s "$scratch/$n.out" "$scratch/$n.out.before" ||
			fail "$n.2: the output file changed though the resume was refused ($msg)"
		printf '%s\n' "$msg" | grep -q 'pipe:\[[0-9]*\]' && break
		printf '%s\n' "$msg" | grep -q 'cannot reopen' ||
			fail "$n.2: the refusal names neither a file nor a pipe: $msg"
		k=$((k + 1))
		[ $k -le 8 ] || fail "$n.2: no refusal named a pipe up to open:8: $msg"
	done
	run "$n.3" "$n" 2
	resumed_ok "$n.3" "$n" 2
	[ "$id" -eq 3 ] || fail "$n.3 resumed snapshot $id, not 3"
	grep -q '^pipe: checked after 9 commits$' "$scratch/$n.3.stderr" ||
		fail "$n.3 did not check its pipes: $(cat "$scratch/$n.3.stderr")"
	bad=$(sed -En 's/^(commit|resumed) ([0-9]+) .* fds ([0-9]+)\/.*/\2 \3/p' \
		"$scratch/$n.ref.stderr" "$scratch/$n.3.stderr" |
		awk '!($1 in n) { n[$1] = $2; next }
		     n[$1] != $2 { print "snapshot " $1 ": " $2 " open, uninterrupted " n[$1] }')
	[ -z "$bad" ] || fail "$n.3: descriptors: $bad"
	n=$be-ra
	EXTRA="--pipe --async"
	run "$n.1" "$n" 2 --kill-at 5
	[ "$rc" -eq 137 ] || fail "$n.1 (--pipe --async --kill-at 5) exited $rc: $(cat "$scratch/$n.1.stderr")"
	run "$n.2" "$n" 2
	resumed_ok "$n.2" "$n" 2
	grep -q '^pipe: checked after 9 commits$' "$scratch/$n.2.stderr" ||
		fail "$n.2 did not check its pipes: $(cat "$scratch/$n.2.stderr")"
	EXTRA=
	say "  r: pipes of the program's own made again, content and flags; refused unchanged when one cannot be ($msg)"

	# k: commits written in the background (CKPT_F_ASYNC), killed, resumed.
	n=$be-k
	EXTRA=--async
	run_killed "$n.1" "$n" 1 $((2 + $(rand 3)))
	run "$n.2" "$n" 1
	resumed_ok "$n.2" "$n" 1 "$n.1"
	EXTRA=
	say "  k: background commits killed and resumed"

	# c: killed, resumed, killed again after one more commit, resumed.
	n=$be-c
	run_killed "$n.1" "$n" 2 $((1 + $(rand 3)))
	run_killed "$n.2" "$n" 2 2
	grep -q '^resumed ' "$scratch/$n.2.stderr" || fail "$n.2 was not resumed"
	run "$n.3" "$n" 2
	resumed_ok "$n.3" "$n" 2 "$n.2"
	say "  c: killed twice, resumed twice"

	# m: a file cannot be reopened: refused before the process changes.
	n=$be-m
	run "$n.1" "$n" 1 --kill-at 2
	[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at 2) exited $rc: $(cat "$scratch/$n.1.stderr")"
	cp "$scratch/$n.out" "$scratch/$n.out.before"
	CKPT_FAULT=open:1=EACCES
	export CKPT_FAULT
	run "$n.2" "$n" 1
	unset CKPT_FAULT
	msg=$(refused "$n.2" CKPT_EACCES) || exit 1
	printf '%s\n' "$msg" | grep -q "$n.out" || fail "the refusal does not name $n.out: $msg"
	cmp -s "$scratch/$n.out" "$scratch/$n.out.before" ||
		fail "$n.2: the output file changed though the resume was refused"
	run "$n.3" "$n" 1
	resumed_ok "$n.3" "$n" 1
	say "  m: a file that cannot be reopened: refused unchanged ($msg); resumed after"

	# l: a restore opened the chain; the snapshot files replaced.
	n=$be-l
	run "$n.1" "$n" 3 --restore-at 1 --kill-at 3
	[ "$rc" -eq 137 ] || fail "$n.1 (--restore-at 1 --kill-at 3) exited $rc: $(cat "$scratch/$n.1.stderr")"
	replace_snaps "$n"
	run_killed "$n.2" "$n" 3 2
	grep -q '^resumed 3 ' "$scratch/$n.2.stderr" ||
		fail "$n.2 did not resume snapshot 3: $(cat "$scratch/$n.2.stderr")"
	replace_snaps "$n"
	run "$n.3" "$n" 3
	resumed_ok "$n.3" "$n" 3 "$n.2"
	say "  l: snapshot files replaced: resumed, twice, holding none of them"

	# e: another executable.
	n=$be-e
	run "$n.1" "$n" 1 --kill-at 2
	[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at 2) exited $rc"
	P=$prog2
	run "$n.2" "$n" 1
	P=$prog
	msg=$(refused "$n.2" CKPT_EFOREIGN) || exit 1
	printf '%s\n' "$msg" | grep -Eiq 'resume-prog|executable' ||
		fail "the refusal does not name the executable: $msg"
	run "$n.3" "$n" 1
	resumed_ok "$n.3" "$n" 1
	say "  e: refused by another build ($msg); resumed by its own"

	# f: a second thread.
	n=$be-f
	run ref4 ref4 4 --threads
	[ "$rc" -eq 0 ] || fail "ref4 (--threads) exited $rc: $(cat "$scratch/ref4.stderr")"
	run "$n.1" "$n" 4 --threads --kill-at 1
	[ "$rc" -eq 137 ] || fail "$n.1 (--threads --kill-at 1) exited $rc: $(cat "$scratch/$n.1.stderr")"
	run "$n.2" "$n" 4 --threads
	resumed_ok "$n.2" "$n" 4 "$n.1"
	say "  f: a snapshot with two threads resumed (the second one joined at the end)"

	# h: the command-line tool, from another directory.
	n=$be-h
	run_killed "$n.1" "$n" 3 2
	(cd / && timeout 60 "$ckpt" resume "$scratch/$n.chain") \
		>"$scratch/$n.2.stdout" 2>"$scratch/$n.2.stderr"
	rc=$?
	resumed_ok "$n.2" "$n" 3 "$n.1"
	say "  h: ckpt resume"

	# i: the newest snapshot damaged.
	n=$be-i
	run "$n.1" "$n" 2 --kill-at 3
	[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at 3) exited $rc"
	f=$scratch/$n.chain/snap-00000003.ckpt
	[ -f "$f" ] || fail "$n: no $f: $(ls "$scratch/$n.chain")"
	mid=$(($(wc -c <"$f") / 2))
	byte=$(od -An -tu1 -j $mid -N 1 "$f" | tr -d ' ')
	if [ "$byte" = 90 ]; then new=Y; else new=Z; fi
	printf '%s' $new | dd of="$f" bs=1 seek=$mid count=1 conv=notrunc 2>/dev/null || fail "dd"
	run "$n.2" "$n" 2
	resumed_ok "$n.2" "$n" 2
	[ "$id" -eq 2 ] || fail "$n.2 resumed snapshot $id, not 2 (3 is damaged)"
	grep -Ev '^(commit|resumed) ' "$scratch/$n.2.stderr" |
		grep -Eiq 'corrupt|damaged|sound|snap-0*3\.ckpt' ||
		fail "$n.2 does not say the newest snapshot was passed over:
$(cat "$scratch/$n.2.stderr")"
	say "  i: damaged newest snapshot passed over: $(grep -Ev '^(commit|resumed) ' \
		"$scratch/$n.2.stderr" | head -n 1)"

	# n: killed, the chain compacted into one base, resumed by ckpt resume.
	n=$be-n
	run "$n.1" "$n" 1 --kill-at 3
	[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at 3) exited $rc"
	out=$("$ckpt" compact "$scratch/$n.chain") || fail "$n: compact exited $?: $out"
	[ "$(ls "$scratch/$n.chain" | grep -c '^snap-')" -eq 1 ] ||
		fail "$n: compact left $(ls "$scratch/$n.chain")"
	"$ckpt" show "$scratch/$n.chain" latest | grep -q '^resumable  *yes$' ||
		fail "$n: the compacted base is not resumable:
$("$ckpt" show "$scratch/$n.chain" latest)"
	(cd / && timeout 60 "$ckpt" resume "$scratch/$n.chain") \
		>"$scratch/$n.2.stdout" 2>"$scratch/$n.2.stderr"
	rc=$?
	resumed_ok "$n.2" "$n" 1
	[ "$id" -eq 3 ] || fail "$n.2 resumed snapshot $id, not the compacted 3"
	say "  n: compacted into one base, resumed"
}

# ---- j: both back-ends, and across them ------------------------------------------
backends=
unchecked=
for be in mprotect uffd; do
	if why=$("$probe" $be 2>&1); then
		backends="$backends $be"
	else
		say "not checked: the $be back-end, not possible here: $why"
		unchecked="$unchecked the $be back-end ($why), and resuming across back-ends;"
	fi
done
[ -n "$backends" ] || fail "no back-end works here"
first_be=${backends# }
first_be=${first_be%% *}

for be in $backends; do
	CKPT_BACKEND=$be
	export CKPT_BACKEND
	cases "$be"
done

for pair in mprotect,uffd uffd,mprotect; do
	from=${pair%,*} to=${pair#*,}
	case " $backends " in *" $from "*) ;; *) continue ;; esac
	case " $backends " in *" $to "*) ;; *) continue ;; esac
	n=cross-$from-$to
	CKPT_BACKEND=$from
	export CKPT_BACKEND
	run "$n.1" "$n" 3 --kill-at 2
	[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at 2) exited $rc"
	CKPT_BACKEND=$to
	run "$n.2" "$n" 3
	resumed_ok "$n.2" "$n" 3
	say "j: written under $from, resumed under $to"
done

# o: only the user's own files are resumed.  Files with other names are
# not snapshots; a directory or snapshot another user could have written
# is refused, and left as it was, not passed over.
CKPT_BACKEND=$first_be
export CKPT_BACKEND
n=o
run "$n.1" "$n" 1 --kill-at 3
[ "$rc" -eq 137 ] || fail "$n.1 (--kill-at 3) exited $rc"
c=$scratch/$n.chain
cp -p "$c/snap-00000002.ckpt" "$c/snap-00000003.ckpt.orig"
cp -p "$c/snap-00000002.ckpt" "$c/snap-00000009.ckpt.orig"
cp -p "$c/snap-00000002.ckpt" "$c/snap-9.ckpt"
chmod 0777 "$c"
run "$n.2" "$n" 1
msg=$(refused "$n.2" CKPT_EACCES) || exit 1
printf '%s\n' "$msg" | grep -q "$n\.chain: writable by others" ||
	fail "$n.2: the refusal does not say the directory is writable by others: $msg"
chmod 0700 "$c"
ln -s "$n.chain" "$scratch/$n.link"
"$prog" --seed 1 --steps $STEPS --every $EVERY --sleep-us $SLEEP_US --dir "$scratch/$n.link" \
	--out "$scratch/$n.out" >"$scratch/$n.3.stdout" 2>"$scratch/$n.3.stderr"
rc=$?
msg=$(refused "$n.3" CKPT_EACCES) || exit 1
printf '%s\n' "$msg" | grep -q "$n\.link: a symbolic link" ||
	fail "$n.3: the refusal does not say the directory is a symbolic link: $msg"
if [ "$(id -u)" -eq 0 ]; then
	chown 65534 "$c/snap-00000003.ckpt"
	run "$n.4" "$n" 1
	msg=$(refused "$n.4" CKPT_EACCES) || exit 1
	printf '%s\n' "$msg" | grep -q 'snap-00000003\.ckpt: owned by uid 65534' ||
		fail "$n.4: the refusal does not name the file of another user: $msg"
	[ -f "$c/snap-00000003.ckpt" ] || fail "$n.4: the refused file was moved: $(ls "$c")"
	chown 0 "$c/snap-00000003.ckpt"
else
	say "o: not root: no file of another user to test with"
fi
run "$n.5" "$n" 1
resumed_ok "$n.5" "$n" 1
[ "$id" -eq 3 ] || fail "$n.5 resumed snapshot $id, not 3: $(cat "$scratch/$n.5.stderr")"
for f in snap-00000003.ckpt.orig snap-00000009.ckpt.orig snap-9.ckpt; do
	[ -f "$c/$f" ] || fail "$n.5: $f was moved or removed: $(ls "$c")"
done
say "o: another user's directory or file refused, stray names ignored ($msg)"

if [ -n "$unchecked" ]; then
	say "SKIP: everything else passed; not checked:$unchecked"
	exit 77
fi
say "ok"
exit 0

#!/bin/sh
# tests/resume-lazy.sh - resumes with CKPT_F_LAZY: the program goes on
# before its memory is back, which is filled as it touches it and in the
# background (doc/RESUME.md, "Lazy resume").
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The programs read CKPT_TEST_LAZY=1 from their environment and add
# CKPT_F_LAZY to their handle's flags.
#
#   a  every case of tests/resume.sh, resumed lazily (both back-ends and
#      across them, as that script runs them)
#   b  every case of tests/resume-threads.sh, resumed lazily (pthreads and
#      OpenMP programs)
#   and under each back-end, tests/lazy-prog (a 96 MiB heap block, written
#   from a seed, committed, killed; see tests/lazy-prog.c):
#   c  resumed lazily: the block's last page is not there yet when the
#      program goes on (the fill runs), and every word of the block reads
#      right afterwards
#   d  killed as soon as it is resumed (the fill half done), then resumed
#      again: every word right; and tests/resume-prog killed at the
#      return of a lazy resume, then resumed: the reference checksum and
#      output file, byte for byte
#   e  read(2) from a pipe into the last page, not filled yet: the bytes
#      read are there, and the rest of the page and of the block are the
#      snapshot's
#   f  madvise(MADV_DONTNEED) of pages not filled yet: they read zero, the
#      rest of the block as it was
#   g  a commit right after the resume, with 5 pages written, stores a few
#      pages (at most 64), not the 24576 the fill wrote
#   h  fork while the block is being filled: the child reads it whole
#   j  realloc of the block (64 MiB larger) at once: glibc moves it with
#      mremap inside libc, where no interposer of mremap sees it; every
#      word right at its new place
#   i  CKPT_FAULT=uffd:1 (no userfaultfd for the fill): the resume says it
#      fills everything first, does (the last page there when the program
#      goes on), and the block reads right
#   k  a 32 MiB block committed 12 times more, each time after a third of
#      its pages were rewritten: resumed lazily from the 13 files, most
#      blocks needed in part, every word right
# Exit status: 0 pass, 1 fail, 77 (SKIP) when a back-end was skipped (or
# a case of a or b was), after everything else passed.  A sanitizer build,
# whose library refuses to resume, checks that refusal instead.

top_builddir=${top_builddir:-.}
fail() {
	echo "resume-lazy.sh: FAIL: $*" >&2
	exit 1
}
say() {
	echo "resume-lazy.sh: $*"
}

builddir=$(cd "$top_builddir" && pwd) || fail "no build directory $top_builddir"
srcdir=$(cd "$(dirname "$0")" && pwd) || fail "no source directory"
lprog=$builddir/tests/lazy-prog
probe=$builddir/tests/backend-probe
for p in "$lprog" "$probe" "$builddir/tests/resume-prog"; do
	[ -x "$p" ] || fail "$p not built"
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-lazy.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM
skipped=

MIB=96

# lz NAME ACTION [lazy]: a fresh chain NAME written by lazy-prog and killed,
# then resumed (lazily unless the third argument is "eager") to do ACTION;
# $rc is the resumed run's exit status, $NAME.stdout/.stderr its output.
# lazy-prog's options: $largs when set, else a block of $MIB MiB.
lz() {
	n=$1 what=$2
	rm -rf "$scratch/$n.chain"
	echo "$what" >"$scratch/$n.ctl"
	# shellcheck disable=SC2086 # the options, split on purpose
	CKPT_TEST_LAZY=1 timeout 60 "$lprog" --dir "$scratch/$n.chain" --ctl "$scratch/$n.ctl" \
		${largs:---mib $MIB} >"$scratch/$n.0.stdout" 2>"$scratch/$n.0.stderr"
	rc=$?
	if [ "$rc" -eq 3 ] && grep -q '(CKPT_ENOTSUP)' "$scratch/$n.0.stderr" &&
		ldd "$builddir/tests/.libs/lazy-prog" "$lprog" 2>/dev/null | grep -Eq 'lib(asan|ubsan)'
	then
		grep -q 'AddressSanitizer' "$scratch/$n.0.stderr" ||
			fail "a sanitizer build refused without naming AddressSanitizer:" \
				"$(cat "$scratch/$n.0.stderr")"
		say "sanitizer build: resuming is refused as documented:" \
			"$(cat "$scratch/$n.0.stderr")"
		exit 0
	fi
	[ "$rc" -eq 137 ] && grep -q '^committed$' "$scratch/$n.0.stdout" ||
		fail "$n: the first run exited $rc: $(cat "$scratch/$n.0.stderr")"
	lazy=1
	[ "${3:-}" = eager ] && lazy=0
	# shellcheck disable=SC2086
	CKPT_TEST_LAZY=$lazy timeout 60 "$lprog" --dir "$scratch/$n.chain" \
		--ctl "$scratch/$n.ctl" ${largs:---mib $MIB} >"$scratch/$n.stdout" \
		2>"$scratch/$n.stderr"
	rc=$?
}

# ok NAME: the resumed run passed its checks.
ok() {
	[ "$rc" -eq 0 ] && grep -q '^check ok$' "$scratch/$1.stdout" ||
		fail "$1 exited $rc: $(cat "$scratch/$1.stdout" "$scratch/$1.stderr")"
}

# filling NAME: the block's last page was not there yet at the resume.
filling() {
	grep -q '^lazy-fill 1$' "$scratch/$1.stdout" ||
		fail "$1: the last page was filled before the program went on:" \
			"$(cat "$scratch/$1.stdout")"
}

lazy_cases() {
	be=$1
	say "back-end $be"
	# c
	lz c-$be sum
	ok c-$be
	filling c-$be
	say "  c: resumed with the fill running; every word right"
	# d
	n=d-$be
	lz $n kill
	[ "$rc" -eq 137 ] || fail "$n: the run killed at the resume exited $rc"
	filling $n
	[ "$(ls "$scratch/$n.chain" | grep -v '^lock$')" = "snap-00000001.ckpt" ] ||
		fail "$n: the chain changed: $(ls "$scratch/$n.chain")"
	echo sum >"$scratch/$n.ctl"
	CKPT_TEST_LAZY=1 timeout 60 "$lprog" --dir "$scratch/$n.chain" --ctl "$scratch/$n.ctl" \
		--mib $MIB >"$scratch/$n.stdout" 2>"$scratch/$n.stderr"
	rc=$?
	ok $n
	say "  d: killed with the fill half done, resumed again: every word right"
	# e
	lz e-$be read
	ok e-$be
	filling e-$be
	say "  e: read(2) into a page not filled yet: right bytes, the rest the snapshot's"
	# f
	lz f-$be discard
	ok f-$be
	filling f-$be
	say "  f: pages discarded before their fill read zero"
	# g
	lz g-$be commit
	ok g-$be
	pages=$(sed -n 's/^commit-pages //p' "$scratch/g-$be.stdout")
	[ -n "$pages" ] && [ "$pages" -ge 5 ] && [ "$pages" -le 64 ] ||
		fail "g-$be: the commit after the resume stored '$pages' pages, not 5 to 64"
	say "  g: the commit right after stored $pages pages"
	# h
	lz h-$be fork
	ok h-$be
	filling h-$be
	say "  h: a child forked during the fill reads the block whole"
	# j
	lz j-$be realloc
	ok j-$be
	filling j-$be
	grep -q '^moved 1$' "$scratch/j-$be.stdout" ||
		fail "j-$be: realloc did not move the block: $(cat "$scratch/j-$be.stdout")"
	say "  j: realloc moving the block with glibc's own mremap: every word right"
	# i
	CKPT_FAULT=uffd:1 lz i-$be sum
	ok i-$be
	grep -q '^ckpt: CKPT_F_LAZY: userfaultfd: .*(CKPT_FAULT); the memory is filled before' \
		"$scratch/i-$be.stderr" ||
		fail "i-$be: the fallback was not said: $(cat "$scratch/i-$be.stderr")"
	grep -q '^lazy-fill 0$' "$scratch/i-$be.stdout" ||
		fail "i-$be: the memory was not all there when the program went on"
	say "  i: without a userfaultfd: filled first, said so, every word right"
	# k
	largs="--mib 32 --increments 12"
	lz k-$be sum
	largs=
	ok k-$be
	[ "$(ls "$scratch/k-$be.chain" | grep -c '^snap-')" -eq 13 ] ||
		fail "k-$be: the chain is not 13 files: $(ls "$scratch/k-$be.chain")"
	say "  k: 12 increments, each a third of the pages: resumed lazily, every word right"
}

backends=
for be in mprotect uffd; do
	if why=$("$probe" $be 2>&1); then
		backends="$backends $be"
	else
		say "not checked: the $be back-end, not possible here: $why"
		skipped="$skipped the $be back-end ($why);"
	fi
done
[ -n "$backends" ] || fail "no back-end works here"
for be in $backends; do
	CKPT_BACKEND=$be
	export CKPT_BACKEND
	lazy_cases "$be"
done
unset CKPT_BACKEND

# d, with resume-prog: killed at the return of a lazy resume.
first_be=${backends# }
first_be=${first_be%% *}
prog=$builddir/tests/resume-prog
CKPT_BACKEND=$first_be
CKPT_TEST_LAZY=1
export CKPT_BACKEND CKPT_TEST_LAZY
common="--seed 4 --steps 60 --every 10 --sleep-us 0 --sparse-mib 64"
# shellcheck disable=SC2086 # the options, split on purpose
timeout 60 "$prog" $common --dir "$scratch/ref.chain" --out "$scratch/ref.out" \
	>"$scratch/ref.stdout" 2>"$scratch/ref.stderr" || fail "resume-prog reference run failed"
# shellcheck disable=SC2086
timeout 60 "$prog" $common --kill-at 3 --dir "$scratch/k.chain" --out "$scratch/k.out" \
	>"$scratch/k.1.stdout" 2>"$scratch/k.1.stderr"
rc=$?
[ "$rc" -eq 137 ] || fail "resume-prog --kill-at 3 exited $rc"
: >"$scratch/k.out.kill-resumed"
# shellcheck disable=SC2086
timeout 60 "$prog" $common --dir "$scratch/k.chain" --out "$scratch/k.out" \
	>"$scratch/k.2.stdout" 2>"$scratch/k.2.stderr"
rc=$?
[ "$rc" -eq 137 ] && [ ! -e "$scratch/k.out.kill-resumed" ] ||
	fail "resume-prog was not killed at its resume (exit $rc): $(cat "$scratch/k.2.stderr")"
# shellcheck disable=SC2086
timeout 60 "$prog" $common --dir "$scratch/k.chain" --out "$scratch/k.out" \
	>"$scratch/k.3.stdout" 2>"$scratch/k.3.stderr"
rc=$?
[ "$rc" -eq 0 ] || fail "resume-prog, resumed after the kill, exited $rc: $(cat "$scratch/k.3.stderr")"
grep -q '^resumed 3 ' "$scratch/k.3.stderr" || fail "resume-prog did not resume snapshot 3"
cmp -s "$scratch/ref.stdout" "$scratch/k.3.stdout" ||
	fail "checksum $(cat "$scratch/k.3.stdout"), not $(cat "$scratch/ref.stdout")"
cmp -s "$scratch/ref.out" "$scratch/k.out" || fail "the output file differs from the reference"
say "d: resume-prog killed at its lazy resume, resumed again: checksum and file as the reference"
unset CKPT_BACKEND CKPT_TEST_LAZY

# a, b: the resume suites, every resume lazy.
for s in resume.sh resume-threads.sh; do
	CKPT_TEST_LAZY=1 top_builddir=$builddir sh "$srcdir/$s" >"$scratch/$s.log" 2>&1
	rc=$?
	case $rc in
	0) say "$s with CKPT_F_LAZY: $(tail -n 1 "$scratch/$s.log")" ;;
	77)
		say "$s with CKPT_F_LAZY: $(tail -n 1 "$scratch/$s.log")"
		skipped="$skipped part of $s;"
		;;
	*) fail "$s with CKPT_F_LAZY: $(tail -n 20 "$scratch/$s.log")" ;;
	esac
done

if [ -n "$skipped" ]; then
	say "SKIP: everything else passed; not checked:$skipped"
	exit 77
fi
say "ok"
exit 0

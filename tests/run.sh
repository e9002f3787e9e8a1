#!/bin/sh
# tests/run.sh - `ckpt run`: programs that know nothing of ckpt, committed by
# ckpt's own thread, killed and resumed with `ckpt resume`.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# tests/run-prog (see its source) writes a line per step to an output file;
# the file is a function of its arguments alone.
#
#   a  the references: run-prog uninterrupted, with 0 and 3 worker threads
#   b  under `ckpt run --every 150ms`, with 0 and 3 workers: killed
#      (SIGKILL) a random time after a commit, resumed with `ckpt resume`,
#      killed again after a commit of the resumed run, resumed to the end:
#      the output file equals the reference, byte for byte
#   c  a program that ignores SIGUSR1 (SIG_IGN), `--on USR1` and no timer:
#      each SIGUSR1 makes a commit, and the program still reads SIG_IGN for
#      it and ends normally; one with a handler of its own for SIGUSR1 gets
#      each signal in its handler after the commit
#   d  SIGTERM: a commit, then the program's own SIGTERM behaviour (the
#      default: it ends by SIGTERM); the chain resumes to the end
#   f  python3 (the interpreter's ELF file, not a wrapper script) running a
#      numeric loop over a dict and a list, killed a random time after a
#      commit and resumed: the state it writes at the end equals an
#      uninterrupted run's.  Python dlopen()s its extension modules after it
#      starts; the resume loads them again where they were.  And one of
#      those modules gone before the resume: refused, naming it, the
#      program not run.  Without python3 this is said and skipped; g
#      checks the dlopen() case in any case.
#   g  run-prog --dlopen libz.so.1 (loaded once running, called each
#      step) and run-prog --fork (a child every 25 steps writes a line and
#      exits; children are not checkpointed), killed after a commit twice
#      and resumed: the output equals an uninterrupted run's
#   h  run-prog --loader LIB: a thread holds the loader's locks most of the
#      time (inside dl_iterate_phdr callbacks, and in dlopen/dlclose of
#      LIB): commits still happen (a commit that caught it holding one
#      would wait for ever), and the resumes give the same output
#   i  --keep 2 --json, run-prog --mem 48: the chain is compacted after
#      each commit while the program runs; killed twice (at any moment, a
#      compaction included) and resumed: same output, a sound chain of at
#      most 6 snapshots, and the status file holds one JSON object a line:
#      start, commits with consecutive ids, compactions, a resume for each
#      `ckpt resume`; the first commit (48 MiB) was written by a child
#      process, later ones copied
#   k  run-prog --mem 64, committed on SIGUSR1 once its memory is
#      written: that commit (64 MiB, more than ckpt copies into new memory
#      while the program waits) is written by a child process; killed
#      after it and resumed: same output
#   j  the program replaced by another build before the resume: refused
#      with ckpt_open's message, the program not run; the right build put
#      back, the same chain resumes to the same output
#   c and d also check the status lines --json=FILE writes for a signal
#   e  a statically linked program is refused, naming why (skipped, and
#      said, when the system has no static binary to try)
#   In a build with AddressSanitizer (resuming is not available there),
#   `ckpt run` is refused, naming it, and nothing else is tried.
#   all of it under CKPT_BACKEND=mprotect and =uffd (a back-end the kernel
#   lacks is skipped, with the reason).  Exit: 0 pass, 1 fail, 77 skip.

top_builddir=${top_builddir:-.}
fail() {
	echo "run.sh: FAIL: $*" >&2
	exit 1
}
say() {
	echo "run.sh: $*"
}

builddir=$(cd "$top_builddir" && pwd) || fail "no build directory $top_builddir"
prog=$builddir/tests/run-prog
ckpt=$builddir/tools/ckpt
probe=$builddir/tests/backend-probe
for p in "$prog" "$ckpt" "$probe"; do
	[ -x "$p" ] || fail "$p not built"
done

STEPS=600
# A sanitizer build: `ckpt run` refuses, and says why.
if ldd "$builddir/tools/.libs/ckpt" "$ckpt" 2>/dev/null | grep -q libasan; then
	if out=$("$ckpt" run "${TMPDIR:-/tmp}/ckpt-run-asan.$$" -- "$prog" /dev/null 1 2>&1); then
		fail "a build with AddressSanitizer ran a program under ckpt run: $out"
	fi
	case $out in
	*AddressSanitizer*) ;;
	*) fail "ckpt run refused without naming AddressSanitizer: $out" ;;
	esac
	[ -e "${TMPDIR:-/tmp}/ckpt-run-asan.$$" ] && fail "the refused ckpt run made its directory"
	say "sanitizer build: ckpt run is refused as documented: $out"
	exit 0
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-run.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM

rand() {
	echo $(($(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % $1))
}

# nsnaps DIR: how many snapshots DIR holds.
nsnaps() {
	ls "$1" 2>/dev/null | grep -c '^snap-'
}

# wait_snaps DIR N [PID ERR]: until DIR holds more than N snapshots (10 s
# at most; PID, if given, must not end before: ERR holds its stderr).
wait_snaps() {
	i=0
	while [ "$(nsnaps "$1")" -le "$2" ]; do
		if [ -n "$3" ] && ! kill -0 "$3" 2>/dev/null; then
			wait "$3"
			fail "$1: the program ended (status $?) before its next commit: $(cat "$4")"
		fi
		i=$((i + 1))
		[ $i -lt 1000 ] || fail "no commit in $1 after 10 s (it holds $(nsnaps "$1"))"
		sleep 0.01
	done
}

# wait_line PATTERN FILE SECONDS WHAT: until a line of FILE matches
# PATTERN (grep), failing "WHAT in SECONDS s" after that long.
wait_line() {
	i=0
	until grep -q "$1" "$2"; do
		i=$((i + 1))
		[ $i -lt $(($3 * 100)) ] || fail "$4 in $3 s"
		sleep 0.01
	done
}

# sleep_ms N
sleep_ms() {
	sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"
}

# killed_after_commit PID DIR [ERR]: SIGKILL a random time (0-100 ms)
# after PID's next commit to DIR (ERR: its stderr, for a failure).
killed_after_commit() {
	n=$(nsnaps "$2")
	if [ -n "$3" ]; then
		wait_snaps "$2" "$n" "$1" "$3"
	else
		wait_snaps "$2" "$n"
	fi
	ms=$(rand 100)
	sleep_ms "$ms"
	kill -9 "$1" 2>/dev/null
	wait "$1"
	rc=$?
	say "  killed $ms ms after commit $(($(nsnaps "$2"))) (status $rc)"
	[ $rc -eq 137 ] || fail "the run ended (status $rc) before it was killed; make STEPS larger"
}

# killed_twice_resumed PID NAME REF: PID, just started by `ckpt run` on
# $dir writing $out (stderr to $scratch/NAME.err), is killed after a
# commit; `ckpt resume` is killed after a commit of its own; a last resume
# runs to the end.  Then $out must equal REF and stderr hold nothing but
# run-prog's "filled".
killed_twice_resumed() {
	err=$scratch/$2.err
	killed_after_commit "$1" "$dir" "$err"
	# ckpt resume executes the program: $! is its pid.
	"$ckpt" resume "$dir" 2>>"$err" &
	killed_after_commit $! "$dir" "$err"
	timeout 60 "$ckpt" resume "$dir" 2>>"$err"
	rc=$?
	[ $rc -eq 0 ] || fail "$2: the last resume exited $rc: $(cat "$err")"
	cmp -s "$out" "$3" || fail "$2: the output differs from an uninterrupted run's ($out)"
	grep -v '^filled$' "$err" && fail "$2: stderr: $(cat "$err")"
	return 0
}

check_backend() {
	be=$1
	export CKPT_BACKEND=$be
	for t in 0 3; do
		name=$be-t$t
		dir=$scratch/$name.chain out=$scratch/$name.out
		say "b: $be, $t workers"
		"$ckpt" run --every 150ms "$dir" -- "$prog" "$out" $STEPS --threads $t \
			2>"$scratch/$name.err" &
		killed_twice_resumed $! "$name" "$scratch/ref-t$t.out"
		rm -rf "$dir"
	done

	say "c: $be, a program that ignores SIGUSR1, and one that handles it"
	for how in ignore handle; do
		dir=$scratch/$be-$how.chain out=$scratch/$be-$how.out
		"$ckpt" run --every 1h --on USR1 --json="$scratch/$be-$how.jsonl" "$dir" -- \
			"$prog" "$out" $STEPS --$how-usr1 2>"$scratch/$be-$how.err" &
		pid=$!
		sleep 0.2
		# After a commit the program gets the signal again (for its
		# handler): one sent before that arrives coalesces with it
		# (doc/RUN.md), so the next is sent a moment later.
		for k in 1 2 3; do
			kill -USR1 $pid
			wait_snaps "$dir" $((k - 1))
			sleep 0.1
		done
		wait $pid
		rc=$?
		[ $rc -eq 0 ] || fail "$be-$how: exited $rc: $(cat "$scratch/$be-$how.err")"
		[ "$(nsnaps "$dir")" -eq 3 ] || fail "$be-$how: $(nsnaps "$dir") commits for 3 SIGUSR1"
		[ "$(grep -c '"event":"commit",.*"signal":"SIGUSR1","id":' "$scratch/$be-$how.jsonl")" -eq 3 ] ||
			fail "$be-$how: not 3 status lines of commits for SIGUSR1: $(cat "$scratch/$be-$how.jsonl")"
		cmp -s "$out" "$scratch/ref-t0.out" || fail "$be-$how: the output differs"
		if [ $how = handle ]; then
			grep -qx "usr1 3" "$scratch/$be-$how.err" ||
				fail "$be-handle: the program's handler did not see 3 signals: $(cat "$scratch/$be-$how.err")"
		else
			[ -s "$scratch/$be-$how.err" ] && fail "$be-$how: stderr: $(cat "$scratch/$be-$how.err")"
		fi
	done

	say "d: $be, SIGTERM commits, then ends the program; the chain resumes"
	dir=$scratch/$be-term.chain out=$scratch/$be-term.out
	"$ckpt" run --every 1h --json "$dir" -- "$prog" "$out" $STEPS 2>"$scratch/$be-term.err" &
	pid=$!
	sleep 0.3
	kill -TERM $pid
	wait $pid
	rc=$?
	[ $rc -eq 143 ] || fail "$be-term: status $rc after SIGTERM, not 143 (killed by it)"
	[ "$(nsnaps "$dir")" -eq 1 ] || fail "$be-term: $(nsnaps "$dir") commits, not 1"
	grep -q '"event":"commit",.*"signal":"SIGTERM","id":1,' "$dir/run.jsonl" ||
		fail "$be-term: no status line for the commit SIGTERM asked for: $(cat "$dir/run.jsonl")"
	timeout 60 "$ckpt" resume "$dir" 2>>"$scratch/$be-term.err" ||
		fail "$be-term: the resume failed: $(cat "$scratch/$be-term.err")"
	cmp -s "$out" "$scratch/ref-t0.out" || fail "$be-term: the output differs"

	for how in dlopen fork; do
		[ $how = dlopen ] && [ -z "$libz" ] && continue
		name=$be-$how
		dir=$scratch/$name.chain out=$scratch/$name.out
		say "g: $be, run-prog --$how, killed after a commit and resumed"
		"$ckpt" run --every 150ms "$dir" -- "$prog" "$out" $STEPS $(opts_$how) \
			2>"$scratch/$name.err" &
		killed_twice_resumed $! "$name" "$scratch/ref-$how.out"
		rm -rf "$dir"
	done

	name=$be-loader
	dir=$scratch/$name.chain out=$scratch/$name.out
	say "h: $be, a thread holding the loader's locks"
	"$ckpt" run --every 150ms --json "$dir" -- "$prog" "$out" $STEPS --loader "$loaderlib" \
		2>"$scratch/$name.err" &
	killed_twice_resumed $! "$name" "$scratch/ref-t0.out"
	grep -q '^{"event":"start",.*"loader_locks":2}$' "$dir/run.jsonl" ||
		fail "$name: the loader's locks were not found: $(head -n1 "$dir/run.jsonl")"
	grep -q commit-failed "$dir/run.jsonl" && fail "$name: a commit failed: $(grep commit-failed "$dir/run.jsonl")"
	say "  $(grep -c '"event":"commit"' "$dir/run.jsonl") commits"

	name=$be-keep
	dir=$scratch/$name.chain out=$scratch/$name.out
	say "i: $be, --keep 2 --json, killed twice and resumed"
	"$ckpt" run --every 100ms --keep 2 --json "$dir" -- "$prog" "$out" $((STEPS * 3)) \
		--threads 1 --mem 48 2>"$scratch/$name.err" &
	killed_twice_resumed $! "$name" "$scratch/ref-mem.out"
	"$ckpt" verify "$dir" >/dev/null || fail "$name: the compacted chain does not verify"
	# A base and at most 2N increments: folded to N once more are there.
	[ "$(nsnaps "$dir")" -le 6 ] || fail "$name: $(nsnaps "$dir") snapshots kept with --keep 2"
	check_status "$dir/run.jsonl" "$name"
	grep -q '"writer":"copy"' "$dir/run.jsonl" || fail "$name: no commit copied: $(cat "$dir/run.jsonl")"
	say "  $(grep -c '"event":"commit"' "$dir/run.jsonl") commits, $(grep -c '"event":"compact"' "$dir/run.jsonl") compactions, $(nsnaps "$dir") snapshots at the end"

	name=$be-child
	dir=$scratch/$name.chain out=$scratch/$name.out
	say "k: $be, a first commit of 64 MiB written by a child process"
	"$ckpt" run --every 1h --on USR1 --json "$dir" -- "$prog" "$out" $STEPS --mem 64 \
		2>"$scratch/$name.err" &
	pid=$!
	wait_line '^filled$' "$scratch/$name.err" 10 "$name: run-prog did not fill its memory"
	kill -USR1 $pid
	# Its status line comes once the child has ended (the file is in
	# place before): then the kill.
	wait_line '"event":"commit",.*"id":1,' "$dir/run.jsonl" 30 \
		"$name: no status line for the commit"
	grep -q '"event":"commit",.*"id":1,.*"writer":"fork"' "$dir/run.jsonl" ||
		fail "$name: the first commit was not written by a child: $(cat "$dir/run.jsonl")"
	sleep_ms "$(rand 100)"
	kill -9 $pid
	wait $pid
	rc=$?
	[ $rc -eq 137 ] || fail "$name: the run ended (status $rc) before it was killed"
	timeout 60 "$ckpt" resume "$dir" 2>>"$scratch/$name.err"
	rc=$?
	[ $rc -eq 0 ] || fail "$name: the resume exited $rc: $(cat "$scratch/$name.err")"
	cmp -s "$out" "$scratch/ref-mem64.out" || fail "$name: the output differs from an uninterrupted run's"
	grep -v '^filled$' "$scratch/$name.err" && fail "$name: stderr: $(cat "$scratch/$name.err")"
	"$ckpt" verify "$dir" >/dev/null || fail "$name: the chain does not verify"

	name=$be-build
	dir=$scratch/$name.chain out=$scratch/$name.out
	say "j: $be, another build of the program at the resume"
	cp "$prog" "$scratch/prog-copy"
	"$ckpt" run --every 150ms "$dir" -- "$scratch/prog-copy" "$out" $STEPS 2>"$scratch/$name.err" &
	killed_after_commit $! "$dir" "$scratch/$name.err"
	cp "$scratch/prog-copy" "$scratch/prog-saved"
	cp "$other_elf" "$scratch/prog-copy"
	before=$(cksum <"$out")
	msg=$(timeout 60 "$ckpt" resume "$dir" 2>&1)
	rc=$?
	[ $rc -ne 0 ] || fail "$name: another build was resumed"
	case $msg in
	*"ckpt_open: snap-"*"was written by $scratch/prog-copy; this is $scratch/prog-copy, another build: it is not resumed"*) ;;
	*) fail "$name: the refusal does not say why: $msg" ;;
	esac
	[ "$(cksum <"$out")" = "$before" ] || fail "$name: the output changed after the refusal"
	cp "$scratch/prog-saved" "$scratch/prog-copy"
	timeout 60 "$ckpt" resume "$dir" 2>>"$scratch/$name.err" ||
		fail "$name: the right build did not resume after the refusal: $(cat "$scratch/$name.err")"
	cmp -s "$out" "$scratch/ref-t0.out" || fail "$name: the output differs from an uninterrupted run's"
	say "  refused: $msg"

	if [ -n "$python" ]; then
		say "f: $be, python3, killed after a commit and resumed"
		dir=$scratch/$be-py.chain out=$scratch/$be-py.out
		"$ckpt" run --every 300ms "$dir" -- "$python" "$scratch/loop.py" "$out" $PYSTEPS \
			2>"$scratch/$be-py.err" &
		killed_after_commit $! "$dir"
		timeout 60 "$ckpt" resume "$dir" 2>>"$scratch/$be-py.err"
		rc=$?
		[ $rc -eq 0 ] || fail "$be-py: the resume exited $rc: $(cat "$scratch/$be-py.err")"
		cmp -s "$out" "$scratch/ref-py.out" ||
			fail "$be-py: the output differs: $(cat "$out") against $(cat "$scratch/ref-py.out")"
		[ -s "$scratch/$be-py.err" ] && fail "$be-py: stderr: $(cat "$scratch/$be-py.err")"

		say "f: $be, python3, an extension module gone before the resume"
		dir=$scratch/$be-pygone.chain out=$scratch/$be-pygone.out
		mkdir -p "$scratch/pymod"
		cp "$pymod" "$scratch/pymod/"
		PYTHONPATH=$scratch/pymod "$ckpt" run --every 300ms "$dir" -- "$python" \
			"$scratch/loop.py" "$out" $PYSTEPS 2>"$scratch/$be-pygone.err" &
		killed_after_commit $! "$dir"
		rm -rf "$scratch/pymod"
		msg=$(timeout 60 "$ckpt" resume "$dir" 2>&1)
		rc=$?
		[ $rc -ne 0 ] || fail "$be-pygone: resumed without its module"
		case $msg in
		*"${pymod##*/} was loaded at"*"is not there in this process"*) ;;
		*) fail "$be-pygone: the refusal does not name the module: $msg" ;;
		esac
		[ -e "$out" ] && fail "$be-pygone: the program ran on after the refusal"
	fi
}

# check_status FILE NAME: FILE is --json's: one JSON object a line, a
# start, two resumes, commits with consecutive ids, compactions.
check_status() {
	[ "$(head -n1 "$1" | grep -c '^{"event":"start",')" -eq 1 ] || fail "$2: no start line first"
	[ "$(grep -c '^{"event":"resume",' "$1")" -eq 2 ] || fail "$2: not 2 resume lines: $(cat "$1")"
	grep -q '^{"event":"compact",.*"folded":[1-9]' "$1" || fail "$2: no compaction: $(cat "$1")"
	grep -q -- '-failed"' "$1" && fail "$2: a failure: $(grep -- '-failed"' "$1")"
	# Ids: each commit's is the one before it plus one, the first commit
	# after a resume the resumed one's plus one.
	awk -v name="$2" '
		/"event":"(commit|resume)"/ {
			id = $0; sub(/.*"id":/, "", id); sub(/[,}].*/, "", id)
			if (/"event":"commit"/ && id != last + 1) { print name ": commit " id " after " last; exit 1 }
			last = id
		}' "$1" || fail "$2: status ids out of order: $(cat "$1")"
	if [ -n "$python" ]; then
		"$python" -c 'import json, sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    assert isinstance(o, dict) and o["pid"] > 0 and "event" in o, l' "$1" ||
			fail "$2: a status line is not a JSON object: $(cat "$1")"
	fi
}

say "a: references"
opts_fork() {
	echo --fork
}
opts_dlopen() {
	echo --dlopen "$libz" zlibVersion
}
libz=$( (/sbin/ldconfig -p || ldconfig -p) 2>/dev/null | sed -n 's/^[[:space:]]*libz\.so\.1 (libc6,x86-64) => //p' | head -n1)
if [ -n "$libz" ]; then
	"$prog" "$scratch/ref-dlopen.out" $STEPS $(opts_dlopen) || fail "run-prog --dlopen $libz failed"
else
	say "g: no libz.so.1 on this system: run-prog --dlopen is not tried"
fi
"$prog" "$scratch/ref-fork.out" $STEPS --fork || fail "run-prog --fork failed uninterrupted"
grep -q "^child 575$" "$scratch/ref-fork.out" || fail "run-prog --fork: no child line for step 575"
# python3 itself, not a wrapper script that would execute it (the preload
# leaves the environment at the first program it starts in).
python=
PYSTEPS=2000000
if command -v python3 >/dev/null 2>&1 &&
	python=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) &&
	[ -x "$python" ] && head -c4 "$python" | grep -q ELF; then
	cat >"$scratch/loop.py" <<'EOF'
import sys, zlib
out, n = sys.argv[1], int(sys.argv[2])
d, l, x = {}, [], 0
for i in range(n):
    x = (x * 31 + i) % 1000003
    d[i % 997] = d.get(i % 997, 0) + x
    l.append(x % 101)
    if len(l) > 5000:
        del l[:2500]
with open(out, "w") as f:
    f.write("%d %d %d %d %08x\n" % (x, sum(d.values()), len(l), sum(l), zlib.crc32(bytes(l))))
EOF
	"$python" "$scratch/loop.py" "$scratch/ref-py.out" $PYSTEPS || fail "python3 failed uninterrupted"
	pymod=$("$python" -c 'import zlib; print(zlib.__file__)' 2>/dev/null)
	case $pymod in
	*.so) ;;
	*) fail "python3's zlib is not an extension module it loads ($pymod)" ;;
	esac
	say "  python3: $python"
else
	python=
	say "python3 is not installed (or not an ELF program): f is not tried; g checks a dlopen()"
fi
"$prog" "$scratch/ref-mem.out" $((STEPS * 3)) --threads 1 --mem 48 2>/dev/null || fail "run-prog --mem failed"
"$prog" "$scratch/ref-mem64.out" $STEPS --mem 64 2>/dev/null || fail "run-prog --mem failed"
for t in 0 3; do
	"$prog" "$scratch/ref-t$t.out" $STEPS --threads $t || fail "run-prog failed uninterrupted"
done
loaderlib=${libz:-libm.so.6}
# Another dynamically linked program, for j.
other_elf=
for f in /usr/bin/true /bin/true /usr/bin/env; do
	[ -x "$f" ] && head -c4 "$f" | grep -q ELF && other_elf=$(readlink -f "$f") && break
done
[ -n "$other_elf" ] || fail "no ELF program such as /usr/bin/true on this system"
"$prog" "$scratch/ref-loader.out" $STEPS --loader "$loaderlib" || fail "run-prog --loader failed"
cmp -s "$scratch/ref-loader.out" "$scratch/ref-t0.out" || fail "run-prog --loader changed its output"

skipped=
for be in mprotect uffd; do
	if why=$("$probe" $be 2>&1); then
		check_backend $be
	else
		say "SKIP $be: $why"
		skipped=1
	fi
done
unset CKPT_BACKEND

say "e: a statically linked program"
static=
for s in /sbin/ldconfig /usr/sbin/ldconfig /bin/busybox; do
	if [ -x "$s" ] && ! LC_ALL=C readelf -l "$s" 2>/dev/null | grep -q INTERP; then
		static=$s
		break
	fi
done
if [ -n "$static" ]; then
	if msg=$("$ckpt" run "$scratch/static.chain" -- "$static" 2>&1); then
		fail "ckpt run accepted the static binary $static"
	fi
	echo "$msg" | grep -q "statically linked" || fail "static binary refused without saying why: $msg"
	say "  refused: $msg"
else
	say "  SKIP: no statically linked program found on this system"
fi

[ -n "$skipped" ] && exit 77
exit 0

#!/bin/sh
# tests/audit.sh - ckpt-audit on real programs from Debian and on
# tests/audit-target: output and exit status passed through, reports that
# name what was written, JSON that agrees with the text, an SVG that renders,
# children followed only when asked, static programs refused.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Runs under each back-end the kernel has (CKPT_BACKEND, as for the other
# end-to-end suites).  The Debian programs (python3, sqlite3, gzip) and
# rsvg-convert come from scripts/setup.sh.  A check whose program or
# back-end is missing says so and the others still run; then the test ends
# with status 77 (SKIP) naming what went unchecked, never with a pass.
top_builddir=${top_builddir:-.}
audit=$top_builddir/tools/ckpt-audit
target=$top_builddir/tests/audit-target
probe=$top_builddir/tests/backend-probe
fail() {
	echo "audit.sh: FAIL: $*" >&2
	exit 1
}
note() {
	echo "audit.sh: $*"
}
unchecked=
no_rsvg=
not_checked() {
	note "not checked: $*"
	unchecked="$unchecked; $*"
}
[ -x "$audit" ] || fail "$audit not built"
[ -x "$target" ] || fail "$target not built"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-audit-test.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM

# The real programs, not wrappers: a shell shim that execs them would be
# tracked only until its exec (children are followed only with --follow).
python=
for p in /usr/bin/python3 /bin/python3; do [ -x "$p" ] && python=$p && break; done
sqlite=$(command -v sqlite3)
gzip=$(command -v gzip)
[ -n "$python" ] || not_checked "python3 is missing (scripts/setup.sh installs it): JSON and SVG" \
	"reports, fork and exec sections, what children inherit, python3 audited"
[ -n "$sqlite" ] || not_checked "sqlite3 is missing (scripts/setup.sh installs it): sqlite3 audited"
[ -n "$gzip" ] || not_checked "gzip is missing: gzip audited"

# pages MAPPING-REGEX REPORT: the pages column of the first row whose
# mapping matches.
pages() {
	awk -v re="$1" '$NF ~ re && $1 ~ /^[0-9]+$/ { print $1; exit }' "$2"
}
runs_of() {
	awk -v re="$1" '$NF ~ re && $1 ~ /^[0-9]+$/ { print $(NF-1); exit }' "$2"
}

# ---- usage and errors, once --------------------------------------------------------
"$audit" --help | grep -q '^usage: ckpt-audit' || fail "--help"
"$audit" >/dev/null 2>&1
[ $? -eq 125 ] || fail "no program does not exit 125"
"$audit" --interval 0 -- true >/dev/null 2>&1
[ $? -eq 125 ] || fail "--interval 0 does not exit 125"
"$audit" --frobnicate -- true >/dev/null 2>&1
[ $? -eq 125 ] || fail "an unknown option does not exit 125"
msg=$("$audit" -- no-such-program-here 2>&1)
[ $? -eq 127 ] || fail "a missing program does not exit 127"
echo "$msg" | grep -q 'no-such-program-here: command not found' || fail "not found: $msg"

# A static program is refused, naming the file.  glibc's libc.a may be
# missing; then a crafted ELF file without PT_INTERP stands in for one.
printf 'int main(void) { return 0; }\n' >"$scratch/static.c"
if ${CC:-cc} -static -o "$scratch/static" "$scratch/static.c" 2>/dev/null &&
	"$scratch/static"; then
	note "static program built with ${CC:-cc} -static"
else
	note "cannot link a static program here: checking a crafted ELF without PT_INTERP"
	# An ELF64 header with no program headers at all.
	printf '\177ELF\002\001\001\000\000\000\000\000\000\000\000\000\002\000\076\000\001\000\000\000' >"$scratch/static"
	head -c 40 /dev/zero >>"$scratch/static"
	chmod +x "$scratch/static"
fi
msg=$("$audit" -- "$scratch/static" 2>&1)
rc=$?
[ $rc -eq 126 ] || fail "a static program exited $rc, not 126: $msg"
echo "$msg" | grep -q "$scratch/static: statically linked" || fail "static: $msg"
# JSON stays valid whatever bytes the command line holds: quotes and
# control characters escaped, invalid UTF-8 replaced by U+FFFD.
if [ -n "$python" ]; then
	"$audit" --json -o "$scratch/bytes.json" -- /bin/sh -c 'exit 0' "$(printf 'a\377b\001"c')" ||
		fail "--json of a command line with odd bytes exited $?"
	"$python" - "$scratch/bytes.json" <<'EOF' ||
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
assert d["command"][-1] == "a\ufffdb\x01\"c", d["command"]
EOF
		fail "--json of a command line with odd bytes: $(cat "$scratch/bytes.json")"
fi
# A shell script is audited through its interpreter, which is dynamic.
printf '#!/bin/sh\nexit 5\n' >"$scratch/script"
chmod +x "$scratch/script"
"$audit" -- "$scratch/script" 2>/dev/null
[ $? -eq 5 ] || fail "a script's status is not passed through"

backends=
for b in mprotect uffd; do
	if "$probe" "$b" >/dev/null 2>&1; then
		backends="$backends $b"
	else
		not_checked "the $b back-end, not possible here: $("$probe" "$b" 2>&1)"
	fi
done
[ -n "$backends" ] || fail "no back-end works"

for be in $backends; do
	CKPT_BACKEND=$be
	export CKPT_BACKEND
	note "back-end $be"
	r=$scratch/report-$be

	# ---- exit status ----------------------------------------------------------------
	"$audit" -- /bin/sh -c 'exit 7' 2>/dev/null
	[ $? -eq 7 ] || fail "$be: sh -c 'exit 7' does not exit 7"
	"$audit" -- "$target" exit 0 2>"$r" || fail "$be: exit 0 exited $?"
	"$audit" --interval 50 -- "$target" kill 2>"$r"
	rc=$?
	[ $rc -eq 143 ] || fail "$be: a program killed by SIGTERM gave $rc, not 143"
	grep -q 'ended without exit' "$r" || fail "$be: the killed program's report: $(cat "$r")"
	[ "$(pages 'audit-target$' "$r")" -ge 4 ] || fail "$be: killed: pages before the kill lost"
	# _exit: the samples up to the last interval survive.
	"$audit" --interval 50 -- "$target" quick-exit 2>"$r" || fail "$be: quick-exit exited $?"
	n=$(pages 'audit-target$' "$r")
	[ -n "$n" ] && [ "$n" -ge 12 ] || fail "$be: _exit: 12 pages written before it, report: $(cat "$r")"

	# ---- threads: every page written is reported, each its own run ---------------
	out=$("$audit" --interval 50 --output "$r" -- "$target" threads) || fail "$be: threads exited $?"
	[ "$out" = "threads: wrote 96 pages" ] || fail "$be: threads: stdout '$out'"
	n=$(pages 'audit-target$' "$r")
	runs=$(runs_of 'audit-target$' "$r")
	# 96 pages written (every other page), plus at most a few of the
	# program's other data (stdout's state).
	{ [ -n "$n" ] && [ "$n" -ge 96 ] && [ "$n" -le 104 ]; } ||
		fail "$be: threads: $n pages of the program's data reported, 96 written: $(cat "$r")"
	[ "$runs" -ge 96 ] || fail "$be: threads: $runs runs, at least 96 expected"
	# Two bursts 400 ms apart: the last 16 pages come in a later interval.
	grep -q 'timeline' "$r" || fail "$be: no timeline"
	first=$(awk '/timeline/ { t = 1; next } t && $3 == "s" && $4 > 0 { print $1; exit }' "$r")
	last=$(awk '/timeline/ { t = 1; next } t && $3 == "s" && $4 > 0 { l = $1 } END { print l }' "$r")
	[ "$first" != "$last" ] || fail "$be: the timeline has one burst: $(cat "$r")"

	# JSON: parses, and its totals are the text report's.
	"$audit" --interval 50 --json -o "$r.json" -- "$target" threads >/dev/null ||
		fail "$be: --json exited $?"
	"$audit" --interval 50 --svg "$r.svg" -o "$r.txt" -- "$target" threads >/dev/null ||
		fail "$be: --svg exited $?"
	if [ -n "$python" ]; then
		"$python" - "$r.json" "$r.txt" "$r.svg" <<'EOF' || fail "$be: JSON or SVG check"
import json, sys, re
import xml.etree.ElementTree as ET
d = json.load(open(sys.argv[1]))
assert d["status"] == 0 and len(d["processes"]) == 1, d
p = d["processes"][0]
assert p["tracked"] and p["ended_by_exit"], p
ps = p["page_size"]
assert sum(m["pages"] for m in p["mappings"]) == p["total"]["pages"]
assert sum(m["runs"] for m in p["mappings"]) == p["total"]["runs"]
assert p["total"]["bytes"] == p["total"]["pages"] * ps
assert sum(i["pages"] for i in p["intervals"]) == p["total"]["pages"]
for m in p["mappings"]:
    assert sum(n for _, n in m["timeline"]) == m["pages"], m
own = [m for m in p["mappings"] if m["name"].endswith("audit-target")]
assert own and 96 <= own[0]["pages"] <= 104 and own[0]["runs"] >= 96, own
# The text report of another run: the same program, the same shape.
text = open(sys.argv[2]).read()
m = re.search(r"^\s+(\d+)\s+\S+ \S+\s+(\d+)\s+total \((\d+) mappings\)", text, re.M)
assert m, text
own_text = re.search(r"^\s+(\d+)\s+\S+ \S+\s+(\d+)\s+\S*audit-target$", text, re.M)
assert own_text and 96 <= int(own_text.group(1)) <= 104, text
svg = ET.parse(sys.argv[3]).getroot()
assert svg.tag.endswith("svg"), svg.tag
texts = " ".join(t.text or "" for t in svg.iter() if t.tag.endswith("text"))
assert "audit-target" in texts and "pages first written" in texts, texts
cells = [r for r in svg.iter() if r.tag.endswith("rect") and r.get("fill", "").startswith("#") and r.find("{http://www.w3.org/2000/svg}title") is not None]
assert len(cells) >= 2, len(cells)
EOF
		# Both kinds of report from one run agree exactly.
		"$audit" --json -o "$r.j2" -- "$target" exit 0 >/dev/null || fail "$be: --json exit 0"
		"$python" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["status"] == 0 and d["processes"][0]["total"]["pages"] > 0, d
' "$r.j2" || fail "$be: --json of exit 0"
	fi
	if command -v rsvg-convert >/dev/null 2>&1; then
		rsvg-convert -o "$r.png" "$r.svg" || fail "$be: rsvg-convert could not render the SVG"
		[ "$(head -c 8 "$r.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
			fail "$be: rsvg-convert did not make a PNG"
		[ "$(wc -c <"$r.png")" -gt 2000 ] || fail "$be: the PNG is nearly empty"
	elif [ -z "$no_rsvg" ]; then
		no_rsvg=1
		not_checked "rsvg-convert is missing (Debian package librsvg2-bin): the SVG rendered"
	fi

	# ---- fork: followed only with --follow ----------------------------------------
	out=$("$audit" --json -o "$r.fork" -- "$target" fork)
	rc=$?
	[ $rc -eq 3 ] || fail "$be: fork: exit status $rc, not 3"
	echo "$out" | grep -q '^child ' && echo "$out" | grep -q '^parent ' || fail "$be: fork: '$out'"
	out=$("$audit" --follow --json -o "$r.follow" -- "$target" fork)
	rc=$?
	[ $rc -eq 3 ] || fail "$be: --follow: exit status $rc, not 3"
	echo "$out" | grep -q '^child ' && echo "$out" | grep -q '^parent ' || fail "$be: --follow: '$out'"
	if [ -n "$python" ]; then
		"$python" - "$r.fork" "$r.follow" <<'EOF' || fail "$be: fork sections"
import json, sys
def own(p):
    return sum(m["pages"] for m in p["mappings"] if m["name"].endswith("audit-target"))
d = json.load(open(sys.argv[1]))
assert len(d["processes"]) == 1, d["processes"]
p = d["processes"][0]
# The parent wrote 5 + 3 pages; the child's 7 are not its own.
assert 8 <= own(p) <= 12, own(p)
f = json.load(open(sys.argv[2]))
assert len(f["processes"]) == 2, f["processes"]
parent, child = f["processes"]
assert parent["how"] == "start" and child["how"] == "fork", (parent["how"], child["how"])
assert child["ppid"] == parent["pid"], (child["ppid"], parent["pid"])
assert child["ended_by_exit"], child
assert 8 <= own(parent) <= 12, own(parent)
# The child's own writes since the fork: 7 pages, not the parent's 5.
assert 7 <= own(child) <= 10, own(child)
EOF
	fi

	# exec: followed only with --follow, each program in a section of its own.
	if [ -n "$python" ] && [ -n "$gzip" ]; then
		"$audit" --json -o "$r.exec" -- /bin/sh -c "echo a | $gzip -c | wc -c" >/dev/null ||
			fail "$be: sh -c with a pipe"
		"$audit" --follow --json -o "$r.exec-f" -- /bin/sh -c "echo a | $gzip -c | wc -c" >/dev/null ||
			fail "$be: --follow sh -c with a pipe"
		"$python" - "$r.exec" "$r.exec-f" <<'EOF' || fail "$be: exec sections"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["processes"]) == 1, [(p["pid"], p["how"], p["exe"]) for p in d["processes"]]
f = json.load(open(sys.argv[2]))
exes = sorted(p["exe"].split("/")[-1] for p in f["processes"] if p["how"] == "exec")
assert exes == ["gzip", "wc"], [(p["pid"], p["how"], p["exe"]) for p in f["processes"]]
assert all(p["ended_by_exit"] for p in f["processes"] if p["how"] == "exec")
assert sum(1 for p in f["processes"] if p["ended_by_exec"]) == 2
EOF
		# A wrapper that executes the program: its one section says so,
		# and the text points at --follow.
		"$audit" --json -o "$r.wrap" -- /bin/sh -c "exec wc -c </dev/null" >/dev/null ||
			fail "$be: sh -c exec"
		"$python" - "$r.wrap" <<'EOF' || fail "$be: a wrapper's exec"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["processes"]) == 1, d["processes"]
p = d["processes"][0]
assert p["ended_by_exec"] and not p["ended_by_exit"], p
EOF
		"$audit" -- /bin/sh -c "exec wc -c </dev/null" 2>"$r.wrap.txt" >/dev/null ||
			fail "$be: sh -c exec, text"
		grep -q 'ended by exec of another program, not tracked without --follow' "$r.wrap.txt" ||
			fail "$be: the text report of a wrapper does not mention --follow: $(cat "$r.wrap.txt")"
	fi

	# What a program's children inherit: the same descriptors and
	# environment as without the tool (no sample file, no LD_PRELOAD).
	if [ -n "$python" ]; then
		code='import os, sys
sys.stdout.flush()
os.system("ls /proc/self/fd")
print(sorted(k for k in os.environ if k.startswith("CKPT_AUDIT") or k == "LD_PRELOAD"))'
		"$python" -c "$code" >"$scratch/inherit.plain" 2>&1 || fail "python3 alone"
		"$audit" -o /dev/null -- "$python" -c "$code" >"$scratch/inherit.audit" 2>&1 ||
			fail "$be: inherit exited $?"
		cmp -s "$scratch/inherit.plain" "$scratch/inherit.audit" ||
			fail "$be: a child inherits $(cat "$scratch/inherit.audit"), not $(cat "$scratch/inherit.plain")"
	fi

	# --delay: writes before it are not reported.  The threads write at
	# once, the main thread 400 ms later; tracking starts at 200 ms.
	"$audit" --delay 0.2 --interval 50 -o "$r" -- "$target" threads >/dev/null ||
		fail "$be: --delay exited $?"
	n=$(pages 'audit-target$' "$r")
	{ [ -n "$n" ] && [ "$n" -ge 16 ] && [ "$n" -le 24 ]; } ||
		fail "$be: --delay: $n pages of the program's data, 16 written after the delay: $(cat "$r")"

	# ---- real programs from Debian: same output, plausible report -------------------
	if [ -n "$python" ]; then
		code='import hashlib, json
d = {str(i): [i] * 50 for i in range(20000)}
print(len(json.dumps(d)), hashlib.sha256(json.dumps(d).encode()).hexdigest())'
		"$python" -c "$code" >"$scratch/py.plain" || fail "python3 alone"
		"$audit" -o "$r" -- "$python" -c "$code" >"$scratch/py.audit" || fail "$be: python3 exited $?"
		cmp -s "$scratch/py.plain" "$scratch/py.audit" || fail "$be: python3's output differs"
		n=$(pages '^\[heap\]$' "$r")
		a=$(pages '^\[anon\]$' "$r")
		# 20000 lists of 50 references: some 8 MB of objects, in the heap
		# and in pymalloc's anonymous arenas.
		[ $((${n:-0} + ${a:-0})) -ge 2000 ] || fail "$be: python3: heap $n, anon $a pages: $(cat "$r")"
		grep -q 'python3' "$r" || fail "$be: python3's own mapping is not named: $(cat "$r")"
		note "$be: python3: $(grep 'total (' "$r" | sed 's/^ *//')"
	fi

	if [ -n "$sqlite" ]; then
		cat >"$scratch/sql" <<'EOF'
create table t(a integer primary key, b text);
with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000)
insert into t select x, printf('%08x', (x * 2654435761) % 4294967296) from c;
create index tb on t(b);
select count(*), sum(a), max(b) from t where b > '8';
EOF
		rm -f "$scratch/db"
		"$sqlite" "$scratch/db" <"$scratch/sql" >"$scratch/sql.plain" || fail "sqlite3 alone"
		rm -f "$scratch/db"
		"$audit" -o "$r" -- "$sqlite" "$scratch/db" <"$scratch/sql" >"$scratch/sql.audit" ||
			fail "$be: sqlite3 exited $?"
		cmp -s "$scratch/sql.plain" "$scratch/sql.audit" || fail "$be: sqlite3's output differs"
		# Its page cache (2 MB by default) lives in the heap.
		n=$(pages '^\[heap\]$' "$r")
		[ "${n:-0}" -ge 200 ] || fail "$be: sqlite3: $n heap pages: $(cat "$r")"
		note "$be: sqlite3: $(grep 'total (' "$r" | sed 's/^ *//')"
	fi

	if [ -n "$gzip" ]; then
		# 100 MiB that compress a little, made once.
		if [ ! -f "$scratch/big" ]; then
			i=0
			while [ $i -lt 100 ]; do
				echo "block $i"
				i=$((i + 1))
			done >"$scratch/seed"
			{ cat "$scratch/seed"; head -c 1048476 /dev/urandom; } >"$scratch/mib" 2>/dev/null
			: >"$scratch/big"
			i=0
			while [ $i -lt 100 ]; do
				cat "$scratch/mib" >>"$scratch/big"
				i=$((i + 1))
			done
			"$gzip" -c "$scratch/big" >"$scratch/big.gz.plain" || fail "gzip alone"
		fi
		"$audit" -o "$r" -- "$gzip" -c "$scratch/big" >"$scratch/big.gz.audit" ||
			fail "$be: gzip exited $?"
		cmp -s "$scratch/big.gz.plain" "$scratch/big.gz.audit" || fail "$be: gzip's output differs"
		# gzip works in fixed buffers: a few hundred pages, not 100 MiB.
		t=$(awk '/total \(/ { print $1 }' "$r")
		{ [ -n "$t" ] && [ "$t" -ge 20 ] && [ "$t" -le 5000 ]; } || fail "$be: gzip: $t pages: $(cat "$r")"
		grep -q 'ended by exit' "$r" || fail "$be: gzip: $(cat "$r")"
		note "$be: gzip: $(grep 'total (' "$r" | sed 's/^ *//')"
	fi
done
if [ -n "$unchecked" ]; then
	echo "audit.sh: SKIP: everything else passed; not checked:${unchecked#;}" >&2
	exit 77
fi
echo "audit.sh: ok"
exit 0

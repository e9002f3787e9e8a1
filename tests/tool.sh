#!/bin/sh
# tests/tool.sh - the ckpt command-line tool: commands, output, exit status.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The chain commands run on a real chain written by tests/mkchain: three
# snapshots of a 64-page anonymous region whose content is known (see
# tests/mkchain.c).  The chain holds the whole memory of that process, so
# every check about pages looks only inside the region.
top_builddir=${top_builddir:-.}
ckpt=$top_builddir/tools/ckpt
mkchain=$top_builddir/tests/mkchain
fail() {
	echo "tool.sh: FAIL: $*" >&2
	exit 1
}
[ -x "$ckpt" ] || fail "$ckpt not built"

out=$("$ckpt" version) || fail "version exited $?"
echo "$out" | grep -Eq '^ckpt [0-9]+\.[0-9]+\.[0-9]+ \(library [0-9.]+\)$' || fail "version: $out"
"$ckpt" --help | grep -q '^usage: ckpt COMMAND' || fail "--help"

out=$("$ckpt" errors -1001 22) || fail "errors exited $?"
echo "$out" | grep -q 'CKPT_ESTATE' || fail "errors -1001: $out"
echo "$out" | grep -q -- '-22  CKPT_EINVAL' || fail "errors 22: $out"
n=$("$ckpt" errors | wc -l)
[ "$n" -ge 20 ] || fail "errors lists $n codes"
"$ckpt" errors | grep -q 'unknown' && fail "a listed code has no text"

"$ckpt" frobnicate >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown command does not exit 2"
"$ckpt" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no command does not exit 2"
"$ckpt" errors nonsense >/dev/null 2>&1
[ $? -eq 2 ] || fail "a bad code does not exit 2"

# Every command is in the help and in the manual page.
for c in ls show diff extract verify compact help version errors; do
	"$ckpt" help | grep -q "^  $c " || fail "help does not list $c"
	if [ -n "$top_srcdir" ]; then
		grep -Eq "^\.BR? $c( |\$)" "$top_srcdir/tools/ckpt.1" ||
			fail "ckpt.1 does not document $c"
	fi
done

# ---- a real chain ------------------------------------------------------------------
[ -x "$mkchain" ] || fail "$mkchain not built"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-tool.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM
dir=$scratch/chain
addr=$("$mkchain" "$dir") || fail "mkchain exited $?"
echo "$addr" | grep -Eq '^0x[0-9a-f]+$' || fail "mkchain printed '$addr'"

# The page size of the chain, from the tool itself.
ps=$("$ckpt" show "$dir" 1 | awk '$1 == "page" && $2 == "size" { print $3 }')
{ [ -n "$ps" ] && [ "$ps" -ge 4096 ]; } || fail "show gives no page size"
# Decimal, for the comparisons of test(1); $addr stays as mkchain printed it.
region=$((addr))
region_end=$((region + 64 * ps))

# Usage errors exit 2 and say what was wrong.
for args in "ls" "ls $dir extra" "ls $dir --frob" "show $dir" "show $dir x1" "diff $dir 1" \
	"compact $dir --keep x" "extract $dir 1 $addr 4096" "verify $dir --json --json"; do
	# shellcheck disable=SC2086 # $args is split on purpose
	msg=$("$ckpt" $args 2>&1 >/dev/null)
	[ $? -eq 2 ] || fail "ckpt $args does not exit 2"
	echo "$msg" | grep -q "^ckpt " || fail "ckpt $args: no message: $msg"
done

# ls: one line per snapshot, 1 the base.
out=$("$ckpt" ls "$dir") || fail "ls exited $?"
kinds=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ { printf "%s %s;", $1, $3 }')
[ "$kinds" = "1 full;2 incr;3 incr;" ] || fail "ls: $out"
echo "$out" | head -n 1 | grep -q 'ID' || fail "ls has no header: $out"

out=$("$ckpt" ls --json "$dir") || fail "ls --json exited $?"
if command -v python3 >/dev/null 2>&1; then
	echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
ids = [(s["id"], s["type"]) for s in d["snapshots"]]
assert ids == [(1, "full"), (2, "incr"), (3, "incr")], ids
' || fail "ls --json: $out"
	"$ckpt" show "$dir" latest --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["id"] == 3 and d["parent"] == 2 and not d["base"], d
assert any(int(m["start"], 16) <= '"$addr"' < int(m["end"], 16) for m in d["mappings"])
' || fail "show --json"
	"$ckpt" verify --json "$dir" | python3 -c '
import json, sys
assert json.load(sys.stdin) == {"ok": True, "files": 3}
' || fail "verify --json"
else
	# Without python3 (scripts/setup.sh installs it), what grep can check.
	echo "tool.sh: python3 missing: the JSON output is checked with grep"
	for id in 1 2 3; do
		echo "$out" | grep -q "\"id\":$id," || fail "ls --json has no id $id: $out"
	done
	out=$("$ckpt" show "$dir" latest --json) || fail "show --json exited $?"
	echo "$out" | grep -q '^{"id":3,"parent":2,' || fail "show --json: $out"
	echo "$out" | grep -q '"base":false,' || fail "show --json: $out"
	out=$("$ckpt" verify --json "$dir") || fail "verify --json exited $?"
	[ "$out" = '{"ok":true,"files":3}' ] || fail "verify --json: $out"
fi

# show mentions the region, as a mapping and as a run snapshot 2 stores.
out=$("$ckpt" show "$dir" 2) || fail "show exited $?"
echo "$out" | grep -q "$addr-" || fail "show 2 does not list the region at $addr: $out"
echo "$out" | grep -q "^parent  *1\$" || fail "show 2: parent: $out"
echo "$out" | grep -q "^type  *incremental" || fail "show 2: type: $out"
echo "$out" | grep -q "^resumable  *no (not written with CKPT_F_RESUME)\$" ||
	fail "show 2: resumable: $out"
"$ckpt" show "$dir" 9 >/dev/null 2>&1
[ $? -eq 1 ] || fail "show of a missing snapshot does not exit 1"

out=$("$ckpt" verify "$dir") || fail "verify exited $?: $out"
[ "$out" = "$dir: 3 files, all sound" ] || fail "verify: $out"

# extract: page p of the region holds (p * 7 + i) & 0xff at byte i in 1.
is_pattern() { # FILE PAGE
	od -An -v -tu1 "$1" | awk -v p="$2" -v ps="$ps" '
		{ for (k = 1; k <= NF; k++) { if ($k != (p * 7 + i) % 256) exit 1; i++ } }
		END { if (i != ps) exit 1 }'
}
filled() { # CHAR FILE
	head -c "$ps" /dev/zero | tr '\000' "$1" >"$2"
}
filled A "$scratch/A"
filled C "$scratch/C"
outdir=$scratch/out
mkdir "$outdir"
"$ckpt" extract "$dir" 1 "$addr" "$ps" -o "$outdir/p0" || fail "extract of page 0 exited $?"
is_pattern "$outdir/p0" 0 || fail "extract: page 0 of 1 is not the pattern"
p3=$((addr + 3 * ps))
for id in 1 2 3 latest; do
	"$ckpt" extract "$dir" $id $p3 "$ps" -o "$outdir/p3.$id" || fail "extract of page 3 at $id"
done
is_pattern "$outdir/p3.1" 3 || fail "page 3 of 1 is not the pattern"
cmp -s "$outdir/p3.2" "$scratch/A" || fail "page 3 of 2 is not all A"
cmp -s "$outdir/p3.3" "$scratch/C" || fail "page 3 of 3 is not all C"
cmp -s "$outdir/p3.latest" "$scratch/C" || fail "page 3 of latest is not all C"
# Not page-aligned, and in decimal: the last byte of page 2 and the first of 3.
"$ckpt" extract "$dir" 2 $((p3 - 1)) 2 -o "$outdir/pair" || fail "unaligned extract"
[ "$(od -An -tu1 "$outdir/pair" | tr -s ' ')" = " $(((2 * 7 + ps - 1) % 256)) 65" ] ||
	fail "unaligned extract: $(od -An -tu1 "$outdir/pair")"

# A failed extract leaves no file, and an existing FILE as it was.
rm -f "$outdir"/*
"$ckpt" extract "$dir" 1 0x10 4096 -o "$outdir/bad" 2>/dev/null
rc=$?
[ $rc -eq 1 ] || fail "extract of 0x10 exited $rc"
[ -z "$(ls -A "$outdir")" ] || fail "a failed extract left $(ls -A "$outdir")"
echo old >"$outdir/keep"
"$ckpt" extract "$dir" 1 $((region_end - ps)) $((2 * ps)) -o "$outdir/keep" 2>/dev/null
rc=$?
[ $rc -eq 1 ] || fail "extract past the region exited $rc"
[ "$(cat "$outdir/keep")" = old ] || fail "a failed extract changed FILE"
[ "$(ls -A "$outdir")" = keep ] || fail "a failed extract left $(ls -A "$outdir")"
for len in 12x -1 0 0x 99999999999999999999999 " 1"; do
	"$ckpt" extract "$dir" 1 "$addr" "$len" -o "$outdir/bad" 2>/dev/null
	rc=$?
	[ $rc -eq 2 ] || fail "extract with LEN '$len' exited $rc"
done
"$ckpt" extract "$dir" 1 0xffffffffffffffff 2 -o "$outdir/bad" 2>/dev/null
[ $? -eq 2 ] || fail "extract past the address space does not exit 2"
[ "$(ls -A "$outdir")" = keep ] || fail "a refused extract left $(ls -A "$outdir")"

# diff: the pages of the region that differ, one per line ("3 40 ").
region_diff() { # A B
	"$ckpt" diff "$dir" "$1" "$2" >"$scratch/diff" || fail "diff $1 $2 exited $?"
	while read -r range _; do
		case $range in 0x*-0x*) ;; *) continue ;; esac
		s=$((${range%-*})) e=$((${range#*-}))
		[ $s -lt $region ] && s=$region
		[ $e -gt $region_end ] && e=$region_end
		while [ $s -lt $e ]; do
			printf '%d ' $(((s - region) / ps))
			s=$((s + ps))
		done
	done <"$scratch/diff"
}
got=$(region_diff 1 3)
[ "$got" = "3 40 " ] || fail "diff 1 3 in the region: '$got'; $(cat "$scratch/diff")"
got=$(region_diff 2 3)
[ "$got" = "3 " ] || fail "diff 2 3 in the region: '$got'; $(cat "$scratch/diff")"
tail -n 1 "$scratch/diff" | grep -Eq '^[0-9]+ runs?, [0-9]+ pages? differs? between 2 and 3$' ||
	fail "diff has no count line: $(cat "$scratch/diff")"
got=$(region_diff 3 latest)
[ -z "$got" ] || fail "diff 3 latest: '$got'"

# A damaged copy: verify names the file, exits 1; the original is untouched.
bad=$scratch/bad
cp -R "$dir" "$bad" || fail "cp -R"
f=$bad/snap-00000002.ckpt
mid=$(($(wc -c <"$f") / 2))
byte=$(od -An -tu1 -j $mid -N 1 "$f" | tr -d ' ')
if [ "$byte" = 90 ]; then new=Y; else new=Z; fi
printf '%s' $new | dd of="$f" bs=1 seek=$mid count=1 conv=notrunc 2>/dev/null || fail "dd"
msg=$("$ckpt" verify "$bad" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "verify of a damaged chain exited $rc: $msg"
echo "$msg" | grep -q 'snap-00000002\.ckpt' || fail "verify does not name the file: $msg"
"$ckpt" verify --json "$bad" | grep -q '^{"ok":false,"files":[0-9]*,"error":".*snap-00000002\.ckpt' ||
	fail "verify --json of a damaged chain: $("$ckpt" verify --json "$bad")"
"$ckpt" verify "$dir" >/dev/null || fail "the original chain is not sound any more"

# compact --keep 1: 2 becomes the base, memory as of 2 and 3 unchanged.
out=$("$ckpt" compact "$dir" --keep 1) || fail "compact exited $?"
echo "$out" | grep -q ': 1 snapshot folded' || fail "compact: $out"
out=$("$ckpt" ls "$dir") || fail "ls after compact exited $?"
kinds=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ { printf "%s %s;", $1, $3 }')
[ "$kinds" = "2 full;3 incr;" ] || fail "ls after compact: $out"
"$ckpt" verify "$dir" >/dev/null || fail "verify after compact"
"$ckpt" extract "$dir" 3 $p3 "$ps" -o "$scratch/p3.3" || fail "extract 3 after compact"
cmp -s "$scratch/p3.3" "$scratch/C" || fail "page 3 of 3 after compact is not all C"
"$ckpt" extract "$dir" 2 $p3 "$ps" -o "$scratch/p3.2" || fail "extract 2 after compact"
cmp -s "$scratch/p3.2" "$scratch/A" || fail "page 3 of 2 after compact is not all A"
"$ckpt" extract "$dir" 1 $p3 "$ps" -o "$scratch/p3.1" 2>/dev/null
[ $? -eq 1 ] || fail "extract of the folded snapshot 1 does not exit 1"
# mkchain does not record its process: the new base says why it cannot be
# resumed, and that it is a compacted base.
"$ckpt" show "$dir" 2 | grep -q '^resumable  *no (a base made by ckpt compact' ||
	fail "show of the compacted base: $("$ckpt" show "$dir" 2)"
msg=$("$ckpt" resume "$dir" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "resume of a chain without a process record exited $rc: $msg"
echo "$msg" | grep -q 'snap-00000003\.ckpt was written without CKPT_F_RESUME' ||
	fail "resume of a chain without a process record: $msg"
out=$("$ckpt" compact "$dir" --keep=1) || fail "a second compact exited $?"
echo "$out" | grep -q 'nothing to fold' || fail "a second compact: $out"
"$ckpt" compact "$dir" >/dev/null || fail "compact --keep 0 exited $?"
msg=$("$ckpt" resume "$dir" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "resume of a compacted chain without a process record exited $rc: $msg"
echo "$msg" | grep -q 'snap-00000003\.ckpt, a base made by ckpt compact, holds no process record' ||
	fail "resume of a compacted chain without a process record: $msg"

# A block larger than a reader's one-block buffer (tests/corrupt/oversized,
# made by tests/gen-corrupt): every command refuses the chain, names the file
# and the block, exits 1, and changes nothing.
if [ -n "$top_srcdir" ]; then
	over=$scratch/oversized
	mkdir -m 700 "$over" || fail "mkdir"
	cp "$top_srcdir"/tests/corrupt/oversized/snap-*.ckpt "$over/" || fail "cp oversized"
	chmod 600 "$over"/snap-*.ckpt
	sum=$(cat "$over"/snap-*.ckpt | cksum)
	for args in "ls $over" "show $over 1" "extract $over 1 0x7f0000000000 4096 -o $scratch/o" \
		"diff $over 1 2" "verify $over" "compact $over --keep 0"; do
		# shellcheck disable=SC2086 # $args is split on purpose
		msg=$("$ckpt" $args 2>&1 >/dev/null)
		rc=$?
		[ $rc -eq 1 ] || fail "ckpt $args on an oversized block exited $rc: $msg"
		echo "$msg" | grep -q 'snap-00000001\.ckpt: block 0: 327680 bytes stored' ||
			fail "ckpt $args on an oversized block says: $msg"
	done
	[ ! -e "$scratch/o" ] || fail "extract from an oversized block wrote its file"
	[ "$(cat "$over"/snap-*.ckpt | cksum)" = "$sum" ] || fail "the oversized chain was changed"
	[ "$(ls "$over" | grep -c '^snap-')" -eq 2 ] || fail "the oversized chain: $(ls "$over")"
fi

# An empty directory is an empty chain.
mkdir -m 700 "$scratch/empty"
out=$("$ckpt" ls "$scratch/empty") || fail "ls of an empty chain exited $?"
echo "$out" | grep -q 'no snapshots' || fail "ls of an empty chain: $out"
"$ckpt" show "$scratch/empty" latest >/dev/null 2>&1
[ $? -eq 1 ] || fail "show latest of an empty chain does not exit 1"
"$ckpt" ls "$scratch/none" >/dev/null 2>&1
[ $? -eq 1 ] || fail "ls of a missing directory does not exit 1"

# ---- what a chain directory must be ---------------------------------------------
# Every command that reads or writes a chain (ckpt resume through
# ckpt_chain_open, and the program it starts through ckpt_open) refuses a
# directory another user could write into, and files named like snapshots
# that are not regular files of that directory; names that are not exactly
# the writer's are not snapshots at all.
t=$scratch/trust
taddr=$("$mkchain" "$t") || fail "mkchain $t exited $?"
# refused WHAT DIR PATTERN: every chain command exits 1 on DIR, within 20 s,
# with a message matching PATTERN.
refused() {
	what=$1 d=$2 pat=$3
	for args in "ls $d" "show $d latest" "diff $d 1 latest" \
		"extract $d latest $taddr $ps -o $scratch/x" "verify $d" "compact $d" "resume $d"; do
		# shellcheck disable=SC2086 # $args is split on purpose
		msg=$(timeout 20 "$ckpt" $args 2>&1 >/dev/null)
		rc=$?
		[ $rc -eq 124 ] && fail "$what: ckpt $args hangs"
		[ $rc -eq 1 ] || fail "$what: ckpt $args exited $rc: $msg"
		echo "$msg" | grep -q -- "$pat" || fail "$what: ckpt $args says: $msg"
	done
	[ -e "$scratch/x" ] && fail "$what: extract wrote a file"
	return 0
}
# copy NAME: a copy of the chain, as mkchain made it.
copy() {
	cp -Rp "$t" "$scratch/$1" || fail "cp -Rp $t $scratch/$1"
	echo "$scratch/$1"
}

ln -s trust "$scratch/link"
refused "a symbolic link to the directory" "$scratch/link" "link.*symbolic link"
refused "the same with a trailing slash" "$scratch/link/" "link.*symbolic link"
d=$(copy world)
chmod 0777 "$d"
refused "a world-writable directory" "$d" "world.*writable by others"
chmod 01777 "$d"
refused "a world-writable directory with the sticky bit" "$d" "world.*writable by others"
d=$(copy group)
chmod 0770 "$d"
refused "a group-writable directory" "$d" "group.*writable by its group"
d=$(copy fifo)
mkfifo "$d/snap-00000004.ckpt" || fail "mkfifo"
refused "a FIFO named like a snapshot" "$d" "snap-00000004\.ckpt: not a regular file"
d=$(copy slink)
mv "$d/snap-00000003.ckpt" "$scratch/elsewhere.ckpt"
ln -s ../elsewhere.ckpt "$d/snap-00000003.ckpt"
refused "a snapshot that is a symbolic link" "$d" "snap-00000003\.ckpt: a symbolic link"
d=$(copy gfile)
chmod 0660 "$d/snap-00000002.ckpt"
refused "a snapshot writable by its group" "$d" "snap-00000002\.ckpt: writable by its group"
if [ "$(id -u)" -eq 0 ]; then
	d=$(copy owner)
	chown 65534 "$d"
	refused "a directory of another user" "$d" "owner.*owned by uid 65534"
	d=$(copy fowner)
	chown 65534 "$d/snap-00000001.ckpt"
	refused "a snapshot of another user" "$d" "snap-00000001\.ckpt: owned by uid 65534"
else
	echo "tool.sh: not root: no file of another user to test with; the ownership checks" \
		"are left to a run as root"
fi

# Names that are not exactly snap-NNNNNNNN.ckpt are not snapshots: every
# command works as if they were not there.
d=$(copy stray)
for n in snap-00000003.ckpt.orig snap-00000007.ckpt.orig snap-7.ckpt snap-000000007.ckpt \
	snap-00000007.ckpt~ snap-00000007.ckptx snap-0000000x.ckpt snap-+0000007.ckpt \
	snap-00000000.ckpt .snap-00000007.ckpt; do
	cp -p "$d/snap-00000003.ckpt" "$d/$n"
done
out=$(timeout 20 "$ckpt" ls "$d") || fail "ls with stray files exited $?: $out"
kinds=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ { printf "%s %s;", $1, $3 }')
[ "$kinds" = "1 full;2 incr;3 incr;" ] || fail "ls with stray files: $out"
out=$(timeout 20 "$ckpt" verify "$d") || fail "verify with stray files exited $?: $out"
[ "$out" = "$d: 3 files, all sound" ] || fail "verify with stray files: $out"
timeout 20 "$ckpt" diff "$d" 1 3 >/dev/null || fail "diff with stray files exited $?"
timeout 20 "$ckpt" compact "$d" >/dev/null || fail "compact with stray files exited $?"
[ "$(ls "$d" | grep -c '^snap-00000003\.ckpt\.orig$')" -eq 1 ] || fail "compact removed a stray file"
out=$(timeout 20 "$ckpt" ls "$d") || fail "ls after compact with stray files exited $?: $out"
kinds=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ { printf "%s %s;", $1, $3 }')
[ "$kinds" = "3 full;" ] || fail "ls after compact with stray files: $out"

echo "tool.sh: ok"
exit 0

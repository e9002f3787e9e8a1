#!/bin/sh
# tests/symbols.sh - libckpt exports only its API and deliberate interposers.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Every dynamic symbol libckpt.so defines must be public API (ckpt_*) or a
# function that libc also exports (an interposer).  Internal ckpt__ names and
# anything else are a visibility leak.

top_builddir=${top_builddir:-.}
lib=$top_builddir/.libs/libckpt.so
libc=$(ldd "$lib" | awk '/libc\.so/ {print $3}')

fail() {
	echo "symbols.sh: FAIL: $*" >&2
	exit 1
}

[ -f "$lib" ] || fail "$lib not built"
[ -f "$libc" ] || fail "cannot find the libc libckpt links against"
command -v nm >/dev/null || fail "nm is needed (binutils)"

tmp=${TMPDIR:-/tmp}/ckpt-symbols.$$
trap 'rm -f "$tmp".*' EXIT
nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//' | sort -u >"$tmp.ours"
nm -D --defined-only "$libc" | awk '{print $NF}' | sed 's/@.*//' | sort -u >"$tmp.libc"

grep -v '^ckpt_' "$tmp.ours" | comm -23 - "$tmp.libc" >"$tmp.stray"
if [ -s "$tmp.stray" ]; then
	echo "exported but neither ckpt_* API nor a libc interposer:" >&2
	cat "$tmp.stray" >&2
	fail "symbol leak"
fi
if grep -q '^ckpt__' "$tmp.ours"; then
	grep '^ckpt__' "$tmp.ours" >&2
	fail "internal ckpt__ symbols exported"
fi
for api in ckpt_open ckpt_begin ckpt_dirty_foreach ckpt_dirty_count ckpt_exclude ckpt_end \
	ckpt_close ckpt_stats ckpt_strerror ckpt_commit ckpt_wait ckpt_restore; do
	grep -qx "$api" "$tmp.ours" || fail "$api is not exported"
done
n=$(grep -c '^ckpt_' "$tmp.ours")
m=$(grep -vc '^ckpt_' "$tmp.ours")
echo "symbols.sh: $n API symbols and $m libc interposers exported, nothing else"
exit 0

#!/bin/sh
# tests/install.sh - make install, then build the demo against the installed
# header, library and ckpt.pc as a user would, shared and static, and run it.
# SPDX-License-Identifier: GPL-2.0-or-later
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-..}
fail() {
	echo "install.sh: FAIL: $*" >&2
	exit 1
}
dest=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-install.XXXXXX") || fail "mktemp"
trap 'rm -rf "$dest"' EXIT

make -s -C "$top_builddir" install DESTDIR="$dest" >"$dest/install.log" 2>&1 ||
	{ cat "$dest/install.log"; fail "make install"; }
prefix=$(sed -n 's/^prefix=//p' "$top_builddir/ckpt.pc")
root=$dest$prefix
for f in include/ckpt.h lib/libckpt.so lib/libckpt.a lib/pkgconfig/ckpt.pc bin/ckpt \
	share/man/man1/ckpt.1 bin/ckpt-audit lib/ckpt/libckpt-audit.so share/man/man1/ckpt-audit.1; do
	[ -e "$root/$f" ] || fail "$prefix/$f not installed"
done

pc="pkg-config --define-variable=prefix=$root"
export PKG_CONFIG_PATH="$root/lib/pkgconfig"
cflags=$($pc --cflags ckpt) || fail "pkg-config --cflags ckpt"
libs=$($pc --libs ckpt) || fail "pkg-config --libs ckpt"
san=
ldd "$root/lib/libckpt.so" | grep -q libasan && san="-fsanitize=address,undefined"
demo=$top_srcdir/samples/audit_demo.c

# shellcheck disable=SC2086
cc $san $cflags -o "$dest/demo-shared" "$demo" $libs || fail "building against libckpt.so"
LD_LIBRARY_PATH=$root/lib "$dest/demo-shared" | tail -1 | grep -q '^audit_demo: OK' ||
	fail "the demo built against the installed libckpt.so failed"

if [ -z "$san" ]; then
	# libckpt.a linked into the program: its state lives in the
	# executable, and must still be kept out of tracking.
	static_libs=$($pc --static --libs-only-l --libs-only-other ckpt | sed 's/-lckpt//')
	# shellcheck disable=SC2086
	cc $cflags -o "$dest/demo-static" "$demo" "$root/lib/libckpt.a" $static_libs ||
		fail "building against libckpt.a"
	"$dest/demo-static" | tail -1 | grep -q '^audit_demo: OK' ||
		fail "the demo built against the installed libckpt.a failed"
fi
# The installed ckpt-audit finds its library in ../lib/ckpt from its own
# directory (pkglibdir under the prefix), with no help from the environment.
out=$(env -u CKPT_AUDIT_PRELOAD "$root/bin/ckpt-audit" -- /bin/sh -c 'echo hello' 2>"$dest/audit.txt") ||
	fail "the installed ckpt-audit exited $?: $(cat "$dest/audit.txt")"
[ "$out" = hello ] || fail "the installed ckpt-audit: output '$out'"
grep -q 'total (' "$dest/audit.txt" || fail "the installed ckpt-audit: $(cat "$dest/audit.txt")"
echo "install.sh: installed, and the demo builds and runs against it"
exit 0

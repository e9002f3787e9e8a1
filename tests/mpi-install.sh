#!/bin/sh
# tests/mpi-install.sh - libckpt-mpi as a user gets it: make install, then
# samples/heat-mpi.c built against the installed ckpt-mpi.h, libckpt-mpi
# and ckpt-mpi.pc with the plain C compiler (the MPI flags come from the
# .pc file), and run; and the library exports its API and nothing else.
# SPDX-License-Identifier: GPL-2.0-or-later
name=mpi-install.sh
. "${top_srcdir:-$(dirname "$0")/..}/tests/mpi-lib.sh"
top_srcdir=${top_srcdir:-$build/..}

lib=$build/.libs/libckpt-mpi.so
[ -f "$lib" ] || fail "$lib not built"
nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//' | sort -u >"$scratch/syms"
grep -v '^ckpt_mpi_' "$scratch/syms" >"$scratch/stray"
[ -s "$scratch/stray" ] && fail "libckpt-mpi exports more than ckpt_mpi_*: $(cat "$scratch/stray")"
for f in ckpt_mpi_open ckpt_mpi_commit ckpt_mpi_wait ckpt_mpi_epoch ckpt_mpi_close \
	ckpt_mpi_last_error; do
	grep -qx $f "$scratch/syms" || fail "libckpt-mpi does not export $f"
done
say "libckpt-mpi exports $(wc -l <"$scratch/syms") ckpt_mpi_* functions and nothing else"

dest=$scratch/dest
make -s -C "$build" install DESTDIR="$dest" >"$scratch/install.log" 2>&1 ||
	{ cat "$scratch/install.log"; fail "make install"; }
prefix=$(sed -n 's/^prefix=//p' "$build/ckpt-mpi.pc")
root=$dest$prefix
for f in include/ckpt-mpi.h lib/libckpt-mpi.so lib/pkgconfig/ckpt-mpi.pc; do
	[ -e "$root/$f" ] || fail "$prefix/$f not installed"
done
# The installed .pc files, moved to where DESTDIR put them (not with
# --define-variable, which would move MPI's own ompi-c.pc as well).
mkdir "$scratch/pc"
for f in ckpt ckpt-mpi; do
	sed "s|^prefix=.*|prefix=$root|" "$root/lib/pkgconfig/$f.pc" >"$scratch/pc/$f.pc"
done
pc=pkg-config
export PKG_CONFIG_PATH="$scratch/pc"
cflags=$($pc --cflags ckpt-mpi) || fail "pkg-config --cflags ckpt-mpi"
libs=$($pc --libs ckpt-mpi) || fail "pkg-config --libs ckpt-mpi"
# A sanitizer build's library needs its runtime first in the program.
san=
ldd "$root/lib/libckpt-mpi.so" | grep -q libasan && san="-fsanitize=address,undefined"
# shellcheck disable=SC2086
cc $san $cflags -o "$scratch/heat-mpi" "$top_srcdir/samples/heat-mpi.c" $libs ||
	fail "building heat-mpi.c against the installed libckpt-mpi ($cflags $libs)"
ref=$(heat_ref 96 30)
out=$(LD_LIBRARY_PATH=$root/lib mpi_run 2 "$scratch/heat-mpi" -q -n 96 -s 30 -k 10 \
	-d "$scratch/job" 2>&1) || fail "the installed heat-mpi exited $?: $out"
[ "$out" = "checksum $ref" ] || fail "the installed heat-mpi ends with '$out', not $ref"
LD_LIBRARY_PATH=$root/lib ldd "$scratch/heat-mpi" | grep -q "$root/lib/libckpt-mpi" ||
	fail "heat-mpi did not use the installed library: $(LD_LIBRARY_PATH=$root/lib ldd "$scratch/heat-mpi")"
say "installed; heat-mpi.c builds with cc and pkg-config ckpt-mpi, and runs"
exit 0

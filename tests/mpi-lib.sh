# tests/mpi-lib.sh - sourced by the MPI tests (tests/mpi-*.sh): where the
# programs are, the skip when configure found no MPI, and the one place
# that says how a job is launched.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Before sourcing, a test sets `name` (its name, for messages).  Afterwards
# it has: $build, $heat (samples/heat-mpi), $heat1 (samples/heat, one
# process), $ckpt (the tool), $scratch (a private folder removed at exit),
# fail, say, skip, mpi_run NP ARGS..., heat_ref N STEPS, backends.

top_builddir=${top_builddir:-.}
fail() {
	echo "$name: FAIL: $*" >&2
	exit 1
}
say() {
	echo "$name: $*"
}
skip() {
	echo "$name: SKIP: $*"
	exit 77
}

build=$(cd "$top_builddir" && pwd) || fail "no build directory $top_builddir"
heat=$build/samples/heat-mpi
heat1=$build/samples/heat
ckpt=$build/tools/ckpt
[ -x "$heat" ] || skip "libckpt-mpi and samples/heat-mpi are not built: configure found no MPI" \
	"or was given --without-mpi (install libopenmpi-dev and openmpi-bin, then configure again)"
MPIRUN=${MPIRUN:-$(command -v mpirun)}
[ -n "$MPIRUN" ] && [ -x "$MPIRUN" ] || skip "MPI is built but configure found no mpirun to launch jobs"
if ldd "$build/samples/.libs/heat-mpi" "$heat" 2>/dev/null | grep -q libasan; then
	# A sanitizer build: OpenMPI keeps what MPI_Init allocated past
	# MPI_Finalize, which LeakSanitizer would report as leaks of every
	# rank; tests/mpi-lsan.supp leaves those out and nothing else.
	srcdir_=${top_srcdir:-$(dirname "$0")/..}
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
	LSAN_OPTIONS="suppressions=$(cd "$srcdir_" && pwd)/tests/mpi-lsan.supp:print_suppressions=0"
	LSAN_OPTIONS="$LSAN_OPTIONS:fast_unwind_on_malloc=0"
	export ASAN_OPTIONS LSAN_OPTIONS
fi

# How every job is launched, and why:
#   --allow-run-as-root   OpenMPI refuses root without it (containers, CI)
#   --oversubscribe       4 ranks on a machine with fewer cores
#   --mca btl self,vader  one machine: the shared-memory transport alone,
#                         no probing of network interfaces
#   --mca btl_vader_single_copy_mechanism none
#                         no cross-memory attach (process_vm_readv), which
#                         containers without ptrace permission refuse, and
#                         which writes into the receiver's memory from the
#                         kernel (tracked memory under the mprotect back-end
#                         would fail it with EFAULT)
# The environment (CKPT_BACKEND, HEAT_KILL, HEAT_FAULT) reaches the ranks
# on one machine as it is: mpirun's local ranks inherit it.
MPI_FLAGS="--allow-run-as-root --oversubscribe --mca btl self,vader
--mca btl_vader_single_copy_mechanism none"

# mpi_run NP ARGS...: a job of NP ranks, bounded in time so that a hang
# fails the test instead of stalling make check.
mpi_run() {
	np=$1
	shift
	# shellcheck disable=SC2086
	timeout 120 "$MPIRUN" $MPI_FLAGS -np "$np" "$@"
}

# heat_ref N STEPS: the checksum samples/heat (one process, no ckpt)
# prints; heat-mpi's must be the same, whatever the ranks.
heat_ref() {
	"$heat1" -0 -q -n "$1" -s "$2" | sed -n 's/^checksum //p'
}

# The back-ends this kernel can run, each once (tests/backend-probe); a
# test fails if none can.
backends() {
	[ -x "$build/tests/backend-probe" ] || fail "tests/backend-probe is not built (make check builds it)"
	any=
	for b in mprotect uffd; do
		if why=$("$build/tests/backend-probe" "$b" 2>&1); then
			echo "$b"
			any=1
		else
			echo "$name: the $b back-end is not possible here: $why" >&2
		fi
	done
	[ -n "$any" ] || fail "no back-end can run here"
}

# A random number in [lo, hi], from /dev/urandom, for kill moments.
random_in() {
	r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
	echo $(($1 + r % ($2 - $1 + 1)))
}

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-$name.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM

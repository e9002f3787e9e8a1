#!/bin/sh
# bench/audit.sh - the cost of ckpt-audit on real programs: wall time of a
# plain run against a run under ckpt-audit, best of 3, on each back-end.
# SPDX-License-Identifier: GPL-2.0-or-later
#
#     bench/audit.sh [--quick]        (run by `make bench`; top_builddir=.)
#
# The programs: python3 building and hashing a dictionary, sqlite3 running
# a script (100k rows inserted and indexed), gzip -c of a 100 MiB file.
# --quick (or CKPT_BENCH_QUICK=1) runs each once with a 10 MiB file, for CI.
top_builddir=${top_builddir:-.}
audit=$top_builddir/tools/ckpt-audit
probe=$top_builddir/tests/backend-probe
quick=${CKPT_BENCH_QUICK:-0}
[ "$1" = --quick ] && quick=1
reps=3
mib=100
if [ "$quick" = 1 ]; then
	reps=1
	mib=10
fi
[ -x "$audit" ] || {
	echo "bench/audit.sh: $audit not built" >&2
	exit 1
}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-audit-bench.XXXXXX") || exit 1
trap 'rm -rf "$scratch"' EXIT
trap 'exit 1' HUP INT TERM

now() {
	date +%s.%N
}
# best CMD...: the best wall time of $reps runs, in seconds; stdout and
# stderr of the runs are discarded.
best() {
	b=
	i=0
	while [ $i -lt $reps ]; do
		t0=$(now)
		"$@" >/dev/null 2>&1 <"${stdin:-/dev/null}" || {
			echo "bench/audit.sh: failed: $*" >&2
			exit 1
		}
		t1=$(now)
		b=$(echo "$t0 $t1 ${b:-999999}" | awk '{ d = $2 - $1; print (d < $3 ? d : $3) }')
		i=$((i + 1))
	done
	echo "$b"
}

python=/usr/bin/python3
sqlite=$(command -v sqlite3)
gzip=$(command -v gzip)
head -c $((mib * 1048576)) /dev/urandom >"$scratch/big"
cat >"$scratch/sql" <<'EOF'
drop table if exists t;
create table t(a integer primary key, b text);
with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000)
insert into t select x, printf('%08x', (x * 2654435761) % 4294967296) from c;
create index tb on t(b);
select count(*), sum(a), max(b) from t where b > '8';
EOF
pycode='import hashlib, json
d = {str(i): [i] * 50 for i in range(50000)}
print(len(json.dumps(d)), hashlib.sha256(json.dumps(d).encode()).hexdigest())'

backends=
for b in mprotect uffd; do
	"$probe" "$b" >/dev/null 2>&1 && backends="$backends $b"
done

printf 'ckpt-audit overhead: wall time, best of %d (default interval, 100 ms)\n' "$reps"
printf '%-28s %10s' program "plain s"
for be in $backends; do printf ' %10s %7s' "$be s" ratio; done
printf '\n'
run_one() { # LABEL CMD...
	label=$1
	shift
	plain=$(best "$@")
	printf '%-28s %10.3f' "$label" "$plain"
	for be in $backends; do
		t=$(CKPT_BACKEND=$be best "$audit" -o /dev/null -- "$@")
		printf ' %10.3f %7.2f' "$t" "$(echo "$t $plain" | awk '{ print $1 / $2 }')"
	done
	printf '\n'
}
if [ -x "$python" ]; then
	run_one "python3 -c (dict, json)" "$python" -c "$pycode"
fi
if [ -n "$sqlite" ]; then
	# The script drops and creates its table: each run does the same work.
	stdin=$scratch/sql
	run_one "sqlite3 script (100k rows)" "$sqlite" "$scratch/db"
	stdin=
fi
if [ -n "$gzip" ]; then
	run_one "gzip -c ${mib} MiB" "$gzip" -c "$scratch/big"
fi

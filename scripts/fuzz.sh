#!/bin/sh
# scripts/fuzz.sh [SECONDS] - builds the libFuzzer target over the snapshot
# reader with clang (ASan + UBSan) and runs it for SECONDS (default 60) from
# the golden files of tests/corrupt/.  Exit status 0 when no crash was found.
# SPDX-License-Identifier: GPL-2.0-or-later
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
out=build-fuzz
mkdir -p "$out"
command -v clang >/dev/null || { echo "fuzz: clang is needed (apt-get install clang)" >&2; exit 1; }
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -D_GNU_SOURCE -std=gnu11 \
	-Iinclude -Isrc fuzz/fuzz-snapshot.c src/snap-read.c src/dir.c src/xxhash.c src/zmem.c src/mem.c src/own-thread.c \
	src/error.c -lzstd -o "$out/fuzz-snapshot"
corpus=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-fuzz.XXXXXX")
trap 'rm -rf "$corpus"' EXIT
# Every golden file, the chains' ones too (good/snap-00000001.ckpt becomes
# good-snap-00000001.ckpt: the names in the chains repeat).
find tests/corrupt -name '*.ckpt' | while read -r f; do
	rel=${f#tests/corrupt/}
	cp "$f" "$corpus/$(echo "$rel" | tr / -)"
done
# Inputs up to 1.25 MiB: a block can then claim more than a reader's buffer
# for 4 KiB and 16 KiB pages (256 KiB and 1 MiB), as tests/corrupt/oversized
# does.  Without -len_control=0 libFuzzer starts from short inputs and cuts
# the large golden files down when it mutates them, losing their blocks.
# A crashing input is kept as $out/crash-*.
status=0
"$out/fuzz-snapshot" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	-max_len=1310720 -len_control=0 -artifact_prefix="$out/" -print_final_stats=1 "$corpus" >"$out/fuzz.log" 2>&1 ||
	status=$?
tail -8 "$out/fuzz.log"
[ "$status" -eq 0 ] || { echo "fuzz: the target failed (exit $status): see $out/fuzz.log" >&2; exit 1; }
echo "fuzz: $secs s, no crash"

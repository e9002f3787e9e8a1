#!/bin/sh
# scripts/setup.sh - installs what ckpt needs on Debian 12 (with apt-get, as
# root or through sudo), then configures and builds it in build/.
# SPDX-License-Identifier: GPL-2.0-or-later
set -eu
cd "$(dirname "$0")/.."

pkgs="build-essential autoconf automake libtool libtool-bin pkg-config binutils
libsigsegv-dev libzstd-dev libcriterion-dev zstd clang python3
librsvg2-bin sqlite3 gzip libopenmpi-dev openmpi-bin"
# shellcheck disable=SC2086
if ! dpkg -s $pkgs >/dev/null 2>&1; then
	sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	echo "setup: installing $(echo $pkgs | tr '\n' ' ')"
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $pkgs
fi

[ -x configure ] || autoreconf -fi
mkdir -p build
cd build
[ -f Makefile ] || ../configure --enable-werror
make -j"$(nproc)"

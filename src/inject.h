/*
 * inject.h - fault injection for the snapshot writer's I/O, the capture
 * and a restore's mappings.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * CKPT_FAULT="op:N[=ERRNO],..." makes the Nth call of kind op fail with ERRNO
 * (default EIO); op is write, fsync, rename or open (the snapshot writer;
 * open also counts a resume's reopening of the program's files, then its
 * making of each of the program's pipes), map (a
 * mapping a restore recreates), or sync (a capture reading the back-end's
 * record of the pages written in one region: uffd's PAGEMAP_SCAN walk; the
 * mprotect back-end keeps no such record, its faults mark the bitmap), or
 * swaps (a capture asking whether a swap device came or went while it told
 * userfaultfd's markers from pages with mincore: the Nth asking answers
 * yes, whatever ERRNO, and the capture scans again; see capture.c), or
 * uffd (the userfaultfd a lazy resume needs, CKPT_F_LAZY: the resume then
 * fills the memory before the program goes on, as where none can be had).
 * ERRNO may also be SIGKILL: the process then kills itself at that call,
 * as if killed from outside at that instant.
 * Calls are counted from 1 since the variable took its current value.
 * Tests use it to prove a failed commit leaves the chain intact and loses
 * nothing, and a failed restore or resume the process.
 */
#ifndef CKPT_INJECT_H
#define CKPT_INJECT_H

#include "sys.h"

enum {
	CKPT__IO_WRITE,
	CKPT__IO_FSYNC,
	CKPT__IO_RENAME,
	CKPT__IO_OPEN,
	CKPT__IO_MAP,
	CKPT__IO_SYNC,
	CKPT__IO_SWAPS,
	CKPT__IO_UFFD,
	CKPT__IO_KINDS
};

/* 0 to go ahead, or the errno value the call must fail with. */
CKPT__HIDDEN int ckpt__inject(int kind);

#endif /* CKPT_INJECT_H */

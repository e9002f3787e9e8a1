/*
 * state.h - libckpt's mutable global state, in one page-aligned block.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The tracker leaves ckpt's own memory out of tracking and out of
 * snapshots.  Most of it is anonymous mappings (mem.c); the few statics that
 * point at them live here, in a block that owns its pages whether libckpt is
 * a shared object or linked into the executable, so that excluding it never
 * excludes a neighbour's data.  The fault handler only reads this block.
 */
#ifndef CKPT_STATE_H
#define CKPT_STATE_H

#include "bitmap.h"
#include "mem.h"

struct ckpt__tracker;
struct ckpt__thread;

struct ckpt__state {
	/* mem.c */
	ckpt__spin own_lock;
	void *own;
	size_t own_n, own_cap;
	char *pool;            /* one mapping for most of ckpt's memory */
	uint64_t *pool_used;   /* one bit per pool page */
	size_t pool_pages;
	/* bitmap.c: the dirty bitmap */
	struct ckpt__bmap dirty;
	/* track.c */
	struct ckpt__tracker *tracker;
	/* shadow.c */
	void *shadow;
	/* track-mprotect.c */
	void *mp;
	/* thread.c */
	void *thread_chunks;
	struct ckpt__thread *main_thread;
	/* ckpt.c: the handle opened with CKPT_F_RESUME, here so that it has
	 * the same address in a resumed process and is never restored. */
	int resume_slot_used;
	_Alignas(64) unsigned char resume_slot[2048];
};

union ckpt__state_page {
	struct ckpt__state s;
	char pad[(sizeof(struct ckpt__state) + 4095) / 4096 * 4096];
};

extern CKPT__HIDDEN union ckpt__state_page ckpt__state_page;
#define ckpt__g (ckpt__state_page.s)

#endif /* CKPT_STATE_H */

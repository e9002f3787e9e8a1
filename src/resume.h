/*
 * resume.h - continuing a killed process from the newest snapshot of its
 * chain (CKPT_F_RESUME), and what a resumable commit records for it.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_RESUME_H
#define CKPT_RESUME_H

#include "commit.h"
#include "proc.h"

/* Saves the calling context into ctx and returns 0; returns again, with 1,
 * in a resumed process (ckpt__ctx_jump).  Like setjmp: only values that
 * did not change between the two returns may be used after the second. */
CKPT__HIDDEN int ckpt__ctx_save(struct ckpt__pctx *ctx) __attribute__((returns_twice));

/* Makes sure address space randomisation is off for this process: if it is
 * on, turns it off and executes the program again with the same arguments
 * and environment (this call does not return then).  0, or CKPT_ENOTSUP
 * when it cannot be turned off. */
CKPT__HIDDEN int ckpt__resume_norandom(void);

/* The record of a resumable commit to w's chain, called from the frame
 * whose context ctx holds: CTX, the stack from ctx->rsp up, and
 * ckpt__proc_gather's, leaving out w's descriptors and every file of its
 * directory. */
CKPT__HIDDEN int ckpt__resume_record(struct ckpt__pbuf *b, struct ckpt__pctx *ctx,
				     const struct ckpt__chainw *w);
/* The record of a commit no program thread made (ckpt run: a thread of
 * ckpt's own, every program thread stopped and recorded by
 * ckpt__threads_record): a CTX entry with CKPT__PC_NOSELF, the handle's
 * address and the main thread's thread pointer, no STACK entry; the rest as
 * ckpt__resume_record. */
CKPT__HIDDEN int ckpt__resume_record_detached(struct ckpt__pbuf *b, uintptr_t handle,
					      uintptr_t main_fs, const struct ckpt__chainw *w);

struct ckpt__resume;

/* Reads and checks what resuming the newest sound snapshot of w's chain
 * needs (w opened on a directory that holds a chain, nothing read yet):
 * the snapshot must have a process record, one thread, this executable
 * and these libraries at the same addresses, the same layout (stack, TLS,
 * heap), and every file it had open must still be there.  handle: the
 * address the program's ckpt_t will have.  `skip`: snapshots above the
 * newest sound one already found damaged.  On success w is ready to go on
 * from that snapshot.  0 or CKPT_E* with ckpt_last_error saying what
 * differs. */
/* ckpt run, before ckpt_open resumes the chain in dir: dlopen()s the
 * objects the newest snapshot's record lists (LIB entries, in order) that
 * this process has not loaded, so that the resume's checks of the loaded
 * objects can pass.  Does nothing where there is no chain; failures are
 * left to those checks to report. */
CKPT__HIDDEN void ckpt__resume_load_libs(const char *dir);
CKPT__HIDDEN int ckpt__resume_load(struct ckpt__chainw *w, const char *dir, uintptr_t handle,
				   unsigned skip, struct ckpt__resume **out);
CKPT__HIDDEN uint64_t ckpt__resume_id(const struct ckpt__resume *r);
struct ckpt__rset;
/* Adds the handle's ckpt_exclude ranges at the commit to `out`: 0 or
 * CKPT_ENOMEM. */
CKPT__HIDDEN int ckpt__resume_excluded(const struct ckpt__resume *r, struct ckpt__rset *out);
/* Adds to out the memory the resume mapped for the snapshot's (fresh:
 * removed again if the resume is given up).  0 or CKPT_ENOMEM. */
CKPT__HIDDEN int ckpt__resume_fresh(const struct ckpt__resume *r, struct ckpt__rset *out);
/* The steps before memory changes (descriptors, directory, umask, signal
 * dispositions, read-only mappings, damaged snapshots set aside); for
 * ckpt__restore_ex's `before`. */
CKPT__HIDDEN int ckpt__resume_before(void *r);
/* The last steps, on a stack of ckpt's own: the program's stack, its thread
 * descriptor, the signal mask, then the registers: returns from the commit
 * that wrote the snapshot, with CKPT_RESUMED.  Memory must be restored. */
CKPT__HIDDEN void ckpt__resume_finish(struct ckpt__resume *r) __attribute__((noreturn));
CKPT__HIDDEN void ckpt__resume_free(struct ckpt__resume *r);
/* Whether ckpt__resume_before has begun changing the process: past that a
 * failure cannot be returned to the program. */
CKPT__HIDDEN int ckpt__resume_started(const struct ckpt__resume *r);

/* The id the resumed ckpt_commit reports (set before the jump). */
extern CKPT__HIDDEN uint64_t ckpt__resumed_id;

#endif /* CKPT_RESUME_H */

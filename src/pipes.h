/*
 * pipes.h - the program's own pipes: recorded with their content at a
 * resumable commit, made again at a resume.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A pipe both of whose ends the process holds (a self-pipe, a pipe between
 * two of its threads), or one end with the other closed everywhere, is the
 * process's alone and can be recreated exactly: its descriptors at their
 * numbers, with their flags, its capacity, and the bytes it held, read at
 * the commit without consuming them (tee(2) into a pipe of ckpt's).  A
 * pipe with an end in another process (a shell pipeline, a child) is not
 * recorded, nor one at descriptors 0-2 (the new process's own).  The PIPE
 * entry is in proc.h and doc/FORMAT.md (doc/RESUME.md, "Pipes").
 */
#ifndef CKPT_PIPES_H
#define CKPT_PIPES_H

#include "proc.h"

#include <stddef.h>

/* Adds a PIPE entry to b for every pipe of which the process holds at least
 * one read and one write descriptor above 2, or one end whose other end no
 * process holds any more, none open for both, leaving out the descriptors
 * `own` lists (may be NULL).  Meant to run while the program's
 * other threads are stopped (they could write to a pipe): raw system calls,
 * ckpt's own memory, no lock, no stdio, no malloc.  0, or a CKPT_E* code
 * (the commit fails) with ckpt_last_error() naming the pipe. */
CKPT__HIDDEN int ckpt__pipes_record(struct ckpt__pbuf *b, const struct ckpt__pown *own);

struct ckpt__rpipe;

/* The pipes of a record, for a resume. */
struct ckpt__rpipes {
	struct ckpt__rpipe *p;
	size_t n, cap;
	int *nums; /* every recorded descriptor number, all pipes */
	size_t nnums, nums_cap;
};

/* Takes one PIPE entry (len bytes at p) into s, checked: CKPT_ECORRUPT if
 * it is malformed or names a descriptor another PIPE entry named,
 * CKPT_ENOMEM, else 0. */
CKPT__HIDDEN int ckpt__pipes_take(struct ckpt__rpipes *s, const unsigned char *p, size_t len);
/* Whether fd is one of the recorded numbers. */
CKPT__HIDDEN int ckpt__pipes_has_fd(const struct ckpt__rpipes *s, int fd);
/* Makes every pipe again at numbers of its own (close-on-exec): its
 * capacity set, its content written back, an open file description for
 * each recorded one.  Changes nothing the program has; on failure closes
 * what it made and returns the error, naming the pipe. */
CKPT__HIDDEN int ckpt__pipes_make(struct ckpt__rpipes *s);
/* Puts every made pipe at its recorded numbers (replacing what is there),
 * with their status and descriptor flags, and closes the made numbers.
 * 0, or the error naming the pipe and number (the others are placed). */
CKPT__HIDDEN int ckpt__pipes_place(struct ckpt__rpipes *s);
/* Closes what ckpt__pipes_make made and was not placed. */
CKPT__HIDDEN void ckpt__pipes_close(struct ckpt__rpipes *s);
/* Closes, then frees s's memory (s itself is the caller's). */
CKPT__HIDDEN void ckpt__pipes_free(struct ckpt__rpipes *s);

#endif /* CKPT_PIPES_H */

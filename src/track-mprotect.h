/*
 * track-mprotect.h - the mprotect + SIGSEGV back-end.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_TRACK_MPROTECT_H
#define CKPT_TRACK_MPROTECT_H

#include "sys.h"

#include <signal.h>

/* The program's sigaction() for `sig`: once ckpt's SIGSEGV dispatcher is
 * installed, SIGSEGV actions are recorded as its chain target and reported
 * back as if installed.  Returns 1 if it took the call, 0 if the caller
 * should pass it on. */
CKPT__HIDDEN int ckpt__mp_sigaction_hook(int sig, const struct sigaction *act,
					 struct sigaction *old);

#endif /* CKPT_TRACK_MPROTECT_H */

/*
 * ckpt-mpi.h - coordinated checkpoints of MPI programs (libckpt-mpi).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every rank keeps its own chain of its named regions (ckpt_protect) in a
 * folder of the job's directory; a collective commit makes an epoch, and
 * an epoch counts once every rank's snapshot of it is durable and one rank
 * has recorded it, atomically, in the job's manifest.  A restarted job
 * (the same mpirun command) finds the newest complete epoch there and
 * every rank gets its regions back as of it.  No daemon: MPI itself is the
 * coordinator.  doc/MPI.md.
 *
 *     ckpt_t *c;
 *     uint64_t epoch = 0;
 *     ckpt_options o;
 *     ckpt_options_init(&o);
 *     o.flags = CKPT_F_RESUME;             // go on from the newest epoch
 *     int rc = ckpt_mpi_open(&c, MPI_COMM_WORLD, "job.ckpt", &o);
 *     if (rc == CKPT_RESUMED)
 *             ckpt_mpi_epoch(c, &epoch);   // regions fill as protected
 *     ckpt_protect(c, "field", u, n * sizeof *u);
 *     ckpt_protect(c, "step", &step, sizeof step);
 *     ckpt_begin(c);
 *     for (; step < steps; step++) {
 *             ...
 *             if (step % k == 0)
 *                     ckpt_mpi_commit(c, &epoch);
 *     }
 *     ckpt_mpi_close(c);
 */
#ifndef CKPT_MPI_H
#define CKPT_MPI_H

#include <ckpt.h>
#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Collective over comm, after MPI_Init.  Opens (creating it if needed) the
 * job directory `dir` (same rules as ckpt_open's; every rank must see the
 * same folder: one file system, or a shared one), and in it this rank's
 * chain, `rank-NNNNN` (its rank in comm, five digits), with the options
 * `opt` (NULL for the defaults; CKPT_F_ASYNC makes ckpt_mpi_commit
 * return once the pages are copied, the epoch completing at the next
 * collective call; CKPT_F_RESUME, below).
 *
 * With CKPT_F_RESUME, if the manifest records a complete epoch, the job is
 * a restart (the ranks' handles name regions: they bring those back, not
 * whole processes): the
 * number of ranks must be the manifest's (else CKPT_EMISMATCH on every
 * rank: "the checkpoint has 4 ranks, the job 3"), snapshots a rank wrote
 * past that epoch are set aside (ckpt_chain_set_aside), each later
 * ckpt_protect fills its region from this rank's snapshot of the epoch
 * (ckpt_protect_from), and the call returns CKPT_RESUMED; ckpt_mpi_epoch
 * gives the epoch.  Without a complete epoch it returns 0 and the job
 * starts fresh (a folder left by an epoch that never completed is started
 * over: its snapshots are set aside, not removed).  A folder with a
 * complete epoch opened without CKPT_F_RESUME is refused (CKPT_EEXIST), as
 * ckpt_open keeps a chain: pass the flag on every run, the first one too,
 * so that the same command starts the job and restarts it.
 *
 * Every rank returns the same code: an error on one rank (its folder not
 * writable, a damaged manifest) is every rank's, with ckpt_mpi_last_error
 * naming the rank and the problem.  Also CKPT_EINVAL (out or dir NULL,
 * CKPT_F_LAZY or CKPT_F_OVERWRITE: remove the folder to start over),
 * CKPT_EEXIST (above), CKPT_ESTATE (MPI not initialised, or finalised), the
 * errors of ckpt_open, ckpt_chain_set_aside and ckpt_protect_from, and
 * CKPT_ECORRUPT or CKPT_EVERSION for a manifest that is damaged or of a
 * later format (refused, never guessed at).  *out is NULL on failure.
 * The handle must be closed with ckpt_mpi_close, on every rank, before
 * MPI_Finalize.
 */
CKPT_API int ckpt_mpi_open(ckpt_t **out, MPI_Comm comm, const char *dir, const ckpt_options *opt);

/*
 * Collective: every rank commits its regions (ckpt_commit), then the ranks
 * agree that all snapshots are durable and rank 0 records the epoch as
 * complete in the manifest (written aside, fsynced, renamed).  *epoch (may
 * be NULL) receives the epoch number (1, 2, ...).  With CKPT_F_ASYNC the
 * call returns once this rank's pages are copied, and *epoch is the number
 * the epoch will have once complete; the previous epoch is completed first
 * (its commits waited for, then recorded), so at most one epoch is in
 * flight, and if completing it fails this call returns that error and
 * commits nothing.  Past that, the call makes no collective: the pause is
 * this rank's copy alone, and a failure of the copy (ckpt_commit's error
 * on this rank) is reported with those of the writes, on every rank, by
 * the call that completes the epoch.
 *
 * An epoch that failed on any rank (an I/O error, ENOSPC, a rank killed)
 * is never recorded: every rank returns the code of the lowest rank that
 * failed, with ckpt_mpi_last_error naming that rank ("rank 2: ckpt_commit:
 * no space left on device: ..."), *epoch is left as it was, and the next
 * epoch still stores the pages the failed one should have (each rank's
 * dirty set is kept); it takes the failed epoch's number, so that complete
 * epochs are numbered without gaps.  CKPT_EINVAL: c is not a handle of
 * ckpt_mpi_open (not collective then).
 */
CKPT_API int ckpt_mpi_commit(ckpt_t *c, uint64_t *epoch);

/* Collective: completes the epoch in flight (CKPT_F_ASYNC), as the next
 * ckpt_mpi_commit would.  *epoch (may be NULL): the newest complete epoch.
 * Returns 0 or the epoch's error, as ckpt_mpi_commit. */
CKPT_API int ckpt_mpi_wait(ckpt_t *c, uint64_t *epoch);

/* The epoch the job resumed from (after ckpt_mpi_open returned
 * CKPT_RESUMED), or the newest this job completed since; 0 if none.
 * Local.  Returns 0 or CKPT_EINVAL (not a handle of ckpt_mpi_open). */
CKPT_API int ckpt_mpi_epoch(ckpt_t *c, uint64_t *epoch);

/* Collective: completes the epoch in flight (its error returned), ends
 * tracking and closes the handle.  c may be NULL (then 0, and not
 * collective). */
CKPT_API int ckpt_mpi_close(ckpt_t *c);

/*
 * Details of the failure of the calling thread's last ckpt_mpi_* call, the
 * same text on every rank for a collective one ("rank 2: ckpt_commit: no
 * space left on device: ..."); "" after a call that succeeded.  The
 * ckpt_mpi_* calls set this, not ckpt_last_error(), which belongs to
 * libckpt and describes libckpt's own calls.  Thread-safe; the string
 * lives in the calling thread's storage until its next ckpt_mpi_* call.
 */
CKPT_API const char *ckpt_mpi_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* CKPT_MPI_H */

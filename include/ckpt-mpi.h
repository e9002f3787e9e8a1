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
 *     int rc = ckpt_mpi_open(&c, MPI_COMM_WORLD, "job.ckpt", NULL);
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
 * job directory `dir` (same rules as ckpt_open's), and in it this rank's
 * chain, `rank-NNNNN` (its rank in comm, five digits), with the options
 * `opt` (NULL for the defaults; CKPT_F_RESUME is refused: the handle
 * names its regions; CKPT_F_ASYNC makes ckpt_mpi_commit return once the
 * pages are copied, the epoch completing at the next collective call).
 *
 * If the manifest records a complete epoch, the job is a restart: the
 * number of ranks must be the manifest's (else CKPT_EMISMATCH on every
 * rank: "the checkpoint has 4 ranks, the job 3"), snapshots a rank wrote
 * past that epoch are set aside (ckpt_chain_set_aside), each later
 * ckpt_protect fills its region from this rank's snapshot of the epoch
 * (ckpt_protect_from), and the call returns CKPT_RESUMED; ckpt_mpi_epoch
 * gives the epoch.  Without one it returns 0 and the job starts fresh (a
 * folder left by an epoch that never completed is started over).
 *
 * Every rank returns the same code: an error on one rank (its folder not
 * writable, a damaged manifest) is every rank's, with ckpt_last_error
 * naming the rank and the problem.  *out is NULL on failure.
 */
CKPT_API int ckpt_mpi_open(ckpt_t **out, MPI_Comm comm, const char *dir, const ckpt_options *opt);

/*
 * Collective: every rank commits its regions (ckpt_commit), then the ranks
 * agree that all snapshots are durable and rank 0 records the epoch as
 * complete in the manifest (written aside, fsynced, renamed).  *epoch (may
 * be NULL) receives the epoch number (1, 2, ...).  With CKPT_F_ASYNC the
 * call returns once this rank's pages are copied; the previous epoch is
 * completed first (its commits waited for, then recorded), so at most one
 * epoch is in flight.
 *
 * An epoch that failed on any rank (an I/O error, ENOSPC, a rank killed)
 * is never recorded: every rank returns the first failing rank's code
 * with ckpt_last_error naming that rank, and the next epoch still stores
 * the pages the failed one should have (each rank's dirty set is kept).
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

#ifdef __cplusplus
}
#endif

#endif /* CKPT_MPI_H */

/*
 * ckpt-mpi.c - coordinated checkpoints of MPI programs (libckpt-mpi).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A layer over libckpt's public API and MPI, nothing else: every rank has a
 * handle of its own on its own chain (DIR/rank-NNNNN, opened with
 * CKPT_F_CONTINUE), and the ranks agree through collectives on a
 * communicator of their own (MPI_Comm_dup of the caller's), so that no
 * message of ours can meet one of the program's.
 *
 * The protocol (doc/MPI.md):
 *   commit   every rank ckpt_commit()s; an MPI_Allreduce finds the lowest
 *            rank that failed, which broadcasts its code and message;
 *   record   if none did, rank 0 gathers every rank's snapshot id, writes
 *            the manifest (aside, fsync, rename, fsync the folder) and
 *            broadcasts how that went.
 * An epoch is complete once it is in the manifest, and only then: a rank
 * killed anywhere before leaves the manifest naming the epoch before, and
 * a restarted job goes back to that one on every rank.  With CKPT_F_ASYNC
 * the commit step returns once the pages are copied, with no collective;
 * the agreement (on the copies and, after ckpt_wait, on the writes) and
 * the record are made at the next collective call on the handle.
 *
 * Every collective call of ours returns the same code on every rank.
 * The details of a failure are in ckpt_mpi_last_error(), a per-thread
 * string of ours: ckpt_last_error() belongs to libckpt, which has no
 * exported way to set it (doc/MPI.md, "Errors").
 */
#include <ckpt-mpi.h>

#include "manifest.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MSG_BYTES 512

/* The MPI side of a handle of ckpt_mpi_open, found by its ckpt_t. */
struct job {
	ckpt_t *c;
	MPI_Comm comm; /* ours: a duplicate of the caller's */
	int rank, size;
	unsigned flags;
	char *dir;
	uint64_t epoch;	      /* the newest complete epoch (or the one resumed from) */
	int inflight;	      /* an async epoch waits to be completed */
	uint64_t inflight_id; /* this rank's snapshot of it */
	int copy_rc;	      /* its ckpt_commit's error on this rank, to agree on */
	char copy_msg[MSG_BYTES];
	struct ckpt__manifest man; /* rank 0: the manifest as on disk */
	struct job *next;
};

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *jobs;

static __thread char last_error[MSG_BYTES + 64];

CKPT_API const char *ckpt_mpi_last_error(void)
{
	return last_error;
}

__attribute__((format(printf, 2, 3))) static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof last_error, fmt, ap);
	va_end(ap);
	return code;
}

static struct job *find(ckpt_t *c)
{
	struct job *j;
	pthread_mutex_lock(&jobs_lock);
	for (j = jobs; j && j->c != c; j = j->next)
		;
	pthread_mutex_unlock(&jobs_lock);
	return j;
}

static void enlist(struct job *j)
{
	pthread_mutex_lock(&jobs_lock);
	j->next = jobs;
	jobs = j;
	pthread_mutex_unlock(&jobs_lock);
}

static void delist(struct job *j)
{
	pthread_mutex_lock(&jobs_lock);
	for (struct job **p = &jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			break;
		}
	pthread_mutex_unlock(&jobs_lock);
}

/* ---- agreement -------------------------------------------------------------------- */

/* A failure as sent from one rank to the others. */
struct verdict {
	int code;
	char msg[MSG_BYTES];
};

/* A message for another rank, into one of MSG_BYTES (cut short if need be). */
__attribute__((format(printf, 2, 3))) static void say(char *msg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, MSG_BYTES, fmt, ap);
	va_end(ap);
}

/* An MPI call that failed.  The default handler of a communicator aborts the
 * job first; this is for a program that set MPI_ERRORS_RETURN on it. */
static int mpi_failed(int e, const char *call)
{
	char s[MPI_MAX_ERROR_STRING];
	int n = 0;
	if (MPI_Error_string(e, s, &n) != MPI_SUCCESS)
		snprintf(s, sizeof s, "MPI error %d", e);
	return fail(CKPT_EIO, "%s: %s", call, s);
}

/*
 * Collective: every rank brings its own result (rc, and its message when
 * rc < 0); all return the result of the lowest rank that failed, and its
 * message becomes every rank's ckpt_mpi_last_error().  0 when none failed.
 */
static int agree(MPI_Comm comm, int rank, int rc, const char *msg)
{
	int mine = rc < 0 ? rank : INT_MAX, first = INT_MAX, e;
	if ((e = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm)) != MPI_SUCCESS)
		return mpi_failed(e, "MPI_Allreduce");
	if (first == INT_MAX) {
		last_error[0] = '\0';
		return 0;
	}
	struct verdict v = {0};
	if (rank == first) {
		v.code = rc;
		say(v.msg, "%s", msg);
	}
	if ((e = MPI_Bcast(&v, (int)sizeof v, MPI_BYTE, first, comm)) != MPI_SUCCESS)
		return mpi_failed(e, "MPI_Bcast");
	v.msg[sizeof v.msg - 1] = '\0';
	return fail(v.code, "%s", v.msg);
}

/* Collective: rank 0's result (rc, msg) becomes every rank's. */
static int from_root(MPI_Comm comm, int rank, int rc, const char *msg)
{
	struct verdict v = {0};
	int e;
	if (rank == 0) {
		v.code = rc;
		say(v.msg, "%s", rc < 0 ? msg : "");
	}
	if ((e = MPI_Bcast(&v, (int)sizeof v, MPI_BYTE, 0, comm)) != MPI_SUCCESS)
		return mpi_failed(e, "MPI_Bcast");
	v.msg[sizeof v.msg - 1] = '\0';
	if (v.code < 0)
		return fail(v.code, "%s", v.msg);
	return v.code;
}

/* The message of a libckpt call that failed on this rank. */
static void lib_message(char *msg, int rank, const char *call, int rc)
{
	const char *detail = ckpt_last_error();
	say(msg, "rank %d: %s: %s%s%s", rank, call, ckpt_strerror(rc), detail[0] ? ": " : "",
	    detail);
}

/* ---- epochs ----------------------------------------------------------------------- */

/*
 * Collective, once every rank's snapshot `id` of the next epoch is durable
 * (agreed): rank 0 records the epoch in the manifest; every rank returns
 * how that went.
 */
static int record(struct job *j, uint64_t id)
{
	char msg[MSG_BYTES] = "";
	uint64_t *ids = NULL;
	int rc = 0, e;
	if (j->rank == 0 && !(ids = malloc((size_t)j->size * sizeof *ids))) {
		rc = CKPT_ENOMEM;
		say(msg, "rank 0: out of memory for %d snapshot ids", j->size);
	}
	/* Every rank takes part in the gather whatever rank 0 found, so that
	 * nobody is left waiting in it. */
	if ((e = MPI_Gather(&id, 1, MPI_UINT64_T, ids, 1, MPI_UINT64_T, 0, j->comm)) !=
	    MPI_SUCCESS) {
		free(ids);
		return mpi_failed(e, "MPI_Gather");
	}
	if (j->rank == 0 && !rc) {
		char why[CKPT__MANIFEST_WHY];
		uint64_t epoch = j->epoch + 1;
		rc = ckpt__manifest_add(&j->man, epoch, ids, why);
		if (!rc) {
			rc = ckpt__manifest_write(j->dir, &j->man, why);
			if (rc)
				ckpt__manifest_pop(&j->man);
		}
		if (rc)
			say(msg, "rank 0: recording epoch %llu: %s", (unsigned long long)epoch,
			    why);
	}
	free(ids);
	rc = from_root(j->comm, j->rank, rc, msg);
	if (!rc)
		j->epoch++;
	return rc;
}

/* Collective: completes the epoch in flight (CKPT_F_ASYNC). */
static int complete(struct job *j)
{
	char msg[MSG_BYTES] = "";
	uint64_t durable = 0;
	int rc = j->copy_rc;
	if (rc < 0)
		say(msg, "%s", j->copy_msg);
	else if ((rc = ckpt_wait(j->c, &durable)) < 0)
		lib_message(msg, j->rank, "ckpt_wait", rc);
	else if (durable != j->inflight_id) {
		rc = CKPT_EINTERNAL;
		say(msg, "rank %d: ckpt_wait: the newest durable snapshot is %llu, not %llu",
		    j->rank, (unsigned long long)durable, (unsigned long long)j->inflight_id);
	}
	/* Settled either way: a failed epoch is not retried, its pages go
	 * into the next one. */
	j->inflight = 0;
	rc = agree(j->comm, j->rank, rc, msg);
	return rc ? rc : record(j, j->inflight_id);
}

/* ---- opening ---------------------------------------------------------------------- */

/* What rank 0 finds in the job folder, sent to every rank. */
struct survey {
	int code;
	int restart; /* the manifest has a complete epoch */
	int ranks;   /* the manifest's ranks */
	uint64_t epoch;
	char msg[MSG_BYTES];
};

/* Rank 0: the job folder made ready and its manifest read into j->man. */
static void survey_folder(struct job *j, int resume, struct survey *s)
{
	char why[CKPT__MANIFEST_WHY];
	int rc = ckpt__manifest_dir_check(j->dir, 1, why);
	if (!rc) {
		rc = ckpt__manifest_read(j->dir, &j->man, why);
		if (rc == CKPT_ENOENT) {
			ckpt__manifest_init(&j->man, j->size);
			rc = 0;
		}
	}
	if (rc) {
		s->code = rc;
		say(s->msg, "rank 0: %s", why);
		return;
	}
	s->epoch = ckpt__manifest_newest(&j->man);
	s->restart = s->epoch != 0;
	s->ranks = j->man.ranks;
	if (s->restart && !resume) {
		/* As ckpt_open keeps a chain: nothing is started over unasked. */
		s->code = CKPT_EEXIST;
		say(s->msg,
		    "rank 0: %s holds epoch %llu of a job of %d ranks; CKPT_F_RESUME goes on from "
		    "it (remove the folder to start over)",
		    j->dir, (unsigned long long)s->epoch, j->man.ranks);
		return;
	}
	if (s->restart && j->man.ranks != j->size) {
		s->code = CKPT_EMISMATCH;
		say(s->msg,
		    "%s: the checkpoint has %d ranks, the job %d (epoch %llu; a restart "
		    "needs as many ranks as the job that wrote it)",
		    j->dir, j->man.ranks, j->size, (unsigned long long)s->epoch);
		return;
	}
	if (!s->restart)
		ckpt__manifest_init(&j->man, j->size); /* a manifest without an epoch */
}

/* The newest snapshot of the chain in dir; 0 for a folder that does not
 * exist yet or holds none. */
static int newest_snapshot(const char *dir, uint64_t *latest, char *msg, int rank)
{
	struct stat st;
	*latest = 0;
	if (stat(dir, &st) != 0 && errno == ENOENT)
		return 0;
	ckpt_chain *ch;
	int rc = ckpt_chain_open(&ch, dir);
	if (rc) {
		lib_message(msg, rank, "ckpt_chain_open", rc);
		return rc;
	}
	*latest = ckpt_chain_latest(ch);
	ckpt_chain_close(ch);
	return 0;
}

/*
 * This rank's chain: snapshots past `keep` (this rank's snapshot of the
 * epoch resumed from, 0 for a fresh job) set aside, then opened.
 */
static int open_chain(struct job *j, const char *rank_dir, uint64_t keep, const ckpt_options *o,
		      char *msg)
{
	uint64_t latest;
	int rc = newest_snapshot(rank_dir, &latest, msg, j->rank);
	if (rc)
		return rc;
	if (latest < keep) {
		say(msg,
		    "rank %d: %s: the manifest names snapshot %llu of epoch %llu, the newest "
		    "there is %llu",
		    j->rank, rank_dir, (unsigned long long)keep, (unsigned long long)j->epoch,
		    (unsigned long long)latest);
		return CKPT_ENOENT;
	}
	if (latest > keep) {
		rc = ckpt_chain_set_aside(rank_dir, keep, NULL);
		if (rc) {
			lib_message(msg, j->rank, "ckpt_chain_set_aside", rc);
			return rc;
		}
	}
	rc = ckpt_open(&j->c, rank_dir, o);
	if (rc) {
		lib_message(msg, j->rank, "ckpt_open", rc);
		j->c = NULL;
		return rc;
	}
	if (keep) {
		rc = ckpt_protect_from(j->c, keep);
		if (rc) {
			lib_message(msg, j->rank, "ckpt_protect_from", rc);
			return rc;
		}
	}
	return 0;
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	if (j->c)
		ckpt_close(j->c);
	if (j->comm != MPI_COMM_NULL)
		MPI_Comm_free(&j->comm);
	ckpt__manifest_free(&j->man);
	free(j->dir);
	free(j);
}

CKPT_API int ckpt_mpi_open(ckpt_t **out, MPI_Comm comm, const char *dir, const ckpt_options *opt)
{
	last_error[0] = '\0';
	if (out)
		*out = NULL;
	int inited = 0, finalized = 0;
	MPI_Initialized(&inited);
	MPI_Finalized(&finalized);
	if (!inited || finalized)
		return fail(CKPT_ESTATE, "ckpt_mpi_open: MPI is not initialised (call MPI_Init "
					 "first, and ckpt_mpi_close before MPI_Finalize)");
	if (comm == MPI_COMM_NULL)
		return fail(CKPT_EINVAL, "ckpt_mpi_open: comm is MPI_COMM_NULL");

	/* Wrong arguments on one rank are every rank's: all go on to the
	 * first agreement, which carries them. */
	char msg[MSG_BYTES] = "";
	int rc = 0, rank = 0, e;
	MPI_Comm_rank(comm, &rank);
	ckpt_options o;
	ckpt_options_init(&o);
	if (opt)
		o = *opt;
	if (!out || !dir || !dir[0]) {
		rc = CKPT_EINVAL;
		say(msg, "rank %d: ckpt_mpi_open: %s is NULL", rank, !out ? "out" : "dir");
	} else if (o.flags & (CKPT_F_LAZY | CKPT_F_OVERWRITE)) {
		rc = CKPT_EINVAL;
		say(msg, "rank %d: ckpt_mpi_open: %s is not for an MPI job (%s)", rank,
		    (o.flags & CKPT_F_LAZY) ? "CKPT_F_LAZY" : "CKPT_F_OVERWRITE",
		    (o.flags & CKPT_F_OVERWRITE)
			? "remove the job folder to start over"
			: "ranks bring back their named regions, not whole processes");
	}
	/* CKPT_F_RESUME: a restart, where the folder has a complete epoch;
	 * the ranks' handles name regions, they do not resume processes. */
	int resume = (o.flags & CKPT_F_RESUME) != 0;
	o.flags = (o.flags & ~CKPT_F_RESUME) | CKPT_F_CONTINUE;

	struct job *j = calloc(1, sizeof *j);
	if (j)
		j->comm = MPI_COMM_NULL;
	if (!rc && (!j || !(j->dir = strdup(dir)))) {
		rc = CKPT_ENOMEM;
		say(msg, "rank %d: ckpt_mpi_open: out of memory", rank);
	}
	/* "job/" is "job": a trailing slash would make lstat follow a
	 * symbolic link the folder must not be. */
	for (size_t n = j && j->dir ? strlen(j->dir) : 0; n > 1 && j->dir[n - 1] == '/'; n--)
		j->dir[n - 1] = '\0';
	/* Ours, so that our collectives never meet the program's messages. */
	MPI_Comm dup = MPI_COMM_NULL;
	if ((e = MPI_Comm_dup(comm, &dup)) != MPI_SUCCESS) {
		job_free(j);
		return mpi_failed(e, "MPI_Comm_dup");
	}
	rc = agree(dup, rank, rc, msg);
	if (rc) {
		MPI_Comm_free(&dup);
		job_free(j);
		return rc;
	}
	j->comm = dup;
	j->rank = rank;
	MPI_Comm_size(dup, &j->size);
	j->flags = o.flags;

	/* Rank 0 reads the manifest; everybody learns what it says. */
	struct survey s = {0};
	if (j->rank == 0)
		survey_folder(j, resume, &s);
	if ((e = MPI_Bcast(&s, (int)sizeof s, MPI_BYTE, 0, j->comm)) != MPI_SUCCESS) {
		rc = mpi_failed(e, "MPI_Bcast");
		goto failed;
	}
	s.msg[sizeof s.msg - 1] = '\0';
	if (s.code) {
		rc = fail(s.code, "%s", s.msg);
		goto failed;
	}
	j->epoch = s.epoch;

	/* Each rank's snapshot of the epoch resumed from. */
	uint64_t keep = 0;
	if (s.restart &&
	    (e = MPI_Scatter(j->rank == 0 ? ckpt__manifest_newest_ids(&j->man) : NULL, 1,
			     MPI_UINT64_T, &keep, 1, MPI_UINT64_T, 0, j->comm)) != MPI_SUCCESS) {
		rc = mpi_failed(e, "MPI_Scatter");
		goto failed;
	}

	char rank_dir[PATH_MAX];
	if (snprintf(rank_dir, sizeof rank_dir, "%s/rank-%05d", j->dir, j->rank) >=
	    (int)sizeof rank_dir) {
		rc = CKPT_ENAMETOOLONG;
		say(msg, "rank %d: %s/rank-%05d: the path is too long", j->rank, j->dir, j->rank);
	} else {
		rc = open_chain(j, rank_dir, keep, &o, msg);
	}
	if ((rc = agree(j->comm, j->rank, rc, msg)))
		goto failed;

	/* A fresh job: rank 0 writes a manifest without epochs now that every
	 * folder is cleared, so that the folder says what it is (ckpt ls) and
	 * how many ranks write it. */
	if (!s.restart) {
		char why[CKPT__MANIFEST_WHY] = "";
		if (j->rank == 0) {
			rc = ckpt__manifest_write(j->dir, &j->man, why);
			if (rc)
				say(msg, "rank 0: %s", why);
		}
		if ((rc = from_root(j->comm, j->rank, rc, msg)))
			goto failed;
	}
	enlist(j);
	*out = j->c;
	last_error[0] = '\0';
	return s.restart ? CKPT_RESUMED : 0;

failed:
	job_free(j);
	return rc;
}

/* ---- the collective calls --------------------------------------------------------- */

static struct job *lookup(ckpt_t *c, const char *call)
{
	struct job *j = c ? find(c) : NULL;
	if (!j)
		fail(CKPT_EINVAL, "%s: %s", call,
		     c ? "not a handle of ckpt_mpi_open" : "the handle is NULL");
	return j;
}

CKPT_API int ckpt_mpi_commit(ckpt_t *c, uint64_t *epoch)
{
	last_error[0] = '\0';
	struct job *j = lookup(c, "ckpt_mpi_commit");
	if (!j)
		return CKPT_EINVAL;
	int rc;
	/* At most one epoch in flight: the previous one is completed first,
	 * and if that fails this call commits nothing (as ckpt_commit does
	 * after a background write that failed). */
	if (j->inflight && (rc = complete(j)))
		return rc;
	char msg[MSG_BYTES] = "";
	uint64_t id = 0;
	rc = ckpt_commit(c, &id);
	if (rc < 0)
		lib_message(msg, j->rank, "ckpt_commit", rc);
	if (j->flags & CKPT_F_ASYNC) {
		/* No collective in the program's pause: whether every rank's
		 * copy succeeded is agreed with whether every write did, when
		 * the epoch is completed. */
		j->inflight = 1;
		j->inflight_id = id;
		j->copy_rc = rc < 0 ? rc : 0;
		say(j->copy_msg, "%s", msg);
		if (epoch)
			*epoch = j->epoch + 1;
		return 0;
	}
	if ((rc = agree(j->comm, j->rank, rc, msg)))
		return rc;
	if ((rc = record(j, id)))
		return rc;
	if (epoch)
		*epoch = j->epoch;
	return 0;
}

CKPT_API int ckpt_mpi_wait(ckpt_t *c, uint64_t *epoch)
{
	last_error[0] = '\0';
	struct job *j = lookup(c, "ckpt_mpi_wait");
	if (!j)
		return CKPT_EINVAL;
	int rc = j->inflight ? complete(j) : 0;
	if (epoch)
		*epoch = j->epoch;
	return rc;
}

CKPT_API int ckpt_mpi_epoch(ckpt_t *c, uint64_t *epoch)
{
	last_error[0] = '\0';
	struct job *j = lookup(c, "ckpt_mpi_epoch");
	if (!j)
		return CKPT_EINVAL;
	if (!epoch)
		return fail(CKPT_EINVAL, "ckpt_mpi_epoch: epoch is NULL");
	*epoch = j->epoch;
	return 0;
}

CKPT_API int ckpt_mpi_close(ckpt_t *c)
{
	last_error[0] = '\0';
	if (!c)
		return 0;
	struct job *j = lookup(c, "ckpt_mpi_close");
	if (!j)
		return CKPT_EINVAL;
	int rc = j->inflight ? complete(j) : 0;
	delist(j);
	job_free(j);
	return rc;
}

/*
 * manifest.c - reading and writing an MPI job's manifest.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A manifest is text, so that a person can read it with cat, and strict, so
 * that nothing half-written or edited by hand is ever taken for a
 * checkpoint: one exact shape, a checksum over all of it, and ids that must
 * make sense.  A file that does not parse is refused whole, with the line
 * and what is wrong; it is never repaired or guessed at (doc/MPI.md).
 *
 *     ckpt-mpi manifest 1
 *     ranks 4
 *     epoch 7 12 12 13 12
 *     epoch 8 13 13 14 13
 *     checksum 5d0c5a3e2b0e8f41
 */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "ckpt-mpi manifest "

__attribute__((format(printf, 3, 4))) static int fail(char *why, int code, const char *fmt, ...)
{
	if (why) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, CKPT__MANIFEST_WHY, fmt, ap);
		va_end(ap);
	}
	return code;
}

int ckpt__manifest_errno(int err)
{
	switch (-err) {
#define CKPT_MANIFEST_ERRNO_(name, value, text)                                                    \
	case value:                                                                                \
		return (value) > -1000 ? (value) : CKPT_EIO;
		CKPT_ERRNO_MAP(CKPT_MANIFEST_ERRNO_)
#undef CKPT_MANIFEST_ERRNO_
	default:
		return CKPT_EIO;
	}
}

/* FNV-1a, 64 bits: enough to tell a damaged or hand-edited file. */
static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3u;
	return h;
}

void ckpt__manifest_init(struct ckpt__manifest *m, int ranks)
{
	memset(m, 0, sizeof *m);
	m->ranks = ranks;
}

void ckpt__manifest_free(struct ckpt__manifest *m)
{
	if (!m)
		return;
	free(m->epochs);
	free(m->ids);
	memset(m, 0, sizeof *m);
}

uint64_t ckpt__manifest_newest(const struct ckpt__manifest *m)
{
	return m->nepochs ? m->epochs[m->nepochs - 1] : 0;
}

const uint64_t *ckpt__manifest_newest_ids(const struct ckpt__manifest *m)
{
	return m->nepochs ? m->ids + (m->nepochs - 1) * (size_t)m->ranks : NULL;
}

/* Appends without the bound: the parser reads what is there. */
static int append(struct ckpt__manifest *m, uint64_t epoch, const uint64_t *ids, char *why)
{
	size_t r = (size_t)m->ranks, n = m->nepochs;
	uint64_t *e = realloc(m->epochs, (n + 1) * sizeof *e);
	if (!e)
		return fail(why, CKPT_ENOMEM, "out of memory for the manifest's epochs");
	m->epochs = e;
	uint64_t *ids2 = realloc(m->ids, (n + 1) * r * sizeof *ids2);
	if (!ids2)
		return fail(why, CKPT_ENOMEM, "out of memory for the manifest's epochs");
	m->ids = ids2;
	m->epochs[n] = epoch;
	memcpy(m->ids + n * r, ids, r * sizeof *ids);
	m->nepochs = n + 1;
	return 0;
}

/* Whether epoch and ids may follow the newest epoch of m; *why otherwise. */
static int follows(const struct ckpt__manifest *m, uint64_t epoch, const uint64_t *ids, char *why,
		   const char *where)
{
	uint64_t last = ckpt__manifest_newest(m);
	const uint64_t *prev = ckpt__manifest_newest_ids(m);
	if (epoch == 0 || epoch <= last)
		return fail(why, CKPT_EINVAL, "%sepoch %llu does not follow epoch %llu", where,
			    (unsigned long long)epoch, (unsigned long long)last);
	for (int r = 0; r < m->ranks; r++) {
		if (ids[r] == 0 || ids[r] == UINT64_MAX)
			return fail(why, CKPT_EINVAL,
				    "%sepoch %llu: rank %d: %llu is not a snapshot id", where,
				    (unsigned long long)epoch, r, (unsigned long long)ids[r]);
		if (prev && ids[r] <= prev[r])
			return fail(why, CKPT_EINVAL,
				    "%sepoch %llu: rank %d: snapshot %llu is not newer than %llu, "
				    "its snapshot of epoch %llu",
				    where, (unsigned long long)epoch, r, (unsigned long long)ids[r],
				    (unsigned long long)prev[r], (unsigned long long)last);
	}
	return 0;
}

int ckpt__manifest_add(struct ckpt__manifest *m, uint64_t epoch, const uint64_t *ids, char *why)
{
	int rc = follows(m, epoch, ids, why, "");
	if (rc)
		return rc;
	rc = append(m, epoch, ids, why);
	if (rc)
		return rc;
	if (m->nepochs > CKPT__MANIFEST_KEEP) {
		size_t drop = m->nepochs - CKPT__MANIFEST_KEEP, r = (size_t)m->ranks;
		memmove(m->epochs, m->epochs + drop, CKPT__MANIFEST_KEEP * sizeof *m->epochs);
		memmove(m->ids, m->ids + drop * r, CKPT__MANIFEST_KEEP * r * sizeof *m->ids);
		m->nepochs = CKPT__MANIFEST_KEEP;
	}
	return 0;
}

void ckpt__manifest_pop(struct ckpt__manifest *m)
{
	if (m->nepochs)
		m->nepochs--;
}

/* ---- parsing ------------------------------------------------------------------ */

struct cursor {
	const char *p, *end;
	const char *name;
	unsigned line;
	char *why;
};

static int bad(struct cursor *c, const char *what)
{
	return fail(c->why, CKPT_ECORRUPT, "%s is damaged: line %u: %s", c->name, c->line, what);
}

/* A number: decimal digits, no sign, no leading zero, at most UINT64_MAX - 1. */
static int number(struct cursor *c, uint64_t *out, const char *what)
{
	const char *p = c->p;
	if (p == c->end || *p < '0' || *p > '9')
		return bad(c, what);
	if (*p == '0' && p + 1 < c->end && p[1] >= '0' && p[1] <= '9')
		return bad(c, what);
	uint64_t v = 0;
	for (; p < c->end && *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - 1 - d) / 10)
			return bad(c, what);
		v = v * 10 + d;
	}
	c->p = p;
	*out = v;
	return 0;
}

/* The literal s at the cursor. */
static int word(struct cursor *c, const char *s, const char *what)
{
	size_t n = strlen(s);
	if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n))
		return bad(c, what);
	c->p += n;
	return 0;
}

static int eol(struct cursor *c, const char *what)
{
	int rc = word(c, "\n", what);
	if (!rc)
		c->line++;
	return rc;
}

int ckpt__manifest_parse(const char *text, size_t len, const char *name, struct ckpt__manifest *out,
			 char *why)
{
	struct cursor c = {text, text + len, name, 1, why};
	int rc;
	uint64_t version, ranks;

	if (len < strlen(MAGIC) || memcmp(text, MAGIC, strlen(MAGIC)))
		return fail(why, CKPT_ECORRUPT,
			    "%s is not a ckpt-mpi manifest (it does not start "
			    "with \"" MAGIC "N\")",
			    name);
	c.p += strlen(MAGIC);
	if ((rc = number(&c, &version, "the format version is not a number")) ||
	    (rc = eol(&c, "junk after the format version")))
		return rc;
	if (version != CKPT__MANIFEST_VERSION)
		return fail(why, CKPT_EVERSION,
			    "%s is in format version %llu; this build reads version %u", name,
			    (unsigned long long)version, CKPT__MANIFEST_VERSION);

	/* The checksum line closes the file and covers every byte before it. */
	if (len < 2 || text[len - 1] != '\n')
		return fail(why, CKPT_ECORRUPT,
			    "%s is damaged: it does not end with a complete line (cut short?)",
			    name);
	const char *last = text + len - 1;
	while (last > text && last[-1] != '\n')
		last--;
	static const char sum_word[] = "checksum ";
	size_t sum_len = sizeof sum_word - 1;
	if ((size_t)(text + len - last) != sum_len + 16 + 1 || memcmp(last, sum_word, sum_len))
		return fail(why, CKPT_ECORRUPT,
			    "%s is damaged: its last line is not \"checksum\" and 16 hex digits "
			    "(cut short?)",
			    name);
	uint64_t stored = 0;
	for (const char *h = last + sum_len; h < text + len - 1; h++) {
		int d = *h >= '0' && *h <= '9'	 ? *h - '0'
			: *h >= 'a' && *h <= 'f' ? *h - 'a' + 10
						 : -1;
		if (d < 0)
			return fail(why, CKPT_ECORRUPT,
				    "%s is damaged: its checksum is not 16 lower-case hex digits",
				    name);
		stored = stored << 4 | (unsigned)d;
	}
	uint64_t computed = fnv1a(text, (size_t)(last - text));
	if (stored != computed)
		return fail(
		    why, CKPT_ECORRUPT,
		    "%s is damaged: its checksum %016llx does not match its content (%016llx)",
		    name, (unsigned long long)stored, (unsigned long long)computed);
	c.end = last;

	if ((rc = word(&c, "ranks ", "\"ranks N\" expected")) ||
	    (rc = number(&c, &ranks, "the number of ranks is not a number")) ||
	    (rc = eol(&c, "junk after the number of ranks")))
		return rc;
	if (ranks < 1 || ranks > CKPT__MANIFEST_MAX_RANKS)
		return fail(why, CKPT_ECORRUPT, "%s is damaged: %llu ranks", name,
			    (unsigned long long)ranks);

	struct ckpt__manifest m;
	ckpt__manifest_init(&m, (int)ranks);
	uint64_t *ids = malloc((size_t)ranks * sizeof *ids);
	if (!ids)
		return fail(why, CKPT_ENOMEM, "out of memory reading %s", name);
	rc = 0;
	while (c.p < c.end) {
		uint64_t epoch;
		if ((rc = word(&c, "epoch ", "\"epoch\" expected")) ||
		    (rc = number(&c, &epoch, "the epoch is not a number")))
			break;
		for (uint64_t r = 0; r < ranks; r++) {
			if ((rc = word(&c, " ", "fewer snapshot ids than ranks")) ||
			    (rc = number(&c, &ids[r], "a snapshot id is not a number")))
				break;
		}
		if (rc || (rc = eol(&c, "more snapshot ids than ranks, or junk at the end")))
			break;
		char where[64];
		snprintf(where, sizeof where, "line %u: ", c.line - 1);
		char detail[CKPT__MANIFEST_WHY];
		if (follows(&m, epoch, ids, detail, where)) {
			rc = fail(why, CKPT_ECORRUPT, "%s is damaged: %s", name, detail);
			break;
		}
		if ((rc = append(&m, epoch, ids, why)))
			break;
	}
	free(ids);
	if (rc) {
		ckpt__manifest_free(&m);
		return rc;
	}
	*out = m;
	return 0;
}

int ckpt__manifest_format(const struct ckpt__manifest *m, char **text, size_t *len, char *why)
{
	/* Every number takes at most 20 digits and a separator. */
	size_t cap = 64 + m->nepochs * (8 + 21 * ((size_t)m->ranks + 1)) + 32;
	char *buf = malloc(cap), *p = buf;
	if (!buf)
		return fail(why, CKPT_ENOMEM, "out of memory writing the manifest");
	p += sprintf(p, MAGIC "%u\nranks %d\n", CKPT__MANIFEST_VERSION, m->ranks);
	for (size_t e = 0; e < m->nepochs; e++) {
		p += sprintf(p, "epoch %llu", (unsigned long long)m->epochs[e]);
		for (int r = 0; r < m->ranks; r++)
			p += sprintf(p, " %llu",
				     (unsigned long long)m->ids[e * (size_t)m->ranks + (size_t)r]);
		*p++ = '\n';
	}
	p += sprintf(p, "checksum %016llx\n", (unsigned long long)fnv1a(buf, (size_t)(p - buf)));
	*text = buf;
	*len = (size_t)(p - buf);
	return 0;
}

/* ---- files -------------------------------------------------------------------- */

/* The rules a chain's directory and files have (doc/FORMAT.md, "The chain
 * directory"): nobody but the user, or root, could have written them. */
static int owned(const struct stat *st, const char *path, char *why)
{
	if (st->st_uid != geteuid() && st->st_uid != 0)
		return fail(why, CKPT_EACCES, "%s: owned by uid %u", path, (unsigned)st->st_uid);
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return fail(why, CKPT_EACCES, "%s: writable by its %s (mode 0%03o)", path,
			    (st->st_mode & S_IWGRP) ? "group" : "others",
			    (unsigned)(st->st_mode & 07777));
	return 0;
}

int ckpt__manifest_dir_check(const char *dir, int create, char *why)
{
	struct stat st;
	if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
		return fail(why, ckpt__manifest_errno(errno),
			    "%s: cannot create the job folder: %s", dir, strerror(errno));
	if (lstat(dir, &st) != 0)
		return fail(why, ckpt__manifest_errno(errno), "%s: %s", dir, strerror(errno));
	if (S_ISLNK(st.st_mode))
		return fail(why, CKPT_EACCES, "%s: a symbolic link", dir);
	if (!S_ISDIR(st.st_mode))
		return fail(why, CKPT_ENOTDIR, "%s: not a directory", dir);
	return owned(&st, dir, why);
}

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s/%s", dir, name);
	return s;
}

int ckpt__manifest_read(const char *dir, struct ckpt__manifest *m, char *why)
{
	char *path = join(dir, CKPT__MANIFEST_NAME);
	char *text = NULL;
	int fd = -1, rc;
	if (!path)
		return fail(why, CKPT_ENOMEM, "out of memory");
	/* O_NONBLOCK: a FIFO put there must not hang the job; it is refused
	 * below as not a regular file. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT)
			rc = fail(why, CKPT_ENOENT, "%s: no manifest", path);
		else if (errno == ELOOP)
			rc = fail(why, CKPT_EACCES, "%s: a symbolic link", path);
		else
			rc =
			    fail(why, ckpt__manifest_errno(errno), "%s: %s", path, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = fail(why, ckpt__manifest_errno(errno), "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = fail(why, CKPT_EACCES, "%s: not a regular file", path);
		goto out;
	}
	if ((rc = owned(&st, path, why)))
		goto out;
	if ((size_t)st.st_size > CKPT__MANIFEST_MAX_BYTES) {
		rc = fail(why, CKPT_ECORRUPT, "%s is damaged: %lld bytes", path,
			  (long long)st.st_size);
		goto out;
	}
	size_t size = (size_t)st.st_size, got = 0;
	text = malloc(size + 1);
	if (!text) {
		rc = fail(why, CKPT_ENOMEM, "out of memory reading %s", path);
		goto out;
	}
	while (got < size) {
		ssize_t n = read(fd, text + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc =
			    fail(why, ckpt__manifest_errno(errno), "%s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	rc = ckpt__manifest_parse(text, got, path, m, why);
out:
	if (fd >= 0)
		close(fd);
	free(text);
	free(path);
	return rc;
}

static int fsync_dir(const char *dir, char *why)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return fail(why, ckpt__manifest_errno(errno), "%s: %s", dir, strerror(errno));
	int rc = 0;
	if (fsync(fd) != 0)
		rc = fail(why, ckpt__manifest_errno(errno), "%s: fsync: %s", dir, strerror(errno));
	close(fd);
	return rc;
}

int ckpt__manifest_write(const char *dir, const struct ckpt__manifest *m, char *why)
{
	char *tmp = join(dir, CKPT__MANIFEST_TMP), *path = join(dir, CKPT__MANIFEST_NAME);
	char *text = NULL;
	size_t len = 0;
	int fd = -1, rc;
	if (!tmp || !path) {
		rc = fail(why, CKPT_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = ckpt__manifest_format(m, &text, &len, why)))
		goto out;
	/* A temporary file a crash left behind is ours to replace. */
	if (unlink(tmp) != 0 && errno != ENOENT) {
		rc = fail(why, ckpt__manifest_errno(errno), "%s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = fail(why, ckpt__manifest_errno(errno), "%s: %s", tmp, strerror(errno));
		goto out;
	}
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, text + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = fail(why, ckpt__manifest_errno(errno), "%s: write: %s", tmp,
				  strerror(errno));
			goto out;
		}
		done += (size_t)n;
	}
	if (fsync(fd) != 0) {
		rc = fail(why, ckpt__manifest_errno(errno), "%s: fsync: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = fail(why, ckpt__manifest_errno(errno), "%s: close: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = fail(why, ckpt__manifest_errno(errno), "%s: rename to %s: %s", tmp,
			  CKPT__MANIFEST_NAME, strerror(errno));
		goto out;
	}
	/* Renamed: from here the new manifest is the one readers see, and
	 * only its durability is left to do. */
	free(tmp);
	tmp = NULL;
	rc = fsync_dir(dir, why);
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		if (rc)
			unlink(tmp);
		free(tmp);
	}
	free(path);
	free(text);
	return rc;
}

/*
 * helpers.h - shared helpers of the end-to-end suites.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_TEST_HELPERS_H
#define CKPT_TEST_HELPERS_H

#include <ckpt.h>

#include <stddef.h>
#include <stdint.h>

/* The dirty runs ckpt reported, copied out of the callback. */
struct dset {
	struct drun {
		uintptr_t start;
		size_t npages;
		char mapping[256];
	} *r;
	size_t n, cap;
	size_t pages;
};

size_t pagesz(void);
/* The next number of a xorshift64 sequence seeded with *s (not zero). */
static inline uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}
/* ckpt_dirty_foreach into *s (emptied first); returns foreach's result. */
int dset_collect(ckpt_t *c, struct dset *s);
void dset_free(struct dset *s);
/* A dset freed when it goes out of scope. */
#define DSET(name) struct dset name __attribute__((cleanup(dset_free))) = {0}
/* Whether the page holding addr is in the set. */
int dset_has(const struct dset *s, const void *addr);
/* Number of pages of [p, p + n*pagesz) in the set. */
size_t dset_count_in(const struct dset *s, const void *p, size_t npages);
/* The mapping name reported for the page holding addr, or NULL. */
const char *dset_name(const struct dset *s, const void *addr);
/* Checks the runs are sorted, disjoint and maximal; 0 if so. */
int dset_check_shape(const struct dset *s);

/* An anonymous private read-write mapping of npages, filled with `fill`. */
void *map_anon(size_t npages, int fill);

/* /proc/self/maps lines overlapping [lo, hi), as one string (malloc'd). */
char *maps_lines(uintptr_t lo, uintptr_t hi);
/* The permission string ("rw-p") of the mapping holding addr, or "" . */
const char *perms_of(const void *addr, char out[8]);

/* Opens a handle and begins tracking with the back-end the suite runs
 * against (CKPT_BACKEND in the environment, else ckpt's choice), failing
 * the test on error. */
ckpt_t *begin_tracking(unsigned flags);

/* The back-end handle c tracks with (CKPT_BACKEND_*). */
int backend_of(ckpt_t *c);
/* Whether a write to the page holding p would be seen: the mapping is not
 * writable (mprotect), or the page's uffd-wp bit is set (userfaultfd). */
int write_protected(const void *p);
/* Whether the page holding p carries the uffd-wp bit (pagemap bit 57). */
int uffd_wp_bit(const void *p);

/* ---- checks in a child process -------------------------------------------------
 * Suites that restore memory run each test's body in a child (in_child): a
 * failed check reports through a pipe and exits, the parent fails the test
 * with that message. */
extern int child_report_fd;
__attribute__((format(printf, 1, 2), noreturn)) void child_die(const char *fmt, ...);
#define CHECK(cond, ...)                                                          \
	do {                                                                      \
		if (!(cond))                                                      \
			child_die("%s:%d: %s: ", __FILE__, __LINE__, #cond), (void)0;   \
	} while (0)
#define CHECK_RC(call)                                                                     \
	do {                                                                               \
		int rc_ = (call);                                                          \
		if (rc_ < 0)                                                               \
			child_die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call,         \
				  ckpt_strerror(rc_), ckpt_last_error());                  \
	} while (0)
/* A CKPT_F_RESUME handle (with `flags` too) on the chain in dir, opened
 * with address randomisation off so that ckpt_open does not execute the
 * test again; not tracking yet.  NULL in a sanitizer build, where such a
 * handle is refused, after checking the refusal left no chain behind. */
ckpt_t *resumable_handle(const char *dir, unsigned flags);

/* Runs fn(dir) in a child, dir a chain directory in a fresh temporary one
 * (removed afterwards); the test fails with the child's message. */
void in_child(void (*fn)(const char *dir), const char *what);
/* Memory for copies, excluded from c: never restored. */
char *safe_area(ckpt_t *c, size_t bytes);

#endif

/*
 * track-softdirty.c - soft-dirty bits: detection only.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Where the kernel has CONFIG_MEM_SOFT_DIRTY, writing "4" to
 * /proc/self/clear_refs clears every page's soft-dirty bit (bit 55 of its
 * pagemap entry) and the next write sets it again.  The probe tells whether
 * this kernel keeps the bits; a back-end built on them is not part of this
 * version (no machine ckpt is tested on has them), so asking for it says so.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "track.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PM_SOFT_DIRTY (1ull << 55)

/* Whether a freshly written page shows its soft-dirty bit. */
static int kernel_keeps_bits(char *why, size_t whylen)
{
	size_t ps = ckpt__pagesize;
	char *m = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		snprintf(why, whylen, "mmap: %s", strerror(errno));
		return 0;
	}
	m[0] = 1;
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), ok = 0;
	if (fd < 0)
		snprintf(why, whylen, "/proc/self/pagemap: %s", strerror(errno));
	else if (pread(fd, &e, sizeof e, (off_t)((uintptr_t)m / ps * sizeof e)) != sizeof e)
		snprintf(why, whylen, "/proc/self/pagemap: cannot read an entry");
	else if (!(e & PM_SOFT_DIRTY))
		snprintf(why, whylen,
			 "this kernel keeps no soft-dirty bits (built without CONFIG_MEM_SOFT_DIRTY)");
	else
		ok = 1;
	if (fd >= 0)
		close(fd);
	munmap(m, ps);
	return ok;
}

static int sd_probe(char *why, size_t whylen)
{
	if (kernel_keeps_bits(why, whylen))
		snprintf(why, whylen,
			 "the kernel keeps soft-dirty bits, but this version of ckpt has no "
			 "back-end on them");
	return CKPT_ENOTSUP;
}

static int sd_unsupported(void)
{
	return ckpt__fail(CKPT_ENOTSUP, "the soft-dirty back-end is not part of this version");
}

static int sd_arm(const struct ckpt__region *r)
{
	(void)r;
	return sd_unsupported();
}

static int sd_range(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	(void)r, (void)lo, (void)hi;
	return sd_unsupported();
}

static int sd_protect(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi, int prot)
{
	(void)r, (void)lo, (void)hi, (void)prot;
	return -ENOTSUP;
}

const struct ckpt__backend ckpt__backend_softdirty = {
	.id = CKPT_BACKEND_SOFTDIRTY,
	.name = "softdirty",
	.probe = sd_probe,
	.install = sd_unsupported,
	.arm = sd_arm,
	.disarm = sd_range,
	.protect = sd_protect,
	.close = sd_range,
};

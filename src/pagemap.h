/*
 * pagemap.h - the PAGEMAP_SCAN ioctl on /proc/self/pagemap (Linux 6.7+),
 * defined here for older kernel headers.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_PAGEMAP_H
#define CKPT_PAGEMAP_H

#include <stdint.h>
#include <sys/ioctl.h>

struct ckpt__pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};

struct ckpt__page_region {
	uint64_t start, end, categories;
};

#define CKPT__PAGEMAP_SCAN _IOWR('f', 16, struct ckpt__pm_scan_arg)

#define CKPT__PAGE_IS_WPALLOWED (1u << 0)
#define CKPT__PAGE_IS_WRITTEN (1u << 1)
#define CKPT__PAGE_IS_FILE (1u << 2)
#define CKPT__PAGE_IS_PRESENT (1u << 3)
#define CKPT__PAGE_IS_SWAPPED (1u << 4)
#define CKPT__PAGE_IS_PFNZERO (1u << 5)
#define CKPT__PAGE_IS_HUGE (1u << 6)

#define CKPT__PM_SCAN_WP_MATCHING (1u << 0)
#define CKPT__PM_SCAN_CHECK_WPASYNC (1u << 1)

#endif /* CKPT_PAGEMAP_H */

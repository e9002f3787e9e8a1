/*
 * format.h - the snapshot file format (doc/FORMAT.md is its specification).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every structure here is stored as it is laid out in memory: little-endian,
 * fixed-width fields, no implicit padding (checked below).  The format code
 * never includes tracker headers.
 */
#ifndef CKPT_FORMAT_H
#define CKPT_FORMAT_H

#include "sys.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the snapshot format is written for little-endian hosts"
#endif

#define CKPT__MAGIC "CKPTSNAP"
#define CKPT__FOOTER_MAGIC "CKPTEND"
#define CKPT__FORMAT_VERSION 1

/* Pages of data per block: one block is one zstd frame (or raw), and the
 * unit of reading: one page costs at most this much decompression. */
#define CKPT__BLOCK_PAGES 64

/* Limits a reader enforces before allocating anything. */
#define CKPT__MAX_MAPS (1u << 20)
#define CKPT__MAX_RUNS (1u << 28)
#define CKPT__MAX_STRINGS (64u << 20)
#define CKPT__MAX_PAGE_SIZE (1u << 16)
#define CKPT__MAX_PROC (256u << 20)

/* Header flags. */
#define CKPT__SF_BASE 0x1u          /* a full snapshot: no parent */
#define CKPT__SF_NOT_RESUMABLE 0x2u /* the process had other threads */
#define CKPT__SF_PACKED_INDEX 0x4u  /* the index is packed (below), not struct ckpt__frun */
#define CKPT__SF_KNOWN (CKPT__SF_BASE | CKPT__SF_NOT_RESUMABLE | CKPT__SF_PACKED_INDEX)

/* Sections.  The header's `sect` holds the first four; PROC (the process
 * record a resume needs: registers, stack, descriptors... see proc.h) has
 * its own field, all zero in snapshots of a handle opened without
 * CKPT_F_RESUME. */
enum { CKPT__SEC_STRINGS, CKPT__SEC_MAPS, CKPT__SEC_INDEX, CKPT__SEC_BLOCKS, CKPT__NSECT };
#define CKPT__SEC_PROC CKPT__NSECT
#define CKPT__NSECT_ALL (CKPT__NSECT + 1)

struct ckpt__fsect {
	uint64_t offset, size, hash; /* hash: XXH64 of the section's bytes */
};

struct ckpt__fhdr {
	char magic[8];        /* "CKPTSNAP" */
	uint16_t version;     /* CKPT__FORMAT_VERSION */
	uint16_t header_size; /* sizeof(struct ckpt__fhdr) */
	uint32_t flags;       /* CKPT__SF_* */
	uint32_t page_size;
	uint32_t nthreads;    /* threads of the process at the commit */
	uint8_t chain_id[16];
	uint64_t id, parent;  /* parent 0 for a base */
	uint64_t time_ns;     /* CLOCK_REALTIME at the commit */
	struct ckpt__fsect sect[CKPT__NSECT];
	uint64_t data_offset, data_size; /* the blocks */
	uint64_t data_pages, zero_pages, file_pages; /* per kind of run */
	uint64_t raw_bytes;   /* data pages, uncompressed */
	uint32_t exe_off, exe_len; /* executable path, in the strings */
	uint32_t bid_off, bid_len; /* its GNU build-id, in the strings */
	struct ckpt__fsect proc;   /* the process record; zero if none */
	uint64_t hash; /* XXH64 of everything above */
};

/* Section i of the header, PROC included. */
#define CKPT__HSECT(h, i) ((i) == CKPT__SEC_PROC ? &(h)->proc : &(h)->sect[i])

/* Mapping flags. */
#define CKPT__MF_SHARED 0x1u
#define CKPT__MF_ANON 0x2u  /* no file behind it: unlisted pages are zero */
#define CKPT__MF_HEAP 0x4u  /* the brk heap */
#define CKPT__MF_KNOWN (CKPT__MF_SHARED | CKPT__MF_ANON | CKPT__MF_HEAP)

/* Mapping kinds: how a restore treats the pages. */
enum { CKPT__MK_TRACKED = 1, CKPT__MK_PINNED = 2, CKPT__MK_TLS = 3 };

struct ckpt__fmap {
	uint64_t start, end; /* page-aligned */
	uint64_t offset;     /* file offset of start */
	uint64_t inode;
	uint64_t born;       /* first snapshot holding this mapping whole */
	uint32_t dev_major, dev_minor;
	uint32_t name_off, name_len; /* in the strings */
	uint8_t prot;       /* PROT_* */
	uint8_t flags;      /* CKPT__MF_* */
	uint8_t page_shift; /* log2 of the mapping's page size */
	uint8_t kind;       /* CKPT__MK_* */
	uint32_t keep_off;  /* TLS: bytes from start not to restore (the thread */
	uint32_t keep_len;  /* descriptor); 0 otherwise */
	uint32_t reserved;
};

/* Kinds of page run. */
enum { CKPT__RK_DATA = 1, CKPT__RK_ZERO = 2, CKPT__RK_FILE = 3 };

struct ckpt__frun {
	uint64_t start;      /* page-aligned address */
	uint32_t npages;
	uint8_t kind;        /* CKPT__RK_* */
	uint8_t pad[3];
	uint32_t block;      /* DATA: the block holding every page of the run */
	uint32_t block_page; /* DATA: the run's first page in that block */
};

/*
 * The packed index (header flag CKPT__SF_PACKED_INDEX): the same runs, in
 * the same order, each as two unsigned LEB128 numbers:
 *   (gap << 2) | kind   gap: pages from the end of the previous run (from
 *                       address 0 for the first) to the start of this one
 *   npages - 1
 * A DATA run's block and first page in it are not stored: DATA runs take
 * the pages of the blocks in order, the first from page 0 of block 0, each
 * from where the one before it ended, moving on to the next block once a
 * block's pages are used up; no run crosses the end of a block, and the
 * runs use up every page of every block.  Runs are ordered and disjoint by
 * construction.  Readers expand it to struct ckpt__frun entries.
 */
#define CKPT__PACKED_KIND_BITS 2
#define CKPT__VARINT_MAX 10 /* bytes of a LEB128 uint64_t */

/* Block codecs.  RAWP: the pages as they are (csize = rsize), followed in
 * the file (outside csize) by the XXH64 of each page, 8 bytes a page; the
 * block's hash is that of those page hashes, so a reader may read and
 * check only the pages it needs. */
enum { CKPT__CODEC_RAW = 0, CKPT__CODEC_ZSTD = 1, CKPT__CODEC_RAWP = 2 };
/* The bytes a block takes in the data area: csize, and its page hashes. */
#define CKPT__BLOCK_SPAN(fb, page_size) \
	((uint64_t)(fb)->csize + ((fb)->codec == CKPT__CODEC_RAWP ? (fb)->rsize / (page_size) * 8 : 0))

struct ckpt__fblock {
	uint64_t offset;     /* in the file */
	uint32_t csize;      /* bytes stored */
	uint32_t rsize;      /* bytes of pages it holds */
	uint32_t codec;
	uint32_t reserved;
	uint64_t hash;       /* XXH64 of the stored bytes */
};

struct ckpt__ffooter {
	char magic[8];       /* "CKPTEND" */
	uint64_t file_size;  /* including this footer */
	uint64_t header_hash;
	uint64_t hash;       /* XXH64 of the 24 bytes above */
};

_Static_assert(sizeof(struct ckpt__fhdr) == 256, "header layout");
_Static_assert(sizeof(struct ckpt__fmap) == 72, "mapping layout");
_Static_assert(sizeof(struct ckpt__frun) == 24, "run layout");
_Static_assert(sizeof(struct ckpt__fblock) == 32, "block layout");
_Static_assert(sizeof(struct ckpt__ffooter) == 32, "footer layout");

/* File names in a chain directory. */
#define CKPT__SNAP_FMT "snap-%08llu.ckpt"
#define CKPT__TEMP_FMT ".snap-%08llu.tmp"
#define CKPT__LOCK_NAME "lock"

#endif /* CKPT_FORMAT_H */

/*
 * tests/gen-corrupt.c - writes the golden files of tests/corrupt/.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *     gen-corrupt DIR
 *
 * A small valid chain (a base and an increment) from the real writer, then
 * damaged copies of it, each with one thing wrong.  Damage that keeps the
 * hashes right (another page size, another executable, a run outside its
 * mapping...) recomputes them, so that the reader's later checks are what
 * refuses the file.  The output is deterministic: fixed chain id, times,
 * build-id and contents.  The files are kept in the repository; this
 * program documents how they were made and remakes them if the format
 * changes (make corrupt-files).  They hold the flat index (24 bytes a run,
 * as every file did before the packed one): the damage below edits its
 * entries, and test-format proves a reader still reads such files;
 * tests/test-index.c covers the packed index.
 *
 *     gen-corrupt --oversize-block FILE
 *
 * Applies the damage of oversized/snap-00000001.ckpt to the snapshot FILE in
 * place (the end-to-end suites use it on a chain their own process wrote).
 */
#include "format.h"
#include "mem.h"
#include "snap-write.h"
#include "xxhash.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PS 4096
#define BASE_ADDR 0x7f0000000000ull

static unsigned char pages[8][PS];

static void die(const char *what)
{
	fprintf(stderr, "gen-corrupt: %s: %s\n", what, strerror(errno));
	exit(1);
}

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die(path);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	rewind(f);
	unsigned char *b = malloc(*len);
	if (!b || fread(b, 1, *len, f) != *len)
		die(path);
	fclose(f);
	return b;
}

static void spit(const char *dir, const char *name, const unsigned char *b, size_t len)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(b, 1, len, f) != len || fclose(f))
		die(path);
}

/* Recomputes every hash after a deliberate change. */
static void rehash(unsigned char *b, size_t len)
{
	struct ckpt__fhdr h;
	memcpy(&h, b, sizeof h);
	for (int i = 0; i < CKPT__NSECT; i++)
		if (h.sect[i].offset + h.sect[i].size <= len)
			h.sect[i].hash = ckpt__xxh64(b + h.sect[i].offset, h.sect[i].size, 0);
	h.hash = ckpt__xxh64(&h, offsetof(struct ckpt__fhdr, hash), 0);
	memcpy(b, &h, sizeof h);
	struct ckpt__ffooter f;
	memcpy(&f, b + len - sizeof f, sizeof f);
	f.header_hash = h.hash;
	f.hash = ckpt__xxh64(&f, offsetof(struct ckpt__ffooter, hash), 0);
	memcpy(b + len - sizeof f, &f, sizeof f);
}

/* Grows the first zstd block of the file in *b to `want` bytes (0: 64 KiB
 * past the one-block buffer of a reader, page size x 64 bytes) with a
 * skippable zstd frame after its real frame.  The block still decompresses
 * to its stated size, its hash and every offset after it are updated: only
 * a bound on its size, or on what it holds, refuses it.  Returns 0, or -1
 * if the file has no zstd block. */
static int grow_block(unsigned char **b, size_t *len, size_t want)
{
	struct ckpt__fhdr h;
	memcpy(&h, *b, sizeof h);
	uint64_t tab = h.sect[CKPT__SEC_BLOCKS].offset;
	size_t nblocks = h.sect[CKPT__SEC_BLOCKS].size / sizeof(struct ckpt__fblock);
	struct ckpt__fblock blk;
	size_t k = 0;
	for (; k < nblocks; k++) {
		memcpy(&blk, *b + tab + k * sizeof blk, sizeof blk);
		if (blk.codec == CKPT__CODEC_ZSTD)
			break;
	}
	if (k == nblocks)
		return -1;
	if (!want)
		want = (size_t)h.page_size * CKPT__BLOCK_PAGES + 65536;
	if (want < blk.csize + 8)
		return -1;
	size_t extra = want - blk.csize, at = blk.offset + blk.csize;
	unsigned char *n = malloc(*len + extra);
	if (!n)
		die("out of memory");
	memcpy(n, *b, at);
	/* A skippable frame: magic 0x184D2A50, u32 size, then as many bytes. */
	uint32_t skip[2] = {0x184D2A50u, (uint32_t)(extra - 8)};
	memcpy(n + at, skip, 8);
	memset(n + at + 8, 0xa5, extra - 8);
	memcpy(n + at + extra, *b + at, *len - at);
	free(*b);
	*b = n;
	*len += extra;
	/* Everything after the block moves by `extra`: later blocks, the
	 * sections, the footer. */
	for (int i = 0; i < CKPT__NSECT_ALL; i++) {
		struct ckpt__fsect *x = CKPT__HSECT(&h, i);
		if (x->size && x->offset >= at)
			x->offset += extra;
	}
	tab = h.sect[CKPT__SEC_BLOCKS].offset;
	for (size_t i = 0; i < nblocks; i++) {
		struct ckpt__fblock o;
		memcpy(&o, n + tab + i * sizeof o, sizeof o);
		if (o.offset >= at)
			o.offset += extra;
		if (i == k) {
			o.csize = (uint32_t)want;
			o.hash = ckpt__xxh64(n + o.offset, o.csize, 0);
		}
		memcpy(n + tab + i * sizeof o, &o, sizeof o);
	}
	h.data_size += extra;
	memcpy(n, &h, sizeof h);
	struct ckpt__ffooter f;
	memcpy(&f, n + *len - sizeof f, sizeof f);
	f.file_size = *len;
	memcpy(n + *len - sizeof f, &f, sizeof f);
	rehash(n, *len);
	return 0;
}

static void write_snap(int dirfd, uint64_t id, const uint8_t chain[16], const char *bid)
{
	static struct ckpt__wmap maps[2];
	maps[0] = (struct ckpt__wmap){.start = BASE_ADDR, .end = BASE_ADDR + 8 * PS, .born = 1,
				      .prot = 3, .flags = CKPT__MF_ANON, .kind = CKPT__MK_TRACKED,
				      .page_shift = 12, .name = ""};
	maps[1] = (struct ckpt__wmap){.start = BASE_ADDR + 64 * PS, .end = BASE_ADDR + 66 * PS,
				      .born = 1, .prot = 3, .flags = CKPT__MF_HEAP | CKPT__MF_ANON,
				      .kind = CKPT__MK_TRACKED, .page_shift = 12, .name = "[heap]"};
	struct ckpt__wrun runs[3];
	size_t n = 0;
	if (id == 1) {
		runs[n++] = (struct ckpt__wrun){BASE_ADDR, 8, CKPT__RK_DATA, (uintptr_t)pages};
		runs[n++] = (struct ckpt__wrun){BASE_ADDR + 64 * PS, 1, CKPT__RK_DATA,
						(uintptr_t)pages[2]};
	} else {
		runs[n++] = (struct ckpt__wrun){BASE_ADDR + 3 * PS, 1, CKPT__RK_DATA,
						(uintptr_t)pages[7]};
		runs[n++] = (struct ckpt__wrun){BASE_ADDR + 5 * PS, 1, CKPT__RK_ZERO, 0};
	}
	struct ckpt__wplan p = {
		.id = id, .parent = id - 1, .flags = id == 1 ? CKPT__SF_BASE : 0, .page_size = PS,
		.nthreads = 1, .exe = "/usr/bin/ckpt-golden", .build_id = bid, .build_id_len = 20,
		.maps = maps, .nmaps = 2, .runs = runs, .nruns = n, .level = 3, .threads = 1, .flat_index = 1,
		.time_ns = 1795000000000000000ull + id,
	};
	memcpy(p.chain_id, chain, 16);
	struct ckpt__wresult res;
	if (ckpt__snap_write(dirfd, &p, &res) != 0) {
		fprintf(stderr, "gen-corrupt: cannot write snapshot %llu\n", (unsigned long long)id);
		exit(1);
	}
}

/* Snapshot `id` of a chain of one 64-page mapping: the base stores every
 * page (one block, 64 pages), 2 one page changed since. */
static void write_full(int dirfd, uint64_t id, const uint8_t chain[16], const char *bid)
{
	static unsigned char full[CKPT__BLOCK_PAGES][PS];
	for (int p = 0; p < CKPT__BLOCK_PAGES; p++)
		for (int i = 0; i < PS; i++)
			full[p][i] = (unsigned char)(p + i % 13);
	static struct ckpt__wmap m;
	m = (struct ckpt__wmap){.start = BASE_ADDR, .end = BASE_ADDR + CKPT__BLOCK_PAGES * PS,
				.born = 1, .prot = 3, .flags = CKPT__MF_ANON,
				.kind = CKPT__MK_TRACKED, .page_shift = 12, .name = ""};
	struct ckpt__wrun r = {BASE_ADDR, CKPT__BLOCK_PAGES, CKPT__RK_DATA, (uintptr_t)full};
	if (id == 2)
		r = (struct ckpt__wrun){BASE_ADDR + 5 * PS, 1, CKPT__RK_DATA, (uintptr_t)pages[7]};
	struct ckpt__wplan p = {.id = id, .parent = id - 1, .flags = id == 1 ? CKPT__SF_BASE : 0,
				.page_size = PS, .nthreads = 1, .exe = "/usr/bin/ckpt-golden",
				.build_id = bid, .build_id_len = 20, .maps = &m, .nmaps = 1,
				.runs = &r, .nruns = 1, .level = 3, .threads = 1, .flat_index = 1,
				.time_ns = 1795000000000000000ull + id};
	memcpy(p.chain_id, chain, 16);
	struct ckpt__wresult res;
	if (ckpt__snap_write(dirfd, &p, &res) != 0) {
		fprintf(stderr, "gen-corrupt: cannot write the 64-page snapshot %llu\n",
			(unsigned long long)id);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--oversize-block")) {
		size_t len;
		unsigned char *b = slurp(argv[2], &len);
		if (grow_block(&b, &len, 0) != 0) {
			fprintf(stderr, "gen-corrupt: %s has no zstd block\n", argv[2]);
			return 1;
		}
		FILE *f = fopen(argv[2], "wb");
		if (!f || fwrite(b, 1, len, f) != len || fclose(f))
			die(argv[2]);
		free(b);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: gen-corrupt DIR | gen-corrupt --oversize-block FILE\n");
		return 2;
	}
	const char *dir = argv[1];
	for (int p = 0; p < 8; p++)
		for (int i = 0; i < PS; i++)
			pages[p][i] = (unsigned char)(p * 31 + i % 251);
	const uint8_t chain[16] = "golden-chain-id";
	const uint8_t other[16] = "another-chain-i";
	const char bid[21] = "golden-build-id-0001";
	char path[1024];

	/* The good chain. */
	snprintf(path, sizeof path, "%s/good", dir);
	mkdir(dir, 0755);
	mkdir(path, 0755);
	int fd = open(path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		die(path);
	write_snap(fd, 1, chain, bid);
	write_snap(fd, 2, chain, bid);
	close(fd);
	size_t len;
	snprintf(path, sizeof path, "%s/good/snap-00000001.ckpt", dir);
	unsigned char *base = slurp(path, &len);
	unsigned char *b = malloc(len);
	struct ckpt__fhdr h;
	memcpy(&h, base, sizeof h);

	/* One problem each. */
	spit(dir, "truncated.ckpt", base, len - 100);
	spit(dir, "empty.ckpt", base, 0);
	memcpy(b, base, len);
	b[20] ^= 0x01; /* a bit of the header */
	spit(dir, "flipped-header.ckpt", b, len);
	memcpy(b, base, len);
	b[h.sect[CKPT__SEC_INDEX].offset + 3] ^= 0x40;
	spit(dir, "flipped-index.ckpt", b, len);
	memcpy(b, base, len);
	b[h.data_offset + 17] ^= 0x08; /* page data: found when the block is read */
	spit(dir, "flipped-block.ckpt", b, len);
	memcpy(b, base, len);
	b[len - 20] ^= 0x02;
	spit(dir, "flipped-footer.ckpt", b, len);
	memcpy(b, base, len);
	memcpy(b, "CKPTSNAQ", 8);
	spit(dir, "wrong-magic.ckpt", b, len);

	/* Consistent files with wrong contents: the hashes recomputed. */
	struct ckpt__fhdr *hp = (struct ckpt__fhdr *)b;
	memcpy(b, base, len);
	hp->version = 2;
	rehash(b, len);
	spit(dir, "version-2.ckpt", b, len);
	memcpy(b, base, len);
	memcpy(b + h.sect[CKPT__SEC_STRINGS].offset + hp->bid_off, "other-build-id-00099", 20);
	rehash(b, len);
	spit(dir, "other-executable.ckpt", b, len);
	memcpy(b, base, len);
	struct ckpt__frun run;
	memcpy(&run, b + h.sect[CKPT__SEC_INDEX].offset, sizeof run);
	run.start = BASE_ADDR + 20 * PS; /* between the two mappings */
	memcpy(b + h.sect[CKPT__SEC_INDEX].offset, &run, sizeof run);
	rehash(b, len);
	spit(dir, "run-outside-mapping.ckpt", b, len);
	memcpy(b, base, len);
	memcpy(&run, b + h.sect[CKPT__SEC_INDEX].offset, sizeof run);
	run.block = 99;
	memcpy(b + h.sect[CKPT__SEC_INDEX].offset, &run, sizeof run);
	rehash(b, len);
	spit(dir, "block-out-of-range.ckpt", b, len);
	memcpy(b, base, len);
	hp->sect[CKPT__SEC_MAPS].size = 1u << 30; /* a section far past the end */
	rehash(b, len);
	spit(dir, "huge-section.ckpt", b, len);
	memcpy(b, base, len);
	hp->parent = 7;
	rehash(b, len);
	spit(dir, "base-with-parent.ckpt", b, len);

	/* A chain whose increment belongs to another chain. */
	snprintf(path, sizeof path, "%s/foreign", dir);
	mkdir(path, 0755);
	fd = open(path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		die(path);
	write_snap(fd, 1, chain, bid);
	write_snap(fd, 2, other, bid);
	close(fd);
	/* A chain whose increment has another page size (a sound file). */
	snprintf(path, sizeof path, "%s/pagesize", dir);
	mkdir(path, 0755);
	fd = open(path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		die(path);
	write_snap(fd, 1, chain, bid);
	{
		static unsigned char big[16384];
		static struct ckpt__wmap m;
		m = (struct ckpt__wmap){.start = BASE_ADDR, .end = BASE_ADDR + 8 * PS, .born = 1,
					.prot = 3, .flags = CKPT__MF_ANON, .kind = CKPT__MK_TRACKED,
					.page_shift = 14, .name = ""};
		memset(big, 9, sizeof big);
		struct ckpt__wrun r = {BASE_ADDR, 1, CKPT__RK_DATA, (uintptr_t)big};
		struct ckpt__wplan p = {.id = 2, .parent = 1, .page_size = 16384, .nthreads = 1,
					.exe = "/usr/bin/ckpt-golden", .build_id = bid,
					.build_id_len = 20, .maps = &m, .nmaps = 1, .runs = &r,
					.nruns = 1, .level = 3, .threads = 1, .flat_index = 1,
					.time_ns = 1795000000000000002ull};
		memcpy(p.chain_id, chain, 16);
		struct ckpt__wresult res;
		if (ckpt__snap_write(fd, &p, &res) != 0) {
			fprintf(stderr, "gen-corrupt: cannot write the 16 KiB snapshot\n");
			return 1;
		}
	}
	close(fd);
	/* A chain with a missing link. */
	snprintf(path, sizeof path, "%s/gap", dir);
	mkdir(path, 0755);
	fd = open(path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		die(path);
	write_snap(fd, 1, chain, bid);
	write_snap(fd, 2, chain, bid);
	write_snap(fd, 3, chain, bid);
	unlinkat(fd, "snap-00000002.ckpt", 0);
	close(fd);

	/* A sound chain whose base has one block of 64 pages: a reader's
	 * whole one-block buffer.  Then the same chain with that block grown
	 * past the buffer, consistent otherwise. */
	for (int k = 0; k < 2; k++) {
		snprintf(path, sizeof path, "%s/%s", dir, k ? "oversized" : "full");
		mkdir(path, 0755);
		fd = open(path, O_RDONLY | O_DIRECTORY);
		if (fd < 0)
			die(path);
		write_full(fd, 1, chain, bid);
		write_full(fd, 2, chain, bid);
		close(fd);
	}
	free(base);
	snprintf(path, sizeof path, "%s/oversized/snap-00000001.ckpt", dir);
	base = slurp(path, &len);
	if (grow_block(&base, &len, 0) != 0) {
		fprintf(stderr, "gen-corrupt: the 64-page snapshot has no zstd block\n");
		return 1;
	}
	spit(dir, "oversized/snap-00000001.ckpt", base, len);
	/* The same base with 1 KiB after the block's frame: smaller than its
	 * pages, but not one frame. */
	free(base);
	snprintf(path, sizeof path, "%s/full/snap-00000001.ckpt", dir);
	base = slurp(path, &len);
	struct ckpt__fblock fb;
	memcpy(&h, base, sizeof h);
	memcpy(&fb, base + h.sect[CKPT__SEC_BLOCKS].offset, sizeof fb);
	if (grow_block(&base, &len, fb.csize + 1024) != 0) {
		fprintf(stderr, "gen-corrupt: the 64-page snapshot has no zstd block\n");
		return 1;
	}
	spit(dir, "trailing-frame.ckpt", base, len);
	/* A header whose count of page bytes disagrees with the blocks. */
	free(base);
	base = slurp(path, &len);
	memcpy(&h, base, sizeof h);
	h.raw_bytes += 4096;
	memcpy(base, &h, sizeof h);
	rehash(base, len);
	spit(dir, "raw-bytes.ckpt", base, len);
	free(b);
	free(base);
	return 0;
}

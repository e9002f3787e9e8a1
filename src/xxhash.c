/*
 * xxhash.c - XXH64 (Yann Collet's algorithm, written from its specification).
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "xxhash.h"

#include <string.h>
#include <sys/uio.h>

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static inline uint64_t rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64_t read64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v; /* little-endian hosts only (checked in format.h) */
}

static inline uint32_t read32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static inline uint64_t round1(uint64_t acc, uint64_t in)
{
	acc += in * P2;
	acc = rotl(acc, 31);
	return acc * P1;
}

static inline uint64_t merge(uint64_t acc, uint64_t v)
{
	acc ^= round1(0, v);
	return acc * P1 + P4;
}

/* The 32-byte stripes of [p, p + len) (len a multiple of 32) into v. */
static inline void stripes(uint64_t v[4], const unsigned char *p, size_t len)
{
	const unsigned char *end = p + len;
	uint64_t v1 = v[0], v2 = v[1], v3 = v[2], v4 = v[3];
	for (; p < end; p += 32) {
		v1 = round1(v1, read64(p));
		v2 = round1(v2, read64(p + 8));
		v3 = round1(v3, read64(p + 16));
		v4 = round1(v4, read64(p + 24));
	}
	v[0] = v1;
	v[1] = v2;
	v[2] = v3;
	v[3] = v4;
}

static inline void start(uint64_t v[4], uint64_t seed)
{
	v[0] = seed + P1 + P2;
	v[1] = seed + P2;
	v[2] = seed;
	v[3] = seed - P1;
}

static inline uint64_t converge(const uint64_t v[4])
{
	uint64_t h = rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18);
	h = merge(h, v[0]);
	h = merge(h, v[1]);
	h = merge(h, v[2]);
	return merge(h, v[3]);
}

static inline uint64_t avalanche(uint64_t h)
{
	h ^= h >> 33;
	h *= P2;
	h ^= h >> 29;
	h *= P3;
	h ^= h >> 32;
	return h;
}

uint64_t ckpt__xxh64(const void *data, size_t len, uint64_t seed)
{
	const unsigned char *p = data, *end = p + len;
	uint64_t h;
	if (len >= 32) {
		uint64_t v[4];
		start(v, seed);
		size_t body = len & ~(size_t)31;
		stripes(v, p, body);
		p += body;
		h = converge(v);
	} else {
		h = seed + P5;
	}
	h += (uint64_t)len;
	while (p + 8 <= end) {
		h ^= round1(0, read64(p));
		h = rotl(h, 27) * P1 + P4;
		p += 8;
	}
	if (p + 4 <= end) {
		h ^= (uint64_t)read32(p) * P1;
		h = rotl(h, 23) * P2 + P3;
		p += 4;
	}
	while (p < end) {
		h ^= (*p++) * P5;
		h = rotl(h, 11) * P1;
	}
	return avalanche(h);
}

uint64_t ckpt__xxh64_pieces(const struct iovec *iov, int n, uint64_t seed)
{
	uint64_t v[4], len = 0;
	start(v, seed);
	for (int i = 0; i < n; i++) {
		stripes(v, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	if (len < 32)
		return ckpt__xxh64(n ? iov[0].iov_base : NULL, (size_t)len, seed);
	return avalanche(converge(v) + len);
}

/*
 * sys.h - raw system calls and small helpers shared by every module.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Code that runs inside a write fault must not touch errno: errno lives in
 * the thread's TLS block and glibc writes it when a call fails.  The raw
 * calls below return -errno in the result instead and never write memory
 * other than what the kernel is asked to write.
 */
#ifndef CKPT_SYS_H
#define CKPT_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define CKPT__HIDDEN __attribute__((visibility("hidden")))
#define CKPT__UNUSED __attribute__((unused))
#define CKPT__LIKELY(x) __builtin_expect(!!(x), 1)
#define CKPT__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Functions on the fault path are never instrumented: a sanitizer's
 * bookkeeping would write memory the fault handler may itself protect. */
#if defined(__clang__)
#define CKPT__FAULTPATH                                                     \
	__attribute__((no_sanitize("address", "undefined"), noinline))
#elif defined(__GNUC__) && __GNUC__ >= 11
/* Loop distribution would turn byte loops into memmove/memset calls, which a
 * sanitizer intercepts. */
#define CKPT__FAULTPATH                                                     \
	__attribute__((no_sanitize_address, no_sanitize("undefined"),       \
		       no_stack_protector, noinline,                         \
		       optimize("no-tree-loop-distribute-patterns")))
#else
#define CKPT__FAULTPATH __attribute__((noinline))
#endif

#if defined(__x86_64__)
static inline long ckpt__sys6(long n, long a, long b, long c, long d, long e, long f)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#elif defined(__aarch64__)
static inline long ckpt__sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}
#else
#error "ckpt needs raw system calls for this architecture (x86_64 and aarch64 are supported)"
#endif

static inline long ckpt__sys3(long n, long a, long b, long c)
{
	return ckpt__sys6(n, a, b, c, 0, 0, 0);
}

static inline long ckpt__raw_mprotect(uintptr_t addr, size_t len, int prot)
{
	return ckpt__sys3(SYS_mprotect, (long)addr, (long)len, prot);
}

static inline long ckpt__raw_open(const char *path, int flags)
{
#ifdef SYS_open
	return ckpt__sys3(SYS_open, (long)path, flags, 0);
#else
	return ckpt__sys6(SYS_openat, -100 /* AT_FDCWD */, (long)path, flags, 0, 0, 0);
#endif
}

static inline long ckpt__raw_read(int fd, void *buf, size_t n)
{
	return ckpt__sys3(SYS_read, fd, (long)buf, (long)n);
}

/* ckpt's own reads of its files: past the program's interposers (which
 * would look for pages to open in every piece), with no errno written. */
static inline long ckpt__raw_pread(int fd, void *buf, size_t n, uint64_t off)
{
	return ckpt__sys6(SYS_pread64, fd, (long)buf, (long)n, (long)off, 0, 0);
}

/* preadv(2) takes the offset as two halves, low first. */
static inline long ckpt__raw_preadv(int fd, const struct iovec *iov, int n, uint64_t off)
{
	return ckpt__sys6(SYS_preadv, fd, (long)iov, n, (long)off, (long)(off >> 32 >> 32), 0);
}

static inline long ckpt__raw_write(int fd, const void *buf, size_t n)
{
	return ckpt__sys3(SYS_write, fd, (long)buf, (long)n);
}

static inline long ckpt__raw_close(int fd)
{
	return ckpt__sys3(SYS_close, fd, 0, 0);
}

static inline long ckpt__raw_gettid(void)
{
	return ckpt__sys3(SYS_gettid, 0, 0, 0);
}

static inline long ckpt__raw_sched_yield(void)
{
	return ckpt__sys3(SYS_sched_yield, 0, 0, 0);
}

/* Index of the first of the n elements of the array `a`, sorted and
 * disjoint ranges, whose member `endf` (exclusive end) is above `key`; n if
 * none.  The element holding `key`, if any, is that one.  Fault-safe. */
#define CKPT__FIRST_ENDING_AFTER(a, n, endf, key)                                 \
	__extension__({                                                           \
		size_t lo_ = 0, hi_ = (n);                                        \
		while (lo_ < hi_) {                                               \
			size_t mid_ = lo_ + (hi_ - lo_) / 2;                      \
			if ((a)[mid_].endf <= (key))                              \
				lo_ = mid_ + 1;                                   \
			else                                                      \
				hi_ = mid_;                                       \
		}                                                                 \
		lo_;                                                              \
	})

/* The system page size, cached at load time. */
extern CKPT__HIDDEN size_t ckpt__pagesize;
extern CKPT__HIDDEN unsigned ckpt__pageshift;

static inline uintptr_t ckpt__page_down(uintptr_t a)
{
	return a & ~(uintptr_t)(ckpt__pagesize - 1);
}

static inline uintptr_t ckpt__page_up(uintptr_t a)
{
	return (a + ckpt__pagesize - 1) & ~(uintptr_t)(ckpt__pagesize - 1);
}

/* Monotonic clock in nanoseconds. */
CKPT__HIDDEN uint64_t ckpt__now_ns(void);

/* Writes "ckpt: <msg>\n" to stderr with raw calls only (fault path); each
 * "%x" in msg prints the next of `values` in hexadecimal. */
CKPT__HIDDEN void ckpt__fault_message(const char *msg, const uintptr_t *values, int nvalues);

#endif /* CKPT_SYS_H */

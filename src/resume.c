/*
 * resume.c - continuing a killed process from the newest snapshot of its
 * chain.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The design, in short (doc/RESUME.md has the whole of it):
 *
 * Layout.  A resumed process needs the old addresses.  A handle opened with
 * CKPT_F_RESUME turns address space randomisation off and executes the
 * program again, once, with the same arguments and environment; with the
 * same executable, libraries and stack limit, Linux then lays out every
 * run of the program alike: the executable, the libraries, the thread
 * pointer and the stack top are where they were, and the heap starts where
 * it started.  A resume checks all of that before it changes anything.
 *
 * The commit.  ckpt_commit of a resumable handle saves the callee-saved
 * registers, stack pointer and return address (ckpt__ctx_save, like
 * setjmp), then records the stack from that pointer up, the signal mask and
 * dispositions, the directory, umask, open regular files, every mapping and
 * library, argv and the environment: the PROC section of the snapshot.
 *
 * The resume.  ckpt_open finds the chain, checks it, begins tracking, and
 * lets the in-place restore (restore.c) bring every tracked page back:
 * unmapping what the new process has and the old did not, recreating the
 * rest, the heap's break included.  Then, on a stack of ckpt's own, the old
 * stack and glibc's thread descriptor are written back, the signal mask
 * set, and the registers loaded: the program returns from the ckpt_commit
 * that wrote the snapshot, with CKPT_RESUMED.
 *
 * ckpt's own memory and state (the handle included: a resumable handle
 * lives in ckpt's state page, at the same address in both processes) are
 * never restored: the resumed process's ckpt is the new one, already
 * tracking and continuing the chain.
 *
 * glibc's list of threads (in ld.so's data, restored) still names the
 * compression threads that ran while the snapshot was written; they do not
 * exist in the new process.  The main thread's descriptor is the oldest
 * entry, so its `next` is the list head: the list is cut back to the main
 * thread alone.  The offsets of that node and of the tid in the descriptor
 * are verified at each commit (the tid must read as gettid()); where they
 * do not verify, the snapshot is not resumable.
 *
 * x86-64 only.  Not under AddressSanitizer, whose shadow memory ckpt does
 * not snapshot.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "resume.h"
#include "error.h"
#include "inject.h"
#include "maps.h"
#include "mem.h"
#include "pipes.h"
#include "rangeset.h"
#include "rethread.h"
#include "run.h"
#include "track.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <asm/prctl.h>
#define CKPT__CAN_RESUME 1
#else
#define CKPT__CAN_RESUME 0
#endif

uint64_t ckpt__resumed_id;

/* glibc's struct pthread on x86-64: the thread list node and the tid. */
#define GLIBC_LIST_OFF 0x2c0u
#define GLIBC_TID_OFF 0x2d0u
#define RESUME_STACK (256u << 10)

extern void __asan_init(void) __attribute__((weak));

/* ---- registers ----------------------------------------------------------------- */

#if CKPT__CAN_RESUME
/* struct ckpt__pctx: rbx 0, rbp 8, r12 16, r13 24, r14 32, r15 40, rsp 48,
 * rip 56, mxcsr 64, fpucw 68. */
__asm__(".text\n"
	".globl ckpt__ctx_save\n"
	".hidden ckpt__ctx_save\n"
	".type ckpt__ctx_save, @function\n"
	"ckpt__ctx_save:\n"
	"	movq %rbx, 0(%rdi)\n"
	"	movq %rbp, 8(%rdi)\n"
	"	movq %r12, 16(%rdi)\n"
	"	movq %r13, 24(%rdi)\n"
	"	movq %r14, 32(%rdi)\n"
	"	movq %r15, 40(%rdi)\n"
	"	leaq 8(%rsp), %rdx\n"
	"	movq %rdx, 48(%rdi)\n"
	"	movq (%rsp), %rdx\n"
	"	movq %rdx, 56(%rdi)\n"
	"	stmxcsr 64(%rdi)\n"
	"	fnstcw 68(%rdi)\n"
	"	xorl %eax, %eax\n"
	"	ret\n"
	".size ckpt__ctx_save, .-ckpt__ctx_save\n"
	/* ckpt__ctx_jump(ctx, value): never returns. */
	".globl ckpt__ctx_jump\n"
	".hidden ckpt__ctx_jump\n"
	".type ckpt__ctx_jump, @function\n"
	"ckpt__ctx_jump:\n"
	"	ldmxcsr 64(%rdi)\n"
	"	fldcw 68(%rdi)\n"
	"	movq 0(%rdi), %rbx\n"
	"	movq 8(%rdi), %rbp\n"
	"	movq 16(%rdi), %r12\n"
	"	movq 24(%rdi), %r13\n"
	"	movq 32(%rdi), %r14\n"
	"	movq 40(%rdi), %r15\n"
	"	movq 48(%rdi), %rsp\n"
	"	movl %esi, %eax\n"
	"	jmpq *56(%rdi)\n"
	".size ckpt__ctx_jump, .-ckpt__ctx_jump\n"
	/* ckpt__on_stack(top, fn, arg): calls fn(arg) with the stack at top. */
	".globl ckpt__on_stack\n"
	".hidden ckpt__on_stack\n"
	".type ckpt__on_stack, @function\n"
	"ckpt__on_stack:\n"
	"	movq %rdi, %rsp\n"
	"	andq $-16, %rsp\n"
	"	movq %rdx, %rdi\n"
	"	callq *%rsi\n"
	"	ud2\n"
	".size ckpt__on_stack, .-ckpt__on_stack\n");
CKPT__HIDDEN void ckpt__ctx_jump(const struct ckpt__pctx *ctx, int value) __attribute__((noreturn));
CKPT__HIDDEN void ckpt__on_stack(void *top, void (*fn)(void *), void *arg)
	__attribute__((noreturn));

static uintptr_t fs_base(void)
{
	uintptr_t v = 0;
	syscall(SYS_arch_prctl, ARCH_GET_FS, &v);
	return v;
}
#else
int ckpt__ctx_save(struct ckpt__pctx *ctx)
{
	memset(ctx, 0, sizeof *ctx);
	return 0;
}

static uintptr_t fs_base(void)
{
	return 0;
}
#endif

static int resumable_here(const char **why)
{
	*why = NULL;
	if (!CKPT__CAN_RESUME)
		*why = "resuming is implemented for x86-64 only";
	else if (__asan_init)
		*why = "resuming is not available under AddressSanitizer (its shadow memory is not "
		       "snapshotted)";
	return *why == NULL;
}

/* ---- address space randomisation ---------------------------------------------- */

#define NORANDOM_MARK "CKPT_NORANDOM_PID"

int ckpt__resume_norandom(void)
{
	const char *why;
	if (!resumable_here(&why))
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: %s", why);
	int pers = personality(0xffffffff);
	if (pers < 0)
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: personality: %s", strerror(errno));
	if (pers & ADDR_NO_RANDOMIZE)
		return 0;
	/* Once per process: after the exec the flag must be there. */
	char mine[32];
	snprintf(mine, sizeof mine, "%ld", (long)getpid());
	const char *mark = getenv(NORANDOM_MARK);
	if (mark && !strcmp(mark, mine))
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: address space randomisation stays on "
						"after executing the program again (set-user-ID?)");
	if (personality((unsigned long)pers | ADDR_NO_RANDOMIZE) < 0)
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: cannot turn address randomisation off: %s",
				  strerror(errno));
	/* argv as the kernel has it; the environment as it is now. */
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	size_t cap = 1 << 20, n = 0;
	char *buf = ckpt__mem_alloc(cap);
	if (fd < 0 || !buf) {
		if (fd >= 0)
			close(fd);
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: cannot read /proc/self/cmdline");
	}
	for (ssize_t r; n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0;)
		n += (size_t)r;
	close(fd);
	buf[n] = '\0';
	size_t argc = 0;
	for (size_t i = 0; i < n; i++)
		argc += buf[i] == '\0';
	char **argv = ckpt__mem_alloc((argc + 2) * sizeof *argv);
	if (!argv)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	size_t k = 0;
	for (size_t i = 0; i < n && k < argc; i += strlen(buf + i) + 1)
		argv[k++] = buf + i;
	argv[k] = NULL;
	setenv(NORANDOM_MARK, mine, 1);
	fflush(NULL);
	/* By its path, so that the process keeps its name (comm comes from
	 * the file name executed); /proc/self/exe if it is gone. */
	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[len > 0 ? len : 0] = '\0';
	if (len > 0 && access(exe, X_OK) == 0)
		execv(exe, argv);
	execv("/proc/self/exe", argv);
	int e = errno;
	unsetenv(NORANDOM_MARK);
	return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: cannot execute the program again: %s",
			  strerror(e));
}

/* ---- the record of a commit ----------------------------------------------------- */

static int record_rest(struct ckpt__pbuf *b, const struct ckpt__chainw *w);

/* The descriptor offsets of the thread whose pointer is fs and id tid,
 * verified against this glibc (0 where they do not verify). */
static void glibc_offsets(struct ckpt__pctx *ctx, int32_t tid)
{
	ctx->list_off = ctx->tid_off = 0;
	if (ctx->fs_base && *(const int32_t *)(ctx->fs_base + GLIBC_TID_OFF) == tid) {
		ctx->list_off = GLIBC_LIST_OFF;
		ctx->tid_off = GLIBC_TID_OFF;
	}
}

int ckpt__resume_record(struct ckpt__pbuf *b, struct ckpt__pctx *ctx,
			const struct ckpt__chainw *w)
{
	ctx->fs_base = fs_base();
	ctx->flags = 0;
	glibc_offsets(ctx, (int32_t)syscall(SYS_gettid));
	ckpt__pbuf_add(b, CKPT__PE_CTX, ctx, sizeof *ctx, NULL, 0);
	/* The stack, from the saved pointer to the top of its mapping. */
	struct ckpt__maps m = {0};
	int rc = ckpt__maps_read(&m);
	if (rc)
		return rc;
	long i = ckpt__maps_find(&m, ctx->rsp);
	if (i >= 0) {
		uint64_t range[2] = {ctx->rsp & ~(uint64_t)15, m.v[i].end};
		ckpt__pbuf_add(b, CKPT__PE_STACK, range, sizeof range, (const void *)range[0],
			       range[1] - range[0]);
	}
	ckpt__maps_free(&m);
	if (i < 0)
		return ckpt__fail(CKPT_EINTERNAL, "ckpt_commit: the stack pointer is in no mapping");
	return record_rest(b, w);
}

int ckpt__resume_record_detached(struct ckpt__pbuf *b, uintptr_t handle, uintptr_t main_fs,
				 const struct ckpt__chainw *w)
{
	struct ckpt__pctx ctx;
	memset(&ctx, 0, sizeof ctx);
	ctx.flags = CKPT__PC_NOSELF;
	ctx.handle = handle;
	ctx.fs_base = main_fs;
	glibc_offsets(&ctx, (int32_t)getpid());
	ckpt__pbuf_add(b, CKPT__PE_CTX, &ctx, sizeof ctx, NULL, 0);
	return record_rest(b, w);
}

/* What both kinds of record hold after the registers. */
static int record_rest(struct ckpt__pbuf *b, const struct ckpt__chainw *w)
{
	int rc;
	/* The chain's descriptors: its directory and lock, and the reader's
	 * (a restore opens it), snapshots included. */
	size_t nsnaps = w->rd_open ? w->rd.n : 0, nown = 0;
	int *fds = ckpt__mem_alloc((3 + nsnaps) * sizeof *fds);
	if (!fds)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory");
	fds[nown++] = w->dirfd;
	fds[nown++] = w->lockfd;
	if (w->rd_open)
		fds[nown++] = w->rd.dirfd;
	for (size_t k = 0; k < nsnaps; k++)
		fds[nown++] = w->rd.snaps[k].fd;
	struct ckpt__pown own = {fds, nown, w->dirfd};
	rc = ckpt__proc_gather(b, &own);
	ckpt__mem_free(fds, (3 + nsnaps) * sizeof *fds);
	return rc;
}

/* ---- reading a record ------------------------------------------------------------ */

struct rfd {
	struct ckpt__pfd f;
	char *path;
};

struct rvma {
	struct ckpt__pvma v;
	char *path;
};

struct tmem {
	uint64_t lo, hi;
	unsigned char *bytes;
};

struct ckpt__resume {
	uint64_t id;
	const struct ckpt__snap *snap;
	struct ckpt__chainw *w;
	const char *dir;
	unsigned skip;         /* damaged snapshots above id */
	uint64_t newest;       /* the newest id in the directory */
	struct ckpt__pctx ctx;
	int have_ctx;
	int noself; /* no program thread committed (CKPT__PC_NOSELF) */
	uintptr_t stack_lo, stack_hi;
	const unsigned char *stack; /* in the snapshot's record */
	uint64_t sigmask;
	struct ckpt__psig sig[64];
	unsigned nsig;
	char cwd[PATH_MAX];
	int have_cwd;
	uint32_t umask;
	uint64_t brk_start, brk_end;
	struct rfd *fds;
	size_t nfds, fds_cap;
	struct rvma *vmas;
	size_t nvmas, vmas_cap;
	struct ckpt__rpipes pipes; /* the program's own pipes */
	/* glibc's thread descriptor as the snapshot has it. */
	uintptr_t tcb_lo;
	unsigned char *tcb;
	size_t tcb_len;
	void *stack_mem; /* ckpt's stack for the last steps */
	int started;     /* the process has begun to change */
	const char *err; /* what a record check found */
	char errbuf[PATH_MAX + 256];
	struct ckpt__rset excl; /* the handle's ckpt_exclude ranges */
	struct ckpt__rset made; /* mapped by precreate */
	uintptr_t brk_was;      /* the break before precreate moved it, or 0 */
	struct ckpt__rthreads thr; /* the program's threads (THREAD entries) */
	int32_t (*fdnum)[2];       /* descriptors not restored: number, flags */
	size_t nfdnum, fdnum_cap;
	struct tmem *tmem;         /* their memory outside tracked mappings */
	size_t ntmem, tmem_cap;
	uintptr_t main_fs;         /* the main thread's thread pointer */
	uintptr_t main_stack_hi;   /* and the end of its stack */
};

/* Whether the resume creates threads again: the record has more than one,
 * or no program thread committed (then even a lone main thread comes back
 * from its THREAD entry, not from the CTX one). */
static int threaded(const struct ckpt__resume *r)
{
	return r->thr.n > 1 || r->noself;
}

static char *dupn(const unsigned char *p, size_t n)
{
	char *s = ckpt__mem_alloc(n + 1);
	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* The libraries of the snapshot against this process's. */
struct lib_check {
	const unsigned char *rec;
	size_t len;
	int found;
	char *why;
	size_t whysz;
};

static int lib_in_process(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct lib_check *lc = arg;
	struct ckpt__plib l;
	memcpy(&l, lc->rec, sizeof l);
	const char *name = (const char *)lc->rec + sizeof l;
	if (info->dlpi_addr != l.base)
		return 0;
	const char *cur = info->dlpi_name ? info->dlpi_name : "";
	if (strlen(cur) != l.name_len || memcmp(cur, name, l.name_len)) {
		snprintf(lc->why, lc->whysz, "at %#lx the snapshot has %.*s, this process %s",
			 (unsigned long)l.base, (int)l.name_len, name, cur[0] ? cur : "the executable");
		lc->found = -1;
		return 1;
	}
	unsigned char bid[64];
	size_t bidlen = 0;
	ckpt__phdr_build_id(info, bid, &bidlen);
	if (bidlen != l.bid_len || memcmp(bid, lc->rec + sizeof l + l.name_len, bidlen)) {
		snprintf(lc->why, lc->whysz, "%s is not the build the snapshot was written with",
			 l.name_len ? cur : "the executable");
		lc->found = -1;
		return 1;
	}
	lc->found = 1;
	return 1;
}

static int count_lib(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)info;
	(void)size;
	(*(size_t *)arg)++;
	return 0;
}

/* ckpt run's resume: the objects the program dlopen()ed after it started
 * (Python's extension modules) are loaded again before the checks below
 * compare them.  The loader maps an object where the kernel puts a mapping
 * of its size: the highest free range below the others.  So that it is
 * where it was, every free range above its old place is reserved for the
 * time of the dlopen (an object already loaded that it needs would be
 * elsewhere: the entries are loaded from the last, the dependencies first).
 * One that lands elsewhere anyway is refused by the checks as any other. */
struct lib_want {
	uint64_t base;
	const unsigned char *name;
	uint32_t name_len;
};

struct lib_list {
	struct lib_want *v;
	size_t n, cap;
};

static int lib_named(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	const struct lib_want *w = arg;
	const char *cur = info->dlpi_name ? info->dlpi_name : "";
	return strlen(cur) == w->name_len && !memcmp(cur, w->name, w->name_len);
}

static int want_lib(uint32_t type, const unsigned char *p, size_t len, void *arg)
{
	struct lib_list *ll = arg;
	if (type != CKPT__PE_LIB)
		return 0;
	struct ckpt__plib l;
	if (len < sizeof l)
		return 1;
	memcpy(&l, p, sizeof l);
	/* Not the executable (no name) nor what is not a file (the vDSO). */
	if ((uint64_t)l.name_len + l.bid_len != len - sizeof l || !l.name_len ||
	    l.name_len >= PATH_MAX || p[sizeof l] != '/')
		return 0;
	if (ckpt__mem_grow((void **)&ll->v, &ll->cap, ll->n + 1, sizeof *ll->v))
		return 1;
	ll->v[ll->n++] = (struct lib_want){l.base, p + sizeof l, l.name_len};
	return 0;
}

/* The bytes the loader maps for the ELF object at path: from its first
 * loadable segment's page to its last one's end.  0 if unreadable. */
static uint64_t elf_span(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	Elf64_Ehdr eh;
	uint64_t lo = UINT64_MAX, hi = 0;
	if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh && !memcmp(eh.e_ident, ELFMAG, SELFMAG) &&
	    eh.e_ident[EI_CLASS] == ELFCLASS64 && eh.e_phentsize == sizeof(Elf64_Phdr) &&
	    eh.e_phnum < 256) {
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;
			if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + i * sizeof ph)) !=
			    (ssize_t)sizeof ph) {
				hi = 0;
				break;
			}
			if (ph.p_type != PT_LOAD)
				continue;
			if (ph.p_vaddr < lo)
				lo = ph.p_vaddr;
			if (ph.p_vaddr + ph.p_memsz > hi)
				hi = ph.p_vaddr + ph.p_memsz;
		}
	}
	close(fd);
	if (!hi || hi <= lo)
		return 0;
	uint64_t pg = ckpt__pagesize;
	return ((hi + pg - 1) & ~(pg - 1)) - (lo & ~(pg - 1));
}

/* Reserves each free range above `from` below the highest mapping under
 * the stack; the ranges taken are added to *held.  0, or -1 if [at, from)
 * is not free (then nothing is held). */
static int hold_above(uintptr_t at, uintptr_t from, struct ckpt__rset *held)
{
	struct ckpt__maps m = {0};
	if (ckpt__maps_read(&m))
		return -1;
	int rc = 0;
	for (size_t k = 0; k < m.n && !rc; k++)
		if (m.v[k].start < from && m.v[k].end > at)
			rc = -1;
	for (size_t k = 0; k + 1 < m.n && !rc; k++) {
		uintptr_t lo = m.v[k].end, hi = m.v[k + 1].start;
		if (!strcmp(m.v[k + 1].path, "[stack]") || hi <= from || hi <= lo)
			continue;
		if (lo < from)
			lo = from;
		void *p = mmap((void *)lo, hi - lo, PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
		if (p == MAP_FAILED)
			continue;
		if (p != (void *)lo || ckpt__rset_add(held, lo, hi)) {
			munmap(p, hi - lo);
			rc = -1;
		}
	}
	ckpt__maps_free(&m);
	return rc;
}

static void release(struct ckpt__rset *held)
{
	for (size_t k = 0; k < held->n; k++)
		munmap((void *)held->r[k].lo, held->r[k].hi - held->r[k].lo);
	ckpt__rset_free(held);
}

/* Whether the ELF object at path names `need` (a file name) in DT_NEEDED. */
static int elf_needs(const char *path, const char *need)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	Elf64_Ehdr eh;
	Elf64_Phdr ph[64], *dyn = NULL;
	int found = 0;
	if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr) ||
	    eh.e_phnum > 64 ||
	    pread(fd, ph, eh.e_phnum * sizeof *ph, (off_t)eh.e_phoff) !=
		    (ssize_t)(eh.e_phnum * sizeof *ph))
		goto out;
	for (unsigned i = 0; i < eh.e_phnum; i++)
		if (ph[i].p_type == PT_DYNAMIC)
			dyn = &ph[i];
	if (!dyn)
		goto out;
	/* DT_STRTAB is an address: its file offset is that of the segment
	 * that holds it. */
	uint64_t strtab = 0, stroff = 0;
	int have_str = 0;
	Elf64_Dyn d;
	for (uint64_t o = 0; o + sizeof d <= dyn->p_filesz && o < 65536; o += sizeof d) {
		if (pread(fd, &d, sizeof d, (off_t)(dyn->p_offset + o)) != (ssize_t)sizeof d ||
		    d.d_tag == DT_NULL)
			break;
		if (d.d_tag == DT_STRTAB)
			strtab = d.d_un.d_ptr;
	}
	for (unsigned i = 0; i < eh.e_phnum; i++)
		if (ph[i].p_type == PT_LOAD && strtab >= ph[i].p_vaddr &&
		    strtab < ph[i].p_vaddr + ph[i].p_filesz) {
			stroff = strtab - ph[i].p_vaddr + ph[i].p_offset;
			have_str = 1;
		}
	if (!have_str)
		goto out;
	size_t nlen = strlen(need);
	for (uint64_t o = 0; !found && o + sizeof d <= dyn->p_filesz && o < 65536; o += sizeof d) {
		if (pread(fd, &d, sizeof d, (off_t)(dyn->p_offset + o)) != (ssize_t)sizeof d ||
		    d.d_tag == DT_NULL)
			break;
		char name[256];
		if (d.d_tag != DT_NEEDED || nlen >= sizeof name)
			continue;
		ssize_t n = pread(fd, name, nlen + 1, (off_t)(stroff + d.d_un.d_val));
		found = n == (ssize_t)(nlen + 1) && !memcmp(name, need, nlen) && !name[nlen];
	}
out:
	close(fd);
	return found;
}

/* Loads entry k of the list where it was, the entries it needs that are
 * not loaded yet first (so that they are placed, not pulled in by it). */
static void load_lib(const struct lib_list *ll, size_t k, unsigned depth)
{
	const struct lib_want *w = &ll->v[k];
	if (depth > 16 || dl_iterate_phdr(lib_named, (void *)w))
		return;
	char name[PATH_MAX];
	memcpy(name, w->name, w->name_len);
	name[w->name_len] = 0;
	for (size_t j = 0; j < ll->n; j++) {
		const struct lib_want *o = &ll->v[j];
		if (j == k || dl_iterate_phdr(lib_named, (void *)o))
			continue;
		const unsigned char *slash = memrchr(o->name, '/', o->name_len);
		char file[256];
		size_t flen = o->name_len - (size_t)(slash + 1 - o->name);
		if (!slash || flen >= sizeof file)
			continue;
		memcpy(file, slash + 1, flen);
		file[flen] = 0;
		if (elf_needs(name, file))
			load_lib(ll, j, depth + 1);
	}
	uint64_t span = elf_span(name);
	struct ckpt__rset held = {0};
	if (span && w->base + span > w->base && hold_above(w->base, w->base + span, &held))
		release(&held);
	/* As Python loads its modules (RTLD_NOW, local: the scope a later
	 * lookup sees is the restored loader's anyway).  Not closed: the
	 * restored loader's lists name it.  One that does not load is left
	 * to the checks to name. */
	(void)dlopen(name, RTLD_NOW | RTLD_LOCAL);
	release(&held);
}

void ckpt__resume_load_libs(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	uint64_t newest = ckpt__chain_newest_id(fd);
	struct ckpt__chain c;
	memset(&c, 0, sizeof c);
	if (!newest) {
		close(fd);
		return;
	}
	/* The newest file alone names the modules (a long chain is not
	 * opened twice); the chain when that file does not load, as the
	 * resume then goes back to an older one. */
	struct ckpt__snap one;
	char name[48];
	snprintf(name, sizeof name, CKPT__SNAP_FMT, (unsigned long long)newest);
	const struct ckpt__snap *s = NULL;
	if (ckpt__snap_open(&one, fd, name) == 0) {
		s = &one;
		close(fd);
	} else if (ckpt__chain_open_upto(&c, dir, fd, newest) == 0) { /* closed fd */
		s = ckpt__chain_find(&c, CKPT_LATEST);
	} else {
		ckpt__clear_error();
		return;
	}
	struct lib_list ll = {0};
	if (s && s->proc && !ckpt__proc_walk(s->proc, s->proc_size, want_lib, &ll))
		for (size_t k = ll.n; k-- > 0;)
			load_lib(&ll, k, 0);
	ckpt__mem_array_free((void **)&ll.v, &ll.cap, sizeof *ll.v);
	if (s == &one)
		ckpt__snap_close(&one);
	else
		ckpt__chain_close(&c);
	ckpt__clear_error();
}

struct walk_ctx {
	struct ckpt__resume *r;
	size_t nlibs;
	int bad;
	int have_chain; /* the chain directory's identity: */
	uint64_t chain_dev, chain_ino;
};

static int take(uint32_t type, const unsigned char *p, size_t len, void *arg)
{
	struct walk_ctx *wc = arg;
	struct ckpt__resume *r = wc->r;
	switch (type) {
	case CKPT__PE_CTX:
		if (len != sizeof r->ctx)
			return CKPT_ECORRUPT;
		memcpy(&r->ctx, p, len);
		r->have_ctx = 1;
		r->noself = (r->ctx.flags & CKPT__PC_NOSELF) != 0;
		break;
	case CKPT__PE_STACK: {
		uint64_t range[2];
		if (len < sizeof range)
			return CKPT_ECORRUPT;
		memcpy(range, p, sizeof range);
		if (range[1] <= range[0] || range[1] - range[0] != len - sizeof range)
			return CKPT_ECORRUPT;
		r->stack_lo = range[0];
		r->stack_hi = range[1];
		r->stack = p + sizeof range;
		break;
	}
	case CKPT__PE_SIGMASK:
		if (len != 8)
			return CKPT_ECORRUPT;
		memcpy(&r->sigmask, p, 8);
		break;
	case CKPT__PE_SIGACT:
		if (len != sizeof r->sig[0] || r->nsig == 64)
			return CKPT_ECORRUPT;
		memcpy(&r->sig[r->nsig], p, len);
		if (r->sig[r->nsig].sig < 1 || r->sig[r->nsig].sig > 64)
			return CKPT_ECORRUPT;
		r->nsig++;
		break;
	case CKPT__PE_CWD:
		if (len >= sizeof r->cwd)
			return CKPT_ECORRUPT;
		memcpy(r->cwd, p, len);
		r->cwd[len] = '\0';
		r->have_cwd = 1;
		break;
	case CKPT__PE_UMASK:
		if (len != 4)
			return CKPT_ECORRUPT;
		memcpy(&r->umask, p, 4);
		break;
	case CKPT__PE_BRK: {
		uint64_t v[2];
		if (len != sizeof v)
			return CKPT_ECORRUPT;
		memcpy(v, p, sizeof v);
		r->brk_start = v[0];
		r->brk_end = v[1];
		break;
	}
	case CKPT__PE_FD: {
		struct ckpt__pfd f;
		if (len <= sizeof f || len - sizeof f >= PATH_MAX)
			return CKPT_ECORRUPT;
		memcpy(&f, p, sizeof f);
		/* A file of the chain's directory is ckpt's, not the
		 * program's: records of earlier versions listed the snapshot
		 * files a handle had open (reopened, the resumed program
		 * would hold them; compacted, they are gone). */
		if (wc->have_chain && ckpt__proc_in_dir((const char *)p + sizeof f, len - sizeof f,
							wc->chain_dev, wc->chain_ino))
			break;
		if (ckpt__mem_grow((void **)&r->fds, &r->fds_cap, r->nfds + 1, sizeof *r->fds))
			return CKPT_ENOMEM;
		char *path = dupn(p + sizeof f, len - sizeof f);
		if (!path)
			return CKPT_ENOMEM;
		r->fds[r->nfds++] = (struct rfd){f, path};
		break;
	}
	case CKPT__PE_VMA: {
		struct ckpt__pvma v;
		if (len < sizeof v || len - sizeof v >= PATH_MAX)
			return CKPT_ECORRUPT;
		memcpy(&v, p, sizeof v);
		if (ckpt__mem_grow((void **)&r->vmas, &r->vmas_cap, r->nvmas + 1, sizeof *r->vmas))
			return CKPT_ENOMEM;
		char *path = dupn(p + sizeof v, len - sizeof v);
		if (!path)
			return CKPT_ENOMEM;
		r->vmas[r->nvmas++] = (struct rvma){v, path};
		break;
	}
	case CKPT__PE_LIB: {
		struct ckpt__plib l;
		if (len < sizeof l)
			return CKPT_ECORRUPT;
		memcpy(&l, p, sizeof l);
		if ((uint64_t)l.name_len + l.bid_len != len - sizeof l || l.bid_len > 64)
			return CKPT_ECORRUPT;
		wc->nlibs++;
		struct lib_check lc = {p, len, 0, r->errbuf, sizeof r->errbuf};
		dl_iterate_phdr(lib_in_process, &lc);
		if (lc.found == 0)
			snprintf(r->errbuf, sizeof r->errbuf,
				 "%.*s was loaded at %#lx and is not there in this process",
				 (int)l.name_len, (const char *)p + sizeof l, (unsigned long)l.base);
		if (lc.found != 1) {
			wc->bad = 1;
			return 1;
		}
		break;
	}
	case CKPT__PE_EXCL: {
		uint64_t v[2];
		if (len != sizeof v)
			return CKPT_ECORRUPT;
		memcpy(v, p, sizeof v);
		if (v[0] >= v[1] || (v[0] | v[1]) & (ckpt__pagesize - 1))
			return CKPT_ECORRUPT;
		if (ckpt__rset_add(&r->excl, v[0], v[1]))
			return CKPT_ENOMEM;
		break;
	}
	case CKPT__PE_THREAD:
		return ckpt__rthreads_add(&r->thr, p, len);
	case CKPT__PE_FDNUM:
		if (len != sizeof r->fdnum[0])
			return CKPT_ECORRUPT;
		if (ckpt__mem_grow((void **)&r->fdnum, &r->fdnum_cap, r->nfdnum + 1,
				   sizeof *r->fdnum))
			return CKPT_ENOMEM;
		memcpy(r->fdnum[r->nfdnum], p, len);
		if (r->fdnum[r->nfdnum][0] < 3)
			return CKPT_ECORRUPT;
		r->nfdnum++;
		break;
	case CKPT__PE_TMEM: {
		uint64_t v[2];
		if (len < sizeof v)
			return CKPT_ECORRUPT;
		memcpy(v, p, sizeof v);
		if (v[1] <= v[0] || v[1] - v[0] != len - sizeof v)
			return CKPT_ECORRUPT;
		if (ckpt__mem_grow((void **)&r->tmem, &r->tmem_cap, r->ntmem + 1, sizeof *r->tmem))
			return CKPT_ENOMEM;
		/* Copied: the record goes with the chain reader. */
		unsigned char *b = ckpt__mem_alloc(v[1] - v[0]);
		if (!b)
			return CKPT_ENOMEM;
		memcpy(b, p + sizeof v, v[1] - v[0]);
		r->tmem[r->ntmem++] = (struct tmem){v[0], v[1], b};
		break;
	}
	case CKPT__PE_PIPE: {
		int rc = ckpt__pipes_take(&r->pipes, p, len);
		if (rc)
			return rc;
		break;
	}
	default:
		break; /* ARGV, ENV (for `ckpt resume`), later additions */
	}
	return 0;
}

int ckpt__resume_excluded(const struct ckpt__resume *r, struct ckpt__rset *out)
{
	for (size_t i = 0; i < r->excl.n; i++)
		if (ckpt__rset_add(out, r->excl.r[i].lo, r->excl.r[i].hi))
			return CKPT_ENOMEM;
	return 0;
}

int ckpt__resume_fresh(const struct ckpt__resume *r, struct ckpt__rset *out)
{
	for (size_t i = 0; i < r->made.n; i++)
		if (ckpt__rset_add(out, r->made.r[i].lo, r->made.r[i].hi))
			return CKPT_ENOMEM;
	if (r->brk_was && ckpt__rset_add(out, r->brk_was, r->brk_end))
		return CKPT_ENOMEM;
	return 0;
}

static void rfree(struct ckpt__resume *r)
{
	ckpt__rset_free(&r->excl);
	ckpt__rset_free(&r->made);
	for (size_t i = 0; i < r->nfds; i++)
		ckpt__mem_free(r->fds[i].path, strlen(r->fds[i].path) + 1);
	ckpt__mem_array_free((void **)&r->fds, &r->fds_cap, sizeof *r->fds);
	for (size_t i = 0; i < r->nvmas; i++)
		ckpt__mem_free(r->vmas[i].path, strlen(r->vmas[i].path) + 1);
	ckpt__mem_array_free((void **)&r->vmas, &r->vmas_cap, sizeof *r->vmas);
	ckpt__rthreads_free(&r->thr);
	ckpt__mem_array_free((void **)&r->fdnum, &r->fdnum_cap, sizeof *r->fdnum);
	for (size_t i = 0; i < r->ntmem; i++)
		ckpt__mem_free(r->tmem[i].bytes, r->tmem[i].hi - r->tmem[i].lo);
	ckpt__mem_array_free((void **)&r->tmem, &r->tmem_cap, sizeof *r->tmem);
	ckpt__pipes_free(&r->pipes);
	if (r->tcb)
		ckpt__mem_free(r->tcb, r->tcb_len);
	if (r->stack_mem)
		ckpt__mem_free(r->stack_mem, RESUME_STACK);
	ckpt__mem_free(r, sizeof *r);
}

void ckpt__resume_free(struct ckpt__resume *r)
{
	if (!r)
		return;
	/* A resume given up before it began: the process as it was. */
	if (!r->started) {
		ckpt__rthreads_cancel(&r->thr);
		for (size_t i = 0; i < r->made.n; i++) {
			ckpt__sys3(SYS_munmap, (long)r->made.r[i].lo,
				   (long)(r->made.r[i].hi - r->made.r[i].lo), 0);
			ckpt__track_unmapped(r->made.r[i].lo, r->made.r[i].hi);
		}
		if (r->brk_was)
			ckpt__sys3(SYS_brk, (long)r->brk_was, 0, 0);
	}
	rfree(r);
}

uint64_t ckpt__resume_id(const struct ckpt__resume *r)
{
	return r->id;
}

/* The end of this process's [stack] mapping. */
static uintptr_t stack_top(const struct ckpt__maps *m)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->v[i].path, "[stack]"))
			return m->v[i].end;
	return 0;
}

static int check_layout(struct ckpt__resume *r, const struct ckpt__snap *s, uintptr_t handle)
{
	struct ckpt__maps m = {0};
	int rc = ckpt__maps_read(&m);
	if (rc)
		return rc;
	uintptr_t top = stack_top(&m);
	const char *name = s->name;
	if (!r->have_ctx || (!r->stack && !r->noself))
		rc = ckpt__fail(CKPT_ECORRUPT, "%s: the process record has no registers or stack",
				name);
	else if (!r->ctx.list_off)
		rc = ckpt__fail(CKPT_ENOTSUP, "%s: this C library's thread descriptor was not "
					      "recognised at the commit; it cannot be resumed",
				name);
	else if (r->ctx.handle != handle)
		rc = ckpt__fail(CKPT_EFOREIGN, "%s: the ckpt handle was at %#lx, here %#lx: "
					       "libckpt is not where it was",
				name, (unsigned long)r->ctx.handle, (unsigned long)handle);
	else if (r->main_fs != fs_base())
		rc = ckpt__fail(CKPT_EFOREIGN, "%s: the thread pointer was %#lx, here %#lx: the "
					       "address layout differs",
				name, (unsigned long)r->main_fs, (unsigned long)fs_base());
	else if (r->main_stack_hi != top)
		rc = ckpt__fail(CKPT_EFOREIGN, "%s: the stack ended at %#lx, here at %#lx: the "
					       "address layout differs",
				name, (unsigned long)r->main_stack_hi, (unsigned long)top);
	else if (r->brk_start && r->brk_start != ckpt__start_brk())
		rc = ckpt__fail(CKPT_EFOREIGN, "%s: the heap started at %#lx, here at %#lx: the "
					       "address layout differs",
				name, (unsigned long)r->brk_start, (unsigned long)ckpt__start_brk());
	/* Files the process had open, and read-only files it had mapped. */
	for (size_t i = 0; !rc && i < r->nfds; i++) {
		struct stat st;
		if (stat(r->fds[i].path, &st) != 0 || st.st_ino != r->fds[i].f.ino ||
		    st.st_dev != r->fds[i].f.dev)
			rc = ckpt__fail(CKPT_ENOENT, "%s: %s (descriptor %d at the commit) is gone or "
						     "was replaced",
					name, r->fds[i].path, r->fds[i].f.fd);
	}
	for (size_t i = 0; !rc && i < r->nvmas; i++) {
		const struct rvma *v = &r->vmas[i];
		struct stat st;
		if ((v->v.perms & CKPT__PV_W) || v->path[0] != '/' || !v->v.ino)
			continue;
		if (stat(v->path, &st) != 0 || st.st_ino != v->v.ino)
			rc = ckpt__fail(CKPT_ENOENT, "%s: %s (mapped at %#lx) is gone or was replaced",
					name, v->path, (unsigned long)v->v.start);
	}
	ckpt__maps_free(&m);
	return rc;
}

/* The snapshot's bytes of glibc's thread descriptor (the keep range of the
 * TLS mapping, which a restore in place leaves alone). */
static int load_tcb(struct ckpt__resume *r, struct ckpt__chain *c, const struct ckpt__snap *s)
{
	const struct ckpt__fmap *tm = NULL;
	for (size_t i = 0; i < s->nmaps; i++)
		if (s->maps[i].kind == CKPT__MK_TLS && s->maps[i].keep_len)
			tm = &s->maps[i];
	if (!tm)
		return ckpt__fail(CKPT_ECORRUPT, "%s: no thread descriptor in the snapshot", s->name);
	size_t ps = ckpt__pagesize;
	/* In offsets, which cannot wrap around whatever the file says. */
	uint64_t span = tm->end > tm->start ? tm->end - tm->start : 0;
	if (tm->keep_off > span || tm->keep_len > span - tm->keep_off)
		return ckpt__fail(CKPT_ECORRUPT, "%s: the thread descriptor lies outside its mapping",
				  s->name);
	r->tcb_lo = tm->start + tm->keep_off;
	r->tcb_len = tm->keep_len;
	uint64_t at = r->main_fs - r->tcb_lo;
	if (r->main_fs < r->tcb_lo || at > r->tcb_len ||
	    r->tcb_len - at < (uint64_t)r->ctx.tid_off + 4 ||
	    r->tcb_len - at < (uint64_t)r->ctx.list_off + 16)
		return ckpt__fail(CKPT_ECORRUPT, "%s: the thread descriptor is not where the "
						 "registers say",
				  s->name);
	r->tcb = ckpt__mem_alloc(r->tcb_len);
	unsigned char *page = ckpt__mem_alloc(ps);
	int rc = r->tcb && page ? 0 : CKPT_ENOMEM;
	for (uintptr_t a = ckpt__page_down(r->tcb_lo); !rc && a < r->tcb_lo + r->tcb_len; a += ps) {
		rc = ckpt__chain_page(c, r->id, a, page);
		uintptr_t lo = a > r->tcb_lo ? a : r->tcb_lo;
		uintptr_t hi = a + ps < r->tcb_lo + r->tcb_len ? a + ps : r->tcb_lo + r->tcb_len;
		if (!rc)
			memcpy(r->tcb + (lo - r->tcb_lo), page + (lo - a), hi - lo);
	}
	if (page)
		ckpt__mem_free(page, ps);
	return rc;
}

/* The threads of the record: which one was the main thread (its thread
 * pointer is in the main thread's descriptor, the TLS mapping's keep
 * range), and where its thread pointer and stack were. */
static int threads_of(struct ckpt__resume *r, const struct ckpt__snap *s)
{
	r->main_fs = r->ctx.fs_base;
	r->main_stack_hi = r->stack_hi;
	if (r->noself && (r->stack || r->thr.n < 1))
		return ckpt__fail(CKPT_ECORRUPT, "%s: the process record has %s", s->name,
				  r->stack ? "a committing thread's stack and says it has none"
					   : "no thread");
	if (s->h.nthreads > 1 && r->thr.n < 2 && !r->noself)
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: %s was written while the program ran %u "
						"threads, without a record of them",
				  s->name, s->h.nthreads);
	if (!threaded(r))
		return 0;
	uintptr_t lo = 0, hi = 0;
	for (size_t i = 0; i < s->nmaps; i++)
		if (s->maps[i].kind == CKPT__MK_TLS && s->maps[i].keep_len) {
			lo = s->maps[i].start + s->maps[i].keep_off;
			hi = lo + s->maps[i].keep_len;
		}
	char why[256];
	r->thr.noself = r->noself;
	int rc = ckpt__rthreads_check(&r->thr, lo, hi, why, sizeof why);
	if (rc)
		return ckpt__fail(rc, "ckpt_open: %s: %s", s->name, why);
	const struct ckpt__pthread *m = &r->thr.t[r->thr.main].rec;
	r->main_fs = m->fs_base;
	if (r->thr.main != r->thr.self)
		r->main_stack_hi = m->stack_hi;
	r->thr.ctx = &r->ctx;
	r->thr.tid_off = r->ctx.tid_off;
	return 0;
}

/* The stacks the resume brings back are the threads', not memory to
 * track: each recreated thread's, and each stack glibc kept for reuse (a
 * TLS block of memory no recorded thread's stack holds). */
static int adopt_stacks(struct ckpt__resume *r)
{
	if (!threaded(r) && !r->ntmem)
		return 0;
	/* A thread's stack is the anonymous mapping holding its descriptor
	 * (glibc puts it at the top), whatever stack it was running on. */
	for (size_t k = 0; k < r->thr.n; k++) {
		struct ckpt__rthr *t = &r->thr.t[k];
		for (size_t j = 0; j < r->nvmas; j++) {
			const struct rvma *o = &r->vmas[j];
			if (!o->path[0] && !(o->v.perms & CKPT__PV_SHARED) &&
			    t->rec.fs_base >= o->v.start && t->rec.fs_base < o->v.end) {
				t->reg_lo = o->v.start;
				t->reg_hi = o->v.end;
			}
		}
	}
	int rc = threaded(r) ? ckpt__rthreads_adopt(&r->thr) : 0;
	for (size_t i = 0; !rc && i < r->ntmem; i++) {
		uint64_t lo = r->tmem[i].lo;
		int live = 0;
		for (size_t k = 0; k < r->thr.n && !live; k++) {
			const struct ckpt__rthr *t = &r->thr.t[k];
			live = (lo >= t->rec.stack_lo && lo < t->rec.stack_hi) ||
			       (lo >= t->reg_lo && lo < t->reg_hi);
		}
		for (size_t k = 0; !live && k < r->nvmas; k++)
			if (lo >= r->vmas[k].v.start && lo < r->vmas[k].v.end) {
				rc = ckpt__rthreads_adopt_cached(&r->thr, r->vmas[k].v.start,
								 r->vmas[k].v.end, lo);
				break;
			}
	}
	return rc ? ckpt__fail(rc, "ckpt_open: out of memory") : 0;
}

static int recorded_fd(const struct ckpt__resume *r, int fd)
{
	for (size_t i = 0; i < r->nfds; i++)
		if (r->fds[i].f.fd == fd)
			return 1;
	for (size_t i = 0; i < r->nfdnum; i++)
		if (r->fdnum[i][0] == fd)
			return 1;
	return ckpt__pipes_has_fd(&r->pipes, fd);
}

/* /dev/null at `num` (flags: FD_CLOEXEC or 0), unless it is open. */
static int hold_fd(int num, int fdflags)
{
	if (fcntl(num, F_GETFD) >= 0)
		return 0; /* the new process's own */
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0 || (fd != num && dup3(fd, num, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return ckpt__fail(ckpt__from_errno(e), "ckpt_open: cannot hold descriptor %d: %s",
				  num, strerror(e));
	}
	if (fd != num)
		close(fd);
	else if (!(fdflags & FD_CLOEXEC))
		fcntl(num, F_SETFD, 0);
	return 0;
}

/* Moves a descriptor of ckpt's out of the numbers the program had open. */
static int move_fd(const struct ckpt__resume *r, int *fd, int above)
{
	if (*fd < 0 || !recorded_fd(r, *fd))
		return 0;
	int n = fcntl(*fd, F_DUPFD_CLOEXEC, above);
	if (n < 0)
		return ckpt__fail(ckpt__from_errno(errno), "ckpt_open: %s", strerror(errno));
	close(*fd);
	*fd = n;
	return 0;
}

/* /dev/null at descriptor n, unless the new process has it open. */
/* The program's descriptor numbers (its files' and its pipes') are kept
 * free for it: ckpt's are moved above them, the chain reader's snapshot
 * files included (closed when the resumed program runs, they would take
 * its descriptors with them), and /dev/null holds each free one until the
 * file or pipe is put there (or tracking, which opens a userfaultfd, would
 * take it). */
static int reserve_fds(struct ckpt__resume *r)
{
	int above = 3;
	for (size_t i = 0; i < r->nfds; i++)
		if (r->fds[i].f.fd >= above)
			above = r->fds[i].f.fd + 1;
	for (size_t i = 0; i < r->nfdnum; i++)
		if (r->fdnum[i][0] >= above)
			above = r->fdnum[i][0] + 1;
	for (size_t i = 0; i < r->pipes.nnums; i++)
		if (r->pipes.nums[i] >= above)
			above = r->pipes.nums[i] + 1;
	int rc = move_fd(r, &r->w->dirfd, above);
	if (!rc)
		rc = move_fd(r, &r->w->lockfd, above);
	if (!rc)
		rc = move_fd(r, &r->w->rd.dirfd, above);
	for (size_t k = 0; !rc && r->w->rd_open && k < r->w->rd.n; k++)
		rc = move_fd(r, &r->w->rd.snaps[k].fd, above);
	/* A file's number until the file is opened there; the others' for
	 * good: the program may close what it had there, which must not be
	 * a descriptor of ckpt's (reading it gives end of file). */
	for (size_t i = 0; !rc && i < r->nfds; i++)
		rc = hold_fd(r->fds[i].f.fd, FD_CLOEXEC);
	for (size_t i = 0; !rc && i < r->nfdnum; i++)
		rc = hold_fd(r->fdnum[i][0], r->fdnum[i][1]);
	for (size_t i = 0; !rc && i < r->pipes.nnums; i++)
		rc = hold_fd(r->pipes.nums[i], FD_CLOEXEC);
	return rc;
}

/* The snapshot's memory that this process does not have mapped, mapped
 * now, before anything big is allocated: ckpt's own allocations (the
 * verified blocks of a restore amount to the whole image, compressed) would
 * otherwise land where the program's memory has to go.  What is in the way
 * is left to the restore (which unmaps what the snapshot does not have). */
static int precreate(struct ckpt__resume *r)
{
	const struct ckpt__snap *s = r->snap;
	struct ckpt__maps m = {0};
	struct ckpt__rset gap = {0};
	int rc = ckpt__maps_read(&m);
	/* The break first: the kernel maps the heap itself. */
	uintptr_t cur = (uintptr_t)ckpt__sys3(SYS_brk, 0, 0, 0);
	if (!rc && r->brk_end > cur &&
	    (uintptr_t)ckpt__sys3(SYS_brk, (long)r->brk_end, 0, 0) == r->brk_end)
		r->brk_was = cur;
	ckpt__maps_free(&m);
	if (!rc)
		rc = ckpt__maps_read(&m);
	char path[PATH_MAX];
	for (size_t i = 0; !rc && i < s->nmaps; i++) {
		const struct ckpt__fmap *fm = &s->maps[i];
		if (fm->flags & CKPT__MF_HEAP)
			continue;
		ckpt__rset_clear(&gap);
		rc = ckpt__rset_add(&gap, fm->start, fm->end) ? CKPT_ENOMEM : 0;
		for (size_t j = 0; !rc && j < m.n; j++)
			ckpt__rset_del(&gap, m.v[j].start, m.v[j].end);
		int fd = -1, flags = MAP_FIXED_NOREPLACE | MAP_NORESERVE;
		if (!(fm->flags & CKPT__MF_ANON) && !(fm->flags & CKPT__MF_SHARED)) {
			ckpt__snap_str(s, fm->name_off, fm->name_len, path, sizeof path);
			fd = path[0] == '/' ? open(path, O_RDONLY | O_CLOEXEC) : -1;
			flags |= MAP_PRIVATE;
		} else {
			flags |= MAP_ANONYMOUS |
				 ((fm->flags & CKPT__MF_SHARED) ? MAP_SHARED : MAP_PRIVATE);
		}
		for (size_t j = 0; !rc && j < gap.n; j++) {
			uintptr_t lo = gap.r[j].lo, hi = gap.r[j].hi;
			if (!(flags & MAP_ANONYMOUS) && fd < 0)
				break; /* the restore says why */
			long p = ckpt__sys6(SYS_mmap, (long)lo, (long)(hi - lo), PROT_READ | PROT_WRITE,
					    flags, fd,
					    fd >= 0 ? (long)(fm->offset + (lo - fm->start)) : 0);
			if (p == (long)lo && ckpt__rset_add(&r->made, lo, hi))
				rc = CKPT_ENOMEM;
		}
		if (fd >= 0)
			close(fd);
	}
	/* With threads: their stacks and guard pages (anonymous private
	 * mappings of the record, not snapshot memory) must be where they
	 * were before ckpt allocates more. */
	for (size_t i = 0; !rc && (threaded(r) || r->ntmem) && i < r->nvmas; i++) {
		const struct rvma *o = &r->vmas[i];
		if (o->path[0] || (o->v.perms & CKPT__PV_SHARED))
			continue;
		ckpt__rset_clear(&gap);
		rc = ckpt__rset_add(&gap, o->v.start, o->v.end) ? CKPT_ENOMEM : 0;
		for (size_t j = 0; !rc && j < m.n; j++)
			ckpt__rset_del(&gap, m.v[j].start, m.v[j].end);
		int prot = ((o->v.perms & CKPT__PV_R) ? PROT_READ : 0) |
			   ((o->v.perms & CKPT__PV_W) ? PROT_WRITE : 0) |
			   ((o->v.perms & CKPT__PV_X) ? PROT_EXEC : 0);
		for (size_t j = 0; !rc && j < gap.n; j++) {
			uintptr_t lo = gap.r[j].lo, hi = gap.r[j].hi;
			/* As glibc maps a thread stack (MAP_STACK, accounted):
			 * with MAP_NORESERVE it would merge with a malloc arena
			 * next to it (which glibc maps so), and the stack would
			 * no longer be a mapping of its own. */
			long p = ckpt__sys6(SYS_mmap, (long)lo, (long)(hi - lo), prot,
					    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK |
						    MAP_FIXED_NOREPLACE,
					    -1, 0);
			if (p == (long)lo && ckpt__rset_add(&r->made, lo, hi))
				rc = CKPT_ENOMEM;
		}
	}
	/* Every thread's stack must be there now (ckpt's own memory may be
	 * in the way, which nothing here can move). */
	if (!rc && threaded(r)) {
		ckpt__maps_free(&m);
		rc = ckpt__maps_read(&m);
	}
	for (size_t i = 0; !rc && threaded(r) && i < r->thr.n; i++) {
		const struct ckpt__pthread *t = &r->thr.t[i].rec;
		if ((long)i == r->thr.main)
			continue;
		for (uintptr_t a = t->stack_lo; !rc && a < t->stack_hi;) {
			long k = ckpt__maps_find(&m, a);
			if (k < 0 || ckpt__mem_is_own(m.v[k].start, m.v[k].end))
				rc = ckpt__fail(CKPT_EBUSY, "ckpt_open: the stack of thread %d (%s) at "
							    "%#lx cannot be mapped again: %s",
						t->tid, t->name, (unsigned long)t->stack_lo,
						k < 0 ? "not recorded" : "ckpt's memory is there");
			else
				a = m.v[k].end;
		}
	}
	ckpt__rset_free(&gap);
	ckpt__maps_free(&m);
	return rc;
}

int ckpt__resume_load(struct ckpt__chainw *w, const char *dir, uintptr_t handle, unsigned skip,
		      struct ckpt__resume **out)
{
	*out = NULL;
	const char *why;
	if (!resumable_here(&why))
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: %s", why);
	struct ckpt__resume *r = ckpt__mem_alloc(sizeof *r);
	if (!r)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	memset(r, 0, sizeof *r);
	r->w = w;
	r->dir = dir;
	r->skip = skip;
	/* The newest id, then the chain up to the newest not set aside. */
	struct ckpt__chain *c = &w->rd;
	if (w->rd_open)
		ckpt__chain_close(c);
	w->rd_open = 0;
	int fd = dup(w->dirfd);
	int rc = fd < 0 ? ckpt__from_errno(errno) : 0;
	uint64_t newest = 0;
	if (!rc) {
		newest = ckpt__chain_newest_id(w->dirfd);
		uint64_t upto = newest > skip ? newest - skip : 0;
		r->newest = newest;
		rc = upto ? ckpt__chain_open_upto(c, dir, fd, upto)
			  : ckpt__fail(CKPT_ECORRUPT, "ckpt_open: no sound snapshot in %s", dir);
		if (!upto)
			close(fd);
	}
	if (rc) {
		rfree(r);
		return rc;
	}
	w->rd_open = 1;
	const struct ckpt__snap *s = ckpt__chain_find(c, CKPT_LATEST);
	if (!s) {
		rfree(r);
		return ckpt__fail(CKPT_ECORRUPT, "ckpt_open: no sound snapshot in %s", dir);
	}
	r->id = s->h.id;
	r->snap = s;
	if (s->h.page_size != ckpt__pagesize)
		rc = ckpt__fail(CKPT_EFOREIGN, "ckpt_open: %s has page size %u, this system %zu",
				s->name, s->h.page_size, ckpt__pagesize);
	else if (!s->proc && (s->h.flags & CKPT__SF_BASE) && s->h.id > 1)
		rc = ckpt__fail(CKPT_ENOTSUP, "ckpt_open: %s, a base made by ckpt compact, has no "
					      "process record (the snapshot it replaced had none, or "
					      "an older ckpt compact dropped it)",
				s->name);
	else if (!s->proc)
		rc = ckpt__fail(CKPT_ENOTSUP, "ckpt_open: %s was written by a handle opened without "
					      "CKPT_F_RESUME: it has no process record",
				s->name);
	else if (s->h.flags & CKPT__SF_NOT_RESUMABLE)
		rc = ckpt__fail(CKPT_ENOTSUP, "ckpt_open: %s was written while the program ran %u "
					      "threads, by a version of ckpt that could not resume "
					      "them",
				s->name, s->h.nthreads);
	if (!rc && (s->h.bid_len != w->build_id_len ||
		    memcmp(s->strings + s->h.bid_off, w->build_id, w->build_id_len))) {
		char exe[PATH_MAX];
		ckpt__snap_str(s, s->h.exe_off, s->h.exe_len, exe, sizeof exe);
		rc = ckpt__fail(CKPT_EFOREIGN, "ckpt_open: %s was written by %s; this is %s, another "
					       "build: it is not resumed",
				s->name, exe, w->exe);
	}
	struct walk_ctx wc = {r, 0, 0, 0, 0, 0};
	struct stat dst;
	if (fstat(w->dirfd, &dst) == 0) {
		wc.have_chain = 1;
		wc.chain_dev = (uint64_t)dst.st_dev;
		wc.chain_ino = (uint64_t)dst.st_ino;
	}
	if (!rc) {
		rc = ckpt__proc_walk(s->proc, s->proc_size, take, &wc);
		if (rc == CKPT_ECORRUPT || (rc > 0 && !wc.bad))
			rc = ckpt__fail(CKPT_ECORRUPT, "%s: the process record is malformed", s->name);
		else if (rc == CKPT_ENOMEM)
			rc = ckpt__fail(rc, "ckpt_open: out of memory");
		else if (wc.bad)
			rc = ckpt__fail(CKPT_EFOREIGN, "ckpt_open: %s: %s; it is not resumed", s->name,
					r->errbuf);
	}
	if (!rc) {
		size_t nlibs = 0;
		dl_iterate_phdr(count_lib, &nlibs);
		if (nlibs != wc.nlibs)
			rc = ckpt__fail(CKPT_EFOREIGN, "ckpt_open: %s: the program had %zu objects "
						       "loaded, this process has %zu (LD_PRELOAD?)",
					s->name, wc.nlibs, nlibs);
	}
	if (!rc)
		rc = threads_of(r, s);
	if (!rc)
		rc = check_layout(r, s, handle);
	if (!rc)
		rc = load_tcb(r, c, s);
	if (!rc)
		rc = reserve_fds(r);
	if (!rc)
		rc = precreate(r);
	if (!rc)
		rc = adopt_stacks(r);
	if (!rc && !(r->stack_mem = ckpt__mem_alloc(RESUME_STACK)))
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	if (!rc)
		rc = ckpt__chainw_take_over(w, s);
	if (rc) {
		ckpt__resume_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

/* ---- before memory changes -------------------------------------------------------- */

/* Opens the file of a recorded descriptor (at any number, for now), and
 * checks it is the file the process had.  CKPT_FAULT=open:N makes the Nth
 * open fail. */
static int reopen_fd(const struct rfd *d, int *out)
{
	int flags = d->f.flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY);
	int e = ckpt__inject(CKPT__IO_OPEN);
	int fd = e ? -1 : open(d->path, flags | O_CLOEXEC);
	if (fd < 0) {
		e = e ? e : errno;
		return ckpt__fail(ckpt__from_errno(e), "ckpt_open: cannot reopen %s (descriptor %d): %s",
				  d->path, d->f.fd, strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_ino != d->f.ino || st.st_dev != d->f.dev) {
		close(fd);
		return ckpt__fail(CKPT_ENOENT, "ckpt_open: %s (descriptor %d at the commit) was "
					       "replaced",
				  d->path, d->f.fd);
	}
	*out = fd;
	return 0;
}

/* Puts the file opened as fd at the recorded number, with its flags,
 * size and offset. */
static int place_fd(const struct rfd *d, int fd)
{
	if (fd != d->f.fd) {
		if (dup3(fd, d->f.fd, O_CLOEXEC) < 0) {
			int e = errno;
			close(fd);
			return ckpt__fail(ckpt__from_errno(e), "ckpt_open: cannot place %s at %d: %s",
					  d->path, d->f.fd, strerror(e));
		}
		close(fd);
	}
	fcntl(d->f.fd, F_SETFD, d->f.fdflags);
	/* Written after the commit: the resumed run writes it again. */
	struct stat st;
	if ((d->f.flags & O_ACCMODE) != O_RDONLY && fstat(d->f.fd, &st) == 0 &&
	    st.st_size > d->f.size && ftruncate(d->f.fd, d->f.size) != 0)
		return ckpt__fail(ckpt__from_errno(errno), "ckpt_open: cannot cut %s back: %s",
				  d->path, strerror(errno));
	if (lseek(d->f.fd, d->f.offset, SEEK_SET) < 0 && errno != ESPIPE)
		return ckpt__fail(ckpt__from_errno(errno), "ckpt_open: %s: %s", d->path,
				  strerror(errno));
	return 0;
}

static int special(const char *path)
{
	return !strcmp(path, "[stack]") || !strncmp(path, "[vvar", 5) || !strcmp(path, "[vdso]") ||
	       !strcmp(path, "[vsyscall]");
}

/* Untracked mappings: read-only ones this process has and the old did not
 * go; what the old had is mapped again (writable ones: memory the program
 * excluded, empty).  Compared page by page: mprotect splits
 * and merges mappings differently in the two processes.  Writable and
 * tracked memory is the restore's. */
static int fix_read_only(struct ckpt__resume *r, const int *vfd)
{
	struct ckpt__maps m = {0};
	struct ckpt__rset gone = {0};
	int rc = ckpt__maps_read(&m);
	const struct ckpt__rtab *tab = ckpt__T->tab; /* under the tracker's lock */
	for (size_t i = 0; !rc && i < m.n; i++) {
		const struct ckpt__vma *v = &m.v[i];
		if ((v->perms & CKPT__VMA_W) || special(v->path) || ckpt__mem_is_own(v->start, v->end))
			continue;
		ckpt__rset_clear(&gone);
		rc = ckpt__rset_add(&gone, v->start, v->end) ? CKPT_ENOMEM : 0;
		for (size_t j = 0; !rc && j < r->nvmas; j++)
			if (!strcmp(r->vmas[j].path, v->path))
				ckpt__rset_del(&gone, r->vmas[j].v.start, r->vmas[j].v.end);
		for (size_t j = 0; !rc && j < tab->n; j++)
			ckpt__rset_del(&gone, tab->r[j].start, tab->r[j].end);
		for (size_t j = 0; !rc && j < gone.n; j++)
			ckpt__sys3(SYS_munmap, (long)gone.r[j].lo, (long)(gone.r[j].hi - gone.r[j].lo),
				   0);
	}
	ckpt__maps_free(&m);
	if (!rc)
		rc = ckpt__maps_read(&m);
	for (size_t i = 0; !rc && i < r->nvmas; i++) {
		const struct rvma *o = &r->vmas[i];
		/* Writable ones here are memory the program excluded; their
		 * content was not saved. */
		if (special(o->path))
			continue;
		ckpt__rset_clear(&gone);
		rc = ckpt__rset_add(&gone, o->v.start, o->v.end) ? CKPT_ENOMEM : 0;
		for (size_t j = 0; !rc && j < m.n; j++)
			ckpt__rset_del(&gone, m.v[j].start, m.v[j].end);
		for (size_t j = 0; !rc && j < r->snap->nmaps; j++)
			ckpt__rset_del(&gone, r->snap->maps[j].start, r->snap->maps[j].end);
		int prot = ((o->v.perms & CKPT__PV_R) ? PROT_READ : 0) |
			   ((o->v.perms & CKPT__PV_W) ? PROT_WRITE : 0) |
			   ((o->v.perms & CKPT__PV_X) ? PROT_EXEC : 0);
		int flags = ((o->v.perms & CKPT__PV_SHARED) ? MAP_SHARED : MAP_PRIVATE) |
			    MAP_FIXED_NOREPLACE;
		for (size_t j = 0; !rc && j < gone.n; j++) {
			uintptr_t lo = gone.r[j].lo, hi = gone.r[j].hi;
			int fd = vfd[i];
			long p = ckpt__sys6(SYS_mmap, (long)lo, (long)(hi - lo), prot,
					    flags | (fd < 0 ? MAP_ANONYMOUS : 0), fd,
					    fd >= 0 ? (long)(o->v.offset + (lo - o->v.start)) : 0);
			if (p != (long)lo)
				rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: cannot map %s at %#lx again",
						o->path[0] ? o->path : "anonymous memory",
						(unsigned long)lo);
		}
	}
	ckpt__rset_free(&gone);
	ckpt__maps_free(&m);
	return rc;
}

int ckpt__resume_started(const struct ckpt__resume *r)
{
	return r->started;
}

/* Closes the descriptors ckpt__resume_before opened and has not placed. */
static void close_all(int *fd, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fd[i] >= 0)
			close(fd[i]);
}

int ckpt__resume_before(void *arg)
{
	struct ckpt__resume *r = arg;
	/* First what can fail, changing nothing: every file the process had
	 * open or mapped read-only opened, the directory too.  A failure
	 * here returns to the program as it was. */
	size_t nfd = r->nfds + r->nvmas;
	int *fd = ckpt__mem_alloc((nfd ? nfd : 1) * sizeof *fd), *vfd = fd ? fd + r->nfds : NULL;
	if (!fd)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	for (size_t i = 0; i < nfd; i++)
		fd[i] = -1;
	int rc = 0, cwd = -1;
	for (size_t i = 0; !rc && i < r->nfds; i++)
		rc = reopen_fd(&r->fds[i], &fd[i]);
	for (size_t i = 0; !rc && i < r->nvmas; i++) {
		const struct rvma *o = &r->vmas[i];
		if (special(o->path) || o->path[0] != '/' || !o->v.ino)
			continue;
		if ((vfd[i] = open(o->path, O_RDONLY | O_CLOEXEC)) < 0)
			rc = ckpt__fail(CKPT_ENOENT, "ckpt_open: cannot map %s again: %s", o->path,
					strerror(errno));
	}
	if (!rc && r->have_cwd && (cwd = open(r->cwd, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_open: cannot enter %s: %s", r->cwd,
				strerror(errno));
	/* The program's pipes, made and filled at numbers of ckpt's. */
	if (!rc)
		rc = ckpt__pipes_make(&r->pipes);
	/* The other threads, parked until memory is back: the last thing
	 * that may fail (a limit on threads) before the process changes. */
	if (!rc && threaded(r))
		rc = ckpt__rthreads_spawn(&r->thr);
	if (rc) {
		if (cwd >= 0)
			close(cwd);
		close_all(fd, nfd);
		ckpt__mem_free(fd, (nfd ? nfd : 1) * sizeof *fd);
		return rc;
	}
	/* From here on the process changes. */
	r->started = 1;
	/* Snapshots above the one resumed failed their checks: set aside, or
	 * the next commit would meet them. */
	for (uint64_t id = r->id + 1; !rc && id <= r->newest; id++) {
		char from[48], to[64];
		snprintf(from, sizeof from, CKPT__SNAP_FMT, (unsigned long long)id);
		snprintf(to, sizeof to, "damaged-" CKPT__SNAP_FMT, (unsigned long long)id);
		if (renameat(r->w->dirfd, from, r->w->dirfd, to) != 0 && errno != ENOENT)
			rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_open: cannot set %s aside: %s",
					from, strerror(errno));
		else
			fprintf(stderr, "ckpt: %s/%s failed its checks; kept as %s, resuming from "
					"snapshot %llu\n",
				r->dir, from, to, (unsigned long long)r->id);
	}
	if (!rc && r->newest > r->id)
		fsync(r->w->dirfd);
	for (size_t i = 0; !rc && i < r->nfds; i++) {
		rc = place_fd(&r->fds[i], fd[i]);
		fd[i] = -1;
	}
	if (!rc)
		rc = ckpt__pipes_place(&r->pipes);
	if (!rc && cwd >= 0 && fchdir(cwd) != 0)
		rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_open: cannot enter %s: %s", r->cwd,
				strerror(errno));
	if (!rc) {
		umask((mode_t)r->umask);
		/* Dispositions: the recorded ones, the default elsewhere. */
		for (int sig = 1; sig < 65; sig++) {
			if (sig == SIGKILL || sig == SIGSTOP || sig == 32 || sig == 33)
				continue;
			struct sigaction sa;
			memset(&sa, 0, sizeof sa);
			sa.sa_handler = SIG_DFL;
			for (unsigned i = 0; i < r->nsig; i++)
				if ((int)r->sig[i].sig == sig) {
					sa.sa_handler = (void (*)(int))(uintptr_t)r->sig[i].handler;
					sa.sa_flags = (int)r->sig[i].flags;
					for (int k = 1; k <= 64; k++)
						if (r->sig[i].mask & (1ull << (k - 1)))
							sigaddset(&sa.sa_mask, k);
				}
			sigaction(sig, &sa, NULL);
		}
		rc = fix_read_only(r, vfd);
	}
	if (cwd >= 0)
		close(cwd);
	close_all(fd, nfd);
	ckpt__mem_free(fd, (nfd ? nfd : 1) * sizeof *fd);
	return rc;
}

/* ---- the last steps -------------------------------------------------------------- */

#if CKPT__CAN_RESUME
/* Runs on ckpt's own stack.  The stack canary lives in the thread
 * descriptor this rewrites: nothing here returns. */
/* Writes [lo, hi) back; a stack mapping grows down to its old lowest page
 * on demand. */
__attribute__((no_stack_protector)) static void put_back(uintptr_t lo, uintptr_t hi,
							 const void *bytes)
{
	size_t ps = ckpt__pagesize;
	for (uintptr_t a = ckpt__page_down(hi - 1); a >= ckpt__page_down(lo); a -= ps)
		*(volatile char *)a = *(volatile char *)a;
	memcpy((void *)lo, bytes, hi - lo);
}

__attribute__((noreturn, noinline, no_stack_protector)) static void finish(void *arg)
{
	struct ckpt__resume *r = arg;
	if (r->stack)
		put_back(r->stack_lo, r->stack_hi, r->stack);
	for (size_t i = 0; i < r->ntmem; i++)
		put_back(r->tmem[i].lo, r->tmem[i].hi, r->tmem[i].bytes);
	/* glibc's descriptor as it was, but for what is this thread's. */
	memcpy((void *)r->tcb_lo, r->tcb, r->tcb_len);
	/* A thread of ckpt's that the resumed program had (ckpt run's) goes
	 * on too; it waits for its first commit, by then the others run. */
	ckpt__run_resumed();
	/* With threads, glibc's lists name exactly the recorded ones: each
	 * is created again and given its id. */
	if (threaded(r))
		ckpt__rthreads_go(&r->thr);
	ckpt__rthreads_settle_cached(&r->thr);
	*(int32_t *)(r->ctx.fs_base + r->ctx.tid_off) = (int32_t)ckpt__raw_gettid();
	uintptr_t node = r->ctx.fs_base + r->ctx.list_off;
	uintptr_t head = *(uintptr_t *)node;
	((uintptr_t *)head)[0] = node;
	((uintptr_t *)head)[1] = node;
	((uintptr_t *)node)[0] = head;
	((uintptr_t *)node)[1] = head;
	ckpt__sys6(SYS_arch_prctl, ARCH_SET_FS, (long)r->ctx.fs_base, 0, 0, 0, 0);
	uint64_t mask = r->sigmask & ~(1ull << (SIGSEGV - 1));
	ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, 8, 0, 0);
	ckpt__ctx_jump(&r->ctx, 1);
}

void ckpt__resume_finish(struct ckpt__resume *r)
{
	ckpt__resumed_id = r->id;
	/* The chain reader goes: it holds every snapshot file of the chain
	 * open, which the resumed handle does not need until a restore (it
	 * opens it again then), and a commit of the resumed program must not
	 * meet them.  The stack's bytes are in its memory: copied first. */
	size_t n = r->stack ? r->stack_hi - r->stack_lo : 0;
	unsigned char *stack = n ? ckpt__mem_alloc(n) : NULL;
	if (stack || !n) {
		memcpy(stack, r->stack, n);
		r->stack = stack;
		r->snap = NULL;
		ckpt__chain_close(&r->w->rd);
		r->w->rd_open = 0;
	}
	ckpt__on_stack((char *)r->stack_mem + RESUME_STACK, finish, r);
}
#else
void ckpt__resume_finish(struct ckpt__resume *r)
{
	(void)r;
	abort();
}
#endif

/*
 * test-signals.c - faults that are not ckpt's, the program's own signal
 * handlers, and signals delivered while tracking.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- faults that are not ckpt's kill the process as without it ---------- */

Test(signals, a_write_through_a_null_pointer_dies_with_sigsegv, .signal = SIGSEGV)
{
	/* A field of a structure at a NULL pointer: the first page is never
	 * mapped.  (Not address 0 itself, which UBSan reports first.) */
	int *volatile near_null = (int *)(uintptr_t)16;
	begin_tracking(0);
	*near_null = 1;
}

__attribute__((noinline, used)) int text_target(int x);
__attribute__((noinline, used)) int text_target(int x)
{
	return x * 3 + 1;
}

Test(signals, a_write_to_text_dies_with_sigsegv, .signal = SIGSEGV)
{
	begin_tracking(0);
	*(volatile char *)(uintptr_t)&text_target = 0;
}

Test(signals, a_write_to_read_only_memory_dies_with_sigsegv, .signal = SIGSEGV)
{
	char *ro = mmap(NULL, pagesz(), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	begin_tracking(0);
	*(volatile char *)ro = 1;
}

Test(signals, a_page_the_program_made_read_only_while_tracking_dies, .signal = SIGSEGV)
{
	char *m = map_anon(4, 1);
	begin_tracking(0);
	mprotect(m + pagesz(), pagesz(), PROT_READ);
	*(volatile char *)(m + pagesz()) = 1;
}

Test(signals, a_sent_sigsegv_still_kills, .signal = SIGSEGV)
{
	begin_tracking(0);
	raise(SIGSEGV);
	/* The signal must have arrived by now. */
	for (;;)
		pause();
}

Test(signals, an_ignored_sent_sigsegv_stays_ignored)
{
	signal(SIGSEGV, SIG_IGN);
	ckpt_t *c = begin_tracking(0);
	raise(SIGSEGV);
	ckpt_close(c);
}

/* ---- the program's handlers ------------------------------------------------ */

static sigjmp_buf jb;
static volatile int seen_sig;
static void *volatile seen_addr;

static void jump_out(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	seen_sig = sig;
	seen_addr = si->si_addr;
	siglongjmp(jb, 1);
}

static void install(int sig)
{
	struct sigaction sa = {0};
	sa.sa_sigaction = jump_out;
	sa.sa_flags = SA_SIGINFO;
	cr_assert_eq(sigaction(sig, &sa, NULL), 0);
}

/* Touches a PROT_NONE page (a genuine fault) and expects the program's own
 * handler to see it, then checks tracked writes still work. */
static void expect_program_handler_sees_fault(char *tracked)
{
	char *none = mmap(NULL, pagesz(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	seen_sig = 0;
	if (sigsetjmp(jb, 1) == 0) {
		*(volatile char *)none = 1;
		cr_assert_fail("the write to a PROT_NONE page did not fault");
	}
	cr_expect_eq(seen_sig, SIGSEGV);
	cr_expect_eq(seen_addr, none);
	tracked[0] = 5; /* a tracked write after the jump */
	cr_expect_eq(tracked[0], 5);
}

Test(signals, a_sigsegv_handler_installed_before_begin_is_called)
{
	install(SIGSEGV);
	char *m = map_anon(2, 0);
	ckpt_t *c = begin_tracking(0);
	expect_program_handler_sees_fault(m);
	ckpt_close(c);
}

Test(signals, a_sigsegv_handler_installed_while_tracking_is_called)
{
	char *m = map_anon(2, 0);
	ckpt_t *c = begin_tracking(0);
	install(SIGSEGV);
	struct sigaction cur;
	cr_assert_eq(sigaction(SIGSEGV, NULL, &cur), 0);
	cr_expect_eq((void *)cur.sa_sigaction, (void *)jump_out,
		     "sigaction does not report the program's handler");
	expect_program_handler_sees_fault(m);
	/* Still the program's after ckpt_end. */
	cr_assert_eq(ckpt_end(c), 0);
	expect_program_handler_sees_fault(m);
	ckpt_close(c);
}

Test(signals, a_sigbus_handler_is_left_alone)
{
	install(SIGBUS);
	char path[] = "/tmp/ckpt-bus-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)pagesz()), 0);
	char *m = mmap(NULL, 2 * pagesz(), PROT_READ, MAP_SHARED, fd, 0);
	unlink(path);
	ckpt_t *c = begin_tracking(0);
	seen_sig = 0;
	if (sigsetjmp(jb, 1) == 0)
		(void)*(volatile char *)(m + pagesz()); /* past the end of the file */
	cr_expect_eq(seen_sig, SIGBUS);
	ckpt_close(c);
}

static char *flag_page;

static void write_flag(int sig)
{
	(void)sig;
	flag_page[0]++;
}

Test(signals, a_handler_that_blocks_everything_can_write_tracked_memory)
{
	/* While a handler with a full mask runs, SIGSEGV would be blocked and
	 * its first write to a protected page would kill the process.  This
	 * one is installed while tracking, through ckpt's sigaction. */
	flag_page = map_anon(1, 0);
	ckpt_t *c = begin_tracking(0);
	struct sigaction sa = {0};
	sa.sa_handler = write_flag;
	sigfillset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	raise(SIGUSR1);
	cr_expect_eq(flag_page[0], 1);
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, flag_page));
	ckpt_close(c);
}

Test(signals, a_handler_installed_with_a_full_mask_behind_ckpts_back)
{
	/* Installed with libc's own sigaction, which ckpt does not see (as a
	 * library loaded before libckpt would): ckpt_begin must open its mask. */
	void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
	cr_assert(libc);
	int (*libc_sigaction)(int, const struct sigaction *, struct sigaction *) =
		(int (*)(int, const struct sigaction *, struct sigaction *))dlsym(libc, "sigaction");
	cr_assert(libc_sigaction);
	flag_page = map_anon(1, 0);
	struct sigaction sa = {0};
	sa.sa_handler = write_flag;
	sigfillset(&sa.sa_mask);
	cr_assert_eq(libc_sigaction(SIGUSR2, &sa, NULL), 0);
	ckpt_t *c = begin_tracking(0);
	raise(SIGUSR2);
	cr_expect_eq(flag_page[0], 1);
	ckpt_close(c);
	dlclose(libc);
}

Test(signals, blocking_sigsegv_does_not_break_tracking)
{
	char *m = map_anon(2, 0);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGSEGV);
	ckpt_t *c = begin_tracking(0);
	cr_assert_eq(sigprocmask(SIG_BLOCK, &set, NULL), 0);
	m[pagesz()] = 1;
	cr_expect_eq(m[pagesz()], 1);
	ckpt_close(c);
}

static volatile long ticks;

static void tick(int sig)
{
	(void)sig;
	ticks++;
	flag_page[ticks % 4 * 4096] = 1;
}

Test(signals, a_storm_of_signals_while_writing, .timeout = 60)
{
	/* Every signal makes the kernel write the signal frame and, with rseq,
	 * the thread's rseq area in its TLS block: neither may be protected. */
	flag_page = map_anon(4, 0);
	char *m = map_anon(4096, 0);
	struct sigaction sa = {0};
	sa.sa_handler = tick;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 100}, {0, 100}};
	ckpt_t *c = begin_tracking(0);
	setitimer(ITIMER_REAL, &it, NULL);
	for (int round = 0; round < 4; round++)
		for (size_t i = 0; i < 4096; i++)
			m[i * pagesz() + (size_t)round] = (char)round;
	it = (struct itimerval){{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &it, NULL);
	cr_expect_gt(ticks, 0);
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect_eq(dset_count_in(&s, m, 4096), 4096);
	ckpt_close(c);
}

static volatile int on_alt;
static char *alt_stack;

static void check_stack(int sig)
{
	(void)sig;
	char here;
	on_alt = &here >= alt_stack && &here < alt_stack + (1 << 16);
	flag_page[0] = 'a';
}

Test(signals, an_alternate_stack_in_the_heap_set_before_begin)
{
	flag_page = map_anon(1, 0);
	alt_stack = malloc(1 << 16);
	memset(alt_stack, 0, 1 << 16);
	stack_t ss = {.ss_sp = alt_stack, .ss_size = 1 << 16};
	cr_assert_eq(sigaltstack(&ss, NULL), 0);
	struct sigaction sa = {0};
	sa.sa_handler = check_stack;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	ckpt_t *c = begin_tracking(0);
	raise(SIGUSR1);
	cr_expect(on_alt, "the handler did not run on the alternate stack");
	cr_expect_eq(flag_page[0], 'a');
	ckpt_close(c);
}

Test(signals, errno_survives_a_fault)
{
	char *m = map_anon(1, 0);
	ckpt_t *c = begin_tracking(0);
	errno = 1234;
	m[0] = 1;
	cr_expect_eq(errno, 1234);
	ckpt_close(c);
}

/* ---- near the mapping limit ------------------------------------------------
 * Near vm.max_map_count the mprotect back-end reads /proc/self/maps under a
 * spin lock, both in its fault handler and in normal code (an interposer
 * opening a read() buffer).  A signal arriving while normal code holds it,
 * whose handler faults into that lock, must not wait for it forever. */

static char *ro_page;
static sigjmp_buf ro_jb;
static volatile long usr1_seen, ro_faults;

static void ro_fault(int sig)
{
	(void)sig;
	ro_faults++;
	siglongjmp(ro_jb, 1);
}

static void usr1_writes_read_only(int sig)
{
	(void)sig;
	/* A write fault outside every tracked region: the fault path reads
	 * the maps (was it memory mremap moved?) before passing it on. */
	if (sigsetjmp(ro_jb, 1) == 0)
		*(volatile char *)ro_page = 1;
	usr1_seen++;
}

struct pester {
	pid_t tid;
	volatile int stop;
	long sent;
};

static void *pester_main(void *arg)
{
	struct pester *p = arg;
	while (!p->stop) {
		long before = usr1_seen;
		if (syscall(SYS_tgkill, getpid(), p->tid, SIGUSR1) != 0)
			break;
		p->sent++;
		while (usr1_seen == before && !p->stop)
			sched_yield();
		usleep(500);
	}
	return NULL;
}

Test(signals, a_handler_faulting_while_an_interposer_holds_the_maps_lock, .timeout = 60)
{
	size_t ps = pagesz();
	/* Enough mappings to pass ckpt's share of the limit (an eighth of it
	 * stays free), but not the limit: one-page writable mappings between
	 * PROT_NONE ones, each a region of its own. */
	long limit = 65530;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	if (f) {
		cr_assert_eq(fscanf(f, "%ld", &limit), 1);
		fclose(f);
	}
	long reserve = limit / 8 > 1024 ? limit / 8 : 1024;
	size_t pairs = (size_t)(limit - reserve / 2) / 2;
	char *m = mmap(NULL, 2 * pairs * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	cr_assert_neq(m, MAP_FAILED);
	for (size_t i = 0; i < pairs; i++)
		cr_assert_eq(mprotect(m + 2 * i * ps, ps, PROT_READ | PROT_WRITE), 0,
			     "mprotect %zu: %s", i, strerror(errno));
	ro_page = mmap(NULL, ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(ro_page, MAP_FAILED);
	struct sigaction sa = {0};
	sa.sa_handler = ro_fault;
	sa.sa_flags = SA_NODEFER;
	cr_assert_eq(sigaction(SIGSEGV, &sa, NULL), 0);
	sa.sa_handler = usr1_writes_read_only;
	sa.sa_flags = 0;
	cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	int pfd[2];
	cr_assert_eq(pipe(pfd), 0);
	ckpt_t *c = begin_tracking(0);
	struct pester p = {.tid = (pid_t)syscall(SYS_gettid)};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, pester_main, &p), 0);
	/* Each read opens a page of its own: over budget, through the
	 * fallback, which checks the kernel's count under the lock every 64
	 * times or so.  Nothing else in the loop writes tracked memory (the
	 * results go to the stack), so that those checks fall to the reads. */
	enum { READS = 400 };
	ssize_t got[READS];
	for (size_t i = 0; i < READS; i++) {
		char byte = (char)('a' + i % 26);
		got[i] = write(pfd[1], &byte, 1) == 1 ? read(pfd[0], m + 2 * i * ps, 1) : -2;
	}
	while (usr1_seen < 3)
		sched_yield();
	p.stop = 1;
	for (size_t i = 0; i < READS; i++) {
		cr_expect_eq(got[i], 1, "read %zu returned %zd", i, got[i]);
		cr_expect_eq(m[2 * i * ps], (char)('a' + i % 26), "read %zu", i);
	}
	pthread_join(th, NULL);
	cr_expect_gt(p.sent, 0);
	cr_expect_eq(ro_faults, usr1_seen, "every handler's write faulted once");
	ckpt_stats st;
	cr_assert_eq(ckpt_stats(c, &st), 0);
	if (backend_of(c) == CKPT_BACKEND_MPROTECT)
		cr_expect_gt(st.fallbacks, 0, "ckpt's share of the mapping limit was never reached");
	/* (Under uffd nothing splits a mapping and there is no such lock: the
	 * same program simply runs.) */
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	for (size_t i = 0; i < READS; i++)
		cr_expect(dset_has(&s, m + 2 * i * ps), "page %zu read into is not dirty", i);
	ckpt_close(c);
	close(pfd[0]);
	close(pfd[1]);
	munmap(m, 2 * pairs * ps);
}

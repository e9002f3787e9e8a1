/*
 * tests/audit-target.c - a program for tests/audit.sh to run under ckpt-audit,
 * writing known pages of known buffers.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The buffers are initialised data, so they live in the program's own file
 * mapping (named by its path in the report) and exist before tracking
 * starts: only the pages written are reported, not the whole buffer.  Every
 * other page is written, so each one is a run of its own.
 *
 *     audit-target threads   4 threads write 8, 16, 24, 32 pages (80 in all,
 *                            80 runs), then the main thread 16 more pages
 *                            after a pause (a second burst in the timeline)
 *     audit-target fork      the parent writes 5 pages, forks; the child
 *                            writes 7 pages and exits 0; the parent waits,
 *                            writes 3 more and exits with 3
 *     audit-target exit N    exits with status N
 *     audit-target kill      writes 4 pages, waits past one sample, kills
 *                            itself with SIGTERM
 *     audit-target quick-exit  writes 12 pages, waits past one sample, _exit(0)
 */
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE	 4096 /* the buffers are aligned to pages of at most this size */
#define NTHREADS 4

/* Non-zero initialisers put the buffers in .data (the file mapping). */
static char bufs[NTHREADS][64 * PAGE] __attribute__((aligned(PAGE))) = {{1}};
static char main_buf[64 * PAGE] __attribute__((aligned(PAGE))) = {1};

static void write_pages(char *buf, int n, int value)
{
	for (int i = 0; i < n; i++)
		((volatile char *)buf)[2 * i * PAGE + 7] = (char)value;
}

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

static void *thread_main(void *arg)
{
	long i = (long)arg;
	write_pages(bufs[i], 8 * (int)(i + 1), (int)i + 2);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "threads")) {
		pthread_t t[NTHREADS];
		for (long i = 0; i < NTHREADS; i++)
			if (pthread_create(&t[i], NULL, thread_main, (void *)i) != 0)
				return 1;
		for (int i = 0; i < NTHREADS; i++)
			pthread_join(t[i], NULL);
		pause_ms(400);
		write_pages(main_buf, 16, 9);
		printf("threads: wrote %d pages\n", 8 + 16 + 24 + 32 + 16);
		return 0;
	}
	if (!strcmp(mode, "fork")) {
		write_pages(bufs[0], 5, 1);
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0) {
			write_pages(bufs[1], 7, 2);
			printf("child %d\n", (int)getpid());
			exit(0);
		}
		int st;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			return 1;
		write_pages(bufs[2], 3, 3);
		printf("parent %d\n", (int)getpid());
		return 3;
	}
	if (!strcmp(mode, "exit") && argc > 2)
		return atoi(argv[2]);
	if (!strcmp(mode, "kill")) {
		write_pages(bufs[0], 4, 1);
		pause_ms(300);
		kill(getpid(), SIGTERM);
		pause_ms(5000);
		return 1;
	}
	if (!strcmp(mode, "quick-exit")) {
		write_pages(bufs[3], 12, 1);
		pause_ms(300);
		_exit(0);
	}
	fprintf(stderr, "usage: audit-target threads|fork|exit N|kill|quick-exit\n");
	return 2;
}

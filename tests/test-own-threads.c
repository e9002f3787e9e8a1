/*
 * test-own-threads.c - ckpt's own threads (compression workers, the
 * background writer) leave nothing of theirs in the program's snapshots:
 * after a commit and a reset, every page the snapshot holds is what its file
 * holds, and glibc counts only the program's threads.  Each check runs
 * tests/own-threads-prog in a new process (through the libtool wrapper).
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs the program with `args` in a fresh chain directory; returns its
 * wait status and its output (stdout and stderr) in out. */
static int run(const char *args, char *out, size_t outlen)
{
	char tmp[] = "/tmp/ckpt-own-XXXXXX", prog[4096], cmd[8192];
	cr_assert(mkdtemp(tmp));
	const char *b = getenv("top_builddir");
	snprintf(prog, sizeof prog, "%s/tests/own-threads-prog", b ? b : ".");
	snprintf(cmd, sizeof cmd, "'%s' '%s/chain' %s 2>&1", prog, tmp, args);
	FILE *f = popen(cmd, "r");
	cr_assert(f);
	size_t n = fread(out, 1, outlen - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	(void)!system(cmd);
	return st;
}

static void same(const char *args)
{
	char out[8192];
	int st = run(args, out, sizeof out);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "own-threads-prog %s: status %#x; after the reset, pages differ from the "
		  "snapshot's file:\n%s",
		  args, st, out);
	cr_assert(strstr(out, "same: ") && strstr(out, " 0 differ"), "%s", out);
}

Test(own_threads, reset_equals_the_file_default_threads_sync, .timeout = 60)
{
	same("same 0 SYNC");
}

Test(own_threads, reset_equals_the_file_one_thread_sync, .timeout = 60)
{
	same("same 1 SYNC");
}

Test(own_threads, reset_equals_the_file_four_threads_sync, .timeout = 60)
{
	same("same 4 SYNC");
}

Test(own_threads, reset_equals_the_file_default_threads_async, .timeout = 60)
{
	same("same 0 ASYNC");
}

Test(own_threads, reset_equals_the_file_one_thread_async, .timeout = 60)
{
	same("same 1 ASYNC");
}

Test(own_threads, reset_equals_the_file_four_threads_async, .timeout = 60)
{
	same("same 4 ASYNC");
}

static void ends_by_pthread_exit(const char *threads)
{
	char args[64], out[4096];
	snprintf(args, sizeof args, "exit %s", threads);
	int st = run(args, out, sizeof out);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
	cr_assert(strstr(out, "flushed at exit"),
		  "pthread_exit from main did not end the process by exit(): %s", out);
	const char *n = strstr(out, "glibc counts ");
	if (n)
		cr_assert(!strncmp(n, "glibc counts 1 threads", 22), "%s", out);
}

Test(own_threads, pthread_exit_from_main_after_a_reset_flushes_and_exits_0, .timeout = 60)
{
	ends_by_pthread_exit("0");
}

Test(own_threads, pthread_exit_from_main_after_a_reset_with_four_workers, .timeout = 60)
{
	ends_by_pthread_exit("4");
}

/*
 * tools/ckpt.c - the ckpt command-line tool.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * One program, one subcommand per task, each documented in ckpt(1).  It uses
 * the public API only.
 */
#include <ckpt.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Exit statuses (documented in ckpt(1)). */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct command {
	const char *name;
	const char *args;
	const char *what;
	int (*run)(int argc, char **argv);
};

static int cmd_help(int argc, char **argv);

static int cmd_version(int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "ckpt version: no arguments expected\n");
		return EXIT_USAGE;
	}
	printf("ckpt %s (library %s)\n", CKPT_VERSION_STRING, ckpt_version_string());
	return EXIT_OK;
}

static int cmd_errors(int argc, char **argv)
{
	/* With codes as arguments: describe those; without: list them all. */
	if (argc > 1) {
		int status = EXIT_OK;
		for (int i = 1; i < argc; i++) {
			char *end;
			long v = strtol(argv[i], &end, 0);
			if (*end || end == argv[i]) {
				fprintf(stderr, "ckpt errors: '%s' is not a number\n", argv[i]);
				status = EXIT_USAGE;
				continue;
			}
			if (v > 0)
				v = -v; /* a process exit status or errno value */
			printf("%6ld  %-18s %s\n", v, ckpt_err_name((int)v), ckpt_strerror((int)v));
		}
		return status;
	}
#define ROW(name, value, text) printf("%6d  %-18s %s\n", value, "CKPT_" #name, text);
	CKPT_ERRNO_MAP(ROW)
#undef ROW
	return EXIT_OK;
}

static const struct command commands[] = {
	{"help", "", "this summary", cmd_help},
	{"version", "", "the versions of the tool and of the library", cmd_version},
	{"errors", "[CODE...]", "the error codes ckpt returns, or what CODE means", cmd_errors},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
	fprintf(f, "usage: ckpt COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++) {
		char head[48];
		snprintf(head, sizeof head, "%s %s", commands[i].name, commands[i].args);
		fprintf(f, "  %-24s %s\n", head, commands[i].what);
	}
	fprintf(f, "\nExit status: 0 success, 1 failure, 2 usage error.  See ckpt(1).\n");
}

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	usage(stdout);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--version"))
		return cmd_version(1, argv + 1);
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "ckpt: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}

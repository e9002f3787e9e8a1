/*
 * backend-probe.c - whether a tracking back-end works on this machine.
 * backend-probe mprotect|uffd|softdirty: exit 0 if so, else 1 with the
 * reason on stderr.  Used by tests/backend-run.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <ckpt.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	static const char *const names[] = {"", "mprotect", "uffd", "softdirty"};
	int want = 0;
	for (int i = 1; argc == 2 && i < 4; i++)
		if (!strcmp(argv[1], names[i]))
			want = i;
	if (!want) {
		fprintf(stderr, "usage: backend-probe mprotect|uffd|softdirty\n");
		return 2;
	}
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = want;
	ckpt_t *c;
	int rc = ckpt_open(&c, NULL, &o);
	if (rc) {
		fprintf(stderr, "%s\n", ckpt_last_error());
		return 1;
	}
	ckpt_close(c);
	return 0;
}

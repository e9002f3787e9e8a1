/*
 * tools/json.h - JSON strings for the tools' --json output.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_TOOLS_JSON_H
#define CKPT_TOOLS_JSON_H

#include <stdio.h>

/*
 * Writes s to f as a JSON string, quotes included.  Quotes, backslashes and
 * control characters (U+0000-U+001F and DEL) are escaped; valid UTF-8 passes
 * through; every byte that is not part of a valid UTF-8 sequence (a stray
 * continuation byte, a truncated or overlong sequence, a surrogate, a code
 * point above U+10FFFF) becomes \ufffd, since paths, mapping names and
 * command lines are arbitrary bytes on Linux and a JSON document must be
 * UTF-8.  A NULL s is written as "".  Write errors are left in f's error
 * indicator (ferror).
 */
void json_str(FILE *f, const char *s);

#endif /* CKPT_TOOLS_JSON_H */

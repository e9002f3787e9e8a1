/*
 * test-json.c - the tools' JSON string escaper (tools/json.c).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every output is read back by a strict decoder written here (RFC 8259
 * strings, RFC 3629 UTF-8): it must be one valid JSON string, and decode to
 * the input when the input is valid UTF-8.
 */
#include "json.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* json_str(s) as a malloc'd string. */
static char *escape(const char *s)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	cr_assert(f);
	json_str(f, s);
	cr_assert_eq(ferror(f), 0);
	cr_assert_eq(fclose(f), 0);
	return out;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629, table 3-7 of
 * Unicode), 0 if there is none; p holds `left` bytes. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
	static const struct {
		unsigned char lo0, hi0, lo1, hi1;
		size_t n;
	} rows[] = {
		{0xc2, 0xdf, 0x80, 0xbf, 2}, {0xe0, 0xe0, 0xa0, 0xbf, 3}, {0xe1, 0xec, 0x80, 0xbf, 3},
		{0xed, 0xed, 0x80, 0x9f, 3}, {0xee, 0xef, 0x80, 0xbf, 3}, {0xf0, 0xf0, 0x90, 0xbf, 4},
		{0xf1, 0xf3, 0x80, 0xbf, 4}, {0xf4, 0xf4, 0x80, 0x8f, 4},
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		if (p[0] < rows[i].lo0 || p[0] > rows[i].hi0)
			continue;
		size_t n = rows[i].n;
		if (left < n || p[1] < rows[i].lo1 || p[1] > rows[i].hi1)
			return 0;
		for (size_t k = 2; k < n; k++)
			if (p[k] < 0x80 || p[k] > 0xbf)
				return 0;
		return n;
	}
	return 0;
}

static int valid_utf8(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len;) {
		size_t n = p[i] < 0x80 ? 1 : utf8_seq(p + i, len - i);
		if (!n)
			return 0;
		i += n;
	}
	return 1;
}

static void put_utf8(char **o, uint32_t cp)
{
	unsigned char *q = (unsigned char *)*o;
	if (cp < 0x80) {
		*q++ = (unsigned char)cp;
	} else if (cp < 0x800) {
		*q++ = (unsigned char)(0xc0 | cp >> 6);
		*q++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*q++ = (unsigned char)(0xe0 | cp >> 12);
		*q++ = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		*q++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else {
		*q++ = (unsigned char)(0xf0 | cp >> 18);
		*q++ = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
		*q++ = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		*q++ = (unsigned char)(0x80 | (cp & 0x3f));
	}
	*o = (char *)q;
}

static int hex4(const char *p, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -1;
		*v = *v << 4 | (uint32_t)d;
	}
	return 0;
}

/* Decodes the JSON document `j`, which must be exactly one string, into a
 * malloc'd NUL-terminated UTF-8 string; *why says what is wrong otherwise. */
static char *decode(const char *j, const char **why)
{
	size_t len = strlen(j);
	*why = NULL;
	if (!valid_utf8((const unsigned char *)j, len)) {
		*why = "not UTF-8";
		return NULL;
	}
	if (len < 2 || j[0] != '"' || j[len - 1] != '"') {
		*why = "not enclosed in quotes";
		return NULL;
	}
	char *out = malloc(len + 1), *o = out;
	cr_assert(out);
	for (size_t i = 1; i < len - 1;) {
		unsigned char c = (unsigned char)j[i];
		if (c < 0x20) {
			*why = "a raw control character";
		} else if (c == '"') {
			*why = "an unescaped quote";
		} else if (c != '\\') {
			*o++ = (char)c;
			i++;
			continue;
		} else if (i + 1 >= len - 1) {
			*why = "a backslash escaping the closing quote";
		} else {
			const char *simple = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
			const char *k = strchr(simple, j[i + 1]);
			uint32_t cp, lo;
			if (j[i + 1] && k) {
				*o++ = to[k - simple];
				i += 2;
				continue;
			}
			if (j[i + 1] != 'u' || i + 6 > len - 1 || hex4(j + i + 2, &cp)) {
				*why = "a bad escape";
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				*why = "a lone low surrogate";
			} else if (cp >= 0xd800 && cp <= 0xdbff) {
				if (i + 12 > len - 1 || j[i + 6] != '\\' || j[i + 7] != 'u' ||
				    hex4(j + i + 8, &lo) || lo < 0xdc00 || lo > 0xdfff) {
					*why = "a lone high surrogate";
				} else {
					put_utf8(&o, 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00));
					i += 12;
					continue;
				}
			} else {
				put_utf8(&o, cp);
				i += 6;
				continue;
			}
		}
		free(out);
		return NULL;
	}
	*o = '\0';
	return out;
}

/* s escapes to exactly `want`, a valid JSON string. */
static void expect_escape(const char *s, const char *want)
{
	char *got = escape(s);
	cr_expect_str_eq(got, want);
	const char *why;
	char *back = decode(got, &why);
	cr_expect(back, "%s is not a JSON string: %s", got, why);
	free(back);
	free(got);
}

/* s escapes to a valid JSON string that decodes to s itself. */
static void expect_round_trip(const char *s)
{
	char *got = escape(s);
	const char *why;
	char *back = decode(got, &why);
	cr_assert(back, "%s is not a JSON string: %s", got, why);
	cr_expect_str_eq(back, s);
	free(back);
	free(got);
}

Test(json, plain_text_is_quoted)
{
	expect_escape("hello, world", "\"hello, world\"");
	expect_escape("", "\"\"");
	expect_escape("/usr/lib/x86_64-linux-gnu/libc.so.6", "\"/usr/lib/x86_64-linux-gnu/libc.so.6\"");
}

Test(json, null_is_the_empty_string)
{
	expect_escape(NULL, "\"\"");
}

Test(json, quotes_and_backslashes_are_escaped)
{
	expect_escape("a\"b", "\"a\\\"b\"");
	expect_escape("a\\b", "\"a\\\\b\"");
	expect_escape("\"\\\"", "\"\\\"\\\\\\\"\"");
	expect_round_trip("C:\\ \"quoted\" \\\\server");
}

Test(json, a_newline_and_a_tab_are_escaped)
{
	expect_escape("line 1\nline 2", "\"line 1\\nline 2\"");
	expect_escape("a\tb", "\"a\\tb\"");
	expect_round_trip("\n\n\t\n");
}

Test(json, every_control_byte_is_escaped)
{
	expect_escape("\x01", "\"\\u0001\"");
	expect_escape("\x1f", "\"\\u001f\"");
	expect_escape("\r\b\f", "\"\\u000d\\u0008\\u000c\"");
	expect_escape("\x7f", "\"\\u007f\"");
	/* All of them, and DEL, in one string. */
	char all[34];
	for (int c = 1; c < 0x20; c++)
		all[c - 1] = (char)c;
	all[31] = 0x7f;
	all[32] = 'x';
	all[33] = '\0';
	expect_round_trip(all);
	char *got = escape(all);
	for (const char *p = got; *p; p++)
		cr_expect((unsigned char)*p >= 0x20 && *p != 0x7f, "raw byte %#x in %s",
			  (unsigned char)*p, got);
	free(got);
}

Test(json, valid_utf8_passes_through)
{
	static const char *const valid[] = {
		"\xc3\xa9t\xc3\xa9",   /* été */
		"\xe2\x82\xac 5",       /* € */
		"\xf0\x9d\x84\x9e",     /* U+1D11E, four bytes */
		"\xc2\x80",             /* U+0080, the smallest of two bytes */
		"\xe0\xa0\x80",         /* U+0800 */
		"\xed\x9f\xbf",         /* U+D7FF, just below the surrogates */
		"\xee\x80\x80",         /* U+E000, just above them */
		"\xef\xbf\xbd",         /* U+FFFD itself */
		"\xf0\x90\x80\x80",     /* U+10000 */
		"\xf4\x8f\xbf\xbf",     /* U+10FFFF, the last code point */
		"/home/\xe5\xb1\xb1\xe7\x94\xb0/run.ckpt",
	};
	for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		char want[64];
		snprintf(want, sizeof want, "\"%s\"", valid[i]);
		expect_escape(valid[i], want);
		expect_round_trip(valid[i]);
	}
}

Test(json, invalid_utf8_becomes_the_replacement_character)
{
#define R "\\ufffd"
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"a\x80z", "\"a" R "z\""},                     /* a lone continuation byte */
		{"\xbf", "\"" R "\""},
		{"\xc0\x80", "\"" R R "\""},                   /* overlong NUL */
		{"\xc1\xbf", "\"" R R "\""},                   /* overlong U+007F */
		{"\xe0\x80\x80", "\"" R R R "\""},             /* overlong, three bytes */
		{"\xe0\x9f\xbf", "\"" R R R "\""},             /* overlong U+07FF */
		{"\xf0\x8f\xbf\xbf", "\"" R R R R "\""},       /* overlong U+FFFF */
		{"\xed\xa0\x80", "\"" R R R "\""},             /* U+D800, a surrogate */
		{"\xed\xbf\xbf", "\"" R R R "\""},             /* U+DFFF */
		{"\xf4\x90\x80\x80", "\"" R R R R "\""},       /* U+110000 */
		{"\xf5\x80\x80\x80", "\"" R R R R "\""},
		{"\xfe\xff", "\"" R R "\""},
		{"x\xe2\x82", "\"x" R R "\""},                 /* truncated at the end */
		{"\xe2\x82y", "\"" R R "y\""},                 /* truncated by ASCII */
		{"\xf0\x9d\x84\"", "\"" R R R "\\\"\""},        /* truncated by a quote */
		{"\xe2\x82\xac\x80", "\"\xe2\x82\xac" R "\""}, /* valid, then a stray byte */
		{"\xff\n", "\"" R "\\n\""},
	};
#undef R
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		expect_escape(cases[i].in, cases[i].out);
}

Test(json, any_bytes_give_valid_json)
{
	/* Random strings of every byte value: always one valid JSON string,
	 * and the very input whenever it was valid UTF-8. */
	unsigned seed = 12345;
	char buf[64];
	size_t valid = 0;
	for (int round = 0; round < 20000; round++) {
		size_t n = (size_t)(rand_r(&seed) % (int)(sizeof buf - 1));
		int bias = rand_r(&seed) % 3; /* 0: any byte, 1: mostly text, 2: mostly UTF-8 */
		for (size_t i = 0; i < n; i++) {
			int r = rand_r(&seed);
			unsigned char c = (unsigned char)(r >> 8);
			if (bias == 1 && r % 4)
				c = (unsigned char)(0x20 + c % 0x5f);
			else if (bias == 2 && r % 3 == 0)
				c = (unsigned char)(0x80 + c % 0x40);
			else if (bias == 2 && r % 3 == 1)
				c = (unsigned char)(0xc2 + c % 0x33);
			buf[i] = c ? (char)c : 'z';
		}
		buf[n] = '\0';
		char *got = escape(buf);
		const char *why;
		char *back = decode(got, &why);
		cr_assert(back, "round %d: %s is not a JSON string: %s", round, got, why);
		if (valid_utf8((const unsigned char *)buf, n)) {
			valid++;
			cr_assert_str_eq(back, buf, "round %d", round);
		}
		free(back);
		free(got);
	}
	cr_expect_gt(valid, 1000, "too few valid UTF-8 strings drawn to check round trips");
}

Test(json, the_decoder_here_refuses_what_it_must)
{
	/* The checks above mean something only if the decoder refuses bad
	 * documents. */
	static const char *const bad[] = {
		"\"a\nb\"", "\"a\"b\"", "\"\\x\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\udc00\"",
		"\"\xff\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "abc", "\"abc", "\"\\\"",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *why;
		char *back = decode(bad[i], &why);
		cr_expect_null(back, "accepted %s", bad[i]);
		free(back);
	}
	const char *why;
	char *back = decode("\"\\ud834\\udd1e \\u00e9\\/\"", &why);
	cr_assert(back, "%s", why);
	cr_expect_str_eq(back, "\xf0\x9d\x84\x9e \xc3\xa9/");
	free(back);
}

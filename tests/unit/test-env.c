/*
 * Unit tests for the .env parser (common/env.c).
 *
 * Usage: test-env [CORPUS_DIR]
 * With a directory, also parses every good-*.env in it (must succeed) and
 * every bad-*.env (must fail).  A bad file whose first line is
 * "# error: LINE:COLUMN" (after a BOM, if any) must fail at exactly that
 * place.
 * Exits 0 when every check passed.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env.h"
#include "common/util.h"
#include "tests/unit/check.h"

/* The lower layers seen by every test: a fixed fake environment. */
static const char *fake_lookup(const char *name, void *data)
{
	static const char *const vars[][2] = {
		{ "HOME", "/home/test" },
		{ "PGHOST", "db.internal" },
		{ "EMPTY", "" },
		{ "SHADOWED", "from-env" },
	};
	size_t i;

	(void)data;
	for (i = 0; i < ARRAY_SIZE(vars); i++) {
		if (streq(vars[i][0], name))
			return vars[i][1];
	}
	return NULL;
}

static int parse(const char *text, struct env_file *f, struct env_error *err)
{
	return env_parse(text, strlen(text), fake_lookup, NULL, f, err);
}

/* text must parse, and name must then have value (NULL: be undefined). */
#define EXPECT_VALUE(text, name, value) expect_value(__LINE__, text, name, value)
static void expect_value(int at, const char *text, const char *name, const char *value)
{
	struct env_file f;
	struct env_error err;
	const char *got;
	int r = parse(text, &f, &err);

	if (r != 0) {
		fprintf(stderr, "%s:%d: parse failed (%d) at %u:%u: %s\n", __FILE__, at, r,
			err.line, err.column, err.message);
		check_failed++;
		return;
	}
	got = env_file_get(&f, name);
	if (value ? !got || !streq(got, value) : got != NULL) {
		fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, at, name,
			got ? got : "(unset)", value ? value : "(unset)");
		check_failed++;
	}
	env_file_fini(&f);
}

/* text must fail with a message containing msg at line:column. */
#define EXPECT_ERROR(text, line, column, msg) \
	expect_error(__LINE__, text, strlen(text), line, column, msg)
static void expect_error(int at, const char *text, size_t len, unsigned line, unsigned column,
			 const char *msg)
{
	struct env_file f;
	struct env_error err;
	int r = env_parse(text, len, fake_lookup, NULL, &f, &err);

	if (r != -EINVAL || f.n != 0 || f.entries != NULL) {
		fprintf(stderr, "%s:%d: expected -EINVAL and an empty result, got %d\n", __FILE__, at, r);
		check_failed++;
		env_file_fini(&f);
		return;
	}
	if (err.line != line || err.column != column || !strstr(err.message, msg)) {
		fprintf(stderr, "%s:%d: got %u:%u \"%s\", expected %u:%u \"%s\"\n", __FILE__, at,
			err.line, err.column, err.message, line, column, msg);
		check_failed++;
	}
}

static void test_basic(void)
{
	struct env_file f;
	int r;

	r = parse("A=1\nexport B=two\n\n  C = 3 \nD=\nA=again\n", &f, NULL);
	CHECK(r == 0);
	CHECK(f.n == 5);
	if (r == 0 && f.n == 5) {
		CHECK(streq(f.entries[0].name, "A") && streq(f.entries[0].value, "1"));
		CHECK(f.entries[0].line == 1);
		CHECK(streq(f.entries[1].name, "B") && streq(f.entries[1].value, "two"));
		CHECK(streq(f.entries[2].name, "C") && streq(f.entries[2].value, "3"));
		CHECK(f.entries[2].line == 4);
		CHECK(streq(f.entries[3].name, "D") && streq(f.entries[3].value, ""));
		CHECK(f.entries[4].line == 6);
		CHECK(streq(env_file_get(&f, "A"), "again"));
		CHECK(env_file_get(&f, "HOME") == NULL); /* lookup is not the file */
		CHECK(env_file_get(&f, "a") == NULL);    /* case matters */
	}
	env_file_fini(&f);
	CHECK(f.n == 0 && f.entries == NULL);
	env_file_fini(&f); /* twice is harmless */

	CHECK(parse("", &f, NULL) == 0 && f.n == 0);
	CHECK(parse("\n\n   \n\t\n", &f, NULL) == 0 && f.n == 0);
	CHECK(env_parse("A=1", 3, NULL, NULL, &f, NULL) == 0 && f.n == 1);
	env_file_fini(&f);
	/* len is honoured: the bytes after it are not read. */
	CHECK(env_parse("A=12345", 4, NULL, NULL, &f, NULL) == 0);
	CHECK(f.n == 1 && streq(env_file_get(&f, "A"), "12"));
	env_file_fini(&f);

	EXPECT_VALUE("_a_9Z=x", "_a_9Z", "x");
	EXPECT_VALUE("A\t=\tx\t", "A", "x");
	EXPECT_VALUE("A=  lead and trail  \t ", "A", "lead and trail");
	EXPECT_VALUE("A=", "A", "");
	EXPECT_VALUE("A=   ", "A", "");
	EXPECT_VALUE("A=x\n", "A", "x");
	EXPECT_VALUE("A=a=b=c", "A", "a=b=c");
	EXPECT_VALUE("A=it's \"fine\"", "A", "it's \"fine\"");
	EXPECT_VALUE("A=back\\slash\\n", "A", "back\\slash\\n");
}

static void test_export(void)
{
	EXPECT_VALUE("export A=1", "A", "1");
	EXPECT_VALUE("export\tA=1", "A", "1");
	EXPECT_VALUE("  export  \t A = 1", "A", "1");
	EXPECT_VALUE("exportA=1", "exportA", "1");
	EXPECT_VALUE("export=1", "export", "1");
	EXPECT_VALUE("export =1", "export", "1");
	EXPECT_ERROR("export A\n", 1, 9, "expected '=' after name");
	EXPECT_ERROR("export\n", 1, 7, "expected '=' after name");
	EXPECT_ERROR("export  \n", 1, 9, "expected '=' after name");
	EXPECT_ERROR("export 1A=x\n", 1, 8, "invalid variable name");
}

static void test_names(void)
{
	EXPECT_ERROR("1A=x", 1, 1, "invalid variable name");
	EXPECT_ERROR("A=1\n  -A=x", 2, 3, "invalid variable name");
	EXPECT_ERROR("FOO-BAR=x", 1, 4, "invalid variable name");
	EXPECT_ERROR("FOO.BAR=x", 1, 4, "invalid variable name");
	EXPECT_ERROR("=x", 1, 1, "invalid variable name");
	EXPECT_ERROR("A", 1, 2, "expected '=' after name");
	EXPECT_ERROR("A\n", 1, 2, "expected '=' after name");
	EXPECT_ERROR("A B=x", 1, 3, "expected '=' after name");
	EXPECT_ERROR("A:x", 1, 2, "invalid variable name");
	EXPECT_ERROR("ok=1\nnot a definition\n", 2, 5, "expected '=' after name");
	EXPECT_ERROR("\xc3\xa9=x", 1, 1, "invalid variable name");
}

static void test_comments(void)
{
	struct env_file f;

	CHECK(parse("# A=1\n   # B=2\n\t#\n#", &f, NULL) == 0 && f.n == 0);
	EXPECT_VALUE("A=x # comment", "A", "x");
	EXPECT_VALUE("A=x\t# comment", "A", "x");
	EXPECT_VALUE("A=x#y", "A", "x#y");
	EXPECT_VALUE("A=#x", "A", "#x");
	EXPECT_VALUE("A= #only a comment", "A", "");
	EXPECT_VALUE("A=x #", "A", "x");
	EXPECT_VALUE("A=a # b # c", "A", "a");
	EXPECT_VALUE("A=postgresql://u:p#x@h/db", "A", "postgresql://u:p#x@h/db");
	EXPECT_VALUE("A=x ## y", "A", "x");
	/* Comments may say anything, even things that are errors elsewhere. */
	EXPECT_VALUE("# \"unterminated '${ \\q\nA=1", "A", "1");
	EXPECT_VALUE("A=1 # \"unterminated '${ \\q", "A", "1");
}

static void test_crlf(void)
{
	struct env_file f;

	CHECK(parse("A=1\r\nB = two \r\n\r\n# c\r\nC='q'\r\nD=\"x\"  # c\r\n", &f, NULL) == 0);
	CHECK(f.n == 4);
	if (f.n == 4) {
		CHECK(streq(env_file_get(&f, "A"), "1"));
		CHECK(streq(env_file_get(&f, "B"), "two"));
		CHECK(streq(env_file_get(&f, "C"), "q"));
		CHECK(streq(env_file_get(&f, "D"), "x"));
		CHECK(f.entries[2].line == 5);
	}
	env_file_fini(&f);
	EXPECT_VALUE("A=\"one\r\ntwo\"\r\n", "A", "one\ntwo");
	EXPECT_VALUE("A=${B:-x}\r\n", "A", "x");
	EXPECT_ERROR("A=1\r\nB\r\n", 2, 2, "expected '=' after name");
	EXPECT_ERROR("A='x\r\n'", 1, 3, "unterminated single quote");
}

/* Any \r but the first of \r\n is an error wherever it is, and the first
 * NUL or such \r is what is reported. */
static void test_lone_cr(void)
{
	static const char *const msg = "carriage return not followed by a line feed";

	EXPECT_ERROR("A=a\rb\n", 1, 4, msg);
	EXPECT_ERROR("A=ab\r", 1, 5, msg);
	EXPECT_ERROR("\r", 1, 1, msg);
	EXPECT_ERROR("\r\r\n", 1, 1, msg);
	EXPECT_ERROR("A=1\r\r\nB=2\r\n", 1, 4, msg);
	EXPECT_ERROR("A=1\r\nB=2\r\r\n", 2, 4, msg);
	EXPECT_ERROR("A=1\n\r\nB=\r\n\r", 4, 1, msg);
	EXPECT_ERROR("A=1\rB=2\n", 1, 4, msg);
	EXPECT_ERROR("A=\"x\ry\"", 1, 5, msg);
	EXPECT_ERROR("A=\"x\r\r\ny\"", 1, 5, msg);
	EXPECT_ERROR("A='x\r'", 1, 5, msg);
	EXPECT_ERROR("A=${NOPE:-\r}", 1, 11, msg);
	EXPECT_ERROR("# a comment\r\nA=1\n# another\r", 3, 10, msg);
	EXPECT_ERROR("A=x # comment\r more\n", 1, 14, msg);
	/* Before any other error, like a NUL byte. */
	EXPECT_ERROR("A='unterminated\nB=1\r", 2, 4, msg);
	expect_error(__LINE__, "A=\r\0", 4, 1, 3, msg);
	expect_error(__LINE__, "A=\0\r", 4, 1, 3, "NUL byte");
	expect_error(__LINE__, "A=\r\n\0\r", 5, 2, 1, "NUL byte");
	/* A BOM is no column. */
	EXPECT_ERROR("\xef\xbb\xbf" "A=\r", 1, 3, msg);
	/* len is honoured: a \r\n cut after the \r is a lone \r. */
	expect_error(__LINE__, "A=1\r\n", 4, 1, 4, msg);
}

static void test_single_quotes(void)
{
	EXPECT_VALUE("A='literal ${B} \\n $x \" #'", "A", "literal ${B} \\n $x \" #");
	EXPECT_VALUE("A=''", "A", "");
	EXPECT_VALUE("A='  spaced  '", "A", "  spaced  ");
	EXPECT_VALUE("A='x'  ", "A", "x");
	EXPECT_VALUE("A='x' # comment", "A", "x");
	EXPECT_VALUE("A='x'#comment", "A", "x");
	EXPECT_VALUE("A = \t'x'\nB=2", "B", "2");
	EXPECT_ERROR("A='x", 1, 3, "unterminated single quote");
	EXPECT_ERROR("B=1\nA =  'x\ny'", 2, 6, "unterminated single quote");
	EXPECT_ERROR("A='x'y", 1, 6, "unexpected text after closing quote");
	EXPECT_ERROR("A='x' y", 1, 7, "unexpected text after closing quote");
	EXPECT_ERROR("A='x''y'", 1, 6, "unexpected text after closing quote");
}

static void test_double_quotes(void)
{
	struct env_file f;

	EXPECT_VALUE("A=\"a\\nb\\tc\\\"d\\\\e\\$f\"", "A", "a\nb\tc\"d\\e$f");
	EXPECT_VALUE("A=\"\"", "A", "");
	EXPECT_VALUE("A=\" # not a comment \"", "A", " # not a comment ");
	EXPECT_VALUE("A=\"it's\"", "A", "it's");
	EXPECT_VALUE("A=\"x\" # comment", "A", "x");
	EXPECT_VALUE("A=\"\\${HOME}\"", "A", "${HOME}");
	EXPECT_VALUE("A=\"$HOME pa$s $\"", "A", "$HOME pa$s $");

	CHECK(parse("A=\"line 1\n  line 2\n\"\nB=after\n", &f, NULL) == 0);
	CHECK(f.n == 2);
	if (f.n == 2) {
		CHECK(streq(f.entries[0].value, "line 1\n  line 2\n"));
		CHECK(f.entries[0].line == 1);
		CHECK(f.entries[1].line == 4); /* line counting goes on after */
	}
	env_file_fini(&f);

	EXPECT_ERROR("A=\"x", 1, 3, "unterminated double quote");
	EXPECT_ERROR("X=1\nA = \"x\n\ny", 2, 5, "unterminated double quote");
	EXPECT_ERROR("A=\"x\\", 1, 3, "unterminated double quote");
	EXPECT_ERROR("A=\"ab\\q\"", 1, 6, "unknown escape (");
	EXPECT_ERROR("A=\"\\'\"", 1, 4, "unknown escape (");
	EXPECT_ERROR("A=\"a\\\nb\"", 1, 5, "backslash at end of line");
	EXPECT_ERROR("A=\"a\\\x01\"", 1, 5, "unknown escape (");
	EXPECT_ERROR("A=\"x\nyz\"w", 2, 4, "unexpected text after closing quote");
	EXPECT_ERROR("A=\"x\" \"y\"", 1, 7, "unexpected text after closing quote");
}

static void test_expansion(void)
{
	struct env_file f;

	EXPECT_VALUE("A=x\nB=${A}y", "B", "xy");
	EXPECT_VALUE("A=x\nA=z\nB=${A}", "B", "z");     /* latest earlier */
	EXPECT_VALUE("B=${A}\nA=x", "B", "");          /* not later ones */
	EXPECT_VALUE("A=${HOME}/.cache", "A", "/home/test/.cache");
	EXPECT_VALUE("A=\"${HOME}/.cache\"", "A", "/home/test/.cache");
	EXPECT_VALUE("A=${NOPE}", "A", "");
	EXPECT_VALUE("SHADOWED=\nA=[${SHADOWED}]", "A", "[]"); /* file wins, even empty */
	EXPECT_VALUE("A=[${SHADOWED}]", "A", "[from-env]");
	EXPECT_VALUE("HOME=${HOME}/sub", "HOME", "/home/test/sub"); /* self */
	EXPECT_VALUE("A=${HOME}${PGHOST}", "A", "/home/test" "db.internal");
	EXPECT_VALUE("A='x y '\nB=${A}", "B", "x y "); /* expansions are not trimmed */
	EXPECT_VALUE("A=\"\nx\"\nB=${A}", "B", "\nx");
	/* A bare $ is literal. */
	EXPECT_VALUE("A=pa$s", "A", "pa$s");
	EXPECT_VALUE("A=$", "A", "$");
	EXPECT_VALUE("A=$$ ${HOME}$", "A", "$$ /home/test$");
	EXPECT_VALUE("A=$HOME", "A", "$HOME");
	EXPECT_VALUE("A=$}{", "A", "$}{");
	EXPECT_VALUE("A=\\${HOME}", "A", "\\/home/test"); /* no escapes unquoted */

	/* Defaults. */
	EXPECT_VALUE("A=${NOPE:-dflt}", "A", "dflt");
	EXPECT_VALUE("A=${EMPTY:-dflt}", "A", "dflt");
	EXPECT_VALUE("E=\nA=${E:-dflt}", "A", "dflt");
	EXPECT_VALUE("A=${HOME:-dflt}", "A", "/home/test");
	EXPECT_VALUE("A=${NOPE:-}", "A", "");
	EXPECT_VALUE("A=${NOPE:-a b # c $ '\"}", "A", "a b # c $ '\"");
	EXPECT_VALUE("A=\"${NOPE:-a\\tb\\\\}\"", "A", "a\tb\\");
	EXPECT_VALUE("A=\"${NOPE:-a\nb}\"", "A", "a\nb");
	EXPECT_VALUE("A=${NOPE:-${PGHOST}}:5432", "A", "db.internal:5432");
	EXPECT_VALUE("A=${NOPE:-${NADA:-deep}}", "A", "deep");
	EXPECT_VALUE("A=${HOME:-${NADA:-deep}}", "A", "/home/test");
	EXPECT_VALUE("A=\"${NOPE:-${NADA:-x\\\"y}}\"", "A", "x\"y");
	EXPECT_VALUE("A=x${NOPE:-  }y", "A", "x  y");
	EXPECT_VALUE("A=${NOPE:-  }", "A", "  "); /* not trimmed: not literal */
	/* ENV_NEST_MAX levels are fine, one more is not. */
	EXPECT_VALUE("A=${N:-${N:-${N:-${N:-${N:-${N:-${N:-${N:-x}}}}}}}}", "A", "x");
	EXPECT_ERROR("A=${N:-${N:-${N:-${N:-${N:-${N:-${N:-${N:-${N:-x}}}}}}}}}", 1, 43,
		     "nested too deeply");

	/* Expanded values are copies: later redefinitions do not change them. */
	CHECK(parse("A=1\nB=${A}\nA=2", &f, NULL) == 0);
	CHECK(f.n == 3 && streq(env_file_get(&f, "B"), "1"));
	env_file_fini(&f);

	EXPECT_ERROR("A=${", 1, 3, "unterminated ${");
	EXPECT_ERROR("A=x${HOME\nB=1", 1, 4, "unterminated ${");
	EXPECT_ERROR("A=${NOPE:-abc\n}", 1, 3, "unterminated ${");
	EXPECT_ERROR("A=${NOPE:-${X}", 1, 3, "unterminated ${");
	EXPECT_ERROR("A=${NOPE:-${X", 1, 11, "unterminated ${");
	EXPECT_ERROR("A=\"${HOME\"", 1, 4, "unterminated ${");
	EXPECT_ERROR("A=\"${NOPE:-x\"}\"", 1, 4, "unterminated ${");
	EXPECT_ERROR("A=\"${NOPE:-x\n", 1, 4, "unterminated ${");
	EXPECT_ERROR("A=${}", 1, 5, "invalid variable name");
	EXPECT_ERROR("A=${1A}", 1, 5, "invalid variable name");
	EXPECT_ERROR("A=${ A}", 1, 5, "invalid variable name");
	EXPECT_ERROR("A=${A-B}", 1, 6, "expected '}' or ':-'");
	EXPECT_ERROR("A=${A:=x}", 1, 6, "expected '}' or ':-'");
	EXPECT_ERROR("A=${A }", 1, 6, "expected '}' or ':-'");
	EXPECT_ERROR("A=\"${NOPE:-\\q}\"", 1, 12, "unknown escape (");
	/* The default is checked even when it is not used. */
	EXPECT_ERROR("A=${HOME:-${1}}", 1, 13, "invalid variable name");
	/* Single-quoted values are not expanded, so nothing to check there. */
	EXPECT_VALUE("A='${'", "A", "${");
}

/* Test memory: failing to get it ends the test. */
static char *grow(char *p, size_t size)
{
	p = realloc(p, size);
	if (!p)
		abort();
	return p;
}

/* A value of exactly n bytes, built by expansion: X holds 1024 bytes. */
static char *text_of_size(size_t n)
{
	size_t cap = 2048 + n / 1024 * 8 + 64, len;
	char *t = grow(NULL, cap);

	memcpy(t, "X=", 2);
	memset(t + 2, 'x', 1024);
	len = 1026;
	len += (size_t)sprintf(t + len, "\nV=");
	for (; n >= 1024; n -= 1024)
		len += (size_t)sprintf(t + len, "${X}");
	memset(t + len, 'y', n);
	t[len + n] = '\0';
	return t;
}

/* Counts the lookups by name: data is a struct lookup_count. */
struct lookup_count {
	unsigned calls;
	char names[256];
};

static const char *counting_lookup(const char *name, void *data)
{
	struct lookup_count *lc = data;
	size_t len = strlen(lc->names);

	lc->calls++;
	snprintf(lc->names + len, sizeof(lc->names) - len, "%s%s", len ? "," : "", name);
	return fake_lookup(name, NULL);
}

static int parse_counted(const char *text, struct lookup_count *lc, struct env_file *f,
			 struct env_error *err)
{
	*lc = (struct lookup_count){ 0 };
	return env_parse(text, strlen(text), counting_lookup, lc, f, err);
}

/* A default whose name is set is only checked: it looks nothing up and
 * builds nothing, so it cannot make the value too long either. */
static void test_skipped_default(void)
{
	struct lookup_count lc;
	struct env_file f;
	struct env_error err;
	char *body, *t;
	int r;

	r = parse_counted("A=${HOME:-${PGHOST}${NOPE:-${X}}}", &lc, &f, &err);
	CHECK(r == 0 && streq(env_file_get(&f, "A"), "/home/test"));
	CHECK_STR(lc.names, "HOME");
	env_file_fini(&f);
	/* Used defaults still look up what they name, outermost first. */
	r = parse_counted("A=${EMPTY:-${NOPE:-${PGHOST}}}", &lc, &f, &err);
	CHECK(r == 0 && streq(env_file_get(&f, "A"), "db.internal"));
	CHECK_STR(lc.names, "EMPTY,NOPE,PGHOST");
	env_file_fini(&f);
	/* A definition in the file is not looked up below it. */
	r = parse_counted("HOME=h\nA=${HOME:-${PGHOST}}", &lc, &f, &err);
	CHECK(r == 0 && streq(env_file_get(&f, "A"), "h") && lc.calls == 0);
	env_file_fini(&f);
	/* Syntax errors in a default are found all the same. */
	EXPECT_ERROR("A=${HOME:-${NOPE:-x}${1}}", 1, 23, "invalid variable name");
	EXPECT_ERROR("A=\"${HOME:-\\q}\"", 1, 12, "unknown escape (");
	EXPECT_ERROR("A=${HOME:-${N:-${N:-${N:-${N:-${N:-${N:-${N:-${N:-x}}}}}}}}}", 1, 46,
		     "nested too deeply");

	/* V: ENV_VALUE_MAX - 4 bytes, then the 4 of D, whose default of
	 * 1 KiB is not used: only what the value expands to counts. */
	body = text_of_size(ENV_VALUE_MAX - 4);
	t = grow(NULL, strlen(body) + 64);
	sprintf(t, "D=dddd\n%s${D:-${X}}", body);
	r = parse(t, &f, &err);
	CHECK_INT(r, ==, 0);
	CHECK(r == 0 && strlen(env_file_get(&f, "V")) == ENV_VALUE_MAX);
	env_file_fini(&f);
	/* A default that is used counts. */
	sprintf(t, "D=dddd\n%s${U:-${X}}", body);
	r = parse(t, &f, &err);
	CHECK(r == -EINVAL && err.line == 3 && err.column == 3);
	CHECK(r == -EINVAL && strstr(err.message, "value too long after expansion"));
	free(body);
	free(t);
}

/* The index behind env_file_get(): the last definition wins, names that
 * are prefixes of others stay apart, and it grows with the file. */
static void test_index(void)
{
	struct env_file f;
	char name[32], want[32];
	char *t = grow(NULL, 5000 * 40);
	size_t len = 0;
	int i, r;

	/* 3000 names, each defined twice, plus prefixes of each other. */
	for (i = 0; i < 3000; i++)
		len += (size_t)sprintf(t + len, "N%d=first\n", i);
	for (i = 0; i < 3000; i++)
		len += (size_t)sprintf(t + len, "N%d=${N%d}-%d\n", i, i, i);
	len += (size_t)sprintf(t + len, "P=1\nPP=2\nPPP=3\nPP=4\n");
	r = parse(t, &f, NULL);
	CHECK_INT(r, ==, 0);
	CHECK_INT(f.n, ==, 6004);
	for (i = 0; r == 0 && i < 3000; i++) {
		snprintf(name, sizeof(name), "N%d", i);
		snprintf(want, sizeof(want), "first-%d", i);
		if (!streq(env_file_get(&f, name) ? env_file_get(&f, name) : "(unset)", want)) {
			CHECK_STR(env_file_get(&f, name), want);
			break;
		}
	}
	CHECK_STR(env_file_get(&f, "P"), "1");
	CHECK_STR(env_file_get(&f, "PP"), "4");
	CHECK_STR(env_file_get(&f, "PPP"), "3");
	CHECK(env_file_get(&f, "PPPP") == NULL);
	CHECK(env_file_get(&f, "N") == NULL);
	CHECK(env_file_get(&f, "N30000") == NULL);
	CHECK(env_file_get(&f, "") == NULL);
	env_file_fini(&f);
	CHECK(f.slots == NULL && f.n_slots == 0 && f.key[0] == 0 && f.key[1] == 0);
	CHECK(env_file_get(&f, "P") == NULL);
	free(t);

	/* An empty file, and an env_file that was never parsed. */
	CHECK(parse("# nothing\n", &f, NULL) == 0 && env_file_get(&f, "A") == NULL);
	env_file_fini(&f);
	f = (struct env_file){ 0 };
	CHECK(env_file_get(&f, "A") == NULL);
}

static void test_limits(void)
{
	struct env_file f;
	struct env_error err;
	char line[64];
	char *t;
	size_t len;
	int i, r;

	t = text_of_size(ENV_VALUE_MAX);
	CHECK(parse(t, &f, NULL) == 0);
	CHECK(f.n == 2 && strlen(env_file_get(&f, "V")) == ENV_VALUE_MAX);
	env_file_fini(&f);
	free(t);

	t = text_of_size(ENV_VALUE_MAX + 1);
	CHECK(parse(t, &f, &err) == -EINVAL);
	CHECK(err.line == 2 && err.column == 3);
	CHECK(strstr(err.message, "value too long after expansion"));
	free(t);

	/* Literal text counts too. */
	t = text_of_size(0);
	len = strlen(t);
	t = grow(t, len + ENV_VALUE_MAX + 2);
	memset(t + len, 'z', ENV_VALUE_MAX + 1);
	t[len + ENV_VALUE_MAX + 1] = '\0';
	CHECK(parse(t, &f, &err) == -EINVAL && strstr(err.message, "too long"));
	free(t);

	/* The doubling attack stops at the limit, long before it hurts. */
	t = grow(NULL, 64 * 32);
	len = (size_t)sprintf(t, "V0=xxxxxxxxxxxxxxxx\n");
	for (i = 1; i < 40; i++)
		len += (size_t)sprintf(t + len, "V%d=${V%d}${V%d}\n", i, i - 1, i - 1);
	CHECK(parse(t, &f, &err) == -EINVAL);
	/* V12 is 16 << 12 = 65536 bytes, V13 on line 14 one too many. */
	CHECK(err.line == 14 && err.column == 5);
	CHECK(strstr(err.message, "value too long after expansion"));
	free(t);

	/* Many lines that each expand to the limit: the file total stops them. */
	t = text_of_size(ENV_VALUE_MAX);
	len = strlen(t);
	t = grow(t, len + 20 * 32);
	for (i = 0; i < 20; i++) {
		snprintf(line, sizeof(line), "\nW%d=${V}", i);
		strcpy(t + len, line);
		len += strlen(line);
	}
	r = parse(t, &f, &err);
	CHECK(r == -EINVAL && strstr(err.message, "file too large after expansion"));
	/* 1 KiB + 65536 * 16 > 1 MiB: X and V then W0..W14 on lines 3..17. */
	CHECK(err.line == 17);
	free(t);
}

static void test_nul(void)
{
	static const char text[] = "A=1\nB=x\0y\n";
	static const char in_comment[] = "# \0\nA=1\n";

	expect_error(__LINE__, text, sizeof(text) - 1, 2, 4, "NUL byte");
	expect_error(__LINE__, in_comment, sizeof(in_comment) - 1, 1, 3, "NUL byte");
	expect_error(__LINE__, "\0", 1, 1, 1, "NUL byte");
}

/* Error messages never show value text, whatever the error. */
static void test_no_secrets_in_errors(void)
{
	static const char *const bad[] = {
		"A=\"secretvalue",
		"A=\"secretvalue\\q\"",
		"A='secretvalue",
		"A='secretvalue\n'",
		"A='secretvalue'secretvalue",
		"A=\"secretvalue\"secretvalue",
		"A=secretvalue${",
		"A=secretvalue${secretvalue",
		"A=secretvalue${secretvalue:-secretvalue",
		"A=secretvalue${secretvalue-x}",
		"A=\"secretvalue${NOPE:-secretvalue\"",
		"A=secretvalue${1secretvalue}",
		"A=secretvalue\nsecretvalue",
		"A=secretvalue\nB secretvalue",
		"A=secretvalue\nB-secretvalue=1",
		"A=secret\rvalue",
		"A=\"secret\r\r\nvalue\"",
	};
	struct env_file f;
	struct env_error err;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		if (parse(bad[i], &f, &err) != -EINVAL) {
			fprintf(stderr, "no-secrets case %zu: parse did not fail\n", i);
			check_failed++;
			env_file_fini(&f);
			continue;
		}
		if (strstr(err.message, "secret") || err.message[0] == '\0') {
			fprintf(stderr, "no-secrets case %zu: message \"%s\"\n", i, err.message);
			check_failed++;
		}
	}
	/* The byte after an unknown escape is a byte of the value, a
	 * password's ("Sup3r\\qSecret"): neither it nor its code is
	 * named, the column points at it. */
	static const char *const escapes[][2] = {
		{ "A=\"pw\\Z\"", "Z" },
		{ "A=\"pw\\q\"", "\\q" },
		{ "A=\"pw\\\x01\"", "01" },
		{ "A=\"pw\\\xff\"", "ff" },
	};
	for (i = 0; i < ARRAY_SIZE(escapes); i++) {
		if (parse(escapes[i][0], &f, &err) != -EINVAL) {
			fprintf(stderr, "escape case %zu: parse did not fail\n", i);
			check_failed++;
			env_file_fini(&f);
			continue;
		}
		if (strstr(err.message, escapes[i][1]) || err.line != 1 || err.column != 6) {
			fprintf(stderr, "escape case %zu: %u:%u: message \"%s\"\n", i, err.line,
				err.column, err.message);
			check_failed++;
		}
	}
}

/* A lookup whose result lives in one buffer that the next call reuses,
 * as env.h allows. */
static const char *reusing_lookup(const char *name, void *data)
{
	static char buf[64];

	(void)data;
	snprintf(buf, sizeof(buf), "v:%s", name);
	return buf;
}

static void test_lookup_result_reused(void)
{
	struct env_file f;

	CHECK(env_parse("A=${X:-${Y}}", 12, reusing_lookup, NULL, &f, NULL) == 0);
	CHECK(f.n == 1 && streq(env_file_get(&f, "A"), "v:X"));
	env_file_fini(&f);
}

static void test_null_args(void)
{
	struct env_file f;

	CHECK(env_parse("A=${HOME:-x}", 12, NULL, NULL, &f, NULL) == 0);
	CHECK(f.n == 1 && streq(env_file_get(&f, "A"), "x"));
	env_file_fini(&f);
	CHECK(env_parse("A='", 3, NULL, NULL, &f, NULL) == -EINVAL);
	CHECK(f.n == 0 && f.entries == NULL);
	CHECK(env_parse(NULL, 0, NULL, NULL, &f, NULL) == 0 && f.n == 0);
}

/* Many entries: the array grows and lookups see all of them. */
static void test_many(void)
{
	struct env_file f;
	char *t = grow(NULL, 1000 * 32);
	size_t len = 0;
	int i;

	for (i = 0; i < 1000; i++)
		len += (size_t)sprintf(t + len, "V%d=${V%d:-0}+\n", i, i > 0 ? i - 1 : 0);
	CHECK(parse(t, &f, NULL) == 0);
	CHECK(f.n == 1000);
	CHECK(f.n == 1000 && f.entries[999].line == 1000);
	CHECK(f.n == 1000 && strlen(env_file_get(&f, "V999")) == 1001);
	env_file_fini(&f);
	free(t);
}

/* Entry i of text must be name, with raw value text raw on lines
 * line..end_line.  raw is compared with the bytes [value_off, value_end). */
#define EXPECT_SPAN(text, i, name, raw, line, end_line) \
	expect_span(__LINE__, text, i, name, raw, line, end_line)
static void expect_span(int at, const char *text, size_t i, const char *name, const char *raw,
			unsigned line, unsigned end_line)
{
	struct env_file f;
	struct env_error err;
	const struct env_entry *e;
	int r = parse(text, &f, &err);

	if (r != 0 || f.n <= i) {
		fprintf(stderr, "%s:%d: parse failed (%d) or too few entries (%zu)\n", __FILE__, at,
			r, f.n);
		check_failed++;
		env_file_fini(&f);
		return;
	}
	e = &f.entries[i];
	if (!streq(e->name, name) || e->line != line || e->end_line != end_line ||
	    e->value_off > e->value_end || e->value_end > strlen(text) ||
	    e->value_end - e->value_off != strlen(raw) ||
	    memcmp(text + e->value_off, raw, strlen(raw)) != 0) {
		fprintf(stderr,
			"%s:%d: entry %zu: %s lines %u..%u [%zu, %zu), expected %s lines %u..%u "
			"\"%s\"\n",
			__FILE__, at, i, e->name, e->line, e->end_line, e->value_off, e->value_end,
			name, line, end_line, raw);
		check_failed++;
	}
	env_file_fini(&f);
}

static void test_value_offsets(void)
{
	static const char multi[] = "A=\"line 1\n  line 2\n\"  # c\nB=after";
	static const char crlf[] = "A=1\r\nB = two \r\n\r\nC=\"a\r\nb\" # c\r\nD=\r\nE='q'\r\n";
	struct env_file f;

	/* Unquoted: blanks around the value and comments stay outside. */
	EXPECT_SPAN("A=1\n", 0, "A", "1", 1, 1);
	EXPECT_SPAN("A=1", 0, "A", "1", 1, 1);
	EXPECT_SPAN("A=  lead and trail  \t \n", 0, "A", "lead and trail", 1, 1);
	EXPECT_SPAN("A\t=\tx\t", 0, "A", "x", 1, 1);
	EXPECT_SPAN("A=x # comment", 0, "A", "x", 1, 1);
	EXPECT_SPAN("A=x\t# comment", 0, "A", "x", 1, 1);
	EXPECT_SPAN("A=a # b # c", 0, "A", "a", 1, 1);
	EXPECT_SPAN("A=x#y # z", 0, "A", "x#y", 1, 1);
	EXPECT_SPAN("A=postgresql://u:p#x@h/db\n", 0, "A", "postgresql://u:p#x@h/db", 1, 1);
	EXPECT_SPAN("A=it's \"fine\"  ", 0, "A", "it's \"fine\"", 1, 1);
	EXPECT_SPAN("A=${NOPE:-  }  # c", 0, "A", "${NOPE:-  }", 1, 1);
	EXPECT_SPAN("A=x${HOME}y\n", 0, "A", "x${HOME}y", 1, 1);
	/* Quoted: from the opening quote to just past the closing one. */
	EXPECT_SPAN("A='q'", 0, "A", "'q'", 1, 1);
	EXPECT_SPAN("A = \t'x y' # c\n", 0, "A", "'x y'", 1, 1);
	EXPECT_SPAN("A='x'#c", 0, "A", "'x'", 1, 1);
	EXPECT_SPAN("A=''\n", 0, "A", "''", 1, 1);
	EXPECT_SPAN("A=\"x\\\"y\"  \n", 0, "A", "\"x\\\"y\"", 1, 1);
	EXPECT_SPAN("A=\"${NOPE:-a}\"", 0, "A", "\"${NOPE:-a}\"", 1, 1);
	EXPECT_SPAN(multi, 0, "A", "\"line 1\n  line 2\n\"", 1, 3);
	EXPECT_SPAN(multi, 1, "B", "after", 4, 4);
	/* export and leading blanks are before value_off. */
	EXPECT_SPAN("  export  \t A = v # c", 0, "A", "v", 1, 1);
	EXPECT_SPAN("export A='v'\n", 0, "A", "'v'", 1, 1);
	EXPECT_SPAN("export =v", 0, "export", "v", 1, 1);
	/* Later lines: offsets count from the start of the text. */
	EXPECT_SPAN("# c\n\nX=1\n  Y = 22 # c\n", 1, "Y", "22", 4, 4);
	/* CRLF: the \r is part of the line break, not the value. */
	EXPECT_SPAN(crlf, 0, "A", "1", 1, 1);
	EXPECT_SPAN(crlf, 1, "B", "two", 2, 2);
	EXPECT_SPAN(crlf, 2, "C", "\"a\r\nb\"", 4, 5);
	EXPECT_SPAN(crlf, 3, "D", "", 6, 6);
	EXPECT_SPAN(crlf, 4, "E", "'q'", 7, 7);
	EXPECT_SPAN("A=x \r\n", 0, "A", "x", 1, 1);

	/* Empty unquoted values: value_off == value_end, after the blanks. */
	CHECK(parse("A=", &f, NULL) == 0);
	CHECK(f.n == 1 && f.entries[0].value_off == 2 && f.entries[0].value_end == 2);
	env_file_fini(&f);
	CHECK(parse("A=   \nB=1", &f, NULL) == 0);
	CHECK(f.n == 2 && f.entries[0].value_off == 5 && f.entries[0].value_end == 5);
	CHECK(f.n == 2 && f.entries[1].value_off == 8 && f.entries[1].value_end == 9);
	env_file_fini(&f);
	CHECK(parse("A=  # only a comment", &f, NULL) == 0);
	CHECK(f.n == 1 && f.entries[0].value_off == 4 && f.entries[0].value_end == 4);
	env_file_fini(&f);
	CHECK(parse("A=\r\n", &f, NULL) == 0);
	CHECK(f.n == 1 && f.entries[0].value_off == 2 && f.entries[0].value_end == 2);
	env_file_fini(&f);
	/* A value ending at the end of the text. */
	CHECK(env_parse("A=12345", 4, NULL, NULL, &f, NULL) == 0);
	CHECK(f.n == 1 && f.entries[0].value_off == 2 && f.entries[0].value_end == 4);
	env_file_fini(&f);
}

/* A UTF-8 BOM at the very start is skipped and is no column; offsets
 * still index the text. */
static void test_bom(void)
{
	static const char crlf[] = "\xef\xbb\xbf# c\r\nA=1\r\nB=\"x\r\ny\"\r\n";
	struct env_file f;
	int r;

	r = parse("\xef\xbb\xbf" "A=1\nB='two'\n", &f, NULL);
	CHECK_INT(r, ==, 0);
	CHECK_INT(f.n, ==, 2);
	if (r == 0 && f.n == 2) {
		CHECK_STR(f.entries[0].name, "A");
		CHECK_STR(f.entries[0].value, "1");
		CHECK(f.entries[0].line == 1 && f.entries[1].line == 2);
		CHECK(f.entries[0].value_off == 5 && f.entries[0].value_end == 6);
		CHECK(f.entries[1].value_off == 9 && f.entries[1].value_end == 14);
	}
	env_file_fini(&f);
	EXPECT_SPAN(crlf, 0, "A", "1", 2, 2);
	EXPECT_SPAN(crlf, 1, "B", "\"x\r\ny\"", 3, 4);
	EXPECT_VALUE(crlf, "B", "x\ny");
	EXPECT_VALUE("\xef\xbb\xbf" "export A=${HOME}", "A", "/home/test");
	EXPECT_VALUE("\xef\xbb\xbf" "  A = x", "A", "x");
	EXPECT_VALUE("\xef\xbb\xbf" "\nA=x", "A", "x");
	EXPECT_VALUE("\xef\xbb\xbf" "#c\nA=x", "A", "x");
	CHECK(parse("\xef\xbb\xbf", &f, NULL) == 0 && f.n == 0);
	CHECK(parse("\xef\xbb\xbf\n\n", &f, NULL) == 0 && f.n == 0);
	/* Elsewhere it is text: a value keeps it, a name cannot start with
	 * it. */
	EXPECT_VALUE("A=\xef\xbb\xbf", "A", "\xef\xbb\xbf");
	EXPECT_VALUE("A='\xef\xbb\xbfx'", "A", "\xef\xbb\xbfx");
	/* Columns of line 1 as an editor shows them: the BOM is no column. */
	EXPECT_ERROR("\xef\xbb\xbf" "1A=x", 1, 1, "invalid variable name");
	EXPECT_ERROR("\xef\xbb\xbf" "A", 1, 2, "expected '=' after name");
	EXPECT_ERROR("\xef\xbb\xbf" "A='x", 1, 3, "unterminated single quote");
	EXPECT_ERROR("\xef\xbb\xbf" "A=1\nB", 2, 2, "expected '=' after name");
	EXPECT_ERROR("\xef\xbb\xbf\xef\xbb\xbf" "A=1", 1, 1, "invalid variable name");
	EXPECT_ERROR("A=1\n\xef\xbb\xbf" "B=1", 2, 1, "invalid variable name");
	EXPECT_ERROR(" \xef\xbb\xbf" "A=1", 1, 2, "invalid variable name");
	EXPECT_ERROR("\xef\xbb" "A=1", 1, 1, "invalid variable name");
	expect_error(__LINE__, "\xef\xbb\xbf#\0", 5, 1, 2, "NUL byte");
	expect_error(__LINE__, "\xef\xbb\xbf\0", 4, 1, 1, "NUL byte");
	/* len is honoured: a BOM cut short is not one. */
	CHECK(env_parse("\xef\xbb\xbf", 2, NULL, NULL, &f, NULL) == -EINVAL);
}

/* The decode callback used by the tests: "enc:v1:X" decodes to "<X>",
 * "enc:v1:bad" fails, "enc:v1:nomem" runs out of memory; anything else
 * after "enc:" is an unknown format.  data counts the calls. */
static int test_decode(const char *name, const char *value, char **out, char *msg,
		       size_t msglen, void *data)
{
	unsigned *calls = data;
	size_t n;

	(*calls)++;
	if (strncmp(value, "enc:", 4) != 0) {
		snprintf(msg, msglen, "called for a value without enc:");
		return -EPROTO;
	}
	if (strncmp(value, "enc:v1:", 7) != 0) {
		snprintf(msg, msglen, "unknown format");
		return -EINVAL;
	}
	if (streq(value + 7, "bad")) {
		snprintf(msg, msglen, "authentication failed");
		return -EBADMSG;
	}
	if (streq(value + 7, "nomem"))
		return -ENOMEM;
	if (streq(value + 7, "null"))
		return 0; /* a broken decoder: success without a value */
	if (streq(value + 7, "huge")) {
		*out = malloc(ENV_VALUE_MAX + 2);
		if (!*out)
			abort();
		memset(*out, 'h', ENV_VALUE_MAX + 1);
		(*out)[ENV_VALUE_MAX + 1] = '\0';
		return 0;
	}
	if (streq(value + 7, "max")) {
		*out = malloc(ENV_VALUE_MAX + 1);
		if (!*out)
			abort();
		memset(*out, 'm', ENV_VALUE_MAX);
		(*out)[ENV_VALUE_MAX] = '\0';
		return 0;
	}
	if (streq(value + 7, "quiet"))
		return -EIO; /* no reason given */
	n = strlen(value + 7);
	*out = malloc(n + 3);
	if (!*out)
		return -ENOMEM;
	(*out)[0] = '<';
	memcpy(*out + 1, value + 7, n);
	(*out)[n + 1] = '>';
	(*out)[n + 2] = '\0';
	(void)name;
	return 0;
}

static const char *decode_lookup(const char *name, void *data)
{
	(void)data;
	if (streq(name, "PFX"))
		return "enc:v1:";
	return fake_lookup(name, data);
}

static int parse_decoded(const char *text, unsigned *calls, struct env_file *f,
			 struct env_error *err)
{
	struct env_parse_opts opts = { .lookup = decode_lookup, .decode = test_decode, .data = calls };

	*calls = 0;
	return env_parse_with(text, strlen(text), &opts, f, err);
}

static void test_decode_hook(void)
{
	struct env_file f;
	struct env_error err;
	unsigned calls;
	char name[200], text[300];
	char *big;
	size_t len;
	int i, r;

	/* Decoded values replace the stored ones, and expansion sees them. */
	r = parse_decoded("A=enc:v1:abc\nB=${A}x\nC=\"${A}\"\nD='enc:v1:q' # c\n", &calls, &f,
			  &err);
	CHECK(r == 0 && calls == 2 && f.n == 4);
	if (r == 0 && f.n == 4) {
		CHECK(streq(env_file_get(&f, "A"), "<abc>"));
		CHECK(streq(env_file_get(&f, "B"), "<abc>x"));
		CHECK(streq(env_file_get(&f, "C"), "<abc>"));
		CHECK(streq(env_file_get(&f, "D"), "<q>"));
		/* The offsets still point at the raw (encrypted) text. */
		CHECK(f.entries[0].value_off == 2 && f.entries[0].value_end == 12);
	}
	env_file_fini(&f);

	/* Only values that start with "enc:" after expansion. */
	r = parse_decoded("A=xenc:v1:a\nB=ENC:v1:a\nC=enc\nD=enc;x\nE=\nF=' enc:v1:a'\n"
			  "G=${PFX}z\nH=\"${NOPE:-enc:v1:}y\"\n",
			  &calls, &f, &err);
	CHECK(r == 0 && calls == 2);
	CHECK(r == 0 && streq(env_file_get(&f, "A"), "xenc:v1:a"));
	CHECK(r == 0 && streq(env_file_get(&f, "C"), "enc"));
	CHECK(r == 0 && streq(env_file_get(&f, "F"), " enc:v1:a"));
	CHECK(r == 0 && streq(env_file_get(&f, "G"), "<z>"));
	CHECK(r == 0 && streq(env_file_get(&f, "H"), "<y>"));
	env_file_fini(&f);

	/* Without a decoder the values stay as they are. */
	CHECK(env_parse_with("A=enc:v1:abc\nB=${A}", 19, NULL, &f, NULL) == 0);
	CHECK(f.n == 2 && streq(env_file_get(&f, "B"), "enc:v1:abc"));
	env_file_fini(&f);

	/* A failure rejects the file at the start of the value, naming the
	 * variable and the reason, never the value. */
	r = parse_decoded("A=enc:v1:ok\nB=1\nSECRET_KEY =  \"enc:v1:bad\"  # c\nC=enc:v1:x\n",
			  &calls, &f, &err);
	CHECK(r == -EINVAL && f.n == 0 && f.entries == NULL);
	CHECK(err.line == 3 && err.column == 15);
	CHECK(streq(err.message, "SECRET_KEY: authentication failed"));
	CHECK(calls == 2); /* stopped there */
	r = parse_decoded("\n  export X=enc:v9:zz", &calls, &f, &err);
	CHECK(r == -EINVAL && err.line == 2 && err.column == 12);
	CHECK(streq(err.message, "X: unknown format"));
	r = parse_decoded("X=enc:v1:quiet", &calls, &f, &err);
	CHECK(r == -EINVAL && streq(err.message, "X: cannot decode value"));
	r = parse_decoded("X=enc:v1:null", &calls, &f, &err);
	CHECK(r == -EINVAL && streq(err.message, "X: cannot decode value"));
	r = parse_decoded("A=1\nX=enc:v1:huge", &calls, &f, &err);
	CHECK(r == -EINVAL && err.line == 2 && err.column == 3);
	CHECK(streq(err.message, "X: value too long after decoding"));
	/* -ENOMEM stays -ENOMEM. */
	r = parse_decoded("A=enc:v1:ok\nX=enc:v1:nomem", &calls, &f, &err);
	CHECK(r == -ENOMEM && f.n == 0);

	/* A long name is cut short; the reason still fits. */
	memset(name, 'N', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	snprintf(text, sizeof(text), "%s=enc:v1:bad", name);
	r = parse_decoded(text, &calls, &f, &err);
	CHECK(r == -EINVAL && strlen(err.message) < sizeof(err.message) - 1);
	CHECK(strncmp(err.message, name, 64) == 0 && strncmp(err.message + 64, "...: ", 5) == 0);
	CHECK(strstr(err.message, "authentication failed") != NULL);

	/* A decoded value of exactly ENV_VALUE_MAX is fine, and decoded
	 * lengths are what count towards ENV_TOTAL_MAX: 16 of them fill it,
	 * the 17th (on line 17) is one too many. */
	big = grow(NULL, 17 * 32);
	len = 0;
	for (i = 0; i < 17; i++)
		len += (size_t)sprintf(big + len, "V%d=enc:v1:max\n", i);
	r = parse_decoded(big, &calls, &f, &err);
	CHECK(r == -EINVAL && err.line == 17 && calls == 17);
	CHECK(strstr(err.message, "file too large after expansion") != NULL);
	big[len - strlen("V16=enc:v1:max\n")] = '\0'; /* drop the last line */
	r = parse_decoded(big, &calls, &f, &err);
	CHECK(r == 0 && f.n == 16 && strlen(env_file_get(&f, "V15")) == ENV_VALUE_MAX);
	env_file_fini(&f);
	free(big);
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && streq(s + n - m, suffix);
}

static void corpus_file(const char *dir, const char *name, bool good)
{
	char path[4096];
	struct env_file f;
	struct env_error err;
	unsigned line, column;
	size_t len, bom;
	char *text;
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	text = check_read_file(path, &len);
	if (!text) {
		fprintf(stderr, "%s: cannot read\n", path);
		check_failed++;
		return;
	}
	r = env_parse(text, len, fake_lookup, NULL, &f, &err);
	bom = len >= ENV_BOM_LEN && memcmp(text, ENV_BOM, ENV_BOM_LEN) == 0 ? ENV_BOM_LEN : 0;
	if (good && r != 0) {
		fprintf(stderr, "%s:%u:%u: %s (expected to parse)\n", path, err.line, err.column,
			err.message);
		check_failed++;
	} else if (!good && r != -EINVAL) {
		fprintf(stderr, "%s: parsed (%d), expected a syntax error\n", path, r);
		check_failed++;
	} else if (!good && sscanf(text + bom, "# error: %u:%u", &line, &column) == 2 &&
		   (line != err.line || column != err.column)) {
		fprintf(stderr, "%s: error at %u:%u (%s), expected %u:%u\n", path, err.line,
			err.column, err.message, line, column);
		check_failed++;
	}
	env_file_fini(&f);
	free(text);
}

/* A resolve callback: HOME is origin 3, SECRET is refused, the rest
 * undefined. */
static int test_resolve(const char *name, const char **value, int *origin, char *msg,
			size_t msglen, void *data)
{
	(void)data;
	*value = NULL;
	if (streq(name, "HOME")) {
		*value = "/home/test";
		*origin = 3;
	} else if (streq(name, "SECRET")) {
		snprintf(msg, msglen, "${%s} is not for you", name);
		return -EPERM;
	}
	return 0;
}

static void test_refs(void)
{
	struct env_parse_opts opts = { .resolve = test_resolve, .refs = true };
	const char *text = "A=x\nB=[${A}]${HOME}\nC=\"${NONE:-<${A}>}\"\n"
			   "D=${B}   \nE='${A}'\n";
	const struct env_ref *r;
	struct env_file f;
	struct env_error err;

	CHECK(env_parse_with(text, strlen(text), &opts, &f, &err) == 0);
	CHECK(f.n == 5);
	CHECK(f.entries[0].n_refs == 0);
	/* B: A at 1 (entry 0), HOME at 3 from below (origin 3). */
	CHECK_STR(f.entries[1].value, "[x]/home/test");
	CHECK(f.entries[1].n_refs == 2);
	r = &f.entries[1].refs[0];
	CHECK(streq(r->name, "A") && r->off == 1 && r->len == 1 && r->entry == 0);
	r = &f.entries[1].refs[1];
	CHECK(streq(r->name, "HOME") && r->off == 3 && r->len == 10 &&
	      r->entry == ENV_REF_LOWER && r->origin == 3);
	/* C: A inside the default, then NONE (undefined) over all of it. */
	CHECK_STR(f.entries[2].value, "<x>");
	CHECK(f.entries[2].n_refs == 2);
	r = &f.entries[2].refs[0];
	CHECK(streq(r->name, "A") && r->off == 1 && r->len == 1);
	r = &f.entries[2].refs[1];
	CHECK(streq(r->name, "NONE") && r->off == 0 && r->len == 3 &&
	      r->entry == ENV_REF_LOWER && r->origin == -1);
	/* D: B, trailing blanks trimmed from the value only. */
	CHECK(f.entries[3].n_refs == 1 && f.entries[3].refs[0].entry == 1);
	CHECK(f.entries[3].refs[0].len == 13);
	/* E: single quotes expand nothing. */
	CHECK(f.entries[4].n_refs == 0);
	env_file_fini(&f);

	/* A refusal rejects the file at the ${, with the callback's words. */
	text = "A=1\nB=ab${SECRET}\n";
	CHECK(env_parse_with(text, strlen(text), &opts, &f, &err) == -EINVAL);
	CHECK(err.line == 2 && err.column == 5);
	CHECK_STR(err.message, "${SECRET} is not for you");
	/* Not in a default that is not used: nothing is looked up there. */
	text = "B=${HOME:-${SECRET}}\n";
	CHECK(env_parse_with(text, strlen(text), &opts, &f, &err) == 0);
	CHECK(f.entries[0].n_refs == 1);
	env_file_fini(&f);
}

static void test_corpus(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int good = 0, bad = 0;

	if (!d) {
		fprintf(stderr, "%s: cannot open corpus directory\n", dir);
		check_failed++;
		return;
	}
	while ((de = readdir(d))) {
		if (!has_suffix(de->d_name, ".env"))
			continue;
		if (strncmp(de->d_name, "good-", 5) == 0) {
			corpus_file(dir, de->d_name, true);
			good++;
		} else if (strncmp(de->d_name, "bad-", 4) == 0) {
			corpus_file(dir, de->d_name, false);
			bad++;
		}
	}
	closedir(d);
	/* An empty or wrong directory must not pass silently. */
	if (good == 0 || bad == 0) {
		fprintf(stderr, "%s: %d good and %d bad files, expected some of each\n", dir, good,
			bad);
		check_failed++;
	}
	printf("corpus: %d good, %d bad files\n", good, bad);
}

int main(int argc, char **argv)
{
	test_basic();
	test_export();
	test_names();
	test_comments();
	test_crlf();
	test_lone_cr();
	test_bom();
	test_single_quotes();
	test_double_quotes();
	test_expansion();
	test_limits();
	test_skipped_default();
	test_index();
	test_nul();
	test_no_secrets_in_errors();
	test_lookup_result_reused();
	test_null_args();
	test_many();
	test_value_offsets();
	test_decode_hook();
	test_refs();
	if (argc > 1)
		test_corpus(argv[1]);
	if (!check_failed)
		printf("test-env: all checks passed\n");
	return check_exit();
}

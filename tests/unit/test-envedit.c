/*
 * Unit tests for the .env editor (common/envedit.c): edits keep every other
 * byte, new values read back exactly and are never expanded.
 *
 * Usage: test-envedit [CORPUS_DIR]
 * With a directory, also edits every variable of every good-*.env in it and
 * checks that only that value's bytes changed.
 * Exits 0 when every check passed.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env.h"
#include "common/envedit.h"
#include "common/util.h"
#include "tests/unit/check.h"

/* Stands for every variable of the lower layers: an expansion that should
 * not have happened shows up as this text. */
static const char *leak_lookup(const char *name, void *data)
{
	(void)name;
	(void)data;
	return "EXPANDED";
}

/* Applies changes to text; the result must be exactly want. */
#define EXPECT_EDIT(text, want, ...)                                                      \
	do {                                                                              \
		const struct envedit_change expect_c_[] = { __VA_ARGS__ };                 \
		expect_edit(__LINE__, text, strlen(text), expect_c_, ARRAY_SIZE(expect_c_), \
			    want);                                                        \
	} while (0)
static void expect_edit(int at, const char *text, size_t len, const struct envedit_change *c,
			size_t n, const char *want)
{
	struct env_error err;
	char *out = NULL;
	size_t out_len = 0;
	int r = envedit_apply(text, len, c, n, &out, &out_len, &err);

	if (r != 0) {
		fprintf(stderr, "%s:%d: envedit_apply failed (%d) at %u:%u: %s\n", __FILE__, at, r,
			err.line, err.column, err.message);
		check_failed++;
		return;
	}
	if (out_len != strlen(want) || memcmp(out, want, out_len) != 0 || out[out_len] != '\0') {
		fprintf(stderr, "%s:%d: got\n---\n%s\n---\nexpected\n---\n%s\n---\n", __FILE__, at,
			out, want);
		check_failed++;
	}
	free_secret(out);
}

/* Applies changes to text; must fail with -EINVAL at line:column with a
 * message containing msg. */
#define EXPECT_FAIL(text, len, line, column, msg, ...)                                   \
	do {                                                                             \
		const struct envedit_change expect_c_[] = { __VA_ARGS__ };                \
		expect_fail(__LINE__, text, len, expect_c_, ARRAY_SIZE(expect_c_), line, \
			    column, msg);                                                \
	} while (0)
static void expect_fail(int at, const char *text, size_t len, const struct envedit_change *c,
			size_t n, unsigned line, unsigned column, const char *msg)
{
	struct env_error err;
	char *out = (char *)"x";
	size_t out_len = 1;
	int r = envedit_apply(text, len, c, n, &out, &out_len, &err);

	if (r != -EINVAL || out != NULL || out_len != 0) {
		fprintf(stderr, "%s:%d: expected -EINVAL and no output, got %d\n", __FILE__, at, r);
		check_failed++;
		if (r == 0)
			free_secret(out);
		return;
	}
	if (err.line != line || err.column != column || !strstr(err.message, msg) ||
	    strstr(err.message, "secret")) {
		fprintf(stderr, "%s:%d: got %u:%u \"%s\", expected %u:%u \"%s\"\n", __FILE__, at,
			err.line, err.column, err.message, line, column, msg);
		check_failed++;
	}
}

static void test_replace_middle(void)
{
	static const char text[] = "# database settings\n"
				   "\n"
				   "PGHOST=db.internal\n"
				   "  # the password below rotates\n"
				   "PGPASSWORD = hunter2   # keep this comment\n"
				   "\n"
				   "\n"
				   "PGPORT=5432\n"
				   "# end\n";

	EXPECT_EDIT(text,
		    "# database settings\n"
		    "\n"
		    "PGHOST=db.internal\n"
		    "  # the password below rotates\n"
		    "PGPASSWORD = n3w-p4ss   # keep this comment\n"
		    "\n"
		    "\n"
		    "PGPORT=5432\n"
		    "# end\n",
		    { "PGPASSWORD", "n3w-p4ss", 0 });
	/* A value that needs quotes gets them; nothing else moves. */
	EXPECT_EDIT(text,
		    "# database settings\n"
		    "\n"
		    "PGHOST=db.internal\n"
		    "  # the password below rotates\n"
		    "PGPASSWORD = 'a b#c ${x}'   # keep this comment\n"
		    "\n"
		    "\n"
		    "PGPORT=5432\n"
		    "# end\n",
		    { "PGPASSWORD", "a b#c ${x}", 0 });
	/* No changes: the text comes back as it was. */
	expect_edit(__LINE__, text, strlen(text), NULL, 0, text);
	expect_edit(__LINE__, NULL, 0, NULL, 0, "");
}

static void test_replace_quoted(void)
{
	static const char text[] = "A='old value'\n"
				   "B=\"multi\n"
				   "line ${A}\n"
				   "\"  # c\n"
				   "C=3\n";

	EXPECT_EDIT(text, "A=plain\nB=\"multi\nline ${A}\n\"  # c\nC=3\n", { "A", "plain", 0 });
	EXPECT_EDIT(text, "A='old value'\nB='one line'  # c\nC=3\n", { "B", "one line", 0 });
	EXPECT_EDIT(text, "A='old value'\nB=\"two\\nlines\"  # c\nC=3\n", { "B", "two\nlines", 0 });
	EXPECT_EDIT(text, "A='old value'\nB=  # c\nC=3\n", { "B", "", 0 });
	EXPECT_EDIT("A=\"x\"", "A=\"it's\"", { "A", "it's", 0 });
}

static void test_trailing_comment(void)
{
	EXPECT_EDIT("A=x # c\n", "A=y # c\n", { "A", "y", 0 });
	EXPECT_EDIT("A=x\t#c", "A=y\t#c", { "A", "y", 0 });
	EXPECT_EDIT("A=x#y # c\n", "A=z # c\n", { "A", "z", 0 });
	EXPECT_EDIT("A='x' # c\n", "A=y # c\n", { "A", "y", 0 });
	/* A # right after a closing quote starts a comment; after an unquoted
	 * value it would not, so the new value keeps quotes. */
	EXPECT_EDIT("A='x'#c\n", "A='y'#c\n", { "A", "y", 0 });
	EXPECT_EDIT("A=\"x\"#c\n", "A=''#c\n", { "A", "", 0 });
	EXPECT_EDIT("A=\"x\"#c\n", "A=\"it's\"#c\n", { "A", "it's", 0 });
	/* An empty value before a comment: the new one goes where it was. */
	EXPECT_EDIT("A= # c\n", "A= 'y'# c\n", { "A", "y", 0 });
	EXPECT_EDIT("A=   \n", "A=   y\n", { "A", "y", 0 });
	EXPECT_EDIT("A=\n", "A=y\n", { "A", "y", 0 });
	EXPECT_EDIT("A=", "A=y", { "A", "y", 0 });
	EXPECT_EDIT("A=x # c", "A= # c", { "A", "", 0 });
}

static void test_export(void)
{
	EXPECT_EDIT("export  A = old # c\n", "export  A = new # c\n", { "A", "new", 0 });
	EXPECT_EDIT("\texport A='old'\n", "\texport A='n e w'\n", { "A", "n e w", 0 });
	EXPECT_EDIT("export=1\n", "export=2\n", { "export", "2", 0 });
	EXPECT_EDIT("export A=1\n", "export A=1\nexport=2\n", { "export", "2", 0 });
}

static void test_append(void)
{
	EXPECT_EDIT("A=1\n", "A=1\nB=2\n", { "B", "2", 0 });
	EXPECT_EDIT("A=1", "A=1\nB=2\n", { "B", "2", 0 });
	EXPECT_EDIT("# only a comment", "# only a comment\nB='x y'\n", { "B", "x y", 0 });
	EXPECT_EDIT("", "B=\n", { "B", "", 0 });
	EXPECT_EDIT("\n\n", "\n\nB=2\n", { "B", "2", 0 });
	/* A commented-out definition is not a definition. */
	EXPECT_EDIT("# B=1\n", "# B=1\nB=2\n", { "B", "2", 0 });
	/* CRLF files get CRLF lines. */
	EXPECT_EDIT("A=1\r\n# c\r\n", "A=1\r\n# c\r\nB=2\r\n", { "B", "2", 0 });
	EXPECT_EDIT("A=1\r\nX=2", "A=1\r\nX=2\r\nB=2\r\n", { "B", "2", 0 });
	EXPECT_EDIT("A=1\r\nB=\"x\r\ny\"  # c\r\n", "A=1\r\nB=\"z\\nw\"  # c\r\n",
		    { "B", "z\nw", 0 });
	/* The first line decides. */
	EXPECT_EDIT("A=1\nX=2\r\n", "A=1\nX=2\r\nB=2\n", { "B", "2", 0 });
}

/* A UTF-8 BOM at the start stays there, whatever is set or appended. */
static void test_bom(void)
{
	EXPECT_EDIT("\xef\xbb\xbf" "A=1\nB=2\n", "\xef\xbb\xbf" "A='x y'\nB=2\n",
		    { "A", "x y", 0 });
	EXPECT_EDIT("\xef\xbb\xbf" "A=1 # c\r\n", "\xef\xbb\xbf" "A=2 # c\r\nB=3\r\n",
		    { "A", "2", 0 }, { "B", "3", 0 });
	EXPECT_EDIT("\xef\xbb\xbf" "A=1", "\xef\xbb\xbf" "A=1\nB=2\n", { "B", "2", 0 });
	EXPECT_EDIT("\xef\xbb\xbf" "export A=", "\xef\xbb\xbf" "export A=2", { "A", "2", 0 });
	/* Only a BOM: the first line goes right after it. */
	EXPECT_EDIT("\xef\xbb\xbf", "\xef\xbb\xbf" "B=2\n", { "B", "2", 0 });
	EXPECT_EDIT("\xef\xbb\xbf\n", "\xef\xbb\xbf\nB=2\n", { "B", "2", 0 });
	/* Errors in a BOM file: columns as the parser gives them. */
	EXPECT_FAIL("\xef\xbb\xbf" "A='x", 7, 1, 3, "unterminated single quote", { "A", "2", 0 });
}

/* A lone \r, or \r\r\n, in the text is refused like any error, with its
 * place; a value holding a \r cannot be written at all. */
static void test_lone_cr(void)
{
	static const char *const msg = "carriage return not followed by a line feed";

	EXPECT_FAIL("A=1\r", 4, 1, 4, msg, { "B", "2", 0 });
	EXPECT_FAIL("A=1\r\r\nB=2\r\n", 11, 1, 4, msg, { "B", "3", 0 });
	EXPECT_FAIL("A=1\n# c\rd\n", 10, 2, 4, msg, { "A", "2", 0 });
	EXPECT_FAIL("\xef\xbb\xbf" "A='x\ry'\n", 10, 1, 5, msg, { "A", "2", 0 });
	expect_fail(__LINE__, "A=1\r", 4, NULL, 0, 1, 4, msg);
	EXPECT_FAIL("A=1\n", 4, 0, 0, "A: value holds a carriage return", { "A", "x\ry", 0 });
	EXPECT_FAIL("A=1\r\n", 5, 0, 0, "B: value holds a carriage return", { "B", "x\r\n", 0 });
	/* Even in a change that a later one overrides. */
	EXPECT_FAIL("", 0, 0, 0, "A: value holds a carriage return", { "A", "\r", 0 },
		    { "A", "fine", 0 });
	/* CRLF line breaks stay what they were. */
	EXPECT_EDIT("A=1\r\nB=\"x\r\ny\"\r\n", "A=2\r\nB=\"x\r\ny\"\r\n", { "A", "2", 0 });
}

static void test_defined_twice(void)
{
	EXPECT_EDIT("A=1\nB=2\nA=3 # last\n", "A=1\nB=2\nA=9 # last\n", { "A", "9", 0 });
	EXPECT_EDIT("A=1\nB=${A}\nexport A='3'\n", "A=1\nB=${A}\nexport A=x\n", { "A", "x", 0 });
}

static void test_several(void)
{
	EXPECT_EDIT("A=1\nB=2 # b\nC=3\n", "A=y\nB=z # b\nC=3\nN1=1\nN2='q q'\n",
		    { "B", "x", 0 }, { "N1", "1", 0 }, { "A", "y", 0 }, { "N2", "q q", 0 },
		    { "B", "z", 0 });
	/* A name given twice is set once, where it was first named. */
	EXPECT_EDIT("", "N1=c\nN2=b\n", { "N1", "a", 0 }, { "N2", "b", 0 }, { "N1", "c", 0 });
	/* Replacements given out of file order. */
	EXPECT_EDIT("A=1\nB=2\nC=3\n", "A=a\nB=b\nC=c\n", { "C", "c", 0 }, { "A", "a", 0 },
		    { "B", "b", 0 });
}

/* "enc:" values are located, never decoded; unnamed ones stay as they are. */
static void test_encrypted_untouched(void)
{
	EXPECT_EDIT("A=enc:v1:QUJD+/==\nB=${A}\nC=\"enc:v1:eHl6\" # c\n",
		    "A=enc:v1:QUJD+/==\nB=plain\nC=enc:v1:bmV3 # c\n", { "B", "plain", 0 },
		    { "C", "enc:v1:bmV3", 0 });
}

static void test_bad_text(void)
{
	EXPECT_FAIL("A=1\nB='x\n", 8, 2, 3, "unterminated single quote", { "A", "2", 0 });
	EXPECT_FAIL("A=1\n  -X=1\n", 10, 2, 3, "invalid variable name", { "A", "2", 0 });
	EXPECT_FAIL("A=1\nB=x\0y\n", 10, 2, 4, "NUL byte", { "A", "2", 0 });
	/* Even with nothing to change. */
	expect_fail(__LINE__, "A=\"x", 4, NULL, 0, 1, 3, "unterminated double quote");
}

static void test_bad_changes(void)
{
	static const char *const names[] = { "", "1A", "A-B", "A B", "A=B", "\xc3\xa9", "A\n" };
	struct envedit_change c = { NULL, "secret", 0 };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(names); i++) {
		c.name = names[i];
		expect_fail(__LINE__, "A=1\n", 4, &c, 1, 0, 0, "change 1: invalid variable name");
	}
	c.name = NULL;
	expect_fail(__LINE__, "A=1\n", 4, &c, 1, 0, 0, "change 1: invalid variable name");
	/* The index says which change; a bad text is not looked at first. */
	EXPECT_FAIL("A='", 3, 0, 0, "change 2: invalid variable name", { "A", "1", 0 },
		    { "9", "1", 0 });
	EXPECT_FAIL("A=1\n", 4, 0, 0, "A: no value", { "A", NULL, 0 });
	/* A NUL byte, even in a change that a later one overrides. */
	EXPECT_FAIL("A=1\n", 4, 0, 0, "A: value holds a NUL byte", { "A", "secret\0x", 8 });
	EXPECT_FAIL("", 0, 0, 0, "B: value holds a NUL byte", { "B", "\0", 1 },
		    { "B", "fine", 0 });
	/* value_len is honoured without a NUL: bytes after it are not read. */
	EXPECT_EDIT("A=1\n", "A=sec\n", { "A", "secret", 3 });
}

static void test_limits(void)
{
	char *big = malloc(ENV_VALUE_MAX + 2);
	struct envedit_change c = { "A", big, 0 };
	struct env_error err;
	char *out;
	size_t n;

	if (!big)
		abort();
	memset(big, 'v', ENV_VALUE_MAX + 1);
	big[ENV_VALUE_MAX + 1] = '\0';
	CHECK_INT(envedit_apply("A=1\n", 4, &c, 1, &out, &n, &err), ==, -EINVAL);
	CHECK(err.line == 0 && strstr(err.message, "A: value longer than") != NULL);
	big[ENV_VALUE_MAX] = '\0';
	CHECK_INT(envedit_apply("A=1\n", 4, &c, 1, &out, &n, &err), ==, 0);
	CHECK(n == ENV_VALUE_MAX + 3);
	free_secret(out);
	/* Fine by itself, too long once another line doubles it: refused,
	 * with the place in the edited text. */
	big[40000] = '\0';
	CHECK_INT(envedit_apply("A=1\n# c\nB=${A}${A}\n", 19, &c, 1, &out, &n, &err), ==,
		  -EINVAL);
	CHECK(out == NULL && n == 0);
	CHECK(err.line == 3 && err.column == 3);
	CHECK(strstr(err.message, "after the edit: value too long after expansion") != NULL);
	free(big);
}

/* Formatted text must be exactly want. */
#define EXPECT_FORMAT(value, want)                                        \
	do {                                                              \
		char *expect_s_ = envedit_format_value(value);            \
		CHECK(expect_s_ != NULL);                                 \
		if (expect_s_)                                            \
			CHECK_STR(expect_s_, want);                       \
		free_secret(expect_s_);                                   \
	} while (0)

static void test_format(void)
{
	EXPECT_FORMAT("", "");
	EXPECT_FORMAT("abcXYZ019", "abcXYZ019");
	EXPECT_FORMAT("postgresql://u:p%40@h:5432/db?sslmode=require&x=[1],(2)|<3>~^!*+",
		      "postgresql://u:p%40@h:5432/db?sslmode=require&x=[1],(2)|<3>~^!*+");
	EXPECT_FORMAT("a b", "'a b'");
	EXPECT_FORMAT("#x", "'#x'");
	EXPECT_FORMAT("${HOME}", "'${HOME}'");
	EXPECT_FORMAT("pa$s", "'pa$s'");
	EXPECT_FORMAT("back\\slash", "'back\\slash'");
	EXPECT_FORMAT("say \"hi\"", "'say \"hi\"'");
	EXPECT_FORMAT("{}", "'{}'");
	EXPECT_FORMAT(";`", "';`'");
	EXPECT_FORMAT("\xc3\xa9t\xc3\xa9", "'\xc3\xa9t\xc3\xa9'");
	EXPECT_FORMAT("it's", "\"it's\"");
	EXPECT_FORMAT("a\nb", "\"a\\nb\"");
	EXPECT_FORMAT("a\tb", "\"a\\tb\"");
	EXPECT_FORMAT("it's $5 \\ \"q\" ${X}", "\"it's \\$5 \\\\ \\\"q\\\" \\${X}\"");
	EXPECT_FORMAT("\x01\x7f", "\"\x01\x7f\"");
	errno = 0;
	CHECK(envedit_format_value(NULL) == NULL && errno == EINVAL);
	/* No syntax holds a \r. */
	errno = 0;
	CHECK(envedit_format_value("x\r") == NULL && errno == EINVAL);
	errno = 0;
	CHECK(envedit_format_value("x\r\ny") == NULL && errno == EINVAL);
}

/* Deterministic PRNG (xorshift64*) for the property tests. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545f4914f6cdd1du) >> 32);
}

/* A random value of up to max bytes, NUL-terminated, mostly from the bytes
 * that mean something to the parser; some values are all safe bytes, so
 * the unquoted form gets its share. */
static void random_value(char *v, size_t max)
{
	static const char special[] = " #'\"\\${}\n\t\r\x01\x1b\x7f=:";
	static const char safe[] = "abcXYZ019_-./:@%+=,~^!?*[]()&|<>";
	size_t i, n = rng() % (max + 1);
	bool all_safe = rng() % 4 == 0;
	unsigned k;

	for (i = 0; i < n; i++) {
		k = rng() % 8;
		if (all_safe)
			v[i] = safe[rng() % (sizeof(safe) - 1)];
		else if (k < 3)
			v[i] = special[rng() % (sizeof(special) - 1)];
		else if (k < 6)
			v[i] = (char)(0x21 + rng() % 0x5e); /* printable ASCII */
		else if (k < 7)
			v[i] = (char)(0x80 + rng() % 0x80); /* UTF-8 and stray bytes */
		else
			v[i] = safe[rng() % (sizeof(safe) - 1)];
	}
	v[n] = '\0';
}

/* Formatted values parse back exactly, without expansion, and expand
 * to themselves: A=<formatted>, B=${A}x.  Values with a \r are refused. */
static void test_roundtrip_format(void)
{
	char value[80], text[512], want_b[96];
	struct env_file f;
	struct env_error err;
	unsigned i, bad = 0;
	char *fmt;
	int r, len;

	for (i = 0; i < 5000; i++) {
		random_value(value, i < 4000 ? 24 : 70);
		fmt = envedit_format_value(value);
		if (strchr(value, '\r')) {
			CHECK(fmt == NULL && errno == EINVAL);
			continue;
		}
		if (!fmt) {
			CHECK(fmt != NULL);
			continue;
		}
		len = snprintf(text, sizeof(text), i % 2 ? "A=%s\nB=${A}x\n" : "A=%s\r\nB=${A}x\r\n",
			       fmt);
		CHECK(len > 0 && (size_t)len < sizeof(text));
		r = env_parse(text, (size_t)len, leak_lookup, NULL, &f, &err);
		snprintf(want_b, sizeof(want_b), "%sx", value);
		if (r != 0 || !streq(env_file_get(&f, "A"), value) ||
		    !streq(env_file_get(&f, "B"), want_b) || f.n != 2) {
			if (bad++ < 5)
				fprintf(stderr, "round trip %u failed (%d, %u:%u %s): [%s]\n", i, r,
					err.line, err.column, r ? err.message : "", fmt);
		}
		env_file_fini(&f);
		free_secret(fmt);
	}
	CHECK_INT(bad, ==, 0);
}

/* Text where old value text sits between prefix and suffix. */
static const char *const templates[][2] = {
	{ "A=", "\n" },
	{ "A=", "" },
	{ "  export  A = ", "   # comment\n" },
	{ "# head\nX=1\nA=", "\nY=${A}\n" },
	{ "A=", "#c\n" },
	{ "A=", " #c\r\nZ=2\r\n" },
	{ "A=\t", "\t# c" },
	{ "A=1\nA=", "\n" },
};
static const char *const old_values[] = {
	"", "old", "'old'", "\"old\"", "\"multi\nline\"", "${X}y", "'x y'", "\"a\\\"b\"",
};

/* envedit_apply() on random values in many settings: the new value reads
 * back exactly, and every byte outside the old value's text is kept. */
static void test_roundtrip_apply(void)
{
	char value[48], text[256];
	struct envedit_change c = { "A", value, 0 };
	struct env_file f;
	struct env_error err;
	size_t i, t, o, e, plen, slen, n;
	unsigned bad = 0;
	char *out;
	int r, len;

	for (i = 0; i < 3000; i++) {
		t = rng() % ARRAY_SIZE(templates);
		o = rng() % ARRAY_SIZE(old_values);
		/* "A=old#c" would make #c part of the old value. */
		if (templates[t][1][0] == '#' && old_values[o][0] != '\'' &&
		    old_values[o][0] != '"')
			o = 2;
		len = snprintf(text, sizeof(text), "%s%s%s", templates[t][0], old_values[o],
			       templates[t][1]);
		random_value(value, 40);
		r = envedit_apply(text, (size_t)len, &c, 1, &out, &n, &err);
		if (strchr(value, '\r')) {
			CHECK(r == -EINVAL && strstr(err.message, "carriage return"));
			continue;
		}
		if (r != 0) {
			if (bad++ < 5)
				fprintf(stderr, "apply %zu failed: %d %u:%u %s\n", i, r, err.line,
					err.column, err.message);
			continue;
		}
		/* Where the old value text was: the last definition of A.  (An
		 * empty old value sits after the blanks that follow =.) */
		r = env_parse(text, (size_t)len, NULL, NULL, &f, NULL);
		for (e = r == 0 ? f.n : 0; e > 0 && !streq(f.entries[e - 1].name, "A"); e--)
			;
		CHECK(e > 0);
		plen = e > 0 ? f.entries[e - 1].value_off : 0;
		slen = e > 0 ? (size_t)len - f.entries[e - 1].value_end : 0;
		env_file_fini(&f);
		r = env_parse(out, n, NULL, NULL, &f, &err);
		if (r != 0 || n < plen + slen || memcmp(out, text, plen) != 0 ||
		    memcmp(out + n - slen, text + len - slen, slen) != 0 ||
		    !streq(env_file_get(&f, "A"), value) ||
		    (env_file_get(&f, "X") && !streq(env_file_get(&f, "X"), "1")) ||
		    (env_file_get(&f, "Y") && !streq(env_file_get(&f, "Y"), value))) {
			if (bad++ < 5)
				fprintf(stderr, "apply %zu: [%s] -> [%s]\n", i, text, out);
		}
		env_file_fini(&f);
		free_secret(out);
	}
	CHECK_INT(bad, ==, 0);
}

/* Sets each variable of a corpus file in turn: only its last definition's
 * value text may change, and every other value must stay the same. */
static void corpus_file(const char *path)
{
	static const char value[] = "n'ew \"$ {x}\\\n#\t";
	struct envedit_change c = { NULL, value, 0 };
	struct env_file f, g;
	const struct env_entry *e;
	size_t len, i, j, n, newlen;
	char *text, *out;
	int r;

	text = check_read_file(path, &len);
	if (!text) {
		fprintf(stderr, "%s: cannot read\n", path);
		check_failed++;
		return;
	}
	if (env_parse(text, len, NULL, NULL, &f, NULL) != 0) {
		fprintf(stderr, "%s: does not parse\n", path);
		check_failed++;
		free(text);
		return;
	}
	for (i = 0; i < f.n; i++) {
		e = &f.entries[i];
		if (env_file_get(&f, e->name) != e->value)
			continue; /* only the last definition is edited */
		c.name = e->name;
		r = envedit_apply(text, len, &c, 1, &out, &n, NULL);
		CHECK_INT(r, ==, 0);
		if (r != 0)
			continue;
		newlen = n - (len - (e->value_end - e->value_off));
		CHECK(memcmp(out, text, e->value_off) == 0);
		CHECK(memcmp(out + e->value_off + newlen, text + e->value_end,
			     len - e->value_end) == 0);
		CHECK_INT(env_parse(out, n, NULL, NULL, &g, NULL), ==, 0);
		CHECK_INT(g.n, ==, f.n);
		for (j = 0; j < g.n && g.n == f.n; j++) {
			/* Values that expand the edited one may differ. */
			if (j == i)
				CHECK_STR(g.entries[j].value, value);
			else if (!strstr(text + f.entries[j].value_off, "${"))
				CHECK_STR(g.entries[j].value, f.entries[j].value);
		}
		env_file_fini(&g);
		free_secret(out);
	}
	/* And a new variable at the end. */
	c.name = "NEW_VARIABLE";
	r = envedit_apply(text, len, &c, 1, &out, &n, NULL);
	CHECK_INT(r, ==, 0);
	if (r == 0) {
		CHECK(memcmp(out, text, len) == 0);
		CHECK_INT(env_parse(out, n, NULL, NULL, &g, NULL), ==, 0);
		CHECK_STR(env_file_get(&g, "NEW_VARIABLE"), value);
		env_file_fini(&g);
		free_secret(out);
	}
	env_file_fini(&f);
	free(text);
}

static const char *corpus_dir;

static void test_corpus(void)
{
	const char *dir = corpus_dir;
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4096];
	size_t n;
	int count = 0;

	if (!d) {
		fprintf(stderr, "%s: cannot open corpus directory\n", dir);
		check_failed++;
		return;
	}
	while ((de = readdir(d))) {
		n = strlen(de->d_name);
		if (strncmp(de->d_name, "good-", 5) != 0 || n < 4 ||
		    !streq(de->d_name + n - 4, ".env"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		corpus_file(path);
		count++;
	}
	closedir(d);
	CHECK(count > 0);
}

int main(int argc, char **argv)
{
	check_watchdog(60);
	RUN(test_replace_middle);
	RUN(test_replace_quoted);
	RUN(test_trailing_comment);
	RUN(test_export);
	RUN(test_append);
	RUN(test_lone_cr);
	RUN(test_bom);
	RUN(test_defined_twice);
	RUN(test_several);
	RUN(test_encrypted_untouched);
	RUN(test_bad_text);
	RUN(test_bad_changes);
	RUN(test_limits);
	RUN(test_format);
	RUN(test_roundtrip_format);
	RUN(test_roundtrip_apply);
	if (argc > 1) {
		corpus_dir = argv[1];
		RUN(test_corpus);
	}
	return check_exit();
}

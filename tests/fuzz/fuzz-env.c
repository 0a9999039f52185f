/*
 * libFuzzer target: the env-file parser (common/env.c) used the way the
 * agent's layers use it: one file parsed with a lookup into the layers
 * below and a decode callback for "enc:" values, then names looked up.
 *
 * Besides not crashing, checks what env.h promises: a NUL byte, or a \r
 * that does not start a \r\n, rejects the file before any callback; on
 * success no value holds a \r (the lower layers here hold none), every
 * name is [A-Za-z_][A-Za-z0-9_]*, offsets lie inside the input, values and
 * their sum are within ENV_VALUE_MAX and ENV_TOTAL_MAX, and env_file_get()
 * returns the last definition; on error the position is 1-based, the
 * message terminated and nothing is returned.  A BOM in front of a text
 * without one changes only the offsets.
 *
 * The decode callback stands in for crypt_open_value() (fuzzed on its own
 * in fuzz-crypto.c): "enc:ok:REST" decodes to REST, "enc:nomem" fails with
 * -ENOMEM, anything else is refused.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/env.h"
#include "tests/fuzz/fuzz.h"

/* The layers below this file: the process environment and earlier files. */
static const char *lookup(const char *name, void *data)
{
	static const char *const lower[][2] = {
		{ "HOME", "/home/app" },
		{ "PGHOST", "db.internal" },
		{ "DB_PASSWORD", "s3cret" },
		{ "EMPTY", "" },
		{ "URL", "postgresql://app:${NOT_EXPANDED}@db/x" },
	};

	(void)data;
	FUZZ_CHECK(name != NULL);
	for (size_t i = 0; i < sizeof(lower) / sizeof(lower[0]); i++)
		if (strcmp(name, lower[i][0]) == 0)
			return lower[i][1];
	return NULL;
}

static int decode(const char *name, const char *value, char **out, char *msg,
		  size_t msglen, void *data)
{
	unsigned *calls = data;

	(*calls)++;
	FUZZ_CHECK(name != NULL && value != NULL && out != NULL);
	FUZZ_CHECK(strncmp(value, ENV_ENC_PREFIX, strlen(ENV_ENC_PREFIX)) == 0);
	FUZZ_CHECK(msg != NULL && msglen > 0 && msglen <= ENV_DECODE_MSG_MAX);
	if (strncmp(value, "enc:ok:", 7) == 0) {
		*out = strdup(value + 7);
		return *out ? 0 : -ENOMEM;
	}
	if (strcmp(value, "enc:nomem") == 0)
		return -ENOMEM;
	snprintf(msg, msglen, "not a test value");
	return -EINVAL;
}

static bool name_ok(const char *s)
{
	if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
	      *s == '_'))
		return false;
	for (s++; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

static int by_name_then_place(const void *a, const void *b)
{
	const struct env_entry *x = *(const struct env_entry *const *)a;
	const struct env_entry *y = *(const struct env_entry *const *)b;
	int c = strcmp(x->name, y->name);

	return c ? c : (x > y) - (x < y);
}

static void check_parsed(const struct env_file *f, const char *text,
			 size_t len)
{
	const struct env_entry **order;
	size_t total = 0;
	unsigned lines = 1;

	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	for (size_t i = 0; i < f->n; i++) {
		const struct env_entry *e = &f->entries[i];
		size_t vlen;

		FUZZ_CHECK(e->name != NULL && name_ok(e->name));
		FUZZ_CHECK(e->value != NULL && strchr(e->value, '\r') == NULL);
		vlen = strlen(e->value);
		FUZZ_CHECK(vlen <= ENV_VALUE_MAX);
		total += vlen;
		FUZZ_CHECK(e->value_off <= e->value_end && e->value_end <= len);
		FUZZ_CHECK(e->line >= 1 && e->line <= e->end_line &&
			   e->end_line <= lines);
	}
	FUZZ_CHECK(total <= ENV_TOTAL_MAX);

	/* env_file_get() returns the last definition of every name: with
	 * the entries sorted by name, then by position, that is the last
	 * of each run (a sort, so that a file of many short lines stays
	 * fast here too). */
	order = malloc((f->n ? f->n : 1) * sizeof(*order));
	FUZZ_CHECK(order != NULL);
	for (size_t i = 0; i < f->n; i++)
		order[i] = &f->entries[i];
	qsort(order, f->n, sizeof(*order), by_name_then_place);
	for (size_t i = 0, end; i < f->n; i = end) {
		for (end = i + 1; end < f->n &&
		     strcmp(order[end]->name, order[i]->name) == 0; end++)
			;
		for (size_t j = i; j < end; j++)
			FUZZ_CHECK(env_file_get(f, order[j]->name) ==
				   order[end - 1]->value);
	}
	free(order);
	FUZZ_CHECK(env_file_get(f, "9_NOT_A_NAME") == NULL);
}

static bool has_lone_cr(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (text[i] == '\r' && (i + 1 == len || text[i + 1] != '\n'))
			return true;
	return false;
}

/* Refs (asked for with the decode callback): each names a variable,
 * points at an earlier entry or below the file, and lies within
 * ENV_VALUE_MAX; a ref to an entry of this file has that entry's value
 * length unless a default or decoding came in between. */
static void check_refs(const struct env_file *f)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct env_entry *e = &f->entries[i];
		for (size_t k = 0; k < e->n_refs; k++) {
			const struct env_ref *r = &e->refs[k];
			FUZZ_CHECK(r->name && r->name[0]);
			FUZZ_CHECK(r->entry == ENV_REF_LOWER || r->entry < i);
			FUZZ_CHECK(r->off <= ENV_VALUE_MAX &&
				   r->len <= ENV_VALUE_MAX - r->off);
			if (r->entry != ENV_REF_LOWER)
				FUZZ_CHECK(strcmp(f->entries[r->entry].name, r->name) == 0);
		}
	}
}

static void check_one(const char *text, size_t len, bool with_decode)
{
	unsigned calls = 0;
	struct env_parse_opts opts = {
		.lookup = lookup,
		.decode = with_decode ? decode : NULL,
		.data = &calls,
		.refs = with_decode,
	};
	struct env_file f = { 0 };
	struct env_error err;
	int r;

	memset(&err, 0x55, sizeof(err));
	if (with_decode)
		r = env_parse_with(text, len, &opts, &f, &err);
	else
		r = env_parse(text, len, lookup, NULL, &f, &err);

	if (r == 0) {
		FUZZ_CHECK(memchr(text, '\0', len) == NULL);
		FUZZ_CHECK(!has_lone_cr(text, len));
		check_parsed(&f, text, len);
		check_refs(&f);
		env_file_fini(&f);
		FUZZ_CHECK(f.n == 0 && f.entries == NULL);
		return;
	}
	/* -ENOMEM only from the callback: the fuzzer's inputs are small.
	 * Bytes no file may hold are found before any callback is called. */
	FUZZ_CHECK(r == -EINVAL || (r == -ENOMEM && calls > 0));
	if (has_lone_cr(text, len) || memchr(text, '\0', len))
		FUZZ_CHECK(r == -EINVAL && calls == 0);
	FUZZ_CHECK(f.n == 0 && f.entries == NULL);
	if (r == -EINVAL) {
		FUZZ_CHECK(err.line >= 1 && err.column >= 1);
		FUZZ_CHECK(memchr(err.message, '\0', sizeof(err.message)));
	}
}

/* A BOM put in front changes nothing but the offsets, which move by its
 * length: the same values, or the same error at the same line and column
 * (the BOM is no column).  Only for text that has no BOM already: a
 * second one is text. */
static void check_bom(const char *text, size_t len)
{
	unsigned calls = 0;
	struct env_parse_opts opts = {
		.lookup = lookup, .decode = decode, .data = &calls,
	};
	struct env_file f = { 0 }, g = { 0 };
	struct env_error ef, eg;
	char *with;
	int rf, rg;

	if (len >= ENV_BOM_LEN && memcmp(text, ENV_BOM, ENV_BOM_LEN) == 0)
		return;
	with = malloc(len + ENV_BOM_LEN);
	if (!with)
		return;
	memcpy(with, ENV_BOM, ENV_BOM_LEN);
	if (len)
		memcpy(with + ENV_BOM_LEN, text, len);
	rf = env_parse_with(text, len, &opts, &f, &ef);
	rg = env_parse_with(with, len + ENV_BOM_LEN, &opts, &g, &eg);
	FUZZ_CHECK(rf == rg && f.n == g.n);
	for (size_t i = 0; rf == 0 && i < f.n; i++) {
		const struct env_entry *a = &f.entries[i], *b = &g.entries[i];

		FUZZ_CHECK(strcmp(a->name, b->name) == 0);
		FUZZ_CHECK(strcmp(a->value, b->value) == 0);
		FUZZ_CHECK(a->line == b->line && a->end_line == b->end_line);
		FUZZ_CHECK(a->value_off + ENV_BOM_LEN == b->value_off &&
			   a->value_end + ENV_BOM_LEN == b->value_end);
	}
	if (rf == -EINVAL)
		FUZZ_CHECK(ef.line == eg.line && ef.column == eg.column &&
			   strcmp(ef.message, eg.message) == 0);
	env_file_fini(&f);
	env_file_fini(&g);
	free(with);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;

	if (size > FUZZ_INPUT_MAX)
		return -1;
	/* An exact-size copy, so that ASan sees any read past the end. */
	text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	check_one(text, size, true);
	check_one(text, size, false);
	check_bom(text, size);
	free(text);
	return 0;
}

/*
 * Editing .env text in place; see envedit.h.
 *
 * The parser says where each definition's value text is (value_off,
 * value_end); an edit is a list of such byte ranges to replace plus lines
 * to append.  The output size is computed first and the output written in
 * one go, so no buffer holding secrets is ever grown (and left behind
 * unwiped by realloc).  The result is parsed again and every changed
 * variable read back before it is handed out.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "envedit.h"

enum envedit_quoting {
	ENVEDIT_BARE,
	ENVEDIT_SINGLE,
	ENVEDIT_DOUBLE,
};

/* One variable to set: the change holding its final value, and the entry
 * whose value text it replaces (NULL: append a new line). */
struct envedit_op {
	const struct envedit_change *change;
	size_t value_len;
	const struct env_entry *entry;
	bool quote; /* a # follows the old value directly */
	size_t seq;  /* order of first mention, for appending */
};

PRINTF(4, 5)
static int envedit_fail(struct env_error *err, unsigned line, unsigned col, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -EINVAL;
	err->line = line;
	err->column = col;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool envedit_name_ok(const char *name)
{
	const char *s = name;

	if (!name || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
		return false;
	for (s++; *s; s++) {
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_' ||
		      (*s >= '0' && *s <= '9')))
			return false;
	}
	return true;
}

/* Bytes that mean nothing to the parser outside quotes, wherever they are
 * in a value: no blanks, quotes, #, backslash, $, braces or control bytes. */
static bool envedit_bare_byte(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("_-./:@%+=,~^!?*[]()&|<>", c));
}

static bool envedit_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static enum envedit_quoting envedit_quoting(const char *v, size_t n, bool quote)
{
	bool bare = !quote, single = true;
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (!envedit_bare_byte(c))
			bare = false;
		if (c == '\'' || envedit_control(c))
			single = false;
	}
	if (bare)
		return ENVEDIT_BARE;
	return single ? ENVEDIT_SINGLE : ENVEDIT_DOUBLE;
}

/* Writes n bytes of value v as env syntax to dst, when dst is not NULL;
 * returns how many bytes that takes (at most 2 * n + 2).  quote asks for
 * quotes even when the value needs none. */
static size_t envedit_format(const char *v, size_t n, bool quote, char *dst)
{
	enum envedit_quoting q = envedit_quoting(v, n, quote);
	size_t i, k = 0;
	char esc;

#define ENVEDIT_PUT(ch)                    \
	do {                               \
		if (dst)                   \
			dst[k] = (char)(ch); \
		k++;                       \
	} while (0)

	switch (q) {
	case ENVEDIT_BARE:
		if (dst)
			memcpy(dst, v, n);
		return n;
	case ENVEDIT_SINGLE:
		ENVEDIT_PUT('\'');
		if (dst)
			memcpy(dst + k, v, n);
		k += n;
		ENVEDIT_PUT('\'');
		return k;
	case ENVEDIT_DOUBLE:
		break;
	}
	ENVEDIT_PUT('"');
	for (i = 0; i < n; i++) {
		switch (v[i]) {
		case '\\':
		case '"':
		case '$': /* needed only before {, but simpler to read always */
			esc = v[i];
			break;
		case '\n':
			esc = 'n';
			break;
		case '\t':
			esc = 't';
			break;
		default:
			/* Raw: the other control bytes mean nothing to the
			 * parser in double quotes (a CR never gets here: no
			 * syntax can hold one, envedit_check() refuses it). */
			ENVEDIT_PUT(v[i]);
			continue;
		}
		ENVEDIT_PUT('\\');
		ENVEDIT_PUT(esc);
	}
	ENVEDIT_PUT('"');
	return k;
#undef ENVEDIT_PUT
}

char *envedit_format_value(const char *value)
{
	size_t n, k;
	char *s;

	if (!value || strchr(value, '\r')) {
		errno = EINVAL;
		return NULL;
	}
	n = strlen(value);
	k = envedit_format(value, n, false, NULL);
	s = malloc(k + 1);
	if (!s)
		return NULL;
	envedit_format(value, n, false, s);
	s[k] = '\0';
	return s;
}

/* Checks every change; index i is reported 1-based. */
static int envedit_check(const struct envedit_change *changes, size_t n, struct env_error *err)
{
	const struct envedit_change *c;
	size_t i, len;

	for (i = 0; i < n; i++) {
		c = &changes[i];
		if (!envedit_name_ok(c->name))
			return envedit_fail(err, 0, 0, "change %zu: invalid variable name", i + 1);
		if (!c->value)
			return envedit_fail(err, 0, 0, "%s: no value given", c->name);
		len = c->value_len ? c->value_len : strlen(c->value);
		if (memchr(c->value, '\0', len))
			return envedit_fail(err, 0, 0, "%s: value holds a NUL byte", c->name);
		/* A file can hold neither (env.h), so no value can either. */
		if (memchr(c->value, '\r', len))
			return envedit_fail(err, 0, 0, "%s: value holds a carriage return",
					    c->name);
		if (len > ENV_VALUE_MAX)
			return envedit_fail(err, 0, 0, "%s: value longer than %d bytes", c->name,
					    ENV_VALUE_MAX);
	}
	return 0;
}

/* Replacements by position in the text, then appends in order. */
static int envedit_op_cmp(const void *a, const void *b)
{
	const struct envedit_op *x = a, *y = b;

	if (x->entry && y->entry)
		return (x->entry->value_off > y->entry->value_off) -
		       (x->entry->value_off < y->entry->value_off);
	if (x->entry || y->entry)
		return x->entry ? -1 : 1;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

/* One op per distinct name, in order of first mention, carrying the last
 * value given for it.  *n_ops is how many. */
static int envedit_plan(const char *text, size_t len, const struct env_file *f,
			const struct envedit_change *changes, size_t n, struct envedit_op **ops,
			size_t *n_ops)
{
	struct envedit_op *o;
	size_t i, j, k = 0;

	*ops = NULL;
	*n_ops = 0;
	if (n == 0)
		return 0;
	o = calloc(n, sizeof(*o));
	if (!o)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		for (j = 0; j < i && !streq(changes[j].name, changes[i].name); j++)
			;
		if (j < i)
			continue; /* handled at its first mention */
		o[k].seq = k;
		o[k].change = &changes[i];
		for (j = i + 1; j < n; j++) {
			if (streq(changes[j].name, changes[i].name))
				o[k].change = &changes[j];
		}
		o[k].value_len = o[k].change->value_len ? o[k].change->value_len
							 : strlen(o[k].change->value);
		for (j = f->n; j > 0; j--) {
			if (streq(f->entries[j - 1].name, changes[i].name)) {
				o[k].entry = &f->entries[j - 1];
				break;
			}
		}
		o[k].quote = o[k].entry && o[k].entry->value_end < len &&
			     text[o[k].entry->value_end] == '#';
		k++;
	}
	qsort(o, k, sizeof(*o), envedit_op_cmp);
	*ops = o;
	*n_ops = k;
	return 0;
}

/* size += n, failing on overflow (only for absurd inputs). */
static bool envedit_add(size_t *size, size_t n)
{
	if (n > SIZE_MAX - *size)
		return false;
	*size += n;
	return true;
}

/* Writes the edited text to dst (NULL: only measures); returns its length
 * without the NUL, or SIZE_MAX when that does not fit a size_t. */
static size_t envedit_write(const char *text, size_t len, const struct envedit_op *ops,
			    size_t n_ops, char *dst)
{
	const char *eol = "\n";
	const char *nl = len ? memchr(text, '\n', len) : NULL;
	size_t i, at = 0, k = 0, m, bom = 0;
	bool ok = true;

#define ENVEDIT_COPY(s, n)                                   \
	do {                                                 \
		size_t envedit_n_ = (n);                     \
		if (dst && envedit_n_)                       \
			memcpy(dst + k, (s), envedit_n_);    \
		ok = ok && envedit_add(&k, envedit_n_);      \
	} while (0)

	if (nl && nl > text && nl[-1] == '\r')
		eol = "\r\n";
	if (len >= ENV_BOM_LEN && memcmp(text, ENV_BOM, ENV_BOM_LEN) == 0)
		bom = ENV_BOM_LEN;
	for (i = 0; i < n_ops && ops[i].entry; i++) {
		const struct env_entry *e = ops[i].entry;

		ENVEDIT_COPY(text + at, e->value_off - at);
		m = envedit_format(ops[i].change->value, ops[i].value_len, ops[i].quote,
				   dst ? dst + k : NULL);
		ok = ok && envedit_add(&k, m);
		at = e->value_end;
	}
	ENVEDIT_COPY(text + at, len - at);
	/* A text of only a BOM is empty: the first line goes right after it,
	 * and the BOM stays first, where it means something. */
	if (i < n_ops && len > bom && text[len - 1] != '\n')
		ENVEDIT_COPY(eol, strlen(eol));
	for (; i < n_ops; i++) {
		const char *name = ops[i].change->name;

		ENVEDIT_COPY(name, strlen(name));
		ENVEDIT_COPY("=", 1);
		m = envedit_format(ops[i].change->value, ops[i].value_len, false,
				   dst ? dst + k : NULL);
		ok = ok && envedit_add(&k, m);
		ENVEDIT_COPY(eol, strlen(eol));
	}
	return ok ? k : SIZE_MAX;
#undef ENVEDIT_COPY
}

/* Parses the edited text and reads every changed variable back. */
static int envedit_verify(const char *text, size_t len, const struct envedit_op *ops,
			  size_t n_ops, struct env_error *err)
{
	struct env_file f;
	struct env_error perr;
	const char *v;
	size_t i;
	int r;

	r = env_parse(text, len, NULL, NULL, &f, &perr);
	if (r == -EINVAL)
		return envedit_fail(err, perr.line, perr.column, "after the edit: %.*s",
				    (int)(sizeof(perr.message) - sizeof("after the edit: ")),
				    perr.message);
	if (r < 0)
		return r;
	for (i = 0; i < n_ops; i++) {
		v = env_file_get(&f, ops[i].change->name);
		if (!v || strlen(v) != ops[i].value_len ||
		    memcmp(v, ops[i].change->value, ops[i].value_len) != 0) {
			/* Cannot happen if envedit_format() is right. */
			r = envedit_fail(err, 0, 0, "%s: edited text does not read back as given",
					 ops[i].change->name);
			break;
		}
	}
	env_file_fini(&f);
	return r;
}

int envedit_apply(const char *text, size_t len, const struct envedit_change *changes, size_t n,
		  char **out, size_t *out_len, struct env_error *err)
{
	struct env_file f;
	struct envedit_op *ops;
	size_t n_ops, size;
	char *buf;
	int r;

	*out = NULL;
	*out_len = 0;
	if (err)
		*err = (struct env_error){ 0 };
	r = envedit_check(changes, n, err);
	if (r < 0)
		return r;
	/* No lookup and no decode: only the positions matter, and "enc:"
	 * values must stay encrypted. */
	r = env_parse(text, len, NULL, NULL, &f, err);
	if (r < 0)
		return r;
	r = envedit_plan(text, len, &f, changes, n, &ops, &n_ops);
	if (r < 0)
		goto err_file;
	size = envedit_write(text, len, ops, n_ops, NULL);
	r = -ENOMEM;
	if (size == SIZE_MAX)
		goto err_ops;
	buf = malloc(size + 1);
	if (!buf)
		goto err_ops;
	envedit_write(text, len, ops, n_ops, buf);
	buf[size] = '\0';
	r = envedit_verify(buf, size, ops, n_ops, err);
	if (r < 0)
		goto err_buf;
	free(ops);
	env_file_fini(&f);
	*out = buf;
	*out_len = size;
	return 0;

err_buf:
	explicit_bzero(buf, size);
	free(buf);
err_ops:
	free(ops);
err_file:
	env_file_fini(&f);
	return r;
}

/*
 * .env file parser; the syntax is described in env.h.
 *
 * A hand-written scanner over the text, one definition at a time.  The
 * value being built lives in one growing buffer that is wiped whenever
 * bytes leave it, because values are secrets.  Error messages are fixed
 * strings (at most they name one escape character, or the variable whose
 * value failed to decode), never value text.
 *
 * Each entry also records where its value's raw text is (value_off,
 * value_end, end_line), so that an editor (envedit.c) can replace exactly
 * those bytes.
 *
 * Parsing takes time linear in the text, whatever the text: the agent
 * parses on its event loop.  Names are found through an index in struct
 * env_file (an open-addressing hash table, filled as definitions are
 * added), not by searching the definitions; a ${NAME:-default} whose NAME
 * is set checks its default's syntax without building it (it could be
 * ENV_VALUE_MAX bytes, once per ${...}).  The hash is SipHash-1-3 keyed
 * by a hash of the whole text: names chosen to collide, which would make
 * every lookup walk one long run of slots, would change the key they were
 * chosen for, and the parse stays a pure function of the text.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "env.h"

#define ENV_EOF (-1)

struct env_buf {
	char *p;
	size_t len;
	size_t cap; /* always > len once allocated, for the final NUL */
};

struct env_parser {
	const char *text;
	size_t len;
	size_t pos;
	unsigned line;     /* line of pos */
	size_t line_start; /* offset where that line begins (past a BOM) */
	env_lookup_fn *lookup;
	env_resolve_fn *resolve;
	env_decode_fn *decode;
	bool record;        /* keep refs (env_parse_opts.refs) */
	void *data;
	struct env_file *out;
	size_t cap; /* entries allocated in out */
	size_t total; /* bytes of all values so far */
	struct env_error *err;
	struct env_buf val;          /* the value being built */
	unsigned val_line, val_col; /* where it starts, for "too long" */
	size_t val_off, val_end;     /* its raw text, for env_entry */
	unsigned end_line;           /* line of val_end */
	bool skip;                   /* checking a default that is not used */
	char *name;                  /* a name for the lookup callback */
	size_t name_cap;
	struct env_ref *refs;        /* of the value being built */
	size_t n_refs, refs_cap;
};

static bool env_blank(int c)
{
	return c == ' ' || c == '\t';
}

static bool env_name_start(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool env_name_char(int c)
{
	return env_name_start(c) || (c >= '0' && c <= '9');
}

PRINTF(4, 5)
static int env_fail(struct env_parser *p, unsigned line, unsigned col, const char *fmt, ...)
{
	va_list ap;

	if (!p->err)
		return -EINVAL;
	p->err->line = line;
	p->err->column = col;
	va_start(ap, fmt);
	vsnprintf(p->err->message, sizeof(p->err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* The byte at pos, with "\r\n" read as one '\n', or ENV_EOF.  Every \r
 * is followed by \n: env_check_bytes() made sure. */
static int env_peek(const struct env_parser *p)
{
	if (p->pos >= p->len)
		return ENV_EOF;
	if (p->text[p->pos] == '\r' && p->pos + 1 < p->len && p->text[p->pos + 1] == '\n')
		return '\n';
	return (unsigned char)p->text[p->pos];
}

/* True when the raw bytes at pos are s; s holds no newline. */
static bool env_looking_at(const struct env_parser *p, const char *s)
{
	size_t n = strlen(s);

	return p->len - p->pos >= n && memcmp(p->text + p->pos, s, n) == 0;
}

static void env_next(struct env_parser *p)
{
	int c = env_peek(p);

	if (c == ENV_EOF)
		return;
	p->pos += c == '\n' && p->text[p->pos] == '\r' ? 2 : 1;
	if (c == '\n') {
		p->line++;
		p->line_start = p->pos;
	}
}

static unsigned env_col(const struct env_parser *p)
{
	return (unsigned)(p->pos - p->line_start + 1);
}

static void env_skip_blanks(struct env_parser *p)
{
	while (env_blank(env_peek(p)))
		env_next(p);
}

/* Skips to the end of the line and past its line break. */
static void env_skip_line(struct env_parser *p)
{
	int c;

	while ((c = env_peek(p)) != ENV_EOF && c != '\n')
		env_next(p);
	env_next(p);
}

static void env_buf_wipe(struct env_buf *b)
{
	if (b->p)
		explicit_bzero(b->p, b->cap);
	free(b->p);
	*b = (struct env_buf){ 0 };
}

static void env_buf_truncate(struct env_buf *b, size_t len)
{
	if (len < b->len)
		explicit_bzero(b->p + len, b->len - len);
	b->len = len;
}

/* Appends to the value being built, enforcing ENV_VALUE_MAX; nothing while
 * a default that is not used is only checked. */
static int env_put(struct env_parser *p, const char *s, size_t n)
{
	struct env_buf *b = &p->val;
	size_t cap = b->cap ? b->cap : 64;
	char *np;

	if (p->skip)
		return 0;
	if (n > ENV_VALUE_MAX - b->len)
		return env_fail(p, p->val_line, p->val_col, "value too long after expansion");
	if (b->len + n >= b->cap) {
		while (cap <= b->len + n)
			cap *= 2;
		np = secret_grow(b->p, b->len, b->cap, cap);
		if (!np)
			return -ENOMEM;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}

/* Appends the current character and moves past it. */
static int env_put_next(struct env_parser *p)
{
	char c = (char)env_peek(p);

	env_next(p);
	return env_put(p, &c, 1);
}

static uint64_t env_rotl(uint64_t x, unsigned b)
{
	return (x << b) | (x >> (64 - b));
}

static void env_sipround(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = env_rotl(v[1], 13) ^ v[0];
	v[0] = env_rotl(v[0], 32);
	v[2] += v[3];
	v[3] = env_rotl(v[3], 16) ^ v[2];
	v[0] += v[3];
	v[3] = env_rotl(v[3], 21) ^ v[0];
	v[2] += v[1];
	v[1] = env_rotl(v[1], 17) ^ v[2];
	v[2] = env_rotl(v[2], 32);
}

/* SipHash-1-3 of n bytes at s under key k. */
static uint64_t env_siphash(const uint64_t k[2], const char *s, size_t n)
{
	uint64_t v[4] = {
		k[0] ^ 0x736f6d6570736575u,
		k[1] ^ 0x646f72616e646f6du,
		k[0] ^ 0x6c7967656e657261u,
		k[1] ^ 0x7465646279746573u,
	};
	uint64_t m;
	size_t i, j;

	for (i = 0; n - i >= 8; i += 8) {
		for (m = 0, j = 0; j < 8; j++)
			m |= (uint64_t)(unsigned char)s[i + j] << (8 * j);
		v[3] ^= m;
		env_sipround(v);
		v[0] ^= m;
	}
	m = (uint64_t)n << 56;
	for (j = 0; i + j < n; j++)
		m |= (uint64_t)(unsigned char)s[i + j] << (8 * j);
	v[3] ^= m;
	env_sipround(v);
	v[0] ^= m;
	v[2] ^= 0xff;
	for (j = 0; j < 3; j++)
		env_sipround(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* The index slot of name (n bytes, no NUL needed): the one that holds its
 * last definition, else the free one where it would go.  The table is
 * never full, so the probe ends. */
static size_t *env_index_slot(const struct env_file *f, const char *name, size_t n)
{
	size_t mask = f->n_slots - 1;
	size_t i = (size_t)env_siphash(f->key, name, n) & mask;
	const char *e;

	for (;; i = (i + 1) & mask) {
		if (!f->slots[i])
			return &f->slots[i];
		e = f->entries[f->slots[i] - 1].name;
		if (strncmp(e, name, n) == 0 && e[n] == '\0')
			return &f->slots[i];
	}
}

/* Makes room in the index for one more definition.  The table is kept
 * at most half full, counting every definition (duplicates too), so that
 * probes stay short; it doubles, so that moving the names over costs
 * linear time in all. */
static int env_index_reserve(struct env_file *f)
{
	size_t *old = f->slots, old_n = f->n_slots, n_slots = old_n ? old_n : 64, i;
	const char *name;

	if ((f->n + 1) * 2 <= old_n)
		return 0;
	while ((f->n + 1) * 2 > n_slots)
		n_slots *= 2;
	f->slots = calloc(n_slots, sizeof(*f->slots));
	if (!f->slots) {
		f->slots = old;
		return -ENOMEM;
	}
	f->n_slots = n_slots;
	for (i = 0; i < old_n; i++) {
		if (old[i]) {
			name = f->entries[old[i] - 1].name;
			*env_index_slot(f, name, strlen(name)) = old[i];
		}
	}
	free(old);
	return 0;
}

/* Sets *value to what the name at text[start] (n bytes) has for
 * expansion: the latest definition in this file, else the lower layers'
 * value, else NULL. */
static int env_value_of(struct env_parser *p, size_t start, size_t n, const char **value,
			size_t *entry, int *origin, unsigned line, unsigned col)
{
	const char *name = p->text + start;
	char msg[ENV_RESOLVE_MSG_MAX];
	size_t *slot, cap;
	char *np;
	int r;

	*value = NULL;
	*entry = ENV_REF_LOWER;
	*origin = -1;
	if (p->out->n_slots) {
		slot = env_index_slot(p->out, name, n);
		if (*slot) {
			*value = p->out->entries[*slot - 1].value;
			*entry = *slot - 1;
			return 0;
		}
	}
	if (!p->lookup && !p->resolve)
		return 0;
	/* The callback wants a C string: one buffer serves every name. */
	if (n >= p->name_cap) {
		for (cap = p->name_cap ? p->name_cap : 64; cap <= n; cap *= 2)
			;
		np = realloc(p->name, cap);
		if (!np)
			return -ENOMEM;
		p->name = np;
		p->name_cap = cap;
	}
	memcpy(p->name, name, n);
	p->name[n] = '\0';
	if (!p->resolve) {
		*value = p->lookup(p->name, p->data);
		return 0;
	}
	msg[0] = '\0';
	r = p->resolve(p->name, value, origin, msg, sizeof(msg), p->data);
	msg[sizeof(msg) - 1] = '\0';
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return env_fail(p, line, col, "%s", msg[0] ? msg : "cannot expand");
	return 0;
}

/* Notes that the bytes of the value from off on came from the ${NAME} at
 * text[start] (n bytes). */
static int env_note_ref(struct env_parser *p, size_t start, size_t n, size_t off,
			size_t entry, int origin)
{
	struct env_ref *refs;
	size_t cap;
	char *name;

	if (!p->record)
		return 0;
	if (p->n_refs == p->refs_cap) {
		cap = p->refs_cap ? p->refs_cap * 2 : 4;
		refs = realloc(p->refs, cap * sizeof(*refs));
		if (!refs)
			return -ENOMEM;
		p->refs = refs;
		p->refs_cap = cap;
	}
	name = strndup(p->text + start, n);
	if (!name)
		return -ENOMEM;
	p->refs[p->n_refs++] = (struct env_ref){
		.name = name,
		.off = off,
		.len = p->val.len - off,
		.entry = entry,
		.origin = origin,
	};
	return 0;
}

static void env_refs_free(struct env_ref *refs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(refs[i].name);
	free(refs);
}

/* Handles a backslash inside double quotes; pos is at the backslash. */
static int env_escape(struct env_parser *p)
{
	unsigned line = p->line, col = env_col(p);
	int c;
	char out;

	env_next(p);
	c = env_peek(p);
	switch (c) {
	case ENV_EOF:
		return 0; /* the caller reports what is left unterminated */
	case 'n':
		out = '\n';
		break;
	case 't':
		out = '\t';
		break;
	case '"':
	case '\\':
	case '$':
		out = (char)c;
		break;
	case '\n':
		return env_fail(p, line, col, "unknown escape: backslash at end of line");
	default:
		/* The character is not named: it is a byte of the value,
		 * which may be a password ("Sup3r\\qSecret"); the column of the
		 * backslash points at it. */
		return env_fail(p, line, col, "unknown escape (\\n, \\t, \\\", \\\\, \\$ are known)");
	}
	env_next(p);
	return env_put(p, &out, 1);
}

/* True when c means a ${ can no longer be closed: the end of the text, the
 * end of the line outside quotes, or the closing double quote. */
static bool env_brace_ends(int c, bool dq)
{
	return c == ENV_EOF || (!dq && c == '\n') || (dq && c == '"');
}

static int env_expand(struct env_parser *p, bool dq, unsigned depth);

/* Parses the default of a ${NAME:-default} into the value (only checks it
 * when p->skip); pos is at the ":-".  line and col locate the "${" for
 * errors. */
static int env_default(struct env_parser *p, bool dq, unsigned depth, unsigned line,
		       unsigned col)
{
	int c, r;

	env_next(p);
	env_next(p);
	while ((c = env_peek(p)) != '}') {
		if (env_brace_ends(c, dq))
			return env_fail(p, line, col, "unterminated ${");
		if (env_looking_at(p, "${"))
			r = env_expand(p, dq, depth + 1);
		else if (dq && c == '\\')
			r = env_escape(p);
		else
			r = env_put_next(p);
		if (r < 0)
			return r;
	}
	env_next(p);
	return 0;
}

/* Expands the ${...} at pos into the value (only checks it when p->skip).
 * dq says whether it sits in double quotes; depth counts the ${ around
 * it. */
static int env_expand(struct env_parser *p, bool dq, unsigned depth)
{
	unsigned line = p->line, col = env_col(p);
	const char *value = NULL;
	bool skip = p->skip;
	size_t start, off = p->val.len, entry = ENV_REF_LOWER;
	int c, r, origin = -1;

	if (depth >= ENV_NEST_MAX)
		return env_fail(p, line, col, "${ nested too deeply");
	env_next(p);
	env_next(p);
	c = env_peek(p);
	if (env_brace_ends(c, dq))
		return env_fail(p, line, col, "unterminated ${");
	if (!env_name_start(c))
		return env_fail(p, p->line, env_col(p), "invalid variable name in ${");
	start = p->pos;
	while (env_name_char(env_peek(p)))
		env_next(p);
	c = env_peek(p);
	if (env_brace_ends(c, dq))
		return env_fail(p, line, col, "unterminated ${");
	if (c != '}' && !env_looking_at(p, ":-"))
		return env_fail(p, p->line, env_col(p), "expected '}' or ':-' after name in ${");

	if (!skip) {
		r = env_value_of(p, start, p->pos - start, &value, &entry, &origin, line,
				 col);
		if (r < 0)
			return r;
	}
	if (c == '}') {
		env_next(p);
		r = value ? env_put(p, value, strlen(value)) : 0;
	} else {
		/* The default is parsed even when it is not used, to find its
		 * end and report its errors, but then only checked: it calls
		 * no lookup, so value stays valid, and builds nothing. */
		size_t n = p->pos - start;
		p->skip = skip || (value && *value);
		r = env_default(p, dq, depth, line, col);
		p->skip = skip;
		if (r == 0 && value && *value)
			r = env_put(p, value, strlen(value));
		if (r < 0 || skip)
			return r;
		return env_note_ref(p, start, n, off, entry, origin);
	}
	if (r < 0 || skip)
		return r;
	return env_note_ref(p, start, p->pos - 1 - start, off, entry, origin);
}

static int env_single_quoted(struct env_parser *p)
{
	unsigned line = p->line, col = env_col(p);
	int c, r;

	env_next(p);
	while ((c = env_peek(p)) != '\'') {
		if (c == ENV_EOF || c == '\n')
			return env_fail(p, line, col, "unterminated single quote");
		r = env_put_next(p);
		if (r < 0)
			return r;
	}
	env_next(p);
	return 0;
}

static int env_double_quoted(struct env_parser *p)
{
	unsigned line = p->line, col = env_col(p);
	int c, r;

	env_next(p);
	while ((c = env_peek(p)) != '"') {
		if (c == ENV_EOF)
			return env_fail(p, line, col, "unterminated double quote");
		if (c == '\\')
			r = env_escape(p);
		else if (env_looking_at(p, "${"))
			r = env_expand(p, true, 0);
		else
			r = env_put_next(p);
		if (r < 0)
			return r;
	}
	env_next(p);
	return 0;
}

static int env_unquoted(struct env_parser *p)
{
	size_t keep = 0; /* value length without trailing literal blanks */
	int c, r;

	p->val_end = p->pos;
	while ((c = env_peek(p)) != ENV_EOF && c != '\n') {
		/* pos > 0: at least the '=' comes before any value. */
		if (c == '#' && env_blank(p->text[p->pos - 1]))
			break;
		if (env_looking_at(p, "${"))
			r = env_expand(p, false, 0);
		else
			r = env_put_next(p);
		if (r < 0)
			return r;
		if (!env_blank(c)) {
			keep = p->val.len;
			p->val_end = p->pos;
		}
	}
	env_buf_truncate(&p->val, keep);
	/* An unquoted value never crosses a line break. */
	p->end_line = p->line;
	return 0;
}

/* After a closing quote: blanks, an optional comment, the line break. */
static int env_after_quote(struct env_parser *p)
{
	int c;

	env_skip_blanks(p);
	c = env_peek(p);
	if (c != ENV_EOF && c != '\n' && c != '#')
		return env_fail(p, p->line, env_col(p), "unexpected text after closing quote");
	return 0;
}

/* Reads a name at pos; *start and *n locate it in the text. */
static int env_name(struct env_parser *p, size_t *start, size_t *n)
{
	if (!env_name_start(env_peek(p)))
		return env_fail(p, p->line, env_col(p), "invalid variable name");
	*start = p->pos;
	while (env_name_char(env_peek(p)))
		env_next(p);
	*n = p->pos - *start;
	return 0;
}

/* Longest part of a variable name that goes into an error message: enough
 * to recognise it, short enough to leave room for the reason. */
#define ENV_MSG_NAME_MAX 64

/* Hands the finished value to the decode callback when it asks for one and
 * puts the result in its place. */
static int env_decode(struct env_parser *p, const char *name)
{
	size_t plen = strlen(ENV_ENC_PREFIX), n;
	char msg[ENV_DECODE_MSG_MAX];
	char *dec = NULL;
	const char *cut;
	int r, w;

	if (!p->decode || p->val.len < plen || memcmp(p->val.p, ENV_ENC_PREFIX, plen) != 0)
		return 0;
	/* Names are not secret, but may be long: show the first part. */
	w = (int)MIN(strlen(name), (size_t)ENV_MSG_NAME_MAX);
	cut = strlen(name) > ENV_MSG_NAME_MAX ? "..." : "";
	p->val.p[p->val.len] = '\0'; /* cap > len: there is room */
	msg[0] = '\0';
	r = p->decode(name, p->val.p, &dec, msg, sizeof(msg), p->data);
	msg[sizeof(msg) - 1] = '\0'; /* in case the callback did not */
	if (r == -ENOMEM)
		return -ENOMEM;
	if (r < 0 || !dec)
		return env_fail(p, p->val_line, p->val_col, "%.*s%s: %s", w, name, cut,
				r < 0 && msg[0] ? msg : "cannot decode value");
	n = strlen(dec);
	if (n > ENV_VALUE_MAX) {
		free_secret(dec);
		return env_fail(p, p->val_line, p->val_col, "%.*s%s: value too long after decoding",
				w, name, cut);
	}
	env_buf_wipe(&p->val);
	p->val = (struct env_buf){ .p = dec, .len = n, .cap = n + 1 };
	/* Where each expansion went is lost: all of it came from them. */
	for (size_t i = 0; i < p->n_refs; i++) {
		p->refs[i].off = 0;
		p->refs[i].len = n;
	}
	return 0;
}

/* Moves the finished value into a new entry. */
static int env_add(struct env_parser *p, size_t name_start, size_t name_len, unsigned line)
{
	struct env_file *f = p->out;
	struct env_entry *entries;
	char *name, *value;
	size_t cap;
	int r;

	name = strndup(p->text + name_start, name_len);
	if (!name)
		return -ENOMEM;
	r = env_decode(p, name);
	if (r < 0)
		goto err_name;
	if (p->val.len > ENV_TOTAL_MAX - p->total) {
		r = env_fail(p, line, 1, "file too large after expansion");
		goto err_name;
	}
	r = -ENOMEM;
	if (f->n == p->cap) {
		cap = p->cap ? p->cap * 2 : 16;
		entries = realloc(f->entries, cap * sizeof(*entries));
		if (!entries)
			goto err_name;
		f->entries = entries;
		p->cap = cap;
	}
	if (env_index_reserve(f) < 0)
		goto err_name;
	if (p->val.p) {
		value = p->val.p;
		value[p->val.len] = '\0';
	} else {
		value = strdup("");
		if (!value)
			goto err_name;
	}
	p->total += p->val.len;
	p->val = (struct env_buf){ 0 };
	f->entries[f->n++] = (struct env_entry){
		.name = name,
		.value = value,
		.line = line,
		.value_off = p->val_off,
		.value_end = p->val_end,
		.end_line = p->end_line,
		.refs = p->refs,
		.n_refs = p->n_refs,
	};
	p->refs = NULL;
	p->n_refs = p->refs_cap = 0;
	/* The later definition takes the name's slot. */
	*env_index_slot(f, name, name_len) = f->n;
	return 0;

err_name:
	free(name);
	return r;
}

/* Parses one line, or several when a double-quoted value spans lines. */
static int env_parse_line(struct env_parser *p)
{
	unsigned line;
	size_t start, n;
	int c, r;

	env_skip_blanks(p);
	c = env_peek(p);
	if (c == '#' || c == '\n' || c == ENV_EOF) {
		env_skip_line(p);
		return 0;
	}

	line = p->line;
	r = env_name(p, &start, &n);
	if (r < 0)
		return r;
	if (n == 6 && memcmp(p->text + start, "export", 6) == 0 && env_blank(env_peek(p))) {
		env_skip_blanks(p);
		/* "export =1" and "export " alone keep export as the name. */
		if (env_name_start(env_peek(p))) {
			r = env_name(p, &start, &n);
			if (r < 0)
				return r;
		}
	}
	c = env_peek(p);
	if (c != '=' && !env_blank(c) && c != '\n' && c != ENV_EOF)
		return env_fail(p, p->line, env_col(p), "invalid variable name");
	env_skip_blanks(p);
	if (env_peek(p) != '=')
		return env_fail(p, p->line, env_col(p), "expected '=' after name");
	env_next(p);
	env_skip_blanks(p);

	p->val_line = p->line;
	p->val_col = env_col(p);
	p->val_off = p->pos;
	c = env_peek(p);
	if (c == '\'')
		r = env_single_quoted(p);
	else if (c == '"')
		r = env_double_quoted(p);
	else
		r = env_unquoted(p);
	if (r == 0 && (c == '\'' || c == '"')) {
		p->val_end = p->pos; /* just past the closing quote */
		p->end_line = p->line;
		r = env_after_quote(p);
	}
	if (r < 0)
		return r;
	env_skip_line(p); /* a comment, if any, and the line break */
	r = env_add(p, start, n, line);
	env_refs_free(p->refs, p->n_refs);
	p->refs = NULL;
	p->n_refs = p->refs_cap = 0;
	return r;
}

/* A NUL byte, and a CR that does not start a CRLF line break, are errors
 * wherever they are, even in a comment: neither may become part of a
 * value, and a lone CR is a line break to some tools and not to others,
 * so that no one reading the file could tell where its values end.  The
 * first such byte is reported.  Called at the start, past a BOM. */
static int env_check_bytes(struct env_parser *p)
{
	const char *s, *end, *stop, *nul, *cr, *line_start = p->text + p->pos;
	unsigned line = 1;

	if (p->len == 0) /* text may then be NULL, which memchr must not see */
		return 0;
	end = p->text + p->len;
	nul = memchr(line_start, '\0', (size_t)(end - line_start));
	stop = nul ? nul : end; /* a CR after the NUL is not the first */
	for (cr = line_start; (cr = memchr(cr, '\r', (size_t)(stop - cr))); cr++) {
		if (cr + 1 == end || cr[1] != '\n')
			break;
	}
	if (!cr && !nul)
		return 0;
	for (s = line_start; s < (cr ? cr : nul); s++) {
		if (*s == '\n') {
			line++;
			line_start = s + 1;
		}
	}
	if (cr)
		return env_fail(p, line, (unsigned)(cr - line_start + 1),
				"carriage return not followed by a line feed");
	return env_fail(p, line, (unsigned)(nul - line_start + 1), "NUL byte");
}

int env_parse(const char *text, size_t len, env_lookup_fn *lookup, void *data,
	      struct env_file *out, struct env_error *err)
{
	struct env_parse_opts opts = { .lookup = lookup, .data = data };

	return env_parse_with(text, len, &opts, out, err);
}

int env_parse_with(const char *text, size_t len, const struct env_parse_opts *opts,
		   struct env_file *out, struct env_error *err)
{
	struct env_parser p = {
		.text = text,
		.len = len,
		.line = 1,
		.lookup = opts ? opts->lookup : NULL,
		.resolve = opts ? opts->resolve : NULL,
		.record = opts && opts->refs,
		.decode = opts ? opts->decode : NULL,
		.data = opts ? opts->data : NULL,
		.out = out,
		.err = err,
	};
	static const uint64_t fixed_key[2] = { 0 };
	int r;

	*out = (struct env_file){ 0 };
	if (err)
		*err = (struct env_error){ 0 };
	/* The index's key: the text's hash under a fixed key (see the top of
	 * this file).  text may be NULL when len is 0. */
	if (len > 0) {
		out->key[0] = env_siphash(fixed_key, text, len);
		out->key[1] = out->key[0] ^ 0x9e3779b97f4a7c15u;
	}
	/* Skipped by moving where line 1 starts, so that its columns are
	 * the ones an editor shows, while offsets still index the text. */
	if (len >= ENV_BOM_LEN && memcmp(text, ENV_BOM, ENV_BOM_LEN) == 0)
		p.pos = p.line_start = ENV_BOM_LEN;
	r = env_check_bytes(&p);
	while (r == 0 && p.pos < p.len)
		r = env_parse_line(&p);
	env_buf_wipe(&p.val);
	free(p.name);
	env_refs_free(p.refs, p.n_refs);
	if (r < 0) {
		if (r == -ENOMEM)
			env_fail(&p, p.line, env_col(&p), "out of memory");
		env_file_fini(out);
	}
	return r;
}

void env_file_fini(struct env_file *f)
{
	size_t i;

	for (i = 0; i < f->n; i++) {
		free(f->entries[i].name);
		free_secret(f->entries[i].value);
		env_refs_free(f->entries[i].refs, f->entries[i].n_refs);
	}
	free(f->entries);
	free(f->slots);
	/* The key too: it is a hash of text that held secrets. */
	explicit_bzero(f, sizeof(*f));
}

const char *env_file_get(const struct env_file *f, const char *name)
{
	size_t *slot;

	/* No index: nothing was defined (env_parse() indexes every
	 * definition). */
	if (!f->n_slots)
		return NULL;
	slot = env_index_slot(f, name, strlen(name));
	return *slot ? f->entries[*slot - 1].value : NULL;
}

size_t env_file_index(const struct env_file *f, const char *name)
{
	size_t *slot;

	if (!f->n_slots)
		return ENV_REF_LOWER;
	slot = env_index_slot(f, name, strlen(name));
	return *slot ? *slot - 1 : ENV_REF_LOWER;
}

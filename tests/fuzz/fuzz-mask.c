/*
 * libFuzzer target: conninfo masking (common/mask.c).
 *
 * The first input byte picks a mode; the rest is the data:
 *   0  the data as one string (up to the first NUL), arbitrary bytes.
 *      Checked: (a) when libpq's PQconninfoParse() refuses it, the output
 *      is exactly "****" (nothing of the input, not even its length);
 *      (b) when libpq accepts it, no password or sslpassword libpq parsed
 *      of FRAGMENT bytes or more (and no '*', which the mask is made of)
 *      is in the output, nor one libpq parses from its dbname when that
 *      is a connection string of its own ('=' or "://" in it: libpq
 *      expands it under expand_dbname), two levels deep; (c) when it
 *      starts with a libpq URI prefix and its first ':' after "://"
 *      comes before any '/' and before the last '@', no FRAGMENT bytes
 *      from between that ':' and that '@' (the password of libpq's
 *      reading or of a human's) are in the output unless they are also
 *      in the rest of the input
 *   1  key=value conninfo built from the data the way libpq reads it:
 *      records of (selector byte, length byte, value bytes); the selector
 *      picks the key (password and sslpassword in several cases among
 *      ordinary keys, or a dbname holding a connection string with the
 *      secret in its password, sslpassword or URI), the quoting (libpq's
 *      backslash escapes unquoted, or single quotes) and the blanks
 *      around '='; a port, hostaddr or connect_timeout value that the
 *      agent refuses (agent/connplan.c's rules, repeated here) counts as
 *      a secret: a mistyped value puts a password there
 *   2  a URI built from the data: postgresql://user:password@host/db?query,
 *      the user name percent-encoded, the password raw (mask.h: it may hold
 *      '@', ':', '/', '?'), query values with '&' and '%' encoded, secret
 *      query keys percent-encoded or not; the database (path) or a dbname
 *      query parameter may hold a connection string with a secret; the
 *      hosts may end in a port which, if the agent refuses it, counts as
 *      a secret.  (A
 *      raw '?' in the user name, which this target found masked wrong,
 *      is covered by test-mask.c; raw user names are not generated here
 *      because a raw '/' in one ends libpq's user info, and the password
 *      span would no longer be a password.)
 *
 * For modes 1 and 2 the target knows where each secret's text is, and
 * checks that no fragment of 4 bytes of it survives: a fragment found in
 * the output that is not also in the input's non-secret text (nor
 * holds a '*', which the mask itself is made of) leaked.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/mask.h"
#include "tests/fuzz/fuzz.h"

/* Smallest leak that counts: shorter fragments occur by chance. */
#define FRAGMENT 4
/* Built strings stay small: the leak check is quadratic. */
#define BUILT_MAX 4096
#define SPANS_MAX 256

struct built {
	char s[4 * BUILT_MAX + 64];
	size_t len;
	size_t span_off[SPANS_MAX], span_end[SPANS_MAX];
	size_t n_spans;
};

static void add(struct built *b, const char *p, size_t n)
{
	FUZZ_CHECK(b->len + n < sizeof(b->s));
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void add_c(struct built *b, char c)
{
	add(b, &c, 1);
}

static void span_begin(struct built *b)
{
	FUZZ_CHECK(b->n_spans < SPANS_MAX);
	b->span_off[b->n_spans] = b->len;
}

static void span_end(struct built *b)
{
	b->span_end[b->n_spans++] = b->len;
}

/* Reads records of (selector, length, bytes); NUL bytes become 'N', so
 * that the string is what was built. */
struct reader {
	const uint8_t *p, *end;
};

static bool next_record(struct reader *rd, uint8_t *sel, char *val,
			size_t *len)
{
	size_t n;

	if (rd->end - rd->p < 2)
		return false;
	*sel = rd->p[0];
	n = rd->p[1];
	rd->p += 2;
	if (n > (size_t)(rd->end - rd->p))
		n = (size_t)(rd->end - rd->p);
	for (size_t i = 0; i < n; i++)
		val[i] = rd->p[i] ? (char)rd->p[i] : 'N';
	rd->p += n;
	*len = n;
	return true;
}

/* agent/connplan.c's checks, on a value as libpq parsed it (n bytes, no
 * NUL): what the agent refuses, mask_conninfo() must not show. */
static bool agent_int(const char *v, size_t n, long min, long max)
{
	char buf[300], *end;
	long x;

	if (n >= sizeof(buf))
		return false;
	memcpy(buf, v, n);
	buf[n] = '\0';
	errno = 0;
	x = strtol(buf, &end, 10);
	if (end == buf || errno)
		return false;
	while (isspace((unsigned char)*end))
		end++;
	return *end == '\0' && x >= min && x <= max;
}

static bool agent_numeric_host(const char *v, size_t n)
{
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	char buf[300];

	if (n >= sizeof(buf))
		return false;
	memcpy(buf, v, n);
	buf[n] = '\0';
	if (getaddrinfo(buf, NULL, &hints, &ai) != 0)
		return false;
	freeaddrinfo(ai);
	return true;
}

/* Whether the agent takes a value of key: each comma-separated element
 * of a port list empty or 1..65535, of a hostaddr list empty or a
 * numeric address; connect_timeout a whole number within int. */
static bool agent_takes(const char *key, const char *v, size_t n)
{
	bool port = strcmp(key, "port") == 0;

	if (strcmp(key, "connect_timeout") == 0)
		return n == 0 || agent_int(v, n, INT_MIN, INT_MAX);
	if (!port && strcmp(key, "hostaddr") != 0)
		return true;
	for (const char *end = v + n;;) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		size_t len = (size_t)((comma ? comma : end) - v);
		if (len > 0 && !(port ? agent_int(v, len, 1, 65535)
				      : agent_numeric_host(v, len)))
			return false;
		if (!comma)
			return true;
		v = comma + 1;
	}
}

/* A value written for key=value form: libpq's backslash escapes
 * unquoted, or the escapes inside single quotes (quoted: the caller adds
 * the quotes).  first: the value starts here (an unquoted value starting
 * with a quote needs its escape). */
static void add_kv_text(struct built *b, const char *val, size_t n,
			bool quoted, bool first)
{
	for (size_t i = 0; i < n; i++) {
		if (quoted ? val[i] == '\'' || val[i] == '\\'
			   : isspace((unsigned char)val[i]) ||
				     val[i] == '\\' ||
				     (first && i == 0 && val[i] == '\''))
			add_c(b, '\\');
		add_c(b, val[i]);
	}
}

/* dbnames that are connection strings of their own (libpq expands them
 * under expand_dbname): the secret goes between prefix and suffix. */
static const struct {
	const char *prefix, *suffix;
} nested[] = {
	{ "password=", "" },
	{ "host=db password=", " user=app" },
	{ "sslpassword=", "" },
	{ "postgresql://app:", "@db/app" },
	{ "postgres://db/x?password=", "" },
	{ "dbname=password=", "" },
};
#define NESTED_N (sizeof(nested) / sizeof(nested[0]))

static void build_keyvalue(struct built *b, const uint8_t *data, size_t size)
{
	static const char *const keys[] = {
		"host", "user", "dbname", "password", "sslpassword",
		"PASSWORD", "SslPassWord", "application_name", "options",
		"port", "passwd", "password_x", "hostaddr", "connect_timeout",
	};
	/* Past the keys: a dbname holding a connection string. */
	const size_t n_keys = sizeof(keys) / sizeof(keys[0]);
	static const char *const blanks[] = { " ", "  ", "\t", "\n ", " \r\n" };
	struct reader rd = { data, data + size };
	char val[256];
	size_t n;
	uint8_t sel;

	while (b->len < BUILT_MAX && b->n_spans < SPANS_MAX &&
	       next_record(&rd, &sel, val, &n)) {
		size_t k = sel % (n_keys + NESTED_N);
		const char *key = k < n_keys ? keys[k] : "dbname";
		bool secret = k >= n_keys || strcasecmp(key, "password") == 0 ||
			      strcasecmp(key, "sslpassword") == 0 ||
			      !agent_takes(key, val, n);
		bool quoted = sel & 0x40 || n == 0;

		if (b->len > 0)
			add(b, blanks[(sel >> 4) % 4], strlen(blanks[(sel >> 4) % 4]));
		add(b, key, strlen(key));
		add(b, sel & 0x80 ? " = " : "=", sel & 0x80 ? 3 : 1);
		if (k >= n_keys) {
			const char *pre = nested[k - n_keys].prefix;
			const char *suf = nested[k - n_keys].suffix;
			if (quoted)
				add_c(b, '\'');
			add_kv_text(b, pre, strlen(pre), quoted, true);
			span_begin(b);
			add_kv_text(b, val, n, quoted, false);
			span_end(b);
			add_kv_text(b, suf, strlen(suf), quoted, false);
			if (quoted)
				add_c(b, '\'');
			continue;
		}
		if (secret)
			span_begin(b);
		if (quoted)
			add_c(b, '\'');
		add_kv_text(b, val, n, quoted, true);
		if (quoted)
			add_c(b, '\'');
		if (secret)
			span_end(b);
	}
}

static bool unreserved(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

static void add_encoded(struct built *b, const char *p, size_t n,
			const char *keep_raw)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (unreserved((char)c) || (c >= 0x20 && c < 0x7f && c != '%' &&
					    strchr(keep_raw, c))) {
			add_c(b, (char)c);
		} else {
			add_c(b, '%');
			add_c(b, hex[c >> 4]);
			add_c(b, hex[c & 15]);
		}
	}
}

/* A dbname holding a connection string, percent-encoded (keep_raw as
 * add_encoded()), the secret a span: nested[] form sel. */
static void add_nested(struct built *b, const char *val, size_t n,
		       uint8_t sel, const char *keep_raw)
{
	const char *pre = nested[sel % NESTED_N].prefix;
	const char *suf = nested[sel % NESTED_N].suffix;

	add_encoded(b, pre, strlen(pre), keep_raw);
	span_begin(b);
	add_encoded(b, val, n, keep_raw);
	span_end(b);
	add_encoded(b, suf, strlen(suf), keep_raw);
}

static void build_uri(struct built *b, const uint8_t *data, size_t size)
{
	static const char *const schemes[] = { "postgresql://", "postgres://",
					       "PostgreSQL://" };
	static const char *const qkeys[] = {
		"password", "sslpassword", "pass%77ord", "ssl%70assword",
		"PASSWORD", "sslmode", "application_name", "connect_timeout",
		"dbname", "db%6Eame",
	};
	static const char query_raw[] = " !\"#$'()*+,/:;<=>?@[\\]^`{|}";
	/* A raw '=' in a query value makes libpq refuse the URI. */
	static const char nested_raw[] = " !\"#$'()*+,/:;<>?@[\\]^`{|}";
	struct reader rd = { data, data + size };
	char val[256];
	size_t n;
	uint8_t sel;

	if (!next_record(&rd, &sel, val, &n))
		return;
	add(b, schemes[sel % 3], strlen(schemes[sel % 3]));
	/* user */
	add_encoded(b, val, n, "");
	if (sel & 0x80 && next_record(&rd, &sel, val, &n)) {
		add_c(b, ':');
		span_begin(b);
		add(b, val, n);
		span_end(b);
	}
	if (sel & 0x40 || b->n_spans > 0)
		add_c(b, '@');
	/* hosts and database */
	if (next_record(&rd, &sel, val, &n)) {
		bool port = sel & 0x10;
		add_encoded(b, val, n, ",:[]");
		/* A last port; one the agent refuses is a secret. */
		if (port && next_record(&rd, &sel, val, &n)) {
			bool secret = !agent_takes("port", val, n);
			add_c(b, ':');
			if (secret)
				span_begin(b);
			add_encoded(b, val, n, "");
			if (secret)
				span_end(b);
		}
		add_c(b, '/');
	}
	if (next_record(&rd, &sel, val, &n)) {
		if (sel & 0x20)
			add_nested(b, val, n, sel, "");
		else
			add_encoded(b, val, n, "");
	}
	/* query: the last two keys take a dbname holding a connection
	 * string */
	for (bool first = true;
	     b->len < BUILT_MAX && b->n_spans < SPANS_MAX &&
	     next_record(&rd, &sel, val, &n);
	     first = false) {
		const char *key = qkeys[sel % 10];
		add_c(b, first ? '?' : '&');
		add(b, key, strlen(key));
		add_c(b, '=');
		if (sel % 10 >= 8) {
			add_nested(b, val, n, sel >> 4, nested_raw);
			continue;
		}
		if (sel % 10 < 5)
			span_begin(b);
		add_encoded(b, val, n, query_raw);
		if (sel % 10 < 5)
			span_end(b);
	}
}

/* The input with each secret replaced by a byte that is in no fragment
 * checked: what correct masking leaves, give or take the mask. */
static char *non_secret_text(const struct built *b)
{
	char *t = malloc(b->len + b->n_spans + 1); /* empty spans grow */
	size_t at = 0, from = 0;

	FUZZ_CHECK(t != NULL);
	for (size_t i = 0; i < b->n_spans; i++) {
		memcpy(t + at, b->s + from, b->span_off[i] - from);
		at += b->span_off[i] - from;
		t[at++] = '\001';
		from = b->span_end[i];
	}
	memcpy(t + at, b->s + from, b->len - from);
	at += b->len - from;
	t[at] = '\0';
	return t;
}

static void check_no_leak(const struct built *b, const char *out)
{
	char *rest = non_secret_text(b);

	for (size_t i = 0; i < b->n_spans; i++) {
		for (size_t at = b->span_off[i];
		     at + FRAGMENT <= b->span_end[i]; at++) {
			const char *frag = b->s + at;
			if (memchr(frag, '*', FRAGMENT) ||
			    memchr(frag, '\001', FRAGMENT) ||
			    !memmem(out, strlen(out), frag, FRAGMENT) ||
			    memmem(rest, strlen(rest), frag, FRAGMENT))
				continue;
			fprintf(stderr,
				"mask_conninfo leaks \"%.*s\" of a secret\n"
				"  in:  \"%s\"\n  out: \"%s\"\n",
				FRAGMENT, frag, b->s, out);
			abort();
		}
	}
	free(rest);
}

/* Property (c) of mode 0, with the span as a built secret. */
static void check_uri_span(const char *s, const char *out)
{
	static struct built u;
	const char *start = strstr(s, "://"), *colon, *slash, *at;
	size_t len = strlen(s);

	if (!start || (strncmp(s, "postgresql://", 13) != 0 &&
		       strncmp(s, "postgres://", 11) != 0))
		return;
	start += 3;
	colon = strchr(start, ':');
	slash = strchr(start, '/');
	at = strrchr(start, '@');
	if (!colon || !at || colon > at || (slash && slash < colon) ||
	    len >= sizeof(u.s))
		return;
	memcpy(u.s, s, len + 1);
	u.len = len;
	u.n_spans = 1;
	u.span_off[0] = (size_t)(colon + 1 - s);
	u.span_end[0] = (size_t)(at - s);
	check_no_leak(&u, out);
}

/* Property (b) of mode 0 on libpq's reading of a value, and on the
 * reading of its dbname when that is a connection string of its own
 * (libpq expands it under expand_dbname): depth levels of those. */
static void check_parsed(const char *s, const char *out,
			 PQconninfoOption *opts, int depth)
{
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		PQconninfoOption *inner;
		char *err = NULL;

		if (!o->val)
			continue;
		if (strcmp(o->keyword, "dbname") == 0 && depth < 2 &&
		    (strchr(o->val, '=') || strstr(o->val, "://")) &&
		    (inner = PQconninfoParse(o->val, &err))) {
			check_parsed(s, out, inner, depth + 1);
			PQconninfoFree(inner);
		}
		PQfreemem(err);
		if (strlen(o->val) < FRAGMENT || strchr(o->val, '*') ||
		    (strcmp(o->keyword, "password") != 0 &&
		     strcmp(o->keyword, "sslpassword") != 0))
			continue;
		if (strstr(out, o->val)) {
			fprintf(stderr, "mask_conninfo leaks the %s libpq "
				"parsed%s\n  in:  \"%s\"\n  out: \"%s\"\n",
				o->keyword, depth ? " from the dbname" : "", s,
				out);
			abort();
		}
	}
}

/* Mode 0: any bytes. */
static void check_any(const char *s, const char *out)
{
	PQconninfoOption *opts;
	char *err = NULL;

	opts = PQconninfoParse(s, &err);
	PQfreemem(err);
	if (!opts) {
		if (strcmp(out, "****") != 0) {
			fprintf(stderr, "mask_conninfo shows a value libpq "
				"refuses\n  in:  \"%s\"\n  out: \"%s\"\n",
				s, out);
			abort();
		}
		return;
	}
	check_parsed(s, out, opts, 0);
	PQconninfoFree(opts);
	check_uri_span(s, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct built b;
	char *s, *out;

	if (size > FUZZ_INPUT_MAX)
		return -1;
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		s = malloc(size);
		FUZZ_CHECK(s != NULL);
		memcpy(s, data + 1, size - 1);
		s[size - 1] = '\0';
		out = mask_conninfo(s);
		FUZZ_CHECK(out != NULL);
		check_any(s, out);
		free(out);
		free(s);
		return 0;
	case 1:
		b.len = b.n_spans = 0;
		b.s[0] = '\0';
		build_keyvalue(&b, data + 1, size - 1);
		break;
	case 2:
		b.len = b.n_spans = 0;
		b.s[0] = '\0';
		build_uri(&b, data + 1, size - 1);
		break;
	}
	s = strdup(b.s);
	FUZZ_CHECK(s != NULL);
	out = mask_conninfo(s);
	FUZZ_CHECK(out != NULL);
	check_no_leak(&b, out);
	free(out);
	free(s);
	return 0;
}

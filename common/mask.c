/*
 * Password masking for conninfo strings; see mask.h.
 *
 * libpq decides what the value is: PQconninfoParse() (which reads no
 * file and no environment) either accepts it, and the masker then masks
 * every span that libpq or a human could take for a password, or refuses
 * it, and then nothing of it is shown.  A last check compares the output
 * with the passwords libpq parsed, from the value and from a dbname that
 * is a connection string of its own: a password still in it (a shape the
 * span rules missed) masks the value whole.
 *
 * mask_secrets() runs the same rules and lists each span they mask
 * (out_mask()), so that what the scrubber takes out of an error message
 * cannot differ from what the masker hides.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "mask.h"
#include "util.h"

#define MASK "****"

/* A parsed password shorter than this is not looked for in the output:
 * one to three bytes occur by chance in any text (the mask itself holds
 * "*", key names hold most letters), and looking would mask every value
 * whole.  The span rules mask short passwords as well as long ones. */
#define MASK_SECRET_MIN 4

/* libpq's settings that hold a secret: the passwords, and the OAuth
 * client secret and SCRAM keys of libpq 18 (a libpq that does not know
 * them refuses the value, and it is masked whole anyway).  Case does not
 * matter here: a key libpq would refuse as unknown was still meant as a
 * secret by whoever wrote it. */
static const char *const secret_keys[] = {
	"password", "sslpassword", "oauth_client_secret", "scram_client_key",
	"scram_server_key",
};

static bool is_secret_key(const char *key, size_t n)
{
	for (size_t i = 0; i < ARRAY_SIZE(secret_keys); i++)
		if (n == strlen(secret_keys[i]) &&
		    strncasecmp(key, secret_keys[i], n) == 0)
			return true;
	return false;
}

/* Whether a dbname is a connection string of its own: libpq expands the
 * first dbname a program passes to PQconnectdbParams() and the like with
 * expand_dbname set when it holds '=' or starts with postgresql:// or
 * postgres://, and takes its password then.  "://" anywhere also catches
 * schemes other clients accept in other cases, and a URI behind a prefix
 * that a human reads as one all the same. */
static bool dbname_expands(const char *dec, size_t n)
{
	return memchr(dec, '=', n) || memmem(dec, n, "://", 3);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* [v, v + n) as libpq reads it, into dec (room for n bytes): in a URI
 * percent-decoded (a '%' that starts no escape stays), in key=value form
 * without its quotes and backslashes.  Returns the decoded length. */
static size_t value_decode(const char *v, size_t n, bool uri, char *dec)
{
	size_t len = 0;

	if (!uri && n >= 2 && v[0] == '\'' && v[n - 1] == '\'') {
		v++;
		n -= 2;
	}
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (uri && c == '%' && i + 2 < n && hex_digit(v[i + 1]) >= 0 &&
		    hex_digit(v[i + 2]) >= 0) {
			c = (char)(hex_digit(v[i + 1]) << 4 |
				   hex_digit(v[i + 2]));
			i += 2;
		} else if (!uri && c == '\\' && i + 1 < n) {
			c = v[++i];
		}
		dec[len++] = c;
	}
	return len;
}

/* Whether a value as written would expand as a connection string if it is
 * a dbname (see dbname_expands()). */
static bool dbname_written_expands(const char *v, size_t n, bool uri)
{
	char *dec = malloc(n + 1);
	bool expands;

	/* Out of memory: masked, the safe side. */
	if (!dec)
		return true;
	n = value_decode(v, n, uri, dec);
	expands = dbname_expands(dec, n);
	/* It may hold a password. */
	explicit_bzero(dec, n);
	free(dec);
	return expands;
}

/* A URI query key as libpq reads it, percent-decoded: "pass%77ord" is a
 * password, "db%6Eame" a dbname.  A key too long to be one of libpq's
 * comes out empty (libpq refuses the value then). */
#define QUERY_KEY_MAX 64
static size_t query_key_decode(const char *key, size_t n,
			       char dec[QUERY_KEY_MAX])
{
	return n > QUERY_KEY_MAX ? 0 : value_decode(key, n, true, dec);
}

/* The checks below are those of agent/connplan.c's
 * connplan_check_settings() and connplan_hosts_parse(), or stricter: a
 * value the agent refuses must not be shown, since a mistyped value puts
 * a password in exactly such a setting ("postgresql://app:8675309912/db"
 * reads as port 8675309912, "hostaddr=${DB_PASSWORD}").  They read the
 * text as written: quotes, escapes and percent signs never pass. */

/* One port: empty (libpq's default) or 1..65535 written plainly.  The
 * agent also takes leading zeros and blanks ("05432"); masked here. */
static bool port_ok(const char *v, size_t n)
{
	unsigned long port = 0;

	if (n == 0)
		return true;
	if (n > 5 || v[0] == '0')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)v[i]))
			return false;
		port = port * 10 + (unsigned long)(v[i] - '0');
	}
	return port <= 65535;
}

/* A comma-separated list of ports, each port_ok(). */
static bool ports_ok(const char *v, size_t n)
{
	const char *end = v + n;

	for (;;) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		const char *e = comma ? comma : end;
		if (!port_ok(v, (size_t)(e - v)))
			return false;
		if (!comma)
			return true;
		v = comma + 1;
	}
}

/* One hostaddr: empty (the host is used) or an IPv4 or IPv6 address as
 * inet_pton() parses it.  The agent takes what getaddrinfo() with
 * AI_NUMERICHOST takes, which is more ("1", "0x7f.1", a scope id):
 * masked here. */
static bool hostaddr_ok(const char *v, size_t n)
{
	char buf[INET6_ADDRSTRLEN];
	unsigned char addr[sizeof(struct in6_addr)];

	if (n == 0)
		return true;
	if (n >= sizeof(buf) || memchr(v, '\0', n))
		return false;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return inet_pton(AF_INET, buf, addr) == 1 ||
	       inet_pton(AF_INET6, buf, addr) == 1;
}

/* A comma-separated list of hostaddrs, each hostaddr_ok(). */
static bool hostaddrs_ok(const char *v, size_t n)
{
	const char *end = v + n;

	for (;;) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		const char *e = comma ? comma : end;
		if (!hostaddr_ok(v, (size_t)(e - v)))
			return false;
		if (!comma)
			return true;
		v = comma + 1;
	}
}

/* A whole number within int, as the agent requires of connect_timeout
 * and the keepalive settings: a sign, then digits without leading zeros
 * (those the agent takes; masked here, with blanks). */
static bool int_ok(const char *v, size_t n)
{
	long long x = 0;
	size_t i = 0;
	bool neg = false;

	if (n > 0 && (v[0] == '-' || v[0] == '+')) {
		neg = v[0] == '-';
		i++;
	}
	if (i == n || n - i > 10 || (v[i] == '0' && n - i > 1))
		return false;
	for (; i < n; i++) {
		if (!isdigit((unsigned char)v[i]))
			return false;
		x = x * 10 + (v[i] - '0');
	}
	return neg ? -x >= INT_MIN : x <= INT_MAX;
}

/* Whether a setting's value as written, [v, v + n), is one libpq takes
 * for that setting.  One that is not is masked: a mistyped value can put
 * a password anywhere ("port=${DB_PASS}", "postgresql://app:pw/db"), and
 * the agent refuses such a value anyway (connplan.h), so hiding it costs
 * nothing.  Quoted or escaped text never passes: it is not a number, an
 * address or a keyword of libpq's.  A dbname that is a connection string
 * of its own is masked: its password is one (and the agent refuses it).
 * uri: the value is percent-encoded (a URI query value), else written as
 * in key=value form. */
static bool setting_ok(const char *key, size_t klen, const char *v, size_t n,
		       bool uri)
{
	static const char *const ints[] = {
		"connect_timeout", "keepalives", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "tcp_user_timeout",
	};
	static const struct {
		const char *keyword, *values; /* " a b " */
	} enums[] = {
		{ "sslmode", " disable allow prefer require verify-ca "
			     "verify-full " },
		{ "gssencmode", " disable prefer require " },
		{ "channel_binding", " disable prefer require " },
		{ "target_session_attrs", " any read-write read-only primary "
					  "standby prefer-standby " },
		{ "ssl_min_protocol_version", " TLSv1 TLSv1.1 TLSv1.2 TLSv1.3 " },
		{ "ssl_max_protocol_version", " TLSv1 TLSv1.1 TLSv1.2 TLSv1.3 " },
	};

#define KEY_IS(k) (klen == strlen(k) && strncmp(key, k, klen) == 0)
	if (KEY_IS("dbname"))
		return !dbname_written_expands(v, n, uri);
	if (KEY_IS("port"))
		return ports_ok(v, n);
	if (KEY_IS("hostaddr"))
		return hostaddrs_ok(v, n);
	for (size_t i = 0; i < ARRAY_SIZE(ints); i++)
		if (KEY_IS(ints[i]))
			return n == 0 || int_ok(v, n);
	for (size_t i = 0; i < ARRAY_SIZE(enums); i++) {
		const char *hit;
		if (!KEY_IS(enums[i].keyword))
			continue;
		if (n == 0)
			return true;
		for (const char *at = enums[i].values;
		     (hit = strstr(at, " ")) && hit[1]; at = hit + 1)
			if (strncmp(hit + 1, v, n) == 0 && hit[1 + n] == ' ')
				return memchr(v, ' ', n) == NULL;
		return false;
	}
#undef KEY_IS
	return true;
}

int mask_secrets_add(struct mask_secrets *ms, const char *s)
{
	char **grown, *copy;

	if (!s || !*s)
		return 0;
	copy = strdup(s);
	grown = copy ? realloc(ms->s, (ms->n + 1) * sizeof(*ms->s)) : NULL;
	if (!grown) {
		free_secret(copy);
		return -ENOMEM;
	}
	ms->s = grown;
	ms->s[ms->n++] = copy;
	return 0;
}

/* Adds [v, v + n) unless ms lists it already. */
static int secrets_add_n(struct mask_secrets *ms, const char *v, size_t n)
{
	char *copy;
	int r;

	for (size_t i = 0; i < ms->n; i++)
		if (strlen(ms->s[i]) == n && memcmp(ms->s[i], v, n) == 0)
			return 0;
	copy = strndup(v, n);
	if (!copy)
		return -ENOMEM;
	r = mask_secrets_add(ms, copy);
	free_secret(copy);
	return r;
}

/* Growing output string; failure is sticky and reported at the end.
 * With sec set, each span of the input that is masked is listed there
 * too (mask_secrets()), as written and as libpq reads it: percent-decoded
 * when uri, else unquoted.  With all set, every value is masked: what a
 * value masked whole holds (the output is not shown then; values shorter
 * than MASK_SECRET_MIN are not listed). */
struct out {
	char *s;
	size_t len, cap;
	bool failed;
	struct mask_secrets *sec;
	bool uri, all;
};

static void out_add(struct out *o, const char *p, size_t n)
{
	if (o->failed)
		return;
	if (o->len + n + 1 > o->cap) {
		size_t cap = MAX(o->cap * 2, o->len + n + 64);
		char *s = realloc(o->s, cap);
		if (!s) {
			o->failed = true;
			return;
		}
		o->s = s;
		o->cap = cap;
	}
	memcpy(o->s + o->len, p, n);
	o->len += n;
	o->s[o->len] = '\0';
}

static void out_str(struct out *o, const char *s)
{
	out_add(o, s, strlen(s));
}

/* Masks the input span [v, v + n).  Every span the rules mask goes
 * through here, so what mask_secrets() lists is what mask_conninfo()
 * hides. */
static void out_mask(struct out *o, const char *v, size_t n)
{
	char *dec;
	size_t len;

	out_str(o, MASK);
	/* Every value of a value masked whole: a short one would mask its
	 * bytes all over a message (see MASK_SECRET_MIN); those the rules
	 * mask were listed when all was not set. */
	if (!o->sec || n == 0 || o->failed || (o->all && n < MASK_SECRET_MIN))
		return;
	if (secrets_add_n(o->sec, v, n) < 0) {
		o->failed = true;
		return;
	}
	/* An unterminated quote (a value libpq refuses) is read from after
	 * it by a human. */
	if (!o->uri && v[0] == '\'' && (n == 1 || v[n - 1] != '\'')) {
		v++;
		n--;
	}
	dec = malloc(n + 1);
	if (!dec) {
		o->failed = true;
		return;
	}
	len = value_decode(v, n, o->uri, dec);
	if (len > 0 && !(o->all && len < MASK_SECRET_MIN) &&
	    secrets_add_n(o->sec, dec, len) < 0)
		o->failed = true;
	explicit_bzero(dec, len);
	free(dec);
}

static char *out_done(struct out *o)
{
	if (o->failed || !o->s) {
		free(o->s);
		return o->failed ? NULL : strdup("");
	}
	return o->s;
}

/* Query parameters: key=value pairs separated by '&'.  Keys are read
 * percent-decoded, as libpq reads them. */
static void mask_query(struct out *o, const char *p)
{
	while (*p) {
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		char key[QUERY_KEY_MAX];
		size_t klen = 0;

		if (eq)
			klen = query_key_decode(p, (size_t)(eq - p), key);
		if (eq && (o->all || is_secret_key(key, klen) ||
			   !setting_ok(key, klen, eq + 1,
				       (size_t)(end - eq - 1), true))) {
			out_add(o, p, (size_t)(eq - p) + 1);
			out_mask(o, eq + 1, (size_t)(end - eq - 1));
		} else if (!eq && o->all) {
			out_mask(o, p, (size_t)(end - p));
		} else {
			out_add(o, p, (size_t)(end - p));
		}
		if (!amp)
			break;
		out_str(o, "&");
		p = amp + 1;
	}
}

/* The hosts of a URI's authority, [p, end): without user info libpq
 * reads "app:pw" as host app, port pw, where a human wrote a user and a
 * password and forgot "@host"; with it a password can still land in a
 * port ("app:pw@db:${DB_PASSWORD}", "h1:5432,h2:pw").  A port that is
 * not port_ok() is masked, with its host; a number from 1 to 65535
 * cannot be told from a port (see mask.h). */
static void mask_ports(struct out *o, const char *p, const char *end)
{
	/* Each host as libpq reads it: an IPv6 literal only when '[' starts
	 * it (up to ']'), else up to ':' or ','; the port from ':' up to
	 * ','.  A '[' inside a host hides no ':' from libpq. */
	while (p < end) {
		const char *host = p, *q;
		if (*p == '[') {
			/* libpq looks for the ']' past the '/' and the '?' and
			 * reads a port after it: the rest is masked. */
			q = memchr(p, ']', (size_t)(end - p));
			if (!q) {
				out_mask(o, p, (size_t)(end - p));
				return;
			}
			p = q + 1;
		}
		while (p < end && *p != ':' && *p != ',')
			p++;
		if (p < end && *p == ':') {
			for (q = p + 1; q < end && *q != ','; q++)
				;
			/* A refused port masks its host too: the authority
			 * was mistyped, and a password may lie on both sides
			 * ("app@Secr3tPW:db.example.com"). */
			if (!o->all && port_ok(p + 1, (size_t)(q - p - 1))) {
				out_add(o, host, (size_t)(q - host));
			} else {
				out_mask(o, host, (size_t)(p - host));
				out_str(o, ":");
				out_mask(o, p + 1, (size_t)(q - p - 1));
			}
			p = q;
		} else if (o->all) {
			out_mask(o, host, (size_t)(p - host));
		} else {
			out_add(o, host, (size_t)(p - host));
		}
		if (p < end) {
			out_add(o, ",", 1);
			p++;
		}
	}
}

static char *mask_uri(const char *s, size_t scheme_len,
		      struct mask_secrets *sec, bool all)
{
	const char *start = s + scheme_len, *at = strrchr(start, '@');
	const char *query = strchr(start, '?');
	const char *q, *p, *path;
	struct out o = { .sec = sec, .uri = true, .all = all };

	out_add(&o, s, scheme_len);
	p = start;
	if (at) {
		/* The last '@' ends user:password even when the password holds
		 * '@', ':' or '/'.  A ':' past the '?' is in the query, unless
		 * no '/' comes before it: libpq reads user info up to the '@'
		 * without stopping at a '?' ("a?b:pw@db" is user a?b). */
		const char *colon = memchr(start, ':', (size_t)(at - start));
		bool in_query = query && colon > query &&
				memchr(start, '/', (size_t)(colon - start));
		if (colon && !in_query) {
			if (all) {
				out_mask(&o, start, (size_t)(colon - start));
				out_str(&o, ":");
			} else {
				out_add(&o, start, (size_t)(colon - start) + 1);
			}
			out_mask(&o, colon + 1, (size_t)(at - colon - 1));
			if (query && query < at) {
				/* That '@' sits in a query value (legal there)
				 * or the password holds a '?': what follows it
				 * up to the next '&' may be a secret's tail. */
				const char *amp = strchr(at, '&');
				out_str(&o, "@");
				out_mask(&o, at + 1, amp ? (size_t)(amp - at - 1)
							 : strlen(at + 1));
				if (amp) {
					out_str(&o, "&");
					mask_query(&o, amp + 1);
				}
				return out_done(&o);
			}
			p = at;
		}
	}
	{
		/* The hosts, after the user info if any: their ports may be a
		 * password.  A user name without a password ends at libpq's
		 * '@', the first before any '/', unless a '?' comes first:
		 * then that '@' may sit in a query value ("db?password=a@b"),
		 * which mask_query() masks. */
		const char *end = p + strcspn(p, "@/?");
		if (p == start && *end == '@') {
			if (all)
				out_mask(&o, p, (size_t)(end - p));
			else
				out_add(&o, p, (size_t)(end - p));
			p = end;
		}
		if (*p == '@') {
			out_add(&o, "@", 1);
			p++;
		}
		end = p + strcspn(p, "/?");
		mask_ports(&o, p, end);
		p = end;
	}
	q = p + strcspn(p, "?");
	/* The path, up to the '?', is the dbname: libpq reads it from the
	 * first '/' after the hosts (a '/' in the user info ends it, and the
	 * span before the last '@' is masked above). */
	path = memchr(p, '/', (size_t)(q - p));
	if (path && (all || !setting_ok("dbname", 6, path + 1,
					(size_t)(q - path - 1), true))) {
		out_add(&o, p, (size_t)(path - p) + 1);
		out_mask(&o, path + 1, (size_t)(q - path - 1));
	} else {
		out_add(&o, p, (size_t)(q - p));
	}
	if (*q) {
		out_str(&o, "?");
		mask_query(&o, q + 1);
	}
	return out_done(&o);
}

static char *mask_keyvalue(const char *s, struct mask_secrets *sec,
			   bool all)
{
	struct out o = { .sec = sec, .all = all };
	const char *p = s;

	while (*p) {
		const char *key, *ws = p;
		size_t klen;
		bool secret;

		while (isspace((unsigned char)*p))
			p++;
		out_add(&o, ws, (size_t)(p - ws));
		if (!*p)
			break;
		key = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		klen = (size_t)(p - key);
		secret = is_secret_key(key, klen);
		ws = p;
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=') {
			/* Not key=value: this word and what follows might be
			 * anything, a password split at a space included. */
			out_mask(&o, key, strlen(key));
			break;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		out_add(&o, key, (size_t)(ws - key));
		out_add(&o, ws, (size_t)(p - ws));
		const char *val = p;
		if (*p == '\'') {
			for (p++; *p && *p != '\''; p++)
				if (*p == '\\' && p[1])
					p++;
			if (*p)
				p++;
		} else {
			/* libpq takes "\ " as a space inside the value. */
			for (; *p && !isspace((unsigned char)*p); p++)
				if (*p == '\\' && p[1])
					p++;
		}
		if (all || secret ||
		    !setting_ok(key, klen, val, (size_t)(p - val), false))
			out_mask(&o, val, (size_t)(p - val));
		else
			out_add(&o, val, (size_t)(p - val));
	}
	return out_done(&o);
}

/* How deep mask_leaks() follows a dbname that is a connection string
 * whose dbname is one again: libpq expands one level only, the rest is
 * for a human's reading, and it must end. */
#define MASK_NEST_MAX 4

static void mask_opts_free(PQconninfoOption *opts)
{
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (o->val)
			explicit_bzero(o->val, strlen(o->val));
	PQconninfoFree(opts);
}

/* Whether out still holds a secret libpq parsed from the value, or from
 * its dbname when that is a connection string (all of that dbname, too:
 * its text may be a password however libpq reads it). */
static bool mask_leaks(const char *out, const PQconninfoOption *opts,
		       int depth)
{
	for (const PQconninfoOption *o = opts; o->keyword; o++) {
		PQconninfoOption *nested;
		char *errmsg = NULL;
		bool leaks;

		if (!o->val || strlen(o->val) < MASK_SECRET_MIN)
			continue;
		if (is_secret_key(o->keyword, strlen(o->keyword)) &&
		    strstr(out, o->val))
			return true;
		if (strcmp(o->keyword, "dbname") != 0 ||
		    !dbname_expands(o->val, strlen(o->val)))
			continue;
		if (strstr(out, o->val) || depth >= MASK_NEST_MAX)
			return true;
		nested = PQconninfoParse(o->val, &errmsg);
		PQfreemem(errmsg);
		if (!nested)
			continue;
		leaks = mask_leaks(out, nested, depth + 1);
		mask_opts_free(nested);
		if (leaks)
			return true;
	}
	return false;
}

/* The span rules on s, whatever libpq makes of it: the masked copy, or
 * NULL when out of memory.  With sec set, the spans masked are listed
 * there too; with all, every value is. */
static char *mask_spans(const char *s, struct mask_secrets *sec, bool all)
{
	/* libpq's URI prefixes, compared as libpq does (case matters). */
	static const char *const schemes[] = { "postgresql://", "postgres://" };

	for (size_t i = 0; i < ARRAY_SIZE(schemes); i++) {
		size_t n = strlen(schemes[i]);
		if (strncmp(s, schemes[i], n) == 0)
			return mask_uri(s, n, sec, all);
	}
	return mask_keyvalue(s, sec, all);
}

/* libpq's reading of s into *opts, NULL when libpq refuses it.  Returns
 * 0 or -ENOMEM.  errmsg quotes the value: dropped. */
static int mask_parse(const char *s, PQconninfoOption **opts)
{
	char *errmsg = NULL;

	*opts = PQconninfoParse(s, &errmsg);
	if (!*opts && !errmsg)
		return -ENOMEM;
	PQfreemem(errmsg);
	return 0;
}

char *mask_conninfo(const char *s)
{
	PQconninfoOption *opts;
	char *out;

	if (!s)
		return strdup("(none)");
	if (!*s)
		return strdup("");
	/* A value libpq refuses (a JDBC URL, a typo'd scheme, a bare or
	 * half-written password, anything) is shown as nothing but the
	 * mask: not even its length. */
	if (mask_parse(s, &opts) < 0 || !opts)
		return strdup(MASK);
	out = mask_spans(s, NULL, false);
	if (out && mask_leaks(out, opts, 0)) {
		free(out);
		out = strdup(MASK);
	}
	mask_opts_free(opts);
	return out;
}

/* Lists in ms the secrets of s, a conninfo or a dbname that is one
 * (depth levels down): what mask_conninfo() masks, and more. */
static int secrets_collect(const char *s, struct mask_secrets *ms, int depth)
{
	PQconninfoOption *opts;
	char *out;
	int r = mask_parse(s, &opts);

	if (r < 0)
		return r;
	if (depth == 0)
		ms->parsed = opts != NULL;
	out = mask_spans(s, ms, false);
	if (!out) {
		r = -ENOMEM;
	} else if (!opts || mask_leaks(out, opts, 0)) {
		/* Masked whole: all of it, and each of its values of
		 * MASK_SECRET_MIN bytes or more (a message may show one
		 * bare, which the whole does not match). */
		free(out);
		out = mask_spans(s, ms, true);
		r = out ? secrets_add_n(ms, s, strlen(s)) : -ENOMEM;
	}
	free(out);
	for (const PQconninfoOption *o = opts; o && o->keyword && r == 0; o++) {
		if (!o->val || !*o->val)
			continue;
		/* What libpq reads as a secret, however it was written
		 * (what mask_leaks() looks for, short ones too). */
		if (is_secret_key(o->keyword, strlen(o->keyword)))
			r = secrets_add_n(ms, o->val, strlen(o->val));
		/* A dbname that is a connection string: masked whole as a
		 * span above, and its own secrets, which a message may show
		 * apart from it. */
		else if (streq(o->keyword, "dbname") &&
			 dbname_expands(o->val, strlen(o->val)) &&
			 depth < MASK_NEST_MAX)
			r = secrets_collect(o->val, ms, depth + 1);
	}
	if (opts)
		mask_opts_free(opts);
	return r;
}

/* Longest first: where one secret starts with another, the scrubber
 * replaces the longer (it takes the first that matches). */
static int secret_cmp(const void *a, const void *b)
{
	size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);

	return la > lb ? -1 : la < lb;
}

int mask_secrets(const char *conninfo, struct mask_secrets *ms)
{
	int r;

	*ms = (struct mask_secrets){ 0 };
	if (!conninfo)
		return 0;
	r = secrets_collect(conninfo, ms, 0);
	if (r < 0) {
		mask_secrets_free(ms);
		ms->parsed = false;
		return r;
	}
	if (ms->n > 1)
		qsort(ms->s, ms->n, sizeof(*ms->s), secret_cmp);
	return 0;
}

void mask_secrets_free(struct mask_secrets *ms)
{
	for (size_t i = 0; i < ms->n; i++)
		free_secret(ms->s[i]);
	free(ms->s);
	ms->s = NULL;
	ms->n = 0;
}

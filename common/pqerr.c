/*
 * libpq error messages on one line; see pqerr.h.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "pqerr.h"
#include "util.h"

void pqerr_line(const char *raw, char *out, size_t size, char sqlstate[6])
{
	size_t o = 0;

	for (const char *line = raw; line && *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		if (len > 0 && strncmp(line, "LOCATION:", 9) != 0) {
			if (o > 0 && o + 2 < size) {
				memcpy(out + o, "; ", 2);
				o += 2;
			}
			for (size_t i = 0; i < len && o + 1 < size; i++) {
				/* A tab indents libpq's hints: a blank, and
				 * "FATAL:  " double blanks collapse. */
				char ch = line[i] == '\t' ? ' ' : line[i];
				if (ch == ' ' && (o == 0 || out[o - 1] == ' ' ||
						  out[o - 1] == ';'))
					continue;
				out[o++] = ch;
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	out[o] = '\0';
	while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == ';'))
		out[--o] = '\0';

	sqlstate[0] = '\0';
	for (const char *s = out; (s = strstr(s, ": ")); s += 2) {
		const char *c = s + 2;
		size_t n = 0;
		while (n < 5 && (isdigit((unsigned char)c[n]) ||
				 isupper((unsigned char)c[n])))
			n++;
		if (n == 5 && c[5] == ':' &&
		    (isdigit((unsigned char)c[0]) || isdigit((unsigned char)c[1]))) {
			memcpy(sqlstate, c, 5);
			sqlstate[5] = '\0';
			break;
		}
	}
}

bool pqerr_is_auth(const char *sqlstate)
{
	return streq(sqlstate, "28P01") || streq(sqlstate, "28000");
}

void pqerr_scrub(const char *text, char *out, size_t size,
		 char *const *secrets, size_t n)
{
	size_t o = 0;

	if (size == 0)
		return;
	/* Room for the longest replacement, "****" in quotes, and the NUL. */
	for (const char *p = text; *p && o + 7 < size;) {
		const char *end;
		if (*p == '"' && (end = strchr(p + 1, '"'))) {
			size_t len = (size_t)(end - p - 1);
			bool secret = false;
			for (size_t i = 0; i < n && len > 0; i++) {
				const char *s = secrets[i];
				if (!s || !*s)
					continue;
				char tok[256];
				if (len < sizeof(tok)) {
					memcpy(tok, p + 1, len);
					tok[len] = '\0';
					secret = strstr(s, tok) || strstr(tok, s);
				} else {
					secret = true;
				}
				if (secret)
					break;
			}
			if (secret) {
				memcpy(out + o, "\"****\"", 6);
				o += 6;
				p = end + 1;
				continue;
			}
		}
		bool bare = false;
		for (size_t i = 0; i < n; i++) {
			size_t sl = secrets[i] ? strlen(secrets[i]) : 0;
			if (sl > 0 && strncmp(p, secrets[i], sl) == 0) {
				memcpy(out + o, "****", 4);
				o += 4;
				p += sl;
				bare = true;
				break;
			}
		}
		if (!bare)
			out[o++] = *p++;
	}
	out[o] = '\0';
}


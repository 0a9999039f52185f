/*
 * libpq error messages on one line; see pqerr.h.
 */
#include <ctype.h>
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

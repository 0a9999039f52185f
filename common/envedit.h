/*
 * Editing .env files as text: set variables while keeping everything else
 * byte for byte (comments, order, blank lines, spacing, `export` prefixes,
 * trailing comments, other entries, CRLF line endings, a UTF-8 byte order
 * mark at the start).  Used by `dbswapctl set` to change a secret without
 * rewriting the file.
 *
 * The syntax is the one env.h describes; the existing text is located with
 * env_parse() (no lookup, no decode), so "enc:v1:..." values are neither
 * decoded nor changed unless a change names them.  New values are written
 * so that they read back as exactly the given bytes: never expanded,
 * whatever they contain.
 *
 * Pure code: no I/O, no global state, safe to call from any thread.
 * Values are secrets: every buffer that held one is wiped before it is
 * freed, and error messages never contain value text.
 */
#ifndef DBSWAP_COMMON_ENVEDIT_H
#define DBSWAP_COMMON_ENVEDIT_H

#include <stddef.h>

#include "common/env.h"

/* One variable to set. */
struct envedit_change {
	const char *name;  /* [A-Za-z_][A-Za-z0-9_]* */
	const char *value; /* secret; not NULL */
	/* Bytes of value; 0 means strlen(value).  Give it when the value
	 * comes from raw input (a file, stdin) so that a NUL byte in it is
	 * refused instead of silently cutting the value short. */
	size_t value_len;
};

/*
 * Applies n changes to len bytes of env file text (text may be NULL when
 * len is 0).
 *
 * For each change: if the name is defined, the value text of its LAST
 * definition (env_entry value_off..value_end) is replaced by the new value
 * as envedit_format_value() writes it; the `export ` prefix, the blanks and
 * a trailing comment stay.  (When a # follows the old value directly, as in
 * A='x'#c, the new value is quoted so that the # still starts a comment.)
 * Otherwise NAME=value is appended on a new line at the end; a text that
 * does not end with a line break gets one first (unless it is only a BOM:
 * the line goes right after it).  Line breaks added are
 * \r\n when the text's first line ends with \r\n, else \n.  Changes apply
 * in order: a name given twice is set once, to the last value, in the
 * place of its first mention.
 *
 * The result is parsed again before it is returned, so a change that would
 * make the file unreadable (a value over ENV_VALUE_MAX after expansion
 * elsewhere, the file over ENV_TOTAL_MAX) is refused.
 *
 * Returns 0 with *out (malloc'ed, NUL-terminated, *out_len bytes without
 * the NUL; it holds secrets: the caller wipes it before freeing it).
 * Returns -EINVAL with *err filled (err may be NULL):
 *   - the existing text does not parse: line and column, as env_parse();
 *   - a change is bad (a name that is not a valid name, a NULL value, a
 *     value holding a NUL byte or a carriage return, which no env file can
 *     hold, a value over ENV_VALUE_MAX bytes): line and column are 0, the
 *     message names the change ("change 2: ...") or, when its name is
 *     valid, the variable;
 *   - the edited text would not parse: line and column point into the
 *     edited text and the message starts with "after the edit: ".
 * Returns -ENOMEM when out of memory.  On failure *out is NULL and
 * *out_len 0.  Does not block.
 */
int envedit_apply(const char *text, size_t len, const struct envedit_change *changes, size_t n,
		  char **out, size_t *out_len, struct env_error *err);

/*
 * Returns value written as env syntax that parses back to exactly value,
 * with no expansion: malloc'ed and NUL-terminated; it holds the secret, so
 * wipe it (free_secret()).
 *   - unquoted when value is empty or every byte is a letter, a digit or
 *     one of _ - . / : @ % + = , ~ ^ ! ? * [ ] ( ) & | < >
 *   - else in single quotes when it has no ' and no control byte
 *     (below 0x20, or 0x7f);
 *   - else in double quotes, with \ " $ escaped by a backslash, newline
 *     written as \n and tab as \t; other control bytes are written raw
 *     (the parser keeps them).
 * Bytes from 0x80 up are never left unquoted, so that the value's ends are
 * visible even when it ends in, say, a non-breaking space.
 * Returns NULL when out of memory (errno ENOMEM), or when value is NULL or
 * holds a carriage return, which env syntax cannot hold (errno EINVAL).
 */
char *envedit_format_value(const char *value);

#endif

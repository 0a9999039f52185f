/*
 * Parser for dbswap's .env files: text in, a list of NAME=value definitions
 * out.  Pure code: no I/O, no global state, safe to call from any thread.
 * Values are secrets (passwords, conninfo strings): they are wiped before
 * they are freed and never appear in error messages.
 *
 * SYNTAX
 *
 *   Lines end with \n; a \r right before \n is dropped, so CRLF files work
 *   (also inside multi-line double quotes, where the line break becomes \n).
 *   Blank lines and lines whose first non-blank character is # are ignored.
 *   Blanks are spaces and tabs.
 *
 *   A definition is  [export] NAME = value
 *   - An optional "export" followed by at least one blank comes first
 *     ("export=1" and "export =1" define a variable named export).
 *   - NAME is [A-Za-z_][A-Za-z0-9_]*; blanks around = are optional.
 *     A line that is not a comment and has no = after a valid name is a
 *     syntax error.
 *
 *   Unquoted value:  A=some value   # comment
 *   - Runs to the end of the line.  Blanks after = are skipped, trailing
 *     blanks are trimmed.  A=  gives the empty string.
 *   - A # preceded by a blank starts a comment; any other # is part of the
 *     value, so A=postgresql://u:p#x@h keeps its #.
 *   - No escapes: a backslash is literal.  Quotes inside the value are
 *     literal too.  ${...} is expanded (see below).
 *
 *   Single quotes:  A='literal ${not} \expanded'
 *   - Everything up to the next ' is taken as is: no escapes, no expansion.
 *   - Must close on the same line.
 *
 *   Double quotes:  A="line one\nline ${B}"
 *   - Escapes: \n \t \" \\ \$ ; any other backslash sequence is an error.
 *   - ${...} is expanded; \$ gives a literal $.
 *   - May span lines; the line breaks are kept.
 *
 *   After a closing quote only blanks and an optional # comment may follow.
 *
 *   Expansion (unquoted and double-quoted values):
 *   - ${NAME} is the value of NAME from the latest earlier definition in
 *     this file, else from the lower layers (the process environment and
 *     earlier files, through the lookup callback), else the empty string.
 *     A definition in the file wins even when it is empty.
 *   - ${NAME:-default} gives default when NAME is unset or empty.  The
 *     default runs to the matching }, follows the rules of the value around
 *     it (escapes inside double quotes, no line break when unquoted) and may
 *     itself contain ${...}, nested at most ENV_NEST_MAX deep.
 *   - A $ not followed by { is literal: A=pa$s works unquoted.
 *   - An unterminated ${, a bad name inside it, or anything but } or :-
 *     after the name is an error.
 *   - One value may be at most ENV_VALUE_MAX bytes after expansion, and all
 *     values of one file together at most ENV_TOTAL_MAX bytes, so that
 *     A=x, B=${A}${A}, C=${B}${B}, ... cannot blow up.
 *
 *   A NUL byte anywhere is an error.  Any error rejects the whole file.
 *   Errors carry a 1-based line and column; the column counts bytes.
 */
#ifndef DBSWAP_AGENT_ENV_H
#define DBSWAP_AGENT_ENV_H

#include <stddef.h>

/* Longest value after expansion: a conninfo string or a certificate fits
 * easily; a value built by repeated doubling does not. */
#define ENV_VALUE_MAX (64 * 1024)

/* Sum of all values of one file after expansion: bounds what a file of many
 * small lines that each expand to ENV_VALUE_MAX can make us allocate. */
#define ENV_TOTAL_MAX (1024 * 1024)

/* Deepest ${A:-${B:-...}} nesting: real files use one or two levels. */
#define ENV_NEST_MAX 8

/* One parsed definition. */
struct env_entry {
	char *name;
	char *value; /* secret */
	unsigned line; /* where the name is */
};

/* Definitions in file order; duplicates are all kept, and the later one
 * wins in lookups. */
struct env_file {
	struct env_entry *entries;
	size_t n;
};

/* Looks up a variable defined in a lower layer (the process environment and
 * earlier files); returns NULL when it is undefined.  The result need only
 * stay valid until the next call. */
typedef const char *env_lookup_fn(const char *name, void *data);

struct env_error {
	unsigned line, column; /* 1-based; column in bytes */
	char message[200];     /* never contains value text */
};

/* Parses len bytes of text; text may be NULL when len is 0.  lookup may be
 * NULL (nothing is defined below this file); err may be NULL.
 * Returns 0 and fills *out, which the caller must env_file_fini().
 * Returns -EINVAL on a syntax error and fills *err, or -ENOMEM; either way
 * *out is left empty and needs no fini. */
int env_parse(const char *text, size_t len, env_lookup_fn *lookup, void *data,
	      struct env_file *out, struct env_error *err);

/* Frees everything, wiping values first, and leaves *f empty. */
void env_file_fini(struct env_file *f);

/* Returns the value of the last definition of name, or NULL. */
const char *env_file_get(const struct env_file *f, const char *name);

#endif

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
 *   Any other \r (a lone one, the first of \r\r\n) is an error, wherever
 *   it is: a value never holds a \r from the file.
 *   A UTF-8 byte order mark (ENV_BOM) at the very start of the text is
 *   skipped, as editors on other systems write one; anywhere else those
 *   bytes are text like any other.
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
 *     A resolve callback (env_parse_with()) used instead of the lookup
 *     one may refuse a name: the file is then rejected at the ${ with
 *     the callback's reason (the agent's rule on who may read what,
 *     agent/layers.h).
 *   - ${NAME:-default} gives default when NAME is unset or empty.  The
 *     default runs to the matching }, follows the rules of the value around
 *     it (escapes inside double quotes, no line break when unquoted) and may
 *     itself contain ${...}, nested at most ENV_NEST_MAX deep.  A default
 *     that is not used is checked for errors all the same, but nothing in
 *     it is looked up (the lookup callback does not see its names).
 *   - A $ not followed by { is literal: A=pa$s works unquoted.
 *   - An unterminated ${, a bad name inside it, or anything but } or :-
 *     after the name is an error.
 *   - One value may be at most ENV_VALUE_MAX bytes after expansion (a
 *     default that is not used does not count), and all values of one file
 *     together at most ENV_TOTAL_MAX bytes, so that A=x, B=${A}${A},
 *     C=${B}${B}, ... cannot blow up.
 *
 *   A NUL byte anywhere is an error, and so is a \r that does not start a
 *   \r\n; of these the first in the text is reported, before any other
 *   error.  Any error rejects the whole file.
 *   Errors carry a 1-based line and column; the column counts bytes, and
 *   not those of a BOM, which is no column in an editor either.  (The
 *   byte offsets in struct env_entry do count it: they index the text.)
 *
 * ENCRYPTED VALUES
 *
 *   A value that, after expansion, starts with "enc:" (ENV_ENC_PREFIX) may
 *   be handed to a decode callback (env_parse_with()) when its definition is
 *   complete, before it is stored: the stored value and every later ${NAME}
 *   see what the callback returns.  Without a callback such values are kept
 *   as they are, which is what an editor wants (see envedit.h).
 */
#ifndef DBSWAP_AGENT_ENV_H
#define DBSWAP_AGENT_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest value after expansion: a conninfo string or a certificate fits
 * easily; a value built by repeated doubling does not. */
#define ENV_VALUE_MAX (64 * 1024)

/* Sum of all values of one file after expansion: bounds what a file of many
 * small lines that each expand to ENV_VALUE_MAX can make us allocate. */
#define ENV_TOTAL_MAX (1024 * 1024)

/* Largest env file the agent reads, and dbswapctl writes.  Real ones are
 * a few KiB; this bounds memory and parse time when a file is replaced by
 * something that is not an env file.  Parsing takes time linear in the
 * text (names are found through a hash index, a default that is not used
 * is only checked), and the worst 256 KiB found parses in well under 50 ms
 * (tests/bench/env-bench.c): the parse runs on the agent's event loop. */
#define ENV_FILE_MAX (256 * 1024)

/* Deepest ${A:-${B:-...}} nesting: real files use one or two levels. */
#define ENV_NEST_MAX 8

/* The UTF-8 byte order mark, skipped at the start of a text. */
#define ENV_BOM "\xef\xbb\xbf"
#define ENV_BOM_LEN 3

/* Values that start with this are passed to the decode callback. */
#define ENV_ENC_PREFIX "enc:"

/* A ${NAME} whose value went into an entry's value (recorded when
 * env_parse_opts.refs is set): which name, where in the value its
 * expansion landed, and where the value came from.  Lets the agent tell
 * which names a value was built from, directly or through other names, and
 * which of them form a part of it (a conninfo's password). */
struct env_ref {
	char *name;
	/* The bytes [off, off + len) of the value came from this ${...}: its
	 * value, or its default when that was used (a name used inside the
	 * default has a ref of its own).  A value cut afterwards (trailing
	 * blanks of an unquoted value) may end before off + len.  When the
	 * whole value was replaced by the decode callback, every ref spans
	 * all of it. */
	size_t off, len;
	/* The entry of this file whose value was used, or ENV_REF_LOWER when
	 * the name was looked up below this file (or is defined nowhere). */
	size_t entry;
	/* For ENV_REF_LOWER: what the resolve callback said of its origin
	 * (-1 when there is no resolve callback, or the name is undefined). */
	int origin;
};
#define ENV_REF_LOWER ((size_t)-1)

/* One parsed definition. */
struct env_entry {
	char *name;
	char *value; /* secret */
	unsigned line; /* where the name is */
	/* Where the value's raw text is in the input, as byte offsets: from
	 * value_off (after '=' and the blanks after it; at the opening quote of
	 * a quoted value) to value_end (just past the last byte of the value:
	 * past the closing quote, or for an unquoted value before its trailing
	 * blanks and before a " # comment").  An empty unquoted value has
	 * value_off == value_end.  Replacing these bytes with other value text
	 * changes this definition and nothing else. */
	size_t value_off, value_end;
	unsigned end_line; /* line of value_end; > line only for a
			    * double-quoted value that spans lines */
	struct env_ref *refs; /* what was expanded into value, in the order
			       * the expansions ended; NULL unless asked */
	size_t n_refs;
};

/* Definitions in file order; duplicates are all kept, and the later one
 * wins in lookups. */
struct env_file {
	struct env_entry *entries;
	size_t n;
	/* Private to env.c: the index env_file_get() uses, so that a lookup
	 * costs the same among 30,000 definitions as among 3.  An
	 * open-addressing table of n_slots (a power of two, more than twice
	 * n) entry numbers + 1, 0 for a free slot; each name's slot holds
	 * its last definition.  key seeds the hash of names. */
	size_t *slots;
	size_t n_slots;
	uint64_t key[2];
};

/* Looks up a variable defined in a lower layer (the process environment and
 * earlier files); returns NULL when it is undefined.  The result need only
 * stay valid until the next call. */
typedef const char *env_lookup_fn(const char *name, void *data);

struct env_error {
	unsigned line, column; /* 1-based; column in bytes */
	char message[512];     /* never contains value text */
};

/* Longest message a resolve callback can leave, NUL included. */
#define ENV_RESOLVE_MSG_MAX 480

/* Looks up a variable defined below the file, as env_lookup_fn, but may
 * refuse: returns 0 with *value (NULL: undefined) and *origin (recorded in
 * env_ref.origin), or a negative errno with a message in msg (msglen
 * bytes, at most ENV_RESOLVE_MSG_MAX, never a secret), which rejects the
 * whole file with that message at the line and column of the ${. */
typedef int env_resolve_fn(const char *name, const char **value, int *origin,
			   char *msg, size_t msglen, void *data);

/* Longest reason a decode callback can leave in msg, NUL included: leaves
 * room in env_error.message for the variable name in front of it. */
#define ENV_DECODE_MSG_MAX 400

/* Called for each definition whose value, after expansion, starts with
 * ENV_ENC_PREFIX; name and value are NUL-terminated.  Returns 0 with *out
 * set to the replacement value (malloc'ed and NUL-terminated; the parser
 * takes it over and wipes it when it frees it), or a negative errno with a
 * reason in msg (msglen bytes, at most ENV_DECODE_MSG_MAX; never any secret
 * in it).  On failure *out is ignored: nothing is handed over.  Called on
 * the parsing thread, synchronously, in file order. */
typedef int env_decode_fn(const char *name, const char *value, char **out, char *msg,
			  size_t msglen, void *data);

/* Callbacks for env_parse_with(); any of them may be NULL.  data is passed
 * to both. */
struct env_parse_opts {
	env_lookup_fn *lookup; /* NULL: nothing is defined below this file */
	env_resolve_fn *resolve; /* used instead of lookup when set */
	env_decode_fn *decode; /* NULL: "enc:" values are kept as they are */
	void *data;
	bool refs;             /* record env_entry.refs */
};

/* Parses len bytes of text; text may be NULL when len is 0.  lookup may be
 * NULL (nothing is defined below this file); err may be NULL.
 * Returns 0 and fills *out, which the caller must env_file_fini().
 * Returns -EINVAL on a syntax error and fills *err, or -ENOMEM; either way
 * *out is left empty and needs no fini. */
int env_parse(const char *text, size_t len, env_lookup_fn *lookup, void *data,
	      struct env_file *out, struct env_error *err);

/* env_parse() with a decode callback; opts may be NULL (no callbacks).
 * A decode failure rejects the whole file with -EINVAL, err at the line and
 * column where the value starts and message "NAME: <reason from msg>" (a
 * long name is cut short); -ENOMEM from the callback is returned as
 * -ENOMEM.  A decoded value longer than ENV_VALUE_MAX is an error too, and
 * decoded lengths are what count towards ENV_TOTAL_MAX. */
int env_parse_with(const char *text, size_t len, const struct env_parse_opts *opts,
		   struct env_file *out, struct env_error *err);

/* Frees everything, wiping values first, and leaves *f empty. */
void env_file_fini(struct env_file *f);

/* Returns the value of the last definition of name, or NULL.  Takes the
 * same time however many definitions f has (a hash index). */
const char *env_file_get(const struct env_file *f, const char *name);

/* The index in f->entries of the last definition of name, or
 * ENV_REF_LOWER when f defines none. */
size_t env_file_index(const struct env_file *f, const char *name);

#endif

/*
 * What of a libpq connection string is secret, decided here and only
 * here, for every place a conninfo or text about it is shown: logs,
 * status, dbswapctl output (mask_conninfo()), and libpq's and the
 * server's messages about it (mask_secrets(), which common/pqerr.c's
 * pqerr_scrub() removes).
 *
 *   postgresql://app:s3cret@db/x?sslpassword=k  ->
 *   postgresql://app:****@db/x?sslpassword=****
 *   host=db password='s e c' user=app           ->
 *   host=db password=**** user=app
 *
 * Safe for any bytes.  A value that libpq's PQconninfoParse() refuses (a
 * bare or half-written password, a JDBC URL, a typo'd scheme, an unknown
 * keyword, an unterminated quote) comes out as "****" whole, its length
 * not shown.  In a value libpq accepts, every span libpq or a human could
 * read as a password is masked: in a URI from the first ':' of the user
 * info to the last '@' (a password's raw '@', '/', '?' make the two
 * readings differ), a port of the hosts, with or without user info,
 * that is not 1 to 65535 written plainly, and its host with it
 * ("postgresql://app:pw/db": libpq reads pw as the port;
 * "app:pw@db:${DB_PASSWORD}"; "app@pw:db"), the password
 * and sslpassword query parameters (keys percent-encoded too); in
 * key=value form the password and sslpassword values, quoted or not (and
 * libpq 18's oauth_client_secret, scram_client_key, scram_server_key
 * wherever a password may be).  Wherever written, a setting the agent
 * refuses (agent/connplan.c) is masked, by the same rule or a stricter
 * one: a port as above, a hostaddr element that inet_pton() does not
 * parse as an IPv4 or IPv6 address (a hex password is made of the
 * characters of one), a timeout or keepalive setting that is not a
 * whole number within int (no leading zeros), an sslmode and the like
 * that is not one of libpq's keywords.  A dbname that is a connection string of
 * its own, holding '=' or "://" once unquoted or percent-decoded, is
 * masked whole in key=value form, in the URI path and as a dbname query
 * parameter: libpq expands it when a program passes it with
 * expand_dbname and takes its password (the agent refuses such a value,
 * connplan.h).  A password of MASK_SECRET_MIN (4) bytes or more that
 * libpq parsed, from the value or from such a dbname (a few levels
 * down), that would still be in the output masks the value whole.  Not
 * protected: a password that is a valid setting, e.g. a number from 1 to
 * 65535 written as a URI without "@host" ("postgresql://app:1234/db"
 * reads as host app, port 1234), or a password put into a host name.
 *
 * The secrets of a value (mask_secrets()) are what that rule masks:
 * each span replaced by "****", as written and as libpq reads it
 * (percent-decoded, unquoted); the values of the secret settings libpq
 * parsed, from the value and from a dbname that is a connection string,
 * with that dbname's own secrets; and, for a value masked whole, the
 * value itself and each of its values of MASK_SECRET_MIN bytes or more.  A message that quotes any part
 * of one, or shows one whole, shows a secret.
 *
 * Thread-safe, does not block (no file, no environment is read).
 */
#ifndef DBSWAP_MASK_H
#define DBSWAP_MASK_H

#include <stdbool.h>
#include <stddef.h>

/* Returns a newly allocated masked copy, or NULL when out of memory.
 * NULL in gives "(none)" out. */
char *mask_conninfo(const char *conninfo);

/* What of a conninfo must never be shown, by the rule above: for
 * common/pqerr.c's pqerr_scrub(). */
struct mask_secrets {
	char **s;    /* n distinct strings, none empty, erased when freed */
	size_t n;
	bool parsed; /* libpq's PQconninfoParse() takes the value */
};

/* Fills ms with the secrets of conninfo (NULL: none), longest first.
 * Returns 0, or -ENOMEM and then leaves nothing to free. */
int mask_secrets(const char *conninfo, struct mask_secrets *ms);

/* Appends a copy of s (NULL or empty: nothing) to ms: text of the
 * caller's that must not be shown either.  Returns 0 or -ENOMEM. */
int mask_secrets_add(struct mask_secrets *ms, const char *s);

/* Erases and frees the strings; ms is empty after. */
void mask_secrets_free(struct mask_secrets *ms);

#endif

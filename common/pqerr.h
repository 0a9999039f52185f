/*
 * libpq's error messages, made fit for one log or status line.
 *
 * Connections are opened with PQERRORS_VERBOSE so that a failure carries
 * its SQLSTATE ("FATAL:  28P01: password authentication failed ..."),
 * which tells an authentication failure from an outage; the verbose form
 * spans lines and ends in a LOCATION line that means nothing to a user.
 */
#ifndef DBSWAP_PQERR_H
#define DBSWAP_PQERR_H

#include <stdbool.h>
#include <stddef.h>

/* Writes raw as one line to out: LOCATION lines dropped, the others joined
 * with "; ", runs of spaces collapsed.  Fills sqlstate with the first
 * SQLSTATE found ("" when none). */
void pqerr_line(const char *raw, char *out, size_t size, char sqlstate[6]);

/* Whether the server refused the credentials (28P01, 28000): retrying the
 * same value can lock the role out. */
bool pqerr_is_auth(const char *sqlstate);

#endif

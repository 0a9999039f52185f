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

/* What of a conninfo must never be shown in an error: its password, its
 * sslpassword and the password region of a URI's user info (after the
 * first ':' that follows "://", up to the last '@': what a human means,
 * where libpq may read less).  Each is NULL when absent. */
#define PQERR_SECRETS 3

/* Fills secrets[PQERR_SECRETS] from conninfo (strings to free with
 * free_secret()).  Returns false when libpq cannot parse it (or out of
 * memory), and then leaves nothing to free. */
bool pqerr_secrets(const char *conninfo, char *secrets[PQERR_SECRETS]);

/* Writes text to out with every double-quoted token that overlaps one of
 * the n secrets, and every bare occurrence of one, replaced by ****.
 * libpq quotes setting values in its messages, and a mis-parsed URI can
 * put part of a password into a host or port.  Scrub before anything
 * cuts the text: a secret cut in two is no longer found.  Output cut
 * short by size ends between whole replacements, never inside a secret. */
void pqerr_scrub(const char *text, char *out, size_t size,
		 char *const *secrets, size_t n);

#endif

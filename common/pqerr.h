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

/* Writes text to out with every double-quoted token that overlaps one of
 * the n secrets (NULL or empty ones skipped), and every bare occurrence
 * of one, replaced by ****.  What of a conninfo is secret is
 * common/mask.c's to say: take the secrets from mask_secrets(), with the
 * caller's own added (a password it made, a host it may not name).
 * libpq quotes setting values in its messages, and a mis-parsed URI can
 * put part of a password into a host or port.  Scrub before anything
 * cuts the text: a secret cut in two is no longer found.  Output cut
 * short by size ends between whole replacements, never inside a secret. */
void pqerr_scrub(const char *text, char *out, size_t size,
		 char *const *secrets, size_t n);

#endif

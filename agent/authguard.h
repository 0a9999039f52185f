/*
 * What libpq reads from a server before it is logged in, vetted.
 *
 * libpq 15 answers a server's AuthenticationCleartextPassword request
 * with the password, whatever the value says: it has no require_auth
 * (libpq 16 has), and no hook on its reads.  A server, or whoever took
 * its address (a local user on a port the database left free), would get
 * the password in the clear.  Looking at the socket before libpq reads it
 * is not enough: bytes that arrive between the look and libpq's read go
 * to libpq unseen, and libpq 15 answers every request in its buffer in
 * one step (an AuthenticationSASL and, right behind it, a cleartext
 * request get the password).
 *
 * So the agent provides recv() itself (dbswapd exports it: see
 * dbswapd.dyn), and libpq's reads come here.  For a connection under
 * watch that is neither TLS nor GSSAPI encrypted (nothing in a tunnel can
 * be seen, nor needs to be when the server was verified), a read takes
 * from the socket only bytes that were looked at first, and stops short
 * of anything not yet vetted:
 *   - the one-byte answer to libpq's TLS or GSSAPI request, alone: what
 *     a server sends with it stays on the socket, to be read (and vetted)
 *     as messages;
 *   - then whole messages, or the rest of one whose start was vetted; a
 *     message's first bytes are taken only once its type and length are
 *     here, and an authentication request only whole, and only when its
 *     length is what libpq 15 will read for its code (libpq reads a
 *     request by its code and goes on from where it stopped: a length
 *     that disagrees would put libpq inside what the guard takes for the
 *     next message).
 * A cleartext request refuses the connection: the read fails (libpq
 * reports a closed connection and sends nothing more) and the guard
 * remembers why, for the probe to say.  When only part of a message's
 * start is here the read fails with EAGAIN and authguard_waiting() says
 * so: the loop is level-triggered, so the probe looks again on a timer.
 *
 * Every other recv() of the process goes straight to recvfrom().  Only
 * the loop's thread may use the guard.
 */
#ifndef DBSWAP_AGENT_AUTHGUARD_H
#define DBSWAP_AGENT_AUTHGUARD_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct authguard;

/* Watches conn's reads from now until authguard_forget().  NULL when out
 * of memory. */
struct authguard *authguard_watch(PGconn *conn);
void authguard_forget(struct authguard *g);

#define AUTHGUARD_CLEARTEXT "asked for the password in cleartext"
#define AUTHGUARD_MALFORMED "sent a malformed message"

/* Why the guard refused the connection (AUTHGUARD_CLEARTEXT, "sent a
 * malformed message"), words to follow "the server at HOST", or NULL. */
const char *authguard_refused(const struct authguard *g);

/* Whether the server closed the connection (or reset it) before sending
 * a byte. */
bool authguard_closed_early(const struct authguard *g);

/* Whether the last read stopped at a message only partly here. */
bool authguard_waiting(const struct authguard *g);

/* The vetting itself, on the n bytes at buf that are on the socket now,
 * where *left bytes of a message vetted before are still to come: how
 * many libpq may take (the rest of that message, whole messages, the
 * start of one whose header was vetted), and then *left for the next
 * call.  0 and *refused set when a message must not be answered.  Seen
 * by tests/fuzz/fuzz-authguard.c. */
size_t authguard_vet(uint64_t *left, const unsigned char *buf, size_t n,
		     const char **refused);

/* Whether libpq's recv() calls come here: false when the binary was
 * linked without exporting recv (then nothing is vetted). */
bool authguard_active(void);

#endif

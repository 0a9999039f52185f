/*
 * Host name lookups on the agent's event loop, with c-ares: the sockets
 * c-ares opens are watched by the loop and its retransmissions run off a
 * loop timer, so a dead or slow DNS server never stalls the agent the way
 * glibc's getaddrinfo() (which libpq calls) would.
 *
 * One resolve looks up a few names at once, each for A and AAAA records,
 * /etc/hosts first, as /etc/resolv.conf and /etc/nsswitch.conf say (read
 * by c-ares when the resolve starts, so a changed resolv.conf counts from
 * the next one).  NSS modules (mDNS, LDAP, systemd-resolved's nss-resolve,
 * nss-myhostname) are not consulted; systemd-resolved is still reached
 * through its stub at 127.0.0.53 when resolv.conf names it.
 *
 * It has no deadline of its own: the caller bounds it (the probe's
 * timeout) and frees it, which stops everything at once.
 */
#ifndef DBSWAP_AGENT_RESOLVE_H
#define DBSWAP_AGENT_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>

struct loop;
struct resolve;

/* Called once per name, with the index of the name in the request, when
 * its lookup has finished (found or not); never before resolve_start()
 * returns, never after resolve_free().  The callback may free the resolve
 * (and then hears no more of it). */
typedef void resolve_fn(struct resolve *res, size_t index, void *data);

struct resolve_opts {
	const char *const *names; /* looked up in parallel */
	size_t n_names;
	size_t max_addrs;         /* keep at most this many per name */
	/* "ADDR:PORT,..." to ask instead of resolv.conf's servers (the unit
	 * test's fake DNS server), or NULL */
	const char *servers;
};

/* Starts looking up every name.  Returns 0 with *out set, or a negative
 * errno (-ENOMEM, -EIO when c-ares cannot start: no resolv.conf it can
 * use, a bad servers string).  The names are copied. */
int resolve_start(struct loop *loop, const struct resolve_opts *o,
		  resolve_fn *fn, void *data, struct resolve **out);

/* After the callback for index: the numeric addresses found, in the
 * order to try them (RFC 6724, as getaddrinfo() sorts), at most
 * max_addrs, and their count in *n.  NULL when the lookup failed; *error
 * then says why in c-ares's words ("Domain name not found"). */
const char *const *resolve_addrs(const struct resolve *res, size_t index,
				 size_t *n, const char **error);

/* Whether the lookup of index is still under way. */
bool resolve_pending(const struct resolve *res, size_t index);

/* Stops every lookup: no callback later, every socket closed and out of
 * the loop, the timer gone.  NULL is fine.  Safe from inside the
 * callback. */
void resolve_free(struct resolve *res);

#endif

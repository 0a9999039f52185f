/*
 * A connection plan: what libpq would do with a conninfo, worked out
 * ahead, so that libpq does nothing that blocks the agent's loop.
 *
 * libpq resolves host names with a blocking getaddrinfo() inside
 * PQconnectStart*() and PQconnectPoll(); given hostaddr next to host it
 * resolves nothing.  So the plan parses the conninfo (PQconninfoParse(),
 * never libpq's error text, which may quote a password), takes its hosts
 * with the agent's PGHOST, PGHOSTADDR and PGPORT as defaults the way libpq
 * would, and says which hosts need a lookup.  Once the caller has looked
 * them up (resolve.h), connplan_params() gives keyword arrays for
 * PQconnectStartParams(..., expand_dbname = 0) in which each address is a
 * host entry of its own: host repeated (TLS verification, the passfile
 * and messages use it), hostaddr one address, port repeated, in the order
 * libpq would have tried them.  Everything else of the value is passed as
 * written, so target_session_attrs, sslmode and the rest are unchanged.
 *
 * Refused, with an error in the plan's own words, which quote nothing of
 * the value (a mistyped value can put a password anywhere):
 * - a URI whose user info libpq and a human read differently (a raw '@'
 *   or '/' in a password: libpq takes its tail for the host or the
 *   database, and its messages quote them);
 * - settings libpq would refuse only once it connects, with a message
 *   quoting them: ports that are not numbers from 1 to 65535, integer
 *   settings that are not integers, sslmode, gssencmode, channel_binding,
 *   target_session_attrs, ssl_min/max_protocol_version outside their
 *   values, a hostaddr that is not numeric;
 * - more than CONNPLAN_HOSTS_MAX hosts;
 * - host, hostaddr and port lists of different lengths (libpq's rule);
 * - a dbname that is a connection string of its own (it holds '=' or
 *   "://"): libpq expands it when a program passes it with
 *   expand_dbname, and the program would connect elsewhere than the agent
 *   checked; a server quotes it, password and all, in its errors;
 * - a connection service (service=, or PGSERVICE in the agent's
 *   environment): libpq would read the service file (or LDAP, which
 *   Debian's libpq supports) and resolve the hosts it names inside the
 *   agent's loop;
 * - a file libpq or OpenSSL would open (sslcert, sslkey, sslrootcert,
 *   sslcrl, passfile: the value's, else the PG* variable's, else libpq's
 *   default under the home directory) that exists and is not a regular
 *   file: opening a FIFO blocks, and a device or socket is no certificate.
 *
 * GSSAPI: Debian's libpq is built with it, and its default
 * gssencmode=prefer makes libpq ask the Kerberos library for a ticket,
 * which talks to the KDC synchronously, whenever a credential cache
 * exists.  The plan puts gssencmode=disable before the value's own
 * keywords (unless PGGSSENCMODE is set): a value that asks for GSSAPI
 * still gets it, and then accepts that risk.
 *
 * Pure apart from getenv(), stat() and the home directory: unit-tested.
 * Error rule of util.h; messages never quote a password.
 */
#ifndef DBSWAP_AGENT_CONNPLAN_H
#define DBSWAP_AGENT_CONNPLAN_H

#include <stdbool.h>
#include <stddef.h>

/* Hosts in one value.  libpq tries them one after the other, each in its
 * turn of the probe's timeout (probe.h), and the agent looks each up: 16
 * covers any real primary-and-replicas list while keeping one probe's
 * work bounded. */
#define CONNPLAN_HOSTS_MAX 16
/* Addresses tried per host name (IPv4 and IPv6 of a few servers behind
 * one name); a DNS answer may hold hundreds, the rest are dropped. */
#define CONNPLAN_ADDRS_MAX 8

enum connplan_state {
	CONNPLAN_READY,  /* can be passed to libpq */
	CONNPLAN_LOOKUP, /* a host name still to look up */
	CONNPLAN_FAILED, /* its lookup failed, or every address of it was
			  * given up: left out */
};

struct connplan;

/* Parses conninfo into a plan.  Returns 0 with *out set; -EINVAL with a
 * one-line reason in err (no password in it) when the value is refused;
 * -ENOMEM. */
/* Looks the agent's own user name and home directory up, once, at start
 * (never in the loop: NSS may wait on the network).  Without it, values
 * without a user and a missing $HOME are left to libpq. */
void connplan_init(void);

int connplan_new(const char *conninfo, struct connplan **out, char *err,
		 size_t err_size);
/* Wipes the values (a password among them) and frees.  NULL is fine. */
void connplan_free(struct connplan *plan);

/* The number of host entries (1 for a value without any host). */
size_t connplan_hosts(const struct connplan *plan);
enum connplan_state connplan_state(const struct connplan *plan, size_t i);
/* Host entry i as written ("" when none): the name to look up when its
 * state is CONNPLAN_LOOKUP. */
const char *connplan_host(const struct connplan *plan, size_t i);

/* The lookup of entry i found addrs (numeric, in the order to try them):
 * the first CONNPLAN_ADDRS_MAX are kept, and the entry is ready.  Returns
 * 0, -EINVAL (not an entry to look up, or n == 0), -ENOMEM. */
int connplan_set_addrs(struct connplan *plan, size_t i,
		       const char *const *addrs, size_t n);
/* The lookup of entry i failed: the entry is left out. */
void connplan_fail(struct connplan *plan, size_t i);

/* How messages name host entry i: "\"db.example\"" (quotes included)
 * when it may be named, else "host 2 of 3" ("the default host" for an
 * entry without one).  A host may be named when it is a DNS name, an IP
 * literal or a socket path of plain characters, and holds no password of
 * the value nor is held by one (4 bytes or more).  Values whose hosts
 * could be a password's tail (a URI with a raw '@' or '/' in its user
 * info) are refused by connplan_new(), so a nameable host is the host
 * the value's writer meant.  Returns buf. */
const char *connplan_label(const struct connplan *plan, size_t i, char *buf,
			   size_t size);
/* The libpq keyword that a libpq message about the value's settings is
 * about ("invalid integer value \"..\" for connection option \"port\"",
 * "invalid sslmode value: ..."), for a message of the agent's own that
 * names the setting and quotes nothing; NULL when none is found. */
const char *connplan_keyword_in(const struct connplan *plan,
				const char *text);
/* Whether connplan_label() names entry i by its host. */
bool connplan_nameable(const struct connplan *plan, size_t i);

/* The addresses of entry i that libpq is given, those given up included:
 * as many as its lookup found, or 1 when it needed none; 0 while it is
 * being looked up and when it failed. */
size_t connplan_addrs(const struct connplan *plan, size_t i);

/* Gives up the addresses of entry i before address addr (libpq has tried
 * them): connplan_params() leaves them out from now on, and the entry
 * fails when none is left. */
void connplan_skip(struct connplan *plan, size_t i, size_t addr);

/* Which address libpq is trying, among those connplan_params() gives for
 * the entries [*entry, to): host, hostaddr and port are what PQhost(),
 * PQhostaddr() and PQport() report.  Looks from address *addr of entry
 * *entry on (libpq goes forward) and sets both.  A plan's empty host or
 * port stands for libpq's default and matches any; addresses match as
 * addresses ("::1" is "0::1").  Returns 0, or -ENOENT when nothing from
 * there on matches. */
int connplan_locate(const struct connplan *plan, size_t to, const char *host,
		    const char *hostaddr, const char *port, size_t *entry,
		    size_t *addr);

/* Keyword arrays for PQconnectStartParams(keys, vals, 0) that try the
 * entries [from, to) that are ready, skipping failed ones and given up
 * addresses, then extra
 * keys (NULL-terminated, may be NULL), which win over the value's.
 * Every entry in the range must be ready or failed.  The arrays belong to
 * the plan and hold until the next call or connplan_free().  Returns 0,
 * -ENOENT when no entry of the range is ready, -EINVAL, -ENOMEM. */
int connplan_params(struct connplan *plan, size_t from, size_t to,
		    const char *const *extra_keys,
		    const char *const *extra_vals, const char *const **keys,
		    const char *const **vals);

/* libpq names a server it was given by hostaddr by its address alone
 * ("connection to server at \"192.0.2.1\", port 5432 failed: ...").
 * Copies msg to out with each such address that the lookup of exactly one
 * host entry of [from, to) found (and no other entry of the range uses)
 * shown as libpq shows a looked-up host: "\"db.example\" (192.0.2.1)".
 * Cut to fit size. */
void connplan_name_hosts(const struct connplan *plan, size_t from,
			 size_t to, const char *msg, char *out, size_t size);

#endif

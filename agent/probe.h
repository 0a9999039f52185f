/*
 * A probe checks one server for real: parse the conninfo, connect, run
 * PROBE_QUERY, then disconnect or hand the connection over (the health
 * monitor keeps it and probes it again later).  It runs inside the agent's
 * event loop with libpq's non-blocking API, bounded by a deadline, so a
 * slow, dead or hung server never freezes the agent.  Every libpq
 * connection the agent opens starts here.
 *
 * Nothing in it blocks, name resolution included: libpq would call a
 * blocking getaddrinfo() for each host name, so the probe looks the names
 * up itself on the loop (resolve.h, c-ares) and gives libpq host plus
 * hostaddr for every address (connplan.h), in libpq's order; TLS
 * verification and the passfile still see the name.  The deadline covers
 * the lookups.  A value is refused before anything starts when libpq
 * would block on it in other ways: more than CONNPLAN_HOSTS_MAX hosts, a
 * connection service file, a FIFO or other special file as a certificate,
 * key, CRL or passfile.  GSSAPI encryption is off unless the value (or
 * PGGSSENCMODE) asks for it: it makes libpq talk to the KDC synchronously.
 * Names are looked up in /etc/hosts and DNS as resolv.conf says, not
 * through NSS modules.
 *
 * Hosts take turns.  libpq tries a value's hosts one after the other, and
 * its connect_timeout gives each address a time of its own, but only in
 * its blocking calls: through PQconnectPoll() a server that never answers
 * (or, here, a lookup that never ends) would hold the probe to its
 * deadline, and the hosts after it would never be tried.  So a host's
 * turn begins when the probe waits for its lookup or libpq starts on its
 * first address, and lasts the time left divided by the hosts not yet
 * tried, itself included (a host whose lookup failed counts for none);
 * within it each address of the host has the turn's time left divided by
 * the host's addresses not yet tried.  No turn is shorter than
 * PROBE_TURN_MIN_MS unless less is left, none goes past the deadline.  A
 * lookup, address or host whose turn ends is given up ("no answer within
 * N ms while resolving host \"X\"", "... while connecting to \"X\"
 * (ADDR), port P") and the probe goes on with the next; the reasons lead
 * the final error.  So a lone host, and the last one, has all the time
 * left, as before; of many hung hosts the last may not be reached.  Once
 * connected, the query has what is left of the deadline: libpq would not
 * try another host then either.
 *
 * What the probe says never quotes the value (issue 15).  libpq's own
 * messages about a value's settings quote them ("invalid integer value
 * \"<text>\" for connection option \"port\""), and a mistyped value
 * puts a password where libpq quotes it: connplan.h refuses such values
 * first in words of its own, and any line of libpq's that is not about a
 * server it tried is replaced by "libpq refused the value's X setting".
 * Hosts are named only as connplan_label() allows ("host 2 of 3"
 * otherwise); servers' own errors after connecting stay, scrubbed of the
 * value's passwords.
 *
 * Cleartext passwords.  libpq 15 answers a server's
 * AuthenticationCleartextPassword with the password (it has no
 * require_auth), so a server, or whoever took its address, would get it
 * in the clear.  Until a connection is up, what libpq reads on it passes
 * a guard (authguard.h) that lets libpq read only bytes it looked at
 * first: a cleartext request on a connection that is neither TLS nor
 * GSSAPI encrypted closes it unanswered, and the probe fails with
 * "the server at HOST, port P asked for the password in cleartext:
 * refused".  MD5 and SCRAM are answered as usual: neither sends the
 * password, though what they send lets a fake server try guesses
 * offline (so do SCRAM's, at an iteration count the server picks), which
 * a random password resists.  Over TLS the request cannot be seen:
 * libpq answers it inside the tunnel, which is safe only when the server
 * was authenticated, so use sslmode=verify-full (or verify-ca) where a
 * server may ask for cleartext; with sslmode=require or prefer whoever
 * holds the address can ask.
 */
#ifndef DBSWAP_AGENT_PROBE_H
#define DBSWAP_AGENT_PROBE_H

#include <stdbool.h>
#include <libpq-fe.h>

struct loop;
struct probe;

/* Logins with one value that the server may refuse as an authentication
 * failure before the agent stops trying it (a new value's validation, a
 * monitor's reconnects: target.h, health.h): a role with a lock-out
 * policy (pam_faillock, an LDAP server's) locks after a few failures, and
 * what the agent is sure to fail must not be what locks it. */
#define PROBE_AUTH_RETRIES 6

/* The shortest turn of a host or an address (see above), unless the
 * deadline comes first: a server that is only slow (a TLS handshake and a
 * password exchange over a long link, a loaded server starting a backend)
 * must not be given up for one that may not be there. */
#define PROBE_TURN_MIN_MS 1000

/* The query every probe runs, in one round trip: whether the server is a
 * standby, and which database and timeline it is (issue 16: a promoted
 * replica and its old primary share the system identifier, and the one
 * on the older timeline must not be written to).  The timeline is the
 * live one for a server that writes (from the name of its current WAL
 * file: the checkpoint's moves only with the end-of-recovery checkpoint,
 * which promotion does not wait for, minutes later by default), and the
 * last restartpoint's for a standby (which writes no WAL; both WAL
 * functions refuse in recovery).  The pg_control_* functions are
 * executable by PUBLIC by default; where a role may not run them
 * (SQLSTATE 42501, or 42883 where they do not exist) the probe runs
 * PROBE_QUERY_BASIC on the same connection instead, and the identity is
 * unknown.  The postmaster's start time tells one server reached under
 * two names (the same identifier and start) from two servers. */
#define PROBE_QUERY                                                        \
	"SELECT q.r, s.system_identifier, CASE WHEN q.r "                  \
	"THEN c.timeline_id ELSE ('x' || substr(pg_walfile_name("          \
	"pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "                \
	"(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8 " \
	"FROM (SELECT pg_is_in_recovery() AS r) q, pg_control_system() s, " \
	"pg_control_checkpoint() c"
#define PROBE_QUERY_BASIC "SELECT pg_is_in_recovery()"

struct probe_opts {
	const char *conninfo; /* connect with this, or */
	PGconn *conn;         /* run the query on this open connection (the
			       * probe takes it over) */
	int timeout_ms;       /* bounds the whole probe */
	bool keep;            /* on success, hand the connection over */
	bool basic;           /* with conn: PROBE_QUERY_BASIC only (a
			       * heartbeat: the identity is not read) */
	int keepalive_ms;     /* > 0: TCP keepalives and tcp_user_timeout
			       * sized to this, for a long-lived connection */
	const char *dns_servers; /* NULL, or resolve_opts.servers: the unit
				  * test's fake DNS server */
};

struct probe_result {
	bool ok;
	bool auth_failed;     /* SQLSTATE 28P01/28000: do not hammer */
	bool in_recovery;     /* the server is a standby (when ok) */
	bool identified;      /* ok, and the two below are known */
	unsigned long long system_id; /* pg_control_system() */
	unsigned timeline;    /* see PROBE_QUERY */
	long long server_start_us; /* pg_postmaster_start_time(), Unix us */
	char sqlstate[6];     /* "" when unknown */
	bool refused;         /* a connection was refused: nothing listens */
	bool closed_early;    /* one was closed before the server said a word */
	bool timed_out;       /* the deadline passed */
	const char *error;    /* one line, no secret; NULL when ok */
	long long elapsed_us; /* from start to result */
	PGconn *conn;         /* with keep and ok: the callback owns it */
};

/* Called exactly once per started probe, unless it was cancelled.  The
 * probe is freed after the callback returns. */
typedef void probe_done_fn(const struct probe_result *res, void *data);

/* Starts a probe.  Returns 0 with *out set, or a negative errno (o->conn
 * is then closed).  A conninfo that does not parse or is refused (see
 * above), or a failure that libpq reports at once, is reported through fn
 * before this returns (with *out NULL). */
int probe_start(struct loop *loop, const struct probe_opts *o,
		probe_done_fn *fn, void *data, struct probe **out);

/* Abandons a probe: no callback, connection closed. */
void probe_cancel(struct probe *probe);

#endif

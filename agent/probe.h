/*
 * A probe validates one conninfo for real: parse it, connect, run
 * SELECT 1, disconnect.  It runs inside the agent's event loop with
 * libpq's non-blocking API, bounded by a deadline, so a slow or dead server
 * never freezes the agent.
 *
 * One caveat of libpq: PQconnectStart resolves host names with a blocking
 * getaddrinfo().  Use IP addresses or local names (/etc/hosts) for servers
 * whose DNS may hang.
 */
#ifndef DBSWAP_AGENT_PROBE_H
#define DBSWAP_AGENT_PROBE_H

#include <stdbool.h>

struct loop;
struct probe;

struct probe_result {
	bool ok;
	bool auth_failed;     /* SQLSTATE 28P01/28000: do not hammer */
	char sqlstate[6];     /* "" when unknown */
	const char *error;    /* one line, no secret; NULL when ok */
	long long elapsed_us; /* from start to result */
};

/* Called exactly once per started probe, unless it was cancelled.  The
 * probe is freed after the callback returns. */
typedef void probe_done_fn(const struct probe_result *res, void *data);

/* Starts validating conninfo within timeout_ms.  Returns 0 with *out set,
 * or a negative errno.  A conninfo that does not even parse is reported
 * through fn before this returns (with *out NULL). */
int probe_start(struct loop *loop, const char *conninfo, int timeout_ms,
		probe_done_fn *fn, void *data, struct probe **out);

/* Abandons a probe: no callback, connection closed. */
void probe_cancel(struct probe *probe);

#endif

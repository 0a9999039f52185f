/*
 * What the agent counts, for monitoring: the counters and histograms the
 * modules keep as things happen (counters.h), and gauges read from the
 * agent's state when asked, all rendered in the Prometheus text
 * exposition format (version 0.0.4).  The same text goes out two ways:
 *
 * - over HTTP, at /metrics on a loopback address given by --metrics,
 *   beside /health (a JSON summary per target, 200 when every target has a
 *   validated value and a server in use that its health checks do not
 *   find down or refusing the credentials, 503 otherwise);
 * - over the agent's socket, as the reply to a "metrics" request
 *   (dbswapctl metrics, for node_exporter's textfile collector).
 *
 * Nothing secret is ever rendered: target names, server roles, reasons,
 * counts and times; never a value, a host or a user.  The HTTP endpoint
 * has no peer credentials, so it shows every target (names are not
 * secrets: they are on the agent's command line, which every local user
 * can read in /proc); the socket shows a peer the targets it may follow,
 * as status does.
 *
 * The HTTP server is libmicrohttpd in external-select mode, driven by the
 * agent's own loop: its epoll fd is a loop source, its timeout a loop
 * timer, and MHD_run() never waits.  Responses are built whole in memory
 * when a request comes, so a request costs the loop one render and
 * nothing waits on a slow reader.  Connections, request size and time are
 * bounded (METRICS_HTTP_*).
 *
 * One agent per process: the counters are this module's globals.  Runs on
 * the loop's thread only.  Errors: negative errno.
 */
#ifndef DBSWAP_AGENT_METRICS_H
#define DBSWAP_AGENT_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;
struct loop;
struct target;

/* Connections the HTTP endpoint serves at once: a Prometheus and a
 * person with curl need two; one more waits in the backlog. */
#define METRICS_HTTP_CONNECTIONS_MAX 8
/* Memory per connection for the request line and headers (and the
 * response headers): a scrape sends a few hundred bytes; a longer
 * request is answered 431 and closed. */
#define METRICS_HTTP_REQUEST_MAX 8192
/* A connection that sends nothing for this long is closed (seconds). */
#define METRICS_HTTP_TIMEOUT_S 10

/* Which targets a reader may see; NULL: all. */
typedef bool metrics_visible_fn(const struct target *t, void *data);

/* The exposition text for a, in a malloc'd string (*len bytes, NUL
 * terminated).  Returns 0 or -ENOMEM. */
int metrics_render(struct agent *a, metrics_visible_fn *visible, void *data,
		   char **out, size_t *len);

/* The /health document: returns 1 when every target has a validated
 * value and a server in use that is neither down nor refusing the
 * credentials (suspect and recovering count as healthy; see
 * target_problem() in metrics.c), 0 when not, -ENOMEM. */
int metrics_health(struct agent *a, char **out, size_t *len);

/* The delays between attempts to listen on --metrics's address while
 * it cannot be bound (another process has the port): from a second,
 * doubling, to half a minute: a port freed soon is taken soon, and a
 * port held for good costs one bind attempt (and one debug line) every
 * 30 s. */
#define METRICS_HTTP_RETRY_MIN_MS 1000
#define METRICS_HTTP_RETRY_MAX_MS 30000

/* Parses ADDR (127.0.0.1:9187, [::1]:9187, localhost:9187) and starts
 * the HTTP endpoint on a's loop.  Only a loopback address is accepted:
 * the endpoint has no authentication.  An address that cannot be bound
 * (in use, say) does not stop the agent: the error is logged and binding
 * is retried on the loop (METRICS_HTTP_RETRY_*, never waiting), and
 * dbswap_metrics_listener_up says whether it listens.  Returns 0, or
 * -EINVAL for an address it refuses (logged), -ENOMEM. */
int metrics_http_start(struct agent *a, const char *addr);
/* Stops it (if started): open connections are closed, retries end. */
void metrics_http_stop(void);
/* Whether the endpoint was started and listens now. */
bool metrics_http_listening(void);

/* Whether addr is a loopback address with a port, as
 * metrics_http_start() wants; why says what is wrong. */
bool metrics_addr_ok(const char *addr, char *why, size_t whylen);

#endif

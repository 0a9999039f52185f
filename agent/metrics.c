/*
 * The Prometheus text format of the counters (counters.h) and the state, /health, and the HTTP endpoint
 * on the agent's loop; see metrics.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "agent.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "counters.h"
#include "failover.h"
#include "health.h"
#include "metrics.h"
#include "target.h"

/* The HTTP endpoint (--metrics), at the end of this file. */
struct metrics_http {
	struct agent *agent;
	struct sockaddr_storage ss;
	struct MHD_Daemon *daemon; /* NULL while not listening */
	struct loop_source *src;
	struct loop_timer *timer;
	struct loop_timer *retry; /* armed while not listening */
	int64_t retry_ms;	  /* the next retry's delay */
	unsigned attempts;	  /* failed in a row */
	int last_error;
	char addr[64];
};

static struct metrics_http *metrics_http;

/* Why t's subscribers have nothing that works, or NULL when they do: a
 * validated value, a server in use and, where that server is monitored
 * (failover), not known to refuse the value's credentials or to be down.
 * Suspect (failed checks, fewer than the threshold) and recovering
 * (passing checks again, not yet enough in a row) still count as working:
 * failover itself waits for the threshold, and a blip of one failed
 * check must not page anyone.  Unknown (not checked yet) counts too: the
 * value was validated against that server.  Fixed strings: no host, no
 * user (the health error names them). */
static const char *target_problem(const struct target *t)
{
	const struct health *h;

	if (!t->conninfo)
		return "no validated value";
	if (t->current == ROLE_NONE)
		return "no server available";
	h = t->src[t->current].health;
	if (h && h->state == HEALTH_REJECTED)
		return t->current == ROLE_PRIMARY
			       ? "credentials rejected by the primary"
			       : "credentials rejected by the secondary";
	if (h && h->state == HEALTH_DOWN)
		return t->current == ROLE_PRIMARY ? "the primary is down"
						  : "the secondary is down";
	return NULL;
}

/* rendering */

/* A label value as the text format wants it: backslash, double quote
 * and newline escaped. */
static void put_label(FILE *f, const char *name, const char *value)
{
	fprintf(f, "%s=\"", name);
	for (const char *p = value; *p; p++) {
		if (*p == '\\')
			fputs("\\\\", f);
		else if (*p == '"')
			fputs("\\\"", f);
		else if (*p == '\n')
			fputs("\\n", f);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void family(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{target="T"[,l2="v2"[,l3="v3"]]} value */
static void sample(FILE *f, const char *name, const char *target,
		   const char *l2, const char *v2, const char *l3,
		   const char *v3, double value)
{
	bool any = target || l2;

	fputs(name, f);
	if (any)
		fputc('{', f);
	if (target)
		put_label(f, "target", target);
	if (l2) {
		if (target)
			fputc(',', f);
		put_label(f, l2, v2);
	}
	if (l3) {
		fputc(',', f);
		put_label(f, l3, v3);
	}
	if (any)
		fputc('}', f);
	fprintf(f, " %.15g\n", value);
}

static void histogram_put(FILE *f, const char *name, const char *target,
			  const char *l2, const char *v2,
			  const struct histogram *h, const struct bounds *b)
{
	char bname[128], le[32];
	uint64_t cum = 0;

	snprintf(bname, sizeof(bname), "%s_bucket", name);
	for (size_t i = 0; i < b->n; i++) {
		cum += h->bucket[i];
		snprintf(le, sizeof(le), "%g", b->v[i]);
		sample(f, bname, target, l2 ? l2 : "le", l2 ? v2 : le,
		       l2 ? "le" : NULL, le, (double)cum);
	}
	sample(f, bname, target, l2 ? l2 : "le", l2 ? v2 : "+Inf",
	       l2 ? "le" : NULL, "+Inf", (double)h->count);
	snprintf(bname, sizeof(bname), "%s_sum", name);
	sample(f, bname, target, l2, v2, NULL, NULL, h->sum);
	snprintf(bname, sizeof(bname), "%s_count", name);
	sample(f, bname, target, l2, v2, NULL, NULL, (double)h->count);
}

struct view {
	struct agent *a;
	metrics_visible_fn *visible;
	void *data;
};

static bool shown(const struct view *v, const struct target *t)
{
	return !v->visible || v->visible(t, v->data);
}

/* One gauge per shown target. */
#define PER_TARGET(v, t, body)                                            \
	for (size_t i_ = 0; i_ < (v)->a->n_targets; i_++) {               \
		const struct target *t = (v)->a->targets[i_];             \
		if (shown((v), t)) {                                      \
			body;                                             \
		}                                                         \
	}

static void render_targets(FILE *f, const struct view *v)
{
	struct agent *a = v->a;

	family(f, "dbswap_target_generation", "gauge",
	       "Generation of the target's value last published (0: none yet).");
	PER_TARGET(v, t, sample(f, "dbswap_target_generation", t->name, NULL,
				NULL, NULL, NULL, (double)t->generation));
	family(f, "dbswap_target_available", "gauge",
	       "1 when the target has a validated value and a server in use "
	       "that is not down and does not refuse the credentials (as "
	       "/health's healthy).");
	PER_TARGET(v, t, sample(f, "dbswap_target_available", t->name, NULL,
				NULL, NULL, NULL, !target_problem(t)));
	family(f, "dbswap_target_server", "gauge",
	       "Which server the target's subscribers use: one series per "
	       "server (primary, secondary, none), 1 for the one in use, 0 "
	       "for the others.");
	/* Every role always: a switch moves the 1, no series vanishes. */
	PER_TARGET(v, t, {
		for (int r = 0; r <= ROLE_NONE; r++)
			sample(f, "dbswap_target_server", t->name, "server",
			       target_role_name((enum target_role)r), NULL,
			       NULL, (int)t->current == r);
	});
	family(f, "dbswap_target_standby", "gauge",
	       "1 when the server in use is in recovery (read-only).");
	PER_TARGET(v, t, sample(f, "dbswap_target_standby", t->name, NULL,
				NULL, NULL, NULL, target_standby(t)));
	family(f, "dbswap_target_last_publish_timestamp_seconds", "gauge",
	       "When the target's current generation was published (Unix "
	       "time; 0: none yet).");
	PER_TARGET(v, t, sample(f, "dbswap_target_last_publish_timestamp_"
				   "seconds", t->name, NULL, NULL, NULL, NULL,
				(double)(t->generation ? t->changed_wall : 0)));
	/* Each family's lines together, as the format wants. */
	static const char *const subs_names[3][2] = {
		{ "dbswap_target_subscribers",
		  "Clients subscribed to the target." },
		{ "dbswap_target_acked_subscribers",
		  "Subscribers that acked the target's current generation." },
		{ "dbswap_target_lagging_subscribers",
		  "Subscribers that have not acked the target's current "
		  "generation." },
	};
	for (int k = 0; k < 3; k++) {
		family(f, subs_names[k][0], "gauge", subs_names[k][1]);
		for (size_t i = 0; i < a->n_targets; i++) {
			const struct target *t = a->targets[i];
			unsigned subs, acked;

			if (!shown(v, t))
				continue;
			target_count(t, &subs, &acked);
			sample(f, subs_names[k][0], t->name, NULL, NULL, NULL,
			       NULL, k == 0 ? subs : k == 1 ? acked
						    : subs - acked);
		}
	}
	family(f, "dbswap_target_converged_generation", "gauge",
	       "Last generation every subscriber acked.");
	PER_TARGET(v, t, sample(f, "dbswap_target_converged_generation",
				t->name, NULL, NULL, NULL, NULL,
				(double)t->all_acked));
	for (int k = 0; k < 2; k++) {
		const char *name = k ? "dbswap_server_consecutive_failures"
				     : "dbswap_server_up";
		family(f, name, "gauge",
		       k ? "Failed health checks in a row."
			 : "1 when the server is up: its health checks pass; "
			   "0 while not checked yet, suspect (failed checks, "
			   "fewer than the threshold), down, recovering "
			   "(passing again, not yet enough in a row) or "
			   "rejecting the credentials (only servers "
			   "monitored for failover).");
		for (size_t i = 0; i < a->n_targets; i++) {
			const struct target *t = a->targets[i];
			if (!shown(v, t))
				continue;
			for (int r = 0; r < ROLE_COUNT; r++) {
				const struct health *h = t->src[r].health;
				if (h)
					sample(f, name, t->name, "server",
					       target_role_name(r), NULL, NULL,
					       k ? h->failures
						 : h->state == HEALTH_UP);
			}
		}
	}
}

/* One counter family's series of target t: label_a from each entry's a,
 * and label_b from its b when there is a label_b. */
static void series_put(FILE *f, const char *name, const struct target *t,
		       const char *label_a, const char *label_b,
		       const struct series_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		sample(f, name, t->name, label_a, l->s[i].a, label_b,
		       label_b ? l->s[i].b : NULL, (double)l->s[i].n);
}

static void render_counters(FILE *f, const struct view *v)
{
	family(f, "dbswap_validations_total", "counter",
	       "Validations of new values against the server, by server and "
	       "result (ok, rejected: credentials refused, failed).");
	PER_TARGET(v, t, series_put(f, "dbswap_validations_total", t,
				    "server", "result",
				    &counters_of(t->name)->validations));
	family(f, "dbswap_publishes_total", "counter",
	       "Generations published, by reason (rotation, failover, "
	       "failback, manual, unavailable, promoted, demoted, ...).");
	PER_TARGET(v, t, series_put(f, "dbswap_publishes_total", t, "reason",
				    NULL, &counters_of(t->name)->publishes));
	family(f, "dbswap_server_switches_total", "counter",
	       "Changes of the server in use, by reason (failover, failback, "
	       "manual, unavailable, ...: the publish's reason) and the "
	       "server switched to (primary, secondary, none).");
	PER_TARGET(v, t, series_put(f, "dbswap_server_switches_total", t,
				    "reason", "to", &counters_of(t->name)->switches));
	family(f, "dbswap_events_total", "counter",
	       "Events (--on-event), by name.");
	PER_TARGET(v, t, series_put(f, "dbswap_events_total", t, "event",
				    NULL, &counters_of(t->name)->events));
	family(f, "dbswap_convergence_seconds", "histogram",
	       "Time from a generation's publish to the last subscriber's "
	       "ack.");
	PER_TARGET(v, t, histogram_put(f, "dbswap_convergence_seconds",
				       t->name, NULL, NULL,
				       &counters_of(t->name)->converge,
				       &counters_converge_bounds));
	family(f, "dbswap_health_check_seconds", "histogram",
	       "Duration of the health checks that passed (failover "
	       "monitors).");
	PER_TARGET(v, t, {
		for (int r = 0; r < ROLE_COUNT; r++)
			if (t->src[r].health)
				histogram_put(f, "dbswap_health_check_seconds",
					      t->name, "server",
					      target_role_name(r),
					      &counters_of(t->name)->check[r],
					      &counters_check_bounds);
	});
}

int metrics_render(struct agent *a, metrics_visible_fn *visible, void *data,
		   char **out, size_t *len)
{
	struct view v = { a, visible, data };
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	if (!f)
		return -ENOMEM;
	family(f, "dbswap_build_info", "gauge",
	       "The agent's version, as a label; always 1.");
	sample(f, "dbswap_build_info", NULL, "version", DBSWAP_VERSION, NULL,
	       NULL, 1);
	family(f, "dbswap_start_time_seconds", "gauge",
	       "When the agent started (Unix time).");
	sample(f, "dbswap_start_time_seconds", NULL, NULL, NULL, NULL, NULL,
	       (double)(wall_s() - (now_ms() - a->started_ms) / 1000));
	family(f, "dbswap_clients", "gauge",
	       "Clients connected to the agent's socket.");
	sample(f, "dbswap_clients", NULL, NULL, NULL, NULL, NULL,
	       counters_clients_now());
	family(f, "dbswap_client_disconnects_total", "counter",
	       "Clients gone, by reason: closed (by the client), protocol, "
	       "slow (not reading), hello-timeout, idle, error; all but "
	       "closed were dropped by the agent.");
	for (size_t i = 0; i < counters_gone()->n; i++)
		sample(f, "dbswap_client_disconnects_total", NULL, "reason",
		       counters_gone()->s[i].a, NULL, NULL,
		       (double)counters_gone()->s[i].n);
	family(f, "dbswap_event_hooks_total", "counter",
	       "Runs of the --on-event hook, by result (ok, failed, killed: "
	       "over its time, spawn-failed, dropped: queue full).");
	for (size_t i = 0; i < counters_hooks()->n; i++)
		sample(f, "dbswap_event_hooks_total", NULL, "result",
		       counters_hooks()->s[i].a, NULL, NULL,
		       (double)counters_hooks()->s[i].n);
	family(f, "dbswap_metrics_listener_up", "gauge",
	       "1 when the --metrics HTTP endpoint listens, 0 while it cannot "
	       "(its address in use: retried); no sample without --metrics.");
	if (metrics_http)
		sample(f, "dbswap_metrics_listener_up", NULL, NULL, NULL, NULL,
		       NULL, metrics_http->daemon != NULL);
	render_targets(f, &v);
	render_counters(f, &v);
	if (fclose(f) != 0 || !buf) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* /health */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

int metrics_health(struct agent *a, char **out, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	bool all = true;

	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < a->n_targets; i++)
		all = all && !target_problem(a->targets[i]);
	fprintf(f, "{\"status\":\"%s\",\"targets\":{", all ? "ok" : "unavailable");
	for (size_t i = 0; i < a->n_targets; i++) {
		const struct target *t = a->targets[i];
		const struct health *w = failover_watched(t);
		const char *problem = target_problem(t);
		time_t at = (time_t)t->last_failover_wall;
		struct tm tm;
		char when[32];

		if (i)
			fputc(',', f);
		json_str(f, t->name);
		fprintf(f, ":{\"healthy\":%s,\"problem\":", problem ? "false"
								 : "true");
		if (problem)
			json_str(f, problem);
		else
			fputs("null", f);
		fprintf(f, ",\"generation\":%llu,"
			   "\"currentDatabase\":\"%s\",\"standby\":%s,"
			   "\"failoverEnabled\":%s,\"failoverAvailable\":%s,"
			   "\"failureCount\":%u,\"failovers\":%llu,",
			(unsigned long long)t->generation,
			target_role_name(t->current),
			target_standby(t) ? "true" : "false",
			failover_enabled(t) ? "true" : "false",
			failover_available(t) ? "true" : "false",
			w ? w->failures : 0,
			(unsigned long long)t->failovers);
		if (at) {
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ",
				 gmtime_r(&at, &tm));
			fprintf(f, "\"lastFailover\":\"%s\",\"lastFailoverEpoch\":"
				   "%lld,\"timeSinceFailover\":%lld}",
				when, (long long)at, (long long)(wall_s() - at));
		} else {
			fputs("\"lastFailover\":null,\"lastFailoverEpoch\":null,"
			      "\"timeSinceFailover\":null}", f);
		}
	}
	fputs("}}\n", f);
	if (fclose(f) != 0 || !buf) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*len = n;
	return all;
}

/* HTTP */


/* MHD's timeout (its connections' idle limit, work it has ready) as a
 * loop timer; called after every MHD_run(). */
static void http_rearm(struct metrics_http *h)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (MHD_get_timeout(h->daemon, &ms) == MHD_YES)
		loop_timer_arm_in(h->timer, ms > INT32_MAX ? INT32_MAX
							 : (int64_t)ms);
	else
		loop_timer_disarm(h->timer);
}

static unsigned http_connections(const struct metrics_http *h)
{
	const union MHD_DaemonInfo *i = MHD_get_daemon_info(
		h->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

	return i ? i->num_connections : 0;
}

/* MHD_run() never waits in this mode.  At its connection limit MHD takes
 * the listening socket out of its epoll set and puts it back at the start
 * of a later run: after a run that closed connections, one more, or the
 * clients waiting in the backlog would wait for the next timeout. */
static void http_run(struct metrics_http *h)
{
	unsigned before = http_connections(h);

	MHD_run(h->daemon);
	if (http_connections(h) < before)
		MHD_run(h->daemon);
	http_rearm(h);
}

static void http_ready(struct loop_source *src, uint32_t events, void *data)
{
	http_run(data);
}

static void http_timer(struct loop_timer *timer, void *data)
{
	http_run(data);
}

static enum MHD_Result http_send(struct MHD_Connection *conn,
				 unsigned status, const char *type,
				 char *body, size_t len)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, body,
						MHD_RESPMEM_MUST_FREE);
	enum MHD_Result r;

	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
				"no-store");
	r = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result http_text(struct MHD_Connection *conn,
				 unsigned status, const char *text)
{
	char *copy = strdup(text);

	if (!copy)
		return MHD_NO;
	return http_send(conn, status, "text/plain; charset=utf-8", copy,
			 strlen(copy));
}

static enum MHD_Result http_request(void *cls, struct MHD_Connection *conn,
				    const char *url, const char *method,
				    const char *version,
				    const char *upload_data,
				    size_t *upload_data_size, void **con_cls)
{
	struct metrics_http *h = cls;
	char *body = NULL;
	size_t len = 0;
	int r;

	/* Answered on the first call, with the headers: a body, which no
	 * GET has, is never read. */
	if (!streq(method, "GET") && !streq(method, "HEAD"))
		return http_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
				 "only GET and HEAD\n");
	if (streq(url, "/metrics")) {
		if (metrics_render(h->agent, NULL, NULL, &body, &len) < 0)
			return MHD_NO;
		return http_send(conn, MHD_HTTP_OK,
				 "text/plain; version=0.0.4; charset=utf-8",
				 body, len);
	}
	if (streq(url, "/health")) {
		r = metrics_health(h->agent, &body, &len);
		if (r < 0)
			return MHD_NO;
		return http_send(conn, r ? MHD_HTTP_OK
					 : MHD_HTTP_SERVICE_UNAVAILABLE,
				 "application/json", body, len);
	}
	if (streq(url, "/"))
		return http_text(conn, MHD_HTTP_OK,
				 "dbswapd: /metrics (Prometheus), /health "
				 "(JSON)\n");
	return http_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

static void http_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("metrics: %s", line);
}

/* ADDR as a socket address: an IPv4 address or [IPv6], or localhost, a
 * colon and a port.  Returns 0 or -EINVAL with why. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
		      char *why, size_t whylen)
{
	const char *colon = strrchr(addr, ':');
	char host[INET6_ADDRSTRLEN + 2];
	uint64_t port;
	size_t hlen;

	*ss = (struct sockaddr_storage){ 0 };
	if (!colon || colon == addr ||
	    parse_uint(colon + 1, 1, 65535, &port) < 0) {
		snprintf(why, whylen, "expected ADDRESS:PORT (127.0.0.1:9187, "
			 "[::1]:9187), port 1 to 65535");
		return -EINVAL;
	}
	hlen = (size_t)(colon - addr);
	if (hlen >= sizeof(host)) {
		snprintf(why, whylen, "address too long");
		return -EINVAL;
	}
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	if (streq(host, "localhost"))
		strcpy(host, "127.0.0.1");
	if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		host[hlen - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
			goto bad;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (!IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
			goto remote;
		return 0;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
		goto bad;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)port);
	if ((ntohl(s4->sin_addr.s_addr) >> 24) != 127)
		goto remote;
	return 0;
bad:
	snprintf(why, whylen, "not an IPv4 address, [IPv6 address] or "
		 "localhost: %s", host);
	return -EINVAL;
remote:
	snprintf(why, whylen, "%s is not a loopback address: the endpoint "
		 "has no authentication (use 127.0.0.1 or [::1], and a proxy "
		 "or dbswapctl metrics for remote scrapes)", host);
	return -EINVAL;
}

bool metrics_addr_ok(const char *addr, char *why, size_t whylen)
{
	struct sockaddr_storage ss;

	return parse_addr(addr, &ss, why, whylen) == 0;
}

/* Binds and starts MHD on h->addr; on failure returns a negative errno
 * with nothing of it left behind (h->daemon NULL). */
static int http_listen(struct metrics_http *h)
{
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	int r;

	if (h->ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	errno = 0;
	h->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, http_request, h,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&h->ss,
		MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)METRICS_HTTP_CONNECTIONS_MAX,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		(size_t)METRICS_HTTP_REQUEST_MAX,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT_S,
		MHD_OPTION_LISTEN_BACKLOG_SIZE,
		(unsigned)METRICS_HTTP_CONNECTIONS_MAX,
		MHD_OPTION_EXTERNAL_LOGGER, http_log, NULL,
		MHD_OPTION_END);
	if (!h->daemon)
		return errno ? -errno : -EADDRNOTAVAIL;
	info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
	r = !info ? -ENOMEM
		  : loop_add_fd(h->agent->loop, info->epoll_fd, EPOLLIN,
				http_ready, h, &h->src);
	if (r < 0) {
		MHD_stop_daemon(h->daemon);
		h->daemon = NULL;
		return r;
	}
	http_rearm(h);
	return 0;
}

/* Tries to listen; on failure, again after a delay that doubles from
 * METRICS_HTTP_RETRY_MIN_MS to METRICS_HTTP_RETRY_MAX_MS. */
static void http_try(struct metrics_http *h)
{
	int r = http_listen(h);

	if (r == 0) {
		if (h->attempts)
			log_notice("metrics: serving /metrics and /health on "
				   "http://%s (after %u failed attempts to "
				   "listen)", h->addr, h->attempts);
		else
			log_info("metrics: serving /metrics and /health on "
				 "http://%s", h->addr);
		h->attempts = 0;
		return;
	}
	/* The first failure is an error; the retries that fail the same
	 * way say nothing new. */
	if (h->attempts == 0 || r != h->last_error)
		log_error("--metrics %s: cannot listen: %s (the agent runs "
			  "on without it; retrying, every %d s at most)",
			  h->addr, strerror(-r),
			  METRICS_HTTP_RETRY_MAX_MS / 1000);
	else
		log_debug("--metrics %s: cannot listen: %s (attempt %u)",
			  h->addr, strerror(-r), h->attempts + 1);
	h->last_error = r;
	h->attempts++;
	loop_timer_arm_in(h->retry, h->retry_ms);
	h->retry_ms = h->retry_ms * 2 > METRICS_HTTP_RETRY_MAX_MS
			      ? METRICS_HTTP_RETRY_MAX_MS
			      : h->retry_ms * 2;
}

static void http_retry(struct loop_timer *timer, void *data)
{
	http_try(data);
}

int metrics_http_start(struct agent *a, const char *addr)
{
	struct metrics_http *h;
	char why[256];

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	if (parse_addr(addr, &h->ss, why, sizeof(why)) < 0) {
		log_error("--metrics %s: %s", addr, why);
		free(h);
		return -EINVAL;
	}
	h->agent = a;
	h->retry_ms = METRICS_HTTP_RETRY_MIN_MS;
	snprintf(h->addr, sizeof(h->addr), "%s", addr);
	h->timer = loop_timer_new(a->loop, http_timer, h);
	h->retry = loop_timer_new(a->loop, http_retry, h);
	if (!h->timer || !h->retry) {
		loop_timer_free(h->timer);
		loop_timer_free(h->retry);
		free(h);
		return -ENOMEM;
	}
	metrics_http = h;
	http_try(h);
	return 0;
}

void metrics_http_stop(void)
{
	struct metrics_http *h = metrics_http;

	if (!h)
		return;
	metrics_http = NULL;
	if (h->daemon) {
		loop_remove_fd(h->src);
		MHD_stop_daemon(h->daemon);
	}
	loop_timer_free(h->timer);
	loop_timer_free(h->retry);
	free(h);
}

bool metrics_http_listening(void)
{
	return metrics_http && metrics_http->daemon;
}

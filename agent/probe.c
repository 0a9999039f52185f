/*
 * Non-blocking validation of a conninfo; see probe.h.
 *
 * libpq may open a new socket for each address it tries, and a new socket
 * can reuse the old descriptor number, so the probe re-registers its fd
 * with the loop after every PQconnectPoll() step.
 *
 * Host names are looked up first (connplan.h, resolve.h), all at once,
 * and libpq gets addresses only.  libpq would try the hosts in order and
 * look each up when its turn comes, so a dead DNS server for the last
 * host of a list does not hold up the first: the probe does the same in
 * stages.  Each stage hands libpq the run of hosts from the next one not
 * yet tried up to the first whose lookup is still under way; when libpq
 * has failed on all of them without a word from a server (which would end
 * libpq's own attempt: a wrong password is not retried elsewhere), the
 * next stage waits for that lookup and goes on.  The reasons of earlier
 * stages and failed lookups lead the final error, in host order.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/loop.h"
#include "common/pqerr.h"
#include "common/util.h"
#include "connplan.h"
#include "probe.h"
#include "resolve.h"

enum probe_phase { PHASE_RESOLVE, PHASE_CONNECT, PHASE_QUERY };

struct probe {
	struct loop *loop;
	PGconn *conn;
	struct loop_source *src;
	struct loop_timer *timer;
	enum probe_phase phase;
	bool got_row, in_recovery, keep;
	int64_t started_us;
	int timeout_ms, keepalive_ms;
	struct connplan *plan;  /* NULL when given a connection */
	struct resolve *resolve;
	size_t lookup_entry[CONNPLAN_HOSTS_MAX]; /* lookup index -> entry */
	size_t lookups_left;
	char *lookup_error[CONNPLAN_HOSTS_MAX];  /* per entry */
	size_t next;            /* the first entry no stage has taken */
	size_t stage_from, stage_to; /* the entries libpq has now */
	char passed[1024];      /* why earlier entries failed, lines */
	char *secrets[3]; /* text that must not appear in error messages */
	probe_done_fn *fn;
	void *data;
};

static void probe_free(struct probe *p)
{
	if (!p)
		return;
	loop_remove_fd(p->src);
	loop_timer_free(p->timer);
	resolve_free(p->resolve);
	if (p->conn)
		PQfinish(p->conn);
	connplan_free(p->plan);
	for (size_t i = 0; i < ARRAY_SIZE(p->lookup_error); i++)
		free(p->lookup_error[i]);
	for (size_t i = 0; i < ARRAY_SIZE(p->secrets); i++)
		free_secret(p->secrets[i]);
	free(p);
}

void probe_cancel(struct probe *p)
{
	probe_free(p);
}

/* Replaces every double-quoted token of msg that overlaps a secret with
 * ****, and every bare occurrence of a secret too.  libpq quotes option
 * values in its messages, and a mis-parsed URI can put part of a password
 * into the port or host field. */
static void probe_scrub(char *msg, size_t size, char *const *secrets,
			size_t n)
{
	char out[1024];
	size_t o = 0;

	/* Room for the longest replacement, "****" in quotes, and the NUL. */
	for (const char *p = msg; *p && o + 7 < sizeof(out);) {
		const char *end;
		if (*p == '"' && (end = strchr(p + 1, '"'))) {
			size_t len = (size_t)(end - p - 1);
			bool secret = false;
			for (size_t i = 0; i < n && len > 0; i++) {
				const char *s = secrets[i];
				if (!s || !*s)
					continue;
				char tok[256];
				if (len < sizeof(tok)) {
					memcpy(tok, p + 1, len);
					tok[len] = '\0';
					secret = strstr(s, tok) || strstr(tok, s);
				} else {
					secret = true;
				}
				if (secret)
					break;
			}
			if (secret) {
				memcpy(out + o, "\"****\"", 6);
				o += 6;
				p = end + 1;
				continue;
			}
		}
		bool bare = false;
		for (size_t i = 0; i < n; i++) {
			size_t sl = secrets[i] ? strlen(secrets[i]) : 0;
			if (sl > 0 && strncmp(p, secrets[i], sl) == 0) {
				memcpy(out + o, "****", 4);
				o += 4;
				p += sl;
				bare = true;
				break;
			}
		}
		if (!bare)
			out[o++] = *p++;
	}
	out[o] = '\0';
	snprintf(msg, size, "%s", out);
}

/* The password part of a URI's userinfo: after the first ':' following
 * "://", up to the last '@'. */
static char *uri_password_region(const char *conninfo)
{
	const char *s = strstr(conninfo, "://"), *at, *colon;

	if (!s || (strncmp(conninfo, "postgres", 8) != 0))
		return NULL;
	s += 3;
	at = strrchr(s, '@');
	if (!at)
		return NULL;
	colon = memchr(s, ':', (size_t)(at - s));
	if (!colon || colon + 1 >= at)
		return NULL;
	return strndup(colon + 1, (size_t)(at - colon - 1));
}

static void probe_finish(struct probe *p, const char *error)
{
	struct probe_result res = { .ok = error == NULL };
	char buf[1024];

	res.elapsed_us = now_us() - p->started_us;
	res.in_recovery = p->in_recovery;
	if (!error && p->keep) {
		/* Handed over: the fd leaves the loop with the probe. */
		res.conn = p->conn;
		p->conn = NULL;
	}
	if (error) {
		pqerr_line(error, buf, sizeof(buf), res.sqlstate);
		probe_scrub(buf, sizeof(buf), p->secrets, ARRAY_SIZE(p->secrets));
		res.error = buf;
		res.auth_failed = pqerr_is_auth(res.sqlstate) ||
				  (p->conn && PQconnectionNeedsPassword(p->conn));
	}
	probe_done_fn *fn = p->fn;
	void *data = p->data;
	/* Free first: the callback may start a new probe at once. */
	probe_free(p);
	fn(&res, data);
}

/* Fails the probe with msg, after the reasons of the hosts passed over
 * (msg NULL: those alone).  Reasons are joined by newlines, which
 * pqerr_line() turns into "; " as it does libpq's lines. */
static void probe_fail(struct probe *p, const char *msg)
{
	char buf[2048];

	snprintf(buf, sizeof(buf), "%s%s", p->passed,
		 msg ? msg : p->passed[0] ? "" : "no host to try");
	probe_finish(p, buf);
}

/* Notes why hosts were passed over, once (a bad option fails every stage
 * the same way), as libpq wrote it: probe_finish() makes one line of it
 * all. */
static void probe_pass(struct probe *p, const char *why)
{
	size_t len = strlen(p->passed), n;

	if (!why)
		return;
	n = strlen(why);
	while (n > 0 && why[n - 1] == '\n')
		n--;
	if (n == 0 || memmem(p->passed, len, why, n))
		return;
	snprintf(p->passed + len, sizeof(p->passed) - len, "%.*s\n", (int)n,
		 why);
}

static bool probe_next_stage(struct probe *p);

/* libpq gave up.  Returns true when the probe finished (and was freed),
 * false when a next stage goes on. */
static bool probe_fail_conn(struct probe *p)
{
	char msg[1024], line[1024], sqlstate[6];

	if (p->plan)
		connplan_name_hosts(p->plan, p->stage_from, p->stage_to,
				    PQerrorMessage(p->conn), msg, sizeof(msg));
	else
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(p->conn));
	pqerr_line(msg, line, sizeof(line), sqlstate);
	/* A server's error (it has a SQLSTATE) or a missing password ends
	 * libpq's own attempt: the hosts after it are not tried. */
	if (p->phase != PHASE_CONNECT || !p->plan ||
	    p->next >= connplan_hosts(p->plan) || sqlstate[0] ||
	    PQconnectionNeedsPassword(p->conn)) {
		probe_fail(p, msg);
		return true;
	}
	probe_pass(p, msg);
	loop_remove_fd(p->src);
	p->src = NULL;
	PQfinish(p->conn);
	p->conn = NULL;
	return probe_next_stage(p);
}

static void probe_event(struct loop_source *s, uint32_t events, void *data);

static int probe_watch(struct probe *p, uint32_t events)
{
	int fd = PQsocket(p->conn);

	loop_remove_fd(p->src);
	p->src = NULL;
	if (fd < 0)
		return -EBADF;
	return loop_add_fd(p->loop, fd, events, probe_event, p, &p->src);
}

/* Returns true when the probe finished (and was freed). */
static bool probe_query_step(struct probe *p, uint32_t events)
{
	PGresult *res;

	if (events & EPOLLOUT) {
		int r = PQflush(p->conn);
		if (r < 0 || (r == 0 && probe_watch(p, EPOLLIN) < 0)) {
			(void)probe_fail_conn(p);
			return true;
		}
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return false;
	if (!PQconsumeInput(p->conn)) {
		(void)probe_fail_conn(p);
		return true;
	}
	while (!PQisBusy(p->conn)) {
		res = PQgetResult(p->conn);
		if (!res) {
			probe_finish(p, p->got_row ? NULL
						   : PROBE_QUERY
						   " returned no row");
			return true;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			char msg[1024];
			snprintf(msg, sizeof(msg), PROBE_QUERY " failed: %s",
				 PQresultErrorMessage(res));
			PQclear(res);
			probe_finish(p, msg);
			return true;
		}
		p->got_row = PQntuples(res) == 1 && PQnfields(res) == 1;
		p->in_recovery = p->got_row && streq(PQgetvalue(res, 0, 0), "t");
		PQclear(res);
	}
	return false;
}

static int probe_send_query(struct probe *p)
{
	int r;

	p->phase = PHASE_QUERY;
	if (PQsetnonblocking(p->conn, 1) < 0 ||
	    !PQsendQuery(p->conn, PROBE_QUERY))
		return -EIO;
	r = PQflush(p->conn);
	if (r < 0)
		return -EIO;
	return probe_watch(p, r ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void probe_connect_step(struct probe *p)
{
	int r;

	switch (PQconnectPoll(p->conn)) {
	case PGRES_POLLING_READING:
		r = probe_watch(p, EPOLLIN);
		break;
	case PGRES_POLLING_WRITING:
		r = probe_watch(p, EPOLLOUT);
		break;
	case PGRES_POLLING_OK:
		r = probe_send_query(p);
		break;
	default:
		r = -EIO;
		break;
	}
	if (r < 0)
		(void)probe_fail_conn(p);
}

static void probe_event(struct loop_source *s, uint32_t events, void *data)
{
	struct probe *p = data;

	if (p->phase == PHASE_CONNECT)
		probe_connect_step(p);
	else if (p->phase == PHASE_QUERY)
		(void)probe_query_step(p, events);
}

static void probe_timeout(struct loop_timer *t, void *data)
{
	struct probe *p = data;
	char msg[512];

	if (p->phase == PHASE_RESOLVE)
		snprintf(msg, sizeof(msg), "no answer within %d ms while "
			 "resolving host \"%s\"", p->timeout_ms,
			 connplan_host(p->plan, p->next));
	else if (p->phase == PHASE_CONNECT && p->conn && PQhost(p->conn))
		snprintf(msg, sizeof(msg), "no answer within %d ms while "
			 "connecting to \"%s\"", p->timeout_ms,
			 PQhost(p->conn));
	else
		snprintf(msg, sizeof(msg), "no answer within %d ms while %s",
			 p->timeout_ms,
			 p->phase == PHASE_CONNECT ? "connecting"
						   : "running " PROBE_QUERY);
	probe_fail(p, msg);
}

/* Server messages outside a query (a FATAL before a shutdown, warnings)
 * would go to stderr by default: the probe reports errors itself. */
static void probe_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Remembers the passwords in conninfo, to scrub them from libpq's
 * messages.  Returns false when conninfo does not parse. */
static bool probe_note_secrets(struct probe *p, const char *conninfo)
{
	PQconninfoOption *opts;
	char *errmsg = NULL;

	/* libpq's own parse errors quote the offending text, which may be a
	 * password: report parse failures in our own words. */
	opts = PQconninfoParse(conninfo, &errmsg);
	PQfreemem(errmsg);
	if (!opts)
		return false;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (o->val && streq(o->keyword, "password"))
			p->secrets[0] = strdup(o->val);
		if (o->val && streq(o->keyword, "sslpassword"))
			p->secrets[1] = strdup(o->val);
		if (o->val)
			explicit_bzero(o->val, strlen(o->val));
	}
	PQconninfoFree(opts);
	p->secrets[2] = uri_password_region(conninfo);
	return true;
}

/* Starts libpq on the entries [from, to).  A monitor connection gets TCP
 * keepalives and a TCP user timeout sized to keepalive_ms, so that a
 * server host that vanishes is noticed while the connection idles between
 * checks; they come after the value's keywords and win over its own
 * (libpq ignores them on Unix sockets).  Returns true when the probe
 * finished. */
static bool probe_connect(struct probe *p, size_t from, size_t to)
{
	char idle[16], interval[16], user_timeout[16];
	const char *extra_keys[] = { "fallback_application_name",
				     "keepalives", "keepalives_idle",
				     "keepalives_interval", "keepalives_count",
				     "tcp_user_timeout", NULL };
	const char *extra_vals[] = { "dbswapd", "1", idle, interval, "3",
				     user_timeout, NULL };
	const char *const *keys, *const *vals;
	int r;

	snprintf(idle, sizeof(idle), "%d", MAX(p->keepalive_ms / 1000, 1));
	snprintf(interval, sizeof(interval), "%d",
		 MAX(p->keepalive_ms / 3000, 1));
	snprintf(user_timeout, sizeof(user_timeout), "%d", p->keepalive_ms);
	if (p->keepalive_ms <= 0)
		extra_keys[1] = NULL;
	r = connplan_params(p->plan, from, to, extra_keys, extra_vals, &keys,
			    &vals);
	if (r < 0) {
		probe_fail(p, r == -ENOMEM ? "out of memory" : NULL);
		return true;
	}
	p->phase = PHASE_CONNECT;
	p->stage_from = from;
	p->stage_to = to;
	p->conn = PQconnectStartParams(keys, vals, 0);
	if (!p->conn) {
		probe_fail(p, "out of memory");
		return true;
	}
	PQsetNoticeProcessor(p->conn, probe_notice, NULL);
	/* Verbose errors carry the SQLSTATE, which tells an authentication
	 * failure from an outage. */
	PQsetErrorVerbosity(p->conn, PQERRORS_VERBOSE);
	if (PQstatus(p->conn) == CONNECTION_BAD || probe_watch(p, EPOLLOUT) < 0)
		return probe_fail_conn(p);
	return false;
}

/* Hands libpq the next run of hosts, or waits for the lookup of the next
 * host.  Returns true when the probe finished. */
static bool probe_next_stage(struct probe *p)
{
	size_t n = connplan_hosts(p->plan), from = p->next, to;

	for (; from < n && connplan_state(p->plan, from) == CONNPLAN_FAILED;
	     from++)
		probe_pass(p, p->lookup_error[from]);
	p->next = from;
	if (from == n) {
		probe_fail(p, NULL);
		return true;
	}
	if (connplan_state(p->plan, from) == CONNPLAN_LOOKUP) {
		p->phase = PHASE_RESOLVE;
		return false;
	}
	for (to = from; to < n && connplan_state(p->plan, to) !=
					 CONNPLAN_LOOKUP; to++)
		if (connplan_state(p->plan, to) == CONNPLAN_FAILED)
			probe_pass(p, p->lookup_error[to]);
	p->next = to;
	return probe_connect(p, from, to);
}

static void probe_resolved(struct resolve *res, size_t index, void *data)
{
	struct probe *p = data;
	size_t entry = p->lookup_entry[index], n;
	const char *why;
	const char *const *addrs = resolve_addrs(res, index, &n, &why);
	char msg[512];

	if (addrs && connplan_set_addrs(p->plan, entry, addrs, n) < 0) {
		addrs = NULL;
		why = "out of memory";
	}
	if (!addrs) {
		snprintf(msg, sizeof(msg), "could not resolve host \"%s\": %s",
			 connplan_host(p->plan, entry), why);
		p->lookup_error[entry] = strdup(msg);
		connplan_fail(p->plan, entry);
	}
	if (--p->lookups_left == 0) {
		resolve_free(p->resolve);
		p->resolve = NULL;
	}
	if (p->phase == PHASE_RESOLVE && entry == p->next)
		(void)probe_next_stage(p);
}

/* Starts looking up every host name of the plan.  Returns 0 or a
 * negative errno. */
static int probe_lookup(struct probe *p)
{
	const char *names[CONNPLAN_HOSTS_MAX];
	struct resolve_opts ro = { .names = names,
				   .max_addrs = CONNPLAN_ADDRS_MAX };

	for (size_t i = 0; i < connplan_hosts(p->plan); i++) {
		if (connplan_state(p->plan, i) != CONNPLAN_LOOKUP)
			continue;
		p->lookup_entry[ro.n_names] = i;
		names[ro.n_names++] = connplan_host(p->plan, i);
	}
	p->lookups_left = ro.n_names;
	if (ro.n_names == 0)
		return 0;
	return resolve_start(p->loop, &ro, probe_resolved, p, &p->resolve);
}

int probe_start(struct loop *loop, const struct probe_opts *o,
		probe_done_fn *fn, void *data, struct probe **out)
{
	struct probe *p;
	char err[512];
	int r;

	*out = NULL;
	p = zalloc(sizeof(*p));
	if (!p) {
		if (o->conn)
			PQfinish(o->conn);
		return -ENOMEM;
	}
	p->loop = loop;
	p->fn = fn;
	p->data = data;
	p->timeout_ms = o->timeout_ms;
	p->keepalive_ms = o->keepalive_ms;
	p->keep = o->keep;
	p->started_us = now_us();
	p->conn = o->conn;

	if (!p->conn) {
		if (!probe_note_secrets(p, o->conninfo)) {
			probe_finish(p, "not a valid libpq connection string "
					"or URI");
			return 0;
		}
		r = connplan_new(o->conninfo, &p->plan, err, sizeof(err));
		if (r == -ENOMEM) {
			probe_free(p);
			return r;
		}
		if (r < 0) {
			probe_finish(p, err);
			return 0;
		}
	}
	p->timer = loop_timer_new(loop, probe_timeout, p);
	if (!p->timer) {
		probe_free(p);
		return -ENOMEM;
	}
	/* The deadline covers the name lookups too. */
	loop_timer_arm_in(p->timer, o->timeout_ms);
	if (p->conn) {
		if (probe_send_query(p) < 0) {
			(void)probe_fail_conn(p);
			return 0;
		}
		*out = p;
		return 0;
	}
	r = probe_lookup(p);
	if (r == -ENOMEM) {
		probe_free(p);
		return r;
	}
	if (r < 0) {
		snprintf(err, sizeof(err), "cannot start looking up host "
			 "names: %s", strerror(-r));
		probe_finish(p, err);
		return 0;
	}
	if (probe_next_stage(p))
		return 0;
	*out = p;
	return 0;
}

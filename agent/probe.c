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
 *
 * A stage also ends when the turn (probe.h) of the lookup it waits for,
 * or of the address libpq is on, runs out.  libpq tells which address it
 * is on only through PQhost(), PQhostaddr() and PQport(), so after each
 * step the probe finds that address in the plan (connplan_locate()); at
 * the end of its turn it gives it up, or the whole host when the host's
 * turn is over too (connplan_skip(), connplan_fail()), and a next stage
 * starts libpq anew on what follows.  One turn timer serves them all,
 * beside the deadline's.
 */
#include <libpq-fe.h>
#include <stdint.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>

#include "authguard.h"
#include "common/loop.h"
#include "common/mask.h"
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
	struct loop_timer *timer;      /* the deadline */
	struct loop_timer *turn_timer; /* the end of the current turn */
	struct loop_timer *peek_timer; /* a message's start half here */
	struct authguard *guard; /* until connected */
	enum probe_phase phase;
	bool got_row, in_recovery, keep, timed_out;
	/* PROBE_QUERY_BASIC instead (the role may not read the identity),
	 * and whether it is still to be sent. */
	bool basic, send_basic;
	bool identified;
	unsigned long long system_id;
	unsigned timeline;
	long long server_start_us;
	int64_t started_us;
	int64_t start_ms, deadline_ms;
	/* Turns (probe.h).  The host whose turn it is, SIZE_MAX before the
	 * first, and when its turn ends. */
	size_t turn;
	int64_t turn_end_ms;
	/* The address libpq is trying (when at_known) and its turn. */
	bool at_known;
	size_t at_entry, at_addr;
	int64_t at_start_ms, at_end_ms;
	int timeout_ms, keepalive_ms;
	char *dns_servers;
	struct connplan *plan;  /* NULL when given a connection */
	struct resolve *resolve;
	size_t lookup_entry[CONNPLAN_HOSTS_MAX]; /* lookup index -> entry */
	size_t lookups_left;
	char *lookup_error[CONNPLAN_HOSTS_MAX];  /* per entry */
	size_t next;            /* the first entry no stage has taken */
	size_t stage_from, stage_to; /* the entries libpq has now */
	char passed[1024];      /* why earlier entries failed, lines */
	/* Text that must not appear in error messages: the conninfo's
	 * secrets (mask_secrets()), the first password_secrets, then hosts
	 * that may not be named (connplan_label()). */
	struct mask_secrets secrets;
	size_t password_secrets;
	probe_done_fn *fn;
	void *data;
};

static void probe_free(struct probe *p)
{
	if (!p)
		return;
	loop_remove_fd(p->src);
	loop_timer_free(p->timer);
	loop_timer_free(p->turn_timer);
	loop_timer_free(p->peek_timer);
	authguard_forget(p->guard);
	resolve_free(p->resolve);
	if (p->conn)
		PQfinish(p->conn);
	connplan_free(p->plan);
	free(p->dns_servers);
	for (size_t i = 0; i < ARRAY_SIZE(p->lookup_error); i++)
		free(p->lookup_error[i]);
	mask_secrets_free(&p->secrets);
	free(p);
}

void probe_cancel(struct probe *p)
{
	probe_free(p);
}

static void probe_scrub(char *msg, size_t size, char *const *secrets,
			size_t n)
{
	char out[1024];

	pqerr_scrub(msg, out, sizeof(out), secrets, n);
	snprintf(msg, size, "%s", out);
}

/* msg scrubbed whole, before anything cuts it: a secret cut in two by a
 * buffer's end would no longer be found.  NULL when out of memory. */
static char *probe_scrub_dup(const char *msg, char *const *secrets,
			     size_t n)
{
	/* A replacement is at most 6 bytes, for a token of at least 3. */
	size_t size = strlen(msg) * 2 + 8;
	char *out = malloc(size);

	if (out)
		pqerr_scrub(msg, out, size, secrets, n);
	return out;
}

static void probe_finish(struct probe *p, const char *error)
{
	struct probe_result res = { .ok = error == NULL };
	char buf[1024];

	res.elapsed_us = now_us() - p->started_us;
	res.in_recovery = p->in_recovery;
	res.identified = !error && p->identified;
	res.system_id = p->system_id;
	res.timeline = p->timeline;
	res.server_start_us = p->server_start_us;
	if (!error && p->keep) {
		/* Handed over: the fd leaves the loop with the probe. */
		res.conn = p->conn;
		p->conn = NULL;
	}
	if (error) {
		pqerr_line(error, buf, sizeof(buf), res.sqlstate);
		probe_scrub(buf, sizeof(buf), p->secrets.s, p->secrets.n);
		res.error = buf;
		res.auth_failed = pqerr_is_auth(res.sqlstate) ||
				  (p->conn && PQconnectionNeedsPassword(p->conn));
		/* libpq words a refused connect() with strerror(), in this
		 * process's locale. */
		res.refused = strstr(error, strerror(ECONNREFUSED)) != NULL;
		res.closed_early = authguard_closed_early(p->guard);
		res.timed_out = p->timed_out;
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

/* Drops libpq's connection before a next stage. */
static void probe_close_conn(struct probe *p)
{
	loop_remove_fd(p->src);
	p->src = NULL;
	loop_timer_disarm(p->peek_timer);
	authguard_forget(p->guard);
	p->guard = NULL;
	PQfinish(p->conn);
	p->conn = NULL;
}

/* Whether a line of libpq's error text may be shown (after scrubbing):
 * one about a server it tried ("connection to server at \"192.0.2.1\",
 * port 5432 failed: ..."; libpq 15 starts each attempt's message so), a
 * hint indented under it, a field of a server's error ("DETAIL:",
 * "LOCATION:"), the passfile's name after a failed password.  Any other line is libpq's word on the value's settings,
 * and those quote the value: "invalid integer value \"...\" for
 * connection option \"port\"", "could not parse network address
 * \"...\"", "Unix-domain socket path \"...\" is too long". */
static bool probe_line_shown(const char *line, size_t len)
{
	/* libpq's lines that quote nothing of the value but a file name:
	 * after a failed password that came from the passfile. */
	static const char *const starts[] = { "connection to server ",
					      "password retrieved from file " };
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(starts); i++)
		if (len >= strlen(starts[i]) &&
		    memcmp(line, starts[i], strlen(starts[i])) == 0)
			return true;
	if (len > 0 && (line[0] == '\t' || line[0] == ' '))
		return true;
	while (n < len && line[n] >= 'A' && line[n] <= 'Z')
		n++;
	return n > 0 && n < len && line[n] == ':';
}

/* libpq's error text as the probe shows it: lines about the value's
 * settings replaced by one of the agent's own that names the setting
 * (never its value), servers libpq names by address named as
 * connplan_label() allows.  probe_finish() scrubs the rest. */
static void probe_libpq_text(struct probe *p, const char *raw, char *out,
			     size_t size)
{
	char kept[2048], line[1024];
	const char *keyword = NULL;
	bool withheld = false;
	size_t k = 0;
	/* The value's secrets out first, before any buffer cuts a line;
	 * hosts that may not be named stay for connplan_name_hosts() to
	 * label. */
	char *clean = raw ? probe_scrub_dup(raw, p->secrets.s,
					    p->password_secrets) : NULL;

	kept[0] = '\0';
	if (raw && !clean)
		snprintf(kept, sizeof(kept), "libpq's message is not shown "
			 "(out of memory)\n");
	for (const char *l = clean; l && *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		if (probe_line_shown(l, len)) {
			k += (size_t)snprintf(kept + k, sizeof(kept) - k,
					      "%.*s\n", (int)len, l);
			k = MIN(k, sizeof(kept) - 1);
		} else if (len > 0) {
			withheld = true;
			snprintf(line, sizeof(line), "%.*s", (int)len, l);
			if (!keyword && p->plan)
				keyword = connplan_keyword_in(p->plan, line);
			explicit_bzero(line, sizeof(line));
		}
		l = nl ? nl + 1 : NULL;
	}
	if (withheld && keyword)
		snprintf(kept + k, sizeof(kept) - k, "libpq refused the "
			 "value's %s setting (its message is not shown: it "
			 "quotes the value)\n", keyword);
	else if (withheld)
		snprintf(kept + k, sizeof(kept) - k, "libpq refused the "
			 "value's settings (its message is not shown: it "
			 "quotes the value)\n");
	free_secret(clean);
	if (p->plan)
		connplan_name_hosts(p->plan, p->stage_from, p->stage_to, kept,
				    out, size);
	else
		snprintf(out, size, "%s", kept);
}

/* libpq gave up.  Returns true when the probe finished (and was freed),
 * false when a next stage goes on. */
static bool probe_fail_conn(struct probe *p)
{
	char msg[1024], line[1024], sqlstate[6];

	probe_libpq_text(p, PQerrorMessage(p->conn), msg, sizeof(msg));
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
	probe_close_conn(p);
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

static int probe_send(struct probe *p, const char *query);

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
		if (!res && p->send_basic) {
			p->send_basic = false;
			if (probe_send(p, PROBE_QUERY_BASIC) < 0) {
				(void)probe_fail_conn(p);
				return true;
			}
			return false;
		}
		if (!res) {
			probe_finish(p, p->got_row ? NULL
						   : "the check query returned "
						     "no row");
			return true;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			const char *st = PQresultErrorField(res,
							    PG_DIAG_SQLSTATE);
			char msg[1024];

			if (!p->basic && st && (streq(st, "42501") ||
						streq(st, "42883"))) {
				p->basic = p->send_basic = true;
				PQclear(res);
				continue;
			}
			snprintf(msg, sizeof(msg), "the check query failed: %s",
				 PQresultErrorMessage(res));
			PQclear(res);
			probe_finish(p, msg);
			return true;
		}
		p->got_row = PQntuples(res) == 1 &&
			     PQnfields(res) == (p->basic ? 1 : 4);
		p->in_recovery = p->got_row && streq(PQgetvalue(res, 0, 0), "t");
		p->identified = p->got_row && !p->basic &&
				!PQgetisnull(res, 0, 1) && !PQgetisnull(res, 0, 2) &&
				!PQgetisnull(res, 0, 3);
		if (p->identified) {
			p->system_id = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
			p->timeline = (unsigned)strtoul(PQgetvalue(res, 0, 2),
							NULL, 10);
			p->server_start_us = strtoll(PQgetvalue(res, 0, 3),
						     NULL, 10);
		}
		PQclear(res);
	}
	return false;
}

static int probe_send(struct probe *p, const char *query)
{
	int r;

	if (!PQsendQuery(p->conn, query))
		return -EIO;
	r = PQflush(p->conn);
	if (r < 0)
		return -EIO;
	return probe_watch(p, r ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static int probe_send_query(struct probe *p)
{
	/* Connected: libpq would not try another host now either, and the
	 * server has no more say on the password. */
	p->phase = PHASE_QUERY;
	authguard_forget(p->guard);
	p->guard = NULL;
	loop_timer_disarm(p->turn_timer);
	if (PQsetnonblocking(p->conn, 1) < 0)
		return -EIO;
	return probe_send(p, p->basic ? PROBE_QUERY_BASIC : PROBE_QUERY);
}

/* The end of one of n equal shares of the time from now to end, but no
 * sooner than PROBE_TURN_MIN_MS from now and no later than end. */
static int64_t probe_share(int64_t now, int64_t end, size_t n)
{
	int64_t share = (end - now) / (int64_t)MAX(n, (size_t)1);

	return MIN(end, now + MAX(share, (int64_t)PROBE_TURN_MIN_MS));
}

/* The turn timer fires at end, unless the deadline comes first: then
 * the deadline's own message tells, as for a lone host. */
static void probe_arm_turn(struct probe *p, int64_t end)
{
	if (end < p->deadline_ms)
		loop_timer_arm(p->turn_timer, end);
	else
		loop_timer_disarm(p->turn_timer);
}

/* Entry i's turn begins, unless it has already (the probe waited for its
 * lookup): its share of the time left, with each host from it on that
 * may still be tried counted once. */
static void probe_begin_turn(struct probe *p, size_t i)
{
	size_t hosts = 0;

	if (p->turn == i)
		return;
	for (size_t j = i; j < connplan_hosts(p->plan); j++)
		hosts += connplan_state(p->plan, j) != CONNPLAN_FAILED;
	p->turn = i;
	p->turn_end_ms = probe_share(now_ms(), p->deadline_ms, hosts);
}

/* After a step of libpq's: when it has gone on to another address, that
 * address's turn begins, a share of its host's turn for each of the
 * host's addresses from it on. */
static void probe_track(struct probe *p)
{
	size_t entry = p->at_known ? p->at_entry : p->stage_from;
	size_t addr = p->at_known ? p->at_addr : 0;
	const char *host = PQhost(p->conn), *hostaddr = PQhostaddr(p->conn);
	const char *port = PQport(p->conn);
	int64_t now;

	if (connplan_locate(p->plan, p->stage_to, host, hostaddr, port,
			    &entry, &addr) < 0) {
		/* target_session_attrs=prefer-standby starts over from the
		 * first host when no standby was found. */
		entry = p->stage_from;
		addr = 0;
		if (connplan_locate(p->plan, p->stage_to, host, hostaddr,
				    port, &entry, &addr) < 0)
			return;
	}
	if (p->at_known && entry == p->at_entry && addr == p->at_addr)
		return;
	p->at_known = true;
	p->at_entry = entry;
	p->at_addr = addr;
	probe_begin_turn(p, entry);
	now = now_ms();
	p->at_start_ms = now;
	p->at_end_ms = probe_share(now, p->turn_end_ms,
				   connplan_addrs(p->plan, entry) - addr);
	probe_arm_turn(p, p->at_end_ms);
}

/* "host \"db.example\"", or "host 2 of 3" when it may not be named. */
static const char *probe_host(const struct probe *p, size_t i, char *buf,
			      size_t size)
{
	char label[300];

	connplan_label(p->plan, i, label, sizeof(label));
	snprintf(buf, size, "%s%s", connplan_nameable(p->plan, i) &&
		 label[0] == '"' ? "host " : "", label);
	return buf;
}

/* The server libpq is trying, named as connplan_label() allows, with
 * its address and port (a value may list one host twice, with two
 * ports). */
static void probe_where(struct probe *p, char *buf, size_t size)
{
	const char *addr = PQhostaddr(p->conn), *port = PQport(p->conn);
	char label[300];

	if (p->at_known)
		connplan_label(p->plan, p->at_entry, label, sizeof(label));
	else
		snprintf(label, sizeof(label), "a host of the value");
	/* A numeric host is its own address: shown once, as libpq does. */
	if (addr && *addr && !(p->at_known &&
			       connplan_nameable(p->plan, p->at_entry) &&
			       streq(connplan_host(p->plan, p->at_entry), addr)))
		snprintf(buf, size, "%s (%s), port %s", label, addr,
			 port ? port : "");
	else
		snprintf(buf, size, "%s, port %s", label, port ? port : "");
}

/* How soon to look again at a message whose start is only partly here
 * (the loop is level-triggered: waiting on the fd would spin). */
#define PROBE_PEEK_RETRY_MS 5

static void probe_peek_again(struct loop_timer *t, void *data);

/* After a step of libpq's: false when the guard refused the connection
 * (the probe is then over) or holds back a message only partly here. */
static bool probe_guard_step(struct probe *p, PostgresPollingStatusType st)
{
	char msg[768], where[512];
	const char *why = authguard_refused(p->guard);

	if (why) {
		probe_where(p, where, sizeof(where));
		snprintf(msg, sizeof(msg), "the server at %s %s: refused%s",
			 where, why, streq(why, AUTHGUARD_CLEARTEXT) ?
			 " (configure scram-sha-256 on the server, or use "
			 "TLS with sslmode=verify-full)" : "");
		/* libpq read nothing of it, sent nothing after it, and
		 * closed the socket. */
		probe_fail(p, msg);
		return false;
	}
	if (st == PGRES_POLLING_READING && authguard_waiting(p->guard)) {
		loop_remove_fd(p->src);
		p->src = NULL;
		loop_timer_arm_in(p->peek_timer, PROBE_PEEK_RETRY_MS);
		return false;
	}
	return true;
}

static void probe_connect_step(struct probe *p)
{
	PostgresPollingStatusType st;
	int r;

	st = PQconnectPoll(p->conn);
	if (!probe_guard_step(p, st))
		return;

	if (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING)
		probe_track(p);
	switch (st) {
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
	char msg[768], where[512];

	if (p->phase == PHASE_RESOLVE)
		snprintf(msg, sizeof(msg), "no answer within %d ms while "
			 "resolving %s", p->timeout_ms,
			 probe_host(p, p->next, where, sizeof(where)));
	else if (p->phase == PHASE_CONNECT && p->conn && p->at_known) {
		probe_where(p, where, sizeof(where));
		snprintf(msg, sizeof(msg), "no answer within %d ms while "
			 "connecting to %s", p->timeout_ms, where);
	} else
		snprintf(msg, sizeof(msg), "no answer within %d ms while %s",
			 p->timeout_ms,
			 p->phase == PHASE_CONNECT ? "connecting"
						   : "running the check query");
	p->timed_out = true;
	probe_fail(p, msg);
}

static void probe_peek_again(struct loop_timer *t, void *data)
{
	struct probe *p = data;

	(void)t;
	if (p->phase == PHASE_CONNECT && p->conn)
		probe_connect_step(p);
}

/* The turn of a lookup, an address or a host ended before libpq did with
 * it: it is given up, and the probe goes on with the next. */
static void probe_turn_timeout(struct loop_timer *t, void *data)
{
	struct probe *p = data;
	char msg[1024], text[1024], where[512], *end;

	if (p->phase == PHASE_RESOLVE) {
		/* c-ares cannot stop one lookup of several: its answer, if
		 * one comes, is ignored. */
		snprintf(msg, sizeof(msg), "no answer within %lld ms while "
			 "resolving %s",
			 (long long)(p->turn_end_ms - p->start_ms),
			 probe_host(p, p->next, where, sizeof(where)));
		probe_pass(p, msg);
		connplan_fail(p->plan, p->next);
		(void)probe_next_stage(p);
		return;
	}
	if (p->phase != PHASE_CONNECT || !p->at_known)
		return;
	/* Why libpq left the addresses before this one, in host order: its
	 * lines that are complete.  It starts each address's message when
	 * it starts on the address ("connection to server at ... failed: ")
	 * and ends it with a newline when it fails there. */
	snprintf(text, sizeof(text), "%s", PQerrorMessage(p->conn));
	end = strrchr(text, '\n');
	*(end ? end + 1 : text) = '\0';
	probe_libpq_text(p, text, msg, sizeof(msg));
	probe_pass(p, msg);
	probe_where(p, where, sizeof(where));
	snprintf(msg, sizeof(msg), "no answer within %lld ms while "
		 "connecting to %s", (long long)(p->at_end_ms - p->at_start_ms),
		 where);
	probe_pass(p, msg);
	if (p->at_end_ms >= p->turn_end_ms)
		connplan_fail(p->plan, p->at_entry);
	else
		connplan_skip(p->plan, p->at_entry, p->at_addr + 1);
	p->next = p->at_entry;
	probe_close_conn(p);
	(void)probe_next_stage(p);
}

/* Server messages outside a query (a FATAL before a shutdown, warnings)
 * would go to stderr by default: the probe reports errors itself. */
static void probe_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Remembers the secrets of conninfo, to scrub them from libpq's
 * messages.  Returns 0, -EINVAL when conninfo does not parse, or
 * -ENOMEM. */
static int probe_note_secrets(struct probe *p, const char *conninfo)
{
	int r = mask_secrets(conninfo, &p->secrets);

	if (r < 0)
		return r;
	p->password_secrets = p->secrets.n;
	/* libpq's own parse errors quote the offending text, which may be a
	 * password: report parse failures in our own words. */
	return p->secrets.parsed ? 0 : -EINVAL;
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
	p->at_known = false;
	loop_timer_disarm(p->turn_timer);
	p->conn = PQconnectStartParams(keys, vals, 0);
	p->guard = p->conn ? authguard_watch(p->conn) : NULL;
	if (!p->guard) {
		probe_fail(p, "out of memory");
		return true;
	}
	PQsetNoticeProcessor(p->conn, probe_notice, NULL);
	/* Verbose errors carry the SQLSTATE, which tells an authentication
	 * failure from an outage. */
	PQsetErrorVerbosity(p->conn, PQERRORS_VERBOSE);
	if (PQstatus(p->conn) == CONNECTION_BAD || probe_watch(p, EPOLLOUT) < 0)
		return probe_fail_conn(p);
	/* libpq has started on its first address already. */
	probe_track(p);
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
		probe_begin_turn(p, from);
		probe_arm_turn(p, p->turn_end_ms);
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
	bool given_up = connplan_state(p->plan, entry) != CONNPLAN_LOOKUP;
	char msg[512], label[300];

	if (!given_up && addrs &&
	    connplan_set_addrs(p->plan, entry, addrs, n) < 0) {
		addrs = NULL;
		why = "out of memory";
	}
	if (!given_up && !addrs) {
		snprintf(msg, sizeof(msg), "could not resolve %s: %s",
			 probe_host(p, entry, label, sizeof(label)),
			 why);
		p->lookup_error[entry] = strdup(msg);
		connplan_fail(p->plan, entry);
	}
	if (--p->lookups_left == 0) {
		resolve_free(p->resolve);
		p->resolve = NULL;
	}
	if (!given_up && p->phase == PHASE_RESOLVE && entry == p->next)
		(void)probe_next_stage(p);
}

/* Starts looking up every host name of the plan.  Returns 0 or a
 * negative errno. */
static int probe_lookup(struct probe *p)
{
	const char *names[CONNPLAN_HOSTS_MAX];
	struct resolve_opts ro = { .names = names,
				   .max_addrs = CONNPLAN_ADDRS_MAX,
				   .servers = p->dns_servers };

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
	p->basic = o->basic && o->conn;
	p->started_us = now_us();
	p->start_ms = now_ms();
	p->deadline_ms = p->start_ms + o->timeout_ms;
	p->turn = SIZE_MAX;
	p->conn = o->conn;
	if (o->dns_servers && !(p->dns_servers = strdup(o->dns_servers))) {
		probe_free(p);
		return -ENOMEM;
	}

	if (!p->conn) {
		r = probe_note_secrets(p, o->conninfo);
		if (r == -ENOMEM) {
			probe_free(p);
			return r;
		}
		if (r < 0) {
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
		for (size_t i = 0; i < connplan_hosts(p->plan); i++) {
			if (connplan_nameable(p->plan, i))
				continue;
			if (mask_secrets_add(&p->secrets,
					     connplan_host(p->plan, i)) < 0) {
				probe_free(p);
				return -ENOMEM;
			}
		}
	}
	p->timer = loop_timer_new(loop, probe_timeout, p);
	p->turn_timer = loop_timer_new(loop, probe_turn_timeout, p);
	p->peek_timer = loop_timer_new(loop, probe_peek_again, p);
	if (!p->timer || !p->turn_timer || !p->peek_timer) {
		probe_free(p);
		return -ENOMEM;
	}
	/* The deadline covers the name lookups too. */
	loop_timer_arm(p->timer, p->deadline_ms);
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

/*
 * Server health: the monitor connection and the checks; see health.h.
 *
 * Each check in flight has a slot in checks[]; a slot is its probe's
 * callback data, so the callback knows which one finished.  The owner's
 * callback runs last in every path and must not free the health (target.c
 * defers all its decisions to a timer).
 */
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/mask.h"
#include "common/pqerr.h"
#include "common/util.h"
#include "counters.h"
#include "health.h"
#include "probe.h"

struct health_check {
	struct health *h;
	struct probe *probe;
	bool busy;
	bool on_conn;   /* runs on the monitor connection */
	bool heartbeat; /* PROBE_QUERY_BASIC only */
	int64_t started_ms;
};

/* The slots live beside the public struct, which health.h keeps free of
 * probe internals. */
struct health_private {
	struct health pub;
	struct health_check checks[HEALTH_INFLIGHT_MAX];
};

#define PRIV(h) ((struct health_private *)(h))

const char *health_state_name(enum health_state state)
{
	switch (state) {
	case HEALTH_UNKNOWN: return "unknown";
	case HEALTH_UP: return "up";
	case HEALTH_SUSPECT: return "suspect";
	case HEALTH_DOWN: return "down";
	case HEALTH_RECOVERING: return "recovering";
	case HEALTH_REJECTED: return "rejected";
	}
	return "unknown";
}

bool health_fresh(const struct health *h)
{
	return h && h->state == HEALTH_UP && h->conn && !h->auth_failed &&
	       now_us() - h->seen_us < HEALTH_FRESH_MS * 1000LL;
}

bool health_may_log_in(const struct health *h)
{
	return h->auth_logins < PROBE_AUTH_RETRIES;
}

static unsigned health_inflight(struct health *h)
{
	unsigned n = 0;

	for (int i = 0; i < HEALTH_INFLIGHT_MAX; i++)
		n += PRIV(h)->checks[i].busy;
	return n;
}

/* The check interval bounds every pace: with checks more often than the
 * heartbeat, each check is one. */
static int64_t health_pace(const struct health *h, int64_t ms)
{
	return MIN(ms, h->cfg->interval_ms);
}

static int64_t health_late_ms(const struct health *h)
{
	return MIN(HEALTH_LATE_MS, h->cfg->timeout_ms / 2);
}

/* When the check on the monitor connection in flight is late (now_ms()
 * clock), or -1 when there is none. */
static int64_t health_late_at(struct health *h)
{
	for (int i = 0; i < HEALTH_INFLIGHT_MAX; i++) {
		const struct health_check *c = &PRIV(h)->checks[i];
		if (c->busy && c->on_conn)
			return c->started_ms + health_late_ms(h);
	}
	return -1;
}

int64_t health_hold_ms(const struct health *h)
{
	if (h->flaps == 0)
		return 0;
	if (h->flaps >= 20)
		return HEALTH_HOLD_MAX_MS;
	return MIN((int64_t)HEALTH_RECOVER_MS << h->flaps, HEALTH_HOLD_MAX_MS);
}

static void health_cancel_checks(struct health *h)
{
	for (int i = 0; i < HEALTH_INFLIGHT_MAX; i++) {
		struct health_check *c = &PRIV(h)->checks[i];
		if (!c->busy)
			continue;
		probe_cancel(c->probe);
		c->probe = NULL;
		c->busy = false;
	}
}

static void health_drop_conn(struct health *h)
{
	loop_remove_fd(h->src);
	h->src = NULL;
	if (h->conn)
		PQfinish(h->conn);
	h->conn = NULL;
}

static void health_check_done(const struct probe_result *res, void *data);
static void health_lost(struct health *h, const char *line,
			const char *sqlstate);
static void health_idle_event(struct loop_source *s, uint32_t events,
			      void *data);

static void health_start_check(struct health *h)
{
	struct probe_opts o = {
		.conninfo = h->conninfo,
		.timeout_ms = (int)h->cfg->timeout_ms,
		.keep = true,
		/* Past the check's own deadline: in a black hole the kernel's
		 * timeout must not beat the check's (a broken connection is
		 * not counted; a check that timed out is). */
		.keepalive_ms = (int)h->cfg->timeout_ms + HEALTH_LATE_MS,
	};
	struct health_check *c = NULL;
	int r;

	for (int i = 0; i < HEALTH_INFLIGHT_MAX && !c; i++)
		if (!PRIV(h)->checks[i].busy)
			c = &PRIV(h)->checks[i];
	if (!c || (!h->conn && !health_may_log_in(h)))
		return;
	h->last_start_ms = now_ms();
	if (h->state == HEALTH_DOWN)
		h->down_attempts++;
	c->on_conn = h->conn != NULL;
	c->started_ms = h->last_start_ms;
	/* Heartbeats between full checks, on a server that is up (one
	 * recovering or unknown is checked in full: its identity decides
	 * where the apps go). */
	c->heartbeat = c->on_conn &&
		       (h->state == HEALTH_UP || h->state == HEALTH_REJECTED) &&
		       h->last_start_ms - h->full_start_ms < h->cfg->interval_ms;
	if (!c->heartbeat)
		h->full_start_ms = h->last_start_ms;
	o.basic = c->heartbeat;
	if (c->on_conn) {
		/* The probe takes the idle connection over for the check. */
		loop_remove_fd(h->src);
		h->src = NULL;
		o.conn = h->conn;
		h->conn = NULL;
	}
	c->busy = true;
	/* The probe may finish before it returns (the callback then clears
	 * the slot, and may even reuse it): c is not touched after. */
	r = probe_start(h->loop, &o, health_check_done, c, &c->probe);
	if (r < 0) {
		c->busy = false;
		log_error("%s: cannot start a check: %s", h->label,
			  strerror(-r));
	}
}

/* The pause before the next login with credentials the server refused:
 * HEALTH_CONFIRM_MS doubling up to the check interval. */
static int64_t health_auth_delay(const struct health *h)
{
	int64_t d = HEALTH_CONFIRM_MS;

	for (unsigned i = 1; i < h->auth_logins && d < h->cfg->interval_ms; i++)
		d *= 2;
	return MIN(d, h->cfg->interval_ms);
}

static int64_t health_down_delay(const struct health *h)
{
	int64_t d = HEALTH_CONFIRM_MS;

	if (h->down_retry_ms > 0)
		return h->down_retry_ms;
	for (unsigned i = 1; i < h->down_attempts && d < h->cfg->interval_ms; i++)
		d *= 2;
	return MIN(d, h->cfg->interval_ms);
}

/* While confirming a failure: another check after the pause, unless
 * enough are in flight to reach the threshold. */
static int64_t health_confirm_next(struct health *h, unsigned n)
{
	if (h->failures + n >= h->cfg->threshold || n >= HEALTH_INFLIGHT_MAX)
		return -1;
	return h->last_start_ms + health_pace(h, HEALTH_CONFIRM_MS);
}

/* When the next check is due (now_ms() clock), or -1 while the checks in
 * flight must finish first. */
static int64_t health_next(struct health *h)
{
	int64_t confirm = health_pace(h, HEALTH_CONFIRM_MS);
	unsigned n = health_inflight(h);
	int64_t late;

	/* A check without the monitor connection logs in: with credentials
	 * the server refused, only as many times as a new value may try,
	 * and at the backoff's pace (whatever the state: a server that went
	 * away since must not make the agent hammer the role either). */
	if (!h->conn && !health_may_log_in(h))
		return -1;
	if (!h->conn && (h->auth_failed || h->state == HEALTH_REJECTED))
		return n > 0 ? -1 : h->last_start_ms + health_auth_delay(h);
	switch (h->state) {
	case HEALTH_REJECTED:
		/* Heartbeats and checks on the monitor connection, which
		 * logged in before. */
		return n > 0 ? -1
			     : h->last_start_ms +
				       health_pace(h, HEALTH_HEARTBEAT_MS);
	case HEALTH_UNKNOWN:
		return n > 0 ? -1 : h->last_start_ms + confirm;
	case HEALTH_UP:
	case HEALTH_RECOVERING:
		if (n > 0) {
			/* The monitor connection's check unanswered for
			 * long: a hang, or a server too busy.  Fresh
			 * connections tell, while it waits out its timeout
			 * (it counts as one of the threshold's checks). */
			late = health_late_at(h);
			if (late < 0)
				return -1;
			if (late > now_ms())
				return late;
			/* At least one fresh opinion, even with a threshold
			 * of 1: a late answer is no failure yet. */
			if (n == 1 && h->failures == 0 &&
			    h->cfg->threshold <= 1)
				return h->last_start_ms + confirm;
			return health_confirm_next(h, n);
		}
		/* No monitor connection (vouched for by a switch, or
		 * lost): open one soon, it is what notices a crash. */
		if (!h->conn)
			return h->last_start_ms + confirm;
		/* A recovering server's checks (the threshold's, then the
		 * hold's) are full ones: its identity decides the way back. */
		return h->last_start_ms +
		       health_pace(h, h->state == HEALTH_RECOVERING
					      ? HEALTH_RECOVER_MS
					      : HEALTH_HEARTBEAT_MS);
	case HEALTH_SUSPECT:
		/* Enough in flight to reach the threshold: wait for them. */
		return health_confirm_next(h, n);
	case HEALTH_DOWN:
		break;
	}
	return n > 0 ? -1 : h->last_start_ms + health_down_delay(h);
}

/* Starts the checks that are due and arms the timer for the next one.
 * Each start moves last_start_ms to now, so this ends within a few
 * rounds. */
static void health_plan(struct health *h)
{
	loop_timer_disarm(h->timer);
	for (int i = 0; i <= HEALTH_INFLIGHT_MAX; i++) {
		int64_t at = health_next(h);
		if (at < 0)
			return;
		if (at > now_ms()) {
			loop_timer_arm(h->timer, at);
			return;
		}
		health_start_check(h);
	}
}

static void health_timer_fire(struct loop_timer *t, void *data)
{
	health_plan(data);
}

static void health_log_recovering(const struct health *h)
{
	unsigned more = h->cfg->threshold - MIN(h->successes,
						 h->cfg->threshold);
	long long pace = (long long)health_pace(h, HEALTH_RECOVER_MS);

	if (h->flaps)
		log_info("%s: answers again; up after %u more good check(s), "
			 "%lld ms apart, and %lld s of answering (held: down "
			 "%u time(s) in a row within %d min of coming back)",
			 h->label, more, pace,
			 (long long)health_hold_ms(h) / 1000, h->flaps,
			 HEALTH_FLAP_WINDOW_MS / 60000);
	else
		log_info("%s: answers again; up after %u more good check(s), "
			 "%lld ms apart", h->label, more, pace);
}

/* Up from now.  back: after being down, the start of the time that says
 * whether its next fall is a flap (going down the first time is not). */
static void health_set_up(struct health *h, bool back)
{
	if (back)
		h->back_since_us = now_us();
	h->state = HEALTH_UP;
}

static void health_passed(struct health *h, const struct probe_result *res,
			  const struct health_check *c)
{
	bool on_conn = c->on_conn;
	unsigned failed = h->failures;

	h->rtt_us = res->elapsed_us;
	counters_health_check(h->name, h->role, res->elapsed_us / 1e6);
	/* A heartbeat does not read the identity; when the server's
	 * recovery changed, a full check reads it now (failover.h follows
	 * the standby flag, and a promotion moves the timeline). */
	if (!c->heartbeat)
		health_note(h, res);
	else if (h->in_recovery >= 0 && res->in_recovery != h->in_recovery)
		h->full_start_ms = h->last_start_ms = 0;
	h->failures = 0;
	h->down_attempts = 0;
	h->auth_failed = false;
	if (h->state == HEALTH_REJECTED && on_conn)
		return; /* no login: the credentials are still refused */
	if (!on_conn)
		h->auth_logins = 0;
	h->successes++;
	switch (h->state) {
	case HEALTH_REJECTED:
		/* It answered all along: up at once. */
		health_set_up(h, false);
		log_target(LOG_INFO, "credentials-accepted", h->name, 0,
			   "%s: credentials accepted again by the %s", h->label,
			   h->role);
		break;
	case HEALTH_UNKNOWN:
		health_set_up(h, false);
		log_info("%s: up (%s, check took %.1f ms)", h->label,
			 res->in_recovery ? "in recovery: a standby"
					  : "not in recovery",
			 res->elapsed_us / 1000.0);
		break;
	case HEALTH_UP:
		break;
	case HEALTH_SUSPECT:
		h->state = HEALTH_UP;
		log_info("%s: answers again after %u failed check(s)", h->label,
			 failed);
		break;
	case HEALTH_DOWN:
	case HEALTH_RECOVERING:
		if (h->state == HEALTH_DOWN)
			h->recovering_since_us = now_us();
		if (h->successes < h->cfg->threshold ||
		    now_us() - h->recovering_since_us <
			    health_hold_ms(h) * 1000) {
			if (h->state == HEALTH_DOWN)
				health_log_recovering(h);
			h->state = HEALTH_RECOVERING;
			break;
		}
		health_set_up(h, true);
		log_target(LOG_INFO, "server-up", h->name, 0,
			   "%s: back after %lld s (%u good checks in a row)",
			   h->label,
			   (long long)((now_us() - h->down_since_us) / 1000000),
			   h->successes);
		h->down_since_wall = 0;
		break;
	}
}

static void health_go_down(struct health *h, const char *why)
{
	/* Down again soon after it came back: a flap, which holds its next
	 * return longer (a crash loop must not move the apps at its pace). */
	if (h->back_since_us &&
	    now_us() - h->back_since_us < HEALTH_FLAP_WINDOW_MS * 1000LL)
		h->flaps++;
	else
		h->flaps = 0;
	h->back_since_us = 0;
	h->state = HEALTH_DOWN;
	h->down_since_us = now_us();
	h->down_since_wall = wall_s();
	h->down_attempts = 0;
	/* Retries count from here, at the owner's pace (which it sets once it
	 * has moved away): not from the last check started, seconds ago when
	 * a hang was confirmed, which would retry at once and, the server
	 * being back from a short stall, fail back in two seconds. */
	h->last_start_ms = now_ms();
	log_target(LOG_ERR, "server-down", h->name, 0,
		   "%s: down after %u failed check(s) in %lld ms: %s", h->label,
		   h->failures,
		   (long long)((now_us() - h->first_failure_us) / 1000), why);
}

/* Counts a failure of the server (not of the credentials), why it
 * failed kept for status. */
static void health_count_failure(struct health *h, const char *why)
{
	free(h->error);
	h->error = strdup(why);
	h->auth_failed = false;
	h->successes = 0;
	if (h->failures++ == 0)
		h->first_failure_us = now_us();
}

/* A failed check that leaves no doubt: down at once, without the
 * confirming checks. */
static void health_gone(struct health *h, const char *why, bool refused)
{
	char line[1024];

	health_count_failure(h, why);
	snprintf(line, sizeof(line), "%s (its connection %s, and a new one "
		 "failed: no more checks needed)", why,
		 h->lost_shutdown ? "said it shuts down"
				  : refused ? "closed and nothing listens"
					    : "closed");
	health_go_down(h, line);
}

/* The server refused the credentials: it answers, so this is no failure
 * of the server (not counted toward down), and logins are bounded. */
static void health_rejected(struct health *h, const char *why)
{
	set_strf(&h->error, "credentials rejected by the %s: %s", h->role, why);
	h->auth_failed = true;
	h->auth_logins++;
	h->failures = 0;
	h->successes = 0;
	h->down_since_wall = 0;
	h->state = HEALTH_REJECTED;
	if (h->auth_logins < PROBE_AUTH_RETRIES)
		log_target(LOG_WARNING, "credentials-rejected", h->name, 0,
			   "%s: credentials rejected by the %s (failed login "
			   "%u of at most %u): %s", h->label, h->role,
			   h->auth_logins, PROBE_AUTH_RETRIES, why);
	else
		log_target(LOG_ERR, "credentials-rejected", h->name, 0,
			   "%s: credentials rejected by the %s (failed login "
			   "%u of at most %u): %s; no more logins with this "
			   "value until it changes or dbswapctl reconnect",
			   h->label, h->role, h->auth_logins,
			   PROBE_AUTH_RETRIES, why);
}

void health_fail(struct health *h, const char *why, bool auth)
{
	if (auth) {
		health_rejected(h, why);
		return;
	}
	health_count_failure(h, why);
	switch (h->state) {
	case HEALTH_UNKNOWN:
	case HEALTH_UP:
	case HEALTH_SUSPECT:
	case HEALTH_REJECTED:
		if (h->failures < h->cfg->threshold) {
			h->state = HEALTH_SUSPECT;
			log_target(LOG_WARNING, "check-failed", h->name, 0,
				   "%s: check failed (%u of %u): %s", h->label,
				   h->failures, h->cfg->threshold, why);
			break;
		}
		health_go_down(h, why);
		break;
	case HEALTH_RECOVERING:
		h->state = HEALTH_DOWN;
		log_warning("%s: failed again while recovering: %s", h->label,
			    why);
		break;
	case HEALTH_DOWN:
		log_debug("%s: still down: %s", h->label, why);
		break;
	}
}

void health_note(struct health *h, const struct probe_result *res)
{
	h->in_recovery = res->in_recovery;
	h->identified = res->identified;
	if (res->identified) {
		if (h->timeline && res->timeline != h->timeline)
			log_info("%s: now on timeline %u (was %u)", h->label,
				 res->timeline, h->timeline);
		h->system_id = res->system_id;
		h->timeline = res->timeline;
		h->server_start_us = res->server_start_us;
	}
}

void health_vouch(struct health *h)
{
	bool back = h->state == HEALTH_DOWN || h->state == HEALTH_RECOVERING;

	if (h->state != HEALTH_UP && h->state != HEALTH_UNKNOWN)
		log_info("%s: up: a switch to it validated a new connection",
			 h->label);
	if (h->state != HEALTH_UP)
		health_set_up(h, back);
	h->failures = 0;
	h->successes = MAX(h->successes, 1u);
	h->down_attempts = 0;
	h->auth_failed = false;
	h->auth_logins = 0;
	h->down_since_wall = 0;
	health_plan(h);
}

static void health_watch_conn(struct health *h, PGconn *conn)
{
	if (h->conn || loop_add_fd(h->loop, PQsocket(conn), EPOLLIN | EPOLLRDHUP,
				   health_idle_event, h, &h->src) < 0) {
		PQfinish(conn);
		return;
	}
	h->conn = conn;
}

static void health_check_done(const struct probe_result *res, void *data)
{
	struct health_check *c = data;
	struct health *h = c->h;
	enum health_state before = h->state;
	bool quiet;

	c->busy = false;
	c->probe = NULL;
	h->checks++;
	h->last_check_wall = wall_s();
	/* The monitor connection broke under a check (a heartbeat, most
	 * likely: it is busy one second in a thousand): as when it breaks
	 * idle.  Only a timeout there is a failure of its own (a hang),
	 * except on a server that refuses the credentials: its fresh check
	 * tells, without a failure counted that would cut its login
	 * backoff short. */
	if (!res->ok && c->on_conn && !res->auth_failed && !h->lost &&
	    (!res->timed_out || h->state == HEALTH_REJECTED)) {
		health_lost(h, res->error, res->sqlstate);
		health_plan(h);
		return;
	}
	if (res->ok) {
		/* The others in flight are moot now. */
		health_cancel_checks(h);
		if (!c->heartbeat)
			h->ok_us = now_us();
		h->seen_us = now_us();
		health_passed(h, res, c);
		health_watch_conn(h, res->conn);
	} else {
		/* A server whose monitor connection closed and that now
		 * refuses connections (nothing listens) or says it is shutting
		 * down is gone: waiting for more refusals would only keep the
		 * apps on it.  A timeout is never this sure. */
		if (h->lost && !res->auth_failed &&
		    (h->lost_shutdown || res->refused || res->closed_early ||
		     streq(res->sqlstate, "57P03")) &&
		    h->peer && h->peer->state == HEALTH_UP &&
		    (h->state == HEALTH_UP || h->state == HEALTH_UNKNOWN ||
		     h->state == HEALTH_SUSPECT))
			health_gone(h, res->error, res->refused);
		else
			health_fail(h, res->error, res->auth_failed);
	}
	if (res->ok)
		h->lost = h->lost_shutdown = false;
	/* A heartbeat that changed nothing is not news for the owner. */
	quiet = c->heartbeat && res->ok && h->state == before &&
		h->full_start_ms != 0;
	health_plan(h);
	if (!quiet)
		h->fn(h, h->data);
}

/* The monitor connection closed (line: libpq's why, one line): a fresh
 * check at once, and only its failure counts (a dropped connection is
 * not an outage; the server's death is what that check tells). */
static void health_lost(struct health *h, const char *line,
			const char *sqlstate)
{
	h->lost = true;
	h->lost_shutdown = streq(sqlstate, "57P01") || streq(sqlstate, "57P02");
	log_target(LOG_WARNING, "connection-lost", h->name, 0,
		   "%s: monitor connection lost (%s); checking now", h->label,
		   line);
	if (health_inflight(h) == 0)
		health_start_check(h);
}

/* The idle monitor connection became readable: a notice, or the server
 * going away. */
static void health_idle_event(struct loop_source *s, uint32_t events,
			      void *data)
{
	struct health *h = data;
	char line[512], sqlstate[6];
	PGnotify *n;

	if (PQconsumeInput(h->conn) && PQstatus(h->conn) == CONNECTION_OK) {
		while ((n = PQnotifies(h->conn)))
			PQfreemem(n);
		return;
	}
	pqerr_line(PQerrorMessage(h->conn), line, sizeof(line), sqlstate);
	health_drop_conn(h);
	health_lost(h, line, sqlstate);
}

/* "NAME: role masked-conninfo", the start of every log line. */
static int health_set_label(struct health *h)
{
	char *masked = mask_conninfo(h->conninfo), *label;
	size_t n;

	if (!masked)
		return -ENOMEM;
	n = strlen(h->name) + strlen(h->role) + strlen(masked) + 4;
	label = malloc(n);
	if (label) {
		snprintf(label, n, "%s: %s %s", h->name, h->role, masked);
		free(h->label);
		h->label = label;
	}
	free(masked);
	return label ? 0 : -ENOMEM;
}

int health_new(struct loop *loop, const struct health_config *cfg,
	       const char *name, const char *role, char *conninfo,
	       bool start_down, health_fn *fn, void *data,
	       struct health **out)
{
	struct health_private *hp = zalloc(sizeof(*hp));
	struct health *h = &hp->pub;

	if (!hp)
		return -ENOMEM;
	for (int i = 0; i < HEALTH_INFLIGHT_MAX; i++)
		hp->checks[i].h = h;
	h->loop = loop;
	h->cfg = cfg;
	h->fn = fn;
	h->data = data;
	h->rtt_us = -1;
	h->in_recovery = -1;
	h->role = role;
	h->name = strdup(name);
	h->conninfo = secret_ref(conninfo);
	h->timer = loop_timer_new(loop, health_timer_fire, h);
	if (!h->name || !h->conninfo || !h->timer || health_set_label(h) < 0) {
		health_free(h);
		return -ENOMEM;
	}
	if (start_down) {
		h->state = HEALTH_DOWN;
		h->failures = cfg->threshold;
		h->down_since_us = h->first_failure_us = now_us();
		h->down_since_wall = wall_s();
	}
	*out = h;
	/* The first check: at once for an unknown server, after the down
	 * delay for one known to have failed. */
	h->last_start_ms = start_down ? now_ms() : 0;
	health_plan(h);
	return 0;
}

void health_free(struct health *h)
{
	if (!h)
		return;
	health_cancel_checks(h);
	health_drop_conn(h);
	loop_timer_free(h->timer);
	secret_unref(h->conninfo);
	free(h->label);
	free(h->name);
	free(h->error);
	free(PRIV(h));
}

void health_set_conninfo(struct health *h, char *conninfo)
{
	if (streq(conninfo, h->conninfo))
		return;
	secret_unref(h->conninfo);
	h->conninfo = secret_ref(conninfo);
	h->auth_logins = 0; /* a new value may try again */
	/* It may name another server: what the last one said of its
	 * recovery is not this one's (target_standby()). */
	h->in_recovery = -1;
	if (health_set_label(h) < 0)
		log_error("%s: out of memory", h->name);
	health_reconnect(h);
}

void health_reconnect(struct health *h)
{
	health_cancel_checks(h);
	health_drop_conn(h);
	/* Asked for by hand (dbswapctl reconnect): the credentials may try
	 * again. */
	h->auth_logins = 0;
	/* Due now, whatever the state. */
	h->last_start_ms = 0;
	health_start_check(h);
	health_plan(h);
}

void health_check_now(struct health *h)
{
	/* A full check, whose end the owner hears of: after the one in
	 * flight, if any (a heartbeat's end is then not quiet either). */
	h->full_start_ms = 0;
	if (health_inflight(h) > 0)
		return;
	h->last_start_ms = 0;
	health_plan(h);
}

void health_set_peer(struct health *h, const struct health *peer)
{
	h->peer = peer;
}

void health_set_down_retry(struct health *h, int64_t ms)
{
	if (h->down_retry_ms == ms)
		return;
	/* From the slow primary retry to backoff: the server is needed
	 * now, so the backoff starts over. */
	if (ms == 0)
		h->down_attempts = 0;
	h->down_retry_ms = ms;
	health_plan(h);
}

void health_reschedule(struct health *h)
{
	/* A threshold lowered below the failures already counted: down now,
	 * not never (no check would be started to cross it). */
	if (h->state == HEALTH_SUSPECT && h->failures >= h->cfg->threshold) {
		health_go_down(h, h->error ? h->error : "failed checks");
		health_plan(h);
		h->fn(h, h->data);
		return;
	}
	health_plan(h);
}

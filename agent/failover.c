/*
 * Failover between a target's primary and secondary; see failover.h.
 */
#include <stdio.h>
#include <stdlib.h>

#include "agent.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/mask.h"
#include "failover.h"
#include "health.h"
#include "probe.h"
#include "server.h"
#include "systemd.h"

/* The settings: env name, bounds, and where each goes.  The lower bounds
 * keep a typo from turning the agent into a busy loop; the upper ones are
 * a day (a check interval or retry beyond that is no check at all) and
 * ten minutes for one connection attempt. */
static const struct {
	const char *var;
	uint64_t min, max;
} failover_vars[] = {
	{ "DB_HEALTH_CHECK_INTERVAL", 100, 86400000 },
	{ "DB_CONNECTION_TIMEOUT", 100, 600000 },
	{ "DB_FAILURE_THRESHOLD", 1, 100 },
	{ "DB_PRIMARY_RETRY_INTERVAL", 100, 86400000 },
};

void failover_config_init(struct agent *a)
{
	a->failover = (struct health_config){
		.interval_ms = FAILOVER_DEFAULT_INTERVAL_MS,
		.timeout_ms = FAILOVER_DEFAULT_TIMEOUT_MS,
		.threshold = FAILOVER_DEFAULT_THRESHOLD,
		.retry_ms = FAILOVER_DEFAULT_RETRY_MS,
	};
}

void failover_update_settings(struct agent *a)
{
	uint64_t v[ARRAY_SIZE(failover_vars)];
	struct health_config next;
	char why[1024] = "";

	for (size_t i = 0; i < ARRAY_SIZE(failover_vars); i++) {
		const char *s = layers_get(&a->layers, failover_vars[i].var);
		v[i] = 0;
		if (!s || !*s)
			continue;
		/* Never quoted: a line typed into the wrong variable may be
		 * anything, a password too. */
		if (parse_uint(s, failover_vars[i].min, failover_vars[i].max,
			       &v[i]) < 0)
			append_reason(why, sizeof(why),
				      "%s: not a whole number from %llu to %llu",
				      failover_vars[i].var,
				      (unsigned long long)failover_vars[i].min,
				      (unsigned long long)failover_vars[i].max);
	}
	if (why[0]) {
		if (a->failover_error && streq(a->failover_error, why))
			return;
		free(a->failover_error);
		a->failover_error = strdup(why);
		log_warning("failover settings refused: %s; the previous "
			    "settings stay in force", why);
		return;
	}
	if (a->failover_error) {
		log_info("failover settings valid again");
		free(a->failover_error);
		a->failover_error = NULL;
	}
	next = (struct health_config){
		.interval_ms = v[0] ? (int64_t)v[0] : FAILOVER_DEFAULT_INTERVAL_MS,
		.timeout_ms = v[1] ? (int64_t)v[1] : FAILOVER_DEFAULT_TIMEOUT_MS,
		.threshold = v[2] ? (unsigned)v[2] : FAILOVER_DEFAULT_THRESHOLD,
		.retry_ms = v[3] ? (int64_t)v[3] : FAILOVER_DEFAULT_RETRY_MS,
	};
	if (next.interval_ms == a->failover.interval_ms &&
	    next.timeout_ms == a->failover.timeout_ms &&
	    next.threshold == a->failover.threshold &&
	    next.retry_ms == a->failover.retry_ms)
		return;
	a->failover = next;
	log_info("failover settings now: health check every %lld ms, "
		 "connection timeout %lld ms, down after %u failed checks, "
		 "primary retried every %lld ms",
		 (long long)next.interval_ms, (long long)next.timeout_ms,
		 next.threshold, (long long)next.retry_ms);
	for (size_t i = 0; i < a->n_targets; i++)
		for (int r = 0; r < ROLE_COUNT; r++)
			if (a->targets[i]->src[r].health)
				health_reschedule(a->targets[i]->src[r].health);
}

bool failover_enabled(const struct target *t)
{
	return t->src[ROLE_SECONDARY].defined;
}

/* Servers are monitored while failover is on, and also while the target
 * is not on its primary (the secondary taken out of the files while in
 * use: the way back needs the primary's health). */
static bool failover_monitoring(const struct target *t)
{
	return failover_enabled(t) ||
	       (t->generation > 0 && t->current != ROLE_PRIMARY);
}

/* Known down: nothing to switch to there. */
static bool source_down(const struct source *s)
{
	return !s->value || !s->health || s->health->state == HEALTH_DOWN;
}

/* The server refused the value's credentials: it is not down (no switch
 * away from it, no "unavailable" for it), but nothing to switch to
 * either, and a switch would be one more failed login. */
static bool source_rejected(const struct source *s)
{
	return s->health && (s->health->state == HEALTH_REJECTED ||
			     !health_may_log_in(s->health));
}

/* Worth a switch (which validates it first). */
static bool source_usable(const struct source *s)
{
	return !source_down(s) && !s->switch_failed && !source_rejected(s);
}

static bool source_answers(const struct source *s)
{
	return s->value && health_answers(s->health) && !s->switch_failed &&
	       !source_rejected(s);
}

bool failover_available(const struct target *t)
{
	enum target_role other = t->current == ROLE_SECONDARY ? ROLE_PRIMARY
							       : ROLE_SECONDARY;

	return failover_enabled(t) && source_answers(&t->src[other]);
}

const struct health *failover_watched(const struct target *t)
{
	return t->src[t->current == ROLE_SECONDARY ? ROLE_SECONDARY
						   : ROLE_PRIMARY].health;
}

static void failover_health_event(struct health *h, void *data)
{
	struct source *src = data;
	struct target *t = src->target;

	if (health_answers(h))
		src->switch_failed = false;
	/* The server in use refuses the credentials: the apps' new
	 * connections fail too, which status must say (the server is not
	 * down: nothing else would). */
	if (h == failover_watched(t) && h->state == HEALTH_REJECTED &&
	    h->error && !(t->failover_error && streq(t->failover_error, h->error)))
		set_strf(&t->failover_error, "%s", h->error);
	failover_changed(t);
}

/* Creates and frees monitors as failover is turned on and off and values
 * come and go; tells each how often to retry while down. */
static void failover_sync_monitors(struct target *t)
{
	struct agent *a = t->agent;
	bool on = failover_monitoring(t);

	for (int r = 0; r < ROLE_COUNT; r++) {
		struct source *src = &t->src[r];
		bool want = on && src->value;

		if (!want && src->health) {
			health_free(src->health);
			src->health = NULL;
		}
		if (want && !src->health) {
			/* A primary that failed while the target was on the
			 * secondary must earn its way back. */
			bool down = r == ROLE_PRIMARY &&
				    t->current == ROLE_SECONDARY;
			if (health_new(a->loop, &a->failover, t->name,
				       target_role_name((enum target_role)r),
				       src->value, down, failover_health_event,
				       src, &src->health) < 0)
				log_error("%s: cannot monitor the %s: out of "
					  "memory", t->name,
					  target_role_name((enum target_role)r));
		}
	}
	/* The primary is retried at DB_PRIMARY_RETRY_INTERVAL while the
	 * secondary serves well; otherwise (the secondary failing a check
	 * too, or no server in use) a down server is retried with backoff
	 * from HEALTH_CONFIRM_MS up to the check interval. */
	const struct health *sh = t->src[ROLE_SECONDARY].health;
	bool calm = t->current == ROLE_SECONDARY && sh &&
		    sh->state == HEALTH_UP;
	for (int r = 0; r < ROLE_COUNT; r++) {
		struct health *h = t->src[r].health;
		if (h)
			health_set_down_retry(h, r == ROLE_PRIMARY && calm
							 ? a->failover.retry_ms
							 : 0);
	}
}

/* Where the target should be now, and why it moves. */
static enum target_role failover_choose(const struct target *t,
					const char **reason)
{
	const struct source *p = &t->src[ROLE_PRIMARY];
	const struct source *s = &t->src[ROLE_SECONDARY];

	*reason = "failover";
	switch (t->current) {
	case ROLE_PRIMARY:
		if (!p->health)
			return ROLE_PRIMARY; /* not monitored */
		if (source_down(p))
			return source_usable(s) ? ROLE_SECONDARY : ROLE_NONE;
		/* Promoted elsewhere: the primary became a standby and the
		 * secondary a primary. */
		if (p->health->in_recovery == 1 && source_answers(s) &&
		    s->health->in_recovery == 0)
			return ROLE_SECONDARY;
		return ROLE_PRIMARY;
	case ROLE_SECONDARY:
		if (!s->health)
			return ROLE_SECONDARY;
		if (source_down(s))
			return source_usable(p) ? ROLE_PRIMARY : ROLE_NONE;
		*reason = "failback";
		if (!t->held && p->health && p->health->state == HEALTH_UP &&
		    p->health->in_recovery == 0 && !p->switch_failed)
			return ROLE_PRIMARY;
		return ROLE_SECONDARY;
	case ROLE_COUNT:
		break;
	}
	/* None available: the first that answers, a primary first. */
	*reason = "failback";
	if (source_answers(p) && p->health->in_recovery != 1)
		return ROLE_PRIMARY;
	if (source_answers(s))
		return ROLE_SECONDARY;
	if (source_answers(p))
		return ROLE_PRIMARY;
	return ROLE_NONE;
}

static void failover_reply(struct target *t, const char *error,
			   uint64_t generation)
{
	if (!t->request.pending)
		return;
	t->request.pending = false;
	server_reply(t->agent->server, &t->request, error, generation);
}

/* How long ago the server being left first failed, for the log. */
static long long failover_outage_ms(const struct target *t)
{
	const struct health *h = failover_watched(t);

	if (!h || h->failures == 0)
		return -1;
	return (long long)((now_us() - h->first_failure_us) / 1000);
}

static void failover_switch_done(const struct probe_result *res, void *data)
{
	struct target *t = data;
	enum target_role role = t->switch_to;
	struct source *src = &t->src[role];
	const char *reason = t->switch_reason;
	char *masked = mask_conninfo(src->value);
	long long outage = failover_outage_ms(t);

	t->switch_probe = NULL;
	if (!res->ok || (role == ROLE_PRIMARY && res->in_recovery)) {
		const char *why = res->ok ? "it is in recovery (a standby)"
					  : res->error;
		set_strf(&t->failover_error, "switch to the %s %s failed: %s",
			 target_role_name(role), masked ? masked : "?", why);
		log_target(LOG_ERR, "switch-failed", t->name, 0, "%s: %s",
			   t->name, t->failover_error);
		src->switch_failed = true;
		if (src->health)
			health_fail(src->health, why, res->auth_failed);
		failover_reply(t, t->failover_error, 0);
		free(masked);
		failover_changed(t);
		return;
	}
	if (t->current == ROLE_PRIMARY) {
		t->failovers++;
		t->last_failover_wall = wall_s();
	}
	if (streq(reason, "manual"))
		t->held = role == ROLE_SECONDARY;
	else if (role == ROLE_PRIMARY)
		t->held = false;
	if (outage >= 0)
		log_target(LOG_INFO, reason, t->name, t->generation + 1,
			   "%s: %s to the %s %s, validated in %.1f ms, %lld ms "
			   "after the %s's first failed check",
			   t->name, reason, target_role_name(role),
			   masked ? masked : "?", res->elapsed_us / 1000.0,
			   outage, target_role_name(t->current));
	else
		log_target(LOG_INFO, reason, t->name, t->generation + 1,
			   "%s: %s to the %s %s, validated in %.1f ms", t->name,
			   reason, target_role_name(role), masked ? masked : "?",
			   res->elapsed_us / 1000.0);
	free(masked);
	src->switch_failed = false;
	if (src->health)
		health_vouch(src->health);
	target_publish(t, role, reason, res->in_recovery);
	failover_reply(t, NULL, t->generation);
}

static void failover_switch(struct target *t, enum target_role role,
			    const char *reason)
{
	struct probe_opts o = {
		.conninfo = t->src[role].value,
		.timeout_ms = (int)t->agent->failover.timeout_ms,
	};
	int r;

	t->switch_to = role;
	t->switch_reason = reason;
	t->switch_started_us = now_us();
	r = probe_start(t->agent->loop, &o, failover_switch_done, t,
			&t->switch_probe);
	if (r < 0) {
		log_error("%s: cannot validate the %s: %s", t->name,
			  target_role_name(role), strerror(-r));
		failover_reply(t, "the agent is out of memory", 0);
	}
}

/* Nothing published yet: the primary as soon as it is validated; the
 * secondary if the primary's first validation failed. */
static void failover_first(struct target *t)
{
	const struct source *p = &t->src[ROLE_PRIMARY];
	const struct source *s = &t->src[ROLE_SECONDARY];

	if (p->value)
		target_publish(t, ROLE_PRIMARY, "rotation", p->value_standby);
	else if (s->value && s->defined &&
		 (p->state == TARGET_FAILED || p->state == TARGET_UNSET))
		target_publish(t, ROLE_SECONDARY, "failover", s->value_standby);
}

static void failover_unavailable(struct target *t)
{
	const struct source *p = &t->src[ROLE_PRIMARY];
	const struct source *s = &t->src[ROLE_SECONDARY];
	char why[1024] = "";

	for (int r = 0; r < ROLE_COUNT; r++) {
		const struct source *src = r == ROLE_PRIMARY ? p : s;
		const char *role = target_role_name((enum target_role)r);
		if (!src->value)
			append_reason(why, sizeof(why), "the %s has no "
				      "validated value", role);
		else if (src->health && src->health->error)
			append_reason(why, sizeof(why), "the %s is %s: %s",
				      role,
				      health_state_name(src->health->state),
				      src->health->error);
		else
			append_reason(why, sizeof(why), "the %s is down", role);
	}
	set_strf(&t->failover_error, "no server available: %s", why);
	log_target(LOG_ERR, "unavailable", t->name, t->generation + 1,
		   "%s: %s", t->name, t->failover_error);
	if (t->current == ROLE_PRIMARY) {
		t->failovers++;
		t->last_failover_wall = wall_s();
	}
	target_publish(t, ROLE_NONE, "unavailable", false);
}

static void failover_evaluate(struct loop_timer *timer, void *data)
{
	struct target *t = data;
	enum target_role want;
	const char *reason;

	failover_sync_monitors(t);
	/* Readiness waits for the first publish decided here. */
	systemd_changed(t->agent);
	if (t->switch_probe)
		return; /* decided again when it is done */
	if (t->generation == 0) {
		failover_first(t);
		return;
	}
	want = failover_choose(t, &reason);
	if (want == t->current)
		return;
	if (want == ROLE_NONE)
		failover_unavailable(t);
	else
		failover_switch(t, want, reason);
}

void failover_changed(struct target *t)
{
	loop_timer_arm_in(t->evaluate, 0);
}

int failover_init(struct target *t)
{
	t->evaluate = loop_timer_new(t->agent->loop, failover_evaluate, t);
	return t->evaluate ? 0 : -ENOMEM;
}

void failover_fini(struct target *t)
{
	probe_cancel(t->switch_probe);
	t->switch_probe = NULL;
	loop_timer_free(t->evaluate);
	free(t->failover_error);
}

void failover_request(struct target *t, enum target_role role,
		      const struct target_request *req)
{
	const struct source *src = &t->src[role];
	const struct source *s = &t->src[ROLE_SECONDARY];
	char why[512];

	if (t->request.pending) {
		server_reply(t->agent->server, req,
			     "another failover or failback of this target is "
			     "under way", 0);
		return;
	}
	if (role == ROLE_SECONDARY && !failover_enabled(t)) {
		snprintf(why, sizeof(why), "failover is disabled: set %s to "
			 "enable it", s->var);
		server_reply(t->agent->server, req, why, 0);
		return;
	}
	if (!src->value) {
		snprintf(why, sizeof(why), "the %s (%s) has no validated value%s%s",
			 target_role_name(role), src->var,
			 src->error ? ": " : "", src->error ? src->error : "");
		server_reply(t->agent->server, req, why, 0);
		return;
	}
	log_info("%s: manual %s requested", t->name,
		 role == ROLE_SECONDARY ? "failover" : "failback");
	if (t->current == role) {
		t->held = role == ROLE_SECONDARY;
		/* Held on the secondary: an automatic failback under way
		 * must not undo that. */
		if (t->held && t->switch_probe && t->switch_to == ROLE_PRIMARY) {
			probe_cancel(t->switch_probe);
			t->switch_probe = NULL;
		}
		server_reply(t->agent->server, req, NULL, 0);
		return;
	}
	/* A manual switch wins over an automatic one under way. */
	probe_cancel(t->switch_probe);
	t->switch_probe = NULL;
	t->request = *req;
	t->request.pending = true;
	failover_switch(t, role, "manual");
}

uint64_t failover_reconnect(struct target *t)
{
	for (int r = 0; r < ROLE_COUNT; r++)
		if (t->src[r].health)
			health_reconnect(t->src[r].health);
	if (t->generation == 0 || t->current == ROLE_NONE)
		return 0;
	log_info("%s: reconnect requested", t->name);
	target_publish(t, t->current, "reconnect", t->standby);
	return t->generation;
}

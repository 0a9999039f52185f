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

/* Lines about refused failover settings: FAILOVER_LOG_BURST at once,
 * then FAILOVER_LOG_PER_S a second (status keeps the whole truth). */
#define FAILOVER_LOG_BURST 20
#define FAILOVER_LOG_PER_S 5

void failover_config_init(struct agent *a)
{
	a->failover = (struct health_config){
		.interval_ms = FAILOVER_DEFAULT_INTERVAL_MS,
		.timeout_ms = FAILOVER_DEFAULT_TIMEOUT_MS,
		.threshold = FAILOVER_DEFAULT_THRESHOLD,
		.retry_ms = FAILOVER_DEFAULT_RETRY_MS,
	};
	log_bucket_init(&a->failover_log, FAILOVER_LOG_BURST,
			FAILOVER_LOG_PER_S, now_ms());
}

static void failover_observe(const struct change *c, void *data)
{
	(void)data;
	if (c->kind == CHANGE_SERVERS || c->kind == CHANGE_PUBLISHED)
		failover_changed(c->t);
}

int failover_start(struct agent *a)
{
	return changes_observe(&a->changes, failover_observe, a);
}

void failover_stop(struct agent *a)
{
	changes_forget(&a->changes, failover_observe, a);
}

void failover_update_settings(struct agent *a)
{
	uint64_t v[ARRAY_SIZE(failover_vars)];
	struct health_config next;
	char why[1024] = "", rule[512];

	for (size_t i = 0; i < ARRAY_SIZE(failover_vars); i++) {
		const char *s = layers_get(&a->layers, failover_vars[i].var);
		v[i] = 0;
		if (!s || !*s)
			continue;
		if (!target_agent_setting_may_use(a, failover_vars[i].var, rule,
						  sizeof(rule))) {
			append_reason(why, sizeof(why), "%s", rule);
			continue;
		}
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
		if (log_bucket_take(&a->failover_log, NULL, now_ms()))
			log_warning("failover settings refused: %s; the "
				    "previous settings stay in force", why);
		return;
	}
	if (a->failover_error) {
		if (log_bucket_take(&a->failover_log, NULL, now_ms()))
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

/* Worth a switch (which validates it first).  A server that flapped and
 * is not through its hold is not (health.h): a crash loop must not move
 * the apps at its pace. */
static bool source_usable(const struct source *s)
{
	return !source_down(s) && !s->switch_failed && !source_rejected(s) &&
	       (s->health->flaps == 0 || s->health->state == HEALTH_UP);
}

static bool source_answers(const struct source *s)
{
	return s->value && health_answers(s->health) && !s->switch_failed &&
	       !source_rejected(s);
}

/* Answers, and may be used when no server is: a server that flapped
 * must have passed its hold (health.h). */
static bool source_settled(const struct source *s)
{
	return source_answers(s) && health_settled(s->health);
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

/* What the two servers are to each other, from their identities (the
 * last good check of each): a replicated pair shares the system
 * identifier (a physical replica, promoted or not), an independent one
 * does not; one server under two names has the same identifier and
 * postmaster start.  Unknown until both were checked, or when the role
 * may not read the identity. */
enum failover_pair {
	PAIR_UNKNOWN, PAIR_REPLICATED, PAIR_INDEPENDENT, PAIR_SAME
};

static enum failover_pair failover_pair(const struct target *t)
{
	const struct health *p = t->src[ROLE_PRIMARY].health;
	const struct health *s = t->src[ROLE_SECONDARY].health;

	if (!p || !s || !p->identified || !s->identified)
		return PAIR_UNKNOWN;
	if (p->system_id != s->system_id)
		return PAIR_INDEPENDENT;
	return p->server_start_us == s->server_start_us ? PAIR_SAME
							: PAIR_REPLICATED;
}

const char *failover_pair_name(const struct target *t)
{
	switch (failover_pair(t)) {
	case PAIR_REPLICATED: return "replicated";
	case PAIR_INDEPENDENT: return "independent";
	case PAIR_SAME: return "same";
	case PAIR_UNKNOWN: break;
	}
	return failover_enabled(t) ? "unknown" : NULL;
}

const char *failover_warning(const struct target *t)
{
	if (failover_pair(t) != PAIR_INDEPENDENT || t->failovers == 0)
		return NULL;
	return "the primary and the secondary are independent databases "
	       "(their system identifiers differ): writes made on the "
	       "secondary during a failover stay on the secondary, a "
	       "failback does not copy them";
}

/* Whether moving the target to `to` would have the apps write to a
 * server that diverged from the other one (a split brain); why says so.
 * In a replicated pair that is a server on an older timeline than the
 * other (the other was promoted past it), or a writable one while the
 * other is writable too (the old primary back on its old timeline, or
 * two servers promoted).  An independent pair is two databases by
 * design: never.  With the pair unknown (the role may not read the
 * identities), two writable servers count as a split: the safe side. */
static bool failover_splits(const struct target *t, enum target_role to,
			    char *why, size_t size)
{
	enum target_role from = to == ROLE_PRIMARY ? ROLE_SECONDARY
						   : ROLE_PRIMARY;
	const struct health *a = t->src[to].health;
	const struct health *b = t->src[from].health;
	enum failover_pair pair = failover_pair(t);
	const char *verb = to == ROLE_PRIMARY ? "failing back"
					      : "failing over";
	unsigned ta = a ? a->timeline : 0, tb = b ? b->timeline : 0;
	bool both = a && b && a->in_recovery == 0 && b->in_recovery == 0;

	/* Only a server that answers now can take writes beside the other
	 * (a dead primary left behind is no split). */
	if (pair == PAIR_INDEPENDENT || pair == PAIR_SAME || !a || !b ||
	    !health_answers(b))
		return false;
	if (!both && pair == PAIR_REPLICATED && ta < tb) {
		snprintf(why, size, "the %s is on timeline %u, behind the %s on "
			 "%u (a promoted replica moved on): not %s",
			 target_role_name(to), ta, target_role_name(from), tb,
			 verb);
		return true;
	}
	if (!both)
		return false;
	if (pair == PAIR_REPLICATED)
		snprintf(why, size, "both servers writable; %s on timeline %u, "
			 "%s on %u: not %s", target_role_name(ROLE_PRIMARY),
			 to == ROLE_PRIMARY ? ta : tb,
			 target_role_name(ROLE_SECONDARY),
			 to == ROLE_PRIMARY ? tb : ta, verb);
	else
		snprintf(why, size, "both servers writable, and whether they "
			 "are one replicated database is unknown (the role may "
			 "not run pg_control_system()): not %s", verb);
	return true;
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

	if (t->src[ROLE_PRIMARY].health)
		health_set_peer(t->src[ROLE_PRIMARY].health, sh);
	if (sh)
		health_set_peer(t->src[ROLE_SECONDARY].health,
				t->src[ROLE_PRIMARY].health);
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
					const char **reason, char *blocked,
					size_t size)
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
		    p->health->in_recovery == 0 && !p->switch_failed &&
		    !source_rejected(p) &&
		    !failover_splits(t, ROLE_PRIMARY, blocked, size))
			return ROLE_PRIMARY;
		return ROLE_SECONDARY;
	case ROLE_COUNT:
		break;
	}
	/* None available: the first that answers, a primary first. */
	*reason = "failback";
	/* A replicated pair both writable, neither in use: the one on the
	 * newer timeline was promoted past the other. */
	if (source_answers(p) && source_answers(s) &&
	    failover_pair(t) == PAIR_REPLICATED &&
	    p->health->in_recovery == 0 && s->health->in_recovery == 0 &&
	    p->health->timeline != s->health->timeline) {
		const struct source *newer =
			p->health->timeline > s->health->timeline ? p : s;
		if (!source_settled(newer))
			return ROLE_NONE;
		return newer == p ? ROLE_PRIMARY : ROLE_SECONDARY;
	}
	/* Not to a server the other one has moved past (both answering). */
	bool p_ok = source_settled(p) &&
		    !(source_answers(s) &&
		      failover_splits(t, ROLE_PRIMARY, blocked, size));
	bool s_ok = source_settled(s) &&
		    !(source_answers(p) &&
		      failover_splits(t, ROLE_SECONDARY, blocked, size));
	if (p_ok && p->health->in_recovery != 1)
		return ROLE_PRIMARY;
	if (s_ok)
		return ROLE_SECONDARY;
	if (p_ok)
		return ROLE_PRIMARY;
	return ROLE_NONE;
}

/* A switch not made because it would split the brain: said once per
 * reason (status keeps it in last_error). */
static void failover_blocked(struct target *t, const char *why)
{
	if (t->failover_error && streq(t->failover_error, why))
		return;
	set_strf(&t->failover_error, "%s", why);
	log_target(LOG_ERR, "split-brain", t->name, 0, "%s: %s", t->name, why);
	target_event(t, "split-brain", t->current, "automatic");
}

/* Answers req (through whoever asked: changes.h). */
static void failover_answer(struct target *t,
			    const struct target_request *req,
			    const char *error, uint64_t generation)
{
	changes_tell(&t->agent->changes,
		     &(struct change){ .kind = CHANGE_ANSWERED, .t = t,
				       .req = req, .error = error,
				       .generation = generation });
}

static void failover_reply(struct target *t, const char *error,
			   uint64_t generation)
{
	if (!t->request.pending)
		return;
	t->request.pending = false;
	failover_answer(t, &t->request, error, generation);
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
	char why_split[512], how[128];

	t->switch_probe = NULL;
	/* An automatic switch decided on the last check: what the new
	 * connection found must not make it a split (a manual one was
	 * checked when asked, or forced). */
	if (res->ok && src->health)
		health_note(src->health, res);
	if (res->ok && !streq(reason, "manual") &&
	    failover_splits(t, role, why_split, sizeof(why_split))) {
		failover_blocked(t, why_split);
		free(masked);
		return;
	}
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
	if (res->elapsed_us < 0)
		snprintf(how, sizeof(how), "its monitor connection answered "
			 "%lld ms ago", src->health
					? (long long)((now_us() -
						       src->health->seen_us) / 1000)
					: -1LL);
	else
		snprintf(how, sizeof(how), "validated in %.1f ms",
			 res->elapsed_us / 1000.0);
	if (outage >= 0)
		log_target(LOG_INFO, role == ROLE_SECONDARY ? "failover"
				   : "failback", t->name, t->generation + 1,
			   "%s: %s to the %s %s, %s, %lld ms after the %s's "
			   "first failed check",
			   t->name, reason, target_role_name(role),
			   masked ? masked : "?", how, outage,
			   target_role_name(t->current));
	else
		log_target(LOG_INFO, role == ROLE_SECONDARY ? "failover"
				   : "failback", t->name, t->generation + 1,
			   "%s: %s to the %s %s, %s", t->name, reason,
			   target_role_name(role), masked ? masked : "?", how);
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
	const struct health *h = t->src[role].health;
	int r;

	t->switch_to = role;
	t->switch_reason = reason;
	t->switch_started_us = now_us();
	/* Away from a server that went down, to one whose monitor
	 * connection, logged in with this value, answered a moment ago: a
	 * new connection would only tell the same, and cost the apps a
	 * login's time before they get theirs. */
	if (streq(reason, "failover") && health_fresh(h)) {
		struct probe_result res = {
			.ok = true,
			.in_recovery = h->in_recovery == 1,
			.identified = h->identified,
			.system_id = h->system_id,
			.timeline = h->timeline,
			.server_start_us = h->server_start_us,
			.elapsed_us = -1, /* no probe */
		};
		failover_switch_done(&res, t);
		return;
	}
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

/* The server in use was promoted or demoted since it was published (its
 * checks say so): the apps are told with a new generation of the same
 * value, the standby flag as it is now.  Moves (a demoted primary while
 * the secondary took over) are failover_choose()'s, decided first. */
static void failover_follow(struct target *t)
{
	const struct health *h;
	const char *reason;
	bool standby;

	if (t->current == ROLE_NONE)
		return;
	h = t->src[t->current].health;
	if (!h || h->in_recovery < 0 || !health_answers(h) ||
	    (h->in_recovery == 1) == t->standby)
		return;
	standby = h->in_recovery == 1;
	reason = standby ? "demoted" : "promoted";
	log_target(LOG_WARNING, reason, t->name, t->generation + 1,
		   "%s: the %s in use is %s", t->name,
		   target_role_name(t->current),
		   standby ? "in recovery now (demoted to a standby: "
			     "read-only)"
			   : "out of recovery now (promoted: writable)");
	target_publish(t, t->current, reason, standby);
}

static void failover_evaluate(struct loop_timer *timer, void *data)
{
	struct target *t = data;
	enum target_role want;
	const char *reason;
	char blocked[512] = "";

	failover_sync_monitors(t);
	/* Readiness waits for the first publish decided here. */
	agent_changed(t->agent, CHANGE_STATUS, t);
	if (t->switch_probe && t->switch_to == ROLE_SECONDARY &&
	    !failover_enabled(t)) {
		/* The secondary was taken out of the files while a switch to
		 * it was under way: the apps must not be sent to it. */
		probe_cancel(t->switch_probe);
		t->switch_probe = NULL;
		log_info("%s: the switch to the secondary is cancelled: %s is "
			 "no longer defined", t->name, t->src[ROLE_SECONDARY].var);
		failover_reply(t, "cancelled: the secondary was taken out of "
			       "the files", 0);
	}
	if (t->switch_probe)
		return; /* decided again when it is done */
	if (t->generation == 0) {
		failover_first(t);
		return;
	}
	want = failover_choose(t, &reason, blocked, sizeof(blocked));
	if (blocked[0])
		failover_blocked(t, blocked);
	if (want == t->current) {
		failover_follow(t);
		return;
	}
	/* An automatic failback goes by what the secondary in use said at
	 * its last check, up to a check interval ago: it may have been
	 * promoted since, and the primary must not be taken back beside it
	 * (failover_splits()).  So the secondary is checked again first, and
	 * the decision made anew when that check is done. */
	if (want == ROLE_PRIMARY && t->current == ROLE_SECONDARY &&
	    streq(reason, "failback")) {
		struct health *sh = t->src[ROLE_SECONDARY].health;
		const struct health *ph = t->src[ROLE_PRIMARY].health;
		if (sh && ph && sh->ok_us <= ph->ok_us) {
			health_check_now(sh);
			return;
		}
	}
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
		      const struct target_request *req, bool force)
{
	const struct source *src = &t->src[role];
	const struct source *s = &t->src[ROLE_SECONDARY];
	char why[640], split[512];

	if (t->request.pending) {
		failover_answer(t, req,
			     "another failover or failback of this target is "
			     "under way", 0);
		return;
	}
	if (role == ROLE_SECONDARY && !failover_enabled(t)) {
		snprintf(why, sizeof(why), "failover is disabled: set %s to "
			 "enable it", s->var);
		failover_answer(t, req, why, 0);
		return;
	}
	if (!src->value) {
		snprintf(why, sizeof(why), "the %s (%s) has no validated value%s%s",
			 target_role_name(role), src->var,
			 src->error ? ": " : "", src->error ? src->error : "");
		failover_answer(t, req, why, 0);
		return;
	}
	if (t->current != role && failover_splits(t, role, split, sizeof(split))) {
		if (!force) {
			snprintf(why, sizeof(why), "%s; --force to switch "
				 "anyway", split);
			log_target(LOG_WARNING, "split-brain", t->name, 0,
				   "%s: manual %s refused: %s", t->name,
				   role == ROLE_SECONDARY ? "failover"
							  : "failback", split);
			failover_answer(t, req, why, 0);
			target_event(t, "split-brain", t->current, "manual");
			return;
		}
		log_target(LOG_WARNING, "split-brain", t->name, 0,
			   "%s: manual %s forced: %s", t->name,
			   role == ROLE_SECONDARY ? "failover" : "failback",
			   split);
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
		failover_answer(t, req, NULL, 0);
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
	target_publish(t, t->current, "reconnect", target_standby(t));
	return t->generation;
}

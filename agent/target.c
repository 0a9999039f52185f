/*
 * Target state: candidate, validation, publication; see target.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "agent.h"
#include "common/log.h"
#include "failover.h"
#include "health.h"
#include "common/loop.h"
#include "common/mask.h"
#include "ipc/protocol.h"
#include "probe.h"
#include "server.h"
#include "state.h"
#include "systemd.h"
#include "target.h"

const char *target_state_name(enum target_state state)
{
	switch (state) {
	case TARGET_UNSET: return "unset";
	case TARGET_VALIDATING: return "validating";
	case TARGET_OK: return "ok";
	case TARGET_FAILED: return "failed";
	}
	return "unknown";
}

/* The pool settings: env name suffix, wire key, bounds (protocol.h, so
 * that what the agent accepts is what a client's decoder accepts), and
 * the unit said in error messages. */
static const struct {
	const char *suffix;
	const char *key;
	uint64_t min, max;
	const char *unit;
} target_setting_defs[SETTING_COUNT] = {
	[SETTING_POOL_MAX] = { "_POOL_MAX", "pool_max", 1, IPC_POOL_SIZE_MAX,
			       "" },
	[SETTING_POOL_MIN] = { "_POOL_MIN", "pool_min", 0, IPC_POOL_SIZE_MAX,
			       "" },
	[SETTING_POOL_TIMEOUT] = { "_POOL_TIMEOUT", "pool_timeout_ms", 0,
				   IPC_POOL_TIMEOUT_MAX_MS,
				   " of milliseconds" },
	[SETTING_POOL_IDLE_TIMEOUT] = { "_POOL_IDLE_TIMEOUT",
					"pool_idle_timeout_ms", 0,
					IPC_POOL_TIMEOUT_MAX_MS,
					" of milliseconds" },
};

const char *target_setting_key(enum target_setting s)
{
	return target_setting_defs[s].key;
}

const char *target_role_name(enum target_role role)
{
	switch (role) {
	case ROLE_PRIMARY: return "primary";
	case ROLE_SECONDARY: return "secondary";
	case ROLE_COUNT: break;
	}
	return "none";
}

static void source_retry_fire(struct loop_timer *timer, void *data);

/* The env names of t's settings: the target's name less one trailing
 * "_URL" (DATABASE_URL reads DATABASE_POOL_MAX, the name apps and pool
 * libraries commonly use), or the whole name when it has no such end. */
static int target_setting_vars(struct target *t)
{
	size_t n = strlen(t->name);

	if (n >= 4 && streq(t->name + n - 4, "_URL"))
		n -= 4;
	for (int i = 0; i < SETTING_COUNT; i++) {
		const char *suffix = target_setting_defs[i].suffix;
		size_t len = strlen(suffix);
		char *var = malloc(n + len + 1);

		if (!var)
			return -ENOMEM;
		memcpy(var, t->name, n);
		memcpy(var + n, suffix, len + 1);
		t->setting_vars[i] = var;
	}
	return 0;
}

static int source_init(struct target *t, enum target_role role)
{
	struct source *src = &t->src[role];
	size_t n = strlen(t->name);

	src->target = t;
	src->role = role;
	src->state = TARGET_UNSET;
	src->retry = loop_timer_new(t->agent->loop, source_retry_fire, src);
	src->var = malloc(n + sizeof("_SECONDARY"));
	if (!src->retry || !src->var)
		return -ENOMEM;
	memcpy(src->var, t->name, n + 1);
	if (role == ROLE_SECONDARY)
		memcpy(src->var + n, "_SECONDARY", sizeof("_SECONDARY"));
	return 0;
}

static void source_fini(struct source *src)
{
	probe_cancel(src->probe);
	loop_timer_free(src->retry);
	health_free(src->health);
	free_secret(src->value);
	free_secret(src->candidate);
	free_secret(src->saved);
	free(src->error);
	free(src->var);
}

int target_new(struct agent *a, const char *name, struct target **out)
{
	struct target *t = zalloc(sizeof(*t));
	int r = -ENOMEM;

	if (!t)
		return -ENOMEM;
	t->agent = a;
	t->current = ROLE_NONE;
	t->name = strdup(name);
	if (!t->name)
		goto err_target;
	for (int i = 0; i < ROLE_COUNT; i++) {
		r = source_init(t, (enum target_role)i);
		if (r < 0)
			goto err_target;
	}
	r = target_setting_vars(t);
	if (r < 0)
		goto err_target;
	r = failover_init(t);
	if (r < 0)
		goto err_target;
	*out = t;
	return 0;

err_target:
	target_free(t);
	return r;
}

void target_free(struct target *t)
{
	if (!t)
		return;
	failover_fini(t);
	for (int i = 0; i < ROLE_COUNT; i++)
		source_fini(&t->src[i]);
	free_secret(t->conninfo);
	free(t->settings_error);
	for (int i = 0; i < SETTING_COUNT; i++)
		free(t->setting_vars[i]);
	free(t->name);
	free(t);
}

static void source_drop_candidate(struct source *src)
{
	probe_cancel(src->probe);
	src->probe = NULL;
	loop_timer_disarm(src->retry);
	free_secret(src->candidate);
	src->candidate = NULL;
	src->attempts = 0;
	src->gave_up = false;
}

void target_publish(struct target *t, enum target_role role,
		    const char *reason, bool standby)
{
	const struct source *src = role == ROLE_NONE ? NULL : &t->src[role];
	char *masked;

	if (src) {
		char *copy = strdup(src->value);
		if (!copy) {
			log_error("%s: out of memory", t->name);
			return;
		}
		free_secret(t->conninfo);
		t->conninfo = copy;
		t->published_seq = src->accepted_seq;
		t->published_saved = src->from_saved;
	}
	/* Without a server the last value stays in conninfo: the protocol
	 * needs one, and a client that ignores "server" keeps trying it,
	 * which is what it did before. */
	t->generation++;
	t->current = role;
	t->standby = src && standby;
	t->reason = reason;
	t->changed_wall = wall_s();
	t->published_us = now_us();
	masked = mask_conninfo(t->conninfo);
	if (!src)
		log_target(LOG_WARNING, reason, t->name, t->generation,
			   "%s: generation %llu published: no server is "
			   "available", t->name,
			   (unsigned long long)t->generation);
	else
		log_target(LOG_INFO, "published", t->name, t->generation,
			   "%s: generation %llu published (%s): %s %s%s%s",
			   t->name, (unsigned long long)t->generation, reason,
			   target_role_name(role), masked ? masked : "?",
			   t->standby ? " (in recovery: read-only)" : "",
			   t->published_saved ? " (saved before the restart)"
					      : "");
	free(masked);
	server_publish(t->agent->server, t);
	systemd_changed(t->agent);
	/* Which servers are monitored, and how, depends on the one in
	 * use. */
	failover_changed(t);
}

/* The newest value of src passed validation: it is now in force. */
static void source_accept(struct source *src, const struct probe_result *res)
{
	struct target *t = src->target;
	char *masked = mask_conninfo(src->candidate);
	/* The saved value in force, now validated: nothing to publish
	 * unless what the server is changed. */
	bool same = src->value && streq(src->value, src->candidate) &&
		    src->value_standby == res->in_recovery;

	free_secret(src->value);
	src->value = src->candidate;
	src->candidate = NULL;
	free_secret(src->saved);
	src->saved = NULL;
	src->from_saved = false;
	src->value_standby = res->in_recovery;
	src->accepted_seq = src->value_seq;
	src->validated_wall = wall_s();
	src->state = TARGET_OK;
	src->attempts = 0;
	src->validated_us = res->elapsed_us;
	src->switch_failed = false;
	set_strf(&src->error, NULL);
	log_target(LOG_INFO, "validated", t->name, 0,
		   "%s: %s value validated in %.1f ms: %s", t->name, src->var,
		   res->elapsed_us / 1000.0, masked ? masked : "?");
	free(masked);
	if (src->health && health_set_conninfo(src->health, src->value) < 0)
		log_error("%s: out of memory", t->name);
	if (t->current == src->role && same)
		t->published_saved = false;
	else if (t->current == src->role)
		target_publish(t, src->role, "rotation", res->in_recovery);
	else
		failover_changed(t);
	/* After the publish: the subscribers' updates go out first. */
	state_save(t->agent->state);
}

/* src has no value in force: the one saved before the restart takes its
 * place, as if the agent had never stopped.  Its candidate, if any, keeps
 * being retried. */
static void source_use_saved(struct source *src)
{
	struct target *t = src->target;
	char *masked;

	if (src->value || !src->saved)
		return;
	src->value = src->saved;
	src->saved = NULL;
	src->value_standby = src->saved_standby;
	src->validated_wall = src->saved_wall;
	src->from_saved = true;
	masked = mask_conninfo(src->value);
	log_target(LOG_NOTICE, "saved", t->name, 0,
		   "%s: %s: using the value validated before the restart%s%s: "
		   "%s", t->name, src->var,
		   src->candidate ? ", as the files' value does not validate"
				  : "",
		   src->candidate ? "" : ", as the files define none",
		   masked ? masked : "?");
	free(masked);
	failover_changed(t);
}

void target_set_saved(struct target *t, enum target_role role,
		      const char *conninfo, bool standby, int64_t validated_wall)
{
	struct source *src = &t->src[role];
	char *copy = strdup(conninfo);

	if (!copy)
		return;
	free_secret(src->saved);
	src->saved = copy;
	src->saved_standby = standby;
	src->saved_wall = validated_wall;
}

static void source_probe_done(const struct probe_result *res, void *data)
{
	struct source *src = data;
	struct target *t = src->target;
	char *masked;
	int64_t delay;

	src->probe = NULL;
	systemd_changed(t->agent);
	if (res->ok) {
		source_accept(src, res);
		return;
	}
	src->state = TARGET_FAILED;
	src->attempts++;
	masked = mask_conninfo(src->candidate);
	set_strf(&src->error, "new value %s failed validation: %s",
			 masked ? masked : "?", res->error);
	free(masked);
	/* A first value that fails may leave the other server to serve, or
	 * the one saved before a restart. */
	source_use_saved(src);
	failover_changed(t);
	if (res->auth_failed && src->attempts >= TARGET_AUTH_RETRIES) {
		src->gave_up = true;
		log_target(LOG_ERR, "gave-up", t->name, 0,
			   "%s: %s: %s; gave up after %u attempts so as not to "
			   "lock the role out; %s until the value changes or a "
			   "reload",
			   t->name, src->var, src->error, src->attempts,
			   src->value ? "the value in force stays"
			   : "nothing in force");
		return;
	}
	delay = backoff_ms(src->attempts - 1, TARGET_RETRY_FIRST_MS,
			   TARGET_RETRY_MAX_MS);
	log_target(LOG_WARNING, "rejected", t->name, 0,
		   "%s: %s: %s; %s; retry in %lld ms", t->name, src->var,
		   src->error,
		   src->value ? "the value in force stays" : "nothing in force",
		   (long long)delay);
	loop_timer_arm_in(src->retry, delay);
}

static void source_start_probe(struct source *src)
{
	struct agent *a = src->target->agent;
	struct probe_opts o = {
		.conninfo = src->candidate,
		.timeout_ms = (int)a->failover.timeout_ms,
	};
	int r;

	src->state = TARGET_VALIDATING;
	r = probe_start(a->loop, &o, source_probe_done, src, &src->probe);
	if (r < 0) {
		/* Out of memory or descriptors: may pass, so retried like a
		 * failed validation. */
		int64_t delay = backoff_ms(src->attempts++, TARGET_RETRY_FIRST_MS,
					   TARGET_RETRY_MAX_MS);
		set_strf(&src->error, "cannot start validation: %s",
			 strerror(-r));
		log_error("%s: %s: %s; retry in %lld ms", src->target->name, src->var,
			  src->error, (long long)delay);
		src->state = TARGET_FAILED;
		loop_timer_arm_in(src->retry, delay);
	}
}

static void source_retry_fire(struct loop_timer *timer, void *data)
{
	struct source *src = data;

	if (src->candidate && !src->probe)
		source_start_probe(src);
}

void target_retry_now(struct target *t)
{
	for (int i = 0; i < ROLE_COUNT; i++) {
		struct source *src = &t->src[i];
		if (!src->candidate || src->probe)
			continue;
		loop_timer_disarm(src->retry);
		src->attempts = 0;
		src->gave_up = false;
		source_start_probe(src);
	}
}

static void source_set_value(struct source *src, const char *value)
{
	struct target *t = src->target;
	bool was_defined = src->defined;

	src->defined = value && *value;
	if (!src->defined) {
		source_drop_candidate(src);
		/* Nothing in the files: the value saved before a restart,
		 * if any (the primary's: no secondary means no failover). */
		if (src->role == ROLE_PRIMARY)
			source_use_saved(src);
		if (src->state == TARGET_UNSET)
			return;
		src->state = TARGET_UNSET;
		src->value_seq = t->agent->eval_seq;
		if (src->role == ROLE_SECONDARY) {
			/* Taking the secondary out turns failover off. */
			set_strf(&src->error, NULL);
			if (was_defined)
				log_info("%s: %s is no longer defined; failover "
					 "is off", t->name, src->var);
			failover_changed(t);
		} else if (src->value) {
			set_strf(&src->error, "%s is no longer defined; the "
					      "value in force stays",
					 src->var);
			log_warning("%s: %s", t->name, src->error);
		} else {
			set_strf(&src->error, "%s is not defined in any env "
					      "file or the environment",
					 src->var);
		}
		return;
	}
	if (!was_defined && src->role == ROLE_SECONDARY)
		failover_changed(t);
	if (src->value && streq(value, src->value) && !src->from_saved) {
		/* Back to the value in force: a pending candidate is moot. */
		source_drop_candidate(src);
		src->state = TARGET_OK;
		set_strf(&src->error, NULL);
		return;
	}
	if (src->candidate && streq(value, src->candidate))
		return;
	source_drop_candidate(src);
	src->value_seq = t->agent->eval_seq;
	src->candidate = strdup(value);
	if (!src->candidate) {
		log_error("%s: out of memory", src->var);
		return;
	}
	source_start_probe(src);
}

void target_set_values(struct target *t)
{
	const struct layers *l = &t->agent->layers;

	for (int i = 0; i < ROLE_COUNT; i++)
		source_set_value(&t->src[i], layers_get(l, t->src[i].var));
}

/* pool settings */

static bool settings_equal(const struct target_settings *x,
			   const struct target_settings *y)
{
	for (int i = 0; i < SETTING_COUNT; i++) {
		if (x->set[i] != y->set[i])
			return false;
		if (x->set[i] && x->value[i] != y->value[i])
			return false;
	}
	return true;
}

bool target_has_settings(const struct target *t)
{
	for (int i = 0; i < SETTING_COUNT; i++)
		if (t->settings.set[i])
			return true;
	return false;
}

/* Reads the settings from the layers into *next; returns the reasons it
 * is refused in why (empty when valid).  A bad value is never quoted: a
 * line typed into the wrong variable may be anything, a password too. */
static void target_read_settings(struct target *t,
				 struct target_settings *next, char *why,
				 size_t whylen)
{
	const struct layers *l = &t->agent->layers;

	*next = (struct target_settings){ 0 };
	why[0] = '\0';
	for (int i = 0; i < SETTING_COUNT; i++) {
		const char *v = layers_get(l, t->setting_vars[i]);

		/* Empty like unset, as for targets: NAME= clears it. */
		if (!v || !*v)
			continue;
		if (parse_uint(v, target_setting_defs[i].min,
					 target_setting_defs[i].max,
					 &next->value[i]) < 0) {
			append_reason(why, whylen,
				    "%s: not a whole number%s from %llu to %llu",
				    t->setting_vars[i],
				    target_setting_defs[i].unit,
				    (unsigned long long)target_setting_defs[i].min,
				    (unsigned long long)target_setting_defs[i].max);
			continue;
		}
		next->set[i] = true;
	}
	if (next->set[SETTING_POOL_MIN] && next->set[SETTING_POOL_MAX] &&
	    next->value[SETTING_POOL_MIN] > next->value[SETTING_POOL_MAX])
		append_reason(why, whylen, "%s: %llu is more than %s (%llu)",
			    t->setting_vars[SETTING_POOL_MIN],
			    (unsigned long long)next->value[SETTING_POOL_MIN],
			    t->setting_vars[SETTING_POOL_MAX],
			    (unsigned long long)next->value[SETTING_POOL_MAX]);
}

void target_update_settings(struct target *t)
{
	struct target_settings next;
	char why[1024], desc[256] = "";
	unsigned sent;

	target_read_settings(t, &next, why, sizeof(why));
	if (why[0]) {
		/* Logged once per distinct reason, not at every evaluation
		 * of the files while it stands. */
		if (t->settings_error && streq(t->settings_error, why))
			return;
		free(t->settings_error);
		t->settings_error = strdup(why);
		log_warning("%s: pool settings refused: %s; %s", t->name, why,
			    target_has_settings(t)
				    ? "the previous settings stay in force"
				    : "no settings in force");
		return;
	}
	if (t->settings_error) {
		log_info("%s: pool settings valid again", t->name);
		free(t->settings_error);
		t->settings_error = NULL;
	}
	if (settings_equal(&next, &t->settings))
		return;
	t->settings = next;
	for (int i = 0; i < SETTING_COUNT; i++) {
		if (!next.set[i])
			continue;
		append_reason(desc, sizeof(desc), "%s %llu",
			    target_setting_defs[i].key,
			    (unsigned long long)next.value[i]);
	}
	sent = server_send_settings(t->agent->server, t);
	log_info("%s: pool settings now %s; sent to %u subscriber(s)",
		 t->name, desc[0] ? desc : "none (the apps' own)", sent);
}

/*
 * Target state: candidate, validation, publication; see target.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "agent.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/mask.h"
#include "ipc/protocol.h"
#include "probe.h"
#include "server.h"
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

static void target_retry_fire(struct loop_timer *timer, void *data);

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

int target_new(struct agent *a, const char *name, struct target **out)
{
	struct target *t = zalloc(sizeof(*t));
	int r = -ENOMEM;

	if (!t)
		return -ENOMEM;
	t->agent = a;
	t->state = TARGET_UNSET;
	t->name = strdup(name);
	t->retry = loop_timer_new(a->loop, target_retry_fire, t);
	if (!t->name || !t->retry)
		goto err_target;
	r = target_setting_vars(t);
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
	probe_cancel(t->probe);
	loop_timer_free(t->retry);
	free_secret(t->conninfo);
	free_secret(t->candidate);
	free(t->error);
	free(t->settings_error);
	for (int i = 0; i < SETTING_COUNT; i++)
		free(t->setting_vars[i]);
	free(t->name);
	free(t);
}

PRINTF(2, 3)
static void target_set_error(struct target *t, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	free(t->error);
	t->error = NULL;
	if (!fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	t->error = strdup(buf);
}

static void target_drop_candidate(struct target *t)
{
	probe_cancel(t->probe);
	t->probe = NULL;
	loop_timer_disarm(t->retry);
	free_secret(t->candidate);
	t->candidate = NULL;
	t->attempts = 0;
	t->gave_up = false;
}

static void target_publish(struct target *t, long long elapsed_us)
{
	char *masked;

	free_secret(t->conninfo);
	t->conninfo = t->candidate;
	t->candidate = NULL;
	t->generation++;
	t->published_seq = t->value_seq;
	t->changed_wall = wall_s();
	t->state = TARGET_OK;
	t->attempts = 0;
	t->validated_us = elapsed_us;
	t->published_us = now_us();
	target_set_error(t, NULL);
	masked = mask_conninfo(t->conninfo);
	log_info("%s: generation %llu published: %s (validated in %.1f ms)",
		 t->name, (unsigned long long)t->generation,
		 masked ? masked : "?", elapsed_us / 1000.0);
	free(masked);
	server_publish(t->agent->server, t);
}

static void target_probe_done(const struct probe_result *res, void *data)
{
	struct target *t = data;
	char *masked;
	int64_t delay;

	t->probe = NULL;
	if (res->ok) {
		target_publish(t, res->elapsed_us);
		return;
	}
	t->state = TARGET_FAILED;
	t->attempts++;
	masked = mask_conninfo(t->candidate);
	target_set_error(t, "new value %s failed validation: %s",
			 masked ? masked : "?", res->error);
	free(masked);
	if (res->auth_failed && t->attempts >= TARGET_AUTH_RETRIES) {
		t->gave_up = true;
		log_error("%s: %s; gave up after %u attempts so as not to lock "
			  "the role out; generation %llu stays in force until "
			  "the value changes or a reload",
			  t->name, t->error, t->attempts,
			  (unsigned long long)t->generation);
		return;
	}
	delay = backoff_ms(t->attempts - 1, TARGET_RETRY_FIRST_MS,
			   TARGET_RETRY_MAX_MS);
	log_warning("%s: %s; %s; retry in %lld ms", t->name, t->error,
		    t->conninfo ? "the published value stays in force"
				: "nothing published yet",
		    (long long)delay);
	loop_timer_arm_in(t->retry, delay);
}

static void target_start_probe(struct target *t)
{
	int r;

	t->state = TARGET_VALIDATING;
	r = probe_start(t->agent->loop, t->candidate, TARGET_PROBE_TIMEOUT_MS,
			target_probe_done, t, &t->probe);
	if (r < 0) {
		log_error("%s: cannot start validation: %s", t->name,
			  strerror(-r));
		t->state = TARGET_FAILED;
		loop_timer_arm_in(t->retry, TARGET_RETRY_MAX_MS);
	}
}

static void target_retry_fire(struct loop_timer *timer, void *data)
{
	struct target *t = data;

	if (t->candidate && !t->probe)
		target_start_probe(t);
}

void target_retry_now(struct target *t)
{
	if (!t->candidate || t->probe)
		return;
	loop_timer_disarm(t->retry);
	t->attempts = 0;
	t->gave_up = false;
	target_start_probe(t);
}

void target_set_value(struct target *t, const char *value)
{
	if (!value || !*value) {
		target_drop_candidate(t);
		if (t->state == TARGET_UNSET)
			return;
		t->state = TARGET_UNSET;
		t->value_seq = t->agent->eval_seq;
		if (t->conninfo) {
			target_set_error(t, "%s is no longer defined; generation "
					    "%llu stays in force",
					 t->name,
					 (unsigned long long)t->generation);
			log_warning("%s", t->error);
		} else {
			target_set_error(t, "%s is not defined in any env file "
					    "or the environment",
					 t->name);
		}
		return;
	}
	if (t->conninfo && streq(value, t->conninfo)) {
		/* Back to the published value: a pending candidate is moot. */
		target_drop_candidate(t);
		t->state = TARGET_OK;
		target_set_error(t, NULL);
		return;
	}
	if (t->candidate && streq(value, t->candidate))
		return;
	target_drop_candidate(t);
	t->value_seq = t->agent->eval_seq;
	t->candidate = strdup(value);
	if (!t->candidate) {
		log_error("%s: out of memory", t->name);
		return;
	}
	target_start_probe(t);
}

/* pool settings */

/* A decimal number with no sign, blank or other character, within
 * [min, max].  Returns 0 or -EINVAL. */
static int target_parse_setting(const char *s, uint64_t min, uint64_t max,
				uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		/* max is far below UINT64_MAX / 10: no overflow before this. */
		if (v > max)
			return -EINVAL;
	}
	if (v < min)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Appends "; "-separated reasons to a bounded buffer (a long one is cut,
 * not lost: the first reasons are the ones that count). */
PRINTF(3, 4)
static void reasons_add(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len && len + 2 < size) {
		memcpy(buf + len, "; ", 3);
		len += 2;
	}
	if (len + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

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
		if (target_parse_setting(v, target_setting_defs[i].min,
					 target_setting_defs[i].max,
					 &next->value[i]) < 0) {
			reasons_add(why, whylen,
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
		reasons_add(why, whylen, "%s: %llu is more than %s (%llu)",
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
		reasons_add(desc, sizeof(desc), "%s %llu",
			    target_setting_defs[i].key,
			    (unsigned long long)next.value[i]);
	}
	sent = server_send_settings(t->agent->server, t);
	log_info("%s: pool settings now %s; sent to %u subscriber(s)",
		 t->name, desc[0] ? desc : "none (the apps' own)", sent);
}

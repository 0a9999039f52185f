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

static void target_retry_fire(struct loop_timer *timer, void *data);

int target_new(struct agent *a, const char *name, struct target **out)
{
	struct target *t = zalloc(sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->agent = a;
	t->state = TARGET_UNSET;
	t->name = strdup(name);
	t->retry = loop_timer_new(a->loop, target_retry_fire, t);
	if (!t->name || !t->retry) {
		target_free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
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

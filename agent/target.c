/*
 * Target state: candidate, validation, publication; see target.h.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "agent.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/mask.h"
#include "counters.h"
#include "events.h"
#include "health.h"
#include "ipc/protocol.h"
#include "probe.h"
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

/* How a log line names a source: its target, then its variable when that
 * is another name ("DATABASE_URL: DATABASE_URL_SECONDARY: ..."), not
 * "DATABASE_URL: DATABASE_URL: ..." for the primary. */
#define SOURCE_FMT "%s%s%s"
#define SOURCE_ARGS(src)                                                 \
	(src)->target->name,                                             \
	streq((src)->var, (src)->target->name) ? "" : ": ",              \
	streq((src)->var, (src)->target->name) ? "" : (src)->var

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
	secret_unref(src->value);
	secret_unref(src->candidate);
	secret_unref(src->saved);
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
	log_bucket_init(&t->log, TARGET_LOG_BURST, TARGET_LOG_PER_S, now_ms());
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
	for (int i = 0; i < ROLE_COUNT; i++)
		source_fini(&t->src[i]);
	secret_unref(t->conninfo);
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
	secret_unref(src->candidate);
	src->candidate = NULL;
	src->attempts = 0;
	src->gave_up = false;
}

/* Whether a line about t caused by its values may go out.  Whoever can
 * write a target's value can make new ones as fast as the agent reads
 * them, each validated, rejected or published with a line of its own
 * (and a file that keeps adding and dropping a secondary or a pool
 * setting, refused and used again): when any of its names is in a file
 * anyone but root and the agent's user can write, the lines are
 * limited (TARGET_LOG_BURST, then TARGET_LOG_PER_S), and the next line
 * that goes says how many did not.  status keeps the whole truth. */
static bool name_private(const struct layers *l, const char *name)
{
	size_t layer;

	return !layers_origin(l, name, &layer) || layer == LAYERS_ENV ||
	       writers_private(&l->files[layer].writers);
}

static bool target_log_ok(struct target *t)
{
	const struct layers *l = &t->agent->layers;
	bool private = true;

	for (int i = 0; i < ROLE_COUNT; i++)
		private = private && name_private(l, t->src[i].var);
	for (int i = 0; i < SETTING_COUNT; i++)
		private = private && name_private(l, t->setting_vars[i]);
	if (private)
		return true;
	if (!log_bucket_take(&t->log, NULL, now_ms())) {
		t->log_suppressed++;
		return false;
	}
	if (t->log_suppressed)
		log_notice("%s: %u line(s) about its values not logged (the "
			   "log lines a target's writers cause are limited); "
			   "its state is in dbswapctl status", t->name,
			   t->log_suppressed);
	t->log_suppressed = 0;
	return true;
}

void target_event(const struct target *t, const char *event,
		  enum target_role role, const char *reason)
{
	events_emit(event, t->name, t->generation, target_role_name(role),
		    reason);
}

/* A publish that changed the server in use (from, before it) is an
 * event: failover, failback, or unavailable. */
static void publish_event(const struct target *t, enum target_role from)
{
	const char *reason = t->reason ? t->reason : "";
	const char *event = NULL;

	if (t->current == ROLE_NONE && from != ROLE_NONE)
		event = "unavailable";
	else if (t->current == ROLE_SECONDARY && from != ROLE_SECONDARY)
		event = "failover";
	else if (t->current == ROLE_PRIMARY &&
		 (from == ROLE_SECONDARY ||
		  (from == ROLE_NONE && t->generation > 1 &&
		   !streq(reason, "rotation"))))
		event = "failback";
	if (event)
		target_event(t, event, t->current, reason);
}

void target_publish(struct target *t, enum target_role role,
		    const char *reason, bool standby)
{
	const struct source *src = role == ROLE_NONE ? NULL : &t->src[role];
	enum target_role from = t->current;
	char *masked;

	if (src) {
		secret_unref(t->conninfo);
		t->conninfo = secret_ref(src->value);
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
	counters_published(t->name, reason,
			   from != t->current && t->generation > 1 ?
			   target_role_name(t->current) : NULL);
	publish_event(t, from);
	masked = mask_conninfo(t->conninfo);
	if (!src)
		log_target(LOG_WARNING, reason, t->name, t->generation,
			   "%s: generation %llu published: no server is "
			   "available", t->name,
			   (unsigned long long)t->generation);
	else if (target_log_ok(t))
		log_target(LOG_INFO, "published", t->name, t->generation,
			   "%s: generation %llu published (%s): %s %s%s%s",
			   t->name, (unsigned long long)t->generation, reason,
			   target_role_name(role), masked ? masked : "?",
			   t->standby ? " (in recovery: read-only)" : "",
			   t->published_saved ? " (saved before the restart)"
					      : "");
	free(masked);
	/* Which servers are monitored, and how, depends on the one in use:
	 * failover follows publishes too. */
	agent_changed(t->agent, CHANGE_PUBLISHED, t);
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

	secret_unref(src->value);
	src->value = src->candidate;
	src->candidate = NULL;
	secret_unref(src->saved);
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
	if (target_log_ok(t))
		log_target(LOG_INFO, "validated", t->name, 0,
			   SOURCE_FMT ": value validated in %.1f ms: %s",
			   SOURCE_ARGS(src), res->elapsed_us / 1000.0,
			   masked ? masked : "?");
	free(masked);
	if (src->health)
		health_set_conninfo(src->health, src->value);
	if (t->current == src->role && same)
		t->published_saved = false;
	else if (t->current == src->role)
		target_publish(t, src->role, "rotation", res->in_recovery);
	else
		agent_changed(t->agent, CHANGE_SERVERS, t);
	/* After the publish: the subscribers' updates go out first. */
	agent_changed(t->agent, CHANGE_ACCEPTED, t);
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
		   SOURCE_FMT ": using the value validated before the "
		   "restart%s%s: %s", SOURCE_ARGS(src),
		   src->candidate ? ", as the files' value does not validate"
				  : "",
		   src->candidate ? ""
		   : src->refused ? ", as the files' value is refused"
				  : ", as the files define none",
		   masked ? masked : "?");
	free(masked);
	agent_changed(t->agent, CHANGE_SERVERS, t);
}

void target_set_saved(struct target *t, enum target_role role,
		      const char *conninfo, bool standby, int64_t validated_wall)
{
	struct source *src = &t->src[role];
	char *copy;

	/* Saved by an agent without the limit: it could not be framed. */
	if (strlen(conninfo) > TARGET_VALUE_MAX) {
		log_warning(SOURCE_FMT ": the saved value is %zu bytes, over "
			    "the limit of %d bytes for a target's value: not "
			    "used", SOURCE_ARGS(src), strlen(conninfo),
			    TARGET_VALUE_MAX);
		return;
	}
	copy = secret_dup(conninfo);
	if (!copy)
		return;
	secret_unref(src->saved);
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
	agent_changed(t->agent, CHANGE_STATUS, t);
	counters_validation(t->name, target_role_name(src->role), res->ok ? "ok"
			    : res->auth_failed ? "rejected" : "failed");
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
	agent_changed(t->agent, CHANGE_SERVERS, t);
	if (res->auth_failed && src->attempts >= TARGET_AUTH_RETRIES) {
		src->gave_up = true;
		target_event(t, "gave-up", src->role, "authentication");
		if (target_log_ok(t))
			log_target(LOG_ERR, "gave-up", t->name, 0,
				   SOURCE_FMT ": %s; gave up after %u attempts so "
				   "as not to lock the role out; %s until the "
				   "value changes or a reload",
				   SOURCE_ARGS(src), src->error, src->attempts,
				   src->value ? "the value in force stays"
				   : "nothing in force");
		return;
	}
	delay = backoff_ms(src->attempts - 1, TARGET_RETRY_FIRST_MS,
			   TARGET_RETRY_MAX_MS);
	if (res->auth_failed)
		target_event(t, "rejected", src->role, "authentication");
	if (target_log_ok(t))
		log_target(LOG_WARNING, "rejected", t->name, 0,
			   SOURCE_FMT ": %s; %s; retry in %lld ms",
			   SOURCE_ARGS(src), src->error,
			   src->value ? "the value in force stays"
				      : "nothing in force",
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
		log_error(SOURCE_FMT ": %s; retry in %lld ms", SOURCE_ARGS(src),
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
			agent_changed(t->agent, CHANGE_SERVERS, t);
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
		agent_changed(t->agent, CHANGE_SERVERS, t);
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
	src->candidate = secret_dup(value);
	if (!src->candidate) {
		log_error("%s: out of memory", src->var);
		return;
	}
	source_start_probe(src);
}

/* where a target may not reach (see target.h) */

/* Bytes of a conninfo that are secret, as common/mask.c masks them. */
struct region {
	size_t off, end;
};
#define TARGET_REGIONS_MAX 16

struct regions {
	struct region r[TARGET_REGIONS_MAX];
	size_t n;
	size_t len; /* of the value */
};

static void regions_add(struct regions *rs, const char *s, const char *from,
			const char *to)
{
	if (to <= from)
		return;
	if (rs->n == TARGET_REGIONS_MAX) {
		/* Too many to tell apart: all of it. */
		rs->r[0] = (struct region){ 0, rs->len };
		rs->n = 1;
		return;
	}
	rs->r[rs->n++] = (struct region){ (size_t)(from - s), (size_t)(to - s) };
}

/* The key of a URI query parameter or a key=value pair names a password:
 * as mask.c, any case, percent-decoded in a URI. */
static bool region_secret_key(const char *key, size_t n, bool uri)
{
	char dec[sizeof("sslpassword")];
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		char c = key[i];
		if (uri && c == '%' && i + 2 < n && isxdigit((unsigned char)key[i + 1]) &&
		    isxdigit((unsigned char)key[i + 2])) {
			char hex[3] = { key[i + 1], key[i + 2], 0 };
			c = (char)strtol(hex, NULL, 16);
			i += 2;
		}
		if (len == sizeof(dec))
			return false;
		dec[len++] = c;
	}
	return (len == 8 && strncasecmp(dec, "password", 8) == 0) ||
	       (len == 11 && strncasecmp(dec, "sslpassword", 11) == 0);
}

static void regions_query(struct regions *rs, const char *s, const char *p)
{
	while (*p) {
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));

		if (eq && region_secret_key(p, (size_t)(eq - p), true))
			regions_add(rs, s, eq + 1, end);
		if (!amp)
			break;
		p = amp + 1;
	}
}

static void regions_uri(struct regions *rs, const char *s, size_t scheme_len)
{
	const char *start = s + scheme_len, *at = strrchr(start, '@');
	const char *query = strchr(start, '?'), *p = start, *q;

	if (at) {
		const char *colon = memchr(start, ':', (size_t)(at - start));
		bool in_query = query && colon > query &&
				memchr(start, '/', (size_t)(colon - start));
		if (colon && !in_query) {
			if (query && query < at) {
				/* As mask.c: the '@' may sit in the query, or
				 * the password hold a '?': up to the next '&'
				 * is taken for the password. */
				const char *amp = strchr(at, '&');
				regions_add(rs, s, colon + 1,
					    amp ? amp : s + rs->len);
				if (amp)
					regions_query(rs, s, amp + 1);
				return;
			}
			regions_add(rs, s, colon + 1, at);
			p = at;
		}
	}
	q = strchr(p, '?');
	if (q)
		regions_query(rs, s, q + 1);
}

static void regions_keyvalue(struct regions *rs, const char *s)
{
	const char *p = s;

	while (*p) {
		const char *key, *ws, *val;
		size_t klen;

		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		key = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		klen = (size_t)(p - key);
		ws = p;
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=') {
			/* Not key=value: what follows may be anything. */
			regions_add(rs, s, key, s + rs->len);
			return;
		}
		(void)ws;
		p++;
		while (isspace((unsigned char)*p))
			p++;
		val = p;
		if (*p == '\'') {
			for (p++; *p && *p != '\''; p++)
				if (*p == '\\' && p[1])
					p++;
			if (*p)
				p++;
		} else {
			for (; *p && !isspace((unsigned char)*p); p++)
				if (*p == '\\' && p[1])
					p++;
		}
		if (region_secret_key(key, klen, false))
			regions_add(rs, s, val, p);
	}
}

static void regions_of(const char *s, struct regions *rs)
{
	static const char *const schemes[] = { "postgresql://", "postgres://" };

	*rs = (struct regions){ .len = strlen(s) };
	for (size_t i = 0; i < ARRAY_SIZE(schemes); i++) {
		size_t n = strlen(schemes[i]);
		if (strncasecmp(s, schemes[i], n) == 0) {
			regions_uri(rs, s, n);
			return;
		}
	}
	if (strchr(s, '='))
		regions_keyvalue(rs, s);
	else
		regions_add(rs, s, s, s + rs->len);
}

/* A name a target may not use, and whose it is. */
struct barred {
	const char *name;
	const struct target *owner;
	bool conninfo; /* the owner's variable itself, else its password */
};

struct barred_list {
	struct barred *v;
	size_t n, cap;
	bool failed;
	const struct target *owner; /* while collecting */
};

static int barred_add(struct barred_list *b, const char *name, bool conninfo)
{
	struct barred *v;

	for (size_t i = 0; i < b->n; i++)
		if (b->v[i].owner == b->owner && streq(b->v[i].name, name))
			return 0;
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		v = realloc(b->v, cap * sizeof(*v));
		if (!v) {
			b->failed = true;
			return -ENOMEM;
		}
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n++] = (struct barred){ name, b->owner, conninfo };
	return 0;
}

static int barred_password(const char *name, size_t layer, bool literal,
			   void *data)
{
	return literal ? 0 : barred_add(data, name, false);
}

/* The names targets other than t (every target when t is NULL) own:
 * their variables, and every name that lands in their password
 * (layers_walk() keeps the layers' names alive until the layers change,
 * which is after this is used). */
static int barred_collect(const struct agent *a, const struct target *t,
			  struct barred_list *b)
{
	const struct layers *l = &a->layers;
	int r;

	for (size_t i = 0; i < a->n_targets; i++) {
		const struct target *o = a->targets[i];

		if (o == t)
			continue;
		b->owner = o;
		for (int role = 0; role < ROLE_COUNT; role++) {
			const char *v = layers_get(l, o->src[role].var);
			struct regions rs;

			r = barred_add(b, o->src[role].var, true);
			if (r < 0)
				return r;
			/* A value over the limit is refused and never
			 * published (source_check()): its password is no one's
			 * to protect, and walking it could take any number of
			 * steps: a user's own target built by doubling
			 * ${A}${A} must not stop every other target. */
			if (!v || strlen(v) > TARGET_VALUE_MAX)
				continue;
			regions_of(v, &rs);
			for (size_t k = 0; k < rs.n; k++) {
				r = layers_walk(l, o->src[role].var, rs.r[k].off,
						rs.r[k].end - rs.r[k].off,
						barred_password, b);
				if (r < 0)
					return r;
			}
		}
	}
	return 0;
}

struct uses_check {
	const struct barred_list *b;
	const struct barred *hit;
	const char *name;
};

static int uses_check_name(const char *name, size_t layer, bool literal,
			   void *data)
{
	struct uses_check *c = data;

	if (literal)
		return 0;
	for (size_t i = 0; i < c->b->n; i++) {
		if (streq(c->b->v[i].name, name)) {
			c->hit = &c->b->v[i];
			c->name = name;
			return 1;
		}
	}
	return 0;
}

/* Whether var, one of t's variables (or with t NULL, a setting of the
 * agent's own), may be used; if not, why says so (names only).  b:
 * barred_collect() for t. */
static bool target_may_use(const struct agent *a, const struct target *t,
			   const struct barred_list *b, const char *var,
			   char *why, size_t whylen)
{
	const char *who = t ? "a target" : "a setting every client sees";
	struct uses_check c = { .b = b };
	int r;

	if (b->failed) {
		snprintf(why, whylen, "%s: cannot check that it expands no other "
			 "target's conninfo or password (out of memory, or another "
			 "target's value expands more than %d variables)", var,
			 LAYERS_WALK_MAX);
		return false;
	}
	r = layers_walk(&a->layers, var, 0, SIZE_MAX, uses_check_name, &c);
	if (r == -E2BIG) {
		snprintf(why, whylen, "%s expands more than %d variables (through "
			 "others): too many to check that none is another "
			 "target's conninfo or password", var, LAYERS_WALK_MAX);
		return false;
	}
	if (r < 0) {
		snprintf(why, whylen, "%s: cannot check that it expands no "
			 "other target's conninfo or password (%s)", var,
			 strerror(-r));
		return false;
	}
	if (r == 0)
		return true;
	if (c.hit->conninfo)
		snprintf(why, whylen, "%s uses ${%s}, which is target %s's "
			 "conninfo: %s may not expand another target's "
			 "conninfo or password", var, c.name, c.hit->owner->name,
			 who);
	else
		snprintf(why, whylen, "%s uses ${%s}, which forms target %s's "
			 "password: %s may not expand another target's "
			 "conninfo or password", var, c.name, c.hit->owner->name,
			 who);
	return false;
}

/* Where text of a value came from: a file (or the environment), and the
 * name through which it came first. */
struct origin {
	size_t layer;
	const char *name;
};

struct origins {
	struct origin v[32];
	size_t n;
	bool more; /* more files than fit: the check then refuses */
};

static int origins_note(const char *name, size_t layer, bool literal,
			void *data)
{
	struct origins *o = data;

	if (!literal)
		return 0;
	for (size_t i = 0; i < o->n; i++)
		if (o->v[i].layer == layer)
			return 0;
	if (o->n == ARRAY_SIZE(o->v)) {
		o->more = true;
		return 0;
	}
	o->v[o->n++] = (struct origin){ layer, name };
	return 0;
}

static const struct writers *origin_writers(const struct layers *l,
					    size_t layer, struct writers *self)
{
	if (layer == LAYERS_ENV) {
		writers_self(self);
		return self;
	}
	return &l->files[layer].writers;
}

static const char *origin_path(const struct layers *l, size_t layer)
{
	return layer == LAYERS_ENV ? "the agent's environment"
				   : l->files[layer].path;
}

/* How a part of var's value is named in a message: "its own text" for
 * text written in var's definition, else "${NAME}". */
static void origin_part(const struct origin *p, const char *var, char *buf,
			size_t size)
{
	if (streq(p->name, var))
		snprintf(buf, size, "its own text");
	else
		snprintf(buf, size, "${%.100s}", p->name);
}

/* Whoever can change any part of var's value must be able to write
 * where its password comes from: else a writer of a file that gives only
 * ${DB_HOST} would have the password, written in another file, sent to a
 * server of theirs.  (layers.h's rule covers a file that reads a secret
 * from below; this, a secret that takes text from below.) */
static bool target_parts_trusted(const struct target *t, const char *var,
				 const char *value, char *why, size_t whylen)
{
	const struct layers *l = &t->agent->layers;
	struct origins parts = { 0 }, secret = { 0 };
	struct writers self1, self2;
	struct regions rs;
	char who[128];
	int r;

	r = layers_walk(l, var, 0, SIZE_MAX, origins_note, &parts);
	regions_of(value, &rs);
	for (size_t k = 0; k < rs.n && r == 0; k++)
		r = layers_walk(l, var, rs.r[k].off, rs.r[k].end - rs.r[k].off,
				origins_note, &secret);
	if (r < 0 || parts.more || secret.more) {
		snprintf(why, whylen, "%s: cannot check who can change its parts "
			 "(%s)", var, r == -ENOMEM ? "out of memory"
			 : "too many variables or files");
		return false;
	}
	/* No password in the value: libpq takes it from the agent's own
	 * password file (passfile=, ~/.pgpass) or PGPASSWORD, which only
	 * root and the agent's user can set: every part must come from files
	 * only they can write, or a user's ${DB_HOST} (or a user's whole
	 * value naming passfile=) would have that password sent to a server
	 * of theirs. */
	for (size_t i = 0; i < parts.n && rs.n == 0; i++) {
		const struct origin *p = &parts.v[i];
		char part[128];

		writers_self(&self2);
		if (writers_covered(origin_writers(l, p->layer, &self1), &self2,
				    who, sizeof(who)))
			continue;
		origin_part(p, var, part, sizeof(part));
		snprintf(why, whylen, "%s takes %s from %s, which %s can "
			 "write, into a value with no password of its own (the "
			 "agent would send its own, from a password file or "
			 "PGPASSWORD): such a value must come only from files "
			 "no one but root and the agent's user can write", var,
			 part, origin_path(l, p->layer), who);
		return false;
	}
	for (size_t i = 0; i < parts.n; i++) {
		const struct origin *p = &parts.v[i];
		for (size_t j = 0; j < secret.n; j++) {
			const struct origin *q = &secret.v[j];
			if (p->layer == q->layer ||
			    writers_covered(origin_writers(l, p->layer, &self1),
					    origin_writers(l, q->layer, &self2),
					    who, sizeof(who)))
				continue;
			char part[128];
			origin_part(p, var, part, sizeof(part));
			snprintf(why, whylen, "%s takes %s from %s, which %s "
				 "can write, into a value whose password comes "
				 "from %s, which they cannot write: whoever can "
				 "change a part of a target's value must be able "
				 "to write its password", var, part,
				 origin_path(l, p->layer), who,
				 origin_path(l, q->layer));
			return false;
		}
	}
	return true;
}

/* Whether every file that gives any of var's text (the one that defines
 * it included) could be written by no one but the writers of layer home
 * (LAYERS_ENV: root and the agent's user alone); if not, why says so,
 * after "VAR is defined in FILE, which WHO can write, but " and then
 * rule. */
static bool parts_covered(const struct layers *l, const char *var,
			  size_t home, const char *rule, char *why,
			  size_t whylen)
{
	struct origins parts = { 0 };
	struct writers self1, self2;
	char who[128];
	int r;

	if (!layers_origin(l, var, &parts.v[0].layer))
		return true;
	parts.v[0].name = var;
	parts.n = 1;
	r = layers_walk(l, var, 0, SIZE_MAX, origins_note, &parts);
	if (r < 0 || parts.more) {
		snprintf(why, whylen, "%s: cannot check who can change it (%s)",
			 var, r == -ENOMEM ? "out of memory"
			 : "too many variables or files");
		return false;
	}
	for (size_t i = 0; i < parts.n; i++) {
		const struct origin *p = &parts.v[i];
		char part[128];

		if (writers_covered(origin_writers(l, p->layer, &self1),
				    origin_writers(l, home, &self2), who,
				    sizeof(who)))
			continue;
		if (i == 0 || streq(p->name, var))
			snprintf(part, sizeof(part), "is defined in");
		else
			snprintf(part, sizeof(part), "takes ${%.100s} from",
				 p->name);
		snprintf(why, whylen, "%s %s %s, which %s can write, but %s",
			 var, part, origin_path(l, p->layer), who, rule);
		return false;
	}
	return true;
}

/* A target's other names (its _SECONDARY, its pool settings) steer
 * where and how the apps connect, so they may come only from files whose
 * writers could all write the file that defines the target's value: else
 * a user's file, above or below root's, could give root's target a
 * secondary of the user's, and the apps would fail over to it.  With the
 * value defined nowhere (one in force from before a restart, or taken
 * out of its file), only root and the agent's user may. */
static bool target_companion_trusted(const struct target *t, const char *var,
				     char *why, size_t whylen)
{
	const struct layers *l = &t->agent->layers;
	const char *primary = t->src[ROLE_PRIMARY].var;
	char rule[512];
	size_t home;

	if (!layers_origin(l, primary, &home))
		home = LAYERS_ENV;
	snprintf(rule, sizeof(rule), "%s comes from %s, which they cannot "
		 "write: a target's secondary and pool settings must come from "
		 "files whose writers could write its value", primary,
		 home == LAYERS_ENV && !getenv(primary)
			 ? "no file (only root and the agent's user may then "
			   "set them)"
			 : origin_path(l, home));
	return parts_covered(l, var, home, rule, why, whylen);
}

bool target_agent_setting_may_use(struct agent *a, const char *var,
				  char *why, size_t whylen)
{
	struct barred_list b = { 0 };
	bool ok;

	/* They apply to every target, root's too. */
	if (!parts_covered(&a->layers, var, LAYERS_ENV, "the agent's own "
			   "settings apply to every target and must come from "
			   "files no one but root and the agent's user can "
			   "write", why, whylen))
		return false;
	if (barred_collect(a, NULL, &b) < 0)
		b.failed = true;
	ok = target_may_use(a, NULL, &b, var, why, whylen);
	free(b.v);
	return ok;
}

/* Why value, the files' value of src, may not be used (the size limit,
 * the rule above); NULL when it may. */
static bool source_check(struct source *src, const struct barred_list *b,
			 const char *value, char *why, size_t whylen)
{
	struct target *t = src->target;
	const char *path = "the environment";
	unsigned line = 0;
	size_t n = value ? strlen(value) : 0;

	if (n > TARGET_VALUE_MAX) {
		if (layers_where(&t->agent->layers, src->var, &path, &line))
			snprintf(why, whylen, "%s (%s:%u) is %zu bytes, over the "
				 "limit of %d bytes for a target's value", src->var,
				 path, line, n, TARGET_VALUE_MAX);
		else
			snprintf(why, whylen, "%s (from the agent's environment) "
				 "is %zu bytes, over the limit of %d bytes for a "
				 "target's value", src->var, n, TARGET_VALUE_MAX);
		return false;
	}
	return !value || (target_may_use(t->agent, t, b, src->var, why,
					 whylen) &&
			  target_parts_trusted(t, src->var, value, why, whylen) &&
			  (src->role == ROLE_PRIMARY ||
			   target_companion_trusted(t, src->var, why, whylen)));
}

/* The files' value of src breaks a rule: none of it is used, the value
 * in force stays; logged once per reason. */
static void source_refuse(struct source *src, const char *why)
{
	struct target *t = src->target;
	bool again = src->refused && src->error && streq(src->error, why);

	source_drop_candidate(src);
	src->refused = true;
	if (again)
		return;
	/* As for a value that fails validation: the one saved before a
	 * restart, if nothing is in force. */
	source_use_saved(src);
	src->state = TARGET_FAILED;
	src->value_seq = t->agent->eval_seq;
	set_strf(&src->error, "%s", why);
	if (target_log_ok(t))
		log_target(LOG_WARNING, "refused", t->name, 0, "%s: %s; %s",
			   t->name, why,
			   src->value ? "the value in force stays"
				      : "nothing in force");
}

void target_set_values(struct target *t)
{
	const struct layers *l = &t->agent->layers;
	struct barred_list b = { 0 };
	char why[1024];

	if (barred_collect(t->agent, t, &b) < 0)
		b.failed = true;
	for (int i = 0; i < ROLE_COUNT; i++) {
		struct source *src = &t->src[i];
		const char *v = layers_get(l, src->var);

		if (!source_check(src, &b, v, why, sizeof(why))) {
			source_refuse(src, why);
			continue;
		}
		if (src->refused) {
			/* source_set_value() sets the state and error. */
			src->refused = false;
			set_strf(&src->error, NULL);
			if (target_log_ok(t))
				log_info("%s: %s may be used again", t->name,
					 src->var);
		}
		source_set_value(src, v);
	}
	free(b.v);
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
	struct barred_list b = { 0 };
	char rule[512];

	*next = (struct target_settings){ 0 };
	why[0] = '\0';
	if (barred_collect(t->agent, t, &b) < 0)
		b.failed = true;
	for (int i = 0; i < SETTING_COUNT; i++) {
		const char *v = layers_get(l, t->setting_vars[i]);

		/* Empty like unset, as for targets: NAME= clears it. */
		if (!v || !*v)
			continue;
		/* A number is sent to every subscriber: it may not be
		 * another target's (digits-only) password either. */
		if (!target_may_use(t->agent, t, &b, t->setting_vars[i], rule,
				    sizeof(rule)) ||
		    !target_companion_trusted(t, t->setting_vars[i], rule,
					      sizeof(rule))) {
			append_reason(why, whylen, "%s", rule);
			continue;
		}
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
	free(b.v);
}

void target_update_settings(struct target *t)
{
	struct target_settings next;
	char why[1024], desc[256] = "";

	target_read_settings(t, &next, why, sizeof(why));
	if (why[0]) {
		/* Logged once per distinct reason, not at every evaluation
		 * of the files while it stands. */
		if (t->settings_error && streq(t->settings_error, why))
			return;
		free(t->settings_error);
		t->settings_error = strdup(why);
		if (target_log_ok(t))
			log_warning("%s: pool settings refused: %s; %s",
				    t->name, why,
				    target_has_settings(t)
					    ? "the previous settings stay in force"
					    : "no settings in force");
		return;
	}
	if (t->settings_error) {
		if (target_log_ok(t))
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
	agent_changed(t->agent, CHANGE_SETTINGS, t);
	if (target_log_ok(t))
		log_info("%s: pool settings now %s; sent to %u subscriber(s)",
			 t->name, desc[0] ? desc : "none (the apps' own)",
			 t->n_subscribers);
}

struct target *target_find(struct agent *a, const char *name)
{
	for (size_t i = 0; i < a->n_targets; i++)
		if (streq(a->targets[i]->name, name))
			return a->targets[i];
	return NULL;
}

/* Logs, once per generation, that every subscriber uses it: from then on
 * no app on this host holds the previous value. */
static void target_check_acked(struct target *t)
{
	unsigned subscribers, acked;

	if (t->generation == 0 || t->all_acked == t->generation)
		return;
	target_count(t, &subscribers, &acked);
	if (subscribers == 0 || acked < subscribers)
		return;
	t->all_acked = t->generation;
	counters_converged(t->name, (now_us() - t->published_us) / 1e6);
	target_event(t, "rotation-complete", t->current, t->reason);
	log_target(LOG_INFO, "rotation-complete", t->name, t->generation,
		   "%s: generation %llu acked by all %u subscriber(s), %.1f ms "
		   "after it was published",
		   t->name, (unsigned long long)t->generation, subscribers,
		   (now_us() - t->published_us) / 1000.0);
}

void target_subscribed(struct target *t)
{
	t->n_subscribers++;
	agent_changed(t->agent, CHANGE_STATUS, t);
}

void target_unsubscribed(struct target *t, uint64_t acked)
{
	t->n_subscribers--;
	if (t->generation > 0 && acked == t->generation &&
	    t->acked_gen == t->generation)
		t->n_acked--;
	/* The last straggler leaving may complete a rotation. */
	target_check_acked(t);
	agent_changed(t->agent, CHANGE_STATUS, t);
}

void target_acked(struct target *t, uint64_t generation)
{
	if (generation == t->generation) {
		if (t->acked_gen != t->generation) {
			t->acked_gen = t->generation;
			t->n_acked = 0;
		}
		t->n_acked++;
	}
	target_check_acked(t);
	agent_changed(t->agent, CHANGE_STATUS, t);
}

void target_count(const struct target *t, unsigned *subscribers,
		  unsigned *acked)
{
	*subscribers = t->n_subscribers;
	*acked = t->generation > 0 && t->acked_gen == t->generation ?
			 t->n_acked : 0;
}

bool target_standby(const struct target *t)
{
	const struct health *h;

	if (t->current == ROLE_NONE)
		return false;
	h = t->src[t->current].health;
	if (h && h->in_recovery >= 0)
		return h->in_recovery == 1;
	return t->standby;
}

/*
 * The status reply: see status.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "common/crypto.h"
#include "common/mask.h"
#include "common/util.h"
#include "failover.h"
#include "health.h"
#include "ipc/frame.h"
#include "ipc/msg.h"
#include "layers.h"
#include "state.h"
#include "status.h"
#include "target.h"

/* What a status reply may hold, tried in turn until it fits in a frame:
 * status must keep working when many apps fail to switch, or every value
 * fails with a long error, which is when it is needed.  The last one
 * always fits: entries cut to names and states, lists to what fits. */
struct status_limits {
	size_t text;      /* longest error or other free text, in bytes */
	size_t nack;      /* longest nack message */
	unsigned lagging; /* lagging clients listed per target */
	bool brief;       /* entries cut down, lists cut to what fits */
};

static const struct status_limits status_limits_tried[] = {
	{ SIZE_MAX, IPC_NACK_MESSAGE_MAX, SERVER_LAGGING_MAX, false },
	{ 512, 128, SERVER_LAGGING_MAX, false },
	{ 128, 16, 4, false },
	{ 64, 0, 0, true },
};


/* Packs text the agent shows (nil for NULL) as printable UTF-8
 * (ipc_text_clean), cut on a character boundary to at most max bytes
 * plus "..." when longer.  A libpq error, a server's message, a file name
 * may hold anything; a status reply must decode everywhere and print
 * safely. */
static void pack_text(struct ipc_writer *w, const char *s, size_t max)
{
	size_t n;
	bool cut = false;
	char *clean;

	if (!s) {
		msgpack_pack_nil(&w->pk);
		return;
	}
	n = strlen(s);
	if (n <= max && ipc_text_is_clean(s, n)) {
		ipc_pack_str(w, s);
		return;
	}
	clean = ipc_text_clean(s, n, max, &cut);
	if (!clean) {
		w->failed = true;
		return;
	}
	n = strlen(clean);
	msgpack_pack_str(&w->pk, n + (cut ? 3 : 0));
	msgpack_pack_str_body(&w->pk, clean, n);
	if (cut)
		msgpack_pack_str_body(&w->pk, "...", 3);
	free(clean);
}

static void pack_kv_text(struct ipc_writer *w, const char *key, const char *s,
			 size_t max)
{
	ipc_pack_key(w, key);
	pack_text(w, s, max);
}

/* nil for 0: timestamps and durations not known yet. */
static void pack_kv_i64_or_nil(struct ipc_writer *w, const char *key,
			       int64_t v, bool known)
{
	ipc_pack_key(w, key);
	if (known)
		msgpack_pack_int64(&w->pk, v);
	else
		msgpack_pack_nil(&w->pk);
}

/* What a status reply shows the client that asked (PROTOCOL.md, "Access
 * control"). */
struct status_view {
	const struct status_source *src; /* the asker is src's */
	bool all; /* files, keys, the agent's errors: admins, and peers that
		   * may follow every target */
	bool peers; /* lagging clients of other uids: admins */
};

static bool status_may_follow(const struct status_view *v,
			      const struct target *t)
{
	return v->src->may_follow(t, v->src->data);
}

static void status_view_init(struct status_view *v,
			     const struct status_source *src)
{
	struct agent *a = src->agent;

	v->src = src;
	v->peers = src->admin;
	v->all = v->peers;
	if (v->all)
		return;
	v->all = true;
	for (size_t i = 0; i < a->n_targets && v->all; i++)
		v->all = status_may_follow(v, a->targets[i]);
}

/* Whether other shows in the asker's lagging lists. */
static bool status_shows_peer(const struct status_view *v,
			      const struct status_peer *other)
{
	return v->peers || other->uid == v->src->uid;
}

static void pack_failover(struct ipc_writer *w, const struct target *t,
			  const struct status_limits *lim)
{
	const struct health *watched = failover_watched(t);
	char hint[320], when[32];
	struct tm tm;
	time_t at = (time_t)t->last_failover_wall;

	snprintf(hint, sizeof(hint), "set %s to enable failover",
		 t->src[ROLE_SECONDARY].var);
	if (at)
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ",
			 gmtime_r(&at, &tm));
	msgpack_pack_map(&w->pk, 14);
	ipc_pack_kv_bool(w, "enabled", failover_enabled(t));
	ipc_pack_kv_str(w, "pair", failover_pair_name(t));
	ipc_pack_kv_str(w, "warning", failover_warning(t));
	pack_kv_text(w, "hint", failover_enabled(t) ? NULL : hint, lim->text);
	ipc_pack_kv_str(w, "current", target_role_name(t->current));
	ipc_pack_kv_bool(w, "standby", target_standby(t));
	ipc_pack_kv_bool(w, "failover_available", failover_available(t));
	ipc_pack_kv_bool(w, "held", t->held);
	ipc_pack_kv_u64(w, "failure_count", watched ? watched->failures : 0);
	ipc_pack_kv_u64(w, "failovers", t->failovers);
	/* Unix seconds like every other time in status; the RFC 3339 form
	 * is kept for the clients that read it (PROTOCOL.md, "Times"). */
	ipc_pack_kv_str(w, "last_failover", at ? when : NULL);
	pack_kv_i64_or_nil(w, "last_failover_unix", at, at != 0);
	pack_kv_i64_or_nil(w, "seconds_since_failover",
			   wall_s() - t->last_failover_wall, at != 0);
	pack_kv_text(w, "last_error", t->failover_error, lim->text);
}

static void pack_server(struct ipc_writer *w, const struct source *src,
			const struct status_limits *lim)
{
	const struct health *h = src->health;
	char *masked = src->value ? mask_conninfo(src->value) : NULL;

	msgpack_pack_map(&w->pk, 22);
	ipc_pack_kv_str(w, "role", target_role_name(src->role));
	pack_kv_text(w, "var", src->var, SIZE_MAX);
	pack_kv_text(w, "conninfo", masked, lim->text);
	ipc_pack_kv_str(w, "source", !src->value ? NULL
				     : src->from_saved ? "saved" : "files");
	ipc_pack_kv_str(w, "state", target_state_name(src->state));
	pack_kv_text(w, "error", src->error, lim->text);
	ipc_pack_kv_u64(w, "attempts", src->attempts);
	ipc_pack_kv_bool(w, "gave_up", src->gave_up);
	ipc_pack_kv_u64(w, "attempts_max", TARGET_AUTH_RETRIES);
	ipc_pack_kv_u64(w, "value_seq", src->value_seq);
	ipc_pack_kv_u64(w, "accepted_seq", src->accepted_seq);
	ipc_pack_kv_str(w, "health", h ? health_state_name(h->state) : "off");
	ipc_pack_kv_u64(w, "failures", h ? h->failures : 0);
	ipc_pack_kv_u64(w, "checks", h ? h->checks : 0);
	/* How long the last good check took, connecting included when it
	 * had to; rtt_us is its older name, kept for compatibility. */
	pack_kv_i64_or_nil(w, "check_us", h ? h->rtt_us : 0, h && h->rtt_us >= 0);
	pack_kv_i64_or_nil(w, "rtt_us", h ? h->rtt_us : 0, h && h->rtt_us >= 0);
	ipc_pack_key(w, "in_recovery");
	if (h && h->in_recovery >= 0)
		h->in_recovery ? msgpack_pack_true(&w->pk)
			       : msgpack_pack_false(&w->pk);
	else
		msgpack_pack_nil(&w->pk);
	pack_kv_i64_or_nil(w, "last_check", h ? h->last_check_wall : 0,
			   h && h->last_check_wall);
	pack_kv_i64_or_nil(w, "down_since", h ? h->down_since_wall : 0,
			   h && h->down_since_wall);
	pack_kv_text(w, "health_error", h ? h->error : NULL, lim->text);
	ipc_pack_kv_u64(w, "flaps", h ? h->flaps : 0);
	ipc_pack_kv_u64(w, "hold_ms", h ? (uint64_t)health_hold_ms(h) : 0);
	free_secret(masked);
}

/* A target as a client that may not follow it sees it, and as any client
 * sees it in the briefest reply: its name, generation, validity and
 * state.  Nothing that derives from its value (conninfo, errors naming
 * hosts, ports, users and databases; its servers' health) or from its
 * subscribers. */
static void pack_target_brief(struct ipc_writer *w, const struct target *t,
			      bool redacted)
{
	msgpack_pack_map(&w->pk, 5);
	pack_kv_text(w, "name", t->name, SIZE_MAX);
	ipc_pack_kv_u64(w, "generation", t->generation);
	ipc_pack_kv_bool(w, "valid", t->conninfo != NULL);
	ipc_pack_kv_str(w, "state",
			target_state_name(t->src[ROLE_PRIMARY].state));
	ipc_pack_kv_bool(w, "redacted", redacted);
}

/* Whether subscriber p shows in a lagging list for the asker. */
static bool status_lags(const struct status_view *v,
			const struct status_peer *p)
{
	return p->lags && status_shows_peer(v, p);
}

/* The subscribers of t in turn (struct status_source). */
static bool status_next(const struct status_view *v, const struct target *t,
			const void **cursor, struct status_peer *p)
{
	return v->src->subscriber(t, cursor, p, v->src->data);
}

static void pack_target(struct ipc_writer *w, struct target *t,
			const struct status_view *v,
			const struct status_limits *lim)
{
	const struct source *p = &t->src[ROLE_PRIMARY];
	unsigned subscribers, acked, n_lag = 0;
	struct status_peer c;
	const void *at;
	char *masked;

	if (!status_may_follow(v, t)) {
		pack_target_brief(w, t, true);
		return;
	}
	masked = t->conninfo ? mask_conninfo(t->conninfo) : NULL;
	target_count(t, &subscribers, &acked);
	msgpack_pack_map(&w->pk, 23);
	pack_kv_text(w, "name", t->name, SIZE_MAX);
	ipc_pack_kv_u64(w, "generation", t->generation);
	ipc_pack_kv_bool(w, "valid", t->conninfo != NULL);
	ipc_pack_kv_bool(w, "redacted", false);
	pack_kv_text(w, "conninfo", masked, lim->text);
	ipc_pack_kv_str(w, "source", !t->conninfo ? NULL
				     : t->published_saved ? "saved" : "files");
	ipc_pack_kv_str(w, "state", target_state_name(p->state));
	pack_kv_text(w, "error", p->error, lim->text);
	ipc_pack_key(w, "changed");
	if (t->changed_wall)
		msgpack_pack_int64(&w->pk, t->changed_wall);
	else
		msgpack_pack_nil(&w->pk);
	ipc_pack_kv_u64(w, "subscribers", subscribers);
	ipc_pack_kv_u64(w, "acked", acked);
	ipc_pack_kv_u64(w, "stale_acks", t->stale_acks);
	ipc_pack_kv_u64(w, "attempts", p->attempts);
	ipc_pack_kv_bool(w, "gave_up", p->gave_up);
	ipc_pack_kv_u64(w, "attempts_max", TARGET_AUTH_RETRIES);
	ipc_pack_kv_u64(w, "value_seq", p->value_seq);
	ipc_pack_kv_u64(w, "published_seq", t->published_seq);
	free_secret(masked);

	ipc_pack_key(w, "failover");
	pack_failover(w, t, lim);
	ipc_pack_key(w, "servers");
	/* The secondary while configured, or while its value is kept after
	 * it was taken out of the files. */
	bool secondary = failover_enabled(t) || t->src[ROLE_SECONDARY].value;
	msgpack_pack_array(&w->pk, 1 + secondary);
	pack_server(w, p, lim);
	if (secondary)
		pack_server(w, &t->src[ROLE_SECONDARY], lim);

	ipc_pack_key(w, "settings");
	msgpack_pack_map(&w->pk, SETTING_COUNT);
	for (int i = 0; i < SETTING_COUNT; i++) {
		ipc_pack_key(w, target_setting_key(i));
		if (t->settings.set[i])
			msgpack_pack_uint64(&w->pk, t->settings.value[i]);
		else
			msgpack_pack_nil(&w->pk);
	}
	pack_kv_text(w, "settings_error", t->settings_error, lim->text);

	ipc_pack_key(w, "lagging");
	/* Counted with the same predicate as packed below: the array header
	 * must announce exactly the entries that follow. */
	for (at = NULL; status_next(v, t, &at, &c);)
		n_lag += status_lags(v, &c);
	n_lag = MIN(n_lag, lim->lagging);
	msgpack_pack_array(&w->pk, n_lag);
	for (at = NULL; n_lag > 0 && status_next(v, t, &at, &c);) {
		if (!status_lags(v, &c))
			continue;
		msgpack_pack_map(&w->pk, 6);
		ipc_pack_kv_i64(w, "pid", c.pid);
		ipc_pack_kv_u64(w, "uid", c.uid);
		pack_kv_text(w, "name", c.name, SIZE_MAX);
		ipc_pack_kv_u64(w, "acked", c.acked);
		ipc_pack_kv_u64(w, "nacked", c.nacked);
		/* Only a nack of the current generation is the reason this
		 * client lags; an older one is history. */
		pack_kv_text(w, "error",
			     c.nacked && c.nacked == t->generation
				     ? c.nack_msg : NULL,
			     lim->nack);
		n_lag--;
	}

	/* Who follows the target, as far as the asker may see its peers
	 * and the limit goes: no subscriber counted in "subscribers" is a
	 * mystery. */
	unsigned n_sub = 0;
	for (at = NULL; status_next(v, t, &at, &c);)
		n_sub += status_shows_peer(v, &c);
	n_sub = MIN(n_sub, lim->lagging);
	ipc_pack_key(w, "subscribed");
	msgpack_pack_array(&w->pk, n_sub);
	for (at = NULL; n_sub > 0 && status_next(v, t, &at, &c);) {
		if (!status_shows_peer(v, &c))
			continue;
		msgpack_pack_map(&w->pk, 4);
		ipc_pack_kv_i64(w, "pid", c.pid);
		ipc_pack_kv_u64(w, "uid", c.uid);
		pack_kv_text(w, "name", c.name, SIZE_MAX);
		ipc_pack_kv_u64(w, "acked", c.acked);
		n_sub--;
	}
}

/* A file: its path and state for everyone; what it holds (its error, the
 * count of entries, its identity, whose size is the length of what it
 * holds) only for clients that see all (status_view). */
static void pack_layer(struct ipc_writer *w, const struct layer *f,
		       const struct status_view *v,
		       const struct status_limits *lim)
{
	static const char *const names[] = {
		[LAYER_OK] = "ok", [LAYER_ERROR] = "error",
		[LAYER_MISSING] = "missing", [LAYER_WRITING] = "writing",
	};
	static const char *const crypts[] = {
		[LAYER_PLAIN] = "none", [LAYER_SEALED] = "file",
		[LAYER_VALUES] = "values",
	};
	bool full = v->all && !lim->brief;

	msgpack_pack_map(&w->pk, full ? 8 : 3);
	pack_kv_text(w, "path", f->path, lim->brief ? IPC_NAME_MAX : SIZE_MAX);
	ipc_pack_kv_str(w, "state", names[f->state]);
	ipc_pack_kv_bool(w, "redacted", !v->all);
	if (!full)
		return;
	pack_kv_text(w, "error", f->error, lim->text);
	ipc_pack_kv_u64(w, "entries", f->parsed.n);
	ipc_pack_kv_str(w, "encryption", f->ever_good ? crypts[f->crypt] : NULL);
	ipc_pack_kv_str(w, "identity", f->identity[0] ? f->identity : NULL);
	ipc_pack_kv_u64(w, "seq", f->read_seq);
}

/* A key file: its path for everyone, its id and error as for files. */
static void pack_key(struct ipc_writer *w, const struct key_slot *k,
		     const struct status_view *v,
		     const struct status_limits *lim)
{
	char id[2 * CRYPT_KEY_ID_LEN + 1];
	bool full = v->all && !lim->brief;

	msgpack_pack_map(&w->pk, full ? 4 : 2);
	pack_kv_text(w, "path", k->path, lim->brief ? IPC_NAME_MAX : SIZE_MAX);
	ipc_pack_kv_bool(w, "redacted", !v->all);
	if (!full)
		return;
	if (k->key)
		crypt_id_hex(crypt_key_id(k->key), id);
	ipc_pack_kv_str(w, "id", k->key ? id : NULL);
	pack_kv_text(w, "error", k->error, lim->text);
}

/* The three lists of a status reply, each entry packed by one call. */
enum status_list { LIST_TARGETS, LIST_FILES, LIST_KEYS, LIST_COUNT };

static size_t status_list_len(const struct agent *a, enum status_list l)
{
	return l == LIST_TARGETS ? a->n_targets
	       : l == LIST_FILES ? a->layers.n_files
				 : a->keys.n_slots;
}

static void pack_entry(struct ipc_writer *w, enum status_list l, size_t i,
		       const struct status_view *v,
		       const struct status_limits *lim)
{
	struct agent *a = v->src->agent;

	if (l == LIST_FILES) {
		pack_layer(w, &a->layers.files[i], v, lim);
	} else if (l == LIST_KEYS) {
		pack_key(w, &a->keys.slots[i], v, lim);
	} else if (lim->brief) {
		pack_target_brief(w, a->targets[i],
				  !status_may_follow(v, a->targets[i]));
	} else {
		pack_target(w, a->targets[i], v, lim);
	}
}

/* Bytes entry i of list l takes; SIZE_MAX when out of memory. */
static size_t status_entry_size(enum status_list l, size_t i,
				const struct status_view *v,
				const struct status_limits *lim)
{
	struct ipc_writer x;
	size_t n;

	ipc_writer_init_plain(&x);
	pack_entry(&x, l, i, v, lim);
	n = x.failed ? SIZE_MAX : x.len;
	ipc_writer_fini(&x);
	return n;
}

/* Room kept, in a brief reply, for the lists' keys and array headers. */
#define STATUS_LISTS_OVERHEAD 64

/* Writes the status reply to m for src's asker within lim. */
static void pack_status(struct ipc_writer *w,
			const struct status_source *src,
			const struct ipc_msg *m,
			const struct status_limits *lim)
{
	static const char *const keys[LIST_COUNT] = { "targets", "files",
						      "keys" };
	struct agent *a = src->agent;
	struct status_view v;
	char state_err[512];
	size_t shown[LIST_COUNT];
	bool id = m && m->has_id;

	status_view_init(&v, src);
	/* The request's id first, as in every reply. */
	ipc_writer_init(w, IPC_STATUS, 5 + 1 + id);
	if (id)
		ipc_pack_kv_u64(w, "id", m->id);
	ipc_pack_kv_bool(w, "truncated", lim != &status_limits_tried[0]);
	ipc_pack_key(w, "agent");
	msgpack_pack_map(&w->pk, 9);
	ipc_pack_kv_str(w, "version", DBSWAP_VERSION);
	ipc_pack_kv_str(w, "instance", src->instance);
	ipc_pack_kv_i64(w, "pid", getpid());
	ipc_pack_kv_i64(w, "uptime_ms", now_ms() - a->started_ms);
	ipc_pack_kv_u64(w, "clients", src->clients);
	ipc_pack_key(w, "failover_settings");
	msgpack_pack_map(&w->pk, 4);
	ipc_pack_kv_u64(w, "health_check_interval_ms",
			(uint64_t)a->failover.interval_ms);
	ipc_pack_kv_u64(w, "connection_timeout_ms",
			(uint64_t)a->failover.timeout_ms);
	ipc_pack_kv_u64(w, "failure_threshold", a->failover.threshold);
	ipc_pack_kv_u64(w, "primary_retry_interval_ms",
			(uint64_t)a->failover.retry_ms);
	pack_kv_text(w, "failover_settings_error",
		     v.all ? a->failover_error : NULL, lim->text);
	pack_kv_text(w, "state_dir", state_dir(a->state), lim->text);
	pack_kv_text(w, "state_error",
		     v.all && state_error(a->state, state_err,
					  sizeof(state_err))
			     ? state_err : NULL,
		     lim->text);

	/* Every entry, unless brief: then as many of each list, in order,
	 * as fit in what the frame has left. */
	size_t used = w->len + STATUS_LISTS_OVERHEAD;
	for (int l = 0; l < LIST_COUNT; l++) {
		size_t n = status_list_len(a, l);

		shown[l] = n;
		if (!lim->brief)
			continue;
		for (size_t i = 0; i < n; i++) {
			size_t e = status_entry_size(l, i, &v, lim);
			if (e > IPC_FRAME_MAX || used + e > IPC_FRAME_MAX) {
				shown[l] = i;
				break;
			}
			used += e;
		}
	}
	for (int l = 0; l < LIST_COUNT; l++) {
		ipc_pack_key(w, keys[l]);
		msgpack_pack_array(&w->pk, shown[l]);
		for (size_t i = 0; i < shown[l]; i++)
			pack_entry(w, l, i, &v, lim);
	}
}

bool status_pack(struct ipc_writer *w, const struct status_source *src,
		 const struct ipc_msg *req)
{
	for (size_t i = 0; i < ARRAY_SIZE(status_limits_tried); i++) {
		pack_status(w, src, req, &status_limits_tried[i]);
		if (w->failed || w->len <= IPC_FRAME_MAX)
			return true;
		ipc_writer_fini(w);
	}
	return false;
}

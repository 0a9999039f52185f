/*
 * Subscriptions: see subs.h.
 */
#include <stdlib.h>

#include "access.h"
#include "agent.h"
#include "clients.h"
#include "common/log.h"
#include "ipc/msg.h"
#include "subs.h"
#include "target.h"

/* At most one log line per this interval about an update too long to
 * send: a value that stays too long must not flood the log. */
#define SUBS_OVERSIZE_LOG_MS 1000

bool subs_lags(const struct target *t, const struct subscription *sub)
{
	return t->generation > 0 && sub->acked != t->generation;
}

struct subscription *subs_find(const struct client *c,
			       const struct target *t)
{
	for (size_t i = 0; i < c->n_subs; i++)
		if (c->subs[i].target == t)
			return &c->subs[i];
	return NULL;
}

static int subs_send_update(struct subs *ss, struct client *c,
			    struct target *t)
{
	struct ipc_writer w;

	ipc_writer_init(&w, IPC_UPDATE, 8);
	ipc_pack_kv_str(&w, "target", t->name);
	ipc_pack_kv_u64(&w, "generation", t->generation);
	ipc_pack_kv_str(&w, "instance", ss->instance);
	ipc_pack_kv_str(&w, "conninfo", t->conninfo);
	ipc_pack_kv_str(&w, "reason", t->reason ? t->reason : "rotation");
	ipc_pack_kv_str(&w, "server", target_role_name(t->current));
	ipc_pack_kv_bool(&w, "standby", t->standby);
	/* A value too long to frame (the env layer bounds values far below
	 * this) is not sent, and the client is kept: dropping it would only
	 * make it reconnect, subscribe and be dropped again, every 20 ms, and
	 * it keeps the value it has.  Said at most once a second. */
	if (!w.failed && w.len > IPC_FRAME_MAX) {
		int64_t now = now_ms();

		if (now - ss->oversize_log_ms >= SUBS_OVERSIZE_LOG_MS) {
			log_error("%s generation %llu: the update would be "
				  "%zu bytes, over the %d byte frame limit: "
				  "not sent to its subscribers, who keep what "
				  "they have",
				  t->name, (unsigned long long)t->generation,
				  w.len, IPC_FRAME_MAX);
			ss->oversize_log_ms = now;
		}
		ipc_writer_fini(&w);
		return 0;
	}
	return client_send(c, &w);
}

/* The pool settings in force for t; absent ones are left out. */
static int subs_send_settings_to(struct client *c, struct target *t)
{
	struct ipc_writer w;
	size_t n = 0;

	for (int i = 0; i < SETTING_COUNT; i++)
		n += t->settings.set[i];
	ipc_writer_init(&w, IPC_SETTINGS, 2 + n);
	ipc_pack_kv_str(&w, "target", t->name);
	for (int i = 0; i < SETTING_COUNT; i++)
		if (t->settings.set[i])
			ipc_pack_kv_u64(&w, target_setting_key(i),
					t->settings.value[i]);
	return client_send(c, &w);
}

void subs_subscribe(struct subs *ss, struct client *c,
		    const struct ipc_msg *m)
{
	struct agent *a = ss->agent;
	struct target *req[IPC_SUBSCRIBE_MAX]; /* named targets, once each */
	size_t n_req = 0, n_new = 0;

	/* All or nothing: check every name before subscribing to any. */
	for (size_t i = 0; i < m->n_targets; i++) {
		struct target *t = target_find(a, m->targets[i]);
		bool dup = false;
		if (!t) {
			client_reject(c, m, IPC_ERR_UNKNOWN_TARGET,
				      "no target named \"%s\" in this agent",
				      m->targets[i]);
			return;
		}
		if (!access_may_subscribe(ss->access, &c->cred, t->name)) {
			client_log(c, LOG_WARNING, CLIENT_FMT " gid %u may "
				   "not subscribe to %s: refused",
				   CLIENT_ARGS(c), (unsigned)c->cred.gid,
				   t->name);
			client_reject(c, m, IPC_ERR_FORBIDDEN,
				      "uid %u may not subscribe to %s",
				      (unsigned)c->cred.uid, t->name);
			return;
		}
		for (size_t j = 0; j < n_req && !dup; j++)
			dup = req[j] == t;
		if (dup)
			continue;
		req[n_req++] = t;
		n_new += subs_find(c, t) == NULL;
	}
	if (c->n_subs + n_new > IPC_SUBSCRIBE_MAX) {
		client_reject(c, m, IPC_ERR_LIMIT,
			      "at most %d subscriptions per client",
			      IPC_SUBSCRIBE_MAX);
		return;
	}
	struct subscription *subs =
		realloc(c->subs, (c->n_subs + n_new + 1) * sizeof(*subs));
	if (!subs) {
		client_error(c, m, IPC_ERR_INTERNAL, "out of memory");
		return;
	}
	c->subs = subs;
	for (size_t i = 0; i < n_req; i++) {
		if (subs_find(c, req[i]))
			continue;
		c->subs[c->n_subs++] = (struct subscription){ .target = req[i] };
		target_subscribed(req[i]);
		client_log(c, LOG_INFO, CLIENT_FMT " subscribed to %s",
			   CLIENT_ARGS(c), req[i]->name);
	}
	/* Current values and settings first, then ok: a client that saw ok
	 * is up to date.  Settings follow their target's update, so a pool
	 * that opens connections on the update already knows its size. */
	for (size_t i = 0; i < n_req; i++) {
		if (req[i]->conninfo && subs_send_update(ss, c, req[i]) < 0)
			return;
		if (target_has_settings(req[i]) &&
		    subs_send_settings_to(c, req[i]) < 0)
			return;
	}
	client_ok(c, m, 0);
}

/* Whether an ack or nack is for another run of the agent: ignored then,
 * before anything else is checked (its generation numbers are not ours:
 * it may name one this run has not reached), and counted on the target.
 * Without an instance (a version-1 session) it cannot be told. */
static bool subs_stale(struct subs *ss, struct client *c,
		       const struct ipc_msg *m, struct target *t)
{
	if (!m->instance || streq(m->instance, ss->instance))
		return false;
	/* Counted for subscribers only: anyone else could inflate the
	 * counter of a target it may not even follow. */
	if (t && subs_find(c, t))
		t->stale_acks++;
	client_log(c, LOG_DEBUG, CLIENT_FMT " sent %s for %s generation %llu "
		   "of agent instance %s, not this one (%s): ignored",
		   CLIENT_ARGS(c), m->type_name, m->target,
		   (unsigned long long)m->generation, m->instance,
		   ss->instance);
	return true;
}

void subs_ack(struct subs *ss, struct client *c, const struct ipc_msg *m)
{
	struct target *t = target_find(ss->agent, m->target);
	struct subscription *sub = t ? subs_find(c, t) : NULL;
	bool newer;

	if (subs_stale(ss, c, m, t))
		return;
	if (!sub) {
		client_reject(c, m, IPC_ERR_NOT_SUBSCRIBED,
			      "ack for \"%s\", which this client is not "
			      "subscribed to",
			      m->target);
		return;
	}
	if (m->generation > t->generation) {
		client_reject(c, m, IPC_ERR_PROTOCOL,
			      "ack for generation %llu of %s, which is only at "
			      "%llu",
			      (unsigned long long)m->generation, t->name,
			      (unsigned long long)t->generation);
		return;
	}
	newer = m->generation > sub->acked;
	if (newer)
		sub->acked = m->generation;
	client_log(c, LOG_DEBUG, CLIENT_FMT " acked %s generation %llu",
		   CLIENT_ARGS(c), t->name, (unsigned long long)m->generation);
	/* Using that generation or a newer one: whatever failed is over. */
	if (sub->nacked && m->generation >= sub->nacked) {
		client_log(c, LOG_INFO, CLIENT_FMT " now uses %s generation "
			   "%llu, past its nack of generation %llu",
			   CLIENT_ARGS(c), t->name,
			   (unsigned long long)m->generation,
			   (unsigned long long)sub->nacked);
		sub->nacked = 0;
		free(sub->nack_msg);
		sub->nack_msg = NULL;
	}
	/* Last: it may complete the rotation.  A nack is only ever for a
	 * generation past the ack, so one cleared above came with a newer
	 * ack, and status hears of both. */
	if (newer)
		target_acked(t, m->generation);
}

void subs_nack(struct subs *ss, struct client *c, const struct ipc_msg *m)
{
	struct target *t = target_find(ss->agent, m->target);
	struct subscription *sub = t ? subs_find(c, t) : NULL;
	char *msg;

	if (subs_stale(ss, c, m, t))
		return;
	if (!sub) {
		client_reject(c, m, IPC_ERR_NOT_SUBSCRIBED,
			      "nack for \"%s\", which this client is not "
			      "subscribed to",
			      m->target);
		return;
	}
	if (m->generation == 0 || m->generation > t->generation) {
		client_reject(c, m, IPC_ERR_PROTOCOL,
			      "nack for generation %llu of %s, which is at %llu",
			      (unsigned long long)m->generation, t->name,
			      (unsigned long long)t->generation);
		return;
	}
	/* Already acked, or older than the nack on record: the client's
	 * later word stands. */
	if (m->generation <= sub->acked || m->generation < sub->nacked) {
		client_log(c, LOG_DEBUG, CLIENT_FMT " nacked %s generation "
			   "%llu, older than its ack %llu or nack %llu: "
			   "ignored", CLIENT_ARGS(c), t->name,
			   (unsigned long long)m->generation,
			   (unsigned long long)sub->acked,
			   (unsigned long long)sub->nacked);
		return;
	}
	msg = strdup(m->message);
	if (!msg) {
		client_error(c, m, IPC_ERR_INTERNAL, "out of memory");
		return;
	}
	free(sub->nack_msg);
	sub->nack_msg = msg;
	/* A client retrying with backoff nacks the same generation again
	 * and again: one line per generation, the newest message kept. */
	if (m->generation == sub->nacked)
		return;
	sub->nacked = m->generation;
	client_log(c, LOG_WARNING, CLIENT_FMT " cannot switch to %s "
		   "generation %llu: %s", CLIENT_ARGS(c), t->name,
		   (unsigned long long)m->generation, msg);
}

void subs_publish(struct subs *ss, struct target *t)
{
	struct client *c, *next;

	for (c = clients_first(ss->clients); c; c = next) {
		next = c->next; /* sending may drop c */
		if (subs_find(c, t))
			subs_send_update(ss, c, t);
	}
}

void subs_send_settings(struct subs *ss, struct target *t)
{
	struct client *c, *next;

	for (c = clients_first(ss->clients); c; c = next) {
		next = c->next; /* sending may drop c */
		if (subs_find(c, t))
			subs_send_settings_to(c, t);
	}
}

void subs_gone(struct client *c)
{
	/* The last straggler leaving may complete a rotation. */
	for (size_t i = 0; i < c->n_subs; i++)
		target_unsubscribed(c->subs[i].target, c->subs[i].acked);
}

void subs_free(struct client *c)
{
	for (size_t i = 0; i < c->n_subs; i++)
		free(c->subs[i].nack_msg);
	free(c->subs);
	c->subs = NULL;
	c->n_subs = 0;
}

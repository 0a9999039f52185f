/*
 * The agent's side of the protocol: every message a client sends checked
 * and acted on (client_dispatch), the requests' handlers, subscriptions,
 * and the push of updates and settings to subscribers; see server.h and
 * ipc/PROTOCOL.md.  The connections themselves (socket, accept, quotas,
 * frames, output queues): clients.h.  Who may do what: access.h.
 *
 * Everything a client sends that may be shown (its name, a nack's
 * message, a target or type name) is made printable UTF-8 as soon as it
 * is decoded (msg_clean), and every string of a status reply is too
 * (status.h), so that no peer can forge log lines, reach a terminal with
 * escape sequences or break another client's decoder.
 *
 * What a status reply holds and shows to whom: status.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "access.h"
#include "agent.h"
#include "clients.h"
#include "failover.h"
#include "common/log.h"
#include "ipc/msg.h"
#include "events.h"
#include "metrics.h"
#include "server.h"
#include "status.h"
#include "systemd.h"
#include "target.h"

struct subscription {
	struct target *target;
	uint64_t acked;  /* last generation acked, 0 for none */
	uint64_t nacked; /* last generation nacked and not acked since, or 0 */
	char *nack_msg;  /* its message, from the client: untrusted text */
};

/* At most one log line per this interval about an update too long to
 * send: a value that stays too long must not flood the log. */
#define SERVER_OVERSIZE_LOG_MS 1000

struct server {
	struct agent *agent;
	/* This run of the agent (PROTOCOL.md, "Agent instance"): in hello,
	 * update and status; acks for another instance are stale. */
	char instance[IPC_INSTANCE_LEN + 1];
	struct access_rules access;
	struct clients *clients;
	int64_t oversize_log_ms; /* last log line about an update too long */
};

static void server_check_acked(struct server *s, struct target *t);

static struct server *server_of(const struct client *c)
{
	return client_data(c);
}

/* Whether a subscriber has yet to ack t's current value; before the first
 * value nobody lags (and nobody has acked). */
static bool sub_lags(const struct target *t, const struct subscription *sub)
{
	return t->generation > 0 && sub->acked != t->generation;
}

/* One more subscriber acked t's current generation. */
static void target_count_ack(struct target *t)
{
	if (t->acked_gen != t->generation) {
		t->acked_gen = t->generation;
		t->n_acked = 0;
	}
	t->n_acked++;
}

static bool client_may_subscribe(const struct client *c,
				 const struct target *t)
{
	return access_may_subscribe(&server_of(c)->access, &c->cred, t->name);
}

static bool client_is_admin(const struct client *c)
{
	return access_is_admin(&server_of(c)->access, &c->cred);
}

static struct subscription *client_sub(const struct client *c,
				       const struct target *t)
{
	for (size_t i = 0; i < c->n_subs; i++)
		if (c->subs[i].target == t)
			return &c->subs[i];
	return NULL;
}

static int client_send_update(struct client *c, struct target *t)
{
	struct ipc_writer w;

	ipc_writer_init(&w, IPC_UPDATE, 8);
	ipc_pack_kv_str(&w, "target", t->name);
	ipc_pack_kv_u64(&w, "generation", t->generation);
	ipc_pack_kv_str(&w, "instance", server_of(c)->instance);
	ipc_pack_kv_str(&w, "conninfo", t->conninfo);
	ipc_pack_kv_str(&w, "reason", t->reason ? t->reason : "rotation");
	ipc_pack_kv_str(&w, "server", target_role_name(t->current));
	ipc_pack_kv_bool(&w, "standby", t->standby);
	/* A value too long to frame (the env layer bounds values far below
	 * this) is not sent, and the client is kept: dropping it would only
	 * make it reconnect, subscribe and be dropped again, every 20 ms, and
	 * it keeps the value it has.  Said at most once a second. */
	if (!w.failed && w.len > IPC_FRAME_MAX) {
		struct server *s = server_of(c);
		int64_t now = now_ms();

		if (now - s->oversize_log_ms >= SERVER_OVERSIZE_LOG_MS) {
			log_error("%s generation %llu: the update would be "
				  "%zu bytes, over the %d byte frame limit: "
				  "not sent to its subscribers, who keep what "
				  "they have",
				  t->name, (unsigned long long)t->generation,
				  w.len, IPC_FRAME_MAX);
			s->oversize_log_ms = now;
		}
		ipc_writer_fini(&w);
		return 0;
	}
	return client_send(c, &w);
}

/* The pool settings in force for t; absent ones are left out. */
static int client_send_settings(struct client *c, struct target *t)
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

/* ok, with the generation the request published (0: none). */
static int client_ok(struct client *c, const struct ipc_msg *req,
		     uint64_t generation)
{
	struct ipc_writer w;

	client_reply_init(&w, IPC_OK, generation > 0, req);
	if (generation > 0)
		ipc_pack_kv_u64(&w, "generation", generation);
	return client_send(c, &w);
}

void server_reply(struct server *s, const struct target_request *req,
		  const char *error, uint64_t generation)
{
	/* The request's id, as the replies above take it. */
	struct ipc_msg m = { .has_id = req->has_id, .id = req->id };
	struct client *c;

	for (c = clients_first(s->clients); c && c->serial != req->client;
	     c = c->next)
		;
	if (!c)
		return;
	if (error && req->brief)
		client_error(c, &m, IPC_ERR_REFUSED, "refused; the reason "
			     "names the target's servers and is only for "
			     "clients that may follow it (see the agent's log)");
	else if (error)
		client_error(c, &m, IPC_ERR_REFUSED, "%s", error);
	else
		client_ok(c, &m, generation);
}

/* failover, failback: answered by failover.c once the switch is done. */
static void handle_switch(struct client *c, const struct ipc_msg *m,
			  enum target_role role)
{
	struct target *t = agent_find_target(server_of(c)->agent, m->target);
	struct target_request req = {
		.client = c->serial,
		.has_id = m->has_id,
		.id = m->id,
	};

	if (!t) {
		client_reject(c, m, IPC_ERR_UNKNOWN_TARGET,
			      "no target named \"%s\" in this agent", m->target);
		return;
	}
	client_log(c, LOG_INFO, CLIENT_FMT " asked for %s of %s",
		   CLIENT_ARGS(c),
		   role == ROLE_SECONDARY ? "failover" : "failback", t->name);
	req.brief = !client_may_subscribe(c, t);
	failover_request(t, role, &req, m->force);
}

static void handle_reconnect(struct client *c, const struct ipc_msg *m)
{
	struct agent *a = server_of(c)->agent;
	struct target *t = NULL;
	uint64_t generation = 0;

	if (m->target && !(t = agent_find_target(a, m->target))) {
		client_reject(c, m, IPC_ERR_UNKNOWN_TARGET,
			      "no target named \"%s\" in this agent", m->target);
		return;
	}
	client_log(c, LOG_INFO, CLIENT_FMT " asked to reconnect %s",
		   CLIENT_ARGS(c), t ? t->name : "every target");
	if (t)
		generation = failover_reconnect(t);
	else
		for (size_t i = 0; i < a->n_targets; i++)
			failover_reconnect(a->targets[i]);
	client_ok(c, m, generation);
}

static void handle_hello(struct client *c, const struct ipc_msg *m)
{
	struct ipc_writer w;

	if (c->hello) {
		client_violation(c, "hello sent twice");
		return;
	}
	if (m->version < IPC_PROTOCOL_VERSION_MIN ||
	    m->version > IPC_PROTOCOL_VERSION) {
		client_log(c, LOG_WARNING, CLIENT_FMT " speaks protocol "
			   "version %llu, not %d to %d", CLIENT_ARGS(c),
			   (unsigned long long)m->version,
			   IPC_PROTOCOL_VERSION_MIN, IPC_PROTOCOL_VERSION);
		if (client_error(c, m, IPC_ERR_VERSION,
				 "protocol version %llu is not supported; this "
				 "agent speaks versions %d to %d",
				 (unsigned long long)m->version,
				 IPC_PROTOCOL_VERSION_MIN,
				 IPC_PROTOCOL_VERSION) == 0)
			client_drop(c, "unsupported protocol version");
		return;
	}
	client_hello(c, m->name, m->version);
	client_log(c, LOG_DEBUG, CLIENT_FMT " said hello, protocol version "
		   "%llu", CLIENT_ARGS(c), (unsigned long long)c->version);
	/* The session speaks the client's version; the instance goes to a
	 * version-1 client too, which ignores it like any unknown field. */
	client_reply_init(&w, IPC_HELLO, 4, m);
	ipc_pack_kv_u64(&w, "version", c->version);
	ipc_pack_kv_str(&w, "name", "dbswapd " DBSWAP_VERSION);
	ipc_pack_kv_i64(&w, "pid", getpid());
	ipc_pack_kv_str(&w, "instance", server_of(c)->instance);
	client_send(c, &w);
}

static void handle_subscribe(struct client *c, const struct ipc_msg *m)
{
	struct agent *a = server_of(c)->agent;
	struct target *req[IPC_SUBSCRIBE_MAX]; /* named targets, once each */
	size_t n_req = 0, n_new = 0;

	/* All or nothing: check every name before subscribing to any. */
	for (size_t i = 0; i < m->n_targets; i++) {
		struct target *t = agent_find_target(a, m->targets[i]);
		bool dup = false;
		if (!t) {
			client_reject(c, m, IPC_ERR_UNKNOWN_TARGET,
				      "no target named \"%s\" in this agent",
				      m->targets[i]);
			return;
		}
		if (!client_may_subscribe(c, t)) {
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
		n_new += client_sub(c, t) == NULL;
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
		if (client_sub(c, req[i]))
			continue;
		c->subs[c->n_subs++] = (struct subscription){ .target = req[i] };
		req[i]->n_subscribers++;
		client_log(c, LOG_INFO, CLIENT_FMT " subscribed to %s",
			   CLIENT_ARGS(c), req[i]->name);
	}
	/* Current values and settings first, then ok: a client that saw ok
	 * is up to date.  Settings follow their target's update, so a pool
	 * that opens connections on the update already knows its size. */
	for (size_t i = 0; i < n_req; i++) {
		if (req[i]->conninfo && client_send_update(c, req[i]) < 0)
			return;
		if (target_has_settings(req[i]) &&
		    client_send_settings(c, req[i]) < 0)
			return;
	}
	client_ok(c, m, 0);
}

/* Whether an ack or nack is for another run of the agent: ignored then,
 * before anything else is checked (its generation numbers are not ours:
 * it may name one this run has not reached), and counted on the target.
 * Without an instance (a version-1 session) it cannot be told. */
static bool client_stale(struct client *c, const struct ipc_msg *m,
			 struct target *t)
{
	if (!m->instance || streq(m->instance, server_of(c)->instance))
		return false;
	/* Counted for subscribers only: anyone else could inflate the
	 * counter of a target it may not even follow. */
	if (t && client_sub(c, t))
		t->stale_acks++;
	client_log(c, LOG_DEBUG, CLIENT_FMT " sent %s for %s generation %llu "
		   "of agent instance %s, not this one (%s): ignored",
		   CLIENT_ARGS(c), m->type_name, m->target,
		   (unsigned long long)m->generation, m->instance,
		   server_of(c)->instance);
	return true;
}

static void handle_ack(struct client *c, const struct ipc_msg *m)
{
	struct target *t = agent_find_target(server_of(c)->agent, m->target);
	struct subscription *sub = t ? client_sub(c, t) : NULL;

	if (client_stale(c, m, t))
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
	if (m->generation > sub->acked) {
		sub->acked = m->generation;
		if (m->generation == t->generation)
			target_count_ack(t);
	}
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
	server_check_acked(server_of(c), t);
	systemd_changed(server_of(c)->agent);
}

static void handle_nack(struct client *c, const struct ipc_msg *m)
{
	struct target *t = agent_find_target(server_of(c)->agent, m->target);
	struct subscription *sub = t ? client_sub(c, t) : NULL;
	char *msg;

	if (client_stale(c, m, t))
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

/* Logs, once per generation, that every subscriber uses it: from then on no
 * app on this host holds the previous value. */
static void server_check_acked(struct server *s, struct target *t)
{
	unsigned subscribers, acked;

	if (t->generation == 0 || t->all_acked == t->generation)
		return;
	server_count(s, t, &subscribers, &acked);
	if (subscribers == 0 || acked < subscribers)
		return;
	t->all_acked = t->generation;
	metrics_converged(t, (now_us() - t->published_us) / 1e6);
	events_emit("rotation-complete", t, t->current, t->reason);
	log_target(LOG_INFO, "rotation-complete", t->name, t->generation,
		   "%s: generation %llu acked by all %u subscriber(s), %.1f ms "
		   "after it was published",
		   t->name, (unsigned long long)t->generation, subscribers,
		   (now_us() - t->published_us) / 1000.0);
}

void server_count(struct server *s, const struct target *t,
		  unsigned *subscribers, unsigned *acked)
{
	(void)s;
	*subscribers = t->n_subscribers;
	*acked = t->generation > 0 && t->acked_gen == t->generation ?
			 t->n_acked : 0;
}

unsigned server_clients(const struct server *s)
{
	return clients_count(s->clients);
}

/* Status's rule, not a second one: status shows a target in full only
 * to a client that may follow it (pack_target); an admin who may not
 * gets its brief form there, so no series here. */
static bool client_may_follow(const struct target *t, void *data)
{
	return client_may_subscribe(data, t);
}

static void status_count(const struct target *t, unsigned *subscribers,
			 unsigned *acked, void *data)
{
	const struct client *asker = data;

	server_count(server_of(asker), t, subscribers, acked);
}

/* The subscribers of t after *cursor, for status (status.h). */
static bool status_subscriber(const struct target *t, const void **cursor,
			      struct status_peer *p, void *data)
{
	const struct client *asker = data, *c = *cursor;

	for (c = c ? c->next : clients_first(server_of(asker)->clients); c;
	     c = c->next) {
		const struct subscription *sub = client_sub(c, t);

		if (!sub)
			continue;
		*p = (struct status_peer){
			.pid = c->cred.pid,
			.uid = c->cred.uid,
			.name = c->name,
			.acked = sub->acked,
			.nacked = sub->nacked,
			.nack_msg = sub->nack_msg,
			.lags = sub_lags(t, sub),
		};
		*cursor = c;
		return true;
	}
	return false;
}

static void handle_status(struct client *c, const struct ipc_msg *m)
{
	struct server *s = server_of(c);
	struct status_source src = {
		.agent = s->agent,
		.instance = s->instance,
		.clients = clients_count(s->clients),
		.uid = c->cred.uid,
		.admin = client_is_admin(c),
		.may_follow = client_may_follow,
		.count = status_count,
		.subscriber = status_subscriber,
		.data = c,
	};
	struct ipc_writer w;

	if (status_pack(&w, &src, m)) {
		client_send(c, &w);
		return;
	}
	/* Not reached: the brief reply fits by construction. */
	client_error(c, m, IPC_ERR_INTERNAL,
		     "status reply would exceed the frame limit");
}

/* The metrics text (metrics.h) of the targets c may follow, as status
 * shows them. */
static void handle_metrics(struct client *c, const struct ipc_msg *m)
{
	struct ipc_writer w;
	char *text;
	size_t len;

	if (metrics_render(server_of(c)->agent, client_may_follow, c, &text,
			   &len) < 0) {
		client_error(c, m, IPC_ERR_INTERNAL, "out of memory");
		return;
	}
	client_reply_init(&w, IPC_METRICS, 1, m);
	ipc_pack_kv_str(&w, "text", text);
	free(text);
	if (!w.failed && w.len > IPC_FRAME_MAX) {
		ipc_writer_fini(&w);
		client_error(c, m, IPC_ERR_LIMIT, "the metrics text is %zu "
			     "bytes, over the frame limit: scrape --metrics",
			     len);
		return;
	}
	client_send(c, &w);
}

/* Makes *s printable UTF-8 of at most max bytes (ipc_text_clean). */
static int msg_clean_str(char **s, size_t max)
{
	char *clean;

	if (!*s || ipc_text_is_clean(*s, strlen(*s)))
		return 0;
	clean = ipc_text_clean(*s, strlen(*s), max, NULL);
	if (!clean)
		return -ENOMEM;
	free(*s);
	*s = clean;
	return 0;
}

/* The client's text, made printable at the door: whatever of it reaches
 * the log, a status reply or an error reply can forge no log line, move
 * no terminal's cursor and break no other client's decoder.  Strings the
 * agent reads but never shows (an instance, a conninfo) are not text the
 * agent accepts from clients. */
static int msg_clean(struct ipc_msg *m)
{
	int r = 0;

	if (!r)
		r = msg_clean_str(&m->type_name, IPC_NAME_MAX);
	if (!r)
		r = msg_clean_str(&m->name, IPC_NAME_MAX);
	if (!r)
		r = msg_clean_str(&m->target, IPC_NAME_MAX);
	if (!r)
		r = msg_clean_str(&m->message, IPC_NACK_MESSAGE_MAX);
	for (size_t i = 0; !r && i < m->n_targets; i++)
		r = msg_clean_str(&m->targets[i], IPC_NAME_MAX);
	return r;
}

/* The one place every message from a client is checked and acted on.
 * Returns false when the client was dropped. */
static void client_dispatch(struct client *c, const uint8_t *body, size_t len)
{
	struct ipc_msg m;
	char err[256];
	int r = ipc_msg_decode(&m, body, len, err, sizeof(err));

	if (r == 0)
		r = msg_clean(&m);
	if (r == -ENOMEM) {
		client_error(c, NULL, IPC_ERR_INTERNAL, "out of memory");
		goto out;
	}
	if (r < 0) {
		client_violation(c, err);
		goto out;
	}
	if (m.type != IPC_HELLO && m.type != IPC_STATUS && m.type != IPC_PING)
		c->noted = true;
	if (!c->hello && m.type != IPC_HELLO) {
		client_violation_code(c, IPC_ERR_HELLO_REQUIRED,
				      "the first message must be hello");
		goto out;
	}
	/* Version 2 makes the instance of acks and nacks required: an ack
	 * that cannot be told from one for a previous run of the agent is
	 * what the version exists to end. */
	if ((m.type == IPC_ACK || m.type == IPC_NACK) && c->version >= 2 &&
	    !m.instance) {
		client_violation(c, "ack or nack without an instance (required "
				    "in protocol version 2)");
		goto out;
	}
	if ((m.type == IPC_RELOAD || m.type == IPC_RECONNECT ||
	     m.type == IPC_FAILOVER || m.type == IPC_FAILBACK) &&
	    !client_is_admin(c)) {
		client_log(c, LOG_WARNING, CLIENT_FMT " gid %u sent %s, which "
			   "needs an admin: refused", CLIENT_ARGS(c),
			   (unsigned)c->cred.gid, m.type_name);
		client_reject(c, &m, IPC_ERR_FORBIDDEN,
			      "uid %u may not send %s", (unsigned)c->cred.uid,
			      m.type_name);
		goto out;
	}
	switch (m.type) {
	case IPC_HELLO:
		handle_hello(c, &m);
		break;
	case IPC_SUBSCRIBE:
		handle_subscribe(c, &m);
		break;
	case IPC_ACK:
		handle_ack(c, &m);
		break;
	case IPC_NACK:
		handle_nack(c, &m);
		break;
	case IPC_STATUS:
		handle_status(c, &m);
		break;
	case IPC_RELOAD:
		client_log(c, LOG_INFO, CLIENT_FMT " asked for a reload",
			   CLIENT_ARGS(c));
		agent_reload(server_of(c)->agent);
		client_ok(c, &m, 0);
		break;
	case IPC_FAILOVER:
		handle_switch(c, &m, ROLE_SECONDARY);
		break;
	case IPC_FAILBACK:
		handle_switch(c, &m, ROLE_PRIMARY);
		break;
	case IPC_RECONNECT:
		handle_reconnect(c, &m);
		break;
	case IPC_PING:
		client_ok(c, &m, 0);
		break;
	case IPC_METRICS:
		handle_metrics(c, &m);
		break;
	case IPC_INVALID:
		client_reject(c, &m, IPC_ERR_UNKNOWN_TYPE,
			      "unknown message type \"%s\"", m.type_name);
		break;
	case IPC_UPDATE:
	case IPC_ERROR:
	case IPC_OK:
	case IPC_SETTINGS:
	case IPC_TYPE_COUNT:
		client_violation(c, "message type not accepted by the agent");
		break;
	}
out:
	ipc_msg_fini(&m);
}

void server_publish(struct server *s, struct target *t)
{
	struct client *c, *next;

	if (!s)
		return;
	for (c = clients_first(s->clients); c; c = next) {
		next = c->next; /* sending may drop c */
		if (client_sub(c, t))
			client_send_update(c, t);
	}
}

unsigned server_send_settings(struct server *s, struct target *t)
{
	struct client *c, *next;
	unsigned n = 0;

	if (!s)
		return 0;
	for (c = clients_first(s->clients); c; c = next) {
		next = c->next; /* sending may drop c */
		if (client_sub(c, t) && client_send_settings(c, t) == 0)
			n++;
	}
	return n;
}

/* Draws this run's instance id from the kernel's CSPRNG.  getrandom()
 * waits for the pool to be seeded, once, early at boot: an id that could
 * repeat across boots would defeat its purpose. */
static int server_new_instance(struct server *s)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t raw[IPC_INSTANCE_LEN / 2];
	size_t got = 0;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = neg_errno();
			log_error("cannot draw the agent instance id: %s",
				  strerror(-r));
			return r;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++) {
		s->instance[2 * i] = hex[raw[i] >> 4];
		s->instance[2 * i + 1] = hex[raw[i] & 0xf];
	}
	s->instance[IPC_INSTANCE_LEN] = '\0';
	log_info("agent instance %s", s->instance);
	return 0;
}

/* c is out of service: its acks are no longer counted. */
static void server_client_gone(struct client *c, const char *why)
{
	struct server *s = server_of(c);

	if (why)
		metrics_client_gone(why);
	/* The last straggler leaving may complete a rotation. */
	for (size_t i = 0; i < c->n_subs; i++) {
		struct target *t = c->subs[i].target;

		t->n_subscribers--;
		if (!sub_lags(t, &c->subs[i]) && t->acked_gen == t->generation)
			t->n_acked--;
		server_check_acked(s, t);
	}
}

static void server_client_reap(struct client *c)
{
	for (size_t i = 0; i < c->n_subs; i++)
		free(c->subs[i].nack_msg);
	free(c->subs);
}

static void server_clients_changed(void *data)
{
	struct server *s = data;

	systemd_changed(s->agent);
}

static const struct clients_ops server_clients_ops = {
	.message = client_dispatch,
	.changed = server_clients_changed,
	.gone = server_client_gone,
	.reap = server_client_reap,
};

int server_new(struct agent *a, const struct server_config *cfg,
	       struct server **out)
{
	struct server *s = zalloc(sizeof(*s));
	struct clients_config cc;
	int r;

	if (!s)
		return -ENOMEM;
	s->agent = a;
	r = server_new_instance(s);
	if (r < 0) {
		free(s);
		return r;
	}
	s->access = (struct access_rules){
		.allow = cfg->allow,
		.n_allow = cfg->n_allow,
		.admin = cfg->admin,
		.n_admin = cfg->n_admin,
		.self_uid = geteuid(),
		.default_gid = (gid_t)-1,
	};
	cc = (struct clients_config){
		.socket_path = cfg->socket_path,
		.socket_mode = cfg->socket_mode,
		.socket_gid = cfg->socket_gid,
	};
	cc.max_clients = cfg->max_clients ? cfg->max_clients
					  : SERVER_CLIENTS_MAX;
	cc.hello_timeout_ms = cfg->hello_timeout_ms > 0
				      ? cfg->hello_timeout_ms
				      : SERVER_HELLO_TIMEOUT_MS;
	cc.max_per_uid = cfg->max_clients_per_uid
		? cfg->max_clients_per_uid
		: MAX(1u, cc.max_clients / SERVER_CLIENTS_PER_UID_DIV);
	cc.reserved = MIN(cfg->reserved_clients ? cfg->reserved_clients
						: SERVER_CLIENTS_RESERVED,
			  cc.max_clients / 4);
	cc.output_per_uid = cfg->output_per_uid ? cfg->output_per_uid
						: SERVER_OUTPUT_PER_UID;
	cc.output_total = cfg->output_total ? cfg->output_total
					    : SERVER_OUTPUT_TOTAL;
	cc.idle_timeout_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms
						  : SERVER_IDLE_TIMEOUT_MS;
	r = clients_new(a->loop, &cc, &s->access, &server_clients_ops, s,
			&s->clients);
	if (r < 0)
		goto err_server;
	s->access.default_gid = clients_socket_gid(s->clients);
	if (s->access.n_allow == 0 && s->access.default_gid != (gid_t)-1)
		log_info("access: root, uid %u and group %u may subscribe to "
			 "every target", (unsigned)s->access.self_uid,
			 (unsigned)s->access.default_gid);
	log_info("clients: at most %u, %u per uid but root's and the agent's, "
		 "the last %u for root, the agent's uid and admins; output "
		 "queued at most %zu MiB per uid, %zu MiB in all; idle "
		 "timeout %d ms (-1: none)", cc.max_clients, cc.max_per_uid,
		 cc.reserved, cc.output_per_uid >> 20, cc.output_total >> 20,
		 cc.idle_timeout_ms);
	r = clients_start(s->clients);
	if (r < 0)
		goto err_server;
	*out = s;
	return 0;

err_server:
	server_free(s);
	return r;
}

void server_free(struct server *s)
{
	if (!s)
		return;
	clients_free(s->clients);
	free(s);
}

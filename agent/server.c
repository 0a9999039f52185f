/*
 * The agent's side of the protocol: every message a client sends checked
 * and acted on (client_dispatch), and the requests' handlers; see
 * server.h and ipc/PROTOCOL.md.  The connections themselves (socket,
 * accept, quotas, frames, output queues): clients.h.  Who may do what:
 * access.h.  Who follows which target, acks, and the push of updates and
 * settings: subs.h.
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
#include "counters.h"
#include "ipc/msg.h"
#include "metrics.h"
#include "model.h"
#include "server.h"
#include "status.h"
#include "subs.h"
#include "target.h"

struct server {
	struct agent *agent;
	/* This run of the agent (PROTOCOL.md, "Agent instance"): in hello,
	 * update and status; acks for another instance are stale. */
	char instance[IPC_INSTANCE_LEN + 1];
	struct access_rules access;
	struct clients *clients;
	struct subs subs;
};

static struct server *server_of(const struct client *c)
{
	return client_data(c);
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

/* Answers a request that waited (failover, failback): error NULL sends
 * ok, with generation if not 0; else an error with code refused and that
 * message.  Nothing happens if the client has gone. */
static void server_reply(struct server *s, const struct target_request *req,
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
	struct target *t = target_find(server_of(c)->agent, m->target);
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

	if (m->target && !(t = target_find(a, m->target))) {
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

/* Status's rule, not a second one: status shows a target in full only
 * to a client that may follow it (pack_target); an admin who may not
 * gets its brief form there, so no series here. */
static bool client_may_follow(const struct target *t, void *data)
{
	return client_may_subscribe(data, t);
}

/* The subscribers of t after *cursor, for status (status.h). */
static bool status_subscriber(const struct target *t, const void **cursor,
			      struct status_peer *p, void *data)
{
	const struct client *asker = data, *c = *cursor;

	for (c = c ? c->next : clients_first(server_of(asker)->clients); c;
	     c = c->next) {
		const struct subscription *sub = subs_find(c, t);

		if (!sub)
			continue;
		*p = (struct status_peer){
			.pid = c->cred.pid,
			.uid = c->cred.uid,
			.name = c->name,
			.acked = sub->acked,
			.nacked = sub->nacked,
			.nack_msg = sub->nack_msg,
			.lags = subs_lags(t, sub),
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
		subs_subscribe(&server_of(c)->subs, c, &m);
		break;
	case IPC_ACK:
		subs_ack(&server_of(c)->subs, c, &m);
		break;
	case IPC_NACK:
		subs_nack(&server_of(c)->subs, c, &m);
		break;
	case IPC_STATUS:
		handle_status(c, &m);
		break;
	case IPC_RELOAD:
		client_log(c, LOG_INFO, CLIENT_FMT " asked for a reload",
			   CLIENT_ARGS(c));
		model_reload(server_of(c)->agent);
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

/* What the model publishes goes to the subscribers; a request it held is
 * answered. */
static void server_observe(const struct change *ch, void *data)
{
	struct server *s = data;

	switch (ch->kind) {
	case CHANGE_PUBLISHED:
		subs_publish(&s->subs, ch->t);
		break;
	case CHANGE_SETTINGS:
		subs_send_settings(&s->subs, ch->t);
		break;
	case CHANGE_ANSWERED:
		server_reply(s, ch->req, ch->error, ch->generation);
		break;
	default:
		break;
	}
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
	if (why)
		counters_client_gone(why);
	subs_gone(c);
}

/* A client came or went. */
static void server_clients_changed(void *data)
{
	struct server *s = data;

	counters_clients(clients_count(s->clients));
	agent_changed(s->agent, CHANGE_STATUS, NULL);
}

static const struct clients_ops server_clients_ops = {
	.message = client_dispatch,
	.changed = server_clients_changed,
	.gone = server_client_gone,
	.reap = subs_free,
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
	s->subs = (struct subs){
		.agent = a,
		.clients = s->clients,
		.access = &s->access,
		.instance = s->instance,
	};
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
	r = changes_observe(&a->changes, server_observe, s);
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
	changes_forget(&s->agent->changes, server_observe, s);
	clients_free(s->clients);
	free(s);
}

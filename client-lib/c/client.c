/*
 * libdbswap's connection to the agent: handshake, subscriptions, updates,
 * acks, reconnection with backoff, and the optional background thread.
 *
 * All state sits behind one mutex.  Callbacks are collected while it is
 * held and run after it is released, so a callback may call dbswap_ack()
 * or dbswap_subscribe().
 *
 * The fd given to the app is an epoll fd holding the agent socket (when
 * connected) and a timerfd for reconnection, so it never changes.
 *
 * Agent instances: each run of the agent has an id, and its generation
 * numbers mean something only with it.  The client keeps the instance of
 * the connected agent (from its hello) and of each update; an ack or nack
 * is sent only for the connected agent's instance, so that an ack meant
 * for an earlier run is never counted for the same number of this one.
 * It speaks protocol version 2 and falls back to 1 for an agent that
 * answers hello with error "version" (an agent older than instances),
 * trying 2 again at each new connection after a loss.
 *
 * Subscriptions: each target is asked for in a subscribe of its own, with
 * its own id, because the agent's subscribe is all or nothing: one target
 * it refuses (unknown, forbidden) would take every other down with it.
 * A refused one is asked for again with backoff (CLIENT_SUB_RETRY_*);
 * a pool hears of the refusal, and of its end, through its refused
 * callback, and a plain subscription's refusal goes to the log.
 */
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "client.h"
#include "common/mask.h"
#include "common/util.h"
#include "ipc/frame.h"
#include "ipc/msg.h"

#define DBSWAP_EXPORT __attribute__((visibility("default")))

/* Reconnection backoff: the first retry comes quickly, because an agent
 * restarting under systemd is back within milliseconds; then it doubles. */
#define CLIENT_RETRY_FIRST_MS 20
#define CLIENT_RETRY_MAX_MS 2000

/* A connection that stayed up this long after hello was a good one: its
 * loss is retried from CLIENT_RETRY_FIRST_MS again.  A shorter one keeps
 * the backoff growing, so that an agent that drops the client right after
 * hello (a limit, a frame over the size limit, a protocol complaint) is
 * not asked again every 20 ms.  As long as the longest wait: connections
 * then come no oftener than capped retries would. */
#define CLIENT_STABLE_MS CLIENT_RETRY_MAX_MS

/* A subscription the agent refused is asked for again after about this,
 * doubling up to the max.  A forbidden or unknown target stays so until
 * the agent's configuration changes (dbswapd's: at a restart, after which
 * every target is asked for anyway), a limit until its state does: a
 * minute apart costs the agent one error reply a minute. */
#define CLIENT_SUB_RETRY_FIRST_MS 1000
#define CLIENT_SUB_RETRY_MAX_MS 60000

struct sub {
	char *target;
	dbswap_update_fn *cb;
	void *userdata;
	client_settings_fn *settings_cb; /* the pool's, for settings */
	client_refused_fn *refused_cb;   /* the pool's, for refusals */
	bool pool;                       /* followed by a pool */
	uint64_t sub_id;    /* id of its last subscribe, for the answer */
	int refused;        /* 0, or the errno of the agent's last refusal */
	char *refusal;      /* and the agent's message */
	unsigned refusals;  /* refusals in a row, for the retry's backoff */
	int64_t retry_at;   /* refused: when to ask again (now_ms); else 0 */
	char *conninfo;     /* last value delivered (secret) */
	char *server;       /* and the server it is for */
	bool standby;       /* and whether that is in recovery */
	uint64_t delivered; /* its generation, in the agent's numbering */
	char instance[IPC_INSTANCE_LEN + 1]; /* that agent's; "" for none */
	bool acked;         /* the app acked the delivered value */
	/* The last update handed to the callback, for dbswap_ack(). */
	uint64_t cb_generation;
	char cb_instance[IPC_INSTANCE_LEN + 1];
};

struct dbswap_update {
	const char *target;
	const char *instance; /* NULL from a version-1 agent */
	const char *conninfo;
	const char *reason;
	const char *server;
	bool standby;
	uint64_t generation;
};

/* A callback to run once the lock is released.  The callback itself is
 * looked up again at run time, so that one unsubscribed meanwhile is not
 * called. */
struct pending {
	struct pending *next;
	enum { PENDING_UPDATE, PENDING_SETTINGS, PENDING_REFUSED } kind;
	char *target, *conninfo, *reason, *server;
	char instance[IPC_INSTANCE_LEN + 1];
	bool standby;
	uint64_t generation;
	struct client_settings settings;
	int err;       /* refused: the errno, 0 for accepted again */
	char *message; /* and the agent's message */
};

struct dbswap_client {
	unsigned epoch; /* client_fork_epoch() when made */
	pthread_mutex_t lock;
	/* Held while callbacks run: client_unsubscribe() takes it to know
	 * that no callback of the target is still running. */
	pthread_mutex_t cb_lock;
	char *path;
	char *name;
	int epfd, sock, timerfd, stopfd;
	int sub_timerfd; /* asks again for refused subscriptions */
	bool hello_done;
	int64_t hello_ms; /* when hello succeeded (CLIENT_STABLE_MS) */
	/* The version hello offers: IPC_PROTOCOL_VERSION, or lower after an
	 * agent refused it, until the connection is lost. */
	uint64_t version;
	bool fell_back; /* the last connection ended in that refusal */
	/* The connected agent's instance, from its hello; "" for none (a
	 * version-1 agent) or before hello. */
	char agent_instance[IPC_INSTANCE_LEN + 1];
	bool want_out;
	struct ipc_reader in;
	struct ipc_queue out;
	struct sub *subs;
	size_t n_subs;
	unsigned attempts;
	bool was_connected, warned_down;
	int last_error; /* of the last connection attempt; 0 once connected */
	uint64_t next_id;
	uint64_t hello_id;

	/* client_call's reply slot */
	uint64_t want_id;
	struct ipc_msg *reply;
	bool got_reply;

	dbswap_log_fn *log;
	void *log_userdata;

	pthread_t thread;
	bool thread_started;

	struct pending *pending, **pending_tail;
};

static _Atomic unsigned fork_epoch;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_child(void)
{
	atomic_fetch_add(&fork_epoch, 1);
}

static void fork_register(void)
{
	pthread_atfork(NULL, NULL, fork_child);
}

unsigned client_fork_epoch(void)
{
	return atomic_load_explicit(&fork_epoch, memory_order_relaxed);
}

/* A client made before a fork, used in the child. */
static bool client_foreign(const dbswap_client *c)
{
	return client_forked(c->epoch);
}

static void default_log(int priority, const char *line, void *userdata);

void client_misuse(const char *fn, const char *what)
{
	char line[256];

	snprintf(line, sizeof(line), "%s: %s", fn, what);
	default_log(LOG_ERR, line, NULL);
}

/* What every entry point checks first: 0, -EINVAL for no client (said on
 * stderr: there is no log function to say it with), -ECHILD for one made
 * before a fork. */
static int client_usable(const dbswap_client *c, const char *fn)
{
	if (!c) {
		client_misuse(fn, "the client is NULL");
		return -EINVAL;
	}
	return client_foreign(c) ? -ECHILD : 0;
}

static void default_log(int priority, const char *line, void *userdata)
{
	fprintf(stderr, "libdbswap: %s\n", line);
}

PRINTF(3, 4)
static void client_log(dbswap_client *c, int priority, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!c->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->log(priority, line, c->log_userdata);
}

static struct sub *client_sub(dbswap_client *c, const char *target)
{
	for (size_t i = 0; i < c->n_subs; i++)
		if (streq(c->subs[i].target, target))
			return &c->subs[i];
	return NULL;
}

static void client_set_out(dbswap_client *c, bool want)
{
	struct epoll_event ev = {
		.events = EPOLLIN | (want ? EPOLLOUT : 0),
		.data.fd = c->sock,
	};

	if (want == c->want_out || c->sock < 0)
		return;
	c->want_out = want;
	epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->sock, &ev);
}

static void client_arm_retry(dbswap_client *c)
{
	int64_t ms = backoff_ms(c->attempts++, CLIENT_RETRY_FIRST_MS,
				CLIENT_RETRY_MAX_MS);
	struct itimerspec its = {
		.it_value = { .tv_sec = ms / 1000,
			      .tv_nsec = (ms % 1000) * 1000000 },
	};

	timerfd_settime(c->timerfd, 0, &its, NULL);
}

static void client_close(dbswap_client *c)
{
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->sock, NULL);
	close(c->sock);
	c->sock = -1;
	c->want_out = false;
	c->hello_done = false;
	c->agent_instance[0] = '\0';
	ipc_reader_fini(&c->in);
	ipc_queue_fini(&c->out);
}

static void client_disconnect(dbswap_client *c, const char *why)
{
	if (c->sock < 0)
		return;
	/* The backoff starts over only after a connection that was good for
	 * a while: an agent that refuses right after accept (its client
	 * limit, a version) or right after hello gets a growing backoff, not
	 * a retry every 20 ms. */
	if (c->hello_done && now_ms() - c->hello_ms >= CLIENT_STABLE_MS)
		c->attempts = 0;
	client_close(c);
	/* The agent may come back newer: offer the newest version again. */
	c->version = IPC_PROTOCOL_VERSION;
	client_log(c, LOG_WARNING,
		   "lost the agent at %s (%s); keeping the last values and "
		   "reconnecting",
		   c->path, why);
	c->warned_down = true;
	client_arm_retry(c);
}

/* The agent refused our hello's version: connect again at once with the
 * one below. */
static void client_fall_back(dbswap_client *c)
{
	struct itimerspec now = { .it_value = { .tv_nsec = 1 } };

	client_close(c);
	c->version--;
	c->fell_back = true;
	client_log(c, LOG_NOTICE,
		   "the agent at %s does not speak protocol version %llu; "
		   "using version %llu (its acks cannot be told from those "
		   "for an earlier run of the agent)",
		   c->path, (unsigned long long)c->version + 1,
		   (unsigned long long)c->version);
	timerfd_settime(c->timerfd, 0, &now, NULL);
}

/* Queues a message and writes what the socket takes.  Returns 0 or a
 * negative errno (the connection was then closed). */
static int client_send(dbswap_client *c, struct ipc_writer *w)
{
	int r;

	if (c->sock < 0) {
		ipc_writer_fini(w);
		return -ENOTCONN;
	}
	r = w->failed ? -ENOMEM : ipc_queue_push(&c->out, w->buf, w->len);
	ipc_writer_fini(w);
	if (r < 0) {
		client_disconnect(c, strerror(-r));
		return r;
	}
	r = ipc_queue_flush(&c->out, c->sock);
	if (r < 0) {
		client_disconnect(c, strerror(-r));
		return r;
	}
	client_set_out(c, r == 1);
	return 0;
}

/* Asks the agent to follow s, in a request of its own (see the top of
 * the file); its answer, ok or error, carries the id kept in s. */
static int client_send_subscribe(dbswap_client *c, struct sub *s)
{
	struct ipc_writer w;

	s->sub_id = ++c->next_id;
	s->retry_at = 0; /* asked now; a new refusal schedules the next */
	ipc_writer_init(&w, IPC_SUBSCRIBE, 3);
	ipc_pack_kv_u64(&w, "id", s->sub_id);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 1);
	ipc_pack_str(&w, s->target);
	return client_send(c, &w);
}

/* instance: "" for none (a version-1 agent). */
static int client_send_ack(dbswap_client *c, const char *target,
			   const char *instance, uint64_t generation)
{
	struct ipc_writer w;

	ipc_writer_init(&w, IPC_ACK, 3 + (instance[0] != '\0'));
	ipc_pack_kv_str(&w, "target", target);
	ipc_pack_kv_u64(&w, "generation", generation);
	if (instance[0])
		ipc_pack_kv_str(&w, "instance", instance);
	return client_send(c, &w);
}

/* NULL and "" both mean no instance. */
static const char *instance_or_empty(const char *instance)
{
	return instance ? instance : "";
}

/* Whether an ack or nack for that instance means anything to the agent
 * connected now: it names this agent's run (or neither has one). */
static bool client_agent_is(dbswap_client *c, const char *instance)
{
	return c->sock >= 0 && c->hello_done &&
	       streq(c->agent_instance, instance_or_empty(instance));
}

/* Opens the socket and queues hello and the subscriptions.  Returns 0 or
 * a negative errno (and the caller decides about retrying). */
static int client_try_connect(dbswap_client *c)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN };
	struct ipc_writer w;
	int fd, r;

	if (c->sock >= 0)
		return 0;
	strcpy(addr.sun_path, c->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return neg_errno();
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = neg_errno();
		close(fd);
		return r;
	}
	ev.data.fd = fd;
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = neg_errno();
		close(fd);
		return r;
	}
	c->sock = fd;
	c->want_out = false;
	c->hello_id = ++c->next_id;
	c->fell_back = false;
	ipc_writer_init(&w, IPC_HELLO, 5);
	ipc_pack_kv_u64(&w, "id", c->hello_id);
	ipc_pack_kv_u64(&w, "version", c->version);
	ipc_pack_kv_str(&w, "name", c->name);
	ipc_pack_kv_i64(&w, "pid", getpid());
	r = client_send(c, &w);
	/* Every subscription, refused ones too: this may be another run of
	 * the agent, with another configuration. */
	for (size_t i = 0; r == 0 && i < c->n_subs; i++)
		r = client_send_subscribe(c, &c->subs[i]);
	return r;
}

static void client_reconnect(dbswap_client *c)
{
	int r = client_try_connect(c);

	c->last_error = r;
	if (r == 0)
		return;
	if (!c->warned_down) {
		client_log(c, LOG_WARNING,
			   "cannot reach the agent at %s: %s; retrying",
			   c->path, strerror(-r));
		c->warned_down = true;
	}
	client_arm_retry(c);
}

static void pending_free(struct pending *p)
{
	free(p->target);
	free_secret(p->conninfo);
	free(p->reason);
	free(p->server);
	free(p->message);
	free(p);
}

static void client_push_pending(dbswap_client *c, struct pending *p)
{
	*c->pending_tail = p;
	c->pending_tail = &p->next;
}

static int client_queue_update(dbswap_client *c, struct sub *s,
			       const struct ipc_msg *m)
{
	const char *reason = m->reason ? m->reason : "rotation";
	const char *server = m->server ? m->server : "primary";
	/* A reconnect repeats the value on purpose: the app must replace its
	 * connections.  Only a new one does, though: the agent sends the
	 * current generation again whenever the client subscribes again. */
	bool renew = streq(reason, "reconnect") &&
		     m->generation != s->delivered;
	struct pending *p;

	/* The same value for the same server again, already in use by the
	 * app: it is the agent restarting with new numbering, or sending it
	 * again after a reconnection.  Ack it quietly. */
	if (s->conninfo && s->acked && streq(s->conninfo, m->conninfo) &&
	    streq(s->server, server) && s->standby == m->standby && !renew) {
		s->delivered = m->generation;
		snprintf(s->instance, sizeof(s->instance), "%s",
			 instance_or_empty(m->instance));
		/* With the new update's instance: the number is the new
		 * agent's. */
		return client_send_ack(c, s->target, s->instance,
				       m->generation);
	}
	p = zalloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->generation = m->generation;
	snprintf(p->instance, sizeof(p->instance), "%s",
		 instance_or_empty(m->instance));
	p->standby = m->standby;
	p->target = strdup(s->target);
	p->conninfo = strdup(m->conninfo);
	p->reason = strdup(reason);
	p->server = strdup(server);
	free_secret(s->conninfo);
	free(s->server);
	s->conninfo = strdup(m->conninfo);
	s->server = strdup(server);
	if (!p->target || !p->conninfo || !p->reason || !p->server ||
	    !s->conninfo || !s->server) {
		/* Forget the value, so that it is not taken for one the app
		 * has when the agent sends it again. */
		free_secret(s->conninfo);
		free(s->server);
		s->conninfo = s->server = NULL;
		pending_free(p);
		return -ENOMEM;
	}
	s->standby = m->standby;
	s->delivered = m->generation;
	snprintf(s->instance, sizeof(s->instance), "%s", p->instance);
	s->acked = false;
	client_push_pending(c, p);
	return 0;
}

static int client_queue_settings(dbswap_client *c, struct sub *s,
				 const struct ipc_msg *m)
{
	struct pending *p = zalloc(sizeof(*p));

	if (!p || !(p->target = strdup(s->target))) {
		free(p);
		return -ENOMEM;
	}
	p->kind = PENDING_SETTINGS;
	p->settings = (struct client_settings){
		.pool_max = m->has_pool_max ? (int64_t)m->pool_max : -1,
		.pool_min = m->has_pool_min ? (int64_t)m->pool_min : -1,
		.pool_timeout_ms = m->has_pool_timeout_ms
					   ? (int64_t)m->pool_timeout_ms
					   : -1,
		.pool_idle_timeout_ms = m->has_pool_idle_timeout_ms
						? (int64_t)m->pool_idle_timeout_ms
						: -1,
	};
	client_push_pending(c, p);
	return 0;
}

/* Tells s's pool of a refusal (err < 0) or of its end (0, message NULL). */
static int client_queue_refused(dbswap_client *c, struct sub *s, int err,
				const char *message)
{
	struct pending *p = zalloc(sizeof(*p));

	if (!p || !(p->target = strdup(s->target)) ||
	    (message && !(p->message = strdup(message)))) {
		if (p)
			pending_free(p);
		return -ENOMEM;
	}
	p->kind = PENDING_REFUSED;
	p->err = err;
	client_push_pending(c, p);
	return 0;
}

/* The sub that subscribe m answers (its id), or NULL. */
static struct sub *client_sub_answered(dbswap_client *c,
				       const struct ipc_msg *m)
{
	if (!m->has_id || m->id == 0)
		return NULL;
	for (size_t i = 0; i < c->n_subs; i++)
		if (c->subs[i].sub_id == m->id)
			return &c->subs[i];
	return NULL;
}

/* Arms the retry timer for the first refused sub due to be asked again;
 * disarms it when there is none. */
static void client_arm_sub_retry(dbswap_client *c)
{
	int64_t next = INT64_MAX;
	struct itimerspec its = { 0 };

	for (size_t i = 0; i < c->n_subs; i++)
		if (c->subs[i].retry_at)
			next = MIN(next, c->subs[i].retry_at);
	if (next != INT64_MAX) {
		int64_t ms = MAX(next - now_ms(), 1);
		its.it_value.tv_sec = ms / 1000;
		its.it_value.tv_nsec = (ms % 1000) * 1000000;
	}
	timerfd_settime(c->sub_timerfd, 0, &its, NULL);
}

/* The retry timer: asks again for the refused subs that are due. */
static void client_retry_subs(dbswap_client *c)
{
	int64_t now = now_ms();

	/* Disconnected: the next connection asks for every sub anyway. */
	for (size_t i = 0; i < c->n_subs && c->sock >= 0; i++)
		if (c->subs[i].retry_at && c->subs[i].retry_at <= now)
			client_send_subscribe(c, &c->subs[i]);
	if (c->sock >= 0)
		client_arm_sub_retry(c);
}

/* The agent follows s (an ok for its subscribe, or an update): a refusal
 * is over, which its pool hears once (or the log says). */
static int client_sub_accepted(dbswap_client *c, struct sub *s)
{
	int r = 0;

	if (!s->refused)
		return 0;
	if (s->refused_cb)
		r = client_queue_refused(c, s, 0, NULL);
	else
		client_log(c, LOG_NOTICE, "the agent at %s accepts the "
			   "subscription to %s now", c->path, s->target);
	if (r < 0)
		return r; /* still refused: told at the next acceptance */
	s->refused = 0;
	free(s->refusal);
	s->refusal = NULL;
	s->refusals = 0;
	s->retry_at = 0;
	return r;
}

/* The agent refused subscribe m of s: ask again later, with backoff, and
 * tell the pool (or the log) when the refusal is new or has changed, not
 * at each retry. */
static int client_sub_refused(dbswap_client *c, struct sub *s,
			      const struct ipc_msg *m)
{
	int err = streq(m->code, IPC_ERR_FORBIDDEN)	 ? -EACCES
		  : streq(m->code, IPC_ERR_UNKNOWN_TARGET) ? -ENXIO
							   : -EPERM;
	bool news = err != s->refused || !s->refusal ||
		    !streq(s->refusal, m->message);

	s->sub_id = 0;
	s->retry_at = now_ms() + backoff_ms(s->refusals++,
					    CLIENT_SUB_RETRY_FIRST_MS,
					    CLIENT_SUB_RETRY_MAX_MS);
	client_arm_sub_retry(c);
	if (!news)
		return 0;
	s->refused = err;
	free(s->refusal);
	s->refusal = strdup(m->message); /* NULL: the next one is news */
	if (s->refused_cb)
		return client_queue_refused(c, s, err, m->message);
	client_log(c, LOG_ERR, "the agent at %s refuses the subscription to "
		   "%s: %s: %s (asking again after %d s, doubling to %d s)",
		   c->path, s->target, m->code, m->message,
		   CLIENT_SUB_RETRY_FIRST_MS / 1000,
		   CLIENT_SUB_RETRY_MAX_MS / 1000);
	return 0;
}

/* Acts on one message from the agent.  Returns 0, or a negative errno
 * after which the connection is dropped. */
static int client_handle(dbswap_client *c, const uint8_t *body, size_t len)
{
	struct ipc_msg m;
	char err[256];
	int r = ipc_msg_decode(&m, body, len, err, sizeof(err));

	if (r < 0) {
		ipc_msg_fini(&m);
		if (r == -EPROTO)
			client_log(c, LOG_ERR, "bad message from the agent: %s",
				   err);
		return r;
	}
	if (m.has_id && c->reply && m.id == c->want_id) {
		*c->reply = m; /* moved, not copied */
		c->reply = NULL;
		c->got_reply = true;
		return 0;
	}
	switch (m.type) {
	case IPC_HELLO:
		/* Version 2 on: the instance numbers the generations. */
		if (m.version >= 2 && !m.instance) {
			client_log(c, LOG_ERR, "bad hello from the agent at %s: "
				   "no instance", c->path);
			r = -EPROTO;
			break;
		}
		snprintf(c->agent_instance, sizeof(c->agent_instance), "%s",
			 instance_or_empty(m.instance));
		c->hello_done = true;
		c->hello_ms = now_ms();
		c->last_error = 0;
		if (c->warned_down)
			client_log(c, LOG_NOTICE, "connected to the agent at %s",
				   c->path);
		c->warned_down = false;
		c->was_connected = true;
		break;
	case IPC_UPDATE: {
		/* Updates go to subscribers only: s is followed. */
		struct sub *s = client_sub(c, m.target);
		if (s)
			r = client_sub_accepted(c, s);
		if (s && r == 0)
			r = client_queue_update(c, s, &m);
		break;
	}
	case IPC_OK: {
		struct sub *s = client_sub_answered(c, &m);
		if (s) {
			s->sub_id = 0;
			r = client_sub_accepted(c, s);
		}
		break;
	}
	case IPC_SETTINGS: {
		struct sub *s = client_sub(c, m.target);
		if (s && s->settings_cb)
			r = client_queue_settings(c, s, &m);
		break;
	}
	case IPC_ERROR: {
		struct sub *s = client_sub_answered(c, &m);
		if (m.has_id && m.id == c->hello_id &&
		    streq(m.code, IPC_ERR_VERSION) &&
		    c->version > IPC_PROTOCOL_VERSION_MIN) {
			r = -EPROTONOSUPPORT;
			break;
		}
		if (s) {
			r = client_sub_refused(c, s, &m);
			break;
		}
		client_log(c, LOG_ERR, "the agent at %s says: %s: %s", c->path,
			   m.code, m.message);
		if (m.has_id && m.id == c->hello_id)
			r = -EPROTO;
		break;
	}
	default:
		break; /* types newer than this library */
	}
	ipc_msg_fini(&m);
	return r;
}

static void client_io(dbswap_client *c, uint32_t events)
{
	const uint8_t *body;
	size_t len;
	int r;

	if (events & EPOLLOUT) {
		r = ipc_queue_flush(&c->out, c->sock);
		if (r < 0) {
			client_disconnect(c, strerror(-r));
			return;
		}
		client_set_out(c, r == 1);
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;) {
		while ((r = ipc_reader_next(&c->in, &body, &len)) == 1) {
			r = client_handle(c, body, len);
			if (r == -EPROTONOSUPPORT) {
				client_fall_back(c);
				return;
			}
			if (r < 0) {
				client_disconnect(c, strerror(-r));
				return;
			}
			if (c->sock < 0)
				return;
		}
		if (r < 0) {
			client_disconnect(c, "frame over the size limit");
			return;
		}
		r = ipc_reader_fill(&c->in, c->sock);
		if (r == -EAGAIN)
			return;
		if (r <= 0) {
			client_disconnect(c, r == 0 ? "connection closed"
						    : strerror(-r));
			return;
		}
	}
}

/* Handles what epoll has, without blocking.  Called with the lock held. */
static void client_process(dbswap_client *c)
{
	struct epoll_event evs[4];
	int n = epoll_wait(c->epfd, evs, ARRAY_SIZE(evs), 0);

	for (int i = 0; i < n; i++) {
		if (evs[i].data.fd == c->timerfd) {
			uint64_t expirations;
			if (read(c->timerfd, &expirations,
				 sizeof(expirations)) > 0)
				client_reconnect(c);
		} else if (evs[i].data.fd == c->sub_timerfd) {
			uint64_t expirations;
			if (read(c->sub_timerfd, &expirations,
				 sizeof(expirations)) > 0)
				client_retry_subs(c);
		} else if (evs[i].data.fd == c->sock) {
			client_io(c, evs[i].events);
		}
	}
}

/* Runs the callbacks collected while locked.  Called without the lock. */
static int client_run_pending(dbswap_client *c)
{
	struct pending *p;
	int n = 0;

	pthread_mutex_lock(&c->cb_lock);
	pthread_mutex_lock(&c->lock);
	p = c->pending;
	c->pending = NULL;
	c->pending_tail = &c->pending;
	pthread_mutex_unlock(&c->lock);

	while (p) {
		struct pending *next = p->next;
		struct dbswap_update u = {
			.target = p->target,
			.instance = p->instance[0] ? p->instance : NULL,
			.conninfo = p->conninfo,
			.reason = p->reason,
			.server = p->server,
			.standby = p->standby,
			.generation = p->generation,
		};
		dbswap_update_fn *cb = NULL;
		client_settings_fn *scb = NULL;
		client_refused_fn *rcb = NULL;
		void *data = NULL;

		pthread_mutex_lock(&c->lock);
		struct sub *s = client_sub(c, p->target);
		if (s) {
			cb = s->cb;
			scb = s->settings_cb;
			rcb = s->refused_cb;
			data = s->userdata;
			if (p->kind == PENDING_UPDATE && cb) {
				s->cb_generation = p->generation;
				memcpy(s->cb_instance, p->instance,
				       sizeof(s->cb_instance));
			}
		}
		pthread_mutex_unlock(&c->lock);
		if (p->kind == PENDING_SETTINGS && scb) {
			scb(&p->settings, data);
			n++;
		} else if (p->kind == PENDING_REFUSED && rcb) {
			rcb(p->err, p->message, data);
			n++;
		} else if (p->kind == PENDING_UPDATE && cb) {
			cb(&u, data);
			n++;
		}
		pending_free(p);
		p = next;
	}
	pthread_mutex_unlock(&c->cb_lock);
	return n;
}

static int client_dispatch(dbswap_client *c)
{
	pthread_mutex_lock(&c->lock);
	client_process(c);
	pthread_mutex_unlock(&c->lock);
	return client_run_pending(c);
}

DBSWAP_EXPORT
int dbswap_client_dispatch(dbswap_client *c)
{
	bool busy;
	int r = client_usable(c, __func__);

	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	busy = c->thread_started;
	pthread_mutex_unlock(&c->lock);
	/* The background thread dispatches; a second dispatcher would race
	 * it for the same messages. */
	if (busy)
		return -EBUSY;
	return client_dispatch(c);
}

DBSWAP_EXPORT
dbswap_client *dbswap_client_new(const char *socket_path)
{
	struct epoll_event ev = { .events = EPOLLIN };
	const char *name = program_invocation_short_name;
	dbswap_client *c;

	if (!socket_path || !*socket_path)
		socket_path = secure_getenv("DBSWAP_SOCKET");
	if (!socket_path || !*socket_path)
		socket_path = DBSWAP_DEFAULT_SOCKET;
	if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	pthread_once(&fork_once, fork_register);
	c = zalloc(sizeof(*c));
	if (!c)
		return NULL;
	c->epoch = client_fork_epoch();
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->cb_lock, NULL);
	c->sock = c->timerfd = c->stopfd = c->sub_timerfd = -1;
	c->version = IPC_PROTOCOL_VERSION;
	c->last_error = -EINPROGRESS;
	c->pending_tail = &c->pending;
	c->log = default_log;
	c->path = strdup(socket_path);
	c->name = strdup(name && *name ? name : "libdbswap");
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	c->sub_timerfd = timerfd_create(CLOCK_MONOTONIC,
					TFD_NONBLOCK | TFD_CLOEXEC);
	c->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!c->path || !c->name || c->epfd < 0 || c->timerfd < 0 ||
	    c->sub_timerfd < 0 || c->stopfd < 0)
		goto err_client;
	ev.data.fd = c->timerfd;
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->timerfd, &ev) < 0)
		goto err_client;
	ev.data.fd = c->sub_timerfd;
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->sub_timerfd, &ev) < 0)
		goto err_client;
	/* Connect from the first dispatch, not here: the app may still set
	 * its name and subscriptions. */
	struct itimerspec its = { .it_value = { .tv_nsec = 1 } };
	timerfd_settime(c->timerfd, 0, &its, NULL);
	return c;

err_client:
	{
		int e = errno ? errno : ENOMEM;
		dbswap_client_free(c);
		errno = e;
	}
	return NULL;
}

DBSWAP_EXPORT
void dbswap_client_free(dbswap_client *c)
{
	bool foreign;

	if (!c)
		return;
	/* In a child: the thread is the parent's, the eventfd too (a write
	 * would stop the parent's thread), the locks may be held for ever.
	 * Closing the child's descriptors leaves the parent's open. */
	foreign = client_foreign(c);
	if (c->thread_started && !foreign) {
		uint64_t one = 1;
		(void)!write(c->stopfd, &one, sizeof(one));
		pthread_join(c->thread, NULL);
	}
	if (c->sock >= 0)
		close(c->sock);
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->timerfd >= 0)
		close(c->timerfd);
	if (c->sub_timerfd >= 0)
		close(c->sub_timerfd);
	if (c->stopfd >= 0)
		close(c->stopfd);
	ipc_reader_fini(&c->in);
	ipc_queue_fini(&c->out);
	for (size_t i = 0; i < c->n_subs; i++) {
		free(c->subs[i].target);
		free_secret(c->subs[i].conninfo);
		free(c->subs[i].server);
		free(c->subs[i].refusal);
	}
	free(c->subs);
	while (c->pending) {
		struct pending *p = c->pending;
		c->pending = p->next;
		pending_free(p);
	}
	free(c->path);
	free(c->name);
	if (!foreign) {
		pthread_mutex_destroy(&c->cb_lock);
		pthread_mutex_destroy(&c->lock);
	}
	free(c);
}

DBSWAP_EXPORT
int dbswap_client_set_name(dbswap_client *c, const char *name)
{
	char *copy;
	int r = client_usable(c, __func__);

	if (r < 0)
		return r;
	if (!name) {
		client_misuse(__func__, "the name is NULL");
		return -EINVAL;
	}
	copy = strndup(name, IPC_NAME_MAX);
	if (!copy)
		return -ENOMEM;
	pthread_mutex_lock(&c->lock);
	free(c->name);
	c->name = copy;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

DBSWAP_EXPORT
void dbswap_client_set_log(dbswap_client *c, dbswap_log_fn *fn,
			   void *userdata)
{
	if (client_usable(c, __func__) < 0)
		return;
	pthread_mutex_lock(&c->lock);
	c->log = fn;
	c->log_userdata = userdata;
	pthread_mutex_unlock(&c->lock);
}

DBSWAP_EXPORT
int dbswap_client_fd(dbswap_client *c)
{
	int r = client_usable(c, __func__);

	return r < 0 ? r : c->epfd;
}

DBSWAP_EXPORT
int dbswap_client_connected(dbswap_client *c)
{
	int r;

	if (client_usable(c, __func__) < 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	r = c->sock >= 0 && c->hello_done;
	pthread_mutex_unlock(&c->lock);
	return r;
}

static void *client_thread(void *data)
{
	dbswap_client *c = data;
	struct pollfd fds[2] = {
		{ .fd = c->epfd, .events = POLLIN },
		{ .fd = c->stopfd, .events = POLLIN },
	};

	for (;;) {
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			break;
		if (fds[1].revents)
			break;
		if (fds[0].revents)
			client_dispatch(c);
	}
	return NULL;
}

DBSWAP_EXPORT
int dbswap_client_start(dbswap_client *c)
{
	int r = client_usable(c, __func__);

	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	if (c->thread_started) {
		pthread_mutex_unlock(&c->lock);
		return -EALREADY;
	}
	r = -pthread_create(&c->thread, NULL, client_thread, c);
	c->thread_started = r == 0;
	pthread_mutex_unlock(&c->lock);
	return r;
}

static bool valid_target_name(const char *s)
{
	if (!s || !*s || strlen(s) > IPC_NAME_MAX)
		return false;
	for (const char *p = s; *p; p++) {
		bool ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			  *p == '_' || (p > s && *p >= '0' && *p <= '9');
		if (!ok)
			return false;
	}
	return true;
}

/* Adds a subscription for target and tells the agent if connected.
 * Called with the lock held.  Returns 0, -E2BIG or -ENOMEM. */
static int client_add_sub(dbswap_client *c, const char *target,
			  struct sub **out)
{
	struct sub *s;

	if (c->n_subs >= IPC_SUBSCRIBE_MAX)
		return -E2BIG;
	s = realloc(c->subs, (c->n_subs + 1) * sizeof(*s));
	if (!s)
		return -ENOMEM;
	c->subs = s;
	s = &c->subs[c->n_subs];
	*s = (struct sub){ .target = strdup(target) };
	if (!s->target)
		return -ENOMEM;
	c->n_subs++;
	if (c->sock >= 0)
		client_send_subscribe(c, s);
	/* sending may have dropped the connection, never the array */
	*out = &c->subs[c->n_subs - 1];
	return 0;
}

DBSWAP_EXPORT
int dbswap_subscribe(dbswap_client *c, const char *target,
		     dbswap_update_fn *callback, void *userdata)
{
	struct sub *s;
	int r = client_usable(c, __func__);

	if (r < 0)
		return r;
	if (!valid_target_name(target))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	s = client_sub(c, target);
	if (s && s->pool) {
		r = -EBUSY;
	} else if (s) {
		s->cb = callback;
		s->userdata = userdata;
	} else {
		r = client_add_sub(c, target, &s);
		if (r == 0) {
			s->cb = callback;
			s->userdata = userdata;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Locked.  instance "" for none. */
static int client_ack(dbswap_client *c, const char *target,
		      const char *instance, uint64_t generation)
{
	struct sub *s = client_sub(c, target);
	int r;

	if (!s)
		return -ENOENT;
	if (generation == 0 || !streq(instance, s->instance) ||
	    generation > s->delivered)
		return 0; /* not a value this client was given by that agent */
	if (generation == s->delivered)
		s->acked = true;
	/* Only the agent that numbered it can count it; another run of the
	 * agent sends its own update (and an acked value that is the same
	 * there is acked quietly then). */
	if (!client_agent_is(c, instance))
		return 0;
	r = client_send_ack(c, target, instance, generation);
	return r == -ENOTCONN ? 0 : r;
}

DBSWAP_EXPORT
int dbswap_ack(dbswap_client *c, const char *target, uint64_t generation)
{
	struct sub *s;
	int r = client_usable(c, __func__);

	if (r < 0)
		return r;
	if (!target)
		return -ENOENT;
	pthread_mutex_lock(&c->lock);
	s = client_sub(c, target);
	if (!s)
		r = -ENOENT;
	else if (s->cb_generation && generation == s->cb_generation)
		r = client_ack(c, target, s->cb_instance, generation);
	pthread_mutex_unlock(&c->lock);
	return r;
}

DBSWAP_EXPORT
int dbswap_ack_instance(dbswap_client *c, const char *target,
			const char *instance, uint64_t generation)
{
	int r = client_usable(c, __func__);

	if (r < 0)
		return r;
	if (!target)
		return -ENOENT;
	pthread_mutex_lock(&c->lock);
	r = client_ack(c, target, instance_or_empty(instance), generation);
	pthread_mutex_unlock(&c->lock);
	return r;
}

DBSWAP_EXPORT
const char *dbswap_update_target(const dbswap_update *u)
{
	return u ? u->target : NULL;
}

DBSWAP_EXPORT
const char *dbswap_update_conninfo(const dbswap_update *u)
{
	return u ? u->conninfo : NULL;
}

DBSWAP_EXPORT
uint64_t dbswap_update_generation(const dbswap_update *u)
{
	return u ? u->generation : 0;
}

DBSWAP_EXPORT
const char *dbswap_update_instance(const dbswap_update *u)
{
	return u ? u->instance : NULL;
}

DBSWAP_EXPORT
const char *dbswap_update_reason(const dbswap_update *u)
{
	return u ? u->reason : NULL;
}

DBSWAP_EXPORT
const char *dbswap_update_server(const dbswap_update *u)
{
	return u ? u->server : NULL;
}

DBSWAP_EXPORT
int dbswap_update_standby(const dbswap_update *u)
{
	return u ? u->standby : 0;
}

DBSWAP_EXPORT
char *dbswap_mask_conninfo(const char *conninfo)
{
	char *s;

	if (!conninfo) {
		errno = EINVAL;
		return NULL;
	}
	s = mask_conninfo(conninfo);

	if (!s)
		errno = ENOMEM;
	return s;
}

/* private interface (client.h) */

const char *client_socket_path(dbswap_client *c)
{
	return c->path;
}

uint64_t client_next_id(dbswap_client *c)
{
	uint64_t id;

	pthread_mutex_lock(&c->lock);
	id = ++c->next_id;
	pthread_mutex_unlock(&c->lock);
	return id;
}

/* Waits until done(c) holds or the deadline passes, dispatching. */
static int client_wait(dbswap_client *c, int64_t deadline,
		       bool (*done)(dbswap_client *))
{
	for (;;) {
		struct pollfd pfd = { .fd = c->epfd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		bool ok;

		pthread_mutex_lock(&c->lock);
		client_process(c);
		ok = done(c);
		bool connected = c->sock >= 0;
		pthread_mutex_unlock(&c->lock);
		client_run_pending(c);
		if (ok)
			return 0;
		if (!connected)
			return -ECONNRESET;
		if (left <= 0)
			return -ETIMEDOUT;
		poll(&pfd, 1, (int)MIN(left, 1000));
	}
}

static bool hello_done(dbswap_client *c)
{
	return c->hello_done;
}

static bool reply_done(dbswap_client *c)
{
	return c->got_reply;
}

int client_connect_now(dbswap_client *c, int timeout_ms, char *err,
		       size_t errlen)
{
	int r;

	int64_t deadline = now_ms() + timeout_ms;
	bool fell_back;

	do {
		pthread_mutex_lock(&c->lock);
		struct itimerspec off = { 0 };
		timerfd_settime(c->timerfd, 0, &off, NULL);
		r = client_try_connect(c);
		pthread_mutex_unlock(&c->lock);
		if (r < 0) {
			snprintf(err, errlen,
				 "cannot connect to the agent at %s: %s",
				 c->path, strerror(-r));
			return r;
		}
		r = client_wait(c, deadline, hello_done);
		pthread_mutex_lock(&c->lock);
		/* An older agent refused our version: again with its own. */
		fell_back = r == -ECONNRESET && c->fell_back;
		pthread_mutex_unlock(&c->lock);
	} while (fell_back);
	if (r == -ETIMEDOUT)
		snprintf(err, errlen, "the agent at %s did not answer within "
				      "%d ms", c->path, timeout_ms);
	else if (r < 0)
		snprintf(err, errlen, "the agent at %s refused the connection "
				      "(see the message above)", c->path);
	return r;
}

int client_call(dbswap_client *c, struct ipc_writer *w, uint64_t id,
		int timeout_ms, struct ipc_msg *reply, char *err,
		size_t errlen)
{
	int r;

	*reply = (struct ipc_msg){ 0 };
	pthread_mutex_lock(&c->lock);
	c->want_id = id;
	c->reply = reply;
	c->got_reply = false;
	r = client_send(c, w);
	pthread_mutex_unlock(&c->lock);
	if (r == 0)
		r = client_wait(c, now_ms() + timeout_ms, reply_done);
	pthread_mutex_lock(&c->lock);
	c->reply = NULL;
	pthread_mutex_unlock(&c->lock);
	if (r == -ETIMEDOUT)
		snprintf(err, errlen, "the agent at %s did not answer within "
				      "%d ms", c->path, timeout_ms);
	else if (r < 0)
		snprintf(err, errlen, "lost the connection to the agent at %s",
			 c->path);
	return r;
}

int client_subscribe_pool(dbswap_client *c, const char *target,
			  dbswap_update_fn *cb, client_settings_fn *settings_cb,
			  client_refused_fn *refused_cb, void *data)
{
	struct sub *s;
	int r;

	if (client_foreign(c))
		return -ECHILD;
	if (!valid_target_name(target))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (client_sub(c, target)) {
		r = -EBUSY;
	} else {
		r = client_add_sub(c, target, &s);
		if (r == 0) {
			s->cb = cb;
			s->settings_cb = settings_cb;
			s->refused_cb = refused_cb;
			s->userdata = data;
			s->pool = true;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

void client_unsubscribe(dbswap_client *c, const char *target)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_subs; i++) {
		if (!streq(c->subs[i].target, target))
			continue;
		free(c->subs[i].target);
		free_secret(c->subs[i].conninfo);
		free(c->subs[i].server);
		free(c->subs[i].refusal);
		memmove(&c->subs[i], &c->subs[i + 1],
			(c->n_subs - i - 1) * sizeof(*c->subs));
		c->n_subs--;
		break;
	}
	pthread_mutex_unlock(&c->lock);
	/* A callback of the target that started before may still run:
	 * wait for it.  Later ones find no subscription. */
	pthread_mutex_lock(&c->cb_lock);
	pthread_mutex_unlock(&c->cb_lock);
}

int client_nack(dbswap_client *c, const char *target, const char *instance,
		uint64_t generation, const char *message)
{
	struct ipc_writer w;
	int r = 0;

	instance = instance_or_empty(instance);
	pthread_mutex_lock(&c->lock);
	/* A nack for an earlier run of the agent tells this one nothing. */
	if (client_agent_is(c, instance)) {
		ipc_writer_init(&w, IPC_NACK, 4 + (instance[0] != '\0'));
		ipc_pack_kv_str(&w, "target", target);
		ipc_pack_kv_u64(&w, "generation", generation);
		ipc_pack_kv_str(&w, "message", message);
		if (instance[0])
			ipc_pack_kv_str(&w, "instance", instance);
		r = client_send(c, &w);
	}
	pthread_mutex_unlock(&c->lock);
	return r == -ENOTCONN ? 0 : r;
}

int client_refresh(dbswap_client *c, const char *target)
{
	struct sub *s;
	int r = 0;

	pthread_mutex_lock(&c->lock);
	s = client_sub(c, target);
	if (s && c->sock >= 0)
		r = client_send_subscribe(c, s);
	pthread_mutex_unlock(&c->lock);
	return r == -ENOTCONN ? 0 : r;
}

int client_agent_error(dbswap_client *c)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = c->sock >= 0 && c->hello_done ? 0 : c->last_error;
	pthread_mutex_unlock(&c->lock);
	return r;
}

void client_log_line(dbswap_client *c, int priority, const char *line)
{
	dbswap_log_fn *fn;
	void *data;

	pthread_mutex_lock(&c->lock);
	fn = c->log;
	data = c->log_userdata;
	pthread_mutex_unlock(&c->lock);
	if (fn)
		fn(priority, line, data);
}

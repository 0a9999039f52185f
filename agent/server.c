/*
 * Clients of the agent: accept, read frames, dispatch, write; see server.h
 * and ipc/PROTOCOL.md.
 *
 * Fairness: the loop must stay responsive (other clients, health checks,
 * the watchdog) whatever one client sends.  So a loop round dispatches at
 * most SERVER_FRAMES_PER_ROUND frames of each client and accepts at most
 * SERVER_ACCEPTS_PER_ROUND connections.  A client with frames left over is
 * put on the backlog: a list served round-robin by a zero-delay timer, once
 * per round, because epoll does not report frames already read into the
 * client's buffer.  While on the backlog its socket is not watched for
 * input, so that it is never served twice in one round.  Error replies cost
 * a client tokens of a bucket (SERVER_ERRORS_BURST, refilled at
 * SERVER_ERRORS_PER_S); a client that keeps causing errors once the bucket
 * is empty is sent error "limit" and disconnected.
 *
 * Quotas (server.h): clients, queued output and log lines are counted per
 * peer uid (struct peer_uid, one per uid with a client connected; a uid
 * of a /etc/subuid range counts as the range's owner), and output for
 * every uid but root's and the agent's in total.  When a budget of output
 * is used, the clients holding the most go first (client_make_room), not
 * the one the next message is for.  Log lines a
 * client causes go through client_log(), which lets a uid's clients
 * write SERVER_LOG_BURST lines at once, SERVER_LOG_PER_S a second after
 * that (and all such uids together SERVER_LOG_ALL_*), and says how many
 * it left out, at most once a second per uid.
 *
 * Everything a client sends that may be shown (its name, a nack's
 * message, a target or type name) is made printable UTF-8 as soon as it
 * is decoded (msg_clean), and every string of a status reply is too
 * (status.h), so that no peer can forge log lines, reach a terminal with
 * escape sequences or break another client's decoder.
 *
 * What a status reply holds and shows to whom: status.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "access.h"
#include "agent.h"
#include "failover.h"
#include "common/log.h"
#include "common/loop.h"
#include "ipc/frame.h"
#include "ipc/msg.h"
#include "events.h"
#include "metrics.h"
#include "server.h"
#include "status.h"
#include "subuid.h"
#include "systemd.h"
#include "target.h"

/* How long accept() pauses after running out of descriptors. */
#define SERVER_ACCEPT_BACKOFF_MS 100
/* At most one log line per this interval about clients refused for the
 * client limit: a flood of connections must not flood the log too. */
#define SERVER_REFUSED_LOG_MS 1000
/* Extra wait before a sweep for clients without hello, so that one sweep
 * drops a burst of them instead of running once per client. */
#define SERVER_HELLO_SWEEP_SLACK_MS 100

/* Frames of one client dispatched per loop round.  A status reply, the
 * dearest request, takes tens of microseconds to build: 32 of them keep a
 * round within a few milliseconds even with several clients busy at once,
 * and a round with nothing else to do is a few microseconds, so a client
 * pipelining requests is still answered thousands of times a second. */
#define SERVER_FRAMES_PER_ROUND 32
/* Connections accepted per loop round: a storm of connects is taken in
 * steps, with the clients already there served between them.  Large
 * enough that a fleet of apps starting together is not slowed. */
#define SERVER_ACCEPTS_PER_ROUND 64
/* Error replies a client may cause (an unknown type, an ack for a target
 * it did not subscribe to, ...): a token bucket of SERVER_ERRORS_BURST,
 * refilled at SERVER_ERRORS_PER_S a second.  A working client causes an
 * error now and then (a typo'd target, a newer message type); one that
 * exhausts the bucket is looping on a mistake or hostile, and is sent
 * error "limit" and disconnected instead of costing a reply each time. */
#define SERVER_ERRORS_BURST 32
#define SERVER_ERRORS_PER_S 4
/* At most one log line per this interval about clients disconnected for
 * too many errors: a burst of such clients must not flood the log. */
#define SERVER_LIMIT_LOG_MS 1000

/* Log lines the clients of one uid (but root and the agent's) may cause:
 * SERVER_LOG_BURST at once, SERVER_LOG_PER_S a second after that; and
 * those of all such uids together.  A working app causes a few lines
 * when it connects, subscribes and leaves; a flood of them would drown
 * the agent's own lines (journald drops a service's lines past its rate
 * limit, whoever caused them). */
#define SERVER_LOG_BURST 20
#define SERVER_LOG_PER_S 5
#define SERVER_LOG_ALL_BURST 100
#define SERVER_LOG_ALL_PER_S 20
/* At most one line per this interval and uid saying how many lines its
 * clients caused that were not logged. */
#define SERVER_LOG_SUMMARY_MS 1000

/* The clients of one uid, for its quotas. */
struct peer_uid {
	struct peer_uid *next;
	uid_t uid;
	unsigned n_clients;
	size_t queued;       /* output queued for them, in bytes */
	int64_t log_credit;  /* lines they may cause, in thousandths */
	int64_t log_ms;
	unsigned suppressed; /* lines not logged since the last summary */
	int64_t summary_ms;  /* last summary line */
};

struct subscription {
	struct target *target;
	uint64_t acked;  /* last generation acked, 0 for none */
	uint64_t nacked; /* last generation nacked and not acked since, or 0 */
	char *nack_msg;  /* its message, from the client: untrusted text */
};

struct client {
	struct server *server;
	struct client *prev, *next;
	uint64_t serial; /* names it in replies that come later */
	int fd;
	struct loop_source *src;
	uint32_t events; /* epoll interest set on src */
	struct ipc_reader in;
	struct ipc_queue out;
	bool want_out;
	/* On the server's backlog: frames may wait in `in` or the socket,
	 * served by the backlog timer instead of epoll. */
	bool backlog;
	struct client *bl_prev, *bl_next;
	/* Error replies it may still cause, in thousandths of a token, as of
	 * errors_ms (SERVER_ERRORS_BURST). */
	int64_t error_credit;
	int64_t errors_ms;
	struct access_peer cred; /* as the kernel saw it at connect */
	/* Root or the agent's uid: exempt from quotas (server.h). */
	bool owner;
	/* Its quotas: those of its uid, or of the owner of the subuid range
	 * its uid is in (client_quota_uid). */
	struct peer_uid *peer;
	char of[SUBUID_DESCRIBE_MAX]; /* "" or " (subuid of NAME)" */
	size_t charged; /* output charged to peer and the total */
	int64_t connected_ms;
	int64_t active_ms; /* its last message */
	bool hello;
	uint64_t version; /* of the session: the client's hello's */
	bool dropped; /* out of service; freed when the loop comes back */
	/* On the server's dead list.  Not next: a loop over the clients
	 * that captured a dropped client's next still finds every client
	 * after it (a send to one client may drop others, client_send). */
	struct client *dead_next;
	char *name;
	struct subscription *subs;
	size_t n_subs;
	/* Sent something besides hello, status and ping: its goodbye is
	 * worth a line at info.  One that only asked how things are
	 * (dbswapctl status, a monitor polling) leaves at debug. */
	bool noted;
};

struct server {
	struct agent *agent;
	/* This run of the agent (PROTOCOL.md, "Agent instance"): in hello,
	 * update and status; acks for another instance are stale. */
	char instance[IPC_INSTANCE_LEN + 1];
	int fd;
	bool owns_path;
	char *path;
	struct loop_source *src;
	struct loop_timer *accept_pause;
	struct client *clients;
	unsigned n_clients;
	uint64_t serials;
	struct client *dead;      /* dropped, not yet freed */
	struct loop_timer *reaper;
	/* Clients with frames left after their round's share, in the order
	 * they will be served. */
	struct client *bl_head, *bl_tail;
	unsigned n_backlog;
	struct loop_timer *backlog_timer;
	struct access_rules access;
	/* Limits: see server.h. */
	unsigned max_clients;
	int hello_timeout_ms;
	struct loop_timer *sweep; /* hello deadline, idle timeout */
	int64_t refused_log_ms; /* last log line about the client limit */
	unsigned refused;       /* clients refused since that line */
	int64_t limit_log_ms;   /* last log line about too many errors */
	int64_t oversize_log_ms; /* last log line about an update too long */
	unsigned limited;       /* clients dropped for it since that line */
	/* Quotas: see server.h. */
	struct peer_uid *uids;
	struct loop_timer *uid_timer; /* server_uid_tick */
	unsigned max_per_uid;
	unsigned reserved;
	size_t output_per_uid;
	size_t output_total;
	size_t queued;         /* output queued for non-owners, in bytes */
	int idle_timeout_ms;   /* -1: none */
	int64_t log_credit;    /* lines all non-owners may cause */
	int64_t log_ms;
	struct subuid_map subuid; /* /etc/subuid, as last read */
};

static void server_check_acked(struct server *s, struct target *t);
static int64_t client_due(const struct client *c);
static void server_arm_sweep(struct server *s, int64_t due);

static struct peer_uid *server_uid(struct server *s, uid_t uid)
{
	struct peer_uid *u;

	for (u = s->uids; u && u->uid != uid; u = u->next)
		;
	return u;
}

/* The entry of uid, made if it has none yet; NULL when out of memory. */
static struct peer_uid *server_uid_get(struct server *s, uid_t uid)
{
	struct peer_uid *u = server_uid(s, uid);

	if (u)
		return u;
	u = zalloc(sizeof(*u));
	if (!u)
		return NULL;
	u->uid = uid;
	u->log_credit = SERVER_LOG_BURST * 1000LL;
	u->log_ms = now_ms();
	u->next = s->uids;
	s->uids = u;
	return u;
}

static void peer_log_suppressed(struct peer_uid *u, int64_t now)
{
	log_warning("uid %u: %u more line(s) about its clients not logged "
		    "(at most %d at once, %d a second)", (unsigned)u->uid,
		    u->suppressed, SERVER_LOG_BURST, SERVER_LOG_PER_S);
	u->suppressed = 0;
	u->summary_ms = now;
}

/* Refills u's log bucket as of now. */
static void peer_log_refill(struct peer_uid *u, int64_t now)
{
	u->log_credit = MIN(SERVER_LOG_BURST * 1000LL,
			    u->log_credit +
				    (now - u->log_ms) * SERVER_LOG_PER_S);
	u->log_ms = now;
}

/* Once a second while there is work: says how many lines each uid's
 * clients caused that were not logged, and forgets uids without clients
 * once their log bucket is full again.  An entry outlives its last client
 * so that a client that reconnects does not start with a full bucket. */
static void server_uid_tick(struct loop_timer *t, void *data)
{
	struct server *s = data;
	struct peer_uid **p = &s->uids;
	int64_t now = now_ms();
	bool again = false;

	while (*p) {
		struct peer_uid *u = *p;

		peer_log_refill(u, now);
		if (u->suppressed &&
		    now - u->summary_ms >= SERVER_LOG_SUMMARY_MS)
			peer_log_suppressed(u, now);
		if (u->n_clients == 0 && !u->suppressed &&
		    u->log_credit == SERVER_LOG_BURST * 1000LL) {
			*p = u->next;
			free(u);
			continue;
		}
		again |= u->n_clients == 0 || u->suppressed;
		p = &u->next;
	}
	if (again)
		loop_timer_arm_in(t, SERVER_LOG_SUMMARY_MS);
}

static void server_uid_tick_soon(struct server *s)
{
	if (!loop_timer_armed(s->uid_timer))
		loop_timer_arm_in(s->uid_timer, SERVER_LOG_SUMMARY_MS);
}

/* One client of u fewer; the entry goes later (server_uid_tick). */
static void server_uid_put(struct server *s, struct peer_uid *u)
{
	if (u && --u->n_clients == 0)
		server_uid_tick_soon(s);
}

/* Whether a line c caused may go out: always for root and the agent's
 * uid; for others, from the buckets of its uid and of all of them.  A
 * line left out is counted, and said at most once a second per uid. */
static bool client_log_take(struct client *c)
{
	struct server *s = c->server;
	struct peer_uid *u = c->peer;
	int64_t now;

	if (c->owner || !u)
		return true;
	now = now_ms();
	peer_log_refill(u, now);
	s->log_credit = MIN(SERVER_LOG_ALL_BURST * 1000LL,
			    s->log_credit +
				    (now - s->log_ms) * SERVER_LOG_ALL_PER_S);
	s->log_ms = now;
	if (u->log_credit >= 1000 && s->log_credit >= 1000) {
		u->log_credit -= 1000;
		s->log_credit -= 1000;
		return true;
	}
	u->suppressed++;
	if (now - u->summary_ms >= SERVER_LOG_SUMMARY_MS)
		peer_log_suppressed(u, now);
	else
		server_uid_tick_soon(s);
	return false;
}

/* A log line c caused (its requests, its errors, its coming and going). */
PRINTF(3, 4)
static void client_log(struct client *c, int level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	if (!log_enabled(level) || !client_log_take(c))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, "%s", line);
}

/* Charges c's queued output to its uid and to the total, as it is now. */
static void client_charge(struct client *c)
{
	struct server *s = c->server;
	size_t now = c->dropped ? 0 : ipc_queue_pending(&c->out);

	if (c->owner || !c->peer)
		return;
	c->peer->queued = c->peer->queued - c->charged + now;
	s->queued = s->queued - c->charged + now;
	c->charged = now;
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

static void backlog_unlink(struct client *c)
{
	struct server *s = c->server;

	if (!c->backlog)
		return;
	if (c->bl_prev)
		c->bl_prev->bl_next = c->bl_next;
	else
		s->bl_head = c->bl_next;
	if (c->bl_next)
		c->bl_next->bl_prev = c->bl_prev;
	else
		s->bl_tail = c->bl_prev;
	c->bl_prev = c->bl_next = NULL;
	c->backlog = false;
	s->n_backlog--;
}

/* Watches c's socket for input unless it is on the backlog, and for
 * output while its queue holds bytes. */
static void client_set_events(struct client *c)
{
	uint32_t events = (c->backlog ? 0 : EPOLLIN | EPOLLRDHUP) |
			  (c->want_out ? EPOLLOUT : 0);

	if (c->dropped || events == c->events)
		return;
	c->events = events;
	loop_mod_fd(c->src, events);
}

/* Takes c out of service at once: unlinked, its fd closed, its acks no
 * longer counted.  Its memory stays until the loop comes back
 * (server_reap): a handler may still hold c after a call that dropped it
 * (a publish or a reload sends to every subscriber, the requester too),
 * and checks c->dropped instead of touching freed memory. */
static void client_retire(struct client *c)
{
	struct server *s = c->server;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_clients--;
	backlog_unlink(c);
	loop_remove_fd(c->src);
	close(c->fd);
	ipc_reader_fini(&c->in);
	ipc_queue_fini(&c->out);
	c->dropped = true;
	client_charge(c);
	server_uid_put(s, c->peer);
	c->peer = NULL;
	c->dead_next = s->dead;
	s->dead = c;
	loop_timer_arm_in(s->reaper, 0);
	systemd_changed(s->agent);
	/* The last straggler leaving may complete a rotation. */
	for (size_t i = 0; i < c->n_subs; i++) {
		struct target *t = c->subs[i].target;

		t->n_subscribers--;
		if (!sub_lags(t, &c->subs[i]) && t->acked_gen == t->generation)
			t->n_acked--;
		server_check_acked(s, t);
	}
}

static void server_reap(struct loop_timer *t, void *data)
{
	struct server *s = data;

	while (s->dead) {
		struct client *c = s->dead;
		s->dead = c->dead_next;
		for (size_t i = 0; i < c->n_subs; i++)
			free(c->subs[i].nack_msg);
		free(c->subs);
		access_peer_fini(&c->cred);
		free(c->name);
		free(c);
	}
}

/* How a client is named in log lines. */
#define CLIENT_FMT "client pid %d uid %u%s (%s)"
#define CLIENT_ARGS(c) (int)(c)->cred.pid, (unsigned)(c)->cred.uid, \
	(c)->of, ((c)->name ? (c)->name : "no hello yet")

static void client_drop(struct client *c, const char *why)
{
	if (c->dropped)
		return;
	metrics_client_gone(why);
	client_log(c, LOG_INFO, CLIENT_FMT " disconnected: %s", CLIENT_ARGS(c),
		   why);
	client_retire(c);
}

static bool client_is_owner(const struct client *c)
{
	return access_is_owner(&c->server->access, &c->cred);
}

static bool client_may_subscribe(const struct client *c,
				 const struct target *t)
{
	return access_may_subscribe(&c->server->access, &c->cred, t->name);
}

static bool client_is_admin(const struct client *c)
{
	return access_is_admin(&c->server->access, &c->cred);
}

/* Writes what the socket takes and keeps EPOLLOUT interest only while
 * output is queued.  Returns 0, or a negative errno after dropping c. */
static int client_flush(struct client *c)
{
	int r;
	bool want;

	if (c->dropped)
		return -EPIPE;
	r = ipc_queue_flush(&c->out, c->fd);
	want = r == 1;

	if (r < 0) {
		client_drop(c, strerror(-r));
		return r;
	}
	c->want_out = want;
	client_charge(c);
	client_set_events(c);
	return 0;
}

/* Of the clients charged to u (to any uid when u is NULL), the one
 * holding the most output, c counted with the need bytes it is about to
 * be sent: c itself only if it would hold more than every other. */
static struct client *server_largest(struct server *s,
				     const struct peer_uid *u,
				     struct client *c, size_t need)
{
	struct client *big = c;
	size_t most = c->charged + need;

	for (struct client *x = s->clients; x; x = x->next) {
		if (x == c || !x->peer || x->owner || (u && x->peer != u))
			continue;
		if (x->charged >= most) {
			big = x;
			most = x->charged;
		}
	}
	return big;
}

/* Makes room for need more bytes for c within the budgets of its uid
 * and of all clients, by dropping the clients holding the most output
 * (of its uid when that budget is used, of every uid but root's and the
 * agent's for the total): a client that reads keeps little queued, so the
 * largest queues are the clients that stopped reading, and whoever is
 * sent something next, often one that reads, is not the one to pay for
 * them.  Returns 0, or -ENOBUFS after dropping c, the largest itself. */
static int client_make_room(struct client *c, size_t need)
{
	struct server *s = c->server;
	struct peer_uid *u = c->peer;
	char why[192];

	for (;;) {
		bool uid_full = u->queued + need > s->output_per_uid;
		struct client *big;

		if (!uid_full && s->queued + need <= s->output_total)
			return 0;
		big = server_largest(s, uid_full ? u : NULL, c, need);
		/* Dropping big uncharges its queue: each round frees bytes,
		 * since big holds at least need. */
		snprintf(why, sizeof(why), "not reading its messages (the "
			 "output budget of %s is used), holding the most: "
			 "%zu bytes", uid_full ? "its uid" : "all clients",
			 big->charged + (big == c ? need : 0));
		client_drop(big, why);
		if (big == c)
			return -ENOBUFS;
	}
}

/* Queues and sends one message.  Returns 0, or a negative errno after
 * dropping c (a stuck peer, or out of memory).  May drop other clients
 * (client_make_room): callers that walk the client list take the next
 * one before sending, which stays valid (client.dead_next). */
static int client_send(struct client *c, struct ipc_writer *w)
{
	int r;

	if (c->dropped) {
		ipc_writer_fini(w);
		return -EPIPE;
	}
	/* Output for others than root and the agent's uid is bounded per
	 * uid and in total too: 200 clients that ask for status and never
	 * read must not make the agent hold 200 full queues. */
	if (!c->owner && c->peer && !w->failed &&
	    client_make_room(c, IPC_FRAME_HEADER + w->len) < 0) {
		ipc_writer_fini(w);
		return -ENOBUFS;
	}
	r = w->failed ? -ENOMEM : ipc_queue_push(&c->out, w->buf, w->len);

	ipc_writer_fini(w);
	if (r == -ENOBUFS) {
		client_drop(c, "not reading its messages (output queue full)");
		return r;
	}
	if (r < 0) {
		client_drop(c, strerror(-r));
		return r;
	}
	return client_flush(c);
}

static void writer_begin(struct ipc_writer *w, enum ipc_type type, size_t n,
			 const struct ipc_msg *req)
{
	bool id = req && req->has_id;

	ipc_writer_init(w, type, n + 1 + id);
	if (id)
		ipc_pack_kv_u64(w, "id", req->id);
}

PRINTF(4, 5)
static int client_error(struct client *c, const struct ipc_msg *req,
			const char *code, const char *fmt, ...)
{
	struct ipc_writer w;
	char msg[1024]; /* a failed switch's reason: a masked URL and libpq's */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	writer_begin(&w, IPC_ERROR, 2, req);
	ipc_pack_kv_str(&w, "code", code);
	ipc_pack_kv_str(&w, "message", msg);
	return client_send(c, &w);
}

/* Takes one error reply from c's bucket; false when it is empty. */
static bool client_take_error(struct client *c)
{
	const int64_t full = SERVER_ERRORS_BURST * 1000LL;
	int64_t now = now_ms();

	c->error_credit = MIN(full, c->error_credit + (now - c->errors_ms) *
						      SERVER_ERRORS_PER_S);
	c->errors_ms = now;
	if (c->error_credit < 1000)
		return false;
	c->error_credit -= 1000;
	return true;
}

/* An error the client caused, charged to its bucket: the reply, or once
 * the bucket is empty, error "limit" and a disconnect (logged at most once
 * every SERVER_LIMIT_LOG_MS for all such clients).  Returns what
 * client_error does, or -ECONNRESET after dropping c. */
PRINTF(4, 5)
static int client_reject(struct client *c, const struct ipc_msg *req,
			 const char *code, const char *fmt, ...)
{
	struct server *s = c->server;
	char msg[1024];
	int64_t now;
	va_list ap;

	if (c->dropped)
		return -EPIPE;
	if (client_take_error(c)) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		return client_error(c, req, code, "%s", msg);
	}
	(void)client_error(c, req, IPC_ERR_LIMIT,
			   "too many error replies (more than %d at once, %d "
			   "a second after that); disconnecting",
			   SERVER_ERRORS_BURST, SERVER_ERRORS_PER_S);
	if (c->dropped)
		return -ECONNRESET;
	now = now_ms();
	s->limited++;
	if (now - s->limit_log_ms >= SERVER_LIMIT_LOG_MS) {
		log_warning(CLIENT_FMT " disconnected: too many error replies "
			    "(last: %s); %u client(s) so disconnected since "
			    "the last such line", CLIENT_ARGS(c), code,
			    s->limited);
		s->limit_log_ms = now;
		s->limited = 0;
	}
	client_retire(c);
	return -ECONNRESET;
}

/* A protocol violation: say why, then hang up. */
static void client_violation_code(struct client *c, const char *code,
				  const char *why)
{
	client_log(c, LOG_WARNING, CLIENT_FMT ": protocol violation: %s",
		   CLIENT_ARGS(c), why);
	if (client_error(c, NULL, code, "%s", why) < 0)
		return;
	client_drop(c, "protocol violation");
}

static void client_violation(struct client *c, const char *why)
{
	client_violation_code(c, IPC_ERR_PROTOCOL, why);
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
	ipc_pack_kv_str(&w, "instance", c->server->instance);
	ipc_pack_kv_str(&w, "conninfo", t->conninfo);
	ipc_pack_kv_str(&w, "reason", t->reason ? t->reason : "rotation");
	ipc_pack_kv_str(&w, "server", target_role_name(t->current));
	ipc_pack_kv_bool(&w, "standby", t->standby);
	/* A value too long to frame (the env layer bounds values far below
	 * this) is not sent, and the client is kept: dropping it would only
	 * make it reconnect, subscribe and be dropped again, every 20 ms, and
	 * it keeps the value it has.  Said at most once a second. */
	if (!w.failed && w.len > IPC_FRAME_MAX) {
		struct server *s = c->server;
		int64_t now = now_ms();

		if (now - s->oversize_log_ms >= SERVER_LIMIT_LOG_MS) {
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

	writer_begin(&w, IPC_OK, generation > 0, req);
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

	for (c = s->clients; c && c->serial != req->client; c = c->next)
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
	struct target *t = agent_find_target(c->server->agent, m->target);
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
	struct agent *a = c->server->agent;
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
	c->hello = true;
	c->version = m->version;
	c->name = strdup(m->name);
	server_arm_sweep(c->server, client_due(c));
	client_log(c, LOG_DEBUG, CLIENT_FMT " said hello, protocol version "
		   "%llu", CLIENT_ARGS(c), (unsigned long long)c->version);
	/* The session speaks the client's version; the instance goes to a
	 * version-1 client too, which ignores it like any unknown field. */
	writer_begin(&w, IPC_HELLO, 4, m);
	ipc_pack_kv_u64(&w, "version", c->version);
	ipc_pack_kv_str(&w, "name", "dbswapd " DBSWAP_VERSION);
	ipc_pack_kv_i64(&w, "pid", getpid());
	ipc_pack_kv_str(&w, "instance", c->server->instance);
	client_send(c, &w);
}

static void handle_subscribe(struct client *c, const struct ipc_msg *m)
{
	struct agent *a = c->server->agent;
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
	if (!m->instance || streq(m->instance, c->server->instance))
		return false;
	/* Counted for subscribers only: anyone else could inflate the
	 * counter of a target it may not even follow. */
	if (t && client_sub(c, t))
		t->stale_acks++;
	client_log(c, LOG_DEBUG, CLIENT_FMT " sent %s for %s generation %llu "
		   "of agent instance %s, not this one (%s): ignored",
		   CLIENT_ARGS(c), m->type_name, m->target,
		   (unsigned long long)m->generation, m->instance,
		   c->server->instance);
	return true;
}

static void handle_ack(struct client *c, const struct ipc_msg *m)
{
	struct target *t = agent_find_target(c->server->agent, m->target);
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
	server_check_acked(c->server, t);
	systemd_changed(c->server->agent);
}

static void handle_nack(struct client *c, const struct ipc_msg *m)
{
	struct target *t = agent_find_target(c->server->agent, m->target);
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
	return s->n_clients;
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

	server_count(asker->server, t, subscribers, acked);
}

/* The subscribers of t after *cursor, for status (status.h). */
static bool status_subscriber(const struct target *t, const void **cursor,
			      struct status_peer *p, void *data)
{
	const struct client *asker = data, *c = *cursor;

	for (c = c ? c->next : asker->server->clients; c; c = c->next) {
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
	struct server *s = c->server;
	struct status_source src = {
		.agent = s->agent,
		.instance = s->instance,
		.clients = s->n_clients,
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

	if (metrics_render(c->server->agent, client_may_follow, c, &text,
			   &len) < 0) {
		client_error(c, m, IPC_ERR_INTERNAL, "out of memory");
		return;
	}
	writer_begin(&w, IPC_METRICS, 1, m);
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

	c->active_ms = now_ms();
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
		agent_reload(c->server->agent);
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

/* Dispatches at most SERVER_FRAMES_PER_ROUND frames of c, reading more
 * from its socket as needed.  Returns 1 when that share is used up (more
 * may be waiting), 0 when the socket has nothing more for now, or a
 * negative errno after dropping c. */
static int client_read(struct client *c)
{
	unsigned n = 0;

	for (;;) {
		const uint8_t *body;
		size_t len;
		int r = 0;

		/* Drain complete frames before reading more. */
		while (n < SERVER_FRAMES_PER_ROUND &&
		       (r = ipc_reader_next(&c->in, &body, &len)) == 1) {
			n++;
			client_dispatch(c, body, len);
			if (c->dropped)
				return -ECONNRESET;
		}
		if (n == SERVER_FRAMES_PER_ROUND)
			return 1;
		if (r == -EMSGSIZE) {
			client_violation(c, "frame over the 65536 byte limit");
			return -EMSGSIZE;
		}
		r = ipc_reader_fill(&c->in, c->fd);
		if (r == -EAGAIN)
			return 0;
		if (r == 0 && !c->noted && !c->in.len) {
			client_log(c, LOG_DEBUG, CLIENT_FMT " disconnected: "
				   "closed the connection", CLIENT_ARGS(c));
			client_retire(c);
			return -ECONNRESET;
		}
		if (r == 0) {
			client_drop(c, c->in.len ? "closed mid-frame"
						 : "closed the connection");
			return -ECONNRESET;
		}
		if (r == -EMSGSIZE) {
			client_violation(c, "frame over the 65536 byte limit");
			return r;
		}
		if (r < 0) {
			client_drop(c, strerror(-r));
			return r;
		}
	}
}

/* Puts c at the end of the backlog and makes sure the backlog is served
 * in the next round. */
static void backlog_append(struct client *c)
{
	struct server *s = c->server;

	if (c->backlog || c->dropped)
		return;
	c->backlog = true;
	c->bl_prev = s->bl_tail;
	c->bl_next = NULL;
	if (s->bl_tail)
		s->bl_tail->bl_next = c;
	else
		s->bl_head = c;
	s->bl_tail = c;
	s->n_backlog++;
	client_set_events(c);
	if (!loop_timer_armed(s->backlog_timer))
		loop_timer_arm_in(s->backlog_timer, 0);
}

/* One round's share for each client on the backlog, in turn; those with
 * more left go to the end again.  Clients that join during this round
 * wait for the next. */
static void server_backlog(struct loop_timer *t, void *data)
{
	struct server *s = data;

	for (unsigned n = s->n_backlog; n > 0 && s->bl_head; n--) {
		struct client *c = s->bl_head;

		backlog_unlink(c);
		if (client_read(c) == 1)
			backlog_append(c);
		else
			client_set_events(c);
	}
	if (s->bl_head && !loop_timer_armed(t))
		loop_timer_arm_in(t, 0);
}

static void client_event(struct loop_source *src, uint32_t events, void *data)
{
	struct client *c = data;

	if (c->dropped)
		return;
	if (events & EPOLLOUT) {
		if (client_flush(c) < 0)
			return;
	}
	/* Its turn comes from the backlog (a hangup is seen there too). */
	if (c->backlog)
		return;
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
		return;
	if (client_read(c) == 1)
		backlog_append(c);
}

/* A connection refused at a limit: an error (code limit) saying why, and
 * close, with a log line at most every SERVER_REFUSED_LOG_MS. */
static void server_refuse(struct server *s, int fd, const struct client *c,
			  const char *why)
{
	struct ipc_queue q = { 0 };
	struct ipc_writer w;
	int64_t now = now_ms();

	ipc_writer_init(&w, IPC_ERROR, 3); /* type, code, message */
	ipc_pack_kv_str(&w, "code", IPC_ERR_LIMIT);
	ipc_pack_kv_str(&w, "message", why);
	/* A fresh socket's buffer takes this small frame whole; whatever
	 * does not go now is not retried. */
	if (!w.failed && ipc_queue_push(&q, w.buf, w.len) == 0)
		(void)ipc_queue_flush(&q, fd);
	ipc_queue_fini(&q);
	ipc_writer_fini(&w);
	s->refused++;
	if (now - s->refused_log_ms >= SERVER_REFUSED_LOG_MS) {
		log_warning("client pid %d uid %u%s refused: %s; %u refused "
			    "since the last such line", (int)c->cred.pid,
			    (unsigned)c->cred.uid, c->of, why, s->refused);
		s->refused_log_ms = now;
		s->refused = 0;
	}
	close(fd);
}

/* The uid whose quotas c uses: its own, or the owner's of the subuid
 * range it is in (then c->of says so, for its log lines). */
static uid_t client_quota_uid(struct client *c)
{
	struct server *s = c->server;
	const struct subuid_range *r;

	subuid_refresh(&s->subuid);
	r = subuid_find(&s->subuid, c->cred.uid);
	if (!r || r->owner == c->cred.uid)
		return c->cred.uid;
	subuid_describe(r, c->of, sizeof(c->of));
	return r->owner;
}

/* Whether c may take a slot now; false with why set if not.  The last
 * s->reserved slots are for root, the agent's uid and admins; other uids
 * hold at most s->max_per_uid clients each, a subuid range's uids and its
 * owner's together (quota, client_quota_uid). */
static bool server_admit(struct server *s, const struct client *c,
			 uid_t quota, char *why, size_t size)
{
	const struct peer_uid *u = server_uid(s, quota);
	unsigned held = u ? u->n_clients : 0;

	if (s->n_clients >= s->max_clients) {
		snprintf(why, size, "%u clients connected, the limit",
			 s->n_clients);
		return false;
	}
	if (s->n_clients >= s->max_clients - s->reserved &&
	    !client_is_admin(c)) {
		snprintf(why, size, "%u clients connected; the last %u of "
			 "%u slots are kept for root and admins", s->n_clients,
			 s->reserved, s->max_clients);
		return false;
	}
	if (!c->owner && held >= s->max_per_uid) {
		snprintf(why, size, "uid %u has %u clients connected%s, the "
			 "most one uid may", (unsigned)quota, held,
			 quota != c->cred.uid ? " with its subordinate uids"
					      : "");
		return false;
	}
	return true;
}

/* When the sweep drops c: without a hello, hello_timeout_ms after it
 * connected; subscribed to nothing and silent, idle_timeout_ms after its
 * last message (not root's or the agent's uid's); else never. */
static int64_t client_due(const struct client *c)
{
	const struct server *s = c->server;

	if (!c->hello)
		return c->connected_ms + s->hello_timeout_ms;
	if (c->owner || c->n_subs > 0 || s->idle_timeout_ms < 0)
		return INT64_MAX;
	return c->active_ms + s->idle_timeout_ms;
}

/* Makes sure the sweep runs by due. */
static void server_arm_sweep(struct server *s, int64_t due)
{
	if (due == INT64_MAX)
		return;
	due += SERVER_HELLO_SWEEP_SLACK_MS;
	if (!loop_timer_armed(s->sweep) || loop_timer_deadline(s->sweep) > due)
		loop_timer_arm(s->sweep, due);
}

/* Drops the clients whose time is up (client_due) and arms the sweep for
 * the next one due.  A client's activity only moves its time later, so a
 * sweep that comes early finds nothing and arms again. */
static void server_sweep(struct loop_timer *t, void *data)
{
	struct server *s = data;
	int64_t now = now_ms(), next = INT64_MAX;
	struct client *c, *n;

	for (c = s->clients; c; c = n) {
		int64_t due = client_due(c);
		n = c->next; /* dropping c unlinks it */
		if (due == INT64_MAX)
			continue;
		if (due > now) {
			next = MIN(next, due);
			continue;
		}
		if (!c->hello) {
			if (client_error(c, NULL, IPC_ERR_LIMIT,
					 "no hello within %d ms",
					 s->hello_timeout_ms) == 0)
				client_drop(c, "no hello in time");
		} else if (client_error(c, NULL, IPC_ERR_LIMIT,
					"no subscription and no message for "
					"%d ms", s->idle_timeout_ms) == 0) {
			client_drop(c, "idle (no subscription and no message "
				       "in time)");
		}
	}
	if (next != INT64_MAX)
		loop_timer_arm(t, next + SERVER_HELLO_SWEEP_SLACK_MS);
}

static void server_accept(struct loop_source *src, uint32_t events,
			  void *data)
{
	struct server *s = data;

	/* The listener stays readable while connections wait: the rest
	 * are taken in the next rounds. */
	for (unsigned n = 0; n < SERVER_ACCEPTS_PER_ROUND; n++) {
		struct client *c;
		char why[160];
		uid_t quota;
		int fd = accept4(s->fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of descriptors: pause accepting rather
				 * than spin on a readable listener. */
				log_warning("cannot accept clients: %s; pausing "
					    "%d ms", strerror(errno),
					    SERVER_ACCEPT_BACKOFF_MS);
				loop_mod_fd(s->src, 0);
				loop_timer_arm_in(s->accept_pause,
						  SERVER_ACCEPT_BACKOFF_MS);
			} else if (errno != EAGAIN && errno != EINTR &&
				   errno != ECONNABORTED) {
				log_error("accept on %s: %s", s->path,
					  strerror(errno));
			}
			return;
		}
		c = zalloc(sizeof(*c));
		if (!c) {
			close(fd);
			return;
		}
		c->server = s;
		c->fd = fd;
		access_peer_get(&c->cred, fd);
		c->owner = client_is_owner(c);
		quota = client_quota_uid(c);
		if (server_admit(s, c, quota, why, sizeof(why)) &&
		    !(c->peer = server_uid_get(s, quota)))
			snprintf(why, sizeof(why), "out of memory");
		if (!c->peer) {
			server_refuse(s, fd, c, why);
			access_peer_fini(&c->cred);
			free(c);
			continue;
		}
		c->serial = ++s->serials;
		c->connected_ms = c->active_ms = now_ms();
		c->events = EPOLLIN | EPOLLRDHUP;
		c->error_credit = SERVER_ERRORS_BURST * 1000LL;
		c->errors_ms = c->connected_ms;
		if (loop_add_fd(s->agent->loop, fd, c->events, client_event, c,
				&c->src) < 0) {
			close(fd);
			access_peer_fini(&c->cred);
			free(c);
			continue;
		}
		c->peer->n_clients++;
		server_arm_sweep(s, client_due(c));
		c->next = s->clients;
		if (s->clients)
			s->clients->prev = c;
		s->clients = c;
		s->n_clients++;
		systemd_changed(s->agent);
		client_log(c, LOG_DEBUG, CLIENT_FMT " connected",
			   CLIENT_ARGS(c));
	}
}

static void server_accept_resume(struct loop_timer *t, void *data)
{
	struct server *s = data;

	loop_mod_fd(s->src, EPOLLIN);
}

void server_publish(struct server *s, struct target *t)
{
	struct client *c, *next;

	if (!s)
		return;
	for (c = s->clients; c; c = next) {
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
	for (c = s->clients; c; c = next) {
		next = c->next; /* sending may drop c */
		if (client_sub(c, t) && client_send_settings(c, t) == 0)
			n++;
	}
	return n;
}

/* Binds path, replacing a stale socket file left by a dead agent but
 * refusing to steal the path from a live one. */
static int server_bind(struct server *s, const char *path, mode_t mode,
		       gid_t gid)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		log_error("socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return neg_errno();
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("%s exists and is not a socket", path);
			r = -EEXIST;
			goto err_fd;
		}
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		r = probe < 0 ? -1 :
			connect(probe, (struct sockaddr *)&addr, sizeof(addr));
		if (probe >= 0)
			close(probe);
		if (r == 0) {
			log_error("another agent is listening on %s", path);
			r = -EADDRINUSE;
			goto err_fd;
		}
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = neg_errno();
		log_error("cannot bind %s: %s", path, strerror(-r));
		goto err_fd;
	}
	/* The group before the mode: the socket is never open to a group
	 * it was not meant for. */
	if (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) {
		r = neg_errno();
		log_error("cannot give %s to group %u: %s", path, (unsigned)gid,
			  strerror(-r));
		goto err_path;
	}
	if (chmod(path, mode) < 0) {
		r = neg_errno();
		log_error("cannot chmod %s: %s", path, strerror(-r));
		goto err_path;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		r = neg_errno();
		log_error("cannot listen on %s: %s", path, strerror(-r));
		goto err_path;
	}
	s->fd = fd;
	s->owns_path = true;
	return 0;

err_path:
	unlink(path);
err_fd:
	close(fd);
	return r;
}

/* The group of the socket file systemd bound: the group it lets connect.
 * fstat() on the descriptor would describe the socket's inode in sockfs,
 * not the file, so the file is looked up by the address it is bound to.
 * (gid_t)-1 if that fails (an abstract socket, a path not visible here):
 * then only root and the agent's uid have access by default. */
static gid_t server_socket_group(int fd)
{
	struct sockaddr_un addr;
	socklen_t len = sizeof(addr);
	struct stat st;

	memset(&addr, 0, sizeof(addr));
	if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0 ||
	    len <= offsetof(struct sockaddr_un, sun_path) ||
	    addr.sun_path[0] == '\0' ||
	    len >= sizeof(addr)) {
		log_warning("access: cannot tell the path of the socket passed "
			    "by systemd; only root and the agent's uid have "
			    "access unless --allow says otherwise");
		return (gid_t)-1;
	}
	if (stat(addr.sun_path, &st) < 0) {
		log_warning("access: cannot stat %s: %s; only root and the "
			    "agent's uid have access unless --allow says "
			    "otherwise", addr.sun_path, strerror(errno));
		return (gid_t)-1;
	}
	return st.st_gid;
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

int server_new(struct agent *a, const struct server_config *cfg,
	       struct server **out)
{
	struct server *s = zalloc(sizeof(*s));
	int n, r;

	if (!s)
		return -ENOMEM;
	s->agent = a;
	s->fd = -1;
	r = server_new_instance(s);
	if (r < 0) {
		free(s);
		return r;
	}
	s->path = strdup(cfg->socket_path);
	s->accept_pause = loop_timer_new(a->loop, server_accept_resume, s);
	s->reaper = loop_timer_new(a->loop, server_reap, s);
	s->sweep = loop_timer_new(a->loop, server_sweep, s);
	s->uid_timer = loop_timer_new(a->loop, server_uid_tick, s);
	s->backlog_timer = loop_timer_new(a->loop, server_backlog, s);
	s->access = (struct access_rules){
		.allow = cfg->allow,
		.n_allow = cfg->n_allow,
		.admin = cfg->admin,
		.n_admin = cfg->n_admin,
		.self_uid = geteuid(),
		.default_gid = (gid_t)-1,
	};
	s->max_clients = cfg->max_clients ? cfg->max_clients
					  : SERVER_CLIENTS_MAX;
	s->hello_timeout_ms = cfg->hello_timeout_ms > 0
				      ? cfg->hello_timeout_ms
				      : SERVER_HELLO_TIMEOUT_MS;
	s->max_per_uid = cfg->max_clients_per_uid
		? cfg->max_clients_per_uid
		: MAX(1u, s->max_clients / SERVER_CLIENTS_PER_UID_DIV);
	s->reserved = MIN(cfg->reserved_clients ? cfg->reserved_clients
						: SERVER_CLIENTS_RESERVED,
			  s->max_clients / 4);
	s->output_per_uid = cfg->output_per_uid ? cfg->output_per_uid
						: SERVER_OUTPUT_PER_UID;
	s->output_total = cfg->output_total ? cfg->output_total
					    : SERVER_OUTPUT_TOTAL;
	s->idle_timeout_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms
						  : SERVER_IDLE_TIMEOUT_MS;
	s->log_credit = SERVER_LOG_ALL_BURST * 1000LL;
	s->log_ms = now_ms();
	subuid_init(&s->subuid, NULL, NULL);
	if (!s->path || !s->accept_pause || !s->reaper || !s->sweep ||
	    !s->uid_timer ||
	    !s->backlog_timer) {
		r = -ENOMEM;
		goto err_server;
	}
	n = sd_listen_fds(1);
	if (n > 1) {
		log_error("systemd passed %d sockets; expected one", n);
		r = -EINVAL;
		goto err_server;
	}
	if (n == 1) {
		if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL,
				      0) <= 0) {
			log_error("the socket systemd passed is not a listening "
				  "Unix stream socket");
			r = -EINVAL;
			goto err_server;
		}
		s->fd = SD_LISTEN_FDS_START;
		(void)!fcntl(s->fd, F_SETFL, O_NONBLOCK);
		s->access.default_gid = server_socket_group(s->fd);
		log_info("listening on the socket passed by systemd");
	} else {
		r = server_bind(s, cfg->socket_path, cfg->socket_mode,
				cfg->socket_gid);
		if (r < 0)
			goto err_server;
		s->access.default_gid = cfg->socket_gid != (gid_t)-1
						? cfg->socket_gid
						: getegid();
		log_info("listening on %s", s->path);
	}
	if (s->access.n_allow == 0 && s->access.default_gid != (gid_t)-1)
		log_info("access: root, uid %u and group %u may subscribe to "
			 "every target", (unsigned)s->access.self_uid,
			 (unsigned)s->access.default_gid);
	log_info("clients: at most %u, %u per uid but root's and the agent's, "
		 "the last %u for root, the agent's uid and admins; output "
		 "queued at most %zu MiB per uid, %zu MiB in all; idle "
		 "timeout %d ms (-1: none)", s->max_clients, s->max_per_uid,
		 s->reserved, s->output_per_uid >> 20, s->output_total >> 20,
		 s->idle_timeout_ms);
	subuid_refresh(&s->subuid);
	r = loop_add_fd(a->loop, s->fd, EPOLLIN, server_accept, s, &s->src);
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
	while (s->clients)
		client_retire(s->clients);
	server_reap(s->reaper, s);
	loop_timer_free(s->reaper);
	loop_timer_free(s->sweep);
	loop_timer_free(s->uid_timer);
	while (s->uids) {
		struct peer_uid *u = s->uids;
		s->uids = u->next;
		free(u);
	}
	subuid_fini(&s->subuid);
	loop_timer_free(s->backlog_timer);
	loop_remove_fd(s->src);
	loop_timer_free(s->accept_pause);
	if (s->fd >= 0)
		close(s->fd);
	if (s->owns_path)
		unlink(s->path);
	free(s->path);
	free(s);
}

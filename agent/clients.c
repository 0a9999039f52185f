/*
 * Clients as connections: see clients.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "access.h"
#include "clients.h"
#include "common/log.h"
#include "common/loop.h"
#include "ipc/frame.h"
#include "ipc/msg.h"
#include "subuid.h"

/* The limits keep the names ipc/PROTOCOL.md gives them. */

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

struct clients {
	struct loop *loop;
	const struct clients_ops *ops;
	void *data; /* for ops */
	const struct access_rules *access;
	int fd;
	bool owns_path;
	char *path;
	gid_t socket_gid; /* (gid_t)-1 if unknown */
	struct loop_source *src;
	struct loop_timer *accept_pause;
	struct client *list;
	unsigned n_clients;
	uint64_t serials;
	struct client *dead;      /* dropped, not yet freed */
	struct loop_timer *reaper;
	/* Clients with frames left after their round's share, in the order
	 * they will be served. */
	struct client *bl_head, *bl_tail;
	unsigned n_backlog;
	struct loop_timer *backlog_timer;
	/* Limits: see server.h. */
	unsigned max_clients;
	int hello_timeout_ms;
	struct loop_timer *sweep; /* hello deadline, idle timeout */
	int64_t refused_log_ms; /* last log line about the client limit */
	unsigned refused;       /* clients refused since that line */
	int64_t limit_log_ms;   /* last log line about too many errors */
	unsigned limited;       /* clients dropped for it since that line */
	/* Quotas: see server.h. */
	struct peer_uid *uids;
	struct loop_timer *uid_timer; /* clients_uid_tick */
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

static int64_t client_due(const struct client *c);
static void clients_arm_sweep(struct clients *s, int64_t due);

static struct peer_uid *clients_uid(struct clients *s, uid_t uid)
{
	struct peer_uid *u;

	for (u = s->uids; u && u->uid != uid; u = u->next)
		;
	return u;
}

/* The entry of uid, made if it has none yet; NULL when out of memory. */
static struct peer_uid *clients_uid_get(struct clients *s, uid_t uid)
{
	struct peer_uid *u = clients_uid(s, uid);

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
static void clients_uid_tick(struct loop_timer *t, void *data)
{
	struct clients *s = data;
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

static void clients_uid_tick_soon(struct clients *s)
{
	if (!loop_timer_armed(s->uid_timer))
		loop_timer_arm_in(s->uid_timer, SERVER_LOG_SUMMARY_MS);
}

/* One client of u fewer; the entry goes later (clients_uid_tick). */
static void clients_uid_put(struct clients *s, struct peer_uid *u)
{
	if (u && --u->n_clients == 0)
		clients_uid_tick_soon(s);
}

/* Whether a line c caused may go out: always for root and the agent's
 * uid; for others, from the buckets of its uid and of all of them.  A
 * line left out is counted, and said at most once a second per uid. */
static bool client_log_take(struct client *c)
{
	struct clients *s = c->clients;
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
		clients_uid_tick_soon(s);
	return false;
}

void client_log(struct client *c, int level, const char *fmt, ...)
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
	struct clients *s = c->clients;
	size_t now = c->dropped ? 0 : ipc_queue_pending(&c->out);

	if (c->owner || !c->peer)
		return;
	c->peer->queued = c->peer->queued - c->charged + now;
	s->queued = s->queued - c->charged + now;
	c->charged = now;
}

static void backlog_unlink(struct client *c)
{
	struct clients *s = c->clients;

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

/* Takes c out of service at once: unlinked, its fd closed, and the
 * server told (its acks no longer counted).  Its memory stays until the loop comes back
 * (clients_reap): a handler may still hold c after a call that dropped it
 * (a publish or a reload sends to every subscriber, the requester too),
 * and checks c->dropped instead of touching freed memory. */
static void client_retire(struct client *c, const char *why)
{
	struct clients *s = c->clients;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->list = c->next;
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
	clients_uid_put(s, c->peer);
	c->peer = NULL;
	c->dead_next = s->dead;
	s->dead = c;
	loop_timer_arm_in(s->reaper, 0);
	s->ops->changed(s->data);
	s->ops->gone(c, why);
}

static void clients_reap(struct loop_timer *t, void *data)
{
	struct clients *s = data;

	while (s->dead) {
		struct client *c = s->dead;
		s->dead = c->dead_next;
		s->ops->reap(c);
		access_peer_fini(&c->cred);
		free(c->name);
		free(c);
	}
}

void client_drop(struct client *c, const char *why)
{
	if (c->dropped)
		return;
	client_log(c, LOG_INFO, CLIENT_FMT " disconnected: %s", CLIENT_ARGS(c),
		   why);
	client_retire(c, why);
}

static bool client_is_admin(const struct client *c)
{
	return access_is_admin(c->clients->access, &c->cred);
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
static struct client *clients_largest(struct clients *s,
				     const struct peer_uid *u,
				     struct client *c, size_t need)
{
	struct client *big = c;
	size_t most = c->charged + need;

	for (struct client *x = s->list; x; x = x->next) {
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
	struct clients *s = c->clients;
	struct peer_uid *u = c->peer;
	char why[192];

	for (;;) {
		bool uid_full = u->queued + need > s->output_per_uid;
		struct client *big;

		if (!uid_full && s->queued + need <= s->output_total)
			return 0;
		big = clients_largest(s, uid_full ? u : NULL, c, need);
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

int client_send(struct client *c, struct ipc_writer *w)
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

void client_reply_init(struct ipc_writer *w, enum ipc_type type, size_t n,
		       const struct ipc_msg *req)
{
	bool id = req && req->has_id;

	ipc_writer_init(w, type, n + 1 + id);
	if (id)
		ipc_pack_kv_u64(w, "id", req->id);
}

int client_error(struct client *c, const struct ipc_msg *req,
		 const char *code, const char *fmt, ...)
{
	struct ipc_writer w;
	char msg[1024]; /* a failed switch's reason: a masked URL and libpq's */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	client_reply_init(&w, IPC_ERROR, 2, req);
	ipc_pack_kv_str(&w, "code", code);
	ipc_pack_kv_str(&w, "message", msg);
	return client_send(c, &w);
}

int client_ok(struct client *c, const struct ipc_msg *req,
	      uint64_t generation)
{
	struct ipc_writer w;

	client_reply_init(&w, IPC_OK, generation > 0, req);
	if (generation > 0)
		ipc_pack_kv_u64(&w, "generation", generation);
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

int client_reject(struct client *c, const struct ipc_msg *req,
		  const char *code, const char *fmt, ...)
{
	struct clients *s = c->clients;
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
	client_retire(c, NULL);
	return -ECONNRESET;
}

void client_violation_code(struct client *c, const char *code,
			   const char *why)
{
	client_log(c, LOG_WARNING, CLIENT_FMT ": protocol violation: %s",
		   CLIENT_ARGS(c), why);
	if (client_error(c, NULL, code, "%s", why) < 0)
		return;
	client_drop(c, "protocol violation");
}

void client_violation(struct client *c, const char *why)
{
	client_violation_code(c, IPC_ERR_PROTOCOL, why);
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
			c->active_ms = now_ms();
			c->clients->ops->message(c, body, len);
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
			client_retire(c, NULL);
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
	struct clients *s = c->clients;

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
static void clients_backlog(struct loop_timer *t, void *data)
{
	struct clients *s = data;

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
static void clients_refuse(struct clients *s, int fd, const struct client *c,
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
	struct clients *s = c->clients;
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
static bool clients_admit(struct clients *s, const struct client *c,
			 uid_t quota, char *why, size_t size)
{
	const struct peer_uid *u = clients_uid(s, quota);
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
	const struct clients *s = c->clients;

	if (!c->hello)
		return c->connected_ms + s->hello_timeout_ms;
	if (c->owner || c->n_subs > 0 || s->idle_timeout_ms < 0)
		return INT64_MAX;
	return c->active_ms + s->idle_timeout_ms;
}

/* Makes sure the sweep runs by due. */
static void clients_arm_sweep(struct clients *s, int64_t due)
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
static void clients_sweep(struct loop_timer *t, void *data)
{
	struct clients *s = data;
	int64_t now = now_ms(), next = INT64_MAX;
	struct client *c, *n;

	for (c = s->list; c; c = n) {
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

static void clients_accept(struct loop_source *src, uint32_t events,
			  void *data)
{
	struct clients *s = data;

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
		c->clients = s;
		c->fd = fd;
		access_peer_get(&c->cred, fd);
		c->owner = access_is_owner(s->access, &c->cred);
		quota = client_quota_uid(c);
		if (clients_admit(s, c, quota, why, sizeof(why)) &&
		    !(c->peer = clients_uid_get(s, quota)))
			snprintf(why, sizeof(why), "out of memory");
		if (!c->peer) {
			clients_refuse(s, fd, c, why);
			access_peer_fini(&c->cred);
			free(c);
			continue;
		}
		c->serial = ++s->serials;
		c->connected_ms = c->active_ms = now_ms();
		c->events = EPOLLIN | EPOLLRDHUP;
		c->error_credit = SERVER_ERRORS_BURST * 1000LL;
		c->errors_ms = c->connected_ms;
		if (loop_add_fd(s->loop, fd, c->events, client_event, c,
				&c->src) < 0) {
			close(fd);
			access_peer_fini(&c->cred);
			free(c);
			continue;
		}
		c->peer->n_clients++;
		clients_arm_sweep(s, client_due(c));
		c->next = s->list;
		if (s->list)
			s->list->prev = c;
		s->list = c;
		s->n_clients++;
		s->ops->changed(s->data);
		client_log(c, LOG_DEBUG, CLIENT_FMT " connected",
			   CLIENT_ARGS(c));
	}
}

static void clients_accept_resume(struct loop_timer *t, void *data)
{
	struct clients *s = data;

	loop_mod_fd(s->src, EPOLLIN);
}

/* Binds path, replacing a stale socket file left by a dead agent but
 * refusing to steal the path from a live one. */
static int clients_bind(struct clients *s, const char *path, mode_t mode,
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
static gid_t socket_file_group(int fd)
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


int clients_new(struct loop *loop, const struct clients_config *cfg,
		const struct access_rules *access,
		const struct clients_ops *ops, void *data,
		struct clients **out)
{
	struct clients *s = zalloc(sizeof(*s));
	int n, r;

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->ops = ops;
	s->data = data;
	s->access = access;
	s->fd = -1;
	s->socket_gid = (gid_t)-1;
	s->path = strdup(cfg->socket_path);
	s->accept_pause = loop_timer_new(loop, clients_accept_resume, s);
	s->reaper = loop_timer_new(loop, clients_reap, s);
	s->sweep = loop_timer_new(loop, clients_sweep, s);
	s->uid_timer = loop_timer_new(loop, clients_uid_tick, s);
	s->backlog_timer = loop_timer_new(loop, clients_backlog, s);
	s->max_clients = cfg->max_clients;
	s->hello_timeout_ms = cfg->hello_timeout_ms;
	s->max_per_uid = cfg->max_per_uid;
	s->reserved = cfg->reserved;
	s->output_per_uid = cfg->output_per_uid;
	s->output_total = cfg->output_total;
	s->idle_timeout_ms = cfg->idle_timeout_ms;
	s->log_credit = SERVER_LOG_ALL_BURST * 1000LL;
	s->log_ms = now_ms();
	subuid_init(&s->subuid, NULL, NULL);
	if (!s->path || !s->accept_pause || !s->reaper || !s->sweep ||
	    !s->uid_timer ||
	    !s->backlog_timer) {
		r = -ENOMEM;
		goto err_clients;
	}
	n = sd_listen_fds(1);
	if (n > 1) {
		log_error("systemd passed %d sockets; expected one", n);
		r = -EINVAL;
		goto err_clients;
	}
	if (n == 1) {
		if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL,
				      0) <= 0) {
			log_error("the socket systemd passed is not a listening "
				  "Unix stream socket");
			r = -EINVAL;
			goto err_clients;
		}
		s->fd = SD_LISTEN_FDS_START;
		(void)!fcntl(s->fd, F_SETFL, O_NONBLOCK);
		s->socket_gid = socket_file_group(s->fd);
		log_info("listening on the socket passed by systemd");
	} else {
		r = clients_bind(s, cfg->socket_path, cfg->socket_mode,
				 cfg->socket_gid);
		if (r < 0)
			goto err_clients;
		s->socket_gid = cfg->socket_gid != (gid_t)-1 ? cfg->socket_gid
							     : getegid();
		log_info("listening on %s", s->path);
	}
	*out = s;
	return 0;

err_clients:
	clients_free(s);
	return r;
}

int clients_start(struct clients *s)
{
	subuid_refresh(&s->subuid);
	return loop_add_fd(s->loop, s->fd, EPOLLIN, clients_accept, s, &s->src);
}

void clients_free(struct clients *s)
{
	if (!s)
		return;
	while (s->list)
		client_retire(s->list, NULL);
	clients_reap(s->reaper, s);
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

gid_t clients_socket_gid(const struct clients *s)
{
	return s->socket_gid;
}

struct client *clients_first(const struct clients *s)
{
	return s->list;
}

unsigned clients_count(const struct clients *s)
{
	return s->n_clients;
}

void *client_data(const struct client *c)
{
	return c->clients->data;
}

void client_hello(struct client *c, const char *name, uint64_t version)
{
	c->hello = true;
	c->version = version;
	c->name = strdup(name);
	clients_arm_sweep(c->clients, client_due(c));
}

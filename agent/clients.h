/*
 * The agent's clients as connections: the listening Unix socket (from
 * systemd, else bound), accept and admission, one state per connected
 * client, reading frames, the output queues, the sweep of clients
 * without hello or idle, and their end.  It knows frames, error replies
 * and the peer's credentials, nothing of targets: each frame read goes to
 * the server (struct clients_ops), which decodes and answers it.
 *
 * Each client has a bounded output queue; one that stops reading is
 * dropped when the queue is full instead of blocking the loop.
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
 * Quotas keep one local user from denying the agent to the others: per
 * uid, the clients it may hold, the output queued for them and the log
 * lines they may cause; slots at the top of the client limit kept for
 * root and admins; a total output budget; and an idle timeout for
 * clients that subscribe to nothing.  A uid in a subordinate range of
 * /etc/subuid (which its owner may take on without root, newuidmap(1))
 * uses its owner's per-uid quotas.  Root and the agent's own uid are
 * exempt from the per-uid quotas, the idle timeout and the log limit:
 * they can stop the agent or read its memory anyway (their subuids are
 * not).  The limits' defaults and reasons: server.h.
 *
 * Clients, queued output and log lines are counted per peer uid (struct
 * peer_uid, one per uid with a client connected; a uid of a /etc/subuid
 * range counts as the range's owner), and output for every uid but
 * root's and the agent's in total.  When a budget of output is used, the
 * clients holding the most go first (client_make_room), not the one the
 * next message is for.  Log lines a client causes go through
 * client_log(), which lets a uid's clients write SERVER_LOG_BURST lines
 * at once, SERVER_LOG_PER_S a second after that (and all such uids
 * together SERVER_LOG_ALL_*), and says how many it left out, at most once
 * a second per uid.
 *
 * All of it runs on the agent's loop thread.  Functions that send may
 * drop the client they send to, and others (client_make_room): a dropped
 * client's memory stays until the loop comes back, with c->dropped set,
 * so a caller that holds c checks that instead of touching freed memory.
 */
#ifndef DBSWAP_AGENT_CLIENTS_H
#define DBSWAP_AGENT_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "access.h"
#include "common/util.h"
#include "ipc/frame.h"
#include "ipc/protocol.h"
#include "subuid.h"

struct clients;
struct ipc_msg;
struct ipc_writer;
struct loop;
struct loop_source;
struct peer_uid;
struct subscription;

struct client {
	/* What the server reads, and sets where it says so. */
	uint64_t serial; /* names it in replies that come later */
	struct access_peer cred; /* as the kernel saw it at connect */
	/* Root or the agent's uid: exempt from quotas. */
	bool owner;
	char of[SUBUID_DESCRIBE_MAX]; /* "" or " (subuid of NAME)" */
	bool hello;        /* client_hello() */
	uint64_t version;  /* of the session: the client's hello's */
	char *name;        /* from its hello; NULL before */
	bool dropped; /* out of service; freed when the loop comes back */
	/* Sent something besides hello, status and ping: its goodbye is
	 * worth a line at info.  One that only asked how things are
	 * (dbswapctl status, a monitor polling) leaves at debug.  Set by
	 * the server. */
	bool noted;
	/* The server's, opaque here: a client with a subscription is never
	 * idle.  The server frees them (clients_ops.reap). */
	struct subscription *subs;
	size_t n_subs;
	struct client *next; /* the next client connected (clients_first) */

	/* The connection's own. */
	struct clients *clients;
	struct client *prev;
	int fd;
	struct loop_source *src;
	uint32_t events; /* epoll interest set on src */
	struct ipc_reader in;
	struct ipc_queue out;
	bool want_out;
	/* On the backlog: frames may wait in `in` or the socket, served by
	 * the backlog timer instead of epoll. */
	bool backlog;
	struct client *bl_prev, *bl_next;
	/* Error replies it may still cause, in thousandths of a token, as of
	 * errors_ms (SERVER_ERRORS_BURST). */
	int64_t error_credit;
	int64_t errors_ms;
	/* Its quotas: those of its uid, or of the owner of the subuid range
	 * its uid is in (client_quota_uid). */
	struct peer_uid *peer;
	size_t charged; /* output charged to peer and the total */
	int64_t connected_ms;
	int64_t active_ms; /* its last message */
	/* On the dead list.  Not next: a loop over the clients that
	 * captured a dropped client's next still finds every client after
	 * it (a send to one client may drop others, client_send). */
	struct client *dead_next;
};

/* What the server does with its clients; every callback runs on the
 * loop. */
struct clients_ops {
	/* A frame c sent (its body), to decode and act on; c->dropped after
	 * it if that dropped c. */
	void (*message)(struct client *c, const uint8_t *body, size_t len);
	/* The number of clients connected changed (data: clients_new's). */
	void (*changed)(void *data);
	/* c was taken out of service: its socket is closed, it is off the
	 * list.  why says why when it was dropped, NULL when it went
	 * quietly (it closed a session that only asked how things are,
	 * too many errors, the end of the agent).  Once per client. */
	void (*gone)(struct client *c, const char *why);
	/* c is freed next: the server frees what it hung on it. */
	void (*reap)(struct client *c);
};

/* The limits in force, every one resolved (server.h says why each). */
struct clients_config {
	const char *socket_path; /* bind here unless systemd passed a socket */
	mode_t socket_mode;
	gid_t socket_gid;        /* (gid_t)-1: the agent's own */
	unsigned max_clients;
	unsigned max_per_uid;
	unsigned reserved;
	int hello_timeout_ms;
	int idle_timeout_ms;     /* -1: none */
	size_t output_per_uid;
	size_t output_total;
};

/* Takes the socket from systemd (sd_listen_fds) if there is one, else
 * binds cfg->socket_path, replacing a stale socket file but never a live
 * one.  Nothing is accepted before clients_start().  access decides who
 * is an owner and who takes the reserved slots; it, ops and data must
 * outlive the set.  Returns 0 or a negative errno (logged). */
int clients_new(struct loop *loop, const struct clients_config *cfg,
		const struct access_rules *access,
		const struct clients_ops *ops, void *data,
		struct clients **out);
/* Starts accepting.  Returns 0 or a negative errno. */
int clients_start(struct clients *s);
/* Takes every client out of service (clients_ops.gone), frees them
 * (clients_ops.reap), closes the socket and removes the file it bound. */
void clients_free(struct clients *s);

/* The group of the socket: the one it lets connect, (gid_t)-1 if it
 * cannot be told. */
gid_t clients_socket_gid(const struct clients *s);

/* The first client connected, in the order clients_first/next gives
 * each time; dropped ones are left out. */
struct client *clients_first(const struct clients *s);
unsigned clients_count(const struct clients *s);
/* The data given to clients_new. */
void *client_data(const struct client *c);

/* c said hello: it now has name and version, and the idle timeout
 * instead of the hello deadline. */
void client_hello(struct client *c, const char *name, uint64_t version);

/* How a client is named in log lines. */
#define CLIENT_FMT "client pid %d uid %u%s (%s)"
#define CLIENT_ARGS(c) (int)(c)->cred.pid, (unsigned)(c)->cred.uid, \
	(c)->of, ((c)->name ? (c)->name : "no hello yet")

/* A log line c caused (its requests, its errors, its coming and going),
 * within its uid's log quota. */
PRINTF(3, 4)
void client_log(struct client *c, int level, const char *fmt, ...);

/* Begins a reply of type with n fields to req: its id first, if it had
 * one (req may be NULL). */
void client_reply_init(struct ipc_writer *w, enum ipc_type type, size_t n,
		       const struct ipc_msg *req);

/* Queues and sends one message, and finishes w.  Returns 0, or a
 * negative errno after dropping c (a stuck peer, or out of memory).  May
 * drop other clients (client_make_room): callers that walk the client
 * list take the next one before sending, which stays valid
 * (client.dead_next). */
int client_send(struct client *c, struct ipc_writer *w);

/* ok to req, with the generation the request published (0: none).
 * Returns what client_send does. */
int client_ok(struct client *c, const struct ipc_msg *req,
	      uint64_t generation);

/* An error reply to req (NULL: none) with code and the message.
 * Returns what client_send does. */
PRINTF(4, 5)
int client_error(struct client *c, const struct ipc_msg *req,
		 const char *code, const char *fmt, ...);

/* An error the client caused, charged to its bucket: the reply, or once
 * the bucket is empty, error "limit" and a disconnect (logged at most once
 * every SERVER_LIMIT_LOG_MS for all such clients).  Returns what
 * client_error does, or -ECONNRESET after dropping c. */
PRINTF(4, 5)
int client_reject(struct client *c, const struct ipc_msg *req,
		  const char *code, const char *fmt, ...);

/* A protocol violation: say why (error code), then hang up. */
void client_violation_code(struct client *c, const char *code,
			   const char *why);
void client_violation(struct client *c, const char *why);

/* Drops c, logging why. */
void client_drop(struct client *c, const char *why);

#endif

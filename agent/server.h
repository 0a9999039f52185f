/*
 * The agent's side of the wire protocol: the dispatch of every client
 * message, and what the model publishes (changes.h) taken to the clients
 * it concerns.
 *
 * The connections (the socket, output queues, quotas): clients.h.
 * Access control: access.h.  Subscriptions and the push of updates:
 * subs.h.  The status reply: status.h.
 */
#ifndef DBSWAP_AGENT_SERVER_H
#define DBSWAP_AGENT_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "access.h"

struct agent;
struct server;
struct target;
struct target_request;

/* Most clients connected at once; one more is sent an error (code limit)
 * and closed.  Each costs a descriptor and about a KiB when idle; 4096 is
 * far beyond the processes of one host that use a database, and keeps a
 * local flood of connections from exhausting the agent's descriptors. */
#define SERVER_CLIENTS_MAX 4096

/* How long a client may stay connected without a hello: a real client
 * sends it right after connect; one that does not holds a slot for
 * nothing. */
#define SERVER_HELLO_TIMEOUT_MS 5000

/* Clients one uid may hold at once: SERVER_CLIENTS_PER_UID_DIV-th of the
 * client limit (512 of 4096), far more than the processes of one app
 * that each hold a connection, and few enough that one uid cannot take
 * the slots of every other. */
#define SERVER_CLIENTS_PER_UID_DIV 8

/* Client slots at the top of the limit that only root, the agent's uid
 * and admins may take: so that a flood from others never locks out the
 * operator.  At most a quarter of the limit. */
#define SERVER_CLIENTS_RESERVED 64

/* Output the agent may hold queued for the clients of one uid, and for
 * the clients of every uid but root and its own together, in bytes.  A
 * message that would pass either first drops, as not reading, the
 * clients holding the most (of that uid, or of all), until it fits: the
 * client it is for only if that one would hold the most (its own queue
 * is bounded by IPC_QUEUE_MAX as well).  4 MiB is thousands of updates;
 * 64 MiB bounds what several colluding users can make the agent hold. */
#define SERVER_OUTPUT_PER_UID (4 * 1024 * 1024)
#define SERVER_OUTPUT_TOTAL (64 * 1024 * 1024)

/* A client that said hello, subscribes to nothing and has sent nothing
 * for this long is dropped: an app subscribes right after hello, and a
 * status or admin request is over in milliseconds; an idle one only holds
 * a slot. */
#define SERVER_IDLE_TIMEOUT_MS 60000

/* The arrays (and strings) must outlive the server. */
struct server_config {
	const char *socket_path; /* bind here unless systemd passed a socket */
	mode_t socket_mode;
	gid_t socket_gid;        /* (gid_t)-1: the agent's own */
	/* None: root, the agent's uid and the socket's group may subscribe
	 * to every target.  Any: root, the agent's uid and the peers of the
	 * rules naming the target or "*", no one else. */
	const struct access_allow *allow;
	size_t n_allow;
	/* Besides root and the agent's uid, who may send reload, reconnect,
	 * failover and failback. */
	const struct access_principal *admin;
	size_t n_admin;
	unsigned max_clients;  /* 0: SERVER_CLIENTS_MAX */
	int hello_timeout_ms;  /* 0: SERVER_HELLO_TIMEOUT_MS */
	/* 0 for each: the default above. */
	unsigned max_clients_per_uid; /* max_clients / DIV */
	unsigned reserved_clients;    /* MIN(RESERVED, max_clients / 4) */
	size_t output_per_uid;
	size_t output_total;
	int idle_timeout_ms;          /* -1: none */
};

/* Takes the socket from systemd (sd_listen_fds) if there is one, else
 * binds socket_path, replacing a stale socket file but never a live one.
 * Returns 0 or a negative errno (logged). */
int server_new(struct agent *a, const struct server_config *cfg,
	       struct server **out);
void server_free(struct server *s);

/* Takes the model's publishes, settings and answers to waiting requests
 * (changes.h) to the clients concerned. */

#endif

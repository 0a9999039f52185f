/*
 * The agent's side of the wire protocol: the listening Unix socket, one
 * state per connected client, the dispatch of every client message, and
 * the push of updates to subscribers.
 *
 * Each client has a bounded output queue; one that stops reading is
 * dropped when the queue is full instead of blocking the loop.
 */
#ifndef DBSWAP_AGENT_SERVER_H
#define DBSWAP_AGENT_SERVER_H

#include <stdint.h>
#include <sys/types.h>

struct agent;
struct server;
struct target;
struct target_request;

struct server_config {
	const char *socket_path; /* bind here unless systemd passed a socket */
	mode_t socket_mode;
	gid_t socket_gid;        /* (gid_t)-1: the agent's own */
};

/* Takes the socket from systemd (sd_listen_fds) if there is one, else
 * binds socket_path, replacing a stale socket file but never a live one.
 * Returns 0 or a negative errno (logged). */
int server_new(struct agent *a, const struct server_config *cfg,
	       struct server **out);
void server_free(struct server *s);

/* Sends t's current value to every subscriber of t. */
void server_publish(struct server *s, struct target *t);

/* Sends t's pool settings in force to every subscriber of t; returns how
 * many it was sent to. */
unsigned server_send_settings(struct server *s, struct target *t);

/* Subscribers of t, and how many of them acked its current generation. */
void server_count(struct server *s, const struct target *t,
		  unsigned *subscribers, unsigned *acked);

unsigned server_clients(const struct server *s);

/* Answers a request that waited (failover, failback): error NULL sends
 * ok, with generation if not 0; else an error with code refused and that
 * message.  Nothing happens if the client has gone. */
void server_reply(struct server *s, const struct target_request *req,
		  const char *error, uint64_t generation);

#endif

/*
 * The status reply (ipc/PROTOCOL.md, "status"): the agent, its targets,
 * their servers, health and failover, its files and keys, packed for the
 * client that asked.  The server answers a status request with it; this
 * module knows nothing of clients or sockets: what it needs of them (who
 * asks, what they may see, who follows a target) comes through struct
 * status_source.
 *
 * A status reply shows a client only what it may see (status_view): a
 * target it may not follow appears with its name, generation, validity
 * and state alone; files, keys and the agent's setting errors only to
 * clients that may follow every target or are admins; a lagging client
 * only to admins and to clients of the same uid.  Every string of a
 * status reply is made printable UTF-8, so that no text the agent shows
 * can forge a line, reach a terminal with escape sequences or break a
 * client's decoder.  The reply always fits in a frame: it is packed again
 * with tighter limits until it does (status_limits_tried), the last of
 * which cuts entries to names and states and lists to what fits.
 */
#ifndef DBSWAP_AGENT_STATUS_H
#define DBSWAP_AGENT_STATUS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct agent;
struct ipc_msg;
struct ipc_writer;
struct target;

/* Clients listed per target in a status reply's "lagging" list: enough to
 * name the stragglers, bounded so the reply stays within a frame.  (The
 * name is the one ipc/PROTOCOL.md gives it.) */
#define SERVER_LAGGING_MAX 16

/* One subscriber of a target, as a status reply may list it.  The
 * strings are the caller's, valid until the reply is packed; name and
 * nack_msg came from the client and may hold anything. */
struct status_peer {
	pid_t pid;
	uid_t uid;
	const char *name;     /* NULL: no hello yet */
	uint64_t acked;       /* last generation acked, 0 for none */
	uint64_t nacked;      /* last generation nacked, 0 for none */
	const char *nack_msg; /* its message */
	bool lags;            /* has yet to ack the target's current value */
};

/* What a status reply needs of whoever answers: the agent, the asker and
 * its rights, the subscribers of a target.  Every callback gets data. */
struct status_source {
	struct agent *agent;
	const char *instance; /* this run of the agent */
	unsigned clients;     /* connected now */
	/* The asker: its uid (it sees the lagging clients of its own uid),
	 * whether it is an admin (it sees them all) and the targets it may
	 * follow (it sees the others in brief). */
	uid_t uid;
	bool admin;
	bool (*may_follow)(const struct target *t, void *data);
	/* The subscribers of t in turn, in the same order each time: with
	 * *cursor NULL the first, then the one after *cursor.  Fills *p,
	 * moves *cursor and returns true; false after the last. */
	bool (*subscriber)(const struct target *t, const void **cursor,
			   struct status_peer *p, void *data);
	void *data;
};

/* Packs the status reply to req (its id, if any) into w, initialising
 * it: the fullest that fits in a frame.  Returns true with the reply in
 * w (w->failed when out of memory) for the caller to send and finish;
 * false, with w finished, if not even the briefest fits (not reached:
 * it fits by construction). */
bool status_pack(struct ipc_writer *w, const struct status_source *src,
		 const struct ipc_msg *req);

#endif

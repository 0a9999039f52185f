/*
 * Private interface of the client, for dbswapctl and the tests: blocking
 * request/reply calls on top of the same connection code.  Not exported
 * from libdbswap.so.
 */
#ifndef DBSWAP_CLIENT_H
#define DBSWAP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dbswap.h"
#include "ipc/msg.h"

/* Connects and completes the handshake now, waiting at most timeout_ms.
 * Returns 0, or a negative errno with a message (naming the socket) in
 * err. */
int client_connect_now(dbswap_client *c, int timeout_ms, char *err,
		       size_t errlen);

/* A fresh request id, to pack as "id" into a request. */
uint64_t client_next_id(dbswap_client *c);

/* Sends the request w (whose "id" is id) and waits for the reply with that
 * id, dispatching other messages meanwhile.  Returns 0 with *reply filled
 * (an error reply included: check reply->type), -ETIMEDOUT, or another
 * negative errno with a message in err.  Consumes w. */
int client_call(dbswap_client *c, struct ipc_writer *w, uint64_t id,
		int timeout_ms, struct ipc_msg *reply, char *err,
		size_t errlen);

/* The socket path in use. */
const char *client_socket_path(dbswap_client *c);

/* fork().  A child gets a copy of every client and pool, but not their
 * threads, and their file descriptors share the parent's open files: the
 * child's epoll set, timer and eventfd are the parent's, its sockets the
 * parent's sessions.  So in a child, objects made before the fork refuse
 * every call (-ECHILD), and freeing them only frees memory: nothing is
 * sent, signalled, joined or locked.  The epoch below changes in each
 * child (pthread_atfork); an object remembers the epoch it was made in. */
unsigned client_fork_epoch(void);

static inline bool client_forked(unsigned epoch)
{
	return client_fork_epoch() != epoch;
}

/* Says on stderr that the app called fn wrongly (what), for calls with no
 * object whose log function could say it. */
void client_misuse(const char *fn, const char *what);

/* Interface for the pool (pool.c). */

/* Pool settings sent by the agent; -1 where not set. */
struct client_settings {
	int64_t pool_max, pool_min, pool_timeout_ms, pool_idle_timeout_ms;
};
typedef void client_settings_fn(const struct client_settings *settings,
				void *data);

/* The agent's answer to a pool's subscription: err 0 once it is accepted
 * (after a refusal: it is followed again), else -EACCES (forbidden: this
 * uid or gid may not follow the target), -ENXIO (the agent has no such
 * target) or -EPERM (another refusal, such as a limit).  message is the
 * agent's text (it names the target, never a value); NULL with err 0.
 * Runs in the dispatching thread, like the other callbacks, without the
 * client's lock.  The client asks again with backoff while refused (1 s,
 * doubling to 60 s, and at each new connection); the callback runs when
 * the answer changes, not again for the same refusal. */
typedef void client_refused_fn(int err, const char *message, void *data);

/* Follows target for a pool: cb gets updates, settings_cb settings,
 * refused_cb the agent's refusals (and acceptance after one), all with
 * data.  Returns 0, -EBUSY if the target is already followed, or a
 * negative errno.  dbswap_subscribe() on the target then fails with
 * -EBUSY. */
int client_subscribe_pool(dbswap_client *c, const char *target,
			  dbswap_update_fn *cb, client_settings_fn *settings_cb,
			  client_refused_fn *refused_cb, void *data);

/* Stops following target; when it returns, no callback of it runs or will
 * run.  Must not be called from a callback. */
void client_unsubscribe(dbswap_client *c, const char *target);

/* Tells the agent that generation of target (numbered by agent instance
 * instance, NULL for none) cannot be used here, and why.  Returns 0 (also
 * when disconnected, or connected to another run of the agent: nothing to
 * tell then) or a negative errno. */
int client_nack(dbswap_client *c, const char *target, const char *instance,
		uint64_t generation, const char *message);

/* Asks the agent for target's current value again (it answers with an
 * update).  0 or a negative errno. */
int client_refresh(dbswap_client *c, const char *target);

/* Passes one line to the app's log function (dbswap_client_set_log). */
void client_log_line(dbswap_client *c, int priority, const char *line);

/* 0 when connected to the agent; else the negative errno of the last
 * connection attempt (-ENOENT: no socket), -EINPROGRESS before the first. */
int client_agent_error(dbswap_client *c);

#endif

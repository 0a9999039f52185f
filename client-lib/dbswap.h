/*
 * libdbswap: follow the database credentials that dbswapd publishes.
 *
 * A dbswap_client connects to the agent's Unix socket, subscribes to
 * targets (env variables such as DATABASE_URL holding a libpq connection
 * string) and calls back with each new value the agent has validated.
 * When the app has switched to a value it acknowledges the value's
 * generation, which is how `dbswapctl status` and `dbswapctl set --wait`
 * know that a rotation is complete.
 *
 * The library starts no thread unless asked.  Either integrate it into
 * the app's own event loop (poll dbswap_client_fd() for reading, call
 * dbswap_client_dispatch() when it is readable) or call
 * dbswap_client_start() once to have a background thread do that.
 *
 * When the agent goes away the client keeps the last values, reconnects
 * with backoff, subscribes again and is brought up to date.  The app sees
 * no error for an agent restart; callbacks run only for values that
 * changed.
 *
 * Errors: functions returning int return 0 (or a count) on success and a
 * negative errno value on failure.  Functions returning a pointer return
 * NULL on failure with errno set.
 *
 * Threads: every function may be called from any thread, except that
 * dbswap_client_dispatch() must not run in two threads at once (nor at all
 * once dbswap_client_start() succeeded), and dbswap_client_free() must not
 * be called from a callback.  Callbacks run in the thread that dispatches.
 */
#ifndef DBSWAP_H
#define DBSWAP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The default socket, used when neither an explicit path nor
 * $DBSWAP_SOCKET is given. */
#define DBSWAP_DEFAULT_SOCKET "/run/dbswap/dbswap.sock"

typedef struct dbswap_client dbswap_client;
typedef struct dbswap_update dbswap_update;

/*
 * Creates a client for the agent at socket_path; NULL means
 * $DBSWAP_SOCKET, else DBSWAP_DEFAULT_SOCKET.  Connecting starts at once
 * and does not block: if the agent is not there yet the client retries
 * with backoff.  Returns NULL with errno set (ENOMEM, ENAMETOOLONG).
 */
dbswap_client *dbswap_client_new(const char *socket_path);

/*
 * Stops the background thread if one was started, closes the connection
 * and frees everything, wiping the conninfo values held.  NULL is a no-op.
 */
void dbswap_client_free(dbswap_client *client);

/*
 * Sets the name the client gives the agent (shown in status); the default
 * is the program's name.  Takes effect at the next (re)connection.
 * Returns 0 or -ENOMEM.
 */
int dbswap_client_set_name(dbswap_client *client, const char *name);

/*
 * Where the library's log lines go (agent lost, reconnected, errors from
 * the agent).  The default writes "libdbswap: ..." lines to stderr; a NULL
 * fn silences them.  Lines never contain a password.
 */
typedef void dbswap_log_fn(int priority, const char *line, void *userdata);
void dbswap_client_set_log(dbswap_client *client, dbswap_log_fn *fn,
			   void *userdata);

/*
 * A file descriptor that becomes readable whenever the client has work to
 * do (a message from the agent, a reconnection due).  It stays the same
 * for the client's whole life, across reconnections.  Never blocks.
 */
int dbswap_client_fd(dbswap_client *client);

/*
 * Does the pending work without blocking and runs the callbacks it causes.
 * Returns the number of callbacks run, or a negative errno on an error the
 * client cannot recover from (it is then unusable).
 */
int dbswap_client_dispatch(dbswap_client *client);

/*
 * Starts a background thread that waits on the fd and dispatches, for
 * apps without an event loop.  Callbacks then run in that thread.
 * Returns 0, -EALREADY if started before, or a negative errno.
 */
int dbswap_client_start(dbswap_client *client);

/*
 * Returns 1 while connected to the agent and past the handshake, 0
 * otherwise.  For information only: the client reconnects by itself.
 */
int dbswap_client_connected(dbswap_client *client);

/*
 * One published value, valid only during the callback.
 */
const char *dbswap_update_target(const dbswap_update *update);
/* The libpq connection string or URI; a secret. */
const char *dbswap_update_conninfo(const dbswap_update *update);
/* Goes up by one with each value the agent publishes for the target. */
uint64_t dbswap_update_generation(const dbswap_update *update);
/* Why it changed: "rotation" for now; more reasons may come. */
const char *dbswap_update_reason(const dbswap_update *update);

typedef void dbswap_update_fn(const dbswap_update *update, void *userdata);

/*
 * Follows target: callback runs with its current value as soon as the
 * agent sends it, then with each new one.  Subscribing again to the same
 * target replaces the callback.  Returns 0, -EINVAL for a bad name, or
 * -ENOMEM.  An agent without such a target answers with an error that
 * goes to the log function.
 */
int dbswap_subscribe(dbswap_client *client, const char *target,
		     dbswap_update_fn *callback, void *userdata);

/*
 * Tells the agent that the app now uses generation of target (every
 * connection opened since is on that value).  May be called from the
 * callback.  Returns 0, -ENOENT if not subscribed to target, or a negative
 * errno.  While disconnected the ack is remembered and carried over.
 */
int dbswap_ack(dbswap_client *client, const char *target,
	       uint64_t generation);

/*
 * Returns a copy of conninfo with its passwords replaced by ****, for
 * logging ("postgresql://app:****@db/x").  Free it with free().  Returns
 * NULL with errno set on failure.
 */
char *dbswap_mask_conninfo(const char *conninfo);

#ifdef __cplusplus
}
#endif

#endif

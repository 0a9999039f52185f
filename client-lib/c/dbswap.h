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
 * changed (conninfo, server or standby state), and for a "reconnect",
 * which asks for the same value to be applied again.
 *
 * Errors: functions returning int return 0 (or a count) on success and a
 * negative errno value on failure.  Functions returning a pointer return
 * NULL on failure with errno set.
 *
 * Threads: every function may be called from any thread, except that
 * dbswap_client_dispatch() must not run in two threads at once (nor at all
 * once dbswap_client_start() succeeded: it then returns -EBUSY).
 * Callbacks run in the thread that dispatches.  An update callback may call
 * dbswap_ack(), dbswap_ack_instance() and dbswap_subscribe(), nothing
 * else of the library; the
 * log function may call nothing of it (it can run with the library's locks
 * held).
 *
 * fork(): a child process gets copies of the clients and pools, but not
 * their threads, and their descriptors are the parent's connections.  In
 * the child every call on a client or pool made before the fork fails at
 * once with ECHILD (-ECHILD, or NULL with errno ECHILD; stats read as
 * zeros; dbswap_client_connected() says 0), and dbswap_client_free() and
 * dbswap_pool_free() only free memory: they send nothing (no session of
 * the parent's is ended), signal no thread, close only the child's copies
 * of descriptors.  A child that needs the agent makes a client of its own.
 *
 * Misuse: a NULL client or pool gives -EINVAL (NULL with errno EINVAL) and
 * a line on stderr (there is no log function to say it with); the other
 * misuses below give their error and a line through the log function.
 */
#ifndef DBSWAP_H
#define DBSWAP_H

#include <libpq-fe.h>
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
 * One published value, valid only during the callback (the strings
 * returned below too).
 */
const char *dbswap_update_target(const dbswap_update *update);
/* The libpq connection string or URI; a secret. */
const char *dbswap_update_conninfo(const dbswap_update *update);
/*
 * Goes up by one with each value the agent publishes for the target.  The
 * number means something only together with dbswap_update_instance(): a
 * restarted agent numbers from 1 again.
 */
uint64_t dbswap_update_generation(const dbswap_update *update);
/*
 * The run of the agent that numbered the generation: 16 lowercase hex
 * digits, new each time the agent starts.  NULL from an agent that
 * predates instances (protocol version 1).  Keep it with the generation
 * when the ack may come after the callback: dbswap_ack_instance().
 */
const char *dbswap_update_instance(const dbswap_update *update);
/*
 * Why it changed, and what to do with connections on older values:
 *   "rotation"    a new value for the server in use (also the first one):
 *                 close old connections when they are released
 *   "failover"    the server in use went down (or read-only); the value is
 *                 the other server's: old connections are dead or hung,
 *                 drop them now
 *   "failback"    back to the primary, or to a server after none was
 *                 available: close old ones when released
 *   "manual"      a switch asked for with `dbswapctl failover` or
 *                 `failback`, both servers up: close old ones when released
 *   "unavailable" no server answers (dbswap_update_server() is "none"):
 *                 drop old connections now, fail requests fast until the
 *                 next update
 *   "reconnect"   `dbswapctl reconnect`: the same value again; replace every
 *                 connection
 * Treat a reason this list does not know like "rotation".
 */
const char *dbswap_update_reason(const dbswap_update *update);
/*
 * The server the value is for: "primary", "secondary", or "none": no
 * server is available, and the conninfo (the value last in force) must not
 * be used to connect.  An agent that does not say gives "primary".
 */
const char *dbswap_update_server(const dbswap_update *update);
/*
 * Returns 1 when the server is a standby in recovery: it is read-only,
 * writes fail.  Else 0.
 */
int dbswap_update_standby(const dbswap_update *update);

typedef void dbswap_update_fn(const dbswap_update *update, void *userdata);

/*
 * Follows target: callback runs with its current value as soon as the
 * agent sends it, then with each new one.  Subscribing again to the same
 * target replaces the callback.  Returns 0, -EINVAL for a bad name, or
 * -ENOMEM.  An agent without such a target, or that refuses it to this
 * process, answers with an error that goes to the log function; the
 * client asks again after 1 s, doubling to 60 s.  Each target is
 * subscribed on its own: a refused one leaves the others followed.
 */
int dbswap_subscribe(dbswap_client *client, const char *target,
		     dbswap_update_fn *callback, void *userdata);

/*
 * Tells the agent that the app now uses generation of target (every
 * connection opened since is on that value), for the last update handed
 * to the target's callback: the ack carries that update's agent instance.
 * Ignored (returns 0) when generation is not that update's: a number alone
 * cannot say which run of the agent it came from.  An app that acks after
 * the callback returned, when another update may have come meanwhile,
 * should use dbswap_ack_instance().  May be called from the callback.
 * Returns 0, -ENOENT if not subscribed to target, or a negative errno.
 * While disconnected the ack is remembered and carried over.
 */
int dbswap_ack(dbswap_client *client, const char *target,
	       uint64_t generation);

/*
 * Like dbswap_ack(), for the update of the given instance
 * (dbswap_update_instance(), NULL when it was NULL) and generation: what
 * an app that switches in the background acks once it is done.  Sent
 * only if the agent connected now is that instance and gave this client
 * that generation or a newer one; otherwise ignored and 0 returned: the
 * agent has restarted since, and its own update for the target follows
 * (if its value is the one acked, the library acks it by itself).  So an
 * ack for an earlier run of the agent is never counted for the same number
 * of the new one.  May be called from the callback and from any thread.
 * Returns 0, -ENOENT if not subscribed to target, or a negative errno.
 */
int dbswap_ack_instance(dbswap_client *client, const char *target,
			const char *instance, uint64_t generation);

/*
 * CONNECTION POOL
 *
 * A pool of libpq connections to one target, shared by all threads of the
 * app, that follows the agent by itself: on a new value it opens
 * connections with it first (in its own thread, never in an acquiring
 * one), then switches: from then on every acquire gets a connection on the
 * new value.  Idle old connections are closed at once, busy ones when they
 * are released; one still busy at its switch's drain deadline (each switch
 * gives its busy connections their own) has its socket shut down (its
 * query fails, the server ends the session; it is closed on release).
 * When no connection on the old value remains but such shut-down ones, the
 * pool acks the generation, so `dbswapctl set --wait` returns when the old
 * password is out of use, even if the app never gives a connection back.  While a
 * switch is under way the pool holds more than max_size connections: the
 * old busy ones and the new ones (and, when rotations follow each other
 * faster than connections open, those of the next value too).
 *
 * A failover (an update with reason "failover" or "unavailable", see
 * dbswap_update_reason()) breaks before it makes, as the old server is
 * dead or hung: the new value is in force at once, idle old connections
 * are closed, and busy ones have their socket shut down at once (a query
 * blocked on the old server fails now; the connection is closed on
 * release).  Acquires then wait for connections on the new server, which
 * the pool opens in the background.  While the agent reports no server
 * available (server "none"), the pool opens nothing and acquires fail at
 * once with EHOSTDOWN; the next value is switched to at once.  A
 * "reconnect" replaces every connection as a rotation does, though the
 * value is the same.  Any of these is acked, like a rotation, when no
 * connection on an older value remains.
 *
 * If the new value does not connect from this process, the pool keeps
 * serving on the old one, retries with exponential backoff and jitter, and
 * tells the agent (a nack, shown in `dbswapctl status`).  An
 * authentication failure first asks the agent for its current value (the
 * password may have changed again); a value refused 5 times is not
 * tried again, so that the role is never locked out.
 *
 * Without an agent (no socket), the pool uses the target's value from the
 * process environment ($DATABASE_URL) and says so once in the log; a value
 * from an agent that appears later takes over.
 *
 * The pool runs one maintenance thread, and starts the client's background
 * thread (dbswap_client_start()) if it is not running: a client that backs
 * a pool must not be dispatched by the app, and its target must not also be
 * followed with dbswap_subscribe().
 *
 * All pool functions are thread-safe, except dbswap_pool_free(), which
 * must not race with the others on the same pool.
 */
typedef struct dbswap_pool dbswap_pool;

/*
 * Settings.  Start from DBSWAP_POOL_CONFIG_INIT, which sets struct_size and
 * every int field to DBSWAP_POOL_DEFAULT, then set what you want:
 *
 *	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
 *	cfg.max_size = 20;
 *	cfg.min_size = 0;	(0 means 0: no connection kept when idle)
 *
 * An int field at DBSWAP_POOL_DEFAULT takes the value from the env files
 * (sent by the agent, live) if there is one, else the default below; any
 * other value, 0 included, is the value.  The env names for target
 * DATABASE_URL are DATABASE_POOL_MAX, DATABASE_POOL_MIN,
 * DATABASE_POOL_TIMEOUT (acquire timeout) and DATABASE_POOL_IDLE_TIMEOUT,
 * in milliseconds; for another target, its name without a trailing _URL,
 * then _POOL_MAX and so on.
 *
 * The struct grows at its end in later versions: struct_size tells the
 * library which fields a program knows, and fields beyond it take their
 * defaults, so a program built against an older dbswap.h keeps working.
 * A program built against a newer one works with this library as long as
 * the fields this library does not know keep their _INIT values (fields
 * added later are such that 0, like DBSWAP_POOL_DEFAULT, asks for
 * nothing new).
 *
 * Hooks run with no lock of the library held and may run queries on conn;
 * they must not call the pool, and must not block for long: a hook that
 * waits on a hung server holds its thread, and after_connect holds the
 * pool's own (no connection opens, no failover or drain proceeds
 * meanwhile): bound their queries (poll PQsocket() with a timeout, or
 * tcp_user_timeout in the conninfo).  One returning nonzero has the
 * connection closed:
 *   after_connect   on each new connection before it joins the pool, in
 *                   the pool's thread (every rotation replaces every
 *                   connection), and after each reset (which undoes what
 *                   it set up), in the releasing thread; nonzero: the
 *                   attempt failed, or the connection is closed.
 *   before_acquire  in the acquiring thread, before handing conn out;
 *                   nonzero: closed, and another one is tried.
 *   after_release   in the releasing thread, after the rollback and the
 *                   reset, for a connection to be kept (one closed anyway,
 *                   as on an old value, gets neither); nonzero: closed
 *                   instead.
 *
 * Session state: a connection released after running a command that can
 * leave state in the session (SET, PREPARE and protocol-level prepared
 * statements, LISTEN, DECLARE, CREATE TEMP, DO, CALL: any command but
 * SELECT, INSERT, UPDATE, DELETE, MERGE, COPY, FETCH, MOVE, SHOW, EXPLAIN
 * and transaction control; and a SELECT of set_config() or of a
 * session-level advisory lock, when its column keeps the function's name)
 * is reset with reset_query, then init_query and after_connect run again.
 * The pool sees command tags, not the functions a query calls: with
 * reset_always, every connection that ran anything is reset.
 */
#define DBSWAP_POOL_DEFAULT (-2147483647 - 1) /* INT_MIN */

typedef int dbswap_pool_hook_fn(PGconn *conn, void *userdata);

typedef struct dbswap_pool_config {
	size_t struct_size;     /* sizeof(dbswap_pool_config) */
	int min_size;           /* kept open even when idle; default 1 */
	int max_size;           /* at most this many (>= 1); default 10 */
	int acquire_timeout_ms; /* an acquire waits this long (0: does not
				 * wait); default 5000 */
	int idle_timeout_ms;    /* idle beyond min closed after; default
				 * 300000; -1 never */
	int max_lifetime_ms;    /* closed when released (or idle) after;
				 * default 1800000; -1 never */
	int lifetime_jitter_ms; /* each connection's lifetime shortened by a
				 * random amount up to this, so that those
				 * opened together do not expire together;
				 * default max_lifetime_ms / 10 */
	int connect_timeout_ms; /* one connection attempt, and each round
				 * trip of a release or check (>= 1);
				 * default 5000 */
	int drain_timeout_ms;   /* old busy ones shut down after; default
				 * 30000 */
	int idle_check_ms;      /* a connection idle this long gets a round
				 * trip before it is handed out (0: every
				 * one, -1: none); default 1000 */
	int keepalive_ms;       /* TCP keepalives after this long idle (then
				 * 3 probes, 1/3 of it apart), unless the
				 * conninfo sets keepalives; 0: off; default
				 * 60000 */
	int reset_always;       /* 1: reset every connection that ran
				 * anything, not only those whose commands
				 * can leave session state; default 0 */
	const char *reset_query; /* NULL: "DISCARD ALL"; "": no reset */
	const char *init_query;  /* run on each new connection and after
				  * each reset; NULL: none */
	dbswap_pool_hook_fn *after_connect;
	dbswap_pool_hook_fn *before_acquire;
	dbswap_pool_hook_fn *after_release;
	void *hook_data;         /* the hooks' userdata */
} dbswap_pool_config;

#define DBSWAP_POOL_CONFIG_INIT                                              \
	{                                                                    \
		.struct_size = sizeof(dbswap_pool_config),                   \
		.min_size = DBSWAP_POOL_DEFAULT,                             \
		.max_size = DBSWAP_POOL_DEFAULT,                             \
		.acquire_timeout_ms = DBSWAP_POOL_DEFAULT,                   \
		.idle_timeout_ms = DBSWAP_POOL_DEFAULT,                      \
		.max_lifetime_ms = DBSWAP_POOL_DEFAULT,                      \
		.lifetime_jitter_ms = DBSWAP_POOL_DEFAULT,                   \
		.connect_timeout_ms = DBSWAP_POOL_DEFAULT,                   \
		.drain_timeout_ms = DBSWAP_POOL_DEFAULT,                     \
		.idle_check_ms = DBSWAP_POOL_DEFAULT,                        \
		.keepalive_ms = DBSWAP_POOL_DEFAULT,                         \
		.reset_always = DBSWAP_POOL_DEFAULT,                         \
	}

/* The server a pool's connections go to (dbswap_pool_stats.server). */
enum {
	DBSWAP_SERVER_UNKNOWN = 0, /* no value yet */
	DBSWAP_SERVER_PRIMARY = 1,
	DBSWAP_SERVER_SECONDARY = 2,
	DBSWAP_SERVER_NONE = 3,    /* the agent reports none available */
	DBSWAP_SERVER_ENV = 4,     /* no agent: the environment's value */
};

/*
 * Counters and gauges, for monitoring.  Set struct_size before the call
 * (DBSWAP_POOL_STATS_INIT): the library fills the fields a program knows.
 */
typedef struct dbswap_pool_stats {
	size_t struct_size;  /* sizeof(dbswap_pool_stats) */
	uint64_t generation; /* the value acquires get now; 0 before any */
	int size;            /* connections open, all generations */
	int idle;            /* on the current value, ready to hand out */
	int in_use;          /* handed out, all generations */
	int old;             /* on an old value, draining */
	int waiting;         /* threads blocked in acquire */
	uint64_t acquired, timeouts, opened, closed, failed_connects;
	uint64_t switches;   /* values switched to */
	/* Acquires that had to wait (not served at once), their total and
	 * longest wait, timed-out ones included. */
	uint64_t acquire_waits, acquire_wait_us, acquire_wait_max_us;
	/* closed, by cause; they add up to closed */
	uint64_t closed_idle;      /* idle timeout */
	uint64_t closed_lifetime;  /* max_lifetime_ms */
	uint64_t closed_replaced;  /* on an older value (a switch) */
	uint64_t closed_broken;    /* broken, or failed a rollback, reset,
				    * check or hook */
	uint64_t closed_discarded; /* dbswap_pool_discard() */
	uint64_t closed_shutdown;  /* dbswap_pool_close() */
	uint64_t resets;           /* reset_query runs */
	int server;   /* DBSWAP_SERVER_*: where acquires' connections go */
	int standby;  /* 1: that server is a read-only standby */
	int refused;  /* the agent refuses the target: EACCES (this uid or
		       * gid may not follow it), ENXIO (no such target),
		       * EPERM (another refusal); 0: not refused */
	int connect_failures; /* attempts on the current value failed in a
			       * row (0: connections open) */
	int closing;  /* dbswap_pool_close() was called */
} dbswap_pool_stats;

#define DBSWAP_POOL_STATS_INIT { .struct_size = sizeof(dbswap_pool_stats) }

/*
 * Creates a pool for target on client; config NULL means all defaults.
 * The config is copied, the strings in it too.  Opens min_size
 * connections in the background as soon as a value is known.  Does not
 * block.  Returns NULL with errno set (EINVAL: bad target or config, such
 * as a struct_size of 0; EBUSY: the target is already followed on this
 * client; ENOMEM).
 */
dbswap_pool *dbswap_pool_new(dbswap_client *client, const char *target,
			     const dbswap_pool_config *config);

/*
 * Closes the pool gracefully: from now on acquires fail with ECANCELED
 * (threads waiting in one too), idle connections are closed, and busy ones
 * are closed as they are released.  Waits up to timeout_ms (-1: for ever)
 * for every connection lent out to come back.  Returns 0 when all came
 * back; -ETIMEDOUT when some did not: their sockets are then shut down
 * (their queries fail; the server ends the sessions) and they are closed on
 * release.  The pool keeps its value meanwhile; free it with
 * dbswap_pool_free() when no thread uses it.  -EINVAL for a NULL pool,
 * -ECHILD in a child process.  Not from a callback, hook or log function.
 */
int dbswap_pool_close(dbswap_pool *pool, int timeout_ms);

/*
 * Closes every connection (busy ones too: call it when no thread uses the
 * pool any more, or after dbswap_pool_close()), stops the maintenance
 * thread, frees the pool.  Threads waiting in dbswap_pool_acquire() get
 * NULL with errno ECANCELED, and it returns once they have all left it; a
 * call that starts meanwhile, or any use of the pool or its connections
 * after, is undefined.  NULL is a no-op.  Not from a callback, hook or log
 * function.
 */
void dbswap_pool_free(dbswap_pool *pool);

/*
 * Hands out a ready connection on the current value, blocking at most
 * timeout_ms (-1: the pool's acquire timeout).  Returns NULL with errno
 * set: ETIMEDOUT (the pool is exhausted: every connection is in use),
 * ENOTCONN (no server: connections fail to open, or the first one is not
 * open yet; the pool's log says why, once per cause, and retries at least
 * once a second while threads wait), ENOENT (no value known for the target
 * yet), EHOSTDOWN (the agent reports no database server available: fails
 * at once, without waiting, until it reports one again), EACCES, ENXIO or
 * EPERM (the agent refuses the target, see dbswap_pool_stats.refused, and
 * the pool has no value: fails at once; with a value the pool keeps
 * serving on it), ECANCELED (the pool is closed or being freed), ECHILD
 * (the pool was made before a fork: see the top of this file), EINVAL
 * (pool is NULL).  A timeout of 0 does not wait but still makes the pool
 * open one more connection, within max_size.  A connection idle for
 * idle_check_ms or more gets a round trip first, waiting at most the
 * connect timeout; one that fails it, or the before_acquire hook, is
 * closed and another one tried.
 */
PGconn *dbswap_pool_acquire(dbswap_pool *pool, int timeout_ms);

/*
 * Gives a connection back.  A connection left in a transaction is rolled
 * back first, then reset if it needs it (see the config above), then the
 * after_release hook runs; a broken one (PQstatus bad, or a rollback,
 * reset or hook that fails), one on an old value, or one past its
 * lifetime is closed instead, and replaced in the background as needed.
 * Each round trip waits at most the pool's connect timeout (a hung
 * server: the connection is closed).  Returns 0 (also for a NULL conn,
 * which does nothing), or: -EINVAL for a connection this pool did not
 * lend (one of another pool, or the app's own), or one released already
 * and not lent out again: the connection is left alone and the log says
 * which (a second release that races with the first, from another thread,
 * is not always seen); -ECHILD in a child process (see the top of this
 * file).
 */
int dbswap_pool_release(dbswap_pool *pool, PGconn *conn);

/*
 * Gives a connection back to be closed, not reused: the app found it bad
 * or left it in a state it cannot undo.  Replaced in the background as
 * needed.  Returns like dbswap_pool_release().
 */
int dbswap_pool_discard(dbswap_pool *pool, PGconn *conn);

/*
 * Fills the fields of *stats that both the program and the library know
 * (struct_size, from DBSWAP_POOL_STATS_INIT; fields of a newer header
 * keep their zeros).  Never blocks beyond the pool's lock.  Returns 0, or
 * -EINVAL (NULL pool or stats, or a struct_size that cannot be one: the
 * struct was not made with the macro; nothing is written), -ECHILD in a
 * child process (the stats then read as zeros).
 */
int dbswap_pool_stats_get(dbswap_pool *pool, dbswap_pool_stats *stats);

/*
 * Fills *config, up to config->struct_size, with the settings in force
 * (defaults and env files' values filled in).  Returns 0, -EINVAL or
 * -ECHILD.
 */
int dbswap_pool_config_get(dbswap_pool *pool, dbswap_pool_config *config);

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

/*
 * The connection pool of libdbswap; see the POOL section of dbswap.h.
 *
 * Threads: app threads call acquire and release; the client's thread runs
 * the update and settings callbacks; the pool's own thread (pool_main)
 * opens connections, switches values, closes idle and old connections,
 * enforces the drain deadline, and acks.  All state sits behind one mutex;
 * blocking libpq calls (connect steps, ROLLBACK, PQfinish) run outside it.
 *
 * Values: `cur` is what acquires get.  A new value from the agent becomes
 * `next`; the pool thread opens connections with it (non-blocking, several
 * at once) without handing them out; when enough are ready it switches:
 * `next` becomes `cur`, idle connections of the old value are closed, busy
 * ones are marked old and closed on release.  With no old connection left,
 * the generation is acked.
 *
 * Failover (reason "failover" or "unavailable") breaks before it makes:
 * the old server is dead or hung, so waiting for connections to the new
 * one would only prolong the outage.  The new value becomes `cur` at once,
 * idle and parked old connections are closed, busy ones have their socket
 * shut down so that a thread blocked in a query returns now; acquires wait
 * for the pool thread to open connections on the new value.  A value for
 * server "none" is `cur` but marked unavailable: nothing is opened and
 * acquires fail at once with EHOSTDOWN, until the next value, which is
 * switched to at once too (there is nothing to keep serving meanwhile).
 *
 * The fast path: a thread that releases a connection parks it in a
 * thread-local slot (one atomic store), and its next acquire takes it back
 * (one compare-and-swap), without the mutex: with many threads on few
 * cores, a thread preempted while holding the mutex would stall all the
 * others.  A parked connection still counts as in use for the locked
 * bookkeeping; other threads steal parked connections when the idle stack
 * is empty, a switch steals those on the old value, and the pool thread
 * takes back any parked longer than POOL_PARK_MAX_MS.  Each connection
 * lifetime has a unique tag and connection structs are recycled, never
 * freed before the pool, so a stale thread-local slot can only fail its
 * compare-and-swap.
 */
#include <libpq-events.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include "client.h"
#include "common/mask.h"
#include "common/pqerr.h"
#include "common/util.h"

#define DBSWAP_EXPORT __attribute__((visibility("default")))

/* Binds fn to a versioned name.  The attribute where the compiler has it
 * (gcc 10 on): a top-level .symver breaks link-time optimization. */
#if defined(__has_attribute)
#if __has_attribute(symver)
#define SYMVER(fn, name) extern __typeof__(fn) fn __attribute__((symver(name)))
#endif
#endif
#ifndef SYMVER
#define SYMVER(fn, name) __asm__(".symver " #fn ", " name)
#endif

/* Defaults, chosen for a small web app: a warm connection, room for a
 * burst, and timeouts a request can live with. */
#define POOL_DEFAULT_MIN 1
#define POOL_DEFAULT_MAX 10
#define POOL_DEFAULT_ACQUIRE_MS 5000
#define POOL_DEFAULT_IDLE_MS 300000
#define POOL_DEFAULT_LIFETIME_MS 1800000
#define POOL_DEFAULT_CONNECT_MS 5000
#define POOL_DEFAULT_DRAIN_MS 30000
#define POOL_DEFAULT_IDLE_CHECK_MS 1000 /* pgx's; HikariCP's is 500 */
#define POOL_DEFAULT_KEEPALIVE_MS 60000
#define POOL_DEFAULT_RESET "DISCARD ALL"

/* Retry of a value that fails to connect here: 100 ms doubling to 30 s,
 * with jitter; an authentication failure is tried at most this often. */
#define POOL_RETRY_FIRST_MS 100
#define POOL_RETRY_MAX_MS 30000
#define POOL_AUTH_TRIES 5

/* While threads wait in acquire, the current value is retried at least
 * this often, however long the outage was: a server back is used within
 * a second, not at the end of a 30 s backoff. */
#define POOL_RETRY_WAITING_MS 1000

/* How long to wait for an agent before using the environment's value:
 * long enough for a local agent to answer, short for a developer. */
#define POOL_AGENT_GRACE_MS 200

/* Most connection attempts in flight at once. */
#define POOL_CONNECTING_MAX 16

/* A connection parked by a thread this long goes back to the shared idle
 * stack, where the idle timeout applies. */
#define POOL_PARK_MAX_MS 1000

/* What false sharing is measured in. */
#define CACHE_LINE 64

/* Log lines made under the lock at once, at most; more are counted. */
#define POOL_NOTES_MAX 8

/* Why a connection was closed, for stats. */
enum close_cause {
	CLOSE_IDLE,
	CLOSE_LIFETIME,
	CLOSE_REPLACED, /* on an older value */
	CLOSE_BROKEN,
	CLOSE_DISCARDED,
	CLOSE_SHUTDOWN, /* dbswap_pool_close() */
	CLOSE_CAUSES,
};

struct pool_note {
	int priority;
	char line[512];
};

/* Each on cache lines of its own (zalloc_lines()): threads using
 * neighbouring connections must not share the line of word. */
struct pconn {
	struct pconn *next;
	PGconn *conn;
	/* A dup() of the connection's socket, for shutdown(2) from the pool
	 * thread: libpq closes its own descriptor when it sees the server
	 * go, and the number may be another file's by the time the pool
	 * shuts it down.  The dup keeps the socket itself.  -1: none. */
	int shut_fd;
	uint64_t value;     /* which value (pool->serial numbering) */
	int64_t created_ms;
	int64_t expires_ms; /* created_ms + lifetime - jitter; INT64_MAX */
	int64_t idle_since;
	/* Set by libpq's result events (pconn_event()) in the thread using
	 * the connection: it ran something, and something that can leave
	 * session state.  Cleared when it is reset. */
	bool ran, dirty;
	bool in_use;        /* handed out or parked */
	bool releasing;     /* a release by another thread than the one
			     * it was lent to is rolling it back */
	/* On an old value and busy: when its socket is shut down (each
	 * switch gives its own busy ones their deadline), and whether it
	 * was.  A shut-down one holds no session of the old value any more:
	 * the ack does not wait for the app to give it back. */
	int64_t drain_at;
	bool abandoned;
	/* tag << 1 | parked; the tag is new for each connection the struct
	 * holds */
	_Alignas(CACHE_LINE) _Atomic uint64_t word;
	_Atomic int64_t parked_since;
};

/* The thread's parked or last acquired connection. */
struct park_slot {
	uint64_t pool_id;
	struct pconn *pc;
	PGconn *conn;
	uint64_t tag;
};
static _Thread_local struct park_slot park_slot;

/* Tells pools apart in thread-local slots, even at a reused address. */
static _Atomic uint64_t pool_ids;

/* A value: a conninfo, the server it is for, and the agent's generation
 * for it with the instance (run) of the agent that numbered it: acks and
 * nacks carry both, so that a switch finished after an agent restart never
 * acks the new agent's generation of the same number.  serial numbers
 * values within the pool, so that an agent restart renumbering
 * generations cannot confuse old and new connections. */
struct value {
	char *conninfo; /* secret */
	char *server;   /* "primary", "secondary", "none"; NULL: primary */
	bool standby;
	bool unavailable; /* server "none": do not connect */
	uint64_t generation;
	char instance[IPC_INSTANCE_LEN + 1]; /* "" for none */
	uint64_t serial;
};

/* A connection attempt.  Only the pool thread touches these, so it runs
 * libpq's steps (which may block in a host name lookup) without the
 * lock. */
struct connecting {
	char *conninfo; /* until started (secret) */
	PGconn *conn;   /* NULL until started */
	uint64_t value;
	int64_t deadline;
	PostgresPollingStatusType want;
	/* Why it failed after connecting (init_query, after_connect); NULL:
	 * libpq's message says. */
	const char *why;
};

/* Threads inside dbswap_pool_acquire(), which dbswap_pool_free() waits
 * out, counted on stripes, each on a cache line of its own: one shared
 * counter bumped by every acquire would bounce between the cores. */
#define POOL_STRIPES 16
struct stripe {
	_Alignas(CACHE_LINE) _Atomic int n;
};

/* This thread's stripe: threads take them in turn. */
static _Atomic unsigned stripe_turn;
static _Thread_local unsigned my_stripe; /* stripe + 1; 0: none yet */

static unsigned thread_stripe(void)
{
	if (!my_stripe)
		my_stripe = atomic_fetch_add(&stripe_turn, 1) % POOL_STRIPES + 1;
	return my_stripe - 1;
}

struct dbswap_pool {
	/* Read by every acquire and release, never written after
	 * creation. */
	uint64_t id;
	unsigned epoch; /* client_fork_epoch() when made (client.h) */
	struct stripe inside[POOL_STRIPES];
	_Alignas(CACHE_LINE) pthread_mutex_t lock;
	pthread_cond_t changed; /* a connection came back, or the value */
	dbswap_client *client;
	char *target;

	/* As given, every field there (DBSWAP_POOL_DEFAULT: not set), the
	 * strings the pool's own copies. */
	dbswap_pool_config app;
	struct client_settings env; /* from the agent */
	/* In force.  Settings from the agent rewrite it under the lock; the
	 * fields only the app sets (all but the sizes and the acquire and
	 * idle timeouts) are fixed at creation, and the lock-free paths read
	 * those only. */
	dbswap_pool_config cfg;
	/* libpq keywords put before the conninfo (which may override them):
	 * TCP keepalives. */
	char ka_idle[16], ka_interval[16];
	uint64_t rng; /* lifetime jitter */

	struct value cur, next;
	uint64_t serials;
	bool from_env;        /* cur came from the environment */
	bool warned_no_agent; /* said so once */
	int64_t created_ms;

	/* the switch to next */
	unsigned next_failures, next_auth_failures;
	int64_t next_retry_at;
	int64_t next_deadline; /* switch with what is ready by then */
	bool next_given_up;
	char next_error[512];

	struct pconn *conns; /* every open connection */
	struct pconn *spare; /* structs of closed connections, for reuse */
	struct pconn *dead;  /* unlinked by a failover, for the pool thread
			      * to close */
	uint64_t tags;
	/* What the lock-free paths read on every call, on a cache line of
	 * its own, apart from what they write: a store there by one thread
	 * would make every other core miss on these. */
	_Alignas(CACHE_LINE) _Atomic uint64_t cur_serial; /* cur.serial */
	_Atomic int waiting;     /* threads blocked in acquire */
	_Atomic bool park_watch; /* the next park wakes the pool thread */
	/* closing: dbswap_pool_close() or _free() called, acquires refused;
	 * stopping: dbswap_pool_free() called, the pool thread leaves. */
	_Atomic bool closing, stopping;
	_Alignas(CACHE_LINE) _Atomic int n_parked;
	_Alignas(CACHE_LINE) _Atomic uint64_t acquired;
	_Alignas(CACHE_LINE) _Atomic uint64_t resets;
	/* Idle connections of the current value, a stack: the most recently
	 * released on top, so that acquires get warm ones and the rest age
	 * out by the idle timeout.  Room for every open connection is kept
	 * reserved, so pushing never fails. */
	struct pconn **idle;
	int idle_cap;
	int n_open, n_idle, n_in_use, n_old, n_ready_next;
	int n_abandoned; /* of n_old: shut down, still held by the app */
	struct connecting connecting[POOL_CONNECTING_MAX];
	int n_connecting;
	int demand; /* acquires that failed since the last plan */
	uint64_t acked; /* serial of the value last acked */
	char connect_error[512]; /* last failure for cur, for timeouts */
	unsigned cur_failures;   /* in a row, for the backoff below */
	int64_t cur_retry_at, cur_failed_at;
	/* Why acquires time out, as last logged; "" after a success. */
	char timeout_said[512];

	uint64_t timeouts, opened, closed, failed_connects, switches;
	uint64_t closed_by[CLOSE_CAUSES];
	uint64_t waits, wait_us, wait_max_us;
	int refused; /* errno of the agent's refusal of the target; 0 */

	/* Log lines waiting for the lock's release (pool_log()). */
	struct pool_note notes[POOL_NOTES_MAX];
	int n_notes;
	unsigned notes_dropped;

	pthread_t thread;
	int wakefd;
};

/* Log lines are made with the lock held and said after it is released
 * (pool_unlock()): the app's log function may be slow, and must never
 * hold up the threads waiting for the lock. */
static void pool_log(dbswap_pool *p, int priority, const char *fmt, ...)
	PRINTF(3, 4);

static void pool_log(dbswap_pool *p, int priority, const char *fmt, ...)
{
	struct pool_note *n;
	va_list ap;

	if (p->n_notes >= POOL_NOTES_MAX) {
		p->notes_dropped++;
		return;
	}
	n = &p->notes[p->n_notes++];
	n->priority = priority;
	va_start(ap, fmt);
	vsnprintf(n->line, sizeof(n->line), fmt, ap);
	va_end(ap);
}

/* Releases the lock, then says the lines made under it, through the
 * client's log function, so that apps see one stream. */
static void pool_unlock(dbswap_pool *p)
{
	struct pool_note notes[POOL_NOTES_MAX];
	int n = p->n_notes;
	unsigned dropped = p->notes_dropped;

	if (n == 0 && dropped == 0) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	memcpy(notes, p->notes, (size_t)n * sizeof(*notes));
	p->n_notes = 0;
	p->notes_dropped = 0;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < n; i++)
		client_log_line(p->client, notes[i].priority, notes[i].line);
	if (dropped) {
		char line[128];
		snprintf(line, sizeof(line), "%s: %u more log line(s) "
			 "dropped", p->target, dropped);
		client_log_line(p->client, LOG_WARNING, line);
	}
}

/* Zeroed memory aligned to a cache line, for structs with _Alignas()
 * members; free() frees it. */
static void *zalloc_lines(size_t size)
{
	size = (size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
	void *mem = aligned_alloc(CACHE_LINE, size);

	if (mem)
		memset(mem, 0, size);
	return mem;
}

static void pool_wake(dbswap_pool *p)
{
	uint64_t one = 1;

	(void)!write(p->wakefd, &one, sizeof(one));
}

static int pick(int app, int64_t env, int def)
{
	if (app != DBSWAP_POOL_DEFAULT)
		return app;
	if (env >= 0)
		return (int)MIN(env, INT32_MAX);
	return def;
}

/* The settings in force: the app's, else the env files', else defaults.
 * Called with the lock held; with all, before the pool thread starts:
 * then the fields only the app sets are filled in too, once. */
static void pool_configure(dbswap_pool *p, bool all)
{
	const dbswap_pool_config *a = &p->app;
	dbswap_pool_config *c = &p->cfg;

	if (all)
		*c = *a;
	c->max_size = pick(a->max_size, p->env.pool_max, POOL_DEFAULT_MAX);
	c->min_size = pick(a->min_size, p->env.pool_min, POOL_DEFAULT_MIN);
	c->min_size = MIN(c->min_size, c->max_size);
	c->acquire_timeout_ms = pick(a->acquire_timeout_ms,
				     p->env.pool_timeout_ms,
				     POOL_DEFAULT_ACQUIRE_MS);
	c->idle_timeout_ms = pick(a->idle_timeout_ms,
				  p->env.pool_idle_timeout_ms,
				  POOL_DEFAULT_IDLE_MS);
	if (!all)
		return;
	c->max_lifetime_ms = pick(a->max_lifetime_ms, -1,
				  POOL_DEFAULT_LIFETIME_MS);
	c->lifetime_jitter_ms = pick(a->lifetime_jitter_ms, -1,
				     MAX(c->max_lifetime_ms / 10, 0));
	c->connect_timeout_ms = pick(a->connect_timeout_ms, -1,
				     POOL_DEFAULT_CONNECT_MS);
	c->drain_timeout_ms = pick(a->drain_timeout_ms, -1,
				   POOL_DEFAULT_DRAIN_MS);
	c->idle_check_ms = pick(a->idle_check_ms, -1,
				POOL_DEFAULT_IDLE_CHECK_MS);
	c->keepalive_ms = pick(a->keepalive_ms, -1, POOL_DEFAULT_KEEPALIVE_MS);
	c->reset_always = pick(a->reset_always, -1, 0) > 0;
	if (!c->reset_query)
		c->reset_query = POOL_DEFAULT_RESET;
}

static void value_set_instance(struct value *v, const char *instance)
{
	snprintf(v->instance, sizeof(v->instance), "%s",
		 instance ? instance : "");
}

static void value_clear(struct value *v)
{
	free_secret(v->conninfo);
	free(v->server);
	*v = (struct value){ 0 };
}

/* Whether v is that value for that server.  The environment's value has no
 * server: it is taken for the primary's. */
static bool value_is(const struct value *v, const char *conninfo,
		     const char *server, bool standby)
{
	return v->conninfo && streq(v->conninfo, conninfo) &&
	       streq(v->server ? v->server : "primary", server) &&
	       v->standby == standby;
}

static void pconn_retag(dbswap_pool *p, struct pconn *pc);

/* Locked.  A connection back on the shared stack is lent to no thread:
 * it gets a new tag (pconn_retag()). */
static void idle_push(dbswap_pool *p, struct pconn *pc)
{
	pconn_retag(p, pc);
	p->idle[p->n_idle++] = pc;
}

static void idle_remove(dbswap_pool *p, struct pconn *pc)
{
	for (int i = p->n_idle; i-- > 0;) {
		if (p->idle[i] != pc)
			continue;
		memmove(&p->idle[i], &p->idle[i + 1],
			(size_t)(p->n_idle - i - 1) * sizeof(*p->idle));
		p->n_idle--;
		return;
	}
}

/* Keeps room on the idle stack for one more open connection. */
static int idle_reserve(dbswap_pool *p)
{
	struct pconn **idle;
	int cap;

	if (p->n_open + 1 <= p->idle_cap)
		return 0;
	cap = MAX(16, p->idle_cap * 2);
	idle = realloc(p->idle, (size_t)cap * sizeof(*idle));
	if (!idle)
		return -ENOMEM;
	p->idle = idle;
	p->idle_cap = cap;
	return 0;
}

/* One connection fewer lent out.  Locked.  dbswap_pool_close() waits for
 * the last. */
static void pool_lent_less(dbswap_pool *p)
{
	if (--p->n_in_use == 0 && atomic_load(&p->closing))
		pthread_cond_broadcast(&p->changed);
}

static void count_closed(dbswap_pool *p, enum close_cause cause)
{
	p->closed++;
	p->closed_by[cause]++;
}

/* Unlinks pc from the pool's lists and counts.  The caller closes the
 * connection, outside the lock. */
static void pool_unlink(dbswap_pool *p, struct pconn *pc,
			enum close_cause cause)
{
	for (struct pconn **pp = &p->conns; *pp; pp = &(*pp)->next) {
		if (*pp != pc)
			continue;
		*pp = pc->next;
		break;
	}
	p->n_open--;
	if (pc->in_use)
		pool_lent_less(p);
	if (pc->value == p->cur.serial && !pc->in_use)
		idle_remove(p, pc);
	else if (p->next.serial && pc->value == p->next.serial)
		p->n_ready_next--;
	else if (pc->value != p->cur.serial) {
		p->n_old--;
		p->n_abandoned -= pc->abandoned;
	}
	count_closed(p, cause);
}

/* Recounts idle, old and ready-next after the value changed.  Locked. */
static void pool_recount(dbswap_pool *p)
{
	p->n_idle = p->n_old = p->n_ready_next = p->n_abandoned = 0;
	for (struct pconn *pc = p->conns; pc; pc = pc->next) {
		if (pc->value == p->cur.serial) {
			if (!pc->in_use)
				idle_push(p, pc);
		} else if (p->next.serial && pc->value == p->next.serial) {
			p->n_ready_next++;
		} else {
			p->n_old++;
			p->n_abandoned += pc->abandoned;
		}
	}
}

/* Closes a list of connections outside the lock, then keeps their structs
 * for reuse (a thread-local slot may still point at one). */
static void close_list(dbswap_pool *p, struct pconn *list)
{
	struct pconn *last = NULL;

	if (!list)
		return;
	for (struct pconn *pc = list; pc; pc = pc->next) {
		PQfinish(pc->conn);
		pc->conn = NULL;
		if (pc->shut_fd >= 0)
			close(pc->shut_fd);
		pc->shut_fd = -1;
		atomic_store(&pc->word, 0);
		last = pc;
	}
	pthread_mutex_lock(&p->lock);
	last->next = p->spare;
	p->spare = list;
	pool_unlock(p);
}

/* Shuts the connection's socket down (never closes it: the thread using
 * it holds the descriptor), so that a query blocked on it fails now and
 * the server ends its session.  Returns 1, or 0 when that failed (the
 * connection then still drains). */
static int pconn_abandon(struct pconn *pc)
{
	if (pc->shut_fd < 0 || shutdown(pc->shut_fd, SHUT_RDWR) < 0)
		return 0;
	pc->abandoned = true;
	return 1;
}

/* Gives pc a new tag: every thread-local slot that names it goes stale, so
 * that no fast path (a release parking it, an acquire taking it back)
 * acts on it for a thread the pool no longer lent it to.  Done whenever
 * the pool lends it out or takes it back by the locked path.  Locked. */
static void pconn_retag(dbswap_pool *p, struct pconn *pc)
{
	atomic_store(&pc->word, ++p->tags << 1);
}

/* Takes a parked connection back from whoever parked it; false if it was
 * not parked (any more).  A success hands over the parker's ownership. */
static bool pc_unpark(dbswap_pool *p, struct pconn *pc)
{
	uint64_t w = atomic_load(&pc->word);

	if (!(w & 1) || !atomic_compare_exchange_strong(&pc->word, &w, w & ~1ULL))
		return false;
	atomic_fetch_sub(&p->n_parked, 1);
	return true;
}

static void pool_connect_failed(dbswap_pool *p, uint64_t value,
				const char *why);

/* Queues a connection attempt for value v; the pool thread starts it once
 * the lock is released.  Locked; returns 0, -EBUSY or -ENOMEM. */
static int pool_start_connect(dbswap_pool *p, const struct value *v)
{
	struct connecting *cn;
	char *conninfo;

	if (p->n_connecting >= POOL_CONNECTING_MAX)
		return -EBUSY;
	conninfo = strdup(v->conninfo);
	if (!conninfo)
		return -ENOMEM;
	cn = &p->connecting[p->n_connecting++];
	*cn = (struct connecting){
		.conninfo = conninfo,
		.value = v->serial,
		.deadline = now_ms() + p->cfg.connect_timeout_ms,
		.want = PGRES_POLLING_WRITING,
		.why = NULL,
	};
	return 0;
}

/* Sets up a new connection, or one just reset, as the app asked: its
 * init_query, then its after_connect hook.  Unlocked.  Returns NULL, or
 * why the connection cannot be used (libpq's message, for the query, is
 * then in PQerrorMessage()). */
static bool conn_exec_bounded(PGconn *conn, const char *sql,
			      ExecStatusType want, int timeout_ms);

static const char *conn_init(const dbswap_pool *p, PGconn *conn)
{
	const dbswap_pool_config *c = &p->cfg;

	if (c->init_query && *c->init_query &&
	    !conn_exec_bounded(conn, c->init_query, PGRES_COMMAND_OK,
			       c->connect_timeout_ms))
		return "";
	if (c->after_connect && c->after_connect(conn, c->hook_data) != 0)
		return "the after_connect hook refused the connection";
	return NULL;
}

/* The unlocked part of the pool thread's round: starts queued attempts and
 * advances those whose socket is ready (fds NULL: none polled yet); sets
 * up those that connected. */
static void connecting_advance(const dbswap_pool *p, struct connecting *cn,
			       int n, const struct pollfd *fds,
			       const int *slot, int nfds)
{
	/* Keepalives first: the conninfo (dbname, expanded) overrides
	 * them. */
	static const char *const keys[] = { "keepalives", "keepalives_idle",
					    "keepalives_interval",
					    "keepalives_count", "dbname",
					    "fallback_application_name",
					    NULL };
	bool ka = p->cfg.keepalive_ms > 0;

	for (int j = 0; fds && j < nfds; j++) {
		struct connecting *c = &cn[slot[j]];
		if (!fds[j].revents || !c->conn ||
		    c->want == PGRES_POLLING_FAILED ||
		    c->want == PGRES_POLLING_OK)
			continue;
		c->want = PQconnectPoll(c->conn);
		if (c->want != PGRES_POLLING_OK)
			continue;
		/* Verbose for the SQLSTATE of a failed attempt only: the app
		 * gets a connection as PQconnectdb() would give it (no
		 * SQLSTATE and LOCATION lines in its errors). */
		PQsetErrorVerbosity(c->conn, PQERRORS_DEFAULT);
		c->why = conn_init(p, c->conn);
		if (c->why)
			c->want = PGRES_POLLING_FAILED;
	}
	for (int i = 0; i < n; i++) {
		const char *vals[] = { ka ? "1" : "0", ka ? p->ka_idle : NULL,
				       ka ? p->ka_interval : NULL,
				       ka ? "3" : NULL, cn[i].conninfo,
				       "libdbswap", NULL };
		if (cn[i].conn || !cn[i].conninfo)
			continue;
		cn[i].conn = PQconnectStartParams(keys, vals, 1);
		free_secret(cn[i].conninfo);
		cn[i].conninfo = NULL;
		if (cn[i].conn)
			PQsetErrorVerbosity(cn[i].conn, PQERRORS_VERBOSE);
		if (!cn[i].conn || PQstatus(cn[i].conn) == CONNECTION_BAD)
			cn[i].want = PGRES_POLLING_FAILED;
	}
}

/* libpq's text about an attempt for value as one line, without the
 * value's passwords: it goes to the app's log and, in a nack, to the
 * agent's log and status.  libpq quotes settings, and a server may quote
 * what it was sent. */
static void pool_error_line(const dbswap_pool *p, uint64_t value,
			    const char *why, char *line, size_t size,
			    char sqlstate[6])
{
	const struct value *v = value == p->cur.serial ? &p->cur
			      : value == p->next.serial ? &p->next : NULL;
	struct mask_secrets secrets = { 0 };
	char *clean;
	size_t n = strlen(why) * 2 + 8;

	if (!v || !v->conninfo || mask_secrets(v->conninfo, &secrets) < 0 ||
	    !secrets.parsed) {
		/* The agent validated the value, so libpq parses it: this is
		 * a value gone since, or no memory. */
		mask_secrets_free(&secrets);
		pqerr_line(why, line, size, sqlstate);
		snprintf(line, size, "libpq's message is not shown (the "
			 "value it is about cannot be checked for passwords)");
		return;
	}
	clean = malloc(n);
	if (clean)
		pqerr_scrub(why, clean, n, secrets.s, secrets.n);
	pqerr_line(clean ? clean : "out of memory", line, size, sqlstate);
	free_secret(clean);
	mask_secrets_free(&secrets);
}

/* Records a failed attempt for the value it was for.  Locked. */
static void pool_connect_failed(dbswap_pool *p, uint64_t value,
				const char *why)
{
	char line[512], sqlstate[6];

	pool_error_line(p, value, why, line, sizeof(line), sqlstate);
	p->failed_connects++;
	if (p->next.serial && value == p->next.serial && p->next_given_up) {
		/* Attempts that were in flight when it was given up. */
		return;
	} else if (p->next.serial && value == p->next.serial) {
		bool auth = pqerr_is_auth(sqlstate);
		int64_t delay;

		p->next_failures++;
		snprintf(p->next_error, sizeof(p->next_error), "%s", line);
		if (auth && ++p->next_auth_failures >= POOL_AUTH_TRIES) {
			p->next_given_up = true;
			pool_log(p, LOG_ERR, "%s generation %llu: refused %u "
					     "times (%s); not trying it again, "
					     "so as not to lock the role out; "
					     "staying on the current value",
				 p->target,
				 (unsigned long long)p->next.generation,
				 p->next_auth_failures, line);
		} else {
			delay = backoff_ms(p->next_failures - 1,
					   POOL_RETRY_FIRST_MS,
					   POOL_RETRY_MAX_MS);
			p->next_retry_at = now_ms() + delay;
			pool_log(p, LOG_WARNING, "%s generation %llu does not "
						 "connect from here: %s; "
						 "staying on the current value, "
						 "retry in %lld ms",
				 p->target,
				 (unsigned long long)p->next.generation, line,
				 (long long)delay);
		}
		/* Tell the agent (shown in status), once per failure. */
		char msg[640];
		snprintf(msg, sizeof(msg), "cannot connect with generation "
					   "%llu from pid %d: %s",
			 (unsigned long long)p->next.generation, (int)getpid(),
			 line);
		client_nack(p->client, p->target, p->next.instance,
			    p->next.generation, msg);
		/* The password may have changed again since: ask. */
		if (auth && !p->next_given_up)
			client_refresh(p->client, p->target);
	} else if (value == p->cur.serial) {
		int64_t delay = backoff_ms(p->cur_failures++,
					   POOL_RETRY_FIRST_MS,
					   POOL_RETRY_MAX_MS);
		p->cur_failed_at = now_ms();
		p->cur_retry_at = p->cur_failed_at + delay;
		/* One line when connections stop opening, and one when the
		 * reason changes: not one per attempt. */
		if (p->cur_failures == 1 || !streq(line, p->connect_error))
			pool_log(p, LOG_WARNING, "%s: cannot open a connection: "
				 "%s; retrying (within %d ms while threads "
				 "wait)", p->target, line, POOL_RETRY_WAITING_MS);
		snprintf(p->connect_error, sizeof(p->connect_error), "%s", line);
	}
}

/* Whether a command that gave res can have left state in the session
 * that the next borrower would inherit.  By the command tag: anything but
 * reads, writes and transaction control (a protocol-level prepare has an
 * empty tag: it can).  A SELECT can call functions that leave state; the
 * usual ones are caught when the column keeps the function's name. */
static bool result_leaves_state(const PGresult *res)
{
	static const char *const plain[] = {
		"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY",
		"FETCH", "MOVE", "SHOW", "EXPLAIN", "BEGIN", "START",
		"COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
	};
	ExecStatusType st = PQresultStatus(res);
	const char *tag = PQcmdStatus((PGresult *)res);
	size_t len;

	if (st == PGRES_TUPLES_OK || st == PGRES_SINGLE_TUPLE) {
		for (int i = 0; i < PQnfields(res); i++) {
			const char *f = PQfname(res, i);
			if (streq(f, "set_config") ||
			    strncmp(f, "pg_advisory_lock", 16) == 0 ||
			    strncmp(f, "pg_try_advisory_lock", 20) == 0)
				return true;
		}
	}
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		return false; /* errors, copy, empty: nothing done */
	if (!tag)
		return true;
	len = strcspn(tag, " ");
	for (size_t i = 0; i < ARRAY_SIZE(plain); i++)
		if (strlen(plain[i]) == len && strncmp(tag, plain[i], len) == 0)
			return false;
	return true;
}

/* libpq's event procedure of the pool's connections: it sees each result
 * made on one, in the thread using it. */
static int pconn_event(PGEventId id, void *info, void *data)
{
	struct pconn *pc = data;

	if (id == PGEVT_RESULTCREATE) {
		const PGEventResultCreate *e = info;
		/* An empty query (the idle check's) does nothing. */
		if (PQresultStatus(e->result) == PGRES_EMPTY_QUERY)
			return 1;
		pc->ran = true;
		if (!pc->dirty && result_leaves_state(e->result))
			pc->dirty = true;
	}
	return 1;
}

/* A random number below n (> 0): the lifetime jitter's.  Locked. */
static int64_t pool_random(dbswap_pool *p, int64_t n)
{
	/* xorshift64: enough to spread expiries. */
	p->rng ^= p->rng << 13;
	p->rng ^= p->rng >> 7;
	p->rng ^= p->rng << 17;
	return (int64_t)(p->rng % (uint64_t)n);
}

/* Adds a connection that finished connecting.  Locked.  Returns false
 * when it is not wanted (any more): the caller closes it, unlocked. */
static bool pool_add_ready(dbswap_pool *p, PGconn *conn, uint64_t value)
{
	bool wanted = value == p->cur.serial ||
		      (p->next.serial && value == p->next.serial);
	struct pconn *pc = p->spare;

	if (pc)
		p->spare = pc->next;
	else if ((pc = zalloc_lines(sizeof(*pc))))
		pc->shut_fd = -1;
	if (!pc || !wanted || idle_reserve(p) < 0) {
		/* For a value given up meanwhile: close it. */
		if (pc) {
			pc->next = p->spare;
			p->spare = pc;
		}
		return false;
	}
	if (!PQregisterEventProc(conn, pconn_event, "libdbswap pool", pc)) {
		pc->next = p->spare;
		p->spare = pc;
		return false;
	}
	pc->in_use = false;
	pc->ran = pc->dirty = false;
	pc->drain_at = 0;
	pc->abandoned = false;
	atomic_store(&pc->word, ++p->tags << 1);
	pc->conn = conn;
	pc->shut_fd = fcntl(PQsocket(conn), F_DUPFD_CLOEXEC, 0);
	pc->value = value;
	pc->created_ms = pc->idle_since = now_ms();
	pc->expires_ms = INT64_MAX;
	if (p->cfg.max_lifetime_ms >= 0)
		pc->expires_ms = pc->created_ms + p->cfg.max_lifetime_ms -
				 (p->cfg.lifetime_jitter_ms > 0
					  ? pool_random(p, MIN(p->cfg.lifetime_jitter_ms,
							       p->cfg.max_lifetime_ms) + 1)
					  : 0);
	pc->next = p->conns;
	p->conns = pc;
	p->n_open++;
	p->opened++;
	if (value == p->cur.serial) {
		idle_push(p, pc);
		if (p->cur_failures > 0)
			pool_log(p, LOG_NOTICE, "%s: connections open again, "
				 "after %u failed attempt(s)", p->target,
				 p->cur_failures);
		p->timeout_said[0] = '\0';
		p->connect_error[0] = '\0';
		p->cur_failures = 0;
		p->cur_retry_at = 0;
		pthread_cond_signal(&p->changed);
	} else {
		p->n_ready_next++;
	}
	return true;
}

/* Makes next the current value.  Locked; old idle connections go to
 * *to_close.  With now (a failover), old busy ones do not drain: their
 * socket is shut down, so that a query blocked on a dead or hung server
 * fails at once; they are closed on release.  Returns how many were shut
 * down. */
static int pool_switch(dbswap_pool *p, struct pconn **to_close, bool now)
{
	int n_shut = 0;

	value_clear(&p->cur);
	p->cur = p->next;
	p->next = (struct value){ 0 };
	atomic_store(&p->cur_serial, p->cur.serial);
	p->from_env = false;
	p->switches++;
	/* The old value's failures say nothing about this one: its first
	 * connections must not wait for the old one's backoff. */
	p->connect_error[0] = '\0';
	p->cur_failures = 0;
	p->cur_retry_at = 0;
	/* Idle connections of any older value go now, parked ones too.  A
	 * thread that parks one after this finds cur_serial changed and
	 * never takes it back. */
	for (struct pconn **pp = &p->conns; *pp;) {
		struct pconn *pc = *pp;
		if (pc->value != p->cur.serial && pc->in_use &&
		    pc_unpark(p, pc)) {
			pc->in_use = false;
			pool_lent_less(p);
		}
		if (pc->value != p->cur.serial && !pc->in_use) {
			*pp = pc->next;
			p->n_open--;
			count_closed(p, CLOSE_REPLACED);
			pc->next = *to_close;
			*to_close = pc;
			continue;
		}
		/* Busy on an old value: drains until its deadline, unless the
		 * server is gone (now): then it is shut down at once. */
		if (pc->value != p->cur.serial && !pc->drain_at)
			pc->drain_at = now_ms() + p->cfg.drain_timeout_ms;
		if (now && pc->value != p->cur.serial && !pc->abandoned)
			n_shut += pconn_abandon(pc);
		pp = &pc->next;
	}
	pool_recount(p);
	pthread_cond_broadcast(&p->changed);
	if (!now)
		pool_log(p, LOG_INFO, "%s: switched to generation %llu%s; %d "
				      "busy connection(s) on the old value "
				      "close when released",
			 p->target, (unsigned long long)p->cur.generation,
			 p->cur.standby ? " (a read-only standby)" : "",
			 p->n_old);
	return n_shut;
}

/* Switches to next at once (a failover, or a server back after none was
 * available).  Locked; old idle connections are left for the pool thread
 * to close. */
static void pool_failover(dbswap_pool *p, const char *reason)
{
	bool was_unavailable = p->cur.unavailable;
	int n_shut = pool_switch(p, &p->dead, true);
	const char *server = p->cur.server ? p->cur.server : "primary";
	unsigned long long gen = p->cur.generation;

	if (p->cur.unavailable)
		pool_log(p, LOG_ERR, "%s: no database server is available "
				     "(the agent reports the primary and the "
				     "secondary down); acquires fail at once "
				     "until one is back",
			 p->target);
	else if (was_unavailable)
		pool_log(p, LOG_NOTICE, "%s: a database server is back: the "
					"%s%s (generation %llu, %s); opening "
					"connections",
			 p->target, server,
			 p->cur.standby ? ", a read-only standby" : "", gen,
			 reason);
	else
		pool_log(p, LOG_WARNING, "%s: %s to the %s%s (generation "
					 "%llu): %d busy connection(s) on the "
					 "old server shut down; acquires wait "
					 "for new connections",
			 p->target, reason, server,
			 p->cur.standby ? ", a read-only standby" : "", gen,
			 n_shut);
}

/* Decides what to open, close and switch.  Locked.  Returns the next time
 * it needs to run (ms, now_ms() clock) or -1. */
static int64_t pool_plan(dbswap_pool *p, struct pconn **to_close)
{
	int64_t now = now_ms(), next_run = -1;
	int want, have;

#define RUN_AT(t) (next_run = next_run < 0 ? (t) : MIN(next_run, (t)))

	/* Idle connections a failover took out, closed by this thread. */
	*to_close = p->dead;
	p->dead = NULL;

	/* No value yet: the environment's, once the agent is clearly not
	 * there. */
	if (!p->cur.conninfo && !p->next.conninfo) {
		int err = client_agent_error(p->client);
		const char *env = getenv(p->target);
		if (err != 0 && err != -EINPROGRESS && env && *env &&
		    now - p->created_ms >= POOL_AGENT_GRACE_MS) {
			p->cur.conninfo = strdup(env);
			p->cur.serial = ++p->serials;
			atomic_store(&p->cur_serial, p->cur.serial);
			p->from_env = true;
			if (!p->warned_no_agent)
				pool_log(p, LOG_NOTICE,
					 "no agent at %s (%s); using $%s from "
					 "the environment",
					 client_socket_path(p->client),
					 strerror(-err), p->target);
			p->warned_no_agent = true;
		} else if (now - p->created_ms < POOL_AGENT_GRACE_MS) {
			RUN_AT(p->created_ms + POOL_AGENT_GRACE_MS);
		}
	}

	/* Switching: open as many with the new value as are open now. */
	if (p->next.conninfo && !p->next_given_up && !p->closing) {
		int open_cur = p->n_open - p->n_old - p->n_ready_next;
		int inflight = 0;
		want = MAX(MAX(open_cur, p->cfg.min_size), 1);
		want = MIN(want, p->cfg.max_size);
		for (int i = 0; i < p->n_connecting; i++)
			inflight += p->connecting[i].value == p->next.serial;
		if (p->n_ready_next >= want ||
		    (p->n_ready_next > 0 && now >= p->next_deadline)) {
			pool_switch(p, to_close, false);
		} else if (now >= p->next_retry_at) {
			/* Each round of attempts gets its own deadline. */
			if (inflight == 0)
				p->next_deadline =
					now + p->cfg.connect_timeout_ms;
			/* Leave room for the current value's attempts: it must
			 * keep serving while the new one hangs. */
			while (p->n_ready_next + inflight < want &&
			       p->n_connecting < POOL_CONNECTING_MAX / 2 &&
			       pool_start_connect(p, &p->next) == 0)
				inflight++;
			RUN_AT(p->next_deadline);
		} else {
			RUN_AT(p->next_retry_at);
		}
	}

	/* The current value: keep min open, and one more per waiter.  None
	 * while no server is available. */
	if (p->cur.conninfo && !p->cur.unavailable && !p->closing) {
		int inflight = 0;
		for (int i = 0; i < p->n_connecting; i++)
			inflight += p->connecting[i].value == p->cur.serial;
		have = p->n_open - p->n_old - p->n_ready_next + inflight;
		int64_t retry_at = p->cur_retry_at;
		if (p->waiting > 0 || p->demand > 0)
			retry_at = MIN(retry_at,
				       p->cur_failed_at + POOL_RETRY_WAITING_MS);
		want = MAX(p->cfg.min_size,
			   p->n_in_use + p->waiting + p->demand - p->n_old);
		p->demand = 0;
		want = MIN(want, p->cfg.max_size);
		if (now < retry_at)
			RUN_AT(retry_at);
		else
			while (have < want &&
			       pool_start_connect(p, &p->cur) == 0)
				have++;
	}

	/* Parked too long: back to the shared stack, where the idle timeout
	 * applies.  Parked on an old value (across a switch): closed below
	 * now, so that the ack does not wait.  Without a parked one to watch,
	 * the next thread to park wakes this one (park_watch): a connection
	 * parked while it sleeps would otherwise stay parked until whatever
	 * wakes it next, past the idle timeout. */
	if (!atomic_load(&p->park_watch))
		atomic_store(&p->park_watch, true);
	if (atomic_load(&p->n_parked) > 0) {
		for (struct pconn *pc = p->conns; pc; pc = pc->next) {
			int64_t since;
			/* The park bit first: a park under way stores since
			 * before it sets the bit. */
			if (!pc->in_use || !(atomic_load(&pc->word) & 1))
				continue;
			since = atomic_load(&pc->parked_since);
			if (pc->value == p->cur.serial &&
			    now - since < POOL_PARK_MAX_MS) {
				RUN_AT(since + POOL_PARK_MAX_MS);
				if (atomic_load(&p->park_watch))
					atomic_store(&p->park_watch, false);
				continue;
			}
			if (!pc_unpark(p, pc))
				continue;
			pc->in_use = false;
			pc->idle_since = since;
			pool_lent_less(p);
			if (pc->value == p->cur.serial)
				idle_push(p, pc);
		}
	}

	/* Idle beyond min, past their lifetime while idle, or of a value
	 * that is neither current nor coming (a switch abandoned). */
	for (struct pconn **pp = &p->conns; *pp;) {
		struct pconn *pc = *pp;
		bool idle = pc->value == p->cur.serial && !pc->in_use;
		bool is_next = p->next.serial && pc->value == p->next.serial;
		bool stale = !pc->in_use && pc->value != p->cur.serial &&
			     (!is_next || p->next_given_up || p->closing);
		int64_t idle_end = pc->idle_since + p->cfg.idle_timeout_ms;
		/* Not while threads wait: they are about to take it. */
		bool idle_end_hit = idle && p->cfg.idle_timeout_ms >= 0 &&
				    now >= idle_end && p->waiting == 0 &&
				    p->n_open - p->n_old > p->cfg.min_size;
		bool expired = idle && (idle_end_hit || p->closing ||
					now >= pc->expires_ms);
		if (expired || stale) {
			*pp = pc->next;
			p->n_open--;
			if (expired)
				idle_remove(p, pc);
			else if (is_next)
				p->n_ready_next--;
			else
				p->n_old--;
			count_closed(p, p->closing ? CLOSE_SHUTDOWN
				       : !expired ? CLOSE_REPLACED
				       : idle_end_hit ? CLOSE_IDLE
						      : CLOSE_LIFETIME);
			pc->next = *to_close;
			*to_close = pc;
			continue;
		}
		if (idle && p->cfg.idle_timeout_ms >= 0)
			RUN_AT(idle_end);
		if (idle && pc->expires_ms < INT64_MAX)
			RUN_AT(pc->expires_ms);
		pp = &pc->next;
	}

	/* The drain deadline of each switch: old connections still busy
	 * lose their socket, so that their query fails now and they are
	 * closed on release. */
	if (p->n_old > p->n_abandoned) {
		int n = 0;
		for (struct pconn *pc = p->conns; pc; pc = pc->next) {
			if (pc->value == p->cur.serial || !pc->in_use ||
			    pc->abandoned || !pc->drain_at)
				continue;
			if (now >= pc->drain_at)
				n += pconn_abandon(pc);
			else
				RUN_AT(pc->drain_at);
		}
		p->n_abandoned += n;
		if (n > 0)
			pool_log(p, LOG_WARNING,
				 "%s: %d connection(s) on an old value still "
				 "in use after the %d ms drain deadline; shut "
				 "down (closed when released)",
				 p->target, n, p->cfg.drain_timeout_ms);
	}

	/* Nothing of an older value left but connections shut down (they
	 * hold no session): the switch is complete. */
	if (p->cur.conninfo && !p->from_env && p->n_old == p->n_abandoned &&
	    p->acked != p->cur.serial && p->cur.generation > 0) {
		p->acked = p->cur.serial;
		dbswap_ack_instance(p->client, p->target,
				    p->cur.instance[0] ? p->cur.instance : NULL,
				    p->cur.generation);
	}
	for (int i = 0; i < p->n_connecting; i++)
		RUN_AT(p->connecting[i].deadline);
	return next_run;
#undef RUN_AT
}

/* Takes the results of the unlocked steps: ready connections join the
 * pool, failed and expired attempts are recorded.  Locked.  Connections to
 * close are left in finish[] (room for POOL_CONNECTING_MAX). */
static int pool_collect_connects(dbswap_pool *p, PGconn **finish)
{
	int64_t now = now_ms();
	int n_finish = 0;

	for (int i = 0; i < p->n_connecting;) {
		struct connecting *cn = &p->connecting[i];
		bool wanted = cn->value == p->cur.serial ||
			      (p->next.serial && cn->value == p->next.serial);

		if (!wanted) {
			/* For a value left behind (a failover): one to a dead
			 * server would hold its slot until the deadline. */
			free_secret(cn->conninfo);
			if (cn->conn)
				finish[n_finish++] = cn->conn;
		} else if (!cn->conn && cn->conninfo) { /* not started yet */
			i++;
			continue;
		} else if (cn->want == PGRES_POLLING_OK) {
			if (!pool_add_ready(p, cn->conn, cn->value))
				finish[n_finish++] = cn->conn;
		} else if (cn->want == PGRES_POLLING_FAILED) {
			pool_connect_failed(p, cn->value,
					    !cn->conn ? "out of memory"
					    : cn->why && *cn->why ? cn->why
					    : PQerrorMessage(cn->conn));
			if (cn->conn)
				finish[n_finish++] = cn->conn;
		} else if (now >= cn->deadline) {
			char msg[128];
			snprintf(msg, sizeof(msg), "no connection within %d ms",
				 p->cfg.connect_timeout_ms);
			pool_connect_failed(p, cn->value, msg);
			finish[n_finish++] = cn->conn;
		} else {
			i++;
			continue;
		}
		*cn = p->connecting[--p->n_connecting];
	}
	return n_finish;
}

static void *pool_main(void *data)
{
	dbswap_pool *p = data;
	struct pollfd fds[POOL_CONNECTING_MAX + 1];
	int slot[POOL_CONNECTING_MAX];
	PGconn *finish[POOL_CONNECTING_MAX];

	pthread_mutex_lock(&p->lock);
	while (!atomic_load(&p->stopping)) {
		struct pconn *to_close = NULL;
		int64_t next = pool_plan(p, &to_close), timeout;
		int nfds = 0, n_finish, n = p->n_connecting;

		pool_unlock(p);
		close_list(p, to_close);
		/* Start queued attempts; libpq may block here, unlocked. */
		connecting_advance(p, p->connecting, n, NULL, NULL, 0);
		fds[0] = (struct pollfd){ .fd = p->wakefd, .events = POLLIN };
		for (int i = 0; i < n; i++) {
			struct connecting *cn = &p->connecting[i];
			if (!cn->conn || cn->want == PGRES_POLLING_FAILED ||
			    cn->want == PGRES_POLLING_OK)
				continue;
			slot[nfds] = i;
			fds[1 + nfds++] = (struct pollfd){
				.fd = PQsocket(cn->conn),
				.events = cn->want == PGRES_POLLING_READING
						  ? POLLIN
						  : POLLOUT,
			};
		}
		/* An attempt that failed at its start needs no waiting. */
		timeout = next < 0 ? -1 : MAX(next - now_ms(), 0);
		for (int i = 0; i < n; i++)
			if (p->connecting[i].want == PGRES_POLLING_FAILED)
				timeout = 0;
		poll(fds, (nfds_t)nfds + 1, (int)MIN(timeout, 60000));
		if (fds[0].revents) {
			uint64_t count;
			(void)!read(p->wakefd, &count, sizeof(count));
		}
		connecting_advance(p, p->connecting, n, fds + 1, slot, nfds);
		pthread_mutex_lock(&p->lock);
		n_finish = pool_collect_connects(p, finish);
		if (n_finish > 0) {
			pool_unlock(p);
			for (int i = 0; i < n_finish; i++)
				PQfinish(finish[i]);
			pthread_mutex_lock(&p->lock);
		}
	}
	pool_unlock(p);
	return NULL;
}

/* Callbacks from the client's thread */

/* Makes a new value the one to switch to.  Locked. */
static void pool_set_next(dbswap_pool *p, const char *conninfo,
			  const char *server, bool standby, uint64_t gen,
			  const char *instance)
{
	value_clear(&p->next);
	p->next.conninfo = strdup(conninfo);
	p->next.server = strdup(server);
	p->next.standby = standby;
	p->next.unavailable = streq(server, "none");
	p->next.generation = gen;
	value_set_instance(&p->next, instance);
	p->next.serial = ++p->serials;
	p->next_failures = p->next_auth_failures = 0;
	p->next_given_up = false;
	p->next_retry_at = 0;
	p->next_deadline = 0;
	p->next_error[0] = '\0';
	if (!p->next.conninfo || !p->next.server) {
		value_clear(&p->next);
		pool_log(p, LOG_ERR, "%s: out of memory", p->target);
	}
	pool_recount(p);
}

static void pool_on_update(const dbswap_update *u, void *data)
{
	dbswap_pool *p = data;
	const char *conninfo = dbswap_update_conninfo(u);
	const char *reason = dbswap_update_reason(u);
	const char *server = dbswap_update_server(u);
	bool standby = dbswap_update_standby(u);
	/* A reconnect is the same value on purpose: new connections. */
	bool reconnect = streq(reason, "reconnect");
	uint64_t gen = dbswap_update_generation(u);
	const char *instance = dbswap_update_instance(u);

	pthread_mutex_lock(&p->lock);
	if (!reconnect && value_is(&p->cur, conninfo, server, standby)) {
		/* The value in use, renumbered (an agent restart): keep the
		 * connections, ack the new number of the new instance. */
		p->cur.generation = gen;
		value_set_instance(&p->cur, instance);
		if (p->from_env) {
			p->from_env = false;
			pool_log(p, LOG_NOTICE, "%s: the agent is here; it has "
						"the same value as the "
						"environment", p->target);
		}
		p->acked = 0;
		if (p->next.conninfo) {
			/* Back to the current value: drop the pending one. */
			value_clear(&p->next);
			pool_recount(p);
		}
	} else if (!reconnect && value_is(&p->next, conninfo, server,
					  standby)) {
		p->next.generation = gen;
		value_set_instance(&p->next, instance);
	} else {
		pool_set_next(p, conninfo, server, standby, gen, instance);
		if (p->from_env)
			pool_log(p, LOG_NOTICE, "%s: the agent is here; "
						"switching from the "
						"environment's value to "
						"generation %llu",
				 p->target, (unsigned long long)gen);
	}
	/* The old server is dead or hung: waiting for connections to the
	 * new one before switching would only prolong the outage.  With no
	 * server in use, there is nothing to keep serving meanwhile. */
	if (p->next.conninfo &&
	    (streq(reason, "failover") || streq(reason, "unavailable") ||
	     p->next.unavailable || p->cur.unavailable))
		pool_failover(p, reason);
	pool_unlock(p);
	pool_wake(p);
}

static void pool_on_settings(const struct client_settings *s, void *data)
{
	dbswap_pool *p = data;

	pthread_mutex_lock(&p->lock);
	p->env = *s;
	pool_configure(p, false);
	pthread_cond_broadcast(&p->changed);
	pool_unlock(p);
	pool_wake(p);
}

/* The agent refuses the target (or accepts it again, err 0).  With a
 * value in force the pool keeps serving on it; without one, acquires fail
 * at once with the refusal's errno. */
static void pool_on_refused(int err, const char *message, void *data)
{
	dbswap_pool *p = data;

	pthread_mutex_lock(&p->lock);
	if (-err != p->refused) {
		p->refused = -err;
		if (err == 0)
			pool_log(p, LOG_NOTICE, "%s: the agent accepts the "
				 "target again", p->target);
		else
			pool_log(p, LOG_ERR, "%s: the agent refuses the "
				 "target (%s); %s", p->target, message,
				 p->cur.conninfo
					 ? "staying on the value in force"
					 : "acquires fail at once");
		pthread_cond_broadcast(&p->changed);
	}
	pool_unlock(p);
}

/* API */

static bool config_valid(const dbswap_pool_config *c)
{
#define AT_LEAST(f, lo) (c->f == DBSWAP_POOL_DEFAULT || c->f >= (lo))
	return AT_LEAST(min_size, 0) && AT_LEAST(max_size, 1) &&
	       (c->min_size == DBSWAP_POOL_DEFAULT ||
		c->max_size == DBSWAP_POOL_DEFAULT ||
		c->min_size <= c->max_size) &&
	       AT_LEAST(acquire_timeout_ms, 0) &&
	       AT_LEAST(idle_timeout_ms, -1) && AT_LEAST(max_lifetime_ms, -1) &&
	       AT_LEAST(lifetime_jitter_ms, 0) &&
	       AT_LEAST(connect_timeout_ms, 1) &&
	       AT_LEAST(drain_timeout_ms, 0) && AT_LEAST(idle_check_ms, -1) &&
	       AT_LEAST(keepalive_ms, 0) &&
	       (c->reset_always == DBSWAP_POOL_DEFAULT ||
		c->reset_always == 0 || c->reset_always == 1);
#undef AT_LEAST
}

/* The most a struct_size can be: beyond it, it is garbage (a struct not
 * made with its _INIT macro), and nothing is written. */
#define STRUCT_SIZE_MAX 4096

/* Whether a struct_size from the program can be one: at least the size
 * field and the first after it, at most STRUCT_SIZE_MAX, and a multiple
 * of the alignment, as sizeof() is. */
static bool struct_size_ok(size_t size, size_t first_end, size_t align)
{
	return size >= first_end && size <= STRUCT_SIZE_MAX &&
	       size % align == 0;
}

/* The app's config as this library's struct: the fields beyond the app's
 * struct_size take their defaults; bytes beyond ours must be zero (a
 * newer header's fields this library cannot honour).  The strings are
 * copied.  Returns 0 or a positive errno. */
static int config_import(dbswap_pool_config *out,
			 const dbswap_pool_config *in)
{
	*out = (dbswap_pool_config)DBSWAP_POOL_CONFIG_INIT;
	if (!in)
		return 0;
	if (!struct_size_ok(in->struct_size,
			    offsetof(dbswap_pool_config, min_size) + sizeof(int),
			    _Alignof(dbswap_pool_config)))
		return EINVAL;
	/* A newer header's fields: left at their _INIT values (zero, or
	 * DBSWAP_POOL_DEFAULT for an int) they ask for nothing this library
	 * cannot do. */
	for (size_t i = sizeof(*out); i < in->struct_size; i += sizeof(int)) {
		int v;
		memcpy(&v, (const char *)in + i, sizeof(v));
		if (v != 0 && v != DBSWAP_POOL_DEFAULT)
			return EINVAL;
	}
	memcpy(out, in, MIN(in->struct_size, sizeof(*out)));
	out->struct_size = sizeof(*out);
	if (!config_valid(out))
		return EINVAL;
	if (out->reset_query && !(out->reset_query = strdup(out->reset_query)))
		return ENOMEM;
	if (out->init_query && !(out->init_query = strdup(out->init_query))) {
		free((char *)out->reset_query);
		return ENOMEM;
	}
	return 0;
}

/* The default versions of dbswap_pool_new() and dbswap_pool_stats_get():
 * defined under other names, so that the version 0.1 ones (at the end of
 * this file) can keep the public names for programs built against them. */
DBSWAP_EXPORT
dbswap_pool *pool_new_v04(dbswap_client *client, const char *target,
			  const dbswap_pool_config *config);
DBSWAP_EXPORT
int pool_stats_get_v04(dbswap_pool *p, dbswap_pool_stats *s);
SYMVER(pool_new_v04, "dbswap_pool_new@@DBSWAP_0.4");
SYMVER(pool_stats_get_v04, "dbswap_pool_stats_get@@DBSWAP_0.4");

dbswap_pool *pool_new_v04(dbswap_client *client, const char *target,
			  const dbswap_pool_config *config)
{
	dbswap_pool_config app;
	dbswap_pool *p;
	int r;

	if (!client || !target) {
		errno = EINVAL;
		return NULL;
	}
	r = config_import(&app, config);
	if (r != 0) {
		errno = r;
		return NULL;
	}
	p = zalloc_lines(sizeof(*p));
	if (!p) {
		free((char *)app.reset_query);
		free((char *)app.init_query);
		return NULL;
	}
	/* Critical sections are a few pointer moves: spin a little before
	 * sleeping, as the holder is likely running on another core. */
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&p->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->changed, &ca);
	pthread_condattr_destroy(&ca);
	p->client = client;
	p->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	p->target = strdup(target);
	p->env = (struct client_settings){ -1, -1, -1, -1 };
	p->created_ms = now_ms();
	p->id = atomic_fetch_add(&pool_ids, 1) + 1;
	p->epoch = client_fork_epoch();
	p->app = app;
	pool_configure(p, true);
	snprintf(p->ka_idle, sizeof(p->ka_idle), "%lld",
		 (long long)MAX(((int64_t)p->cfg.keepalive_ms + 999) / 1000, 1));
	snprintf(p->ka_interval, sizeof(p->ka_interval), "%lld",
		 (long long)MAX(((int64_t)p->cfg.keepalive_ms + 2999) / 3000, 1));
	p->rng = (uint64_t)now_ms() * 0x9e3779b97f4a7c15ULL ^ p->id ^
		 (uint64_t)getpid() << 32;
	if (p->rng == 0)
		p->rng = 1;
	if (p->wakefd < 0 || !p->target) {
		r = p->wakefd < 0 ? errno : ENOMEM;
		goto err_pool;
	}
	r = -client_subscribe_pool(client, target, pool_on_update,
				   pool_on_settings, pool_on_refused, p);
	if (r != 0)
		goto err_pool;
	r = -dbswap_client_start(client);
	if (r != 0 && r != EALREADY)
		goto err_sub;
	r = pthread_create(&p->thread, NULL, pool_main, p);
	if (r != 0)
		goto err_sub;
	return p;

err_sub:
	client_unsubscribe(client, target);
	value_clear(&p->cur);
	value_clear(&p->next);
err_pool:
	if (p->wakefd >= 0)
		close(p->wakefd);
	free(p->target);
	free((char *)p->app.reset_query);
	free((char *)p->app.init_query);
	pthread_cond_destroy(&p->changed);
	pthread_mutex_destroy(&p->lock);
	free(p);
	errno = r;
	return NULL;
}

/* Frees, without a word to anyone, a connection the parent of this
 * process opened: PQfinish() would end the parent's session (and shut a
 * TLS one down), so what it writes goes to /dev/null instead.  Without
 * /dev/null the memory is left. */
static void conn_forget(PGconn *conn, int null)
{
	if (!conn)
		return;
	if (null < 0 || (PQsocket(conn) >= 0 && dup2(null, PQsocket(conn)) < 0))
		return;
	PQfinish(conn);
}

/* dbswap_pool_free() in a child of the process that made the pool: the
 * pool thread is the parent's, its lock may be held for ever, its
 * connections are the parent's sessions.  Only memory is freed, and the
 * child's copies of descriptors closed. */
static void pool_free_foreign(dbswap_pool *p)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	struct pconn *lists[] = { p->conns, p->dead, p->spare };

	for (size_t l = 0; l < ARRAY_SIZE(lists); l++) {
		while (lists[l]) {
			struct pconn *pc = lists[l];
			lists[l] = pc->next;
			conn_forget(pc->conn, null);
			if (pc->shut_fd >= 0)
				close(pc->shut_fd);
			free(pc);
		}
	}
	for (int i = 0; i < p->n_connecting; i++) {
		conn_forget(p->connecting[i].conn, null);
		free_secret(p->connecting[i].conninfo);
	}
	if (null >= 0)
		close(null);
	value_clear(&p->cur);
	value_clear(&p->next);
	free(p->idle);
	close(p->wakefd);
	free(p->target);
	free((char *)p->app.reset_query);
	free((char *)p->app.init_query);
	free(p);
}

DBSWAP_EXPORT
void dbswap_pool_free(dbswap_pool *p)
{
	struct pconn *all;

	if (!p)
		return;
	if (client_forked(p->epoch)) {
		pool_free_foreign(p);
		return;
	}
	/* No callback may run on a freed pool. */
	client_unsubscribe(p->client, p->target);
	pthread_mutex_lock(&p->lock);
	p->closing = true;
	p->stopping = true;
	pthread_cond_broadcast(&p->changed);
	pool_unlock(p);
	/* Threads waiting in acquire wake, fail with ECANCELED and leave
	 * before anything is freed. */
	for (int i = 0; i < POOL_STRIPES; i++)
		while (atomic_load(&p->inside[i].n) > 0)
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 },
				  NULL);
	pool_wake(p);
	pthread_join(p->thread, NULL);

	for (int i = 0; i < p->n_connecting; i++) {
		if (p->connecting[i].conn)
			PQfinish(p->connecting[i].conn);
		free_secret(p->connecting[i].conninfo);
	}
	all = p->conns;
	p->conns = NULL;
	close_list(p, all);
	all = p->dead;
	p->dead = NULL;
	close_list(p, all);
	while (p->spare) {
		struct pconn *pc = p->spare;
		p->spare = pc->next;
		free(pc);
	}
	value_clear(&p->cur);
	value_clear(&p->next);
	free(p->idle);
	close(p->wakefd);
	free(p->target);
	free((char *)p->app.reset_query);
	free((char *)p->app.init_query);
	pthread_cond_destroy(&p->changed);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* Takes an idle connection of the current value, else steals a parked
 * one.  Locked.  An old parked connection met on the way is unlinked, left
 * in *to_close, and *again set: look again. */
static struct pconn *pool_take_idle(dbswap_pool *p, struct pconn **to_close,
				    bool *again)
{
	struct pconn *pc;

	*again = false;
	if (p->n_idle > 0) {
		pc = p->idle[--p->n_idle];
		pc->in_use = true;
		p->n_in_use++;
		return pc;
	}
	if (atomic_load(&p->n_parked) == 0)
		return NULL;
	for (pc = p->conns; pc; pc = pc->next) {
		if (!pc->in_use || !pc_unpark(p, pc))
			continue;
		if (pc->value == p->cur.serial) {
			/* Still in use, now lent to this thread: the parker's
			 * slot must not release it again. */
			pconn_retag(p, pc);
			pc->idle_since = atomic_load(&pc->parked_since);
			return pc;
		}
		pool_unlink(p, pc, CLOSE_REPLACED);
		pc->next = *to_close;
		*to_close = pc;
		*again = true;
		return NULL;
	}
	return NULL;
}

static bool status_ok(ExecStatusType st, ExecStatusType want)
{
	/* A command may also be a SELECT (pg_advisory_unlock_all()). */
	return st == want || (want == PGRES_COMMAND_OK && st == PGRES_TUPLES_OK);
}

/* Runs sql on conn and reads every result, waiting at most timeout_ms in
 * all: a hung server must not hold the app's thread (PQexec() waits for
 * ever).  True when each result had status want.  After false the
 * connection is unusable: the caller closes it. */
static bool conn_exec_bounded(PGconn *conn, const char *sql,
			      ExecStatusType want, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	bool ok = true;

	if (!PQsendQuery(conn, sql))
		return false;
	for (;;) {
		struct pollfd pfd = { .fd = PQsocket(conn), .events = POLLIN };
		int64_t left;
		int r;

		while (!PQisBusy(conn)) {
			PGresult *res = PQgetResult(conn);
			if (!res)
				return ok && PQstatus(conn) == CONNECTION_OK;
			ok &= status_ok(PQresultStatus(res), want);
			PQclear(res);
		}
		left = deadline - now_ms();
		if (left <= 0 || pfd.fd < 0)
			return false;
		r = poll(&pfd, 1, (int)MIN(left, INT32_MAX));
		if ((r < 0 && errno != EINTR) || (r > 0 && !PQconsumeInput(conn)))
			return false;
	}
}

/* A coarse clock (a few ms) for the lock-free paths, cheaper than
 * now_ms(): it only compares against idle and lifetime limits. */
static int64_t now_coarse_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether a connection idle since since gets the idle check's round
 * trip before it is handed out. */
static bool idle_check_due(const dbswap_pool *p, int64_t since)
{
	int check = p->cfg.idle_check_ms;

	return check == 0 || (check > 0 && now_coarse_ms() - since >= check);
}

/* Whether it needs any work before it is handed out: that round trip, or
 * the before_acquire hook. */
static bool handout_due(const dbswap_pool *p, int64_t since)
{
	return p->cfg.before_acquire || idle_check_due(p, since);
}

/* That work, unlocked, in the thread the connection is lent to.  False:
 * the connection must be closed. */
static bool conn_handout(const dbswap_pool *p, PGconn *conn, int64_t since)
{
	const dbswap_pool_config *c = &p->cfg;

	if (idle_check_due(p, since) &&
	    !conn_exec_bounded(conn, "", PGRES_EMPTY_QUERY,
			       c->connect_timeout_ms))
		return false;
	return !c->before_acquire || c->before_acquire(conn, c->hook_data) == 0;
}

/* Closes a connection lent to this thread, for cause.  Unlocked. */
static void pool_drop(dbswap_pool *p, struct pconn *pc,
		      enum close_cause cause)
{
	pthread_mutex_lock(&p->lock);
	pool_unlink(p, pc, cause);
	if (atomic_load(&p->closing))
		pthread_cond_broadcast(&p->changed);
	pool_unlock(p);
	/* The pool thread replaces it as needed, and acks when the last
	 * old one is gone. */
	pool_wake(p);
	pc->next = NULL;
	close_list(p, pc);
}

static void park_slot_set(dbswap_pool *p, struct pconn *pc)
{
	park_slot = (struct park_slot){
		.pool_id = p->id,
		.pc = pc,
		.conn = pc->conn,
		.tag = atomic_load(&pc->word) >> 1,
	};
}

/* The fast path: takes back the connection this thread parked, if it is
 * still parked.  Atomics only. */
static struct pconn *pool_take_parked(dbswap_pool *p)
{
	struct park_slot *ps = &park_slot;
	uint64_t w;

	if (ps->pool_id != p->id || !ps->pc || atomic_load(&p->closing))
		return NULL;
	w = ps->tag << 1 | 1;
	if (!atomic_compare_exchange_strong(&ps->pc->word, &w, ps->tag << 1))
		return NULL;
	atomic_fetch_sub(&p->n_parked, 1);
	return ps->pc;
}

/* The rest, for a connection taken back that needs more than that: one
 * on an old value (parked just before a switch), or in a pool closing,
 * is closed; one due for the idle check or the before_acquire hook gets
 * it, and is closed if a switch or a close came meanwhile. */
static PGconn *pool_finish_parked(dbswap_pool *p, struct pconn *pc)
{
	int64_t since = atomic_load(&pc->parked_since);

	if (pc->value == atomic_load(&p->cur_serial) &&
	    !atomic_load(&p->closing) &&
	    (!handout_due(p, since) || conn_handout(p, pc->conn, since)) &&
	    pc->value == atomic_load(&p->cur_serial) &&
	    !atomic_load(&p->closing)) {
		pc->ran = pc->dirty = false; /* the hook's queries */
		atomic_fetch_add_explicit(&p->acquired, 1,
					  memory_order_relaxed);
		return pc->conn;
	}
	pool_drop(p, pc, atomic_load(&p->closing) ? CLOSE_SHUTDOWN
		  : pc->value != atomic_load(&p->cur_serial)
			  ? CLOSE_REPLACED
			  : CLOSE_BROKEN);
	return NULL;
}

/* Counts an acquire that waited since start (now_us()).  Locked. */
static void pool_count_wait(dbswap_pool *p, int64_t start)
{
	uint64_t us;

	if (!start)
		return;
	us = (uint64_t)(now_us() - start);
	p->waits++;
	p->wait_us += us;
	p->wait_max_us = MAX(p->wait_max_us, us);
}

/* Acquire with the lock: idle connections, stolen parked ones, waiting.
 * It touches nothing of the pool after it returns. */
static PGconn *pool_acquire_slow(dbswap_pool *p, int timeout_ms)
{
	struct pconn *pc, *to_close = NULL;
	struct timespec until;
	int64_t deadline, wait_start = 0;
	bool known, again, noserver, down = false;
	int refused = 0;
	const char *why;

	pthread_mutex_lock(&p->lock);
	if (timeout_ms < 0)
		timeout_ms = p->cfg.acquire_timeout_ms;
	deadline = now_ms() + timeout_ms;
	until = (struct timespec){ .tv_sec = deadline / 1000,
				   .tv_nsec = (deadline % 1000) * 1000000 };
	while (!atomic_load(&p->closing)) {
		/* No server available: fail now, waiters too (the switch woke
		 * them), rather than at the timeout. */
		if (p->cur.unavailable) {
			down = true;
			break;
		}
		/* Refused by the agent, and no value to serve on. */
		if (p->refused && !p->cur.conninfo) {
			refused = p->refused;
			break;
		}
		pc = pool_take_idle(p, &to_close, &again);
		if (again)
			continue;
		if (pc && handout_due(p, pc->idle_since)) {
			pool_unlock(p);
			bool ok = conn_handout(p, pc->conn, pc->idle_since);
			pc->ran = pc->dirty = false; /* the hook's queries */
			pthread_mutex_lock(&p->lock);
			/* A switch, or a close, may have come while the lock
			 * was dropped. */
			if (!ok || pc->value != p->cur.serial ||
			    atomic_load(&p->closing)) {
				pool_unlink(p, pc,
					    atomic_load(&p->closing)
						    ? CLOSE_SHUTDOWN
					    : !ok ? CLOSE_BROKEN
						  : CLOSE_REPLACED);
				pc->next = to_close;
				to_close = pc;
				continue;
			}
		}
		if (pc) {
			atomic_fetch_add_explicit(&p->acquired, 1,
						  memory_order_relaxed);
			park_slot_set(p, pc);
			p->timeout_said[0] = '\0';
			pool_count_wait(p, wait_start);
			pool_unlock(p);
			close_list(p, to_close);
			pool_wake(p); /* an old one may have gone: ack */
			return pc->conn;
		}
		if (now_ms() >= deadline)
			break;
		/* Announce the wait before the last look: a thread parking a
		 * connection checks for waiters after parking it, so one of
		 * the two sees the other. */
		atomic_fetch_add(&p->waiting, 1);
		pc = pool_take_idle(p, &to_close, &again);
		if (pc || again) {
			atomic_fetch_sub(&p->waiting, 1);
			if (pc) {
				pc->in_use = false; /* handed out above */
				pool_lent_less(p);
				idle_push(p, pc);
			}
			continue;
		}
		if (!wait_start)
			wait_start = now_us();
		pool_wake(p); /* the pool thread opens one more for us */
		pthread_cond_timedwait(&p->changed, &p->lock, &until);
		atomic_fetch_sub(&p->waiting, 1);
	}
	pool_count_wait(p, wait_start);
	if (atomic_load(&p->closing) || down || refused) {
		pool_unlock(p);
		close_list(p, to_close);
		pool_wake(p);
		errno = refused ? refused : down ? EHOSTDOWN : ECANCELED;
		return NULL;
	}
	p->timeouts++;
	p->demand++; /* an acquire that did not wait still asks for one */
	known = p->cur.conninfo || p->next.conninfo;
	/* No server: connections fail to open, or the first is not open
	 * yet.  Not the pool exhausted, which is the app's to size. */
	noserver = p->connect_error[0] || !p->cur.conninfo;
	why = p->connect_error[0] ? p->connect_error
	      : !p->cur.conninfo && p->next_error[0] ? p->next_error
	      : !p->cur.conninfo ? "the first connection is not open yet"
				 : "pool exhausted (all connections in use)";
	/* One line when acquires start timing out, and when the reason
	 * changes: not one per acquire. */
	if (known && !streq(why, p->timeout_said)) {
		pool_log(p, LOG_WARNING,
			 "%s: acquires time out (after %d ms): %s", p->target,
			 timeout_ms, why);
		snprintf(p->timeout_said, sizeof(p->timeout_said), "%s", why);
	}
	pool_unlock(p);
	close_list(p, to_close);
	pool_wake(p);
	errno = !known ? ENOENT : noserver ? ENOTCONN : ETIMEDOUT;
	return NULL;
}

DBSWAP_EXPORT
PGconn *dbswap_pool_acquire(dbswap_pool *p, int timeout_ms)
{
	struct pconn *pc;
	_Atomic int *inside;
	PGconn *conn;

	if (!p) {
		client_misuse(__func__, "the pool is NULL");
		errno = EINVAL;
		return NULL;
	}
	if (client_forked(p->epoch)) {
		errno = ECHILD;
		return NULL;
	}
	/* dbswap_pool_free() sets closing, then waits for every thread in
	 * here to leave; a thread counted in here before it looks at closing
	 * is seen by one, or sees it.  The decrement is this thread's last
	 * touch of the pool. */
	inside = &p->inside[thread_stripe()].n;
	atomic_fetch_add(inside, 1);
	pc = pool_take_parked(p);
	if (pc && pc->value == atomic_load(&p->cur_serial) &&
	    !handout_due(p, atomic_load(&pc->parked_since))) {
		atomic_fetch_add_explicit(&p->acquired, 1,
					  memory_order_relaxed);
		conn = pc->conn;
	} else {
		conn = pc ? pool_finish_parked(p, pc) : NULL;
		if (!conn)
			conn = pool_acquire_slow(p, timeout_ms);
	}
	atomic_fetch_sub(inside, 1);
	return conn;
}

/* The fast path: park a healthy connection of the current value in this
 * thread's slot.  Returns false when the slow path must run. */
static bool pool_release_parked(dbswap_pool *p, struct pconn *pc,
				int64_t now)
{
	struct park_slot *ps = &park_slot;

	/* Checked by the caller: not closing, on the current value, within
	 * its lifetime (now, coarse).  pc is ours until parked: its fields
	 * are stable. */
	if (atomic_load(&p->waiting) > 0)
		return false;
	atomic_store(&pc->parked_since, now);
	atomic_fetch_add(&p->n_parked, 1);
	/* A compare-and-swap, not a store: the slot may be stale (this
	 * thread got conn from another thread, at the address of a closed
	 * one); then the slow path finds the right struct. */
	uint64_t w = ps->tag << 1;
	if (!atomic_compare_exchange_strong(&pc->word, &w, ps->tag << 1 | 1)) {
		atomic_fetch_sub(&p->n_parked, 1);
		return false;
	}
	/* dbswap_pool_close() sets closing, then takes back what is parked:
	 * a park it did not see must see closing, and is undone (unless it
	 * took it back meanwhile: then it is given back). */
	if (atomic_load(&p->closing)) {
		w = ps->tag << 1 | 1;
		if (!atomic_compare_exchange_strong(&pc->word, &w,
						    ps->tag << 1))
			return true;
		atomic_fetch_sub(&p->n_parked, 1);
		return false;
	}
	/* A switch between the check above and the park: wake the pool
	 * thread, which takes it back and acks without waiting for the drain
	 * deadline.  Or the pool thread sleeps with no park to watch. */
	if (pc->value != atomic_load(&p->cur_serial) ||
	    (atomic_load(&p->park_watch) &&
	     atomic_exchange(&p->park_watch, false)))
		pool_wake(p);
	if (atomic_load(&p->waiting) > 0) {
		/* A waiter arrived meanwhile: it will find the parked one. */
		pthread_mutex_lock(&p->lock);
		pthread_cond_broadcast(&p->changed);
		pool_unlock(p);
	}
	return true;
}

/* Whether this thread's slot says conn was lent to it and not given
 * back since: then no other thread may touch it, and its release needs no
 * lock to be checked. */
static bool pool_lent_here(dbswap_pool *p, PGconn *conn)
{
	const struct park_slot *ps = &park_slot;

	return ps->pool_id == p->id && ps->conn == conn && ps->pc &&
	       atomic_load(&ps->pc->word) == ps->tag << 1;
}

static struct pconn *pool_find(dbswap_pool *p, PGconn *conn)
{
	struct pconn *pc;

	for (pc = p->conns; pc && pc->conn != conn; pc = pc->next)
		;
	return pc;
}

/* Ends what the app left on a connection: a transaction is rolled back;
 * session state is reset (reset_query, then init_query and after_connect
 * again) when the commands it ran can have left some, or with
 * reset_always when it ran anything; then the after_release hook.  Each
 * round trip waits at most the connect timeout.  Returns true when the
 * connection cannot be lent again. */
static bool conn_reset(dbswap_pool *p, struct pconn *pc)
{
	const dbswap_pool_config *c = &p->cfg;
	PGconn *conn = pc->conn;
	bool reset = *c->reset_query &&
		     (pc->dirty || (pc->ran && c->reset_always));

	switch (PQtransactionStatus(conn)) {
	case PQTRANS_IDLE:
		break;
	case PQTRANS_INTRANS:
	case PQTRANS_INERROR:
		if (!conn_exec_bounded(conn, "ROLLBACK", PGRES_COMMAND_OK,
				       c->connect_timeout_ms))
			return true;
		break;
	default: /* active (results not read) or unknown: start afresh */
		return true;
	}
	if (reset) {
		atomic_fetch_add_explicit(&p->resets, 1, memory_order_relaxed);
		if (!conn_exec_bounded(conn, c->reset_query, PGRES_COMMAND_OK,
				       c->connect_timeout_ms) ||
		    conn_init(p, conn))
			return true;
	}
	if (c->after_release && c->after_release(conn, c->hook_data) != 0)
		return true;
	/* The pool's own commands (the rollback, the reset) and the hook's
	 * count for nothing. */
	pc->ran = pc->dirty = false;
	return PQstatus(conn) != CONNECTION_OK;
}

/* dbswap_pool_release(), and with discard dbswap_pool_discard(). */
static int pool_give_back(dbswap_pool *p, PGconn *conn, bool discard,
			  const char *fn)
{
	struct pconn *pc = NULL;
	bool broken, doomed, keep, mine;
	int64_t now;
	const char *wrong = NULL;
	enum close_cause cause;

	if (!conn)
		return 0;
	if (!p) {
		client_misuse(fn, "the pool is NULL");
		return -EINVAL;
	}
	if (client_forked(p->epoch))
		return -ECHILD;
	mine = pool_lent_here(p, conn);
	if (mine) {
		pc = park_slot.pc;
	} else {
		/* Lent to another thread, or not lent at all: the books say,
		 * and a second release meanwhile is refused. */
		pthread_mutex_lock(&p->lock);
		pc = pool_find(p, conn);
		if (!pc)
			wrong = "a connection this pool did not lend (left "
				"alone)";
		else if (!pc->in_use || (atomic_load(&pc->word) & 1) ||
			 pc->releasing)
			wrong = "a connection released twice (it is not lent "
				"out; left alone)";
		else
			pc->releasing = true;
		pool_unlock(p);
		if (wrong) {
			char line[256];
			snprintf(line, sizeof(line), "%s: %s: %s", p->target,
				 fn, wrong);
			client_log_line(p->client, LOG_ERR, line);
			return -EINVAL;
		}
	}
	/* One that is closed anyway is not rolled back or reset first. */
	now = now_coarse_ms();
	doomed = discard || atomic_load(&p->closing) ||
		 pc->value != atomic_load(&p->cur_serial) ||
		 now >= pc->expires_ms;
	/* Outside the lock: a rollback is a round trip.  pc is lent to this
	 * call: nothing else closes or reuses it meanwhile. */
	broken = !doomed && conn_reset(p, pc);
	if (mine && !doomed && !broken && pool_release_parked(p, pc, now))
		return 0;

	pthread_mutex_lock(&p->lock);
	pc->releasing = false;
	keep = !doomed && !broken && !atomic_load(&p->closing) &&
	       pc->value == p->cur.serial && now_ms() < pc->expires_ms;
	if (keep) {
		pc->in_use = false;
		pc->idle_since = now_ms();
		pool_lent_less(p);
		idle_push(p, pc);
		if (atomic_load(&p->waiting) > 0)
			pthread_cond_signal(&p->changed);
		pool_unlock(p);
		return 0;
	}
	cause = discard ? CLOSE_DISCARDED
		: broken ? CLOSE_BROKEN
		: atomic_load(&p->closing) ? CLOSE_SHUTDOWN
		: pc->value != p->cur.serial ? CLOSE_REPLACED
					     : CLOSE_LIFETIME;
	pool_unlock(p);
	pool_drop(p, pc, cause);
	return 0;
}

DBSWAP_EXPORT
int dbswap_pool_release(dbswap_pool *p, PGconn *conn)
{
	return pool_give_back(p, conn, false, __func__);
}

DBSWAP_EXPORT
int dbswap_pool_discard(dbswap_pool *p, PGconn *conn)
{
	return pool_give_back(p, conn, true, __func__);
}

DBSWAP_EXPORT
int dbswap_pool_close(dbswap_pool *p, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
	struct timespec until = { .tv_sec = deadline / 1000,
				  .tv_nsec = (deadline % 1000) * 1000000 };
	int r = 0, n_shut = 0;

	if (!p) {
		client_misuse(__func__, "the pool is NULL");
		return -EINVAL;
	}
	if (client_forked(p->epoch))
		return -ECHILD;
	pthread_mutex_lock(&p->lock);
	atomic_store(&p->closing, true);
	/* Parked ones are idle: the pool thread closes them with the rest. */
	for (struct pconn *pc = p->conns; pc; pc = pc->next) {
		if (!pc->in_use || !pc_unpark(p, pc))
			continue;
		pc->in_use = false;
		pool_lent_less(p);
	}
	pool_recount(p);
	pthread_cond_broadcast(&p->changed);
	pool_log(p, LOG_INFO, "%s: closing; %d connection(s) lent out",
		 p->target, p->n_in_use);
	pool_wake(p);
	while (p->n_in_use > 0 && now_ms() < deadline)
		if (timeout_ms < 0)
			pthread_cond_wait(&p->changed, &p->lock);
		else
			pthread_cond_timedwait(&p->changed, &p->lock, &until);
	if (p->n_in_use > 0) {
		r = -ETIMEDOUT;
		for (struct pconn *pc = p->conns; pc; pc = pc->next)
			if (pc->in_use && !pc->abandoned &&
			    pconn_abandon(pc) && pc->value != p->cur.serial)
				p->n_abandoned++;
		for (struct pconn *pc = p->conns; pc; pc = pc->next)
			n_shut += pc->in_use && pc->abandoned;
		pool_log(p, LOG_WARNING, "%s: closed; %d connection(s) still "
			 "lent out after %d ms shut down (closed when "
			 "released)", p->target, n_shut, timeout_ms);
	}
	pool_unlock(p);
	pool_wake(p);
	return r;
}

/* Copies what both the program and this library know of a struct: never
 * more than size bytes, nor more than ours (fields of a newer header keep
 * what the program put there: zeros, from the _INIT macro), leaving the
 * program's struct_size as it was. */
static void copy_out(void *dst, const void *src, size_t ours, size_t size)
{
	memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
	       MIN(ours, size) - sizeof(size_t));
}

static int server_code(const dbswap_pool *p)
{
	if (!p->cur.conninfo)
		return DBSWAP_SERVER_UNKNOWN;
	if (p->from_env)
		return DBSWAP_SERVER_ENV;
	if (p->cur.unavailable)
		return DBSWAP_SERVER_NONE;
	if (p->cur.server && streq(p->cur.server, "secondary"))
		return DBSWAP_SERVER_SECONDARY;
	return DBSWAP_SERVER_PRIMARY;
}

static void pool_stats(dbswap_pool *p, dbswap_pool_stats *s)
{
	pthread_mutex_lock(&p->lock);
	*s = (dbswap_pool_stats){
		.struct_size = sizeof(*s),
		.generation = p->cur.generation,
		.size = p->n_open,
		.idle = p->n_idle + atomic_load(&p->n_parked),
		.in_use = p->n_in_use - atomic_load(&p->n_parked),
		.old = p->n_old,
		.waiting = p->waiting,
		.acquired = atomic_load(&p->acquired),
		.timeouts = p->timeouts,
		.opened = p->opened,
		.closed = p->closed,
		.failed_connects = p->failed_connects,
		.switches = p->switches,
		.acquire_waits = p->waits,
		.acquire_wait_us = p->wait_us,
		.acquire_wait_max_us = p->wait_max_us,
		.closed_idle = p->closed_by[CLOSE_IDLE],
		.closed_lifetime = p->closed_by[CLOSE_LIFETIME],
		.closed_replaced = p->closed_by[CLOSE_REPLACED],
		.closed_broken = p->closed_by[CLOSE_BROKEN],
		.closed_discarded = p->closed_by[CLOSE_DISCARDED],
		.closed_shutdown = p->closed_by[CLOSE_SHUTDOWN],
		.resets = atomic_load(&p->resets),
		.server = server_code(p),
		.standby = p->cur.standby,
		.refused = p->refused,
		.connect_failures = (int)MIN(p->cur_failures, INT32_MAX),
		.closing = atomic_load(&p->closing),
	};
	pool_unlock(p);
}

int pool_stats_get_v04(dbswap_pool *p, dbswap_pool_stats *s)
{
	dbswap_pool_stats all = { .struct_size = sizeof(all) };

	if (!p || !s ||
	    !struct_size_ok(s->struct_size,
			    offsetof(dbswap_pool_stats, generation) +
				    sizeof(uint64_t),
			    _Alignof(dbswap_pool_stats))) {
		client_misuse("dbswap_pool_stats_get",
			      !p ? "the pool is NULL"
			      : !s ? "the stats pointer is NULL"
				   : "stats->struct_size is not a size (use "
				     "DBSWAP_POOL_STATS_INIT)");
		return -EINVAL;
	}
	if (client_forked(p->epoch)) {
		copy_out(s, &all, sizeof(all), s->struct_size);
		return -ECHILD;
	}
	pool_stats(p, &all);
	copy_out(s, &all, sizeof(all), s->struct_size);
	return 0;
}

DBSWAP_EXPORT
int dbswap_pool_config_get(dbswap_pool *p, dbswap_pool_config *c)
{
	dbswap_pool_config cfg;

	if (!p || !c ||
	    !struct_size_ok(c->struct_size,
			    offsetof(dbswap_pool_config, min_size) + sizeof(int),
			    _Alignof(dbswap_pool_config))) {
		client_misuse(__func__, !p ? "the pool is NULL"
				       : !c ? "the config pointer is NULL"
					    : "config->struct_size is not a size "
					      "(use DBSWAP_POOL_CONFIG_INIT)");
		return -EINVAL;
	}
	if (client_forked(p->epoch))
		return -ECHILD;
	pthread_mutex_lock(&p->lock);
	cfg = p->cfg;
	pool_unlock(p);
	cfg.struct_size = sizeof(cfg);
	copy_out(c, &cfg, sizeof(cfg), c->struct_size);
	return 0;
}

/*
 * Version 0.1 of the ABI, for programs built against it: a config without
 * struct_size whose zeros meant "default", and stats embedding it.  Bound
 * to dbswap_pool_new@DBSWAP_0.1 and dbswap_pool_stats_get@DBSWAP_0.1; the
 * versions above are the default ones (@@DBSWAP_0.4).
 */
struct pool_config_v01 {
	int min_size, max_size, acquire_timeout_ms, idle_timeout_ms,
		max_lifetime_ms, connect_timeout_ms, drain_timeout_ms,
		check_on_borrow;
};

struct pool_stats_v01 {
	uint64_t generation;
	int size, idle, in_use, old, waiting;
	uint64_t acquired, timeouts, opened, closed, failed_connects, switches;
	struct pool_config_v01 config;
};

static int v01_in(int v)
{
	return v == 0 ? DBSWAP_POOL_DEFAULT : v;
}

DBSWAP_EXPORT
dbswap_pool *pool_new_v01(dbswap_client *client, const char *target,
			  const struct pool_config_v01 *old);
DBSWAP_EXPORT
void pool_stats_get_v01(dbswap_pool *p, struct pool_stats_v01 *s);

SYMVER(pool_new_v01, "dbswap_pool_new@DBSWAP_0.1");
SYMVER(pool_stats_get_v01, "dbswap_pool_stats_get@DBSWAP_0.1");


dbswap_pool *pool_new_v01(dbswap_client *client, const char *target,
			  const struct pool_config_v01 *old)
{
	dbswap_pool_config c = DBSWAP_POOL_CONFIG_INIT;

	if (!old)
		return pool_new_v04(client, target, NULL);
	if (old->check_on_borrow < 0 || old->connect_timeout_ms < 0) {
		errno = EINVAL;
		return NULL;
	}
	c.min_size = v01_in(old->min_size);
	c.max_size = v01_in(old->max_size);
	c.acquire_timeout_ms = v01_in(old->acquire_timeout_ms);
	c.idle_timeout_ms = v01_in(old->idle_timeout_ms);
	c.max_lifetime_ms = v01_in(old->max_lifetime_ms);
	c.connect_timeout_ms = v01_in(old->connect_timeout_ms);
	c.drain_timeout_ms = v01_in(old->drain_timeout_ms);
	/* It had no idle check: a check on every borrow, or none. */
	c.idle_check_ms = old->check_on_borrow > 0 ? 0 : -1;
	/* Nor resets, keepalives or jitter. */
	c.reset_query = "";
	c.keepalive_ms = 0;
	c.lifetime_jitter_ms = 0;
	return pool_new_v04(client, target, &c);
}

void pool_stats_get_v01(dbswap_pool *p, struct pool_stats_v01 *s)
{
	dbswap_pool_stats n = DBSWAP_POOL_STATS_INIT;
	dbswap_pool_config c = DBSWAP_POOL_CONFIG_INIT;

	if (!s) {
		client_misuse("dbswap_pool_stats_get", "the stats pointer is "
			      "NULL");
		return;
	}
	*s = (struct pool_stats_v01){ 0 };
	if (pool_stats_get_v04(p, &n) < 0 ||
	    dbswap_pool_config_get(p, &c) < 0)
		return;
	*s = (struct pool_stats_v01){
		.generation = n.generation, .size = n.size, .idle = n.idle,
		.in_use = n.in_use, .old = n.old, .waiting = n.waiting,
		.acquired = n.acquired, .timeouts = n.timeouts,
		.opened = n.opened, .closed = n.closed,
		.failed_connects = n.failed_connects, .switches = n.switches,
		.config = {
			.min_size = c.min_size, .max_size = c.max_size,
			.acquire_timeout_ms = c.acquire_timeout_ms,
			.idle_timeout_ms = c.idle_timeout_ms,
			.max_lifetime_ms = c.max_lifetime_ms,
			.connect_timeout_ms = c.connect_timeout_ms,
			.drain_timeout_ms = c.drain_timeout_ms,
			.check_on_borrow = c.idle_check_ms == 0,
		},
	};
}

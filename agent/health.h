/*
 * The health of one database server, for failover: a monitor connection
 * kept open in the agent's event loop, checks on it, and the count of
 * consecutive failures and successes that turns into a state.
 *
 * A check is PROBE_QUERY (pg_is_in_recovery(), the system identifier and
 * the timeline: probe.h) bounded by the connection timeout: on the idle
 * monitor connection every check interval, or on a fresh connection when
 * there is none.  Between checks a heartbeat (PROBE_QUERY_BASIC, the
 * cheapest query that says anything) runs on the monitor connection every
 * HEALTH_HEARTBEAT_MS: a server that hangs (SIGSTOP, a network black
 * hole) keeps its connections open, and only a question left unanswered
 * shows it.  A heartbeat that finds the server promoted or demoted has a
 * full check run at once.
 *
 * A server that dies closes the monitor connection, which the loop sees
 * at once: a fresh check runs immediately, and only its failure counts
 * (a single dropped connection is not an outage).  After a failure,
 * checks repeat every HEALTH_CONFIRM_MS on fresh connections, several in
 * flight when they hang, until the server answers or reaches the failure
 * threshold: then it is down.  A check on the monitor connection that is
 * still unanswered after health_late_ms() (a hung server, or a very busy
 * one) starts the confirming checks at once, while it waits out its
 * timeout: so a hang is down about HEALTH_HEARTBEAT_MS + the late time +
 * the timeout after it began (7 s at most with the defaults), and a busy
 * server that answers a fresh check is not down at all.  A failure that
 * leaves no doubt skips the confirming:
 * the monitor connection closed (or said the server shuts down: 57P01,
 * 57P02) and the check that followed was refused (nothing listens),
 * dropped before the server said a word (a postmaster gone with
 * connections in its backlog) or answered 57P03 (shutting down).  It is
 * down at once, but only while the other server (the peer) is up: with
 * nowhere to go, waiting costs nothing, and a server that restarts in a
 * few hundred ms keeps its apps.
 *
 * A down server is retried at the owner's pace; once it answers it must
 * pass `threshold` checks in a row, HEALTH_RECOVER_MS apart, to be up
 * again.  A server that keeps going down (crash-looping) is held longer
 * each time: one that goes down within HEALTH_FLAP_WINDOW_MS of coming
 * back has flapped, and after n flaps in a row it must also answer for
 * HEALTH_RECOVER_MS x 2^n (at most HEALTH_HOLD_MAX_MS) before it is up, so
 * that it costs the apps a bounded number of switches.
 *
 * A server that refuses the value's credentials (SQLSTATE 28P01, 28000:
 * a changed password, an expired role) answered: it is not down, and the
 * failure does not count toward the threshold.  It is "rejected" until a
 * new login with the value passes (checks on the monitor connection, which
 * logged in before, do not clear it).  Logins with a value the server
 * refused are bounded as a new value's are: at most PROBE_AUTH_RETRIES
 * (target.h) failed logins per value, one HEALTH_CONFIRM_MS doubling up to
 * the check interval apart, then none until the value changes or
 * health_reconnect() (dbswapctl reconnect), so that the agent never gets
 * a role locked out by a lockout policy.  Switches to the server count
 * (health_fail()).  Meanwhile the monitor connection, if still open, is
 * checked as usual; without one nothing notices the server dying.
 *
 * The owner (target.c) hears of every finished check through its callback
 * and decides what to switch; this module only observes.
 */
#ifndef DBSWAP_AGENT_HEALTH_H
#define DBSWAP_AGENT_HEALTH_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_source;
struct probe_result;
struct loop_timer;

/* Pause between the checks that confirm a failure: short, so that a dead
 * server is left in about threshold x this, not threshold x the check
 * interval; long enough that a server restarting in a few hundred ms is
 * not given up on after one refused connection. */
#define HEALTH_CONFIRM_MS 250

/* How often the heartbeat asks the monitor connection (when the check
 * interval is longer): the hang detection's resolution, for one cheap
 * query a second. */
#define HEALTH_HEARTBEAT_MS 1000

/* A check on the monitor connection unanswered this long (or half the
 * connection timeout, if shorter) is late: the confirming checks start.
 * A query on an open connection to a server that works takes well under
 * a millisecond. */
#define HEALTH_LATE_MS 1000

/* The pause between the checks of a server that answers again after it
 * was down: its threshold checks take seconds, not check intervals. */
#define HEALTH_RECOVER_MS 1000

/* Flapping: a server that goes down again within this long of coming back
 * flapped; each flap in a row doubles how long it must answer before it
 * is up again, up to the maximum. */
#define HEALTH_FLAP_WINDOW_MS (10 * 60 * 1000)
#define HEALTH_HOLD_MAX_MS (5 * 60 * 1000)

/* Checks in flight at once while confirming a failure (they overlap only
 * when each hangs until the connection timeout). */
#define HEALTH_INFLIGHT_MAX 4

/* The settings every server's health follows (from the env files:
 * DB_HEALTH_CHECK_INTERVAL and so on; see agent.h). */
struct health_config {
	int64_t interval_ms;
	int64_t timeout_ms;
	unsigned threshold;
	int64_t retry_ms;
};

enum health_state {
	HEALTH_UNKNOWN,    /* not checked yet */
	HEALTH_UP,         /* the last check passed */
	HEALTH_SUSPECT,    /* failed checks, fewer than the threshold */
	HEALTH_DOWN,       /* threshold failed checks in a row */
	HEALTH_RECOVERING, /* was down, now passing checks, not enough yet */
	HEALTH_REJECTED,   /* answers, but refuses the value's credentials */
};

struct health;

/* Called after every finished check, and when a settings change makes a
 * suspect server down (health_reschedule()). */
typedef void health_fn(struct health *h, void *data);

struct health {
	/* Read by the owner and status. */
	enum health_state state;
	unsigned failures;    /* in a row */
	unsigned successes;   /* in a row */
	uint64_t checks;      /* finished, since start */
	int64_t rtt_us;       /* of the last good check; -1 before any */
	int in_recovery;      /* -1 unknown, else what the last good check said */
	/* Which database and timeline the last good check found (probe.h
	 * PROBE_QUERY); not identified when the role may not read them. */
	bool identified;
	unsigned long long system_id;
	unsigned timeline;
	long long server_start_us; /* the postmaster's start */
	bool auth_failed;     /* the last failure was an authentication error */
	unsigned auth_logins; /* failed logins with this value (bounded) */
	int64_t last_check_wall;   /* unix seconds; 0 before any */
	int64_t ok_us;             /* now_us() when a full check last passed */
	int64_t seen_us;           /* when any check (heartbeats too) did */
	int64_t down_since_wall;   /* unix seconds, while down or recovering */
	int64_t first_failure_us;  /* now_us() of the first failure in a row */
	/* The monitor connection closed (lost_shutdown: saying the server
	 * shuts down, 57P01/57P02), and no check has passed since. */
	bool lost, lost_shutdown;
	/* The other server's health: a sure failure is acted on at once
	 * only while that one is up (else waiting costs nothing, and a
	 * server restarting in a few hundred ms keeps its apps). */
	const struct health *peer;
	int64_t down_since_us;     /* now_us() when it went down */
	int64_t back_since_us;     /* now_us() when it came back up after
				    * being down; 0 while down, or never */
	int64_t recovering_since_us; /* now_us() of the first good check */
	unsigned flaps;            /* went down soon after up, in a row */
	char *error;          /* the last failure, masked; NULL before any */

	/* Private. */
	struct loop *loop;
	const struct health_config *cfg;
	char *name;           /* the target's */
	const char *role;     /* "primary" or "secondary" (static) */
	char *label;          /* "DATABASE_URL: primary postgresql://...:****@..." */
	char *conninfo;       /* secret: a reference (secret_ref()) */
	PGconn *conn;         /* the idle monitor connection */
	struct loop_source *src;
	struct loop_timer *timer;
	int64_t last_start_ms;
	int64_t full_start_ms;  /* of the last full check (not a heartbeat) */
	unsigned down_attempts;
	int64_t down_retry_ms; /* 0: backoff up to the check interval */
	health_fn *fn;
	void *data;
};

/* Starts watching the server at conninfo, a secret_dup() string
 * (common/util.h) of which the monitor holds a reference, not a copy (a
 * check runs at once).  role
 * (a static string) names it in log lines after name: "DATABASE_URL",
 * "primary".  A server
 * known to have failed starts down (it must then pass threshold checks to
 * be up).  Returns 0 or -ENOMEM. */
int health_new(struct loop *loop, const struct health_config *cfg,
	       const char *name, const char *role, char *conninfo,
	       bool start_down, health_fn *fn, void *data,
	       struct health **out);
void health_free(struct health *h);

/* A new value for the server (a rotation), a secret_dup() string as
 * health_new()'s: the monitor connection is re-opened with it, the counts
 * stay. */
void health_set_conninfo(struct health *h, char *conninfo);

/* Drops the monitor connection and checks again now. */
void health_reconnect(struct health *h);

/* Checks now (on the monitor connection if open), unless a check is in
 * flight: the owner needs to know the server as it is now. */
void health_check_now(struct health *h);

/* How often to retry while down; 0: backoff from HEALTH_CONFIRM_MS up to
 * the check interval. */
void health_set_down_retry(struct health *h, int64_t ms);

/* The other server of the same target, or NULL. */
void health_set_peer(struct health *h, const struct health *peer);

/* The settings changed: re-plans the next check (and calls the owner's
 * callback if a lower threshold made the server down). */
void health_reschedule(struct health *h);

/* Counts a failure seen by the owner (a switch to this server failed its
 * validation), as if a check had failed with why; auth: the server refused
 * the credentials (the server is then rejected, not failing). */
void health_fail(struct health *h, const char *why, bool auth);

/* The owner switched to this server after a new connection to it passed:
 * that is a good check, and the server is up from now on (a manual
 * failback does not wait out the checks a down primary must pass). */
void health_vouch(struct health *h);

/* What a probe of the owner's (a switch) found of the server's identity. */
void health_note(struct health *h, const struct probe_result *res);

/* How long a down server that answers again must keep answering before
 * it is up (beside its threshold checks): 0, or the flapping hold. */
int64_t health_hold_ms(const struct health *h);

/* "up", "suspect", ... as in status. */
const char *health_state_name(enum health_state state);

/* A check passed last and none failed since. */
static inline bool health_answers(const struct health *h)
{
	return h && h->failures == 0 && h->successes > 0;
}

/* Answers, and may be switched to when no server is in use: a server
 * that flapped must first be up again (its hold passed), else a
 * crash-looping server would have the apps switched to it and away at
 * its own pace. */
static inline bool health_settled(const struct health *h)
{
	return health_answers(h) && (h->flaps == 0 || h->state == HEALTH_UP);
}

/* Up, its monitor connection open and answering a check within the last
 * HEALTH_FRESH_MS: a switch to it needs no new connection to know that
 * the value logs in there (the monitor did, with that value). */
#define HEALTH_FRESH_MS 1500
bool health_fresh(const struct health *h);

/* A new login with the value is allowed: fewer than PROBE_AUTH_RETRIES
 * failed (target.h; the header does not include it: 6). */
bool health_may_log_in(const struct health *h);

#endif

/*
 * A target: one env variable whose value is a libpq connection string, and
 * the value of it the agent has published.
 *
 * A new value from the env files becomes the candidate; a probe validates
 * it; only a value that passed is published, with the target's generation
 * raised by one.  A target may have a second server, the secondary
 * (NAME_SECONDARY), validated the same way; which of the two is published
 * is failover.c's decision.  A candidate that fails stays unpublished, the published
 * value stays in force, and the probe is retried with exponential backoff
 * (the password may change on the server a moment after the file).  An
 * authentication failure is retried at most TARGET_AUTH_RETRIES times, so
 * the agent never hammers a role into a lock-out; a new value or a reload
 * starts over.
 */
#ifndef DBSWAP_AGENT_TARGET_H
#define DBSWAP_AGENT_TARGET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/log.h"
#include "probe.h"

struct agent;
struct probe;
struct loop_timer;

/* Longest value of a target's variable (and of its _SECONDARY) taken
 * from the files; a longer one is refused, naming the file and line, and
 * the value in force stays.  Every frame is at most IPC_FRAME_MAX (64
 * KiB): an update carries one value, and a status reply up to three
 * copies of each target's (published, primary, secondary; masked) and
 * about 5 KiB of error text per target (each error at most 1 KiB), so 4
 * KiB lets three targets at the limit share one status reply.  Real
 * conninfo strings are a few hundred bytes; 16 hosts (connplan.h's limit)
 * with long names and TLS file paths stay under 2 KiB.  A value near the
 * env format's 64 KiB once validated, was published and then could not be
 * framed: every subscriber was dropped and status failed. */
#define TARGET_VALUE_MAX 4096

/*
 * WHAT A TARGET MAY EXPAND.  A target's value, its secondary's and its
 * pool settings may not be built, directly or through other variables,
 * from another target's variable (its conninfo, primary or secondary),
 * nor from a variable that goes into the password part of another
 * target's conninfo (a URI's user info after the ':', a password= or
 * sslpassword= value, key=value or in the query; a value that is neither
 * counts whole): else a subscriber allowed only this target would get
 * the other's password.  Parts that are not secret (${DB_HOST}) may be
 * shared.  Two targets that share one password variable are both
 * refused: spell the password out in each, or give each its own
 * variable.  A refused value is never used: the value in force stays,
 * and the error (status, log) names the variables, never a value.
 */

/* Log lines about a target's values, when users other than root and
 * the agent's can write them: TARGET_LOG_BURST at once, then
 * TARGET_LOG_PER_S a second (the numbers of a socket peer's lines). */
#define TARGET_LOG_BURST 20
#define TARGET_LOG_PER_S 5

/* Retry backoff for a failed candidate: 100 ms doubling to 30 s. */
#define TARGET_RETRY_FIRST_MS 100
#define TARGET_RETRY_MAX_MS 30000
/* Attempts (the first included) for a candidate the server rejects as an
 * authentication failure (probe.h).  Shown in status as attempts_max, so
 * that a client waiting for a value (dbswapctl set --wait) gives up when
 * the agent does, not before. */
#define TARGET_AUTH_RETRIES PROBE_AUTH_RETRIES

/*
 * Pool settings for the apps that follow a target, read from the env
 * layers as PREFIX_POOL_MAX, PREFIX_POOL_MIN, PREFIX_POOL_TIMEOUT and
 * PREFIX_POOL_IDLE_TIMEOUT, where PREFIX is the target's name without one
 * trailing "_URL" (DATABASE_URL: DATABASE_POOL_MAX).  They are not
 * secret and not validated against the server: a set is checked as a
 * whole (each a decimal number within its bounds, min <= max), and a set
 * with any bad value is refused whole, the last good set staying in force.
 * Settings have no generations and no acks: subscribers get each new set.
 */
enum target_setting {
	SETTING_POOL_MAX,          /* 1..IPC_POOL_SIZE_MAX */
	SETTING_POOL_MIN,          /* 0..IPC_POOL_SIZE_MAX, <= max */
	SETTING_POOL_TIMEOUT,      /* ms, 0..IPC_POOL_TIMEOUT_MAX_MS */
	SETTING_POOL_IDLE_TIMEOUT, /* ms, 0..IPC_POOL_TIMEOUT_MAX_MS */
	SETTING_COUNT
};

struct target_settings {
	bool set[SETTING_COUNT]; /* false: no layer defines it (or empty) */
	uint64_t value[SETTING_COUNT];
};

enum target_state {
	TARGET_UNSET,      /* no env layer defines it */
	TARGET_VALIDATING, /* a candidate is being probed */
	TARGET_OK,         /* the published value is the current one */
	TARGET_FAILED,     /* the candidate failed; retrying or given up */
};

/* The servers of a target: the primary is the target's own variable
 * (DATABASE_URL), the secondary NAME_SECONDARY. */
enum target_role { ROLE_PRIMARY, ROLE_SECONDARY, ROLE_COUNT };
#define ROLE_NONE ROLE_COUNT /* no server: nothing published, or none up */

/*
 * One server's value: the newest from the files (candidate), validated
 * before it replaces the one in force (value).  Validation, backoff and
 * give-up work the same for both servers.
 */
struct source {
	struct target *target;
	enum target_role role;
	char *var;            /* env name */
	bool defined;         /* some layer defines var (non-empty) */

	char *value;          /* validated, in force (secret); NULL before */
	bool value_standby;   /* in recovery when it was validated */
	uint64_t accepted_seq; /* evaluation that set value */
	int64_t validated_wall; /* when value was validated (Unix seconds) */
	bool from_saved;      /* value is the one saved before a restart
			       * (state.h), not validated since */
	char *saved;          /* the saved value not (yet) needed (secret) */
	bool saved_standby;
	int64_t saved_wall;

	char *candidate;      /* newest from the files, if not in force */
	bool refused;         /* the files' value breaks a rule (error says
			       * which); nothing from them is used */
	enum target_state state;
	char *error;          /* last failure, masked */
	struct probe *probe;
	struct loop_timer *retry;
	unsigned attempts;
	bool gave_up;         /* auth failures: no retry until a change */
	uint64_t value_seq;   /* evaluation that set the candidate or unset */
	int64_t validated_us; /* duration of the last successful probe */

	struct health *health; /* while failover is on and value is set */
	bool switch_failed;   /* a switch to it failed since its last good
			       * check */
};

/* A request (failover, failback) answered when its switch is done. */
struct target_request {
	bool pending;
	uint64_t client;      /* server.c's serial of the client */
	bool has_id;
	uint64_t id;
	/* The client may not follow the target: a refusal's reason, which
	 * names its servers and quotes their errors, is not for it. */
	bool brief;
};

struct target {
	struct agent *agent;
	char *name;
	struct source src[ROLE_COUNT];
	/* Its log lines, when users other than root and the agent's can
	 * write its value (TARGET_LOG_*): the budget, and lines left out
	 * since the last that went. */
	struct log_bucket log;
	unsigned log_suppressed;

	/* What subscribers got last. */
	char *conninfo;       /* published value (secret), NULL before any */
	uint64_t generation;  /* 0 before the first publish */
	enum target_role current; /* the server conninfo is for, or none */
	bool standby;         /* what the subscribers were told: that server
			       * was in recovery (the server's state now is
			       * target_standby()'s) */
	bool published_saved; /* conninfo came from the saved state */
	const char *reason;   /* of the last publish (static string) */
	int64_t changed_wall; /* when it was published (unix seconds) */
	uint64_t published_seq; /* evaluation that set the published value */
	int64_t published_us; /* now_us() at the last publish */
	uint64_t all_acked;   /* last generation every subscriber acked */
	/* Subscribers, and how many of them acked generation acked_gen (a
	 * new generation resets it): counted as the server reports clients
	 * coming, acking and going (target_subscribed() and the like), so
	 * that an ack costs O(1), not a walk over every client.  Read them
	 * with target_count(). */
	unsigned n_subscribers, n_acked;
	uint64_t acked_gen;
	/* Acks and nacks for another agent instance (an earlier run of the
	 * agent): ignored, counted for status. */
	uint64_t stale_acks;

	/* Failover (failover.c). */
	struct loop_timer *evaluate; /* decisions run from the loop */
	struct probe *switch_probe;  /* validating the server to switch to */
	enum target_role switch_to;
	const char *switch_reason;
	int64_t switch_started_us;
	bool held;            /* manual failover: no automatic failback */
	uint64_t failovers;   /* switches away from the primary */
	int64_t last_failover_wall;
	char *failover_error; /* last failed check or switch, masked */
	struct target_request request;

	char *setting_vars[SETTING_COUNT]; /* env names, DATABASE_POOL_MAX.. */
	struct target_settings settings;   /* last good set, in force */
	char *settings_error; /* why the newest env values were refused */
};

int target_new(struct agent *a, const char *name, struct target **out);
void target_free(struct target *t);

/* Feeds the target its current values from the layers: the primary's and
 * the secondary's. */
void target_set_values(struct target *t);

/* A value of role saved before the last restart (state.h): used if the
 * value from the files fails its first validation or is not defined. */
void target_set_saved(struct target *t, enum target_role role,
		      const char *conninfo, bool standby, int64_t validated_wall);

/* Forgets failed candidates' backoff and probes them again now. */
void target_retry_now(struct target *t);

/* Publishes src[role]'s value (or, for ROLE_NONE, that no server is
 * available) as a new generation, with reason; standby says whether that
 * server is in recovery. */
void target_publish(struct target *t, enum target_role role,
		    const char *reason, bool standby);

const char *target_role_name(enum target_role role);

const char *target_state_name(enum target_state state);

/* Re-reads the pool settings from the layers.  A valid set that differs
 * from the one in force replaces it and goes to every subscriber; an
 * invalid one is logged and kept in settings_error for status. */
void target_update_settings(struct target *t);

/* Whether any pool setting is in force. */
bool target_has_settings(const struct target *t);

/* Whether var, a setting of the agent's own that every client may see
 * (the failover settings), may be used: it may not expand a target's
 * conninfo, nor a variable that forms a target's password (a digits-only
 * password fits a number); why says why not, naming variables only. */
bool target_agent_setting_may_use(struct agent *a, const char *var,
				  char *why, size_t whylen);

/* The wire name of a setting, as in the settings message and status
 * ("pool_max", ...). */
const char *target_setting_key(enum target_setting s);

struct target *target_find(struct agent *a, const char *name);

/* An event (events.h) about t, on the server of role. */
void target_event(const struct target *t, const char *event,
		  enum target_role role, const char *reason);

/* The subscribers of t, as the server sees them: one subscribed; one
 * went, the newest generation it acked being acked (0: none); one acked
 * generation, newer than any it acked before.  Every subscriber having
 * acked the current generation completes its rotation (logged, counted,
 * the event rotation-complete). */
void target_subscribed(struct target *t);
void target_unsubscribed(struct target *t, uint64_t acked);
void target_acked(struct target *t, uint64_t generation);

/* Subscribers of t, and how many of them acked its current generation. */
void target_count(const struct target *t, unsigned *subscribers,
		  unsigned *acked);

/* Whether the server in use is in recovery now: as its monitor's last
 * check says, or (not monitored, or not checked yet) as the connection
 * that validated what was published said.  False without a server. */
bool target_standby(const struct target *t);

#endif

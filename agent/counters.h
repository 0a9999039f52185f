/*
 * What the agent counts as things happen, for metrics.h to render: a
 * validation, a publish, the last ack of a generation, a health check, a
 * client leaving, an event and its hook.  The modules count here the way
 * they log, by name: this module knows no target, server or client, so
 * that the model below the server can count without depending on what
 * renders the counts.
 *
 * Nothing secret is counted: target names, server roles ("primary",
 * "secondary"), reasons, results and event names.  A target's name is
 * copied; every other string is kept as it is, so it must be static (a
 * literal, or a name from a fixed list).
 *
 * One agent per process: the counters are this module's globals.  Runs
 * on the loop's thread only.
 */
#ifndef DBSWAP_AGENT_COUNTERS_H
#define DBSWAP_AGENT_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

/* Label sets of one counter family per target: reasons, events and
 * results come from short fixed lists, so a few dozen slots hold them
 * all; one more (not expected) is not counted. */
#define COUNTERS_SERIES_MAX 32

struct series {
	const char *a, *b; /* label values (static strings) */
	uint64_t n;
};

struct series_list {
	struct series s[COUNTERS_SERIES_MAX];
	size_t n;
};

/* A histogram's upper bounds, at most COUNTERS_BUCKETS_MAX. */
#define COUNTERS_BUCKETS_MAX 14

struct histogram {
	uint64_t bucket[COUNTERS_BUCKETS_MAX]; /* not cumulative; +Inf is count */
	uint64_t count;
	double sum;
};

struct bounds {
	const double *v;
	size_t n;
};

/* Publish to last ack, and a passed health check. */
extern const struct bounds counters_converge_bounds;
extern const struct bounds counters_check_bounds;

/* The counts about one target. */
struct counted {
	char *name;
	struct series_list validations; /* server, result */
	struct series_list publishes;   /* reason */
	struct series_list switches;    /* reason, to */
	struct series_list events;      /* event */
	struct histogram converge;
	struct histogram check[2];      /* primary, secondary */
	struct counted *next;
};

/* A candidate value's validation on target's server role finished:
 * result "ok", "rejected" (the server refused the credentials) or
 * "failed". */
void counters_validation(const char *target, const char *role,
			 const char *result);
/* target published a generation for reason; switched_to names the server
 * it moved to when the server in use changed (not on the first publish),
 * else NULL. */
void counters_published(const char *target, const char *reason,
			const char *switched_to);
/* Every subscriber acked target's generation, seconds after it was
 * published. */
void counters_converged(const char *target, double seconds);
/* A health check of target's role passed, taking seconds. */
void counters_health_check(const char *target, const char *role,
			   double seconds);
/* Clients connected now: a copy of clients.c's count, for the
 * renderers, which sit below the server; only the server sets it, from
 * the one callback clients.c makes whenever a client comes or goes.  And
 * a client left or was dropped, why being the log line's reason. */
void counters_clients(unsigned n);
unsigned counters_clients_now(void);
void counters_client_gone(const char *why);
/* An event (events.h) about target happened. */
void counters_event(const char *target, const char *event);
/* What became of an event's hook: "ok", "failed", "killed",
 * "spawn-failed" or "dropped" (the queue was full). */
void counters_hook(const char *result);

/* The counts about target: an empty set when there are none yet (or no
 * memory to start them). */
const struct counted *counters_of(const char *target);
/* Clients gone by reason (closed, protocol, slow, hello-timeout, idle,
 * error), and hooks by result. */
const struct series_list *counters_gone(void);
const struct series_list *counters_hooks(void);

/* Forgets every count (the unit tests, the agent's exit). */
void counters_reset(void);

#endif

/*
 * Failover: which of a target's two servers its subscribers use.
 *
 * With a secondary configured (NAME_SECONDARY), each server with a
 * validated value has a health monitor (health.h).  When the server in
 * use goes down, the other is validated with a new connection and
 * published (reason "failover"); if it is down too, subscribers are told
 * that no server is available ("unavailable").  While on the secondary,
 * the primary is retried every DB_PRIMARY_RETRY_INTERVAL and taken back
 * ("failback") once it has passed DB_FAILURE_THRESHOLD checks in a row and
 * is not in recovery.  dbswapctl failover and failback switch by hand
 * ("manual"); a manual failover holds the target on the secondary.
 *
 * No split brain (issue 16).  The monitors' checks say which database and
 * timeline each server is (health.h).  In a replicated pair (the same
 * system identifier: a physical replica and its primary) the agent never
 * switches on its own to a server on an older timeline than the other,
 * nor to a writable one while the other is writable too: the old primary
 * back on its old timeline after the secondary was promoted would take
 * writes beside it.  It stays, says why in status (last_error) and the
 * log (event "split-brain").  A manual switch is refused too, unless
 * forced.  An independent pair (two databases kept in step by other
 * means) fails back as before; status warns that the writes made on the
 * secondary stay there.  While the pair is unknown (the role may not read
 * the identities) two writable servers count as a split.
 *
 * The standby flag follows the server in use: when its checks find it
 * promoted or demoted and it stays in use, the same value is published
 * again (reason "promoted" or "demoted") with the flag as it is now.
 *
 * Every decision runs from a zero-delay timer (failover_changed()), never
 * inside the callbacks that report a change, so that monitors can be
 * created and freed while deciding.
 */
#ifndef DBSWAP_AGENT_FAILOVER_H
#define DBSWAP_AGENT_FAILOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "target.h"

struct agent;

/* The failover settings' env names and defaults. */
#define FAILOVER_DEFAULT_INTERVAL_MS 30000
#define FAILOVER_DEFAULT_TIMEOUT_MS 5000
#define FAILOVER_DEFAULT_THRESHOLD 3
#define FAILOVER_DEFAULT_RETRY_MS 120000

/* Sets a->failover to the defaults. */
void failover_config_init(struct agent *a);

/* Follows the model's changes (changes.h): what a target's values and
 * servers do, and its publishes, make failover decide again.  Returns 0
 * or a negative errno. */
int failover_start(struct agent *a);
void failover_stop(struct agent *a);

/* Re-reads DB_HEALTH_CHECK_INTERVAL, DB_CONNECTION_TIMEOUT,
 * DB_FAILURE_THRESHOLD and DB_PRIMARY_RETRY_INTERVAL from the layers.  A
 * valid set that differs replaces the one in force at once; an invalid
 * one is refused whole (logged, and kept in a->failover_error). */
void failover_update_settings(struct agent *a);

/* Each target's decisions: after target_new(), before target_free(). */
int failover_init(struct target *t);
void failover_fini(struct target *t);

/* Something that failover depends on changed for t: decide soon. */
void failover_changed(struct target *t);

/* dbswapctl failover (role secondary) or failback (role primary): answers
 * req through the server when the switch is done or refused.  A switch
 * that would split the brain (a replicated pair: to a server on an older
 * timeline, or to a writable one while the other is writable too) is
 * refused unless force. */
void failover_request(struct target *t, enum target_role role,
		      const struct target_request *req, bool force);

/* For status: "replicated" (the servers share a system identifier),
 * "independent", "unknown" (not both checked, or the role may not read
 * pg_control_system()); NULL without a secondary. */
const char *failover_pair_name(const struct target *t);

/* For status: a warning about the pair in use (an independent pair after
 * a failover: the writes made on the secondary stay there), or NULL. */
const char *failover_warning(const struct target *t);

/* dbswapctl reconnect: re-opens t's monitor connections and publishes its
 * value again (reason "reconnect").  Returns the generation published, or
 * 0 when there was nothing to publish. */
uint64_t failover_reconnect(struct target *t);

/* A secondary is configured. */
bool failover_enabled(const struct target *t);

/* The server not in use could be switched to now. */
bool failover_available(const struct target *t);

/* The health whose failures status counts: the server in use, or the
 * primary when there is none.  NULL when not monitored. */
const struct health *failover_watched(const struct target *t);

#endif

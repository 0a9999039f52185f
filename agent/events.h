/*
 * Events for alerting without a log parser: --on-event CMD runs CMD on
 * each of them, with what happened in its environment.
 *
 * Events (DBSWAP_EVENT): failover, failback, unavailable (no server to
 * publish), rejected (a new value failed validation; retried), gave-up
 * (the server refused the credentials TARGET_AUTH_RETRIES times),
 * rotation-complete (every subscriber acked a generation, whatever made
 * it: DBSWAP_REASON says) and split-brain (a switch refused because it
 * would leave two writable servers).  The log line of each carries the
 * same name as its journal field DBSWAP_EVENT, so that
 * `journalctl -u dbswapd DBSWAP_EVENT=failover` finds them too, and
 * dbswap_events_total counts them (metrics.h).
 *
 * CMD is an absolute path run with execve (no shell), its argument the
 * event's name, stdin /dev/null, stdout and stderr the agent's stderr
 * (the journal under systemd), in a process group of its own, with an
 * environment of its own: PATH, DBSWAP_EVENT, DBSWAP_TARGET,
 * DBSWAP_GENERATION, DBSWAP_SERVER (primary, secondary or none),
 * DBSWAP_REASON and DBSWAP_TIME (RFC 3339, UTC).  Nothing secret: no
 * value, no host, no user, none of the agent's own environment; each
 * value is cut to EVENTS_FIELD_MAX bytes of [A-Za-z0-9._:+-].
 *
 * The loop never waits for a hook: it is started with posix_spawn (no
 * copy of the agent's memory, which holds secrets), watched through a
 * pidfd on the loop (or polled every EVENTS_POLL_MS where there is no
 * pidfd), and reaped when it exits.  At most
 * EVENTS_RUNNING_MAX run at once; more wait in a queue of
 * EVENTS_QUEUE_MAX, and past that they are dropped (logged, counted).  A
 * hook still running after its time limit gets SIGTERM, and SIGKILL
 * EVENTS_KILL_GRACE_MS later, its whole process group.
 *
 * One instance per process, on the loop's thread.  Errors: negative
 * errno.
 */
#ifndef DBSWAP_AGENT_EVENTS_H
#define DBSWAP_AGENT_EVENTS_H

#include <stdint.h>

struct loop;

/* Hooks at once: a webhook call takes well under a second; four cover a
 * failover and its rotation-complete on a few targets at once. */
#define EVENTS_RUNNING_MAX 4
/* Events waiting for a slot: a burst (every target failing over at
 * once) fits; a flood (a file rewritten in a loop, each value rejected)
 * is cut. */
#define EVENTS_QUEUE_MAX 32
/* A hook's time limit unless --on-event-timeout says otherwise. */
#define EVENTS_TIMEOUT_MS 10000
/* Between SIGTERM and SIGKILL. */
#define EVENTS_KILL_GRACE_MS 2000
/* Where the kernel (or valgrind) has no pidfd_open(): how often a
 * running hook's exit is looked for. */
#define EVENTS_POLL_MS 50
/* Longest value of an environment variable given to a hook. */
#define EVENTS_FIELD_MAX 128

/* Starts running cmd (an absolute path; NULL: no hook, events are only
 * counted) on events, each for at most timeout_ms.  Returns 0 or
 * -EINVAL after a message. */
int events_init(struct loop *loop, const char *cmd, int64_t timeout_ms);
/* Forgets queued events; running hooks get SIGTERM and are not waited
 * for. */
void events_fini(void);

/* event about target, whose current generation is generation, on
 * server ("primary", "secondary", "none"), for reason (a short token,
 * never a secret).  Counted in counters.h, and the hook run. */
void events_emit(const char *event, const char *target, uint64_t generation,
		 const char *server, const char *reason);

#endif

/*
 * The agent under systemd: readiness and status for Type=notify, the
 * watchdog, and structured logging to the journal.  Everything here is a
 * no-op when the agent does not run under systemd (no NOTIFY_SOCKET, no
 * WATCHDOG_USEC, stderr not the journal).
 *
 * READY=1 goes out once the env files are read and every target's first
 * validation has finished, passed or failed, and its first value (if any)
 * is published: a unit ordered after dbswapd.service then finds the values
 * there.  STATUS= is a one-line summary kept current (coalesced, at most
 * every SYSTEMD_STATUS_MS).  A reload is framed by RELOADING=1 (with
 * MONOTONIC_USEC) and READY=1; shutdown sends STOPPING=1.
 *
 * Log lines go to journald's native socket without waiting: an entry that
 * journald's full queue does not take goes to stderr (the journal stream,
 * without the fields), and is dropped, and counted by log.c, when that is
 * full too.
 */
#ifndef DBSWAP_AGENT_SYSTEMD_H
#define DBSWAP_AGENT_SYSTEMD_H

#include <stddef.h>

struct agent;
struct log_fields;

/* How often STATUS= may change: a burst of acks or connections sends one
 * update, not one each. */
#define SYSTEMD_STATUS_MS 100

/* Sets up the watchdog timer and, when stderr is the journal, structured
 * logging.  Returns 0 or -ENOMEM. */
int systemd_init(struct agent *a);
void systemd_fini(struct agent *a);

/* Something status shows changed (a value published, a validation done, a
 * subscriber acked, a client came or went). */
void systemd_changed(struct agent *a);

/* Room for one journal entry: a log line (log.h keeps them under 1 KiB)
 * and its fields. */
#define SYSTEMD_JOURNAL_ENTRY_MAX 4096

/* Encodes the journal entry for a log line into buf, in journald's native
 * protocol: MESSAGE, PRIORITY (level), SYSLOG_IDENTIFIER and the
 * DBSWAP_EVENT, DBSWAP_TARGET and DBSWAP_GENERATION fields that f has (f
 * may be NULL).  Returns the entry's length, or -ENOBUFS when it does not
 * fit in size. */
int systemd_journal_entry(char *buf, size_t size, int level,
			  const struct log_fields *f, const char *message);

void systemd_reloading(struct agent *a);
void systemd_reloaded(struct agent *a);
void systemd_stopping(struct agent *a);

#endif

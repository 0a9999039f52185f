/*
 * The last good values, kept across restarts.
 *
 * Every value in force (each target's primary and secondary, validated by
 * a real connection) is written to the agent's state directory
 * (--state-dir, or systemd's $STATE_DIRECTORY) as one file, STATE_FILE.
 * At start, a server whose value from the env files fails its first
 * validation, or is not defined at all (the file missing, unreadable or
 * broken), takes the saved value instead, as if the agent had never
 * stopped; status says so (source "saved") until a value from the files
 * passes.
 *
 * On disk: a msgpack map,
 *
 *   { "format": 1,
 *     "values": [ { "target": str, "role": "primary" | "secondary",
 *                   "conninfo": str, "standby": bool,
 *                   "validated": int (Unix seconds) }, ... ] }
 *
 * sealed to the agent's first key (common/crypto.h, format 4) when it
 * holds one, else as it is.  Either way the file is mode 0600 and owned by
 * the agent's uid; one that is not is refused at load: whoever could write
 * it could have the agent publish a value of their choosing.  It is
 * written to a temp file in the same directory, fsync'ed, renamed over the
 * old one, and the directory fsync'ed.
 *
 * Writing happens on a thread of its own, so that a slow or hung disk
 * never stalls the event loop: the loop hands over the newest snapshot and
 * goes on; a snapshot not yet written when a newer one comes is dropped.
 * A save is made STATE_SAVE_DELAY_MS after the change that asks for it
 * (several changes then make one save), once the subscribers' acks of a
 * rotation are in rather than while they come.  Everything else here runs
 * on the loop's thread.
 *
 * Error rule: common/util.h (negative errno).
 */
#ifndef DBSWAP_AGENT_STATE_H
#define DBSWAP_AGENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;
struct keys;
struct state;

/* The file in the state directory. */
#define STATE_FILE "last-good"

/* How long after a new value is in force it is saved: the acks of its
 * rotation come in within a few ms, and a disk's fsync should not compete
 * with them for the two cores of a small host; short next to any restart. */
#define STATE_SAVE_DELAY_MS 200

/* Largest state file read: a few hundred bytes per target; this is far
 * beyond any host's targets and bounds what a bad file costs. */
#define STATE_FILE_MAX (1024 * 1024)

/* Opens the state in dir for the agent a (created, mode 0700, if
 * missing; NULL: no state, and every call below does nothing).  Starts
 * the writer thread.  Returns 0 or a negative errno (logged). */
int state_new(const char *dir, struct agent *a, struct state **out);

/* Makes a save that is due now, writes the last snapshot, stops the
 * thread, frees.  NULL is fine. */
void state_free(struct state *s);

/* Reads the saved values into the agent's targets (target_set_saved()).
 * A missing file is no error; a bad one is logged, kept in the error for
 * status, and ignored.  keys open a sealed file. */
void state_load(struct state *s, struct agent *a);

/* The values in force changed: STATE_SAVE_DELAY_MS later, they are handed
 * to the writer thread, sealed to the agent's first key if it has one. */
void state_save(struct state *s);

/* The directory, or NULL without state. */
const char *state_dir(const struct state *s);

/* Why the last load or save failed, copied into buf (size bytes); false
 * when neither did. */
bool state_error(struct state *s, char *buf, size_t size);

#endif

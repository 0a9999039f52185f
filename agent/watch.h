/*
 * The agent's file watcher: tells the agent when one of its env files has
 * changed, whatever way it was written, and never while it is half-written.
 *
 * How: one inotify fd for the whole watcher, registered in the event loop.
 * Each file's DIRECTORY is watched, not the file, so that every way of
 * replacing the file is seen: in-place write, truncate-then-write (`>`),
 * write-temp-then-rename (`mv`, `sed -i`, editors), delete and recreate, and
 * the Kubernetes secret volume's `..data` symlink swap.  Files in one
 * directory share one directory watch.  The agent's own reads trigger
 * nothing: open, access and close-without-write are not in the mask.
 *
 * An event concerns a file when its name is the file's basename, when the
 * name begins with ".." (Kubernetes AtomicWriter entries: `..data`,
 * `..data_tmp`, `..<timestamp>`), when it is about the directory itself, or
 * on a queue overflow (then every file is concerned).
 *
 * Settling: an event re-arms the file's timer to WATCH_SETTLE_MS from now
 * (WATCH_SETTLE_DONE_MS when the event itself completes a write); when it
 * fires the callback runs once.  While the file is open for writing
 * (IN_MODIFY or the creation of a regular file seen, IN_CLOSE_WRITE not yet
 * seen) the report is held, for at most WATCH_HOLD_MAX_MS after the first
 * unreported event, so a writer that keeps the file open forever cannot
 * block updates.  A rename over the file, its deletion or its renaming away
 * clears the "open for writing" state: the written inode is no longer at
 * that name.
 *
 * A missing directory (at watcher_add() time, or deleted or moved later) is
 * reported once to each of its files, so the caller sees them missing; then
 * inotify_add_watch() is retried on a timer (WATCH_RETRY_FIRST_MS doubling
 * to WATCH_RETRY_MAX_MS) until the directory exists again, and its files are
 * reported once more.  This retries the watch on the directory only; file
 * contents are never polled.
 *
 * Limits: a symlink in the directory path, or a file that is a symlink to
 * another directory (other than the `..data` layout), is followed once when
 * the watch is added; a later swap of that symlink's target is not seen.
 * A callback may find the file missing when a delete-then-recreate or
 * rename-away-then-write sequence is slower than WATCH_SETTLE_MS; the caller
 * should not take "missing" for "empty".
 *
 * Error rule: functions returning int return 0 or a negative errno (see
 * common/util.h).  Everything here runs on the loop's thread; nothing
 * blocks.
 */
#ifndef DBSWAP_WATCH_H
#define DBSWAP_WATCH_H

#include "common/loop.h"

/* Quiet time before a change is reported.  Long enough to merge the bursts
 * of one write or rename sequence (a truncate, the writes and the close; a
 * temp file's rename; the five steps of a Kubernetes ..data swap all land
 * within a millisecond), short next to the ~21 ms a validating connect
 * costs, so settling adds little to an update's latency. */
#define WATCH_SETTLE_MS 5

/* Quiet time after an event that itself completes a write: IN_CLOSE_WRITE
 * on the file, IN_MOVED_TO of the file or of Kubernetes' ..data.  The new
 * version is whole; the millisecond only merges what the same writer does
 * right after (a second close, the removal of an old ..data target). */
#define WATCH_SETTLE_DONE_MS 1

/* Longest a report waits for a writer to close the file, counted from the
 * first unreported event.  A writer that keeps the file open (or whose
 * IN_CLOSE_WRITE was lost in a queue overflow) must not block updates for
 * more than this. */
#define WATCH_HOLD_MAX_MS 2000

/* Retry delays of inotify_add_watch() on a missing directory: first retry
 * after WATCH_RETRY_FIRST_MS, doubling up to WATCH_RETRY_MAX_MS.  A
 * directory coming back is noticed within that delay; retries of a missing
 * directory cost one syscall each. */
#define WATCH_RETRY_FIRST_MS 100
#define WATCH_RETRY_MAX_MS 5000

struct watcher;

/* Called on the loop's thread after a settled change of path (the string
 * given to watcher_add()).  first_us is when the first event of the change
 * arrived (now_us() clock): the time between is the settling.  It should
 * re-read the whole file; the file may be missing.  It may call any watcher
 * function, including watcher_free(). */
typedef void watch_fn(const char *path, int64_t first_us, void *data);

/* Creates a watcher whose inotify fd is registered in loop.  Returns 0 and
 * sets *out, or a negative errno (-EMFILE when out of inotify instances). */
int watcher_new(struct loop *loop, struct watcher **out);

/* Stops watching and frees everything; NULL is fine.  May be called from a
 * watch_fn.  The loop must outlive the watcher. */
void watcher_free(struct watcher *w);

/* Watches path (a file, need not exist yet; its directory should).  path is
 * copied and kept as given (absolute or relative to the cwd at each
 * retry).  fn(path, first_us, data) is called after each settled change.
 * If the directory is missing, fn is called once (after settling) and the
 * directory is retried as described above.
 * Returns 0, -EINVAL for a path naming no file (empty, ending in '/', ".",
 * ".."), -ENOMEM, or the negative errno of inotify_add_watch() other than
 * ENOENT/ENOTDIR (-EACCES, -ENOSPC when out of inotify watches). */
int watcher_add(struct watcher *w, const char *path, watch_fn *fn, void *data);

/* What the watcher does on an inotify queue overflow (IN_Q_OVERFLOW),
 * when any event may have been lost: looks every directory up again
 * (one deleted, moved away or replaced meanwhile is handled as if its
 * events had come) and calls every file's callback once, as for a change.
 * Public so that tests can feed an overflow without filling the kernel's
 * queue (fs.inotify.max_queued_events is system-wide). */
void watcher_overflow(struct watcher *w);

/* Calls every file's callback once (after settling, and after any writer
 * has closed the file, as for a change), e.g. on reload. */
void watcher_trigger_all(struct watcher *w);

#endif

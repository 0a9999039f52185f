/*
 * The agent's file watcher: tells the agent when one of its env files has
 * changed, whatever way it was written, and never while it is half-written.
 *
 * How: one inotify fd for the whole watcher, registered in the event loop.
 * Directories are watched, not files, so that every way of replacing a
 * file is seen: in-place write, truncate-then-write (`>`), write-temp-then-
 * rename (`mv`, `sed -i`, editors), delete and recreate.  The agent's own
 * reads trigger nothing: open, access and close-without-write are not in
 * the mask.
 *
 * Symlinks and directories: a path is resolved one component at a time,
 * as the kernel would, and every (directory, name) pair on the way is
 * watched: each directory and symlink met, by its name in the directory
 * that holds it, and the file it all ends at (in its real directory).  So
 * a write through a link, a write to the link's target by any writer, the
 * re-pointing of any link on the way (a chain of links, a
 * `current -> releases/N` directory link, the Kubernetes secret volume's
 * `..data` swap) and a directory on the way renamed or replaced
 * (`mv new current`) are all seen.  The path is resolved again before
 * every report, so the watches follow the links as they change.  A
 * missing component is watched for in the deepest directory that exists,
 * so a directory created later is seen without polling.  Events about
 * other names in those directories cost a string compare each.
 *
 * Settling: an event re-arms the file's timer to WATCH_SETTLE_MS from now
 * (WATCH_SETTLE_DONE_MS when the event itself completes a write); when it
 * fires the callback runs once.  While the file is open for writing
 * (IN_MODIFY or the creation of a regular file seen, IN_CLOSE_WRITE not
 * yet seen) the report is held, for at most WATCH_HOLD_MAX_MS after the
 * first unreported event; a report made at that cap says that the writer
 * has not closed the file (watch_report.writer_open), and it is for the
 * caller to decide what such content is worth (layers.h).  A rename over
 * the file, its deletion or its renaming away clears the "open for
 * writing" state: the written inode is no longer at that name.
 *
 * When a watch cannot be added (no read permission on a directory, out of
 * inotify watches), the path is resolved again on a timer
 * (WATCH_RETRY_FIRST_MS doubling to WATCH_RETRY_MAX_MS) and the file is
 * reported once the watches are in place.  File contents are never polled.
 * A callback may find the file missing when a delete-then-recreate or
 * rename-away-then-write sequence is slower than WATCH_SETTLE_MS; the
 * caller should not take "missing" for "empty".
 *
 * Error rule: functions returning int return 0 or a negative errno (see
 * common/util.h).  Everything here runs on the loop's thread; nothing
 * blocks.
 */
#ifndef DBSWAP_WATCH_H
#define DBSWAP_WATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/loop.h"

/* Quiet time before a change is reported.  Long enough to merge the bursts
 * of one write or rename sequence (a truncate, the writes and the close; a
 * temp file's rename; the five steps of a Kubernetes ..data swap all land
 * within a millisecond), short next to the ~21 ms a validating connect
 * costs, so settling adds little to an update's latency. */
#define WATCH_SETTLE_MS 5

/* Quiet time after an event that itself completes a write: IN_CLOSE_WRITE
 * on the file, IN_MOVED_TO of the file or of a link on its path (such as
 * Kubernetes' ..data).  The new version is whole; the millisecond only
 * merges what the same writer does right after (a second close, the
 * removal of an old ..data target). */
#define WATCH_SETTLE_DONE_MS 1

/* Longest a report waits for a writer to close the file, counted from the
 * first unreported event.  A writer that keeps the file open (or whose
 * IN_CLOSE_WRITE was lost in a queue overflow) must not keep the caller
 * from knowing; the report then says the writer has not closed it. */
#define WATCH_HOLD_MAX_MS 2000

/* Retry delays when a watch cannot be added: first after
 * WATCH_RETRY_FIRST_MS, doubling up to WATCH_RETRY_MAX_MS.  Each retry
 * costs a few syscalls. */
#define WATCH_RETRY_FIRST_MS 100
#define WATCH_RETRY_MAX_MS 5000

/* Most symlinks followed while resolving one path, as the kernel's limit
 * (MAXSYMLINKS): a loop of links ends there, and the read that follows
 * reports it (ELOOP). */
#define WATCH_LINKS_MAX 40

/* Log lines the path of one file may cause (a link on it replaced, a
 * directory on it that cannot be watched): WATCH_LOG_BURST at once,
 * WATCH_LOG_PER_S a second after that, and all files together
 * WATCH_LOG_ALL_*; an inotify queue overflow is logged at most once every
 * WATCH_LOG_SUMMARY_MS.  Whoever owns a link or a directory on a path
 * decides how often these happen.  Lines left out are counted and said at
 * most once every WATCH_LOG_SUMMARY_MS per file (a report then follows,
 * which costs the caller one read). */
#define WATCH_LOG_BURST 20
#define WATCH_LOG_PER_S 5
#define WATCH_LOG_ALL_BURST 100
#define WATCH_LOG_ALL_PER_S 20
#define WATCH_LOG_SUMMARY_MS 1000

struct watcher;

/* What a report says besides "look again". */
struct watch_report {
	/* When the first event of the change arrived (now_us() clock): the
	 * time between is the settling. */
	int64_t first_us;
	/* A writer opened the file and wrote to it, and has not closed it
	 * (as far as inotify tells): the report came at WATCH_HOLD_MAX_MS,
	 * or the caller asked for a recheck while it was so. */
	bool writer_open;
};

/* Called on the loop's thread after a settled change of path (the string
 * given to watcher_add()).  It should re-read the whole file; the file may
 * be missing.  It may call any watcher function, including
 * watcher_free(). */
typedef void watch_fn(const char *path, const struct watch_report *report,
		      void *data);

/* Creates a watcher whose inotify fd is registered in loop.  Returns 0 and
 * sets *out, or a negative errno (-EMFILE when out of inotify instances). */
int watcher_new(struct loop *loop, struct watcher **out);

/* Stops watching and frees everything; NULL is fine.  May be called from a
 * watch_fn.  The loop must outlive the watcher. */
void watcher_free(struct watcher *w);

/* Watches path (a file; it and its directories need not exist yet).  path
 * is copied and kept as given (absolute, or relative to the cwd at each
 * resolution).  fn(path, report, data) is called after each settled
 * change.  If the file is missing now, fn is called once (after settling).
 * Returns 0, -EINVAL for a path naming no file (empty, ending in '/', ".",
 * ".."), or -ENOMEM.  A watch that cannot be added now is retried. */
int watcher_add(struct watcher *w, const char *path, watch_fn *fn, void *data);

/* Reports path (as given to watcher_add()) again delay_ms from now, or
 * sooner if a change comes first: for a caller that could not use what
 * it read (a read error that may pass, a writer still at work). */
void watcher_recheck(struct watcher *w, const char *path, int64_t delay_ms);

/* Whether inotify has seen a writer at work on path (as given to
 * watcher_add()): a write and no close since.  For a read the watcher did
 * not ask for (a reload). */
bool watcher_writing(const struct watcher *w, const char *path);

/* What the watcher does on an inotify queue overflow (IN_Q_OVERFLOW),
 * when any event may have been lost: every file is resolved again and
 * reported once, as for a change (after any writer seen at work has
 * closed the file, or WATCH_HOLD_MAX_MS).  Public so that tests can feed
 * an overflow without filling the kernel's queue
 * (fs.inotify.max_queued_events is system-wide). */
void watcher_overflow(struct watcher *w);

/* Calls every file's callback once (after settling, and after any writer
 * has closed the file, as for a change), e.g. on reload. */
void watcher_trigger_all(struct watcher *w);

#endif

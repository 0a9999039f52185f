/*
 * The agent's file watcher: inotify on each file's directory, a settle timer
 * per file, a retry timer per missing directory; see watch.h.
 *
 * Files and directories are few (a handful of env files), so they are kept
 * in plain lists and every event scans them.  Two directory entries may
 * share one inotify watch descriptor when two spellings name the same
 * directory ("d" and "d/."): events are matched by wd, so both see them.
 *
 * Callbacks only ever run from a file's settle timer, never from the
 * inotify handler, so a callback that adds files or frees the watcher
 * cannot pull the lists from under an event scan.
 */
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/watch.h"
#include "common/log.h"
#include "common/util.h"

/* Which events are wanted on a directory.  No IN_OPEN, IN_ACCESS or
 * IN_CLOSE_NOWRITE: the agent's own reads of the files must not trigger a
 * report.  IN_ONLYDIR: a path whose directory part is a file is "missing". */
#define WATCH_DIR_MASK                                                      \
	(IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM |         \
	 IN_CREATE | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | \
	 IN_ONLYDIR)

/* Reads of the inotify fd per wake-up, so a flood of events cannot keep
 * the loop in the handler; the rest waits for the next round. */
#define WATCH_READS_MAX 16

struct watch_dir {
	struct watcher *w;
	char *path;
	int wd;	/* -1 while the directory is missing */
	struct loop_timer *retry;
	unsigned attempt; /* retries so far, for the backoff */
	struct watch_dir *next;
};

struct watch_file {
	struct watcher *w;
	char *path; /* as given */
	char *base;
	struct watch_dir *dir;
	watch_fn *fn;
	void *data;
	struct loop_timer *settle;
	int64_t first_ms; /* first unreported event, -1 when none */
	int64_t first_us; /* the same, finer, for the callback */
	bool writing;	  /* open for writing: no IN_CLOSE_WRITE yet */
	struct watch_file *next;
};

struct watcher {
	struct loop *loop;
	int fd;
	struct loop_source *source;
	struct watch_dir *dirs;
	struct watch_file *files;
};

/* Notes an event for f: the report is (re)scheduled settle_ms from now,
 * but never later than WATCH_HOLD_MAX_MS after the first unreported event,
 * so a stream of events less than settle_ms apart cannot postpone it
 * forever. */
static void watch_touch(struct watch_file *f, int64_t now, int settle_ms)
{
	if (f->first_ms < 0) {
		f->first_ms = now;
		f->first_us = now_us();
	}
	loop_timer_arm(f->settle, MIN(now + settle_ms,
				      f->first_ms + WATCH_HOLD_MAX_MS));
}

/* How long to wait for more after ev on name: less when the event itself
 * says a whole new version is in place (a writer closed the file, a file
 * or the Kubernetes ..data link was renamed in). */
static int watch_settle_ms(const struct watch_file *f, const char *name,
			   uint32_t mask)
{
	if (name && (mask & IN_CLOSE_WRITE) && streq(name, f->base))
		return WATCH_SETTLE_DONE_MS;
	if (name && (mask & IN_MOVED_TO) &&
	    (streq(name, f->base) || streq(name, "..data")))
		return WATCH_SETTLE_DONE_MS;
	return WATCH_SETTLE_MS;
}

static void watch_touch_dir(struct watch_dir *d, bool gone)
{
	int64_t now = now_ms();

	for (struct watch_file *f = d->w->files; f; f = f->next) {
		if (f->dir != d)
			continue;
		if (gone)
			f->writing = false;
		watch_touch(f, now, WATCH_SETTLE_MS);
	}
}

static void watch_settled(struct loop_timer *t, void *data)
{
	struct watch_file *f = data;

	if (f->writing && now_ms() < f->first_ms + WATCH_HOLD_MAX_MS) {
		/* The writer's IN_CLOSE_WRITE re-arms the timer; this
		 * deadline is only the cap. */
		loop_timer_arm(t, f->first_ms + WATCH_HOLD_MAX_MS);
		return;
	}
	/* Reported anyway after the cap: if the writer is still at it, its
	 * next IN_MODIFY sets the flag again. */
	f->writing = false;
	f->first_ms = -1;
	/* Last thing: the callback may free the watcher. */
	f->fn(f->path, f->first_us, f->data);
}

/* Adds the inotify watch for d.  Returns 0, or a negative errno; -ENOENT
 * and -ENOTDIR mean the directory is missing. */
static int watch_dir_add(struct watch_dir *d)
{
	int wd = inotify_add_watch(d->w->fd, d->path, WATCH_DIR_MASK);

	if (wd < 0)
		return neg_errno();
	d->wd = wd;
	d->attempt = 0;
	return 0;
}

static void watch_retry_arm(struct watch_dir *d)
{
	int64_t delay = WATCH_RETRY_FIRST_MS;

	for (unsigned i = 0; i < d->attempt && delay < WATCH_RETRY_MAX_MS; i++)
		delay *= 2;
	loop_timer_arm_in(d->retry, MIN(delay, WATCH_RETRY_MAX_MS));
	if (d->attempt < 32)
		d->attempt++;
}

static void watch_retry(struct loop_timer *t, void *data)
{
	struct watch_dir *d = data;
	int r = watch_dir_add(d);

	if (r == -ENOENT || r == -ENOTDIR) {
		watch_retry_arm(d);
		return;
	}
	if (r < 0) {
		log_warning("watch: cannot watch directory %s: %s", d->path,
			    strerror(-r));
		watch_retry_arm(d);
		return;
	}
	log_notice("watch: directory %s is back", d->path);
	/* The watch is in place before the report, so nothing written after
	 * the callback's read can be missed. */
	watch_touch_dir(d, false);
}

/* The directory of d is gone (deleted, moved away, unmounted): report its
 * files once and retry the watch until it is back. */
static void watch_dir_lost(struct watch_dir *d)
{
	log_notice("watch: directory %s is gone, retrying", d->path);
	d->wd = -1;
	d->attempt = 0;
	watch_touch_dir(d, true);
	watch_retry_arm(d);
}

/* Whether an event named name (NULL for an event on the directory itself)
 * concerns f. */
static bool watch_concerns(const struct watch_file *f, const char *name)
{
	return !name || streq(name, f->base) || strncmp(name, "..", 2) == 0;
}

/* Updates f's "open for writing" state from an event on its own name. */
static void watch_track_writer(struct watch_file *f, uint32_t mask)
{
	struct stat st;

	if (mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) {
		f->writing = false;
	} else if (mask & IN_MODIFY) {
		f->writing = true;
	} else if (mask & IN_CREATE) {
		/* `cmd > new-file` creates the file, then writes whenever cmd
		 * gets to it: an empty file must not be reported meanwhile.
		 * Only a lone regular file counts as opened for writing; a
		 * symlink, hard link or node gets no IN_CLOSE_WRITE. */
		if (lstat(f->path, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_nlink == 1)
			f->writing = true;
	}
}

void watcher_overflow(struct watcher *w)
{
	int64_t now = now_ms();

	log_warning("watch: inotify queue overflow, rereading all");
	/* The lost events may have said that a directory was deleted or
	 * moved away (IN_IGNORED, IN_MOVE_SELF): look each path up again.
	 * Adding a watch on an inode already watched returns its wd; another
	 * wd means the path now names another directory. */
	for (struct watch_dir *d = w->dirs; d; d = d->next) {
		int wd;

		if (d->wd < 0)
			continue; /* its retry timer is on it */
		wd = inotify_add_watch(w->fd, d->path, WATCH_DIR_MASK);
		if (wd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
			inotify_rm_watch(w->fd, d->wd);
			watch_dir_lost(d);
		} else if (wd < 0) {
			log_warning("watch: cannot watch directory %s again: "
				    "%s", d->path, strerror(errno));
		} else if (wd != d->wd) {
			log_notice("watch: directory %s was replaced",
				   d->path);
			/* Its IN_IGNORED then matches no directory. */
			inotify_rm_watch(w->fd, d->wd);
			d->wd = wd;
		}
	}
	/* Every file may have changed: each is reported once, as for an
	 * event on it (settled, and after a writer seen open has closed it,
	 * WATCH_HOLD_MAX_MS at most, since its IN_CLOSE_WRITE may be among
	 * the lost events). */
	for (struct watch_file *f = w->files; f; f = f->next)
		watch_touch(f, now, WATCH_SETTLE_MS);
}

static void watch_handle_event(struct watcher *w,
			       const struct inotify_event *ev, int64_t now)
{
	const char *name = ev->len > 0 ? ev->name : NULL;

	if (ev->mask & IN_Q_OVERFLOW) {
		watcher_overflow(w);
		return;
	}
	for (struct watch_file *f = w->files; f; f = f->next) {
		if (f->dir->wd != ev->wd || !watch_concerns(f, name))
			continue;
		if (name && streq(name, f->base))
			watch_track_writer(f, ev->mask);
		watch_touch(f, now, watch_settle_ms(f, name, ev->mask));
	}
	if (ev->mask & (IN_IGNORED | IN_MOVE_SELF)) {
		for (struct watch_dir *d = w->dirs; d; d = d->next) {
			if (d->wd != ev->wd)
				continue;
			/* Moved away: the path now names something else (or
			 * nothing); drop the watch and look up the path
			 * again.  Removing it queues an IN_IGNORED that then
			 * matches no directory. */
			if (ev->mask & IN_MOVE_SELF)
				inotify_rm_watch(w->fd, d->wd);
			watch_dir_lost(d);
		}
	}
}

static void watch_read(struct loop_source *source, uint32_t events,
		       void *data)
{
	struct watcher *w = data;
	char buf[4096]
		__attribute__((aligned(__alignof__(struct inotify_event))));

	for (int i = 0; i < WATCH_READS_MAX; i++) {
		ssize_t n = read(w->fd, buf, sizeof(buf));
		int64_t now = now_ms();

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			log_error("watch: reading inotify events: %s",
				  n < 0 ? strerror(errno) : "end of file");
			return;
		}
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const void *)p;
			watch_handle_event(w, ev, now);
			p += sizeof(*ev) + ev->len;
		}
	}
}

int watcher_new(struct loop *loop, struct watcher **out)
{
	struct watcher *w = zalloc(sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		r = neg_errno();
		goto err_watcher;
	}
	r = loop_add_fd(loop, w->fd, EPOLLIN, watch_read, w, &w->source);
	if (r < 0)
		goto err_inotify;
	*out = w;
	return 0;

err_inotify:
	close(w->fd);
err_watcher:
	free(w);
	return r;
}

void watcher_free(struct watcher *w)
{
	if (!w)
		return;
	while (w->files) {
		struct watch_file *f = w->files;
		w->files = f->next;
		loop_timer_free(f->settle);
		free(f->base);
		free(f->path);
		free(f);
	}
	while (w->dirs) {
		struct watch_dir *d = w->dirs;
		w->dirs = d->next;
		loop_timer_free(d->retry);
		free(d->path);
		free(d);
	}
	loop_remove_fd(w->source);
	/* Closing the inotify fd drops every watch. */
	close(w->fd);
	free(w);
}

/* Finds or creates the entry for directory dir_path, watching it or, when
 * it is missing, arming its retry.  Returns 0 or a negative errno. */
static int watch_dir_get(struct watcher *w, const char *dir_path,
			 struct watch_dir **out)
{
	struct watch_dir *d;
	int r;

	for (d = w->dirs; d; d = d->next) {
		if (streq(d->path, dir_path)) {
			*out = d;
			return 0;
		}
	}
	d = zalloc(sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->w = w;
	d->wd = -1;
	d->path = strdup(dir_path);
	if (!d->path) {
		r = -ENOMEM;
		goto err_dir;
	}
	d->retry = loop_timer_new(w->loop, watch_retry, d);
	if (!d->retry) {
		r = -ENOMEM;
		goto err_path;
	}
	r = watch_dir_add(d);
	if (r == -ENOENT || r == -ENOTDIR) {
		log_notice("watch: directory %s is missing, retrying", d->path);
		watch_retry_arm(d);
	} else if (r < 0) {
		goto err_timer;
	}
	d->next = w->dirs;
	w->dirs = d;
	*out = d;
	return 0;

err_timer:
	loop_timer_free(d->retry);
err_path:
	free(d->path);
err_dir:
	free(d);
	return r;
}

/* Splits path into copies of its directory and base names.  Returns 0 or
 * -EINVAL for a path that names no file, -ENOMEM. */
static int watch_split(const char *path, char **dir_out, char **base_out)
{
	size_t len = strlen(path);
	char *dir_copy, *base_copy, *base;
	int r = -ENOMEM;

	if (len == 0 || path[len - 1] == '/')
		return -EINVAL;
	dir_copy = strdup(path);
	if (!dir_copy)
		return -ENOMEM;
	base_copy = strdup(path);
	if (!base_copy)
		goto err_dir_copy;
	base = basename(base_copy);
	if (streq(base, ".") || streq(base, "..")) {
		r = -EINVAL;
		goto err_base_copy;
	}
	*base_out = strdup(base);
	if (!*base_out)
		goto err_base_copy;
	*dir_out = strdup(dirname(dir_copy));
	if (!*dir_out)
		goto err_base;
	free(base_copy);
	free(dir_copy);
	return 0;

err_base:
	free(*base_out);
err_base_copy:
	free(base_copy);
err_dir_copy:
	free(dir_copy);
	return r;
}

int watcher_add(struct watcher *w, const char *path, watch_fn *fn, void *data)
{
	struct watch_file *f;
	char *dir_path;
	int r;

	f = zalloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->w = w;
	f->fn = fn;
	f->data = data;
	f->first_ms = -1;
	f->path = strdup(path);
	if (!f->path) {
		r = -ENOMEM;
		goto err_file;
	}
	r = watch_split(path, &dir_path, &f->base);
	if (r < 0)
		goto err_path;
	f->settle = loop_timer_new(w->loop, watch_settled, f);
	if (!f->settle) {
		r = -ENOMEM;
		goto err_split;
	}
	/* Last step that can fail: a directory entry it creates stays valid
	 * for later files even if this one were dropped. */
	r = watch_dir_get(w, dir_path, &f->dir);
	if (r < 0)
		goto err_timer;
	free(dir_path);
	f->next = w->files;
	w->files = f;
	/* A missing directory is reported once, so the caller sees the file
	 * missing; its return is reported again. */
	if (f->dir->wd < 0)
		watch_touch(f, now_ms(), WATCH_SETTLE_MS);
	return 0;

err_timer:
	loop_timer_free(f->settle);
err_split:
	free(dir_path);
	free(f->base);
err_path:
	free(f->path);
err_file:
	free(f);
	return r;
}

void watcher_trigger_all(struct watcher *w)
{
	int64_t now = now_ms();

	for (struct watch_file *f = w->files; f; f = f->next)
		watch_touch(f, now, WATCH_SETTLE_MS);
}

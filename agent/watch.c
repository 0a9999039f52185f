/*
 * The agent's file watcher: inotify on the directories a file's path
 * resolves through, a settle timer and a retry timer per file; see
 * watch.h.
 *
 * Files are few (a handful of env files) and their paths short, so each
 * file keeps a plain array of the (directory, name) pairs its path went
 * through when it was last resolved, and every event scans them.
 * Directories are shared by inotify watch descriptor: the kernel gives an
 * inode one wd whatever path reached it, so two spellings of a directory
 * ("d", "d/.", a link to it) are one entry, and its watch is removed once,
 * when no file needs it any more.
 *
 * Callbacks only ever run from a file's settle timer, never from the
 * inotify handler, so a callback that adds files or frees the watcher
 * cannot pull the lists from under an event scan.  Resolution, which adds
 * and drops watches, runs from the timers too.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
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
	char *path;   /* as first reached, for messages */
	int wd;       /* -1 once the kernel dropped the watch */
	unsigned refs;
	struct watch_dir *next;
};

/* A name in a directory that the file's path goes through: a symlink, or
 * the last component resolved (the file itself, or the first one
 * missing). */
struct watch_link {
	struct watch_dir *dir;
	char *name;
};

struct watch_file {
	struct watcher *w;
	char *path; /* as given */
	watch_fn *fn;
	void *data;

	/* From the last resolution; the last link is where it ended. */
	struct watch_link *links;
	size_t n_links;
	bool is_file;  /* the last link is the path's final component */
	char *real;    /* the path of the last link, directories resolved */
	int watch_error; /* a watch that could not be added, for the log */

	struct loop_timer *settle;
	struct loop_timer *retry;
	unsigned retry_attempt;
	int64_t first_ms; /* first unreported event, -1 when none */
	int64_t first_us; /* the same, finer, for the callback */
	bool writing;	  /* open for writing: no IN_CLOSE_WRITE yet */
	bool recheck;	  /* the caller asked: report even while writing */
	/* Its log lines (watch.h WATCH_LOG_*): the budget, lines left out
	 * since the last summary and when that was. */
	struct log_bucket log;
	unsigned log_suppressed;
	int64_t log_summary_ms;
	struct watch_file *next;
};

struct watcher {
	struct loop *loop;
	int fd;
	struct loop_source *source;
	struct watch_dir *dirs;
	struct watch_file *files;
	struct log_bucket log_all; /* the log lines of all files' paths */
	/* Queue overflows not logged since the last line about one. */
	unsigned overflows;
	int64_t overflow_log_ms;
};

/* A line about f's path, within its budget and that of all files; one
 * left out is counted and said by watch_log_summary(). */
PRINTF(3, 4)
static void watch_log(struct watch_file *f, int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!log_enabled(level))
		return;
	if (!log_bucket_take(&f->log, &f->w->log_all, now_ms())) {
		f->log_suppressed++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, "%s", line);
}

/* The directory entry for dir_path, watching it.  Returns 0 or the
 * negative errno of inotify_add_watch(). */
static int watch_dir_get(struct watcher *w, const char *dir_path,
			 struct watch_dir **out)
{
	struct watch_dir *d;
	int wd = inotify_add_watch(w->fd, dir_path, WATCH_DIR_MASK);

	if (wd < 0)
		return neg_errno();
	for (d = w->dirs; d; d = d->next) {
		if (d->wd == wd) {
			d->refs++;
			*out = d;
			return 0;
		}
	}
	d = zalloc(sizeof(*d));
	if (!d || !(d->path = strdup(dir_path))) {
		free(d);
		inotify_rm_watch(w->fd, wd);
		return -ENOMEM;
	}
	d->w = w;
	d->wd = wd;
	d->refs = 1;
	d->next = w->dirs;
	w->dirs = d;
	*out = d;
	return 0;
}

static void watch_dir_put(struct watch_dir *d)
{
	struct watcher *w = d->w;

	if (--d->refs > 0)
		return;
	/* Its IN_IGNORED then matches no directory. */
	if (d->wd >= 0)
		inotify_rm_watch(w->fd, d->wd);
	for (struct watch_dir **p = &w->dirs; *p; p = &(*p)->next) {
		if (*p == d) {
			*p = d->next;
			break;
		}
	}
	free(d->path);
	free(d);
}

static void watch_links_free(struct watch_link *links, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		watch_dir_put(links[i].dir);
		free(links[i].name);
	}
	free(links);
}

/* Links being collected by a resolution. */
struct watch_chain {
	struct watch_link *links;
	size_t n, cap;
};

static int watch_chain_add(struct watcher *w, struct watch_chain *c,
			   const char *dir, const char *name, size_t name_len)
{
	struct watch_link *l;
	int r;

	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 4;
		l = realloc(c->links, cap * sizeof(*l));
		if (!l)
			return -ENOMEM;
		c->links = l;
		c->cap = cap;
	}
	l = &c->links[c->n];
	l->name = strndup(name, name_len);
	if (!l->name)
		return -ENOMEM;
	r = watch_dir_get(w, dir, &l->dir);
	if (r < 0) {
		free(l->name);
		return r;
	}
	c->n++;
	return 0;
}

/* dir + "/" + name into out (PATH_MAX); false when too long. */
static bool watch_join(char *out, const char *dir, const char *name,
		       size_t name_len)
{
	int n = snprintf(out, PATH_MAX, "%s%s%.*s", dir,
			 streq(dir, "/") ? "" : "/", (int)name_len, name);

	return n >= 0 && n < PATH_MAX;
}

/* cur's parent, as "..": lexical, since cur holds no symlink. */
static void watch_parent(char *cur)
{
	char *slash = strrchr(cur, '/');
	const char *last = slash ? slash + 1 : cur;

	if (streq(last, ".") || streq(last, "..") || streq(cur, "/")) {
		if (!streq(cur, "/") && strlen(cur) + 3 < PATH_MAX)
			strcat(cur, "/..");
		return;
	}
	if (slash == cur)
		cur[1] = '\0';		/* "/etc" -> "/" */
	else if (slash)
		*slash = '\0';		/* "/a/b" -> "/a" */
	else
		strcpy(cur, ".");	/* "a" -> "." */
}

/*
 * Resolves f->path one component at a time, as the kernel would, and
 * watches each directory holding a symlink met on the way and the one
 * holding the last component reached: the file, or the first component
 * missing.  The new links replace the old ones (new watches are taken
 * before old ones are dropped, so a directory in both is never unwatched).
 * Returns 0, or a negative errno when a directory on the way cannot be
 * watched: what could be watched is, and the caller retries.
 */
static int watch_resolve(struct watch_file *f)
{
	struct watch_chain c = { 0 };
	char cur[PATH_MAX], rest[PATH_MAX], next[PATH_MAX];
	char target[PATH_MAX], *old_real = f->real;
	size_t at = 0;
	unsigned followed = 0;
	bool is_file = false, was_file = f->is_file;
	int r = 0;

	strcpy(cur, f->path[0] == '/' ? "/" : ".");
	snprintf(rest, sizeof(rest), "%s", f->path);
	f->real = NULL;
	for (;;) {
		const char *comp;
		size_t len, end;
		bool last;
		struct stat st;

		while (rest[at] == '/')
			at++;
		if (!rest[at])
			break; /* ended on a directory: nothing to read */
		comp = rest + at;
		len = strcspn(comp, "/");
		at += len;
		for (end = at; rest[end] == '/'; end++)
			;
		last = rest[end] == '\0';
		if (len == 1 && comp[0] == '.')
			continue;
		if (len == 2 && comp[0] == '.' && comp[1] == '.') {
			watch_parent(cur);
			continue;
		}
		if (!watch_join(next, cur, comp, len)) {
			r = -ENAMETOOLONG;
			break;
		}
		bool found = lstat(next, &st) == 0;
		if (found && !last && S_ISDIR(st.st_mode)) {
			/* A directory on the way may be renamed, removed or
			 * replaced (mv new current): watched by its name in
			 * its parent, like a link. */
			r = watch_chain_add(f->w, &c, cur, comp, len);
			if (r < 0)
				break;
			strcpy(cur, next);
			continue;
		}
		if (!found || !S_ISLNK(st.st_mode)) {
			/* The file itself, a missing component, or one that
			 * is not a directory: where the path ends for us
			 * (the read says why). */
			r = watch_chain_add(f->w, &c, cur, comp, len);
			is_file = last;
			f->real = strdup(next);
			break;
		}
		/* A symlink: watch it where it is, then go where it
		 * points. */
		r = watch_chain_add(f->w, &c, cur, comp, len);
		if (r < 0)
			break;
		if (++followed > WATCH_LINKS_MAX)
			break; /* a loop: the read reports ELOOP */
		ssize_t n = readlink(next, target, sizeof(target) - 1);
		if (n <= 0)
			break; /* replaced meanwhile: its event is queued */
		target[n] = '\0';
		if ((size_t)n + 1 + strlen(rest + at) >= sizeof(rest)) {
			r = -ENAMETOOLONG;
			break;
		}
		/* rest = target + rest[at..] */
		memmove(rest + n, rest + at, strlen(rest + at) + 1);
		memcpy(rest, target, (size_t)n);
		at = 0;
		if (target[0] == '/')
			strcpy(cur, "/");
	}
	watch_links_free(f->links, f->n_links);
	f->links = c.links;
	f->n_links = c.n;
	f->is_file = is_file;
	if (old_real && f->real && !streq(old_real, f->real)) {
		/* Another file now: a writer seen on the old one is not
		 * writing this one. */
		f->writing = false;
		if (was_file && is_file)
			watch_log(f, LOG_INFO, "watch: %s now resolves to %s",
				  f->path, f->real);
	}
	free(old_real);
	return r;
}

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

static void watch_retry_arm(struct watch_file *f)
{
	int64_t delay = WATCH_RETRY_FIRST_MS;

	for (unsigned i = 0; i < f->retry_attempt && delay < WATCH_RETRY_MAX_MS;
	     i++)
		delay *= 2;
	loop_timer_arm_in(f->retry, MIN(delay, WATCH_RETRY_MAX_MS));
	if (f->retry_attempt < 32)
		f->retry_attempt++;
}

/* Resolves f again; a watch that cannot be added is logged once and
 * retried.  Returns what watch_resolve() did. */
static int watch_refresh(struct watch_file *f)
{
	int r = watch_resolve(f);

	if (r < 0) {
		if (r != f->watch_error)
			watch_log(f, LOG_WARNING, "watch: cannot watch the "
				  "path to %s: %s; retrying", f->path,
				  strerror(-r));
		f->watch_error = r;
		if (!loop_timer_armed(f->retry))
			watch_retry_arm(f);
		return r;
	}
	if (f->watch_error)
		watch_log(f, LOG_NOTICE, "watch: %s is watched again",
			  f->path);
	f->watch_error = 0;
	f->retry_attempt = 0;
	loop_timer_disarm(f->retry);
	return 0;
}

/* Says how many lines about f's path were left out, and how it resolves
 * now, at most once every WATCH_LOG_SUMMARY_MS; and the queue overflows
 * not logged.  When one is not due yet, a report is scheduled for when it
 * is, so that it is said though nothing else happens. */
static void watch_log_summary(struct watch_file *f)
{
	struct watcher *w = f->w;
	int64_t now = now_ms(), wait = -1;

	if (f->log_suppressed &&
	    now - f->log_summary_ms >= WATCH_LOG_SUMMARY_MS) {
		log_notice("watch: %s: %u more line(s) about its path not "
			   "logged (at most %d at once, %d a second); it "
			   "resolves to %s now%s", f->path, f->log_suppressed,
			   WATCH_LOG_BURST, WATCH_LOG_PER_S,
			   f->is_file && f->real ? f->real : "no file",
			   f->watch_error ? ", not all of it watched" : "");
		f->log_suppressed = 0;
		f->log_summary_ms = now;
	} else if (f->log_suppressed) {
		wait = f->log_summary_ms + WATCH_LOG_SUMMARY_MS - now;
	}
	if (w->overflows && now - w->overflow_log_ms >= WATCH_LOG_SUMMARY_MS) {
		log_warning("watch: %u more inotify queue overflow(s), each "
			    "rereading all", w->overflows);
		w->overflows = 0;
		w->overflow_log_ms = now;
	} else if (w->overflows) {
		int64_t o = w->overflow_log_ms + WATCH_LOG_SUMMARY_MS - now;
		wait = wait < 0 ? o : MIN(wait, o);
	}
	if (wait < 0)
		return;
	if (f->first_ms < 0) {
		f->first_ms = now;
		f->first_us = now_us();
	}
	f->recheck = true;
	if (!loop_timer_armed(f->settle) ||
	    loop_timer_deadline(f->settle) > now + wait)
		loop_timer_arm(f->settle, now + MAX(wait, 1));
}

static void watch_settled(struct loop_timer *t, void *data)
{
	struct watch_file *f = data;
	struct watch_report rep;

	if (f->writing && !f->recheck &&
	    now_ms() < f->first_ms + WATCH_HOLD_MAX_MS) {
		/* The writer's IN_CLOSE_WRITE re-arms the timer; this
		 * deadline is only the cap. */
		loop_timer_arm(t, f->first_ms + WATCH_HOLD_MAX_MS);
		return;
	}
	/* The watches first: nothing written after the callback's read can
	 * then be missed. */
	watch_refresh(f);
	rep = (struct watch_report){
		.first_us = f->first_us,
		.writer_open = f->writing,
	};
	f->first_ms = -1;
	f->recheck = false;
	watch_log_summary(f);
	/* Last thing: the callback may free the watcher. */
	f->fn(f->path, &rep, f->data);
}

/* A watch could not be added: try again, and report once it is in
 * place, as changes may have been missed meanwhile. */
static void watch_retry(struct loop_timer *t, void *data)
{
	struct watch_file *f = data;

	if (watch_refresh(f) == 0)
		watch_touch(f, now_ms(), WATCH_SETTLE_MS);
}

/* How long to wait for more after an event on link (the last one when
 * last): less when the event itself says a whole new version is in place
 * (a writer closed the file, it or a link on the way was renamed in). */
static int watch_settle_ms(const char *name, bool last, uint32_t mask)
{
	if (name && last && (mask & IN_CLOSE_WRITE))
		return WATCH_SETTLE_DONE_MS;
	if (name && (mask & IN_MOVED_TO))
		return WATCH_SETTLE_DONE_MS;
	return WATCH_SETTLE_MS;
}

/* Updates f's "open for writing" state from an event on the file's own
 * name. */
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
		if (f->real && lstat(f->real, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_nlink == 1)
			f->writing = true;
	}
}

void watcher_overflow(struct watcher *w)
{
	int64_t now = now_ms();

	/* Whoever can write a directory on a path can cause these at will:
	 * one line a second, the others counted (watch_log_summary()). */
	if (now - w->overflow_log_ms >= WATCH_LOG_SUMMARY_MS) {
		log_warning("watch: inotify queue overflow, rereading all");
		w->overflow_log_ms = now;
	} else {
		w->overflows++;
	}
	/* Every file may have changed, and any directory or link on the
	 * way may have been replaced: each is resolved again and reported
	 * once.  Whether a writer is still at work cannot be told (its
	 * IN_CLOSE_WRITE may be among the lost events): the reader's own
	 * check decides (layers.h). */
	for (struct watch_file *f = w->files; f; f = f->next) {
		f->writing = false;
		watch_touch(f, now, WATCH_SETTLE_MS);
	}
}

static void watch_handle_event(struct watcher *w,
			       const struct inotify_event *ev, int64_t now)
{
	const char *name = ev->len > 0 ? ev->name : NULL;
	uint32_t gone = IN_IGNORED | IN_MOVE_SELF | IN_DELETE_SELF;

	if (ev->mask & IN_Q_OVERFLOW) {
		watcher_overflow(w);
		return;
	}
	for (struct watch_file *f = w->files; f; f = f->next) {
		for (size_t i = 0; i < f->n_links; i++) {
			const struct watch_link *l = &f->links[i];
			bool last = i + 1 == f->n_links;

			if (l->dir->wd != ev->wd ||
			    (name && !streq(name, l->name)))
				continue;
			if (last && name && f->is_file)
				watch_track_writer(f, ev->mask);
			else if (last && !name && (ev->mask & gone))
				f->writing = false;
			watch_touch(f, now, watch_settle_ms(name, last,
							    ev->mask));
			break;
		}
	}
	if (!(ev->mask & gone))
		return;
	/* The directory is gone or moved away: the path no longer goes
	 * through it.  Its files, touched above, resolve again. */
	for (struct watch_dir *d = w->dirs; d; d = d->next) {
		if (d->wd != ev->wd)
			continue;
		if (ev->mask & IN_MOVE_SELF)
			inotify_rm_watch(w->fd, d->wd);
		if (ev->mask & (IN_MOVE_SELF | IN_IGNORED))
			d->wd = -1;
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
	log_bucket_init(&w->log_all, WATCH_LOG_ALL_BURST, WATCH_LOG_ALL_PER_S,
			now_ms());
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

static void watch_file_free(struct watch_file *f)
{
	watch_links_free(f->links, f->n_links);
	loop_timer_free(f->settle);
	loop_timer_free(f->retry);
	free(f->real);
	free(f->path);
	free(f);
}

void watcher_free(struct watcher *w)
{
	if (!w)
		return;
	while (w->files) {
		struct watch_file *f = w->files;
		w->files = f->next;
		watch_file_free(f);
	}
	loop_remove_fd(w->source);
	/* Closing the inotify fd drops every watch. */
	close(w->fd);
	free(w);
}

/* Whether path names a file: not empty, not ending in '/', ".", "..". */
static bool watch_path_ok(const char *path)
{
	size_t len = strlen(path);
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	return len > 0 && len < PATH_MAX && path[len - 1] != '/' &&
	       !streq(base, ".") && !streq(base, "..");
}

int watcher_add(struct watcher *w, const char *path, watch_fn *fn, void *data)
{
	struct watch_file *f;

	if (!watch_path_ok(path))
		return -EINVAL;
	f = zalloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->w = w;
	f->fn = fn;
	f->data = data;
	f->first_ms = -1;
	log_bucket_init(&f->log, WATCH_LOG_BURST, WATCH_LOG_PER_S, now_ms());
	f->path = strdup(path);
	f->settle = loop_timer_new(w->loop, watch_settled, f);
	f->retry = loop_timer_new(w->loop, watch_retry, f);
	if (!f->path || !f->settle || !f->retry) {
		watch_file_free(f);
		return -ENOMEM;
	}
	f->next = w->files;
	w->files = f;
	/* A watch that cannot be added now is retried; ENOMEM is not worth
	 * going on for. */
	if (watch_refresh(f) == -ENOMEM) {
		w->files = f->next;
		watch_file_free(f);
		return -ENOMEM;
	}
	/* A missing directory is reported once, so the caller sees the file
	 * missing; its coming is reported again. */
	if (!f->is_file)
		watch_touch(f, now_ms(), WATCH_SETTLE_MS);
	return 0;
}

void watcher_recheck(struct watcher *w, const char *path, int64_t delay_ms)
{
	int64_t now = now_ms();

	for (struct watch_file *f = w->files; f; f = f->next) {
		if (!streq(f->path, path))
			continue;
		if (f->first_ms < 0) {
			f->first_ms = now;
			f->first_us = now_us();
		}
		f->recheck = true;
		if (!loop_timer_armed(f->settle) ||
		    loop_timer_deadline(f->settle) > now + delay_ms)
			loop_timer_arm(f->settle, now + MAX(delay_ms, 0));
	}
}

bool watcher_writing(const struct watcher *w, const char *path)
{
	for (const struct watch_file *f = w->files; f; f = f->next)
		if (streq(f->path, path))
			return f->writing;
	return false;
}

void watcher_trigger_all(struct watcher *w)
{
	int64_t now = now_ms();

	for (struct watch_file *f = w->files; f; f = f->next)
		watch_touch(f, now, WATCH_SETTLE_MS);
}

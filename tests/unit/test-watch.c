/*
 * Unit test of agent/watch.c: for each way an env file gets written, the
 * watcher's callback fires exactly once, after the writer is done, and
 * reads the final content.
 *
 * The writer runs in this process between loop_dispatch() calls; inotify
 * queues events inside the writer's syscalls, so each case is deterministic.
 * Every wait is bounded (WAIT_MAX_MS) and fails instead of hanging.  Exit
 * status 0 means every case passed.
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/watch.h"
#include "common/loop.h"
#include "common/util.h"

/* Survives NDEBUG, unlike assert(). */
#define CHECK(cond)                                                       \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "%s:%d: %s: CHECK failed: %s\n",  \
				__FILE__, __LINE__, test_case, #cond);    \
			exit(1);                                          \
		}                                                         \
	} while (0)

/* Longest wait for an expected callback. */
#define WAIT_MAX_MS 2000
/* How long to keep dispatching after the expected calls, to catch extra
 * ones: many times WATCH_SETTLE_MS. */
#define QUIET_MS 40

static const char *test_case = "setup";
static struct loop *loop;
static char tmp_root[] = "/tmp/test-watch.XXXXXX";

struct seen {
	char path[512];
	int calls;
	bool exists;
	char content[256];
	/* Set while a writer holds the file half-written: a callback then is
	 * a failure, unless it says the writer has not closed the file. */
	bool half_written;
	bool writer_open; /* what the last report said */
};

static void on_change(const char *path, const struct watch_report *rep,
		      void *data)
{
	struct seen *s = data;
	int64_t first_us = rep->first_us;
	ssize_t n;
	int fd;

	CHECK(streq(path, s->path));
	CHECK(first_us > 0 && first_us <= now_us());
	CHECK(!s->half_written || rep->writer_open);
	s->writer_open = rep->writer_open;
	s->calls++;
	s->content[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	s->exists = fd >= 0;
	if (fd < 0) {
		CHECK(errno == ENOENT || errno == ELOOP);
		return;
	}
	n = read(fd, s->content, sizeof(s->content) - 1);
	CHECK(n >= 0);
	s->content[n] = '\0';
	close(fd);
}

/* Dispatches the loop for ms milliseconds. */
static void pump(int ms)
{
	int64_t end = now_ms() + ms;

	for (int64_t now = now_ms(); now < end; now = now_ms())
		CHECK(loop_dispatch(loop, (int)(end - now)) == 0);
}

/* Dispatches until s has seen want calls (failing after max_ms), then for
 * QUIET_MS more, checking no extra call comes. */
static void wait_calls_max(struct seen *s, int want, int max_ms)
{
	int64_t deadline = now_ms() + max_ms;

	while (s->calls < want) {
		int64_t now = now_ms();
		CHECK(now < deadline);
		CHECK(loop_dispatch(loop, (int)(deadline - now)) == 0);
	}
	pump(QUIET_MS);
	CHECK(s->calls == want);
}

static void wait_calls(struct seen *s, int want)
{
	wait_calls_max(s, want, WAIT_MAX_MS);
}

static void write_all(int fd, const char *text)
{
	size_t len = strlen(text);

	CHECK(write(fd, text, len) == (ssize_t)len);
}

/* Writes path in one go with the given open flags. */
static void write_file(const char *path, const char *text, int flags)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | flags, 0600);

	CHECK(fd >= 0);
	write_all(fd, text);
	CHECK(close(fd) == 0);
}

static void join(char *out, const char *dir, const char *name)
{
	CHECK(snprintf(out, 512, "%s/%s", dir, name) < 512);
}

/* A fresh directory for the case; returns its path in dir. */
static void case_dir(char *dir, const char *name)
{
	test_case = name;
	join(dir, tmp_root, name);
	CHECK(mkdir(dir, 0700) == 0);
}

/* A fresh directory with app.env holding initial, watched by a new
 * watcher; checks that setting up reports nothing. */
static struct watcher *case_start(const char *name, struct seen *s,
				  char *dir, const char *initial)
{
	struct watcher *w;

	memset(s, 0, sizeof(*s));
	case_dir(dir, name);
	join(s->path, dir, "app.env");
	if (initial)
		write_file(s->path, initial, O_CREAT | O_EXCL);
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s->path, on_change, s) == 0);
	pump(QUIET_MS);
	CHECK(s->calls == 0);
	return w;
}

static void expect_content(const struct seen *s, const char *text)
{
	CHECK(s->exists);
	CHECK(streq(s->content, text));
}

static void test_in_place(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("in-place", &s, dir, "A=1\n");

	/* Same length: no truncation needed, no stale tail. */
	write_file(s.path, "A=2\n", 0);
	wait_calls(&s, 1);
	expect_content(&s, "A=2\n");
	watcher_free(w);
}

static void test_truncate(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("truncate", &s, dir, "A=1\nB=1\n");
	int fd = open(s.path, O_WRONLY | O_TRUNC | O_CLOEXEC);

	CHECK(fd >= 0);
	write_all(fd, "A=2\n");
	write_all(fd, "C=3\n");
	CHECK(close(fd) == 0);
	wait_calls(&s, 1);
	expect_content(&s, "A=2\nC=3\n");
	watcher_free(w);
}

static void test_rename(void)
{
	struct seen s;
	char dir[512], tmp[512];
	struct watcher *w = case_start("rename", &s, dir, "A=1\n");

	join(tmp, dir, "app.env.tmp");
	write_file(tmp, "A=2\nB=2\n", O_CREAT | O_EXCL);
	CHECK(rename(tmp, s.path) == 0);
	wait_calls(&s, 1);
	expect_content(&s, "A=2\nB=2\n");

	/* An editor keeping a backup: move the old one away, write anew. */
	join(tmp, dir, "app.env~");
	CHECK(rename(s.path, tmp) == 0);
	write_file(s.path, "A=3\n", O_CREAT | O_EXCL);
	wait_calls(&s, 2);
	expect_content(&s, "A=3\n");
	watcher_free(w);
}

static void test_delete_recreate(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("delete-recreate", &s, dir, "A=1\n");

	CHECK(unlink(s.path) == 0);
	write_file(s.path, "A=2\n", O_CREAT | O_EXCL);
	wait_calls(&s, 1);
	expect_content(&s, "A=2\n");

	/* Deleted and left deleted: reported missing. */
	CHECK(unlink(s.path) == 0);
	wait_calls(&s, 2);
	CHECK(!s.exists);
	watcher_free(w);
}

/* Writes the Kubernetes AtomicWriter layout's next version: a timestamped
 * directory, then ..data_tmp renamed over ..data, then the old directory
 * removed.  Entry names as the kubelet makes them. */
static void k8s_publish(const char *dir, const char *old_ts, const char *ts,
			const char *text)
{
	char p[512], q[512], f[512];

	join(p, dir, ts);
	CHECK(mkdir(p, 0755) == 0);
	join(f, p, "app.env");
	write_file(f, text, O_CREAT | O_EXCL);
	join(q, dir, "..data_tmp");
	CHECK(symlink(ts, q) == 0);
	join(p, dir, "..data");
	CHECK(rename(q, p) == 0);
	if (old_ts) {
		join(p, dir, old_ts);
		join(f, p, "app.env");
		CHECK(unlink(f) == 0);
		CHECK(rmdir(p) == 0);
	}
}

static void test_k8s(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w;

	memset(&s, 0, sizeof(s));
	case_dir(dir, "k8s");
	k8s_publish(dir, NULL, "..2026_11_22_20_00_00.123", "A=1\n");
	join(s.path, dir, "app.env");
	CHECK(symlink("..data/app.env", s.path) == 0);
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	pump(QUIET_MS);
	CHECK(s.calls == 0);

	k8s_publish(dir, "..2026_11_22_20_00_00.123",
		    "..2026_11_22_20_05_00.456", "A=2\n");
	wait_calls(&s, 1);
	expect_content(&s, "A=2\n");
	watcher_free(w);
}

static void test_slow_writer(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("slow-writer", &s, dir, "A=1\n");
	int fd = open(s.path, O_WRONLY | O_TRUNC | O_CLOEXEC);

	CHECK(fd >= 0);
	s.half_written = true;
	write_all(fd, "A=2\n");
	pump(50);
	CHECK(s.calls == 0);
	write_all(fd, "B=2\n");
	s.half_written = false;
	CHECK(close(fd) == 0);
	wait_calls(&s, 1);
	expect_content(&s, "A=2\nB=2\n");
	watcher_free(w);
}

/* `slow-cmd > app.env` on a new file: created empty, written later. */
static void test_slow_creator(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("slow-creator", &s, dir, NULL);
	int fd = open(s.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	CHECK(fd >= 0);
	s.half_written = true;
	pump(50);
	CHECK(s.calls == 0);
	write_all(fd, "A=1\n");
	s.half_written = false;
	CHECK(close(fd) == 0);
	wait_calls(&s, 1);
	expect_content(&s, "A=1\n");
	watcher_free(w);
}

/* A writer that never closes is reported after WATCH_HOLD_MAX_MS anyway,
 * and the report says so; a recheck asked for meanwhile says so too; the
 * close is reported as a normal change. */
static void test_hold_cap(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("hold-cap", &s, dir, "A=1\n");
	int fd = open(s.path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	int64_t start = now_ms();

	CHECK(fd >= 0);
	s.half_written = true;
	write_all(fd, "A=2\n");
	wait_calls_max(&s, 1, WATCH_HOLD_MAX_MS + 1000);
	CHECK(now_ms() - start >= WATCH_HOLD_MAX_MS);
	CHECK(s.writer_open);
	expect_content(&s, "A=2\n");
	start = now_ms();
	watcher_recheck(w, s.path, 100);
	wait_calls(&s, 2);
	CHECK(now_ms() - start >= 100 && s.writer_open);
	s.half_written = false;
	CHECK(close(fd) == 0);
	wait_calls(&s, 3);
	CHECK(!s.writer_open);
	watcher_free(w);
}

/* A recheck without any change reports once after the delay. */
static void test_recheck(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("recheck", &s, dir, "A=1\n");
	int64_t start = now_ms();

	watcher_recheck(w, s.path, 50);
	watcher_recheck(w, "/no/such/file", 0);
	wait_calls(&s, 1);
	CHECK(now_ms() - start >= 50);
	CHECK(!s.writer_open);
	expect_content(&s, "A=1\n");
	watcher_free(w);
}

static void make_link(const char *target, const char *path)
{
	CHECK(symlink(target, path) == 0);
}

/* Points the symlink at path to target the way ln -sfn and deploy tools
 * do: a new link renamed over the old one. */
static void repoint(const char *target, const char *path)
{
	char tmp[512];

	CHECK(snprintf(tmp, sizeof(tmp), "%s.new", path) < (int)sizeof(tmp));
	make_link(target, tmp);
	CHECK(rename(tmp, path) == 0);
}

/* Every way a file behind a link changes: written through the link, its
 * target written in place, truncated, replaced by rename; each is
 * reported once with the new content. */
static void expect_follows(struct seen *s, const char *target, int *calls,
			   const char *tag)
{
	char text[64], tmp[512];

	snprintf(text, sizeof(text), "%s=through-link\n", tag);
	write_file(s->path, text, O_TRUNC);
	wait_calls(s, ++*calls);
	expect_content(s, text);
	snprintf(text, sizeof(text), "%s=in-place\n", tag);
	write_file(target, text, O_TRUNC);
	wait_calls(s, ++*calls);
	expect_content(s, text);
	snprintf(text, sizeof(text), "%s=renamed\n", tag);
	CHECK(snprintf(tmp, sizeof(tmp), "%s.tmp", target) < (int)sizeof(tmp));
	write_file(tmp, text, O_CREAT | O_EXCL);
	CHECK(rename(tmp, target) == 0);
	wait_calls(s, ++*calls);
	expect_content(s, text);
}

/* app.env -> real.env in the same directory; then re-pointed at
 * other.env, after which only other.env counts. */
static void test_link_same_dir(void)
{
	struct seen s;
	char dir[512], real[512], other[512];
	struct watcher *w;
	int calls = 0;

	memset(&s, 0, sizeof(s));
	case_dir(dir, "link-same-dir");
	join(real, dir, "real.env");
	join(other, dir, "other.env");
	join(s.path, dir, "app.env");
	write_file(real, "A=1\n", O_CREAT | O_EXCL);
	write_file(other, "B=1\n", O_CREAT | O_EXCL);
	make_link("real.env", s.path);
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	pump(QUIET_MS);
	CHECK(s.calls == 0);

	expect_follows(&s, real, &calls, "A");
	repoint("other.env", s.path);
	wait_calls(&s, ++calls);
	expect_content(&s, "B=1\n");
	expect_follows(&s, other, &calls, "B");
	/* The old target is nothing to this path any more. */
	write_file(real, "A=9\n", O_TRUNC);
	pump(QUIET_MS);
	CHECK(s.calls == calls);
	watcher_free(w);
}

/* app.env -> ../secrets/db.env: the target lives in another directory. */
static void test_link_other_dir(void)
{
	struct seen s;
	char dir[512], sec[512], real[512];
	struct watcher *w;
	int calls = 0;

	memset(&s, 0, sizeof(s));
	case_dir(dir, "link-other-dir");
	join(sec, tmp_root, "link-other-dir-secrets");
	CHECK(mkdir(sec, 0700) == 0);
	join(real, sec, "db.env");
	join(s.path, dir, "app.env");
	write_file(real, "A=1\n", O_CREAT | O_EXCL);
	make_link("../link-other-dir-secrets/db.env", s.path);
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	pump(QUIET_MS);
	CHECK(s.calls == 0);
	expect_follows(&s, real, &calls, "A");
	watcher_free(w);
}

/* app.env -> l1 -> /abs/l2 -> real.env: a chain of links, one absolute;
 * re-pointing the middle one is seen. */
static void test_link_chain(void)
{
	struct seen s;
	char dir[512], d2[512], l1[512], l2[512], l2_target[512], real[512],
		real2[512];
	struct watcher *w;
	int calls = 0;

	memset(&s, 0, sizeof(s));
	case_dir(dir, "link-chain");
	join(d2, tmp_root, "link-chain-2");
	CHECK(mkdir(d2, 0700) == 0);
	join(l1, dir, "l1");
	join(l2, d2, "l2");
	join(real, d2, "real.env");
	join(real2, dir, "real2.env");
	join(s.path, dir, "app.env");
	write_file(real, "A=1\n", O_CREAT | O_EXCL);
	write_file(real2, "C=1\n", O_CREAT | O_EXCL);
	make_link("real.env", l2);
	CHECK(snprintf(l2_target, sizeof(l2_target), "%s", l2) > 0);
	make_link(l2_target, l1); /* absolute */
	make_link("l1", s.path);
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	pump(QUIET_MS);
	CHECK(s.calls == 0);
	expect_follows(&s, real, &calls, "A");
	/* The middle link now points elsewhere. */
	repoint(real2, l2);
	wait_calls(&s, ++calls);
	expect_content(&s, "C=1\n");
	expect_follows(&s, real2, &calls, "C");
	watcher_free(w);
}

/* current -> releases/1, the path going through it: a deploy re-points
 * the directory link; writes to the old release no longer count. */
static void test_link_dir(void)
{
	struct seen s;
	char dir[512], rel[512], r1[512], r2[512], cur[512], f1[512], f2[512];
	struct watcher *w;
	int calls = 0;

	memset(&s, 0, sizeof(s));
	case_dir(dir, "link-dir");
	join(rel, dir, "releases");
	CHECK(mkdir(rel, 0700) == 0);
	join(r1, rel, "1");
	join(r2, rel, "2");
	CHECK(mkdir(r1, 0700) == 0);
	CHECK(mkdir(r2, 0700) == 0);
	join(f1, r1, "app.env");
	join(f2, r2, "app.env");
	write_file(f1, "A=1\n", O_CREAT | O_EXCL);
	write_file(f2, "A=2\n", O_CREAT | O_EXCL);
	join(cur, dir, "current");
	make_link("releases/1", cur);
	join(s.path, cur, "app.env");
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	pump(QUIET_MS);
	CHECK(s.calls == 0);
	expect_follows(&s, f1, &calls, "A");
	repoint("releases/2", cur);
	wait_calls(&s, ++calls);
	expect_content(&s, "A=2\n");
	expect_follows(&s, f2, &calls, "B");
	write_file(f1, "A=9\n", O_TRUNC);
	pump(QUIET_MS);
	CHECK(s.calls == calls);
	watcher_free(w);
}

/* current/config/app.env with current a plain directory, swapped for
 * another by two renames, as deploys do: the new one's file is read, the
 * old one's no longer counts.  (The file's own directory is not the one
 * renamed: its own events say nothing.) */
static void test_dir_swapped(void)
{
	struct seen s;
	char dir[512], cur[512], next[512], old[512], sub[512], f_next[512],
		f_old[512];
	struct watcher *w;
	int calls = 0;

	memset(&s, 0, sizeof(s));
	case_dir(dir, "dir-swapped");
	join(cur, dir, "current");
	join(next, dir, "next");
	join(old, dir, "old");
	CHECK(mkdir(cur, 0700) == 0);
	CHECK(mkdir(next, 0700) == 0);
	join(sub, cur, "config");
	CHECK(mkdir(sub, 0700) == 0);
	join(s.path, sub, "app.env");
	write_file(s.path, "A=1\n", O_CREAT | O_EXCL);
	join(sub, next, "config");
	CHECK(mkdir(sub, 0700) == 0);
	join(f_next, sub, "app.env");
	write_file(f_next, "A=2\n", O_CREAT | O_EXCL);
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	pump(QUIET_MS);
	CHECK(s.calls == 0);
	CHECK(rename(cur, old) == 0);
	CHECK(rename(next, cur) == 0);
	wait_calls(&s, ++calls);
	expect_content(&s, "A=2\n");
	join(sub, old, "config");
	join(f_old, sub, "app.env");
	write_file(f_old, "A=9\n", O_TRUNC);
	pump(QUIET_MS);
	CHECK(s.calls == calls);
	write_file(s.path, "A=3\n", O_TRUNC);
	wait_calls(&s, ++calls);
	expect_content(&s, "A=3\n");
	watcher_free(w);
}

/* A dangling link, then its target created; a loop of links, then
 * broken: both end up followed. */
static void test_link_dangling_and_loop(void)
{
	struct seen s;
	char dir[512], real[512], a[512], b[512];
	struct watcher *w;

	memset(&s, 0, sizeof(s));
	case_dir(dir, "link-dangling");
	join(real, dir, "real.env");
	join(s.path, dir, "app.env");
	make_link("real.env", s.path);
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	pump(QUIET_MS);
	CHECK(s.calls == 0); /* the directory is there: nothing to say */
	write_file(real, "A=1\n", O_CREAT | O_EXCL);
	wait_calls(&s, 1);
	expect_content(&s, "A=1\n");
	watcher_free(w);

	memset(&s, 0, sizeof(s));
	case_dir(dir, "link-loop");
	join(a, dir, "a");
	join(b, dir, "b");
	join(real, dir, "real.env");
	make_link("b", a);
	make_link("a", b);
	write_file(real, "A=1\n", O_CREAT | O_EXCL);
	join(s.path, dir, "a");
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	wait_calls(&s, 1); /* reported once: it names no file */
	CHECK(!s.exists);
	repoint("real.env", b);
	wait_calls(&s, 2);
	expect_content(&s, "A=1\n");
	write_file(real, "A=2\n", O_TRUNC);
	wait_calls(&s, 3);
	expect_content(&s, "A=2\n");
	watcher_free(w);
}

static void test_unrelated(void)
{
	struct seen s;
	char dir[512], other[512], tmp[512], buf[64];
	struct watcher *w = case_start("unrelated", &s, dir, "A=1\n");
	int fd;

	join(other, dir, "other.env");
	join(tmp, dir, "other.env.tmp");
	write_file(other, "X=1\n", O_CREAT | O_EXCL);
	write_file(other, "X=2\n", O_TRUNC);
	write_file(tmp, "X=3\n", O_CREAT | O_EXCL);
	CHECK(rename(tmp, other) == 0);
	CHECK(chmod(other, 0640) == 0);
	CHECK(unlink(other) == 0);
	CHECK(mkdir(tmp, 0700) == 0);
	CHECK(rmdir(tmp) == 0);
	/* The agent's own reads of the watched file trigger nothing. */
	fd = open(s.path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(read(fd, buf, sizeof(buf)) > 0);
	CHECK(close(fd) == 0);
	pump(100);
	CHECK(s.calls == 0);
	watcher_free(w);
}

/* Two files in one directory: a change to one reports only that one;
 * watcher_trigger_all() reports both once. */
static void test_two_files(void)
{
	struct seen a, b;
	char dir[512];
	struct watcher *w = case_start("two-files", &a, dir, "A=1\n");

	memset(&b, 0, sizeof(b));
	join(b.path, dir, "b.env");
	write_file(b.path, "B=1\n", O_CREAT | O_EXCL);
	pump(QUIET_MS); /* b's creation concerns no watched file yet */
	CHECK(watcher_add(w, b.path, on_change, &b) == 0);
	pump(QUIET_MS);
	CHECK(a.calls == 0 && b.calls == 0);

	write_file(a.path, "A=2\n", O_TRUNC);
	wait_calls(&a, 1);
	CHECK(b.calls == 0);
	expect_content(&a, "A=2\n");

	watcher_trigger_all(w);
	wait_calls(&a, 2);
	wait_calls(&b, 1);
	expect_content(&b, "B=1\n");
	watcher_free(w);
}

static void test_dir_deleted(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("dir-deleted", &s, dir, "A=1\n");

	CHECK(unlink(s.path) == 0);
	CHECK(rmdir(dir) == 0);
	wait_calls(&s, 1);
	CHECK(!s.exists);

	CHECK(mkdir(dir, 0700) == 0);
	write_file(s.path, "A=2\n", O_CREAT | O_EXCL);
	wait_calls(&s, 2);
	expect_content(&s, "A=2\n");

	/* The new directory is watched. */
	write_file(s.path, "A=3\n", O_TRUNC);
	wait_calls(&s, 3);
	expect_content(&s, "A=3\n");
	watcher_free(w);
}

static void test_dir_moved(void)
{
	struct seen s;
	char dir[512], old[512], old_file[512];
	struct watcher *w = case_start("dir-moved", &s, dir, "A=1\n");

	join(old, tmp_root, "dir-moved.old");
	CHECK(rename(dir, old) == 0);
	wait_calls(&s, 1);
	CHECK(!s.exists);

	/* The moved directory is no longer the watched path. */
	join(old_file, old, "app.env");
	write_file(old_file, "A=9\n", O_TRUNC);
	pump(QUIET_MS);
	CHECK(s.calls == 1);

	CHECK(mkdir(dir, 0700) == 0);
	write_file(s.path, "A=2\n", O_CREAT | O_EXCL);
	wait_calls(&s, 2);
	expect_content(&s, "A=2\n");
	watcher_free(w);
}

static void test_dir_missing(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w;

	memset(&s, 0, sizeof(s));
	test_case = "dir-missing";
	join(dir, tmp_root, "dir-missing");
	join(s.path, dir, "app.env");
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, s.path, on_change, &s) == 0);
	wait_calls(&s, 1);
	CHECK(!s.exists);

	CHECK(mkdir(dir, 0700) == 0);
	write_file(s.path, "A=1\n", O_CREAT | O_EXCL);
	wait_calls(&s, 2);
	expect_content(&s, "A=1\n");
	watcher_free(w);
}

/* Overflows the inotify queue for real with events on another file: the
 * overflow concerns every file, so app.env is reported once. */
static void test_overflow(void)
{
	struct seen s;
	char dir[512], junk[512];
	struct watcher *w;
	long max_events = 0;
	FILE *f = fopen("/proc/sys/fs/inotify/max_queued_events", "re");

	test_case = "overflow";
	if (f) {
		if (fscanf(f, "%ld", &max_events) != 1)
			max_events = 0;
		fclose(f);
	}
	if (max_events <= 0 || max_events > 100000) {
		fprintf(stderr, "overflow: skipped (max_queued_events %ld)\n",
			max_events);
		return;
	}
	w = case_start("overflow", &s, dir, "A=1\n");
	join(junk, dir, "junk");
	/* Three events per round (create, close-write, delete), no two
	 * neighbours alike, so the kernel merges none. */
	for (long i = 0; i < max_events / 3 + 100; i++) {
		int fd = open(junk, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		CHECK(fd >= 0);
		CHECK(close(fd) == 0);
		CHECK(unlink(junk) == 0);
	}
	wait_calls(&s, 1);
	expect_content(&s, "A=1\n");
	watcher_free(w);
}

/* A synthetic overflow (the kernel's queue is system-wide, so it is not
 * lowered here): every file is reported once with its content, even with
 * no event of its own. */
static void test_overflow_synthetic(void)
{
	struct seen s;
	char dir[512];
	struct watcher *w = case_start("overflow-synthetic", &s, dir, "A=1\n");

	watcher_overflow(w);
	wait_calls(&s, 1);
	expect_content(&s, "A=1\n");
	/* Twice in a row: reported again, once. */
	watcher_overflow(w);
	watcher_overflow(w);
	wait_calls(&s, 2);
	watcher_free(w);
}

/* The directory is replaced by another one, and the overflow comes
 * before the events that say so are read: the watcher must watch the new
 * directory, so that a later write there is seen. */
static void test_overflow_dir_replaced(void)
{
	struct seen s;
	char dir[512], old[512];
	struct watcher *w = case_start("overflow-dir-replaced", &s, dir,
				       "A=1\n");

	CHECK(snprintf(old, sizeof(old), "%s.old", dir) < (int)sizeof(old));
	CHECK(rename(dir, old) == 0);
	CHECK(mkdir(dir, 0700) == 0);
	write_file(s.path, "A=2\n", O_CREAT | O_EXCL);
	watcher_overflow(w);
	wait_calls(&s, 1);
	expect_content(&s, "A=2\n");
	/* The new directory is watched. */
	write_file(s.path, "A=3\n", O_TRUNC);
	wait_calls(&s, 2);
	expect_content(&s, "A=3\n");
	watcher_free(w);
}

static void test_bad_paths(void)
{
	struct watcher *w;
	struct seen s;

	test_case = "bad-paths";
	CHECK(watcher_new(loop, &w) == 0);
	CHECK(watcher_add(w, "", on_change, &s) == -EINVAL);
	CHECK(watcher_add(w, "/tmp/", on_change, &s) == -EINVAL);
	CHECK(watcher_add(w, "/tmp/..", on_change, &s) == -EINVAL);
	watcher_free(w);
}

static int remove_entry(const char *path, const struct stat *st, int type,
			struct FTW *ftw)
{
	return remove(path);
}

int main(void)
{
	CHECK(mkdtemp(tmp_root) != NULL);
	CHECK(loop_new(&loop) == 0);

	test_bad_paths();
	test_in_place();
	test_truncate();
	test_rename();
	test_delete_recreate();
	test_k8s();
	test_slow_writer();
	test_slow_creator();
	test_unrelated();
	test_two_files();
	test_dir_deleted();
	test_dir_moved();
	test_dir_missing();
	test_overflow();
	test_overflow_synthetic();
	test_overflow_dir_replaced();
	test_recheck();
	test_link_same_dir();
	test_link_other_dir();
	test_link_chain();
	test_link_dir();
	test_link_dangling_and_loop();
	test_dir_swapped();
	test_hold_cap();

	loop_free(loop);
	test_case = "cleanup";
	CHECK(nftw(tmp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
	return 0;
}

/*
 * Unit tests of agent/subuid.c: the parse of a subuid file (owners by
 * name from a passwd text, by number, unknown; bad lines skipped and
 * counted), finding a uid's range (bounds, overlapping ranges), and the
 * refresh from files: read when changed and only then, at most once a
 * second, a missing file meaning no ranges, and a FIFO, a file too large
 * or a directory leaving the ranges read before in force (and never
 * waiting: the watchdog fails a read that blocks on the FIFO).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/subuid.h"
#include "common/util.h"
#include "tests/unit/check.h"

static char dir[] = "/tmp/test-subuid.XXXXXX";
static char sub_path[64], pw_path[64];

static void write_file(const char *path, const char *text)
{
	char tmp[80];
	FILE *f;

	/* Replaced, not rewritten: a new inode, as usermod does. */
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	f = fopen(tmp, "w");
	CHECK(f != NULL);
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	CHECK(rename(tmp, path) == 0);
}

static const struct subuid_range *find(const struct subuid_range *r,
				       size_t n, uid_t uid)
{
	struct subuid_map m = { .ranges = (struct subuid_range *)r, .n = n };

	return subuid_find(&m, uid);
}

static void test_parse(void)
{
	char text[] =
		"alice:100000:65536\n"
		"# a comment\n"
		"\n"
		"1002:165536:65536\n"
		"ghost:231072:10\n"
		"bob:300000:5\n"
		"bob:400000:5\n"
		"nocount:5\n"
		"zero:500000:0\n"
		"over:4294967295:2\n"
		"edge:4294967295:1\n"
		"has space:600000:1\n"
		"toolong-aaaaaaaaaaaaaaaaaaaaaaaaaaaa:700000:1\n"
		"neg:-1:5";
	char passwd[] =
		"root:x:0:0:root:/root:/bin/bash\n"
		"alice:x:1001:1001::/home/alice:/bin/sh\n"
		"broken line\n"
		"bob:x:1003:1003::/:/bin/sh\n"
		"alice:x:2001:2001::/:/bin/sh\n";
	struct subuid_range *r;
	size_t n;
	unsigned bad, first_bad;
	const struct subuid_range *x;

	CHECK_INT(subuid_parse(text, passwd, &r, &n, &bad, &first_bad), ==, 0);
	CHECK_INT(n, ==, 6);
	CHECK_INT(bad, ==, 6);
	CHECK_INT(first_bad, ==, 8);
	for (size_t i = 1; i < n; i++)
		CHECK(r[i - 1].start <= r[i].start);
	x = find(r, n, 100000);
	CHECK(x && x->owner == 1001); /* the first alice of passwd */
	CHECK_STR(x ? x->name : NULL, "alice");
	x = find(r, n, 165536 + 65535);
	CHECK(x && x->owner == 1002);
	x = find(r, n, 231075);
	CHECK(x && x->owner == 231072); /* not in passwd: a user of its own */
	CHECK(find(r, n, 300004) && find(r, n, 300004)->owner == 1003);
	CHECK(find(r, n, 400000) && find(r, n, 400000)->owner == 1003);
	x = find(r, n, 4294967295u);
	CHECK(x && streq(x->name, "edge"));
	CHECK(find(r, n, 500000) == NULL);
	CHECK(find(r, n, 600000) == NULL);
	free(r);

	/* No passwd: every name is a user of its own. */
	char text2[] = "alice:100000:10\n";
	CHECK_INT(subuid_parse(text2, NULL, &r, &n, &bad, &first_bad), ==, 0);
	CHECK_INT(n, ==, 1);
	CHECK(n == 1 && r[0].owner == 100000);
	CHECK_INT(bad, ==, 0);
	free(r);
}

static void test_find(void)
{
	char text[] = "wide:100000:100000\n"
		      "narrow:150000:10\n"
		      "next:300000:1\n";
	struct subuid_range *r;
	size_t n;
	unsigned bad, first_bad;
	const struct subuid_range *x;

	CHECK_INT(subuid_parse(text, NULL, &r, &n, &bad, &first_bad), ==, 0);
	CHECK_INT(n, ==, 3);
	CHECK(find(r, n, 99999) == NULL);
	x = find(r, n, 100000);
	CHECK(x && streq(x->name, "wide"));
	x = find(r, n, 150005);
	CHECK(x && streq(x->name, "narrow")); /* the one that starts last */
	x = find(r, n, 160000);
	CHECK(x && streq(x->name, "wide")); /* past narrow, still in wide */
	x = find(r, n, 199999);
	CHECK(x && streq(x->name, "wide"));
	CHECK(find(r, n, 200000) == NULL);
	CHECK(find(r, n, 300000) != NULL);
	CHECK(find(r, n, 300001) == NULL);
	CHECK(find(r, 0, 100000) == NULL);
	free(r);
}

static void test_describe(void)
{
	struct subuid_range a = { .name = "alice" }, b = { .name = "1002" };
	char buf[SUBUID_DESCRIBE_MAX];

	subuid_describe(&a, buf, sizeof(buf));
	CHECK_STR(buf, " (subuid of alice)");
	subuid_describe(&b, buf, sizeof(buf));
	CHECK_STR(buf, " (subuid of uid 1002)");
}

/* Refreshes m now, as if a second had passed. */
static void refresh(struct subuid_map *m)
{
	m->checked_ms = 0;
	subuid_refresh(m);
}

static void test_refresh(void)
{
	struct subuid_map m;
	int fd;

	subuid_init(&m, sub_path, pw_path);
	refresh(&m); /* neither file yet */
	CHECK_INT(m.n, ==, 0);
	write_file(pw_path, "alice:x:1001:1001::/:/bin/sh\n");
	write_file(sub_path, "alice:100000:65536\n");
	refresh(&m);
	CHECK_INT(m.n, ==, 1);
	CHECK(subuid_find(&m, 100001) &&
	      subuid_find(&m, 100001)->owner == 1001);

	/* Within the second, a change is not looked at. */
	write_file(sub_path, "alice:100000:65536\nbob:200000:10\n");
	subuid_refresh(&m);
	CHECK_INT(m.n, ==, 1);
	refresh(&m);
	CHECK_INT(m.n, ==, 2);

	/* passwd alone changed: the names are resolved again. */
	write_file(pw_path, "bob:x:1003:1003::/:/bin/sh\n"
			    "alice:x:1005:1005::/:/bin/sh\n");
	refresh(&m);
	CHECK(subuid_find(&m, 100001) &&
	      subuid_find(&m, 100001)->owner == 1005);
	CHECK(subuid_find(&m, 200000) &&
	      subuid_find(&m, 200000)->owner == 1003);

	/* What cannot be read leaves the ranges in force: a FIFO (never
	 * opened: the watchdog would fail a read that waits), a directory, a
	 * file over the limit. */
	CHECK(unlink(sub_path) == 0);
	CHECK(mkfifo(sub_path, 0600) == 0);
	refresh(&m);
	CHECK_INT(m.n, ==, 2);
	CHECK(unlink(sub_path) == 0);
	CHECK(mkdir(sub_path, 0700) == 0);
	refresh(&m);
	CHECK_INT(m.n, ==, 2);
	CHECK(rmdir(sub_path) == 0);
	fd = open(sub_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, SUBUID_FILE_MAX + 1) == 0);
	close(fd);
	refresh(&m);
	CHECK_INT(m.n, ==, 2);

	/* A file at the limit is read. */
	fd = open(sub_path, O_WRONLY | O_TRUNC);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, SUBUID_FILE_MAX) == 0);
	CHECK(pwrite(fd, "carol:300000:1\n", 15, 0) == 15);
	close(fd);
	refresh(&m);
	CHECK_INT(m.n, ==, 1);
	CHECK(subuid_find(&m, 300000) != NULL);

	/* Gone: no ranges. */
	CHECK(unlink(sub_path) == 0);
	refresh(&m);
	CHECK_INT(m.n, ==, 0);
	subuid_fini(&m);
	unlink(pw_path);
}

int main(void)
{
	check_watchdog(30);
	if (!mkdtemp(dir))
		return 2;
	snprintf(sub_path, sizeof(sub_path), "%s/subuid", dir);
	snprintf(pw_path, sizeof(pw_path), "%s/passwd", dir);
	RUN(test_parse);
	RUN(test_find);
	RUN(test_describe);
	RUN(test_refresh);
	rmdir(dir);
	return check_exit();
}

/*
 * Unit tests for log.c with LOG_NEVER_BLOCK: stderr a pipe or a socket
 * nobody reads must not stop a thread that logs; what did not go out is
 * counted exactly, lines stay whole, and the description we were given
 * stays blocking.
 *
 * stderr is redirected while lines are logged, so the checks run once it
 * is back.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "tests/unit/check.h"

#define PROG "test-log"
#define DROPPED_FMT PROG ": warning: %llu log lines dropped: the log " \
		    "reader was not keeping up\n"

static int saved_stderr = -1;

static void stderr_to(int fd)
{
	if (saved_stderr < 0)
		saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
}

static void stderr_back(void)
{
	dup2(saved_stderr, STDERR_FILENO);
}

/* Everything fd has now (it is made non-blocking); NUL-terminated. */
static char *drain(int fd, size_t *len)
{
	size_t size = 1 << 16;
	char *buf = malloc(size + 1);
	ssize_t n;

	*len = 0;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	while (buf && (n = read(fd, buf + *len, size - *len)) > 0) {
		*len += (size_t)n;
		if (*len == size) {
			size *= 2;
			buf = realloc(buf, size + 1);
		}
	}
	if (buf)
		buf[*len] = '\0';
	return buf;
}

/* How many lines text has if they are all ours and whole; -1 if not. */
static int whole_lines(const char *text)
{
	int n = 0;

	while (*text) {
		const char *nl = strchr(text, '\n');
		if (!nl || strncmp(text, PROG ": ", strlen(PROG ": ")) != 0)
			return -1;
		text = nl + 1;
		n++;
	}
	return n;
}

/* Adds up the writers' lines of text and the lines its notices say were
 * dropped. */
static void count_lines(const char *text, long long *lines,
			unsigned long long *dropped)
{
	while (*text) {
		const char *nl = strchr(text, '\n');
		unsigned long long n;

		if (sscanf(text, DROPPED_FMT, &n) == 1)
			*dropped += n;
		else if (nl && memmem(text, (size_t)(nl - text), "of a writer",
				      strlen("of a writer")))
			(*lines)++;
		if (!nl)
			break;
		text = nl + 1;
	}
}

struct writer {
	int from, count;
};

static void *writer_run(void *data)
{
	struct writer *w = data;

	for (int i = 0; i < w->count; i++)
		log_info("line %d of a writer, padded to be a bit longer than "
			 "a short line", w->from + i);
	return NULL;
}

/* Two threads log into a full pipe; then a reader comes. */
/* log_bucket: a burst, then per_s a second; two buckets taken together
 * or not at all. */
static void test_bucket(void)
{
	struct log_bucket a, all;
	int64_t t = 1000000;
	unsigned got = 0;

	log_bucket_init(&a, 3, 4, t);
	log_bucket_init(&all, 4, 1, t);
	CHECK(log_bucket_full(&a, t));
	for (int i = 0; i < 10; i++)
		got += log_bucket_take(&a, &all, t);
	CHECK_INT(got, ==, 3);
	CHECK(!log_bucket_full(&a, t));
	CHECK_INT(all.credit, ==, 1000);
	/* A quarter of a second: one line for a. */
	CHECK(!log_bucket_take(&a, NULL, t + 249));
	CHECK(log_bucket_take(&a, &all, t + 250));
	CHECK_INT(all.credit, ==, 250);
	/* a has a line, all has not: neither is charged. */
	CHECK(!log_bucket_take(&a, &all, t + 500));
	CHECK_INT(a.credit, ==, 1000);
	/* A clock step back takes nothing away. */
	CHECK(log_bucket_take(&a, NULL, t));
	CHECK(log_bucket_full(&a, t + 10000));
	CHECK(log_bucket_take(&all, NULL, t + 10000));
}

static void test_pipe(void)
{
	struct writer w[2] = { { 0, 2000 }, { 100000, 2000 } };
	pthread_t t[2];
	unsigned long long dropped = 0;
	long long lines = 0;
	int p[2], flags;
	char *before, *after, *rest;
	size_t len, after_len;

	if (pipe(p) < 0) {
		CHECK(!"pipe");
		return;
	}
	fcntl(p[1], F_SETPIPE_SZ, 4096);
	stderr_to(p[1]);
	close(p[1]);
	log_init(PROG, LOG_INFO, LOG_NEVER_BLOCK);
	flags = fcntl(STDERR_FILENO, F_GETFL);
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, writer_run, &w[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	before = drain(p[0], &len);
	log_info("the reader is back");
	after = drain(p[0], &after_len);
	stderr_back();

	CHECK(!(flags & O_NONBLOCK));
	CHECK(before && after);
	if (!before || !after)
		goto out;
	CHECK_INT(whole_lines(before), >, 0);
	CHECK_INT(len, <=, 4096);
	/* A notice of lines dropped comes out with the next line that fits:
	 * mostly once the reader is back, sometimes before (a short line fit
	 * where a long one did not).  Every line either came out or was
	 * counted in one. */
	count_lines(before, &lines, &dropped);
	count_lines(after, &lines, &dropped);
	CHECK_INT(lines, >, 0);
	CHECK_INT(dropped, >, 0);
	CHECK_INT(lines + (long long)dropped, ==, 4000);
	rest = strstr(after, PROG ": info: the reader is back\n");
	CHECK(rest && strlen(rest) == strlen(PROG ": info: the reader is back\n"));
out:
	free(before);
	free(after);
	close(p[0]);
}

/* A stream socket, as the journal stream is. */
static void test_socket(void)
{
	struct writer w = { 0, 500 };
	unsigned long long dropped = 0;
	int sv[2], size = 4096, lines;
	char *before, *after;
	size_t len;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		CHECK(!"socketpair");
		return;
	}
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	stderr_to(sv[1]);
	close(sv[1]);
	log_init(PROG, LOG_INFO, LOG_NEVER_BLOCK);
	writer_run(&w);
	before = drain(sv[0], &len);
	log_notice("the reader is back");
	after = drain(sv[0], &len);
	stderr_back();

	CHECK(before && after);
	if (!before || !after)
		goto out;
	lines = whole_lines(before);
	CHECK_INT(lines, >, 0);
	CHECK_INT(sscanf(after, DROPPED_FMT, &dropped), ==, 1);
	CHECK_INT(lines + (long long)dropped, ==, 500);
	CHECK(strstr(after, "\n" PROG ": notice: the reader is back\n"));
out:
	free(before);
	free(after);
	close(sv[0]);
}

/* Without the flag, and on a pipe with room: lines as they always were. */
static void test_default(void)
{
	int p[2];
	char *out;
	size_t len;

	if (pipe(p) < 0) {
		CHECK(!"pipe");
		return;
	}
	stderr_to(p[1]);
	close(p[1]);
	log_init(PROG, LOG_INFO, 0);
	log_error("an error: %d", 42);
	log_debug("not shown at info");
	log_target(LOG_WARNING, "published", "DATABASE_URL", 3, "a %s",
		   "warning");
	out = drain(p[0], &len);
	stderr_back();
	CHECK_STR(out, PROG ": error: an error: 42\n"
		       PROG ": warning: a warning\n");
	free(out);
	close(p[0]);
}

int main(void)
{
	check_watchdog(30);
	RUN(test_bucket);
	RUN(test_pipe);
	RUN(test_socket);
	RUN(test_default);
	return check_exit();
}

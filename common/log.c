/*
 * Logging to stderr or a sink; see log.h.
 *
 * One lock serialises the lines of every thread: formatting happens
 * outside it, and under it only writes that cannot wait when
 * LOG_NEVER_BLOCK is set, so the agent's loop never waits long for the
 * state writer's line.
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* The text of a line; with the "prog: level: " prefix and the newline a
 * line stays under PIPE_BUF, so a pipe takes it whole or not at all. */
#define LOG_TEXT_MAX 1024
#define LOG_LINE_MAX (LOG_TEXT_MAX + 64)
_Static_assert(LOG_LINE_MAX <= PIPE_BUF, "a line must fit in PIPE_BUF");

/* How lines reach stderr. */
enum log_out {
	LOG_OUT_BLOCKING, /* write() until taken: a file, a tty, or no flag */
	LOG_OUT_PIPE,     /* write() on a non-blocking description */
	LOG_OUT_SOCKET,   /* send() with MSG_DONTWAIT */
};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *log_progname = "dbswap";
static int log_max = LOG_INFO;
static log_sink_fn *log_sink;
static enum log_out log_out = LOG_OUT_BLOCKING;
static int log_fd = STDERR_FILENO;
/* Lines lost since the last one that went out. */
static unsigned long long log_dropped;
/* What a stream socket did not take of the last line: it goes first, so
 * that the reader never sees half a line glued to the next. */
static char log_tail[LOG_LINE_MAX];
static size_t log_tail_len;

/* Sets log_out and log_fd for LOG_NEVER_BLOCK.  Returns 0; 1 when stderr
 * is a pipe that had to be made non-blocking for every process that shares
 * it; a negative errno when it could not be. */
static int log_never_block(void)
{
	struct stat st, again;
	int fd, flags, open_errno;

	if (fstat(STDERR_FILENO, &st) < 0)
		return 0; /* no stderr: nothing to wait on */
	if (S_ISSOCK(st.st_mode)) {
		/* MSG_DONTWAIT leaves the description alone. */
		log_out = LOG_OUT_SOCKET;
		return 0;
	}
	if (!S_ISFIFO(st.st_mode))
		return 0;
	/* O_NONBLOCK is a flag of the open file description, which we share
	 * with whoever gave us stderr (a supervisor, a shell's other
	 * children, the next program run on the same pipe): they would get
	 * EAGAIN where they expect to wait.  Opening the pipe again through
	 * /proc gives us a description of our own. */
	fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	open_errno = fd < 0 ? errno : 0;
	if (fd >= 0) {
		if (fstat(fd, &again) == 0 && again.st_dev == st.st_dev &&
		    again.st_ino == st.st_ino) {
			log_fd = fd;
			log_out = LOG_OUT_PIPE;
			return 0;
		}
		close(fd);
	}
	/* No /proc, a FIFO we may not open, or no reader: the shared
	 * description after all.  A neighbour's EAGAIN is a lesser harm
	 * than a stuck agent. */
	flags = fcntl(STDERR_FILENO, F_GETFL);
	if (flags < 0 ||
	    fcntl(STDERR_FILENO, F_SETFL, flags | O_NONBLOCK) < 0)
		return neg_errno();
	log_out = LOG_OUT_PIPE;
	/* ENXIO: nobody reads the pipe.  Nobody to tell, and the warning
	 * would raise SIGPIPE before main() ignores it. */
	return open_errno == ENXIO ? 0 : 1;
}

void log_init(const char *progname, int max_level, unsigned flags)
{
	int r = 0;

	log_progname = progname;
	log_max = max_level;
	/* Again (the tests do): stderr may be something else now. */
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = STDERR_FILENO;
	log_out = LOG_OUT_BLOCKING;
	log_tail_len = 0;
	if (flags & LOG_NEVER_BLOCK)
		r = log_never_block();
	if (r > 0)
		log_warning("stderr is a pipe that cannot be opened again: "
			    "made it non-blocking for every process that "
			    "shares it");
	else if (r < 0)
		log_warning("stderr is a pipe that cannot be made non-blocking "
			    "(%s): a slow log reader can stall us",
			    strerror(-r));
}

bool log_enabled(int level)
{
	return level <= log_max;
}

void log_set_sink(log_sink_fn *fn)
{
	pthread_mutex_lock(&log_lock);
	log_sink = fn;
	pthread_mutex_unlock(&log_lock);
}

/* One try at buf on a non-blocking stderr.  Returns how much went out, or
 * a negative errno. */
static ssize_t log_try(const char *buf, size_t len)
{
	ssize_t n;

	if (log_out == LOG_OUT_SOCKET)
		n = send(log_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	else
		n = write(log_fd, buf, len);
	return n < 0 ? neg_errno() : n;
}

/* Writes one whole line to stderr.  Returns 0, or a negative errno when
 * it did not go out (-EAGAIN: the reader is behind). */
static int log_write(const char *line, size_t len)
{
	ssize_t n;

	if (log_out == LOG_OUT_BLOCKING)
		return fd_write_all(log_fd, line, len);
	if (log_tail_len > 0) {
		n = log_try(log_tail, log_tail_len);
		if (n < 0)
			return (int)n;
		log_tail_len -= (size_t)n;
		memmove(log_tail, log_tail + n, log_tail_len);
		if (log_tail_len > 0)
			return -EAGAIN;
	}
	/* A pipe takes a line under PIPE_BUF whole or not at all; a stream
	 * socket may take part of it. */
	n = log_try(line, len);
	if (n < 0)
		return (int)n;
	log_tail_len = len - (size_t)n;
	memcpy(log_tail, line + n, log_tail_len);
	return 0;
}

/* One line to the sink, else to stderr.  Called with log_lock held. */
static int log_deliver(int level, const struct log_fields *f,
		       const char *text)
{
	static const char *const names[] = {
		[LOG_ERR] = "error",   [LOG_WARNING] = "warning",
		[LOG_NOTICE] = "notice", [LOG_INFO] = "info",
		[LOG_DEBUG] = "debug",
	};
	char line[LOG_LINE_MAX];
	int n;

	if (log_sink && log_sink(level, f, text) == 0)
		return 0;
	n = snprintf(line, sizeof(line), "%s: %s: %s\n", log_progname,
		     names[level], text);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	return log_write(line, (size_t)n);
}

PRINTF(3, 0)
static void log_line(int level, const struct log_fields *f,
		     const char *fmt, va_list ap)
{
	static const struct log_fields dropped_fields = { "log-dropped",
							  NULL, 0 };
	char text[LOG_TEXT_MAX], note[96];

	if (level > log_max)
		return;
	vsnprintf(text, sizeof(text), fmt, ap);
	pthread_mutex_lock(&log_lock);
	if (log_dropped > 0) {
		snprintf(note, sizeof(note), "%llu log lines dropped: the log "
			 "reader was not keeping up", log_dropped);
		if (log_deliver(LOG_WARNING, &dropped_fields, note) < 0) {
			log_dropped++;
			goto unlock;
		}
		log_dropped = 0;
	}
	if (log_deliver(level, f, text) < 0)
		log_dropped++;
unlock:
	pthread_mutex_unlock(&log_lock);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(level, NULL, fmt, ap);
	va_end(ap);
}

void log_event(int level, const struct log_fields *f,
	       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(level, f, fmt, ap);
	va_end(ap);
}

void log_bucket_init(struct log_bucket *b, unsigned burst, unsigned per_s,
		     int64_t now)
{
	*b = (struct log_bucket){ .credit = burst * 1000LL, .ms = now,
				  .burst = burst, .per_s = per_s };
}

static void log_bucket_refill(struct log_bucket *b, int64_t now)
{
	/* A clock step back refills nothing (and takes nothing away). */
	if (now > b->ms)
		b->credit = MIN(b->burst * 1000LL,
				b->credit + (now - b->ms) * b->per_s);
	b->ms = now;
}

bool log_bucket_full(struct log_bucket *b, int64_t now)
{
	log_bucket_refill(b, now);
	return b->credit >= b->burst * 1000LL;
}

bool log_bucket_take(struct log_bucket *b, struct log_bucket *all,
		     int64_t now)
{
	log_bucket_refill(b, now);
	if (all)
		log_bucket_refill(all, now);
	if (b->credit < 1000 || (all && all->credit < 1000))
		return false;
	b->credit -= 1000;
	if (all)
		all->credit -= 1000;
	return true;
}

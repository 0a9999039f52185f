/*
 * Logging for the agent and the command-line tools: one line per event on
 * stderr, prefixed with the program name and the level.  The agent may
 * install a sink instead (the systemd journal, with structured fields):
 * log_event() lines then carry the target, generation and event name.
 *
 * Each line goes out in one write, so that lines from two threads, or from
 * other processes writing to the same pipe, do not mix.  Any thread may
 * log.  By default a line waits until stderr takes it; with
 * LOG_NEVER_BLOCK (the agent, whose event loop must not wait on a log
 * reader) no line ever waits: one that cannot go out at once is dropped
 * and counted, and the next line that does go out is preceded by a
 * warning saying how many were lost.
 *
 * Nothing secret is ever passed to these functions: conninfo strings go
 * through mask_conninfo() first, env values are never logged.
 */
#ifndef DBSWAP_LOG_H
#define DBSWAP_LOG_H

#include "util.h"

/* Levels are syslog's (LOG_ERR ... LOG_DEBUG), as the journal and
 * dbswap_log_fn number them. */
#include <syslog.h>

/* Flags for log_init(). */
enum {
	/* No line waits for stderr or the sink.  When stderr is a pipe, a
	 * FIFO or a socket, lines are written without blocking (a terminal
	 * or a regular file is written as before); a sink must not block
	 * either. */
	LOG_NEVER_BLOCK = 1 << 0,
};

/* Call before any other thread logs; again (tests) after stderr
 * changed. */
void log_init(const char *progname, int max_level, unsigned flags);
void log_msg(int level, const char *fmt, ...) PRINTF(2, 3);
/* Whether a line of that level goes out at all (debug lines do only
 * when asked for): a rate limit counts only lines that would. */
bool log_enabled(int level);

/* What a line is about, for structured logs: a stable event name
 * ("published", "acked", "server-down", ...), the target and generation
 * (NULL and 0 when not about one). */
struct log_fields {
	const char *event;
	const char *target;
	uint64_t generation;
};

/* A line about an event; the same text as log_msg() on stderr. */
void log_event(int level, const struct log_fields *f,
	       const char *fmt, ...) PRINTF(3, 4);

/* log_event() about a target. */
#define log_target(level, event, target, generation, ...)                \
	log_event(level,                                                  \
		  &(struct log_fields){ (event), (target), (generation) }, \
		  __VA_ARGS__)

/* Where lines go instead of stderr.  The sink returns 0, or a negative
 * errno to have the line written to stderr after all.  NULL: stderr.
 * Calls to the sink are serialised: it runs under the log's lock. */
typedef int log_sink_fn(int level, const struct log_fields *f,
			const char *line);
void log_set_sink(log_sink_fn *fn);

/* A budget of log lines for one cause (a client's uid, an env file): a
 * token bucket of burst lines, refilled at per_s lines a second.  Who
 * causes lines at will (a local user rewriting a file, a client sending
 * requests) must not drown the agent's own lines: journald drops a
 * service's lines past its rate limit, whoever caused them.  Not locked:
 * one thread owns a bucket. */
struct log_bucket {
	int64_t credit; /* lines, in thousandths */
	int64_t ms;     /* when credit was last refilled */
	unsigned burst, per_s;
};

/* A full bucket as of now. */
void log_bucket_init(struct log_bucket *b, unsigned burst, unsigned per_s,
		     int64_t now);
/* Whether b is full as of now (its cause has been quiet long enough to be
 * forgotten). */
bool log_bucket_full(struct log_bucket *b, int64_t now);
/* Takes one line from b and, unless all is NULL, from all too (a budget
 * shared by every cause): from both or from neither.  Returns whether the
 * line may go out. */
bool log_bucket_take(struct log_bucket *b, struct log_bucket *all,
		     int64_t now);

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif

/*
 * Plain-text logging to stderr; see log.h.
 */
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static const char *log_progname = "dbswap";
static int log_max = LOG_INFO;
static log_sink_fn *log_sink;

void log_init(const char *progname, int max_level)
{
	log_progname = progname;
	log_max = max_level;
}

void log_set_sink(log_sink_fn *fn)
{
	log_sink = fn;
}

PRINTF(3, 0)
static void log_line(int level, const struct log_fields *f,
		     const char *fmt, va_list ap)
{
	static const char *const names[] = {
		[LOG_ERR] = "error",   [LOG_WARNING] = "warning",
		[LOG_NOTICE] = "notice", [LOG_INFO] = "info",
		[LOG_DEBUG] = "debug",
	};
	char line[1024];

	if (level > log_max)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_sink && log_sink(level, f, line) == 0)
		return;
	/* One write per line so lines from concurrent writers do not mix. */
	fprintf(stderr, "%s: %s: %s\n", log_progname, names[level], line);
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

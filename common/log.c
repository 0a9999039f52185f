/*
 * Plain-text logging to stderr; see log.h.
 */
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static const char *log_progname = "dbswap";
static enum log_level log_max = LOG_INFO;

void log_init(const char *progname, enum log_level max_level)
{
	log_progname = progname;
	log_max = max_level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = {
		[LOG_ERR] = "error",   [LOG_WARNING] = "warning",
		[LOG_NOTICE] = "notice", [LOG_INFO] = "info",
		[LOG_DEBUG] = "debug",
	};
	char line[1024];
	va_list ap;

	if (level > log_max)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line so lines from concurrent writers do not mix. */
	fprintf(stderr, "%s: %s: %s\n", log_progname, names[level], line);
}

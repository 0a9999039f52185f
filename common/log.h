/*
 * Logging for the agent and the command-line tools: one line per event on
 * stderr, prefixed with the program name and the level.
 *
 * Nothing secret is ever passed to these functions: conninfo strings go
 * through mask_conninfo() first, env values are never logged.
 */
#ifndef DBSWAP_LOG_H
#define DBSWAP_LOG_H

#include "util.h"

enum log_level {
	LOG_ERR = 3,
	LOG_WARNING = 4,
	LOG_NOTICE = 5,
	LOG_INFO = 6,
	LOG_DEBUG = 7,
};

void log_init(const char *progname, enum log_level max_level);
void log_msg(enum log_level level, const char *fmt, ...) PRINTF(2, 3);

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif

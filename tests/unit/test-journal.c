/*
 * Unit tests for systemd_journal_entry(): journald's native protocol, with
 * the binary form for a value that holds a newline, and entries that do
 * not fit refused whole.
 */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "common/log.h"
#include "systemd.h"
#include "tests/unit/check.h"

#define FIELDS_TAIL "PRIORITY=6\nSYSLOG_IDENTIFIER=dbswapd\n"

/* The entry for (level, f, message) is want[0..want_len). */
static void check_entry_at(int line, int level, const struct log_fields *f,
			   const char *message, const char *want,
			   size_t want_len)
{
	char buf[SYSTEMD_JOURNAL_ENTRY_MAX];
	int n = systemd_journal_entry(buf, sizeof(buf), level, f, message);

	if (n != (int)want_len || memcmp(buf, want, want_len) != 0) {
		fprintf(stderr, "%s:%d: entry of %d bytes, want %zu:\n%.*s\n",
			__FILE__, line, n, want_len, n > 0 ? n : 0, buf);
		check_failed++;
	}
}
#define check_entry(level, f, message, want)                               \
	check_entry_at(__LINE__, level, f, message, want, sizeof(want) - 1)

static void test_plain(void)
{
	const struct log_fields ev = { "published", "DATABASE_URL", 4 };
	const struct log_fields no_gen = { "validated", "REPORTS_URL", 0 };

	check_entry(LOG_INFO, NULL, "listening",
		    "MESSAGE=listening\n" FIELDS_TAIL);
	check_entry(LOG_INFO, &ev, "generation 4 published",
		    "MESSAGE=generation 4 published\n" FIELDS_TAIL
		    "DBSWAP_EVENT=published\nDBSWAP_TARGET=DATABASE_URL\n"
		    "DBSWAP_GENERATION=4\n");
	check_entry(LOG_INFO, &no_gen, "ok",
		    "MESSAGE=ok\n" FIELDS_TAIL
		    "DBSWAP_EVENT=validated\nDBSWAP_TARGET=REPORTS_URL\n");
	check_entry(LOG_ERR, NULL, "",
		    "MESSAGE=\nPRIORITY=3\nSYSLOG_IDENTIFIER=dbswapd\n");
}

static void test_newline(void)
{
	char msg[301], want[400];
	size_t n;

	/* libpq's messages end with one. */
	check_entry(LOG_INFO, NULL, "a\nb",
		    "MESSAGE\n\3\0\0\0\0\0\0\0a\nb\n" FIELDS_TAIL);
	check_entry(LOG_INFO, NULL, "\n",
		    "MESSAGE\n\1\0\0\0\0\0\0\0\n\n" FIELDS_TAIL);
	/* A length past one byte: little-endian whatever the host. */
	memset(msg, 'x', 300);
	msg[150] = '\n';
	msg[300] = '\0';
	memcpy(want, "MESSAGE\n\x2c\x01\0\0\0\0\0\0", 16);
	memcpy(want + 16, msg, 300);
	n = 316;
	want[n++] = '\n';
	memcpy(want + n, FIELDS_TAIL, strlen(FIELDS_TAIL));
	n += strlen(FIELDS_TAIL);
	check_entry_at(__LINE__, LOG_INFO, NULL, msg, want, n);
}

static void test_size(void)
{
	const struct log_fields ev = { "published", "DATABASE_URL", 4 };
	const char *want = "MESSAGE=m\n" FIELDS_TAIL;
	size_t len = strlen(want);
	char buf[SYSTEMD_JOURNAL_ENTRY_MAX], msg[1024];

	CHECK_INT(systemd_journal_entry(buf, len, LOG_INFO, NULL, "m"), ==,
		  (int)len);
	CHECK_INT(systemd_journal_entry(buf, len - 1, LOG_INFO, NULL, "m"), ==,
		  -ENOBUFS);
	CHECK_INT(systemd_journal_entry(buf, 0, LOG_INFO, NULL, "m"), ==,
		  -ENOBUFS);
	/* The longest line log.c makes, with every field, fits. */
	memset(msg, 'y', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	CHECK_INT(systemd_journal_entry(buf, sizeof(buf), LOG_DEBUG, &ev, msg),
		  >, 1023);
}

int main(void)
{
	check_watchdog(30);
	RUN(test_plain);
	RUN(test_newline);
	RUN(test_size);
	return check_exit();
}

/*
 * Checks for the unit tests.  Unlike assert() they survive NDEBUG, report
 * file:line and the failed expression, and keep going so that one run shows
 * every failure; check_exit() turns the count into main()'s return value.
 *
 * Include from exactly one .c file (each test is one executable).
 */
#ifndef DBSWAP_TESTS_CHECK_H
#define DBSWAP_TESTS_CHECK_H

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_failed;

#define CHECK(expr)                                                        \
	do {                                                               \
		if (!(expr)) {                                             \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n",       \
				__FILE__, __LINE__, #expr);                \
			check_failed++;                                    \
		}                                                          \
	} while (0)

/* Integer comparison that prints both values on failure. */
#define CHECK_INT(a, op, b)                                                \
	do {                                                               \
		intmax_t check_a_ = (intmax_t)(a), check_b_ = (intmax_t)(b); \
		if (!(check_a_ op check_b_)) {                             \
			fprintf(stderr,                                    \
				"%s:%d: CHECK failed: %s %s %s "           \
				"(%jd %s %jd)\n",                          \
				__FILE__, __LINE__, #a, #op, #b, check_a_, \
				#op, check_b_);                            \
			check_failed++;                                    \
		}                                                          \
	} while (0)

/* String equality; NULL only equals NULL. */
#define CHECK_STR(a, b)                                                    \
	do {                                                               \
		const char *check_a_ = (a), *check_b_ = (b);               \
		if (!(check_a_ == check_b_ ||                              \
		      (check_a_ && check_b_ &&                             \
		       strcmp(check_a_, check_b_) == 0))) {                \
			fprintf(stderr,                                    \
				"%s:%d: CHECK failed: %s == %s "           \
				"(\"%s\" != \"%s\")\n",                    \
				__FILE__, __LINE__, #a, #b,                \
				check_a_ ? check_a_ : "(null)",            \
				check_b_ ? check_b_ : "(null)");           \
			check_failed++;                                    \
		}                                                          \
	} while (0)

/* Runs one test function and names it, so failures can be placed. */
#define RUN(fn)                                                            \
	do {                                                               \
		int check_before_ = check_failed;                          \
		fn();                                                      \
		fprintf(stderr, "%s %s\n",                                 \
			check_failed == check_before_ ? "ok  " : "FAIL", #fn); \
	} while (0)

/* A test that hangs (a spinning loop, a blocking read) fails instead. */
static inline void check_watchdog(unsigned seconds)
{
	signal(SIGALRM, SIG_DFL);
	alarm(seconds);
}

/* Reads a whole file into malloc'ed memory, NUL-terminated; NULL on
 * failure.  For test inputs: corpus files, files a test wrote. */
static inline char *check_read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!fp)
		return NULL;
	if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 &&
	    fseek(fp, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		if (buf) {
			buf[n] = '\0';
			*len = (size_t)n;
		}
	}
	fclose(fp);
	return buf;
}

static inline int check_exit(void)
{
	if (check_failed)
		fprintf(stderr, "%d check(s) failed\n", check_failed);
	return check_failed ? 1 : 0;
}

#endif

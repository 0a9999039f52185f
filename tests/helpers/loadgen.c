/*
 * loadgen: the load generators' shared helpers (see loadgen.h).
 */
#include "loadgen.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RELAXED memory_order_relaxed

int64_t loadgen_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void loadgen_print_secs(int64_t us)
{
	if (us < 0) {
		putchar('-');
		us = -us;
	}
	printf("%" PRId64 ".%06" PRId64, us / 1000000, us % 1000000);
}

void loadgen_print_mono(int64_t us)
{
	fputs("\"mono\": ", stdout);
	loadgen_print_secs(us);
}

size_t loadgen_hist_index(uint64_t v)
{
	int e;

	if (v < 2 * LOADGEN_HIST_SUB)
		return (size_t)v;
	if (v >> LOADGEN_HIST_MAX_BITS)
		return LOADGEN_HIST_BUCKETS - 1;
	e = 63 - __builtin_clzll(v); /* > LOADGEN_HIST_SUB_BITS */
	return 2 * LOADGEN_HIST_SUB +
	       (size_t)(e - LOADGEN_HIST_SUB_BITS - 1) * LOADGEN_HIST_SUB +
	       (size_t)((v >> (e - LOADGEN_HIST_SUB_BITS)) - LOADGEN_HIST_SUB);
}

uint64_t loadgen_hist_value(size_t i)
{
	size_t k;
	int shift;

	if (i < 2 * LOADGEN_HIST_SUB)
		return i;
	k = i - 2 * LOADGEN_HIST_SUB;
	shift = (int)(k / LOADGEN_HIST_SUB) + 1;
	return ((uint64_t)(k % LOADGEN_HIST_SUB + LOADGEN_HIST_SUB) << shift) +
	       ((uint64_t)1 << shift) / 2;
}

/* Single writer: a relaxed load and store, no locked instruction. */
static void bump(atomic_uint_fast64_t *c, uint64_t by)
{
	atomic_store_explicit(c, atomic_load_explicit(c, RELAXED) + by,
			      RELAXED);
}

void loadgen_hist_add(struct loadgen_hist *h, uint64_t v)
{
	bump(&h->count[loadgen_hist_index(v)], 1);
	bump(&h->n, 1);
	if (v > atomic_load_explicit(&h->max, RELAXED))
		atomic_store_explicit(&h->max, v, RELAXED);
}

void loadgen_hist_merge(struct loadgen_hist *total,
			const struct loadgen_hist *h)
{
	uint64_t n = 0, max = atomic_load_explicit(&h->max, RELAXED);

	/* n from the buckets read, so that a thread still running cannot
	 * leave n and the counts disagreeing. */
	for (size_t i = 0; i < LOADGEN_HIST_BUCKETS; i++) {
		uint64_t c = atomic_load_explicit(&h->count[i], RELAXED);

		if (c) {
			bump(&total->count[i], c);
			n += c;
		}
	}
	bump(&total->n, n);
	if (max > atomic_load_explicit(&total->max, RELAXED))
		atomic_store_explicit(&total->max, max, RELAXED);
}

uint64_t loadgen_hist_n(const struct loadgen_hist *h)
{
	return atomic_load_explicit(&h->n, RELAXED);
}

uint64_t loadgen_hist_max(const struct loadgen_hist *h)
{
	return atomic_load_explicit(&h->max, RELAXED);
}

uint64_t loadgen_hist_pct(const struct loadgen_hist *h, int p)
{
	uint64_t n = loadgen_hist_n(h), max = loadgen_hist_max(h);
	uint64_t rank = (n * (uint64_t)p + 99) / 100, seen = 0;

	if (n == 0)
		return 0;
	if (rank == 0)
		rank = 1;
	for (size_t i = 0; i < LOADGEN_HIST_BUCKETS; i++) {
		seen += atomic_load_explicit(&h->count[i], RELAXED);
		if (seen >= rank) {
			uint64_t v = loadgen_hist_value(i);
			return v < max ? v : max;
		}
	}
	return max;
}

void loadgen_print_latency(const struct loadgen_hist *h)
{
	if (!loadgen_hist_n(h)) {
		fputs("{\"p50\": null, \"p99\": null, \"max\": null}", stdout);
		return;
	}
	printf("{\"p50\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"max\": %" PRIu64
	       "}", loadgen_hist_pct(h, 50), loadgen_hist_pct(h, 99),
	       loadgen_hist_max(h));
}

void loadgen_wait_for_end(const sigset_t *signals, int64_t start_us,
			  int64_t end_us, int64_t every_us,
			  void (*progress)(int64_t now_us))
{
	int64_t next = start_us + every_us;

	for (;;) {
		int64_t now = loadgen_now_us();
		int64_t until = next < end_us ? next : end_us;
		struct timespec ts;

		if (now >= end_us)
			return;
		if (now >= next) {
			progress(now);
			next += every_us;
			/* Fell behind: no burst of lines with nearly the same
			 * time, which would show as spikes in a rate. */
			if (next <= now)
				next = now + every_us;
			continue;
		}
		ts.tv_sec = (time_t)((until - now) / 1000000);
		ts.tv_nsec = (long)((until - now) % 1000000) * 1000;
		if (sigtimedwait(signals, NULL, &ts) >= 0)
			return;
	}
}

long loadgen_parse_int(const char *prog, const char *name, const char *value,
		       long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno || end == value || *end || v < min || v > max) {
		fprintf(stderr, "%s: %s wants a whole number from %ld to %ld, "
			"not \"%s\"\n", prog, name, min, max, value);
		exit(2);
	}
	return v;
}

/* One line from fd 0, byte by byte so that nothing past it is consumed.
 * Returns its length; -1 at once at the end of input, on a timeout or an
 * error; -2 when longer than cap - 1. */
static long read_line(char *buf, size_t cap, int timeout_ms)
{
	int64_t deadline = loadgen_now_us() + (int64_t)timeout_ms * 1000;
	size_t n = 0;

	for (;;) {
		struct pollfd pfd = { .fd = 0, .events = POLLIN };
		int64_t left = timeout_ms < 0 ? -1
				: (deadline - loadgen_now_us()) / 1000;
		ssize_t r;
		char c;

		if (timeout_ms >= 0 && left < 0)
			return -1;
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		r = read(0, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0 || c == '\n')
			break;
		if (n + 1 >= cap)
			return -2;
		buf[n++] = c;
	}
	while (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return (long)n;
}

char *loadgen_read_conninfo(const char *prog, int timeout_ms)
{
	char *buf = malloc(LOADGEN_CONNINFO_MAX + 1), *errmsg = NULL;
	PQconninfoOption *opts;
	long n;

	if (!buf) {
		fprintf(stderr, "%s: out of memory\n", prog);
		exit(1);
	}
	n = read_line(buf, LOADGEN_CONNINFO_MAX + 1, timeout_ms);
	if (n == -2) {
		fprintf(stderr, "%s: the conninfo on stdin is longer than %d "
			"bytes\n", prog, LOADGEN_CONNINFO_MAX);
		loadgen_conninfo_free(buf);
		exit(2);
	}
	if (n <= 0) {
		fprintf(stderr, "%s: no conninfo on the first line of stdin\n",
			prog);
		loadgen_conninfo_free(buf);
		exit(2);
	}
	/* libpq's message for a conninfo it cannot parse quotes the
	 * conninfo, password included: never printed. */
	opts = PQconninfoParse(buf, &errmsg);
	if (!opts) {
		fprintf(stderr, "%s: the conninfo on stdin is not a valid "
			"key=value list or URI (%s; libpq's message not shown: "
			"it would quote the password)\n", prog,
			errmsg ? "syntax error" : "out of memory");
		if (errmsg) {
			explicit_bzero(errmsg, strlen(errmsg));
			PQfreemem(errmsg);
		}
		loadgen_conninfo_free(buf);
		exit(2);
	}
	PQconninfoFree(opts);
	return buf;
}

void loadgen_conninfo_free(char *conninfo)
{
	if (!conninfo)
		return;
	explicit_bzero(conninfo, strlen(conninfo));
	free(conninfo);
}

int loadgen_wait_threads(atomic_int *running, int64_t grace_us)
{
	int64_t deadline = loadgen_now_us() + grace_us;
	int n;

	while ((n = atomic_load(running)) > 0 && loadgen_now_us() < deadline) {
		struct timespec ts = { 0, 5 * 1000000 };

		nanosleep(&ts, NULL);
	}
	return n > 0 ? n : 0;
}

_Noreturn void loadgen_exit_stuck(int status)
{
	fflush(stdout);
	fflush(stderr);
	_exit(status);
}

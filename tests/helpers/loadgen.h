/*
 * loadgen: what the benchmark load generators share (pool-load,
 * libpq-load, pool-bench, fanout): the clock, the "mono" field, a
 * log-bucketed latency histogram, the progress loop, option parsing, the
 * conninfo read from stdin, and the exit that does not wait for threads
 * stuck on a hung server.  Test code only; never installed.
 *
 * Errors: the parsing helpers print a message naming the problem and exit
 * with status 2 (bad usage); the others cannot fail.
 */
#ifndef DBSWAP_LOADGEN_H
#define DBSWAP_LOADGEN_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in µs: the clock of Python's time.monotonic(). */
int64_t loadgen_now_us(void);

/* Prints us as seconds with six decimals ("8123.000456"), exactly, without
 * going through a double; to stdout, unlocked (the caller holds stdout's
 * lock if other threads print). */
void loadgen_print_secs(int64_t us);

/* Prints "\"mono\": " and then us as loadgen_print_secs() does. */
void loadgen_print_mono(int64_t us);

/*
 * The latency histogram.  Values below 2 * LOADGEN_HIST_SUB have a bucket
 * each; above, every power of two is cut into LOADGEN_HIST_SUB buckets, so
 * that a bucket's midpoint is within 1 / (2 * LOADGEN_HIST_SUB) of any
 * value in it (0.8 %).  Values from 2^LOADGEN_HIST_MAX_BITS (some 12 days
 * in µs) share the last bucket.  2240 buckets: 18 KB a histogram.
 *
 * One histogram per thread, written by that thread only, merged after.
 * The counters are atomics written and read relaxed (single writer: a load
 * and a store, no locked instruction), so that the main thread may merge
 * the histogram of a thread that is still running (stuck on a hung server)
 * without a data race.  The unit is the caller's (µs or ns).
 */
#define LOADGEN_HIST_SUB_BITS 6
#define LOADGEN_HIST_SUB (1 << LOADGEN_HIST_SUB_BITS)
#define LOADGEN_HIST_MAX_BITS 40
#define LOADGEN_HIST_BUCKETS (2 * LOADGEN_HIST_SUB + \
	(LOADGEN_HIST_MAX_BITS - LOADGEN_HIST_SUB_BITS - 1) * LOADGEN_HIST_SUB)

struct loadgen_hist {
	atomic_uint_fast64_t count[LOADGEN_HIST_BUCKETS];
	atomic_uint_fast64_t n, max;
};

/* The bucket of value v, and the midpoint of bucket i. */
size_t loadgen_hist_index(uint64_t v);
uint64_t loadgen_hist_value(size_t i);

/* Adds v.  Only the thread that owns h may call it. */
void loadgen_hist_add(struct loadgen_hist *h, uint64_t v);

/* Adds h to total; total is the caller's own (h may still be written). */
void loadgen_hist_merge(struct loadgen_hist *total,
			const struct loadgen_hist *h);

/* The number of values, the exact maximum, and the p-th percentile
 * (integer nearest rank: the value of rank ceil(n * p / 100), at least 1,
 * as its bucket's midpoint, never above the maximum); 0 when empty. */
uint64_t loadgen_hist_n(const struct loadgen_hist *h);
uint64_t loadgen_hist_max(const struct loadgen_hist *h);
uint64_t loadgen_hist_pct(const struct loadgen_hist *h, int p);

/* Prints {"p50": n, "p99": n, "max": n} in the histogram's unit, or with
 * nulls when it is empty. */
void loadgen_print_latency(const struct loadgen_hist *h);

/*
 * Calls progress(now) every every_us from start_us until end_us
 * (INT64_MAX: no end) or until one of signals (blocked by the caller in
 * every thread) arrives.  When it falls behind (progress or the machine
 * slow), it skips the missed lines rather than printing them back to back:
 * the next line comes every_us after the late one.
 */
void loadgen_wait_for_end(const sigset_t *signals, int64_t start_us,
			  int64_t end_us, int64_t every_us,
			  void (*progress)(int64_t now_us));

/* value as a whole number from min to max; otherwise names prog and the
 * option on stderr and exits 2. */
long loadgen_parse_int(const char *prog, const char *name, const char *value,
		       long min, long max);

/* A conninfo is one line; this bounds a runaway stdin. */
#define LOADGEN_CONNINFO_MAX 65536

/*
 * The conninfo (key=value or URI) on the first line of stdin, without its
 * newline, read without stdio's buffering (later lines stay in the pipe),
 * waiting at most timeout_ms (< 0: no limit).  It holds a password: it is
 * checked once here with PQconninfoParse(), and when that fails the
 * message says so without libpq's own, which quotes the conninfo.  Exits 2
 * when there is no line, it is longer than LOADGEN_CONNINFO_MAX, or it does
 * not parse.  Free it with loadgen_conninfo_free().
 */
char *loadgen_read_conninfo(const char *prog, int timeout_ms);

/* Wipes and frees a conninfo (NULL is fine). */
void loadgen_conninfo_free(char *conninfo);

/* How long threads get to stop before the process leaves without them. */
#define LOADGEN_STOP_GRACE_US 1000000

/*
 * Waits at most grace_us for *running (threads not yet finished, each
 * decrementing it as it ends) to reach 0.  Returns how many are still
 * running: stuck, most likely inside a libpq call on a hung server.  The
 * caller then prints its final line and calls loadgen_exit_stuck() rather
 * than joining them.
 */
int loadgen_wait_threads(atomic_int *running, int64_t grace_us);

/* Flushes stdout and stderr and ends the process at once (_exit), without
 * joining the threads that are still running. */
_Noreturn void loadgen_exit_stuck(int status);

#endif

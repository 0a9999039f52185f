/*
 * Load generator on plain libpq, without dbswap: the "app" of the
 * benchmarks' peers (through PgBouncer, restarted with a new conninfo,
 * libpq multi-host failover).  An app that reconnects on error.
 *
 *   libpq-load --threads N [--seconds S] [--tx] [--pause-ms MS]
 *              [--progress-ms MS] [--reconnect-ms MS] [--name NAME]
 *
 * The conninfo (key=value or URI) is the first line of stdin: it holds a
 * password, so it is never in argv and never printed: it is checked once
 * with PQconninfoParse() before anything else, and one that does not parse
 * (libpq's message would quote it) ends the process with status 2 and a
 * message of our own.  application_name falls back to NAME (default
 * libpq-load).
 *
 * Each thread opens its own PGconn (a blocking connect) and loops: SELECT 1
 * or, with --tx, every other iteration BEGIN; SELECT 1; COMMIT; checks the
 * result, then sleeps --pause-ms (default 0).  A failed iteration counts
 * once in "failures"; the thread then PQfinish()es, waits --reconnect-ms
 * (default 10; so that a server that accepts connections and fails every
 * query is not spun on) and reconnects, waiting --reconnect-ms again after
 * each failed attempt (counted in "connect_failures", not "failures").  The
 * first 20 failures of either kind are described on stderr (libpq's
 * message for a connection or a query, which does not hold the password).
 *
 * Latency covers one successful iteration (the statements and checking
 * their results; the pause not) and, for the first iteration after a
 * failure, the reconnect before it too (its failed attempts and the waits
 * between them, not the wait just after the failure): the time the app
 * waits for a usable connection counts, as in pool-load, where it is
 * inside the acquire.  The first connect of each thread is not timed.
 *
 * Every --progress-ms (default 100) a line goes to stdout, flushed:
 *   {"mono": 1234.567890, "t": 1.500, "queries": n, "failures": n,
 *    "connect_failures": n, "connected": threads connected now}
 * mono is CLOCK_MONOTONIC in seconds (Python's time.monotonic(), so a
 * driver can line events up), t seconds since the start.  "queries"
 * counts successful iterations (a transaction is one).  Once, when the
 * first iteration of the process succeeds:
 *   {"mono": x, "event": "ready"}
 * (a restarted app serves again from that moment).
 *
 * After SIGTERM, SIGINT or S seconds the threads finish their iteration
 * and stop, and one last line follows:
 *   {"mono": x, "final": true, "queries": n, "failures": n,
 *    "connect_failures": n,
 *    "latency_us": {"p50": n, "p99": n, "max": n},
 *    "threads": [{"first_failure_mono": x|null,
 *                 "recovered_mono": x|null}, ...],
 *    "stuck": n, "longest_wait_ms": n}
 * latency_us is over successful iterations (pause excluded), from a
 * log-bucketed histogram (tests/helpers/loadgen.h): p50 and p99 within
 * 1 %, max exact.
 * recovered_mono is the thread's first success after its first failure.
 * A thread blocked on a hung server (SIGSTOP) must not keep the process
 * alive: the threads get at most 1 s to stop; those still inside a libpq
 * call then are "stuck", longest_wait_ms is the longest any thread has
 * been inside one query or connect at that moment, and the process exits
 * without waiting for them.
 *
 * Exit status: 0 (failed queries are the measurement, not an error), 1 when
 * set-up failed, 2 for bad usage.
 */
#include "loadgen.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Enough to see what went wrong without flooding the driver's log. */
#define FAILURES_SHOWN 20
static struct {
	const char *name;
	int threads, pause_ms, progress_ms, reconnect_ms;
	double seconds;
	bool tx;
} opt = {
	.name = "libpq-load",
	.progress_ms = 100,
	.reconnect_ms = 10,
};

struct worker {
	pthread_t thread;
	int id;
	PGconn *conn;
	/* When the current libpq call started (µs, monotonic); 0: none. */
	atomic_int_fast64_t in_call_since;
	atomic_int_fast64_t first_failure, recovered; /* µs; -1: none */
	atomic_bool done;
	struct loadgen_hist lat;
};

static char *conninfo;
static struct worker *workers;
static atomic_bool stop;
static atomic_uint_fast64_t queries, failures, connect_failures, described;
static atomic_int connected, running;
static atomic_int_fast64_t ready_us = -1;
static int64_t start_us;
static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond;

/* Sleeps ms, or less when the run stops meanwhile. */
static void pause_ms(int ms)
{
	struct timespec ts;
	int64_t until = loadgen_now_us() + (int64_t)ms * 1000;

	ts.tv_sec = until / 1000000;
	ts.tv_nsec = (long)(until % 1000000) * 1000;
	pthread_mutex_lock(&stop_lock);
	while (!atomic_load(&stop) &&
	       pthread_cond_timedwait(&stop_cond, &stop_lock, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&stop_lock);
}

static void request_stop(void)
{
	pthread_mutex_lock(&stop_lock);
	atomic_store(&stop, true);
	pthread_cond_broadcast(&stop_cond);
	pthread_mutex_unlock(&stop_lock);
}

/* libpq's message on one line, to stderr, for the first few failures. */
static void describe(const struct worker *w, const char *what,
		     const char *msg)
{
	char buf[512];

	if (atomic_fetch_add(&described, 1) >= FAILURES_SHOWN)
		return;
	snprintf(buf, sizeof(buf), "%s", msg && *msg ? msg : "(no message)");
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' ';)
		buf[--n] = '\0';
	fprintf(stderr, "libpq-load: thread %d: %s: %s\n", w->id, what, buf);
}

static void call_begin(struct worker *w)
{
	atomic_store(&w->in_call_since, loadgen_now_us());
}

static void call_end(struct worker *w)
{
	atomic_store(&w->in_call_since, 0);
}

/* Runs sql, expecting status (and with tuples, the single value "1").
 * Returns 0, or -1 after describing the failure. */
static int exec_expect(struct worker *w, const char *sql,
		       ExecStatusType status)
{
	PGresult *res;
	int r = 0;

	call_begin(w);
	res = PQexec(w->conn, sql);
	call_end(w);
	if (PQresultStatus(res) != status) {
		describe(w, sql, res ? PQresultErrorMessage(res)
				     : PQerrorMessage(w->conn));
		r = -1;
	} else if (status == PGRES_TUPLES_OK &&
		   (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "1"))) {
		describe(w, sql, "unexpected result");
		r = -1;
	}
	PQclear(res);
	return r;
}

static int iterate(struct worker *w, bool tx)
{
	if (!tx)
		return exec_expect(w, "SELECT 1", PGRES_TUPLES_OK);
	if (exec_expect(w, "BEGIN", PGRES_COMMAND_OK) < 0 ||
	    exec_expect(w, "SELECT 1", PGRES_TUPLES_OK) < 0 ||
	    exec_expect(w, "COMMIT", PGRES_COMMAND_OK) < 0)
		return -1;
	return 0;
}

/* Connects, retrying every --reconnect-ms until it works or the run
 * stops.  Returns 0 when connected. */
static int connect_retry(struct worker *w)
{
	const char *const keys[] = { "dbname", "fallback_application_name",
				     NULL };
	const char *const values[] = { conninfo, opt.name, NULL };

	while (!atomic_load(&stop)) {
		call_begin(w);
		w->conn = PQconnectdbParams(keys, values, 1);
		call_end(w);
		if (w->conn && PQstatus(w->conn) == CONNECTION_OK) {
			atomic_fetch_add(&connected, 1);
			return 0;
		}
		atomic_fetch_add(&connect_failures, 1);
		describe(w, "connect", w->conn ? PQerrorMessage(w->conn)
					       : "out of memory");
		PQfinish(w->conn);
		w->conn = NULL;
		pause_ms(opt.reconnect_ms);
	}
	return -1;
}

static void disconnect(struct worker *w)
{
	if (!w->conn)
		return;
	PQfinish(w->conn);
	w->conn = NULL;
	atomic_fetch_sub(&connected, 1);
}

static void *worker_run(void *data)
{
	struct worker *w = data;
	bool failed = false;

	for (unsigned long i = 0; !atomic_load(&stop); i++) {
		int64_t t0 = loadgen_now_us(), t1;
		int_fast64_t none = -1;

		/* After a failure the reconnect is timed with the
		 * iteration (see the top of the file). */
		if (!w->conn && connect_retry(w) < 0)
			break;
		if (!failed)
			t0 = loadgen_now_us();
		if (iterate(w, opt.tx && i % 2 == 1) < 0) {
			atomic_fetch_add(&failures, 1);
			atomic_compare_exchange_strong(&w->first_failure,
						       &none, loadgen_now_us());
			disconnect(w);
			failed = true;
			/* A server that takes connections and fails every
			 * query at once must not be spun on. */
			pause_ms(opt.reconnect_ms);
			continue;
		}
		failed = false;
		t1 = loadgen_now_us();
		loadgen_hist_add(&w->lat, (uint64_t)(t1 - t0));
		atomic_fetch_add(&queries, 1);
		if (atomic_load(&w->first_failure) >= 0) {
			none = -1;
			atomic_compare_exchange_strong(&w->recovered, &none,
						       t1);
		}
		none = -1;
		if (atomic_compare_exchange_strong(&ready_us, &none, t1)) {
			flockfile(stdout);
			printf("{");
			loadgen_print_mono(t1);
			printf(", \"event\": \"ready\"}\n");
			fflush(stdout);
			funlockfile(stdout);
		}
		if (opt.pause_ms > 0)
			pause_ms(opt.pause_ms);
	}
	disconnect(w);
	atomic_store(&w->done, true);
	atomic_fetch_sub(&running, 1);
	return NULL;
}

static void print_progress(int64_t now)
{
	flockfile(stdout);
	printf("{");
	loadgen_print_mono(now);
	printf(", \"t\": %.3f, \"queries\": %" PRIuFAST64
	       ", \"failures\": %" PRIuFAST64 ", \"connect_failures\": %"
	       PRIuFAST64 ", \"connected\": %d}\n",
	       (double)(now - start_us) / 1e6, atomic_load(&queries),
	       atomic_load(&failures), atomic_load(&connect_failures),
	       atomic_load(&connected));
	fflush(stdout);
	funlockfile(stdout);
}

static void print_mono_or_null(int64_t us)
{
	if (us < 0)
		printf("null");
	else
		loadgen_print_secs(us);
}

static void print_final(void)
{
	static struct loadgen_hist lat;
	int64_t now = loadgen_now_us(), longest = 0;
	int stuck = 0;

	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &workers[i];
		int64_t since = atomic_load(&w->in_call_since);

		loadgen_hist_merge(&lat, &w->lat);
		if (since > 0) {
			if (!atomic_load(&w->done))
				stuck++;
			if (now - since > longest)
				longest = now - since;
		}
	}
	flockfile(stdout);
	printf("{");
	loadgen_print_mono(now);
	printf(", \"final\": true, \"queries\": %" PRIuFAST64
	       ", \"failures\": %" PRIuFAST64 ", \"connect_failures\": %"
	       PRIuFAST64 ", \"latency_us\": ",
	       atomic_load(&queries), atomic_load(&failures),
	       atomic_load(&connect_failures));
	loadgen_print_latency(&lat);
	printf(", \"threads\": [");
	for (int i = 0; i < opt.threads; i++) {
		printf("%s{\"first_failure_mono\": ", i ? ", " : "");
		print_mono_or_null(atomic_load(&workers[i].first_failure));
		printf(", \"recovered_mono\": ");
		print_mono_or_null(atomic_load(&workers[i].recovered));
		printf("}");
	}
	printf("], \"stuck\": %d, \"longest_wait_ms\": %" PRId64 "}\n", stuck,
	       longest / 1000);
	fflush(stdout);
	funlockfile(stdout);
}

static long parse_long(const char *name, const char *value, long min)
{
	return loadgen_parse_int("libpq-load", name, value, min, 86400000);
}

static double parse_seconds(const char *value)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(value, &end);
	if (errno || end == value || *end || !(v > 0) || v > 86400 * 365) {
		fprintf(stderr, "libpq-load: --seconds wants a number > 0, "
			"not \"%s\"\n", value);
		exit(2);
	}
	return v;
}

static void usage(void)
{
	fprintf(stderr, "usage: libpq-load --threads N [--seconds S] [--tx] "
		"[--pause-ms MS] [--progress-ms MS] [--reconnect-ms MS] "
		"[--name NAME] < conninfo\n");
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--tx")) {
			opt.tx = true;
			continue;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help"))
			usage();
		if (!v || strncmp(a, "--", 2)) {
			fprintf(stderr, "libpq-load: unknown option or missing "
				"value: %s\n", a);
			usage();
		}
		i++;
		if (!strcmp(a, "--threads"))
			opt.threads = (int)parse_long(a, v, 1);
		else if (!strcmp(a, "--seconds"))
			opt.seconds = parse_seconds(v);
		else if (!strcmp(a, "--pause-ms"))
			opt.pause_ms = (int)parse_long(a, v, 0);
		else if (!strcmp(a, "--progress-ms"))
			opt.progress_ms = (int)parse_long(a, v, 1);
		else if (!strcmp(a, "--reconnect-ms"))
			opt.reconnect_ms = (int)parse_long(a, v, 0);
		else if (!strcmp(a, "--name"))
			opt.name = v;
		else {
			fprintf(stderr, "libpq-load: unknown option %s\n", a);
			usage();
		}
	}
	if (opt.threads < 1)
		usage();
	if (opt.threads > 10000) {
		fprintf(stderr, "libpq-load: --threads: at most 10000\n");
		exit(2);
	}
}

static int init_stop_cond(void)
{
	pthread_condattr_t attr;
	int r;

	if ((r = pthread_condattr_init(&attr)))
		return r;
	r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (!r)
		r = pthread_cond_init(&stop_cond, &attr);
	pthread_condattr_destroy(&attr);
	return r;
}

int main(int argc, char **argv)
{
	sigset_t signals;
	int i, r, stuck;

	parse_args(argc, argv);
	conninfo = loadgen_read_conninfo("libpq-load", -1);
	if ((r = init_stop_cond())) {
		fprintf(stderr, "libpq-load: pthread_cond_init: %s\n",
			strerror(r));
		return 1;
	}
	/* Blocked before any thread starts, so that only sigtimedwait()
	 * below takes them. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	workers = calloc((size_t)opt.threads, sizeof(*workers));
	if (!workers) {
		perror("libpq-load: calloc");
		return 1;
	}
	start_us = loadgen_now_us();
	for (i = 0; i < opt.threads; i++) {
		struct worker *w = &workers[i];

		w->id = i;
		atomic_init(&w->first_failure, -1);
		atomic_init(&w->recovered, -1);
		atomic_fetch_add(&running, 1);
		r = pthread_create(&w->thread, NULL, worker_run, w);
		if (r) {
			fprintf(stderr, "libpq-load: pthread_create: %s\n",
				strerror(r));
			request_stop();
			while (i-- > 0)
				pthread_join(workers[i].thread, NULL);
			return 1;
		}
	}
	loadgen_wait_for_end(&signals, start_us,
			     opt.seconds > 0 ? start_us +
			     (int64_t)(opt.seconds * 1e6) : INT64_MAX,
			     (int64_t)opt.progress_ms * 1000, print_progress);
	request_stop();

	/* A thread blocked on a hung server never comes back: wait a little,
	 * then report and leave without it. */
	stuck = loadgen_wait_threads(&running, LOADGEN_STOP_GRACE_US);
	print_final();
	if (stuck)
		loadgen_exit_stuck(0);
	for (i = 0; i < opt.threads; i++)
		pthread_join(workers[i].thread, NULL);
	free(workers);
	loadgen_conninfo_free(conninfo);
	return 0;
}

/*
 * Load generator for the libdbswap connection pool, driven by the
 * integration tests (tests/integration/test_pool.py, test_failover.py)
 * and the benchmarks (tests/bench/queries.py, failover.py).  Public API
 * only.
 *
 *   pool-load --socket PATH --target NAME --threads N [--seconds S]
 *             [--max M] [--min M] [--drain-ms D] [--acquire-ms A]
 *             [--hold MS] [--pause-ms MS] [--tx] [--name NAME]
 *             [--progress-ms MS]
 *
 * Makes a client and a pool (0 or absent settings: the pool's defaults),
 * waits for the first connection and then, within the same 10 s, for the
 * pool's min_size connections to be open (not an error if they are not),
 * then runs N threads that
 * loop: acquire (waiting at most A ms, default 10000), run SELECT 1 or,
 * with --tx, every other iteration BEGIN; SELECT pg_backend_pid(); COMMIT,
 * check the result, keep the connection MS more ms (--hold), release,
 * sleep --pause-ms.  A failed acquire or query is a failure; the first 20
 * are described on stderr with the thread's number.  Acquires that fail
 * with EHOSTDOWN (the agent reports no server available) are failures
 * too, and also counted as "unavailable".  An iteration counts once:
 * in "queries" when the acquire and every statement succeeded, else in
 * "failures" (a failed acquire is not retried within the iteration).
 *
 * Latency covers what the app waits for: from before the acquire to after
 * the release, so any wait for a connection (the pool exhausted, a new
 * connection being opened, a switch to a new value or server) counts,
 * --hold included, the pause not.  Only successful iterations are kept,
 * per thread in a log-bucketed histogram (tests/helpers/loadgen.h, within
 * 1 %).
 *
 * Threads that query back to back on a small machine starve everything
 * else, new PostgreSQL backends included (the agent's validations, the
 * pool's own new connections, other tests run in parallel): the tests
 * pause a little between iterations.
 *
 * Every --progress-ms (default 500) a progress line goes to stdout,
 * flushed:
 *   {"t": 1.5, "mono": 8123.456789, "queries": n, "failures": n,
 *    "generation": g, "size": s, "old": o, "min_size": m, "max_size": m,
 *    "first_failure_t": 0.7, "last_failure_t": 1.2, "unavailable": n}
 * min_size and max_size are the pool's config now (those of the agent's
 * settings, live, where --min and --max are not given).
 * t and the failure times are seconds since the threads started; a
 * failure time is null before any failure.  mono is CLOCK_MONOTONIC in
 * seconds (µs resolution) when the line was made: the clock of Python's
 * time.monotonic(), so a driver can place its own events on the line's
 * time axis.  After SIGTERM, SIGINT or S seconds the threads finish
 * their iteration, SELECT current_user, current_setting('port') runs on a
 * freshly acquired connection, and one last line follows (it has no "t":
 * that is how a reader tells it from progress):
 *   {"mono": 8130.001234, "queries": n, "failures": n, "generation": g,
 *    "stats": {...every dbswap_pool_stats field, config included...},
 *    "current_user_at_end": "app", "port_at_end": 5432,
 *    "first_failure_t": 0.7, "last_failure_t": 1.2, "unavailable": n,
 *    "latency_us": {"p50": 120, "p99": 900, "max": 15000}, "stuck": 0}
 * (the two "_at_end" fields null if that last query failed; the three
 * latencies, whole µs over every successful iteration of the run, null
 * if there was none; max is exact, p50 and p99 nearest rank).
 *
 * A thread blocked in a query on a hung server (SIGSTOP) must not keep the
 * process alive: after the stop the threads get at most 1 s; those still
 * running then are "stuck", counted in the last line, and the process
 * exits without joining them.  With stuck threads the last query gets at
 * most --acquire-ms more (it may hang on the same server): after that the
 * last line is printed with the "_at_end" fields null.
 *
 * Exit status: 0 when nothing failed, 1 after a failure, with stuck
 * threads (or a set-up error), 2 for bad usage.
 */
#include "loadgen.h"

#include <dbswap.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_MS 500
#define READY_TIMEOUT_MS 10000
/* Enough to see what went wrong without flooding the test's log. */
#define FAILURES_SHOWN 20

/* A load thread: only it writes its histogram, read after the join, or
 * (relaxed atomics) when it is stuck. */
struct worker {
	pthread_t thread;
	int id;
	struct loadgen_hist lat;
};

static struct {
	const char *socket, *target, *name;
	int threads, seconds, acquire_ms, hold_ms, pause_ms, progress_ms;
	bool tx;
	dbswap_pool_config config;
} opt = {
	.name = "pool-load",
	.acquire_ms = 10000,
	.config = DBSWAP_POOL_CONFIG_INIT,
	.progress_ms = PROGRESS_MS,
};

static dbswap_pool *pool;
static atomic_bool stop;
static atomic_uint_fast64_t queries, failures, unavailable;
/* Load threads not yet finished. */
static atomic_int running;
/* When the threads started (µs), and the first and last failure since
 * then (ms, -1: none). */
static int64_t start_us;
static atomic_int_fast64_t first_failure_ms = -1, last_failure_ms = -1;

static int64_t now_ms(void)
{
	return loadgen_now_us() / 1000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static const char *errno_name(int e)
{
	switch (e) {
	case ETIMEDOUT:
		return "ETIMEDOUT";
	case ENOTCONN:
		return "ENOTCONN";
	case ENOENT:
		return "ENOENT";
	case ECANCELED:
		return "ECANCELED";
	case EHOSTDOWN:
		return "EHOSTDOWN";
	case ENOMEM:
		return "ENOMEM";
	default:
		return "errno";
	}
}

/* Copies a libpq message into buf as one line. */
static void one_line(char *buf, size_t len, const char *what,
		     const char *msg)
{
	snprintf(buf, len, "%s: %s", what, msg && *msg ? msg : "(no message)");
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' ';)
		buf[--n] = '\0';
}

static void fail(int thread, const char *msg)
{
	int_fast64_t t = (loadgen_now_us() - start_us) / 1000, none = -1;

	atomic_compare_exchange_strong(&first_failure_ms, &none, t);
	atomic_store(&last_failure_ms, t);
	if (atomic_fetch_add(&failures, 1) < FAILURES_SHOWN)
		fprintf(stderr, "pool-load: thread %d: %s\n", thread, msg);
}

/* Runs sql, expecting status.  Returns the result, or NULL with err
 * filled in. */
static PGresult *exec_expect(PGconn *conn, const char *sql,
			     ExecStatusType status, char *err, size_t len)
{
	PGresult *res = PQexec(conn, sql);

	if (PQresultStatus(res) == status)
		return res;
	one_line(err, len, sql,
		 res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	PQclear(res);
	return NULL;
}

static int run_select(PGconn *conn, char *err, size_t len)
{
	PGresult *res = exec_expect(conn, "SELECT 1", PGRES_TUPLES_OK, err, len);
	int r = 0;

	if (!res)
		return -1;
	if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "1")) {
		snprintf(err, len, "SELECT 1: unexpected result");
		r = -1;
	}
	PQclear(res);
	return r;
}

/* A short transaction; a failure leaves it open for the pool's release
 * to roll back. */
static int run_tx(PGconn *conn, char *err, size_t len)
{
	PGresult *res;
	int pid;

	res = exec_expect(conn, "BEGIN", PGRES_COMMAND_OK, err, len);
	if (!res)
		return -1;
	PQclear(res);
	res = exec_expect(conn, "SELECT pg_backend_pid()", PGRES_TUPLES_OK,
			  err, len);
	if (!res)
		return -1;
	pid = PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
	PQclear(res);
	if (pid != PQbackendPID(conn)) {
		snprintf(err, len, "SELECT pg_backend_pid(): got %d, the "
			 "connection says %d", pid, PQbackendPID(conn));
		return -1;
	}
	res = exec_expect(conn, "COMMIT", PGRES_COMMAND_OK, err, len);
	if (!res)
		return -1;
	PQclear(res);
	return 0;
}

static void describe_acquire_error(char *buf, size_t len, int e,
				   int64_t waited)
{
	snprintf(buf, len, "acquire failed after %" PRId64 " ms: %s (%s)%s",
		 waited, errno_name(e), strerror(e),
		 e == ETIMEDOUT ? ": pool exhausted"
		 : e == ENOTCONN ? ": no connection could be opened"
		 : e == EHOSTDOWN ? ": no database server available"
				  : "");
}

static void *worker_run(void *data)
{
	struct worker *w = data;
	int id = w->id;
	char err[512];

	for (unsigned long i = 0; !atomic_load(&stop); i++) {
		int64_t t0 = loadgen_now_us();
		PGconn *conn = dbswap_pool_acquire(pool, opt.acquire_ms);
		int r;

		if (!conn) {
			int e = errno;
			if (e == EHOSTDOWN)
				atomic_fetch_add(&unavailable, 1);
			describe_acquire_error(err, sizeof(err), e,
					       (loadgen_now_us() - t0) / 1000);
			fail(id, err);
			/* An error that comes at once must not spin. */
			if (e != ETIMEDOUT && e != ENOTCONN)
				sleep_ms(10);
			continue;
		}
		if (opt.tx && i % 2 == 1)
			r = run_tx(conn, err, sizeof(err));
		else
			r = run_select(conn, err, sizeof(err));
		if (opt.hold_ms > 0)
			sleep_ms(opt.hold_ms);
		dbswap_pool_release(pool, conn);
		if (r < 0) {
			fail(id, err);
		} else {
			loadgen_hist_add(&w->lat,
					 (uint64_t)(loadgen_now_us() - t0));
			atomic_fetch_add(&queries, 1);
		}
		if (opt.pause_ms > 0)
			sleep_ms(opt.pause_ms);
	}
	atomic_fetch_sub(&running, 1);
	return NULL;
}

/* The first acquire: the pool may know no value yet (ENOENT).  Then,
 * until the same deadline, the pool's min_size connections, which it opens
 * in the background, so that the threads do not start by waiting for
 * connections (their first latencies would measure connection set-up). */
static int wait_ready(void)
{
	int64_t deadline = now_ms() + READY_TIMEOUT_MS;
	char err[256];

	for (;;) {
		int64_t t0 = now_ms(), left = deadline - t0;
		PGconn *conn = dbswap_pool_acquire(pool, (int)(left > 0 ? left
								    : 0));
		int e = errno;

		if (conn) {
			dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
			dbswap_pool_config c = DBSWAP_POOL_CONFIG_INIT;

			dbswap_pool_release(pool, conn);
			dbswap_pool_config_get(pool, &c);
			for (;;) {
				dbswap_pool_stats_get(pool, &s);
				if (s.size >= c.min_size ||
				    now_ms() >= deadline)
					return 0;
				sleep_ms(5);
			}
		}
		if (e != ENOENT || now_ms() >= deadline) {
			describe_acquire_error(err, sizeof(err), e,
					       now_ms() - t0);
			fprintf(stderr, "pool-load: no first connection within "
				"%d ms: %s\n", READY_TIMEOUT_MS, err);
			return -1;
		}
		sleep_ms(10);
	}
}

/* The role and the server's port on a freshly acquired connection: which
 * value, and which server, the pool ended on. */
static int user_and_port(char *user, size_t len, int *port)
{
	char err[512];
	PGconn *conn = dbswap_pool_acquire(pool, opt.acquire_ms);
	PGresult *res;
	int r = -1;

	if (!conn) {
		describe_acquire_error(err, sizeof(err), errno, 0);
		fprintf(stderr, "pool-load: current_user: %s\n", err);
		return -1;
	}
	res = exec_expect(conn, "SELECT current_user, current_setting('port')",
			  PGRES_TUPLES_OK, err, sizeof(err));
	if (res) {
		snprintf(user, len, "%s", PQgetvalue(res, 0, 0));
		*port = atoi(PQgetvalue(res, 0, 1));
		r = 0;
	} else {
		fprintf(stderr, "pool-load: %s\n", err);
	}
	PQclear(res);
	dbswap_pool_release(pool, conn);
	return r;
}

static void print_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void print_stats(const dbswap_pool_stats *s)
{
	dbswap_pool_config config = DBSWAP_POOL_CONFIG_INIT;
	const dbswap_pool_config *c = &config;

	dbswap_pool_config_get(pool, &config);
	printf("{\"generation\": %" PRIu64 ", \"size\": %d, \"idle\": %d, "
	       "\"in_use\": %d, \"old\": %d, \"waiting\": %d, "
	       "\"acquired\": %" PRIu64 ", \"timeouts\": %" PRIu64 ", "
	       "\"opened\": %" PRIu64 ", \"closed\": %" PRIu64 ", "
	       "\"failed_connects\": %" PRIu64 ", \"switches\": %" PRIu64 ", ",
	       s->generation, s->size, s->idle, s->in_use, s->old, s->waiting,
	       s->acquired, s->timeouts, s->opened, s->closed,
	       s->failed_connects, s->switches);
	printf("\"acquire_waits\": %" PRIu64 ", \"acquire_wait_us\": %" PRIu64
	       ", \"acquire_wait_max_us\": %" PRIu64 ", \"closed_idle\": %"
	       PRIu64 ", \"closed_lifetime\": %" PRIu64 ", \"closed_replaced\": "
	       "%" PRIu64 ", \"closed_broken\": %" PRIu64 ", "
	       "\"closed_discarded\": %" PRIu64 ", \"closed_shutdown\": %"
	       PRIu64 ", \"resets\": %" PRIu64 ", \"server\": %d, "
	       "\"standby\": %d, \"refused\": %d, \"connect_failures\": %d, "
	       "\"closing\": %d, ",
	       s->acquire_waits, s->acquire_wait_us, s->acquire_wait_max_us,
	       s->closed_idle, s->closed_lifetime, s->closed_replaced,
	       s->closed_broken, s->closed_discarded, s->closed_shutdown,
	       s->resets, s->server, s->standby, s->refused,
	       s->connect_failures, s->closing);
	printf("\"config\": {\"min_size\": %d, \"max_size\": %d, "
	       "\"acquire_timeout_ms\": %d, \"idle_timeout_ms\": %d, "
	       "\"max_lifetime_ms\": %d, \"lifetime_jitter_ms\": %d, "
	       "\"connect_timeout_ms\": %d, \"drain_timeout_ms\": %d, "
	       "\"idle_check_ms\": %d, \"keepalive_ms\": %d, "
	       "\"reset_always\": %d}}",
	       c->min_size, c->max_size, c->acquire_timeout_ms,
	       c->idle_timeout_ms, c->max_lifetime_ms, c->lifetime_jitter_ms,
	       c->connect_timeout_ms, c->drain_timeout_ms, c->idle_check_ms,
	       c->keepalive_ms, c->reset_always);
}

/* The failure fields, shared by progress and final lines. */
static void print_failure_times(void)
{
	int_fast64_t first = atomic_load(&first_failure_ms);
	int_fast64_t last = atomic_load(&last_failure_ms);

	/* Read between fail()'s two stores: the first is the last too. */
	if (last < first)
		last = first;
	if (first < 0)
		printf("\"first_failure_t\": null, \"last_failure_t\": null");
	else
		printf("\"first_failure_t\": %.3f, \"last_failure_t\": %.3f",
		       (double)first / 1000, (double)last / 1000);
	printf(", \"unavailable\": %" PRIuFAST64, atomic_load(&unavailable));
}

static void print_progress(int64_t us)
{
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	dbswap_pool_config c = DBSWAP_POOL_CONFIG_INIT;

	dbswap_pool_stats_get(pool, &s);
	dbswap_pool_config_get(pool, &c);
	printf("{\"t\": %.3f, ", (double)(us - start_us) / 1e6);
	loadgen_print_mono(us);
	printf(", \"queries\": %" PRIuFAST64 ", \"failures\": %" PRIuFAST64
	       ", \"generation\": %" PRIu64 ", \"size\": %d, \"old\": %d, "
	       "\"min_size\": %d, \"max_size\": %d, ",
	       atomic_load(&queries), atomic_load(&failures), s.generation,
	       s.size, s.old, c.min_size, c.max_size);
	print_failure_times();
	printf("}\n");
	fflush(stdout);
}

static int parse_int(const char *name, const char *value, int min)
{
	return (int)loadgen_parse_int("pool-load", name, value, min, 86400000);
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--tx")) {
			opt.tx = true;
			continue;
		}
		if (!v || strncmp(a, "--", 2)) {
			fprintf(stderr, "pool-load: unknown option or missing "
				"value: %s\n", a);
			exit(2);
		}
		i++;
		if (!strcmp(a, "--socket"))
			opt.socket = v;
		else if (!strcmp(a, "--target"))
			opt.target = v;
		else if (!strcmp(a, "--name"))
			opt.name = v;
		else if (!strcmp(a, "--threads"))
			opt.threads = parse_int(a, v, 1);
		else if (!strcmp(a, "--seconds"))
			opt.seconds = parse_int(a, v, 1);
		else if (!strcmp(a, "--max"))
			opt.config.max_size = parse_int(a, v, 1);
		else if (!strcmp(a, "--min"))
			opt.config.min_size = parse_int(a, v, 0);
		else if (!strcmp(a, "--drain-ms"))
			opt.config.drain_timeout_ms = parse_int(a, v, 1);
		else if (!strcmp(a, "--acquire-ms"))
			opt.acquire_ms = opt.config.acquire_timeout_ms =
				parse_int(a, v, 1);
		else if (!strcmp(a, "--hold"))
			opt.hold_ms = parse_int(a, v, 0);
		else if (!strcmp(a, "--pause-ms"))
			opt.pause_ms = parse_int(a, v, 0);
		else if (!strcmp(a, "--progress-ms"))
			opt.progress_ms = parse_int(a, v, 1);
		else {
			fprintf(stderr, "pool-load: unknown option %s\n", a);
			exit(2);
		}
	}
	if (!opt.socket || !opt.target || !opt.threads) {
		fprintf(stderr, "usage: pool-load --socket PATH --target NAME "
			"--threads N [--seconds S] [--max M] [--min M] "
			"[--drain-ms D] [--acquire-ms A] [--hold MS] "
			"[--pause-ms MS] [--tx] [--name NAME] "
			"[--progress-ms MS]\n");
		exit(2);
	}
}

/* What the last line says; whoever prints it first (main, or the
 * watchdog when the last query hangs) claims it. */
static struct {
	struct loadgen_hist *lat;
	int stuck;
	atomic_bool printed;
} final;

/* The last line; r < 0: the last query failed (user and port null).
 * Returns false, printing nothing, when it was printed already. */
static bool print_final(int r, const char *user, int port)
{
	dbswap_pool_stats stats = DBSWAP_POOL_STATS_INIT;

	if (atomic_exchange(&final.printed, true))
		return false;
	dbswap_pool_stats_get(pool, &stats);
	printf("{");
	loadgen_print_mono(loadgen_now_us());
	printf(", \"queries\": %" PRIuFAST64 ", \"failures\": %" PRIuFAST64
	       ", \"generation\": %" PRIu64 ", \"stats\": ",
	       atomic_load(&queries), atomic_load(&failures), stats.generation);
	print_stats(&stats);
	printf(", \"current_user_at_end\": ");
	if (r == 0) {
		print_json_string(user);
		printf(", \"port_at_end\": %d, ", port);
	} else {
		printf("null, \"port_at_end\": null, ");
	}
	print_failure_times();
	printf(", \"latency_us\": ");
	loadgen_print_latency(final.lat);
	printf(", \"stuck\": %d}\n", final.stuck);
	fflush(stdout);
	return true;
}

/* With stuck threads the server may be hung, and the last query with it:
 * it gets --acquire-ms and the grace, then the last line goes out without
 * it. */
static void *watchdog_run(void *data)
{
	struct timespec ts;
	int64_t us = (int64_t)opt.acquire_ms * 1000 + LOADGEN_STOP_GRACE_US;

	(void)data;
	ts.tv_sec = (time_t)(us / 1000000);
	ts.tv_nsec = (long)(us % 1000000) * 1000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	if (print_final(-1, NULL, 0)) {
		fprintf(stderr, "pool-load: the last query did not return; "
			"leaving without it\n");
		loadgen_exit_stuck(1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct worker *workers;
	struct loadgen_hist *lat;
	dbswap_client *client;
	sigset_t signals;
	char user[256] = "";
	bool started;
	int i, r, port = 0, status = 1;

	parse_args(argc, argv);
	/* Blocked before any thread starts, the library's included, so that
	 * only sigtimedwait() below takes them. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	workers = calloc((size_t)opt.threads, sizeof(*workers));
	lat = calloc(1, sizeof(*lat));
	if (!workers || !lat) {
		perror("pool-load: calloc");
		goto err_threads;
	}
	client = dbswap_client_new(opt.socket);
	if (!client) {
		perror("pool-load: dbswap_client_new");
		goto err_threads;
	}
	dbswap_client_set_name(client, opt.name);
	pool = dbswap_pool_new(client, opt.target, &opt.config);
	if (!pool) {
		fprintf(stderr, "pool-load: dbswap_pool_new(%s): %s\n",
			opt.target, strerror(errno));
		goto err_client;
	}
	if (wait_ready() < 0)
		goto err_pool;

	start_us = loadgen_now_us();
	for (i = 0; i < opt.threads; i++) {
		workers[i].id = i;
		atomic_fetch_add(&running, 1);
		r = pthread_create(&workers[i].thread, NULL, worker_run,
				   &workers[i]);
		if (r) {
			atomic_fetch_sub(&running, 1);
			fprintf(stderr, "pool-load: pthread_create: %s\n",
				strerror(r));
			break;
		}
	}
	started = i == opt.threads;
	if (started)
		loadgen_wait_for_end(&signals, start_us,
				     opt.seconds > 0 ? start_us +
				     (int64_t)opt.seconds * 1000000 : INT64_MAX,
				     (int64_t)opt.progress_ms * 1000,
				     print_progress);
	atomic_store(&stop, true);
	/* A thread blocked on a hung server never comes back: wait a little,
	 * then report and leave without it. */
	final.stuck = loadgen_wait_threads(&running, LOADGEN_STOP_GRACE_US);
	final.lat = lat;
	if (final.stuck) {
		pthread_t watchdog;

		fprintf(stderr, "pool-load: %d threads still running after the "
			"stop (stuck on a hung server?)\n", final.stuck);
		for (int k = 0; k < i; k++)
			loadgen_hist_merge(lat, &workers[k].lat);
		r = pthread_create(&watchdog, NULL, watchdog_run, NULL);
		if (r)
			r = -1; /* no watchdog: no last query either */
		else
			r = user_and_port(user, sizeof(user), &port);
		if (!print_final(r, user, port))
			for (;;)
				pause(); /* the watchdog prints and exits */
		loadgen_exit_stuck(1);
	}
	while (i-- > 0) {
		pthread_join(workers[i].thread, NULL);
		loadgen_hist_merge(lat, &workers[i].lat);
	}

	r = user_and_port(user, sizeof(user), &port);
	print_final(r, user, port);
	if (started && r == 0 && atomic_load(&failures) == 0)
		status = 0;
err_pool:
	dbswap_pool_free(pool);
err_client:
	dbswap_client_free(client);
err_threads:
	free(lat);
	free(workers);
	return status;
}

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
 * too, and also counted as "unavailable".  The latency of a successful
 * iteration is from before the acquire to after the release (--hold
 * included, the pause not), kept per thread in a log-bucketed histogram
 * (within 1 %).
 *
 * Threads that query back to back on a small machine starve everything
 * else, new PostgreSQL backends included (the agent's validations, the
 * pool's own new connections, other tests run in parallel): the tests
 * pause a little between iterations.
 *
 * Every --progress-ms (default 500) a progress line goes to stdout,
 * flushed:
 *   {"t": 1.5, "mono": 8123.456789, "queries": n, "failures": n,
 *    "generation": g, "size": s, "old": o, "first_failure_t": 0.7,
 *    "last_failure_t": 1.2, "unavailable": n}
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
 *    "latency_us": {"p50": 120, "p99": 900, "max": 15000}}
 * (the two "_at_end" fields null if that last query failed; the three
 * latencies, whole µs over every successful iteration of the run, null
 * if there was none; max is exact, p50 and p99 nearest rank).
 *
 * Exit status: 0 when nothing failed, 1 after a failure (or a set-up
 * error), 2 for bad usage.
 */
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

#define PROGRESS_MS 500
#define READY_TIMEOUT_MS 10000
/* Enough to see what went wrong without flooding the test's log. */
#define FAILURES_SHOWN 20

/* The latency histogram: values below 2 * HIST_SUB µs have a bucket each;
 * above, every power of two is cut into HIST_SUB buckets, so that a
 * bucket's midpoint is within 1 / (2 * HIST_SUB) of any value in it (0.8 %).
 * Values from 2^HIST_MAX_BITS µs (some 12 days) share the last bucket.
 * 2240 buckets: 18 KB a thread. */
#define HIST_SUB_BITS 6
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_MAX_BITS 40
#define HIST_BUCKETS (2 * HIST_SUB + \
		      (HIST_MAX_BITS - HIST_SUB_BITS - 1) * HIST_SUB)

struct hist {
	uint64_t count[HIST_BUCKETS];
	uint64_t n, max;
};

/* A load thread: only it writes its histogram, read after the join. */
struct worker {
	pthread_t thread;
	int id;
	struct hist lat;
};

static struct {
	const char *socket, *target, *name;
	int threads, seconds, acquire_ms, hold_ms, pause_ms, progress_ms;
	bool tx;
	dbswap_pool_config config;
} opt = {
	.name = "pool-load",
	.acquire_ms = 10000,
	.progress_ms = PROGRESS_MS,
};

static dbswap_pool *pool;
static atomic_bool stop;
static atomic_uint_fast64_t queries, failures, unavailable;
/* When the threads started, and the first and last failure since then
 * (ms, -1: none). */
static int64_t start_ms;
static atomic_int_fast64_t first_failure_ms = -1, last_failure_ms = -1;

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_ms(void)
{
	return now_us() / 1000;
}

static size_t hist_index(uint64_t v)
{
	int e;

	if (v < 2 * HIST_SUB)
		return (size_t)v;
	if (v >> HIST_MAX_BITS)
		return HIST_BUCKETS - 1;
	e = 63 - __builtin_clzll(v); /* > HIST_SUB_BITS */
	return 2 * HIST_SUB + (size_t)(e - HIST_SUB_BITS - 1) * HIST_SUB +
	       (size_t)((v >> (e - HIST_SUB_BITS)) - HIST_SUB);
}

/* The midpoint of bucket i. */
static uint64_t hist_value(size_t i)
{
	size_t k;
	int shift;

	if (i < 2 * HIST_SUB)
		return i;
	k = i - 2 * HIST_SUB;
	shift = (int)(k / HIST_SUB) + 1;
	return ((uint64_t)(k % HIST_SUB + HIST_SUB) << shift) +
	       ((uint64_t)1 << shift) / 2;
}

static void hist_add(struct hist *h, uint64_t v)
{
	h->count[hist_index(v)]++;
	h->n++;
	if (v > h->max)
		h->max = v;
}

static void hist_merge(struct hist *total, const struct hist *h)
{
	for (size_t i = 0; i < HIST_BUCKETS; i++)
		total->count[i] += h->count[i];
	total->n += h->n;
	if (h->max > total->max)
		total->max = h->max;
}

/* The p-th percentile, nearest rank (never above the exact maximum). */
static uint64_t hist_pct(const struct hist *h, int p)
{
	uint64_t rank = (h->n * (uint64_t)p + 99) / 100, seen = 0;

	if (rank == 0)
		rank = 1;
	for (size_t i = 0; i < HIST_BUCKETS; i++) {
		seen += h->count[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);
			return v < h->max ? v : h->max;
		}
	}
	return h->max;
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
	int_fast64_t t = now_ms() - start_ms, none = -1;

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
		 e == ETIMEDOUT ? ": pool exhausted, or no connection "
				  "opened in time"
		 : e == EHOSTDOWN ? ": no database server available"
				  : "");
}

static void *worker_run(void *data)
{
	struct worker *w = data;
	int id = w->id;
	char err[512];

	for (unsigned long i = 0; !atomic_load(&stop); i++) {
		int64_t t0 = now_us();
		PGconn *conn = dbswap_pool_acquire(pool, opt.acquire_ms);
		int r;

		if (!conn) {
			int e = errno;
			if (e == EHOSTDOWN)
				atomic_fetch_add(&unavailable, 1);
			describe_acquire_error(err, sizeof(err), e,
					       (now_us() - t0) / 1000);
			fail(id, err);
			/* An error that comes at once must not spin. */
			if (e != ETIMEDOUT)
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
			hist_add(&w->lat, (uint64_t)(now_us() - t0));
			atomic_fetch_add(&queries, 1);
		}
		if (opt.pause_ms > 0)
			sleep_ms(opt.pause_ms);
	}
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
			dbswap_pool_stats s;

			dbswap_pool_release(pool, conn);
			for (;;) {
				dbswap_pool_stats_get(pool, &s);
				if (s.size >= s.config.min_size ||
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
	} else {
		fprintf(stderr, "pool-load: %s\n", err);
	}
	PQclear(res);
	dbswap_pool_release(pool, conn);
	return res ? 0 : -1;
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
	const dbswap_pool_config *c = &s->config;

	printf("{\"generation\": %" PRIu64 ", \"size\": %d, \"idle\": %d, "
	       "\"in_use\": %d, \"old\": %d, \"waiting\": %d, "
	       "\"acquired\": %" PRIu64 ", \"timeouts\": %" PRIu64 ", "
	       "\"opened\": %" PRIu64 ", \"closed\": %" PRIu64 ", "
	       "\"failed_connects\": %" PRIu64 ", \"switches\": %" PRIu64 ", ",
	       s->generation, s->size, s->idle, s->in_use, s->old, s->waiting,
	       s->acquired, s->timeouts, s->opened, s->closed,
	       s->failed_connects, s->switches);
	printf("\"config\": {\"min_size\": %d, \"max_size\": %d, "
	       "\"acquire_timeout_ms\": %d, \"idle_timeout_ms\": %d, "
	       "\"max_lifetime_ms\": %d, \"connect_timeout_ms\": %d, "
	       "\"drain_timeout_ms\": %d, \"check_on_borrow\": %d}}",
	       c->min_size, c->max_size, c->acquire_timeout_ms,
	       c->idle_timeout_ms, c->max_lifetime_ms, c->connect_timeout_ms,
	       c->drain_timeout_ms, c->check_on_borrow);
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

static void print_mono(int64_t us)
{
	printf("\"mono\": %" PRId64 ".%06" PRId64, us / 1000000, us % 1000000);
}

static void print_progress(int64_t us)
{
	dbswap_pool_stats s;

	dbswap_pool_stats_get(pool, &s);
	printf("{\"t\": %.3f, ", (double)(us - start_ms * 1000) / 1e6);
	print_mono(us);
	printf(", \"queries\": %" PRIuFAST64 ", \"failures\": %" PRIuFAST64
	       ", \"generation\": %" PRIu64 ", \"size\": %d, \"old\": %d, ",
	       atomic_load(&queries), atomic_load(&failures), s.generation,
	       s.size, s.old);
	print_failure_times();
	printf("}\n");
	fflush(stdout);
}

/* Progress lines until a signal or the end of --seconds. */
static void wait_for_end(const sigset_t *signals)
{
	int64_t start = start_ms, next = start + opt.progress_ms;
	int64_t end = opt.seconds > 0 ? start + (int64_t)opt.seconds * 1000
				      : INT64_MAX;

	for (;;) {
		int64_t now_u = now_us(), now = now_u / 1000;
		int64_t until = next < end ? next : end;
		struct timespec ts;

		if (now >= end)
			return;
		if (now >= next) {
			print_progress(now_u);
			next += opt.progress_ms;
			continue;
		}
		ts.tv_sec = (until - now) / 1000;
		ts.tv_nsec = (long)((until - now) % 1000) * 1000000;
		if (sigtimedwait(signals, NULL, &ts) >= 0)
			return;
	}
}

static int parse_int(const char *name, const char *value, int min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno || end == value || *end || v < min || v > 86400000) {
		fprintf(stderr, "pool-load: %s wants a whole number >= %d, "
			"not \"%s\"\n", name, min, value);
		exit(2);
	}
	return (int)v;
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

int main(int argc, char **argv)
{
	struct worker *workers;
	struct hist *lat;
	dbswap_client *client;
	dbswap_pool_stats stats;
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

	start_ms = now_ms();
	for (i = 0; i < opt.threads; i++) {
		workers[i].id = i;
		r = pthread_create(&workers[i].thread, NULL, worker_run,
				   &workers[i]);
		if (r) {
			fprintf(stderr, "pool-load: pthread_create: %s\n",
				strerror(r));
			break;
		}
	}
	started = i == opt.threads;
	if (started)
		wait_for_end(&signals);
	atomic_store(&stop, true);
	while (i-- > 0) {
		pthread_join(workers[i].thread, NULL);
		hist_merge(lat, &workers[i].lat);
	}

	r = user_and_port(user, sizeof(user), &port);
	dbswap_pool_stats_get(pool, &stats);
	printf("{");
	print_mono(now_us());
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
	if (lat->n)
		printf(", \"latency_us\": {\"p50\": %" PRIu64 ", \"p99\": %"
		       PRIu64 ", \"max\": %" PRIu64 "}}\n", hist_pct(lat, 50),
		       hist_pct(lat, 99), lat->max);
	else
		printf(", \"latency_us\": {\"p50\": null, \"p99\": null, "
		       "\"max\": null}}\n");
	fflush(stdout);
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

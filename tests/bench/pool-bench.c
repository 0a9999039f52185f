/*
 * Pool benchmark: what the libdbswap pool costs an app.  Driven by
 * tests/bench/pool.py, which runs PostgreSQL and the agent.  (The pool
 * under password rotations is measured by tests/bench/queries.py with
 * pool-load.)
 *
 *   pool-bench --socket PATH --target NAME [--threads N] [--seconds S]
 *              [--rounds R] [--pair-seconds P]
 *
 * stdin: first line, the conninfo for the raw connections (a secret:
 * never in argv, never printed: one that PQconninfoParse() refuses, whose
 * message would quote it, or a line longer than 64 KiB ends the process
 * with status 2 and a message of our own).  The pool gets its value from
 * the agent.
 *
 *   (i)  acquire + release with no query for P seconds (default 2),
 *        1 thread then N threads (default 8);
 *   (ii) a SELECT 1 loop on raw persistent PGconns (one per thread),
 *        through the pool, and on a second set of raw PGconns ("raw_b"),
 *        taking turns in R rounds (default 5) of S seconds (default 1)
 *        each, the order rotated every round (raw, pool, raw_b; then
 *        pool, raw_b, raw; ...), so that drift in the machine and the
 *        position in a round weigh on all three alike; 1 thread, then N
 *        threads.  raw_b / raw is an A/A ratio: two identical loops on
 *        two sets of connections, whose ratio would be 1 but for the
 *        noise; it says how far from 1 pool / raw can be by noise alone.
 *
 * The pool has min = max = N, opened before anything is measured; every
 * connection then runs the loop for WARM_S without being timed (a
 * backend's first queries fill its caches).  A pool iteration is acquire,
 * SELECT 1, release; a raw one is SELECT 1.  All in one process, so the
 * three differ only in the pool.
 * Latencies are of whole successful iterations, kept per thread in a
 * log-bucketed histogram (tests/helpers/loadgen.h: within 1 %, nothing
 * allocated while timing), merged after.  A failed iteration is counted
 * and followed by a 10 ms pause (an error that comes at once must not
 * spin).
 *
 * Output: one JSON object on stdout, raw figures only (the driver
 * derives rates and ratios):
 *   {"threads": N, "rounds": R, "seconds": S, "pair_seconds": P,
 *    "pairs": [RUN for 1 thread, RUN for N threads],
 *    "warm_seconds": W,
 *    "select": [{"threads": 1, "raw": RUN, "pool": RUN, "raw_b": RUN,
 *                "rounds": [{"order": "raw,pool,raw_b", "raw": RUN,
 *                            "pool": RUN, "raw_b": RUN}, ...]},
 *               {"threads": N, ...}],
 *    "pool_stats": {"generation": g, "opened": n, "closed": n,
 *                   "timeouts": n}}
 * where RUN is {"threads": n, "seconds": wall, "cpu_seconds": process CPU
 * time (the pool's own threads included), "ops": n, "failures": n,
 * "latency_us": {"p50", "p99", "max"} (null for pairs, which are not
 * timed one by one)}; "raw", "pool" and "raw_b" of a "select" entry are
 * the sums of its rounds.  Exit status 1 if anything failed, 2 for bad usage.
 */
#include "loadgen.h"

#include <dbswap.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 10000
#define ERRORS_SHOWN 10
#define FAILURE_PAUSE_S 0.01
/* Each kind's untimed loop before the rounds. */
#define WARM_S 0.5

enum mode { MODE_PAIRS, MODE_POOL, MODE_RAW };

struct worker {
	pthread_t thread;
	enum mode mode;
	PGconn *raw;
	uint64_t ops, failures;
	struct loadgen_hist lat; /* ns */
};

struct result {
	double seconds, cpu_seconds;
	uint64_t ops, failures;
	struct loadgen_hist *lat; /* ns; NULL: not timed */
};

static dbswap_pool *pool;
static pthread_barrier_t start_line;
static atomic_bool stop;
static atomic_int errors_shown;

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

static void show_error(const char *what, const char *msg)
{
	if (atomic_fetch_add(&errors_shown, 1) < ERRORS_SHOWN)
		fprintf(stderr, "pool-bench: %s: %s%s", what, msg,
			msg[0] && msg[strlen(msg) - 1] == '\n' ? "" : "\n");
}

static int select_one(PGconn *conn)
{
	PGresult *res = PQexec(conn, "SELECT 1");
	int r = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : -1;

	if (r < 0)
		show_error("SELECT 1", PQerrorMessage(conn));
	PQclear(res);
	return r;
}

static int pool_iteration(void)
{
	PGconn *conn = dbswap_pool_acquire(pool, -1);
	int r;

	if (!conn) {
		show_error("acquire", strerror(errno));
		return -1;
	}
	r = select_one(conn);
	dbswap_pool_release(pool, conn);
	return r;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void *worker_run(void *data)
{
	struct worker *w = data;

	pthread_barrier_wait(&start_line);
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint64_t t0 = 0;
		int r = 0;

		switch (w->mode) {
		case MODE_PAIRS: {
			PGconn *conn = dbswap_pool_acquire(pool, -1);
			if (conn) {
				dbswap_pool_release(pool, conn);
			} else {
				show_error("acquire", strerror(errno));
				r = -1;
			}
			break;
		}
		case MODE_POOL:
			t0 = now_ns();
			r = pool_iteration();
			break;
		case MODE_RAW:
			t0 = now_ns();
			r = select_one(w->raw);
			break;
		}
		if (r < 0) {
			w->failures++;
			sleep_s(FAILURE_PAUSE_S);
			continue;
		}
		w->ops++;
		if (w->mode != MODE_PAIRS)
			loadgen_hist_add(&w->lat, now_ns() - t0);
	}
	return NULL;
}

/* Runs n threads in mode for seconds. */
static void run(enum mode mode, int n, PGconn **raw, double seconds,
		struct result *res)
{
	struct worker *w = calloc((size_t)n, sizeof(*w));
	uint64_t t0, c0;
	int i, r;

	memset(res, 0, sizeof(*res));
	r = w ? pthread_barrier_init(&start_line, NULL, (unsigned)n + 1)
	      : ENOMEM;
	if (r) {
		fprintf(stderr, "pool-bench: setting up %d threads: %s\n", n,
			strerror(r));
		exit(1);
	}
	atomic_store(&stop, false);
	for (i = 0; i < n; i++) {
		w[i].mode = mode;
		w[i].raw = raw ? raw[i] : NULL;
		r = pthread_create(&w[i].thread, NULL, worker_run, &w[i]);
		if (r) {
			fprintf(stderr, "pool-bench: pthread_create: %s\n",
				strerror(r));
			exit(1);
		}
	}
	pthread_barrier_wait(&start_line);
	t0 = now_ns();
	c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	sleep_s(seconds);
	atomic_store(&stop, true);
	for (i = 0; i < n; i++)
		pthread_join(w[i].thread, NULL);
	res->seconds = (double)(now_ns() - t0) / 1e9;
	res->cpu_seconds =
		(double)(clock_ns(CLOCK_PROCESS_CPUTIME_ID) - c0) / 1e9;
	pthread_barrier_destroy(&start_line);

	if (mode != MODE_PAIRS && !(res->lat = calloc(1, sizeof(*res->lat)))) {
		perror("pool-bench: calloc");
		exit(1);
	}
	for (i = 0; i < n; i++) {
		res->ops += w[i].ops;
		res->failures += w[i].failures;
		if (res->lat)
			loadgen_hist_merge(res->lat, &w[i].lat);
	}
	free(w);
}

/* Adds part to total, and frees part's latencies. */
static void result_merge(struct result *total, struct result *part)
{
	total->seconds += part->seconds;
	total->cpu_seconds += part->cpu_seconds;
	total->ops += part->ops;
	total->failures += part->failures;
	if (part->lat) {
		if (!total->lat && !(total->lat = calloc(1, sizeof(*total->lat)))) {
			perror("pool-bench: calloc");
			exit(1);
		}
		loadgen_hist_merge(total->lat, part->lat);
		free(part->lat);
		part->lat = NULL;
	}
}

/* The kinds of SELECT 1 loop compared, in the order of a round's first
 * turn; rounds rotate it. */
enum kind { KIND_RAW, KIND_POOL, KIND_RAW_B, KINDS };
static const char *const kind_names[KINDS] = { "raw", "pool", "raw_b" };

/* One kind's loop with n threads. */
static void run_kind(enum kind k, int n, PGconn **raw, PGconn **raw_b,
		     double seconds, struct result *res)
{
	if (k == KIND_POOL)
		run(MODE_POOL, n, NULL, seconds, res);
	else
		run(MODE_RAW, n, k == KIND_RAW ? raw : raw_b, seconds, res);
}

/* The three loops taking turns in rounds, the order rotated each round,
 * so that drift in the machine (other processes, the server's own work)
 * and the position in a round weigh on all alike; each round's figures
 * kept in per[round * KINDS + kind] (their latencies dropped), their sums
 * in sum[kind]. */
static void compare(int n, PGconn **raw, PGconn **raw_b, int rounds,
		    double seconds, struct result *sum, struct result *per)
{
	memset(sum, 0, KINDS * sizeof(*sum));
	for (int k = 0; k < KINDS; k++) {
		struct result warm;

		run_kind((enum kind)k, n, raw, raw_b, WARM_S, &warm);
		free(warm.lat);
	}
	for (int i = 0; i < rounds; i++) {
		for (int t = 0; t < KINDS; t++) {
			enum kind k = (enum kind)((i + t) % KINDS);
			struct result part;

			run_kind(k, n, raw, raw_b, seconds, &part);
			per[i * KINDS + k] = part;
			per[i * KINDS + k].lat = NULL;
			result_merge(&sum[k], &part);
		}
	}
}

static void print_run(int threads, const struct result *r)
{
	printf("{\"threads\": %d, \"seconds\": %.6f, \"cpu_seconds\": %.6f, "
	       "\"ops\": %" PRIu64 ", \"failures\": %" PRIu64 ", "
	       "\"latency_us\": ",
	       threads, r->seconds, r->cpu_seconds, r->ops, r->failures);
	if (r->lat && loadgen_hist_n(r->lat))
		printf("{\"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}}",
		       (double)loadgen_hist_pct(r->lat, 50) / 1e3,
		       (double)loadgen_hist_pct(r->lat, 99) / 1e3,
		       (double)loadgen_hist_max(r->lat) / 1e3);
	else
		printf("null}");
}

/* One "select" entry: the sums, then every round. */
static void print_select(int threads, int rounds, const struct result *sum,
			 const struct result *per)
{
	printf("{\"threads\": %d", threads);
	for (int k = 0; k < KINDS; k++) {
		printf(", \"%s\": ", kind_names[k]);
		print_run(threads, &sum[k]);
	}
	printf(", \"rounds\": [");
	for (int i = 0; i < rounds; i++) {
		printf("%s{\"order\": \"", i ? ", " : "");
		for (int t = 0; t < KINDS; t++)
			printf("%s%s", t ? "," : "", kind_names[(i + t) % KINDS]);
		printf("\"");
		for (int k = 0; k < KINDS; k++) {
			printf(", \"%s\": ", kind_names[k]);
			print_run(threads, &per[i * KINDS + k]);
		}
		printf("}");
	}
	printf("]}");
}

/* The first acquire waits for a value; then all n at once, so that the
 * pool holds n open connections before anything is measured. */
static int warm_up(int n)
{
	PGconn **held = calloc((size_t)n, sizeof(*held));
	uint64_t deadline = now_ns() + READY_TIMEOUT_MS * 1000000ull;
	int i, r = 0;

	if (!held)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		while (!(held[i] = dbswap_pool_acquire(pool, READY_TIMEOUT_MS)) &&
		       errno == ENOENT && now_ns() < deadline)
			sleep_s(0.01);
		if (!held[i]) {
			fprintf(stderr, "pool-bench: warm-up acquire %d of %d: "
				"%s\n", i + 1, n, strerror(errno));
			r = -1;
			break;
		}
	}
	while (i-- > 0)
		dbswap_pool_release(pool, held[i]);
	free(held);
	return r;
}

static PGconn **raw_connect(const char *conninfo, int n)
{
	PGconn **raw = calloc((size_t)n, sizeof(*raw));

	for (int i = 0; raw && i < n; i++) {
		raw[i] = PQconnectdb(conninfo);
		if (PQstatus(raw[i]) != CONNECTION_OK) {
			fprintf(stderr, "pool-bench: raw connection %d: %s", i,
				PQerrorMessage(raw[i]));
			exit(1);
		}
	}
	return raw;
}

static int parse_int(const char *name, const char *value)
{
	return (int)loadgen_parse_int("pool-bench", name, value, 1, 3600);
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *target = NULL;
	int threads = 8, seconds = 1, rounds = 5, pair_seconds = 2;
	struct result pairs1, pairsn, sum1[KINDS], sumn[KINDS];
	struct result *per1, *pern;
	dbswap_pool_config config = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool_stats stats = DBSWAP_POOL_STATS_INIT;
	dbswap_client *client;
	char *conninfo;
	uint64_t failures;
	PGconn **raw, **raw_b;

	for (int i = 1; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "pool-bench: %s wants a value\n",
				argv[i]);
			return 2;
		}
		if (!strcmp(argv[i], "--socket"))
			socket_path = v;
		else if (!strcmp(argv[i], "--target"))
			target = v;
		else if (!strcmp(argv[i], "--threads"))
			threads = parse_int(argv[i], v);
		else if (!strcmp(argv[i], "--seconds"))
			seconds = parse_int(argv[i], v);
		else if (!strcmp(argv[i], "--rounds"))
			rounds = parse_int(argv[i], v);
		else if (!strcmp(argv[i], "--pair-seconds"))
			pair_seconds = parse_int(argv[i], v);
		else {
			fprintf(stderr, "pool-bench: unknown option %s\n",
				argv[i]);
			return 2;
		}
	}
	if (!socket_path || !target) {
		fprintf(stderr, "usage: pool-bench --socket PATH --target NAME "
			"[--threads N] [--seconds S] [--rounds R] "
			"[--pair-seconds P] < conninfo\n");
		return 2;
	}
	conninfo = loadgen_read_conninfo("pool-bench", READY_TIMEOUT_MS);
	per1 = calloc((size_t)rounds * KINDS * 2, sizeof(*per1));
	if (!per1) {
		perror("pool-bench: calloc");
		return 1;
	}
	pern = per1 + rounds * KINDS;

	client = dbswap_client_new(socket_path);
	if (!client) {
		perror("pool-bench: dbswap_client_new");
		return 1;
	}
	config.min_size = config.max_size = threads;
	pool = dbswap_pool_new(client, target, &config);
	if (!pool) {
		fprintf(stderr, "pool-bench: dbswap_pool_new(%s): %s\n",
			target, strerror(errno));
		return 1;
	}
	if (warm_up(threads) < 0)
		return 1;
	raw = raw_connect(conninfo, threads);
	raw_b = raw_connect(conninfo, threads);
	loadgen_conninfo_free(conninfo);
	if (!raw || !raw_b) {
		perror("pool-bench: calloc");
		return 1;
	}

	fprintf(stderr, "pool-bench: acquire + release, %d s each\n",
		pair_seconds);
	run(MODE_PAIRS, 1, NULL, pair_seconds, &pairs1);
	run(MODE_PAIRS, threads, NULL, pair_seconds, &pairsn);
	fprintf(stderr, "pool-bench: SELECT 1 loops, raw, pool and raw_b "
		"taking turns in %d rounds of %d s\n", rounds, seconds);
	compare(1, raw, raw_b, rounds, seconds, sum1, per1);
	compare(threads, raw, raw_b, rounds, seconds, sumn, pern);
	dbswap_pool_stats_get(pool, &stats);

	printf("{\"threads\": %d, \"rounds\": %d, \"seconds\": %d, "
	       "\"pair_seconds\": %d, \"warm_seconds\": %.3f, \"pairs\": [",
	       threads, rounds, seconds, pair_seconds, WARM_S);
	print_run(1, &pairs1);
	printf(", ");
	print_run(threads, &pairsn);
	printf("], \"select\": [");
	print_select(1, rounds, sum1, per1);
	printf(", ");
	print_select(threads, rounds, sumn, pern);
	printf("], \"pool_stats\": {\"generation\": %" PRIu64 ", \"opened\": %"
	       PRIu64 ", \"closed\": %" PRIu64 ", \"timeouts\": %" PRIu64 "}}\n",
	       stats.generation, stats.opened, stats.closed, stats.timeouts);
	fflush(stdout);

	failures = pairs1.failures + pairsn.failures;
	for (int k = 0; k < KINDS; k++) {
		failures += sum1[k].failures + sumn[k].failures;
		free(sum1[k].lat);
		free(sumn[k].lat);
	}
	for (int i = 0; i < threads; i++) {
		PQfinish(raw[i]);
		PQfinish(raw_b[i]);
	}
	free(raw);
	free(raw_b);
	free(per1);
	dbswap_pool_free(pool);
	dbswap_client_free(client);
	return failures > 0 ? 1 : 0;
}

/*
 * Pool benchmark: what the libdbswap pool costs an app.  Driven by
 * tests/bench/pool.py, which runs the agent and rotates the password.
 *
 *   pool-bench --socket PATH --target NAME [--threads N] [--seconds S]
 *
 * stdin: first line, the conninfo for the raw connections (a secret:
 * never in argv).  The pool gets its value from the agent.
 *
 *   (i)   acquire + release with no query, 1 thread then N threads;
 *   (ii)  a SELECT 1 loop for S seconds through the pool and on raw
 *         persistent PGconns (one per thread), 1 thread and N threads;
 *   (iii) latency of the N-thread pool loop: steady state is the (ii)
 *         run; then pool-bench prints "@rotate" on a line of its own,
 *         runs the same loop while the driver rotates, and stops when
 *         stdin says "done" (or ends).
 *
 * The pool has min = max = N, opened before anything is measured.  A
 * pool iteration is acquire, SELECT 1, release; a raw one is SELECT 1.
 * Latencies are of whole iterations.  Results: markdown tables on stdout.
 */
#include <dbswap.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAIR_SECONDS 2
#define READY_TIMEOUT_MS 10000
/* A rotation phase that never hears "done" ends anyway. */
#define ROTATE_MAX_SECONDS 120
#define ERRORS_SHOWN 10

enum mode { MODE_PAIRS, MODE_POOL, MODE_RAW };

struct samples {
	uint64_t *ns;
	size_t n, cap;
};

struct worker {
	pthread_t thread;
	enum mode mode;
	PGconn *raw;
	uint64_t ops, failures;
	struct samples lat;
};

struct result {
	double seconds, cpu_seconds;
	uint64_t ops, failures;
	struct samples lat; /* sorted */
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

/* Keeps a latency; a sample that does not fit is dropped. */
static void samples_add(struct samples *s, uint64_t ns)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 4096;
		uint64_t *p = realloc(s->ns, cap * sizeof(*p));
		if (!p)
			return;
		s->ns = p;
		s->cap = cap;
	}
	s->ns[s->n++] = ns;
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
			continue;
		}
		w->ops++;
		if (w->mode != MODE_PAIRS)
			samples_add(&w->lat, now_ns() - t0);
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Reads one line from stdin without stdio's buffering (later lines must
 * stay in the pipe for later calls), waiting at most timeout_ms.  Returns
 * its length, or -1 at the end of input, on a timeout or an error. */
static int read_line(char *buf, size_t len, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	size_t n = 0;

	while (n + 1 < len) {
		struct pollfd pfd = { .fd = 0, .events = POLLIN };
		int64_t left = (int64_t)(deadline - now_ns()) / 1000000;

		if (left < 0 || poll(&pfd, 1, (int)left) <= 0 ||
		    read(0, &buf[n], 1) != 1)
			return -1;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return (int)n;
}

/* Waits for "done" on stdin, its end, or ROTATE_MAX_SECONDS. */
static void wait_done(void)
{
	char line[64];

	while (read_line(line, sizeof(line), ROTATE_MAX_SECONDS * 1000) >= 0)
		if (!strcmp(line, "done"))
			return;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Runs n threads in mode for seconds (0: until "done" on stdin). */
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
	if (seconds > 0)
		sleep_s(seconds);
	else
		wait_done();
	atomic_store(&stop, true);
	for (i = 0; i < n; i++)
		pthread_join(w[i].thread, NULL);
	res->seconds = (double)(now_ns() - t0) / 1e9;
	res->cpu_seconds =
		(double)(clock_ns(CLOCK_PROCESS_CPUTIME_ID) - c0) / 1e9;
	pthread_barrier_destroy(&start_line);

	for (i = 0; i < n; i++) {
		res->ops += w[i].ops;
		res->failures += w[i].failures;
		for (size_t j = 0; j < w[i].lat.n; j++)
			samples_add(&res->lat, w[i].lat.ns[j]);
		free(w[i].lat.ns);
	}
	free(w);
	if (res->lat.n)
		qsort(res->lat.ns, res->lat.n, sizeof(*res->lat.ns), cmp_u64);
}

/* Adds part to total (latencies re-sorted), and frees part. */
static void result_merge(struct result *total, struct result *part)
{
	total->seconds += part->seconds;
	total->cpu_seconds += part->cpu_seconds;
	total->ops += part->ops;
	total->failures += part->failures;
	for (size_t j = 0; j < part->lat.n; j++)
		samples_add(&total->lat, part->lat.ns[j]);
	free(part->lat.ns);
	if (total->lat.n)
		qsort(total->lat.ns, total->lat.n, sizeof(*total->lat.ns),
		      cmp_u64);
}

/* Raw and pool loops in alternating rounds, so that drift in the machine
 * (other processes, the server's own work) weighs on both alike. */
#define COMPARE_ROUNDS 5

static void compare(int n, PGconn **raw, double seconds, struct result *r,
		    struct result *p)
{
	memset(r, 0, sizeof(*r));
	memset(p, 0, sizeof(*p));
	for (int i = 0; i < COMPARE_ROUNDS; i++) {
		struct result part;
		run(MODE_RAW, n, raw, seconds / COMPARE_ROUNDS, &part);
		result_merge(r, &part);
		run(MODE_POOL, n, NULL, seconds / COMPARE_ROUNDS, &part);
		result_merge(p, &part);
	}
}

static double qps(const struct result *r)
{
	return r->seconds > 0 ? (double)r->ops / r->seconds : 0;
}

static double pct_us(const struct result *r, int p)
{
	if (!r->lat.n)
		return 0;
	return (double)r->lat.ns[(r->lat.n - 1) * (size_t)p / 100] / 1e3;
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

/* Table (i): one thread's time per pair (what an acquire + release
 * costs a caller, waiting for a CPU included), pairs per second of all
 * threads, and CPU time of the whole process (the pool's own threads
 * included) per pair. */
static void print_pairs(int n, const struct result *one,
			const struct result *many)
{
	const struct result *r[2] = { one, many };
	double per_thread[2], rate[2], cpu[2];

	for (int i = 0; i < 2; i++) {
		double ops = r[i]->ops ? (double)r[i]->ops : 1;
		int threads = i ? n : 1;
		per_thread[i] = r[i]->seconds * 1e9 * threads / ops;
		rate[i] = (double)r[i]->ops / r[i]->seconds / 1e6;
		cpu[i] = r[i]->cpu_seconds * 1e9 / ops;
	}
	printf("\n| acquire + release, no query, %d s | 1 thread | %d threads "
	       "|\n|---|---:|---:|\n", PAIR_SECONDS, n);
	printf("| per pair, one thread's wall time | %.0f ns | %.0f ns |\n",
	       per_thread[0], per_thread[1]);
	printf("| pairs per second, all threads | %.2f M | %.2f M |\n",
	       rate[0], rate[1]);
	printf("| process CPU time per pair | %.0f ns | %.0f ns |\n", cpu[0],
	       cpu[1]);
	printf("| failures | %" PRIu64 " | %" PRIu64 " |\n", one->failures,
	       many->failures);
}

static void print_latency(const char *label, const struct result *r)
{
	printf("| %s | %.0f | %.0f µs | %.0f µs | %.0f µs | %" PRIu64 " |\n",
	       label, qps(r), pct_us(r, 50), pct_us(r, 99),
	       r->lat.n ? (double)r->lat.ns[r->lat.n - 1] / 1e3 : 0,
	       r->failures);
}

static int parse_int(const char *name, const char *value)
{
	char *end;
	long v = strtol(value, &end, 10);

	if (end == value || *end || v < 1 || v > 3600) {
		fprintf(stderr, "pool-bench: %s wants a number from 1 to "
			"3600, not \"%s\"\n", name, value);
		exit(2);
	}
	return (int)v;
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *target = NULL;
	int threads = 8, seconds = 5;
	struct result pairs1, pairsn, raw1, pool1, rawn, pooln, rot;
	dbswap_pool_config config = { 0 };
	dbswap_pool_stats before, after;
	dbswap_client *client;
	char conninfo[4096];
	PGconn **raw;

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
		else {
			fprintf(stderr, "pool-bench: unknown option %s\n",
				argv[i]);
			return 2;
		}
	}
	if (!socket_path || !target) {
		fprintf(stderr, "usage: pool-bench --socket PATH --target NAME "
			"[--threads N] [--seconds S] < conninfo\n");
		return 2;
	}
	if (read_line(conninfo, sizeof(conninfo), READY_TIMEOUT_MS) <= 0) {
		fprintf(stderr, "pool-bench: no conninfo on stdin\n");
		return 2;
	}

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
	memset(conninfo, 0, sizeof(conninfo));
	if (!raw) {
		perror("pool-bench: calloc");
		return 1;
	}

	fprintf(stderr, "pool-bench: acquire + release, %d s each\n",
		PAIR_SECONDS);
	run(MODE_PAIRS, 1, NULL, PAIR_SECONDS, &pairs1);
	run(MODE_PAIRS, threads, NULL, PAIR_SECONDS, &pairsn);
	fprintf(stderr, "pool-bench: SELECT 1 loops, %d s each, raw and pool "
			"alternating in %d rounds\n",
		seconds, COMPARE_ROUNDS);
	compare(1, raw, seconds, &raw1, &pool1);
	compare(threads, raw, seconds, &rawn, &pooln);

	dbswap_pool_stats_get(pool, &before);
	printf("@rotate\n");
	fflush(stdout);
	run(MODE_POOL, threads, NULL, 0, &rot);
	dbswap_pool_stats_get(pool, &after);

	print_pairs(threads, &pairs1, &pairsn);
	printf("\n| SELECT 1 loop, %d s each, %d alternating rounds | 1 thread "
	       "| %d threads |\n",
	       seconds, COMPARE_ROUNDS, threads);
	printf("|---|---:|---:|\n");
	printf("| raw PGconn, queries/s | %.0f | %.0f |\n", qps(&raw1),
	       qps(&rawn));
	printf("| through the pool, queries/s | %.0f | %.0f |\n", qps(&pool1),
	       qps(&pooln));
	printf("| pool / raw (target ≥ 0.97) | %.3f | %.3f |\n",
	       qps(&raw1) > 0 ? qps(&pool1) / qps(&raw1) : 0,
	       qps(&rawn) > 0 ? qps(&pooln) / qps(&rawn) : 0);
	printf("\n| %d threads, acquire + SELECT 1 + release | queries/s | "
	       "p50 | p99 | max | failures |\n", threads);
	printf("|---|---:|---:|---:|---:|---:|\n");
	print_latency("steady state", &pooln);
	print_latency("during rotations", &rot);
	printf("\nduring rotations: %.1f s, the pool switched %" PRIu64
	       " time(s), generation %" PRIu64 " to %" PRIu64 "; "
	       "raw loops: %" PRIu64 " failure(s)\n",
	       rot.seconds, after.switches - before.switches, before.generation,
	       after.generation, raw1.failures + rawn.failures);
	fflush(stdout);

	for (int i = 0; i < threads; i++)
		PQfinish(raw[i]);
	free(raw);
	free(raw1.lat.ns);
	free(rawn.lat.ns);
	free(pool1.lat.ns);
	free(pooln.lat.ns);
	free(rot.lat.ns);
	dbswap_pool_free(pool);
	dbswap_client_free(client);
	return (pairs1.failures + pairsn.failures + pool1.failures +
		pooln.failures + rot.failures) > 0 ? 1 : 0;
}

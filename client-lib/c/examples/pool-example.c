/*
 * pool-example: a small app on the libdbswap connection pool.
 *
 *   pool-example [THREADS]
 *
 * THREADS threads (default 4) run a query in a loop through a pool that
 * follows DATABASE_URL as dbswapd publishes it: a rotated password needs
 * no restart and no code here.  Ctrl-C (or SIGTERM) prints the pool's
 * statistics and exits.
 *
 *   cc -std=c11 pool-example.c $(pkg-config --cflags --libs dbswap) \
 *      -pthread -o pool-example
 *   DBSWAP_SOCKET=/run/dbswap/dbswap.sock ./pool-example
 */
#define _POSIX_C_SOURCE 200809L
#include <dbswap.h>
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

static dbswap_pool *pool;
static atomic_bool done;

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	struct timespec pause = { 0, 100 * 1000000 }; /* 100 ms */

	while (!atomic_load(&done)) {
		/* Waits at most the pool's acquire timeout (5 s by default). */
		PGconn *conn = dbswap_pool_acquire(pool, -1);
		PGresult *res;

		if (!conn) {
			/* ENOENT: no value yet (no agent, or the first value
			 * still being validated). */
			fprintf(stderr, "worker %d: no connection: %s\n", id,
				errno == ENOENT ? "no value for DATABASE_URL yet"
						: strerror(errno));
			nanosleep(&pause, NULL);
			continue;
		}
		res = PQexec(conn, "SELECT current_user, now()");
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			fprintf(stderr, "worker %d: %s", id,
				PQerrorMessage(conn));
		PQclear(res);
		/* Always give it back, after an error too: the pool rolls it
		 * back or closes it as needed. */
		dbswap_pool_release(pool, conn);
		nanosleep(&pause, NULL);
	}
	return NULL;
}

static void print_stats(void)
{
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;

	dbswap_pool_stats_get(pool, &s);
	printf("generation %" PRIu64 ", %d open (%d idle, %d in use, %d old), "
	       "%d waiting\n", s.generation, s.size, s.idle, s.in_use, s.old,
	       s.waiting);
	printf("acquired %" PRIu64 ", timeouts %" PRIu64 ", opened %" PRIu64
	       ", closed %" PRIu64 ", failed connects %" PRIu64
	       ", switches %" PRIu64 "\n", s.acquired, s.timeouts, s.opened,
	       s.closed, s.failed_connects, s.switches);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4, i, sig;
	dbswap_client *client;
	pthread_t *threads;
	sigset_t signals;

	if (n < 1 || n > 1000) {
		fprintf(stderr, "usage: pool-example [THREADS]\n");
		return 2;
	}
	/* Blocked before any thread exists, the pool's included, so that only
	 * sigwait() below sees them. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	client = dbswap_client_new(NULL); /* $DBSWAP_SOCKET, or the default */
	if (!client) {
		perror("dbswap_client_new");
		return 1;
	}
	/* NULL: the defaults, or DATABASE_POOL_MAX and friends from the env
	 * files.  The pool starts the client's background thread. */
	pool = dbswap_pool_new(client, "DATABASE_URL", NULL);
	if (!pool) {
		perror("dbswap_pool_new");
		return 1;
	}
	threads = calloc((size_t)n, sizeof(*threads));
	if (!threads) {
		perror("calloc");
		return 1;
	}
	for (i = 0; i < n; i++)
		if (pthread_create(&threads[i], NULL, worker,
				   (void *)(intptr_t)i) != 0)
			break;
	printf("%d threads querying; Ctrl-C for statistics and exit\n", i);
	fflush(stdout);

	sigwait(&signals, &sig);
	atomic_store(&done, true);
	while (i-- > 0)
		pthread_join(threads[i], NULL);
	print_stats();

	dbswap_pool_free(pool); /* no thread uses it any more */
	dbswap_client_free(client);
	free(threads);
	return 0;
}

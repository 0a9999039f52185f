/*
 * The floor of a validated rotation: how long one new libpq connection
 * plus SELECT 1 takes.  Reads the conninfo from stdin (never argv), runs
 * N rounds, prints "median_ms p95_ms".
 *
 *   connect-floor N < conninfo
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20;
	char conninfo[4096];
	double *t;

	if (n < 1 || !fgets(conninfo, sizeof(conninfo), stdin))
		return 2;
	conninfo[strcspn(conninfo, "\n")] = '\0';
	t = calloc((size_t)n, sizeof(*t));
	if (!t)
		return 1;
	for (int i = 0; i < n; i++) {
		double t0 = now_ms();
		PGconn *c = PQconnectdb(conninfo);
		PGresult *r = PQexec(c, "SELECT 1");
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			fprintf(stderr, "connect-floor: %s", PQerrorMessage(c));
			return 1;
		}
		PQclear(r);
		PQfinish(c);
		t[i] = now_ms() - t0;
	}
	qsort(t, (size_t)n, sizeof(*t), cmp);
	printf("%.2f %.2f\n", t[n / 2], t[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1]);
	free(t);
	return 0;
}

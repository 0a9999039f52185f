/*
 * The floor of a validated rotation: how long one new libpq connection
 * plus SELECT 1 takes (what the agent's validation does).  Reads the
 * conninfo from stdin (never argv), runs N rounds one after the other and
 * prints each round's time in ms on a line of its own.
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

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20;
	char conninfo[4096];

	if (n < 1 || !fgets(conninfo, sizeof(conninfo), stdin)) {
		fprintf(stderr, "usage: connect-floor N < conninfo\n");
		return 2;
	}
	conninfo[strcspn(conninfo, "\n")] = '\0';
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
		printf("%.3f\n", now_ms() - t0);
	}
	return 0;
}

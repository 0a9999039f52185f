/*
 * The floor of a validated rotation: one validation as the agent does it,
 * timed as the agent times it.  The agent accepts a new value only after
 * agent/probe.c has connected with it and run PROBE_QUERY; this program
 * links the same probe (and the agent's recv(), agent/authguard.c, which
 * libpq's reads go through before login: see agent/dbswapd.dyn), runs it
 * on the agent's event loop (common/loop.c) with the options the agent's
 * validation uses, and prints what the agent logs as "validated in":
 * probe_result.elapsed_us, from probe_start() to the callback.  So a
 * rotation, which contains one such validation, cannot take less unless
 * something is wrong with the measurement.
 *
 * Reads the conninfo from stdin (never argv), runs one probe that is not
 * timed (the agent's first value was validated when it started: a
 * rotation never pays for libpq's first use in the process), then N
 * probes one after the other, and prints each one's time in ms on a line
 * of its own.  Exit status 1 if a probe failed (its error, which never
 * quotes the value, on stderr) or if the process does not route libpq's
 * reads through the guard (it would not be the agent's path), 2 for bad
 * usage.
 *
 *   connect-floor N < conninfo
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authguard.h"
#include "common/loop.h"
#include "probe.h"

/* The agent's default DB_HEALTH_CHECK_TIMEOUT, which bounds its
 * validations too: only a probe that would fail there reaches it. */
#define FLOOR_TIMEOUT_MS 5000

struct floor_round {
	struct loop *loop;
	bool done, ok;
	long long elapsed_us;
};

static void floor_done(const struct probe_result *res, void *data)
{
	struct floor_round *f = data;

	f->done = true;
	f->ok = res->ok;
	f->elapsed_us = res->elapsed_us;
	if (!res->ok)
		fprintf(stderr, "connect-floor: %s\n", res->error);
	loop_quit(f->loop);
}

/* One probe, start to callback.  Returns 0 with *us set, or -1. */
static int floor_probe(struct loop *loop, const char *conninfo,
		       long long *us)
{
	struct probe_opts o = { .conninfo = conninfo,
				.timeout_ms = FLOOR_TIMEOUT_MS };
	struct floor_round f = { .loop = loop };
	struct probe *p;
	int r = probe_start(loop, &o, floor_done, &f, &p);

	if (r < 0) {
		fprintf(stderr, "connect-floor: probe_start: %s\n",
			strerror(-r));
		return -1;
	}
	/* A failure known at once came through floor_done() already. */
	while (!f.done) {
		r = loop_run(loop);
		if (r < 0) {
			fprintf(stderr, "connect-floor: loop: %s\n",
				strerror(-r));
			return -1;
		}
	}
	*us = f.elapsed_us;
	return f.ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20;
	char conninfo[4096];
	struct loop *loop;
	long long us;
	int status = 0;

	if (n < 1 || !fgets(conninfo, sizeof(conninfo), stdin)) {
		fprintf(stderr, "usage: connect-floor N < conninfo\n");
		return 2;
	}
	conninfo[strcspn(conninfo, "\n")] = '\0';
	if (!authguard_active()) {
		fprintf(stderr, "connect-floor: libpq's reads do not go through "
			"the agent's guard (recv not exported): not the "
			"agent's path\n");
		return 1;
	}
	if (loop_new(&loop) < 0) {
		fprintf(stderr, "connect-floor: cannot create the loop\n");
		return 1;
	}
	if (floor_probe(loop, conninfo, &us) < 0)
		status = 1;
	for (int i = 0; i < n && status == 0; i++) {
		if (floor_probe(loop, conninfo, &us) < 0)
			status = 1;
		else
			printf("%.3f\n", us / 1000.0);
	}
	explicit_bzero(conninfo, sizeof(conninfo));
	loop_free(loop);
	return status;
}

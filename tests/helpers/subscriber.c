/*
 * Test subscriber: a small app built on the public libdbswap API only
 * (linked against the shared library), driven by the integration tests.
 *
 *   subscriber [--socket PATH] [--thread] [--no-connect] [--no-ack]
 *              [--name NAME] TARGET...
 *
 * For each update it prints, flushed, one line each:
 *   update TARGET GENERATION CONNINFO     (the real value: tests need it)
 *   server TARGET GENERATION SERVER standby=0|1 reason=REASON
 *   connect GENERATION ok                 after a libpq connection with it
 *   connect GENERATION fail MESSAGE
 *   connect GENERATION skip no server available     (server "none")
 * and then acks the generation.  The server line is separate so that the
 * update line keeps ending with the conninfo, which may hold blanks.
 * --thread uses dbswap_client_start() instead of polling
 * dbswap_client_fd() itself.  Exits on SIGTERM.
 */
#include <dbswap.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static bool opt_connect = true, opt_ack = true;
static dbswap_client *client;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_update(const dbswap_update *u, void *data)
{
	const char *conninfo = dbswap_update_conninfo(u);
	const char *server = dbswap_update_server(u);
	uint64_t gen = dbswap_update_generation(u);

	pthread_mutex_lock(&out_lock);
	printf("update %s %" PRIu64 " %s\n", dbswap_update_target(u), gen,
	       conninfo);
	printf("server %s %" PRIu64 " %s standby=%d reason=%s\n",
	       dbswap_update_target(u), gen, server, dbswap_update_standby(u),
	       dbswap_update_reason(u));
	fflush(stdout);
	if (opt_connect && !strcmp(server, "none")) {
		/* The value last in force, of a server that is down. */
		printf("connect %" PRIu64 " skip no server available\n", gen);
		fflush(stdout);
	} else if (opt_connect) {
		PGconn *conn = PQconnectdb(conninfo);
		PGresult *res = PQstatus(conn) == CONNECTION_OK
					? PQexec(conn, "SELECT 1")
					: NULL;
		if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
			printf("connect %" PRIu64 " ok\n", gen);
		} else {
			char *msg = strdup(PQerrorMessage(conn));
			for (char *p = msg; p && *p; p++)
				if (*p == '\n')
					*p = ' ';
			printf("connect %" PRIu64 " fail %s\n", gen,
			       msg ? msg : "?");
			free(msg);
		}
		PQclear(res);
		PQfinish(conn);
		fflush(stdout);
	}
	pthread_mutex_unlock(&out_lock);
	if (opt_ack) {
		int r = dbswap_ack(client, dbswap_update_target(u), gen);
		if (r < 0)
			fprintf(stderr, "subscriber: ack: %s\n", strerror(-r));
	}
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *name = "test-subscriber";
	bool thread = false;
	sigset_t set;
	int i, r;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			socket_path = argv[++i];
		else if (!strcmp(argv[i], "--name") && i + 1 < argc)
			name = argv[++i];
		else if (!strcmp(argv[i], "--thread"))
			thread = true;
		else if (!strcmp(argv[i], "--no-connect"))
			opt_connect = false;
		else if (!strcmp(argv[i], "--no-ack"))
			opt_ack = false;
		else {
			fprintf(stderr, "subscriber: unknown option %s\n",
				argv[i]);
			return 2;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "subscriber: which TARGET?\n");
		return 2;
	}
	client = dbswap_client_new(socket_path);
	if (!client) {
		perror("subscriber: dbswap_client_new");
		return 1;
	}
	dbswap_client_set_name(client, name);
	for (; i < argc; i++) {
		r = dbswap_subscribe(client, argv[i], on_update, NULL);
		if (r < 0) {
			fprintf(stderr, "subscriber: %s: %s\n", argv[i],
				strerror(-r));
			return 1;
		}
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (thread) {
		int sig;
		r = dbswap_client_start(client);
		if (r < 0) {
			fprintf(stderr, "subscriber: start: %s\n", strerror(-r));
			return 1;
		}
		sigwait(&set, &sig);
	} else {
		struct pollfd pfd[2] = {
			{ .fd = dbswap_client_fd(client), .events = POLLIN },
			{ .fd = signalfd(-1, &set, SFD_CLOEXEC),
			  .events = POLLIN },
		};
		for (;;) {
			if (poll(pfd, 2, -1) < 0 && errno != EINTR)
				break;
			if (pfd[1].revents)
				break;
			r = dbswap_client_dispatch(client);
			if (r < 0) {
				fprintf(stderr, "subscriber: dispatch: %s\n",
					strerror(-r));
				return 1;
			}
		}
	}
	dbswap_client_free(client);
	return 0;
}

/*
 * Fan-out helper for the benchmarks (tests/bench/fanout.py, footprint.py):
 * many subscribers in one process.  N libdbswap clients, built on the
 * public API only as an app would use it, each subscribed to TARGET, all
 * driven from one epoll loop over dbswap_client_fd() and
 * dbswap_client_dispatch() (no thread per client).  Each acks every update
 * at once, from its callback (like subscriber --no-connect).
 *
 *   fanout [--socket PATH] [--batch B] [--timeout S] [--linger S]
 *          [--name NAME] N TARGET
 *
 * N may be up to what the descriptor limit allows: each client holds four
 * descriptors (its epoll fd, timerfd, eventfd and socket), and the soft
 * limit is raised to the hard one (the hard one too when root).  Clients
 * are created as a sliding window: at most B (default 200) connecting at
 * once, without their first update yet, so that the agent's listen
 * backlog and hello deadline are not overrun.
 *
 * It prints to stdout, flushed, one JSON object a line:
 *   {"event":"ready","clients":N,"generation":G,"time":T,"setup":S}
 *       once every client has had its first update; G is the newest
 *       generation seen then, S the seconds since the start
 *   {"event":"generation","generation":G,"clients":K,"first":T1,"last":T2}
 *       for each generation newer than the ready one: K of the N clients
 *       got it, the first at T1, the last at T2.  Printed when K reaches N,
 *       when no client got G for --linger seconds (default 10), or at exit.
 *   {"event":"exit","log_lines":L}
 *       at exit; L lines came from libdbswap's log (the first 20 go to
 *       stderr, prefixed with the client's index)
 * Times are CLOCK_MONOTONIC seconds with microseconds (Python's
 * time.monotonic()).  A delivery's time is taken once for each batch of
 * events, when epoll_wait() returns, and used for every update dispatched
 * from that batch, so that "last" does not include fanout's own serial
 * work on the batch's other clients (acks, bookkeeping).
 *
 * Exits 0 on SIGTERM or SIGINT, 1 when the clients cannot be set up (the
 * descriptor limit, or not ready within --timeout seconds, default 300),
 * 2 on a usage error.  Never prints a conninfo.
 */
#include "loadgen.h"

#include <dbswap.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* Descriptors per client: epoll fd, timerfd, eventfd, socket. */
#define FDS_PER_CLIENT 4
/* Besides the clients': stdio, our epoll fd, the signalfd, slack. */
#define FDS_SPARE 64
#define LOG_LINES_SHOWN 20
#define EVENTS_MAX 1024

struct sub {
	dbswap_client *client;
	unsigned index;
	bool got_first;
};

/* A generation being delivered. */
struct gen {
	uint64_t generation;
	unsigned clients;
	double first, last;
};

static unsigned n_clients, n_ready;
static bool ready;
static uint64_t ready_gen, newest_gen;
static struct gen *gens;
static size_t n_gens, cap_gens;
static unsigned long log_lines;
static bool failed;
/* When the current batch of events arrived (see the top of the file). */
static double batch_t;

static double now_s(void)
{
	return (double)loadgen_now_us() / 1e6;
}

static void gen_print(const struct gen *g)
{
	printf("{\"event\":\"generation\",\"generation\":%" PRIu64
	       ",\"clients\":%u,\"first\":%.6f,\"last\":%.6f}\n",
	       g->generation, g->clients, g->first, g->last);
	fflush(stdout);
}

static void gen_remove(size_t i)
{
	gens[i] = gens[--n_gens];
}

static struct gen *gen_get(uint64_t generation, double t)
{
	for (size_t i = 0; i < n_gens; i++)
		if (gens[i].generation == generation)
			return &gens[i];
	if (n_gens == cap_gens) {
		size_t cap = cap_gens ? 2 * cap_gens : 8;
		struct gen *g = realloc(gens, cap * sizeof(*g));
		if (!g)
			return NULL;
		gens = g;
		cap_gens = cap;
	}
	gens[n_gens] = (struct gen){ .generation = generation, .first = t };
	return &gens[n_gens++];
}

static void on_update(const dbswap_update *u, void *data)
{
	struct sub *s = data;
	uint64_t generation = dbswap_update_generation(u);
	double t = batch_t;
	int r;

	/* At once, as an app with nothing to switch would. */
	r = dbswap_ack(s->client, dbswap_update_target(u), generation);
	if (r < 0)
		fprintf(stderr, "fanout: client %u: ack: %s\n", s->index,
			strerror(-r));
	if (generation > newest_gen)
		newest_gen = generation;
	if (!s->got_first) {
		s->got_first = true;
		n_ready++;
		return;
	}
	if (!ready || generation <= ready_gen)
		return;
	struct gen *g = gen_get(generation, t);
	if (!g) {
		fprintf(stderr, "fanout: out of memory\n");
		failed = true;
		return;
	}
	g->clients++;
	g->last = t;
	if (g->clients == n_clients) {
		gen_print(g);
		gen_remove((size_t)(g - gens));
	}
}

static void on_log(int priority, const char *line, void *data)
{
	const struct sub *s = data;

	(void)priority;
	if (log_lines++ < LOG_LINES_SHOWN)
		fprintf(stderr, "fanout: client %u: %s\n", s->index, line);
}

/* Raises the descriptor limit to what n clients need, if allowed. */
static int raise_fd_limit(unsigned n)
{
	rlim_t need = (rlim_t)n * FDS_PER_CLIENT + FDS_SPARE;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max < need) {
		/* Root may raise the hard limit too (up to fs.nr_open). */
		struct rlimit more = { need, need };
		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			return 0;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < need) {
		fprintf(stderr, "fanout: %u clients need %llu descriptors, the "
				"limit is %llu\n", n, (unsigned long long)need,
			(unsigned long long)rl.rlim_cur);
		return -EMFILE;
	}
	return 0;
}

static int sub_start(struct sub *s, unsigned index, const char *socket_path,
		     const char *name, const char *target, int epfd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = s };
	int r;

	s->index = index;
	s->client = dbswap_client_new(socket_path);
	if (!s->client)
		return -errno;
	dbswap_client_set_log(s->client, on_log, s);
	r = dbswap_client_set_name(s->client, name);
	if (r < 0)
		return r;
	r = dbswap_subscribe(s->client, target, on_update, s);
	if (r < 0)
		return r;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, dbswap_client_fd(s->client),
		      &ev) < 0)
		return -errno;
	return 0;
}

static bool parse_num(const char *s, double min, double max, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return !errno && end != s && !*end && *out >= min && *out <= max;
}

static int usage(void)
{
	fprintf(stderr, "usage: fanout [--socket PATH] [--batch B] "
			"[--timeout S] [--linger S] [--name NAME] N TARGET\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *name = "fanout", *target;
	double batch = 200, timeout = 300, linger = 10, n, started;
	struct epoll_event evs[EVENTS_MAX];
	struct sub *subs;
	unsigned created = 0;
	int epfd, sigfd, i, r, status = 0;
	sigset_t set;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *opt = argv[i];
		if (i + 1 >= argc)
			return usage();
		if (!strcmp(opt, "--socket"))
			socket_path = argv[++i];
		else if (!strcmp(opt, "--name"))
			name = argv[++i];
		else if (!strcmp(opt, "--batch")) {
			if (!parse_num(argv[++i], 1, 1e6, &batch))
				return usage();
		} else if (!strcmp(opt, "--timeout")) {
			if (!parse_num(argv[++i], 0.001, 1e6, &timeout))
				return usage();
		} else if (!strcmp(opt, "--linger")) {
			if (!parse_num(argv[++i], 0.001, 1e6, &linger))
				return usage();
		} else
			return usage();
	}
	if (argc - i != 2 || !parse_num(argv[i], 1, 1e6, &n))
		return usage();
	n_clients = (unsigned)n;
	target = argv[i + 1];

	r = raise_fd_limit(n_clients);
	if (r < 0) {
		fprintf(stderr, "fanout: descriptor limit: %s\n", strerror(-r));
		return 1;
	}
	subs = calloc(n_clients, sizeof(*subs));
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!subs || sigfd < 0 || epfd < 0) {
		perror("fanout: setup");
		return 1;
	}
	{
		/* data.ptr NULL: the signal. */
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, sigfd, &ev) < 0) {
			perror("fanout: epoll_ctl");
			return 1;
		}
	}

	started = now_s();
	while (!failed) {
		int wait_ms = -1;
		double t;

		/* The window: at most batch clients still waiting for their
		 * first update. */
		while (created < n_clients && created - n_ready < batch) {
			r = sub_start(&subs[created], created, socket_path,
				      name, target, epfd);
			if (r < 0) {
				fprintf(stderr, "fanout: client %u: %s\n",
					created, strerror(-r));
				status = 1;
				goto out;
			}
			created++;
		}
		t = now_s();
		if (!ready) {
			if (t - started > timeout) {
				fprintf(stderr, "fanout: only %u of %u clients "
						"ready after %.0f s\n",
					n_ready, n_clients, timeout);
				status = 1;
				goto out;
			}
			wait_ms = 1000;
		}
		/* Generations stuck short of every client: print them as
		 * they are. */
		for (size_t g = 0; g < n_gens;) {
			if (t - gens[g].last >= linger) {
				gen_print(&gens[g]);
				gen_remove(g);
				continue;
			}
			int ms = (int)((gens[g].last + linger - t) * 1000) + 1;
			if (wait_ms < 0 || ms < wait_ms)
				wait_ms = ms;
			g++;
		}

		int nev = epoll_wait(epfd, evs, EVENTS_MAX, wait_ms);
		batch_t = now_s();
		if (nev < 0 && errno != EINTR) {
			perror("fanout: epoll_wait");
			status = 1;
			goto out;
		}
		for (int e = 0; e < nev; e++) {
			struct sub *s = evs[e].data.ptr;
			if (!s)
				goto out;
			r = dbswap_client_dispatch(s->client);
			if (r < 0) {
				fprintf(stderr, "fanout: client %u: dispatch: "
						"%s\n", s->index, strerror(-r));
				status = 1;
				goto out;
			}
		}
		if (!ready && n_ready == n_clients) {
			ready = true;
			ready_gen = newest_gen;
			t = now_s();
			printf("{\"event\":\"ready\",\"clients\":%u,"
			       "\"generation\":%" PRIu64 ",\"time\":%.6f,"
			       "\"setup\":%.6f}\n",
			       n_clients, ready_gen, t, t - started);
			fflush(stdout);
		}
	}
	status = 1;

out:
	for (size_t g = 0; g < n_gens; g++)
		gen_print(&gens[g]);
	printf("{\"event\":\"exit\",\"log_lines\":%lu}\n", log_lines);
	fflush(stdout);
	for (unsigned k = 0; k < created; k++)
		dbswap_client_free(subs[k].client);
	free(subs);
	free(gens);
	close(epfd);
	close(sigfd);
	return status;
}

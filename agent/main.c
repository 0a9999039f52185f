/*
 * dbswapd: watches env files, validates database credentials against the
 * real server, and pushes every accepted change to subscribed processes.
 *
 * Everything runs in one event loop: inotify, the listening socket, the
 * clients, the validation connections, timers and signals.
 */
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "agent.h"
#include "authguard.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/loop.h"
#include "connplan.h"
#include "counters.h"
#include "events.h"
#include "failover.h"
#include "ipc/protocol.h"
#include "metrics.h"
#include "model.h"
#include "server.h"
#include "state.h"
#include "systemd.h"
#include "watch.h"

#define DEFAULT_TARGET "DATABASE_URL"

struct options {
	const char *socket_path;
	mode_t socket_mode;
	gid_t socket_gid;
	char **envs;
	size_t n_envs;
	char **targets;
	size_t n_targets;
	char **keys;
	size_t n_keys;
	struct access_allow *allow;
	size_t n_allow;
	struct access_principal *admin;
	size_t n_admin;
	unsigned max_clients;
	int hello_timeout_ms;
	unsigned max_clients_per_uid;
	unsigned reserved_clients;
	size_t output_per_uid;
	size_t output_total;
	int idle_timeout_ms; /* 0: default, -1: none */
	const char *state_dir;
	bool verbose;
	const char *metrics;  /* --metrics ADDR: NULL, off */
	const char *on_event; /* --on-event CMD: NULL, none */
	int64_t on_event_timeout_ms;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: dbswapd [OPTIONS]\n"
		"Watches env files and pushes validated database credentials "
		"to subscribed apps.\n\n"
		"  -s, --socket PATH     listen here (default %s)\n"
		"      --socket-mode MODE  octal mode of the socket (default "
		"0660)\n"
		"      --socket-group GROUP  group of the socket, name or number "
		"(default:\n"
		"                        the agent's)\n"
		"  -e, --env FILE        env file to watch; repeat for layers, "
		"later wins\n"
		"  -t, --target NAME     variable holding a conninfo; repeat "
		"(default %s)\n"
		"  -k, --key FILE        secret key for encrypted files; repeat "
		"to rotate\n"
		"                        (default $CREDENTIALS_DIRECTORY/"
		"dbswap.key)\n"
		"      --allow TARGET=SPEC  who may subscribe to TARGET (or * for "
		"every\n"
		"                        target); SPEC is a comma list of "
		"uid:N, user:NAME,\n"
		"                        gid:N, group:NAME (primary or "
		"supplementary group);\n"
		"                        repeat.  Root and the agent's uid always "
		"may.  Without\n"
		"                        any --allow: root, the agent's uid and "
		"the socket's group\n"
		"      --admin SPEC      who may also send reload, reconnect, "
		"failover, failback\n"
		"                        (default: root and the agent's uid "
		"only); repeat\n"
		"      --admin-group GROUP  the same as --admin group:GROUP\n"
		"      --max-clients N   most clients at once (default %d); one "
		"more gets error\n"
		"                        \"limit\" and is closed\n"
		"      --hello-timeout MS  drop a client that sends no hello "
		"within MS ms\n"
		"                        (default %d)\n"
		"      --max-clients-per-uid N  most clients of one uid at "
		"once, root and\n"
		"                        the agent's uid aside (default: "
		"max-clients / %d)\n"
		"      --reserved-clients N  the last N client slots are for "
		"root, the agent's\n"
		"                        uid and admins (default %d, at most "
		"max-clients / 4)\n"
		"      --output-per-uid MIB  output queued for the clients of "
		"one uid (default\n"
		"                        %d); past it, its clients holding "
		"the most are\n"
		"                        dropped as not reading\n"
		"      --output-total MIB  output queued for the clients of "
		"every uid but\n"
		"                        root's and the agent's (default %d); "
		"past it, the\n"
		"                        clients holding the most are dropped\n"
		"      --idle-timeout MS  drop a client that subscribes to "
		"nothing and sends\n"
		"                        nothing for MS ms; 0: never "
		"(default %d)\n"
		"      --state-dir DIR   keep the last good values here, for "
		"restarts\n"
		"                        (default $STATE_DIRECTORY; none "
		"without it)\n"
		"      --metrics ADDR    serve /metrics (Prometheus) and /health "
		"over HTTP on\n"
		"                        ADDR, a loopback address and port: "
		"127.0.0.1:9187\n"
		"      --on-event CMD    run CMD (an absolute path, no shell) on "
		"failover,\n"
		"                        failback, unavailable, rejected, gave-up, "
		"rotation-complete\n"
		"                        and split-brain; DBSWAP_* variables say "
		"what happened\n"
		"      --on-event-timeout S  kill a hook after S seconds (default "
		"10)\n"
		"  -v, --verbose         log debug messages\n"
		"  -V, --version         print the version\n"
		"  -h, --help            print this help\n",
		IPC_DEFAULT_SOCKET, DEFAULT_TARGET, SERVER_CLIENTS_MAX,
		SERVER_HELLO_TIMEOUT_MS, SERVER_CLIENTS_PER_UID_DIV,
		SERVER_CLIENTS_RESERVED, SERVER_OUTPUT_PER_UID >> 20,
		SERVER_OUTPUT_TOTAL >> 20, SERVER_IDLE_TIMEOUT_MS);
}

/* The number an option takes, in [min, max]; -1 after a message. */
static int parse_number_opt(const char *opt, const char *arg, uint64_t min,
			    uint64_t max, const char *unit, uint64_t *out)
{
	if (parse_uint(arg, min, max, out) == 0)
		return 0;
	fprintf(stderr, "dbswapd: %s: not a number%s from %llu to %llu: %s\n",
		opt, unit, (unsigned long long)min, (unsigned long long)max, arg);
	return -1;
}

/* Appends the principals of spec ("uid:N,user:NAME,gid:N,group:NAME") to
 * *list.  Names are resolved now, once: never in the event loop, where a
 * lookup may block on NSS.  Returns 0, or -1 after a message naming opt. */
static int parse_principals(const char *opt, const char *spec,
			    struct access_principal **list, size_t *n)
{
	char *copy = strdup(spec), *save = NULL, *item;
	int r = -1;

	if (!copy)
		return -1;
	for (item = strtok_r(copy, ",", &save); item;
	     item = strtok_r(NULL, ",", &save)) {
		struct access_principal p = { 0 };
		char *val = strchr(item, ':');
		uint64_t id;

		if (!val || !val[1])
			goto err;
		*val++ = '\0';
		if (streq(item, "uid") || streq(item, "gid")) {
			if (parse_uint(val, 0, (uid_t)-1 - 1, &id) < 0)
				goto err;
			p = (struct access_principal){ streq(item, "gid"),
						       (uint32_t)id };
		} else if (streq(item, "user")) {
			struct passwd *pw = getpwnam(val);
			if (!pw) {
				fprintf(stderr, "dbswapd: %s: no user named "
						"%s\n", opt, val);
				goto out;
			}
			p = (struct access_principal){ false, pw->pw_uid };
		} else if (streq(item, "group")) {
			struct group *g = getgrnam(val);
			if (!g) {
				fprintf(stderr, "dbswapd: %s: no group named "
						"%s\n", opt, val);
				goto out;
			}
			p = (struct access_principal){ true, g->gr_gid };
		} else {
			goto err;
		}
		struct access_principal *l =
			realloc(*list, (*n + 1) * sizeof(**list));
		if (!l)
			goto out;
		l[(*n)++] = p;
		*list = l;
	}
	if (*n > 0) {
		r = 0;
		goto out;
	}
err:
	fprintf(stderr, "dbswapd: %s: expected a comma list of uid:N, "
			"user:NAME, gid:N, group:NAME: %s\n", opt, spec);
out:
	free(copy);
	return r;
}

/* --allow TARGET=SPEC */
static int parse_allow(char *arg, struct options *o)
{
	char *eq = strchr(arg, '=');
	struct access_allow *l;
	struct access_principal *who = NULL;
	size_t n_who = 0;

	if (!eq || eq == arg) {
		fprintf(stderr, "dbswapd: --allow: expected TARGET=SPEC: %s\n",
			arg);
		return -1;
	}
	if (parse_principals("--allow", eq + 1, &who, &n_who) < 0) {
		free(who);
		return -1;
	}
	l = realloc(o->allow, (o->n_allow + 1) * sizeof(*l));
	if (!l) {
		free(who);
		return -1;
	}
	*eq = '\0'; /* argv is ours to cut */
	l[o->n_allow++] = (struct access_allow){ arg, who, n_who };
	o->allow = l;
	return 0;
}

static void options_fini(struct options *o)
{
	for (size_t i = 0; i < o->n_allow; i++)
		free((void *)o->allow[i].who);
	free(o->allow);
	free(o->admin);
	free(o->envs);
	free(o->targets);
	free(o->keys);
}

static int push(char ***list, size_t *n, char *item)
{
	char **l = realloc(*list, (*n + 1) * sizeof(char *));

	if (!l)
		return -ENOMEM;
	l[(*n)++] = item;
	*list = l;
	return 0;
}

/* Returns 0 to run, 1 to exit successfully, -1 on a usage error. */
static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "socket-mode", required_argument, NULL, 'm' },
		{ "socket-group", required_argument, NULL, 'g' },
		{ "env", required_argument, NULL, 'e' },
		{ "target", required_argument, NULL, 't' },
		{ "key", required_argument, NULL, 'k' },
		{ "allow", required_argument, NULL, 'A' },
		{ "admin", required_argument, NULL, 'a' },
		{ "admin-group", required_argument, NULL, 'G' },
		{ "max-clients", required_argument, NULL, 'M' },
		{ "hello-timeout", required_argument, NULL, 'H' },
		{ "max-clients-per-uid", required_argument, NULL, 'U' },
		{ "reserved-clients", required_argument, NULL, 'R' },
		{ "output-per-uid", required_argument, NULL, 'O' },
		{ "output-total", required_argument, NULL, 'T' },
		{ "idle-timeout", required_argument, NULL, 'I' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "metrics", required_argument, NULL, 'P' },
		{ "on-event", required_argument, NULL, 'E' },
		{ "on-event-timeout", required_argument, NULL, 'X' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	o->socket_path = IPC_DEFAULT_SOCKET;
	o->socket_mode = 0660;
	o->socket_gid = (gid_t)-1;
	while ((c = getopt_long(argc, argv, "s:e:t:k:vVh", longopts, NULL)) !=
	       -1) {
		char *end;
		switch (c) {
		case 's':
			o->socket_path = optarg;
			break;
		case 'm':
			o->socket_mode = (mode_t)strtoul(optarg, &end, 8);
			if (*end || o->socket_mode > 0777) {
				fprintf(stderr, "dbswapd: --socket-mode: not an "
						"octal mode: %s\n", optarg);
				return -1;
			}
			break;
		case 'g': {
			struct group *g = getgrnam(optarg);
			unsigned long gid = strtoul(optarg, &end, 10);
			if (g) {
				o->socket_gid = g->gr_gid;
			} else if (*optarg && !*end && gid < (gid_t)-1) {
				o->socket_gid = (gid_t)gid;
			} else {
				fprintf(stderr, "dbswapd: --socket-group: no "
						"group named %s\n", optarg);
				return -1;
			}
			break;
		}
		case 'e':
			if (push(&o->envs, &o->n_envs, optarg) < 0)
				return -1;
			break;
		case 't':
			if (push(&o->targets, &o->n_targets, optarg) < 0)
				return -1;
			break;
		case 'k':
			if (push(&o->keys, &o->n_keys, optarg) < 0)
				return -1;
			break;
		case 'A':
			if (parse_allow(optarg, o) < 0)
				return -1;
			break;
		case 'a':
			if (parse_principals("--admin", optarg, &o->admin,
					     &o->n_admin) < 0)
				return -1;
			break;
		case 'G': {
			char spec[320];
			snprintf(spec, sizeof(spec), "group:%s", optarg);
			if (strchr(optarg, ',') ||
			    parse_principals("--admin-group", spec, &o->admin,
					     &o->n_admin) < 0)
				return -1;
			break;
		}
		case 'M': {
			uint64_t n;
			if (parse_number_opt("--max-clients", optarg, 1, 1000000,
					     "", &n) < 0)
				return -1;
			o->max_clients = (unsigned)n;
			break;
		}
		case 'H': {
			uint64_t n;
			if (parse_number_opt("--hello-timeout", optarg, 1, 3600000,
					     " of ms", &n) < 0)
				return -1;
			o->hello_timeout_ms = (int)n;
			break;
		}
		case 'U': {
			uint64_t n;
			if (parse_number_opt("--max-clients-per-uid", optarg, 1,
					     1000000, "", &n) < 0)
				return -1;
			o->max_clients_per_uid = (unsigned)n;
			break;
		}
		case 'R': {
			uint64_t n;
			if (parse_number_opt("--reserved-clients", optarg, 1,
					     1000000, "", &n) < 0)
				return -1;
			o->reserved_clients = (unsigned)n;
			break;
		}
		case 'O':
		case 'T': {
			uint64_t n;
			if (parse_number_opt(c == 'O' ? "--output-per-uid"
						      : "--output-total",
					     optarg, 1, 65536, " of MiB", &n) < 0)
				return -1;
			if (c == 'O')
				o->output_per_uid = (size_t)n << 20;
			else
				o->output_total = (size_t)n << 20;
			break;
		}
		case 'I': {
			uint64_t n;
			if (parse_number_opt("--idle-timeout", optarg, 0, 86400000,
					     " of ms", &n) < 0)
				return -1;
			o->idle_timeout_ms = n ? (int)n : -1;
			break;
		}
		case 'S':
			o->state_dir = optarg;
			break;
		case 'P': {
			char why[256];
			if (!metrics_addr_ok(optarg, why, sizeof(why))) {
				fprintf(stderr, "dbswapd: --metrics: %s\n", why);
				return -1;
			}
			o->metrics = optarg;
			break;
		}
		case 'E':
			if (optarg[0] != '/') {
				fprintf(stderr, "dbswapd: --on-event: not an "
					"absolute path: %s\n", optarg);
				return -1;
			}
			o->on_event = optarg;
			break;
		case 'X': {
			uint64_t n;
			if (parse_number_opt("--on-event-timeout", optarg, 1,
					     3600, " of seconds", &n) < 0)
				return -1;
			o->on_event_timeout_ms = (int64_t)n * 1000;
			break;
		}
		case 'v':
			o->verbose = true;
			break;
		case 'V':
			printf("dbswapd %s\n", DBSWAP_VERSION);
			return 1;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "dbswapd: unexpected argument: %s\n",
			argv[optind]);
		return -1;
	}
	if (o->n_targets == 0 &&
	    push(&o->targets, &o->n_targets, DEFAULT_TARGET) < 0)
		return -1;
	/* systemd's StateDirectory=; several are separated by ':'. */
	if (!o->state_dir) {
		const char *sd = getenv("STATE_DIRECTORY");
		static char first[4096];
		if (sd && *sd) {
			snprintf(first, sizeof(first), "%.*s",
				 (int)strcspn(sd, ":"), sd);
			o->state_dir = first;
		}
	}
	/* A rule for a misspelt target would silently lock its apps out. */
	for (size_t i = 0; i < o->n_allow; i++) {
		bool known = streq(o->allow[i].target, "*");
		for (size_t j = 0; j < o->n_targets && !known; j++)
			known = streq(o->allow[i].target, o->targets[j]);
		if (!known) {
			fprintf(stderr, "dbswapd: --allow: no target named %s "
					"(targets come from --target)\n",
				o->allow[i].target);
			return -1;
		}
	}
	return 0;
}

static void agent_signal(struct loop_source *src, uint32_t events, void *data)
{
	struct agent *a = data;
	struct signalfd_siginfo si;

	while (read(loop_source_fd(src), &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGHUP:
			log_info("SIGHUP: re-reading the env files");
			model_reload(a);
			break;
		case SIGTERM:
		case SIGINT:
			log_info("%s: shutting down",
				 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			loop_quit(a->loop);
			break;
		}
	}
}

static int agent_init(struct agent *a, const struct options *o)
{
	struct server_config scfg = {
		.socket_path = o->socket_path,
		.socket_mode = o->socket_mode,
		.socket_gid = o->socket_gid,
		.allow = o->allow,
		.n_allow = o->n_allow,
		.admin = o->admin,
		.n_admin = o->n_admin,
		.max_clients = o->max_clients,
		.hello_timeout_ms = o->hello_timeout_ms,
		.max_clients_per_uid = o->max_clients_per_uid,
		.reserved_clients = o->reserved_clients,
		.output_per_uid = o->output_per_uid,
		.output_total = o->output_total,
		.idle_timeout_ms = o->idle_timeout_ms,
	};
	int r;

	a->started_ms = now_ms();
	failover_config_init(a);
	r = loop_new(&a->loop);
	if (r < 0)
		return r;
	r = systemd_init(a);
	if (r < 0)
		return r;
	/* The passwd lookups libpq would make in the loop, made now. */
	connplan_init();
	r = crypt_init();
	if (r < 0) {
		log_error("libsodium failed to initialise");
		return r;
	}
	r = keys_init(&a->keys, o->keys, o->n_keys);
	if (r < 0)
		return r;
	r = keys_load(&a->keys);
	if (r < 0)
		return r;
	r = layers_init(&a->layers, o->envs, o->n_envs, &a->keys);
	if (r < 0)
		return r;
	r = watcher_new(a->loop, &a->watcher);
	if (r < 0)
		return r;
	r = model_init(a, o->targets, o->n_targets);
	if (r < 0)
		return r;
	r = server_new(a, &scfg, &a->server);
	if (r < 0)
		return r;
	r = events_init(a->loop, o->on_event, o->on_event_timeout_ms);
	if (r < 0)
		return r;
	if (o->metrics && (r = metrics_http_start(a, o->metrics)) < 0)
		return r;
	r = state_new(o->state_dir, a, &a->state);
	if (r < 0)
		return r;
	if (!a->state)
		log_info("no state directory (--state-dir): the last good values "
			 "are not kept across restarts");
	state_load(a->state, a);
	r = model_load(a);
	if (r < 0)
		return r;
	systemd_changed(a);
	return 0;
}

static void agent_fini(struct agent *a)
{
	state_free(a->state);
	metrics_http_stop();
	events_fini();
	server_free(a->server);
	model_fini(a);
	/* Last: clients leaving may still complete a rotation, counted. */
	counters_reset();
	free(a->failover_error);
	watcher_free(a->watcher);
	layers_fini(&a->layers);
	keys_fini(&a->keys);
	systemd_fini(a);
	loop_free(a->loop);
}

/* Each client is a descriptor: the soft limit (1024 under systemd) would
 * stop accept() long before the client limit.  The hard limit is ours to
 * take; epoll has no FD_SETSIZE. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_warning("cannot raise the descriptor limit: %s",
			    strerror(errno));
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct agent a = { 0 };
	sigset_t mask;
	int sfd = -1, r;

	r = parse_args(argc, argv, &o);
	if (r != 0) {
		options_fini(&o);
		return r > 0 ? EXIT_SUCCESS : 2;
	}
	/* The loop must not wait on whoever reads our log. */
	log_init("dbswapd", o.verbose ? LOG_DEBUG : LOG_INFO, LOG_NEVER_BLOCK);
	raise_fd_limit();
	/* Without it a server could ask for, and get, a password in
	 * cleartext. */
	if (!authguard_active()) {
		log_error("built without its guard on libpq's reads "
			  "(agent/dbswapd.dyn): not starting");
		options_fini(&o);
		return EXIT_FAILURE;
	}

	/* Secrets live in this process: no core dumps, no ptrace by other
	 * uids. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	/* A lease break (layers.c holds a read lease while reading a file)
	 * sends SIGIO, which would kill the agent. */
	signal(SIGIO, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);

	r = agent_init(&a, &o);
	if (r < 0)
		goto out;
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		r = neg_errno();
		goto out;
	}
	r = loop_add_fd(a.loop, sfd, EPOLLIN, agent_signal, &a, NULL);
	if (r < 0)
		goto out;
	r = loop_run(a.loop);
	systemd_stopping(&a);
out:
	if (r < 0)
		log_error("exiting: %s", strerror(-r));
	agent_fini(&a);
	if (sfd >= 0)
		close(sfd);
	options_fini(&o);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

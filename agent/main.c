/*
 * dbswapd: watches env files, validates database credentials against the
 * real server, and pushes every accepted change to subscribed processes.
 *
 * Everything runs in one event loop: inotify, the listening socket, the
 * clients, the validation connections, timers and signals.
 */
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "agent.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/loop.h"
#include "failover.h"
#include "ipc/protocol.h"
#include "server.h"
#include "systemd.h"
#include "target.h"
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
	bool verbose;
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
		"  -v, --verbose         log debug messages\n"
		"  -V, --version         print the version\n"
		"  -h, --help            print this help\n",
		IPC_DEFAULT_SOCKET, DEFAULT_TARGET);
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
	return 0;
}

struct target *agent_find_target(struct agent *a, const char *name)
{
	for (size_t i = 0; i < a->n_targets; i++)
		if (streq(a->targets[i]->name, name))
			return a->targets[i];
	return NULL;
}

void agent_update_targets(struct agent *a)
{
	/* First: new timeouts apply to the validations started below. */
	failover_update_settings(a);
	for (size_t i = 0; i < a->n_targets; i++) {
		struct target *t = a->targets[i];
		target_set_values(t);
		/* The pool settings come from the same layers and change
		 * with them, but need no validation round trip. */
		target_update_settings(t);
	}
}

static void agent_file_changed(const char *path, void *data)
{
	struct agent *a = data;
	bool changed = false;

	a->eval_seq++;
	/* Several --env options may name the same file. */
	for (size_t i = 0; i < a->layers.n_files; i++) {
		if (!streq(a->layers.files[i].path, path))
			continue;
		int r = layers_reload(&a->layers, i, a->eval_seq);
		if (r < 0)
			log_error("%s: %s", path, strerror(-r));
		changed |= r > 0;
	}
	if (changed)
		agent_update_targets(a);
}

void agent_reload(struct agent *a)
{
	int r;

	systemd_reloading(a);
	r = keys_load(&a->keys);

	if (r == -ENOMEM)
		log_error("keys: out of memory");
	a->eval_seq++;
	for (size_t i = 0; i < a->layers.n_files; i++) {
		r = layers_reload(&a->layers, i, a->eval_seq);
		if (r < 0)
			log_error("%s: %s", a->layers.files[i].path,
				  strerror(-r));
	}
	agent_update_targets(a);
	/* A reload also gives a candidate that gave up another chance. */
	for (size_t i = 0; i < a->n_targets; i++)
		target_retry_now(a->targets[i]);
	systemd_reloaded(a);
}

static void agent_signal(struct loop_source *src, uint32_t events, void *data)
{
	struct agent *a = data;
	struct signalfd_siginfo si;

	while (read(loop_source_fd(src), &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGHUP:
			log_info("SIGHUP: re-reading the env files");
			agent_reload(a);
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
	for (size_t i = 0; i < o->n_envs; i++) {
		r = watcher_add(a->watcher, o->envs[i], agent_file_changed, a);
		if (r < 0) {
			log_error("cannot watch %s: %s", o->envs[i],
				  strerror(-r));
			return r;
		}
	}
	a->targets = calloc(o->n_targets, sizeof(*a->targets));
	if (!a->targets)
		return -ENOMEM;
	for (size_t i = 0; i < o->n_targets; i++) {
		if (agent_find_target(a, o->targets[i]))
			continue;
		r = target_new(a, o->targets[i], &a->targets[a->n_targets]);
		if (r < 0)
			return r;
		a->n_targets++;
	}
	r = server_new(a, &scfg, &a->server);
	if (r < 0)
		return r;
	a->eval_seq++;
	for (size_t i = 0; i < a->layers.n_files; i++) {
		r = layers_reload(&a->layers, i, a->eval_seq);
		if (r < 0)
			return r;
	}
	agent_update_targets(a);
	systemd_changed(a);
	return 0;
}

static void agent_fini(struct agent *a)
{
	server_free(a->server);
	for (size_t i = 0; i < a->n_targets; i++)
		target_free(a->targets[i]);
	free(a->targets);
	free(a->failover_error);
	watcher_free(a->watcher);
	layers_fini(&a->layers);
	keys_fini(&a->keys);
	systemd_fini(a);
	loop_free(a->loop);
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct agent a = { 0 };
	sigset_t mask;
	int sfd = -1, r;

	r = parse_args(argc, argv, &o);
	if (r != 0) {
		free(o.envs);
		free(o.targets);
		free(o.keys);
		return r > 0 ? EXIT_SUCCESS : 2;
	}
	log_init("dbswapd", o.verbose ? LOG_DEBUG : LOG_INFO);

	/* Secrets live in this process: no core dumps, no ptrace by other
	 * uids. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
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
	free(o.envs);
	free(o.targets);
	free(o.keys);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

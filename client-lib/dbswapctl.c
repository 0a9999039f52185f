/*
 * dbswapctl: the command-line client of dbswapd, built on libdbswap.
 *
 *   dbswapctl [--socket PATH] status [--json]
 *   dbswapctl [--socket PATH] watch TARGET [--show-secret] [--count N]
 *   dbswapctl [--socket PATH] reload
 *   dbswapctl [--socket PATH] set FILE NAME=VALUE... [options] [--wait[=S]]
 *   dbswapctl keygen --out KEYFILE | pubkey KEYFILE
 *   dbswapctl encrypt --pubkey KEY | decrypt --key KEYFILE
 *
 * This file holds main, the agent commands and the shared helpers
 * (ctl.h); ctl-keys.c and ctl-set.c hold the rest.  Exit codes: ctl.h.
 */
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

#include <sys/prctl.h>
#include <unistd.h>

#include "common/mask.h"
#include "common/util.h"
#include "ctl.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: dbswapctl [--socket PATH] COMMAND [ARGS]\n\n"
		"Commands:\n"
		"  status [--json]        targets, generations, subscribers, "
		"errors\n"
		"  watch TARGET [--show-secret] [--count N]\n"
		"                         print each update of TARGET and ack "
		"it\n"
		"  reload                 make the agent re-read its env files "
		"now\n"
		"  set FILE NAME=VALUE... [--pubkey KEY] [--key KEYFILE]\n"
		"      [--encrypt-values] [--wait[=SECONDS]]\n"
		"                         change entries of an env file "
		"atomically; VALUE - reads\n"
		"                         a line from stdin; --wait until every "
		"subscriber acked\n"
		"  keygen --out KEYFILE   make a secret key, print its public "
		"key\n"
		"  pubkey KEYFILE         print a secret key's public key\n"
		"  encrypt --pubkey KEY   seal stdin (a whole env file) to "
		"stdout\n"
		"  decrypt --key KEYFILE  open a sealed file from stdin to "
		"stdout\n\n"
		"The socket is --socket, else $DBSWAP_SOCKET, else %s.\n"
		"Exit: 0 ok, 1 refused or failed, 2 usage, 3 agent unreachable, "
		"4 value rejected,\n5 timed out waiting for acks.\n",
		DBSWAP_DEFAULT_SOCKET);
}

dbswap_client *ctl_connect(const char *path, const char *name)
{
	char err[512];
	dbswap_client *c = dbswap_client_new(path);

	if (!c) {
		fprintf(stderr, "dbswapctl: %s\n", strerror(errno));
		exit(EXIT_UNREACHABLE);
	}
	dbswap_client_set_name(c, name);
	if (client_connect_now(c, CTL_CALL_TIMEOUT_MS, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbswapctl: %s\n", err);
		dbswap_client_free(c);
		exit(EXIT_UNREACHABLE);
	}
	return c;
}

void ctl_call(dbswap_client *c, enum ipc_type type, struct ipc_msg *reply)
{
	uint64_t id = client_next_id(c);
	struct ipc_writer w;
	char err[512];

	ipc_writer_init(&w, type, 2);
	ipc_pack_kv_u64(&w, "id", id);
	if (client_call(c, &w, id, CTL_CALL_TIMEOUT_MS, reply, err,
			sizeof(err)) <
	    0) {
		fprintf(stderr, "dbswapctl: %s\n", err);
		exit(EXIT_UNREACHABLE);
	}
	if (reply->type == IPC_ERROR) {
		fprintf(stderr, "dbswapctl: the agent refused %s: %s: %s\n",
			ipc_type_name(type), reply->code, reply->message);
		exit(EXIT_REFUSED);
	}
}

/* JSON */

static void json_string(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		switch (ch) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		default:
			if (ch < 0x20)
				printf("\\u%04x", ch);
			else
				putchar(ch);
		}
	}
	putchar('"');
}

static void json_indent(int depth)
{
	putchar('\n');
	for (int i = 0; i < depth; i++)
		fputs("  ", stdout);
}

static void json_value(const msgpack_object *o, int depth)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		fputs("null", stdout);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", stdout);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		printf("%" PRIu64, o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		printf("%" PRId64, o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		printf("%.17g", o->via.f64);
		break;
	case MSGPACK_OBJECT_STR:
		json_string(o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_ARRAY:
		if (o->via.array.size == 0) {
			fputs("[]", stdout);
			break;
		}
		putchar('[');
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			json_indent(depth + 1);
			json_value(&o->via.array.ptr[i], depth + 1);
			if (i + 1 < o->via.array.size)
				putchar(',');
		}
		json_indent(depth);
		putchar(']');
		break;
	case MSGPACK_OBJECT_MAP:
		if (o->via.map.size == 0) {
			fputs("{}", stdout);
			break;
		}
		putchar('{');
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			json_indent(depth + 1);
			if (k->type == MSGPACK_OBJECT_STR)
				json_string(k->via.str.ptr, k->via.str.size);
			else
				fputs("\"?\"", stdout);
			fputs(": ", stdout);
			json_value(&o->via.map.ptr[i].val, depth + 1);
			if (i + 1 < o->via.map.size)
				putchar(',');
		}
		json_indent(depth);
		putchar('}');
		break;
	default:
		fputs("null", stdout);
	}
}

/* Reading the status tree */

const char *ctl_str(const msgpack_object *map, const char *key, char *buf,
		    size_t size)
{
	const msgpack_object *o = ipc_map_get(map, key);

	if (!o || o->type != MSGPACK_OBJECT_STR)
		return NULL;
	snprintf(buf, size, "%.*s", (int)o->via.str.size, o->via.str.ptr);
	return buf;
}

long long ctl_int(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = ipc_map_get(map, key);

	if (!o)
		return -1;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return (long long)o->via.u64;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return o->via.i64;
	if (o->type == MSGPACK_OBJECT_BOOLEAN)
		return o->via.boolean;
	return -1;
}

const msgpack_object *ctl_array(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = ipc_map_get(map, key);

	return o && o->type == MSGPACK_OBJECT_ARRAY ? o : NULL;
}

/* The pool settings from the env files, if any, and why the newest were
 * refused. */
static void print_settings(const msgpack_object *t)
{
	static const char *const keys[] = { "pool_max", "pool_min",
					     "pool_timeout_ms",
					     "pool_idle_timeout_ms" };
	const msgpack_object *set = ipc_map_get(t, "settings");
	char err[512];
	bool any = false;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		long long v = ctl_int(set, keys[i]);
		if (v < 0)
			continue;
		printf("%s%s=%lld", any ? ", " : "  pool:        ", keys[i], v);
		any = true;
	}
	if (any)
		putchar('\n');
	if (ctl_str(t, "settings_error", err, sizeof(err)))
		printf("  settings:    refused, the last good ones stay: %s\n",
		       err);
}

static void print_status(const msgpack_object *root)
{
	const msgpack_object *agent = ipc_map_get(root, "agent");
	const msgpack_object *targets = ctl_array(root, "targets");
	const msgpack_object *files = ctl_array(root, "files");
	char a[256], b[1024];
	long long up = ctl_int(agent, "uptime_ms") / 1000;

	printf("agent: dbswapd %s, pid %lld, up %lldh%02lldm%02llds, %lld "
	       "client(s)\n",
	       ctl_str(agent, "version", a, sizeof(a)) ? a : "?",
	       ctl_int(agent, "pid"), up / 3600, up / 60 % 60, up % 60,
	       ctl_int(agent, "clients"));
	for (uint32_t i = 0; targets && i < targets->via.array.size; i++) {
		const msgpack_object *t = &targets->via.array.ptr[i];
		const msgpack_object *lag = ctl_array(t, "lagging");

		printf("\n%s\n", ctl_str(t, "name", a, sizeof(a)) ? a : "?");
		printf("  generation:  %lld (%s)\n", ctl_int(t, "generation"),
		       ctl_int(t, "valid") == 1 ? "valid" : "no value yet");
		printf("  state:       %s\n",
		       ctl_str(t, "state", a, sizeof(a)) ? a : "?");
		printf("  conninfo:    %s\n",
		       ctl_str(t, "conninfo", b, sizeof(b)) ? b : "(none)");
		printf("  subscribers: %lld, %lld acked the current "
		       "generation\n",
		       ctl_int(t, "subscribers"), ctl_int(t, "acked"));
		for (uint32_t j = 0; lag && j < lag->via.array.size; j++) {
			const msgpack_object *l = &lag->via.array.ptr[j];
			printf("    waiting for pid %lld (%s), at generation "
			       "%lld",
			       ctl_int(l, "pid"),
			       ctl_str(l, "name", a, sizeof(a)) ? a : "?",
			       ctl_int(l, "acked"));
			if (ctl_str(l, "error", b, sizeof(b)))
				printf("; it cannot switch: %s", b);
			putchar('\n');
		}
		print_settings(t);
		if (ctl_str(t, "error", b, sizeof(b)))
			printf("  last error:  %s\n", b);
	}
	if (files && files->via.array.size > 0)
		printf("\nfiles\n");
	for (uint32_t i = 0; files && i < files->via.array.size; i++) {
		const msgpack_object *f = &files->via.array.ptr[i];
		printf("  %s: %s",
		       ctl_str(f, "path", b, sizeof(b)) ? b : "?",
		       ctl_str(f, "state", a, sizeof(a)) ? a : "?");
		if (ctl_str(f, "error", b, sizeof(b)))
			printf(" (%s)", b);
		else
			printf(" (%lld entries)", ctl_int(f, "entries"));
		putchar('\n');
	}
}

static int cmd_status(const char *socket, int argc, char **argv)
{
	bool json = false;
	struct ipc_msg reply;
	dbswap_client *c;

	for (int i = 0; i < argc; i++) {
		if (streq(argv[i], "--json")) {
			json = true;
		} else {
			fprintf(stderr, "dbswapctl status: unknown argument "
					"%s\n", argv[i]);
			return EXIT_USAGE;
		}
	}
	c = ctl_connect(socket, "dbswapctl status");
	ctl_call(c, IPC_STATUS, &reply);
	if (json) {
		json_value(&reply.root.data, 0);
		putchar('\n');
	} else {
		print_status(&reply.root.data);
	}
	ipc_msg_fini(&reply);
	dbswap_client_free(c);
	return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_REFUSED;
}

static int cmd_reload(const char *socket, int argc, char **argv)
{
	struct ipc_msg reply;
	dbswap_client *c;

	if (argc > 0) {
		fprintf(stderr, "dbswapctl reload: unknown argument %s\n",
			argv[0]);
		return EXIT_USAGE;
	}
	c = ctl_connect(socket, "dbswapctl reload");
	ctl_call(c, IPC_RELOAD, &reply);
	ipc_msg_fini(&reply);
	dbswap_client_free(c);
	printf("reloaded\n");
	return EXIT_SUCCESS;
}

struct watch {
	dbswap_client *client;
	bool show_secret;
	long count; /* updates left before exiting, -1 for no limit */
};

static void watch_update(const dbswap_update *u, void *data)
{
	struct watch *w = data;
	const char *conninfo = dbswap_update_conninfo(u);
	char *masked = w->show_secret ? NULL : mask_conninfo(conninfo);

	printf("%s generation %" PRIu64 " (%s): %s\n",
	       dbswap_update_target(u), dbswap_update_generation(u),
	       dbswap_update_reason(u), masked ? masked : conninfo);
	fflush(stdout);
	free(masked);
	dbswap_ack(w->client, dbswap_update_target(u),
		   dbswap_update_generation(u));
	if (w->count > 0)
		w->count--;
}

/* True if the agent has a target of that name; lists them otherwise. */
static bool has_target(dbswap_client *c, const char *name)
{
	const msgpack_object *targets;
	struct ipc_msg reply;
	char buf[IPC_NAME_MAX + 1];
	bool found = false;

	ctl_call(c, IPC_STATUS, &reply);
	targets = ctl_array(&reply.root.data, "targets");
	for (uint32_t i = 0; targets && i < targets->via.array.size; i++) {
		const char *t = ctl_str(&targets->via.array.ptr[i], "name", buf,
					sizeof(buf));
		if (t && streq(t, name))
			found = true;
	}
	if (!found) {
		fprintf(stderr, "dbswapctl watch: the agent has no target %s; "
				"it has:", name);
		for (uint32_t i = 0; targets && i < targets->via.array.size;
		     i++)
			fprintf(stderr, " %s",
				ctl_str(&targets->via.array.ptr[i], "name", buf,
					sizeof(buf)));
		fputc('\n', stderr);
	}
	ipc_msg_fini(&reply);
	return found;
}

static int cmd_watch(const char *socket, int argc, char **argv)
{
	struct watch w = { .count = -1 };
	const char *target = NULL;
	int r;

	for (int i = 0; i < argc; i++) {
		if (streq(argv[i], "--show-secret")) {
			w.show_secret = true;
		} else if (streq(argv[i], "--count") && i + 1 < argc) {
			w.count = strtol(argv[++i], NULL, 10);
		} else if (argv[i][0] != '-' && !target) {
			target = argv[i];
		} else {
			fprintf(stderr, "dbswapctl watch: unknown argument "
					"%s\n", argv[i]);
			return EXIT_USAGE;
		}
	}
	if (!target) {
		fprintf(stderr, "dbswapctl watch: which TARGET?\n");
		return EXIT_USAGE;
	}
	w.client = ctl_connect(socket, "dbswapctl watch");
	if (!has_target(w.client, target)) {
		dbswap_client_free(w.client);
		return EXIT_REFUSED;
	}
	r = dbswap_subscribe(w.client, target, watch_update, &w);
	if (r < 0) {
		fprintf(stderr, "dbswapctl watch: %s: %s\n", target,
			strerror(-r));
		dbswap_client_free(w.client);
		return EXIT_USAGE;
	}
	while (w.count != 0) {
		struct pollfd pfd = { .fd = dbswap_client_fd(w.client),
				      .events = POLLIN };
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			break;
		r = dbswap_client_dispatch(w.client);
		if (r < 0) {
			fprintf(stderr, "dbswapctl watch: %s\n", strerror(-r));
			break;
		}
	}
	dbswap_client_free(w.client);
	return w.count == 0 ? EXIT_SUCCESS : EXIT_REFUSED;
}

int ctl_read_all(int fd, size_t max, uint8_t **out, size_t *out_len)
{
	size_t len = 0, cap = 4096;
	uint8_t *buf = malloc(cap + 1);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;
		if (len == cap) {
			uint8_t *bigger;
			if (cap > max)
				break;
			bigger = secret_grow(buf, len, cap + 1, cap * 2 + 1);
			if (!bigger) {
				explicit_bzero(buf, len);
				free(buf);
				return -ENOMEM;
			}
			buf = bigger;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = neg_errno();
			explicit_bzero(buf, len);
			free(buf);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > max) {
		explicit_bzero(buf, len);
		free(buf);
		return -EFBIG;
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *socket = NULL;
	int c;

	/* dbswapctl handles keys and values: no core dumps of it. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	/* Options before the command only; the command parses its own. */
	while ((c = getopt_long(argc, argv, "+s:Vh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			socket = optarg;
			break;
		case 'V':
			printf("dbswapctl %s\n", DBSWAP_VERSION);
			return EXIT_SUCCESS;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[optind];
	int n = argc - optind - 1;
	char **args = argv + optind + 1;
	if (streq(cmd, "status"))
		return cmd_status(socket, n, args);
	if (streq(cmd, "watch"))
		return cmd_watch(socket, n, args);
	if (streq(cmd, "reload"))
		return cmd_reload(socket, n, args);
	if (streq(cmd, "set"))
		return cmd_set(socket, n, args);
	if (streq(cmd, "keygen"))
		return cmd_keygen(n, args);
	if (streq(cmd, "pubkey"))
		return cmd_pubkey(n, args);
	if (streq(cmd, "encrypt"))
		return cmd_encrypt(n, args);
	if (streq(cmd, "decrypt"))
		return cmd_decrypt(n, args);
	fprintf(stderr, "dbswapctl: unknown command %s\n", cmd);
	usage(stderr);
	return EXIT_USAGE;
}

/*
 * dbswapctl: the command-line client of dbswapd, built on libdbswap.
 *
 *   dbswapctl [--socket PATH] status [--json]
 *   dbswapctl [--socket PATH] watch TARGET [--show-secret] [--count N]
 *   dbswapctl [--socket PATH] reload
 *   dbswapctl [--socket PATH] set FILE NAME=VALUE... [options] [--wait[=S]]
 *   dbswapctl [--socket PATH] rotate FILE TARGET --admin FILE [options]
 *   dbswapctl [--socket PATH] failover|failback TARGET [--force] [--wait[=S]]
 *   dbswapctl [--socket PATH] reconnect [TARGET] [--wait[=S]]
 *   dbswapctl keygen --out KEYFILE | pubkey KEYFILE
 *   dbswapctl encrypt --pubkey KEY | decrypt --key KEYFILE
 *
 * This file holds main, the agent commands and the shared helpers
 * (ctl.h); ctl-keys.c, ctl-set.c and ctl-rotate.c hold the rest.  Exit
 * codes: ctl.h.
 */
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
		"  failover TARGET [--force] [--wait[=SECONDS]]\n"
		"                         switch TARGET to its secondary now "
		"(a drill); it stays\n"
		"                         there until failback; --wait until "
		"every subscriber acked\n"
		"  failback TARGET [--force] [--wait[=SECONDS]]\n"
		"                         switch TARGET back to its primary "
		"now; --force even\n"
		"                         if both servers of a replicated "
		"pair are writable\n"
		"  reconnect [TARGET] [--wait[=SECONDS]]\n"
		"                         re-open the agent's monitor "
		"connections and publish the\n"
		"                         value again so that apps replace "
		"every connection;\n"
		"                         --wait (with a TARGET) until every "
		"subscriber acked\n"
		"  set FILE NAME=VALUE... [--pubkey KEY] [--key KEYFILE]\n"
		"      [--encrypt-values] [--force] [--wait[=SECONDS]]\n"
		"                         change entries of an env file "
		"atomically; VALUE - reads\n"
		"                         a line from stdin; --wait until every "
		"subscriber acked\n"
		"  rotate FILE TARGET --admin CONNINFO_FILE [--strategy "
		"single|alternate]\n"
		"      [--wait[=SECONDS]] [--key KEYFILE] [--pubkey KEY] "
		"[--force]\n"
		"      [--allow-no-subscribers]\n"
		"                         new random password: changed on the "
		"server, written to\n"
		"                         FILE, followed until every subscriber "
		"acked\n"
		"  metrics                print the agent's Prometheus metrics "
		"(for node_exporter's\n"
		"                         textfile collector)\n"
		"  keygen --out KEYFILE   make a secret key, print its public "
		"key\n"
		"  pubkey KEYFILE         print a secret key's public key\n"
		"  encrypt --pubkey KEY   seal stdin (a whole env file) to "
		"stdout\n"
		"  decrypt --key KEYFILE  open a sealed file from stdin to "
		"stdout\n\n"
		"The socket is --socket, else $DBSWAP_SOCKET, else %s.\n"
		"--wait waits %d seconds unless told.\n"
		"Exit: 0 ok, 1 refused or failed, 2 usage, 3 agent unreachable, "
		"4 value rejected\nor switch refused, 5 timed out waiting for "
		"acks.\n",
		DBSWAP_DEFAULT_SOCKET, CTL_WAIT_DEFAULT_S);
}

/* dbswapctl COMMAND --help: the command's line of usage(), and more. */
static const struct {
	const char *name, *text;
} command_help[] = {
	{ "status", "[--json]\n\n"
		    "Targets, generations, subscribers and who lags, errors, "
		    "files.\n--json: the status reply as JSON (fields in "
		    "PROTOCOL.md).\n" },
	{ "watch", "TARGET [--show-secret] [--count N]\n\n"
		   "Prints each update of TARGET (passwords masked unless "
		   "--show-secret) and acks\nit; --count N: exit after N "
		   "updates.  A target the agent does not have, or\nrefuses "
		   "to this user, ends it with exit 1 and the agent's "
		   "reason.\n" },
	{ "metrics", "\n\nPrints the agent's Prometheus metrics (the text "
		     "format), for node_exporter's\ntextfile collector; "
		     "the targets this user may follow (all for root and "
		     "admins).\n" },
	{ "reload", "\n\nMakes the agent re-read every key and env file "
		    "now (as SIGHUP).\n" },
	{ "set", "FILE NAME=VALUE... [--pubkey KEY] [--key KEYFILE]\n"
		 "       [--encrypt-values] [--force] [--wait[=SECONDS]]\n\n"
		 "Changes entries of an env file atomically and durably; "
		 "VALUE - reads a line\nfrom stdin.  --wait follows the change "
		 "until every subscriber acked it: while\nthe agent retries a "
		 "refused password it says which attempt; exit 4 once the\n"
		 "agent gives up, 5 on timeout.\n" },
	{ "rotate", "FILE TARGET --admin CONNINFO_FILE\n"
		    "       [--strategy single|alternate] [--wait[=SECONDS]] "
		    "[--key KEYFILE]\n       [--pubkey KEY] [--force] "
		    "[--allow-no-subscribers]\n\n"
		    "Makes a random password, sets it on the server (ALTER ROLE "
		    "with a SCRAM\nverifier made here) over the admin "
		    "connection whose conninfo CONNINFO_FILE\nholds, writes it "
		    "into TARGET's conninfo in FILE as set does, and with "
		    "--wait\nfollows it until every subscriber acked.\n"
		    "--strategy alternate: TARGET logs in as NAME_a or NAME_b; "
		    "the other gets the\nnew password and LOGIN, TARGET is "
		    "pointed at it, and once every subscriber\nacked (always "
		    "waited for) the old one gets NOLOGIN.  Without that proof "
		    "it\nkeeps its login: at least one subscriber must ack "
		    "(--allow-no-subscribers\nrevokes without), the two roles "
		    "must be in the same groups, and no value\nthe agent shows "
		    "may still name the old role.\n"
		    "Refused before anything changes: TARGET's value in use "
		    "taken from a later\nfile than FILE, another entry logging "
		    "in as the same role, or (with --wait)\nan agent that hides "
		    "the files' details from this caller.  The wait fails\n"
		    "(status 1) when the agent read FILE but TARGET's value in "
		    "use did not change.\n" },
	{ "failover", "TARGET [--force] [--wait[=SECONDS]]\n\n"
		      "Switches TARGET to its secondary now; it stays there "
		      "until failback.\n" },
	{ "failback", "TARGET [--force] [--wait[=SECONDS]]\n\n"
		      "Switches TARGET back to its primary now; --force even "
		      "if both servers\nof a replicated pair are writable.\n" },
	{ "reconnect", "[TARGET] [--wait[=SECONDS]]\n\n"
		       "Re-opens the agent's monitor connections and publishes "
		       "the value again so\nthat apps replace every "
		       "connection; --wait (with a TARGET) for every ack.\n" },
	{ "keygen", "--out KEYFILE\n\nMakes a secret key (mode 0600, never "
		    "overwritten), prints its public key.\n" },
	{ "pubkey", "KEYFILE\n\nPrints a secret key's public key.\n" },
	{ "encrypt", "--pubkey KEY\n\nSeals stdin (a whole env file) to "
		     "KEY, to stdout.\n" },
	{ "decrypt", "--key KEYFILE\n\nOpens a sealed file from stdin to "
		     "stdout.\n" },
};

/* Prints cmd's help when args ask for it (--help or -h anywhere); true
 * then.  Commands without an entry get the general usage. */
static bool command_help_asked(const char *cmd, int argc, char **argv)
{
	bool asked = false;

	for (int i = 0; i < argc && !asked; i++)
		asked = streq(argv[i], "--help") || streq(argv[i], "-h");
	if (!asked)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(command_help); i++) {
		if (!streq(command_help[i].name, cmd))
			continue;
		printf("Usage: dbswapctl %s %s\nExit: 0 ok, 1 refused or "
		       "failed, 2 usage, 3 agent unreachable, 4 value "
		       "rejected\nor switch refused, 5 timed out waiting for "
		       "acks.\n",
		       cmd, command_help[i].text);
		return true;
	}
	usage(stdout);
	return true;
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

dbswap_client *ctl_connect_until(const char *path, const char *name,
				 int64_t deadline)
{
	char err[512];

	for (;;) {
		dbswap_client *c = dbswap_client_new(path);
		int64_t left = deadline - now_ms();
		int r;

		if (!c)
			return NULL;
		dbswap_client_set_log(c, NULL, NULL); /* it is expected away */
		dbswap_client_set_name(c, name);
		r = client_connect_now(c, (int)MAX(1, MIN(left,
							  CTL_CALL_TIMEOUT_MS)),
				       err, sizeof(err));
		if (r == 0)
			return c;
		dbswap_client_free(c);
		if (now_ms() >= deadline)
			return NULL;
		poll(NULL, 0, (int)MIN(100, MAX(1, deadline - now_ms())));
	}
}

/* An error reply's words made printable before anyone prints them: an
 * older agent echoed clients' text (a target name) into them, and passed
 * a server's messages on as they came. */
static void ctl_clean_reply(struct ipc_msg *reply)
{
	char **fields[] = { &reply->code, &reply->message };

	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		char *s = *fields[i], *clean;

		if (!s || ipc_text_is_clean(s, strlen(s)))
			continue;
		clean = ipc_text_clean(s, strlen(s), SIZE_MAX, NULL);
		if (!clean)
			continue; /* printed as it is: better than nothing */
		free(s);
		*fields[i] = clean;
	}
}

int ctl_try_call(dbswap_client *c, enum ipc_type type, struct ipc_msg *reply)
{
	uint64_t id = client_next_id(c);
	struct ipc_writer w;
	char err[512];
	int r;

	ipc_writer_init(&w, type, 2);
	ipc_pack_kv_u64(&w, "id", id);
	r = client_call(c, &w, id, CTL_CALL_TIMEOUT_MS, reply, err,
			sizeof(err));
	if (r < 0)
		return r;
	ctl_clean_reply(reply);
	if (reply->type == IPC_ERROR) {
		fprintf(stderr, "dbswapctl: the agent refused %s: %s: %s\n",
			ipc_type_name(type), reply->code, reply->message);
		exit(EXIT_REFUSED);
	}
	return 0;
}

/* Sends a request with a target (none when NULL) and returns the reply,
 * an error reply included; exits if the agent cannot be reached or does
 * not answer within timeout_ms. */
static void ctl_request(dbswap_client *c, enum ipc_type type,
			const char *target, bool force, int timeout_ms,
			struct ipc_msg *reply)
{
	uint64_t id = client_next_id(c);
	struct ipc_writer w;
	char err[512];

	ipc_writer_init(&w, type, 2 + (target != NULL) + force);
	ipc_pack_kv_u64(&w, "id", id);
	if (target)
		ipc_pack_kv_str(&w, "target", target);
	/* Sent only when asked for: an agent without it ignores the key. */
	if (force)
		ipc_pack_kv_bool(&w, "force", true);
	if (client_call(c, &w, id, timeout_ms, reply, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbswapctl: %s\n", err);
		exit(EXIT_UNREACHABLE);
	}
	ctl_clean_reply(reply);
}

void ctl_call(dbswap_client *c, enum ipc_type type, struct ipc_msg *reply)
{
	ctl_request(c, type, NULL, false, CTL_CALL_TIMEOUT_MS, reply);
	if (reply->type == IPC_ERROR) {
		fprintf(stderr, "dbswapctl: the agent refused %s: %s: %s\n",
			ipc_type_name(type), reply->code, reply->message);
		exit(EXIT_REFUSED);
	}
}

/* JSON */

/* A JSON string that is valid UTF-8 and safe on a terminal whatever the
 * agent sent (an older agent passed clients' text on as it came): a byte
 * that starts no valid character is U+FFFD, and every character that is
 * not printable (ipc_char_printable) is escaped. */
static void json_string(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t len = ipc_utf8_char(s + i, n - i, &cp);

		if (len == 0) {
			fputs("\\ufffd", stdout);
			i++;
			continue;
		}
		switch (cp) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		default:
			if (!ipc_char_printable(cp))
				printf("\\u%04x", (unsigned)cp);
			else
				fwrite(s + i, 1, len, stdout);
		}
		i += len;
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

/* The text is made printable (ipc_text_clean) before anyone prints it:
 * an older agent passed clients' names and nack messages on as they came,
 * escape sequences and all. */
const char *ctl_str(const msgpack_object *map, const char *key, char *buf,
		    size_t size)
{
	const msgpack_object *o = ipc_map_get(map, key);
	char *clean;

	if (!o || o->type != MSGPACK_OBJECT_STR || size == 0)
		return NULL;
	clean = ipc_text_clean(o->via.str.ptr, o->via.str.size, size - 1,
			       NULL);
	if (!clean)
		return NULL;
	snprintf(buf, size, "%s", clean);
	free(clean);
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

/* A set of numbers from the env files on one line, "label key=v, key=v"
 * (those the agent reports as set), then why the newest were refused, if
 * they were: a target's pool settings, the agent's failover settings. */
static void print_number_set(const msgpack_object *parent, const char *set_key,
			     const char *const *keys, size_t n_keys,
			     const char *label, const char *error_key,
			     const char *error_label)
{
	const msgpack_object *set = ipc_map_get(parent, set_key);
	char err[1024];
	bool any = false;

	for (size_t i = 0; i < n_keys; i++) {
		long long v = ctl_int(set, keys[i]);
		if (v < 0)
			continue;
		printf("%s%s=%lld", any ? ", " : label, keys[i], v);
		any = true;
	}
	if (any)
		putchar('\n');
	if (ctl_str(parent, error_key, err, sizeof(err)))
		printf("%s%s\n", error_label, err);
}

static void print_settings(const msgpack_object *t)
{
	static const char *const keys[] = { "pool_max", "pool_min",
					     "pool_timeout_ms",
					     "pool_idle_timeout_ms" };

	print_number_set(t, "settings", keys, ARRAY_SIZE(keys),
			 "  pool:        ", "settings_error",
			 "  settings:    refused, the last good ones stay: ");
}

/* An age at a glance: "45s", "3m25s", "2h03m", "4d02h". */
static const char *fmt_age(long long s, char *buf, size_t size)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, size, "%llds", s);
	else if (s < 3600)
		snprintf(buf, size, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, size, "%lldh%02lldm", s / 3600, s / 60 % 60);
	else
		snprintf(buf, size, "%lldd%02lldh", s / 86400, s / 3600 % 24);
	return buf;
}

/* Unix seconds as RFC 3339 in UTC, the form of last_failover. */
static const char *fmt_time(long long t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) ||
	    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "%lld", t);
	return buf;
}

/* The agent's failover settings in force (names as in status --json),
 * when a target has failover on, and why the newest ones were refused,
 * always: they apply to no target otherwise. */
static void print_failover_settings(const msgpack_object *agent,
				    const msgpack_object *targets)
{
	static const char *const keys[] = { "health_check_interval_ms",
					     "connection_timeout_ms",
					     "failure_threshold",
					     "primary_retry_interval_ms" };
	bool on = false;

	for (uint32_t i = 0; targets && i < targets->via.array.size; i++)
		on |= ctl_int(ipc_map_get(&targets->via.array.ptr[i],
					  "failover"), "enabled") == 1;
	print_number_set(agent, "failover_settings", keys,
			 on ? ARRAY_SIZE(keys) : 0, "failover settings: ",
			 "failover_settings_error",
			 "failover settings: refused, the last good ones "
			 "stay: ");
}

/* "pid 811 (billing-api)" for each of a target's subscribers the agent
 * listed, and how many it did not. */
static void print_subscribed(const msgpack_object *t, long long count)
{
	const msgpack_object *subs = ctl_array(t, "subscribed");
	char name[IPC_NAME_MAX + 1];
	uint32_t n = subs ? subs->via.array.size : 0;

	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *c = &subs->via.array.ptr[i];
		printf("%s pid %lld (%s)", i ? "," : ":", ctl_int(c, "pid"),
		       ctl_str(c, "name", name, sizeof(name)) ? name : "?");
	}
	if (subs && count > (long long)n)
		printf("%s %lld more", n ? ", and" : ":", count - (long long)n);
}

/* One line per server of a target: health, then its value, then what is
 * wrong with either. */
static void print_server(const msgpack_object *s)
{
	char role[32], health[32], var[IPC_NAME_MAX + 1], state[32];
	char a[64], b[1024];
	long long failures = ctl_int(s, "failures");
	long long since = ctl_int(s, "down_since");
	long long took = ctl_int(s, "check_us");
	long long recovery = ctl_int(s, "in_recovery");
	bool up;

	if (!ctl_str(s, "role", role, sizeof(role)))
		snprintf(role, sizeof(role), "?");
	if (!ctl_str(s, "health", health, sizeof(health)))
		snprintf(health, sizeof(health), "?");
	if (!ctl_str(s, "var", var, sizeof(var)))
		snprintf(var, sizeof(var), "%s", role);
	up = streq(health, "up") || streq(health, "suspect");

	printf("    %s:%*s%s", role, (int)(10 - MIN(strlen(role), 10)), "",
	       health);
	if (since >= 0)
		printf(" since %s", fmt_time(since, a, sizeof(a)));
	if (failures > 0)
		printf(", %lld failed check(s)", failures);
	if (!up && ctl_int(s, "hold_ms") > 0)
		printf(", held: went down %lld time(s) in a row soon after "
		       "coming back, must answer %lld s first",
		       ctl_int(s, "flaps"), ctl_int(s, "hold_ms") / 1000);
	/* what the last good check saw, stale once the server is down; an
	 * agent older than check_us calls it rtt_us */
	if (took < 0)
		took = ctl_int(s, "rtt_us");
	if (up && took >= 0)
		printf(", last check took %.1f ms", (double)took / 1000.0);
	if (up && recovery == 1)
		printf(", in recovery");
	else if (up && recovery == 0)
		printf(", read-write");
	printf(", %s", ctl_str(s, "conninfo", b, sizeof(b))
			       ? b
			       : "no validated value");
	if (!streq(health, "up") && ctl_str(s, "health_error", b, sizeof(b)))
		printf("; last check: %s", b);
	if (!ctl_str(s, "state", state, sizeof(state)) || streq(state, "ok")) {
		putchar('\n');
		return;
	}
	if (streq(state, "unset")) {
		printf("; %s is not defined\n", var);
		return;
	}
	if (streq(state, "validating")) {
		printf("; a new value of %s is being validated\n", var);
		return;
	}
	printf("; the new value of %s %s (%lld attempt(s)%s)", var, state,
	       ctl_int(s, "attempts"),
	       ctl_int(s, "gave_up") == 1 ? ", gave up" : "");
	if (ctl_str(s, "error", b, sizeof(b)))
		printf(": %s", b);
	putchar('\n');
}

/* Where the target's value comes from, whether it could switch, and the
 * health of its servers.  Nothing for an agent without failover. */
static void print_failover(const msgpack_object *t)
{
	const msgpack_object *fo = ipc_map_get(t, "failover");
	const msgpack_object *servers = ctl_array(t, "servers");
	char cur[32], a[64], b[1024];
	long long ago;
	bool none;

	if (!fo || fo->type != MSGPACK_OBJECT_MAP)
		return;
	if (ctl_int(fo, "enabled") != 1) {
		if (ctl_str(fo, "hint", b, sizeof(b)))
			printf("  failover:    disabled (%s)\n", b);
		else
			printf("  failover:    disabled\n");
		return;
	}
	if (!ctl_str(fo, "current", cur, sizeof(cur)))
		snprintf(cur, sizeof(cur), "none");
	none = !streq(cur, "primary") && !streq(cur, "secondary");
	if (none)
		printf("  failover:    %s",
		       ctl_int(t, "generation") > 0 ? "no server available"
						    : "nothing published yet");
	else
		printf("  failover:    on the %s%s", cur,
		       ctl_int(fo, "standby") == 1 ? " (standby: read-only)"
						   : "");
	if (ctl_int(fo, "held") == 1)
		printf(", held by a manual failover (no automatic failback)");
	if (!none)
		printf("; the %s %s",
		       streq(cur, "primary") ? "secondary" : "primary",
		       ctl_int(fo, "failover_available") == 1
			       ? "can take over"
			       : "cannot take over now");
	printf("\n               %lld failed check(s) of the %s, %lld "
	       "failover(s)",
	       ctl_int(fo, "failure_count"), none ? "primary" : cur,
	       ctl_int(fo, "failovers"));
	if (ctl_str(fo, "last_failover", a, sizeof(a))) {
		printf(", the last at %s", a);
		ago = ctl_int(fo, "seconds_since_failover");
		if (ago >= 0)
			printf(" (%s ago)", fmt_age(ago, a, sizeof(a)));
	}
	putchar('\n');
	if (ctl_str(fo, "last_error", b, sizeof(b)))
		printf("               last failure: %s\n", b);
	if (ctl_str(fo, "pair", a, sizeof(a)))
		printf("               servers: %s\n",
		       streq(a, "replicated")
			       ? "a replicated pair (one system identifier)"
		       : streq(a, "independent")
			       ? "independent databases"
		       : streq(a, "same")
			       ? "one server under two names"
			       : "not known to be replicated or independent");
	if (ctl_str(fo, "warning", b, sizeof(b)))
		printf("               warning: %s\n", b);
	for (uint32_t i = 0; servers && i < servers->via.array.size; i++)
		print_server(&servers->via.array.ptr[i]);
}

/* The generation in force and what became of the newest value, in
 * words that cannot contradict each other: "state" is the newest
 * value's, which may have failed while the generation before it stays
 * in force. */
static void print_generation(const msgpack_object *t)
{
	long long gen = ctl_int(t, "generation");
	long long changed = ctl_int(t, "changed");
	bool valid = ctl_int(t, "valid") == 1;
	char state[32], a[64], b[32];

	if (!valid)
		printf("  generation:  %lld, no value in force yet", gen);
	else
		printf("  generation:  %lld, in force", gen);
	if (valid && changed > 0)
		printf(" since %s (%s ago)", fmt_time(changed, a, sizeof(a)),
		       fmt_age((long long)time(NULL) - changed, b,
			       sizeof(b)));
	putchar('\n');
	if (!ctl_str(t, "state", state, sizeof(state)))
		snprintf(state, sizeof(state), "?");
	printf("  state:       %s", state);
	if (streq(state, "validating"))
		printf(" (a new value is being validated)");
	else if (streq(state, "unset"))
		printf(" (the variable is not defined)");
	else if (streq(state, "failed") && valid)
		printf(" (the newest value was refused; generation %lld stays "
		       "in force)", gen);
	else if (streq(state, "failed"))
		printf(" (the newest value was refused; nothing in force)");
	putchar('\n');
}

static void print_status(const msgpack_object *root)
{
	const msgpack_object *agent = ipc_map_get(root, "agent");
	const msgpack_object *targets = ctl_array(root, "targets");
	const msgpack_object *files = ctl_array(root, "files");
	char a[256], b[1024];
	long long up = ctl_int(agent, "uptime_ms") / 1000;

	/* The count includes this dbswapctl, which is no app. */
	printf("agent: dbswapd %s, pid %lld, up %lldh%02lldm%02llds, %lld "
	       "client(s) besides this one\n",
	       ctl_str(agent, "version", a, sizeof(a)) ? a : "?",
	       ctl_int(agent, "pid"), up / 3600, up / 60 % 60, up % 60,
	       MAX(ctl_int(agent, "clients") - 1, 0));
	/* An agent older than instances has none. */
	if (ctl_str(agent, "instance", a, sizeof(a)))
		printf("instance: %s (this run of the agent; generations are "
		       "its own)\n", a);
	print_failover_settings(agent, targets);
	if (ctl_str(agent, "state_error", b, sizeof(b)))
		printf("state: %s\n", b);
	for (uint32_t i = 0; targets && i < targets->via.array.size; i++) {
		const msgpack_object *t = &targets->via.array.ptr[i];
		const msgpack_object *lag = ctl_array(t, "lagging");

		printf("\n%s\n", ctl_str(t, "name", a, sizeof(a)) ? a : "?");
		print_generation(t);
		/* Only what the agent shows to anyone (PROTOCOL.md, "Access
		 * control"), or all a reply cut to fit the frame holds. */
		if (ctl_int(t, "redacted") == 1) {
			printf("  (more is shown only to those who may follow "
			       "this target)\n");
			continue;
		}
		if (!ipc_map_get(t, "subscribers"))
			continue;
		printf("  conninfo:    %s%s\n",
		       ctl_str(t, "conninfo", b, sizeof(b)) ? b : "(none)",
		       ctl_str(t, "source", a, sizeof(a)) && streq(a, "saved")
			       ? " (saved before the agent restarted; not "
				 "validated since)"
			       : "");
		printf("  subscribers: %lld", ctl_int(t, "subscribers"));
		if (ctl_int(t, "subscribers") > 0 &&
		    ctl_int(t, "generation") > 0)
			printf(", %lld acked generation %lld",
			       ctl_int(t, "acked"), ctl_int(t, "generation"));
		print_subscribed(t, ctl_int(t, "subscribers"));
		putchar('\n');
		if (ctl_int(t, "stale_acks") > 0)
			printf("  stale acks:  %lld, for an earlier run of the "
			       "agent (ignored)\n", ctl_int(t, "stale_acks"));
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
		print_failover(t);
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
		else if (ipc_map_get(f, "entries"))
			printf(" (%lld %s)", ctl_int(f, "entries"),
			       ctl_int(f, "entries") == 1 ? "entry"
							  : "entries");
		putchar('\n');
	}
	if (ctl_int(root, "truncated") == 1)
		printf("\n(the reply was cut to fit the protocol's frame "
		       "limit: texts shortened, lists perhaps incomplete)\n");
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

/* True if the agent has a target of that name; lists them otherwise, in
 * a message from "dbswapctl cmd". */
static bool has_target(dbswap_client *c, const char *cmd, const char *name)
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
		fprintf(stderr, "dbswapctl %s: the agent has no target %s; "
				"it has:", cmd, name);
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

/* How long failover and failback may take to answer: the agent first
 * validates the other server with a new connection, bounded by its
 * connection_timeout_ms (a few seconds); a minute is beyond any sane one. */
#define CTL_SWITCH_TIMEOUT_MS 60000

/* The arguments of failover, failback and reconnect. */
struct switch_args {
	const char *target;
	bool wait;
	int wait_s;
	bool force; /* failover, failback: even if it splits the brain */
};

static int parse_switch_args(const char *cmd, int argc, char **argv,
			     struct switch_args *a)
{
	int r;

	*a = (struct switch_args){ .wait_s = CTL_WAIT_DEFAULT_S };
	for (int i = 0; i < argc; i++) {
		if ((r = ctl_wait_arg(cmd, argv[i], &a->wait, &a->wait_s)) != 0) {
			if (r < 0)
				return r;
		} else if (streq(argv[i], "--force") &&
			   !streq(cmd, "reconnect")) {
			a->force = true;
		} else if (argv[i][0] != '-' && !a->target) {
			a->target = argv[i];
		} else {
			fprintf(stderr, "dbswapctl %s: unknown argument %s\n",
				cmd, argv[i]);
			return -EINVAL;
		}
	}
	/* The agent drops a peer that sends a longer name: say it here. */
	if (a->target && strlen(a->target) > IPC_NAME_MAX) {
		fprintf(stderr, "dbswapctl %s: a target name has at most %d "
				"bytes\n", cmd, IPC_NAME_MAX);
		return -EINVAL;
	}
	return 0;
}

/* Explains an error reply to a failover, failback or reconnect request
 * and returns the exit code. */
static int switch_error(dbswap_client *c, const char *cmd,
			const char *target, const struct ipc_msg *reply)
{
	if (streq(reply->code, IPC_ERR_REFUSED)) {
		fprintf(stderr, "dbswapctl %s: %s: %s\n", cmd,
			target ? target : "all targets", reply->message);
		return EXIT_REJECTED;
	}
	if (streq(reply->code, IPC_ERR_UNKNOWN_TARGET) && target) {
		/* lists the targets there are, unless one just appeared */
		if (has_target(c, cmd, target))
			fprintf(stderr, "dbswapctl %s: %s: %s\n", cmd, target,
				reply->message);
		return EXIT_REFUSED;
	}
	if (streq(reply->code, IPC_ERR_UNKNOWN_TYPE)) {
		fprintf(stderr, "dbswapctl %s: the agent does not know this "
				"request (a dbswapd older than dbswapctl %s?): "
				"%s\n",
			cmd, DBSWAP_VERSION, reply->message);
		return EXIT_REFUSED;
	}
	fprintf(stderr, "dbswapctl %s: the agent refused %s: %s: %s\n", cmd,
		cmd, reply->code, reply->message);
	return EXIT_REFUSED;
}

/* failover and failback: to switches to "secondary" or "primary". */
static int cmd_switch(const char *socket, enum ipc_type type, const char *to,
		      int argc, char **argv)
{
	const char *cmd = ipc_type_name(type);
	char name[64];
	struct switch_args a;
	struct ipc_msg reply;
	dbswap_client *c;
	int ret;

	if (parse_switch_args(cmd, argc, argv, &a) < 0)
		return EXIT_USAGE;
	if (!a.target) {
		fprintf(stderr, "dbswapctl %s: which TARGET?\n", cmd);
		return EXIT_USAGE;
	}
	snprintf(name, sizeof(name), "dbswapctl %s", cmd);
	c = ctl_connect(socket, name);
	ctl_request(c, type, a.target, a.force, CTL_SWITCH_TIMEOUT_MS, &reply);
	if (reply.type == IPC_ERROR) {
		ret = switch_error(c, cmd, a.target, &reply);
		goto out;
	}
	if (!reply.has_generation) {
		/* nothing published, so nothing for --wait to follow */
		printf("%s: already on the %s\n", a.target, to);
		ret = EXIT_SUCCESS;
		goto out;
	}
	printf("%s: switched to the %s, generation %" PRIu64 "\n", a.target,
	       to, reply.generation);
	fflush(stdout);
	ret = a.wait ? ctl_wait_acks(c, cmd, a.target,
				     (long long)reply.generation, a.wait_s)
		     : EXIT_SUCCESS;
out:
	ipc_msg_fini(&reply);
	dbswap_client_free(c);
	return ret;
}

static int cmd_reconnect(const char *socket, int argc, char **argv)
{
	struct switch_args a;
	struct ipc_msg reply;
	dbswap_client *c;
	int ret;

	if (parse_switch_args("reconnect", argc, argv, &a) < 0)
		return EXIT_USAGE;
	if (a.wait && !a.target) {
		/* each target publishes its own generation; the ok names
		 * none of them */
		fprintf(stderr, "dbswapctl reconnect: --wait needs a TARGET\n");
		return EXIT_USAGE;
	}
	c = ctl_connect(socket, "dbswapctl reconnect");
	ctl_request(c, IPC_RECONNECT, a.target, false, CTL_CALL_TIMEOUT_MS,
		    &reply);
	if (reply.type == IPC_ERROR) {
		ret = switch_error(c, "reconnect", a.target, &reply);
		goto out;
	}
	ret = EXIT_SUCCESS;
	if (!a.target) {
		printf("monitor connections re-opened; every target with a "
		       "server in use publishes its value again (reason "
		       "reconnect)\n");
		goto out;
	}
	if (!reply.has_generation) {
		printf("monitor connections re-opened; %s: no server in use, "
		       "nothing published\n",
		       a.target);
		goto out;
	}
	printf("monitor connections re-opened; %s: generation %" PRIu64
	       " published (reason reconnect)\n",
	       a.target, reply.generation);
	fflush(stdout);
	if (a.wait)
		ret = ctl_wait_acks(c, "reconnect", a.target,
				    (long long)reply.generation, a.wait_s);
out:
	ipc_msg_fini(&reply);
	dbswap_client_free(c);
	return ret;
}

struct watch {
	dbswap_client *client;
	bool show_secret;
	long count; /* updates left before exiting, -1 for no limit */
	int refused; /* the agent's refusal (client_refused_fn), 0 for none */
};

/* The agent refused the subscription: say why and stop, rather than
 * wait for a value that never comes. */
static void watch_refused(int err, const char *message, void *data)
{
	struct watch *w = data;
	char *clean;

	if (err == 0)
		return;
	clean = message ? ipc_text_clean(message, strlen(message), 1024, NULL)
			: NULL;
	fprintf(stderr, "dbswapctl watch: the agent refused (%s): %s\n",
		err == -EACCES	 ? "forbidden"
		: err == -ENXIO ? "unknown-target"
				: "refused",
		clean ? clean : strerror(-err));
	free(clean);
	w->refused = err;
}

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
	if (!has_target(w.client, "watch", target)) {
		dbswap_client_free(w.client);
		return EXIT_REFUSED;
	}
	/* With the refusal callback the pool code has: a plain
	 * subscription's refusal only goes to the log. */
	r = client_subscribe_pool(w.client, target, watch_update, NULL,
				  watch_refused, &w);
	if (r < 0) {
		fprintf(stderr, "dbswapctl watch: %s: %s\n", target,
			strerror(-r));
		dbswap_client_free(w.client);
		return EXIT_USAGE;
	}
	while (w.count != 0 && !w.refused) {
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

/* dbswapctl metrics: the agent's Prometheus text, as /metrics serves it
 * (agent/metrics.h), of the targets this user may follow. */
static int cmd_metrics(const char *socket, int argc, char **argv)
{
	const msgpack_object *text;
	struct ipc_msg reply;
	dbswap_client *c;

	if (argc > 0) {
		fprintf(stderr, "dbswapctl metrics: unknown argument %s\n",
			argv[0]);
		return EXIT_USAGE;
	}
	c = ctl_connect(socket, "dbswapctl metrics");
	ctl_call(c, IPC_METRICS, &reply);
	text = ipc_map_get(&reply.root.data, "text");
	if (!text || text->type != MSGPACK_OBJECT_STR) {
		fprintf(stderr, "dbswapctl metrics: the agent sent no text "
				"(an agent older than the metrics request?)\n");
		ipc_msg_fini(&reply);
		dbswap_client_free(c);
		return EXIT_REFUSED;
	}
	/* What reaches a terminal: lines of printable ASCII. */
	for (uint32_t i = 0; i < text->via.str.size; i++) {
		unsigned char ch = (unsigned char)text->via.str.ptr[i];
		putchar(ch == '\n' || (ch >= 0x20 && ch < 0x7f) ? ch : '?');
	}
	ipc_msg_fini(&reply);
	dbswap_client_free(c);
	return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_REFUSED;
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
	if (command_help_asked(cmd, n, args))
		return EXIT_SUCCESS;
	if (streq(cmd, "status"))
		return cmd_status(socket, n, args);
	if (streq(cmd, "watch"))
		return cmd_watch(socket, n, args);
	if (streq(cmd, "reload"))
		return cmd_reload(socket, n, args);
	if (streq(cmd, "metrics"))
		return cmd_metrics(socket, n, args);
	if (streq(cmd, "set"))
		return cmd_set(socket, n, args);
	if (streq(cmd, "rotate"))
		return cmd_rotate(socket, n, args);
	if (streq(cmd, "failover"))
		return cmd_switch(socket, IPC_FAILOVER, "secondary", n, args);
	if (streq(cmd, "failback"))
		return cmd_switch(socket, IPC_FAILBACK, "primary", n, args);
	if (streq(cmd, "reconnect"))
		return cmd_reconnect(socket, n, args);
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

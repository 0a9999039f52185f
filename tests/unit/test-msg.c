/*
 * Unit tests for message encoding and decoding: every message type written
 * with ipc_writer and read back with ipc_msg_decode(), then every kind of
 * violation the decoder must refuse with -EPROTO and a reason that never
 * repeats a secret.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "ipc/msg.h"
#include "ipc/protocol.h"
#include "tests/unit/check.h"

#ifdef __SANITIZE_ADDRESS__
/* Under ASan any allocation over 64 MiB aborts the test: a decoder that
 * trusted a container count would ask for gigabytes. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "max_allocation_size_mb=64:allocator_may_return_null=0";
}
#endif

#define SECRET "SECRETPW"
#define CONNINFO "host=db user=app password=" SECRET

static int decode(struct ipc_msg *m, const struct ipc_writer *w, char *err,
		  size_t errlen)
{
	CHECK(!w->failed);
	return ipc_msg_decode(m, (const uint8_t *)w->buf, w->len, err, errlen);
}

/* Decodes buf and expects a protocol violation with a reason that names no
 * secret. */
static void expect_proto_at(const char *file, int line, const void *buf,
			    size_t len)
{
	struct ipc_msg m;
	char err[256];
	int r;

	memset(err, 0, sizeof(err));
	r = ipc_msg_decode(&m, buf, len, err, sizeof(err));
	if (r != -EPROTO) {
		fprintf(stderr, "%s:%d: decode returned %d, want -EPROTO\n",
			file, line, r);
		check_failed++;
	} else if (!err[0]) {
		fprintf(stderr, "%s:%d: -EPROTO without a reason\n", file,
			line);
		check_failed++;
	} else if (strstr(err, SECRET) || strstr(err, "password")) {
		fprintf(stderr, "%s:%d: reason leaks the conninfo: %s\n", file,
			line, err);
		check_failed++;
	}
	ipc_msg_fini(&m);
}

#define EXPECT_PROTO(buf, len) expect_proto_at(__FILE__, __LINE__, buf, len)
#define EXPECT_PROTO_W(w)                                                  \
	do {                                                               \
		CHECK(!(w)->failed);                                       \
		EXPECT_PROTO((w)->buf, (w)->len);                          \
	} while (0)
#define EXPECT_PROTO_BYTES(...)                                            \
	do {                                                               \
		static const uint8_t bytes_[] = { __VA_ARGS__ };           \
		EXPECT_PROTO(bytes_, sizeof(bytes_));                      \
	} while (0)

static void pack_strn(struct ipc_writer *w, const char *s, size_t n)
{
	msgpack_pack_str(&w->pk, n);
	msgpack_pack_str_body(&w->pk, s, n);
}

/* A string of n copies of c (caller frees). */
static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		exit(2);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* Starts a body by hand: a map of n entries and, unless NULL, a "type"
 * entry with any string (ipc_writer_init only writes known names). */
static void writer_raw(struct ipc_writer *w, size_t n, const char *type)
{
	ipc_writer_init(w, IPC_OK, 0);
	w->len = 0;
	msgpack_pack_map(&w->pk, n);
	if (type)
		ipc_pack_kv_str(w, "type", type);
}

/* Appends bytes as they are (msgpack_pack_str_body adds no header). */
static void pack_raw(struct ipc_writer *w, const void *bytes, size_t n)
{
	msgpack_pack_str_body(&w->pk, bytes, n);
}

/* every message type, round trip */

static void test_hello(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	ipc_writer_init(&w, IPC_HELLO, 5);
	ipc_pack_kv_u64(&w, "version", IPC_PROTOCOL_VERSION);
	ipc_pack_kv_str(&w, "name", "myapp");
	ipc_pack_kv_i64(&w, "pid", 4242);
	ipc_pack_kv_u64(&w, "id", UINT64_MAX);
	CHECK(!w.failed);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_HELLO);
	CHECK_STR(m.type_name, "hello");
	CHECK(m.has_version && m.version == IPC_PROTOCOL_VERSION);
	CHECK_STR(m.name, "myapp");
	CHECK(m.has_pid && m.pid == 4242);
	CHECK(m.has_id && m.id == UINT64_MAX);
	CHECK(!m.has_generation && !m.has_valid);
	CHECK(!m.target && !m.conninfo && !m.targets && m.n_targets == 0);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* pid may be negative in i64 (not that a real one is). */
	ipc_writer_init(&w, IPC_HELLO, 4);
	ipc_pack_kv_u64(&w, "version", 2);
	ipc_pack_kv_str(&w, "name", "");
	ipc_pack_kv_i64(&w, "pid", INT64_MIN);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK(m.has_pid && m.pid == INT64_MIN);
	CHECK(m.version == 2);
	CHECK_STR(m.name, "");
	CHECK(!m.has_id);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
}

static void test_subscribe(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	ipc_writer_init(&w, IPC_SUBSCRIBE, 3);
	ipc_pack_kv_u64(&w, "id", 1);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 2);
	ipc_pack_str(&w, "DATABASE_URL");
	ipc_pack_str(&w, "REPLICA_URL");
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_SUBSCRIBE);
	CHECK_INT(m.n_targets, ==, 2);
	if (m.n_targets == 2) {
		CHECK_STR(m.targets[0], "DATABASE_URL");
		CHECK_STR(m.targets[1], "REPLICA_URL");
		CHECK(m.targets[2] == NULL);
	}
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* An empty list is well formed (what it means is up to the agent). */
	ipc_writer_init(&w, IPC_SUBSCRIBE, 2);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 0);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.n_targets, ==, 0);
	CHECK(m.targets && m.targets[0] == NULL);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
}

static void test_update(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	ipc_writer_init(&w, IPC_UPDATE, 8);
	ipc_pack_kv_str(&w, "target", "DATABASE_URL");
	ipc_pack_kv_u64(&w, "generation", 17);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_kv_str(&w, "reason", "failover");
	ipc_pack_kv_bool(&w, "valid", true);
	ipc_pack_kv_str(&w, "server", "secondary");
	ipc_pack_kv_bool(&w, "standby", true);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_UPDATE);
	CHECK_STR(m.target, "DATABASE_URL");
	CHECK(m.has_generation && m.generation == 17);
	CHECK_STR(m.conninfo, CONNINFO);
	CHECK_STR(m.reason, "failover");
	CHECK_STR(m.server, "secondary");
	CHECK(m.standby);
	CHECK(m.has_valid && m.valid);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* A nil optional string reads as absent. */
	ipc_writer_init(&w, IPC_UPDATE, 6);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 0);
	ipc_pack_kv_str(&w, "conninfo", "");
	ipc_pack_kv_str(&w, "reason", NULL);
	ipc_pack_kv_bool(&w, "valid", false);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_STR(m.conninfo, "");
	CHECK(m.reason == NULL);
	CHECK(m.server == NULL && !m.standby);
	CHECK(m.has_valid && !m.valid);
	CHECK(m.has_generation && m.generation == 0);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
}

static void test_ack_error_ok_reload(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	ipc_writer_init(&w, IPC_ACK, 4);
	ipc_pack_kv_str(&w, "target", "DATABASE_URL");
	ipc_pack_kv_u64(&w, "generation", UINT64_MAX);
	ipc_pack_kv_u64(&w, "id", 9);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_ACK);
	CHECK_STR(m.target, "DATABASE_URL");
	CHECK(m.generation == UINT64_MAX && m.id == 9);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_ERROR, 4);
	ipc_pack_kv_u64(&w, "id", 3);
	ipc_pack_kv_str(&w, "code", IPC_ERR_UNKNOWN_TARGET);
	ipc_pack_kv_str(&w, "message", "no target \"X\"");
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_ERROR);
	CHECK_STR(m.code, IPC_ERR_UNKNOWN_TARGET);
	CHECK_STR(m.message, "no target \"X\"");
	CHECK(m.has_id && m.id == 3);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_kv_u64(&w, "id", 0);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_OK);
	CHECK(m.has_id && m.id == 0);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_OK, 1);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_OK);
	CHECK(!m.has_id);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_RELOAD, 2);
	ipc_pack_kv_u64(&w, "id", 5);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_RELOAD);
	CHECK_STR(m.type_name, "reload");
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
}

static void test_nack(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256] = "";
	char *max = repeat('m', IPC_NACK_MESSAGE_MAX);
	char *over = repeat('m', IPC_NACK_MESSAGE_MAX + 1);

	ipc_writer_init(&w, IPC_NACK, 5);
	ipc_pack_kv_str(&w, "target", "DATABASE_URL");
	ipc_pack_kv_u64(&w, "generation", 7);
	ipc_pack_kv_str(&w, "message", "password authentication failed");
	ipc_pack_kv_u64(&w, "id", 4);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_NACK);
	CHECK_STR(m.type_name, "nack");
	CHECK_STR(m.target, "DATABASE_URL");
	CHECK(m.has_generation && m.generation == 7);
	CHECK_STR(m.message, "password authentication failed");
	CHECK(m.has_id && m.id == 4);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* The message: IPC_NACK_MESSAGE_MAX bytes accepted, one more
	 * refused, whatever they are. */
	ipc_writer_init(&w, IPC_NACK, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "message", max);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_STR(m.message, max);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_NACK, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "message", over);
	err[0] = '\0';
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, -EPROTO);
	CHECK(strstr(err, "message") != NULL);
	ipc_msg_fini(&m);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* The bound is the nack's: an error message may be longer. */
	ipc_writer_init(&w, IPC_ERROR, 3);
	ipc_pack_kv_str(&w, "code", "c");
	ipc_pack_kv_str(&w, "message", over);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* Empty is a message; a NUL in it is not. */
	ipc_writer_init(&w, IPC_NACK, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "message", "");
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_STR(m.message, "");
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_NACK, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_key(&w, "message");
	pack_strn(&w, "bad\0line", 8);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	free(max);
	free(over);
}

/* Writes a settings message for target T with the settings given (a
 * negative value leaves the field out). */
static void write_settings(struct ipc_writer *w, int64_t max, int64_t min,
			   int64_t timeout, int64_t idle)
{
	ipc_writer_init(w, IPC_SETTINGS, 2 + (max >= 0) + (min >= 0) +
						 (timeout >= 0) + (idle >= 0));
	ipc_pack_kv_str(w, "target", "T");
	if (max >= 0)
		ipc_pack_kv_u64(w, "pool_max", (uint64_t)max);
	if (min >= 0)
		ipc_pack_kv_u64(w, "pool_min", (uint64_t)min);
	if (timeout >= 0)
		ipc_pack_kv_u64(w, "pool_timeout_ms", (uint64_t)timeout);
	if (idle >= 0)
		ipc_pack_kv_u64(w, "pool_idle_timeout_ms", (uint64_t)idle);
}

static void test_settings(void)
{
	static const struct {
		int64_t max, min, timeout, idle;
		bool ok;
	} cases[] = {
		{ 1, 0, 0, 0, true },
		{ IPC_POOL_SIZE_MAX, IPC_POOL_SIZE_MAX, IPC_POOL_TIMEOUT_MAX_MS,
		  IPC_POOL_TIMEOUT_MAX_MS, true },
		{ 7, 7, -1, -1, true },		/* min == max */
		{ -1, IPC_POOL_SIZE_MAX, -1, -1, true }, /* min alone */
		{ 0, -1, -1, -1, false },	/* a pool of none */
		{ IPC_POOL_SIZE_MAX + 1, -1, -1, -1, false },
		{ -1, IPC_POOL_SIZE_MAX + 1, -1, -1, false },
		{ 7, 8, -1, -1, false },	/* min over max */
		{ -1, -1, IPC_POOL_TIMEOUT_MAX_MS + 1, -1, false },
		{ -1, -1, -1, IPC_POOL_TIMEOUT_MAX_MS + 1, false },
		{ -1, -1, -1, INT64_MAX, false },
	};
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256] = "";

	write_settings(&w, 7, 2, 5000, 60000);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_SETTINGS);
	CHECK_STR(m.type_name, "settings");
	CHECK_STR(m.target, "T");
	CHECK(m.has_pool_max && m.pool_max == 7);
	CHECK(m.has_pool_min && m.pool_min == 2);
	CHECK(m.has_pool_timeout_ms && m.pool_timeout_ms == 5000);
	CHECK(m.has_pool_idle_timeout_ms && m.pool_idle_timeout_ms == 60000);
	CHECK(!m.has_generation && !m.conninfo);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* None set: the agent's way to say "back to the app's own". */
	write_settings(&w, -1, -1, -1, -1);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_SETTINGS);
	CHECK(!m.has_pool_max && !m.has_pool_min && !m.has_pool_timeout_ms &&
	      !m.has_pool_idle_timeout_ms);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		write_settings(&w, cases[i].max, cases[i].min,
			       cases[i].timeout, cases[i].idle);
		if (cases[i].ok) {
			int r = decode(&m, &w, err, sizeof(err));
			if (r != 0)
				fprintf(stderr, "  settings case %zu: %s\n", i,
					err);
			CHECK_INT(r, ==, 0);
			ipc_msg_fini(&m);
		} else {
			EXPECT_PROTO_W(&w);
		}
		ipc_writer_fini(&w);
	}
}

/* A status reply as the agent writes it: nested maps and lists, read back
 * as a tree.  Its top-level "targets" is a list of maps, not of names. */
static void test_status(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	ipc_writer_init(&w, IPC_STATUS, 2);
	ipc_pack_kv_u64(&w, "id", 1);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_STATUS);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_STATUS, 4);
	ipc_pack_kv_u64(&w, "id", 1);
	ipc_pack_key(&w, "agent");
	msgpack_pack_map(&w.pk, 2);
	ipc_pack_kv_str(&w, "version", "0.1.0");
	ipc_pack_kv_i64(&w, "pid", 77);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 1);
	msgpack_pack_map(&w.pk, 4);
	ipc_pack_kv_str(&w, "name", "DATABASE_URL");
	ipc_pack_kv_u64(&w, "generation", 3);
	ipc_pack_kv_str(&w, "conninfo", "host=db password=****");
	ipc_pack_key(&w, "lagging");
	msgpack_pack_array(&w.pk, 1);
	msgpack_pack_map(&w.pk, 2);
	ipc_pack_kv_i64(&w, "pid", 99);
	ipc_pack_kv_u64(&w, "acked", 2);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_STATUS);
	CHECK(m.has_root);
	/* Nested fields do not leak into the top level. */
	CHECK(!m.has_version && !m.has_pid && !m.name && !m.conninfo);
	CHECK(m.n_targets == 0);

	const msgpack_object *agent = ipc_map_get(&m.root.data, "agent");
	const msgpack_object *targets = ipc_map_get(&m.root.data, "targets");
	CHECK(agent && agent->type == MSGPACK_OBJECT_MAP);
	const msgpack_object *pid = ipc_map_get(agent, "pid");
	CHECK(pid && pid->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
	      pid->via.u64 == 77);
	CHECK(targets && targets->type == MSGPACK_OBJECT_ARRAY &&
	      targets->via.array.size == 1);
	if (targets && targets->type == MSGPACK_OBJECT_ARRAY &&
	    targets->via.array.size == 1) {
		const msgpack_object *t = &targets->via.array.ptr[0];
		const msgpack_object *lag = ipc_map_get(t, "lagging");
		const msgpack_object *gen = ipc_map_get(t, "generation");
		CHECK(gen && gen->via.u64 == 3);
		CHECK(lag && lag->type == MSGPACK_OBJECT_ARRAY &&
		      lag->via.array.size == 1);
		CHECK(ipc_map_get(t, "nope") == NULL);
	}
	CHECK(ipc_map_get(targets, "name") == NULL); /* not a map */
	CHECK(ipc_map_get(NULL, "name") == NULL);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
}

static void test_type_names(void)
{
	for (int t = IPC_INVALID + 1; t < IPC_TYPE_COUNT; t++) {
		const char *name = ipc_type_name((enum ipc_type)t);
		CHECK(name && strcmp(name, "invalid") != 0);
		CHECK_INT(ipc_type_from_name(name), ==, t);
	}
	CHECK_STR(ipc_type_name(IPC_INVALID), "invalid");
	CHECK_STR(ipc_type_name(IPC_TYPE_COUNT), "invalid");
	CHECK_STR(ipc_type_name((enum ipc_type)-1), "invalid");
	CHECK_INT(ipc_type_from_name("invalid"), ==, IPC_INVALID);
	CHECK_INT(ipc_type_from_name(""), ==, IPC_INVALID);
	CHECK_INT(ipc_type_from_name("HELLO"), ==, IPC_INVALID);
}

/* unknown types and keys */

static void test_unknown(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	/* A type from a newer peer: decoded, left for the caller to answer;
	 * the fields it shares with known types are still checked. */
	writer_raw(&w, 3, "frobnicate");
	ipc_pack_kv_u64(&w, "x", 1);
	ipc_pack_kv_str(&w, "target", "T");
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_INVALID);
	CHECK_STR(m.type_name, "frobnicate");
	CHECK_STR(m.target, "T");
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* The longest type name is still a name; "invalid" is not a type. */
	char *longest = repeat('t', IPC_NAME_MAX);
	writer_raw(&w, 1, longest);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_INVALID);
	CHECK_STR(m.type_name, longest);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
	free(longest);

	ipc_writer_init(&w, IPC_INVALID, 1);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_INVALID);
	CHECK_STR(m.type_name, "invalid");
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	/* Unknown keys, of any shape, are ignored. */
	ipc_writer_init(&w, IPC_HELLO, 7);
	ipc_pack_kv_u64(&w, "version", 1);
	ipc_pack_kv_str(&w, "name", "n");
	ipc_pack_kv_i64(&w, "pid", 1);
	ipc_pack_key(&w, "features");
	msgpack_pack_map(&w.pk, 1);
	ipc_pack_key(&w, "x");
	msgpack_pack_array(&w.pk, 2);
	msgpack_pack_double(&w.pk, 1.5);
	msgpack_pack_nil(&w.pk);
	ipc_pack_kv_bool(&w, "zzz", true);
	ipc_pack_key(&w, "");
	msgpack_pack_bin(&w.pk, 3);
	msgpack_pack_bin_body(&w.pk, "a\0b", 3);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_HELLO);
	CHECK_STR(m.name, "n");
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
}

/* required fields */

enum fkind { K_U64, K_I64, K_STR, K_LIST };

static const struct field {
	const char *key;
	enum fkind kind;
} fields[] = {
	{ "version", K_U64 },  { "name", K_STR },
	{ "pid", K_I64 },      { "targets", K_LIST },
	{ "target", K_STR },   { "generation", K_U64 },
	{ "conninfo", K_STR }, { "code", K_STR },
	{ "message", K_STR },
};

/* Fields each type must carry, as indexes into fields[] (-1 ends). */
static const int required[IPC_TYPE_COUNT][4] = {
	[IPC_INVALID] = { -1 },
	[IPC_HELLO] = { 0, 1, 2, -1 },
	[IPC_SUBSCRIBE] = { 3, -1 },
	[IPC_UPDATE] = { 4, 5, 6, -1 },
	[IPC_ACK] = { 4, 5, -1 },
	[IPC_STATUS] = { -1 },
	[IPC_RELOAD] = { -1 },
	[IPC_ERROR] = { 7, 8, -1 },
	[IPC_OK] = { -1 },
	[IPC_NACK] = { 4, 5, 8, -1 },
	[IPC_SETTINGS] = { 4, -1 },
	[IPC_FAILOVER] = { 4, -1 },
	[IPC_FAILBACK] = { 4, -1 },
	[IPC_RECONNECT] = { -1 },
	[IPC_PING] = { -1 },
	[IPC_METRICS] = { -1 },
};

static void pack_field(struct ipc_writer *w, const struct field *f, bool nil)
{
	ipc_pack_key(w, f->key);
	if (nil) {
		msgpack_pack_nil(&w->pk);
		return;
	}
	switch (f->kind) {
	case K_U64:
		msgpack_pack_uint64(&w->pk, 5);
		break;
	case K_I64:
		msgpack_pack_int64(&w->pk, -5);
		break;
	case K_STR:
		ipc_pack_str(w, streq(f->key, "conninfo") ? CONNINFO : "x");
		break;
	case K_LIST:
		msgpack_pack_array(&w->pk, 1);
		ipc_pack_str(w, "x");
		break;
	}
}

/* Writes a message of type t with its required fields, except `omit`
 * (left out) and `nil` (sent as nil); -1 for neither. */
static void write_required(struct ipc_writer *w, enum ipc_type t, int omit,
			   int nil)
{
	size_t n = 1;

	for (const int *f = required[t]; *f >= 0; f++)
		if (*f != omit)
			n++;
	ipc_writer_init(w, t, n);
	for (const int *f = required[t]; *f >= 0; f++)
		if (*f != omit)
			pack_field(w, &fields[*f], *f == nil);
}

static void test_required(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256];

	for (int t = IPC_INVALID + 1; t < IPC_TYPE_COUNT; t++) {
		/* All present: fine. */
		write_required(&w, (enum ipc_type)t, -1, -1);
		CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
		CHECK_INT(m.type, ==, t);
		ipc_msg_fini(&m);
		ipc_writer_fini(&w);

		for (const int *f = required[t]; *f >= 0; f++) {
			/* Missing: refused, and the reason names the field
			 * (or what it stands for). */
			write_required(&w, (enum ipc_type)t, *f, -1);
			err[0] = '\0';
			CHECK_INT(decode(&m, &w, err, sizeof(err)), ==,
				  -EPROTO);
			if (!strstr(err, fields[*f].key)) {
				fprintf(stderr, "  %s without %s: \"%s\"\n",
					ipc_type_name((enum ipc_type)t),
					fields[*f].key, err);
				CHECK(!"reason names the missing field");
			}
			ipc_msg_fini(&m);
			EXPECT_PROTO_W(&w);
			ipc_writer_fini(&w);

			/* nil is not a value for a required field. */
			write_required(&w, (enum ipc_type)t, -1, *f);
			EXPECT_PROTO_W(&w);
			ipc_writer_fini(&w);
		}
	}
}

/* The agent instance (protocol version 2): hello, update, ack and nack
 * carry it; exactly IPC_INSTANCE_LEN lowercase hex digits, or nil for
 * none; anything else is a violation. */
static void test_instance(void)
{
	static const enum ipc_type types[] = { IPC_HELLO, IPC_UPDATE, IPC_ACK,
					       IPC_NACK };
	static const char *const bad[] = {
		"",                  /* empty */
		"0123456789abcde",   /* 15 digits */
		"0123456789abcdef0", /* 17 */
		"0123456789ABCDEF",  /* upper case */
		"0123456789abcdeg",  /* not hex */
		"0x23456789abcdef",
		" 123456789abcdef",
	};
	const char *good = "0123456789abcdef";
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256] = "";

	CHECK_INT(strlen(good), ==, IPC_INSTANCE_LEN);
	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		enum ipc_type t = types[i];

		write_required(&w, t, -1, -1);
		w.buf[0]++; /* one more field in the map (a fixmap) */
		ipc_pack_kv_str(&w, "instance", good);
		CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
		CHECK_STR(m.instance, good);
		ipc_msg_fini(&m);
		ipc_writer_fini(&w);

		/* Optional in the decoder (required in version-2 acks and
		 * nacks by the agent, which knows the session's version):
		 * absent or nil is none. */
		write_required(&w, t, -1, -1);
		CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
		CHECK(m.instance == NULL);
		ipc_msg_fini(&m);
		ipc_writer_fini(&w);
		write_required(&w, t, -1, -1);
		w.buf[0]++;
		ipc_pack_kv_str(&w, "instance", NULL);
		CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
		CHECK(m.instance == NULL);
		ipc_msg_fini(&m);
		ipc_writer_fini(&w);

		for (size_t j = 0; j < ARRAY_SIZE(bad); j++) {
			write_required(&w, t, -1, -1);
			w.buf[0]++;
			ipc_pack_kv_str(&w, "instance", bad[j]);
			EXPECT_PROTO_W(&w);
			ipc_writer_fini(&w);
		}
		/* An integer is not an instance (JavaScript loses 64-bit
		 * ones): a string or nothing. */
		write_required(&w, t, -1, -1);
		w.buf[0]++;
		ipc_pack_kv_u64(&w, "instance", 0x0123456789abcdefULL);
		EXPECT_PROTO_W(&w);
		ipc_writer_fini(&w);
	}
}

static void test_ping(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	ipc_writer_init(&w, IPC_PING, 2);
	ipc_pack_kv_u64(&w, "id", 77);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_PING);
	CHECK_STR(m.type_name, "ping");
	CHECK(m.has_id && m.id == 77);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
	/* The next stable number after reconnect; never reused. */
	CHECK_INT(IPC_PING, ==, 14);
	CHECK_INT(IPC_PROTOCOL_VERSION, ==, 2);
	CHECK_INT(IPC_PROTOCOL_VERSION_MIN, ==, 1);
}

/* malformed structure */

static void test_not_a_map(void)
{
	struct ipc_writer w;

	EXPECT_PROTO_BYTES(0x92, 0x01, 0x02);		/* [1, 2] */
	EXPECT_PROTO_BYTES(0xa2, 'o', 'k');		/* "ok" */
	EXPECT_PROTO_BYTES(0x05);			/* 5 */
	EXPECT_PROTO_BYTES(0xc0);			/* nil */
	EXPECT_PROTO_BYTES(0x91, 0x81, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o',
			   'k');			/* [{type: ok}] */
	EXPECT_PROTO(NULL, 0);				/* nothing */
	EXPECT_PROTO("", 0);

	/* Map with a non-string key, before or after "type". */
	EXPECT_PROTO_BYTES(0x82, 0x01, 0xa1, 'x', 0xa4, 't', 'y', 'p', 'e',
			   0xa2, 'o', 'k');
	EXPECT_PROTO_BYTES(0x82, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o', 'k',
			   0xc0, 0x01);
	EXPECT_PROTO_BYTES(0x82, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o', 'k',
			   0xc4, 0x01, 'x', 0x01); /* bin key */
	EXPECT_PROTO_BYTES(0x82, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o', 'k',
			   0x90, 0x01); /* array key */

	/* No type. */
	EXPECT_PROTO_BYTES(0x80);
	EXPECT_PROTO_BYTES(0x81, 0xa2, 'i', 'd', 0x01);
	EXPECT_PROTO_BYTES(0x81, 0xa4, 'T', 'y', 'p', 'e', 0xa2, 'o', 'k');

	/* Type not a string. */
	EXPECT_PROTO_BYTES(0x81, 0xa4, 't', 'y', 'p', 'e', 0x05);
	EXPECT_PROTO_BYTES(0x81, 0xa4, 't', 'y', 'p', 'e', 0xc0);
	EXPECT_PROTO_BYTES(0x81, 0xa4, 't', 'y', 'p', 'e', 0xc3);
	EXPECT_PROTO_BYTES(0x81, 0xa4, 't', 'y', 'p', 'e', 0xc4, 0x02, 'o',
			   'k');
	EXPECT_PROTO_BYTES(0x81, 0xa4, 't', 'y', 'p', 'e', 0x91, 0xa2, 'o',
			   'k');

	/* Type with a NUL, or longer than a name. */
	writer_raw(&w, 1, NULL);
	ipc_pack_key(&w, "type");
	pack_strn(&w, "ok\0", 3);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	char *toolong = repeat('t', IPC_NAME_MAX + 1);
	writer_raw(&w, 1, toolong);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);
	free(toolong);
}

/* A value of the wrong msgpack type for each known key. */
/* failback (and failover) may carry "force" (issue 16); absent is false. */
static void test_force(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[128] = "";

	ipc_writer_init(&w, IPC_FAILBACK, 4);
	ipc_pack_kv_u64(&w, "id", 4);
	ipc_pack_kv_str(&w, "target", "DATABASE_URL");
	ipc_pack_kv_bool(&w, "force", true);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.type, ==, IPC_FAILBACK);
	CHECK(m.force);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_FAILOVER, 3);
	ipc_pack_kv_str(&w, "target", "DATABASE_URL");
	ipc_pack_kv_bool(&w, "force", false);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK(!m.force);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_FAILBACK, 2);
	ipc_pack_kv_str(&w, "target", "DATABASE_URL");
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK(!m.force);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
}

static void test_wrong_types(void)
{
	static const struct {
		const char *key;
		uint8_t bytes[12];
		size_t len;
	} bad[] = {
		{ "id", { 0xa1, '1' }, 2 },
		{ "id", { 0xff }, 1 },			/* -1 */
		{ "id", { 0xc3 }, 1 },
		{ "id", { 0xc0 }, 1 },
		{ "id", { 0xca, 0x3f, 0x80, 0, 0 }, 5 }, /* 1.0f */
		{ "version", { 0xa1, '1' }, 2 },
		{ "version", { 0xd0, 0x80 }, 2 },	/* -128 */
		{ "version", { 0x90 }, 1 },
		{ "version", { 0xc0 }, 1 },
		{ "pid", { 0xa1, '1' }, 2 },
		{ "pid", { 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0 }, 9 }, /* 2^63 */
		{ "pid", { 0xcb, 0, 0, 0, 0, 0, 0, 0, 0 }, 9 }, /* 0.0 */
		{ "pid", { 0xc2 }, 1 },
		{ "generation", { 0xa1, '7' }, 2 },
		{ "generation", { 0xf9 }, 1 },		/* -7 */
		{ "generation", { 0xc0 }, 1 },
		{ "valid", { 0x01 }, 1 },
		{ "valid", { 0xa4, 't', 'r', 'u', 'e' }, 5 },
		{ "valid", { 0xc0 }, 1 },
		{ "name", { 0x05 }, 1 },
		{ "name", { 0xc3 }, 1 },
		{ "name", { 0xc4, 0x01, 'x' }, 3 },	/* bin */
		{ "name", { 0x91, 0xa1, 'x' }, 3 },
		{ "name", { 0x80 }, 1 },
		{ "name", { 0xd4, 0x01, 'x' }, 3 },	/* fixext 1 */
		{ "target", { 0x05 }, 1 },
		{ "target", { 0xc4, 0x01, 'x' }, 3 },
		{ "conninfo", { 0x05 }, 1 },
		{ "conninfo", { 0xc4, 0x01, 'x' }, 3 },
		{ "conninfo", { 0x91, 0xa1, 'x' }, 3 },
		{ "reason", { 0x05 }, 1 },
		{ "server", { 0xc3 }, 1 },
		{ "standby", { 0xa1, 't' }, 2 },
		{ "standby", { 0x01 }, 1 },
		{ "force", { 0xa1, 't' }, 2 },
		{ "force", { 0x01 }, 1 },
		{ "force", { 0xc0 }, 1 },
		{ "code", { 0xc2 }, 1 },
		{ "message", { 0x90 }, 1 },
		{ "pool_max", { 0xa1, '7' }, 2 },
		{ "pool_max", { 0xff }, 1 },		/* -1 */
		{ "pool_max", { 0xc0 }, 1 },
		{ "pool_min", { 0xc3 }, 1 },
		{ "pool_min", { 0xca, 0x3f, 0x80, 0, 0 }, 5 }, /* 1.0f */
		{ "pool_timeout_ms", { 0xa1, '1' }, 2 },
		{ "pool_timeout_ms", { 0xd0, 0x80 }, 2 }, /* -128 */
		{ "pool_idle_timeout_ms", { 0x90 }, 1 },
		{ "pool_idle_timeout_ms", { 0xc0 }, 1 },
	};
	static const struct {
		uint8_t bytes[12];
		size_t len;
	} bad_targets[] = {
		{ { 0xa1, 'x' }, 2 },			/* "x" */
		{ { 0xc0 }, 1 },			/* nil */
		{ { 0x81, 0xa1, 'x', 0x01 }, 4 },	/* {x: 1} */
		{ { 0x92, 0xa1, 'x', 0x05 }, 4 },	/* ["x", 5] */
		{ { 0x92, 0xa1, 'x', 0xc0 }, 4 },	/* ["x", nil] */
		{ { 0x91, 0x91, 0xa1, 'x' }, 4 },	/* [["x"]] */
		{ { 0x91, 0xc4, 0x01, 'x' }, 4 },	/* [bin] */
	};
	struct ipc_writer w;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		const char *key = bad[i].key;
		bool own = streq(key, "target") || streq(key, "generation") ||
			   streq(key, "conninfo");

		/* In a message that has no use for the field... */
		ipc_writer_init(&w, IPC_OK, 2);
		ipc_pack_key(&w, key);
		pack_raw(&w, bad[i].bytes, bad[i].len);
		EXPECT_PROTO_W(&w);
		ipc_writer_fini(&w);

		/* ...and in an update, otherwise complete. */
		ipc_writer_init(&w, IPC_UPDATE, own ? 4 : 5);
		if (!streq(key, "target"))
			ipc_pack_kv_str(&w, "target", "T");
		if (!streq(key, "generation"))
			ipc_pack_kv_u64(&w, "generation", 1);
		if (!streq(key, "conninfo"))
			ipc_pack_kv_str(&w, "conninfo", CONNINFO);
		ipc_pack_key(&w, key);
		pack_raw(&w, bad[i].bytes, bad[i].len);
		EXPECT_PROTO_W(&w);
		ipc_writer_fini(&w);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad_targets); i++) {
		ipc_writer_init(&w, IPC_SUBSCRIBE, 2);
		ipc_pack_key(&w, "targets");
		pack_raw(&w, bad_targets[i].bytes, bad_targets[i].len);
		EXPECT_PROTO_W(&w);
		ipc_writer_fini(&w);
	}
}

static void test_duplicates(void)
{
	struct ipc_writer w;

	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_kv_str(&w, "type", "ok");
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* Even when the two disagree. */
	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_kv_str(&w, "type", "hello");
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_HELLO, 5);
	ipc_pack_kv_u64(&w, "version", 1);
	ipc_pack_kv_str(&w, "name", "a");
	ipc_pack_kv_i64(&w, "pid", 1);
	ipc_pack_kv_str(&w, "name", "b");
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_OK, 3);
	ipc_pack_kv_u64(&w, "id", 1);
	ipc_pack_kv_u64(&w, "id", 1);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* A duplicate nil counts as a duplicate too. */
	ipc_writer_init(&w, IPC_UPDATE, 6);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "reason", NULL);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_kv_str(&w, "reason", "r");
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_SUBSCRIBE, 3);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 1);
	ipc_pack_str(&w, "A");
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 1);
	ipc_pack_str(&w, "B");
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);
}

/* PROTOCOL.md: "A key appearing twice in one map is a violation", and map
 * keys are strings, in nested maps and unknown fields as well. */
static void test_duplicates_anywhere(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256], key[16];

	/* An unknown key twice. */
	ipc_writer_init(&w, IPC_OK, 3);
	ipc_pack_kv_bool(&w, "zzz", true);
	ipc_pack_kv_bool(&w, "zzz", false);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* The empty key twice. */
	ipc_writer_init(&w, IPC_OK, 3);
	ipc_pack_kv_bool(&w, "", true);
	ipc_pack_kv_bool(&w, "", true);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* "targets" twice in a status reply, where it is not a name list. */
	ipc_writer_init(&w, IPC_STATUS, 3);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 0);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 0);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* In a nested map. */
	ipc_writer_init(&w, IPC_STATUS, 2);
	ipc_pack_key(&w, "agent");
	msgpack_pack_map(&w.pk, 2);
	ipc_pack_kv_i64(&w, "pid", 1);
	ipc_pack_kv_i64(&w, "pid", 2);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* A nested map with a key that is not a string. */
	ipc_writer_init(&w, IPC_STATUS, 2);
	ipc_pack_key(&w, "agent");
	msgpack_pack_map(&w.pk, 1);
	msgpack_pack_int(&w.pk, 1);
	msgpack_pack_int(&w.pk, 2);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* A NUL in a string of an unknown field, and deeper. */
	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_key(&w, "note");
	pack_strn(&w, "a\0", 2);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_key(&w, "x");
	msgpack_pack_array(&w.pk, 1);
	msgpack_pack_map(&w.pk, 1);
	pack_strn(&w, "k\0", 2);
	ipc_pack_str(&w, "v");
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* A map of many keys (sorted, not compared pairwise): distinct is
	 * fine, one repeat is not. */
	for (int dup = 0; dup < 2; dup++) {
		ipc_writer_init(&w, IPC_OK, 1 + 1000);
		for (int i = 0; i < 1000; i++) {
			snprintf(key, sizeof(key), "k%d",
				 dup && i == 999 ? 500 : i);
			ipc_pack_kv_u64(&w, key, (uint64_t)i);
		}
		if (dup) {
			EXPECT_PROTO_W(&w);
		} else {
			CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
			ipc_msg_fini(&m);
		}
		ipc_writer_fini(&w);
	}
	/* The same in a nested map. */
	for (int dup = 0; dup < 2; dup++) {
		ipc_writer_init(&w, IPC_OK, 2);
		ipc_pack_key(&w, "x");
		msgpack_pack_map(&w.pk, 100);
		for (int i = 0; i < 100; i++) {
			snprintf(key, sizeof(key), "k%d",
				 dup && i == 0 ? 99 : i);
			ipc_pack_kv_u64(&w, key, (uint64_t)i);
		}
		if (dup) {
			EXPECT_PROTO_W(&w);
		} else {
			CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
			ipc_msg_fini(&m);
		}
		ipc_writer_fini(&w);
	}
}

/* The biggest map a frame can hold, all keys distinct or all the same:
 * refused or accepted quickly, not in quadratic time. */
static void test_hostile_map(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256], key[8];
	int n = 10000;
	int64_t t0 = now_ms();

	for (int same = 0; same < 2; same++) {
		ipc_writer_init(&w, IPC_OK, 1 + (size_t)n);
		for (int i = 0; i < n; i++) {
			snprintf(key, sizeof(key), "%04x", same ? 0 : i);
			ipc_pack_kv_bool(&w, key, true);
		}
		CHECK_INT(w.len, <=, IPC_FRAME_MAX);
		if (same) {
			EXPECT_PROTO_W(&w);
		} else {
			CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
			ipc_msg_fini(&m);
		}
		ipc_writer_fini(&w);
	}
	CHECK_INT(now_ms() - t0, <, 5000);
}

static void test_strings(void)
{
	static const char *const keys[] = { "name", "target", "reason",
					    "code" };
	char *max = repeat('n', IPC_NAME_MAX);
	char *over = repeat('n', IPC_NAME_MAX + 1);
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256];

	/* Names: IPC_NAME_MAX bytes accepted, one more refused. */
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		ipc_writer_init(&w, IPC_OK, 2);
		ipc_pack_kv_str(&w, keys[i], max);
		CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
		const char *got = streq(keys[i], "name")     ? m.name :
				  streq(keys[i], "target")   ? m.target :
				  streq(keys[i], "reason")   ? m.reason :
							       m.code;
		CHECK_STR(got, max);
		ipc_msg_fini(&m);
		ipc_writer_fini(&w);

		ipc_writer_init(&w, IPC_OK, 2);
		ipc_pack_kv_str(&w, keys[i], over);
		EXPECT_PROTO_W(&w);
		ipc_writer_fini(&w);

		/* Embedded NUL. */
		ipc_writer_init(&w, IPC_OK, 2);
		ipc_pack_key(&w, keys[i]);
		pack_strn(&w, "ab\0cd", 5);
		EXPECT_PROTO_W(&w);
		ipc_writer_fini(&w);
	}

	/* Subscribe targets obey the same limit. */
	ipc_writer_init(&w, IPC_SUBSCRIBE, 2);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 2);
	ipc_pack_str(&w, "A");
	ipc_pack_str(&w, max);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_INT(m.n_targets, ==, 2);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_SUBSCRIBE, 2);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 2);
	ipc_pack_str(&w, "A");
	ipc_pack_str(&w, over);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_SUBSCRIBE, 2);
	ipc_pack_key(&w, "targets");
	msgpack_pack_array(&w.pk, 2);
	ipc_pack_str(&w, "A");
	pack_strn(&w, "B\0", 2);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* conninfo and message may be long, up to a frame. */
	char *big = repeat('c', 60000);
	ipc_writer_init(&w, IPC_ERROR, 3);
	ipc_pack_kv_str(&w, "code", "c");
	ipc_pack_kv_str(&w, "message", big);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	CHECK_STR(m.message, big);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);
	free(big);

	/* A conninfo with a NUL would be cut short by libpq. */
	ipc_writer_init(&w, IPC_UPDATE, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_key(&w, "conninfo");
	pack_strn(&w, "host=db\0password=" SECRET,
		  sizeof("host=db\0password=" SECRET) - 1);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	free(max);
	free(over);
}

static void test_subscribe_limit(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256], name[16];

	for (int n = IPC_SUBSCRIBE_MAX; n <= IPC_SUBSCRIBE_MAX + 1; n++) {
		ipc_writer_init(&w, IPC_SUBSCRIBE, 2);
		ipc_pack_key(&w, "targets");
		msgpack_pack_array(&w.pk, (size_t)n);
		for (int i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "T%d", i);
			ipc_pack_str(&w, name);
		}
		if (n == IPC_SUBSCRIBE_MAX) {
			CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
			CHECK_INT(m.n_targets, ==, IPC_SUBSCRIBE_MAX);
			if (m.n_targets == IPC_SUBSCRIBE_MAX) {
				CHECK_STR(m.targets[0], "T0");
				snprintf(name, sizeof(name), "T%d",
					 IPC_SUBSCRIBE_MAX - 1);
				CHECK_STR(m.targets[IPC_SUBSCRIBE_MAX - 1],
					  name);
				CHECK(m.targets[IPC_SUBSCRIBE_MAX] == NULL);
			}
			ipc_msg_fini(&m);
		} else {
			EXPECT_PROTO_W(&w);
		}
		ipc_writer_fini(&w);
	}
}

/* Appends depth nested one-element arrays around an empty one: depth + 1
 * containers in all. */
static void pack_nested(struct ipc_writer *w, int depth)
{
	for (int i = 0; i < depth; i++)
		msgpack_pack_array(&w->pk, 1);
	msgpack_pack_array(&w->pk, 0);
}

static void test_depth(void)
{
	struct ipc_writer w;
	struct ipc_msg m;
	char err[256];

	/* The root map is one level: IPC_DEPTH_MAX levels in all pass. */
	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_key(&w, "x");
	pack_nested(&w, IPC_DEPTH_MAX - 2);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_key(&w, "x");
	pack_nested(&w, IPC_DEPTH_MAX - 1);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* Maps count like arrays. */
	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_key(&w, "x");
	for (int i = 0; i < IPC_DEPTH_MAX - 1; i++) {
		msgpack_pack_map(&w.pk, 1);
		ipc_pack_key(&w, "y");
	}
	msgpack_pack_nil(&w.pk);
	CHECK_INT(decode(&m, &w, err, sizeof(err)), ==, 0);
	ipc_msg_fini(&m);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_key(&w, "x");
	for (int i = 0; i < IPC_DEPTH_MAX; i++) {
		msgpack_pack_map(&w.pk, 1);
		ipc_pack_key(&w, "y");
	}
	msgpack_pack_nil(&w.pk);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* ipc_msgpack_check on bare nesting: IPC_DEPTH_MAX arrays pass. */
	uint8_t deep[100000];
	memset(deep, 0x91, sizeof(deep));
	deep[IPC_DEPTH_MAX - 1] = 0x90;
	CHECK_INT(ipc_msgpack_check(deep, IPC_DEPTH_MAX), ==, 0);
	deep[IPC_DEPTH_MAX - 1] = 0x91;
	deep[IPC_DEPTH_MAX] = 0x90;
	CHECK_INT(ipc_msgpack_check(deep, IPC_DEPTH_MAX + 1), ==, -EPROTO);
	/* Far deeper: refused at the limit, no deep recursion. */
	deep[IPC_DEPTH_MAX] = 0x91;
	deep[sizeof(deep) - 1] = 0x90;
	CHECK_INT(ipc_msgpack_check(deep, sizeof(deep)), ==, -EPROTO);
	EXPECT_PROTO(deep, IPC_FRAME_MAX);
}

static void test_truncated_and_trailing(void)
{
	struct ipc_writer w;
	uint8_t buf[512];

	ipc_writer_init(&w, IPC_UPDATE, 6);
	ipc_pack_kv_str(&w, "target", "DATABASE_URL");
	ipc_pack_kv_u64(&w, "generation", 0x123456789ull);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_kv_str(&w, "reason", "a reason longer than thirty-one bytes");
	ipc_pack_kv_i64(&w, "pid", -70000);
	CHECK(!w.failed && w.len < sizeof(buf) - 8);
	CHECK_INT(ipc_msgpack_check((const uint8_t *)w.buf, w.len), ==, 0);

	/* Every prefix is refused, by the check and by the decoder. */
	for (size_t n = 0; n < w.len; n++) {
		CHECK_INT(ipc_msgpack_check((const uint8_t *)w.buf, n), ==,
			  -EPROTO);
		EXPECT_PROTO(w.buf, n);
	}

	/* Anything after the object is refused. */
	memcpy(buf, w.buf, w.len);
	buf[w.len] = 0xc0;
	CHECK_INT(ipc_msgpack_check(buf, w.len + 1), ==, -EPROTO);
	EXPECT_PROTO(buf, w.len + 1);
	buf[w.len] = 0x00;
	EXPECT_PROTO(buf, w.len + 1);
	/* Two whole messages in one body. */
	memcpy(buf + w.len, w.buf, w.len);
	EXPECT_PROTO(buf, 2 * w.len);
	ipc_writer_fini(&w);

	/* Over the frame limit, however well formed. */
	uint8_t *big = malloc(IPC_FRAME_MAX + 1);
	if (big) {
		memset(big, 0xc0, IPC_FRAME_MAX + 1);
		EXPECT_PROTO(big, IPC_FRAME_MAX + 1);
		free(big);
	}
}

static void test_huge_counts(void)
{
	/* Containers and strings claiming far more than the buffer holds. */
	static const uint8_t cases[][8] = {
		{ 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0 }, /* array32 */
		{ 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0 }, /* map32 */
		{ 0xdc, 0xff, 0xff, 0xc0, 0xc0, 0xc0, 0xc0 }, /* array16 */
		{ 0xde, 0x80, 0x00, 0xc0, 0xc0, 0xc0, 0xc0 }, /* map16 */
		{ 0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b' },   /* str32 */
		{ 0xda, 0x01, 0x00, 'a', 'b', 'c', 'd' },     /* str16 */
		{ 0xc6, 0xff, 0xff, 0xff, 0xff, 'a', 'b' },   /* bin32 */
		{ 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 'a' },  /* ext32 */
		{ 0x9f, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0 }, /* fixarray 15 */
		{ 0x88, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0 }, /* fixmap 8 */
	};
	uint8_t buf[32];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		CHECK_INT(ipc_msgpack_check(cases[i], sizeof(cases[i])), ==,
			  -EPROTO);
		EXPECT_PROTO(cases[i], sizeof(cases[i]));
		/* And as a value inside a valid-looking message. */
		static const uint8_t head[] = { 0x82, 0xa4, 't', 'y', 'p', 'e',
						0xa2, 'o',  'k', 0xa1, 'x' };
		memcpy(buf, head, sizeof(head));
		memcpy(buf + sizeof(head), cases[i], sizeof(cases[i]));
		CHECK_INT(ipc_msgpack_check(buf, sizeof(head) + 8), ==,
			  -EPROTO);
		EXPECT_PROTO(buf, sizeof(head) + 8);
	}

	/* A count that exactly fits what is left is fine. */
	static const uint8_t fits[] = { 0xdc, 0x00, 0x03, 0xc0, 0xc0, 0xc0 };
	CHECK_INT(ipc_msgpack_check(fits, sizeof(fits)), ==, 0);
	static const uint8_t str_fits[] = { 0xd9, 0x02, 'a', 'b' };
	CHECK_INT(ipc_msgpack_check(str_fits, sizeof(str_fits)), ==, 0);
	static const uint8_t ext_fits[] = { 0xc7, 0x01, 0x05, 'a' };
	CHECK_INT(ipc_msgpack_check(ext_fits, sizeof(ext_fits)), ==, 0);
	static const uint8_t fixext16[18] = { 0xd8, 0x01 };
	CHECK_INT(ipc_msgpack_check(fixext16, sizeof(fixext16)), ==, 0);
	CHECK_INT(ipc_msgpack_check(fixext16, sizeof(fixext16) - 1), ==,
		  -EPROTO);
}

/* One well-formed object of every msgpack format: each passes the check
 * whole, and no prefix of it does. */
static void test_every_format(void)
{
	static const struct {
		uint8_t b[20];
		size_t len;
	} objs[] = {
		{ { 0x00 }, 1 },			/* positive fixint */
		{ { 0x7f }, 1 },
		{ { 0xe0 }, 1 },			/* negative fixint */
		{ { 0xff }, 1 },
		{ { 0xc0 }, 1 },			/* nil */
		{ { 0xc2 }, 1 },			/* false */
		{ { 0xc3 }, 1 },			/* true */
		{ { 0x81, 0xa1, 'k', 0x01 }, 4 },	/* fixmap */
		{ { 0x92, 0x01, 0x02 }, 3 },		/* fixarray */
		{ { 0xa3, 'a', 'b', 'c' }, 4 },		/* fixstr */
		{ { 0xc4, 0x02, 1, 2 }, 4 },		/* bin 8 */
		{ { 0xc5, 0x00, 0x02, 1, 2 }, 5 },	/* bin 16 */
		{ { 0xc6, 0, 0, 0, 0x02, 1, 2 }, 7 },	/* bin 32 */
		{ { 0xc7, 0x02, 0x01, 1, 2 }, 5 },	/* ext 8 */
		{ { 0xc8, 0x00, 0x02, 0x01, 1, 2 }, 6 }, /* ext 16 */
		{ { 0xc9, 0, 0, 0, 0x02, 0x01, 1, 2 }, 8 }, /* ext 32 */
		{ { 0xca, 0x3f, 0x80, 0, 0 }, 5 },	/* float 32 */
		{ { 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0 }, 9 }, /* float 64 */
		{ { 0xcc, 0xff }, 2 },			/* uint 8 */
		{ { 0xcd, 0xff, 0xff }, 3 },		/* uint 16 */
		{ { 0xce, 0xff, 0xff, 0xff, 0xff }, 5 }, /* uint 32 */
		{ { 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, 9 },
		{ { 0xd0, 0x80 }, 2 },			/* int 8 */
		{ { 0xd1, 0x80, 0x00 }, 3 },		/* int 16 */
		{ { 0xd2, 0x80, 0, 0, 0 }, 5 },		/* int 32 */
		{ { 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0 }, 9 }, /* int 64 */
		{ { 0xd4, 0x01, 1 }, 3 },		/* fixext 1 */
		{ { 0xd5, 0x01, 1, 2 }, 4 },		/* fixext 2 */
		{ { 0xd6, 0x01, 1, 2, 3, 4 }, 6 },	/* fixext 4 */
		{ { 0xd7, 0x01, 1, 2, 3, 4, 5, 6, 7, 8 }, 10 }, /* fixext 8 */
		{ { 0xd8, 0x01 }, 18 },			/* fixext 16 */
		{ { 0xd9, 0x02, 'a', 'b' }, 4 },	/* str 8 */
		{ { 0xda, 0x00, 0x02, 'a', 'b' }, 5 },	/* str 16 */
		{ { 0xdb, 0, 0, 0, 0x02, 'a', 'b' }, 7 }, /* str 32 */
		{ { 0xdc, 0x00, 0x02, 0x01, 0x02 }, 5 }, /* array 16 */
		{ { 0xdd, 0, 0, 0, 0x02, 0x01, 0x02 }, 7 }, /* array 32 */
		{ { 0xde, 0x00, 0x01, 0xa1, 'k', 0x01 }, 6 }, /* map 16 */
		{ { 0xdf, 0, 0, 0, 0x01, 0xa1, 'k', 0x01 }, 8 }, /* map 32 */
	};
	uint8_t buf[64];
	static const uint8_t head[] = { 0x82, 0xa4, 't', 'y', 'p', 'e', 0xa2,
					'o',  'k',  0xa1, 'x' };
	struct ipc_msg m;
	char err[256];

	for (size_t i = 0; i < ARRAY_SIZE(objs); i++) {
		CHECK_INT(ipc_msgpack_check(objs[i].b, objs[i].len), ==, 0);
		for (size_t n = 0; n < objs[i].len; n++)
			CHECK_INT(ipc_msgpack_check(objs[i].b, n), ==, -EPROTO);
		/* As the value of an unknown key, the decoder agrees. */
		memcpy(buf, head, sizeof(head));
		memcpy(buf + sizeof(head), objs[i].b, objs[i].len);
		CHECK_INT(ipc_msg_decode(&m, buf, sizeof(head) + objs[i].len,
					 err, sizeof(err)),
			  ==, 0);
		ipc_msg_fini(&m);
	}
}

static void test_c1(void)
{
	static const uint8_t c1[] = { 0xc1 };

	CHECK_INT(ipc_msgpack_check(c1, 1), ==, -EPROTO);
	EXPECT_PROTO_BYTES(0xc1);
	EXPECT_PROTO_BYTES(0x81, 0xa4, 't', 'y', 'p', 'e', 0xc1);
	EXPECT_PROTO_BYTES(0x82, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o', 'k',
			   0xa1, 'x', 0xc1);
	EXPECT_PROTO_BYTES(0x82, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o', 'k',
			   0xc1, 0xc0);
	EXPECT_PROTO_BYTES(0x82, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o', 'k',
			   0xa1, 'x', 0x91, 0xc1);
}

/* No reason text may carry the conninfo, whatever is wrong around it. */
static void test_no_secret_in_errors(void)
{
	struct ipc_writer w;

	/* Missing target. */
	ipc_writer_init(&w, IPC_UPDATE, 3);
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* Generation of the wrong type, after the conninfo. */
	ipc_writer_init(&w, IPC_UPDATE, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_kv_str(&w, "generation", SECRET);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* conninfo twice. */
	ipc_writer_init(&w, IPC_UPDATE, 5);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_kv_str(&w, "conninfo", SECRET);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* conninfo as bin, and as a list. */
	ipc_writer_init(&w, IPC_UPDATE, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_key(&w, "conninfo");
	msgpack_pack_bin(&w.pk, strlen(CONNINFO));
	msgpack_pack_bin_body(&w.pk, CONNINFO, strlen(CONNINFO));
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_UPDATE, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_key(&w, "conninfo");
	msgpack_pack_array(&w.pk, 1);
	ipc_pack_str(&w, CONNINFO);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* A NUL after the secret. */
	ipc_writer_init(&w, IPC_UPDATE, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_key(&w, "conninfo");
	pack_strn(&w, CONNINFO "\0", sizeof(CONNINFO));
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* The secret in the type, in a target, in a key. */
	writer_raw(&w, 2, "update");
	ipc_pack_kv_str(&w, "type", CONNINFO);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	char *long_target = repeat('S', IPC_NAME_MAX + 1);
	memcpy(long_target, SECRET, strlen(SECRET));
	ipc_writer_init(&w, IPC_UPDATE, 4);
	ipc_pack_kv_str(&w, "target", long_target);
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);
	free(long_target);

	ipc_writer_init(&w, IPC_UPDATE, 3);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_kv_u64(&w, SECRET, 1);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* Too deep, truncated, trailing bytes, 0xc1: all with the secret
	 * already read. */
	ipc_writer_init(&w, IPC_UPDATE, 5);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_key(&w, "x");
	pack_nested(&w, IPC_DEPTH_MAX);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	ipc_writer_init(&w, IPC_UPDATE, 4);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	CHECK(!w.failed);
	EXPECT_PROTO(w.buf, w.len - 1);
	msgpack_pack_nil(&w.pk);
	EXPECT_PROTO_W(&w);
	w.buf[w.len - 1] = (char)0xc1;
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* A non-string key after the conninfo. */
	ipc_writer_init(&w, IPC_UPDATE, 5);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	msgpack_pack_int(&w.pk, 1);
	ipc_pack_str(&w, SECRET);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);

	/* A reason that is too long, next to a valid conninfo. */
	char *long_reason = repeat('r', IPC_NAME_MAX + 1);
	ipc_writer_init(&w, IPC_UPDATE, 5);
	ipc_pack_kv_str(&w, "target", "T");
	ipc_pack_kv_u64(&w, "generation", 1);
	ipc_pack_kv_str(&w, "conninfo", CONNINFO);
	ipc_pack_kv_str(&w, "reason", long_reason);
	EXPECT_PROTO_W(&w);
	ipc_writer_fini(&w);
	free(long_reason);
}

/* A short err buffer truncates the reason but stays a C string. */
static void test_short_err(void)
{
	static const uint8_t bytes[] = { 0x80 };
	struct ipc_msg m;
	char err[8];

	memset(err, 'X', sizeof(err));
	CHECK_INT(ipc_msg_decode(&m, bytes, sizeof(bytes), err, sizeof(err)),
		  ==, -EPROTO);
	CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	ipc_msg_fini(&m);
}

/* ipc_text_clean: printable UTF-8, cut on a character boundary. */
static void test_text_clean(void)
{
	static const struct {
		const char *in;
		size_t max;
		const char *out;
		bool cut;
	} cases[] = {
		{ "billing-api", 255, "billing-api", false },
		{ "a\nb\rc\td\x1b[2J", 255, "a?b?c?d?[2J", false },
		{ "del\x7f c1\xc2\x9b", 255, "del? c1?", false },
		{ "bad\xff\xfe", 255, "bad\xef\xbf\xbd\xef\xbf\xbd", false },
		{ "overlong\xc0\xaf", 255, "overlong\xef\xbf\xbd\xef\xbf\xbd",
		  false },
		{ "surrogate\xed\xa0\x80", 255,
		  "surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", false },
		{ "bidi\xe2\x80\xae" "evil\xe2\x81\xa6", 255, "bidi?evil?",
		  false },
		{ "ls\xe2\x80\xa8ps", 255, "ls?ps", false },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 255,
		  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", false },
		{ "truncated\xe2\x82", 255,
		  "truncated\xef\xbf\xbd\xef\xbf\xbd", false },
		/* Cut on a boundary: the euro sign does not fit whole. */
		{ "ab\xe2\x82\xac", 4, "ab", true },
		{ "abcdef", 3, "abc", true },
		{ "\xff", 2, "", true },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		bool cut = !cases[i].cut;
		char *out = ipc_text_clean(cases[i].in, strlen(cases[i].in),
					   cases[i].max, &cut);
		CHECK(out && streq(out, cases[i].out));
		if (out && !streq(out, cases[i].out))
			fprintf(stderr, "  case %zu: got \"%s\"\n", i, out);
		CHECK(cut == cases[i].cut);
		CHECK(out && ipc_text_is_clean(out, strlen(out)));
		if (!cases[i].cut)
			CHECK(ipc_text_is_clean(cases[i].in,
						strlen(cases[i].in)) ==
			      streq(cases[i].in, cases[i].out));
		free(out);
	}
	/* Every byte value alone, and a NUL-free random-ish mix: the result
	 * is always clean and within max. */
	for (int b = 1; b < 256; b++) {
		char in[2] = { (char)b, 0 };
		char *out = ipc_text_clean(in, 1, 8, NULL);
		CHECK(out && ipc_text_is_clean(out, strlen(out)) &&
		      strlen(out) <= 8);
		free(out);
	}
	CHECK(ipc_char_printable(' ') && ipc_char_printable(0xe9) &&
	      !ipc_char_printable(0x85) && !ipc_char_printable(0x202d));
}

int main(void)
{
	check_watchdog(60);
	RUN(test_hello);
	RUN(test_subscribe);
	RUN(test_update);
	RUN(test_ack_error_ok_reload);
	RUN(test_nack);
	RUN(test_ping);
	RUN(test_settings);
	RUN(test_status);
	RUN(test_type_names);
	RUN(test_unknown);
	RUN(test_required);
	RUN(test_instance);
	RUN(test_not_a_map);
	RUN(test_force);
	RUN(test_wrong_types);
	RUN(test_duplicates);
	RUN(test_duplicates_anywhere);
	RUN(test_hostile_map);
	RUN(test_strings);
	RUN(test_subscribe_limit);
	RUN(test_depth);
	RUN(test_truncated_and_trailing);
	RUN(test_huge_counts);
	RUN(test_every_format);
	RUN(test_c1);
	RUN(test_no_secret_in_errors);
	RUN(test_short_err);
	RUN(test_text_clean);
	return check_exit();
}

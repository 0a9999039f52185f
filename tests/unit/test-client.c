/*
 * Unit tests for libdbswap's side of agent instances (protocol version 2):
 * a scripted fake agent on a Unix socket in a temp dir, driven from the
 * same thread as the client (dbswap_client_dispatch() between steps), so
 * that every interleaving is chosen, not raced.
 *
 * What must hold: hello offers version 2; an ack carries the instance of
 * the update it is for; an ack or nack for an earlier run of the agent is
 * never sent to the next one, even when the generation numbers collide;
 * the quiet re-ack of a renumbered value carries the new instance; an
 * agent that answers "version" gets version 1 at once, and acks without
 * an instance; the next connection offers version 2 again.
 *
 * And the ways an agent can refuse: right after accept (its client limit),
 * at the lowest version, or right after hello (a limit, a frame over the
 * size limit, a protocol complaint): the retries back off, and only a
 * connection that stayed up for a while starts the backoff over.  Each
 * subscription is its own subscribe, so a refused target (unknown,
 * forbidden, a limit) leaves the others followed; it is asked for again
 * with backoff, a pool hears of the refusal and of its end once each,
 * and a plain subscription's refusal goes to the log.
 *
 * Each test has a client of its own (client_begin, client_end).
 */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "common/util.h"
#include "ipc/frame.h"
#include "ipc/msg.h"
#include "tests/unit/check.h"

#define INST_A "aaaaaaaaaaaaaaaa"
#define INST_B "bbbbbbbbbbbbbbbb"
#define INST_C "cccccccccccccccc"

/* Long enough for a reconnection (the first retry is within 20 ms, the
 * longest 2 s). */
#define WAIT_MS 3000

/* client.c's CLIENT_STABLE_MS: a connection up this long was good. */
#define STABLE_MS 2000

static dbswap_client *client;
static int listen_fd = -1;
static char sock_path[108];

/* The fake agent's side of one connection. */
struct conn {
	int fd;
	struct ipc_reader in;
};

/* What the app's callback saw last. */
static struct {
	int calls;
	uint64_t generation;
	char instance[IPC_INSTANCE_LEN + 1]; /* "" for NULL */
	char conninfo[64];
} seen;

static void on_update(const dbswap_update *u, void *data)
{
	const char *inst = dbswap_update_instance(u);

	seen.calls++;
	seen.generation = dbswap_update_generation(u);
	snprintf(seen.instance, sizeof(seen.instance), "%s", inst ? inst : "");
	snprintf(seen.conninfo, sizeof(seen.conninfo), "%s",
		 dbswap_update_conninfo(u));
}

/* What the client logged: lines about refused subscriptions, and the
 * last line.  TEST_CLIENT_LOG=1 shows every line. */
static struct {
	int refuses, accepts;
	char last[512];
} logged;

static void test_log(int priority, const char *line, void *data)
{
	if (strstr(line, "refuses the subscription"))
		logged.refuses++;
	if (strstr(line, "accepts the subscription"))
		logged.accepts++;
	snprintf(logged.last, sizeof(logged.last), "%s", line);
	if (getenv("TEST_CLIENT_LOG"))
		fprintf(stderr, "  log: %s\n", line);
}

/* A fresh client for one test, subscribed to nothing yet. */
static void client_begin(void)
{
	client = dbswap_client_new(sock_path);
	CHECK(client != NULL);
	dbswap_client_set_log(client, test_log, NULL);
	memset(&seen, 0, sizeof(seen));
	memset(&logged, 0, sizeof(logged));
}

static void client_end(void)
{
	int fd;

	dbswap_client_free(client);
	client = NULL;
	/* A connection the test did not take would be the next test's
	 * first. */
	while ((fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK)) >= 0)
		close(fd);
}

static void dispatch(void)
{
	struct pollfd p = { .fd = dbswap_client_fd(client), .events = POLLIN };

	if (poll(&p, 1, 5) > 0)
		CHECK(dbswap_client_dispatch(client) >= 0);
}

/* Accepts the client's next connection, dispatching it meanwhile. */
static void agent_accept(struct conn *c)
{
	int64_t deadline = now_ms() + WAIT_MS;

	*c = (struct conn){ .fd = -1 };
	while (c->fd < 0 && now_ms() < deadline) {
		dispatch();
		c->fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK);
	}
	CHECK(c->fd >= 0);
}

static void agent_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	ipc_reader_fini(&c->in);
	c->fd = -1;
}

/* The next message from the client into m (0), or -ETIMEDOUT after
 * dispatching the client for ms. */
static int agent_recv(struct conn *c, struct ipc_msg *m, int ms)
{
	int64_t deadline = now_ms() + ms;
	char err[256];

	*m = (struct ipc_msg){ 0 };
	for (;;) {
		const uint8_t *body;
		size_t len;

		if (ipc_reader_next(&c->in, &body, &len) == 1) {
			int r = ipc_msg_decode(m, body, len, err, sizeof(err));
			if (r < 0)
				fprintf(stderr, "  bad message: %s\n", err);
			CHECK_INT(r, ==, 0);
			return 0;
		}
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		dispatch();
		(void)ipc_reader_fill(&c->in, c->fd);
	}
}

/* Waits for a message of type t and returns it in m. */
static void agent_expect(struct conn *c, enum ipc_type t, struct ipc_msg *m)
{
	CHECK_INT(agent_recv(c, m, WAIT_MS), ==, 0);
	if (m->type != t)
		fprintf(stderr, "  got %s, want %s\n",
			m->type_name ? m->type_name : "nothing",
			ipc_type_name(t));
	CHECK_INT(m->type, ==, t);
}

/* Nothing from the client within ms. */
static void agent_expect_nothing(struct conn *c, int ms)
{
	struct ipc_msg m;

	if (agent_recv(c, &m, ms) == 0) {
		fprintf(stderr, "  unexpected %s (generation %llu, instance "
			"%s)\n", m.type_name,
			(unsigned long long)m.generation,
			m.instance ? m.instance : "none");
		CHECK(!"nothing sent");
	}
	ipc_msg_fini(&m);
}

static void agent_send(struct conn *c, struct ipc_writer *w)
{
	uint8_t head[IPC_FRAME_HEADER] = {
		(uint8_t)(w->len >> 24), (uint8_t)(w->len >> 16),
		(uint8_t)(w->len >> 8), (uint8_t)w->len,
	};

	CHECK(!w->failed);
	CHECK(fd_write_all(c->fd, head, sizeof(head)) == 0);
	CHECK(fd_write_all(c->fd, w->buf, w->len) == 0);
	ipc_writer_fini(w);
}

/* Reads the client's hello (checking the version it offers) and answers
 * as an agent of that instance (NULL: a version-1 agent, which sends
 * none). */
static void agent_hello(struct conn *c, uint64_t offered,
			const char *instance)
{
	struct ipc_writer w;
	struct ipc_msg m;

	agent_expect(c, IPC_HELLO, &m);
	CHECK_INT(m.version, ==, offered);
	ipc_writer_init(&w, IPC_HELLO, instance ? 6 : 5);
	ipc_pack_kv_u64(&w, "id", m.id);
	ipc_pack_kv_u64(&w, "version", m.version);
	ipc_pack_kv_str(&w, "name", "fake-agent");
	ipc_pack_kv_i64(&w, "pid", 1);
	if (instance)
		ipc_pack_kv_str(&w, "instance", instance);
	agent_send(c, &w);
	ipc_msg_fini(&m);
}

static void agent_update_of(struct conn *c, const char *target,
			    const char *instance, uint64_t generation,
			    const char *conninfo)
{
	struct ipc_writer w;

	ipc_writer_init(&w, IPC_UPDATE, instance ? 5 : 4);
	ipc_pack_kv_str(&w, "target", target);
	ipc_pack_kv_u64(&w, "generation", generation);
	ipc_pack_kv_str(&w, "conninfo", conninfo);
	if (instance)
		ipc_pack_kv_str(&w, "instance", instance);
	agent_send(c, &w);
}

static void agent_update(struct conn *c, const char *instance,
			 uint64_t generation, const char *conninfo)
{
	agent_update_of(c, "DB", instance, generation, conninfo);
}

/* An error reply to request id (0: none), as the agent sends them. */
static void agent_error(struct conn *c, uint64_t id, const char *code,
			const char *message)
{
	struct ipc_writer w;

	ipc_writer_init(&w, IPC_ERROR, id ? 4 : 3);
	if (id)
		ipc_pack_kv_u64(&w, "id", id);
	ipc_pack_kv_str(&w, "code", code);
	ipc_pack_kv_str(&w, "message", message);
	agent_send(c, &w);
}

static void agent_ok(struct conn *c, uint64_t id)
{
	struct ipc_writer w;

	ipc_writer_init(&w, IPC_OK, 2);
	ipc_pack_kv_u64(&w, "id", id);
	agent_send(c, &w);
}

/* Reads a subscribe, which must name one target, into target; returns
 * its id, or 0 when none comes within ms. */
static uint64_t agent_subscribe_of(struct conn *c, char *target,
				   size_t size, int ms)
{
	struct ipc_msg m;
	uint64_t id;

	if (agent_recv(c, &m, ms) < 0)
		return 0;
	CHECK_INT(m.type, ==, IPC_SUBSCRIBE);
	CHECK_INT(m.n_targets, ==, 1);
	CHECK(m.has_id && m.id > 0);
	snprintf(target, size, "%s", m.n_targets ? m.targets[0] : "");
	id = m.id;
	ipc_msg_fini(&m);
	return id;
}

/* Reads the subscribe that follows hello; returns its id. */
static uint64_t agent_read_subscribe(struct conn *c)
{
	struct ipc_msg m;
	uint64_t id;

	agent_expect(c, IPC_SUBSCRIBE, &m);
	CHECK_INT(m.n_targets, ==, 1);
	id = m.id;
	ipc_msg_fini(&m);
	return id;
}

/* Answers subscribe id with an update (unless conninfo is NULL) and ok. */
static void agent_answer_subscribe(struct conn *c, uint64_t id,
				   const char *instance, uint64_t generation,
				   const char *conninfo)
{
	if (conninfo)
		agent_update(c, instance, generation, conninfo);
	agent_ok(c, id);
}

static void agent_subscribed(struct conn *c, const char *instance,
			     uint64_t generation, const char *conninfo)
{
	agent_answer_subscribe(c, agent_read_subscribe(c), instance,
			       generation, conninfo);
}

/* Dispatches until the callback has run `calls` times in all. */
static void wait_callbacks(int calls)
{
	int64_t deadline = now_ms() + WAIT_MS;

	while (seen.calls < calls && now_ms() < deadline)
		dispatch();
	CHECK_INT(seen.calls, ==, calls);
}

static void wait_connected(void)
{
	int64_t deadline = now_ms() + WAIT_MS;

	while (!dbswap_client_connected(client) && now_ms() < deadline)
		dispatch();
	CHECK(dbswap_client_connected(client));
}

static void expect_ack(struct conn *c, const char *instance,
		       uint64_t generation)
{
	struct ipc_msg m;

	agent_expect(c, IPC_ACK, &m);
	CHECK_STR(m.target, "DB");
	CHECK_INT(m.generation, ==, generation);
	CHECK_STR(m.instance, instance);
	ipc_msg_fini(&m);
}

static void test_instances_across_restarts(void)
{
	struct conn a, b, cc, v1, again;
	struct ipc_writer w;
	struct ipc_msg m;

	client_begin();
	CHECK_INT(dbswap_subscribe(client, "DB", on_update, NULL), ==, 0);
	/* Agent A: generation 3 of value one. */
	agent_accept(&a);
	agent_hello(&a, IPC_PROTOCOL_VERSION, INST_A);
	agent_subscribed(&a, INST_A, 3, "host=one");
	wait_callbacks(1);
	CHECK_STR(seen.instance, INST_A);
	CHECK_INT(seen.generation, ==, 3);
	/* dbswap_ack() names the update the callback got; another number
	 * is ignored. */
	CHECK_INT(dbswap_ack(client, "DB", 2), ==, 0);
	CHECK_INT(dbswap_ack(client, "DB", 3), ==, 0);
	expect_ack(&a, INST_A, 3);
	CHECK_INT(dbswap_ack(client, "NOPE", 3), ==, -ENOENT);

	/* A restarts as B, which publishes another value as generation 3
	 * too.  Acks for A's generation 3, by number or with A's instance,
	 * are not sent to B: the app still uses A's value. */
	agent_close(&a);
	agent_accept(&b);
	agent_hello(&b, IPC_PROTOCOL_VERSION, INST_B);
	uint64_t sub_id = agent_read_subscribe(&b);
	wait_connected();
	CHECK_INT(dbswap_ack_instance(client, "DB", INST_A, 3), ==, 0);
	CHECK_INT(dbswap_ack(client, "DB", 3), ==, 0);
	CHECK_INT(client_nack(client, "DB", INST_A, 3, "old"), ==, 0);
	agent_expect_nothing(&b, 100);
	agent_answer_subscribe(&b, sub_id, INST_B, 3, "host=two");
	wait_callbacks(2);
	CHECK_STR(seen.instance, INST_B);
	CHECK_STR(seen.conninfo, "host=two");
	/* Still not A's, now that the client has B's generation 3. */
	CHECK_INT(dbswap_ack_instance(client, "DB", INST_A, 3), ==, 0);
	agent_expect_nothing(&b, 50);
	/* A nack, then the ack, of B's generation 3 go to B with its id. */
	CHECK_INT(client_nack(client, "DB", INST_B, 3, "cannot"), ==, 0);
	agent_expect(&b, IPC_NACK, &m);
	CHECK_STR(m.instance, INST_B);
	CHECK_STR(m.message, "cannot");
	ipc_msg_fini(&m);
	CHECK_INT(dbswap_ack(client, "DB", 3), ==, 0);
	expect_ack(&b, INST_B, 3);
	/* A generation B has not given this client: not sent. */
	CHECK_INT(dbswap_ack_instance(client, "DB", INST_B, 4), ==, 0);
	agent_expect_nothing(&b, 50);

	/* B restarts as C with the same value, renumbered: acked at once,
	 * without a callback, with C's instance. */
	agent_close(&b);
	agent_accept(&cc);
	agent_hello(&cc, IPC_PROTOCOL_VERSION, INST_C);
	agent_subscribed(&cc, INST_C, 1, "host=two");
	expect_ack(&cc, INST_C, 1);
	CHECK_INT(seen.calls, ==, 2);
	/* The app's ack of B's 3, late: not for C. */
	CHECK_INT(dbswap_ack(client, "DB", 3), ==, 0);
	agent_expect_nothing(&cc, 50);

	/* An agent older than instances refuses version 2: the client
	 * says hello again at once with version 1 ... */
	agent_close(&cc);
	agent_accept(&v1);
	agent_expect(&v1, IPC_HELLO, &m);
	CHECK_INT(m.version, ==, 2);
	ipc_writer_init(&w, IPC_ERROR, 4);
	ipc_pack_kv_u64(&w, "id", m.id);
	ipc_pack_kv_str(&w, "code", IPC_ERR_VERSION);
	ipc_pack_kv_str(&w, "message", "this agent speaks version 1");
	agent_send(&v1, &w);
	ipc_msg_fini(&m);
	agent_close(&v1);
	int64_t t0 = now_ms();
	agent_accept(&v1);
	CHECK_INT(now_ms() - t0, <, 1000);
	agent_hello(&v1, 1, NULL);
	/* ... and its updates have no instance; acks carry none. */
	agent_subscribed(&v1, NULL, 1, "host=three");
	wait_callbacks(3);
	CHECK_STR(seen.instance, "");
	CHECK_INT(dbswap_ack(client, "DB", 1), ==, 0);
	expect_ack(&v1, NULL, 1);
	/* An instance the version-1 agent cannot have: not sent. */
	CHECK_INT(dbswap_ack_instance(client, "DB", INST_C, 1), ==, 0);
	agent_expect_nothing(&v1, 50);

	/* Lost again: the next connection offers version 2 again (the agent
	 * may have been upgraded meanwhile). */
	agent_close(&v1);
	agent_accept(&again);
	agent_hello(&again, IPC_PROTOCOL_VERSION, INST_A);
	agent_subscribed(&again, INST_A, 1, "host=three");
	expect_ack(&again, INST_A, 1);
	agent_close(&again);
	client_end();
}

/* Accepts the next connection and returns the time since *last (0 for
 * the first), setting *last to now. */
static int64_t accept_gap(struct conn *a, int64_t *last)
{
	int64_t gap;

	agent_accept(a);
	gap = *last ? now_ms() - *last : 0;
	*last = now_ms();
	return gap;
}

/* Backoff from the first retry, 20 ms: 20, 40, 80, 160, 320 ms ... each
 * with jitter down to half.  gaps[1..n-1] are the waits between n
 * connections; the last must be over 150 ms and their sum over 300 ms,
 * where a client retrying at once or every 20 ms gives about 100 ms in
 * all. */
static void check_backoff(const int64_t *gaps, int n)
{
	int64_t total = 0;

	for (int i = 1; i < n; i++)
		total += gaps[i];
	if (gaps[n - 1] < 150 || total < 300)
		fprintf(stderr, "  gaps: last %lld ms, %lld ms in all\n",
			(long long)gaps[n - 1], (long long)total);
	CHECK_INT(gaps[n - 1], >=, 150);
	CHECK_INT(total, >=, 300);
}

/* An agent that refuses every connection right after accept (as at its
 * client limit): the client's retries back off instead of coming every
 * 20 ms. */
static void test_refused_before_hello(void)
{
	int64_t last = 0, gaps[6];
	struct conn a;

	client_begin();
	CHECK_INT(dbswap_subscribe(client, "DB", on_update, NULL), ==, 0);
	for (int i = 0; i < 6; i++) {
		struct ipc_msg m;

		gaps[i] = accept_gap(&a, &last);
		agent_expect(&a, IPC_HELLO, &m);
		ipc_msg_fini(&m);
		agent_error(&a, 0, "limit", "the agent serves at most 1 "
					    "clients");
		agent_close(&a);
	}
	check_backoff(gaps, 6);
	client_end();
}

/* An agent that speaks no version the client does: version 2 refused,
 * version 1 at once, refused too; then the backoff grows, as above. */
static void test_refused_version(void)
{
	int64_t last = 0, gaps[6];
	struct conn a;

	client_begin();
	CHECK_INT(dbswap_subscribe(client, "DB", on_update, NULL), ==, 0);
	for (int i = 0; i < 6; i++) {
		for (uint64_t v = IPC_PROTOCOL_VERSION;
		     v >= IPC_PROTOCOL_VERSION_MIN; v--) {
			struct ipc_msg m;
			int64_t gap = accept_gap(&a, &last);

			if (v == IPC_PROTOCOL_VERSION)
				gaps[i] = gap;
			else
				CHECK_INT(gap, <, 1000); /* the fallback */
			agent_expect(&a, IPC_HELLO, &m);
			CHECK_INT(m.version, ==, v);
			agent_error(&a, m.id, IPC_ERR_VERSION,
				    "this agent speaks version 3");
			ipc_msg_fini(&m);
			agent_close(&a);
		}
	}
	check_backoff(gaps, 6);
	client_end();
}

/* An agent that accepts hello and drops the client right after: error
 * "limit" for its subscribe, a frame over the size limit, a protocol
 * complaint.  Before, each hello started the backoff over: a retry every
 * 20 ms for ever.  A connection that stayed up STABLE_MS does start it
 * over: the next loss is retried at once. */
static void test_dropped_after_hello(void)
{
	int64_t last = 0, gaps[7];
	struct conn a;

	client_begin();
	CHECK_INT(dbswap_subscribe(client, "DB", on_update, NULL), ==, 0);
	for (int i = 0; i < 7; i++) {
		uint8_t huge[IPC_FRAME_HEADER] = { 0, 1, 0, 1 }; /* 64 KiB+1 */
		uint64_t id;

		gaps[i] = accept_gap(&a, &last);
		agent_hello(&a, IPC_PROTOCOL_VERSION, INST_A);
		id = agent_read_subscribe(&a);
		if (i % 3 == 0) {
			agent_error(&a, id, IPC_ERR_LIMIT, "too many error "
				    "replies; disconnecting");
		} else if (i % 3 == 1) {
			CHECK(fd_write_all(a.fd, huge, sizeof(huge)) == 0);
			/* The client hangs up by itself. */
			char byte;
			int64_t deadline = now_ms() + WAIT_MS;
			while (read(a.fd, &byte, 1) != 0 &&
			       now_ms() < deadline)
				dispatch();
		} else {
			agent_error(&a, 0, IPC_ERR_PROTOCOL, "ack or nack "
				    "without an instance");
		}
		agent_close(&a);
	}
	check_backoff(gaps, 7);

	/* Served, for long enough: the next loss is retried at once. */
	agent_accept(&a);
	agent_hello(&a, IPC_PROTOCOL_VERSION, INST_A);
	agent_answer_subscribe(&a, agent_read_subscribe(&a), INST_A, 1, NULL);
	wait_connected();
	agent_expect_nothing(&a, STABLE_MS + 200);
	agent_close(&a);
	last = now_ms();
	agent_accept(&a);
	CHECK_INT(now_ms() - last, <, 150);
	agent_close(&a);
	client_end();
}

/* A pool's view of its subscription's refusals (its refused_cb). */
struct refusals {
	int calls, updates;
	int err;
	char message[256]; /* "(null)" for NULL */
};

static void on_refused(int err, const char *message, void *data)
{
	struct refusals *r = data;

	r->calls++;
	r->err = err;
	snprintf(r->message, sizeof(r->message), "%s",
		 message ? message : "(null)");
	/* Called without the client's lock: this would hang otherwise. */
	(void)dbswap_client_connected(client);
}

static void on_pool_update(const dbswap_update *u, void *data)
{
	((struct refusals *)data)->updates++;
}

/* Dispatches until *calls reaches want (or WAIT_MS passes). */
static void wait_count(const int *calls, int want)
{
	int64_t deadline = now_ms() + WAIT_MS;

	while (*calls < want && now_ms() < deadline)
		dispatch();
	CHECK_INT(*calls, ==, want);
}

/* The targets below, their names in the order the client subscribes. */
enum { T_DB, T_PLAIN, T_GONE, T_NOPE, T_FULL, T_COUNT };
static const char *const names[T_COUNT] = { "DB", "PLAIN", "GONE", "NOPE",
					     "FULL" };

static int target_index(const char *name)
{
	for (int i = 0; i < T_COUNT; i++)
		if (streq(names[i], name))
			return i;
	CHECK(!"a target the client follows");
	return 0;
}

/* Reads the subscribes that come within ms into ids[] (by target; at
 * most one each), with when they came; returns how many came. */
static int read_subscribes(struct conn *a, uint64_t *ids, int64_t *at,
			   int ms)
{
	int64_t deadline = now_ms() + ms;
	int n = 0;

	memset(ids, 0, T_COUNT * sizeof(*ids));
	for (;;) {
		char target[64];
		int64_t left = deadline - now_ms();
		uint64_t id = agent_subscribe_of(a, target, sizeof(target),
						 (int)MAX(left, 0));
		if (!id)
			return n;
		int t = target_index(target);
		if (ids[t])
			fprintf(stderr, "  %s asked for twice\n", target);
		CHECK(!ids[t]);
		ids[t] = id;
		at[t] = now_ms();
		n++;
	}
}

/* One subscribe per target, each with its own answer: a target the agent
 * refuses leaves the others followed (before, one subscribe named them
 * all and the agent's all-or-nothing refusal took every one down).  A
 * pool hears of each refusal as an errno with the agent's message, once
 * (not at each retry: again only when it changes), and once of its end;
 * a plain subscription's refusal is logged.  Refused ones are asked for
 * again after 0.5-1 s, then 1-2 s, never oftener. */
static void test_refused_subscriptions(void)
{
	struct refusals gone = { 0 }, nope = { 0 }, full = { 0 };
	uint64_t ids[T_COUNT];
	int64_t at[T_COUNT], refused_at;
	struct conn a, b;

	client_begin();
	CHECK_INT(dbswap_subscribe(client, "DB", on_update, NULL), ==, 0);
	CHECK_INT(dbswap_subscribe(client, "PLAIN", on_update, NULL), ==, 0);
	CHECK_INT(client_subscribe_pool(client, "GONE", on_pool_update, NULL,
					on_refused, &gone), ==, 0);
	CHECK_INT(client_subscribe_pool(client, "NOPE", on_pool_update, NULL,
					on_refused, &nope), ==, 0);
	CHECK_INT(client_subscribe_pool(client, "FULL", on_pool_update, NULL,
					on_refused, &full), ==, 0);
	agent_accept(&a);
	agent_hello(&a, IPC_PROTOCOL_VERSION, INST_A);
	CHECK_INT(read_subscribes(&a, ids, at, 500), ==, T_COUNT);
	agent_update_of(&a, "DB", INST_A, 1, "host=db");
	agent_ok(&a, ids[T_DB]);
	agent_error(&a, ids[T_PLAIN], IPC_ERR_UNKNOWN_TARGET,
		    "no target named \"PLAIN\" in this agent");
	agent_error(&a, ids[T_GONE], IPC_ERR_UNKNOWN_TARGET,
		    "no target named \"GONE\" in this agent");
	agent_error(&a, ids[T_NOPE], IPC_ERR_FORBIDDEN,
		    "uid 1000 may not subscribe to NOPE");
	agent_error(&a, ids[T_FULL], IPC_ERR_LIMIT,
		    "at most 64 subscriptions per client");
	refused_at = now_ms();
	wait_callbacks(1);
	CHECK_STR(seen.conninfo, "host=db");
	wait_count(&full.calls, 1);
	CHECK_INT(gone.calls, ==, 1);
	CHECK_INT(gone.err, ==, -ENXIO);
	CHECK_STR(gone.message, "no target named \"GONE\" in this agent");
	CHECK_INT(nope.calls, ==, 1);
	CHECK_INT(nope.err, ==, -EACCES);
	CHECK_STR(nope.message, "uid 1000 may not subscribe to NOPE");
	CHECK_INT(full.err, ==, -EPERM);
	CHECK_STR(full.message, "at most 64 subscriptions per client");
	CHECK_INT(logged.refuses, ==, 1);
	CHECK(strstr(logged.last, "PLAIN") != NULL);

	/* Asked again, each alone, after 0.5 to 1 s; DB never. */
	CHECK_INT(read_subscribes(&a, ids, at, 1300), ==, 4);
	CHECK(!ids[T_DB]);
	for (int t = T_PLAIN; t < T_COUNT; t++)
		CHECK_INT(at[t] - refused_at, >=, 450);
	/* The same refusals: nothing new to tell or log. */
	agent_error(&a, ids[T_PLAIN], IPC_ERR_UNKNOWN_TARGET,
		    "no target named \"PLAIN\" in this agent");
	agent_error(&a, ids[T_GONE], IPC_ERR_UNKNOWN_TARGET,
		    "no target named \"GONE\" in this agent");
	/* Another: told. */
	agent_error(&a, ids[T_NOPE], IPC_ERR_UNKNOWN_TARGET,
		    "no target named \"NOPE\" in this agent");
	/* Accepted, with a value: the end of the refusal comes first. */
	agent_update_of(&a, "FULL", INST_A, 4, "host=full");
	agent_ok(&a, ids[T_FULL]);
	refused_at = now_ms();
	wait_count(&full.updates, 1);
	CHECK_INT(full.calls, ==, 2);
	CHECK_INT(full.err, ==, 0);
	CHECK_STR(full.message, "(null)");
	wait_count(&nope.calls, 2);
	CHECK_INT(nope.err, ==, -ENXIO);
	CHECK_INT(gone.calls, ==, 1);
	CHECK_INT(logged.refuses, ==, 1);

	/* The next ones after 1 to 2 s: accepted by ok alone. */
	agent_expect_nothing(&a, 900);
	CHECK_INT(read_subscribes(&a, ids, at, 1300), ==, 3);
	CHECK(!ids[T_DB] && !ids[T_FULL]);
	agent_ok(&a, ids[T_PLAIN]);
	agent_ok(&a, ids[T_GONE]);
	agent_error(&a, ids[T_NOPE], IPC_ERR_UNKNOWN_TARGET,
		    "no target named \"NOPE\" in this agent");
	wait_count(&gone.calls, 2);
	CHECK_INT(gone.err, ==, 0);
	CHECK_STR(gone.message, "(null)");
	wait_count(&logged.accepts, 1);
	CHECK_INT(nope.calls, ==, 2);
	CHECK_INT(full.calls, ==, 2);

	/* A new connection asks for every target again, each alone. */
	agent_close(&a);
	agent_accept(&b);
	agent_hello(&b, IPC_PROTOCOL_VERSION, INST_B);
	CHECK_INT(read_subscribes(&b, ids, at, 500), ==, T_COUNT);
	agent_close(&b);
	client_end();
}

int main(void)
{
	char dir[] = "/tmp/dbswap-test-client-XXXXXX";
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	check_watchdog(60);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/agent.sock", dir);
	snprintf(sock_path, sizeof(sock_path), "%s", addr.sun_path);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (listen_fd < 0 ||
	    bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(listen_fd, 4) < 0) {
		perror("fake agent socket");
		return 1;
	}

	RUN(test_instances_across_restarts);
	RUN(test_refused_before_hello);
	RUN(test_refused_version);
	RUN(test_dropped_after_hello);
	RUN(test_refused_subscriptions);

	close(listen_fd);
	unlink(addr.sun_path);
	rmdir(dir);
	return check_exit();
}

/*
 * libdbswap's pool misused, for test_pool_misuse.py: each case drives a
 * real pool (a real agent, a real server) the way a buggy app or a fork
 * would, and checks that it gets an error, not corruption.  ASan runs it
 * in the sanitizer stage.
 *
 *   pool-misuse CASE SOCKET TARGET
 *
 * Prints "ok NAME" or "FAIL NAME: why" per check, and lines the test
 * acts on ("rotate": change the value now; "wait-ack": answer with a line
 * once the agent shows the current generation acked; "pause", "resume",
 * "stop", "start": do that to the server, then answer); exits 1 if a
 * check failed.
 */
#include <dbswap.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *sock_path, *target;
static int failed;

static void check(bool ok, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		printf("ok %s\n", name);
	} else {
		printf("FAIL %s: ", name);
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		putchar('\n');
		failed = 1;
	}
	fflush(stdout);
}

static void on_log(int priority, const char *line, void *userdata)
{
	(void)priority;
	(void)userdata;
	fprintf(stderr, "libdbswap: %s\n", line);
}

static void sleep_ms(int ms)
{
	nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000L },
		  NULL);
}

static dbswap_client *new_client(void)
{
	dbswap_client *c = dbswap_client_new(sock_path);

	if (!c) {
		perror("dbswap_client_new");
		exit(2);
	}
	dbswap_client_set_log(c, on_log, NULL);
	return c;
}

static dbswap_pool *new_pool(dbswap_client *c, int max, int drain_ms)
{
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool *p;

	cfg.min_size = 1;
	cfg.max_size = max;
	cfg.drain_timeout_ms = drain_ms > 0 ? drain_ms : DBSWAP_POOL_DEFAULT;
	p = dbswap_pool_new(c, target, &cfg);

	if (!p) {
		perror("dbswap_pool_new");
		exit(2);
	}
	return p;
}

static PGconn *must_acquire(dbswap_pool *p)
{
	PGconn *conn = dbswap_pool_acquire(p, 10000);

	if (!conn) {
		printf("FAIL acquire: %s\n", strerror(errno));
		exit(1);
	}
	return conn;
}

static bool query_ok(PGconn *conn)
{
	PGresult *r = PQexec(conn, "SELECT 1");
	bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;

	PQclear(r);
	return ok;
}

/* Waits until the pool is on a generation past gen. */
static bool wait_generation(dbswap_pool *p, uint64_t gen, int ms)
{
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;

	for (int waited = 0; waited < ms; waited += 10) {
		dbswap_pool_stats_get(p, &s);
		if (s.generation > gen)
			return true;
		sleep_ms(10);
	}
	return false;
}

/* fork() */

struct hammer {
	dbswap_pool *pool;
	volatile bool stop;
};

/* Keeps the pool's lock busy, so that forks land while it is held. */
static void *hammer_main(void *data)
{
	struct hammer *hm = data;

	while (!hm->stop) {
		PGconn *conn = dbswap_pool_acquire(hm->pool, 1000);
		if (conn)
			dbswap_pool_release(hm->pool, conn);
	}
	return NULL;
}

static int child_checks(dbswap_client *c, dbswap_pool *p, PGconn *held)
{
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	PGconn *conn;
	int bad = 0;

	alarm(5); /* a lock the parent held at the fork: a hang */
	errno = 0;
	conn = dbswap_pool_acquire(p, 1000);
	bad |= conn != NULL || errno != ECHILD;
	bad |= dbswap_pool_release(p, held) != -ECHILD;
	memset(&s, 0xff, sizeof(s));
	s.struct_size = sizeof(s);
	bad |= dbswap_pool_stats_get(p, &s) != -ECHILD;
	bad |= s.size != 0;
	bad |= dbswap_subscribe(c, "OTHER_URL", NULL, NULL) != -ECHILD;
	bad |= dbswap_client_fd(c) != -ECHILD;
	bad |= dbswap_client_dispatch(c) != -ECHILD;
	bad |= dbswap_client_connected(c) != 0;
	/* Only memory: no session of the parent's ended, no thread of its
	 * stopped (the parent checks both). */
	dbswap_pool_free(p);
	dbswap_client_free(c);
	return bad;
}

static void case_fork(void)
{
	dbswap_client *c = new_client();
	dbswap_pool *p = new_pool(c, 4, 0);
	struct hammer hm = { .pool = p };
	pthread_t th;
	PGconn *held = must_acquire(p);
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	int bad_children = 0, hung = 0;

	dbswap_pool_release(p, must_acquire(p));
	pthread_create(&th, NULL, hammer_main, &hm);
	for (int i = 0; i < 20; i++) {
		int st;
		pid_t pid = fork();
		if (pid == 0)
			_exit(child_checks(c, p, held));
		waitpid(pid, &st, 0);
		if (WIFSIGNALED(st))
			hung++;
		else if (WEXITSTATUS(st) != 0)
			bad_children++;
	}
	hm.stop = true;
	pthread_join(th, NULL);
	check(hung == 0, "fork-child-never-hangs",
	      "%d of 20 children killed (a lock held at the fork)", hung);
	check(bad_children == 0, "fork-child-calls-fail-with-ECHILD",
	      "%d of 20 children got something else", bad_children);
	check(query_ok(held), "fork-parent-session-intact",
	      "the parent's connection no longer works: %s",
	      PQerrorMessage(held));
	dbswap_pool_release(p, held);
	/* The parent's client thread still follows the agent. */
	dbswap_pool_stats_get(p, &s);
	printf("rotate\n");
	fflush(stdout);
	check(wait_generation(p, s.generation, 20000),
	      "fork-parent-follows-rotation",
	      "no new generation after the children freed their copies");
	held = must_acquire(p);
	check(query_ok(held), "fork-parent-queries", "%s",
	      PQerrorMessage(held));
	dbswap_pool_release(p, held);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

/* Misuse */

struct lender {
	dbswap_pool *pool;
	PGconn *conn;
	int phase; /* 0 start, 1 acquired, 2 released by main, 3 done */
	int second;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void lender_wait(struct lender *l, int phase)
{
	pthread_mutex_lock(&l->lock);
	while (l->phase < phase)
		pthread_cond_wait(&l->cond, &l->lock);
	pthread_mutex_unlock(&l->lock);
}

static void lender_set(struct lender *l, int phase)
{
	pthread_mutex_lock(&l->lock);
	l->phase = phase;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

static void *lender_main(void *data)
{
	struct lender *l = data;

	l->conn = must_acquire(l->pool);
	lender_set(l, 1);
	lender_wait(l, 2);
	l->second = dbswap_pool_release(l->pool, l->conn);
	lender_set(l, 3);
	return NULL;
}

struct waiter {
	dbswap_pool *pool;
	PGconn *got;
	int err;
};

static void *waiter_main(void *data)
{
	struct waiter *w = data;

	w->got = dbswap_pool_acquire(w->pool, 20000);
	w->err = errno;
	return NULL;
}

static void case_misuse(void)
{
	dbswap_client *c = new_client(), *c2 = new_client();
	dbswap_pool *p = new_pool(c, 2, 0), *p2 = new_pool(c2, 2, 0);
	PGconn *a, *b, *x;
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	int r, r2, overflow = 0;

	/* Released twice by the thread it was lent to. */
	a = must_acquire(p);
	r = dbswap_pool_release(p, a);
	r2 = dbswap_pool_release(p, a);
	check(r == 0 && r2 == -EINVAL, "double-release-refused",
	      "release, release: %d, %d", r, r2);
	a = must_acquire(p);
	b = must_acquire(p);
	check(a != b, "double-release-not-lent-twice",
	      "two acquires got the same connection");
	dbswap_pool_release(p, a);
	dbswap_pool_release(p, b);
	for (int i = 0; i < 200; i++) {
		a = must_acquire(p);
		dbswap_pool_release(p, a);
		if (dbswap_pool_release(p, a) != -EINVAL)
			overflow++;
	}
	dbswap_pool_stats_get(p, &s);
	check(overflow == 0 && s.idle <= s.size && s.size <= 2,
	      "double-release-repeated",
	      "%d second releases taken; size %d, idle %d", overflow, s.size,
	      s.idle);

	/* Lent to one thread, released by another, then by the first. */
	struct lender l = { .pool = p, .lock = PTHREAD_MUTEX_INITIALIZER,
			    .cond = PTHREAD_COND_INITIALIZER };
	pthread_t th;
	pthread_create(&th, NULL, lender_main, &l);
	lender_wait(&l, 1);
	r = dbswap_pool_release(p, l.conn);
	lender_set(&l, 2);
	lender_wait(&l, 3);
	pthread_join(th, NULL);
	check(r == 0 && l.second == -EINVAL, "double-release-across-threads",
	      "release by another thread %d, then by the borrower %d", r,
	      l.second);
	a = must_acquire(p);
	b = must_acquire(p);
	check(a != b, "double-release-across-threads-not-lent-twice",
	      "two acquires got the same connection");
	dbswap_pool_release(p, b);

	/* Released to the wrong pool: refused, left alone. */
	r = dbswap_pool_release(p2, a);
	check(r == -EINVAL, "wrong-pool-refused", "release to another pool: %d",
	      r);
	check(query_ok(a), "wrong-pool-connection-intact", "%s",
	      PQerrorMessage(a));
	r = dbswap_pool_release(p, a);
	check(r == 0, "wrong-pool-then-right-pool", "%d", r);

	/* The app's own connection. */
	x = PQconnectdb("dbname=nonexistent host=/nonexistent");
	r = dbswap_pool_release(p, x);
	check(r == -EINVAL, "foreign-connection-refused", "%d", r);
	PQfinish(x);

	/* NULL arguments: errors, no crash. */
	errno = 0;
	x = dbswap_pool_acquire(NULL, 0);
	check(!x && errno == EINVAL, "null-acquire", "errno %d", errno);
	check(dbswap_pool_release(NULL, a) == -EINVAL, "null-release", "");
	check(dbswap_pool_release(p, NULL) == 0, "null-conn-release", "");
	dbswap_pool_stats_get(NULL, &s);
	dbswap_pool_stats_get(p, NULL);
	check(dbswap_client_set_name(NULL, "x") == -EINVAL &&
	      dbswap_client_set_name(c, NULL) == -EINVAL, "null-set-name", "");
	dbswap_client_set_log(NULL, NULL, NULL);
	check(dbswap_client_fd(NULL) == -EINVAL, "null-fd", "");
	check(dbswap_client_dispatch(NULL) == -EINVAL, "null-dispatch", "");
	check(dbswap_client_start(NULL) == -EINVAL, "null-start", "");
	check(dbswap_client_connected(NULL) == 0, "null-connected", "");
	check(dbswap_subscribe(NULL, "X_URL", NULL, NULL) == -EINVAL,
	      "null-subscribe", "");
	check(dbswap_ack(NULL, target, 1) == -EINVAL &&
	      dbswap_ack(c, NULL, 1) == -ENOENT, "null-ack", "");
	check(dbswap_ack_instance(NULL, target, NULL, 1) == -EINVAL &&
	      dbswap_ack_instance(c, NULL, NULL, 1) == -ENOENT,
	      "null-ack-instance", "");
	check(!dbswap_update_target(NULL) && !dbswap_update_conninfo(NULL) &&
	      !dbswap_update_generation(NULL) &&
	      !dbswap_update_instance(NULL) && !dbswap_update_reason(NULL) &&
	      !dbswap_update_server(NULL) && !dbswap_update_standby(NULL),
	      "null-update", "");
	errno = 0;
	check(!dbswap_mask_conninfo(NULL) && errno == EINVAL, "null-mask", "");
	errno = 0;
	check(!dbswap_pool_new(NULL, target, NULL) && errno == EINVAL,
	      "null-pool-new", "");
	dbswap_pool_free(NULL);
	dbswap_client_free(NULL);

	/* Freed while threads wait in acquire: they get ECANCELED, and the
	 * free waits for them to leave. */
	struct waiter w[4];
	pthread_t wt[4];
	a = must_acquire(p2);
	b = must_acquire(p2);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct waiter){ .pool = p2 };
		pthread_create(&wt[i], NULL, waiter_main, &w[i]);
	}
	for (int i = 0; i < 500; i++) {
		dbswap_pool_stats_get(p2, &s);
		if (s.waiting == 4)
			break;
		sleep_ms(10);
	}
	check(s.waiting == 4, "free-while-waiting-setup", "%d waiting",
	      s.waiting);
	dbswap_pool_free(p2);
	int cancelled = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(wt[i], NULL);
		cancelled += !w[i].got && w[i].err == ECANCELED;
	}
	check(cancelled == 4, "free-while-waiting-cancels",
	      "%d of 4 waiters got ECANCELED", cancelled);

	dbswap_pool_free(p);
	dbswap_client_free(c2);
	dbswap_client_free(c);
}

/* shutdown(2) of a busy old connection at the drain deadline.  libpq
 * closes its socket itself when it sees the server go, in the app's
 * thread, and the number may be another file's by the time the pool
 * thread shuts it down: so the pool must shut down a descriptor of its
 * own for the same socket, never libpq's number.  Every shutdown() of
 * the process comes here first. */
#define SHUT_SEEN_MAX 16
static int shut_fds[SHUT_SEEN_MAX];
static ino_t shut_inos[SHUT_SEEN_MAX];
static int64_t shut_ms[SHUT_SEEN_MAX];
static _Atomic int n_shut;

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int shutdown(int fd, int how)
{
	static int (*real)(int, int);
	struct stat st;
	int i = atomic_fetch_add(&n_shut, 1);

	if (!real) {
		/* POSIX's way: dlsym() returns functions as object pointers. */
		void *sym = dlsym(RTLD_NEXT, "shutdown");
		memcpy(&real, &sym, sizeof(real));
	}
	if (i < SHUT_SEEN_MAX) {
		shut_fds[i] = fd;
		shut_inos[i] = fstat(fd, &st) == 0 ? st.st_ino : 0;
		shut_ms[i] = mono_ms();
	}
	return real(fd, how);
}

static void case_shutdown_own_fd(void)
{
	dbswap_client *c = new_client();
	dbswap_pool *p = new_pool(c, 2, 300);
	PGconn *conn = must_acquire(p);
	int fd = PQsocket(conn), n = 0;
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	struct stat st;

	fstat(fd, &st);
	dbswap_pool_stats_get(p, &s);
	printf("rotate\n");
	fflush(stdout);
	check(wait_generation(p, s.generation, 20000), "shutdown-switch",
	      "no switch");
	/* Busy on the old value past the 300 ms drain deadline. */
	for (int i = 0; i < 500 && (n = atomic_load(&n_shut)) == 0; i++)
		sleep_ms(10);
	check(n >= 1, "shutdown-at-drain-deadline", "no shutdown() in 5 s");
	check(n >= 1 && shut_fds[0] != fd && shut_inos[0] == st.st_ino,
	      "shutdown-of-its-own-descriptor",
	      "shut down fd %d (inode %lu); libpq's is %d (inode %lu)",
	      n ? shut_fds[0] : -1, n ? (unsigned long)shut_inos[0] : 0UL,
	      fd, (unsigned long)st.st_ino);
	check(!query_ok(conn), "shutdown-fails-the-query",
	      "the shut-down connection still answers");
	dbswap_pool_release(p, conn);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

/* Rotations always complete: a connection the app never gives back
 * holds no ack once its socket was shut down at the drain deadline. */
static void case_leak(void)
{
	dbswap_client *c = new_client();
	dbswap_pool *p = new_pool(c, 2, 300);
	PGconn *leaked = must_acquire(p);
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	char line[16];

	dbswap_pool_stats_get(p, &s);
	printf("rotate\n");
	fflush(stdout);
	check(wait_generation(p, s.generation, 20000), "leak-switch",
	      "no switch");
	/* The test checks the agent's status for the ack, then answers. */
	printf("wait-ack\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = '\0';
	check(!query_ok(leaked), "leak-shut-down", "the leaked connection "
	      "still answers after the drain deadline");
	dbswap_pool_release(p, leaked);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

/* Each switch keeps its own drain deadline: rotations every 400 ms must
 * not postpone the shutdown of a connection busy since the first. */
static void case_drain_each(void)
{
	dbswap_client *c = new_client();
	dbswap_pool *p = new_pool(c, 2, 1000);
	PGconn *held = must_acquire(p);
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	int64_t first = 0, shut;
	bool switched = true;

	for (int i = 0; i < 6 && switched; i++) {
		dbswap_pool_stats_get(p, &s);
		printf("rotate\n");
		fflush(stdout);
		switched = wait_generation(p, s.generation, 20000);
		if (!first)
			first = mono_ms();
		sleep_ms(400);
	}
	check(switched, "drain-each-switches", "a rotation did not switch");
	for (int i = 0; i < 500 && atomic_load(&n_shut) == 0; i++)
		sleep_ms(10);
	shut = atomic_load(&n_shut) ? shut_ms[0] - first : -1;
	check(shut >= 900 && shut <= 2000, "drain-each-own-deadline",
	      "the connection busy since the first switch was shut down "
	      "%lld ms after it (drain 1000 ms; rotations went on for "
	      "2400 ms)", (long long)shut);
	dbswap_pool_release(p, held);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

/* A connection from the pool is as PQconnectdb() would give it: the
 * default error verbosity and notice processor. */
static void case_plain(void)
{
	dbswap_client *c = new_client();
	dbswap_pool *p = new_pool(c, 2, 0);
	PGconn *conn = must_acquire(p), *plain;
	PQnoticeProcessor theirs, ours;
	PGVerbosity v;
	PGresult *r;

	v = PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
	check(v == PQERRORS_DEFAULT, "plain-error-verbosity",
	      "verbosity %d, not PQERRORS_DEFAULT", (int)v);
	r = PQexec(conn, "SELECT * FROM no_such_table_here");
	check(!strstr(PQerrorMessage(conn), "LOCATION:") &&
	      strncmp(PQerrorMessage(conn), "ERROR:  42P01", 13) != 0,
	      "plain-error-message", "%s", PQerrorMessage(conn));
	PQclear(r);
	/* A failed connection still has libpq's default processor. */
	plain = PQconnectdb("host=/nonexistent-dir dbname=x");
	theirs = PQsetNoticeProcessor(plain, NULL, NULL);
	ours = PQsetNoticeProcessor(conn, NULL, NULL);
	check(theirs == ours, "plain-notice-processor",
	      "the pool's connection has a notice processor of its own");
	PQfinish(plain);
	dbswap_pool_release(p, conn);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

/* Says line to the test and waits for its answer (it acted). */
static void ask(const char *line)
{
	char answer[16];

	printf("%s\n", line);
	fflush(stdout);
	if (!fgets(answer, sizeof(answer), stdin))
		exit(2);
}

static dbswap_pool *new_pool_cfg(dbswap_client *c,
				 const dbswap_pool_config *cfg)
{
	dbswap_pool *p = dbswap_pool_new(c, target, cfg);

	if (!p) {
		perror("dbswap_pool_new");
		exit(2);
	}
	return p;
}

/* A hung server holds no app thread longer than the connect timeout: not
 * in the rollback of a release, not in check_on_borrow. */
static void case_hung(void)
{
	dbswap_client *c = new_client();
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool *p;
	dbswap_pool_config ccfg;
	dbswap_pool *pc_pool;
	dbswap_client *c2 = new_client();
	PGconn *conn, *idle;
	PGresult *r;
	int64_t t0, took;

	cfg.min_size = 1;
	cfg.max_size = 2;
	cfg.connect_timeout_ms = 500;
	cfg.acquire_timeout_ms = 1000;
	p = new_pool_cfg(c, &cfg);
	ccfg = cfg;
	ccfg.idle_check_ms = 0;
	ccfg.max_size = 1;
	pc_pool = new_pool_cfg(c2, &ccfg);
	conn = must_acquire(p);
	r = PQexec(conn, "BEGIN");
	PQclear(r);
	idle = must_acquire(pc_pool);
	dbswap_pool_release(pc_pool, idle);
	ask("pause"); /* SIGSTOP of the server */
	t0 = mono_ms();
	dbswap_pool_release(p, conn);
	took = mono_ms() - t0;
	check(took < 2500, "hung-release-bounded",
	      "release (a ROLLBACK) on a hung server took %lld ms (connect "
	      "timeout 500 ms)", (long long)took);
	t0 = mono_ms();
	conn = dbswap_pool_acquire(pc_pool, 1000);
	took = mono_ms() - t0;
	check(!conn && took < 2500, "hung-check-on-borrow-bounded",
	      "acquire with check_on_borrow on a hung server: %s after %lld "
	      "ms", conn ? "a connection" : "NULL", (long long)took);
	ask("resume");
	if (conn)
		dbswap_pool_release(pc_pool, conn);
	dbswap_pool_free(pc_pool);
	dbswap_pool_free(p);
	dbswap_client_free(c2);
	dbswap_client_free(c);
}

static _Atomic int pool_lines;

static void count_log(int priority, const char *line, void *userdata)
{
	(void)userdata;
	atomic_fetch_add(&pool_lines, 1);
	on_log(priority, line, NULL);
}

/* An outage: acquires tell "no server" (ENOTCONN) from an exhausted pool,
 * the log says so once, not once per acquire, and a server back is used
 * within a second or so, however long the backoff grew. */
static void case_outage(void)
{
	dbswap_client *c = new_client();
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool *p;
	PGconn *conn, *busy;
	int64_t t0, took = -1;
	int lines, notconn = 0, tries = 0, ex_errno;

	cfg.min_size = 1;
	cfg.max_size = 2;
	cfg.connect_timeout_ms = 1000;
	cfg.acquire_timeout_ms = 500;
	p = new_pool_cfg(c, &cfg);
	conn = must_acquire(p);
	dbswap_client_set_log(c, count_log, NULL);
	/* Exhausted first: both connections in use. */
	busy = must_acquire(p);
	errno = 0;
	check(!dbswap_pool_acquire(p, 200) && errno == ETIMEDOUT,
	      "outage-exhausted-is-ETIMEDOUT", "errno %d", errno);
	ex_errno = errno;
	(void)ex_errno;
	dbswap_pool_release(p, busy);
	dbswap_pool_release(p, conn);
	ask("stop"); /* the server is stopped: connections break */
	atomic_store(&pool_lines, 0);
	t0 = mono_ms();
	while (mono_ms() - t0 < 8000) {
		conn = dbswap_pool_acquire(p, -1);
		if (conn) {
			/* One left over from before the stop: it is dead. */
			if (PQstatus(conn) == CONNECTION_OK && query_ok(conn)) {
				dbswap_pool_release(p, conn);
				continue;
			}
			dbswap_pool_release(p, conn);
			continue;
		}
		tries++;
		notconn += errno == ENOTCONN;
	}
	lines = atomic_load(&pool_lines);
	check(tries > 0 && notconn >= tries - 1, "outage-no-server-is-ENOTCONN",
	      "%d of %d failed acquires said ENOTCONN", notconn, tries);
	check(lines <= 4, "outage-logs-once",
	      "%d pool log lines in 8 s of outage (%d failed acquires)", lines,
	      tries);
	ask("start");
	t0 = mono_ms();
	while (mono_ms() - t0 < 20000) {
		conn = dbswap_pool_acquire(p, -1);
		if (conn && query_ok(conn)) {
			took = mono_ms() - t0;
			dbswap_pool_release(p, conn);
			break;
		}
		if (conn)
			dbswap_pool_release(p, conn);
	}
	check(took >= 0 && took < 3000, "outage-back-within-a-second",
	      "the server back was used after %lld ms", (long long)took);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: pool-misuse fork|misuse|shutdown|leak|"
				"drain-each|hung|outage|plain SOCKET TARGET\n");
		return 2;
	}
	sock_path = argv[2];
	target = argv[3];
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(argv[1], "fork"))
		case_fork();
	else if (!strcmp(argv[1], "misuse"))
		case_misuse();
	else if (!strcmp(argv[1], "shutdown"))
		case_shutdown_own_fd();
	else if (!strcmp(argv[1], "leak"))
		case_leak();
	else if (!strcmp(argv[1], "drain-each"))
		case_drain_each();
	else if (!strcmp(argv[1], "hung"))
		case_hung();
	else if (!strcmp(argv[1], "outage"))
		case_outage();
	else if (!strcmp(argv[1], "plain"))
		case_plain();
	else
		return 2;
	printf("done\n");
	return failed;
}

/*
 * libdbswap's pool misused, for test_pool_misuse.py: each case drives a
 * real pool (a real agent, a real server) the way a buggy app or a fork
 * would, and checks that it gets an error, not corruption.  ASan runs it
 * in the sanitizer stage.
 *
 *   pool-misuse CASE SOCKET TARGET
 *
 * Prints "ok NAME" or "FAIL NAME: why" per check, and lines the test
 * acts on ("rotate": change the value now; "wait-ack [NAME]": answer
 * with a line once the agent shows the current generation acked, and
 * print "ok NAME-acked" (NAME: leak by default); "wait-unacked NAME": the
 * same while it shows it not acked, "ok NAME-not-acked"; "pause", "resume",
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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *sock_path, *target;
static int failed;

static void ask(const char *line);

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

static bool streq_(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
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
	_Atomic bool stop;
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
static _Atomic int n_shut, n_shut_seen; /* called; recorded */

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
		atomic_fetch_add(&n_shut_seen, 1);
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
	for (int i = 0; i < 500 && (n = atomic_load(&n_shut_seen)) == 0; i++)
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

/* Make-before-break and the ack: a connection of the old value held
 * across a rotation keeps its session, and the new generation is not
 * acked until it comes back (the ack is the operator's proof that the
 * old password is out of use). */
static void case_held(void)
{
	dbswap_client *c = new_client();
	dbswap_pool *p = new_pool(c, 2, 0); /* the default drain: 30 s */
	PGconn *held = must_acquire(p), *fresh;
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;
	int pid = PQbackendPID(held);

	dbswap_pool_stats_get(p, &s);
	printf("rotate\n");
	fflush(stdout);
	check(wait_generation(p, s.generation, 20000), "held-switch",
	      "no switch");
	/* The test checks that the agent shows the generation unacked. */
	ask("wait-unacked held");
	check(query_ok(held) && PQbackendPID(held) == pid, "held-keeps-session",
	      "the held connection lost its session");
	fresh = must_acquire(p);
	check(PQbackendPID(fresh) != pid, "held-new-backend",
	      "a new acquire got the held connection's backend");
	dbswap_pool_release(p, fresh);
	dbswap_pool_release(p, held);
	ask("wait-ack held");
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
	for (int i = 0; i < 500 && atomic_load(&n_shut_seen) == 0; i++)
		sleep_ms(10);
	shut = atomic_load(&n_shut_seen) ? shut_ms[0] - first : -1;
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

/* Features (issue 17, "what pool users expect") */

static dbswap_pool_stats get_stats(dbswap_pool *p)
{
	dbswap_pool_stats s = DBSWAP_POOL_STATS_INIT;

	dbswap_pool_stats_get(p, &s);
	return s;
}

/* The first column of the first row of sql, or "" (a failure: "ERROR"). */
static const char *value_of(PGconn *conn, const char *sql)
{
	static char buf[256];
	PGresult *r = PQexec(conn, sql);

	snprintf(buf, sizeof(buf), "%s",
		 PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
			 ? PQgetvalue(r, 0, 0)
			 : "ERROR");
	PQclear(r);
	return buf;
}

static bool exec_ok(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(r);

	PQclear(r);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* The ABI of version 0.1, as a program built against it calls it. */
struct old_config {
	int min_size, max_size, acquire_timeout_ms, idle_timeout_ms,
		max_lifetime_ms, connect_timeout_ms, drain_timeout_ms,
		check_on_borrow;
};
struct old_stats {
	uint64_t generation;
	int size, idle, in_use, old, waiting;
	uint64_t acquired, timeouts, opened, closed, failed_connects, switches;
	struct old_config config;
};
dbswap_pool *old_pool_new(dbswap_client *, const char *,
			  const struct old_config *);
void old_stats_get(dbswap_pool *, struct old_stats *);
__asm__(".symver old_pool_new, dbswap_pool_new@DBSWAP_0.1");
__asm__(".symver old_stats_get, dbswap_pool_stats_get@DBSWAP_0.1");

/* Old binaries keep working; new ones can grow and ask for zeros. */
static void case_abi(void)
{
	dbswap_client *c = new_client();
	struct old_config oc = { .max_size = 2 }; /* 0: defaults then */
	struct old_stats os;
	dbswap_pool *p = old_pool_new(c, target, &oc), *q;
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT, got;
	struct {
		dbswap_pool_config c;
		char newer[16];
	} big;
	struct {
		dbswap_pool_stats s;
		uint64_t canary;
	} st;
	PGconn *conn, *conn2;
	int64_t t0;

	check(p != NULL, "abi-v01-new", "%s", strerror(errno));
	conn = must_acquire(p);
	memset(&os, 0xee, sizeof(os));
	old_stats_get(p, &os);
	check(os.config.max_size == 2 && os.config.min_size == 1 &&
		      os.config.acquire_timeout_ms == 5000 && os.in_use == 1 &&
		      os.size >= 1,
	      "abi-v01-stats", "max %d min %d timeout %d in_use %d size %d",
	      os.config.max_size, os.config.min_size,
	      os.config.acquire_timeout_ms, os.in_use, os.size);
	dbswap_pool_release(p, conn);
	dbswap_pool_free(p);

	/* struct_size: missing is refused; a newer, bigger struct is taken
	 * when what this library does not know is zero. */
	cfg.struct_size = 0;
	errno = 0;
	check(!dbswap_pool_new(c, target, &cfg) && errno == EINVAL,
	      "abi-size-zero-refused", "errno %d", errno);
	memset(&big, 0, sizeof(big));
	big.c = (dbswap_pool_config)DBSWAP_POOL_CONFIG_INIT;
	big.c.struct_size = sizeof(big);
	big.newer[3] = 1;
	errno = 0;
	check(!dbswap_pool_new(c, target, &big.c) && errno == EINVAL,
	      "abi-unknown-fields-refused", "errno %d", errno);
	big.newer[3] = 0;
	big.c.max_size = 1;
	big.c.min_size = 0;         /* 0 is 0 */
	big.c.idle_timeout_ms = 0;  /* idle ones close at once */
	big.c.acquire_timeout_ms = 0;
	p = dbswap_pool_new(c, target, &big.c);
	check(p != NULL, "abi-bigger-struct", "%s", strerror(errno));
	got.struct_size = offsetof(dbswap_pool_config, max_lifetime_ms);
	memset((char *)&got + got.struct_size, 0xee,
	       sizeof(got) - got.struct_size);
	dbswap_pool_config_get(p, &got);
	check(got.min_size == 0 && got.acquire_timeout_ms == 0 &&
		      got.max_size == 1 &&
		      ((unsigned char *)&got.max_lifetime_ms)[0] == 0xee,
	      "abi-config-get", "min %d acquire %d max %d",
	      got.min_size, got.acquire_timeout_ms, got.max_size);
	conn = must_acquire(p);
	t0 = mono_ms();
	errno = 0;
	conn2 = dbswap_pool_acquire(p, -1); /* the pool's timeout: 0 */
	check(!conn2 && errno == ETIMEDOUT && mono_ms() - t0 < 1000,
	      "abi-zero-acquire-timeout", "errno %d after %lld ms", errno,
	      (long long)(mono_ms() - t0));
	dbswap_pool_release(p, conn);
	t0 = mono_ms();
	while (get_stats(p).size > 0 && mono_ms() - t0 < 3000)
		sleep_ms(20);
	check(get_stats(p).size == 0, "abi-zero-min-size", "size %d, idle %d, "
	      "in use %d, opened %llu, closed %llu", get_stats(p).size,
	      get_stats(p).idle, get_stats(p).in_use,
	      (unsigned long long)get_stats(p).opened,
	      (unsigned long long)get_stats(p).closed);
	/* Stats as an older program knows them: nothing written past its
	 * struct_size. */
	memset(&st, 0, sizeof(st));
	st.s.struct_size = offsetof(dbswap_pool_stats, acquire_waits);
	st.s.acquire_waits = 77;
	st.canary = 99;
	dbswap_pool_stats_get(p, &st.s);
	check(st.s.acquire_waits == 77 && st.canary == 99 &&
		      st.s.struct_size ==
			      offsetof(dbswap_pool_stats, acquire_waits) &&
		      st.s.acquired == 1,
	      "abi-stats-short-struct", "waits %llu acquired %llu",
	      (unsigned long long)st.s.acquire_waits,
	      (unsigned long long)st.s.acquired);
	dbswap_pool_free(p);
	q = NULL;
	dbswap_pool_free(q);
	dbswap_client_free(c);
}

static _Atomic int hook_connects, hook_refuse_acquire, hook_refuse_release;

static int after_connect(PGconn *conn, void *data)
{
	(void)conn;
	check(data == &hook_connects, "hook-userdata", "%p", data);
	atomic_fetch_add(&hook_connects, 1);
	return 0;
}

static int before_acquire(PGconn *conn, void *data)
{
	(void)conn;
	(void)data;
	return atomic_exchange(&hook_refuse_acquire, 0);
}

static int after_release(PGconn *conn, void *data)
{
	(void)conn;
	(void)data;
	return atomic_exchange(&hook_refuse_release, 0);
}

/* Session state does not leak to the next borrower; the app's set-up
 * does. */
static void case_reset(void)
{
	dbswap_client *c = new_client();
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool *p;
	PGconn *conn;
	dbswap_pool_stats s;
	int pid;
	char path[256];

	cfg.min_size = 1;
	cfg.max_size = 1; /* the same connection each time */
	cfg.init_query = "SET application_name = 'from-init'";
	cfg.after_connect = after_connect;
	cfg.before_acquire = before_acquire;
	cfg.after_release = after_release;
	cfg.hook_data = &hook_connects;
	p = new_pool_cfg(c, &cfg);

	conn = must_acquire(p);
	pid = PQbackendPID(conn);
	snprintf(path, sizeof(path), "%s", value_of(conn, "SHOW search_path"));
	check(streq_(value_of(conn, "SHOW application_name"), "from-init") &&
		      atomic_load(&hook_connects) == 1,
	      "reset-init-query-and-after-connect", "%s, %d connects",
	      value_of(conn, "SHOW application_name"),
	      atomic_load(&hook_connects));
	check(exec_ok(conn, "SET search_path = pg_catalog"), "reset-set", "");
	dbswap_pool_release(p, conn);
	conn = must_acquire(p);
	s = get_stats(p);
	check(PQbackendPID(conn) == pid &&
		      streq_(value_of(conn, "SHOW search_path"), path) &&
		      streq_(value_of(conn, "SHOW application_name"),
			     "from-init") &&
		      s.resets == 1 && atomic_load(&hook_connects) == 2,
	      "reset-after-set", "pid %d/%d, search_path %s, %llu resets, "
	      "%d connects", PQbackendPID(conn), pid,
	      value_of(conn, "SHOW search_path"),
	      (unsigned long long)s.resets, atomic_load(&hook_connects));

	/* A protocol-level prepared statement. */
	PGresult *r = PQprepare(conn, "s1", "SELECT 1", 0, NULL);
	PQclear(r);
	dbswap_pool_release(p, conn);
	conn = must_acquire(p);
	r = PQdescribePrepared(conn, "s1");
	check(PQresultStatus(r) == PGRES_FATAL_ERROR && get_stats(p).resets == 2,
	      "reset-after-prepare", "status %s",
	      PQresStatus(PQresultStatus(r)));
	PQclear(r);

	/* A session advisory lock taken by a SELECT. */
	check(exec_ok(conn, "SELECT pg_advisory_lock(4242)"), "reset-lock",
	      "");
	dbswap_pool_release(p, conn);
	conn = must_acquire(p);
	check(streq_(value_of(conn, "SELECT count(*) FROM pg_locks WHERE "
				    "locktype = 'advisory' AND pid = "
				    "pg_backend_pid()"),
		     "0"),
	      "reset-after-advisory-lock", "");

	/* Plain reads and writes leave nothing: no round trip. */
	unsigned long long before = get_stats(p).resets;
	query_ok(conn);
	exec_ok(conn, "BEGIN");
	exec_ok(conn, "SELECT 1");
	exec_ok(conn, "COMMIT");
	dbswap_pool_release(p, conn);
	conn = must_acquire(p);
	check(get_stats(p).resets == before, "reset-not-after-reads",
	      "%llu resets, %llu before",
	      (unsigned long long)get_stats(p).resets, before);

	/* A hook that refuses: closed, another one. */
	atomic_store(&hook_refuse_release, 1);
	dbswap_pool_release(p, conn);
	s = get_stats(p);
	check(s.closed_broken == 1, "hook-after-release-closes",
	      "closed_broken %llu", (unsigned long long)s.closed_broken);
	conn = must_acquire(p);
	pid = PQbackendPID(conn);
	dbswap_pool_release(p, conn);
	atomic_store(&hook_refuse_acquire, 1);
	conn = must_acquire(p);
	s = get_stats(p);
	check(PQbackendPID(conn) != pid && s.closed_broken == 2 &&
		      query_ok(conn),
	      "hook-before-acquire-closes", "closed_broken %llu",
	      (unsigned long long)s.closed_broken);

	/* Discard. */
	pid = PQbackendPID(conn);
	check(dbswap_pool_discard(p, conn) == 0, "discard-returns-0", "");
	check(dbswap_pool_discard(p, conn) == -EINVAL, "discard-twice-einval",
	      "");
	conn = must_acquire(p);
	s = get_stats(p);
	check(PQbackendPID(conn) != pid && s.closed_discarded == 1,
	      "discard-closes", "closed_discarded %llu",
	      (unsigned long long)s.closed_discarded);
	dbswap_pool_release(p, conn);
	dbswap_pool_free(p);

	/* reset_query "": no reset; reset_always: after anything. */
	cfg = (dbswap_pool_config)DBSWAP_POOL_CONFIG_INIT;
	cfg.max_size = 1;
	cfg.reset_query = "";
	p = new_pool_cfg(c, &cfg);
	conn = must_acquire(p);
	exec_ok(conn, "SET search_path = pg_catalog");
	dbswap_pool_release(p, conn);
	conn = must_acquire(p);
	check(streq_(value_of(conn, "SHOW search_path"), "pg_catalog"),
	      "reset-query-empty-keeps-state", "%s",
	      value_of(conn, "SHOW search_path"));
	dbswap_pool_release(p, conn);
	dbswap_pool_free(p);
	cfg.reset_query = NULL;
	cfg.reset_always = 1;
	p = new_pool_cfg(c, &cfg);
	conn = must_acquire(p);
	query_ok(conn);
	dbswap_pool_release(p, conn);
	conn = must_acquire(p);
	check(get_stats(p).resets == 1, "reset-always", "%llu resets",
	      (unsigned long long)get_stats(p).resets);
	dbswap_pool_release(p, conn);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

/* An idle connection the server ended is not handed out; TCP keepalives
 * are on. */
static void case_idle_check(void)
{
	dbswap_client *c = new_client();
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool *p, *killer;
	PGconn *conn, *k;
	int pid, on = 0, idle = 0;
	socklen_t len = sizeof(on);
	char sql[128];

	cfg.max_size = 1;
	p = new_pool_cfg(c, &cfg);
	killer = new_pool(new_client(), 1, 0);
	conn = must_acquire(p);
	pid = PQbackendPID(conn);
	getsockopt(PQsocket(conn), SOL_SOCKET, SO_KEEPALIVE, &on, &len);
	len = sizeof(idle);
	getsockopt(PQsocket(conn), IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len);
	check(on == 1 && idle == 60, "keepalives-on", "SO_KEEPALIVE %d, "
	      "TCP_KEEPIDLE %d", on, idle);
	dbswap_pool_release(p, conn);
	k = must_acquire(killer);
	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", pid);
	check(streq_(value_of(k, sql), "t"), "idle-check-terminated", "");
	dbswap_pool_release(killer, k);
	sleep_ms(1200); /* past the idle check's 1 s */
	conn = must_acquire(p);
	check(PQbackendPID(conn) != pid && query_ok(conn) &&
		      get_stats(p).closed_broken == 1,
	      "idle-check-replaces-dead", "pid %d (was %d): %s",
	      PQbackendPID(conn), pid, PQerrorMessage(conn));
	dbswap_pool_release(p, conn);
	dbswap_pool_free(p);
	dbswap_pool_free(killer);
	dbswap_client_free(c);
}

/* Connections opened together do not expire together. */
static void case_jitter(void)
{
	dbswap_client *c = new_client();
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool *p;
	PGconn *held[6];
	int64_t t0, first = -1, last = -1;
	uint64_t was;

	cfg.min_size = 6;
	cfg.max_size = 6;
	cfg.max_lifetime_ms = 2500;
	cfg.lifetime_jitter_ms = 1500;
	p = new_pool_cfg(c, &cfg);
	for (int i = 0; i < 6; i++)
		held[i] = must_acquire(p);
	for (int i = 0; i < 6; i++)
		dbswap_pool_release(p, held[i]);
	was = get_stats(p).closed_lifetime;
	t0 = mono_ms();
	while (mono_ms() - t0 < 8000 && get_stats(p).closed_lifetime < was + 6) {
		uint64_t n = get_stats(p).closed_lifetime - was;
		if (n >= 1 && first < 0)
			first = mono_ms();
		if (n >= 6 && last < 0)
			last = mono_ms();
		sleep_ms(10);
	}
	if (last < 0 && get_stats(p).closed_lifetime >= was + 6)
		last = mono_ms();
	dbswap_pool_stats s = get_stats(p);
	check(first >= 0 && last >= 0 && last - first >= 300,
	      "lifetime-jitter-spreads", "first closed at %lld, the sixth "
	      "%lld ms later (closed %llu: %llu by lifetime, %llu idle, size "
	      "%d, idle %d)", (long long)(first - t0),
	      (long long)(last - first), (unsigned long long)s.closed,
	      (unsigned long long)s.closed_lifetime,
	      (unsigned long long)s.closed_idle, s.size, s.idle);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

struct holder {
	dbswap_pool *p;
	PGconn *conn;
	int hold_ms;
	int acquire_errno;
};

static void *holder_main(void *data)
{
	struct holder *h = data;

	sleep_ms(h->hold_ms);
	dbswap_pool_release(h->p, h->conn);
	return NULL;
}

static void *blocked_acquirer(void *data)
{
	struct holder *h = data;

	errno = 0;
	if (!dbswap_pool_acquire(h->p, 5000))
		h->acquire_errno = errno;
	return NULL;
}

/* dbswap_pool_close() waits for busy connections, up to its timeout;
 * waits are measured. */
static void case_close(void)
{
	dbswap_client *c = new_client();
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	dbswap_pool *p;
	struct holder h = { 0 }, w = { 0 };
	pthread_t t, tw;
	dbswap_pool_stats s;
	int64_t t0;
	int r;

	cfg.max_size = 1;
	p = new_pool_cfg(c, &cfg);
	h = (struct holder){ .p = p, .conn = must_acquire(p), .hold_ms = 400 };
	/* The first acquire may have waited for the first connection. */
	dbswap_pool_stats s0 = get_stats(p);
	pthread_create(&t, NULL, holder_main, &h);
	t0 = mono_ms();
	PGconn *conn = must_acquire(p); /* waits for the holder */
	s = get_stats(p);
	check(s.acquire_waits == s0.acquire_waits + 1 &&
		      s.acquire_wait_us - s0.acquire_wait_us >= 250000 &&
		      s.acquire_wait_max_us >= 250000 &&
		      s.server == DBSWAP_SERVER_PRIMARY && s.refused == 0,
	      "stats-acquire-wait", "waits %llu, %llu us, max %llu, server %d",
	      (unsigned long long)s.acquire_waits,
	      (unsigned long long)s.acquire_wait_us,
	      (unsigned long long)s.acquire_wait_max_us, s.server);
	pthread_join(t, NULL);

	/* Close while it is busy and another thread waits in acquire. */
	w.p = p;
	pthread_create(&tw, NULL, blocked_acquirer, &w);
	sleep_ms(100);
	h = (struct holder){ .p = p, .conn = conn, .hold_ms = 300 };
	pthread_create(&t, NULL, holder_main, &h);
	t0 = mono_ms();
	r = dbswap_pool_close(p, 3000);
	s = get_stats(p);
	check(r == 0 && mono_ms() - t0 >= 200 && mono_ms() - t0 < 2500,
	      "close-waits-for-busy", "returned %d after %lld ms", r,
	      (long long)(mono_ms() - t0));
	pthread_join(t, NULL);
	pthread_join(tw, NULL);
	check(w.acquire_errno == ECANCELED, "close-cancels-waiters",
	      "errno %d", w.acquire_errno);
	errno = 0;
	check(!dbswap_pool_acquire(p, 100) && errno == ECANCELED,
	      "close-refuses-acquires", "errno %d", errno);
	t0 = mono_ms();
	while ((s = get_stats(p)).size > 0 && mono_ms() - t0 < 3000)
		sleep_ms(20);
	check(s.closing == 1 && s.size == 0 && s.closed_shutdown >= 1,
	      "close-closes-all", "closing %d size %d closed_shutdown %llu",
	      s.closing, s.size, (unsigned long long)s.closed_shutdown);
	dbswap_pool_free(p);

	/* A connection never given back: the timeout, and its socket shut
	 * down. */
	p = new_pool_cfg(c, &cfg);
	conn = must_acquire(p);
	t0 = mono_ms();
	r = dbswap_pool_close(p, 300);
	check(r == -ETIMEDOUT && mono_ms() - t0 >= 250 && !query_ok(conn),
	      "close-timeout-shuts-down", "returned %d after %lld ms", r,
	      (long long)(mono_ms() - t0));
	check(dbswap_pool_release(p, conn) == 0, "close-release-after", "");
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

static _Atomic int slow_hook_ms, slow_hook_result;

static int slow_hook(PGconn *conn, void *data)
{
	(void)conn;
	(void)data;
	sleep_ms(atomic_load(&slow_hook_ms));
	return atomic_load(&slow_hook_result);
}

struct acquirer {
	dbswap_pool *p;
	PGconn *conn;
	int err;
	bool park_first;
};

static void *acquirer_main(void *data)
{
	struct acquirer *a = data;

	if (a->park_first) /* released here: parked in this thread */
		dbswap_pool_release(a->p, must_acquire(a->p));
	atomic_store(&slow_hook_ms, 500);
	errno = 0;
	a->conn = dbswap_pool_acquire(a->p, 3000);
	a->err = errno;
	return NULL;
}

/* A hook that takes its time while the pool is closed or freed: found by
 * review (a use after free, a connection handed out as free closed it, a
 * close that missed its wake-up). */
static void case_close_races(void)
{
	dbswap_client *c = new_client();
	dbswap_pool_config cfg = DBSWAP_POOL_CONFIG_INIT;
	struct acquirer a;
	dbswap_pool *p;
	pthread_t t;
	int64_t t0;
	int r;

	cfg.max_size = 1;
	cfg.before_acquire = slow_hook;
	/* Free while a parked connection's hook runs (fast path). */
	p = new_pool_cfg(c, &cfg);
	a = (struct acquirer){ .p = p, .park_first = true };
	pthread_create(&t, NULL, acquirer_main, &a);
	sleep_ms(200);
	dbswap_pool_free(p);
	pthread_join(t, NULL);
	check(!a.conn && a.err == ECANCELED, "free-during-hook-cancels",
	      "conn %p, errno %d", (void *)a.conn, a.err);
	atomic_store(&slow_hook_ms, 0);

	/* Close while an acquire's hook refuses the last connection lent:
	 * close returns when it is gone, not at its timeout. */
	p = new_pool_cfg(c, &cfg);
	dbswap_pool_release(p, must_acquire(p)); /* open, idle */
	atomic_store(&slow_hook_result, 1);
	a = (struct acquirer){ .p = p };
	pthread_create(&t, NULL, acquirer_main, &a);
	sleep_ms(200);
	t0 = mono_ms();
	r = dbswap_pool_close(p, 5000);
	check(r == 0 && mono_ms() - t0 < 2000, "close-wakes-on-refused-handout",
	      "returned %d after %lld ms", r, (long long)(mono_ms() - t0));
	pthread_join(t, NULL);
	check(!a.conn && a.err == ECANCELED, "close-during-hook-cancels",
	      "conn %p, errno %d", (void *)a.conn, a.err);
	atomic_store(&slow_hook_result, 0);
	atomic_store(&slow_hook_ms, 0);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

/* The agent refuses the target: acquires fail at once, stats say why. */
static void case_refused(void)
{
	dbswap_client *c = new_client();
	dbswap_pool *p = dbswap_pool_new(c, "NO_SUCH_URL", NULL);
	int64_t t0 = mono_ms();
	PGconn *conn;

	errno = 0;
	conn = dbswap_pool_acquire(p, 5000);
	check(!conn && errno == ENXIO && mono_ms() - t0 < 3000,
	      "refused-unknown-target-enxio", "errno %d (%s) after %lld ms",
	      errno, strerror(errno), (long long)(mono_ms() - t0));
	check(get_stats(p).refused == ENXIO, "refused-in-stats", "%d",
	      get_stats(p).refused);
	dbswap_pool_free(p);
	dbswap_client_free(c);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: pool-misuse fork|misuse|shutdown|leak|"
				"held|drain-each|hung|outage|plain|abi|reset|idle-check|"
				"jitter|close|close-races|refused SOCKET TARGET\n");
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
	else if (!strcmp(argv[1], "held"))
		case_held();
	else if (!strcmp(argv[1], "drain-each"))
		case_drain_each();
	else if (!strcmp(argv[1], "hung"))
		case_hung();
	else if (!strcmp(argv[1], "outage"))
		case_outage();
	else if (!strcmp(argv[1], "plain"))
		case_plain();
	else if (!strcmp(argv[1], "abi"))
		case_abi();
	else if (!strcmp(argv[1], "reset"))
		case_reset();
	else if (!strcmp(argv[1], "idle-check"))
		case_idle_check();
	else if (!strcmp(argv[1], "jitter"))
		case_jitter();
	else if (!strcmp(argv[1], "close"))
		case_close();
	else if (!strcmp(argv[1], "refused"))
		case_refused();
	else if (!strcmp(argv[1], "close-races"))
		case_close_races();
	else
		return 2;
	printf("done\n");
	return failed;
}

/*
 * Unit tests of agent/connplan.c: a conninfo becomes keyword arrays in
 * which every address is a host entry of its own (host repeated, hostaddr
 * one address, port repeated, order kept), hosts are looked up only when
 * they need it, the caps hold exactly at the limit and fail one past it,
 * the PG* variables apply as libpq applies them, the refusals (service
 * files, special files, list lengths) say why without a password, and the
 * probe can find the address libpq is on and give up those it has tried.
 *
 * No DNS: the "lookups" are addresses the test hands over.  Runs in a
 * temp dir of its own, with HOME pointing there.
 */
#include <pwd.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/connplan.h"
#include "common/util.h"
#include "tests/unit/check.h"

#define SECRET "s3cr3t-pw"

static char tmpdir[] = "/tmp/dbswap-test-connplan.XXXXXX";

/* The value of key in the arrays, the last one (libpq's rule: a later
 * keyword wins); NULL if absent. */
static const char *param(const char *const *keys, const char *const *vals,
			 const char *key)
{
	const char *v = NULL;

	for (size_t i = 0; keys[i]; i++)
		if (streq(keys[i], key))
			v = vals[i];
	return v;
}

static size_t param_index(const char *const *keys, const char *key)
{
	for (size_t i = 0; keys[i]; i++)
		if (streq(keys[i], key))
			return i;
	return (size_t)-1;
}

static struct connplan *plan_ok(const char *conninfo)
{
	struct connplan *plan = NULL;
	char err[512];
	int r = connplan_new(conninfo, &plan, err, sizeof(err));

	if (r < 0)
		fprintf(stderr, "connplan_new(%s): %d %s\n", conninfo, r, err);
	CHECK_INT(r, ==, 0);
	return plan;
}

/* Refused: returns the error text (static). */
static const char *plan_refused(const char *conninfo)
{
	static char err[512];
	struct connplan *plan = NULL;
	int r = connplan_new(conninfo, &plan, err, sizeof(err));

	CHECK_INT(r, ==, -EINVAL);
	CHECK(plan == NULL);
	CHECK(strstr(err, SECRET) == NULL);
	connplan_free(plan);
	return err;
}

static void test_one_name(void)
{
	struct connplan *plan = plan_ok(
		"postgresql://app:" SECRET "@db.example:5433/appdb"
		"?target_session_attrs=read-write&sslmode=verify-full");
	const char *addrs[] = { "192.0.2.1", "2001:db8::1" };
	const char *const *k, *const *v;
	const char *xk[] = { "fallback_application_name", NULL };
	const char *xv[] = { "dbswapd", NULL };

	if (!plan)
		return;
	CHECK_INT(connplan_hosts(plan), ==, 1);
	CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_LOOKUP);
	CHECK_STR(connplan_host(plan, 0), "db.example");
	/* Not before its lookup. */
	CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, -EINVAL);
	CHECK_INT(connplan_set_addrs(plan, 0, addrs, 0), ==, -EINVAL);
	CHECK_INT(connplan_set_addrs(plan, 0, addrs, 2), ==, 0);
	CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_READY);
	CHECK_INT(connplan_set_addrs(plan, 0, addrs, 2), ==, -EINVAL);
	CHECK_INT(connplan_params(plan, 0, 1, xk, xv, &k, &v), ==, 0);
	CHECK_STR(param(k, v, "host"), "db.example,db.example");
	CHECK_STR(param(k, v, "hostaddr"), "192.0.2.1,2001:db8::1");
	CHECK_STR(param(k, v, "port"), "5433,5433");
	CHECK_STR(param(k, v, "user"), "app");
	CHECK_STR(param(k, v, "password"), SECRET);
	CHECK_STR(param(k, v, "dbname"), "appdb");
	CHECK_STR(param(k, v, "target_session_attrs"), "read-write");
	CHECK_STR(param(k, v, "sslmode"), "verify-full");
	CHECK_STR(param(k, v, "fallback_application_name"), "dbswapd");
	/* GSSAPI off by default, first, so that the value could turn it on. */
	CHECK_STR(k[0], "gssencmode");
	CHECK_STR(v[0], "disable");
	connplan_free(plan);
}

static void test_mixed_list(void)
{
	struct connplan *plan = plan_ok(
		"host=db.example,10.0.0.5,/run/postgresql,@abstract,,::1,"
		"other.example port=1,2,3,4,5,6,7 password=" SECRET);
	const char *a0[] = { "192.0.2.1", "192.0.2.2", "192.0.2.3" };
	const char *a6[] = { "198.51.100.7" };
	const char *const *k, *const *v;

	if (!plan)
		return;
	CHECK_INT(connplan_hosts(plan), ==, 7);
	CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_LOOKUP);
	CHECK_INT(connplan_state(plan, 1), ==, CONNPLAN_READY); /* numeric */
	CHECK_INT(connplan_state(plan, 2), ==, CONNPLAN_READY); /* socket */
	CHECK_INT(connplan_state(plan, 3), ==, CONNPLAN_READY); /* abstract */
	CHECK_INT(connplan_state(plan, 4), ==, CONNPLAN_READY); /* default */
	CHECK_INT(connplan_state(plan, 5), ==, CONNPLAN_READY); /* IPv6 */
	CHECK_INT(connplan_state(plan, 6), ==, CONNPLAN_LOOKUP);
	/* A run of ready entries may go before the lookups are done. */
	CHECK_INT(connplan_params(plan, 1, 6, NULL, NULL, &k, &v), ==, 0);
	CHECK_STR(param(k, v, "host"), "10.0.0.5,/run/postgresql,@abstract,,::1");
	CHECK_STR(param(k, v, "hostaddr"), "10.0.0.5,,,,::1");
	CHECK_STR(param(k, v, "port"), "2,3,4,5,6");
	CHECK_INT(connplan_set_addrs(plan, 0, a0, 3), ==, 0);
	CHECK_INT(connplan_set_addrs(plan, 6, a6, 1), ==, 0);
	CHECK_INT(connplan_params(plan, 0, 7, NULL, NULL, &k, &v), ==, 0);
	CHECK_STR(param(k, v, "host"),
		  "db.example,db.example,db.example,10.0.0.5,/run/postgresql,"
		  "@abstract,,::1,other.example");
	CHECK_STR(param(k, v, "hostaddr"),
		  "192.0.2.1,192.0.2.2,192.0.2.3,10.0.0.5,,,,::1,198.51.100.7");
	CHECK_STR(param(k, v, "port"), "1,1,1,2,3,4,5,6,7");
	/* A failed lookup leaves its entry out. */
	connplan_fail(plan, 0);
	CHECK_INT(connplan_params(plan, 0, 2, NULL, NULL, &k, &v), ==, 0);
	CHECK_STR(param(k, v, "host"), "10.0.0.5");
	CHECK_STR(param(k, v, "hostaddr"), "10.0.0.5");
	CHECK_STR(param(k, v, "port"), "2");
	CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, -ENOENT);
	connplan_free(plan);
}

static void test_hostaddr_and_ports(void)
{
	struct connplan *plan = plan_ok("host=a.example,b.example "
					"hostaddr=192.0.2.9, port=7000");
	const char *ab[] = { "192.0.2.10" };
	const char *const *k, *const *v;

	if (plan) {
		/* a has its hostaddr: no lookup; b has none. */
		CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_READY);
		CHECK_INT(connplan_state(plan, 1), ==, CONNPLAN_LOOKUP);
		CHECK_INT(connplan_set_addrs(plan, 1, ab, 1), ==, 0);
		CHECK_INT(connplan_params(plan, 0, 2, NULL, NULL, &k, &v), ==, 0);
		CHECK_STR(param(k, v, "host"), "a.example,b.example");
		CHECK_STR(param(k, v, "hostaddr"), "192.0.2.9,192.0.2.10");
		CHECK_STR(param(k, v, "port"), "7000,7000");
		connplan_free(plan);
	}
	/* No host, no port: nothing is passed, libpq's defaults apply. */
	plan = plan_ok("dbname=x");
	if (plan) {
		CHECK_INT(connplan_hosts(plan), ==, 1);
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK(param(k, v, "host") == NULL);
		CHECK(param(k, v, "hostaddr") == NULL);
		CHECK(param(k, v, "port") == NULL);
		connplan_free(plan);
	}
	CHECK(strstr(plan_refused("host=a,b hostaddr=192.0.2.1 password="
				  SECRET), "2 host names for 1 hostaddr"));
	CHECK(strstr(plan_refused("host=a,b port=1,2,3 password=" SECRET),
		     "3 port numbers for 2 hosts"));
}

static void test_caps(void)
{
	char buf[1024];
	const char *addrs[CONNPLAN_ADDRS_MAX + 2] = {
		"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4",
		"192.0.2.5", "192.0.2.6", "192.0.2.7", "192.0.2.8",
		"192.0.2.9", "192.0.2.10",
	};
	const char *const *k, *const *v;
	struct connplan *plan;
	size_t o;

	/* Exactly CONNPLAN_HOSTS_MAX hosts, then one more. */
	o = (size_t)snprintf(buf, sizeof(buf), "password=" SECRET " host=h0");
	for (int i = 1; i < CONNPLAN_HOSTS_MAX; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, ",h%d", i);
	plan = plan_ok(buf);
	if (plan)
		CHECK_INT(connplan_hosts(plan), ==, CONNPLAN_HOSTS_MAX);
	connplan_free(plan);
	snprintf(buf + o, sizeof(buf) - o, ",h%d", CONNPLAN_HOSTS_MAX);
	CHECK(strstr(plan_refused(buf),
		     "17 hosts in one value, the agent takes at most 16"));
	/* hostaddr counts the same way. */
	o = (size_t)snprintf(buf, sizeof(buf), "hostaddr=192.0.2.1");
	for (int i = 1; i <= CONNPLAN_HOSTS_MAX; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, ",192.0.2.1");
	CHECK(strstr(plan_refused(buf), "at most 16"));

	/* At most CONNPLAN_ADDRS_MAX addresses of one name are tried. */
	plan = plan_ok("host=many.example");
	if (!plan)
		return;
	CHECK_INT(connplan_set_addrs(plan, 0, addrs, ARRAY_SIZE(addrs)), ==, 0);
	CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
	CHECK_STR(param(k, v, "hostaddr"),
		  "192.0.2.1,192.0.2.2,192.0.2.3,192.0.2.4,192.0.2.5,"
		  "192.0.2.6,192.0.2.7,192.0.2.8");
	connplan_free(plan);
}

static void test_environment(void)
{
	const char *const *k, *const *v;
	struct connplan *plan;

	setenv("PGHOST", "env.example", 1);
	setenv("PGPORT", "6000", 1);
	plan = plan_ok("user=u");
	if (plan) {
		CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_LOOKUP);
		CHECK_STR(connplan_host(plan, 0), "env.example");
		connplan_fail(plan, 0);
		connplan_free(plan);
	}
	/* The value's own host and port win. */
	plan = plan_ok("host=127.0.0.1 port=5432");
	if (plan) {
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK_STR(param(k, v, "host"), "127.0.0.1");
		CHECK_STR(param(k, v, "hostaddr"), "127.0.0.1");
		CHECK_STR(param(k, v, "port"), "5432");
		connplan_free(plan);
	}
	/* PGHOSTADDR gives the value's host an address. */
	setenv("PGHOSTADDR", "192.0.2.77", 1);
	plan = plan_ok("host=named.example");
	if (plan) {
		CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_READY);
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK_STR(param(k, v, "hostaddr"), "192.0.2.77");
		CHECK_STR(param(k, v, "port"), "6000");
		connplan_free(plan);
	}
	unsetenv("PGHOST");
	unsetenv("PGPORT");
	unsetenv("PGHOSTADDR");

	/* GSSAPI as asked: by the value (it comes later and wins), or by
	 * PGGSSENCMODE (no default then). */
	plan = plan_ok("host=/tmp gssencmode=prefer");
	if (plan) {
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK_STR(param(k, v, "gssencmode"), "prefer");
		connplan_free(plan);
	}
	setenv("PGGSSENCMODE", "prefer", 1);
	plan = plan_ok("host=/tmp");
	if (plan) {
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK(param_index(k, "gssencmode") == (size_t)-1);
		connplan_free(plan);
	}
	unsetenv("PGGSSENCMODE");

	/* No user in the value: the agent's own, looked up at start, not by
	 * libpq in the loop; PGUSER or the value's own still win. */
	struct passwd *pw = getpwuid(geteuid());
	connplan_init();
	unsetenv("PGUSER");
	plan = plan_ok("host=/tmp");
	if (plan && pw) {
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK_STR(param(k, v, "user"), pw->pw_name);
		connplan_free(plan);
	}
	plan = plan_ok("host=/tmp user=app");
	if (plan) {
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK_STR(param(k, v, "user"), "app");
		connplan_free(plan);
	}
	setenv("PGUSER", "envuser", 1);
	plan = plan_ok("host=/tmp");
	if (plan) {
		CHECK_INT(connplan_params(plan, 0, 1, NULL, NULL, &k, &v), ==, 0);
		CHECK(param_index(k, "user") == (size_t)-1);
		connplan_free(plan);
	}
	unsetenv("PGUSER");
}

static void test_refusals(void)
{
	const char *e;

	e = plan_refused("host='db password=" SECRET);
	CHECK_STR(e, "not a valid libpq connection string or URI");
	e = plan_refused("postgresql://u:" SECRET "@db/x?nosuchoption=1");
	CHECK_STR(e, "not a valid libpq connection string or URI");
	e = plan_refused("service=prod password=" SECRET);
	CHECK(strstr(e, "service is set"));
	CHECK(strstr(e, "prod") == NULL);
	CHECK(strstr(e, "service files"));
	/* A dbname libpq would expand under expand_dbname (issue 15). */
	e = plan_refused("host=db dbname='host=db password=" SECRET "'");
	CHECK(strstr(e, "dbname is a connection string"));
	CHECK(strstr(e, SECRET) == NULL);
	e = plan_refused("postgresql://db/postgresql%3A%2F%2Fapp%3A" SECRET
			 "%40db%2Fapp");
	CHECK(strstr(e, "dbname is a connection string"));
	e = plan_refused("postgresql://db/x?dbname=password%3D" SECRET);
	CHECK(strstr(e, "dbname is a connection string"));
	connplan_free(plan_ok("host=db dbname=my-app_db"));
	/* Issue 15: libpq's messages would quote these; ours name the
	 * setting and quote nothing. */
	e = plan_refused("host=db port=" SECRET " password=" SECRET);
	CHECK_STR(e, "port 1 of 1 is not a number from 1 to 65535 (not "
		     "shown: a mistyped value can put a password there)");
	e = plan_refused("postgresql://app:" SECRET "/db");
	CHECK(strstr(e, "port 1 of 1 is not a number"));
	e = plan_refused("host=a,b port=5432,x" SECRET);
	CHECK(strstr(e, "port 2 of 2 is not a number"));
	e = plan_refused("host=db port=70000");
	CHECK(strstr(e, "port 1 of 1"));
	e = plan_refused("host=db sslmode=" SECRET);
	CHECK_STR(e, "sslmode is not one of disable, allow, prefer, require, "
		     "verify-ca, verify-full (not shown)");
	e = plan_refused("host=db target_session_attrs=" SECRET);
	CHECK(strstr(e, "target_session_attrs is not one of any,"));
	e = plan_refused("host=db connect_timeout=" SECRET);
	CHECK_STR(e, "connect_timeout is not a whole number (not shown)");
	e = plan_refused("host=db hostaddr=" SECRET);
	CHECK_STR(e, "hostaddr 1 of 1 is not a numeric address (not shown)");
	e = plan_refused("host=db ssl_min_protocol_version=" SECRET);
	CHECK(strstr(e, "ssl_min_protocol_version is not one of TLSv1,"));
	/* A raw '@' or '/' in a URI's password: libpq takes the tail for
	 * the host or the database. */
	e = plan_refused("postgresql://app:" SECRET "@x" SECRET "@db/x");
	CHECK(strstr(e, "user info is ambiguous"));
	e = plan_refused("postgresql://app:" SECRET "/x" SECRET "@db/x");
	CHECK(strstr(e, "user info is ambiguous"));
	e = plan_refused("postgresql://db?password=" SECRET "@x" SECRET);
	CHECK(strstr(e, "user info is ambiguous"));
	connplan_free(plan_ok("postgresql://app:" SECRET "@db/x?"
			      "application_name=a@b&sslmode=verify-full"));
	connplan_free(plan_ok("postgresql://app%40x:p%40ss@db:5432/x"));
	connplan_free(plan_ok("postgresql://db/x?password=a@b"));
	connplan_free(plan_ok("host=db port=' 5432 ' connect_timeout=10 "
			      "ssl_min_protocol_version=TLSv1.2"));
	setenv("PGSERVICE", "prod", 1);
	e = plan_refused("host=db password=" SECRET);
	CHECK(strstr(e, "PGSERVICE is set"));
	unsetenv("PGSERVICE");
}

static void mkfile(const char *path)
{
	FILE *f = fopen(path, "w");

	CHECK(f != NULL);
	if (f)
		fclose(f);
}

static void test_special_files(void)
{
	char fifo[256], sock[100], reg[256], dir[256], buf[1024], home[256];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct connplan *plan;
	const char *e;
	int fd;

	snprintf(fifo, sizeof(fifo), "%s/fifo", tmpdir);
	snprintf(sock, sizeof(sock), "%s/sock", tmpdir);
	snprintf(reg, sizeof(reg), "%s/root.crt", tmpdir);
	snprintf(dir, sizeof(dir), "%s/dir", tmpdir);
	CHECK_INT(mkfifo(fifo, 0600), ==, 0);
	CHECK_INT(mkdir(dir, 0700), ==, 0);
	mkfile(reg);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(strlen(sock) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);

	/* Regular and missing files are libpq's business. */
	snprintf(buf, sizeof(buf), "host=/tmp sslrootcert=%s sslcert=%s/none",
		 reg, tmpdir);
	plan = plan_ok(buf);
	connplan_free(plan);

	snprintf(buf, sizeof(buf), "host=/tmp password=" SECRET
		 " sslrootcert=%s", fifo);
	e = plan_refused(buf);
	snprintf(buf, sizeof(buf), "sslrootcert \"%s\" is a FIFO, not a "
		 "regular file", fifo);
	CHECK(strstr(e, buf));
	snprintf(buf, sizeof(buf), "host=/tmp sslkey=%s", sock);
	CHECK(strstr(plan_refused(buf), "sslkey \""));
	CHECK(strstr(plan_refused(buf), "is a socket"));
	snprintf(buf, sizeof(buf), "host=/tmp passfile=%s", dir);
	CHECK(strstr(plan_refused(buf), "is a directory"));
	snprintf(buf, sizeof(buf), "host=/tmp sslcrl=/dev/null");
	CHECK(strstr(plan_refused(buf), "sslcrl \"/dev/null\" is a character "
		     "device"));
	/* The agent's PG* variable, when the value has none. */
	setenv("PGSSLCERT", fifo, 1);
	CHECK(strstr(plan_refused("host=/tmp"), "sslcert \""));
	unsetenv("PGSSLCERT");
	/* libpq's default under the home directory. */
	snprintf(home, sizeof(home), "%s/.postgresql", tmpdir);
	CHECK_INT(mkdir(home, 0700), ==, 0);
	snprintf(home, sizeof(home), "%s/.postgresql/root.crt", tmpdir);
	CHECK_INT(mkfifo(home, 0600), ==, 0);
	e = plan_refused("host=/tmp");
	CHECK(strstr(e, "sslrootcert \""));
	CHECK(strstr(e, "/.postgresql/root.crt\" is a FIFO"));
	/* The value naming another file is fine. */
	snprintf(buf, sizeof(buf), "host=/tmp sslrootcert=%s", reg);
	plan = plan_ok(buf);
	connplan_free(plan);
	unlink(home);
	close(fd);
}

static void test_labels(void)
{
	struct connplan *plan = plan_ok("host='db.example,a b," SECRET
					",/run/pg,10.0.0.1' password=" SECRET);
	char buf[64];

	if (!plan)
		return;
	CHECK_STR(connplan_label(plan, 0, buf, sizeof(buf)),
		  "\"db.example\"");
	CHECK_STR(connplan_label(plan, 1, buf, sizeof(buf)), "host 2 of 5");
	/* The password itself as a host: never named. */
	CHECK_STR(connplan_label(plan, 2, buf, sizeof(buf)), "host 3 of 5");
	CHECK_STR(connplan_label(plan, 3, buf, sizeof(buf)), "\"/run/pg\"");
	CHECK_STR(connplan_label(plan, 4, buf, sizeof(buf)), "\"10.0.0.1\"");
	connplan_free(plan);
	plan = plan_ok("dbname=x");
	if (!plan)
		return;
	CHECK_STR(connplan_label(plan, 0, buf, sizeof(buf)),
		  "the default host");
	connplan_free(plan);
}

static void test_name_hosts(void)
{
	struct connplan *plan = plan_ok("host=db.example,192.0.2.9,"
					"twin.example,other.example port=1");
	const char *a0[] = { "192.0.2.1", "192.0.2.5" };
	const char *a2[] = { "192.0.2.5" };
	const char *a3[] = { "192.0.2.9" };
	char out[512];

	if (!plan)
		return;
	CHECK_INT(connplan_set_addrs(plan, 0, a0, 2), ==, 0);
	CHECK_INT(connplan_set_addrs(plan, 2, a2, 1), ==, 0);
	CHECK_INT(connplan_set_addrs(plan, 3, a3, 1), ==, 0);
	connplan_name_hosts(plan, 0, 4,
			    "connection to server at \"192.0.2.1\", port 1 "
			    "failed: Connection refused\n\tIs the server "
			    "running?\nconnection to server at \"192.0.2.5\", "
			    "port 1 failed: timeout\nconnection to server at "
			    "\"192.0.2.9\", port 1 failed: x\n", out,
			    sizeof(out));
	/* 192.0.2.5 is both db and twin, 192.0.2.9 also a numeric host:
	 * those stay as libpq wrote them. */
	CHECK_STR(out, "connection to server at \"db.example\" (192.0.2.1), "
		       "port 1 failed: Connection refused\n\tIs the server "
		       "running?\nconnection to server at \"192.0.2.5\", port "
		       "1 failed: timeout\nconnection to server at "
		       "\"192.0.2.9\", port 1 failed: x\n");
	/* Only the range counts. */
	connplan_name_hosts(plan, 3, 4, "server at \"192.0.2.9\", port 1",
			    out, sizeof(out));
	CHECK_STR(out, "server at \"other.example\" (192.0.2.9), port 1");
	/* Cut, not overrun. */
	connplan_name_hosts(plan, 3, 4, "server at \"192.0.2.9\", port 1",
			    out, 20);
	CHECK_STR(out, "server at \"other.ex");
	connplan_name_hosts(plan, 0, 4, "no server here", out, sizeof(out));
	CHECK_STR(out, "no server here");
	connplan_free(plan);
}

/* The probe gives up addresses libpq has tried and finds which one libpq
 * is on from PQhost(), PQhostaddr() and PQport(). */
static void test_skip_and_locate(void)
{
	struct connplan *plan = plan_ok(
		"host=db.example,10.0.0.5,/run/postgresql,,db.example "
		"port=1,2,3,4,5 password=" SECRET);
	const char *a0[] = { "192.0.2.1", "2001:db8::1" };
	const char *a4[] = { "192.0.2.1" };
	const char *const *k, *const *v;
	size_t e, a;

	if (!plan)
		return;
	CHECK_INT(connplan_addrs(plan, 0), ==, 0); /* still looked up */
	CHECK_INT(connplan_set_addrs(plan, 0, a0, 2), ==, 0);
	CHECK_INT(connplan_set_addrs(plan, 4, a4, 1), ==, 0);
	CHECK_INT(connplan_addrs(plan, 0), ==, 2);
	CHECK_INT(connplan_addrs(plan, 1), ==, 1);
	CHECK_INT(connplan_addrs(plan, 2), ==, 1);

	/* Addresses match as addresses, however libpq writes them. */
	e = 0, a = 0;
	CHECK_INT(connplan_locate(plan, 5, "db.example", "2001:0db8:0::1", "1",
				  &e, &a), ==, 0);
	CHECK_INT(e, ==, 0);
	CHECK_INT(a, ==, 1);
	/* A socket has no address; a plan's empty host or port matches what
	 * libpq makes of it. */
	e = 0, a = 0;
	CHECK_INT(connplan_locate(plan, 5, "/run/postgresql", "", "3", &e, &a),
		  ==, 0);
	CHECK_INT(e, ==, 2);
	CHECK_INT(connplan_locate(plan, 5, "/var/run/postgresql", "", "4", &e,
				  &a), ==, 0);
	CHECK_INT(e, ==, 3);
	/* One name twice: the port tells them apart, and the search goes
	 * forward only. */
	e = 0, a = 0;
	CHECK_INT(connplan_locate(plan, 5, "db.example", "192.0.2.1", "5", &e,
				  &a), ==, 0);
	CHECK_INT(e, ==, 4);
	CHECK_INT(a, ==, 0);
	e = 0, a = 1;
	CHECK_INT(connplan_locate(plan, 5, "db.example", "192.0.2.1", "1", &e,
				  &a), ==, -ENOENT);
	e = 0, a = 0;
	CHECK_INT(connplan_locate(plan, 5, "10.0.0.5", "10.0.0.5", "9", &e,
				  &a), ==, -ENOENT);
	CHECK_INT(connplan_locate(plan, 1, "10.0.0.5", "10.0.0.5", "2", &e,
				  &a), ==, -ENOENT);

	/* Given up addresses are left out; with the last, the entry. */
	connplan_skip(plan, 0, 1);
	CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_READY);
	CHECK_INT(connplan_params(plan, 0, 2, NULL, NULL, &k, &v), ==, 0);
	CHECK_STR(param(k, v, "host"), "db.example,10.0.0.5");
	CHECK_STR(param(k, v, "hostaddr"), "2001:db8::1,10.0.0.5");
	CHECK_STR(param(k, v, "port"), "1,2");
	e = 0, a = 0;
	CHECK_INT(connplan_locate(plan, 5, "db.example", "192.0.2.1", "1", &e,
				  &a), ==, -ENOENT);
	connplan_skip(plan, 0, 2);
	CHECK_INT(connplan_state(plan, 0), ==, CONNPLAN_FAILED);
	CHECK_INT(connplan_addrs(plan, 0), ==, 0);
	CHECK_INT(connplan_params(plan, 0, 2, NULL, NULL, &k, &v), ==, 0);
	CHECK_STR(param(k, v, "host"), "10.0.0.5");
	connplan_skip(plan, 1, 1);
	CHECK_INT(connplan_params(plan, 0, 2, NULL, NULL, &k, &v), ==, -ENOENT);
	connplan_free(plan);
}

/* libpq itself takes the arrays: lists of matching lengths, each entry
 * tried by its address (nothing listens on port 1, so each fails at
 * once; nothing is looked up). */
static void test_libpq_accepts(void)
{
	struct connplan *plan = plan_ok("host=one.example,127.0.0.1 port=1 "
					"connect_timeout=2 user=u");
	const char *addrs[] = { "127.0.0.1", "::1" };
	const char *const *k, *const *v;
	PGconn *conn;

	if (!plan)
		return;
	CHECK_INT(connplan_set_addrs(plan, 0, addrs, 2), ==, 0);
	CHECK_INT(connplan_params(plan, 0, 2, NULL, NULL, &k, &v), ==, 0);
	conn = PQconnectStartParams(k, v, 0);
	CHECK(conn != NULL);
	if (conn) {
		const char *msg = PQerrorMessage(conn);
		CHECK(strstr(msg, "could not match") == NULL);
		CHECK(strstr(msg, "invalid") == NULL);
		/* The name, not the address, is what libpq calls the host. */
		CHECK_STR(PQhost(conn), "one.example");
		PQfinish(conn);
	}
	connplan_free(plan);
}

int main(void)
{
	check_watchdog(30);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	setenv("HOME", tmpdir, 1);
	unsetenv("PGHOST");
	unsetenv("PGHOSTADDR");
	unsetenv("PGPORT");
	unsetenv("PGSERVICE");
	unsetenv("PGGSSENCMODE");
	unsetenv("PGSSLCERT");
	unsetenv("PGSSLKEY");
	unsetenv("PGSSLROOTCERT");
	unsetenv("PGSSLCRL");
	unsetenv("PGPASSFILE");

	RUN(test_one_name);
	RUN(test_mixed_list);
	RUN(test_hostaddr_and_ports);
	RUN(test_caps);
	RUN(test_environment);
	RUN(test_refusals);
	RUN(test_special_files);
	RUN(test_labels);
	RUN(test_name_hosts);
	RUN(test_skip_and_locate);
	RUN(test_libpq_accepts);

	char cmd[sizeof(tmpdir) + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return check_exit();
}

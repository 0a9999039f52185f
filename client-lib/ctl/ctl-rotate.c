/*
 * dbswapctl rotate: a new password, changed on the server, written into
 * the env file, followed until every subscriber acked it.
 *
 *   dbswapctl rotate FILE TARGET --admin ADMIN_CONNINFO_FILE
 *                    [--strategy single|alternate] [--wait[=SECONDS]]
 *                    [--key KEYFILE] [--pubkey KEY] [--force]
 *
 * The password: ROTATE_PASSWORD_LEN characters of a URL-safe alphabet
 * from libsodium's randombytes_buf (192 bits), safe unquoted in a URI.
 * The server gets a SCRAM verifier made here (PQencryptPasswordConn), so
 * the plaintext reaches neither the server nor its logs.  The admin
 * connection's conninfo is read from a file (never argv); libpq's
 * messages about it are scrubbed of its secrets (mask_secrets(),
 * pqerr_scrub()) before anything prints them.
 *
 * The order is chosen so that no validation fails on the way: the file
 * is read and checked first (nothing changed if that fails), then the
 * server, then the file, so the agent's first validation of the new
 * value succeeds.
 *
 * single: ALTER ROLE role PASSWORD, then the file.  From ALTER on, the
 * old password logs in no more; sessions opened with it live on (the
 * server never ends a session for a password change), and the apps move
 * to the new value within milliseconds of the write.  A pool that opens a
 * connection in between with the old value sees it refused once.
 *
 * alternate: two login roles NAME_a and NAME_b, members of a group role
 * that holds the privileges.  The target uses one; rotate gives the other
 * a new password and LOGIN, points the target at it (user and password of
 * its conninfo), waits for every subscriber's ack, and only then disables
 * the old one (NOLOGIN and a random password nobody knows).  If the wait
 * ends otherwise (timeout, rejection, agent gone), the old role keeps its
 * login and rotate says so: nothing has proved it unused.
 *
 * The target must be defined in FILE as one conninfo (a URI or key=value
 * form) naming its user; a value that takes parts from another file
 * (${NAME} defined below FILE) is refused, since rotate writes the target
 * whole.  The secondary (TARGET_SECONDARY), when FILE defines it with the
 * same user, gets the same credentials: a role's password is the same on
 * a replica.
 */
#include <fcntl.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/env.h"
#include "common/envedit.h"
#include "common/mask.h"
#include "common/pqerr.h"
#include "common/util.h"
#include "ctl.h"

/* 32 characters of 64 possible: 192 bits, more than any attack needs. */
#define ROTATE_PASSWORD_LEN 32
/* An admin conninfo file is one line; a few KiB is already generous. */
#define ROTATE_ADMIN_MAX 4096
/* PostgreSQL's NAMEDATALEN - 1. */
#define ROTATE_ROLE_MAX 63
/* The admin connection's connect_timeout unless its conninfo says. */
#define ROTATE_CONNECT_TIMEOUT "10"

enum rotate_strategy { ROTATE_SINGLE, ROTATE_ALTERNATE };

struct rotate {
	const char *socket;
	const char *file, *target, *admin_path;
	const char *key, *pubkey;
	bool force, wait;
	bool allow_no_subs; /* alternate: revoke with no subscriber's ack */
	int wait_s;
	enum rotate_strategy strategy;
	int64_t start_us;

	char *admin;                       /* the admin conninfo: secret */
	struct mask_secrets admin_secrets; /* what of it never prints */
	PGconn *conn;

	char old_role[ROTATE_ROLE_MAX + 1], new_role[ROTATE_ROLE_MAX + 1];
	char *password; /* the new one: secret */
	bool altered;   /* the server has it */
	bool revoke_pending; /* alternate: the old role still logs in */

	struct envedit_change changes[2];
	char *values[2]; /* secret */
	char secondary[IPC_NAME_MAX + sizeof("_SECONDARY")];
	size_t n;
};

/* For the atexit note: set --wait's machinery exits on a rejection. */
static struct rotate *rotate_current;

static void say(const struct rotate *r, const char *fmt, ...) PRINTF(2, 3);
static void say(const struct rotate *r, const char *fmt, ...)
{
	va_list ap;

	printf("[%.3fs] ", (double)(now_us() - r->start_us) / 1e6);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void rotate_not_revoked(void)
{
	struct rotate *r = rotate_current;

	if (!r || !r->revoke_pending)
		return;
	fflush(stdout);
	fprintf(stderr, "dbswapctl rotate: %s keeps its login: nothing "
			"proved that no app uses it; %s holds %s now.  Run "
			"rotate again once every subscriber follows, or disable "
			"%s by hand (ALTER ROLE %s NOLOGIN)\n",
		r->old_role, r->file, r->new_role, r->old_role, r->old_role);
}

static void usage_error(const char *what)
{
	fprintf(stderr, "dbswapctl rotate: %s\n"
			"usage: rotate FILE TARGET --admin CONNINFO_FILE "
			"[--strategy single|alternate] [--wait[=SECONDS]] "
			"[--allow-no-subscribers]\n",
		what);
}

static int parse_args(int argc, char **argv, struct rotate *r)
{
	const char *strategy = "single";
	int w;

	r->wait_s = CTL_WAIT_DEFAULT_S;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (streq(a, "--admin") && i + 1 < argc) {
			r->admin_path = argv[++i];
		} else if (strncmp(a, "--admin=", 8) == 0) {
			r->admin_path = a + 8;
		} else if (streq(a, "--strategy") && i + 1 < argc) {
			strategy = argv[++i];
		} else if (strncmp(a, "--strategy=", 11) == 0) {
			strategy = a + 11;
		} else if (streq(a, "--key") && i + 1 < argc) {
			r->key = argv[++i];
		} else if (strncmp(a, "--key=", 6) == 0) {
			r->key = a + 6;
		} else if (streq(a, "--pubkey") && i + 1 < argc) {
			r->pubkey = argv[++i];
		} else if (strncmp(a, "--pubkey=", 9) == 0) {
			r->pubkey = a + 9;
		} else if (streq(a, "--force")) {
			r->force = true;
		} else if (streq(a, "--allow-no-subscribers")) {
			r->allow_no_subs = true;
		} else if ((w = ctl_wait_arg("rotate", a, &r->wait,
					     &r->wait_s)) != 0) {
			if (w < 0)
				return -EINVAL;
		} else if (a[0] == '-' && a[1] == '-') {
			fprintf(stderr, "dbswapctl rotate: unknown option %s\n",
				a);
			return -EINVAL;
		} else if (!r->file) {
			r->file = a;
		} else if (!r->target) {
			r->target = a;
		} else {
			fprintf(stderr, "dbswapctl rotate: one TARGET at a "
					"time (%s?)\n", a);
			return -EINVAL;
		}
	}
	if (!r->file || !r->target) {
		usage_error("which FILE and TARGET?");
		return -EINVAL;
	}
	if (!r->admin_path) {
		usage_error("--admin CONNINFO_FILE is needed: a file holding "
			    "the conninfo of a role that may ALTER ROLE");
		return -EINVAL;
	}
	if (strlen(r->target) > IPC_NAME_MAX) {
		fprintf(stderr, "dbswapctl rotate: a target name has at most "
				"%d bytes\n", IPC_NAME_MAX);
		return -EINVAL;
	}
	if (streq(strategy, "single")) {
		r->strategy = ROTATE_SINGLE;
	} else if (streq(strategy, "alternate")) {
		r->strategy = ROTATE_ALTERNATE;
		/* the old role is disabled only on proof: always wait */
		r->wait = true;
	} else {
		fprintf(stderr, "dbswapctl rotate: --strategy %s: single or "
				"alternate\n", strategy);
		return -EINVAL;
	}
	return 0;
}

/* The admin connection */

/* Reads the admin conninfo file: one conninfo, trailing blanks and line
 * breaks dropped.  A file others may read is refused: it holds a
 * password that can change every role's. */
static int read_admin(struct rotate *r)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t len = 0;
	int fd = file_open_regular(r->admin_path, &st), e;

	if (fd < 0) {
		fprintf(stderr, "dbswapctl rotate: --admin %s: %s\n",
			r->admin_path,
			fd == -EINVAL ? "not a regular file" : strerror(-fd));
		return -1;
	}
	if (st.st_mode & (S_IROTH | S_IWOTH)) {
		fprintf(stderr, "dbswapctl rotate: --admin %s is readable or "
				"writable by others (mode %04o): it holds the "
				"admin password; chmod o-rw it\n",
			r->admin_path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	e = ctl_read_all(fd, ROTATE_ADMIN_MAX, &buf, &len);
	close(fd);
	if (e < 0) {
		fprintf(stderr, "dbswapctl rotate: --admin %s: %s\n",
			r->admin_path,
			e == -EFBIG ? "too big for a conninfo" : strerror(-e));
		return -1;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
			   buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		buf[--len] = '\0';
	r->admin = (char *)buf;
	if (len == 0 || memchr(buf, '\0', len) ||
	    mask_secrets(r->admin, &r->admin_secrets) < 0 ||
	    !r->admin_secrets.parsed) {
		/* never quoted: it may be all password */
		fprintf(stderr, "dbswapctl rotate: --admin %s: not a libpq "
				"connection string\n", r->admin_path);
		return -1;
	}
	return 0;
}

/* A libpq message, one line, without the admin's password, nor the new
 * one. */
static void clean_pq(const struct rotate *r, const char *raw, char *out,
		     size_t size)
{
	size_t n = r->admin_secrets.n, big = strlen(raw) * 2 + 8;
	char **secrets = malloc((n + 1) * sizeof(*secrets));
	char *scrubbed = malloc(big), sqlstate[6];

	if (!secrets || !scrubbed) {
		free(secrets);
		free(scrubbed);
		snprintf(out, size, "(out of memory)");
		return;
	}
	for (size_t i = 0; i < n; i++)
		secrets[i] = r->admin_secrets.s[i];
	if (r->password)
		secrets[n++] = r->password;
	pqerr_scrub(raw, scrubbed, big, secrets, n);
	pqerr_line(scrubbed, out, size, sqlstate);
	free(scrubbed);
	free(secrets);
}

static int admin_connect(struct rotate *r)
{
	/* The file's settings win over these (expand_dbname: later ones
	 * win), but a dead host must not hang rotate without end. */
	const char *const keys[] = { "connect_timeout", "application_name",
				     "dbname", NULL };
	const char *const vals[] = { ROTATE_CONNECT_TIMEOUT, "dbswapctl rotate",
				     r->admin, NULL };
	char msg[1024];

	r->conn = PQconnectdbParams(keys, vals, 1);
	if (!r->conn || PQstatus(r->conn) != CONNECTION_OK) {
		clean_pq(r, r->conn ? PQerrorMessage(r->conn) : "out of memory",
			 msg, sizeof(msg));
		fprintf(stderr, "dbswapctl rotate: the admin connection (--admin "
				"%s) failed: %s\n", r->admin_path, msg);
		return -1;
	}
	say(r, "connected to the server as %s", PQuser(r->conn));
	return 0;
}

/* Runs sql (which holds a verifier: wiped by the caller) on the admin
 * connection; what names the statement in a failure. */
static int admin_exec(struct rotate *r, const char *sql, const char *what)
{
	PGresult *res;
	char msg[1024];

	/* An admin connection idle through a long wait may have been ended
	 * by the server: one new try. */
	if (PQstatus(r->conn) != CONNECTION_OK)
		PQreset(r->conn);
	res = PQexec(r->conn, sql);
	if (PQresultStatus(res) == PGRES_COMMAND_OK) {
		PQclear(res);
		return 0;
	}
	clean_pq(r, res ? PQresultErrorMessage(res) : PQerrorMessage(r->conn),
		 msg, sizeof(msg));
	PQclear(res);
	fprintf(stderr, "dbswapctl rotate: %s failed: %s\n", what, msg);
	return -1;
}

/* Whether role exists on the server (1), not (0), or -1 after saying why
 * the question failed. */
static int role_exists(struct rotate *r, const char *role)
{
	const char *params[] = { role };
	PGresult *res = PQexecParams(r->conn,
				     "SELECT 1 FROM pg_roles WHERE rolname = $1",
				     1, NULL, params, NULL, NULL, 0);
	char msg[1024];
	int ret;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		clean_pq(r, PQresultErrorMessage(res), msg, sizeof(msg));
		fprintf(stderr, "dbswapctl rotate: looking up role %s failed: "
				"%s\n", role, msg);
		ret = -1;
	} else {
		ret = PQntuples(res) > 0;
	}
	PQclear(res);
	return ret;
}

/* The group roles role is a member of, sorted, one per row; NULL after
 * saying why the question failed. */
static PGresult *role_groups(struct rotate *r, const char *role)
{
	const char *params[] = { role };
	PGresult *res = PQexecParams(
		r->conn,
		"SELECT g.rolname FROM pg_auth_members m "
		"JOIN pg_roles g ON g.oid = m.roleid "
		"JOIN pg_roles u ON u.oid = m.member "
		"WHERE u.rolname = $1 ORDER BY 1",
		1, NULL, params, NULL, NULL, 0);
	char msg[1024];

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		return res;
	clean_pq(r, PQresultErrorMessage(res), msg, sizeof(msg));
	fprintf(stderr, "dbswapctl rotate: looking up the groups of %s "
			"failed: %s\n", role, msg);
	PQclear(res);
	return NULL;
}

/* Prints the groups of a that b is not in, each after sep; how many. */
static int groups_missing(PGresult *a, PGresult *b, const char *b_name)
{
	int missing = 0;

	for (int i = 0; i < PQntuples(a); i++) {
		const char *g = PQgetvalue(a, i, 0);
		bool found = false;
		for (int j = 0; j < PQntuples(b) && !found; j++)
			found = streq(g, PQgetvalue(b, j, 0));
		if (found)
			continue;
		fprintf(stderr, "%s%s", missing ? ", " : "", g);
		missing++;
	}
	if (missing)
		fprintf(stderr, " (not a group of %s)", b_name);
	return missing;
}

/* alternate: whether the two roles are members of the same groups (the
 * privileges the pair shares); 0, or -1 after naming the difference.  A
 * role in fewer groups would lose privileges when the target moves to
 * it; one in more would gain some. */
static int same_groups(struct rotate *r)
{
	PGresult *o = role_groups(r, r->old_role), *n;
	int ret = -1;

	if (!o)
		return -1;
	n = role_groups(r, r->new_role);
	if (n) {
		bool differ = PQntuples(o) != PQntuples(n);
		for (int i = 0; !differ && i < PQntuples(o); i++)
			differ = !streq(PQgetvalue(o, i, 0),
					PQgetvalue(n, i, 0));
		if (!differ) {
			ret = 0;
		} else {
			fprintf(stderr, "dbswapctl rotate: %s and %s are not "
					"members of the same group roles: ",
				r->old_role, r->new_role);
			int m = groups_missing(o, n, r->new_role);
			if (groups_missing(n, o, r->old_role) + m == 0)
				fputs("(a group twice?)", stderr);
			fprintf(stderr, "; --strategy alternate needs the "
					"pair to share their privileges through "
					"the same groups (GRANT group TO role); "
					"nothing changed\n");
		}
	}
	PQclear(o);
	PQclear(n);
	return ret;
}

/* A random password of ROTATE_PASSWORD_LEN characters from a URL-safe
 * alphabet: 64 characters, so each byte's low 6 bits pick one without
 * bias. */
static char *new_password(void)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				       "abcdefghijklmnopqrstuvwxyz"
				       "0123456789-_";
	uint8_t rnd[ROTATE_PASSWORD_LEN];
	char *pw = malloc(ROTATE_PASSWORD_LEN + 1);

	if (!pw)
		return NULL;
	randombytes_buf(rnd, sizeof(rnd));
	for (size_t i = 0; i < ROTATE_PASSWORD_LEN; i++)
		pw[i] = alphabet[rnd[i] & 63];
	pw[ROTATE_PASSWORD_LEN] = '\0';
	sodium_memzero(rnd, sizeof(rnd));
	return pw;
}

/* ALTER ROLE role [WITH opts] PASSWORD '<SCRAM verifier of password>'. */
static int alter_role(struct rotate *r, const char *role, const char *opts,
		      const char *password)
{
	char what[ROTATE_ROLE_MAX + 64];
	char *verifier, *ident = NULL, *lit = NULL, *sql = NULL;
	int ret = -1;

	snprintf(what, sizeof(what), "ALTER ROLE %s", role);
	verifier = PQencryptPasswordConn(r->conn, password, role,
					 "scram-sha-256");
	if (!verifier) {
		char msg[1024];
		clean_pq(r, PQerrorMessage(r->conn), msg, sizeof(msg));
		fprintf(stderr, "dbswapctl rotate: making the SCRAM verifier "
				"for %s failed: %s\n", role, msg);
		return -1;
	}
	ident = PQescapeIdentifier(r->conn, role, strlen(role));
	lit = PQescapeLiteral(r->conn, verifier, strlen(verifier));
	if (ident && lit) {
		set_strf(&sql, "ALTER ROLE %s WITH %s PASSWORD %s", ident, opts,
			 lit);
		if (sql)
			ret = admin_exec(r, sql, what);
	}
	if (!ident || !lit || !sql)
		fprintf(stderr, "dbswapctl rotate: %s: out of memory\n", what);
	/* a verifier is not the password, but no more lying around than
	 * needed */
	explicit_bzero(verifier, strlen(verifier));
	PQfreemem(verifier);
	PQfreemem(ident);
	if (lit)
		explicit_bzero(lit, strlen(lit));
	PQfreemem(lit);
	free_secret(sql);
	return ret;
}

/* The target's conninfo */

static const char *opt_val(const PQconninfoOption *opts, const char *key)
{
	for (; opts && opts->keyword; opts++)
		if (streq(opts->keyword, key))
			return opts->val;
	return NULL;
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && streq(a, b));
}

/* Whether libpq reads updated as old with user and password replaced,
 * nothing else changed. */
static bool conninfo_checks(const char *old, const char *updated,
			    const char *user, const char *password)
{
	PQconninfoOption *a = PQconninfoParse(old, NULL);
	PQconninfoOption *b = PQconninfoParse(updated, NULL);
	bool ok = a && b;

	for (PQconninfoOption *o = a; ok && o->keyword; o++) {
		const char *v = opt_val(b, o->keyword);
		if (streq(o->keyword, "user"))
			ok = same(v, user);
		else if (streq(o->keyword, "password"))
			ok = same(v, password);
		else
			ok = same(o->val, v);
	}
	PQconninfoFree(a);
	PQconninfoFree(b);
	return ok;
}

static void put_pct(char **s, const char *v)
{
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;
		char *next = NULL;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("-._~", c))
			set_strf(&next, "%s%c", *s, c);
		else
			set_strf(&next, "%s%%%02X", *s, c);
		free_secret(*s);
		*s = next;
		if (!next)
			return;
	}
}

/* A URI with new user info: what comes before the host replaced. */
static char *uri_with(const char *old, const char *user, const char *password)
{
	const char *sep = strstr(old, "://"), *p, *end, *at = NULL;
	char *s = NULL, *next = NULL;

	p = sep + 3;
	end = p + strcspn(p, "/?");
	for (const char *q = p; q < end; q++)
		if (*q == '@')
			at = q;
	set_strf(&s, "%.*s", (int)(p - old), old);
	if (!s)
		return NULL;
	put_pct(&s, user);
	if (!s)
		return NULL;
	/* the password's alphabet needs no escape in a URI */
	set_strf(&next, "%s:%s@%s", s, password, at ? at + 1 : p);
	free_secret(s);
	return next;
}

/* Appends v to *s in single quotes, as libpq's key=value form reads it. */
static void put_quoted(char **s, const char *v)
{
	char *next = NULL;

	set_strf(&next, "%s'", *s);
	free_secret(*s);
	*s = next;
	for (; *s && *v; v++) {
		next = NULL;
		set_strf(&next, "%s%s%c", *s,
			 *v == '\'' || *v == '\\' ? "\\" : "", *v);
		free_secret(*s);
		*s = next;
	}
	if (*s) {
		next = NULL;
		set_strf(&next, "%s'", *s);
		free_secret(*s);
		*s = next;
	}
}

/* key=value form with the values of user and password replaced where
 * they are written (added at the end when absent), every other byte as it
 * was: libpq's syntax, keys and values separated by blanks, a value
 * unquoted or in single quotes, backslash escapes in both.  NULL when old
 * does not read that way (the caller then rebuilds it). */
static char *keyvalue_edit(const char *old, const char *user,
			   const char *password)
{
	const char *p = old, *copied = old;
	bool seen_user = false, seen_password = false;
	char *s = NULL, *next;

	set_strf(&s, "%s", "");
	while (s) {
		const char *key, *key_end, *val;
		const char *repl = NULL;

		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		key = p;
		while (*p && *p != '=' && *p != ' ' && *p != '\t')
			p++;
		key_end = p;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '=' || key_end == key)
			goto err;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		val = p;
		if (*p == '\'') {
			for (p++; *p && *p != '\''; p++)
				if (*p == '\\' && p[1])
					p++;
			if (*p != '\'')
				goto err;
			p++;
		} else {
			for (; *p && *p != ' ' && *p != '\t' && *p != '\n' &&
			       *p != '\r';
			     p++)
				if (*p == '\\' && p[1])
					p++;
		}
		if ((size_t)(key_end - key) == 4 && !strncmp(key, "user", 4)) {
			repl = user;
			seen_user = true;
		} else if ((size_t)(key_end - key) == 8 &&
			   !strncmp(key, "password", 8)) {
			repl = password;
			seen_password = true;
		}
		if (!repl)
			continue;
		next = NULL;
		set_strf(&next, "%s%.*s", s, (int)(val - copied), copied);
		free_secret(s);
		s = next;
		if (s)
			put_quoted(&s, repl);
		copied = p;
	}
	if (s) {
		next = NULL;
		set_strf(&next, "%s%s", s, copied);
		free_secret(s);
		s = next;
	}
	for (int i = 0; s && i < 2; i++) {
		const char *key = i == 0 ? "user" : "password";
		if (i == 0 ? seen_user : seen_password)
			continue;
		next = NULL;
		set_strf(&next, "%s %s=", s, key);
		free_secret(s);
		s = next;
		if (s)
			put_quoted(&s, i == 0 ? user : password);
	}
	return s;
err:
	free_secret(s);
	return NULL;
}

/* key=value form rebuilt from what libpq read of old, user and password
 * replaced: for a value keyvalue_edit cannot follow. */
static char *keyvalue_with(const char *old, const char *user,
			   const char *password)
{
	PQconninfoOption *opts = PQconninfoParse(old, NULL);
	char *s = NULL;

	if (!opts)
		return NULL;
	set_strf(&s, "%s", "");
	for (PQconninfoOption *o = opts; s && o->keyword; o++) {
		const char *v = streq(o->keyword, "user")	? user
				: streq(o->keyword, "password") ? password
								: o->val;
		char *next = NULL;
		if (!v)
			continue;
		set_strf(&next, "%s%s%s=", s, *s ? " " : "", o->keyword);
		free_secret(s);
		s = next;
		if (s)
			put_quoted(&s, v);
	}
	PQconninfoFree(opts);
	return s;
}

/* old with user and password replaced, in old's form (a URI stays a URI,
 * for the clients that take only URIs), checked by parsing it again.
 * NULL after saying why. */
static char *conninfo_with(const char *name, const char *old,
			   const char *user, const char *password)
{
	bool uri = strncmp(old, "postgresql://", 13) == 0 ||
		   strncmp(old, "postgres://", 11) == 0;
	char *s = uri ? uri_with(old, user, password)
		      : keyvalue_edit(old, user, password);

	if (s && conninfo_checks(old, s, user, password))
		return s;
	free_secret(s);
	if (!uri) {
		/* in libpq's order, every value quoted */
		s = keyvalue_with(old, user, password);
		if (s && conninfo_checks(old, s, user, password))
			return s;
		free_secret(s);
	}
	fprintf(stderr, "dbswapctl rotate: %s: cannot put new credentials "
			"into its conninfo without changing anything else%s\n",
		name, uri ? " (percent-encode what the URI's user info holds, "
			    "or write it in key=value form)"
			  : "");
	return NULL;
}

/* Reading the file */

struct decode_ctx {
	struct rotate *r;
	struct crypt_key *key;
};

/* Opens the encrypted values rotate reads (the target and its
 * secondary); the others stay as they are. */
static int decode_value(const char *name, const char *value, char **out,
			char *msg, size_t msglen, void *data)
{
	struct decode_ctx *d = data;

	if (!streq(name, d->r->target) && !streq(name, d->r->secondary)) {
		*out = strdup(value);
		return *out ? 0 : -ENOMEM;
	}
	if (!d->key) {
		snprintf(msg, msglen, "encrypted; rotate reads it with --key "
				      "KEYFILE");
		return -ENOKEY;
	}
	return crypt_open_value(&d->key, 1, value, out, msg, msglen);
}

/* The definition of name in f, checked to be whole in FILE; NULL when
 * none (and *bad set after saying why it cannot be used). */
static const struct env_entry *entry_in_file(const struct rotate *r,
					     const struct env_file *f,
					     const char *name, bool *bad)
{
	size_t i = env_file_index(f, name);
	const struct env_entry *e;

	if (i == ENV_REF_LOWER)
		return NULL;
	e = &f->entries[i];
	for (size_t j = 0; j < e->n_refs; j++) {
		if (e->refs[j].entry != ENV_REF_LOWER)
			continue;
		fprintf(stderr, "dbswapctl rotate: %s in %s takes ${%s} from "
				"outside the file; rotate writes %s whole: "
				"define it in %s without that\n",
			name, r->file, e->refs[j].name, name, r->file);
		*bad = true;
		return NULL;
	}
	return e;
}

/* The user a conninfo names, into user; false after saying why not. */
static bool conninfo_user(const char *name, const char *value, char *user,
			  size_t size)
{
	PQconninfoOption *opts = PQconninfoParse(value, NULL);
	const char *u = opt_val(opts, "user");
	bool ok = false;

	if (!opts)
		fprintf(stderr, "dbswapctl rotate: %s: not a libpq connection "
				"string\n", name);
	else if (!u || !*u)
		fprintf(stderr, "dbswapctl rotate: %s names no user; rotate "
				"changes the password of the user it names\n",
			name);
	else if (strlen(u) >= size)
		fprintf(stderr, "dbswapctl rotate: %s: user name too long\n",
			name);
	else {
		snprintf(user, size, "%s", u);
		ok = true;
	}
	PQconninfoFree(opts);
	return ok;
}

/* The role that takes over from user under the alternate strategy, into
 * r->new_role; false after saying why there is none. */
static bool pick_alternate(struct rotate *r)
{
	size_t n = strlen(r->old_role);
	const char *end = r->old_role + n - 2;

	if (n < 3 || (!streq(end, "_a") && !streq(end, "_b"))) {
		fprintf(stderr, "dbswapctl rotate: --strategy alternate: %s "
				"logs in as %s, not as NAME_a or NAME_b; create "
				"the pair first (dbswapctl(1), ROTATING "
				"PASSWORDS)\n",
			r->target, r->old_role);
		return false;
	}
	snprintf(r->new_role, sizeof(r->new_role), "%.*s_%c", (int)(n - 2),
		 r->old_role, end[1] == 'a' ? 'b' : 'a');
	return true;
}

/* How long the look before the change waits for an agent that is not
 * there (without --wait rotate works without one). */
#define ROTATE_LOOK_MS 1000

static void masked_user(const char *conninfo, char *user, size_t size);

/* Whether var is an entry rotate writes: the target, and its secondary
 * when FILE defines it with the same user. */
static bool rotate_writes(const struct rotate *r, const char *var)
{
	return streq(var, r->target) ||
	       (r->n == 2 && streq(var, r->secondary));
}

/* Whether the env file at path (readable here, not sealed as a whole)
 * defines var; false when that cannot be told. */
static bool file_defines(const char *path, const char *var)
{
	struct stat st;
	struct env_file f = { 0 };
	struct env_error err;
	uint8_t *buf = NULL;
	size_t len = 0;
	bool found = false;
	int fd = file_open_regular(path, &st);

	if (fd < 0)
		return false;
	if (ctl_read_all(fd, ENV_TOTAL_MAX, &buf, &len) == 0 &&
	    !crypt_is_sealed_file(buf, len) &&
	    env_parse((const char *)buf, len, NULL, NULL, &f, &err) == 0) {
		found = env_file_index(&f, var) != ENV_REF_LOWER;
		env_file_fini(&f);
	}
	close(fd);
	if (buf)
		explicit_bzero(buf, len);
	free(buf);
	return found;
}

/* Whether var's value, taken by the agent at its evaluation seq, came
 * from another file than want (a resolved path): true, with that file's
 * path.  Known when want was not read at seq but another file was, or
 * when a file after want in the agent's order (a later --env, which
 * wins) was read at the same seq (all files at start) and defines var.
 * Otherwise the check after the write decides. */
static bool other_file_of_seq(const msgpack_object *st, long long seq,
			      const char *want, const char *var, char *path,
			      size_t size)
{
	const msgpack_object *files = ctl_array(st, "files");
	char buf[4096];
	bool other = false, seen_want = false;

	for (uint32_t i = 0; seq >= 0 && files && i < files->via.array.size;
	     i++) {
		const msgpack_object *f = &files->via.array.ptr[i];
		char *real;
		if (ctl_int(f, "seq") != seq ||
		    !ctl_str(f, "path", buf, sizeof(buf)))
			continue;
		real = realpath(buf, NULL);
		if (real && streq(real, want)) {
			seen_want = true;
		} else if (!seen_want) {
			snprintf(path, size, "%s", buf);
			other = true;
		} else if (file_defines(buf, var)) {
			snprintf(path, size, "%s", buf);
			free(real);
			return true;
		}
		free(real);
	}
	return other && !seen_want;
}

/* Before anything changes: what the agent shows of the values in use.
 * Refuses (-1, after saying why) when a value the apps use would not
 * follow the change: the target's value coming from another file (a
 * later --env wins), or an entry rotate does not write logging in as the
 * old role (another target, a secondary defined elsewhere): its password
 * would die under it (single), or the old role could never be revoked
 * (alternate).  What this caller may not see is left to the checks
 * after the write. */
static int values_follow(const struct rotate *r)
{
	dbswap_client *c = ctl_connect_until(r->socket, "dbswapctl rotate",
					     now_ms() + ROTATE_LOOK_MS);
	const msgpack_object *targets;
	struct ipc_msg st;
	char name[IPC_NAME_MAX + 1], var[IPC_NAME_MAX + 1];
	char conninfo[4096], user[ROTATE_ROLE_MAX + 2], path[4096];
	char *want;
	int ret = 0;

	if (!c)
		return 0; /* no agent: nothing to look at */
	ctl_call(c, IPC_STATUS, &st);
	targets = ctl_array(&st.root.data, "targets");
	want = realpath(r->file, NULL);
	for (uint32_t i = 0; targets && i < targets->via.array.size; i++) {
		const msgpack_object *t = &targets->via.array.ptr[i];
		const msgpack_object *servers = ctl_array(t, "servers");

		if (!ctl_str(t, "name", name, sizeof(name)))
			continue;
		for (uint32_t j = 0; servers && j < servers->via.array.size;
		     j++) {
			const msgpack_object *s = &servers->via.array.ptr[j];
			if (!ctl_str(s, "var", var, sizeof(var)) ||
			    !ctl_str(s, "conninfo", conninfo,
				     sizeof(conninfo)))
				continue;
			masked_user(conninfo, user, sizeof(user));
			if (rotate_writes(r, var)) {
				/* in use from another file? */
				if (want &&
				    other_file_of_seq(&st.root.data,
						      ctl_int(s, "value_seq"),
						      want, var, path,
						      sizeof(path))) {
					fprintf(stderr,
						"dbswapctl rotate: the agent's "
						"%s comes from %s, not %s (a "
						"later --env wins): the apps "
						"would not follow; rotate %s "
						"instead; nothing changed\n",
						var, path, r->file, path);
					ret = -1;
				}
			} else if (streq(user, r->old_role)) {
				fprintf(stderr, "dbswapctl rotate: %s (of "
						"target %s) also logs in as %s "
						"and rotate does not change it: "
						"%s; nothing changed\n",
					var, name, r->old_role,
					r->strategy == ROTATE_SINGLE
						? "its password would stop "
						  "working"
						: "the old role could never be "
						  "revoked");
				ret = -1;
			}
		}
	}
	free(want);
	ipc_msg_fini(&st);
	dbswap_client_free(c);
	return ret;
}

/* set's prepare step: reads the target from the file, changes the
 * server, returns the new values. */
static int prepare(const char *text, size_t len, struct crypt_key *key,
		   void *data, const struct envedit_change **changes,
		   size_t *n)
{
	struct rotate *r = data;
	struct decode_ctx d = { .r = r, .key = key };
	struct env_parse_opts opts = { .decode = decode_value, .data = &d,
				       .refs = true };
	struct env_file f = { 0 };
	struct env_error err;
	const struct env_entry *e, *sec;
	char sec_user[ROTATE_ROLE_MAX + 1];
	const char *what;
	bool bad = false;
	int ret = EXIT_REFUSED, x;

	if (env_parse_with(text, len, &opts, &f, &err) < 0) {
		fprintf(stderr, "dbswapctl rotate: %s:%u:%u: %s\n", r->file,
			err.line, err.column, err.message);
		return EXIT_REFUSED;
	}
	e = entry_in_file(r, &f, r->target, &bad);
	if (!e) {
		if (!bad)
			fprintf(stderr, "dbswapctl rotate: %s does not define "
					"%s\n", r->file, r->target);
		goto out;
	}
	if (!conninfo_user(r->target, e->value, r->old_role,
			   sizeof(r->old_role)))
		goto out;
	sec = entry_in_file(r, &f, r->secondary, &bad);
	if (bad)
		goto out;
	if (sec && !conninfo_user(r->secondary, sec->value, sec_user,
				  sizeof(sec_user)))
		goto out;
	if (sec && !streq(sec_user, r->old_role)) {
		printf("note: %s logs in as %s, not %s: left as it is\n",
		       r->secondary, sec_user, r->old_role);
		sec = NULL;
	}
	if (r->strategy == ROTATE_ALTERNATE && !pick_alternate(r))
		goto out;
	if (r->strategy == ROTATE_SINGLE)
		snprintf(r->new_role, sizeof(r->new_role), "%s", r->old_role);

	r->password = new_password();
	if (!r->password)
		goto out;
	r->changes[0].name = r->target;
	r->values[0] = conninfo_with(r->target, e->value, r->new_role,
				     r->password);
	if (!r->values[0])
		goto out;
	r->n = 1;
	if (sec) {
		r->changes[1].name = r->secondary;
		r->values[1] = conninfo_with(r->secondary, sec->value,
					     r->new_role, r->password);
		if (!r->values[1])
			goto out;
		r->n = 2;
	}
	for (size_t i = 0; i < r->n; i++)
		r->changes[i].value = r->values[i];

	/* Everything about the file is known to work: then what the agent
	 * uses, then the server. */
	if (values_follow(r) < 0 || admin_connect(r) < 0)
		goto out;
	if (r->strategy == ROTATE_ALTERNATE) {
		x = role_exists(r, r->new_role);
		if (x <= 0) {
			if (x == 0)
				fprintf(stderr, "dbswapctl rotate: role %s does "
						"not exist; --strategy alternate "
						"needs %s and %s (dbswapctl(1), "
						"ROTATING PASSWORDS)\n",
					r->new_role, r->old_role, r->new_role);
			goto out;
		}
		if (same_groups(r) < 0)
			goto out;
		what = "LOGIN";
	} else {
		what = "";
	}
	if (alter_role(r, r->new_role, what, r->password) < 0)
		goto out;
	r->altered = true;
	if (r->strategy == ROTATE_SINGLE) {
		say(r, "password of %s changed on the server: the old password "
		       "no longer logs in (sessions opened with it live on)",
		    r->new_role);
	} else {
		r->revoke_pending = true;
		say(r, "%s has a new password and may log in; %s still may",
		    r->new_role, r->old_role);
	}
	*changes = r->changes;
	*n = r->n;
	ret = EXIT_SUCCESS;
out:
	env_file_fini(&f);
	return ret;
}

/* The user a masked conninfo from status names (masking keeps it), into
 * user ("" when none). */
static void masked_user(const char *conninfo, char *user, size_t size)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	const char *u = opt_val(opts, "user");

	snprintf(user, size, "%s", u ? u : "");
	PQconninfoFree(opts);
}

/* Whether the conninfo at key of v (a target or a server entry) names
 * the old role; says so. */
static bool names_old(const struct rotate *r, const msgpack_object *v,
		      const char *what)
{
	char conninfo[4096], user[ROTATE_ROLE_MAX + 2];

	if (!ctl_str(v, "conninfo", conninfo, sizeof(conninfo)))
		return false;
	masked_user(conninfo, user, sizeof(user));
	if (!streq(user, r->old_role))
		return false;
	fprintf(stderr, "dbswapctl rotate: %s still logs in as %s: not "
			"revoking it\n", what, r->old_role);
	return true;
}

/* Before the revocation: one look at every target the agent has.  0 when
 * none (nor any of its servers) names the old role; -1 after saying
 * which does, or that this caller cannot see them all. */
static int old_role_unused(struct rotate *r, const char *socket)
{
	dbswap_client *c = ctl_connect(socket, "dbswapctl rotate");
	const msgpack_object *targets;
	struct ipc_msg st;
	char name[IPC_NAME_MAX + 1], var[IPC_NAME_MAX + 1];
	char what[2 * IPC_NAME_MAX + 16];
	int ret = 0;

	ctl_call(c, IPC_STATUS, &st);
	targets = ctl_array(&st.root.data, "targets");
	for (uint32_t i = 0; targets && i < targets->via.array.size; i++) {
		const msgpack_object *t = &targets->via.array.ptr[i];
		const msgpack_object *servers = ctl_array(t, "servers");

		if (!ctl_str(t, "name", name, sizeof(name)))
			snprintf(name, sizeof(name), "?");
		if (ctl_int(t, "redacted") == 1 || !servers) {
			/* brief or not ours to follow: its user is unknown */
			fprintf(stderr, "dbswapctl rotate: the agent shows "
					"this caller no details of target %s: "
					"cannot tell whether it still logs in "
					"as %s; not revoking it (run rotate as "
					"root or the agent's user, or add "
					"--admin rules)\n",
				name, r->old_role);
			ret = -1;
			continue;
		}
		snprintf(what, sizeof(what), "target %s", name);
		if (names_old(r, t, what))
			ret = -1;
		for (uint32_t j = 0; j < servers->via.array.size; j++) {
			const msgpack_object *s = &servers->via.array.ptr[j];
			if (!ctl_str(s, "var", var, sizeof(var)))
				snprintf(var, sizeof(var), "?");
			snprintf(what, sizeof(what), "%s (server of %s)", var,
				 name);
			if (names_old(r, s, what))
				ret = -1;
		}
	}
	if (!targets) {
		fprintf(stderr, "dbswapctl rotate: the agent's status lists no "
				"targets: not revoking %s\n", r->old_role);
		ret = -1;
	}
	ipc_msg_fini(&st);
	dbswap_client_free(c);
	return ret;
}

/* Disables the old role's login: NOLOGIN and a password nobody knows. */
static int revoke_old(struct rotate *r)
{
	char *throwaway = new_password();
	int ret;

	if (!throwaway) {
		fprintf(stderr, "dbswapctl rotate: out of memory\n");
		return -1;
	}
	ret = alter_role(r, r->old_role, "NOLOGIN", throwaway);
	free_secret(throwaway);
	if (ret < 0)
		return -1;
	r->revoke_pending = false;
	say(r, "login of %s disabled (NOLOGIN, a random password); its open "
	       "sessions, if any, live on", r->old_role);
	return 0;
}

int cmd_rotate(const char *socket, int argc, char **argv)
{
	struct rotate r = { .start_us = now_us(), .socket = socket };
	char identity[FILE_IDENTITY_MAX];
	int ret = EXIT_USAGE;

	if (parse_args(argc, argv, &r) < 0)
		goto out;
	snprintf(r.secondary, sizeof(r.secondary), "%s_SECONDARY", r.target);
	ret = EXIT_REFUSED;
	if (sodium_init() < 0 || read_admin(&r) < 0)
		goto out;
	/* Before anything changes: a wait that cannot start, or cannot
	 * find the write, would leave a password nobody follows (or the
	 * alternate strategy's old role for good). */
	if (r.wait && ctl_set_check(socket, "rotate", r.file, r.target) !=
			      EXIT_SUCCESS)
		goto out;
	rotate_current = &r;
	atexit(rotate_not_revoked);

	struct ctl_set_call call = {
		.cmd = "rotate",
		.file = r.file,
		.key = r.key,
		.pubkey = r.pubkey,
		.force = r.force,
		.prepare = prepare,
		.data = &r,
	};
	ret = ctl_set_write(&call, identity);
	if (ret != EXIT_SUCCESS) {
		if (r.altered && r.strategy == ROTATE_SINGLE)
			fprintf(stderr, "dbswapctl rotate: the password of %s "
					"was changed on the server, but %s was "
					"not written: new connections of the "
					"apps fail until it is; run rotate "
					"again\n",
				r.new_role, r.file);
		else if (r.altered)
			fprintf(stderr, "dbswapctl rotate: %s was not written; "
					"%s still logs in and stays in use\n",
				r.file, r.old_role);
		r.revoke_pending = false;
		goto out;
	}
	say(&r, "%s in %s logs in as %s with the new password", r.target,
	    r.file, r.new_role);
	if (!r.wait) {
		ret = EXIT_SUCCESS;
		goto out;
	}
	struct ctl_follow_expect expect = {
		.target = r.target,
		/* no ack, no proof: an agent with no app proves nothing */
		.need_ack = r.strategy == ROTATE_ALTERNATE && !r.allow_no_subs,
	};
	ret = ctl_set_follow(socket, "rotate", r.file, identity, r.wait_s,
			     &expect);
	if (ret != EXIT_SUCCESS) {
		if (r.strategy == ROTATE_SINGLE)
			fprintf(stderr, "dbswapctl rotate: the password of %s "
					"was changed on the server: a value "
					"that still holds the old one no longer "
					"logs in\n",
				r.new_role);
		goto out; /* rotate_not_revoked says what stays */
	}
	say(&r, "every subscriber acked the new value");
	if (r.strategy == ROTATE_ALTERNATE &&
	    (old_role_unused(&r, socket) < 0 || revoke_old(&r) < 0))
		ret = EXIT_REFUSED;
out:
	if (r.conn)
		PQfinish(r.conn);
	for (size_t i = 0; i < ARRAY_SIZE(r.values); i++)
		free_secret(r.values[i]);
	free_secret(r.password);
	r.password = NULL;
	mask_secrets_free(&r.admin_secrets);
	free_secret(r.admin);
	if (ret != EXIT_SUCCESS)
		rotate_not_revoked();
	rotate_current = NULL;
	return ret;
}

/*
 * Unit tests for common/pqerr.c: libpq's messages made one line, and
 * scrubbed of a value's passwords before the agent or libdbswap passes
 * them on.
 */
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mask.h"
#include "common/pqerr.h"
#include "common/util.h"
#include "tests/unit/check.h"

/* Whether ms lists s. */
static bool has_secret(const struct mask_secrets *ms, const char *s)
{
	for (size_t i = 0; i < ms->n; i++)
		if (strcmp(ms->s[i], s) == 0)
			return true;
	return false;
}

static void test_secrets(void)
{
	struct mask_secrets ms;

	CHECK(mask_secrets("host=db password='p w' sslpassword=k user=u",
			   &ms) == 0);
	CHECK(ms.parsed);
	CHECK(has_secret(&ms, "p w"));
	CHECK(has_secret(&ms, "k"));
	for (size_t i = 0; i < ms.n; i++)
		CHECK(ms.s[i][0] != '\0');
	mask_secrets_free(&ms);
	CHECK(ms.n == 0 && ms.s == NULL);
	/* A URI: libpq's password, and a human's (up to the last '@'). */
	CHECK(mask_secrets("postgresql://app:a%40b@c@db/x", &ms) == 0);
	CHECK(has_secret(&ms, "a@b")); /* libpq stops at the first raw @ */
	CHECK(has_secret(&ms, "a%40b@c"));
	mask_secrets_free(&ms);
	CHECK(mask_secrets("host='unterminated", &ms) == 0);
	CHECK(!ms.parsed);
	mask_secrets_free(&ms);
	CHECK(mask_secrets(NULL, &ms) == 0);
	CHECK(ms.n == 0 && !ms.parsed);
	/* The caller's own. */
	CHECK(mask_secrets("host=db", &ms) == 0);
	CHECK(mask_secrets_add(&ms, "n3w-pw") == 0);
	CHECK(mask_secrets_add(&ms, "") == 0);
	CHECK(mask_secrets_add(&ms, NULL) == 0);
	CHECK(ms.n >= 1 && strcmp(ms.s[ms.n - 1], "n3w-pw") == 0);
	mask_secrets_free(&ms);
}

static void test_scrub(void)
{
	char *secrets[] = { "s3cret-pw", NULL, "tail@x" };
	char out[256];

	pqerr_scrub("FATAL: database \"s3cret-pw\" does not exist", out,
		    sizeof(out), secrets, 3);
	CHECK_STR(out, "FATAL: database \"****\" does not exist");
	/* A quoted part of a secret: libpq quotes what it read as a host. */
	pqerr_scrub("could not translate host name \"x\" to address", out,
		    sizeof(out), secrets, 3);
	CHECK_STR(out, "could not translate host name \"****\" to address");
	pqerr_scrub("bare s3cret-pw and s3cret-pw.", out, sizeof(out),
		    secrets, 3);
	CHECK_STR(out, "bare **** and ****.");
	/* Cut short: never inside a secret, whatever the size. */
	for (size_t n = 1; n < 40; n++) {
		pqerr_scrub("ab s3cret-pw s3cret-pw s3cret-pw", out, n,
			    secrets, 3);
		CHECK(strlen(out) < n);
		CHECK(!strstr(out, "s3c"));
	}
}

/* libpq's own message about conninfo, from a connection attempt that
 * fails before anything is sent: each value here has a setting libpq
 * refuses before it connects. */
static char *connect_message(const char *conninfo)
{
	const char *const keys[] = { "dbname", "connect_timeout", NULL };
	const char *const vals[] = { conninfo, "1", NULL };
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	char *msg = strdup(conn ? PQerrorMessage(conn) : "");

	PQfinish(conn);
	return msg;
}

/* libpq's message about a value it cannot parse at all. */
static char *parse_message(const char *conninfo)
{
	char *errmsg = NULL, *msg;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);

	if (opts)
		PQconninfoFree(opts);
	msg = strdup(errmsg ? errmsg : "");
	PQfreemem(errmsg);
	return msg;
}

/* text scrubbed of conninfo's secrets must hold none of the secrets
 * given (and must have held each before, or the case tests nothing). */
static void check_scrub_at(const char *file, int line, const char *conninfo,
			   const char *text, const char *const *secrets)
{
	struct mask_secrets ms;
	char out[1024];

	if (mask_secrets(conninfo, &ms) < 0) {
		fprintf(stderr, "%s:%d: mask_secrets(\"%s\") failed\n", file,
			line, conninfo);
		check_failed++;
		return;
	}
	pqerr_scrub(text, out, sizeof(out), ms.s, ms.n);
	for (; *secrets; secrets++) {
		if (!strstr(text, *secrets)) {
			fprintf(stderr, "%s:%d: \"%s\" does not hold \"%s\": "
					"nothing tested\n",
				file, line, text, *secrets);
			check_failed++;
		}
		if (strstr(out, *secrets)) {
			fprintf(stderr, "%s:%d: for \"%s\" the message "
					"\"%s\" scrubbed is \"%s\": \"%s\" "
					"shows\n",
				file, line, conninfo, text, out, *secrets);
			check_failed++;
		}
	}
	mask_secrets_free(&ms);
}

#define SECRETS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define CHECK_SCRUB(conninfo, text, ...)                               \
	check_scrub_at(__FILE__, __LINE__, conninfo, text,              \
		       SECRETS(__VA_ARGS__))

/* What mask_conninfo() hides, the scrubber hides: libpq's messages
 * about values that put a password where libpq reads another setting. */
static void check_connect_at(const char *file, int line,
			     const char *conninfo, const char *secret)
{
	char *msg = connect_message(conninfo);

	if (msg)
		check_scrub_at(file, line, conninfo, msg, SECRETS(secret));
	free(msg);
}
#define CHECK_CONNECT(conninfo, secret)                                \
	check_connect_at(__FILE__, __LINE__, conninfo, secret)

static void test_secrets_as_masked(void)
{
	char *msg;

	/* A password libpq reads as a port: "invalid integer value
	 * "s3cretpw" for connection option "port"". */
	CHECK_CONNECT("postgresql://app:s3cretpw/db", "s3cretpw");
	CHECK_CONNECT("host=127.0.0.1 port=s3cretpw", "s3cretpw");
	CHECK_CONNECT("postgresql://app:s3cretpw@127.0.0.1:1,h2:x3cretpw/db",
		      "x3cretpw");
	/* ... and its host, which mask_conninfo() masks with it. */
	CHECK_CONNECT("postgresql://app@Secr3tPw:db.example/x", "db.example");
	/* A password where libpq reads a hostaddr. */
	CHECK_CONNECT("hostaddr=Secr3tPw host=db", "Secr3tPw");
	CHECK_CONNECT("postgresql://db/x?hostaddr=Secr3t%2FPw", "Secr3t/Pw");
	/* ... or another setting libpq checks. */
	CHECK_CONNECT("host=127.0.0.1 sslmode=s3cretpw", "s3cretpw");
	CHECK_CONNECT("postgresql://app:pw@127.0.0.1:1/db?sslmode=x3cretpw",
		      "x3cretpw");
	/* libpq 18's secret settings, wherever they are written (an older
	 * libpq refuses them, and the value is masked whole). */
	CHECK_SCRUB("host=db scram_client_key=Zm9vYmFyYmF6",
		    "bad key \"Zm9vYmFyYmF6\"; key Zm9vYmFyYmF6", "Zm9vYmFy");
	CHECK_SCRUB("postgresql://db/x?oauth_client_secret=c1ient-s3cret",
		    "secret c1ient-s3cret refused", "c1ient-s3cret");
	/* A dbname that is a connection string of its own: the server
	 * quotes the database it did not find, and its password. */
	CHECK_SCRUB("host=db dbname='host=db password=n3stedpw user=app'",
		    "FATAL:  3D000: database \"host=db password=n3stedpw "
		    "user=app\" does not exist; n3stedpw",
		    "n3stedpw");
	CHECK_SCRUB("postgresql://db/postgresql%3A%2F%2Fapp%3An3stedpw%40db"
		    "%2Fapp",
		    "FATAL:  3D000: database \"postgresql://app:n3stedpw@db/"
		    "app\" does not exist; n3stedpw",
		    "n3stedpw");
	/* A value libpq cannot parse: mask_conninfo() shows nothing of it,
	 * and libpq's own message quotes it. */
	msg = parse_message("host=db s3cretpw");
	CHECK_SCRUB("host=db s3cretpw", msg, "s3cretpw");
	free(msg);
	/* (libpq's messages about these quote nothing of the password.) */
	CHECK_SCRUB("host=db password='s3cret pw",
		    "x \"s3cret pw\" y s3cret pw", "s3cret");
	CHECK_SCRUB("host=db pasword=s3cretpw", "x s3cretpw", "s3cretpw");
}

int main(void)
{
	check_watchdog(30);
	RUN(test_secrets);
	RUN(test_scrub);
	RUN(test_secrets_as_masked);
	return check_exit();
}

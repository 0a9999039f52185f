/*
 * Unit tests for mask_conninfo(): URIs and key=value strings, well formed
 * and not, must come out with no trace of a password.
 *
 * Secrets in the generated cases are built from the marker "QX" around
 * every special character, so a leak of any fragment shows as "QX" in the
 * output.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mask.h"
#include "common/util.h"
#include "tests/unit/check.h"

/* Whether out is in with nothing but empty spans masked. */
static bool masked_empty(const char *in, const char *out)
{
	while (*in || *out) {
		if (strncmp(out, "****", 4) == 0 && strncmp(in, "****", 4) != 0) {
			out += 4;
		} else if (*in && *in == *out) {
			in++;
			out++;
		} else {
			return false;
		}
	}
	return true;
}

/* mask_secrets() agrees with mask_conninfo()'s output out: something is
 * secret when anything but an empty value was masked, and only then;
 * all of in when all of it was masked. */
static void check_secrets_at(const char *file, int line, const char *in,
			     const char *out)
{
	struct mask_secrets ms;
	bool whole = false;

	if (mask_secrets(in, &ms) < 0) {
		fprintf(stderr, "%s:%d: mask_secrets(\"%s\") failed\n", file,
			line, in);
		check_failed++;
		return;
	}
	for (size_t i = 0; i < ms.n; i++)
		whole = whole || strcmp(ms.s[i], in) == 0;
	if (masked_empty(in, out) != (ms.n == 0) ||
	    (strcmp(out, "****") == 0 && strcmp(in, "****") != 0 && !whole)) {
		fprintf(stderr, "%s:%d: mask_conninfo(\"%s\") = \"%s\" but "
				"mask_secrets() lists %zu secrets%s\n",
			file, line, in, out, ms.n,
			whole ? ", the value whole among them" : "");
		check_failed++;
	}
	mask_secrets_free(&ms);
}

/* Masks in and checks the result against want (NULL: any output) and that
 * no secret fragment survives. */
static void check_mask_at(const char *file, int line, const char *in,
			  const char *want, const char *const *secrets)
{
	char *out = mask_conninfo(in);

	if (!out) {
		fprintf(stderr, "%s:%d: mask_conninfo(\"%s\") returned NULL\n",
			file, line, in);
		check_failed++;
		return;
	}
	if (want && strcmp(out, want) != 0) {
		fprintf(stderr, "%s:%d: mask_conninfo(\"%s\")\n  got  \"%s\"\n"
				"  want \"%s\"\n",
			file, line, in, out, want);
		check_failed++;
	}
	check_secrets_at(file, line, in, out);
	for (; secrets && *secrets; secrets++) {
		if (strstr(out, *secrets)) {
			fprintf(stderr, "%s:%d: mask_conninfo(\"%s\") = \"%s\" "
					"leaks \"%s\"\n",
				file, line, in, out, *secrets);
			check_failed++;
		}
	}
	free(out);
}

#define SECRETS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define CHECK_MASK(in, want, ...)                                     \
	check_mask_at(__FILE__, __LINE__, in, want, SECRETS(__VA_ARGS__))

static void test_null_and_empty(void)
{
	char *out = mask_conninfo(NULL);

	CHECK_STR(out, "(none)");
	free(out);
	out = mask_conninfo("");
	CHECK_STR(out, "");
	free(out);
}

static void test_uri(void)
{
	CHECK_MASK("postgresql://app:s3cret@db/x", "postgresql://app:****@db/x",
		   "s3cret");
	CHECK_MASK("postgres://app:s3cret@db/x", "postgres://app:****@db/x",
		   "s3cret");
	/* No password: nothing to hide, nothing changed. */
	CHECK_MASK("postgresql://app@db/x", "postgresql://app@db/x", "****");
	CHECK_MASK("postgresql://db:5432/x", "postgresql://db:5432/x", "****");
	CHECK_MASK("postgres://", "postgres://", "****");
	CHECK_MASK("postgresql://app:@db/x", "postgresql://app:****@db/x",
		   "app:@");
	/* Multi-host with ports. */
	CHECK_MASK("postgresql://app:s3cret@h1:5432,h2:5433/x"
		   "?target_session_attrs=read-write",
		   "postgresql://app:****@h1:5432,h2:5433/x"
		   "?target_session_attrs=read-write",
		   "s3cret");
	/* A password holding '@', ':' and '/' (not legal in a URI, but
	 * pasted anyway): everything up to the last '@' goes. */
	CHECK_MASK("postgresql://app:p@ss:w/rd@db:5432/x",
		   "postgresql://app:****@db:5432/x", "p@ss", "ss:w", "w/rd",
		   "rd@");
	/* Percent-encoded. */
	CHECK_MASK("postgresql://app:p%40ss%3Aw%2Frd@db/x",
		   "postgresql://app:****@db/x", "p%40", "%2Frd", "ss%3A");
	/* Query parameters. */
	CHECK_MASK("postgresql://app@db/x?password=s3cret",
		   "postgresql://app@db/x?password=****", "s3cret");
	CHECK_MASK("postgresql://db/x?sslmode=require&sslpassword=k3y"
		   "&application_name=a",
		   "postgresql://db/x?sslmode=require&sslpassword=****"
		   "&application_name=a",
		   "k3y");
	CHECK_MASK("postgresql://app:s3cret@db/x?sslpassword=k3y",
		   "postgresql://app:****@db/x?sslpassword=****", "s3cret",
		   "k3y");
	CHECK_MASK("postgresql://db/x?password=a&password=b3b",
		   "postgresql://db/x?password=****&password=****", "b3b");
	CHECK_MASK("postgresql://db/x?password=",
		   "postgresql://db/x?password=****",
		   "password=&");
	/* '@' and ':' are legal in a query value. */
	CHECK_MASK("postgresql://app@db/x?application_name=a:b&password=p@ss",
		   "postgresql://app@db/x?application_name=a:b&password=****",
		   "p@ss", "@ss");
	CHECK_MASK("postgresql://db:5432/x?password=s@cret", NULL, "s@cret",
		   "cret");
	CHECK_MASK("postgresql://app@db/x?password=a:b@c3c", NULL, "a:b",
		   "c3c", "=a");
	CHECK_MASK("postgresql://app:s3cret@db/x?application_name=me@host",
		   NULL, "s3cret");
	/* libpq reads user info up to the '@' without stopping at a '?':
	 * this is user "a?b", password "s3cretpw" (found by the fuzzer). */
	CHECK_MASK("postgresql://a?b:s3cretpw@db/x", NULL, "s3cretpw",
		   "cretp");
	CHECK_MASK("postgresql://a?b:pw@db/x?password=q3q", NULL, "pw@",
		   "q3q");
	/* libpq decodes query keys: an encoded "password" is one. */
	CHECK_MASK("postgresql://db/x?pass%77ord=s3cret", NULL, "s3cret");
	CHECK_MASK("postgresql://db/x?%73slpassword=s3cret", NULL, "s3cret");
	CHECK_MASK("postgresql://db/x?passw%6Frd=s3cret&application_name=b",
		   "postgresql://db/x?passw%6Frd=****&application_name=b",
		   "s3cret");
	CHECK_MASK("postgresql://db/x?passw%6frd=s3cret", NULL, "s3cret");
	/* Not a valid escape: libpq refuses the value, shown as nothing. */
	CHECK_MASK("postgresql://db/x?passw%6=x", "****", "passw", "=x");
	/* Keys in capitals: libpq refuses them, they still were meant. */
	CHECK_MASK("postgresql://db/x?Password=s3cret", NULL, "s3cret");
	/* Scheme in capitals: not a URI to libpq, still not to be shown. */
	CHECK_MASK("POSTGRESQL://app:s3cret@db/x?sslmode=require", NULL,
		   "s3cret");
	CHECK_MASK("Postgres://app:s3cret@db/x", NULL, "s3cret");
}

static void test_keyvalue(void)
{
	CHECK_MASK("host=db password='s e c' user=app",
		   "host=db password=**** user=app", "s e c", "'s", "c'");
	CHECK_MASK("host=db password=s3cret user=app",
		   "host=db password=**** user=app", "s3cret");
	CHECK_MASK("password=s3cret", "password=****", "s3cret");
	CHECK_MASK("password = s3cret host=db", "password = **** host=db",
		   "s3cret");
	CHECK_MASK("  host=db\tpassword=\ts3cret  ",
		   "  host=db\tpassword=\t****  ", "s3cret");
	CHECK_MASK("sslpassword=k3y host=db sslmode=require",
		   "sslpassword=**** host=db sslmode=require", "k3y");
	CHECK_MASK("host=db password=", "host=db password=****", "QX");
	CHECK_MASK("host=db password='' user=app",
		   "host=db password=**** user=app", "''");
	/* Escaped quote and backslash inside quotes. */
	CHECK_MASK("host=db password='it\\'s s3\\\\cret' user=app",
		   "host=db password=**** user=app", "s3", "cret", "it",
		   "\\");
	/* Escaped space in an unquoted value (libpq accepts it). */
	CHECK_MASK("host=db password=s3\\ cret user=app",
		   "host=db password=**** user=app", "s3", "cret");
	/* Unterminated quote: libpq refuses the value, masked whole. */
	CHECK_MASK("host=db password='s3 cret user=app", "****", "s3",
		   "cret", "user=app");
	CHECK_MASK("host=db password='s3cret\\'", "****", "s3cret");
	/* Not key=value after the first pair: unclear shape, masked. */
	CHECK_MASK("host=db s3cret", NULL, "s3cret");
	CHECK_MASK("password=my s3cret phrase", NULL, "s3cret", "phrase");
	CHECK_MASK("host=db user=app s3cret more", NULL, "s3cret", "more");
	/* Keys are not secret, only their values. */
	CHECK_MASK("host=db port=5432 dbname=x", "host=db port=5432 dbname=x",
		   "****");
	/* Unknown keywords: libpq refuses the value, masked whole (a
	 * typo'd key may hold a password). */
	CHECK_MASK("passwordx=y", "****", "=y");
	CHECK_MASK("PASSWORD=s3cret host=db", "****", "s3cret");
	CHECK_MASK("host=db pasword=s3cret", "****", "s3cret");
}

/* A dbname that libpq expands as a connection string of its own (when a
 * program passes it with expand_dbname): its password is one, in every
 * place a dbname can be written. */
static void test_dbname_conninfo(void)
{
	/* key=value, quoted, escaped, and as a URI. */
	CHECK_MASK("host=db dbname='host=db password=s3cret user=app'",
		   "host=db dbname=****", "s3cret", "user=app");
	CHECK_MASK("host=db dbname=host=db\\ password=s3cret\\ user=app "
		   "port=5432",
		   "host=db dbname=**** port=5432", "s3cret");
	CHECK_MASK("host=db dbname=postgresql://app:s3cret@db/app user=app",
		   "host=db dbname=**** user=app", "s3cret");
	CHECK_MASK("host=db dbname='postgres://app:s3cret@db/app'",
		   "host=db dbname=****", "s3cret");
	/* Not the last dbname (libpq uses the last): still masked. */
	CHECK_MASK("dbname='password=s3cret' dbname=app host=db",
		   "dbname=**** dbname=app host=db", "s3cret");
	/* A "://" libpq would not expand: a human reads a password. */
	CHECK_MASK("host=db dbname=PostgreSQL://app:s3cret@db/app",
		   "host=db dbname=****", "s3cret");
	/* URI: in the path, percent-encoded, and as a query parameter. */
	CHECK_MASK("postgresql://db/postgresql%3A%2F%2Fapp%3As3cret%40db%2Fapp",
		   "postgresql://db/****", "s3cret");
	CHECK_MASK("postgresql://app:pw@db:5432/host%3Ddb%20password%3Ds3cret"
		   "?sslmode=require",
		   "postgresql://app:****@db:5432/****?sslmode=require",
		   "s3cret");
	CHECK_MASK("postgresql://db/x?dbname=host%3Ddb%20password%3Ds3cret",
		   "postgresql://db/x?dbname=****", "s3cret");
	CHECK_MASK("postgresql://db/x?db%6Eame=password%3Ds3cret&sslmode=prefer",
		   "postgresql://db/x?db%6Eame=****&sslmode=prefer", "s3cret");
	CHECK_MASK("postgresql://db/x?dbname=postgresql://app:s3cret@db/app",
		   "postgresql://db/x?dbname=****", "s3cret");
	/* A raw '=' in the path. */
	CHECK_MASK("postgresql://db/password=s3cret", "postgresql://db/****",
		   "s3cret");
	/* Nested twice: libpq expands once, a human reads both. */
	CHECK_MASK("dbname='dbname=\\'password=s3cret\\''", "dbname=****",
		   "s3cret");
	/* Ordinary names are shown. */
	CHECK_MASK("host=db dbname=my-app_db", "host=db dbname=my-app_db",
		   "****");
	CHECK_MASK("postgresql://db/my%20app?application_name=a",
		   "postgresql://db/my%20app?application_name=a", "****");
	/* A percent-encoded key is the setting libpq reads. */
	CHECK_MASK("postgresql://db/x?p%6Frt=s3cret", "postgresql://db/x?p%6Frt=****",
		   "s3cret");
}

/* libpq 18's other secrets: unknown to the libpq here, so the value is
 * refused and masked whole; a newer libpq takes them, and they are
 * masked as passwords. */
static void test_other_secrets(void)
{
	CHECK_MASK("host=db oauth_client_secret=s3cret", NULL, "s3cret");
	CHECK_MASK("host=db scram_client_key=s3cret", NULL, "s3cret");
	CHECK_MASK("postgresql://db/x?scram_server_key=s3cret", NULL,
		   "s3cret");
}

static void test_garbage(void)
{
	/* Neither a URI nor key=value: maybe a bare password. */
	CHECK_MASK("s3cret", "****", "s3cret");
	CHECK_MASK("my s3cret pw", "****", "s3cret");
	CHECK_MASK("postgresql:/app:s3cret@db", "****", "s3cret");
	CHECK_MASK("'s3cret'", "****", "s3cret");
	/* Issue 15's shapes: nothing of a value libpq refuses is shown. */
	CHECK_MASK("jdbc:postgresql://db:5432/x?user=app&password=s3cret",
		   "****", "s3cret", "jdbc", "db");
	CHECK_MASK("postgress://app:s3cret@db/x", "****", "s3cret");
	CHECK_MASK("postgres:/app:s3cret@db/x", "****", "s3cret");
	CHECK_MASK("host=db password=s3cret port=", NULL, "s3cret");
	CHECK_MASK("host=db password=s3cr", NULL, "s3cr");
	CHECK_MASK("host=db passw", "****", "passw");
	CHECK_MASK("host=db password='s3cret", "****", "s3cret");
	/* A setting whose value libpq would not take is masked: a
	 * mistyped value ("port=${DB_PASS}") may have put a password there. */
	CHECK_MASK("host=db port=s3cret user=app",
		   "host=db port=**** user=app", "s3cret");
	CHECK_MASK("host=db port='5432' sslmode=s3cret",
		   "host=db port=**** sslmode=****", "s3cret");
	CHECK_MASK("host=a,b port=5432,5433 sslmode=verify-full "
		   "connect_timeout=10 target_session_attrs=read-write "
		   "hostaddr=10.0.0.1,::1 ssl_min_protocol_version=TLSv1.2",
		   "host=a,b port=5432,5433 sslmode=verify-full "
		   "connect_timeout=10 target_session_attrs=read-write "
		   "hostaddr=10.0.0.1,::1 ssl_min_protocol_version=TLSv1.2",
		   "****");
	CHECK_MASK("host=db hostaddr=s3cret keepalives_idle=s3cret2",
		   "host=db hostaddr=**** keepalives_idle=****", "s3cret");
	CHECK_MASK("host=db sslmode=require2", "host=db sslmode=****",
		   "require2");
	CHECK_MASK("postgresql://db/x?sslmode=s3cret&connect_timeout=10",
		   "postgresql://db/x?sslmode=****&connect_timeout=10",
		   "s3cret");
	CHECK_MASK("postgresql://db/x?port=s3cret", "postgresql://db/x?port=****",
		   "s3cret");
	/* A URI without "@host": libpq reads the password as the port, and
	 * the user name as the host; both masked. */
	CHECK_MASK("postgresql://app:s3cret/db", "postgresql://****:****/db",
		   "s3cret");
	CHECK_MASK("postgresql://app:s3cret", "postgresql://****:****",
		   "s3cret");
	CHECK_MASK("postgresql://h1:5432,app:s3cret/db",
		   "postgresql://h1:5432,****:****/db", "s3cret");
	CHECK_MASK("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db",
		   "****");
	/* An unencoded '@' in the password: the tail libpq takes for the
	 * host is masked with the rest. */
	CHECK_MASK("postgresql://app:s3c@ret@db/x", "postgresql://app:****@db/x",
		   "s3c", "ret@");
	CHECK_MASK("postgresql://app:s3c/ret@db/x", "postgresql://app:****@db/x",
		   "s3c", "ret");
}

/* A setting the agent refuses (agent/connplan.c) is never shown: a
 * mistyped value puts a password into exactly such a setting, and a
 * password of the right shape passes a check by character class. */
static void test_refused_settings(void)
{
	/* A port above 65535, 0, or with leading zeros: a digits-only
	 * password in a URI without "@host", or in port=${DB_PASSWORD}. */
	CHECK_MASK("postgresql://postgres:8675309912/postgres",
		   "postgresql://****:****/postgres", "8675309912");
	CHECK_MASK("postgresql://app:65536/db", "postgresql://****:****/db",
		   "65536");
	CHECK_MASK("postgresql://app:0/db", "postgresql://****:****/db", ":0/");
	CHECK_MASK("postgresql://app:0012345/db", "postgresql://****:****/db",
		   "12345");
	CHECK_MASK("host=db port=8675309912 user=app",
		   "host=db port=**** user=app", "8675309912");
	CHECK_MASK("host=db port=0", "host=db port=****", "=0");
	CHECK_MASK("host=a,b port=5432,99999999", "host=a,b port=****",
		   "99999999");
	CHECK_MASK("host=a,b port=5432,,5433", "host=a,b port=5432,,5433",
		   "****");
	CHECK_MASK("host=db port=65535", "host=db port=65535", "****");
	CHECK_MASK("postgresql://db/x?port=8675309912",
		   "postgresql://db/x?port=****", "8675309912");
	/* The port after user info, one host or several. */
	CHECK_MASK("postgresql://app:pw@db:Secr3tPW/x",
		   "postgresql://app:****@****:****/x", "Secr3tPW");
	CHECK_MASK("postgresql://app:pw@h1:5432,h2:Secr3tPW/x",
		   "postgresql://app:****@h1:5432,****:****/x", "Secr3tPW");
	CHECK_MASK("postgresql://app:pw@db:8675309912/x",
		   "postgresql://app:****@****:****/x", "8675309912");
	CHECK_MASK("postgresql://app@db:Secr3tPW/x",
		   "postgresql://app@****:****/x", "Secr3tPW");
	CHECK_MASK("postgresql://app:pw@[::1]:5432,[fe80::1]:Secr3tPW/x",
		   "postgresql://app:****@[::1]:5432,****:****/x",
		   "Secr3tPW");
	CHECK_MASK("postgresql://app:pw@db:5432/x",
		   "postgresql://app:****@db:5432/x", "pw@");
	CHECK_MASK("postgresql://app@[::1]:5432,db:Secr3tPW/x",
		   "postgresql://app@[::1]:5432,****:****/x", "Secr3tPW");
	/* A '[' inside a host starts no IPv6 literal for libpq: the ':'
	 * after it still starts the port (found by fuzz-mask). */
	CHECK_MASK("postgresql://a[b:Secr3tPW/x", "postgresql://****:****/x",
		   "Secr3tPW");
	CHECK_MASK("postgresql://app:pw@a[b:Secr3tPW/x",
		   "postgresql://app:****@****:****/x", "Secr3tPW");
	/* A '[' with no ']' before the '/': libpq reads the host up to a
	 * ']' further on, and a port after it. */
	CHECK_MASK("postgresql://app:pw@h,[x:Secr3tPW/db?a=]:5432", NULL,
		   "Secr3tPW");
	/* Password and host swapped: the refused port masks its host. */
	CHECK_MASK("postgresql://postgres@Secr3tPW:127.0.0.1/postgres",
		   "postgresql://postgres@****:****/postgres", "Secr3tPW");
	/* An '@' after a '?': in a query value, not after a user name. */
	CHECK_MASK("postgresql://db?password=s3cret@x", NULL, "s3cret");
	CHECK_MASK("postgresql://db/x?password=s3cret@x", NULL, "s3cret");
	/* A hostaddr that is no IPv4 or IPv6 address: a hex password
	 * (openssl rand -hex) is made of the characters of one. */
	CHECK_MASK("host=db.example.com hostaddr=3f9a1c0e7b2d4a6f8e1c3b5d7f9a0c2e "
		   "user=app dbname=app",
		   "host=db.example.com hostaddr=**** user=app dbname=app",
		   "3f9a1c0e");
	CHECK_MASK("hostaddr=10.0.0.1,deadbeef", "hostaddr=****", "deadbeef");
	CHECK_MASK("hostaddr=10.0.0.1,::1,", "hostaddr=10.0.0.1,::1,", "****");
	CHECK_MASK("hostaddr=73019284", "hostaddr=****", "73019284");
	CHECK_MASK("hostaddr=1.2.3", "hostaddr=****", "1.2.3");
	CHECK_MASK("hostaddr=::ffff:10.0.0.1 host=db",
		   "hostaddr=::ffff:10.0.0.1 host=db", "****");
	CHECK_MASK("postgresql://db/x?hostaddr=abcdef0123",
		   "postgresql://db/x?hostaddr=****", "abcdef0123");
	/* A whole number within int, as the agent checks the timeouts. */
	CHECK_MASK("host=db connect_timeout=86753099120",
		   "host=db connect_timeout=****", "86753099120");
	CHECK_MASK("host=db keepalives_idle=-+1", "host=db keepalives_idle=****",
		   "-+1");
	CHECK_MASK("host=db connect_timeout=-10 keepalives=+1",
		   "host=db connect_timeout=-10 keepalives=+1", "****");
	CHECK_MASK("host=db connect_timeout=2147483647",
		   "host=db connect_timeout=2147483647", "****");
	CHECK_MASK("host=db connect_timeout=2147483648",
		   "host=db connect_timeout=****", "2147483648");
}

/* Copies tmpl into buf with its "%s" replaced by secret (no printf: the
 * templates are data). */
static void fill(char *buf, size_t size, const char *tmpl, const char *secret)
{
	const char *hole = strstr(tmpl, "%s");
	size_t pre = hole ? (size_t)(hole - tmpl) : strlen(tmpl);

	snprintf(buf, size, "%.*s%s%s", (int)pre, tmpl, hole ? secret : "",
		 hole ? hole + 2 : "");
}

/* Secrets full of separators, in every place a password may sit. */
static void test_generated(void)
{
	static const char *const uri_secrets[] = {
		"QX@QX", "QX:QX", "QX/QX", "QX@QX:QX/QX", "QX?QX", "QX?QX@QX",
		"QX%40QX", "QX&QX", "QX=QX", "QX#QX", "QX'QX", "QX QX",
	};
	static const char *const uri_templates[] = {
		"postgresql://app:%s@db/x",
		"postgres://app:%s@db:5432/x",
		"postgresql://app:%s@h1:5432,h2:5433/x?sslmode=require",
		"postgresql://app:%s@db/x?application_name=me@host&a=b",
		"postgresql://app:%s@db/x?sslmode=require&sslpassword=QXQX",
		"postgresql://u@ser:%s@db/x",
	};
	static const char *const query_secrets[] = {
		"QX@QX", "QX:QX", "QX/QX", "QX?QX", "QX%26QX", "QX=QX",
		"QX'QX", "QX@QX:QX?QX",
	};
	static const char *const query_templates[] = {
		"postgresql://db/x?password=%s",
		"postgresql://app@db/x?password=%s&sslmode=require",
		"postgresql://db:5432/x?sslmode=require&password=%s",
		"postgresql://app@db/x?application_name=a:b&sslpassword=%s",
		"postgresql://app@db:5432/x?application_name=a@b&password=%s",
		"postgresql://db/x?pass%77ord=%s",
	};
	static const char *const kv_secrets[] = {
		"QX QX", "QX'QX", "QX\\QX", "QX=QX", "QX\tQX QX", "QX''QX",
		"QX\\'QX",
	};
	char buf[512], quoted[128];

	for (size_t t = 0; t < ARRAY_SIZE(uri_templates); t++) {
		for (size_t s = 0; s < ARRAY_SIZE(uri_secrets); s++) {
			fill(buf, sizeof(buf), uri_templates[t],
			     uri_secrets[s]);
			CHECK_MASK(buf, NULL, "QX");
		}
	}
	for (size_t t = 0; t < ARRAY_SIZE(query_templates); t++) {
		for (size_t s = 0; s < ARRAY_SIZE(query_secrets); s++) {
			fill(buf, sizeof(buf), query_templates[t],
			     query_secrets[s]);
			CHECK_MASK(buf, NULL, "QX");
		}
	}
	for (size_t s = 0; s < ARRAY_SIZE(kv_secrets); s++) {
		/* Quote the way libpq reads it: backslash before ' and \. */
		size_t n = 0;
		for (const char *p = kv_secrets[s]; *p; p++) {
			if (*p == '\'' || *p == '\\')
				quoted[n++] = '\\';
			quoted[n++] = *p;
		}
		quoted[n] = '\0';
		snprintf(buf, sizeof(buf), "host=db password='%s' user=app",
			 quoted);
		CHECK_MASK(buf, "host=db password=**** user=app", "QX");
		snprintf(buf, sizeof(buf), "password = '%s'", quoted);
		CHECK_MASK(buf, "password = ****", "QX");
		snprintf(buf, sizeof(buf), "sslpassword='%s' host=db", quoted);
		CHECK_MASK(buf, "sslpassword=**** host=db", "QX");
		/* Unterminated: libpq refuses it, masked whole. */
		snprintf(buf, sizeof(buf), "host=db password='%s", quoted);
		CHECK_MASK(buf, "****", "QX");
	}
}

static void test_long(void)
{
	/* Long enough to make the output buffer grow several times. */
	size_t n = 100000;
	char *in = malloc(n + 64), *out;

	if (!in)
		return;
	strcpy(in, "host=db password='");
	size_t len = strlen(in);
	memset(in + len, 'S', n);
	strcpy(in + len + n, "' user=app");
	out = mask_conninfo(in);
	CHECK_STR(out, "host=db password=**** user=app");
	free(out);

	strcpy(in, "postgresql://app:");
	len = strlen(in);
	memset(in + len, 'S', n);
	strcpy(in + len + n, "@db/x");
	out = mask_conninfo(in);
	CHECK_STR(out, "postgresql://app:****@db/x");
	free(out);
	free(in);
}

int main(void)
{
	check_watchdog(30);
	RUN(test_null_and_empty);
	RUN(test_uri);
	RUN(test_keyvalue);
	RUN(test_dbname_conninfo);
	RUN(test_other_secrets);
	RUN(test_garbage);
	RUN(test_refused_settings);
	RUN(test_generated);
	RUN(test_long);
	return check_exit();
}

/*
 * Unit tests for common/pqerr.c: libpq's messages made one line, and
 * scrubbed of a value's passwords before the agent or libdbswap passes
 * them on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pqerr.h"
#include "common/util.h"
#include "tests/unit/check.h"

static void test_secrets(void)
{
	char *s[PQERR_SECRETS];

	CHECK(pqerr_secrets("host=db password='p w' sslpassword=k user=u", s));
	CHECK_STR(s[0], "p w");
	CHECK_STR(s[1], "k");
	CHECK(s[2] == NULL);
	for (int i = 0; i < PQERR_SECRETS; i++)
		free_secret(s[i]);
	/* A URI: libpq's password, and a human's (up to the last '@'). */
	CHECK(pqerr_secrets("postgresql://app:a%40b@c@db/x", s));
	CHECK_STR(s[0], "a@b"); /* libpq stops at the first raw @ */
	CHECK_STR(s[2], "a%40b@c");
	for (int i = 0; i < PQERR_SECRETS; i++)
		free_secret(s[i]);
	CHECK(!pqerr_secrets("host='unterminated", s));
	for (int i = 0; i < PQERR_SECRETS; i++)
		CHECK(s[i] == NULL);
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

int main(void)
{
	check_watchdog(30);
	RUN(test_secrets);
	RUN(test_scrub);
	return check_exit();
}

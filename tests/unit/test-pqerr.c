/*
 * Unit tests for common/pqerr.c: libpq's messages made one line, and
 * scrubbed of a value's passwords before the agent or libdbswap passes
 * them on.
 */
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

int main(void)
{
	check_watchdog(30);
	RUN(test_secrets);
	RUN(test_scrub);
	return check_exit();
}

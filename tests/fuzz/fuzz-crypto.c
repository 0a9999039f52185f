/*
 * libFuzzer target: the decoders of common/crypto.c, encrypted files
 * (format 4) and enc:v1: values (format 5), with a fixed test key loaded
 * once at start-up.
 *
 * The first input byte picks a mode; the rest is the data:
 *   0  opened as an encrypted file (with the key, with no key, or with a
 *      NULL entry before the key)
 *   1  opened as an encrypted value (up to the first NUL byte)
 *   2  sealed as a file to the test key, opened again (must give the data
 *      back), then opened truncated and with one byte changed (must fail)
 *   3  the same for a value
 * Garbage must be refused with one of the documented errors, a terminated
 * message and no output; a tampered ciphertext must never open.
 *
 * The key is fixed (not generated) so that a crash reproduces in another
 * process.  It is a test key: never use it for anything.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/util.h"
#include "tests/fuzz/fuzz.h"

/* Secret key bytes 0x01..0x20; public key text
 * fuzz-crypto prints with DBSWAP_FUZZ_SHOW_KEY=1. */
#define TEST_SECRET_KEY "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="

int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct crypt_key *key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[] = "/tmp/dbswap-fuzz-key-XXXXXX", err[256];
	int fd;
	FILE *f;

	(void)argc;
	(void)argv;
	FUZZ_CHECK(crypt_init() == 0);
	fd = mkstemp(path); /* mode 0600, as crypt_key_load() requires */
	FUZZ_CHECK(fd >= 0);
	f = fdopen(fd, "w");
	FUZZ_CHECK(f != NULL);
	fprintf(f, "# dbswap fuzzing test key\n%s\n", TEST_SECRET_KEY);
	FUZZ_CHECK(fclose(f) == 0);
	if (crypt_key_load(path, &key, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz-crypto: %s\n", err);
		abort();
	}
	unlink(path);
	if (getenv("DBSWAP_FUZZ_SHOW_KEY")) {
		char text[CRYPT_PUBKEY_TEXT_LEN + 1];
		crypt_pubkey_text(crypt_key_public(key), text);
		printf("%s\n", text);
	}
	return 0;
}

static void check_err(int r, const char *err, size_t errlen)
{
	FUZZ_CHECK(r == -EINVAL || r == -EBADMSG || r == -ENOKEY);
	FUZZ_CHECK(memchr(err, '\0', errlen) != NULL);
}

static int open_file(struct crypt_key *const *keys, size_t n,
		     const uint8_t *buf, size_t len)
{
	uint8_t *plain = (uint8_t *)1;
	size_t plain_len = 0;
	char err[256];
	int r;

	memset(err, 0x55, sizeof(err));
	r = crypt_open_file(keys, n, buf, len, &plain, &plain_len, err,
			    sizeof(err));
	if (r == 0) {
		FUZZ_CHECK(plain != NULL && plain[plain_len] == '\0');
		FUZZ_CHECK(plain_len + CRYPT_FILE_OVERHEAD == len);
		crypt_free_plain(plain, plain_len);
		return 0;
	}
	FUZZ_CHECK(plain == NULL);
	check_err(r, err, sizeof(err));
	/* Short of the magic is "truncated" (-EBADMSG); anything else
	 * without it is not an encrypted file. */
	if (len >= CRYPT_MAGIC_LEN && !crypt_is_sealed_file(buf, len))
		FUZZ_CHECK(r == -EINVAL);
	return r;
}

static int open_value(const char *value, char **plain)
{
	char err[256];
	int r;

	memset(err, 0x55, sizeof(err));
	*plain = (char *)1;
	r = crypt_open_value(&key, 1, value, plain, err, sizeof(err));
	if (r == 0) {
		FUZZ_CHECK(*plain != NULL);
		return 0;
	}
	FUZZ_CHECK(*plain == NULL);
	check_err(r, err, sizeof(err));
	if (!crypt_is_sealed_value(value))
		FUZZ_CHECK(r == -EINVAL);
	return r;
}

static void round_trip_file(const uint8_t *data, size_t len, uint8_t pick)
{
	struct crypt_key *keys[2] = { NULL, key };
	uint8_t *sealed, *plain = NULL;
	size_t sealed_len, plain_len = 0, at;
	char err[256];

	FUZZ_CHECK(crypt_seal_file(crypt_key_public(key), data, len, &sealed,
				   &sealed_len) == 0);
	FUZZ_CHECK(sealed_len == len + CRYPT_FILE_OVERHEAD);
	FUZZ_CHECK(crypt_open_file(keys, 2, sealed, sealed_len, &plain,
				   &plain_len, err, sizeof(err)) == 0);
	FUZZ_CHECK(plain_len == len && (len == 0 || memcmp(plain, data, len) == 0));
	crypt_free_plain(plain, plain_len);

	FUZZ_CHECK(open_file(&key, 1, sealed, sealed_len - 1 - pick % 8) < 0);
	at = ((size_t)pick * 2654435761u) % sealed_len;
	sealed[at] ^= (uint8_t)(1u << (pick % 8));
	FUZZ_CHECK(open_file(&key, 1, sealed, sealed_len) < 0);
	free(sealed);
}

static void round_trip_value(const char *s, uint8_t pick)
{
	char *sealed, *plain;
	size_t n, at;
	char old;

	FUZZ_CHECK(crypt_seal_value(crypt_key_public(key), s, &sealed) == 0);
	FUZZ_CHECK(strncmp(sealed, CRYPT_VALUE_V1_PREFIX,
			   strlen(CRYPT_VALUE_V1_PREFIX)) == 0);
	FUZZ_CHECK(open_value(sealed, &plain) == 0);
	FUZZ_CHECK(strcmp(plain, s) == 0);
	free_secret(plain);

	/* Any other byte anywhere, a NUL (truncation) included. */
	n = strlen(sealed);
	at = ((size_t)pick * 2654435761u) % n;
	old = sealed[at];
	sealed[at] = (char)(old + 1 + pick % 255);
	if (sealed[at] == old)
		sealed[at] = (char)(old ^ 1);
	FUZZ_CHECK(open_value(sealed, &plain) < 0);
	free(sealed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct crypt_key *keys[2] = { NULL, key };
	uint8_t mode, *buf;
	char *s, *plain;
	size_t len;

	if (size > FUZZ_INPUT_MAX)
		return -1;
	if (size < 1)
		return 0;
	mode = data[0];
	len = size - 1;
	/* Exact-size copies, so that ASan sees any read past the end. */
	buf = malloc(len ? len : 1);
	s = malloc(len + 1);
	FUZZ_CHECK(buf && s);
	memcpy(buf, data + 1, len);
	memcpy(s, data + 1, len);
	s[len] = '\0';

	switch (mode % 4) {
	case 0:
		if (mode & 0x10)
			FUZZ_CHECK(open_file(NULL, 0, buf, len) != 0);
		else if (mode & 0x20)
			open_file(keys, 2, buf, len);
		else
			open_file(&key, 1, buf, len);
		break;
	case 1:
		if (open_value(s, &plain) == 0)
			free_secret(plain);
		break;
	case 2:
		round_trip_file(buf, len, (uint8_t)(mode >> 2));
		break;
	case 3:
		round_trip_value(s, (uint8_t)(mode >> 2));
		break;
	}
	free(s);
	free(buf);
	return 0;
}

/*
 * Unit tests for common/crypto.c: key files (round trip, permissions, bad
 * content), public key text, encrypted files and encrypted values (round
 * trips, wrong keys, key rotation, every tampered byte, every truncation,
 * unknown versions), and that no error message carries plaintext or key
 * material.
 *
 * Plaintexts hold the marker MARK; every error message is checked not to
 * contain it.  Works in a fresh directory under $TMPDIR (or /tmp), removed
 * at the end.  Run it under valgrind or ASan to see that sodium memory is
 * freed.  Exits 0 when every check passed.
 */
#include <ctype.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/crypto.h"
#include "common/util.h"
#include "tests/unit/check.h"

#define MARK "S3CR3T-PLAINTEXT"

static char tmpdir[128];

/* A path inside tmpdir; each call overwrites the previous result of the
 * same slot. */
static const char *tpath(int slot, const char *name)
{
	static char buf[4][256];

	snprintf(buf[slot], sizeof(buf[slot]), "%s/%s", tmpdir, name);
	return buf[slot];
}

static int write_file(const char *path, const void *data, size_t len,
		      mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, data, len);
	if (fchmod(fd, mode) < 0 || n != (ssize_t)len) {
		close(fd);
		return -1;
	}
	return close(fd);
}

/* err must not contain secret (a plaintext, a key text). */
#define CHECK_NO_LEAK(err, secret)                                        \
	do {                                                              \
		if (strstr((err), (secret))) {                            \
			fprintf(stderr, "%s:%d: error \"%s\" leaks \"%s\"\n", \
				__FILE__, __LINE__, (err), (secret));     \
			check_failed++;                                   \
		}                                                         \
	} while (0)

/* err must not contain the number n as a whole word: a length.  Digits
 * inside a key id (hex) or another number are not it, so a random key id
 * cannot fail the check. */
static int has_word(const char *err, const char *w)
{
	size_t n = strlen(w);

	for (const char *p = strstr(err, w); p; p = strstr(p + 1, w))
		if ((p == err || !isalnum((unsigned char)p[-1])) &&
		    !isalnum((unsigned char)p[n]))
			return 1;
	return 0;
}

#define CHECK_NO_LEAK_WORD(err, word)                                     \
	do {                                                              \
		if (has_word((err), (word))) {                            \
			fprintf(stderr, "%s:%d: error \"%s\" leaks \"%s\"\n", \
				__FILE__, __LINE__, (err), (word));       \
			check_failed++;                                   \
		}                                                         \
	} while (0)

/* err must contain part. */
#define CHECK_HAS(err, part)                                              \
	do {                                                              \
		if (!strstr((err), (part))) {                             \
			fprintf(stderr,                                   \
				"%s:%d: error \"%s\" lacks \"%s\"\n",     \
				__FILE__, __LINE__, (err), (part));       \
			check_failed++;                                   \
		}                                                         \
	} while (0)

static void key_hex(const struct crypt_key *k, char hex[17])
{
	crypt_id_hex(crypt_key_id(k), hex);
}

/* Base64 of the secret key in a key file saved by crypt_key_save(): its
 * third line.  Returns false if the file does not look like that. */
static bool saved_secret_b64(const char *path, char out[45])
{
	size_t len;
	char *text = check_read_file(path, &len);
	char *p;
	bool ok = false;

	if (!text)
		return false;
	p = strchr(text, '\n');
	if (p)
		p = strchr(p + 1, '\n');
	if (p && strlen(p + 1) == 45 && p[45] == '\n') {
		memcpy(out, p + 1, 44);
		out[44] = '\0';
		ok = true;
	}
	sodium_memzero(text, len);
	free(text);
	return ok;
}

/* ---- keys ---------------------------------------------------------- */

static void test_key_round_trip(void)
{
	struct crypt_key *k = NULL, *l = NULL;
	char err[512] = "", pub[45], hex[17], want[256];
	const char *path = tpath(0, "round.key");
	const mode_t masks[] = { 0, 0777, 022 };
	struct stat st;
	size_t len;
	char *text;
	uint8_t id[CRYPT_KEY_ID_LEN];

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k)
		return;
	crypt_key_id_of(crypt_key_public(k), id);
	CHECK(memcmp(id, crypt_key_id(k), CRYPT_KEY_ID_LEN) == 0);
	key_hex(k, hex);
	CHECK_INT(strlen(hex), ==, 16);
	CHECK(strspn(hex, "0123456789abcdef") == 16);

	for (size_t i = 0; i < ARRAY_SIZE(masks); i++) {
		mode_t old = umask(masks[i]);

		unlink(path);
		CHECK_INT(crypt_key_save(k, path, err, sizeof(err)), ==, 0);
		umask(old);
		CHECK_INT(stat(path, &st), ==, 0);
		CHECK_INT(st.st_mode & 07777, ==, 0600);
		CHECK(S_ISREG(st.st_mode));
	}

	/* The exact text of format 3. */
	crypt_pubkey_text(crypt_key_public(k), pub);
	snprintf(want, sizeof(want),
		 "# dbswap secret key (X25519). Keep it secret.\n"
		 "# public key: %s\n",
		 pub);
	text = check_read_file(path, &len);
	CHECK(text != NULL);
	if (text) {
		CHECK_INT(len, ==, strlen(want) + 45);
		CHECK(strncmp(text, want, strlen(want)) == 0);
		CHECK(text[len - 1] == '\n');
		sodium_memzero(text, len);
		free(text);
	}

	CHECK_INT(crypt_key_load(path, &l, err, sizeof(err)), ==, 0);
	if (l) {
		CHECK(memcmp(crypt_key_public(k), crypt_key_public(l),
			     32) == 0);
		CHECK(memcmp(crypt_key_id(k), crypt_key_id(l), 8) == 0);
	}
	crypt_key_free(l);
	l = NULL;

	/* Followed through a symlink, as in a Kubernetes secret volume. */
	unlink(tpath(1, "link.key"));
	CHECK_INT(symlink(path, tpath(1, "link.key")), ==, 0);
	CHECK_INT(crypt_key_load(tpath(1, "link.key"), &l, err, sizeof(err)),
		  ==, 0);
	if (l)
		CHECK(memcmp(crypt_key_id(k), crypt_key_id(l), 8) == 0);
	crypt_key_free(l);
	crypt_key_free(k);
	crypt_key_free(NULL);
}

static void test_key_save_refuses(void)
{
	struct crypt_key *k = NULL, *other = NULL, *l = NULL;
	char err[512] = "", want[1024];
	const char *path = tpath(0, "exists.key");
	const char *dangling = tpath(1, "dangling.key");

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	CHECK_INT(crypt_key_generate(&other), ==, 0);
	if (!k || !other)
		goto out;
	unlink(path);
	CHECK_INT(crypt_key_save(k, path, err, sizeof(err)), ==, 0);
	CHECK_INT(crypt_key_save(other, path, err, sizeof(err)), ==, -EEXIST);
	snprintf(want, sizeof(want), "%s exists; not overwriting a key", path);
	CHECK_STR(err, want);
	/* The first key is still there. */
	CHECK_INT(crypt_key_load(path, &l, err, sizeof(err)), ==, 0);
	if (l)
		CHECK(memcmp(crypt_key_id(k), crypt_key_id(l), 8) == 0);

	/* A dangling symlink is not followed to create its target. */
	unlink(dangling);
	CHECK_INT(symlink(tpath(2, "target.key"), dangling), ==, 0);
	CHECK_INT(crypt_key_save(k, dangling, err, sizeof(err)), ==, -EEXIST);
	CHECK_INT(access(tpath(2, "target.key"), F_OK), ==, -1);

	/* A directory that does not exist: an error naming the path. */
	CHECK_INT(crypt_key_save(k, tpath(2, "nodir/x.key"), err, sizeof(err)),
		  ==, -ENOENT);
	CHECK_HAS(err, tpath(2, "nodir/x.key"));
out:
	crypt_key_free(l);
	crypt_key_free(k);
	crypt_key_free(other);
}

static void test_key_load_modes(void)
{
	static const mode_t bad[] = { 0640, 0604, 0660, 0644,
				      0601, 0610, 0666 };
	static const mode_t good[] = { 0600, 0400, 0700 };
	struct crypt_key *k = NULL, *l = NULL;
	char err[512], want[1024], secret[45];
	const char *path = tpath(0, "mode.key");

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k)
		return;
	unlink(path);
	CHECK_INT(crypt_key_save(k, path, err, sizeof(err)), ==, 0);
	CHECK(saved_secret_b64(path, secret));
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		CHECK_INT(chmod(path, bad[i]), ==, 0);
		l = NULL;
		err[0] = '\0';
		CHECK_INT(crypt_key_load(path, &l, err, sizeof(err)), ==,
			  -EPERM);
		CHECK(l == NULL);
		snprintf(want, sizeof(want),
			 "key file %s is accessible by group or others "
			 "(mode %04o); run chmod 600 %s",
			 path, (unsigned)bad[i], path);
		CHECK_STR(err, want);
		CHECK_NO_LEAK(err, secret);
	}
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		CHECK_INT(chmod(path, good[i]), ==, 0);
		l = NULL;
		CHECK_INT(crypt_key_load(path, &l, err, sizeof(err)), ==, 0);
		crypt_key_free(l);
	}
	crypt_key_free(k);
}

/* Writes text as a 0600 key file and expects loading it to fail with r and
 * a message equal to "key file PATH: " msg, or with r 0 to succeed. */
#define CHECK_LOAD_FAILS(text, len, r, msg) \
	check_load_fails(__LINE__, text, len, r, msg)
static void check_load_fails(int line, const char *text, size_t len, int r,
			     const char *msg)
{
	struct crypt_key *k = NULL;
	const char *path = tpath(0, "bad.key");
	char err[512] = "", want[1024];
	int got;

	unlink(path);
	if (write_file(path, text, len, 0600) < 0) {
		fprintf(stderr, "%s:%d: cannot write %s\n", __FILE__, line,
			path);
		check_failed++;
		return;
	}
	got = crypt_key_load(path, &k, err, sizeof(err));
	snprintf(want, sizeof(want), "key file %s: %s", path, msg);
	if (r == 0 ? got != 0 || !k
		   : got != r || k || strcmp(err, want) != 0) {
		fprintf(stderr,
			"%s:%d: crypt_key_load = %d \"%s\", want %d \"%s\"\n",
			__FILE__, line, got, err, r, want);
		check_failed++;
	}
	crypt_key_free(k);
}

static void test_key_load_errors(void)
{
	struct crypt_key *k = NULL;
	char err[512] = "", want[1024], secret[45], text[512], *big;
	const char *missing = tpath(0, "missing.key");
	uint8_t raw[33];

	unlink(missing);
	CHECK_INT(crypt_key_load(missing, &k, err, sizeof(err)), ==, -ENOENT);
	snprintf(want, sizeof(want), "key file %s: No such file or directory",
		 missing);
	CHECK_STR(err, want);

	CHECK_INT(mkdir(tpath(0, "dir.key"), 0700), ==, 0);
	CHECK_INT(crypt_key_load(tpath(0, "dir.key"), &k, err, sizeof(err)),
		  ==, -EISDIR);
	CHECK_HAS(err, tpath(0, "dir.key"));
	rmdir(tpath(0, "dir.key"));

	/* A FIFO is refused without blocking on open. */
	CHECK_INT(mkfifo(tpath(0, "fifo.key"), 0600), ==, 0);
	CHECK_INT(crypt_key_load(tpath(0, "fifo.key"), &k, err, sizeof(err)),
		  ==, -EINVAL);
	CHECK_HAS(err, "not a regular file");
	unlink(tpath(0, "fifo.key"));

	/* Unreadable: only meaningful when not root, who reads anything. */
	if (geteuid() != 0) {
		CHECK_INT(write_file(tpath(0, "noread.key"), "x", 1, 0), ==, 0);
		CHECK_INT(crypt_key_load(tpath(0, "noread.key"), &k, err,
					 sizeof(err)),
			  ==, -EACCES);
		snprintf(want, sizeof(want), "key file %s: Permission denied",
			 tpath(0, "noread.key"));
		CHECK_STR(err, want);
		unlink(tpath(0, "noread.key"));
	}
	CHECK(k == NULL);

	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(secret, sizeof(secret), raw, 32,
			  sodium_base64_VARIANT_ORIGINAL);

	/* Good variants first: comments, blanks, CRLF, no final newline. */
	snprintf(text, sizeof(text), "# c\n\n  \t\r\n  %s \r\n# end\n\n",
		 secret);
	CHECK_LOAD_FAILS(text, strlen(text), 0, "");
	CHECK_LOAD_FAILS(secret, 44, 0, "");

	CHECK_LOAD_FAILS("", 0, -EINVAL, "no key line");
	CHECK_LOAD_FAILS("# only\n# comments\n\n", 19, -EINVAL, "no key line");
	snprintf(text, sizeof(text), "# a\n# b\n%.43s!\n", secret);
	CHECK_LOAD_FAILS(text, strlen(text), -EINVAL,
			 "line 3: not a base64 X25519 secret key");
	/* base64 of 31 and of 33 bytes */
	sodium_bin2base64(text, sizeof(text), raw, 31,
			  sodium_base64_VARIANT_ORIGINAL);
	CHECK_LOAD_FAILS(text, strlen(text), -EINVAL,
			 "line 1: not a base64 X25519 secret key");
	sodium_bin2base64(text, sizeof(text), raw, 33,
			  sodium_base64_VARIANT_ORIGINAL);
	CHECK_LOAD_FAILS(text, strlen(text), -EINVAL,
			 "line 1: not a base64 X25519 secret key");
	/* URL-safe alphabet, no padding, a space inside. */
	sodium_bin2base64(text, sizeof(text), raw, 32,
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	CHECK_LOAD_FAILS(text, strlen(text), -EINVAL,
			 "line 1: not a base64 X25519 secret key");
	snprintf(text, sizeof(text), "%.20s %s\n", secret, secret + 20);
	CHECK_LOAD_FAILS(text, strlen(text), -EINVAL,
			 "line 1: not a base64 X25519 secret key");
	snprintf(text, sizeof(text), "# k\n%s\n\n%s\n", secret, secret);
	CHECK_LOAD_FAILS(text, strlen(text), -EINVAL,
			 "line 4: a second key line "
			 "(a key file holds one key)");
	memcpy(text, "# x\0y\n", 6);
	memcpy(text + 6, secret, 44);
	CHECK_LOAD_FAILS(text, 50, -EINVAL, "holds a NUL byte");

	big = malloc(CRYPT_KEY_FILE_MAX + 100);
	if (big) {
		memset(big, '#', CRYPT_KEY_FILE_MAX + 100);
		memcpy(big, secret, 44);
		big[44] = '\n';
		snprintf(want, sizeof(want), "larger than %d bytes",
			 CRYPT_KEY_FILE_MAX);
		CHECK_LOAD_FAILS(big, CRYPT_KEY_FILE_MAX + 1, -EFBIG, want);
		CHECK_LOAD_FAILS(big, CRYPT_KEY_FILE_MAX, 0, "");
		free(big);
	}
	/* The message for a bad key line never shows the line. */
	snprintf(text, sizeof(text), "%s\n%.40sAAAA\n", secret, secret);
	CHECK_LOAD_FAILS(text, strlen(text), -EINVAL,
			 "line 2: a second key line "
			 "(a key file holds one key)");
	unlink(tpath(0, "bad.key"));
}

static void test_pubkey_text(void)
{
	struct crypt_key *k = NULL;
	char pub[CRYPT_PUBKEY_TEXT_LEN + 1], text[128];
	uint8_t pk[32], raw[33];

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k)
		return;
	crypt_pubkey_text(crypt_key_public(k), pub);
	CHECK_INT(strlen(pub), ==, CRYPT_PUBKEY_TEXT_LEN);
	CHECK(pub[43] == '=');
	CHECK_INT(crypt_pubkey_parse(pub, pk), ==, 0);
	CHECK(memcmp(pk, crypt_key_public(k), 32) == 0);

	snprintf(text, sizeof(text), " \t\r\n%s\r\n\n ", pub);
	memset(pk, 0, sizeof(pk));
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, 0);
	CHECK(memcmp(pk, crypt_key_public(k), 32) == 0);

	CHECK_INT(crypt_pubkey_parse("", pk), ==, -EINVAL);
	CHECK_INT(crypt_pubkey_parse("   \n", pk), ==, -EINVAL);
	CHECK_INT(crypt_pubkey_parse(NULL, pk), ==, -EINVAL);
	snprintf(text, sizeof(text), "%.43s", pub); /* padding dropped */
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);
	snprintf(text, sizeof(text), "%sA", pub);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);
	snprintf(text, sizeof(text), "%s x", pub);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);
	snprintf(text, sizeof(text), "%s\n%s", pub, pub);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);
	snprintf(text, sizeof(text), "%.20s %s", pub, pub + 21);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);
	snprintf(text, sizeof(text), "%.10s*%s", pub, pub + 11);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);

	/* Non-canonical: the last character's two unused bits set. */
	memset(raw, 0, sizeof(raw));
	sodium_bin2base64(text, sizeof(text), raw, 32,
			  sodium_base64_VARIANT_ORIGINAL);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, 0);
	text[42] = 'B';
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);

	/* URL-safe alphabet: 0xfb 0xff gives "-_" there, "+/" here. */
	memset(raw, 0xfb, sizeof(raw));
	sodium_bin2base64(text, sizeof(text), raw, 32,
			  sodium_base64_VARIANT_URLSAFE);
	CHECK(strpbrk(text, "-_") != NULL);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);

	/* 31 and 33 bytes. */
	sodium_bin2base64(text, sizeof(text), raw, 31,
			  sodium_base64_VARIANT_ORIGINAL);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);
	sodium_bin2base64(text, sizeof(text), raw, 33,
			  sodium_base64_VARIANT_ORIGINAL);
	CHECK_INT(crypt_pubkey_parse(text, pk), ==, -EINVAL);
	crypt_key_free(k);
}

/* ---- encrypted files ------------------------------------------------ */

static const char file_plain[] =
	"DATABASE_URL=postgresql://app:" MARK "@db.internal/app\n"
	"PGPASSWORD='" MARK "'\n";

/* Seals file_plain to k; the caller frees *out. */
static bool seal_test_file(const struct crypt_key *k, uint8_t **out,
			   size_t *len)
{
	int r = crypt_seal_file(crypt_key_public(k),
				(const uint8_t *)file_plain,
				strlen(file_plain), out, len);

	CHECK_INT(r, ==, 0);
	return r == 0;
}

static void test_file_round_trip(void)
{
	struct crypt_key *k = NULL;
	uint8_t *sealed = NULL, *plain = NULL, *big = NULL;
	size_t sealed_len = 0, plain_len = 0;
	const size_t big_len = 200 * 1024;
	char err[512] = "";

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k)
		return;

	if (seal_test_file(k, &sealed, &sealed_len)) {
		CHECK_INT(sealed_len, ==, 64 + strlen(file_plain));
		CHECK(memcmp(sealed, "DBSWAP", 6) == 0);
		CHECK_INT(sealed[6], ==, 1);
		CHECK_INT(sealed[7], ==, 0);
		CHECK(memcmp(sealed + 8, crypt_key_id(k), 8) == 0);
		CHECK(crypt_is_sealed_file(sealed, sealed_len));
		CHECK(!memmem(sealed, sealed_len, MARK, strlen(MARK)));
		CHECK_INT(crypt_open_file(&k, 1, sealed, sealed_len, &plain,
					  &plain_len, err, sizeof(err)),
			  ==, 0);
		CHECK_INT(plain_len, ==, strlen(file_plain));
		if (plain) {
			CHECK(memcmp(plain, file_plain, plain_len) == 0);
			CHECK(plain[plain_len] == '\0');
		}
		crypt_free_plain(plain, plain_len);
		free(sealed);
	}

	/* Empty plaintext, given as NULL. */
	sealed = NULL;
	CHECK_INT(crypt_seal_file(crypt_key_public(k), NULL, 0, &sealed,
				  &sealed_len),
		  ==, 0);
	CHECK_INT(sealed_len, ==, 64);
	plain = NULL;
	plain_len = 99;
	CHECK_INT(crypt_open_file(&k, 1, sealed, sealed_len, &plain, &plain_len,
				  err, sizeof(err)),
		  ==, 0);
	CHECK_INT(plain_len, ==, 0);
	CHECK(plain && plain[0] == '\0');
	crypt_free_plain(plain, plain_len);
	free(sealed);

	/* 200 KiB of random bytes, NULs included: files are bytes. */
	big = malloc(big_len);
	CHECK(big != NULL);
	if (!big)
		goto out;
	randombytes_buf(big, big_len);
	sealed = NULL;
	CHECK_INT(crypt_seal_file(crypt_key_public(k), big, big_len, &sealed,
				  &sealed_len),
		  ==, 0);
	CHECK_INT(sealed_len, ==, 64 + big_len);
	plain = NULL;
	CHECK_INT(crypt_open_file(&k, 1, sealed, sealed_len, &plain, &plain_len,
				  err, sizeof(err)),
		  ==, 0);
	CHECK_INT(plain_len, ==, big_len);
	CHECK(plain && memcmp(plain, big, big_len) == 0);
	crypt_free_plain(plain, plain_len);
	crypt_free_plain(NULL, 0);
	free(sealed);
	free(big);
out:
	crypt_key_free(k);
}

static void test_file_not_sealed(void)
{
	struct crypt_key *k = NULL;
	uint8_t *plain = (uint8_t *)"junk";
	size_t plain_len = 5;
	char err[512] = "";
	const uint8_t *text = (const uint8_t *)file_plain;

	CHECK(!crypt_is_sealed_file(text, strlen(file_plain)));
	CHECK(!crypt_is_sealed_file((const uint8_t *)"DBSWA", 5));
	CHECK(!crypt_is_sealed_file((const uint8_t *)"dbswap!", 7));
	CHECK(!crypt_is_sealed_file(NULL, 0));
	CHECK(crypt_is_sealed_file((const uint8_t *)"DBSWAP", 6));
	CHECK(crypt_is_sealed_file((const uint8_t *)"DBSWAP\2\0anything", 16));

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	CHECK_INT(crypt_open_file(&k, 1, text, strlen(file_plain), &plain,
				  &plain_len, err, sizeof(err)),
		  ==, -EINVAL);
	CHECK(plain == NULL);
	CHECK_INT(plain_len, ==, 0);
	CHECK_NO_LEAK(err, MARK);
	CHECK_INT(crypt_open_file(&k, 1, NULL, 0, &plain, &plain_len, err,
				  sizeof(err)),
		  ==, -EBADMSG);
	CHECK_STR(err, "truncated (shorter than the smallest encrypted file)");
	crypt_key_free(k);
}

static void test_file_wrong_key(void)
{
	struct crypt_key *a = NULL, *b = NULL, *c = NULL;
	uint8_t *sealed = NULL, *plain = NULL;
	size_t sealed_len = 0, plain_len = 0;
	char err[512] = "", ha[17], hb[17], hc[17], want[1024];

	CHECK_INT(crypt_key_generate(&a), ==, 0);
	CHECK_INT(crypt_key_generate(&b), ==, 0);
	CHECK_INT(crypt_key_generate(&c), ==, 0);
	if (!a || !b || !c || !seal_test_file(a, &sealed, &sealed_len))
		goto out;
	key_hex(a, ha);
	key_hex(b, hb);
	key_hex(c, hc);

	CHECK_INT(crypt_open_file(&b, 1, sealed, sealed_len, &plain, &plain_len,
				  err, sizeof(err)),
		  ==, -ENOKEY);
	snprintf(want, sizeof(want),
		 "sealed to a key the agent does not have (its keys: %s)", hb);
	CHECK_STR(err, want);
	CHECK(plain == NULL);
	/* The header's id is not shown (see test_value_looks_sealed()). */
	CHECK_NO_LEAK(err, ha);

	{
		struct crypt_key *bc[] = { b, NULL, c };

		CHECK_INT(crypt_open_file(bc, 3, sealed, sealed_len, &plain,
					  &plain_len, err, sizeof(err)),
			  ==, -ENOKEY);
		snprintf(want, sizeof(want),
			 "sealed to a key the agent does not have "
			 "(its keys: %s, %s)",
			 hb, hc);
		CHECK_STR(err, want);
	}
	CHECK_INT(crypt_open_file(NULL, 0, sealed, sealed_len, &plain,
				  &plain_len, err, sizeof(err)),
		  ==, -ENOKEY);
	snprintf(want, sizeof(want),
		 "sealed to a key the agent does not have "
		 "(the agent has no key)");
	CHECK_STR(err, want);

	/* Many keys: the list is cut, the message stays whole. */
	{
		struct crypt_key *many[40];

		for (size_t i = 0; i < ARRAY_SIZE(many); i++)
			many[i] = b;
		CHECK_INT(crypt_open_file(many, ARRAY_SIZE(many), sealed,
					  sealed_len, &plain, &plain_len, err,
					  sizeof(err)),
			  ==, -ENOKEY);
		CHECK_HAS(err, ", ...)");
		CHECK_HAS(err, hb);
		CHECK_NO_LEAK(err, ha);
	}

	/* Too small a buffer truncates, still NUL-terminated. */
	{
		char small[10];

		CHECK_INT(crypt_open_file(&b, 1, sealed, sealed_len, &plain,
					  &plain_len, small, sizeof(small)),
			  ==, -ENOKEY);
		CHECK_INT(strlen(small), ==, 9);
		CHECK_INT(crypt_open_file(&b, 1, sealed, sealed_len, &plain,
					  &plain_len, NULL, 0),
			  ==, -ENOKEY);
	}
	CHECK_NO_LEAK(err, MARK);
	free(sealed);
out:
	crypt_key_free(a);
	crypt_key_free(b);
	crypt_key_free(c);
}

/* Rotation: the agent holds the old and the new key; a file sealed to
 * either opens, whatever the order. */
static void test_file_two_keys(void)
{
	struct crypt_key *old = NULL, *new = NULL;
	uint8_t *sealed = NULL, *plain = NULL;
	size_t sealed_len = 0, plain_len = 0;
	char err[512] = "";

	CHECK_INT(crypt_key_generate(&old), ==, 0);
	CHECK_INT(crypt_key_generate(&new), ==, 0);
	if (!old || !new)
		goto out;
	{
		struct crypt_key *held[2][2] = { { old, new }, { new, old } };
		struct crypt_key *to[2] = { old, new };

		for (size_t i = 0; i < 2; i++) {
			for (size_t j = 0; j < 2; j++) {
				sealed = NULL;
				if (!seal_test_file(to[j], &sealed,
						    &sealed_len))
					continue;
				plain = NULL;
				CHECK_INT(crypt_open_file(held[i], 2, sealed,
							  sealed_len, &plain,
							  &plain_len, err,
							  sizeof(err)),
					  ==, 0);
				CHECK(plain && memcmp(plain, file_plain,
						      plain_len) == 0);
				crypt_free_plain(plain, plain_len);
				free(sealed);
			}
		}
	}
out:
	crypt_key_free(old);
	crypt_key_free(new);
}

/* Changing any single byte of an encrypted file makes it fail. */
static void test_file_tampered(void)
{
	struct crypt_key *k = NULL;
	uint8_t *sealed = NULL, *plain = NULL;
	size_t sealed_len = 0, plain_len = 0;
	char err[512] = "";

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k || !seal_test_file(k, &sealed, &sealed_len))
		goto out;
	for (size_t i = 0; i < sealed_len; i++) {
		for (unsigned bit = 0; bit < 8; bit += 7) {
			int r, want;

			sealed[i] ^= (uint8_t)(1u << bit);
			plain = NULL;
			err[0] = '\0';
			r = crypt_open_file(&k, 1, sealed, sealed_len, &plain,
					    &plain_len, err, sizeof(err));
			sealed[i] ^= (uint8_t)(1u << bit);
			want = i < 8 ? -EINVAL : i < 16 ? -ENOKEY : -EBADMSG;
			if (r != want || plain) {
				fprintf(stderr,
					"%s:%d: byte %zu bit %u changed: "
					"%d \"%s\", want %d\n",
					__FILE__, __LINE__, i, bit, r, err,
					want);
				check_failed++;
			}
			CHECK_NO_LEAK(err, MARK);
			crypt_free_plain(plain, plain_len);
		}
	}
	/* Unchanged, it still opens. */
	plain = NULL;
	CHECK_INT(crypt_open_file(&k, 1, sealed, sealed_len, &plain, &plain_len,
				  err, sizeof(err)),
		  ==, 0);
	crypt_free_plain(plain, plain_len);

	/* The exact messages. */
	{
		char want[300], hex[17];

		key_hex(k, hex);
		sealed[sealed_len - 1] ^= 1;
		CHECK_INT(crypt_open_file(&k, 1, sealed, sealed_len, &plain,
					  &plain_len, err, sizeof(err)),
			  ==, -EBADMSG);
		snprintf(want, sizeof(want),
			 "does not open with key %s: tampered with, "
			 "truncated, or sealed to another key",
			 hex);
		CHECK_STR(err, want);
		sealed[sealed_len - 1] ^= 1;

		sealed[6] = 2;
		CHECK_INT(crypt_open_file(&k, 1, sealed, sealed_len, &plain,
					  &plain_len, err, sizeof(err)),
			  ==, -EINVAL);
		CHECK_STR(err, "unsupported format version 2 "
			       "(this agent reads 1)");
		sealed[6] = 1;
		sealed[7] = 1;
		CHECK_INT(crypt_open_file(&k, 1, sealed, sealed_len, &plain,
					  &plain_len, err, sizeof(err)),
			  ==, -EINVAL);
		CHECK_STR(err, "reserved header byte is 1, must be 0");
		sealed[7] = 0;
	}
	free(sealed);
out:
	crypt_key_free(k);
}

/* Every proper prefix of an encrypted file fails. */
static void test_file_truncated(void)
{
	struct crypt_key *k = NULL;
	uint8_t *sealed = NULL, *plain = NULL, *cut;
	size_t sealed_len = 0, plain_len = 0;
	char err[512] = "";

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k || !seal_test_file(k, &sealed, &sealed_len))
		goto out;
	for (size_t len = 0; len < sealed_len; len++) {
		int r;

		/* A buffer of exactly len bytes, so ASan sees any over-read. */
		cut = malloc(len ? len : 1);
		if (!cut)
			break;
		memcpy(cut, sealed, len);
		plain = NULL;
		r = crypt_open_file(&k, 1, cut, len, &plain, &plain_len, err,
				    sizeof(err));
		if (r >= 0 || plain) {
			fprintf(stderr, "%s:%d: cut to %zu bytes: %d\n",
				__FILE__, __LINE__, len, r);
			check_failed++;
		}
		if (len < 64 && r != -EBADMSG) {
			fprintf(stderr, "%s:%d: cut to %zu bytes: %d \"%s\"\n",
				__FILE__, __LINE__, len, r, err);
			check_failed++;
		}
		CHECK_NO_LEAK(err, MARK);
		crypt_free_plain(plain, plain_len);
		free(cut);
	}
	CHECK_INT(crypt_open_file(&k, 1, sealed, 63, &plain, &plain_len, err,
				  sizeof(err)),
		  ==, -EBADMSG);
	CHECK_STR(err, "truncated (shorter than the smallest encrypted file)");
	free(sealed);
out:
	crypt_key_free(k);
}

static void test_seal_bad_pubkey(void)
{
	static const uint8_t zero[32];
	uint8_t *out = (uint8_t *)"x";
	size_t out_len = 7;
	char *value = (char *)"x";

	CHECK_INT(crypt_seal_file(zero, (const uint8_t *)"a", 1, &out,
				  &out_len),
		  ==, -EINVAL);
	CHECK(out == NULL);
	CHECK_INT(out_len, ==, 0);
	CHECK_INT(crypt_seal_value(zero, "a", &value), ==, -EINVAL);
	CHECK(value == NULL);
}

/* ---- encrypted values ----------------------------------------------- */

static void test_value_round_trip(void)
{
	static const char *const values[] = {
		"pw-" MARK,
		"",
		"with spaces and \"double\" and 'single' quotes " MARK,
		"line one\nline two\r\n\ttab ${NOT_EXPANDED} \\ # " MARK,
		"postgresql://u:" MARK "@h:5432/db?sslmode=require",
	};
	struct crypt_key *k = NULL, *other = NULL;
	char err[512] = "";

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	CHECK_INT(crypt_key_generate(&other), ==, 0);
	if (!k || !other)
		goto out;
	for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
		struct crypt_key *keys[] = { other, k };
		char *sealed = NULL, *plain = NULL;
		size_t n = strlen(values[i]);

		CHECK_INT(crypt_seal_value(crypt_key_public(k), values[i],
					   &sealed),
			  ==, 0);
		if (!sealed)
			continue;
		CHECK(strncmp(sealed, "enc:v1:", 7) == 0);
		CHECK_INT(strlen(sealed), ==, 7 + 4 * ((56 + n + 2) / 3));
		CHECK(crypt_is_sealed_value(sealed));
		CHECK(!strstr(sealed, MARK));
		CHECK(strspn(sealed + 7, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					 "abcdefghijklmnopqrstuvwxyz"
					 "0123456789+/=") ==
		      strlen(sealed + 7));
		CHECK_INT(crypt_open_value(keys, 2, sealed, &plain, err,
					   sizeof(err)),
			  ==, 0);
		CHECK_STR(plain, values[i]);
		free_secret(plain);

		plain = (char *)"x";
		CHECK_INT(crypt_open_value(&other, 1, sealed, &plain, err,
					   sizeof(err)),
			  ==, -ENOKEY);
		CHECK(plain == NULL);
		CHECK_NO_LEAK(err, MARK);
		free(sealed);
	}
out:
	crypt_key_free(k);
	crypt_key_free(other);
}

/* value must fail to open with r (0: any error) and a message containing
 * msg (NULL: any). */
#define CHECK_VALUE_FAILS(k, value, r, msg) \
	check_value_fails(__LINE__, k, value, r, msg)
static void check_value_fails(int line, struct crypt_key *k,
			      const char *value, int r, const char *msg)
{
	char err[512] = "", *plain = NULL;
	int got = crypt_open_value(&k, 1, value, &plain, err, sizeof(err));

	if (got >= 0 || plain || (r && got != r) ||
	    (msg && !strstr(err, msg))) {
		fprintf(stderr, "%s:%d: crypt_open_value = %d \"%s\", want %d "
				"\"%s\"\n",
			__FILE__, line, got, err, r, msg ? msg : "");
		check_failed++;
	}
	if (!err[0]) {
		fprintf(stderr, "%s:%d: no error message\n", __FILE__, line);
		check_failed++;
	}
	CHECK_NO_LEAK(err, MARK);
	free_secret(plain);
}

/* A value that only looks encrypted: "enc:v1:" and a base64 password, or
 * a mis-paste.  Its decoded bytes are the password's: the error shows
 * neither the first eight as a key id nor its length, and it names the
 * agent's own key ids so an operator can tell which key is missing. */
static void test_value_looks_sealed(void)
{
	static const char *const pws[] = {
		/* Long enough to pass the length check: 80 bytes. */
		"MyPasswd-is-this-long-secret-text-that-goes-on-and-on-and-on-"
		"and-on-1234567890AB",
		/* Too short to be a sealed value: 13 bytes. */
		"hunter2hunter",
	};
	struct crypt_key *k = NULL;
	char hk[17];

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k)
		return;
	key_hex(k, hk);
	for (size_t i = 0; i < ARRAY_SIZE(pws); i++) {
		size_t n = strlen(pws[i]);
		char value[256], err[512] = "", id[17], len[24], *plain = NULL;
		const size_t pre = strlen(CRYPT_VALUE_V1_PREFIX);
		int r;

		memcpy(value, CRYPT_VALUE_V1_PREFIX, pre);
		sodium_bin2base64(value + pre, sizeof(value) - pre,
				  (const unsigned char *)pws[i], n,
				  sodium_base64_VARIANT_ORIGINAL);
		r = crypt_open_value(&k, 1, value, &plain, err, sizeof(err));
		CHECK(r < 0);
		CHECK(plain == NULL);
		crypt_id_hex((const uint8_t *)pws[i], id);
		snprintf(len, sizeof(len), "%zu", n);
		CHECK_NO_LEAK(err, id);
		CHECK_NO_LEAK_WORD(err, len);
		CHECK_NO_LEAK(err, "hunter");
		if (r == -ENOKEY) {
			CHECK_HAS(err, "sealed to a key the agent does not "
				       "have");
			CHECK_HAS(err, hk);
		}
		/* No key at all: said so, still nothing of the value. */
		r = crypt_open_value(NULL, 0, value, &plain, err, sizeof(err));
		CHECK(r < 0);
		CHECK_NO_LEAK(err, id);
		CHECK_NO_LEAK_WORD(err, len);
	}
	crypt_key_free(k);
}

static void test_value_errors(void)
{
	struct crypt_key *k = NULL;
	char *sealed = NULL, *bad = NULL;
	size_t len;

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k)
		return;
	CHECK(!crypt_is_sealed_value("plain"));
	CHECK(!crypt_is_sealed_value("ENC:v1:AAAA"));
	CHECK(!crypt_is_sealed_value("enc"));
	CHECK(!crypt_is_sealed_value(NULL));
	CHECK(crypt_is_sealed_value("enc:"));

	CHECK_VALUE_FAILS(k, "plain " MARK, -EINVAL, "not an encrypted value");
	CHECK_VALUE_FAILS(k, "enc:v2:AAAA", -EINVAL,
			  "unsupported encrypted value version (this agent "
			  "reads v1)");
	CHECK_VALUE_FAILS(k, "enc:v10:AAAA", -EINVAL, "version (this");
	/* A digits-only password after "enc:v": not shown. */
	{
		char err[256] = "", *plain = NULL;

		CHECK(crypt_open_value(&k, 1, "enc:v867530991:AAAA", &plain,
				       err, sizeof(err)) == -EINVAL);
		CHECK_NO_LEAK(err, "8675");
	}
	CHECK_VALUE_FAILS(k, "enc:", -EINVAL, "malformed encrypted value");
	CHECK_VALUE_FAILS(k, "enc:v1", -EINVAL, "malformed");
	CHECK_VALUE_FAILS(k, "enc:V1:AAAA", -EINVAL, "malformed");
	CHECK_VALUE_FAILS(k, "enc:v:AAAA", -EINVAL, "malformed");
	/* A password that merely starts with enc: is not quoted back. */
	CHECK_VALUE_FAILS(k, "enc:" MARK, -EINVAL, "malformed");
	CHECK_VALUE_FAILS(k, "enc:v1:", -EBADMSG, "truncated (shorter than the smallest encrypted value)");
	CHECK_VALUE_FAILS(k, "enc:v1:!!!!", -EINVAL, "not valid base64");
	CHECK_VALUE_FAILS(k, "enc:v1:AAAA AAAA", -EINVAL, "not valid base64");
	CHECK_VALUE_FAILS(k, "enc:v1:AAAA\n", -EINVAL, "not valid base64");
	CHECK_VALUE_FAILS(k, "enc:v1:AAA", -EINVAL, "not valid base64");
	CHECK_VALUE_FAILS(k, "enc:v1:AAAA", -EBADMSG, "truncated (shorter than the smallest encrypted value)");

	CHECK_INT(crypt_seal_value(crypt_key_public(k), "pw-" MARK, &sealed),
		  ==, 0);
	if (!sealed)
		goto out;
	len = strlen(sealed);
	bad = malloc(len + 2);
	if (!bad)
		goto out;

	/* Every truncation of the text fails. */
	for (size_t n = 0; n < len; n++) {
		memcpy(bad, sealed, n);
		bad[n] = '\0';
		CHECK_VALUE_FAILS(k, bad, 0, NULL);
	}
	/* Every character changed to another base64 character fails: the
	 * key id part with -ENOKEY, the box with -EBADMSG, a non-canonical
	 * last character with -EINVAL. */
	for (size_t i = 7; i < len; i++) {
		static const char alt[] = "AB+/";

		for (size_t j = 0; j < 4; j++) {
			if (sealed[i] == alt[j] || sealed[i] == '=')
				continue;
			memcpy(bad, sealed, len + 1);
			bad[i] = alt[j];
			CHECK_VALUE_FAILS(k, bad, 0, NULL);
		}
	}
	/* The key id part is the first 8 bytes: 10 base64 characters and
	 * some bits. */
	memcpy(bad, sealed, len + 1);
	bad[8] = bad[8] == 'A' ? 'B' : 'A';
	CHECK_VALUE_FAILS(k, bad, -ENOKEY, "sealed to a key the agent does not have");
	memcpy(bad, sealed, len + 1);
	bad[len - 4] = bad[len - 4] == 'A' ? 'B' : 'A';
	CHECK_VALUE_FAILS(k, bad, -EBADMSG, "does not open with key");
	/* Something appended. */
	snprintf(bad, len + 2, "%s=", sealed);
	CHECK_VALUE_FAILS(k, bad, -EINVAL, "not valid base64");
out:
	free(bad);
	free(sealed);
	crypt_key_free(k);
}

/* A value that decrypts to bytes with a NUL is refused: built by hand,
 * since crypt_seal_value() takes a C string. */
static void test_value_nul(void)
{
	static const char raw[] = "ab\0" MARK;
	struct crypt_key *k = NULL;
	uint8_t bin[8 + 48 + sizeof(raw) - 1];
	char text[7 + sodium_base64_ENCODED_LEN(sizeof(bin),
			sodium_base64_VARIANT_ORIGINAL)];

	CHECK_INT(crypt_key_generate(&k), ==, 0);
	if (!k)
		return;
	memcpy(bin, crypt_key_id(k), 8);
	CHECK_INT(crypto_box_seal(bin + 8, (const uint8_t *)raw,
				  sizeof(raw) - 1, crypt_key_public(k)),
		  ==, 0);
	memcpy(text, "enc:v1:", 7);
	sodium_bin2base64(text + 7, sizeof(text) - 7, bin, sizeof(bin),
			  sodium_base64_VARIANT_ORIGINAL);
	CHECK_VALUE_FAILS(k, text, -EINVAL, "decrypted value holds a NUL byte");

	/* Without the NUL the same construction opens: the test is fair. */
	{
		char *plain = NULL, err[256];
		uint8_t bin2[8 + 48 + 2];
		char text2[7 + sodium_base64_ENCODED_LEN(sizeof(bin2),
				sodium_base64_VARIANT_ORIGINAL)];

		memcpy(bin2, crypt_key_id(k), 8);
		crypto_box_seal(bin2 + 8, (const uint8_t *)"ab", 2,
				crypt_key_public(k));
		memcpy(text2, "enc:v1:", 7);
		sodium_bin2base64(text2 + 7, sizeof(text2) - 7, bin2,
				  sizeof(bin2), sodium_base64_VARIANT_ORIGINAL);
		CHECK_INT(crypt_open_value(&k, 1, text2, &plain, err,
					   sizeof(err)),
			  ==, 0);
		CHECK_STR(plain, "ab");
		free_secret(plain);
	}
	crypt_key_free(k);
}

/* Number of mappings of this process.  sodium_malloc() memory is mmap()ed
 * with guard pages, so neither ASan nor valgrind's leak check sees it; a
 * leak of it shows here as mappings that keep growing. */
static long count_mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	long n = 0;
	int c;

	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static void test_no_sodium_leak(void)
{
	struct crypt_key *k = NULL, *l = NULL;
	uint8_t *sealed = NULL, *plain = NULL;
	size_t sealed_len = 0, plain_len = 0;
	char err[512] = "", *value = NULL, *vplain = NULL;
	const char *path = tpath(0, "leak.key");
	long before = -1, after;
	const int rounds = 300;

	/* One round first, so that lazily made mappings exist already. */
	for (int i = 0; i <= rounds; i++) {
		if (i == 1)
			before = count_mappings();
		k = l = NULL;
		CHECK_INT(crypt_key_generate(&k), ==, 0);
		if (!k)
			return;
		unlink(path);
		CHECK_INT(crypt_key_save(k, path, err, sizeof(err)), ==, 0);
		CHECK_INT(crypt_key_load(path, &l, err, sizeof(err)), ==, 0);
		/* Failures free what they made too. */
		CHECK_INT(chmod(path, 0644), ==, 0);
		CHECK_INT(crypt_key_load(path, &l, err, sizeof(err)), ==,
			  -EPERM);
		if (seal_test_file(k, &sealed, &sealed_len)) {
			CHECK_INT(crypt_open_file(&l, 1, sealed, sealed_len,
						  &plain, &plain_len, err,
						  sizeof(err)),
				  ==, 0);
			crypt_free_plain(plain, plain_len);
			sealed[sealed_len - 1] ^= 1;
			CHECK_INT(crypt_open_file(&l, 1, sealed, sealed_len,
						  &plain, &plain_len, err,
						  sizeof(err)),
				  ==, -EBADMSG);
			free(sealed);
		}
		CHECK_INT(crypt_seal_value(crypt_key_public(k), "v", &value),
			  ==, 0);
		CHECK_INT(crypt_open_value(&l, 1, value, &vplain, err,
					   sizeof(err)),
			  ==, 0);
		free_secret(vplain);
		free(value);
		crypt_key_free(k);
		crypt_key_free(l);
	}
	after = count_mappings();
	CHECK(before > 0);
	/* A leak would add at least two mappings a round. */
	CHECK_INT(after - before, <, rounds / 4);
	unlink(path);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
			struct FTW *ftw)
{
	return remove(path);
}

int main(void)
{
	const char *base = getenv("TMPDIR");

	check_watchdog(120);
	if (crypt_init() < 0) {
		fprintf(stderr, "crypt_init failed\n");
		return 1;
	}
	CHECK_INT(crypt_init(), ==, 0);
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-crypto-XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}

	RUN(test_key_round_trip);
	RUN(test_key_save_refuses);
	RUN(test_key_load_modes);
	RUN(test_key_load_errors);
	RUN(test_pubkey_text);
	RUN(test_file_round_trip);
	RUN(test_file_not_sealed);
	RUN(test_file_wrong_key);
	RUN(test_file_two_keys);
	RUN(test_file_tampered);
	RUN(test_file_truncated);
	RUN(test_seal_bad_pubkey);
	RUN(test_value_round_trip);
	RUN(test_value_errors);
	RUN(test_value_looks_sealed);
	RUN(test_value_nul);
	RUN(test_no_sodium_leak);

	nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return check_exit();
}

/*
 * dbswapctl's key commands: keygen, pubkey, encrypt, decrypt.
 *
 * Writers of encrypted files need only the public key; the secret key
 * stays with the agent (and with whoever must read a sealed file back).
 * The agent opens encrypted text only in files no one but root and its
 * own user can write (agent/layers.h), so a writer also needs to be one
 * of those (sudo dbswapctl set).  A key file must be as private as ssh
 * wants its keys (util.h key_path_check()).  Formats: common/crypto.h.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/env.h"
#include "common/util.h"
#include "ctl.h"

/* Parses --pubkey's argument: the key text itself, or a file holding it
 * (comment lines allowed, like the secret key file's header).  Returns 0
 * or -EINVAL after printing why. */
int ctl_pubkey_arg(const char *arg, uint8_t pk[32])
{
	uint8_t *buf;
	size_t len;
	int fd, r;

	if (crypt_pubkey_parse(arg, pk) == 0)
		return 0;
	fd = open(arg, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "dbswapctl: --pubkey %s: neither a public key "
				"(44 characters of base64) nor a readable file\n",
			arg);
		return -EINVAL;
	}
	r = ctl_read_all(fd, 4096, &buf, &len);
	close(fd);
	if (r < 0) {
		fprintf(stderr, "dbswapctl: --pubkey %s: %s\n", arg,
			strerror(-r));
		return -EINVAL;
	}
	r = -EINVAL;
	for (char *line = (char *)buf, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (*line == '#' || *line == '\0')
			continue;
		r = crypt_pubkey_parse(line, pk);
		break;
	}
	free(buf);
	if (r < 0)
		fprintf(stderr, "dbswapctl: --pubkey %s: the file holds no "
				"public key\n", arg);
	return r;
}

/* Loads a secret key, printing the reason on failure. */
int ctl_key_arg(const char *path, struct crypt_key **key)
{
	char err[512];

	/* Refused like a key others can read: one others can replace would
	 * have us decrypt (and re-seal) with a key of their choosing. */
	if (key_path_check(path, err, sizeof(err)) < 0 ||
	    crypt_key_load(path, key, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbswapctl: %s\n", err);
		return -EINVAL;
	}
	return 0;
}

/* Finds "--opt VALUE" or "--opt=VALUE" among args; NULL if absent. */
static const char *option(int argc, char **argv, const char *opt)
{
	size_t n = strlen(opt);

	for (int i = 0; i < argc; i++) {
		if (streq(argv[i], opt) && i + 1 < argc)
			return argv[i + 1];
		if (strncmp(argv[i], opt, n) == 0 && argv[i][n] == '=')
			return argv[i] + n + 1;
	}
	return NULL;
}

int cmd_keygen(int argc, char **argv)
{
	const char *out = option(argc, argv, "--out");
	char err[512], pub[CRYPT_PUBKEY_TEXT_LEN + 1];
	char id[2 * CRYPT_KEY_ID_LEN + 1];
	struct crypt_key *key;

	if (!out) {
		fprintf(stderr, "dbswapctl keygen: --out KEYFILE is required\n");
		return EXIT_USAGE;
	}
	if (crypt_init() < 0 || crypt_key_generate(&key) < 0) {
		fprintf(stderr, "dbswapctl keygen: cannot generate a key\n");
		return EXIT_REFUSED;
	}
	if (crypt_key_save(key, out, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbswapctl keygen: %s\n", err);
		crypt_key_free(key);
		return EXIT_REFUSED;
	}
	crypt_pubkey_text(crypt_key_public(key), pub);
	crypt_id_hex(crypt_key_id(key), id);
	crypt_key_free(key);
	printf("%s\n", pub);
	/* Written, but where the agent will refuse it: say so now. */
	if (key_path_check(out, err, sizeof(err)) < 0)
		fprintf(stderr, "dbswapctl keygen: warning: %s\n", err);
	fprintf(stderr, "dbswapctl: secret key %s written to %s (mode 0600); "
			"the public key above is all a writer needs (the agent "
			"opens encrypted values only in files no one but root "
			"and its user can write)\n",
		id, out);
	return EXIT_SUCCESS;
}

int cmd_pubkey(int argc, char **argv)
{
	char pub[CRYPT_PUBKEY_TEXT_LEN + 1];
	struct crypt_key *key;

	if (argc != 1) {
		fprintf(stderr, "dbswapctl pubkey: give one KEYFILE\n");
		return EXIT_USAGE;
	}
	if (crypt_init() < 0 || ctl_key_arg(argv[0], &key) < 0)
		return EXIT_REFUSED;
	crypt_pubkey_text(crypt_key_public(key), pub);
	crypt_key_free(key);
	printf("%s\n", pub);
	return EXIT_SUCCESS;
}

int cmd_encrypt(int argc, char **argv)
{
	const char *arg = option(argc, argv, "--pubkey");
	uint8_t pk[32], *plain, *sealed;
	size_t len, sealed_len;
	int r;

	if (!arg) {
		fprintf(stderr, "dbswapctl encrypt: --pubkey KEY is required\n");
		return EXIT_USAGE;
	}
	if (crypt_init() < 0 || ctl_pubkey_arg(arg, pk) < 0)
		return EXIT_USAGE;
	r = ctl_read_all(STDIN_FILENO, ENV_FILE_MAX - CRYPT_FILE_OVERHEAD, &plain,
			 &len);
	if (r < 0) {
		fprintf(stderr, "dbswapctl encrypt: standard input: %s\n",
			r == -EFBIG ? "over the env file size limit"
				    : strerror(-r));
		return EXIT_REFUSED;
	}
	r = crypt_seal_file(pk, plain, len, &sealed, &sealed_len);
	explicit_bzero(plain, len);
	free(plain);
	if (r < 0) {
		fprintf(stderr, "dbswapctl encrypt: %s\n", strerror(-r));
		return EXIT_REFUSED;
	}
	r = fd_write_all(STDOUT_FILENO, sealed, sealed_len);
	free(sealed);
	if (r < 0) {
		fprintf(stderr, "dbswapctl encrypt: standard output: %s\n",
			strerror(-r));
		return EXIT_REFUSED;
	}
	return EXIT_SUCCESS;
}

int cmd_decrypt(int argc, char **argv)
{
	const char *path = option(argc, argv, "--key");
	struct crypt_key *key;
	uint8_t *sealed, *plain;
	size_t len, plain_len;
	char err[512];
	int r;

	if (!path) {
		fprintf(stderr, "dbswapctl decrypt: --key KEYFILE is required\n");
		return EXIT_USAGE;
	}
	if (crypt_init() < 0 || ctl_key_arg(path, &key) < 0)
		return EXIT_REFUSED;
	r = ctl_read_all(STDIN_FILENO, ENV_FILE_MAX, &sealed, &len);
	if (r < 0) {
		fprintf(stderr, "dbswapctl decrypt: standard input: %s\n",
			r == -EFBIG ? "over the env file size limit"
				    : strerror(-r));
		crypt_key_free(key);
		return EXIT_REFUSED;
	}
	if (!crypt_is_sealed_file(sealed, len)) {
		fprintf(stderr, "dbswapctl decrypt: standard input is not a "
				"sealed dbswap file\n");
		free(sealed);
		crypt_key_free(key);
		return EXIT_REFUSED;
	}
	r = crypt_open_file(&key, 1, sealed, len, &plain, &plain_len, err,
			    sizeof(err));
	free(sealed);
	crypt_key_free(key);
	if (r < 0) {
		fprintf(stderr, "dbswapctl decrypt: standard input: %s\n", err);
		return EXIT_REFUSED;
	}
	r = fd_write_all(STDOUT_FILENO, plain, plain_len);
	crypt_free_plain(plain, plain_len);
	return r < 0 ? EXIT_REFUSED : EXIT_SUCCESS;
}

/*
 * Encrypted env files and values: keys, key files, sealed boxes; see
 * crypto.h for the formats and the rules.
 *
 * Secret material (secret keys, key file text, plaintext of files) lives in
 * sodium_malloc() memory, which has guard pages, is locked when the system
 * allows it, and is wiped before it is freed.  Decrypted values are plain
 * malloc() strings because the env code frees them with free_secret(); they
 * are wiped too.  Error messages are built only from paths, line numbers,
 * sizes and the ids of the agent's own keys: never from bytes or the
 * length of what did not decrypt (it may be a password that only looks
 * encrypted).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto.h"
#include "util.h"

#if CRYPT_SEAL_OVERHEAD != crypto_box_SEALBYTES
#error "CRYPT_SEAL_OVERHEAD must match libsodium's crypto_box_SEALBYTES"
#endif
#if CRYPT_PUBKEY_LEN != crypto_box_PUBLICKEYBYTES || \
	CRYPT_SECKEY_LEN != crypto_box_SECRETKEYBYTES
#error "key sizes must match libsodium's crypto_box"
#endif

#define B64 sodium_base64_VARIANT_ORIGINAL

/* Smallest encrypted file and decoded encrypted value: no plaintext. */
#define FILE_MIN CRYPT_FILE_OVERHEAD
#define VALUE_MIN (CRYPT_KEY_ID_LEN + CRYPT_SEAL_OVERHEAD)

/* Length of the base64 text of a 32-byte key, without the NUL. */
#define KEY_B64_LEN CRYPT_PUBKEY_TEXT_LEN

static const char key_file_head[] =
	"# dbswap secret key (X25519). Keep it secret.\n# public key: ";

struct crypt_key {
	uint8_t sk[CRYPT_SECKEY_LEN];
	uint8_t pk[CRYPT_PUBKEY_LEN];
	uint8_t id[CRYPT_KEY_ID_LEN];
};

static void PRINTF(3, 4) set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int crypt_init(void)
{
	/* 0: done now, 1: done before, -1: failed. */
	return sodium_init() < 0 ? -EIO : 0;
}

void crypt_key_id_of(const uint8_t pk[CRYPT_PUBKEY_LEN],
		     uint8_t id[CRYPT_KEY_ID_LEN])
{
	uint8_t h[crypto_generichash_BYTES];

	crypto_generichash(h, sizeof(h), pk, CRYPT_PUBKEY_LEN, NULL, 0);
	memcpy(id, h, CRYPT_KEY_ID_LEN);
}

void crypt_id_hex(const uint8_t id[CRYPT_KEY_ID_LEN],
		  char out[CRYPT_KEY_ID_HEX_LEN + 1])
{
	sodium_bin2hex(out, CRYPT_KEY_ID_HEX_LEN + 1, id, CRYPT_KEY_ID_LEN);
}

void crypt_pubkey_text(const uint8_t pk[CRYPT_PUBKEY_LEN],
		       char out[CRYPT_PUBKEY_TEXT_LEN + 1])
{
	sodium_bin2base64(out, CRYPT_PUBKEY_TEXT_LEN + 1, pk, CRYPT_PUBKEY_LEN,
			  B64);
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Decodes exactly n bytes of canonical base64 from s[0..len) into out. */
static bool b64_decode_exact(uint8_t *out, size_t n, const char *s, size_t len)
{
	size_t got = 0;

	/* sodium_base642bin() refuses missing padding, trailing garbage and
	 * non-zero unused bits; it needs only the length check on top. */
	return sodium_base642bin(out, n, s, len, NULL, &got, NULL, B64) == 0 &&
	       got == n;
}

int crypt_pubkey_parse(const char *text, uint8_t pk[CRYPT_PUBKEY_LEN])
{
	const char *s = text, *e;

	if (!text)
		return -EINVAL;
	while (is_blank(*s))
		s++;
	e = s + strlen(s);
	while (e > s && is_blank(e[-1]))
		e--;
	if ((size_t)(e - s) != CRYPT_PUBKEY_TEXT_LEN ||
	    !b64_decode_exact(pk, CRYPT_PUBKEY_LEN, s, (size_t)(e - s)))
		return -EINVAL;
	return 0;
}

/* Derives pk and id from k->sk and makes k read-only. */
static int key_seal(struct crypt_key *k)
{
	if (crypto_scalarmult_base(k->pk, k->sk) != 0)
		return -EINVAL;
	crypt_key_id_of(k->pk, k->id);
	sodium_mprotect_readonly(k);
	return 0;
}

void crypt_key_free(struct crypt_key *k)
{
	if (!k)
		return;
	sodium_mprotect_readwrite(k);
	sodium_memzero(k, sizeof(*k));
	sodium_free(k);
}

const uint8_t *crypt_key_public(const struct crypt_key *k)
{
	return k->pk;
}

const uint8_t *crypt_key_id(const struct crypt_key *k)
{
	return k->id;
}

int crypt_key_generate(struct crypt_key **out)
{
	struct crypt_key *k;
	int r;

	r = crypt_init();
	if (r < 0)
		return r;
	k = sodium_malloc(sizeof(*k));
	if (!k)
		return -ENOMEM;
	crypto_box_keypair(k->pk, k->sk);
	r = key_seal(k);
	if (r < 0)
		goto err_key;
	*out = k;
	return 0;

err_key:
	crypt_key_free(k);
	return r;
}

/* Parses format 3 from text[0..len) into a new key.  Messages name path and
 * a line number, never the line. */
static int key_parse(const char *path, const char *text, size_t len,
		     struct crypt_key **out, char *err, size_t errlen)
{
	const char *p = text, *end = text + len;
	unsigned line = 0, key_line = 0;
	struct crypt_key *k;
	int r;

	if (memchr(text, '\0', len)) {
		set_err(err, errlen, "key file %s: holds a NUL byte", path);
		return -EINVAL;
	}
	k = sodium_malloc(sizeof(*k));
	if (!k) {
		set_err(err, errlen, "key file %s: out of memory", path);
		return -ENOMEM;
	}
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *next = eol ? eol + 1 : end;
		const char *s = p, *e = eol ? eol : end;

		line++;
		p = next;
		while (s < e && is_blank(*s))
			s++;
		while (e > s && is_blank(e[-1]))
			e--;
		if (s == e || *s == '#')
			continue;
		if (key_line) {
			set_err(err, errlen,
				"key file %s: line %u: a second key line "
				"(a key file holds one key)",
				path, line);
			r = -EINVAL;
			goto err_key;
		}
		key_line = line;
		if ((size_t)(e - s) != KEY_B64_LEN ||
		    !b64_decode_exact(k->sk, CRYPT_SECKEY_LEN, s,
				      (size_t)(e - s))) {
			set_err(err, errlen,
				"key file %s: line %u: not a base64 X25519 "
				"secret key",
				path, line);
			r = -EINVAL;
			goto err_key;
		}
	}
	if (!key_line) {
		set_err(err, errlen, "key file %s: no key line", path);
		r = -EINVAL;
		goto err_key;
	}
	r = key_seal(k);
	if (r < 0) {
		set_err(err, errlen,
			"key file %s: line %u: not a usable X25519 secret key",
			path, key_line);
		goto err_key;
	}
	*out = k;
	return 0;

err_key:
	crypt_key_free(k);
	return r;
}

static int crypt_key_load_mode(const char *path, mode_t refused,
			       struct crypt_key **out, char *err, size_t errlen);

int crypt_key_load(const char *path, struct crypt_key **out, char *err,
		   size_t errlen)
{
	return crypt_key_load_mode(path, 077, out, err, errlen);
}

int crypt_key_load_credential(const char *path, struct crypt_key **out,
			      char *err, size_t errlen)
{
	return crypt_key_load_mode(path, 007, out, err, errlen);
}

/* Loads path, refusing a file with any of the refused mode bits. */
static int crypt_key_load_mode(const char *path, mode_t refused,
			       struct crypt_key **out, char *err, size_t errlen)
{
	struct stat st;
	char *text;
	size_t len = 0;
	int fd, r;

	r = crypt_init();
	if (r < 0) {
		set_err(err, errlen,
			"key file %s: libsodium does not initialise", path);
		return r;
	}
	/* Symlinks are followed (Kubernetes secret volumes are made of them);
	 * every check is on the opened fd.  Only a regular file is opened at
	 * all: a FIFO cannot hang the agent, a device's open never runs. */
	fd = file_open_regular(path, &st);
	if (fd == -EISDIR || fd == -EINVAL) {
		set_err(err, errlen, "key file %s: is %s, not a regular file",
			path, file_type_name(st.st_mode));
		return fd;
	}
	if (fd < 0) {
		set_err(err, errlen, "key file %s: %s", path, strerror(-fd));
		return fd;
	}
	if ((st.st_mode & refused) != 0) {
		set_err(err, errlen,
			"key file %s is accessible by group or others "
			"(mode %04o); run chmod 600 %s",
			path, (unsigned)(st.st_mode & 07777), path);
		r = -EPERM;
		goto err_fd;
	}

	text = sodium_malloc(CRYPT_KEY_FILE_MAX + 1);
	if (!text) {
		set_err(err, errlen, "key file %s: out of memory", path);
		r = -ENOMEM;
		goto err_fd;
	}
	/* One byte more than allowed tells a full file from a long one. */
	while (len <= CRYPT_KEY_FILE_MAX) {
		ssize_t n = read(fd, text + len, CRYPT_KEY_FILE_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = neg_errno();
			set_err(err, errlen, "key file %s: %s", path,
				strerror(-r));
			goto err_text;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CRYPT_KEY_FILE_MAX) {
		set_err(err, errlen, "key file %s: larger than %d bytes", path,
			CRYPT_KEY_FILE_MAX);
		r = -EFBIG;
		goto err_text;
	}
	r = key_parse(path, text, len, out, err, errlen);

err_text:
	sodium_memzero(text, CRYPT_KEY_FILE_MAX + 1);
	sodium_free(text);
err_fd:
	close(fd);
	return r;
}

/* Makes the new directory entry durable.  Best effort: some file systems
 * refuse fsync on a directory, and the key file itself is already synced. */
static void fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else if ((size_t)(slash - path) < sizeof(dir))
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	else
		return;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	fsync(fd);
	close(fd);
}

int crypt_key_save(const struct crypt_key *k, const char *path, char *err,
		   size_t errlen)
{
	/* head, public key, LF, secret key, LF, NUL */
	const size_t cap = sizeof(key_file_head) + 2 * KEY_B64_LEN + 3;
	char *text, *p;
	size_t len;
	int fd, r;

	text = sodium_malloc(cap);
	if (!text) {
		set_err(err, errlen, "key file %s: out of memory", path);
		return -ENOMEM;
	}
	p = text;
	memcpy(p, key_file_head, sizeof(key_file_head) - 1);
	p += sizeof(key_file_head) - 1;
	crypt_pubkey_text(k->pk, p);
	p += KEY_B64_LEN;
	*p++ = '\n';
	sodium_bin2base64(p, KEY_B64_LEN + 1, k->sk, CRYPT_SECKEY_LEN, B64);
	p += KEY_B64_LEN;
	*p++ = '\n';
	len = (size_t)(p - text);

	/* O_EXCL also refuses a symlink, dangling or not; O_NOFOLLOW says
	 * so twice. */
	fd = open(path,
		  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
			  O_NOCTTY,
		  0600);
	if (fd < 0) {
		r = neg_errno();
		if (r == -EEXIST)
			set_err(err, errlen, "%s exists; not overwriting a key",
				path);
		else
			set_err(err, errlen, "key file %s: %s", path,
				strerror(-r));
		goto err_text;
	}
	/* The umask may have taken bits from 0600 (never added any); make
	 * sure the owner can read it back. */
	if (fchmod(fd, 0600) < 0) {
		r = neg_errno();
		set_err(err, errlen, "key file %s: chmod: %s", path,
			strerror(-r));
		goto err_file;
	}
	r = fd_write_all(fd, text, len);
	if (r < 0) {
		set_err(err, errlen, "key file %s: write: %s", path,
			strerror(-r));
		goto err_file;
	}
	if (fsync(fd) < 0) {
		r = neg_errno();
		set_err(err, errlen, "key file %s: fsync: %s", path,
			strerror(-r));
		goto err_file;
	}
	/* On Linux the fd is gone even when close() fails. */
	r = close(fd);
	fd = -1;
	if (r < 0) {
		r = neg_errno();
		set_err(err, errlen, "key file %s: close: %s", path,
			strerror(-r));
		goto err_file;
	}
	fsync_dir_of(path);
	sodium_memzero(text, cap);
	sodium_free(text);
	return 0;

err_file:
	if (fd >= 0)
		close(fd);
	unlink(path);
err_text:
	sodium_memzero(text, cap);
	sodium_free(text);
	return r;
}

/* Returns whether some key in the list has id. */
static bool key_held(struct crypt_key *const *keys, size_t n_keys,
		     const uint8_t id[CRYPT_KEY_ID_LEN])
{
	for (size_t i = 0; i < n_keys; i++) {
		if (keys[i] && memcmp(keys[i]->id, id, CRYPT_KEY_ID_LEN) == 0)
			return true;
	}
	return false;
}

/* "sealed to a key the agent does not have (its keys: A, B)".  The id in
 * the value is not shown: a value that only looks encrypted (a base64
 * password after "enc:v1:", a mis-paste) would have eight bytes of the
 * password shown as the id.  The agent's own ids are public (derived
 * from its public keys) and tell an operator which key to seal to. */
static int err_not_held(struct crypt_key *const *keys, size_t n_keys,
			char *err, size_t errlen)
{
	char list[200];
	size_t pos = 0;

	list[0] = '\0';
	for (size_t i = 0; i < n_keys; i++) {
		char h[CRYPT_KEY_ID_HEX_LEN + 1];
		const char *sep = pos ? ", " : "";

		if (!keys[i])
			continue;
		/* Room for this id, and for ", ..." should more follow. */
		if (pos + strlen(sep) + CRYPT_KEY_ID_HEX_LEN + 6 >
		    sizeof(list)) {
			snprintf(list + pos, sizeof(list) - pos, ", ...");
			break;
		}
		crypt_id_hex(keys[i]->id, h);
		pos += (size_t)snprintf(list + pos, sizeof(list) - pos, "%s%s",
					sep, h);
	}
	if (pos == 0)
		set_err(err, errlen,
			"sealed to a key the agent does not have "
			"(the agent has no key)");
	else
		set_err(err, errlen,
			"sealed to a key the agent does not have "
			"(its keys: %s)",
			list);
	return -ENOKEY;
}

/* Opens the sealed box c[0..clen) (clen >= CRYPT_SEAL_OVERHEAD) into out,
 * which has room for clen - CRYPT_SEAL_OVERHEAD bytes, with the keys that
 * have id.  Usually one; two distinct keys with one id would take a 64-bit
 * collision, but trying each costs nothing. */
static int open_box(struct crypt_key *const *keys, size_t n_keys,
		    const uint8_t id[CRYPT_KEY_ID_LEN], const uint8_t *c,
		    size_t clen, uint8_t *out, char *err, size_t errlen)
{
	char hex[CRYPT_KEY_ID_HEX_LEN + 1];

	for (size_t i = 0; i < n_keys; i++) {
		if (!keys[i] || memcmp(keys[i]->id, id, CRYPT_KEY_ID_LEN) != 0)
			continue;
		if (crypto_box_seal_open(out, c, clen, keys[i]->pk,
					 keys[i]->sk) == 0)
			return 0;
	}
	/* id is one of the agent's own (the caller checked key_held()). */
	crypt_id_hex(id, hex);
	set_err(err, errlen,
		"does not open with key %s: tampered with, truncated, or "
		"sealed to another key",
		hex);
	return -EBADMSG;
}

bool crypt_is_sealed_file(const uint8_t *buf, size_t len)
{
	return len >= CRYPT_MAGIC_LEN &&
	       memcmp(buf, CRYPT_MAGIC, CRYPT_MAGIC_LEN) == 0;
}

int crypt_open_file(struct crypt_key *const *keys, size_t n_keys,
		    const uint8_t *buf, size_t len, uint8_t **plain,
		    size_t *plain_len, char *err, size_t errlen)
{
	const uint8_t *id;
	uint8_t *out;
	size_t n;
	int r;

	*plain = NULL;
	*plain_len = 0;
	/* A cut inside the magic is still a cut: report it as truncated. */
	if (len > 0 && memcmp(buf, CRYPT_MAGIC, MIN(len, CRYPT_MAGIC_LEN))) {
		set_err(err, errlen, "not an encrypted file (no %s header)",
			CRYPT_MAGIC);
		return -EINVAL;
	}
	/* The version before the length: another version may well have
	 * another layout. */
	if (len > CRYPT_MAGIC_LEN &&
	    buf[CRYPT_MAGIC_LEN] != CRYPT_FILE_VERSION) {
		set_err(err, errlen,
			"unsupported format version %u (this agent reads %u)",
			buf[CRYPT_MAGIC_LEN], CRYPT_FILE_VERSION);
		return -EINVAL;
	}
	if (len > CRYPT_MAGIC_LEN + 1 && buf[CRYPT_MAGIC_LEN + 1] != 0) {
		set_err(err, errlen, "reserved header byte is %u, must be 0",
			buf[CRYPT_MAGIC_LEN + 1]);
		return -EINVAL;
	}
	if (len < FILE_MIN) {
		/* Its length is not shown: see err_not_held(). */
		set_err(err, errlen, "truncated (shorter than the smallest "
			"encrypted file)");
		return -EBADMSG;
	}
	id = buf + CRYPT_MAGIC_LEN + 2;
	if (!key_held(keys, n_keys, id))
		return err_not_held(keys, n_keys, err, errlen);

	n = len - FILE_MIN;
	out = sodium_malloc(n + 1);
	if (!out) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = open_box(keys, n_keys, id, buf + CRYPT_HEADER_LEN,
		     len - CRYPT_HEADER_LEN, out, err, errlen);
	if (r < 0)
		goto err_out;
	out[n] = '\0';
	*plain = out;
	*plain_len = n;
	return 0;

err_out:
	crypt_free_plain(out, n);
	return r;
}

void crypt_free_plain(uint8_t *plain, size_t len)
{
	if (!plain)
		return;
	sodium_memzero(plain, len + 1);
	sodium_free(plain);
}

/* Seals len bytes of plain to pk into out (len + CRYPT_SEAL_OVERHEAD). */
static int seal_box(const uint8_t pk[CRYPT_PUBKEY_LEN], const uint8_t *plain,
		    size_t len, uint8_t *out)
{
	static const uint8_t none[1];

	/* Fails for a low-order public key (an all-zero shared secret). */
	if (crypto_box_seal(out, plain ? plain : none, len, pk) != 0)
		return -EINVAL;
	return 0;
}

int crypt_seal_file(const uint8_t pk[CRYPT_PUBKEY_LEN], const uint8_t *plain,
		    size_t len, uint8_t **out, size_t *out_len)
{
	uint8_t *buf;
	int r;

	*out = NULL;
	*out_len = 0;
	r = crypt_init();
	if (r < 0)
		return r;
	if (len > crypto_box_MESSAGEBYTES_MAX || len > SIZE_MAX - FILE_MIN)
		return -EOVERFLOW;
	buf = malloc(FILE_MIN + len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, CRYPT_MAGIC, CRYPT_MAGIC_LEN);
	buf[CRYPT_MAGIC_LEN] = CRYPT_FILE_VERSION;
	buf[CRYPT_MAGIC_LEN + 1] = 0;
	crypt_key_id_of(pk, buf + CRYPT_MAGIC_LEN + 2);
	r = seal_box(pk, plain, len, buf + CRYPT_HEADER_LEN);
	if (r < 0)
		goto err_buf;
	*out = buf;
	*out_len = FILE_MIN + len;
	return 0;

err_buf:
	free(buf);
	return r;
}

bool crypt_is_sealed_value(const char *value)
{
	return value && strncmp(value, CRYPT_VALUE_PREFIX,
				strlen(CRYPT_VALUE_PREFIX)) == 0;
}

/* For a value that starts with "enc:" but not "enc:v1:".  Nothing of it
 * is echoed, not even a version's digits: it may be a password that
 * happens to start with "enc:" (a whole digits-only one in "enc:v...:"). */
static int err_bad_prefix(const char *value, char *err, size_t errlen)
{
	const char *v = value + strlen(CRYPT_VALUE_PREFIX);
	size_t digits = 0;

	if (v[0] == 'v') {
		while (v[1 + digits] >= '0' && v[1 + digits] <= '9')
			digits++;
	}
	if (digits > 0 && digits <= 9 && v[1 + digits] == ':')
		set_err(err, errlen,
			"unsupported encrypted value version (this agent "
			"reads v1)");
	else
		set_err(err, errlen,
			"malformed encrypted value (expected enc:v1:<base64>)");
	return -EINVAL;
}

int crypt_open_value(struct crypt_key *const *keys, size_t n_keys,
		     const char *value, char **plain, char *err, size_t errlen)
{
	const char *b64;
	uint8_t *bin;
	char *out;
	size_t b64_len, bin_max, bin_len = 0, n;
	int r;

	*plain = NULL;
	if (!crypt_is_sealed_value(value)) {
		set_err(err, errlen, "not an encrypted value");
		return -EINVAL;
	}
	if (strncmp(value, CRYPT_VALUE_V1_PREFIX,
		    strlen(CRYPT_VALUE_V1_PREFIX)) != 0)
		return err_bad_prefix(value, err, errlen);

	b64 = value + strlen(CRYPT_VALUE_V1_PREFIX);
	b64_len = strlen(b64);
	bin_max = b64_len / 4 * 3 + 3;
	bin = malloc(bin_max);
	if (!bin) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (sodium_base642bin(bin, bin_max, b64, b64_len, NULL, &bin_len, NULL,
			      B64) != 0) {
		set_err(err, errlen, "encrypted value is not valid base64");
		r = -EINVAL;
		goto err_bin;
	}
	if (bin_len < VALUE_MIN) {
		/* Its length is not shown: the value may be a password
		 * (see err_not_held()). */
		set_err(err, errlen, "truncated (shorter than the smallest "
			"encrypted value)");
		r = -EBADMSG;
		goto err_bin;
	}
	if (!key_held(keys, n_keys, bin)) {
		r = err_not_held(keys, n_keys, err, errlen);
		goto err_bin;
	}

	n = bin_len - VALUE_MIN;
	out = malloc(n + 1);
	if (!out) {
		set_err(err, errlen, "out of memory");
		r = -ENOMEM;
		goto err_bin;
	}
	r = open_box(keys, n_keys, bin, bin + CRYPT_KEY_ID_LEN,
		     bin_len - CRYPT_KEY_ID_LEN, (uint8_t *)out, err, errlen);
	if (r < 0)
		goto err_out;
	if (memchr(out, '\0', n)) {
		set_err(err, errlen, "decrypted value holds a NUL byte");
		r = -EINVAL;
		goto err_out;
	}
	out[n] = '\0';
	free(bin); /* ciphertext: nothing to wipe */
	*plain = out;
	return 0;

err_out:
	/* free_secret() would stop at the first NUL. */
	sodium_memzero(out, n + 1);
	free(out);
err_bin:
	free(bin);
	return r;
}

int crypt_seal_value(const uint8_t pk[CRYPT_PUBKEY_LEN], const char *plain,
		     char **out)
{
	const size_t prefix = strlen(CRYPT_VALUE_V1_PREFIX);
	size_t len, bin_len, text_len;
	uint8_t *bin;
	char *text;
	int r;

	*out = NULL;
	r = crypt_init();
	if (r < 0)
		return r;
	len = strlen(plain);
	/* Keep the base64 length (4/3 of bin_len) within size_t. */
	if (len > crypto_box_MESSAGEBYTES_MAX || len > SIZE_MAX / 2 - VALUE_MIN)
		return -EOVERFLOW;
	bin_len = VALUE_MIN + len;
	bin = malloc(bin_len);
	if (!bin)
		return -ENOMEM;
	crypt_key_id_of(pk, bin);
	r = seal_box(pk, (const uint8_t *)plain, len, bin + CRYPT_KEY_ID_LEN);
	if (r < 0)
		goto err_bin;

	text_len = prefix + sodium_base64_ENCODED_LEN(bin_len, B64);
	text = malloc(text_len);
	if (!text) {
		r = -ENOMEM;
		goto err_bin;
	}
	memcpy(text, CRYPT_VALUE_V1_PREFIX, prefix);
	sodium_bin2base64(text + prefix, text_len - prefix, bin, bin_len, B64);
	free(bin);
	*out = text;
	return 0;

err_bin:
	free(bin);
	return r;
}

/*
 * Encrypted env files and values: X25519 key pairs, sealed boxes
 * (libsodium's crypto_box_seal), and the text and byte formats around them.
 *
 * Credentials can then sit on disk, in a volume or in git without being
 * readable: whoever writes an env file needs only the agent's public key;
 * only the agent holds the secret key.
 *
 * Errors follow util.h: negative errno, 0 on success.  Functions that take
 * err/errlen also write one line of text there (err may be NULL, errlen 0).
 * No error text ever holds key material or plaintext: it names the key file,
 * a line number or a key id, nothing more.
 *
 * Threads and blocking: crypt_init() must be called once before anything
 * else (it is also called by crypt_key_generate() and crypt_key_load()).
 * After that every function is safe from any thread; a loaded key is
 * read-only and may be shared.  crypt_key_load() and crypt_key_save() block
 * on file I/O; everything else only computes.
 *
 * FORMATS
 *
 * All base64 is the standard alphabet with = padding (RFC 4648 section 4,
 * sodium_base64_VARIANT_ORIGINAL), canonical: no line breaks, no spaces, and
 * the unused bits of the last character must be zero.
 *
 * 1. Key id: the first 8 bytes of BLAKE2b-256 (crypto_generichash, 32-byte
 *    output, no key) of the 32-byte X25519 public key.  Shown as 16
 *    lowercase hex characters, e.g. 3f1c0a9be2d47785.  It names a key in
 *    messages and lets the agent pick the right key; it is not a secret and
 *    not a security boundary.
 *
 * 2. Public key text: base64 of the 32-byte X25519 public key, 44
 *    characters ending in one '='.  When parsing, spaces, tabs, CR and LF
 *    before and after are ignored; anything else is an error.
 *
 * 3. Secret key file: text, lines ending in LF (a CR before it is ignored).
 *    Spaces and tabs around a line are ignored.  Blank lines are ignored; a
 *    line starting with '#' is a comment; exactly one other line must exist,
 *    the base64 of the 32-byte X25519 secret key (44 characters).  No NUL
 *    byte, at most CRYPT_KEY_FILE_MAX bytes.  The public key is derived from
 *    the secret key; the "# public key:" comment is for people only.
 *    crypt_key_save() writes exactly:
 *
 *      # dbswap secret key (X25519). Keep it secret.\n
 *      # public key: <44-character public key text>\n
 *      <44-character base64 secret key>\n
 *
 *    The file must be a regular file with no permission bits for group or
 *    others ((st_mode & 077) == 0), as ssh requires of its keys.
 *
 * 4. Encrypted file (a whole env file sealed at once):
 *
 *      offset  size  content
 *           0     6  magic "DBSWAP" (0x44 0x42 0x53 0x57 0x41 0x50)
 *           6     1  format version: 1
 *           7     1  reserved: 0 (any other value is refused)
 *           8     8  key id (format 1) of the recipient public key
 *          16   48+n crypto_box_seal() of the n plaintext bytes:
 *                    32-byte ephemeral public key, 16-byte Poly1305 tag,
 *                    n bytes of XSalsa20 ciphertext
 *
 *    Total: 64 + n bytes.  A file whose first 6 bytes are the magic is an
 *    encrypted file whatever its name; if it does not open, that is an
 *    error: it is never read as plaintext.
 *
 * 5. Encrypted value (one value inside a plaintext env file):
 *
 *      enc:v1:<base64 of: 8-byte key id || crypto_box_seal(value bytes)>
 *
 *    The value bytes have no terminating NUL and may not contain one.
 *    A value of n bytes gives 7 + 4 * ceil((56 + n) / 3) characters.
 *    Any value starting with "enc:" is meant to be encrypted: if it is not a
 *    valid v1 value that opens ("enc:v2:...", bad base64, truncated,
 *    tampered with), it is an error, never a literal value.
 *
 * WHAT THIS DOES AND DOES NOT PROTECT
 *
 * - Confidentiality: only the holder of the secret key reads the plaintext.
 * - Integrity of each sealed box: a changed or truncated byte makes opening
 *   fail.  The key id in front is not authenticated, but changing it only
 *   makes opening fail too.
 * - No authenticity: sealed boxes are anonymous, so anyone with the public
 *   key (which is public) can write a valid encrypted file or value.
 *   Protect write access to env files as before; encryption protects reads.
 * - No hiding of length: the ciphertext is 48 (file: 64) bytes longer than
 *   the plaintext.
 */
#ifndef DBSWAP_COMMON_CRYPTO_H
#define DBSWAP_COMMON_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPT_KEY_ID_LEN 8
#define CRYPT_KEY_ID_HEX_LEN (2 * CRYPT_KEY_ID_LEN)
#define CRYPT_PUBKEY_LEN 32
#define CRYPT_SECKEY_LEN 32
#define CRYPT_HEADER_LEN 16
#define CRYPT_SEAL_OVERHEAD 48 /* crypto_box_SEALBYTES */
/* An encrypted file is this much longer than its plaintext: header and
 * sealed box. */
#define CRYPT_FILE_OVERHEAD (CRYPT_HEADER_LEN + CRYPT_SEAL_OVERHEAD)
#define CRYPT_PUBKEY_TEXT_LEN 44
#define CRYPT_MAGIC "DBSWAP"
#define CRYPT_MAGIC_LEN 6
#define CRYPT_FILE_VERSION 1
#define CRYPT_VALUE_PREFIX "enc:"
#define CRYPT_VALUE_V1_PREFIX "enc:v1:"

/* A key file is three short lines; a few comments more are fine, and a
 * bound keeps a wrong path (a log, a device) from being read whole. */
#define CRYPT_KEY_FILE_MAX 4096

/* An X25519 key pair and its id.  Lives in sodium_malloc() memory (guard
 * pages, locked when the system allows, wiped on free), read-only once
 * made.  Opaque: use the accessors. */
struct crypt_key;

/* Initialises libsodium.  Returns 0, or -EIO if it cannot (no randomness
 * source).  Idempotent and safe to call from several threads. */
int crypt_init(void);

/* Makes a new random key pair.  Returns 0 and sets *out (free with
 * crypt_key_free()), -EIO if libsodium does not initialise, or -ENOMEM. */
int crypt_key_generate(struct crypt_key **out);

/* Loads a secret key file (format 3).  Symlinks are followed, since a
 * Kubernetes secret volume presents every file as a symlink into ..data;
 * the checks below apply to the file actually opened (fstat on the fd), so
 * swapping the link between check and read gains nothing.  Blocks.
 * Returns 0 and sets *out (free with crypt_key_free()), or:
 *   -ENOENT, -EACCES, ...  open or read failed ("key file X: No such file
 *                          or directory")
 *   -EISDIR, -EINVAL       not a regular file
 *   -EPERM                 group or others have any permission bit ("key
 *                          file X is accessible by group or others (mode
 *                          0644); run chmod 600 X")
 *   -EFBIG                 longer than CRYPT_KEY_FILE_MAX
 *   -EINVAL                bad content ("key file X: line 3: not a base64
 *                          X25519 secret key", "...: no key line", "...: line
 *                          5: a second key line (a key file holds one key)")
 *   -ENOMEM, -EIO
 * and writes a message naming path to err.  *out is untouched on error. */
int crypt_key_load(const char *path, struct crypt_key **out, char *err,
		   size_t errlen);

/* The same for a systemd credential ($CREDENTIALS_DIRECTORY): private to
 * the service by construction, but systemd may grant the service user
 * read access through an ACL, which shows as group bits in the mode.  Only
 * access by others is refused. */
int crypt_key_load_credential(const char *path, struct crypt_key **out,
			      char *err, size_t errlen);

/* Writes k to a new file at path (format 3), mode 0600 whatever the umask,
 * then fsyncs it (and, best effort, its directory).  Never overwrites: if
 * path exists, even as a dangling symlink, returns -EEXIST ("X exists; not
 * overwriting a key").  On a failed write the partial file is removed.
 * Blocks.
 * Returns 0, or a negative errno with a message naming path in err. */
int crypt_key_save(const struct crypt_key *k, const char *path, char *err,
		   size_t errlen);

/* Wipes and frees k.  NULL is fine. */
void crypt_key_free(struct crypt_key *k);

/* The 32-byte public key and the 8-byte id of k; valid as long as k. */
const uint8_t *crypt_key_public(const struct crypt_key *k);
const uint8_t *crypt_key_id(const struct crypt_key *k);

/* Computes the key id of a public key (format 1). */
void crypt_key_id_of(const uint8_t pk[CRYPT_PUBKEY_LEN],
		     uint8_t id[CRYPT_KEY_ID_LEN]);

/* Writes an id as 16 lowercase hex characters and a NUL. */
void crypt_id_hex(const uint8_t id[CRYPT_KEY_ID_LEN],
		  char out[CRYPT_KEY_ID_HEX_LEN + 1]);

/* Writes a public key as its 44-character text (format 2) and a NUL. */
void crypt_pubkey_text(const uint8_t pk[CRYPT_PUBKEY_LEN],
		       char out[CRYPT_PUBKEY_TEXT_LEN + 1]);

/* Parses a public key text (format 2).  Returns 0, or -EINVAL if text is
 * not exactly 32 bytes of canonical base64 with optional surrounding
 * whitespace; pk is then unspecified. */
int crypt_pubkey_parse(const char *text, uint8_t pk[CRYPT_PUBKEY_LEN]);

/* True if buf starts with the 6-byte magic (format 4), which makes it an
 * encrypted file that must open or be refused. */
bool crypt_is_sealed_file(const uint8_t *buf, size_t len);

/* Opens an encrypted file (format 4) with whichever of keys[0..n_keys-1]
 * has the id in its header (keys may be NULL when n_keys is 0; NULL
 * entries are skipped).  Returns 0 and sets *plain, *plain_len: *plain is
 * sodium_malloc()ed, plain_len bytes plus one '\0' after them, and must be
 * freed with crypt_free_plain().  Otherwise *plain is NULL and:
 *   -EINVAL   "not an encrypted file (no DBSWAP header)", "unsupported
 *             format version 2 (this agent reads 1)", "reserved header
 *             byte is 1, must be 0"
 *   -EBADMSG  "truncated (shorter than the smallest encrypted file)",
 *             or "does not open with key <id>: tampered with, truncated,
 *             or sealed to another key" (<id> one of keys')
 *   -ENOKEY   "sealed to a key the agent does not have (its keys: <id1>,
 *             <id2>)" or "(the agent has no key)": the id in the header
 *             is not shown, nor is any byte or length of what did not
 *             open
 *   -ENOMEM
 * The message does not name the file: the caller prefixes its path. */
int crypt_open_file(struct crypt_key *const *keys, size_t n_keys,
		    const uint8_t *buf, size_t len, uint8_t **plain,
		    size_t *plain_len, char *err, size_t errlen);

/* Wipes and frees what crypt_open_file() returned.  NULL is fine. */
void crypt_free_plain(uint8_t *plain, size_t len);

/* Seals len bytes (plain may be NULL when len is 0) to pk as an encrypted
 * file (format 4).  Returns 0 and sets *out (malloc()ed, free()) and
 * *out_len = CRYPT_FILE_OVERHEAD + len, or -EINVAL if pk is not a usable
 * X25519 public key (a low-order point), -EOVERFLOW, -EIO (libsodium does
 * not initialise) or -ENOMEM. */
int crypt_seal_file(const uint8_t pk[CRYPT_PUBKEY_LEN], const uint8_t *plain,
		    size_t len, uint8_t **out, size_t *out_len);

/* True if value starts with "enc:", which makes it an encrypted value that
 * must open or be refused (format 5). */
bool crypt_is_sealed_value(const char *value);

/* Opens an encrypted value (format 5).  Returns 0 and sets *plain to a
 * malloc()ed NUL-terminated string; free it with free_secret() (util.h).
 * Otherwise *plain is NULL and the error codes are those of
 * crypt_open_file(), with these -EINVAL messages: "not an encrypted value",
 * "unsupported encrypted value version (this agent reads v1)",
 * "malformed encrypted value (expected enc:v1:<base64>)", "encrypted value
 * is not valid base64", "decrypted value holds a NUL byte".  The message
 * never quotes the value.  The caller names the file and variable. */
int crypt_open_value(struct crypt_key *const *keys, size_t n_keys,
		     const char *value, char **plain, char *err, size_t errlen);

/* Seals the string plain to pk as "enc:v1:..." (format 5).  Returns 0 and
 * sets *out (malloc()ed, free()), or the errors of crypt_seal_file(). */
int crypt_seal_value(const uint8_t pk[CRYPT_PUBKEY_LEN], const char *plain,
		     char **out);

#endif

/*
 * The layered environment; see layers.h.
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/log.h"
#include "keys.h"
#include "layers.h"

struct lower {
	const struct layers *l;
	size_t below;        /* files [0, below) are visible */
	unsigned decrypted;  /* enc: values opened during this parse */
};

static const char *lookup_below(const char *name, void *data)
{
	const struct lower *lw = data;

	for (size_t i = lw->below; i-- > 0;) {
		const char *v = env_file_get(&lw->l->files[i].parsed, name);
		if (v)
			return v;
	}
	return getenv(name);
}

static int decode_value(const char *name, const char *value, char **out,
			char *msg, size_t msglen, void *data)
{
	struct lower *lw = data;
	const struct keys *k = lw->l->keys;
	int r;

	r = crypt_open_value(k ? k->held : NULL, k ? k->n_held : 0, value,
			     out, msg, msglen);
	if (r == 0)
		lw->decrypted++;
	return r;
}

static int layer_parse(const struct layers *l, size_t i, const char *text,
		       size_t len, struct env_file *out, struct env_error *err,
		       unsigned *decrypted)
{
	struct lower lw = { .l = l, .below = i };
	struct env_parse_opts opts = {
		.lookup = lookup_below,
		.decode = decode_value,
		.data = &lw,
	};
	int r = env_parse_with(text, len, &opts, out, err);

	if (decrypted)
		*decrypted = lw.decrypted;
	return r;
}

int layers_init(struct layers *l, char *const *paths, size_t n,
		struct keys *keys)
{
	*l = (struct layers){ .keys = keys };
	l->files = calloc(n ? n : 1, sizeof(*l->files));
	if (!l->files)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		l->files[i].path = strdup(paths[i]);
		if (!l->files[i].path)
			return -ENOMEM;
		l->files[i].state = LAYER_MISSING;
		l->n_files++;
	}
	return 0;
}

/* Text is kept in sodium memory: guarded, locked where the limits allow,
 * wiped when freed. */
static void text_free(char *text, size_t len)
{
	crypt_free_plain((uint8_t *)text, len);
}

static void layer_set_text(struct layer *f, char *text, size_t len)
{
	text_free(f->text, f->text_len);
	f->text = text;
	f->text_len = len;
}

void layers_fini(struct layers *l)
{
	for (size_t i = 0; i < l->n_files; i++) {
		struct layer *f = &l->files[i];
		layer_set_text(f, NULL, 0);
		env_file_fini(&f->parsed);
		free(f->error);
		free(f->path);
	}
	free(l->files);
	*l = (struct layers){ 0 };
}

PRINTF(2, 3)
static void layer_fail(struct layer *f, const char *fmt, ...)
{
	char buf[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(f->error);
	f->error = strdup(buf);
	log_warning("%s%s", buf,
		    f->ever_good ? "; keeping its last good values" : "");
}

/* Reads the whole file into a malloc'ed buffer and notes what was read.
 * Returns 0, or a negative errno with the reason left in the layer. */
static int layer_read(struct layer *f, uint8_t **bytes, size_t *len)
{
	struct stat st;
	size_t got = 0;
	uint8_t *buf;
	int fd, r;

	f->identity[0] = '\0';
	fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = neg_errno();
		if (r == -ENOENT) {
			f->state = LAYER_MISSING;
			layer_fail(f, "%s: file is missing", f->path);
		} else {
			f->state = LAYER_ERROR;
			layer_fail(f, "%s: cannot open: %s", f->path,
				   strerror(-r));
		}
		return r;
	}
	f->state = LAYER_ERROR;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = -EINVAL;
		layer_fail(f, "%s: not a regular file", f->path);
		goto err_fd;
	}
	file_identity(&st, f->identity);
	if (st.st_size > LAYERS_FILE_MAX) {
		r = -EFBIG;
		layer_fail(f, "%s: file of %lld bytes is over the %d byte limit",
			   f->path, (long long)st.st_size, LAYERS_FILE_MAX);
		goto err_fd;
	}
	/* One byte more than the limit, to notice a file that grew since. */
	buf = malloc(LAYERS_FILE_MAX + 1);
	if (!buf) {
		r = -ENOMEM;
		goto err_fd;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, LAYERS_FILE_MAX + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = neg_errno();
			layer_fail(f, "%s: cannot read: %s", f->path,
				   strerror(-r));
			goto err_buf;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > LAYERS_FILE_MAX) {
			r = -EFBIG;
			layer_fail(f, "%s: file is over the %d byte limit",
				   f->path, LAYERS_FILE_MAX);
			goto err_buf;
		}
	}
	close(fd);
	*bytes = buf;
	*len = got;
	return 0;

err_buf:
	explicit_bzero(buf, got);
	free(buf);
err_fd:
	close(fd);
	return r;
}

/* Turns what was read into plaintext in sodium memory, decrypting a sealed
 * file.  Consumes bytes.  Returns 0, or a negative errno with the reason
 * left in the layer. */
static int layer_plaintext(struct layers *l, struct layer *f, uint8_t *bytes,
			   size_t len, char **text, size_t *text_len,
			   bool *sealed)
{
	const struct keys *k = l->keys;
	char err[512];
	uint8_t *plain;
	size_t plain_len;
	int r;

	*sealed = crypt_is_sealed_file(bytes, len);
	if (*sealed) {
		r = crypt_open_file(k ? k->held : NULL, k ? k->n_held : 0,
				    bytes, len, &plain, &plain_len, err,
				    sizeof(err));
		if (r < 0 && r != -ENOMEM)
			layer_fail(f, "%s: encrypted file: %s", f->path, err);
	} else {
		/* A copy, so that all kept text is in one kind of memory. */
		plain_len = len;
		plain = sodium_malloc(len + 1);
		r = plain ? 0 : -ENOMEM;
		if (plain) {
			memcpy(plain, bytes, len);
			plain[len] = '\0';
		}
	}
	explicit_bzero(bytes, len);
	free(bytes);
	if (r < 0)
		return r;
	*text = (char *)plain;
	*text_len = plain_len;
	return 0;
}

/* Re-parses files [from, n) from their kept text over the layers below.
 * Kept text parsed before; only memory or a key that went away can fail
 * here, and then the file keeps its previous parse. */
static int layers_reparse(struct layers *l, size_t from)
{
	for (size_t i = from; i < l->n_files; i++) {
		struct layer *f = &l->files[i];
		struct env_file parsed;
		struct env_error err;
		int r;

		if (!f->text)
			continue;
		r = layer_parse(l, i, f->text, f->text_len, &parsed, &err,
				NULL);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			continue;
		env_file_fini(&f->parsed);
		f->parsed = parsed;
	}
	return 0;
}

int layers_reload(struct layers *l, size_t i, uint64_t seq)
{
	struct layer *f = &l->files[i];
	struct env_file parsed;
	struct env_error err;
	unsigned decrypted;
	uint8_t *bytes = NULL;
	size_t len = 0, text_len;
	bool sealed;
	char *text;
	int r;

	char before[sizeof(f->identity)];

	memcpy(before, f->identity, sizeof(before));
	r = layer_read(f, &bytes, &len);
	/* The evaluation that first saw this version: re-reading the same
	 * version later (a reload) must not hide what that one changed. */
	if (!streq(before, f->identity) || f->read_seq == 0)
		f->read_seq = seq;
	if (r == 0)
		r = layer_plaintext(l, f, bytes, len, &text, &text_len, &sealed);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 0;
	if (f->text && text_len == f->text_len &&
	    memcmp(text, f->text, text_len) == 0) {
		/* The same text as the good version (a sealed file's bytes
		 * differ at each sealing): any earlier error is over. */
		text_free(text, text_len);
		f->state = LAYER_OK;
		free(f->error);
		f->error = NULL;
		return 0;
	}
	r = layer_parse(l, i, text, text_len, &parsed, &err, &decrypted);
	if (r < 0) {
		text_free(text, text_len);
		if (r == -ENOMEM)
			return r;
		f->state = LAYER_ERROR;
		layer_fail(f, "%s:%u:%u: %s", f->path, err.line, err.column,
			   err.message);
		return 0;
	}
	layer_set_text(f, text, text_len);
	env_file_fini(&f->parsed);
	f->parsed = parsed;
	f->state = LAYER_OK;
	f->crypt = sealed ? LAYER_SEALED : decrypted ? LAYER_VALUES : LAYER_PLAIN;
	f->ever_good = true;
	free(f->error);
	f->error = NULL;
	r = layers_reparse(l, i + 1);
	return r < 0 ? r : 1;
}

const char *layers_get(const struct layers *l, const char *name)
{
	struct lower lw = { .l = l, .below = l->n_files };

	return lookup_below(name, &lw);
}

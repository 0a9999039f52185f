/*
 * The layered environment; see layers.h.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "layers.h"

struct lower {
	const struct layers *l;
	size_t below; /* files [0, below) are visible */
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

int layers_init(struct layers *l, char *const *paths, size_t n)
{
	*l = (struct layers){ 0 };
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

static void layer_set_text(struct layer *f, char *text, size_t len)
{
	if (f->text)
		explicit_bzero(f->text, f->text_len);
	free(f->text);
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
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(f->error);
	f->error = strdup(buf);
	log_warning("%s%s", buf,
		    f->ever_good ? "; keeping its last good values" : "");
}

/* Reads the whole file.  Returns 0, or a negative errno with a message
 * left in the layer. */
static int layer_read(struct layer *f, char **text, size_t *len)
{
	struct stat st;
	size_t got = 0;
	char *buf;
	int fd, r;

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
	*text = buf;
	*len = got;
	return 0;

err_buf:
	explicit_bzero(buf, got);
	free(buf);
err_fd:
	close(fd);
	return r;
}

/* Re-parses files [from, n) from their kept text over the layers below.
 * Kept text parsed before, and syntax does not depend on other layers, so
 * only memory can fail here. */
static int layers_reparse(struct layers *l, size_t from)
{
	for (size_t i = from; i < l->n_files; i++) {
		struct layer *f = &l->files[i];
		struct lower lw = { l, i };
		struct env_file parsed;
		struct env_error err;
		int r;

		if (!f->text)
			continue;
		r = env_parse(f->text, f->text_len, lookup_below, &lw, &parsed,
			      &err);
		if (r < 0)
			return r == -EINVAL ? -EIO : r;
		env_file_fini(&f->parsed);
		f->parsed = parsed;
	}
	return 0;
}

int layers_reload(struct layers *l, size_t i)
{
	struct layer *f = &l->files[i];
	struct lower lw = { l, i };
	struct env_file parsed;
	struct env_error err;
	size_t len;
	char *text;
	int r;

	r = layer_read(f, &text, &len);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 0;
	if (f->text && len == f->text_len && memcmp(text, f->text, len) == 0) {
		/* Same bytes as the good version: any earlier error is over. */
		explicit_bzero(text, len);
		free(text);
		f->state = LAYER_OK;
		free(f->error);
		f->error = NULL;
		return 0;
	}
	r = env_parse(text, len, lookup_below, &lw, &parsed, &err);
	if (r < 0) {
		explicit_bzero(text, len);
		free(text);
		if (r == -ENOMEM)
			return r;
		f->state = LAYER_ERROR;
		layer_fail(f, "%s:%u:%u: %s", f->path, err.line, err.column,
			   err.message);
		return 0;
	}
	layer_set_text(f, text, len);
	env_file_fini(&f->parsed);
	f->parsed = parsed;
	f->state = LAYER_OK;
	f->ever_good = true;
	free(f->error);
	f->error = NULL;
	r = layers_reparse(l, i + 1);
	return r < 0 ? r : 1;
}

const char *layers_get(const struct layers *l, const char *name)
{
	struct lower lw = { l, l->n_files };

	return lookup_below(name, &lw);
}

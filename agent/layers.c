/*
 * The layered environment; see layers.h.
 */
#include <fcntl.h>
#include <limits.h>
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

/* env_ref.origin of a name from the process environment. */
#define LAYERS_ORIGIN_ENV INT_MAX

struct lower {
	const struct layers *l;
	size_t below;        /* files [0, below) are visible */
	const char *path;    /* of the file parsed */
	const struct writers *writers; /* of the file parsed; NULL: no rule */
	unsigned decrypted;  /* enc: values opened during this parse */
	unsigned decodes;    /* enc: values tried, opened or not */
};

/* The rule of layers.h for a file with writers w that defines name over
 * files [0, below) and the environment: every writer of it must be able
 * to write each of them that defines name too.  Returns true when it may;
 * else false, with why in msg (when msg is not NULL). */
static bool layers_may_redefine(const struct layers *l, size_t below,
				const struct writers *w, const char *name,
				char *msg, size_t msglen)
{
	struct writers self;
	char who[128];

	for (size_t j = below; j-- > 0;) {
		const struct layer *lo = &l->files[j];
		if (!env_file_get(&lo->parsed, name) ||
		    writers_covered(w, &lo->writers, who, sizeof(who)))
			continue;
		if (msg)
			snprintf(msg, msglen, "%s is defined in %s, which %s "
				 "(who can write this file) cannot write: a "
				 "layer may define again only names of layers "
				 "its writers could write", name, lo->path, who);
		return false;
	}
	if (!getenv(name))
		return true;
	writers_self(&self);
	if (writers_covered(w, &self, who, sizeof(who)))
		return true;
	if (msg)
		snprintf(msg, msglen, "%s is set in the agent's environment, "
			 "which %s (who can write this file) cannot set: a "
			 "layer may define again only names of layers its "
			 "writers could write", name, who);
	return false;
}

/* Whether file i's definition of name counts.  A file is rejected when
 * it breaks the rule above, but a file whose kept text parsed before a
 * file below it came to define the name keeps its parse (layers_reparse()):
 * its definition is passed over here instead, so that the lower one wins
 * as soon as it is there. */
static bool layer_defines(const struct layers *l, size_t i, const char *name)
{
	const struct layer *f = &l->files[i];

	return env_file_get(&f->parsed, name) &&
	       layers_may_redefine(l, i, &f->writers, name, NULL, 0);
}

/* The layer below lw->below that defines name, or -1 for the process
 * environment (or nowhere). */
static int lower_find(const struct lower *lw, const char *name,
		      const char **value)
{
	for (size_t i = lw->below; i-- > 0;) {
		if (layer_defines(lw->l, i, name)) {
			*value = env_file_get(&lw->l->files[i].parsed, name);
			return (int)i;
		}
	}
	*value = getenv(name);
	return -1;
}

static const char *lookup_below(const char *name, void *data)
{
	const char *v;

	lower_find(data, name, &v);
	return v;
}

/* The rule of layers.h: this file may take name from below only if
 * every writer of it could write where name is defined. */
static int resolve_below(const char *name, const char **value, int *origin,
			 char *msg, size_t msglen, void *data)
{
	const struct lower *lw = data;
	struct writers self;
	const struct writers *m = &self;
	char who[128];

	*origin = lower_find(lw, name, value);
	/* Told apart in refs: -1 nowhere, LAYERS_ORIGIN_ENV the
	 * environment (layers_walk()). */
	if (!*value)
		*origin = -1;
	else if (*origin < 0)
		*origin = LAYERS_ORIGIN_ENV;
	if (!*value || !lw->writers)
		return 0;
	if (*origin != LAYERS_ORIGIN_ENV)
		m = &lw->l->files[*origin].writers;
	else
		writers_self(&self);
	if (writers_covered(lw->writers, m, who, sizeof(who)))
		return 0;
	if (*origin != LAYERS_ORIGIN_ENV)
		snprintf(msg, msglen, "${%s} is defined in %s, which %s (who "
			 "can write this file) cannot write: a layer may expand "
			 "only names from layers its writers could write", name,
			 lw->l->files[*origin].path, who);
	else
		snprintf(msg, msglen, "${%s} comes from the agent's environment, "
			 "which %s (who can write this file) cannot set: a layer "
			 "may expand only names from layers its writers could "
			 "write", name, who);
	*value = NULL;
	return -EPERM;
}

/* Why a file with writers w may not have encrypted text opened, in msg;
 * false when it may. */
static bool layers_no_decrypt(const char *path, const struct writers *w,
			      char *msg, size_t msglen)
{
	char self[128], others[256];

	if (!w || writers_private(w))
		return false;
	if (geteuid() == 0)
		snprintf(self, sizeof(self), "root");
	else {
		snprintf(self, sizeof(self), "root and ");
		uid_describe((uint32_t)geteuid(), self + strlen(self),
			     sizeof(self) - strlen(self));
	}
	writers_describe(w, others, sizeof(others));
	snprintf(msg, msglen, "encrypted values are opened only in files that "
		 "no one but %s can write; %s is writable by %s", self, path,
		 others);
	return true;
}

static int decode_value(const char *name, const char *value, char **out,
			char *msg, size_t msglen, void *data)
{
	struct lower *lw = data;
	const struct keys *k = lw->l->keys;
	int r;

	/* Before anything is tried: whoever can write this file could
	 * have copied the ciphertext from another one. */
	if (layers_no_decrypt(lw->path, lw->writers, msg, msglen))
		return -EPERM;
	/* Each costs a public-key operation (about 0.1 ms), and a short
	 * line such as A=${V} can ask for one when V holds an enc: value:
	 * bounded, so that no file can hold the loop. */
	if (++lw->decodes > LAYERS_DECODES_MAX) {
		snprintf(msg, msglen, "more than %d encrypted values in one "
			 "file", LAYERS_DECODES_MAX);
		return -E2BIG;
	}
	r = crypt_open_value(k ? k->held : NULL, k ? k->n_held : 0, value,
			     out, msg, msglen);
	if (r == 0 && strchr(*out, '\r')) {
		/* As in the file's text: never a CR inside a value. */
		free_secret(*out);
		*out = NULL;
		snprintf(msg, msglen, "decrypted value holds a carriage return");
		return -EINVAL;
	}
	if (r == 0)
		lw->decrypted++;
	return r;
}

static int layer_parse(const struct layers *l, size_t i, const char *text,
		       size_t len, const struct writers *w,
		       struct env_file *out, struct env_error *err,
		       unsigned *decrypted)
{
	struct lower lw = { .l = l, .below = i, .path = l->files[i].path,
			    .writers = w };
	struct env_parse_opts opts = {
		.resolve = resolve_below,
		.decode = decode_value,
		.data = &lw,
		.refs = true,
	};
	int r = env_parse_with(text, len, &opts, out, err);

	if (decrypted)
		*decrypted = lw.decrypted;
	if (r < 0 || !w)
		return r;
	/* The rule of layers.h: a later layer wins, so whoever can write
	 * this file could point a target defined below at their server. */
	for (size_t e = 0; e < out->n; e++) {
		const struct env_entry *en = &out->entries[e];
		if (layers_may_redefine(l, i, w, en->name, err->message,
					sizeof(err->message)))
			continue;
		err->line = en->line;
		err->column = 1;
		env_file_fini(out);
		return -EPERM;
	}
	return 0;
}

int layers_init(struct layers *l, char *const *paths, size_t n,
		struct keys *keys)
{
	int64_t now = now_ms();

	*l = (struct layers){ .keys = keys };
	log_bucket_init(&l->log_all, LAYERS_LOG_ALL_BURST,
			LAYERS_LOG_ALL_PER_S, now);
	l->files = calloc(n ? n : 1, sizeof(*l->files));
	if (!l->files)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		l->files[i].path = strdup(paths[i]);
		if (!l->files[i].path)
			return -ENOMEM;
		l->files[i].state = LAYER_MISSING;
		log_bucket_init(&l->files[i].log, LAYERS_LOG_BURST,
				LAYERS_LOG_PER_S, now);
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

/* What a line about a file says, for layer_log(). */
enum layer_say {
	LAYER_SAY_OTHER,
	LAYER_SAY_BAD,  /* the file, or its newest version, is rejected */
	LAYER_SAY_GOOD, /* it is good again */
};

/* A line about file f, within its budget and that of all files
 * (LAYERS_LOG_* in layers.h); one left out is counted, and said by
 * layers_log_summaries().  Whoever writes a file decides how many
 * versions it has, so every line its versions can cause comes here.  A
 * line saying it is good again goes out regardless when the last line
 * about f that went out said it was bad: at most once per such line. */
PRINTF(5, 6)
static void layer_log(struct layers *l, struct layer *f, int level,
		      enum layer_say say, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!log_enabled(level))
		return;
	if (!(say == LAYER_SAY_GOOD && f->log_said_bad) &&
	    !log_bucket_take(&f->log, &l->log_all, now_ms())) {
		f->log_suppressed++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, "%s", line);
	if (say != LAYER_SAY_OTHER)
		f->log_said_bad = say == LAYER_SAY_BAD;
}

/* Says, at most once every LAYERS_LOG_SUMMARY_MS per file, how many lines
 * about each file were left out and what its state is now (the line that
 * would have said so may be among them).  Returns in how many ms the next
 * summary is due, or -1 when none is. */
static int64_t layers_log_summaries(struct layers *l)
{
	int64_t now = now_ms(), due = -1;

	for (size_t i = 0; i < l->n_files; i++) {
		struct layer *f = &l->files[i];
		int64_t wait = f->log_summary_ms + LAYERS_LOG_SUMMARY_MS - now;

		if (!f->log_suppressed)
			continue;
		if (wait > 0) {
			due = due < 0 ? wait : MIN(due, wait);
			continue;
		}
		if (f->state == LAYER_OK)
			log_notice("%s: %u more line(s) about this file not "
				   "logged (at most %d at once, %d a second); "
				   "it is good now, its values in force",
				   f->path, f->log_suppressed,
				   LAYERS_LOG_BURST, LAYERS_LOG_PER_S);
		else
			log_warning("%s: %u more line(s) about this file not "
				    "logged (at most %d at once, %d a second); "
				    "its state now: %s%s", f->path,
				    f->log_suppressed, LAYERS_LOG_BURST,
				    LAYERS_LOG_PER_S,
				    f->error ? f->error : "not read",
				    f->ever_good ? "; keeping its last good "
						   "values" : "");
		f->log_said_bad = f->state != LAYER_OK;
		f->log_suppressed = 0;
		f->log_summary_ms = now;
	}
	return due;
}

/* Keeps why f is rejected for status, and logs it when log is set, but
 * not again for the version read before (a recheck or a reload of it). */
PRINTF(4, 5)
static void layer_fail(struct layers *l, struct layer *f, bool log,
		       const char *fmt, ...)
{
	char buf[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (f->reread && f->error && streq(f->error, buf))
		log = false;
	free(f->error);
	f->error = strdup(buf);
	if (log)
		layer_log(l, f, LOG_WARNING, LAYER_SAY_BAD, "%s%s", buf,
			  f->ever_good ? "; keeping its last good values"
				       : "");
}

/* Whether another process has fd's file open for writing, asked of the
 * kernel with a read lease: 0 no (the lease is then held: drop it with
 * layer_unlease() once read), 1 yes, -1 the kernel grants no lease here
 * (not the file's owner and no CAP_LEASE, or a file system without
 * leases).  Holding it only while reading delays a writer's open() by
 * that long; the agent ignores SIGIO, which a lease break sends. */
static int layer_lease(int fd)
{
	if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
		return 0;
	return errno == EAGAIN ? 1 : -1;
}

static void layer_unlease(int fd)
{
	(void)fcntl(fd, F_SETLEASE, F_UNLCK);
}

static bool writers_equal(const struct writers *a, const struct writers *b)
{
	return a->n_uids == b->n_uids && a->n_gids == b->n_gids &&
	       a->anyone == b->anyone && a->more == b->more &&
	       memcmp(a->uids, b->uids, a->n_uids * sizeof(a->uids[0])) == 0 &&
	       memcmp(a->gids, b->gids, a->n_gids * sizeof(a->gids[0])) == 0;
}

/* Reads the whole file into a malloc'ed buffer and notes what was read;
 * *writer says whether another process has it open for writing, as
 * layer_lease().  Returns 0, or a negative errno with the reason in why
 * (the layer's state set). */
static int layer_read(struct layer *f, uint8_t **bytes, size_t *len,
		      int *writer, struct writers *w, char *why, size_t whylen)
{
	struct stat st;
	size_t got = 0;
	uint8_t *buf;
	int fd, r;

	f->identity[0] = '\0';
	*writer = -1;
	fd = file_open_regular(f->path, &st);
	if (fd < 0) {
		f->state = fd == -ENOENT ? LAYER_MISSING : LAYER_ERROR;
		if (fd == -ENOENT)
			snprintf(why, whylen, "%s: file is missing", f->path);
		else if (fd == -EISDIR || fd == -EINVAL)
			snprintf(why, whylen, "%s: is %s, not a regular file",
				 f->path, file_type_name(st.st_mode));
		else
			snprintf(why, whylen, "%s: cannot open: %s", f->path,
				 strerror(-fd));
		return fd;
	}
	f->state = LAYER_ERROR;
	file_identity(&st, f->identity);
	/* Of the file opened, and of each directory and link on the way
	 * as they are now. */
	r = writers_of_path(f->path, fd, w, why, whylen);
	if (r < 0)
		goto err_fd;
	if (st.st_size > LAYERS_FILE_MAX) {
		r = -EFBIG;
		snprintf(why, whylen, "%s: file of %lld bytes is over the %d "
			 "byte limit", f->path, (long long)st.st_size,
			 LAYERS_FILE_MAX);
		goto err_fd;
	}
	/* One byte more than the limit, to notice a file that grew since. */
	buf = malloc(LAYERS_FILE_MAX + 1);
	if (!buf) {
		r = -ENOMEM;
		snprintf(why, whylen, "%s: out of memory", f->path);
		goto err_fd;
	}
	*writer = layer_lease(fd);
	for (;;) {
		ssize_t n = read(fd, buf + got, LAYERS_FILE_MAX + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = neg_errno();
			snprintf(why, whylen, "%s: cannot read: %s", f->path,
				 strerror(-r));
			goto err_buf;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > LAYERS_FILE_MAX) {
			r = -EFBIG;
			snprintf(why, whylen, "%s: file is over the %d byte "
				 "limit", f->path, LAYERS_FILE_MAX);
			goto err_buf;
		}
	}
	if (*writer == 0)
		layer_unlease(fd);
	close(fd);
	*bytes = buf;
	*len = got;
	return 0;

err_buf:
	if (*writer == 0)
		layer_unlease(fd);
	explicit_bzero(buf, got);
	free(buf);
err_fd:
	close(fd);
	return r;
}

/* Whether a failed read is worth trying again without a change being
 * seen: not for what only a change to the file or a link can fix (those
 * are watched), only for what may pass (permissions fixed elsewhere, out
 * of descriptors or memory, I/O errors, a path that changed mid-open). */
static bool layer_retryable(int r)
{
	switch (-r) {
	case ENOENT:
	case ENOTDIR:
	case ELOOP:
	case ENAMETOOLONG:
	case EISDIR:
	case EINVAL:
	case EFBIG:
		return false;
	}
	return true;
}

/* A writer has the file open and what it holds is not the version in
 * force: whether to put it off (returns true; *recheck_ms set), or to use
 * it because the writer has had long enough and it stopped changing. */
static bool layer_put_off(struct layers *l, struct layer *f,
			  const uint8_t hash[32], int64_t *recheck_ms)
{
	int64_t now = now_ms(), waited, stable, left;
	bool first = f->open_since_ms == 0;

	if (f->ever_good && sodium_memcmp(hash, f->good_hash, 32) == 0) {
		f->open_since_ms = 0;
		return false;
	}
	if (first) {
		f->open_since_ms = now;
		f->open_hash_ms = now;
		memcpy(f->open_hash, hash, sizeof(f->open_hash));
	} else if (sodium_memcmp(hash, f->open_hash, 32) != 0) {
		f->open_hash_ms = now;
		memcpy(f->open_hash, hash, sizeof(f->open_hash));
	}
	waited = now - f->open_since_ms;
	stable = now - f->open_hash_ms;
	if (waited >= LAYERS_UNCLOSED_MAX_MS &&
	    stable >= LAYERS_UNCLOSED_STABLE_MS) {
		layer_log(l, f, LOG_WARNING, LAYER_SAY_OTHER,
			  "%s: still open for writing after %lld s, but "
			  "unchanged for %lld s: reading it", f->path,
			  (long long)(waited / 1000),
			  (long long)(stable / 1000));
		f->open_since_ms = 0;
		return false;
	}
	f->state = LAYER_WRITING;
	layer_fail(l, f, false, "%s: open for writing by another process; "
		   "waiting for it to close (or, after %d s, for the content "
		   "to stay unchanged for %d s)", f->path,
		   LAYERS_UNCLOSED_MAX_MS / 1000,
		   LAYERS_UNCLOSED_STABLE_MS / 1000);
	if (first)
		layer_log(l, f, LOG_NOTICE, LAYER_SAY_OTHER, "%s", f->error);
	left = MAX(LAYERS_UNCLOSED_MAX_MS - waited,
		   LAYERS_UNCLOSED_STABLE_MS - stable);
	*recheck_ms = MIN(LAYERS_UNCLOSED_RECHECK_MS, MAX(left, 10));
	return true;
}

/* Turns what was read into plaintext in sodium memory, decrypting a sealed
 * file.  Consumes bytes.  Returns 0, or a negative errno with the reason
 * left in the layer. */
static int layer_plaintext(struct layers *l, struct layer *f, uint8_t *bytes,
			   size_t len, const struct writers *w, char **text,
			   size_t *text_len, bool *sealed)
{
	const struct keys *k = l->keys;
	char err[512];
	uint8_t *plain;
	size_t plain_len;
	int r;

	*sealed = crypt_is_sealed_file(bytes, len);
	if (*sealed && layers_no_decrypt(f->path, w, err, sizeof(err))) {
		r = -EPERM;
		layer_fail(l, f, true, "%s: encrypted file: %s", f->path, err);
	} else if (*sealed) {
		r = crypt_open_file(k ? k->held : NULL, k ? k->n_held : 0,
				    bytes, len, &plain, &plain_len, err,
				    sizeof(err));
		if (r < 0 && r != -ENOMEM)
			layer_fail(l, f, true, "%s: encrypted file: %s",
				   f->path, err);
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
		r = layer_parse(l, i, f->text, f->text_len, &f->writers,
				&parsed, &err, NULL);
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			/* A layer below changed under it: most often a name
			 * it may not expand moved there.  Its previous parse
			 * stays; the reason is kept for status, logged once. */
			char was[sizeof(err.message) + 64];
			bool same = f->reparse_failed && f->error &&
				    strstr(f->error, err.message);
			snprintf(was, sizeof(was), "%u:%u: %s", err.line,
				 err.column, err.message);
			/* An error of its own newest version says more. */
			if (!same && (f->state == LAYER_OK ||
				      f->reparse_failed)) {
				f->state = LAYER_ERROR;
				f->reparse_failed = true;
				layer_fail(l, f, true, "%s:%s (after a "
					   "change below it)", f->path, was);
			}
			continue;
		}
		if (f->reparse_failed) {
			f->reparse_failed = false;
			f->state = LAYER_OK;
			free(f->error);
			f->error = NULL;
			layer_log(l, f, LOG_NOTICE, LAYER_SAY_GOOD,
				  "%s: parses again over the files below it",
				  f->path);
		}
		env_file_fini(&f->parsed);
		f->parsed = parsed;
	}
	return 0;
}

/* The version read is in force (or is the text in force): an error kept
 * for f is over, and the log says so when it said the error. */
static void layer_good(struct layers *l, struct layer *f, bool unreadable,
		       const char *how)
{
	bool was_bad = f->log_said_bad ||
		       (f->error && (f->state == LAYER_ERROR ||
				     f->state == LAYER_MISSING));

	f->state = LAYER_OK;
	free(f->error);
	f->error = NULL;
	if (was_bad)
		layer_log(l, f, LOG_NOTICE, LAYER_SAY_GOOD, "%s: %s again%s; "
			  "its values are in force", f->path,
			  unreadable ? "readable" : "good", how);
}

/* layers_reload() but for the summaries of lines left out. */
static int layer_reload(struct layers *l, size_t i, uint64_t seq,
			bool writer_open, int64_t *recheck_ms)
{
	struct layer *f = &l->files[i];
	char before[sizeof(f->identity)], why[640];
	uint8_t hash[32];
	struct env_file parsed;
	struct env_error err;
	unsigned decrypted;
	uint8_t *bytes = NULL;
	size_t len = 0, text_len;
	struct writers w;
	int writer;
	bool unreadable;
	bool sealed;
	char *text;
	int r;

	*recheck_ms = -1;
	memcpy(before, f->identity, sizeof(before));
	r = layer_read(f, &bytes, &len, &writer, &w, why, sizeof(why));
	f->reread = streq(before, f->identity);
	/* The evaluation that first saw this version: re-reading the same
	 * version later (a reload) must not hide what that one changed. */
	if (!streq(before, f->identity) || f->read_seq == 0)
		f->read_seq = seq;
	if (r < 0 && layer_retryable(r)) {
		int64_t delay = backoff_ms(f->read_failures, LAYERS_RETRY_FIRST_MS,
					   LAYERS_RETRY_MAX_MS);
		/* Logged when the reason changes, not at every retry. */
		layer_fail(l, f, f->read_failures == 0 || f->read_errno != -r,
			   "%s; retrying in %lld ms", why, (long long)delay);
		if (f->read_failures < 32)
			f->read_failures++;
		f->read_errno = -r;
		*recheck_ms = delay;
		return r == -ENOMEM ? r : 0;
	}
	if (r < 0) {
		layer_fail(l, f, true, "%s", why);
		f->read_failures = 0;
		return 0;
	}
	/* Readable again: one line says so once the version read is in
	 * force (layer_good) or why it is not (layer_fail). */
	unreadable = f->read_failures > 0;
	f->read_failures = 0;
	f->read_errno = 0;
	crypto_generichash(hash, sizeof(hash), bytes, len, NULL, 0);
	if ((writer >= 0 ? writer == 1 : writer_open) &&
	    layer_put_off(l, f, hash, recheck_ms)) {
		explicit_bzero(bytes, len);
		free(bytes);
		return 0;
	}
	f->open_since_ms = 0;
	r = layer_plaintext(l, f, bytes, len, &w, &text, &text_len, &sealed);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 0;
	if (f->text && text_len == f->text_len &&
	    memcmp(text, f->text, text_len) == 0 &&
	    writers_equal(&w, &f->writers) && !f->reparse_failed) {
		/* The same text as the good version (a sealed file's bytes
		 * differ at each sealing): any earlier error is over. */
		text_free(text, text_len);
		memcpy(f->good_hash, hash, sizeof(hash));
		layer_good(l, f, unreadable,
			   " (the same text as the version in force)");
		return 0;
	}
	/* The same text with other writers (a chmod, a chown, a directory
	 * made writable) is judged again as a new version. */
	r = layer_parse(l, i, text, text_len, &w, &parsed, &err, &decrypted);
	if (r < 0) {
		text_free(text, text_len);
		if (r == -ENOMEM)
			return r;
		f->state = LAYER_ERROR;
		f->reparse_failed = false;
		layer_fail(l, f, true, "%s:%u:%u: %s", f->path, err.line,
			   err.column, err.message);
		return 0;
	}
	f->reparse_failed = false;
	layer_set_text(f, text, text_len);
	f->writers = w;
	memcpy(f->good_hash, hash, sizeof(hash));
	env_file_fini(&f->parsed);
	f->parsed = parsed;
	f->crypt = sealed ? LAYER_SEALED : decrypted ? LAYER_VALUES : LAYER_PLAIN;
	layer_good(l, f, unreadable, "");
	f->ever_good = true;
	r = layers_reparse(l, i + 1);
	return r < 0 ? r : 1;
}

int layers_reload(struct layers *l, size_t i, uint64_t seq, bool writer_open,
		  int64_t *recheck_ms)
{
	int r = layer_reload(l, i, seq, writer_open, recheck_ms);
	int64_t due = layers_log_summaries(l);

	/* Lines left out are said though no version comes after them:
	 * reading this file again then costs one read, and an unchanged
	 * version logs nothing again (layer_fail()). */
	if (due >= 0 && (*recheck_ms < 0 || due < *recheck_ms))
		*recheck_ms = MAX(due, 1);
	return r;
}

const char *layers_get(const struct layers *l, const char *name)
{
	struct lower lw = { .l = l, .below = l->n_files };

	return lookup_below(name, &lw);
}

/* The highest layer whose definition of name counts (layer_defines()),
 * and the entry there: the definition layers_get() gives. */
static bool layers_find(const struct layers *l, const char *name,
			size_t *layer, size_t *entry)
{
	for (size_t i = l->n_files; i-- > 0;) {
		size_t e = env_file_index(&l->files[i].parsed, name);
		if (e != ENV_REF_LOWER && layer_defines(l, i, name)) {
			*layer = i;
			*entry = e;
			return true;
		}
	}
	return false;
}

bool layers_origin(const struct layers *l, const char *name, size_t *layer)
{
	size_t e;

	if (layers_find(l, name, layer, &e))
		return true;
	*layer = LAYERS_ENV;
	return getenv(name) != NULL;
}

bool layers_where(const struct layers *l, const char *name,
		  const char **path, unsigned *line)
{
	size_t i, e;

	if (!layers_find(l, name, &i, &e))
		return false;
	*path = l->files[i].path;
	*line = l->files[i].parsed.entries[e].line;
	return true;
}

struct walk_state {
	const struct layers *l;
	layers_walk_fn *fn;
	void *data;
	unsigned steps;
};

static int span_cmp(const void *a, const void *b)
{
	const size_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Whether some byte of [off, end) of en's value is not covered by the
 * spans of refs whose value went in whole (exact[k]). */
static int walk_has_literal(const struct env_entry *en, const bool *exact,
			    size_t off, size_t end, bool *literal)
{
	size_t (*spans)[2], n = 0, at = off;

	*literal = false;
	if (off >= end)
		return 0;
	spans = calloc(en->n_refs ? en->n_refs : 1, sizeof(*spans));
	if (!spans)
		return -ENOMEM;
	for (size_t k = 0; k < en->n_refs; k++) {
		if (!exact[k])
			continue;
		spans[n][0] = en->refs[k].off;
		spans[n][1] = en->refs[k].off + en->refs[k].len;
		n++;
	}
	qsort(spans, n, sizeof(*spans), span_cmp);
	for (size_t k = 0; k < n && at < end; k++) {
		if (spans[k][0] > at)
			break;
		at = MAX(at, spans[k][1]);
	}
	free(spans);
	*literal = at < end;
	return 0;
}

/* Walks the entry e of layer i, region [off, end) of its value. */
static int walk_entry(struct walk_state *w, size_t i, size_t e, size_t off,
		      size_t end)
{
	const struct env_file *f = &w->l->files[i].parsed;
	const struct env_entry *en;
	bool *exact, literal;
	size_t vlen;
	int r = 0;

	if (e >= f->n)
		return 0; /* a stale ref (see layers_reparse()) */
	en = &f->entries[e];
	vlen = strlen(en->value);
	end = MIN(end, vlen);
	if (off >= end)
		return 0;
	exact = calloc(en->n_refs ? en->n_refs : 1, sizeof(*exact));
	if (!exact)
		return -ENOMEM;
	for (size_t k = 0; k < en->n_refs && r == 0; k++) {
		const struct env_ref *ref = &en->refs[k];
		size_t s = ref->off, t = MIN(ref->off + ref->len, vlen);
		size_t ci = i, ce = ref->entry, cv, cs, ct;

		/* Empty, or outside the region: nothing of it is there. */
		if (s >= t || t <= off || s >= end)
			continue;
		if (++w->steps > LAYERS_WALK_MAX) {
			r = -E2BIG;
			break;
		}
		if (ce == ENV_REF_LOWER) {
			if (ref->origin < 0)
				continue; /* defined nowhere: a default's text */
			if ((size_t)ref->origin >= i) {
				/* The environment: its value, whole. */
				exact[k] = true;
				r = w->fn(ref->name, LAYERS_ENV, false, w->data);
				if (r == 0)
					r = w->fn(ref->name, LAYERS_ENV, true,
						  w->data);
				continue;
			}
			ci = (size_t)ref->origin;
			ce = env_file_index(&w->l->files[ci].parsed, ref->name);
		}
		r = w->fn(ref->name, ci, false, w->data);
		if (r || ce == ENV_REF_LOWER || ce >= w->l->files[ci].parsed.n)
			continue;
		cv = strlen(w->l->files[ci].parsed.entries[ce].value);
		if (cv == ref->len) {
			/* The value went in whole: the part in the region
			 * is known. */
			exact[k] = true;
			cs = MAX(s, off) - s;
			ct = MIN(t, end) - s;
		} else {
			cs = 0;
			ct = cv;
		}
		r = walk_entry(w, ci, ce, cs, ct);
	}
	if (r == 0)
		r = walk_has_literal(en, exact, off, end, &literal);
	if (r == 0 && literal)
		r = w->fn(en->name, i, true, w->data);
	free(exact);
	return r;
}

int layers_walk(const struct layers *l, const char *name, size_t off,
		size_t len, layers_walk_fn *fn, void *data)
{
	struct walk_state w = { .l = l, .fn = fn, .data = data };
	size_t i, e;

	if (!layers_find(l, name, &i, &e))
		return 0;
	return walk_entry(&w, i, e, off, len > SIZE_MAX - off ? SIZE_MAX
							     : off + len);
}

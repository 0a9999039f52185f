/*
 * Subordinate uid ranges: reading /etc/subuid and finding a uid's range;
 * see subuid.h.  The parse never fails on a bad line (it is skipped), so
 * that an admin's typo costs one range, not all of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "ipc/msg.h"
#include "subuid.h"

void subuid_init(struct subuid_map *m, const char *path, const char *passwd)
{
	*m = (struct subuid_map){
		.path = path ? path : SUBUID_PATH,
		.passwd = passwd ? passwd : SUBUID_PASSWD_PATH,
	};
}

void subuid_fini(struct subuid_map *m)
{
	free(m->ranges);
	m->ranges = NULL;
	m->n = 0;
}

/* Whether a and b describe the same version of a file (both zeroed: both
 * absent). */
static bool subuid_same(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	       a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Reads path, a regular file of at most SUBUID_FILE_MAX bytes, whole into
 * *out (NUL-terminated, to free).  Never opens anything else, never waits
 * (file_open_regular).  Returns 0 or a negative errno (-EFBIG: too
 * large). */
static int subuid_read_file(const char *path, char **out)
{
	struct stat st;
	size_t len = 0, cap;
	char *buf, *more;
	int fd = file_open_regular(path, &st);
	int r = 0;

	if (fd < 0)
		return fd;
	if (st.st_size > SUBUID_FILE_MAX) {
		r = -EFBIG;
		goto err_fd;
	}
	cap = (size_t)st.st_size + 2;
	buf = malloc(cap);
	if (!buf) {
		r = -ENOMEM;
		goto err_fd;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = neg_errno();
			goto err_buf;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > SUBUID_FILE_MAX) {
			r = -EFBIG;
			goto err_buf;
		}
		if (len == cap - 1) {
			/* Grown since fstat. */
			cap = MIN(cap * 2, (size_t)SUBUID_FILE_MAX + 2);
			more = realloc(buf, cap);
			if (!more) {
				r = -ENOMEM;
				goto err_buf;
			}
			buf = more;
		}
	}
	buf[len] = '\0';
	close(fd);
	*out = buf;
	return 0;

err_buf:
	free(buf);
err_fd:
	close(fd);
	return r;
}

static const char *subuid_strerror(int e)
{
	return e == -EFBIG   ? "larger than 4 MiB"
	       : e == -EINVAL ? "not a regular file"
			      : strerror(-e);
}

static int subuid_by_name(const void *a, const void *b)
{
	return strcmp(((const struct subuid_range *)a)->name,
		      ((const struct subuid_range *)b)->name);
}

static int subuid_by_start(const void *a, const void *b)
{
	const struct subuid_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Whether s is a decimal number: an owner given by uid. */
static bool subuid_numeric(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* Cuts text at its first newline; returns what follows, or NULL. */
static char *subuid_line(char *text)
{
	char *next = strchr(text, '\n');

	if (next)
		*next++ = '\0';
	return next;
}

/* Gives the ranges whose owner is a name the uid passwd gives it; one of
 * a name passwd lacks counts as a user of its own (its first uid).  r is
 * sorted by name on return. */
static void subuid_resolve(struct subuid_range *r, size_t n, char *passwd)
{
	qsort(r, n, sizeof(*r), subuid_by_name);
	for (char *line = passwd, *next; line && *line; line = next) {
		struct subuid_range key, *hit;
		char *f[3];
		uint64_t uid;
		int k = 0;

		next = subuid_line(line);
		/* name:password:uid:... */
		for (char *p = line; k < 3 && p; k++) {
			f[k] = p;
			p = strchr(p, ':');
			if (p)
				*p++ = '\0';
		}
		if (k < 3 || strlen(f[0]) > SUBUID_NAME_MAX ||
		    parse_uint(f[2], 0, UINT32_MAX, &uid) < 0)
			continue;
		strcpy(key.name, f[0]);
		hit = bsearch(&key, r, n, sizeof(*r), subuid_by_name);
		if (!hit)
			continue;
		/* One of the ranges of that name: all of them, and only
		 * those not resolved by an earlier line (the first wins, as
		 * for getpwnam). */
		while (hit > r && streq(hit[-1].name, key.name))
			hit--;
		for (; hit < r + n && streq(hit->name, key.name); hit++)
			if (hit->owner == (uid_t)-1)
				hit->owner = (uid_t)uid;
	}
	for (size_t i = 0; i < n; i++)
		if (r[i].owner == (uid_t)-1)
			r[i].owner = (uid_t)r[i].start;
}

/* One line of a subuid file into *r; false if it is not
 * owner:start:count with a printable owner of at most SUBUID_NAME_MAX
 * bytes and a range within the 32-bit uids. */
static bool subuid_parse_line(char *line, struct subuid_range *r)
{
	char *owner = line, *start, *count;
	uint64_t a, c, uid;

	start = strchr(owner, ':');
	count = start ? strchr(start + 1, ':') : NULL;
	if (!count)
		return false;
	*start++ = '\0';
	*count++ = '\0';
	if (!*owner || strlen(owner) > SUBUID_NAME_MAX ||
	    !ipc_text_is_clean(owner, strlen(owner)) ||
	    strpbrk(owner, " \t\r") ||
	    parse_uint(start, 0, UINT32_MAX, &a) < 0 ||
	    parse_uint(count, 1, UINT32_MAX, &c) < 0 ||
	    a + c > (uint64_t)UINT32_MAX + 1)
		return false;
	*r = (struct subuid_range){ .start = a, .end = a + c,
				    .owner = (uid_t)-1 };
	strcpy(r->name, owner);
	if (subuid_numeric(owner) &&
	    parse_uint(owner, 0, UINT32_MAX, &uid) == 0)
		r->owner = (uid_t)uid;
	return true;
}

int subuid_parse(char *text, char *passwd, struct subuid_range **out,
		 size_t *n_out, unsigned *bad, unsigned *first_bad)
{
	struct subuid_range *r = NULL, *more;
	size_t n = 0, cap = 0;
	unsigned line_no = 0;

	*bad = *first_bad = 0;
	for (char *line = text, *next; line && *line; line = next) {
		line_no++;
		next = subuid_line(line);
		if (!*line || *line == '#')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			more = reallocarray(r, cap, sizeof(*r));
			if (!more) {
				free(r);
				return -ENOMEM;
			}
			r = more;
		}
		if (subuid_parse_line(line, &r[n])) {
			n++;
		} else if (!(*bad)++) {
			*first_bad = line_no;
		}
	}
	/* qsort() and bsearch() take no NULL array, even empty. */
	if (n) {
		subuid_resolve(r, n, passwd);
		qsort(r, n, sizeof(*r), subuid_by_start);
	}
	for (size_t i = 0; i < n; i++)
		r[i].reach = MAX(r[i].end, i ? r[i - 1].reach : 0);
	*out = r;
	*n_out = n;
	return 0;
}

/* Reads the files into m's ranges (subuid_refresh). */
static void subuid_load(struct subuid_map *m)
{
	struct subuid_range *r;
	size_t n;
	unsigned bad, first_bad;
	char *text = NULL, *passwd = NULL;
	int e = subuid_read_file(m->path, &text);

	if (e == -ENOENT) {
		if (m->n)
			log_info("%s: gone; no subordinate uid ranges",
				 m->path);
		subuid_fini(m);
		return;
	}
	if (e < 0) {
		log_warning("%s: %s; the %zu subordinate uid range(s) read "
			    "before stay in force", m->path,
			    subuid_strerror(e), m->n);
		return;
	}
	/* Read whole even when no owner is a name: its identity is the
	 * one recorded. */
	e = subuid_read_file(m->passwd, &passwd);
	if (e < 0 && e != -ENOENT)
		log_warning("%s: %s; subordinate uid ranges of owners given "
			    "by name count as users of their own", m->passwd,
			    subuid_strerror(e));
	e = subuid_parse(text, passwd, &r, &n, &bad, &first_bad);
	free(text);
	free(passwd);
	if (e < 0) {
		log_warning("%s: %s; the %zu subordinate uid range(s) read "
			    "before stay in force", m->path, strerror(-e),
			    m->n);
		return;
	}
	if (bad)
		log_warning("%s line %u: not owner:start:count; skipped (%u "
			    "such line(s))", m->path, first_bad, bad);
	if (n || m->n)
		log_info("%s: %zu subordinate uid range(s); their uids count "
			 "as their owners' for the per-uid quotas", m->path,
			 n);
	free(m->ranges);
	m->ranges = r;
	m->n = n;
}

void subuid_refresh(struct subuid_map *m)
{
	struct stat sub, pw;
	int64_t now = now_ms();

	if (m->checked_ms && now - m->checked_ms < SUBUID_CHECK_MS)
		return;
	m->checked_ms = now;
	if (stat(m->path, &sub) < 0)
		memset(&sub, 0, sizeof(sub));
	if (stat(m->passwd, &pw) < 0)
		memset(&pw, 0, sizeof(pw));
	if (subuid_same(&sub, &m->sub_st) && subuid_same(&pw, &m->pw_st))
		return;
	m->sub_st = sub;
	m->pw_st = pw;
	subuid_load(m);
}

const struct subuid_range *subuid_find(const struct subuid_map *m, uid_t uid)
{
	size_t lo = 0, hi = m->n;

	/* The first range that starts after uid; then back while a range
	 * before may still reach it. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->ranges[mid].start <= uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i-- > 0 && m->ranges[i].reach > uid;)
		if (uid < m->ranges[i].end)
			return &m->ranges[i];
	return NULL;
}

void subuid_describe(const struct subuid_range *r, char *buf, size_t len)
{
	snprintf(buf, len, " (subuid of %s%s)",
		 subuid_numeric(r->name) ? "uid " : "", r->name);
}

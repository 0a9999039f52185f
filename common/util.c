/*
 * Small helpers shared by every part of dbswap; see util.h.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/xattr.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <unistd.h>

#include "util.h"

void *zalloc(size_t size)
{
	return calloc(1, size);
}

void *secret_grow(void *old, size_t used, size_t old_cap, size_t new_cap)
{
	void *p = malloc(new_cap);

	if (!p)
		return NULL;
	if (old) {
		memcpy(p, old, used);
		explicit_bzero(old, old_cap);
		free(old);
	}
	return p;
}

int fd_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return neg_errno();
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int file_open_regular(const char *path, struct stat *st)
{
	char proc[64];
	struct stat st2;
	int pfd, fd, r;

	pfd = open(path, O_PATH | O_CLOEXEC);
	if (pfd < 0)
		return neg_errno();
	if (fstat(pfd, st) < 0) {
		r = neg_errno();
		goto err_pfd;
	}
	if (!S_ISREG(st->st_mode)) {
		r = S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
		goto err_pfd;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	fd = open(proc, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* No /proc here: open the path again and make sure it is
		 * still the file checked. */
		fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd >= 0 && (fstat(fd, &st2) < 0 || st2.st_dev != st->st_dev ||
				st2.st_ino != st->st_ino)) {
			close(fd);
			r = -EAGAIN;
			goto err_pfd;
		}
	}
	if (fd < 0) {
		r = neg_errno();
		goto err_pfd;
	}
	close(pfd);
	return fd;

err_pfd:
	close(pfd);
	return r;
}

const char *file_type_name(unsigned mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "a regular file";
	case S_IFDIR: return "a directory";
	case S_IFIFO: return "a FIFO (named pipe)";
	case S_IFSOCK: return "a socket";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	case S_IFLNK: return "a symbolic link";
	}
	return "a file of unknown type";
}

void file_identity(const struct stat *st, char out[FILE_IDENTITY_MAX])
{
	snprintf(out, FILE_IDENTITY_MAX, "%llu:%llu:%lld:%lld",
		 (unsigned long long)st->st_dev,
		 (unsigned long long)st->st_ino, (long long)st->st_size,
		 (long long)st->st_mtim.tv_sec * 1000000000LL +
			 st->st_mtim.tv_nsec);
}

char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

void free_secret(char *s)
{
	if (!s)
		return;
	/* explicit_bzero is not optimised away like a plain memset. */
	explicit_bzero(s, strlen(s));
	free(s);
}

struct secret {
	size_t refs;
	size_t len;
	char s[];
};

static struct secret *secret_of(char *s)
{
	return (struct secret *)(s - offsetof(struct secret, s));
}

char *secret_dup(const char *s)
{
	size_t len = strlen(s);
	struct secret *h = malloc(sizeof(*h) + len + 1);

	if (!h)
		return NULL;
	h->refs = 1;
	h->len = len;
	memcpy(h->s, s, len + 1);
	return h->s;
}

char *secret_ref(char *s)
{
	if (s)
		secret_of(s)->refs++;
	return s;
}

void secret_unref(char *s)
{
	struct secret *h;

	if (!s)
		return;
	h = secret_of(s);
	if (--h->refs > 0)
		return;
	explicit_bzero(h->s, h->len);
	free(h);
}

int64_t backoff_ms(unsigned attempt, int64_t first, int64_t max)
{
	int64_t base = first;
	uint32_t r = 0;

	while (attempt-- > 0 && base < max)
		base *= 2;
	if (base > max)
		base = max;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)now_us();
	return base / 2 + (int64_t)(r % (uint32_t)(base / 2 + 1));
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		/* max is far below UINT64_MAX / 10: no overflow before this. */
		if (v > max)
			return -EINVAL;
	}
	if (v < min)
		return -EINVAL;
	*out = v;
	return 0;
}

void append_reason(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len && len + 2 < size) {
		memcpy(buf + len, "; ", 3);
		len += 2;
	}
	if (len + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

void set_strf(char **dst, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	free(*dst);
	*dst = NULL;
	if (!fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	*dst = strdup(buf);
}

/* writers */

/* The id the kernel shows for a user or group that has none in this user
 * namespace (PrivateUsers=): many users look alike through it. */
static uint32_t overflow_id(const char *file)
{
	char buf[32] = "";
	FILE *f = fopen(file, "re");
	unsigned long v;

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	if (sscanf(buf, "%lu", &v) == 1)
		return (uint32_t)v;
	return 65534;
}

static bool writers_has(const uint32_t *ids, unsigned n, uint32_t id)
{
	for (unsigned i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* What a walk found: the writers, and for messages the first place that
 * let in someone besides root and this process's user. */
struct walk {
	struct writers *w;
	char *culprit;
	size_t culprit_len;
};

static void walk_blame(struct walk *k, const char *fmt, ...) PRINTF(2, 3);
static void walk_blame(struct walk *k, const char *fmt, ...)
{
	va_list ap;

	if (!k->culprit || k->culprit[0])
		return;
	va_start(ap, fmt);
	vsnprintf(k->culprit, k->culprit_len, fmt, ap);
	va_end(ap);
}

static bool id_trusted(uint32_t uid)
{
	return uid == 0 || uid == (uint32_t)geteuid();
}

static void walk_uid(struct walk *k, uint32_t uid, const char *what,
		     const char *path)
{
	struct writers *w = k->w;
	char d[96];

	if (uid == 0 || writers_has(w->uids, w->n_uids, uid))
		return;
	if (!id_trusted(uid)) {
		uid_describe(uid, d, sizeof(d));
		walk_blame(k, "%s %s is owned by %s", what, path, d);
	}
	if (w->n_uids == WRITERS_MAX)
		w->more = true;
	else
		w->uids[w->n_uids++] = uid;
}

static void walk_gid(struct walk *k, uint32_t gid, const char *what,
		     const char *path)
{
	struct writers *w = k->w;
	char d[96];

	if (writers_has(w->gids, w->n_gids, gid))
		return;
	gid_describe(gid, d, sizeof(d));
	walk_blame(k, "%s %s is writable by %s", what, path, d);
	if (w->n_gids == WRITERS_MAX)
		w->more = true;
	else
		w->gids[w->n_gids++] = gid;
}

static void walk_anyone(struct walk *k, const char *what, const char *path)
{
	walk_blame(k, "%s %s is writable by anyone", what, path);
	k->w->anyone = true;
}

/* The POSIX ACL entries in an xattr value (little-endian: a 4-byte
 * version 2, then 8-byte entries: tag, perm (2 bytes each), id). */
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP_OBJ 0x04
#define ACL_TAG_GROUP 0x08
#define ACL_TAG_MASK 0x10
#define ACL_PERM_WRITE 0x02

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* Adds who may write an inode: owner, group, others, ACL.  entry_uid is
 * the owner of the entry looked up in it when it is a directory (the only
 * one its group and others may replace when it is sticky), or (uint32_t)-1
 * for the file itself.  acl/acl_len: its access ACL, or acl_len 0. */
static void walk_inode(struct walk *k, const struct stat *st,
		       const uint8_t *acl, ssize_t acl_len, uint32_t entry_uid,
		       const char *path)
{
	bool dir = S_ISDIR(st->st_mode);
	bool sticky = dir && (st->st_mode & S_ISVTX);
	const char *what = dir ? "directory" : "file";
	bool mask_w = true, group_obj_w = (st->st_mode & S_IWGRP) != 0;
	bool others = false;

	walk_uid(k, st->st_uid, what, path);
	/* An ACL too large to read: with write in its mask, any named user
	 * or group could write; counted as anyone, never as none. */
	if (acl_len < 0 && (st->st_mode & S_IWGRP)) {
		walk_blame(k, "%s %s has an ACL too large to read that may "
			   "grant write", what, path);
		k->w->anyone = true;
	}
	if (acl_len >= 4 && le32(acl) == 2) {
		/* With an ACL the mode's group bits are the mask. */
		for (ssize_t i = 4; i + 8 <= acl_len; i += 8) {
			unsigned tag = (unsigned)(acl[i] | acl[i + 1] << 8);
			unsigned perm = (unsigned)(acl[i + 2] | acl[i + 3] << 8);
			if (tag == ACL_TAG_MASK)
				mask_w = (perm & ACL_PERM_WRITE) != 0;
			if (tag == ACL_TAG_GROUP_OBJ)
				group_obj_w = (perm & ACL_PERM_WRITE) != 0;
		}
		for (ssize_t i = 4; i + 8 <= acl_len && mask_w; i += 8) {
			unsigned tag = (unsigned)(acl[i] | acl[i + 1] << 8);
			unsigned perm = (unsigned)(acl[i + 2] | acl[i + 3] << 8);
			uint32_t id = le32(acl + i + 4);
			if (!(perm & ACL_PERM_WRITE))
				continue;
			if (sticky && (tag == ACL_TAG_USER || tag == ACL_TAG_GROUP))
				others = true;
			else if (tag == ACL_TAG_USER)
				walk_uid(k, id, what, path);
			else if (tag == ACL_TAG_GROUP)
				walk_gid(k, id, what, path);
		}
		group_obj_w = group_obj_w && mask_w;
	}
	/* Anyone first: the first reason given is the widest. */
	if (st->st_mode & S_IWOTH) {
		if (sticky)
			others = true;
		else
			walk_anyone(k, what, path);
	}
	if (group_obj_w) {
		if (sticky)
			others = true;
		else
			walk_gid(k, st->st_gid, what, path);
	}
	/* Sticky: those others may replace their own entries only. */
	if (others && entry_uid != (uint32_t)-1)
		walk_uid(k, entry_uid, "entry in sticky directory", path);
}

static ssize_t walk_acl(int fd, const char *path, uint8_t *buf, size_t len)
{
	ssize_t n = fd >= 0 ? fgetxattr(fd, "system.posix_acl_access", buf, len)
			    : lgetxattr(path, "system.posix_acl_access", buf, len);

	/* No ACL (or none supported): the mode says it all.  Any other
	 * failure (ERANGE: more entries than buf holds) is -1: unknown. */
	if (n < 0)
		return errno == ENODATA || errno == ENOTSUP ? 0 : -1;
	return n;
}

/* Appends "/name" (name n bytes) to dir, a path of at most PATH_MAX. */
static int walk_join(char *dir, const char *name, size_t n)
{
	size_t len = strlen(dir);

	if (len + 1 + n >= PATH_MAX)
		return -ENAMETOOLONG;
	if (len > 1 || dir[0] != '/')
		dir[len++] = '/';
	memcpy(dir + len, name, n);
	dir[len + n] = '\0';
	return 0;
}

static int writers_walk(const char *path, int fd, struct walk *k, char *why,
			size_t whylen)
{
	/* cur: the directory reached, symlinks resolved; rest: what is left
	 * to walk, a link's target put in front of it. */
	char cur[PATH_MAX], next[PATH_MAX], rest[2 * PATH_MAX + 2];
	char target[PATH_MAX];
	uint8_t acl[512];
	struct stat dst, est, fst;
	unsigned hops = 0;
	size_t pos = 0;
	ssize_t n;
	int r;

	*k->w = (struct writers){ 0 };
	if (strlen(path) >= sizeof(rest) / 2) {
		snprintf(why, whylen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	if (path[0] == '/') {
		strcpy(cur, "/");
	} else if (!getcwd(cur, sizeof(cur))) {
		r = neg_errno();
		snprintf(why, whylen, "%s: cannot tell the working directory: "
			 "%s", path, strerror(-r));
		return r;
	}
	snprintf(rest, sizeof(rest), "%s", path);
	if (stat(cur, &dst) < 0)
		goto err_stat_cur;
	for (;;) {
		const char *c, *end;
		size_t len;

		while (rest[pos] == '/')
			pos++;
		if (!rest[pos]) {
			/* The path ends at a directory. */
			snprintf(why, whylen, "%s: is a directory", path);
			return -EISDIR;
		}
		c = rest + pos;
		end = strchr(c, '/');
		len = end ? (size_t)(end - c) : strlen(c);
		pos += len;
		while (rest[pos] == '/')
			pos++;
		if (len == 1 && c[0] == '.')
			continue;
		if (len == 2 && c[0] == '.' && c[1] == '.') {
			/* cur holds no symlink: its parent is its dirname. */
			char *slash = strrchr(cur, '/');
			if (slash == cur)
				cur[1] = '\0';
			else if (slash)
				*slash = '\0';
			if (stat(cur, &dst) < 0)
				goto err_stat_cur;
			continue;
		}
		snprintf(next, sizeof(next), "%s", cur);
		r = walk_join(next, c, len);
		if (r < 0) {
			snprintf(why, whylen, "%s: path too long", path);
			return r;
		}
		if (lstat(next, &est) < 0) {
			r = neg_errno();
			snprintf(why, whylen, "%s: cannot stat %s: %s", path,
				 next, strerror(-r));
			return r;
		}
		n = walk_acl(-1, cur, acl, sizeof(acl));
		walk_inode(k, &dst, acl, n, (uint32_t)est.st_uid, cur);
		if (S_ISLNK(est.st_mode)) {
			if (++hops > WRITERS_HOPS_MAX) {
				snprintf(why, whylen, "%s: more than %d symlinks",
					 path, WRITERS_HOPS_MAX);
				return -ELOOP;
			}
			/* Its owner matters only where the directory lets
			 * it replace the link: added above (sticky). */
			n = readlink(next, target, sizeof(target) - 1);
			if (n < 0) {
				r = neg_errno();
				snprintf(why, whylen, "%s: cannot read link %s: %s",
					 path, next, strerror(-r));
				return r;
			}
			target[n] = '\0';
			if (strlen(target) + 1 + strlen(rest + pos) >= sizeof(rest)) {
				snprintf(why, whylen, "%s: path too long", path);
				return -ENAMETOOLONG;
			}
			memmove(rest + strlen(target) + 1, rest + pos,
				strlen(rest + pos) + 1);
			memcpy(rest, target, strlen(target));
			rest[strlen(target)] = '/';
			pos = 0;
			if (target[0] == '/') {
				strcpy(cur, "/");
				if (stat(cur, &dst) < 0)
					goto err_stat_cur;
			}
			continue;
		}
		if (rest[pos]) {
			if (!S_ISDIR(est.st_mode)) {
				snprintf(why, whylen, "%s: %s is not a directory",
					 path, next);
				return -ENOTDIR;
			}
			memcpy(cur, next, sizeof(cur));
			dst = est;
			continue;
		}
		/* The last component. */
		if (fd >= 0) {
			if (fstat(fd, &fst) < 0) {
				r = neg_errno();
				snprintf(why, whylen, "%s: fstat: %s", path,
					 strerror(-r));
				return r;
			}
			if (fst.st_dev != est.st_dev || fst.st_ino != est.st_ino) {
				snprintf(why, whylen, "%s: changed while being "
					 "read", path);
				return -EAGAIN;
			}
			n = walk_acl(fd, NULL, acl, sizeof(acl));
			walk_inode(k, &fst, acl, n, (uint32_t)-1, next);
		} else {
			n = walk_acl(-1, next, acl, sizeof(acl));
			walk_inode(k, &est, acl, n, (uint32_t)-1, next);
		}
		return 0;
	}

err_stat_cur:
	r = neg_errno();
	snprintf(why, whylen, "%s: cannot stat %s: %s", path, cur, strerror(-r));
	return r;
}

int writers_of_path(const char *path, int fd, struct writers *w, char *why,
		    size_t whylen)
{
	char culprit[512] = "";
	struct walk k = { .w = w, .culprit = culprit,
			  .culprit_len = sizeof(culprit) };
	int r = writers_walk(path, fd, &k, why, whylen);

	if (r == 0)
		snprintf(why, whylen, "%s", culprit);
	return r;
}

void writers_self(struct writers *w)
{
	*w = (struct writers){ 0 };
	if (geteuid() != 0) {
		w->uids[0] = (uint32_t)geteuid();
		w->n_uids = 1;
	}
}

bool writers_covered(const struct writers *l, const struct writers *m,
		     char *who, size_t wholen)
{
	static uint32_t over_uid, over_gid;
	static bool over_known;

	if (!over_known) {
		over_uid = overflow_id("/proc/sys/kernel/overflowuid");
		over_gid = overflow_id("/proc/sys/kernel/overflowgid");
		over_known = true;
	}
	if (m->anyone)
		return true;
	/* The widest first: it is the one to fix. */
	if (l->anyone) {
		snprintf(who, wholen, "anyone");
		return false;
	}
	for (unsigned i = 0; i < l->n_uids; i++) {
		uint32_t u = l->uids[i];
		if (id_trusted(u))
			continue;
		if (u != over_uid && writers_has(m->uids, m->n_uids, u))
			continue;
		uid_describe(u, who, wholen);
		return false;
	}
	for (unsigned i = 0; i < l->n_gids; i++) {
		uint32_t g = l->gids[i];
		if (g != over_gid && writers_has(m->gids, m->n_gids, g))
			continue;
		gid_describe(g, who, wholen);
		return false;
	}
	if (l->more) {
		snprintf(who, wholen, "more than %d users or groups",
			 WRITERS_MAX);
		return false;
	}
	return true;
}

bool writers_private(const struct writers *w)
{
	struct writers self;
	char who[8];

	writers_self(&self);
	return writers_covered(w, &self, who, sizeof(who));
}

void writers_describe(const struct writers *w, char *buf, size_t len)
{
	char d[96];

	buf[0] = '\0';
	if (w->anyone)
		append_reason(buf, len, "anyone");
	for (unsigned i = 0; i < w->n_uids; i++) {
		if (id_trusted(w->uids[i]))
			continue;
		uid_describe(w->uids[i], d, sizeof(d));
		append_reason(buf, len, "%s", d);
	}
	for (unsigned i = 0; i < w->n_gids; i++) {
		gid_describe(w->gids[i], d, sizeof(d));
		append_reason(buf, len, "%s", d);
	}
	if (w->more)
		append_reason(buf, len, "more");
	/* append_reason() separates with "; ": a list reads better with
	 * commas. */
	for (char *p = buf; (p = strstr(p, "; ")); p++)
		*p = ',';
	if (!buf[0])
		snprintf(buf, len, "no one else");
}

void uid_describe(uint32_t uid, char *buf, size_t len)
{
	FILE *f = fopen("/etc/passwd", "re");
	struct passwd *pw;

	while (f && (pw = fgetpwent(f))) {
		if ((uint32_t)pw->pw_uid == uid) {
			snprintf(buf, len, "user %s (uid %lu)", pw->pw_name,
				 (unsigned long)uid);
			fclose(f);
			return;
		}
	}
	if (f)
		fclose(f);
	snprintf(buf, len, "uid %lu", (unsigned long)uid);
}

void gid_describe(uint32_t gid, char *buf, size_t len)
{
	FILE *f = fopen("/etc/group", "re");
	struct group *gr;

	while (f && (gr = fgetgrent(f))) {
		if ((uint32_t)gr->gr_gid == gid) {
			snprintf(buf, len, "group %s (gid %lu)", gr->gr_name,
				 (unsigned long)gid);
			fclose(f);
			return;
		}
	}
	if (f)
		fclose(f);
	snprintf(buf, len, "gid %lu", (unsigned long)gid);
}

int key_path_check(const char *path, char *why, size_t whylen)
{
	struct writers w;
	char culprit[512] = "", err[512];
	struct walk k = { .w = &w, .culprit = culprit,
			  .culprit_len = sizeof(culprit) };
	int r = writers_walk(path, -1, &k, err, sizeof(err));

	if (r < 0) {
		snprintf(why, whylen, "key file %s", err);
		return r;
	}
	if (writers_private(&w))
		return 0;
	snprintf(why, whylen, "key file %s: %s; a secret key must be owned by "
		 "root or this user and reached only through directories no one "
		 "else can write (as ssh requires)", path,
		 culprit[0] ? culprit : "others can replace it");
	return -EPERM;
}

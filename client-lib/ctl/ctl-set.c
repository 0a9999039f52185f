/*
 * dbswapctl set: change entries of an env file, atomically and durably,
 * keeping the rest of the file as it was; with --wait, follow the change
 * through the agent until every subscriber has acked it.
 *
 *   dbswapctl set FILE NAME=VALUE... [--pubkey KEY] [--key KEYFILE]
 *                 [--encrypt-values] [--force] [--wait[=SECONDS]]
 *
 * Root edits files in directories that others may write; it must write
 * what it means to, and give nobody the secrets it writes.  So the path is
 * walked one name at a time from /, each directory held open (O_PATH) and
 * checked before the next name is looked up in it, each symlink read and
 * followed by hand (set_resolve), and the file is read, replaced
 * (renameat) and synced through the fd of the directory checked last:
 * what others do to the path meanwhile cannot move the write elsewhere.
 * Refused unless --force, each with an error naming it and its owner:
 * - a directory on the way owned by anyone but root and the caller, or
 *   writable by its group or others without the sticky bit (they could
 *   swap a name for a symlink or a file of their own);
 * - a symlink owned by anyone but root and the caller (planted, in a
 *   sticky directory like /tmp);
 * - the file itself owned by anyone but root and the caller: the new
 *   version takes the old one's owner and mode, and would be theirs.
 * A symlink that leads out of the file's own directory is followed with a
 * note saying where the write goes.  With --force, what would have been
 * refused is written with a warning, and the new file keeps the old one's
 * owner and mode: the caller vouched for them.
 *
 * NAME=- reads the value from stdin (one line; without echo on a
 * terminal), so it stays out of argv and shell history.
 *
 * Encryption follows the file: a sealed file is opened with --key,
 * changed, and sealed again (to --pubkey, else to the key's own public
 * key); a value that was enc:v1: is encrypted again (to --pubkey or
 * --key's public key), and --encrypt-values encrypts every value set.
 *
 * How --wait knows what its write caused: it notes the identity (device,
 * inode, size, mtime) of the file it renamed into place, finds the env
 * file the agent read with that identity and the evaluation number of that
 * read, and follows the values that evaluation set: each server entry of a
 * target (its primary, DATABASE_URL, and secondary, DATABASE_URL_SECONDARY)
 * whose value_seq is that number, or the target itself for an agent
 * without failover.  A value for the server in use goes out as a new
 * generation and is followed until every subscriber acked it; one for the
 * other server is done once validated, since no app uses it yet.
 *
 * An agent restart during the wait ends the connection and starts a new
 * run of the agent, with its own instance id and its own numbering of
 * reads and generations: what was followed means nothing there.  So
 * --wait reconnects (until its deadline), and when the instance changed it
 * starts over with the new run: it finds that run's read of the identity
 * it wrote (a restarted agent reads every file; if the file changed again
 * meanwhile, the identity is not found and the wait times out, as it would
 * for a later write without a restart) and follows what that read set,
 * which at start is every target, until every subscriber of the new run
 * acked.  Acks given to the old run count for nothing: the apps ack the
 * new run's generations when they reconnect.
 *
 * Waiting for acks (ctl_wait_acks and friends) is shared with failover,
 * failback and reconnect --wait.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/env.h"
#include "common/envedit.h"
#include "common/util.h"
#include "ctl.h"

/* Status polling while waiting: small next to a ~20 ms rotation. */
#define SET_POLL_MS 5
/* Failed validations after which --wait calls a value rejected, for an
 * agent that does not report its own limit (attempts_max): a newer one is
 * followed until it gives up. */
#define SET_REJECT_ATTEMPTS 3
/* How long --wait looks for its write among the agent's files before it
 * concludes that the agent does not watch the file at all. */
#define SET_FIND_FILE_MS 2000
/* After an agent restart, how long the new run must have been up before
 * "every subscriber acked" counts: its apps are still reconnecting, and
 * none counted yet is no proof that none uses the old value.  libdbswap's
 * backoff reaches the agent within 2 s of its return; other clients are
 * expected to do as well (ipc/PROTOCOL.md). */
#define SET_RESTART_GRACE_MS 3000
/* Server entries per target: a primary and a secondary (PROTOCOL.md). */
#define SET_SERVERS_MAX 2
/* Symlinks followed on the way to the file, as the kernel's own limit
 * (ELOOP past 40). */
#define SET_LINKS_MAX 40

/* The command named in messages: set, or rotate (ctl_set_write,
 * ctl_set_follow). */
static const char *set_cmd = "set";

struct set_opts {
	const char *file;
	struct envedit_change *changes;
	char **owned; /* values read from stdin or encrypted here */
	size_t n;
	const char *pubkey;
	const char *key;
	bool encrypt_values;
	bool force; /* write where others could have a hand (set_resolve) */
	bool wait;
	int wait_s;
};

static void set_opts_fini(struct set_opts *o)
{
	for (size_t i = 0; i < o->n; i++)
		free_secret(o->owned[i]);
	free(o->owned);
	free(o->changes);
}

/* Reads one line from stdin for name, without echo on a terminal. */
static char *read_secret_line(const char *name)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO) &&
		   tcgetattr(STDIN_FILENO, &old) == 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (tty) {
		fprintf(stderr, "value for %s: ", name);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	n = getline(&line, &cap, stdin);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (n < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	return line;
}

static int parse_set_args(int argc, char **argv, struct set_opts *o)
{
	int r;

	o->wait_s = CTL_WAIT_DEFAULT_S;
	o->changes = calloc((size_t)argc + 1, sizeof(*o->changes));
	o->owned = calloc((size_t)argc + 1, sizeof(*o->owned));
	if (!o->changes || !o->owned)
		return -ENOMEM;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (streq(a, "--pubkey") && i + 1 < argc) {
			o->pubkey = argv[++i];
		} else if (strncmp(a, "--pubkey=", 9) == 0) {
			o->pubkey = a + 9;
		} else if (streq(a, "--key") && i + 1 < argc) {
			o->key = argv[++i];
		} else if (strncmp(a, "--key=", 6) == 0) {
			o->key = a + 6;
		} else if (streq(a, "--encrypt-values")) {
			o->encrypt_values = true;
		} else if (streq(a, "--force")) {
			o->force = true;
		} else if ((r = ctl_wait_arg("set", a, &o->wait,
					     &o->wait_s)) != 0) {
			if (r < 0)
				return r;
		} else if (a[0] == '-' && a[1] == '-') {
			fprintf(stderr, "dbswapctl %s: unknown option %s\n",
				set_cmd, a);
			return -EINVAL;
		} else if (!o->file) {
			o->file = a;
		} else {
			const char *eq = strchr(a, '=');
			char *name;
			if (!eq || eq == a) {
				fprintf(stderr, "dbswapctl %s: %s: expected "
						"NAME=VALUE\n", set_cmd, a);
				return -EINVAL;
			}
			name = strndup(a, (size_t)(eq - a));
			if (!name)
				return -ENOMEM;
			/* names live in argv; keep a copy just for the cut */
			o->changes[o->n].name = name;
			if (streq(eq + 1, "-")) {
				o->owned[o->n] = read_secret_line(name);
				if (!o->owned[o->n]) {
					fprintf(stderr, "dbswapctl %s: no value "
							"for %s on stdin\n",
								set_cmd,
						name);
					free(name);
					return -EINVAL;
				}
				o->changes[o->n].value = o->owned[o->n];
			} else {
				o->changes[o->n].value = eq + 1;
			}
			o->n++;
		}
	}
	if (!o->file || o->n == 0) {
		fprintf(stderr, "dbswapctl %s: usage: set FILE NAME=VALUE...\n",
			set_cmd);
		return -EINVAL;
	}
	return 0;
}

/* Where set reads and writes: a directory reached by set_resolve (an
 * O_PATH fd), the file's name in it, and its path for messages. */
struct set_place {
	int dfd;
	char name[NAME_MAX + 1];
	char path[PATH_MAX];
};

/* Root and the caller: nobody else may own what set writes through. */
static bool set_owner_trusted(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/* "user alice (uid 1001)", or "uid 1001" when no user has it, for
 * messages. */
static const char *set_owner_name(uid_t uid, char *buf, size_t size)
{
	const struct passwd *pw = getpwuid(uid);

	if (pw)
		snprintf(buf, size, "user %s (uid %u)", pw->pw_name,
			 (unsigned)uid);
	else
		snprintf(buf, size, "uid %u", (unsigned)uid);
	return buf;
}

/* A refusal, or with --force a warning.  Returns -EPERM when refused. */
static int set_distrust(const struct set_opts *o, const char *what,
			const char *risk)
{
	if (o->force) {
		fprintf(stderr, "dbswapctl %s: warning: %s; written anyway "
				"(--force)\n", set_cmd,
			what);
		return 0;
	}
	fprintf(stderr, "dbswapctl %s: %s, %s: refused (--force to write "
			"anyway)\n", set_cmd,
		what, risk);
	return -EPERM;
}

/* A directory on the way to the file: owned by root or the caller, and
 * writable by nobody else but in a sticky directory (where each entry is
 * checked by its own owner). */
static int set_check_dir(const struct set_opts *o, int dfd, const char *path)
{
	char what[PATH_MAX + 256], owner[128];
	struct stat st;
	int r;

	if (fstat(dfd, &st) < 0) {
		r = neg_errno();
		fprintf(stderr, "dbswapctl %s: %s: %s\n",
			set_cmd, path, strerror(-r));
		return r;
	}
	if (!set_owner_trusted(st.st_uid)) {
		snprintf(what, sizeof(what), "%s is owned by %s", path,
			 set_owner_name(st.st_uid, owner, sizeof(owner)));
		return set_distrust(o, what, "who could put another file or "
					     "a symlink in place of the one "
					     "named");
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
		snprintf(what, sizeof(what), "%s is writable by %s (mode %04o)",
			 path, st.st_mode & S_IWOTH ? "others" : "its group",
			 (unsigned)(st.st_mode & 07777));
		return set_distrust(o, what, "who could put another file or "
					     "a symlink in place of the one "
					     "named");
	}
	return 0;
}

/* Opens the root directory into *dfd (closing the old one) and checks
 * it. */
static int set_open_root(const struct set_opts *o, int *dfd)
{
	int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0) {
		r = neg_errno();
		fprintf(stderr, "dbswapctl %s: /: %s\n", set_cmd, strerror(-r));
		return r;
	}
	if (*dfd >= 0)
		close(*dfd);
	*dfd = fd;
	return set_check_dir(o, fd, "/");
}

/* Follows the symlink name in *dfd (at path, lst its lstat): rest, what
 * is left of the path after name, becomes TEXT/REST with the link's
 * text; an absolute text restarts from / (*dfd and dir_path with it). */
static int set_follow_link(const struct set_opts *o, int *dfd,
			   const char *name, const char *path,
			   const struct stat *lst, char *dir_path, char *rest,
			   size_t rest_size)
{
	char target[PATH_MAX], what[PATH_MAX + 256], owner[128];
	char *joined;
	ssize_t n;
	int r;

	if (!set_owner_trusted(lst->st_uid)) {
		snprintf(what, sizeof(what), "%s is a symlink owned by %s",
			 path, set_owner_name(lst->st_uid, owner,
					      sizeof(owner)));
		r = set_distrust(o, what, "who may have planted it to send "
					  "the write elsewhere");
		if (r < 0)
			return r;
	}
	n = readlinkat(*dfd, name, target, sizeof(target) - 1);
	if (n < 0) {
		r = neg_errno();
		fprintf(stderr, "dbswapctl %s: %s: %s\n",
			set_cmd, path, strerror(-r));
		return r;
	}
	target[n] = '\0';
	if (asprintf(&joined, "%s%s%s", target, *rest ? "/" : "", rest) < 0)
		return -ENOMEM;
	if (strlen(joined) >= rest_size) {
		free(joined);
		fprintf(stderr, "dbswapctl %s: %s: %s\n", set_cmd, path,
			strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	memcpy(rest, joined, strlen(joined) + 1);
	free(joined);
	if (target[0] == '/') {
		dir_path[0] = '\0';
		return set_open_root(o, dfd);
	}
	return 0;
}

/* Walks file from / (or from the working directory, as getcwd() names
 * it) into pl: every directory checked (set_check_dir) before a name is
 * looked up in it, every symlink checked and followed by hand.  Notes on
 * stderr when the file's own name is a symlink that leads to another
 * directory.  Returns 0, or a negative errno after an error message. */
static int set_resolve(const struct set_opts *o, struct set_place *pl)
{
	char rest[2 * PATH_MAX], dir_path[PATH_MAX], cwd[PATH_MAX];
	char comp[NAME_MAX + 1], path[PATH_MAX];
	struct stat st, file_dir;
	bool at_file = false, via_link = false;
	unsigned links = 0;
	int dfd = -1, fd, r;

	if (o->file[0] == '/') {
		r = snprintf(rest, sizeof(rest), "%s", o->file);
	} else {
		if (!getcwd(cwd, sizeof(cwd))) {
			r = neg_errno();
			fprintf(stderr, "dbswapctl %s: the working directory: "
					"%s\n", set_cmd,
				strerror(-r));
			return r;
		}
		r = snprintf(rest, sizeof(rest), "%s/%s", cwd, o->file);
	}
	if (r < 0 || (size_t)r >= sizeof(rest)) {
		fprintf(stderr, "dbswapctl %s: %s: %s\n", set_cmd, o->file,
			strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	dir_path[0] = '\0';
	r = set_open_root(o, &dfd);
	while (r == 0) {
		char *p = rest, *after;
		size_t len;

		while (*p == '/')
			p++;
		len = strcspn(p, "/");
		if (len == 0) {
			/* "/", or a name ending in "/": not a file */
			fprintf(stderr, "dbswapctl %s: %s: is a directory, "
					"not a regular file\n", set_cmd,
				o->file);
			r = -EISDIR;
			break;
		}
		if (len > NAME_MAX) {
			fprintf(stderr, "dbswapctl %s: %s: %s\n",
				set_cmd, o->file,
				strerror(ENAMETOOLONG));
			r = -ENAMETOOLONG;
			break;
		}
		memcpy(comp, p, len);
		comp[len] = '\0';
		after = p + len;
		while (*after == '/')
			after++;
		/* Shift what follows to the front: rest is the path left. */
		memmove(rest, after, strlen(after) + 1);
		after = rest;
		if (streq(comp, ".") && *after)
			continue;
		r = snprintf(path, sizeof(path), "%s/%s", dir_path, comp);
		if (r < 0 || (size_t)r >= sizeof(path)) {
			fprintf(stderr, "dbswapctl %s: %s: %s\n",
				set_cmd, o->file,
				strerror(ENAMETOOLONG));
			r = -ENAMETOOLONG;
			break;
		}
		r = 0;
		if (fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT && !*after) {
				st.st_mode = 0; /* a new file */
			} else {
				r = neg_errno();
				fprintf(stderr, "dbswapctl %s: %s: %s\n",
					set_cmd, path,
					strerror(-r));
				break;
			}
		}
		if (!*after && !at_file) {
			/* The directory the name given lives in. */
			at_file = true;
			if (fstat(dfd, &file_dir) < 0) {
				r = neg_errno();
				break;
			}
		}
		if (S_ISLNK(st.st_mode)) {
			if (++links > SET_LINKS_MAX) {
				fprintf(stderr, "dbswapctl %s: %s: %s\n",
					set_cmd,
					o->file, strerror(ELOOP));
				r = -ELOOP;
				break;
			}
			via_link |= at_file;
			r = set_follow_link(o, &dfd, comp, path, &st, dir_path,
					    rest, sizeof(rest));
			continue;
		}
		if (!*after && !S_ISDIR(st.st_mode)) {
			/* The file (or none yet): checked when read. */
			memcpy(pl->name, comp, len + 1);
			memcpy(pl->path, path, sizeof(path));
			pl->dfd = dfd;
			if (via_link && fstat(dfd, &st) == 0 &&
			    (st.st_dev != file_dir.st_dev ||
			     st.st_ino != file_dir.st_ino))
				fprintf(stderr, "dbswapctl %s: note: %s is a "
						"symlink out of its directory; "
						"writing %s\n", set_cmd,
					o->file, pl->path);
			return 0;
		}
		if (!S_ISDIR(st.st_mode)) {
			fprintf(stderr, "dbswapctl %s: %s: %s\n", set_cmd, path,
				strerror(ENOTDIR));
			r = -ENOTDIR;
			break;
		}
		if (!*after) {
			fprintf(stderr, "dbswapctl %s: %s: is a directory, "
					"not a regular file\n", set_cmd,
				o->file);
			r = -EISDIR;
			break;
		}
		/* O_NOFOLLOW: a name swapped for a symlink since the fstatat
		 * fails here rather than be followed unchecked. */
		fd = openat(dfd, comp,
			    O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			r = neg_errno();
			fprintf(stderr, "dbswapctl %s: %s: %s\n", set_cmd, path,
				strerror(-r));
			break;
		}
		close(dfd);
		dfd = fd;
		if (streq(comp, "..")) {
			char *slash = strrchr(dir_path, '/');
			if (slash)
				*slash = '\0';
		} else if (!streq(comp, ".")) {
			memcpy(dir_path, path, sizeof(path));
		}
		r = set_check_dir(o, dfd, dir_path[0] ? dir_path : "/");
	}
	if (dfd >= 0)
		close(dfd);
	return r;
}

/* Writes data as the new content of pl's file: a temp file in the same
 * directory with the original's mode and owner, fsync, rename over the
 * name (refused if the name no longer holds the file read: orig, or none
 * when orig is NULL), fsync of the directory.  Fills identity
 * (file_identity()) on success.  Returns 0, or a negative errno with a
 * message in err; the file is then unchanged. */
static int write_atomic(const struct set_place *pl, const void *data,
			size_t len, const struct stat *orig,
			char identity[FILE_IDENTITY_MAX],
			char *err, size_t errlen)
{
	const char *path = pl->path;
	char tmp[NAME_MAX + 1];
	struct stat st, now;
	int dfd, fd = -1, r;

	/* The directory set_resolve checked, opened for fsync (an O_PATH
	 * fd cannot be synced). */
	dfd = openat(pl->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		r = neg_errno();
		snprintf(err, errlen, "cannot open the directory of %s: %s",
			 path, strerror(-r));
		return r;
	}
	for (int attempt = 0; attempt < 16 && fd < 0; attempt++) {
		uint32_t rnd = 0;
		(void)!getrandom(&rnd, sizeof(rnd), 0);
		/* ".NAME.dbswap-XXXXXXXX" within NAME_MAX: a long name is cut */
		snprintf(tmp, sizeof(tmp), ".%.*s.dbswap-%08x",
			 NAME_MAX - 18, pl->name, rnd);
		fd = openat(dfd, tmp,
			    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			    0600);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0) {
		r = neg_errno();
		snprintf(err, errlen, "cannot create a temp file beside %s: %s",
			 path, strerror(-r));
		goto out;
	}
	if (orig && fchown(fd, orig->st_uid, orig->st_gid) < 0 &&
	    (orig->st_uid != geteuid() || orig->st_gid != getegid())) {
		r = neg_errno();
		snprintf(err, errlen, "cannot give the new %s its owner "
				      "%u:%u: %s",
			 path, (unsigned)orig->st_uid, (unsigned)orig->st_gid,
			 strerror(-r));
		goto err_tmp;
	}
	if (fchmod(fd, orig ? orig->st_mode & 07777 : 0600) < 0 ||
	    (r = fd_write_all(fd, data, len)) < 0 || fsync(fd) < 0 ||
	    fstat(fd, &st) < 0) {
		r = neg_errno();
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
		goto err_tmp;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = neg_errno();
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
		goto err_tmp;
	}
	fd = -1;
	/* Another writer's version since ours was read is not lost
	 * silently. */
	r = fstatat(dfd, pl->name, &now, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	if (orig ? r < 0 || now.st_dev != orig->st_dev ||
			   now.st_ino != orig->st_ino
		 : r != -ENOENT) {
		r = -EAGAIN;
		snprintf(err, errlen, "%s was replaced while dbswapctl edited "
				      "it",
			 path);
		goto err_tmp;
	}
	if (renameat(dfd, tmp, dfd, pl->name) < 0) {
		r = neg_errno();
		snprintf(err, errlen, "cannot rename into %s: %s", path,
			 strerror(-r));
		goto err_tmp;
	}
	/* The rename is durable once the directory is on disk. */
	if (fsync(dfd) < 0) {
		r = neg_errno();
		snprintf(err, errlen, "%s was replaced, but syncing its "
				      "directory failed: %s",
			 path, strerror(-r));
		goto out;
	}
	file_identity(&st, identity);
	r = 0;
	goto out;

err_tmp:
	if (fd >= 0)
		close(fd);
	fd = -1;
	unlinkat(dfd, tmp, 0);
out:
	if (fd >= 0)
		close(fd);
	close(dfd);
	return r;
}

/* Reads the current file (empty when it does not exist yet) from pl,
 * without following a symlink (set_resolve has followed those) and
 * without opening anything but a regular file (a FIFO would hang the
 * command, a device may act on open).  A file owned by anyone but root
 * and the caller is refused unless --force: the new version would be
 * theirs. */
static int read_current(const struct set_opts *o, const struct set_place *pl,
			uint8_t **buf, size_t *len, struct stat *st,
			bool *exists)
{
	char what[PATH_MAX + 256], owner[128];
	struct stat st2;
	int fd, r;

	*exists = false;
	if (fstatat(pl->dfd, pl->name, st, AT_SYMLINK_NOFOLLOW) < 0) {
		r = neg_errno();
		if (r != -ENOENT) {
			fprintf(stderr, "dbswapctl %s: %s: %s\n",
				set_cmd, pl->path,
				strerror(-r));
			return r;
		}
		*buf = (uint8_t *)strdup("");
		*len = 0;
		return *buf ? 0 : -ENOMEM;
	}
	if (!S_ISREG(st->st_mode)) {
		fprintf(stderr, "dbswapctl %s: %s: is %s, not a regular file\n",
			set_cmd,
			pl->path, file_type_name(st->st_mode));
		return S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
	}
	fd = openat(pl->dfd, pl->name,
		    O_RDONLY | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st2) < 0 || st2.st_dev != st->st_dev ||
	    st2.st_ino != st->st_ino) {
		r = fd < 0 ? neg_errno() : -EAGAIN;
		if (fd >= 0)
			close(fd);
		fprintf(stderr, "dbswapctl %s: %s: %s\n", set_cmd, pl->path,
			r == -EAGAIN || r == -ELOOP
				? "replaced while dbswapctl read it"
				: strerror(-r));
		return r;
	}
	*st = st2;
	*exists = true;
	if (!set_owner_trusted(st->st_uid)) {
		snprintf(what, sizeof(what), "%s is owned by %s", pl->path,
			 set_owner_name(st->st_uid, owner, sizeof(owner)));
		r = set_distrust(o, what, "and the new version would be "
					  "theirs, values and all");
		if (r < 0) {
			close(fd);
			return r;
		}
	}
	r = ctl_read_all(fd, ENV_FILE_MAX, buf, len);
	close(fd);
	if (r < 0)
		fprintf(stderr, "dbswapctl %s: %s: %s\n", set_cmd, pl->path,
			r == -EFBIG ? "over the env file size limit"
				    : strerror(-r));
	return r;
}

/* Encrypts each change that needs it: all with --encrypt-values, else
 * those whose current definition is an enc: value. */
static int encrypt_changes(struct set_opts *o, const char *text, size_t len,
			   const uint8_t *pk)
{
	struct env_file cur = { 0 };
	struct env_error err;

	/* The current text parsed without decryption: enc: stays as is. */
	if (env_parse(text, len, NULL, NULL, &cur, &err) < 0) {
		fprintf(stderr, "dbswapctl %s: %s:%u:%u: %s\n",
			set_cmd, o->file,
			err.line, err.column, err.message);
		return -EINVAL;
	}
	for (size_t i = 0; i < o->n; i++) {
		const char *old = env_file_get(&cur, o->changes[i].name);
		char *sealed;
		if (!o->encrypt_values && !(old && crypt_is_sealed_value(old)))
			continue;
		/* Sealed, it would pass envedit's check; the agent would
		 * refuse it after decrypting. */
		if (strchr(o->changes[i].value, '\r')) {
			fprintf(stderr, "dbswapctl %s: %s: value holds a "
					"carriage return\n",
						set_cmd, o->changes[i].name);
			env_file_fini(&cur);
			return -EINVAL;
		}
		if (!pk) {
			fprintf(stderr, "dbswapctl %s: %s is encrypted in %s; "
					"give --pubkey (or --key) to encrypt its "
					"new value\n", set_cmd,
				o->changes[i].name, o->file);
			env_file_fini(&cur);
			return -EINVAL;
		}
		if (crypt_seal_value(pk, o->changes[i].value, &sealed) < 0) {
			env_file_fini(&cur);
			return -ENOMEM;
		}
		free_secret(o->owned[i]);
		o->owned[i] = sealed;
		o->changes[i].value = sealed;
	}
	env_file_fini(&cur);
	return 0;
}

/* --wait, for set and the switch commands */

int ctl_wait_arg(const char *cmd, const char *arg, bool *wait, int *wait_s)
{
	char *end;
	long v;

	if (streq(arg, "--wait")) {
		*wait = true;
		return 1;
	}
	if (strncmp(arg, "--wait=", 7) != 0)
		return 0;
	errno = 0;
	v = strtol(arg + 7, &end, 10);
	/* A day is beyond any rotation; the bound keeps the ms product sane. */
	if (*end || end == arg + 7 || v <= 0 || v > 86400 || errno) {
		fprintf(stderr, "dbswapctl %s: --wait=%s: not a number of "
				"seconds\n", cmd, arg + 7);
		return -EINVAL;
	}
	*wait = true;
	*wait_s = (int)v;
	return 1;
}

/* Waiting for acks */

const msgpack_object *ctl_find_target(const msgpack_object *st,
				      const char *name)
{
	const msgpack_object *targets = ctl_array(st, "targets");
	char buf[IPC_NAME_MAX + 1];

	for (uint32_t i = 0; targets && i < targets->via.array.size; i++)
		if (ctl_str(&targets->via.array.ptr[i], "name", buf,
			    sizeof(buf)) &&
		    streq(buf, name))
			return &targets->via.array.ptr[i];
	return NULL;
}

void ctl_acks_init(struct ctl_acks *a, const char *target,
		   long long generation)
{
	*a = (struct ctl_acks){
		.generation = generation,
		.shown_acked = -1,
		.shown_subs = -1,
	};
	snprintf(a->target, sizeof(a->target), "%s", target);
}

bool ctl_acks_follow(struct ctl_acks *a, const msgpack_object *t)
{
	long long gen = ctl_int(t, "generation");
	long long subs = ctl_int(t, "subscribers");
	/* acked counts the current generation: an older one counts none */
	long long acked = gen >= a->generation ? ctl_int(t, "acked") : 0;

	if (acked != a->shown_acked || subs != a->shown_subs) {
		printf("%s: %lld of %lld subscriber(s) acked generation %lld\n",
		       a->target, acked, subs, gen);
		a->shown_acked = acked;
		a->shown_subs = subs;
	}
	fflush(stdout);
	return acked >= subs;
}

void ctl_acks_report(const struct ctl_acks *a, const msgpack_object *t)
{
	const msgpack_object *lag = ctl_array(t, "lagging");
	char name[IPC_NAME_MAX + 1];

	fprintf(stderr, " %s generation %lld acked by %lld of %lld; waiting "
			"for",
		a->target, a->generation, a->shown_acked, a->shown_subs);
	for (uint32_t j = 0; lag && j < lag->via.array.size; j++) {
		const msgpack_object *l = &lag->via.array.ptr[j];
		fprintf(stderr, "%s pid %lld (%s)", j ? "," : "",
			ctl_int(l, "pid"),
			ctl_str(l, "name", name, sizeof(name)) ? name : "?");
	}
}

int ctl_wait_acks(dbswap_client *c, const char *cmd, const char *target,
		  long long generation, int wait_s)
{
	int64_t deadline = now_ms() + wait_s * 1000LL;
	struct ctl_acks a;
	struct ipc_msg st;
	int ret;

	ctl_acks_init(&a, target, generation);
	for (;;) {
		ctl_call(c, IPC_STATUS, &st);
		const msgpack_object *t = ctl_find_target(&st.root.data, target);
		if (!t) {
			fprintf(stderr, "dbswapctl %s: the agent no longer has "
					"a target %s\n", cmd, target);
			ret = EXIT_REFUSED;
			break;
		}
		if (ctl_acks_follow(&a, t)) {
			printf("done: every subscriber uses generation %lld or "
			       "newer\n", generation);
			ret = EXIT_SUCCESS;
			break;
		}
		if (now_ms() >= deadline) {
			fprintf(stderr, "dbswapctl %s: timed out after %d s:",
				cmd, wait_s);
			ctl_acks_report(&a, t);
			fputc('\n', stderr);
			ret = EXIT_TIMEOUT;
			break;
		}
		ipc_msg_fini(&st);
		poll(NULL, 0, SET_POLL_MS);
	}
	ipc_msg_fini(&st);
	return ret;
}

/* Following a write with set --wait */

/* A server entry of a target whose newest value our write set. */
struct tracked_server {
	char var[IPC_NAME_MAX + 1]; /* its env variable, the entry's key */
	bool validated;
	bool standby; /* validated for the server not in use: nothing to ack */
	long long shown_attempts; /* as check_rejected last said; -1 */
};

struct tracked {
	/* .target is the target's name; .generation is the one published
	 * for our write, -1 before */
	struct ctl_acks acks;
	/* none for an agent without failover: the target's own fields are
	 * followed then */
	struct tracked_server servers[SET_SERVERS_MAX];
	size_t n_servers;
	bool done;
	long long shown_attempts; /* for the target's own fields */
};

/* Finds the env file the agent read with our identity; returns its read
 * sequence, or -1 while not yet.  Exits when the agent rejected it. */
static long long find_read(const msgpack_object *st, const char *identity,
			   const char *file)
{
	const msgpack_object *files = ctl_array(st, "files");
	char buf[128], err[1024];

	for (uint32_t i = 0; files && i < files->via.array.size; i++) {
		const msgpack_object *f = &files->via.array.ptr[i];
		/* Redacted for this caller (PROTOCOL.md, "Access control"):
		 * no identity will ever show; say so now, not at the timeout. */
		if (ctl_int(f, "redacted") == 1) {
			fprintf(stderr, "dbswapctl %s: wrote %s, but the agent "
					"shows which version of a file it read "
					"only to admins and to peers that may "
					"follow every target: --wait cannot "
					"follow it (run it as root or the "
					"agent's user, or add --admin rules)\n",
				set_cmd,
				file);
			exit(EXIT_REFUSED);
		}
		if (!ctl_str(f, "identity", buf, sizeof(buf)) ||
		    !streq(buf, identity))
			continue;
		if (ctl_str(f, "state", buf, sizeof(buf)) &&
		    !streq(buf, "ok")) {
			fprintf(stderr, "dbswapctl %s: the agent rejected %s: "
					"%s\n", set_cmd,
				file,
				ctl_str(f, "error", err, sizeof(err))
					? err
					: buf);
			exit(EXIT_REJECTED);
		}
		return ctl_int(f, "seq");
	}
	return -1;
}

/* Whether the agent watches file at all, by resolved path. */
static bool agent_watches(const msgpack_object *st, const char *file)
{
	const msgpack_object *files = ctl_array(st, "files");
	char *want = realpath(file, NULL), buf[4096];
	bool found = false;

	for (uint32_t i = 0; files && i < files->via.array.size && !found;
	     i++) {
		char *real;
		if (!ctl_str(&files->via.array.ptr[i], "path", buf, sizeof(buf)))
			continue;
		real = realpath(buf, NULL);
		found = want && real && streq(want, real);
		free(real);
	}
	free(want);
	return found;
}

static const msgpack_object *find_server(const msgpack_object *t,
					 const char *var)
{
	const msgpack_object *servers = ctl_array(t, "servers");
	char buf[IPC_NAME_MAX + 1];

	for (uint32_t i = 0; servers && i < servers->via.array.size; i++)
		if (ctl_str(&servers->via.array.ptr[i], "var", buf,
			    sizeof(buf)) &&
		    streq(buf, var))
			return &servers->via.array.ptr[i];
	return NULL;
}

/* Exits when the newest value of v (a target, or one of its server
 * entries: the fields are the same) is rejected: undefined, or given up
 * on by the agent.  While the agent still retries, says so when the count
 * of attempts changes (*shown, -1 at first): a password may change on the
 * server a moment after the file, and the agent tries a refused one
 * attempts_max times before it gives up.  An agent that does not say its
 * limit is followed by the old rule: rejected after
 * SET_REJECT_ATTEMPTS. */
static void check_rejected(const msgpack_object *v, const char *var,
			   long long *shown)
{
	char state[32], err[1024];
	long long attempts = ctl_int(v, "attempts");
	long long max = ctl_int(v, "attempts_max");
	bool auth;

	if (!ctl_str(v, "state", state, sizeof(state)))
		state[0] = '\0';
	if (streq(state, "unset")) {
		fprintf(stderr, "dbswapctl %s: the agent rejected the change: "
				"%s is no longer defined\n", set_cmd, var);
		exit(EXIT_REJECTED);
	}
	if (!streq(state, "failed"))
		return;
	if (!ctl_str(v, "error", err, sizeof(err)))
		snprintf(err, sizeof(err), "%s", state);
	if (ctl_int(v, "gave_up") == 1 ||
	    (max < 0 && attempts >= SET_REJECT_ATTEMPTS)) {
		fprintf(stderr, "dbswapctl %s: the agent rejected the new value "
				"of %s%s: %s\n", set_cmd,
			var,
			ctl_int(v, "gave_up") == 1 ? " and gave up" : "", err);
		exit(EXIT_REJECTED);
	}
	if (attempts == *shown)
		return;
	*shown = attempts;
	/* The agent's limit holds for refused credentials; anything else
	 * (a server away) it retries until the value changes. */
	auth = strstr(err, "28P01") || strstr(err, "28000") ||
	       strstr(err, "password authentication failed");
	if (auth && max > 0)
		printf("%s: waiting for the server to accept the new password "
		       "(attempt %lld of %lld)\n", var, attempts + 1, max);
	else
		printf("%s: the new value failed validation %lld time(s), the "
		       "agent retries: %s\n", var, attempts, err);
	fflush(stdout);
}

/* Whether the server entry s is not the one the target's value is
 * published for.  With no server in use (or an unknown answer) a
 * validated value may still go out, so it is not called a standby. */
static bool server_is_standby(const msgpack_object *t, const msgpack_object *s,
			      char *current, size_t size)
{
	const msgpack_object *fo = ipc_map_get(t, "failover");
	char role[32];

	if (!ctl_str(fo, "current", current, size) ||
	    !ctl_str(s, "role", role, sizeof(role)))
		return false;
	return (streq(current, "primary") || streq(current, "secondary")) &&
	       !streq(role, current);
}

/* Prints the publication of our write once, then follows its acks. */
static bool follow_published(struct tracked *tr, const msgpack_object *t,
			     const char *var)
{
	if (tr->acks.generation < 0) {
		tr->acks.generation = ctl_int(t, "generation");
		printf("%s: validated, generation %lld published\n", var,
		       tr->acks.generation);
	}
	return ctl_acks_follow(&tr->acks, t);
}

/* One look at a tracked target.  Returns true when it is done; exits when
 * the agent rejected a new value of it. */
static bool follow_target(struct tracked *tr, const msgpack_object *t,
			  long long seq)
{
	const char *in_use = NULL;
	bool pending = false;

	/* published: only the acks are left, whatever the files do now */
	if (tr->acks.generation >= 0)
		return ctl_acks_follow(&tr->acks, t);
	if (tr->n_servers == 0) {
		/* an agent without failover: the target's own fields */
		if (ctl_int(t, "published_seq") >= seq)
			return follow_published(tr, t, tr->acks.target);
		check_rejected(t, tr->acks.target, &tr->shown_attempts);
		return false;
	}
	for (size_t i = 0; i < tr->n_servers; i++) {
		struct tracked_server *ts = &tr->servers[i];
		const msgpack_object *s = find_server(t, ts->var);
		char current[32];

		if (ts->standby)
			continue;
		if (!s) {
			/* the entry went away: its variable is undefined */
			fprintf(stderr, "dbswapctl %s: the agent rejected the "
					"change: %s is no longer defined\n",
				set_cmd,
				ts->var);
			exit(EXIT_REJECTED);
		}
		if (!ts->validated && ctl_int(s, "accepted_seq") < seq) {
			check_rejected(s, ts->var, &ts->shown_attempts);
			pending = true;
			continue;
		}
		ts->validated = true;
		/* Looked at until published: a switch meanwhile can make the
		 * server in use a standby, and the value then never goes
		 * out. */
		if (server_is_standby(t, s, current, sizeof(current))) {
			ts->standby = true;
			printf("%s: validated; standby value (the target is on "
			       "the %s), nothing to ack\n",
			       ts->var, current);
			fflush(stdout);
			continue;
		}
		in_use = ts->var;
	}
	if (pending)
		return false;
	if (!in_use)
		return true;
	if (ctl_int(t, "published_seq") < seq)
		return false;
	return follow_published(tr, t, in_use);
}

/* The targets the read seq set a value of, into tracked; returns how
 * many. */
static size_t track_changes(const msgpack_object *root, long long seq,
			    struct tracked *tracked, size_t max)
{
	const msgpack_object *ts = ctl_array(root, "targets");
	size_t n = 0;
	char name[IPC_NAME_MAX + 1];

	for (uint32_t i = 0; ts && i < ts->via.array.size && n < max; i++) {
		const msgpack_object *t = &ts->via.array.ptr[i];
		const msgpack_object *servers = ctl_array(t, "servers");
		struct tracked *tr = &tracked[n];

		if (!ctl_str(t, "name", name, sizeof(name)))
			continue;
		*tr = (struct tracked){ .shown_attempts = -1 };
		ctl_acks_init(&tr->acks, name, -1);
		if (!servers) {
			/* an older agent: the target's value alone */
			if (ctl_int(t, "value_seq") == seq)
				n++;
			continue;
		}
		for (uint32_t j = 0; j < servers->via.array.size &&
				     tr->n_servers < SET_SERVERS_MAX;
		     j++) {
			const msgpack_object *s = &servers->via.array.ptr[j];
			struct tracked_server *sv = &tr->servers[tr->n_servers];
			if (ctl_int(s, "value_seq") != seq ||
			    !ctl_str(s, "var", sv->var, sizeof(sv->var)))
				continue;
			sv->shown_attempts = -1;
			tr->n_servers++;
		}
		if (tr->n_servers > 0)
			n++;
	}
	return n;
}

/* The timeout message's part about one target that is not done. */
static void report_target(const struct tracked *tr, const msgpack_object *t)
{
	bool pending = false;

	if (tr->n_servers == 0 && tr->acks.generation < 0) {
		fprintf(stderr, " %s not validated yet", tr->acks.target);
		return;
	}
	for (size_t i = 0; i < tr->n_servers; i++) {
		if (tr->servers[i].validated)
			continue;
		fprintf(stderr, " %s not validated yet", tr->servers[i].var);
		pending = true;
	}
	if (pending)
		return;
	if (tr->acks.generation < 0)
		fprintf(stderr, " %s validated, not published yet",
			tr->acks.target);
	else
		ctl_acks_report(&tr->acks, t);
}

/* The index in tracked of the target named target, or -1. */
static long find_tracked(const struct tracked *tracked, size_t n,
			 const char *target)
{
	for (size_t i = 0; i < n; i++)
		if (streq(tracked[i].acks.target, target))
			return (long)i;
	return -1;
}

/* The write did not change the target expected to change. */
static void say_unchanged(const char *file, const char *target)
{
	fprintf(stderr, "dbswapctl %s: the agent read %s, but %s did not "
			"change: its value comes from another file (a later "
			"--env wins) or is the same; no app uses the new "
			"value\n",
		set_cmd, file, target);
}

/* The expected target's state once every tracked one is done: whether
 * the follow may call it done.  Says why not when it cannot be (and
 * *fail then holds the exit code); stays quiet while an ack may still
 * come. */
static bool expect_met(const struct ctl_follow_expect *ex,
		       const struct tracked *tr, const char *file, int *fail)
{
	*fail = EXIT_SUCCESS;
	if (!ex || !ex->target)
		return true;
	if (tr->acks.generation < 0) {
		/* validated only as a standby: the value in use is not
		 * the one written */
		fprintf(stderr, "dbswapctl %s: %s: the new value in %s is "
				"validated only for the server not in use; "
				"the value the apps use comes from elsewhere "
				"and did not change\n",
			set_cmd, ex->target, file);
		*fail = EXIT_REFUSED;
		return false;
	}
	return !ex->need_ack || tr->acks.shown_acked >= 1;
}

static int wait_rotation(const char *socket, const struct set_opts *o,
			 const char *identity,
			 const struct ctl_follow_expect *ex)
{
	static const char *const name = "dbswapctl set --wait";
	dbswap_client *c = ctl_connect(socket, name);
	int64_t start = now_ms(), deadline = start + o->wait_s * 1000LL;
	struct tracked tracked[IPC_SUBSCRIBE_MAX];
	size_t n_tracked = 0;
	long long seq = -1;
	long expected = -1; /* ex->target's index in tracked */
	bool said_no_subs = false;
	struct ipc_msg st;
	/* The run of the agent followed; "" before the first status or for
	 * an agent older than instances. */
	char instance[64] = "", now_inst[64];

	for (;;) {
		bool all_done = true;

		if (ctl_try_call(c, IPC_STATUS, &st) < 0) {
			ipc_msg_fini(&st);
			dbswap_client_free(c);
			printf("lost the agent; reconnecting\n");
			fflush(stdout);
			c = ctl_connect_until(socket, name, deadline);
			if (!c) {
				fprintf(stderr, "dbswapctl %s: the agent at %s "
						"did not come back within %d s\n",
					set_cmd,
					socket ? socket : "(default socket)",
					o->wait_s);
				return EXIT_UNREACHABLE;
			}
			continue;
		}
		const msgpack_object *root = &st.root.data;
		if (ctl_str(ipc_map_get(root, "agent"), "instance", now_inst,
			    sizeof(now_inst))) {
			if (instance[0] && !streq(now_inst, instance)) {
				printf("the agent restarted (instance %s, was "
				       "%s); following the new run from its "
				       "read of %s\n",
				       now_inst, instance, o->file);
				fflush(stdout);
				seq = -1;
				n_tracked = 0;
				expected = -1;
				start = now_ms();
			}
			snprintf(instance, sizeof(instance), "%s", now_inst);
		}
		/* A run that has just started (restarted during the wait, or
		 * just before it) may not have its apps back yet: what it
		 * counts settles nothing before the grace. */
		bool grace = ctl_int(ipc_map_get(root, "agent"), "uptime_ms") <
			     SET_RESTART_GRACE_MS;
		if (seq < 0) {
			seq = find_read(root, identity, o->file);
			if (seq < 0 && now_ms() - start > SET_FIND_FILE_MS &&
			    !agent_watches(root, o->file)) {
				fprintf(stderr, "dbswapctl %s: the agent at %s "
						"does not watch %s\n", set_cmd,
					client_socket_path(c), o->file);
				exit(EXIT_REFUSED);
			}
			if (seq >= 0) {
				n_tracked = track_changes(root, seq, tracked,
							  ARRAY_SIZE(tracked));
				printf("the agent read %s: %zu target(s) "
				       "changed\n",
				       o->file, n_tracked);
				fflush(stdout);
				if (ex && ex->target) {
					expected = find_tracked(
						tracked, n_tracked, ex->target);
					if (expected < 0) {
						say_unchanged(o->file,
							      ex->target);
						ipc_msg_fini(&st);
						dbswap_client_free(c);
						return EXIT_REFUSED;
					}
				}
			}
		}
		if (seq < 0)
			all_done = false;
		for (size_t i = 0; i < n_tracked; i++) {
			const msgpack_object *t =
				ctl_find_target(root, tracked[i].acks.target);
			/* waiting for a first ack: the count is followed on */
			bool again = (long)i == expected && ex->need_ack &&
				     tracked[i].acks.generation >= 0 &&
				     tracked[i].acks.shown_acked < 1;
			if ((!tracked[i].done || again) && t)
				tracked[i].done =
					follow_target(&tracked[i], t, seq) &&
					!grace;
			all_done &= tracked[i].done;
		}
		if (all_done && expected >= 0) {
			int fail;
			all_done = expect_met(ex, &tracked[expected], o->file,
					      &fail);
			if (fail != EXIT_SUCCESS) {
				ipc_msg_fini(&st);
				dbswap_client_free(c);
				return fail;
			}
		}
		/* published, and not one ack yet: proof still missing */
		bool no_ack = expected >= 0 && ex->need_ack &&
			      tracked[expected].acks.generation >= 0 &&
			      tracked[expected].acks.shown_acked < 1;
		if (no_ack && !said_no_subs) {
			printf("%s: no subscriber has acked yet; waiting for "
			       "one (proof that an app moved)\n",
			       ex->target);
			fflush(stdout);
			said_no_subs = true;
		}
		if (all_done) {
			bool published = false;
			for (size_t i = 0; i < n_tracked; i++)
				published |= tracked[i].acks.generation >= 0;
			ipc_msg_fini(&st);
			dbswap_client_free(c);
			if (n_tracked == 0)
				printf("no target changed: nothing to wait "
				       "for\n");
			else if (published)
				printf("done: every subscriber uses the new "
				       "value; the old credentials can be "
				       "revoked\n");
			else
				printf("done: the new value is validated and "
				       "ready for a switch of server; no "
				       "subscriber uses it now\n");
			return EXIT_SUCCESS;
		}
		if (now_ms() >= deadline) {
			fprintf(stderr, "dbswapctl %s: timed out after %d s:",
				set_cmd,
				o->wait_s);
			if (seq < 0)
				fprintf(stderr, " the agent has not read %s\n",
					o->file);
			if (no_ack)
				fprintf(stderr, " no subscriber of %s acked: "
						"nothing proves that an app "
						"moved to the new value",
					ex->target);
			for (size_t i = 0; i < n_tracked; i++) {
				const msgpack_object *t = ctl_find_target(
					root, tracked[i].acks.target);
				if (tracked[i].done || !t)
					continue;
				report_target(&tracked[i], t);
			}
			fputc('\n', stderr);
			ipc_msg_fini(&st);
			dbswap_client_free(c);
			return EXIT_TIMEOUT;
		}
		ipc_msg_fini(&st);
		poll(NULL, 0, SET_POLL_MS);
	}
}

/* Writes o's changes into o->file (resolved, read, opened when sealed,
 * encrypted as the file wants, atomically replaced); with prepare, the
 * changes are what prepare makes of the file's current text (o->changes
 * must be empty then).  Fills identity.  Returns EXIT_SUCCESS or an exit
 * code after saying why. */
static int set_write(struct set_opts *o, ctl_set_prepare_fn *prepare,
		     void *data, char identity[FILE_IDENTITY_MAX])
{
	struct crypt_key *key = NULL;
	uint8_t pk_buf[32], *pk = NULL, *cur = NULL, *out = NULL;
	uint8_t *plain = NULL;
	size_t cur_len = 0, plain_len = 0, out_len = 0;
	struct set_place pl = { .dfd = -1 };
	char *edited = NULL;
	char err[PATH_MAX + 1024];
	size_t edited_len = 0;
	struct env_error perr;
	struct stat st;
	bool exists, sealed;
	int ret = EXIT_REFUSED;

	if (crypt_init() < 0)
		goto out;
	if (o->pubkey) {
		if (ctl_pubkey_arg(o->pubkey, pk_buf) < 0) {
			ret = EXIT_USAGE;
			goto out;
		}
		pk = pk_buf;
	}
	if (o->key) {
		if (ctl_key_arg(o->key, &key) < 0)
			goto out;
		if (!pk) {
			memcpy(pk_buf, crypt_key_public(key), 32);
			pk = pk_buf;
		}
	}
	if (set_resolve(o, &pl) < 0 ||
	    read_current(o, &pl, &cur, &cur_len, &st, &exists) < 0)
		goto out;

	sealed = crypt_is_sealed_file(cur, cur_len);
	if (sealed) {
		if (!key) {
			fprintf(stderr, "dbswapctl %s: %s is encrypted as a "
					"whole; changing it needs the secret key "
					"(--key), or keep the file in plaintext "
					"with encrypted values (--encrypt-values), "
					"which needs only the public key\n",
						set_cmd,
				o->file);
			goto out;
		}
		if (crypt_open_file(&key, 1, cur, cur_len, &plain, &plain_len,
				    err, sizeof(err)) < 0) {
			fprintf(stderr, "dbswapctl %s: %s: %s\n",
				set_cmd, o->file, err);
			goto out;
		}
	}
	const char *text = sealed ? (const char *)plain : (const char *)cur;
	size_t text_len = sealed ? plain_len : cur_len;

	if (prepare) {
		const struct envedit_change *changes = NULL;
		size_t n = 0;
		int r = prepare(text, text_len, key, data, &changes, &n);
		if (r != EXIT_SUCCESS) {
			ret = r;
			goto out;
		}
		o->changes = calloc(n + 1, sizeof(*o->changes));
		o->owned = calloc(n + 1, sizeof(*o->owned));
		if (!o->changes || !o->owned)
			goto out;
		/* names copied: set frees them as it frees its own */
		for (size_t i = 0; i < n; i++, o->n++) {
			o->changes[i].name = strdup(changes[i].name);
			o->changes[i].value = changes[i].value;
			if (!o->changes[i].name)
				goto out;
		}
	}
	if (encrypt_changes(o, text, text_len, pk) < 0)
		goto out;
	if (envedit_apply(text, text_len, o->changes, o->n, &edited,
			  &edited_len, &perr) < 0) {
		fprintf(stderr, "dbswapctl %s: %s:%u:%u: %s\n",
			set_cmd, o->file,
			perr.line, perr.column, perr.message);
		goto out;
	}
	if (sealed) {
		if (crypt_seal_file(pk, (const uint8_t *)edited, edited_len,
				    &out, &out_len) < 0)
			goto out;
	}
	if (write_atomic(&pl, sealed ? (const char *)out : edited,
			 sealed ? out_len : edited_len, exists ? &st : NULL,
			 identity, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbswapctl %s: %s; %s is unchanged\n",
			set_cmd, err,
			o->file);
		goto out;
	}
	printf("wrote %s:", o->file);
	for (size_t i = 0; i < o->n; i++)
		printf(" %s", o->changes[i].name);
	printf("%s\n", sealed ? " (sealed)" : "");
	fflush(stdout);
	ret = EXIT_SUCCESS;
out:
	crypt_key_free(key);
	crypt_free_plain(plain, plain_len);
	if (cur)
		explicit_bzero(cur, cur_len);
	free(cur);
	if (edited)
		explicit_bzero(edited, edited_len);
	free(edited);
	free(out);
	if (pl.dfd >= 0)
		close(pl.dfd);
	return ret;
}

int ctl_set_write(const struct ctl_set_call *call,
		  char identity[FILE_IDENTITY_MAX])
{
	struct set_opts o = {
		.file = call->file,
		.pubkey = call->pubkey,
		.key = call->key,
		.encrypt_values = call->encrypt_values,
		.force = call->force,
	};
	int ret;

	if (call->cmd)
		set_cmd = call->cmd;
	ret = set_write(&o, call->prepare, call->data, identity);

	for (size_t i = 0; i < o.n; i++)
		free((char *)o.changes[i].name);
	set_opts_fini(&o);
	return ret;
}

/* Whether status hides the files' details from this caller (PROTOCOL.md,
 * "Access control"): then nothing can be told of them. */
static bool files_redacted(const msgpack_object *st)
{
	const msgpack_object *files = ctl_array(st, "files");

	for (uint32_t i = 0; files && i < files->via.array.size; i++)
		if (ctl_int(&files->via.array.ptr[i], "redacted") == 1)
			return true;
	return false;
}

int ctl_set_check(const char *socket, const char *cmd, const char *file,
		  const char *target)
{
	dbswap_client *c = ctl_connect(socket, "dbswapctl");
	const msgpack_object *root;
	struct ipc_msg st;
	int ret = EXIT_SUCCESS;

	ctl_call(c, IPC_STATUS, &st);
	root = &st.root.data;
	if (target && !ctl_find_target(root, target)) {
		fprintf(stderr, "dbswapctl %s: the agent at %s has no target "
				"%s\n", cmd, client_socket_path(c), target);
		ret = EXIT_REFUSED;
	} else if (files_redacted(root)) {
		/* --wait would find no version of the file after the change:
		 * refuse before anything changes */
		fprintf(stderr, "dbswapctl %s: the agent at %s shows which "
				"version of a file it read only to admins and "
				"to peers that may follow every target: --wait "
				"cannot follow the change (run it as root or "
				"the agent's user, or add --admin rules); "
				"nothing changed\n",
			cmd, client_socket_path(c));
		ret = EXIT_REFUSED;
	} else if (!agent_watches(root, file)) {
		fprintf(stderr, "dbswapctl %s: the agent at %s does not watch "
				"%s\n", cmd, client_socket_path(c), file);
		ret = EXIT_REFUSED;
	}
	ipc_msg_fini(&st);
	dbswap_client_free(c);
	return ret;
}

int ctl_set_follow(const char *socket, const char *cmd, const char *file,
		   const char *identity, int wait_s,
		   const struct ctl_follow_expect *expect)
{
	struct set_opts o = { .file = file, .wait = true, .wait_s = wait_s };

	set_cmd = cmd;
	return wait_rotation(socket, &o, identity, expect);
}

int cmd_set(const char *socket, int argc, char **argv)
{
	struct set_opts o = { 0 };
	char identity[FILE_IDENTITY_MAX];
	int ret;

	if (parse_set_args(argc, argv, &o) < 0) {
		ret = EXIT_USAGE;
		goto out;
	}
	ret = set_write(&o, NULL, NULL, identity);
	if (ret == EXIT_SUCCESS && o.wait)
		ret = wait_rotation(socket, &o, identity, NULL);
out:
	for (size_t i = 0; i < o.n; i++)
		free((char *)o.changes[i].name);
	set_opts_fini(&o);
	return ret;
}

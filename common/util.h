/*
 * Small helpers shared by the agent, libdbswap and the tests.
 *
 * Error rule for all internal code (common/, ipc/, agent/, client-lib/c/,
 * client-lib/ctl/): a function that can fail returns a negative errno value
 * (-EINVAL, -ENOMEM, ...) and 0 or a positive count on success.  errno
 * itself is never the channel.  Cleanup uses goto labels named after what
 * they undo.
 */
#ifndef DBSWAP_UTIL_H
#define DBSWAP_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define UNUSED __attribute__((unused))
#define PRINTF(f, a) __attribute__((format(printf, f, a)))

static inline bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* Returns -errno of the last failed libc call, never 0. */
static inline int neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* Monotonic clock in milliseconds, for deadlines and timers. */
static inline int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic clock in microseconds, for measurements. */
static inline int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wall clock in seconds since the epoch, for status output. */
static inline int64_t wall_s(void)
{
	return (int64_t)time(NULL);
}

/* malloc that zeroes; aborts nothing, returns NULL on failure. */
void *zalloc(size_t size);

/* Moves a buffer that may hold secrets to a new block of new_cap bytes:
 * copies the first used bytes, then wipes and frees the old block of
 * old_cap bytes (realloc could leave a copy of the secret behind).  old may
 * be NULL.  Returns the new block, or NULL with the old one untouched. */
void *secret_grow(void *old, size_t used, size_t old_cap, size_t new_cap);

struct stat;

/* Room for a file identity, NUL included. */
#define FILE_IDENTITY_MAX 96

/* Writes what st describes as "device:inode:size:mtime_ns", the identity of
 * a file version in the agent's status (PROTOCOL.md).  The agent and
 * `dbswapctl set --wait` both use this, so the two strings compare. */
void file_identity(const struct stat *st, char out[FILE_IDENTITY_MAX]);

/* Opens path (following symlinks) for reading only if it is a regular
 * file, without ever opening anything else: the path is first opened with
 * O_PATH, which runs no driver's open and never waits on a FIFO, checked
 * with fstat, then reopened through /proc/self/fd (the same inode).  The
 * fd is O_NONBLOCK, O_NOCTTY, O_CLOEXEC.  Returns the fd with *st filled,
 * or a negative errno: -EISDIR for a directory, -EINVAL for any other
 * file type (*st then says which: file_type_name()), -EAGAIN if the path
 * changed while being opened, else the errno of open(). */
int file_open_regular(const char *path, struct stat *st);

/* "a directory", "a FIFO (named pipe)", "a socket", ... for messages. */
const char *file_type_name(unsigned mode);

/* Writes all len bytes to fd, retrying on EINTR and short writes.  Returns
 * 0 or a negative errno. */
int fd_write_all(int fd, const void *buf, size_t len);

/* strdup that keeps NULL as NULL. */
char *xstrdup(const char *s);

/* Overwrites a string's bytes before freeing it: for anything that may hold
 * a secret (conninfo, env file text). */
void free_secret(char *s);

/* A secret several owners hold without a copy each (a target's value in
 * force, the value its subscribers were sent, its monitor's): one
 * allocation, wiped and freed when the last reference goes.  The string
 * is the handle; it must never reach free() or free_secret().
 * secret_dup() returns NULL when out of memory, secret_ref() its argument
 * (NULL stays NULL), and secret_unref(NULL) does nothing. */
char *secret_dup(const char *s);
char *secret_ref(char *s);
void secret_unref(char *s);

/* Reads a decimal number with no sign, blank or other character, within
 * [min, max] (max far below UINT64_MAX / 10).  Returns 0 or -EINVAL. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Appends a "; "-separated reason to the string in buf (size bytes).  A
 * long list is cut, not lost: the first reasons are the ones that count. */
void append_reason(char *buf, size_t size, const char *fmt, ...) PRINTF(3, 4);

/* Replaces the string *dst (freed) with a formatted one, or with NULL
 * for fmt NULL: for error fields kept for status.  On ENOMEM *dst is NULL:
 * an error text is not worth failing for. */
void set_strf(char **dst, const char *fmt, ...) PRINTF(2, 3);

/* Exponential backoff with full jitter: a delay in [base/2, base] where base
 * is min(first << attempt, max).  attempt counts from 0. */
int64_t backoff_ms(unsigned attempt, int64_t first, int64_t max);

/*
 * Who can change what is read at a path: root always (not recorded), the
 * owner of the file (it can chmod it), its group when the group may write
 * and everyone when others may; and, since replacing a directory entry
 * changes what the path names, the same for every directory the path goes
 * through, symlinks followed (at most WRITERS_HOPS_MAX), plus a symlink's
 * owner.  A directory with the sticky bit lets its group and others
 * replace only their own entries: it adds the entry's owner, not them.
 * POSIX ACL entries that grant write (through the mask) count like the
 * group.  Root, CAP_DAC_OVERRIDE and bind mounts are not told apart.
 */
#define WRITERS_MAX 8
#define WRITERS_HOPS_MAX 40

struct writers {
	uint32_t uids[WRITERS_MAX]; /* besides root */
	unsigned n_uids;
	uint32_t gids[WRITERS_MAX]; /* groups whose members may write */
	unsigned n_gids;
	bool anyone;
	bool more; /* more uids or gids than WRITERS_MAX: not all recorded */
};

/* Fills *w for path.  fd, when >= 0, is the file opened at path: the file
 * itself is judged by fstat(fd) and its ACL by fgetxattr(fd), and the walk
 * must end at the same inode (else -EAGAIN: the path changed meanwhile).
 * Reads only inode metadata (lstat, readlink, getxattr): never opens
 * anything.  Returns 0 with why naming the first place that lets in
 * someone besides root and this process's user ("directory D is owned by
 * user alice (uid 1001)"; empty when none does), or a negative errno with
 * why set ("cannot stat DIR: ..."). */
int writers_of_path(const char *path, int fd, struct writers *w, char *why,
		    size_t whylen);

/* The writers of what only root and this process's user can change: the
 * process environment, a file the agent itself writes. */
void writers_self(struct writers *w);

/* Whether every writer of l could also write m: root and this process's
 * effective user always could (they can read all the agent reads); a uid
 * only if m records it, a group only if m records it, anyone only if m
 * grants anyone; an id the kernel shows as the overflow id (a user or
 * group outside this user namespace, nobody) only if m grants anyone.
 * When not, who names the first one that could not ("user alice (uid
 * 1001)", "group devs (gid 1002)", "anyone"). */
bool writers_covered(const struct writers *l, const struct writers *m,
		     char *who, size_t wholen);

/* Whether w is root and this process's user alone. */
bool writers_private(const struct writers *w);

/* Describes the writers besides root and this process's user, for
 * messages: "user alice (uid 1001), group devs (gid 1002)". */
void writers_describe(const struct writers *w, char *buf, size_t len);

/* "user alice (uid 1001)" or "uid 1001" when /etc/passwd does not name it
 * (read as a file, never through NSS, which could wait on the network). */
void uid_describe(uint32_t uid, char *buf, size_t len);
void gid_describe(uint32_t gid, char *buf, size_t len);

/* Checks a secret key file as ssh's StrictModes does: the file and every
 * directory on its path, symlinks followed, must be owned by root or this
 * process's user, and no directory may be writable by its group or others
 * unless it has the sticky bit (/tmp), nor the file by anyone else.
 * Returns 0, or -EPERM with why ("key file X: directory D is writable by
 * group ...").  Group and other read bits of the file are the caller's
 * check (crypto.h). */
int key_path_check(const char *path, char *why, size_t whylen);

#endif

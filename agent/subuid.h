/*
 * Subordinate uid ranges (subuid(5)): a user given a range in /etc/subuid
 * may run processes as any uid of it, through newuidmap(1), without root
 * (rootless containers).  The agent's per-uid quotas charge such a uid to
 * the range's owner, or one user would hold a quota per uid of its range
 * (server.h).
 *
 * The file is read as a regular file of bounded size, never waiting
 * (file_open_regular); owners given by name are found in /etc/passwd,
 * read the same way, never through NSS (which may wait on the network).
 * subuid_refresh() looks at both (stat) at most once every
 * SUBUID_CHECK_MS and reads them again when either changed.
 *
 * Functions return 0 or a negative errno, as everywhere in the agent.
 */
#ifndef DBSWAP_AGENT_SUBUID_H
#define DBSWAP_AGENT_SUBUID_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define SUBUID_PATH "/etc/subuid"
#define SUBUID_PASSWD_PATH "/etc/passwd"
/* Largest file read: a line per user or range is tens of bytes, so this
 * is tens of thousands of them, read and parsed in milliseconds. */
#define SUBUID_FILE_MAX (4 * 1024 * 1024)
/* How often the files may be looked at: a range added counts within a
 * second, and a flood of connections costs no more than one stat a
 * second. */
#define SUBUID_CHECK_MS 1000
/* Longest owner name kept (useradd allows 32); a longer one makes the
 * line bad. */
#define SUBUID_NAME_MAX 32
/* Room for subuid_describe(). */
#define SUBUID_DESCRIBE_MAX (SUBUID_NAME_MAX + 24)

struct subuid_range {
	uint64_t start, end; /* end: one past the last uid */
	uint64_t reach;      /* the largest end of this and earlier ranges */
	uid_t owner;         /* whose quotas its uids use */
	char name[SUBUID_NAME_MAX + 1]; /* the owner as the file says */
};

struct subuid_map {
	const char *path, *passwd;
	struct subuid_range *ranges; /* sorted by start */
	size_t n;
	/* The identities (device, inode, size, mtime, ctime) of the files
	 * as last read; zero for one that was absent. */
	struct stat sub_st, pw_st;
	int64_t checked_ms; /* 0: never */
};

/* NULL paths: SUBUID_PATH and SUBUID_PASSWD_PATH (tests give others).
 * The strings must outlive m.  Nothing is read yet. */
void subuid_init(struct subuid_map *m, const char *path, const char *passwd);
void subuid_fini(struct subuid_map *m);

/* Reads the files again if either changed since they were read, looking
 * at most once every SUBUID_CHECK_MS.  A file that is missing means no
 * ranges; one that cannot be read (not a regular file, over
 * SUBUID_FILE_MAX, an error) leaves the ranges read before in force, with
 * a log line.  Lines that are not owner:start:count are skipped, and
 * said. */
void subuid_refresh(struct subuid_map *m);

/* Parses the text of a subuid file (changed in place) into ranges sorted
 * by start, owners named by name resolved from passwd (the text of
 * /etc/passwd, changed in place; NULL: none).  A range whose owner is a
 * name passwd lacks counts as one user of its own: its first uid.  *bad
 * counts the lines skipped, *first_bad is the number of the first.
 * Returns 0 or -ENOMEM. */
int subuid_parse(char *text, char *passwd, struct subuid_range **out,
		 size_t *n, unsigned *bad, unsigned *first_bad);

/* The range uid is in, or NULL.  Of overlapping ranges (a mistake in the
 * file), the one that starts last. */
const struct subuid_range *subuid_find(const struct subuid_map *m,
				       uid_t uid);

/* " (subuid of alice)", or " (subuid of uid 1001)" for an owner the file
 * gives by number: for log lines, after the uid. */
void subuid_describe(const struct subuid_range *r, char *buf, size_t len);

#endif

/*
 * The layered environment: the agent's own process environment at the
 * bottom, then each --env file in command-line order; a later layer wins.
 *
 * A file is plaintext, or encrypted as a whole (it starts with the sealed
 * file header), or plaintext with encrypted values (enc:v1:...); see
 * common/crypto.h.  Decryption uses the agent's keys; a file that does not
 * decrypt is rejected like one that does not parse.
 *
 * Each file keeps the (decrypted) text of its last good version, in
 * sodium_malloc'ed memory.  A new version that
 * cannot be read or parsed is rejected whole, with the reason kept for
 * status, and the last good text stays in force.  Because ${VAR} expansion
 * reads lower layers, every file is re-parsed from its kept text whenever
 * any layer changes.
 *
 * Only a regular file is ever opened (common/util.h file_open_regular()):
 * a FIFO, socket, device or directory at the path, or as a symlink's
 * target, is an error that names its type, never a read that waits.
 *
 * A file still being written is not used.  Whether another process has it
 * open for writing is asked of the kernel with a read lease (F_SETLEASE
 * F_RDLCK fails with EAGAIN exactly then); where the kernel grants none
 * (the agent neither owns the file nor has CAP_LEASE in the initial user
 * namespace, which the packaged unit's PrivateUsers= rules out, or the
 * file system has no leases) the watcher's word is taken (inotify saw a
 * write and no close).  Content read while a writer has the file open is used only
 * once the writer has had LAYERS_UNCLOSED_MAX_MS and the content has not
 * changed for LAYERS_UNCLOSED_STABLE_MS: a writer that keeps a file open
 * for good must not block updates forever, but no prefix of a value
 * written by a slow writer (".../app" of ".../app_staging") is taken for
 * the value meanwhile.
 *
 * WHO MAY READ WHAT.  Each time a file is read, the agent works out who
 * could have written what it read: root, the file's owner, its group and
 * others if they may write it, and the same for every directory and
 * symlink on the way (common/util.h writers_of_path()).  A ${NAME} that
 * finds NAME below the file (an earlier file, or the agent's environment,
 * which only root and the agent's user can set) is allowed only when
 * every writer of this file could also write the file that defines NAME
 * (writers_covered(); root and the agent's user count as writers of
 * everything): otherwise whoever can write this file could copy another
 * file's secret into a value of theirs (a conninfo naming their own
 * server) and have the agent send it there.  An enc: value, and a sealed
 * file, is opened only in a file that no one but root and the agent's
 * user can write (key files must be that private too, keys.h): otherwise
 * a ciphertext copied from elsewhere would be decrypted into a value its
 * copier chose.  A name that a lower file (or the agent's environment)
 * defines may be defined again only in a file whose every writer could
 * also write that one (writers_covered() the same way round): a later
 * layer wins, so whoever can write it could otherwise point a target
 * defined below at their own server.  A root-only file may define again
 * anyone's names; a user's file may not define again a root-only file's.
 * A file that breaks any of these rules is rejected whole, like a
 * malformed one.  A file whose kept parse defines a name that a lower
 * file came to define since is not used for that name (the lower one is)
 * until it is fixed.  A file is re-parsed over the layers below with the
 * writers recorded when its text was read; a change of owner or mode
 * alone (inotify's IN_ATTRIB) reads it again like a change of content.
 *
 * LOG LINES.  Whoever can write a file, or a directory or link on its
 * path, decides how many versions it has, and each rejected one is worth a
 * line: the lines about a file are limited (LAYERS_LOG_*), the rest
 * counted and said with the file's state once a second at most.  Status
 * always shows the file's state and error as they are.
 *
 * A read that fails for a reason that may pass (EACCES fixed by a chmod
 * on a directory, EMFILE, ENFILE, EIO, ENOMEM) is retried with backoff
 * (LAYERS_RETRY_FIRST_MS doubling to LAYERS_RETRY_MAX_MS) for as long as
 * the agent runs: the caller is told when to look again.
 */
#ifndef DBSWAP_AGENT_LAYERS_H
#define DBSWAP_AGENT_LAYERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/env.h"
#include "common/log.h"
#include "common/util.h"

/* Largest env file read: the format's limit. */
#define LAYERS_FILE_MAX ENV_FILE_MAX

/* How long a writer may keep a changed file open before its content may
 * be used anyway, and for how long that content must then stay the same.
 * Editors, scripts and deploy tools close within a second; 30 s is far
 * beyond a slow one, and 5 s without a change says it is done. */
#ifndef LAYERS_UNCLOSED_MAX_MS /* the unit test builds with short ones */
#define LAYERS_UNCLOSED_MAX_MS 30000
#define LAYERS_UNCLOSED_STABLE_MS 5000
#endif
/* How often a file held open by a writer is read again meanwhile (its
 * close is reported at once anyway; this bounds a close that inotify
 * cannot tell, such as another writer's). */
#define LAYERS_UNCLOSED_RECHECK_MS 1000

/* Most enc: values one file may hold (each one a public-key operation
 * at every parse, about 0.1 ms): far beyond the secrets of one app, and
 * it keeps a file of repeated ${V} references to an encrypted value from
 * costing seconds. */
#define LAYERS_DECODES_MAX 256

/* Retries of a read that failed for a reason that may pass. */
#define LAYERS_RETRY_FIRST_MS 100
#define LAYERS_RETRY_MAX_MS 30000

/* Log lines the versions of one file may cause: LAYERS_LOG_BURST at once,
 * LAYERS_LOG_PER_S a second after that; and all files together
 * LAYERS_LOG_ALL_*.  Whoever can write a file (or a directory or link on
 * its path) can write a rejected version thousands of times a second,
 * each worth a line; a working file causes a handful.  The numbers are
 * those of a socket client's uid (server.c).  Lines left out are counted
 * and said, with the file's state, at most once every
 * LAYERS_LOG_SUMMARY_MS per file. */
#define LAYERS_LOG_BURST 20
#define LAYERS_LOG_PER_S 5
#define LAYERS_LOG_ALL_BURST 100
#define LAYERS_LOG_ALL_PER_S 20
#define LAYERS_LOG_SUMMARY_MS 1000

enum layer_state {
	LAYER_OK,      /* the current text parsed */
	LAYER_ERROR,   /* the current text was rejected; last good in force */
	LAYER_MISSING, /* the file is gone; last good in force */
	LAYER_WRITING, /* a writer has it open; last good in force */
};

/* How a layer's last good version was protected on disk. */
enum layer_crypt {
	LAYER_PLAIN,  /* plaintext */
	LAYER_SEALED, /* encrypted as a whole */
	LAYER_VALUES, /* plaintext with enc:v1: values */
};

struct keys;

struct layer {
	char *path;
	enum layer_state state;
	char *error;  /* why the file was rejected; never quotes values */
	char *text;   /* last good text (secret, sodium memory), or NULL */
	size_t text_len;
	bool ever_good;
	enum layer_crypt crypt;
	struct env_file parsed; /* parse of text over the layers below */
	struct writers writers; /* who could write text when it was read */
	bool reparse_failed;    /* error is from a re-parse of text */

	/* The version last read, good or not, for `dbswapctl set --wait`:
	 * "dev:inode:size:mtime_ns" of what the path named, and the agent's
	 * evaluation sequence number when that version was first read. */
	char identity[FILE_IDENTITY_MAX];
	uint64_t read_seq;

	/* Read failures in a row that are retried, and the last one's errno
	 * (logged once, not at every retry). */
	unsigned read_failures;
	int read_errno;
	/* The raw bytes of the version in force, hashed: what a writer holds
	 * open is compared with it without decrypting. */
	uint8_t good_hash[32];
	/* While a writer holds changed content open: since when, and the
	 * hash of the content read last and since when it is so. */
	int64_t open_since_ms; /* 0 when no writer is at work */
	uint8_t open_hash[32];
	int64_t open_hash_ms;

	/* Its log lines (LAYERS_LOG_*): the budget, lines left out since
	 * the last summary and when that was, and whether the last line
	 * about it that went out said it was rejected (then the line saying
	 * it is good again always goes out: the log's last word on a file
	 * is never a stale error). */
	struct log_bucket log;
	unsigned log_suppressed;
	int64_t log_summary_ms;
	bool log_said_bad;
	/* The version read is the one read before (a recheck, a reload):
	 * an error it causes again is not logged again. */
	bool reread;
};

struct layers {
	struct layer *files;
	size_t n_files;
	struct keys *keys; /* for encrypted files and values */
	struct log_bucket log_all; /* the log lines of all files */
};

int layers_init(struct layers *l, char *const *paths, size_t n,
		struct keys *keys);
void layers_fini(struct layers *l);

/* Re-reads file i from disk, as evaluation seq; writer_open is the
 * watcher's word on a writer at work (watch.h), used where the kernel
 * grants no lease.  Returns 1 when the effective environment may have
 * changed (new good text), 0 when nothing changed or the new version was
 * rejected or put off (see the layer's state and error), or -ENOMEM.
 * *recheck_ms is set to when to read the file again though no change is
 * seen (a writer at work, a read error that may pass, a summary of log
 * lines left out that is due then), else to -1. */
int layers_reload(struct layers *l, size_t i, uint64_t seq, bool writer_open,
		  int64_t *recheck_ms);

/* The effective value of name: the highest file defining it (where that
 * definition counts: see WHO MAY READ WHAT), else the process
 * environment, else NULL. */
const char *layers_get(const struct layers *l, const char *name);

/* The layer whose definition of name is in force (LAYERS_ENV: the process
 * environment); false when name is defined nowhere. */
bool layers_origin(const struct layers *l, const char *name, size_t *layer);

/* Where the effective value of name is defined: *path and *line of the
 * highest file's last definition.  Returns false when no file defines it
 * (the process environment may). */
bool layers_where(const struct layers *l, const char *name,
		  const char **path, unsigned *line);

/* The environment, as a layer number in layers_walk() callbacks. */
#define LAYERS_ENV ((size_t)-1)

/* Called by layers_walk(): with literal false for each name whose
 * expansion lands in the region walked, and layer the file that defines
 * it (LAYERS_ENV: the process environment); with literal true for text of
 * the region that is written out in a definition (not expanded), name
 * that definition's and layer its file (or LAYERS_ENV for a value from
 * the environment, name its name).  A non-zero return stops the walk and
 * is returned. */
typedef int layers_walk_fn(const char *name, size_t layer, bool literal,
			   void *data);

/* Most steps of one walk: bounds the time a file built to make walks
 * long can cost on the loop (a value is at most ENV_VALUE_MAX bytes and
 * ${ nest ENV_NEST_MAX deep, so real walks take a few dozen). */
#define LAYERS_WALK_MAX 100000

/* Walks what went into bytes [off, off + len) of the effective value of
 * name, directly or through other names (a name whose value is empty
 * there does not count), in any order and maybe more than once.  A name
 * expanded through a default, or from a value that was decrypted or cut,
 * is followed into the whole of its own value (it cannot be told which
 * part landed where), and the text where it landed counts as written out
 * in the definition too.  Returns 0, fn's non-zero return, or -E2BIG past
 * LAYERS_WALK_MAX steps. */
int layers_walk(const struct layers *l, const char *name, size_t off,
		size_t len, layers_walk_fn *fn, void *data);

#endif

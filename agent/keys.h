/*
 * The agent's secret keys, for encrypted env files.
 *
 * Keys come from --key FILE (repeatable, so the agent's own key can be
 * rotated: files sealed to any held key open, the key id in each file
 * picks the key), else from $CREDENTIALS_DIRECTORY/dbswap.key when systemd
 * passes one (LoadCredential= / LoadCredentialEncrypted=).
 *
 * A key file that cannot be loaded (missing, unreadable, readable by group
 * or others, malformed) or that someone else could replace (owned by a
 * user other than root or the agent's, or in a directory others can write:
 * common/util.h key_path_check(), ssh's rule) is reported in the log and in status; on a reload
 * the key loaded from that path before stays in force, like any last good
 * value.  The keys live in sodium_malloc'ed memory (see common/crypto.h).
 */
#ifndef DBSWAP_AGENT_KEYS_H
#define DBSWAP_AGENT_KEYS_H

#include <stdbool.h>
#include <stddef.h>

struct crypt_key;

/* The credential name looked up in $CREDENTIALS_DIRECTORY. */
#define KEYS_CREDENTIAL "dbswap.key"

struct key_slot {
	char *path;
	struct crypt_key *key; /* last good, NULL if never loaded */
	char *error;           /* why the last load failed, NULL if it did not */
	bool credential;       /* from $CREDENTIALS_DIRECTORY (systemd) */
};

struct keys {
	struct key_slot *slots;
	size_t n_slots;
	/* The loaded keys, for crypt_open_*(): rebuilt by keys_load(). */
	struct crypt_key **held;
	size_t n_held;
	bool from_options;     /* the slots are --key's (else the credential) */
};

/* Sets up the slots for paths; with none, for the systemd credential if
 * $CREDENTIALS_DIRECTORY holds one.  Loads nothing yet.  Returns 0 or
 * -ENOMEM. */
int keys_init(struct keys *k, char *const *paths, size_t n);
void keys_fini(struct keys *k);

/* (Re)loads every key file, keeping the previous key of a slot whose file
 * fails.  Returns the number of slots that failed (logged), or -ENOMEM. */
int keys_load(struct keys *k);

/* keys_load() for a reload (SIGHUP): --key files are read again, a key
 * file that appeared since start is loaded; without --key, the systemd
 * credential is looked for again, and the log says that a credential
 * changes only with a restart (systemd copies it at start).  Returns as
 * keys_load(). */
int keys_reload(struct keys *k);

#endif

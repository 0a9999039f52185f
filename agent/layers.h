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
 */
#ifndef DBSWAP_AGENT_LAYERS_H
#define DBSWAP_AGENT_LAYERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/env.h"
#include "common/util.h"

/* Largest env file read: the format's limit. */
#define LAYERS_FILE_MAX ENV_FILE_MAX

enum layer_state {
	LAYER_OK,      /* the current text parsed */
	LAYER_ERROR,   /* the current text was rejected; last good in force */
	LAYER_MISSING, /* the file is gone; last good in force */
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

	/* The version last read, good or not, for `dbswapctl set --wait`:
	 * "dev:inode:size:mtime_ns" of what the path named, and the agent's
	 * evaluation sequence number when that version was first read. */
	char identity[FILE_IDENTITY_MAX];
	uint64_t read_seq;
};

struct layers {
	struct layer *files;
	size_t n_files;
	struct keys *keys; /* for encrypted files and values */
};

int layers_init(struct layers *l, char *const *paths, size_t n,
		struct keys *keys);
void layers_fini(struct layers *l);

/* Re-reads file i from disk, as evaluation seq.  Returns 1 when the
 * effective environment may have changed (new good text), 0 when nothing
 * changed or the new version was rejected (see the layer's state and
 * error), or -ENOMEM. */
int layers_reload(struct layers *l, size_t i, uint64_t seq);

/* The effective value of name: the highest file defining it, else the
 * process environment, else NULL. */
const char *layers_get(const struct layers *l, const char *name);

#endif

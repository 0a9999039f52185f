/*
 * The layered environment: the agent's own process environment at the
 * bottom, then each --env file in command-line order; a later layer wins.
 *
 * Each file keeps the text of its last good version.  A new version that
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

/* Largest env file read.  Real ones are a few KiB; this bounds memory and
 * parse time (expansion lookups are linear in the entries before them, so
 * a hostile file costs quadratic time: 256 KiB parses in well under a
 * second) when a file is replaced by something that is not an env file. */
#define LAYERS_FILE_MAX (256 * 1024)

enum layer_state {
	LAYER_OK,      /* the current text parsed */
	LAYER_ERROR,   /* the current text was rejected; last good in force */
	LAYER_MISSING, /* the file is gone; last good in force */
};

struct layer {
	char *path;
	enum layer_state state;
	char *error;  /* why the file was rejected; never quotes values */
	char *text;   /* last good text (secret), NULL before the first */
	size_t text_len;
	bool ever_good;
	struct env_file parsed; /* parse of text over the layers below */
};

struct layers {
	struct layer *files;
	size_t n_files;
};

int layers_init(struct layers *l, char *const *paths, size_t n);
void layers_fini(struct layers *l);

/* Re-reads file i from disk.  Returns 1 when the effective environment
 * may have changed (new good text), 0 when nothing changed or the new
 * version was rejected (see the layer's state and error), or -ENOMEM. */
int layers_reload(struct layers *l, size_t i);

/* The effective value of name: the highest file defining it, else the
 * process environment, else NULL. */
const char *layers_get(const struct layers *l, const char *name);

#endif

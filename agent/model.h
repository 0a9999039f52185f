/*
 * The model's entry points: the targets made, the env files read into
 * them at start, when a file changes and on a reload.  Below the server
 * and systemd (which ask for a reload through here, and hear of what
 * changes through changes.h), above the targets and failover.
 */
#ifndef DBSWAP_AGENT_MODEL_H
#define DBSWAP_AGENT_MODEL_H

#include <stddef.h>

struct agent;

/* Makes the targets named (a name given twice makes one) with their
 * failover, and starts following the env files (a->layers) with
 * a->watcher.  Returns 0 or a negative errno (logged). */
int model_init(struct agent *a, char *const *targets, size_t n_targets);
void model_fini(struct agent *a);

/* Reads every env file for the first time and evaluates the targets.
 * Returns 0 or a negative errno (logged). */
int model_load(struct agent *a);

/* Re-reads every env file and the keys now, re-evaluates the targets,
 * and gives candidates that gave up another chance (SIGHUP, dbswapctl
 * reload). */
void model_reload(struct agent *a);

#endif

/*
 * The agent's state, shared by its modules: the event loop, the layered
 * env files and their watcher, the targets, and the client server.  Data
 * only: what acts on it is in model.h (the env files into the targets),
 * target.h and failover.h, and the modules above them (changes.h).
 */
#ifndef DBSWAP_AGENT_H
#define DBSWAP_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "changes.h"
#include "common/log.h"
#include "health.h"
#include "keys.h"
#include "layers.h"

struct loop;
struct watcher;
struct server;
struct systemd;
struct target;

struct agent {
	struct loop *loop;
	struct watcher *watcher;
	struct keys keys;
	struct layers layers;
	/* Counts evaluations of the env files (each file change, each
	 * reload): status reports which evaluation read a file and which set
	 * a target's value, so `dbswapctl set --wait` can tell what its write
	 * caused. */
	uint64_t eval_seq;
	struct target **targets;
	size_t n_targets;
	struct server *server;
	int64_t started_ms;
	/* Failover settings in force for every target (failover.h), and why
	 * the newest values in the files were refused. */
	struct health_config failover;
	char *failover_error;
	/* Lines saying the failover settings were refused or are valid
	 * again: a user's file that sets one and drops it would cause one
	 * per version (failover.c). */
	struct log_bucket failover_log;
	struct systemd *systemd;
	struct state *state; /* the last good values on disk; NULL: none */
	/* Told what changes in the model (changes.h). */
	struct changes changes;
};

/* Tells the observers that kind changed about t (NULL: the agent). */
static inline void agent_changed(struct agent *a, enum change_kind kind,
				 struct target *t)
{
	changes_tell(&a->changes, &(struct change){ .kind = kind, .t = t });
}

#endif

/*
 * What changed in the model (the targets, their values and servers), told
 * to the modules above it.  The model knows nothing of clients, systemd or
 * the state on disk: it says what changed, and each module that cares
 * (server.c pushes to subscribers, failover.c decides again, state.c
 * saves, systemd.c updates STATUS=) is an observer of the agent's changes.
 *
 * Observers are told in the order they were added, synchronously: one
 * that has slow work to do arms a timer (all of them do).  An observer
 * may not add or remove observers while being told.
 */
#ifndef DBSWAP_AGENT_CHANGES_H
#define DBSWAP_AGENT_CHANGES_H

#include <stddef.h>
#include <stdint.h>

struct target;
struct target_request;

enum change_kind {
	/* t published a generation (t->generation, t->current, t->reason):
	 * its subscribers are to get it. */
	CHANGE_PUBLISHED,
	/* t's pool settings in force changed (t->settings). */
	CHANGE_SETTINGS,
	/* What failover decides on changed for t: a value in force, a
	 * candidate, a server's health. */
	CHANGE_SERVERS,
	/* A new value of t is in force: worth keeping across a restart. */
	CHANGE_ACCEPTED,
	/* A request t held (failover, failback) is answered: req, error
	 * (NULL: done), generation. */
	CHANGE_ANSWERED,
	/* Anything else status shows: a validation, an ack, a client came or
	 * went (t may be NULL). */
	CHANGE_STATUS,
	/* A reload (SIGHUP, dbswapctl reload) starts, and is done. */
	CHANGE_RELOADING,
	CHANGE_RELOADED,
};

struct change {
	enum change_kind kind;
	struct target *t;
	/* CHANGE_ANSWERED only. */
	const struct target_request *req;
	const char *error;
	uint64_t generation;
};

typedef void change_fn(const struct change *c, void *data);

/* The failover decisions, the server, the state and systemd. */
#define CHANGES_OBSERVERS_MAX 8

struct changes {
	struct {
		change_fn *fn;
		void *data;
	} v[CHANGES_OBSERVERS_MAX];
	size_t n;
};

/* fn(data) is told of every change from now on.  Returns 0 or -ENOSPC. */
int changes_observe(struct changes *c, change_fn *fn, void *data);
/* fn(data) is told no more. */
void changes_forget(struct changes *c, change_fn *fn, void *data);
void changes_tell(const struct changes *c, const struct change *ch);

#endif

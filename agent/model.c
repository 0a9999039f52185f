/*
 * The env files into the targets; see model.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "common/log.h"
#include "common/util.h"
#include "failover.h"
#include "model.h"
#include "target.h"
#include "watch.h"

/* Re-evaluates every target, its value and its pool settings, from the
 * current layers. */
static void model_update(struct agent *a)
{
	/* First: new timeouts apply to the validations started below. */
	failover_update_settings(a);
	for (size_t i = 0; i < a->n_targets; i++) {
		struct target *t = a->targets[i];
		target_set_values(t);
		/* The pool settings come from the same layers and change
		 * with them, but need no validation round trip. */
		target_update_settings(t);
	}
}

/* Reads layer i again; asks the watcher to report it again when the
 * layer says so (a writer at work, a read error that may pass).  Returns
 * what layers_reload() did. */
static int model_read_layer(struct agent *a, size_t i, bool writer_open)
{
	const char *path = a->layers.files[i].path;
	int64_t recheck_ms;
	int r = layers_reload(&a->layers, i, a->eval_seq, writer_open,
			      &recheck_ms);

	if (r < 0)
		log_error("%s: %s", path, strerror(-r));
	if (recheck_ms >= 0)
		watcher_recheck(a->watcher, path, recheck_ms);
	return r;
}

static void model_file_changed(const char *path,
			       const struct watch_report *rep, void *data)
{
	struct agent *a = data;
	bool changed = false;
	int64_t read_us = now_us();

	a->eval_seq++;
	/* Several --env options may name the same file. */
	for (size_t i = 0; i < a->layers.n_files; i++)
		if (streq(a->layers.files[i].path, path))
			changed |= model_read_layer(a, i, rep->writer_open) > 0;
	/* Where the time of a rotation goes, before the validation (the
	 * benchmark reads this). */
	log_debug("%s: read %.2f ms after its first event; read, decrypted "
		  "and parsed in %.2f ms%s", path,
		  (read_us - rep->first_us) / 1000.0,
		  (now_us() - read_us) / 1000.0, changed ? "" : " (no change)");
	if (changed)
		model_update(a);
}

void model_reload(struct agent *a)
{
	int r;

	agent_changed(a, CHANGE_RELOADING, NULL);
	r = keys_reload(&a->keys);
	if (r == -ENOMEM)
		log_error("keys: out of memory");
	a->eval_seq++;
	/* A writer inotify saw at work still counts where the kernel grants
	 * no lease: a reload must not take what it holds open. */
	for (size_t i = 0; i < a->layers.n_files; i++)
		model_read_layer(a, i,
				 watcher_writing(a->watcher,
						 a->layers.files[i].path));
	model_update(a);
	/* A reload also gives a candidate that gave up another chance. */
	for (size_t i = 0; i < a->n_targets; i++)
		target_retry_now(a->targets[i]);
	agent_changed(a, CHANGE_RELOADED, NULL);
}

int model_load(struct agent *a)
{
	a->eval_seq++;
	for (size_t i = 0; i < a->layers.n_files; i++) {
		int r = model_read_layer(a, i, false);
		if (r < 0)
			return r;
	}
	model_update(a);
	return 0;
}

int model_init(struct agent *a, char *const *targets, size_t n_targets)
{
	int r;

	for (size_t i = 0; i < a->layers.n_files; i++) {
		const char *path = a->layers.files[i].path;
		r = watcher_add(a->watcher, path, model_file_changed, a);
		if (r < 0) {
			log_error("cannot watch %s: %s", path, strerror(-r));
			return r;
		}
	}
	a->targets = calloc(n_targets, sizeof(*a->targets));
	if (!a->targets)
		return -ENOMEM;
	for (size_t i = 0; i < n_targets; i++) {
		struct target *t;

		if (target_find(a, targets[i]))
			continue;
		r = target_new(a, targets[i], &t);
		if (r < 0)
			return r;
		r = failover_init(t);
		if (r < 0) {
			target_free(t);
			return r;
		}
		a->targets[a->n_targets++] = t;
	}
	return failover_start(a);
}

void model_fini(struct agent *a)
{
	failover_stop(a);
	for (size_t i = 0; i < a->n_targets; i++) {
		failover_fini(a->targets[i]);
		target_free(a->targets[i]);
	}
	free(a->targets);
	a->targets = NULL;
	a->n_targets = 0;
}

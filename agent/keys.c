/*
 * The agent's secret keys; see keys.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/log.h"
#include "common/util.h"
#include "keys.h"

static int keys_add_slot(struct keys *k, const char *path)
{
	struct key_slot *slots =
		realloc(k->slots, (k->n_slots + 1) * sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	k->slots = slots;
	slots[k->n_slots] = (struct key_slot){ .path = strdup(path) };
	if (!slots[k->n_slots].path)
		return -ENOMEM;
	k->n_slots++;
	return 0;
}

/* The credential's slot, when systemd passed one and no --key was given. */
static int keys_add_credential(struct keys *k)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	char path[4096];
	int r;

	if (!creds || !*creds)
		return 0;
	snprintf(path, sizeof(path), "%s/%s", creds, KEYS_CREDENTIAL);
	if (access(path, F_OK) != 0)
		return 0;
	r = keys_add_slot(k, path);
	if (r == 0)
		k->slots[k->n_slots - 1].credential = true;
	return r;
}

int keys_init(struct keys *k, char *const *paths, size_t n)
{
	int r;

	*k = (struct keys){ .from_options = n > 0 };
	for (size_t i = 0; i < n; i++) {
		r = keys_add_slot(k, paths[i]);
		if (r < 0)
			return r;
	}
	return n == 0 ? keys_add_credential(k) : 0;
}

int keys_reload(struct keys *k)
{
	int r;

	if (!k->from_options) {
		/* systemd copies a credential into $CREDENTIALS_DIRECTORY at
		 * start and never again: say so, instead of a silent reload
		 * that an admin takes for a new key in force. */
		if (k->n_slots == 0) {
			r = keys_add_credential(k);
			if (r < 0)
				return r;
		}
		if (k->n_slots == 0)
			log_info("keys: none (no --key, no credential %s); "
				 "systemd passes credentials at start only: a "
				 "key added since takes a restart",
				 KEYS_CREDENTIAL);
		else
			log_info("keys: %s is systemd's copy from the start; "
				 "a key changed since in its credential store "
				 "takes a restart (systemctl restart)",
				 k->slots[0].path);
	}
	return keys_load(k);
}

void keys_fini(struct keys *k)
{
	for (size_t i = 0; i < k->n_slots; i++) {
		crypt_key_free(k->slots[i].key);
		free(k->slots[i].path);
		free(k->slots[i].error);
	}
	free(k->slots);
	free(k->held);
	*k = (struct keys){ 0 };
}

int keys_load(struct keys *k)
{
	struct crypt_key **held;
	int failed = 0;

	for (size_t i = 0; i < k->n_slots; i++) {
		struct key_slot *s = &k->slots[i];
		struct crypt_key *key;
		char err[512], id[2 * CRYPT_KEY_ID_LEN + 1];
		int r;

		free(s->error);
		s->error = NULL;
		/* Whoever can replace the key could have the agent open
		 * their own files with it: refused like a readable key. */
		r = key_path_check(s->path, err, sizeof(err));
		if (r == 0)
			r = s->credential ? crypt_key_load_credential(s->path, &key, err,
							      sizeof(err))
				  : crypt_key_load(s->path, &key, err,
						   sizeof(err));
		if (r < 0) {
			failed++;
			s->error = strdup(err);
			log_error("%s%s", err,
				  s->key ? "; the key loaded before stays in use"
					 : "");
			continue;
		}
		crypt_id_hex(crypt_key_id(key), id);
		log_info("key %s loaded from %s", id, s->path);
		crypt_key_free(s->key);
		s->key = key;
	}
	held = calloc(k->n_slots + 1, sizeof(*held));
	if (!held)
		return -ENOMEM;
	free(k->held);
	k->held = held;
	k->n_held = 0;
	for (size_t i = 0; i < k->n_slots; i++)
		if (k->slots[i].key)
			k->held[k->n_held++] = k->slots[i].key;
	return failed;
}

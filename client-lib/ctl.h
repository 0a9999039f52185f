/*
 * dbswapctl's shared pieces: exit codes, talking to the agent, reading the
 * status tree, and reading secrets without leaving copies around.
 */
#ifndef DBSWAP_CTL_H
#define DBSWAP_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "ipc/msg.h"

/* Exit codes, documented in dbswapctl's usage and the README. */
enum {
	EXIT_REFUSED = 1,     /* the agent refused, or the command failed */
	EXIT_USAGE = 2,       /* bad arguments */
	EXIT_UNREACHABLE = 3, /* no agent at the socket */
	EXIT_REJECTED = 4,    /* set --wait: the agent rejected the value */
	EXIT_TIMEOUT = 5,     /* set --wait: not every subscriber acked */
};

/* How long a single request to the agent may take. */
#define CTL_CALL_TIMEOUT_MS 5000

/* Connects and says hello; exits with EXIT_UNREACHABLE on failure. */
dbswap_client *ctl_connect(const char *socket, const char *name);

/* Sends a request without fields and returns the reply; exits on failure
 * or on an error reply. */
void ctl_call(dbswap_client *c, enum ipc_type type, struct ipc_msg *reply);

/* Status tree access; NULL / -1 when absent or of another type. */
const char *ctl_str(const msgpack_object *map, const char *key, char *buf,
		    size_t size);
long long ctl_int(const msgpack_object *map, const char *key);
const msgpack_object *ctl_array(const msgpack_object *map, const char *key);

/* Reads all of fd, at most max bytes, into malloc'ed memory (NUL added).
 * Returns 0, -EFBIG over max, or a negative errno. */
int ctl_read_all(int fd, size_t max, uint8_t **buf, size_t *len);

struct crypt_key;

/* --pubkey's argument: the key text or a file holding it.  0 or -EINVAL
 * (reason printed). */
int ctl_pubkey_arg(const char *arg, uint8_t pk[32]);

/* Loads a secret key file.  0 or -EINVAL (reason printed). */
int ctl_key_arg(const char *path, struct crypt_key **key);

int cmd_keygen(int argc, char **argv);
int cmd_pubkey(int argc, char **argv);
int cmd_encrypt(int argc, char **argv);
int cmd_decrypt(int argc, char **argv);
int cmd_set(const char *socket, int argc, char **argv);

#endif

/*
 * dbswapctl's shared pieces: exit codes, talking to the agent, reading the
 * status tree, waiting for acks, and reading secrets without leaving copies
 * around.
 */
#ifndef DBSWAP_CTL_H
#define DBSWAP_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "common/util.h"
#include "ipc/msg.h"

/* Exit codes, documented in dbswapctl's usage and the README. */
enum {
	EXIT_REFUSED = 1,     /* the agent refused, or the command failed */
	EXIT_USAGE = 2,       /* bad arguments */
	EXIT_UNREACHABLE = 3, /* no agent at the socket */
	EXIT_REJECTED = 4,    /* set --wait: the agent rejected the value;
			       * failover, failback: the agent refused */
	EXIT_TIMEOUT = 5,     /* --wait: not every subscriber acked */
};

/* How long a single request to the agent may take. */
#define CTL_CALL_TIMEOUT_MS 5000

/* How long --wait waits for acks unless told (set, failover, failback,
 * reconnect): apps switch in milliseconds, a slow one drains within
 * seconds; more than this means someone must look. */
#define CTL_WAIT_DEFAULT_S 30

/* Connects and says hello; exits with EXIT_UNREACHABLE on failure. */
dbswap_client *ctl_connect(const char *socket, const char *name);

/* Sends a request without fields and returns the reply; exits on failure
 * or on an error reply. */
void ctl_call(dbswap_client *c, enum ipc_type type, struct ipc_msg *reply);

/* As ctl_call, but a lost connection or no answer in time returns a
 * negative errno instead of exiting: for waits that outlive an agent
 * restart.  An error reply still exits. */
int ctl_try_call(dbswap_client *c, enum ipc_type type, struct ipc_msg *reply);

/* Connects and says hello, retrying until deadline (now_ms() clock) while
 * the agent is away; NULL if it never answered.  Logs nothing. */
dbswap_client *ctl_connect_until(const char *socket, const char *name,
				 int64_t deadline);

/* Status tree access; NULL / -1 when absent or of another type. */
const char *ctl_str(const msgpack_object *map, const char *key, char *buf,
		    size_t size);
long long ctl_int(const msgpack_object *map, const char *key);
const msgpack_object *ctl_array(const msgpack_object *map, const char *key);

/* The status reply's target of that name, or NULL. */
const msgpack_object *ctl_find_target(const msgpack_object *status,
				      const char *name);

/* Parses --wait and --wait=SECONDS for cmd (named in messages).  Returns 1
 * when arg is one of them (wait and wait_s set), 0 when it is not, -EINVAL
 * after printing why. */
int ctl_wait_arg(const char *cmd, const char *arg, bool *wait, int *wait_s);

/* Following one published generation of a target until every subscriber
 * acked it or a newer one, printing a line whenever the count changes. */
struct ctl_acks {
	char target[IPC_NAME_MAX + 1];
	long long generation; /* the one to be acked; -1 while unknown */
	long long shown_acked, shown_subs; /* as last printed; -1 for none */
};

void ctl_acks_init(struct ctl_acks *a, const char *target,
		   long long generation);
/* One look at the status entry t of the target: true when every
 * subscriber acked. */
bool ctl_acks_follow(struct ctl_acks *a, const msgpack_object *t);
/* For a timeout message on stderr: " T generation G acked by A of S;
 * waiting for pid P (name), ...". */
void ctl_acks_report(const struct ctl_acks *a, const msgpack_object *t);

/* Polls status until every subscriber of target acked generation (or a
 * newer one), printing progress, at most wait_s seconds.  Returns
 * EXIT_SUCCESS, EXIT_TIMEOUT after naming who lags, or EXIT_REFUSED if the
 * target is gone; exits if the agent cannot be reached. */
int ctl_wait_acks(dbswap_client *c, const char *cmd, const char *target,
		  long long generation, int wait_s);

/* Reads all of fd, at most max bytes, into malloc'ed memory (NUL added).
 * Returns 0, -EFBIG over max, or a negative errno. */
int ctl_read_all(int fd, size_t max, uint8_t **buf, size_t *len);

struct crypt_key;

/* --pubkey's argument: the key text or a file holding it.  0 or -EINVAL
 * (reason printed). */
int ctl_pubkey_arg(const char *arg, uint8_t pk[32]);

/* Loads a secret key file.  0 or -EINVAL (reason printed). */
int ctl_key_arg(const char *path, struct crypt_key **key);

/* set's edit of an env file, for other commands (rotate).  prepare is
 * called once the file is read (opened with key when it is sealed; enc:
 * values are still sealed in text) and before anything is written: it
 * returns EXIT_SUCCESS with the changes to make (names and values stay
 * the caller's, and must live until ctl_set_write returns), or an exit
 * code after saying why, and then nothing is written. */
struct crypt_key;
struct envedit_change;
typedef int ctl_set_prepare_fn(const char *text, size_t len,
			       struct crypt_key *key, void *data,
			       const struct envedit_change **changes,
			       size_t *n);

struct ctl_set_call {
	const char *cmd; /* named in messages ("rotate"); NULL: set */
	const char *file;
	const char *pubkey, *key; /* as set's --pubkey and --key; or NULL */
	bool encrypt_values, force;
	ctl_set_prepare_fn *prepare;
	void *data;
};

/* Writes the changes prepare makes, as `set` writes (atomic, durable,
 * encrypted as the file is), and prints "wrote FILE: NAME...".  Fills
 * identity for ctl_set_follow.  Returns EXIT_SUCCESS or an exit code
 * after printing why; the file is then unchanged. */
int ctl_set_write(const struct ctl_set_call *call,
		  char identity[FILE_IDENTITY_MAX]);

/* Before a change that --wait will follow: whether the agent has target
 * (NULL: any) and watches file, and shows this caller which version of
 * the files it read (else --wait could not follow the write).
 * EXIT_SUCCESS, or EXIT_REFUSED after saying which; exits when the agent
 * cannot be reached. */
int ctl_set_check(const char *socket, const char *cmd, const char *file,
		  const char *target);

/* What a follow must see before it calls the change done. */
struct ctl_follow_expect {
	/* The target the write must change (its value in use published);
	 * NULL for set, where a write that changes no target is done at
	 * once ("no target changed"). */
	const char *target;
	/* At least one subscriber acked the expected target's new value:
	 * proof that an app moved, for a revocation. */
	bool need_ack;
};

/* set --wait after ctl_set_write: follows the version of file with that
 * identity through the agent, at most wait_s seconds.  Returns
 * EXIT_SUCCESS when every subscriber acked what it changed (and expect
 * holds), EXIT_REFUSED when the write did not change expect->target's
 * value in use, EXIT_TIMEOUT, EXIT_UNREACHABLE; exits with EXIT_REJECTED
 * when the agent gave up on a value (printing why). */
int ctl_set_follow(const char *socket, const char *cmd, const char *file,
		   const char *identity, int wait_s,
		   const struct ctl_follow_expect *expect);

int cmd_keygen(int argc, char **argv);
int cmd_pubkey(int argc, char **argv);
int cmd_encrypt(int argc, char **argv);
int cmd_decrypt(int argc, char **argv);
int cmd_set(const char *socket, int argc, char **argv);
int cmd_rotate(const char *socket, int argc, char **argv);

#endif

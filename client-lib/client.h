/*
 * Private interface of the client, for dbswapctl and the tests: blocking
 * request/reply calls on top of the same connection code.  Not exported
 * from libdbswap.so.
 */
#ifndef DBSWAP_CLIENT_H
#define DBSWAP_CLIENT_H

#include <stddef.h>

#include "dbswap.h"
#include "ipc/msg.h"

/* Connects and completes the handshake now, waiting at most timeout_ms.
 * Returns 0, or a negative errno with a message (naming the socket) in
 * err. */
int client_connect_now(dbswap_client *c, int timeout_ms, char *err,
		       size_t errlen);

/* A fresh request id, to pack as "id" into a request. */
uint64_t client_next_id(dbswap_client *c);

/* Sends the request w (whose "id" is id) and waits for the reply with that
 * id, dispatching other messages meanwhile.  Returns 0 with *reply filled
 * (an error reply included: check reply->type), -ETIMEDOUT, or another
 * negative errno with a message in err.  Consumes w. */
int client_call(dbswap_client *c, struct ipc_writer *w, uint64_t id,
		int timeout_ms, struct ipc_msg *reply, char *err,
		size_t errlen);

/* The socket path in use. */
const char *client_socket_path(dbswap_client *c);

#endif

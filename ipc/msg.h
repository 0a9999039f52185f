/*
 * Messages: decoding a frame body into a checked struct, and writing frame
 * bodies with msgpack.  Every field of every message is validated in one
 * place, ipc_msg_decode(): a body that passes has the right types, the
 * required fields for its message type, NUL-free strings within their
 * limits, and nothing nested deeper than IPC_DEPTH_MAX.
 */
#ifndef DBSWAP_IPC_MSG_H
#define DBSWAP_IPC_MSG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

struct ipc_msg {
	enum ipc_type type; /* IPC_INVALID for a type this side does not know */
	char *type_name;    /* as sent */

	bool has_id;
	uint64_t id; /* request id, echoed in the reply */

	bool has_version;
	uint64_t version;
	bool has_pid;
	int64_t pid;
	bool has_generation;
	uint64_t generation;
	bool has_valid;
	bool valid;

	/* settings: each pool setting present or absent (absent: the app's
	 * own or default value).  Decoded values are within the bounds of
	 * protocol.h, and pool_min <= pool_max when both are present. */
	bool has_pool_max;
	uint64_t pool_max;
	bool has_pool_min;
	uint64_t pool_min;
	bool has_pool_timeout_ms;
	uint64_t pool_timeout_ms;
	bool has_pool_idle_timeout_ms;
	uint64_t pool_idle_timeout_ms;

	char *name;     /* hello: client or agent name */
	char *target;   /* update, ack, nack, settings, failover, failback,
			 * reconnect (optional there) */
	char *conninfo; /* update: the secret value (wiped on fini) */
	char *reason;   /* update: why the value changed */
	char *server;   /* update: "primary", "secondary" or "none" */
	bool standby;   /* update: the server is in recovery (read-only) */
	bool force;     /* failover, failback: even if it splits the brain */
	char *instance; /* hello (agent's), update, ack, nack: the agent
			 * instance, IPC_INSTANCE_LEN lowercase hex digits */
	char *code;     /* error */
	char *message;  /* error; nack (at most IPC_NACK_MESSAGE_MAX bytes) */
	char **targets; /* subscribe */
	size_t n_targets;

	/* The whole decoded body, for replies read as a tree (status).  It
	 * points into body, a private copy of the frame. */
	msgpack_unpacked root;
	bool has_root;
	char *body;
	size_t body_len;
};

/* Decodes and validates one frame body.  Returns 0 (m filled, even for an
 * unknown type, which leaves m->type IPC_INVALID), -EPROTO for a protocol
 * violation with a reason in err (no secret in it), or -ENOMEM.
 * Call ipc_msg_fini() after either. */
int ipc_msg_decode(struct ipc_msg *m, const uint8_t *body, size_t len,
		   char *err, size_t errlen);
void ipc_msg_fini(struct ipc_msg *m);

/* Checks that buf holds exactly one well-formed msgpack object, nested at
 * most IPC_DEPTH_MAX deep, whose container counts fit in the bytes left (so
 * decoding cannot be made to allocate more than the frame's size). */
int ipc_msgpack_check(const uint8_t *buf, size_t len);

const char *ipc_type_name(enum ipc_type type);
enum ipc_type ipc_type_from_name(const char *name);

/* Looks up key in a msgpack map object; NULL when absent or not a map. */
const msgpack_object *ipc_map_get(const msgpack_object *map, const char *key);

/* Text from a peer (a client's name, a nack's message) and text the
 * agent shows (status) must be printable UTF-8: a newline forges a log
 * line, an escape sequence reaches a terminal through dbswapctl, and
 * invalid UTF-8 breaks strict decoders (Python's msgpack, JSON).
 *
 * ipc_utf8_char: the length (1 to 4) of the valid UTF-8 character at s
 * (n bytes available), its code point in *cp; 0 when the byte at s does
 * not start one (overlong forms, surrogates and code points past
 * U+10FFFF are invalid). */
size_t ipc_utf8_char(const char *s, size_t n, uint32_t *cp);
/* Whether cp may be shown as it is: not a C0 or C1 control, not DEL, not
 * a line or paragraph separator, not a bidirectional override, embedding,
 * isolate or mark (which reorder what a terminal shows after them). */
bool ipc_char_printable(uint32_t cp);
/* A copy of the n bytes at src as printable UTF-8 of at most max bytes:
 * each byte that starts no valid character becomes U+FFFD, each
 * character not printable becomes '?', and the text is cut on a
 * character boundary.  *cut (if not NULL) says whether anything was left
 * out.  NULL when out of memory. */
char *ipc_text_clean(const char *src, size_t n, size_t max, bool *cut);
/* Whether the n bytes at s are printable UTF-8 already. */
bool ipc_text_is_clean(const char *s, size_t n);

/* A frame body being written.  The buffer is wiped when it grows and on
 * fini, since bodies may carry conninfo. */
struct ipc_writer {
	char *buf;
	size_t len, cap;
	bool failed;
	msgpack_packer pk;
};

/* Starts a body as a map of n_fields entries, "type" included in n. */
void ipc_writer_init(struct ipc_writer *w, enum ipc_type type, size_t n);
/* Starts an empty buffer, no map: for msgpack that is not a message but
 * wants the same wiping (the agent's saved values). */
void ipc_writer_init_plain(struct ipc_writer *w);
void ipc_writer_fini(struct ipc_writer *w);

void ipc_pack_str(struct ipc_writer *w, const char *s); /* nil for NULL */
void ipc_pack_kv_str(struct ipc_writer *w, const char *key, const char *s);
void ipc_pack_kv_u64(struct ipc_writer *w, const char *key, uint64_t v);
void ipc_pack_kv_i64(struct ipc_writer *w, const char *key, int64_t v);
void ipc_pack_kv_bool(struct ipc_writer *w, const char *key, bool v);
/* Writes just the key; the caller packs the value through w->pk. */
void ipc_pack_key(struct ipc_writer *w, const char *key);

#endif

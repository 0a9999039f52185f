/*
 * The dbswap wire protocol: constants shared by dbswapd and its clients.
 * ipc/PROTOCOL.md is the specification; this header must agree with it.
 *
 * Frame: a 4-byte big-endian body length, then the body, one msgpack map
 * with a "type" key naming the message.  Types travel as strings so that
 * clients in any language can read a capture; the enum below is the C view.
 *
 * Bump IPC_PROTOCOL_VERSION if the meaning of an existing field or message
 * changes.  Adding a message type or an optional field is not a bump:
 * receivers ignore fields they do not know.  Retired type numbers and names
 * are never reused: keep them here, commented out.
 */
#ifndef DBSWAP_IPC_PROTOCOL_H
#define DBSWAP_IPC_PROTOCOL_H

/* Version 2 adds the agent instance (hello, update, status) and requires
 * it in ack and nack, so that an ack for a generation of an agent that has
 * since restarted is not taken for the same number of the new one. */
#define IPC_PROTOCOL_VERSION 2

/* Oldest version the agent still speaks: a version-1 session works as
 * before, its acks unchecked (PROTOCOL.md, "Versioning"). */
#define IPC_PROTOCOL_VERSION_MIN 1

/* An agent instance id: 16 lowercase hex digits, 64 random bits drawn at
 * each start, so that two runs of the agent never share one.  A string,
 * not an integer: 64-bit integers do not survive JavaScript's msgpack
 * decoders. */
#define IPC_INSTANCE_LEN 16

/* Length prefix of every frame. */
#define IPC_FRAME_HEADER 4

/* Largest frame body accepted or sent.  A status reply for a host with
 * dozens of targets fits in a few KiB; 64 KiB leaves room while keeping what
 * one peer can make the other buffer small.  A peer announcing more is
 * disconnected before anything is allocated. */
#define IPC_FRAME_MAX 65536

/* Longest target name, client name, error code: env variable names and
 * program names are far shorter; this bounds status and log lines. */
#define IPC_NAME_MAX 255

/* Most targets one subscribe may name: a host with more databases than
 * this per process is not a case we know of. */
#define IPC_SUBSCRIBE_MAX 64

/* Deepest msgpack nesting accepted, counting the message's own map as
 * level 1: our messages need 5 (status reply -> targets -> target ->
 * lagging list -> entry); anything deeper is hostile. */
#define IPC_DEPTH_MAX 6

/* Output queued for one peer before it counts as stuck and is dropped: a
 * few hundred updates, far more than a live peer ever lags. */
#define IPC_QUEUE_MAX (1024 * 1024)

/* Longest nack message: one libpq error line and some context.  The text
 * comes from a client and ends up in the agent's log and in every status
 * reply (up to SERVER_LAGGING_MAX of them per target), so it is bounded
 * far below a frame. */
#define IPC_NACK_MESSAGE_MAX 1024

/* Bounds of the pool settings in a settings message (the agent enforces
 * the same on the env values it reads).  10000 connections from one
 * process is beyond any PostgreSQL's max_connections; 86400000 ms is a
 * day, longer than any sane acquire or idle timeout. */
#define IPC_POOL_SIZE_MAX 10000
#define IPC_POOL_TIMEOUT_MAX_MS 86400000

/* Default socket path, for clients given none. */
#define IPC_DEFAULT_SOCKET "/run/dbswap/dbswap.sock"

enum ipc_type {
	IPC_INVALID = 0,
	IPC_HELLO = 1,     /* both ways: handshake */
	IPC_SUBSCRIBE = 2, /* client: follow targets */
	IPC_UPDATE = 3,    /* agent: a target's current value */
	IPC_ACK = 4,       /* client: pool now uses a generation */
	IPC_STATUS = 5,    /* both ways: request and reply */
	IPC_RELOAD = 6,    /* client: re-read every env file */
	IPC_ERROR = 7,     /* both ways: code and message */
	IPC_OK = 8,        /* agent: a request succeeded */
	IPC_NACK = 9,      /* client: cannot switch to a generation */
	IPC_SETTINGS = 10, /* agent: a target's pool settings */
	IPC_FAILOVER = 11, /* client: switch a target to its secondary */
	IPC_FAILBACK = 12, /* client: switch a target back to its primary */
	IPC_RECONNECT = 13, /* client: re-open monitors, recycle pools */
	IPC_PING = 14,     /* client: is the agent alive? answered with ok */
	IPC_METRICS = 15,  /* both ways: request, and the Prometheus text */
	IPC_TYPE_COUNT
};

/* Error codes (the "code" field of an error message). */
#define IPC_ERR_PROTOCOL "protocol"             /* malformed; peer dropped */
#define IPC_ERR_VERSION "version"               /* unsupported version */
#define IPC_ERR_HELLO_REQUIRED "hello-required" /* request before hello */
#define IPC_ERR_UNKNOWN_TYPE "unknown-type"     /* type not known here */
#define IPC_ERR_UNKNOWN_TARGET "unknown-target" /* agent has no such target */
#define IPC_ERR_NOT_SUBSCRIBED "not-subscribed" /* ack without subscribe */
#define IPC_ERR_LIMIT "limit"                   /* a named limit was hit */
#define IPC_ERR_REFUSED "refused"               /* cannot do that now */
#define IPC_ERR_INTERNAL "internal"             /* the agent failed */
#define IPC_ERR_FORBIDDEN "forbidden"           /* peer's uid/gids refused */

#endif

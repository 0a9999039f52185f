/*
 * Framing over a non-blocking stream socket: a reader that cuts the byte
 * stream into frame bodies, and an output queue with a hard bound.
 * See protocol.h for the frame format and limits.
 */
#ifndef DBSWAP_IPC_FRAME_H
#define DBSWAP_IPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

struct ipc_reader {
	uint8_t *buf;
	size_t len; /* bytes held */
	size_t cap;
	size_t consumed; /* bytes of the last frame handed out */
};

void ipc_reader_fini(struct ipc_reader *r);

/* Reads what fd has.  Returns the number of bytes read (> 0), -EAGAIN when
 * nothing is available, 0 at end of stream, or another negative errno. */
int ipc_reader_fill(struct ipc_reader *r, int fd);

/* Hands out the next complete frame body.  Returns 1 with *body and *len
 * set (valid until the next call), 0 when more bytes are needed, or
 * -EMSGSIZE when the announced length exceeds IPC_FRAME_MAX; nothing is
 * allocated for such a frame. */
int ipc_reader_next(struct ipc_reader *r, const uint8_t **body, size_t *len);

struct ipc_queue {
	uint8_t *buf;
	size_t off; /* first unsent byte */
	size_t len; /* end of queued bytes */
	size_t cap;
};

void ipc_queue_fini(struct ipc_queue *q);

/* Queues one frame (header added here).  Returns 0, -EMSGSIZE for a body
 * over IPC_FRAME_MAX, -ENOBUFS when the queue would pass IPC_QUEUE_MAX (the
 * peer is stuck), or -ENOMEM. */
int ipc_queue_push(struct ipc_queue *q, const void *body, size_t len);

/* Writes as much as fd takes.  Returns 0 when the queue is empty, 1 when
 * bytes remain (wait for EPOLLOUT), or a negative errno (peer gone). */
int ipc_queue_flush(struct ipc_queue *q, int fd);

static inline size_t ipc_queue_pending(const struct ipc_queue *q)
{
	return q->len - q->off;
}

#endif

/*
 * Frame reader and bounded output queue; see frame.h.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "frame.h"
#include "protocol.h"

/* First allocation for a reader: most frames are a few hundred bytes, and
 * an idle peer should not cost a full frame's worth. */
#define IPC_READER_INITIAL 4096
/* An output queue that empties keeps its buffer up to this size; a
 * larger one (a burst of big replies) is freed, so that a client that
 * once lagged does not hold a MiB for as long as it stays connected. */
#define IPC_QUEUE_KEEP 16384

void ipc_reader_fini(struct ipc_reader *r)
{
	if (r->buf)
		explicit_bzero(r->buf, r->cap); /* may hold conninfo */
	free(r->buf);
	*r = (struct ipc_reader){ 0 };
}

/* Makes room for at least want bytes in total. */
static int ipc_reader_reserve(struct ipc_reader *r, size_t want)
{
	size_t cap = r->cap ? r->cap : IPC_READER_INITIAL;
	uint8_t *buf;

	if (want <= r->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	cap = MIN(cap, (size_t)IPC_FRAME_HEADER + IPC_FRAME_MAX);
	if (cap < want)
		return -EMSGSIZE;
	buf = secret_grow(r->buf, r->len, r->cap, cap);
	if (!buf)
		return -ENOMEM;
	r->buf = buf;
	r->cap = cap;
	return 0;
}

static void ipc_reader_compact(struct ipc_reader *r)
{
	if (r->consumed == 0)
		return;
	memmove(r->buf, r->buf + r->consumed, r->len - r->consumed);
	r->len -= r->consumed;
	explicit_bzero(r->buf + r->len, r->consumed);
	r->consumed = 0;
}

int ipc_reader_fill(struct ipc_reader *r, int fd)
{
	ssize_t n;
	int ret;

	ipc_reader_compact(r);
	/* Empty after a big frame: back to a small buffer, so that an idle
	 * client does not hold a frame's worth for as long as it stays. */
	if (r->len == 0 && r->cap > IPC_READER_INITIAL) {
		explicit_bzero(r->buf, r->cap);
		free(r->buf);
		r->buf = NULL;
		r->cap = 0;
	}
	/* Read at most up to the end of the current frame if its header is
	 * known, so the buffer never grows past one frame. */
	size_t want = r->len + IPC_READER_INITIAL;
	if (r->len >= IPC_FRAME_HEADER) {
		uint32_t blen = (uint32_t)r->buf[0] << 24 | r->buf[1] << 16 |
				r->buf[2] << 8 | r->buf[3];
		if (blen > IPC_FRAME_MAX)
			return -EMSGSIZE;
		want = MAX(want, IPC_FRAME_HEADER + (size_t)blen);
	}
	want = MIN(want, (size_t)IPC_FRAME_HEADER + IPC_FRAME_MAX);
	ret = ipc_reader_reserve(r, want);
	if (ret < 0)
		return ret;
	/* A full buffer holds a whole frame (the reserve above made room for
	 * the current one): the caller has not drained ipc_reader_next() yet.
	 * Nothing is oversized, so do not make the caller drop the peer. */
	if (r->len == r->cap)
		return -EAGAIN;
	n = recv(fd, r->buf + r->len, r->cap - r->len, MSG_DONTWAIT);
	if (n < 0)
		return errno == EINTR ? -EAGAIN : neg_errno();
	r->len += (size_t)n;
	return (int)n;
}

int ipc_reader_next(struct ipc_reader *r, const uint8_t **body, size_t *len)
{
	const uint8_t *p;
	uint32_t blen;

	ipc_reader_compact(r);
	if (r->len < IPC_FRAME_HEADER)
		return 0;
	p = r->buf;
	blen = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
	if (blen > IPC_FRAME_MAX)
		return -EMSGSIZE;
	if (r->len < IPC_FRAME_HEADER + (size_t)blen)
		return 0;
	*body = p + IPC_FRAME_HEADER;
	*len = blen;
	r->consumed = IPC_FRAME_HEADER + (size_t)blen;
	return 1;
}

void ipc_queue_fini(struct ipc_queue *q)
{
	if (q->buf)
		explicit_bzero(q->buf, q->cap);
	free(q->buf);
	*q = (struct ipc_queue){ 0 };
}

int ipc_queue_push(struct ipc_queue *q, const void *body, size_t len)
{
	size_t need;

	if (len > IPC_FRAME_MAX)
		return -EMSGSIZE;
	if (q->off == q->len)
		q->off = q->len = 0;
	need = q->len - q->off + IPC_FRAME_HEADER + len;
	if (need > IPC_QUEUE_MAX)
		return -ENOBUFS;
	if (q->off > 0 && q->len + IPC_FRAME_HEADER + len > q->cap) {
		memmove(q->buf, q->buf + q->off, q->len - q->off);
		q->len -= q->off;
		explicit_bzero(q->buf + q->len, q->off);
		q->off = 0;
	}
	if (q->len + IPC_FRAME_HEADER + len > q->cap) {
		size_t cap = q->cap ? q->cap : 4096;
		uint8_t *buf;
		while (cap < q->len + IPC_FRAME_HEADER + len)
			cap *= 2;
		buf = secret_grow(q->buf, q->len, q->cap, cap);
		if (!buf)
			return -ENOMEM;
		q->buf = buf;
		q->cap = cap;
	}
	uint8_t *p = q->buf + q->len;
	p[0] = (uint8_t)(len >> 24);
	p[1] = (uint8_t)(len >> 16);
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	memcpy(p + IPC_FRAME_HEADER, body, len);
	q->len += IPC_FRAME_HEADER + len;
	return 0;
}

int ipc_queue_flush(struct ipc_queue *q, int fd)
{
	while (q->off < q->len) {
		ssize_t n = send(fd, q->buf + q->off, q->len - q->off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 1;
			return neg_errno();
		}
		q->off += (size_t)n;
	}
	q->off = q->len = 0;
	if (q->cap > IPC_QUEUE_KEEP) {
		explicit_bzero(q->buf, q->cap);
		free(q->buf);
		q->buf = NULL;
		q->cap = 0;
	}
	return 0;
}

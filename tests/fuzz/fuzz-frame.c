/*
 * libFuzzer target: the frame reader (ipc/frame.c) and message validation
 * (ipc/msg.c), as the agent and libdbswap read a peer.
 *
 * Input: two bytes that choose how the rest is cut into writes (small
 * chunks, down to one byte, or large ones), then the byte stream a peer
 * sends.  The stream goes through a real socketpair into ipc_reader_fill()
 * and ipc_reader_next(), and every frame body into ipc_msg_decode().  The
 * whole stream is also decoded as one body, so that message validation gets
 * inputs that need no framing.
 *
 * Checks: the reader hands out exactly the frames the stream holds, in
 * order and byte for byte, stops with -EMSGSIZE exactly at a frame
 * announcing more than IPC_FRAME_MAX, never stalls with a full buffer, and
 * a decoded message keeps the limits msg.h promises (the agent instance
 * of protocol version 2 included).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc/frame.h"
#include "ipc/msg.h"
#include "ipc/protocol.h"
#include "tests/fuzz/fuzz.h"

static void check_msg(const uint8_t *body, size_t len)
{
	struct ipc_msg m;
	char err[256];
	int r;

	memset(err, 0x55, sizeof(err));
	r = ipc_msg_decode(&m, body, len, err, sizeof(err));
	if (r == 0) {
		FUZZ_CHECK(m.type_name != NULL);
		FUZZ_CHECK(m.n_targets <= IPC_SUBSCRIBE_MAX);
		FUZZ_CHECK(!m.name || strlen(m.name) <= IPC_NAME_MAX);
		FUZZ_CHECK(!m.target || strlen(m.target) <= IPC_NAME_MAX);
		if (m.type == IPC_NACK)
			FUZZ_CHECK(m.message &&
				   strlen(m.message) <= IPC_NACK_MESSAGE_MAX);
		if (m.type == IPC_UPDATE)
			FUZZ_CHECK(m.conninfo != NULL);
		if (m.type == IPC_SETTINGS && m.has_pool_min && m.has_pool_max)
			FUZZ_CHECK(m.pool_min <= m.pool_max);
		if (m.has_pool_max)
			FUZZ_CHECK(m.pool_max >= 1 &&
				   m.pool_max <= IPC_POOL_SIZE_MAX);
		/* An instance is exactly IPC_INSTANCE_LEN lowercase hex
		 * digits: compared as a string by both sides. */
		if (m.instance) {
			FUZZ_CHECK(strlen(m.instance) == IPC_INSTANCE_LEN);
			FUZZ_CHECK(strspn(m.instance, "0123456789abcdef") ==
				   IPC_INSTANCE_LEN);
		}
		for (size_t i = 0; i < m.n_targets; i++)
			FUZZ_CHECK(m.targets[i] &&
				   strlen(m.targets[i]) <= IPC_NAME_MAX);
	} else {
		FUZZ_CHECK(r == -EPROTO);
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	}
	ipc_msg_fini(&m);
}

/* What the reader must hand out: the stream cut by its own headers. */
struct expect {
	const uint8_t *stream;
	size_t len;
	size_t pos;    /* start of the next frame's header */
	bool stopped;  /* the reader refused an oversized frame */
};

static uint32_t header_at(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Takes every frame the reader has; returns how many. */
static size_t drain(struct ipc_reader *r, struct expect *x)
{
	const uint8_t *body;
	size_t len, n = 0;
	int ret;

	while (!x->stopped && (ret = ipc_reader_next(r, &body, &len)) != 0) {
		FUZZ_CHECK(x->len - x->pos >= IPC_FRAME_HEADER);
		if (ret == -EMSGSIZE) {
			FUZZ_CHECK(header_at(x->stream + x->pos) >
				   IPC_FRAME_MAX);
			x->stopped = true;
			break;
		}
		FUZZ_CHECK(ret == 1);
		FUZZ_CHECK(len == header_at(x->stream + x->pos));
		FUZZ_CHECK(x->pos + IPC_FRAME_HEADER + len <= x->len);
		FUZZ_CHECK(memcmp(body, x->stream + x->pos + IPC_FRAME_HEADER,
				  len) == 0);
		x->pos += IPC_FRAME_HEADER + len;
		check_msg(body, len);
		n++;
	}
	return n;
}

/* Reads what the socket has into the reader and drains it.  Returns false
 * when the reader refused the stream or hit its end. */
static bool pump(struct ipc_reader *r, int fd, struct expect *x, bool eof)
{
	for (;;) {
		int ret = ipc_reader_fill(r, fd);

		if (ret == -EMSGSIZE) {
			FUZZ_CHECK(header_at(x->stream + x->pos) >
				   IPC_FRAME_MAX);
			x->stopped = true;
			return false;
		}
		if (ret == -EAGAIN) {
			bool full = r->len == r->cap;
			size_t n = drain(r, x);
			if (x->stopped)
				return false;
			/* A full buffer always holds a whole frame. */
			FUZZ_CHECK(!full || n > 0);
			if (!full)
				return true;
			continue;
		}
		FUZZ_CHECK(ret >= 0);
		if (ret == 0) {
			FUZZ_CHECK(eof);
			drain(r, x);
			return false;
		}
		drain(r, x);
		if (x->stopped)
			return false;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_reader r = { 0 };
	struct expect x;
	uint32_t seed;
	size_t chunk_max, off = 0;
	int sv[2];

	if (size > FUZZ_INPUT_MAX)
		return -1;
	if (size < 2)
		return 0;
	seed = (uint32_t)data[0] << 8 | data[1];
	chunk_max = data[0] & 0x80 ? 16 : 8192;
	x = (struct expect){ .stream = data + 2, .len = size - 2 };

	check_msg(x.stream, x.len);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("socketpair");
		abort();
	}
	while (off < x.len && !x.stopped) {
		size_t n;
		ssize_t w;

		seed = seed * 1103515245u + 12345u;
		n = 1 + (seed >> 8) % chunk_max;
		if (n > x.len - off)
			n = x.len - off;
		w = send(sv[1], x.stream + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			FUZZ_CHECK(errno == EAGAIN || errno == EINTR);
			w = 0;
		}
		off += (size_t)w;
		if (!pump(&r, sv[0], &x, false))
			break;
	}
	if (!x.stopped) {
		shutdown(sv[1], SHUT_WR);
		while (pump(&r, sv[0], &x, true))
			;
		/* Everything sent was read: what is left is an incomplete
		 * frame, or an oversized one the reader refused. */
		FUZZ_CHECK(x.stopped || x.len - x.pos < IPC_FRAME_HEADER ||
			   x.pos + IPC_FRAME_HEADER +
					   header_at(x.stream + x.pos) >
				   x.len);
	}
	close(sv[0]);
	close(sv[1]);
	ipc_reader_fini(&r);
	return 0;
}

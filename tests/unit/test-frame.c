/*
 * Unit tests for the framing layer: ipc_queue on one end of a socketpair,
 * ipc_reader on the other.  Covers frames batched into one read, frames
 * split byte by byte, the size limit exactly and one byte past it (on both
 * sides), the queue bound, end of stream, and a peer that stops reading.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "ipc/frame.h"
#include "ipc/protocol.h"
#include "tests/unit/check.h"

static void make_pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("socketpair");
		exit(2);
	}
}

static void close_pair(int sv[2])
{
	close(sv[0]);
	close(sv[1]);
}

/* Frame bodies are a pattern derived from a seed, so each can be checked
 * without keeping a copy. */
static uint8_t *make_body(unsigned seed, size_t len)
{
	uint8_t *b = malloc(len ? len : 1);

	if (!b) {
		perror("malloc");
		exit(2);
	}
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
	return b;
}

static bool body_ok(unsigned seed, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (b[i] != (uint8_t)(seed * 131u + i * 7u + (i >> 8)))
			return false;
	return true;
}

static int push_pattern(struct ipc_queue *q, unsigned seed, size_t len)
{
	uint8_t *b = make_body(seed, len);
	int r = ipc_queue_push(q, b, len);

	free(b);
	return r;
}

static void write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n <= 0) {
			perror("write");
			exit(2);
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Frame sizes for the streaming tests: small, around the reader's first
 * allocation, and large. */
static size_t size_for(unsigned i)
{
	static const size_t sizes[] = { 0, 1, 17, 300, 4091, 4092, 4096,
					5000, 20000, IPC_FRAME_MAX };
	return sizes[i % ARRAY_SIZE(sizes)];
}

/* Receives frames until expected ones have arrived or the stream stalls;
 * checks each against its seed.  Returns how many arrived. */
static unsigned read_frames(struct ipc_reader *r, int fd, unsigned first,
			    unsigned count, size_t (*size)(unsigned))
{
	unsigned got = 0;

	for (;;) {
		const uint8_t *body;
		size_t len;
		int n;

		while ((n = ipc_reader_next(r, &body, &len)) == 1) {
			unsigned seed = first + got;
			CHECK_INT(len, ==, size(seed));
			CHECK(body_ok(seed, body, len));
			got++;
		}
		CHECK_INT(n, ==, 0);
		CHECK_INT(r->cap, <=, IPC_FRAME_HEADER + IPC_FRAME_MAX);
		if (n < 0 || got >= count)
			return got;
		n = ipc_reader_fill(r, fd);
		if (n == -EAGAIN)
			return got;
		CHECK_INT(n, >, 0);
		if (n <= 0)
			return got;
	}
}

static void test_roundtrip_one_read(void)
{
	struct ipc_queue q = { 0 };
	struct ipc_reader r = { 0 };
	const uint8_t *body;
	size_t len, total = 0;
	int sv[2];

	make_pair(sv);
	/* Ten small frames, 1..10 bytes: 95 bytes in all, one read. */
	for (unsigned i = 0; i < 10; i++) {
		CHECK_INT(push_pattern(&q, i, i + 1), ==, 0);
		total += IPC_FRAME_HEADER + i + 1;
	}
	CHECK_INT(ipc_queue_pending(&q), ==, total);
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, 0);
	CHECK_INT(ipc_queue_pending(&q), ==, 0);

	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, total);
	for (unsigned i = 0; i < 10; i++) {
		CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 1);
		CHECK_INT(len, ==, i + 1);
		CHECK(body_ok(i, body, len));
	}
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 0);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 0);
	/* Nothing more on the socket. */
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, -EAGAIN);

	/* An empty body is a frame too. */
	CHECK_INT(ipc_queue_push(&q, "", 0), ==, 0);
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, 0);
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, IPC_FRAME_HEADER);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 1);
	CHECK_INT(len, ==, 0);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 0);

	ipc_queue_fini(&q);
	ipc_reader_fini(&r);
	CHECK(q.buf == NULL && r.buf == NULL);
	close_pair(sv);
}

static void test_byte_by_byte(void)
{
	struct ipc_queue q = { 0 };
	struct ipc_reader r = { 0 };
	const uint8_t *body;
	size_t len;
	int sv[2];

	make_pair(sv);
	/* Build two frames in a queue, then feed its bytes one at a time. */
	CHECK_INT(push_pattern(&q, 1, 300), ==, 0);
	CHECK_INT(push_pattern(&q, 2, 5), ==, 0);
	size_t total = ipc_queue_pending(&q);
	CHECK_INT(total, ==, 2 * IPC_FRAME_HEADER + 305);
	size_t first_end = IPC_FRAME_HEADER + 300;
	unsigned frames = 0;
	for (size_t i = 0; i < total; i++) {
		write_all(sv[0], q.buf + q.off + i, 1);
		CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, 1);
		int n = ipc_reader_next(&r, &body, &len);
		if (i + 1 == first_end) {
			CHECK_INT(n, ==, 1);
			CHECK_INT(len, ==, 300);
			CHECK(body_ok(1, body, len));
			frames++;
			n = ipc_reader_next(&r, &body, &len);
		} else if (i + 1 == total) {
			CHECK_INT(n, ==, 1);
			CHECK_INT(len, ==, 5);
			CHECK(body_ok(2, body, len));
			frames++;
			n = ipc_reader_next(&r, &body, &len);
		}
		CHECK_INT(n, ==, 0);
	}
	CHECK_INT(frames, ==, 2);
	CHECK_INT(r.cap, <=, IPC_FRAME_HEADER + IPC_FRAME_MAX);

	ipc_queue_fini(&q);
	ipc_reader_fini(&r);
	close_pair(sv);
}

static void test_stream(void)
{
	struct ipc_queue q = { 0 };
	struct ipc_reader r = { 0 };
	unsigned sent = 0, got = 0, total = 60;
	int sv[2];

	make_pair(sv);
	/* Write and read in turns, as a poll loop would: the socket buffer
	 * is smaller than what is sent. */
	for (int round = 0; round < 100000 && got < total; round++) {
		while (sent < total && ipc_queue_pending(&q) < 200000) {
			CHECK_INT(push_pattern(&q, sent, size_for(sent)), ==,
				  0);
			sent++;
		}
		int f = ipc_queue_flush(&q, sv[0]);
		CHECK(f == 0 || f == 1);
		if (f < 0)
			break;
		got += read_frames(&r, sv[1], got, total - got, size_for);
	}
	CHECK_INT(got, ==, total);
	ipc_queue_fini(&q);
	ipc_reader_fini(&r);
	close_pair(sv);
}

static void test_frame_max(void)
{
	struct ipc_queue q = { 0 };
	struct ipc_reader r = { 0 };
	uint8_t *big = make_body(7, IPC_FRAME_MAX + 1);
	int sv[2];

	make_pair(sv);
	/* One byte past the limit: refused, nothing queued. */
	CHECK_INT(ipc_queue_push(&q, big, IPC_FRAME_MAX + 1), ==, -EMSGSIZE);
	CHECK_INT(ipc_queue_pending(&q), ==, 0);
	CHECK_INT(ipc_queue_push(&q, big, SIZE_MAX), ==, -EMSGSIZE);
	/* Exactly the limit: accepted, and read back whole. */
	CHECK_INT(ipc_queue_push(&q, big, IPC_FRAME_MAX), ==, 0);
	CHECK_INT(ipc_queue_pending(&q), ==, IPC_FRAME_HEADER + IPC_FRAME_MAX);
	CHECK_INT(push_pattern(&q, 8, 3), ==, 0);

	unsigned got = 0;
	for (int round = 0; round < 1000 && got < 2; round++) {
		const uint8_t *body;
		size_t len;
		int f = ipc_queue_flush(&q, sv[0]);
		CHECK(f == 0 || f == 1);
		int n = ipc_reader_fill(&r, sv[1]);
		CHECK(n > 0 || n == -EAGAIN);
		while ((n = ipc_reader_next(&r, &body, &len)) == 1) {
			if (got == 0) {
				CHECK_INT(len, ==, IPC_FRAME_MAX);
				CHECK(body_ok(7, body, len));
			} else {
				CHECK_INT(len, ==, 3);
				CHECK(body_ok(8, body, len));
			}
			got++;
		}
		CHECK_INT(n, ==, 0);
		CHECK_INT(r.cap, <=, IPC_FRAME_HEADER + IPC_FRAME_MAX);
	}
	CHECK_INT(got, ==, 2);

	free(big);
	ipc_queue_fini(&q);
	ipc_reader_fini(&r);
	close_pair(sv);
}

/* A header written by hand, announcing len, followed by junk bytes. */
static void check_oversized_header(uint32_t blen, size_t junk)
{
	struct ipc_reader r = { 0 };
	uint8_t hdr[IPC_FRAME_HEADER] = {
		(uint8_t)(blen >> 24), (uint8_t)(blen >> 16),
		(uint8_t)(blen >> 8), (uint8_t)blen,
	};
	uint8_t *j = make_body(3, junk);
	const uint8_t *body = NULL;
	size_t len = 0;
	int sv[2], n;

	make_pair(sv);
	write_all(sv[0], hdr, sizeof(hdr));
	write_all(sv[0], j, junk);
	n = ipc_reader_fill(&r, sv[1]);
	CHECK_INT(n, >, 0);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, -EMSGSIZE);
	CHECK(body == NULL);
	CHECK_INT(r.cap, <=, IPC_FRAME_HEADER + IPC_FRAME_MAX);
	/* A caller that reads on regardless gets the same answer, and the
	 * buffer does not grow toward the announced size. */
	for (int i = 0; i < 5; i++) {
		n = ipc_reader_fill(&r, sv[1]);
		CHECK_INT(n, ==, -EMSGSIZE);
		CHECK_INT(ipc_reader_next(&r, &body, &len), ==, -EMSGSIZE);
	}
	CHECK_INT(r.cap, <=, IPC_FRAME_HEADER + IPC_FRAME_MAX);
	CHECK_INT(r.cap, <=, 4096);
	free(j);
	ipc_reader_fini(&r);
	close_pair(sv);
}

static void test_oversized_header(void)
{
	check_oversized_header(IPC_FRAME_MAX + 1, 0);
	check_oversized_header(IPC_FRAME_MAX + 1, 100);
	check_oversized_header(IPC_FRAME_MAX + 1, 100000);
	check_oversized_header(UINT32_MAX, 10);
	check_oversized_header(0x80000000u, 10);
}

/* The header alone says IPC_FRAME_MAX: the reader waits for the body. */
static void test_max_header_by_hand(void)
{
	struct ipc_reader r = { 0 };
	uint32_t blen = IPC_FRAME_MAX;
	uint8_t hdr[IPC_FRAME_HEADER] = {
		(uint8_t)(blen >> 24), (uint8_t)(blen >> 16),
		(uint8_t)(blen >> 8), (uint8_t)blen,
	};
	uint8_t *b = make_body(9, IPC_FRAME_MAX);
	const uint8_t *body;
	size_t len, off = 0;
	int sv[2], n = 0, got = 0;

	make_pair(sv);
	write_all(sv[0], hdr, sizeof(hdr));
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, IPC_FRAME_HEADER);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 0);
	while (off < IPC_FRAME_MAX) {
		size_t chunk = MIN((size_t)10000, IPC_FRAME_MAX - off);
		write_all(sv[0], b + off, chunk);
		off += chunk;
		while ((n = ipc_reader_fill(&r, sv[1])) > 0)
			;
		CHECK_INT(n, ==, -EAGAIN);
		n = ipc_reader_next(&r, &body, &len);
		if (n == 1) {
			got++;
			CHECK_INT(len, ==, IPC_FRAME_MAX);
			CHECK(body_ok(9, body, len));
		} else {
			CHECK_INT(n, ==, 0);
		}
	}
	CHECK_INT(got, ==, 1);
	CHECK_INT(r.cap, ==, IPC_FRAME_HEADER + IPC_FRAME_MAX);
	free(b);
	ipc_reader_fini(&r);
	close_pair(sv);
}

static void test_queue_bound(void)
{
	struct ipc_queue q = { 0 };
	uint8_t *big = make_body(4, IPC_FRAME_MAX);
	size_t frame = IPC_FRAME_HEADER + IPC_FRAME_MAX;
	size_t full = IPC_QUEUE_MAX / frame;
	size_t rest = IPC_QUEUE_MAX - full * frame;
	int sv[2];

	CHECK(rest >= IPC_FRAME_HEADER);
	/* Fill to exactly IPC_QUEUE_MAX: accepted. */
	for (size_t i = 0; i < full; i++)
		CHECK_INT(ipc_queue_push(&q, big, IPC_FRAME_MAX), ==, 0);
	CHECK_INT(ipc_queue_push(&q, big, rest - IPC_FRAME_HEADER), ==, 0);
	CHECK_INT(ipc_queue_pending(&q), ==, IPC_QUEUE_MAX);
	/* One byte more (even an empty frame is four) is refused, and the
	 * queue is left as it was. */
	CHECK_INT(ipc_queue_push(&q, "", 0), ==, -ENOBUFS);
	CHECK_INT(ipc_queue_push(&q, big, 1), ==, -ENOBUFS);
	CHECK_INT(ipc_queue_pending(&q), ==, IPC_QUEUE_MAX);
	ipc_queue_fini(&q);
	CHECK_INT(ipc_queue_pending(&q), ==, 0);

	/* One byte under the limit and a push that would end one past it. */
	for (size_t i = 0; i < full; i++)
		CHECK_INT(ipc_queue_push(&q, big, IPC_FRAME_MAX), ==, 0);
	CHECK_INT(ipc_queue_push(&q, big, rest - IPC_FRAME_HEADER - 1), ==, 0);
	CHECK_INT(ipc_queue_pending(&q), ==, IPC_QUEUE_MAX - 1);
	CHECK_INT(ipc_queue_push(&q, big, 0), ==, -ENOBUFS);

	/* Once the peer has taken some, there is room again. */
	make_pair(sv);
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, 1);
	CHECK_INT(ipc_queue_pending(&q), <, IPC_QUEUE_MAX - 1);
	CHECK_INT(ipc_queue_push(&q, "", 0), ==, 0);
	close_pair(sv);

	free(big);
	ipc_queue_fini(&q);
}

static void test_eof(void)
{
	struct ipc_reader r = { 0 };
	struct ipc_queue q = { 0 };
	const uint8_t *body;
	size_t len;
	int sv[2];

	/* Clean end between frames. */
	make_pair(sv);
	CHECK_INT(push_pattern(&q, 5, 10), ==, 0);
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, 0);
	close(sv[0]);
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, IPC_FRAME_HEADER + 10);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 1);
	CHECK(body_ok(5, body, len));
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 0);
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, 0);
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, 0);
	close(sv[1]);
	ipc_reader_fini(&r);

	/* End in the middle of a frame: no frame comes out of it. */
	make_pair(sv);
	CHECK_INT(push_pattern(&q, 6, 10), ==, 0);
	write_all(sv[0], q.buf + q.off, 7);
	close(sv[0]);
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, 7);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 0);
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, 0);
	CHECK_INT(ipc_reader_next(&r, &body, &len), ==, 0);
	close(sv[1]);
	ipc_reader_fini(&r);
	ipc_queue_fini(&q);

	/* Writing to a closed peer fails (no SIGPIPE: MSG_NOSIGNAL). */
	make_pair(sv);
	close(sv[1]);
	CHECK_INT(push_pattern(&q, 7, 10), ==, 0);
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, -EPIPE);
	close(sv[0]);
	ipc_queue_fini(&q);

	/* A bad fd is an error, not EOF or EAGAIN. */
	CHECK_INT(ipc_reader_fill(&r, -1), ==, -EBADF);
	ipc_reader_fini(&r);
}

static size_t flush_size(unsigned seed)
{
	return 1000 + seed * 997 % 60000;
}

static void test_flush_full_peer(void)
{
	struct ipc_queue q = { 0 };
	struct ipc_reader r = { 0 };
	unsigned n_frames = 0, got = 0;
	int sv[2], f;

	make_pair(sv);
	/* Small buffers so the peer fills up fast. */
	int small = 4096;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));

	while (ipc_queue_pending(&q) < 500000) {
		CHECK_INT(push_pattern(&q, n_frames, flush_size(n_frames)),
			  ==, 0);
		n_frames++;
	}
	size_t queued = ipc_queue_pending(&q);
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, 1);
	size_t left = ipc_queue_pending(&q);
	CHECK_INT(left, >, 0);
	CHECK_INT(left, <, queued);
	/* The peer still has not read: nothing moves, still 1. */
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, 1);
	CHECK_INT(ipc_queue_pending(&q), ==, left);

	/* Frames pushed while part of the queue is sent keep their order
	 * (the queue compacts or grows under the unsent bytes). */
	for (int i = 0; i < 5; i++) {
		CHECK_INT(push_pattern(&q, n_frames, flush_size(n_frames)),
			  ==, 0);
		n_frames++;
	}

	/* The peer reads; flushing completes. */
	for (int round = 0; round < 100000 && got < n_frames; round++) {
		f = ipc_queue_flush(&q, sv[0]);
		CHECK(f == 0 || f == 1);
		if (f < 0)
			break;
		got += read_frames(&r, sv[1], got, n_frames - got, flush_size);
	}
	CHECK_INT(got, ==, n_frames);
	CHECK_INT(ipc_queue_flush(&q, sv[0]), ==, 0);
	CHECK_INT(ipc_queue_pending(&q), ==, 0);
	CHECK_INT(ipc_reader_fill(&r, sv[1]), ==, -EAGAIN);

	ipc_queue_fini(&q);
	ipc_reader_fini(&r);
	close_pair(sv);
}

/* Many frames arriving while the reader holds part of a big one, and the
 * buffer never grows past one frame. */
static void test_mixed_sizes_one_buffer(void)
{
	struct ipc_queue q = { 0 };
	struct ipc_reader r = { 0 };
	unsigned total = 40, got = 0;
	int sv[2];

	make_pair(sv);
	for (unsigned i = 0; i < total; i++)
		CHECK_INT(push_pattern(&q, i, size_for(i * 7)), ==, 0);
	for (int round = 0; round < 100000 && got < total; round++) {
		const uint8_t *body;
		size_t len;
		int f = ipc_queue_flush(&q, sv[0]), n;
		CHECK(f == 0 || f == 1);
		n = ipc_reader_fill(&r, sv[1]);
		CHECK(n > 0 || n == -EAGAIN);
		while ((n = ipc_reader_next(&r, &body, &len)) == 1) {
			CHECK_INT(len, ==, size_for(got * 7));
			CHECK(body_ok(got, body, len));
			got++;
		}
		CHECK_INT(n, ==, 0);
		CHECK_INT(r.cap, <=, IPC_FRAME_HEADER + IPC_FRAME_MAX);
	}
	CHECK_INT(got, ==, total);
	ipc_queue_fini(&q);
	ipc_reader_fini(&r);
	close_pair(sv);
}

int main(void)
{
	check_watchdog(60);
	RUN(test_roundtrip_one_read);
	RUN(test_byte_by_byte);
	RUN(test_stream);
	RUN(test_frame_max);
	RUN(test_oversized_header);
	RUN(test_max_header_by_hand);
	RUN(test_queue_bound);
	RUN(test_eof);
	RUN(test_flush_full_peer);
	RUN(test_mixed_sizes_one_buffer);
	return check_exit();
}

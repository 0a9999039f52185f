/*
 * libpq's reads before login, vetted; see authguard.h.
 *
 * The guards are few (one per connection being opened) and recv() is
 * called by libpq, c-ares and little else, so a list serves.  A guard
 * knows its socket by descriptor and inode: libpq opens a new socket for
 * each address it tries, and the new one may get the old descriptor.
 */
/* glibc's fortified recv() is an inline definition of its own. */
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "authguard.h"
#include "common/util.h"

/* The backend's authentication request codes (pqcomm.h). */
enum {
	AUTH_REQ_OK = 0,
	AUTH_REQ_PASSWORD = 3,
	AUTH_REQ_MD5 = 5,
	AUTH_REQ_GSS = 7,
	AUTH_REQ_GSS_CONT = 8,
	AUTH_REQ_SSPI = 9,
	AUTH_REQ_SASL = 10,
	AUTH_REQ_SASL_CONT = 11,
	AUTH_REQ_SASL_FIN = 12,
};
/* libpq 15 refuses a longer authentication request. */
#define AUTH_REQ_MAX 2000

struct authguard {
	struct authguard *prev, *next;
	PGconn *conn;
	int fd;           /* the socket the state below is about */
	ino_t ino;
	uint64_t left;    /* bytes of a vetted message not read yet */
	bool tunnel;      /* the server said 'G': GSSAPI's handshake follows */
	bool heard;       /* a byte came from the server */
	bool closed_early; /* it closed before saying a word */
	bool waiting;
	const char *refused;
};

static struct authguard *guards;

struct authguard *authguard_watch(PGconn *conn)
{
	struct authguard *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->conn = conn;
	g->fd = -1;
	g->next = guards;
	if (guards)
		guards->prev = g;
	guards = g;
	return g;
}

void authguard_forget(struct authguard *g)
{
	if (!g)
		return;
	if (g->prev)
		g->prev->next = g->next;
	else
		guards = g->next;
	if (g->next)
		g->next->prev = g->prev;
	free(g);
}

bool authguard_closed_early(const struct authguard *g)
{
	return g && g->closed_early;
}

const char *authguard_refused(const struct authguard *g)
{
	return g ? g->refused : NULL;
}

bool authguard_waiting(const struct authguard *g)
{
	return g && g->waiting;
}

static uint32_t be32(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | b[3];
}

/* Why libpq must not read the authentication request m (whole, len its
 * length field), or NULL.  libpq 15 reads a request by its code, not by
 * its length: a SASL request's mechanisms up to an empty name, an MD5
 * request's four-byte salt, nothing after an AuthenticationOk; and it
 * goes on from where it stopped.  A request whose length disagrees would
 * leave libpq reading from inside what the guard takes for the next
 * message, unvetted: so the length must be what libpq will read. */
static const char *authguard_request_bad(const unsigned char *m,
					 uint32_t len)
{
	const unsigned char *body = m + 9, *end = m + 1 + len, *nul;

	switch (be32(m + 5)) {
	case AUTH_REQ_PASSWORD:
		return AUTHGUARD_CLEARTEXT;
	case AUTH_REQ_OK:
	case AUTH_REQ_GSS:
	case AUTH_REQ_SSPI:
		return len == 8 ? NULL : AUTHGUARD_MALFORMED;
	case AUTH_REQ_MD5:
		return len == 12 ? NULL : AUTHGUARD_MALFORMED;
	case AUTH_REQ_GSS_CONT:
	case AUTH_REQ_SASL_CONT:
	case AUTH_REQ_SASL_FIN:
		return NULL; /* libpq reads exactly the length */
	case AUTH_REQ_SASL:
		/* Names, each ending in a NUL, then an empty one: the last
		 * byte of the message. */
		while (body < end && *body) {
			nul = memchr(body, '\0', (size_t)(end - body));
			if (!nul)
				return AUTHGUARD_MALFORMED;
			body = nul + 1;
		}
		return body + 1 == end ? NULL : AUTHGUARD_MALFORMED;
	default:
		/* Kerberos 4/5, crypt(), SCM credentials: libpq 15 answers
		 * none of them. */
		return "asked for an authentication libpq does not support";
	}
}

size_t authguard_vet(uint64_t *left, const unsigned char *buf, size_t n,
		     const char **refused)
{
	size_t at = (size_t)MIN(*left, (uint64_t)n);
	uint64_t rest = *left - at;

	while (at < n) {
		size_t have = n - at, take;
		uint32_t len;
		if (have < 5)
			break;
		len = be32(buf + at + 1);
		/* libpq would refuse these too, but after reading on. */
		if (len < 4 || (buf[at] == 'R' && (len < 8 ||
						  len > AUTH_REQ_MAX))) {
			*refused = AUTHGUARD_MALFORMED;
			return 0;
		}
		if (buf[at] == 'R') {
			/* Taken whole or not at all. */
			if (have < (size_t)len + 1)
				break;
			*refused = authguard_request_bad(buf + at, len);
			if (*refused)
				return 0;
		}
		take = (size_t)MIN((uint64_t)len + 1, (uint64_t)have);
		rest = (uint64_t)len + 1 - take;
		at += take;
	}
	*left = rest;
	return at;
}

static ssize_t authguard_recv_vetted(struct authguard *g, int fd,
				     unsigned char *buf, size_t len);

/* Notes whether the server closed before sending anything: a server
 * that accepts a connection and drops it unanswered is dying (its
 * postmaster gone with connections still in its backlog). */
static ssize_t authguard_recv(struct authguard *g, int fd,
			      unsigned char *buf, size_t len)
{
	ssize_t n = authguard_recv_vetted(g, fd, buf, len);

	if (n > 0)
		g->heard = true;
	else if (!g->heard && (n == 0 || errno == ECONNRESET) &&
		 !g->refused)
		g->closed_early = true;
	return n;
}

static ssize_t authguard_recv_vetted(struct authguard *g, int fd,
				     unsigned char *buf, size_t len)
{
	ConnStatusType st = PQstatus(g->conn);
	struct stat s;
	uint64_t left;
	size_t take;
	ssize_t n;

	if (fstat(fd, &s) < 0)
		return -1;
	if (g->fd != fd || g->ino != s.st_ino) {
		g->fd = fd;
		g->ino = s.st_ino;
		g->left = 0;
		g->tunnel = false;
		g->heard = g->closed_early = false;
	}
	g->waiting = false;
	if (g->refused) {
		errno = ECONNRESET;
		return -1;
	}
	if (PQsslInUse(g->conn) || PQgssEncInUse(g->conn) || g->tunnel)
		return recvfrom(fd, buf, len, 0, NULL, NULL);
	/* The answer to libpq's TLS or GSSAPI request: one byte. */
	if (st == CONNECTION_SSL_STARTUP || st == CONNECTION_GSS_STARTUP) {
		n = recvfrom(fd, buf, MIN(len, (size_t)1), 0, NULL, NULL);
		if (n == 1 && st == CONNECTION_GSS_STARTUP && buf[0] == 'G')
			g->tunnel = true;
		return n;
	}
	n = recvfrom(fd, buf, len, MSG_PEEK, NULL, NULL);
	if (n <= 0)
		return n;
	left = g->left;
	take = authguard_vet(&left, buf, (size_t)n, &g->refused);
	if (g->refused) {
		errno = ECONNRESET;
		return -1;
	}
	if (take == 0) {
		/* Nothing whole yet.  A server that has closed its side will
		 * send no more: libpq may have the piece, and then the end
		 * (else it would wait for its deadline). */
		struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };
		if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLRDHUP))
			return recvfrom(fd, buf, (size_t)n, 0, NULL, NULL);
		g->waiting = true;
		errno = EAGAIN;
		return -1;
	}
	/* What was looked at is on the socket, and no one else reads it:
	 * the read takes all of it. */
	n = recvfrom(fd, buf, take, 0, NULL, NULL);
	if (n >= 0 && (size_t)n != take) {
		g->refused = "was read short";
		errno = ECONNRESET;
		return -1;
	}
	if (n > 0)
		g->left = left;
	return n;
}

static struct authguard *authguard_find(int fd)
{
	for (struct authguard *g = guards; g; g = g->next)
		if (PQsocket(g->conn) == fd)
			return g;
	return NULL;
}

/* Exported from dbswapd (dbswapd.dyn), so that libpq's calls land here;
 * everything not under watch goes on as before. */
ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	struct authguard *g = flags == 0 ? authguard_find(fd) : NULL;

	if (!g)
		return recvfrom(fd, buf, len, flags, NULL, NULL);
	return authguard_recv(g, fd, buf, len);
}

bool authguard_active(void)
{
	ssize_t (*found)(int, void *, size_t, int);

	/* The form POSIX gives for a function's address from dlsym(). */
	*(void **)&found = dlsym(RTLD_DEFAULT, "recv");
	return found == recv;
}

/*
 * Unit tests of agent/resolve.c against a fake DNS server in this process:
 * lookups run on the loop (the server answers from a loop callback of its
 * own, so a resolve that blocked would hang, and the watchdog fails it),
 * answers and errors reach the callback after resolve_start() returns,
 * the address cap holds, and a resolve freed while a query waits for a
 * server that never answers leaves nothing behind: no callback later, no
 * socket open, nothing in the loop.
 *
 * Then the probe's turns (probe.h) over the same server and loopback
 * sockets, no PostgreSQL needed: a host whose lookup never ends, or whose
 * server never answers, or an address of a name that never answers, is
 * given up after its share of the deadline and the next one is tried (a
 * refused connection shows it was); a lone host has the whole deadline.
 * And issue 15's: a host that holds the password is named by position,
 * and a server asking for the password in cleartext (its request split
 * across two writes) gets nothing after the start-up packet.
 *
 * The fake server knows ok.test (A 192.0.2.1, 192.0.2.2, AAAA
 * 2001:db8::5) and two.test (A 127.0.0.1, 127.0.0.2), says NXDOMAIN for
 * nx.test and never answers hole.test.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/authguard.h"
#include "agent/probe.h"
#include "agent/resolve.h"
#include "common/loop.h"
#include "common/util.h"
#include "tests/unit/check.h"

static struct loop *loop;
static int dns_fd = -1;
static char servers[64];
static int queries, hole_queries;

/* The fake server's reply to one query: header, the question copied, the
 * answers for its name and type. */
static void dns_event(struct loop_source *s, uint32_t events, void *data)
{
	unsigned char q[512], a[512];
	struct sockaddr_in from;
	socklen_t fromlen = sizeof(from);
	ssize_t n = recvfrom(dns_fd, q, sizeof(q), 0, (struct sockaddr *)&from,
			     &fromlen);
	size_t qend = 12, o;
	char name[256] = "";
	unsigned qtype, ancount = 0, rcode = 0;

	if (n < 12)
		return;
	queries++;
	while (qend < (size_t)n && q[qend] != 0) {
		size_t len = q[qend];
		if (strlen(name) + len + 2 >= sizeof(name) ||
		    qend + 1 + len >= (size_t)n)
			return;
		if (name[0])
			strcat(name, ".");
		strncat(name, (const char *)q + qend + 1, len);
		qend += 1 + len;
	}
	qend += 5; /* the root label, QTYPE, QCLASS */
	if (qend > (size_t)n)
		return;
	qtype = (unsigned)q[qend - 4] << 8 | q[qend - 3];
	if (streq(name, "hole.test")) {
		hole_queries++;
		return;
	}
	memcpy(a, q, qend);
	o = qend;
	if (streq(name, "two.test")) {
		static const unsigned char v4[][4] = { { 127, 0, 0, 1 },
						       { 127, 0, 0, 2 } };
		for (size_t i = 0; qtype == 1 && i < 2; i++, ancount++) {
			const unsigned char rr[] = { 0xc0, 12, 0, 1, 0, 1, 0,
						     0, 0, 60, 0, 4 };
			memcpy(a + o, rr, sizeof(rr));
			memcpy(a + o + sizeof(rr), v4[i], 4);
			o += sizeof(rr) + 4;
		}
	} else if (streq(name, "ok.test")) {
		static const unsigned char v4[][4] = { { 192, 0, 2, 1 },
						       { 192, 0, 2, 2 } };
		struct in6_addr v6;
		inet_pton(AF_INET6, "2001:db8::5", &v6);
		for (size_t i = 0; qtype == 1 && i < 2; i++, ancount++) {
			const unsigned char rr[] = { 0xc0, 12, 0, 1, 0, 1, 0,
						     0, 0, 60, 0, 4 };
			memcpy(a + o, rr, sizeof(rr));
			memcpy(a + o + sizeof(rr), v4[i], 4);
			o += sizeof(rr) + 4;
		}
		if (qtype == 28) {
			const unsigned char rr[] = { 0xc0, 12, 0, 28, 0, 1, 0,
						     0, 0, 60, 0, 16 };
			memcpy(a + o, rr, sizeof(rr));
			memcpy(a + o + sizeof(rr), &v6, 16);
			o += sizeof(rr) + 16;
			ancount++;
		}
	} else {
		rcode = 3; /* NXDOMAIN */
	}
	a[2] = 0x81;                  /* QR, RD */
	a[3] = (unsigned char)(0x80 | rcode); /* RA */
	a[4] = 0, a[5] = 1;           /* QDCOUNT */
	a[6] = 0, a[7] = (unsigned char)ancount;
	memset(a + 8, 0, 4);          /* NSCOUNT, ARCOUNT */
	(void)sendto(dns_fd, a, o, 0, (struct sockaddr *)&from, fromlen);
}

static void dns_start(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);

	dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (dns_fd < 0 || bind(dns_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(dns_fd, (struct sockaddr *)&sa, &len) < 0 ||
	    loop_add_fd(loop, dns_fd, EPOLLIN, dns_event, NULL, NULL) < 0) {
		perror("fake DNS server");
		exit(2);
	}
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", ntohs(sa.sin_port));
}

/* Sockets this process has open. */
static int count_sockets(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d))) {
		char path[300], target[64];
		ssize_t len;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len > 0) {
			target[len] = '\0';
			n += strncmp(target, "socket:", 7) == 0;
		}
	}
	if (d)
		closedir(d);
	return n;
}

struct seen {
	bool started;     /* resolve_start() has returned */
	bool early;       /* a callback came before that */
	int calls[4];
	bool free_in_callback;
	struct resolve *res;
};

static void on_done(struct resolve *res, size_t index, void *data)
{
	struct seen *s = data;

	if (!s->started)
		s->early = true;
	if (index < ARRAY_SIZE(s->calls))
		s->calls[index]++;
	if (s->free_in_callback) {
		resolve_free(res);
		s->res = NULL;
	}
}

static bool run_until(bool (*done)(const struct seen *), struct seen *s,
		      int max_ms)
{
	int64_t end = now_ms() + max_ms;

	while (!done(s) && now_ms() < end)
		loop_dispatch(loop, 20);
	return done(s);
}

static bool both_done(const struct seen *s)
{
	return s->calls[0] && s->calls[1];
}

static bool never(const struct seen *s)
{
	(void)s;
	return false;
}

static int start(struct seen *s, const char *const *names, size_t n,
		 size_t max_addrs)
{
	struct resolve_opts o = { .names = names, .n_names = n,
				  .max_addrs = max_addrs,
				  .servers = servers };
	int r = resolve_start(loop, &o, on_done, s, &s->res);

	s->started = true;
	return r;
}

static bool has(const char *const *addrs, size_t n, const char *a)
{
	for (size_t i = 0; i < n; i++)
		if (streq(addrs[i], a))
			return true;
	return false;
}

static void test_answers(void)
{
	const char *names[] = { "ok.test", "nx.test" };
	struct seen s = { 0 };
	const char *const *addrs;
	const char *err;
	size_t n;

	CHECK_INT(start(&s, names, 2, 8), ==, 0);
	CHECK(!s.early);
	CHECK(resolve_pending(s.res, 0));
	CHECK(run_until(both_done, &s, 5000));
	CHECK(!s.early);
	CHECK_INT(s.calls[0], ==, 1);
	CHECK_INT(s.calls[1], ==, 1);
	CHECK(!resolve_pending(s.res, 0));
	addrs = resolve_addrs(s.res, 0, &n, &err);
	CHECK(addrs != NULL);
	CHECK(err == NULL);
	CHECK_INT(n, ==, 3);
	if (addrs) {
		CHECK(has(addrs, n, "192.0.2.1"));
		CHECK(has(addrs, n, "192.0.2.2"));
		CHECK(has(addrs, n, "2001:db8::5"));
	}
	addrs = resolve_addrs(s.res, 1, &n, &err);
	CHECK(addrs == NULL);
	CHECK_INT(n, ==, 0);
	CHECK_STR(err, "Domain name not found");
	resolve_free(s.res);
}

static void test_cap(void)
{
	const char *names[] = { "ok.test" };
	struct seen s = { 0 };
	const char *err;
	size_t n;

	CHECK_INT(start(&s, names, 1, 2), ==, 0);
	s.calls[1] = 1; /* one name only */
	CHECK(run_until(both_done, &s, 5000));
	CHECK(resolve_addrs(s.res, 0, &n, &err) != NULL);
	CHECK_INT(n, ==, 2);
	resolve_free(s.res);
}

static void test_free_while_waiting(void)
{
	const char *names[] = { "hole.test", "ok.test" };
	struct seen s = { 0 };
	int sockets = count_sockets();

	hole_queries = 0;
	CHECK_INT(start(&s, names, 2, 8), ==, 0);
	/* ok.test is answered; hole.test waits. */
	s.calls[0] = 1;
	CHECK(run_until(both_done, &s, 5000));
	s.calls[0] = 0;
	(void)run_until(never, &s, 200);
	CHECK_INT(s.calls[0], ==, 0);
	CHECK(resolve_pending(s.res, 0));
	CHECK_INT(hole_queries, >=, 1);
	CHECK_INT(count_sockets(), >, sockets);
	resolve_free(s.res);
	CHECK_INT(count_sockets(), ==, sockets);
	/* Nothing fires later (c-ares's retry timers were the loop's). */
	(void)run_until(never, &s, 300);
	CHECK_INT(s.calls[0], ==, 0);
	CHECK_INT(s.calls[1], ==, 1);
}

static void test_free_in_callback(void)
{
	const char *names[] = { "nx.test", "ok.test", "hole.test" };
	struct seen s = { .free_in_callback = true };
	int sockets = count_sockets();

	CHECK_INT(start(&s, names, 3, 8), ==, 0);
	(void)run_until(never, &s, 500);
	/* The first report freed it: no second one, even for a name that
	 * was answered in the same round. */
	CHECK_INT(s.calls[0] + s.calls[1] + s.calls[2], ==, 1);
	CHECK(s.res == NULL);
	CHECK_INT(count_sockets(), ==, sockets);
}

static void test_free_at_once(void)
{
	const char *names[] = { "ok.test" };
	struct seen s = { 0 };

	CHECK_INT(start(&s, names, 1, 8), ==, 0);
	resolve_free(s.res);
	(void)run_until(never, &s, 200);
	CHECK_INT(s.calls[0], ==, 0);
}

/* The probe's turns.  A password in every value: no error may show it. */
#define SECRET "s3cr3t-pw"

/* A TCP socket on addr:*port (0: any, then set): listening, so that the
 * kernel completes every handshake and nothing is ever said (a hung
 * server), or only bound, so that connections are refused. */
static int tcp_socket(const char *addr, unsigned *port, bool listening)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)*port) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    (listening && listen(fd, 16) < 0) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

struct probe_seen {
	bool done, ok;
	char error[2048];
	long long elapsed_ms;
};

static void on_probe(const struct probe_result *res, void *data)
{
	struct probe_seen *s = data;

	s->done = true;
	s->ok = res->ok;
	snprintf(s->error, sizeof(s->error), "%s", res->error ? res->error : "");
	s->elapsed_ms = res->elapsed_us / 1000;
}

/* Runs a probe of conninfo to its end; fails the test if it has not ended
 * well after its deadline. */
static void probe_run(const char *conninfo, int timeout_ms,
		      struct probe_seen *s)
{
	struct probe_opts o = { .conninfo = conninfo,
				.timeout_ms = timeout_ms,
				.dns_servers = servers };
	struct probe *p = NULL;
	int64_t end;

	CHECK_INT(probe_start(loop, &o, on_probe, s, &p), ==, 0);
	end = now_ms() + timeout_ms + 5000;
	while (!s->done && now_ms() < end)
		loop_dispatch(loop, 50);
	CHECK(s->done);
	if (!s->done)
		probe_cancel(p);
	CHECK(!s->ok);
	CHECK(strstr(s->error, SECRET) == NULL);
	fprintf(stderr, "  after %lld ms: %s\n", s->elapsed_ms, s->error);
}

/* Whether text holds the string fmt makes; says which one if not. */
static bool PRINTF(2, 3) contains(const char *text, const char *fmt, ...)
{
	char want[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	if (strstr(text, want))
		return true;
	fprintf(stderr, "  missing: %s\n", want);
	return false;
}

/* Whether text says "no answer within N ms while " and what fmt makes,
 * with N within 5 % of ms: a turn begins when the probe comes to it, a
 * millisecond after the probe began, or more on a loaded machine. */
static bool PRINTF(3, 4) gave_up(const char *text, int ms, const char *fmt,
				 ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	for (const char *t = text; (t = strstr(t, "no answer within ")); t++) {
		int n = 0, end = 0;
		if (sscanf(t, "no answer within %d ms while %n", &n, &end) == 1 &&
		    end > 0 && strncmp(t + end, what, strlen(what)) == 0 &&
		    n >= ms - ms / 20 && n <= ms + ms / 20)
			return true;
	}
	fprintf(stderr, "  missing: no answer within ~%d ms while %s\n", ms,
		what);
	return false;
}

static void test_probe_lookup_hangs_first(void)
{
	struct probe_seen s = { 0 };
	unsigned closed = 0;
	int fd = tcp_socket("127.0.0.1", &closed, false);
	char conninfo[256];

	CHECK(fd >= 0);
	snprintf(conninfo, sizeof(conninfo), "host=hole.test,127.0.0.1 "
		 "port=%u user=u password=" SECRET " dbname=d", closed);
	probe_run(conninfo, 2000, &s);
	/* Half the deadline each: the lookup is given up, the next host is
	 * tried (and refused) long before the deadline. */
	CHECK(gave_up(s.error, 1000, "resolving host \"hole.test\""));
	CHECK(contains(s.error, "\"127.0.0.1\", port %u failed: Connection "
		       "refused", closed));
	CHECK_INT(s.elapsed_ms, <, 2000);
	close(fd);
}

static void test_probe_server_hangs_first(void)
{
	struct probe_seen s = { 0 };
	unsigned hung = 0, closed = 0;
	int hfd = tcp_socket("127.0.0.1", &hung, true);
	int cfd = tcp_socket("127.0.0.1", &closed, false);
	char conninfo[256];

	CHECK(hfd >= 0 && cfd >= 0);
	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1,127.0.0.1 "
		 "port=%u,%u user=u password=" SECRET " dbname=d", hung,
		 closed);
	probe_run(conninfo, 2000, &s);
	CHECK(gave_up(s.error, 1000, "connecting to \"127.0.0.1\", port %u",
		      hung));
	CHECK(contains(s.error, "\"127.0.0.1\", port %u failed: Connection "
		       "refused", closed));
	CHECK_INT(s.elapsed_ms, <, 2000);
	close(hfd);
	close(cfd);
}

/* One name, two addresses, the first hung: each address has half the
 * name's turn (here the whole deadline). */
static void test_probe_address_hangs_first(void)
{
	const char *names[] = { "two.test" };
	struct seen rs = { 0 };
	struct probe_seen s = { 0 };
	const char *const *addrs;
	const char *err;
	char first[64] = "", second[64] = "", conninfo[256];
	unsigned port = 0;
	int hfd = -1, cfd = -1;
	size_t n = 0;

	/* The order c-ares sorts them in (RFC 6724) decides which hangs. */
	CHECK_INT(start(&rs, names, 1, 8), ==, 0);
	rs.calls[1] = 1;
	CHECK(run_until(both_done, &rs, 5000));
	addrs = resolve_addrs(rs.res, 0, &n, &err);
	CHECK_INT(n, ==, 2);
	if (addrs && n == 2) {
		snprintf(first, sizeof(first), "%s", addrs[0]);
		snprintf(second, sizeof(second), "%s", addrs[1]);
	}
	resolve_free(rs.res);
	for (int tries = 0; tries < 20 && cfd < 0 && first[0]; tries++) {
		port = 0;
		hfd = tcp_socket(first, &port, true);
		cfd = hfd < 0 ? -1 : tcp_socket(second, &port, false);
		if (cfd < 0 && hfd >= 0)
			close(hfd);
	}
	CHECK(cfd >= 0);
	snprintf(conninfo, sizeof(conninfo), "host=two.test port=%u user=u "
		 "password=" SECRET " dbname=d", port);
	probe_run(conninfo, 2000, &s);
	CHECK(gave_up(s.error, 1000, "connecting to \"two.test\" (%s), "
		      "port %u", first, port));
	CHECK(contains(s.error, "\"two.test\" (%s), port %u failed: "
		       "Connection refused", second, port));
	CHECK_INT(s.elapsed_ms, <, 2000);
	if (cfd >= 0) {
		close(hfd);
		close(cfd);
	}
}

/* Three hosts, 2400 ms: a turn is never cut below the floor (1000 ms), so
 * the first two hung servers take 1000 ms each and the third has the
 * 400 ms left, enough to be refused. */
static void test_probe_turn_floor(void)
{
	struct probe_seen s = { 0 };
	unsigned hung1 = 0, hung2 = 0, closed = 0;
	int h1 = tcp_socket("127.0.0.1", &hung1, true);
	int h2 = tcp_socket("127.0.0.1", &hung2, true);
	int c = tcp_socket("127.0.0.1", &closed, false);
	char conninfo[256];

	CHECK(h1 >= 0 && h2 >= 0 && c >= 0);
	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1,127.0.0.1,"
		 "127.0.0.1 port=%u,%u,%u user=u password=" SECRET
		 " dbname=d", hung1, hung2, closed);
	probe_run(conninfo, 2400, &s);
	CHECK(gave_up(s.error, 1000, "connecting to \"127.0.0.1\", port %u",
		      hung1));
	CHECK(gave_up(s.error, 1000, "connecting to \"127.0.0.1\", port %u",
		      hung2));
	CHECK(contains(s.error, "port %u failed: Connection refused", closed));
	CHECK_INT(s.elapsed_ms, >=, 1990);
	close(h1);
	close(h2);
	close(c);
}

/* A lone host keeps the whole deadline, and the message says so. */
static void test_probe_lone_host(void)
{
	struct probe_seen s = { 0 };
	unsigned hung = 0;
	int fd = tcp_socket("127.0.0.1", &hung, true);
	char conninfo[256];

	CHECK(fd >= 0);
	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%u user=u "
		 "password=" SECRET " dbname=d", hung);
	probe_run(conninfo, 1000, &s);
	CHECK(contains(s.error, "no answer within 1000 ms while connecting "
		       "to \"127.0.0.1\""));
	CHECK_INT(s.elapsed_ms, >=, 990);

	memset(&s, 0, sizeof(s));
	probe_run("host=hole.test user=u password=" SECRET " dbname=d", 1000,
		  &s);
	CHECK(contains(s.error, "no answer within 1000 ms while resolving "
		       "host \"hole.test\""));
	CHECK_INT(s.elapsed_ms, >=, 990);
	close(fd);
}

/* A host holding the value's password is never named: its lookup's
 * failure gives its position (issue 15). */
static void test_probe_host_by_position(void)
{
	struct probe_seen s = { 0 };
	unsigned closed = 0;
	int fd = tcp_socket("127.0.0.1", &closed, false);
	char conninfo[256];

	CHECK(fd >= 0);
	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1,nx.test port=%u "
		 "user=u password=nx.test dbname=d", closed);
	probe_run(conninfo, 2000, &s);
	CHECK(contains(s.error, "could not resolve host 2 of 2: "));
	CHECK(strstr(s.error, "nx.test") == NULL);
	close(fd);
}

/* A fake server that asks for the password in cleartext, its request
 * split in two writes 30 ms apart (the probe must wait for the rest
 * without spinning or letting libpq read it), and keeps what the client
 * sends after the start-up packet.  With sasl, an AuthenticationSASL
 * comes first, split in the middle, and the request rides on its tail:
 * libpq reads the head, and the guard must know where the next message
 * starts (and hold back the tail with it). */
struct cleartext_server {
	bool sasl;
	int listen_fd, fd;
	struct loop_source *listen_src, *src;
	struct loop_timer *timer;
	unsigned char in[4096];
	size_t in_len;
	bool started;  /* the start-up packet came */
	size_t after;  /* bytes sent after it */
	bool got_p;    /* a PasswordMessage */
	bool closed;
};

static void cleartext_rest(struct loop_timer *t, void *data)
{
	struct cleartext_server *cs = data;
	static const char rest[] = "\0\0\0\x03";
	static const char sasl_rest[] = "SHA-256\0\0R\0\0\0\x08\0\0\0\x03";

	(void)t;
	if (cs->sasl)
		CHECK_INT(write(cs->fd, sasl_rest, sizeof(sasl_rest) - 1),
			  ==, (ssize_t)sizeof(sasl_rest) - 1);
	else
		CHECK_INT(write(cs->fd, rest, sizeof(rest) - 1), ==, 4);
}

static void cleartext_event(struct loop_source *src, uint32_t events,
			    void *data)
{
	struct cleartext_server *cs = data;
	ssize_t n = read(cs->fd, cs->in + cs->in_len,
			 sizeof(cs->in) - cs->in_len);

	(void)src;
	(void)events;
	if (n <= 0) {
		cs->closed = true;
		loop_remove_fd(cs->src);
		cs->src = NULL;
		return;
	}
	if (cs->started) {
		cs->got_p |= cs->after == 0 && cs->in[cs->in_len] == 'p';
		cs->after += (size_t)n;
		return;
	}
	cs->in_len += (size_t)n;
	while (cs->in_len >= 8) {
		size_t len = (size_t)cs->in[0] << 24 | (size_t)cs->in[1] << 16 |
			     (size_t)cs->in[2] << 8 | cs->in[3];
		if (cs->in_len < len)
			return;
		if (len == 8 && cs->in[4] == 0x04 && cs->in[5] == 0xd2) {
			/* SSLRequest or GSSENCRequest: no. */
			CHECK_INT(write(cs->fd, "N", 1), ==, 1);
			memmove(cs->in, cs->in + 8, cs->in_len - 8);
			cs->in_len -= 8;
			continue;
		}
		cs->started = true;
		cs->in_len = 0;
		/* 'R', length 8, then (30 ms later) code 3; or 'R',
		 * length 23, code 10 (SASL), "SCRAM-", then "SHA-256\0\0"
		 * and the request. */
		if (cs->sasl)
			CHECK_INT(write(cs->fd, "R\0\0\0\x17\0\0\0\x0aSCRAM-",
					15), ==, 15);
		else
			CHECK_INT(write(cs->fd, "R\0\0\0\x08", 5), ==, 5);
		loop_timer_arm_in(cs->timer, 30);
		return;
	}
}

static void cleartext_accept(struct loop_source *src, uint32_t events,
			     void *data)
{
	struct cleartext_server *cs = data;

	(void)src;
	(void)events;
	if (cs->fd >= 0)
		return;
	cs->fd = accept(cs->listen_fd, NULL, NULL);
	CHECK(cs->fd >= 0);
	if (cs->fd >= 0)
		CHECK_INT(loop_add_fd(loop, cs->fd, EPOLLIN, cleartext_event,
				      cs, &cs->src), ==, 0);
}

static void cleartext_run(bool sasl)
{
	struct cleartext_server cs = { .fd = -1, .sasl = sasl };
	struct probe_seen s = { 0 };
	unsigned port = 0;
	char conninfo[256];
	int64_t end;

	cs.listen_fd = tcp_socket("127.0.0.1", &port, true);
	CHECK(cs.listen_fd >= 0);
	cs.timer = loop_timer_new(loop, cleartext_rest, &cs);
	CHECK(cs.timer != NULL);
	CHECK_INT(loop_add_fd(loop, cs.listen_fd, EPOLLIN, cleartext_accept,
			      &cs, &cs.listen_src), ==, 0);
	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%u user=u "
		 "password=" SECRET " dbname=d", port);
	CHECK(authguard_active());
	probe_run(conninfo, 5000, &s);
	CHECK(contains(s.error, "the server at \"127.0.0.1\", port %u asked "
		       "for the password in cleartext: refused", port));
	CHECK_INT(s.elapsed_ms, <, 4000);
	/* The server sees the connection closed, and nothing after the
	 * start-up packet. */
	end = now_ms() + 2000;
	while (!cs.closed && now_ms() < end)
		loop_dispatch(loop, 50);
	CHECK(cs.started);
	CHECK(cs.closed);
	CHECK(!cs.got_p);
	CHECK_INT(cs.after, ==, 0);
	loop_remove_fd(cs.src);
	loop_remove_fd(cs.listen_src);
	loop_timer_free(cs.timer);
	if (cs.fd >= 0)
		close(cs.fd);
	close(cs.listen_fd);
}

static void test_probe_cleartext_refused(void)
{
	cleartext_run(false);
	cleartext_run(true);
}

int main(void)
{
	check_watchdog(30);
	if (loop_new(&loop) < 0)
		return 2;
	dns_start();

	RUN(test_answers);
	RUN(test_cap);
	RUN(test_free_while_waiting);
	RUN(test_free_in_callback);
	RUN(test_free_at_once);
	RUN(test_probe_lookup_hangs_first);
	RUN(test_probe_server_hangs_first);
	RUN(test_probe_address_hangs_first);
	RUN(test_probe_turn_floor);
	RUN(test_probe_lone_host);
	RUN(test_probe_host_by_position);
	RUN(test_probe_cleartext_refused);
	CHECK_INT(queries, >, 0);

	loop_free(loop);
	close(dns_fd);
	return check_exit();
}

/*
 * c-ares on the agent's loop; see resolve.h.
 *
 * c-ares tells us which sockets it wants watched (the socket-state
 * callback) and when it next needs to time out a query (ares_timeout());
 * the loop watches those and calls ares_process_fd().  A fresh channel per
 * resolve reads resolv.conf anew, so a DNS server changed by DHCP or by
 * the admin counts from the next check, and cancelling is ares_destroy().
 *
 * c-ares may finish a lookup inside ares_getaddrinfo() (an /etc/hosts hit)
 * or inside ares_process_fd(), where freeing the channel is not allowed.
 * So its callbacks only record results, and the caller hears of them from
 * resolve_flush(), outside every c-ares call.
 */
#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "common/loop.h"
#include "common/util.h"
#include "resolve.h"

struct resolve_sock {
	struct resolve *res;
	int fd;
	struct loop_source *src;
	struct resolve_sock *next;
};

struct resolve_name {
	struct resolve *res;
	size_t index;
	bool done, reported;
	bool unwatched; /* failed for want of a socket in the loop */
	int status;     /* ARES_SUCCESS or c-ares's error */
	char **addrs;
	size_t n_addrs;
};

struct resolve {
	struct loop *loop;
	ares_channel channel;
	bool have_channel;
	struct loop_timer *timer;
	struct resolve_sock *socks;
	struct resolve_name *names;
	size_t n_names, max_addrs;
	bool flushing;   /* in resolve_flush(): freeing waits for its end */
	bool dead;       /* resolve_free() was called during the flush */
	bool destroying; /* in ares_destroy(): record nothing */
	int sock_error;  /* a socket the loop could not watch */
	resolve_fn *fn;
	void *data;
};

static void resolve_flush(struct resolve *res);

static struct resolve_sock **resolve_find_sock(struct resolve *res, int fd)
{
	struct resolve_sock **p = &res->socks;

	while (*p && (*p)->fd != fd)
		p = &(*p)->next;
	return p;
}

static void resolve_drop_sock(struct resolve_sock **p)
{
	struct resolve_sock *s = *p;

	*p = s->next;
	loop_remove_fd(s->src);
	free(s);
}

/* After any work of c-ares: report what finished (and, when a socket
 * could not be watched, fail what would wait for it in vain), else wait
 * for c-ares's next retransmission or deadline. */
static void resolve_after(struct resolve *res)
{
	struct timeval tv, *next;

	for (size_t i = 0; i < res->n_names; i++) {
		const struct resolve_name *n = &res->names[i];
		if ((n->done && !n->reported) || (!n->done && res->sock_error)) {
			resolve_flush(res);
			return;
		}
	}
	next = ares_timeout(res->channel, NULL, &tv);
	if (next)
		loop_timer_arm_in(res->timer, (int64_t)next->tv_sec * 1000 +
						      (next->tv_usec + 999) / 1000);
	else
		loop_timer_disarm(res->timer);
}

static void resolve_sock_event(struct loop_source *src, uint32_t events,
			       void *data)
{
	struct resolve_sock *s = data;
	/* c-ares may close the socket, and we free s, inside
	 * ares_process_fd(). */
	struct resolve *res = s->res;
	int fd = s->fd;

	ares_process_fd(res->channel,
			events & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd
								 : ARES_SOCKET_BAD,
			events & EPOLLOUT ? fd : ARES_SOCKET_BAD);
	resolve_after(res);
}

static void resolve_timer_fire(struct loop_timer *t, void *data)
{
	struct resolve *res = data;

	/* No socket: c-ares only looks at its queries' deadlines. */
	ares_process_fd(res->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	resolve_after(res);
}

static void resolve_sock_state(void *data, ares_socket_t fd, int readable,
			       int writable)
{
	struct resolve *res = data;
	struct resolve_sock **p = resolve_find_sock(res, fd), *s;
	uint32_t events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
	int r;

	if (!events) {
		/* Called before c-ares closes fd: out of epoll first. */
		if (*p)
			resolve_drop_sock(p);
		return;
	}
	if (*p) {
		r = loop_mod_fd((*p)->src, events);
		if (r < 0)
			res->sock_error = r;
		return;
	}
	if (res->destroying)
		return;
	s = zalloc(sizeof(*s));
	if (!s) {
		res->sock_error = -ENOMEM;
		return;
	}
	s->res = res;
	s->fd = fd;
	r = loop_add_fd(res->loop, fd, events, resolve_sock_event, s, &s->src);
	if (r < 0) {
		free(s);
		res->sock_error = r;
		return;
	}
	s->next = res->socks;
	res->socks = s;
}

static void resolve_addrinfo_done(void *arg, int status, int timeouts,
				  struct ares_addrinfo *ai)
{
	struct resolve_name *n = arg;
	char buf[INET6_ADDRSTRLEN];
	size_t count = 0;

	(void)timeouts;
	/* Destroyed, or already failed for want of a watched socket. */
	if (n->res->destroying || n->done) {
		if (ai)
			ares_freeaddrinfo(ai);
		return;
	}
	n->done = true;
	n->status = status;
	if (status != ARES_SUCCESS || !ai)
		goto out;
	for (struct ares_addrinfo_node *a = ai->nodes; a; a = a->ai_next)
		count++;
	count = MIN(count, n->res->max_addrs);
	n->addrs = calloc(count ? count : 1, sizeof(*n->addrs));
	if (!n->addrs) {
		n->status = ARES_ENOMEM;
		goto out;
	}
	for (struct ares_addrinfo_node *a = ai->nodes;
	     a && n->n_addrs < count; a = a->ai_next) {
		const void *p;
		if (a->ai_family == AF_INET)
			p = &((const struct sockaddr_in *)(const void *)
				      a->ai_addr)->sin_addr;
		else if (a->ai_family == AF_INET6)
			p = &((const struct sockaddr_in6 *)(const void *)
				      a->ai_addr)->sin6_addr;
		else
			continue;
		if (!inet_ntop(a->ai_family, p, buf, sizeof(buf)))
			continue;
		n->addrs[n->n_addrs] = strdup(buf);
		if (!n->addrs[n->n_addrs]) {
			n->status = ARES_ENOMEM;
			goto out;
		}
		n->n_addrs++;
	}
	if (n->n_addrs == 0)
		n->status = ARES_ENODATA;
out:
	if (ai)
		ares_freeaddrinfo(ai);
}

static void resolve_destroy(struct resolve *res)
{
	if (res->have_channel) {
		/* Pending lookups end with ARES_EDESTRUCTION, ignored; each
		 * socket is dropped from the loop before it is closed. */
		res->destroying = true;
		ares_destroy(res->channel);
	}
	while (res->socks)
		resolve_drop_sock(&res->socks);
	loop_timer_free(res->timer);
	for (size_t i = 0; i < res->n_names; i++) {
		for (size_t j = 0; j < res->names[i].n_addrs; j++)
			free(res->names[i].addrs[j]);
		free(res->names[i].addrs);
	}
	free(res->names);
	free(res);
}

void resolve_free(struct resolve *res)
{
	if (!res)
		return;
	if (res->flushing) {
		res->dead = true;
		return;
	}
	resolve_destroy(res);
}

/* Tells the caller of every lookup that finished, one by one, until one
 * callback frees the resolve. */
static void resolve_flush(struct resolve *res)
{
	res->flushing = true;
	for (size_t i = 0; i < res->n_names && !res->dead; i++) {
		struct resolve_name *n = &res->names[i];
		if (!n->done && res->sock_error) {
			n->done = n->unwatched = true;
			n->status = ARES_ECONNREFUSED;
		}
		if (!n->done || n->reported)
			continue;
		n->reported = true;
		res->fn(res, i, res->data);
	}
	res->flushing = false;
	if (res->dead) {
		resolve_destroy(res);
		return;
	}
	resolve_after(res);
}

/* c-ares wants ares_library_init() before any channel; on Linux it only
 * counts, but the contract is kept.  The agent is single-threaded. */
static int resolve_library_init(void)
{
	static bool done;

	if (!done && ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS)
		done = true;
	return done ? 0 : -EIO;
}

int resolve_start(struct loop *loop, const struct resolve_opts *o,
		  resolve_fn *fn, void *data, struct resolve **out)
{
	struct ares_options ao = { 0 };
	struct ares_addrinfo_hints hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
	};
	struct resolve *res;
	int r;

	*out = NULL;
	r = resolve_library_init();
	if (r < 0)
		return r;
	res = zalloc(sizeof(*res));
	if (!res)
		return -ENOMEM;
	res->loop = loop;
	res->fn = fn;
	res->data = data;
	res->max_addrs = o->max_addrs;
	res->names = calloc(o->n_names ? o->n_names : 1, sizeof(*res->names));
	res->timer = loop_timer_new(loop, resolve_timer_fire, res);
	if (!res->names || !res->timer) {
		r = -ENOMEM;
		goto err_res;
	}
	res->n_names = o->n_names;
	ao.sock_state_cb = resolve_sock_state;
	ao.sock_state_cb_data = res;
	r = ares_init_options(&res->channel, &ao, ARES_OPT_SOCK_STATE_CB);
	if (r != ARES_SUCCESS) {
		r = r == ARES_ENOMEM ? -ENOMEM : -EIO;
		goto err_res;
	}
	res->have_channel = true;
	if (o->servers &&
	    ares_set_servers_ports_csv(res->channel, o->servers) != ARES_SUCCESS) {
		r = -EINVAL;
		goto err_res;
	}
	for (size_t i = 0; i < o->n_names; i++) {
		res->names[i].res = res;
		res->names[i].index = i;
		ares_getaddrinfo(res->channel, o->names[i], NULL, &hints,
				 resolve_addrinfo_done, &res->names[i]);
	}
	/* Lookups that ended at once (an /etc/hosts hit) are reported from
	 * the loop, after this returns: the timer, due now, flushes them
	 * and then follows c-ares's deadlines. */
	loop_timer_arm_in(res->timer, 0);
	*out = res;
	return 0;

err_res:
	resolve_destroy(res);
	return r;
}

const char *const *resolve_addrs(const struct resolve *res, size_t index,
				 size_t *n, const char **error)
{
	const struct resolve_name *name = &res->names[index];

	*n = 0;
	*error = NULL;
	if (!name->done) {
		*error = "still looking";
		return NULL;
	}
	if (name->status != ARES_SUCCESS) {
		*error = name->unwatched ? "the agent cannot watch the "
					   "resolver's socket"
					 : ares_strerror(name->status);
		return NULL;
	}
	*n = name->n_addrs;
	return (const char *const *)name->addrs;
}

bool resolve_pending(const struct resolve *res, size_t index)
{
	return !res->names[index].done;
}

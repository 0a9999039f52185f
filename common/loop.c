/*
 * epoll + timer list event loop; see loop.h.
 *
 * Timers are few (one or two per target, one per client at most), so the
 * next deadline is found by scanning a list rather than keeping a heap.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "loop.h"
#include "util.h"

#define LOOP_MAX_EVENTS 64

struct loop_source {
	struct loop *loop;
	int fd;
	bool dead;
	loop_fd_fn *fn;
	void *data;
	struct loop_source *prev, *next; /* registered sources */
	struct loop_source *next_dead;
};

struct loop_timer {
	struct loop *loop;
	loop_timer_fn *fn;
	void *data;
	int64_t deadline; /* -1 when disarmed */
	uint64_t armed_round; /* loop->round when last armed */
	struct loop_timer *prev, *next;
};

struct loop {
	int epfd;
	bool quit;
	struct loop_timer *timers;
	uint64_t round; /* counts loop_fire_timers() runs */
	struct loop_source *sources;
	struct loop_source *dead; /* removed during dispatch, freed after */
	unsigned n_sources;
};

int loop_new(struct loop **out)
{
	struct loop *loop = zalloc(sizeof(*loop));

	if (!loop)
		return -ENOMEM;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		int r = neg_errno();
		free(loop);
		return r;
	}
	*out = loop;
	return 0;
}

static void loop_free_dead(struct loop *loop)
{
	while (loop->dead) {
		struct loop_source *s = loop->dead;
		loop->dead = s->next_dead;
		free(s);
	}
}

void loop_free(struct loop *loop)
{
	if (!loop)
		return;
	while (loop->sources)
		loop_remove_fd(loop->sources);
	loop_free_dead(loop);
	while (loop->timers)
		loop_timer_free(loop->timers);
	close(loop->epfd);
	free(loop);
}

int loop_add_fd(struct loop *loop, int fd, uint32_t events, loop_fd_fn *fn,
		void *data, struct loop_source **out)
{
	struct loop_source *s = zalloc(sizeof(*s));
	struct epoll_event ev = { .events = events };

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->fd = fd;
	s->fn = fn;
	s->data = data;
	ev.data.ptr = s;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = neg_errno();
		free(s);
		return r;
	}
	loop->n_sources++;
	s->next = loop->sources;
	if (loop->sources)
		loop->sources->prev = s;
	loop->sources = s;
	if (out)
		*out = s;
	return 0;
}

int loop_mod_fd(struct loop_source *s, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = s };

	if (epoll_ctl(s->loop->epfd, EPOLL_CTL_MOD, s->fd, &ev) < 0)
		return neg_errno();
	return 0;
}

int loop_source_fd(const struct loop_source *s)
{
	return s->fd;
}

void loop_remove_fd(struct loop_source *s)
{
	if (!s || s->dead)
		return;
	epoll_ctl(s->loop->epfd, EPOLL_CTL_DEL, s->fd, NULL);
	s->dead = true;
	s->fd = -1;
	s->loop->n_sources--;
	if (s->prev)
		s->prev->next = s->next;
	else
		s->loop->sources = s->next;
	if (s->next)
		s->next->prev = s->prev;
	/* Events for s may still sit in the current batch: free it later. */
	s->next_dead = s->loop->dead;
	s->loop->dead = s;
}

struct loop_timer *loop_timer_new(struct loop *loop, loop_timer_fn *fn,
				  void *data)
{
	struct loop_timer *t = zalloc(sizeof(*t));

	if (!t)
		return NULL;
	t->loop = loop;
	t->fn = fn;
	t->data = data;
	t->deadline = -1;
	t->next = loop->timers;
	if (loop->timers)
		loop->timers->prev = t;
	loop->timers = t;
	return t;
}

void loop_timer_arm(struct loop_timer *t, int64_t deadline_ms)
{
	t->deadline = deadline_ms < 0 ? 0 : deadline_ms;
	t->armed_round = t->loop->round;
}

void loop_timer_arm_in(struct loop_timer *t, int64_t delay_ms)
{
	loop_timer_arm(t, now_ms() + MAX(delay_ms, 0));
}

void loop_timer_disarm(struct loop_timer *t)
{
	if (t)
		t->deadline = -1;
}

bool loop_timer_armed(const struct loop_timer *t)
{
	return t && t->deadline >= 0;
}

int64_t loop_timer_deadline(const struct loop_timer *t)
{
	return t ? t->deadline : -1;
}

void loop_timer_free(struct loop_timer *t)
{
	if (!t)
		return;
	if (t->prev)
		t->prev->next = t->next;
	else
		t->loop->timers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	free(t);
}

/* Milliseconds until the next timer, 0 if one is due, -1 if none. */
static int loop_next_timeout(struct loop *loop)
{
	int64_t next = -1, now = now_ms();

	for (struct loop_timer *t = loop->timers; t; t = t->next)
		if (t->deadline >= 0 && (next < 0 || t->deadline < next))
			next = t->deadline;
	if (next < 0)
		return -1;
	if (next <= now)
		return 0;
	return (int)MIN(next - now, 60 * 60 * 1000);
}

static void loop_fire_timers(struct loop *loop)
{
	int64_t now = now_ms();
	/* Timers armed from here on carry this round's number and wait for
	 * the next round: one re-armed for "now" or the past never spins. */
	uint64_t round = ++loop->round;

	for (;;) {
		struct loop_timer *due = NULL;

		/* A callback may free or arm any timer: rescan after each
		 * one.  Earliest deadline first. */
		for (struct loop_timer *t = loop->timers; t; t = t->next)
			if (t->deadline >= 0 && t->deadline <= now &&
			    t->armed_round != round &&
			    (!due || t->deadline < due->deadline))
				due = t;
		if (!due)
			return;
		due->deadline = -1;
		due->fn(due, due->data);
	}
}

int loop_dispatch(struct loop *loop, int max_wait_ms)
{
	struct epoll_event events[LOOP_MAX_EVENTS];
	int timeout = loop_next_timeout(loop);
	int n;

	if (max_wait_ms >= 0 && (timeout < 0 || max_wait_ms < timeout))
		timeout = max_wait_ms;
	n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, timeout);
	if (n < 0)
		return errno == EINTR ? 0 : neg_errno();
	for (int i = 0; i < n; i++) {
		struct loop_source *s = events[i].data.ptr;
		if (!s->dead)
			s->fn(s, events[i].events, s->data);
	}
	loop_free_dead(loop);
	loop_fire_timers(loop);
	loop_free_dead(loop);
	return 0;
}

int loop_run(struct loop *loop)
{
	loop->quit = false;
	while (!loop->quit) {
		int r = loop_dispatch(loop, -1);
		if (r < 0)
			return r;
	}
	return 0;
}

void loop_quit(struct loop *loop)
{
	loop->quit = true;
}

/*
 * Unit tests for the event loop: fd callbacks, timers in deadline order,
 * sources and timers removed or freed from inside callbacks (run under ASan
 * to catch use after free), re-arming, and loop_free() with everything
 * still registered (LeakSanitizer).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/loop.h"
#include "common/util.h"
#include "tests/unit/check.h"

static void make_pipe(int p[2])
{
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
		perror("pipe2");
		exit(2);
	}
}

static void poke(int fd)
{
	if (write(fd, "x", 1) != 1) {
		perror("write");
		exit(2);
	}
}

static void drain(int fd)
{
	char buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* fd sources */

struct fd_probe {
	int calls;
	uint32_t events;
	struct loop_source *source;
	struct loop_source *seen_source;
};

static void on_readable(struct loop_source *s, uint32_t events, void *data)
{
	struct fd_probe *p = data;

	p->calls++;
	p->events = events;
	p->seen_source = s;
	drain(loop_source_fd(s));
}

static void test_fd_callbacks(void)
{
	struct loop *loop = NULL;
	struct fd_probe probe = { 0 };
	int p[2];

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;
	make_pipe(p);
	CHECK_INT(loop_add_fd(loop, p[0], EPOLLIN, on_readable, &probe,
			      &probe.source),
		  ==, 0);
	CHECK_INT(loop_source_fd(probe.source), ==, p[0]);

	/* Nothing to read: a zero wait returns at once, no call. */
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(probe.calls, ==, 0);

	poke(p[1]);
	CHECK_INT(loop_dispatch(loop, 1000), ==, 0);
	CHECK_INT(probe.calls, ==, 1);
	CHECK(probe.events & EPOLLIN);
	CHECK(probe.seen_source == probe.source);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(probe.calls, ==, 1);

	/* Interest can change: EPOLLOUT on the write end... */
	struct fd_probe wprobe = { 0 };
	CHECK_INT(loop_add_fd(loop, p[1], 0, on_readable, &wprobe,
			      &wprobe.source),
		  ==, 0);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(wprobe.calls, ==, 0);
	CHECK_INT(loop_mod_fd(wprobe.source, EPOLLOUT), ==, 0);
	CHECK_INT(loop_dispatch(loop, 1000), ==, 0);
	CHECK_INT(wprobe.calls, ==, 1);
	CHECK(wprobe.events & EPOLLOUT);
	CHECK_INT(loop_mod_fd(wprobe.source, 0), ==, 0);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(wprobe.calls, ==, 1);

	/* ...and the peer closing shows as EPOLLHUP on the read end. */
	loop_remove_fd(wprobe.source);
	close(p[1]);
	CHECK_INT(loop_dispatch(loop, 1000), ==, 0);
	CHECK_INT(probe.calls, ==, 2);
	CHECK(probe.events & EPOLLHUP);

	/* Errors come back as negative errno; nothing is registered. */
	CHECK_INT(loop_add_fd(loop, -1, EPOLLIN, on_readable, NULL, NULL), ==,
		  -EBADF);
	CHECK_INT(loop_add_fd(loop, p[0], EPOLLIN, on_readable, NULL, NULL),
		  ==, -EEXIST);

	/* A source removed outside dispatch gets no more calls. */
	loop_remove_fd(probe.source);
	loop_remove_fd(NULL);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(probe.calls, ==, 2);

	close(p[0]);
	loop_free(loop);
	loop_free(NULL);
}

/* Two sources that each remove the other: both have an event in the same
 * batch, so the second must be skipped without touching freed memory. */
struct pair {
	struct loop_source *a, *b;
	int fa, fb;
	int calls_a, calls_b;
	bool close_other, reuse_fd;
	int new_pipe[2];
	struct loop_source *fresh;
	int calls_fresh;
};

static void on_fresh(struct loop_source *s, uint32_t events, void *data)
{
	struct pair *p = data;

	p->calls_fresh++;
	drain(loop_source_fd(s));
}

static void remove_other(struct pair *p, struct loop_source *other,
			 int other_fd)
{
	loop_remove_fd(other);
	loop_remove_fd(other); /* twice is harmless */
	if (p->close_other)
		close(other_fd);
	if (p->reuse_fd) {
		/* The closed fd's number comes straight back: its stale
		 * event in this batch must not reach the new source. */
		make_pipe(p->new_pipe);
	}
}

static void on_a(struct loop_source *s, uint32_t events, void *data)
{
	struct pair *p = data;

	p->calls_a++;
	drain(p->fa);
	remove_other(p, p->b, p->fb);
	loop_remove_fd(s);
}

static void on_b(struct loop_source *s, uint32_t events, void *data)
{
	struct pair *p = data;

	p->calls_b++;
	drain(p->fb);
	remove_other(p, p->a, p->fa);
	loop_remove_fd(s);
}

static void run_pair(bool close_other, bool reuse_fd)
{
	struct loop *loop = NULL;
	struct pair p = { .close_other = close_other, .reuse_fd = reuse_fd };
	int pa[2], pb[2];

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;
	make_pipe(pa);
	make_pipe(pb);
	p.fa = pa[0];
	p.fb = pb[0];
	CHECK_INT(loop_add_fd(loop, pa[0], EPOLLIN, on_a, &p, &p.a), ==, 0);
	CHECK_INT(loop_add_fd(loop, pb[0], EPOLLIN, on_b, &p, &p.b), ==, 0);
	poke(pa[1]);
	poke(pb[1]);
	CHECK_INT(loop_dispatch(loop, 1000), ==, 0);
	CHECK_INT(p.calls_a + p.calls_b, ==, 1);

	if (reuse_fd) {
		/* The new pipe works like any other source. */
		CHECK_INT(loop_add_fd(loop, p.new_pipe[0], EPOLLIN, on_fresh,
				      &p, &p.fresh),
			  ==, 0);
		CHECK_INT(loop_dispatch(loop, 0), ==, 0);
		CHECK_INT(p.calls_fresh, ==, 0);
		poke(p.new_pipe[1]);
		CHECK_INT(loop_dispatch(loop, 1000), ==, 0);
		CHECK_INT(p.calls_fresh, ==, 1);
		close(p.new_pipe[0]);
		close(p.new_pipe[1]);
	}
	/* Nothing fires again (only pipes with a reader left are poked). */
	if (!close_other || p.calls_a)
		poke(pa[1]);
	if (!close_other || p.calls_b)
		poke(pb[1]);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(p.calls_a + p.calls_b, ==, 1);

	if (!close_other) {
		close(pa[0]);
		close(pb[0]);
	} else {
		/* The one that ran closed the other's fd only. */
		close(p.calls_a ? pa[0] : pb[0]);
	}
	close(pa[1]);
	close(pb[1]);
	loop_free(loop);
}

static void test_remove_in_batch(void)
{
	run_pair(false, false);
	run_pair(true, false);
	run_pair(true, true);
}

/* timers */

struct order {
	char seen[32];
	size_t n;
};

struct named_timer {
	struct order *order;
	char name;
	struct loop_timer *t;
};

static void on_named(struct loop_timer *t, void *data)
{
	struct named_timer *nt = data;

	if (nt->order->n + 1 < sizeof(nt->order->seen))
		nt->order->seen[nt->order->n++] = nt->name;
	CHECK(t == nt->t);
	CHECK(!loop_timer_armed(t)); /* one-shot: disarmed before the call */
}

static void test_timer_order(void)
{
	struct loop *loop = NULL;
	struct order order = { 0 };
	struct named_timer nt[4];
	/* Created in one order, due in another. */
	static const char names[] = { 'c', 'a', 'd', 'b' };
	static const int delays[] = { 30, 10, 40, 20 };

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;

	/* Due at different times: each dispatch wakes for the next one. */
	int64_t t0 = now_ms();
	for (int i = 0; i < 4; i++) {
		nt[i] = (struct named_timer){ &order, names[i], NULL };
		nt[i].t = loop_timer_new(loop, on_named, &nt[i]);
		CHECK(nt[i].t != NULL);
		CHECK(!loop_timer_armed(nt[i].t));
		loop_timer_arm_in(nt[i].t, delays[i]);
		CHECK(loop_timer_armed(nt[i].t));
	}
	for (int i = 0; i < 50 && order.n < 4; i++)
		CHECK_INT(loop_dispatch(loop, -1), ==, 0);
	CHECK_STR(order.seen, "abcd");
	/* Not early: the last one was due 40 ms in. */
	CHECK_INT(now_ms() - t0, >=, 40);

	/* All overdue when the loop looks: still fired earliest first, in
	 * one dispatch. */
	order = (struct order){ 0 };
	int64_t now = now_ms();
	for (int i = 0; i < 4; i++)
		loop_timer_arm(nt[i].t, now - 100 + delays[i]);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_STR(order.seen, "abcd");

	/* Equal deadlines all fire. */
	order = (struct order){ 0 };
	for (int i = 0; i < 4; i++)
		loop_timer_arm(nt[i].t, now);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(order.n, ==, 4);

	/* A negative deadline means "now". */
	order = (struct order){ 0 };
	loop_timer_arm(nt[0].t, -5);
	CHECK(loop_timer_armed(nt[0].t));
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_STR(order.seen, "c");

	/* Disarmed and freed timers do not fire. */
	order = (struct order){ 0 };
	loop_timer_arm_in(nt[0].t, 0);
	loop_timer_arm_in(nt[1].t, 0);
	loop_timer_arm_in(nt[2].t, 0);
	loop_timer_disarm(nt[1].t);
	CHECK(!loop_timer_armed(nt[1].t));
	loop_timer_free(nt[2].t);
	loop_timer_disarm(NULL);
	loop_timer_free(NULL);
	CHECK(!loop_timer_armed(NULL));
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_STR(order.seen, "c");

	loop_free(loop); /* frees the three left */
}

/* A timer that frees itself and another one that is due in the same round,
 * and creates a third. */
struct killer {
	struct loop *loop;
	struct loop_timer *self, *victim, *spawned, *bystander;
	int calls, victim_calls, spawned_calls, bystander_calls;
};

static void on_victim(struct loop_timer *t, void *data)
{
	struct killer *k = data;

	k->victim_calls++;
}

static void on_spawned(struct loop_timer *t, void *data)
{
	struct killer *k = data;

	k->spawned_calls++;
	loop_timer_free(t);
	k->spawned = NULL;
}

static void on_bystander(struct loop_timer *t, void *data)
{
	struct killer *k = data;

	k->bystander_calls++;
}

static void on_killer(struct loop_timer *t, void *data)
{
	struct killer *k = data;

	k->calls++;
	loop_timer_free(k->victim);
	k->victim = NULL;
	loop_timer_free(t);
	k->self = NULL;
	/* A timer made and armed inside a callback waits for a later
	 * round: the round in progress may not grow without end. */
	k->spawned = loop_timer_new(k->loop, on_spawned, k);
	if (k->spawned)
		loop_timer_arm(k->spawned, 0);
}

static void test_timer_free_in_callback(void)
{
	struct loop *loop = NULL;
	struct killer k = { 0 };

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;
	k.loop = loop;
	int64_t now = now_ms();
	/* Creation order puts the victim first in the list and the killer
	 * last; deadlines put the killer first. */
	k.bystander = loop_timer_new(loop, on_bystander, &k);
	k.self = loop_timer_new(loop, on_killer, &k);
	k.victim = loop_timer_new(loop, on_victim, &k);
	loop_timer_arm(k.self, now - 30);
	loop_timer_arm(k.victim, now - 20);
	loop_timer_arm(k.bystander, now - 10);

	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(k.calls, ==, 1);
	CHECK_INT(k.victim_calls, ==, 0);
	CHECK_INT(k.bystander_calls, ==, 1);
	CHECK_INT(k.spawned_calls, ==, 0);
	CHECK(k.spawned && loop_timer_armed(k.spawned));

	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(k.spawned_calls, ==, 1);
	CHECK(k.spawned == NULL);
	CHECK_INT(k.calls, ==, 1);
	CHECK_INT(k.bystander_calls, ==, 1);

	loop_free(loop);
}

/* Re-arming, from outside and from the timer's own callback. */
struct rearm {
	struct loop_timer *t;
	int calls, limit;
	int64_t delay; /* < 0: re-arm at an absolute deadline in the past */
};

static void on_rearm(struct loop_timer *t, void *data)
{
	struct rearm *r = data;

	r->calls++;
	if (r->calls >= r->limit)
		return;
	if (r->delay < 0)
		loop_timer_arm(t, 0);
	else
		loop_timer_arm_in(t, r->delay);
}

static void test_rearm(void)
{
	struct loop *loop = NULL;
	struct rearm r = { .limit = 3, .delay = 5 };

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;
	r.t = loop_timer_new(loop, on_rearm, &r);

	/* Periodic by re-arming in the callback. */
	loop_timer_arm_in(r.t, 5);
	for (int i = 0; i < 100 && r.calls < 3; i++)
		CHECK_INT(loop_dispatch(loop, -1), ==, 0);
	CHECK_INT(r.calls, ==, 3);
	CHECK(!loop_timer_armed(r.t));

	/* Re-arming moves the deadline, later or earlier. */
	r.calls = 0;
	r.limit = 1;
	loop_timer_arm_in(r.t, 10);
	loop_timer_arm_in(r.t, 100000);
	CHECK_INT(loop_dispatch(loop, 30), ==, 0);
	CHECK_INT(r.calls, ==, 0);
	loop_timer_arm_in(r.t, 5);
	for (int i = 0; i < 100 && r.calls < 1; i++)
		CHECK_INT(loop_dispatch(loop, 100), ==, 0);
	CHECK_INT(r.calls, ==, 1);

	/* A timer that re-arms itself for a deadline already past fires once
	 * per dispatch, never spinning inside one. */
	r.calls = 0;
	r.limit = 1000000;
	r.delay = -1;
	loop_timer_arm(r.t, 0);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(r.calls, ==, 1);
	CHECK(loop_timer_armed(r.t));
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(r.calls, ==, 2);

	/* Same with "0 ms from now". */
	r.calls = 0;
	r.delay = 0;
	loop_timer_arm_in(r.t, 0);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(r.calls, ==, 1);
	loop_timer_disarm(r.t);

	loop_free(loop);
}

/* Callbacks of one kind removing the other kind. */
struct cross {
	struct loop_source *src;
	struct loop_timer *timer;
	int fd_calls, timer_calls;
};

static void cross_fd(struct loop_source *s, uint32_t events, void *data)
{
	struct cross *c = data;

	c->fd_calls++;
	drain(loop_source_fd(s));
	loop_timer_free(c->timer);
	c->timer = NULL;
}

static void cross_timer(struct loop_timer *t, void *data)
{
	struct cross *c = data;

	c->timer_calls++;
	loop_remove_fd(c->src);
	c->src = NULL;
}

static void test_cross_removal(void)
{
	struct loop *loop = NULL;
	struct cross c = { 0 };
	int p[2];

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;
	make_pipe(p);

	/* The fd event comes first in a dispatch and frees the due timer. */
	CHECK_INT(loop_add_fd(loop, p[0], EPOLLIN, cross_fd, &c, &c.src), ==,
		  0);
	c.timer = loop_timer_new(loop, cross_timer, &c);
	loop_timer_arm(c.timer, 0);
	poke(p[1]);
	CHECK_INT(loop_dispatch(loop, 1000), ==, 0);
	CHECK_INT(c.fd_calls, ==, 1);
	CHECK_INT(c.timer_calls, ==, 0);

	/* A timer removes an fd source whose data is waiting. */
	c.timer = loop_timer_new(loop, cross_timer, &c);
	loop_timer_arm(c.timer, 0);
	loop_timer_free(NULL);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(c.timer_calls, ==, 1);
	CHECK(c.src == NULL);
	poke(p[1]);
	CHECK_INT(loop_dispatch(loop, 0), ==, 0);
	CHECK_INT(c.fd_calls, ==, 1);

	close(p[0]);
	close(p[1]);
	loop_free(loop);
}

static void on_never(struct loop_timer *t, void *data)
{
	CHECK(!"this timer must not fire");
}

struct runner {
	struct loop *loop;
	int calls;
};

static void on_tick(struct loop_timer *t, void *data)
{
	struct runner *r = data;

	if (++r->calls == 3)
		loop_quit(r->loop);
	else
		loop_timer_arm_in(t, 1);
}

static void test_run_quit(void)
{
	struct runner r = { 0 };

	CHECK_INT(loop_new(&r.loop), ==, 0);
	if (!r.loop)
		return;
	struct loop_timer *t = loop_timer_new(r.loop, on_tick, &r);
	loop_timer_arm_in(t, 1);
	CHECK_INT(loop_run(r.loop), ==, 0);
	CHECK_INT(r.calls, ==, 3);
	/* loop_run may start again after a quit. */
	r.calls = 0;
	loop_timer_arm_in(t, 1);
	CHECK_INT(loop_run(r.loop), ==, 0);
	CHECK_INT(r.calls, ==, 3);
	loop_free(r.loop);
}

/* A wait bounded by max_wait_ms returns in about that time with nothing to
 * do, even with a timer armed far away. */
static void test_wait_bound(void)
{
	struct loop *loop = NULL;
	struct rearm r = { .limit = 1 };

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;
	r.t = loop_timer_new(loop, on_rearm, &r);
	loop_timer_arm_in(r.t, 100000);
	int64_t t0 = now_ms();
	CHECK_INT(loop_dispatch(loop, 20), ==, 0);
	int64_t took = now_ms() - t0;
	CHECK_INT(took, >=, 19);
	CHECK_INT(took, <, 5000);
	CHECK_INT(r.calls, ==, 0);
	loop_free(loop);
}

/* loop_free() frees what is still registered: sources and timers, armed or
 * not, and sources removed but not yet reaped.  LeakSanitizer checks. */
static void test_free_with_everything(void)
{
	struct loop *loop = NULL;
	struct fd_probe probe = { 0 };
	struct loop_source *gone;
	int p[2], q[2];

	CHECK_INT(loop_new(&loop), ==, 0);
	if (!loop)
		return;
	make_pipe(p);
	make_pipe(q);
	/* The removed one sits in the middle of the others. */
	CHECK_INT(loop_add_fd(loop, p[0], EPOLLIN, on_readable, &probe, NULL),
		  ==, 0);
	CHECK_INT(loop_add_fd(loop, q[0], EPOLLIN, on_readable, &probe, &gone),
		  ==, 0);
	CHECK_INT(loop_add_fd(loop, p[1], EPOLLOUT, on_readable, &probe, NULL),
		  ==, 0);
	loop_remove_fd(gone);
	/* The others still work. */
	poke(q[1]);
	poke(p[1]);
	CHECK_INT(loop_dispatch(loop, 1000), ==, 0);
	CHECK_INT(probe.calls, ==, 2);
	loop_timer_arm_in(loop_timer_new(loop, on_never, NULL), 1000);
	(void)loop_timer_new(loop, on_never, NULL);
	loop_free(loop);
	/* The loop closed none of them. */
	CHECK(fcntl(p[0], F_GETFD) >= 0 && fcntl(p[1], F_GETFD) >= 0);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

int main(void)
{
	check_watchdog(30);
	RUN(test_fd_callbacks);
	RUN(test_remove_in_batch);
	RUN(test_timer_order);
	RUN(test_timer_free_in_callback);
	RUN(test_rearm);
	RUN(test_cross_removal);
	RUN(test_run_quit);
	RUN(test_wait_bound);
	RUN(test_free_with_everything);
	return check_exit();
}

/*
 * The event loop the agent owns: epoll over file descriptors, plus timers
 * kept in a list and turned into the epoll timeout.  Signals come in as an
 * fd (signalfd) like everything else.  Single-threaded.
 *
 * Sources and timers may be removed or freed from inside any callback,
 * including their own: fd sources are only marked dead during a dispatch
 * round and freed after it.
 */
#ifndef DBSWAP_LOOP_H
#define DBSWAP_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_source;
struct loop_timer;

typedef void loop_fd_fn(struct loop_source *source, uint32_t events,
			void *data);
typedef void loop_timer_fn(struct loop_timer *timer, void *data);

/* Returns 0 or a negative errno. */
int loop_new(struct loop **out);
/* Frees every source and timer still registered; closes no fd. */
void loop_free(struct loop *loop);

/* Watches fd for events (EPOLLIN, EPOLLOUT, ...).  The loop does not own fd
 * and never closes it. */
int loop_add_fd(struct loop *loop, int fd, uint32_t events, loop_fd_fn *fn,
		void *data, struct loop_source **out);
int loop_mod_fd(struct loop_source *source, uint32_t events);
int loop_source_fd(const struct loop_source *source);
/* Stops watching and frees the source (deferred while dispatching). */
void loop_remove_fd(struct loop_source *source);

/* A timer starts disarmed.  Returns NULL when out of memory. */
struct loop_timer *loop_timer_new(struct loop *loop, loop_timer_fn *fn,
				  void *data);
/* Arms the timer to fire once at deadline (now_ms() clock); re-arming moves
 * it. */
void loop_timer_arm(struct loop_timer *timer, int64_t deadline_ms);
/* Arms the timer to fire delay_ms from now. */
void loop_timer_arm_in(struct loop_timer *timer, int64_t delay_ms);
void loop_timer_disarm(struct loop_timer *timer);
bool loop_timer_armed(const struct loop_timer *timer);
/* When the timer fires (now_ms() clock), -1 when disarmed. */
int64_t loop_timer_deadline(const struct loop_timer *timer);
void loop_timer_free(struct loop_timer *timer);

/* Waits for events (at most max_wait_ms, -1 for the next timer) and
 * dispatches them.  Returns 0 or a negative errno. */
int loop_dispatch(struct loop *loop, int max_wait_ms);
/* Runs until loop_quit(); returns 0 or a negative errno. */
int loop_run(struct loop *loop);
void loop_quit(struct loop *loop);

#endif

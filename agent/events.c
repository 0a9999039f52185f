/*
 * Event hooks: spawned, timed and reaped on the agent's loop; see
 * events.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "counters.h"
#include "events.h"

/* The environment a hook gets: PATH and one variable per field. */
enum { F_EVENT, F_TARGET, F_GENERATION, F_SERVER, F_REASON, F_TIME,
       F_COUNT };
static const char *const field_names[F_COUNT] = {
	"DBSWAP_EVENT", "DBSWAP_TARGET", "DBSWAP_GENERATION",
	"DBSWAP_SERVER", "DBSWAP_REASON", "DBSWAP_TIME",
};
#define EVENTS_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:" \
		    "/sbin:/bin"

struct job {
	char env[F_COUNT][EVENTS_FIELD_MAX + 32];
	pid_t pid;
	int pidfd;
	struct loop_source *src;
	struct loop_timer *timer;
	struct loop_timer *poll; /* without a pidfd: waitpid() now and then */
	bool term_sent;
	int64_t started_ms;
	struct job *next;
};

static struct {
	struct loop *loop;
	char *cmd;
	int64_t timeout_ms;
	struct job *running;
	unsigned n_running;
	struct job *queue, **queue_tail;
	unsigned n_queued;
	unsigned long dropped; /* since the last line about it */
	/* Hooks SIGKILL'd when their job could not be set up (out of
	 * memory), not reaped yet: reaped without waiting whenever the
	 * module runs again (events_reap_orphans()).  Fixed room, since
	 * they come from a lack of memory; a kill past it leaves a zombie
	 * (a process table entry, nothing more) until the agent exits. */
	pid_t orphans[EVENTS_RUNNING_MAX];
	unsigned n_orphans;
} ev;

/* Reaps the orphans that are gone, never waiting. */
static void events_reap_orphans(void)
{
	for (unsigned i = 0; i < ev.n_orphans;) {
		pid_t r = waitpid(ev.orphans[i], NULL, WNOHANG);
		if (r == 0) {
			i++;
			continue;
		}
		ev.orphans[i] = ev.orphans[--ev.n_orphans];
	}
}

static void field_set(struct job *j, int f, const char *value)
{
	char *out = j->env[f];
	size_t n = (size_t)snprintf(out, sizeof(j->env[f]), "%s=",
				    field_names[f]);

	const char *v = value ? value : "";

	/* Nothing a shell or a JSON template could take for syntax. */
	for (const char *p = v;
	     *p && n < sizeof(j->env[f]) - 1 && p - v < EVENTS_FIELD_MAX; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || strchr("._:+-", c);
		out[n++] = ok ? c : '_';
	}
	out[n] = '\0';
}

static void job_free(struct job *j)
{
	if (j->src)
		loop_remove_fd(j->src);
	if (j->pidfd >= 0)
		close(j->pidfd);
	loop_timer_free(j->timer);
	loop_timer_free(j->poll);
	free(j);
}

static void job_unlink(struct job *j)
{
	for (struct job **p = &ev.running; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			ev.n_running--;
			return;
		}
}

static void events_start_queued(void);

/* Reaps j if it exited; returns whether it did (j is then freed). */
static bool job_reap(struct job *j)
{
	int status = 0;
	pid_t r = waitpid(j->pid, &status, WNOHANG);
	long long ms = (long long)(now_ms() - j->started_ms);
	const char *event = j->env[F_EVENT] + strlen("DBSWAP_EVENT=");

	if (r == 0)
		return false; /* not yet (a spurious wake) */
	if (r < 0) {
		log_warning("event hook for %s: waitpid: %s", event,
			    strerror(errno));
		counters_hook("failed");
	} else if (j->term_sent) {
		log_warning("event hook for %s: killed after %lld ms (its time "
			    "limit is %lld ms)", event, ms,
			    (long long)ev.timeout_ms);
		counters_hook("killed");
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		log_debug("event hook for %s: done in %lld ms", event, ms);
		counters_hook("ok");
	} else {
		if (WIFEXITED(status))
			log_warning("event hook for %s: exited with status %d "
				    "after %lld ms", event, WEXITSTATUS(status),
				    ms);
		else
			log_warning("event hook for %s: killed by signal %d "
				    "after %lld ms", event, WTERMSIG(status),
				    ms);
		counters_hook("failed");
	}
	job_unlink(j);
	job_free(j);
	events_start_queued();
	return true;
}

static void job_exited(struct loop_source *src, uint32_t events, void *data)
{
	job_reap(data);
}

static void job_poll(struct loop_timer *timer, void *data)
{
	struct job *j = data;

	if (!job_reap(j))
		loop_timer_arm_in(timer, EVENTS_POLL_MS);
}

/* The time limit: SIGTERM to the hook's process group, then SIGKILL. */
static void job_timeout(struct loop_timer *timer, void *data)
{
	struct job *j = data;

	/* The group exists while its leader is unreaped: j->pid is ours. */
	kill(-j->pid, j->term_sent ? SIGKILL : SIGTERM);
	if (!j->term_sent) {
		j->term_sent = true;
		loop_timer_arm_in(j->timer, EVENTS_KILL_GRACE_MS);
	}
}

/* Starts j; on failure frees it.  Returns 0 or a negative errno. */
static int job_spawn(struct job *j)
{
	char *argv[] = { ev.cmd, j->env[F_EVENT] + strlen("DBSWAP_EVENT="),
			 NULL };
	char *envp[F_COUNT + 2];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	int r;

	envp[0] = (char *)EVENTS_PATH;
	for (int f = 0; f < F_COUNT; f++)
		envp[f + 1] = j->env[f];
	envp[F_COUNT + 1] = NULL;
	sigemptyset(&none);
	/* What the agent blocks or ignores, the hook must not inherit. */
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGIO);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGHUP);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
					 O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
					       POSIX_SPAWN_SETSIGDEF |
					       POSIX_SPAWN_SETPGROUP);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setpgroup(&attr, 0);
	/* glibc's posix_spawn shares the agent's memory until the exec (no
	 * copy of the secrets in it) and reports a failed exec here.  Like
	 * vfork, it suspends this thread until the child has exec'd or
	 * failed.  The loop stops for that long, which is acceptable: it is
	 * bounded by one execve (about a millisecond), never by the hook's
	 * work. */
	r = -posix_spawn(&j->pid, ev.cmd, &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r < 0)
		goto err;
	j->started_ms = now_ms();
	j->pidfd = (int)syscall(SYS_pidfd_open, j->pid, 0);
	j->timer = loop_timer_new(ev.loop, job_timeout, j);
	/* Without pidfds (a kernel before 5.3, valgrind 3.19) the exit is
	 * polled for. */
	if (j->pidfd < 0)
		j->poll = loop_timer_new(ev.loop, job_poll, j);
	if (!j->timer || (j->pidfd < 0 && !j->poll) ||
	    (j->pidfd >= 0 && loop_add_fd(ev.loop, j->pidfd, EPOLLIN,
					  job_exited, j, &j->src) < 0)) {
		/* Out of memory: the hook is stopped at once (SIGKILL'd,
		 * it is gone in a moment). */
		r = -ENOMEM;
		kill(-j->pid, SIGKILL);
		/* Not waited for here: the exit of a SIGKILL'd process
		 * still takes a moment (its memory freed, its files
		 * closed) and the loop must not wait on it. */
		events_reap_orphans();
		if (ev.n_orphans < ARRAY_SIZE(ev.orphans))
			ev.orphans[ev.n_orphans++] = j->pid;
		goto err;
	}
	if (j->poll)
		loop_timer_arm_in(j->poll, EVENTS_POLL_MS);
	loop_timer_arm_in(j->timer, ev.timeout_ms);
	j->next = ev.running;
	ev.running = j;
	ev.n_running++;
	log_debug("event hook for %s: started, pid %d", argv[1], (int)j->pid);
	return 0;
err:
	log_warning("event hook %s for %s: %s", ev.cmd, argv[1], strerror(-r));
	counters_hook("spawn-failed");
	job_free(j);
	return r;
}

static void events_start_queued(void)
{
	events_reap_orphans();
	if (ev.dropped && ev.n_queued == 0) {
		log_notice("event hooks: %lu event(s) dropped while the queue "
			   "was full", ev.dropped);
		ev.dropped = 0;
	}
	while (ev.queue && ev.n_running < EVENTS_RUNNING_MAX) {
		struct job *j = ev.queue;
		ev.queue = j->next;
		if (!ev.queue)
			ev.queue_tail = &ev.queue;
		ev.n_queued--;
		j->next = NULL;
		job_spawn(j);
	}
}

void events_emit(const char *event, const char *target, uint64_t generation,
		 const char *server, const char *reason)
{
	struct job *j;
	char gen[32], when[32];
	time_t now = time(NULL);
	struct tm tm;

	counters_event(target, event);
	if (!ev.cmd)
		return;
	if (ev.n_running >= EVENTS_RUNNING_MAX &&
	    ev.n_queued >= EVENTS_QUEUE_MAX) {
		if (ev.dropped++ == 0)
			log_warning("event hooks: %u running and %u queued: "
				    "%s for %s dropped, and any more until "
				    "the queue drains", ev.n_running,
				    ev.n_queued, event, target);
		counters_hook("dropped");
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		counters_hook("dropped");
		return;
	}
	j->pidfd = -1;
	snprintf(gen, sizeof(gen), "%llu", (unsigned long long)generation);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	field_set(j, F_EVENT, event);
	field_set(j, F_TARGET, target);
	field_set(j, F_GENERATION, gen);
	field_set(j, F_SERVER, server);
	field_set(j, F_REASON, reason);
	field_set(j, F_TIME, when);
	*ev.queue_tail = j;
	ev.queue_tail = &j->next;
	ev.n_queued++;
	events_start_queued();
}

int events_init(struct loop *loop, const char *cmd, int64_t timeout_ms)
{
	ev.loop = loop;
	ev.timeout_ms = timeout_ms > 0 ? timeout_ms : EVENTS_TIMEOUT_MS;
	ev.queue_tail = &ev.queue;
	if (!cmd)
		return 0;
	if (cmd[0] != '/') {
		log_error("--on-event %s: not an absolute path (the hook runs "
			  "without a shell and without a PATH search)", cmd);
		return -EINVAL;
	}
	if (access(cmd, X_OK) < 0)
		log_warning("--on-event %s: %s (events will be logged as "
			    "failed to run until it is there)", cmd,
			    strerror(errno));
	ev.cmd = strdup(cmd);
	if (!ev.cmd)
		return -ENOMEM;
	log_info("events: running %s on each, at most %d at once, for at most "
		 "%lld ms", cmd, EVENTS_RUNNING_MAX, (long long)ev.timeout_ms);
	return 0;
}

void events_fini(void)
{
	while (ev.running) {
		struct job *j = ev.running;
		ev.running = j->next;
		kill(-j->pid, SIGTERM);
		job_free(j);
	}
	events_reap_orphans();
	ev.n_orphans = 0; /* left to init when the agent exits */
	while (ev.queue) {
		struct job *j = ev.queue;
		ev.queue = j->next;
		job_free(j);
	}
	free(ev.cmd);
	ev.cmd = NULL;
	ev.n_running = ev.n_queued = 0;
	ev.queue_tail = &ev.queue;
}

/*
 * sd_notify, the watchdog and the journal; see systemd.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "agent.h"
#include "common/log.h"
#include "common/loop.h"
#include "counters.h"
#include "systemd.h"
#include "target.h"

struct systemd {
	bool notify;           /* NOTIFY_SOCKET is set */
	int notify_fd;         /* ours towards it, non-blocking; -1: none */
	struct sockaddr_un notify_addr;
	socklen_t notify_len;
	bool ready;            /* READY=1 sent */
	struct loop_timer *status;
	char last_status[1024];
	struct loop_timer *watchdog;
	int64_t watchdog_ms;   /* ping period: half of WATCHDOG_USEC */
};

/* journald's native socket.  sd_journal_sendv() would do, but it sends
 * with a blocking sendmsg(): when journald stops reading and its queue is
 * full, the agent's loop would wait for it. */
#define SYSTEMD_JOURNAL_SOCKET "/run/systemd/journal/socket"

/* Ours towards journald, non-blocking; used by the sink alone, under the
 * log's lock. */
static int systemd_journal_fd = -1;

/* Where an entry is encoded; full once a field did not fit. */
struct journal_buf {
	char *buf;
	size_t size, len;
	bool full;
};

/* KEY=value\n, or, for a value with a newline in it, KEY\n, the value's
 * length as 64-bit little-endian, the value, \n: journald's native
 * protocol (systemd's docs/JOURNAL_NATIVE_PROTOCOL.md). */
static void journal_field(struct journal_buf *b, const char *key,
			  const char *value)
{
	size_t klen = strlen(key), vlen = strlen(value);
	bool binary = memchr(value, '\n', vlen) != NULL;
	size_t need = klen + 1 + (binary ? 8 : 0) + vlen + 1;
	char *p = b->buf + b->len;

	if (b->full || need > b->size - b->len) {
		b->full = true;
		return;
	}
	memcpy(p, key, klen);
	p += klen;
	if (binary) {
		*p++ = '\n';
		for (int i = 0; i < 8; i++)
			*p++ = (char)(((uint64_t)vlen >> (8 * i)) & 0xff);
	} else {
		*p++ = '=';
	}
	memcpy(p, value, vlen);
	p[vlen] = '\n';
	b->len += need;
}

int systemd_journal_entry(char *buf, size_t size, int level,
			  const struct log_fields *f, const char *message)
{
	struct journal_buf b = { buf, size, 0, false };
	char num[24];

	journal_field(&b, "MESSAGE", message);
	snprintf(num, sizeof(num), "%d", level);
	journal_field(&b, "PRIORITY", num);
	journal_field(&b, "SYSLOG_IDENTIFIER", "dbswapd");
	if (f && f->event)
		journal_field(&b, "DBSWAP_EVENT", f->event);
	if (f && f->target)
		journal_field(&b, "DBSWAP_TARGET", f->target);
	if (f && f->generation) {
		snprintf(num, sizeof(num), "%llu",
			 (unsigned long long)f->generation);
		journal_field(&b, "DBSWAP_GENERATION", num);
	}
	return b.full ? -ENOBUFS : (int)b.len;
}

/* The journal, with the event's fields; stderr when journald refuses,
 * its queue full included. */
static int systemd_journal_sink(int level,
				const struct log_fields *f, const char *line)
{
	static const struct sockaddr_un addr = {
		.sun_family = AF_UNIX,
		.sun_path = SYSTEMD_JOURNAL_SOCKET,
	};
	char buf[SYSTEMD_JOURNAL_ENTRY_MAX];
	int n;

	n = systemd_journal_entry(buf, sizeof(buf), level, f, line);
	if (n < 0)
		return n;
	/* Addressed each time, not connected: a restarted journald binds a
	 * new socket at the same path. */
	if (sendto(systemd_journal_fd, buf, (size_t)n,
		   MSG_DONTWAIT | MSG_NOSIGNAL,
		   (const struct sockaddr *)&addr, sizeof(addr)) < 0)
		return neg_errno();
	return 0;
}

/* Opens our socket towards journald and installs the sink.  When that
 * fails, lines go to stderr, which is the journal too, without the
 * fields. */
static void systemd_journal_open(void)
{
	/* As sd-journal does: room for a burst while journald is busy (the
	 * kernel caps it at wmem_max). */
	int sndbuf = 8 << 20;
	int fd;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		log_warning("journal: cannot create a socket: %s; logging "
			    "without fields", strerror(errno));
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	systemd_journal_fd = fd;
	log_set_sink(systemd_journal_sink);
}

static void systemd_journal_close(void)
{
	if (systemd_journal_fd < 0)
		return;
	/* Under the log's lock: no line is being sent once it returns. */
	log_set_sink(NULL);
	close(systemd_journal_fd);
	systemd_journal_fd = -1;
}

/* Whether stderr is the journal stream systemd connected us to (not a
 * pipe a child of ours inherited the variable with). */
static bool systemd_stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!v || sscanf(v, "%llu:%llu", &dev, &ino) != 2 ||
	    fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

/* The notify socket, for systemd_notify(): a path, or an abstract name
 * after '@'.  sd_notify() would do, but it sends with a blocking
 * sendmsg(): were PID 1 to stop reading, the agent's loop would wait for
 * it.  Another kind of address (vsock, in newer systemd) falls back to
 * sd_notify().  Returns 0 or a negative errno. */
static int systemd_notify_open(struct systemd *sd, const char *name)
{
	size_t n = strlen(name);

	if ((name[0] != '/' && name[0] != '@') ||
	    n >= sizeof(sd->notify_addr.sun_path))
		return -EAFNOSUPPORT;
	sd->notify_addr = (struct sockaddr_un){ .sun_family = AF_UNIX };
	memcpy(sd->notify_addr.sun_path, name, n);
	if (name[0] == '@')
		sd->notify_addr.sun_path[0] = '\0';
	sd->notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				     n + (name[0] == '/'));
	sd->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK |
					       SOCK_CLOEXEC, 0);
	return sd->notify_fd < 0 ? neg_errno() : 0;
}

/* Tells systemd msg, never waiting.  Returns false when it did not go
 * (PID 1 not reading, its queue full): the caller decides whether to try
 * again. */
static bool systemd_notify(struct systemd *sd, const char *msg)
{
	if (sd->notify_fd < 0)
		return sd_notify(0, msg) >= 0;
	if (sendto(sd->notify_fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
		   (struct sockaddr *)&sd->notify_addr, sd->notify_len) >= 0)
		return true;
	log_debug("systemd: notify message not sent: %s", strerror(errno));
	return false;
}

static void systemd_watchdog_fire(struct loop_timer *t, void *data)
{
	struct agent *a = data;

	/* A ping that does not go is not retried: the next one comes. */
	systemd_notify(a->systemd, "WATCHDOG=1");
	loop_timer_arm_in(t, a->systemd->watchdog_ms);
}

/* Nothing validating a first value and no first publish pending. */
static bool systemd_settled(const struct agent *a)
{
	for (size_t i = 0; i < a->n_targets; i++) {
		const struct target *t = a->targets[i];
		if (loop_timer_armed(t->evaluate))
			return false;
		for (int r = 0; r < ROLE_COUNT; r++)
			if (!t->src[r].value && t->src[r].probe)
				return false;
	}
	return true;
}

/* "DATABASE_URL gen 4 primary 3/3 acked; REPORTS_URL no value; 7
 * clients" */
static void systemd_status_line(const struct agent *a, char *buf,
				size_t size)
{
	buf[0] = '\0';
	for (size_t i = 0; i < a->n_targets; i++) {
		const struct target *t = a->targets[i];
		unsigned subs, acked;

		if (!t->generation) {
			append_reason(buf, size, "%s no value%s", t->name,
				      t->src[ROLE_PRIMARY].error ? " (failed)"
								 : "");
			continue;
		}
		target_count(t, &subs, &acked);
		append_reason(buf, size, "%s gen %llu %s%s %u/%u acked",
			      t->name, (unsigned long long)t->generation,
			      t->current == ROLE_NONE ? "no server"
						      : target_role_name(t->current),
			      target_standby(t) ? " (standby)" : "", acked, subs);
	}
	append_reason(buf, size, "%u client(s)", counters_clients_now());
}

static void systemd_status_fire(struct loop_timer *timer, void *data)
{
	struct agent *a = data;
	struct systemd *sd = a->systemd;
	char line[sizeof(sd->last_status)];
	bool ready = !sd->ready && systemd_settled(a);

	systemd_status_line(a, line, sizeof(line));
	if (!ready && streq(line, sd->last_status))
		return;
	char msg[sizeof(line) + 32];
	snprintf(msg, sizeof(msg), "%sSTATUS=%s", ready ? "READY=1\n" : "",
		 line);
	if (!systemd_notify(sd, msg)) {
		/* Not sent: again later (READY=1 above all). */
		loop_timer_arm_in(timer, SYSTEMD_STATUS_MS);
		return;
	}
	snprintf(sd->last_status, sizeof(sd->last_status), "%s", line);
	if (ready) {
		sd->ready = true;
		log_info("ready: %s", line);
	}
}

/* Whatever changed, STATUS= may say something else now. */
static void systemd_observe(const struct change *c, void *data)
{
	struct agent *a = data;

	if (c->kind == CHANGE_RELOADING)
		systemd_reloading(a);
	else if (c->kind == CHANGE_RELOADED)
		systemd_reloaded(a);
	else
		systemd_changed(a);
}

int systemd_init(struct agent *a)
{
	struct systemd *sd = zalloc(sizeof(*sd));
	uint64_t usec = 0;

	if (!sd)
		return -ENOMEM;
	a->systemd = sd;
	if (systemd_stderr_is_journal())
		systemd_journal_open();
	sd->notify_fd = -1;
	sd->notify = getenv("NOTIFY_SOCKET") != NULL;
	if (sd->notify && systemd_notify_open(sd, getenv("NOTIFY_SOCKET")) < 0)
		log_debug("systemd: NOTIFY_SOCKET is no path: sd_notify() sends");
	if (sd->notify) {
		sd->status = loop_timer_new(a->loop, systemd_status_fire, a);
		if (!sd->status)
			return -ENOMEM;
	}
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		sd->watchdog_ms = MAX((int64_t)(usec / 2000), 1);
		sd->watchdog = loop_timer_new(a->loop, systemd_watchdog_fire, a);
		if (!sd->watchdog)
			return -ENOMEM;
		loop_timer_arm_in(sd->watchdog, 0);
		log_info("watchdog: pinging systemd every %lld ms",
			 (long long)sd->watchdog_ms);
	}
	return changes_observe(&a->changes, systemd_observe, a);
}

void systemd_fini(struct agent *a)
{
	struct systemd *sd = a->systemd;

	if (!sd)
		return;
	changes_forget(&a->changes, systemd_observe, a);
	loop_timer_free(sd->status);
	loop_timer_free(sd->watchdog);
	if (sd->notify_fd >= 0)
		close(sd->notify_fd);
	free(sd);
	a->systemd = NULL;
	systemd_journal_close();
}

void systemd_changed(struct agent *a)
{
	struct systemd *sd = a->systemd;

	if (!sd || !sd->notify || loop_timer_armed(sd->status))
		return;
	/* Readiness at once; later summaries coalesced. */
	loop_timer_arm_in(sd->status, sd->ready ? SYSTEMD_STATUS_MS : 0);
}

void systemd_reloading(struct agent *a)
{
	if (!a->systemd || !a->systemd->notify)
		return;
	char msg[64];

	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)now_us());
	systemd_notify(a->systemd, msg);
}

void systemd_reloaded(struct agent *a)
{
	/* Only once the first READY=1 went out: before, readiness still
	 * waits for the first validations. */
	if (!a->systemd || !a->systemd->notify || !a->systemd->ready)
		return;
	systemd_notify(a->systemd, "READY=1");
	systemd_changed(a);
}

void systemd_stopping(struct agent *a)
{
	if (a->systemd && a->systemd->notify)
		systemd_notify(a->systemd, "STOPPING=1");
}

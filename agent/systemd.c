/*
 * sd_notify, the watchdog and the journal; see systemd.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "agent.h"
#include "common/log.h"
#include "common/loop.h"
#include "failover.h"
#include "server.h"
#include "systemd.h"
#include "target.h"

struct systemd {
	bool notify;           /* NOTIFY_SOCKET is set */
	bool ready;            /* READY=1 sent */
	struct loop_timer *status;
	char last_status[1024];
	struct loop_timer *watchdog;
	int64_t watchdog_ms;   /* ping period: half of WATCHDOG_USEC */
};

/* The journal, with the event's fields; stderr when journald refuses. */
static int systemd_journal_sink(int level,
				const struct log_fields *f, const char *line)
{
	char msg[1100], prio[16], event[64], target[300], gen[48];
	struct iovec iov[6];
	int n = 0;

#define FIELD(buf, ...)                                                   \
	do {                                                              \
		int len_ = snprintf(buf, sizeof(buf), __VA_ARGS__);       \
		iov[n++] = (struct iovec){ buf, (size_t)MIN(len_,         \
			(int)sizeof(buf) - 1) };                          \
	} while (0)
	FIELD(msg, "MESSAGE=%s", line);
	FIELD(prio, "PRIORITY=%d", (int)level);
	iov[n++] = (struct iovec){ (void *)"SYSLOG_IDENTIFIER=dbswapd",
				   sizeof("SYSLOG_IDENTIFIER=dbswapd") - 1 };
	if (f && f->event)
		FIELD(event, "DBSWAP_EVENT=%s", f->event);
	if (f && f->target)
		FIELD(target, "DBSWAP_TARGET=%s", f->target);
	if (f && f->generation)
		FIELD(gen, "DBSWAP_GENERATION=%llu",
		      (unsigned long long)f->generation);
#undef FIELD
	return sd_journal_sendv(iov, n);
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

static void systemd_watchdog_fire(struct loop_timer *t, void *data)
{
	struct agent *a = data;

	sd_notify(0, "WATCHDOG=1");
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
		server_count(a->server, t, &subs, &acked);
		append_reason(buf, size, "%s gen %llu %s%s %u/%u acked",
			      t->name, (unsigned long long)t->generation,
			      t->current == ROLE_NONE ? "no server"
						      : target_role_name(t->current),
			      t->standby ? " (standby)" : "", acked, subs);
	}
	append_reason(buf, size, "%u client(s)", server_clients(a->server));
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
	snprintf(sd->last_status, sizeof(sd->last_status), "%s", line);
	sd_notifyf(0, "%sSTATUS=%s", ready ? "READY=1\n" : "", line);
	if (ready) {
		sd->ready = true;
		log_info("ready: %s", line);
	}
}

int systemd_init(struct agent *a)
{
	struct systemd *sd = zalloc(sizeof(*sd));
	uint64_t usec = 0;

	if (!sd)
		return -ENOMEM;
	a->systemd = sd;
	if (systemd_stderr_is_journal())
		log_set_sink(systemd_journal_sink);
	sd->notify = getenv("NOTIFY_SOCKET") != NULL;
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
	return 0;
}

void systemd_fini(struct agent *a)
{
	struct systemd *sd = a->systemd;

	if (!sd)
		return;
	loop_timer_free(sd->status);
	loop_timer_free(sd->watchdog);
	free(sd);
	a->systemd = NULL;
	log_set_sink(NULL);
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
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)now_us());
}

void systemd_reloaded(struct agent *a)
{
	/* Only once the first READY=1 went out: before, readiness still
	 * waits for the first validations. */
	if (!a->systemd || !a->systemd->notify || !a->systemd->ready)
		return;
	sd_notify(0, "READY=1");
	systemd_changed(a);
}

void systemd_stopping(struct agent *a)
{
	if (a->systemd && a->systemd->notify)
		sd_notify(0, "STOPPING=1");
}

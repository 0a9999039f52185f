/*
 * The agent's counters; see counters.h.
 */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "counters.h"

/* Publish to last ack: an ack is a pool's switch, milliseconds on one
 * host; seconds when an app is busy; a minute means it is stuck. */
static const double converge_bounds[] = { 0.001, 0.005, 0.01, 0.025, 0.05,
					  0.1,	 0.25,	0.5,  1,     2.5,
					  5,	 10,	30,   60 };
/* A health check: well under a millisecond on an idle connection to a
 * server nearby, up to the connection timeout (5 s by default). */
static const double check_bounds[] = { 0.0005, 0.001, 0.0025, 0.005,
				       0.01,   0.025, 0.05,   0.1,
				       0.25,   0.5,   1,      2.5,
				       5,      10 };

_Static_assert(ARRAY_SIZE(converge_bounds) <= COUNTERS_BUCKETS_MAX,
	       "converge_bounds");
_Static_assert(ARRAY_SIZE(check_bounds) <= COUNTERS_BUCKETS_MAX,
	       "check_bounds");

const struct bounds counters_converge_bounds = {
	converge_bounds, ARRAY_SIZE(converge_bounds)
};
const struct bounds counters_check_bounds = {
	check_bounds, ARRAY_SIZE(check_bounds)
};

static struct counted *counted;
static struct series_list gone;  /* reason */
static struct series_list hooks; /* result */
static unsigned clients;

static struct counted *counted_get(const char *name)
{
	struct counted *m;

	for (m = counted; m; m = m->next)
		if (streq(m->name, name))
			return m;
	m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->name = strdup(name);
	if (!m->name) {
		free(m);
		return NULL;
	}
	m->next = counted;
	counted = m;
	return m;
}

static void series_add(struct series_list *l, const char *a, const char *b)
{
	for (size_t i = 0; i < l->n; i++)
		if (streq(l->s[i].a, a) && streq(l->s[i].b ? l->s[i].b : "",
						 b ? b : "")) {
			l->s[i].n++;
			return;
		}
	if (l->n < COUNTERS_SERIES_MAX)
		l->s[l->n++] = (struct series){ a, b, 1 };
}

static void histogram_observe(struct histogram *h, const struct bounds *b,
			      double v)
{
	for (size_t i = 0; i < b->n; i++)
		if (v <= b->v[i]) {
			h->bucket[i]++;
			break;
		}
	h->count++;
	h->sum += v;
}

/* The index of a role's name in struct counted's check. */
static int counters_role(const char *role)
{
	return streq(role, "secondary") ? 1 : 0;
}

void counters_validation(const char *target, const char *role,
			 const char *result)
{
	struct counted *m = counted_get(target);

	if (m)
		series_add(&m->validations, role, result);
}

void counters_published(const char *target, const char *reason,
			const char *switched_to)
{
	struct counted *m = counted_get(target);

	if (!m)
		return;
	series_add(&m->publishes, reason, NULL);
	if (switched_to)
		series_add(&m->switches, reason, switched_to);
}

void counters_converged(const char *target, double seconds)
{
	struct counted *m = counted_get(target);

	if (m)
		histogram_observe(&m->converge, &counters_converge_bounds,
				  seconds);
}

void counters_health_check(const char *target, const char *role,
			   double seconds)
{
	struct counted *m = counted_get(target);

	if (m)
		histogram_observe(&m->check[counters_role(role)],
				  &counters_check_bounds, seconds);
}

/* The log line's reason for a client leaving, as a label. */
static const char *gone_reason(const char *why)
{
	if (strstr(why, "closed the connection"))
		return "closed";
	if (strstr(why, "protocol"))
		return "protocol";
	if (strstr(why, "not reading") || strstr(why, "output"))
		return "slow";
	if (strstr(why, "hello"))
		return "hello-timeout";
	if (strstr(why, "idle"))
		return "idle";
	return "error";
}

void counters_clients(unsigned n)
{
	clients = n;
}

unsigned counters_clients_now(void)
{
	return clients;
}

void counters_client_gone(const char *why)
{
	series_add(&gone, gone_reason(why), NULL);
}

void counters_event(const char *target, const char *event)
{
	struct counted *m = counted_get(target);

	if (m)
		series_add(&m->events, event, NULL);
}

void counters_hook(const char *result)
{
	series_add(&hooks, result, NULL);
}

const struct counted *counters_of(const char *target)
{
	static const struct counted none;
	const struct counted *m = counted_get(target);

	return m ? m : &none;
}

const struct series_list *counters_gone(void)
{
	return &gone;
}

const struct series_list *counters_hooks(void)
{
	return &hooks;
}

void counters_reset(void)
{
	while (counted) {
		struct counted *m = counted;
		counted = m->next;
		free(m->name);
		free(m);
	}
	gone = (struct series_list){ 0 };
	hooks = (struct series_list){ 0 };
	clients = 0;
}

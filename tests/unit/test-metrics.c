/*
 * Unit tests for agent/metrics.c (and the counters it renders): label and JSON escaping of a target
 * name that needs it (env names never do, so the integration tests cannot
 * reach it), cumulative histogram buckets, the visibility filter, no
 * conninfo in any output, one dbswap_target_server series per server,
 * /health and dbswap_target_available by the health of the server in
 * use, and which --metrics addresses pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "counters.h"
#include "health.h"
#include "metrics.h"
#include "target.h"
#include "tests/unit/check.h"

#define NAME "A\"b\\c\nd"
#define LABEL "target=\"A\\\"b\\\\c\\nd\""

static bool hide_all(const struct target *t, void *data)
{
	(void)t;
	(void)data;
	return false;
}

static void test_render(void)
{
	struct target t = { 0 };
	struct target *list[] = { &t };
	struct agent a = { 0 };
	char *text = NULL;
	size_t len = 0;

	a.started_ms = now_ms();
	a.targets = list;
	a.n_targets = 1;
	t.name = (char *)NAME;
	t.conninfo = (char *)"postgresql://u:secretpw@db.example/app";
	t.generation = 2;
	t.current = ROLE_PRIMARY;
	t.reason = "rotation";
	counters_published(NAME, "rotation", NULL);
	t.current = ROLE_SECONDARY;
	t.reason = "failover";
	counters_published(NAME, "failover", "secondary");
	counters_converged(NAME, 0.003);
	counters_converged(NAME, 100);
	counters_health_check(NAME, "secondary", 0.0004);
	counters_validation(NAME, "primary", "rejected");
	counters_client_gone("closed the connection");
	counters_client_gone("protocol violation");
	counters_client_gone("not reading its messages (output queue full)");

	CHECK_INT(metrics_render(&a, NULL, NULL, &text, &len), ==, 0);
	CHECK_INT(strlen(text), ==, len);
	CHECK(text[len - 1] == '\n');
	CHECK(strstr(text, "dbswap_target_generation{" LABEL "} 2\n"));
	/* Every server has its series: a switch moves the 1. */
	CHECK(strstr(text, "dbswap_target_server{" LABEL
			   ",server=\"primary\"} 0\n"));
	CHECK(strstr(text, "dbswap_target_server{" LABEL
			   ",server=\"secondary\"} 1\n"));
	CHECK(strstr(text, "dbswap_target_server{" LABEL
			   ",server=\"none\"} 0\n"));
	CHECK(strstr(text, "dbswap_server_switches_total{" LABEL
			   ",reason=\"failover\",to=\"secondary\"} 1\n"));
	CHECK(!strstr(text, "dbswap_failovers_total"));
	/* Not started: the listener's family, no sample. */
	CHECK(strstr(text, "# TYPE dbswap_metrics_listener_up gauge\n"));
	CHECK(!strstr(text, "\ndbswap_metrics_listener_up "));
	CHECK(strstr(text, "dbswap_publishes_total{" LABEL
			   ",reason=\"rotation\"} 1\n"));
	CHECK(strstr(text, "dbswap_validations_total{" LABEL ",server=\"primary\""
			   ",result=\"rejected\"} 1\n"));
	/* Cumulative: 0.003 in every bucket from 0.005 on, 100 only in
	 * +Inf. */
	CHECK(strstr(text, "dbswap_convergence_seconds_bucket{" LABEL
			   ",le=\"0.001\"} 0\n"));
	CHECK(strstr(text, "dbswap_convergence_seconds_bucket{" LABEL
			   ",le=\"0.005\"} 1\n"));
	CHECK(strstr(text, "dbswap_convergence_seconds_bucket{" LABEL
			   ",le=\"60\"} 1\n"));
	CHECK(strstr(text, "dbswap_convergence_seconds_bucket{" LABEL
			   ",le=\"+Inf\"} 2\n"));
	CHECK(strstr(text, "dbswap_convergence_seconds_sum{" LABEL
			   "} 100.003\n"));
	CHECK(strstr(text, "dbswap_convergence_seconds_count{" LABEL "} 2\n"));
	CHECK(strstr(text, "dbswap_client_disconnects_total{reason=\"closed\"} "
			   "1\n"));
	CHECK(strstr(text, "dbswap_client_disconnects_total{reason=\"protocol\"} "
			   "1\n"));
	CHECK(strstr(text, "dbswap_client_disconnects_total{reason=\"slow\"} "
			   "1\n"));
	CHECK(strstr(text, "# TYPE dbswap_convergence_seconds histogram\n"));
	CHECK(!strstr(text, "secretpw"));
	CHECK(!strstr(text, "db.example"));
	/* No health monitor: no health-check series for the target. */
	CHECK(!strstr(text, "dbswap_health_check_seconds_count{"));
	free(text);

	/* A reader who may see no target: the families, no series naming
	 * one. */
	CHECK_INT(metrics_render(&a, hide_all, NULL, &text, &len), ==, 0);
	CHECK(strstr(text, "# TYPE dbswap_target_generation gauge\n"));
	CHECK(!strstr(text, "target="));
	CHECK(strstr(text, "dbswap_clients 0\n"));
	free(text);

	CHECK_INT(metrics_health(&a, &text, &len), ==, 1);
	CHECK(strstr(text, "\"A\\\"b\\\\c\\u000ad\":{\"healthy\":true,"
			   "\"problem\":null,\"generation\":2,"
			   "\"currentDatabase\":\"secondary\""));
	CHECK(!strstr(text, "secretpw"));
	free(text);

	/* The server in use, monitored: suspect and recovering are still
	 * healthy (and not up); down and rejected are not healthy. */
	static const struct {
		enum health_state state;
		int healthy;
		const char *problem;
	} cases[] = {
		{ HEALTH_UNKNOWN, 1, "null" },
		{ HEALTH_UP, 1, "null" },
		{ HEALTH_SUSPECT, 1, "null" },
		{ HEALTH_RECOVERING, 1, "null" },
		{ HEALTH_DOWN, 0, "\"the secondary is down\"" },
		{ HEALTH_REJECTED, 0,
		  "\"credentials rejected by the secondary\"" },
	};
	struct health hs = { 0 };
	char want[128];
	t.src[ROLE_SECONDARY].health = &hs;
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		hs.state = cases[i].state;
		CHECK_INT(metrics_health(&a, &text, &len), ==,
			  cases[i].healthy);
		snprintf(want, sizeof(want), "\"problem\":%s,",
			 cases[i].problem);
		CHECK(strstr(text, want));
		free(text);
		CHECK_INT(metrics_render(&a, NULL, NULL, &text, &len), ==, 0);
		snprintf(want, sizeof(want),
			 "dbswap_target_available{" LABEL "} %d\n",
			 cases[i].healthy);
		CHECK(strstr(text, want));
		snprintf(want, sizeof(want),
			 "dbswap_server_up{" LABEL ",server=\"secondary\"} %d\n",
			 hs.state == HEALTH_UP);
		CHECK(strstr(text, want));
		free(text);
	}
	t.src[ROLE_SECONDARY].health = NULL;

	t.current = ROLE_NONE;
	CHECK_INT(metrics_health(&a, &text, &len), ==, 0);
	CHECK(strstr(text, "{\"status\":\"unavailable\""));
	CHECK(strstr(text, "\"problem\":\"no server available\""));
	free(text);
	counters_reset();
}

static void test_addresses(void)
{
	static const char *const good[] = {
		"127.0.0.1:9187", "127.1.2.3:1", "localhost:65535", "[::1]:9187",
	};
	static const char *const bad[] = {
		"0.0.0.0:9187", "10.0.0.1:9187", "[::]:9187", "[::2]:1",
		"127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":9187",
		"[::1:9187", "db.example:80", "127.0.0.1:9187x", "",
	};
	char why[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
		if (!metrics_addr_ok(good[i], why, sizeof(why))) {
			fprintf(stderr, "refused %s: %s\n", good[i], why);
			check_failed++;
		}
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		if (metrics_addr_ok(bad[i], why, sizeof(why))) {
			fprintf(stderr, "accepted %s\n", bad[i]);
			check_failed++;
		}
}

int main(void)
{
	test_render();
	test_addresses();
	return check_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

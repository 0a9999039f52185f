/*
 * Env parser benchmark: how long common/env.c takes on the worst inputs
 * found for it, each exactly ENV_FILE_MAX (256 KiB) bytes, the largest
 * file the agent reads.  Driven by tests/bench/parse.py; needs nothing
 * else (no PostgreSQL, no agent).
 *
 *   env-bench [--runs N] [CASE ...]
 *
 * Runs every case (or the ones named) N times (default 10).  Each run is
 * one env_parse_with() with a lookup into a lower layer, as the agent's
 * layers.c does it: an env_file looked up with env_file_get().  The lower
 * layer is a file of three lines, except for refs-lower.  The cases, each
 * built to hit one path that was super-linear:
 *
 *   refs-undefined    A=${B} on every line, B defined nowhere: every
 *                     reference searched the whole file
 *   refs-lower        A=${L} on every line, L defined only in the lower
 *                     layer, itself a 256 KiB file of distinct names
 *   distinct-names    V1=${V0}, V2=${V0}, ...: many names in the index,
 *                     each line referring to the first
 *   skipped-defaults  ${S:-${B}} over and over, S set and B 63 KiB: a
 *                     default that is not used was built, then dropped
 *   used-defaults     ${U:-${U:-...x}} eight deep, U unset: every level
 *                     looks U up
 *   literal           long literal values, no expansion: the floor
 *
 * Output: one JSON object per line and case, raw figures only:
 *   {"case": NAME, "bytes": n, "runs": N, "entries": entries parsed,
 *    "status": "ok" or "L:C: message", "median_ms": m, "max_ms": m,
 *    "min_ms": m}
 * Only the parse is timed: not building the text, not env_file_fini().
 * Exit status 0, 1 if a case failed to parse, 2 for bad usage.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/env.h"
#include "common/util.h"

struct text {
	char *p;
	size_t len, cap;
};

/* Appends printf-style; the benchmark's memory is not worth recovering
 * from: running out ends the process. */
__attribute__((format(printf, 2, 3)))
static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			abort();
		if ((size_t)n < t->cap - t->len)
			break;
		t->cap = t->cap * 2 + (size_t)n;
		t->p = realloc(t->p, t->cap);
		if (!t->p)
			abort();
	}
	t->len += (size_t)n;
}

static struct text text_new(void)
{
	struct text t = { .cap = ENV_FILE_MAX + 4096 };

	t.p = malloc(t.cap);
	if (!t.p)
		abort();
	t.p[0] = '\0';
	return t;
}

/* Appends line (which ends with \n) while it fits in ENV_FILE_MAX. */
static void fill(struct text *t, const char *line)
{
	size_t n = strlen(line);

	while (t->len + n <= ENV_FILE_MAX)
		put(t, "%s", line);
}

/* Brings the text to exactly ENV_FILE_MAX bytes with a comment. */
static void pad(struct text *t)
{
	size_t rest = ENV_FILE_MAX - t->len;

	if (rest == 0)
		return;
	if (rest == 1) {
		put(t, "\n");
		return;
	}
	put(t, "#%*s\n", (int)(rest - 2), "");
}

/* The lower layer of refs-lower: a 256 KiB file of distinct names, L
 * first, so that a search from the last definition back finds it last. */
static struct text make_big_lower(void)
{
	struct text t = text_new();
	unsigned i;

	put(&t, "L=lower\n");
	for (i = 0; t.len + 16 <= ENV_FILE_MAX; i++)
		put(&t, "W%u=\n", i);
	pad(&t);
	return t;
}

/* The lower layer of the other cases: an agent's usual environment. */
static const char small_lower[] = "HOME=/home/app\nPGHOST=db.internal\nPGPORT=5432\n";

static struct text make_case(const char *name)
{
	struct text t = text_new();
	unsigned i, j;

	if (strcmp(name, "refs-undefined") == 0) {
		fill(&t, "A=${B}\n");
	} else if (strcmp(name, "refs-lower") == 0) {
		fill(&t, "A=${L}\n");
	} else if (strcmp(name, "distinct-names") == 0) {
		put(&t, "V0=x\n");
		for (i = 1; t.len + 24 <= ENV_FILE_MAX; i++)
			put(&t, "V%u=${V0}\n", i);
	} else if (strcmp(name, "skipped-defaults") == 0) {
		/* B: 63 KiB by expansion, so that the defaults get the rest
		 * of the file.  A line's own value is one byte per default:
		 * 1000 of them and B still fit in ENV_VALUE_MAX, which the
		 * old parser applied to the default it dropped. */
		put(&t, "S=x\nX=%01024d\nB=", 0);
		for (i = 0; i < 63; i++)
			put(&t, "${X}");
		put(&t, "\n");
		while (t.len + 16 + 1000 * 10 <= ENV_FILE_MAX) {
			put(&t, "A=");
			for (j = 0; j < 1000; j++)
				put(&t, "${S:-${B}}");
			put(&t, "\n");
		}
		/* The rest, too: lines of fewer defaults. */
		while (t.len + 16 + 10 <= ENV_FILE_MAX) {
			put(&t, "A=");
			for (j = 0; j < 1000 && t.len + 2 + 10 <= ENV_FILE_MAX; j++)
				put(&t, "${S:-${B}}");
			put(&t, "\n");
		}
	} else if (strcmp(name, "used-defaults") == 0) {
		fill(&t, "A=${U:-${U:-${U:-${U:-${U:-${U:-${U:-${U:-x}}}}}}}}\n");
	} else if (strcmp(name, "literal") == 0) {
		while (t.len + 60000 + 16 <= ENV_FILE_MAX)
			put(&t, "A=%060000d\n", 0);
	} else {
		free(t.p);
		return (struct text){ 0 };
	}
	pad(&t);
	return t;
}

static const char *const cases[] = {
	"refs-undefined", "refs-lower", "distinct-names",
	"skipped-defaults", "used-defaults", "literal",
};

/* As agent/layers.c looks up the layers below a file. */
static const char *lookup_lower(const char *name, void *data)
{
	return env_file_get(data, name);
}

static double now_ms_f(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Runs one case runs times and prints its line; returns 0, or -1 when the
 * text does not parse. */
static int bench_case(const char *name, int runs, struct env_file *lower)
{
	struct env_parse_opts opts = { .lookup = lookup_lower, .data = lower };
	struct text t = make_case(name);
	struct env_error err;
	struct env_file f;
	double *ms, t0;
	size_t entries = 0;
	int i, r = 0;

	ms = calloc((size_t)runs, sizeof(*ms));
	if (!ms)
		abort();
	for (i = 0; i < runs; i++) {
		t0 = now_ms_f();
		r = env_parse_with(t.p, t.len, &opts, &f, &err);
		ms[i] = now_ms_f() - t0;
		entries = f.n;
		env_file_fini(&f);
	}
	qsort(ms, (size_t)runs, sizeof(*ms), cmp_double);
	printf("{\"case\": \"%s\", \"bytes\": %zu, \"runs\": %d, \"entries\": %zu, ", name,
	       t.len, runs, entries);
	if (r == 0)
		printf("\"status\": \"ok\", ");
	else
		printf("\"status\": \"%u:%u: %s\", ", err.line, err.column,
		       r == -EINVAL ? err.message : "out of memory");
	printf("\"median_ms\": %.3f, \"max_ms\": %.3f, \"min_ms\": %.3f}\n",
	       runs % 2 ? ms[runs / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2, ms[runs - 1],
	       ms[0]);
	fflush(stdout);
	free(ms);
	free(t.p);
	return r == 0 ? 0 : -1;
}

static bool known(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		if (strcmp(cases[i], name) == 0)
			return true;
	}
	return false;
}

int main(int argc, char **argv)
{
	struct env_file big, small;
	const char *const *names;
	struct text lt;
	size_t k, n;
	int i, first = 1, runs = 10, failed = 0;
	char *end;

	if (argc > 2 && strcmp(argv[1], "--runs") == 0) {
		runs = (int)strtol(argv[2], &end, 10);
		if (*end || runs < 1 || runs > 100000) {
			fprintf(stderr, "env-bench: --runs wants a number from 1 to 100000\n");
			return 2;
		}
		first = 3;
	}
	for (i = first; i < argc; i++) {
		if (!known(argv[i])) {
			fprintf(stderr, "usage: env-bench [--runs N] [CASE ...]; no case %s\n",
				argv[i]);
			return 2;
		}
	}
	lt = make_big_lower();
	if (env_parse(lt.p, lt.len, NULL, NULL, &big, NULL) != 0 ||
	    env_parse(small_lower, strlen(small_lower), NULL, NULL, &small, NULL) != 0) {
		fprintf(stderr, "env-bench: a lower layer does not parse\n");
		return 1;
	}
	/* No case named: all of them. */
	names = first < argc ? (const char *const *)argv + first : cases;
	n = first < argc ? (size_t)(argc - first) : ARRAY_SIZE(cases);
	for (k = 0; k < n; k++)
		failed |= bench_case(names[k], runs,
				     streq(names[k], "refs-lower") ? &big : &small) < 0;
	env_file_fini(&big);
	env_file_fini(&small);
	free(lt.p);
	return failed ? 1 : 0;
}

/*
 * Unit tests for the load generators' latency histogram
 * (tests/helpers/loadgen.c): bucket boundaries, midpoints within 1 %, and
 * nearest-rank percentiles.
 */
#include "check.h"
#include "loadgen.h"

static struct loadgen_hist a, b, total;

/* Every value maps to a bucket whose midpoint is within 1 / 128 of it,
 * buckets are in order, and exact below 2 * SUB. */
static void test_buckets(void)
{
	size_t prev = 0;

	for (uint64_t v = 0; v < 2 * LOADGEN_HIST_SUB; v++) {
		CHECK_INT(loadgen_hist_index(v), ==, v);
		CHECK_INT(loadgen_hist_value(loadgen_hist_index(v)), ==, v);
	}
	for (uint64_t v = 1; v < ((uint64_t)1 << LOADGEN_HIST_MAX_BITS);
	     v += v / 97 + 1) {
		size_t i = loadgen_hist_index(v);
		uint64_t mid = loadgen_hist_value(i);
		uint64_t diff = mid > v ? mid - v : v - mid;

		CHECK(i >= prev);
		CHECK(i < LOADGEN_HIST_BUCKETS - 1 || v >> 39);
		CHECK(diff * 2 * LOADGEN_HIST_SUB <= v + 1);
		prev = i;
	}
	/* The edges of one power of two. */
	CHECK_INT(loadgen_hist_index(128), ==, 128);
	CHECK_INT(loadgen_hist_index(129), ==, 128);
	CHECK_INT(loadgen_hist_index(130), ==, 129);
	CHECK_INT(loadgen_hist_index(255), ==, 191);
	CHECK_INT(loadgen_hist_index(256), ==, 192);
	CHECK_INT(loadgen_hist_value(128), ==, 129);
	CHECK_INT(loadgen_hist_index(((uint64_t)1 << LOADGEN_HIST_MAX_BITS) - 1),
		  ==, LOADGEN_HIST_BUCKETS - 1);
	CHECK_INT(loadgen_hist_index((uint64_t)1 << LOADGEN_HIST_MAX_BITS), ==,
		  LOADGEN_HIST_BUCKETS - 1);
	CHECK_INT(loadgen_hist_index(UINT64_MAX), ==, LOADGEN_HIST_BUCKETS - 1);
}

static void test_percentiles(void)
{
	CHECK_INT(loadgen_hist_n(&a), ==, 0);
	CHECK_INT(loadgen_hist_pct(&a, 50), ==, 0);
	/* 1..100 over two histograms, merged. */
	for (uint64_t v = 1; v <= 100; v++)
		loadgen_hist_add(v % 2 ? &a : &b, v);
	loadgen_hist_merge(&total, &a);
	loadgen_hist_merge(&total, &b);
	CHECK_INT(loadgen_hist_n(&total), ==, 100);
	CHECK_INT(loadgen_hist_max(&total), ==, 100);
	CHECK_INT(loadgen_hist_pct(&total, 50), ==, 50);
	CHECK_INT(loadgen_hist_pct(&total, 99), ==, 99);
	CHECK_INT(loadgen_hist_pct(&total, 100), ==, 100);
	CHECK_INT(loadgen_hist_pct(&total, 0), ==, 1);
	/* Never above the exact maximum, though the bucket's midpoint is. */
	loadgen_hist_add(&b, 1000);
	CHECK_INT(loadgen_hist_value(loadgen_hist_index(1000)), >, 1000);
	CHECK_INT(loadgen_hist_pct(&b, 100), ==, 1000);
	/* One value: every percentile is it (within its bucket). */
	CHECK_INT(loadgen_hist_pct(&a, 1), ==, 1);
}

static void test_parse_int(void)
{
	CHECK_INT(loadgen_parse_int("t", "--x", "42", 1, 100), ==, 42);
	CHECK_INT(loadgen_parse_int("t", "--x", "0", 0, 0), ==, 0);
}

int main(void)
{
	test_buckets();
	test_percentiles();
	test_parse_int();
	return check_exit();
}

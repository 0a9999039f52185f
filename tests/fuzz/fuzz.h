/*
 * Shared by the libFuzzer targets in this folder: the input size cap and a
 * check that survives NDEBUG.  A failed check aborts, which libFuzzer
 * reports as a crash with the input that caused it.
 *
 * Include from exactly one .c file (each target is one executable).
 */
#ifndef DBSWAP_TESTS_FUZZ_H
#define DBSWAP_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Larger inputs only make each run slower: every limit the code has
 * (IPC_FRAME_MAX, ENV_VALUE_MAX) is reachable within 64 KiB, and tmux's
 * fuzzers cap their inputs the same way.  dev.sh passes the same number as
 * -max_len. */
#define FUZZ_INPUT_MAX (64 * 1024)

#define FUZZ_CHECK(expr)                                                   \
	do {                                                               \
		if (!(expr)) {                                             \
			fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n",  \
				__FILE__, __LINE__, #expr);                \
			abort();                                           \
		}                                                          \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif

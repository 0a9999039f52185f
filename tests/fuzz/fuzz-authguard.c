/*
 * libFuzzer target: the guard on libpq's reads (agent/authguard.c).
 *
 * The input is a server's byte stream after the start-up packet, and the
 * pieces it arrives in: the first byte says how many of the following
 * bytes are piece sizes (each 1 to 256), the rest is the stream.  The
 * stream is fed to authguard_vet() piece by piece, the way the guard
 * sees a socket: all that has arrived and was not taken yet.
 *
 * An independent reading of the stream finds the first message libpq
 * must not get (a cleartext request, a length no message has) and where
 * a reader that takes only vetted bytes must stop.  Checked:
 *   - nothing at or after that message's first byte is ever taken;
 *   - the guard refuses once that message's header has arrived, never
 *     before, and never without such a message;
 *   - without such a message, once everything has arrived, all was taken
 *     but a last header still too short to vet (a reader that stalls
 *     would hang the connection to its deadline).
 */
#include <stdbool.h>
#include <string.h>

#include "agent/authguard.h"
#include "fuzz.h"

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | b[3];
}

/* Where the first message that must not be read starts (n when none
 * does, or its header is cut), and in *end where a vetted reader stops
 * when everything has arrived. */
static size_t reference(const uint8_t *s, size_t n, size_t *end)
{
	size_t at = 0;

	while (at < n) {
		size_t need = s[at] == 'R' ? 9 : 5;
		uint32_t len;
		if (n - at < need)
			break;
		len = be32(s + at + 1);
		if (len < 4 || (s[at] == 'R' && (len < 8 || be32(s + at + 5) == 3)))
			return *end = at;
		if ((uint64_t)len + 1 >= n - at) {
			*end = n;
			return n;
		}
		at += (size_t)len + 1;
	}
	*end = at;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t npieces, n, bad, end, arrived = 0, taken = 0, p = 0;
	const uint8_t *pieces, *s;
	const char *refused = NULL;
	uint64_t left = 0;

	if (size < 1 || size > FUZZ_INPUT_MAX)
		return 0;
	npieces = data[0];
	if (size - 1 < npieces)
		return 0;
	pieces = data + 1;
	s = data + 1 + npieces;
	n = size - 1 - npieces;
	bad = reference(s, n, &end);

	while (!refused) {
		size_t take;
		arrived = p < npieces ? arrived + pieces[p] + 1u : n;
		arrived = arrived < n ? arrived : n;
		p++;
		take = authguard_vet(&left, s + taken, arrived - taken,
				     &refused);
		if (refused) {
			FUZZ_CHECK(take == 0);
			FUZZ_CHECK(bad < n);
			FUZZ_CHECK(taken <= bad);
			FUZZ_CHECK(arrived >= bad + (s[bad] == 'R' ? 9 : 5));
			break;
		}
		FUZZ_CHECK(taken + take <= arrived);
		FUZZ_CHECK(bad == n || taken + take <= bad);
		taken += take;
		if (arrived == n) {
			/* Everything is here: a bad message would have been
			 * seen, and the reader is where it must stop. */
			FUZZ_CHECK(bad == n);
			FUZZ_CHECK(taken == end);
			break;
		}
	}
	return 0;
}

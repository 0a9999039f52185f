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
 * must not get (a cleartext request, an authentication request whose
 * length is not what libpq 15 reads for its code, a length no message
 * has) and where a reader that takes only vetted bytes must stop.
 * Checked:
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

/* Whether libpq 15 reads exactly the authentication request m (len its
 * length field, the message whole) and may answer it: written apart from
 * the guard, from libpq's pg_fe_sendauth(). */
static bool request_ok(const uint8_t *m, uint32_t len)
{
	uint32_t code = be32(m + 5);
	size_t i = 9, n = (size_t)len + 1;

	if (code == 0 || code == 7 || code == 9)
		return len == 8;
	if (code == 5)
		return len == 12;
	if (code == 8 || code == 11 || code == 12)
		return true;
	if (code != 10)
		return false; /* 3 (cleartext) and what libpq does not do */
	/* SASL: NUL-terminated names up to an empty one, which ends it. */
	while (i < n && m[i] != 0) {
		while (i < n && m[i] != 0)
			i++;
		if (i == n)
			return false;
		i++;
	}
	return i + 1 == n;
}

/* Where the first message that must not be read starts (n when none
 * does, or not enough of it is here to tell), in *need how many bytes
 * from there tell it, and in *end where a vetted reader stops when
 * everything has arrived. */
static size_t reference(const uint8_t *s, size_t n, size_t *need,
			size_t *end)
{
	size_t at = 0;

	while (at < n) {
		uint32_t len;
		if (n - at < 5)
			break;
		len = be32(s + at + 1);
		if (len < 4 || (s[at] == 'R' && (len < 8 || len > 2000))) {
			*need = 5;
			return *end = at;
		}
		if (s[at] == 'R') {
			if (n - at < (size_t)len + 1)
				break; /* taken whole or not at all */
			if (!request_ok(s + at, len)) {
				*need = (size_t)len + 1;
				return *end = at;
			}
		}
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
	size_t npieces, n, bad, need = 0, end, arrived = 0, taken = 0, p = 0;
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
	bad = reference(s, n, &need, &end);

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
			FUZZ_CHECK(arrived >= bad + need);
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

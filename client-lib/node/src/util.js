/*
 * Small helpers shared by the client and the pool.
 */

/**
 * A retry delay: first * 2^attempt, at most max, with jitter (between half
 * and all of it) so that clients that lost the agent together do not come
 * back together.  The same rule as libdbswap's backoff_ms().
 * @param {number} attempt 0 for the first retry
 * @param {number} first
 * @param {number} max
 */
export function backoff(attempt, first, max) {
  let base = first
  for (let i = 0; i < attempt && base < max; i++) base *= 2
  base = Math.min(base, max)
  return Math.floor(base / 2 + Math.random() * (base / 2 + 1))
}

/**
 * Cuts s to at most max bytes of UTF-8, on a character boundary, ending in
 * "..." when it had to cut.
 * @param {string} s
 * @param {number} max
 */
export function truncateUtf8(s, max) {
  if (Buffer.byteLength(s) <= max) return s
  const buf = Buffer.from(s)
  let end = max - 3
  // Step back over continuation bytes (10xxxxxx) to a character's start.
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--
  return buf.subarray(0, end).toString() + '...'
}

/**
 * setTimeout that never keeps the process alive by itself.
 * @param {() => void} fn
 * @param {number} ms
 */
export function unrefTimer(fn, ms) {
  const t = setTimeout(fn, ms)
  t.unref()
  return t
}

/**
 * The default log function: lines on stderr, as libdbswap's, debug ones
 * left out.
 * @param {'debug' | 'info' | 'warn' | 'error'} level
 * @param {string} message
 */
export function defaultLog(level, message) {
  if (level !== 'debug') process.stderr.write(`dbswap: ${message}\n`)
}

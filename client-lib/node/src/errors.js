/*
 * The one error class of the package.  Every failure that dbswap itself
 * decides (an error the agent sent, a protocol violation, a timeout, no
 * server available) is a DbswapError with a string `code`; errors of the
 * database driver (pg) pass through as pg made them.
 *
 * Codes the agent sends (PROTOCOL.md, "Error codes"): protocol, version,
 * hello-required, unknown-type, unknown-target, not-subscribed, limit,
 * refused, forbidden, internal.  Codes this package adds:
 *   timeout       a request got no answer in time
 *   disconnected  the connection to the agent was lost before the answer
 *   closed        the client was closed (or the pool ended)
 *   unavailable   the agent reports no database server available
 *   no-value      the pool has no value for its target, and none is coming
 *   conninfo      a connection string that cannot be used (never quoted)
 *   session       a server of the wrong kind for target_session_attrs
 *                 (slot.js; the value's next host is tried first)
 *   busy          a second pool for one target on one Client (client.js)
 *   usage         the package used in a way it cannot work (a poolFactory that
 *                 drops the config's symbol keys)
 * The pool also fails checkouts with 'timeout' when the agent answered
 * hello but not its subscribe.
 */

export class DbswapError extends Error {
  /**
   * @param {string} code
   * @param {string} message never holds a secret
   * @param {{ cause?: unknown, target?: string, targets?: string[] }} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause })
    this.name = 'DbswapError'
    this.code = code
    if (extra.target !== undefined) this.target = extra.target
    if (extra.targets !== undefined) this.targets = extra.targets
  }
}

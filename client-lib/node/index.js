/*
 * dbswap: follow the database credentials that dbswapd publishes.
 *
 *   createPool()  a drop-in pg.Pool that swaps make-before-break on every
 *                 rotation and failover, and tells the agent when the old
 *                 value is out of use
 *   Client        the protocol client: subscribe, updates, ack, requests
 */
export { Client, Update, RECONNECT_FIRST_MS, RECONNECT_MAX_MS, REQUEST_TIMEOUT_MS } from './src/client.js'
export { Pool, createPool, DRAIN_TIMEOUT_MS, AUTH_TRIES, WARM_TIMEOUT_MS, CONNECT_WAIT_MS } from './src/pool.js'
export { DbswapError } from './src/errors.js'
export { maskConninfo, parseConninfo, translate as translateConninfo, hostConfig as pgHostConfig } from './src/conninfo.js'
export {
  PROTOCOL_VERSION,
  PROTOCOL_VERSION_MIN,
  DEFAULT_SOCKET,
  FRAME_MAX,
  ErrorCode,
} from './src/protocol.js'

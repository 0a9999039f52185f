/*
 * The dbswap wire protocol, version 2 (ipc/PROTOCOL.md is the contract):
 * frames, messages, their fields and limits.  It knows nothing of
 * connections, subscriptions or pools.
 *
 * A frame is a 4-byte big-endian body length and a body of exactly one
 * msgpack map.  Bodies are checked in two steps: a walk over the raw bytes
 * (structure, nesting, string keys, no key twice, no NUL in a string, the
 * reserved byte 0xc1, no trailing bytes), then a check of every field of
 * the message's type.  Anything wrong is a violation: decodeMessage()
 * throws a DbswapError with code 'protocol' and a message that never quotes
 * a value (a value may be a secret).
 *
 * Integers travel as numbers when they fit in a JavaScript number exactly,
 * else as bigints; encode() writes both.
 */
import { Decoder, Encoder } from '@msgpack/msgpack'

import { DbswapError } from './errors.js'

/** The version this package offers first. */
export const PROTOCOL_VERSION = 2
/** The oldest version it falls back to for an older agent. */
export const PROTOCOL_VERSION_MIN = 1
/** Length prefix of every frame. */
export const FRAME_HEADER = 4
/** Largest frame body: far above any message, and it bounds what a peer
 * can make the other buffer.  A larger announced length is refused before
 * anything is read into memory for it. */
export const FRAME_MAX = 65536
/** Names, targets, codes, reasons: env variable and program names are far
 * shorter; it bounds status and log lines. */
export const NAME_MAX = 255
/** A nack's message: one error line with context; it goes to the agent's
 * log and into status replies. */
export const NACK_MESSAGE_MAX = 1024
/** Targets per subscribe, and per client. */
export const SUBSCRIBE_MAX = 64
/** msgpack nesting, the message's own map being level 1: messages need 5
 * (the status reply), deeper is hostile. */
export const DEPTH_MAX = 6
/** An agent instance: 16 lowercase hex digits (64 random bits). */
export const INSTANCE_LEN = 16
/** Bounds of pool_max and pool_min: beyond any server's max_connections. */
export const POOL_SIZE_MAX = 10000
/** Bounds of pool_timeout_ms and pool_idle_timeout_ms: a day. */
export const POOL_TIMEOUT_MAX_MS = 86400000
/** The socket used when neither an option nor $DBSWAP_SOCKET names one. */
export const DEFAULT_SOCKET = '/run/dbswap/dbswap.sock'

/** Error codes the agent sends (PROTOCOL.md, "Error codes"). */
export const ErrorCode = Object.freeze({
  PROTOCOL: 'protocol',
  VERSION: 'version',
  HELLO_REQUIRED: 'hello-required',
  UNKNOWN_TYPE: 'unknown-type',
  UNKNOWN_TARGET: 'unknown-target',
  NOT_SUBSCRIBED: 'not-subscribed',
  LIMIT: 'limit',
  REFUSED: 'refused',
  FORBIDDEN: 'forbidden',
  INTERNAL: 'internal',
})

const UINT64_MAX = (1n << 64n) - 1n
const INT64_MIN = -(1n << 63n)
const INSTANCE_RE = /^[0-9a-f]{16}$/

function violation(why) {
  return new DbswapError(ErrorCode.PROTOCOL, why)
}

/* ---- the structure walk ---- */

/** What a msgpack head byte starts, for the fields' type checks. */
function kindOf(b) {
  if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) return 'int'
  if (b <= 0x8f || b === 0xde || b === 0xdf) return 'map'
  if (b <= 0x9f || b === 0xdc || b === 0xdd) return 'array'
  if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) return 'str'
  if (b === 0xc0) return 'nil'
  if (b === 0xc2 || b === 0xc3) return 'bool'
  if (b === 0xca || b === 0xcb) return 'float'
  if (b >= 0xc4 && b <= 0xc6) return 'bin'
  return 'ext'
}

/**
 * Checks the msgpack value at pos and returns where it ends.  keys: when
 * the value is a map key, the Set of the map's keys so far.
 */
function walk(buf, pos, level, keys) {
  if (pos >= buf.length) throw violation('frame ends inside a msgpack value')
  const b = buf[pos++]
  let count = 0 // elements of a container (a map counts keys and values)
  let skip = 0 // bytes of a scalar's payload
  let isMap = false
  let sizeBytes = 0
  const kind = kindOf(b)

  if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) {
    skip = 0
  } else if (b <= 0x8f) {
    isMap = true
    count = (b & 0x0f) * 2
  } else if (b <= 0x9f) {
    count = b & 0x0f
  } else if (b <= 0xbf) {
    skip = b & 0x1f
  } else {
    switch (b) {
      case 0xc4: case 0xd9: sizeBytes = 1; break
      case 0xc5: case 0xda: sizeBytes = 2; break
      case 0xc6: case 0xdb: sizeBytes = 4; break
      case 0xc7: sizeBytes = 1; skip = 1; break // ext: a type byte too
      case 0xc8: sizeBytes = 2; skip = 1; break
      case 0xc9: sizeBytes = 4; skip = 1; break
      case 0xcc: case 0xd0: skip = 1; break
      case 0xcd: case 0xd1: skip = 2; break
      case 0xca: case 0xce: case 0xd2: skip = 4; break
      case 0xcb: case 0xcf: case 0xd3: skip = 8; break
      case 0xd4: skip = 2; break
      case 0xd5: skip = 3; break
      case 0xd6: skip = 5; break
      case 0xd7: skip = 9; break
      case 0xd8: skip = 17; break
      case 0xdc: sizeBytes = 2; break
      case 0xdd: sizeBytes = 4; break
      case 0xde: sizeBytes = 2; isMap = true; break
      case 0xdf: sizeBytes = 4; isMap = true; break
      default: throw violation('frame holds the reserved msgpack byte 0xc1')
    }
    if (sizeBytes) {
      if (pos + sizeBytes > buf.length) throw violation('frame ends inside a msgpack value')
      const n = buf.readUIntBE(pos, sizeBytes)
      pos += sizeBytes
      if (kind === 'array' || kind === 'map') count = isMap ? n * 2 : n
      else skip += n
    }
  }

  if (kind === 'map' || kind === 'array') {
    if (level >= DEPTH_MAX) throw violation(`message nests deeper than ${DEPTH_MAX} levels`)
    // Every element takes at least a byte: a count beyond what is left is
    // a lie, refused before looping over it.
    if (count > buf.length - pos) throw violation('frame ends inside a msgpack value')
    const seen = isMap ? new Set() : null
    for (let i = 0; i < count; i++) {
      const isKey = isMap && i % 2 === 0
      if (pos >= buf.length) throw violation('frame ends inside a msgpack value')
      if (isKey && kindOf(buf[pos]) !== 'str') throw violation('a map has a key that is not a string')
      pos = walk(buf, pos, level + 1, isKey ? seen : null)
    }
    return pos
  }
  if (skip > buf.length - pos) throw violation('frame ends inside a msgpack value')
  if (kind === 'str') {
    const s = buf.subarray(pos, pos + skip)
    if (s.includes(0)) throw violation('a string holds a NUL byte')
    if (keys) {
      const key = s.toString('latin1') // bytewise identity
      if (keys.has(key)) throw violation('a map has the same key twice')
      keys.add(key)
    }
  }
  return pos + skip
}

/**
 * Checks a body's structure; returns the msgpack kind ('int', 'float',
 * 'str', ...) of each value of the top-level map, by key.
 * @param {Uint8Array} body
 */
function checkStructure(body) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  if (buf.length === 0) throw violation('frame is empty: no msgpack value')
  if (kindOf(buf[0]) !== 'map') throw violation('message is not a map')
  const end = walk(buf, 0, 0, null)
  if (end !== buf.length) throw violation('frame has bytes after its msgpack value')

  // The top-level map again, shallowly, for the kinds of its values.
  const kinds = new Map()
  let pos = 0
  let n
  const b = buf[pos++]
  if (b <= 0x8f) n = b & 0x0f
  else if (b === 0xde) { n = buf.readUInt16BE(pos); pos += 2 } else { n = buf.readUInt32BE(pos); pos += 4 }
  for (let i = 0; i < n; i++) {
    const keyStart = pos
    pos = walk(buf, pos, 1, null)
    const key = decoder.decode(buf.subarray(keyStart, pos))
    kinds.set(key, kindOf(buf[pos]))
    pos = walk(buf, pos, 1, null)
  }
  return kinds
}

/* ---- fields ---- */

const decoder = new Decoder({ useBigInt64: true })
const encoder = new Encoder({ useBigInt64: true })

/** 64-bit integers come as bigints: numbers when exact. */
function normalize(v) {
  if (typeof v === 'bigint') {
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
  }
  if (Array.isArray(v)) return v.map(normalize)
  if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const k of Object.keys(v)) v[k] = normalize(v[k])
  }
  return v
}

function isInteger(v) {
  return Number.isSafeInteger(v) || typeof v === 'bigint'
}

/**
 * Field checkers: each returns an error string, or null when the value is
 * good.  kind is the msgpack kind on the wire (null when encoding).
 */
const uint = (min = 0, max = UINT64_MAX) => (v, kind) => {
  if ((kind && kind !== 'int') || !isInteger(v)) return 'is not an integer'
  const b = BigInt(v)
  if (b < BigInt(min) || b > BigInt(max)) return `is out of range (${min} to ${max})`
  return null
}
const int = () => (v, kind) => {
  if ((kind && kind !== 'int') || !isInteger(v)) return 'is not an integer'
  const b = BigInt(v)
  return b < INT64_MIN || b > UINT64_MAX ? 'is out of range' : null
}
const str = (max) => (v, kind) => {
  if ((kind && kind !== 'str') || typeof v !== 'string') return 'is not a string'
  if (v.includes('\0')) return 'holds a NUL byte'
  return Buffer.byteLength(v) > max ? `is longer than ${max} bytes` : null
}
const bool = () => (v, kind) => ((kind && kind !== 'bool') || typeof v !== 'boolean' ? 'is not a boolean' : null)
const instance = () => (v, kind) =>
  (kind && kind !== 'str') || typeof v !== 'string' || !INSTANCE_RE.test(v)
    ? `is not ${INSTANCE_LEN} lowercase hex digits`
    : null
const names = () => (v, kind) => {
  if ((kind && kind !== 'array') || !Array.isArray(v)) return 'is not an array'
  if (v.length > SUBSCRIBE_MAX) return `names more than ${SUBSCRIBE_MAX} targets`
  for (const t of v) {
    const err = str(NAME_MAX)(t, null)
    if (err) return `has an entry that ${err}`
  }
  return null
}
const map = () => (v, kind) =>
  (kind && kind !== 'map') || !v || typeof v !== 'object' || Array.isArray(v) ? 'is not a map' : null
const mapsArray = () => (v, kind) => {
  if ((kind && kind !== 'array') || !Array.isArray(v)) return 'is not an array'
  return v.every((e) => map()(e, null) === null) ? null : 'has an entry that is not a map'
}

/** Strings, for which nil stands for absent. */
const STRINGY = new Set(['name', 'target', 'conninfo', 'reason', 'server', 'instance', 'code', 'message'])

const F = {
  id: uint(),
  version: uint(),
  name: str(NAME_MAX),
  pid: int(),
  instance: instance(),
  target: str(NAME_MAX),
  generation: uint(),
  conninfo: str(FRAME_MAX),
  reason: str(NAME_MAX),
  server: str(NAME_MAX),
  standby: bool(),
  force: bool(),
  code: str(NAME_MAX),
  message: str(FRAME_MAX),
}

/**
 * Every message type: its required and optional fields.  `from` says who
 * may send it ('agent', 'client' or 'both').
 */
export const MESSAGES = Object.freeze({
  hello: { from: 'both', required: { version: F.version, name: F.name, pid: F.pid }, optional: { instance: F.instance } },
  subscribe: { from: 'client', required: { targets: names() }, optional: {} },
  update: {
    from: 'agent',
    required: { target: F.target, generation: F.generation, conninfo: F.conninfo },
    optional: { reason: F.reason, server: F.server, standby: F.standby, instance: F.instance },
  },
  settings: {
    from: 'agent',
    required: { target: F.target },
    optional: {
      pool_max: uint(1, POOL_SIZE_MAX),
      pool_min: uint(0, POOL_SIZE_MAX),
      pool_timeout_ms: uint(0, POOL_TIMEOUT_MAX_MS),
      pool_idle_timeout_ms: uint(0, POOL_TIMEOUT_MAX_MS),
    },
  },
  ack: { from: 'client', required: { target: F.target, generation: F.generation }, optional: { instance: F.instance } },
  nack: {
    from: 'client',
    required: { target: F.target, generation: F.generation, message: str(NACK_MESSAGE_MAX) },
    optional: { instance: F.instance },
  },
  // The request has no fields; the reply's tree is described in
  // PROTOCOL.md and passed on as it is, its containers checked.
  status: { from: 'both', required: {}, optional: { agent: map(), targets: mapsArray(), files: mapsArray(), keys: mapsArray() } },
  reload: { from: 'client', required: {}, optional: {} },
  ping: { from: 'client', required: {}, optional: {} },
  failover: { from: 'client', required: { target: F.target }, optional: { force: F.force } },
  failback: { from: 'client', required: { target: F.target }, optional: { force: F.force } },
  reconnect: { from: 'client', required: {}, optional: { target: F.target } },
  ok: { from: 'agent', required: {}, optional: { generation: F.generation } },
  error: { from: 'both', required: { code: F.code, message: F.message }, optional: {} },
})

/**
 * Checks msg's fields against its type's spec and returns the message with
 * only the fields it knows (nil strings dropped).  kinds: from the wire, or
 * null for a message about to be encoded.
 */
function checkFields(msg, kinds) {
  const type = msg.type
  const typeErr = str(NAME_MAX)(type, kinds ? kinds.get('type') : null)
  if (typeErr) throw violation(`field "type" ${typeErr}`)
  const spec = MESSAGES[type]
  const out = { type }
  if (!spec) return out // a newer type: the caller decides
  const fields = [
    ...Object.entries(spec.required).map(([k, check]) => [k, check, true]),
    ...Object.entries(spec.optional).map(([k, check]) => [k, check, false]),
    ['id', F.id, false], // any message may carry one
  ]
  for (const [key, check, required] of fields) {
    const has = Object.hasOwn(msg, key) && msg[key] !== undefined
    const value = has ? msg[key] : undefined
    if (!has || (value === null && STRINGY.has(key))) {
      if (required) throw violation(`${type} message lacks field "${key}"`)
      continue
    }
    const err = check(value, kinds ? kinds.get(key) ?? null : null)
    if (err) throw violation(`field "${key}" of a ${type} message ${err}`)
    out[key] = value
  }
  if (type === 'settings' && out.pool_min !== undefined && out.pool_max !== undefined && out.pool_min > out.pool_max) {
    throw violation('settings message has pool_min over pool_max')
  }
  return out
}

/**
 * Decodes and checks one frame body.
 * @param {Uint8Array} body
 * @returns {{ type: string, [field: string]: unknown }} the message, with
 *   the fields of its type only; a type this module does not know comes
 *   back as { type } alone
 * @throws {DbswapError} code 'protocol', for any violation
 */
export function decodeMessage(body) {
  if (body.length > FRAME_MAX) throw violation(`frame of ${body.length} bytes is over the ${FRAME_MAX}-byte limit`)
  const kinds = checkStructure(body)
  let value
  try {
    value = decoder.decode(body)
  } catch {
    // The walk accepted it, so this is what the decoder refuses on its
    // own: the key "__proto__", or a malformed timestamp extension.
    throw violation('message cannot be decoded')
  }
  if (!Object.hasOwn(value, 'type')) throw violation('message has no "type" field')
  return checkFields(normalize(value), kinds)
}

/**
 * Encodes one message into a frame (header and body), after checking it
 * as the receiver will.
 * @param {{ type: string, [field: string]: unknown }} msg
 * @returns {Buffer}
 * @throws {DbswapError} code 'protocol' for a message that breaks the rules
 */
export function encodeMessage(msg) {
  const checked = MESSAGES[msg.type] ? checkFields(msg, null) : msg
  // The encoder writes numbers of 2^32 and more as floats when bigints are
  // enabled: such integers go as bigints.
  const wire = {}
  for (const [k, v] of Object.entries(checked)) {
    wire[k] = typeof v === 'number' && Number.isInteger(v) && (v > 0xffffffff || v < -0x80000000) ? BigInt(v) : v
  }
  const body = encoder.encode(wire)
  if (body.length > FRAME_MAX) throw violation(`message of ${body.length} bytes is over the ${FRAME_MAX}-byte limit`)
  const frame = Buffer.allocUnsafe(FRAME_HEADER + body.length)
  frame.writeUInt32BE(body.length, 0)
  frame.set(body, FRAME_HEADER)
  return frame
}

/**
 * Splits a byte stream into frame bodies.  A header announcing more than
 * FRAME_MAX is refused at once, before its body is waited for.
 */
export class FrameReader {
  #chunks = []
  #length = 0

  /**
   * @param {Buffer} chunk bytes as they came; the reader's from then on
   *   (zeroed once copied into a frame split across chunks)
   * @returns {Buffer[]} the bodies completed by them, in order
   * @throws {DbswapError} code 'protocol' for an oversized frame
   */
  push(chunk) {
    this.#chunks.push(chunk)
    this.#length += chunk.length
    const bodies = []
    for (;;) {
      if (this.#length < FRAME_HEADER) break
      const n = this.#peekLength()
      if (n > FRAME_MAX) throw violation(`frame of ${n} bytes announced, over the ${FRAME_MAX}-byte limit`)
      if (this.#length < FRAME_HEADER + n) break
      const frame = this.#take(FRAME_HEADER + n)
      bodies.push(frame.subarray(FRAME_HEADER))
    }
    return bodies
  }

  /** Bytes received and not yet part of a complete frame. */
  get pending() {
    return this.#length
  }

  #peekLength() {
    if (this.#chunks[0].length < FRAME_HEADER) this.#chunks = [this.#concat()]
    return this.#chunks[0].readUInt32BE(0)
  }

  /** The chunks as one buffer; the chunks are zeroed, since they may hold
   * a connection string and the copy is the one the caller zeroes. */
  #concat() {
    const all = Buffer.concat(this.#chunks)
    for (const c of this.#chunks) c.fill(0)
    return all
  }

  #take(n) {
    let out
    if (this.#chunks[0].length >= n) {
      out = this.#chunks[0].subarray(0, n)
      this.#chunks[0] = this.#chunks[0].subarray(n)
      if (this.#chunks[0].length === 0) this.#chunks.shift()
    } else {
      const all = this.#concat()
      out = all.subarray(0, n)
      this.#chunks = all.length > n ? [all.subarray(n)] : []
    }
    this.#length -= n
    return out
  }
}

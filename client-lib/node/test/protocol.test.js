/*
 * The protocol module: every message, every limit exactly and one past it,
 * and malformed input of each kind PROTOCOL.md names.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { encode } from '@msgpack/msgpack'

import {
  DEPTH_MAX,
  FRAME_HEADER,
  FRAME_MAX,
  FrameReader,
  NACK_MESSAGE_MAX,
  NAME_MAX,
  POOL_SIZE_MAX,
  POOL_TIMEOUT_MAX_MS,
  SUBSCRIBE_MAX,
  decodeMessage,
  encodeMessage,
} from '../src/protocol.js'

const INSTANCE = '5d1c0e93a7f2b648'

function body(frame) {
  return frame.subarray(FRAME_HEADER)
}

function roundTrip(msg) {
  return decodeMessage(body(encodeMessage(msg)))
}

/** A raw msgpack body from any JS value (no checks). */
function raw(value) {
  return Buffer.from(encode(value))
}

function assertViolation(bytes, pattern) {
  assert.throws(
    () => decodeMessage(bytes),
    (err) => err.name === 'DbswapError' && err.code === 'protocol' && (!pattern || pattern.test(err.message)),
  )
}

test('the first frame of the PROTOCOL.md example, byte for byte', () => {
  const frame = encodeMessage({ type: 'hello', version: 2, name: 'billing-api', pid: 4242, id: 1 })
  assert.equal(frame.readUInt32BE(0), 0x31)
  assert.equal(frame.length, 4 + 0x31)
  assert.deepEqual([...frame.subarray(4, 16)], [0x85, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f])
})

test('every message type round-trips', () => {
  const messages = [
    { type: 'hello', version: 2, name: 'app', pid: 42, id: 1 },
    { type: 'hello', version: 2, name: 'dbswapd 0.1.0', pid: 811, instance: INSTANCE, id: 1 },
    { type: 'subscribe', targets: ['DATABASE_URL', 'REPORTS_URL'], id: 2 },
    {
      type: 'update',
      target: 'DATABASE_URL',
      generation: 3,
      conninfo: 'postgresql://app:pw@db/app',
      reason: 'rotation',
      server: 'primary',
      standby: false,
      instance: INSTANCE,
    },
    { type: 'settings', target: 'DATABASE_URL', pool_max: 20, pool_min: 2, pool_timeout_ms: 5000, pool_idle_timeout_ms: 0 },
    { type: 'settings', target: 'DATABASE_URL' },
    { type: 'ack', target: 'DATABASE_URL', generation: 3, instance: INSTANCE },
    { type: 'nack', target: 'DATABASE_URL', generation: 5, instance: INSTANCE, message: 'timeout expired', id: 9 },
    { type: 'status', id: 3 },
    { type: 'status', id: 3, agent: { version: '0.1', instance: INSTANCE }, targets: [{ name: 'X', lagging: [{ pid: 1 }] }], files: [], keys: [] },
    { type: 'reload' },
    { type: 'ping', id: 4 },
    { type: 'failover', target: 'DATABASE_URL', id: 5 },
    { type: 'failback', target: 'DATABASE_URL' },
    { type: 'reconnect' },
    { type: 'reconnect', target: 'DATABASE_URL', id: 6 },
    { type: 'ok', id: 6, generation: 7 },
    { type: 'ok' },
    { type: 'error', code: 'unknown-target', message: 'no such target', id: 2 },
  ]
  for (const msg of messages) assert.deepEqual(roundTrip(msg), msg)
})

test('unknown keys are ignored, unknown types come back as their type alone', () => {
  const msg = decodeMessage(raw({ type: 'ok', id: 1, added_later: [1, 2, { x: 1.5 }] }))
  assert.deepEqual(msg, { type: 'ok', id: 1 })
  assert.deepEqual(decodeMessage(raw({ type: 'shiny-new', whatever: 1 })), { type: 'shiny-new' })
})

test('nil stands for an absent optional string, not for a required one', () => {
  const base = { type: 'update', target: 'T', generation: 1, conninfo: 'x', instance: INSTANCE }
  assert.deepEqual(decodeMessage(raw({ ...base, reason: null, server: null })), base)
  assertViolation(raw({ ...base, conninfo: null }), /lacks field "conninfo"/)
  assertViolation(raw({ ...base, generation: null }), /generation/)
  assertViolation(raw({ ...base, standby: null }), /standby/)
})

test('required fields: each missing one is a violation', () => {
  const cases = {
    hello: { version: 2, name: 'a', pid: 1 },
    update: { target: 'T', generation: 1, conninfo: 'x' },
    ack: { target: 'T', generation: 1 },
    nack: { target: 'T', generation: 1, message: 'm' },
    settings: { target: 'T' },
    subscribe: { targets: [] },
    failover: { target: 'T' },
    error: { code: 'c', message: 'm' },
  }
  for (const [type, fields] of Object.entries(cases)) {
    assert.ok(decodeMessage(raw({ type, ...fields })))
    for (const key of Object.keys(fields)) {
      const partial = { type, ...fields }
      delete partial[key]
      assertViolation(raw(partial), new RegExp(`lacks field "${key}"`))
    }
  }
})

test('field types: floats, strings, negatives and booleans where they do not belong', () => {
  const base = { type: 'update', target: 'T', generation: 1, conninfo: 'x' }
  assertViolation(raw({ ...base, generation: 1.5 }), /generation.*not an integer/)
  assertViolation(raw({ type: 'ok', generation: 2.5 }), /generation/)
  // 2.0 is a float on the wire, whatever JavaScript makes of it.
  const float2 = [0xcb, 0x40, 0, 0, 0, 0, 0, 0, 0]
  const exactFloat = Buffer.concat([Buffer.from([0x82]), raw('type'), raw('ok'), raw('id'), Buffer.from(float2)])
  assertViolation(exactFloat, /"id".*not an integer/)
  assertViolation(raw({ ...base, generation: -1 }), /generation.*out of range/)
  assertViolation(raw({ ...base, generation: '1' }), /generation/)
  assertViolation(raw({ ...base, target: 7 }), /target.*not a string/)
  assertViolation(raw({ ...base, standby: 'no' }), /standby.*not a boolean/)
  assertViolation(raw({ ...base, conninfo: new Uint8Array([1, 2]) }), /conninfo.*not a string/)
  assertViolation(raw({ type: 'hello', version: 2, name: 'a', pid: 'x' }), /pid/)
  assert.equal(decodeMessage(raw({ type: 'hello', version: 2, name: 'a', pid: -5 })).pid, -5)
})

test('names: 255 bytes pass, 256 do not (bytes, not characters)', () => {
  const ok = 'é'.repeat(127) + 'x' // 255 bytes
  assert.equal(Buffer.byteLength(ok), NAME_MAX)
  assert.equal(roundTrip({ type: 'failover', target: ok }).target, ok)
  assertViolation(raw({ type: 'failover', target: ok + 'y' }), /target.*longer than 255/)
  assertViolation(raw({ type: 'hello', version: 2, name: 'n'.repeat(256), pid: 1 }), /name/)
  assertViolation(raw({ type: 'error', code: 'c'.repeat(256), message: 'm' }), /code/)
  assert.throws(() => encodeMessage({ type: 'failover', target: ok + 'y' }), { code: 'protocol' })
})

test('a nack message: 1024 bytes pass, 1025 do not; an error message may be longer', () => {
  const base = { type: 'nack', target: 'T', generation: 1 }
  assert.ok(roundTrip({ ...base, message: 'm'.repeat(NACK_MESSAGE_MAX) }))
  assertViolation(raw({ ...base, message: 'm'.repeat(NACK_MESSAGE_MAX + 1) }), /message.*longer than 1024/)
  assert.ok(roundTrip({ type: 'error', code: 'c', message: 'm'.repeat(5000) }))
})

test('subscribe: 64 targets pass, 65 do not; each a name', () => {
  const targets = Array.from({ length: SUBSCRIBE_MAX }, (_, i) => `T${i}`)
  assert.deepEqual(roundTrip({ type: 'subscribe', targets }).targets, targets)
  assertViolation(raw({ type: 'subscribe', targets: [...targets, 'X'] }), /more than 64/)
  assertViolation(raw({ type: 'subscribe', targets: ['A', 5] }), /entry/)
  assertViolation(raw({ type: 'subscribe', targets: ['x'.repeat(256)] }), /entry/)
})

test('instance: 16 lowercase hex digits and nothing else', () => {
  const base = { type: 'ack', target: 'T', generation: 1 }
  assert.equal(roundTrip({ ...base, instance: INSTANCE }).instance, INSTANCE)
  for (const bad of ['5d1c0e93a7f2b64', '5d1c0e93a7f2b6480', '5D1C0E93A7F2B648', '5d1c0e93a7f2b64g', '', 12345]) {
    assertViolation(raw({ ...base, instance: bad }), /instance/)
  }
})

test('settings: each bound exactly and one past it, and pool_min over pool_max', () => {
  const s = (fields) => raw({ type: 'settings', target: 'T', ...fields })
  assert.equal(decodeMessage(s({ pool_max: 1 })).pool_max, 1)
  assert.equal(decodeMessage(s({ pool_max: POOL_SIZE_MAX })).pool_max, POOL_SIZE_MAX)
  assertViolation(s({ pool_max: 0 }), /pool_max/)
  assertViolation(s({ pool_max: POOL_SIZE_MAX + 1 }), /pool_max/)
  assert.equal(decodeMessage(s({ pool_min: 0 })).pool_min, 0)
  assertViolation(s({ pool_min: POOL_SIZE_MAX + 1 }), /pool_min/)
  assert.equal(decodeMessage(s({ pool_timeout_ms: POOL_TIMEOUT_MAX_MS })).pool_timeout_ms, POOL_TIMEOUT_MAX_MS)
  assertViolation(s({ pool_timeout_ms: POOL_TIMEOUT_MAX_MS + 1 }), /pool_timeout_ms/)
  assertViolation(s({ pool_idle_timeout_ms: POOL_TIMEOUT_MAX_MS + 1 }), /pool_idle_timeout_ms/)
  assert.ok(decodeMessage(s({ pool_min: 5, pool_max: 5 })))
  assertViolation(s({ pool_min: 6, pool_max: 5 }), /pool_min over pool_max/)
})

test('64-bit integers: exact as bigints beyond 2^53, and encoded as integers', () => {
  const big = 2n ** 63n + 5n
  const msg = roundTrip({ type: 'ack', target: 'T', generation: big })
  assert.equal(msg.generation, big)
  const max = 2n ** 64n - 1n
  assert.equal(roundTrip({ type: 'ok', generation: max }).generation, max)
  // 2^40 is a number, and goes out as uint64, not as a float.
  const frame = encodeMessage({ type: 'ok', generation: 2 ** 40 })
  assert.ok(frame.includes(0xcf))
  assert.equal(roundTrip({ type: 'ok', generation: 2 ** 40 }).generation, 2 ** 40)
})

test('malformed bodies are violations', () => {
  assertViolation(Buffer.alloc(0), /empty/)
  assertViolation(raw([1, 2]), /not a map/)
  assertViolation(raw('hello'), /not a map/)
  const ok = raw({ type: 'ok' })
  assertViolation(Buffer.concat([ok, Buffer.from([0xc0])]), /bytes after/)
  assertViolation(ok.subarray(0, ok.length - 1), /ends inside/)
  assertViolation(Buffer.from([0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xc1]), /reserved/)
  // A map announcing 65535 entries in a few bytes.
  assertViolation(Buffer.from([0xde, 0xff, 0xff, 0xa1, 0x61, 0x01]), /ends inside/)
  // A string claiming more bytes than the frame has.
  assertViolation(Buffer.from([0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xdb, 0xff, 0xff, 0xff, 0xff]), /ends inside/)
  assertViolation(raw({ id: 1 }), /no "type"/)
  assertViolation(raw({ type: 5 }), /"type"/)
})

test('keys: strings only, no key twice, no NUL anywhere', () => {
  // {1: 2, "type": "ok"}
  assertViolation(Buffer.from([0x82, 0x01, 0x02, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa2, 0x6f, 0x6b]), /key that is not a string/)
  // {"type": "ok", "type": "ok"}
  const kv = [0xa4, 0x74, 0x79, 0x70, 0x65, 0xa2, 0x6f, 0x6b]
  assertViolation(Buffer.from([0x82, ...kv, ...kv]), /same key twice/)
  // a duplicate deep inside an unknown field counts too
  const inner = [0x82, 0xa1, 0x61, 0x01, 0xa1, 0x61, 0x02]
  assertViolation(Buffer.from([0x82, ...kv, 0xa1, 0x78, ...inner]), /same key twice/)
  assertViolation(raw({ type: 'ok', x: 'a\0b' }), /NUL/)
  assertViolation(raw({ type: 'ok', 'a\0': 1 }), /NUL/)
  assertViolation(raw({ type: 'failover', target: 'A\0B' }), /NUL/)
  assert.throws(() => encodeMessage({ type: 'failover', target: 'A\0B' }), { code: 'protocol' })
  // A key the decoder refuses outright.
  const proto = Buffer.from([0x82, ...kv, 0xa9, ...Buffer.from('__proto__'), 0x80])
  assertViolation(proto, /cannot be decoded/)
})

test('nesting: 6 levels pass, 7 do not', () => {
  let deep = 1
  for (let i = 0; i < DEPTH_MAX - 1; i++) deep = [deep]
  assert.ok(decodeMessage(raw({ type: 'ok', x: deep }))) // map + 5 arrays = 6 levels
  assertViolation(raw({ type: 'ok', x: [deep] }), /deeper than 6/)
  // The deepest real message, a status reply, needs 5.
  const status = { type: 'status', targets: [{ lagging: [{ pid: 1 }] }] }
  assert.ok(decodeMessage(raw(status)))
})

test('status reply containers are checked', () => {
  assertViolation(raw({ type: 'status', targets: 'x' }), /targets/)
  assertViolation(raw({ type: 'status', targets: [1] }), /targets/)
  assertViolation(raw({ type: 'status', agent: [] }), /agent/)
})

test('frames: split anywhere, several in one chunk', () => {
  const frames = [
    encodeMessage({ type: 'ok', id: 1 }),
    encodeMessage({ type: 'update', target: 'T', generation: 2, conninfo: 'c'.repeat(300), instance: INSTANCE }),
    encodeMessage({ type: 'ok', id: 3 }),
  ]
  const all = Buffer.concat(frames)
  const reader = new FrameReader()
  const got = []
  // Copies: the reader zeroes the reads it joins (they are its own).
  for (let i = 0; i < all.length; i++) got.push(...reader.push(Buffer.from(all.subarray(i, i + 1))))
  assert.deepEqual(got.map((b) => decodeMessage(b).type), ['ok', 'update', 'ok'])
  assert.equal(reader.pending, 0)
  const together = new FrameReader().push(all)
  assert.equal(together.length, 3)
})

test('frame size: a body of 65536 bytes passes, a header announcing 65537 is refused before its body', () => {
  // An error whose message fills the frame exactly.
  const overhead = encode({ type: 'error', code: 'c', message: '' }).length + 2 // str8 -> str16 header
  const msg = { type: 'error', code: 'c', message: 'm'.repeat(FRAME_MAX - overhead) }
  const frame = encodeMessage(msg)
  assert.equal(frame.length, FRAME_HEADER + FRAME_MAX)
  assert.equal(new FrameReader().push(frame).length, 1)
  assert.equal(decodeMessage(body(frame)).message.length, msg.message.length)
  assert.throws(() => encodeMessage({ ...msg, message: msg.message + 'm' }), { code: 'protocol' })

  const header = Buffer.alloc(4)
  header.writeUInt32BE(FRAME_MAX + 1)
  assert.throws(() => new FrameReader().push(header), (err) => err.code === 'protocol' && /65537/.test(err.message))
  header.writeUInt32BE(0xffffffff)
  assert.throws(() => new FrameReader().push(header), { code: 'protocol' })
  assertViolation(Buffer.alloc(FRAME_MAX + 1), /over the 65536-byte limit/)
})

test('a zero-length frame is a frame whose body is a violation', () => {
  const bodies = new FrameReader().push(Buffer.from([0, 0, 0, 0]))
  assert.equal(bodies.length, 1)
  assertViolation(bodies[0], /empty/)
})

test('error messages never quote a value', () => {
  const secret = 'S3CRET-VALUE'
  const tries = [
    raw({ type: 'update', target: 'T', generation: 1, conninfo: 7, reason: secret }),
    raw({ type: 'update', target: secret.repeat(30), generation: 1, conninfo: secret }),
    raw({ type: 'ack', target: 'T', generation: 1, instance: secret }),
  ]
  for (const bytes of tries) {
    assert.throws(() => decodeMessage(bytes), (err) => !err.message.includes(secret))
  }
})

test('a frame split across reads: the reads are zeroed once copied into one (the client zeroes the body after decoding)', () => {
  const secret = 'pw-split-across-reads-7d1'
  const frame = encodeMessage({ type: 'update', target: 'DATABASE_URL', generation: 1, instance: '0123456789abcdef', conninfo: `host=db password=${secret}` })
  for (const cuts of [[2], [10], [7, 30], [1, 2, 3, frame.length - 1]]) {
    const chunks = []
    let at = 0
    for (const c of [...cuts, frame.length]) {
      chunks.push(Buffer.from(frame.subarray(at, c)))
      at = c
    }
    const reader = new FrameReader()
    const bodies = chunks.flatMap((c) => reader.push(c))
    assert.equal(bodies.length, 1)
    assert.equal(decodeMessage(bodies[0]).conninfo, `host=db password=${secret}`)
    bodies[0].fill(0)
    assert.ok(chunks.every((c) => !c.toString('latin1').includes('password') && !c.toString('latin1').includes(secret.slice(-6))), `cuts ${cuts}: a read still holds the value`)
  }
})

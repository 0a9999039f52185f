/*
 * One value's connections (src/slot.js) without a server: the pg config
 * each connection is made with.
 */
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { test } from 'node:test'

import { Update } from '../src/client.js'
import { Slot } from '../src/slot.js'

/** Stands for pg.Client: keeps the config it was made with. */
class Recorder extends EventEmitter {
  constructor(config) {
    super()
    this.config = config
  }
}

/** The config a connection of a slot for conninfo gets, with pool options. */
function connectionConfig(conninfo, options) {
  let poolConfig = null
  const slot = new Slot({
    update: new Update({ target: 'DATABASE_URL', generation: 1, conninfo }),
    fromEnv: false,
    options,
    poolFactory: (config) => {
      poolConfig = config
      return new EventEmitter()
    },
    Client: Recorder,
    events: new EventEmitter(),
    log: () => {},
  })
  assert.equal(slot.error, null, String(slot.error))
  // pg.Pool makes its clients with (a copy of) its own options.
  return { config: new poolConfig.Client({ ...poolConfig }).config, slot }
}

test('ssl: false: no TLS for a value without sslmode; a value\'s own sslmode wins, and says so', () => {
  const plain = connectionConfig('postgresql://app:pw@db/x', { ssl: false })
  assert.equal(plain.config.ssl, false)
  assert.equal(plain.slot.sslWarning, null)
  // Without the option: the value's default, prefer (TLS first).
  assert.equal(typeof connectionConfig('postgresql://app:pw@db/x', {}).config.ssl, 'object')
  // The value asks for TLS: it wins over the option.
  const required = connectionConfig('postgresql://app:pw@db/x?sslmode=require', { ssl: false })
  assert.equal(typeof required.config.ssl, 'object')
  assert.equal(required.config.ssl.rejectUnauthorized, false)
  assert.match(required.slot.sslWarning, /sslmode=require.*ssl: false/)
  // Its own sslmode=disable agrees with the option.
  const disabled = connectionConfig('host=db sslmode=disable', { ssl: false })
  assert.equal(disabled.config.ssl, false)
  assert.equal(disabled.slot.sslWarning, null)
})

test('the slots of one pool share one Client class (pg sees one kind of client after any number of rotations)', () => {
  const a = connectionConfig('postgresql://app:pw1@db/x', {})
  const b = connectionConfig('postgresql://app:pw2@db/x', {})
  const classes = new Set()
  for (const { slot } of [a, b]) {
    let cls = null
    new Slot({
      update: slot.update,
      fromEnv: false,
      options: {},
      poolFactory: (config) => {
        cls = config.Client
        return new EventEmitter()
      },
      Client: Recorder,
      events: new EventEmitter(),
      log: () => {},
    })
    classes.add(cls)
  }
  assert.equal(classes.size, 1)
  assert.equal(a.config.password, 'pw1')
  assert.equal(b.config.password, 'pw2')
})

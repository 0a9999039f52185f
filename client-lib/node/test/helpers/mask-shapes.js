/*
 * The strings tests/fuzz/fuzz-mask.c builds, from a seeded generator
 * instead of a fuzzer's bytes, and its checks: for test/mask.test.js's
 * property test (and for comparing the Node masker with the C one on the
 * same strings).  Modes: buildAny() (mode 0: pieces of connection
 * strings, checked by checkAny()), buildKeyValue() (mode 1) and
 * buildUri() (mode 2), which know where their secrets are
 * (leakedFragment()).
 */
import { parseConninfo } from '../../src/conninfo.js'

/** mulberry32: small, fast, and the same sequence for a seed everywhere. */
export function generator(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const FRAGMENT = 4

/** Characters of generated values: the separators of both forms often,
 * any Latin-1 character now and then (the fuzz target's bytes). */
const SPECIAL = " \t\n'\\=@:/?&#%,[]*"
function randomValue(rnd) {
  const n = rnd() < 0.1 ? 0 : Math.floor(rnd() * (rnd() < 0.8 ? 16 : 64))
  let v = ''
  for (let i = 0; i < n; i++) {
    const r = rnd()
    if (r < 0.55) v += 'QXabcdefghijklmnopqrstuvwxyz0123456789'[Math.floor(rnd() * 38)]
    else if (r < 0.9) v += SPECIAL[Math.floor(rnd() * SPECIAL.length)]
    else v += String.fromCharCode(1 + Math.floor(rnd() * 255))
  }
  return v
}

/** A string under construction, knowing where its secrets are. */
class Built {
  s = ''
  spans = []
  #from = -1
  add(t) {
    this.s += t
  }
  begin() {
    this.#from = this.s.length
  }
  end() {
    this.spans.push([this.#from, this.s.length])
  }
}

/** fuzz-mask.c's add_kv_text(). */
function kvText(val, quoted, first) {
  let out = ''
  for (let i = 0; i < val.length; i++) {
    const c = val[i]
    const esc = quoted ? c === "'" || c === '\\' : /[ \t\n\v\f\r\\]/.test(c) || (first && i === 0 && c === "'")
    out += (esc ? '\\' : '') + c
  }
  return out
}

/** fuzz-mask.c's nested[]: dbnames that are connection strings. */
const NESTED = [
  ['password=', ''],
  ['host=db password=', ' user=app'],
  ['sslpassword=', ''],
  ['postgresql://app:', '@db/app'],
  ['postgres://db/x?password=', ''],
  ['dbname=password=', ''],
]

/** Settings that take a number, an address or a word of libpq's: a
 * password put there by mistake ("port=${DB_PASS}") is a secret too.
 * Beyond the fuzz target's shapes (mask.c's setting_ok() rule, which
 * tests/unit/test-mask.c covers by example); the value generated for them
 * starts with "QX", so that it is none of those. */
const MISTYPED = ['port', 'hostaddr', 'connect_timeout', 'keepalives_idle', 'sslmode', 'target_session_attrs', 'gssencmode']

/** fuzz-mask.c's build_keyvalue(): mode 1, and a mistyped setting. */
export function buildKeyValue(rnd) {
  const keys = ['host', 'user', 'dbname', 'password', 'sslpassword', 'PASSWORD', 'SslPassWord', 'application_name', 'options', 'port', 'passwd', 'password_x']
  const blanks = [' ', '  ', '\t', '\n ']
  const b = new Built()
  const records = 1 + Math.floor(rnd() * 5)
  for (let r = 0; r < records; r++) {
    const sel = Math.floor(rnd() * 256)
    let val = randomValue(rnd)
    if (rnd() < 0.15) {
      const key = MISTYPED[Math.floor(rnd() * MISTYPED.length)]
      val = `QX${val}`
      const quoted = (sel & 0x40) !== 0
      if (b.s) b.add(blanks[(sel >> 4) % 4])
      b.add(key + (sel & 0x80 ? ' = ' : '='))
      b.begin()
      b.add(quoted ? `'${kvText(val, true, true)}'` : kvText(val, false, true))
      b.end()
      continue
    }
    const k = sel % (keys.length + NESTED.length)
    const key = k < keys.length ? keys[k] : 'dbname'
    const secret = k >= keys.length || ['password', 'sslpassword'].includes(key.toLowerCase())
    const quoted = (sel & 0x40) !== 0 || val === ''
    if (b.s) b.add(blanks[(sel >> 4) % 4])
    b.add(key + (sel & 0x80 ? ' = ' : '='))
    if (k >= keys.length) {
      const [pre, suf] = NESTED[k - keys.length]
      if (quoted) b.add("'")
      b.add(kvText(pre, quoted, true))
      b.begin()
      b.add(kvText(val, quoted, false))
      b.end()
      b.add(kvText(suf, quoted, false))
      if (quoted) b.add("'")
      continue
    }
    if (secret) b.begin()
    b.add(quoted ? `'${kvText(val, true, true)}'` : kvText(val, false, true))
    if (secret) b.end()
  }
  return b
}

/** fuzz-mask.c's add_encoded(): percent-encoded but for keepRaw. */
function encoded(val, keepRaw) {
  let out = ''
  for (const c of val) {
    const code = c.charCodeAt(0)
    if (/[A-Za-z0-9\-._~]/.test(c) || (code >= 0x20 && code < 0x7f && c !== '%' && keepRaw.includes(c))) {
      out += c
    } else {
      // The fuzz target's bytes, as UTF-8 here (pg's parser takes UTF-8).
      for (const byte of Buffer.from(c)) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
    }
  }
  return out
}

function addNested(b, val, sel, keepRaw) {
  const [pre, suf] = NESTED[sel % NESTED.length]
  b.add(encoded(pre, keepRaw))
  b.begin()
  b.add(encoded(val, keepRaw))
  b.end()
  b.add(encoded(suf, keepRaw))
}

/** fuzz-mask.c's build_uri(): mode 2; and beyond it, a URI whose "@host"
 * was forgotten (the password becomes the port) and mistyped settings in
 * the query. */
export function buildUri(rnd) {
  const schemes = ['postgresql://', 'postgres://', 'PostgreSQL://']
  const qkeys = ['password', 'sslpassword', 'pass%77ord', 'ssl%70assword', 'PASSWORD', 'sslmode', 'application_name', 'connect_timeout', 'dbname', 'db%6Eame']
  const queryRaw = ' !"#$\'()*+,/:;<=>?@[\\]^`{|}'
  const nestedRaw = ' !"#$\'()*+,/:;<>?@[\\]^`{|}'
  const b = new Built()
  let sel = Math.floor(rnd() * 256)
  b.add(schemes[sel % 3])
  b.add(encoded(randomValue(rnd), ''))
  if (sel & 0x80) {
    sel = Math.floor(rnd() * 256)
    b.add(':')
    b.begin()
    if (rnd() < 0.2) {
      // No "@host": a password that holds none of the authority's
      // delimiters is all the port libpq reads.
      b.add(`QX${randomValue(rnd).replace(/[/?,:@[\]]/g, '')}`)
      b.end()
      if (rnd() < 0.5) return b
      b.add('/')
      b.add(encoded(randomValue(rnd), ''))
      return b
    }
    b.add(randomValue(rnd))
    b.end()
  }
  if (sel & 0x40 || b.spans.length > 0) b.add('@')
  // As the fuzz target reads its records: hosts, then the database, then
  // the query, each only if the one before it came.
  if (rnd() < 0.1) return b
  b.add(encoded(randomValue(rnd), ',:[]'))
  b.add('/')
  if (rnd() < 0.1) return b
  sel = Math.floor(rnd() * 256)
  if (sel & 0x20) addNested(b, randomValue(rnd), sel, '')
  else b.add(encoded(randomValue(rnd), ''))
  const params = Math.floor(rnd() * 5)
  for (let i = 0; i < params; i++) {
    sel = Math.floor(rnd() * 256)
    if (rnd() < 0.15) {
      b.add(`${i === 0 ? '?' : '&'}${MISTYPED[sel % MISTYPED.length]}=`)
      b.begin()
      b.add(encoded(`QX${randomValue(rnd)}`, queryRaw))
      b.end()
      continue
    }
    const key = qkeys[sel % 10]
    b.add(`${i === 0 ? '?' : '&'}${key}=`)
    if (sel % 10 >= 8) {
      addNested(b, randomValue(rnd), sel >> 4, nestedRaw)
      continue
    }
    if (sel % 10 < 5) b.begin()
    b.add(encoded(randomValue(rnd), queryRaw))
    if (sel % 10 < 5) b.end()
  }
  return b
}

/** fuzz-mask.c's check_no_leak(): no FRAGMENT characters of a secret in
 * out, unless the rest of the input holds them too (or they hold the
 * mask's '*'). */
export function leakedFragment(b, out) {
  let rest = ''
  let from = 0
  for (const [off, end] of b.spans) {
    rest += b.s.slice(from, off) + '\u0001'
    from = end
  }
  rest += b.s.slice(from)
  for (const [off, end] of b.spans) {
    for (let at = off; at + FRAGMENT <= end; at++) {
      const frag = b.s.slice(at, at + FRAGMENT)
      if (frag.includes('*') || !out.includes(frag) || rest.includes(frag)) continue
      return frag
    }
  }
  return null
}

/** Mode 0's random strings: pieces of connection strings, shuffled. */
const PIECES = [
  'postgresql://', 'postgres://', 'Postgres://', 'password', 'sslpassword', 'pass%77ord', 'port', 'hostaddr',
  'sslmode', 'dbname', 'host', 'user', 'connect_timeout', 'require', '5432', '=', '=', '@', ':', ':', '/', '?',
  '&', "'", '\\', ' ', ',', '[', ']', '%3D', '%40', 'QXs3cretQX', 'QX9QX', 'QX:QX',
]
export function buildAny(rnd) {
  let s = ''
  const n = 1 + Math.floor(rnd() * 14)
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(rnd() * PIECES.length)]
  return s
}

/** The passwords the parser reads from s and from its dbname when that is
 * a connection string, two levels down (fuzz-mask.c's check_parsed()). */
function parsedSecrets(params, depth = 0) {
  const found = []
  for (const key of ['password', 'sslpassword']) if (params[key] && params[key].length >= FRAGMENT && !params[key].includes('*')) found.push(params[key])
  const db = params.dbname
  if (db && depth < 2 && (db.includes('=') || db.includes('://'))) {
    try {
      found.push(...parsedSecrets(parseConninfo(db), depth + 1))
    } catch {
      // not a connection string after all
    }
  }
  return found
}

/** Mode 0's checks: (a) what the parser refuses is "****"; (b) no
 * password it parsed is in the output; (c) nothing of a URI's span from
 * its first ':' to its last '@' survives. */
export function checkAny(s, out) {
  let params
  try {
    params = parseConninfo(s)
  } catch {
    return out === '****' ? null : 'a string the parser refuses is shown'
  }
  for (const secret of parsedSecrets(params)) if (out.includes(secret)) return `the parsed secret ${JSON.stringify(secret)} is shown`
  if (s.startsWith('postgresql://') || s.startsWith('postgres://')) {
    const start = s.indexOf('://') + 3
    const colon = s.indexOf(':', start)
    const slash = s.indexOf('/', start)
    const at = s.lastIndexOf('@')
    if (colon >= 0 && at > colon && (slash < 0 || slash > colon)) {
      const b = new Built()
      b.s = s
      b.spans.push([colon + 1, at])
      const frag = leakedFragment(b, out)
      if (frag) return `the span before the last '@' leaks ${JSON.stringify(frag)}`
    }
  }
  return null
}

/*
 * libpq connection strings: parsing, masking, and translation into what
 * node-postgres (pg) takes.  The one place that knows libpq's rules.
 *
 * Both forms libpq accepts are read by its rules (fe-connect.c):
 *   keyword/value  host=db port=5432 password='it\'s' (quotes, backslash
 *                  escapes, blanks around '=')
 *   URI            postgresql://user:pass@h1:5432,h2:5433/db?sslmode=require
 *                  (percent-decoding, IPv6 in brackets, host lists)
 *
 * pg takes one host, no keyword/value strings, and file paths for none of
 * its TLS material, so translate() gives the pool a list of hosts to try in
 * order and a pg config per host (certificates read from their files).
 *
 * A connection string holds a password: nothing here puts a value from it
 * into an error message.  maskConninfo() is the form to log.
 */
import { createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { checkServerIdentity } from 'node:tls'

import { DbswapError } from './errors.js'

const MASK = '****'

/** Keywords whose value is a secret, masked everywhere. */
const SECRET_KEYS = new Set(['password', 'sslpassword', 'oauth_client_secret', 'scram_client_key', 'scram_server_key'])

/** Every keyword libpq knows (up to PostgreSQL 18), with its environment
 * variable where it has one. */
const KEYWORDS = new Map([
  ['host', 'PGHOST'], ['hostaddr', 'PGHOSTADDR'], ['port', 'PGPORT'], ['dbname', 'PGDATABASE'],
  ['user', 'PGUSER'], ['password', 'PGPASSWORD'], ['passfile', 'PGPASSFILE'], ['require_auth', 'PGREQUIREAUTH'],
  ['channel_binding', 'PGCHANNELBINDING'], ['connect_timeout', 'PGCONNECT_TIMEOUT'],
  ['client_encoding', 'PGCLIENTENCODING'], ['options', 'PGOPTIONS'], ['application_name', 'PGAPPNAME'],
  ['fallback_application_name', null], ['keepalives', null], ['keepalives_idle', null],
  ['keepalives_interval', null], ['keepalives_count', null], ['tcp_user_timeout', null], ['replication', null],
  ['gssencmode', 'PGGSSENCMODE'], ['sslmode', 'PGSSLMODE'], ['requiressl', 'PGREQUIRESSL'],
  ['sslnegotiation', 'PGSSLNEGOTIATION'], ['sslcompression', 'PGSSLCOMPRESSION'], ['sslcert', 'PGSSLCERT'],
  ['sslkey', 'PGSSLKEY'], ['sslpassword', null], ['sslcertmode', 'PGSSLCERTMODE'],
  ['sslrootcert', 'PGSSLROOTCERT'], ['sslcrl', 'PGSSLCRL'], ['sslcrldir', 'PGSSLCRLDIR'], ['sslsni', 'PGSSLSNI'],
  ['requirepeer', 'PGREQUIREPEER'], ['ssl_min_protocol_version', 'PGSSLMINPROTOCOLVERSION'],
  ['ssl_max_protocol_version', 'PGSSLMAXPROTOCOLVERSION'], ['min_protocol_version', 'PGMINPROTOCOLVERSION'],
  ['max_protocol_version', 'PGMAXPROTOCOLVERSION'], ['krbsrvname', 'PGKRBSRVNAME'], ['gsslib', 'PGGSSLIB'],
  ['gssdelegation', 'PGGSSDELEGATION'], ['service', 'PGSERVICE'], ['target_session_attrs', 'PGTARGETSESSIONATTRS'],
  ['load_balance_hosts', 'PGLOADBALANCEHOSTS'], ['sslkeylogfile', null], ['scram_client_key', null],
  ['scram_server_key', null], ['oauth_issuer', null], ['oauth_client_id', null], ['oauth_client_secret', null],
  ['oauth_scope', null],
])

const URI_SCHEMES = ['postgresql://', 'postgres://']
const isSpace = (c) => c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r'

function bad(message) {
  return new DbswapError('conninfo', `connection string: ${message}`)
}

/* ---- parsing ---- */

const UTF8 = new TextDecoder('utf-8', { fatal: true })

/**
 * libpq's %XX decoding of URI parts (no '+' for a blank): the bytes
 * decoded are read as UTF-8.  libpq passes any bytes on; pg sends strings
 * as UTF-8, so bytes that are not UTF-8 are refused (they would turn into
 * U+FFFD, a different password or name).
 */
function uriDecode(s, where) {
  if (!s.includes('%')) return s
  const parts = []
  let i = 0
  while (i < s.length) {
    const pct = s.indexOf('%', i)
    if (pct < 0) {
      parts.push(Buffer.from(s.slice(i)))
      break
    }
    parts.push(Buffer.from(s.slice(i, pct)))
    const hex = s.slice(pct + 1, pct + 3)
    if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw bad(`invalid percent-encoded token in the ${where}`)
    const b = parseInt(hex, 16)
    if (b === 0) throw bad(`forbidden value %00 in the ${where}`)
    parts.push(Buffer.of(b))
    i = pct + 3
  }
  try {
    return UTF8.decode(Buffer.concat(parts))
  } catch {
    throw bad(`the ${where} is not valid UTF-8 once percent-decoded (pg sends UTF-8)`)
  }
}

function store(params, keyword, value, quote, position) {
  if (!KEYWORDS.has(keyword)) {
    // An unknown word may be a misplaced secret: never quoted.
    if (quote) throw bad(`invalid URI query parameter at ${quote}`)
    throw bad(position === undefined ? 'invalid connection option' : `invalid connection option at position ${position}`)
  }
  if (keyword === 'requiressl') {
    // libpq stores the deprecated requiressl as sslmode: the last of the
    // two in the string wins; "1..." is require, anything else prefer.
    params.sslmode = value.startsWith('1') ? 'require' : 'prefer'
    return
  }
  params[keyword] = value
}

function parseUri(s, schemeLen) {
  const params = Object.create(null)
  let p = schemeLen
  // User info: up to the first '@' before any '/' (a '?' does not stop it).
  let q = p
  while (q < s.length && s[q] !== '@' && s[q] !== '/') q++
  if (s[q] === '@') {
    const info = s.slice(p, q)
    const colon = info.indexOf(':')
    const user = colon < 0 ? info : info.slice(0, colon)
    if (user) store(params, 'user', uriDecode(user, 'user name'))
    if (colon >= 0 && colon + 1 < info.length) store(params, 'password', uriDecode(info.slice(colon + 1), 'password'))
    p = q + 1
  }
  // netloc[:port] pairs, separated by commas.
  const hosts = []
  const ports = []
  let term
  for (;;) {
    let host
    if (s[p] === '[') {
      const close = s.indexOf(']', p)
      if (close < 0) throw bad('no "]" closes an IPv6 host address')
      if (close === p + 1) throw bad('empty IPv6 host address')
      host = s.slice(p + 1, close)
      p = close + 1
      if (p < s.length && !':/?,'.includes(s[p])) throw bad(`unexpected character at position ${p} (expected ":" or "/")`)
    } else {
      const start = p
      while (p < s.length && !':/?,'.includes(s[p])) p++
      host = s.slice(start, p)
    }
    hosts.push(host)
    term = s[p]
    let port = ''
    if (term === ':') {
      const start = ++p
      while (p < s.length && !'/?,'.includes(s[p])) p++
      port = s.slice(start, p)
      term = s[p]
    }
    ports.push(port)
    if (term !== ',') break
    p++
  }
  const hostStr = hosts.join(',')
  const portStr = ports.join(',')
  if (hostStr) store(params, 'host', uriDecode(hostStr, 'host'))
  if (portStr) store(params, 'port', uriDecode(portStr, 'port'))
  if (term === '/') {
    const start = ++p
    while (p < s.length && s[p] !== '?') p++
    const dbname = s.slice(start, p)
    if (dbname) store(params, 'dbname', uriDecode(dbname, 'database name'))
    term = s[p]
  }
  if (term === '?') {
    let rest = s.slice(p + 1)
    let at = p + 1
    while (rest) {
      const amp = rest.indexOf('&')
      const pair = amp < 0 ? rest : rest.slice(0, amp)
      const eq = pair.indexOf('=')
      if (eq < 0) throw bad(`missing "=" in the URI query parameter at position ${at}`)
      if (pair.indexOf('=', eq + 1) >= 0) throw bad(`extra "=" in the URI query parameter at position ${at}`)
      let key = uriDecode(pair.slice(0, eq), 'query')
      // Named only if it is a keyword: an unknown one may be a secret.
      let value = uriDecode(pair.slice(eq + 1), KEYWORDS.has(key) ? `${key} query parameter` : 'query')
      // libpq's JDBC compatibility.
      if (key === 'ssl' && value === 'true') {
        key = 'sslmode'
        value = 'require'
      }
      store(params, key, value, `position ${at}`)
      if (amp < 0) break
      at += amp + 1
      rest = rest.slice(amp + 1)
    }
  }
  return params
}

function parseKeyValue(s) {
  const params = Object.create(null)
  let p = 0
  const n = s.length
  for (;;) {
    while (p < n && isSpace(s[p])) p++
    if (p >= n) break
    const start = p
    while (p < n && s[p] !== '=' && !isSpace(s[p])) p++
    const keyword = s.slice(start, p)
    while (p < n && isSpace(s[p])) p++
    if (s[p] !== '=') {
      throw bad(KEYWORDS.has(keyword) ? `missing "=" after "${keyword}"` : `missing "=" after the word at position ${start}`)
    }
    p++
    while (p < n && isSpace(s[p])) p++
    let value = ''
    if (s[p] !== "'") {
      while (p < n && !isSpace(s[p])) {
        if (s[p] === '\\') p++
        if (p < n) value += s[p++]
      }
    } else {
      p++
      for (;;) {
        if (p >= n) throw bad('unterminated quoted string')
        if (s[p] === '\\') {
          p++
          if (p < n) value += s[p++]
          continue
        }
        if (s[p] === "'") {
          p++
          break
        }
        value += s[p++]
      }
    }
    store(params, keyword, value, null, start)
  }
  return params
}

/**
 * Parses a libpq connection string (URI or keyword/value) by libpq's rules.
 * @param {string} conninfo
 * @returns {Record<string, string>} keyword -> value (a null-prototype object)
 * @throws {DbswapError} code 'conninfo'; the message quotes no value
 */
export function parseConninfo(conninfo) {
  if (typeof conninfo !== 'string') throw new TypeError('a connection string must be a string')
  for (const scheme of URI_SCHEMES) {
    if (conninfo.startsWith(scheme)) return parseUri(conninfo, scheme.length)
  }
  return parseKeyValue(conninfo)
}

/* ---- masking ---- */

function isSecretKey(key) {
  return SECRET_KEYS.has(key.toLowerCase())
}

/** %XX decoded, one character per byte; a '%' that starts no escape
 * stays (the masker reads what libpq would, and never throws). */
function percentDecodeLoose(s) {
  return s.replace(/%([0-9a-fA-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)))
}

/**
 * Whether a dbname is a connection string of its own: libpq expands the
 * first dbname a program passes with expand_dbname when it holds '=' or
 * starts with postgresql:// or postgres://, and takes its password then.
 * "://" anywhere also catches what a human reads as a URI.  The same rule
 * as common/mask.c and the agent's refusal (connplan.c).
 * @param {string} decoded the dbname as libpq reads it
 */
function dbnameExpands(decoded) {
  return decoded.includes('=') || decoded.includes('://')
}

/** A dbname as written in key=value form, without quotes and escapes. */
function kvDecode(v) {
  if (v.length >= 2 && v.startsWith("'") && v.endsWith("'")) v = v.slice(1, -1)
  return v.replace(/\\(.)/gs, '$1')
}

/** Settings that take an integer (common/mask.c's list), and those that
 * take 0 or 1 (beyond it: libpq checks them only when it connects, and a
 * password put there is as visible). */
const INT_SETTINGS = new Set(['connect_timeout', 'keepalives', 'keepalives_idle', 'keepalives_interval', 'keepalives_count', 'tcp_user_timeout'])
const FLAG_SETTINGS = new Set(['sslcompression', 'sslsni', 'gssdelegation', 'requiressl'])
/** A port as the C masker (and the agent) take it: empty, or 1 to 65535
 * written without a leading zero. */
function portOk(p) {
  return p === '' || (/^[1-9][0-9]{0,4}$/.test(p) && Number(p) <= 65535)
}
/** Whether a value is one the setting takes, for those that take a
 * number or an address (common/mask.c's rules: what the agent refuses,
 * or more, is masked). */
function numberOk(key, value) {
  if (key === 'port') return value.split(',').every(portOk)
  if (key === 'hostaddr') return value.split(',').every((a) => a === '' || isIP(a) !== 0)
  if (FLAG_SETTINGS.has(key)) return /^[0-9]*$/.test(value)
  if (!INT_SETTINGS.has(key)) return null
  if (value === '') return true
  return /^[+-]?(0|[1-9][0-9]*)$/.test(value) && Math.abs(Number(value)) <= 2147483647
}
/** Settings that take one of a list of words: common/mask.c's, then the
 * ones of libpq 16 to 18 it does not check (masked here all the same). */
const ENUM_SETTINGS = new Map([
  ['sslmode', ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']],
  ['gssencmode', ['disable', 'prefer', 'require']],
  ['channel_binding', ['disable', 'prefer', 'require']],
  ['target_session_attrs', ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby']],
  ['ssl_min_protocol_version', ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']],
  ['ssl_max_protocol_version', ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']],
  ['sslnegotiation', ['postgres', 'direct']],
  ['sslcertmode', ['disable', 'allow', 'require']],
  ['load_balance_hosts', ['disable', 'random']],
  ['gsslib', ['gssapi', 'sspi']],
  ['min_protocol_version', ['3.0', '3.2', 'latest']],
  ['max_protocol_version', ['3.0', '3.2', 'latest']],
])

/**
 * Whether a setting's value as written is one libpq takes for it
 * (common/mask.c's setting_ok()).  One that is not is masked: a mistyped
 * value can put a password anywhere ("port=${DB_PASS}",
 * "postgresql://app:pw/db"), and the agent refuses such a value anyway.
 * Quoted or escaped text never passes: it is not a number, an address or
 * a word of libpq's.  A dbname that is a connection string of its own
 * does not pass: its password is one.
 * @param {string} key the keyword as libpq reads it (a query key decoded)
 * @param {string} written the value as written
 * @param {boolean} uri percent-encoded (a URI's path or query value), else
 *   key=value text
 */
function settingOk(key, written, uri) {
  if (key === 'dbname') return valueOk(key, uri ? percentDecodeLoose(written) : kvDecode(written))
  return valueOk(key, written)
}

/** The same check on a value as the parser read it (for redact()). */
function valueOk(key, value) {
  if (key === 'dbname') return !dbnameExpands(value)
  const number = numberOk(key, value)
  if (number !== null) return number
  const words = ENUM_SETTINGS.get(key)
  return !words || value === '' || words.includes(value)
}

function maskQuery(q) {
  return q
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=')
      if (eq < 0) return pair
      // libpq decodes query keys: "pass%77ord" is a password too,
      // "db%6Eame" a dbname, "p%6Frt" a port.
      const key = percentDecodeLoose(pair.slice(0, eq))
      const masked = isSecretKey(key) || !settingOk(key, pair.slice(eq + 1), true)
      return masked ? `${pair.slice(0, eq + 1)}${MASK}` : pair
    })
    .join('&')
}

/**
 * The authority of a URI, [p, end): libpq reads "app:pw" as host app,
 * port pw, where a human wrote a user and a password and forgot "@host".
 * A port the agent refuses (not 1 to 65535) is masked with its host, as
 * common/mask.c does, after user info or without.  A password that is a
 * valid port cannot be told from one.
 */
function maskPorts(s, p, end) {
  let out = ''
  let bracket = false
  let host = s[p] === '@' ? 1 : 0 // where the current host starts in out
  while (p < end) {
    const c = s[p]
    if (c === '[') bracket = true
    else if (c === ']') bracket = false
    if (c === ',' && !bracket) host = out.length + 1
    if (c !== ':' || bracket) {
      out += c
      p++
      continue
    }
    let q = p + 1
    while (q < end && s[q] !== ',') q++
    const port = s.slice(p + 1, q)
    // A port the agent refuses masks its host too: a mistyped authority
    // ("user@password:host") holds a password on either side.
    out = portOk(port) ? `${out}:${port}` : `${out.slice(0, host)}${MASK}:${MASK}`
    p = q
  }
  return out
}

/** The rest of a URI after its user info or hosts, [p, end): the path up
 * to the '?' is the dbname, masked when it is a connection string. */
function maskPathAndQuery(s, p) {
  let q = s.indexOf('?', p)
  if (q < 0) q = s.length
  const slash = s.indexOf('/', p)
  let out
  if (slash >= 0 && slash < q && !settingOk('dbname', s.slice(slash + 1, q), true)) {
    out = s.slice(p, slash + 1) + MASK
  } else {
    out = s.slice(p, q)
  }
  return q < s.length ? `${out}?${maskQuery(s.slice(q + 1))}` : out
}

/**
 * Where a URI's password is, as libpq or a human reads it: [the first
 * ':' of the user info, the last '@'), or null.  The last '@' ends
 * user:password even when the password holds '@', ':' or '/'.  A ':' past
 * the '?' is in the query, unless no '/' comes before it: libpq reads user
 * info up to the '@' without stopping at a '?' ("a?b:pw@db" is user a?b).
 */
function passwordSpan(s, schemeLen) {
  const at = s.lastIndexOf('@')
  const colon = s.indexOf(':', schemeLen)
  if (at < schemeLen || colon < 0 || colon > at) return null
  const query = s.indexOf('?', schemeLen)
  if (query >= 0 && colon > query && s.slice(schemeLen, colon).includes('/')) return null
  return [colon, at]
}

function maskUri(s, schemeLen) {
  const start = schemeLen
  let out = s.slice(0, start)
  let p = start
  const span = passwordSpan(s, schemeLen)
  if (span) {
    const [colon, at] = span
    const query = s.indexOf('?', start)
    out += s.slice(start, colon + 1) + MASK
    if (query >= 0 && query < at) {
      // That '@' sits in a query value or the password holds a '?': what
      // follows it up to the next '&' may be a secret's tail.
      const amp = s.indexOf('&', at)
      out += '@' + MASK
      if (amp >= 0) out += '&' + maskQuery(s.slice(amp + 1))
      return out
    }
    p = at
  }
  // The hosts and their ports, up to the path or the query.  Where no
  // password was masked, libpq's user info ends at the first '@' before
  // any '/', a '?' in it included ("a?b@db:5432" is user a?b).
  if (p === start) {
    let q = start
    while (q < s.length && s[q] !== '@' && s[q] !== '/') q++
    if (s[q] === '@') {
      out += s.slice(start, q)
      p = q
    }
  }
  let end = p
  while (end < s.length && s[end] !== '/' && s[end] !== '?') end++
  return out + maskPorts(s, p, end) + maskPathAndQuery(s, end)
}

function maskKeyValue(s) {
  let out = ''
  let p = 0
  const n = s.length
  while (p < n) {
    let ws = p
    while (p < n && isSpace(s[p])) p++
    out += s.slice(ws, p)
    if (p >= n) break
    const key = p
    while (p < n && s[p] !== '=' && !isSpace(s[p])) p++
    const keyEnd = p
    const secret = isSecretKey(s.slice(key, keyEnd))
    ws = p
    while (p < n && isSpace(s[p])) p++
    if (s[p] !== '=') {
      // Not key=value: this word and what follows may be anything, a
      // password split at a blank included.
      out += MASK
      break
    }
    p++
    while (p < n && isSpace(s[p])) p++
    out += s.slice(key, keyEnd) + s.slice(ws, p)
    const val = p
    if (s[p] === "'") {
      for (p++; p < n && s[p] !== "'"; p++) if (s[p] === '\\' && p + 1 < n) p++
      if (p < n) p++
    } else {
      // libpq takes "\ " as a blank inside the value.
      for (; p < n && !isSpace(s[p]); p++) if (s[p] === '\\' && p + 1 < n) p++
    }
    const written = s.slice(val, p)
    out += secret || !settingOk(s.slice(key, keyEnd), written, false) ? MASK : written
  }
  return out
}

/** A secret the parser found in params, or in a dbname of params that
 * is a connection string of its own (a few levels down), still in out. */
function leaks(out, params, depth = 0) {
  for (const key of SECRET_KEYS) {
    const v = params?.[key]
    if (v && v.length >= 4 && (out.includes(v) || out.includes(encodeURIComponent(v)))) return true
  }
  const db = params?.dbname
  if (!db || !dbnameExpands(db)) return false
  if ((db.length >= 4 && out.includes(db)) || depth >= 4) return true
  let nested
  try {
    nested = parseConninfo(db)
  } catch {
    return false
  }
  return leaks(out, nested, depth + 1)
}

/**
 * The connection string with every password replaced by ****, for logs and
 * messages: "postgresql://app:****@db/x", "host=db password=****".  Works
 * on malformed strings too (what cannot be read is masked).  The same rules
 * as libdbswap's dbswap_mask_conninfo().
 * @param {string | null | undefined} conninfo
 */
export function maskConninfo(conninfo) {
  if (conninfo === null || conninfo === undefined) return '(none)'
  const s = String(conninfo)
  if (!s) return ''
  // As the agent (common/mask.c): what the parser refuses is masked whole,
  // length and all, since no one can say which part of it is a password.
  let params
  try {
    params = parseConninfo(s)
  } catch {
    return MASK
  }
  // libpq's URI prefixes, compared as libpq compares them (case matters):
  // "POSTGRESQL://..." is no URI to the parser, and no keyword either, so
  // it was refused whole above.
  let out = null
  for (const scheme of URI_SCHEMES) {
    if (out === null && s.startsWith(scheme)) out = maskUri(s, scheme.length)
  }
  if (out === null) out = s.includes('=') ? maskKeyValue(s) : MASK
  // A password the parser found but the masking missed: all of it goes.
  return leaks(out, params) ? MASK : out
}

/**
 * text with the connection string and its secrets replaced by their
 * masked forms: for messages that come from elsewhere (a driver's error)
 * and may have picked one up.
 * @param {string} text
 * @param {string} conninfo
 */
export function redact(text, conninfo) {
  if (!conninfo) return text
  let out = String(text).split(conninfo).join(maskConninfo(conninfo))
  const secrets = []
  hiddenValues(conninfo, secrets, 0)
  const all = new Set()
  for (const v of secrets) {
    // Blanks alone are no secret to look for (and would blank the text).
    if (v.trim() === '') continue
    all.add(v)
    all.add(encodeURIComponent(v))
  }
  // The longest first: a secret may contain a shorter one.
  for (const secret of [...all].sort((a, b) => b.length - a.length)) out = out.split(secret).join(MASK)
  return out
}

/**
 * What maskConninfo() hides of s, as the parser reads it, into found: the
 * passwords; a dbname that is a connection string (whole, and what it
 * hides in turn, a few levels down); a setting whose value libpq would
 * not take; and a URI's span from the user name's ':' to the last '@', as
 * written and decoded.  An unreadable s adds nothing: redact() looks for
 * it whole.
 */
function hiddenValues(s, found, depth) {
  let params
  try {
    params = parseConninfo(s)
  } catch {
    return
  }
  for (const [key, value] of Object.entries(params)) {
    if (!value) continue
    if (isSecretKey(key) || !valueOk(key, value)) found.push(value)
    if (key === 'dbname' && dbnameExpands(value) && depth < 4) hiddenValues(value, found, depth + 1)
  }
  const scheme = URI_SCHEMES.find((sc) => s.startsWith(sc))
  const span = scheme && passwordSpan(s, scheme.length)
  if (span) {
    const written = s.slice(span[0] + 1, span[1])
    found.push(written, percentDecodeLoose(written))
  }
}

/* ---- translation for pg ---- */

const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']
const SESSION_ATTRS = ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby']
const DEFAULT_PORT = 5432
/** Where libpq looks for the server's socket when no host is given
 * (DEFAULT_PGSOCKET_DIR): Debian's, Ubuntu's and Red Hat's libpq use this
 * one (upstream builds use /tmp).  libpq on Windows has none: localhost. */
const DEFAULT_SOCKET_DIR = process.platform === 'win32' ? 'localhost' : '/var/run/postgresql'

/** The files a connection string names, by their keyword. */
const FILES = { sslrootcert: 'root certificate', sslcrl: 'certificate revocation list', sslcert: 'client certificate', sslkey: 'client key' }

function fileError(path, keyword, err) {
  return new DbswapError('conninfo', `could not read the ${FILES[keyword]} file "${path}" (${keyword}): ${err.code ?? err.message}`)
}

/** Reads the file given in keyword (or its default). */
function readSecretFile(readFile, path, keyword) {
  try {
    return readFile(path)
  } catch (err) {
    throw fileError(path, keyword, err)
  }
}

/** Reads a default file that may be missing: undefined then, as libpq. */
function readDefaultFile(readFile, path, keyword) {
  try {
    return readFile(path)
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined
    throw fileError(path, keyword, err)
  }
}

/**
 * The client key from its file as unencrypted PKCS#8 PEM: sslpassword is
 * used here and goes no further (tls's passphrase would sit, enumerable,
 * in every pg client's ssl options).  Errors name the file, never the
 * password.
 */
function loadClientKey(readFile, path, password) {
  const pem = readSecretFile(readFile, path, 'sslkey')
  try {
    return createPrivateKey({ key: pem, format: 'pem', passphrase: password || undefined }).export({ type: 'pkcs8', format: 'pem' })
  } catch (err) {
    const encrypted = /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED/.test(pem.toString('latin1'))
    if (!password && (encrypted || err.code === 'ERR_MISSING_PASSPHRASE')) {
      throw new DbswapError('conninfo', `the client key file "${path}" (sslkey) is encrypted and sslpassword is not set`)
    }
    throw new DbswapError('conninfo', `could not load the client key file "${path}" (sslkey): not a PEM private key, or the wrong sslpassword (${err.code ?? 'invalid'})`)
  }
}

/** Sets the client key as pg keeps it: not enumerable, so that inspecting a
 * config or a client does not print it (pg's Connection reads it all the
 * same). */
function setKey(tls, key) {
  Object.defineProperty(tls, 'key', { value: key, enumerable: false, writable: true, configurable: true })
}

function splitList(value) {
  return value === undefined ? [''] : value.split(',')
}

function parsePort(s) {
  if (s === '') return null
  if (!/^[0-9]+$/.test(s.trim()) || Number(s) < 1 || Number(s) > 65535) throw bad('invalid port number')
  return Number(s)
}

/**
 * Translates a libpq connection string into what pg needs.
 *
 * @param {string} conninfo
 * @param {object} [opts]
 * @param {Record<string, string | undefined>} [opts.env] libpq's
 *   environment defaults (PGHOST, PGSSLMODE, ...); default process.env
 * @param {(path: string) => Buffer} [opts.readFile] reads certificate and
 *   key files; default fs.readFileSync
 * @param {string} [opts.home] for ~/.postgresql; default os.homedir()
 * @param {import('node:tls').ConnectionOptions} [opts.tls] TLS options to
 *   start from (the pool's `ssl` option); the connection string's win
 * @returns {Translation}
 * @throws {DbswapError} code 'conninfo': unreadable, or asks for what pg
 *   cannot do (the message quotes no value)
 *
 * @typedef {object} HostEntry
 * @property {string | undefined} host name or socket directory (libpq's
 *   default socket directory when none is given); undefined with a hostaddr
 *   and no host
 * @property {string | undefined} hostaddr numeric address to connect to instead of resolving host
 * @property {number} port
 *
 * @typedef {object} Translation
 * @property {HostEntry[]} hosts in the order to try them
 * @property {string} sslMode
 * @property {string} targetSessionAttrs
 * @property {object} config pg client config without host, port and ssl
 * @property {object | false} tls TLS options for pg's `ssl`, false for none
 */
export function translate(conninfo, opts = {}) {
  const env = opts.env ?? process.env
  const readFile = opts.readFile ?? readFileSync
  const home = opts.home ?? homedir()
  const params = parseConninfo(conninfo)
  const get = (key) => {
    if (params[key] !== undefined) return params[key]
    const name = KEYWORDS.get(key)
    return name && env[name] ? env[name] : undefined
  }
  const oneOf = (key, allowed, fallback) => {
    const v = get(key) ?? fallback
    if (!allowed.includes(v)) throw bad(`invalid ${key} value`)
    return v
  }

  // What pg cannot do, refused rather than silently weakened.
  if (get('service') !== undefined) throw bad('service files (service=) are not supported with pg')
  if (get('require_auth')) throw bad('require_auth is not supported by pg')
  if (get('requirepeer')) throw bad('requirepeer is not supported by pg')
  if (get('gssencmode') === 'require') throw bad('gssencmode=require: pg has no GSSAPI encryption')
  if (get('sslcrldir')) throw bad('sslcrldir is not supported with pg (use sslcrl)')
  if (get('sslcertmode') === 'require') throw bad('sslcertmode=require is not supported by pg')
  for (const key of ['oauth_issuer', 'oauth_client_id', 'oauth_client_secret', 'scram_client_key', 'scram_server_key']) {
    if (get(key)) throw bad(`${key} is not supported by pg`)
  }
  // pg reads $PGPASSFILE or ~/.pgpass by itself, as libpq does without a
  // passfile parameter: only a passfile named in the string is beyond it.
  // libpq reads it when the password is absent or empty.
  if (params.passfile && !get('password')) {
    throw bad('passfile is not supported with pg (it reads $PGPASSFILE or ~/.pgpass): give the password')
  }

  // Hosts: host, hostaddr and port lists, matched as libpq matches them.
  const names = splitList(get('host'))
  const addrs = get('hostaddr') === undefined ? null : splitList(get('hostaddr'))
  if (addrs && get('host') !== undefined && addrs.length !== names.length) {
    throw bad(`could not match ${names.length} host names to ${addrs.length} hostaddr values`)
  }
  const count = addrs ? addrs.length : names.length
  const ports = splitList(get('port')).map(parsePort)
  if (ports.length !== 1 && ports.length !== count) {
    throw bad(`could not match ${ports.length} port numbers to ${count} hosts`)
  }
  const hosts = []
  for (let i = 0; i < count; i++) {
    const hostaddr = addrs?.[i] || undefined
    // libpq takes only numeric addresses here; pg would resolve a name.
    if (hostaddr !== undefined && !isIP(hostaddr)) throw bad('invalid hostaddr value (a numeric IP address)')
    let host = (addrs && get('host') === undefined ? undefined : names[i]) || undefined
    // libpq: no host (nor PGHOST), or an empty entry in the list, is the
    // default socket directory, not localhost (pg's default).
    if (host === undefined && hostaddr === undefined) host = DEFAULT_SOCKET_DIR
    // "@name" is an abstract Unix socket in libpq; pg takes only socket
    // directories (a host starting with "/") and would look it up in DNS.
    if (host?.startsWith('@') && hostaddr === undefined) {
      throw bad('host: abstract Unix sockets ("@name") are not supported with pg')
    }
    hosts.push({ host, hostaddr, port: (ports.length === 1 ? ports[0] : ports[i]) ?? DEFAULT_PORT })
  }
  if (oneOf('load_balance_hosts', ['disable', 'random'], 'disable') === 'random') {
    for (let i = hosts.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1))
      ;[hosts[i], hosts[j]] = [hosts[j], hosts[i]]
    }
  }

  const config = {}
  if (get('user') !== undefined) config.user = get('user')
  if (params.password !== undefined) config.password = params.password
  if (get('dbname')) config.database = get('dbname')
  const timeout = get('connect_timeout')
  if (timeout !== undefined && timeout !== '') {
    if (!/^\s*-?[0-9]+\s*$/.test(timeout)) throw bad('invalid connect_timeout value')
    const secs = Number(timeout)
    // libpq: 0 or less waits for ever; 1 is taken as 2.
    if (secs > 0) config.connectionTimeoutMillis = Math.max(secs, 2) * 1000
  }
  for (const key of ['application_name', 'fallback_application_name', 'options', 'replication']) {
    if (get(key) !== undefined) config[key] = get(key)
  }
  const encoding = get('client_encoding')
  if (encoding && encoding !== 'auto') config.client_encoding = encoding
  // libpq turns TCP keepalives on unless told not to; pg does not.
  config.keepAlive = get('keepalives') !== '0'
  const idle = get('keepalives_idle')
  if (config.keepAlive && idle) {
    if (!/^[0-9]+$/.test(idle)) throw bad('invalid keepalives_idle value')
    config.keepAliveInitialDelayMillis = Number(idle) * 1000
  }
  // pg's enableChannelBinding only prefers SCRAM-SHA-256-PLUS: it still
  // takes plain SCRAM, MD5, a cleartext password or no TLS at all, which
  // libpq refuses under require.  Refused rather than weakened.
  if (oneOf('channel_binding', ['disable', 'prefer', 'require'], 'prefer') === 'require') {
    throw bad('channel_binding=require is not supported with pg (it cannot refuse a server that skips channel binding)')
  }
  const negotiation = oneOf('sslnegotiation', ['postgres', 'direct'], 'postgres')

  // TLS.
  // The string's sslmode (or requiressl, stored as sslmode), then
  // $PGSSLMODE, then the deprecated $PGREQUIRESSL ("1..." for require).
  let sslMode = get('sslmode')
  if (sslMode === undefined && env.PGREQUIRESSL?.startsWith('1')) sslMode = 'require'
  // libpq 16: sslrootcert=system makes verify-full the default (a weaker
  // mode given, even by $PGSSLMODE, is refused below).
  sslMode = sslMode ?? (get('sslrootcert') === 'system' ? 'verify-full' : 'prefer')
  if (!SSL_MODES.includes(sslMode)) throw bad('invalid sslmode value')
  let tls = false
  if (sslMode !== 'disable' && sslMode !== 'allow') {
    const rootcert = get('sslrootcert')
    if (rootcert === 'system' && sslMode !== 'verify-full') {
      throw bad(`weak sslmode "${sslMode}" may not be used with sslrootcert=system (use "verify-full")`)
    }
    tls = { ...(opts.tls ?? {}) }
    // libpq: require with a root certificate verifies the chain, given in
    // sslrootcert (read below, an error if missing: stricter than libpq)
    // or the default ~/.postgresql/root.crt when it is there (the app's ca
    // standing in for it).
    if (sslMode === 'require') {
      if (rootcert || tls.ca !== undefined) {
        sslMode = 'verify-ca'
      } else {
        const ca = readDefaultFile(readFile, join(home, '.postgresql', 'root.crt'), 'sslrootcert')
        if (ca !== undefined) {
          tls.ca = ca
          sslMode = 'verify-ca'
        }
      }
    }
    const verify = sslMode === 'verify-ca' || sslMode === 'verify-full'
    tls.rejectUnauthorized = verify
    if (rootcert === 'system') {
      // Node's own roots: the string wins over the app's ca.
      delete tls.ca
    } else if (verify && (rootcert || tls.ca === undefined)) {
      // The app's ca (the pool's ssl option) stands in for the default
      // ~/.postgresql/root.crt; an sslrootcert in the string wins.
      tls.ca = readSecretFile(readFile, rootcert || join(home, '.postgresql', 'root.crt'), 'sslrootcert')
    }
    const crl = get('sslcrl')
    if (crl) tls.crl = readSecretFile(readFile, crl, 'sslcrl')
    // The client certificate, as libpq: sslcert, else the default one when
    // it is there (none: no client certificate, sslkey unused); with a
    // certificate, its key (sslkey, else the default) must be there.  An
    // sslcert given but missing is an error here (libpq goes on without).
    const cert = get('sslcert')
    const key = get('sslkey')
    let certPem
    if (oneOf('sslcertmode', ['disable', 'allow', 'require'], 'allow') === 'disable') {
      // no client certificate
    } else if (cert) {
      certPem = readSecretFile(readFile, cert, 'sslcert')
    } else {
      certPem = readDefaultFile(readFile, join(home, '.postgresql', 'postgresql.crt'), 'sslcert')
    }
    if (certPem !== undefined) {
      tls.cert = certPem
      setKey(tls, loadClientKey(readFile, key || join(home, '.postgresql', 'postgresql.key'), params.sslpassword))
    }
    const versions = { 'TLSv1': 'TLSv1', 'TLSv1.1': 'TLSv1.1', 'TLSv1.2': 'TLSv1.2', 'TLSv1.3': 'TLSv1.3' }
    // The string's, else the app's own (the pool's ssl option), else
    // libpq's default.
    const min = get('ssl_min_protocol_version')
    if (min !== undefined && !versions[min]) throw bad('invalid ssl_min_protocol_version value')
    tls.minVersion = min ?? tls.minVersion ?? 'TLSv1.2'
    const max = get('ssl_max_protocol_version')
    if (max) {
      if (!versions[max]) throw bad('invalid ssl_max_protocol_version value')
      tls.maxVersion = max
    }
    if (negotiation === 'direct') config.sslnegotiation = 'direct'
  } else if (negotiation === 'direct') {
    throw bad('sslnegotiation=direct needs SSL (sslmode require or stronger)')
  }

  return {
    hosts,
    sslMode,
    targetSessionAttrs: oneOf('target_session_attrs', SESSION_ATTRS, 'any'),
    config,
    tls,
  }
}

/**
 * The pg client config for one host of a translation.
 * @param {Translation} t
 * @param {HostEntry} entry
 * @param {{ plain?: boolean }} [how] plain: without TLS (sslmode=prefer,
 *   after the server said it has none)
 */
export function hostConfig(t, entry, how = {}) {
  const config = { ...t.config, port: entry.port }
  const address = entry.hostaddr ?? entry.host
  if (address !== undefined) config.host = address
  // libpq never uses TLS on a Unix socket.
  const socket = address !== undefined && address.startsWith('/')
  if (!t.tls || socket || how.plain) {
    config.ssl = false
    return config
  }
  const tls = { ...t.tls }
  if (t.tls.key !== undefined) setKey(tls, t.tls.key)
  if (t.sslMode === 'verify-ca') {
    tls.checkServerIdentity = () => undefined
  } else if (t.sslMode === 'verify-full') {
    // The name, not the address: hostaddr only says where to connect.
    const name = entry.host ?? entry.hostaddr ?? 'localhost'
    tls.checkServerIdentity = (_servername, cert) => checkServerIdentity(name, cert)
  }
  config.ssl = tls
  return config
}

/** A label for a host in messages: "db:5432", "/run/postgresql:5432". */
export function hostLabel(entry) {
  const name = entry.host ?? entry.hostaddr ?? 'localhost'
  return `${name.includes(':') ? `[${name}]` : name}:${entry.port}`
}

/*
 * Connection strings: libpq's parsing rules, the masking (the same cases
 * as libdbswap's tests/unit/test-mask.c, so both mask alike), and the
 * translation into pg's config.
 */
import assert from 'node:assert/strict'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { test } from 'node:test'
import { inspect } from 'node:util'

import pg from 'pg'

import { hostConfig, hostLabel, maskConninfo, parseConninfo, redact, translate } from '../src/conninfo.js'

function checkMask(input, want, ...secrets) {
  const out = maskConninfo(input)
  if (want !== null) assert.equal(out, want, `mask of ${JSON.stringify(input)}`)
  for (const s of secrets) assert.ok(!out.includes(s), `mask of ${JSON.stringify(input)} = ${JSON.stringify(out)} leaks ${JSON.stringify(s)}`)
}

test('mask: null and empty', () => {
  assert.equal(maskConninfo(null), '(none)')
  assert.equal(maskConninfo(undefined), '(none)')
  assert.equal(maskConninfo(''), '')
})

test('mask: URIs', () => {
  checkMask('postgresql://app:s3cret@db/x', 'postgresql://app:****@db/x', 's3cret')
  checkMask('postgres://app:s3cret@db/x', 'postgres://app:****@db/x', 's3cret')
  checkMask('postgresql://app@db/x', 'postgresql://app@db/x', '****')
  checkMask('postgresql://db:5432/x', 'postgresql://db:5432/x', '****')
  checkMask('postgres://', 'postgres://', '****')
  checkMask('postgresql://app:@db/x', 'postgresql://app:****@db/x', 'app:@')
  checkMask(
    'postgresql://app:s3cret@h1:5432,h2:5433/x?target_session_attrs=read-write',
    'postgresql://app:****@h1:5432,h2:5433/x?target_session_attrs=read-write',
    's3cret',
  )
  // '@', ':' and '/' in a password, unencoded: up to the last '@' goes.
  checkMask('postgresql://app:p@ss:w/rd@db:5432/x', 'postgresql://app:****@db:5432/x', 'p@ss', 'ss:w', 'w/rd', 'rd@')
  checkMask('postgresql://app:p%40ss%3Aw%2Frd@db/x', 'postgresql://app:****@db/x', 'p%40', '%2Frd', 'ss%3A')
  checkMask('postgresql://app@db/x?password=s3cret', 'postgresql://app@db/x?password=****', 's3cret')
  checkMask(
    'postgresql://db/x?sslmode=require&sslpassword=k3y&application_name=a',
    'postgresql://db/x?sslmode=require&sslpassword=****&application_name=a',
    'k3y',
  )
  checkMask('postgresql://app:s3cret@db/x?sslpassword=k3y', 'postgresql://app:****@db/x?sslpassword=****', 's3cret', 'k3y')
  checkMask('postgresql://db/x?password=a&password=b3b', 'postgresql://db/x?password=****&password=****', 'b3b')
  checkMask('postgresql://db/x?password=', 'postgresql://db/x?password=****', 'password=&')
  checkMask(
    'postgresql://app@db/x?application_name=a:b&password=p@ss',
    'postgresql://app@db/x?application_name=a:b&password=****',
    'p@ss',
    '@ss',
  )
  checkMask('postgresql://db:5432/x?password=s@cret', null, 's@cret', 'cret')
  checkMask('postgresql://app@db/x?password=a:b@c3c', null, 'a:b', 'c3c', '=a')
  checkMask('postgresql://app:s3cret@db/x?application_name=me@host', null, 's3cret')
  // libpq reads user info up to the '@' without stopping at a '?'.
  checkMask('postgresql://a?b:s3cretpw@db/x', null, 's3cretpw', 'cretp')
  checkMask('postgresql://a?b:pw@db/x?password=q3q', null, 'pw@', 'q3q')
  // Encoded query keys are keys.
  checkMask('postgresql://db/x?pass%77ord=s3cret', null, 's3cret')
  checkMask('postgresql://db/x?%73slpassword=s3cret', null, 's3cret')
  checkMask('postgresql://db/x?passw%6Frd=s3cret&application_name=b', 'postgresql://db/x?passw%6Frd=****&application_name=b', 's3cret')
  // What libpq refuses (an unknown parameter, an unterminated quote) is masked whole.
  checkMask('postgresql://db/x?passw%6Frd=s3cret&a=b', '****', 's3cret')
  checkMask('postgresql://db/x?passw%6frd=s3cret', null, 's3cret')
  checkMask('postgresql://db/x?passw%6=x', '****') // libpq refuses it: masked whole
  checkMask('postgresql://db/x?Password=s3cret', null, 's3cret')
  checkMask('POSTGRESQL://app:s3cret@db/x?sslmode=require', null, 's3cret')
  checkMask('Postgres://app:s3cret@db/x', null, 's3cret')
})

test('mask: keyword/value strings', () => {
  checkMask("host=db password='s e c' user=app", 'host=db password=**** user=app', 's e c', "'s", "c'")
  checkMask('host=db password=s3cret user=app', 'host=db password=**** user=app', 's3cret')
  checkMask('password=s3cret', 'password=****', 's3cret')
  checkMask('password = s3cret host=db', 'password = **** host=db', 's3cret')
  checkMask('  host=db\tpassword=\ts3cret  ', '  host=db\tpassword=\t****  ', 's3cret')
  checkMask('sslpassword=k3y host=db sslmode=require', 'sslpassword=**** host=db sslmode=require', 'k3y')
  checkMask('host=db password=', 'host=db password=****')
  checkMask("host=db password='' user=app", 'host=db password=**** user=app', "''")
  checkMask("host=db password='it\\'s s3\\\\cret' user=app", 'host=db password=**** user=app', 's3', 'cret', 'it', '\\')
  checkMask('host=db password=s3\\ cret user=app', 'host=db password=**** user=app', 's3', 'cret')
  checkMask("host=db password='s3 cret user=app", '****', 's3', 'cret', 'user=app')
  checkMask("host=db password='s3cret\\'", '****', 's3cret')
  checkMask('host=db s3cret', null, 's3cret')
  checkMask('password=my s3cret phrase', null, 's3cret', 'phrase')
  checkMask('host=db user=app s3cret more', null, 's3cret', 'more')
  checkMask('host=db port=5432 dbname=x', 'host=db port=5432 dbname=x', '****')
  checkMask('passwordx=y', '****') // an unknown key: libpq refuses it, masked whole
  checkMask('PASSWORD=s3cret host=db', '****', 's3cret')
  // Secrets of newer libpq keywords are masked too.
  checkMask('host=db oauth_client_secret=s3cret', 'host=db oauth_client_secret=****', 's3cret')
})

test('mask: a dbname that is a connection string of its own (libpq expands it)', () => {
  // The same cases as test-mask.c's test_dbname_conninfo.
  checkMask("host=db dbname='host=db password=s3cret user=app'", 'host=db dbname=****', 's3cret', 'user=app')
  checkMask('host=db dbname=host=db\\ password=s3cret\\ user=app port=5432', 'host=db dbname=**** port=5432', 's3cret')
  checkMask('host=db dbname=postgresql://app:s3cret@db/app user=app', 'host=db dbname=**** user=app', 's3cret')
  checkMask("host=db dbname='postgres://app:s3cret@db/app'", 'host=db dbname=****', 's3cret')
  checkMask("dbname='password=s3cret' dbname=app host=db", 'dbname=**** dbname=app host=db', 's3cret')
  checkMask('host=db dbname=PostgreSQL://app:s3cret@db/app', 'host=db dbname=****', 's3cret')
  checkMask('postgresql://db/postgresql%3A%2F%2Fapp%3As3cret%40db%2Fapp', 'postgresql://db/****', 's3cret')
  checkMask(
    'postgresql://app:pw@db:5432/host%3Ddb%20password%3Ds3cret?sslmode=require',
    'postgresql://app:****@db:5432/****?sslmode=require',
    's3cret',
  )
  checkMask('postgresql://db/x?dbname=host%3Ddb%20password%3Ds3cret', 'postgresql://db/x?dbname=****', 's3cret')
  checkMask('postgresql://db/x?db%6Eame=password%3Ds3cret&sslmode=prefer', 'postgresql://db/x?db%6Eame=****&sslmode=prefer', 's3cret')
  checkMask('postgresql://db/x?dbname=postgresql://app:s3cret@db/app', 'postgresql://db/x?dbname=****', 's3cret')
  checkMask('postgresql://db/password=s3cret', 'postgresql://db/****', 's3cret')
  checkMask("dbname='dbname=\\'password=s3cret\\''", 'dbname=****', 's3cret')
  checkMask('host=db dbname=my-app_db', 'host=db dbname=my-app_db', '****')
  checkMask('postgresql://db/my%20app?application_name=a', 'postgresql://db/my%20app?application_name=a', '****')
  // and the parser reads the nested password where libpq would
  assert.equal(parseConninfo(parseConninfo("host=db dbname='host=db password=s3cret user=app'").dbname).password, 's3cret')
})

test('mask: neither a URI nor key=value, maybe a bare password', () => {
  checkMask('s3cret', '****', 's3cret')
  checkMask('my s3cret pw', '****', 's3cret')
  checkMask('postgresql:/app:s3cret@db', '****', 's3cret')
  checkMask("'s3cret'", '****', 's3cret')
})

test('mask: secrets full of separators, in every place a password may sit', () => {
  const uriSecrets = ['QX@QX', 'QX:QX', 'QX/QX', 'QX@QX:QX/QX', 'QX?QX', 'QX?QX@QX', 'QX%40QX', 'QX&QX', 'QX=QX', 'QX#QX', "QX'QX", 'QX QX']
  const uriTemplates = [
    'postgresql://app:%s@db/x',
    'postgres://app:%s@db:5432/x',
    'postgresql://app:%s@h1:5432,h2:5433/x?sslmode=require',
    'postgresql://app:%s@db/x?application_name=me@host&a=b',
    'postgresql://app:%s@db/x?sslmode=require&sslpassword=QXQX',
    'postgresql://u@ser:%s@db/x',
  ]
  const querySecrets = ['QX@QX', 'QX:QX', 'QX/QX', 'QX?QX', 'QX%26QX', 'QX=QX', "QX'QX", 'QX@QX:QX?QX']
  const queryTemplates = [
    'postgresql://db/x?password=%s',
    'postgresql://app@db/x?password=%s&sslmode=require',
    'postgresql://db:5432/x?sslmode=require&password=%s',
    'postgresql://app@db/x?application_name=a:b&sslpassword=%s',
    'postgresql://app@db:5432/x?application_name=a@b&password=%s',
    'postgresql://db/x?pass%77ord=%s',
  ]
  for (const t of uriTemplates) for (const s of uriSecrets) checkMask(t.replace('%s', s), null, 'QX')
  for (const t of queryTemplates) for (const s of querySecrets) checkMask(t.replace('%s', s), null, 'QX')
  const kvSecrets = ['QX QX', "QX'QX", 'QX\\QX', 'QX=QX', 'QX\tQX QX', "QX''QX", "QX\\'QX"]
  for (const secret of kvSecrets) {
    const quoted = secret.replace(/['\\]/g, (c) => `\\${c}`)
    checkMask(`host=db password='${quoted}' user=app`, 'host=db password=**** user=app', 'QX')
    checkMask(`password = '${quoted}'`, 'password = ****', 'QX')
    checkMask(`sslpassword='${quoted}' host=db`, 'sslpassword=**** host=db', 'QX')
    checkMask(`host=db password='${quoted}`, '****', 'QX')
    // and libpq reads the same password back
    assert.equal(parseConninfo(`host=db password='${quoted}' user=app`).password, secret)
  }
})

test('mask: long values', () => {
  const long = 'S'.repeat(100000)
  assert.equal(maskConninfo(`host=db password='${long}' user=app`), 'host=db password=**** user=app')
  assert.equal(maskConninfo(`postgresql://app:${long}@db/x`), 'postgresql://app:****@db/x')
})

test('parse: URIs by libpq rules', () => {
  const p = (s) => ({ ...parseConninfo(s) })
  assert.deepEqual(p('postgresql://app:s3cret@db:5433/mydb?sslmode=require&application_name=api'), {
    user: 'app',
    password: 's3cret',
    host: 'db',
    port: '5433',
    dbname: 'mydb',
    sslmode: 'require',
    application_name: 'api',
  })
  // The first ':' splits user from password; '%' escapes decode.
  assert.deepEqual(p('postgresql://app:a:b%40c%2Fd@db/x'), { user: 'app', password: 'a:b@c/d', host: 'db', dbname: 'x' })
  // A '?' inside user info does not end it.
  assert.deepEqual(p('postgresql://a?b:pw@db/x'), { user: 'a?b', password: 'pw', host: 'db', dbname: 'x' })
  assert.deepEqual(p('postgresql://h1:5432,h2:5433,h3/db'), { host: 'h1,h2,h3', port: '5432,5433,', dbname: 'db' })
  assert.deepEqual(p('postgresql://[::1]:5433,[fe80::1]/db'), { host: '::1,fe80::1', port: '5433,', dbname: 'db' })
  assert.deepEqual(p('postgres:///db?host=/var/run/postgresql'), { dbname: 'db', host: '/var/run/postgresql' })
  assert.deepEqual(p('postgresql://'), {})
  assert.deepEqual(p('postgresql://db/x?ssl=true'), { host: 'db', dbname: 'x', sslmode: 'require' })
  assert.deepEqual(p('postgresql://db?options=-c%20search_path%3Dapp'), { host: 'db', options: '-c search_path=app' })
  assert.deepEqual(p('postgresql://%E2%82%ACuser@db'), { user: '€user', host: 'db' })
  // '+' is not a blank in libpq.
  assert.equal(parseConninfo('postgresql://db?application_name=a+b').application_name, 'a+b')
})

test('parse: keyword/value strings by libpq rules', () => {
  const p = (s) => ({ ...parseConninfo(s) })
  assert.deepEqual(p("host=db port = 5432 password='it\\'s a \\\\ secret' user=app"), {
    host: 'db',
    port: '5432',
    password: "it's a \\ secret",
    user: 'app',
  })
  assert.deepEqual(p('password=s3\\ cret host=a,b'), { password: 's3 cret', host: 'a,b' })
  assert.deepEqual(p("password='' dbname=x"), { password: '', dbname: 'x' })
  assert.deepEqual(p('  '), {})
  assert.deepEqual(p(''), {})
  // Later keys win.
  assert.equal(parseConninfo('host=a host=b').host, 'b')
  // The deprecated requiressl is stored as sslmode, as libpq does.
  assert.deepEqual(p('sslmode=disable requiressl=1'), { sslmode: 'require' })
  assert.deepEqual(p('requiressl=0'), { sslmode: 'prefer' })
})

test('parse errors name no value', () => {
  const secret = 'QXsecretQX'
  const bad = [
    `host=db ${secret}`,
    `host=db password='${secret}`,
    `${secret}=x`,
    `postgresql://db/x?${secret}=1`,
    `postgresql://db/x?password=${secret}%zz`,
    `postgresql://app:${secret}%0@db`,
    `postgresql://app:${secret}%00@db`,
    `postgresql://db/x?password=${secret}=2`,
    `postgresql://db/x?${secret}`,
    `postgresql://[::1/db?password=${secret}`,
    `postgresql://[]:5/x?password=${secret}`,
  ]
  for (const s of bad) {
    assert.throws(
      () => parseConninfo(s),
      (err) => err.code === 'conninfo' && !err.message.includes('QX') && !inspect(err).includes('QX'),
      s,
    )
  }
  // Bytes that are not UTF-8: refused, naming the part, not its value.
  for (const [s, re] of [
    ['postgresql://app:QXp%E9QX@db/x', /the password is not valid UTF-8/],
    ['postgresql://QX%FFQX@db/x', /the user name is not valid UTF-8/],
    ['postgresql://db/QX%C3QX', /the database name is not valid UTF-8/],
    ['postgresql://db/x?password=QX%E9QX', /the password query parameter is not valid UTF-8/],
    ['postgresql://db/x?sslpassword=QX%80QX', /the sslpassword query parameter is not valid UTF-8/],
    ['postgresql://db/x?QX%E9QX=1', /the query is not valid UTF-8/],
    ['postgresql://db/x?QXsecret=%E9', /the query is not valid UTF-8/],
  ]) {
    assert.throws(() => parseConninfo(s), (err) => err.code === 'conninfo' && re.test(err.message) && !inspect(err).includes('QX'), s)
  }
  assert.equal(parseConninfo('postgresql://app:p%C3%A9@db').password, 'pé')
  assert.throws(() => parseConninfo('host=db porrt=5'), /invalid connection option/)
  assert.throws(() => parseConninfo('host'), /missing "=" after "host"/)
  assert.throws(() => parseConninfo('postgresql://db?bogus=1'), /invalid URI query parameter/)
})

test('redact: the connection string and its password, wherever they are', () => {
  const c = 'postgresql://app:s3cr%40t@db/x'
  assert.equal(redact(`failed: ${c}`, c), 'failed: postgresql://app:****@db/x')
  assert.equal(redact('auth failed for s3cr@t and s3cr%40t', c), 'auth failed for **** and ****')
  assert.equal(redact('nothing here', c), 'nothing here')
  assert.equal(redact("pw was 'q w'", "host=db password='q w'"), "pw was '****'")
})

const NO_FILES = (path) => {
  throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' })
}

function t(conninfo, opts = {}) {
  return translate(conninfo, { env: {}, readFile: NO_FILES, home: '/home/u', ...opts })
}

test('translate: hosts, ports and hostaddr, matched as libpq does', () => {
  assert.deepEqual(t('host=a,b,c port=1,2,3').hosts, [
    { host: 'a', hostaddr: undefined, port: 1 },
    { host: 'b', hostaddr: undefined, port: 2 },
    { host: 'c', hostaddr: undefined, port: 3 },
  ])
  assert.deepEqual(t('host=a,b port=6000').hosts.map((h) => h.port), [6000, 6000])
  assert.deepEqual(t('postgresql://a:1,b/db').hosts.map(hostLabel), ['a:1', 'b:5432'])
  assert.deepEqual(t('postgresql://[::1]:6/db').hosts.map(hostLabel), ['[::1]:6'])
  // No host: libpq's default socket directory, not TCP to localhost.
  assert.deepEqual(t('dbname=x').hosts, [{ host: '/var/run/postgresql', hostaddr: undefined, port: 5432 }])
  assert.deepEqual(t('postgresql:///app?user=app').hosts.map(hostLabel), ['/var/run/postgresql:5432'])
  assert.deepEqual(t('host=a,,b port=1,2,3').hosts.map(hostLabel), ['a:1', '/var/run/postgresql:2', 'b:3'])
  assert.deepEqual(t('postgresql://a,:6/db').hosts.map(hostLabel), ['a:5432', '/var/run/postgresql:6'])
  const sockDefault = t('dbname=x sslmode=require')
  assert.deepEqual(hostConfig(sockDefault, sockDefault.hosts[0]), { database: 'x', keepAlive: true, host: '/var/run/postgresql', port: 5432, ssl: false })
  // A hostaddr without a host is no socket.
  assert.deepEqual(t('hostaddr=10.0.0.5').hosts, [{ host: undefined, hostaddr: '10.0.0.5', port: 5432 }])
  // Abstract sockets: pg would look "@name" up in DNS.
  assert.throws(() => t('host=@pg'), (err) => err.code === 'conninfo' && /host: abstract Unix sockets/.test(err.message))
  assert.throws(() => t('dbname=x', { env: { PGHOST: 'a,@pg' } }), /abstract Unix sockets/)
  assert.deepEqual(t('host=db hostaddr=10.0.0.5').hosts, [{ host: 'db', hostaddr: '10.0.0.5', port: 5432 }])
  assert.deepEqual(t('hostaddr=10.0.0.5,10.0.0.6').hosts.map(hostLabel), ['10.0.0.5:5432', '10.0.0.6:5432'])
  assert.throws(() => t('host=a,b port=1,2,3'), /could not match 3 port numbers to 2 hosts/)
  assert.throws(() => t('host=a,b hostaddr=1.2.3.4'), /could not match 2 host names to 1 hostaddr/)
  assert.throws(() => t('host=a port=99999'), /invalid port/)
  assert.throws(() => t('host=a hostaddr=db.example'), /invalid hostaddr value/, 'libpq takes no name there')
  assert.deepEqual(t('host=a,b hostaddr=::1,').hosts.map((h) => h.hostaddr), ['::1', undefined])
  assert.throws(() => t('host=a port=x'), /invalid port/)
  // The environment, where the string says nothing (PGHOST may be a list).
  assert.deepEqual(t('dbname=x', { env: { PGHOST: 'e1,e2', PGPORT: '7' } }).hosts.map(hostLabel), ['e1:7', 'e2:7'])
  assert.deepEqual(t('host=s', { env: { PGHOST: 'e1' } }).hosts.map(hostLabel), ['s:5432'])
  const shuffled = t('host=a,b,c,d,e,f load_balance_hosts=random').hosts.map((h) => h.host)
  assert.deepEqual([...shuffled].sort(), ['a', 'b', 'c', 'd', 'e', 'f'])
})

test('translate: one config per host, the connect address and the name told apart', () => {
  const tr = t('host=db hostaddr=10.0.0.5 user=app password=pw dbname=x sslmode=disable')
  assert.deepEqual(hostConfig(tr, tr.hosts[0]), {
    user: 'app',
    password: 'pw',
    database: 'x',
    keepAlive: true,
    host: '10.0.0.5',
    port: 5432,
    ssl: false,
  })
  const sock = t('host=/var/run/postgresql sslmode=require')
  assert.equal(hostConfig(sock, sock.hosts[0]).ssl, false, 'no TLS on a Unix socket')
  assert.equal(hostConfig(sock, sock.hosts[0]).host, '/var/run/postgresql')
})

test('translate: the other parameters pg has', () => {
  const tr = t(
    "postgresql://app@db/x?connect_timeout=10&application_name=api&options=-c%20statement_timeout%3D5s&keepalives_idle=30&client_encoding=UTF8&target_session_attrs=read-write&replication=database&channel_binding=prefer",
  )
  assert.deepEqual(tr.config, {
    user: 'app',
    database: 'x',
    connectionTimeoutMillis: 10000,
    application_name: 'api',
    options: '-c statement_timeout=5s',
    replication: 'database',
    client_encoding: 'UTF8',
    keepAlive: true,
    keepAliveInitialDelayMillis: 30000,
  })
  assert.equal(tr.targetSessionAttrs, 'read-write')
  assert.equal(t('host=a connect_timeout=1').config.connectionTimeoutMillis, 2000, 'libpq takes 1 for 2')
  assert.equal(t('host=a connect_timeout=0').config.connectionTimeoutMillis, undefined)
  assert.equal(t('host=a keepalives=0').config.keepAlive, false)
  assert.equal(t('host=a client_encoding=auto').config.client_encoding, undefined)
  assert.equal(t('host=a').targetSessionAttrs, 'any')
  assert.equal(t('host=a', { env: { PGTARGETSESSIONATTRS: 'primary' } }).targetSessionAttrs, 'primary')
  for (const v of ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby']) {
    assert.equal(t(`host=a target_session_attrs=${v}`).targetSessionAttrs, v)
  }
  assert.throws(() => t('host=a target_session_attrs=writable'), /invalid target_session_attrs/)
  assert.throws(() => t('host=a connect_timeout=ten'), /invalid connect_timeout/)
})

test('translate: sslmode and its files (pg wants their contents)', () => {
  const files = {
    '/etc/ca.pem': Buffer.from('CA'),
    '/etc/client.crt': Buffer.from('CRT'),
    '/etc/client.key': Buffer.from(CLIENT_KEY),
    '/etc/crl.pem': Buffer.from('CRL'),
    '/home/u/.postgresql/root.crt': Buffer.from('HOMECA'),
  }
  const readFile = (path) => {
    if (files[path]) return files[path]
    return NO_FILES(path)
  }
  const tls = (s, env = {}) => translate(s, { env, readFile, home: '/home/u' })

  assert.equal(tls('host=db sslmode=disable').tls, false)
  assert.equal(tls('host=db sslmode=allow').tls, false)
  const prefer = tls('host=db')
  assert.equal(prefer.sslMode, 'prefer')
  assert.equal(prefer.tls.rejectUnauthorized, false)
  assert.equal(hostConfig(prefer, prefer.hosts[0], { plain: true }).ssl, false)

  const require_ = translate('host=db sslmode=require', { env: {}, readFile, home: '/nowhere' })
  assert.equal(require_.sslMode, 'require')
  assert.equal(require_.tls.rejectUnauthorized, false)
  assert.equal(require_.tls.ca, undefined)
  assert.equal(require_.tls.minVersion, 'TLSv1.2')
  // require with ~/.postgresql/root.crt there verifies the chain, as libpq.
  const homeRoot = tls('host=db sslmode=require')
  assert.equal(homeRoot.sslMode, 'verify-ca')
  assert.equal(homeRoot.tls.ca.toString(), 'HOMECA')
  assert.equal(homeRoot.tls.rejectUnauthorized, true)
  assert.equal(hostConfig(homeRoot, homeRoot.hosts[0]).ssl.checkServerIdentity(), undefined)
  const appCa = translate('host=db sslmode=require', { env: {}, readFile, home: '/nowhere', tls: { ca: 'APPCA' } })
  assert.equal(appCa.sslMode, 'verify-ca', "the app's ca stands in for root.crt")
  assert.equal(appCa.tls.ca, 'APPCA')
  const eacces = (path) => {
    throw Object.assign(new Error(`EACCES: ${path}`), { code: 'EACCES' })
  }
  assert.throws(() => translate('host=db sslmode=require', { env: {}, readFile: eacces, home: '/h' }), /root certificate file "\/h\/.postgresql\/root.crt" \(sslrootcert\): EACCES/)
  // prefer never verifies (libpq would, then go on without TLS on failure).
  assert.equal(tls('host=db sslmode=prefer').tls.rejectUnauthorized, false)

  // require with a root certificate verifies the chain, as libpq does.
  const withRoot = tls('host=db sslmode=require sslrootcert=/etc/ca.pem')
  assert.equal(withRoot.sslMode, 'verify-ca')
  assert.equal(withRoot.tls.ca.toString(), 'CA')
  assert.equal(withRoot.tls.rejectUnauthorized, true)
  assert.equal(hostConfig(withRoot, withRoot.hosts[0]).ssl.checkServerIdentity(), undefined)

  const full = tls('host=db.example sslmode=verify-full sslcert=/etc/client.crt sslkey=/etc/client.key sslcrl=/etc/crl.pem')
  assert.equal(full.tls.ca.toString(), 'HOMECA', 'the default root certificate')
  assert.equal(full.tls.cert.toString(), 'CRT')
  assert.equal(full.tls.key, CLIENT_KEY)
  assert.equal(full.tls.crl.toString(), 'CRL')
  const cfg = hostConfig(full, full.hosts[0])
  assert.equal(typeof cfg.ssl.checkServerIdentity, 'function')
  // The identity is checked against the name, not the address.
  const err = cfg.ssl.checkServerIdentity('10.0.0.5', { subject: { CN: 'other.example' }, subjectaltname: 'DNS:other.example' })
  assert.ok(err instanceof Error && /db\.example/.test(err.message))

  assert.equal(tls('host=db sslmode=verify-full sslrootcert=system').tls.ca, undefined)
  assert.throws(() => tls('host=db sslmode=require sslrootcert=system'), /weak sslmode "require"/)
  // libpq 16: sslrootcert=system without sslmode means verify-full.
  for (const sys of [tls('host=db sslrootcert=system'), tls('host=db', { PGSSLROOTCERT: 'system' })]) {
    assert.equal(sys.sslMode, 'verify-full')
    assert.equal(sys.tls.rejectUnauthorized, true)
    assert.equal(sys.tls.ca, undefined, 'the system roots')
  }
  assert.throws(() => tls('host=db sslrootcert=system', { PGSSLMODE: 'prefer' }), /weak sslmode "prefer"/)
  assert.throws(() => translate('host=db sslmode=verify-ca', { env: {}, readFile: NO_FILES, home: '/nowhere' }), /root certificate file "\/nowhere\/.postgresql\/root.crt" \(sslrootcert\): ENOENT/)
  assert.throws(() => tls('host=db sslmode=verify-ca sslrootcert=/missing.pem'), /could not read the root certificate file "\/missing.pem" \(sslrootcert\): ENOENT/)
  assert.throws(() => tls('host=db sslmode=require sslcrl=/missing.crl'), /certificate revocation list file "\/missing.crl" \(sslcrl\)/)
  assert.throws(() => tls('host=db sslmode=sometimes'), /invalid sslmode/)
  assert.equal(tls('host=db', { PGSSLMODE: 'disable' }).tls, false)
  // (no ~/.postgresql/root.crt, which would make require verify-ca)
  const mode = (c, env = {}) => translate(c, { env, readFile, home: '/nowhere' }).sslMode
  assert.equal(mode('host=db requiressl=1'), 'require')
  // libpq stores requiressl as sslmode: the last one in the string wins.
  assert.equal(mode('host=db sslmode=disable requiressl=1'), 'require')
  assert.equal(mode('host=db requiressl=1 sslmode=disable'), 'disable')
  assert.equal(mode('host=db sslmode=require requiressl=0'), 'prefer')
  assert.equal(mode('postgresql://db/x?sslmode=allow&requiressl=1'), 'require')
  assert.equal(mode('host=db requiressl=1', { PGSSLMODE: 'disable' }), 'require', "the string's wins over $PGSSLMODE")
  // $PGREQUIRESSL=1 only when neither the string nor $PGSSLMODE says.
  assert.equal(mode('host=db', { PGREQUIRESSL: '1' }), 'require')
  assert.equal(mode('host=db', { PGREQUIRESSL: '1', PGSSLMODE: 'allow' }), 'allow')
  assert.equal(mode('host=db sslmode=disable', { PGREQUIRESSL: '1' }), 'disable')
  assert.equal(mode('host=db', { PGREQUIRESSL: '0' }), 'prefer')
  assert.equal(tls('host=db sslmode=require ssl_max_protocol_version=TLSv1.3').tls.maxVersion, 'TLSv1.3')
  assert.throws(() => tls('host=db sslmode=require ssl_min_protocol_version=SSLv3'), /ssl_min_protocol_version/)
  // A user's ssl options are the base; the string's win.
  const merged = translate('host=db sslmode=require', { env: {}, readFile, tls: { servername: 'x', rejectUnauthorized: true } })
  assert.equal(merged.tls.servername, 'x')
  assert.equal(merged.tls.rejectUnauthorized, false)
  // The app's minimum TLS version, unless the string gives one.
  assert.equal(translate('host=db sslmode=require', { env: {}, readFile, tls: { minVersion: 'TLSv1.3' } }).tls.minVersion, 'TLSv1.3')
  assert.equal(translate('host=db sslmode=require ssl_min_protocol_version=TLSv1.2', { env: {}, readFile, tls: { minVersion: 'TLSv1.3' } }).tls.minVersion, 'TLSv1.2')
  // The app's ca stands in for ~/.postgresql/root.crt, which is not read.
  const noHome = { env: {}, readFile, home: '/nowhere', tls: { ca: 'APPCA', minVersion: 'TLSv1.3' } }
  for (const mode of ['verify-ca', 'verify-full']) {
    const app = translate(`host=db sslmode=${mode}`, noHome)
    assert.equal(app.tls.ca, 'APPCA', mode)
    assert.equal(app.tls.rejectUnauthorized, true)
  }
  assert.equal(translate('host=db sslmode=verify-full sslrootcert=/etc/ca.pem', noHome).tls.ca.toString(), 'CA', "the string's sslrootcert wins")
  assert.equal(translate('host=db sslrootcert=system', noHome).tls.ca, undefined, "sslrootcert=system: Node's roots")
})

const KEY_PAIR = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
const CLIENT_KEY = KEY_PAIR.privateKey.export({ type: 'pkcs8', format: 'pem' })

test('translate: sslpassword decrypts the key here and is kept nowhere', () => {
  const password = 'QXkeypassQX'
  const encrypted = KEY_PAIR.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: password })
  const legacy = KEY_PAIR.privateKey.export({ type: 'sec1', format: 'pem', cipher: 'aes-128-cbc', passphrase: password })
  const files = { '/etc/c.crt': Buffer.from('CRT'), '/etc/enc.key': Buffer.from(encrypted), '/etc/legacy.key': Buffer.from(legacy) }
  const readFile = (path) => files[path] ?? NO_FILES(path)
  const tr = (s) => translate(s, { env: {}, readFile, home: '/home/u' })
  for (const file of ['/etc/enc.key', '/etc/legacy.key']) {
    const conninfo = `host=db user=app sslmode=require sslcert=/etc/c.crt sslkey=${file} sslpassword=${password}`
    const t1 = tr(conninfo)
    assert.equal(t1.tls.passphrase, undefined)
    // The key, decrypted, as PEM that needs no password.
    assert.equal(createPrivateKey(t1.tls.key).asymmetricKeyType, 'ec')
    assert.equal(t1.tls.key, CLIENT_KEY)
    const cfg = hostConfig(t1, t1.hosts[0])
    assert.equal(cfg.ssl.key, CLIENT_KEY, 'pg gets the key')
    const client = new pg.Client(cfg)
    for (const [what, text] of [
      ['the translation', inspect(t1, { depth: 10 })],
      ['the config', inspect(cfg, { depth: 10 })],
      ['the config as JSON', JSON.stringify(cfg)],
      ['a pg client', inspect(client, { depth: 10 })],
    ]) {
      assert.ok(!text.includes(password), `${what} shows sslpassword`)
      assert.ok(!text.includes('PRIVATE KEY'), `${what} shows the key`)
    }
  }
  // A wrong or missing password: an error naming the file, not the password.
  assert.throws(
    () => tr('host=db sslmode=require sslcert=/etc/c.crt sslkey=/etc/enc.key sslpassword=QXwrongQX'),
    (err) => err.code === 'conninfo' && /client key file "\/etc\/enc.key" \(sslkey\)/.test(err.message) && /sslpassword/.test(err.message) && !inspect(err).includes('QX'),
  )
  assert.throws(() => tr('host=db sslmode=require sslcert=/etc/c.crt sslkey=/etc/enc.key'), /client key file "\/etc\/enc.key" \(sslkey\) is encrypted and sslpassword is not set/)
  // The default key in ~/.postgresql too.
  const home = { '/home/u/.postgresql/postgresql.crt': Buffer.from('CRT'), '/home/u/.postgresql/postgresql.key': Buffer.from(encrypted) }
  const byHome = translate(`host=db sslmode=require sslpassword=${password}`, { env: {}, readFile: (p) => home[p] ?? NO_FILES(p), home: '/home/u' })
  assert.equal(byHome.tls.key, CLIENT_KEY)
  assert.ok(!inspect(byHome, { depth: 10 }).includes(password))
})

test('translate: the client certificate and key, loaded as libpq loads them', () => {
  const files = {
    '/etc/c.crt': Buffer.from('CRT'),
    '/etc/c.key': Buffer.from(CLIENT_KEY),
    '/home/u/.postgresql/postgresql.crt': Buffer.from('HOMECRT'),
    '/home/u/.postgresql/postgresql.key': Buffer.from(CLIENT_KEY),
  }
  const tr = (s, home = '/home/u', extra = {}) =>
    translate(s, { env: {}, readFile: (p) => ({ ...files, ...extra })[p] ?? NO_FILES(p), home }).tls
  // sslkey alone and no default certificate: no client certificate.
  const keyOnly = tr('host=db sslmode=require sslkey=/etc/c.key', '/nowhere')
  assert.equal(keyOnly.cert, undefined)
  assert.equal(keyOnly.key, undefined)
  // sslkey with the default certificate.
  const withHome = tr('host=db sslmode=require sslkey=/etc/c.key')
  assert.equal(withHome.cert.toString(), 'HOMECRT')
  assert.equal(withHome.key, CLIENT_KEY)
  assert.equal(tr('host=db sslmode=require').cert.toString(), 'HOMECRT', 'the default pair')
  assert.equal(tr('host=db sslmode=require', '/nowhere').cert, undefined, 'none')
  // A certificate without its key: an error, as in libpq.
  assert.throws(() => tr('host=db sslmode=require sslcert=/etc/c.crt', '/nowhere'), /could not read the client key file "\/nowhere\/.postgresql\/postgresql.key" \(sslkey\)/)
  assert.throws(
    () => tr('host=db sslmode=require', '/h', { '/h/.postgresql/postgresql.crt': Buffer.from('CRT') }),
    /could not read the client key file "\/h\/.postgresql\/postgresql.key"/,
  )
  // sslcert given but missing: an error (libpq would go on without).
  assert.throws(() => tr('host=db sslmode=require sslcert=/missing.crt sslkey=/etc/c.key'), /could not read the client certificate file "\/missing.crt" \(sslcert\)/)
  // sslcertmode=disable: no client certificate at all.
  const disabled = tr('host=db sslmode=require sslcertmode=disable sslcert=/etc/c.crt sslkey=/etc/c.key')
  assert.equal(disabled.cert, undefined)
  assert.equal(disabled.key, undefined)
  assert.throws(() => tr('host=db sslmode=require sslcertmode=sometimes'), /invalid sslcertmode/)
})

test('translate: what pg cannot do is refused, not weakened', () => {
  for (const [s, re] of [
    ['service=prod', /service files/],
    ['host=a require_auth=scram-sha-256', /require_auth/],
    ['host=a requirepeer=postgres', /requirepeer/],
    ['host=a gssencmode=require', /GSSAPI/],
    ['host=a passfile=/x', /passfile/],
    ['host=a sslmode=disable sslnegotiation=direct', /needs SSL/],
    // pg would still take plain SCRAM, MD5, cleartext or no TLS.
    ['host=a sslmode=require channel_binding=require', /channel_binding=require is not supported/],
    ['host=a sslmode=disable channel_binding=require', /channel_binding=require is not supported/],
  ]) {
    assert.throws(() => t(s), re, s)
  }
  assert.throws(() => t('host=a', { env: { PGCHANNELBINDING: 'require' } }), /channel_binding=require/)
  assert.equal(t('host=a channel_binding=disable').config.enableChannelBinding, undefined)
  assert.ok(t('host=a passfile=/x password=y'), 'a passfile with a password given is never read')
  assert.ok(t('host=a passfile=/x', { env: { PGPASSWORD: 'y' } }), 'nor with $PGPASSWORD')
  assert.throws(() => t("host=a passfile=/x password=''"), /passfile/, 'libpq reads it for an empty password')
  // $PGPASSFILE is pg's to read, as libpq reads it: no refusal.
  assert.equal(t('host=a user=u', { env: { PGPASSFILE: '/etc/pgpass' } }).config.password, undefined)
  assert.ok(t('postgresql://u@a/db', { env: { PGPASSFILE: '/etc/pgpass' } }))
  assert.ok(t('host=a gssencmode=prefer krbsrvname=x tcp_user_timeout=5 keepalives_count=3'))
})

test('translation errors name no secret', () => {
  const secret = 'QXsecretQX'
  for (const s of [`host=a password=${secret} port=${secret}`, `postgresql://u:${secret}@h:${secret}/d`, `host=a,b port=1,2,3 password=${secret}`]) {
    assert.throws(() => t(s), (err) => !err.message.includes('QX') && !inspect(err).includes('QX'))
  }
})

/*
 * maskConninfo() and redact() against the agent's masker (common/mask.c):
 * the Node masker must hide at least what the C one hides, on the same
 * inputs.
 *
 * CASES is tests/unit/test-mask.c's list, case for case and in its order
 * (a group per C function): input, the C masker's output (null where the
 * C test takes any), and fragments that must not survive.  A case added
 * there belongs here too.  The property test builds the strings the fuzz
 * target tests/fuzz/fuzz-mask.c builds (its modes 0, 1 and 2), from a
 * seeded generator: the same cases on every run.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { maskConninfo, redact } from '../src/conninfo.js'
import { buildAny, buildKeyValue, buildUri, checkAny, generator, leakedFragment } from './helpers/mask-shapes.js'

const CASES = {
  test_uri: [
    ['postgresql://app:s3cret@db/x', 'postgresql://app:****@db/x', 's3cret'],
    ['postgres://app:s3cret@db/x', 'postgres://app:****@db/x', 's3cret'],
    ['postgresql://app@db/x', 'postgresql://app@db/x', '****'],
    ['postgresql://db:5432/x', 'postgresql://db:5432/x', '****'],
    ['postgres://', 'postgres://', '****'],
    ['postgresql://app:@db/x', 'postgresql://app:****@db/x', 'app:@'],
    [
      'postgresql://app:s3cret@h1:5432,h2:5433/x?target_session_attrs=read-write',
      'postgresql://app:****@h1:5432,h2:5433/x?target_session_attrs=read-write',
      's3cret',
    ],
    ['postgresql://app:p@ss:w/rd@db:5432/x', 'postgresql://app:****@db:5432/x', 'p@ss', 'ss:w', 'w/rd', 'rd@'],
    ['postgresql://app:p%40ss%3Aw%2Frd@db/x', 'postgresql://app:****@db/x', 'p%40', '%2Frd', 'ss%3A'],
    ['postgresql://app@db/x?password=s3cret', 'postgresql://app@db/x?password=****', 's3cret'],
    [
      'postgresql://db/x?sslmode=require&sslpassword=k3y&application_name=a',
      'postgresql://db/x?sslmode=require&sslpassword=****&application_name=a',
      'k3y',
    ],
    ['postgresql://app:s3cret@db/x?sslpassword=k3y', 'postgresql://app:****@db/x?sslpassword=****', 's3cret', 'k3y'],
    ['postgresql://db/x?password=a&password=b3b', 'postgresql://db/x?password=****&password=****', 'b3b'],
    ['postgresql://db/x?password=', 'postgresql://db/x?password=****', 'password=&'],
    [
      'postgresql://app@db/x?application_name=a:b&password=p@ss',
      'postgresql://app@db/x?application_name=a:b&password=****',
      'p@ss',
      '@ss',
    ],
    ['postgresql://db:5432/x?password=s@cret', null, 's@cret', 'cret'],
    ['postgresql://app@db/x?password=a:b@c3c', null, 'a:b', 'c3c', '=a'],
    ['postgresql://app:s3cret@db/x?application_name=me@host', null, 's3cret'],
    ['postgresql://a?b:s3cretpw@db/x', null, 's3cretpw', 'cretp'],
    ['postgresql://a?b:pw@db/x?password=q3q', null, 'pw@', 'q3q'],
    ['postgresql://db/x?pass%77ord=s3cret', null, 's3cret'],
    ['postgresql://db/x?%73slpassword=s3cret', null, 's3cret'],
    ['postgresql://db/x?passw%6Frd=s3cret&application_name=b', 'postgresql://db/x?passw%6Frd=****&application_name=b', 's3cret'],
    ['postgresql://db/x?passw%6frd=s3cret', null, 's3cret'],
    ['postgresql://db/x?passw%6=x', '****', 'passw', '=x'],
    ['postgresql://db/x?Password=s3cret', null, 's3cret'],
    ['POSTGRESQL://app:s3cret@db/x?sslmode=require', null, 's3cret'],
    ['Postgres://app:s3cret@db/x', null, 's3cret'],
  ],
  test_keyvalue: [
    ["host=db password='s e c' user=app", 'host=db password=**** user=app', 's e c', "'s", "c'"],
    ['host=db password=s3cret user=app', 'host=db password=**** user=app', 's3cret'],
    ['password=s3cret', 'password=****', 's3cret'],
    ['password = s3cret host=db', 'password = **** host=db', 's3cret'],
    ['  host=db\tpassword=\ts3cret  ', '  host=db\tpassword=\t****  ', 's3cret'],
    ['sslpassword=k3y host=db sslmode=require', 'sslpassword=**** host=db sslmode=require', 'k3y'],
    ['host=db password=', 'host=db password=****', 'QX'],
    ["host=db password='' user=app", 'host=db password=**** user=app', "''"],
    ["host=db password='it\\'s s3\\\\cret' user=app", 'host=db password=**** user=app', 's3', 'cret', 'it', '\\'],
    ['host=db password=s3\\ cret user=app', 'host=db password=**** user=app', 's3', 'cret'],
    ["host=db password='s3 cret user=app", '****', 's3', 'cret', 'user=app'],
    ["host=db password='s3cret\\'", '****', 's3cret'],
    ['host=db s3cret', null, 's3cret'],
    ['password=my s3cret phrase', null, 's3cret', 'phrase'],
    ['host=db user=app s3cret more', null, 's3cret', 'more'],
    ['host=db port=5432 dbname=x', 'host=db port=5432 dbname=x', '****'],
    ['passwordx=y', '****', '=y'],
    ['PASSWORD=s3cret host=db', '****', 's3cret'],
    ['host=db pasword=s3cret', '****', 's3cret'],
  ],
  test_dbname_conninfo: [
    ["host=db dbname='host=db password=s3cret user=app'", 'host=db dbname=****', 's3cret', 'user=app'],
    ['host=db dbname=host=db\\ password=s3cret\\ user=app port=5432', 'host=db dbname=**** port=5432', 's3cret'],
    ['host=db dbname=postgresql://app:s3cret@db/app user=app', 'host=db dbname=**** user=app', 's3cret'],
    ["host=db dbname='postgres://app:s3cret@db/app'", 'host=db dbname=****', 's3cret'],
    ["dbname='password=s3cret' dbname=app host=db", 'dbname=**** dbname=app host=db', 's3cret'],
    ['host=db dbname=PostgreSQL://app:s3cret@db/app', 'host=db dbname=****', 's3cret'],
    ['postgresql://db/postgresql%3A%2F%2Fapp%3As3cret%40db%2Fapp', 'postgresql://db/****', 's3cret'],
    [
      'postgresql://app:pw@db:5432/host%3Ddb%20password%3Ds3cret?sslmode=require',
      'postgresql://app:****@db:5432/****?sslmode=require',
      's3cret',
    ],
    ['postgresql://db/x?dbname=host%3Ddb%20password%3Ds3cret', 'postgresql://db/x?dbname=****', 's3cret'],
    ['postgresql://db/x?db%6Eame=password%3Ds3cret&sslmode=prefer', 'postgresql://db/x?db%6Eame=****&sslmode=prefer', 's3cret'],
    ['postgresql://db/x?dbname=postgresql://app:s3cret@db/app', 'postgresql://db/x?dbname=****', 's3cret'],
    ['postgresql://db/password=s3cret', 'postgresql://db/****', 's3cret'],
    ["dbname='dbname=\\'password=s3cret\\''", 'dbname=****', 's3cret'],
    ['host=db dbname=my-app_db', 'host=db dbname=my-app_db', '****'],
    ['postgresql://db/my%20app?application_name=a', 'postgresql://db/my%20app?application_name=a', '****'],
    ['postgresql://db/x?p%6Frt=s3cret', 'postgresql://db/x?p%6Frt=****', 's3cret'],
  ],
  // The C test takes any output here (its libpq may not know these
  // keywords and refuse the value); pg's parser here knows them.
  test_other_secrets: [
    ['host=db oauth_client_secret=s3cret', null, 's3cret'],
    ['host=db scram_client_key=s3cret', null, 's3cret'],
    ['postgresql://db/x?scram_server_key=s3cret', null, 's3cret'],
  ],
  test_garbage: [
    ['s3cret', '****', 's3cret'],
    ['my s3cret pw', '****', 's3cret'],
    ['postgresql:/app:s3cret@db', '****', 's3cret'],
    ["'s3cret'", '****', 's3cret'],
    ['jdbc:postgresql://db:5432/x?user=app&password=s3cret', '****', 's3cret', 'jdbc', 'db'],
    ['postgress://app:s3cret@db/x', '****', 's3cret'],
    ['postgres:/app:s3cret@db/x', '****', 's3cret'],
    ['host=db password=s3cret port=', null, 's3cret'],
    ['host=db password=s3cr', null, 's3cr'],
    ['host=db passw', '****', 'passw'],
    ["host=db password='s3cret", '****', 's3cret'],
    ['host=db port=s3cret user=app', 'host=db port=**** user=app', 's3cret'],
    ["host=db port='5432' sslmode=s3cret", 'host=db port=**** sslmode=****', 's3cret'],
    [
      'host=a,b port=5432,5433 sslmode=verify-full connect_timeout=10 target_session_attrs=read-write ' +
        'hostaddr=10.0.0.1,::1 ssl_min_protocol_version=TLSv1.2',
      'host=a,b port=5432,5433 sslmode=verify-full connect_timeout=10 target_session_attrs=read-write ' +
        'hostaddr=10.0.0.1,::1 ssl_min_protocol_version=TLSv1.2',
      '****',
    ],
    ['host=db hostaddr=s3cret keepalives_idle=s3cret2', 'host=db hostaddr=**** keepalives_idle=****', 's3cret'],
    ['host=db sslmode=require2', 'host=db sslmode=****', 'require2'],
    ['postgresql://db/x?sslmode=s3cret&connect_timeout=10', 'postgresql://db/x?sslmode=****&connect_timeout=10', 's3cret'],
    ['postgresql://db/x?port=s3cret', 'postgresql://db/x?port=****', 's3cret'],
    ['postgresql://app:s3cret/db', 'postgresql://****:****/db', 's3cret'],
    ['postgresql://app:s3cret', 'postgresql://****:****', 's3cret'],
    ['postgresql://h1:5432,app:s3cret/db', 'postgresql://h1:5432,****:****/db', 's3cret'],
    ['postgresql://[::1]:5432/db', 'postgresql://[::1]:5432/db', '****'],
    ['postgresql://app:s3c@ret@db/x', 'postgresql://app:****@db/x', 's3c', 'ret@'],
    ['postgresql://app:s3c/ret@db/x', 'postgresql://app:****@db/x', 's3c', 'ret'],
  ],
  // Beyond the C test: where the Node masker hides more than the C one
  // (a harmless surplus), and settings the C masker checks in one form
  // only, checked here in the other.
  node_more: [
    // A port after the user info is masked too when it is not a number.
    ['postgresql://app:pw@db:s3cret/x', 'postgresql://app:****@****:****/x', 's3cret'],
    ['postgresql://app@db:s3cret/x', 'postgresql://app@****:****/x', 's3cret'],
    // libpq's user info runs to the first '@' before any '/', over a '?':
    // user a?b, host db, port s3cret (common/mask.c shows that port).
    ['postgresql://a?b@db:s3cret/x', 'postgresql://a?b@****:****/x', 's3cret'],
    ['postgresql://a?b@db:5432/x?sslmode=require', 'postgresql://a?b@db:5432/x?sslmode=require'],
    ['postgresql://db/x?connect_timeout=s3cret&keepalives=1', 'postgresql://db/x?connect_timeout=****&keepalives=1', 's3cret'],
    ['postgresql://db/x?hostaddr=s3cret', 'postgresql://db/x?hostaddr=****', 's3cret'],
    ['postgresql://db/x?target_session_attrs=s3cret', 'postgresql://db/x?target_session_attrs=****', 's3cret'],
    ['host=db gssencmode=s3cret channel_binding=require', 'host=db gssencmode=**** channel_binding=require', 's3cret'],
    ['host=db keepalives=s3cret tcp_user_timeout=-1 keepalives_count=+3', 'host=db keepalives=**** tcp_user_timeout=-1 keepalives_count=+3', 's3cret'],
    ["host=db sslmode='require'", 'host=db sslmode=****'],
    ['host=db sslmode=', 'host=db sslmode='],
    ['host=db ssl_max_protocol_version=TLSv1.3 keepalives_interval=7', 'host=db ssl_max_protocol_version=TLSv1.3 keepalives_interval=7'],
    // Settings libpq checks only when it connects, masked here as well.
    [
      'host=db sslnegotiation=s3cret sslcertmode=allow load_balance_hosts=QXpw gsslib=gssapi sslsni=pw12 requiressl=1',
      'host=db sslnegotiation=**** sslcertmode=allow load_balance_hosts=**** gsslib=gssapi sslsni=**** requiressl=1',
      's3cret', 'QXpw', 'pw12',
    ],
    ['postgresql://db/x?sslcertmode=s3cret&max_protocol_version=3.2', 'postgresql://db/x?sslcertmode=****&max_protocol_version=3.2', 's3cret'],
    // Whitespace only: libpq takes it (no settings); nothing to show.
    ['   ', null, 'QX'],
  ],
}

function checkMask(input, want, secrets) {
  const out = maskConninfo(input)
  if (want !== null) assert.equal(out, want, `mask of ${JSON.stringify(input)}`)
  for (const s of secrets) {
    assert.ok(!out.includes(s), `mask of ${JSON.stringify(input)} = ${JSON.stringify(out)} leaks ${JSON.stringify(s)}`)
  }
}

for (const [group, cases] of Object.entries(CASES)) {
  test(`mask: test-mask.c's ${group}`, () => {
    for (const [input, want, ...secrets] of cases) checkMask(input, want, secrets)
  })
}

test("mask: test-mask.c's test_generated", () => {
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
  const fill = (t, s) => t.replace('%s', () => s)
  for (const t of uriTemplates) for (const s of uriSecrets) checkMask(fill(t, s), null, ['QX'])
  for (const t of queryTemplates) for (const s of querySecrets) checkMask(fill(t, s), null, ['QX'])
  for (const secret of ['QX QX', "QX'QX", 'QX\\QX', 'QX=QX', 'QX\tQX QX', "QX''QX", "QX\\'QX"]) {
    const quoted = secret.replace(/['\\]/g, (c) => `\\${c}`)
    checkMask(`host=db password='${quoted}' user=app`, 'host=db password=**** user=app', ['QX'])
    checkMask(`password = '${quoted}'`, 'password = ****', ['QX'])
    checkMask(`sslpassword='${quoted}' host=db`, 'sslpassword=**** host=db', ['QX'])
    checkMask(`host=db password='${quoted}`, '****', ['QX'])
  }
})

/* ---- the property test: fuzz-mask.c's shapes from a seeded generator ---- */

test('mask: fuzz-mask.c shapes, seeded: no 4-character fragment of a secret survives', () => {
  const rnd = generator(0x15db5a9)
  const failures = []
  for (let i = 0; i < 6000 && failures.length < 5; i++) {
    const mode = i % 3
    if (mode === 0) {
      const s = buildAny(rnd)
      const out = maskConninfo(s)
      const why = checkAny(s, out)
      if (why) failures.push(`case ${i}: ${why}\n  in:  ${JSON.stringify(s)}\n  out: ${JSON.stringify(out)}`)
      continue
    }
    const b = mode === 1 ? buildKeyValue(rnd) : buildUri(rnd)
    const out = maskConninfo(b.s)
    const frag = leakedFragment(b, out)
    if (frag) failures.push(`case ${i}: leaks ${JSON.stringify(frag)}\n  in:  ${JSON.stringify(b.s)}\n  out: ${JSON.stringify(out)}`)
  }
  assert.deepEqual(failures, [])
})

/* ---- redact(): a driver's message that quotes a secret ---- */

test('redact: a secret of a dbname that is a connection string, and a value only a mistake puts there', () => {
  // A pg error quoting the database name it was given.
  const nested = "host=db dbname='host=db password=n3sted user=app'"
  const text = redact('database "host=db password=n3sted user=app" does not exist; password n3sted', nested)
  assert.ok(!text.includes('n3sted'), text)
  // Two levels down, and in a URI's path.
  const deep = "dbname='dbname=\\'password=d33per\\''"
  assert.ok(!redact('no database password=d33per (d33per)', deep).includes('d33per'))
  const uri = 'postgresql://db/host%3Ddb%20password%3Dur1pass'
  const utext = redact('database "host=db password=ur1pass" does not exist (ur1pass)', uri)
  assert.ok(!utext.includes('ur1pass'), utext)
  // A setting maskConninfo hides is hidden here too: port=${DB_PASS}.
  const typo = 'host=db port=p0rtpass user=app'
  assert.ok(!redact('invalid port "p0rtpass"', typo).includes('p0rtpass'))
  assert.ok(!redact('could not connect to app:s3cretport', 'postgresql://app:s3cretport/db').includes('s3cretport'))
  // A ':' and an '@' in a query value are no password: "b" stays.
  assert.equal(redact('a b c', 'postgresql://db/x?application_name=a:b@c'), 'a b c')
  // Ordinary text stays.
  assert.equal(redact('database "app" does not exist', 'host=db dbname=app password=pw12'), 'database "app" does not exist')
})

test("mask: settings the agent refuses (test-mask.c's test_refused_settings)", () => {
  const cases = [
    ['host=db port=8675309912 user=app', 'host=db port=**** user=app'],
    ['host=db port=05432', 'host=db port=****'],
    ['host=db hostaddr=deadbeefcafe', 'host=db hostaddr=****'],
    ['host=db hostaddr=127.0.0.1,::1', 'host=db hostaddr=127.0.0.1,::1'],
    ['host=db connect_timeout=0099', 'host=db connect_timeout=****'],
    ['postgresql://app:pw@db:Secr3tPW/x', 'postgresql://app:****@****:****/x'],
    ['postgresql://app@h1:5432,h2:Secr3tPW/x', 'postgresql://app@h1:5432,****:****/x'],
    ['postgresql://postgres@Secr3tPW:127.0.0.1/postgres', 'postgresql://postgres@****:****/postgres'],
    ['postgresql://postgres:8675309912/postgres', 'postgresql://****:****/postgres'],
  ]
  for (const [input, want] of cases) assert.equal(maskConninfo(input), want, input)
})

/*
 * The translation's TLS options through a real pg client: the client key
 * that sslpassword decrypted reaches the TLS handshake, though pg and the
 * translation keep it out of util.inspect().  A fake server answers the
 * SSLRequest and takes the TLS handshake, asking for a client certificate.
 * The certificates are self-signed, made for this test only (valid until
 * 2125).
 */
import assert from 'node:assert/strict'
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import tls from 'node:tls'
import { inspect } from 'node:util'

import pg from 'pg'

import { hostConfig, translate } from '../src/conninfo.js'

const SERVER_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggA+NCDqjAIlrX6bJ
918kdciecqnWYjOcs39gFxIXi32hRANCAASa5CniIHN7wihfCNgoYEOiDyLugkbY
jon4pgju/ReEf2UyqvJIr3wLVuVp29s5mu1wOiGiNXjTgrGSppEgfoBp
-----END PRIVATE KEY-----
`
const SERVER_CERT = `-----BEGIN CERTIFICATE-----
MIIBgDCCASWgAwIBAgIUS/N7Npl4bDktguhohGVEy10vQ9gwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMjE2MTczM1oYDzIxMjYxMTA4
MTYxNzMzWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASa5CniIHN7wihfCNgoYEOiDyLugkbYjon4pgju/ReEf2UyqvJIr3wL
VuVp29s5mu1wOiGiNXjTgrGSppEgfoBpo1MwUTAdBgNVHQ4EFgQU8eaZ8VTyV2fm
GSq3GhzLu1cIDbMwHwYDVR0jBBgwFoAU8eaZ8VTyV2fmGSq3GhzLu1cIDbMwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAu+NgYfGnjRFoeTGD6u5+
O9l9ztuRXdhfTlSwoOwae1ACIQC3upAVH1uNiTqpImtOzJjj0K4UCsmQmufkEf1y
q8TU1g==
-----END CERTIFICATE-----
`
/** Encrypted with QXkeypassQX. */
const CLIENT_KEY_ENCRYPTED = `-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHjME4GCSqGSIb3DQEFDTBBMCkGCSqGSIb3DQEFDDAcBAim9nCGSJ9lyAICCAAw
DAYIKoZIhvcNAgkFADAUBggqhkiG9w0DBwQIPw8ha+SY6r0EgZB29WmoFjVdf24i
p9ejmyqS1f9ba//WhDF9ODhBQlr9SFr4IMTAAzbIrUXRNggvu4cWwJLg/LmfCLCc
7ftaubZR7Tm9gyfMqL7/DetAxAhSP8Q0mBBpAEZyD2/AnfhAl1SgETZRLTmZCJwm
yngRv58ZSw+nLqrFq47bJlRpnA5ozeEUdIcS+rOHg5vYiGqCRrE=
-----END ENCRYPTED PRIVATE KEY-----
`
const CLIENT_CERT = `-----BEGIN CERTIFICATE-----
MIIBdDCCARmgAwIBAgIUCD1T6FOmZOJTfDpr4taOLEj90bAwCgYIKoZIzj0EAwIw
DjEMMAoGA1UEAwwDYXBwMCAXDTI2MTIwMjE2MTczM1oYDzIxMjYxMTA4MTYxNzMz
WjAOMQwwCgYDVQQDDANhcHAwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ+wx0d
K8LRK5H90wcplOsI0TIPyGFoeoBcn3zBydr7zSCnN+ipbWDNW9Rl2vdyPQ/2xeUu
Nr/0JtbsreJ+4pySo1MwUTAdBgNVHQ4EFgQUpd3oHSw+h9+kgOC+nVXFQriLxxsw
HwYDVR0jBBgwFoAUpd3oHSw+h9+kgOC+nVXFQriLxxswDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNJADBGAiEA38Vmlet1GODFykKCYdujpu/+B524JxocLCoj
uT6t4WICIQCbNGmujENnA9iKYeiqtnyNYyMeybyp98x0izSbsfyBWg==
-----END CERTIFICATE-----
`

test('sslpassword: the decrypted client key reaches the handshake, and is shown nowhere', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dbswap-conninfo-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'client.crt'), CLIENT_CERT)
  writeFileSync(join(dir, 'client.key'), CLIENT_KEY_ENCRYPTED, { mode: 0o600 })
  let seen = null
  const server = net.createServer((sock) => {
    sock.once('data', () => {
      sock.write('S') // yes to the SSLRequest
      const secure = new tls.TLSSocket(sock, { isServer: true, key: SERVER_KEY, cert: SERVER_CERT, requestCert: true, rejectUnauthorized: false })
      secure.on('secure', () => {
        seen = secure.getPeerCertificate().subject?.CN ?? 'none'
        secure.destroy()
      })
      secure.on('error', () => {})
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  const password = 'QXkeypassQX'
  const tr = translate(
    `host=127.0.0.1 port=${server.address().port} user=app sslmode=require sslcert=${join(dir, 'client.crt')} sslkey=${join(dir, 'client.key')} sslpassword=${password}`,
    { env: {}, home: join(dir, 'nohome') },
  )
  const client = new pg.Client(hostConfig(tr, tr.hosts[0]))
  for (const text of [inspect(client, { depth: 10 }), inspect(tr, { depth: 10 }), JSON.stringify(tr)]) {
    assert.ok(!text.includes(password))
    assert.ok(!text.includes('PRIVATE KEY'))
  }
  await client.connect().catch(() => {}) // the server hangs up once it has seen the certificate
  assert.equal(seen, 'app', 'the client certificate, with its key, was used')
})

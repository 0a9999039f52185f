/*
 * A fault injector that speaks just enough of PostgreSQL's protocol (trust
 * authentication, simple queries) to send what a real server sends only
 * by chance: for the query 'KILL', the reply and then a FATAL 57P01 in the
 * same write, as pg_terminate_backend() or idle_session_timeout arriving
 * in the same TCP read as a query's last message.  pg then reports the
 * FATAL on a client whose query is done, in the same synchronous parse:
 * the one moment a released client can get an error before anything else
 * runs.  Every other query gets an empty result.  The FATAL's message
 * text may be given (a server's message can quote what the client sent).
 */
import net from 'node:net'

function message(type, body) {
  const b = Buffer.alloc(5 + body.length)
  b.write(type, 0)
  b.writeInt32BE(4 + body.length, 1)
  body.copy(b, 5)
  return b
}

const AUTH_OK = message('R', Buffer.from([0, 0, 0, 0]))
const READY = message('Z', Buffer.from('I'))
const DONE = message('C', Buffer.from('SELECT 0\0'))
const fatal = (text) => message('E', Buffer.from(`SFATAL\0VFATAL\0C57P01\0M${text}\0\0`))

/** Listens on a loopback port; resolves to the net.Server.
 * @param {{ fatalMessage?: string }} [opts] */
export function startFaultServer(opts = {}) {
  const FATAL = fatal(opts.fatalMessage ?? 'terminating connection due to administrator command')
  return new Promise((resolve) => {
    const server = net.createServer((sock) => {
      let buf = Buffer.alloc(0)
      let started = false
      sock.on('error', () => {})
      sock.on('data', (data) => {
        buf = Buffer.concat([buf, data])
        for (;;) {
          if (!started) {
            if (buf.length < 4 || buf.length < buf.readInt32BE(0)) return
            buf = buf.subarray(buf.readInt32BE(0))
            started = true
            sock.write(Buffer.concat([AUTH_OK, READY]))
            continue
          }
          if (buf.length < 5 || buf.length < 1 + buf.readInt32BE(1)) return
          const type = String.fromCharCode(buf[0])
          const body = buf.subarray(5, 1 + buf.readInt32BE(1))
          buf = buf.subarray(1 + buf.readInt32BE(1))
          if (type === 'X') return void sock.end()
          if (type !== 'Q') continue
          if (body.toString('utf8', 0, body.length - 1) === 'KILL') {
            sock.end(Buffer.concat([DONE, READY, FATAL]))
            return
          }
          sock.write(Buffer.concat([DONE, READY]))
        }
      })
    })
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

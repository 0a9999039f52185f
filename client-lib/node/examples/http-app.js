// A small web app on a dbswap pool: GET / answers with a row from the
// database, whatever password or server is in use at the moment.
//
//   DBSWAP_SOCKET=/run/dbswap/dbswap.sock PORT=3000 node examples/http-app.js
//
// The pool follows DATABASE_URL as the agent publishes it (or
// $DATABASE_URL when no agent answers), swaps on every rotation and
// failover without failing a request that is not on a dead server, and
// logs each swap.  SIGTERM or SIGINT: stop accepting, finish the requests
// in flight, end the pool, exit.
import http from 'node:http'
import { createPool } from 'dbswap'

const pool = createPool({ max: 4 })

pool.on('swap', (s) => {
  const how = s.immediate ? 'at once, the old server is down' : 'old connections drain'
  console.log(`swap: generation ${s.generation} (${s.reason}, ${s.server}), ${how}`)
})
pool.on('ack', (a) => console.log(`ack: generation ${a.generation}, no old connection left`))
pool.on('nack', (n) => console.log(`nack: generation ${n.generation}: ${n.message}`))
pool.on('error', (err) => console.error(`pool: ${err.message}`))

const server = http.createServer(async (req, res) => {
  if (req.method !== 'GET' || req.url !== '/') {
    res.writeHead(404).end()
    return
  }
  try {
    const { rows } = await pool.query('SELECT current_user AS "user", inet_server_port() AS port, now() AS at')
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(rows[0]))
  } catch (err) {
    res.writeHead(503, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: err.message }))
  }
})

server.listen(Number(process.env.PORT ?? 3000), () => {
  console.log(`listening on port ${server.address().port}`)
})

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, async () => {
    server.close()
    server.closeIdleConnections()
    await pool.end() // waits for the connections in use to come back
    console.log('stopped')
  })
}

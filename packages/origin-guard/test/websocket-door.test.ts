import t from 'tap'
import { guardApp } from './helpers.js'
import { originTable, tableAllow, expandOrigin } from './origin-table.js'
import { listen, wsOpen, rawUpgrade, nextMessages } from '../../../test/helpers/index.js'

t.test('the origin table holds enough cases to mean something', async (t) => {
  t.ok(originTable.length >= 40, `${originTable.length} rows`)
  const names = new Set(originTable.map(r => r.name))
  t.equal(names.size, originTable.length, 'row names are unique')
})

t.test('every row of the origin table gets its verdict on the WebSocket door (raw TCP)', async (t) => {
  const app = await guardApp(t, { allow: tableAllow })
  let opened = 0
  app.get('/ws', { websocket: true }, (socket) => { opened++; socket.close() })
  const { port, origin: self } = await listen(app)
  let expectedOpens = 0
  for (const row of originTable) {
    const headers: Record<string, string | string[] | null> = { ...row.headers }
    if (row.origin !== undefined) {
      headers.Origin = Array.isArray(row.origin) ? row.origin.map(o => expandOrigin(o, self)) : expandOrigin(row.origin as string, self)
    }
    const res = await rawUpgrade(port, '/ws', headers)
    if (row.expect === 'allow') {
      expectedOpens++
      t.equal(res.status, 101, `${row.name}: 101`)
    } else {
      t.equal(res.status, 403, `${row.name}: 403`)
      t.equal(JSON.parse(res.body).code, row.expect, `${row.name}: ${row.expect}`)
      t.notOk(res.raw.includes('Sec-WebSocket-Accept'), `${row.name}: no handshake answer`)
    }
  }
  t.equal(app.wsPolicy.stats().routes['/ws'].allowed, expectedOpens, 'the pipeline allowed exactly the allow rows')
  t.ok(opened <= expectedOpens, 'the handler ran only for allowed rows')
})

t.test('a real ws client from a listed origin opens and talks', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  app.get('/ws', { websocket: true }, (socket) => socket.send('welcome'))
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://app.example.com' })
  t.ok(r.ws, 'opened')
  t.same(await nextMessages(r.ws!), ['welcome'])
  r.ws!.close()
})

t.test('a real ws client from a lookalike origin is refused before the handshake', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  let called = false
  app.get('/ws', { websocket: true }, () => { called = true })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://app.example.com.evil.net' })
  t.equal(r.status, 403)
  t.same(JSON.parse(r.body!), { code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED', message: 'Origin not allowed' })
  t.equal(r.headers?.['cache-control'], 'no-store')
  t.notOk(called, 'handler never ran')
})

t.test('with no list, a real ws client is allowed from the same origin only', async (t) => {
  const app = await guardApp(t)
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { ws, origin } = await listen(app)
  const same = await wsOpen(`${ws}/ws`, { origin })
  t.ok(same.ws, 'same origin opens')
  same.ws?.terminate()
  const other = await wsOpen(`${ws}/ws`, { origin: 'http://localhost:1' })
  t.equal(other.status, 403)
  const none = await wsOpen(`${ws}/ws`)
  t.equal(none.status, 403)
  t.equal(JSON.parse(none.body!).code, 'PORTCULLIS_ORIGIN_MISSING')
})

t.test('a denial body never echoes the Origin it refused', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  app.get('/ws', { websocket: true }, () => {})
  const { port } = await listen(app)
  const res = await rawUpgrade(port, '/ws', { Origin: 'https://secret-token.evil.net' })
  t.equal(res.status, 403)
  t.notOk(res.raw.includes('secret-token'))
})

import t from 'tap'
import type { AuditEvent } from '@portcullis/policy'
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
  // the handler records which row it served (the x-row header), so each allowed row must be seen
  // exactly once and no refused row ever
  const served: string[] = []
  app.get('/ws', { websocket: true }, (socket, request) => { served.push(String(request.headers['x-row'])); socket.close() })
  const { port, origin: self } = await listen(app)
  const expected: string[] = []
  for (const row of originTable) {
    const headers: Record<string, string | string[] | null> = { ...row.headers, 'X-Row': row.name }
    if (row.origin !== undefined) {
      headers.Origin = Array.isArray(row.origin) ? row.origin.map(o => expandOrigin(o, self)) : expandOrigin(row.origin as string, self)
    }
    const res = await rawUpgrade(port, '/ws', headers)
    if (row.expect === 'allow') {
      expected.push(row.name)
      t.equal(res.status, 101, `${row.name}: 101`)
    } else {
      t.equal(res.status, 403, `${row.name}: 403`)
      t.equal(JSON.parse(res.body).code, row.expect, `${row.name}: ${row.expect}`)
      t.notOk(res.raw.includes('Sec-WebSocket-Accept'), `${row.name}: no handshake answer`)
    }
  }
  t.ok(expected.length > 0, `${expected.length} allow rows`)
  t.equal(app.wsPolicy.stats().routes['/ws'].allowed, expected.length, 'the pipeline allowed exactly the allow rows')
  // ws runs the handler right after writing the 101, before the client can read it
  t.same(served, expected, 'the handler ran once for each allowed row, in order, and for no other')
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

t.test('app.injectWS() gets the origin guard\'s verdicts: a listed origin opens, a lookalike is refused with 403 PORTCULLIS_ORIGIN_NOT_ALLOWED', async (t) => {
  const audits: AuditEvent[] = []
  const app = await guardApp(t, { allow: ['https://app.example.com'] }, { audit: (e) => audits.push(e) })
  app.get('/ws', { websocket: true }, (socket) => {
    socket.on('message', (data) => socket.send(`echo:${String(data)}`))
  })
  await app.ready()
  const ok = await app.injectWS('/ws', { headers: { origin: 'https://app.example.com' } })
  ok.send('hi')
  t.equal(String(await new Promise(resolve => ok.once('message', resolve))), 'echo:hi')
  ok.terminate()
  await t.rejects(app.injectWS('/ws', { headers: { origin: 'https://app.example.com.evil.net' } }), /Unexpected server response: 403/)
  await t.rejects(app.injectWS('/ws'), /Unexpected server response: 403/, 'no Origin is refused as on the network')
  t.same(audits.filter(e => e.action === 'deny').map(e => [e.code, e.status]), [['PORTCULLIS_ORIGIN_NOT_ALLOWED', 403], ['PORTCULLIS_ORIGIN_MISSING', 403]])
})

t.test('app.injectWS() with no list: allowed from its own origin (localhost) only, like a real upgrade from the same origin', async (t) => {
  const app = await guardApp(t)
  app.get('/ws', { websocket: true }, (socket) => { socket.on('message', () => socket.send('same')) })
  await app.ready()
  const same = await app.injectWS('/ws', { headers: { origin: 'http://localhost' } })
  same.send('x')
  t.equal(String(await new Promise(resolve => same.once('message', resolve))), 'same')
  same.terminate()
  await t.rejects(app.injectWS('/ws', { headers: { origin: 'http://localhost:1' } }), /Unexpected server response: 403/)
})

import t from 'tap'
import { APP_ORIGIN, Inbox, LpClient, http, lpApp, start } from './helpers.js'

const origin = APP_ORIGIN
const headers = { 'x-portcullis-fallback': '1', 'content-type': 'application/json', origin }

t.test('the open body\'s query is the handler\'s request.query; a fallback URL still takes none', async (t) => {
  const app = await lpApp(t)
  const seen = new Inbox<unknown>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (_socket, request) => { seen.push({ ...(request.query as object) }) })
  const port = await start(app)
  const ok = await http(port, 'POST', '/ws/_lp/open', headers, { query: 'room=blue&tag=a&tag=b&name=x+y%20z' })
  t.equal(ok.status, 200)
  t.same(await seen.take(1), [{ room: 'blue', tag: ['a', 'b'], name: 'x y z' }])
  const none = new LpClient(port, '/ws', { origin })
  await none.open()
  t.same(await seen.take(1), [{}], 'no query: an empty request.query, as for a WebSocket URL without one')
  const inUrl = await http(port, 'POST', '/ws/_lp/open?room=blue', headers, {})
  t.equal(inUrl.status, 400)
  t.equal(inUrl.body.code, 'PORTCULLIS_FALLBACK_QUERY_REFUSED', 'the URL rule is unchanged')
})

t.test('a query that no request line could carry is refused with 400 before the policy runs', async (t) => {
  const app = await lpApp(t)
  let opened = 0
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => { opened++ })
  const port = await start(app)
  for (const query of [42, ['a=1'], 'a=1#frag', 'a=b c', 'é=1', 'a=\u0000', 'x'.repeat(8193)]) {
    const r = await http(port, 'POST', '/ws/_lp/open', headers, { query })
    t.equal(r.status, 400, JSON.stringify(query).slice(0, 30))
    t.equal(r.body.code, 'PORTCULLIS_FALLBACK_BAD_REQUEST')
  }
  t.equal((await http(port, 'POST', '/ws/_lp/open', headers, { query: 'x'.repeat(8192) })).status, 200, '8192 characters pass')
  t.equal(opened, 1)
})

t.test('a custom querystringParser is used for the handler\'s request.query', async (t) => {
  const app = await lpApp(t, { querystringParser: (q) => ({ raw: q }) })
  const seen = new Inbox<unknown>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (_socket, request) => { seen.push(request.query) })
  const port = await start(app)
  await http(port, 'POST', '/ws/_lp/open', headers, { query: 'a=1;b=2' })
  t.same(await seen.take(1), [{ raw: 'a=1;b=2' }])
  await t.rejects(lpApp(t, { querystringParser: 'qs' as never }), { code: 'PORTCULLIS_FALLBACK_INVALID_OPTION' })
})
